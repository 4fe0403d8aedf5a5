//! Pure parts of the `overcommit` memory-integrity workload: the word pattern, where the
//! working set goes, how it is split between tasks, the order pages are read back in, and the
//! verdict. The kernel side (`scenarios::overcommit`) only adds the memory accesses.

use crate::rng::SplitMix64;

/// Bytes per page (the working set is handled in whole 4 KiB pages).
pub const PAGE_SIZE: u64 = 4096;
/// Bytes per checked word.
pub const WORD_SIZE: u64 = 8;
/// Words per page.
pub const WORDS_PER_PAGE: u64 = PAGE_SIZE / WORD_SIZE;
/// Bytes in a MiB (the unit of `ws_mib`).
pub const MIB: u64 = 1 << 20;

/// How many times a page has been rewritten, modulo [`Generation::LOST`]. Part of every
/// word's value, so that a page read back with stale contents (an older write) is detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub struct Generation(pub u8);

impl Generation {
    /// The generation every page is first written with.
    pub const FIRST: Generation = Generation(0);
    /// Marks a page whose contents are unknown (an access to it raised an external abort):
    /// never written, never checked again.
    pub const LOST: Generation = Generation(u8::MAX);

    /// The generation of the next rewrite (wraps before [`Generation::LOST`]).
    pub fn next(self) -> Generation {
        Generation((self.0 + 1) % Self::LOST.0)
    }
}

/// The splitmix64 finalizer: a bijection on u64 with good avalanche.
const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The value of the word at physical address `addr` (below 2^56) written in `generation` under
/// `seed`. For a fixed seed it is injective in (address, generation): a word that lands at the
/// wrong address, or an older write of the right one, never reads back as expected.
#[inline(always)]
pub fn pattern(seed: u64, addr: u64, generation: Generation) -> u64 {
    mix64((addr | u64::from(generation.0) << 56) ^ mix64(seed))
}

/// A half-open address range `[start, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
}

impl Span {
    /// Bytes covered.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// True when nothing is covered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when `addr` lies inside.
    pub fn contains(&self, addr: u64) -> bool {
        (self.start..self.end).contains(&addr)
    }
}

/// The largest page-aligned stretch of `ram` that overlaps none of `reserved`.
pub fn largest_free(ram: &[Span], reserved: &[Span]) -> Option<Span> {
    let mut best: Option<Span> = None;
    for r in ram {
        // A free stretch starts at the start of RAM or at the end of a reserved range, and runs
        // to the end of RAM or to the next reserved range starting at or after it.
        let starts = core::iter::once(r.start).chain(reserved.iter().map(|x| x.end));
        for start in starts.filter(|&s| r.contains(s)) {
            if reserved.iter().any(|x| x.contains(start)) {
                continue;
            }
            let end = reserved.iter().map(|x| x.start).filter(|&s| s >= start).fold(r.end, u64::min);
            let gap = Span { start: start.next_multiple_of(PAGE_SIZE), end: end & !(PAGE_SIZE - 1) };
            if gap.start < gap.end && best.is_none_or(|b| gap.len() > b.len()) {
                best = Some(gap);
            }
        }
    }
    best
}

/// Why the working set does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// `ws_mib` asks for more than the free RAM holds (with the generation table).
    TooLarge { requested_pages: u64, free_pages: u64 },
    /// Fewer pages than tasks.
    TooSmall { pages: u64, tasks: u64 },
}

/// Where the workload's memory goes inside the free RAM: the generation table (one byte per
/// working-set page) first, then the working set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub generations: Span,
    pub working_set: Span,
    pub tasks: u64,
}

impl Layout {
    /// Places the table and a working set of `ws_bytes` (rounded down to whole pages; default:
    /// as much as fits) in `free`, to be split between `tasks` tasks.
    pub fn new(free: Span, ws_bytes: Option<u64>, tasks: u64) -> Result<Layout, LayoutError> {
        let free_pages = free.len() / PAGE_SIZE;
        // With t table pages, P = F - t working-set pages need ceil(P / 4096) <= t table pages:
        // t = ceil(F / 4097) is the smallest t that works.
        let largest = free_pages - free_pages.div_ceil(PAGE_SIZE + 1);
        let pages = match ws_bytes {
            Some(bytes) => bytes / PAGE_SIZE,
            None => largest,
        };
        if pages > largest {
            return Err(LayoutError::TooLarge { requested_pages: pages, free_pages });
        }
        if pages < tasks.max(1) {
            return Err(LayoutError::TooSmall { pages, tasks });
        }
        let table_end = free.start + pages.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        Ok(Layout {
            generations: Span { start: free.start, end: free.start + pages },
            working_set: Span { start: table_end, end: table_end + pages * PAGE_SIZE },
            tasks,
        })
    }

