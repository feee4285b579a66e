//! One broker's share fetching: a task per broker that leads assigned partitions, with one
//! connection and one share session ([`ShareSession`]).
//!
//! ```text
//!   ShareFetch (session epoch, acks of the last round) ──► acquired records ──► Round
//!        ▲                                                                      │ handler / stream
//!        └──── every record settled, or the lock ran out, or shutdown ◄─────────┘
//! ```
//!
//! Like the Java `KafkaShareConsumer`'s poll loop, a task acquires the next records only once the
//! previous ones are settled (or their lock ran out): records are never held unprocessed while
//! their lock runs. The acknowledgements of a round ride on the next ShareFetch; those of
//! partitions no longer fetched from this broker go in a ShareAcknowledge; at shutdown the rest
//! (unfinished records released) go in a ShareAcknowledge at epoch -1, which closes the session.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::share_acknowledge_request::{
    AcknowledgePartition, AcknowledgeTopic, AcknowledgementBatch as AckBatchAck,
};
use kafka_protocol::messages::share_fetch_request::{
    AcknowledgementBatch as FetchAckBatch, FetchPartition, FetchTopic, ForgottenTopic,
};
use kafka_protocol::messages::{ShareAcknowledgeRequest, ShareFetchRequest, ShareFetchResponse};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::acks::{self, AckBatch, AckType, Pending, Round, Tally};
use super::membership::MemberView;
use super::session::{CLOSE_EPOCH, SessionPlan, ShareSession};
use super::{Acknowledged, Processor, ShareListener, ShareRecord, ShareSettings, ShareStats};
use crate::consumer::failure::Verdict;
use crate::consumer::record::{ConsumedRecord, RecordChunk};
use crate::group::TopicPartition;
use crate::group::member::group_id;
use crate::wire::records::decode_records;
use crate::wire::{Connection, WireError};
use crate::{ClientConfig, Error};

/// What a broker task needs from its consumer.
pub(super) struct BrokerContext {
    pub(super) client: ClientConfig,
    pub(super) settings: Arc<ShareSettings>,
    pub(super) processor: Arc<Processor>,
    pub(super) stats: Arc<ShareStats>,
    pub(super) member: watch::Receiver<MemberView>,
    /// Asks the engine to look the leaders up again (a partition's leader moved).
    pub(super) refresh: mpsc::UnboundedSender<()>,
    /// A fatal error for the whole consumer.
    pub(super) fatal: mpsc::UnboundedSender<Error>,
    pub(super) listener: Option<Arc<dyn ShareListener>>,
    pub(super) metrics: Option<kafkit_metrics::Metrics>,
}

/// One broker task's state.
pub(super) struct BrokerTask {
    pub(super) ctx: Arc<BrokerContext>,
    pub(super) address: String,
    /// The assigned partitions this broker leads (empty: none now), written by the engine.
    pub(super) partitions: watch::Receiver<BTreeMap<TopicPartition, Uuid>>,
    /// Turns true at shutdown: finish the round (release the unfinished), close the session.
    pub(super) stop: watch::Receiver<bool>,
    conn: Option<Arc<Connection>>,
    session: ShareSession,
    pending: Pending,
    /// Topic ids of every partition seen, so acknowledgements can name one that left.
    ids: HashMap<TopicPartition, Uuid>,
    names: HashMap<Uuid, Arc<str>>,
    /// The lock duration the broker announced; until then, Kafka's default.
    lock: Duration,
    backoff: kafkit_resilience::Backoff,
    /// Round numbers, so a stream acknowledgement of an earlier round is recognised as late.
    round_id: u64,
    /// Set by [`acquired`](Self::acquired) when a partition's answer was an error.
    partition_errors: bool,
    /// Where [`ShareRecord`]s of this task's rounds send their outcomes (stream style).
    acks_tx: mpsc::UnboundedSender<StreamAck>,
    acks_rx: mpsc::UnboundedReceiver<StreamAck>,
}

/// A stream record's outcome: (round, slot, type).
pub(super) type StreamAck = (u64, usize, AckType);

