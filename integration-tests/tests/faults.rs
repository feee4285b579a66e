//! The delivery fault suite: the users' delivery scenarios (seed 003) run against a real broker with
//! every produce acknowledgement, dispatch, completion, commit and ownership change recorded and
//! checked by `kafkit_integration_tests::history`. Each scenario prints its figures (for
//! docs/reliability.md) and fails on any lost record or broken guarantee.

use std::sync::Arc;
use std::time::Duration;

use kafkit::consumer::{
    ConsumerBuilder, DispatchMode, OffsetReset, ShutdownHandle, ShutdownReport,
};
use kafkit::group::{CooperativeStickyAssignor, GroupConfig, GroupProtocol, TopicPartition};
use kafkit::{Producer, ProducerBuilder, ProducerRecord};
use kafkit_integration_tests::history::History;
use kafkit_integration_tests::support::{POLL, client, eventually_async, eventually_every};
use kafkit_testkit::{BrokerOptions, LocalCluster, LocalKafka, create_topic, random_name, shared};
use tokio::task::JoinHandle;

type Run = JoinHandle<kafkit::Result<ShutdownReport>>;

/// Handler latency per record offset.
type Latency = fn(i64) -> Duration;

/// Up to `ms` milliseconds, spread deterministically by offset.
fn up_to<const MS: u64>(offset: i64) -> Duration {
    Duration::from_millis((offset as u64).wrapping_mul(2_654_435_761) % (MS + 1))
}

/// A group member recording into `history` under `name`; each record takes `latency(offset)`.
async fn member(
    bootstrap: &str,
    group: &str,
    topic: &str,
    mode: DispatchMode,
    history: &Arc<History>,
    name: &str,
    latency: Latency,
) -> (ShutdownHandle, Run) {
    // kafkit's warnings (or what RUST_LOG asks for) in the output of a failing scenario.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("kafkit_core=warn")),
        )
        .with_test_writer()
        .try_init();
    let config = GroupConfig::new(group, [topic])
        .session_timeout(Duration::from_secs(6))
        .heartbeat_interval(Duration::from_millis(500))
        .rebalance_timeout(Duration::from_secs(30));
    member_with(bootstrap, config, mode, history, name, latency).await
}

/// [`member`] with the group settings given.
async fn member_with(
    bootstrap: &str,
    config: GroupConfig,
    mode: DispatchMode,
    history: &Arc<History>,
    name: &str,
    latency: Latency,
) -> (ShutdownHandle, Run) {
    let consumer = ConsumerBuilder::new(client(bootstrap), config)
        .dispatch(mode)
        .auto_offset_reset(OffsetReset::Earliest)
        .commit_interval(Duration::from_millis(300))
        .revoke_timeout(Duration::from_secs(10))
        .shutdown_timeout(Duration::from_secs(15))
        .listener(history.listener(name))
        .build()
        .await
        .unwrap();
    let stop = consumer.shutdown_handle();
    let history = Arc::clone(history);
    let name = name.to_owned();
    let run = tokio::spawn(consumer.run(move |r| {
        let history = Arc::clone(&history);
        let name = name.clone();
        async move {
            history.dispatched(&name, &r);
            let delay = latency(r.offset());
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            history.processed(&name, &r);
            Ok::<_, std::io::Error>(())
        }
    }));
    (stop, run)
}

/// Sends `n` keyed records at `per_sec`, each on its own task so an outage does not slow the rate;
/// acknowledgements are recorded. Returns when every send finished (acknowledged or failed).
fn produce_at(
    producer: Producer,
    topic: &str,
    n: usize,
    per_sec: u64,
    history: &Arc<History>,
) -> JoinHandle<usize> {
    let topic = topic.to_owned();
    let history = Arc::clone(history);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_sec));
        let mut sends = Vec::with_capacity(n);
        for i in 0..n {
            tick.tick().await;
            let producer = producer.clone();
            let history = Arc::clone(&history);
            let key = format!("key-{}", i % 37);
            let record = ProducerRecord::new(topic.clone(), i.to_string()).key(key.clone());
            sends.push(tokio::spawn(async move {
                match producer.send(record).await {
                    Ok(d) => {
                        history.produced(
                            TopicPartition::new(d.topic, d.partition),
                            d.offset,
                            Some(key.into_bytes()),
                        );
                        true
                    }
                    Err(_) => false,
                }
            }));
        }
        let mut acked = 0;
        for s in sends {
            if s.await.unwrap_or(false) {
                acked += 1;
            }
        }
        acked
    })
}

