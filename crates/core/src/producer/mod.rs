//! The producer: kafkit's own, over its `wire` connections, idempotent by default.
//!
//! A `send` goes through these steps, each bounded:
//! 1. reserve the record's bytes in the buffer (`buffer.memory`): waits up to `max.block.ms` when
//!    full, so memory stays bounded and the caller feels the backpressure;
//! 2. look up the topic's partitions (metadata cached for `metadata.max.age.ms`);
//! 3. pick the partition: explicit, else `toPositive(murmur2(key)) % partitions`, else sticky;
//! 4. append the record to that partition's open batch in the accumulator (`accumulator`), encoded
//!    at once into a v2 record batch (`wire::records::BatchBuilder`);
//! 5. the sender of the partition's leader (`sender`, one task and one connection per broker)
//!    sends it in a ProduceRequest with the ready batches of the broker's other partitions, up to
//!    five requests in flight, retries it (keeping its sequence) until it is written or
//!    `delivery.timeout.ms` passes; the record's offset comes back to `send`.
//!
//! - `accumulator`: per-partition batch queues, readiness (`batch.size`, `linger.ms`, flush,
//!   retry backoff), sequence numbers and epoch bumps (pure logic, unit-tested).
//! - `sender`: the per-broker senders and the router (Metadata with leader epochs, InitProducerId,
//!   AddPartitionsToTxn).
//! - `transaction`: the transactional producer's state machine and its coordinator requests
//!   (InitProducerId with a transactional id, AddOffsetsToTxn, TxnOffsetCommit, EndTxn).

mod accumulator;
mod sender;
mod transaction;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use kafkit_metrics::Metrics;
use kafkit_resilience::{BackoffPolicy, ConfigError};
use parking_lot::RwLock;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::debug;

use accumulator::{Accumulator, Limits, RecordOutcome};
use sender::{IoSettings, Shared};
use transaction::{Transactions, TxnSettings};

use crate::config::ClientConfig;
use crate::group::{ConsumerGroupMetadata, TopicPartition};
use crate::headers::Headers;
use crate::partitioner::partition_for_key;
use crate::task::OwnedTask;
use crate::wire::records::Codec;
use crate::{Error, Result, TransactionErrorKind};

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
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Headers,
    timestamp: Option<DateTime<Utc>>,
}

impl ProducerRecord {
    /// A record with `value` for `topic`, no key (spread across partitions), no headers, timestamped at send.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
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
    pub fn tombstone(topic: impl Into<String>, key: impl Into<Bytes>) -> Self {
        Self {
            value: None,
            ..Self::new(topic, Bytes::new()).key(key)
        }
    }

    /// The key: records with equal keys go to the same partition, exactly as with the Java client.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sends to this partition instead of the key's.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Appends a header. Kafka allows several headers of one name: all are written, in order.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.add(name, value);
        self
    }

    /// Sets the record's W3C `traceparent` header (replacing any), so the consumer's span (and any
    /// tracing system downstream) continues this trace. Pass the current span's context, or
    /// [`Traceparent::child`](crate::Traceparent::child) of a consumed record's to relay it.
    ///
    /// ```
    /// use kafkit_core::{ProducerRecord, Traceparent};
    /// let tp: Traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap();
    /// let record = ProducerRecord::new("orders", b"v".to_vec()).with_traceparent(tp);
    /// assert_eq!(record.headers().traceparent(), Some(tp));
    /// ```
    pub fn with_traceparent(mut self, traceparent: crate::Traceparent) -> Self {
        self.headers.set_traceparent(traceparent);
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
            + self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
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

/// Compression of produced batches, all in pure Rust. Consumers read every codec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// No compression (the default, as in Java).
    #[default]
    None,
    /// gzip (`flate2` on `miniz_oxide`).
    Gzip,
    /// Snappy, in the xerial framing the Java producer writes.
    Snappy,
    /// LZ4 frames (`lz4_flex`).
    Lz4,
    /// Zstandard (`ruzstd`, its fastest level: about zstd's level 1).
    Zstd,
}

