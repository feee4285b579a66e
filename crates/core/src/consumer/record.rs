//! The records handed to handlers and streams.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::dispatcher::Completion;
use kafkit_resilience::TimestampType;

use crate::group::TopicPartition;
use crate::headers::Headers;
use crate::wire::records::FetchedRecord;

/// A consumed record. Cheap to clone (the data is shared); immutable.
#[derive(Clone)]
pub struct ConsumedRecord {
    chunk: Arc<RecordChunk>,
    index: u32,
}

/// The records of one partition from one fetch response, in one allocation: a consumed record is
/// its chunk and an index. Handing a record out costs a reference count, not an allocation built
/// on the engine's thread and freed on a handler's (cross-thread frees were the largest single cost
/// of the `KeyOrdered` path); the chunk goes when its last record does.
pub(crate) struct RecordChunk {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    /// Key, value and header bytes are slices of the fetch response they came in (no copy).
    pub(crate) records: Vec<FetchedRecord>,
    /// The buffer budget of the fetch response these records came in; given back when the last
    /// of them finishes (the fetcher's memory bound).
    pub(crate) _budget: Option<Arc<super::fetcher::BudgetShare>>,
    /// Share groups: how many times the group has delivered each record, this delivery included,
    /// in `records` order. Empty for a consumer group's records.
    pub(crate) delivery_counts: Vec<i16>,
}

impl fmt::Debug for ConsumedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumedRecord")
            .field("topic", &self.chunk.topic)
            .field("partition", &self.chunk.partition)
            .field("offset", &self.data().offset)
            .field("key", &self.key().map(String::from_utf8_lossy))
            .field("value_len", &self.value().map(<[u8]>::len))
            .finish_non_exhaustive()
    }
}

impl ConsumedRecord {
    /// Record `index` of `chunk`.
    pub(crate) fn of(chunk: &Arc<RecordChunk>, index: usize) -> Self {
        debug_assert!(index < chunk.records.len());
        Self {
            chunk: Arc::clone(chunk),
            index: u32::try_from(index).expect("a fetch response holds fewer than 2^32 records"),
        }
    }

    /// A record in a chunk of its own.
    #[cfg(test)]
    pub(crate) fn single(topic: Arc<str>, partition: i32, record: FetchedRecord) -> Self {
        let chunk = Arc::new(RecordChunk {
            topic,
            partition,
            records: vec![record],
            _budget: None,
            delivery_counts: Vec::new(),
        });
        Self::of(&chunk, 0)
    }

    fn data(&self) -> &FetchedRecord {
        &self.chunk.records[self.index as usize]
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.chunk.topic
    }

    /// The partition.
    pub fn partition(&self) -> i32 {
        self.chunk.partition
    }

    /// The record's offset in its partition.
    pub fn offset(&self) -> i64 {
        self.data().offset
    }

    /// The key, if any.
    pub fn key(&self) -> Option<&[u8]> {
        self.data().key.as_deref()
    }

    /// The value; `None` for a tombstone.
    pub fn value(&self) -> Option<&[u8]> {
        self.data().value.as_deref()
    }

    /// The key as the shared buffer it was fetched in: cloning it copies nothing, so a record
    /// produced with it (consume, transform, produce) reuses the fetched bytes.
    pub fn key_bytes(&self) -> Option<&Bytes> {
        self.data().key.as_ref()
    }

    /// The value as the shared buffer it was fetched in (see [`key_bytes`](Self::key_bytes)).
    pub fn value_bytes(&self) -> Option<&Bytes> {
        self.data().value.as_ref()
    }

    /// The headers, in the order written, with duplicates and null values.
    pub fn headers(&self) -> &Headers {
        &self.data().headers
    }

