//! The producer: Java-compatible keyed partitioning on top of rskafka's per-partition batch producers.
//!
//! A `send` goes through four steps, each bounded:
//! 1. reserve the record's bytes in the buffer (`buffer.memory`): waits when full, so memory stays bounded;
//! 2. look up the topic's partitions (metadata cached for `metadata.max.age.ms`);
//! 3. pick the partition: explicit, else `toPositive(murmur2(key)) % partitions`, else sticky round-robin;
//! 4. hand the record to that partition's rskafka `BatchProducer`, which lingers, batches and retries
//!    connection and leadership errors with backoff; the whole send is bounded by `delivery.timeout.ms`.

mod batch;

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kafkit_metrics::Metrics;
use kafkit_resilience::{BackoffPolicy, ConfigError};
use parking_lot::RwLock;
use rskafka::client::Client;

use batch::SizedAggregator;
use rskafka::client::partition::{Compression as RsCompression, UnknownTopicHandling};
use rskafka::client::producer::{BatchProducer, BatchProducerBuilder};
use rskafka::record::Record;
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;
use tracing::debug;

use crate::config::{ClientConfig, rskafka_backoff};
use crate::headers::Headers;
use crate::partitioner::partition_for_key;
use crate::{Error, Result};

/// Bytes counted per record on top of key, value and headers (record framing, offsets, timestamps).
const RECORD_OVERHEAD: usize = 64;

/// A record to send. Build with [`ProducerRecord::new`] and the chained setters.
///
/// ```
/// use kafkit_core::ProducerRecord;
/// let record = ProducerRecord::new("orders", b"payload".to_vec())
///     .key(b"customer-42".to_vec())
///     .header("trace-id", b"abc".to_vec());
/// assert_eq!(record.topic(), "orders");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    topic: String,
    partition: Option<i32>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Headers,
    timestamp: Option<DateTime<Utc>>,
}

impl ProducerRecord {
    /// A record with `value` for `topic`, no key (spread across partitions), no headers, timestamped at send.
    pub fn new(topic: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Headers::new(),
            timestamp: None,
        }
    }

    /// A tombstone (null value) for `key`: deletes the key from a compacted topic.
    pub fn tombstone(topic: impl Into<String>, key: impl Into<Vec<u8>>) -> Self {
        Self {
            value: None,
            ..Self::new(topic, Vec::new()).key(key)
        }
    }

    /// The key: records with equal keys go to the same partition, exactly as with the Java client.
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sends to this partition instead of the key's.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Appends a header. Kafka allows several headers of one name; see [`send`](Producer::send)
    /// for what the current data plane carries.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.add(name, value);
        self
    }

    /// Replaces the headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// The record's timestamp (CreateTime). Default: the time of `send`.
    pub fn timestamp(mut self, timestamp: DateTime<Utc>) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The key, if any.
    pub fn key_bytes(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The value, `None` for a tombstone.
    pub fn value_bytes(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    fn size(&self) -> usize {
        RECORD_OVERHEAD
            + self.key.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + self.headers.byte_len()
    }
}

/// Where an acknowledged record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The record's offset in the partition.
    pub offset: i64,
    /// The record's timestamp (CreateTime).
    pub timestamp: DateTime<Utc>,
}

/// Compression of produced batches. Consumers read every codec the build was compiled with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// No compression (the default, as in Java).
    #[default]
    None,
    /// gzip, pure Rust.
    Gzip,
    /// Snappy, pure Rust.
    Snappy,
    /// LZ4 (C library; feature `lz4`).
    #[cfg(feature = "lz4")]
    Lz4,
    /// Zstandard (C library; feature `zstd`).
    #[cfg(feature = "zstd")]
    Zstd,
}

impl Compression {
    fn to_rskafka(self) -> RsCompression {
        match self {
            Compression::None => RsCompression::NoCompression,
            Compression::Gzip => RsCompression::Gzip,
            Compression::Snappy => RsCompression::Snappy,
            #[cfg(feature = "lz4")]
            Compression::Lz4 => RsCompression::Lz4,
            #[cfg(feature = "zstd")]
            Compression::Zstd => RsCompression::Zstd,
        }
    }
}

