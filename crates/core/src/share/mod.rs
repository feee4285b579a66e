//! Share groups (KIP-932, "queues for Kafka"): [`ShareConsumer`], a member of a share group that
//! processes records one by one and acknowledges each.
//!
//! In a share group every member may read every partition: the broker hands each record to one
//! member at a time under an *acquisition lock* (the group's `share.record.lock.duration.ms`,
//! 30 s by default), and the member acknowledges it: **accept** (done), **release** (deliver it
//! again, to anyone) or **reject** (never deliver it again). A record whose lock runs out is
//! delivered again; after `share.delivery.count.limit` deliveries (5 by default) the broker
//! archives it instead. There is no per-partition order and no offset commit.
//!
//! # Layout
//! - `membership`: the ShareGroupHeartbeat loop (join at epoch 0, heartbeat, leave at -1).
//! - `broker`: one task per leader broker: ShareFetch in a share session, the acquired records
//!   processed, their acknowledgements piggy-backed on the next ShareFetch (ShareAcknowledge for
//!   partitions that left, and at shutdown to close the session).
//! - `session`: the share session's epochs and which partitions a request names (pure).
//! - `acks`: acquisition-lock bookkeeping and acknowledgement batches (pure).
//!
//! # Outcomes
//! A handler's result maps to an acknowledgement through the consumer's failure path (retry
//! policy, circuit breaker, dead-letter topic):
//!
//! | handler | acknowledgement |
//! | --- | --- |
//! | `Ok` | accept |
//! | retriable error, local retries used up (or the lock would end before the next one) | release |
//! | non-retriable error (poison), no dead-letter topic | reject |
//! | non-retriable error, dead-letter topic set | produce it there, then accept |
//!
//! With [`ShareConsumer::stream`] the application acknowledges each [`ShareRecord`] itself
//! (explicit acknowledgement in the Java client's terms); a record dropped unacknowledged is
//! released. Either way a record settled after its lock ran out is **not** acknowledged (the
//! broker may have given it to another member already): it is counted as a lock expiry.