impl BrokerTask {
    pub(super) fn new(
        ctx: Arc<BrokerContext>,
        address: String,
        partitions: watch::Receiver<BTreeMap<TopicPartition, Uuid>>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let backoff = ctx.client.reconnect_backoff_policy().start();
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        Self {
            acks_tx,
            acks_rx,
            ctx,
            address,
            partitions,
            stop,
            conn: None,
            session: ShareSession::default(),
            pending: Pending::new(),
            ids: HashMap::new(),
            names: HashMap::new(),
            lock: Duration::from_secs(30),
            backoff,
            round_id: 0,
            partition_errors: false,
        }
    }

    /// Fetches until stopped, then closes the session.
    pub(super) async fn run(mut self) {
        loop {
            let stopping = *self.stop.borrow();
            let wanted = self.wanted(stopping);
            if stopping {
                self.close().await;
                return;
            }
            if wanted.is_empty() {
                // Nothing to fetch here now: send what is settled, then wait for work.
                self.acknowledge_departed(&wanted).await;
                tokio::select! {
                    _ = self.partitions.changed() => {}
                    _ = self.stop.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)), if !self.pending.is_empty() => {}
                }
                continue;
            }
            if let Err(why) = self.round(&wanted).await {
                let delay = self.backoff.next_delay();
                debug!(broker = %self.address, reason = %why, ?delay, "share fetch failed; backing off");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = self.stop.changed() => {}
                }
            }
        }
    }

    /// The partitions to fetch: the assigned ones this broker leads, none when stopping.
    fn wanted(&mut self, stopping: bool) -> BTreeSet<TopicPartition> {
        let partitions = self.partitions.borrow_and_update().clone();
        for (tp, id) in &partitions {
            self.ids.insert(tp.clone(), *id);
            self.names
                .entry(*id)
                .or_insert_with(|| Arc::from(tp.topic.as_str()));
        }
        if stopping {
            BTreeSet::new()
        } else {
            partitions.into_keys().collect()
        }
    }

    async fn connection(&mut self) -> Result<Arc<Connection>, String> {
        if let Some(conn) = self.conn.as_ref().filter(|c| !c.is_dead()) {
            return Ok(Arc::clone(conn));
        }
        // A new connection has no session on the broker.
        self.session.reset();
        let conn = Connection::connect(
            &self.address,
            &self.ctx.client,
            self.ctx.settings.request_timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
        let conn = Arc::new(conn);
        self.conn = Some(Arc::clone(&conn));
        Ok(conn)
    }

    fn broken(&mut self, error: &WireError) -> String {
        self.conn = None;
        self.session.reset();
        error.to_string()
    }

    /// One round: ShareFetch (with the due acknowledgements), then the records processed.
    async fn round(&mut self, wanted: &BTreeSet<TopicPartition>) -> Result<(), String> {
        let conn = self.connection().await?;
        self.acknowledge_departed(wanted).await;
        let member = self.ctx.member.borrow().clone();
        if member.epoch <= 0 {
            return Err("not a member of the group yet".into());
        }
        let plan = self.session.plan(wanted);
        let now = Instant::now();
        let (acks, tally) = if plan.epoch == 0 {
            // No acknowledgements on an opening request: they wait for the next one.
            (BTreeMap::new(), Tally::default())
        } else {
            let in_wanted = |tp: &TopicPartition| wanted.contains(tp);
            acks::take_due(&mut self.pending, Some(&in_wanted), now)
        };
        let request = self.fetch_request(&member, &plan, &acks);
        let timeout = self.ctx.settings.request_timeout + self.ctx.settings.max_wait;
        let sent = Instant::now();
        let response = match conn.send(&request, timeout).await {
            Ok(r) => r,
            Err(WireError::UnsupportedVersion { broker, .. }) => {
                let _ = self.ctx.fatal.send(super::membership::unsupported_hint(
                    &self.ctx.settings.group_id,
                    Error::Connection {
                        context: "ShareFetch".into(),
                        source: WireError::UnsupportedVersion {
                            broker,
                            api: kafka_protocol::messages::ApiKey::ShareFetch,
                            min: -1,
                            max: -1,
                            ours_min: 1,
                            ours_max: 1,
                        },
                    },
                ));
                return Err("the broker does not offer ShareFetch".into());
            }
            Err(e) => {
                self.count_unsent(tally);
                let why = self.broken(&e);
                self.report(&acks, &HashMap::new(), Some(&why));
                return Err(why);
            }
        };
        if let Some(error) = ResponseError::try_from_code(response.error_code) {
            self.count_unsent(tally);
            let why = format!(
                "ShareFetch at session epoch {}: {error:?} {}",
                plan.epoch,
                response.error_message.as_deref().unwrap_or("")
            );
            self.report(&acks, &HashMap::new(), Some(&why));
            match error {
                ResponseError::ShareSessionNotFound | ResponseError::InvalidShareSessionEpoch => {
                    info!(broker = %self.address, reason = %why, "share session lost; opening a new one");
                    self.session.reset();
                    return Ok(());
                }
                _ => {
                    self.session.reset();
                    return Err(why);
                }
            }
        }
        self.backoff.reset();
        self.session.succeeded(&plan);
        self.ctx.stats.add_acknowledged(&tally);
        self.expired_metrics(&tally.lock_expired);
        let refused: HashMap<TopicPartition, String> = response
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, p)))
            .filter(|(_, p)| p.acknowledge_error_code != 0)
            .filter_map(|(id, p)| {
                let name = self.names.get(&id)?;
                let error = ResponseError::try_from_code(p.acknowledge_error_code)
                    .map_or(format!("error code {}", p.acknowledge_error_code), |e| {
                        format!("{e:?}")
                    });
                Some((TopicPartition::new(&**name, p.partition_index), error))
            })
            .collect();
        self.report(&acks, &refused, None);
        if response.acquisition_lock_timeout_ms > 0 {
            self.lock = Duration::from_millis(response.acquisition_lock_timeout_ms as u64);
        }
        let mut round = Round::new(sent + self.lock);
        self.partition_errors = false;
        let records = self.acquired(response, &mut round);
        if records.is_empty() {
            // Only gaps (if anything): acknowledged with the next request.
            round.finish(Instant::now(), false, &mut self.pending);
            if self.partition_errors {
                // The broker answers errors at once: back off rather than ask again right away.
                return Err("partition errors in the ShareFetch response".into());
            }
            return Ok(());
        }
        self.round_id += 1;
        self.ctx
            .processor
            .process(
                records,
                &mut round,
                (self.round_id, &self.acks_tx, &mut self.acks_rx),
                &mut self.stop,
                &self.ctx.settings,
            )
            .await;
        let stopping = *self.stop.borrow();
        let expired = round.finish(Instant::now(), stopping, &mut self.pending);
        let count = acks::total(&expired);
        if count > 0 {
            warn!(broker = %self.address, records = count, lock = ?self.lock, "records not settled within their acquisition lock; not acknowledged (the broker redelivers them)");
            self.ctx
                .stats
                .lock_expired
                .fetch_add(count, Ordering::Relaxed);
            self.expired_metrics(&expired);
        }
        Ok(())
    }

    /// Tells the listener (if any) what the broker answered for `acks`: refused per partition
    /// (`refused`), or all of them (`failed`, the request as a whole). Refused acknowledgements are
    /// counted as failures.
    fn report(
        &self,
        acks: &BTreeMap<TopicPartition, Vec<AckBatch>>,
        refused: &HashMap<TopicPartition, String>,
        failed: Option<&str>,
    ) {
        let partitions: Vec<Acknowledged> = acks
            .iter()
            .map(|(tp, batches)| Acknowledged {
                partition: tp.clone(),
                offsets: batches
                    .iter()
                    .filter(|b| b.ack != AckType::Gap)
                    .flat_map(|b| (b.first..=b.last).map(move |o| (o, b.ack)))
                    .collect(),
                error: failed
                    .map(str::to_owned)
                    .or_else(|| refused.get(tp).cloned()),
            })
            .filter(|a| !a.offsets.is_empty())
            .collect();
        let refused_offsets: usize = partitions
            .iter()
            .filter(|a| a.error.is_some() && failed.is_none())
            .map(|a| a.offsets.len())
            .sum();
        if refused_offsets > 0 {
            debug!(broker = %self.address, records = refused_offsets, "acknowledgements refused");
            self.ctx
                .stats
                .ack_failures
                .fetch_add(refused_offsets as u64, Ordering::Relaxed);
        }
        if let Some(m) = &self.ctx.metrics {
            for a in partitions.iter().filter(|a| a.error.is_none()) {
                let count =
                    |t: AckType| a.offsets.iter().filter(|(_, ack)| *ack == t).count() as u64;
                m.record_share_acknowledged(
                    &a.partition.topic,
                    count(AckType::Accept),
                    count(AckType::Release),
                    count(AckType::Reject),
                );
            }
        }
        if let Some(listener) = &self.ctx.listener
            && !partitions.is_empty()
        {
            listener.acknowledged(&partitions);
        }
    }

    fn count_unsent(&self, tally: Tally) {
        // Acknowledgements in a request that failed: the records' locks run out, and the broker
        // delivers them again.
        let lost = tally.accepted + tally.released + tally.rejected;
        if lost > 0 {
            self.ctx
                .stats
                .ack_failures
                .fetch_add(lost, Ordering::Relaxed);
        }
        self.ctx
            .stats
            .lock_expired
            .fetch_add(acks::total(&tally.lock_expired), Ordering::Relaxed);
        self.expired_metrics(&tally.lock_expired);
    }

    fn expired_metrics(&self, expired: &acks::Expired) {
        if let Some(m) = &self.ctx.metrics {
            for (topic, &records) in expired {
                m.record_share_lock_expired(topic, records);
            }
        }
    }

    fn fetch_request(
        &self,
        member: &MemberView,
        plan: &SessionPlan,
        acks: &BTreeMap<TopicPartition, Vec<AckBatch>>,
    ) -> ShareFetchRequest {
        let s = &self.ctx.settings;
        let mut named: BTreeSet<&TopicPartition> = plan.added.iter().collect();
        named.extend(acks.keys());
        let mut topics: Vec<FetchTopic> = Vec::new();
        for tp in named {
            let Some(&id) = self.ids.get(tp) else {
                continue;
            };
            let batches = acks
                .get(tp)
                .map(|bs| {
                    bs.iter()
                        .map(|b| {
                            FetchAckBatch::default()
                                .with_first_offset(b.first)
                                .with_last_offset(b.last)
                                .with_acknowledge_types(vec![b.ack.code()])
                        })
                        .collect()
                })
                .unwrap_or_default();
            let partition = FetchPartition::default()
                .with_partition_index(tp.partition)
                .with_acknowledgement_batches(batches);
            match topics.iter_mut().find(|t| t.topic_id == id) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(
                    FetchTopic::default()
                        .with_topic_id(id)
                        .with_partitions(vec![partition]),
                ),
            }
        }
        let mut forgotten: Vec<ForgottenTopic> = Vec::new();
        for tp in &plan.forgotten {
            let Some(&id) = self.ids.get(tp) else {
                continue;
            };
            match forgotten.iter_mut().find(|t| t.topic_id == id) {
                Some(t) => t.partitions.push(tp.partition),
                None => forgotten.push(
                    ForgottenTopic::default()
                        .with_topic_id(id)
                        .with_partitions(vec![tp.partition]),
                ),
            }
        }
        ShareFetchRequest::default()
            .with_group_id(Some(group_id(&s.group_id)))
            .with_member_id(Some(StrBytes::from_string(member.member_id.clone())))
            .with_share_session_epoch(plan.epoch)
            .with_max_wait_ms(s.max_wait.as_millis() as i32)
            .with_min_bytes(1)
            .with_max_bytes(s.fetch_max_bytes)
            .with_max_records(s.max_records)
            .with_batch_size(s.max_records)
            .with_topics(topics)
            .with_forgotten_topics_data(forgotten)
    }

    /// The records this member acquired, as consumed records, each with its slot in `round`; the
    /// acquired offsets without a record become gaps.
    fn acquired(&mut self, response: ShareFetchResponse, round: &mut Round) -> Vec<ConsumedRecord> {
        let mut out = Vec::new();
        for topic in response.responses {
            let Some(name) = self.names.get(&topic.topic_id).cloned() else {
                continue;
            };
            for p in topic.partitions {
                let tp = TopicPartition::new(&*name, p.partition_index);
                if let Some(error) = ResponseError::try_from_code(p.error_code) {
                    self.partition_errors = true;
                    match error {
                        ResponseError::NotLeaderOrFollower
                        | ResponseError::FencedLeaderEpoch
                        | ResponseError::UnknownLeaderEpoch
                        | ResponseError::UnknownTopicOrPartition
                        | ResponseError::UnknownTopicId => {
                            debug!(broker = %self.address, partition = %tp, ?error, "leader moved; looking it up again");
                            let _ = self.ctx.refresh.send(());
                        }
                        _ => {
                            warn!(broker = %self.address, partition = %tp, ?error, "share fetch of a partition failed")
                        }
                    }
                    continue;
                }
                let ranges: Vec<(i64, i64)> = p
                    .acquired_records
                    .iter()
                    .map(|a| (a.first_offset, a.last_offset))
                    .collect();
                if ranges.is_empty() {
                    continue;
                }
                let delivery = |offset: i64| {
                    p.acquired_records
                        .iter()
                        .find(|a| a.first_offset <= offset && offset <= a.last_offset)
                        .map_or(1, |a| a.delivery_count)
                };
                let first = ranges.iter().map(|r| r.0).min().unwrap_or(0);
                let decoded = p
                    .records
                    .clone()
                    .map(|bytes| decode_records(bytes, first, &[]))
                    .unwrap_or_default();
                if let Some(corrupt) = &decoded.corrupt {
                    warn!(partition = %tp, offset = corrupt.offset, reason = %corrupt.reason, "undecodable batch; its acquired records are left to their lock");
                }
                let mut offsets = Vec::new();
                let mut mine = Vec::new();
                let mut counts = Vec::new();
                for r in decoded.records {
                    if !acks::is_acquired(&ranges, r.offset) {
                        continue;
                    }
                    offsets.push(r.offset);
                    let count = delivery(r.offset);
                    self.ctx.stats.acquired(count);
                    if let Some(m) = &self.ctx.metrics {
                        m.record_consumed(&name, 1);
                        m.record_share_acquired(&name, count.max(1) as u16);
                    }
                    round.push(tp.clone(), r.offset);
                    mine.push(r);
                    counts.push(count);
                }
                // One chunk per partition and response, as the consumer's records are.
                let chunk = Arc::new(RecordChunk {
                    topic: Arc::clone(&name),
                    partition: tp.partition,
                    records: mine,
                    _budget: None,
                    delivery_counts: counts,
                });
                out.extend((0..chunk.records.len()).map(|i| ConsumedRecord::of(&chunk, i)));
                if decoded.corrupt.is_none() {
                    for offset in acks::gaps(&ranges, &offsets) {
                        round.gap(tp.clone(), offset);
                    }
                }
            }
        }
        out
    }

    /// Sends the settled acknowledgements of partitions not in `wanted` (no longer assigned, or
    /// led elsewhere now) in a ShareAcknowledge on the open session.
    async fn acknowledge_departed(&mut self, wanted: &BTreeSet<TopicPartition>) {
        if !self.session.is_open() || self.pending.keys().all(|tp| wanted.contains(tp)) {
            return;
        }
        let departed = |tp: &TopicPartition| !wanted.contains(tp);
        let (acks, tally) = acks::take_due(&mut self.pending, Some(&departed), Instant::now());
        let epoch = self.session.epoch();
        if self.acknowledge(epoch, acks, tally).await {
            self.session.succeeded(&SessionPlan {
                epoch,
                added: Vec::new(),
                forgotten: Vec::new(),
            });
        }
    }

    /// Shutdown: every settled acknowledgement in a ShareAcknowledge at epoch -1, which closes
    /// the session.
    async fn close(&mut self) {
        if !self.session.is_open() {
            let (_, tally) = acks::take_due(&mut self.pending, None, Instant::now());
            self.count_unsent(tally);
            return;
        }
        let (acks, tally) = acks::take_due(&mut self.pending, None, Instant::now());
        if self.acknowledge(CLOSE_EPOCH, acks, tally).await {
            info!(broker = %self.address, "share session closed");
        }
        self.session.reset();
    }

    /// One ShareAcknowledge; whether the broker took it.
    async fn acknowledge(
        &mut self,
        epoch: i32,
        acks: BTreeMap<TopicPartition, Vec<AckBatch>>,
        tally: Tally,
    ) -> bool {
        let Some(conn) = self.conn.clone().filter(|c| !c.is_dead()) else {
            self.count_unsent(tally);
            return false;
        };
        let member_id = self.ctx.member.borrow().member_id.clone();
        let mut topics: Vec<AcknowledgeTopic> = Vec::new();
        for (tp, batches) in &acks {
            let Some(&id) = self.ids.get(tp) else {
                continue;
            };
            let partition = AcknowledgePartition::default()
                .with_partition_index(tp.partition)
                .with_acknowledgement_batches(
                    batches
                        .iter()
                        .map(|b| {
                            AckBatchAck::default()
                                .with_first_offset(b.first)
                                .with_last_offset(b.last)
                                .with_acknowledge_types(vec![b.ack.code()])
                        })
                        .collect(),
                );
            match topics.iter_mut().find(|t| t.topic_id == id) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(
                    AcknowledgeTopic::default()
                        .with_topic_id(id)
                        .with_partitions(vec![partition]),
                ),
            }
        }
        let request = ShareAcknowledgeRequest::default()
            .with_group_id(Some(group_id(&self.ctx.settings.group_id)))
            .with_member_id(Some(StrBytes::from_string(member_id)))
            .with_share_session_epoch(epoch)
            .with_topics(topics);
        match conn.send(&request, self.ctx.settings.request_timeout).await {
            Ok(r) if r.error_code == 0 => {
                self.ctx.stats.add_acknowledged(&tally);
                self.expired_metrics(&tally.lock_expired);
                let refused: HashMap<TopicPartition, String> = r
                    .responses
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, p)))
                    .filter(|(_, p)| p.error_code != 0)
                    .filter_map(|(id, p)| {
                        let name = self.names.get(&id)?;
                        let error = ResponseError::try_from_code(p.error_code)
                            .map_or(format!("error code {}", p.error_code), |e| format!("{e:?}"));
                        Some((TopicPartition::new(&**name, p.partition_index), error))
                    })
                    .collect();
                self.report(&acks, &refused, None);
                true
            }
            Ok(r) => {
                let why = format!(
                    "ShareAcknowledge at session epoch {epoch}: error code {}",
                    r.error_code
                );
                debug!(broker = %self.address, reason = %why, "ShareAcknowledge refused");
                self.count_unsent(tally);
                self.report(&acks, &HashMap::new(), Some(&why));
                self.session.reset();
                false
            }
            Err(e) => {
                self.count_unsent(tally);
                let why = self.broken(&e);
                self.report(&acks, &HashMap::new(), Some(&why));
                false
            }
        }
    }
}

