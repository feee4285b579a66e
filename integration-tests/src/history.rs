//! A recorder of everything that happens to records in a fault test, and a checker strict enough to
//! catch the bug classes real consumer-group clients shipped (see `../shared/REFERENCES.md`).
//!
//! Events are appended under one lock, so their order is a real-time order: an event recorded after
//! another happened after it. Consumers record through [`History::listener`] (assignments,
//! revocations, losses, commits) and [`History::dispatched`] / [`History::processed`] in the handler;
//! producers record acknowledged sends with [`History::produced`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use kafkit::Result;
use kafkit::consumer::{ConsumedRecord, ConsumerListener};
use kafkit::group::{CommitReport, OffsetToCommit, TopicPartition};
use parking_lot::Mutex;

/// One thing that happened. `member` names a consumer, `tp` a partition, `offset` a record's
/// offset (for commits: the next offset to read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A producer got an acknowledgement.
    Produced {
        /// Where the record was written.
        tp: TopicPartition,
        /// Its offset.
        offset: i64,
        /// Its key.
        key: Option<Vec<u8>>,
    },
    /// A member's handler started on a record.
    Dispatched {
        /// The member.
        member: String,
        /// The record's partition.
        tp: TopicPartition,
        /// The record's offset.
        offset: i64,
    },
    /// A member's handler finished a record successfully.
    Processed {
        /// The member.
        member: String,
        /// The record's partition.
        tp: TopicPartition,
        /// The record's offset.
        offset: i64,
        /// The record's key.
        key: Option<Vec<u8>>,
    },
    /// A member is about to send a commit of `offset` for `tp`.
    CommitSent {
        /// The member.
        member: String,
        /// The partition.
        tp: TopicPartition,
        /// The offset being committed.
        offset: i64,
    },
    /// The coordinator accepted `member`'s commit of `offset` (the next offset to read) for `tp`.
    Committed {
        /// The member.
        member: String,
        /// The partition.
        tp: TopicPartition,
        /// The committed offset.
        offset: i64,
    },
    /// A member now owns these partitions.
    Assigned {
        /// The member.
        member: String,
        /// The partitions.
        partitions: Vec<TopicPartition>,
    },
    /// A member released these partitions after a revocation.
    Revoked {
        /// The member.
        member: String,
        /// The partitions.
        partitions: Vec<TopicPartition>,
    },
    /// A member lost these partitions without a commit.
    Lost {
        /// The member.
        member: String,
        /// The partitions.
        partitions: Vec<TopicPartition>,
    },
}

/// The shared event log of one test.
#[derive(Debug, Default)]
pub struct History {
    events: Mutex<Vec<Event>>,
}

