//! The demo (`cargo run -p kafkit --example demo`) at a small size against the shared broker: the
//! same scenario code (included from the example), so its checks are what CI runs. A member is
//! killed, the group rebalances, and per-key order, completeness and the duplicate bound must hold.

#[path = "../../crates/kafkit/examples/demo/scenario.rs"]
mod scenario;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn demo_checks_pass_after_a_member_is_killed() {
    let kafka = kafkit_testkit::shared().await.expect("broker");
    let mut config = scenario::DemoConfig::new(kafka.bootstrap());
    // The smallest run that still kills m2 while orders flow and sees the group notice it
    // (session timeout 6 s, m2 killed up to 0.7 s after the kill time) before production ends.
    config.produce_for = Duration::from_secs(12);
    config.kill_after = Duration::from_secs(3);
    config.rate = 200;
    let outcome = tokio::time::timeout(Duration::from_secs(90), scenario::run(config))
        .await
        .expect("the demo finishes within 90 s")
        .expect("the demo runs");
    assert!(outcome.passed(), "a check failed: {outcome:#?}");
    assert!(outcome.acknowledged >= 2_000, "{outcome:#?}");
    // The final table reads handler times and per-partition lag from the snapshot.
    let snapshot = &outcome.snapshot;
    assert_eq!(snapshot.topics.len(), 1, "{snapshot:#?}");
    let topic = &snapshot.topics[0];
    assert!(topic.process_time.p99.is_some() && topic.counters.produced >= 1_500);
    assert!(topic.counters.processed as usize >= outcome.acknowledged);
    // A partition appears once its consumer has fetched from it since it was assigned (a moved
    // partition that gets no new record has no row), so not necessarily all six.
    assert!(!snapshot.partitions.is_empty(), "{snapshot:#?}");
}
