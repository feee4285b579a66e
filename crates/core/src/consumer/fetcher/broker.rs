//! One broker's fetch task: one connection, one fetch session, one Fetch in flight covering every
//! partition this broker leads for us that has room in the budget.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::session::{FetchSession, Plan, Wanted};
use super::{
    BudgetShare, Cursor, EARLIEST, FetchContext, FetchEvent, LATEST, PAUSE_AT, READ_COMMITTED,
    RECORD_MEMORY, ReadReplica, Retry, Start, ToRouter, reservation,
};
use crate::consumer::{CorruptBatchPolicy, OffsetReset};
use crate::group::TopicPartition;
use crate::wire::records::{AbortedTransaction, decode_records};
use crate::wire::{ApiRequest, Connection, WireError};
use crate::{Error, Result};

/// How often end offsets are looked up for partitions that are not being fetched (paused, or
/// waiting for budget), so lag is reported truly while the consumer is held back.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// The longest a Fetch may wait in the broker while a partition of this broker is paused until its
/// records drain. One Fetch is in flight per broker: a long poll for caught-up partitions
/// (`fetch.max.wait.ms`, 500 ms) would hold back the paused partition's next fetch after it drains
/// by up to that long (a backlogged partition read at a fraction of its rate next to an idle one).
/// The price is at most 50 short fetches a second per broker while a partition is paused.
const PAUSED_MAX_WAIT: Duration = Duration::from_millis(20);

/// How often partitions fetched without news are reported alive ([`FetchEvent::Polled`]).
const POLLED_EVERY: Duration = Duration::from_secs(1);

pub(super) struct BrokerTask {
    ctx: Arc<FetchContext>,
    /// The broker's node id.
    node: i32,
    address: String,
    /// Cursors handed over by the router.
    rx: mpsc::UnboundedReceiver<Cursor>,
    to_router: mpsc::WeakUnboundedSender<ToRouter>,
    /// The partitions fetched here: those this broker leads for us, and those whose leader named
    /// this broker their preferred read replica.
    cursors: HashMap<TopicPartition, Cursor>,
    conn: Option<Connection>,
    /// The fetch session on `conn`; reset with it.
    session: FetchSession,
    /// Backoff between connection attempts; reset by an answered Fetch.
    backoff: Retry,
    /// No connection attempt before this (set when the connection broke).
    retry_at: Option<Instant>,
    /// Woken when a budget share of ours is dropped: a paused partition may have room again.
    wake: Arc<Notify>,
    /// When end offsets of partitions not being fetched are looked up next.
    next_refresh: Instant,
    last_polled: Instant,
}

