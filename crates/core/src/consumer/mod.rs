//! The consumer: at-least-once processing where one slow or failing record does not block the
//! others, offsets are committed only for finished work, and a rebalance or shutdown loses nothing.
//!
//! Three pieces with narrow hand-offs: the group member (`crate::group`) decides what this consumer
//! owns; the fetcher keeps one fetch in flight per leader broker; the engine dispatches
//! records per [`DispatchMode`] and commits the contiguous completed watermark of each partition.
//!
//! - `engine`: the actor that owns partition state, dispatches, tracks acks and commits.
//! - `fetcher`: one fetch task, connection and fetch session per leader broker, bounded by a shared
//!   byte budget.
//! - `scheduler`: which queued records of a partition may start, per dispatch mode.
//! - `watermark`: the contiguous completed offset of a partition.
//! - `offset_map`: the compact record of finished offsets above the watermark kept in commit metadata.
//! - `failure`: one record's failure path: retry policy, circuit breaker, dead-letter topic.
//! - `status`: what the engine observes, for [`HealthHandle`] reports.
//! - `record`: [`ConsumedRecord`], the acknowledgeable [`StreamRecord`], and the transform's runs.
//! - `transform`: exactly-once consume-transform-produce ([`Consumer::run_transform`]) over the
//!   dispatcher's runs of consecutive records and a transactional producer.

pub(crate) mod dispatcher;
mod engine;
pub(crate) mod failure;
mod fetcher;
mod offset_map;
pub(crate) mod record;
mod scheduler;
mod status;
mod transform;
mod watermark;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use kafkit_metrics::Metrics;
use kafkit_resilience::{
    BackoffPolicy, CircuitBreaker, CircuitBreakerPolicy, ConfigError, DeadLetterPolicy,
    HealthPolicy, ResilienceConfig, RetryPolicy,
};
use tokio::sync::{mpsc, watch};

pub use dispatcher::BoxError;
#[cfg(feature = "__bench")]
#[doc(hidden)]
pub use dispatcher::bench;
pub use failure::HandlerPanic;
pub use record::{ConsumedRecord, StreamRecord};
pub use scheduler::DispatchMode;
pub use status::HealthHandle;
pub use transform::TransformConfig;

use crate::group::{CommitReport, GroupConfig, GroupMember, OffsetToCommit, TopicPartition};
use crate::task::OwnedTask;
use crate::{ClientConfig, Error, Result};
use dispatcher::{BatchFn, HandlerFn, Sink};
use engine::Engine;
use failure::{DeadLetter, FailurePath, HandlerError};
use fetcher::FetchSettings;
use record::{Received, StreamItem};
use status::StatusBoard;

/// Where to start a partition that has no committed offset. Corresponds to `auto.offset.reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// The oldest record still in the log.
    Earliest,
    /// The next record produced (the Java default).
    Latest,
    /// Fail with [`crate::Error::NoOffset`]: the operator must set an offset.
    None,
}

/// What the consumer does with a fetched record batch it cannot decode (a CRC mismatch, an unknown
/// message format or codec, malformed records): input no retry can fix, which must neither stall
/// its partition nor pass in silence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CorruptBatchPolicy {
    /// Log it at error level with topic, partition and offsets, count it in metrics, report it in
    /// health (the `records` check), and move the partition's position past the batch, so the
    /// partition keeps moving. The records before it in the same response are processed as usual.
    #[default]
    Skip,
    /// Stop the consumer with [`crate::Error::CorruptBatch`] once the records
    /// before it are processed; nothing past it is committed. An operator then decides (e.g. moves
    /// the group's offset past it with `kafka-consumer-groups --reset-offsets`).
    Stop,
}

/// Settings of a [`Consumer`]; each setter names the Java setting it mirrors where there is one.
#[derive(Debug, Clone)]
pub struct ConsumerBuilder {
    client: ClientConfig,
    group: GroupConfig,
    settings: ConsumerSettings,
    retry: RetryPolicy,
    breaker: Option<CircuitBreakerPolicy>,
    dead_letter: Option<DeadLetter>,
    metrics: Option<Metrics>,
    health: HealthPolicy,
}

