//! The engine: one task that owns every owned partition's state and moves records from the fetcher
//! to the handlers and acknowledgements to commits.
//!
//! ```text
//!  GroupMember ──GroupEvent──► engine ◄──FetchEvent── fetch task (one per partition)
//!                                │  ▲
//!                 spawn handler  │  │ Completion (ack / redeliver)
//!                                ▼  │
//!                         handler tasks / stream consumer
//! ```
//!
//! The engine is an actor: all partition state lives in this one task, so there are no locks and
//! the invariants below are enforced in one place.
//!
//! - Each partition's tenure has an *epoch*. Fetch events and completions carry the epoch they were
//!   issued under; anything from an older epoch is dropped. A late ack after a revocation can never
//!   move a watermark, and nothing from a previous tenure is committed.
//! - A revoked or lost partition's fetcher is stopped and its queued (prefetched, not started) records
//!   are dropped before anything else happens: they are never dispatched.
//! - Commits name the watermark of [`WatermarkTracker`](super::watermark::WatermarkTracker): never an
//!   offset above an unfinished record. One commit is in flight at a time, so commits of one partition
//!   reach the coordinator in order.
//! - A revocation waits for the partition's in-flight records (up to `revoke_timeout`), commits the
//!   watermark, and only then tells the group it may release the partition.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use kafkit_metrics::Metrics;
use kafkit_resilience::{CircuitBreaker, CircuitState};

use super::failure::{FailurePath, HandlerError};
use super::fetcher::{FetchContext, FetchEvent, FetchTask};
use super::offset_map;
use super::record::{AckHandle, ConsumedRecord, RecordData, StreamRecord};
use super::scheduler::{PartitionSchedule, key_hash};
use super::status::StatusBoard;
use super::watermark::WatermarkTracker;
use super::{ConsumerListener, ConsumerSettings, ShutdownReport};
use crate::group::{
    CommitReport, GroupEvent, GroupMember, OffsetToCommit, RevokeDone, TopicPartition,
};
use crate::{Error, Result};

/// The error type handlers return, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A handler, type-erased: called once per attempt.
pub(crate) type HandlerFn = Arc<
    dyn Fn(ConsumedRecord) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>
        + Send
        + Sync,
>;

/// A batch handler, type-erased: one result per record, in order.
pub(crate) type BatchFn = Arc<
    dyn Fn(
            Vec<ConsumedRecord>,
        ) -> Pin<Box<dyn Future<Output = Vec<Result<(), HandlerError>>> + Send>>
        + Send
        + Sync,
>;

/// Where dispatched records go.
pub(crate) enum Sink {
    /// Up to `max` records at a time go to one batch handler call; each record's failure is isolated
    /// and goes through the failure path alone.
    Batch {
        handler: BatchFn,
        failure: Arc<FailurePath>,
        max: usize,
    },
    /// Each record runs the handler on its own task through the failure path (retries, breaker,
    /// dead-letter topic).
    Handler(HandlerFn, Arc<FailurePath>),
    /// Each record is sent to the user's stream and finishes when acked.
    Stream(mpsc::Sender<StreamRecord>),
}

/// A record finished (or records handed back) by a handler task or a stream user.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) slot: usize,
    pub(crate) epoch: u64,
    pub(crate) key: u64,
    pub(crate) outcome: Outcome,
}

#[derive(Debug)]
pub(crate) enum Outcome {
    /// The record at this offset is processed (it may be committed) and its hand-out ends.
    Done(i64),
    /// The record at this offset is processed; the run it belongs to goes on with its next record,
    /// so the hand-out (the key, the in-flight unit) stays taken.
    Progress(i64),
    /// Records handed out and not processed (a stream record dropped without ack, or the rest of a
    /// run stopped by a revocation or shutdown), in offset order. Ends the hand-out; they are
    /// delivered again unless their partition is going away.
    Returned(Vec<ConsumedRecord>),
}

/// The most records one run may take: records of one partition (`PartitionOrdered`) or one key
/// (`KeyOrdered`) that a handler task processes one after another without a round trip through the
/// engine. It bounds how many started-but-unprocessed records a stop has to hand back.
const RUN_MAX: usize = 256;

/// The most ready messages of one kind the engine takes in a row before it dispatches again.
const DRAIN_MAX: usize = 512;

/// The most lanes (runs, or single `Unordered` records) one handler task drives concurrently.
/// Grouping saves a task spawn and a join per record; the bound keeps a dispatch spread over several
/// tasks, so the runtime's worker threads share the work.
const LANES_PER_TASK: usize = 16;