mod acks;
mod broker;
mod membership;
mod session;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use kafkit_metrics::Metrics;
use kafkit_resilience::{
    BackoffPolicy, CircuitBreaker, CircuitBreakerPolicy, CircuitState, DeadLetterPolicy,
    RetryPolicy,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use uuid::Uuid;

pub use acks::AckType as AcknowledgeType;
use acks::AckType;
use broker::{BrokerContext, BrokerTask, StreamAck};
use membership::{MemberSettings, MemberView};

use crate::consumer::BoxError;
use crate::consumer::ConsumedRecord;
use crate::consumer::dispatcher::{BatchFn, HandlerFn};
use crate::consumer::failure::{DeadLetter, FailurePath, HandlerError};
use crate::group::TopicPartition;
use crate::group::coordinator::Coordinator;
use crate::task::OwnedTask;
use crate::{ClientConfig, ConfigError, Error, Result};

/// Settings every task of one share consumer reads.
#[derive(Debug, Clone)]
pub(crate) struct ShareSettings {
    pub(crate) group_id: String,
    pub(crate) max_records: i32,
    pub(crate) max_wait: Duration,
    pub(crate) fetch_max_bytes: i32,
    pub(crate) request_timeout: Duration,
    pub(crate) concurrency: usize,
    pub(crate) shutdown_timeout: Duration,
}

/// Counts of one share consumer, since it started.
#[derive(Debug, Default)]
pub(crate) struct ShareStats {
    acquired: AtomicU64,
    redelivered: AtomicU64,
    accepted: AtomicU64,
    released: AtomicU64,
    rejected: AtomicU64,
    pub(crate) lock_expired: AtomicU64,
    pub(crate) ack_failures: AtomicU64,
    /// Acquired records by delivery count: 1, 2, 3, 4, 5 or more.
    deliveries: [AtomicU64; 5],
}

impl ShareStats {
    fn acquired(&self, delivery_count: i16) {
        self.acquired.fetch_add(1, Ordering::Relaxed);
        if delivery_count > 1 {
            self.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        let bucket = (delivery_count.max(1) as usize - 1).min(4);
        self.deliveries[bucket].fetch_add(1, Ordering::Relaxed);
    }

    fn add_acknowledged(&self, tally: &acks::Tally) {
        self.accepted.fetch_add(tally.accepted, Ordering::Relaxed);
        self.released.fetch_add(tally.released, Ordering::Relaxed);
        self.rejected.fetch_add(tally.rejected, Ordering::Relaxed);
        self.lock_expired
            .fetch_add(acks::total(&tally.lock_expired), Ordering::Relaxed);
    }

    fn snapshot(&self) -> ShareCounters {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ShareCounters {
            acquired: get(&self.acquired),
            redelivered: get(&self.redelivered),
            accepted: get(&self.accepted),
            released: get(&self.released),
            rejected: get(&self.rejected),
            lock_expired: get(&self.lock_expired),
            ack_failures: get(&self.ack_failures),
            deliveries: std::array::from_fn(|i| get(&self.deliveries[i])),
        }
    }
}

/// What a share consumer has done since it started ([`ShareConsumer::counters`]), and what its
/// run returns.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShareCounters {
    /// Records acquired (handed to this member under a lock).
    pub acquired: u64,
    /// Acquired records that had been delivered before (delivery count above 1).
    pub redelivered: u64,
    /// Acknowledged as accepted (sent to, and taken by, the broker).
    pub accepted: u64,
    /// Acknowledged as released.
    pub released: u64,
    /// Acknowledged as rejected.
    pub rejected: u64,
    /// Records not acknowledged because their acquisition lock ran out first (settled too late,
    /// or never settled): the broker delivers them again.
    pub lock_expired: u64,
    /// Acknowledgements the broker refused or that were lost with their request.
    pub ack_failures: u64,
    /// Acquired records by delivery count: 1, 2, 3, 4, and 5 or more.
    pub deliveries: [u64; 5],
}

/// Told what the broker answered for this consumer's acknowledgements (as the Java client's
/// `AcknowledgementCommitCallback`). Called from the consumer's tasks: return quickly.
pub trait ShareListener: Send + Sync + 'static {
    /// One response's acknowledgements, by partition.
    fn acknowledged(&self, partitions: &[Acknowledged]);
}

/// One partition's acknowledgements in one request, and how the broker took them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Acknowledged {
    /// The partition.
    pub partition: TopicPartition,
    /// Each record's offset and how it was acknowledged, in offset order (gaps left out).
    pub offsets: Vec<(i64, AcknowledgeType)>,
    /// `None` when the broker took them; else why not (the records then come back when their
    /// lock runs out).
    pub error: Option<String>,
}

/// Where a share consumer's records go.
pub(crate) enum Processor {
    Handler {
        handler: HandlerFn,
        failure: Arc<FailurePath>,
    },
    Batch {
        handler: BatchFn,
        /// The batch handler called with one record, for a failed record's retries.
        single: HandlerFn,
        failure: Arc<FailurePath>,
        max: usize,
    },
    Stream(mpsc::UnboundedSender<Vec<ShareRecord>>),
}

/// Builds a [`ShareConsumer`].
///
/// ```no_run
/// # async fn demo() -> kafkit_core::Result<()> {
/// use kafkit_core::ClientConfig;
/// use kafkit_core::share::ShareConsumerBuilder;
///
/// let client = ClientConfig::new(["localhost:9092"])?;
/// let consumer = ShareConsumerBuilder::new(client, "workers", ["jobs"]).build()?;
/// let counters = consumer
///     .run(|record| async move {
///         println!("job {}", record.offset());
///         Ok::<_, std::io::Error>(())
///     })
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ShareConsumerBuilder {
    client: ClientConfig,
    topics: Vec<String>,
    settings: ShareSettings,
    rack_id: Option<String>,
    retry: RetryPolicy,
    breaker: Option<CircuitBreakerPolicy>,
    dead_letter: Option<DeadLetter>,
    metrics: Option<Metrics>,
    listener: Option<Arc<dyn ShareListener>>,
}

impl std::fmt::Debug for dyn ShareListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShareListener")
    }
}

