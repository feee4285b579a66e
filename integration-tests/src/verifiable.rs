//! A validator for the event stream of one `verifiable-consumer` process (Apache Kafka's
//! VerifiableConsumer contract, as `kafkit verifiable-consumer` and the Java tool print it).
//!
//! [`parse`] reads stdout (lines that are not JSON objects are kept aside, as Kafka's harness skips
//! them; a process killed mid-line leaves one). [`validate`] replays the events and reports every
//! broken invariant of the contract:
//! - records only for assigned partitions, and only between `startup_complete` and `shutdown_complete`;
//! - within an assignment, each partition's `minOffset` is the previous `maxOffset + 1` and a range
//!   holds exactly `count` records (when [`Options::contiguous`]: the partition-ordered mode);
//! - no read below this process's own last commit of the partition;
//! - commits only for assigned partitions, never above the consumed position, never backwards;
//! - `offsets_committed` for everything consumed comes before `partitions_revoked` (not for lost
//!   partitions: those cannot be committed);
//! - after a clean shutdown, position == committed for every partition still held.
//!
//! [`check_group`] adds the cross-process rule: nobody reads below a commit made (by anyone) before
//! it was assigned the partition.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

/// A topic partition, displayed as Java does: `topic-3`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

impl TopicPartition {
    /// `topic`/`partition`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// One partition's share of a `records_consumed` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSet {
    /// The partition.
    pub tp: TopicPartition,
    /// Records consumed.
    pub count: u64,
    /// The lowest offset among them.
    pub min_offset: i64,
    /// The highest offset among them.
    pub max_offset: i64,
}

/// One partition of an `offsets_committed` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitEntry {
    /// The partition.
    pub tp: TopicPartition,
    /// The offset committed (the next to read); absent on a failed entry.
    pub offset: Option<i64>,
    /// Why this partition's commit failed, if it did.
    pub error: Option<String>,
}

/// A verifiable-consumer event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `startup_complete`.
    StartupComplete,
    /// `shutdown_complete`.
    ShutdownComplete,
    /// `partitions_assigned`: these partitions are now owned (added to what is owned).
    PartitionsAssigned(Vec<TopicPartition>),
    /// `partitions_revoked`; `lost` when the partitions were lost without a commit.
    PartitionsRevoked {
        /// The partitions released.
        partitions: Vec<TopicPartition>,
        /// Lost (session expired, fenced) rather than revoked in a rebalance.
        lost: bool,
    },
    /// `records_consumed`.
    RecordsConsumed {
        /// Records in the event.
        count: u64,
        /// Per partition.
        partitions: Vec<RecordSet>,
    },
    /// `record_data` (with `--verbose`).
    RecordData {
        /// The partition.
        tp: TopicPartition,
        /// The record's offset.
        offset: i64,
    },
    /// `offsets_committed`.
    OffsetsCommitted {
        /// Whether the commit succeeded.
        success: bool,
        /// Why it failed.
        error: Option<String>,
        /// The partitions in the commit.
        offsets: Vec<CommitEntry>,
    },
    /// Any other event name (ignored, as Kafka's harness ignores unknown events).
    Other(String),
}

/// An event, where it was and when (`timestamp`, ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedEvent {
    /// 1-based line number in the stream.
    pub line: usize,
    /// The event's `timestamp`.
    pub timestamp: i64,
    /// The event.
    pub event: Event,
}

/// A parsed stream: the events, and the lines that were not events.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    /// The events, in order.
    pub events: Vec<TimedEvent>,
    /// Lines that were not JSON events (line number, text).
    pub unparsed: Vec<(usize, String)>,
}

/// Parses one process's stdout.
pub fn parse(text: &str) -> Stream {
    let mut stream = Stream::default();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(trimmed)
            .ok()
            .and_then(|v| event(&v))
        {
            Some((timestamp, event)) => stream.events.push(TimedEvent {
                line: line_no,
                timestamp,
                event,
            }),
            None => stream.unparsed.push((line_no, line.to_owned())),
        }
    }
    stream
}

fn tp(v: &Value) -> Option<TopicPartition> {
    Some(TopicPartition::new(
        v.get("topic")?.as_str()?,
        i32::try_from(v.get("partition")?.as_i64()?).ok()?,
    ))
}

fn partitions(v: &Value) -> Option<Vec<TopicPartition>> {
    v.get("partitions")?.as_array()?.iter().map(tp).collect()
}

