//! The dispatcher: each owned partition's queue of fetched records, the dispatch modes' rules
//! ([`PartitionSchedule`]), and the hand-off to the sink in *lanes*; completions come back on one
//! channel and are applied here (queues, keys, the in-flight count) before the engine sees the
//! processed offset (watermarks, commits).
//!
//! ```text
//!  engine ──push(slot, key, record)──► Dispatcher ──lanes──► handler tasks / stream / batch calls
//!    ▲                                     │  ▲                / the transform's runs
//!    └──── processed (slot, offset) ◄──────┘  └── Completion (Processed / Done / Returned)
//! ```
//!
//! Invariants enforced here:
//! - A partition's records start in the order its mode allows: one hand-out per partition
//!   (`PartitionOrdered`) or per key (`KeyOrdered`) at a time, a run being one hand-out whose records
//!   are processed one after another in offset order.
//! - Records handed back unprocessed (the rest of a run, a dropped stream record or run) go back to
//!   the front of their queue, unless their tenure stopped: the partition's (key's) next hand-out
//!   starts with them. With `PartitionOrdered`, a hand-out therefore always starts at the
//!   partition's first record not yet processed, which the exactly-once transform's commits rely
//!   on (`Sink::Runs`).
//! - Once a queue is stopped ([`Dispatcher::stop`]) no record of its tenure starts: the queue is
//!   emptied, and each lane in flight checks the tenure's stop flag before each of its records (the
//!   first included) and hands the rest back, which is then dropped.
//! - Completions carry the tenure's epoch; one from an older tenure changes nothing but the in-flight
//!   count.
//! - At most `max_in_flight` hand-outs (records, or runs) are out at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use futures::StreamExt;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::warn;

use super::failure::{FailurePath, HandlerError, catching};
use super::record::{AckHandle, ConsumedRecord, RecordRun, StreamAck, StreamItem, StreamRecord};
use super::scheduler::{DispatchMode, PartitionSchedule, key_hash};
use crate::Result;

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
    /// Up to `max` records at a time go to one batch handler call, as runs (see [`BatchRun`]); a
    /// failed record goes through the failure path alone.
    Batch {
        handler: BatchFn,
        failure: Arc<FailurePath>,
        max: usize,
    },
    /// Each record runs the handler on its own task through the failure path (retries, breaker,
    /// dead-letter topic).
    Handler(HandlerFn, Arc<FailurePath>),
    /// Records are sent to the user's stream, a dispatch's records in one message, and each
    /// finishes when acked. Unbounded: what is out (in the channel or with the user) is in flight,
    /// and the in-flight bound (`max_in_flight`, or one record per partition) bounds it.
    Stream(mpsc::UnboundedSender<Vec<StreamItem>>),
    /// Runs of up to `max` records (see [`RecordRun`]) are sent to the exactly-once transform
    /// (`consumer::transform`), a dispatch's runs in one message; each run is one hand-out, taken
    /// as a handler lane's run is. The transform dispatches `PartitionOrdered`, where a run is its
    /// partition's next records and the partition's only hand-out: a transaction holding a run
    /// may commit the offset after its last record.
    Runs {
        tx: mpsc::UnboundedSender<Vec<RecordRun>>,
        max: usize,
    },
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
    /// Records of a lane are processed, at these offsets (in offset order). With `ends`, the lane
    /// is finished and its hand-out ends; otherwise the run goes on, so the hand-out (the key, the
    /// in-flight unit) stays taken.
    Processed {
        /// The processed offsets.
        offsets: Vec<i64>,
        /// Whether the lane's hand-out ends with them.
        ends: bool,
    },
    /// Records handed out and not processed (a stream record dropped without ack, or the rest of a
    /// run stopped by a revocation or shutdown), in offset order. Ends the hand-out; they are
    /// delivered again unless their partition is going away.
    Returned(Vec<ConsumedRecord>),
    /// Records of an `Unordered` lane, or stream records acked together
    /// ([`StreamRecord::ack_all`]), are processed, at these offsets; each was a hand-out of its own.
    ProcessedEach(Vec<i64>),
    /// Records of an `Unordered` lane that a stop kept from starting, in offset order; each was a
    /// hand-out of its own.
    ReturnedEach(Vec<ConsumedRecord>),
}

impl Outcome {
    /// How many hand-outs this completion ends.
    fn hand_outs_ended(&self) -> usize {
        match self {
            Outcome::Done(_) | Outcome::Returned(_) => 1,
            Outcome::Processed { ends, .. } => usize::from(*ends),
            Outcome::ProcessedEach(offsets) => offsets.len(),
            Outcome::ReturnedEach(records) => records.len(),
        }
    }
}

/// The most records one run may take: records of one partition (`PartitionOrdered`) or one key
/// (`KeyOrdered`) that a handler task processes one after another without a round trip through the
/// engine. It bounds how many started-but-unprocessed records a stop has to hand back.
const RUN_MAX: usize = 256;

/// The room an `Unordered` handler dispatch waits for while records are in flight: a quarter of
/// `max_in_flight`, at most a run. Concurrency stays between three quarters of the bound and the
/// bound, and each dispatch starts lanes of useful length.
fn unordered_low_water(max_in_flight: usize) -> usize {
    (max_in_flight / 4).clamp(1, RUN_MAX)
}

/// The most processed records a lane holds before reporting them, when its handler never waits.
const REPORT_MAX: usize = 64;

/// The most ready completions taken in a row before the next dispatch.
pub(crate) const DRAIN_MAX: usize = 512;

/// The most lanes (runs, or single `Unordered` records) one handler task drives concurrently.
/// Grouping saves a task spawn and a join per record; the bound keeps a dispatch spread over several
/// tasks, so the runtime's worker threads share the work.
const LANES_PER_TASK: usize = 16;

/// Records handed to a handler task as one unit. A run (`PartitionOrdered`, `KeyOrdered`: `each` is
/// false) is processed one after another, in offset order, while the slot's tenure lasts; an
/// `Unordered` lane (`each`: every record is a hand-out of its own) runs its records one after
/// another while each finishes without waiting, and starts all the rest at once as soon as one waits,
/// so a slow record never holds the others back. Processed records are reported together ([`Outcome::Processed`]) when
/// the lane is about to wait (its handler is pending), every [`REPORT_MAX`] records, and at its end;
/// a stop hands the rest back with [`Outcome::Returned`].
struct Lane {
    slot: usize,
    epoch: u64,
    key: u64,
    records: Vec<ConsumedRecord>,
    stop: Arc<AtomicBool>,
    each: bool,
}

/// Records gathered for one batch handler call: the runs' records, run after run.
#[derive(Default)]
struct Batch {
    records: Vec<ConsumedRecord>,
    runs: Vec<BatchRun>,
}

/// A hand-out in a batch: `len` records of the batch, from where the previous run ends. In
/// `PartitionOrdered` and `KeyOrdered` mode a run is a partition's or a key's records in offset
/// order (`ordered`), as a handler lane's run; when one fails, the ones before it are processed, it
/// goes through the failure path alone, and the ones after it are handed back and delivered again
/// after it (the handler saw them, but their effects would otherwise precede the failed record's).
/// In `Unordered` mode each record is a run of its own.
struct BatchRun {
    slot: usize,
    epoch: u64,
    key: u64,
    len: usize,
    ordered: bool,
}

/// One partition's tenure, as the dispatcher sees it.
struct Queue {
    epoch: u64,
    schedule: PartitionSchedule<ConsumedRecord>,
    /// Set by [`Dispatcher::stop`]; lanes in flight check it before each next record.
    stop: Arc<AtomicBool>,
}

/// What [`Dispatcher::next`] waited for.
pub(crate) enum DispatchEvent {
    /// A handler task or stream user reported.
    Completion(Completion),
    /// The stream (or the transform's receiver of runs) was dropped: nobody will process records.
    /// Reported once.
    StreamClosed,
    /// Handler tasks ended. A handler's panic is caught around its attempt and never ends one (see
    /// `failure::catching`); a task that panics anyway (outside the handler) is logged.
    Joined,
}

