//! `kafkit consume`: records of some topics to stdout, one per line, in a consumer group. A record
//! is acked (and so committed) only after its line was written, so `--max-messages` or an interrupt
//! never commits a record that was not printed.

use std::io::{BufWriter, Write};
use std::time::Duration;

use tokio::time::Instant;

use clap::Args;
use kafkit::admin;
use kafkit::consumer::{ConsumedRecord, Consumer, ConsumerBuilder, DispatchMode, OffsetReset};
use kafkit::group::GroupConfig;

use crate::common::ClusterArgs;
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
    /// With no committed offset, start at the oldest record instead of the next one produced.
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop when no record arrived for this many milliseconds, counted from the start (connecting
    /// included: a cluster not reached by then is exit 4) and then from each record. Stopping
    /// (a last commit, leaving the group) takes at most half a second more.
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
    let mut out = BufWriter::new(std::io::stdout().lock());
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut last = started;
    while args.max_messages.is_none_or(|max| progress.count() < max) {
        let next = async {
            match idle {
                Some(limit) => tokio::time::timeout_at(last + limit, stream.next())
                    .await
                    .ok()
                    .flatten(),
                None => stream.next().await,
            }
        };
        let record = tokio::select! {
            record = next => record,
            _ = &mut signal => None,
        };
        let Some(record) = record else { break };
        last = Instant::now();
        let line = format_record(&args, record.record());
        if out
            .write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            // stdout closed (`| head`): the record was not delivered; stop without acking it.
            break;
        }
        record.ack();
        progress.add();
    }
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
    let mut builder = ConsumerBuilder::new(client, GroupConfig::new(&group_id, &args.topic))
        .dispatch(DispatchMode::PartitionOrdered)
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

/// One output line: the selected fields, then the value, separated by `--separator`.
fn format_record(args: &ConsumeArgs, r: &ConsumedRecord) -> String {
    let text = |b: Option<&[u8]>| {
        b.map_or_else(
            || "null".to_owned(),
            |b| String::from_utf8_lossy(b).into_owned(),
        )
    };
    let mut fields = Vec::new();
    if args.print_partition {
        fields.push(format!("{}-{}", r.topic(), r.partition()));
    }
    if args.print_offset {
        fields.push(r.offset().to_string());
    }
    if args.print_timestamp {
        fields.push(r.timestamp().to_rfc3339());
    }
    if args.print_headers {
        let headers: Vec<String> = r
            .headers()
            .iter()
            .map(|h| {
                format!(
                    "{}:{}",
                    h.name(),
                    String::from_utf8_lossy(h.value().unwrap_or_default())
                )
            })
            .collect();
        fields.push(headers.join(","));
    }
    if args.print_key {
        fields.push(text(r.key()));
    }
    fields.push(text(r.value()));
    let mut line = fields.join(&args.separator);
    line.push('\n');
    line
}
