//! The fetcher: one task per broker that leads owned partitions, each with one connection and one
//! KIP-227 fetch session, keeping one Fetch in flight that covers every partition it leads with room
//! in the buffer budget.
//!
//! ```text
//!  engine ──add(tp, slot, epoch)──► router ──cursor──► broker task (one per leader broker)
//!    ▲          (drop: removed)       ▲  leaders via Metadata   │ Fetch (session), ListOffsets
//!    └─────────────FetchEvent─────────┴─────────────────────────┘
//! ```
//!
//! - The engine adds a partition when it is assigned and gets a [`Fetching`] handle; dropping the
//!   handle stops fetching the partition at once: no event of that tenure is sent after the handle
//!   is gone (a response in flight for it is dropped), and its next request leaves it out.
//! - The router (`mod.rs`) owns partitions nobody fetches yet: it finds their committed offsets
//!   (one OffsetFetch for all partitions added together) and their leaders (one Metadata for all,
//!   with leader epochs), and hands each partition's *cursor* to its leader's broker task.
//! - A broker task (`broker.rs`) fetches its cursors over its own [`Connection`] with a fetch session
//!   (`session.rs`). A partition whose leader moved (NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH,
//!   UNKNOWN_LEADER_EPOCH, UNKNOWN_TOPIC_OR_PARTITION) goes back to the router, which looks it up
//!   again after the partition's backoff. A broken connection hands all its cursors back after the
//!   broker's backoff; the session starts over on the next connection.
//!
//! Records are decoded without copying their keys and values: they are slices of the partition's
//! record bytes ([`crate::wire::records`]), read_committed, with aborted transactions and control
//! markers left out. A response that carries several partitions' records has each partition's bytes
//! copied once into a buffer of its own, so a slow partition keeps alive only the bytes its budget
//! share counts, not the whole response; a response of one partition is not copied.
//!
//! # The budget
//! Before each Fetch a broker task reserves [`reservation`] bytes from the consumer-wide budget (or
//! what is free, if less, but at least one partition's full fetch) and asks for at most half of it
//! (`max_bytes`; the other half pays for the records built from the response). Once the response is in, each partition's share (its record data plus
//! [`RECORD_MEMORY`] per record) is split off the reservation and the rest given back. A partition's
//! records hold an `Arc` of its share until the last of them is finished, so the bytes buffered
//! across the consumer never exceed the budget, and when it is exhausted every broker task waits
//! (backpressure). A partition that already holds [`PAUSE_AT`] worth of unfinished response data is left
//! out of the next Fetch until its records drain (the Java client does not fetch a partition with
//! buffered records), so one slow partition cannot fill the budget for the others. While one is
//! paused, Fetches wait in the broker at most 20 ms instead of `fetch.max.wait.ms`, so that the
//! paused partition is fetched again soon after it drains rather than behind a long poll for
//! caught-up partitions.

mod broker;
mod session;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use kafkit_resilience::BackoffPolicy;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tracing::{debug, info};

use super::{CorruptBatchPolicy, OffsetReset};
use crate::Error;
use crate::group::{GroupMember, TopicPartition};
use crate::task::OwnedTask;
use crate::wire::records::{CorruptBatch, FetchedRecord};

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
    /// `fetch.max.bytes`: the most one Fetch (one broker) returns.
    pub(crate) max_bytes: usize,
    /// `fetch.max.wait.ms`.
    pub(crate) max_wait: Duration,
    /// `request.timeout.ms`: bound on one fetch round trip beyond `max_wait`.
    pub(crate) request_timeout: Duration,
    pub(crate) backoff: BackoffPolicy,
    pub(crate) reset: OffsetReset,
    pub(crate) corrupt: CorruptBatchPolicy,
    /// `client.rack` (the group's [`rack_id`](crate::group::GroupConfig::rack_id)), sent with every
    /// Fetch: a broker with a rack-aware replica selector answers with the replica to read from
    /// (KIP-392).
    pub(crate) rack: Option<String>,
    /// `metadata.max.age.ms`: how long a preferred read replica is fetched from before the leader
    /// is asked again.
    pub(crate) replica_max_age: Duration,
    /// `connections.max.idle.ms`: a broker task with no partitions closes its connection after
    /// this long.
    pub(crate) max_idle: Duration,
}

