//! `kafkit verifiable-consumer`: Apache Kafka's `VerifiableConsumer` contract on the kafkit consumer.
//!
//! Records are reported when kafkit hands them to this tool (Java reports what `poll` returned), in
//! the order they are handed out, then acknowledged; kafkit commits the contiguous acknowledged
//! watermark. Every event goes through one mutex ([`Reporter`]) so that, on stdout, buffered
//! `records_consumed` always precede an assignment, revocation or commit event: a commit is then
//! never above the position the harness has seen.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use kafkit::ClientConfig;
use kafkit::consumer::{
    ConsumedRecord, ConsumerBuilder, ConsumerListener, DispatchMode, OffsetReset,
};
use kafkit::group::{
    Assignor, CommitReport, CooperativeStickyAssignor, GroupConfig, GroupProtocol, OffsetToCommit,
    RangeAssignor, RoundRobinAssignor, TopicPartition,
};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::common::GroupProtocolArgs;
use crate::events::{NoFields, emit};
use crate::{Failure, properties, shutdown_signal};

/// Records reported per `records_consumed` event at most; a partial batch is flushed every second.
const FLUSH_RECORDS: u64 = 1000;
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Consumes a topic in a group and prints consumer events (assignments, records consumed, commits)
/// as JSON lines on stdout, like Apache Kafka's VerifiableConsumer.
#[derive(Debug, Args)]
#[command(after_help = "\
Events (one JSON object per line, each with `timestamp` in ms and `name`): startup_complete, \
partitions_assigned, partitions_revoked (lost partitions too, with \"lost\":true, as Java's \
onPartitionsLost defaults to onPartitionsRevoked), records_consumed, record_data (--verbose), \
offsets_committed, shutdown_complete. SIGTERM or SIGINT stops gracefully: in-flight records \
finish, offsets are committed, the member leaves, then shutdown_complete is printed.")]
pub(crate) struct ConsumerArgs {
    /// The group id shared among members of the consumer group.
    #[arg(long = "group-id", value_name = "GROUP_ID")]
    group_id: String,

    /// Consumes messages from this topic.
    #[arg(long, value_name = "TOPIC")]
    topic: String,

    /// The server(s) to connect to: HOST1:PORT1[,HOST2:PORT2[...]].
    #[arg(long = "bootstrap-server", value_name = "HOST:PORT,...")]
    bootstrap_server: Option<String>,

    /// Deprecated alias of --bootstrap-server (Kafka's system tests still pass it).
    #[arg(long = "broker-list", value_name = "HOST:PORT,...", hide = true)]
    broker_list: Option<String>,

    /// The consumer's session timeout in ms (`session.timeout.ms`). Default 30000.
    #[arg(long = "session-timeout", value_name = "TIMEOUT_MS")]
    session_timeout: Option<u64>,

    /// Commit at Kafka's auto-commit interval (5 s) instead of after every processed batch (200 ms).
    /// kafkit never auto-commits what it has merely fetched: both settings are kafkit's periodic
    /// commits of the processed-records watermark, reported as offsets_committed events.
    #[arg(long = "enable-autocommit")]
    enable_autocommit: bool,

