//! Handlers that panic, against a real broker: in every dispatch mode and the batch API a panic is a
//! handler error (retried, then committed), a record that always panics goes to the dead-letter
//! topic with headers naming the panic, and a stream user's task that panics hands its record back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kafkit::consumer::{
    ConsumedRecord, Consumer, ConsumerBuilder, DispatchMode, OffsetReset, ShutdownHandle,
    ShutdownReport,
};
use kafkit::metrics::Metrics;
use kafkit::resilience::{
    BackoffPolicy, CircuitBreakerPolicy, DeadLetterHeaders, DeadLetterPolicy, RetryPolicy,
};
use kafkit::{Producer, ProducerBuilder, ProducerRecord};
use kafkit_integration_tests::support::{client, committed, test_group};
use kafkit_testkit::{create_topic, random_name, shared};
use parking_lot::Mutex;
use rskafka::client::ClientBuilder;
use rskafka::client::partition::UnknownTopicHandling;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const PARTITIONS: i32 = 4;
const RECORDS: usize = 600;

/// Handler calls per (partition, offset).
type Attempts = Arc<Mutex<HashMap<(i32, i64), usize>>>;

/// The records the handlers panic on, at their first attempt: every 50th offset from 7 of each
/// partition.
fn panics_first(r: &ConsumedRecord) -> bool {
    r.offset() % 50 == 7
}

/// A topic of [`PARTITIONS`] partitions holding [`RECORDS`] keyed records, spread evenly; returns
/// its name, the producer, and the end offset of each partition.
async fn topic_with_records(
    bootstrap: &str,
    prefix: &str,
) -> (String, Producer, BTreeMap<i32, i64>) {
    let topic = random_name(prefix);
    create_topic(bootstrap, &topic, PARTITIONS, 1)
        .await
        .unwrap();
    let producer = ProducerBuilder::new(client(bootstrap))
        .build()
        .await
        .unwrap();
    let sends = (0..RECORDS).map(|i| {
        let producer = producer.clone();
        let record = ProducerRecord::new(&topic, i.to_string())
            .key(format!("k{}", i % 40))
            .partition(i as i32 % PARTITIONS);
        async move { producer.send(record).await.unwrap() }
    });
    let mut ends = BTreeMap::new();
    let sent = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(sends))
        .await
        .expect("producing timed out");
    for d in sent {
        let end = ends.entry(d.partition).or_insert(0);
        *end = (*end).max(d.offset + 1);
    }
    assert_eq!(
        ends.len(),
        PARTITIONS as usize,
        "every partition has records"
    );
    assert!(
        ends.values().all(|end| *end > 57),
        "every partition has two records that panic: {ends:?}"
    );
    (topic, producer, ends)
}

/// Three attempts 10 ms apart, and a breaker that resets within a second.
fn builder(bootstrap: &str, group_id: &str, topic: &str, mode: DispatchMode) -> ConsumerBuilder {
    let backoff = BackoffPolicy::new(
        Duration::from_millis(10),
        Duration::from_millis(50),
        2.0,
        0.0,
    )
    .unwrap();
    ConsumerBuilder::new(client(bootstrap), test_group(group_id, topic))
        .dispatch(mode)
        .auto_offset_reset(OffsetReset::Earliest)
        .commit_interval(Duration::from_millis(200))
        .revoke_timeout(Duration::from_secs(10))
        .retry_policy(RetryPolicy::new(3, backoff).unwrap())
        .circuit_breaker(Some(
            CircuitBreakerPolicy::new(5, Duration::from_secs(1)).unwrap(),
        ))
}

