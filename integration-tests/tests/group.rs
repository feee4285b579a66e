//! Consumer-group membership against a real broker: balanced assignments, clean leaves and crashes,
//! static membership, offsets readable by Kafka's own tools, and Java consumers in the same group.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use kafkit::group::{
    CooperativeStickyAssignor, GroupConfig, GroupEvent, GroupMember, OffsetToCommit, RangeAssignor,
    TopicPartition,
};
use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord};
use kafkit_integration_tests::support::{consumer_groups_describe, eventually};
use kafkit_testkit::{create_topic, java_command, random_name, shared};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// A kafkit member whose consumer side only tracks ownership and acknowledges revocations at once.
struct Member {
    member: Option<GroupMember>,
    owned: Arc<Mutex<BTreeSet<TopicPartition>>>,
    revoked: Arc<Mutex<Vec<TopicPartition>>>,
    events: tokio::task::JoinHandle<()>,
}

impl Member {
    fn start(bootstrap: &str, config: GroupConfig) -> Member {
        let client = ClientConfig::new([bootstrap]).unwrap();
        let (member, mut rx) = GroupMember::start(&client, config).expect("valid config");
        let owned = Arc::new(Mutex::new(BTreeSet::new()));
        let revoked = Arc::new(Mutex::new(Vec::new()));
        let events = tokio::spawn({
            let owned = Arc::clone(&owned);
            let revoked = Arc::clone(&revoked);
            async move {
                while let Some(event) = rx.recv().await {
                    match event {
                        GroupEvent::Assigned { partitions, .. } => owned.lock().extend(partitions),
                        GroupEvent::Revoked { partitions, done } => {
                            let mut o = owned.lock();
                            for p in &partitions {
                                o.remove(p);
                            }
                            revoked.lock().extend(partitions);
                            done.done();
                        }
                        GroupEvent::Lost { partitions, .. } => {
                            let mut o = owned.lock();
                            for p in &partitions {
                                o.remove(p);
                            }
                        }
                        GroupEvent::Failed { error } => panic!("member failed: {error}"),
                        _ => {}
                    }
                }
            }
        });
        Member {
            member: Some(member),
            owned,
            revoked,
            events,
        }
    }

    fn owned(&self) -> BTreeSet<TopicPartition> {
        self.owned.lock().clone()
    }

    fn member(&self) -> &GroupMember {
        self.member.as_ref().unwrap()
    }

    async fn close(mut self) {
        self.member.take().unwrap().close().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.events).await;
    }

    /// A crash: the member task is aborted, nothing is sent to the coordinator.
    fn kill(mut self) {
        drop(self.member.take());
        self.events.abort();
    }
}

fn config(group: &str, topic: &str) -> GroupConfig {
    GroupConfig::new(group, [topic])
        .session_timeout(Duration::from_secs(6))
        .heartbeat_interval(Duration::from_millis(500))
        .rebalance_timeout(Duration::from_secs(20))
}

fn all_partitions(topic: &str, n: i32) -> BTreeSet<TopicPartition> {
    (0..n).map(|p| TopicPartition::new(topic, p)).collect()
}

