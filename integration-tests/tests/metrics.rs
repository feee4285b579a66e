//! Consumer lag in kafkit's metrics against Kafka's own view of the group: the per-partition numbers
//! of a [`MetricsSnapshot`](kafkit::metrics::MetricsSnapshot) must be the ones
//! `kafka-consumer-groups --describe` prints (CURRENT-OFFSET, LOG-END-OFFSET, LAG).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kafkit::consumer::{ConsumerBuilder, DispatchMode, OffsetReset};
use kafkit::group::GroupConfig;
use kafkit::metrics::{Metrics, MetricsConfig};
use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord};
use kafkit_integration_tests::support::{LagRow as Row, kafka_lag};
use kafkit_testkit::{TestKafka, create_topic, random_name, shared};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

const PARTITIONS: i32 = 12;
const PER_PARTITION: i64 = 250;

/// Records below this offset of `partition` are processed at once; the one at it blocks until the
/// gate opens, holding its partition (`PartitionOrdered`). Different per partition, so a mix-up of
/// partitions between kafkit and Kafka cannot go unnoticed.
fn threshold(partition: i32) -> i64 {
    20 + 15 * i64::from(partition)
}

/// Awaits `fut` for at most `limit`, panicking with `what` (and the broker's last log lines) past it.
async fn within<T>(
    kafka: &TestKafka,
    limit: Duration,
    what: &str,
    fut: impl Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!(
            "timed out after {limit:?}: {what}\nbroker log tail:\n{}",
            broker_log(kafka)
        ),
    }
}

fn broker_log(kafka: &TestKafka) -> String {
    match kafka {
        TestKafka::Local(k) => k.node().log_tail(40),
        TestKafka::External(b) => format!("(external cluster {b}: no log)"),
    }
}

/// kafkit's published lag for `group` on `topic`, per partition.
fn kafkit_lag(metrics: &Metrics, group: &str, topic: &str) -> BTreeMap<i32, Row> {
    metrics
        .publish()
        .partitions
        .iter()
        .filter(|p| &*p.group == group && &*p.topic == topic)
        .map(|p| (p.partition, (p.committed_offset, p.high_watermark, p.lag)))
        .collect()
}

