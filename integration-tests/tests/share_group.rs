//! Share groups (KIP-932) against a real broker: more members than partitions, every record ending
//! as the handler decided, a member that dies holding records, a handler slower than the lock, the
//! delivery-count limit, and the error on a broker without share groups (Kafka 3.9).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafkit::admin;
use kafkit::metrics::{Metrics, MetricsConfig};
use kafkit::resilience::{BackoffPolicy, RetryPolicy};
use kafkit::share::{ShareConsumer, ShareConsumerBuilder, ShareCounters};
use kafkit::{ProducerBuilder, ProducerRecord};
use kafkit_integration_tests::support::{client, eventually};
use kafkit_testkit::{create_topic, kafka_version, random_name, shared};
use parking_lot::Mutex;
use tokio::task::JoinHandle;

/// Kafka 3.x has no share groups.
fn old_broker() -> bool {
    kafka_version().starts_with("3.")
}

/// Sets share-group configs on `group` before its members join (`kafka-configs --entity-type
/// groups`), e.g. `share.auto.offset.reset=earliest` (the default, latest, would skip the records
/// produced before the group exists).
async fn configure_group(bootstrap: &str, group: &str, configs: &[(&str, &str)]) {
    admin::alter_group_configs(&client(bootstrap), group, configs)
        .await
        .unwrap();
}

async fn produce(bootstrap: &str, topic: &str, partitions: i32, count: usize) {
    let producer = ProducerBuilder::new(client(bootstrap))
        .build()
        .await
        .unwrap();
    for i in 0..count {
        producer
            .send(ProducerRecord::new(topic, i.to_string()).partition(i as i32 % partitions))
            .await
            .unwrap();
    }
}

const EARLIEST: (&str, &str) = ("share.auto.offset.reset", "earliest");

fn not_poison(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    !e.to_string().contains("poison")
}

/// No local retries: a failure is settled at once.
fn no_retries() -> RetryPolicy {
    RetryPolicy::new(1, BackoffPolicy::default())
        .unwrap()
        .retriable_if(not_poison)
}

fn member(bootstrap: &str, group: &str, topic: &str) -> ShareConsumerBuilder {
    ShareConsumerBuilder::new(client(bootstrap), group, [topic])
        .fetch_max_wait(Duration::from_millis(200))
        .retry_policy(no_retries())
}

/// What the handlers saw: (partition, offset) -> the delivery count of each call.
type Seen = Arc<Mutex<BTreeMap<(i32, i64), Vec<i16>>>>;

fn spawn_member(
    consumer: ShareConsumer,
    seen: Seen,
    poison: fn(&str) -> bool,
) -> JoinHandle<kafkit::Result<ShareCounters>> {
    tokio::spawn(consumer.run(move |record| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock()
                .entry((record.partition(), record.offset()))
                .or_default()
                .push(record.delivery_count().unwrap_or(0));
            let value = String::from_utf8_lossy(record.value().unwrap_or_default()).into_owned();
            if poison(&value) {
                return Err::<(), _>(std::io::Error::other("poison"));
            }
            Ok(())
        }
    }))
}

