//! Per-topic statistics, the read-mostly index the hot path finds them through, and the LRU that bounds
//! how many are kept.
//!
//! # Finding a topic without a lock
//! `index` is an `ArcSwap<HashMap>`: a record call loads it (wait-free; `arc-swap` records the borrow in a
//! thread-local slot, so concurrent loads share no written cache line), hashes the topic and gets its
//! [`TopicStats`]. The map is copied and swapped only when a topic is first seen or evicted, under the
//! registry mutex, so first sightings cost O(`max_topic_stats`) and every later record O(1).
//!
//! # Keeping LRU recency without touching the LRU per record
//! A record call sets its topic's `touched` flag (a load first, so a hot topic's flag line is not written
//! again and again). The `lru` crate's list is only reordered under the registry mutex, by
//! [`Registry::refresh_recency`], which promotes every touched topic and clears its flag. That runs on every
//! publish and, crucially, right before every eviction, so the victim is always a topic not recorded since
//! the previous refresh, if there is one, and among those the least recently promoted. Recency is therefore
//! exact at the granularity of refreshes; topics touched between two refreshes are ordered among themselves
//! by their earlier position.
//!
//! A record racing with the eviction of its own topic (it loaded the old index just before the swap) lands
//! in the evicted stats after their counts were folded into the totals, and is lost. That needs a topic
//! that had gone quiet to come back at the instant it is evicted; the totals stay monotonic either way.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use lru::LruCache;
use parking_lot::{Mutex, MutexGuard};

use crate::timing::{Timing, TimingConfig};
use crate::{Counters, TopicSnapshot};

/// The counters and timings of one topic.
///
/// Counters are atomics incremented with `Release`; [`counters`](Self::counters) loads them with `Acquire`
/// in reverse pipeline order (dead-lettered first, consumed last). So if a thread incremented `consumed`
/// before `acked` (or handed the record to the thread that did), a reader that sees the `acked` increment
/// also sees the `consumed` one: no snapshot shows a later stage ahead of an earlier one.
#[derive(Debug)]
pub(crate) struct TopicStats {
    name: Arc<str>,
    /// Set by record calls, cleared by [`Registry::refresh_recency`].
    touched: AtomicBool,
    pub(crate) produced: AtomicU64,
    pub(crate) consumed: AtomicU64,
    pub(crate) processed: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) commit_failures: AtomicU64,
    pub(crate) corrupt_batches: AtomicU64,
    pub(crate) share_acquired: AtomicU64,
    pub(crate) share_redelivered: AtomicU64,
    pub(crate) share_accepted: AtomicU64,
    pub(crate) share_released: AtomicU64,
    pub(crate) share_rejected: AtomicU64,
    pub(crate) share_lock_expired: AtomicU64,
    /// Acquired records by delivery count: 1, 2, 3, 4, 5 or more.
    pub(crate) share_deliveries: [AtomicU64; 5],
    // parking_lot, not std: no poisoning to handle on the hot path, and an uncontended lock is one CAS.
    // A mutex, not atomics: the ring buffer slot and the running sum must change together. Taken by the
    // recording thread for a few ns per sample and by the publisher once per publish.
    produce_time: Mutex<Timing>,
    process_time: Mutex<Timing>,
}

impl TopicStats {
    fn new(name: Arc<str>, timing: TimingConfig) -> Self {
        Self {
            name,
            touched: AtomicBool::new(false),
            produced: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            processed: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            panicked: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            corrupt_batches: AtomicU64::new(0),
            share_acquired: AtomicU64::new(0),
            share_redelivered: AtomicU64::new(0),
            share_accepted: AtomicU64::new(0),
            share_released: AtomicU64::new(0),
            share_rejected: AtomicU64::new(0),
            share_lock_expired: AtomicU64::new(0),
            share_deliveries: Default::default(),
            produce_time: Mutex::new(Timing::new(timing)),
            process_time: Mutex::new(Timing::new(timing)),
        }
    }