    /// Consume this many messages, then shut down. -1 (the default): until SIGTERM/SIGINT.
    #[arg(
        long = "max-messages",
        value_name = "MAX-MESSAGES",
        default_value_t = -1,
        allow_negative_numbers = true
    )]
    max_messages: i64,

    /// Assignors, most preferred first, comma-separated: Java class names
    /// (org.apache.kafka.clients.consumer.RangeAssignor, RoundRobinAssignor,
    /// CooperativeStickyAssignor) or range, roundrobin, cooperative-sticky. Default RangeAssignor.
    #[arg(long = "assignment-strategy", value_name = "STRATEGY")]
    assignment_strategy: Option<String>,

    /// Static membership (`group.instance.id`).
    #[arg(long = "group-instance-id", value_name = "GROUP_INSTANCE_ID")]
    group_instance_id: Option<String>,

    /// Where to start without a committed offset: earliest, latest or none. Default earliest.
    #[arg(long = "reset-policy", value_name = "POLICY")]
    reset_policy: Option<String>,

    /// Print a record_data event for every consumed record.
    #[arg(long)]
    verbose: bool,

    /// --group-protocol classic|consumer and --group-remote-assignor uniform|range. With the
    /// consumer protocol the broker decides the session timeout, heartbeat interval and
    /// assignment: --session-timeout and --assignment-strategy are refused then, as Java does.
    #[command(flatten)]
    group_protocol: GroupProtocolArgs,

    /// Consumer settings as a Java properties file; command-line options take precedence.
    #[arg(long = "consumer.config", value_name = "CONFIG_FILE")]
    consumer_config: Option<PathBuf>,

    /// kafkit: how records run. partition-ordered (one at a time per partition, offset order) keeps
    /// every records_consumed range contiguous; unordered hands out each partition in offset order
    /// but finishes records concurrently; key-ordered may hand out a partition's records out of
    /// offset order (per key), so its ranges can leave gaps that later events fill.
    #[arg(long = "dispatch-mode", value_enum, default_value_t = Mode::PartitionOrdered)]
    dispatch_mode: Mode,

    /// kafkit: most records in flight across the consumer in key-ordered and unordered modes.
    #[arg(long = "max-in-flight", value_name = "N", default_value_t = 100)]
    max_in_flight: usize,

    /// kafkit: how often processed offsets are committed, in ms (overrides --enable-autocommit's choice).
    #[arg(long = "commit-interval-ms", value_name = "MS")]
    commit_interval_ms: Option<u64>,

    /// kafkit: simulated processing time per record, in ms (records then finish out of order in
    /// the concurrent modes). Default 0.
    #[arg(long = "processing-time-ms", value_name = "MS", default_value_t = 0)]
    processing_time_ms: u64,

    /// kafkit: how long to keep trying to reach a bootstrap broker before failing, in ms.
    #[arg(
        long = "connect-timeout-ms",
        value_name = "MS",
        default_value_t = 30_000
    )]
    connect_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    PartitionOrdered,
    KeyOrdered,
    Unordered,
}

/// Settings from `--consumer.config`, before the command line overrides them.
#[derive(Debug, Default)]
struct FileSettings {
    bootstrap: Option<String>,
    client_id: Option<String>,
    session_timeout: Option<u64>,
    heartbeat_interval: Option<u64>,
    max_poll_interval: Option<u64>,
    reset: Option<String>,
    instance_id: Option<String>,
    strategy: Option<String>,
    commit_interval: Option<u64>,
    fetch_max_wait: Option<u64>,
    max_partition_fetch_bytes: Option<usize>,
    rack: Option<String>,
}

fn file_settings(path: Option<&PathBuf>) -> Result<FileSettings, String> {
    let mut s = FileSettings::default();
    let Some(path) = path else { return Ok(s) };
    for (key, value) in properties::load(path)? {
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{}: `{key}` must be a number, got `{v}`", path.display()))
        };
        match key.as_str() {
            "bootstrap.servers" => s.bootstrap = Some(value),
            "client.id" => s.client_id = Some(value),
            "session.timeout.ms" => s.session_timeout = Some(number(&value)?),
            "heartbeat.interval.ms" => s.heartbeat_interval = Some(number(&value)?),
            "max.poll.interval.ms" => s.max_poll_interval = Some(number(&value)?),
            "auto.offset.reset" => s.reset = Some(value),
            "group.instance.id" => s.instance_id = Some(value),
            "partition.assignment.strategy" => s.strategy = Some(value),
            "auto.commit.interval.ms" => s.commit_interval = Some(number(&value)?),
            "fetch.max.wait.ms" => s.fetch_max_wait = Some(number(&value)?),
            "max.partition.fetch.bytes" => {
                s.max_partition_fetch_bytes = Some(number(&value)? as usize)
            }
            "client.rack" => s.rack = Some(value),
            "security.protocol" if value.eq_ignore_ascii_case("PLAINTEXT") => {}
            "security.protocol" => {
                return Err(format!(
                    "{}: security.protocol={value} is not supported by this build (PLAINTEXT only)",
                    path.display()
                ));
            }
            _ => {
                tracing::warn!(setting = %key, file = %path.display(), "ignoring a consumer setting kafkit does not use")
            }
        }
    }
    Ok(s)
}

