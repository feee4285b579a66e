//! `kafkit-bench`: kafkit against rust-rdkafka (librdkafka), the Java client's own performance tools
//! and a raw-fetch ceiling, and the `kafkit` command against kcat, side by side on one local broker
//! in one run.
//!
//! The runner starts a broker (kafkit-testkit, or `KAFKA_BOOTSTRAP`), then for each workload runs
//! every contender as a child process of its own (`kafkit-bench child ...`, or the command-line tool
//! itself), wrapped in `/usr/bin/time` for CPU time and peak RSS. Rounds alternate the contenders' order (A/B/C, then
//! B/C/A, ...) after one warm-up round that is not counted. It prints medians with min–max and the
//! ratios, and writes them to `results/latest.md`.
//!
//! # Layout
//! - `kafkit_side`, `rdkafka_side`, `java_side`: the library contenders.
//! - `cli_side`: the command-line contenders, `kafkit consume` / `kafkit produce` and kcat.
//! - `ceiling`: the raw multi-partition fetch loop.
//! - `rebalance`: the rebalance benchmark (in the runner's process: members as tasks).
//! - `share`: the share-group benchmark (1, 4, 8 share consumers against ShareConsumerPerformance).
//! - this file: the runner, the child entry point, and the report.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod ceiling;
mod cli_side;
mod dispatcher;
mod java_side;
mod kafkit_side;
mod rdkafka_side;
mod rebalance;
mod share;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use kafkit::admin::{self, NewTopic};
use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord};
use kafkit_testkit::{BrokerOptions, LocalKafka};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Debug, Parser)]
#[command(name = "kafkit-bench")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Fraction of the full record counts (1.0 = 1,000,000 x 100 B and 100,000 x 10 KiB).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Counted rounds per contender (after one warm-up round).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Only run benchmarks whose name contains this (`produce`, `consume`, `latency`, `rebalance`,
    /// `A-12`, ...).
    #[arg(long)]
    only: Option<String>,
    /// Leave out the command-line contenders (`kafkit consume` / `produce` against kcat).
    #[arg(long)]
    no_cli: bool,
    /// Send rates (records/s) of the latency benchmark.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000u64, 10_000, 50_000])]
    latency_rates: Vec<u64>,
    /// The directory under which the runner's broker keeps its log (a tmpfs by default, so that the
    /// broker's disk writes do not set every contender's pace and slow the later rounds).
    #[arg(long, default_value = "/dev/shm")]
    broker_dir: std::path::PathBuf,
    /// Where to write the markdown report.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results/latest.md"))]
    out: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one contender once and print its outcome as one JSON line (used by the runner).
    Child(ChildArgs),
}

#[derive(Debug, clap::Args)]
struct ChildArgs {
    role: String,
    #[arg(long)]
    bootstrap: String,
    #[arg(long)]
    topic: String,
    #[arg(long)]
    records: u64,
    #[arg(long, default_value_t = 100)]
    size: usize,
    #[arg(long, default_value_t = 1)]
    partitions: i32,
}

/// What one run of a contender measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    pub(crate) secs: f64,
    /// Latency percentiles, for the latency runs.
    pub(crate) latency: Option<Latency>,
}

impl Outcome {
    /// A producer run: `records` records of `size` bytes acknowledged in `secs`.
    pub(crate) fn produced(records: u64, size: usize, secs: f64) -> Self {
        Self {
            records,
            bytes: records * size as u64,
            secs,
            latency: None,
        }
    }
}

/// Latency percentiles in microseconds: p50, p99 and p99.9.
pub(crate) type Percentiles = [u64; 3];

/// What a latency probe measured.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Latency {
    /// From the producer's send call to the consumer's hand-off of the record.
    pub(crate) end_to_end: Percentiles,
    /// From the broker's append (the topic's `LogAppendTime` timestamps, milliseconds) to the hand-off:
    /// the consumer's own part, which the producer's linger and batching do not touch.
    pub(crate) consumer: Percentiles,
    /// The runner's producer in the same run: from the send call to its acknowledgement.
    pub(crate) producer: Percentiles,
}

