//! `kafkit produce`: one record per line of stdin. Sends are pipelined (up to `--max-in-flight`
//! unacknowledged) and every one is awaited before the command exits, so a zero exit means every
//! line was acknowledged by the broker (acks=all).

use clap::Args;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kafkit::{ProducerBuilder, ProducerRecord};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::ClusterArgs;
use crate::progress::Progress;
use crate::{EXIT_USAGE, Failure};

/// `kafkit produce`.
#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The topic.
    #[arg(long)]
    topic: String,
    /// Split each line at the first occurrence of this separator into key and value (a line without
    /// it is an error). Without it, lines are values with no key.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header added to every record, `name=value` (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Send every record to this partition instead of partitioning by key.
    #[arg(long)]
    partition: Option<i32>,
    /// Sends awaiting acknowledgement at most.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_in_flight: u32,
    /// Show progress on stderr even when it is not a terminal.
    #[arg(long)]
    progress: bool,
}

/// Runs `kafkit produce`.
pub(crate) async fn run(args: ProduceArgs) -> Result<(), Failure> {
    let headers = args
        .headers
        .iter()
        .map(|h| {
            h.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
                .ok_or_else(|| Failure {
                    code: EXIT_USAGE,
                    message: format!("--header `{h}` is not NAME=VALUE"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if args.key_separator.as_deref() == Some("") {
        return Err(Failure {
            code: EXIT_USAGE,
            message: "--key-separator must not be empty".into(),
        });
    }
    let producer = ProducerBuilder::new(args.cluster.client()?).build().await?;
    // An unknown topic is one clear error before anything is read from stdin.
    producer.partition_count(&args.topic).await?;

    let progress = Progress::start("produced", args.progress);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    // `send` appends the record when called; its future only waits for the acknowledgement, so
    // the futures are kept here, not spawned as a task each.
    let mut sends = FuturesUnordered::new();
    let mut failure = None;
    let mut line_no = 0u64;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                failure = Some(Failure::runtime(format!("reading stdin: {e}")));
                break;
            }
        };
        line_no += 1;
        let mut record = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((key, value)) => ProducerRecord::new(&args.topic, value).key(key),
                None => {
                    failure = Some(Failure {
                        code: EXIT_USAGE,
                        message: format!(
                            "line {line_no} has no key separator `{sep}`; nothing after it was sent"
                        ),
                    });
                    break;
                }
            },
            None => ProducerRecord::new(&args.topic, line),
        };
        for (k, v) in &headers {
            record = record.header(k.clone(), v.clone());
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        while sends.len() >= args.max_in_flight as usize {
            if let Some(done) = sends.next().await {
                settle(done, &progress, &mut failure);
            }
        }
        // Called here, not in the task: the record is appended now, so lines keep their order.
        sends.push(producer.send(record));
        if failure.is_some() {
            break;
        }
    }
    while let Some(done) = sends.next().await {
        settle(done, &progress, &mut failure);
    }
    let _ = producer.close().await;
    match failure {
        Some(failure) => Err(failure),
        None => {
            progress.finish();
            Ok(())
        }
    }
}

/// Counts an acknowledged send, or keeps the first failure.
fn settle(
    done: kafkit::Result<kafkit::Delivery>,
    progress: &Progress,
    failure: &mut Option<Failure>,
) {
    match done {
        Ok(_) => progress.add(),
        Err(e) => {
            failure.get_or_insert(e.into());
        }
    }
}
