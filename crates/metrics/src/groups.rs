//! Consumer lag per partition and per group, and rebalance counts.
//!
//! Lag is updated once per fetch response per partition, not per record, so one mutex over all groups is
//! cheap enough and keeps each partition's high watermark and committed offset a coherent pair. The
//! entries are bounded by the partitions assigned to this client: consumers remove revoked partitions with
//! [`Metrics::remove_partition_lag`](crate::Metrics::remove_partition_lag).

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::{GroupSnapshot, PartitionLag};

#[derive(Debug, Clone, Copy)]
struct Offsets {
    high_watermark: i64,
    committed: i64,
}

#[derive(Debug, Default)]
struct Group {
    rebalances: u64,
    /// Topic, then partition: `BTreeMap`s so snapshots come out sorted without a sort.
    topics: BTreeMap<Arc<str>, BTreeMap<i32, Offsets>>,
}

/// Every group this client has recorded something for.
// parking_lot, not std: no poisoning to handle, and nothing is awaited while it is held.
#[derive(Debug, Default)]
pub(crate) struct Groups(Mutex<BTreeMap<Arc<str>, Group>>);

impl Groups {
    pub(crate) fn record_lag(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        high_watermark: i64,
        committed: i64,
    ) {
        let mut groups = self.0.lock();
        let group = entry(&mut groups, group);
        let partitions = entry(&mut group.topics, topic);
        partitions.insert(
            partition,
            Offsets {
                high_watermark,
                committed,
            },
        );
    }

    pub(crate) fn remove_lag(&self, group: &str, topic: &str, partition: i32) {
        let mut groups = self.0.lock();
        let Some(g) = groups.get_mut(group) else {
            return;
        };
        if let Some(partitions) = g.topics.get_mut(topic) {
            partitions.remove(&partition);
            if partitions.is_empty() {
                g.topics.remove(topic);
            }
        }
        if g.topics.is_empty() && g.rebalances == 0 {
            groups.remove(group);
        }
    }

    pub(crate) fn record_rebalance(&self, group: &str) {
        let mut groups = self.0.lock();
        let group = entry(&mut groups, group);
        group.rebalances = group.rebalances.saturating_add(1);
    }

    /// Partition lags and group sums, both sorted.
    pub(crate) fn snapshot(&self) -> (Vec<PartitionLag>, Vec<GroupSnapshot>) {
        let groups = self.0.lock();
        let mut partitions = Vec::new();
        let mut summaries = Vec::with_capacity(groups.len());
        for (name, group) in groups.iter() {
            let first = partitions.len();
            for (topic, offsets) in &group.topics {
                for (&partition, o) in offsets {
                    partitions.push(PartitionLag {
                        group: Arc::clone(name),
                        topic: Arc::clone(topic),
                        partition,
                        high_watermark: o.high_watermark,
                        committed_offset: o.committed,
                        lag: o.high_watermark.saturating_sub(o.committed).max(0),
                    });
                }
            }
            let mine = &partitions[first..];
            summaries.push(GroupSnapshot {
                group: Arc::clone(name),
                lag: mine.iter().fold(0i64, |sum, p| sum.saturating_add(p.lag)),
                partitions: mine.len(),
                rebalances: group.rebalances,
            });
        }
        (partitions, summaries)
    }
}

/// The value for `key`, inserted as default on first use; allocates the `Arc<str>` only then.
fn entry<'m, V: Default>(map: &'m mut BTreeMap<Arc<str>, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(Arc::from(key), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_high_watermark_minus_committed_summed_per_group() {
        let groups = Groups::default();
        // (group, topic, partition, high watermark, committed)
        let updates = [
            ("g1", "orders", 0, 100, 40),
            ("g1", "orders", 1, 50, 50),
            ("g1", "payments", 0, 10, 3),
            ("g2", "orders", 0, 100, 100),
            // A stale high watermark below the committed offset reads as no lag, not negative lag.
            ("g2", "orders", 1, 5, 9),
            // A later fetch replaces the earlier numbers.
            ("g1", "orders", 0, 120, 100),
        ];
        for (g, t, p, hw, c) in updates {
            groups.record_lag(g, t, p, hw, c);
        }
        groups.record_rebalance("g2");
        let (partitions, summaries) = groups.snapshot();
        let rows: Vec<_> = partitions
            .iter()
            .map(|p| (&*p.group, &*p.topic, p.partition, p.lag))
            .collect();
        assert_eq!(
            rows,
            [
                ("g1", "orders", 0, 20),
                ("g1", "orders", 1, 0),
                ("g1", "payments", 0, 7),
                ("g2", "orders", 0, 0),
                ("g2", "orders", 1, 0),
            ]
        );
        let sums: Vec<_> = summaries
            .iter()
            .map(|g| (&*g.group, g.lag, g.partitions, g.rebalances))
            .collect();
        assert_eq!(sums, [("g1", 27, 3, 0), ("g2", 0, 2, 1)]);
    }

    #[test]
    fn removing_revoked_partitions_drops_them_from_the_sum() {
        let groups = Groups::default();
        groups.record_lag("g", "t", 0, 10, 0);
        groups.record_lag("g", "t", 1, 10, 5);
        groups.remove_lag("g", "t", 0);
        groups.remove_lag("g", "absent", 0);
        groups.remove_lag("absent", "t", 0);
        let (_, summaries) = groups.snapshot();
        assert_eq!((summaries[0].lag, summaries[0].partitions), (5, 1));
        groups.remove_lag("g", "t", 1);
        assert!(groups.snapshot().1.is_empty());
    }
}