impl ShareConsumerBuilder {
    /// A member of share group `group_id` reading `topics`.
    pub fn new<I, S>(client: ClientConfig, group_id: impl Into<String>, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            client,
            topics: topics.into_iter().map(Into::into).collect(),
            settings: ShareSettings {
                group_id: group_id.into(),
                max_records: 500,
                max_wait: Duration::from_millis(500),
                fetch_max_bytes: 50 * 1024 * 1024,
                request_timeout: Duration::from_secs(30),
                concurrency: 1,
                shutdown_timeout: Duration::from_secs(30),
            },
            rack_id: None,
            retry: RetryPolicy::default(),
            breaker: None,
            dead_letter: None,
            metrics: None,
            listener: None,
        }
    }

    /// Told of every acknowledgement the broker answers. Default none.
    pub fn listener(mut self, listener: Arc<dyn ShareListener>) -> Self {
        self.listener = Some(listener);
        self
    }

    /// The most records one ShareFetch acquires (the broker may exceed it to keep a batch whole).
    /// Corresponds to `max.poll.records`. Default 500; 1 to 100 000.
    pub fn max_records(mut self, n: i32) -> Self {
        self.settings.max_records = n;
        self
    }

    /// How long the broker may hold a ShareFetch while it has no records. Corresponds to
    /// `fetch.max.wait.ms`. Default 500 ms.
    pub fn fetch_max_wait(mut self, wait: Duration) -> Self {
        self.settings.max_wait = wait;
        self
    }

    /// The most bytes one ShareFetch returns. Corresponds to `fetch.max.bytes`. Default 50 MiB.
    pub fn fetch_max_bytes(mut self, bytes: i32) -> Self {
        self.settings.fetch_max_bytes = bytes;
        self
    }

    /// How long to wait for a broker's answer. Corresponds to `request.timeout.ms`. Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.settings.request_timeout = timeout;
        self
    }

    /// How many records of one fetch the handler processes at once (share groups keep no order).
    /// Default 1; 1 to 10 000.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.settings.concurrency = n;
        self
    }

    /// At shutdown, how long records already being processed may take to finish; the rest are
    /// released. Default 30 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.settings.shutdown_timeout = timeout;
        self
    }

    /// The member's rack, for rack-aware assignment. Corresponds to `client.rack`. Default none.
    pub fn rack_id(mut self, rack: impl Into<String>) -> Self {
        self.rack_id = Some(rack.into());
        self
    }

    /// Local retries of a failing record before it is released. Default: the policy's default.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// A circuit breaker in front of the handler: while it is open, records wait (within their
    /// lock) instead of failing. Default none.
    pub fn circuit_breaker(mut self, policy: Option<CircuitBreakerPolicy>) -> Self {
        self.breaker = policy;
        self
    }

    /// Poison records (non-retriable errors) go to a dead-letter topic through `producer`, and are
    /// then accepted, instead of being rejected. Default none.
    pub fn dead_letter(mut self, policy: DeadLetterPolicy, producer: crate::Producer) -> Self {
        self.dead_letter = Some(DeadLetter { policy, producer });
        self
    }

    /// Handler timings and failures, and the share counters (acquired, accepted, released,
    /// rejected, redelivered, lock expiries, deliveries by count) go to `metrics`. Default none.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<ShareConsumer> {
        let s = &self.settings;
        if self.topics.is_empty() {
            return Err(ConfigError::new("topics", "name at least one topic").into());
        }
        if s.group_id.is_empty() {
            return Err(ConfigError::new("group.id", "must not be empty").into());
        }
        if !(1..=100_000).contains(&s.max_records) {
            return Err(ConfigError::new("max.poll.records", "must be 1 to 100000").into());
        }
        if !(1..=10_000).contains(&s.concurrency) {
            return Err(ConfigError::new("concurrency", "must be 1 to 10000").into());
        }
        if s.fetch_max_bytes < 1 {
            return Err(ConfigError::new("fetch.max.bytes", "must be at least 1").into());
        }
        if s.request_timeout.is_zero() {
            return Err(ConfigError::new("request.timeout.ms", "must be above 0").into());
        }
        let breaker = self.breaker.map(CircuitBreaker::new);
        let (shutdown, _) = watch::channel(false);
        let (view, _) = watch::channel(MemberView::default());
        Ok(ShareConsumer {
            builder: self,
            breaker,
            stats: Arc::new(ShareStats::default()),
            shutdown,
            view,
        })
    }
}

