//! `kafkit group list` and `kafkit group describe` as processes against the shared broker: the
//! describe output compared with Kafka's own `kafka-consumer-groups --describe` for the same group,
//! and the error paths with their exit codes.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

use kafkit::group::{GroupConfig, GroupEvent, GroupMember, OffsetToCommit, TopicPartition};
use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord};
use kafkit_integration_tests::kafkit_bin;
use kafkit_integration_tests::support::consumer_groups_describe;
use kafkit_testkit::{create_topic, java_tool, random_name, shared};
use serde_json::Value;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `kafkit args...` to completion.
async fn kafkit(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(kafkit_bin());
    cmd.args(args)
        .env_remove("KAFKA_BOOTSTRAP")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    timeout(LIMIT, cmd.output())
        .await
        .expect("kafkit did not exit in time")
        .expect("running kafkit")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn produce(bootstrap: &str, topic: &str, per_partition: &[usize]) {
    let producer = timeout(
        LIMIT,
        ProducerBuilder::new(ClientConfig::new([bootstrap]).unwrap()).build(),
    )
    .await
    .expect("producer build timeout")
    .unwrap();
    for (p, &n) in per_partition.iter().enumerate() {
        for i in 0..n {
            timeout(
                LIMIT,
                producer.send(ProducerRecord::new(topic, format!("r{i}")).partition(p as i32)),
            )
            .await
            .expect("send timeout")
            .unwrap();
        }
    }
    timeout(LIMIT, producer.flush())
        .await
        .expect("flush timeout")
        .unwrap();
}

/// One row of `kafka-consumer-groups --describe`.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    committed: Option<i64>,
    end: i64,
    lag: Option<i64>,
    consumer_id: Option<String>,
    host: Option<String>,
    client_id: Option<String>,
}

fn dash(s: &str) -> Option<String> {
    (s != "-").then(|| s.to_owned())
}

/// Kafka's ConsumerGroupCommand `--describe`: (topic, partition) -> row.
async fn java_describe(bootstrap: &str, group: &str) -> BTreeMap<(String, i32), Row> {
    consumer_groups_describe(bootstrap, group, &[])
        .await
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 9 || f[0] != group {
                return None;
            }
            Some((
                (f[1].to_owned(), f[2].parse().ok()?),
                Row {
                    committed: f[3].parse().ok(),
                    end: f[4].parse().ok()?,
                    lag: f[5].parse().ok(),
                    consumer_id: dash(f[6]),
                    host: dash(f[7]),
                    client_id: dash(f[8]),
                },
            ))
        })
        .collect()
}

