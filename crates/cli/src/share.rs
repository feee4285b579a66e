//! Share groups (KIP-932) on the command line:
//! - `kafkit verifiable-share-consumer`: Apache Kafka's `VerifiableShareConsumer` contract (kafka-tools
//!   4.2+): the same arguments and JSON events, so it runs in one share group with Java's.
//! - `kafkit share-consume`: records to stdout for people, each accepted once printed (or released or
//!   rejected, for trying out redelivery).
//!
//! Both use kafkit's share stream, which hands out the records of one ShareFetch together (Java's
//! `poll`): `records_consumed` is printed per fetch, and `offsets_acknowledged` when the broker
//! has answered the acknowledgements (kafkit sends them with the next ShareFetch, or in a
//! ShareAcknowledge when the session closes).

use std::io::{self, BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::{Args, ValueEnum};
use kafkit::admin;
use kafkit::share::{Acknowledged, ShareConsumerBuilder, ShareListener, ShareRecord};
use serde::Serialize;
use tokio::sync::Notify;

use crate::common::ClusterArgs;
use crate::events::{NoFields, emit};
use crate::{Failure, shutdown_signal};

/// How a record is acknowledged, as `--ack-pattern` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    Accept,
    Release,
    Reject,
}

/// Parses `--ack-pattern`: a comma-separated cycle of accept|release|reject. Java's `renew` (which
/// extends the lock, Kafka 4.2's ShareFetch v2) is refused: kafkit speaks ShareFetch v1.
fn ack_pattern(text: &str) -> Result<Vec<Ack>, Failure> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|s| match s.trim().to_ascii_lowercase().as_str() {
            "accept" => Ok(Ack::Accept),
            "release" => Ok(Ack::Release),
            "reject" => Ok(Ack::Reject),
            "renew" => Err(Failure {
                code: crate::EXIT_USAGE,
                message: "--ack-pattern: renew is not supported by kafkit (it needs ShareFetch v2)"
                    .into(),
            }),
            other => Err(Failure {
                code: crate::EXIT_USAGE,
                message: format!("--ack-pattern: `{other}` is not one of accept, release, reject"),
            }),
        })
        .collect()
}

/// The pattern entry for `offset`: `offset % pattern length`, as Java picks it.
fn pattern_for(pattern: &[Ack], offset: i64) -> Ack {
    if pattern.is_empty() {
        return Ack::Accept;
    }
    pattern[offset.rem_euclid(pattern.len() as i64) as usize]
}

fn acknowledge(record: ShareRecord, ack: Ack) {
    match ack {
        Ack::Accept => record.accept(),
        Ack::Release => record.release(),
        Ack::Reject => record.reject(),
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AckMode {
    Auto,
    Sync,
    Async,
}

/// Consumes a topic in a share group and prints share consumer events (records consumed, offsets
/// acknowledged) as JSON lines on stdout, like Apache Kafka's VerifiableShareConsumer.
#[derive(Debug, Args)]
#[command(after_help = "\
Events (one JSON object per line, each with `timestamp` in ms and `name`): startup_complete, \
offset_reset_strategy_set, records_consumed {count, partitions:[{topic,partition,count,offsets}]}, \
record_data (--verbose), offsets_acknowledged {count, partitions:[...], success, error?}, \
shutdown_complete. SIGTERM or SIGINT stops gracefully: records in hand are acknowledged or \
released, the share sessions close, the member leaves.")]
pub(crate) struct VerifiableShareConsumerArgs {
    /// Consumes messages from this topic.
    #[arg(long, value_name = "TOPIC")]
    topic: String,

    /// The group id of the share group.
    #[arg(long = "group-id", value_name = "GROUP-ID")]
    group_id: String,

    /// The server(s) to connect to: HOST1:PORT1[,HOST2:PORT2[...]].
    #[arg(long = "bootstrap-server", value_name = "HOST:PORT,...")]
    bootstrap_server: String,

    /// Stop once this many records were acknowledged successfully. -1 (the default): until
    /// SIGTERM/SIGINT.
    #[arg(
        long = "max-messages",
        default_value_t = -1,
        allow_negative_numbers = true
    )]
    max_messages: i64,

    /// Print a record_data event for every consumed record.
    #[arg(long)]
    verbose: bool,

    /// auto, sync or async (Java: implicit acknowledgement, commitSync, commitAsync). kafkit sends
    /// acknowledgements the same way in all three: with the next ShareFetch to the broker.
    #[arg(long = "acknowledgement-mode", value_enum, default_value_t = AckMode::Auto)]
    acknowledgement_mode: AckMode,

    /// A comma-separated cycle of accept|release|reject applied to each record by
    /// `offset % pattern length`. Needs --acknowledgement-mode sync or async, as in Java.
    #[arg(long = "ack-pattern", default_value = "")]
    ack_pattern: String,

    /// Sets the share group's `share.auto.offset.reset` first: earliest or latest.
    #[arg(long = "offset-reset-strategy", default_value = "")]
    offset_reset_strategy: String,

    /// kafkit: how long each record takes to process, in ms (default 0).
    #[arg(long = "processing-time-ms", default_value_t = 0)]
    processing_time_ms: u64,

    /// Share consumer settings as a Java properties file: `client.id`, `security.protocol`
    /// (PLAINTEXT) and `bootstrap.servers` (the flag wins); other settings are logged and ignored.
    #[arg(long = "command-config", value_name = "FILE")]
    command_config: Option<std::path::PathBuf>,
}

