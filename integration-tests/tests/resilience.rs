//! Resilience against a real broker: broker crashes and pauses, poison records and the dead-letter
//! topic, a failing downstream and the circuit breaker, a dead-letter topic that cannot be written.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use kafkit::consumer::{
    ConsumedRecord, Consumer, ConsumerBuilder, DispatchMode, HealthHandle, OffsetReset,
};
use kafkit::group::TopicPartition;
use kafkit::resilience::{
    BackoffPolicy, CircuitBreakerPolicy, DeadLetterHeaders, DeadLetterPolicy, HealthStatus,
    RetryPolicy,
};
use kafkit::{Headers, Producer, ProducerBuilder, ProducerRecord};
use kafkit_integration_tests::support::{client, eventually, test_group};
use kafkit_testkit::{LocalKafka, create_topic, random_name, shared};
use parking_lot::Mutex;
use rskafka::client::ClientBuilder;
use rskafka::client::partition::UnknownTopicHandling;
use tokio::time::Instant;

fn builder(bootstrap: &str, group_id: &str, topic: &str) -> ConsumerBuilder {
    ConsumerBuilder::new(client(bootstrap), test_group(group_id, topic))
        .dispatch(DispatchMode::KeyOrdered { max_in_flight: 16 })
        .auto_offset_reset(OffsetReset::Earliest)
        .commit_interval(Duration::from_millis(200))
        .revoke_timeout(Duration::from_secs(10))
}

async fn produce(producer: &Producer, topic: &str, values: std::ops::Range<usize>) {
    let sends = values.map(|i| {
        let producer = producer.clone();
        let record = ProducerRecord::new(topic, i.to_string()).key(format!("k{}", i % 50));
        async move { producer.send(record).await.unwrap() }
    });
    futures::future::join_all(sends).await;
}

fn value(r: &ConsumedRecord) -> usize {
    std::str::from_utf8(r.value().unwrap())
        .unwrap()
        .parse()
        .unwrap()
}

/// Runs `consumer` with a handler that records each value, returning the processed set.
fn run_collecting(
    consumer: Consumer,
) -> (
    Arc<Mutex<HashSet<usize>>>,
    tokio::task::JoinHandle<kafkit::Result<kafkit::consumer::ShutdownReport>>,
) {
    let seen: Arc<Mutex<HashSet<usize>>> = Arc::default();
    let run = tokio::spawn(consumer.run({
        let seen = Arc::clone(&seen);
        move |r| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().insert(value(&r));
                Ok::<_, std::io::Error>(())
            }
        }
    }));
    (seen, run)
}

/// Samples the health status every 200 ms until `stop` is set.
fn watch_health(
    health: HealthHandle,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<HealthStatus>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let status = health.report().status;
            if seen.last() != Some(&status) {
                seen.push(status);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        seen
    })
}

async fn broker_outage(kill: bool) {
    let kafka = LocalKafka::start().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("outage");
    create_topic(&bootstrap, &topic, 3, 1).await.unwrap();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    produce(&producer, &topic, 0..300).await;

    let consumer = builder(&bootstrap, &random_name("g"), &topic)
        .build()
        .await
        .unwrap();
    let health = consumer.health_handle();
    let stop = consumer.shutdown_handle();
    let (seen, run) = run_collecting(consumer);
    eventually(Duration::from_secs(60), "first 300 processed", || {
        seen.lock().len() == 300
    })
    .await;
    eventually(Duration::from_secs(20), "healthy before the outage", || {
        health.report().status == HealthStatus::Healthy
    })
    .await;

    let stop_watch = Arc::new(AtomicBool::new(false));
    let statuses = watch_health(health.clone(), Arc::clone(&stop_watch));
    if kill {
        kafka.kill();
    } else {
        kafka.pause();
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    if kill {
        kafka.restart().await.unwrap();
    } else {
        kafka.resume();
    }
    produce(&producer, &topic, 300..600).await;
    eventually(
        Duration::from_secs(120),
        "all 600 processed after the outage",
        || seen.lock().len() == 600,
    )
    .await;
    eventually(Duration::from_secs(60), "healthy again", || {
        health.report().status == HealthStatus::Healthy
    })
    .await;
    stop_watch.store(true, Ordering::Relaxed);
    let statuses = statuses.await.unwrap();
    assert!(
        statuses.contains(&HealthStatus::Unhealthy),
        "health went unhealthy during the outage: {statuses:?}"
    );
    stop.shutdown();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_rides_out_a_broker_crash_and_restart() {
    broker_outage(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_rides_out_a_paused_broker() {
    broker_outage(false).await;
}

fn fast_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy::new(
        attempts,
        BackoffPolicy::new(
            Duration::from_millis(10),
            Duration::from_millis(50),
            2.0,
            0.0,
        )
        .unwrap(),
    )
    .unwrap()
}

#[derive(Debug)]
struct Poison(usize);

impl std::fmt::Display for Poison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "record {} is poison", self.0)
    }
}

