//! The share-group benchmark: records/s of 1, 4 and 8 share consumers in one share group on a
//! 2-partition topic, kafkit against Kafka's `ShareConsumerPerformance` (kafka-tools) with as many
//! threads, on the same topic in the same run.
//!
//! Everything kafkit runs in the runner's process: the members are `ShareConsumer`s as tasks, each
//! with a pass-through handler (accept). A run counts from the members' start (joining included, as
//! the Java tool counts from before its `subscribe`) until they have acquired every record of the
//! topic, which is what the Java tool counts (records its `poll` returned, implicitly accepted).
//! Each run uses a fresh share group set to `share.auto.offset.reset=earliest`, so both read the
//! same records from the start.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use kafkit::admin::{self, NewTopic};
use kafkit::share::ShareConsumerBuilder;
use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord};

use crate::median;

/// Partitions of the topic: fewer than most member counts, which is what share groups are for.
const PARTITIONS: i32 = 2;
/// Member counts measured.
const MEMBERS: [usize; 3] = [1, 4, 8];
/// Give up on a run after this long.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs the benchmark with `records` records of 100 B and returns its markdown section.
pub(crate) async fn run(
    client: &ClientConfig,
    bootstrap: &str,
    records: u64,
    rounds: usize,
) -> Result<String, Box<dyn std::error::Error>> {
    let topic = format!("bench-share-{}", std::process::id());
    admin::create_topics(client, &[NewTopic::new(&topic).partitions(PARTITIONS)]).await?;
    let producer = ProducerBuilder::new(client.clone()).build().await?;
    let value = vec![b'x'; 100];
    let mut sends = Vec::with_capacity(10_000);
    for i in 0..records {
        let record = ProducerRecord::new(&topic, value.clone()).partition((i % 2) as i32);
        sends.push(producer.send(record));
        if sends.len() == 10_000 || i + 1 == records {
            futures::future::try_join_all(sends.drain(..)).await?;
        }
    }

    let mut section = String::new();
    let _ = writeln!(
        section,
        "## Share groups (KIP-932): {records} records of 100 B, {PARTITIONS} partitions\n\n\
         Records/s from the members' start (joining included) until every record was acquired: \
         kafkit's handler accepts each, Java's tool counts the records its polls returned \
         (implicitly accepted). Median of {rounds} rounds after a warm-up (min–max).\n\n\
         | members | kafkit | Java ShareConsumerPerformance | kafkit / Java |\n| --- | --- | --- | --- |"
    );
    for members in MEMBERS {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 0..=rounds {
            let k = kafkit_run(client, &topic, records, members, round).await?;
            let j = java_run(client, bootstrap, &topic, records, members, round).await?;
            eprintln!("share round {round}, {members} members: kafkit {k:.0}/s, Java {j:.0}/s");
            if round > 0 {
                ours.push(k);
                theirs.push(j);
            }
        }
        let range = |v: &[f64]| {
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(0.0, f64::max);
            format!("{min:.0}–{max:.0}")
        };
        let (k, j) = (median(ours.clone()), median(theirs.clone()));
        let _ = writeln!(
            section,
            "| {members} | {k:.0} ({}) | {j:.0} ({}) | {:.2} |",
            range(&ours),
            range(&theirs),
            k / j
        );
    }
    section.push('\n');
    admin::delete_topics(client, &[topic]).await?;
    Ok(section)
}

async fn fresh_group(
    client: &ClientConfig,
    who: &str,
    members: usize,
    round: usize,
) -> Result<String, Box<dyn std::error::Error>> {
    let group = format!("bench-share-{who}-{members}-{round}-{}", std::process::id());
    admin::alter_group_configs(client, &group, &[("share.auto.offset.reset", "earliest")]).await?;
    Ok(group)
}

/// One kafkit run: `members` share consumers as tasks; records/s.
async fn kafkit_run(
    client: &ClientConfig,
    topic: &str,
    records: u64,
    members: usize,
    round: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let group = fresh_group(client, "kafkit", members, round).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut stops = Vec::new();
    let mut counters = Vec::new();
    for _ in 0..members {
        let consumer =
            ShareConsumerBuilder::new(client.clone(), group.as_str(), [topic]).build()?;
        stops.push(consumer.shutdown_handle());
        counters.push(consumer.counters());
        tasks.push(tokio::spawn(
            consumer.run(|_record| async { Ok::<_, std::io::Error>(()) }),
        ));
    }
    let acquired = || counters.iter().map(|c| c.get().acquired).sum::<u64>();
    while acquired() < records {
        if started.elapsed() > RUN_TIMEOUT {
            return Err(format!(
                "kafkit: {} of {records} records in {RUN_TIMEOUT:?}",
                acquired()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    for stop in &stops {
        stop.shutdown();
    }
    for task in tasks {
        task.await??;
    }
    Ok(records as f64 / secs)
}

/// One Java run: `ShareConsumerPerformance --threads members`; its records/s (`nMsg.sec`).
async fn java_run(
    client: &ClientConfig,
    bootstrap: &str,
    topic: &str,
    records: u64,
    members: usize,
    round: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let group = fresh_group(client, "java", members, round).await?;
    let out = crate::java_side::java("org.apache.kafka.tools.ShareConsumerPerformance")?
        .args([
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--group",
            &group,
        ])
        .args([
            "--num-records",
            &records.to_string(),
            "--threads",
            &members.to_string(),
        ])
        .args(["--timeout", "30000"])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "ShareConsumerPerformance failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    // start.time, end.time, data.consumed.in.MB, MB.sec, nMsg.sec, data.consumed.in.nMsg, fetch.time.ms
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.split(", ").count() == 7)
        .ok_or_else(|| format!("no summary line in: {stdout}"))?;
    let fields: Vec<&str> = line.split(", ").collect();
    let consumed: u64 = fields[5].trim().parse()?;
    if consumed < records {
        return Err(format!("ShareConsumerPerformance read {consumed} of {records}").into());
    }
    Ok(fields[4].trim().parse()?)
}
