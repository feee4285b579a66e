//! Exactly-once consume-transform-produce ([`Consumer::run_transform`]): the handler turns a
//! batch of input records into output records, and the outputs and the inputs' offsets commit in
//! one transaction of a transactional [`Producer`], with the member's generation and id (KIP-447).
//!
//! It takes *runs* from the dispatcher (`Sink::Runs`, see [`RecordRun`]): consecutive records of a
//! partition, handed out as one unit, acked once their transaction committed. A batch is whole
//! runs, up to `max_records` records; the engine and the dispatcher know nothing of transactions.
//! Rules, each enforced in [`Transformer`]:
//! - Records are dispatched `PartitionOrdered`: a partition has one run out at a time, which
//!   starts at its first record not yet acked (a run handed back is the front of the partition's
//!   next run). So a run's records, and every earlier record of the partition, are in the batch or
//!   were committed in an earlier transaction, and the offset after the run's last record is the
//!   partition's offset to commit: a transaction never commits an offset past a record that is not
//!   in it or in an earlier committed one.
//! - A batch whose partition is being revoked or was lost is not committed: the run's tenure is
//!   stopped (the dispatcher's stop flag, set before anything else on a revocation, a loss or a
//!   shutdown), which is checked before the offsets are sent and before the commit; the open
//!   transaction aborts and the runs are handed back, which the engine's revocation waits for
//!   before it releases the partition.
//! - A handler failure aborts the transaction and runs the same batch again (after the retry
//!   backoff) in a new one: the batch starts at the partitions' last committed positions.
//! - A commit that timed out is repeated (it cannot be aborted: it may have ended the
//!   transaction); only its final failure aborts.
//! - Records below what this consumer already committed for their partition (a new tenure
//!   starting from the committed offset, again) are acked without being handled: they are the
//!   front of their run.
//! - Only the transactions commit offsets: the engine, told so (`engine_commits` off), records its
//!   watermarks as committed without sending them, since a plain commit could land after a later
//!   transaction's and move the group's offset back.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kafkit_resilience::{BackoffPolicy, ConfigError};
use tracing::{debug, info, warn};

use tokio::sync::mpsc;

use super::dispatcher::{BoxError, Sink};
use super::record::RecordRun;
use super::status::StatusBoard;
use super::{ConsumedRecord, Consumer, DispatchMode, ShutdownReport};
use crate::group::TopicPartition;
use crate::{Error, Producer, ProducerRecord, Result, TransactionErrorKind};

/// Settings of [`Consumer::run_transform`].
#[derive(Debug, Clone)]
pub struct TransformConfig {
    producer: Producer,
    max_records: usize,
    max_wait: Duration,
    retry_backoff: BackoffPolicy,
}

impl TransformConfig {
    /// Outputs go through `producer`, which must have a `transactional.id` (one per consumer
    /// instance: KIP-447's group-metadata fencing makes a static id per partition unnecessary)
    /// and must not be initialized yet: `run_transform` calls `init_transactions`, fencing an
    /// earlier instance with the same id.
    pub fn new(producer: Producer) -> Self {
        Self {
            producer,
            max_records: 500,
            max_wait: Duration::from_millis(100),
            retry_backoff: BackoffPolicy::new(
                Duration::from_millis(100),
                Duration::from_secs(5),
                2.0,
                0.2,
            )
            .expect("valid default backoff"),
        }
    }

    /// The most input records in one transaction; a partition's run (its consecutive records,
    /// taken whole) holds at most this many too. Default 500.
    pub fn max_records(mut self, records: usize) -> Self {
        self.max_records = records;
        self
    }

    /// How long a batch waits for more records after its first. Default 100 ms.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Backoff between attempts of a batch whose handler failed. Default 100 ms doubling to 5 s.
    pub fn retry_backoff(mut self, policy: BackoffPolicy) -> Self {
        self.retry_backoff = policy;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.producer.transactional_id().is_none() {
            return Err(ConfigError::new(
                "transactional.id",
                "run_transform needs a producer with a transactional.id",
            )
            .into());
        }
        if self.max_records == 0 {
            return Err(ConfigError::new("max_records", "must be at least 1").into());
        }
        Ok(())
    }
}

/// How one attempt of a batch ended, short of a commit.
enum Failed {
    /// The handler failed: abort, then run the batch again.
    Handler(BoxError),
    /// A partition of the batch is being revoked or was lost (or the consumer is shutting down):
    /// abort, hand the batch back.
    Revoked,
    /// The transaction failed (abortable, or timed out): abort, hand the batch back.
    Transaction(Error),
}

/// The loop of [`Consumer::run_transform`].
struct Transformer<F> {
    config: TransformConfig,
    handler: F,
    board: Arc<StatusBoard>,
    group_id: String,
    /// Per partition, the offset after the last record this consumer committed in a transaction.
    done_up_to: HashMap<TopicPartition, i64>,
}

