//! Exactly-once consume-transform-produce ([`Consumer::run_transform`]): the handler turns a
//! batch of input records into output records, and the outputs and the inputs' offsets commit in
//! one transaction of a transactional [`Producer`], with the member's generation and id (KIP-447).
//!
//! It sits on the consumer's stream (records handed out, acked once their transaction
//! committed) and hears of revocations through one listener call (`revoking`); the engine and the
//! dispatcher know nothing of transactions. Rules, each enforced in [`Transformer`]:
//! - Records are dispatched `PartitionOrdered`: one record of a partition is out at a time, so a
//!   batch holds at most one record per partition, and a record handed back (a dropped batch) is
//!   the next one its partition hands out again: a transaction never commits an offset past a
//!   record that is not in it or in an earlier committed one.
//! - A batch whose partition is being revoked or was lost is not committed: its open transaction
//!   aborts and its records are handed back before the engine releases the partition.
//! - A handler failure aborts the transaction and runs the same batch again (after the retry
//!   backoff) in a new one: the batch starts at the partitions' last committed positions.
//! - A commit that timed out is repeated (it cannot be aborted: it may have ended the
//!   transaction); only its final failure aborts.
//! - A record below what this consumer already committed for its partition (a new tenure
//!   starting from the committed offset, again) is acked without being handled.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kafkit_resilience::{BackoffPolicy, ConfigError};
use tracing::{debug, info, warn};

use super::dispatcher::BoxError;
use super::status::StatusBoard;
use super::{
    ConsumedRecord, Consumer, ConsumerListener, DispatchMode, RecordStream, ShutdownReport,
    StreamRecord,
};
use crate::group::{CommitReport, OffsetToCommit, TopicPartition};
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

    /// The most input records in one transaction. Default 500.
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

/// Partitions being revoked or lost, heard from the engine; cleared when assigned again.
#[derive(Default)]
struct Gone {
    partitions: parking_lot::Mutex<HashSet<TopicPartition>>,
}

/// The consumer's listener, wrapped: the user's sees everything, [`Gone`] hears revocations.
struct Listener {
    gone: Arc<Gone>,
    user: Option<Arc<dyn ConsumerListener>>,
}

impl ConsumerListener for Listener {
    fn assigned(&self, partitions: &[TopicPartition]) {
        let mut gone = self.gone.partitions.lock();
        for tp in partitions {
            gone.remove(tp);
        }
        drop(gone);
        if let Some(u) = &self.user {
            u.assigned(partitions);
        }
    }
    fn revoking(&self, partitions: &[TopicPartition]) {
        self.gone
            .partitions
            .lock()
            .extend(partitions.iter().cloned());
        if let Some(u) = &self.user {
            u.revoking(partitions);
        }
    }
    fn revoked(&self, partitions: &[TopicPartition]) {
        if let Some(u) = &self.user {
            u.revoked(partitions);
        }
    }
    fn lost(&self, partitions: &[TopicPartition]) {
        self.gone
            .partitions
            .lock()
            .extend(partitions.iter().cloned());
        if let Some(u) = &self.user {
            u.lost(partitions);
        }
    }
    fn committing(&self, offsets: &[OffsetToCommit]) {
        if let Some(u) = &self.user {
            u.committing(offsets);
        }
    }
    fn committed(&self, result: &Result<CommitReport>) {
        if let Some(u) = &self.user {
            u.committed(result);
        }
    }
}

/// How one attempt of a batch ended, short of a commit.
enum Failed {
    /// The handler failed: abort, then run the batch again.
    Handler(BoxError),
    /// A partition of the batch is being revoked or was lost: abort, hand the batch back.
    Revoked,
    /// The transaction failed (abortable, or timed out): abort, hand the batch back.
    Transaction(Error),
}

/// The loop of [`Consumer::run_transform`].
struct Transformer<F> {
    config: TransformConfig,
    handler: F,
    gone: Arc<Gone>,
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
    let gone = Arc::new(Gone::default());
    let settings = &mut consumer.builder.settings;
    settings.mode = DispatchMode::PartitionOrdered;
    settings.listener = Some(Arc::new(Listener {
        gone: Arc::clone(&gone),
        user: settings.listener.take(),
    }));
    let mut transformer = Transformer {
        config,
        handler,
        gone,
        board: Arc::clone(&consumer.health.board),
        group_id: consumer.builder.group.group_id.clone(),
        done_up_to: HashMap::new(),
    };
    let mut stream = consumer.stream()?;
    let outcome = transformer.run(&mut stream).await;
    let report = stream.shutdown().await;
    outcome?;
    report
}