impl History {
    /// An empty history.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn push(&self, e: Event) {
        self.events.lock().push(e);
    }

    /// A produce acknowledgement.
    pub fn produced(&self, tp: TopicPartition, offset: i64, key: Option<Vec<u8>>) {
        self.push(Event::Produced { tp, offset, key });
    }

    /// `member`'s handler starts on `record`.
    pub fn dispatched(&self, member: &str, record: &ConsumedRecord) {
        self.push(Event::Dispatched {
            member: member.to_owned(),
            tp: TopicPartition::new(record.topic(), record.partition()),
            offset: record.offset(),
        });
    }

    /// `member`'s handler finished `record` successfully.
    pub fn processed(&self, member: &str, record: &ConsumedRecord) {
        self.push(Event::Processed {
            member: member.to_owned(),
            tp: TopicPartition::new(record.topic(), record.partition()),
            offset: record.offset(),
            key: record.key().map(<[u8]>::to_vec),
        });
    }

    /// A listener recording `member`'s assignments, revocations, losses and commits.
    pub fn listener(self: &Arc<Self>, member: &str) -> Arc<dyn ConsumerListener> {
        Arc::new(MemberListener {
            member: member.to_owned(),
            history: Arc::clone(self),
        })
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().clone()
    }

    /// Distinct records processed by anyone.
    pub fn processed_count(&self) -> usize {
        self.events
            .lock()
            .iter()
            .filter_map(|e| match e {
                Event::Processed { tp, offset, .. } => Some((tp.clone(), *offset)),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Acknowledged records (their partition and offset) not processed yet. Waiting for this to reach
    /// zero, rather than for [`processed_count`](Self::processed_count) to reach the number of
    /// acknowledgements, is what "everything was processed" means: a send retried after a broker
    /// failure can be written twice, and the copy nobody was told about is processed too.
    pub fn acked_unprocessed(&self) -> usize {
        self.check(false).lost.len()
    }

    /// Checks the history; `ordered` says whether per-key order must hold (ordered dispatch modes).
    pub fn check(&self, ordered: bool) -> Verdict {
        check(&self.events(), ordered)
    }
}

struct MemberListener {
    member: String,
    history: Arc<History>,
}

impl ConsumerListener for MemberListener {
    fn assigned(&self, partitions: &[TopicPartition]) {
        self.history.push(Event::Assigned {
            member: self.member.clone(),
            partitions: partitions.to_vec(),
        });
    }

    fn revoked(&self, partitions: &[TopicPartition]) {
        self.history.push(Event::Revoked {
            member: self.member.clone(),
            partitions: partitions.to_vec(),
        });
    }

    fn lost(&self, partitions: &[TopicPartition]) {
        self.history.push(Event::Lost {
            member: self.member.clone(),
            partitions: partitions.to_vec(),
        });
    }

    fn committing(&self, offsets: &[OffsetToCommit]) {
        for o in offsets {
            self.history.push(Event::CommitSent {
                member: self.member.clone(),
                tp: o.partition.clone(),
                offset: o.offset,
            });
        }
    }

    fn committed(&self, result: &Result<CommitReport>) {
        if let Ok(report) = result {
            for (tp, offset) in &report.committed {
                self.history.push(Event::Committed {
                    member: self.member.clone(),
                    tp: tp.clone(),
                    offset: *offset,
                });
            }
        }
    }
}

/// What the checker found. [`Verdict::violations`] lists everything that breaks a guarantee;
/// duplicates inside the uncommitted window are counted, not violations (at-least-once).
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    /// Acknowledged by the broker, never processed.
    pub lost: Vec<(TopicPartition, i64)>,
    /// Processings beyond the first.
    pub duplicates: usize,
    /// Duplicates of records below the partition's committed offset when they were processed again:
    /// a consumer read below the last commit.
    pub duplicates_below_commit: Vec<(TopicPartition, i64)>,
    /// The largest number of duplicates in one partition after one ownership change.
    pub max_duplicate_window: usize,
    /// Same-key records processed out of offset order within one member's tenure.
    pub order_violations: Vec<String>,
    /// Commits sent by a member for a partition it did not own at the time.
    pub commits_not_owned: Vec<String>,
    /// A partition's committed offset went backwards.
    pub commits_backwards: Vec<String>,
    /// A handler started on a record of a partition its member did not own.
    pub dispatched_not_owned: Vec<String>,
    /// A commit named an offset above a record that was never processed.
    pub commits_past_unprocessed: Vec<String>,
}

impl Verdict {
    /// Every broken guarantee, one line each.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        v.extend(
            self.lost
                .iter()
                .map(|(tp, o)| format!("lost: {tp} offset {o}")),
        );
        v.extend(
            self.duplicates_below_commit
                .iter()
                .map(|(tp, o)| format!("read below the commit: {tp} offset {o}")),
        );
        v.extend(self.order_violations.iter().map(|s| format!("order: {s}")));
        v.extend(
            self.commits_not_owned
                .iter()
                .map(|s| format!("commit not owned: {s}")),
        );
        v.extend(
            self.commits_backwards
                .iter()
                .map(|s| format!("commit backwards: {s}")),
        );
        v.extend(
            self.dispatched_not_owned
                .iter()
                .map(|s| format!("dispatched not owned: {s}")),
        );
        v.extend(
            self.commits_past_unprocessed
                .iter()
                .map(|s| format!("commit past unprocessed: {s}")),
        );
        v
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lost {}, duplicates {} (max window {}), violations {}",
            self.lost.len(),
            self.duplicates,
            self.max_duplicate_window,
            self.violations().len()
        )
    }
}

