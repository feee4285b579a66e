//! A mixed group consuming while members come and go: a Java `KafkaConsumer` (commitSync after each
//! poll) and kafkit `Consumer`s share a keyed 6-partition topic that is being produced to; a kafkit
//! member leaves, another joins, the Java member leaves. On the classic protocol (range: eager;
//! cooperative-sticky) and on KIP-848's consumer protocol (Kafka 4.0+, the broker's `uniform`
//! assignor), where a kafkit member also crashes before the Java member leaves; and, on a broker
//! of its own, a consumer-protocol group of Java and kafkit through a broker SIGKILL and restart
//! and a kafkit member killed and restarted. Afterwards:
//! - every produced (partition, offset) was consumed by someone (at least once);
//! - replaying every member's ownership changes and consumed records in time order, no partition was
//!   owned by two members at once, and no member consumed a record of a partition it did not own;
//! - at the stable three-member point, the coordinator's view (`kafka-consumer-groups --describe
//!   --members --verbose`) is exactly the members' own view.
//!
//! Ownership and records are stamped with wall-clock microseconds where they happen (kafkit: the
//! `ConsumerListener` calls and the handler; Java: its rebalance callbacks and after each poll), so the
//! replay does not depend on when the test process got to read a line.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafkit::consumer::{
    Consumer, ConsumerBuilder, ConsumerListener, DispatchMode, OffsetReset, ShutdownHandle,
    ShutdownReport,
};
use kafkit::group::{CooperativeStickyAssignor, GroupConfig, GroupProtocol, TopicPartition};
use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord};
use kafkit_integration_tests::support::{
    POLL, committed, consumer_groups_describe, eventually_async, eventually_every, kafka_lag,
};
use kafkit_testkit::{LocalKafka, create_topic, java_command, kafka_version, random_name, shared};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

const PARTITIONS: i32 = 6;
/// Records produced while the group runs: `BATCHES` batches of `BATCH` every `BATCH_EVERY`.
const BATCHES: usize = 40;
const BATCH: usize = 75;
const BATCH_EVERY: Duration = Duration::from_millis(300);

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// What every member did, stamped where it happened.
#[derive(Default)]
struct Journal {
    /// (when, member, partition, acquired (true) or released (false)).
    ownership: Mutex<Vec<(u64, String, i32, bool)>>,
    /// (when, member, partition, offset).
    consumed: Mutex<Vec<(u64, String, i32, i64)>>,
}

impl Journal {
    fn own(&self, at: u64, member: &str, partition: i32, acquired: bool) {
        self.ownership
            .lock()
            .push((at, member.to_owned(), partition, acquired));
    }

    fn consume(&self, at: u64, member: &str, partition: i32, offset: i64) {
        self.consumed
            .lock()
            .push((at, member.to_owned(), partition, offset));
    }

    /// Each member's partitions now, replaying ownership changes in time order.
    fn owned(&self) -> BTreeMap<String, BTreeSet<i32>> {
        let mut events = self.ownership.lock().clone();
        events.sort_by_key(|e| (e.0, e.3));
        let mut owned: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
        for (_, member, partition, acquired) in events {
            let set = owned.entry(member).or_default();
            if acquired {
                set.insert(partition);
            } else {
                set.remove(&partition);
            }
        }
        owned.retain(|_, s| !s.is_empty());
        owned
    }

    /// True when exactly `members` own partitions, evenly, disjointly, covering all of them.
    fn balanced_among(&self, members: &[&str]) -> bool {
        let owned = self.owned();
        let names: BTreeSet<&str> = owned.keys().map(String::as_str).collect();
        let total: usize = owned.values().map(BTreeSet::len).sum();
        let union: BTreeSet<i32> = owned.values().flatten().copied().collect();
        names == members.iter().copied().collect()
            && owned
                .values()
                .all(|s| s.len() == PARTITIONS as usize / members.len())
            && total == union.len()
            && union == (0..PARTITIONS).collect()
    }

    fn consumed_set(&self) -> BTreeSet<(i32, i64)> {
        self.consumed
            .lock()
            .iter()
            .map(|(_, _, p, o)| (*p, *o))
            .collect()
    }