/// The client settings of `--command-config` over `client`.
fn with_command_config(
    mut client: kafkit::ClientConfig,
    path: Option<&std::path::Path>,
) -> Result<kafkit::ClientConfig, Failure> {
    let Some(path) = path else {
        return Ok(client);
    };
    let usage = |message: String| Failure {
        code: crate::EXIT_USAGE,
        message,
    };
    for (key, value) in crate::properties::load(path).map_err(usage)? {
        match key.as_str() {
            "client.id" => client = client.client_id(value),
            // The command line's --bootstrap-server is required and wins, as in Java.
            "bootstrap.servers" => {}
            "security.protocol" if value.eq_ignore_ascii_case("PLAINTEXT") => {}
            "security.protocol" => {
                return Err(usage(format!(
                    "{}: security.protocol={value} is not supported by verifiable-share-consumer (PLAINTEXT only)",
                    path.display()
                )));
            }
            _ => {
                tracing::warn!(setting = %key, file = %path.display(), "ignoring a share consumer setting kafkit does not use")
            }
        }
    }
    Ok(client)
}

#[derive(Serialize)]
struct PartitionOffsets {
    topic: String,
    partition: i32,
    count: usize,
    offsets: Vec<i64>,
}

/// Groups `(topic, partition, offset)` by partition, in partition order, offsets sorted.
fn by_partition(items: impl IntoIterator<Item = (String, i32, i64)>) -> Vec<PartitionOffsets> {
    let mut map: std::collections::BTreeMap<(String, i32), Vec<i64>> = Default::default();
    for (topic, partition, offset) in items {
        map.entry((topic, partition)).or_default().push(offset);
    }
    map.into_iter()
        .map(|((topic, partition), mut offsets)| {
            offsets.sort_unstable();
            offsets.dedup();
            PartitionOffsets {
                topic,
                partition,
                count: offsets.len(),
                offsets,
            }
        })
        .collect()
}

#[derive(Serialize)]
struct RecordsConsumed {
    count: usize,
    partitions: Vec<PartitionOffsets>,
}