/// True when the members' assignments are disjoint and cover `expected` exactly.
fn partitioned(members: &[&BTreeSet<TopicPartition>], expected: &BTreeSet<TopicPartition>) -> bool {
    let total: usize = members.iter().map(|m| m.len()).sum();
    let union: BTreeSet<_> = members.iter().flat_map(|m| m.iter().cloned()).collect();
    total == union.len() && &union == expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_twelve_partitions_then_a_leave_and_a_crash_move_them() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("group");
    let group = random_name("g");
    create_topic(&bootstrap, &topic, 12, 1).await.unwrap();
    let all = all_partitions(&topic, 12);

    let a = Member::start(&bootstrap, config(&group, &topic));
    let b = Member::start(&bootstrap, config(&group, &topic));
    let c = Member::start(&bootstrap, config(&group, &topic));
    eventually(Duration::from_secs(30), "4 partitions each", || {
        let (oa, ob, oc) = (a.owned(), b.owned(), c.owned());
        oa.len() == 4 && ob.len() == 4 && oc.len() == 4 && partitioned(&[&oa, &ob, &oc], &all)
    })
    .await;
    let generation = a.member().status().generation.unwrap();

    // A clean leave: the partitions move to the survivors in the next generation.
    c.close().await;
    // LeaveGroup moves the partitions well before the 6 s session timeout would expel the member.
    eventually(
        Duration::from_secs(4),
        "6 partitions each after a clean leave",
        || {
            let (oa, ob) = (a.owned(), b.owned());
            oa.len() == 6 && ob.len() == 6 && partitioned(&[&oa, &ob], &all)
        },
    )
    .await;
    let after_leave = a.member().status().generation.unwrap();
    assert_eq!(
        after_leave,
        generation + 1,
        "a clean leave takes exactly one rebalance"
    );

    // A crash (no LeaveGroup): the survivor owns everything within 2 x session timeout.
    b.kill();
    eventually(Duration::from_secs(12), "the survivor owns all 12", || {
        a.owned() == all
    })
    .await;
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_members_only_move_what_must_move() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("coop");
    let group = random_name("g");
    create_topic(&bootstrap, &topic, 12, 1).await.unwrap();
    let all = all_partitions(&topic, 12);
    let coop = || config(&group, &topic).assignors(vec![Arc::new(CooperativeStickyAssignor)]);

    let members: Vec<Member> = (0..3).map(|_| Member::start(&bootstrap, coop())).collect();
    eventually(Duration::from_secs(30), "4 each", || {
        let owned: Vec<_> = members.iter().map(Member::owned).collect();
        owned.iter().all(|o| o.len() == 4) && partitioned(&owned.iter().collect::<Vec<_>>(), &all)
    })
    .await;
    let before: Vec<_> = members.iter().map(Member::owned).collect();
    for m in &members {
        m.revoked.lock().clear();
    }

    let newcomer = Member::start(&bootstrap, coop());
    eventually(Duration::from_secs(30), "3 each across 4 members", || {
        let mut owned: Vec<_> = members.iter().map(Member::owned).collect();
        owned.push(newcomer.owned());
        owned.iter().all(|o| o.len() == 3) && partitioned(&owned.iter().collect::<Vec<_>>(), &all)
    })
    .await;
    for (m, before) in members.iter().zip(&before) {
        let revoked = m.revoked.lock().clone();
        assert_eq!(
            revoked.len(),
            1,
            "each old member gives up exactly one partition, got {revoked:?}"
        );
        assert!(m.owned().is_subset(before), "old members keep the rest");
    }
    for m in members {
        m.close().await;
    }
    newcomer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarting_within_the_session_timeout_causes_no_rebalance() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("static");
    let group = random_name("g");
    create_topic(&bootstrap, &topic, 4, 1).await.unwrap();
    let all = all_partitions(&topic, 4);
    let static_config = |id: &str| {
        config(&group, &topic)
            .session_timeout(Duration::from_secs(10))
            .group_instance_id(id)
    };

    let stable = Member::start(&bootstrap, static_config("stable"));
    let restarting = Member::start(&bootstrap, static_config("restarting"));
    eventually(Duration::from_secs(30), "2 each", || {
        let (a, b) = (stable.owned(), restarting.owned());
        a.len() == 2 && b.len() == 2 && partitioned(&[&a, &b], &all)
    })
    .await;
    let before = restarting.owned();
    let generation = stable.member().status().generation;
    stable.revoked.lock().clear();

    // Static members do not send LeaveGroup on close; the same instance id comes back at once.
    restarting.close().await;
    let back = Member::start(&bootstrap, static_config("restarting"));
    eventually(
        Duration::from_secs(20),
        "the restarted member gets its partitions back",
        || back.owned() == before,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        stable.revoked.lock().is_empty(),
        "the other member saw no revocation"
    );
    assert_eq!(
        stable.member().status().generation,
        generation,
        "no new generation"
    );
    stable.close().await;
    back.close().await;
}