impl From<Verdict> for AckType {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Succeeded | Verdict::DeadLettered => AckType::Accept,
            Verdict::Release => AckType::Release,
            Verdict::Reject => AckType::Reject,
        }
    }
}

/// Runs the processor on one round's records until each is settled, the lock runs out, or (after
/// a shutdown) the shutdown timeout passes.
impl Processor {
    pub(super) async fn process(
        &self,
        records: Vec<ConsumedRecord>,
        round: &mut Round,
        (round_id, acks_tx, acks_rx): (
            u64,
            &mpsc::UnboundedSender<StreamAck>,
            &mut mpsc::UnboundedReceiver<StreamAck>,
        ),
        stop: &mut watch::Receiver<bool>,
        settings: &ShareSettings,
    ) {
        let deadline = round.deadline();
        let mut stop_at: Option<Instant> = None;
        let limit = |stop_at: Option<Instant>| stop_at.map_or(deadline, |s| s.min(deadline));
        match self {
            Processor::Handler { handler, failure } => {
                let mut queue = records.into_iter().enumerate();
                let mut running = FuturesUnordered::new();
                loop {
                    while stop_at.is_none() && running.len() < settings.concurrency {
                        let Some((slot, record)) = queue.next() else {
                            break;
                        };
                        let (handler, failure) = (Arc::clone(handler), Arc::clone(failure));
                        running.push(async move {
                            (
                                slot,
                                failure.settle(&handler, &record, None, deadline).await,
                            )
                        });
                    }
                    if running.is_empty() {
                        return;
                    }
                    tokio::select! {
                        Some((slot, verdict)) = running.next() => {
                            round.settle(slot, verdict.into(), Instant::now());
                        }
                        _ = tokio::time::sleep_until(limit(stop_at)) => return,
                        _ = stop.changed(), if stop_at.is_none() => {
                            stop_at = Some(Instant::now() + settings.shutdown_timeout);
                        }
                    }
                }
            }
            Processor::Batch {
                handler,
                single,
                failure,
                max,
            } => {
                let mut slots: Vec<(usize, ConsumedRecord)> =
                    records.into_iter().enumerate().collect();
                while !slots.is_empty() && stop_at.is_none() {
                    let rest = slots.split_off(slots.len().min(*max));
                    let chunk = std::mem::replace(&mut slots, rest);
                    let batch: Vec<ConsumedRecord> = chunk.iter().map(|(_, r)| r.clone()).collect();
                    let work = async {
                        let results = crate::consumer::failure::catching(|| handler(batch))
                            .await
                            .unwrap_or_else(|panic| {
                                let e: crate::consumer::failure::HandlerError = panic.into();
                                chunk
                                    .iter()
                                    .map(|_| {
                                        Err(crate::consumer::failure::HandlerError {
                                            type_name: e.type_name,
                                            source: e.to_string().into(),
                                        })
                                    })
                                    .collect()
                            });
                        let mut out = Vec::with_capacity(chunk.len());
                        for ((slot, record), result) in chunk.iter().zip(results) {
                            let verdict = match result {
                                Ok(()) => Verdict::Succeeded,
                                Err(e) => failure.settle(single, record, Some(e), deadline).await,
                            };
                            out.push((*slot, verdict));
                        }
                        out
                    };
                    tokio::select! {
                        out = work => {
                            let now = Instant::now();
                            for (slot, verdict) in out {
                                round.settle(slot, verdict.into(), now);
                            }
                        }
                        _ = tokio::time::sleep_until(deadline) => return,
                    }
                    if *stop.borrow() {
                        stop_at = Some(Instant::now());
                    }
                }
            }
            Processor::Stream(tx) => {
                let handed: Vec<ShareRecord> = records
                    .into_iter()
                    .enumerate()
                    .map(|(slot, record)| ShareRecord::new(record, round_id, slot, acks_tx.clone()))
                    .collect();
                if tx.send(handed).is_err() {
                    // Nobody reads the stream: the records are released below (shutdown).
                    return;
                }
                while !round.is_done() {
                    tokio::select! {
                        Some((id, slot, ack)) = acks_rx.recv() => {
                            if id == round_id {
                                round.settle(slot, ack, Instant::now());
                            }
                        }
                        _ = tokio::time::sleep_until(limit(stop_at)) => return,
                        _ = stop.changed(), if stop_at.is_none() => {
                            stop_at = Some(Instant::now() + settings.shutdown_timeout);
                        }
                    }
                }
            }
        }
    }
}
