//! [`Metrics`], the handle the consumer and producer hot paths record into, and the publish step that
//! turns what they recorded into a [`MetricsSnapshot`].

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use crate::gauges::Gauges;
use crate::groups::Groups;
use crate::histogram::HistogramLayout;
use crate::timing::TimingConfig;
use crate::topics::{TopicStats, Topics};
use crate::{CircuitState, Gauge, MetricsConfig, MetricsSnapshot};

/// Client metrics: a cheap-to-clone, `Send + Sync` handle; every clone records into the same statistics.
///
/// # Recording
/// For one record the consumer calls, in this order, [`record_consumed`](Self::record_consumed),
/// [`record_processed`](Self::record_processed), then [`record_acked`](Self::record_acked) or
/// [`record_failed`](Self::record_failed), then, for a failure, [`record_panicked`](Self::record_panicked) if
/// the handler panicked, then [`record_retried`](Self::record_retried) or
/// [`record_dead_lettered`](Self::record_dead_lettered). A counter-only call costs one hash lookup in a
/// wait-free index and one atomic add; a timing call adds one uncontended per-topic mutex.
///
/// # Reading, and what a reader may see
/// [`snapshot`](Self::snapshot) loads the last published [`MetricsSnapshot`] from an `ArcSwap`: it takes no
/// lock and writes nothing the hot path reads or writes, so readers polling it in a tight loop do not slow
/// recording down. [`publish`](Self::publish) builds the next snapshot (run it periodically with
/// [`spawn_publisher`](Self::spawn_publisher)); it is the only reader of the live counters. Guarantees:
/// - a snapshot is immutable, and all of it comes from one publish;
/// - within a topic and in the totals, no later stage is ahead of an earlier one for records recorded in
///   the order above (counters are incremented with `Release` and read later stage first with `Acquire`),
///   so `acked + failed <= processed <= consumed`. This holds while topics stay tracked: a topic evicted
///   and seen again starts from zero, so a record that straddles that counts only in its later stages;
/// - counters and totals never decrease from one snapshot to the next: publishes are serialised with each
///   other and with evictions, and an evicted topic's counts move into the totals in the same critical
///   section that removes it;
/// - a snapshot is not a point in time across topics: records made while a publish runs may appear for one
///   topic and not yet for another; each partition's high watermark and committed offset are a coherent
///   pair, as are the breaker's state and failure count.
///
/// A publish locks each topic's timing mutexes once, for a pass over the histogram buckets (a few hundred
/// counters), so a writer waits at most that long, once per publish interval.
///
/// ```
/// use std::time::Duration;
/// use kafkit_metrics::{CircuitState, Metrics};
///
/// let metrics = Metrics::default();
/// let _consumer = metrics.consumer_active();
/// metrics.record_produced("audit", Duration::from_millis(3));
/// metrics.set_circuit_breaker(CircuitState::Open, 5);
///
/// assert_eq!(metrics.snapshot().sequence, 0); // nothing published yet
/// let snapshot = metrics.publish();
/// assert_eq!(snapshot.totals.produced, 1);
/// assert_eq!(snapshot.gauges.active_consumers, 1);
/// assert_eq!(snapshot.gauges.circuit_state, CircuitState::Open);
/// assert_eq!(metrics.snapshot().sequence, 1);
/// ```
#[derive(Clone)]
pub struct Metrics {
    shared: Arc<Shared>,
}

struct Shared {
    config: MetricsConfig,
    topics: Topics,
    groups: Groups,
    gauges: Gauges,
    /// Written only by `publish`, while the topic registry is locked; loaded by readers.
    published: ArcSwap<MetricsSnapshot>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    /// Metrics with [`MetricsConfig::default`].
    fn default() -> Self {
        Self::new(MetricsConfig::default())
    }
}