    /// Replays everything in time order: a partition acquired while another member holds it, or a
    /// record consumed by a member not holding its partition, is a violation.
    fn violations(&self) -> Vec<String> {
        // Same microsecond: releases first, then acquisitions, then records.
        let mut events: Vec<(u64, u8, String, i32, i64)> = self
            .ownership
            .lock()
            .iter()
            .map(|(at, m, p, acquired)| (*at, u8::from(*acquired), m.clone(), *p, -1))
            .collect();
        events.extend(
            self.consumed
                .lock()
                .iter()
                .map(|(at, m, p, o)| (*at, 2, m.clone(), *p, *o)),
        );
        events.sort();
        let mut owner: HashMap<i32, String> = HashMap::new();
        let mut violations = Vec::new();
        for (at, kind, member, partition, offset) in events {
            match kind {
                0 => {
                    if owner.get(&partition) == Some(&member) {
                        owner.remove(&partition);
                    }
                }
                1 => {
                    if let Some(other) = owner.get(&partition).filter(|o| **o != member) {
                        violations.push(format!(
                            "at {at}: partition {partition} assigned to {member} while {other} owns it"
                        ));
                    }
                    owner.insert(partition, member);
                }
                _ => {
                    if owner.get(&partition) != Some(&member) {
                        violations.push(format!(
                            "at {at}: {member} consumed {partition}@{offset} while the owner is {:?}",
                            owner.get(&partition)
                        ));
                    }
                }
            }
        }
        violations
    }
}

/// Records a kafkit consumer's ownership changes in the journal, as they happen.
struct Recorder {
    name: String,
    journal: Arc<Journal>,
}

impl Recorder {
    fn record(&self, partitions: &[TopicPartition], acquired: bool) {
        let at = now_micros();
        for tp in partitions {
            self.journal.own(at, &self.name, tp.partition, acquired);
        }
    }
}

impl ConsumerListener for Recorder {
    fn assigned(&self, partitions: &[TopicPartition]) {
        self.record(partitions, true);
    }

    fn revoked(&self, partitions: &[TopicPartition]) {
        self.record(partitions, false);
    }

    fn lost(&self, partitions: &[TopicPartition]) {
        self.record(partitions, false);
    }
}

/// A running kafkit consumer in the group.
struct KafkitMember {
    name: String,
    stop: ShutdownHandle,
    run: JoinHandle<kafkit::Result<ShutdownReport>>,
}

impl KafkitMember {
    async fn start(
        name: &str,
        bootstrap: &str,
        group: GroupConfig,
        journal: &Arc<Journal>,
    ) -> KafkitMember {
        let consumer: Consumer = timeout(
            Duration::from_secs(30),
            ConsumerBuilder::new(ClientConfig::new([bootstrap]).unwrap(), group)
                .dispatch(DispatchMode::KeyOrdered { max_in_flight: 16 })
                .auto_offset_reset(OffsetReset::Earliest)
                .commit_interval(Duration::from_millis(200))
                .revoke_timeout(Duration::from_secs(10))
                .shutdown_timeout(Duration::from_secs(10))
                .listener(Arc::new(Recorder {
                    name: name.to_owned(),
                    journal: Arc::clone(journal),
                }))
                .build(),
        )
        .await
        .expect("build within 30 s")
        .unwrap();
        let stop = consumer.shutdown_handle();
        let run = tokio::spawn({
            let journal = Arc::clone(journal);
            let name = name.to_owned();
            consumer.run(move |r| {
                let journal = Arc::clone(&journal);
                let name = name.clone();
                async move {
                    journal.consume(now_micros(), &name, r.partition(), r.offset());
                    if r.offset() % 10 == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Ok::<_, std::io::Error>(())
                }
            })
        });
        KafkitMember {
            name: name.to_owned(),
            stop,
            run,
        }
    }

    /// A crash: the consumer is dropped mid-work (nothing more is consumed or committed, no leave);
    /// its partitions are released in the journal once nothing of it runs any more.
    async fn crash(self, journal: &Journal) {
        self.run.abort();
        let _ = self.run.await;
        let at = now_micros();
        let held = journal.owned().remove(&self.name).unwrap_or_default();
        for p in held {
            journal.own(at, &self.name, p, false);
        }
        eprintln!("{} crashed", self.name);
    }

    /// Graceful stop: final commit, LeaveGroup.
    async fn stop(self) {
        self.stop.shutdown();
        let report = timeout(Duration::from_secs(30), self.run)
            .await
            .unwrap_or_else(|_| panic!("{} did not stop within 30 s", self.name))
            .unwrap()
            .unwrap_or_else(|e| panic!("{} failed: {e}", self.name));
        eprintln!("{} stopped: {report:?}", self.name);
    }
}

/// The Java consumer (`GroupClient.java consume`), feeding its lines into the journal.
struct JavaMember {
    child: tokio::process::Child,
    reader: JoinHandle<()>,
}