#[derive(Debug, Clone)]
pub(crate) struct ConsumerSettings {
    pub(crate) mode: DispatchMode,
    pub(crate) commit_interval: Duration,
    pub(crate) revoke_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) buffer_bytes: usize,
    pub(crate) offset_map: bool,
    pub(crate) offset_map_max_bytes: usize,
    pub(crate) fetch: FetchSettings,
    pub(crate) listener: Option<Arc<dyn ConsumerListener>>,
    /// Whether the engine commits finished watermarks. Off in the exactly-once mode, whose
    /// transactions commit the offsets (see `Engine::commit_watermarks`).
    pub(crate) engine_commits: bool,
}

/// Observes what a consumer does with its partitions and commits, e.g. to log, export or verify
/// them. Called on the consumer's engine task: keep each call short and never block.
pub trait ConsumerListener: Send + Sync + 'static {
    /// Partitions now owned; fetching starts.
    fn assigned(&self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }

    /// A revocation of these partitions begins: their records stop being handed out, and the
    /// consumer waits (up to `revoke_timeout`) for those in flight before committing and releasing
    /// them. The exactly-once mode ([`Consumer::run_transform`]) aborts its open transaction
    /// when it holds their records.
    fn revoking(&self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }

    /// Partitions released after a revocation, once their final commit was attempted.
    fn revoked(&self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }

    /// Partitions lost without a commit (session expired, member fenced).
    fn lost(&self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }

    /// A commit of these offsets is about to be sent (only ever for partitions owned right now).
    fn committing(&self, offsets: &[OffsetToCommit]) {
        let _ = offsets;
    }

    /// A commit finished (periodic, on revocation or at shutdown). It may finish after the
    /// partitions were revoked or lost: it was sent while they were owned.
    fn committed(&self, result: &Result<CommitReport>) {
        let _ = result;
    }
}

impl std::fmt::Debug for dyn ConsumerListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsumerListener")
    }
}

impl ConsumerBuilder {
    /// A consumer in the group described by `group`, on the cluster described by `client`, processing
    /// partitions in order (`PartitionOrdered`) until told otherwise.
    pub fn new(client: ClientConfig, group: GroupConfig) -> Self {
        Self {
            client,
            group,
            retry: RetryPolicy::default(),
            breaker: Some(CircuitBreakerPolicy::default()),
            dead_letter: None,
            metrics: None,
            health: HealthPolicy::default(),
            settings: ConsumerSettings {
                mode: DispatchMode::PartitionOrdered,
                commit_interval: Duration::from_secs(5),
                engine_commits: true,
                revoke_timeout: Duration::from_secs(30),
                shutdown_timeout: Duration::from_secs(30),
                buffer_bytes: 64 * 1024 * 1024,
                offset_map: true,
                offset_map_max_bytes: 4096,
                fetch: FetchSettings {
                    max_partition_bytes: 1024 * 1024,
                    max_bytes: 50 * 1024 * 1024,
                    max_wait: Duration::from_millis(500),
                    request_timeout: Duration::from_secs(30),
                    backoff: BackoffPolicy::new(
                        Duration::from_millis(100),
                        Duration::from_secs(10),
                        2.0,
                        0.2,
                    )
                    .expect("valid default backoff"),
                    reset: OffsetReset::Latest,
                    corrupt: CorruptBatchPolicy::Skip,
                    rack: None,
                    replica_max_age: Duration::from_secs(300),
                    max_idle: Duration::from_secs(540),
                },
                listener: None,
            },
        }
    }

    /// What to do with a fetched batch that cannot be decoded. Default [`CorruptBatchPolicy::Skip`].
    pub fn on_corrupt_batch(mut self, policy: CorruptBatchPolicy) -> Self {
        self.settings.fetch.corrupt = policy;
        self
    }

    /// How records of a partition may run concurrently. Default `PartitionOrdered`.
    pub fn dispatch(mut self, mode: DispatchMode) -> Self {
        self.settings.mode = mode;
        self
    }