impl Metrics {
    /// Metrics with `config` (already validated by its builder).
    pub fn new(config: MetricsConfig) -> Self {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let timing = TimingConfig {
            window: config
                .moving_average_enabled()
                .then_some(config.moving_average_window()),
            layout: HistogramLayout::new(
                config.histogram_precision_bits(),
                nanos(config.histogram_resolution()),
                nanos(config.histogram_max()),
            ),
        };
        let max_topics = NonZeroUsize::new(config.max_topic_stats()).unwrap_or(NonZeroUsize::MIN);
        Self {
            shared: Arc::new(Shared {
                topics: Topics::new(max_topics, timing),
                groups: Groups::default(),
                gauges: Gauges::default(),
                published: ArcSwap::from_pointee(MetricsSnapshot::empty()),
                config,
            }),
        }
    }

    /// The configuration this instance was built with.
    pub fn config(&self) -> &MetricsConfig {
        &self.shared.config
    }

    /// One record of `topic` was acknowledged by the broker `latency` after it was sent.
    pub fn record_produced(&self, topic: &str, latency: Duration) {
        self.shared.topics.with(topic, |s| {
            s.record_produce_time(latency);
            TopicStats::bump(&s.produced, 1);
        });
    }

    /// `records` records of `topic` were fetched and handed to the application.
    pub fn record_consumed(&self, topic: &str, records: u64) {
        self.shared
            .topics
            .with(topic, |s| TopicStats::bump(&s.consumed, records));
    }

    /// The handler finished one record of `topic` (successfully or not) after `elapsed`.
    pub fn record_processed(&self, topic: &str, elapsed: Duration) {
        self.shared.topics.with(topic, |s| {
            s.record_process_time(elapsed);
            TopicStats::bump(&s.processed, 1);
        });
    }

    /// One processed record of `topic` succeeded; its offset may be committed.
    pub fn record_acked(&self, topic: &str) {
        self.shared
            .topics
            .with(topic, |s| TopicStats::bump(&s.acked, 1));
    }

    /// One processed record of `topic` failed.
    pub fn record_failed(&self, topic: &str) {
        self.shared
            .topics
            .with(topic, |s| TopicStats::bump(&s.failed, 1));
    }

    /// The handler panicked on one record of `topic`; that attempt is also counted as failed
    /// ([`record_failed`](Self::record_failed), called first).
    pub fn record_panicked(&self, topic: &str) {
        self.shared
            .topics
            .with(topic, |s| TopicStats::bump(&s.panicked, 1));
    }

    /// A fetched batch of `topic` could not be decoded and was skipped.
    pub fn record_corrupt_batch(&self, topic: &str) {
        self.shared
            .topics
            .with(topic, |s| TopicStats::bump(&s.corrupt_batches, 1));
    }

    /// One failed record of `topic` was scheduled for another attempt.
    pub fn record_retried(&self, topic: &str) {
        self.shared
            .topics
            .with(topic, |s| TopicStats::bump(&s.retried, 1));
    }

    /// One failed record of `topic` was sent to the dead-letter topic.
    pub fn record_dead_lettered(&self, topic: &str) {
        self.shared
            .topics
            .with(topic, |s| TopicStats::bump(&s.dead_lettered, 1));
    }

    /// Share groups: one record of `topic` was acquired, on its `delivery_count`th delivery.
    pub fn record_share_acquired(&self, topic: &str, delivery_count: u16) {
        self.shared.topics.with(topic, |s| {
            TopicStats::bump(&s.share_acquired, 1);
            if delivery_count > 1 {
                TopicStats::bump(&s.share_redelivered, 1);
            }
            let bucket = usize::from(delivery_count.clamp(1, 5)) - 1;
            TopicStats::bump(&s.share_deliveries[bucket], 1);
        });
    }

    /// Share groups: the broker took acknowledgements of `topic`: so many accepted, released and
    /// rejected records.
    pub fn record_share_acknowledged(
        &self,
        topic: &str,
        accepted: u64,
        released: u64,
        rejected: u64,
    ) {
        self.shared.topics.with(topic, |s| {
            TopicStats::bump(&s.share_accepted, accepted);
            TopicStats::bump(&s.share_released, released);
            TopicStats::bump(&s.share_rejected, rejected);
        });
    }