fn event(v: &Value) -> Option<(i64, Event)> {
    let timestamp = v.get("timestamp")?.as_i64()?;
    let name = v.get("name")?.as_str()?;
    let event = match name {
        "startup_complete" => Event::StartupComplete,
        "shutdown_complete" => Event::ShutdownComplete,
        "partitions_assigned" => Event::PartitionsAssigned(partitions(v)?),
        "partitions_revoked" => Event::PartitionsRevoked {
            partitions: partitions(v)?,
            lost: v.get("lost").and_then(Value::as_bool).unwrap_or(false),
        },
        "records_consumed" => Event::RecordsConsumed {
            count: v.get("count")?.as_u64()?,
            partitions: v
                .get("partitions")?
                .as_array()?
                .iter()
                .map(|p| {
                    Some(RecordSet {
                        tp: tp(p)?,
                        count: p.get("count")?.as_u64()?,
                        min_offset: p.get("minOffset")?.as_i64()?,
                        max_offset: p.get("maxOffset")?.as_i64()?,
                    })
                })
                .collect::<Option<_>>()?,
        },
        "record_data" => Event::RecordData {
            tp: tp(v)?,
            offset: v.get("offset")?.as_i64()?,
        },
        "offsets_committed" => Event::OffsetsCommitted {
            success: v.get("success")?.as_bool()?,
            error: v.get("error").and_then(Value::as_str).map(str::to_owned),
            offsets: v
                .get("offsets")?
                .as_array()?
                .iter()
                .map(|o| {
                    Some(CommitEntry {
                        tp: tp(o)?,
                        offset: o.get("offset").and_then(Value::as_i64),
                        error: o
                            .get("error")
                            .and_then(Value::as_str)
                            .filter(|e| !e.is_empty())
                            .map(str::to_owned),
                    })
                })
                .collect::<Option<_>>()?,
        },
        other => Event::Other(other.to_owned()),
    };
    Some((timestamp, event))
}

/// What [`validate`] checks beyond the invariants that hold in every mode.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Each partition's records are consumed in offset order without gaps within an assignment
    /// (partition-ordered mode, and Java's consumer). Off for key-ordered mode, whose ranges may
    /// leave gaps that later events fill.
    pub contiguous: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { contiguous: true }
    }
}

/// A broken invariant, at a line of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The line of the offending event.
    pub line: usize,
    /// What was broken.
    pub kind: ViolationKind,
}