impl std::error::Error for Poison {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_goes_to_the_dead_letter_topic_with_its_headers() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("payments");
    let dlt = format!("{topic}-dlt");
    let group_id = random_name("g");
    create_topic(&bootstrap, &topic, 3, 1).await.unwrap();
    create_topic(&bootstrap, &dlt, 3, 1).await.unwrap();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    produce(&producer, &topic, 0..1000).await;

    let consumer = builder(&bootstrap, &group_id, &topic)
        .retry_policy(fast_retries(4))
        .dead_letter(DeadLetterPolicy::default(), producer.clone())
        .build()
        .await
        .unwrap();
    let stop = consumer.shutdown_handle();
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<HashSet<usize>>> = Arc::default();
    let run = tokio::spawn(consumer.run({
        let seen = Arc::clone(&seen);
        let attempts = Arc::clone(&attempts);
        move |r| {
            let seen = Arc::clone(&seen);
            let attempts = Arc::clone(&attempts);
            async move {
                let v = value(&r);
                if v == 500 {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    return Err(Poison(v));
                }
                seen.lock().insert(v);
                Ok(())
            }
        }
    }));
    eventually(
        Duration::from_secs(60),
        "999 good records processed",
        || seen.lock().len() == 999,
    )
    .await;
    stop.shutdown();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        attempts.load(Ordering::Relaxed),
        4,
        "tried exactly the policy's attempts"
    );

    // Read the dead-letter topic back and decode the headers.
    let rs = ClientBuilder::new(vec![bootstrap.clone()])
        .build()
        .await
        .unwrap();
    let mut found = Vec::new();
    for p in 0..3 {
        let pc = rs
            .partition_client(dlt.clone(), p, UnknownTopicHandling::Error)
            .await
            .unwrap();
        let (records, _) = pc.fetch_records(0, 1..1_000_000, 100).await.unwrap();
        found.extend(records.into_iter().map(|r| (p, r)));
    }
    assert_eq!(found.len(), 1, "exactly one record dead-lettered");
    let (dlt_partition, r) = &found[0];
    assert_eq!(r.record.value.as_deref(), Some(b"500".as_slice()));
    let headers = DeadLetterHeaders::decode(r.record.headers.iter()).unwrap();
    assert_eq!(headers.record.topic, topic);
    assert_eq!(
        headers.record.partition, *dlt_partition,
        "same partition as the original"
    );
    assert_eq!(
        headers.record.consumer_group.as_deref(),
        Some(group_id.as_str())
    );
    assert_eq!(headers.attempts, Some(4));
    assert!(
        headers.error.type_name.ends_with("Poison"),
        "{}",
        headers.error.type_name
    );
    assert_eq!(
        headers.error.message.as_deref(),
        Some("record 500 is poison")
    );
    assert_eq!(
        r.record.headers["kafka_dlt-original-offset"],
        headers.record.offset.to_be_bytes()
    );
    assert_eq!(r.record.key.as_deref(), Some(b"k0".as_slice()));

    // A Java consumer reads the same headers, decoded as Spring Kafka decodes them.
    let reader = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("java/DltReader.java");
    let out = kafkit_testkit::java_source(&reader, &[&bootstrap, &dlt], Duration::from_secs(120))
        .await
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    let expected = format!(
        "{topic} {dlt_partition} {} CreateTime {group_id} 4 {} | record 500 is poison",
        headers.record.offset, headers.error.type_name
    );
    assert_eq!(out.stdout.trim(), expected);
}

