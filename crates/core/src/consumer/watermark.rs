//! The contiguous completed watermark of one partition: the offset a commit may name.
//!
//! The fetcher hands records over in offset order, with gaps: compaction, transaction markers and
//! aborted transactions leave offsets that carry no record, and the fetcher reports how far it has
//! read ([`WatermarkTracker::advance_to`]) even when the last offsets it stepped over hold nothing
//! for the handler. Records complete in any order. The watermark is the lowest offset handed over
//! and not yet completed, or, when everything is complete, the fetch position: the offset after the
//! last one the fetcher stepped over. Committing it says "everything below is processed or holds no
//! record", which is exactly true: **no committed offset ever skips an unprocessed record**, and a
//! fully consumed partition commits its log end, control markers and compaction gaps included (as
//! the Java consumer commits its position), so it shows no false lag.
//!
//! Kept as a queue of the records handed over and not yet passed by the watermark: O(1) to track,
//! O(1) to complete where offsets have no gaps (O(log n) past gaps), amortised O(1) to advance, memory proportional to the records between the
//! watermark and the position, whatever the size of the gaps between them.

use std::collections::VecDeque;

/// Tracks which offsets of one partition are done.
#[derive(Debug, Clone)]
pub(crate) struct WatermarkTracker {
    /// The offset after the last one handed over or stepped over (the fetch position as far as the
    /// tracker knows).
    position: i64,
    /// The records handed over that the watermark has not passed, in offset order, each with
    /// whether it is done. The front is never done (advancing pops done records).
    records: VecDeque<(i64, bool)>,
    /// How many of `records` are not done.
    pending: usize,
}

impl WatermarkTracker {
    /// Nothing tracked yet; the next record handed over is at or after `start`.
    pub(crate) fn new(start: i64) -> Self {
        Self {
            position: start,
            records: VecDeque::new(),
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
        self.records.push_back((offset, false));
        self.pending += 1;
        self.position = offset + 1;
        true
    }

    /// The fetcher has read up to `position` (exclusive): offsets from the last record tracked up
    /// to there carry no record (a control marker, an aborted transaction, a compaction gap) and
    /// count as done. A position at or below the current one changes nothing.
    pub(crate) fn advance_to(&mut self, position: i64) {
        self.position = self.position.max(position);
    }

    /// The record at `offset` is done. Returns false if it was not tracked or already done.
    pub(crate) fn complete(&mut self, offset: i64) -> bool {
        let Some(&(front, _)) = self.records.front() else {
            return false;
        };
        // Offsets without gaps, the usual case, sit at their distance from the front: no search.
        // A gap only moves a record nearer the front than that.
        let guess = usize::try_from(offset - front).unwrap_or(usize::MAX);
        let i = if self.records.get(guess).is_some_and(|&(o, _)| o == offset) {
            guess
        } else {
            let Ok(i) = self.records.binary_search_by_key(&offset, |&(o, _)| o) else {
                return false;
            };
            i
        };
        let done = &mut self.records[i].1;
        if *done {
            return false;
        }
        *done = true;
        self.pending -= 1;
        while self.records.front().is_some_and(|&(_, done)| done) {
            self.records.pop_front();
        }
        true
    }

    /// The offset to commit: every offset below it is done or holds no record.
    pub(crate) fn watermark(&self) -> i64 {
        self.records.front().map_or(self.position, |&(o, _)| o)
    }

    /// The offset after the last one tracked or stepped over.
    pub(crate) fn position(&self) -> i64 {
        self.position
    }

    /// Records tracked and not done.
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// The done records above the watermark, ascending (offsets that hold no record are left out:
    /// there is nothing there to skip).
    pub(crate) fn done_above(&self) -> Vec<i64> {
        self.records
            .iter()
            .filter(|&&(_, done)| done)
            .map(|&(o, _)| o)
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
    fn stepped_over_offsets_move_the_watermark_once_records_are_done() {
        // Records 10 and 11, then a control marker at 12: the fetcher's position is 13.
        let mut t = WatermarkTracker::new(10);
        t.track(10);
        t.track(11);
        t.advance_to(13);
        assert_eq!(t.watermark(), 10);
        t.complete(11);
        assert_eq!(t.watermark(), 10, "never past the unfinished record 10");
        t.complete(10);
        assert_eq!(
            t.watermark(),
            13,
            "past the marker once every record is done"
        );
        // A fetch that held only markers or aborted records moves it on by itself.
        t.advance_to(20);
        assert_eq!(t.watermark(), 20);
        // A stale position never moves it back; a record fetched again is not tracked.
        t.advance_to(15);
        assert_eq!(t.watermark(), 20);
        assert!(!t.track(19));
        // Compaction gaps of any size cost nothing.
        assert!(t.track(5_000_000_000));
        assert_eq!(t.watermark(), 5_000_000_000);
        assert!(t.complete(5_000_000_000));
        assert_eq!(t.watermark(), 5_000_000_001);
        assert_eq!(t.pending(), 0);
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
        /// tracked and not complete, and reaches the position (past offsets stepped over) once all are
        /// complete.
        #[test]
        fn never_passes_an_incomplete_offset(
            gaps in proptest::collection::vec(0i64..4, 1..200),
            tail in 0i64..4,
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
            // The fetcher stepped over `tail` offsets with no record after the last one.
            next += tail;
            t.advance_to(next);
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