    /// Adds `n` to `counter`, `Release` so that [`counters`](Self::counters) keeps pipeline order.
    pub(crate) fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Release);
    }

    pub(crate) fn record_produce_time(&self, elapsed: Duration) {
        self.produce_time.lock().record(elapsed);
    }

    pub(crate) fn record_process_time(&self, elapsed: Duration) {
        self.process_time.lock().record(elapsed);
    }

    /// Marks the topic recently used. Loads first so a hot topic does not write the flag on every record.
    fn touch(&self) {
        if !self.touched.load(Ordering::Relaxed) {
            self.touched.store(true, Ordering::Relaxed);
        }
    }

    /// The counters, read later stage first (see the type's doc).
    pub(crate) fn counters(&self) -> Counters {
        // Share groups: acknowledged (and expired) after acquired, so read first.
        let share_lock_expired = self.share_lock_expired.load(Ordering::Acquire);
        let share_rejected = self.share_rejected.load(Ordering::Acquire);
        let share_released = self.share_released.load(Ordering::Acquire);
        let share_accepted = self.share_accepted.load(Ordering::Acquire);
        let share_redelivered = self.share_redelivered.load(Ordering::Acquire);
        let share_deliveries =
            std::array::from_fn(|i| self.share_deliveries[i].load(Ordering::Acquire));
        let share_acquired = self.share_acquired.load(Ordering::Acquire);
        let dead_lettered = self.dead_lettered.load(Ordering::Acquire);
        let retried = self.retried.load(Ordering::Acquire);
        let panicked = self.panicked.load(Ordering::Acquire);
        let failed = self.failed.load(Ordering::Acquire);
        let acked = self.acked.load(Ordering::Acquire);
        let processed = self.processed.load(Ordering::Acquire);
        let consumed = self.consumed.load(Ordering::Acquire);
        let corrupt_batches = self.corrupt_batches.load(Ordering::Acquire);
        let commit_failures = self.commit_failures.load(Ordering::Acquire);
        let commits = self.commits.load(Ordering::Acquire);
        let produced = self.produced.load(Ordering::Acquire);
        Counters {
            produced,
            consumed,
            processed,
            acked,
            failed,
            panicked,
            retried,
            dead_lettered,
            commits,
            commit_failures,
            corrupt_batches,
            share_acquired,
            share_redelivered,
            share_accepted,
            share_released,
            share_rejected,
            share_lock_expired,
            share_deliveries,
        }
    }

    /// Counters and timings; takes each timing mutex once, for the O(buckets) quantile pass.
    pub(crate) fn snapshot(&self) -> TopicSnapshot {
        TopicSnapshot {
            topic: Arc::clone(&self.name),
            counters: self.counters(),
            produce_time: self.produce_time.lock().snapshot(),
            process_time: self.process_time.lock().snapshot(),
        }
    }
}

type TopicIndex = HashMap<Arc<str>, Arc<TopicStats>>;

/// Every tracked topic: the lock-free index and the LRU registry behind it.
#[derive(Debug)]
pub(crate) struct Topics {
    /// Loaded by every record call; replaced only while `registry` is locked.
    index: ArcSwap<TopicIndex>,
    registry: Mutex<Registry>,
    timing: TimingConfig,
}

/// The recency order and what eviction leaves behind. Locked when a topic is first seen or evicted and
/// for the whole of a publish, which therefore never interleaves with an eviction.
#[derive(Debug)]
pub(crate) struct Registry {
    /// Same topics as the index; holds the recency order and the bound.
    lru: LruCache<Arc<str>, Arc<TopicStats>>,
    /// Counters of evicted topics, so the totals still include them.
    pub(crate) retired: Counters,
    /// Topics evicted so far.
    pub(crate) evicted: u64,
    /// Number of the last snapshot published.
    pub(crate) sequence: u64,
}

impl Topics {
    pub(crate) fn new(max_topics: NonZeroUsize, timing: TimingConfig) -> Self {
        Self {
            index: ArcSwap::from_pointee(HashMap::new()),
            registry: Mutex::new(Registry {
                lru: LruCache::new(max_topics),
                retired: Counters::default(),
                evicted: 0,
                sequence: 0,
            }),
            timing,
        }
    }

    /// Runs `f` on the stats of `topic`, adding the topic (and evicting another) on its first sighting.
    #[inline]
    pub(crate) fn with<R>(&self, topic: &str, f: impl FnOnce(&TopicStats) -> R) -> R {
        if let Some(stats) = self.index.load().get(topic) {
            stats.touch();
            return f(stats);
        }
        f(&self.insert(topic))
    }

