//! The command-line contenders: `kafkit consume` / `kafkit produce` (the workspace's CLI, built
//! `--release`) against kcat (librdkafka's command-line client: `kcat -C`, `kcat -G`, `kcat -P`).
//! Each runs as a process of its own under `/usr/bin/time`, started by the runner itself (not
//! through a bench child), so CPU time and peak RSS are the tool's alone.
//!
//! Consumers print each record's value on a line of its own to a pipe the runner reads; the runner
//! counts the lines and times them from the first byte to the last line (start-up and the group
//! join left out, as for the library consumers, timed from their assignment). Producers read the
//! same file of `key<TAB>value` lines on stdin and are timed from start to exit, so both pay their
//! start-up and their final wait for every acknowledgement.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::{Measured, Outcome, payload, timed};

/// The consume contenders (run by [`consume`]).
pub(crate) const CONSUMERS: [&str; 3] = [
    "consume-cli-kafkit",
    "consume-cli-kcat-C",
    "consume-cli-kcat-G",
];

/// The produce contenders (run by [`produce`]).
pub(crate) const PRODUCERS: [&str; 2] = ["produce-cli-kafkit", "produce-cli-kcat"];

/// librdkafka settings for `kcat -P`, as a librdkafka user sets them for throughput and as the
/// library peers run: acks=all with idempotence, 5 ms linger, 1 MiB batches, a queue of up to
/// 1,000,000 records and 64 MiB (what `kafkit produce` keeps awaiting acknowledgement at most), and
/// the Java client's key hash (the same partitions as kafkit's).
const KCAT_PRODUCE: [&str; 7] = [
    "acks=all",
    "enable.idempotence=true",
    "linger.ms=5",
    "batch.size=1048576",
    "queue.buffering.max.messages=1000000",
    "queue.buffering.max.kbytes=65536",
    "partitioner=murmur2_random",
];

/// Whether a contender is a command-line tool run by this module.
pub(crate) fn is_cli(role: &str) -> bool {
    CONSUMERS.contains(&role) || PRODUCERS.contains(&role)
}