/// A member of a share group; see the [module documentation](self). Run it with
/// [`run`](Self::run), [`run_batch`](Self::run_batch) or [`stream`](Self::stream).
pub struct ShareConsumer {
    builder: ShareConsumerBuilder,
    breaker: Option<CircuitBreaker>,
    stats: Arc<ShareStats>,
    shutdown: watch::Sender<bool>,
    /// The membership as the heartbeat loop publishes it (for the fetcher and health handles).
    view: watch::Sender<MemberView>,
}

impl std::fmt::Debug for ShareConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareConsumer")
            .field("group", &self.builder.settings.group_id)
            .field("topics", &self.builder.topics)
            .finish_non_exhaustive()
    }
}

/// Triggers a graceful shutdown of a [`ShareConsumer`]: records being processed finish (within
/// the shutdown timeout) and are acknowledged, the rest are released, the share sessions close and
/// the member leaves the group.
#[derive(Debug, Clone)]
pub struct ShareShutdownHandle(watch::Sender<bool>);

impl ShareShutdownHandle {
    /// Starts the shutdown; the run returns once it is done.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

/// A share consumer's health ([`ShareHealthHandle::report`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShareHealth {
    /// Healthy: a member of the group (member epoch above 0) with the circuit breaker (if any)
    /// not open. A share consumer has no lag of its own to judge (the group's records are
    /// everyone's): watch `ShareCounters::lock_expired` and `released` for trouble processing.
    pub healthy: bool,
    /// The member id (generated by the consumer).
    pub member_id: String,
    /// The member epoch: 0 while joining (or rejoining after being fenced).
    pub member_epoch: i32,
    /// The partitions the broker assigned this member (shared with the group's other members).
    pub assigned: Vec<TopicPartition>,
    /// The circuit breaker's state, if one is set.
    pub breaker: Option<CircuitState>,
    /// The counters so far.
    pub counters: ShareCounters,
}

/// Reports a [`ShareConsumer`]'s health.
#[derive(Debug, Clone)]
pub struct ShareHealthHandle {
    view: watch::Receiver<MemberView>,
    stats: Arc<ShareStats>,
    breaker: Option<CircuitBreaker>,
}

impl ShareHealthHandle {
    /// The health now.
    pub fn report(&self) -> ShareHealth {
        let view = self.view.borrow().clone();
        let breaker = self.breaker.as_ref().map(CircuitBreaker::state);
        ShareHealth {
            healthy: view.epoch > 0 && breaker != Some(CircuitState::Open),
            member_id: view.member_id,
            member_epoch: view.epoch,
            assigned: view.assignment.keys().cloned().collect(),
            breaker,
            counters: self.stats.snapshot(),
        }
    }
}

/// Reads a running [`ShareConsumer`]'s counters.
#[derive(Debug, Clone)]
pub struct ShareCountersHandle(Arc<ShareStats>);

impl ShareCountersHandle {
    /// The counters now.
    pub fn get(&self) -> ShareCounters {
        self.0.snapshot()
    }
}

impl ShareConsumer {
    /// A handle that shuts the consumer down gracefully.
    pub fn shutdown_handle(&self) -> ShareShutdownHandle {
        ShareShutdownHandle(self.shutdown.clone())
    }

    /// A handle that reports the consumer's health, usable while it runs.
    pub fn health_handle(&self) -> ShareHealthHandle {
        ShareHealthHandle {
            view: self.view.subscribe(),
            stats: Arc::clone(&self.stats),
            breaker: self.breaker.clone(),
        }
    }

    /// A handle to the counters, usable while the consumer runs.
    pub fn counters(&self) -> ShareCountersHandle {
        ShareCountersHandle(Arc::clone(&self.stats))
    }

    fn failure_path(&self) -> Arc<FailurePath> {
        Arc::new(FailurePath {
            retry: self.builder.retry.clone(),
            breaker: self.breaker.clone(),
            dead_letter: self.builder.dead_letter.clone(),
            group_id: self.builder.settings.group_id.clone(),
            metrics: self.builder.metrics.clone(),
        })
    }

