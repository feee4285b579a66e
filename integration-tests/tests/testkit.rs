//! kafkit-testkit against itself: a real broker starts, answers, survives faults, and never outlives
//! its owner.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord};
use kafkit_testkit::{Error, LocalKafka, OLDEST_KAFKA_VERSION, create_topic, random_name};

/// CI runs the version-sensitive tests against the oldest supported release: the one the testkit
/// names.
#[test]
fn ci_tests_the_oldest_supported_release() {
    let ci = include_str!("../../.ci/run");
    assert!(
        ci.contains(&format!("KAFKIT_KAFKA_VERSION={OLDEST_KAFKA_VERSION} ")),
        ".ci/run must run the version-sensitive tests with KAFKIT_KAFKA_VERSION={OLDEST_KAFKA_VERSION}"
    );
}

async fn send_one(bootstrap: &str, topic: &str, value: &str) -> kafkit::Result<kafkit::Delivery> {
    let producer = ProducerBuilder::new(ClientConfig::new([bootstrap])?)
        .delivery_timeout(Duration::from_secs(60))
        .build()
        .await?;
    producer
        .send(ProducerRecord::new(topic, value.to_owned()).partition(0))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_starts_fast_survives_kill_and_pause_and_dies_on_drop() {
    let started = Instant::now();
    let kafka = LocalKafka::start().await.expect("broker starts");
    let start_time = started.elapsed();
    eprintln!("broker answered Metadata {start_time:?} after start (jars cached)");
    assert!(kafka.node().is_running());
    let bootstrap = kafka.bootstrap();
    assert!(bootstrap.starts_with("127.0.0.1:"));

    let topic = random_name("testkit");
    create_topic(&bootstrap, &topic, 3, 1)
        .await
        .expect("topic created");
    let first = send_one(&bootstrap, &topic, "before")
        .await
        .expect("produce");
    assert_eq!(first.offset, 0);

    // Crash and come back on the same port with the same data.
    let old_pid = kafka.node().pid().expect("pid");
    kafka.kill();
    assert!(!kafka.node().is_running());
    assert!(zombie_or_gone(old_pid), "kill ends the JVM");
    kafka.restart().await.expect("restart");
    assert_eq!(kafka.bootstrap(), bootstrap, "restart keeps the port");
    let second = send_one(&bootstrap, &topic, "after")
        .await
        .expect("produce after restart");
    assert_eq!(
        (second.partition, second.offset),
        (0, 1),
        "data survived the crash"
    );

    // A paused broker does not answer; a resumed one does.
    kafka.pause();
    let paused = tokio::time::timeout(
        Duration::from_secs(3),
        send_one(&bootstrap, &topic, "paused"),
    )
    .await;
    assert!(paused.is_err(), "a SIGSTOPped broker must not answer");
    kafka.resume();
    send_one(&bootstrap, &topic, "resumed")
        .await
        .expect("produce after resume");

    let pid = kafka.node().pid().expect("pid");
    drop(kafka);
    assert!(zombie_or_gone(pid), "dropping LocalKafka kills the JVM");
}

/// True when `pid` no longer runs (gone, or a zombie nobody reaped yet).
fn zombie_or_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.split_whitespace().nth(2) == Some("Z"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_a_taken_port_names_the_port() {
    let kafka = LocalKafka::start().await.expect("broker starts");
    let port = kafka.node().port();
    kafka.stop();
    let squatter = TcpListener::bind(("127.0.0.1", port)).expect("port free after stop");
    match kafka.restart().await {
        Err(Error::PortInUse { port: p }) => assert_eq!(p, port),
        other => panic!("expected PortInUse, got {other:?}"),
    }
    let message = kafka.restart().await.unwrap_err().to_string();
    assert!(message.contains(&port.to_string()), "{message}");
    drop(squatter);
    kafka
        .restart()
        .await
        .expect("restart once the port is free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_keeps_acknowledging_with_one_node_down() {
    use kafkit_testkit::{BrokerOptions, LocalCluster};
    let cluster = LocalCluster::start_with(
        3,
        BrokerOptions::default()
            .heap("384m")
            .property("min.insync.replicas", "2"),
    )
    .await
    .expect("cluster starts");
    let bootstrap = cluster.bootstrap();
    assert_eq!(bootstrap.split(',').count(), 3);
    let topic = random_name("replicated");
    create_topic(&bootstrap, &topic, 3, 3).await.unwrap();
    let producer = ProducerBuilder::new(ClientConfig::new([&bootstrap]).unwrap())
        .delivery_timeout(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    for i in 0..30 {
        producer
            .send(ProducerRecord::new(&topic, format!("before-{i}")).key(format!("k{i}")))
            .await
            .unwrap();
    }
    // One node down: two in-sync replicas remain, enough for acks=all with min.insync.replicas=2.
    cluster.node(2).unwrap().kill();
    for i in 0..30 {
        let d = tokio::time::timeout(
            Duration::from_secs(60),
            producer.send(ProducerRecord::new(&topic, format!("after-{i}")).key(format!("k{i}"))),
        )
        .await
        .expect("acknowledged while a node is down")
        .unwrap();
        assert!(d.offset >= 0);
    }
    cluster.node(2).unwrap().restart().await.unwrap();
    let pids: Vec<u32> = cluster.nodes().iter().map(|n| n.pid().unwrap()).collect();
    drop(cluster);
    assert!(
        pids.into_iter().all(zombie_or_gone),
        "dropping the cluster kills every JVM"
    );
}