/// Records handed to a handler task as one unit: processed one after another, in offset order, while
/// the slot's tenure lasts. Each record reports [`Outcome::Progress`], the last [`Outcome::Done`]; a
/// stop hands the rest back with [`Outcome::Returned`].
struct Lane {
    slot: usize,
    epoch: u64,
    key: u64,
    records: Vec<ConsumedRecord>,
    stop: Arc<AtomicBool>,
}

/// One owned partition.
struct Slot {
    tp: TopicPartition,
    topic: Arc<str>,
    epoch: u64,
    /// None until the fetcher reports where it starts.
    tracker: Option<WatermarkTracker>,
    schedule: PartitionSchedule<ConsumedRecord>,
    fetch: Option<FetchTask>,
    revoking: bool,
    high_watermark: i64,
    /// The last offset committed for this tenure (or found committed when it began).
    committed: Option<i64>,
    /// The offset map committed with it.
    committed_metadata: Option<String>,
    /// Offsets already processed by a previous owner above its committed offset (from the offset map).
    skip: BTreeSet<i64>,
    /// Set when the tenure stops dispatching; runs in flight check it before each next record.
    stop: Arc<AtomicBool>,
}

impl Slot {
    /// Invariant: once called, no further record of this tenure starts. The fetcher stops, queued
    /// records are dropped, and runs in flight hand back the records they have not started.
    fn stop_dispatch(&mut self) {
        self.fetch = None;
        self.schedule.clear_queued();
        self.stop.store(true, Ordering::Release);
    }
}

struct Revocation {
    partitions: Vec<TopicPartition>,
    slots: Vec<usize>,
    done: RevokeDone,
    deadline: Instant,
    commit_sent: bool,
}

pub(crate) struct Engine {
    settings: Arc<ConsumerSettings>,
    group: Arc<GroupMember>,
    fetch_ctx: Arc<FetchContext>,
    slots: Vec<Option<Slot>>,
    by_partition: HashMap<TopicPartition, usize>,
    next_epoch: u64,
    rr: usize,
    in_flight: usize,
    sink: Sink,
    done_tx: mpsc::UnboundedSender<Completion>,
    done_rx: mpsc::UnboundedReceiver<Completion>,
    fetched_rx: mpsc::Receiver<FetchEvent>,
    events: mpsc::UnboundedReceiver<GroupEvent>,
    handlers: JoinSet<()>,
    commit: Option<tokio::task::JoinHandle<Result<CommitReport>>>,
    /// The metadata sent with the commit in flight, per partition.
    commit_metadata: HashMap<TopicPartition, Option<String>>,
    revocations: Vec<Revocation>,
    stream_blocked: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
    shutdown_deadline: Option<Instant>,
    report: ShutdownReport,
    fatal: Option<Error>,
    /// The breaker's state changes; dispatch pauses while it is open.
    breaker: Option<watch::Receiver<CircuitState>>,
    board: Arc<StatusBoard>,
    metrics: Option<Metrics>,
    group_id: String,
    /// Records gathered for the next batch handler call (batch sink only).
    batch: Vec<BatchItem>,
    /// Lanes gathered for the next handler task (handler sink only).
    lanes: Vec<Lane>,
    listener: Option<Arc<dyn ConsumerListener>>,
}