    /// Joins the share group and runs `handler` on every record acquired, acknowledging each as
    /// its outcome says (see the [module documentation](self)), until shut down. Returns the
    /// counters.
    pub async fn run<F, Fut, E>(self, handler: F) -> Result<ShareCounters>
    where
        F: Fn(ConsumedRecord) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let failure = self.failure_path();
        self.start(Processor::Handler {
            handler: handler_fn(handler),
            failure,
        })
        .await
    }

    /// Like [`run`](Self::run), with up to `max_batch` records per handler call; the handler
    /// returns one result per record, in order. A failed record takes the failure path alone
    /// (retried as a batch of one).
    pub async fn run_batch<F, Fut, E>(self, max_batch: usize, handler: F) -> Result<ShareCounters>
    where
        F: Fn(Vec<ConsumedRecord>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<std::result::Result<(), E>>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        if max_batch == 0 {
            return Err(ConfigError::new("max_batch", "must be at least 1").into());
        }
        let type_name = std::any::type_name::<E>();
        let handler = Arc::new(handler);
        let batch: BatchFn = {
            let handler = Arc::clone(&handler);
            Arc::new(move |records| {
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
            })
        };
        let single: HandlerFn = Arc::new(move |record| {
            let fut = handler(vec![record]);
            Box::pin(async move {
                match fut.await.into_iter().next() {
                    Some(Err(e)) => Err(HandlerError {
                        type_name,
                        source: e.into(),
                    }),
                    _ => Ok(()),
                }
            })
        });
        let failure = self.failure_path();
        self.start(Processor::Batch {
            handler: batch,
            single,
            failure,
            max: max_batch,
        })
        .await
    }

    /// Joins the share group and yields its records; the application acknowledges each
    /// ([`ShareRecord::accept`], [`release`](ShareRecord::release), [`reject`](ShareRecord::reject);
    /// dropped: released). The next records are fetched once every record of a fetch is
    /// acknowledged (or its lock ran out). Shut down with [`ShareStream::shutdown`].
    pub fn stream(self) -> ShareStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let shutdown = self.shutdown_handle();
        let task = OwnedTask::spawn(self.start(Processor::Stream(tx)));
        ShareStream {
            rx,
            ready: Vec::new().into_iter(),
            task: Some(task),
            shutdown,
        }
    }

    /// The engine: membership, the broker tasks following the assignment and the leaders, and
    /// the shutdown sequence (stop fetching and settle, close the sessions, leave).
    async fn start(self, processor: Processor) -> Result<ShareCounters> {
        let b = &self.builder;
        let settings = Arc::new(b.settings.clone());
        let coordinator = Arc::new(Coordinator::new(
            settings.group_id.clone(),
            &b.client,
            settings.request_timeout,
        ));
        let view_tx = self.view.clone();
        let mut view = view_tx.subscribe();
        let (leave_tx, leave_rx) = watch::channel(false);
        let mut member = Some(OwnedTask::spawn(membership::run(
            Arc::clone(&coordinator),
            MemberSettings {
                group_id: settings.group_id.clone(),
                topics: b.topics.clone(),
                rack_id: b.rack_id.clone(),
                request_timeout: settings.request_timeout,
                retry_backoff: BackoffPolicy::default(),
            },
            view_tx,
            leave_rx,
        )));
        let (refresh_tx, mut refresh) = mpsc::unbounded_channel();
        let (fatal_tx, mut fatal) = mpsc::unbounded_channel();
        let ctx = Arc::new(BrokerContext {
            client: b.client.clone(),
            settings: Arc::clone(&settings),
            processor: Arc::new(processor),
            stats: Arc::clone(&self.stats),
            member: view.clone(),
            refresh: refresh_tx,
            fatal: fatal_tx,
            listener: b.listener.clone(),
            metrics: b.metrics.clone(),
        });
        let active = b.metrics.as_ref().map(Metrics::consumer_active);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut brokers: HashMap<i32, Broker> = HashMap::new();
        let mut shutdown = self.shutdown.subscribe();
        let mut reroute: Option<Instant> = None;
        let result: Result<()> = loop {
            if *shutdown.borrow_and_update() {
                break Ok(());
            }
            tokio::select! {
                _ = shutdown.changed() => break Ok(()),
                r = async { member.as_mut().expect("polled only while running").await }, if member.is_some() => {
                    member = None;
                    break match r {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(Error::Closed { what: "share consumer (membership task ended)" }),
                    };
                }
                Some(e) = fatal.recv() => break Err(e),
                Ok(()) = view.changed() => reroute = Some(Instant::now()),
                Some(()) = refresh.recv() => {
                    reroute.get_or_insert_with(|| Instant::now() + Duration::from_millis(200));
                }
                _ = sleep_until(reroute), if reroute.is_some() => {
                    reroute = route(&coordinator, &view, &mut brokers, &ctx, &stop_rx).await;
                }
            }
        };
        info!(group = %settings.group_id, "share consumer stopping: settling records, closing sessions");
        stop_tx.send_replace(true);
        let grace = settings.shutdown_timeout + settings.request_timeout * 2;
        for (node, broker) in brokers.drain() {
            if tokio::time::timeout(grace, broker.task).await.is_err() {
                warn!(group = %settings.group_id, node, "broker task did not finish in time");
            }
        }
        leave_tx.send_replace(true);
        if let Some(task) = member
            && let Ok(Ok(Err(e))) = tokio::time::timeout(settings.request_timeout * 2, task).await
        {
            debug!(group = %settings.group_id, error = %e, "membership ended with an error");
        }
        drop(active);
        result.map(|()| self.stats.snapshot())
    }
}

