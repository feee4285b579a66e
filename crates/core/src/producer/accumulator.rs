//! The accumulator: each partition's queue of record batches, and the idempotence bookkeeping
//! (sequence numbers, the producer id and epoch they were assigned under). Pure logic, no I/O: the
//! send path appends, a broker's sender drains the ready batches of the partitions that broker
//! leads, and gives each back with its outcome.
//!
//! A partition's queue holds, front to back: batches that came back for a retry (in sequence
//! order), then batches never sent, the last of which may still be open for records. Rules:
//! - **Ready.** The front batch goes when it is full (another batch follows it), when it has
//!   lingered `linger.ms`, when a flush asked for it, or when it is a retry whose backoff passed.
//! - **Sequences** are assigned when a batch is first drained, from the partition's next sequence
//!   under the current producer id and epoch; a retried batch keeps its sequence (and its bytes).
//! - **Order.** Up to `max.in.flight.requests.per.connection` batches of a partition are in flight;
//!   a batch that came back for a retry is sent alone (nothing of its partition in flight) and
//!   nothing behind it goes before it, as the Java producer does.
//! - **Epoch bump** (KIP-360). After OUT_OF_ORDER_SEQUENCE_NUMBER or UNKNOWN_PRODUCER_ID on the
//!   batch the broker should take next, or after a batch with a sequence failed for good (a gap),
//!   the producer asks for a new epoch. A partition moves to the new epoch once nothing of it is in
//!   flight: its queued batches that already had sequences get new ones from 0, in order.
//! - **Transactions.** A transactional producer's batches carry the transactional flag. Under
//!   transaction version 1 a partition's batches stay queued until the partition is added to the
//!   open transaction (AddPartitionsToTxn, which the router sends for [`Accumulator::partitions_to_add`]);
//!   under version 2 the ProduceRequest adds it. A batch that fails in a transaction is remembered
//!   (the transaction can no longer commit) instead of bumping the epoch: epochs of a transactional
//!   producer move only through the transaction coordinator (`transaction`).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use kafkit_resilience::BackoffPolicy;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::Error;
use crate::group::TopicPartition;
use crate::headers::Headers;
use crate::wire::records::{BatchBuilder, Codec, Stamp, restamp};

/// A batch's outcome, shared by the futures of its records: one allocation per batch rather than
/// a channel per record (the Java producer's `ProduceRequestResult` likewise). Set once, when the
/// batch is written or fails, and at the latest when the batch is dropped (the producer closed):
/// no record's future waits on a batch that no longer exists.
#[derive(Debug, Default)]
pub(super) struct BatchOutcome {
    /// The batch's base offset (-1: unknown), or why it was not written.
    result: OnceLock<Result<i64, Error>>,
    done: Notify,
}

impl BatchOutcome {
    fn set(&self, result: Result<i64, Error>) {
        if self.result.set(result).is_ok() {
            self.done.notify_waiters();
        }
    }
}

/// One record's outcome: its batch's, at its index in the batch.
#[derive(Debug)]
pub(super) struct RecordOutcome {
    batch: Arc<BatchOutcome>,
    index: u32,
}

impl RecordOutcome {
    /// The record's offset (-1: unknown) or error, once its batch has an outcome.
    pub(super) fn get(&self) -> Option<Result<i64, Error>> {
        self.batch.result.get().map(|result| match result {
            Ok(base) if *base >= 0 => Ok(base + i64::from(self.index)),
            Ok(_) => Ok(-1),
            Err(error) => Err(error.clone()),
        })
    }

    /// Waits for the record's outcome.
    pub(super) async fn wait(&self) -> Result<i64, Error> {
        loop {
            if let Some(result) = self.get() {
                return result;
            }
            let notified = self.batch.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(result) = self.get() {
                return result;
            }
            notified.await;
        }
    }
}

/// A producer id and epoch from InitProducerId.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProducerIdEpoch {
    pub(super) id: i64,
    pub(super) epoch: i16,
}

/// The settings the accumulator applies.
#[derive(Debug, Clone)]
pub(super) struct Limits {
    /// `batch.size`: the most bytes of one batch, uncompressed.
    pub(super) batch_size: usize,
    /// `linger.ms`.
    pub(super) linger: Duration,
    /// `max.in.flight.requests.per.connection`, also the most batches of one partition in flight.
    pub(super) max_in_flight: usize,
    /// `retries`: how many times a batch is sent again after a retriable error.
    pub(super) retries: u32,
    /// `delivery.timeout.ms`, from a batch's first record.
    pub(super) delivery_timeout: Duration,
    /// `retry.backoff.ms` .. `retry.backoff.max.ms`.
    pub(super) backoff: BackoffPolicy,
    /// `compression.type`.
    pub(super) codec: Codec,
    /// `enable.idempotence`.
    pub(super) idempotent: bool,
    /// A `transactional.id` is set (implies `idempotent`).
    pub(super) transactional: bool,
}

/// One batch of one partition.
#[derive(Debug)]
pub(super) struct Batch {
    /// Creation order, for flushes.
    id: u64,
    body: Body,
    /// Records in it.
    records: u32,
    /// Where its records' futures find its outcome.
    outcome: Arc<BatchOutcome>,
    /// Its records' bytes in `buffer.memory`, given back when the batch is done (written or
    /// failed), before its records' futures hear of it, so a finished send's bytes are free.
    memory: Option<OwnedSemaphorePermit>,
    created: Instant,
    /// No more records join: another batch follows it.
    full: bool,
    /// The sequence of its first record, once drained by an idempotent producer.
    sequence: Option<i32>,
    /// The producer id and epoch `sequence` belongs to.
    stamped: Option<ProducerIdEpoch>,
    /// Times it was sent.
    attempts: u32,
    /// A retry waits until then.
    retry_at: Option<Instant>,
}

/// A batch's records: being written until the batch is first drained, then encoded for good.
#[derive(Debug)]
enum Body {
    /// Records join it.
    Open(BatchBuilder),
    /// The encoded batch, kept for retries (restamped when the producer's epoch is bumped).
    Sealed(Bytes),
}

