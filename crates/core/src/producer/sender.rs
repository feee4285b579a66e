//! The producer's I/O: one sender task per broker that leads partitions with records, and the
//! router task that looks up leaders and the producer id.
//!
//! ```text
//!  send ──append──► accumulator ◄──drain / complete── sender (one per leader broker, one Connection,
//!                      ▲                                 up to max.in.flight ProduceRequests)
//!                      └── leaders, producer id ── router (Metadata, InitProducerId)
//! ```
//!
//! - A sender drains, for each request, one ready batch of every partition its broker leads, and
//!   keeps up to `max.in.flight.requests.per.connection` requests in flight on its connection
//!   (pipelined: the broker answers a connection's requests in order). Each partition's answer goes
//!   back to the accumulator: written, retry (and, for NOT_LEADER_OR_FOLLOWER and its kin, a new
//!   leader lookup), sequence lost, or failed. A broken connection or a request timeout gives
//!   every batch in flight back for a retry, drops the connection and reconnects after backoff.
//! - The router looks leaders up (one Metadata for every topic with a partition whose leader is
//!   unknown, and every `metadata.max.age.ms` for all), with leader epochs (older metadata never
//!   replaces newer), starts a sender for each new leader and wakes it. With idempotence it gets
//!   the producer id, and bumps the epoch when the accumulator asks (InitProducerId with the
//!   current id and epoch, KIP-360; a broker below InitProducerId v3 gives a new id instead).
//!   A transactional producer gets its id from the transaction coordinator (`transaction`)
//!   instead, and the router adds partitions to the open transaction (AddPartitionsToTxn) before
//!   their first batches go (transaction version 1).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI16, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    InitProducerIdRequest, ProduceRequest, ProduceResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafkit_resilience::BackoffPolicy;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::accumulator::{Accumulator, Batch, Outcome, ProducerIdEpoch};
use super::transaction::Transactions;
use crate::config::ClientConfig;
use crate::group::TopicPartition;
use crate::task::OwnedTask;
use crate::wire::{Connection, WireError, metadata_request};
use crate::{Error, Result, TransactionErrorKind};

/// Settings of the I/O side.
#[derive(Debug, Clone)]
pub(super) struct IoSettings {
    /// `acks`: 0, 1 or -1 (all).
    pub(super) acks: i16,
    /// `request.timeout.ms`.
    pub(super) request_timeout: Duration,
    /// `max.in.flight.requests.per.connection`.
    pub(super) max_in_flight: usize,
    /// `max.request.size`: the most batch bytes in one ProduceRequest (at least one batch).
    pub(super) max_request_size: usize,
    /// Backoff between reconnects and between failed lookups: `retry.backoff.ms` bounded by the
    /// client's reconnect backoff, as for a batch's retries.
    pub(super) backoff: BackoffPolicy,
    /// `metadata.max.age.ms`.
    pub(super) metadata_max_age: Duration,
    /// `transactional.id`, carried by every ProduceRequest of a transactional producer.
    pub(super) transactional_id: Option<String>,
}

/// The newest ProduceRequest version a producer sends: v9 without transactions (v10 to v12 add
/// nothing it uses), v11 in version-1 transactions (v12 would add partitions implicitly), v12
/// with transaction version 2.
const PRODUCE_MAX_PLAIN: i16 = 9;

/// What the send path, the senders and the router share.
#[derive(Debug)]
pub(super) struct Shared {
    /// parking_lot Mutex: held to append, drain or complete, never across an await.
    pub(super) acc: parking_lot::Mutex<Accumulator>,
    pub(super) client: ClientConfig,
    pub(super) io: IoSettings,
    /// Each sender's wake-up, by node id. Written by the router.
    wakers: parking_lot::Mutex<HashMap<i32, Arc<Notify>>>,
    /// Broker addresses by node id, from the last Metadata. Written by [`Shared::metadata`].
    brokers: parking_lot::Mutex<HashMap<i32, String>>,
    /// Wakes the router (a leader to look up, an epoch to bump).
    router: Notify,
    /// The id of the oldest unfinished batch, published after batches finish (flushes wait on it).
    progress: watch::Sender<u64>,
    /// The connection for Metadata and InitProducerId. tokio Mutex: held while connecting.
    control: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// The transaction manager of a transactional producer.
    pub(super) txn: Option<Arc<Transactions>>,
    /// The newest ProduceRequest version to send; written by `init_transactions`.
    produce_max: AtomicI16,
}