impl<F, Fut, E> Transformer<F>
where
    F: Fn(Vec<ConsumedRecord>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<Vec<ProducerRecord>, E>> + Send,
    E: Into<BoxError>,
{
    /// Batches until the stream ends; an error only for a fenced or fatal producer.
    async fn run(&mut self, stream: &mut RecordStream) -> Result<()> {
        while let Some(first) = stream.next().await {
            let mut batch = vec![first];
            let until = tokio::time::Instant::now() + self.config.max_wait;
            while batch.len() < self.config.max_records {
                match tokio::time::timeout_at(until, stream.next()).await {
                    Ok(Some(record)) => batch.push(record),
                    Ok(None) | Err(_) => break,
                }
            }
            self.process(batch).await?;
        }
        Ok(())
    }

    /// Drops the records of partitions gone, acks those already committed; returns the rest.
    fn sift(&self, batch: Vec<StreamRecord>) -> Vec<StreamRecord> {
        let gone = self.gone.partitions.lock();
        let mut keep = Vec::with_capacity(batch.len());
        let mut duplicates = Vec::new();
        for record in batch {
            let r = record.record();
            let tp = TopicPartition::new(r.topic(), r.partition());
            if gone.contains(&tp) {
                drop(record); // handed back: the partition's next owner reads it
            } else if self
                .done_up_to
                .get(&tp)
                .is_some_and(|&done| r.offset() < done)
            {
                duplicates.push(record);
            } else {
                keep.push(record);
            }
        }
        drop(gone);
        if !duplicates.is_empty() {
            debug!(
                records = duplicates.len(),
                "records already committed by this consumer: acked"
            );
            StreamRecord::ack_all(duplicates);
        }
        keep
    }

    fn any_gone(&self, batch: &[StreamRecord]) -> bool {
        let gone = self.gone.partitions.lock();
        batch.iter().any(|s| {
            let r = s.record();
            gone.contains(&TopicPartition::new(r.topic(), r.partition()))
        })
    }

    /// One batch: attempts until it commits, is handed back, or the producer is unusable.
    async fn process(&mut self, batch: Vec<StreamRecord>) -> Result<()> {
        let mut batch = self.sift(batch);
        let mut backoff = self.config.retry_backoff.start();
        let producer = self.config.producer.clone();
        while !batch.is_empty() {
            producer.begin_transaction().await?;
            match self.attempt(&producer, &batch).await {
                Ok(offsets) => {
                    debug!(group = %self.group_id, records = batch.len(), "batch committed");
                    self.done_up_to.extend(offsets);
                    StreamRecord::ack_all(batch);
                    return Ok(());
                }
                Err(failed) => {
                    abort(&producer).await?;
                    match failed {
                        Failed::Handler(error) => {
                            let delay = backoff.next_delay();
                            warn!(group = %self.group_id, %error, ?delay, records = batch.len(),
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
        batch: &[StreamRecord],
    ) -> std::result::Result<Vec<(TopicPartition, i64)>, Failed> {
        let records: Vec<ConsumedRecord> = batch.iter().map(|s| s.record().clone()).collect();
        let outputs = (self.handler)(records)
            .await
            .map_err(|e| Failed::Handler(e.into()))?;
        let sends: Vec<_> = outputs.into_iter().map(|r| producer.send(r)).collect();
        // The flush sends lingering batches at once; the sends resolve as they are acknowledged.
        let (results, _) = tokio::join!(futures::future::join_all(sends), producer.flush());
        for result in results {
            result.map_err(Failed::Transaction)?;
        }
        let mut offsets: HashMap<TopicPartition, i64> = HashMap::new();
        for s in batch {
            let r = s.record();
            let next = offsets
                .entry(TopicPartition::new(r.topic(), r.partition()))
                .or_insert(0);
            *next = (*next).max(r.offset() + 1);
        }
        let offsets: Vec<(TopicPartition, i64)> = offsets.into_iter().collect();
        let Some(member) = self.board.member() else {
            return Err(Failed::Revoked);
        };
        if self.any_gone(batch) {
            return Err(Failed::Revoked);
        }
        producer
            .send_offsets_to_transaction(offsets.iter().cloned(), &member.group_metadata())
            .await
            .map_err(Failed::Transaction)?;
        if self.any_gone(batch) {
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