impl Batch {
    /// The bytes to send (empty while the batch is open: only drained batches are sent).
    pub(super) fn bytes(&self) -> Bytes {
        match &self.body {
            Body::Sealed(bytes) => bytes.clone(),
            Body::Open(_) => Bytes::new(),
        }
    }

    /// Whether records may still join it: not drained, and no batch after it.
    fn is_open(&self) -> bool {
        !self.full && matches!(self.body, Body::Open(_))
    }

    /// Records in it.
    pub(super) fn len(&self) -> usize {
        self.records as usize
    }

    fn fail(self, error: &Error) {
        self.settle(Err(error.clone()));
    }

    /// Frees the batch's memory, then gives its records their outcome.
    fn settle(mut self, result: Result<i64, Error>) {
        self.end(result);
    }

    /// Frees the memory and sets the outcome; only the first outcome set counts.
    fn end(&mut self, result: Result<i64, Error>) {
        drop(self.memory.take());
        self.outcome.set(result);
    }
}

impl Drop for Batch {
    /// A batch dropped without an outcome (the producer's tasks ended) fails its records.
    fn drop(&mut self) {
        self.end(Err(Error::Closed { what: "producer" }));
    }
}

/// How a sent batch ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Written at this base offset (-1: unknown, as for acks=0 or a duplicate older than the
    /// broker's cache).
    Written(i64),
    /// A retriable error; `leader_moved` when the partition's leader must be looked up again
    /// (NOT_LEADER_OR_FOLLOWER, a lost connection, ...).
    Retry { leader_moved: bool, reason: String },
    /// OUT_OF_ORDER_SEQUENCE_NUMBER or UNKNOWN_PRODUCER_ID.
    SequenceLost { reason: String },
    /// Not retriable: the records fail with this error.
    Fatal(Error),
}

/// One partition's state.
#[derive(Debug, Default)]
pub(super) struct PartitionQueue {
    /// The leader's node id, `None` while unknown.
    pub(super) leader: Option<i32>,
    /// The leader epoch the metadata gave with it.
    pub(super) leader_epoch: i32,
    queue: VecDeque<Batch>,
    /// Batches of this partition in flight.
    in_flight: usize,
    /// The sequence the next new batch gets.
    next_sequence: i32,
    /// The sequence of the oldest batch not acknowledged (the one the broker takes next).
    next_ack: i32,
    /// The producer id and epoch the sequences count under.
    stamped: Option<ProducerIdEpoch>,
    /// Whether a batch was acknowledged under `stamped`. Until then one batch at a time: a broker
    /// that holds no state for the producer takes any first sequence, so a pipelined second batch
    /// could be written ahead of a first that failed (NOT_LEADER_OR_FOLLOWER on a new partition).
    acked: bool,
}

impl PartitionQueue {
    /// When the front batch may be sent, by lingering alone (a full batch, a flushed one, or a
    /// retry whose backoff is over: a time already past); `None` while it must wait for what is
    /// in flight: a retry, and an idempotent partition's first batch under an epoch, go alone,
    /// and at most `max_in_flight` batches are out.
    fn sendable_at(
        &self,
        limits: &Limits,
        producer: Option<ProducerIdEpoch>,
        flush_below: u64,
    ) -> Option<Instant> {
        let front = self.queue.front()?;
        let first = limits.idempotent && (self.stamped != producer || !self.acked);
        if limits.idempotent && producer.is_none()
            || (front.attempts > 0 || first) && self.in_flight > 0
            || self.in_flight >= limits.max_in_flight
        {
            return None;
        }
        Some(if front.attempts > 0 {
            front.retry_at.unwrap_or(front.created)
        } else if front.full || front.id < flush_below {
            front.created
        } else {
            front.created + limits.linger
        })
    }

    /// Whether nothing is queued or in flight.
    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight == 0
    }

    /// Fails the queued batches (never in flight) older than `timeout`; returns whether one of
    /// them had a sequence (a gap), and keeps the first error in `failed`.
    fn expire(
        &mut self,
        tp: &TopicPartition,
        now: Instant,
        timeout: Duration,
        live: &mut BTreeSet<u64>,
        failed: &mut Option<Error>,
    ) -> bool {
        let mut gap = false;
        while let Some(front) = self.queue.front() {
            if now < front.created + timeout {
                break;
            }
            let batch = self.queue.pop_front().expect("a front batch");
            gap |= batch.sequence.is_some();
            live.remove(&batch.id);
            let error = Error::DeliveryTimeout {
                topic: tp.topic.clone(),
                partition: tp.partition,
                timeout,
            };
            batch.fail(&error);
            failed.get_or_insert(error);
        }
        gap
    }
}

/// What an append did: the record's outcome to come, and whom to wake.
#[derive(Debug)]
pub(super) struct Appended {
    /// A batch was started (the sender must set its linger timer) or one became full.
    pub(super) wake: bool,
    /// The partition's leader, if known.
    pub(super) leader: Option<i32>,
    pub(super) outcome: RecordOutcome,
}

/// Batches drained for one ProduceRequest, and when to look again.
#[derive(Debug, Default)]
pub(super) struct Drained {
    pub(super) batches: Vec<(TopicPartition, Batch)>,
    /// The earliest time a batch left behind becomes ready.
    pub(super) wake: Option<Instant>,
}

/// Every partition's batches. Lives under the producer's one lock.
#[derive(Debug)]
pub(super) struct Accumulator {
    limits: Limits,
    partitions: HashMap<TopicPartition, PartitionQueue>,
    /// The current producer id and epoch (idempotent producers; `None` until InitProducerId).
    producer: Option<ProducerIdEpoch>,
    /// An epoch bump is wanted.
    bump_wanted: bool,
    /// Some partition has no known leader: metadata should be looked up.
    refresh_wanted: bool,
    /// Ids of batches not finished yet, for flushes.
    live: BTreeSet<u64>,
    next_id: u64,
    /// Batches with ids below this are ready at once (a flush asked).
    flush_below: u64,
    /// Transaction version 2: produce requests add partitions to the transaction themselves.
    implicit_add: bool,
    /// Partitions added to the open transaction (version 1); drained only once in it.
    in_txn: std::collections::HashSet<TopicPartition>,
    /// The first failure of a batch in the open transaction: it can no longer commit.
    txn_failure: Option<Error>,
    /// Buffers of written batches, for new batches: reused memory, not fresh pages (the Java
    /// producer's buffer pool likewise). At most [`POOLED_BUFFERS`].
    pool: Vec<Vec<u8>>,
    /// Counts drains: each starts at the next partition in turn.
    drain_turn: usize,
}

