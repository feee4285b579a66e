//! kafkit's contenders: the producer, the group consumer in each dispatch mode, and the latency probe.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use kafkit::consumer::{ConsumerBuilder, ConsumerListener, DispatchMode, OffsetReset};
use kafkit::group::{GroupConfig, TopicPartition};
use kafkit::{ClientConfig, Producer, ProducerBuilder, ProducerRecord};
use tokio::sync::Notify;

use crate::{Latch, LatencySamples, Outcome, payload, records_in_flight};

/// The producer contenders' producer (5 ms linger, 1 MiB batches), with `topic`'s metadata
/// fetched before the clock starts.
async fn producer(bootstrap: &str, topic: &str) -> Result<Producer, Box<dyn std::error::Error>> {
    let producer = ProducerBuilder::new(ClientConfig::new([bootstrap])?)
        .linger(Duration::from_millis(5))
        .batch_size(1024 * 1024)
        .build()
        .await?;
    producer.partition_count(topic).await?;
    Ok(producer)
}

/// The producer contenders' 1,000 keys and one value, shared buffers that each record clones
/// without a copy (as rust-rdkafka's contenders lend one slice to every send); the producer copies
/// them once, into its batch.
fn keys_and_value(size: usize) -> (Vec<Bytes>, Bytes) {
    let keys = (0..1000).map(|i| Bytes::from(format!("key-{i}"))).collect();
    (keys, Bytes::from(payload(size)))
}

/// Sends `records` records of `size` bytes, keyed round-robin over 1,000 keys, and waits for every
/// acknowledgement (acks=all), up to [`records_in_flight`] at once.
pub(crate) async fn produce(
    bootstrap: &str,
    topic: &str,
    records: u64,
    size: usize,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let producer = producer(bootstrap, topic).await?;
    let (keys, value) = keys_and_value(size);
    let started = Instant::now();
    let mut sends = futures::stream::iter(0..records)
        .map(|i| {
            let record =
                ProducerRecord::new(topic, value.clone()).key(keys[(i % 1000) as usize].clone());
            producer.send(record)
        })
        .buffer_unordered(records_in_flight(size));
    while let Some(done) = sends.next().await {
        done?;
    }
    Ok(Outcome::produced(
        records,
        size,
        started.elapsed().as_secs_f64(),
    ))
}

/// The same work through `send_all`: the records in chunks of 1,024, one future per chunk, up to
/// [`records_in_flight`] records awaiting acknowledgement (as the per-record contender).
pub(crate) async fn produce_all(
    bootstrap: &str,
    topic: &str,
    records: u64,
    size: usize,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    const CHUNK: u64 = 1024;
    let producer = producer(bootstrap, topic).await?;
    let (keys, value) = keys_and_value(size);
    let started = Instant::now();
    let mut chunks = futures::stream::iter((0..records).step_by(CHUNK as usize))
        .map(|first| {
            let chunk = (first..(first + CHUNK).min(records)).map(|i| {
                ProducerRecord::new(topic, value.clone()).key(keys[(i % 1000) as usize].clone())
            });
            producer.send_all(chunk)
        })
        .buffer_unordered((records_in_flight(size) / CHUNK as usize).max(1));
    while let Some(done) = chunks.next().await {
        for d in done {
            d?;
        }
    }
    Ok(Outcome::produced(
        records,
        size,
        started.elapsed().as_secs_f64(),
    ))
}

/// Marks the first assignment: throughput is timed from there (the group join is not the
/// client's speed) to the last record, as Java's ConsumerPerformance times its fetch phase.
struct Assigned(Arc<Latch>, Option<Arc<Notify>>);

impl ConsumerListener for Assigned {
    fn assigned(&self, _partitions: &[TopicPartition]) {
        self.0.set_once();
        if let Some(n) = &self.1 {
            n.notify_one();
        }
    }
}

fn mode(name: &str) -> DispatchMode {
    match name {
        "partition" => DispatchMode::PartitionOrdered,
        "key" => DispatchMode::KeyOrdered {
            max_in_flight: 1024,
        },
        _ => DispatchMode::Unordered {
            max_in_flight: 1024,
        },
    }
}