fn check(events: &[Event], ordered: bool) -> Verdict {
    let mut verdict = Verdict::default();
    let mut owned: HashMap<&str, BTreeSet<&TopicPartition>> = HashMap::new();
    // Ownership tenure per (member, partition), to scope order checks.
    let mut tenure: HashMap<(&str, &TopicPartition), u64> = HashMap::new();
    let mut next_tenure = 0u64;
    let mut committed: HashMap<&TopicPartition, i64> = HashMap::new();
    let mut processed: BTreeMap<(&TopicPartition, i64), usize> = BTreeMap::new();
    // Last offset per (tenure, key), for order.
    let mut last_of_key: HashMap<(u64, &TopicPartition, Option<&[u8]>), i64> = HashMap::new();
    // Duplicates per (partition, tenure).
    let mut window: HashMap<(&TopicPartition, u64), usize> = HashMap::new();

    for e in events {
        match e {
            Event::Produced { .. } => {}
            Event::Assigned { member, partitions } => {
                for tp in partitions {
                    owned.entry(member).or_default().insert(tp);
                    next_tenure += 1;
                    tenure.insert((member.as_str(), tp), next_tenure);
                }
            }
            Event::Revoked { member, partitions } | Event::Lost { member, partitions } => {
                for tp in partitions {
                    owned.entry(member).or_default().remove(tp);
                }
            }
            Event::Dispatched { member, tp, offset } => {
                if !owned.get(member.as_str()).is_some_and(|o| o.contains(tp)) {
                    verdict
                        .dispatched_not_owned
                        .push(format!("{member} {tp} offset {offset}"));
                }
            }
            Event::Processed {
                member,
                tp,
                offset,
                key,
            } => {
                let t = tenure.get(&(member.as_str(), tp)).copied().unwrap_or(0);
                let count = processed.entry((tp, *offset)).or_insert(0);
                *count += 1;
                if *count > 1 {
                    verdict.duplicates += 1;
                    *window.entry((tp, t)).or_insert(0) += 1;
                    if committed.get(tp).is_some_and(|&c| *offset < c) {
                        verdict.duplicates_below_commit.push((tp.clone(), *offset));
                    }
                }
                if ordered {
                    let k = (t, tp, key.as_deref());
                    if let Some(&prev) = last_of_key.get(&k)
                        && prev >= *offset
                    {
                        verdict.order_violations.push(format!(
                            "{member} {tp}: offset {offset} after {prev} for the same key"
                        ));
                    }
                    last_of_key.insert(k, *offset);
                }
            }
            Event::CommitSent { member, tp, offset } => {
                if !owned.get(member.as_str()).is_some_and(|o| o.contains(tp)) {
                    verdict
                        .commits_not_owned
                        .push(format!("{member} {tp} offset {offset}"));
                }
            }
            Event::Committed { member, tp, offset } => {
                if let Some(&prev) = committed.get(tp)
                    && *offset < prev
                {
                    verdict
                        .commits_backwards
                        .push(format!("{member} {tp}: {prev} -> {offset}"));
                }
                committed.insert(
                    tp,
                    (*offset).max(committed.get(tp).copied().unwrap_or(i64::MIN)),
                );
            }
        }
    }

    // Every acknowledged record processed; every commit below processed-or-absent offsets only.
    let produced: BTreeSet<(&TopicPartition, i64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Produced { tp, offset, .. } => Some((tp, *offset)),
            _ => None,
        })
        .collect();
    for (tp, offset) in &produced {
        if !processed.contains_key(&(*tp, *offset)) {
            verdict.lost.push(((*tp).clone(), *offset));
        }
    }
    for (tp, &c) in &committed {
        if let Some((_, o)) = produced
            .iter()
            .find(|(p, o)| p == tp && *o < c && !processed.contains_key(&(*p, *o)))
        {
            verdict.commits_past_unprocessed.push(format!(
                "{tp}: committed {c} but offset {o} was never processed"
            ));
        }
    }
    verdict.max_duplicate_window = window.values().copied().max().unwrap_or(0);
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn produced(p: i32, o: i64, key: &str) -> Event {
        Event::Produced {
            tp: tp(p),
            offset: o,
            key: Some(key.into()),
        }
    }

    fn processed(m: &str, p: i32, o: i64, key: &str) -> Event {
        Event::Processed {
            member: m.into(),
            tp: tp(p),
            offset: o,
            key: Some(key.into()),
        }
    }

    fn assigned(m: &str, p: i32) -> Event {
        Event::Assigned {
            member: m.into(),
            partitions: vec![tp(p)],
        }
    }

    fn revoked(m: &str, p: i32) -> Event {
        Event::Revoked {
            member: m.into(),
            partitions: vec![tp(p)],
        }
    }

    fn committed(m: &str, p: i32, o: i64) -> Event {
        Event::Committed {
            member: m.into(),
            tp: tp(p),
            offset: o,
        }
    }

    fn commit_sent(m: &str, p: i32, o: i64) -> Event {
        Event::CommitSent {
            member: m.into(),
            tp: tp(p),
            offset: o,
        }
    }

    fn dispatched(m: &str, p: i32, o: i64) -> Event {
        Event::Dispatched {
            member: m.into(),
            tp: tp(p),
            offset: o,
        }
    }

    #[test]
    fn a_clean_history_has_no_violations() {
        let h = vec![
            produced(0, 0, "a"),
            produced(0, 1, "a"),
            assigned("m1", 0),
            dispatched("m1", 0, 0),
            processed("m1", 0, 0, "a"),
            dispatched("m1", 0, 1),
            processed("m1", 0, 1, "a"),
            committed("m1", 0, 2),
            revoked("m1", 0),
        ];
        let v = check(&h, true);
        assert!(v.violations().is_empty(), "{:?}", v.violations());
        assert_eq!(v.duplicates, 0);
    }

    #[test]
    fn each_bug_class_is_caught() {
        let cases: Vec<(&str, Vec<Event>)> = vec![
            ("lost", vec![produced(0, 0, "a"), assigned("m1", 0)]),
            (
                "commit not owned",
                vec![
                    produced(0, 0, "a"),
                    assigned("m1", 0),
                    processed("m1", 0, 0, "a"),
                    revoked("m1", 0),
                    commit_sent("m1", 0, 1),
                ],
            ),
            (
                "commit backwards",
                vec![
                    produced(0, 0, "a"),
                    assigned("m1", 0),
                    processed("m1", 0, 0, "a"),
                    committed("m1", 0, 1),
                    committed("m1", 0, 0),
                ],
            ),
            (
                "dispatched not owned",
                vec![
                    produced(0, 0, "a"),
                    assigned("m1", 0),
                    revoked("m1", 0),
                    dispatched("m1", 0, 0),
                    processed("m1", 0, 0, "a"),
                ],
            ),
            (
                "order",
                vec![
                    produced(0, 0, "a"),
                    produced(0, 1, "a"),
                    assigned("m1", 0),
                    processed("m1", 0, 1, "a"),
                    processed("m1", 0, 0, "a"),
                ],
            ),
            (
                "read below the commit",
                vec![
                    produced(0, 0, "a"),
                    assigned("m1", 0),
                    processed("m1", 0, 0, "a"),
                    committed("m1", 0, 1),
                    revoked("m1", 0),
                    assigned("m2", 0),
                    processed("m2", 0, 0, "a"),
                ],
            ),
            (
                "commit past unprocessed",
                vec![
                    produced(0, 0, "a"),
                    produced(0, 1, "a"),
                    assigned("m1", 0),
                    processed("m1", 0, 1, "a"),
                    committed("m1", 0, 2),
                ],
            ),
        ];
        for (kind, events) in cases {
            let v = check(&events, true);
            assert!(
                v.violations().iter().any(|s| s.starts_with(kind)),
                "{kind}: {:?}",
                v.violations()
            );
        }
    }

    #[test]
    fn a_commit_sent_while_owned_may_complete_after_a_loss() {
        let h = vec![
            produced(0, 0, "a"),
            assigned("m1", 0),
            processed("m1", 0, 0, "a"),
            commit_sent("m1", 0, 1),
            Event::Lost {
                member: "m1".into(),
                partitions: vec![tp(0)],
            },
            committed("m1", 0, 1),
        ];
        assert!(check(&h, true).violations().is_empty());
    }

    #[test]
    fn duplicates_in_the_uncommitted_window_are_counted_not_violations() {
        let h = vec![
            produced(0, 0, "a"),
            produced(0, 1, "a"),
            assigned("m1", 0),
            processed("m1", 0, 0, "a"),
            processed("m1", 0, 1, "a"),
            committed("m1", 0, 1),
            Event::Lost {
                member: "m1".into(),
                partitions: vec![tp(0)],
            },
            assigned("m2", 0),
            processed("m2", 0, 1, "a"),
        ];
        let v = check(&h, true);
        assert!(v.violations().is_empty(), "{:?}", v.violations());
        assert_eq!((v.duplicates, v.max_duplicate_window), (1, 1));
    }
}