/// One record of a batch and where its completion goes.
struct BatchItem {
    slot: usize,
    epoch: u64,
    key: u64,
    record: ConsumedRecord,
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        settings: Arc<ConsumerSettings>,
        group: Arc<GroupMember>,
        events: mpsc::UnboundedReceiver<GroupEvent>,
        client: Arc<rskafka::client::Client>,
        sink: Sink,
        breaker: Option<watch::Receiver<CircuitState>>,
        board: Arc<StatusBoard>,
        metrics: Option<Metrics>,
    ) -> Self {
        board.set_member(Arc::clone(&group));
        let settings_listener = settings.listener.clone();
        let group_id = group.group_id().to_owned();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (fetched_tx, fetched_rx) = mpsc::channel(64);
        let fetch_ctx = Arc::new(FetchContext {
            client,
            group: Arc::clone(&group),
            settings: settings.fetch.clone(),
            budget: Arc::new(Semaphore::new(settings.buffer_bytes)),
            out: fetched_tx,
        });
        Self {
            settings,
            group,
            fetch_ctx,
            slots: Vec::new(),
            by_partition: HashMap::new(),
            next_epoch: 1,
            rr: 0,
            in_flight: 0,
            sink,
            done_tx,
            done_rx,
            fetched_rx,
            events,
            handlers: JoinSet::new(),
            commit: None,
            commit_metadata: HashMap::new(),
            revocations: Vec::new(),
            stream_blocked: None,
            shutdown_deadline: None,
            report: ShutdownReport::default(),
            fatal: None,
            breaker,
            board,
            metrics,
            group_id,
            batch: Vec::new(),
            lanes: Vec::new(),
            listener: settings_listener,
        }
    }

    /// Runs until the group member has left (after `shutdown` fired) or the shutdown deadline passed.
    pub(crate) async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<ShutdownReport> {
        let mut commit_tick = tokio::time::interval(self.settings.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        commit_tick.tick().await;
        let mut shutdown_seen = false;
        loop {
            self.dispatch();
            self.progress_revocations();
            let next_deadline = self.next_deadline();
            tokio::select! {
                biased;
                event = self.events.recv() => match event {
                    Some(event) => self.on_group_event(event),
                    None => break,
                },
                result = await_slot(&mut self.commit), if self.commit.is_some() => {
                    self.commit = None;
                    self.on_commit_result(result.unwrap_or_else(|e| Err(Error::Closed { what: if e.is_cancelled() { "commit" } else { "commit task (panicked)" } })));
                }
                ready = await_slot(&mut self.stream_blocked), if self.stream_blocked.is_some() => {
                    self.stream_blocked = None;
                    if !ready {
                        // The stream was dropped: nobody will process records; leave.
                        self.begin_shutdown();
                    }
                }
                changed = breaker_changed(&mut self.breaker), if self.breaker.is_some() => {
                    if !changed {
                        self.breaker = None;
                    }
                    let open = self.breaker_open();
                    self.board.set_paused(open);
                    if let (Some(m), Some(rx)) = (&self.metrics, &self.breaker) {
                        m.set_circuit_breaker(*rx.borrow(), u64::from(self.breaker_failures()));
                    }
                    if open {
                        warn!("circuit breaker open: dispatch paused (fetching stops when the buffer fills)");
                    }
                }
                _ = commit_tick.tick() => {
                    self.sample_lag();
                    self.commit_watermarks(None);
                }
                changed = shutdown.changed(), if !shutdown_seen => {
                    shutdown_seen = true;
                    if changed.is_ok() {
                        self.begin_shutdown();
                    }
                }
                _ = sleep_until(next_deadline) => {}
                // The busy channels come last: `biased` polls in order, so the rarely ready branches
                // above (group events, shutdown, commit ticks, deadlines) are never starved by a
                // steady stream of completions and fetches.
                // Each busy branch takes what else is ready (up to a bound) before the next dispatch:
                // one pass over the partitions per batch of completions, not per completion.
                Some(c) = self.done_rx.recv() => {
                    self.on_completion(c);
                    for _ in 0..DRAIN_MAX {
                        let Ok(c) = self.done_rx.try_recv() else { break };
                        self.on_completion(c);
                    }
                }
                Some(f) = self.fetched_rx.recv() => {
                    self.on_fetch(f);
                    for _ in 0..DRAIN_MAX {
                        let Ok(f) = self.fetched_rx.try_recv() else { break };
                        self.on_fetch(f);
                    }
                }
                Some(joined) = self.handlers.join_next(), if !self.handlers.is_empty() => {
                    let mut joined = Some(joined);
                    for _ in 0..DRAIN_MAX {
                        let Some(j) = joined.take().or_else(|| self.handlers.try_join_next()) else { break };
                        if let Err(e) = j && e.is_panic() {
                            warn!(error = %e, "a record handler panicked; its records will not be committed");
                        }
                    }
                }
            }
            if self.shutdown_deadline.is_some_and(|d| Instant::now() >= d) {
                warn!(
                    "shutdown deadline passed; abandoning in-flight records (they will be delivered again)"
                );
                self.report.timed_out = true;
                break;
            }
        }
        self.finish_report();
        self.handlers.abort_all();
        match self.fatal.take() {
            Some(e) => Err(e),
            None => Ok(std::mem::take(&mut self.report)),
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.revocations
            .iter()
            .filter(|r| !r.commit_sent)
            .map(|r| r.deadline)
            .chain(self.shutdown_deadline)
            .chain(self.breaker_reopens_at())
            .min()
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        info!(timeout = ?self.settings.shutdown_timeout, "shutting down: stop fetching, drain, commit, leave");
        self.shutdown_deadline = Some(Instant::now() + self.settings.shutdown_timeout);
        for slot in self.slots.iter_mut().flatten() {
            slot.stop_dispatch();
        }
        self.group.shutdown();
    }

    fn slot_mut(&mut self, slot: usize, epoch: u64) -> Option<&mut Slot> {
        self.slots
            .get_mut(slot)
            .and_then(Option::as_mut)
            .filter(|s| s.epoch == epoch)
    }

    fn on_group_event(&mut self, event: GroupEvent) {
        match event {
            GroupEvent::Assigned {
                partitions,
                generation,
            } => {
                debug!(generation, ?partitions, "assigned");
                if let Some(m) = &self.metrics {
                    m.record_rebalance(&self.group_id);
                }
                if let Some(l) = &self.listener {
                    l.assigned(&partitions);
                }
                for tp in partitions {
                    self.board.assigned(&tp);
                    self.assign(tp);
                }
            }
            GroupEvent::Revoked { partitions, done } => {
                let slots: Vec<usize> = partitions
                    .iter()
                    .filter_map(|tp| self.by_partition.get(tp).copied())
                    .collect();
                for &i in &slots {
                    if let Some(s) = self.slots[i].as_mut() {
                        s.revoking = true;
                        s.stop_dispatch();
                    }
                }
                let timeout = self.settings.revoke_timeout;
                let deadline = match self.shutdown_deadline {
                    Some(d) => d.min(Instant::now() + timeout),
                    None => Instant::now() + timeout,
                };
                self.revocations.push(Revocation {
                    partitions,
                    slots,
                    done,
                    deadline,
                    commit_sent: false,
                });
            }
            GroupEvent::Lost { partitions, reason } => {
                warn!(?partitions, %reason, "partitions lost: abandoning their records without commit");
                if let Some(l) = &self.listener {
                    l.lost(&partitions);
                }
                for tp in partitions {
                    self.release(&tp);
                    if let Some(i) = self.by_partition.remove(&tp) {
                        if let Some(s) = self.slots[i].as_mut() {
                            s.stop_dispatch();
                        }
                        self.slots[i] = None;
                    }
                }
            }
            GroupEvent::Failed { error } => {
                self.fatal = Some(error);
                self.begin_shutdown();
            }
        }
    }

    /// Forgets `tp` in the health board and the lag metrics.
    fn release(&self, tp: &TopicPartition) {
        self.board.released(tp);
        if let Some(m) = &self.metrics {
            m.remove_partition_lag(&self.group_id, &tp.topic, tp.partition);
        }
    }

    fn assign(&mut self, tp: TopicPartition) {
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        let index = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let fetch = (self.shutdown_deadline.is_none())
            .then(|| FetchTask::spawn(Arc::clone(&self.fetch_ctx), tp.clone(), index, epoch));
        self.slots[index] = Some(Slot {
            topic: Arc::from(tp.topic.as_str()),
            tp: tp.clone(),
            epoch,
            tracker: None,
            schedule: PartitionSchedule::new(self.settings.mode),
            fetch,
            revoking: false,
            high_watermark: -1,
            committed: None,
            committed_metadata: None,
            skip: BTreeSet::new(),
            stop: Arc::new(AtomicBool::new(false)),
        });
        self.by_partition.insert(tp, index);
    }

    fn on_fetch(&mut self, event: FetchEvent) {
        match event {
            FetchEvent::Started {
                slot,
                epoch,
                offset,
                from_commit,
                committed_metadata,
            } => {
                let offset_map = self.settings.offset_map;
                if let Some(s) = self.slot_mut(slot, epoch) {
                    s.tracker = Some(WatermarkTracker::new(offset));
                    // A start from the reset policy is committed at the first commit interval, so
                    // the group's position is pinned even if no record arrives (a later reset to
                    // `latest` would skip what was produced meanwhile).
                    s.committed = from_commit.then_some(offset);
                    s.committed_metadata = committed_metadata.clone().filter(|_| from_commit);
                    if offset_map && let Some(meta) = committed_metadata {
                        match offset_map::decode(offset, &meta) {
                            Ok(Some(done)) => {
                                info!(partition = %s.tp, skipped = done.len(), "skipping records the previous owner finished");
                                s.skip = done.into_iter().collect();
                            }
                            Ok(None) => {}
                            Err(e) => {
                                warn!(partition = %s.tp, error = %e, "ignoring an unreadable offset map")
                            }
                        }
                    }
                }
            }
            FetchEvent::Records {
                slot,
                epoch,
                records,
                high_watermark,
                budget,
            } => {
                let stopping = self.shutdown_deadline.is_some();
                let board = Arc::clone(&self.board);
                let metrics = self.metrics.clone();
                let Some(s) = self.slot_mut(slot, epoch) else {
                    return;
                };
                if s.revoking || stopping {
                    return;
                }
                s.high_watermark = high_watermark;
                let position = records.last().map_or_else(
                    || s.tracker.as_ref().map_or(-1, WatermarkTracker::position),
                    |r| r.offset + 1,
                );
                board.fetched(&s.tp, high_watermark, position);
                if let Some(m) = &metrics
                    && !records.is_empty()
                {
                    m.record_consumed(&s.topic, records.len() as u64);
                }
                let tracker = s.tracker.as_mut().expect("Started precedes Records");
                let mut budget = Some(budget);
                let last = records.len().saturating_sub(1);
                for (i, r) in records.into_iter().enumerate() {
                    if !tracker.track(r.offset) {
                        continue;
                    }
                    if s.skip.remove(&r.offset) {
                        tracker.complete(r.offset);
                        continue;
                    }
                    let size = r.record.approximate_size() + 64;
                    let share = if i == last {
                        budget.take()
                    } else {
                        budget.as_mut().and_then(|b| {
                            let n = size.min(b.num_permits().saturating_sub(1));
                            if n == 0 { None } else { b.split(n) }
                        })
                    };
                    let key = key_hash(r.record.key.as_deref());
                    let record = ConsumedRecord::new(RecordData {
                        topic: Arc::clone(&s.topic),
                        partition: s.tp.partition,
                        offset: r.offset,
                        key: r.record.key,
                        value: r.record.value,
                        headers: r.record.headers,
                        timestamp: r.record.timestamp,
                        _budget: share,
                    });
                    s.schedule.push(key, record);
                }
            }
            FetchEvent::EndOffset {
                slot,
                epoch,
                high_watermark,
            } => {
                if let Some(s) = self.slot_mut(slot, epoch) {
                    s.high_watermark = s.high_watermark.max(high_watermark);
                }
            }
            FetchEvent::Failed { slot, epoch, error } => {
                if let Some(s) = self.slot_mut(slot, epoch) {
                    debug!(partition = %s.tp, %error, "fetch failed; the fetcher retries");
                }
            }
            FetchEvent::Fatal { slot, epoch, error } => {
                if self.slot_mut(slot, epoch).is_some() {
                    warn!(%error, "a partition cannot be consumed; stopping");
                    self.fatal = Some(error);
                    self.begin_shutdown();
                }
            }
        }
    }

    fn on_completion(&mut self, c: Completion) {
        if !matches!(c.outcome, Outcome::Progress(_)) {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        let stopping = self.shutdown_deadline.is_some();
        let metrics = self.metrics.clone();
        let Some(s) = self.slot_mut(c.slot, c.epoch) else {
            debug!("completion from a previous tenure dropped");
            return;
        };
        match c.outcome {
            Outcome::Done(offset) | Outcome::Progress(offset) => {
                if let Some(m) = &metrics {
                    m.record_acked(&s.topic);
                }
                if matches!(c.outcome, Outcome::Done(_)) {
                    s.schedule.finish(c.key);
                }
                if let Some(t) = s.tracker.as_mut() {
                    t.complete(offset);
                }
            }
            Outcome::Returned(records) => {
                if s.revoking || stopping {
                    s.schedule.finish(c.key);
                } else {
                    s.schedule.finish_run(c.key, records.into_iter());
                }
            }
        }
    }

    /// The circuit breaker in front of the handler, if one is configured.
    fn circuit_breaker(&self) -> Option<&CircuitBreaker> {
        match &self.sink {
            Sink::Handler(_, f) | Sink::Batch { failure: f, .. } => f.breaker.as_ref(),
            Sink::Stream(_) => None,
        }
    }

    /// The breaker's consecutive failures, for the metrics.
    fn breaker_failures(&self) -> u32 {
        self.circuit_breaker()
            .map_or(0, CircuitBreaker::consecutive_failures)
    }

    /// While the breaker is open, when its reset timeout lets a probe through. Asking expires an
    /// elapsed `Open` (the watch then fires and dispatch resumes), so the consumer does not depend on
    /// a record in flight to notice: an open breaker with nothing in flight would otherwise pause
    /// dispatch for good.
    fn breaker_reopens_at(&self) -> Option<Instant> {
        if !self.breaker_open() {
            return None;
        }
        let wait = self.circuit_breaker()?.half_open_in()?;
        Some(Instant::now() + wait)
    }

    fn breaker_open(&self) -> bool {
        self.breaker
            .as_ref()
            .is_some_and(|b| *b.borrow() == CircuitState::Open)
    }

    /// Total lag (high watermark minus the committable watermark) over owned partitions, for the
    /// health report's trend and the metrics.
    fn sample_lag(&self) {
        let mut total = 0u64;
        for s in self.slots.iter().flatten() {
            let Some(t) = s.tracker.as_ref() else {
                continue;
            };
            let committed = s.committed.unwrap_or(t.watermark());
            let lag = (s.high_watermark - committed).max(0) as u64;
            total += lag;
            if let Some(m) = &self.metrics
                && s.high_watermark >= 0
            {
                m.record_partition_lag(
                    &self.group_id,
                    &s.tp.topic,
                    s.tp.partition,
                    s.high_watermark,
                    committed,
                );
            }
        }
        self.board.sample_lag(total);
        if let Some(m) = &self.metrics {
            m.records_in_flight().set(self.in_flight as i64);
            let budget = &self.fetch_ctx.budget;
            m.buffered_bytes()
                .set((self.settings.buffer_bytes - budget.available_permits()) as i64);
        }
    }

    /// Starts as many records as the bounds allow, round-robin across partitions. With a handler,
    /// a start takes a run: the records of the same partition (`PartitionOrdered`) or key
    /// (`KeyOrdered`) that would start right after it, processed in sequence by one task; a run counts
    /// once against `max_in_flight`, since its records never run at the same time.
    fn dispatch(&mut self) {
        if self.shutdown_deadline.is_some() || self.stream_blocked.is_some() || self.breaker_open()
        {
            return;
        }
        let limit = self.settings.mode.max_in_flight().unwrap_or(usize::MAX);
        let max_ahead = self
            .settings
            .offset_map
            .then(|| offset_map::max_span(self.settings.offset_map_max_bytes));
        let n = self.slots.len();
        let mut progressed = true;
        while progressed && self.in_flight < limit {
            progressed = false;
            for i in 0..n {
                if self.in_flight >= limit {
                    break;
                }
                let idx = (self.rr + i) % n;
                let Some(slot) = self.slots[idx].as_mut() else {
                    continue;
                };
                if slot.revoking {
                    continue;
                }
                // With the offset map on, records may run at most `max_ahead` offsets past the
                // watermark, so the map of finished offsets always fits the commit metadata: when the
                // watermark is stuck, the partition waits instead of dropping the map.
                let limit = match (max_ahead, slot.tracker.as_ref()) {
                    (Some(ahead), Some(t)) => t.watermark().saturating_add(ahead),
                    _ => i64::MAX,
                };
                let Some((key, record)) = slot.schedule.next_below(limit, ConsumedRecord::offset)
                else {
                    continue;
                };
                let mut records = vec![record];
                if matches!(self.sink, Sink::Handler(..)) {
                    slot.schedule.extend_run(
                        key,
                        limit,
                        ConsumedRecord::offset,
                        RUN_MAX,
                        &mut records,
                    );
                }
                let lane = Lane {
                    slot: idx,
                    epoch: slot.epoch,
                    key,
                    records,
                    stop: Arc::clone(&slot.stop),
                };
                if !self.start(lane) {
                    return;
                }
                progressed = true;
            }
            self.rr = self.rr.wrapping_add(1);
        }
        self.flush_batch();
        self.flush_lanes();
    }

    /// Spawns one handler task for the lanes gathered by [`start`](Self::start).
    fn flush_lanes(&mut self) {
        let Sink::Handler(handler, failure) = &self.sink else {
            return;
        };
        if self.lanes.is_empty() {
            return;
        }
        let lanes = std::mem::take(&mut self.lanes);
        let handler = Arc::clone(handler);
        let failure = Arc::clone(failure);
        let done = self.done_tx.clone();
        self.handlers.spawn(async move {
            let run = |lane| run_lane(lane, &handler, &failure, &done);
            if lanes.len() == 1 {
                for lane in lanes {
                    run(lane).await;
                }
            } else {
                futures::future::join_all(lanes.into_iter().map(run)).await;
            }
        });
    }

    /// Hands the gathered records to one batch handler call. Successes complete together; each
    /// failure then goes through the failure path on its own (retried as a batch of one), so one bad
    /// record never fails the others.
    fn flush_batch(&mut self) {
        let Sink::Batch {
            handler, failure, ..
        } = &self.sink
        else {
            return;
        };
        if self.batch.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.batch);
        let handler = Arc::clone(handler);
        let failure = Arc::clone(failure);
        let done = self.done_tx.clone();
        self.handlers.spawn(async move {
            let complete = |item: &BatchItem| {
                let _ = done.send(Completion {
                    slot: item.slot,
                    epoch: item.epoch,
                    key: item.key,
                    outcome: Outcome::Done(item.record.offset()),
                });
            };
            let permit = failure.admit().await;
            let records: Vec<ConsumedRecord> = items.iter().map(|i| i.record.clone()).collect();
            let count = records.len();
            let mut results = handler(records).await;
            // A handler that returns the wrong number of results fails the records it left out.
            results.resize_with(count, || {
                Err(HandlerError {
                    type_name: "kafkit::consumer::MissingBatchResult",
                    source: format!("the batch handler returned fewer results than the {count} records it was given").into(),
                })
            });
            let mut failed = Vec::new();
            for (item, result) in items.into_iter().zip(results) {
                match result {
                    Ok(()) => complete(&item),
                    Err(e) => failed.push((item, e)),
                }
            }
            if let Some(p) = permit {
                if failed.iter().any(|(_, e)| failure.retry.is_retriable(&*e.source)) {
                    p.failure();
                } else {
                    p.success();
                }
            }
            let single: HandlerFn = Arc::new(move |record| {
                let call = handler(vec![record]);
                Box::pin(async move {
                    call.await.into_iter().next().unwrap_or_else(|| {
                        Err(HandlerError {
                            type_name: "kafkit::consumer::MissingBatchResult",
                            source: "the batch handler returned no result for a batch of one".into(),
                        })
                    })
                })
            });
            let retries = failed.into_iter().map(|(item, error)| {
                let failure = &failure;
                let single = &single;
                let complete = &complete;
                async move {
                    failure.process_from(single, &item.record, Some(error)).await;
                    complete(&item);
                }
            });
            futures::future::join_all(retries).await;
        });
    }

    /// Hands a lane to the sink (the batch and stream sinks get lanes of one record). Returns false
    /// when the stream is full (the record is put back).
    fn start(&mut self, mut lane: Lane) -> bool {
        match &self.sink {
            Sink::Handler(..) => {
                self.lanes.push(lane);
                self.in_flight += 1;
                if self.lanes.len() >= LANES_PER_TASK {
                    self.flush_lanes();
                }
                true
            }
            Sink::Batch { max, .. } => {
                let max = *max;
                let record = lane.records.pop().expect("a lane has a record");
                self.batch.push(BatchItem {
                    slot: lane.slot,
                    epoch: lane.epoch,
                    key: lane.key,
                    record,
                });
                self.in_flight += 1;
                if self.batch.len() >= max {
                    self.flush_batch();
                }
                true
            }
            Sink::Stream(tx) => {
                let record = lane.records.pop().expect("a lane has a record");
                match tx.clone().try_reserve_owned() {
                    Ok(permit) => {
                        permit.send(StreamRecord {
                            record,
                            ack: Some(AckHandle {
                                slot: lane.slot,
                                epoch: lane.epoch,
                                key: lane.key,
                                done: self.done_tx.clone(),
                            }),
                        });
                        self.in_flight += 1;
                        true
                    }
                    Err(err) => {
                        let closed = matches!(err, mpsc::error::TrySendError::Closed(_));
                        let s = self.slots[lane.slot].as_mut().expect("slot exists");
                        // `next` counted it in flight; put it back.
                        s.schedule.push_front(lane.key, record);
                        let tx = tx.clone();
                        self.stream_blocked =
                            Some(Box::pin(
                                async move { !closed && tx.reserve().await.is_ok() },
                            ));
                        false
                    }
                }
            }
        }
    }

    /// Revocations whose partitions have drained (or whose deadline passed) commit, then release.
    fn progress_revocations(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.revocations.len() {
            let r = &self.revocations[i];
            if !r.commit_sent {
                let drained = r.slots.iter().all(|&s| {
                    self.slots[s]
                        .as_ref()
                        .is_none_or(|s| s.schedule.in_flight() == 0)
                });
                if (drained || now >= r.deadline) && self.commit.is_none() {
                    if !drained {
                        warn!(
                            "revocation deadline passed with records in flight; committing what is finished"
                        );
                    }
                    let slots = r.slots.clone();
                    self.revocations[i].commit_sent = true;
                    self.commit_watermarks(Some(&slots));
                }
                i += 1;
                continue;
            }
            if self.commit.is_none() {
                // Its commit is done: release the partitions.
                let r = self.revocations.remove(i);
                for s in r.slots {
                    if let Some(slot) = self.slots[s].take() {
                        self.report
                            .record(&slot.tp, slot.committed, slot.tracker.as_ref());
                        self.by_partition.remove(&slot.tp);
                        self.release(&slot.tp);
                    }
                }
                if let Some(l) = &self.listener {
                    l.revoked(&r.partitions);
                }
                r.done.done();
                continue;
            }
            i += 1;
        }
    }

    /// Commits the watermark of `only` (or every partition) where it moved past the last commit.
    fn commit_watermarks(&mut self, only: Option<&[usize]>) {
        if self.commit.is_some() {
            return;
        }
        let offset_map = self.settings.offset_map;
        let indices: Vec<usize> = match only {
            Some(s) => s.to_vec(),
            None => (0..self.slots.len()).collect(),
        };
        let mut offsets = Vec::new();
        for i in indices {
            let Some(s) = self.slots[i].as_ref() else {
                continue;
            };
            let Some(t) = s.tracker.as_ref() else {
                continue;
            };
            let watermark = t.watermark();
            if s.committed.is_some_and(|c| watermark < c) {
                continue;
            }
            let metadata = if offset_map {
                // Only offsets within the span the map may cover: gaps (offsets with no record) can lie
                // further ahead, and leaving them out only means re-reading nothing.
                let end = watermark
                    .saturating_add(offset_map::max_span(self.settings.offset_map_max_bytes));
                let done: Vec<i64> = t
                    .done_above()
                    .into_iter()
                    .take_while(|&o| o < end)
                    .collect();
                match offset_map::encode(watermark, &done, self.settings.offset_map_max_bytes) {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(partition = %s.tp, error = %e, "offset map does not fit; committing the watermark alone");
                        None
                    }
                }
            } else {
                None
            };
            // Nothing new: the same offset with the same map is already committed. (The map can grow
            // while the watermark stays put, behind one slow record: then the commit is sent again.)
            if s.committed == Some(watermark) && s.committed_metadata == metadata {
                continue;
            }
            offsets.push(OffsetToCommit {
                partition: s.tp.clone(),
                offset: watermark,
                metadata,
            });
        }
        if offsets.is_empty() {
            return;
        }
        self.commit_metadata = offsets
            .iter()
            .map(|o| (o.partition.clone(), o.metadata.clone()))
            .collect();
        if let Some(l) = &self.listener {
            l.committing(&offsets);
        }
        let group = Arc::clone(&self.group);
        self.commit = Some(tokio::spawn(async move { group.commit(&offsets).await }));
    }

    fn on_commit_result(&mut self, result: Result<CommitReport>) {
        if let Some(l) = &self.listener {
            l.committed(&result);
        }
        match result {
            Ok(report) => {
                if let Some(m) = &self.metrics {
                    for (tp, _) in &report.committed {
                        m.record_commit(&tp.topic);
                    }
                    for (tp, _) in &report.failed {
                        m.record_commit_failed(&tp.topic);
                    }
                }
                for (tp, offset) in &report.committed {
                    if let Some(&i) = self.by_partition.get(tp)
                        && let Some(s) = self.slots[i].as_mut()
                        && s.committed.is_none_or(|c| c <= *offset)
                    {
                        s.committed = Some(*offset);
                        s.committed_metadata = self.commit_metadata.remove(tp).flatten();
                    }
                }
                if !report.failed.is_empty() {
                    warn!(failed = ?report.failed, "some offsets were not committed; they will be retried");
                }
            }
            Err(e) => warn!(error = %e, "commit failed; the next commit retries it"),
        }
    }

    fn finish_report(&mut self) {
        for slot in self.slots.iter().flatten() {
            self.report
                .record(&slot.tp, slot.committed, slot.tracker.as_ref());
        }
    }
}