impl JavaMember {
    fn start(
        bootstrap: &str,
        group: &str,
        topic: &str,
        assignor: &str,
        journal: &Arc<Journal>,
    ) -> Self {
        let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("java/GroupClient.java");
        let mut cmd = java_command().unwrap();
        cmd.arg(source)
            .args(["consume", bootstrap, group, topic, assignor])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = tokio::spawn({
            let journal = Arc::clone(journal);
            async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    match words.as_slice() {
                        ["consumed", p, o, at] => journal.consume(
                            at.parse().unwrap(),
                            "java",
                            p.parse().unwrap(),
                            o.parse().unwrap(),
                        ),
                        [what @ ("assigned" | "revoked" | "lost"), at, parts @ ..] => {
                            for part in parts {
                                let (_, p) = part.rsplit_once(':').unwrap();
                                journal.own(
                                    at.parse().unwrap(),
                                    "java",
                                    p.parse().unwrap(),
                                    *what == "assigned",
                                );
                            }
                        }
                        _ => eprintln!("java: {line}"),
                    }
                }
            }
        });
        JavaMember { child, reader }
    }

    /// Closes stdin: the Java consumer leaves the group cleanly and exits; all its lines are read.
    async fn close(mut self) {
        drop(self.child.stdin.take());
        let status = timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the Java consumer exits within 30 s of stdin closing")
            .unwrap();
        assert!(status.success(), "the Java consumer failed: {status}");
        timeout(Duration::from_secs(5), self.reader)
            .await
            .expect("its output ends")
            .unwrap();
    }
}

/// Waits until `check` holds, polling every 100 ms, or panics with `what` (and the ownership) after `limit`.
async fn eventually(limit: Duration, what: &str, journal: &Journal, check: impl Fn() -> bool) {
    let message = || format!("{what}; ownership now {:?}", journal.owned());
    eventually_every(limit, POLL, message, check).await;
}

/// A new topic of `PARTITIONS` partitions named after `prefix`, and a new group id.
async fn topic_and_group(bootstrap: &str, prefix: &str) -> (String, String) {
    let topic = random_name(prefix);
    timeout(
        Duration::from_secs(30),
        create_topic(bootstrap, &topic, PARTITIONS, 1),
    )
    .await
    .unwrap()
    .unwrap();
    (topic, random_name("g"))
}

/// A kafkit member's group settings on the consumer protocol: the broker decides the session
/// timeout and heartbeat interval (the testkit's broker: 10 s and 1 s).
fn consumer_protocol(group: &str, topic: &str) -> GroupConfig {
    GroupConfig::new(group, [topic])
        .protocol(GroupProtocol::Consumer)
        .remote_assignor("uniform")
        .rebalance_timeout(Duration::from_secs(20))
}

/// Waits until the group's committed offsets reach every partition's end. Consuming every record
/// is not enough before a member stops: a record whose reader's commit failed (Java's commit is
/// refused with REBALANCE_IN_PROGRESS while its member reconciles) comes back to the partition's
/// next owner, which has to read it again and commit it.
async fn committed_to_end(
    bootstrap: &str,
    group: &str,
    topic: &str,
    produced: &BTreeSet<(i32, i64)>,
) {
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for &(p, o) in produced {
        let end = ends.entry(p).or_default();
        *end = (*end).max(o + 1);
    }
    eventually_async(Duration::from_secs(40), POLL, || async {
        let now = committed(bootstrap, group, topic, PARTITIONS).await;
        if now == ends {
            Ok(())
        } else {
            Err(format!("committed {now:?}, ends {ends:?}"))
        }
    })
    .await;
}

/// Everything consumed was committed: every partition's lag is 0, as Kafka's tool reports it.
async fn assert_final_lag_zero(bootstrap: &str, group: &str, topic: &str) {
    let (rows, raw) = kafka_lag(bootstrap, group, topic).await;
    assert!(
        rows.len() == PARTITIONS as usize && rows.values().all(|&(_, _, lag)| lag == 0),
        "final lag not 0: {raw}"
    );
}

/// No partition had two owners and nobody consumed a partition it did not own.
fn assert_no_violations(journal: &Journal) {
    let violations = journal.violations();
    assert!(
        violations.is_empty(),
        "{} violations, first: {:#?}",
        violations.len(),
        &violations[..violations.len().min(20)]
    );
}