    /// Working-set pages.
    pub fn pages(&self) -> u64 {
        self.working_set.len() / PAGE_SIZE
    }

    /// Task `task`'s share: pages `[first, first + count)` of the working set (shares differ by
    /// at most one page).
    pub fn slice(&self, task: u64) -> PageSlice {
        let pages = self.pages();
        let first = task * pages / self.tasks;
        let next = (task + 1) * pages / self.tasks;
        PageSlice { first, count: next - first }
    }

    /// Address of working-set page `page`.
    pub fn page_addr(&self, page: u64) -> u64 {
        self.working_set.start + page * PAGE_SIZE
    }
}

/// A run of working-set pages, by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageSlice {
    pub first: u64,
    pub count: u64,
}

/// A pseudo-random order of `0..n` without storing it: `i -> (offset + i * step) mod n` with
/// `step` coprime to `n`, so it is a permutation. For n > 2 the step is neither 1 nor n - 1 when
/// another coprime exists, so consecutive pages are never neighbours in that case.
#[derive(Clone, Copy, Debug)]
pub struct Permutation {
    n: u64,
    step: u64,
    offset: u64,
}

const fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Permutation {
    /// An order of `0..n` chosen by `rng`.
    pub fn new(n: u64, rng: &mut SplitMix64) -> Self {
        if n <= 2 {
            return Self { n, step: 1, offset: if n == 0 { 0 } else { rng.below(n) } };
        }
        // Candidates 2..=n-2 first, from a random point; n - 1 (reverse) is always coprime.
        let span = n - 3;
        let mut step = n - 1;
        if span > 0 {
            let from = rng.below(span);
            if let Some(s) = (0..span).map(|k| 2 + (from + k) % span).find(|&s| gcd(s, n) == 1) {
                step = s;
            }
        }
        Self { n, step, offset: rng.below(n) }
    }

    /// Position `i`'s element (`i < n`).
    pub fn get(&self, i: u64) -> u64 {
        ((u128::from(self.offset) + u128::from(i) * u128::from(self.step)) % u128::from(self.n)) as u64
    }

    /// The whole order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.n).map(|i| self.get(i))
    }
}

/// What the workload counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub words_checked: u64,
    pub mismatches: u64,
    pub aborts: u64,
}