/// What the fetcher reports to the engine about one partition's tenure (`slot`, `epoch`).
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
        /// The partition's share of the response's budget, held by its records until the last is
        /// finished (none when the response brought no records for it).
        budget: Option<Arc<BudgetShare>>,
        /// A batch after `records` that could not be decoded and that `position` moved past
        /// ([`CorruptBatchPolicy::Skip`]).
        skipped: Option<CorruptBatch>,
    },
    /// Fetches of these partitions were answered without news for them (an incremental fetch
    /// session leaves them out of the response): they are alive. Sent at most once a second.
    Polled { partitions: Vec<(usize, u64)> },
    /// The position a partition starts from (committed or reset), sent before its first records.
    Started {
        slot: usize,
        epoch: u64,
        offset: i64,
        /// Whether `offset` is the group's committed offset (else it came from `auto.offset.reset`).
        from_commit: bool,
        committed_metadata: Option<String>,
    },
    /// The partition's end offset, looked up while it waits for buffer space.
    EndOffset {
        slot: usize,
        epoch: u64,
        high_watermark: i64,
    },
    /// A fetch failed; the fetcher backs off and tries again. For logs and health.
    Failed {
        slot: usize,
        epoch: u64,
        error: String,
    },
    /// The partition cannot be consumed (`auto.offset.reset=none` with no committed offset, or a
    /// corrupt batch under [`CorruptBatchPolicy::Stop`]).
    Fatal {
        slot: usize,
        epoch: u64,
        error: Error,
    },
}

/// What the fetcher shares with the engine.
pub(crate) struct FetchContext {
    pub(crate) group: Arc<GroupMember>,
    pub(crate) settings: FetchSettings,
    /// The consumer-wide buffer budget in bytes (`buffer_bytes`).
    pub(crate) budget: Arc<Semaphore>,
    /// `buffer_bytes`.
    pub(crate) budget_bytes: usize,
    pub(crate) out: mpsc::Sender<FetchEvent>,
    /// Broker tasks running: each takes at most its fair part of the budget per Fetch. Written by
    /// the router.
    brokers: AtomicUsize,
}

impl FetchContext {
    pub(crate) fn new(
        group: Arc<GroupMember>,
        settings: FetchSettings,
        budget_bytes: usize,
        out: mpsc::Sender<FetchEvent>,
    ) -> Self {
        Self {
            group,
            settings,
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            out,
            brokers: AtomicUsize::new(0),
        }
    }

    async fn send(&self, event: FetchEvent) -> bool {
        self.out.send(event).await.is_ok()
    }

    async fn report_failure(&self, cursor: &Cursor, error: String) {
        debug!(partition = %cursor.tp, %error, "fetch failed");
        self.send(FetchEvent::Failed {
            slot: cursor.slot,
            epoch: cursor.epoch,
            error,
        })
        .await;
    }
}