/// Per-partition queues and the sink; see the module docs.
pub(crate) struct Dispatcher {
    mode: DispatchMode,
    sink: Sink,
    /// Indexed by the engine's slot.
    queues: Vec<Option<Queue>>,
    rr: usize,
    in_flight: usize,
    done_tx: mpsc::UnboundedSender<Completion>,
    done_rx: mpsc::UnboundedReceiver<Completion>,
    handlers: JoinSet<()>,
    /// Records gathered for the next batch handler call (batch sink only).
    batch: Batch,
    /// Lanes gathered for the next handler task (handler sink only).
    lanes: Vec<Lane>,
    /// Records gathered for the stream (stream sink only), sent together at the end of a dispatch.
    stream_batch: Vec<StreamItem>,
    /// Runs gathered for the transform (runs sink only), sent together at the end of a dispatch.
    runs: Vec<RecordRun>,
    /// Whether [`DispatchEvent::StreamClosed`] was reported.
    stream_closed: bool,
}

impl Dispatcher {
    pub(crate) fn new(mode: DispatchMode, sink: Sink) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            mode,
            sink,
            queues: Vec::new(),
            rr: 0,
            in_flight: 0,
            done_tx,
            done_rx,
            handlers: JoinSet::new(),
            batch: Batch::default(),
            lanes: Vec::new(),
            stream_batch: Vec::new(),
            runs: Vec::new(),
            stream_closed: false,
        }
    }

    /// A new tenure of `slot` (replacing whatever was there).
    pub(crate) fn open(&mut self, slot: usize, epoch: u64) {
        if self.queues.len() <= slot {
            self.queues.resize_with(slot + 1, || None);
        }
        if let Some(old) = self.queues[slot].as_mut() {
            old.stop.store(true, Ordering::Release);
        }
        self.queues[slot] = Some(Queue {
            epoch,
            schedule: PartitionSchedule::new(self.mode),
            stop: Arc::new(AtomicBool::new(false)),
        });
    }

    /// No further record of `slot`'s tenure starts (see the module invariants). Its records in
    /// flight still report; [`in_flight_of`](Self::in_flight_of) tells when they have.
    pub(crate) fn stop(&mut self, slot: usize) {
        if let Some(q) = self.queues.get_mut(slot).and_then(Option::as_mut) {
            q.schedule.clear_queued();
            q.stop.store(true, Ordering::Release);
        }
    }

    /// Stops `slot` and forgets it: later completions of its tenure are dropped.
    pub(crate) fn close(&mut self, slot: usize) {
        self.stop(slot);
        if let Some(q) = self.queues.get_mut(slot) {
            *q = None;
        }
    }

    /// Queues a fetched record of `slot` (records arrive in offset order). Only `KeyOrdered` routes
    /// by key, so only it pays for hashing the key.
    pub(crate) fn push(&mut self, slot: usize, record: ConsumedRecord) {
        if let Some(q) = self.queues.get_mut(slot).and_then(Option::as_mut)
            && !q.stop.load(Ordering::Relaxed)
        {
            let key = match self.mode {
                DispatchMode::KeyOrdered { .. } => key_hash(record.key()),
                DispatchMode::PartitionOrdered | DispatchMode::Unordered { .. } => 0,
            };
            q.schedule.push(key, record);
        }
    }

    /// Hand-outs in flight across every partition.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Hand-outs of `slot`'s tenure in flight (0 for a slot without one).
    pub(crate) fn in_flight_of(&self, slot: usize) -> usize {
        self.queues
            .get(slot)
            .and_then(Option::as_ref)
            .map_or(0, |q| q.schedule.in_flight())
    }

    /// Starts as many records as the bounds allow, round-robin across partitions. `limit_of(slot)`
    /// is the offset below which `slot`'s records may start (the caller bounds how far processing
    /// runs ahead of a watermark). With a handler, a start takes a run: the records of the same
    /// partition (`PartitionOrdered`) or key (`KeyOrdered`) that would start right after it,
    /// processed in sequence by one task; a run counts once against `max_in_flight`, since its
    /// records never run at the same time. The transform's runs sink takes runs the same way.
    pub(crate) fn dispatch(&mut self, limit_of: impl Fn(usize) -> i64) {
        if self.channel_closed() {
            return;
        }
        let limit = self.mode.max_in_flight().unwrap_or(usize::MAX);
        let each = matches!(self.mode, DispatchMode::Unordered { .. })
            && matches!(self.sink, Sink::Handler(..));
        let run_max = self.run_max();
        if each && self.in_flight > 0 && limit - self.in_flight < unordered_low_water(limit) {
            // Wait for room to gather: room handed out as it trickles back (a few records per
            // completion) would start lanes of a record or two, each a task's share of overhead
            // and a completion of its own.
            return;
        }
        let n = self.queues.len();
        let mut progressed = true;
        while progressed && self.in_flight < limit {
            progressed = false;
            for i in 0..n {
                if self.in_flight >= limit {
                    break;
                }
                let idx = (self.rr + i) % n;
                let Some(q) = self.queues[idx].as_mut() else {
                    continue;
                };
                let below = limit_of(idx);
                let Some((key, record)) = q.schedule.next_below(below, ConsumedRecord::offset)
                else {
                    continue;
                };
                let mut records;
                if each {
                    // Each record is a hand-out of its own. The partition takes what room there is,
                    // up to a run; the next dispatch starts at the next partition, so partitions
                    // take turns.
                    let room = (limit - self.in_flight).clamp(1, RUN_MAX);
                    records = Vec::with_capacity(room.min(1 + q.schedule.queued()));
                    records.push(record);
                    while records.len() < room {
                        let Some((_, r)) = q.schedule.next_below(below, ConsumedRecord::offset)
                        else {
                            break;
                        };
                        records.push(r);
                    }
                } else if let Some(max) = run_max {
                    records = Vec::with_capacity(1 + q.schedule.run_len_hint(key).min(max - 1));
                    records.push(record);
                    q.schedule
                        .extend_run(key, below, ConsumedRecord::offset, max, &mut records);
                    if let Sink::Runs { .. } | Sink::Stream(_) = &self.sink {
                        let ack = AckHandle {
                            slot: idx,
                            epoch: q.epoch,
                            key,
                            done: self.done_tx.clone(),
                        };
                        self.in_flight += 1;
                        let run = RecordRun::new(records, ack, Arc::clone(&q.stop));
                        if let Sink::Runs { .. } = &self.sink {
                            self.runs.push(run);
                        } else {
                            self.stream_batch.push(StreamItem::Run(run));
                        }
                        progressed = true;
                        continue;
                    }
                } else if let Sink::Batch { max, .. } = &self.sink
                    && !matches!(self.mode, DispatchMode::Unordered { .. })
                {
                    // A run, as for a handler, up to what the batch has room for.
                    let room = max.saturating_sub(self.batch.records.len()).max(1);
                    let start = self.batch.records.len();
                    self.batch.records.push(record);
                    q.schedule.extend_run(
                        key,
                        below,
                        ConsumedRecord::offset,
                        start + room,
                        &mut self.batch.records,
                    );
                    let run = BatchRun {
                        slot: idx,
                        epoch: q.epoch,
                        key,
                        len: self.batch.records.len() - start,
                        ordered: true,
                    };
                    self.start_batch_run(run);
                    progressed = true;
                    continue;
                } else {
                    // `Unordered` batches and the stream take records one by one, each a hand-out
                    // of its own. `Unordered` takes what room there is from the partition, up to a
                    // run, as the handler's lanes do (the next dispatch starts at the next
                    // partition); the ordered modes have one record of a partition (or key) out.
                    let epoch = q.epoch;
                    let room = match self.mode {
                        DispatchMode::Unordered { .. } => {
                            (limit - self.in_flight).clamp(1, RUN_MAX)
                        }
                        _ => 1,
                    };
                    self.start_one(idx, epoch, key, record);
                    for _ in 1..room {
                        let Some((_, record)) = self.queues[idx]
                            .as_mut()
                            .and_then(|q| q.schedule.next_below(below, ConsumedRecord::offset))
                        else {
                            break;
                        };
                        self.start_one(idx, epoch, key, record);
                    }
                    progressed = true;
                    continue;
                }
                let lane = Lane {
                    slot: idx,
                    epoch: q.epoch,
                    key,
                    records,
                    stop: Arc::clone(&q.stop),
                    each,
                };
                self.start(lane);
                progressed = true;
            }
            self.rr = self.rr.wrapping_add(1);
        }
        self.flush_batch();
        self.flush_lanes();
        self.flush_stream();
    }

    /// The most records a run of one hand-out takes: handler lanes (not `Unordered`), the stream's
    /// ordered runs and the transform's runs. `None` for sinks that take records one by one, or
    /// runs of their own size.
    fn run_max(&self) -> Option<usize> {
        match &self.sink {
            Sink::Handler(..) => Some(RUN_MAX),
            Sink::Stream(_) if !matches!(self.mode, DispatchMode::Unordered { .. }) => {
                Some(RUN_MAX)
            }
            Sink::Runs { max, .. } => Some((*max).max(1)),
            Sink::Batch { .. } | Sink::Stream(_) => None,
        }
    }

    /// Whether the stream's or the transform's receiver is gone (nobody will process records).
    fn channel_closed(&self) -> bool {
        match &self.sink {
            Sink::Stream(tx) => tx.is_closed(),
            Sink::Runs { tx, .. } => tx.is_closed(),
            Sink::Handler(..) | Sink::Batch { .. } => false,
        }
    }

    /// Applies a completion to the queues, and calls `processed(slot, offset)` for each processed
    /// record of a current tenure (for the watermark).
    pub(crate) fn apply(&mut self, c: Completion, mut processed: impl FnMut(usize, i64)) {
        self.in_flight = self.in_flight.saturating_sub(c.outcome.hand_outs_ended());
        let Some(q) = self
            .queues
            .get_mut(c.slot)
            .and_then(Option::as_mut)
            .filter(|q| q.epoch == c.epoch)
        else {
            return;
        };
        match c.outcome {
            Outcome::Done(offset) => {
                q.schedule.finish(c.key);
                processed(c.slot, offset);
            }
            Outcome::Processed { offsets, ends } => {
                if ends {
                    q.schedule.finish(c.key);
                }
                for offset in offsets {
                    processed(c.slot, offset);
                }
            }
            Outcome::Returned(records) => {
                if q.stop.load(Ordering::Relaxed) {
                    q.schedule.finish(c.key);
                } else {
                    q.schedule.finish_run(c.key, records.into_iter());
                }
            }
            Outcome::ProcessedEach(offsets) => {
                for offset in offsets {
                    q.schedule.finish(c.key);
                    processed(c.slot, offset);
                }
            }
            Outcome::ReturnedEach(records) => {
                let n = records.len();
                if q.stop.load(Ordering::Relaxed) {
                    for _ in 0..n {
                        q.schedule.finish(c.key);
                    }
                } else if n > 0 {
                    q.schedule.finish_run(c.key, records.into_iter());
                    for _ in 1..n {
                        q.schedule.finish(c.key);
                    }
                }
            }
        }
    }

    /// A completion that is ready now, if any.
    pub(crate) fn try_completion(&mut self) -> Option<Completion> {
        self.done_rx.try_recv().ok()
    }

    /// Waits for the next completion, room in a full stream, or ended handler tasks. Cancel-safe.
    pub(crate) async fn next(&mut self) -> DispatchEvent {
        let sink = &self.sink;
        let watch = !self.stream_closed && matches!(sink, Sink::Stream(_) | Sink::Runs { .. });
        let receiver_gone = async move {
            match sink {
                Sink::Stream(tx) => tx.closed().await,
                Sink::Runs { tx, .. } => tx.closed().await,
                Sink::Handler(..) | Sink::Batch { .. } => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = receiver_gone, if watch => {
                self.stream_closed = true;
                DispatchEvent::StreamClosed
            }
            Some(c) = self.done_rx.recv() => DispatchEvent::Completion(c),
            Some(joined) = self.handlers.join_next(), if !self.handlers.is_empty() => {
                let mut joined = Some(joined);
                for _ in 0..DRAIN_MAX {
                    let Some(j) = joined.take().or_else(|| self.handlers.try_join_next()) else { break };
                    if let Err(e) = j && e.is_panic() {
                        warn!(error = %e, "a handler task panicked outside the handler; its records will not be committed");
                    }
                }
                DispatchEvent::Joined
            }
        }
    }

    /// Ends every handler task (past the shutdown deadline).
    pub(crate) fn abort_all(&mut self) {
        self.handlers.abort_all();
    }

    /// The circuit breaker in front of the handler, if one is configured.
    pub(crate) fn circuit_breaker(&self) -> Option<&kafkit_resilience::CircuitBreaker> {
        match &self.sink {
            Sink::Handler(_, f) | Sink::Batch { failure: f, .. } => f.breaker.as_ref(),
            Sink::Stream(_) | Sink::Runs { .. } => None,
        }
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
            let run = |lane: Lane| async {
                if lane.each {
                    run_each_lane(lane, &handler, &failure, &done).await;
                } else {
                    run_lane(lane, &handler, &failure, &done).await;
                }
            };
            run_all(lanes.into_iter().map(run)).await;
        });
    }

    /// Hands the gathered records to one batch handler call. Successes complete together; a failure
    /// goes through the failure path on its own (retried as a batch of one), so one bad record never
    /// fails the records of other runs; see [`BatchRun`] for the rest of its own run.
    fn flush_batch(&mut self) {
        let Sink::Batch {
            handler, failure, ..
        } = &self.sink
        else {
            return;
        };
        if self.batch.runs.is_empty() {
            return;
        }
        let Batch { records, runs } = std::mem::take(&mut self.batch);
        let handler = Arc::clone(handler);
        let failure = Arc::clone(failure);
        let done = self.done_tx.clone();
        self.handlers.spawn(async move {
            let permit = failure.admit().await;
            let count = records.len();
            // A batch handler that panics failed every record of the batch, as if it had returned
            // the panic as each one's error.
            let mut results = catching(|| handler(records.clone()))
                .await
                .unwrap_or_else(|panic| (0..count).map(|_| Err(panic.clone().into())).collect());
            // A handler that returns the wrong number of results fails the records it left out.
            results.resize_with(count, || {
                Err(HandlerError {
                    type_name: "kafkit::consumer::MissingBatchResult",
                    source: format!("the batch handler returned fewer results than the {count} records it was given").into(),
                })
            });
            results.truncate(count);
            if let Some(p) = permit {
                if results
                    .iter()
                    .any(|r| r.as_ref().is_err_and(|e| failure.retry.is_retriable(&*e.source)))
                {
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
            let mut records = records.into_iter();
            let mut results = results.into_iter();
            let finishing: Vec<_> = runs
                .into_iter()
                .map(|run| {
                    let records: Vec<ConsumedRecord> = records.by_ref().take(run.len).collect();
                    let results: Vec<_> = results.by_ref().take(run.len).collect();
                    finish_batch_run(run, records, results, &single, &failure, &done)
                })
                .collect();
            futures::future::join_all(finishing).await;
        });
    }

    /// Hands a lane to the handler sink.
    fn start(&mut self, lane: Lane) {
        self.in_flight += if lane.each { lane.records.len() } else { 1 };
        self.lanes.push(lane);
        if self.lanes.len() >= LANES_PER_TASK {
            self.flush_lanes();
        }
    }

    /// Adds an ordered run to the batch (see [`BatchRun`]); one hand-out.
    fn start_batch_run(&mut self, run: BatchRun) {
        self.in_flight += 1;
        self.batch.runs.push(run);
        self.flush_full_batch();
    }

    /// Calls the batch handler once the batch holds `max` records.
    fn flush_full_batch(&mut self) {
        if let Sink::Batch { max, .. } = &self.sink
            && self.batch.records.len() >= *max
        {
            self.flush_batch();
        }
    }

    /// Hands one record to the batch or stream sink.
    fn start_one(&mut self, slot: usize, epoch: u64, key: u64, record: ConsumedRecord) {
        self.in_flight += 1;
        match &self.sink {
            Sink::Batch { .. } => {
                self.batch.records.push(record);
                self.batch.runs.push(BatchRun {
                    slot,
                    epoch,
                    key,
                    len: 1,
                    ordered: false,
                });
                self.flush_full_batch();
            }
            Sink::Stream(_) => self.stream_batch.push(StreamItem::Record(StreamRecord {
                record,
                ack: Some(StreamAck::Own(AckHandle {
                    slot,
                    epoch,
                    key,
                    done: self.done_tx.clone(),
                })),
            })),
            Sink::Handler(..) | Sink::Runs { .. } => {
                unreachable!("handler records start in lanes, the transform's in runs")
            }
        }
    }

    /// Sends the gathered records (or runs) to the stream (or the transform). If the receiver is
    /// gone they are dropped, which hands them back; [`next`](Self::next) reports it.
    fn flush_stream(&mut self) {
        match &self.sink {
            Sink::Stream(tx) if !self.stream_batch.is_empty() => {
                let _ = tx.send(std::mem::take(&mut self.stream_batch));
            }
            Sink::Runs { tx, .. } if !self.runs.is_empty() => {
                let _ = tx.send(std::mem::take(&mut self.runs));
            }
            _ => {}
        }
    }
}

/// Sends a lane's outcomes to the dispatcher, tagged with the lane's tenure and key.
fn reporter(
    done: &mpsc::UnboundedSender<Completion>,
    slot: usize,
    epoch: u64,
    key: u64,
) -> impl Fn(Outcome) + '_ {
    move |outcome| {
        let _ = done.send(Completion {
            slot,
            epoch,
            key,
            outcome,
        });
    }
}