    /// Share groups: `records` records of `topic` were not acknowledged because their acquisition
    /// lock ran out first.
    pub fn record_share_lock_expired(&self, topic: &str, records: u64) {
        self.shared
            .topics
            .with(topic, |s| TopicStats::bump(&s.share_lock_expired, records));
    }

    /// Offsets of `topic` were committed.
    pub fn record_commit(&self, topic: &str) {
        self.shared
            .topics
            .with(topic, |s| TopicStats::bump(&s.commits, 1));
    }

    /// Committing offsets of `topic` failed.
    pub fn record_commit_failed(&self, topic: &str) {
        self.shared
            .topics
            .with(topic, |s| TopicStats::bump(&s.commit_failures, 1));
    }

    /// This client went through a rebalance of `group`. Counted per group: a rebalance concerns every
    /// topic of the group at once.
    pub fn record_rebalance(&self, group: &str) {
        self.shared.groups.record_rebalance(group);
    }

    /// A fetch response gave `high_watermark` for `topic`/`partition`, whose committed offset in `group` is
    /// `committed_offset`; the lag is their difference, never negative. Before the group's first commit,
    /// pass the offset the consumer started from. Replaces the previous numbers for that partition.
    pub fn record_partition_lag(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        high_watermark: i64,
        committed_offset: i64,
    ) {
        self.shared
            .groups
            .record_lag(group, topic, partition, high_watermark, committed_offset);
    }

    /// `topic`/`partition` was revoked from this client in `group`: stop reporting its lag.
    pub fn remove_partition_lag(&self, group: &str, topic: &str, partition: i32) {
        self.shared.groups.remove_lag(group, topic, partition);
    }

    /// Records handed to the application and not yet acked or failed.
    pub fn records_in_flight(&self) -> &Gauge {
        &self.shared.gauges.records_in_flight
    }

    /// Bytes held in fetch and produce buffers.
    pub fn buffered_bytes(&self) -> &Gauge {
        &self.shared.gauges.buffered_bytes
    }

    /// Counts one active producer until the returned guard is dropped.
    pub fn producer_active(&self) -> ActiveGuard {
        ActiveGuard::new(self, Role::Producer)
    }

    /// Counts one active consumer until the returned guard is dropped.
    pub fn consumer_active(&self) -> ActiveGuard {
        ActiveGuard::new(self, Role::Consumer)
    }

    /// The circuit breaker is now in `state` after `consecutive_failures`; both are published together.
    pub fn set_circuit_breaker(&self, state: CircuitState, consecutive_failures: u64) {
        self.shared.gauges.set_circuit(state, consecutive_failures);
    }

    /// The last published snapshot (sequence 0 and empty before the first publish). Takes no lock.
    pub fn snapshot(&self) -> Arc<MetricsSnapshot> {
        self.shared.published.load_full()
    }

    /// Builds a snapshot of everything recorded so far, makes it the one [`snapshot`](Self::snapshot)
    /// returns, and returns it. Also refreshes the topics' LRU recency. Costs O(tracked topics × histogram
    /// buckets); call it periodically, not per record.
    pub fn publish(&self) -> Arc<MetricsSnapshot> {
        let shared = &*self.shared;
        // Held to the end: serialises publishes (so sequence numbers and counters only grow as seen by
        // readers) and keeps evictions from moving counts into `retired` halfway through the sum.
        let mut registry = shared.topics.lock();
        registry.refresh_recency();
        let mut topics: Vec<_> = registry.topics().map(TopicStats::snapshot).collect();
        topics.sort_unstable_by(|a, b| a.topic.cmp(&b.topic));
        let mut totals = registry.retired;
        for topic in &topics {
            totals.add(&topic.counters);
        }
        let (partitions, groups) = shared.groups.snapshot();
        registry.sequence += 1;
        let snapshot = Arc::new(MetricsSnapshot {
            sequence: registry.sequence,
            published_at: Instant::now(),
            totals,
            topics,
            topics_evicted: registry.evicted,
            partitions,
            groups,
            gauges: shared.gauges.snapshot(),
        });
        shared.published.store(Arc::clone(&snapshot));
        snapshot
    }