/// A partition's share of a response's budget reservation. Dropped when the last of its records is
/// finished; that wakes its broker task, which may have left the partition out of fetches meanwhile.
#[derive(Debug)]
pub(crate) struct BudgetShare {
    _permit: OwnedSemaphorePermit,
    wake: Arc<Notify>,
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

/// Memory a fetched record takes besides its bytes in the response: its entry in the chunk of
/// records the engine hands out ([`RecordChunk`](super::record::RecordChunk)), the handle to it in a
/// queue, and that queue slot.
const RECORD_MEMORY: usize = std::mem::size_of::<FetchedRecord>() + 16 + 8;

/// A partition holding this many times `max.partition.fetch.bytes` of unfinished response data is
/// not fetched until some drain: one response being processed and one waiting, as a
/// partition-per-task fetcher would prefetch. Counted in response bytes, not in budget shares
/// (which add the records' in-memory form and would pause 100-byte records after one response).
const PAUSE_AT: usize = 2;

/// How much one broker's Fetch reserves before it is sent: twice what it may return (a full
/// response, and as much again for the records built from it: a response of 100-byte records takes
/// about as much memory again in record headers). What it may return is `fetch.max.bytes`, or less
/// when its `partitions` cannot fill that; it is capped by a fair part of the budget among the
/// `brokers` fetching, but never below one partition's full fetch, and never above the whole
/// budget, so one Fetch can always start.
pub(crate) fn reservation(
    settings: &FetchSettings,
    partitions: usize,
    brokers: usize,
    budget: usize,
) -> usize {
    let per_partition = settings.max_partition_bytes.saturating_mul(2);
    let want = settings
        .max_bytes
        .min(
            settings
                .max_partition_bytes
                .saturating_mul(partitions.max(1)),
        )
        .saturating_mul(2);
    let fair = (budget / brokers.max(1)).max(per_partition);
    want.min(fair).min(budget).max(1)
}

/// A partition being fetched, for the engine: dropping it stops fetching the partition at once.
#[derive(Debug)]
pub(crate) struct Fetching {
    removed: Arc<AtomicBool>,
}

impl Drop for Fetching {
    fn drop(&mut self) {
        self.removed.store(true, Ordering::Release);
    }
}

/// The fetcher of one consumer; dropping it stops every broker task.
pub(crate) struct Fetcher {
    to_router: mpsc::UnboundedSender<ToRouter>,
    _router: OwnedTask<()>,
}

impl Fetcher {
    pub(crate) fn new(ctx: Arc<FetchContext>) -> Self {
        let (to_router, rx) = mpsc::unbounded_channel();
        let router = Router {
            ctx,
            rx,
            to_router: to_router.downgrade(),
            brokers: HashMap::new(),
            backoff: None,
        };
        Self {
            to_router,
            _router: OwnedTask::spawn(router.run()),
        }
    }

    /// Starts fetching `tp` for the tenure (`slot`, `epoch`), from its committed offset (else
    /// `auto.offset.reset`), until the handle is dropped.
    pub(crate) fn add(&self, tp: TopicPartition, slot: usize, epoch: u64) -> Fetching {
        let removed = Arc::new(AtomicBool::new(false));
        let cursor = Cursor {
            tp,
            slot,
            epoch,
            removed: Arc::clone(&removed),
            start: Start::Unknown,
            offset: 0,
            leader_epoch: -1,
            backoff: Retry::default(),
            retry_at: None,
            held: Vec::new(),
            replica: None,
        };
        let _ = self.to_router.send(ToRouter::Add(cursor));
        Fetching { removed }
    }
}

/// Where a cursor is in finding its start offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The committed offset is not known yet (the router asks).
    Unknown,
    /// Nothing committed: the leader is asked for the reset policy's offset.
    Reset,
    /// `Started` was sent; `offset` is the next to fetch.
    Fetching,
    /// `offset` fell out of the log (OFFSET_OUT_OF_RANGE): the leader is asked for the reset
    /// policy's offset.
    OutOfRange,
}

/// One partition's fetch state. Owned by exactly one place at a time: the router, or the broker
/// task of the partition's leader.
struct Cursor {
    tp: TopicPartition,
    slot: usize,
    epoch: u64,
    /// Set when the engine drops the partition's [`Fetching`] handle.
    removed: Arc<AtomicBool>,
    start: Start,
    /// The next offset to fetch (once `start` is `Fetching`).
    offset: i64,
    /// The leader epoch Metadata gave (-1: unknown); sent with requests so that a stale leader
    /// answers FENCED_LEADER_EPOCH.
    leader_epoch: i32,
    /// Backoff between leader lookups after errors; reset by a successful fetch.
    backoff: Retry,
    /// When the router may look the leader up again.
    retry_at: Option<Instant>,
    /// Shares of this partition's responses (and their response bytes) that may still be held by
    /// records.
    held: Vec<(std::sync::Weak<BudgetShare>, usize)>,
    /// The follower the leader said to read from (KIP-392), while fetching from it. `None`: the
    /// partition is fetched from its leader.
    replica: Option<ReadReplica>,
}

/// A preferred read replica, used until `until` (`metadata.max.age.ms` after the leader named it)
/// or its first error, whichever comes first; then the partition goes back to its leader.
#[derive(Debug, Clone, Copy)]
struct ReadReplica {
    node: i32,
    until: Instant,
}

