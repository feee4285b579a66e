//! `kafkit verifiable-producer`: Apache Kafka's `VerifiableProducer` contract on the kafkit producer.
//!
//! Values are the message index (`"7"`, or `"<prefix>.7"` with `--value-prefix`); keys, with
//! `--repeating-keys N`, cycle through `"0"`..`"N-1"`. Each acknowledgement or failure is printed as
//! it arrives (sends are pipelined, as Java's are).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use kafkit::{Acks, ClientConfig, ProducerBuilder, ProducerRecord};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::events::{NoFields, emit};
use crate::{Failure, properties, shutdown_signal};

/// Sends at most this many records concurrently; the producer's buffer bounds the bytes on top.
const MAX_PENDING: usize = 10_000;

/// Produces increasing integers to a topic and prints JSON on stdout for every acknowledged or
/// failed send, like Apache Kafka's VerifiableProducer.
#[derive(Debug, Args)]
#[command(after_help = "\
Events (one JSON object per line, each with `timestamp` in ms and `name`): startup_complete, \
producer_send_success {key, value, topic, partition, offset}, producer_send_error {key, value, \
topic, exception, message}, shutdown_complete, then tool_data {sent, acked, target_throughput, \
avg_throughput}. SIGTERM or SIGINT stops sending, waits for the records in flight and prints the \
last three. Sends are retried until kafkit's delivery timeout (120 s); Java's tool sets retries=0.")]
pub(crate) struct ProducerArgs {
    /// Produce messages to this topic.
    #[arg(long, value_name = "TOPIC")]
    topic: String,

    /// The server(s) to connect to: HOST1:PORT1[,HOST2:PORT2[...]].
    #[arg(long = "bootstrap-server", value_name = "HOST:PORT,...")]
    bootstrap_server: Option<String>,

    /// Deprecated alias of --bootstrap-server.
    #[arg(long = "broker-list", value_name = "HOST:PORT,...", hide = true)]
    broker_list: Option<String>,

    /// Produce this many messages. -1 (the default): until SIGTERM/SIGINT.
    #[arg(
        long = "max-messages",
        value_name = "MAX-MESSAGES",
        default_value_t = -1,
        allow_negative_numbers = true
    )]
    max_messages: i64,

    /// Throttle to about this many messages per second; -1 (the default): as fast as possible.
    #[arg(
        long,
        value_name = "THROUGHPUT",
        default_value_t = -1,
        allow_negative_numbers = true
    )]
    throughput: i64,

    /// Acks required: -1 / all (the default: all in-sync replicas, idempotent), 1 (the leader) or 0
    /// (none); 1 and 0 turn idempotence off, as the Java producer does when `acks` is set and
    /// `enable.idempotence` is not.
    #[arg(
        long,
        value_name = "ACKS",
        default_value = "-1",
        allow_hyphen_values = true
    )]
    acks: String,

    /// Send messages with creation time starting at this value, in ms since the epoch (then
    /// advancing with the wall clock). -1 (the default): the current time.
    #[arg(
        long = "message-create-time",
        value_name = "CREATE-TIME",
        default_value_t = -1,
        allow_negative_numbers = true
    )]
    message_create_time: i64,

    /// Each value is `<VALUE-PREFIX>.<index>` instead of `<index>`.
    #[arg(long = "value-prefix", value_name = "VALUE-PREFIX")]
    value_prefix: Option<i32>,

    /// Keys cycle through "0" .. "REPEATING-KEYS - 1"; without it records have no key.
    #[arg(long = "repeating-keys", value_name = "REPEATING-KEYS")]
    repeating_keys: Option<u32>,

    /// Producer settings as a Java properties file (deprecated name of --command-config).
    #[arg(
        long = "producer.config",
        value_name = "CONFIG-FILE",
        conflicts_with = "command_config"
    )]
    producer_config: Option<PathBuf>,

    /// Producer settings as a Java properties file; command-line options take precedence.
    #[arg(long = "command-config", value_name = "CONFIG-FILE")]
    command_config: Option<PathBuf>,

    /// kafkit: how long to keep trying to reach a bootstrap broker before failing, in ms.
    #[arg(
        long = "connect-timeout-ms",
        value_name = "MS",
        default_value_t = 30_000
    )]
    connect_timeout_ms: u64,
}

#[derive(Debug, Serialize)]
struct SendSuccess<'a> {
    key: Option<&'a str>,
    value: &'a str,
    topic: &'a str,
    partition: i32,
    offset: i64,
}

#[derive(Debug, Serialize)]
struct SendError<'a> {
    key: Option<&'a str>,
    value: &'a str,
    topic: &'a str,
    exception: String,
    message: String,
}

#[derive(Debug, Serialize)]
struct ToolData {
    sent: u64,
    acked: u64,
    target_throughput: i64,
    avg_throughput: f64,
}

fn parse_acks(acks: &str) -> Result<Acks, String> {
    match acks.trim() {
        "-1" | "all" => Ok(Acks::All),
        "1" => Ok(Acks::Leader),
        "0" => Ok(Acks::None),
        other => Err(format!("--acks {other} is not one of -1, all, 1, 0")),
    }
}

/// `kafkit::Error::DeliveryTimeout`: the variant name, from the error's `Debug` form.
fn error_kind(e: &kafkit::Error) -> String {
    let debug = format!("{e:?}");
    let variant = debug
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or("Error");
    format!("kafkit::Error::{variant}")
}