/// `range`, `roundrobin`, `cooperative-sticky` or their Java class names, comma-separated.
fn assignors(list: &str) -> Result<Vec<Arc<dyn Assignor>>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| {
            let short = name.rsplit('.').next().unwrap_or(name);
            let assignor: Arc<dyn Assignor> = match short.to_ascii_lowercase().as_str() {
                "range" | "rangeassignor" => Arc::new(RangeAssignor),
                "roundrobin" | "roundrobinassignor" => Arc::new(RoundRobinAssignor),
                "cooperative-sticky" | "cooperativestickyassignor" => {
                    Arc::new(CooperativeStickyAssignor)
                }
                _ => {
                    return Err(format!(
                        "unsupported --assignment-strategy `{name}`: use range, roundrobin or cooperative-sticky (or their Java class names)"
                    ));
                }
            };
            Ok(assignor)
        })
        .collect()
}

fn reset_policy(name: &str) -> Result<OffsetReset, String> {
    match name.to_ascii_lowercase().as_str() {
        "earliest" => Ok(OffsetReset::Earliest),
        "latest" => Ok(OffsetReset::Latest),
        "none" => Ok(OffsetReset::None),
        _ => Err(format!(
            "invalid --reset-policy `{name}`: must be earliest, latest or none"
        )),
    }
}

/// Builds the consumer, runs it until the message limit or a signal, and prints the events.
pub(crate) async fn run(args: ConsumerArgs) -> Result<(), Failure> {
    let file = file_settings(args.consumer_config.as_ref())?;
    let bootstrap = args
        .bootstrap_server
        .clone()
        .or_else(|| args.broker_list.clone())
        .or(file.bootstrap.clone())
        .ok_or("--bootstrap-server is required")?;
    let mut client = crate::common::with_env_reconnect_backoff(
        ClientConfig::new([bootstrap.as_str()])?
            .connect_timeout(Duration::from_millis(args.connect_timeout_ms)),
    )?;
    if let Some(id) = &file.client_id {
        client = client.client_id(id.as_str());
    }

    let mut group = args.group_protocol.apply(GroupConfig::new(
        args.group_id.as_str(),
        [args.topic.as_str()],
    ))?;
    let session_set = args.session_timeout.or(file.session_timeout);
    let strategy_set = args.assignment_strategy.clone().or(file.strategy.clone());
    if group.group_protocol() == GroupProtocol::Classic {
        let session = Duration::from_millis(session_set.unwrap_or(30_000));
        let heartbeat = file
            .heartbeat_interval
            .map(Duration::from_millis)
            .unwrap_or_else(|| Duration::from_secs(3).min(session / 3));
        let strategy = strategy_set
            .unwrap_or_else(|| "org.apache.kafka.clients.consumer.RangeAssignor".to_owned());
        group = group
            .session_timeout(session)
            .heartbeat_interval(heartbeat)
            .assignors(assignors(&strategy)?);
    } else {
        // The broker decides these; set explicitly, the group settings refuse them by name.
        if let Some(ms) = session_set {
            group = group.session_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = file.heartbeat_interval {
            group = group.heartbeat_interval(Duration::from_millis(ms));
        }
        if let Some(strategy) = strategy_set {
            group = group.assignors(assignors(&strategy)?);
        }
    }
    if let Some(ms) = file.max_poll_interval {
        group = group.rebalance_timeout(Duration::from_millis(ms));
    }
    if let Some(id) = args.group_instance_id.clone().or(file.instance_id.clone()) {
        group = group.group_instance_id(id);
    }
    if let Some(rack) = &file.rack {
        group = group.rack_id(rack.as_str());
    }

    let reset = reset_policy(
        args.reset_policy
            .as_deref()
            .or(file.reset.as_deref())
            .unwrap_or("earliest"),
    )?;
    let mode = match args.dispatch_mode {
        Mode::PartitionOrdered => DispatchMode::PartitionOrdered,
        Mode::KeyOrdered => DispatchMode::KeyOrdered {
            max_in_flight: args.max_in_flight,
        },
        Mode::Unordered => DispatchMode::Unordered {
            max_in_flight: args.max_in_flight,
        },
    };
    let commit_interval = args
        .commit_interval_ms
        .or(if args.enable_autocommit {
            file.commit_interval.or(Some(5_000))
        } else {
            Some(200)
        })
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_millis(200));

    let reporter = Arc::new(Reporter::new(args.verbose));
    let mut builder = ConsumerBuilder::new(client, group)
        .dispatch(mode)
        .auto_offset_reset(reset)
        .commit_interval(commit_interval)
        // The contract wants each partition's records contiguous within an assignment. The offset
        // map would let a new owner skip records the previous owner finished out of order, leaving
        // gaps; without it those records are delivered again (at-least-once either way).
        .offset_map(false)
        .listener(Arc::clone(&reporter) as Arc<dyn ConsumerListener>);
    if let Some(ms) = file.fetch_max_wait {
        builder = builder.fetch_max_wait(Duration::from_millis(ms));
    }
    if let Some(bytes) = file.max_partition_fetch_bytes {
        builder = builder.max_partition_fetch_bytes(bytes);
    }
    // Connection failures keep their exit codes (4 unreachable, 6 security).
    let consumer = builder.build().await?;
    let mut stream = consumer.stream()?;
    emit("startup_complete", &NoFields {});

    let flusher = {
        let reporter = Arc::clone(&reporter);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_INTERVAL);
            loop {
                tick.tick().await;
                reporter.flush();
            }
        })
    };
    let limit = u64::try_from(args.max_messages).ok();
    let delay = Duration::from_millis(args.processing_time_ms);
    let ack_inline = delay.is_zero() && args.dispatch_mode == Mode::PartitionOrdered;
    let mut consumed: u64 = 0;
    let mut tasks = JoinSet::new();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    while limit.is_none_or(|l| consumed < l) {
        tokio::select! {
            record = stream.next() => {
                // None: the consumer stopped on its own (a fatal group error, returned below).
                let Some(record) = record else { break };
                // Records of a partition lost meanwhile are dropped unacked: the next owner reads them.
                if !reporter.consumed(&record) {
                    continue;
                }
                consumed += 1;
                if ack_inline {
                    record.ack();
                } else {
                    tasks.spawn(async move {
                        if delay.is_zero() {
                            tokio::task::yield_now().await;
                        } else {
                            tokio::time::sleep(delay).await;
                        }
                        record.ack();
                    });
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = &mut signal => break,
        }
    }
    // Graceful stop: records still arriving are handed back unacked (never reported, never
    // committed); in-flight ones finish; the final revocation commits and is reported.
    let result = stream.shutdown().await;
    while tasks.join_next().await.is_some() {}
    flusher.abort();
    reporter.flush();
    emit("shutdown_complete", &NoFields {});
    match result {
        Ok(report) => {
            if report.timed_out || !report.uncommitted.is_empty() {
                tracing::warn!(?report, "shutdown left work uncommitted");
            }
            Ok(())
        }
        Err(e) => Err(Failure::runtime(e.to_string())),
    }
}

#[derive(Debug, Serialize)]
struct Partition<'a> {
    topic: &'a str,
    partition: i32,
}

