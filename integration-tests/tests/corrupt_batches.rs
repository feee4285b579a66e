//! A record batch that cannot be decoded, served by a real broker: the test flips a byte inside one
//! batch of a partition's log segment on disk (as disk or memory corruption would), so the broker
//! serves it as it is and the batch fails its CRC-32C check in the consumer. With the default
//! `Skip` policy the partition keeps moving: every other record is processed and committed, the
//! skipped batch is counted in metrics and named in health; with `Stop` the consumer stops with an
//! error naming the offset and commits nothing past it.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kafkit::consumer::{ConsumerBuilder, CorruptBatchPolicy, DispatchMode, OffsetReset};
use kafkit::metrics::Metrics;
use kafkit::resilience::HealthStatus;
use kafkit::{Error, ProducerBuilder, ProducerRecord};
use kafkit_integration_tests::support::{
    client, committed, eventually, eventually_async, test_group,
};
use kafkit_testkit::{TestKafka, create_topic, random_name, shared};
use parking_lot::Mutex;

const LIMIT: Duration = Duration::from_secs(60);
const RECORDS: i64 = 30;
const CORRUPT: i64 = 15;

/// The first log segment of `topic` partition 0 under `dir`.
fn segment(dir: &Path, topic: &str) -> PathBuf {
    let wanted = format!("{topic}-0");
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == wanted.as_str()) {
                    return path.join("00000000000000000000.log");
                }
                stack.push(path);
            }
        }
    }
    panic!("no log directory for {wanted} under {}", dir.display());
}

/// Flips the last byte (inside the last record's value) of the batch whose base offset is `offset`.
fn corrupt_batch(segment: &Path, offset: i64) {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment)
        .unwrap();
    let mut log = Vec::new();
    file.read_to_end(&mut log).unwrap();
    let mut at = 0;
    while at + 12 <= log.len() {
        let base = i64::from_be_bytes(log[at..at + 8].try_into().unwrap());
        let length = i32::from_be_bytes(log[at + 8..at + 12].try_into().unwrap()) as usize;
        let end = at + 12 + length;
        if base == offset {
            let last = end - 1;
            file.seek(SeekFrom::Start(last as u64)).unwrap();
            file.write_all(&[log[last] ^ 0x5a]).unwrap();
            file.sync_all().unwrap();
            return;
        }
        at = end;
    }
    panic!("no batch at offset {offset} in {}", segment.display());
}

/// A topic of one partition holding `RECORDS` records, one batch each, with the batch at `CORRUPT`
/// corrupted on the broker's disk. `None` on an external cluster, whose disk the test cannot reach.
async fn topic_with_a_corrupt_batch(kafka: &TestKafka) -> Option<(String, String)> {
    let TestKafka::Local(local) = kafka else {
        eprintln!("skipped: the broker's log files are not reachable on an external cluster");
        return None;
    };
    let bootstrap = kafka.bootstrap();
    let topic = random_name("corrupt");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    for i in 0..RECORDS {
        // One send at a time: every record is a batch of its own.
        let d = producer
            .send(ProducerRecord::new(&topic, format!("value-{i}")).partition(0))
            .await
            .unwrap();
        assert_eq!(d.offset, i);
    }
    corrupt_batch(&segment(local.data_dir(), &topic), CORRUPT);
    Some((bootstrap, topic))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_batch_is_skipped_counted_and_reported_and_the_partition_moves_on() {
    let kafka = shared().await.unwrap();
    let Some((bootstrap, topic)) = topic_with_a_corrupt_batch(kafka).await else {
        return;
    };
    let group = random_name("corrupt-g");
    let metrics = Metrics::default();
    let consumer = ConsumerBuilder::new(client(&bootstrap), test_group(&group, &topic))
        .dispatch(DispatchMode::Unordered { max_in_flight: 8 })
        .auto_offset_reset(OffsetReset::Earliest)
        .commit_interval(Duration::from_millis(200))
        .revoke_timeout(Duration::from_secs(10))
        .metrics(metrics.clone())
        .build()
        .await
        .unwrap();
    let health = consumer.health_handle();
    let stop = consumer.shutdown_handle();
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let handled = Arc::clone(&seen);
    let run = tokio::spawn(consumer.run(move |record| {
        handled.lock().insert(record.offset());
        async { Ok::<_, std::io::Error>(()) }
    }));
    eventually(LIMIT, "every good record handled", || {
        seen.lock().len() == RECORDS as usize - 1
    })
    .await;
    eventually_async(LIMIT, Duration::from_millis(200), || async {
        let commits = committed(&bootstrap, &group, &topic, 1).await;
        if commits.get(&0) != Some(&RECORDS) {
            return Err(format!(
                "never committed past the corrupt batch: {commits:?}"
            ));
        }
        Ok(())
    })
    .await;
    let expected: BTreeSet<i64> = (0..RECORDS).filter(|&o| o != CORRUPT).collect();
    assert_eq!(*seen.lock(), expected, "every record but the corrupt one");

    let report = health.report();
    let records = report.checks.iter().find(|c| c.name == "records").unwrap();
    assert_eq!(records.status, HealthStatus::Degraded, "{report:?}");
    assert!(
        records
            .detail
            .contains(&format!("{topic}-0 offsets {CORRUPT}..{}", CORRUPT + 1)),
        "{}",
        records.detail
    );
    assert!(records.detail.contains("CRC"), "{}", records.detail);
    let counters = metrics.publish().topic(&topic).unwrap().counters;
    assert_eq!(counters.corrupt_batches, 1);

    stop.shutdown();
    tokio::time::timeout(LIMIT, run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_policy_stops_at_a_corrupt_batch_and_commits_nothing_past_it() {
    let kafka = shared().await.unwrap();
    let Some((bootstrap, topic)) = topic_with_a_corrupt_batch(kafka).await else {
        return;
    };
    let group = random_name("corrupt-stop-g");
    let consumer = ConsumerBuilder::new(client(&bootstrap), test_group(&group, &topic))
        .auto_offset_reset(OffsetReset::Earliest)
        .commit_interval(Duration::from_millis(200))
        .revoke_timeout(Duration::from_secs(10))
        .on_corrupt_batch(CorruptBatchPolicy::Stop)
        .build()
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let handled = Arc::clone(&seen);
    let result = tokio::time::timeout(
        LIMIT,
        consumer.run(move |record| {
            handled.lock().insert(record.offset());
            async { Ok::<_, std::io::Error>(()) }
        }),
    )
    .await
    .expect("the consumer stops by itself");
    match result {
        Err(Error::CorruptBatch {
            partition, offset, ..
        }) => {
            assert_eq!(partition, format!("{topic}-0"));
            assert_eq!(offset, CORRUPT);
        }
        other => panic!("expected Error::CorruptBatch, got {other:?}"),
    }
    assert!(
        seen.lock().iter().all(|&o| o < CORRUPT),
        "{:?}",
        seen.lock()
    );
    let committed = committed(&bootstrap, &group, &topic, 1).await;
    assert!(
        committed.get(&0).is_none_or(|&c| c <= CORRUPT),
        "committed past the corrupt batch: {committed:?}"
    );
}