pub(super) async fn run<F, Fut, E>(
    mut consumer: Consumer,
    config: TransformConfig,
    handler: F,
) -> Result<ShutdownReport>
where
    F: Fn(Vec<ConsumedRecord>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<Vec<ProducerRecord>, E>> + Send,
    E: Into<BoxError>,
{
    config.validate()?;
    config.producer.init_transactions().await?;
    // A run is a partition's next records only when its records go out one hand-out at a time.
    consumer.builder.settings.mode = DispatchMode::PartitionOrdered;
    // Offsets commit in the transactions only.
    consumer.builder.settings.engine_commits = false;
    let max = config.max_records;
    let mut transformer = Transformer {
        config,
        handler,
        board: Arc::clone(&consumer.health.board),
        group_id: consumer.builder.group.group_id.clone(),
        done_up_to: HashMap::new(),
    };
    let mut feed = consumer.feed(|tx| Sink::Runs { tx, max })?;
    let outcome = transformer.run(&mut feed.rx).await;
    let report = feed.shutdown().await;
    outcome?;
    report
}

/// Takes a batch from the front of `waiting`: its first item, then every other that still fits
/// in `max` records (`len` of an item is its records), in order; the rest keep waiting, in order.
/// Items are never split (a run is one hand-out, acked whole), and none holds more than `max`.
fn take_batch<R>(waiting: &mut VecDeque<R>, max: usize, len: impl Fn(&R) -> usize) -> Vec<R> {
    let mut batch = Vec::new();
    let mut records = 0;
    let mut rest = VecDeque::new();
    for item in waiting.drain(..) {
        let n = len(&item);
        if batch.is_empty() || records + n <= max {
            records += n;
            batch.push(item);
        } else {
            rest.push_back(item);
        }
    }
    *waiting = rest;
    batch
}

fn run_len(run: &RecordRun) -> usize {
    run.records().len()
}

impl<F, Fut, E> Transformer<F>
where
    F: Fn(Vec<ConsumedRecord>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<Vec<ProducerRecord>, E>> + Send,
    E: Into<BoxError>,
{
    /// Batches until the dispatcher's channel ends; an error only for a fenced or fatal producer.
    async fn run(&mut self, rx: &mut mpsc::UnboundedReceiver<Vec<RecordRun>>) -> Result<()> {
        // Runs received and not yet in a batch, in the order they came.
        let mut waiting: VecDeque<RecordRun> = VecDeque::new();
        loop {
            if waiting.is_empty() {
                match rx.recv().await {
                    Some(runs) => waiting.extend(runs),
                    None => return Ok(()),
                }
            }
            let until = tokio::time::Instant::now() + self.config.max_wait;
            while waiting.iter().map(run_len).sum::<usize>() < self.config.max_records {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(runs)) => waiting.extend(runs),
                    Ok(None) | Err(_) => break,
                }
            }
            let batch = take_batch(&mut waiting, self.config.max_records, run_len);
            self.process(batch).await?;
        }
    }

    /// Hands back the runs of stopped tenures (the partition's next owner reads them) and acks the
    /// records already committed (the front of their run); returns the rest.
    fn sift(&self, batch: Vec<RecordRun>) -> Vec<RecordRun> {
        let mut keep = Vec::with_capacity(batch.len());
        let mut duplicates = 0;
        for run in batch {
            if run.stopped() {
                drop(run); // handed back
                continue;
            }
            let below = self.done_up_to.get(&run.partition()).map_or(0, |&done| {
                run.records()
                    .iter()
                    .take_while(|r| r.offset() < done)
                    .count()
            });
            duplicates += below;
            keep.extend(run.ack_front(below));
        }
        if duplicates > 0 {
            debug!(
                group = %self.group_id,
                records = duplicates,
                "records already committed by this consumer: acked"
            );
        }
        keep
    }

    /// One batch: attempts until it commits, is handed back, or the producer is unusable.
    async fn process(&mut self, batch: Vec<RecordRun>) -> Result<()> {
        let mut batch = self.sift(batch);
        let mut backoff = self.config.retry_backoff.start();
        let producer = self.config.producer.clone();
        while !batch.is_empty() {
            producer.begin_transaction().await?;
            match self.attempt(&producer, &batch).await {
                Ok(offsets) => {
                    debug!(group = %self.group_id, runs = batch.len(), "batch committed");
                    self.done_up_to.extend(offsets);
                    batch.into_iter().for_each(RecordRun::ack);
                    return Ok(());
                }
                Err(failed) => {
                    abort(&producer).await?;
                    match failed {
                        Failed::Handler(error) => {
                            let delay = backoff.next_delay();
                            warn!(group = %self.group_id, %error, ?delay, runs = batch.len(),
                                "handler failed: transaction aborted, the batch runs again");
                            tokio::time::sleep(delay).await;
                            batch = self.sift(batch);
                        }
                        Failed::Revoked => {
                            info!(group = %self.group_id, "partitions revoked during a batch: transaction aborted, records handed back");
                            return Ok(());
                        }
                        Failed::Transaction(error) => {
                            warn!(group = %self.group_id, %error, "transaction failed: aborted, records handed back");
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Handles `batch` and commits its outputs and offsets in the open transaction; returns the
    /// offsets committed.
    async fn attempt(
        &self,
        producer: &Producer,
        batch: &[RecordRun],
    ) -> std::result::Result<Vec<(TopicPartition, i64)>, Failed> {
        let records: Vec<ConsumedRecord> = batch
            .iter()
            .flat_map(|run| run.records().iter().cloned())
            .collect();
        let outputs = (self.handler)(records)
            .await
            .map_err(|e| Failed::Handler(e.into()))?;
        let sends: Vec<_> = outputs.into_iter().map(|r| producer.send(r)).collect();
        // The flush sends lingering batches at once; the sends resolve as they are acknowledged.
        let (results, _) = tokio::join!(futures::future::join_all(sends), producer.flush());
        for result in results {
            result.map_err(Failed::Transaction)?;
        }
        // Each partition's offset is the one after its run's last record. A batch holds one run
        // per partition: a tenure has one out at a time, and a run of an older tenure is stopped,
        // which the checks below refuse.
        let mut offsets: HashMap<TopicPartition, i64> = HashMap::new();
        for run in batch {
            let next = offsets.entry(run.partition()).or_insert(0);
            *next = (*next).max(run.last_offset() + 1);
        }
        let offsets: Vec<(TopicPartition, i64)> = offsets.into_iter().collect();
        let Some(member) = self.board.member() else {
            return Err(Failed::Revoked);
        };
        if batch.iter().any(RecordRun::stopped) {
            return Err(Failed::Revoked);
        }
        producer
            .send_offsets_to_transaction(offsets.iter().cloned(), &member.group_metadata())
            .await
            .map_err(Failed::Transaction)?;
        if batch.iter().any(RecordRun::stopped) {
            return Err(Failed::Revoked);
        }
        commit(producer).await.map_err(Failed::Transaction)?;
        Ok(offsets)
    }
}

/// Commits the open transaction. A commit that timed out (the coordinator unreachable for
/// `max.block.ms`, a broker restarting) may or may not have ended the transaction and cannot be
/// aborted: it is repeated, as the Java client requires, up to three more times.
async fn commit(producer: &Producer) -> Result<()> {
    let mut tries = 0;
    loop {
        match producer.commit_transaction().await {
            Err(e) if e.transaction_kind() == Some(TransactionErrorKind::Timeout) && tries < 3 => {
                tries += 1;
                warn!(error = %e, "commit did not finish; trying again");
            }
            result => return result,
        }
    }
}

/// Aborts the open transaction, repeating an abort that timed out (up to three tries); a fenced
/// or fatal producer (a failed commit of one comes back here too) ends the run.
async fn abort(producer: &Producer) -> Result<()> {
    let mut tries = 0;
    loop {
        match producer.abort_transaction().await {
            Ok(()) => return Ok(()),
            Err(e) if e.transaction_kind() == Some(TransactionErrorKind::Timeout) && tries < 2 => {
                tries += 1;
                warn!(error = %e, "abort did not finish; trying again");
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lengths of the waiting runs, `max_records`, the batch's run lengths, what still waits.
    type Case = (&'static [usize], usize, &'static [usize], &'static [usize]);

    #[test]
    fn a_batch_takes_whole_runs_that_fit_and_the_rest_wait_in_order() {
        let cases: &[Case] = &[
            (&[3], 10, &[3], &[]),
            (&[3, 4, 3], 10, &[3, 4, 3], &[]),
            // The first run always goes (a run is at most `max`); a run that does not fit waits,
            // and a later one that fits still joins.
            (&[10, 1], 10, &[10], &[1]),
            (&[6, 6, 4], 10, &[6, 4], &[6]),
            (&[6, 6, 6], 10, &[6], &[6, 6]),
            (&[1, 1, 1, 1], 2, &[1, 1], &[1, 1]),
        ];
        for &(runs, max, batch, rest) in cases {
            let mut waiting: VecDeque<usize> = runs.iter().copied().collect();
            let taken = take_batch(&mut waiting, max, |&n| n);
            assert_eq!(taken, batch, "{runs:?} max {max}");
            assert_eq!(Vec::from(waiting), rest, "{runs:?} max {max}");
        }
    }
}
