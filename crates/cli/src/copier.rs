//! `kafkit transactional-message-copier`: Apache Kafka's `TransactionalMessageCopier` (kafka-tools)
//! on kafkit's exactly-once mode ([`Consumer::run_transform`]): records of the input topic are
//! copied to the same partition of the output topic, and each batch's copies commit in one
//! transaction with the input offsets, so Kafka's transaction system test can bounce copiers and
//! read the output with read_committed.
//!
//! Progress goes to stdout as the Java tool prints it, one JSON object per line:
//! `{"transactionalId":..,"stage":"ProcessLoop"|"RebalanceComplete"|"ShutdownComplete",
//! "time":"yyyy/MM/dd HH:mm:ss:SSS","totalProcessed":..,"consumed":..,"remaining":..}`.
//!
//! [`Consumer::run_transform`]: kafkit::consumer::Consumer::run_transform

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use kafkit::consumer::{ConsumerBuilder, ConsumerListener, OffsetReset, TransformConfig};
use kafkit::group::{GroupConfig, TopicPartition};
use kafkit::resilience::BackoffPolicy;
use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord, admin};
use parking_lot::Mutex;
use serde::Serialize;

use crate::{EXIT_USAGE, Failure, shutdown_signal};

/// How often progress is printed (the Java tool prints once per 200 ms poll).
const TICK: Duration = Duration::from_millis(200);

/// How long nothing must remain, with nothing copied, before the copier calls an input empty.
const EMPTY_INPUT: Duration = Duration::from_secs(5);

/// Copies an input topic to an output topic transactionally, committing the consumed offsets with
/// the copies, like Apache Kafka's TransactionalMessageCopier.
#[derive(Debug, Args)]
#[command(after_help = "\
Without --group-mode the copier consumes --input-partition alone, as Java's tool does with \
assign(): it never joins --consumer-group, and reads and commits that group's offsets as a \
standalone consumer (generation -1, no member id), which the broker accepts while the group has no \
members; copiers of different partitions may share the group. With --group-mode it subscribes to \
--input-topic in the group. Each transaction holds at most \
--transaction-size records, as runs of consecutive records of its input partitions (kafkit's \
exactly-once mode hands out one run of a partition at a time, so a transaction holds at most one \
run of each partition). Offsets are always committed with the consumer's group metadata (as \
--use-group-metadata asks): in group mode the member's generation and member id. \
--enable-random-aborts aborts about one transaction in three before its copies are written; the \
batch then runs again. The copier exits 0 once its \
partitions are copied up to their end (or after --max-messages records), or on SIGTERM/SIGINT \
after printing ShutdownComplete.")]
pub(crate) struct CopierArgs {
    /// Consume messages from this topic.
    #[arg(long = "input-topic", value_name = "INPUT-TOPIC")]
    input_topic: String,

    /// Consume messages from this partition of the input topic (ignored in group mode, as in
    /// Java's tool).
    #[arg(long = "input-partition", value_name = "INPUT-PARTITION")]
    input_partition: i32,

    /// Produce messages to this topic.
    #[arg(long = "output-topic", value_name = "OUTPUT-TOPIC")]
    output_topic: String,

    /// The server(s) to connect to: HOST1:PORT1[,HOST2:PORT2[...]].
    #[arg(long = "bootstrap-server", value_name = "HOST:PORT,...")]
    bootstrap_server: Option<String>,

    /// Alias of --bootstrap-server (the Java tool's name).
    #[arg(long = "broker-list", value_name = "HOST:PORT,...")]
    broker_list: Option<String>,

    /// Process at most this many messages; -1 (the default): up to the end of the input.
    #[arg(
        long = "max-messages",
        value_name = "MAX-MESSAGES",
        default_value_t = -1,
        allow_negative_numbers = true
    )]
    max_messages: i64,

    /// The consumer group id to use for storing the consumer offsets.
    #[arg(
        long = "consumer-group",
        value_name = "CONSUMER-GROUP",
        default_value = "-1"
    )]
    consumer_group: String,

    /// The most messages in each transaction.
    #[arg(
        long = "transaction-size",
        value_name = "TRANSACTION-SIZE",
        default_value_t = 200
    )]
    transaction_size: usize,

    /// The transaction timeout in milliseconds.
    #[arg(
        long = "transaction-timeout",
        value_name = "TRANSACTION-TIMEOUT",
        default_value_t = 60_000
    )]
    transaction_timeout: u64,

    /// The transactional id to assign to the producer.
    #[arg(long = "transactional-id", value_name = "TRANSACTIONAL-ID")]
    transactional_id: String,

    /// Abort about one transaction in three (for system testing).
    #[arg(long = "enable-random-aborts")]
    enable_random_aborts: bool,

    /// Subscribe to the input topic in the consumer group instead of assigning the input
    /// partition.
    #[arg(long = "group-mode")]
    group_mode: bool,

    /// Commit offsets with the consumer's group metadata (kafkit always does).
    #[arg(long = "use-group-metadata")]
    use_group_metadata: bool,
}