async fn produce(bootstrap: &str, topic: &str, partitions: i32, per_partition: i64) {
    let producer = ProducerBuilder::new(ClientConfig::new([bootstrap]).unwrap())
        .build()
        .await
        .unwrap();
    for p in 0..partitions {
        for i in 0..per_partition {
            producer
                .send(ProducerRecord::new(topic, format!("r{i}")).partition(p))
                .await
                .unwrap();
        }
    }
}

/// `kafka-consumer-groups --describe`: partition -> CURRENT-OFFSET.
async fn describe_offsets(bootstrap: &str, group: &str) -> Vec<(i32, i64)> {
    let stdout = consumer_groups_describe(bootstrap, group, &[]).await;
    let mut rows: Vec<(i32, i64)> = stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() >= 4 && f[0] == group {
                Some((f[2].parse().ok()?, f[3].parse().ok()?))
            } else {
                None
            }
        })
        .collect();
    rows.sort_unstable();
    rows
}

fn group_client() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("java/GroupClient.java")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_committed_by_kafkit_are_what_kafka_tools_and_java_consumers_see_and_back() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("offsets");
    let group = random_name("g");
    create_topic(&bootstrap, &topic, 3, 1).await.unwrap();
    produce(&bootstrap, &topic, 3, 20).await;

    let member = Member::start(&bootstrap, config(&group, &topic));
    eventually(Duration::from_secs(30), "all 3 assigned", || {
        member.owned().len() == 3
    })
    .await;
    let commits: Vec<OffsetToCommit> = [(0, 5), (1, 12), (2, 20)]
        .into_iter()
        .map(|(p, o)| OffsetToCommit {
            partition: TopicPartition::new(&topic, p),
            offset: o,
            metadata: None,
        })
        .collect();
    let report = member.member().commit(&commits).await.unwrap();
    assert_eq!(report.committed.len(), 3, "{report:?}");
    // Never backwards within a tenure.
    let back = member
        .member()
        .commit(&[OffsetToCommit {
            partition: TopicPartition::new(&topic, 1),
            offset: 3,
            metadata: None,
        }])
        .await
        .unwrap();
    assert_eq!(back.not_advanced, vec![TopicPartition::new(&topic, 1)]);
    // Never for a partition not owned.
    let foreign = member
        .member()
        .commit(&[OffsetToCommit {
            partition: TopicPartition::new("other", 0),
            offset: 3,
            metadata: None,
        }])
        .await
        .unwrap();
    assert_eq!(foreign.not_owned.len(), 1);
    member.close().await;

    assert_eq!(
        describe_offsets(&bootstrap, &group).await,
        vec![(0, 5), (1, 12), (2, 20)]
    );

    // A Java consumer in the same group resumes exactly there (partition 2 is at the end: nothing to read).
    let out = kafkit_testkit::java_source(
        &group_client(),
        &["first-offsets", &bootstrap, &group, &topic, "2"],
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert!(out.success, "{}", out.stderr);
    let firsts: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(firsts, vec!["first 0 5", "first 1 12"]);

    // And the reverse: Java commits, kafkit reads the same offsets.
    let out = kafkit_testkit::java_source(
        &group_client(),
        &["commit", &bootstrap, &group, &topic, "0:7,1:15,2:20"],
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert!(out.success, "{}", out.stderr);
    let reader = Member::start(&bootstrap, config(&group, &topic));
    eventually(Duration::from_secs(30), "assigned", || {
        reader.owned().len() == 3
    })
    .await;
    let committed = reader
        .member()
        .committed(&all_partitions(&topic, 3).into_iter().collect::<Vec<_>>())
        .await
        .unwrap();
    let mut offsets: Vec<(i32, i64)> = committed
        .iter()
        .map(|(tp, c)| (tp.partition, c.as_ref().unwrap().offset))
        .collect();
    offsets.sort_unstable();
    assert_eq!(offsets, vec![(0, 7), (1, 15), (2, 20)]);
    reader.close().await;
}

/// A Java consumer process in the group, reporting its ownership changes.
struct JavaMember {
    child: tokio::process::Child,
    owned: Arc<Mutex<BTreeSet<TopicPartition>>>,
    _reader: tokio::task::JoinHandle<()>,
}

impl JavaMember {
    fn start(bootstrap: &str, group: &str, topic: &str, assignor: &str) -> JavaMember {
        let mut cmd = java_command().unwrap();
        cmd.arg(group_client())
            .args(["member", bootstrap, group, topic, assignor])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let owned = Arc::new(Mutex::new(BTreeSet::new()));
        let (tx, _rx) = mpsc::unbounded_channel::<String>();
        let reader = tokio::spawn({
            let owned = Arc::clone(&owned);
            async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut words = line.split_whitespace();
                    let what = words.next().unwrap_or_default();
                    let parts: Vec<TopicPartition> = words
                        .map(|w| {
                            let (t, p) = w.rsplit_once(':').unwrap();
                            TopicPartition::new(t, p.parse().unwrap())
                        })
                        .collect();
                    let mut o = owned.lock();
                    match what {
                        "assigned" => o.extend(parts),
                        "revoked" | "lost" => {
                            for p in &parts {
                                o.remove(p);
                            }
                        }
                        _ => {}
                    }
                    let _ = tx.send(line);
                }
            }
        });
        JavaMember {
            child,
            owned,
            _reader: reader,
        }
    }

    fn owned(&self) -> BTreeSet<TopicPartition> {
        self.owned.lock().clone()
    }

    /// Closes stdin: the Java consumer leaves the group cleanly and exits.
    async fn close(mut self) {
        drop(self.child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

async fn mixed_group(assignor: &str, kafkit_first: bool) {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("mixed");
    let group = random_name("g");
    create_topic(&bootstrap, &topic, 6, 1).await.unwrap();
    let all = all_partitions(&topic, 6);
    let kafkit_config = || {
        let c = config(&group, &topic).session_timeout(Duration::from_secs(10));
        if assignor == "range" {
            c.assignors(vec![Arc::new(RangeAssignor)])
        } else {
            c.assignors(vec![Arc::new(CooperativeStickyAssignor)])
        }
    };

    let (first_kafkit, java) = if kafkit_first {
        let k = Member::start(&bootstrap, kafkit_config());
        eventually(
            Duration::from_secs(30),
            "kafkit member owns all (and leads)",
            || k.owned() == all,
        )
        .await;
        (k, JavaMember::start(&bootstrap, &group, &topic, assignor))
    } else {
        let j = JavaMember::start(&bootstrap, &group, &topic, assignor);
        eventually(
            Duration::from_secs(60),
            "Java member owns all (and leads)",
            || j.owned() == all,
        )
        .await;
        (Member::start(&bootstrap, kafkit_config()), j)
    };
    let second_kafkit = Member::start(&bootstrap, kafkit_config());
    eventually(
        Duration::from_secs(60),
        "2 each across kafkit, kafkit, Java",
        || {
            let (a, b, j) = (first_kafkit.owned(), second_kafkit.owned(), java.owned());
            a.len() == 2 && b.len() == 2 && j.len() == 2 && partitioned(&[&a, &b, &j], &all)
        },
    )
    .await;

    // Partitions move from Java to kafkit when Java leaves, never owned twice.
    java.close().await;
    eventually(Duration::from_secs(30), "3 each after Java leaves", || {
        let (a, b) = (first_kafkit.owned(), second_kafkit.owned());
        a.len() == 3 && b.len() == 3 && partitioned(&[&a, &b], &all)
    })
    .await;
    first_kafkit.close().await;
    second_kafkit.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_leader_assigns_to_kafkit_members_with_range() {
    mixed_group("range", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkit_leader_assigns_to_a_java_member_with_range() {
    mixed_group("range", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_group_on_cooperative_sticky_with_kafkit_leading() {
    mixed_group("cooperative-sticky", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_group_on_cooperative_sticky_with_java_leading() {
    mixed_group("cooperative-sticky", false).await;
}