/// Settings of a [`Producer`]; each setter names the Java setting it mirrors.
#[derive(Debug, Clone)]
pub struct ProducerBuilder {
    client: ClientConfig,
    linger: Duration,
    batch_size: usize,
    buffer_memory: usize,
    delivery_timeout: Duration,
    max_block: Duration,
    retry_backoff: BackoffPolicy,
    compression: Compression,
    metadata_max_age: Duration,
    metrics: Option<Metrics>,
}

impl ProducerBuilder {
    /// A producer for the cluster described by `client`, with Java's defaults.
    pub fn new(client: ClientConfig) -> Self {
        Self {
            client,
            linger: Duration::from_millis(5),
            batch_size: 1024 * 1024,
            buffer_memory: 32 * 1024 * 1024,
            delivery_timeout: Duration::from_secs(120),
            max_block: Duration::from_secs(60),
            retry_backoff: BackoffPolicy::new(
                Duration::from_millis(100),
                Duration::from_secs(1),
                2.0,
                0.2,
            )
            .expect("valid default backoff"),
            compression: Compression::None,
            metadata_max_age: Duration::from_secs(300),
            metrics: None,
        }
    }

    /// Records every acknowledged record and its produce latency per topic into `metrics`, and counts
    /// this producer as active while it lives.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// How long a partition's batch waits for more records before it is sent.
    /// Corresponds to `linger.ms`. Default 5 ms.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// The most bytes in one batch (one produce request per partition); also the largest record.
    /// Corresponds to `batch.size` / `max.request.size`. Default 1 MiB.
    pub fn batch_size(mut self, bytes: usize) -> Self {
        self.batch_size = bytes;
        self
    }

    /// The most bytes of records sent but not yet acknowledged; `send` waits when it is full.
    /// Corresponds to `buffer.memory`. Default 32 MiB.
    pub fn buffer_memory(mut self, bytes: usize) -> Self {
        self.buffer_memory = bytes;
        self
    }

    /// Upper bound on one `send`, retries included. Corresponds to `delivery.timeout.ms`. Default 120 s.
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// How long `send` waits for a topic to appear in metadata before failing with
    /// [`Error::UnknownTopic`]. Corresponds to `max.block.ms`. Default 60 s.
    pub fn max_block(mut self, timeout: Duration) -> Self {
        self.max_block = timeout;
        self
    }

    /// Backoff between retries of a failed produce request. Corresponds to `retry.backoff.ms` /
    /// `retry.backoff.max.ms`. Default 100 ms doubling to 1 s. A retry reconnects, so the client's
    /// reconnect backoff bounds it: no sooner than `reconnect.backoff.ms`, no later than
    /// `reconnect.backoff.max.ms` ([`ClientConfig::reconnect_backoff`]).
    pub fn retry_backoff(mut self, policy: BackoffPolicy) -> Self {
        self.retry_backoff = policy;
        self
    }

    /// Batch compression. Corresponds to `compression.type`. Default none.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// How long partition counts are cached before they are looked up again (a topic may grow).
    /// Corresponds to `metadata.max.age.ms`. Default 5 min.
    pub fn metadata_max_age(mut self, age: Duration) -> Self {
        self.metadata_max_age = age;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.batch_size < 1024 {
            return Err(ConfigError::new("batch.size", "must be at least 1024 bytes").into());
        }
        if self.buffer_memory < self.batch_size {
            return Err(ConfigError::new(
                "buffer.memory",
                format!("must be at least batch.size ({} bytes)", self.batch_size),
            )
            .into());
        }
        if self.buffer_memory > (u32::MAX as usize) {
            return Err(ConfigError::new("buffer.memory", "must be below 4 GiB").into());
        }
        if self.delivery_timeout < self.linger + Duration::from_millis(1) {
            return Err(ConfigError::new(
                "delivery.timeout.ms",
                format!("must be greater than linger.ms ({:?})", self.linger),
            )
            .into());
        }
        if self.max_block.is_zero() {
            return Err(ConfigError::new("max.block.ms", "must be greater than zero").into());
        }
        Ok(())
    }

    /// The backoff of the rskafka client under this producer, which retries a failed request by
    /// reconnecting: [`retry_backoff`](Self::retry_backoff) bounded by the client's reconnect
    /// backoff (`reconnect.backoff.ms` .. `reconnect.backoff.max.ms`).
    pub(crate) fn rskafka_backoff(&self) -> rskafka::BackoffConfig {
        rskafka_backoff(&self.client.reconnect_bounded(self.retry_backoff), None)
    }