/// The invariants [`validate`] checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViolationKind {
    /// An event other than startup_complete came first.
    BeforeStartup,
    /// An event came after shutdown_complete.
    AfterShutdown,
    /// A partition was assigned while already assigned.
    AssignedTwice(TopicPartition),
    /// A partition was revoked without being assigned.
    RevokedNotAssigned(TopicPartition),
    /// Records were consumed for a partition not assigned.
    RecordsNotAssigned(TopicPartition),
    /// A records_consumed count differs from the sum of its partitions' counts.
    CountMismatch {
        /// The event's count.
        count: u64,
        /// The sum over its partitions.
        sum: u64,
    },
    /// A range cannot hold its count (or, contiguous, does not hold exactly its count).
    BadRange(RecordSet),
    /// Within an assignment, a range did not start at the previous maxOffset + 1.
    NotContiguous {
        /// The partition.
        tp: TopicPartition,
        /// The previous maxOffset + 1.
        expected: i64,
        /// The range's minOffset.
        min_offset: i64,
    },
    /// A read started below this process's last commit of the partition.
    ReadBelowCommit {
        /// The partition.
        tp: TopicPartition,
        /// The last commit seen before.
        committed: i64,
        /// The range's minOffset.
        min_offset: i64,
    },
    /// A commit for a partition not assigned.
    CommitNotAssigned {
        /// The partition.
        tp: TopicPartition,
        /// The offset committed.
        offset: i64,
    },
    /// A commit for a partition with no consumed position in this assignment.
    CommitWithoutPosition {
        /// The partition.
        tp: TopicPartition,
        /// The offset committed.
        offset: i64,
    },
    /// A commit above the consumed position.
    CommitAbovePosition {
        /// The partition.
        tp: TopicPartition,
        /// The offset committed.
        offset: i64,
        /// maxOffset + 1 of what was consumed.
        position: i64,
    },
    /// A commit below an earlier one.
    CommitBackwards {
        /// The partition.
        tp: TopicPartition,
        /// The offset committed.
        offset: i64,
        /// The earlier commit.
        previous: i64,
    },
    /// A partition was revoked (not lost) with consumed records not committed, and no failed commit
    /// to explain it: offsets_committed must come before partitions_revoked.
    UncommittedAtRevoke {
        /// The partition.
        tp: TopicPartition,
        /// The consumed position.
        position: i64,
        /// The last commit, if any.
        committed: Option<i64>,
    },
    /// shutdown_complete with a partition whose position is not committed.
    UncommittedAtShutdown {
        /// The partition.
        tp: TopicPartition,
        /// The consumed position.
        position: i64,
        /// The last commit, if any.
        committed: Option<i64>,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ViolationKind as K;
        write!(f, "line {}: ", self.line)?;
        match &self.kind {
            K::BeforeStartup => write!(f, "event before startup_complete"),
            K::AfterShutdown => write!(f, "event after shutdown_complete"),
            K::AssignedTwice(tp) => write!(f, "{tp} assigned while already assigned"),
            K::RevokedNotAssigned(tp) => write!(f, "{tp} revoked but not assigned"),
            K::RecordsNotAssigned(tp) => write!(f, "records consumed for {tp}, not assigned"),
            K::CountMismatch { count, sum } => {
                write!(
                    f,
                    "records_consumed count {count} but partitions sum to {sum}"
                )
            }
            K::BadRange(r) => write!(
                f,
                "{}: {} records in [{}, {}]",
                r.tp, r.count, r.min_offset, r.max_offset
            ),
            K::NotContiguous {
                tp,
                expected,
                min_offset,
            } => write!(f, "{tp}: consumed from {min_offset}, expected {expected}"),
            K::ReadBelowCommit {
                tp,
                committed,
                min_offset,
            } => write!(
                f,
                "{tp}: read from {min_offset}, below the commit {committed}"
            ),
            K::CommitNotAssigned { tp, offset } => {
                write!(f, "{tp}: committed {offset} while not assigned")
            }
            K::CommitWithoutPosition { tp, offset } => {
                write!(f, "{tp}: committed {offset} with nothing consumed")
            }
            K::CommitAbovePosition {
                tp,
                offset,
                position,
            } => write!(f, "{tp}: committed {offset} above the position {position}"),
            K::CommitBackwards {
                tp,
                offset,
                previous,
            } => write!(f, "{tp}: committed {offset} below the earlier {previous}"),
            K::UncommittedAtRevoke {
                tp,
                position,
                committed,
            } => write!(
                f,
                "{tp} revoked at position {position} with commit {committed:?}"
            ),
            K::UncommittedAtShutdown {
                tp,
                position,
                committed,
            } => write!(
                f,
                "shutdown with {tp} at position {position} and commit {committed:?}"
            ),
        }
    }
}

/// The first read of a partition in an assignment: checked against everyone's earlier commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstRead {
    /// The line of the records_consumed event.
    pub line: usize,
    /// When the partition was assigned.
    pub assigned_at: i64,
    /// The partition.
    pub tp: TopicPartition,
    /// Where the read started.
    pub min_offset: i64,
}

/// What a stream consumed and committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Whether startup_complete was seen.
    pub started: bool,
    /// Whether shutdown_complete was seen.
    pub clean_shutdown: bool,
    /// Records consumed, per partition (duplicates counted).
    pub consumed: BTreeMap<TopicPartition, u64>,
    /// Consumed ranges `(minOffset, maxOffset)` per partition, in stream order.
    pub ranges: BTreeMap<TopicPartition, Vec<(i64, i64)>>,
    /// The last successful commit per partition.
    pub last_committed: BTreeMap<TopicPartition, i64>,
    /// Successful commits `(timestamp, partition, offset)`.
    pub commits: Vec<(i64, TopicPartition, i64)>,
    /// Commits that failed (whole events or single partitions).
    pub failed_commits: usize,
    /// partitions_assigned events.
    pub assignments: usize,
    /// partitions_revoked events (lost ones included).
    pub revocations: usize,
    /// The first read of each partition in each assignment.
    pub first_reads: Vec<FirstRead>,
    /// Offsets named by `record_data` events (`--verbose`), per partition, in stream order.
    pub record_offsets: BTreeMap<TopicPartition, Vec<i64>>,
}

