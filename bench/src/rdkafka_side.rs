//! rust-rdkafka's contenders (librdkafka underneath): `FutureProducer`, `BaseProducer` and
//! `StreamConsumer`, set up for the same work as kafkit's: acks=all, 5 ms linger, 1 MiB batches;
//! 1 MiB per-partition fetches, and at-least-once commits (auto-commit of offsets stored only after
//! each record is handled).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, FutureProducer, FutureRecord, Producer,
    ProducerContext,
};
use rdkafka::util::Timeout;

use crate::{Latch, LatencySamples, Outcome, payload, records_in_flight};

/// The producers' settings: acks=all with idempotence (kafkit's and Java's default; librdkafka's is
/// off), 5 ms linger, 1 MiB batches, a queue of up to 1,000,000 records and 64 MiB (the bytes
/// kafkit's contenders keep awaiting acknowledgement at most: a larger queue only fills with fresh
/// pages at 10 KiB), and the Java client's key hash (the same partitions as kafkit's).
fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.size", "1048576")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "65536")
        .set("partitioner", "murmur2_random");
    config
}

/// `FutureProducer`: a future per record, [`records_in_flight`] awaited at once (as kafkit's producer
/// is driven).
pub(crate) async fn produce(
    bootstrap: &str,
    topic: &str,
    records: u64,
    size: usize,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let producer: FutureProducer = producer_config(bootstrap).create()?;
    let value = payload(size);
    let keys: Vec<String> = (0..1000).map(|i| format!("key-{i}")).collect();
    let started = Instant::now();
    let mut sends = futures::stream::iter(0..records)
        .map(|i| {
            let record = FutureRecord::to(topic)
                .payload(&value[..])
                .key(keys[(i % 1000) as usize].as_str());
            producer.send(record, Timeout::After(Duration::from_secs(120)))
        })
        .buffer_unordered(records_in_flight(size));
    while let Some(done) = sends.next().await {
        done.map_err(|(e, _)| e)?;
    }
    Ok(Outcome::produced(
        records,
        size,
        started.elapsed().as_secs_f64(),
    ))
}

/// Counts delivery reports (served by `poll` on the producing thread).
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() {
            &self.ok
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// `BaseProducer` driven as librdkafka's own `rdkafka_performance` drives the C producer: produce in
/// a loop, serve delivery reports with `poll(0)` after each record, and when the queue is full
/// `poll(10 ms)` and try again; flush at the end. Blocking: run it off the async runtime.
pub(crate) fn produce_base(
    bootstrap: &str,
    topic: &str,
    records: u64,
    size: usize,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let producer: BaseProducer<Deliveries> =
        producer_config(bootstrap).create_with_context(Deliveries::default())?;
    let value = payload(size);
    let keys: Vec<String> = (0..1000).map(|i| format!("key-{i}")).collect();
    let started = Instant::now();
    for i in 0..records {
        let mut record = BaseRecord::to(topic)
            .payload(&value[..])
            .key(keys[(i % 1000) as usize].as_str());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(120))?;
    let secs = started.elapsed().as_secs_f64();
    let context = producer.context();
    let failed = context.failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(format!("BaseProducer: {failed} deliveries failed").into());
    }
    Ok(Outcome {
        records: context.ok.load(Ordering::Relaxed),
        bytes: records * size as u64,
        secs,
        latency: None,
    })
}

/// Marks the first assignment (throughput is timed from there, as for kafkit and Java).
struct Assigned(Arc<Latch>);

impl ClientContext for Assigned {}

impl ConsumerContext for Assigned {
    fn post_rebalance(&self, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.0.set_once();
        }
    }
}

fn consumer(
    bootstrap: &str,
    group: &str,
    reset: &str,
    wait_ms: &str,
    assigned: Arc<Latch>,
) -> Result<StreamConsumer<Assigned>, rdkafka::error::KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", reset)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "5000")
        .set("enable.auto.offset.store", "false")
        .set("max.partition.fetch.bytes", "1048576")
        .set("fetch.wait.max.ms", wait_ms)
        .create_with_context(Assigned(assigned))
}

pub(crate) async fn consume(
    bootstrap: &str,
    topic: &str,
    records: u64,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let group = format!("bench-rdkafka-{}", std::process::id());
    let assigned = Arc::new(Latch::default());
    let consumer = consumer(bootstrap, &group, "earliest", "500", Arc::clone(&assigned))?;
    consumer.subscribe(&[topic])?;
    let mut stream = consumer.stream();
    let mut count = 0u64;
    let mut bytes = 0u64;
    while count < records {
        let Some(message) = stream.next().await else {
            break;
        };
        let message = message?;
        bytes += message.payload().map_or(0, <[u8]>::len) as u64;
        count += 1;
        consumer.store_offset_from_message(&message)?;
    }
    let last = Latch::default();
    last.set_once();
    let secs = last.since(&assigned);
    drop(stream);
    consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)?;
    Ok(Outcome {
        records: count,
        bytes,
        secs,
        latency: None,
    })
}

pub(crate) async fn latency(
    bootstrap: &str,
    topic: &str,
    records: u64,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let group = format!("bench-rdkafka-latency-{}", std::process::id());
    // A fresh topic per run, its measured records produced only after `ready` (the warm-up before
    // it is skipped): earliest loses nothing.
    let consumer = consumer(bootstrap, &group, "earliest", "100", Arc::default())?;
    consumer.subscribe(&[topic])?;
    let mut stream = consumer.stream();
    // Poll until the group assigned partitions and positions are known.
    let mut announced = false;
    let mut samples = LatencySamples::with_capacity(records as usize);
    let started = Instant::now();
    while (samples.len() as u64) < records {
        if !announced {
            match tokio::time::timeout(Duration::from_millis(100), stream.next()).await {
                Ok(Some(message)) => {
                    let message = message?;
                    samples.record(
                        message.payload().unwrap_or_default(),
                        message.timestamp().to_millis().unwrap_or(0),
                    );
                    consumer.store_offset_from_message(&message)?;
                }
                Ok(None) => break,
                Err(_) => {}
            }
            if consumer.assignment()?.count() > 0 {
                announced = true;
                crate::announce_ready();
            }
            continue;
        }
        let Some(message) = stream.next().await else {
            break;
        };
        let message = message?;
        samples.record(
            message.payload().unwrap_or_default(),
            message.timestamp().to_millis().unwrap_or(0),
        );
        consumer.store_offset_from_message(&message)?;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Outcome {
        records: samples.len() as u64,
        bytes: 0,
        secs,
        latency: Some(samples.finish()),
    })
}