/// The dead-letter record carries the original's headers as they were: a repeated name twice, in
/// order, and a null value as null (the producer writes headers as given).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_record_keeps_repeated_and_null_headers() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("traced");
    let dlt = format!("{topic}-dlt");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    create_topic(&bootstrap, &dlt, 1, 1).await.unwrap();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    let mut headers = Headers::new();
    headers
        .add("trace", "a")
        .add_null("baggage")
        .add("trace", "b");
    producer
        .send(ProducerRecord::new(&topic, "poison").with_headers(headers))
        .await
        .unwrap();
    let consumer = builder(&bootstrap, &random_name("g"), &topic)
        .retry_policy(fast_retries(1))
        .dead_letter(DeadLetterPolicy::default(), producer.clone())
        .build()
        .await
        .unwrap();
    let stop = consumer.shutdown_handle();
    let run = tokio::spawn(consumer.run(|r| async move { Err::<(), _>(Poison(value_or(&r))) }));

    // Read the dead-letter topic with a second consumer.
    let reader = builder(&bootstrap, &random_name("g"), &dlt)
        .build()
        .await
        .unwrap();
    let reader_stop = reader.shutdown_handle();
    let got: Arc<Mutex<Vec<RawHeaders>>> = Arc::default();
    let reading = tokio::spawn(reader.run({
        let got = Arc::clone(&got);
        move |r| {
            let got = Arc::clone(&got);
            async move {
                got.lock().push(
                    r.headers()
                        .iter()
                        .map(|h| (h.name_bytes().to_vec(), h.value().map(<[u8]>::to_vec)))
                        .collect(),
                );
                Ok::<_, std::io::Error>(())
            }
        }
    }));
    eventually(
        Duration::from_secs(60),
        "the record is dead-lettered",
        || !got.lock().is_empty(),
    )
    .await;
    stop.shutdown();
    reader_stop.shutdown();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let got = got.lock();
    assert_eq!(got.len(), 1);
    let original: Vec<_> = got[0]
        .iter()
        .filter(|(name, _)| !name.starts_with(b"kafka_dlt-") && !name.starts_with(b"kafkit_dlt-"))
        .cloned()
        .collect();
    assert_eq!(
        original,
        vec![
            (b"trace".to_vec(), Some(b"a".to_vec())),
            (b"baggage".to_vec(), None),
            (b"trace".to_vec(), Some(b"b".to_vec())),
        ]
    );
}

