//! Groups of the KIP-848 consumer protocol (`group.protocol=consumer`, Kafka 4.0+) as kafkit's tools
//! see them: a Java consumer on the new protocol, described and listed by `kafkit::admin` and
//! `kafkit group`, against what Kafka's own `kafka-consumer-groups` reports. (Not in CI's pass
//! against the oldest supported broker: Kafka 3.9 offers the protocol only as a preview.)

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kafkit::admin;
use kafkit::{ProducerBuilder, ProducerRecord};
use kafkit_integration_tests::kafkit_bin;
use kafkit_integration_tests::support::{client, eventually, kafka_lag};
use kafkit_testkit::{create_topic, java_command, random_name, shared};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const PARTITIONS: i32 = 3;
const PER_PARTITION: i64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_protocol_group_is_described_and_listed_as_kafka_does() {
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let java_rows = loop {
        let (rows, raw) = kafka_lag(&bootstrap, &group, &topic).await;
        if rows.len() == PARTITIONS as usize && rows.values().all(|&(_, _, lag)| lag == 0) {
            break rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "kafka-consumer-groups never showed lag 0: {raw}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };

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