async fn wait_all_processed(history: &History, acked: usize, limit: Duration) {
    eventually_every(
        limit,
        POLL,
        || {
            format!(
                "{} of {acked} acknowledged records not processed; {}",
                history.acked_unprocessed(),
                history.check(false)
            )
        },
        || history.acked_unprocessed() == 0,
    )
    .await;
}

async fn stop_all(members: Vec<(ShutdownHandle, Run)>) {
    for (stop, _) in &members {
        stop.shutdown();
    }
    for (_, run) in members {
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

fn assert_clean(scenario: &str, history: &History, ordered: bool, sent: usize, acked: usize) {
    let verdict = history.check(ordered);
    eprintln!(
        "SCENARIO {scenario}: sent {sent}, acknowledged {acked}, lost {}, duplicates {}, max duplicate window {}",
        verdict.lost.len(),
        verdict.duplicates,
        verdict.max_duplicate_window
    );
    assert!(
        verdict.violations().is_empty(),
        "{scenario}: {:#?}",
        verdict.violations()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_nothing() {
    let kafka = LocalKafka::start().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("sc1");
    create_topic(&bootstrap, &topic, 3, 1).await.unwrap();
    let history = History::new();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    let m = member(
        &bootstrap,
        &random_name("g"),
        &topic,
        DispatchMode::KeyOrdered { max_in_flight: 16 },
        &history,
        "m1",
        up_to::<5>,
    )
    .await;

    // 1,000 records at 100/s; SIGKILL the broker 3 s in and restart it.
    let sending = produce_at(producer, &topic, 1_000, 100, &history);
    tokio::time::sleep(Duration::from_secs(3)).await;
    kafka.kill();
    kafka.restart().await.unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(180), sending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        acked, 1_000,
        "acks=all: every send acknowledged once the broker is back"
    );
    wait_all_processed(&history, acked, Duration::from_secs(120)).await;
    stop_all(vec![m]).await;
    assert_clean("broker-restart", &history, true, 1_000, acked);
}

/// The broker restart on KIP-848's consumer protocol (Kafka 4.0+), with two members: they keep
/// their member ids and epochs across the coordinator's restart (it reloads the group), or are
/// fenced and rejoin; either way nothing acknowledged is lost and no partition is processed by two
/// members at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_on_the_consumer_protocol_loses_nothing() {
    if kafkit_testkit::kafka_version().starts_with("3.") {
        eprintln!(
            "skipped: Kafka {} has no GA consumer protocol",
            kafkit_testkit::kafka_version()
        );
        return;
    }
    let kafka = LocalKafka::start().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("sc1-848");
    create_topic(&bootstrap, &topic, 4, 1).await.unwrap();
    let group = random_name("g");
    let history = History::new();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    let config = || {
        GroupConfig::new(&group, [&topic])
            .protocol(GroupProtocol::Consumer)
            .remote_assignor("range")
            .rebalance_timeout(Duration::from_secs(30))
    };
    let mut members = Vec::new();
    for name in ["m1", "m2"] {
        members.push(
            member_with(
                &bootstrap,
                config(),
                DispatchMode::KeyOrdered { max_in_flight: 16 },
                &history,
                name,
                up_to::<5>,
            )
            .await,
        );
    }

    // 1,000 records at 100/s; SIGKILL the broker 3 s in and restart it.
    let sending = produce_at(producer, &topic, 1_000, 100, &history);
    tokio::time::sleep(Duration::from_secs(3)).await;
    kafka.kill();
    kafka.restart().await.unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(180), sending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acked, 1_000);
    wait_all_processed(&history, acked, Duration::from_secs(120)).await;
    stop_all(members).await;
    assert_clean(
        "broker-restart-consumer-protocol",
        &history,
        true,
        1_000,
        acked,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_restart_after_forty_percent_leaves_no_gap() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("sc2");
    let group = random_name("g");
    create_topic(&bootstrap, &topic, 3, 1).await.unwrap();
    let history = History::new();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    let acked = tokio::time::timeout(
        Duration::from_secs(60),
        produce_at(producer, &topic, 1_000, 2_000, &history),
    )
    .await
    .unwrap()
    .unwrap();

    let first = member(
        &bootstrap,
        &group,
        &topic,
        DispatchMode::KeyOrdered { max_in_flight: 16 },
        &history,
        "m1",
        up_to::<10>,
    )
    .await;
    eventually_every(
        Duration::from_secs(60),
        Duration::from_millis(10),
        || format!("only {} of 400 processed", history.processed_count()),
        || history.processed_count() >= 400,
    )
    .await;
    stop_all(vec![first]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = member(
        &bootstrap,
        &group,
        &topic,
        DispatchMode::KeyOrdered { max_in_flight: 16 },
        &history,
        "m2",
        up_to::<10>,
    )
    .await;
    wait_all_processed(&history, acked, Duration::from_secs(60)).await;
    stop_all(vec![second]).await;
    assert_clean("consumer-restart", &history, true, 1_000, acked);
    let verdict = history.check(true);
    assert!(
        verdict.duplicates <= 16,
        "only what was in flight at the stop comes again: {}",
        verdict.duplicates
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_partition_of_ten_seconds_loses_nothing() {
    let kafka = LocalKafka::start().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("sc3");
    create_topic(&bootstrap, &topic, 3, 1).await.unwrap();
    let history = History::new();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    let m = member(
        &bootstrap,
        &random_name("g"),
        &topic,
        DispatchMode::PartitionOrdered,
        &history,
        "m1",
        up_to::<0>,
    )
    .await;

    // 500 records at 50/s; the broker frozen (SIGSTOP) for 10 s, 3 s in.
    let sending = produce_at(producer, &topic, 500, 50, &history);
    tokio::time::sleep(Duration::from_secs(3)).await;
    kafka.pause();
    tokio::time::sleep(Duration::from_secs(10)).await;
    kafka.resume();
    let acked = tokio::time::timeout(Duration::from_secs(180), sending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acked, 500);
    wait_all_processed(&history, acked, Duration::from_secs(120)).await;
    stop_all(vec![m]).await;
    assert_clean("network-partition", &history, true, 500, acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_each_get_every_record() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("sc4");
    create_topic(&bootstrap, &topic, 3, 1).await.unwrap();
    let (h1, h2) = (History::new(), History::new());
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    let a = member(
        &bootstrap,
        &random_name("g1"),
        &topic,
        DispatchMode::Unordered { max_in_flight: 32 },
        &h1,
        "a",
        up_to::<2>,
    )
    .await;
    let b = member(
        &bootstrap,
        &random_name("g2"),
        &topic,
        DispatchMode::PartitionOrdered,
        &h2,
        "b",
        up_to::<0>,
    )
    .await;
    let sending = produce_at(producer, &topic, 500, 500, &h1);
    let acked = tokio::time::timeout(Duration::from_secs(60), sending)
        .await
        .unwrap()
        .unwrap();
    for e in h1.events() {
        if let kafkit_integration_tests::history::Event::Produced { tp, offset, key } = e {
            h2.produced(tp, offset, key);
        }
    }
    wait_all_processed(&h1, acked, Duration::from_secs(60)).await;
    wait_all_processed(&h2, acked, Duration::from_secs(60)).await;
    stop_all(vec![a, b]).await;
    assert_clean("multiple-groups (group 1)", &h1, false, 500, acked);
    assert_clean("multiple-groups (group 2)", &h2, true, 500, acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_cluster_survives_losing_a_leader() {
    let cluster = LocalCluster::start_with(
        3,
        BrokerOptions::default()
            .heap("384m")
            .property("min.insync.replicas", "2"),
    )
    .await
    .unwrap();
    let bootstrap = cluster.bootstrap();
    let topic = random_name("sc6");
    create_topic(&bootstrap, &topic, 3, 3).await.unwrap();
    let history = History::new();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    let m = member(
        &bootstrap,
        &random_name("g"),
        &topic,
        DispatchMode::KeyOrdered { max_in_flight: 16 },
        &history,
        "m1",
        up_to::<2>,
    )
    .await;
    let sending = produce_at(producer, &topic, 600, 100, &history);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // With 3 partitions spread over 3 nodes, node 1 leads one of them.
    cluster.node(1).unwrap().kill();
    let acked = tokio::time::timeout(Duration::from_secs(180), sending)
        .await
        .unwrap()
        .unwrap();
    wait_all_processed(&history, acked, Duration::from_secs(120)).await;
    stop_all(vec![m]).await;
    assert_clean("replicated-leader-loss", &history, true, 600, acked);
    assert!(
        acked >= 590,
        "with two in-sync replicas left, sends keep being acknowledged: {acked}"
    );
}

/// Leadership of many partitions moves between brokers while one member consumes them all: the
/// leader of a third of the partitions is killed, comes back, then another is killed. Each broker
/// task of the consumer loses its connection or hears NOT_LEADER_OR_FOLLOWER / FENCED_LEADER_EPOCH;
/// its partitions move to their new leaders' fetch sessions, and nothing is lost or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_of_many_partitions_moving_between_brokers_loses_nothing() {
    const PARTITIONS: i32 = 60;
    const SENT: usize = 2_000;
    let cluster = LocalCluster::start_with(
        3,
        BrokerOptions::default()
            .heap("384m")
            .property("min.insync.replicas", "2"),
    )
    .await
    .unwrap();
    let bootstrap = cluster.bootstrap();
    let topic = random_name("sc-leaders");
    create_topic(&bootstrap, &topic, PARTITIONS, 3)
        .await
        .unwrap();
    let history = History::new();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    let m = member(
        &bootstrap,
        &random_name("g"),
        &topic,
        DispatchMode::PartitionOrdered,
        &history,
        "m1",
        up_to::<2>,
    )
    .await;
    let sending = produce_at(producer, &topic, SENT, 200, &history);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Node 1 leads about a third of the partitions: they move to nodes 0 and 2.
    cluster.node(1).unwrap().kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.node(1).unwrap().restart().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Then node 2's partitions move (some to node 1, back in the ISR by now or soon).
    cluster.node(2).unwrap().kill();
    let acked = tokio::time::timeout(Duration::from_secs(240), sending)
        .await
        .unwrap()
        .unwrap();
    wait_all_processed(&history, acked, Duration::from_secs(180)).await;
    stop_all(vec![m]).await;
    assert_clean("leadership-moves", &history, true, SENT, acked);
    assert!(
        acked >= SENT * 9 / 10,
        "with two replicas left after each kill, most sends are acknowledged: {acked}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_the_session_timeout_loses_nothing() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("sc7");
    create_topic(&bootstrap, &topic, 2, 1).await.unwrap();
    let history = History::new();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    let acked = tokio::time::timeout(
        Duration::from_secs(60),
        produce_at(producer, &topic, 200, 1_000, &history),
    )
    .await
    .unwrap()
    .unwrap();
    // Offsets divisible by 50 take 8 s, longer than the 6 s session timeout; the rest are instant.
    let slow: Latency = |offset| {
        if offset % 50 == 0 {
            Duration::from_secs(8)
        } else {
            Duration::ZERO
        }
    };
    let m = member(
        &bootstrap,
        &random_name("g"),
        &topic,
        DispatchMode::KeyOrdered { max_in_flight: 8 },
        &history,
        "m1",
        slow,
    )
    .await;
    wait_all_processed(&history, acked, Duration::from_secs(180)).await;
    stop_all(vec![m]).await;
    assert_clean("slow-handler", &history, true, 200, acked);
    let lost_events = history
        .events()
        .iter()
        .filter(|e| matches!(e, kafkit_integration_tests::history::Event::Lost { .. }))
        .count();
    assert_eq!(lost_events, 0, "the member was never expelled");
}

/// A stage-1 member of the churn chain: reads `input`, writes `<in partition>:<in offset>` to
/// `output` under the same key, and returns only once that produce is acknowledged.
async fn relay(
    bootstrap: &str,
    group: &str,
    input: &str,
    output: &str,
    mode: DispatchMode,
    producer: &Producer,
    cooperative: bool,
) -> (ShutdownHandle, Run) {
    let mut config = GroupConfig::new(group, [input])
        .session_timeout(Duration::from_secs(6))
        .heartbeat_interval(Duration::from_millis(500))
        .rebalance_timeout(Duration::from_secs(20));
    if cooperative {
        config = config.assignors(vec![Arc::new(CooperativeStickyAssignor)]);
    }
    let consumer = ConsumerBuilder::new(client(bootstrap), config)
        .dispatch(mode)
        .auto_offset_reset(OffsetReset::Earliest)
        .commit_interval(Duration::from_millis(300))
        .revoke_timeout(Duration::from_secs(5))
        .shutdown_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let stop = consumer.shutdown_handle();
    let producer = producer.clone();
    let output = output.to_owned();
    let run = tokio::spawn(consumer.run(move |r| {
        let producer = producer.clone();
        let output = output.clone();
        async move {
            let ms = (r.offset() as u64).wrapping_mul(2_654_435_761) % 20;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let value = format!("{}:{}", r.partition(), r.offset());
            let out = ProducerRecord::new(output, value).key(r.key().unwrap_or_default().to_vec());
            producer.send(out).await.map(|_| ())
        }
    }));
    (stop, run)
}

/// xorshift: the churn's schedule, reproducible from the printed seed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

async fn churn_chain(mode: DispatchMode, ordered: bool, cooperative: bool) {
    let bootstrap = shared().await.unwrap().bootstrap();
    let input = random_name("chain-in");
    let output = random_name("chain-out");
    let group = random_name("relay");
    create_topic(&bootstrap, &input, 6, 1).await.unwrap();
    create_topic(&bootstrap, &output, 6, 1).await.unwrap();
    let mut seed: u64 = std::env::var("KAFKIT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_ef01);
    eprintln!("churn seed {seed}");
    let input_history = History::new();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();

    // The end of the chain: one steady member recording what arrives on the output topic.
    let sink_history = History::new();
    let sink = member(
        &bootstrap,
        &random_name("sink"),
        &output,
        DispatchMode::PartitionOrdered,
        &sink_history,
        "sink",
        up_to::<0>,
    )
    .await;

    let mut relays = vec![
        relay(
            &bootstrap,
            &group,
            &input,
            &output,
            mode,
            &producer,
            cooperative,
        )
        .await,
    ];
    // `KAFKIT_CHAOS_ROUNDS` (`just chaos`) repeats the churn and the traffic for longer runs.
    let rounds: usize = std::env::var("KAFKIT_CHAOS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1)
        .max(1);
    let records = 1_500 * rounds;
    let sending = produce_at(producer.clone(), &input, records, 150, &input_history);
    let (mut joined, mut left, mut killed) = (0, 0, 0);
    // A fixed mix of joins, clean leaves and crashes per round; timing and victims come from the seed.
    let schedule = ["join", "join", "kill", "join", "leave", "kill", "join"].repeat(rounds);
    for &action in &schedule {
        if (action == "leave" || action == "kill") && relays.len() < 2 {
            relays.push(
                relay(
                    &bootstrap,
                    &group,
                    &input,
                    &output,
                    mode,
                    &producer,
                    cooperative,
                )
                .await,
            );
            joined += 1;
        }
        tokio::time::sleep(Duration::from_millis(1_000 + next(&mut seed) % 1_500)).await;
        match action {
            "join" => {
                relays.push(
                    relay(
                        &bootstrap,
                        &group,
                        &input,
                        &output,
                        mode,
                        &producer,
                        cooperative,
                    )
                    .await,
                );
                joined += 1;
            }
            "leave" => {
                let (stop, run) = relays.remove((next(&mut seed) as usize) % relays.len());
                stop.shutdown();
                tokio::time::timeout(Duration::from_secs(30), run)
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                left += 1;
            }
            _ => {
                let (_, run) = relays.remove((next(&mut seed) as usize) % relays.len());
                run.abort();
                killed += 1;
            }
        }
    }
    let acked = tokio::time::timeout(Duration::from_secs(120 * rounds as u64), sending)
        .await
        .unwrap()
        .unwrap();
    // Every acknowledged input record reaches the output topic (possibly more than once).
    let expected: std::collections::BTreeSet<String> = input_history
        .events()
        .into_iter()
        .filter_map(|e| match e {
            kafkit_integration_tests::history::Event::Produced { tp, offset, .. } => {
                Some(format!("{}:{offset}", tp.partition))
            }
            _ => None,
        })
        .collect();
    let values = eventually_async(
        Duration::from_secs(120),
        Duration::from_millis(500),
        || async {
            let values = read_values(&bootstrap, &output, 6).await;
            let distinct: std::collections::BTreeSet<&String> =
                values.iter().map(|(_, _, v)| v).collect();
            if expected.iter().all(|v| distinct.contains(v)) {
                return Ok(values);
            }
            Err(format!(
                "chain lost records: {} of {} input records reached the output",
                expected.iter().filter(|v| distinct.contains(v)).count(),
                expected.len()
            ))
        },
    )
    .await;
    let mut stops = relays;
    stops.push(sink);
    stop_all(stops).await;

    if ordered {
        // Per key, the first arrival of each input record follows input order.
        type FirstArrivals = (std::collections::BTreeSet<String>, Vec<(i32, i64)>);
        let mut first_seen: std::collections::HashMap<Vec<u8>, FirstArrivals> = Default::default();
        for (key, _, value) in &values {
            let (seen, order) = first_seen.entry(key.clone()).or_default();
            if seen.insert(value.clone()) {
                let (p, o) = value.split_once(':').unwrap();
                order.push((p.parse().unwrap(), o.parse().unwrap()));
            }
        }
        for (key, (_, order)) in &first_seen {
            for w in order.windows(2) {
                assert!(
                    w[0].0 != w[1].0 || w[0].1 < w[1].1,
                    "key {:?}: input {:?} arrived before {:?}",
                    String::from_utf8_lossy(key),
                    w[1],
                    w[0]
                );
            }
        }
    }
    let duplicates = values.len() - expected.len();
    eprintln!(
        "SCENARIO churn-chain {mode:?}{}: sent {records}, acknowledged {acked}, lost 0, duplicates at the end of the chain {duplicates}, members joined {joined} left {left} killed {killed}",
        if cooperative {
            " cooperative-sticky"
        } else {
            ""
        }
    );
    assert_clean("churn-chain sink", &sink_history, true, 0, 0);
}

/// Every record of `topic` as (key, offset, value), per partition in log order.
async fn read_values(bootstrap: &str, topic: &str, partitions: i32) -> Vec<(Vec<u8>, i64, String)> {
    use rskafka::client::ClientBuilder;
    use rskafka::client::partition::UnknownTopicHandling;
    let client = ClientBuilder::new(vec![bootstrap.to_owned()])
        .build()
        .await
        .unwrap();
    let mut out = Vec::new();
    for p in 0..partitions {
        let pc = client
            .partition_client(topic, p, UnknownTopicHandling::Error)
            .await
            .unwrap();
        let mut offset = 0;
        loop {
            let (records, hw) = pc.fetch_records(offset, 1..4_000_000, 100).await.unwrap();
            for r in &records {
                out.push((
                    r.record.key.clone().unwrap_or_default(),
                    r.offset,
                    String::from_utf8(r.record.value.clone().unwrap_or_default()).unwrap(),
                ));
            }
            if let Some(last) = records.last() {
                offset = last.offset + 1;
            }
            if offset >= hw || records.is_empty() {
                break;
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_chain_partition_ordered() {
    churn_chain(DispatchMode::PartitionOrdered, true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_chain_key_ordered() {
    churn_chain(DispatchMode::KeyOrdered { max_in_flight: 32 }, true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_chain_unordered() {
    churn_chain(DispatchMode::Unordered { max_in_flight: 32 }, false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_chain_key_ordered_cooperative() {
    churn_chain(DispatchMode::KeyOrdered { max_in_flight: 32 }, true, true).await;
}