fn is_poison(value: &str) -> bool {
    value.ends_with('7')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_members_than_partitions_all_get_work_and_each_record_ends_as_the_handler_decided() {
    if old_broker() {
        return;
    }
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("share");
    let group = random_name("sg");
    create_topic(&bootstrap, &topic, 2, 1).await.unwrap();
    configure_group(&bootstrap, &group, &[EARLIEST]).await;
    const N: usize = 300;
    produce(&bootstrap, &topic, 2, N).await;

    let seen: Seen = Arc::default();
    let mut members = Vec::new();
    let mut counters = Vec::new();
    let mut shutdowns = Vec::new();
    let mut health = Vec::new();
    for _ in 0..3 {
        // Small fetches, so that the records spread over the members.
        let consumer = member(&bootstrap, &group, &topic)
            .max_records(10)
            .build()
            .unwrap();
        counters.push(consumer.counters());
        health.push(consumer.health_handle());
        shutdowns.push(consumer.shutdown_handle());
        let seen = Arc::clone(&seen);
        members.push(spawn_member(consumer, seen, is_poison));
    }
    let settled = || {
        counters
            .iter()
            .map(|c| {
                let c = c.get();
                c.accepted + c.rejected
            })
            .sum::<u64>()
    };
    eventually(Duration::from_secs(40), "every record settled", || {
        settled() >= N as u64
    })
    .await;
    // Every member is healthy: joined, and assigned partitions (shared: 3 members, 2 partitions).
    for h in &health {
        let report = h.report();
        assert!(report.healthy && report.member_epoch > 0, "{report:?}");
        assert!(!report.assigned.is_empty(), "{report:?}");
    }
    for s in &shutdowns {
        s.shutdown();
    }
    let mut finals = Vec::new();
    for m in members {
        finals.push(m.await.unwrap().unwrap());
    }
    for (i, c) in finals.iter().enumerate() {
        assert!(c.acquired > 0, "member {i} got no work: {c:?}");
        assert_eq!(c.lock_expired, 0, "member {i}: {c:?}");
        assert_eq!(c.ack_failures, 0, "member {i}: {c:?}");
    }
    let accepted: u64 = finals.iter().map(|c| c.accepted).sum();
    let rejected: u64 = finals.iter().map(|c| c.rejected).sum();
    let poison = (0..N).filter(|i| is_poison(&i.to_string())).count() as u64;
    assert_eq!((accepted, rejected), (N as u64 - poison, poison));
    // The history: each record was handled once, with delivery count 1 (nothing was released).
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), N);
    for (record, deliveries) in &seen {
        assert_eq!(deliveries, &[1], "record {record:?}");
    }

    // Nothing is delivered again: a new member of the group gets no record.
    let late: Seen = Arc::default();
    let consumer = member(&bootstrap, &group, &topic).build().unwrap();
    let stop = consumer.shutdown_handle();
    let task = spawn_member(consumer, Arc::clone(&late), |_| false);
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.shutdown();
    let c = task.await.unwrap().unwrap();
    assert_eq!(c.acquired, 0, "redelivered: {:?}", late.lock());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_a_member_that_dies_holding_them_go_to_another_member() {
    if old_broker() {
        return;
    }
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("share-kill");
    let group = random_name("sg-kill");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    configure_group(
        &bootstrap,
        &group,
        &[EARLIEST, ("share.record.lock.duration.ms", "3000")],
    )
    .await;
    const N: usize = 20;
    produce(&bootstrap, &topic, 1, N).await;

    // The first member acquires every record and never finishes one.
    let stuck = member(&bootstrap, &group, &topic).build().unwrap();
    let stuck_counters = stuck.counters();
    let stuck_task = tokio::spawn(stuck.run(|_record| async {
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    }));
    eventually(
        Duration::from_secs(20),
        "the first member holds records",
        || stuck_counters.get().acquired > 0,
    )
    .await;
    let held = stuck_counters.get().acquired;
    // It dies: no acknowledgement, no session close, no leave.
    stuck_task.abort();
    let _ = stuck_task.await;

    let seen: Seen = Arc::default();
    let other = member(&bootstrap, &group, &topic).build().unwrap();
    let counters = other.counters();
    let stop = other.shutdown_handle();
    let task = spawn_member(other, Arc::clone(&seen), |_| false);
    eventually(
        Duration::from_secs(30),
        "all records accepted by the other member",
        || counters.get().accepted >= N as u64,
    )
    .await;
    stop.shutdown();
    task.await.unwrap().unwrap();
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), N);
    let redelivered = seen.values().filter(|d| d[0] >= 2).count() as u64;
    assert_eq!(
        redelivered, held,
        "the records the dead member held come again, with a higher delivery count: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_settled_after_its_lock_is_not_acknowledged_and_comes_back() {
    if old_broker() {
        return;
    }
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("share-lock");
    let group = random_name("sg-lock");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    configure_group(
        &bootstrap,
        &group,
        &[EARLIEST, ("share.record.lock.duration.ms", "1500")],
    )
    .await;
    produce(&bootstrap, &topic, 1, 1).await;
    let seen: Seen = Arc::default();
    let metrics = Metrics::new(MetricsConfig::default());
    let consumer = member(&bootstrap, &group, &topic)
        .metrics(metrics.clone())
        .build()
        .unwrap();
    let counters = consumer.counters();
    let stop = consumer.shutdown_handle();
    let calls = Arc::clone(&seen);
    let task = tokio::spawn(consumer.run(move |record| {
        let calls = Arc::clone(&calls);
        async move {
            let delivery = record.delivery_count().unwrap_or(0);
            calls
                .lock()
                .entry((record.partition(), record.offset()))
                .or_default()
                .push(delivery);
            if delivery == 1 {
                // Longer than the lock.
                tokio::time::sleep(Duration::from_millis(2500)).await;
            }
            Ok::<_, std::io::Error>(())
        }
    }));
    eventually(
        Duration::from_secs(30),
        "accepted on a later delivery",
        || counters.get().accepted == 1,
    )
    .await;
    stop.shutdown();
    let c = task.await.unwrap().unwrap();
    assert_eq!(c.lock_expired, 1, "{c:?}");
    assert_eq!(c.redelivered, 1, "{c:?}");
    assert_eq!(seen.lock()[&(0, 0)], vec![1, 2]);
    // The same in the metrics snapshot and its Prometheus text.
    let snapshot = metrics.publish();
    let m = snapshot.topic(&topic).unwrap().counters;
    assert_eq!(
        (
            m.share_acquired,
            m.share_redelivered,
            m.share_accepted,
            m.share_lock_expired
        ),
        (2, 1, 1, 1)
    );
    assert_eq!(m.share_deliveries, [1, 1, 0, 0, 0]);
    let text = snapshot.to_prometheus();
    let line = format!("kafkit_share_lock_expired_total{{topic=\"{topic}\"}} 1");
    assert!(text.contains(&line), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_over_the_delivery_count_limit_are_archived() {
    if old_broker() {
        return;
    }
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("share-limit");
    let group = random_name("sg-limit");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    configure_group(
        &bootstrap,
        &group,
        &[EARLIEST, ("share.delivery.count.limit", "2")],
    )
    .await;
    produce(&bootstrap, &topic, 1, 3).await;
    let seen: Seen = Arc::default();
    let consumer = member(&bootstrap, &group, &topic).build().unwrap();
    let counters = consumer.counters();
    let stop = consumer.shutdown_handle();
    // Record 1 always fails with a retriable error: released each time.
    let calls = Arc::clone(&seen);
    let task = tokio::spawn(consumer.run(move |record| {
        let calls = Arc::clone(&calls);
        async move {
            calls
                .lock()
                .entry((record.partition(), record.offset()))
                .or_default()
                .push(record.delivery_count().unwrap_or(0));
            if record.offset() == 1 {
                return Err(std::io::Error::other("downstream says later"));
            }
            Ok(())
        }
    }));
    eventually(Duration::from_secs(30), "released up to the limit", || {
        counters.get().released >= 2
    })
    .await;
    // Time for a third delivery, which must not come.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.shutdown();
    let c = task.await.unwrap().unwrap();
    assert_eq!((c.accepted, c.released), (2, 2), "{c:?}");
    assert_eq!(seen.lock()[&(0, 1)], vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_share_groups_gets_a_clear_error() {
    if !old_broker() {
        return;
    }
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("share-old");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    let consumer = member(&bootstrap, "sg-old", &topic).build().unwrap();
    let error = tokio::time::timeout(
        Duration::from_secs(30),
        consumer.run(|_r| async { Ok::<_, std::io::Error>(()) }),
    )
    .await
    .expect("fails at once")
    .unwrap_err()
    .to_string();
    assert!(error.contains("does not offer share groups"), "{error}");
}

/// A child process whose stdout is collected line by line as it arrives.
struct Child {
    child: tokio::process::Child,
    stdout: Arc<Mutex<String>>,
    reader: JoinHandle<()>,
}

impl Child {
    fn spawn(mut cmd: tokio::process::Command) -> Child {
        use tokio::io::AsyncBufReadExt;
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("starting a consumer process");
        let stdout: Arc<Mutex<String>> = Arc::default();
        let pipe = child.stdout.take().unwrap();
        let into = Arc::clone(&stdout);
        let reader = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut text = into.lock();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Child {
            child,
            stdout,
            reader,
        }
    }

    fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lock()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// SIGTERM, then the exit; returns every event printed.
    async fn stop(mut self) -> Vec<serde_json::Value> {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.reader).await;
        self.events()
    }
}

/// (partition, offset) of every event `name` (`records_consumed`, or `offsets_acknowledged` with
/// success true).
fn offsets_of(events: &[serde_json::Value], name: &str) -> Vec<(i64, i64)> {
    events
        .iter()
        .filter(|e| e["name"] == name && e.get("success").is_none_or(|s| s == true))
        .flat_map(|e| e["partitions"].as_array().cloned().unwrap_or_default())
        .flat_map(|p| {
            let partition = p["partition"].as_i64().unwrap();
            p["offsets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |o| (partition, o.as_i64().unwrap()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkit_and_java_verifiable_share_consumers_share_one_group() {
    if old_broker() {
        return;
    }
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("share-java");
    let group = random_name("sg-java");
    create_topic(&bootstrap, &topic, 2, 1).await.unwrap();
    let args = [
        "--bootstrap-server",
        &bootstrap,
        "--topic",
        &topic,
        "--group-id",
        &group,
        "--offset-reset-strategy",
        "earliest",
        "--acknowledgement-mode",
        "sync",
        "--ack-pattern",
        "accept,accept,accept,reject",
    ];
    // kafkit's takes its client id from a properties file, as Java's tool takes its settings.
    let config = std::env::temp_dir().join(format!("{group}.properties"));
    std::fs::write(
        &config,
        "client.id=kafkit-verifiable-share\nsecurity.protocol=PLAINTEXT\n",
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new(kafkit_integration_tests::kafkit_bin());
    cmd.arg("verifiable-share-consumer")
        .args(args)
        .args(["--processing-time-ms", "2", "--command-config"])
        .arg(&config);
    let kafkit = Child::spawn(cmd);
    let mut cmd = kafkit_testkit::java_command().unwrap();
    cmd.arg("org.apache.kafka.tools.VerifiableShareConsumer")
        .args(args);
    let java = Child::spawn(cmd);

    // Both are members (the share group as ShareGroupDescribe has it), then the records come in
    // waves so that both fetch some.
    let c = client(&bootstrap);
    let mut described = None;
    for _ in 0..300 {
        if let Ok(d) = admin::describe_group(&c, &group).await
            && d.members.len() == 2
        {
            described = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let described = described.expect("both consumers join the share group within 30 s");
    assert_eq!(described.group_type, "share");
    assert!(
        described
            .members
            .iter()
            .any(|m| m.client_id == "kafkit-verifiable-share"),
        "--command-config's client.id: {described:?}"
    );
    let _ = std::fs::remove_file(&config);
    check_cli_against_kafka_share_groups(&bootstrap, &group).await;
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    const N: i64 = 400;
    for i in 0..N {
        producer
            .send(ProducerRecord::new(&topic, i.to_string()).partition((i % 2) as i32))
            .await
            .unwrap();
        if i % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let all: std::collections::BTreeSet<(i64, i64)> = (0..N).map(|i| (i % 2, i / 2)).collect();
    let acked = || {
        let mut a = offsets_of(&kafkit.events(), "offsets_acknowledged");
        a.extend(offsets_of(&java.events(), "offsets_acknowledged"));
        a
    };
    eventually(Duration::from_secs(45), "every record acknowledged", || {
        acked()
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == all.len()
    })
    .await;
    check_offsets_against_kafka_share_groups(&bootstrap, &group, &topic, N / 2).await;
    let (k, j) = tokio::join!(kafkit.stop(), java.stop());
    let k_consumed = offsets_of(&k, "records_consumed");
    let j_consumed = offsets_of(&j, "records_consumed");
    assert!(!k_consumed.is_empty(), "kafkit got no records");
    assert!(!j_consumed.is_empty(), "Java got no records");
    // Each record acknowledged once, by the member that consumed it.
    let k_acked = offsets_of(&k, "offsets_acknowledged");
    let j_acked = offsets_of(&j, "offsets_acknowledged");
    let mut seen = std::collections::BTreeSet::new();
    for o in k_acked.iter().chain(&j_acked) {
        assert!(seen.insert(*o), "{o:?} acknowledged twice");
    }
    assert_eq!(seen, all);
    let k_set: std::collections::BTreeSet<_> = k_consumed.iter().copied().collect();
    assert!(k_acked.iter().all(|o| k_set.contains(o)));
    for e in [
        "startup_complete",
        "offset_reset_strategy_set",
        "shutdown_complete",
    ] {
        assert!(k.iter().any(|v| v["name"] == e), "kafkit printed no {e}");
    }
}

/// Once every record of `topic`'s two partitions (`end` each) is acknowledged: `kafkit group
/// describe` shows each share partition's start offset (progress made, at most `end`) with the lag
/// it leaves, and the same start offsets as `kafka-share-groups --describe`.
async fn check_offsets_against_kafka_share_groups(
    bootstrap: &str,
    group: &str,
    topic: &str,
    end: i64,
) {
    let ours = || {
        let out = std::process::Command::new(kafkit_integration_tests::kafkit_bin())
            .args(["group", "describe", "--group-id", group])
            .args(["--bootstrap-server", bootstrap, "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["topic"] == topic)
            .map(|p| {
                let partition = p["partition"].as_i64().unwrap();
                let start = p["committed"].as_i64().expect("a start offset");
                assert!(
                    (1..=end).contains(&start),
                    "partition {partition} at {start}"
                );
                assert_eq!(p["end"].as_i64(), Some(end));
                assert_eq!(p["lag"].as_i64(), Some(end - start));
                (partition, start)
            })
            .collect::<Vec<_>>()
    };
    let theirs = || async {
        let java = kafkit_testkit::java_tool(
            "org.apache.kafka.tools.consumer.group.ShareGroupCommand",
            &[
                "--bootstrap-server",
                bootstrap,
                "--describe",
                "--group",
                group,
            ],
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        assert!(java.success, "{}", java.stderr);
        let mut lines = java.stdout.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines
            .find(|l| l.contains("START-OFFSET"))
            .unwrap_or_else(|| panic!("no offsets table:\n{}", java.stdout))
            .split_whitespace()
            .collect();
        let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let (partition, start) = (column("PARTITION"), column("START-OFFSET"));
        let mut rows: Vec<(i64, i64)> = lines
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|c| c.get(1) == Some(&topic))
            .map(|c| (c[partition].parse().unwrap(), c[start].parse().unwrap()))
            .collect();
        rows.sort_unstable();
        rows
    };
    // The start offsets move a moment after the last acknowledgements are answered: both views
    // are taken until they agree.
    let mut last = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let before = ours();
        let java = theirs().await;
        let after = ours();
        if before.len() == 2 && (java == before || java == after) {
            return;
        }
        last = (after, java);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "start offsets (partition, offset): kafkit {:?}, kafka-share-groups {:?}",
        last.0, last.1
    );
}

/// `kafkit group describe` and `list` on a share group with two members, against what Kafka's
/// `kafka-share-groups --describe --members` reports.
async fn check_cli_against_kafka_share_groups(bootstrap: &str, group: &str) {
    let kafkit = |args: &[&str]| {
        let mut cmd = std::process::Command::new(kafkit_integration_tests::kafkit_bin());
        cmd.args(args)
            .args(["--bootstrap-server", bootstrap, "--json"]);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // Members get their partitions a heartbeat or two after joining.
    let mut described = serde_json::Value::Null;
    for _ in 0..100 {
        described = kafkit(&["group", "describe", "--group-id", group]);
        let members = described["members"].as_array().cloned().unwrap_or_default();
        // Settled: both assigned, at the group's epoch (the assignment no longer moves).
        if members.len() == 2
            && members.iter().all(|m| {
                !m["assignment"].as_array().unwrap().is_empty()
                    && m["member_epoch"] == described["group_epoch"]
            })
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(described["group_type"], "share");
    assert_eq!(described["state"], "Stable");
    let members = described["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    let listed = kafkit(&["group", "list"]);
    let listing = listed["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group_id"] == group)
        .expect("the share group is listed")
        .clone();
    assert_eq!(listing["group_type"], "share");
    let java = kafkit_testkit::java_tool(
        "org.apache.kafka.tools.consumer.group.ShareGroupCommand",
        &[
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--members",
            "--group",
            group,
        ],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(java.success, "{}", java.stderr);
    for m in members {
        let id = m["member_id"].as_str().unwrap();
        // GROUP CONSUMER-ID HOST CLIENT-ID #PARTITIONS ASSIGNMENT (`topic:0,1`)
        let line = java
            .stdout
            .lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| {
                panic!(
                    "kafka-share-groups does not list member {id}:\n{}",
                    java.stdout
                )
            });
        let columns: Vec<&str> = line.split_whitespace().collect();
        let ours: Vec<i64> = m["assignment"]
            .as_array()
            .unwrap()
            .iter()
            .map(|tp| tp["partition"].as_i64().unwrap())
            .collect();
        assert_eq!(columns[4], ours.len().to_string(), "member {id}: `{line}`");
        let theirs: Vec<i64> = columns[5]
            .rsplit_once(':')
            .unwrap()
            .1
            .split(',')
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(theirs, ours, "member {id}: `{line}`");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_consume_prints_and_accepts_or_releases() {
    if old_broker() {
        return;
    }
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("share-cli");
    let group = random_name("sg-cli");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    produce(&bootstrap, &topic, 1, 5).await;
    let share_consume = |ack: &str| {
        let mut cmd = tokio::process::Command::new(kafkit_integration_tests::kafkit_bin());
        cmd.args(["share-consume", "--bootstrap-server", &bootstrap])
            .args(["--topic", &topic, "--group", &group, "--from-beginning"])
            .args(["--max-messages", "5", "--print-offset", "--ack", ack])
            .kill_on_drop(true);
        async move {
            let out = tokio::time::timeout(Duration::from_secs(40), cmd.output())
                .await
                .expect("share-consume ends after 5 records")
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }
    };
    // Released: the same records come again, one delivery later.
    let first = share_consume("release").await;
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 5, "{first}");
    assert!(
        lines.iter().all(|l| l.split('\t').nth(2) == Some("1")),
        "{first}"
    );
    let second = share_consume("accept").await;
    let offsets = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split('\t').nth(1).unwrap().to_owned())
            .collect()
    };
    assert_eq!(offsets(&second), offsets(&first));
    // Delivered again: 2, or 3 when the first run's last ShareFetch (which carried the releases)
    // acquired them once more before it shut down and released them again.
    assert!(
        second
            .lines()
            .all(|l| matches!(l.split('\t').nth(2), Some("2" | "3"))),
        "{second}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_handler_s_poison_records_are_dead_lettered_then_accepted() {
    if old_broker() {
        return;
    }
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("share-batch");
    let dlt = format!("{topic}-dlt");
    let group = random_name("sg-batch");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    create_topic(&bootstrap, &dlt, 1, 1).await.unwrap();
    configure_group(&bootstrap, &group, &[EARLIEST]).await;
    const N: usize = 20;
    produce(&bootstrap, &topic, 1, N).await;
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    let consumer = member(&bootstrap, &group, &topic)
        .dead_letter(kafkit::resilience::DeadLetterPolicy::default(), producer)
        .build()
        .unwrap();
    let counters = consumer.counters();
    let stop = consumer.shutdown_handle();
    let batches: Arc<Mutex<Vec<usize>>> = Arc::default();
    let sizes = Arc::clone(&batches);
    let task = tokio::spawn(consumer.run_batch(4, move |records| {
        sizes.lock().push(records.len());
        async move {
            records
                .iter()
                .map(|r| {
                    let value = String::from_utf8_lossy(r.value().unwrap_or_default()).into_owned();
                    if is_poison(&value) {
                        Err(std::io::Error::other("poison"))
                    } else {
                        Ok(())
                    }
                })
                .collect::<Vec<_>>()
        }
    }));
    eventually(Duration::from_secs(30), "every record accepted", || {
        counters.get().accepted >= N as u64
    })
    .await;
    stop.shutdown();
    let c = task.await.unwrap().unwrap();
    assert_eq!(
        (c.accepted, c.rejected, c.released),
        (N as u64, 0, 0),
        "{c:?}"
    );
    assert!(batches.lock().iter().all(|&n| (1..=4).contains(&n)));
    // The poison records (values ending in 7: offsets 7 and 17) are in the dead-letter topic, with
    // their origin in Spring's headers.
    let dlt_group = random_name("sg-dlt");
    configure_group(&bootstrap, &dlt_group, &[EARLIEST]).await;
    let reader = member(&bootstrap, &dlt_group, &dlt).build().unwrap();
    let reader_counters = reader.counters();
    let reader_stop = reader.shutdown_handle();
    let origins: Arc<Mutex<Vec<i64>>> = Arc::default();
    let seen = Arc::clone(&origins);
    let reading = tokio::spawn(reader.run(move |record| {
        let offset = record
            .headers()
            .iter()
            .find(|h| h.name() == "kafka_dlt-original-offset")
            .and_then(|h| h.value().map(|v| i64::from_be_bytes(v.try_into().unwrap())));
        seen.lock().push(offset.unwrap_or(-1));
        async { Ok::<_, std::io::Error>(()) }
    }));
    eventually(Duration::from_secs(30), "both dead letters read", || {
        reader_counters.get().accepted >= 2
    })
    .await;
    reader_stop.shutdown();
    reading.await.unwrap().unwrap();
    let mut origins = origins.lock().clone();
    origins.sort_unstable();
    assert_eq!(origins, vec![7, 17]);
}