#[derive(Debug, Serialize)]
struct Partitions<'a> {
    partitions: Vec<Partition<'a>>,
    /// Only on lost partitions (reported as revoked, as Java's default `onPartitionsLost` does).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    lost: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordSet<'a> {
    topic: &'a str,
    partition: i32,
    count: u64,
    min_offset: i64,
    max_offset: i64,
}

#[derive(Debug, Serialize)]
struct RecordsConsumed<'a> {
    count: u64,
    partitions: Vec<RecordSet<'a>>,
}

#[derive(Debug, Serialize)]
struct RecordData<'a> {
    key: Option<String>,
    value: Option<String>,
    topic: &'a str,
    partition: i32,
    offset: i64,
}

#[derive(Debug, Serialize)]
struct CommitData<'a> {
    topic: &'a str,
    partition: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct OffsetsCommitted<'a> {
    offsets: Vec<CommitData<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    success: bool,
}

#[derive(Debug, Clone, Copy)]
struct Batch {
    count: u64,
    min: i64,
    max: i64,
}

/// What this consumer owns, what the harness was told, and what was consumed since the last
/// `records_consumed` event. Written only under [`Reporter::state`].
#[derive(Debug, Default)]
struct ReportState {
    /// Partitions whose records are reported: assigned and neither revoked nor lost.
    owned: BTreeSet<TopicPartition>,
    /// Partitions the harness believes this consumer holds: `owned`, plus lost partitions whose
    /// `partitions_revoked` waits for the commit in flight (see [`ConsumerListener::lost`] below).
    announced: BTreeSet<TopicPartition>,
    /// Per announced partition, maxOffset + 1 of what was reported in the current assignment.
    position: BTreeMap<TopicPartition, i64>,
    pending: BTreeMap<TopicPartition, Batch>,
    pending_count: u64,
    /// Whether a commit was sent and its result has not arrived.
    commit_in_flight: bool,
    /// Lost partitions to announce once the commit in flight has been reported.
    deferred_lost: Vec<TopicPartition>,
}

