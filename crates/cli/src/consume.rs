//! `kafkit consume`: records of some topics to stdout, one per line, in a consumer group. A record
//! is acked (and so committed) only after its line was written, so `--max-messages` or an interrupt
//! never commits a record that was not printed.

use std::io::{BufWriter, Write};
use std::time::Duration;

use clap::Args;
use kafkit::admin;
use kafkit::consumer::{ConsumedRecord, ConsumerBuilder, DispatchMode, OffsetReset};
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
    /// Stop when no record arrived for this many milliseconds.
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

/// Runs `kafkit consume`.
pub(crate) async fn run(args: ConsumeArgs) -> Result<(), Failure> {
    let client = args.cluster.client()?;
    // An unknown topic is one clear error instead of a consumer waiting for it forever.
    admin::describe_topics(&client, &args.topic).await?;
    let group_id = args.group.clone().unwrap_or_else(|| {
        format!(
            "kafkit-consume-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_millis()
        )
    });
    let consumer = ConsumerBuilder::new(client, GroupConfig::new(&group_id, &args.topic))
        .dispatch(DispatchMode::PartitionOrdered)
        .auto_offset_reset(if args.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        })
        .build()
        .await?;
    let mut stream = consumer.stream()?;
    let progress = Progress::start("consumed", args.progress);
    let mut out = BufWriter::new(std::io::stdout().lock());
    let idle = args.timeout_ms.map(Duration::from_millis);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    while args.max_messages.is_none_or(|max| progress.count() < max) {
        let next = async {
            match idle {
                Some(limit) => tokio::time::timeout(limit, stream.next())
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
    stream.shutdown().await?;
    progress.finish();
    Ok(())
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
