//! Small helpers every broker-backed test file uses.

use std::collections::BTreeMap;
use std::time::Duration;

use kafkit::ClientConfig;
use kafkit::group::{GroupConfig, TopicPartition};
use tokio::time::Instant;

/// Client settings for `bootstrap`.
pub fn client(bootstrap: &str) -> ClientConfig {
    ClientConfig::new([bootstrap]).expect("a valid bootstrap address")
}

/// Group settings fit for tests: a 6 s session (crashes are noticed quickly), 500 ms heartbeats and a
/// 30 s rebalance timeout.
pub fn test_group(group: &str, topic: &str) -> GroupConfig {
    GroupConfig::new(group, [topic])
        .session_timeout(Duration::from_secs(6))
        .heartbeat_interval(Duration::from_millis(500))
        .rebalance_timeout(Duration::from_secs(30))
}

/// Waits until `check` holds, polling every 100 ms, or panics with `what` after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The committed offsets of `group_id` on partitions `0..partitions` of `topic` (partitions without a
/// commit left out), read without joining the group.
pub async fn committed(
    bootstrap: &str,
    group_id: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, i64> {
    let tps: Vec<_> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    kafkit::group::committed_offsets(&client(bootstrap), group_id, &tps)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|(tp, c)| c.map(|c| (tp.partition, c.offset)))
        .collect()
}