/// Prints every event. One lock (a parking_lot mutex: never held across an await, only around a
/// few stdout writes) orders them: records_consumed are flushed before any other event.
struct Reporter {
    verbose: bool,
    state: Mutex<ReportState>,
}

impl Reporter {
    fn new(verbose: bool) -> Self {
        Self {
            verbose,
            state: Mutex::new(ReportState::default()),
        }
    }

    /// Counts `record` as consumed, unless its partition is no longer owned (lost meanwhile).
    fn consumed(&self, record: &ConsumedRecord) -> bool {
        let tp = TopicPartition::new(record.topic(), record.partition());
        let mut st = self.state.lock();
        if !st.owned.contains(&tp) {
            return false;
        }
        if self.verbose {
            let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
            emit(
                "record_data",
                &RecordData {
                    key: text(record.key()),
                    value: text(record.value()),
                    topic: record.topic(),
                    partition: record.partition(),
                    offset: record.offset(),
                },
            );
        }
        let offset = record.offset();
        let position = st.position.entry(tp.clone()).or_insert(offset + 1);
        *position = (*position).max(offset + 1);
        st.pending
            .entry(tp)
            .and_modify(|b| {
                b.count += 1;
                b.min = b.min.min(offset);
                b.max = b.max.max(offset);
            })
            .or_insert(Batch {
                count: 1,
                min: offset,
                max: offset,
            });
        st.pending_count += 1;
        if st.pending_count >= FLUSH_RECORDS {
            flush_locked(&mut st);
        }
        true
    }

    fn flush(&self) {
        flush_locked(&mut self.state.lock());
    }
}

fn partitions_event(name: &str, partitions: &[TopicPartition], lost: bool) {
    let event = Partitions {
        partitions: partitions
            .iter()
            .map(|tp| Partition {
                topic: &tp.topic,
                partition: tp.partition,
            })
            .collect(),
        lost,
    };
    emit(name, &event);
}

fn flush_locked(st: &mut ReportState) {
    if st.pending.is_empty() {
        return;
    }
    let pending = std::mem::take(&mut st.pending);
    let event = RecordsConsumed {
        count: std::mem::take(&mut st.pending_count),
        partitions: pending
            .iter()
            .map(|(tp, b)| RecordSet {
                topic: &tp.topic,
                partition: tp.partition,
                count: b.count,
                min_offset: b.min,
                max_offset: b.max,
            })
            .collect(),
    };
    emit("records_consumed", &event);
}

/// Announces lost partitions whose announcement waited for a commit result.
fn announce_deferred_lost(st: &mut ReportState) {
    if st.deferred_lost.is_empty() {
        return;
    }
    let lost = std::mem::take(&mut st.deferred_lost);
    for tp in &lost {
        st.announced.remove(tp);
        st.position.remove(tp);
    }
    partitions_event("partitions_revoked", &lost, true);
}

impl ConsumerListener for Reporter {
    fn assigned(&self, partitions: &[TopicPartition]) {
        let mut st = self.state.lock();
        flush_locked(&mut st);
        announce_deferred_lost(&mut st);
        st.owned.extend(partitions.iter().cloned());
        st.announced.extend(partitions.iter().cloned());
        partitions_event("partitions_assigned", partitions, false);
    }

    /// kafkit calls this after the revocation's commit finished, so offsets_committed comes first.
    fn revoked(&self, partitions: &[TopicPartition]) {
        let mut st = self.state.lock();
        flush_locked(&mut st);
        for tp in partitions {
            st.owned.remove(tp);
            st.announced.remove(tp);
            st.position.remove(tp);
        }
        partitions_event("partitions_revoked", partitions, false);
    }