impl BrokerTask {
    pub(super) fn new(
        ctx: Arc<FetchContext>,
        node: i32,
        address: String,
        rx: mpsc::UnboundedReceiver<Cursor>,
        to_router: mpsc::WeakUnboundedSender<ToRouter>,
    ) -> Self {
        Self {
            ctx,
            node,
            address,
            rx,
            to_router,
            cursors: HashMap::new(),
            conn: None,
            session: FetchSession::default(),
            backoff: Retry::default(),
            retry_at: None,
            wake: Arc::new(Notify::new()),
            next_refresh: Instant::now() + REFRESH_EVERY,
            last_polled: Instant::now(),
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            loop {
                match self.rx.try_recv() {
                    Ok(c) => self.take(c),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            self.cursors.retain(|_, c| !c.removed());
            self.back_to_leaders(|c| c.replica.is_some() && c.read_replica().is_none());
            if self.cursors.is_empty() {
                // Nothing to fetch here: the connection stays for `connections.max.idle.ms`.
                let idle = tokio::time::sleep(self.ctx.settings.max_idle);
                tokio::select! {
                    c = self.rx.recv() => match c {
                        Some(c) => self.take(c),
                        None => return,
                    },
                    () = idle, if self.conn.is_some() => {
                        debug!(broker = %self.address, "closing the idle fetch connection");
                        self.conn = None;
                        self.session.reset();
                    }
                }
                continue;
            }
            if let Some(at) = self.retry_at.take() {
                tokio::time::sleep_until(at).await;
                continue;
            }
            if let Err(e) = self.connect().await {
                self.broken(e).await;
                continue;
            }
            if let Err(e) = self.reset_offsets().await {
                self.broken(e).await;
                continue;
            }
            let wanted = self.wanted();
            if Instant::now() >= self.next_refresh {
                let paused: Vec<TopicPartition> = self
                    .cursors
                    .iter()
                    .filter(|(tp, c)| c.start == Start::Fetching && !wanted.contains_key(*tp))
                    .map(|(tp, _)| tp.clone())
                    .collect();
                self.refresh_end_offsets(&paused).await;
            }
            if wanted.is_empty() {
                // Everything is paused (or starting): wait for room, a new partition, or a refresh.
                tokio::select! {
                    c = self.rx.recv() => if let Some(c) = c { self.take(c) },
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep_until(self.next_refresh) => {}
                }
                continue;
            }
            let Some((permit, reserved)) = self.reserve(&wanted).await else {
                return;
            };
            if let Err(e) = self.fetch(wanted, permit, reserved).await {
                self.broken(e).await;
            }
        }
    }

    fn take(&mut self, cursor: Cursor) {
        if !cursor.removed() {
            self.cursors.insert(cursor.tp.clone(), cursor);
        }
    }

    /// The partitions to fetch now: started, and not holding too much unfinished.
    fn wanted(&mut self) -> BTreeMap<TopicPartition, Wanted> {
        let pause_at = self
            .ctx
            .settings
            .max_partition_bytes
            .saturating_mul(PAUSE_AT);
        self.cursors
            .iter_mut()
            .filter(|(_, c)| c.start == Start::Fetching)
            .filter_map(|(tp, c)| {
                (c.held_bytes() < pause_at).then(|| {
                    (
                        tp.clone(),
                        Wanted {
                            offset: c.offset,
                            leader_epoch: c.leader_epoch,
                        },
                    )
                })
            })
            .collect()
    }

    async fn connect(&mut self) -> Result<()> {
        if self.conn.as_ref().is_some_and(Connection::is_dead) {
            self.conn = None;
        }
        if self.conn.is_none() {
            // A new connection has no session on the broker.
            self.session.reset();
            let conn = Connection::connect(
                &self.address,
                self.ctx.group.client(),
                self.ctx.settings.request_timeout,
            )
            .await
            .map_err(|source| self.connection_error("connecting to", source))?;
            debug!(broker = %self.address, partitions = self.cursors.len(), "fetch connection open");
            self.conn = Some(conn);
        }
        Ok(())
    }

    /// Sends `request` on the connection; a failed exchange drops the connection (and with it the
    /// fetch session).
    async fn send<R: ApiRequest>(
        &mut self,
        request: &R,
        timeout: Duration,
        doing: &str,
    ) -> Result<R::Response> {
        let Some(conn) = self.conn.as_ref() else {
            let source = WireError::Io {
                broker: self.address.clone(),
                message: "not connected".into(),
            };
            return Err(self.connection_error(doing, source));
        };
        match conn.send(request, timeout).await {
            Ok(response) => Ok(response),
            Err(source) => {
                self.conn = None;
                self.session.reset();
                Err(self.connection_error(doing, source))
            }
        }
    }

    fn connection_error(&self, doing: &str, source: WireError) -> Error {
        let context = format!("{doing} {} (fetching)", self.address);
        if source.is_security() {
            Error::Security { context, source }
        } else {
            Error::Connection { context, source }
        }
    }

    /// The connection broke: report it for every partition, back off, and hand the partitions back
    /// to the router, which looks their leaders up again (leadership may have moved).
    async fn broken(&mut self, error: Error) {
        self.conn = None;
        self.session.reset();
        let delay = self.backoff.next(&self.ctx.settings.backoff);
        warn!(broker = %self.address, %error, ?delay, partitions = self.cursors.len(), "fetch connection failed; backing off");
        self.retry_at = Some(Instant::now() + delay);
        // Partitions read here as a replica go back to their leaders, as a failing leader's do.
        let cursors: Vec<Cursor> = self
            .cursors
            .drain()
            .map(|(_, mut c)| {
                c.replica = None;
                c
            })
            .collect();
        for c in &cursors {
            self.ctx.report_failure(c, error.to_string()).await;
        }
        self.rehome(cursors);
    }

    /// Hands `cursors` back to the router.
    fn rehome(&self, cursors: Vec<Cursor>) {
        if cursors.is_empty() {
            return;
        }
        if let Some(router) = self.to_router.upgrade() {
            let _ = router.send(ToRouter::Homeless(cursors));
        }
    }

    /// Moves `tp` off this broker after `error`: its leader is looked up again after its backoff
    /// (a preferred read replica that failed is not used again).
    async fn move_off(&mut self, tp: &TopicPartition, error: String) {
        if let Some(mut c) = self.cursors.remove(tp) {
            self.ctx.report_failure(&c, error).await;
            c.replica = None;
            c.back_off(&self.ctx.settings.backoff);
            self.rehome(vec![c]);
        }
    }

    /// Hands the partitions fetched here as a read replica that match `which` back to the router,
    /// at once and without their replica, so they are fetched from their leaders again.
    fn back_to_leaders(&mut self, which: impl Fn(&Cursor) -> bool) {
        let tps: Vec<TopicPartition> = self
            .cursors
            .iter()
            .filter(|(_, c)| c.replica.is_some() && which(c))
            .map(|(tp, _)| tp.clone())
            .collect();
        let cursors = tps
            .iter()
            .filter_map(|tp| self.cursors.remove(tp))
            .map(|mut c| {
                debug!(partition = %c.tp, replica = %self.address, "back to the leader");
                c.replica = None;
                c
            })
            .collect();
        self.rehome(cursors);
    }

    /// Hands partitions whose leader named another broker their preferred read replica to the
    /// router, which routes them there.
    fn redirect(&mut self, tps: Vec<(TopicPartition, i32)>) {
        let until = Instant::now() + self.ctx.settings.replica_max_age;
        let cursors = tps
            .into_iter()
            .filter_map(|(tp, node)| {
                let mut c = self.cursors.remove(&tp)?;
                c.replica = Some(ReadReplica { node, until });
                Some(c)
            })
            .collect();
        self.rehome(cursors);
    }

    /// Finds the reset policy's offset for partitions without a committed offset (then `Started`)
    /// and for partitions whose position fell out of the log: one ListOffsets for all.
    async fn reset_offsets(&mut self) -> Result<()> {
        // Offsets are asked of the leader: a read replica hands such partitions back first.
        self.back_to_leaders(|c| matches!(c.start, Start::Reset | Start::OutOfRange));
        let due: Vec<TopicPartition> = self
            .cursors
            .iter()
            .filter(|(_, c)| matches!(c.start, Start::Reset | Start::OutOfRange))
            .map(|(tp, _)| tp.clone())
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let timestamp = match self.ctx.settings.reset {
            OffsetReset::Earliest => EARLIEST,
            OffsetReset::Latest => LATEST,
            OffsetReset::None => {
                let tp = &due[0];
                let c = &self.cursors[tp];
                let error = Error::NoOffset {
                    partition: tp.to_string(),
                };
                self.ctx
                    .send(FetchEvent::Fatal {
                        slot: c.slot,
                        epoch: c.epoch,
                        error,
                    })
                    .await;
                for tp in &due {
                    self.cursors.remove(tp);
                }
                return Ok(());
            }
        };
        let answers = self.list_offsets(&due, timestamp).await?;
        for tp in due {
            let Some(c) = self.cursors.get_mut(&tp) else {
                continue;
            };
            match answers.get(&tp) {
                Some(Ok(offset)) => {
                    let offset = *offset;
                    let policy = self.ctx.settings.reset;
                    if c.start == Start::OutOfRange {
                        warn!(partition = %tp, from = c.offset, to = offset, ?policy, "offset out of range; reset");
                        c.offset = offset;
                        c.start = Start::Fetching;
                        continue;
                    }
                    info!(partition = %tp, offset, ?policy, "nothing committed; fetching from the reset policy's offset");
                    c.offset = offset;
                    c.start = Start::Fetching;
                    let event = FetchEvent::Started {
                        slot: c.slot,
                        epoch: c.epoch,
                        offset,
                        from_commit: false,
                        committed_metadata: None,
                    };
                    if !c.removed() {
                        self.ctx.send(event).await;
                    }
                }
                Some(Err(e)) => {
                    let e = format!("ListOffsets of {tp} on {}: {e:?}", self.address);
                    self.move_off(&tp, e).await;
                }
                None => {
                    let e = format!("ListOffsets on {} did not answer for {tp}", self.address);
                    self.move_off(&tp, e).await;
                }
            }
        }
        Ok(())
    }

    /// Sends the partitions' end offsets to the engine (errors are left to the next fetch to find).
    async fn refresh_end_offsets(&mut self, partitions: &[TopicPartition]) {
        self.next_refresh = Instant::now() + REFRESH_EVERY;
        if partitions.is_empty() || self.conn.is_none() {
            return;
        }
        let Ok(answers) = self.list_offsets(partitions, LATEST).await else {
            return;
        };
        for (tp, answer) in answers {
            if let (Ok(high_watermark), Some(c)) = (answer, self.cursors.get(&tp))
                && !c.removed()
            {
                let event = FetchEvent::EndOffset {
                    slot: c.slot,
                    epoch: c.epoch,
                    high_watermark,
                };
                self.ctx.send(event).await;
            }
        }
    }

    /// The offsets ListOffsets gives for `timestamp` ([`LATEST`] or [`EARLIEST`]); read_committed,
    /// so "latest" is the last stable offset.
    async fn list_offsets(
        &mut self,
        partitions: &[TopicPartition],
        timestamp: i64,
    ) -> Result<HashMap<TopicPartition, std::result::Result<i64, ResponseError>>> {
        // Leader epochs in ListOffsets came with v4 (Kafka 2.1).
        let epochs = self
            .conn
            .as_ref()
            .and_then(|c| c.version_for::<ListOffsetsRequest>().ok())
            .is_some_and(|v| v >= 4);
        let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
        for tp in partitions {
            let leader_epoch = match self.cursors.get(tp) {
                Some(c) if epochs => c.leader_epoch,
                _ => -1,
            };
            topics.entry(&tp.topic).or_default().push(
                ListOffsetsPartition::default()
                    .with_partition_index(tp.partition)
                    .with_current_leader_epoch(leader_epoch)
                    .with_timestamp(timestamp),
            );
        }
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(READ_COMMITTED)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        ListOffsetsTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        let timeout = self.ctx.settings.request_timeout;
        let response = self.send(&request, timeout, "ListOffsets on").await?;
        let mut answers = HashMap::new();
        for t in response.topics {
            for p in t.partitions {
                let tp = TopicPartition::new(t.name.0.as_str(), p.partition_index);
                let answer = match ResponseError::try_from_code(p.error_code) {
                    None => Ok(p.offset),
                    Some(e) => Err(e),
                };
                answers.insert(tp, answer);
            }
        }
        Ok(answers)
    }

    /// Reserves the budget for a Fetch of `wanted`, looking end offsets up while it waits. None
    /// when the budget is closed (the consumer is gone).
    async fn reserve(
        &mut self,
        wanted: &BTreeMap<TopicPartition, Wanted>,
    ) -> Option<(OwnedSemaphorePermit, usize)> {
        let wanted_bytes = reservation(
            &self.ctx.settings,
            wanted.len(),
            self.ctx.brokers.load(std::sync::atomic::Ordering::Relaxed),
            self.ctx.budget_bytes,
        );
        let floor = reservation(&self.ctx.settings, 1, 1, self.ctx.budget_bytes);
        let amount = to_take(wanted_bytes, self.ctx.budget.available_permits(), floor);
        let acquire = Arc::clone(&self.ctx.budget).acquire_many_owned(amount as u32);
        tokio::pin!(acquire);
        loop {
            tokio::select! {
                permit = &mut acquire => return permit.ok().map(|p| (p, amount)),
                _ = tokio::time::sleep_until(self.next_refresh) => {
                    let partitions: Vec<TopicPartition> = wanted.keys().cloned().collect();
                    self.refresh_end_offsets(&partitions).await;
                }
            }
        }
    }

    /// One Fetch of `wanted` within `reserved` bytes of budget, and its records to the engine.
    async fn fetch(
        &mut self,
        wanted: BTreeMap<TopicPartition, Wanted>,
        mut permit: OwnedSemaphorePermit,
        reserved: usize,
    ) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let settings = &ctx.settings;
        // Partitions dropped while the budget was awaited are left out (and forgotten).
        let mut wanted = wanted;
        wanted.retain(|tp, _| self.cursors.get(tp).is_some_and(|c| !c.removed()));
        if wanted.is_empty() {
            return Ok(());
        }
        let version = match self
            .conn
            .as_ref()
            .map(Connection::version_for::<FetchRequest>)
        {
            Some(Ok(v)) => v,
            Some(Err(source)) => return Err(self.connection_error("fetching from", source)),
            None => 0,
        };
        // Fetch sessions came with v7 (Kafka 1.1), leader epochs in requests with v9 (Kafka 2.1).
        if version < 7 {
            self.session.reset();
        }
        let mut plan = self.session.plan(&wanted);
        if version < 7 {
            plan.epoch = -1;
        }
        if version < 9 {
            for (_, w) in &mut plan.send {
                w.leader_epoch = -1;
            }
        }
        let max_bytes = i32::try_from((reserved / 2).max(1)).unwrap_or(i32::MAX);
        // The rack (KIP-392) came with v11 (Kafka 2.4).
        let rack = settings.rack.as_deref().filter(|_| version >= 11);
        let paused = self
            .cursors
            .iter()
            .any(|(tp, c)| c.start == Start::Fetching && !wanted.contains_key(tp));
        let max_wait = if paused {
            settings.max_wait.min(PAUSED_MAX_WAIT)
        } else {
            settings.max_wait
        };
        let request = fetch_request(
            &plan,
            settings.max_partition_bytes,
            max_wait,
            max_bytes,
            rack,
        );
        let timeout = max_wait + settings.request_timeout;
        let response = self.send(&request, timeout, "fetching from").await?;
        match ResponseError::try_from_code(response.error_code) {
            None => {}
            Some(
                e @ (ResponseError::FetchSessionIdNotFound
                | ResponseError::InvalidFetchSessionEpoch),
            ) => {
                info!(broker = %self.address, session = plan.session_id, epoch = plan.epoch, error = ?e, "fetch session lost; starting a new one");
                self.session.reset();
                return Ok(());
            }
            Some(e) => {
                return Err(Error::Admin {
                    operation: "Fetch",
                    target: self.address.clone(),
                    code: e.code(),
                    error: format!("{e:?}"),
                });
            }
        }
        if plan.full && response.session_id != 0 {
            debug!(broker = %self.address, session = response.session_id, partitions = plan.send.len(), "fetch session opened");
        }
        self.session.answered(plan, response.session_id);
        self.backoff.reset();

        // Decode every partition first: the reservation is split by what each holds.
        let several = response
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.records.as_ref().is_some_and(|r| !r.is_empty()))
            .nth(1)
            .is_some();
        let mut fetched = Vec::new();
        let mut moved = Vec::new();
        let mut redirected = Vec::new();
        for topic in response.responses {
            for p in topic.partitions {
                let tp = TopicPartition::new(topic.topic.0.as_str(), p.partition_index);
                let Some(c) = self.cursors.get_mut(&tp) else {
                    continue;
                };
                if c.removed() || c.start != Start::Fetching {
                    continue;
                }
                match ResponseError::try_from_code(p.error_code) {
                    None => {}
                    // A read replica may be behind the leader, or ahead of it after an unclean
                    // election: the leader decides, as in Java.
                    Some(ResponseError::OffsetOutOfRange) if c.replica.is_some() => {
                        redirected.push((tp, None));
                        continue;
                    }
                    Some(ResponseError::OffsetOutOfRange) => {
                        c.start = Start::OutOfRange;
                        continue;
                    }
                    Some(e) => {
                        moved.push((tp, e));
                        continue;
                    }
                }
                let aborted: Vec<AbortedTransaction> = p
                    .aborted_transactions
                    .unwrap_or_default()
                    .iter()
                    .map(|a| AbortedTransaction {
                        producer_id: a.producer_id.0,
                        first_offset: a.first_offset,
                    })
                    .collect();
                let mut records = p.records.unwrap_or_default();
                // Records are slices of the buffer they were decoded from. When a response carries
                // several partitions' records, each partition gets a buffer of its own, so that a
                // slow partition keeps alive only its own bytes (what its budget share covers), not
                // the whole response.
                if several && !records.is_empty() {
                    records = Bytes::copy_from_slice(&records);
                }
                let preferred = p.preferred_read_replica.0;
                if preferred >= 0 && preferred != self.node {
                    redirected.push((tp.clone(), Some(preferred)));
                }
                let frame_bytes = records.len();
                let decoded = decode_records(records, c.offset, &aborted);
                let share = frame_bytes + decoded.records.len() * RECORD_MEMORY;
                fetched.push((tp, decoded, p.high_watermark, share, frame_bytes));
            }
        }

        // Each partition with records keeps its share of the reservation (the first ones get all
        // they need when a response overshoots, as a broker may for a batch larger than the limit);
        // the rest goes back to the budget when `permit` drops.
        let mut events = Vec::with_capacity(fetched.len());
        for (tp, decoded, high_watermark, share, frame_bytes) in fetched {
            let c = self.cursors.get_mut(&tp).expect("present above");
            let budget = (!decoded.records.is_empty()).then(|| {
                let part = permit
                    .split(share.min(permit.num_permits()))
                    .expect("within the permit");
                let kept = part.num_permits();
                let share = Arc::new(BudgetShare {
                    _permit: part,
                    wake: Arc::clone(&self.wake),
                });
                c.held.push((Arc::downgrade(&share), frame_bytes.min(kept)));
                share
            });
            c.backoff.reset();
            if let Some(next) = decoded.next_offset {
                c.offset = c.offset.max(next);
            }
            // A batch that cannot be decoded: the records before it go on as usual; then the policy
            // either moves the position past it or stops the consumer.
            let (skipped, stop) = match decoded.corrupt {
                None => (None, None),
                Some(corrupt) => match settings.corrupt {
                    CorruptBatchPolicy::Skip => {
                        error!(partition = %tp, offset = corrupt.offset, skip_to = corrupt.skip_to, reason = %corrupt.reason, "skipping a record batch that cannot be decoded");
                        c.offset = c.offset.max(corrupt.skip_to);
                        (Some(corrupt), None)
                    }
                    CorruptBatchPolicy::Stop => {
                        error!(partition = %tp, offset = corrupt.offset, reason = %corrupt.reason, "a record batch cannot be decoded; stopping (policy Stop)");
                        let error = Error::CorruptBatch {
                            partition: tp.to_string(),
                            offset: corrupt.offset,
                            reason: corrupt.reason,
                        };
                        (None, Some(error))
                    }
                },
            };
            let removed = Arc::clone(&c.removed);
            events.push((
                Arc::clone(&removed),
                FetchEvent::Records {
                    slot: c.slot,
                    epoch: c.epoch,
                    records: decoded.records,
                    position: c.offset,
                    high_watermark,
                    budget,
                    skipped,
                },
            ));
            if let Some(error) = stop {
                events.push((
                    removed,
                    FetchEvent::Fatal {
                        slot: c.slot,
                        epoch: c.epoch,
                        error,
                    },
                ));
                // Nothing past the corrupt batch is fetched.
                self.cursors.remove(&tp);
            }
        }
        drop(permit);
        for (removed, event) in events {
            // A dropped handle gets nothing more, even from a response already in.
            if removed.load(std::sync::atomic::Ordering::Acquire) {
                continue;
            }
            if !self.ctx.send(event).await {
                return Ok(());
            }
        }
        for (tp, replica) in redirected {
            match replica {
                Some(node) => {
                    debug!(partition = %tp, leader = %self.address, replica = node, "the leader names a preferred read replica");
                    self.redirect(vec![(tp, node)]);
                }
                None => self.back_to_leaders(|c| c.tp == tp),
            }
        }
        for (tp, e) in moved {
            let why = format!("fetching {tp} from {}: {e:?}", self.address);
            debug!(partition = %tp, broker = %self.address, error = ?e, "partition moves off this broker");
            self.move_off(&tp, why).await;
        }
        if self.last_polled.elapsed() >= POLLED_EVERY {
            self.last_polled = Instant::now();
            let partitions: Vec<(usize, u64)> = wanted
                .keys()
                .filter_map(|tp| self.cursors.get(tp))
                .filter(|c| !c.removed())
                .map(|c| (c.slot, c.epoch))
                .collect();
            self.ctx.send(FetchEvent::Polled { partitions }).await;
        }
        Ok(())
    }
}

