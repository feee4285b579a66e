//! What the consumer observes about itself, for health reports: fetch progress per partition, total
//! lag samples, and the membership. Written by the engine, read by [`HealthHandle`]s.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::Utc;
use kafkit_resilience::{
    CircuitBreaker, HealthInputs, HealthPolicy, HealthReport, PartitionProgress, SkippedBatch,
};
use tokio::time::Instant;

use crate::group::{GroupMember, TopicPartition};

/// How many lag samples (one per commit interval) the lag trend looks at.
const LAG_SAMPLES: usize = 12;
/// How many skipped undecodable batches the board remembers (the most recent).
const SKIPPED_KEPT: usize = 16;

#[derive(Debug)]
struct PartitionStatus {
    last_fetch: Instant,
    high_watermark: i64,
    position: i64,
}

#[derive(Debug, Default)]
struct Board {
    partitions: BTreeMap<TopicPartition, PartitionStatus>,
    lag_samples: VecDeque<u64>,
    paused: bool,
    /// Undecodable batches skipped, oldest first, with when.
    skipped: VecDeque<(Instant, Skipped)>,
}

/// An undecodable batch the fetcher moved past.
#[derive(Debug, Clone)]
pub(crate) struct Skipped {
    pub(crate) tp: TopicPartition,
    pub(crate) offset: i64,
    pub(crate) skipped_to: i64,
    pub(crate) reason: String,
}

/// Shared between the engine and health handles. parking_lot Mutex: the engine takes it once per
/// fetch response and per commit interval, readers once per report; never held across an await.
#[derive(Debug, Default)]
pub(crate) struct StatusBoard {
    board: parking_lot::Mutex<Board>,
    member: OnceLock<Arc<GroupMember>>,
}

impl StatusBoard {
    pub(crate) fn set_member(&self, member: Arc<GroupMember>) {
        let _ = self.member.set(member);
    }

    /// The group member, once the consumer runs.
    pub(crate) fn member(&self) -> Option<Arc<GroupMember>> {
        self.member.get().cloned()
    }

    /// A fetch response (possibly empty) arrived for `tp`.
    pub(crate) fn fetched(&self, tp: &TopicPartition, high_watermark: i64, position: i64) {
        let mut b = self.board.lock();
        let entry = b.partitions.entry(tp.clone()).or_insert(PartitionStatus {
            last_fetch: Instant::now(),
            high_watermark,
            position,
        });
        entry.last_fetch = Instant::now();
        entry.high_watermark = high_watermark;
        entry.position = position;
    }

    /// `tp` was assigned: fetching starts now.
    pub(crate) fn assigned(&self, tp: &TopicPartition) {
        self.board.lock().partitions.insert(
            tp.clone(),
            PartitionStatus {
                last_fetch: Instant::now(),
                high_watermark: -1,
                position: -1,
            },
        );
    }

    /// `tp` is no longer owned.
    pub(crate) fn released(&self, tp: &TopicPartition) {
        self.board.lock().partitions.remove(tp);
    }

    /// Dispatch is paused on purpose (the breaker is open): fetch stalls are not problems then.
    pub(crate) fn set_paused(&self, paused: bool) {
        self.board.lock().paused = paused;
    }

    /// The fetcher skipped a batch it could not decode.
    pub(crate) fn skipped(&self, skipped: Skipped) {
        let mut b = self.board.lock();
        if b.skipped.len() == SKIPPED_KEPT {
            b.skipped.pop_front();
        }
        b.skipped.push_back((Instant::now(), skipped));
    }

    /// Records the total lag now (high watermark minus committed watermark, summed).
    pub(crate) fn sample_lag(&self, total: u64) {
        let mut b = self.board.lock();
        if b.lag_samples.len() == LAG_SAMPLES {
            b.lag_samples.pop_front();
        }
        b.lag_samples.push_back(total);
    }

    fn inputs(&self, breaker: Option<&CircuitBreaker>, session_timeout: Duration) -> HealthInputs {
        let status = self.member.get().map(|m| m.status());
        let b = self.board.lock();
        HealthInputs {
            coordinator_reachable: status.as_ref().is_some_and(|s| s.coordinator_reachable),
            fixed_assignment: status.as_ref().is_some_and(|s| s.fixed_assignment),
            since_last_heartbeat: status.and_then(|s| s.last_heartbeat).map(|t| t.elapsed()),
            session_timeout,
            partitions: b
                .partitions
                .iter()
                .map(|(tp, p)| PartitionProgress {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    since_last_fetch: p.last_fetch.elapsed(),
                    paused: b.paused,
                })
                .collect(),
            breaker: breaker.map(CircuitBreaker::state),
            lag_samples: b.lag_samples.iter().copied().collect(),
            skipped_batches: b
                .skipped
                .iter()
                .map(|(at, s)| SkippedBatch {
                    topic: s.tp.topic.clone(),
                    partition: s.tp.partition,
                    offset: s.offset,
                    skipped_to: s.skipped_to,
                    reason: s.reason.clone(),
                    since: at.elapsed(),
                })
                .collect(),
        }
    }
}

/// Reports a consumer's health, for a readiness probe. Cheap to clone; usable from any task.
#[derive(Debug, Clone)]
pub struct HealthHandle {
    pub(crate) board: Arc<StatusBoard>,
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) policy: HealthPolicy,
    pub(crate) session_timeout: Duration,
}

impl HealthHandle {
    /// The consumer's health now: coordinator reachability, heartbeats, fetch progress per partition,
    /// the breaker, and the lag trend. Healthy, degraded or unhealthy, with reasons.
    pub fn report(&self) -> HealthReport {
        let inputs = self
            .board
            .inputs(self.breaker.as_ref(), self.session_timeout);
        self.policy.evaluate(&inputs, Utc::now())
    }
}
