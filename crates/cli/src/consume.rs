//! `kafkit consume`: records of some topics to stdout, one per line, in a consumer group. A record
//! is acked (and so committed) only after its line was written and flushed, so `--max-messages`, an
//! interrupt or a crash never commits a record that was not printed.
//!
//! Lines are written in batches: every record the stream has ready is written to one buffer, which
//! is flushed when the stream has nothing more ready (at most `IN_FLIGHT` records are out), and only
//! then are the batch's records acked. A busy topic costs one write per batch instead of one per
//! record; an idle one still shows each record as soon as it arrives.

use std::io::{self, BufWriter, Write};
use std::time::Duration;

use tokio::time::Instant;

use clap::Args;
use futures::FutureExt;
use kafkit::admin;
use kafkit::consumer::{
    ConsumedRecord, Consumer, ConsumerBuilder, DispatchMode, OffsetReset, StreamRecord,
};
use kafkit::group::GroupConfig;

use crate::common::{ClusterArgs, GroupProtocolArgs};
use crate::progress::Progress;
use crate::{Failure, shutdown_signal};

/// `kafkit consume`.
#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The topics (repeat the flag or separate with commas).
    #[arg(long, required = true, value_delimiter = ',')]
    topic: Vec<String>,
    /// The consumer group (default: a new group of its own, `kafkit-consume-<pid>-<time>`).
    #[arg(long)]
    group: Option<String>,
    #[command(flatten)]
    group_protocol: GroupProtocolArgs,
    /// With no committed offset, start at the oldest record instead of the next one produced.
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop when no record arrived for this many milliseconds, counted from the start (connecting
    /// included: a cluster not reached by then is exit 4) and then from the last record printed.
    /// Stopping (a last commit, leaving the group) takes at most half a second more.
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Print the key before the value.
    #[arg(long)]
    print_key: bool,
    /// Print the headers (`name:value,...`) before the key and value.
    #[arg(long)]
    print_headers: bool,
    /// Print the partition first.
    #[arg(long)]
    print_partition: bool,
    /// Print the offset after the partition.
    #[arg(long)]
    print_offset: bool,
    /// Print the timestamp (RFC 3339) before the headers.
    #[arg(long)]
    print_timestamp: bool,
    /// What separates the printed fields.
    #[arg(long, default_value = "\t", value_name = "SEP")]
    separator: String,
    /// Show progress on stderr even when it is not a terminal.
    #[arg(long)]
    progress: bool,
}

/// How long stopping may take after `--timeout-ms` passed: the last commit and leaving the group.
/// Past it the records printed but not committed are delivered again to the group's next consumer.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// Records handed out and not yet acked at most: the most lines one flush makes visible. The
/// consumer runs `Unordered` only for this bound; a partition's records still reach the stream in
/// offset order (one queue per partition, one channel, read by one loop), and they are printed
/// in that order.
const IN_FLIGHT: usize = 1024;

/// The output buffer: a full batch of 100-byte records fits in it, so a batch is one write.
const OUT_BUFFER: usize = 128 * 1024;

/// Runs `kafkit consume`.
pub(crate) async fn run(args: ConsumeArgs) -> Result<(), Failure> {
    let idle = args.timeout_ms.map(Duration::from_millis);
    let started = Instant::now();
    let mut client = args.cluster.client()?;
    if let Some(idle) = idle {
        // No wait is longer than --timeout-ms, the first (connecting) included.
        let limit = client.connect_timeout_limit().min(idle);
        client = client.connect_timeout(limit);
    }
    let unreachable = |client: &kafkit::ClientConfig| kafkit::Error::Unreachable {
        bootstrap: client.bootstrap().join(","),
        waited: started.elapsed(),
    };
    let starting = start(&args, client.clone());
    let consumer = match idle {
        Some(idle) => tokio::time::timeout_at(started + idle, starting)
            .await
            .map_err(|_| unreachable(&client))??,
        None => starting.await?,
    };
    let mut stream = consumer.stream()?;
    let progress = Progress::start("consumed", args.progress);
    let mut out = BufWriter::with_capacity(OUT_BUFFER, std::io::stdout().lock());
    // Written to `out`, not yet flushed: acked only once the flush succeeded.
    let mut written: Vec<StreamRecord> = Vec::with_capacity(IN_FLIGHT);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut last = started;
    loop {
        let printed = progress.count() + written.len() as u64;
        if args.max_messages.is_some_and(|max| printed >= max) {
            break;
        }
        let record = if written.is_empty() {
            let next = async {
                match idle {
                    Some(limit) => tokio::time::timeout_at(last + limit, stream.next())
                        .await
                        .ok()
                        .flatten(),
                    None => stream.next().await,
                }
            };
            tokio::select! {
                record = next => record,
                _ = &mut signal => None,
            }
        } else {
            match stream.next().now_or_never() {
                Some(record) => record,
                None => {
                    // Nothing more is ready: make the batch visible, then ack it.
                    if !deliver(&mut out, &mut written, &progress) {
                        break;
                    }
                    last = Instant::now();
                    continue;
                }
            }
        };
        let Some(record) = record else { break };
        if write_record(&mut out, &args, record.record()).is_err() {
            // stdout closed (`| head`): this batch was not delivered; stop without acking it.
            written.clear();
            break;
        }
        written.push(record);
    }
    deliver(&mut out, &mut written, &progress);
    drop(out);
    // The consumer's own shutdown timeout bounds this too; the outer one also covers its last steps.
    if tokio::time::timeout(STOP_GRACE, stream.shutdown())
        .await
        .is_ok_and(|r| r.is_err())
    {
        tracing::debug!("the consumer did not stop cleanly; uncommitted records are redelivered");
    }
    progress.finish();
    Ok(())
}

