//! The engine: one task that owns every owned partition's state and moves records from the fetcher
//! to the dispatcher and processed offsets to commits.
//!
//! ```text
//!  GroupMember ──GroupEvent──► engine ◄──FetchEvent── fetcher (one task per leader broker)
//!                                │  ▲
//!            push(slot, record)  │  │ processed (slot, offset)
//!                                ▼  │
//!                             Dispatcher ──lanes──► handler tasks / stream consumer
//! ```
//!
//! The engine is an actor: all partition state lives in this one task (the dispatcher is owned by
//! it), so there are no locks and the invariants below are enforced in one place.
//!
//! - Each partition's tenure has an *epoch*. Fetch events and completions carry the epoch they were
//!   issued under; anything from an older epoch is dropped. A late ack after a revocation can never
//!   move a watermark, and nothing from a previous tenure is committed.
//! - A revoked or lost partition's fetcher is stopped and its dispatcher queue stopped (prefetched
//!   records dropped, lanes in flight start nothing more) before anything else happens.
//! - Commits name the watermark of [`WatermarkTracker`](super::watermark::WatermarkTracker): never an
//!   offset above an unfinished record. One commit is in flight at a time, so commits of one partition
//!   reach the coordinator in order.
//! - A revocation waits for the partition's in-flight records (up to `revoke_timeout`), commits the
//!   watermark, and only then tells the group it may release the partition.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use kafkit_metrics::Metrics;
use kafkit_resilience::{CircuitBreaker, CircuitState};

use super::dispatcher::{Completion, DRAIN_MAX, DispatchEvent, Dispatcher, Sink};
use super::fetcher::{FetchContext, FetchEvent, Fetcher, Fetching};
use super::offset_map;
use super::record::{ConsumedRecord, RecordChunk};
use super::status::{Skipped, StatusBoard};
use super::watermark::WatermarkTracker;
use super::{ConsumerListener, ConsumerSettings, ShutdownReport};
use crate::group::{
    CommitReport, GroupEvent, GroupMember, OffsetToCommit, RevokeDone, TopicPartition,
};
use crate::task::OwnedTask;
use crate::{Error, Result};