    /// The record's timestamp.
    pub fn timestamp(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.data().timestamp_ms).unwrap_or(DateTime::UNIX_EPOCH)
    }

    /// The record's W3C trace context: its last `traceparent` header, if that parses (an invalid
    /// one is ignored, as the specification asks). Parsed on each call.
    pub fn traceparent(&self) -> Option<crate::Traceparent> {
        self.data().headers.traceparent()
    }

    /// Whose time [`timestamp`](Self::timestamp) is: the producer's (`CreateTime`) or the
    /// broker's (`LogAppendTime`, set by the topic's `message.timestamp.type`).
    pub fn timestamp_type(&self) -> TimestampType {
        self.data().timestamp_type
    }

    /// How many times the share group has delivered this record, this delivery included (1 the
    /// first time; more after a release or a lock that ran out). `None` for records of a consumer
    /// group, which has no delivery count.
    pub fn delivery_count(&self) -> Option<i16> {
        self.chunk.delivery_counts.get(self.index as usize).copied()
    }
}

/// A record from [`Consumer::stream`](super::Consumer::stream), with the handle that says it is
/// processed. Derefs to [`ConsumedRecord`].
///
/// Call [`ack`](Self::ack) once the record is processed; only then may its offset be committed.
/// Dropping it without `ack` hands the record back: it is delivered again (at-least-once).
pub struct StreamRecord {
    pub(crate) record: ConsumedRecord,
    pub(crate) ack: Option<StreamAck>,
}

/// What the dispatcher hands the stream: a record of its own (`Unordered`), or an ordered run
/// whose records the stream lets out one at a time ([`RunCursor`]).
pub(crate) enum StreamItem {
    Record(StreamRecord),
    Run(RecordRun),
}

impl fmt::Debug for StreamItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamItem::Record(r) => r.fmt(f),
            StreamItem::Run(r) => r.fmt(f),
        }
    }
}

/// The stream's side of its channel: what the dispatcher sent and the user has not taken yet.
#[derive(Debug)]
pub(crate) struct Received {
    /// Items of the last message, not looked at yet.
    items: std::vec::IntoIter<StreamItem>,
    /// The ordered runs received, each with at most one record out.
    runs: Vec<RunCursor>,
    /// Where the next look through `runs` starts, so runs take turns.
    next_run: usize,
}

impl Default for Received {
    fn default() -> Self {
        Self {
            items: Vec::new().into_iter(),
            runs: Vec::new(),
            next_run: 0,
        }
    }
}

impl Received {
    /// The next record: one received, else (once `rx` has nothing new) the next of a run whose
    /// record out was acked. `rx` is looked at before the runs, so a partition whose run ended
    /// gets its next run in while the others' runs go on. `None` once `rx` is closed (the engine
    /// is gone: nothing held can be committed any more).
    pub(crate) fn poll_next(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Vec<StreamItem>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<StreamRecord>> {
        loop {
            for item in self.items.by_ref() {
                match item {
                    StreamItem::Record(record) => return Poll::Ready(Some(record)),
                    StreamItem::Run(run) => self.runs.push(RunCursor::new(run)),
                }
            }
            match rx.poll_recv(cx) {
                Poll::Ready(Some(items)) => {
                    self.items = items.into_iter();
                    continue;
                }
                Poll::Ready(None) => {
                    self.runs.clear();
                    return Poll::Ready(None);
                }
                Poll::Pending => {}
            }
            return match self.poll_runs(cx) {
                Some(record) => Poll::Ready(Some(record)),
                None => Poll::Pending,
            };
        }
    }

    /// Settles every run (acks reported, stopped runs handed back, however many records the
    /// user takes meanwhile), then lets out the next record of a run whose record out was acked,
    /// the runs taking turns; forgets runs that ended. `None` while every run's record is out
    /// (each wakes the stream when settled).
    fn poll_runs(&mut self, cx: &mut Context<'_>) -> Option<StreamRecord> {
        let n = self.runs.len();
        let mut chosen = None;
        let mut any_done = false;
        for step in 0..n {
            let at = (self.next_run + step) % n;
            match self.runs[at].poll_settle(cx) {
                Settled::Ready => {
                    chosen.get_or_insert(at);
                }
                Settled::Done => any_done = true,
                Settled::Out => {}
            }
        }
        let record = chosen.map(|at| {
            self.next_run = at + 1;
            self.runs[at].take_next()
        });
        if any_done {
            self.runs.retain(|run| !run.is_done());
        }
        record
    }

    /// Reports the runs' acked records, then hands back everything else held.
    pub(crate) fn close(mut self) {
        for run in &mut self.runs {
            run.report_acked();
        }
    }
}

/// Whom a stream record's ack (or drop) tells.
pub(crate) enum StreamAck {
    /// The dispatcher: the record is a hand-out of its own (`Unordered`).
    Own(AckHandle),
    /// The stream: the record is the one out of an ordered run the stream holds ([`RunCursor`]).
    Run(Arc<RunSignal>),
}

/// What became of the record a [`RunCursor`] has out; wakes the stream when it is settled.
#[derive(Debug, Default)]
pub(crate) struct RunSignal {
    state: AtomicU8,
    waker: futures::task::AtomicWaker,
}

const OUT: u8 = 0;
const ACKED: u8 = 1;
const DROPPED: u8 = 2;

impl RunSignal {
    fn settle(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.waker.wake();
    }