/// Waits for the breaker's next state change; false when the breaker is gone.
async fn breaker_changed(rx: &mut Option<watch::Receiver<CircuitState>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Processes a lane's records in order through the failure path, reporting each; stops before the
/// next record once the slot's tenure stopped dispatching, handing the rest back.
async fn run_lane(
    lane: Lane,
    handler: &HandlerFn,
    failure: &FailurePath,
    done: &mpsc::UnboundedSender<Completion>,
) {
    let Lane {
        slot,
        epoch,
        key,
        records,
        stop,
    } = lane;
    let report = |outcome| {
        let _ = done.send(Completion {
            slot,
            epoch,
            key,
            outcome,
        });
    };
    let mut records = records.into_iter();
    while let Some(record) = records.next() {
        failure.process(handler, &record).await;
        if records.len() == 0 {
            report(Outcome::Done(record.offset()));
            return;
        }
        report(Outcome::Progress(record.offset()));
        if stop.load(Ordering::Acquire) {
            report(Outcome::Returned(records.collect()));
            return;
        }
    }
}

/// Awaits the future in `slot`; only polled when the branch's guard saw it present.
async fn await_slot<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    slot.as_mut().expect("guarded by is_some").await
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl ShutdownReport {
    fn record(
        &mut self,
        tp: &TopicPartition,
        committed: Option<i64>,
        tracker: Option<&WatermarkTracker>,
    ) {
        let Some(t) = tracker else { return };
        if committed.is_some_and(|c| c >= t.position()) {
            return;
        }
        if t.pending() > 0 || committed.is_none_or(|c| c < t.watermark()) {
            self.uncommitted.push(super::Uncommitted {
                partition: tp.clone(),
                committed,
                watermark: t.watermark(),
                unfinished: t.pending(),
            });
        }
    }
}