/// Completes a batch's run from the handler's `results` for its `records` (see [`BatchRun`]).
async fn finish_batch_run(
    run: BatchRun,
    records: Vec<ConsumedRecord>,
    results: Vec<Result<(), HandlerError>>,
    single: &HandlerFn,
    failure: &FailurePath,
    done: &mpsc::UnboundedSender<Completion>,
) {
    let report = reporter(done, run.slot, run.epoch, run.key);
    let Some(failed) = results.iter().position(Result::is_err) else {
        let offsets = records.iter().map(ConsumedRecord::offset).collect();
        report(Outcome::Processed {
            offsets,
            ends: true,
        });
        return;
    };
    let error = results.into_iter().nth(failed).and_then(Result::err);
    let mut records = records.into_iter();
    if failed > 0 {
        let offsets = records.by_ref().take(failed).map(|r| r.offset()).collect();
        report(Outcome::Processed {
            offsets,
            ends: false,
        });
    }
    let record = records.next().expect("the failed record is in the run");
    failure.process_from(single, &record, error).await;
    let rest: Vec<ConsumedRecord> = if run.ordered {
        records.collect()
    } else {
        Vec::new()
    };
    report(Outcome::Processed {
        offsets: vec![record.offset()],
        ends: rest.is_empty(),
    });
    if !rest.is_empty() {
        report(Outcome::Returned(rest));
    }
}