impl Cursor {
    fn removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Response bytes of this partition's records not finished yet.
    fn held_bytes(&mut self) -> usize {
        self.held.retain(|(w, _)| w.strong_count() > 0);
        self.held.iter().map(|(_, n)| n).sum()
    }

    /// The follower to fetch from, if the leader named one that is still valid.
    fn read_replica(&self) -> Option<i32> {
        self.replica
            .filter(|r| Instant::now() < r.until)
            .map(|r| r.node)
    }

    /// Schedules the next leader lookup after this partition's backoff.
    fn back_off(&mut self, policy: &BackoffPolicy) {
        let delay = self.backoff.next(policy);
        self.retry_at = Some(Instant::now() + delay);
    }
}

enum ToRouter {
    /// A newly assigned partition.
    Add(Cursor),
    /// Partitions a broker task gave up (leader moved, connection broken): look their leaders up.
    Homeless(Vec<Cursor>),
}

struct BrokerHandle {
    to_broker: mpsc::UnboundedSender<Cursor>,
    _task: OwnedTask<()>,
}

/// Finds start offsets and leaders, and hands cursors to broker tasks (which it owns).
struct Router {
    ctx: Arc<FetchContext>,
    rx: mpsc::UnboundedReceiver<ToRouter>,
    /// Given to broker tasks to hand cursors back; weak so that the router's own handle is the
    /// last strong sender.
    to_router: mpsc::WeakUnboundedSender<ToRouter>,
    /// Broker tasks by node id and address.
    brokers: HashMap<(i32, String), BrokerHandle>,
    /// Backoff after a failed OffsetFetch or Metadata request, and until when it holds.
    backoff: Option<(Retry, Instant)>,
}

impl Router {
    async fn run(mut self) {
        let mut unstarted: Vec<Cursor> = Vec::new();
        let mut homeless: Vec<Cursor> = Vec::new();
        loop {
            unstarted.retain(|c| !c.removed());
            homeless.retain(|c| !c.removed());
            let now = Instant::now();
            let blocked = self.backoff.as_ref().is_some_and(|(_, until)| now < *until);
            if !blocked && !unstarted.is_empty() {
                let batch = std::mem::take(&mut unstarted);
                match self.find_committed(batch).await {
                    Ok(found) => homeless.extend(found),
                    Err(back) => unstarted = back,
                }
            }
            let now = Instant::now();
            let blocked = self.backoff.as_ref().is_some_and(|(_, until)| now < *until);
            if !blocked && homeless.iter().any(|c| c.retry_at.is_none_or(|t| t <= now)) {
                let (due, later): (Vec<Cursor>, Vec<Cursor>) = std::mem::take(&mut homeless)
                    .into_iter()
                    .partition(|c| c.retry_at.is_none_or(|t| t <= now));
                homeless = later;
                homeless.extend(self.route(due).await);
            }
            let wake_at = homeless
                .iter()
                .filter_map(|c| c.retry_at)
                .chain(self.backoff.as_ref().map(|(_, until)| *until))
                .filter(|_| !homeless.is_empty() || !unstarted.is_empty())
                .min();
            tokio::select! {
                message = self.rx.recv() => match message {
                    Some(ToRouter::Add(c)) => unstarted.push(c),
                    Some(ToRouter::Homeless(cs)) => homeless.extend(cs),
                    None => return,
                },
                _ = sleep_until(wake_at) => {}
            }
            // Take everything already sent, so partitions assigned together are looked up together.
            while let Ok(message) = self.rx.try_recv() {
                match message {
                    ToRouter::Add(c) => unstarted.push(c),
                    ToRouter::Homeless(cs) => homeless.extend(cs),
                }
            }
        }
    }

    fn failed(&mut self) -> Duration {
        let policy = &self.ctx.settings.backoff;
        let (backoff, _) = self
            .backoff
            .get_or_insert_with(|| (Retry::default(), Instant::now()));
        let delay = backoff.next(policy);
        self.backoff.as_mut().expect("set above").1 = Instant::now() + delay;
        delay
    }

