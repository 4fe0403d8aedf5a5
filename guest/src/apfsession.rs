//! One CPU's side of an APF session (docs/abi.md §8.3, §8.4): the tokens this CPU accepted at
//! page_not_present whose page_ready has not come yet, and what each entry of its ring wakes.
//!
//! Rules:
//! - [`Accepted::accept`] keeps a page_not_present's token, or refuses it (the handler then
//!   declines, and the hypervisor resolves the fault synchronously): when the set is full, or
//!   the token is 0, WAKE_ALL or already outstanding (none of which a conforming hypervisor
//!   sends). So the set never drops a token silently.
//! - [`Accepted::page_ready`] answers for a ring entry: a token this CPU is waiting for wakes
//!   its task, once (it is forgotten); WAKE_ALL ends the session ([`Accepted::end`]); anything
//!   else (a token already woken, another CPU's, one never issued) is stale and wakes nobody.
//!   Because only accepted tokens wake, a wake that comes before its task has parked (which the
//!   waiter table remembers) is only ever the wake of the task between its accept and its
//!   park, on that CPU: at most one remembered early APF wake per CPU.
//! - [`Accepted::end`] (WAKE_ALL, a new APF_ENABLE, or the CPU off) hands back every token still
//!   outstanding: exactly the tasks waiting for this CPU's session are woken, not those of
//!   other CPUs, whose page_ready will still come.

use asyncpf_contract::apf::{TOKEN_NONE, TOKEN_WAKE_ALL};

/// Why a token was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// No room for another outstanding token.
    Full,
    /// 0 or WAKE_ALL: not a token.
    NotAToken,
    /// Already outstanding on this CPU: a second task would wait for one page_ready.
    Duplicate,
}

/// What a ring entry asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Wake the task waiting for this token (or, not parked yet, make its park return).
    Wake(u64),
    /// The session ended: wake every task waiting for it ([`Accepted::end`]).
    WakeAll,
    /// Not a token this CPU waits for: ignored.
    Stale,
}

/// The tokens one CPU accepted and still waits for; room for `N`.
#[derive(Clone, Debug)]
pub struct Accepted<const N: usize> {
    tokens: [u64; N],
}

impl<const N: usize> Default for Accepted<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The tokens a session left outstanding when it ended.
#[derive(Clone, Debug)]
pub struct Ended<const N: usize> {
    tokens: [u64; N],
}

impl<const N: usize> Ended<N> {
    /// The tokens, each once.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.tokens.iter().copied().filter(|&t| t != TOKEN_NONE)
    }
}

impl<const N: usize> Accepted<N> {
    /// No token outstanding.
    pub const fn new() -> Self {
        Self { tokens: [TOKEN_NONE; N] }
    }

    /// page_not_present delivered `token` and a task will park on it.
    pub fn accept(&mut self, token: u64) -> Result<(), Refused> {
        if token == TOKEN_NONE || token == TOKEN_WAKE_ALL {
            return Err(Refused::NotAToken);
        }
        if self.is_outstanding(token) {
            return Err(Refused::Duplicate);
        }
        let free = self.tokens.iter_mut().find(|t| **t == TOKEN_NONE).ok_or(Refused::Full)?;
        *free = token;
        Ok(())
    }

    /// A ring entry of this CPU's record.
    pub fn page_ready(&mut self, token: u64) -> Entry {
        if token == TOKEN_WAKE_ALL {
            return Entry::WakeAll;
        }
        match self.tokens.iter_mut().find(|t| **t == token && token != TOKEN_NONE) {
            Some(slot) => {
                *slot = TOKEN_NONE;
                Entry::Wake(token)
            }
            None => Entry::Stale,
        }
    }

    /// The session ended: every outstanding token, which the caller wakes; none is left.
    pub fn end(&mut self) -> Ended<N> {
        Ended { tokens: core::mem::replace(&mut self.tokens, [TOKEN_NONE; N]) }
    }

    /// Whether `token` is outstanding.
    pub fn is_outstanding(&self, token: u64) -> bool {
        token != TOKEN_NONE && self.tokens.contains(&token)
    }

    /// How many tokens are outstanding.
    pub fn outstanding(&self) -> usize {
        self.tokens.iter().filter(|&&t| t != TOKEN_NONE).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn a_page_ready_wakes_its_accepted_token_once() {
        let mut a: Accepted<4> = Accepted::new();
        a.accept(0x1_0003).unwrap();
        assert_eq!(a.page_ready(0x1_0003), Entry::Wake(0x1_0003));
        assert_eq!(a.page_ready(0x1_0003), Entry::Stale, "a duplicate wakes nobody");
        assert_eq!(a.outstanding(), 0);
    }

    #[test]
    fn unknown_and_other_cpus_tokens_are_stale() {
        let mut a: Accepted<4> = Accepted::new();
        a.accept(0x1_0000).unwrap();
        assert_eq!(a.page_ready(0x1_0001), Entry::Stale);
        assert_eq!(a.page_ready(TOKEN_NONE), Entry::Stale);
        assert!(a.is_outstanding(0x1_0000));
    }

    #[test]
    fn wake_all_ends_the_session_with_exactly_its_tokens() {
        let mut a: Accepted<4> = Accepted::new();
        for t in [0x1_0000, 0x2_0000, 0x3_0000] {
            a.accept(t).unwrap();
        }
        assert_eq!(a.page_ready(0x2_0000), Entry::Wake(0x2_0000));
        assert_eq!(a.page_ready(TOKEN_WAKE_ALL), Entry::WakeAll);
        let mut ended: Vec<u64> = a.end().iter().collect();
        ended.sort_unstable();
        assert_eq!(ended, [0x1_0000, 0x3_0000]);
        assert_eq!(a.outstanding(), 0);
        assert_eq!(a.end().iter().count(), 0, "a second end wakes nobody");
        assert_eq!(a.page_ready(0x1_0000), Entry::Stale, "nor does a late page_ready");
    }

    #[test]
    fn refusals() {
        let mut a: Accepted<2> = Accepted::new();
        assert_eq!(a.accept(TOKEN_NONE), Err(Refused::NotAToken));
        assert_eq!(a.accept(TOKEN_WAKE_ALL), Err(Refused::NotAToken));
        a.accept(7).unwrap();
        assert_eq!(a.accept(7), Err(Refused::Duplicate));
        a.accept(8).unwrap();
        assert_eq!(a.accept(9), Err(Refused::Full));
        assert_eq!(a.outstanding(), 2, "a refusal changes nothing");
        assert_eq!(a.page_ready(7), Entry::Wake(7));
        assert_eq!(a.accept(9), Ok(()), "a completion makes room");
    }
}
