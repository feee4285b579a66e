//! The fetcher: one task per owned partition that keeps the next fetch in flight while the previous
//! batch is processed, bounded by a buffer budget shared by all partitions.
//!
//! Each task fetches over a connection of its own to its partition's leader (kafkit's [`Connection`],
//! so TLS and SASL apply), found through Metadata and looked up again whenever a request fails or a
//! response says leadership moved. Records are decoded without copying: keys and values are slices
//! of the response frame ([`crate::wire::records`]), read_committed, with aborted transactions and
//! control markers left out.
//!
//! Before each fetch the task reserves `max.partition.fetch.bytes` from the budget and, once the
//! response is in, gives back what the response did not use. Because records share their response's
//! frame, the frame's bytes stay reserved until the last record from it is finished (the records
//! share one permit): the bytes buffered across the consumer never exceed the budget, and when it
//! is exhausted every fetcher waits (backpressure).
//!
//! The task finds its starting offset itself (the group's committed offset, else `auto.offset.reset`)
//! so that the engine loop never waits on the network.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafkit_resilience::BackoffPolicy;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{debug, error, info, warn};

use super::record::RecordData;
use super::{CorruptBatchPolicy, OffsetReset};
use crate::group::{GroupMember, TopicPartition};
use crate::task::OwnedTask;
use crate::wire::records::{AbortedTransaction, CorruptBatch, FetchedRecord, decode_records};
use crate::wire::{ApiRequest, Connection, WireError};
use crate::{Error, Result};

/// `isolation_level` read_committed: records of open transactions are not returned, aborted ones
/// are listed so they can be left out.
const READ_COMMITTED: i8 = 1;
/// ListOffsets timestamps meaning "the log end" and "the log start".
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

/// Fetch settings, named after the Java consumer's.
#[derive(Debug, Clone)]
pub(crate) struct FetchSettings {
    /// `max.partition.fetch.bytes`.
    pub(crate) max_partition_bytes: usize,
    /// `fetch.max.wait.ms`.
    pub(crate) max_wait: Duration,
    /// `request.timeout.ms`: bound on one fetch round trip beyond `max_wait`.
    pub(crate) request_timeout: Duration,
    pub(crate) backoff: BackoffPolicy,
    pub(crate) reset: OffsetReset,
    pub(crate) corrupt: CorruptBatchPolicy,
}

/// What a fetch task reports to the engine.
#[derive(Debug)]
pub(crate) enum FetchEvent {
    /// Records fetched, and how far the fetch read.
    Records {
        slot: usize,
        epoch: u64,
        records: Vec<FetchedRecord>,
        /// The fetch position after this response: past its records and past every offset it
        /// stepped over that holds no record for the handler (control markers, aborted
        /// transactions, compaction gaps). The engine's watermark reaches it once the records are
        /// done, so a fully consumed partition commits its log end.
        position: i64,
        high_watermark: i64,
        /// The response's share of the buffer budget, held by its records until the last is finished.
        budget: Arc<OwnedSemaphorePermit>,
        /// A batch after `records` that could not be decoded and that `position` moved past
        /// ([`CorruptBatchPolicy::Skip`]).
        skipped: Option<CorruptBatch>,
    },
    /// The position a fetcher starts from (committed or reset), sent before its first records.
    Started {
        slot: usize,
        epoch: u64,
        offset: i64,
        /// Whether `offset` is the group's committed offset (else it came from `auto.offset.reset`).
        from_commit: bool,
        committed_metadata: Option<String>,
    },
    /// The partition's end offset, looked up while the fetcher waits for buffer space.
    EndOffset {
        slot: usize,
        epoch: u64,
        high_watermark: i64,
    },
    /// A fetch failed; the task backs off and tries again. For logs and health.
    Failed {
        slot: usize,
        epoch: u64,
        error: String,
    },
    /// The partition cannot be consumed (`auto.offset.reset=none` with no committed offset).
    Fatal {
        slot: usize,
        epoch: u64,
        error: Error,
    },
}

/// A running fetch task; dropping it stops fetching at once.
#[derive(Debug)]
pub(crate) struct FetchTask {
    _task: OwnedTask<()>,
}

