//! The immutable plain data a [`Metrics::publish`](crate::Metrics::publish) produces and readers share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::CircuitState;

/// Record and commit counts, per topic or summed over all topics.
///
/// For records that go through the stages in the documented order (consumed, processed, then acked or
/// failed, then panicked if the handler panicked, then retried or dead-lettered) a snapshot never shows a
/// later stage ahead of an earlier one: `acked + failed <= processed <= consumed`, `panicked <= failed`
/// and `retried + dead_lettered <= failed` hold per topic and in
/// the totals, as long as the topic stays tracked (see [`Metrics`](crate::Metrics) for what eviction does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Records the broker acknowledged to the producer.
    pub produced: u64,
    /// Records fetched and handed to the application.
    pub consumed: u64,
    /// Records the handler finished with, successfully or not.
    pub processed: u64,
    /// Records whose processing succeeded and whose offset may be committed.
    pub acked: u64,
    /// Records whose processing failed.
    pub failed: u64,
    /// Failed attempts in which the handler panicked (each also counted in `failed`).
    pub panicked: u64,
    /// Failed records scheduled for another attempt.
    pub retried: u64,
    /// Failed records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Successful offset commits.
    pub commits: u64,
    /// Failed offset commits.
    pub commit_failures: u64,
    /// Fetched record batches that could not be decoded and were skipped (their records never
    /// reached `consumed`).
    pub corrupt_batches: u64,
    /// Share groups: records acquired (handed to this member under a lock).
    pub share_acquired: u64,
    /// Share groups: acquired records delivered before (delivery count above 1).
    pub share_redelivered: u64,
    /// Share groups: records acknowledged as accepted (the broker took it).
    pub share_accepted: u64,
    /// Share groups: records acknowledged as released (to be delivered again).
    pub share_released: u64,
    /// Share groups: records acknowledged as rejected (never delivered again).
    pub share_rejected: u64,
    /// Share groups: records not acknowledged because their acquisition lock ran out first.
    pub share_lock_expired: u64,
    /// Share groups: acquired records by delivery count: 1, 2, 3, 4, and 5 or more.
    pub share_deliveries: [u64; 5],
}

impl Counters {
    /// Adds `other` into `self`, saturating.
    pub(crate) fn add(&mut self, other: &Counters) {
        self.produced = self.produced.saturating_add(other.produced);
        self.consumed = self.consumed.saturating_add(other.consumed);
        self.processed = self.processed.saturating_add(other.processed);
        self.acked = self.acked.saturating_add(other.acked);
        self.failed = self.failed.saturating_add(other.failed);
        self.panicked = self.panicked.saturating_add(other.panicked);
        self.retried = self.retried.saturating_add(other.retried);
        self.dead_lettered = self.dead_lettered.saturating_add(other.dead_lettered);
        self.commits = self.commits.saturating_add(other.commits);
        self.commit_failures = self.commit_failures.saturating_add(other.commit_failures);
        self.corrupt_batches = self.corrupt_batches.saturating_add(other.corrupt_batches);
        self.share_acquired = self.share_acquired.saturating_add(other.share_acquired);
        self.share_redelivered = self
            .share_redelivered
            .saturating_add(other.share_redelivered);
        self.share_accepted = self.share_accepted.saturating_add(other.share_accepted);
        self.share_released = self.share_released.saturating_add(other.share_released);
        self.share_rejected = self.share_rejected.saturating_add(other.share_rejected);
        self.share_lock_expired = self
            .share_lock_expired
            .saturating_add(other.share_lock_expired);
        for (mine, theirs) in self.share_deliveries.iter_mut().zip(other.share_deliveries) {
            *mine = mine.saturating_add(theirs);
        }
    }
}

/// Averages and quantiles of one timing series of one topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimingSnapshot {
    /// Samples since the topic was first seen.
    pub count: u64,
    /// Sum of those samples.
    pub sum: Duration,
    /// Mean of the last `moving_average_window` samples, or of all samples when the moving average is
    /// disabled; `None` before the first sample.
    pub average: Option<Duration>,
    /// Median since the topic was first seen, within the histogram's error bound
    /// (see [`MetricsConfig::histogram_precision_bits`](crate::MetricsConfig::histogram_precision_bits)).
    pub p50: Option<Duration>,
    /// 95th percentile, within the same bound.
    pub p95: Option<Duration>,
    /// 99th percentile, within the same bound.
    pub p99: Option<Duration>,
}