    /// Publishes every [`MetricsConfig::publish_interval`] on the current tokio runtime (the first publish
    /// is immediate) until the returned task is dropped or every [`Metrics`] clone is gone.
    ///
    /// # Panics
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn spawn_publisher(&self) -> PublisherTask {
        // Weak: the task must not keep the metrics alive after their last user has gone.
        let metrics: Weak<Shared> = Arc::downgrade(&self.shared);
        let period = self.shared.config.publish_interval();
        let handle = tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            // After a stall, publish once and carry on; a burst of catch-up publishes would show nothing new.
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(shared) = metrics.upgrade() else {
                    tracing::debug!(
                        reason = "every Metrics handle was dropped",
                        "metrics publisher stopped"
                    );
                    return;
                };
                Metrics { shared }.publish();
            }
        });
        PublisherTask { handle }
    }
}

/// A [`Metrics`] that does not keep the statistics alive, for background tasks that should stop
/// once their last user has gone.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct WeakMetrics(Weak<Shared>);

#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
impl Metrics {
    pub(crate) fn downgrade(&self) -> WeakMetrics {
        WeakMetrics(Arc::downgrade(&self.shared))
    }

    pub(crate) fn upgrade(weak: &WeakMetrics) -> Option<Metrics> {
        weak.0.upgrade().map(|shared| Metrics { shared })
    }
}

/// The periodic publisher started by [`Metrics::spawn_publisher`]; dropping it stops the task.
#[derive(Debug)]
pub struct PublisherTask {
    handle: JoinHandle<()>,
}

impl Drop for PublisherTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Producer,
    Consumer,
}

/// Counts one active producer or consumer for as long as it lives: the gauge goes up when it is created and
/// down when it is dropped, so a client that panics or returns early is still uncounted.
#[must_use = "the client is counted only while the guard is alive"]
#[derive(Debug)]
pub struct ActiveGuard {
    metrics: Metrics,
    role: Role,
}

impl ActiveGuard {
    fn new(metrics: &Metrics, role: Role) -> Self {
        let guard = Self {
            metrics: metrics.clone(),
            role,
        };
        guard.gauge().add(1);
        guard
    }