/// Processes a lane's records in order through the failure path and reports them (see [`Lane`]);
/// stops before the next record once the slot's tenure stopped dispatching, handing the rest back.
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
        each: _,
    } = lane;
    let report = reporter(done, slot, epoch, key);
    let mut unreported: Vec<i64> = Vec::new();
    let mut records = records.into_iter();
    // The tenure may have stopped between the dispatch and this task's start: check before the
    // first record as before every other.
    if stop.load(Ordering::Acquire) {
        report(Outcome::Returned(records.collect()));
        return;
    }
    while let Some(record) = records.next() {
        let mut processing = std::pin::pin!(failure.process(handler, &record));
        std::future::poll_fn(|cx| {
            let poll = processing.as_mut().poll(cx);
            // About to wait: what is processed must not wait with it (the watermark would lag).
            if poll.is_pending() && !unreported.is_empty() {
                report(Outcome::Processed {
                    offsets: std::mem::take(&mut unreported),
                    ends: false,
                });
            }
            poll
        })
        .await;
        unreported.push(record.offset());
        let last = records.len() == 0;
        if last || unreported.len() >= REPORT_MAX {
            report(Outcome::Processed {
                offsets: std::mem::take(&mut unreported),
                ends: last,
            });
        }
        if !last && stop.load(Ordering::Acquire) {
            if !unreported.is_empty() {
                report(Outcome::Processed {
                    offsets: std::mem::take(&mut unreported),
                    ends: false,
                });
            }
            report(Outcome::Returned(records.collect()));
            return;
        }
    }
}

/// Processes an `Unordered` lane (see [`Lane`]): inline while each record finishes without waiting,
/// then everything not yet started at once. Reports like [`run_lane`], each record ending its own
/// hand-out; a stop before the concurrent phase hands the unstarted records back.
/// Runs `lanes` concurrently, as `join_all` does, but a lane that finishes at its first poll
/// (every record processed without waiting) costs no allocation: its box is reused for the next.
async fn run_all<F: Future<Output = ()>>(lanes: impl Iterator<Item = F>) {
    let mut waiting = futures::stream::FuturesUnordered::new();
    let mut spare: Option<Pin<Box<F>>> = None;
    for lane in lanes {
        let mut running = match spare.take() {
            Some(mut boxed) => {
                boxed.set(lane);
                boxed
            }
            None => Box::pin(lane),
        };
        if futures::poll!(running.as_mut()).is_ready() {
            spare = Some(running);
        } else {
            waiting.push(running);
        }
    }
    while waiting.next().await.is_some() {}
}

async fn run_each_lane(
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
        each: _,
    } = lane;
    let report = reporter(done, slot, epoch, key);
    let process = |record: ConsumedRecord| async move {
        failure.process(handler, &record).await;
        record.offset()
    };
    let mut rest = records.into_iter();
    let mut waiting = futures::stream::FuturesUnordered::new();
    let mut unreported: Vec<i64> = Vec::new();
    // The box of the last record that finished inline, reused for the next record: a record that
    // does not wait costs no allocation of its own (records that wait keep theirs in `waiting`).
    let mut spare = None;
    std::future::poll_fn(|cx| {
        loop {
            while let Poll::Ready(Some(offset)) = waiting.poll_next_unpin(cx) {
                unreported.push(offset);
            }
            if unreported.len() >= REPORT_MAX {
                report(Outcome::ProcessedEach(std::mem::take(&mut unreported)));
            }
            if !waiting.is_empty() {
                if rest.len() > 0 {
                    // One waits: start the rest now, none of them waits behind it.
                    waiting.extend(rest.by_ref().map(|r| Box::pin(process(r))));
                    continue;
                }
                if !unreported.is_empty() {
                    report(Outcome::ProcessedEach(std::mem::take(&mut unreported)));
                }
                return Poll::Pending;
            }
            if rest.len() > 0 && stop.load(Ordering::Acquire) {
                if !unreported.is_empty() {
                    report(Outcome::ProcessedEach(std::mem::take(&mut unreported)));
                }
                report(Outcome::ReturnedEach(rest.by_ref().collect()));
                return Poll::Ready(());
            }
            let Some(record) = rest.next() else {
                if !unreported.is_empty() {
                    report(Outcome::ProcessedEach(std::mem::take(&mut unreported)));
                }
                return Poll::Ready(());
            };
            let mut processing = match spare.take() {
                Some(mut boxed) => {
                    Pin::set(&mut boxed, process(record));
                    boxed
                }
                None => Box::pin(process(record)),
            };
            match processing.as_mut().poll(cx) {
                Poll::Ready(offset) => {
                    unreported.push(offset);
                    spare = Some(processing);
                }
                Poll::Pending => waiting.push(processing),
            }
        }
    })
    .await;
}

/// The dispatcher alone, in memory, for kafkit's benchmark runner: the same queues, dispatch rules,
/// lanes, failure path (default retry policy and circuit breaker) and completion handling the
/// consumer uses, fed records directly instead of by fetchers, with a handler that does nothing.
/// Not an API: only built with the `__bench` feature, which only `bench/` turns on.
#[cfg(feature = "__bench")]
#[doc(hidden)]
pub mod bench {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use kafkit_resilience::{CircuitBreaker, CircuitBreakerPolicy, RetryPolicy};

    use super::{DRAIN_MAX, DispatchEvent, Dispatcher, HandlerFn, Sink};
    use crate::consumer::DispatchMode;
    use crate::consumer::failure::FailurePath;
    use crate::consumer::record::{ConsumedRecord, RecordChunk};
    use crate::consumer::watermark::WatermarkTracker;
    use crate::wire::records::FetchedRecord;

    /// Records per chunk: about what a 1 MiB fetch response holds of one partition's 100-byte
    /// records.
    const CHUNK: usize = 8_192;