/// Everything recorded for one topic still tracked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicSnapshot {
    /// The topic.
    pub topic: Arc<str>,
    /// Its counters.
    pub counters: Counters,
    /// Produce latency: from send to broker acknowledgement.
    pub produce_time: TimingSnapshot,
    /// Processing time of the application's handler.
    pub process_time: TimingSnapshot,
}

/// Lag of one partition as one group sees it: the same numbers as `kafka-consumer-groups --describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionLag {
    /// The consumer group.
    pub group: Arc<str>,
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The log end offset from the last fetch response (`LOG-END-OFFSET`).
    pub high_watermark: i64,
    /// The group's committed offset (`CURRENT-OFFSET`).
    pub committed_offset: i64,
    /// `high_watermark - committed_offset`, never negative (`LAG`).
    pub lag: i64,
}

/// Lag and rebalances of one consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupSnapshot {
    /// The consumer group.
    pub group: Arc<str>,
    /// Sum of the lag of its partitions in [`MetricsSnapshot::partitions`].
    pub lag: i64,
    /// How many partitions that sum covers.
    pub partitions: usize,
    /// Rebalances this client went through in the group.
    pub rebalances: u64,
}

/// The instantaneous values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GaugeSnapshot {
    /// Records handed to the application and not yet acked or failed.
    pub records_in_flight: i64,
    /// Bytes held in fetch and produce buffers.
    pub buffered_bytes: i64,
    /// Producers alive.
    pub active_producers: i64,
    /// Consumers alive.
    pub active_consumers: i64,
    /// The circuit breaker's state.
    pub circuit_state: CircuitState,
    /// The circuit breaker's consecutive failures, from the same update as `circuit_state`.
    pub circuit_failures: u64,
}

impl Default for GaugeSnapshot {
    /// Every gauge at 0 and the breaker closed with no failures: the values before anything is recorded.
    fn default() -> Self {
        Self {
            records_in_flight: 0,
            buffered_bytes: 0,
            active_producers: 0,
            active_consumers: 0,
            circuit_state: CircuitState::Closed,
            circuit_failures: 0,
        }
    }
}

/// An immutable view of all metrics at one publish. Plain data: clone it, keep it, serialise it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Publish number: 0 for the empty snapshot before the first publish, then 1, 2, … Successive
    /// snapshots with higher numbers have counters that are each greater or equal.
    pub sequence: u64,
    /// When it was published.
    pub published_at: Instant,
    /// Counters summed over every topic ever recorded, including evicted ones.
    pub totals: Counters,
    /// Tracked topics, sorted by name.
    pub topics: Vec<TopicSnapshot>,
    /// Topics evicted from tracking so far because more than `max_topic_stats` were recorded.
    pub topics_evicted: u64,
    /// Partition lag, sorted by group, topic and partition.
    pub partitions: Vec<PartitionLag>,
    /// Groups, sorted by name.
    pub groups: Vec<GroupSnapshot>,
    /// Instantaneous values.
    pub gauges: GaugeSnapshot,
}

impl MetricsSnapshot {
    /// The snapshot readers see before the first publish.
    pub(crate) fn empty() -> Self {
        Self {
            sequence: 0,
            published_at: Instant::now(),
            totals: Counters::default(),
            topics: Vec::new(),
            topics_evicted: 0,
            partitions: Vec::new(),
            groups: Vec::new(),
            gauges: GaugeSnapshot::default(),
        }
    }

    /// The statistics of `topic`, if it is tracked.
    pub fn topic(&self, topic: &str) -> Option<&TopicSnapshot> {
        self.topics
            .binary_search_by(|t| (*t.topic).cmp(topic))
            .ok()
            .map(|i| &self.topics[i])
    }

    /// Lag and rebalances of `group`, if anything was recorded for it.
    pub fn group(&self, group: &str) -> Option<&GroupSnapshot> {
        self.groups
            .binary_search_by(|g| (*g.group).cmp(group))
            .ok()
            .map(|i| &self.groups[i])
    }

    /// The lag of one partition for one group.
    pub fn partition(&self, group: &str, topic: &str, partition: i32) -> Option<&PartitionLag> {
        self.partitions
            .binary_search_by(|p| {
                (&*p.group, &*p.topic, p.partition).cmp(&(group, topic, partition))
            })
            .ok()
            .map(|i| &self.partitions[i])
    }
}