impl Summary {
    /// Records consumed over all partitions.
    pub fn total_consumed(&self) -> u64 {
        self.consumed.values().sum()
    }
}

/// The result of [`validate`].
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// What was consumed and committed.
    pub summary: Summary,
    /// Every broken invariant, in stream order.
    pub violations: Vec<Violation>,
}

#[derive(Default)]
struct Replay {
    assigned: BTreeMap<TopicPartition, i64>,
    /// Consumed position (maxOffset + 1) in the current assignment.
    position: BTreeMap<TopicPartition, i64>,
    /// Partitions whose latest commit attempt failed.
    commit_failed: BTreeSet<TopicPartition>,
    started: bool,
    stopped: bool,
}

/// Replays `stream` and reports what it consumed and every invariant it broke.
pub fn validate(stream: &Stream, options: Options) -> Report {
    use ViolationKind as K;
    let mut report = Report::default();
    let mut st = Replay::default();
    for e in &stream.events {
        let mut violation = |kind| {
            report.violations.push(Violation { line: e.line, kind });
        };
        if matches!(e.event, Event::Other(_)) {
            continue;
        }
        if st.stopped {
            violation(K::AfterShutdown);
            continue;
        }
        if !st.started && e.event != Event::StartupComplete {
            violation(K::BeforeStartup);
        }
        let summary = &mut report.summary;
        match &e.event {
            Event::StartupComplete => {
                st.started = true;
                summary.started = true;
            }
            Event::PartitionsAssigned(tps) => {
                summary.assignments += 1;
                for tp in tps {
                    if st.assigned.insert(tp.clone(), e.timestamp).is_some() {
                        violation(K::AssignedTwice(tp.clone()));
                    }
                }
            }
            Event::PartitionsRevoked { partitions, lost } => {
                summary.revocations += 1;
                for tp in partitions {
                    if st.assigned.remove(tp).is_none() {
                        violation(K::RevokedNotAssigned(tp.clone()));
                    }
                    let position = st.position.remove(tp);
                    let committed = summary.last_committed.get(tp).copied();
                    if let Some(position) = position
                        && !lost
                        && committed != Some(position)
                        && !st.commit_failed.contains(tp)
                    {
                        violation(K::UncommittedAtRevoke {
                            tp: tp.clone(),
                            position,
                            committed,
                        });
                    }
                }
            }
            Event::RecordsConsumed { count, partitions } => {
                let sum: u64 = partitions.iter().map(|p| p.count).sum();
                if sum != *count {
                    violation(K::CountMismatch { count: *count, sum });
                }
                for set in partitions {
                    let tp = &set.tp;
                    let Some(&assigned_at) = st.assigned.get(tp) else {
                        violation(K::RecordsNotAssigned(tp.clone()));
                        continue;
                    };
                    let span = set.max_offset - set.min_offset + 1;
                    let bad = set.count == 0
                        || span < 1
                        || set.count as i64 > span
                        || (options.contiguous && set.count as i64 != span);
                    if bad {
                        violation(K::BadRange(set.clone()));
                    }
                    match st.position.get(tp) {
                        Some(&expected) if options.contiguous && expected != set.min_offset => {
                            violation(K::NotContiguous {
                                tp: tp.clone(),
                                expected,
                                min_offset: set.min_offset,
                            });
                        }
                        Some(_) => {}
                        None => {
                            summary.first_reads.push(FirstRead {
                                line: e.line,
                                assigned_at,
                                tp: tp.clone(),
                                min_offset: set.min_offset,
                            });
                            if let Some(&committed) = summary.last_committed.get(tp)
                                && set.min_offset < committed
                            {
                                violation(K::ReadBelowCommit {
                                    tp: tp.clone(),
                                    committed,
                                    min_offset: set.min_offset,
                                });
                            }
                        }
                    }
                    let next = set.max_offset + 1;
                    let position = st.position.entry(tp.clone()).or_insert(next);
                    *position = if options.contiguous {
                        next
                    } else {
                        (*position).max(next)
                    };
                    *summary.consumed.entry(tp.clone()).or_default() += set.count;
                    summary
                        .ranges
                        .entry(tp.clone())
                        .or_default()
                        .push((set.min_offset, set.max_offset));
                }
            }
            Event::OffsetsCommitted {
                success, offsets, ..
            } => {
                if !success {
                    summary.failed_commits += 1;
                    if offsets.is_empty() {
                        st.commit_failed.extend(st.assigned.keys().cloned());
                    }
                    st.commit_failed
                        .extend(offsets.iter().map(|o| o.tp.clone()));
                    continue;
                }
                for entry in offsets {
                    let tp = &entry.tp;
                    let (None, Some(offset)) = (&entry.error, entry.offset) else {
                        summary.failed_commits += 1;
                        st.commit_failed.insert(tp.clone());
                        continue;
                    };
                    if !st.assigned.contains_key(tp) {
                        violation(K::CommitNotAssigned {
                            tp: tp.clone(),
                            offset,
                        });
                    }
                    match st.position.get(tp) {
                        None => violation(K::CommitWithoutPosition {
                            tp: tp.clone(),
                            offset,
                        }),
                        Some(&position) if offset > position => violation(K::CommitAbovePosition {
                            tp: tp.clone(),
                            offset,
                            position,
                        }),
                        Some(_) => {}
                    }
                    if let Some(&previous) = summary.last_committed.get(tp)
                        && offset < previous
                    {
                        violation(K::CommitBackwards {
                            tp: tp.clone(),
                            offset,
                            previous,
                        });
                    }
                    summary.last_committed.insert(tp.clone(), offset);
                    summary.commits.push((e.timestamp, tp.clone(), offset));
                    st.commit_failed.remove(tp);
                }
            }
            Event::ShutdownComplete => {
                st.stopped = true;
                summary.clean_shutdown = true;
                for (tp, &position) in &st.position {
                    let committed = summary.last_committed.get(tp).copied();
                    if committed != Some(position) && !st.commit_failed.contains(tp) {
                        violation(K::UncommittedAtShutdown {
                            tp: tp.clone(),
                            position,
                            committed,
                        });
                    }
                }
            }
            Event::RecordData { tp, offset } => {
                if !st.assigned.contains_key(tp) {
                    violation(K::RecordsNotAssigned(tp.clone()));
                }
                summary
                    .record_offsets
                    .entry(tp.clone())
                    .or_default()
                    .push(*offset);
            }
            Event::Other(_) => {}
        }
    }
    report
}