fn handler_fn<F, Fut, E>(handler: F) -> HandlerFn
where
    F: Fn(ConsumedRecord) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    let type_name = std::any::type_name::<E>();
    Arc::new(move |record| {
        let fut = handler(record);
        Box::pin(async move {
            fut.await.map_err(|e| HandlerError {
                type_name,
                source: e.into(),
            })
        })
    })
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A broker task and the partitions it is told to fetch.
struct Broker {
    partitions: watch::Sender<BTreeMap<TopicPartition, Uuid>>,
    task: OwnedTask<()>,
}

/// Hands each assigned partition to its leader's broker task (starting tasks as needed). Returns
/// when to try again, if some partition has no known leader or the lookup failed.
async fn route(
    coordinator: &Coordinator,
    view: &watch::Receiver<MemberView>,
    brokers: &mut HashMap<i32, Broker>,
    ctx: &Arc<BrokerContext>,
    stop: &watch::Receiver<bool>,
) -> Option<Instant> {
    let assignment = view.borrow().assignment.clone();
    let mut topics: Vec<String> = assignment.keys().map(|tp| tp.topic.clone()).collect();
    topics.dedup();
    let mut by_node: HashMap<i32, BTreeMap<TopicPartition, Uuid>> = HashMap::new();
    let mut again = None;
    if !topics.is_empty() {
        match coordinator.leaders(&topics).await {
            Ok(leaders) => {
                for (tp, id) in assignment.iter() {
                    match leaders.partitions.get(tp) {
                        Some(&(node, _)) if leaders.brokers.contains_key(&node) => {
                            by_node.entry(node).or_default().insert(tp.clone(), *id);
                        }
                        _ => again = Some(Instant::now() + Duration::from_millis(500)),
                    }
                }
                for (&node, partitions) in &by_node {
                    brokers.entry(node).or_insert_with(|| {
                        let address = leaders.brokers[&node].clone();
                        let (tx, rx) = watch::channel(partitions.clone());
                        let task = BrokerTask::new(Arc::clone(ctx), address, rx, stop.clone());
                        Broker {
                            partitions: tx,
                            task: OwnedTask::spawn(task.run()),
                        }
                    });
                }
            }
            Err(e) => {
                debug!(error = %e, "leader lookup failed; retrying");
                return Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }
    for (node, broker) in brokers.iter() {
        let partitions = by_node.remove(node).unwrap_or_default();
        broker.partitions.send_if_modified(|current| {
            let changed = *current != partitions;
            *current = partitions;
            changed
        });
    }
    again
}

/// A record of a [`ShareStream`], acquired by this member under a lock, with the handle that
/// acknowledges it. Derefs to [`ConsumedRecord`]. Dropped unacknowledged, it is released.
pub struct ShareRecord {
    record: ConsumedRecord,
    ack: Option<(u64, usize, mpsc::UnboundedSender<StreamAck>)>,
}

impl std::fmt::Debug for ShareRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.record.fmt(f)
    }
}