pub(crate) struct FetchContext {
    pub(crate) group: Arc<GroupMember>,
    pub(crate) settings: FetchSettings,
    pub(crate) budget: Arc<Semaphore>,
    /// What a fetch reserves from `budget` before it is sent: room for a full response and the
    /// records built from it (see [`reservation`]).
    pub(crate) reservation: usize,
    pub(crate) out: mpsc::Sender<FetchEvent>,
}

impl FetchTask {
    pub(crate) fn spawn(
        ctx: Arc<FetchContext>,
        tp: TopicPartition,
        slot: usize,
        epoch: u64,
    ) -> Self {
        Self {
            _task: OwnedTask::spawn(fetch_loop(ctx, tp, slot, epoch)),
        }
    }
}

async fn fetch_loop(ctx: Arc<FetchContext>, tp: TopicPartition, slot: usize, epoch: u64) {
    let settings = &ctx.settings;
    let mut backoff = settings.backoff.start();
    let mut leader = Leader::new(&ctx.group, &tp, settings.request_timeout);

    let (mut offset, from_commit, metadata) = loop {
        match start_offset(&ctx, &mut leader, &tp).await {
            Ok(start) => break start,
            Err(e) if e.is_retriable() => {
                leader.forget();
                report_failure(
                    &ctx,
                    slot,
                    epoch,
                    format!("finding the start offset of {tp}: {e}"),
                )
                .await;
                backoff.wait().await;
            }
            Err(error) => {
                let _ = ctx.out.send(FetchEvent::Fatal { slot, epoch, error }).await;
                return;
            }
        }
    };
    backoff.reset();
    info!(partition = %tp, offset, "fetching");
    if ctx
        .out
        .send(FetchEvent::Started {
            slot,
            epoch,
            offset,
            from_commit,
            committed_metadata: metadata,
        })
        .await
        .is_err()
    {
        return;
    }

    let max_bytes = settings.max_partition_bytes;
    let reservation = ctx.reservation;
    loop {
        // Reserve before fetching: the backpressure point. While waiting, keep the partition's end
        // offset fresh (once a second), so lag is reported truly while the consumer is held back.
        let reserve = Arc::clone(&ctx.budget).acquire_many_owned(reservation as u32);
        tokio::pin!(reserve);
        let mut refresh = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let reserved = loop {
            tokio::select! {
                r = &mut reserve => break r,
                _ = refresh.tick() => {
                    if let Ok(high_watermark) = leader.list_offset(LATEST).await
                        && ctx.out.send(FetchEvent::EndOffset { slot, epoch, high_watermark }).await.is_err()
                    {
                        return;
                    }
                }
            }
        };
        let Ok(mut budget) = reserved else {
            return;
        };
        match leader.fetch(offset, max_bytes, settings.max_wait).await {
            Ok(fetched) => {
                backoff.reset();
                // The records keep the whole response frame alive, and each its own small header:
                // that is what stays reserved.
                let held = fetched.frame_bytes + fetched.records.len() * RECORD_MEMORY;
                let keep = held.clamp(1, reservation);
                if keep < reservation {
                    drop(budget.split(reservation - keep));
                }
                if let Some(next) = fetched.next_offset {
                    offset = offset.max(next);
                }
                // A batch that cannot be decoded: the records before it go on as usual; then the
                // policy either moves the position past it or stops the consumer.
                let (skipped, stop) = match fetched.corrupt {
                    None => (None, None),
                    Some(corrupt) => match settings.corrupt {
                        CorruptBatchPolicy::Skip => {
                            error!(partition = %tp, offset = corrupt.offset, skip_to = corrupt.skip_to, reason = %corrupt.reason, "skipping a record batch that cannot be decoded");
                            offset = offset.max(corrupt.skip_to);
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
                let event = FetchEvent::Records {
                    slot,
                    epoch,
                    records: fetched.records,
                    position: offset,
                    high_watermark: fetched.high_watermark,
                    budget: Arc::new(budget),
                    skipped,
                };
                if ctx.out.send(event).await.is_err() {
                    return;
                }
                if let Some(error) = stop {
                    let _ = ctx.out.send(FetchEvent::Fatal { slot, epoch, error }).await;
                    return;
                }
            }
            Err(FetchFailure::OutOfRange) => {
                drop(budget);
                match reset_offset(&mut leader, settings.reset, &tp).await {
                    Ok(to) => {
                        warn!(partition = %tp, from = offset, to, policy = ?settings.reset, "offset out of range; reset");
                        offset = to;
                    }
                    Err(e) if e.is_retriable() => {
                        leader.forget();
                        report_failure(&ctx, slot, epoch, format!("resetting {tp}: {e}")).await;
                        backoff.wait().await;
                    }
                    Err(error) => {
                        let _ = ctx.out.send(FetchEvent::Fatal { slot, epoch, error }).await;
                        return;
                    }
                }
            }
            Err(FetchFailure::Failed(e)) => {
                drop(budget);
                // Whatever failed (a broken connection, a moved leader, a timeout), the next attempt
                // looks the leader up afresh.
                leader.forget();
                report_failure(&ctx, slot, epoch, format!("fetching {tp} at {offset}: {e}")).await;
                backoff.wait().await;
            }
        }
    }
}

async fn report_failure(ctx: &FetchContext, slot: usize, epoch: u64, error: String) {
    debug!(%error, "fetch failed");
    let _ = ctx
        .out
        .send(FetchEvent::Failed { slot, epoch, error })
        .await;
}

/// The committed offset (with its metadata), or the reset policy's offset when nothing is committed;
/// and whether it was committed.
async fn start_offset(
    ctx: &FetchContext,
    leader: &mut Leader<'_>,
    tp: &TopicPartition,
) -> Result<(i64, bool, Option<String>)> {
    let committed = ctx.group.committed(std::slice::from_ref(tp)).await?;
    match committed.get(tp).cloned().flatten() {
        Some(c) => Ok((c.offset, true, c.metadata)),
        None => Ok((
            reset_offset(leader, ctx.settings.reset, tp).await?,
            false,
            None,
        )),
    }
}

async fn reset_offset(
    leader: &mut Leader<'_>,
    reset: OffsetReset,
    tp: &TopicPartition,
) -> Result<i64> {
    let at = match reset {
        OffsetReset::Earliest => EARLIEST,
        OffsetReset::Latest => LATEST,
        OffsetReset::None => {
            return Err(Error::NoOffset {
                partition: tp.to_string(),
            });
        }
    };
    leader.list_offset(at).await
}

/// Memory a fetched record takes besides its bytes in the response: the shared record the engine
/// builds (behind an `Arc`) and its slot in a queue.
const RECORD_MEMORY: usize = std::mem::size_of::<RecordData>() + 16 + 8;

/// How much a fetch reserves before it is sent: a full response (`max_partition_bytes`) and as much
/// again for the records built from it (a response of 100-byte records takes about as much memory
/// again in record headers), but never more than the whole budget, so one fetch can always start.
pub(crate) fn reservation(max_partition_bytes: usize, budget: usize) -> usize {
    max_partition_bytes.saturating_mul(2).min(budget)
}

/// What one fetch brought.
struct Fetched {
    records: Vec<FetchedRecord>,
    high_watermark: i64,
    /// Where the next fetch starts from, when the response held a complete batch.
    next_offset: Option<i64>,
    /// A batch that cannot be decoded, after `records` (see [`CorruptBatchPolicy`]).
    corrupt: Option<CorruptBatch>,
    /// The size of the response's record data, which the records keep alive.
    frame_bytes: usize,
}

enum FetchFailure {
    /// The offset is outside the log: apply `auto.offset.reset`.
    OutOfRange,
    /// Anything else; the fetch is tried again after a backoff, with the leader looked up again.
    Failed(Error),
}

/// A fetch task's connection to its partition's leader, opened on first use and forgotten when a
/// request on it fails, so that the next use looks the leader up again (leadership may have moved).
struct Leader<'a> {
    group: &'a GroupMember,
    tp: &'a TopicPartition,
    request_timeout: Duration,
    conn: Option<Connection>,
}

impl<'a> Leader<'a> {
    fn new(group: &'a GroupMember, tp: &'a TopicPartition, request_timeout: Duration) -> Self {
        Self {
            group,
            tp,
            request_timeout,
            conn: None,
        }
    }

    fn forget(&mut self) {
        self.conn = None;
    }

    async fn connection(&mut self) -> Result<&Connection> {
        if self.conn.as_ref().is_some_and(Connection::is_dead) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let address = self.group.partition_leader(self.tp).await?;
            let conn = Connection::connect(&address, self.group.client(), self.request_timeout)
                .await
                .map_err(|source| self.connection_error("connecting to", &address, source))?;
            debug!(partition = %self.tp, leader = %address, "connected to the partition leader");
            self.conn = Some(conn);
        }
        Ok(self.conn.as_ref().expect("connected above"))
    }

    /// Sends `request` to the leader (connecting first if needed); a failed exchange forgets the
    /// connection, so the next request looks the leader up again.
    async fn send<R: ApiRequest>(
        &mut self,
        request: &R,
        timeout: Duration,
        doing: &str,
    ) -> Result<R::Response> {
        let conn = self.connection().await?;
        match conn.send(request, timeout).await {
            Ok(response) => Ok(response),
            Err(source) => {
                let address = conn.broker().to_owned();
                self.forget();
                Err(self.connection_error(doing, &address, source))
            }
        }
    }

    fn connection_error(&self, doing: &str, address: &str, source: WireError) -> Error {
        let context = format!("{doing} {address}, the leader of {}", self.tp);
        if source.is_security() {
            Error::Security { context, source }
        } else {
            Error::Connection { context, source }
        }
    }

    /// The offset ListOffsets gives for `timestamp` ([`LATEST`] or [`EARLIEST`]); read_committed,
    /// so "latest" is the last stable offset.
    async fn list_offset(&mut self, timestamp: i64) -> Result<i64> {
        let (topic, partition) = (self.tp.topic.clone(), self.tp.partition);
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(READ_COMMITTED)
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(partition)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(timestamp),
                    ]),
            ]);
        let response = self
            .send(&request, self.request_timeout, "ListOffsets on")
            .await?;
        let answer = response
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition_index == partition);
        let Some(answer) = answer else {
            return Err(self.broker_error("ListOffsets", ResponseError::UnknownTopicOrPartition));
        };
        match ResponseError::try_from_code(answer.error_code) {
            None => Ok(answer.offset),
            Some(error) => {
                self.forget();
                Err(self.broker_error("ListOffsets", error))
            }
        }
    }

    fn broker_error(&self, operation: &'static str, error: ResponseError) -> Error {
        Error::Admin {
            operation,
            target: self.tp.to_string(),
            code: error.code(),
            error: format!("{error:?}"),
        }
    }

    /// One Fetch of the partition from `offset`, up to `max_bytes`, waiting up to `max_wait` for data.
    async fn fetch(
        &mut self,
        offset: i64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> std::result::Result<Fetched, FetchFailure> {
        let (topic, partition) = (self.tp.topic.clone(), self.tp.partition);
        let max_bytes = i32::try_from(max_bytes).unwrap_or(i32::MAX);
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(i32::try_from(max_wait.as_millis()).unwrap_or(i32::MAX))
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_isolation_level(READ_COMMITTED)
            // No fetch session: every request names its partition in full.
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_current_leader_epoch(-1)
                            .with_fetch_offset(offset)
                            .with_last_fetched_epoch(-1)
                            .with_log_start_offset(-1)
                            .with_partition_max_bytes(max_bytes),
                    ]),
            ]);
        let response = self
            .send(&request, max_wait + self.request_timeout, "fetching from")
            .await
            .map_err(FetchFailure::Failed)?;
        if let Some(error) = ResponseError::try_from_code(response.error_code) {
            return Err(FetchFailure::Failed(self.broker_error("Fetch", error)));
        }
        let Some(data) = response
            .responses
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == partition)
        else {
            return Err(FetchFailure::Failed(
                self.broker_error("Fetch", ResponseError::UnknownTopicOrPartition),
            ));
        };
        match ResponseError::try_from_code(data.error_code) {
            None => {}
            Some(ResponseError::OffsetOutOfRange) => return Err(FetchFailure::OutOfRange),
            Some(error) => return Err(FetchFailure::Failed(self.broker_error("Fetch", error))),
        }
        let aborted: Vec<AbortedTransaction> = data
            .aborted_transactions
            .unwrap_or_default()
            .iter()
            .map(|a| AbortedTransaction {
                producer_id: a.producer_id.0,
                first_offset: a.first_offset,
            })
            .collect();
        let records = data.records.unwrap_or_default();
        let frame_bytes = records.len();
        let decoded = decode_records(records, offset, &aborted);
        Ok(Fetched {
            records: decoded.records,
            high_watermark: data.high_watermark,
            next_offset: decoded.next_offset,
            corrupt: decoded.corrupt,
            frame_bytes,
        })
    }
}
