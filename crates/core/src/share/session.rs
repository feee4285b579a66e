//! A share session (KIP-932) with one broker, without I/O: the epoch the next request carries and
//! which partitions it must name.
//!
//! ```text
//!   epoch 0: open, every partition named ──ok──► 1 ──ok──► 2 ... (i32::MAX wraps to 1)
//!   later epochs: name partitions added since, forget those removed, plus any with acknowledgements
//!   SHARE_SESSION_NOT_FOUND / INVALID_SHARE_SESSION_EPOCH / a broken connection: back to epoch 0
//!   close: epoch -1 (ShareAcknowledge, with the last acknowledgements)
//! ```
//!
//! Acknowledgements may not ride on an opening request (epoch 0): they wait for the next one.

use std::collections::BTreeSet;

use crate::group::TopicPartition;

/// The epoch that opens a session.
pub(crate) const OPEN_EPOCH: i32 = 0;
/// The epoch that closes a session.
pub(crate) const CLOSE_EPOCH: i32 = -1;

/// One broker's share session, as this member last agreed it with the broker.
#[derive(Debug, Default)]
pub(crate) struct ShareSession {
    epoch: i32,
    /// The partitions the broker's session holds.
    partitions: BTreeSet<TopicPartition>,
}

/// What the next ShareFetch names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SessionPlan {
    pub(crate) epoch: i32,
    /// Partitions to fetch that the session does not hold yet (all of them when opening).
    pub(crate) added: Vec<TopicPartition>,
    /// Partitions the session holds that are no longer wanted.
    pub(crate) forgotten: Vec<TopicPartition>,
}

impl ShareSession {
    /// The epoch the next request carries.
    pub(crate) fn epoch(&self) -> i32 {
        self.epoch
    }

    /// Whether a session is open on the broker (so acknowledgements may be sent).
    pub(crate) fn is_open(&self) -> bool {
        self.epoch > OPEN_EPOCH
    }

    /// The next request for fetching `wanted`.
    pub(crate) fn plan(&self, wanted: &BTreeSet<TopicPartition>) -> SessionPlan {
        if !self.is_open() {
            return SessionPlan {
                epoch: OPEN_EPOCH,
                added: wanted.iter().cloned().collect(),
                forgotten: Vec::new(),
            };
        }
        SessionPlan {
            epoch: self.epoch,
            added: wanted.difference(&self.partitions).cloned().collect(),
            forgotten: self.partitions.difference(wanted).cloned().collect(),
        }
    }

    /// The broker accepted a request made from `plan`: the session now holds `wanted`, and the
    /// next request carries the next epoch.
    pub(crate) fn succeeded(&mut self, plan: &SessionPlan) {
        for tp in &plan.forgotten {
            self.partitions.remove(tp);
        }
        self.partitions.extend(plan.added.iter().cloned());
        self.epoch = if self.epoch == i32::MAX {
            1
        } else {
            self.epoch + 1
        };
    }

    /// The broker lost the session (or the connection broke): open a new one next time.
    pub(crate) fn reset(&mut self) {
        self.epoch = OPEN_EPOCH;
        self.partitions.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ps: &[i32]) -> BTreeSet<TopicPartition> {
        ps.iter().map(|&p| TopicPartition::new("t", p)).collect()
    }

    fn tps(ps: &[i32]) -> Vec<TopicPartition> {
        set(ps).into_iter().collect()
    }

    #[test]
    fn opens_at_zero_then_sends_only_changes_with_rising_epochs() {
        let mut s = ShareSession::default();
        assert!(!s.is_open());
        // (wanted, expected epoch, added, forgotten)
        type Step<'a> = (&'a [i32], i32, &'a [i32], &'a [i32]);
        let steps: &[Step<'_>] = &[
            (&[0, 1], 0, &[0, 1], &[]),
            (&[0, 1], 1, &[], &[]),
            (&[0, 1, 2], 2, &[2], &[]),
            (&[2], 3, &[], &[0, 1]),
            (&[], 4, &[], &[2]),
        ];
        for (wanted, epoch, added, forgotten) in steps {
            let plan = s.plan(&set(wanted));
            assert_eq!(
                plan,
                SessionPlan {
                    epoch: *epoch,
                    added: tps(added),
                    forgotten: tps(forgotten)
                },
                "wanted {wanted:?}"
            );
            s.succeeded(&plan);
            assert!(s.is_open());
        }
    }

    #[test]
    fn a_reset_reopens_with_every_partition_and_the_epoch_wraps_to_one() {
        let mut s = ShareSession::default();
        let plan = s.plan(&set(&[0, 1]));
        s.succeeded(&plan);
        s.reset();
        assert_eq!(s.plan(&set(&[1])).epoch, OPEN_EPOCH);
        assert_eq!(s.plan(&set(&[1])).added, tps(&[1]));
        s.epoch = i32::MAX;
        let plan = s.plan(&set(&[1]));
        s.succeeded(&plan);
        assert_eq!(s.epoch(), 1);
    }
}