/// The consumer of the consume workloads: a new group reading from the start, 1 MiB partition
/// fetches, commits on (every 5 s and at shutdown). Returns it with its assignment latch.
async fn consumer(
    bootstrap: &str,
    topic: &str,
    dispatch: &str,
) -> Result<(kafkit::consumer::Consumer, Arc<Latch>), Box<dyn std::error::Error>> {
    let group = format!("bench-kafkit-{}-{}", dispatch, std::process::id());
    let assigned = Arc::new(Latch::default());
    let consumer = ConsumerBuilder::new(
        ClientConfig::new([bootstrap])?,
        GroupConfig::new(group, [topic]),
    )
    .dispatch(mode(dispatch))
    .auto_offset_reset(OffsetReset::Earliest)
    .max_partition_fetch_bytes(1024 * 1024)
    .listener(Arc::new(Assigned(Arc::clone(&assigned), None)))
    .build()
    .await?;
    Ok((consumer, assigned))
}

/// Records and value bytes a consumer contender has seen, and when it saw the last of `target`.
struct Tally {
    target: u64,
    count: AtomicU64,
    bytes: AtomicU64,
    last: Latch,
}

impl Tally {
    fn new(target: u64) -> Arc<Self> {
        Arc::new(Self {
            target,
            count: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            last: Latch::default(),
        })
    }

    /// Counts `records` records of `bytes` value bytes; true once the target is reached.
    fn add(&self, records: u64, bytes: usize) -> bool {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let n = self.count.fetch_add(records, Ordering::Relaxed) + records;
        if n >= self.target {
            self.last.set_once();
        }
        n >= self.target
    }

    /// The outcome, timed from `assigned` to the last record.
    fn outcome(&self, assigned: &Latch) -> Outcome {
        Outcome {
            records: self.count.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            secs: self.last.since(assigned),
            latency: None,
        }
    }
}

fn value_len(record: &kafkit::consumer::ConsumedRecord) -> usize {
    record.value().map_or(0, <[u8]>::len)
}

/// The `stream()` API as its users write the loop: `Unordered { max_in_flight: 1024 }`, each record
/// acked as it is processed. Timed from the assignment to the last record.
pub(crate) async fn consume_stream(
    bootstrap: &str,
    topic: &str,
    records: u64,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let (consumer, assigned) = consumer(bootstrap, topic, "unordered").await?;
    let mut stream = consumer.stream()?;
    let tally = Tally::new(records);
    while let Some(record) = stream.next().await {
        let reached = tally.add(1, value_len(&record));
        record.ack();
        if reached {
            break;
        }
    }
    stream.shutdown().await?;
    Ok(tally.outcome(&assigned))
}

/// The batch-handler API (`run_batch`, up to 500 records a call, `PartitionOrdered`: each batch
/// holds runs of consecutive records of a partition) with a pass-through handler. Timed from the
/// assignment to the last record.
pub(crate) async fn consume_batch(
    bootstrap: &str,
    topic: &str,
    records: u64,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let (consumer, assigned) = consumer(bootstrap, topic, "partition").await?;
    let stop = consumer.shutdown_handle();
    let tally = Tally::new(records);
    consumer
        .run_batch(500, {
            let tally = Arc::clone(&tally);
            move |batch| {
                let size = batch.iter().map(value_len).sum();
                if tally.add(batch.len() as u64, size) {
                    stop.shutdown();
                }
                let results = batch.iter().map(|_| Ok::<_, std::io::Error>(())).collect();
                std::future::ready(results)
            }
        })
        .await?;
    Ok(tally.outcome(&assigned))
}