/// The same rows from `kafkit group describe --json`.
fn kafkit_rows(doc: &Value) -> BTreeMap<(String, i32), Row> {
    let s = |v: &Value| v.as_str().map(str::to_owned);
    doc["partitions"]
        .as_array()
        .expect("partitions array")
        .iter()
        .map(|p| {
            (
                (
                    p["topic"].as_str().unwrap().to_owned(),
                    p["partition"].as_i64().unwrap() as i32,
                ),
                Row {
                    committed: p["committed"].as_i64(),
                    end: p["end"].as_i64().unwrap(),
                    lag: p["lag"].as_i64(),
                    consumer_id: s(&p["member_id"]),
                    host: s(&p["host"]),
                    client_id: s(&p["client_id"]),
                },
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_describe_matches_kafka_consumer_groups_and_list_contains_the_group() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("cli-lag");
    let group = random_name("cli-g");
    timeout(LIMIT, create_topic(&bootstrap, &topic, 3, 1))
        .await
        .expect("create topic timeout")
        .unwrap();
    produce(&bootstrap, &topic, &[30, 20, 10]).await;

    // A live kafkit member owning all three partitions, with commits on two of them.
    let client = ClientConfig::new([bootstrap.as_str()])
        .unwrap()
        .client_id("cli-test-member");
    let (member, mut events) =
        GroupMember::start(&client, GroupConfig::new(&group, [&topic])).expect("member start");
    let mut owned = 0;
    while owned < 3 {
        match timeout(LIMIT, events.recv()).await.expect("no assignment") {
            Some(GroupEvent::Assigned { partitions, .. }) => owned += partitions.len(),
            Some(GroupEvent::Revoked { partitions, done }) => {
                owned -= partitions.len();
                done.done();
            }
            other => panic!("unexpected group event {other:?}"),
        }
    }
    let commits: Vec<OffsetToCommit> = [(0, 10), (1, 20)]
        .into_iter()
        .map(|(p, offset)| OffsetToCommit {
            partition: TopicPartition::new(&topic, p),
            offset,
            metadata: None,
        })
        .collect();
    let report = timeout(LIMIT, member.commit(&commits))
        .await
        .expect("commit timeout")
        .unwrap();
    assert_eq!(report.committed.len(), 2, "{report:?}");

    let out = kafkit(&[
        "group",
        "describe",
        "--bootstrap-server",
        &bootstrap,
        "--group-id",
        &group,
        "--json",
    ])
    .await;
    assert!(out.status.success(), "describe: {}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("describe --json is JSON");
    assert_eq!(doc["state"], "Stable", "{doc}");
    assert_eq!(doc["protocol_type"], "consumer", "{doc}");
    assert!(!doc["protocol"].as_str().unwrap().is_empty(), "{doc}");
    let members = doc["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{doc}");
    assert_eq!(members[0]["client_id"], "cli-test-member", "{doc}");
    assert_eq!(
        members[0]["assignment"].as_array().unwrap().len(),
        3,
        "{doc}"
    );
    assert_eq!(doc["total_lag"], 20, "{doc}");

    let ours = kafkit_rows(&doc);
    let expected: Vec<(i32, Option<i64>, i64, Option<i64>)> = vec![
        (0, Some(10), 30, Some(20)),
        (1, Some(20), 20, Some(0)),
        (2, None, 10, None),
    ];
    for (p, committed, end, lag) in expected {
        let row = &ours[&(topic.clone(), p)];
        assert_eq!(
            (row.committed, row.end, row.lag),
            (committed, end, lag),
            "p{p}"
        );
    }
    let java = java_describe(&bootstrap, &group).await;
    assert_eq!(ours, java, "kafkit group describe vs kafka-consumer-groups");

    // The table names the same columns as Kafka's tool.
    let out = kafkit(&[
        "group",
        "describe",
        "--bootstrap-server",
        &bootstrap,
        "--group-id",
        &group,
    ])
    .await;
    assert!(out.status.success(), "describe: {}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("CURRENT-OFFSET") && table.contains("cli-test-member"),
        "{table}"
    );

    let out = kafkit(&["group", "list", "--bootstrap-server", &bootstrap, "--json"]).await;
    assert!(out.status.success(), "list: {}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("list --json is JSON");
    let listed = doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group_id"] == group.as_str())
        .unwrap_or_else(|| panic!("{group} not listed: {doc}"));
    assert_eq!(listed["protocol_type"], "consumer");
    assert_eq!(listed["state"], "Stable");

    // KAFKA_BOOTSTRAP stands in for --bootstrap-server; the table lists the group.
    let out = timeout(
        LIMIT,
        tokio::process::Command::new(kafkit_bin())
            .args(["group", "list"])
            .env("KAFKA_BOOTSTRAP", &bootstrap)
            .output(),
    )
    .await
    .expect("list timeout")
    .unwrap();
    assert!(out.status.success(), "list: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&group), "{}", text(&out.stdout));

    close(member, events).await;
}

/// Closes `member`, which hands back everything owned through a final Revoked that must be
/// acknowledged, and waits for its event channel to close.
async fn close(member: GroupMember, mut events: tokio::sync::mpsc::UnboundedReceiver<GroupEvent>) {
    let drain = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let GroupEvent::Revoked { done, .. } = event {
                done.done();
            }
        }
    });
    timeout(LIMIT, member.close())
        .await
        .expect("close timeout")
        .unwrap();
    timeout(LIMIT, drain)
        .await
        .expect("event channel closes")
        .unwrap();
}

fn assert_one_line_failure(out: &Output, code: i32, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr}");
    assert!(stderr.contains(needle), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_group_exits_3_and_unreachable_broker_exits_4() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let group = random_name("cli-missing");
    let out = kafkit(&[
        "group",
        "describe",
        "--bootstrap-server",
        &bootstrap,
        "--group-id",
        &group,
    ])
    .await;
    assert_one_line_failure(&out, 3, &group);

    // Port 1 on localhost: nothing listens, the connection is refused at once.
    let out = kafkit(&["group", "list", "--bootstrap-server", "127.0.0.1:1"]).await;
    assert_one_line_failure(&out, 4, "127.0.0.1:1");
    let out = kafkit(&[
        "group",
        "describe",
        "--bootstrap-server",
        "127.0.0.1:1",
        "--group-id",
        "g",
    ])
    .await;
    assert_one_line_failure(&out, 4, "127.0.0.1:1");

    // Bad arguments: 2.
    let out = kafkit(&["group", "describe", "--bootstrap-server", &bootstrap]).await;
    assert_one_line_failure(&out, 2, "--group-id");
    let out = kafkit(&["group", "list", "--bootstrap-server", "no-port"]).await;
    assert_one_line_failure(&out, 2, "bootstrap.servers");
}

/// `(committed, end)` per partition of `topic`, as `kafka-consumer-groups --describe` shows them.
async fn java_offsets(bootstrap: &str, group: &str, topic: &str) -> Vec<(Option<i64>, i64)> {
    java_describe(bootstrap, group)
        .await
        .into_iter()
        .filter(|((t, _), _)| t == topic)
        .map(|(_, row)| (row.committed, row.end))
        .collect()
}

/// `kafkit group reset-offsets ARGS --json`: the plan as (partition, current, new), and whether
/// it was committed.
async fn reset(
    bootstrap: &str,
    group: &str,
    args: &[&str],
) -> (Vec<(i64, Option<i64>, i64)>, bool) {
    let mut all = vec![
        "group",
        "reset-offsets",
        "--bootstrap-server",
        bootstrap,
        "--group-id",
        group,
        "--json",
    ];
    all.extend_from_slice(args);
    let out = kafkit(&all).await;
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("reset-offsets --json is JSON");
    let plan = doc["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap(),
                p["current"].as_i64(),
                p["new"].as_i64().unwrap(),
            )
        })
        .collect();
    (plan, doc["executed"].as_bool().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_reset_offsets_moves_an_inactive_groups_offsets_and_refuses_an_active_one() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("cli-reset");
    let group = random_name("cli-reset-g");
    timeout(LIMIT, create_topic(&bootstrap, &topic, 2, 1))
        .await
        .expect("create topic timeout")
        .unwrap();
    produce(&bootstrap, &topic, &[30, 20]).await;
    let client = ClientConfig::new([bootstrap.as_str()]).unwrap();
    let (member, mut events) =
        GroupMember::start(&client, GroupConfig::new(&group, [&topic])).expect("member start");
    let mut owned = 0;
    while owned < 2 {
        match timeout(LIMIT, events.recv()).await.expect("no assignment") {
            Some(GroupEvent::Assigned { partitions, .. }) => owned += partitions.len(),
            other => panic!("unexpected group event {other:?}"),
        }
    }
    let commits: Vec<OffsetToCommit> = [(0, 10), (1, 20)]
        .into_iter()
        .map(|(p, offset)| OffsetToCommit {
            partition: TopicPartition::new(&topic, p),
            offset,
            metadata: None,
        })
        .collect();
    timeout(LIMIT, member.commit(&commits))
        .await
        .expect("commit timeout")
        .unwrap();

    // A live member would overwrite a reset with its next commit: refused, exit 7, nothing moved.
    let out = kafkit(&[
        "group",
        "reset-offsets",
        "--bootstrap-server",
        &bootstrap,
        "--group-id",
        &group,
        "--topic",
        &topic,
        "--to-earliest",
        "--execute",
    ])
    .await;
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("active member"),
        "{}",
        text(&out.stderr)
    );
    close(member, events).await;
    assert_eq!(
        java_offsets(&bootstrap, &group, &topic).await,
        [(Some(10), 30), (Some(20), 20)]
    );

    // A dry run (the default) plans and changes nothing; Kafka's own dry run plans the same.
    let (plan, executed) = reset(&bootstrap, &group, &["--topic", &topic, "--to-earliest"]).await;
    assert_eq!(plan, [(0, Some(10), 0), (1, Some(20), 0)]);
    assert!(!executed);
    let java_plan = java_tool(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        &[
            "--bootstrap-server",
            &bootstrap,
            "--reset-offsets",
            "--group",
            &group,
            "--topic",
            &topic,
            "--shift-by",
            "-15",
            "--dry-run",
        ],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(java_plan.success, "{}", java_plan.stderr);
    // Kafka's tool lists partitions in no particular order (and 3.9 prints its rows on one line):
    // (partition, new offset) after each `group topic`, sorted.
    let words: Vec<&str> = java_plan.stdout.split_whitespace().collect();
    let java_new: BTreeMap<i64, i64> = words
        .windows(4)
        .filter(|w| w[0] == group && w[1] == topic)
        .map(|w| (w[2].parse().unwrap(), w[3].parse().unwrap()))
        .collect();
    let (plan, _) = reset(
        &bootstrap,
        &group,
        &["--topic", &topic, "--shift-by", "-15"],
    )
    .await;
    assert_eq!(plan, [(0, Some(10), 0), (1, Some(20), 5)]);
    assert_eq!(
        java_new,
        BTreeMap::from([(0, 0), (1, 5)]),
        "{}",
        java_plan.stdout
    );
    assert_eq!(
        java_offsets(&bootstrap, &group, &topic).await,
        [(Some(10), 30), (Some(20), 20)]
    );

    // --execute commits; targets are kept within the log.
    let (plan, executed) = reset(
        &bootstrap,
        &group,
        &["--topic", &topic, "--shift-by", "-5", "--execute"],
    )
    .await;
    assert!(executed);
    assert_eq!(plan, [(0, Some(10), 5), (1, Some(20), 15)]);
    assert_eq!(
        java_offsets(&bootstrap, &group, &topic).await,
        [(Some(5), 30), (Some(15), 20)]
    );
    let topic_1 = format!("{topic}:1");
    let (plan, _) = reset(
        &bootstrap,
        &group,
        &["--topic", &topic_1, "--to-offset", "999", "--execute"],
    )
    .await;
    assert_eq!(plan, [(1, Some(15), 20)]);
    let (plan, _) = reset(
        &bootstrap,
        &group,
        &["--all-topics", "--to-latest", "--execute"],
    )
    .await;
    assert_eq!(plan, [(0, Some(5), 30), (1, Some(20), 20)]);
    // Every record is newer than 2001, none is from 2999 (the log end, then).
    let (plan, _) = reset(
        &bootstrap,
        &group,
        &[
            "--all-topics",
            "--to-datetime",
            "2001-01-01T00:00:00Z",
            "--execute",
        ],
    )
    .await;
    assert_eq!(plan, [(0, Some(30), 0), (1, Some(20), 0)]);
    let (plan, _) = reset(
        &bootstrap,
        &group,
        &["--all-topics", "--to-datetime", "2999-01-01T00:00:00.000"],
    )
    .await;
    assert_eq!(plan, [(0, Some(0), 30), (1, Some(0), 20)]);
    assert_eq!(
        java_offsets(&bootstrap, &group, &topic).await,
        [(Some(0), 30), (Some(0), 20)]
    );

    // Bad input is exit 2 naming the problem; an unknown partition is exit 3.
    let base = [
        "group",
        "reset-offsets",
        "--bootstrap-server",
        &bootstrap,
        "--group-id",
        &group,
    ];
    let out = kafkit(
        &[
            &base[..],
            &["--topic", &topic, "--to-datetime", "yesterday"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--to-datetime"),
        "{}",
        text(&out.stderr)
    );
    let out = kafkit(&[&base[..], &["--topic", &topic]].concat()).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a target is required: {}",
        text(&out.stderr)
    );
    let topic_9 = format!("{topic}:9");
    let out = kafkit(&[&base[..], &["--topic", &topic_9, "--to-latest"]].concat()).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

/// `kafkit group describe --watch --json` prints one document per refresh, each with the rate
/// at which offsets were committed since the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_describe_watch_refreshes_with_commit_rates() {
    use tokio::io::AsyncBufReadExt;
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("cli-watch");
    let group = random_name("cli-watch-g");
    timeout(LIMIT, create_topic(&bootstrap, &topic, 1, 1))
        .await
        .expect("create topic timeout")
        .unwrap();
    produce(&bootstrap, &topic, &[50]).await;
    let client = ClientConfig::new([bootstrap.as_str()]).unwrap();
    let (member, mut events) =
        GroupMember::start(&client, GroupConfig::new(&group, [&topic])).expect("member start");
    match timeout(LIMIT, events.recv()).await.expect("no assignment") {
        Some(GroupEvent::Assigned { .. }) => {}
        other => panic!("unexpected group event {other:?}"),
    }
    let commit = |offset| {
        vec![OffsetToCommit {
            partition: TopicPartition::new(&topic, 0),
            offset,
            metadata: None,
        }]
    };
    timeout(LIMIT, member.commit(&commit(10)))
        .await
        .expect("commit timeout")
        .unwrap();

    let mut watch = tokio::process::Command::new(kafkit_bin())
        .args(["group", "describe", "--bootstrap-server", &bootstrap])
        .args(["--group-id", &group, "--json", "--watch"])
        .args(["--interval-ms", "1000", "--iterations", "4"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut frames = Vec::new();
    while let Some(line) = timeout(LIMIT, lines.next_line()).await.unwrap().unwrap() {
        let doc: Value = serde_json::from_str(&line).expect("one JSON document per line");
        if frames.is_empty() {
            // Between the first refresh and the next, 30 more records are committed.
            timeout(LIMIT, member.commit(&commit(40)))
                .await
                .expect("commit timeout")
                .unwrap();
        }
        frames.push(doc);
    }
    assert!(watch.wait().await.unwrap().success());
    assert_eq!(frames.len(), 4, "{frames:?}");
    let partition = |doc: &Value| doc["partitions"][0].clone();
    assert_eq!(partition(&frames[0])["committed"], 10, "{frames:?}");
    assert_eq!(partition(&frames[0])["commit_rate"], 0.0, "{frames:?}");
    // The refresh that first sees offset 40 reports a positive rate (30 records over about a
    // second, give or take how long each describe took); the last, with nothing committed since,
    // reports 0.
    let moved = frames
        .iter()
        .position(|f| partition(f)["committed"] == 40)
        .expect("a refresh sees the new commit");
    let rate = partition(&frames[moved])["commit_rate"].as_f64().unwrap();
    assert!(rate > 5.0 && rate < 100.0, "{rate}: {frames:?}");
    assert_eq!(partition(&frames[3])["committed"], 40, "{frames:?}");
    assert_eq!(partition(&frames[3])["commit_rate"], 0.0, "{frames:?}");
    close(member, events).await;
}
