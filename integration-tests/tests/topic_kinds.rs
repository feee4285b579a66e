//! Topics whose offsets do not all carry a record for the consumer: transactional topics (control
//! markers, and aborted transactions left out by read_committed) and compacted topics (offset gaps
//! left by the log cleaner). In every dispatch mode, a fully consumed partition must commit its log
//! end offset, so `kafka-consumer-groups --describe` and `kafkit group describe` both show lag 0,
//! and the consumer hands out exactly the records a Java read_committed consumer would.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kafkit::consumer::{ConsumerBuilder, DispatchMode, OffsetReset};
use kafkit_integration_tests::kafkit_bin;
use kafkit_integration_tests::support::{
    client, eventually, eventually_async, kafka_lag, test_group,
};
use kafkit_testkit::{create_topic, java_source, random_name, shared};
use parking_lot::Mutex;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(90);
const PARTITIONS: i32 = 3;

const MODES: [DispatchMode; 3] = [
    DispatchMode::PartitionOrdered,
    DispatchMode::KeyOrdered { max_in_flight: 16 },
    DispatchMode::Unordered { max_in_flight: 16 },
];

fn topic_kinds() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("java/TopicKinds.java")
}

/// Runs `TopicKinds.java` and returns the number on its last line ("<word> <n> ...").
async fn topic_kinds_java(args: &[&str]) -> usize {
    let out = java_source(&topic_kinds(), args, Duration::from_secs(180))
        .await
        .unwrap();
    assert!(out.success, "TopicKinds {args:?} failed: {}", out.stderr);
    let last = out.stdout.lines().last().unwrap_or_default().to_owned();
    last.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected TopicKinds output: {}", out.stdout))
}

/// (partition, offset, value) of every record handled.
type Seen = Arc<Mutex<Vec<(i32, i64, String)>>>;

/// Consumes `topic` in `mode` as group `group` until `expected` records were handled and the group's
/// committed offsets reach the log end of every partition; then checks lag 0 as Kafka's tool and
/// `kafkit group describe` report it. Returns what was handled.
async fn consume_to_the_end(
    bootstrap: &str,
    topic: &str,
    group: &str,
    mode: DispatchMode,
    expected: usize,
) -> Vec<(i32, i64, String)> {
    let consumer = ConsumerBuilder::new(client(bootstrap), test_group(group, topic))
        .dispatch(mode)
        .auto_offset_reset(OffsetReset::Earliest)
        .commit_interval(Duration::from_millis(200))
        .revoke_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let stop = consumer.shutdown_handle();
    let seen: Seen = Arc::default();
    let handled = Arc::clone(&seen);
    let run = tokio::spawn(consumer.run(move |record| {
        let handled = Arc::clone(&handled);
        async move {
            let value = String::from_utf8_lossy(record.value().unwrap_or_default()).into_owned();
            handled
                .lock()
                .push((record.partition(), record.offset(), value));
            Ok::<_, std::io::Error>(())
        }
    }));
    eventually(
        LIMIT,
        &format!("{expected} records handled ({mode:?})"),
        || seen.lock().len() >= expected,
    )
    .await;

    // Kafka's own view: every partition committed at its log end offset, lag 0.
    eventually_async(LIMIT, Duration::from_millis(500), || async {
        let (rows, raw) = kafka_lag(bootstrap, group, topic).await;
        let at_end = rows.len() == PARTITIONS as usize
            && rows
                .values()
                .all(|&(committed, end, lag)| committed == end && lag == 0);
        if at_end {
            return Ok(());
        }
        Err(format!(
            "{mode:?}: the group never reached lag 0 (Kafka's view):\n{raw}"
        ))
    })
    .await;

    // kafkit's view of the same group.
    let out = tokio::process::Command::new(kafkit_bin())
        .args([
            "group",
            "describe",
            "--bootstrap-server",
            bootstrap,
            "--group-id",
            group,
            "--json",
        ])
        .env_remove("KAFKA_BOOTSTRAP")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "kafkit group describe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["total_lag"], 0, "{mode:?}: {doc}");
    for partition in doc["partitions"].as_array().unwrap() {
        assert_eq!(partition["lag"], 0, "{mode:?}: {doc}");
        assert_eq!(partition["committed"], partition["end"], "{mode:?}: {doc}");
    }

    stop.shutdown();
    tokio::time::timeout(LIMIT, run)
        .await
        .expect("shutdown in time")
        .unwrap()
        .unwrap();
    seen.lock().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_topic_commits_past_markers_and_aborted_records_in_every_mode() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("txn");
    create_topic(&bootstrap, &topic, PARTITIONS, 1)
        .await
        .unwrap();
    // 7 transactions of 20 records per partition: t = 1 and 4 aborted, the rest committed; the log
    // ends with a COMMIT marker on every partition.
    let committed = topic_kinds_java(&["transactions", &bootstrap, &topic, "7", "20"]).await;
    assert_eq!(committed, 5 * 20 * PARTITIONS as usize);

    for mode in MODES {
        let group = random_name("txn-g");
        let seen = consume_to_the_end(&bootstrap, &topic, &group, mode, committed).await;
        let aborted: Vec<_> = seen
            .iter()
            .filter(|(_, _, v)| v.starts_with("aborted"))
            .collect();
        assert!(
            aborted.is_empty(),
            "{mode:?}: aborted records handed out: {aborted:?}"
        );
        let distinct: BTreeSet<(i32, i64)> = seen.iter().map(|&(p, o, _)| (p, o)).collect();
        assert_eq!(
            distinct.len(),
            committed,
            "{mode:?}: every committed record once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_topic_with_offset_gaps_ends_at_lag_zero_in_every_mode() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("compacted");
    // 20 keys written 15 times per partition, each round after a key of its own; the cleaner leaves
    // gaps where superseded values were, between the keys written once.
    let remaining = topic_kinds_java(&[
        "compacted",
        &bootstrap,
        &topic,
        &PARTITIONS.to_string(),
        "20",
        "15",
    ])
    .await;
    let written = 21 * 15 * PARTITIONS as usize;
    assert!(
        remaining < written,
        "the log cleaner did not run: {remaining} of {written} records remain"
    );

    for mode in MODES {
        let group = random_name("compacted-g");
        // The cleaner may still remove records while this runs: wait for one, then for the log end.
        let seen = consume_to_the_end(&bootstrap, &topic, &group, mode, 1).await;
        assert!(
            seen.len() <= remaining,
            "{mode:?}: {} records from {remaining}",
            seen.len()
        );
        let mut offsets: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for &(p, o, _) in &seen {
            offsets.entry(p).or_default().push(o);
        }
        let gaps = offsets
            .values_mut()
            .map(|o| {
                o.sort_unstable();
                o.windows(2).filter(|w| w[1] > w[0] + 1).count()
            })
            .sum::<usize>();
        assert!(
            gaps > 0,
            "{mode:?}: the consumed offsets have no gaps: {offsets:?}"
        );
        // Every key written once and the latest value of every other key are there (the cleaner
        // never removes them).
        for p in 0..PARTITIONS {
            let latest = seen
                .iter()
                .filter(|(partition, _, v)| *partition == p && v == "14")
                .count();
            assert_eq!(
                latest, 20,
                "{mode:?}: partition {p}: the latest value of every key"
            );
        }
    }
}
