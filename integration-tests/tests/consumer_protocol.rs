//! Groups of the KIP-848 consumer protocol (`group.protocol=consumer`, Kafka 4.0+): a Java consumer
//! on the new protocol, described and listed by `kafkit::admin` and `kafkit group`, against what
//! Kafka's own `kafka-consumer-groups` reports; and kafkit's own consumer-protocol members (split,
//! leave, fencing and rejoin). (Not in CI's pass against the oldest supported broker: Kafka 3.9
//! offers the protocol only as a preview; each test skips itself there too.)

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::collections::BTreeSet;

use kafkit::admin;
use kafkit::group::{
    GroupConfig, GroupEvent, GroupMember, GroupProtocol, OffsetToCommit, TopicPartition,
};
use kafkit::{ProducerBuilder, ProducerRecord};
use kafkit_integration_tests::kafkit_bin;
use kafkit_integration_tests::support::{client, eventually, eventually_async, kafka_lag};
use kafkit_testkit::{create_topic, java_command, kafka_version, random_name, shared};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const PARTITIONS: i32 = 3;
const PER_PARTITION: i64 = 10;

/// Kafka 3.x offers the consumer protocol only as a preview (off by default): these tests skip.
fn skipped() -> bool {
    let old = kafka_version().starts_with("3.");
    if old {
        eprintln!(
            "skipped: Kafka {} has no GA consumer protocol",
            kafka_version()
        );
    }
    old
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_protocol_group_is_described_and_listed_as_kafka_does() {
    if skipped() {
        return;
    }
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("kip848");
    let group = random_name("g848");
    create_topic(&bootstrap, &topic, PARTITIONS, 1)
        .await
        .unwrap();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    for p in 0..PARTITIONS {
        for i in 0..PER_PARTITION {
            producer
                .send(ProducerRecord::new(&topic, i.to_string()).partition(p))
                .await
                .unwrap();
        }
    }

    // A Java consumer on the consumer protocol with the broker's `uniform` assignor; it commits
    // after every poll.
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("java/GroupClient.java");
    let mut java = java_command()
        .unwrap()
        .arg(source)
        .args([
            "consume",
            &bootstrap,
            &group,
            &topic,
            "consumer-protocol:uniform",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let consumed = Arc::new(AtomicUsize::new(0));
    let reader = tokio::spawn({
        let consumed = Arc::clone(&consumed);
        let stdout = java.stdout.take().unwrap();
        async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("consumed ") {
                    consumed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    });
    let all = (PARTITIONS as i64 * PER_PARTITION) as usize;
    eventually(
        Duration::from_secs(90),
        "the Java consumer read everything",
        || consumed.load(Ordering::SeqCst) >= all,
    )
    .await;
    // Its commit follows each poll: wait until Kafka's tool shows every partition caught up.
    let java_rows = eventually_async(
        Duration::from_secs(30),
        Duration::from_millis(300),
        || async {
            let (rows, raw) = kafka_lag(&bootstrap, &group, &topic).await;
            if rows.len() == PARTITIONS as usize && rows.values().all(|&(_, _, lag)| lag == 0) {
                return Ok(rows);
            }
            Err(format!("kafka-consumer-groups never showed lag 0: {raw}"))
        },
    )
    .await;

    let (description, lag) = admin::describe_group_with_lag(&client(&bootstrap), &group)
        .await
        .unwrap();
    assert_eq!(description.group_type, "consumer", "{description:?}");
    assert_eq!(description.protocol_type, "consumer", "{description:?}");
    assert_eq!(description.protocol, "uniform", "{description:?}");
    assert_eq!(description.state, "Stable", "{description:?}");
    let [member] = description.members.as_slice() else {
        panic!("one member: {description:?}");
    };
    assert_eq!(member.assignment.len(), PARTITIONS as usize, "{member:?}");
    let group_epoch = description
        .group_epoch
        .expect("a consumer group has an epoch");
    assert!(group_epoch > 0, "{description:?}");
    assert_eq!(member.member_epoch, Some(group_epoch), "{description:?}");
    // The same numbers as Kafka's tool, and the owner of every partition.
    assert_eq!(lag.len(), PARTITIONS as usize, "{lag:?}");
    for row in &lag {
        assert_eq!(
            java_rows.get(&row.partition),
            Some(&(row.committed.unwrap(), row.end, row.lag.unwrap())),
            "{row:?}"
        );
        assert_eq!(row.end, PER_PARTITION, "{row:?}");
        assert_eq!(
            row.owner.as_ref().map(|o| o.member_id.as_str()),
            Some(member.member_id.as_str()),
            "{row:?}"
        );
    }

    let listed = admin::list_groups(&client(&bootstrap)).await.unwrap();
    let ours = listed
        .iter()
        .find(|g| g.group_id == group)
        .unwrap_or_else(|| panic!("{group} not listed: {listed:?}"));
    assert_eq!(ours.group_type, "consumer", "{ours:?}");
    assert_eq!(ours.protocol_type, "consumer", "{ours:?}");

    // The CLI: exit 0 and the same group (it used to report that the group does not exist).
    let out = tokio::process::Command::new(kafkit_bin())
        .args(["group", "describe", "--bootstrap-server", &bootstrap])
        .args(["--group-id", &group, "--json"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["group_type"], "consumer", "{doc}");
    assert_eq!(doc["group_epoch"], group_epoch, "{doc}");
    assert_eq!(doc["members"][0]["member_epoch"], group_epoch, "{doc}");
    assert_eq!(doc["total_lag"], 0, "{doc}");

    // Closing stdin makes the Java consumer leave the group.
    drop(java.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(60), java.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    reader.await.unwrap();
}

/// What a kafkit member's consumer side saw: what it owns now, and why it lost partitions.
#[derive(Default)]
struct Seen {
    owned: Mutex<BTreeSet<TopicPartition>>,
    lost: Mutex<Vec<(Vec<TopicPartition>, String)>>,
}

/// Plays the consumer for `member`: revocations are done at once, ownership is tracked.
fn track(mut events: tokio::sync::mpsc::UnboundedReceiver<GroupEvent>) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    tokio::spawn({
        let seen = Arc::clone(&seen);
        async move {
            while let Some(event) = events.recv().await {
                match event {
                    GroupEvent::Assigned { partitions, .. } => seen.owned.lock().extend(partitions),
                    GroupEvent::Revoked { partitions, done } => {
                        let mut owned = seen.owned.lock();
                        for p in &partitions {
                            owned.remove(p);
                        }
                        done.done();
                    }
                    GroupEvent::Lost { partitions, reason } => {
                        let mut owned = seen.owned.lock();
                        for p in &partitions {
                            owned.remove(p);
                        }
                        seen.lost.lock().push((partitions, reason));
                    }
                    GroupEvent::Failed { error } => panic!("member failed: {error}"),
                    _ => {}
                }
            }
        }
    });
    seen
}

/// The two members own `all` between them, disjointly, `each` apiece.
fn split(a: &Seen, b: &Seen, all: &BTreeSet<TopicPartition>, each: usize) -> bool {
    let (a, b) = (a.owned.lock().clone(), b.owned.lock().clone());
    a.len() == each && b.len() == each && a.is_disjoint(&b) && &(&a | &b) == all
}

/// Two kafkit members on the consumer protocol share a topic; one is frozen (its task cannot run,
/// as in a long GC pause or a stopped container) for longer than the broker's session timeout
/// (10 s in the testkit): the broker gives its partitions to the other, and when it wakes its next
/// heartbeat is answered UNKNOWN_MEMBER_ID: its partitions are lost (no commit accepted for them),
/// and it rejoins at epoch 0 with the same member id and gets its share back. Then one leaves with
/// epoch -1 and the other gets everything well before any session timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_member_is_fenced_loses_its_partitions_and_rejoins_and_a_leave_moves_them_at_once()
{
    if skipped() {
        return;
    }
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("kip848-fence");
    let group = random_name("g848");
    create_topic(&bootstrap, &topic, 6, 1).await.unwrap();
    let all: BTreeSet<TopicPartition> = (0..6).map(|p| TopicPartition::new(&topic, p)).collect();
    let config = GroupConfig::new(&group, [&topic])
        .protocol(GroupProtocol::Consumer)
        .remote_assignor("uniform")
        .rebalance_timeout(Duration::from_secs(10));

    // Member A runs on a runtime of its own with one worker, so that the test can freeze it.
    let frozen_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (a, a_events) = {
        let _in = frozen_rt.enter();
        GroupMember::start(&client(&bootstrap), config.clone()).unwrap()
    };
    let a_seen = track(a_events);
    let (b, b_events) = GroupMember::start(&client(&bootstrap), config.clone()).unwrap();
    let b_seen = track(b_events);
    eventually(Duration::from_secs(30), "3 partitions each", || {
        split(&a_seen, &b_seen, &all, 3)
    })
    .await;
    let before = a.status();
    assert!(before.generation.is_some_and(|e| e > 0), "{before:?}");
    assert_eq!(before.assignment.len(), 3, "{before:?}");

    // A commit carries the member epoch (OffsetCommit v9) and is accepted; one for a partition A
    // does not own is refused locally.
    let mine = before.assignment[0].clone();
    let theirs = b_seen.owned.lock().iter().next().cloned().unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        a.commit(&[
            OffsetToCommit {
                partition: mine.clone(),
                offset: 0,
                metadata: None,
            },
            OffsetToCommit {
                partition: theirs.clone(),
                offset: 0,
                metadata: None,
            },
        ]),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.committed, [(mine.clone(), 0)], "{report:?}");
    assert_eq!(report.not_owned, [theirs], "{report:?}");

    // Freeze A past the session timeout.
    frozen_rt.spawn(async { std::thread::sleep(Duration::from_secs(14)) });
    eventually(
        Duration::from_secs(40),
        "B owns all 6 while A is frozen",
        || *b_seen.owned.lock() == all,
    )
    .await;
    eventually(Duration::from_secs(40), "A learns it was fenced", || {
        !a_seen.lost.lock().is_empty()
    })
    .await;
    let lost = a_seen.lost.lock().clone();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(
        lost[0].0.iter().cloned().collect::<BTreeSet<_>>(),
        before.assignment.iter().cloned().collect::<BTreeSet<_>>(),
        "{lost:?}"
    );
    assert!(
        lost[0].1.contains("UnknownMemberId") || lost[0].1.contains("FencedMemberEpoch"),
        "{lost:?}"
    );
    eventually(
        Duration::from_secs(30),
        "3 each again after A rejoined",
        || split(&a_seen, &b_seen, &all, 3),
    )
    .await;
    let after = a.status();
    assert_eq!(after.member_id, before.member_id, "the same member id");
    assert!(
        after.generation > before.generation,
        "a new epoch: {before:?} then {after:?}"
    );

    // B leaves (epoch -1): A gets everything at once, not after a session timeout.
    let left = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(30), b.close())
        .await
        .unwrap()
        .unwrap();
    eventually(Duration::from_secs(8), "A owns all 6 after B left", || {
        *a_seen.owned.lock() == all
    })
    .await;
    eprintln!("A owned everything {:?} after B left", left.elapsed());
    tokio::time::timeout(Duration::from_secs(30), a.close())
        .await
        .unwrap()
        .unwrap();
    frozen_rt.shutdown_background();
}

/// A regex subscription (ConsumerGroupHeartbeat v1's SubscribedTopicRegex): the broker matches the
/// topics, and the member resolves the topic ids it was never told the names of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regex_subscription_gets_the_partitions_of_every_matching_topic() {
    if skipped() {
        return;
    }
    let bootstrap = shared().await.unwrap().bootstrap();
    let prefix = random_name("kip848re");
    let (a, b, other) = (
        format!("{prefix}-a"),
        format!("{prefix}-b"),
        format!("{prefix}x-c"),
    );
    for (topic, partitions) in [(&a, 2), (&b, 1), (&other, 1)] {
        create_topic(&bootstrap, topic, partitions, 1)
            .await
            .unwrap();
    }
    let config = GroupConfig::new(random_name("g848re"), Vec::<String>::new())
        .protocol(GroupProtocol::Consumer)
        .topic_regex(format!("{prefix}-.*"));
    let (member, events) = GroupMember::start(&client(&bootstrap), config).unwrap();
    let seen = track(events);
    let expected: BTreeSet<TopicPartition> = [
        TopicPartition::new(&a, 0),
        TopicPartition::new(&a, 1),
        TopicPartition::new(&b, 0),
    ]
    .into();
    eventually(
        Duration::from_secs(60),
        "the partitions of both matching topics",
        || *seen.owned.lock() == expected,
    )
    .await;
    tokio::time::timeout(Duration::from_secs(30), member.close())
        .await
        .unwrap()
        .unwrap();
}

/// A static member (`group.instance.id`) leaves with epoch -2: the broker keeps its partitions for
/// it (the other member does not get them), and the same instance coming back gets them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_leaves_with_epoch_minus_two_and_gets_its_partitions_back() {
    if skipped() {
        return;
    }
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("kip848-static");
    let group = random_name("g848s");
    create_topic(&bootstrap, &topic, 4, 1).await.unwrap();
    let all: BTreeSet<TopicPartition> = (0..4).map(|p| TopicPartition::new(&topic, p)).collect();
    let config = |instance: &str| {
        GroupConfig::new(&group, [&topic])
            .protocol(GroupProtocol::Consumer)
            .group_instance_id(instance)
    };
    let (a, a_events) = GroupMember::start(&client(&bootstrap), config("a")).unwrap();
    let a_seen = track(a_events);
    let (b, b_events) = GroupMember::start(&client(&bootstrap), config("b")).unwrap();
    let b_seen = track(b_events);
    eventually(Duration::from_secs(30), "2 partitions each", || {
        split(&a_seen, &b_seen, &all, 2)
    })
    .await;
    let a_partitions = a_seen.owned.lock().clone();
    tokio::time::timeout(Duration::from_secs(30), a.close())
        .await
        .unwrap()
        .unwrap();
    // Several of B's heartbeats (1 s) later, B still has only its own.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        b_seen.owned.lock().len(),
        2,
        "a static member's partitions wait for it"
    );
    let (a2, a2_events) = GroupMember::start(&client(&bootstrap), config("a")).unwrap();
    let a2_seen = track(a2_events);
    eventually(
        Duration::from_secs(30),
        "the same instance gets its partitions back",
        || *a2_seen.owned.lock() == a_partitions,
    )
    .await;
    assert!(split(&a2_seen, &b_seen, &all, 2));
    for m in [a2, b] {
        tokio::time::timeout(Duration::from_secs(30), m.close())
            .await
            .unwrap()
            .unwrap();
    }
}

