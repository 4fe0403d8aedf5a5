//! The hypervisor's lock hierarchy, and the rule that checks it.
//!
//! Every lock of the hypervisor has a [`Level`]. A CPU may take a lock only if every lock it
//! already holds has a lower level: locks are taken outermost first, so no two CPUs can each
//! hold a lock the other waits for. Two locks of the same level (two vCPUs' redistributors, say)
//! are never held together. The hypervisor keeps each CPU's [`Held`] set and checks every
//! acquisition, in every build: an inversion is a bug that could deadlock, and it stops the
//! machine with both levels named instead.
//!
//! The order, outermost first (docs/architecture.md "Locks" says why each nests where it does):
//!
//! | level | lock | taken inside it |
//! |---|---|---|
//! | [`Level::ApfPins`] | the guest's APF_PIN set | — (released before the pager pins) |
//! | [`Level::ApfVcpu`] | one vCPU's APF state | SDEI (delivery), a redistributor (page_ready) |
//! | [`Level::Pager`] | the pager: engine, disk, stage-2 edits | the hold span, diagnostics |
//! | [`Level::PagerHold`] | the pager's latency hold span (virtual time) | — |
//! | [`Level::Sdei`] | the SDEI dispatcher | — |
//! | [`Level::VcpuBoot`] | one vCPU's pending CPU_ON | — |
//! | [`Level::Distributor`] | the emulated GIC distributor | a redistributor (delivery order) |
//! | [`Level::Redistributor`] | one vCPU's emulated redistributor | — |
//! | [`Level::Uart`] | the guest's emulated UART | the console (guest output) |
//! | [`Level::PhysicalGic`] | the physical GIC's distributor | — |
//! | [`Level::Console`] | the hypervisor's console | — |

/// A lock's place in the hierarchy: a lock may be taken only while every held lock's level is
/// lower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    ApfPins = 0,
    ApfVcpu = 1,
    Pager = 2,
    PagerHold = 3,
    Sdei = 4,
    VcpuBoot = 5,
    Distributor = 6,
    Redistributor = 7,
    Uart = 8,
    PhysicalGic = 9,
    Console = 10,
}

impl Level {
    /// Every level, outermost first.
    pub const ALL: [Level; 11] = [
        Level::ApfPins,
        Level::ApfVcpu,
        Level::Pager,
        Level::PagerHold,
        Level::Sdei,
        Level::VcpuBoot,
        Level::Distributor,
        Level::Redistributor,
        Level::Uart,
        Level::PhysicalGic,
        Level::Console,
    ];

    #[inline]
    const fn bit(self) -> u16 {
        1 << self as u8
    }
}

/// Taking `taking` while holding `holding`, which is not lower: the hierarchy is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inversion {
    pub taking: Level,
    pub holding: Level,
}

impl core::fmt::Display for Inversion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "lock order: taking {:?} while holding {:?}", self.taking, self.holding)
    }
}

/// The levels one CPU holds, as a set (bit `n`: level `n`). Fits a `u16`, so that the hypervisor
/// keeps it in one atomic per CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held(u16);

impl Held {
    pub const NONE: Held = Held(0);

    #[inline]
    pub const fn from_bits(bits: u16) -> Held {
        Held(bits)
    }

    #[inline]
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// The held set once `level` is taken, or the inversion if a held lock is not lower (the
    /// highest such, which names the lock that should have been released first).
    #[inline]
    pub fn acquire(self, level: Level) -> Result<Held, Inversion> {
        let not_lower = self.0 & !(level.bit() - 1);
        if not_lower != 0 {
            let highest = 15 - not_lower.leading_zeros() as usize;
            return Err(Inversion { taking: level, holding: Level::ALL[highest] });
        }
        Ok(Held(self.0 | level.bit()))
    }

    /// The held set once `level` is released.
    #[inline]
    pub fn release(self, level: Level) -> Held {
        Held(self.0 & !level.bit())
    }

    #[inline]
    pub fn holds(self, level: Level) -> bool {
        self.0 & level.bit() != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    #[test]
    fn levels_are_numbered_in_order() {
        for (n, level) in Level::ALL.iter().enumerate() {
            assert_eq!(*level as usize, n);
        }
        assert!(Level::ALL.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn outermost_first_is_allowed() {
        let held = Held::NONE.acquire(Level::ApfVcpu).unwrap();
        let held = held.acquire(Level::Sdei).unwrap();
        let held = held.acquire(Level::Redistributor).unwrap();
        assert!(held.holds(Level::ApfVcpu) && held.holds(Level::Sdei) && held.holds(Level::Redistributor));
        assert!(!held.holds(Level::Pager));
    }

    #[test]
    fn an_inversion_names_both_locks() {
        let held = Held::NONE.acquire(Level::Pager).unwrap().acquire(Level::Console).unwrap();
        assert_eq!(
            held.acquire(Level::Distributor),
            Err(Inversion { taking: Level::Distributor, holding: Level::Console })
        );
        assert_eq!(
            Held::NONE.acquire(Level::Redistributor).unwrap().acquire(Level::Distributor),
            Err(Inversion { taking: Level::Distributor, holding: Level::Redistributor })
        );
    }

    #[test]
    fn the_same_level_twice_is_an_inversion() {
        let held = Held::NONE.acquire(Level::Redistributor).unwrap();
        assert_eq!(
            held.acquire(Level::Redistributor),
            Err(Inversion { taking: Level::Redistributor, holding: Level::Redistributor })
        );
    }

    #[test]
    fn release_allows_the_outer_lock_again() {
        let held = Held::NONE.acquire(Level::Distributor).unwrap().acquire(Level::Redistributor).unwrap();
        let held = held.release(Level::Redistributor).release(Level::Distributor);
        assert_eq!(held, Held::NONE);
        assert!(held.acquire(Level::ApfPins).is_ok());
    }

    fn level() -> impl Strategy<Value = Level> {
        (0..Level::ALL.len()).prop_map(|n| Level::ALL[n])
    }

    proptest! {
        /// Against a naive model: a stack of held levels, an acquisition allowed iff every held
        /// level is lower; releases in any order.
        #[test]
        fn agrees_with_a_naive_model(ops in prop::collection::vec((any::<bool>(), level()), 0..64)) {
            let mut held = Held::NONE;
            let mut model: Vec<Level> = Vec::new();
            for (take, level) in ops {
                if take {
                    let allowed = model.iter().all(|&h| h < level);
                    match held.acquire(level) {
                        Ok(next) => {
                            prop_assert!(allowed);
                            held = next;
                            model.push(level);
                        }
                        Err(inversion) => {
                            prop_assert!(!allowed);
                            prop_assert_eq!(inversion.taking, level);
                            prop_assert_eq!(Some(&inversion.holding), model.iter().max());
                        }
                    }
                } else if let Some(at) = model.iter().position(|&h| h == level) {
                    model.remove(at);
                    held = held.release(level);
                }
                for l in Level::ALL {
                    prop_assert_eq!(held.holds(l), model.contains(&l));
                }
                prop_assert_eq!(Held::from_bits(held.bits()), held);
            }
        }
    }
}