/// Produces keyed records in paced batches and returns every (partition, offset) acknowledged.
async fn produce(bootstrap: String, topic: String) -> BTreeSet<(i32, i64)> {
    let producer = ProducerBuilder::new(ClientConfig::new([bootstrap]).unwrap())
        .build()
        .await
        .unwrap();
    let mut produced = BTreeSet::new();
    for batch in 0..BATCHES {
        let sends = (0..BATCH).map(|i| {
            let n = batch * BATCH + i;
            let record = ProducerRecord::new(&topic, n.to_string()).key(format!("key-{}", n % 97));
            let producer = producer.clone();
            async move { producer.send(record).await.unwrap() }
        });
        for d in futures::future::join_all(sends).await {
            produced.insert((d.partition, d.offset));
        }
        tokio::time::sleep(BATCH_EVERY).await;
    }
    produced
}

/// The coordinator's view: each member's partitions, from `kafka-consumer-groups --describe
/// --members --verbose`. Empty while the group is rebalancing.
async fn describe_assignments(
    bootstrap: &str,
    group: &str,
    topic: &str,
) -> (Vec<BTreeSet<i32>>, String) {
    let stdout = consumer_groups_describe(bootstrap, group, &["--members", "--verbose"]).await;
    let mut members: Vec<BTreeSet<i32>> = stdout
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(group))
        .map(|l| {
            // The (current) assignment: Kafka 4.x prints `topic:0,1`; 3.9 `(0,1)` when the group
            // reads one topic, else `topic(0,1)`.
            l.split_whitespace()
                .find_map(|w| {
                    w.strip_prefix(&format!("{topic}:"))
                        .or_else(|| w.strip_prefix(&format!("{topic}(")))
                        .or_else(|| w.strip_prefix('('))
                })
                .map(|inside| {
                    inside
                        .trim_end_matches(')')
                        .split(',')
                        .map(|p| p.parse().unwrap())
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    members.sort();
    (members, stdout)
}

/// Kafka 3.x offers the consumer protocol only as a preview, off by default: a kafkit member asking
/// for it stops at its first heartbeat with an error that says so, and owns nothing.
async fn consumer_protocol_is_refused_cleanly() {
    let bootstrap = timeout(Duration::from_secs(180), shared())
        .await
        .expect("broker within 180 s")
        .unwrap()
        .bootstrap();
    let topic = random_name("kip848-old");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    let config = GroupConfig::new(random_name("g"), [&topic]).protocol(GroupProtocol::Consumer);
    let (_member, mut events) =
        kafkit::group::GroupMember::start(&ClientConfig::new([bootstrap]).unwrap(), config)
            .unwrap();
    let event = timeout(Duration::from_secs(30), events.recv())
        .await
        .expect("an event within 30 s");
    match event {
        Some(kafkit::group::GroupEvent::Failed { error }) => {
            let text = error.to_string();
            assert!(text.contains("UnsupportedVersion"), "{text}");
            eprintln!("Kafka {}: {text}", kafka_version());
        }
        other => panic!("expected the member to fail, got {other:?}"),
    }
}

/// How the group rebalances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Classic, `range` (eager).
    Eager,
    /// Classic, `cooperative-sticky`.
    Cooperative,
    /// KIP-848, the broker's `uniform` assignor.
    Consumer,
}

async fn mixed_group_while_consuming(protocol: Protocol) {
    if protocol == Protocol::Consumer && kafka_version().starts_with("3.") {
        consumer_protocol_is_refused_cleanly().await;
        return;
    }
    let bootstrap = timeout(Duration::from_secs(180), shared())
        .await
        .expect("broker within 180 s")
        .unwrap()
        .bootstrap();
    let (topic, group) = topic_and_group(&bootstrap, "mixed-consume").await;
    let config = || {
        if protocol == Protocol::Consumer {
            return consumer_protocol(&group, &topic);
        }
        let c = GroupConfig::new(&group, [&topic])
            .session_timeout(Duration::from_secs(10))
            .heartbeat_interval(Duration::from_millis(500))
            .rebalance_timeout(Duration::from_secs(20));
        // Default assignors [range, cooperative-sticky]: with a range-only Java member, the group
        // agrees on range (eager).
        if protocol == Protocol::Cooperative {
            c.assignors(vec![Arc::new(CooperativeStickyAssignor)])
        } else {
            c
        }
    };
    let java_assignor = match protocol {
        Protocol::Eager => "range",
        Protocol::Cooperative => "cooperative-sticky",
        Protocol::Consumer => "consumer-protocol:uniform",
    };
    let journal = Arc::new(Journal::default());
    let started = Instant::now();

    let a = KafkitMember::start("kafkit-a", &bootstrap, config(), &journal).await;
    let java = JavaMember::start(&bootstrap, &group, &topic, java_assignor, &journal);
    let producing = tokio::spawn(produce(bootstrap.clone(), topic.clone()));
    eventually(
        Duration::from_secs(40),
        "kafkit-a and java 3 each",
        &journal,
        || journal.balanced_among(&["java", "kafkit-a"]),
    )
    .await;
    eprintln!(
        "{:?}: kafkit-a + java {:?}",
        started.elapsed(),
        journal.owned()
    );

    let b = KafkitMember::start("kafkit-b", &bootstrap, config(), &journal).await;
    eventually(
        Duration::from_secs(30),
        "2 each across a, b, java",
        &journal,
        || journal.balanced_among(&["java", "kafkit-a", "kafkit-b"]),
    )
    .await;
    // The coordinator's stored assignment is what the members themselves believe.
    let mut mine: Vec<BTreeSet<i32>> = journal.owned().into_values().collect();
    mine.sort();
    let (mut theirs, mut described) = (Vec::new(), String::new());
    for _ in 0..10 {
        (theirs, described) = describe_assignments(&bootstrap, &group, &topic).await;
        // Classic: empty while rebalancing. Consumer protocol: a member's current assignment
        // there follows its next heartbeat.
        if theirs == mine || (protocol != Protocol::Consumer && !theirs.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        theirs, mine,
        "kafka-consumer-groups --describe --members --verbose:\n{described}"
    );
    eprintln!("{:?}: a, b, java {:?}", started.elapsed(), journal.owned());

    b.stop().await;
    eventually(
        Duration::from_secs(30),
        "3 each after kafkit-b leaves",
        &journal,
        || journal.balanced_among(&["java", "kafkit-a"]),
    )
    .await;
    let c = KafkitMember::start("kafkit-c", &bootstrap, config(), &journal).await;
    eventually(
        Duration::from_secs(30),
        "2 each across a, c, java",
        &journal,
        || journal.balanced_among(&["java", "kafkit-a", "kafkit-c"]),
    )
    .await;
    eprintln!("{:?}: a, c, java {:?}", started.elapsed(), journal.owned());

    // On the consumer protocol, kafkit-a also crashes: the broker gives its partitions to the
    // others once its session times out, and they read on from its last commit.
    let mut a = Some(a);
    let survivors: &[&str] = if protocol == Protocol::Consumer {
        a.take().unwrap().crash(&journal).await;
        eventually(
            Duration::from_secs(40),
            "3 each after kafkit-a crashed",
            &journal,
            || journal.balanced_among(&["java", "kafkit-c"]),
        )
        .await;
        eprintln!("{:?}: c, java {:?}", started.elapsed(), journal.owned());
        &["kafkit-c"]
    } else {
        &["kafkit-a", "kafkit-c"]
    };

    java.close().await;
    eventually(
        Duration::from_secs(30),
        "the kafkit members share everything after java leaves",
        &journal,
        || journal.balanced_among(survivors),
    )
    .await;
    let produced = timeout(Duration::from_secs(60), producing)
        .await
        .expect("production ends")
        .unwrap();
    assert_eq!(produced.len(), BATCHES * BATCH);
    eventually(
        Duration::from_secs(30),
        "every produced record consumed",
        &journal,
        || journal.consumed_set().is_superset(&produced),
    )
    .await;
    if protocol == Protocol::Consumer {
        committed_to_end(&bootstrap, &group, &topic, &produced).await;
    }
    if let Some(a) = a {
        a.stop().await;
    }
    c.stop().await;
    if protocol == Protocol::Consumer {
        // Everything consumed was committed by the members that stopped cleanly.
        assert_final_lag_zero(&bootstrap, &group, &topic).await;
    }
    assert_no_violations(&journal);
    let consumed = journal.consumed.lock();
    let mut by_member: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, m, _, _) in consumed.iter() {
        *by_member.entry(m.as_str()).or_default() += 1;
    }
    eprintln!(
        "{:?}: {} produced, {} consumed (duplicates {}), by member {by_member:?}",
        started.elapsed(),
        produced.len(),
        consumed.len(),
        consumed.len() - produced.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_group_of_java_and_kafkit_consumes_everything_while_members_come_and_go() {
    mixed_group_while_consuming(Protocol::Eager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_group_of_java_and_kafkit_consumes_everything_while_members_come_and_go() {
    mixed_group_while_consuming(Protocol::Cooperative).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_protocol_group_of_java_and_kafkit_consumes_everything_while_members_come_go_and_crash()
 {
    mixed_group_while_consuming(Protocol::Consumer).await;
}

/// KIP-848 with a Java member in the group through a broker SIGKILL and restart, then a kafkit
/// member killed and restarted, while the topic is produced to; on a broker of its own (the other
/// tests share one). The same checks: everything consumed, never two owners, final lag 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_protocol_group_of_java_and_kafkit_survives_a_broker_kill_and_a_member_restart() {
    if kafka_version().starts_with("3.") {
        // Refused cleanly, as the test above checks.
        return;
    }
    let kafka = timeout(Duration::from_secs(180), LocalKafka::start())
        .await
        .expect("broker within 180 s")
        .unwrap();
    let bootstrap = kafka.bootstrap();
    let (topic, group) = topic_and_group(&bootstrap, "mixed-kill").await;
    let config = || consumer_protocol(&group, &topic);
    let journal = Arc::new(Journal::default());
    let started = Instant::now();
    let a = KafkitMember::start("kafkit-a", &bootstrap, config(), &journal).await;
    let java = JavaMember::start(
        &bootstrap,
        &group,
        &topic,
        "consumer-protocol:uniform",
        &journal,
    );
    let producing = tokio::spawn(produce(bootstrap.clone(), topic.clone()));
    eventually(
        Duration::from_secs(40),
        "kafkit-a and java 3 each",
        &journal,
        || journal.balanced_among(&["java", "kafkit-a"]),
    )
    .await;

    kafka.kill();
    kafka.restart().await.unwrap();
    eprintln!("{:?}: broker restarted", started.elapsed());
    // Both members carry on (or rejoin, if the restarted coordinator fenced them) and read what is
    // produced from now on as well.
    let producing_after = tokio::spawn(produce(bootstrap.clone(), topic.clone()));
    eventually(
        Duration::from_secs(60),
        "kafkit-a and java 3 each after the broker restart",
        &journal,
        || journal.balanced_among(&["java", "kafkit-a"]),
    )
    .await;
    eprintln!(
        "{:?}: after the restart {:?}",
        started.elapsed(),
        journal.owned()
    );

    // kafkit-a is killed and started again: its partitions move once its session times out.
    a.crash(&journal).await;
    let a = KafkitMember::start("kafkit-a", &bootstrap, config(), &journal).await;
    eventually(
        Duration::from_secs(60),
        "kafkit-a (restarted) and java 3 each",
        &journal,
        || journal.balanced_among(&["java", "kafkit-a"]),
    )
    .await;
    eprintln!(
        "{:?}: kafkit-a restarted {:?}",
        started.elapsed(),
        journal.owned()
    );

    let mut produced = BTreeSet::new();
    for producing in [producing, producing_after] {
        let acked = timeout(Duration::from_secs(180), producing)
            .await
            .expect("production ends")
            .unwrap();
        assert_eq!(acked.len(), BATCHES * BATCH);
        produced.extend(acked);
    }
    eventually(
        Duration::from_secs(60),
        "every produced record consumed",
        &journal,
        || journal.consumed_set().is_superset(&produced),
    )
    .await;
    java.close().await;
    committed_to_end(&bootstrap, &group, &topic, &produced).await;
    a.stop().await;
    assert_final_lag_zero(&bootstrap, &group, &topic).await;
    assert_no_violations(&journal);
}

/// The replay catches what it is meant to catch (no broker needed).
#[test]
fn the_replay_flags_double_ownership_and_records_consumed_without_ownership() {
    let clean = Journal::default();
    clean.own(10, "a", 0, true);
    clean.consume(11, "a", 0, 0);
    clean.own(12, "a", 0, false);
    clean.own(12, "b", 0, true); // same microsecond: the release counts first
    clean.consume(13, "b", 0, 1);
    assert!(clean.violations().is_empty(), "{:?}", clean.violations());

    let overlapping = Journal::default();
    overlapping.own(10, "a", 0, true);
    overlapping.own(11, "b", 0, true);
    overlapping.own(12, "a", 0, false);
    assert_eq!(overlapping.violations().len(), 1);

    let stale = Journal::default();
    stale.own(10, "a", 0, true);
    stale.own(11, "a", 0, false);
    stale.consume(12, "a", 0, 5); // e.g. a prefetched record dispatched after the revocation
    assert_eq!(stale.violations().len(), 1);
}