/// A latency probe's samples, one pair per record.
#[derive(Debug, Default)]
pub(crate) struct LatencySamples {
    end_to_end: Vec<u64>,
    consumer: Vec<u64>,
}

impl LatencySamples {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            end_to_end: Vec::with_capacity(n),
            consumer: Vec::with_capacity(n),
        }
    }

    /// Records one record's latencies, taken now: `value` starts with its send time (µs since
    /// the epoch, big-endian) and `appended_ms` is the broker's append time. A send time of 0 marks
    /// the runner's warm-up traffic, which is skipped.
    pub(crate) fn record(&mut self, value: &[u8], appended_ms: i64) {
        let now = now_micros();
        let sent = value
            .get(..8)
            .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
        if sent == 0 {
            return;
        }
        self.end_to_end.push(now.saturating_sub(sent));
        self.consumer
            .push(now.saturating_sub(u64::try_from(appended_ms).unwrap_or(0) * 1000));
    }

    pub(crate) fn len(&self) -> usize {
        self.end_to_end.len()
    }

    pub(crate) fn finish(mut self) -> Latency {
        Latency {
            end_to_end: percentiles(&mut self.end_to_end),
            consumer: percentiles(&mut self.consumer),
            producer: [0; 3],
        }
    }
}

/// A run's outcome with the process's CPU time and peak RSS.
#[derive(Debug, Clone)]
struct Measured {
    outcome: Outcome,
    cpu_secs: Option<f64>,
    max_rss_kb: Option<u64>,
}

/// The first time something happened.
#[derive(Debug, Default)]
pub(crate) struct Latch(OnceLock<Instant>);

impl Latch {
    pub(crate) fn set_once(&self) {
        let _ = self.0.set(Instant::now());
    }

