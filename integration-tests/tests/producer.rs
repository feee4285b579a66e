//! The producer against a real broker: keyed records land where the Java client puts them, every
//! acknowledged record is readable at its offset, a broker restart loses nothing, bad input is refused.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kafkit::partitioner::partition_for_key;
use kafkit::{ClientConfig, Error, Producer, ProducerBuilder, ProducerRecord};
use kafkit_integration_tests::support::{POLL, client, connections_to, eventually_every};
use kafkit_testkit::{
    BrokerOptions, LocalCluster, LocalKafka, create_topic, java_source, random_name, shared,
};
use rskafka::client::ClientBuilder;
use rskafka::client::partition::UnknownTopicHandling;
use rskafka::record::RecordAndOffset;

async fn producer(bootstrap: &str) -> Producer {
    ProducerBuilder::new(ClientConfig::new([bootstrap]).unwrap())
        .build()
        .await
        .expect("producer connects")
}

/// A producer whose buffer (64 KiB, 16 KiB batches) a test can fill.
async fn small_buffer_producer(bootstrap: &str) -> Producer {
    ProducerBuilder::new(ClientConfig::new([bootstrap]).unwrap())
        .batch_size(16 * 1024)
        .buffer_memory(64 * 1024)
        .build()
        .await
        .expect("producer connects")
}

/// Every record of `topic`/`partition` from offset 0 up to the high watermark.
async fn read_partition(bootstrap: &str, topic: &str, partition: i32) -> Vec<RecordAndOffset> {
    let client = ClientBuilder::new(bootstrap.split(',').map(str::to_owned).collect())
        .build()
        .await
        .unwrap();
    let pc = client
        .partition_client(topic, partition, UnknownTopicHandling::Error)
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let (records, high_watermark) = pc.fetch_records(offset, 1..4_000_000, 100).await.unwrap();
        if let Some(last) = records.last() {
            offset = last.offset + 1;
        }
        out.extend(records);
        if offset >= high_watermark {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keyed_records_across_12_partitions_read_back_at_their_offsets() {
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("keyed");
    create_topic(&bootstrap, &topic, 12, 1).await.unwrap();
    let metrics = kafkit::metrics::Metrics::default();
    let producer = ProducerBuilder::new(ClientConfig::new([&bootstrap]).unwrap())
        .metrics(metrics.clone())
        .build()
        .await
        .expect("producer connects");

    let sends = (0..10_000).map(|i| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            let key = format!("key-{}", i % 1_000);
            let record = ProducerRecord::new(topic, format!("value-{i}"))
                .key(key.clone())
                .header("seq", i.to_string());
            (key, i, producer.send(record).await.expect("acknowledged"))
        }
    });
    let deliveries = futures::future::join_all(sends).await;

    let mut written: HashMap<(i32, i64), (String, i32)> = HashMap::new();
    for (key, i, d) in &deliveries {
        assert_eq!(
            d.partition,
            partition_for_key(key.as_bytes(), 12),
            "key {key}"
        );
        assert!(
            written
                .insert((d.partition, d.offset), (key.clone(), *i))
                .is_none(),
            "offset reused"
        );
    }

    let mut read = 0;
    for p in 0..12 {
        for r in read_partition(&bootstrap, &topic, p).await {
            let (key, i) = written
                .get(&(p, r.offset))
                .expect("every record was acknowledged");
            assert_eq!(r.record.key.as_deref(), Some(key.as_bytes()));
            assert_eq!(
                r.record.value.as_deref(),
                Some(format!("value-{i}").as_bytes())
            );
            assert_eq!(
                r.record.headers.get("seq").map(Vec::as_slice),
                Some(i.to_string().as_bytes())
            );
            read += 1;
        }
    }
    assert_eq!(
        read, 10_000,
        "every acknowledged record is in the log, nothing else"
    );
}