/// A record's headers as (name, value) bytes, in order.
type RawHeaders = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// The value of a record that is not a number, for [`Poison`].
fn value_or(r: &ConsumedRecord) -> usize {
    r.value().map_or(0, <[u8]>::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_downstream_opens_the_breaker_and_nothing_is_dead_lettered() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("orders");
    let dlt = format!("{topic}-dlt");
    create_topic(&bootstrap, &topic, 2, 1).await.unwrap();
    create_topic(&bootstrap, &dlt, 2, 1).await.unwrap();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    produce(&producer, &topic, 0..200).await;

    let metrics = kafkit::metrics::Metrics::default();
    let consumer = builder(&bootstrap, &random_name("g"), &topic)
        .retry_policy(fast_retries(4))
        .circuit_breaker(Some(
            CircuitBreakerPolicy::new(5, Duration::from_secs(1)).unwrap(),
        ))
        .dead_letter(DeadLetterPolicy::default(), producer.clone())
        .metrics(metrics.clone())
        .build()
        .await
        .unwrap();
    let breaker_states = tokio::spawn({
        let metrics = metrics.clone();
        async move {
            let mut seen = Vec::new();
            for _ in 0..100 {
                let state = metrics.publish().gauges.circuit_state;
                if seen.last() != Some(&state) {
                    seen.push(state);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        }
    });
    let health = consumer.health_handle();
    let stop = consumer.shutdown_handle();
    let down_until = Instant::now() + Duration::from_secs(5);
    let calls_while_down = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<HashSet<usize>>> = Arc::default();
    let run = tokio::spawn(consumer.run({
        let seen = Arc::clone(&seen);
        let calls = Arc::clone(&calls_while_down);
        move |r| {
            let seen = Arc::clone(&seen);
            let calls = Arc::clone(&calls);
            async move {
                if Instant::now() < down_until {
                    calls.fetch_add(1, Ordering::Relaxed);
                    return Err(std::io::Error::other("downstream unavailable"));
                }
                seen.lock().insert(value(&r));
                Ok(())
            }
        }
    }));
    let stop_watch = Arc::new(AtomicBool::new(false));
    let statuses = watch_health(health, Arc::clone(&stop_watch));
    eventually(
        Duration::from_secs(60),
        "all 200 processed after the outage",
        || seen.lock().len() == 200,
    )
    .await;
    stop_watch.store(true, Ordering::Relaxed);
    stop.shutdown();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // Without the breaker, 16 records in flight x 4 attempts would all have failed and been
    // dead-lettered within the 5 s. With it, calls stop after the threshold and one probe per second.
    let calls = calls_while_down.load(Ordering::Relaxed);
    assert!(
        calls < 40,
        "the breaker should stop calling the downstream: {calls} calls"
    );
    let statuses = statuses.await.unwrap();
    assert!(
        statuses.contains(&HealthStatus::Degraded),
        "an open breaker shows as degraded: {statuses:?}"
    );
    let breaker_states = breaker_states.await.unwrap();
    assert!(
        breaker_states.contains(&kafkit::resilience::CircuitState::Open),
        "the metrics export the open breaker: {breaker_states:?}"
    );
    let totals = metrics.publish().totals;
    assert_eq!(totals.dead_lettered, 0);
    assert!(totals.failed > 0 && totals.acked >= 200, "{totals:?}");
    let rs = ClientBuilder::new(vec![bootstrap.clone()])
        .build()
        .await
        .unwrap();
    for p in 0..2 {
        let pc = rs
            .partition_client(dlt.clone(), p, UnknownTopicHandling::Error)
            .await
            .unwrap();
        let (records, _) = pc.fetch_records(0, 1..1_000_000, 100).await.unwrap();
        assert!(
            records.is_empty(),
            "nothing dead-lettered because a downstream was down"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_that_cannot_be_written_keeps_the_record_for_redelivery() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("nodlt");
    let group_id = random_name("g");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    for i in 0..20 {
        // One at a time: log order is value order.
        producer
            .send(ProducerRecord::new(&topic, i.to_string()).key(format!("k{i}")))
            .await
            .unwrap();
    }
    // The dead-letter topic does not exist and the broker does not auto-create topics.
    let dlt_producer = ProducerBuilder::new(client(&bootstrap))
        .max_block(Duration::from_millis(200))
        .build()
        .await
        .unwrap();

    let run_once = |fail: bool| {
        let (bootstrap, topic, group_id, dlt_producer) = (
            bootstrap.clone(),
            topic.clone(),
            group_id.clone(),
            dlt_producer.clone(),
        );
        async move {
            let consumer = builder(&bootstrap, &group_id, &topic)
                .dispatch(DispatchMode::PartitionOrdered)
                .retry_policy(fast_retries(2))
                .dead_letter(DeadLetterPolicy::default(), dlt_producer)
                .shutdown_timeout(Duration::from_secs(3))
                .build()
                .await
                .unwrap();
            let stop = consumer.shutdown_handle();
            let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
            let run = tokio::spawn(consumer.run({
                let seen = Arc::clone(&seen);
                move |r| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let v = value(&r);
                        seen.lock().push(v);
                        if fail && v == 5 {
                            return Err(Poison(v));
                        }
                        Ok(())
                    }
                }
            }));
            tokio::time::sleep(Duration::from_secs(8)).await;
            stop.shutdown();
            let report = tokio::time::timeout(Duration::from_secs(30), run)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            (seen.lock().clone(), report)
        }
    };
    let (first, report) = run_once(true).await;
    assert!(
        !first.contains(&6),
        "partition order: nothing after the stuck record ran: {first:?}"
    );
    assert_eq!(
        report
            .uncommitted
            .iter()
            .map(|u| (u.partition.clone(), u.watermark))
            .collect::<Vec<_>>(),
        vec![(TopicPartition::new(&topic, 0), 5)],
        "the stuck record is reported uncommitted: {report:?}"
    );
    let (second, _) = run_once(false).await;
    assert_eq!(
        second.first(),
        Some(&5),
        "the record whose dead-letter produce failed is delivered again"
    );
}