    /// Seconds from `start` to this latch (0 if either never happened).
    pub(crate) fn since(&self, start: &Latch) -> f64 {
        match (start.0.get(), self.0.get()) {
            (Some(a), Some(b)) => b.duration_since(*a).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// A record value of `size` bytes.
/// The most records a producer contender keeps awaiting acknowledgement: 100,000, or fewer when
/// they would hold over 64 MiB (a user bounds the records held by their bytes; past the producer's
/// buffer, records only wait in memory, which a 10 KiB workload would fill with a gigabyte of
/// fresh pages).
pub(crate) fn records_in_flight(size: usize) -> usize {
    ((64 << 20) / size.max(1)).clamp(1, 100_000)
}

pub(crate) fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// p50, p99 and p99.9 of `samples`.
fn percentiles(samples: &mut [u64]) -> Percentiles {
    if samples.is_empty() {
        return [0; 3];
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    [at(0.50), at(0.99), at(0.999)]
}

/// Tells the runner this latency probe is assigned and reading.
pub(crate) fn announce_ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Some(Command::Child(args)) => runtime.block_on(child(args)),
        None => {
            // The runner's own producer and admin calls log when `RUST_LOG` asks (children never do:
            // their output is their measurement).
            if std::env::var_os("RUST_LOG").is_some() {
                tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                    .with_writer(std::io::stderr)
                    .init();
            }
            runtime.block_on(run(cli))
        }
    }
}

async fn child(a: ChildArgs) -> Result<(), Box<dyn std::error::Error>> {
    let (b, t, n, size) = (a.bootstrap.as_str(), a.topic.as_str(), a.records, a.size);
    let outcome = match a.role.as_str() {
        "produce-kafkit" => kafkit_side::produce(b, t, n, size).await?,
        "produce-kafkit-all" => kafkit_side::produce_all(b, t, n, size).await?,
        "produce-rdkafka" => rdkafka_side::produce(b, t, n, size).await?,
        "produce-rdkafka-base" => {
            let (b, t) = (b.to_owned(), t.to_owned());
            tokio::task::spawn_blocking(move || {
                rdkafka_side::produce_base(&b, &t, n, size).map_err(|e| e.to_string())
            })
            .await??
        }
        "produce-java" => java_side::produce(b, t, n, size).await?,
        "consume-kafkit-partition" => kafkit_side::consume(b, t, n, "partition").await?,
        "consume-kafkit-key" => kafkit_side::consume(b, t, n, "key").await?,
        "consume-kafkit-unordered" => kafkit_side::consume(b, t, n, "unordered").await?,
        "consume-kafkit-stream" => kafkit_side::consume_stream(b, t, n).await?,
        "consume-kafkit-batch" => kafkit_side::consume_batch(b, t, n).await?,
        "consume-rdkafka" => rdkafka_side::consume(b, t, n).await?,
        "consume-java" => java_side::consume(b, t, n).await?,
        "consume-ceiling" => ceiling::run(b, t, a.partitions, n, 1024 * 1024).await?,
        "latency-kafkit" => kafkit_side::latency(b, t, n).await?,
        "latency-kafkit-run" => kafkit_side::latency_run(b, t, n).await?,
        "latency-rdkafka" => rdkafka_side::latency(b, t, n).await?,
        "latency-java" => java_side::latency(b, t, n).await?,
        other => return Err(format!("unknown role {other}").into()),
    };
    if outcome.records < n {
        return Err(format!("{}: only {} of {n} records", a.role, outcome.records).into());
    }
    let doc = json!({
        "records": outcome.records,
        "bytes": outcome.bytes,
        "secs": outcome.secs,
        "latency": outcome.latency.map(|l| json!({"end_to_end": l.end_to_end, "consumer": l.consumer})),
    });
    println!("{doc}");
    Ok(())
}

/// `program` under `/usr/bin/time` (when present), which writes the process's CPU time and peak
/// RSS to `stats` (read them with [`read_stats`]).
pub(crate) fn timed(program: &std::path::Path, stats: &std::path::Path) -> tokio::process::Command {
    let time = std::path::Path::new("/usr/bin/time");
    if time.exists() {
        let mut c = tokio::process::Command::new(time);
        c.arg("-f")
            .arg("%U %S %M")
            .arg("-o")
            .arg(stats)
            .arg(program);
        c
    } else {
        tokio::process::Command::new(program)
    }
}

/// CPU seconds (user + system) and peak RSS in KiB from a [`timed`] run's `stats` file, which it
/// removes.
pub(crate) fn read_stats(stats: &std::path::Path) -> (Option<f64>, Option<u64>) {
    let read = match std::fs::read_to_string(stats) {
        Ok(text) => {
            // The last line: `time` puts a note on why a process failed before it.
            let f: Vec<&str> = text
                .lines()
                .last()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            let user: f64 = f.first().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let sys: f64 = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            (Some(user + sys), f.get(2).and_then(|v| v.parse().ok()))
        }
        Err(_) => (None, None),
    };
    let _ = std::fs::remove_file(stats);
    read
}

/// Runs `role` as a child process (under `/usr/bin/time` when present). `on_ready` runs once the
/// child prints `ready` (the latency probes), concurrently with the child.
async fn run_child<F, Fut>(
    role: &str,
    args: &[String],
    on_ready: Option<F>,
) -> Result<Measured, Box<dyn std::error::Error>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), Box<dyn std::error::Error>>>,
{
    let exe = std::env::current_exe()?;
    let stats = std::env::temp_dir().join(format!("kafkit-bench-{}.time", std::process::id()));
    let mut cmd = timed(&exe, &stats);
    cmd.arg("child")
        .arg(role)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut on_ready = on_ready;
    let mut result = None;
    let deadline = tokio::time::sleep(Duration::from_secs(600));
    tokio::pin!(deadline);
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line?,
            _ = &mut deadline => return Err(format!("{role}: no result within 600 s").into()),
        };
        let Some(line) = line else { break };
        if line == "ready" {
            if let Some(f) = on_ready.take() {
                f().await?;
            }
        } else if line.starts_with('{') {
            result = Some(serde_json::from_str::<Value>(&line)?);
        }
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        return Err(format!(
            "{role} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    let doc = result.ok_or_else(|| format!("{role} printed no result"))?;
    let (cpu_secs, max_rss_kb) = read_stats(&stats);
    Ok(Measured {
        outcome: Outcome {
            records: doc["records"].as_u64().unwrap_or(0),
            bytes: doc["bytes"].as_u64().unwrap_or(0),
            secs: doc["secs"].as_f64().unwrap_or(0.0),
            latency: doc["latency"].as_object().map(|l| {
                let read = |key: &str| -> Percentiles {
                    let mut out = [0; 3];
                    for (o, v) in out.iter_mut().zip(l[key].as_array().into_iter().flatten()) {
                        *o = v.as_u64().unwrap_or(0);
                    }
                    out
                };
                Latency {
                    end_to_end: read("end_to_end"),
                    consumer: read("consumer"),
                    producer: [0; 3],
                }
            }),
        },
        cpu_secs,
        max_rss_kb,
    })
}

type NoReady = fn() -> std::future::Ready<Result<(), Box<dyn std::error::Error>>>;

/// Results of one benchmark: contender -> counted runs.
type Runs = BTreeMap<String, Vec<Measured>>;

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let scaled = |n: u64| ((n as f64 * cli.scale).round() as u64).max(100);
    let wanted = |name: &str| cli.only.as_deref().is_none_or(|o| name.contains(o));
    let mut report = String::new();
    let _ = writeln!(report, "{}\n", machine());
    let _ = writeln!(
        report,
        "Command: `just bench` (`cargo run --release --manifest-path bench/Cargo.toml -- --scale {} --rounds {}`)\n",
        cli.scale, cli.rounds
    );

    // In memory: no broker needed.
    let records = scaled(1_000_000);
    let workload = dispatcher::workload(records);
    for (mode_name, mode) in dispatcher::modes() {
        let name = format!("dispatcher {mode_name}");
        if !wanted(&name) {
            continue;
        }
        let contenders = ["dispatch-kafkit", "dispatch-hand-written"];
        let mut runs = Runs::new();
        for round in 0..=cli.rounds {
            for i in 0..contenders.len() {
                let role = contenders[(i + round) % contenders.len()];
                let elapsed = match role {
                    "dispatch-kafkit" => dispatcher::kafkit(mode, &workload).await,
                    _ => dispatcher::hand_written(mode, &workload).await,
                };
                eprintln!(
                    "{name} round {round} {role}: {:.0} records/s",
                    records as f64 / elapsed.as_secs_f64()
                );
                if round > 0 {
                    runs.entry(role.to_owned()).or_default().push(Measured {
                        outcome: Outcome {
                            records,
                            bytes: records * dispatcher::VALUE as u64,
                            secs: elapsed.as_secs_f64(),
                            latency: None,
                        },
                        cpu_secs: None,
                        max_rss_kb: None,
                    });
                }
            }
        }
        report.push_str(&throughput_table(
            &format!("{name} (in memory, 1,000 Zipf keys on 12 partitions, no-op handler)"),
            records,
            dispatcher::VALUE,
            &runs,
            &[("dispatch-kafkit", &["dispatch-hand-written"])],
        ));
    }

    // A = small records, B = large ones; consume A also on 512 partitions (about 2,000 records
    // each at full size).
    let workloads = [
        ("A", scaled(1_000_000), 100usize),
        ("B", scaled(100_000), 10 * 1024),
    ];
    let produce_runs: Vec<(&str, u64, usize, i32)> = workloads
        .iter()
        .flat_map(|&(w, n, size)| [1, 12].map(|p| (w, n, size, p)))
        .collect();
    let consume_runs: Vec<(&str, u64, usize, i32)> = produce_runs
        .iter()
        .copied()
        .chain([("A", workloads[0].1, workloads[0].2, 512)])
        .collect();
    let produce_name = |&(w, _, _, p): &(&str, u64, usize, i32)| format!("produce {w}-{p}");
    let consume_name = |&(w, _, _, p): &(&str, u64, usize, i32)| format!("consume {w}-{p}");
    let throughput_wanted = produce_runs.iter().map(produce_name).any(|n| wanted(&n))
        || consume_runs.iter().map(consume_name).any(|n| wanted(&n));
    let needs_broker =
        throughput_wanted || wanted("latency") || wanted("rebalance") || wanted("share");
    let needs_cli = throughput_wanted && !cli.no_cli;
    let (kafkit_cli, kcat) = if needs_cli {
        (cli_side::kafkit_bin()?, Some(cli_side::kcat_version()?))
    } else {
        (std::path::PathBuf::new(), None)
    };
    if let Some(kcat) = &kcat {
        let _ = writeln!(report, "Command-line peer: {kcat}.\n");
    }
    let _kafka;
    let bootstrap = if !needs_broker {
        String::new()
    } else {
        match std::env::var("KAFKA_BOOTSTRAP") {
            Ok(b) => b,
            Err(_) => {
                let kafka = LocalKafka::start_with(
                    BrokerOptions::default()
                        .heap("1g")
                        .data_root(&cli.broker_dir)
                        // Deleted topics leave the tmpfs at once, not a minute later.
                        .property("log.segment.delete.delay.ms", "0"),
                )
                .await?;
                let _ = writeln!(
                    report,
                    "Broker: one local node (1 GiB heap), its log under `{}`.\n",
                    cli.broker_dir.display()
                );
                let b = kafka.bootstrap();
                _kafka = kafka;
                b
            }
        }
    };
    let client = ClientConfig::new([if needs_broker {
        bootstrap.as_str()
    } else {
        "unused:1"
    }])?;

    for run in &produce_runs {
        let name = produce_name(run);
        let &(_, records, size, partitions) = run;
        if !wanted(&name) {
            continue;
        }
        let mut contenders = vec![
            "produce-kafkit",
            "produce-kafkit-all",
            "produce-rdkafka",
            "produce-rdkafka-base",
            "produce-java",
        ];
        // The command-line producers read the same file of keyed records.
        let input = std::env::temp_dir().join(format!(
            "kafkit-bench-{}-{records}x{size}.input",
            std::process::id()
        ));
        if needs_cli {
            contenders.extend(cli_side::PRODUCERS);
            cli_side::write_input(&input, records, size)?;
        }
        let mut runs = Runs::new();
        for round in 0..=cli.rounds {
            for i in 0..contenders.len() {
                let role = contenders[(i + round) % contenders.len()];
                let topic = format!(
                    "bench-{}-{round}-{}",
                    role,
                    kafkit_testkit::random_name("p")
                );
                admin::create_topics(
                    &client,
                    &[NewTopic::new(&topic)
                        .partitions(partitions)
                        .replication_factor(1)],
                )
                .await?;
                let m = if cli_side::is_cli(role) {
                    cli_side::produce(role, &kafkit_cli, &bootstrap, &topic, &input, records, size)
                        .await?
                } else {
                    run_child::<NoReady, _>(
                        role,
                        &args(&bootstrap, &topic, records, size, partitions),
                        None,
                    )
                    .await?
                };
                // Every producer's count is checked against the topic.
                let on_topic = ceiling::records_on(&bootstrap, &topic, partitions).await?;
                if on_topic != records {
                    return Err(
                        format!("{role}: {on_topic} of {records} records on {topic}").into(),
                    );
                }
                admin::delete_topics(&client, &[topic]).await?;
                eprintln!(
                    "{name} round {round} {role}: {:.0} records/s",
                    m.outcome.records as f64 / m.outcome.secs
                );
                if round > 0 {
                    runs.entry(role.to_owned()).or_default().push(m);
                }
            }
        }
        let _ = std::fs::remove_file(&input);
        report.push_str(&throughput_table(
            &name,
            records,
            size,
            &runs,
            &[
                (
                    "produce-kafkit",
                    &["produce-rdkafka", "produce-rdkafka-base", "produce-java"],
                ),
                ("produce-cli-kafkit", &["produce-cli-kcat"]),
            ],
        ));
    }

    for run in &consume_runs {
        let name = consume_name(run);
        let &(w, records, size, partitions) = run;
        if !wanted(&name) {
            continue;
        }
        let topic = format!(
            "bench-consume-{w}-{partitions}-{}",
            kafkit_testkit::random_name("c")
        );
        admin::create_topics(
            &client,
            &[NewTopic::new(&topic)
                .partitions(partitions)
                .replication_factor(1)],
        )
        .await?;
        preload(&client, &topic, records, size, partitions).await?;
        let mut contenders = vec![
            "consume-kafkit-partition",
            "consume-kafkit-key",
            "consume-kafkit-unordered",
            "consume-kafkit-stream",
            "consume-kafkit-batch",
            "consume-rdkafka",
            "consume-java",
            "consume-ceiling",
        ];
        if needs_cli {
            contenders.extend(cli_side::CONSUMERS);
        }
        let mut runs = Runs::new();
        for round in 0..=cli.rounds {
            for i in 0..contenders.len() {
                let role = contenders[(i + round) % contenders.len()];
                let m = if cli_side::is_cli(role) {
                    cli_side::consume(role, &kafkit_cli, &bootstrap, &topic, records).await?
                } else {
                    run_child::<NoReady, _>(
                        role,
                        &args(&bootstrap, &topic, records, size, partitions),
                        None,
                    )
                    .await?
                };
                eprintln!(
                    "{name} round {round} {role}: {:.0} records/s",
                    m.outcome.records as f64 / m.outcome.secs
                );
                if round > 0 {
                    runs.entry(role.to_owned()).or_default().push(m);
                }
            }
        }
        admin::delete_topics(&client, &[topic]).await?;
        report.push_str(&throughput_table(
            &name,
            records,
            size,
            &runs,
            &[
                (
                    "consume-kafkit",
                    &["consume-rdkafka", "consume-java", "consume-ceiling"],
                ),
                (
                    "consume-cli-kafkit",
                    &["consume-cli-kcat-C", "consume-cli-kcat-G"],
                ),
                // The same work (Unordered, 1,024 in flight) through `stream()` and `run()`.
                ("consume-kafkit-stream", &["consume-kafkit-unordered"]),
            ],
        ));
    }

    if wanted("latency") {
        // Tuned for latency, as its users would: no linger (a batch goes as soon as the
        // connection has room for another request).
        let producer = ProducerBuilder::new(client.clone())
            .linger(Duration::ZERO)
            .build()
            .await?;
        let contenders = [
            "latency-kafkit",
            "latency-kafkit-run",
            "latency-rdkafka",
            "latency-java",
        ];
        for &rate in &cli.latency_rates {
            // 20 s of sending at full scale.
            let records = scaled(rate * 20);
            let mut runs = Runs::new();
            for round in 0..=cli.rounds.min(3) {
                for i in 0..contenders.len() {
                    let role = contenders[(i + round) % contenders.len()];
                    // A fresh topic per run: the probe reads from the start and sees only this
                    // run. The broker stamps each record as it appends it, so the consumer's part
                    // of the latency is measured apart from the producer's.
                    let topic = format!("bench-latency-{}", kafkit_testkit::random_name("l"));
                    admin::create_topics(
                        &client,
                        &[NewTopic::new(&topic)
                            .partitions(12)
                            .replication_factor(1)
                            .config("message.timestamp.type", "LogAppendTime")],
                    )
                    .await?;
                    // The first appends to a new topic's partitions take up to ~100 ms for any
                    // client (measured: every ack slower than 20 ms came in the first 0.5 s of
                    // sending). A second of traffic at the rate, which the probes skip, goes first:
                    // the runs measure the steady state.
                    paced_produce(producer.clone(), topic.clone(), rate, rate, None).await?;
                    let (producer, topic2) = (producer.clone(), topic.clone());
                    let acked = Arc::new(std::sync::Mutex::new(None));
                    let slot = Arc::clone(&acked);
                    let paced = move || paced_produce(producer, topic2, records, rate, Some(slot));
                    let mut m = run_child(
                        role,
                        &args(&bootstrap, &topic, records, 100, 12),
                        Some(paced),
                    )
                    .await?;
                    admin::delete_topics(&client, &[topic]).await?;
                    if let Some(l) = m.outcome.latency.as_mut() {
                        l.producer = acked
                            .lock()
                            .expect("not poisoned")
                            .take()
                            .unwrap_or_default();
                    }
                    let l = m.outcome.latency.unwrap_or_default();
                    eprintln!(
                        "latency {rate}/s round {round} {role}: end to end {:?} µs, consumer {:?} µs, producer's acks {:?} µs (p50, p99, p99.9), CPU {:.2} s",
                        l.end_to_end,
                        l.consumer,
                        l.producer,
                        m.cpu_secs.unwrap_or(0.0)
                    );
                    if round > 0 {
                        runs.entry(role.to_owned()).or_default().push(m);
                    }
                }
            }
            report.push_str(&latency_table(records, rate, &runs));
        }
    }

    if wanted("rebalance") {
        // No warm-up round: each group's own start comes before its first event. At most 3 rounds,
        // as for latency: a round of every protocol and size takes minutes of mostly waiting.
        report.push_str(&rebalance::run(&client, &bootstrap, cli.rounds.min(3)).await?);
    }
    if wanted("share") {
        // 200,000 records at full scale: each of the 2 x 3 x (rounds + 1) runs reads them all.
        let records = ((200_000.0 * cli.scale) as u64).max(1_000);
        report.push_str(&share::run(&client, &bootstrap, records, cli.rounds.min(3)).await?);
    }
    let _ = writeln!(
        report,
        "Total run time: {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    println!("{report}");
    if let Some(dir) = std::path::Path::new(&cli.out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&cli.out, &report)?;
    Ok(())
}

fn args(bootstrap: &str, topic: &str, records: u64, size: usize, partitions: i32) -> Vec<String> {
    vec![
        "--bootstrap".into(),
        bootstrap.into(),
        "--topic".into(),
        topic.into(),
        "--records".into(),
        records.to_string(),
        "--size".into(),
        size.to_string(),
        "--partitions".into(),
        partitions.to_string(),
    ]
}

/// Writes the consume topics once, with kafkit's producer, so every consumer reads the same data.
/// Keys cycle over 1,000 values, or 8 per partition on more than 125 partitions, so that every
/// partition gets records (1,000 keys would leave about one in seven of 512 partitions empty).
async fn preload(
    client: &ClientConfig,
    topic: &str,
    records: u64,
    size: usize,
    partitions: i32,
) -> Result<(), Box<dyn std::error::Error>> {
    use futures::StreamExt;
    let producer = ProducerBuilder::new(client.clone()).build().await?;
    let value = payload(size);
    let keys = 1000.max(8 * partitions as u64);
    let mut sends = futures::stream::iter(0..records)
        .map(|i| {
            producer
                .send(ProducerRecord::new(topic, value.clone()).key(format!("key-{}", i % keys)))
        })
        .buffer_unordered(50_000);
    while let Some(done) = sends.next().await {
        done?;
    }
    producer.close().await?;
    Ok(())
}

/// Produces `records` records at `rate` per second, each value stamped with its send time, and
/// puts the percentiles of its send-to-acknowledgement times in `acked`; without `acked`, warm-up
/// traffic, stamped 0.
async fn paced_produce(
    producer: kafkit::Producer,
    topic: String,
    records: u64,
    rate: u64,
    acked: Option<Arc<std::sync::Mutex<Option<Percentiles>>>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let per_tick = rate / 1000;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0;
    let mut tasks = tokio::task::JoinSet::new();
    while sent < records {
        tick.tick().await;
        for _ in 0..per_tick.min(records - sent) {
            // Warm-up records carry a send time of 0 (skipped by the probes).
            let sent_at = if acked.is_some() { now_micros() } else { 0 };
            let mut value = sent_at.to_be_bytes().to_vec();
            value.resize(100, b'x');
            let record = ProducerRecord::new(&topic, value).key(format!("key-{}", sent % 1000));
            let producer = producer.clone();
            tasks.spawn(async move {
                let started = Instant::now();
                producer
                    .send(record)
                    .await
                    .map(|_| started.elapsed().as_micros() as u64)
            });
            sent += 1;
        }
    }
    let mut samples = Vec::with_capacity(records as usize);
    while let Some(done) = tasks.join_next().await {
        samples.push(done??);
    }
    if let Some(acked) = acked {
        *acked.lock().expect("not poisoned") = Some(percentiles(&mut samples));
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One comparison: contenders whose name starts with the prefix, each over each named peer.
type Comparison<'a> = (&'a str, &'a [&'a str]);

/// Medians, spread, CPU and RSS per contender, then the ratios of each comparison.
fn throughput_table(
    name: &str,
    records: u64,
    size: usize,
    runs: &Runs,
    comparisons: &[Comparison<'_>],
) -> String {
    let rate = |m: &Measured| m.outcome.records as f64 / m.outcome.secs.max(1e-9);
    let medians: BTreeMap<&str, f64> = runs
        .iter()
        .map(|(k, v)| (k.as_str(), median(v.iter().map(rate).collect())))
        .collect();
    let mut out = format!(
        "### {name}: {records} records x {size} B\n\n| contender | records/s (median) | min–max | MB/s | CPU µs/record | peak RSS MiB |\n| --- | ---: | ---: | ---: | ---: | ---: |\n"
    );
    for (role, ms) in runs {
        let rates: Vec<f64> = ms.iter().map(rate).collect();
        let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rates.iter().copied().fold(0.0, f64::max);
        let med = medians[role.as_str()];
        let cpu: Vec<f64> = ms
            .iter()
            .filter_map(|m| m.cpu_secs.map(|c| c * 1e6 / m.outcome.records as f64))
            .collect();
        let rss: Vec<f64> = ms
            .iter()
            .filter_map(|m| m.max_rss_kb.map(|k| k as f64 / 1024.0))
            .collect();
        let _ = writeln!(
            out,
            "| {role} | {med:.0} | {min:.0}–{max:.0} | {:.1} | {} | {} |",
            med * size as f64 / 1e6,
            if cpu.is_empty() {
                "n/a".into()
            } else {
                format!("{:.2}", median(cpu))
            },
            if rss.is_empty() {
                "n/a".into()
            } else {
                format!("{:.0}", median(rss))
            },
        );
    }
    out.push('\n');
    for (ours, peers) in comparisons {
        for role in runs.keys().filter(|r| r.starts_with(ours)) {
            for peer in *peers {
                if let Some(p) = medians.get(peer) {
                    let _ = writeln!(
                        out,
                        "- {role} / {peer}: **{:.2}**",
                        medians[role.as_str()] / p
                    );
                }
            }
        }
    }
    out.push('\n');
    out
}

fn latency_table(records: u64, rate: u64, runs: &Runs) -> String {
    let mut out = format!(
        "### latency at {rate} records/s: {records} x 100 B, 12 partitions\n\n\
         End to end: from the send call to the consumer's hand-off. Consumer: from the broker's \
         append (LogAppendTime, ms) to the hand-off. Producer: the runner's kafkit producer in the \
         same runs, from the send call to the acknowledgement (acks=all, no linger). Medians of \
         the runs, µs.\n\n\
         | contender | end to end p50 | p99 | p99.9 | consumer p50 | p99 | p99.9 | producer p50 | p99 | p99.9 | end-to-end p99 min–max |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    );
    for (role, ms) in runs {
        let series = |pick: fn(&Latency) -> u64| -> Vec<f64> {
            ms.iter()
                .filter_map(|m| m.outcome.latency.as_ref().map(|l| pick(l) as f64))
                .collect()
        };
        let p99 = series(|l| l.end_to_end[1]);
        let min = p99.iter().copied().fold(f64::INFINITY, f64::min);
        let max = p99.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "| {role} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {min:.0}–{max:.0} |",
            median(series(|l| l.end_to_end[0])),
            median(p99.clone()),
            median(series(|l| l.end_to_end[2])),
            median(series(|l| l.consumer[0])),
            median(series(|l| l.consumer[1])),
            median(series(|l| l.consumer[2])),
            median(series(|l| l.producer[0])),
            median(series(|l| l.producer[1])),
            median(series(|l| l.producer[2])),
        );
    }
    out.push('\n');
    out
}

/// The machine the numbers come from.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024 / 1024);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "Machine: {cpu}, {cores} cores, {mem} GiB; load average at start: {}; broker: Apache Kafka {} (kafkit-testkit, one node, same machine); librdkafka 2.0.2 (Debian) via rust-rdkafka 0.29.",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        kafkit_testkit::KAFKA_VERSION
    )
}