/// A producer's first sends race to look up the topic, and its records go to 512 partitions of one
/// broker. The lookups are single-flight, and the producer holds one connection per broker (its
/// sender, whose every ProduceRequest carries the ready batches of all the broker's partitions)
/// plus one for metadata and the producer id: 2 sockets, where a connection per partition (the
/// rskafka producer before) held 513.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producing_to_512_partitions_uses_one_connection_per_broker() {
    let kafka = LocalKafka::start().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let port: u16 = bootstrap.rsplit(':').next().unwrap().parse().unwrap();
    let topic = random_name("cold");
    create_topic(&bootstrap, &topic, 512, 1).await.unwrap();
    // The topic's admin client closes its sockets in the background: wait for them, so the sampler
    // counts the producer's connections only.
    eventually_every(
        Duration::from_secs(10),
        POLL,
        || format!("{} admin connections still open", connections_to(port)),
        || connections_to(port) == 0,
    )
    .await;
    let producer = producer(&bootstrap).await;

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn({
        let done = Arc::clone(&done);
        async move {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                most = most.max(connections_to(port));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            most
        }
    });
    let sends = (0..20_000).map(|i| {
        let record = ProducerRecord::new(&topic, vec![b'v'; 100]).key(format!("key-{}", i % 5_000));
        producer.send(record)
    });
    let deliveries =
        tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(sends))
            .await
            .expect("every send answered within 120 s");
    done.store(true, std::sync::atomic::Ordering::Release);
    let most = sampler.await.unwrap();
    let open = connections_to(port);

    let mut per_partition = vec![0usize; 512];
    for d in deliveries {
        per_partition[d.expect("every send delivered").partition as usize] += 1;
    }
    assert!(
        per_partition.iter().filter(|&&n| n > 0).count() > 500,
        "the keys reach nearly every partition"
    );
    // One per broker plus metadata: 2. A connection a loaded machine's timeout replaces can
    // overlap its successor for a moment (a CI run saw 4 while other tests' brokers started), so
    // the peak may pass 2 by that much; a connection per partition would be 513.
    assert!(
        (2..=4).contains(&most),
        "2 connections (one per broker + metadata) while sending to 512 partitions, saw {most}"
    );
    assert!(open <= 2, "{open} connections left open");
    let mut read = 0;
    for p in [0, 1, 255, 511] {
        let records = read_partition(&bootstrap, &topic, p).await;
        assert_eq!(records.len(), per_partition[p as usize], "partition {p}");
        read += records.len();
    }
    assert!(read > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_land_on_the_partition_the_java_client_chooses() {
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("java-parity");
    create_topic(&bootstrap, &topic, 12, 1).await.unwrap();

    let mut keys: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    keys.extend(["a", "é-ünïcödé", "0", "a-little-bit-longer-string", "🦀"].map(String::from));
    let dir = std::env::temp_dir().join(random_name("keys"));
    std::fs::write(&dir, keys.join("\n")).unwrap();

    let java = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("java/KeyedProduce.java");
    let out = java_source(
        &java,
        &[&bootstrap, &topic, dir.to_str().unwrap()],
        Duration::from_secs(120),
    )
    .await
    .expect("java runs");
    let _ = std::fs::remove_file(&dir);
    assert!(out.success, "KeyedProduce failed:\n{}", out.stderr);
    let java_partitions: HashMap<&str, i32> = out
        .stdout
        .lines()
        .map(|l| {
            let mut f = l.split('\t');
            (f.next().unwrap(), f.next().unwrap().parse().unwrap())
        })
        .collect();
    assert_eq!(
        java_partitions.len(),
        keys.len(),
        "Java acknowledged every key"
    );

    let producer = producer(&bootstrap).await;
    let mut spread = std::collections::BTreeSet::new();
    for key in &keys {
        let d = producer
            .send(ProducerRecord::new(&topic, "kafkit").key(key.clone()))
            .await
            .unwrap();
        assert_eq!(d.partition, java_partitions[key.as_str()], "key {key:?}");
        spread.insert(d.partition);
    }
    assert_eq!(spread.len(), 12, "300 keys reach every partition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_sent_while_the_broker_restarts_is_delivered_after() {
    let kafka = LocalKafka::start().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("restart");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    let producer = producer(&bootstrap).await;
    producer
        .send(ProducerRecord::new(&topic, "first"))
        .await
        .unwrap();

    kafka.kill();
    let pending = tokio::spawn({
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            producer
                .send(ProducerRecord::new(topic, "during-outage").key("k"))
                .await
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !pending.is_finished(),
        "nothing can acknowledge while the broker is down"
    );
    kafka.restart().await.unwrap();

    let delivery = tokio::time::timeout(Duration::from_secs(90), pending)
        .await
        .expect("delivered within the delivery timeout")
        .unwrap()
        .expect("acknowledged after the restart");
    assert_eq!(delivery.offset, 1);
    let log = read_partition(&bootstrap, &topic, 0).await;
    let values: Vec<_> = log
        .iter()
        .map(|r| r.record.value.clone().unwrap())
        .collect();
    assert_eq!(values, vec![b"first".to_vec(), b"during-outage".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_makes_send_wait_instead_of_growing() {
    let kafka = LocalKafka::start().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("backpressure");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    let producer = small_buffer_producer(&bootstrap).await;
    producer
        .send(ProducerRecord::new(&topic, "warm-up"))
        .await
        .unwrap();

    kafka.pause();
    // SIGSTOP is delivered asynchronously: on a loaded machine a broker thread can still answer a
    // request sent right after it. Let the stop take hold first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let producer = Arc::new(producer);
    let sends: Vec<_> = (0..40)
        .map(|i| {
            let producer = Arc::clone(&producer);
            let topic = topic.clone();
            tokio::spawn(async move {
                producer
                    .send(ProducerRecord::new(topic, vec![i as u8; 8 * 1024]))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let buffered = producer.buffered_bytes();
    assert!(buffered <= 64 * 1024, "buffer bound exceeded: {buffered}");
    assert!(
        buffered > 32 * 1024,
        "sends should fill the buffer while the broker is paused: {buffered}"
    );
    let mut finished = Vec::new();
    let mut pending = Vec::new();
    for s in sends {
        if s.is_finished() {
            finished.push(s.await.unwrap());
        } else {
            pending.push(s);
        }
    }
    assert!(
        finished.is_empty(),
        "no send completes while paused: {finished:?}"
    );
    let sends = pending;
    // Sends waiting for room behind these: dropped unpolled, dropped while waiting, or kept. A
    // dropped one gives up its turn; the ones kept go in call order.
    let unpolled = producer.send(ProducerRecord::new(&topic, "dropped unpolled"));
    let first = producer.send(ProducerRecord::new(&topic, "first kept"));
    let mut waited = Box::pin(producer.send(ProducerRecord::new(&topic, "dropped waiting")));
    assert!(futures::poll!(waited.as_mut()).is_pending());
    let second = producer.send(ProducerRecord::new(&topic, "second kept"));
    drop((unpolled, waited));

    kafka.resume();
    for s in sends {
        s.await.unwrap().expect("delivered after resume");
    }
    let (first, second) = tokio::join!(first, second);
    assert!(first.unwrap().offset < second.unwrap().offset);
    assert_eq!(producer.buffered_bytes(), 0);
    let log = read_partition(&bootstrap, &topic, 0).await;
    assert_eq!(log.len(), 43);
    assert!(
        !log.iter().any(|r| r
            .record
            .value
            .as_deref()
            .is_some_and(|v| v.starts_with(b"dropped"))),
        "a dropped send that never appended is not written"
    );
}

/// `send_all` through a buffer far smaller than what it sends: records that wait for room append
/// in call order (also across two calls awaited at once), each outcome comes back at its record's
/// place, and a bad record fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_all_keeps_call_order_through_a_full_buffer_and_returns_each_outcome() {
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("send-all");
    create_topic(&bootstrap, &topic, 3, 1).await.unwrap();
    let producer = small_buffer_producer(&bootstrap).await;
    // 600 records of 1 KiB in two calls: nine times the buffer.
    let records = |call: usize| {
        let topic = topic.clone();
        (0..300).map(move |i| {
            let record = ProducerRecord::new(&topic, vec![b'v'; 1024]).key(format!("{call}-{i}"));
            match (call, i) {
                (0, 150) => record.partition(9),
                _ => record.header("seq", format!("{call}-{i}")),
            }
        })
    };
    let first = producer.send_all(records(0));
    let second = producer.send_all(records(1));
    let (first, second) = tokio::join!(first, second);
    assert_eq!((first.len(), second.len()), (300, 300));
    let mut expected: HashMap<i32, Vec<String>> = HashMap::new();
    for (call, outcomes) in [first, second].into_iter().enumerate() {
        // Records without a timestamp get their call's time, those that waited for room too.
        let mut stamps = std::collections::HashSet::new();
        for (i, outcome) in outcomes.into_iter().enumerate() {
            if (call, i) == (0, 150) {
                assert!(
                    matches!(outcome, Err(Error::UnknownPartition { .. })),
                    "{outcome:?}"
                );
                continue;
            }
            let delivery = outcome.expect("acknowledged");
            stamps.insert(delivery.timestamp);
            let seq = format!("{call}-{i}");
            let list = expected.entry(delivery.partition).or_default();
            assert_eq!(
                delivery.offset,
                list.len() as i64,
                "{seq}: offsets follow the calls"
            );
            list.push(seq);
        }
        assert_eq!(stamps.len(), 1, "call {call}: one timestamp");
    }
    for (partition, sent) in expected {
        let log: Vec<String> = read_partition(&bootstrap, &topic, partition)
            .await
            .into_iter()
            .map(|r| String::from_utf8(r.record.headers["seq"].clone()).unwrap())
            .collect();
        assert_eq!(
            log, sent,
            "partition {partition}: the log holds the calls' order"
        );
    }
    assert_eq!(producer.buffered_bytes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error() {
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("errors");
    create_topic(&bootstrap, &topic, 2, 1).await.unwrap();
    let producer = ProducerBuilder::new(ClientConfig::new([&bootstrap]).unwrap())
        .max_block(Duration::from_secs(1))
        .build()
        .await
        .unwrap();

    let missing = random_name("missing");
    match producer.send(ProducerRecord::new(&missing, "x")).await {
        Err(Error::UnknownTopic { topic }) => assert_eq!(topic, missing),
        other => panic!("expected UnknownTopic, got {other:?}"),
    }
    match producer
        .send(ProducerRecord::new(&topic, "x").partition(7))
        .await
    {
        Err(e @ Error::UnknownPartition { .. }) => {
            assert!(!e.is_retriable());
            assert!(e.to_string().contains("2 partitions"), "{e}");
        }
        other => panic!("expected UnknownPartition, got {other:?}"),
    }
    let err = ProducerBuilder::new(ClientConfig::new([&bootstrap]).unwrap())
        .buffer_memory(10)
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("buffer.memory"), "{err}");

    producer.close().await.unwrap();
    assert!(matches!(
        producer.send(ProducerRecord::new(&topic, "x")).await,
        Err(Error::Closed { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_bootstrap_fails_after_the_connect_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = ClientConfig::new([format!("127.0.0.1:{port}")])
        .unwrap()
        .connect_timeout(Duration::from_secs(2));
    match ProducerBuilder::new(config).build().await {
        Err(e @ Error::Unreachable { .. }) => {
            assert!(e.is_retriable());
            assert!(e.to_string().contains(&port.to_string()), "{e}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

/// Sends `count` records, record `i` to partition `i % partitions` with value `i`, at most `window`
/// unanswered at a time, in order (each send appends its record when first polled, so the order of
/// the calls is the order of the records in their partitions' batches). Counts acknowledgements in
/// `acked`; returns each record's outcome.
async fn send_numbered(
    producer: Producer,
    topic: String,
    partitions: i32,
    count: usize,
    window: usize,
    acked: Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<kafkit::Result<kafkit::Delivery>> {
    use futures::StreamExt;
    let mut outcomes = Vec::with_capacity(count);
    let mut flying = futures::stream::FuturesOrdered::new();
    for i in 0..count {
        if flying.len() >= window {
            outcomes.push(flying.next().await.expect("a send in flight"));
        }
        let producer = producer.clone();
        let record =
            ProducerRecord::new(&topic, i.to_string()).partition((i % partitions as usize) as i32);
        let acked = Arc::clone(&acked);
        flying.push_back(async move {
            let outcome = producer.send(record).await;
            if outcome.is_ok() {
                acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            outcome
        });
    }
    while let Some(outcome) = flying.next().await {
        outcomes.push(outcome);
    }
    outcomes
}

/// Checks the log of `topic` against the outcomes of [`send_numbered`]: every acknowledged record
/// is in the log exactly once, at the offset its delivery named, nothing is in the log twice, and
/// each partition holds its records in the order they were sent. Returns the records acknowledged.
async fn check_log(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    outcomes: &[kafkit::Result<kafkit::Delivery>],
) -> usize {
    let mut in_log: HashMap<usize, (i32, i64)> = HashMap::new();
    for p in 0..partitions {
        let mut last: Option<usize> = None;
        for r in read_partition(bootstrap, topic, p).await {
            let value = String::from_utf8(r.record.value.clone().unwrap()).unwrap();
            let i: usize = value.parse().unwrap();
            assert_eq!(
                i % partitions as usize,
                p as usize,
                "record {i} in partition {p}"
            );
            assert!(
                in_log.insert(i, (p, r.offset)).is_none(),
                "record {i} is in the log twice"
            );
            if let Some(before) = last {
                assert!(
                    i > before,
                    "partition {p}: record {i} at offset {} follows record {before}",
                    r.offset
                );
            }
            last = Some(i);
        }
    }
    let mut acked = 0;
    for (i, outcome) in outcomes.iter().enumerate() {
        if let Ok(d) = outcome {
            acked += 1;
            let at = in_log
                .get(&i)
                .unwrap_or_else(|| panic!("acknowledged record {i} is not in the log"));
            assert_eq!(at.0, d.partition, "record {i}");
            if d.offset >= 0 {
                assert_eq!(
                    at.1, d.offset,
                    "record {i} at the offset its delivery named"
                );
            }
        }
    }
    acked
}

/// The idempotent producer through a broker crash: 100,000 records to 6 partitions, the broker
/// SIGKILLed once a fifth are acknowledged and restarted. Batches in flight at the crash are sent
/// again with their sequences; the broker (its producer state rebuilt from the log) writes each
/// once. Every record is acknowledged, every acknowledged record is in the log exactly once, and
/// each partition holds its records in the order they were sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_crash_during_100k_idempotent_sends_writes_each_record_once_in_order() {
    const COUNT: usize = 100_000;
    const PARTITIONS: i32 = 6;
    let kafka = LocalKafka::start().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("idempotent");
    create_topic(&bootstrap, &topic, PARTITIONS, 1)
        .await
        .unwrap();
    let producer = producer(&bootstrap).await;
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sending = tokio::spawn(send_numbered(
        producer,
        topic.clone(),
        PARTITIONS,
        COUNT,
        20_000,
        Arc::clone(&acked),
    ));
    eventually_every(
        Duration::from_secs(120),
        Duration::from_millis(10),
        || {
            format!(
                "a fifth acknowledged within 120 s: {} of {COUNT}",
                acked.load(std::sync::atomic::Ordering::Relaxed)
            )
        },
        || acked.load(std::sync::atomic::Ordering::Relaxed) >= COUNT / 5,
    )
    .await;
    kafka.kill();
    let at_kill = acked.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    kafka.restart().await.unwrap();
    let outcomes = tokio::time::timeout(Duration::from_secs(300), sending)
        .await
        .expect("every send answered within 300 s")
        .unwrap();
    assert!(
        at_kill < COUNT,
        "the broker died mid-stream ({at_kill} acknowledged)"
    );
    let failed: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} sends failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(
        check_log(&bootstrap, &topic, PARTITIONS, &outcomes).await,
        COUNT
    );
}

/// The idempotent producer through a partition leader's crash in a 3-node cluster (replication 3,
/// `min.insync.replicas` 2): node 1, which leads about a third of the partitions, is SIGKILLed once
/// a fifth of the records are acknowledged, and restarted. Its partitions' batches go to the new
/// leaders (NOT_LEADER_OR_FOLLOWER or a lost connection, then Metadata with leader epochs), which
/// have the producer's state replicated; every record is acknowledged and written once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_crash_in_a_cluster_during_idempotent_sends_writes_each_record_once_in_order() {
    const COUNT: usize = 30_000;
    const PARTITIONS: i32 = 6;
    let cluster = LocalCluster::start_with(
        3,
        BrokerOptions::default()
            .heap("384m")
            .property("min.insync.replicas", "2"),
    )
    .await
    .unwrap();
    let bootstrap = cluster.bootstrap();
    let topic = random_name("idempotent-cluster");
    create_topic(&bootstrap, &topic, PARTITIONS, 3)
        .await
        .unwrap();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sending = tokio::spawn(send_numbered(
        producer,
        topic.clone(),
        PARTITIONS,
        COUNT,
        5_000,
        Arc::clone(&acked),
    ));
    eventually_every(
        Duration::from_secs(120),
        Duration::from_millis(10),
        || {
            format!(
                "a fifth acknowledged within 120 s: {} of {COUNT}",
                acked.load(std::sync::atomic::Ordering::Relaxed)
            )
        },
        || acked.load(std::sync::atomic::Ordering::Relaxed) >= COUNT / 5,
    )
    .await;
    cluster.node(1).unwrap().kill();
    let at_kill = acked.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.node(1).unwrap().restart().await.unwrap();
    let outcomes = tokio::time::timeout(Duration::from_secs(300), sending)
        .await
        .expect("every send answered within 300 s")
        .unwrap();
    assert!(
        at_kill < COUNT,
        "node 1 died mid-stream ({at_kill} acknowledged)"
    );
    let failed: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} sends failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(
        check_log(&bootstrap, &topic, PARTITIONS, &outcomes).await,
        COUNT
    );
}