    /// How often finished work is committed. Corresponds to `auto.commit.interval.ms` (but only acked
    /// records are ever committed). Default 5 s.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.settings.commit_interval = interval;
        self
    }

    /// How long a revocation waits for the partition's in-flight records before committing what is
    /// finished and releasing it. Must be below the group's rebalance timeout. Default 30 s.
    pub fn revoke_timeout(mut self, timeout: Duration) -> Self {
        self.settings.revoke_timeout = timeout;
        self
    }

    /// How long [`ShutdownHandle::shutdown`] may take: stop fetching, drain in-flight records, commit,
    /// leave the group. Past it, the rest is abandoned and reported. Default 30 s
    /// (`KAFKA_SHUTDOWN_TIMEOUT` in the users' configuration).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.settings.shutdown_timeout = timeout;
        self
    }

    /// The most bytes of fetched records held in memory across all partitions (their responses plus
    /// about 160 bytes per record for its in-memory form); fetching pauses when it is reached. Each
    /// Fetch (one per broker) reserves twice what it may return (at most its fair part of this)
    /// before it is sent and gives back what its response does not need. Default 64 MiB.
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.settings.buffer_bytes = bytes;
        self
    }

    /// The most bytes one fetch returns per partition. Corresponds to `max.partition.fetch.bytes`.
    /// Default 1 MiB.
    pub fn max_partition_fetch_bytes(mut self, bytes: usize) -> Self {
        self.settings.fetch.max_partition_bytes = bytes;
        self
    }

    /// The most bytes one Fetch returns; the consumer sends one Fetch per broker, covering every
    /// partition that broker leads for it. Corresponds to `fetch.max.bytes`. Default 50 MiB. Each
    /// Fetch also stays within its part of [`buffer_bytes`](Self::buffer_bytes).
    pub fn fetch_max_bytes(mut self, bytes: usize) -> Self {
        self.settings.fetch.max_bytes = bytes;
        self
    }

    /// How long the broker may hold a fetch waiting for data. Corresponds to `fetch.max.wait.ms`.
    /// Default 500 ms.
    pub fn fetch_max_wait(mut self, wait: Duration) -> Self {
        self.settings.fetch.max_wait = wait;
        self
    }

    /// How long the consumer fetches a partition from the replica its leader pointed it at (KIP-392,
    /// see [`GroupConfig::rack_id`]) before it asks the leader again. Corresponds to
    /// `metadata.max.age.ms`, which bounds the same thing in Java. Default 5 min.
    pub fn metadata_max_age(mut self, age: Duration) -> Self {
        self.settings.fetch.replica_max_age = age;
        self
    }

    /// How long a fetch connection to a broker that no longer serves any of the consumer's
    /// partitions stays open (leadership moved away, partitions revoked or moved to a read
    /// replica). Corresponds to `connections.max.idle.ms`. Default 9 min, as in Java.
    pub fn connections_max_idle(mut self, idle: Duration) -> Self {
        self.settings.fetch.max_idle = idle;
        self
    }

    /// Where to start partitions without a committed offset. Corresponds to `auto.offset.reset`.
    /// Default `Latest`, as in Java.
    pub fn auto_offset_reset(mut self, reset: OffsetReset) -> Self {
        self.settings.fetch.reset = reset;
        self
    }

    /// How a failing handler is retried: attempts, backoff between them, and which errors are worth
    /// retrying. The record keeps its partition (ordered mode) or key (key-ordered mode) busy while it
    /// retries. Default 10 attempts, 100 ms doubling to 5 s, every error retriable. When the attempts
    /// run out the record goes to the dead-letter topic if one is configured, else it is kept (unacked)
    /// and tried again at the longest delay: never skipped.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The circuit breaker in front of the handler: after `failure_threshold` consecutive retriable
    /// failures it opens, dispatch pauses (fetching stops once the buffer is full) and no attempt is
    /// made until `reset_timeout` has passed; then one probe record decides. Waiting on an open
    /// breaker does not use up a record's attempts, so a downstream outage dead-letters nothing.
    /// Default on, 5 failures, 30 s (`KAFKA_CIRCUIT_BREAKER_*`); `None` turns it off.
    pub fn circuit_breaker(mut self, policy: Option<CircuitBreakerPolicy>) -> Self {
        self.breaker = policy;
        self
    }

    /// Sends records that gave up to a dead-letter topic (default name `<topic>-dlt`) with
    /// Spring-compatible headers saying where they came from and why, using `producer`. The original
    /// is acked only once the dead-letter record is acknowledged. Default: no dead-letter topic.
    pub fn dead_letter(mut self, policy: DeadLetterPolicy, producer: crate::Producer) -> Self {
        self.dead_letter = Some(DeadLetter { policy, producer });
        self
    }

    /// Records consumed, processed, acked, failed, retried and dead-lettered records, commits,
    /// rebalances, lag, records in flight and buffered bytes into `metrics`.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// How health reports judge fetch progress. Default: a partition with no fetch response for 60 s
    /// is stalled.
    pub fn health_policy(mut self, policy: HealthPolicy) -> Self {
        self.health = policy;
        self
    }

    /// Tells `listener` about ownership changes and commits.
    pub fn listener(mut self, listener: Arc<dyn ConsumerListener>) -> Self {
        self.settings.listener = Some(listener);
        self
    }

    /// Applies the users' environment-style settings: circuit breaker, retries, shutdown timeout and
    /// the reconnect backoff of the client (coordinator, fetches; see [`ClientConfig::resilience`]
    /// and [`ResilienceConfig::from_env`]).
    pub fn resilience(mut self, config: &ResilienceConfig) -> Result<Self> {
        self.client = self.client.resilience(config);
        self.breaker = config.circuit_breaker;
        self.retry = config.retry_policy()?;
        self.settings.shutdown_timeout = config.shutdown_timeout;
        Ok(self)
    }

    /// Whether commits carry a compact map of records finished above the watermark, so that after a
    /// restart or rebalance the next owner skips them. Default on. The map must fit the broker's
    /// `offset.metadata.max.bytes` (4096 by default), so while it is on a partition processes at most
    /// about 24,000 offsets past its oldest unfinished record; beyond that it waits (backpressure).
    pub fn offset_map(mut self, enabled: bool) -> Self {
        self.settings.offset_map = enabled;
        self
    }

    fn validate(&self) -> Result<()> {
        self.group.validate()?;
        let s = &self.settings;
        let err = |setting: &str, reason: String| -> Result<()> {
            Err(ConfigError::new(setting, reason).into())
        };
        if let Some(0) = s.mode.max_in_flight() {
            return err("dispatch.max_in_flight", "must be at least 1".into());
        }
        if s.commit_interval < Duration::from_millis(10) {
            return err(
                "auto.commit.interval.ms",
                format!("must be at least 10 ms, got {:?}", s.commit_interval),
            );
        }
        if s.revoke_timeout >= self.group.rebalance_timeout {
            return err(
                "revoke_timeout",
                format!(
                    "must be below max.poll.interval.ms ({:?}), got {:?}",
                    self.group.rebalance_timeout, s.revoke_timeout
                ),
            );
        }
        if s.fetch.max_partition_bytes < 1024 || s.fetch.max_partition_bytes > i32::MAX as usize {
            return err(
                "max.partition.fetch.bytes",
                "must be within 1 KiB..2 GiB".into(),
            );
        }
        if s.fetch.max_bytes < 1024 || s.fetch.max_bytes > i32::MAX as usize {
            return err("fetch.max.bytes", "must be within 1 KiB..2 GiB".into());
        }
        if s.buffer_bytes < s.fetch.max_partition_bytes || s.buffer_bytes > u32::MAX as usize {
            return err(
                "buffer_bytes",
                format!(
                    "must be at least max.partition.fetch.bytes ({}) and below 4 GiB",
                    s.fetch.max_partition_bytes
                ),
            );
        }
        if s.shutdown_timeout.is_zero() {
            return err("shutdown_timeout", "must be greater than zero".into());
        }
        if s.fetch.max_idle < Duration::from_secs(1) {
            return err(
                "connections.max.idle.ms",
                format!("must be at least 1 s, got {:?}", s.fetch.max_idle),
            );
        }
        if s.fetch.replica_max_age < Duration::from_secs(1) {
            return err(
                "metadata.max.age.ms",
                format!("must be at least 1 s, got {:?}", s.fetch.replica_max_age),
            );
        }
        Ok(())
    }

    /// The backoff between a partition's failed fetches (each reconnects to the leader): the
    /// fetcher's own (100 ms doubling to 10 s) bounded by the client's reconnect backoff
    /// (`reconnect.backoff.ms` .. `reconnect.backoff.max.ms`).
    pub(crate) fn fetch_backoff(&self) -> BackoffPolicy {
        self.client.reconnect_bounded(self.settings.fetch.backoff)
    }

    /// The resilience settings a built consumer runs with: breaker, attempts per record, shutdown
    /// timeout, the coordinator's reconnect backoff, the fetchers' backoff. For the tests of the
    /// settings plumbing (`config.rs`).
    #[cfg(test)]
    pub(crate) fn effective_resilience(
        &self,
    ) -> (
        Option<CircuitBreakerPolicy>,
        u32,
        Duration,
        BackoffPolicy,
        BackoffPolicy,
    ) {
        (
            self.breaker,
            self.retry.max_attempts(),
            self.settings.shutdown_timeout,
            self.client.reconnect_backoff_policy(),
            self.fetch_backoff(),
        )
    }

    /// Validates every setting and connects. The consumer joins its group when it starts running.
    pub async fn build(mut self) -> Result<Consumer> {
        self.validate()?;
        self.settings.fetch.backoff = self.fetch_backoff();
        self.settings.fetch.rack = self.group.rack_id.clone().filter(|r| !r.is_empty());
        self.client.reach().await?;
        let breaker = self.breaker.map(CircuitBreaker::new);
        let board = Arc::new(StatusBoard::default());
        Ok(Consumer {
            shutdown: watch::channel(false).0,
            health: HealthHandle {
                board,
                breaker,
                policy: self.health,
                session_timeout: self.group.session_timeout,
            },
            builder: self,
        })
    }
}