impl Shared {
    pub(super) fn new(
        acc: Accumulator,
        client: ClientConfig,
        io: IoSettings,
        control: Connection,
        txn: Option<Arc<Transactions>>,
    ) -> Self {
        Self {
            acc: parking_lot::Mutex::new(acc),
            client,
            io,
            wakers: parking_lot::Mutex::new(HashMap::new()),
            brokers: parking_lot::Mutex::new(HashMap::new()),
            router: Notify::new(),
            progress: watch::Sender::new(0),
            control: tokio::sync::Mutex::new(Some(Arc::new(control))),
            txn,
            produce_max: AtomicI16::new(PRODUCE_MAX_PLAIN),
        }
    }

    /// Sets the ProduceRequest version for the transaction version in use.
    pub(super) fn set_transaction_version(&self, tv2: bool) {
        self.produce_max
            .store(if tv2 { 12 } else { 11 }, Ordering::Release);
    }

    /// Wakes the sender of `node`, or the router when the leader is unknown.
    pub(super) fn wake(&self, leader: Option<i32>) {
        match leader.and_then(|node| self.wakers.lock().get(&node).cloned()) {
            Some(waker) => waker.notify_one(),
            None => self.router.notify_one(),
        }
    }

    /// Wakes every sender (a flush, a new producer epoch).
    pub(super) fn wake_all(&self) {
        for waker in self.wakers.lock().values() {
            waker.notify_one();
        }
        self.router.notify_one();
    }

    /// Publishes how far batches are finished.
    fn publish_progress(&self, acc: &Accumulator) {
        self.progress.send_replace(acc.oldest_live());
    }

    /// Waits until every batch with an id below `until` is finished.
    pub(super) async fn finished(&self, until: u64) {
        let mut progress = self.progress.subscribe();
        if self.acc.lock().oldest_live() >= until {
            return;
        }
        let _ = progress.wait_for(|&oldest| oldest >= until).await;
    }

    /// The control connection, connecting to a bootstrap broker when there is none.
    async fn control(&self) -> Result<Arc<Connection>> {
        let mut slot = self.control.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_dead()) {
            return Ok(Arc::clone(conn));
        }
        *slot = None;
        let conn = Arc::new(self.client.bootstrap_connection().await?);
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// Sends `request` on the control connection; a failure (a timeout included) closes it.
    async fn on_control<R: crate::wire::ApiRequest>(
        &self,
        request: &R,
        doing: impl FnOnce() -> String,
    ) -> Result<R::Response> {
        let conn = self.control().await?;
        match conn.send(request, self.io.request_timeout).await {
            Ok(response) => Ok(response),
            Err(source) => {
                conn.close("a request on it failed");
                let mut slot = self.control.lock().await;
                if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                    *slot = None;
                }
                Err(Error::Connection {
                    context: doing(),
                    source,
                })
            }
        }
    }

    /// One Metadata request for `topics`: records their leaders (with epochs) in the accumulator
    /// and the brokers' addresses, and returns each existing topic's partition count.
    pub(super) async fn metadata(&self, topics: &[String]) -> Result<BTreeMap<String, i32>> {
        let request = metadata_request(Some(topics));
        let response = self
            .on_control(&request, || {
                format!("looking up the partitions of {topics:?} (producing)")
            })
            .await?;
        {
            let mut brokers = self.brokers.lock();
            for b in &response.brokers {
                brokers.insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
            }
        }
        let mut counts = BTreeMap::new();
        let mut acc = self.acc.lock();
        for t in &response.topics {
            let Some(name) = t.name.as_ref().filter(|_| t.error_code == 0) else {
                continue;
            };
            counts.insert(name.0.to_string(), t.partitions.len() as i32);
            for p in &t.partitions {
                if p.error_code == 0 && p.leader_id.0 >= 0 {
                    let tp = TopicPartition::new(name.0.as_str(), p.partition_index);
                    if acc.set_leader(&tp, p.leader_id.0, p.leader_epoch) {
                        debug!(partition = %tp, leader = p.leader_id.0, leader_epoch = p.leader_epoch, "producing to the leader");
                    }
                }
            }
        }
        Ok(counts)
    }

    /// InitProducerId: a first producer id, or (with `current`) the next epoch of it.
    async fn init_producer_id(&self, current: Option<ProducerIdEpoch>) -> Result<ProducerIdEpoch> {
        let conn = self.control().await?;
        // KIP-360 bumps need v3; below it, ask for a new id (which also restarts sequences).
        let bump = current.filter(|_| {
            conn.version_for::<InitProducerIdRequest>()
                .is_ok_and(|v| v >= 3)
        });
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(bump.map_or(-1, |p| p.id)))
            .with_producer_epoch(bump.map_or(-1, |p| p.epoch));
        let response = self
            .on_control(&request, || "InitProducerId (producing)".to_owned())
            .await?;
        if response.error_code != 0 {
            let error = ResponseError::try_from_code(response.error_code);
            return Err(Error::Admin {
                operation: "InitProducerId",
                target: "the idempotent producer".into(),
                code: response.error_code,
                error: format!("{error:?}"),
            });
        }
        Ok(ProducerIdEpoch {
            id: response.producer_id.0,
            epoch: response.producer_epoch,
        })
    }
}