/// Polls kafkit's metrics and Kafka's describe output until both equal `expected` or `limit` passes,
/// then asserts that each does. Kafka's side changes when kafkit's commit lands; kafkit's one commit
/// interval later, when the engine samples lag with the new committed offset.
async fn assert_lag_converges(
    kafka: &TestKafka,
    metrics: &Metrics,
    group: &str,
    topic: &str,
    expected: &BTreeMap<i32, Row>,
    limit: Duration,
) {
    let bootstrap = kafka.bootstrap();
    let deadline = Instant::now() + limit;
    loop {
        let ours = kafkit_lag(metrics, group, topic);
        let (theirs, raw) = kafka_lag(&bootstrap, group, topic).await;
        let done = ours == *expected && theirs == *expected;
        if done || Instant::now() >= deadline {
            assert_eq!(
                &theirs,
                expected,
                "Kafka's view (committed, log end, lag) per partition\n{raw}\nbroker log tail:\n{}",
                broker_log(kafka)
            );
            assert_eq!(
                &ours, expected,
                "kafkit's metrics (committed, high watermark, lag) per partition; Kafka agreed with \
                 the expectation:\n{raw}"
            );
            let sum: i64 = expected.values().map(|r| r.2).sum();
            let snapshot = metrics.snapshot();
            let group_lag = snapshot.group(group).expect("the group has lag entries");
            assert_eq!((group_lag.lag, group_lag.partitions), (sum, expected.len()));
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_partition_lag_matches_kafka_consumer_groups_describe() {
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("lag");
    let group_id = random_name("lag-group");
    within(
        kafka,
        Duration::from_secs(60),
        "creating the topic",
        create_topic(&bootstrap, &topic, PARTITIONS, 1),
    )
    .await
    .unwrap();
    let client = ClientConfig::new([&bootstrap]).unwrap();

    // The backlog: 250 records on each of the 12 partitions, 3000 in all.
    let producer = within(
        kafka,
        Duration::from_secs(30),
        "building the producer",
        ProducerBuilder::new(client.clone()).build(),
    )
    .await
    .unwrap();
    let sends = (0..PARTITIONS).flat_map(|p| {
        let producer = producer.clone();
        let topic = topic.clone();
        (0..PER_PARTITION).map(move |i| {
            let producer = producer.clone();
            let record = ProducerRecord::new(&topic, format!("{p}-{i}")).partition(p);
            async move { producer.send(record).await.unwrap() }
        })
    });
    let deliveries = within(
        kafka,
        Duration::from_secs(60),
        "producing the backlog",
        futures::future::join_all(sends),
    )
    .await;
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for d in &deliveries {
        let end = ends.entry(d.partition).or_default();
        *end = (*end).max(d.offset + 1);
    }
    assert_eq!(
        ends,
        (0..PARTITIONS).map(|p| (p, PER_PARTITION)).collect(),
        "a fresh topic: every partition ends at {PER_PARTITION}"
    );

    let metrics = Metrics::new(MetricsConfig::default());
    let consumer = within(
        kafka,
        Duration::from_secs(30),
        "building the consumer",
        ConsumerBuilder::new(
            client,
            GroupConfig::new(&group_id, [&topic])
                .session_timeout(Duration::from_secs(10))
                .heartbeat_interval(Duration::from_millis(500))
                .rebalance_timeout(Duration::from_secs(30)),
        )
        .dispatch(DispatchMode::PartitionOrdered)
        .auto_offset_reset(OffsetReset::Earliest)
        .commit_interval(Duration::from_millis(300))
        .revoke_timeout(Duration::from_secs(10))
        .shutdown_timeout(Duration::from_secs(10))
        .metrics(metrics.clone())
        .build(),
    )
    .await
    .unwrap();
    let stop = consumer.shutdown_handle();
    let (open_gate, gate) = watch::channel(false);
    // Per partition: records processed, and whether its blocking record is waiting at the gate.
    let progress: Arc<Mutex<BTreeMap<i32, (i64, bool)>>> = Arc::default();
    let run = tokio::spawn(consumer.run({
        let progress = Arc::clone(&progress);
        move |record| {
            let mut gate = gate.clone();
            let progress = Arc::clone(&progress);
            async move {
                let p = record.partition();
                if record.offset() >= threshold(p) && !*gate.borrow() {
                    progress.lock().entry(p).or_default().1 = true;
                    gate.wait_for(|open| *open).await?;
                }
                progress.lock().entry(p).or_default().0 += 1;
                Ok::<_, watch::error::RecvError>(())
            }
        }
    }));

    // Every partition processed exactly its records below the threshold and is now held there.
    let held: BTreeMap<i32, (i64, bool)> =
        (0..PARTITIONS).map(|p| (p, (threshold(p), true))).collect();
    within(
        kafka,
        Duration::from_secs(60),
        "processing up to the thresholds",
        async {
            while *progress.lock() != held {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;

    // Committed = threshold, log end = 250, lag = the rest, on both sides.
    let expected: BTreeMap<i32, Row> = (0..PARTITIONS)
        .map(|p| {
            let t = threshold(p);
            (p, (t, PER_PARTITION, PER_PARTITION - t))
        })
        .collect();
    assert_lag_converges(
        kafka,
        &metrics,
        &group_id,
        &topic,
        &expected,
        Duration::from_secs(60),
    )
    .await;
    // While held, nothing past a threshold was processed.
    assert_eq!(*progress.lock(), held);

    // Let it catch up: lag drops to 0 everywhere, in both views.
    open_gate.send(true).unwrap();
    let caught_up: BTreeMap<i32, Row> = (0..PARTITIONS)
        .map(|p| (p, (PER_PARTITION, PER_PARTITION, 0)))
        .collect();
    assert_lag_converges(
        kafka,
        &metrics,
        &group_id,
        &topic,
        &caught_up,
        Duration::from_secs(60),
    )
    .await;

    stop.shutdown();
    let report = within(
        kafka,
        Duration::from_secs(30),
        "the consumer's shutdown",
        run,
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!report.timed_out, "{report:?}");
    assert!(report.uncommitted.is_empty(), "{report:?}");
    let processed: i64 = progress.lock().values().map(|(n, _)| n).sum();
    assert_eq!(processed, i64::from(PARTITIONS) * PER_PARTITION);
}

/// The log end offset must keep moving in the metrics while the consumer is stuck: that is when lag
/// matters. Once the records of a blocked partition fill `buffer_bytes` the fetcher waits for budget
/// and sends no fetches; it looks the end offset up meanwhile, so the metrics follow Kafka's growing
/// log end (lag 140 here, not the 40 a fetch-only view would freeze at).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lag_follows_the_log_end_while_fetching_is_backpressured() {
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("lag-stuck");
    let group_id = random_name("lag-stuck-group");
    let limit = Duration::from_secs(60);
    within(
        kafka,
        limit,
        "creating the topic",
        create_topic(&bootstrap, &topic, 1, 1),
    )
    .await
    .unwrap();
    let client = ClientConfig::new([&bootstrap]).unwrap();
    let producer = within(
        kafka,
        limit,
        "building the producer",
        ProducerBuilder::new(client.clone()).build(),
    )
    .await
    .unwrap();
    let produce = |n: usize| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            for _ in 0..n {
                // 200-byte records: a few of them fill the 2 KiB buffer below.
                producer
                    .send(ProducerRecord::new(&topic, vec![b'x'; 200]).partition(0))
                    .await
                    .unwrap();
            }
        }
    };
    within(kafka, limit, "producing the backlog", produce(50)).await;

    let metrics = Metrics::new(MetricsConfig::default());
    let consumer = within(
        kafka,
        limit,
        "building the consumer",
        ConsumerBuilder::new(client, GroupConfig::new(&group_id, [&topic]))
            .dispatch(DispatchMode::PartitionOrdered)
            .auto_offset_reset(OffsetReset::Earliest)
            .commit_interval(Duration::from_millis(300))
            .shutdown_timeout(Duration::from_secs(1))
            .max_partition_fetch_bytes(1024)
            .buffer_bytes(2048)
            .metrics(metrics.clone())
            .build(),
    )
    .await
    .unwrap();
    let stop = consumer.shutdown_handle();
    // Offset 10 never finishes: the partition is held there, and what was fetched behind it stays
    // buffered.
    let run = tokio::spawn(consumer.run(|record| async move {
        if record.offset() >= 10 {
            std::future::pending::<()>().await;
        }
        Ok::<_, std::io::Error>(())
    }));
    let stuck = |end: i64| BTreeMap::from([(0, (10, end, end - 10))]);
    assert_lag_converges(kafka, &metrics, &group_id, &topic, &stuck(50), limit).await;

    within(kafka, limit, "producing more", produce(100)).await;
    assert_lag_converges(
        kafka,
        &metrics,
        &group_id,
        &topic,
        &stuck(150),
        Duration::from_secs(20),
    )
    .await;

    stop.shutdown();
    let report = within(kafka, limit, "the consumer's shutdown", run)
        .await
        .unwrap()
        .unwrap();
    assert!(report.timed_out, "offset 10 never finishes: {report:?}");
}