/// How much of `wanted` bytes of budget a Fetch takes when `available` are free: what is free (a
/// smaller Fetch now rather than a full one once everything drained, so one slow record never
/// stops its broker's other partitions), but at least `floor`, one partition's full fetch, which it
/// waits for when less is free.
fn to_take(wanted: usize, available: usize, floor: usize) -> usize {
    wanted.min(available).max(floor.min(wanted))
}

/// The Fetch request for `plan`: read_committed, `fetch.min.bytes` 1 as in Java.
fn fetch_request(
    plan: &Plan,
    max_partition_bytes: usize,
    max_wait: Duration,
    max_bytes: i32,
    rack: Option<&str>,
) -> FetchRequest {
    let partition_max = i32::try_from(max_partition_bytes).unwrap_or(i32::MAX);
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for (tp, w) in &plan.send {
        topics.entry(&tp.topic).or_default().push(
            FetchPartition::default()
                .with_partition(tp.partition)
                .with_current_leader_epoch(w.leader_epoch)
                .with_fetch_offset(w.offset)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(partition_max),
        );
    }
    let mut forgotten: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in &plan.forget {
        forgotten.entry(&tp.topic).or_default().push(tp.partition);
    }
    let name = |t: &str| TopicName(StrBytes::from_string(t.to_owned()));
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(i32::try_from(max_wait.as_millis()).unwrap_or(i32::MAX))
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_isolation_level(READ_COMMITTED)
        .with_session_id(plan.session_id)
        .with_session_epoch(plan.epoch)
        .with_rack_id(StrBytes::from_string(rack.unwrap_or_default().to_owned()))
        .with_topics(
            topics
                .into_iter()
                .map(|(t, partitions)| {
                    FetchTopic::default()
                        .with_topic(name(t))
                        .with_partitions(partitions)
                })
                .collect(),
        )
        .with_forgotten_topics_data(
            forgotten
                .into_iter()
                .map(|(t, partitions)| {
                    ForgottenTopic::default()
                        .with_topic(name(t))
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

#[cfg(test)]
mod tests {
    use super::to_take;

    #[test]
    fn a_fetch_takes_what_is_free_but_waits_for_one_partitions_fetch() {
        // (wanted, available, floor) -> taken
        let cases = [
            (64, 64, 2, 64),
            (64, 10, 2, 10),
            (64, 1, 2, 2),
            (64, 0, 2, 2),
            (1, 0, 2, 1),
            (100, 200, 2, 100),
        ];
        for (wanted, available, floor, taken) in cases {
            assert_eq!(
                to_take(wanted, available, floor),
                taken,
                "{wanted} {available} {floor}"
            );
        }
    }
}