/// The router: leaders, producer id, and the senders it started (owned: dropped with it).
pub(super) async fn run_router(shared: Arc<Shared>) {
    let mut senders: HashMap<i32, OwnedTask<()>> = HashMap::new();
    let mut retry = shared.io.backoff.start();
    let mut refreshed = Instant::now();
    loop {
        let (needs_id, current, topics) = {
            let mut acc = shared.acc.lock();
            acc.expire_unled(Instant::now());
            shared.publish_progress(&acc);
            let topics = if acc.take_refresh() || refreshed.elapsed() >= shared.io.metadata_max_age
            {
                acc.topics()
            } else {
                acc.unled_topics()
            };
            (acc.needs_producer_id(), acc.producer(), topics)
        };
        let mut failed = false;
        if let Some(txn) = &shared.txn {
            let to_add = shared.acc.lock().partitions_to_add();
            if !to_add.is_empty() {
                match txn.add_partitions(&shared, &to_add).await {
                    Ok(()) => {
                        shared.acc.lock().partitions_added(&to_add);
                        shared.wake_all();
                    }
                    Err(error) if error.is_retriable() => {
                        debug!(%error, partitions = ?to_add, "AddPartitionsToTxn failed; retrying");
                        failed = true;
                    }
                    Err(error) => {
                        warn!(%error, partitions = ?to_add, "partitions could not join the transaction");
                        let mut acc = shared.acc.lock();
                        acc.fail_partitions(&to_add, &error);
                        shared.publish_progress(&acc);
                    }
                }
            }
        }
        if needs_id {
            match shared.init_producer_id(current).await {
                Ok(producer) => {
                    info!(producer_id = producer.id, epoch = producer.epoch, previous = ?current, "idempotent producer id");
                    shared.acc.lock().set_producer(producer);
                    shared.wake_all();
                }
                Err(error) => {
                    // A broker still loading its producer-id state (COORDINATOR_LOAD_IN_PROGRESS)
                    // or down for a moment is expected: only lasting trouble is a warning.
                    if error.is_retriable() {
                        debug!(%error, "InitProducerId failed; retrying");
                    } else {
                        warn!(%error, "InitProducerId failed; retrying");
                    }
                    failed = true;
                }
            }
        }
        if !topics.is_empty() {
            let list: Vec<String> = topics.into_iter().collect();
            match shared.metadata(&list).await {
                Ok(_) => {
                    refreshed = Instant::now();
                    shared.wake_all();
                    // Partitions still without a leader (an election under way): look again soon.
                    failed |= !shared.acc.lock().unled_topics().is_empty();
                }
                Err(error) => {
                    debug!(%error, "producer metadata lookup failed; retrying");
                    failed = true;
                }
            }
        }
        // A sender for every leader (the send path's own lookups find leaders too).
        let leaders = shared.acc.lock().leaders();
        for node in leaders {
            senders.entry(node).or_insert_with(|| {
                let waker = Arc::new(Notify::new());
                shared.wakers.lock().insert(node, Arc::clone(&waker));
                OwnedTask::spawn(run_sender(Arc::clone(&shared), node, waker))
            });
        }
        if failed {
            // The backoff holds: wake-ups meanwhile are served after it.
            tokio::time::sleep(retry.next_delay()).await;
        } else {
            retry = shared.io.backoff.start();
            tokio::select! {
                _ = shared.router.notified() => {}
                _ = tokio::time::sleep(shared.io.metadata_max_age) => {}
            }
        }
    }
}

/// A request's batches, its result, and the connection it went out on.
type Flight = (
    Vec<(TopicPartition, Batch)>,
    Result<Option<ProduceResponse>, WireError>,
    Arc<Connection>,
);

