//! Where a runnable task goes and whom an idle CPU steals from: the scheduler's choices over
//! per-CPU loads, without the locks and atomics the kernel reads them from.

/// The CPU to queue an unpinned task on: the least loaded of `candidates` (CPUs that take
/// work, with their load: queued tasks plus the running one unless idle), ties going to
/// `preferred`, then to the lowest index. `None` when no CPU takes work.
pub fn least_loaded(candidates: impl IntoIterator<Item = (usize, usize)>, preferred: usize) -> Option<usize> {
    candidates.into_iter().min_by_key(|&(cpu, load)| (load, cpu != preferred)).map(|(cpu, _)| cpu)
}

/// How many tasks another CPU must have queued before `steal_victim` takes one: a CPU whose
/// task may go on running steals only from a clear imbalance (2), an idle one from any (1).
pub fn steal_threshold(current_may_continue: bool) -> usize {
    if current_may_continue {
        2
    } else {
        1
    }
}

/// The CPU to steal from: the one with the most queued tasks among `queued` (CPU, queued)
/// other than `me`, if it has at least `min_queued`. Ties go to the last such CPU.
pub fn steal_victim(me: usize, queued: impl IntoIterator<Item = (usize, usize)>, min_queued: usize) -> Option<usize> {
    let (victim, n) = queued.into_iter().filter(|&(cpu, _)| cpu != me).max_by_key(|&(_, n)| n)?;
    (n >= min_queued).then_some(victim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_loaded_prefers_the_preferred_cpu_on_ties() {
        assert_eq!(least_loaded([(0, 2), (1, 1), (2, 1)], 2), Some(2));
        assert_eq!(least_loaded([(0, 2), (1, 1), (2, 1)], 0), Some(1));
        assert_eq!(least_loaded([(0, 0), (1, 1)], 1), Some(0));
        assert_eq!(least_loaded([], 0), None);
    }

    #[test]
    fn steal_needs_the_threshold_and_never_picks_itself() {
        assert_eq!(steal_victim(0, [(0, 5), (1, 1), (2, 3)], steal_threshold(true)), Some(2));
        assert_eq!(steal_victim(0, [(0, 5), (1, 1)], steal_threshold(true)), None);
        assert_eq!(steal_victim(0, [(0, 5), (1, 1)], steal_threshold(false)), Some(1));
        assert_eq!(steal_victim(0, [(0, 5), (1, 0)], steal_threshold(false)), None);
        assert_eq!(steal_victim(0, [(0, 5)], 1), None);
    }
}
