//! The blocks of an open object known to have their newest slot active (written or verified
//! in this session), kept as runs of consecutive block numbers so a stream of any length costs
//! a few bytes; bounded in runs. Pure bookkeeping: no I/O, no keys.

use std::collections::BTreeMap;

/// Most runs remembered; past it the set starts over (forgetting only costs a verification).
const MAX_RUNS: usize = 4096;

/// A set of block numbers as disjoint, non-adjacent runs `start -> end` (end exclusive).
#[derive(Debug, Default)]
pub(super) struct NewestActive {
    runs: BTreeMap<u64, u64>,
}

impl NewestActive {
    /// The run holding `k`, if any.
    fn run_of(&self, k: u64) -> Option<(u64, u64)> {
        self.runs
            .range(..=k)
            .next_back()
            .filter(|&(_, &end)| k < end)
            .map(|(&start, &end)| (start, end))
    }

    pub fn contains(&self, k: u64) -> bool {
        self.run_of(k).is_some()
    }

    /// Adds block `k`, merging it with the runs around it.
    pub fn insert(&mut self, k: u64) {
        if self.contains(k) {
            return;
        }
        let before = self
            .runs
            .range(..k)
            .next_back()
            .filter(|&(_, &end)| end == k)
            .map(|(&start, _)| start);
        let after = k.checked_add(1).and_then(|next| self.runs.remove(&next));
        let end = after.unwrap_or(k.saturating_add(1));
        match before {
            Some(start) => {
                self.runs.insert(start, end);
            }
            None => {
                if self.runs.len() >= MAX_RUNS {
                    self.runs.clear();
                }
                self.runs.insert(k, end);
            }
        }
    }

    /// Removes block `k`, splitting its run.
    pub fn remove(&mut self, k: u64) {
        let Some((start, end)) = self.run_of(k) else {
            return;
        };
        if start < k {
            self.runs.insert(start, k);
        } else {
            self.runs.remove(&start);
        }
        if k + 1 < end {
            if self.runs.len() >= MAX_RUNS {
                self.runs.clear();
                return;
            }
            self.runs.insert(k + 1, end);
        }
    }

    /// Keeps only the blocks below `blocks`.
    pub fn truncate(&mut self, blocks: u64) {
        self.runs.split_off(&blocks);
        if let Some((_, end)) = self.runs.iter_mut().next_back() {
            *end = (*end).min(blocks);
        }
    }

    pub fn clear(&mut self) {
        self.runs.clear();
    }

    #[cfg(test)]
    fn runs(&self) -> Vec<(u64, u64)> {
        self.runs.iter().map(|(&s, &e)| (s, e)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_stream_is_one_run() {
        let mut set = NewestActive::default();
        for k in 0..1_000_000 {
            set.insert(k);
        }
        assert_eq!(set.runs(), vec![(0, 1_000_000)]);
        set.remove(500);
        assert_eq!(set.runs(), vec![(0, 500), (501, 1_000_000)]);
        set.insert(500);
        assert_eq!(set.runs(), vec![(0, 1_000_000)]);
        set.truncate(10);
        assert_eq!(set.runs(), vec![(0, 10)]);
        assert!(set.contains(9) && !set.contains(10));
    }

    #[test]
    fn scattered_blocks_are_bounded() {
        let mut set = NewestActive::default();
        for k in 0..(4 * MAX_RUNS as u64) {
            set.insert(2 * k);
            assert!(set.runs.len() <= MAX_RUNS);
            assert!(set.contains(2 * k));
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64),
        Remove(u64),
        Truncate(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..64).prop_map(Op::Insert),
            (0u64..64).prop_map(Op::Remove),
            (0u64..64).prop_map(Op::Truncate),
        ]
    }

    proptest! {
        #[test]
        fn behaves_as_a_set(ops in proptest::collection::vec(op(), 0..200)) {
            let mut set = NewestActive::default();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(k) => { set.insert(k); model.insert(k); }
                    Op::Remove(k) => { set.remove(k); model.remove(&k); }
                    Op::Truncate(n) => { set.truncate(n); model.retain(|&k| k < n); }
                }
                for k in 0..66 {
                    prop_assert_eq!(set.contains(k), model.contains(&k), "block {}", k);
                }
                let runs = set.runs();
                for pair in runs.windows(2) {
                    prop_assert!(pair[0].1 < pair[1].0, "runs {:?} touch", runs);
                }
                prop_assert!(runs.iter().all(|(s, e)| s < e));
            }
        }
    }
}