    /// Lost partitions are reported as revoked (with `"lost": true`), as Java's default
    /// `onPartitionsLost` calls `onPartitionsRevoked`. A commit sent while they were owned may
    /// still finish; its result is reported first, so the harness never sees a commit for a
    /// partition it was told is gone.
    fn lost(&self, partitions: &[TopicPartition]) {
        let mut st = self.state.lock();
        flush_locked(&mut st);
        for tp in partitions {
            st.owned.remove(tp);
        }
        st.deferred_lost.extend(partitions.iter().cloned());
        if !st.commit_in_flight {
            announce_deferred_lost(&mut st);
        }
    }

    fn committing(&self, _offsets: &[OffsetToCommit]) {
        self.state.lock().commit_in_flight = true;
    }

    fn committed(&self, result: &kafkit::Result<CommitReport>) {
        let mut st = self.state.lock();
        st.commit_in_flight = false;
        flush_locked(&mut st);
        report_commit(&st, result);
        announce_deferred_lost(&mut st);
    }
}

/// Prints `offsets_committed` for a commit result. Left out, with a log line on stderr: commits of
/// a partition with nothing reported in this assignment (kafkit pins a start position taken from
/// the reset policy with a commit; the contract only knows commits at or below a consumed
/// position), and of partitions the harness was already told are gone (a commit that finished
/// after a later assignment announced the loss).
fn report_commit(st: &ReportState, result: &kafkit::Result<CommitReport>) {
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            emit(
                "offsets_committed",
                &OffsetsCommitted {
                    offsets: Vec::new(),
                    error: Some(e.to_string()),
                    success: false,
                },
            );
            return;
        }
    };
    let mut offsets = Vec::new();
    for (tp, offset) in &report.committed {
        if !st.announced.contains(tp) {
            tracing::warn!(partition = %tp, offset, "commit finished after the partition was released; not reported");
        } else if !st.position.contains_key(tp) {
            tracing::info!(partition = %tp, offset, "start position pinned by a commit; not reported (nothing consumed yet)");
        } else {
            offsets.push(CommitData {
                topic: &tp.topic,
                partition: tp.partition,
                offset: Some(*offset),
                error: None,
            });
        }
    }
    let succeeded = !offsets.is_empty();
    offsets.extend(report.failed.iter().map(|(tp, error)| CommitData {
        topic: &tp.topic,
        partition: tp.partition,
        offset: None,
        error: Some(error.as_str()),
    }));
    if offsets.is_empty() {
        return;
    }
    // Java's event has one success flag: true when something was committed; failed partitions
    // then carry their own `error` (which Kafka's harness skips), else the event's `error` says why.
    let error = (!succeeded).then(|| {
        report
            .failed
            .iter()
            .map(|(tp, e)| format!("{tp}: {e}"))
            .collect::<Vec<_>>()
            .join(", ")
    });
    emit(
        "offsets_committed",
        &OffsetsCommitted {
            offsets,
            error,
            success: succeeded,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_strategies_accept_java_class_names_and_short_names() {
        let names = |s: &str| {
            assignors(s)
                .unwrap()
                .iter()
                .map(|a| a.name().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names("org.apache.kafka.clients.consumer.RangeAssignor"),
            ["range"]
        );
        assert_eq!(
            names("org.apache.kafka.clients.consumer.RoundRobinAssignor,cooperative-sticky"),
            ["roundrobin", "cooperative-sticky"]
        );
        assert_eq!(names("CooperativeStickyAssignor"), ["cooperative-sticky"]);
        let err = assignors("org.apache.kafka.clients.consumer.StickyAssignor")
            .err()
            .unwrap();
        assert!(err.contains("StickyAssignor"), "{err}");
    }

    #[test]
    fn reset_policies() {
        assert_eq!(reset_policy("earliest").unwrap(), OffsetReset::Earliest);
        assert_eq!(reset_policy("LATEST").unwrap(), OffsetReset::Latest);
        assert_eq!(reset_policy("none").unwrap(), OffsetReset::None);
        assert!(reset_policy("smallest").is_err());
    }
}