    /// Looks up the committed offsets of `cursors` (one OffsetFetch) and sends `Started` for those
    /// with one; the others start from the reset policy, asked of their leader. On a retriable
    /// failure the cursors come back to be tried again after the backoff.
    async fn find_committed(
        &mut self,
        cursors: Vec<Cursor>,
    ) -> std::result::Result<Vec<Cursor>, Vec<Cursor>> {
        let tps: Vec<TopicPartition> = cursors.iter().map(|c| c.tp.clone()).collect();
        let committed = match self.ctx.group.committed(&tps).await {
            Ok(committed) => committed,
            Err(e) if e.is_retriable() => {
                self.failed();
                for c in &cursors {
                    self.ctx
                        .report_failure(c, format!("finding the start offset of {}: {e}", c.tp))
                        .await;
                }
                return Err(cursors);
            }
            Err(error) => {
                // The consumer stops on the first Fatal; one is enough.
                if let Some(c) = cursors.iter().find(|c| !c.removed()) {
                    self.ctx
                        .send(FetchEvent::Fatal {
                            slot: c.slot,
                            epoch: c.epoch,
                            error,
                        })
                        .await;
                }
                return Ok(Vec::new());
            }
        };
        self.backoff = None;
        let mut out = Vec::with_capacity(cursors.len());
        for mut c in cursors {
            match committed.get(&c.tp).cloned().flatten() {
                Some(commit) => {
                    if c.removed() {
                        continue;
                    }
                    info!(partition = %c.tp, offset = commit.offset, "fetching from the committed offset");
                    c.offset = commit.offset;
                    c.start = Start::Fetching;
                    self.ctx
                        .send(FetchEvent::Started {
                            slot: c.slot,
                            epoch: c.epoch,
                            offset: commit.offset,
                            from_commit: true,
                            committed_metadata: commit.metadata,
                        })
                        .await;
                }
                None => c.start = Start::Reset,
            }
            out.push(c);
        }
        Ok(out)
    }

    /// Hands `cursors` to their leaders' broker tasks; returns those without a leader right now.
    async fn route(&mut self, cursors: Vec<Cursor>) -> Vec<Cursor> {
        let topics: Vec<String> = cursors
            .iter()
            .map(|c| c.tp.topic.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let leaders = match self.ctx.group.leaders(&topics).await {
            Ok(leaders) => leaders,
            Err(e) => {
                let delay = self.failed();
                debug!(error = %e, ?delay, "looking up partition leaders failed; retrying");
                for c in &cursors {
                    self.ctx
                        .report_failure(c, format!("looking up the leader of {}: {e}", c.tp))
                        .await;
                }
                return cursors;
            }
        };
        self.backoff = None;
        let mut unplaced = Vec::new();
        for mut c in cursors {
            let leader = leaders.partitions.get(&c.tp).and_then(|&(node, epoch)| {
                // Metadata older than what the partition was fetched under: ask again later.
                (epoch >= c.leader_epoch || epoch < 0).then_some((
                    node,
                    epoch,
                    leaders.brokers.get(&node)?,
                ))
            });
            let Some((leader, epoch, leader_address)) = leader else {
                c.back_off(&self.ctx.settings.backoff);
                self.ctx
                    .report_failure(&c, format!("{} has no known leader yet", c.tp))
                    .await;
                unplaced.push(c);
                continue;
            };
            c.leader_epoch = epoch;
            c.retry_at = None;
            // A preferred read replica still valid and still in the cluster is fetched from instead.
            let replica = c
                .read_replica()
                .and_then(|node| Some((node, leaders.brokers.get(&node)?)));
            let (node, address) = match replica {
                Some((node, address)) => {
                    info!(partition = %c.tp, replica = %address, node, leader, "fetching from the preferred read replica");
                    (node, address)
                }
                None => {
                    c.replica = None;
                    debug!(partition = %c.tp, leader = %leader_address, node = leader, leader_epoch = epoch, "fetching from the leader");
                    (leader, leader_address)
                }
            };
            let address = address.clone();
            let handle = self.broker(node, address);
            if let Err(mpsc::error::SendError(c)) = handle.to_broker.send(c) {
                unplaced.push(c);
            }
        }
        unplaced
    }

    /// The broker task of `node` at `address`, started if there is none. Keyed by both: a node
    /// that moved to another address gets a new task, while the old one keeps its partitions until
    /// its connection fails and hands them back (dropping it would drop them).
    fn broker(&mut self, node: i32, address: String) -> &BrokerHandle {
        let key = (node, address);
        if !self.brokers.contains_key(&key) {
            let (to_broker, rx) = mpsc::unbounded_channel();
            let task = broker::BrokerTask::new(
                Arc::clone(&self.ctx),
                node,
                key.1.clone(),
                rx,
                self.to_router.clone(),
            );
            self.brokers.insert(
                key.clone(),
                BrokerHandle {
                    to_broker,
                    _task: OwnedTask::spawn(task.run()),
                },
            );
            self.ctx
                .brokers
                .store(self.brokers.len(), Ordering::Relaxed);
        }
        &self.brokers[&key]
    }
}

/// Failed attempts of one retried operation, for [`BackoffPolicy::delay`]. (Not
/// [`kafkit_resilience::Backoff`]: its jitter source is not `Sync`, and cursors are borrowed across
/// awaits.)
#[derive(Debug, Default)]
struct Retry {
    attempts: u32,
}

impl Retry {
    /// The delay before the next attempt; counts one failure.
    fn next(&mut self, policy: &BackoffPolicy) -> Duration {
        use std::hash::BuildHasher;
        // Jitter from the standard library's per-process random hash keys.
        let bits = std::collections::hash_map::RandomState::new().hash_one(self.attempts);
        let unit = (bits >> 11) as f64 / (1u64 << 53) as f64;
        let delay = policy.delay(self.attempts, unit);
        self.attempts = self.attempts.saturating_add(1);
        delay
    }