/// The most buffers of written batches kept for new ones.
const POOLED_BUFFERS: usize = 16;

impl Accumulator {
    pub(super) fn new(limits: Limits) -> Self {
        Self {
            limits,
            partitions: HashMap::new(),
            producer: None,
            bump_wanted: false,
            refresh_wanted: false,
            live: BTreeSet::new(),
            next_id: 0,
            flush_below: 0,
            implicit_add: false,
            in_txn: std::collections::HashSet::new(),
            drain_turn: 0,
            txn_failure: None,
            pool: Vec::new(),
        }
    }

    /// Whether `tp`'s batches must wait for AddPartitionsToTxn.
    fn awaits_add(&self, tp: &TopicPartition) -> bool {
        self.limits.transactional && !self.implicit_add && !self.in_txn.contains(tp)
    }

    /// Sets how partitions join a transaction: implicitly with the ProduceRequest (transaction
    /// version 2), or by AddPartitionsToTxn first.
    pub(super) fn set_implicit_add(&mut self, implicit: bool) {
        self.implicit_add = implicit;
    }

    /// Partitions with queued batches that are not in the open transaction yet (version 1).
    pub(super) fn partitions_to_add(&self) -> Vec<TopicPartition> {
        let mut tps: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(tp, part)| !part.queue.is_empty() && self.awaits_add(tp))
            .map(|(tp, _)| tp.clone())
            .collect();
        tps.sort();
        tps
    }

    /// `tps` are in the open transaction: their batches may go.
    pub(super) fn partitions_added(&mut self, tps: &[TopicPartition]) {
        self.in_txn.extend(tps.iter().cloned());
    }

    /// Adding `tps` to the transaction failed for good: their queued batches fail with `error`.
    pub(super) fn fail_partitions(&mut self, tps: &[TopicPartition], error: &Error) {
        for tp in tps {
            if let Some(part) = self.partitions.get_mut(tp) {
                for batch in part.queue.drain(..) {
                    self.live.remove(&batch.id);
                    batch.fail(error);
                }
            }
        }
        self.txn_failure.get_or_insert_with(|| error.clone());
    }

    /// Fails every queued batch (none in flight) with `error`, as an abort does. Returns whether
    /// one had a sequence: the partition's sequences then have a gap, and a version-1 transaction
    /// needs a new epoch before the next one.
    pub(super) fn abort_unsent(&mut self, error: &Error) -> bool {
        let mut gap = false;
        for part in self.partitions.values_mut() {
            for batch in part.queue.drain(..) {
                gap |= batch.sequence.is_some();
                self.live.remove(&batch.id);
                batch.fail(error);
            }
        }
        gap
    }

    /// The first failure of a batch in the open transaction, taken.
    pub(super) fn take_txn_failure(&mut self) -> Option<Error> {
        self.txn_failure.take()
    }

    /// The transaction ended (committed or aborted): partitions must be added again, and whether
    /// an epoch bump was wanted (a sequence gap) is returned and cleared.
    pub(super) fn end_transaction(&mut self) -> bool {
        self.in_txn.clear();
        self.txn_failure = None;
        std::mem::take(&mut self.bump_wanted)
    }

    /// Records a failed batch of the open transaction.
    fn txn_failed(&mut self, error: &Error) {
        if self.limits.transactional {
            self.txn_failure.get_or_insert_with(|| error.clone());
        }
    }

    /// Appends a record to `tp`'s open batch, or a new batch when it would pass `batch.size`.
    /// `now` is read only when a batch starts (a clock read per record is a cost worth sparing).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn append(
        &mut self,
        tp: &TopicPartition,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &Headers,
        memory: OwnedSemaphorePermit,
        now: impl FnOnce() -> Instant,
    ) -> Appended {
        let batch_size = self.limits.batch_size;
        let part = match self.partitions.get_mut(tp) {
            Some(part) => part,
            None => {
                self.refresh_wanted = true;
                self.partitions.entry(tp.clone()).or_default()
            }
        };
        let mut wake = false;
        let open = part.queue.back_mut().filter(|b| b.is_open());
        let fits = open.as_ref().is_some_and(|b| match &b.body {
            Body::Open(builder) => {
                builder.count() == 0
                    || builder.size() + builder.growth(timestamp_ms, key, value, headers)
                        <= batch_size
            }
            Body::Sealed(_) => false,
        });
        let mut memory = Some(memory);
        if !fits {
            if let Some(b) = open {
                b.full = true;
            }
            let id = self.next_id;
            self.next_id += 1;
            self.live.insert(id);
            part.queue.push_back(Batch {
                id,
                body: Body::Open(match self.pool.pop() {
                    Some(buffer) => BatchBuilder::in_buffer(buffer),
                    None => BatchBuilder::with_capacity(batch_size.min(16 * 1024)),
                }),
                records: 0,
                outcome: Arc::default(),
                memory: memory.take(),
                created: now(),
                full: false,
                sequence: None,
                stamped: None,
                attempts: 0,
                retry_at: None,
            });
            wake = true;
        }
        let batch = part.queue.back_mut().expect("an open batch");
        let Body::Open(builder) = &mut batch.body else {
            unreachable!("the last batch is open: it was checked or just made")
        };
        builder.append(timestamp_ms, key, value, headers);
        if let (Some(held), Some(memory)) = (&mut batch.memory, memory) {
            held.merge(memory);
        }
        let outcome = RecordOutcome {
            batch: Arc::clone(&batch.outcome),
            index: batch.records,
        };
        batch.records += 1;
        let leader = part.leader;
        // The router adds a partition to the transaction before its sender may take it.
        let leader = leader.filter(|_| !(wake && self.awaits_add(tp)));
        Appended {
            wake,
            leader,
            outcome,
        }
    }

    /// Partitions with batches and no known leader.
    pub(super) fn unled_topics(&self) -> BTreeSet<String> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.leader.is_none() && !p.is_idle())
            .map(|(tp, _)| tp.topic.clone())
            .collect()
    }

    /// Fails the batches past the delivery timeout of partitions without a leader (no sender
    /// drains them meanwhile).
    pub(super) fn expire_unled(&mut self, now: Instant) {
        let timeout = self.limits.delivery_timeout;
        let mut failed = None;
        for (tp, part) in self.partitions.iter_mut() {
            if part.leader.is_none() {
                self.bump_wanted |= part.expire(tp, now, timeout, &mut self.live, &mut failed);
            }
        }
        if let Some(error) = failed {
            self.txn_failed(&error);
        }
    }

    /// Takes the wish for a metadata lookup.
    pub(super) fn take_refresh(&mut self) -> bool {
        std::mem::take(&mut self.refresh_wanted)
    }

    /// Whether an epoch bump (or a first producer id) is needed.
    pub(super) fn needs_producer_id(&self) -> bool {
        self.limits.idempotent
            && !self.limits.transactional
            && (self.producer.is_none() || self.bump_wanted)
    }

    /// The current producer id and epoch.
    pub(super) fn producer(&self) -> Option<ProducerIdEpoch> {
        self.producer
    }

    /// A producer id and epoch from InitProducerId: partitions move to it as their in-flight
    /// batches return.
    pub(super) fn set_producer(&mut self, producer: ProducerIdEpoch) {
        self.producer = Some(producer);
        self.bump_wanted = false;
    }

    /// Makes every batch that exists now ready; the returned id is what [`Self::oldest_live`] must
    /// pass for the flush to be over.
    pub(super) fn flush(&mut self) -> u64 {
        self.flush_below = self.next_id;
        self.next_id
    }

    /// The id of the oldest batch not finished (or the next id when none is).
    pub(super) fn oldest_live(&self) -> u64 {
        self.live.first().copied().unwrap_or(self.next_id)
    }

    /// Drains for the sender of `node`: at most one batch per partition it leads, in total at most
    /// `max_bytes` (at least one batch). Nothing is drained until one batch is ready (full,
    /// flushed, lingered, or a retry past its backoff). Then the ready batches go first, and the
    /// request's room left takes the front batches still lingering, as the Java client does: one
    /// request, not one per partition as each lingers in turn (with hundreds of partitions, the
    /// requests in flight would all carry a batch or two).
    ///
    /// Each drain starts at the next partition in turn, so that when the request's room is short
    /// (large records: a full batch fills a request) every partition gets its turn. Taking the
    /// lingering batches before the ready ones, or always starting at the same partition, leaves
    /// full batches queued behind a few partitions' small ones: the broker then writes many small
    /// batches, and each batch costs it more than its bytes do.
    ///
    /// Batches past their delivery timeout that are not in flight fail here.
    pub(super) fn drain(&mut self, node: i32, now: Instant, max_bytes: usize) -> Drained {
        let mut drained = Drained::default();
        let limits = &self.limits;
        let producer = self.producer;
        let flush_below = self.flush_below;
        let mut gap = false;
        let mut failed = None;
        let mut ready = Vec::new();
        let mut lingering = Vec::new();
        for (tp, part) in self.partitions.iter_mut() {
            if part.leader != Some(node) || part.queue.is_empty() {
                continue;
            }
            gap |= part.expire(
                tp,
                now,
                limits.delivery_timeout,
                &mut self.live,
                &mut failed,
            );
            let Some(front) = part.queue.front() else {
                continue;
            };
            if limits.transactional && !self.implicit_add && !self.in_txn.contains(tp) {
                // Not in the transaction yet: the router adds it, then wakes this sender.
                drained.wake =
                    earliest(drained.wake, Some(front.created + limits.delivery_timeout));
                continue;
            }
            let expiry = front.created + limits.delivery_timeout;
            drained.wake = earliest(drained.wake, Some(expiry));
            if limits.idempotent {
                let Some(current) = producer else { continue };
                if part.stamped != Some(current) {
                    if part.in_flight > 0 {
                        continue;
                    }
                    // The new epoch starts at sequence 0; batches that had sequences get new ones.
                    part.stamped = Some(current);
                    part.next_sequence = 0;
                    part.next_ack = 0;
                    part.acked = false;
                    for batch in part.queue.iter_mut() {
                        if batch.sequence.is_none() {
                            break;
                        }
                        batch.sequence = Some(part.next_sequence);
                        batch.stamped = Some(current);
                        part.next_sequence = next_sequence(part.next_sequence, batch.len());
                        if let Body::Sealed(sealed) = &batch.body {
                            let mut bytes = sealed.to_vec();
                            restamp(&mut bytes, stamp(batch, limits.transactional));
                            batch.body = Body::Sealed(Bytes::from(bytes));
                        }
                    }
                }
            }
            let Some(ready_at) = part.sendable_at(limits, producer, flush_below) else {
                continue;
            };
            if ready_at <= now {
                ready.push(tp.clone());
            } else {
                drained.wake = earliest(drained.wake, Some(ready_at));
                // A retry waits for its backoff, in any request.
                if part.queue.front().is_some_and(|b| b.attempts == 0) {
                    lingering.push(tp.clone());
                }
            }
        }
        if !ready.is_empty() {
            let turn = self.drain_turn;
            self.drain_turn = turn.wrapping_add(1);
            let len = ready.len();
            ready.rotate_left(turn % len);
            let len = lingering.len().max(1);
            lingering.rotate_left(turn % len);
        } else {
            lingering.clear();
        }
        let mut bytes = 0;
        for tp in ready.into_iter().chain(lingering) {
            let part = self.partitions.get_mut(&tp).expect("a partition just seen");
            let front = part.queue.front().expect("a front batch");
            let size = match &front.body {
                Body::Open(builder) => builder.size(),
                Body::Sealed(bytes) => bytes.len(),
            };
            if !drained.batches.is_empty() && bytes + size > max_bytes {
                drained.wake = Some(now);
                continue;
            }
            let mut batch = part.queue.pop_front().expect("a front batch");
            if matches!(batch.body, Body::Open(_)) {
                if limits.idempotent {
                    batch.sequence = Some(part.next_sequence);
                    batch.stamped = producer;
                    part.next_sequence = next_sequence(part.next_sequence, batch.len());
                }
                let stamp = stamp(&batch, limits.transactional);
                let Body::Open(builder) =
                    std::mem::replace(&mut batch.body, Body::Sealed(Bytes::new()))
                else {
                    unreachable!("matched above")
                };
                batch.body = Body::Sealed(Bytes::from(builder.finish(limits.codec, 0, stamp)));
            }
            batch.attempts += 1;
            bytes += size;
            part.in_flight += 1;
            drained.batches.push((tp, batch));
        }
        if gap {
            self.bump_wanted = true;
        }
        if let Some(error) = failed {
            self.txn_failed(&error);
        }
        drained
    }

    /// A drained batch is back with its outcome. Returns whether the partition's leader must be
    /// looked up again.
    pub(super) fn complete(
        &mut self,
        tp: &TopicPartition,
        mut batch: Batch,
        outcome: Outcome,
        now: Instant,
    ) -> bool {
        let limits = &self.limits;
        let part = self.partitions.entry(tp.clone()).or_default();
        part.in_flight = part.in_flight.saturating_sub(1);
        let current = batch.stamped.is_some() && batch.stamped == part.stamped;
        let (reason, leader_moved) = match outcome {
            Outcome::Written(base) => {
                if current && let Some(sequence) = batch.sequence {
                    part.next_ack = next_sequence(sequence, batch.len());
                    part.acked = true;
                }
                self.live.remove(&batch.id);
                // Sent and answered: nothing else holds its bytes any more.
                let written = match std::mem::replace(&mut batch.body, Body::Sealed(Bytes::new())) {
                    Body::Sealed(bytes) => Some(bytes.try_into_mut()),
                    Body::Open(_) => None,
                };
                batch.settle(Ok(base));
                if let Some(Ok(buffer)) = written
                    && self.pool.len() < POOLED_BUFFERS
                {
                    self.pool.push(buffer.into());
                }
                return false;
            }
            Outcome::Fatal(error) => {
                // Later batches of the partition now have a sequence gap: a new epoch resets them.
                self.bump_wanted |= batch.sequence.is_some();
                self.live.remove(&batch.id);
                batch.fail(&error);
                self.txn_failed(&error);
                return false;
            }
            Outcome::SequenceLost { reason } if limits.transactional => {
                // In a transaction the broker lost our sequence state: the transaction cannot
                // commit, and the abort gives a new epoch (as the Java client does).
                self.bump_wanted = true;
                self.live.remove(&batch.id);
                let error = Error::Produce {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    error: reason,
                    retriable: false,
                };
                batch.fail(&error);
                self.txn_failed(&error);
                return false;
            }
            Outcome::SequenceLost { reason } => {
                // Only the batch the broker should take next proves the broker lost our state;
                // one behind it follows a batch that is itself coming back.
                if current && batch.sequence == Some(part.next_ack) {
                    self.bump_wanted = true;
                }
                (reason, false)
            }
            Outcome::Retry {
                leader_moved,
                reason,
            } => (reason, leader_moved),
        };
        if now >= batch.created + limits.delivery_timeout || batch.attempts > limits.retries {
            self.bump_wanted |= batch.sequence.is_some();
            self.live.remove(&batch.id);
            let error = if batch.attempts > limits.retries {
                Error::Produce {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    error: format!("{reason} (after {} attempts)", batch.attempts),
                    retriable: true,
                }
            } else {
                Error::DeliveryTimeout {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    timeout: limits.delivery_timeout,
                }
            };
            batch.fail(&error);
            self.txn_failed(&error);
            return false;
        }
        let unit = jitter_unit(batch.id, batch.attempts);
        batch.retry_at = Some(now + limits.backoff.delay(batch.attempts - 1, unit));
        // Back in sequence order, ahead of every batch without a sequence.
        let at = part
            .queue
            .iter()
            .position(|b| b.attempts == 0 || b.sequence.is_none() || b.sequence > batch.sequence)
            .unwrap_or(part.queue.len());
        part.queue.insert(at, batch);
        if leader_moved {
            part.leader = None;
            self.refresh_wanted = true;
        }
        leader_moved
    }

    /// Sets `tp`'s leader from metadata, unless the metadata is older than what is known.
    /// Returns whether it changed.
    pub(super) fn set_leader(&mut self, tp: &TopicPartition, node: i32, epoch: i32) -> bool {
        let part = self.partitions.entry(tp.clone()).or_default();
        if epoch >= 0 && epoch < part.leader_epoch {
            return false;
        }
        let changed = part.leader != Some(node);
        part.leader = Some(node);
        part.leader_epoch = epoch;
        changed
    }

    /// The topics of every partition known.
    pub(super) fn topics(&self) -> BTreeSet<String> {
        self.partitions.keys().map(|tp| tp.topic.clone()).collect()
    }

    /// The leaders partitions have, for waking senders.
    pub(super) fn leaders(&self) -> BTreeSet<i32> {
        self.partitions.values().filter_map(|p| p.leader).collect()
    }
}

