//! A KIP-227 fetch session with one broker: what the broker holds for us, and what the next Fetch
//! request must say so that it holds what we want.
//!
//! The first request of a session is *full*: session id 0, epoch 0, every wanted partition. If the
//! broker answers with a session id, later requests are *incremental*: they carry that id and the next
//! epoch, name only the partitions that are new or whose fetch position changed, and list in
//! `forgotten_topics_data` those no longer wanted (revoked, moved to another leader, or paused until
//! their records are processed). The broker fetches every partition the session holds. Whenever the
//! broker loses the session (FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH) or the
//! connection breaks, the session starts over with a full request. Pure bookkeeping: no I/O here.

use std::collections::{BTreeMap, HashMap};

use crate::group::TopicPartition;

/// The per-partition fields of a fetch the session holds: a change in any of them is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Wanted {
    pub(super) offset: i64,
    pub(super) leader_epoch: i32,
}

/// What one Fetch request says about its partitions.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Plan {
    pub(super) session_id: i32,
    pub(super) epoch: i32,
    /// Partitions named in the request: all of them for a full request, else the new and changed.
    pub(super) send: Vec<(TopicPartition, Wanted)>,
    /// Partitions the session holds that are no longer wanted (incremental requests only).
    pub(super) forget: Vec<TopicPartition>,
    pub(super) full: bool,
}

/// The session with one broker. Written only by that broker's fetch task.
#[derive(Debug, Default)]
pub(super) struct FetchSession {
    /// 0: no session; the next request is full.
    id: i32,
    /// The epoch of the next incremental request (1 after the full one, then counting up).
    epoch: i32,
    /// What the broker's session holds, as of the last answered request.
    held: HashMap<TopicPartition, Wanted>,
}

impl FetchSession {
    /// The request that makes the session hold exactly `wanted`.
    pub(super) fn plan(&self, wanted: &BTreeMap<TopicPartition, Wanted>) -> Plan {
        if self.id == 0 {
            return Plan {
                session_id: 0,
                epoch: 0,
                send: wanted.iter().map(|(tp, w)| (tp.clone(), *w)).collect(),
                forget: Vec::new(),
                full: true,
            };
        }
        let send = wanted
            .iter()
            .filter(|(tp, w)| self.held.get(*tp) != Some(*w))
            .map(|(tp, w)| (tp.clone(), *w))
            .collect();
        let mut forget: Vec<TopicPartition> = self
            .held
            .keys()
            .filter(|tp| !wanted.contains_key(*tp))
            .cloned()
            .collect();
        forget.sort();
        Plan {
            session_id: self.id,
            epoch: self.epoch,
            send,
            forget,
            full: false,
        }
    }

    /// `plan` was answered without a session error; `session_id` is the response's.
    pub(super) fn answered(&mut self, plan: Plan, session_id: i32) {
        if plan.full {
            self.held = plan.send.into_iter().collect();
            self.id = session_id;
            self.epoch = 1;
        } else {
            for tp in &plan.forget {
                self.held.remove(tp);
            }
            self.held.extend(plan.send);
            // Epochs run from 1 to i32::MAX and wrap to 1 (0 opens a session, -1 closes one).
            self.epoch = if self.epoch == i32::MAX {
                1
            } else {
                self.epoch + 1
            };
        }
        if self.id == 0 {
            // The broker keeps no session (sessions full, or an old broker): every request is full.
            self.held.clear();
        }
    }

    /// Forgets the session (a session error or a new connection): the next request is full.
    pub(super) fn reset(&mut self) {
        *self = Self::default();
    }

    #[cfg(test)]
    pub(super) fn id(&self) -> i32 {
        self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn want(entries: &[(i32, i64)]) -> BTreeMap<TopicPartition, Wanted> {
        entries
            .iter()
            .map(|&(p, offset)| {
                (
                    tp(p),
                    Wanted {
                        offset,
                        leader_epoch: 0,
                    },
                )
            })
            .collect()
    }

    fn named(plan: &Plan) -> Vec<(i32, i64)> {
        plan.send
            .iter()
            .map(|(tp, w)| (tp.partition, w.offset))
            .collect()
    }

    #[test]
    fn a_session_opens_with_a_full_request_then_sends_only_changes() {
        let mut s = FetchSession::default();
        let plan = s.plan(&want(&[(0, 10), (1, 20)]));
        assert!(plan.full);
        assert_eq!((plan.session_id, plan.epoch), (0, 0));
        assert_eq!(named(&plan), vec![(0, 10), (1, 20)]);
        s.answered(plan, 77);

        // Partition 0 moved on, 1 did not, 2 is new.
        let plan = s.plan(&want(&[(0, 15), (1, 20), (2, 0)]));
        assert!(!plan.full);
        assert_eq!((plan.session_id, plan.epoch), (77, 1));
        assert_eq!(named(&plan), vec![(0, 15), (2, 0)]);
        assert!(plan.forget.is_empty());
        s.answered(plan, 77);

        // Nothing changed: an empty incremental request (the broker fetches what it holds).
        let plan = s.plan(&want(&[(0, 15), (1, 20), (2, 0)]));
        assert_eq!((plan.epoch, named(&plan)), (2, vec![]));
        s.answered(plan, 77);

        // Partition 1 left (revoked, moved or paused): forgotten, then sent in full when back.
        let plan = s.plan(&want(&[(0, 15), (2, 0)]));
        assert_eq!(plan.forget, vec![tp(1)]);
        s.answered(plan, 77);
        let plan = s.plan(&want(&[(0, 15), (1, 20), (2, 0)]));
        assert_eq!(named(&plan), vec![(1, 20)]);
    }

    #[test]
    fn a_reset_or_a_sessionless_broker_means_full_requests() {
        let mut s = FetchSession::default();
        let plan = s.plan(&want(&[(0, 1)]));
        s.answered(plan, 0);
        let plan = s.plan(&want(&[(0, 1)]));
        assert!(plan.full, "no session id: full again");
        s.answered(plan, 5);
        assert_eq!(s.id(), 5);
        s.reset();
        let plan = s.plan(&want(&[(0, 1)]));
        assert!(plan.full);
        assert_eq!((plan.session_id, plan.epoch), (0, 0));
    }

    #[test]
    fn a_new_leader_epoch_is_a_change() {
        let mut s = FetchSession::default();
        let plan = s.plan(&want(&[(0, 1)]));
        s.answered(plan, 9);
        let mut w = want(&[(0, 1)]);
        w.get_mut(&tp(0)).unwrap().leader_epoch = 3;
        assert_eq!(s.plan(&w).send.len(), 1);
    }

    #[test]
    fn the_epoch_wraps_to_one() {
        let mut s = FetchSession::default();
        let plan = s.plan(&want(&[]));
        s.answered(plan, 9);
        s.epoch = i32::MAX;
        let plan = s.plan(&want(&[]));
        assert_eq!(plan.epoch, i32::MAX);
        s.answered(plan, 9);
        assert_eq!(s.plan(&want(&[])).epoch, 1);
    }
}