#[derive(Serialize)]
struct OffsetsAcknowledged {
    count: usize,
    partitions: Vec<PartitionOffsets>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    success: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResetStrategySet {
    offset_reset_strategy: String,
}

#[derive(Serialize)]
struct RecordData {
    key: Option<String>,
    value: Option<String>,
    topic: String,
    partition: i32,
    offset: i64,
}

/// Prints offsets_acknowledged for every answered acknowledgement; counts the successful ones.
struct Reporter {
    acknowledged: AtomicU64,
    limit: Option<u64>,
    reached: Notify,
}

impl ShareListener for Reporter {
    fn acknowledged(&self, partitions: &[Acknowledged]) {
        // Java reports one callback per partition set with one exception: split by outcome.
        let (ok, failed): (Vec<&Acknowledged>, Vec<&Acknowledged>) =
            partitions.iter().partition(|a| a.error.is_none());
        for (set, success) in [(ok, true), (failed, false)] {
            if set.is_empty() {
                continue;
            }
            let error = set.iter().find_map(|a| a.error.clone());
            let partitions = by_partition(set.iter().flat_map(|a| {
                a.offsets
                    .iter()
                    .map(|(o, _)| (a.partition.topic.clone(), a.partition.partition, *o))
            }));
            let count = partitions.iter().map(|p| p.count).sum();
            emit(
                "offsets_acknowledged",
                &OffsetsAcknowledged {
                    count,
                    partitions,
                    error,
                    success,
                },
            );
            if success {
                let total =
                    self.acknowledged.fetch_add(count as u64, Ordering::SeqCst) + count as u64;
                if self.limit.is_some_and(|l| total >= l) {
                    self.reached.notify_one();
                }
            }
        }
    }
}

fn text(bytes: Option<&[u8]>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(b).into_owned())
}

/// `kafkit verifiable-share-consumer`.
pub(crate) async fn run_verifiable(args: VerifiableShareConsumerArgs) -> Result<(), Failure> {
    let pattern = ack_pattern(&args.ack_pattern)?;
    if !pattern.is_empty() && matches!(args.acknowledgement_mode, AckMode::Auto) {
        return Err(Failure {
            code: crate::EXIT_USAGE,
            message: "--ack-pattern needs --acknowledgement-mode sync or async".into(),
        });
    }
    let reset = args.offset_reset_strategy.to_ascii_lowercase();
    if !matches!(reset.as_str(), "" | "earliest" | "latest") {
        return Err(Failure {
            code: crate::EXIT_USAGE,
            message: format!("--offset-reset-strategy must be earliest or latest, got `{reset}`"),
        });
    }
    let client = crate::common::with_env_reconnect_backoff(kafkit::ClientConfig::new(
        args.bootstrap_server.split(',').map(str::trim),
    )?)?;
    let client = with_command_config(client, args.command_config.as_deref())?;
    emit("startup_complete", &NoFields {});
    let result = consume_verifiable(&args, client, &pattern, &reset).await;
    emit("shutdown_complete", &NoFields {});
    result
}

async fn consume_verifiable(
    args: &VerifiableShareConsumerArgs,
    client: kafkit::ClientConfig,
    pattern: &[Ack],
    reset: &str,
) -> Result<(), Failure> {
    if !reset.is_empty() {
        admin::alter_group_configs(
            &client,
            &args.group_id,
            &[("share.auto.offset.reset", reset)],
        )
        .await?;
        emit(
            "offset_reset_strategy_set",
            &ResetStrategySet {
                offset_reset_strategy: reset.to_owned(),
            },
        );
    }
    let reporter = Arc::new(Reporter {
        acknowledged: AtomicU64::new(0),
        limit: u64::try_from(args.max_messages).ok(),
        reached: Notify::new(),
    });
    let consumer = ShareConsumerBuilder::new(client, args.group_id.as_str(), [args.topic.as_str()])
        .listener(Arc::clone(&reporter) as Arc<dyn ShareListener>)
        .build()?;
    let mut stream = consumer.stream();
    let stop = stream.shutdown_handle();
    let processing = Duration::from_millis(args.processing_time_ms);
    let work = async {
        while let Some(batch) = stream.next_batch().await {
            emit(
                "records_consumed",
                &RecordsConsumed {
                    count: batch.len(),
                    partitions: by_partition(
                        batch
                            .iter()
                            .map(|r| (r.topic().to_owned(), r.partition(), r.offset())),
                    ),
                },
            );
            if args.verbose {
                for r in &batch {
                    emit(
                        "record_data",
                        &RecordData {
                            key: text(r.key()),
                            value: text(r.value()),
                            topic: r.topic().to_owned(),
                            partition: r.partition(),
                            offset: r.offset(),
                        },
                    );
                }
            }
            for record in batch {
                if !processing.is_zero() {
                    tokio::time::sleep(processing).await;
                }
                let ack = pattern_for(pattern, record.offset());
                acknowledge(record, ack);
            }
        }
    };
    tokio::select! {
        () = work => {}
        () = shutdown_signal() => {}
        () = reporter.reached.notified() => {}
    }
    stop.shutdown();
    stream.shutdown().await?;
    Ok(())
}

