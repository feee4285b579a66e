//! What this member owns, and the one gate every commit passes: a commit is sent only for partitions
//! owned in the current generation (or in a fixed assignment), and never below what this member
//! already committed for them.

use std::collections::{BTreeSet, HashMap};

use super::{CommitReport, OffsetToCommit};
use crate::group::TopicPartition;

/// The partitions this member owns and, for each, the lowest offset a commit may carry (the commit
/// floor: raised by every successful commit and by OffsetFetch, never lowered while owned).
///
/// Written by the member task (assign, release, lose) and by commit calls, always under the member's
/// state lock. The owned set only shrinks through [`release`](Self::release) (after a revocation
/// is done) and [`take_all`](Self::take_all) (lost or left), each dropping the floor with it, so a
/// partition that comes back starts from what OffsetFetch says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Ownership {
    partitions: BTreeSet<TopicPartition>,
    floor: HashMap<TopicPartition, i64>,
}

/// The commits [`Ownership::admit`] let through, and the report of those it refused.
#[derive(Debug)]
pub(super) struct Admitted {
    pub(super) to_send: Vec<OffsetToCommit>,
    pub(super) report: CommitReport,
}

impl Ownership {
    /// Late-ack fencing and commit monotonicity, in one place: an offset is admitted only when the
    /// member may commit (`live`: it is in a generation, or holds a fixed assignment), the
    /// partition is owned, and the offset is not below the partition's floor (the same offset
    /// again is admitted: its metadata may carry a newer offset map).
    pub(super) fn admit(&self, live: bool, offsets: &[OffsetToCommit]) -> Admitted {
        let mut report = CommitReport::default();
        let mut to_send = Vec::new();
        for o in offsets {
            if !live || !self.partitions.contains(&o.partition) {
                report.not_owned.push(o.partition.clone());
            } else if self.floor.get(&o.partition).is_some_and(|&f| o.offset < f) {
                report.not_advanced.push(o.partition.clone());
            } else {
                to_send.push(o.clone());
            }
        }
        Admitted { to_send, report }
    }

    /// Raises `tp`'s floor to `offset` (a commit succeeded, or OffsetFetch read it) if `tp` is owned.
    pub(super) fn raise_floor(&mut self, tp: &TopicPartition, offset: i64) {
        if self.partitions.contains(tp) {
            let floor = self.floor.entry(tp.clone()).or_insert(offset);
            *floor = (*floor).max(offset);
        }
    }

    #[cfg(test)]
    fn contains(&self, tp: &TopicPartition) -> bool {
        self.partitions.contains(tp)
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    pub(super) fn to_vec(&self) -> Vec<TopicPartition> {
        self.partitions.iter().cloned().collect()
    }

    pub(super) fn set(&self) -> &BTreeSet<TopicPartition> {
        &self.partitions
    }

    /// Takes `partitions` into the owned set.
    pub(super) fn add(&mut self, partitions: impl IntoIterator<Item = TopicPartition>) {
        self.partitions.extend(partitions);
    }

    /// Gives up `partitions` (their revocation is done), with their floors.
    pub(super) fn release(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.partitions.remove(tp);
            self.floor.remove(tp);
        }
    }

    /// Gives up everything (lost, failed or left) and returns what was owned.
    pub(super) fn take_all(&mut self) -> Vec<TopicPartition> {
        self.floor.clear();
        std::mem::take(&mut self.partitions).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(tp: &TopicPartition, offset: i64) -> OffsetToCommit {
        OffsetToCommit {
            partition: tp.clone(),
            offset,
            metadata: None,
        }
    }

    #[test]
    fn admits_only_owned_partitions_in_a_live_generation_and_never_below_the_floor() {
        let (a, b, c) = (
            TopicPartition::new("t", 0),
            TopicPartition::new("t", 1),
            TopicPartition::new("t", 2),
        );
        let mut owned = Ownership::default();
        owned.add([a.clone(), b.clone()]);
        owned.raise_floor(&a, 10);
        owned.raise_floor(&c, 99); // not owned: no floor kept
        // (live, offsets, sent, not_owned, not_advanced)
        type Case = (bool, Vec<OffsetToCommit>, Vec<i64>, usize, usize);
        let cases: &[Case] = &[
            (
                true,
                vec![offset(&a, 9), offset(&b, 1), offset(&c, 5)],
                vec![1],
                1,
                1,
            ),
            (true, vec![offset(&a, 10)], vec![10], 0, 0),
            (true, vec![offset(&a, 11)], vec![11], 0, 0),
            (false, vec![offset(&a, 11), offset(&b, 1)], vec![], 2, 0),
            (true, vec![offset(&c, 100)], vec![], 1, 0),
        ];
        for (live, offsets, sent, not_owned, not_advanced) in cases {
            let admitted = owned.admit(*live, offsets);
            let what = format!("live {live}, {offsets:?}");
            assert_eq!(
                admitted
                    .to_send
                    .iter()
                    .map(|o| o.offset)
                    .collect::<Vec<_>>(),
                *sent,
                "{what}"
            );
            assert_eq!(admitted.report.not_owned.len(), *not_owned, "{what}");
            assert_eq!(admitted.report.not_advanced.len(), *not_advanced, "{what}");
        }
    }

    #[test]
    fn the_floor_only_rises_and_is_forgotten_with_the_partition() {
        let a = TopicPartition::new("t", 0);
        let mut owned = Ownership::default();
        owned.add([a.clone()]);
        owned.raise_floor(&a, 10);
        owned.raise_floor(&a, 5);
        assert_eq!(
            owned.admit(true, &[offset(&a, 9)]).report.not_advanced,
            std::slice::from_ref(&a)
        );
        owned.release(std::slice::from_ref(&a));
        assert!(!owned.contains(&a));
        assert_eq!(
            owned.admit(true, &[offset(&a, 9)]).report.not_owned,
            std::slice::from_ref(&a)
        );
        // Back again (a new tenure): the old floor is gone; OffsetFetch sets the new one.
        owned.add([a.clone()]);
        assert_eq!(owned.admit(true, &[offset(&a, 3)]).to_send.len(), 1);
        owned.raise_floor(&a, 4);
        assert_eq!(owned.take_all(), std::slice::from_ref(&a));
        assert!(owned.is_empty());
        owned.add([a.clone()]);
        assert_eq!(owned.admit(true, &[offset(&a, 3)]).to_send.len(), 1);
    }
}