/// Reads `records` records in a new group with a pass-through handler; commits on (every 5 s and at
/// shutdown). Timed from the assignment to the last record.
pub(crate) async fn consume(
    bootstrap: &str,
    topic: &str,
    records: u64,
    dispatch: &str,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let (consumer, assigned) = consumer(bootstrap, topic, dispatch).await?;
    let stop = consumer.shutdown_handle();
    let tally = Tally::new(records);
    consumer
        .run({
            let tally = Arc::clone(&tally);
            move |record| {
                if tally.add(1, value_len(&record)) {
                    stop.shutdown();
                }
                std::future::ready(Ok::<_, std::io::Error>(()))
            }
        })
        .await?;
    Ok(tally.outcome(&assigned))
}

/// Consumes `records` records produced while it runs and reports end-to-end latency: now minus the
/// send time the producer wrote into each value. Prints `ready` once assigned.
pub(crate) async fn latency(
    bootstrap: &str,
    topic: &str,
    records: u64,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let (consumer, ready) = latency_consumer(bootstrap, topic, "stream").await?;
    let mut stream = consumer.stream()?;
    let announce = tokio::spawn(async move {
        ready.notified().await;
        crate::announce_ready();
    });
    let mut samples = LatencySamples::with_capacity(records as usize);
    let started = Instant::now();
    while (samples.len() as u64) < records {
        let Some(record) = stream.next().await else {
            break;
        };
        samples.record(
            record.value().unwrap_or_default(),
            record.timestamp().timestamp_millis(),
        );
        record.ack();
    }
    let secs = started.elapsed().as_secs_f64();
    announce.abort();
    stream.shutdown().await?;
    Ok(Outcome {
        records: samples.len() as u64,
        bytes: 0,
        secs,
        latency: Some(samples.finish()),
    })
}

/// The same probe through the handler API (`run()`, `PartitionOrdered`): the handler takes the
/// time of each record it is called with.
pub(crate) async fn latency_run(
    bootstrap: &str,
    topic: &str,
    records: u64,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let (consumer, ready) = latency_consumer(bootstrap, topic, "run").await?;
    let announce = tokio::spawn(async move {
        ready.notified().await;
        crate::announce_ready();
    });
    let stop = consumer.shutdown_handle();
    let samples = Arc::new(std::sync::Mutex::new(LatencySamples::with_capacity(
        records as usize,
    )));
    let started = Instant::now();
    consumer
        .run({
            let samples = Arc::clone(&samples);
            move |record| {
                let mut samples = samples.lock().expect("not poisoned");
                samples.record(
                    record.value().unwrap_or_default(),
                    record.timestamp().timestamp_millis(),
                );
                if samples.len() as u64 >= records {
                    stop.shutdown();
                }
                std::future::ready(Ok::<_, std::io::Error>(()))
            }
        })
        .await?;
    let secs = started.elapsed().as_secs_f64();
    announce.abort();
    let samples = std::mem::replace(
        &mut *samples.lock().expect("not poisoned"),
        LatencySamples::with_capacity(0),
    );
    Ok(Outcome {
        records: samples.len() as u64,
        bytes: 0,
        secs,
        latency: Some(samples.finish()),
    })
}

/// A latency probe's consumer (`PartitionOrdered`, in a new group) and what tells it is assigned.
async fn latency_consumer(
    bootstrap: &str,
    topic: &str,
    api: &str,
) -> Result<(kafkit::consumer::Consumer, Arc<Notify>), Box<dyn std::error::Error>> {
    let ready = Arc::new(Notify::new());
    let group = format!("bench-kafkit-latency-{api}-{}", std::process::id());
    let consumer = ConsumerBuilder::new(
        ClientConfig::new([bootstrap])?,
        GroupConfig::new(group, [topic]),
    )
    .dispatch(DispatchMode::PartitionOrdered)
    // A fresh topic per run, its measured records produced only after `ready` (the warm-up before
    // it is skipped): earliest loses nothing, where latest could skip records sent between the
    // assignment and the position lookup.
    .auto_offset_reset(OffsetReset::Earliest)
    .fetch_max_wait(Duration::from_millis(100))
    .listener(Arc::new(Assigned(Arc::default(), Some(Arc::clone(&ready)))))
    .build()
    .await?;
    Ok((consumer, ready))
}