/// Waits (at most 60 s) until the group's committed offsets are the end offsets: lag 0. Returns
/// the last offsets seen when they never get there.
async fn committed_to_the_end(
    bootstrap: &str,
    group_id: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
) -> Result<(), BTreeMap<i32, i64>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = tokio::time::timeout(
            Duration::from_secs(10),
            committed(bootstrap, group_id, topic, PARTITIONS),
        )
        .await
        .unwrap_or_default();
        if last == *ends {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for [`committed_to_the_end`], then shuts the consumer down and returns its report.
async fn until_committed_to_the_end(
    bootstrap: &str,
    group_id: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
    consumer: (ShutdownHandle, JoinHandle<kafkit::Result<ShutdownReport>>),
) -> ShutdownReport {
    let (stop, run) = consumer;
    if let Err(last) = committed_to_the_end(bootstrap, group_id, topic, ends).await {
        panic!(
            "committed offsets {last:?} never reached the end offsets {ends:?}: a record never \
             completed"
        );
    }
    stop.shutdown();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("shutdown timed out")
        .unwrap()
        .unwrap()
}

/// Every record was handled; the ones [`panics_first`] picks twice (the panic, then the retry),
/// the others once; and the metrics counted one panic for each of them.
fn assert_each_panic_retried_once(
    attempts: &Attempts,
    ends: &BTreeMap<i32, i64>,
    metrics: &Metrics,
) {
    let attempts = attempts.lock();
    let mut panicking = 0;
    for (&p, &end) in ends {
        for o in 0..end {
            let expected = if o % 50 == 7 { 2 } else { 1 };
            panicking += usize::from(expected == 2);
            assert_eq!(
                attempts.get(&(p, o)).copied(),
                Some(expected),
                "partition {p} offset {o}"
            );
        }
    }
    let totals = metrics.publish().totals;
    assert_eq!(totals.panicked, panicking as u64, "{totals:?}");
    assert!(totals.failed >= totals.panicked, "{totals:?}");
}

/// Counts the attempt of `r` and returns its number.
fn attempt(attempts: &Attempts, r: &ConsumedRecord) -> usize {
    let mut attempts = attempts.lock();
    let n = attempts.entry((r.partition(), r.offset())).or_insert(0);
    *n += 1;
    *n
}

/// Runs a consumer in `mode` whose handler panics on the first attempt of the records
/// [`panics_first`] picks: in the call itself on even partitions, in the future it returns on odd ones.
async fn panicking_handler_in(mode: DispatchMode) {
    let bootstrap = shared().await.unwrap().bootstrap();
    let (topic, _producer, ends) = topic_with_records(&bootstrap, "panics").await;
    let group_id = random_name("g");
    let metrics = Metrics::default();
    let consumer = builder(&bootstrap, &group_id, &topic, mode)
        .metrics(metrics.clone())
        .build()
        .await
        .unwrap();
    let stop = consumer.shutdown_handle();
    let attempts = Attempts::default();
    let run = tokio::spawn(consumer.run({
        let attempts = Arc::clone(&attempts);
        move |r: ConsumedRecord| {
            let first = attempt(&attempts, &r) == 1;
            if first && panics_first(&r) && r.partition() % 2 == 0 {
                panic!("panic in the call at {}-{}", r.partition(), r.offset());
            }
            async move {
                tokio::task::yield_now().await;
                if first && panics_first(&r) {
                    panic!("panic in the future at {}-{}", r.partition(), r.offset());
                }
                Ok::<_, std::io::Error>(())
            }
        }
    }));
    let report =
        until_committed_to_the_end(&bootstrap, &group_id, &topic, &ends, (stop, run)).await;
    assert!(report.uncommitted.is_empty(), "{report:?}");
    assert_each_panic_retried_once(&attempts, &ends, &metrics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_retried_and_committed_partition_ordered() {
    panicking_handler_in(DispatchMode::PartitionOrdered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_retried_and_committed_key_ordered() {
    panicking_handler_in(DispatchMode::KeyOrdered { max_in_flight: 16 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_retried_and_committed_unordered() {
    panicking_handler_in(DispatchMode::Unordered { max_in_flight: 16 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_batch_handler_fails_its_batch_whose_runs_are_retried_or_handed_back_and_committed()
 {
    let bootstrap = shared().await.unwrap().bootstrap();
    let (topic, _producer, ends) = topic_with_records(&bootstrap, "panics-batch").await;
    let group_id = random_name("g");
    let metrics = Metrics::default();
    let consumer = builder(
        &bootstrap,
        &group_id,
        &topic,
        DispatchMode::KeyOrdered { max_in_flight: 64 },
    )
    .metrics(metrics.clone())
    .build()
    .await
    .unwrap();
    let stop = consumer.shutdown_handle();
    let attempts = Attempts::default();
    // Every call: its records as (partition, offset, key), and whether it panicked.
    type Calls = Arc<Mutex<Vec<(Vec<(i32, i64, String)>, bool)>>>;
    let calls = Calls::default();
    let run = tokio::spawn(consumer.run_batch(20, {
        let attempts = Arc::clone(&attempts);
        let calls = Arc::clone(&calls);
        move |records: Vec<ConsumedRecord>| {
            let mut panics = false;
            for r in &records {
                panics |= attempt(&attempts, r) == 1 && panics_first(r);
            }
            let key = |r: &ConsumedRecord| String::from_utf8_lossy(r.key().unwrap()).into_owned();
            calls.lock().push((
                records
                    .iter()
                    .map(|r| (r.partition(), r.offset(), key(r)))
                    .collect(),
                panics,
            ));
            async move {
                if panics {
                    panic!("a batch of {} records panicked", records.len());
                }
                records
                    .iter()
                    .map(|_| Ok::<_, std::io::Error>(()))
                    .collect()
            }
        }
    }));
    let report =
        until_committed_to_the_end(&bootstrap, &group_id, &topic, &ends, (stop, run)).await;
    assert!(report.uncommitted.is_empty(), "{report:?}");
    let attempts = attempts.lock().clone();
    let total: usize = ends.values().map(|end| *end as usize).sum();
    assert_eq!(attempts.len(), total, "every record handled");
    assert!(
        attempts
            .iter()
            .filter(|((_, o), _)| o % 50 == 7)
            .all(|(_, n)| *n >= 2),
        "each picked record was handled again after its batch panicked: {attempts:?}"
    );
    // A batch holds runs: records of one key of one partition, in offset order. A panic fails
    // the batch's every record: the first of each run goes through the failure path (one panic
    // counted for it, then retried alone), and the rest of the run is handed back and comes in a
    // later call.
    let calls = calls.lock().clone();
    let mut heads = 0;
    for (i, (records, panicked)) in calls.iter().enumerate() {
        if !panicked {
            continue;
        }
        let mut seen = HashSet::new();
        for (p, o, key) in records {
            if seen.insert((*p, key.clone())) {
                heads += 1;
                continue;
            }
            assert!(
                calls[i + 1..]
                    .iter()
                    .any(|(later, _)| later.iter().any(|(lp, lo, _)| (lp, lo) == (p, o))),
                "({p}, {o}) was handed back after call {i} panicked and came again"
            );
        }
    }
    assert!(heads > 0, "some batches panicked");
    let totals = metrics.publish().totals;
    assert_eq!(
        totals.panicked, heads as u64,
        "one panic per run of a panicked batch: {totals:?}"
    );
    assert!(
        calls.iter().any(|(records, _)| records.len() > 1),
        "records were batched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_always_panics_is_dead_lettered_with_the_panic_and_its_partition_goes_on() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let (topic, producer, ends) = topic_with_records(&bootstrap, "panics-dlt").await;
    let dlt = format!("{topic}-dlt");
    create_topic(&bootstrap, &dlt, PARTITIONS, 1).await.unwrap();
    let group_id = random_name("g");
    let metrics = Metrics::default();
    let consumer = builder(
        &bootstrap,
        &group_id,
        &topic,
        DispatchMode::PartitionOrdered,
    )
    .dead_letter(DeadLetterPolicy::default(), producer)
    .metrics(metrics.clone())
    .build()
    .await
    .unwrap();
    let stop = consumer.shutdown_handle();
    let attempts = Attempts::default();
    // Offset 10 of partition 1 panics at every attempt; everything else succeeds.
    let poison = (1, 10);
    let run = tokio::spawn(consumer.run({
        let attempts = Arc::clone(&attempts);
        move |r: ConsumedRecord| {
            attempt(&attempts, &r);
            async move {
                if (r.partition(), r.offset()) == poison {
                    panic!("poison at {}-{}", r.partition(), r.offset());
                }
                Ok::<_, std::io::Error>(())
            }
        }
    }));
    let report =
        until_committed_to_the_end(&bootstrap, &group_id, &topic, &ends, (stop, run)).await;
    assert!(report.uncommitted.is_empty(), "{report:?}");
    {
        let attempts = attempts.lock();
        assert_eq!(attempts[&poison], 3, "the policy's three attempts");
        let total: usize = ends.values().map(|end| *end as usize).sum();
        assert_eq!(
            attempts.len(),
            total,
            "the rest of the partition was processed"
        );
    }
    let totals = metrics.publish().totals;
    assert_eq!(
        (totals.panicked, totals.dead_lettered),
        (3, 1),
        "{totals:?}"
    );

    let rs = ClientBuilder::new(vec![bootstrap.clone()])
        .build()
        .await
        .unwrap();
    let mut found = Vec::new();
    for p in 0..PARTITIONS {
        let pc = rs
            .partition_client(dlt.clone(), p, UnknownTopicHandling::Error)
            .await
            .unwrap();
        let (records, _) = tokio::time::timeout(
            Duration::from_secs(30),
            pc.fetch_records(0, 1..1_000_000, 100),
        )
        .await
        .expect("reading the dead-letter topic timed out")
        .unwrap();
        found.extend(records.into_iter().map(|r| (p, r)));
    }
    assert_eq!(found.len(), 1, "exactly the poison record dead-lettered");
    let (dlt_partition, r) = &found[0];
    let headers = DeadLetterHeaders::decode(r.record.headers.iter()).unwrap();
    assert_eq!(
        (headers.record.partition, headers.record.offset),
        poison,
        "the original's partition and offset"
    );
    assert_eq!(*dlt_partition, poison.0, "same partition as the original");
    assert_eq!(headers.error.type_name, "panic");
    assert_eq!(headers.error.message.as_deref(), Some("poison at 1-10"));
    assert_eq!(headers.attempts, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_record_held_by_a_task_that_panics_is_delivered_again_and_committed() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let (topic, _producer, ends) = topic_with_records(&bootstrap, "panics-stream").await;
    let group_id = random_name("g");
    let consumer: Consumer = builder(
        &bootstrap,
        &group_id,
        &topic,
        DispatchMode::Unordered { max_in_flight: 32 },
    )
    .build()
    .await
    .unwrap();
    let mut stream = consumer.stream().unwrap();
    let stop = stream.shutdown_handle();
    let attempts = Attempts::default();
    // The user's side: one task per record, which panics while holding the record the first time
    // it sees one that [`panics_first`] picks, and acks it otherwise.
    let user = tokio::spawn({
        let attempts = Arc::clone(&attempts);
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    r = stream.next() => {
                        let Some(r) = r else { break };
                        let attempts = Arc::clone(&attempts);
                        tasks.spawn(async move {
                            let n = attempt(&attempts, &r);
                            tokio::task::yield_now().await;
                            if n == 1 && panics_first(&r) {
                                panic!("the user's task panicked at {}-{}", r.partition(), r.offset());
                            }
                            r.ack();
                        });
                    }
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                }
            }
            stream.shutdown().await
        }
    });
    if let Err(last) = committed_to_the_end(&bootstrap, &group_id, &topic, &ends).await {
        panic!("committed offsets {last:?} never reached the end offsets {ends:?}");
    }
    stop.shutdown();
    let report = tokio::time::timeout(Duration::from_secs(60), user)
        .await
        .expect("shutdown timed out")
        .unwrap()
        .unwrap();
    assert!(report.uncommitted.is_empty(), "{report:?}");
    let attempts = attempts.lock();
    for (&p, &end) in &ends {
        for o in 0..end {
            let expected = if o % 50 == 7 { 2 } else { 1 };
            assert_eq!(
                attempts.get(&(p, o)).copied(),
                Some(expected),
                "partition {p} offset {o}: delivered again only after the panic"
            );
        }
    }
}