/// One progress line, with the Java tool's fields in its order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    transactional_id: &'a str,
    stage: &'a str,
    time: String,
    total_processed: u64,
    consumed: u64,
    remaining: i64,
}

/// What the listener and the handler count, read by the progress loop.
#[derive(Default)]
struct Progress {
    /// Input partitions owned now.
    owned: Mutex<BTreeSet<TopicPartition>>,
    /// A rebalance completed since the last progress line.
    rebalanced: AtomicBool,
    /// Records copied (handled; a batch that runs again counts again).
    total: AtomicU64,
    /// Records copied since the last rebalance.
    since_rebalance: AtomicU64,
}

impl ConsumerListener for Progress {
    fn assigned(&self, partitions: &[TopicPartition]) {
        self.owned.lock().extend(partitions.iter().cloned());
        self.since_rebalance.store(0, Ordering::Relaxed);
        self.rebalanced.store(true, Ordering::Relaxed);
    }
    fn revoked(&self, partitions: &[TopicPartition]) {
        let mut owned = self.owned.lock();
        for tp in partitions {
            owned.remove(tp);
        }
    }
    fn lost(&self, partitions: &[TopicPartition]) {
        self.revoked(partitions);
    }
}

fn print(id: &str, stage: &str, progress: &Progress, remaining: i64) {
    let status = Status {
        transactional_id: id,
        stage,
        time: chrono::Utc::now()
            .format("%Y/%m/%d %H:%M:%S:%3f")
            .to_string(),
        total_processed: progress.total.load(Ordering::Relaxed),
        consumed: progress.since_rebalance.load(Ordering::Relaxed),
        remaining,
    };
    if let Ok(line) = serde_json::to_string(&status) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Records left to copy in the owned partitions: log end minus the group's committed offset.
async fn remaining(
    client: &ClientConfig,
    group: &str,
    owned: &BTreeSet<TopicPartition>,
) -> Option<i64> {
    let lag = admin::group_lag(client, group).await.ok()?;
    let mut left = 0;
    for tp in owned {
        let row = lag
            .iter()
            .find(|l| l.topic == tp.topic && l.partition == tp.partition)?;
        left += row.end - row.committed.unwrap_or(0);
    }
    Some(left)
}

/// A coin that comes up about one time in three, from the standard library's random hash keys.
fn one_in_three() -> bool {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u8).is_multiple_of(3)
}