/// The verdict: nothing lost or corrupted, and at least `full_passes` complete verifications
/// of a `ws_bytes` working set happened.
pub fn passed(tally: Tally, ws_bytes: u64, full_passes: u64) -> bool {
    tally.mismatches == 0 && tally.aborts == 0 && tally.words_checked >= ws_bytes / WORD_SIZE * full_passes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::vec::Vec;

    #[test]
    fn pattern_depends_on_every_input() {
        let base = pattern(1, 0x4100_0000, Generation::FIRST);
        assert_eq!(base, pattern(1, 0x4100_0000, Generation::FIRST));
        assert_ne!(base, pattern(2, 0x4100_0000, Generation::FIRST));
        assert_ne!(base, pattern(1, 0x4100_0008, Generation::FIRST));
        assert_ne!(base, pattern(1, 0x4100_0000, Generation(1)));
        // Distinct within a page and across generations (injective by construction).
        let mut seen = HashSet::new();
        for generation in 0..4 {
            for w in 0..WORDS_PER_PAGE {
                assert!(seen.insert(pattern(7, 0x8000_0000 + w * WORD_SIZE, Generation(generation))));
            }
        }
    }

    #[test]
    fn generations_wrap_before_lost() {
        assert_eq!(Generation::FIRST.next(), Generation(1));
        assert_eq!(Generation(253).next(), Generation(254));
        assert_eq!(Generation(254).next(), Generation::FIRST);
    }

    #[test]
    fn permutations_are_permutations() {
        let mut rng = SplitMix64::new(3);
        for n in 0..300u64 {
            let p = Permutation::new(n, &mut rng);
            let mut seen: Vec<u64> = p.iter().collect();
            let order = seen.clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n = {n}");
            if n > 2 {
                // Not the identity order: the step is never 1.
                assert!(order.windows(2).any(|w| w[1] != (w[0] + 1) % n), "n = {n}: {order:?}");
            }
        }
        // Large sizes do not overflow.
        let p = Permutation::new(u64::MAX - 1, &mut rng);
        assert!(p.get(u64::MAX - 2) < u64::MAX - 1);
    }

    #[test]
    fn largest_free_avoids_reserved() {
        let ram = [Span { start: 0x4000_0000, end: 0x4800_0000 }];
        let image = Span { start: 0x4020_0000, end: 0x4035_1000 };
        let dtb = Span { start: 0x4000_0000, end: 0x4010_0000 };
        assert_eq!(largest_free(&ram, &[image, dtb]), Some(Span { start: 0x4035_1000, end: 0x4800_0000 }));
        // A DTB at the top of RAM, unaligned.
        let dtb_top = Span { start: 0x47ff_0123, end: 0x4800_0000 };
        assert_eq!(largest_free(&ram, &[image, dtb_top]), Some(Span { start: 0x4035_1000, end: 0x47ff_0000 }));
        // Overlapping reservations, and a second RAM range that is bigger.
        let ram2 = [ram[0], Span { start: 0x1_0000_0000, end: 0x1_1000_0000 }];
        let got = largest_free(&ram2, &[image, Span { start: 0x4030_0000, end: 0x4400_0000 }]);
        assert_eq!(got, Some(ram2[1]));
        // Everything reserved.
        assert_eq!(largest_free(&ram, &[ram[0]]), None);
    }

    #[test]
    fn layout_fits_and_splits() {
        let free = Span { start: 0x4040_0000, end: 0x4800_0000 };
        let all = Layout::new(free, None, 12).unwrap();
        assert!(all.working_set.end <= free.end);
        assert!(all.generations.end <= all.working_set.start);
        assert_eq!(all.generations.len(), all.pages());
        assert_eq!(all.working_set.start % PAGE_SIZE, 0);
        // Not one page more would fit.
        let more = all.pages() + 1;
        assert!(more.div_ceil(PAGE_SIZE) * PAGE_SIZE + more * PAGE_SIZE > free.len());
        let total: u64 = (0..12).map(|t| all.slice(t).count).sum();
        assert_eq!(total, all.pages());
        for t in 0..11 {
            let (a, b) = (all.slice(t), all.slice(t + 1));
            assert_eq!(a.first + a.count, b.first);
            assert!(a.count.abs_diff(b.count) <= 1);
        }

        let eight = Layout::new(free, Some(8 * MIB + 100), 12).unwrap();
        assert_eq!(eight.working_set.len(), 8 * MIB);
        assert_eq!(eight.working_set.start, free.start + PAGE_SIZE);
        assert!(matches!(Layout::new(free, Some(free.len()), 12), Err(LayoutError::TooLarge { .. })));
        assert_eq!(Layout::new(free, Some(3 * PAGE_SIZE), 4), Err(LayoutError::TooSmall { pages: 3, tasks: 4 }));
    }

    #[test]
    fn largest_layout_for_many_sizes() {
        for pages in 1..20_000u64 {
            let free = Span { start: 0, end: pages * PAGE_SIZE };
            let Ok(l) = Layout::new(free, None, 1) else { continue };
            assert!(l.working_set.end <= free.end, "pages = {pages}");
            let more = l.pages() + 1;
            assert!(more.div_ceil(PAGE_SIZE) + more > pages, "pages = {pages}");
        }
    }

    #[test]
    fn verdict() {
        let ws = 4 * MIB;
        let words = ws / WORD_SIZE;
        let clean = Tally { words_checked: 2 * words, mismatches: 0, aborts: 0 };
        assert!(passed(clean, ws, 2));
        assert!(!passed(Tally { words_checked: 2 * words - 1, ..clean }, ws, 2));
        assert!(!passed(Tally { mismatches: 1, ..clean }, ws, 2));
        assert!(!passed(Tally { aborts: 1, ..clean }, ws, 2));
    }
}