/// A group consumer. Run it with a handler ([`run`](Self::run)) or take its records as a stream
/// ([`stream`](Self::stream)).
#[derive(Debug)]
pub struct Consumer {
    builder: ConsumerBuilder,
    shutdown: watch::Sender<bool>,
    health: HealthHandle,
}

/// Asks a running consumer to shut down gracefully. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    /// Stop fetching, let in-flight records finish, commit, leave the group (within the shutdown timeout).
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

/// What a consumer left uncommitted when it stopped: these records will be delivered again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Partitions whose finished work is not fully committed.
    pub uncommitted: Vec<Uncommitted>,
    /// Whether the shutdown deadline passed before draining finished.
    pub timed_out: bool,
}

/// One partition whose committed offset is behind what this consumer fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncommitted {
    /// The partition.
    pub partition: TopicPartition,
    /// The last offset committed, if any.
    pub committed: Option<i64>,
    /// The watermark: every record below it was finished.
    pub watermark: i64,
    /// Records handed out and not finished when the consumer stopped.
    pub unfinished: usize,
}

impl Consumer {
    /// A handle that reports this consumer's health (usable while it runs).
    pub fn health_handle(&self) -> HealthHandle {
        self.health.clone()
    }

    /// A handle that triggers a graceful shutdown of [`run`](Self::run) or [`stream`](Self::stream).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Joins the group and runs `handler` for every record until shut down. A handler error goes
    /// through the retry policy, the circuit breaker and the dead-letter topic (see the builder); the
    /// record is committed only once it succeeded or was dead-lettered. A handler that panics (when
    /// called or while its future runs) returned a [`HandlerPanic`] error, which goes the same way.
    /// Returns what was left uncommitted.
    ///
    /// ```no_run
    /// # async fn demo(consumer: kafkit_core::consumer::Consumer) -> kafkit_core::Result<()> {
    /// let report = consumer
    ///     .run(|record| async move {
    ///         println!("{} @ {}", record.topic(), record.offset());
    ///         Ok::<_, std::io::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn run<F, Fut, E>(self, handler: F) -> Result<ShutdownReport>
    where
        F: Fn(ConsumedRecord) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let type_name = std::any::type_name::<E>();
        let handler: HandlerFn = Arc::new(move |record| {
            let fut = handler(record);
            Box::pin(async move {
                fut.await.map_err(|e| HandlerError {
                    type_name,
                    source: e.into(),
                })
            })
        });
        let failure = self.failure_path();
        self.start(Sink::Handler(handler, failure))?.await
    }

    /// Joins the group and hands records to `handler` in batches of up to `max_batch`. In
    /// `PartitionOrdered` and `KeyOrdered` mode a batch holds *runs*: consecutive records of a
    /// partition (or of a key), in offset order, and only one run of a partition (key) is out at a
    /// time, as with [`run`](Self::run). The handler returns one result per record, in order.
    ///
    /// Failures are isolated: records that succeeded are acked, and a failed record goes through the
    /// retry policy, circuit breaker and dead-letter topic alone (retried as a batch of one). In
    /// `PartitionOrdered` and `KeyOrdered` mode the records after a failed one in its run, which
    /// the handler has seen, are delivered again in a later batch once the failed record is
    /// finished, so their effects never precede it (at-least-once: they are handled twice). A handler
    /// that panics failed every record of its batch, each with a [`HandlerPanic`] error.
    ///
    /// ```no_run
    /// # async fn demo(consumer: kafkit_core::consumer::Consumer) -> kafkit_core::Result<()> {
    /// consumer
    ///     .run_batch(100, |records| async move {
    ///         records.iter().map(|r| if r.value().is_some() { Ok(()) } else { Err("tombstone") }).collect()
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn run_batch<F, Fut, E>(self, max_batch: usize, handler: F) -> Result<ShutdownReport>
    where
        F: Fn(Vec<ConsumedRecord>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<std::result::Result<(), E>>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        if max_batch == 0 {
            return Err(ConfigError::new("max_batch", "must be at least 1").into());
        }
        let type_name = std::any::type_name::<E>();
        let handler: BatchFn = Arc::new(move |records| {
            let fut = handler(records);
            Box::pin(async move {
                fut.await
                    .into_iter()
                    .map(|r| {
                        r.map_err(|e| HandlerError {
                            type_name,
                            source: e.into(),
                        })
                    })
                    .collect()
            })
        });
        let failure = self.failure_path();
        self.start(Sink::Batch {
            handler,
            failure,
            max: max_batch,
        })?
        .await
    }

    /// Exactly-once consume-transform-produce: `handler` turns a batch of input records into
    /// output records, and the outputs and the inputs' offsets commit in one transaction of
    /// `config`'s transactional producer, with this member's generation and member id, so a
    /// member that lost its partitions cannot commit for them (KIP-447). Downstream read_committed
    /// consumers see each input's outputs exactly once, through crashes and rebalances.
    ///
    /// - Batches: up to `max_records` records, collected for up to `max_wait`, made of *runs*:
    ///   consecutive records of a partition, in offset order. Records are dispatched
    ///   `PartitionOrdered` whatever the builder says, and a partition has one run out at a time,
    ///   so a batch holds at most one run of each partition, each starting right after what the
    ///   partition already committed.
    /// - A handler error aborts the transaction and the same batch runs again after the retry
    ///   backoff, in a new transaction (the retry policy, breaker and dead-letter topic of the
    ///   builder do not apply here).
    /// - A revocation or loss of a batch's partition aborts its open transaction and hands its
    ///   records back before the partition is released; so does a transaction the broker refuses
    ///   (e.g. ILLEGAL_GENERATION after a rebalance).
    /// - A fenced or fatal producer ends the run with its error.
    ///
    /// The consumer reads read_committed (always, in kafkit), so inputs that are themselves
    /// transactional outputs are read only once committed.
    ///
    /// ```no_run
    /// # async fn demo(client: kafkit_core::ClientConfig) -> kafkit_core::Result<()> {
    /// use kafkit_core::consumer::{ConsumerBuilder, TransformConfig};
    /// use kafkit_core::group::GroupConfig;
    /// use kafkit_core::{ProducerBuilder, ProducerRecord};
    /// let producer = ProducerBuilder::new(client.clone())
    ///     .transactional_id("uppercaser-0")
    ///     .build()
    ///     .await?;
    /// let consumer = ConsumerBuilder::new(client, GroupConfig::new("uppercaser", ["in"]))
    ///     .build()
    ///     .await?;
    /// consumer
    ///     .run_transform(TransformConfig::new(producer), |records| async move {
    ///         Ok::<_, std::io::Error>(
    ///             records
    ///                 .iter()
    ///                 .map(|r| ProducerRecord::new("out", r.value().unwrap_or_default().to_ascii_uppercase()))
    ///                 .collect(),
    ///         )
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn run_transform<F, Fut, E>(
        self,
        config: TransformConfig,
        handler: F,
    ) -> Result<ShutdownReport>
    where
        F: Fn(Vec<ConsumedRecord>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Vec<crate::ProducerRecord>, E>> + Send,
        E: Into<BoxError>,
    {
        transform::run(self, config, handler).await
    }

    fn failure_path(&self) -> Arc<FailurePath> {
        Arc::new(FailurePath {
            retry: self.builder.retry.clone(),
            breaker: self.health.breaker.clone(),
            dead_letter: self.builder.dead_letter.clone(),
            group_id: self.builder.group.group_id.clone(),
            metrics: self.builder.metrics.clone(),
        })
    }

    /// Joins the group and yields its records as a stream; each must be acked
    /// ([`StreamRecord::ack`]) before its offset can be committed. A record dropped unacked, say by
    /// a task that panics while holding it, is delivered again. Shut down with
    /// [`RecordStream::shutdown`]; dropping the stream stops the consumer without committing.
    pub fn stream(self) -> Result<RecordStream> {
        Ok(RecordStream {
            feed: self.feed(Sink::Stream)?,
            received: Received::default(),
        })
    }

    /// Starts the engine behind a sink that sends each dispatch's records (or runs) on a channel
    /// made here: the stream's, the transform's.
    fn feed<T>(self, sink: impl FnOnce(mpsc::UnboundedSender<Vec<T>>) -> Sink) -> Result<Feed<T>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let shutdown = self.shutdown_handle();
        let task = OwnedTask::spawn(self.start(sink(tx))?);
        Ok(Feed { rx, task, shutdown })
    }

    fn start(
        self,
        sink: Sink,
    ) -> Result<impl Future<Output = Result<ShutdownReport>> + Send + 'static> {
        let (member, events) =
            GroupMember::start(&self.builder.client, self.builder.group.clone())?;
        let member = Arc::new(member);
        let engine = Engine::new(
            Arc::new(self.builder.settings.clone()),
            Arc::clone(&member),
            events,
            sink,
            self.health.breaker.as_ref().map(CircuitBreaker::subscribe),
            Arc::clone(&self.health.board),
            self.builder.metrics.clone(),
        );
        let active = self.builder.metrics.as_ref().map(Metrics::consumer_active);
        let shutdown = self.shutdown.subscribe();
        let keep = self.shutdown;
        Ok(async move {
            let result = engine.run(shutdown).await;
            drop(active);
            drop(keep);
            drop(member);
            result
        })
    }
}