    /// Validates the settings and connects to the cluster.
    pub async fn build(self) -> Result<Producer> {
        self.validate()?;
        let client = self.client.connect_with(self.rskafka_backoff()).await?;
        debug!(bootstrap = ?self.client.bootstrap(), "producer connected");
        let active = self.metrics.as_ref().map(Metrics::producer_active);
        Ok(Producer {
            inner: Arc::new(Inner {
                _active: active,
                client,
                buffer: Arc::new(Semaphore::new(self.buffer_memory)),
                topics: RwLock::new(HashMap::new()),
                lookups: parking_lot::Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                settings: self,
            }),
        })
    }
}

/// Sends records to Kafka. Cheap to clone; clones share connections, batches and the buffer.
///
/// ```no_run
/// # async fn demo() -> kafkit_core::Result<()> {
/// use kafkit_core::{ClientConfig, ProducerBuilder, ProducerRecord};
/// let producer = ProducerBuilder::new(ClientConfig::new(["localhost:9092"])?).build().await?;
/// let delivery = producer.send(ProducerRecord::new("orders", "hello").key("customer-42")).await?;
/// println!("written at {}/{}", delivery.partition, delivery.offset);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

type PartitionBatcher = BatchProducer<SizedAggregator>;

#[derive(Debug)]
struct Inner {
    /// Counts this producer in the metrics' active producers while it lives.
    _active: Option<kafkit_metrics::ActiveGuard>,
    client: Client,
    settings: ProducerBuilder,
    /// Bytes of records in flight; `send` holds permits for its record until acknowledged.
    buffer: Arc<Semaphore>,
    /// Topic name -> partitions. parking_lot RwLock, not tokio's: held only to clone an `Arc` out or
    /// to swap one in, never across an await, and read on every send.
    topics: RwLock<HashMap<String, Arc<TopicProducer>>>,
    /// Topic name -> the lock held while that topic's metadata is looked up: lookups are
    /// single-flight per topic (see `Producer::topic`), and a slow topic does not hold up others.
    lookups: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    closed: AtomicBool,
}

#[derive(Debug)]
struct TopicProducer {
    name: String,
    partitions: Vec<Arc<PartitionProducer>>,
    /// Bytes of unkeyed records sent; `/ batch_size` picks the sticky partition, so unkeyed records
    /// fill one partition's batch before moving to the next (Java's sticky partitioner, lock-free).
    unkeyed_bytes: AtomicU64,
    fetched_at: Instant,
}

#[derive(Debug)]
struct PartitionProducer {
    partition: i32,
    /// Created on first use: connecting finds the leader, which may be down right now.
    batcher: OnceCell<PartitionBatcher>,
}