    /// The slow path of [`with`](Self::with).
    #[cold]
    fn insert(&self, topic: &str) -> Arc<TopicStats> {
        let mut registry = self.registry.lock();
        // Another thread may have added it between our index load and this lock.
        if let Some(stats) = registry.lru.get(topic) {
            return Arc::clone(stats);
        }
        let mut index = TopicIndex::clone(&self.index.load());
        if registry.lru.len() == registry.lru.cap().get() {
            registry.refresh_recency();
            if let Some((victim, stats)) = registry.lru.pop_lru() {
                registry.retired.add(&stats.counters());
                registry.evicted += 1;
                index.remove(&victim);
                tracing::debug!(
                    topic = %victim,
                    max_topic_stats = registry.lru.cap().get(),
                    new_topic = topic,
                    "evicted topic stats: least recently recorded topic, to stay within max_topic_stats"
                );
            }
        }
        let name: Arc<str> = Arc::from(topic);
        let stats = Arc::new(TopicStats::new(Arc::clone(&name), self.timing));
        registry.lru.push(Arc::clone(&name), Arc::clone(&stats));
        index.insert(name, Arc::clone(&stats));
        self.index.store(Arc::new(index));
        stats
    }

    /// Locks the registry, for a publish.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock()
    }
}

impl Registry {
    /// Moves every topic recorded since the last refresh to the most-recent end, clearing its flag.
    /// Goes least-recent first, so promoted topics keep their previous order among themselves.
    pub(crate) fn refresh_recency(&mut self) {
        let touched: Vec<Arc<str>> = self
            .lru
            .iter()
            .rev()
            .filter(|(_, stats)| stats.touched.swap(false, Ordering::Relaxed))
            .map(|(name, _)| Arc::clone(name))
            .collect();
        for name in &touched {
            self.lru.promote(name);
        }
    }

    /// The tracked topics, most recently used first.
    pub(crate) fn topics(&self) -> impl Iterator<Item = &TopicStats> {
        self.lru.iter().map(|(_, stats)| &**stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::HistogramLayout;

    fn topics(max: usize) -> Topics {
        let timing = TimingConfig {
            window: Some(10),
            layout: HistogramLayout::new(5, 1_000, 60_000_000_000),
        };
        Topics::new(NonZeroUsize::new(max).unwrap(), timing)
    }

    fn consume(topics: &Topics, topic: &str) {
        topics.with(topic, |s| TopicStats::bump(&s.consumed, 1));
    }

    fn tracked(topics: &Topics) -> Vec<String> {
        let mut names: Vec<String> = topics.lock().topics().map(|s| s.name.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn bound_holds_under_ten_thousand_topics() {
        let t = topics(1000);
        for i in 0..10_000 {
            consume(&t, &format!("topic-{i}"));
            assert!(t.index.load().len() <= 1000);
        }
        let registry = t.lock();
        assert_eq!(registry.lru.len(), 1000);
        assert_eq!(t.index.load().len(), 1000);
        assert_eq!(registry.evicted, 9000);
        assert_eq!(registry.retired.consumed, 9000);
        // The survivors are the 1000 most recent.
        assert!(
            registry
                .topics()
                .all(|s| s.name["topic-".len()..].parse::<u32>().unwrap() >= 9000)
        );
    }

    #[test]
    fn eviction_spares_topics_recorded_since_the_last_refresh() {
        // (bound, topics recorded in order, survivors)
        let cases: [(usize, &[&str], &[&str]); 4] = [
            // No repeat: plain FIFO, `a` goes.
            (3, &["a", "b", "c", "d"], &["b", "c", "d"]),
            // `a` recorded again before `d` arrives: refresh-before-evict promotes it, `b` goes.
            (3, &["a", "b", "c", "a", "d"], &["a", "c", "d"]),
            // `a` and `b` both repeated: `c` is the only quiet one.
            (3, &["a", "b", "c", "b", "a", "d"], &["a", "b", "d"]),
            // A bound of one keeps only the newest.
            (1, &["a", "a", "b"], &["b"]),
        ];
        for (bound, sequence, survivors) in cases {
            let t = topics(bound);
            for name in sequence {
                consume(&t, name);
            }
            assert_eq!(tracked(&t), survivors, "{sequence:?}");
        }
    }

    #[test]
    fn a_refresh_resets_what_counts_as_recent() {
        let t = topics(2);
        consume(&t, "a");
        consume(&t, "b");
        consume(&t, "a");
        // A publish refreshes: `a` becomes most recent and every flag is cleared.
        t.lock().refresh_recency();
        consume(&t, "b");
        consume(&t, "c");
        assert_eq!(tracked(&t), ["b", "c"]);
    }
}