/// The receiving end of a channel sink (the stream's records, the transform's runs) and the
/// engine behind it.
#[derive(Debug)]
struct Feed<T> {
    /// The dispatcher sends each dispatch's records as one message (one hand-off, not one per
    /// record); how many are out is bounded by the dispatch mode's in-flight bound.
    rx: mpsc::UnboundedReceiver<Vec<T>>,
    /// Dropping it drops (aborts) the engine.
    task: OwnedTask<Result<ShutdownReport>>,
    shutdown: ShutdownHandle,
}

impl<T> Feed<T> {
    /// Shuts the engine down gracefully and waits for it; records arriving meanwhile are handed
    /// back (dropped), so the engine can finish.
    async fn shutdown(self) -> Result<ShutdownReport> {
        let Feed {
            mut rx,
            mut task,
            shutdown,
        } = self;
        shutdown.shutdown();
        let mut open = true;
        loop {
            tokio::select! {
                done = &mut task => return done.map_err(|_| Error::Closed { what: "consumer" })?,
                r = rx.recv(), if open => match r {
                    Some(records) => drop(records),
                    None => open = false,
                },
            }
        }
    }
}

/// The records of a [`Consumer::stream`]. Implements [`futures::Stream`].
#[derive(Debug)]
pub struct RecordStream {
    feed: Feed<StreamItem>,
    /// What the dispatcher handed over and the user has not taken yet.
    received: Received,
}

impl RecordStream {
    /// The next record, or `None` once the consumer has stopped.
    pub async fn next(&mut self) -> Option<StreamRecord> {
        std::future::poll_fn(|cx| self.poll_record(cx)).await
    }

    fn poll_record(&mut self, cx: &mut Context<'_>) -> Poll<Option<StreamRecord>> {
        self.received.poll_next(&mut self.feed.rx, cx)
    }

    /// A handle to shut the consumer down from elsewhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.feed.shutdown.clone()
    }

    /// Shuts down gracefully: records already received may still be acked while this waits; records
    /// not received are not committed. Returns what was left uncommitted.
    pub async fn shutdown(self) -> Result<ShutdownReport> {
        let RecordStream { feed, received } = self;
        feed.shutdown.shutdown();
        // Acked records of runs are reported; the rest, received and never handed out, goes back
        // to an engine that already stops (so it does not hand it out again).
        received.close();
        feed.shutdown().await
    }
}

impl futures::Stream for RecordStream {
    type Item = StreamRecord;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamRecord>> {
        self.poll_record(cx)
    }
}