/// The stamp of a drained batch.
fn stamp(batch: &Batch, transactional: bool) -> Stamp {
    match (batch.stamped, batch.sequence) {
        (Some(p), Some(sequence)) => Stamp {
            producer_id: p.id,
            producer_epoch: p.epoch,
            base_sequence: sequence,
            transactional,
        },
        _ => Stamp::NONE,
    }
}

/// The sequence after `records` records from `sequence`: sequences wrap from `i32::MAX` to 0, as
/// the broker counts them.
fn next_sequence(sequence: i32, records: usize) -> i32 {
    ((i64::from(sequence) + records as i64) % (i64::from(i32::MAX) + 1)) as i32
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A jitter in [0, 1) from the standard library's per-process random hash keys.
fn jitter_unit(id: u64, attempt: u32) -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one((id, attempt));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::records::decode_records;

    const BATCH: usize = 1024;

    fn limits(idempotent: bool) -> Limits {
        Limits {
            batch_size: BATCH,
            linger: Duration::from_millis(5),
            max_in_flight: 5,
            retries: u32::MAX,
            delivery_timeout: Duration::from_secs(120),
            backoff: BackoffPolicy::new(
                Duration::from_millis(100),
                Duration::from_secs(1),
                2.0,
                0.0,
            )
            .unwrap(),
            codec: Codec::None,
            idempotent,
            transactional: false,
        }
    }

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new("t", partition)
    }

    /// A record's memory, from the tests' one buffer (a batch's permits must share a semaphore).
    fn memory() -> OwnedSemaphorePermit {
        static BUFFER: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
            std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(1 << 30)));
        Arc::clone(&BUFFER).try_acquire_owned().unwrap()
    }

    /// Appends `n` records of `size` value bytes to `tp`; returns their outcomes.
    fn append(
        acc: &mut Accumulator,
        tp: &TopicPartition,
        n: usize,
        size: usize,
        now: Instant,
    ) -> Vec<RecordOutcome> {
        (0..n)
            .map(|_| {
                let value = vec![b'v'; size];
                acc.append(tp, 0, None, Some(&value), &Headers::new(), memory(), || now)
                    .outcome
            })
            .collect()
    }

    /// (partition, base sequence, records) of each drained batch, read from its bytes.
    fn summary(drained: &Drained) -> Vec<(i32, i32, usize)> {
        let mut out: Vec<_> = drained
            .batches
            .iter()
            .map(|(tp, b)| {
                let bytes = b.bytes();
                let sequence = i32::from_be_bytes(bytes[53..57].try_into().unwrap());
                let decoded = decode_records(bytes, 0, &[]);
                assert_eq!(decoded.records.len(), b.len());
                (tp.partition, sequence, b.len())
            })
            .collect();
        out.sort();
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_waits_for_linger_unless_full() {
        let mut acc = Accumulator::new(limits(false));
        let now = Instant::now();
        acc.set_leader(&tp(0), 1, 0);
        // 100-byte values: about 110 bytes each, 8 fit in 1024 with the 61-byte header.
        let first = acc.append(
            &tp(0),
            0,
            None,
            Some(&[0; 100]),
            &Headers::new(),
            memory(),
            || now,
        );
        assert!(first.wake);
        assert_eq!(first.leader, Some(1));
        let drained = acc.drain(1, now, usize::MAX);
        assert!(drained.batches.is_empty(), "lingering");
        assert_eq!(drained.wake, Some(now + Duration::from_millis(5)));
        assert!(
            acc.drain(2, now, usize::MAX).batches.is_empty(),
            "another broker's"
        );

        let _rx = append(&mut acc, &tp(0), 20, 100, now);
        let drained = acc.drain(1, now, usize::MAX);
        // One batch per partition per request: the full one; never over batch.size.
        assert_eq!(drained.batches.len(), 1);
        assert!(drained.batches[0].1.bytes().len() <= BATCH);
        assert_eq!(drained.batches[0].1.len(), 8);
        // The next full batch is ready at once, the open one after lingering.
        assert_eq!(acc.drain(1, now, usize::MAX).batches[0].1.len(), 8);
        assert!(acc.drain(1, now, usize::MAX).batches.is_empty());
        let later = now + Duration::from_millis(5);
        let drained = acc.drain(1, later, usize::MAX);
        assert_eq!(drained.batches[0].1.len(), 5);
        let sent = 8 + 8 + 5;
        assert_eq!(sent, 21);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ready_batch_takes_the_lingering_batches_of_its_broker_along() {
        let mut acc = Accumulator::new(limits(false));
        let now = Instant::now();
        for p in 0..3 {
            acc.set_leader(&tp(p), if p == 2 { 2 } else { 1 }, 0);
            let _ = append(&mut acc, &tp(p), 1, 10, now);
        }
        // Nothing is ready: nothing goes, and the sender wakes when the first lingers out.
        let drained = acc.drain(1, now, usize::MAX);
        assert!(drained.batches.is_empty());
        assert_eq!(drained.wake, Some(now + Duration::from_millis(5)));
        // Partition 0 fills a batch: it goes at once, and partition 1's lingering one with it;
        // partition 2 belongs to another broker.
        let _ = append(&mut acc, &tp(0), 9, 100, now);
        let drained = acc.drain(1, now, usize::MAX);
        assert_eq!(summary(&drained), vec![(0, -1, 9), (1, -1, 1)]);
        assert!(
            acc.drain(2, now, usize::MAX).batches.is_empty(),
            "still lingering"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_request_carries_a_batch_of_every_partition_of_the_broker() {
        let mut acc = Accumulator::new(limits(false));
        let now = Instant::now();
        for p in 0..4 {
            acc.set_leader(&tp(p), if p == 3 { 2 } else { 1 }, 0);
            let _ = append(&mut acc, &tp(p), 1, 10, now);
        }
        let later = now + Duration::from_millis(5);
        let drained = acc.drain(1, later, usize::MAX);
        assert_eq!(summary(&drained), vec![(0, -1, 1), (1, -1, 1), (2, -1, 1)]);
        // The byte limit stops a request, but never before its first batch.
        let _ = append(&mut acc, &tp(0), 1, 10, later);
        let _ = append(&mut acc, &tp(1), 1, 10, later);
        let drained = acc.drain(1, later + Duration::from_millis(5), 1);
        assert_eq!(drained.batches.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn when_a_request_holds_one_batch_the_partitions_take_turns_and_full_batches_go_first() {
        let mut acc = Accumulator::new(limits(false));
        let now = Instant::now();
        for p in 0..3 {
            acc.set_leader(&tp(p), 1, 0);
        }
        // Partitions 0 and 1: two full batches (8 records) and an open one each; partition 2: one
        // record lingering, which fits in no request beside a full batch.
        let _ = append(&mut acc, &tp(0), 20, 100, now);
        let _ = append(&mut acc, &tp(1), 20, 100, now);
        let _ = append(&mut acc, &tp(2), 1, 100, now);
        let taken: Vec<Vec<(i32, i32, usize)>> =
            (0..4).map(|_| summary(&acc.drain(1, now, BATCH))).collect();
        for drained in &taken {
            assert_eq!(drained.len(), 1, "one full batch per request: {taken:?}");
            assert_eq!(
                drained[0].2, 8,
                "a full batch before a lingering one: {taken:?}"
            );
        }
        let partitions: Vec<i32> = taken.iter().map(|d| d[0].0).collect();
        assert_ne!(partitions[0], partitions[1], "turns: {partitions:?}");
        assert_ne!(partitions[2], partitions[3], "turns: {partitions:?}");
        assert!(
            acc.drain(1, now, BATCH).batches.is_empty(),
            "the rest lingers"
        );
        let later = now + Duration::from_millis(5);
        let mut rest: Vec<(i32, i32, usize)> = (0..3)
            .flat_map(|_| summary(&acc.drain(1, later, BATCH)))
            .collect();
        rest.sort();
        assert_eq!(rest, vec![(0, -1, 4), (1, -1, 4), (2, -1, 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn sequences_follow_records_and_a_retry_keeps_its_own_and_goes_first_alone() {
        let mut acc = Accumulator::new(limits(true));
        let now = Instant::now();
        acc.set_leader(&tp(0), 1, 0);
        let rx = append(&mut acc, &tp(0), 32, 100, now);
        assert!(
            acc.drain(1, now, usize::MAX).batches.is_empty(),
            "no producer id yet"
        );
        assert!(acc.needs_producer_id());
        acc.set_producer(ProducerIdEpoch { id: 7, epoch: 0 });
        assert!(!acc.needs_producer_id());

        // The first batch goes alone until it is acknowledged.
        let later = now + Duration::from_millis(5);
        let mut d = acc.drain(1, later, usize::MAX);
        assert_eq!(summary(&d), vec![(0, 0, 8)]);
        assert!(
            acc.drain(1, later, usize::MAX).batches.is_empty(),
            "first alone"
        );
        acc.complete(
            &tp(0),
            d.batches.pop().unwrap().1,
            Outcome::Written(100),
            later,
        );
        // Then three full batches of 8, one per request, pipelined.
        let mut flying = Vec::new();
        for want in [8, 16, 24] {
            let mut d = acc.drain(1, later, usize::MAX);
            assert_eq!(summary(&d), vec![(0, want, 8)]);
            flying.push(d.batches.pop().unwrap().1);
        }
        let third = flying.pop().unwrap();
        let second = flying.pop().unwrap();
        let first = flying.pop().unwrap();
        // The first fails with NOT_LEADER; the second, behind it, with OUT_OF_ORDER: both retry
        // with their sequences, the OUT_OF_ORDER of a non-head batch bumps nothing.
        let retry = || Outcome::Retry {
            leader_moved: false,
            reason: "NotLeader".into(),
        };
        assert!(!acc.complete(&tp(0), first, retry(), later));
        acc.complete(
            &tp(0),
            second,
            Outcome::SequenceLost {
                reason: "OutOfOrder".into(),
            },
            later,
        );
        assert!(!acc.needs_producer_id());
        // While the third is in flight, the retry waits (it goes alone).
        let after_backoff = later + Duration::from_secs(1);
        assert!(acc.drain(1, after_backoff, usize::MAX).batches.is_empty());
        acc.complete(&tp(0), third, retry(), later);
        for want in [8, 16, 24] {
            let mut d = acc.drain(1, after_backoff, usize::MAX);
            assert_eq!(summary(&d), vec![(0, want, 8)], "in sequence order");
            assert!(
                acc.drain(1, after_backoff, usize::MAX).batches.is_empty(),
                "one at a time"
            );
            let batch = d.batches.pop().unwrap().1;
            acc.complete(
                &tp(0),
                batch,
                Outcome::Written(100 + want as i64),
                after_backoff,
            );
        }
        for (i, outcome) in rx.into_iter().enumerate() {
            assert_eq!(outcome.get().unwrap().unwrap(), 100 + i as i64);
        }
        assert_eq!(acc.oldest_live(), acc.next_id);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_sequence_at_the_head_bumps_the_epoch_and_restarts_sequences_at_zero() {
        let mut acc = Accumulator::new(limits(true));
        let now = Instant::now();
        acc.set_producer(ProducerIdEpoch { id: 7, epoch: 0 });
        acc.set_leader(&tp(0), 1, 0);
        acc.set_leader(&tp(1), 1, 0);
        let _rx = append(&mut acc, &tp(0), 24, 100, now);
        let _rx1 = append(&mut acc, &tp(1), 1, 100, now);
        let later = now + Duration::from_millis(5);
        let mut d = acc.drain(1, later, usize::MAX);
        assert_eq!(summary(&d), vec![(0, 0, 8), (1, 0, 1)]);
        for (tp, batch) in d.batches.drain(..) {
            acc.complete(&tp, batch, Outcome::Written(0), later);
        }
        let mut d = acc.drain(1, later, usize::MAX);
        assert_eq!(summary(&d), vec![(0, 8, 8)]);
        let (_, head) = d.batches.pop().unwrap();
        let mut d = acc.drain(1, later, usize::MAX);
        assert_eq!(summary(&d), vec![(0, 16, 8)]);
        let (_, second) = d.batches.pop().unwrap();
        acc.complete(
            &tp(0),
            head,
            Outcome::SequenceLost {
                reason: "UnknownProducerId".into(),
            },
            later,
        );
        assert!(acc.needs_producer_id(), "the head batch lost its sequence");
        acc.set_producer(ProducerIdEpoch { id: 7, epoch: 1 });
        let after = later + Duration::from_secs(1);
        assert!(
            acc.drain(1, after, usize::MAX).batches.is_empty(),
            "waits for the batch in flight"
        );
        acc.complete(
            &tp(0),
            second,
            Outcome::SequenceLost {
                reason: "OutOfOrder".into(),
            },
            later,
        );
        // Both batches again from sequence 0 under epoch 1, in order, one at a time.
        let d = acc.drain(1, after, usize::MAX);
        assert_eq!(summary(&d), vec![(0, 0, 8)]);
        let bytes = d.batches[0].1.bytes();
        assert_eq!(
            i16::from_be_bytes(bytes[51..53].try_into().unwrap()),
            1,
            "epoch 1"
        );
        // Partition 1 moves to the new epoch at its next batch.
        let _rx1 = append(&mut acc, &tp(1), 1, 100, after);
        let d1 = acc.drain(1, after + Duration::from_millis(5), usize::MAX);
        assert_eq!(summary(&d1), vec![(1, 0, 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn batches_past_the_delivery_timeout_fail_and_a_flush_makes_batches_ready() {
        let mut acc = Accumulator::new(Limits {
            delivery_timeout: Duration::from_secs(1),
            ..limits(false)
        });
        let now = Instant::now();
        let rx = append(&mut acc, &tp(0), 1, 10, now);
        assert_eq!(acc.unled_topics(), BTreeSet::from(["t".to_owned()]));
        assert!(acc.take_refresh());
        let unled = append(&mut acc, &tp(1), 1, 10, now);
        acc.expire_unled(now + Duration::from_millis(999));
        assert!(unled[0].get().is_none(), "not yet");
        acc.expire_unled(now + Duration::from_secs(1));
        assert!(matches!(
            unled[0].get().unwrap(),
            Err(Error::DeliveryTimeout { partition: 1, .. })
        ));
        acc.set_leader(&tp(0), 1, 3);
        assert!(!acc.set_leader(&tp(0), 2, 2), "older metadata is ignored");
        let d = acc.drain(1, now + Duration::from_secs(2), usize::MAX);
        assert!(d.batches.is_empty());
        assert!(matches!(
            rx[0].get().unwrap(),
            Err(Error::DeliveryTimeout { .. })
        ));

        let _rx = append(&mut acc, &tp(0), 1, 10, now + Duration::from_secs(2));
        let until = acc.flush();
        assert!(acc.oldest_live() < until);
        let mut d = acc.drain(1, now + Duration::from_secs(2), usize::MAX);
        assert_eq!(d.batches.len(), 1, "ready without lingering");
        let (tp0, batch) = d.batches.pop().unwrap();
        acc.complete(
            &tp0,
            batch,
            Outcome::Written(5),
            now + Duration::from_secs(2),
        );
        assert!(acc.oldest_live() >= until);
    }

    #[tokio::test(start_paused = true)]
    async fn a_transactional_partition_waits_for_its_add_and_an_abort_drops_what_is_queued() {
        let mut acc = Accumulator::new(Limits {
            transactional: true,
            ..limits(true)
        });
        acc.set_producer(ProducerIdEpoch { id: 7, epoch: 0 });
        let now = Instant::now();
        for p in 0..2 {
            acc.set_leader(&tp(p), 1, 0);
        }
        let appended = acc.append(
            &tp(0),
            0,
            None,
            Some(b"v"),
            &Headers::new(),
            memory(),
            || now,
        );
        assert_eq!(
            appended.leader, None,
            "the router is woken to add the partition"
        );
        let p1 = append(&mut acc, &tp(1), 1, 10, now);
        acc.flush();
        assert!(acc.drain(1, now, usize::MAX).batches.is_empty());
        assert_eq!(acc.partitions_to_add(), vec![tp(0), tp(1)]);
        acc.partitions_added(&[tp(0)]);
        let drained = acc.drain(1, now, usize::MAX);
        assert_eq!(summary(&drained), vec![(0, 0, 1)]);
        let attributes =
            i16::from_be_bytes(drained.batches[0].1.bytes()[21..23].try_into().unwrap());
        assert_eq!(attributes & 0x10, 0x10, "the batch is transactional");
        assert_eq!(acc.partitions_to_add(), vec![tp(1)]);
        // Abort: the queued batch of tp1 fails, the one in flight is left to finish.
        let error = Error::Closed { what: "test" };
        assert!(!acc.abort_unsent(&error));
        assert!(matches!(p1[0].get(), Some(Err(Error::Closed { .. }))));
        assert!(acc.partitions_to_add().is_empty());
        // A failed batch of the transaction is remembered until the transaction ends.
        for (tp, batch) in drained.batches {
            acc.complete(&tp, batch, Outcome::Fatal(error.clone()), now);
        }
        assert!(acc.take_txn_failure().is_some());
        assert!(
            acc.end_transaction(),
            "the failed batch had a sequence: a new epoch is wanted"
        );
        assert!(
            !acc.needs_producer_id(),
            "the transaction coordinator gives epochs, not the router"
        );
        assert_eq!(acc.partitions_to_add(), Vec::<TopicPartition>::new());
    }

    #[test]
    fn sequences_wrap_as_the_broker_counts_them() {
        assert_eq!(next_sequence(0, 5), 5);
        assert_eq!(next_sequence(i32::MAX - 1, 1), i32::MAX);
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert_eq!(next_sequence(i32::MAX - 2, 5), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_holds_its_records_memory_until_it_is_done_and_a_dropped_batch_fails_them() {
        let buffer = Arc::new(tokio::sync::Semaphore::new(10));
        let mut acc = Accumulator::new(limits(false));
        acc.set_leader(&tp(0), 1, 0);
        let now = Instant::now();
        let outcomes: Vec<RecordOutcome> = (0..3)
            .map(|_| {
                let permit = Arc::clone(&buffer).try_acquire_many_owned(2).unwrap();
                acc.append(&tp(0), 0, None, Some(b"v"), &Headers::new(), permit, || now)
                    .outcome
            })
            .collect();
        let waiting = outcomes[2].wait();
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        acc.flush();
        let mut drained = acc.drain(1, now, usize::MAX);
        let (tp0, batch) = drained.batches.pop().unwrap();
        assert_eq!(buffer.available_permits(), 4, "in flight: still held");
        acc.complete(&tp0, batch, Outcome::Written(40), now);
        assert_eq!(buffer.available_permits(), 10, "written: given back");
        assert_eq!(
            waiting.await.unwrap(),
            42,
            "the batch's base plus the index"
        );
        assert_eq!(outcomes[0].get().unwrap().unwrap(), 40);
        assert_eq!(acc.pool.len(), 1, "the written batch's buffer is kept");

        let queued = append(&mut acc, &tp(0), 2, 10, now);
        assert!(acc.pool.is_empty(), "and reused by the next batch");
        drop(acc);
        for outcome in queued {
            assert!(matches!(outcome.wait().await, Err(Error::Closed { .. })));
        }
    }
}
