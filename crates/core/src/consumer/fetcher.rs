//! The fetcher: one task per owned partition that keeps the next fetch in flight while the previous
//! batch is processed, bounded by a buffer budget shared by all partitions.
//!
//! Before each fetch the task reserves `max.partition.fetch.bytes` from the budget and, once the
//! response is in, gives back what the batch did not use. The batch's bytes stay reserved until its
//! records are finished (each record holds its share), so the bytes buffered across the consumer
//! never exceed the budget: when it is exhausted every fetcher waits (backpressure).
//!
//! The task finds its starting offset itself (the group's committed offset, else `auto.offset.reset`)
//! so that the engine loop never waits on the network.

use std::sync::Arc;
use std::time::Duration;

use kafkit_resilience::BackoffPolicy;
use rskafka::client::Client;
use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::record::RecordAndOffset;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::OffsetReset;
use crate::group::{GroupMember, TopicPartition};
use crate::{Error, Result};

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
}

/// What a fetch task reports to the engine.
#[derive(Debug)]
pub(crate) enum FetchEvent {
    /// Records fetched from `offset` on.
    Records {
        slot: usize,
        epoch: u64,
        records: Vec<RecordAndOffset>,
        high_watermark: i64,
        budget: OwnedSemaphorePermit,
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
    handle: JoinHandle<()>,
}

impl Drop for FetchTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

pub(crate) struct FetchContext {
    pub(crate) client: Arc<Client>,
    pub(crate) group: Arc<GroupMember>,
    pub(crate) settings: FetchSettings,
    pub(crate) budget: Arc<Semaphore>,
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
            handle: tokio::spawn(fetch_loop(ctx, tp, slot, epoch)),
        }
    }
}

async fn fetch_loop(ctx: Arc<FetchContext>, tp: TopicPartition, slot: usize, epoch: u64) {
    let settings = &ctx.settings;
    let mut backoff = settings.backoff.start();
    let client = loop {
        match ctx
            .client
            .partition_client(tp.topic.clone(), tp.partition, UnknownTopicHandling::Retry)
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                report_failure(
                    &ctx,
                    slot,
                    epoch,
                    format!("connecting to the leader of {tp}: {e}"),
                )
                .await;
                backoff.wait().await;
            }
        }
    };
    backoff.reset();

    let (mut offset, from_commit, metadata) = loop {
        match start_offset(&ctx, &client, &tp).await {
            Ok(start) => break start,
            Err(e) if e.is_retriable() => {
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
    let max_wait_ms = settings.max_wait.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // Reserve before fetching: the backpressure point. While waiting, keep the partition's end
        // offset fresh (once a second), so lag is reported truly while the consumer is held back.
        let reserve = Arc::clone(&ctx.budget).acquire_many_owned(max_bytes as u32);
        tokio::pin!(reserve);
        let mut refresh = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let reserved = loop {
            tokio::select! {
                r = &mut reserve => break r,
                _ = refresh.tick() => {
                    if let Ok(Ok(high_watermark)) = tokio::time::timeout(settings.request_timeout, client.get_offset(OffsetAt::Latest)).await
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
        let fetch = client.fetch_records(offset, 1..max_bytes as i32, max_wait_ms);
        let result =
            tokio::time::timeout(settings.max_wait + settings.request_timeout, fetch).await;
        match result {
            Ok(Ok((records, high_watermark))) => {
                backoff.reset();
                let used: usize = records
                    .iter()
                    .map(|r| r.record.approximate_size() + 64)
                    .sum();
                let keep = used.clamp(1, max_bytes);
                if keep < max_bytes {
                    // Hand back what the batch did not use.
                    drop(budget.split(max_bytes - keep));
                }
                if let Some(last) = records.last() {
                    offset = last.offset + 1;
                }
                let event = FetchEvent::Records {
                    slot,
                    epoch,
                    records,
                    high_watermark,
                    budget,
                };
                if ctx.out.send(event).await.is_err() {
                    return;
                }
            }
            Ok(Err(ClientError::ServerError {
                protocol_error: ProtocolError::OffsetOutOfRange,
                ..
            })) => {
                drop(budget);
                match reset_offset(&client, settings.reset, &tp).await {
                    Ok(to) => {
                        warn!(partition = %tp, from = offset, to, policy = ?settings.reset, "offset out of range; reset");
                        offset = to;
                    }
                    Err(error) => {
                        let _ = ctx.out.send(FetchEvent::Fatal { slot, epoch, error }).await;
                        return;
                    }
                }
            }
            Ok(Err(e)) => {
                drop(budget);
                report_failure(&ctx, slot, epoch, format!("fetching {tp} at {offset}: {e}")).await;
                backoff.wait().await;
            }
            Err(_) => {
                drop(budget);
                report_failure(
                    &ctx,
                    slot,
                    epoch,
                    format!("fetching {tp} at {offset}: no response in time"),
                )
                .await;
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
    client: &PartitionClient,
    tp: &TopicPartition,
) -> Result<(i64, bool, Option<String>)> {
    let committed = ctx.group.committed(std::slice::from_ref(tp)).await?;
    match committed.get(tp).cloned().flatten() {
        Some(c) => Ok((c.offset, true, c.metadata)),
        None => Ok((
            reset_offset(client, ctx.settings.reset, tp).await?,
            false,
            None,
        )),
    }
}

async fn reset_offset(
    client: &PartitionClient,
    reset: OffsetReset,
    tp: &TopicPartition,
) -> Result<i64> {
    let at = match reset {
        OffsetReset::Earliest => OffsetAt::Earliest,
        OffsetReset::Latest => OffsetAt::Latest,
        OffsetReset::None => {
            return Err(Error::NoOffset {
                partition: tp.to_string(),
            });
        }
    };
    client.get_offset(at).await.map_err(|source| Error::Kafka {
        context: format!("looking up the {reset:?} offset of {tp}"),
        source: Arc::new(source),
    })
}