/// One owned partition.
struct Slot {
    tp: TopicPartition,
    topic: Arc<str>,
    epoch: u64,
    /// None until the fetcher reports where it starts.
    tracker: Option<WatermarkTracker>,
    /// Dropping it stops fetching the partition.
    fetch: Option<Fetching>,
    revoking: bool,
    high_watermark: i64,
    /// The last offset committed for this tenure (or found committed when it began).
    committed: Option<i64>,
    /// The offset map committed with it.
    committed_metadata: Option<String>,
    /// Offsets already processed by a previous owner above its committed offset (from the offset map).
    skip: BTreeSet<i64>,
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
    /// Owned: dropping the engine stops every fetch.
    fetcher: Fetcher,
    slots: Vec<Option<Slot>>,
    by_partition: HashMap<TopicPartition, usize>,
    next_epoch: u64,
    dispatcher: Dispatcher,
    fetched_rx: mpsc::Receiver<FetchEvent>,
    events: mpsc::UnboundedReceiver<GroupEvent>,
    /// Owned: dropping the engine (a dropped consumer) aborts a commit in flight, so nothing keeps
    /// the group member alive behind the consumer's back.
    commit: Option<OwnedTask<Result<CommitReport>>>,
    /// The metadata sent with the commit in flight, per partition.
    commit_metadata: HashMap<TopicPartition, Option<String>>,
    revocations: Vec<Revocation>,
    shutdown_deadline: Option<Instant>,
    report: ShutdownReport,
    fatal: Option<Error>,
    /// The breaker's state changes; dispatch pauses while it is open.
    breaker: Option<watch::Receiver<CircuitState>>,
    board: Arc<StatusBoard>,
    metrics: Option<Metrics>,
    group_id: String,
    listener: Option<Arc<dyn ConsumerListener>>,
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        settings: Arc<ConsumerSettings>,
        group: Arc<GroupMember>,
        events: mpsc::UnboundedReceiver<GroupEvent>,
        sink: Sink,
        breaker: Option<watch::Receiver<CircuitState>>,
        board: Arc<StatusBoard>,
        metrics: Option<Metrics>,
    ) -> Self {
        board.set_member(Arc::clone(&group));
        let settings_listener = settings.listener.clone();
        let group_id = group.group_id().to_owned();
        let (fetched_tx, fetched_rx) = mpsc::channel(64);
        let dispatcher = Dispatcher::new(settings.mode, sink);
        let fetch_ctx = Arc::new(FetchContext::new(
            Arc::clone(&group),
            settings.fetch.clone(),
            settings.buffer_bytes,
            fetched_tx,
        ));
        let fetcher = Fetcher::new(Arc::clone(&fetch_ctx));
        Self {
            settings,
            group,
            fetch_ctx,
            fetcher,
            slots: Vec::new(),
            by_partition: HashMap::new(),
            next_epoch: 1,
            dispatcher,
            fetched_rx,
            events,
            commit: None,
            commit_metadata: HashMap::new(),
            revocations: Vec::new(),
            shutdown_deadline: None,
            report: ShutdownReport::default(),
            fatal: None,
            breaker,
            board,
            metrics,
            group_id,
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
                // The busy branches come last: `biased` polls in order, so the rarely ready branches
                // above (group events, shutdown, commit ticks, deadlines) are never starved by a
                // steady stream of completions and fetches. Each takes what else is ready (up to a
                // bound) before the next dispatch: one pass over the partitions per batch, not per
                // completion.
                event = self.dispatcher.next() => match event {
                    DispatchEvent::Completion(c) => {
                        self.on_completion(c);
                        for _ in 0..DRAIN_MAX {
                            let Some(c) = self.dispatcher.try_completion() else { break };
                            self.on_completion(c);
                        }
                    }
                    // Nobody will process records: leave.
                    DispatchEvent::StreamClosed => self.begin_shutdown(),
                    DispatchEvent::Joined => {}
                },
                Some(f) = self.fetched_rx.recv() => {
                    self.on_fetch(f);
                    for _ in 0..DRAIN_MAX {
                        let Ok(f) = self.fetched_rx.try_recv() else { break };
                        self.on_fetch(f);
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
        self.dispatcher.abort_all();
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
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(slot) = slot {
                slot.fetch = None;
                self.dispatcher.stop(i);
            }
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
                if let Some(l) = &self.listener {
                    l.revoking(&partitions);
                }
                let slots: Vec<usize> = partitions
                    .iter()
                    .filter_map(|tp| self.by_partition.get(tp).copied())
                    .collect();
                for &i in &slots {
                    if let Some(s) = self.slots[i].as_mut() {
                        s.revoking = true;
                        s.fetch = None;
                        self.dispatcher.stop(i);
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
                        self.dispatcher.close(i);
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
        let fetch =
            (self.shutdown_deadline.is_none()).then(|| self.fetcher.add(tp.clone(), index, epoch));
        self.slots[index] = Some(Slot {
            topic: Arc::from(tp.topic.as_str()),
            tp: tp.clone(),
            epoch,
            tracker: None,
            fetch,
            revoking: false,
            high_watermark: -1,
            committed: None,
            committed_metadata: None,
            skip: BTreeSet::new(),
        });
        self.dispatcher.open(index, epoch);
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
                position,
                high_watermark,
                budget,
                skipped,
            } => {
                let stopping = self.shutdown_deadline.is_some();
                let board = Arc::clone(&self.board);
                let metrics = self.metrics.clone();
                let Some(s) = self
                    .slots
                    .get_mut(slot)
                    .and_then(Option::as_mut)
                    .filter(|s| s.epoch == epoch)
                else {
                    return;
                };
                if s.revoking || stopping {
                    return;
                }
                s.high_watermark = high_watermark;
                board.fetched(&s.tp, high_watermark, position);
                if let Some(m) = &metrics
                    && !records.is_empty()
                {
                    m.record_consumed(&s.topic, records.len() as u64);
                }
                let tracker = s.tracker.as_mut().expect("Started precedes Records");
                let chunk = Arc::new(RecordChunk {
                    topic: Arc::clone(&s.topic),
                    partition: s.tp.partition,
                    records,
                    _budget: budget,
                    delivery_counts: Vec::new(),
                });
                for (i, r) in chunk.records.iter().enumerate() {
                    if !tracker.track(r.offset) {
                        continue;
                    }
                    if s.skip.remove(&r.offset) {
                        tracker.complete(r.offset);
                        continue;
                    }
                    self.dispatcher.push(slot, ConsumedRecord::of(&chunk, i));
                }
                tracker.advance_to(position);
                if let Some(corrupt) = skipped {
                    if let Some(m) = &metrics {
                        m.record_corrupt_batch(&s.topic);
                    }
                    board.skipped(Skipped {
                        tp: s.tp.clone(),
                        offset: corrupt.offset,
                        skipped_to: corrupt.skip_to,
                        reason: corrupt.reason,
                    });
                }
            }
            FetchEvent::Polled { partitions } => {
                let board = Arc::clone(&self.board);
                for (slot, epoch) in partitions {
                    if let Some(s) = self.slot_mut(slot, epoch)
                        && let Some(t) = s.tracker.as_ref()
                    {
                        board.fetched(&s.tp, s.high_watermark, t.position());
                    }
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
        let (slots, metrics) = (&mut self.slots, &self.metrics);
        self.dispatcher.apply(c, |slot, offset| {
            if let Some(s) = slots[slot].as_mut() {
                if let Some(m) = metrics {
                    m.record_acked(&s.topic);
                }
                if let Some(t) = s.tracker.as_mut() {
                    t.complete(offset);
                }
            }
        });
    }

    /// The circuit breaker in front of the handler, if one is configured.
    fn circuit_breaker(&self) -> Option<&CircuitBreaker> {
        self.dispatcher.circuit_breaker()
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
            m.records_in_flight()
                .set(self.dispatcher.in_flight() as i64);
            let budget = &self.fetch_ctx.budget;
            m.buffered_bytes()
                .set((self.settings.buffer_bytes - budget.available_permits()) as i64);
        }
    }

    /// Starts what the dispatcher may start, unless shutting down, the breaker is open or the
    /// stream is full. With the offset map on, records may run at most `max_ahead` offsets past their
    /// partition's watermark, so the map of finished offsets always fits the commit metadata: when a
    /// watermark is stuck, its partition waits instead of dropping the map.
    fn dispatch(&mut self) {
        if self.shutdown_deadline.is_some() || self.breaker_open() {
            return;
        }
        let max_ahead = self
            .settings
            .offset_map
            .then(|| offset_map::max_span(self.settings.offset_map_max_bytes));
        let slots = &self.slots;
        self.dispatcher.dispatch(|i| {
            match (
                max_ahead,
                slots[i].as_ref().and_then(|s| s.tracker.as_ref()),
            ) {
                (Some(ahead), Some(t)) => t.watermark().saturating_add(ahead),
                _ => i64::MAX,
            }
        });
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
                        .is_none_or(|_| self.dispatcher.in_flight_of(s) == 0)
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
                    self.dispatcher.close(s);
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
            // The tracker's watermark never moves back within a tenure; that no commit goes below
            // what was committed, and none for a partition not owned, is the member's to enforce,
            // in one place (`group::member::ownership::Ownership::admit`).
            let watermark = t.watermark();
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
        if !self.settings.engine_commits {
            // The exactly-once mode acks a record only once the transaction that holds its offset
            // committed: the watermark is committed already. It is recorded (for lag and the
            // shutdown report), not sent again: a plain commit arriving after a later
            // transaction's commit would move the group's offset back.
            for o in offsets {
                if let Some(&i) = self.by_partition.get(&o.partition)
                    && let Some(s) = self.slots[i].as_mut()
                {
                    s.committed = Some(o.offset);
                    s.committed_metadata = None;
                }
            }
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
        self.commit = Some(OwnedTask::spawn(
            async move { group.commit(&offsets).await },
        ));
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