    /// `Ready(true)` once acked, `Ready(false)` once dropped unacked.
    fn poll_settled(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let settled = |state| match state {
            ACKED => Poll::Ready(true),
            DROPPED => Poll::Ready(false),
            _ => Poll::Pending,
        };
        if let Poll::Ready(acked) = settled(self.state.load(Ordering::Acquire)) {
            return Poll::Ready(acked);
        }
        self.waker.register(cx.waker());
        settled(self.state.load(Ordering::Acquire))
    }
}

/// An ordered run (`PartitionOrdered`: a partition's next records; `KeyOrdered`: a key's) handed
/// to the stream as one hand-out. The stream lets its records out one at a time, each once the one
/// before it is acked, so a partition (or key) still has one record out, and reports each ack to
/// the dispatcher itself: no round trip through the engine between a partition's records.
///
/// - An acked record is reported when the stream is next polled (or shut down).
/// - A record dropped unacked hands the run back from that record on: delivered again.
/// - Once the partition's tenure stops (revoked, lost, shutting down), the run's records not yet
///   out are handed back instead of going out.
#[derive(Debug)]
pub(crate) struct RunCursor {
    /// What is left of the run, the record out (if any) first.
    run: Option<RecordRun>,
    out: Option<Arc<RunSignal>>,
    /// The settled record's signal, for the next record out.
    spare: Option<Arc<RunSignal>>,
}

impl RunCursor {
    pub(crate) fn new(run: RecordRun) -> Self {
        Self {
            run: Some(run),
            out: None,
            spare: None,
        }
    }

    /// Settles the record out if it was acked (reported) or dropped (the run handed back from
    /// it), and hands back the rest of a run whose tenure stopped; registers `cx` to be woken when
    /// the record out is settled.
    pub(crate) fn poll_settle(&mut self, cx: &mut Context<'_>) -> Settled {
        if let Some(signal) = &self.out {
            let Poll::Ready(acked) = signal.poll_settled(cx) else {
                return Settled::Out;
            };
            self.spare = self.out.take();
            self.settle_run(acked);
        }
        match &self.run {
            None => Settled::Done,
            Some(run) if run.stopped() => {
                // Dropping it hands back what it holds.
                self.run = None;
                Settled::Done
            }
            Some(_) => Settled::Ready,
        }
    }

