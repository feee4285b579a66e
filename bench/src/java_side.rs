//! The Java client's own performance tools from the kafka-tools jar (the broker's version):
//! `ProducerPerformance` and `ConsumerPerformance`, run through kafkit-testkit's JVM launcher. Both
//! report their own timing, which excludes JVM start-up and (for the consumer) the group join. And
//! the latency probe, a `KafkaConsumer` program of the bench's own.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{Latency, Outcome};

/// `java <main class>` on the broker's classpath, with the JVM's defaults for a client that runs
/// long enough to warm up (full JIT, default GC) and a 1 GiB heap.
pub(crate) fn java(
    main_class: &str,
) -> Result<tokio::process::Command, Box<dyn std::error::Error>> {
    let mut cmd = tokio::process::Command::new("java");
    cmd.args(["-Xms1g", "-Xmx1g"])
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
        .arg("-Dorg.slf4j.simpleLogger.logFile=System.err")
        .arg("-cp")
        .arg(kafkit_testkit::kafka_classpath()?)
        .arg(main_class)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    Ok(cmd)
}

pub(crate) async fn produce(
    bootstrap: &str,
    topic: &str,
    records: u64,
    size: usize,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let out = java("org.apache.kafka.tools.ProducerPerformance")?
        .args(["--topic", topic, "--num-records", &records.to_string()])
        .args([
            "--record-size",
            &size.to_string(),
            "--throughput",
            "-1",
            "--producer-props",
        ])
        .arg(format!("bootstrap.servers={bootstrap}"))
        .args([
            "acks=all",
            "enable.idempotence=true",
            "linger.ms=5",
            "batch.size=1048576",
            "compression.type=none",
        ])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "ProducerPerformance failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    // Last line: "N records sent, R records/sec (M MB/sec), ..."
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains("records sent"))
        .ok_or("no summary line")?;
    let rate: f64 = line
        .split(", ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .ok_or("no rate")?
        .parse()?;
    Ok(Outcome {
        records,
        bytes: records * size as u64,
        secs: records as f64 / rate,
        latency: None,
    })
}

pub(crate) async fn consume(
    bootstrap: &str,
    topic: &str,
    records: u64,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let group = format!("bench-java-{}", std::process::id());
    let out = java("org.apache.kafka.tools.ConsumerPerformance")?
        .args([
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--group",
            &group,
        ])
        .args(["--messages", &records.to_string(), "--timeout", "60000"])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "ConsumerPerformance failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    // CSV: start, end, MB, MB/s, nMsg, nMsg/s, rebalance ms, fetch ms, fetch MB/s, fetch nMsg/s.
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.split(", ").count() >= 10)
        .ok_or("no summary line")?;
    let fields: Vec<&str> = line.split(", ").collect();
    let consumed: f64 = fields[4].trim().parse()?;
    let fetch_ms: f64 = fields[7].trim().parse()?;
    let mb: f64 = fields[2].trim().parse()?;
    Ok(Outcome {
        records: consumed as u64,
        bytes: (mb * 1024.0 * 1024.0) as u64,
        secs: fetch_ms / 1000.0,
        latency: None,
    })
}

/// The Java client's latency probe (`bench/java/LatencyProbe.java`, run from source): a
/// `KafkaConsumer` with the same fetch wait as the other probes, its latencies taken as records
/// come out of `poll`.
pub(crate) async fn latency(
    bootstrap: &str,
    topic: &str,
    records: u64,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("java/LatencyProbe.java");
    let group = format!("bench-java-latency-{}", std::process::id());
    let mut child = java(&source.to_string_lossy())?
        .args([bootstrap, topic, &records.to_string(), &group])
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut result = None;
    while let Some(line) = lines.next_line().await? {
        if line == "ready" {
            crate::announce_ready();
        } else if let Some(rest) = line.strip_prefix("result ") {
            let v: Vec<u64> = rest
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()?;
            if v.len() != 7 {
                return Err(format!("LatencyProbe: unexpected result line {line:?}").into());
            }
            result = Some(Outcome {
                records: v[0],
                bytes: 0,
                secs: 0.0,
                latency: Some(Latency {
                    end_to_end: [v[1], v[2], v[3]],
                    consumer: [v[4], v[5], v[6]],
                    producer: [0; 3],
                }),
            });
        }
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        return Err(format!(
            "LatencyProbe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(result.ok_or("LatencyProbe printed no result")?)
}