/// Flushes `out` and acks the records written to it. If the flush fails (stdout closed), none of
/// them is acked: they are dropped, so delivered again. Returns whether the flush succeeded.
fn deliver(out: &mut impl Write, written: &mut Vec<StreamRecord>, progress: &Progress) -> bool {
    if out.flush().is_err() {
        written.clear();
        return false;
    }
    progress.add_n(written.len() as u64);
    StreamRecord::ack_all(written.drain(..));
    true
}

/// Checks that the topics exist (one clear error instead of a consumer waiting for them forever)
/// and builds the consumer.
async fn start(args: &ConsumeArgs, client: kafkit::ClientConfig) -> Result<Consumer, Failure> {
    admin::describe_topics(&client, &args.topic).await?;
    let group_id = args.group.clone().unwrap_or_else(|| {
        format!(
            "kafkit-consume-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_millis()
        )
    });
    let group = args
        .group_protocol
        .apply(GroupConfig::new(&group_id, &args.topic))?;
    let mut builder = ConsumerBuilder::new(client, group)
        .dispatch(DispatchMode::Unordered {
            max_in_flight: IN_FLIGHT,
        })
        .auto_offset_reset(if args.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        });
    if args.timeout_ms.is_some() {
        builder = builder.shutdown_timeout(STOP_GRACE);
    }
    Ok(builder.build().await?)
}

/// Writes one output line: the selected fields, then the value, separated by `--separator`.
fn write_record(out: &mut impl Write, args: &ConsumeArgs, r: &ConsumedRecord) -> io::Result<()> {
    let sep = args.separator.as_bytes();
    if args.print_partition {
        write!(out, "{}-{}", r.topic(), r.partition())?;
        out.write_all(sep)?;
    }
    if args.print_offset {
        write!(out, "{}", r.offset())?;
        out.write_all(sep)?;
    }
    if args.print_timestamp {
        out.write_all(r.timestamp().to_rfc3339().as_bytes())?;
        out.write_all(sep)?;
    }
    if args.print_headers {
        for (i, h) in r.headers().iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            out.write_all(h.name().as_bytes())?;
            out.write_all(b":")?;
            out.write_all(String::from_utf8_lossy(h.value().unwrap_or_default()).as_bytes())?;
        }
        out.write_all(sep)?;
    }
    if args.print_key {
        write_text(out, r.key())?;
        out.write_all(sep)?;
    }
    write_text(out, r.value())?;
    out.write_all(b"\n")
}

/// Bytes as text (invalid UTF-8 replaced), `null` for none. Valid text, the usual case, is checked
/// with `str::from_utf8` and written as it is: `from_utf8_lossy`'s chunk walk was 7 % of the
/// command's samples on 100-byte values.
fn write_text(out: &mut impl Write, bytes: Option<&[u8]>) -> io::Result<()> {
    match bytes {
        Some(b) if std::str::from_utf8(b).is_ok() => out.write_all(b),
        Some(b) => out.write_all(String::from_utf8_lossy(b).as_bytes()),
        None => out.write_all(b"null"),
    }
}