    /// Lets the run's next record out; only after [`poll_settle`](Self::poll_settle) said
    /// [`Settled::Ready`].
    pub(crate) fn take_next(&mut self) -> StreamRecord {
        let run = self.run.as_ref().expect("a settled run with records");
        // The signal of the record before is reused once nothing else holds it.
        let signal = match self.spare.take() {
            Some(s) if Arc::strong_count(&s) == 1 => {
                s.state.store(OUT, Ordering::Relaxed);
                s
            }
            _ => Arc::default(),
        };
        self.out = Some(Arc::clone(&signal));
        StreamRecord {
            record: run.records()[0].clone(),
            ack: Some(StreamAck::Run(signal)),
        }
    }

    /// Whether the run is over (every record reported or handed back).
    pub(crate) fn is_done(&self) -> bool {
        self.run.is_none()
    }

    /// Reports the record out if it was acked (before the cursor is dropped at shutdown, so an
    /// acked record is not handed back).
    pub(crate) fn report_acked(&mut self) {
        if self
            .out
            .as_ref()
            .is_some_and(|s| s.state.load(Ordering::Acquire) == ACKED)
        {
            self.out = None;
            self.settle_run(true);
        }
    }

    /// The record out was acked (reported; the rest of the run kept) or dropped (the run handed
    /// back, that record first).
    fn settle_run(&mut self, acked: bool) {
        let run = self.run.take().expect("a run while a record is out");
        if acked {
            self.run = run.ack_front(1);
        }
    }
}

/// What [`RunCursor::poll_settle`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Its record is out, not yet acked.
    Out,
    /// Its next record may go out.
    Ready,
    /// The run is over.
    Done,
}

pub(crate) struct AckHandle {
    pub(crate) slot: usize,
    pub(crate) epoch: u64,
    pub(crate) key: u64,
    pub(crate) done: mpsc::UnboundedSender<Completion>,
}

impl AckHandle {
    /// Tells the dispatcher how the hand-out (or part of it) ended.
    fn send(&self, outcome: super::dispatcher::Outcome) {
        let _ = self.done.send(Completion {
            slot: self.slot,
            epoch: self.epoch,
            key: self.key,
            outcome,
        });
    }
}

impl fmt::Debug for StreamRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.record.fmt(f)
    }
}

impl std::ops::Deref for StreamRecord {
    type Target = ConsumedRecord;
    fn deref(&self) -> &ConsumedRecord {
        &self.record
    }
}

impl StreamRecord {
    /// The record is processed: its offset may be committed once every earlier one is too.
    pub fn ack(mut self) {
        match self.ack.take() {
            Some(StreamAck::Own(h)) => {
                h.send(super::dispatcher::Outcome::Done(self.record.offset()))
            }
            Some(StreamAck::Run(signal)) => signal.settle(ACKED),
            None => {}
        }
    }

    /// Acks every record of `records`, as [`ack`](Self::ack) on each would, in one message per
    /// partition instead of one per record: the way to ack a batch the caller processed together
    /// (say, lines written and flushed at once).
    pub fn ack_all(records: impl IntoIterator<Item = StreamRecord>) {
        // Records of one partition's tenure (and key) end up in one completion; a batch rarely
        // spans more than a few, so a list beats a map.
        let mut groups: Vec<(AckHandle, Vec<i64>)> = Vec::new();
        for mut record in records {
            let h = match record.ack.take() {
                Some(StreamAck::Own(h)) => h,
                Some(StreamAck::Run(signal)) => {
                    signal.settle(ACKED);
                    continue;
                }
                None => continue,
            };
            let offset = record.record.offset();
            match groups.iter_mut().find(|(g, _)| {
                (g.slot, g.epoch, g.key) == (h.slot, h.epoch, h.key) && g.done.same_channel(&h.done)
            }) {
                Some((_, offsets)) => offsets.push(offset),
                None => groups.push((h, vec![offset])),
            }
        }
        for (h, offsets) in groups {
            h.send(super::dispatcher::Outcome::ProcessedEach(offsets));
        }
    }

    /// The record as plain data, keeping the ack obligation with `self`.
    pub fn record(&self) -> &ConsumedRecord {
        &self.record
    }
}