/// Copies until the input is copied, `--max-messages` is reached, or a signal.
pub(crate) async fn run(args: CopierArgs) -> Result<(), Failure> {
    if args.transaction_size == 0 {
        return Err(Failure {
            code: EXIT_USAGE,
            message: "--transaction-size must be at least 1".into(),
        });
    }
    let bootstrap = args
        .bootstrap_server
        .clone()
        .or(args.broker_list.clone())
        .ok_or(Failure {
            code: EXIT_USAGE,
            message: "--bootstrap-server (or --broker-list) is required".into(),
        })?;
    let client =
        crate::common::with_env_reconnect_backoff(ClientConfig::new([bootstrap.as_str()])?)?;
    tracing::debug!(
        group_mode = args.group_mode,
        input_partition = args.input_partition,
        use_group_metadata = args.use_group_metadata,
        "offsets carry the consumer's group metadata (without group mode: a standalone consumer's)"
    );
    let id = args.transactional_id.clone();
    // Small batches, as the Java tool sets (512 B there; kafkit's least is 1 KiB), so a
    // transaction has several requests in flight.
    let producer = ProducerBuilder::new(client.clone())
        .transactional_id(&id)
        .transaction_timeout(Duration::from_millis(args.transaction_timeout))
        .batch_size(1024)
        .build()
        .await?;
    let progress = Arc::new(Progress::default());
    let group = if args.group_mode {
        GroupConfig::new(&args.consumer_group, [&args.input_topic])
            .session_timeout(Duration::from_secs(10))
            .heartbeat_interval(Duration::from_secs(3))
    } else {
        GroupConfig::assigned(
            &args.consumer_group,
            [TopicPartition::new(&args.input_topic, args.input_partition)],
        )
    };
    let consumer = ConsumerBuilder::new(client.clone(), group)
        .auto_offset_reset(OffsetReset::Earliest)
        .listener(Arc::clone(&progress) as Arc<dyn ConsumerListener>)
        .build()
        .await?;
    let stop = consumer.shutdown_handle();
    let output = args.output_topic.clone();
    let random_aborts = args.enable_random_aborts;
    let counted = Arc::clone(&progress);
    // A random abort runs its batch again at once, as the Java tool's does (it only resets the
    // consumer's position): a short, flat backoff.
    let retry = BackoffPolicy::new(
        Duration::from_millis(10),
        Duration::from_millis(50),
        2.0,
        0.2,
    )
    .map_err(kafkit::Error::from)?;
    let config = TransformConfig::new(producer)
        .max_records(args.transaction_size)
        .retry_backoff(retry);
    let mut run = tokio::spawn(consumer.run_transform(config, move |records| {
        let output = output.clone();
        let counted = Arc::clone(&counted);
        async move {
            if random_aborts && one_in_three() {
                return Err("random abort (--enable-random-aborts)");
            }
            counted
                .total
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            counted
                .since_rebalance
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            Ok(records
                .iter()
                .map(|r| {
                    let copy = match (r.key_bytes(), r.value_bytes()) {
                        (Some(key), None) => ProducerRecord::tombstone(&output, key.clone()),
                        (key, value) => {
                            let copy =
                                ProducerRecord::new(&output, value.cloned().unwrap_or_default());
                            match key {
                                Some(key) => copy.key(key.clone()),
                                None => copy,
                            }
                        }
                    };
                    copy.partition(r.partition())
                })
                .collect())
        }
    }));

    let limit = u64::try_from(args.max_messages).ok();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut tick = tokio::time::interval(TICK);
    let mut last_remaining = i64::MAX;
    let mut zero_since: Option<tokio::time::Instant> = None;
    let result = loop {
        tokio::select! {
            done = &mut run => break done,
            _ = &mut signal => {
                stop.shutdown();
                break run.await;
            }
            _ = tick.tick() => {
                let owned = progress.owned.lock().clone();
                if let Some(left) = remaining(&client, &args.consumer_group, &owned).await {
                    last_remaining = left;
                }
                if progress.rebalanced.swap(false, Ordering::Relaxed) {
                    print(&id, "RebalanceComplete", &progress, last_remaining);
                }
                print(&id, "ProcessLoop", &progress, last_remaining);
                // Done once nothing remains and something was copied; with nothing to copy at all
                // (an empty input), once nothing remained for a while: right after a rebalance the
                // group's view can say 0 before the first copies.
                let zero = !owned.is_empty() && last_remaining == 0;
                let since = if zero { *zero_since.get_or_insert_with(tokio::time::Instant::now) } else {
                    zero_since = None;
                    tokio::time::Instant::now()
                };
                let copied_all = zero
                    && (progress.total.load(Ordering::Relaxed) > 0 || since.elapsed() >= EMPTY_INPUT);
                let at_limit = limit.is_some_and(|l| progress.total.load(Ordering::Relaxed) >= l);
                if copied_all || at_limit {
                    stop.shutdown();
                    break run.await;
                }
            }
        }
    };
    print(&id, "ShutdownComplete", &progress, last_remaining);
    match result {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(format!("the copier's task failed: {e}").into()),
    }
}
