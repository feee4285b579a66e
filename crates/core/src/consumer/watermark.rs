//! The contiguous completed watermark of one partition: the offset a commit may name.
//!
//! The fetcher hands records over in offset order (with gaps: compaction and transaction markers
//! leave offsets that carry no record). Records complete in any order. The watermark is the lowest
//! offset handed over and not yet completed, or, when everything is complete, the offset after the
//! last one handed over. Committing it says "everything below is processed", which is exactly true:
//! **no committed offset ever skips an unprocessed record.**
//!
//! Kept as a window of bits from the watermark up to the position: O(1) to track and complete a
//! record, amortised O(1) to advance, memory proportional to the spread of unfinished offsets.

use std::collections::VecDeque;

/// Tracks which offsets of one partition are done.
#[derive(Debug, Clone)]
pub(crate) struct WatermarkTracker {
    /// The lowest offset not known to be done; bit 0 of `window` is this offset.
    watermark: i64,
    /// The offset after the last one tracked (the fetch position as far as the tracker knows).
    position: i64,
    /// One flag per offset in `watermark..position`: true when done (gaps are done).
    window: VecDeque<bool>,
    /// How many offsets in the window are tracked records not yet done.
    pending: usize,
}

impl WatermarkTracker {
    /// Nothing tracked yet; the next record handed over is at or after `start`.
    pub(crate) fn new(start: i64) -> Self {
        Self {
            watermark: start,
            position: start,
            window: VecDeque::new(),
            pending: 0,
        }
    }

    /// A record at `offset` was handed to the dispatcher. Offsets must increase; offsets skipped
    /// between the previous one and this one carry no record and count as done.
    ///
    /// Returns false (and tracks nothing) for an offset below the position: a record fetched twice.
    pub(crate) fn track(&mut self, offset: i64) -> bool {
        if offset < self.position {
            return false;
        }
        for _ in self.position..offset {
            self.window.push_back(true);
        }
        self.window.push_back(false);
        self.pending += 1;
        self.position = offset + 1;
        self.advance();
        true
    }

    /// The record at `offset` is done. Returns false if it was not tracked or already done.
    pub(crate) fn complete(&mut self, offset: i64) -> bool {
        if offset < self.watermark || offset >= self.position {
            return false;
        }
        let slot = &mut self.window[(offset - self.watermark) as usize];
        if *slot {
            return false;
        }
        *slot = true;
        self.pending -= 1;
        self.advance();
        true
    }

    fn advance(&mut self) {
        while self.window.front() == Some(&true) {
            self.window.pop_front();
            self.watermark += 1;
        }
    }

    /// The offset to commit: every offset below it is done.
    pub(crate) fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The offset after the last one tracked.
    pub(crate) fn position(&self) -> i64 {
        self.position
    }

    /// Records tracked and not done.
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// Offsets above the watermark that are done records (not gaps are distinguishable here, so gaps
    /// above the watermark are included: skipping an offset with no record is harmless).
    pub(crate) fn done_above(&self) -> Vec<i64> {
        self.window
            .iter()
            .enumerate()
            .filter(|(_, done)| **done)
            .map(|(i, _)| self.watermark + i as i64)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        // (tracked offsets, completed offsets in order, expected watermark, expected pending)
        let cases: &[(&[i64], &[i64], i64, usize)] = &[
            (&[], &[], 10, 0),
            (&[10, 11, 12], &[], 10, 3),
            (&[10, 11, 12], &[11, 12], 10, 1),
            (&[10, 11, 12], &[11, 12, 10], 13, 0),
            (&[10, 13, 20], &[10], 13, 2),
            (&[10, 13, 20], &[13, 10], 20, 1),
            (&[12], &[12], 13, 0),
            (&[10, 11], &[10, 10, 11, 99], 12, 0),
        ];
        for (tracked, completed, watermark, pending) in cases {
            let mut t = WatermarkTracker::new(10);
            for &o in *tracked {
                assert!(t.track(o));
            }
            for &o in *completed {
                t.complete(o);
            }
            assert_eq!(t.watermark(), *watermark, "{tracked:?} {completed:?}");
            assert_eq!(t.pending(), *pending, "{tracked:?} {completed:?}");
        }
    }

    #[test]
    fn refetched_offsets_are_not_tracked_twice() {
        let mut t = WatermarkTracker::new(0);
        assert!(t.track(0));
        assert!(t.track(1));
        assert!(!t.track(1));
        assert!(!t.track(0));
        assert_eq!(t.pending(), 2);
    }

    #[test]
    fn done_above_lists_finished_offsets_past_the_watermark() {
        let mut t = WatermarkTracker::new(0);
        for o in 0..6 {
            t.track(o);
        }
        for o in [1, 3, 4] {
            t.complete(o);
        }
        assert_eq!(t.watermark(), 0);
        assert_eq!(t.done_above(), vec![1, 3, 4]);
    }

    proptest! {
        /// Random gaps and random completion orders: the watermark never passes an offset that is
        /// tracked and not complete, and reaches the position once all are complete.
        #[test]
        fn never_passes_an_incomplete_offset(
            gaps in proptest::collection::vec(0i64..4, 1..200),
            seed in any::<u64>(),
        ) {
            let mut t = WatermarkTracker::new(100);
            let mut offsets = Vec::new();
            let mut next = 100;
            for g in gaps {
                next += g;
                offsets.push(next);
                t.track(next);
                next += 1;
            }
            // A deterministic shuffle from the seed.
            let mut shuffled = offsets.clone();
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut done = std::collections::BTreeSet::new();
            for o in shuffled {
                prop_assert!(t.complete(o));
                done.insert(o);
                let lowest_incomplete = offsets.iter().copied().find(|x| !done.contains(x));
                match lowest_incomplete {
                    Some(x) => prop_assert!(t.watermark() <= x, "watermark {} passed incomplete {}", t.watermark(), x),
                    None => prop_assert_eq!(t.watermark(), next),
                }
            }
            prop_assert_eq!(t.pending(), 0);
        }
    }
}