/// One broker's sender: drains the ready batches of the partitions the broker leads into one
/// ProduceRequest, keeps up to `max.in.flight` of them in flight, hands each partition's answer back.
async fn run_sender(shared: Arc<Shared>, node: i32, wake: Arc<Notify>) {
    let io = &shared.io;
    let mut conn: Option<Arc<Connection>> = None;
    let mut in_flight = FuturesUnordered::new();
    let mut reconnect = io.backoff.start();
    let mut connect_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let mut wake_at = connect_at;
        if in_flight.len() < io.max_in_flight && connect_at.is_none_or(|t| t <= now) {
            connect_at = None;
            let drained = {
                let mut acc = shared.acc.lock();
                let drained = acc.drain(node, now, io.max_request_size);
                shared.publish_progress(&acc);
                drained
            };
            wake_at = drained.wake;
            if !drained.batches.is_empty() {
                if conn.as_ref().is_none_or(|c| c.is_dead()) {
                    conn = None;
                    let address = shared.brokers.lock().get(&node).cloned();
                    let connected = match address {
                        Some(address) => {
                            Connection::connect(&address, &shared.client, io.request_timeout)
                                .await
                                .map_err(|e| e.to_string())
                        }
                        None => Err(format!("no address for broker {node}")),
                    };
                    match connected {
                        Ok(c) => {
                            debug!(node, broker = %c.broker(), "produce connection open");
                            reconnect = io.backoff.start();
                            conn = Some(Arc::new(c));
                        }
                        Err(error) => {
                            let delay = reconnect.next_delay();
                            warn!(node, %error, ?delay, "producer cannot connect to the leader; backing off");
                            connect_at = Some(Instant::now() + delay);
                            give_back(&shared, drained.batches, &error, true);
                            continue;
                        }
                    }
                }
                let c = Arc::clone(conn.as_ref().expect("connected"));
                let request = produce_request(io, &drained.batches);
                let max = shared.produce_max.load(Ordering::Acquire);
                if io.acks == 0 {
                    let sent = c.send_unanswered(&request, max).await;
                    in_flight.push(Box::pin(futures::future::ready((
                        drained.batches,
                        sent.map(|()| None),
                        c,
                    )))
                        as futures::future::BoxFuture<'static, Flight>);
                } else {
                    let timeout = io.request_timeout;
                    in_flight.push(Box::pin(async move {
                        let result = c.send_at_most(&request, max, timeout).await.map(Some);
                        (drained.batches, result, c)
                    }));
                }
                continue;
            }
        }
        tokio::select! {
            Some((batches, result, used)) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(error) = &result {
                    // A request timeout leaves the connection unusable for ordering: close it, as
                    // the Java client does, which fails the requests still in flight on it at once.
                    warn!(node, %error, batches = batches.len(), "produce request failed; retrying on a new connection");
                    used.close("a produce request on it failed");
                    if conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, &used)) {
                        conn = None;
                    }
                }
                handle(&shared, batches, result);
            }
            _ = wake.notified() => {}
            _ = sleep_until(wake_at) => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Batches that could not be sent go back for a retry (their leaders looked up again).
fn give_back(shared: &Shared, batches: Vec<(TopicPartition, Batch)>, reason: &str, moved: bool) {
    let now = Instant::now();
    let mut acc = shared.acc.lock();
    for (tp, batch) in batches {
        acc.complete(
            &tp,
            batch,
            Outcome::Retry {
                leader_moved: moved,
                reason: reason.to_owned(),
            },
            now,
        );
    }
    shared.publish_progress(&acc);
    drop(acc);
    shared.router.notify_one();
}

/// The ProduceRequest carrying `batches`.
fn produce_request(io: &IoSettings, batches: &[(TopicPartition, Batch)]) -> ProduceRequest {
    let mut topics: BTreeMap<&str, Vec<PartitionProduceData>> = BTreeMap::new();
    for (tp, batch) in batches {
        topics.entry(&tp.topic).or_default().push(
            PartitionProduceData::default()
                .with_index(tp.partition)
                .with_records(Some(batch.bytes())),
        );
    }
    ProduceRequest::default()
        .with_transactional_id(
            io.transactional_id.as_ref().map(|id| {
                kafka_protocol::messages::TransactionalId(StrBytes::from_string(id.clone()))
            }),
        )
        .with_acks(io.acks)
        .with_timeout_ms(i32::try_from(io.request_timeout.as_millis()).unwrap_or(i32::MAX))
        .with_topic_data(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(name.to_owned())))
                        .with_partition_data(partitions)
                })
                .collect(),
        )
}