/// Connects, sends, prints the events.
pub(crate) async fn run(args: ProducerArgs) -> Result<(), Failure> {
    let mut acks = parse_acks(&args.acks)?;
    if args.throughput == 0 {
        return Err("--throughput must be positive, or -1 for no limit".into());
    }
    if args.repeating_keys == Some(0) {
        return Err("--repeating-keys must be at least 1".into());
    }
    let mut bootstrap = args.bootstrap_server.clone().or(args.broker_list.clone());
    let mut client_id = None;
    if let Some(path) = args
        .command_config
        .as_ref()
        .or(args.producer_config.as_ref())
    {
        for (key, value) in properties::load(path)? {
            match key.as_str() {
                "bootstrap.servers" => bootstrap = bootstrap.or(Some(value)),
                "client.id" => client_id = Some(value),
                "acks" => acks = parse_acks(&value)?,
                "security.protocol" if value.eq_ignore_ascii_case("PLAINTEXT") => {}
                "security.protocol" => {
                    return Err(format!(
                        "{}: security.protocol={value} is not supported by this build (PLAINTEXT only)",
                        path.display()
                    )
                    .into());
                }
                _ => {
                    tracing::warn!(setting = %key, file = %path.display(), "ignoring a producer setting kafkit does not use")
                }
            }
        }
    }
    let bootstrap = bootstrap.ok_or("--bootstrap-server is required")?;
    let mut client = crate::common::with_env_reconnect_backoff(
        ClientConfig::new([bootstrap.as_str()])?
            .connect_timeout(Duration::from_millis(args.connect_timeout_ms)),
    )?;
    if let Some(id) = client_id {
        client = client.client_id(id);
    }
    // Connection failures keep their exit codes (4 unreachable, 6 security).
    let producer = ProducerBuilder::new(client)
        .acks(acks)
        .idempotence(acks == Acks::All)
        .build()
        .await?;
    emit("startup_complete", &NoFields {});

    let start = Instant::now();
    let acked = Arc::new(AtomicU64::new(0));
    let topic: Arc<str> = Arc::from(args.topic.as_str());
    let limit = u64::try_from(args.max_messages).ok();
    let mut sent: u64 = 0;
    let mut tasks = JoinSet::new();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    'send: while limit.is_none_or(|l| sent < l) {
        let i = sent;
        let key = args.repeating_keys.map(|n| (i % u64::from(n)).to_string());
        let value = match args.value_prefix {
            Some(p) => format!("{p}.{i}"),
            None => i.to_string(),
        };
        let mut record = ProducerRecord::new(topic.as_ref(), value.clone());
        if let Some(k) = &key {
            record = record.key(k.clone());
        }
        if args.message_create_time >= 0 {
            record = record.timestamp(create_time(args.message_create_time, start.elapsed()));
        }
        sent += 1;
        let (topic, acked) = (Arc::clone(&topic), Arc::clone(&acked));
        // Called here, not in the task: the record is appended now, in the order of the values.
        let send = producer.send(record);
        tasks.spawn(async move {
            match send.await {
                Ok(d) => {
                    acked.fetch_add(1, Ordering::Relaxed);
                    emit(
                        "producer_send_success",
                        &SendSuccess {
                            key: key.as_deref(),
                            value: &value,
                            topic: &d.topic,
                            partition: d.partition,
                            offset: d.offset,
                        },
                    );
                }
                Err(e) => emit(
                    "producer_send_error",
                    &SendError {
                        key: key.as_deref(),
                        value: &value,
                        topic: &topic,
                        exception: error_kind(&e),
                        message: e.to_string(),
                    },
                ),
            }
        });
        // Throttle: the (sent)th record is not due before start + sent / throughput.
        let due = (args.throughput > 0)
            .then(|| start + Duration::from_secs_f64(sent as f64 / args.throughput as f64));
        loop {
            let full = tasks.len() >= MAX_PENDING;
            let wait = due.filter(|d| *d > Instant::now());
            if !full && wait.is_none() {
                break;
            }
            tokio::select! {
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = sleep_until(wait), if wait.is_some() => {}
                _ = &mut signal => break 'send,
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    // As Java's close(): every record sent gets its outcome before shutdown_complete.
    while tasks.join_next().await.is_some() {}
    let _ = producer.close().await;
    emit("shutdown_complete", &NoFields {});
    let acked = acked.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64().max(1e-3);
    emit(
        "tool_data",
        &ToolData {
            sent,
            acked,
            target_throughput: args.throughput,
            avg_throughput: acked as f64 / elapsed,
        },
    );
    Ok(())
}

/// `--message-create-time` plus the time since the tool started.
fn create_time(start_ms: i64, elapsed: Duration) -> DateTime<Utc> {
    let ms = start_ms.saturating_add(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX));
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_java_s() {
        assert_eq!(parse_acks("-1"), Ok(Acks::All));
        assert_eq!(parse_acks("all"), Ok(Acks::All));
        assert_eq!(parse_acks("1"), Ok(Acks::Leader));
        assert_eq!(parse_acks(" 0 "), Ok(Acks::None));
        let err = parse_acks("2").unwrap_err();
        assert!(err.contains("-1, all, 1, 0"), "{err}");
    }

    #[test]
    fn error_kind_names_the_variant() {
        let e = kafkit::Error::UnknownTopic { topic: "t".into() };
        assert_eq!(error_kind(&e), "kafkit::Error::UnknownTopic");
    }
}