    fn gauge(&self) -> &Gauge {
        let gauges = &self.metrics.shared.gauges;
        match self.role {
            Role::Producer => &gauges.active_producers,
            Role::Consumer => &gauges.active_consumers,
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.gauge().sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Counters;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread;

    fn us(v: u64) -> Duration {
        Duration::from_micros(v)
    }

    #[test]
    fn handle_is_send_sync_and_clones_share_state() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<Metrics>();
        let a = Metrics::default();
        let b = a.clone();
        b.record_consumed("t", 3);
        assert_eq!(a.publish().totals.consumed, 3);
    }

    type Call = fn(&Metrics);
    type Read = fn(&Counters) -> u64;

    #[test]
    fn every_call_lands_in_its_counter() {
        let m = Metrics::default();
        let calls: [(&str, Call, Read); 11] = [
            (
                "produced",
                |m| m.record_produced("t", us(5)),
                |c| c.produced,
            ),
            ("consumed", |m| m.record_consumed("t", 1), |c| c.consumed),
            (
                "processed",
                |m| m.record_processed("t", us(5)),
                |c| c.processed,
            ),
            ("acked", |m| m.record_acked("t"), |c| c.acked),
            ("failed", |m| m.record_failed("t"), |c| c.failed),
            ("panicked", |m| m.record_panicked("t"), |c| c.panicked),
            ("retried", |m| m.record_retried("t"), |c| c.retried),
            (
                "dead_lettered",
                |m| m.record_dead_lettered("t"),
                |c| c.dead_lettered,
            ),
            ("commits", |m| m.record_commit("t"), |c| c.commits),
            (
                "commit_failures",
                |m| m.record_commit_failed("t"),
                |c| c.commit_failures,
            ),
            (
                "corrupt_batches",
                |m| m.record_corrupt_batch("t"),
                |c| c.corrupt_batches,
            ),
        ];
        for (name, call, read) in calls {
            let before = m.publish().topic("t").map_or(0, |t| read(&t.counters));
            call(&m);
            let after = m.publish();
            assert_eq!(
                read(&after.topic("t").unwrap().counters),
                before + 1,
                "{name}"
            );
            assert_eq!(read(&after.totals), before + 1, "{name} total");
        }
    }

    #[test]
    fn a_panic_counts_as_a_failure_and_as_a_panic_of_its_topic() {
        let m = Metrics::default();
        // The consumer's order for an attempt that panicked, then one that returned an error.
        for panicked in [true, false] {
            m.record_processed("orders", us(5));
            m.record_failed("orders");
            if panicked {
                m.record_panicked("orders");
            }
            m.record_retried("orders");
        }
        m.record_failed("audit");
        let s = m.publish();
        let orders = s.topic("orders").unwrap().counters;
        assert_eq!((orders.failed, orders.panicked), (2, 1));
        assert_eq!(s.topic("audit").unwrap().counters.panicked, 0);
        assert_eq!((s.totals.failed, s.totals.panicked), (3, 1));
    }

    #[test]
    fn timings_reach_the_snapshot() {
        let m = Metrics::new(
            MetricsConfig::builder()
                .moving_average_window(2)
                .build()
                .unwrap(),
        );
        for v in [10, 20, 30] {
            m.record_processed("t", us(v));
            m.record_produced("t", us(v * 2));
        }
        let s = m.publish();
        let t = s.topic("t").unwrap();
        assert_eq!(
            (t.process_time.average, t.process_time.p50),
            (Some(us(25)), Some(us(20)))
        );
        assert_eq!(
            (t.produce_time.average, t.produce_time.p99),
            (Some(us(50)), Some(us(60)))
        );
        assert_eq!((t.process_time.count, t.process_time.sum), (3, us(60)));
    }

    #[test]
    fn lru_bound_holds_when_ten_thousand_topics_are_recorded() {
        let m = Metrics::default();
        for i in 0..10_000 {
            m.record_consumed(&format!("topic-{i:05}"), 1);
        }
        let s = m.publish();
        assert_eq!(s.topics.len(), 1000);
        assert_eq!(s.topics_evicted, 9000);
        assert_eq!(s.totals.consumed, 10_000);
        assert_eq!(&*s.topics[0].topic, "topic-09000");
        assert!(s.topic("topic-00042").is_none());
    }

    #[test]
    fn gauges_and_guards() {
        let m = Metrics::default();
        let p1 = m.producer_active();
        let p2 = m.producer_active();
        let c = m.consumer_active();
        m.records_in_flight().add(4);
        m.buffered_bytes().set(1024);
        let g = m.publish().gauges;
        assert_eq!(
            (
                g.active_producers,
                g.active_consumers,
                g.records_in_flight,
                g.buffered_bytes
            ),
            (2, 1, 4, 1024)
        );
        drop((p1, c));
        let g = m.publish().gauges;
        assert_eq!((g.active_producers, g.active_consumers), (1, 0));
        drop(p2);
        assert_eq!(m.publish().gauges.active_producers, 0);
    }

    #[test]
    fn snapshot_only_changes_on_publish() {
        let m = Metrics::default();
        assert_eq!(m.snapshot().sequence, 0);
        m.record_consumed("t", 1);
        assert_eq!(m.snapshot().totals.consumed, 0);
        let published = m.publish();
        assert!(Arc::ptr_eq(&published, &m.snapshot()));
        assert_eq!(m.snapshot().sequence, 1);
    }

    /// Writers move records through consumed → processed → acked; a publisher thread publishes in a tight
    /// loop; readers check every invariant the docs promise on each snapshot they load. Writers keep
    /// going until the readers have each watched the totals grow 50 times, so reading and writing
    /// overlap however fast the machine is. With a bound of 4 and 12 topics, evictions run concurrently
    /// too, and only the invariants that survive eviction are checked.
    #[test]
    fn concurrent_readers_see_consistent_snapshots() {
        const GROWTHS_SEEN: u64 = 50;
        // (max_topic_stats, topics)
        for (max_topics, topic_count) in [(1000, 8), (4, 12)] {
            let all_tracked = max_topics >= topic_count;
            let config = MetricsConfig::builder().max_topic_stats(max_topics);
            let m = Metrics::new(config.build().unwrap());
            let names: Arc<Vec<String>> =
                Arc::new((0..topic_count).map(|i| format!("t{i}")).collect());
            let stop = Arc::new(AtomicBool::new(false));
            let writers: Vec<_> = (0..2)
                .map(|w| {
                    let (m, names, stop) = (m.clone(), Arc::clone(&names), Arc::clone(&stop));
                    thread::spawn(move || {
                        let mut records = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            let topic = &names[(records as usize + w) % names.len()];
                            m.record_consumed(topic, 1);
                            m.record_processed(topic, us(records % 500));
                            m.record_acked(topic);
                            records += 1;
                        }
                        records
                    })
                })
                .collect();
            let publisher = {
                let (m, stop) = (m.clone(), Arc::clone(&stop));
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        m.publish();
                    }
                })
            };
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let m = m.clone();
                    thread::spawn(move || {
                        let mut last = m.snapshot();
                        let mut growths = 0;
                        while growths < GROWTHS_SEEN {
                            let s = m.snapshot();
                            let (t, l) = (&s.totals, &last.totals);
                            assert!(s.sequence >= last.sequence);
                            assert!(
                                t.consumed >= l.consumed
                                    && t.processed >= l.processed
                                    && t.acked >= l.acked
                            );
                            assert!(s.topics_evicted >= last.topics_evicted);
                            assert!(s.topics.len() <= max_topics);
                            if all_tracked {
                                assert!(
                                    t.acked <= t.processed && t.processed <= t.consumed,
                                    "{t:?}"
                                );
                                for topic in &s.topics {
                                    let c = &topic.counters;
                                    assert!(
                                        c.acked <= c.processed && c.processed <= c.consumed,
                                        "{topic:?}"
                                    );
                                    // The sample is recorded before the counter, and read after it.
                                    assert!(topic.process_time.count >= c.processed, "{topic:?}");
                                }
                            }
                            growths += u64::from(t.consumed > l.consumed);
                            last = s;
                        }
                    })
                })
                .collect();
            readers.into_iter().for_each(|r| r.join().unwrap());
            stop.store(true, Ordering::Relaxed);
            let total: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
            publisher.join().unwrap();

            let s = m.publish();
            if all_tracked {
                assert_eq!(
                    (s.totals.consumed, s.totals.processed, s.totals.acked),
                    (total, total, total)
                );
                let per_topic: u64 = s.topics.iter().map(|t| t.counters.acked).sum();
                assert_eq!(per_topic, total);
            } else {
                // A record racing with its topic's eviction may be lost; nothing is counted twice.
                assert!(s.totals.consumed <= total && s.totals.acked <= total);
                assert!(s.topics_evicted > 0);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn publisher_task_publishes_every_interval_and_stops_on_drop() {
        let m = Metrics::new(
            MetricsConfig::builder()
                .publish_interval(Duration::from_secs(5))
                .build()
                .unwrap(),
        );
        m.record_consumed("t", 1);
        let task = m.spawn_publisher();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(m.snapshot().sequence, 1);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(m.snapshot().sequence, 2);
        assert_eq!(m.snapshot().totals.consumed, 1);
        drop(task);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(m.snapshot().sequence, 2);
    }
}