/// `kafkit share-consume`.
#[derive(Debug, Args)]
pub(crate) struct ShareConsumeArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The topics (repeat the flag or separate with commas).
    #[arg(long, required = true, value_delimiter = ',')]
    topic: Vec<String>,
    /// The share group.
    #[arg(long)]
    group: String,
    /// Set the group's `share.auto.offset.reset` to earliest first (a new share group starts at
    /// the next record produced otherwise).
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// How to acknowledge each printed record: accept (the default), or release / reject to try
    /// out redelivery and archiving.
    #[arg(long, value_enum, default_value_t = AckChoice::Accept)]
    ack: AckChoice,
    /// Print the partition, offset and delivery count before the value.
    #[arg(long)]
    print_offset: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AckChoice {
    Accept,
    Release,
    Reject,
}

/// Prints records of a share group, acknowledging each once its line is flushed.
pub(crate) async fn run_consume(args: ShareConsumeArgs) -> Result<(), Failure> {
    let client = args.cluster.client()?;
    if args.from_beginning {
        admin::alter_group_configs(
            &client,
            &args.group,
            &[("share.auto.offset.reset", "earliest")],
        )
        .await?;
    }
    let consumer =
        ShareConsumerBuilder::new(client, args.group.as_str(), args.topic.clone()).build()?;
    let mut stream = consumer.stream();
    let ack = match args.ack {
        AckChoice::Accept => Ack::Accept,
        AckChoice::Release => Ack::Release,
        AckChoice::Reject => Ack::Reject,
    };
    let mut printed = 0u64;
    let work = async {
        while let Some(batch) = stream.next_batch().await {
            let mut out = BufWriter::new(io::stdout().lock());
            let mut done = Vec::with_capacity(batch.len());
            for record in batch {
                if args.max_messages.is_some_and(|m| printed >= m) {
                    // Not printed: released by the drop.
                    continue;
                }
                let value = text(record.value()).unwrap_or_default();
                let line = if args.print_offset {
                    format!(
                        "{}\t{}\t{}\t{}",
                        record.partition(),
                        record.offset(),
                        record.delivery_count().unwrap_or(1),
                        value
                    )
                } else {
                    value
                };
                writeln!(out, "{line}").map_err(|e| format!("writing stdout: {e}"))?;
                printed += 1;
                done.push(record);
            }
            out.flush().map_err(|e| format!("writing stdout: {e}"))?;
            drop(out);
            for record in done {
                acknowledge(record, ack);
            }
            if args.max_messages.is_some_and(|m| printed >= m) {
                break;
            }
        }
        Ok::<(), Failure>(())
    };
    let result = tokio::select! {
        r = work => r,
        () = shutdown_signal() => Ok(()),
    };
    stream.shutdown().await?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_cycles_by_offset_and_refuses_what_kafkit_cannot_do() {
        let p = ack_pattern("accept, release,REJECT").unwrap();
        let picked: Vec<Ack> = (0..7).map(|o| pattern_for(&p, o)).collect();
        use Ack::*;
        assert_eq!(
            picked,
            [Accept, Release, Reject, Accept, Release, Reject, Accept]
        );
        assert_eq!(pattern_for(&[], 5), Accept);
        assert!(ack_pattern("").unwrap().is_empty());
        assert!(ack_pattern("accept,renew").is_err());
        assert!(ack_pattern("accept,maybe").is_err());
    }

    #[test]
    fn offsets_group_by_partition_sorted() {
        let got = by_partition([
            ("t".to_owned(), 1, 5),
            ("t".to_owned(), 0, 9),
            ("t".to_owned(), 1, 3),
        ]);
        let json = serde_json::to_string(&got).unwrap();
        assert_eq!(
            json,
            r#"[{"topic":"t","partition":0,"count":1,"offsets":[9]},{"topic":"t","partition":1,"count":2,"offsets":[3,5]}]"#
        );
    }
}