/// Hands every batch of a finished request back with its partition's outcome.
fn handle(
    shared: &Shared,
    batches: Vec<(TopicPartition, Batch)>,
    result: Result<Option<ProduceResponse>, WireError>,
) {
    let response = match result {
        Ok(Some(response)) => response,
        Ok(None) => {
            // acks=0: written as far as anyone will know, offset unknown.
            let now = Instant::now();
            let mut acc = shared.acc.lock();
            for (tp, batch) in batches {
                acc.complete(&tp, batch, Outcome::Written(-1), now);
            }
            shared.publish_progress(&acc);
            return;
        }
        Err(error) => return give_back(shared, batches, &error.to_string(), true),
    };
    let mut answers: HashMap<(&str, i32), (i16, i64, Option<String>)> = HashMap::new();
    for t in &response.responses {
        for p in &t.partition_responses {
            answers.insert(
                (t.name.0.as_str(), p.index),
                (
                    p.error_code,
                    p.base_offset,
                    p.error_message.as_ref().map(|m| m.to_string()),
                ),
            );
        }
    }
    let now = Instant::now();
    let mut refresh = false;
    let mut acc = shared.acc.lock();
    for (tp, batch) in batches {
        let outcome = match answers.get(&(tp.topic.as_str(), tp.partition)) {
            None => Outcome::Retry {
                leader_moved: true,
                reason: "no answer for the partition".into(),
            },
            Some(&(code, base, ref message)) => outcome(
                &tp,
                code,
                base,
                message.as_deref(),
                shared.io.transactional_id.as_deref(),
            ),
        };
        if let Outcome::Retry { reason, .. } | Outcome::SequenceLost { reason } = &outcome {
            debug!(partition = %tp, %reason, records = batch.len(), "produce batch to be retried");
        }
        refresh |= acc.complete(&tp, batch, outcome, now);
    }
    shared.publish_progress(&acc);
    drop(acc);
    if refresh {
        shared.router.notify_one();
    }
}

/// A partition's answer as an [`Outcome`].
fn outcome(
    tp: &TopicPartition,
    code: i16,
    base: i64,
    message: Option<&str>,
    transactional_id: Option<&str>,
) -> Outcome {
    let error = ResponseError::try_from_code(code);
    let reason = || match message {
        Some(m) if !m.is_empty() => format!("{error:?} (error code {code}): {m}"),
        _ => format!("{error:?} (error code {code})"),
    };
    if let Some(id) = transactional_id
        && let Some(
            ResponseError::InvalidProducerEpoch
            | ResponseError::ProducerFenced
            | ResponseError::TransactionalIdAuthorizationFailed,
        ) = error
    {
        // A newer producer of the transactional id took over (or this one may not write).
        let kind = if error == Some(ResponseError::TransactionalIdAuthorizationFailed) {
            TransactionErrorKind::Fatal
        } else {
            TransactionErrorKind::Fenced
        };
        return Outcome::Fatal(Error::Transaction {
            transactional_id: id.to_owned(),
            operation: "Produce",
            kind,
            reason: format!("producing to {tp}: {}", reason()),
        });
    }
    match error {
        None if code == 0 => Outcome::Written(base),
        // Written before (the broker's cache of the last five batches no longer holds it).
        Some(ResponseError::DuplicateSequenceNumber) => Outcome::Written(-1),
        Some(ResponseError::OutOfOrderSequenceNumber | ResponseError::UnknownProducerId) => {
            Outcome::SequenceLost { reason: reason() }
        }
        Some(
            ResponseError::NotLeaderOrFollower
            | ResponseError::LeaderNotAvailable
            | ResponseError::UnknownTopicOrPartition
            | ResponseError::FencedLeaderEpoch
            | ResponseError::UnknownLeaderEpoch
            | ResponseError::KafkaStorageError,
        ) => Outcome::Retry {
            leader_moved: true,
            reason: reason(),
        },
        // A batch of an epoch the partition has left: it gets the new epoch when it is retried.
        // CONCURRENT_TRANSACTIONS: under transaction version 2 the partition is being added while
        // the coordinator still completes the previous transaction; retried, as Java does.
        Some(ResponseError::InvalidProducerEpoch | ResponseError::ConcurrentTransactions) => {
            Outcome::Retry {
                leader_moved: false,
                reason: reason(),
            }
        }
        Some(e) if e.is_retriable() => Outcome::Retry {
            leader_moved: false,
            reason: reason(),
        },
        _ => Outcome::Fatal(Error::Produce {
            topic: tp.topic.clone(),
            partition: tp.partition,
            error: reason(),
            retriable: false,
        }),
    }
}