impl ShareRecord {
    fn new(
        record: ConsumedRecord,
        round: u64,
        slot: usize,
        tx: mpsc::UnboundedSender<StreamAck>,
    ) -> Self {
        Self {
            record,
            ack: Some((round, slot, tx)),
        }
    }

    fn settle(mut self, ack: AckType) {
        if let Some((round, slot, tx)) = self.ack.take() {
            let _ = tx.send((round, slot, ack));
        }
    }

    /// Processed: never delivered again.
    pub fn accept(self) {
        self.settle(AckType::Accept);
    }

    /// Not processed: deliver it again (to any member; one more delivery counted).
    pub fn release(self) {
        self.settle(AckType::Release);
    }

    /// Unprocessable: never delivered again (archived as rejected).
    pub fn reject(self) {
        self.settle(AckType::Reject);
    }

    /// The record.
    pub fn record(&self) -> &ConsumedRecord {
        &self.record
    }
}

impl std::ops::Deref for ShareRecord {
    type Target = ConsumedRecord;
    fn deref(&self) -> &ConsumedRecord {
        &self.record
    }
}

impl Drop for ShareRecord {
    fn drop(&mut self) {
        if let Some((round, slot, tx)) = self.ack.take() {
            let _ = tx.send((round, slot, AckType::Release));
        }
    }
}

/// The records of a [`ShareConsumer::stream`]. Implements [`futures::Stream`].
#[derive(Debug)]
pub struct ShareStream {
    rx: mpsc::UnboundedReceiver<Vec<ShareRecord>>,
    ready: std::vec::IntoIter<ShareRecord>,
    /// Dropping the stream drops (aborts) the engine.
    task: Option<OwnedTask<Result<ShareCounters>>>,
    shutdown: ShareShutdownHandle,
}

impl ShareStream {
    /// The next record; `None` once the consumer has stopped.
    pub async fn next(&mut self) -> Option<ShareRecord> {
        std::future::poll_fn(|cx| self.poll_record(cx)).await
    }

    fn poll_record(&mut self, cx: &mut Context<'_>) -> Poll<Option<ShareRecord>> {
        loop {
            if let Some(r) = self.ready.next() {
                return Poll::Ready(Some(r));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.ready = batch.into_iter(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The records of the next fetch, together (as the Java client's `poll` returns them); `None`
    /// once the consumer has stopped. Records taken one by one with [`next`](Self::next) and not
    /// yet returned come first.
    pub async fn next_batch(&mut self) -> Option<Vec<ShareRecord>> {
        let held: Vec<ShareRecord> = self.ready.by_ref().collect();
        if !held.is_empty() {
            return Some(held);
        }
        self.rx.recv().await
    }

    /// A handle that starts the shutdown (then `next` returns what is left, and `None`).
    pub fn shutdown_handle(&self) -> ShareShutdownHandle {
        self.shutdown.clone()
    }

    /// Shuts down gracefully: records not yet acknowledged (including those not yet taken from the
    /// stream) are released, the sessions close and the member leaves. Returns the counters.
    pub async fn shutdown(mut self) -> Result<ShareCounters> {
        self.shutdown.shutdown();
        self.ready = Vec::new().into_iter();
        let Some(mut task) = self.task.take() else {
            return Err(Error::Closed {
                what: "share stream",
            });
        };
        loop {
            tokio::select! {
                r = &mut task => {
                    return r.unwrap_or(Err(Error::Closed { what: "share consumer" }));
                }
                batch = self.rx.recv() => {
                    if batch.is_none() {
                        return task.await.unwrap_or(Err(Error::Closed { what: "share consumer" }));
                    }
                }
            }
        }
    }
}

impl futures::Stream for ShareStream {
    type Item = ShareRecord;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ShareRecord>> {
        self.poll_record(cx)
    }
}