/// The `kafkit` binary: `KAFKIT_BIN` if set, else built now with `cargo build --release` from the
/// workspace this runner belongs to (a no-op when it is up to date).
pub(crate) fn kafkit_bin() -> Result<PathBuf, Box<dyn std::error::Error>> {
    if let Some(bin) = std::env::var_os("KAFKIT_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the kafkit CLI (cargo build --release -p kafkit-cli)");
    let out = std::process::Command::new(cargo)
        .args(["build", "--release", "--locked", "--quiet"])
        .args(["-p", "kafkit-cli", "--bin", "kafkit"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err("building the kafkit CLI failed".into());
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == "kafkit")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo named no kafkit executable".into())
}

/// `kcat -V`'s version line, or an error that says how to install it.
pub(crate) fn kcat_version() -> Result<String, Box<dyn std::error::Error>> {
    let out = std::process::Command::new("kcat")
        .arg("-V")
        .output()
        .map_err(|e| format!("kcat: {e} (install it: apt-get install -y kcat)"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("Version "))
        .ok_or("kcat -V printed no version")?;
    // "1.7.1 (JSON, ..., librdkafka 2.0.2 builtin.features=...)"
    let tool = version.split(' ').next().unwrap_or(version);
    let lib = version
        .split("librdkafka ")
        .nth(1)
        .and_then(|v| v.split(' ').next())
        .unwrap_or("?");
    Ok(format!("kcat {tool} (librdkafka {lib})"))
}

/// Writes the producers' input: `records` lines of `key-<i mod 1000><TAB><size bytes>`.
pub(crate) fn write_input(
    path: &Path,
    records: u64,
    size: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write as _;
    let value = payload(size);
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    for i in 0..records {
        write!(out, "key-{}\t", i % 1000)?;
        out.write_all(&value)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Where a tool's stderr goes (read only when it fails).
fn stderr_file() -> Result<(PathBuf, std::fs::File), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!("kafkit-bench-{}.stderr", std::process::id()));
    let file = std::fs::File::create(&path)?;
    Ok((path, file))
}

/// Reads `role`'s `records` records of `topic` from the beginning, in a group of its own for the
/// group consumers, each value on a line to a pipe the runner counts.
pub(crate) async fn consume(
    role: &str,
    kafkit: &Path,
    bootstrap: &str,
    topic: &str,
    records: u64,
) -> Result<Measured, Box<dyn std::error::Error>> {
    let group = kafkit_testkit::random_name("bench-cli");
    let n = records.to_string();
    let (program, args): (&Path, Vec<&str>) = match role {
        "consume-cli-kafkit" => (
            kafkit,
            vec![
                "consume",
                "--bootstrap-server",
                bootstrap,
                "--topic",
                topic,
                "--group",
                &group,
                "--from-beginning",
                "--max-messages",
                &n,
            ],
        ),
        // The plain partition consumer: every partition from its first offset, no group, no commits.
        "consume-cli-kcat-C" => (
            Path::new("kcat"),
            vec![
                "-C",
                "-b",
                bootstrap,
                "-t",
                topic,
                "-o",
                "beginning",
                "-e",
                "-q",
                "-c",
                &n,
            ],
        ),
        // The balanced group consumer: auto-commit every 5 s (librdkafka's default), offsets
        // stored as records reach kcat.
        "consume-cli-kcat-G" => (
            Path::new("kcat"),
            vec![
                "-b",
                bootstrap,
                "-G",
                &group,
                "-o",
                "beginning",
                "-e",
                "-q",
                "-c",
                &n,
                topic,
            ],
        ),
        other => return Err(format!("unknown CLI consumer {other}").into()),
    };
    let stats = std::env::temp_dir().join(format!("kafkit-bench-{}.time", std::process::id()));
    let (err_path, err_file) = stderr_file()?;
    let mut child = timed(program, &stats)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err_file)
        .kill_on_drop(true)
        .spawn()?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut buf = vec![0u8; 1 << 20];
    let (mut lines, mut bytes) = (0u64, 0u64);
    let (mut first, mut last) = (None, None);
    let reading = async {
        loop {
            let n = stdout.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            first.get_or_insert_with(Instant::now);
            bytes += n as u64;
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            if lines >= records && last.is_none() {
                last = Some(Instant::now());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(600), reading)
        .await
        .map_err(|_| format!("{role}: no end within 600 s"))??;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .map_err(|_| format!("{role}: did not exit after its output ended"))??;
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    let (cpu_secs, max_rss_kb) = crate::read_stats(&stats);
    if !status.success() {
        return Err(format!("{role} failed ({status}): {}", stderr.trim()).into());
    }
    if lines != records {
        return Err(format!("{role}: printed {lines} of {records} records").into());
    }
    let secs = match (first, last) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    Ok(Measured {
        outcome: Outcome {
            records: lines,
            // Values only, as the other consumers count.
            bytes: bytes - lines,
            secs,
            latency: None,
        },
        cpu_secs,
        max_rss_kb,
    })
}

/// Sends every line of `input` (`records` keyed records of `size` bytes) to `topic` with `role`,
/// timed from start to exit; the tool exits only once every record is acknowledged.
pub(crate) async fn produce(
    role: &str,
    kafkit: &Path,
    bootstrap: &str,
    topic: &str,
    input: &Path,
    records: u64,
    size: usize,
) -> Result<Measured, Box<dyn std::error::Error>> {
    let (program, args): (&Path, Vec<&str>) = match role {
        "produce-cli-kafkit" => (
            kafkit,
            vec![
                "produce",
                "--bootstrap-server",
                bootstrap,
                "--topic",
                topic,
                "--key-separator",
                "\t",
            ],
        ),
        "produce-cli-kcat" => {
            let mut args = vec!["-P", "-b", bootstrap, "-t", topic, "-K", "\t", "-q"];
            for setting in KCAT_PRODUCE {
                args.extend(["-X", setting]);
            }
            (Path::new("kcat"), args)
        }
        other => return Err(format!("unknown CLI producer {other}").into()),
    };
    let stats = std::env::temp_dir().join(format!("kafkit-bench-{}.time", std::process::id()));
    let (err_path, err_file) = stderr_file()?;
    let started = Instant::now();
    let mut child = timed(program, &stats)
        .args(&args)
        .stdin(std::fs::File::open(input)?)
        .stdout(Stdio::null())
        .stderr(err_file)
        .kill_on_drop(true)
        .spawn()?;
    let status = tokio::time::timeout(Duration::from_secs(600), child.wait())
        .await
        .map_err(|_| format!("{role}: no end within 600 s"))??;
    let secs = started.elapsed().as_secs_f64();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    let (cpu_secs, max_rss_kb) = crate::read_stats(&stats);
    if !status.success() || stderr.contains("Delivery failed") {
        return Err(format!("{role} failed ({status}): {}", stderr.trim()).into());
    }
    Ok(Measured {
        outcome: Outcome {
            records,
            bytes: records * size as u64,
            secs,
            latency: None,
        },
        cpu_secs,
        max_rss_kb,
    })
}