    fn reset(&mut self) {
        self.attempts = 0;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_partition_bytes: usize, max_bytes: usize) -> FetchSettings {
        FetchSettings {
            max_partition_bytes,
            max_bytes,
            max_wait: Duration::from_millis(500),
            request_timeout: Duration::from_secs(30),
            backoff: BackoffPolicy::new(
                Duration::from_millis(1),
                Duration::from_millis(2),
                2.0,
                0.0,
            )
            .unwrap(),
            reset: OffsetReset::Earliest,
            corrupt: CorruptBatchPolicy::Skip,
            rack: None,
            replica_max_age: Duration::from_secs(300),
            max_idle: Duration::from_secs(540),
        }
    }

    #[test]
    fn a_fetch_reserves_twice_what_it_may_return_within_its_fair_part() {
        const MIB: usize = 1024 * 1024;
        // (max.partition.fetch.bytes, fetch.max.bytes, partitions, brokers, budget) -> reserved
        let cases = [
            // One partition: one full partition fetch, twice.
            (MIB, 50 * MIB, 1, 1, 64 * MIB, 2 * MIB),
            // 12 partitions on one broker: 12 MiB may come back.
            (MIB, 50 * MIB, 12, 1, 64 * MIB, 24 * MIB),
            // 512 partitions: fetch.max.bytes bounds the response; the budget bounds the reservation.
            (MIB, 50 * MIB, 512, 1, 64 * MIB, 64 * MIB),
            (MIB, 50 * MIB, 512, 1, 256 * MIB, 100 * MIB),
            // Three brokers share the budget.
            (MIB, 50 * MIB, 512, 3, 64 * MIB, 64 * MIB / 3),
            // ... but each may always take one partition's full fetch.
            (MIB, 50 * MIB, 512, 64, 64 * MIB, 2 * MIB),
            // A budget below one partition's fetch: the whole budget.
            (4 * MIB, 50 * MIB, 1, 1, 4 * MIB, 4 * MIB),
            // No partition yet still reserves something.
            (MIB, 50 * MIB, 0, 0, 64 * MIB, 2 * MIB),
        ];
        for (mpb, max, partitions, brokers, budget, expected) in cases {
            assert_eq!(
                reservation(&settings(mpb, max), partitions, brokers, budget),
                expected,
                "{mpb} {max} {partitions} {brokers} {budget}"
            );
        }
    }
}