/// Checks across the processes of one group that nobody read a partition from below a commit
/// made (by any process) before that reader was assigned it. Commits stamped in the same
/// millisecond as the assignment are not counted (the clocks cannot order them). Returns, per
/// offending report index, its violations.
pub fn check_group(reports: &[&Report]) -> Vec<(usize, Violation)> {
    let commits: Vec<&(i64, TopicPartition, i64)> = reports
        .iter()
        .flat_map(|r| r.summary.commits.iter())
        .collect();
    let mut out = Vec::new();
    for (i, report) in reports.iter().enumerate() {
        for read in &report.summary.first_reads {
            let committed = commits
                .iter()
                .filter(|(at, tp, _)| *at < read.assigned_at && *tp == read.tp)
                .map(|(_, _, offset)| *offset)
                .max();
            if let Some(committed) = committed
                && read.min_offset < committed
            {
                out.push((
                    i,
                    Violation {
                        line: read.line,
                        kind: ViolationKind::ReadBelowCommit {
                            tp: read.tp.clone(),
                            committed,
                            min_offset: read.min_offset,
                        },
                    },
                ));
            }
        }
    }
    out
}

/// Every offset the reports say was consumed, per partition: from `record_data` events where a
/// stream has them (exact in every mode), else from the ranges (exact in contiguous mode, where each
/// range holds exactly its count; an over-estimate where ranges may have gaps).
pub fn consumed_offsets(reports: &[&Report]) -> BTreeMap<TopicPartition, BTreeSet<i64>> {
    let mut out: BTreeMap<TopicPartition, BTreeSet<i64>> = BTreeMap::new();
    for report in reports {
        let s = &report.summary;
        if !s.record_offsets.is_empty() {
            for (tp, offsets) in &s.record_offsets {
                out.entry(tp.clone())
                    .or_default()
                    .extend(offsets.iter().copied());
            }
            continue;
        }
        for (tp, ranges) in &s.ranges {
            let set = out.entry(tp.clone()).or_default();
            for &(min, max) in ranges {
                set.extend(min..=max);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ViolationKind as K;

    /// Builds a stream line by line; timestamps advance by 10 ms per event.
    #[derive(Default)]
    struct Lines {
        text: String,
        t: i64,
    }

    impl Lines {
        fn push(mut self, name: &str, body: &str) -> Self {
            self.t += 10;
            let sep = if body.is_empty() { "" } else { "," };
            self.text.push_str(&format!(
                r#"{{"timestamp":{},"name":"{name}"{sep}{body}}}"#,
                self.t
            ));
            self.text.push('\n');
            self
        }
        fn start(self) -> Self {
            self.push("startup_complete", "")
        }
        fn stop(self) -> Self {
            self.push("shutdown_complete", "")
        }
        fn tps(parts: &[i32]) -> String {
            let items: Vec<String> = parts
                .iter()
                .map(|p| format!(r#"{{"topic":"t","partition":{p}}}"#))
                .collect();
            format!(r#""partitions":[{}]"#, items.join(","))
        }
        fn assign(self, parts: &[i32]) -> Self {
            self.push("partitions_assigned", &Self::tps(parts))
        }
        fn revoke(self, parts: &[i32]) -> Self {
            self.push("partitions_revoked", &Self::tps(parts))
        }
        fn lose(self, parts: &[i32]) -> Self {
            let body = format!(r#"{},"lost":true"#, Self::tps(parts));
            self.push("partitions_revoked", &body)
        }
        /// `(partition, count, min, max)`.
        fn consumed(self, sets: &[(i32, u64, i64, i64)]) -> Self {
            let count: u64 = sets.iter().map(|s| s.1).sum();
            let items: Vec<String> = sets
                .iter()
                .map(|(p, c, min, max)| {
                    format!(
                        r#"{{"topic":"t","partition":{p},"count":{c},"minOffset":{min},"maxOffset":{max}}}"#
                    )
                })
                .collect();
            let body = format!(r#""count":{count},"partitions":[{}]"#, items.join(","));
            self.push("records_consumed", &body)
        }
        fn commit(self, offsets: &[(i32, i64)]) -> Self {
            let items: Vec<String> = offsets
                .iter()
                .map(|(p, o)| format!(r#"{{"topic":"t","partition":{p},"offset":{o}}}"#))
                .collect();
            let body = format!(r#""offsets":[{}],"success":true"#, items.join(","));
            self.push("offsets_committed", &body)
        }
        fn commit_failed(self) -> Self {
            self.push(
                "offsets_committed",
                r#""offsets":[],"error":"REBALANCE_IN_PROGRESS","success":false"#,
            )
        }
        fn validate(&self) -> Report {
            validate(&parse(&self.text), Options::default())
        }
        fn kinds(&self) -> Vec<ViolationKind> {
            self.validate()
                .violations
                .into_iter()
                .map(|v| v.kind)
                .collect()
        }
    }

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    /// Assigned 0 and 1, consumed 0..=9 on 0 in two events and 0..=4 on 1, committed, revoked.
    fn good() -> Lines {
        Lines::default()
            .start()
            .assign(&[0, 1])
            .consumed(&[(0, 5, 0, 4), (1, 5, 0, 4)])
            .commit(&[(0, 5), (1, 5)])
            .consumed(&[(0, 5, 5, 9)])
            .commit(&[(0, 10)])
            .revoke(&[0, 1])
    }

    #[test]
    fn a_clean_stream_has_no_violations_and_is_summarised() {
        let stream = good()
            .assign(&[1])
            .consumed(&[(1, 2, 5, 6)])
            .commit(&[(1, 7)])
            .stop();
        let report = stream.validate();
        assert_eq!(report.violations, vec![], "{:?}", report.violations);
        let s = &report.summary;
        assert!(s.started && s.clean_shutdown);
        assert_eq!(s.consumed, BTreeMap::from([(tp(0), 10), (tp(1), 7)]));
        assert_eq!(s.last_committed, BTreeMap::from([(tp(0), 10), (tp(1), 7)]));
        assert_eq!(s.total_consumed(), 17);
        assert_eq!((s.assignments, s.revocations), (2, 1));
        assert_eq!(s.ranges[&tp(1)], vec![(0, 4), (5, 6)]);
        let offsets = consumed_offsets(&[&report]);
        assert_eq!(offsets[&tp(0)], (0..10).collect());
    }

    #[test]
    fn each_violation_is_detected() {
        let cases: Vec<(&str, Lines, ViolationKind)> = vec![
            (
                "records for a partition not assigned",
                Lines::default().start().assign(&[0]).consumed(&[(1, 1, 0, 0)]),
                K::RecordsNotAssigned(tp(1)),
            ),
            (
                "records after revocation",
                good().consumed(&[(0, 1, 10, 10)]),
                K::RecordsNotAssigned(tp(0)),
            ),
            (
                "a gap within an assignment",
                Lines::default()
                    .start()
                    .assign(&[0])
                    .consumed(&[(0, 5, 0, 4)])
                    .consumed(&[(0, 1, 6, 6)]),
                K::NotContiguous {
                    tp: tp(0),
                    expected: 5,
                    min_offset: 6,
                },
            ),
            (
                "a duplicate within an assignment",
                Lines::default()
                    .start()
                    .assign(&[0])
                    .consumed(&[(0, 5, 0, 4)])
                    .consumed(&[(0, 1, 4, 4)]),
                K::NotContiguous {
                    tp: tp(0),
                    expected: 5,
                    min_offset: 4,
                },
            ),
            (
                "a range with a hole",
                Lines::default().start().assign(&[0]).consumed(&[(0, 3, 0, 4)]),
                K::BadRange(RecordSet {
                    tp: tp(0),
                    count: 3,
                    min_offset: 0,
                    max_offset: 4,
                }),
            ),
            (
                "a count that is not the sum",
                Lines::default().start().assign(&[0]).push(
                    "records_consumed",
                    r#""count":9,"partitions":[{"topic":"t","partition":0,"count":1,"minOffset":0,"maxOffset":0}]"#,
                ),
                K::CountMismatch { count: 9, sum: 1 },
            ),
            (
                "a commit for a partition not assigned",
                Lines::default().start().assign(&[0]).consumed(&[(0, 1, 0, 0)]).commit(&[(0, 1), (2, 1)]),
                K::CommitNotAssigned { tp: tp(2), offset: 1 },
            ),
            (
                "a commit after the revocation",
                good().commit(&[(0, 10)]),
                K::CommitNotAssigned { tp: tp(0), offset: 10 },
            ),
            (
                "a commit above the position",
                Lines::default().start().assign(&[0]).consumed(&[(0, 5, 0, 4)]).commit(&[(0, 6)]),
                K::CommitAbovePosition {
                    tp: tp(0),
                    offset: 6,
                    position: 5,
                },
            ),
            (
                "a commit with nothing consumed",
                Lines::default().start().assign(&[0]).commit(&[(0, 3)]),
                K::CommitWithoutPosition { tp: tp(0), offset: 3 },
            ),
            (
                "a commit going backwards",
                Lines::default()
                    .start()
                    .assign(&[0])
                    .consumed(&[(0, 5, 0, 4)])
                    .commit(&[(0, 5)])
                    .commit(&[(0, 3)]),
                K::CommitBackwards {
                    tp: tp(0),
                    offset: 3,
                    previous: 5,
                },
            ),
            (
                "revoked before the commit of what was consumed",
                Lines::default()
                    .start()
                    .assign(&[0])
                    .consumed(&[(0, 5, 0, 4)])
                    .commit(&[(0, 3)])
                    .revoke(&[0])
                    .commit(&[(0, 5)]),
                K::UncommittedAtRevoke {
                    tp: tp(0),
                    position: 5,
                    committed: Some(3),
                },
            ),
            (
                "a clean shutdown with the position not committed",
                Lines::default().start().assign(&[0]).consumed(&[(0, 5, 0, 4)]).stop(),
                K::UncommittedAtShutdown {
                    tp: tp(0),
                    position: 5,
                    committed: None,
                },
            ),
            (
                "a read below this process's own commit",
                good().assign(&[0]).consumed(&[(0, 2, 8, 9)]),
                K::ReadBelowCommit {
                    tp: tp(0),
                    committed: 10,
                    min_offset: 8,
                },
            ),
            (
                "an assignment of a partition already held",
                Lines::default().start().assign(&[0]).assign(&[0]),
                K::AssignedTwice(tp(0)),
            ),
            (
                "a revocation of a partition not held",
                Lines::default().start().assign(&[0]).revoke(&[1]),
                K::RevokedNotAssigned(tp(1)),
            ),
            (
                "events after shutdown_complete",
                good().stop().assign(&[0]),
                K::AfterShutdown,
            ),
            (
                "events before startup_complete",
                Lines::default().assign(&[0]),
                K::BeforeStartup,
            ),
        ];
        for (what, lines, expected) in cases {
            let kinds = lines.kinds();
            assert!(
                kinds.contains(&expected),
                "{what}: expected {expected:?}, got {kinds:?}\n{}",
                lines.text
            );
        }
    }

    #[test]
    fn lost_partitions_and_failed_commits_excuse_the_missing_commit() {
        let lost = Lines::default()
            .start()
            .assign(&[0])
            .consumed(&[(0, 5, 0, 4)])
            .lose(&[0])
            .assign(&[0])
            .consumed(&[(0, 7, 0, 6)])
            .commit(&[(0, 7)])
            .stop();
        assert_eq!(lost.kinds(), vec![]);

        let failed = Lines::default()
            .start()
            .assign(&[0])
            .consumed(&[(0, 5, 0, 4)])
            .commit_failed()
            .revoke(&[0])
            .stop();
        let report = failed.validate();
        assert_eq!(report.violations, vec![]);
        assert_eq!(report.summary.failed_commits, 1);
    }

    #[test]
    fn a_killed_process_leaves_a_partial_line_that_is_set_aside() {
        let mut lines = good();
        lines
            .text
            .push_str(r#"{"timestamp":99,"name":"records_con"#);
        let stream = parse(&lines.text);
        assert_eq!(stream.unparsed.len(), 1);
        let report = validate(&stream, Options::default());
        assert_eq!(report.violations, vec![]);
        assert!(!report.summary.clean_shutdown);
    }

    #[test]
    fn without_contiguity_gaps_are_allowed_but_commits_still_bound_by_position() {
        let lines = Lines::default()
            .start()
            .assign(&[0])
            .consumed(&[(0, 2, 0, 3)])
            .consumed(&[(0, 2, 1, 2)])
            .commit(&[(0, 4)])
            .commit(&[(0, 5)]);
        let report = validate(&parse(&lines.text), Options { contiguous: false });
        let kinds: Vec<_> = report.violations.into_iter().map(|v| v.kind).collect();
        assert_eq!(
            kinds,
            vec![K::CommitAbovePosition {
                tp: tp(0),
                offset: 5,
                position: 4
            }]
        );
    }

    #[test]
    fn record_data_gives_the_exact_offsets_where_ranges_have_gaps() {
        let mut lines = Lines::default().start().assign(&[0]);
        for offset in [0, 3] {
            let body =
                format!(r#""key":"k","value":"v","topic":"t","partition":0,"offset":{offset}"#);
            lines = lines.push("record_data", &body);
        }
        lines = lines.consumed(&[(0, 2, 0, 3)]);
        let report = validate(&parse(&lines.text), Options { contiguous: false });
        assert_eq!(report.violations, vec![]);
        assert_eq!(consumed_offsets(&[&report])[&tp(0)], BTreeSet::from([0, 3]));
        // A record_data line for a partition not held is a violation too.
        let stray = Lines::default().start().push(
            "record_data",
            r#""key":null,"value":"v","topic":"t","partition":1,"offset":0"#,
        );
        assert_eq!(stray.kinds(), vec![K::RecordsNotAssigned(tp(1))]);
    }

    #[test]
    fn the_group_check_finds_a_read_below_another_members_commit() {
        // A consumes 0..=9 and commits 10 at t=40, then B is assigned at t=(later) and reads from 5.
        let a = Lines::default()
            .start()
            .assign(&[0])
            .consumed(&[(0, 10, 0, 9)])
            .commit(&[(0, 10)])
            .revoke(&[0])
            .stop();
        let mut b = Lines {
            t: 100,
            ..Lines::default()
        }
        .start()
        .assign(&[0])
        .consumed(&[(0, 5, 5, 9)]);
        let (ra, rb) = (a.validate(), b.validate());
        let found = check_group(&[&ra, &rb]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, 1);
        assert_eq!(
            found[0].1.kind,
            K::ReadBelowCommit {
                tp: tp(0),
                committed: 10,
                min_offset: 5
            }
        );
        // Reading from the commit is fine.
        b = Lines {
            t: 100,
            ..Lines::default()
        }
        .start()
        .assign(&[0])
        .consumed(&[(0, 5, 10, 14)]);
        assert_eq!(check_group(&[&ra, &b.validate()]), vec![]);
    }
}