impl Compression {
    fn codec(self) -> Codec {
        match self {
            Compression::None => Codec::None,
            Compression::Gzip => Codec::Gzip,
            Compression::Snappy => Codec::Snappy,
            Compression::Lz4 => Codec::Lz4,
            Compression::Zstd => Codec::Zstd,
        }
    }
}

/// How many replicas must have a record before the broker acknowledges it. Corresponds to `acks`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Acks {
    /// `acks=0`: no answer at all; a record counts as delivered once written to the socket, and
    /// its [`Delivery::offset`] is -1. Needs idempotence off.
    None,
    /// `acks=1`: the leader wrote it; it is lost if the leader fails before followers copy it.
    /// Needs idempotence off.
    Leader,
    /// `acks=all` (-1): every in-sync replica has it (the default, as in Java since 3.0).
    #[default]
    All,
}

impl Acks {
    fn code(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
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
    request_timeout: Duration,
    max_block: Duration,
    retry_backoff: BackoffPolicy,
    retries: u32,
    compression: Compression,
    metadata_max_age: Duration,
    acks: Acks,
    idempotence: bool,
    max_in_flight: usize,
    transactional_id: Option<String>,
    transaction_timeout: Duration,
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
            request_timeout: Duration::from_secs(30),
            max_block: Duration::from_secs(60),
            retry_backoff: BackoffPolicy::new(
                Duration::from_millis(100),
                Duration::from_secs(1),
                2.0,
                0.2,
            )
            .expect("valid default backoff"),
            retries: u32::MAX,
            compression: Compression::None,
            metadata_max_age: Duration::from_secs(300),
            acks: Acks::All,
            idempotence: true,
            max_in_flight: 5,
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
            metrics: None,
        }
    }

    /// Makes the producer transactional: records are sent inside transactions
    /// ([`Producer::begin_transaction`] .. [`Producer::commit_transaction`]) that read_committed
    /// consumers see whole or not at all, and a newer producer with the same id fences this one
    /// (zombie fencing). Implies idempotence. Corresponds to `transactional.id`. Default none.
    pub fn transactional_id(mut self, id: impl Into<String>) -> Self {
        self.transactional_id = Some(id.into());
        self
    }

    /// How long the transaction coordinator lets a transaction stay open before it aborts it
    /// (and fences this producer's epoch). The broker caps it at `transaction.max.timeout.ms`
    /// (15 min by default). Corresponds to `transaction.timeout.ms`. Default 60 s.
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.transaction_timeout = timeout;
        self
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

    /// The most bytes in one batch (encoded, before compression); also the largest record. One
    /// ProduceRequest carries at most one batch per partition and at most `max(batch.size, 1 MiB)`
    /// of batches (always at least one). Corresponds to `batch.size` / `max.request.size`.
    /// Default 1 MiB.
    pub fn batch_size(mut self, bytes: usize) -> Self {
        self.batch_size = bytes;
        self
    }

    /// The most bytes of records sent but not yet acknowledged; `send` waits when it is full, up to
    /// `max.block.ms`. Corresponds to `buffer.memory`. Default 32 MiB.
    pub fn buffer_memory(mut self, bytes: usize) -> Self {
        self.buffer_memory = bytes;
        self
    }

    /// Upper bound on one `send`, from the call to the acknowledgement, retries included.
    /// Corresponds to `delivery.timeout.ms`. Default 120 s.
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// How long one ProduceRequest may wait for its answer before it counts as failed (and its
    /// batches are retried on a new connection); also the broker's `timeout_ms` for replication.
    /// Corresponds to `request.timeout.ms`. Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long `send` waits for a topic to appear in metadata (else [`Error::UnknownTopic`]) and
    /// for room in the buffer (else [`Error::BufferExhausted`]). Corresponds to `max.block.ms`.
    /// Default 60 s.
    pub fn max_block(mut self, timeout: Duration) -> Self {
        self.max_block = timeout;
        self
    }

    /// Backoff between retries of a failed batch. Corresponds to `retry.backoff.ms` /
    /// `retry.backoff.max.ms`. Default 100 ms doubling to 1 s, bounded by the client's reconnect
    /// backoff: no sooner than `reconnect.backoff.ms`, no later than `reconnect.backoff.max.ms`
    /// ([`ClientConfig::reconnect_backoff`]).
    pub fn retry_backoff(mut self, policy: BackoffPolicy) -> Self {
        self.retry_backoff = policy;
        self
    }

    /// How many times a batch is sent again after a retriable error (the delivery timeout bounds
    /// it too). Corresponds to `retries`. Default unbounded (Java's `Integer.MAX_VALUE`).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Batch compression. Corresponds to `compression.type`. Default none.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// How long partition counts and leaders are cached before they are looked up again (a topic
    /// may grow). Corresponds to `metadata.max.age.ms`. Default 5 min.
    pub fn metadata_max_age(mut self, age: Duration) -> Self {
        self.metadata_max_age = age;
        self
    }

    /// Acknowledgement level. Corresponds to `acks`. Default [`Acks::All`]; [`Acks::None`] and
    /// [`Acks::Leader`] need [`idempotence`](Self::idempotence) off.
    pub fn acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }

    /// Idempotent writes: a producer id and per-partition sequence numbers, so a retried batch is
    /// written once and each partition keeps the order of `send`s. Corresponds to
    /// `enable.idempotence`. Default on (as in Java since 3.0).
    pub fn idempotence(mut self, enabled: bool) -> Self {
        self.idempotence = enabled;
        self
    }

    /// ProduceRequests in flight per broker connection. Corresponds to
    /// `max.in.flight.requests.per.connection`. Default 5 (at most 5 with idempotence).
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests;
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
        if self.request_timeout.is_zero() {
            return Err(ConfigError::new("request.timeout.ms", "must be greater than zero").into());
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::new(
                "max.in.flight.requests.per.connection",
                "must be at least 1",
            )
            .into());
        }
        if self.transactional_id.is_some() {
            if !self.idempotence {
                return Err(ConfigError::new(
                    "enable.idempotence",
                    "must be true when transactional.id is set",
                )
                .into());
            }
            if self.transactional_id.as_deref() == Some("") {
                return Err(ConfigError::new("transactional.id", "must not be empty").into());
            }
        }
        if self.transaction_timeout < Duration::from_millis(1)
            || self.transaction_timeout.as_millis() > i32::MAX as u128
        {
            return Err(ConfigError::new(
                "transaction.timeout.ms",
                format!("must be between 1 ms and {} ms", i32::MAX),
            )
            .into());
        }
        if self.idempotence {
            if self.acks != Acks::All {
                return Err(ConfigError::new(
                    "acks",
                    "must be all when enable.idempotence is true; turn idempotence off for acks 0 or 1",
                )
                .into());
            }
            if self.max_in_flight > 5 {
                return Err(ConfigError::new(
                    "max.in.flight.requests.per.connection",
                    "must be at most 5 when enable.idempotence is true",
                )
                .into());
            }
            if self.retries == 0 {
                return Err(ConfigError::new(
                    "retries",
                    "must be greater than 0 when enable.idempotence is true",
                )
                .into());
            }
        }
        Ok(())
    }

    /// The backoff between retries of a batch: [`retry_backoff`](Self::retry_backoff) bounded by
    /// the client's reconnect backoff (`reconnect.backoff.ms` .. `reconnect.backoff.max.ms`).
    pub(crate) fn retry_policy(&self) -> BackoffPolicy {
        self.client.reconnect_bounded(self.retry_backoff)
    }

    /// Validates the settings and connects to the cluster (a bootstrap broker must answer, and
    /// security settings are checked there, within the connect timeout).
    pub async fn build(self) -> Result<Producer> {
        self.validate()?;
        let control = self.client.bootstrap_connection().await?;
        debug!(bootstrap = ?self.client.bootstrap(), idempotence = self.idempotence, acks = ?self.acks, "producer connected");
        let limits = Limits {
            batch_size: self.batch_size,
            linger: self.linger,
            max_in_flight: self.max_in_flight,
            retries: self.retries,
            delivery_timeout: self.delivery_timeout,
            backoff: self.retry_policy(),
            codec: self.compression.codec(),
            idempotent: self.idempotence,
            transactional: self.transactional_id.is_some(),
        };
        let io = IoSettings {
            acks: self.acks.code(),
            request_timeout: self.request_timeout,
            max_in_flight: self.max_in_flight,
            max_request_size: self.batch_size.max(1024 * 1024),
            backoff: self.retry_policy(),
            metadata_max_age: self.metadata_max_age,
            transactional_id: self.transactional_id.clone(),
        };
        let txn = self.transactional_id.as_ref().map(|id| {
            Arc::new(Transactions::new(
                TxnSettings {
                    id: id.clone(),
                    timeout: self.transaction_timeout,
                    max_block: self.max_block,
                    request_timeout: self.request_timeout,
                    backoff: self.retry_policy(),
                },
                &self.client,
            ))
        });
        let shared = Arc::new(Shared::new(
            Accumulator::new(limits),
            self.client.clone(),
            io,
            control,
            txn,
        ));
        let router = OwnedTask::spawn(sender::run_router(Arc::clone(&shared)));
        let active = self.metrics.as_ref().map(Metrics::producer_active);
        Ok(Producer {
            inner: Arc::new(Inner {
                _active: active,
                shared,
                _router: router,
                buffer: Arc::new(Semaphore::new(self.buffer_memory)),
                topics: RwLock::new(HashMap::new()),
                lookups: parking_lot::Mutex::new(HashMap::new()),
                gate: parking_lot::Mutex::new(Gate::default()),
                gate_moved: Notify::new(),
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

#[derive(Debug)]
struct Inner {
    /// Counts this producer in the metrics' active producers while it lives.
    _active: Option<kafkit_metrics::ActiveGuard>,
    /// The accumulator and what the I/O tasks share.
    shared: Arc<Shared>,
    /// The router task, which owns the senders: dropping the producer stops them.
    _router: OwnedTask<()>,
    settings: ProducerBuilder,
    /// Bytes of records in flight; `send` holds permits for its record until acknowledged.
    buffer: Arc<Semaphore>,
    /// Topic name -> partition count. parking_lot RwLock, not tokio's: held only to clone an `Arc`
    /// out or to swap one in, never across an await, and read on every send.
    topics: RwLock<HashMap<String, Arc<TopicInfo>>>,
    /// Topic name -> the lock held while that topic's metadata is looked up: lookups are
    /// single-flight per topic (see `Producer::topic`), and a slow topic does not hold up others.
    lookups: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The call order of sends that had to wait (see [`Producer::send`]). parking_lot Mutex:
    /// never held across an await.
    gate: parking_lot::Mutex<Gate>,
    /// Notified when `gate.done` moves (for commits and aborts waiting for every earlier send).
    gate_moved: Notify,
    closed: AtomicBool,
}

#[derive(Debug)]
struct TopicInfo {
    name: String,
    partitions: i32,
    /// `(name, p)` for each partition `p`: built once, so a send clones no topic name.
    tps: Vec<TopicPartition>,
    /// Bytes of unkeyed records sent; `/ batch_size` picks the sticky partition, so unkeyed records
    /// fill one partition's batch before moving to the next (Java's sticky partitioner, lock-free).
    unkeyed_bytes: AtomicU64,
    fetched_at: Instant,
}

/// How `send` began: appended at the call, or waiting for its turn (boxed: the common case, an
/// append at the call, keeps its future small).
enum Begun {
    Appended(Appended),
    /// Appends the record once its turn comes and the buffer has room.
    Waiting(Pin<Box<dyn Future<Output = Result<Appended>> + Send>>),
}

/// A record in its partition's batch, waiting for its outcome.
struct Appended {
    /// Keeps the producer (and its I/O) alive until the outcome.
    producer: Producer,
    topic: Arc<TopicInfo>,
    partition: i32,
    timestamp: DateTime<Utc>,
    outcome: RecordOutcome,
    /// When it was appended, for the metrics' produce latency (read only with metrics on).
    started: Option<Instant>,
}

impl Appended {
    /// Waits for the record's outcome. The delivery timeout is the accumulator's: a batch that
    /// passes it fails, with every record in it.
    async fn delivered(self) -> Result<Delivery> {
        let offset = self.outcome.wait().await?;
        if let (Some(m), Some(started)) = (&self.producer.inner.settings.metrics, self.started) {
            m.record_produced(&self.topic.name, started.elapsed());
        }
        Ok(Delivery {
            topic: self.topic.name.clone(),
            partition: self.partition,
            offset,
            timestamp: self.timestamp,
        })
    }
}

/// The order in which sends that had to wait append their records: tickets are taken in call
/// order, and each waits until the ones before it are done (appended, failed or dropped).
#[derive(Debug, Default)]
struct Gate {
    /// Tickets handed out.
    issued: u64,
    /// Tickets done: every ticket below it appended, failed or was dropped.
    done: u64,
    /// Tickets above `done` whose sends were dropped before their turn.
    abandoned: BTreeSet<u64>,
    /// The waker of each ticket that was polled before its turn. Only the ticket whose turn comes
    /// is woken: thousands of sends waiting for buffer room cost one wake-up per turn, not one
    /// each per turn.
    turns: HashMap<u64, Waker>,
}

impl Gate {
    /// Ends the ticket `done` and skips the abandoned ones after it; returns the waker of the
    /// ticket whose turn it is now, to wake once the lock is released.
    fn advance(&mut self) -> Option<Waker> {
        self.done += 1;
        while self.abandoned.remove(&self.done) {
            self.done += 1;
        }
        self.turns.remove(&self.done)
    }
}

/// A waiting send's ticket: its turn, and the end of it (also when the send is dropped, polled
/// or not).
struct Turn {
    producer: Producer,
    ticket: u64,
    over: bool,
}

impl Turn {
    /// Waits until every ticket before this one is done.
    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            let mut gate = self.producer.inner.gate.lock();
            if gate.done == self.ticket {
                return Poll::Ready(());
            }
            gate.turns.insert(self.ticket, cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    /// Ends the turn: the next ticket goes.
    fn end(&mut self) {
        self.over = true;
        let inner = &self.producer.inner;
        let next = inner.gate.lock().advance();
        if let Some(waker) = next {
            waker.wake();
        }
        inner.gate_moved.notify_waiters();
    }

    /// Waits for the turn, appends the record and ends the turn.
    async fn append(mut self, record: ProducerRecord) -> Result<Appended> {
        self.wait().await;
        let appended = self.producer.append_waiting(record).await;
        self.end();
        appended
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if self.over {
            return;
        }
        let mut gate = self.producer.inner.gate.lock();
        if gate.done == self.ticket {
            drop(gate);
            self.end();
        } else {
            gate.turns.remove(&self.ticket);
            gate.abandoned.insert(self.ticket);
        }
    }
}

impl Producer {
    /// Sends `record` and waits until the broker acknowledges it (as `acks` says), returning where
    /// it was written.
    ///
    /// **Order.** The record is appended to its partition's batch when `send` is *called*, when it
    /// can be: the topic's metadata is cached and the buffer has room. Otherwise the returned future
    /// waits (for room, up to `max.block.ms`, or for the topic's metadata) and appends the record
    /// then, after every send called before it that had to wait too, and no send called after it
    /// appends first. So records sent to one partition from one task are written in the order of
    /// the calls, however their futures are awaited (e.g. many at once); with idempotence this
    /// holds through retries. Headers are written as given: repeated names, null values and names
    /// that are not UTF-8 included.
    ///
    /// Retriable failures (broker down, leader moved) are retried with backoff until the delivery
    /// timeout; then, or on a non-retriable failure, the error is returned. A record is never
    /// dropped silently.
    pub fn send(
        &self,
        record: ProducerRecord,
    ) -> impl Future<Output = Result<Delivery>> + Send + 'static {
        let begun = self.begin(record);
        async move {
            match begun? {
                Begun::Appended(appended) => appended.delivered().await,
                Begun::Waiting(waiting) => waiting.await?.delivered().await,
            }
        }
    }

    /// Sends every record of `records`, in order, as calling [`send`](Self::send) on each would,
    /// and waits until all of them are acknowledged or failed; returns each one's outcome, in the
    /// order given. One future for the lot: the records of a batch are acknowledged together, so
    /// this waits once per batch, where a future per record is woken once per record. Records
    /// that find the buffer full append, in order, as room frees, without waiting for the
    /// acknowledgements of the ones before them.
    ///
    /// Records without a timestamp get the time of this call (one clock read for the lot, where
    /// `send` reads it per record), and the records are begun under one hold of the send order's
    /// lock, each topic looked up once.
    pub fn send_all(
        &self,
        records: impl IntoIterator<Item = ProducerRecord>,
    ) -> impl Future<Output = Vec<Result<Delivery>>> + Send + 'static {
        let records = records.into_iter();
        let mut begun: Vec<Result<Begun>> = Vec::with_capacity(records.size_hint().0);
        let now = Utc::now();
        let mut topic = None;
        {
            let mut gate = self.inner.gate.lock();
            for mut record in records {
                record.timestamp.get_or_insert(now);
                begun.push(self.begin_locked(&mut gate, record, &mut topic));
            }
        }
        async move {
            let mut appended = Vec::with_capacity(begun.len());
            for begun in begun {
                appended.push(match begun {
                    Ok(Begun::Appended(a)) => Ok(a),
                    Ok(Begun::Waiting(waiting)) => waiting.await,
                    Err(e) => Err(e),
                });
            }
            let mut delivered = Vec::with_capacity(appended.len());
            for a in appended {
                delivered.push(match a {
                    Ok(a) => a.delivered().await,
                    Err(e) => Err(e),
                });
            }
            delivered
        }
    }

    /// The synchronous part of `send`: checks the record, and appends it at once when the topic is
    /// cached, the buffer has room and no earlier send is waiting; else takes a ticket.
    fn begin(&self, record: ProducerRecord) -> Result<Begun> {
        let mut gate = self.inner.gate.lock();
        self.begin_locked(&mut gate, record, &mut None)
    }

    /// [`begin`](Self::begin) under the send order's lock. `last_topic`: the topic the previous
    /// record of the same call found in the cache, reused while the records name it.
    fn begin_locked(
        &self,
        gate: &mut Gate,
        record: ProducerRecord,
        last_topic: &mut Option<Arc<TopicInfo>>,
    ) -> Result<Begun> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed { what: "producer" });
        }
        if let Some(txn) = &inner.shared.txn {
            txn.check_send()?;
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
        if gate.issued == gate.done {
            let cached = match last_topic.take() {
                Some(topic) if topic.name == record.topic => Some(topic),
                _ => inner
                    .topics
                    .read()
                    .get(&record.topic)
                    .filter(|t| t.fetched_at.elapsed() < settings.metadata_max_age)
                    .cloned(),
            };
            if let Some(topic) = cached {
                *last_topic = Some(Arc::clone(&topic));
                // `size <= batch_size <= buffer_memory < 4 GiB`.
                if let Ok(permit) = Arc::clone(&inner.buffer).try_acquire_many_owned(size as u32) {
                    return self.append(topic, record, permit).map(Begun::Appended);
                }
            }
        }
        let turn = Turn {
            producer: self.clone(),
            ticket: gate.issued,
            over: false,
        };
        gate.issued += 1;
        Ok(Begun::Waiting(Box::pin(turn.append(record))))
    }

    /// The waiting part of `send` (its turn come): room in the buffer (the backpressure point, up
    /// to `max.block.ms`), the topic's metadata, then the append.
    async fn append_waiting(&self, record: ProducerRecord) -> Result<Appended> {
        let inner = &self.inner;
        let settings = &inner.settings;
        let acquire = Arc::clone(&inner.buffer).acquire_many_owned(record.size() as u32);
        let permit = tokio::time::timeout(settings.max_block, acquire)
            .await
            .map_err(|_| Error::BufferExhausted {
                capacity: settings.buffer_memory,
                waited: settings.max_block,
            })?
            .map_err(|_| Error::Closed { what: "producer" })?;
        let topic = self.topic(&record.topic).await?;
        if let Some(txn) = &inner.shared.txn {
            // The record joins the transaction open now, which must be the one it was sent in:
            // commit and abort wait for waiting sends before they end it.
            txn.check_send()?;
        }
        self.append(topic, record, permit)
    }

    /// Waits until every send called so far that had to wait (metadata, buffer room) has appended
    /// its record (or failed), so a commit or an abort covers it. Up to `max.block.ms`.
    async fn sends_appended(&self, operation: &'static str, id: &str) -> Result<()> {
        let inner = &self.inner;
        let issued = inner.gate.lock().issued;
        let wait = async {
            loop {
                let moved = inner.gate_moved.notified();
                tokio::pin!(moved);
                moved.as_mut().enable();
                if inner.gate.lock().done >= issued {
                    return;
                }
                moved.await;
            }
        };
        tokio::time::timeout(inner.settings.max_block, wait)
            .await
            .map_err(|_| Error::Transaction {
                transactional_id: id.to_owned(),
                operation,
                kind: TransactionErrorKind::Timeout,
                reason: format!(
                    "sends called before it were still waiting to append their records after                      max.block.ms ({:?}): await or spawn the futures `send` returned",
                    inner.settings.max_block
                ),
            })
    }

    /// Appends `record` to its partition's batch.
    fn append(
        &self,
        topic: Arc<TopicInfo>,
        record: ProducerRecord,
        permit: OwnedSemaphorePermit,
    ) -> Result<Appended> {
        let inner = &self.inner;
        let partition = self.choose_partition(&topic, &record, record.size())?;
        let timestamp = record.timestamp.unwrap_or_else(Utc::now);
        // `choose_partition` returns one of the topic's partitions.
        let tp = &topic.tps[partition as usize];
        let started = inner.settings.metrics.as_ref().map(|_| Instant::now());
        let appended = inner.shared.acc.lock().append(
            tp,
            timestamp.timestamp_millis(),
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
            permit,
            || started.unwrap_or_else(Instant::now),
        );
        if appended.wake {
            inner.shared.wake(appended.leader);
        }
        if let Some(txn) = &inner.shared.txn {
            txn.note_appended();
        }
        Ok(Appended {
            producer: self.clone(),
            topic,
            partition,
            timestamp,
            outcome: appended.outcome,
            started,
        })
    }

    /// Sends every batch that is lingering and waits until every record sent before the call is
    /// acknowledged or failed (each `send` returns its own outcome).
    pub async fn flush(&self) -> Result<()> {
        let shared = &self.inner.shared;
        let until = shared.acc.lock().flush();
        shared.wake_all();
        shared.finished(until).await;
        Ok(())
    }

    /// The transaction manager, or an error naming `operation` for a producer without a
    /// `transactional.id`.
    fn transactions(&self, operation: &'static str) -> Result<&Transactions> {
        self.inner.shared.txn.as_deref().ok_or(Error::Transaction {
            transactional_id: String::new(),
            operation,
            kind: TransactionErrorKind::InvalidState,
            reason: "the producer has no transactional.id".into(),
        })
    }

    /// Registers the `transactional.id` with its transaction coordinator: fences every earlier
    /// producer with the same id (their open transaction is aborted; their next call fails with
    /// [`TransactionErrorKind::Fenced`]) and gets this producer's id and epoch. Retries
    /// CONCURRENT_TRANSACTIONS and a loading coordinator up to `max.block.ms`. Uses transaction
    /// version 2 (KIP-890) when the cluster finalizes `transaction.version` >= 2, else version 1.
    /// Call once, before the first transaction. Java's `initTransactions`.
    ///
    /// ```no_run
    /// # async fn demo() -> kafkit_core::Result<()> {
    /// use kafkit_core::{ClientConfig, ProducerBuilder, ProducerRecord};
    /// let producer = ProducerBuilder::new(ClientConfig::new(["localhost:9092"])?)
    ///     .transactional_id("orders-copier-0")
    ///     .build()
    ///     .await?;
    /// producer.init_transactions().await?;
    /// producer.begin_transaction().await?;
    /// let sent = producer.send(ProducerRecord::new("orders", "hello"));
    /// producer.commit_transaction().await?; // flushes, then commits
    /// sent.await?;
    /// # Ok(()) }
    /// ```
    pub async fn init_transactions(&self) -> Result<()> {
        self.transactions("init_transactions")?
            .init(&self.inner.shared)
            .await
    }

    /// Opens a transaction: the records sent until [`commit_transaction`](Self::commit_transaction)
    /// or [`abort_transaction`](Self::abort_transaction) belong to it. Local only. Java's
    /// `beginTransaction`.
    pub async fn begin_transaction(&self) -> Result<()> {
        self.transactions("begin_transaction")?.begin().await
    }

    /// Adds consumed offsets to the open transaction: they are committed for `group` if and
    /// only if the transaction commits. `offsets` are the next offsets to read (the last
    /// processed plus one), as for a plain commit. The group coordinator checks `group`'s
    /// generation and member id, so a member that lost its partitions in a rebalance cannot commit for them (KIP-447);
    /// that refusal is [`TransactionErrorKind::Abortable`]. Java's `sendOffsetsToTransaction`.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: impl IntoIterator<Item = (TopicPartition, i64)>,
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        let offsets: Vec<(TopicPartition, i64)> = offsets.into_iter().collect();
        self.transactions("send_offsets_to_transaction")?
            .send_offsets(&self.inner.shared, &offsets, group)
            .await
    }

    /// Commits the open transaction: waits for the sends called before it to append their records
    /// (a send that found no metadata or buffer room appends when its future runs: await or spawn
    /// it), flushes, and once every record is acknowledged ends the transaction (EndTxn). If a record failed, nothing is committed and the error is
    /// [`TransactionErrorKind::Abortable`]: call [`abort_transaction`](Self::abort_transaction).
    /// A [`TransactionErrorKind::Timeout`] may be retried by calling this again. Java's
    /// `commitTransaction`.
    pub async fn commit_transaction(&self) -> Result<()> {
        let txn = self.transactions("commit_transaction")?;
        self.sends_appended("commit_transaction", txn.id()).await?;
        txn.commit(&self.inner.shared).await
    }

    /// Aborts the open transaction: once the sends called before it appended their records (as
    /// for a commit), records not yet sent fail (their `send` returns an abortable error), records in flight are waited for, then the coordinator writes the abort markers;
    /// read_committed consumers skip every record of it. Java's `abortTransaction`.
    pub async fn abort_transaction(&self) -> Result<()> {
        let txn = self.transactions("abort_transaction")?;
        self.sends_appended("abort_transaction", txn.id()).await?;
        txn.abort(&self.inner.shared).await
    }

    /// The `transactional.id`, if the producer is transactional.
    pub fn transactional_id(&self) -> Option<&str> {
        self.inner.shared.txn.as_deref().map(Transactions::id)
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
        Ok(self.topic(topic).await?.partitions)
    }

    fn choose_partition(
        &self,
        topic: &TopicInfo,
        record: &ProducerRecord,
        size: usize,
    ) -> Result<i32> {
        let count = topic.partitions;
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

    /// The topic's partition count, from the cache or, when absent or older than
    /// `metadata.max.age.ms`, from a metadata request (retried until `max.block.ms` if the topic is
    /// not there yet). The same request gives the partitions' leaders to the accumulator.
    ///
    /// Lookups are single-flight: one send refreshes a topic while the others wait for it (no
    /// entry yet) or go on with the stale entry (an entry to refresh).
    async fn topic(&self, name: &str) -> Result<Arc<TopicInfo>> {
        let inner = &self.inner;
        let fresh_enough = |t: &TopicInfo| t.fetched_at.elapsed() < inner.settings.metadata_max_age;
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
            match inner.shared.metadata(&[name.to_owned()]).await {
                Ok(counts) => {
                    if let Some(&count) = counts.get(name) {
                        break count;
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
                Err(error) => {
                    if let Some(t) = &cached {
                        return Ok(Arc::clone(t));
                    }
                    if Instant::now() >= give_up {
                        return Err(error);
                    }
                }
            }
            let delay = backoff
                .next_delay()
                .min(give_up.saturating_duration_since(Instant::now()));
            tokio::time::sleep(delay).await;
        };
        inner.shared.wake_all();
        let fresh = Arc::new(TopicInfo {
            name: name.to_owned(),
            partitions: count,
            tps: (0..count).map(|p| TopicPartition::new(name, p)).collect(),
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