impl Producer {
    /// Sends `record` and waits until the broker acknowledges it (acks=all), returning where it was written.
    ///
    /// Waits while the buffer is full. Retriable failures (broker down, leader moved) are retried with
    /// backoff until the delivery timeout; then, or on a non-retriable failure, the error is returned.
    /// A record is never dropped silently.
    pub async fn send(&self, record: ProducerRecord) -> Result<Delivery> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed { what: "producer" });
        }
        let settings = &inner.settings;
        let size = record.size();
        if size > settings.batch_size {
            return Err(Error::RecordTooLarge {
                topic: record.topic,
                size,
                capacity: settings.batch_size,
            });
        }
        let deadline = Instant::now() + settings.delivery_timeout;
        // Reserve buffer space first: the backpressure point. `size <= batch_size <= buffer_memory < 4 GiB`.
        let _permit = Arc::clone(&inner.buffer)
            .acquire_many_owned(size as u32)
            .await
            .map_err(|_| Error::Closed { what: "producer" })?;

        let topic = self.topic(&record.topic).await?;
        let partition = self.choose_partition(&topic, &record, size)?;
        let producer = Arc::clone(&topic.partitions[partition as usize]);
        let timestamp = record.timestamp.unwrap_or_else(Utc::now);
        let rs_record = Record {
            headers: rskafka_headers(&record.headers)?,
            key: record.key,
            value: record.value,
            timestamp,
        };

        let attempt = async {
            let batcher = producer
                .batcher
                .get_or_try_init(|| async {
                    let client = inner
                        .client
                        .partition_client(
                            topic.name.clone(),
                            partition,
                            UnknownTopicHandling::Retry,
                        )
                        .await
                        .map_err(|source| Error::Kafka {
                            context: format!(
                                "connecting to the leader of {}/{partition}",
                                topic.name
                            ),
                            source: Arc::new(source),
                        })?;
                    Ok::<_, Error>(
                        BatchProducerBuilder::new(Arc::new(client))
                            .with_linger(settings.linger)
                            .with_compression(settings.compression.to_rskafka())
                            .build(SizedAggregator::new(settings.batch_size)),
                    )
                })
                .await?;
            batcher
                .produce(rs_record)
                .await
                .map_err(|source| Error::Produce {
                    topic: topic.name.clone(),
                    partition,
                    source,
                })
        };
        let started = Instant::now();
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(offset)) => {
                if let Some(m) = &settings.metrics {
                    m.record_produced(&topic.name, started.elapsed());
                }
                Ok(Delivery {
                    topic: topic.name.clone(),
                    partition,
                    offset,
                    timestamp,
                })
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::DeliveryTimeout {
                topic: topic.name.clone(),
                partition,
                timeout: settings.delivery_timeout,
            }),
        }
    }

    /// Sends every batch that is lingering and waits for the outstanding requests to finish.
    pub async fn flush(&self) -> Result<()> {
        let topics: Vec<_> = self.inner.topics.read().values().cloned().collect();
        for topic in topics {
            for p in &topic.partitions {
                if let Some(batcher) = p.batcher.get() {
                    batcher.flush().await.map_err(|source| Error::Produce {
                        topic: topic.name.clone(),
                        partition: p.partition,
                        source,
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Refuses new sends, then flushes what was already sent.
    pub async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.flush().await
    }

    /// Bytes of records sent but not yet acknowledged (at most `buffer.memory`).
    pub fn buffered_bytes(&self) -> usize {
        self.inner.settings.buffer_memory - self.inner.buffer.available_permits()
    }

    /// The number of partitions of `topic`, from the producer's metadata cache.
    pub async fn partition_count(&self, topic: &str) -> Result<i32> {
        Ok(self.topic(topic).await?.partitions.len() as i32)
    }

    fn choose_partition(
        &self,
        topic: &TopicProducer,
        record: &ProducerRecord,
        size: usize,
    ) -> Result<i32> {
        let count = topic.partitions.len() as i32;
        if let Some(p) = record.partition {
            if !(0..count).contains(&p) {
                return Err(Error::UnknownPartition {
                    topic: topic.name.clone(),
                    partition: p,
                    partitions: count,
                });
            }
            return Ok(p);
        }
        if let Some(key) = &record.key {
            return Ok(partition_for_key(key, count));
        }
        let sent = topic
            .unkeyed_bytes
            .fetch_add(size as u64, Ordering::Relaxed);
        let batch = self.inner.settings.batch_size as u64;
        Ok(((sent / batch) % count as u64) as i32)
    }

    /// The topic's partitions, from the cache or, when absent or older than `metadata.max.age.ms`,
    /// from a metadata request (retried until `max.block.ms` if the topic is not there yet).
    ///
    /// Invariant: a topic has one `PartitionProducer` per partition for the producer's lifetime, so
    /// each partition has one batcher and one leader connection however many sends race. Lookups
    /// are single-flight: one send refreshes a topic while the others wait for it (no entry yet) or
    /// go on with the stale entry (an entry to refresh). Without this, N concurrent first sends made
    /// N metadata requests and N sets of partition producers, each with its own connections.
    async fn topic(&self, name: &str) -> Result<Arc<TopicProducer>> {
        let inner = &self.inner;
        let fresh_enough =
            |t: &TopicProducer| t.fetched_at.elapsed() < inner.settings.metadata_max_age;
        let cached = inner.topics.read().get(name).cloned();
        if let Some(t) = &cached
            && fresh_enough(t)
        {
            return Ok(Arc::clone(t));
        }
        let lookup = Arc::clone(inner.lookups.lock().entry(name.to_owned()).or_default());
        let _looking_up = match &cached {
            // Someone else is refreshing: the stale view is as good as it was a moment ago.
            Some(t) => match lookup.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Ok(Arc::clone(t)),
            },
            None => lookup.lock().await,
        };
        // Whoever held the lock before may have just filled the cache.
        let cached = inner.topics.read().get(name).cloned();
        if let Some(t) = &cached
            && fresh_enough(t)
        {
            return Ok(Arc::clone(t));
        }

        let give_up = Instant::now() + inner.settings.max_block;
        let mut backoff = inner.settings.retry_backoff.start();
        let count = loop {
            let listed = inner.client.list_topics().await;
            match listed {
                Ok(topics) => {
                    if let Some(t) = topics.iter().find(|t| t.name == name) {
                        break t.partitions.len();
                    }
                    if let Some(t) = &cached {
                        // Metadata lost the topic for a moment (deleted and recreating?): keep the old view.
                        return Ok(Arc::clone(t));
                    }
                    if Instant::now() >= give_up {
                        return Err(Error::UnknownTopic {
                            topic: name.to_owned(),
                        });
                    }
                }
                Err(source) => {
                    if let Some(t) = &cached {
                        return Ok(Arc::clone(t));
                    }
                    if Instant::now() >= give_up {
                        return Err(Error::Kafka {
                            context: format!("looking up partitions of topic `{name}`"),
                            source: Arc::new(source),
                        });
                    }
                }
            }
            let delay = backoff
                .next_delay()
                .min(give_up.saturating_duration_since(Instant::now()));
            tokio::time::sleep(delay).await;
        };

        // Keep existing partition producers (their batches and connections) across refreshes.
        let partitions = (0..count as i32)
            .map(|p| {
                cached
                    .as_ref()
                    .and_then(|t| t.partitions.get(p as usize).cloned())
                    .unwrap_or_else(|| {
                        Arc::new(PartitionProducer {
                            partition: p,
                            batcher: OnceCell::new(),
                        })
                    })
            })
            .collect();
        let fresh = Arc::new(TopicProducer {
            name: name.to_owned(),
            partitions,
            unkeyed_bytes: AtomicU64::new(
                cached
                    .as_ref()
                    .map_or_else(rand_start, |t| t.unkeyed_bytes.load(Ordering::Relaxed)),
            ),
            fetched_at: Instant::now(),
        });
        inner
            .topics
            .write()
            .insert(name.to_owned(), Arc::clone(&fresh));
        Ok(fresh)
    }
}

/// A random start for the sticky round-robin, so many producers do not all begin on partition 0.
fn rand_start() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id()) % (1 << 40)
}

/// The headers as rskafka's record carries them: a map of UTF-8 names to non-null values. Headers it
/// cannot carry (a repeated name, a null value, a name that is not UTF-8) are refused, naming the
/// header, rather than changed in silence.
fn rskafka_headers(headers: &Headers) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut map = BTreeMap::new();
    for header in headers {
        let refuse = |why: &str| Error::InvalidRecord {
            reason: format!(
                "header {:?}: {why}; the producer's data plane (rskafka) carries one non-null value per UTF-8 name",
                header.name()
            ),
        };
        let name = std::str::from_utf8(header.name_bytes())
            .map_err(|_| refuse("its name is not UTF-8"))?;
        let value = header.value().ok_or_else(|| refuse("its value is null"))?;
        if map.insert(name.to_owned(), value.to_vec()).is_some() {
            return Err(refuse("the name is repeated"));
        }
    }
    Ok(map)
}

/// `headers` reduced to what [`rskafka_headers`] accepts: the last value of each name (at the place
/// of the first), null values as empty ones, names decoded lossily; and whether anything changed.
/// For the dead-letter path, which must not fail on what the original record carried.
pub(crate) fn carriable_headers(headers: Headers) -> (Headers, bool) {
    let mut order: Vec<String> = Vec::with_capacity(headers.len());
    let mut last: HashMap<String, Bytes> = HashMap::with_capacity(headers.len());
    let mut changed = false;
    for header in &headers {
        let name = header.name().into_owned();
        changed |= header.value().is_none() || name.as_bytes() != header.name_bytes();
        let value = header.value_bytes().cloned().unwrap_or_default();
        if last.insert(name.clone(), value).is_some() {
            changed = true;
        } else {
            order.push(name);
        }
    }
    if !changed {
        return (headers, false);
    }
    let mut reduced = Headers::with_capacity(order.len());
    for name in order {
        let value = last.remove(&name).unwrap_or_default();
        reduced.add(name, value);
    }
    (reduced, true)
}