/// The online upgrade Kafka documents: a classic group whose members restart one by one with
/// `group.protocol=consumer`. The broker converts the group when the first consumer-protocol member
/// joins and serves the remaining classic member through the classic protocol meanwhile; at every
/// step the members split the partitions without overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_group_upgrades_online_to_the_consumer_protocol_member_by_member() {
    if skipped() {
        return;
    }
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("kip848-upgrade");
    let group = random_name("g848u");
    create_topic(&bootstrap, &topic, 4, 1).await.unwrap();
    let all: BTreeSet<TopicPartition> = (0..4).map(|p| TopicPartition::new(&topic, p)).collect();
    let classic = || {
        GroupConfig::new(&group, [&topic])
            .session_timeout(Duration::from_secs(10))
            .heartbeat_interval(Duration::from_millis(500))
            .rebalance_timeout(Duration::from_secs(20))
            .assignors(vec![Arc::new(kafkit::group::CooperativeStickyAssignor)])
    };
    let consumer = || {
        GroupConfig::new(&group, [&topic])
            .protocol(GroupProtocol::Consumer)
            .rebalance_timeout(Duration::from_secs(20))
    };
    let start = |config: GroupConfig| {
        let (member, events) = GroupMember::start(&client(&bootstrap), config).unwrap();
        (member, track(events))
    };
    let close = |member: GroupMember| async move {
        tokio::time::timeout(Duration::from_secs(30), member.close())
            .await
            .unwrap()
            .unwrap();
    };

    let (a, a_seen) = start(classic());
    let (b, b_seen) = start(classic());
    eventually(Duration::from_secs(30), "classic: 2 each", || {
        split(&a_seen, &b_seen, &all, 2)
    })
    .await;

    close(a).await;
    let (a, a_seen) = start(consumer());
    eventually(
        Duration::from_secs(40),
        "consumer-protocol a and classic b: 2 each",
        || split(&a_seen, &b_seen, &all, 2),
    )
    .await;
    let (description, _) = admin::describe_group_with_lag(&client(&bootstrap), &group)
        .await
        .unwrap();
    assert_eq!(description.group_type, "consumer", "{description:?}");

    close(b).await;
    let (b, b_seen) = start(consumer());
    eventually(
        Duration::from_secs(40),
        "both on the consumer protocol: 2 each",
        || split(&a_seen, &b_seen, &all, 2),
    )
    .await;
    close(a).await;
    close(b).await;
}