    /// Pushes `records` (partition, key) with `value_size`-byte values through a dispatcher in
    /// `mode` and waits until every one is processed and its partition's watermark passed it.
    /// Returns the time from the first push to the last watermark move. Needs a tokio runtime.
    pub async fn dispatch_in_memory(
        mode: DispatchMode,
        records: &[(usize, Vec<u8>)],
        value_size: usize,
    ) -> Duration {
        let handler: HandlerFn = Arc::new(|_record| Box::pin(async { Ok(()) }));
        let failure = Arc::new(FailurePath {
            retry: RetryPolicy::default(),
            breaker: Some(CircuitBreaker::new(CircuitBreakerPolicy::default())),
            dead_letter: None,
            group_id: "bench".into(),
            metrics: None,
        });
        let partitions = records.iter().map(|(p, _)| p + 1).max().unwrap_or(0);
        let topic: Arc<str> = Arc::from("bench");
        let mut next_offset = vec![0i64; partitions];
        // Keys and values are slices of one buffer, as they are of the fetch response in the consumer.
        let frame = bytes::Bytes::from(
            records
                .iter()
                .flat_map(|(_, key)| {
                    key.iter()
                        .copied()
                        .chain(std::iter::repeat_n(0, value_size))
                })
                .collect::<Vec<u8>>(),
        );
        // Records come in chunks of consecutive records of one partition, as the engine makes
        // them of each partition's part of a fetch response.
        let mut at = 0;
        let mut fetched: Vec<Vec<FetchedRecord>> = vec![Vec::new(); partitions];
        let order: Vec<(usize, i64)> = records
            .iter()
            .map(|(p, key)| {
                let offset = next_offset[*p];
                next_offset[*p] += 1;
                let key_at = at;
                at += key.len() + value_size;
                fetched[*p].push(FetchedRecord {
                    offset,
                    key: Some(frame.slice(key_at..key_at + key.len())),
                    value: Some(frame.slice(key_at + key.len()..at)),
                    headers: crate::Headers::new(),
                    timestamp_ms: 0,
                    timestamp_type: kafkit_resilience::TimestampType::CreateTime,
                });
                (*p, offset)
            })
            .collect();
        let chunks: Vec<Vec<Arc<RecordChunk>>> = fetched
            .into_iter()
            .enumerate()
            .map(|(p, records)| {
                records
                    .chunks(CHUNK)
                    .map(|c| {
                        Arc::new(RecordChunk {
                            topic: Arc::clone(&topic),
                            partition: p as i32,
                            records: c.to_vec(),
                            _budget: None,
                            delivery_counts: Vec::new(),
                        })
                    })
                    .collect()
            })
            .collect();
        let built: Vec<(usize, ConsumedRecord)> = order
            .into_iter()
            .map(|(p, offset)| {
                let i = offset as usize;
                (p, ConsumedRecord::of(&chunks[p][i / CHUNK], i % CHUNK))
            })
            .collect();
        drop(chunks);

        let started = Instant::now();
        let mut dispatcher = Dispatcher::new(mode, Sink::Handler(handler, failure));
        let mut trackers: Vec<WatermarkTracker> = (0..partitions)
            .map(|p| {
                dispatcher.open(p, 1);
                WatermarkTracker::new(0)
            })
            .collect();
        for (p, record) in built {
            trackers[p].track(record.offset());
            dispatcher.push(p, record);
        }
        let done = |t: &[WatermarkTracker]| {
            t.iter()
                .zip(&next_offset)
                .all(|(t, end)| t.watermark() == *end)
        };
        while !done(&trackers) {
            dispatcher.dispatch(|_| i64::MAX);
            if let DispatchEvent::Completion(c) = dispatcher.next().await {
                let mut next = Some(c);
                for _ in 0..DRAIN_MAX {
                    let Some(c) = next.take().or_else(|| dispatcher.try_completion()) else {
                        break;
                    };
                    dispatcher.apply(c, |slot, offset| {
                        trackers[slot].complete(offset);
                    });
                }
            }
        }
        started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use kafkit_resilience::RetryPolicy;
    use tokio::time::Instant;

    use super::*;
    use crate::consumer::record::Received;
    use crate::wire::records::FetchedRecord;

    /// The records of one stream message (`Unordered`: records of their own).
    fn own_records(items: Vec<StreamItem>) -> Vec<StreamRecord> {
        items
            .into_iter()
            .map(|item| match item {
                StreamItem::Record(r) => r,
                StreamItem::Run(run) => panic!("a run in an Unordered stream: {run:?}"),
            })
            .collect()
    }

    fn record(offset: i64, key: &str) -> ConsumedRecord {
        record_of(0, offset, key)
    }

    /// Which offsets the handler started, and when.
    type StartLog = Arc<Mutex<Vec<(i64, Instant)>>>;

    /// A dispatcher whose handler sleeps `delays[offset]` ms and logs (offset, start time).
    fn dispatcher(mode: DispatchMode, delays: Vec<u64>) -> (Dispatcher, StartLog) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&log);
        let handler: HandlerFn = Arc::new(move |r: ConsumedRecord| {
            let delay = Duration::from_millis(delays[r.offset() as usize]);
            seen.lock().unwrap().push((r.offset(), Instant::now()));
            Box::pin(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(())
            })
        });
        let failure = Arc::new(FailurePath {
            retry: RetryPolicy::default(),
            breaker: None,
            dead_letter: None,
            group_id: "g".into(),
            metrics: None,
        });
        (Dispatcher::new(mode, Sink::Handler(handler, failure)), log)
    }

    /// Dispatches and applies completions until `n` records are processed; returns their offsets.
    async fn drive(d: &mut Dispatcher, n: usize) -> Vec<i64> {
        let mut processed = Vec::new();
        while processed.len() < n {
            d.dispatch(|_| i64::MAX);
            if let DispatchEvent::Completion(c) = d.next().await {
                d.apply(c, |_, offset| processed.push(offset));
            }
        }
        processed
    }

    #[tokio::test(start_paused = true)]
    async fn an_unordered_lane_starts_the_rest_as_soon_as_one_record_waits() {
        // Offset 1 takes 50 ms; the others finish at once or take 30 ms.
        let (mut d, log) = dispatcher(
            DispatchMode::Unordered { max_in_flight: 8 },
            vec![0, 50, 0, 30, 0],
        );
        d.open(0, 1);
        for o in 0..5 {
            d.push(0, record(o, "k"));
        }
        let start = Instant::now();
        let mut processed = drive(&mut d, 5).await;
        processed.sort_unstable();
        assert_eq!(processed, vec![0, 1, 2, 3, 4]);
        // Concurrent: the slowest record's time, not the sum (80 ms).
        assert!(
            start.elapsed() < Duration::from_millis(60),
            "{:?}",
            start.elapsed()
        );
        let started: Vec<(i64, Duration)> = log
            .lock()
            .unwrap()
            .iter()
            .map(|(o, t)| (*o, *t - start))
            .collect();
        assert!(
            started.iter().all(|(_, t)| *t < Duration::from_millis(1)),
            "{started:?}"
        );
        assert_eq!(d.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn unordered_waits_for_a_quarter_of_its_bound_before_starting_more() {
        // Bound 8: eight 10 ms records fill it; each later record starts only once two are done.
        let delays: Vec<u64> = (0..12)
            .map(|o| if o < 8 { 10 * (o + 1) } else { 0 })
            .collect();
        let (mut d, log) = dispatcher(DispatchMode::Unordered { max_in_flight: 8 }, delays);
        d.open(0, 1);
        for o in 0..12 {
            d.push(0, record(o, "k"));
        }
        let start = Instant::now();
        d.dispatch(|_| i64::MAX);
        assert_eq!(d.in_flight(), 8);
        let mut processed = Vec::new();
        while processed.len() < 12 {
            if let DispatchEvent::Completion(c) = d.next().await {
                d.apply(c, |_, offset| processed.push(offset));
            }
            assert!(d.in_flight() <= 8);
            d.dispatch(|_| i64::MAX);
            if processed.len() == 1 {
                // One slot free is less than the low-water mark (2): nothing starts.
                assert_eq!(d.in_flight(), 7, "{processed:?}");
            }
        }
        let log = log.lock().unwrap();
        let late = log.iter().find(|(o, _)| *o == 8).expect("offset 8 ran").1;
        // Records 0 (10 ms) and 1 (20 ms) had to finish first.
        assert_eq!(late - start, Duration::from_millis(20), "{log:?}");
        assert_eq!(d.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_keeps_order_and_a_stop_starts_none_of_its_rest() {
        let (mut d, log) = dispatcher(DispatchMode::PartitionOrdered, vec![10; 6]);
        d.open(0, 1);
        for o in 0..6 {
            d.push(0, record(o, "k"));
        }
        d.dispatch(|_| i64::MAX);
        assert_eq!(d.in_flight(), 1, "the partition's records form one run");
        // The first record finishes; stop while the second runs.
        let mut processed = Vec::new();
        while processed.len() < 2 {
            if let DispatchEvent::Completion(c) = d.next().await {
                d.apply(c, |_, offset| processed.push(offset));
            }
            if processed.len() == 1 {
                d.stop(0);
            }
        }
        while d.in_flight() > 0 {
            if let DispatchEvent::Completion(c) = d.next().await {
                d.apply(c, |_, offset| processed.push(offset));
            }
        }
        assert_eq!(
            processed,
            vec![0, 1],
            "in order, and nothing after the stop"
        );
        let started: Vec<i64> = log.lock().unwrap().iter().map(|(o, _)| *o).collect();
        assert_eq!(started, vec![0, 1]);
        d.dispatch(|_| i64::MAX);
        assert_eq!(d.in_flight(), 0, "a stopped queue hands nothing out");
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_stopped_before_its_task_starts_starts_no_record() {
        let (mut d, log) = dispatcher(DispatchMode::PartitionOrdered, vec![0; 3]);
        d.open(0, 1);
        for o in 0..3 {
            d.push(0, record(o, "k"));
        }
        // Dispatched (the task is spawned, not yet run), then stopped.
        d.dispatch(|_| i64::MAX);
        d.stop(0);
        while d.in_flight() > 0 {
            if let DispatchEvent::Completion(c) = d.next().await {
                assert!(
                    matches!(&c.outcome, Outcome::Returned(r) if r.len() == 3),
                    "{c:?}"
                );
                d.apply(c, |_, offset| panic!("{offset} was processed"));
            }
        }
        assert!(log.lock().unwrap().is_empty(), "no record started");
    }

    /// Three attempts 10 ms apart.
    fn fast_retries() -> RetryPolicy {
        let backoff = kafkit_resilience::BackoffPolicy::new(
            Duration::from_millis(10),
            Duration::from_millis(50),
            2.0,
            0.0,
        )
        .unwrap();
        RetryPolicy::new(3, backoff).unwrap()
    }

    fn failure_path(metrics: &kafkit_metrics::Metrics) -> Arc<FailurePath> {
        Arc::new(FailurePath {
            retry: fast_retries(),
            breaker: None,
            dead_letter: None,
            group_id: "g".into(),
            metrics: Some(metrics.clone()),
        })
    }

    fn record_of(partition: i32, offset: i64, key: &str) -> ConsumedRecord {
        ConsumedRecord::single(
            Arc::from("t"),
            partition,
            FetchedRecord {
                offset,
                key: Some(bytes::Bytes::copy_from_slice(key.as_bytes())),
                value: None,
                headers: crate::Headers::new(),
                timestamp_ms: 0,
                timestamp_type: kafkit_resilience::TimestampType::CreateTime,
            },
        )
    }

    /// Two partitions (slots 0 and 1) of 12 records each, keys `k0`..`k2` by offset.
    fn push_two_partitions(d: &mut Dispatcher) {
        for slot in 0..2 {
            d.open(slot, 1);
            for o in 0..12 {
                d.push(slot, record_of(slot as i32, o, &format!("k{}", o % 3)));
            }
        }
    }

    /// Dispatches and applies completions until every record of [`push_two_partitions`] is
    /// processed; returns (slot, offset) in the order they were reported. Fails instead of hanging
    /// when a record never completes.
    async fn drive_all(d: &mut Dispatcher) -> Vec<(usize, i64)> {
        let mut processed = Vec::new();
        let drive = async {
            while processed.len() < 24 {
                d.dispatch(|_| i64::MAX);
                if let DispatchEvent::Completion(c) = d.next().await {
                    d.apply(c, |slot, offset| processed.push((slot, offset)));
                }
            }
        };
        let finished = tokio::time::timeout(Duration::from_secs(60), drive).await;
        assert!(finished.is_ok(), "processed only {processed:?}");
        processed
    }

    /// Attempts per (partition, offset).
    type Attempts = Arc<Mutex<std::collections::HashMap<(i32, i64), u32>>>;

    /// A handler that takes 5 ms a record (so others are in flight) and panics on the first attempt
    /// of offset 3 of partition 0 while calling it (before it returns a future) and of offset 5 of
    /// partition 1 while its future runs.
    fn panicking_handler(attempts: &Attempts) -> HandlerFn {
        let attempts = Arc::clone(attempts);
        Arc::new(move |r: ConsumedRecord| {
            let n = {
                let mut attempts = attempts.lock().unwrap();
                let n = attempts.entry((r.partition(), r.offset())).or_insert(0);
                *n += 1;
                *n
            };
            if (r.partition(), r.offset(), n) == (0, 3, 1) {
                panic!("sync boom at {}", r.offset());
            }
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if (r.partition(), r.offset(), n) == (1, 5, 1) {
                    std::panic::panic_any("async boom");
                }
                Ok(())
            })
        })
    }

    /// The two panicking records were retried once, everything else ran once, and the metrics
    /// count both panics as failures and retries.
    fn assert_two_panics_retried(attempts: &Attempts, metrics: &kafkit_metrics::Metrics) {
        let attempts = attempts.lock().unwrap();
        for ((p, o), n) in attempts.iter() {
            let expected = if matches!((p, o), (0, 3) | (1, 5)) {
                2
            } else {
                1
            };
            assert_eq!(*n, expected, "partition {p} offset {o}: {n} attempts");
        }
        assert_eq!(attempts.len(), 24);
        let c = metrics.publish().totals;
        assert_eq!((c.panicked, c.failed, c.retried), (2, 2, 2), "{c:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_handler_fails_its_record_which_is_retried_and_releases_its_hand_out() {
        let modes = [
            DispatchMode::PartitionOrdered,
            DispatchMode::KeyOrdered { max_in_flight: 8 },
            DispatchMode::Unordered { max_in_flight: 8 },
        ];
        for mode in modes {
            let metrics = kafkit_metrics::Metrics::default();
            let attempts = Attempts::default();
            let mut d = Dispatcher::new(
                mode,
                Sink::Handler(panicking_handler(&attempts), failure_path(&metrics)),
            );
            push_two_partitions(&mut d);
            let processed = drive_all(&mut d).await;
            let mut sorted = processed.clone();
            sorted.sort_unstable();
            let all: Vec<(usize, i64)> =
                (0..2).flat_map(|s| (0..12).map(move |o| (s, o))).collect();
            assert_eq!(sorted, all, "{mode:?}: every record, once");
            assert_two_panics_retried(&attempts, &metrics);
            assert_eq!(d.in_flight(), 0, "{mode:?}");
            assert_eq!((d.in_flight_of(0), d.in_flight_of(1)), (0, 0), "{mode:?}");
            // The ordered modes still keep their order around the retried record.
            let order_of = |slot: usize, key: Option<i64>| -> Vec<i64> {
                processed
                    .iter()
                    .filter(|(s, o)| *s == slot && key.is_none_or(|k| o % 3 == k))
                    .map(|(_, o)| *o)
                    .collect()
            };
            let keep_order: &[Option<i64>] = match mode {
                DispatchMode::PartitionOrdered => &[None],
                DispatchMode::KeyOrdered { .. } => &[Some(0), Some(1), Some(2)],
                DispatchMode::Unordered { .. } => &[],
            };
            for slot in 0..2 {
                for key in keep_order {
                    let order = order_of(slot, *key);
                    assert!(
                        order.is_sorted(),
                        "{mode:?} slot {slot} key {key:?}: {order:?}"
                    );
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_batch_handler_fails_the_whole_batch_and_each_record_is_retried() {
        let metrics = kafkit_metrics::Metrics::default();
        let calls: Attempts = Attempts::default();
        let sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
        let handler: BatchFn = {
            let (calls, sizes) = (Arc::clone(&calls), Arc::clone(&sizes));
            Arc::new(move |records: Vec<ConsumedRecord>| {
                sizes.lock().unwrap().push(records.len());
                let mut first_of_3 = false;
                for r in &records {
                    let mut calls = calls.lock().unwrap();
                    let n = calls.entry((r.partition(), r.offset())).or_insert(0);
                    *n += 1;
                    first_of_3 |= (r.partition(), r.offset(), *n) == (0, 3, 1);
                }
                if first_of_3 {
                    panic!("batch boom");
                }
                let n = records.len();
                Box::pin(async move { (0..n).map(|_| Ok(())).collect() })
            })
        };
        let mut d = Dispatcher::new(
            DispatchMode::Unordered { max_in_flight: 8 },
            Sink::Batch {
                handler,
                failure: failure_path(&metrics),
                max: 4,
            },
        );
        push_two_partitions(&mut d);
        let mut processed = drive_all(&mut d).await;
        processed.sort_unstable();
        assert_eq!(processed.len(), 24);
        processed.dedup();
        assert_eq!(processed.len(), 24, "every record, once");
        assert_eq!(d.in_flight(), 0);
        // The batch that held offset 3 failed as a whole: each of its records was retried alone.
        let calls = calls.lock().unwrap();
        let retried: Vec<(i32, i64)> = calls
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| *k)
            .collect();
        assert!(retried.contains(&(0, 3)), "{retried:?}");
        assert!(calls.values().all(|n| *n <= 2), "{calls:?}");
        let c = metrics.publish().totals;
        assert_eq!(c.panicked as usize, retried.len(), "{c:?}");
        assert_eq!((c.failed, c.retried), (c.panicked, c.panicked), "{c:?}");
        assert!(
            sizes.lock().unwrap().iter().any(|n| *n > 1),
            "records were batched"
        );
    }

    /// Each batch handler call's (partition, offset) list.
    type BatchCalls = Arc<Mutex<Vec<Vec<(i32, i64)>>>>;

    /// A batch handler that logs each call and fails offset 4 of partition 0 on its first attempt.
    fn failing_batch_handler(calls: &BatchCalls) -> BatchFn {
        let calls = Arc::clone(calls);
        Arc::new(move |records: Vec<ConsumedRecord>| {
            let mut calls = calls.lock().unwrap();
            let first_of_4 = !calls.iter().flatten().any(|k| *k == (0, 4));
            calls.push(
                records
                    .iter()
                    .map(|r| (r.partition(), r.offset()))
                    .collect(),
            );
            let results = records
                .iter()
                .map(|r| {
                    if (r.partition(), r.offset()) == (0, 4) && first_of_4 {
                        Err(HandlerError {
                            type_name: "test",
                            source: "boom".into(),
                        })
                    } else {
                        Ok(())
                    }
                })
                .collect();
            Box::pin(async move { results })
        })
    }

    #[tokio::test]
    async fn ordered_batches_take_runs_and_a_failure_hands_back_the_rest_of_its_run() {
        for (mode, handed_back) in [
            (DispatchMode::PartitionOrdered, vec![5, 6, 7, 8, 9, 10, 11]),
            // Offset 4's key is k1 (offset % 3): its run is 1, 4, 7, 10.
            (DispatchMode::KeyOrdered { max_in_flight: 8 }, vec![7, 10]),
        ] {
            let metrics = kafkit_metrics::Metrics::default();
            let calls = BatchCalls::default();
            let mut d = Dispatcher::new(
                mode,
                Sink::Batch {
                    handler: failing_batch_handler(&calls),
                    failure: failure_path(&metrics),
                    max: 50,
                },
            );
            push_two_partitions(&mut d);
            let processed = drive_all(&mut d).await;
            assert_eq!(d.in_flight(), 0, "{mode:?}");
            let mut unique = processed.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(
                unique.len(),
                24,
                "{mode:?}: every record, once: {processed:?}"
            );
            assert_eq!(processed.len(), 24, "{mode:?}: {processed:?}");
            // Reported in offset order per partition (PartitionOrdered) or per key (KeyOrdered).
            let group = |&(slot, offset): &(usize, i64)| match mode {
                DispatchMode::PartitionOrdered => (slot, 0),
                _ => (slot, offset % 3),
            };
            for g in processed.iter().map(group) {
                let order: Vec<i64> = processed
                    .iter()
                    .filter(|p| group(p) == g)
                    .map(|p| p.1)
                    .collect();
                assert!(order.is_sorted(), "{mode:?}: {g:?} out of order: {order:?}");
            }
            let calls = calls.lock().unwrap().clone();
            assert!(
                calls[0].len() > 2,
                "{mode:?}: a batch holds runs, not one record per partition or key: {calls:?}"
            );
            let handled = |k: (i32, i64)| calls.iter().flatten().filter(|c| **c == k).count();
            assert_eq!(
                handled((0, 4)),
                2,
                "{mode:?}: the failed record is retried: {calls:?}"
            );
            for p in 0..2 {
                for o in 0..12 {
                    let again = p == 0 && handed_back.contains(&o);
                    let expected = if (p, o) == (0, 4) || again { 2 } else { 1 };
                    assert_eq!(handled((p, o)), expected, "{mode:?}: ({p}, {o}): {calls:?}");
                }
            }
            // The handed-back records come after the failed record's retry.
            let retry = calls
                .iter()
                .position(|c| c == &vec![(0, 4)])
                .expect("a retry");
            let again = calls
                .iter()
                .rposition(|c| c.contains(&(0, handed_back[0])))
                .expect("delivered again");
            assert!(again > retry, "{mode:?}: {calls:?}");
        }
    }

    #[tokio::test]
    async fn stream_records_come_in_one_message_per_dispatch_and_ack_all_completes_each() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut d = Dispatcher::new(
            DispatchMode::Unordered { max_in_flight: 64 },
            Sink::Stream(tx),
        );
        push_two_partitions(&mut d);
        d.dispatch(|_| i64::MAX);
        let batch = own_records(rx.try_recv().expect("a batch"));
        assert_eq!(batch.len(), 24, "one message for the whole dispatch");
        assert!(rx.try_recv().is_err());
        assert_eq!(d.in_flight(), 24);
        StreamRecord::ack_all(batch);
        // Each partition's acks arrive as one completion that ends its twelve hand-outs.
        let mut processed = Vec::new();
        for _ in 0..2 {
            let c = d.try_completion().expect("a completion per partition");
            assert!(
                matches!(&c.outcome, Outcome::ProcessedEach(o) if o.len() == 12),
                "{c:?}"
            );
            d.apply(c, |slot, offset| processed.push((slot, offset)));
        }
        assert!(d.try_completion().is_none());
        assert_eq!(d.in_flight(), 0);
        processed.sort_unstable();
        let all: Vec<(usize, i64)> = (0..2).flat_map(|s| (0..12).map(move |o| (s, o))).collect();
        assert_eq!(processed, all);
    }

    /// Dispatches, and receives what that dispatch sent to a runs sink.
    fn receive_runs(
        d: &mut Dispatcher,
        rx: &mut mpsc::UnboundedReceiver<Vec<RecordRun>>,
    ) -> Vec<RecordRun> {
        d.dispatch(|_| i64::MAX);
        rx.try_recv().unwrap_or_default()
    }

    fn offsets_of(run: &RecordRun) -> Vec<i64> {
        run.records().iter().map(ConsumedRecord::offset).collect()
    }

    /// Applies every ready completion; returns the processed (slot, offset) pairs.
    fn apply_ready(d: &mut Dispatcher) -> Vec<(usize, i64)> {
        let mut processed = Vec::new();
        while let Some(c) = d.try_completion() {
            d.apply(c, |slot, offset| processed.push((slot, offset)));
        }
        processed
    }

    #[tokio::test]
    async fn the_runs_sink_hands_out_a_partitions_next_records_as_one_hand_out() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut d = Dispatcher::new(DispatchMode::PartitionOrdered, Sink::Runs { tx, max: 5 });
        push_two_partitions(&mut d);

        // One run per partition, its first `max` records, in one message.
        let runs = receive_runs(&mut d, &mut rx);
        let got: Vec<(i32, Vec<i64>)> = runs
            .iter()
            .map(|r| (r.partition().partition, offsets_of(r)))
            .collect();
        assert_eq!(
            got,
            vec![(0, vec![0, 1, 2, 3, 4]), (1, vec![0, 1, 2, 3, 4])]
        );
        assert_eq!(d.in_flight(), 2, "a run is one hand-out");
        assert!(
            receive_runs(&mut d, &mut rx).is_empty(),
            "one run per partition out"
        );

        let mut runs = runs.into_iter();
        let (p0, p1) = (runs.next().unwrap(), runs.next().unwrap());
        // Partition 0: the first two acked; the rest of the run stays out.
        let rest = p0.ack_front(2).expect("three records left");
        assert_eq!(offsets_of(&rest), vec![2, 3, 4]);
        assert_eq!(apply_ready(&mut d), vec![(0, 0), (0, 1)]);
        assert_eq!(d.in_flight_of(0), 1);
        assert!(
            receive_runs(&mut d, &mut rx).is_empty(),
            "the run is still out"
        );
        // Handed back: its records are the front of the partition's next run.
        drop(rest);
        assert!(apply_ready(&mut d).is_empty());
        let again = receive_runs(&mut d, &mut rx);
        assert_eq!(again.len(), 1);
        assert_eq!(offsets_of(&again[0]), vec![2, 3, 4, 5, 6]);
        again.into_iter().for_each(RecordRun::ack);
        assert_eq!(
            apply_ready(&mut d),
            (2..7).map(|o| (0, o)).collect::<Vec<_>>()
        );

        // Partition 1 is revoked while its run is out: the run says so, and handing it back
        // queues nothing again.
        d.stop(1);
        assert!(p1.stopped());
        drop(p1);
        assert!(apply_ready(&mut d).is_empty());
        assert_eq!(d.in_flight_of(1), 0);
        let last = receive_runs(&mut d, &mut rx);
        let got: Vec<(i32, Vec<i64>)> = last
            .iter()
            .map(|r| (r.partition().partition, offsets_of(r)))
            .collect();
        assert_eq!(got, vec![(0, vec![7, 8, 9, 10, 11])]);
        assert!(!last[0].stopped());
    }

    #[tokio::test]
    async fn an_unordered_stream_takes_a_partition_s_room_in_one_visit_and_partitions_take_turns() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut d = Dispatcher::new(
            DispatchMode::Unordered { max_in_flight: 8 },
            Sink::Stream(tx),
        );
        push_two_partitions(&mut d);
        let handed = |batch: &[StreamRecord]| -> Vec<(i32, i64)> {
            let mut got: Vec<_> = batch
                .iter()
                .map(|r| (r.record().partition(), r.record().offset()))
                .collect();
            got.sort_unstable();
            got
        };
        d.dispatch(|_| i64::MAX);
        let first = own_records(rx.try_recv().expect("a batch"));
        // The bound holds, and the first partition visited takes all of the room.
        assert_eq!(d.in_flight(), 8);
        let from = first[0].record().partition();
        assert_eq!(
            handed(&first),
            (0..8).map(|o| (from, o)).collect::<Vec<_>>()
        );
        StreamRecord::ack_all(first);
        while let Some(c) = d.try_completion() {
            d.apply(c, |_, _| {});
        }
        assert_eq!(d.in_flight(), 0);
        // The next dispatch starts at the other partition.
        d.dispatch(|_| i64::MAX);
        let second = own_records(rx.try_recv().expect("a batch"));
        assert_eq!(d.in_flight(), 8);
        let other = 1 - from;
        assert_eq!(
            handed(&second),
            (0..8).map(|o| (other, o)).collect::<Vec<_>>()
        );
        StreamRecord::ack_all(second);
        while let Some(c) = d.try_completion() {
            d.apply(c, |_, _| {});
        }
        // Each partition's limit holds its records back, whatever the room.
        d.dispatch(|slot| if slot == 0 { 10 } else { 9 });
        let third = own_records(rx.try_recv().expect("a batch"));
        assert_eq!(handed(&third), vec![(0, 8), (0, 9), (1, 8)]);
        assert_eq!(d.in_flight(), 3);
        StreamRecord::ack_all(third);
    }

    #[test]
    fn an_ordered_stream_lets_a_partition_s_run_out_one_record_per_ack_without_the_engine() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut d = Dispatcher::new(DispatchMode::PartitionOrdered, Sink::Stream(tx));
        push_two_partitions(&mut d);
        d.dispatch(|_| i64::MAX);
        // One message: a run of each partition, each one hand-out.
        assert_eq!(d.in_flight(), 2);
        let mut received = Received::default();
        let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
        let mut next = |received: &mut Received| match received.poll_next(&mut rx, &mut cx) {
            Poll::Ready(r) => r,
            Poll::Pending => None,
        };
        let first = next(&mut received).expect("partition 0's first record");
        let other = next(&mut received).expect("partition 1's first record");
        assert_eq!(
            [
                (first.partition(), first.offset()),
                (other.partition(), other.offset())
            ],
            [(0, 0), (1, 0)]
        );
        // Each partition has its one record out: nothing more until one is acked.
        assert!(next(&mut received).is_none());
        other.ack();
        let mut seen = vec![(1, 0)];
        // One poll reports every ack, whichever run's record it lets out.
        let again = next(&mut received).expect("partition 1's next record");
        assert_eq!((again.partition(), again.offset()), (1, 1));
        let c = d.try_completion().expect("partition 1's ack");
        assert!(
            matches!(&c.outcome, Outcome::Processed { offsets, ends: false } if offsets == &[0]),
            "{c:?}"
        );
        d.apply(c, |_, _| {});
        seen.push((1, 1));
        again.ack();
        // Partition 1 runs to its end without a dispatch; partition 0 stays held by its record.
        while let Some(r) = next(&mut received) {
            seen.push((r.partition(), r.offset()));
            r.ack();
        }
        assert_eq!(seen, (0..12).map(|o| (1, o)).collect::<Vec<_>>());
        let mut processed = Vec::new();
        while let Some(c) = d.try_completion() {
            d.apply(c, |slot, offset| processed.push((slot, offset)));
        }
        assert_eq!(processed, (1..12).map(|o| (1, o)).collect::<Vec<_>>());
        assert_eq!(
            d.in_flight(),
            1,
            "partition 1's run ended with its last ack"
        );

        // Partition 0 is revoked while its record is out: acked, it is reported, and the rest of
        // the run goes back instead of out.
        d.stop(0);
        first.ack();
        assert!(next(&mut received).is_none());
        let mut processed = Vec::new();
        while let Some(c) = d.try_completion() {
            d.apply(c, |slot, offset| processed.push((slot, offset)));
        }
        assert_eq!(processed, vec![(0, 0)]);
        assert_eq!(d.in_flight(), 0, "the rest handed back ends the hand-out");
        assert_eq!(d.in_flight_of(0), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_record_dropped_by_a_panicking_task_is_delivered_again() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut d = Dispatcher::new(DispatchMode::PartitionOrdered, Sink::Stream(tx));
        push_two_partitions(&mut d);
        let seen: Attempts = Attempts::default();
        // The user's side: a task per record that acks it, except that the first delivery of
        // offset 3 of partition 0 panics while the task holds the record.
        let user = tokio::spawn({
            let seen = Arc::clone(&seen);
            async move {
                let mut tasks = JoinSet::new();
                let mut received = Received::default();
                while let Some(r) = std::future::poll_fn(|cx| received.poll_next(&mut rx, cx)).await
                {
                    {
                        let seen = Arc::clone(&seen);
                        tasks.spawn(async move {
                            let n = {
                                let mut seen = seen.lock().unwrap();
                                let n = seen.entry((r.partition(), r.offset())).or_insert(0);
                                *n += 1;
                                *n
                            };
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            if (r.partition(), r.offset(), n) == (0, 3, 1) {
                                panic!("user boom");
                            }
                            r.ack();
                        });
                    }
                }
                let mut panics = 0;
                while let Some(joined) = tasks.join_next().await {
                    panics += usize::from(joined.is_err_and(|e| e.is_panic()));
                }
                panics
            }
        });
        let processed = drive_all(&mut d).await;
        assert_eq!(d.in_flight(), 0);
        drop(d);
        assert_eq!(user.await.unwrap(), 1, "the user's task panicked once");
        let order: Vec<i64> = processed
            .iter()
            .filter(|(s, _)| *s == 0)
            .map(|(_, o)| *o)
            .collect();
        assert_eq!(
            order,
            (0..12).collect::<Vec<_>>(),
            "in order, offset 3 acked once"
        );
        assert_eq!(seen.lock().unwrap()[&(0, 3)], 2, "offset 3 delivered again");
    }
}