impl Drop for StreamRecord {
    fn drop(&mut self) {
        match self.ack.take() {
            Some(StreamAck::Own(h)) => h.send(super::dispatcher::Outcome::Returned(vec![
                self.record.clone(),
            ])),
            Some(StreamAck::Run(signal)) => signal.settle(DROPPED),
            None => {}
        }
    }
}

/// Consecutive records of one partition (`PartitionOrdered`) or of one key of it (`KeyOrdered`)
/// handed out as one unit, to the exactly-once transform (`Sink::Runs`, always `PartitionOrdered`)
/// or to an ordered stream ([`RunCursor`]): the next records in offset order, with no record of the
/// partition (key) between them, and no other record of it out while the run is. Its records
/// before the first were all finished (acked) or are in it: a hand-back puts them at the front of
/// the queue, so they come first in the next run.
///
/// [`ack_front`](Self::ack_front) finishes its first records (the rest stay out, in the same
/// hand-out); dropping it hands back what it still holds (delivered again unless its tenure
/// stopped). It is never empty.
pub(crate) struct RecordRun {
    /// The records not yet acked, in offset order.
    records: Vec<ConsumedRecord>,
    /// Taken when the last record is acked: the hand-out has ended.
    ack: Option<AckHandle>,
    /// The tenure's stop flag, set by the dispatcher when the partition is being revoked, is lost,
    /// the consumer shuts down, or a newer tenure opened.
    stop: Arc<AtomicBool>,
}

impl fmt::Debug for RecordRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordRun")
            .field("topic", &self.records[0].topic())
            .field("partition", &self.records[0].partition())
            .field("first", &self.first_offset())
            .field("last", &self.last_offset())
            .finish()
    }
}

impl RecordRun {
    /// A run of `records` (not empty, in offset order), one hand-out of `ack`'s tenure.
    pub(crate) fn new(records: Vec<ConsumedRecord>, ack: AckHandle, stop: Arc<AtomicBool>) -> Self {
        assert!(!records.is_empty(), "a run holds at least one record");
        Self {
            records,
            ack: Some(ack),
            stop,
        }
    }

    /// The records still held, in offset order.
    pub(crate) fn records(&self) -> &[ConsumedRecord] {
        &self.records
    }

    /// The run's partition.
    pub(crate) fn partition(&self) -> TopicPartition {
        let first = &self.records[0];
        TopicPartition::new(first.topic(), first.partition())
    }

    /// The offset of the first record held.
    pub(crate) fn first_offset(&self) -> i64 {
        self.records[0].offset()
    }

    /// The offset of the last record held.
    pub(crate) fn last_offset(&self) -> i64 {
        self.records[self.records.len() - 1].offset()
    }

    /// Whether the partition's tenure stopped (revoked, lost, shutting down): its records must
    /// not be committed, only handed back.
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// The first `n` records are processed (their offsets may be committed). Returns the rest, in
    /// the same hand-out, or `None` when nothing is left and the hand-out ended.
    pub(crate) fn ack_front(mut self, n: usize) -> Option<Self> {
        let rest = self.records.split_off(n.min(self.records.len()));
        let ends = rest.is_empty();
        if let Some(h) = &self.ack
            && !self.records.is_empty()
        {
            h.send(super::dispatcher::Outcome::Processed {
                offsets: self.records.iter().map(ConsumedRecord::offset).collect(),
                ends,
            });
        }
        self.records = rest;
        if ends {
            self.ack = None;
            return None;
        }
        Some(self)
    }

    /// Every record is processed; the hand-out ends.
    pub(crate) fn ack(self) {
        let n = self.records.len();
        let rest = self.ack_front(n);
        debug_assert!(rest.is_none());
    }
}

impl Drop for RecordRun {
    fn drop(&mut self) {
        if let Some(h) = self.ack.take() {
            h.send(super::dispatcher::Outcome::Returned(std::mem::take(
                &mut self.records,
            )));
        }
    }
}
