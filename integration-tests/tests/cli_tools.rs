//! `kafkit diag`, `kafkit topics`, `kafkit produce` and `kafkit consume` as processes against real
//! brokers: what they print, what they change on the broker (checked with Kafka's own tools or
//! kafkit's admin API), and their error paths with one line on stderr and a distinct exit code.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Output, Stdio};
use std::time::Duration;

use kafkit::ClientConfig;
use kafkit::partitioner::partition_for_key;
use kafkit_integration_tests::kafkit_bin;
use kafkit_testkit::{LocalCluster, create_topic, java_tool, random_name, shared};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(90);

/// Runs `kafkit args...` with `stdin` as its input.
async fn kafkit_with_input(args: &[&str], stdin: &str) -> Output {
    let mut child = tokio::process::Command::new(kafkit_bin())
        .args(args)
        .env_remove("KAFKA_BOOTSTRAP")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("running kafkit");
    let mut input = child.stdin.take().expect("piped stdin");
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    timeout(LIMIT, child.wait_with_output())
        .await
        .expect("kafkit did not exit in time")
        .expect("waiting for kafkit")
}

async fn kafkit(args: &[&str]) -> Output {
    kafkit_with_input(args, "").await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON document on stdout")
}

fn assert_one_line_failure(out: &Output, code: i32, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr}");
    assert!(stderr.contains(needle), "`{needle}` in: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_create_describe_list_and_delete_as_kafka_sees_them() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let b = bootstrap.as_str();
    let topic = random_name("cli-topic");
    let out = kafkit(&[
        "topics",
        "create",
        "--bootstrap-server",
        b,
        "--topic",
        &topic,
        "--partitions",
        "5",
        "--replication-factor",
        "1",
        "--config",
        "retention.ms=3600000",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Kafka's own tool sees the partitions and the config.
    let java = java_tool(
        "org.apache.kafka.tools.TopicCommand",
        &["--bootstrap-server", b, "--describe", "--topic", &topic],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(java.success, "{}", java.stderr);
    assert!(java.stdout.contains("PartitionCount: 5"), "{}", java.stdout);
    assert!(
        java.stdout.contains("retention.ms=3600000"),
        "{}",
        java.stdout
    );

    let listed = json(&kafkit(&["topics", "list", "--bootstrap-server", b, "--json"]).await);
    let entry = listed["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == topic.as_str())
        .expect("the new topic is listed");
    assert_eq!(entry["partitions"].as_array().unwrap().len(), 5);
    assert!(
        listed["topics"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["internal"] == false),
        "internal topics only with --internal"
    );
    let described = json(
        &kafkit(&[
            "topics",
            "describe",
            "--bootstrap-server",
            b,
            "--topic",
            &topic,
            "--json",
        ])
        .await,
    );
    let partitions = described["topics"][0]["partitions"].as_array().unwrap();
    let numbers: Vec<i64> = partitions
        .iter()
        .map(|p| p["partition"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, vec![0, 1, 2, 3, 4]);
    assert!(
        partitions
            .iter()
            .all(|p| p["leader"] == 1 && p["isr"] == serde_json::json!([1]))
    );

    // Creating it again: Kafka's error, one line, exit 1; --if-not-exists makes it a no-op.
    let again = kafkit(&[
        "topics",
        "create",
        "--bootstrap-server",
        b,
        "--topic",
        &topic,
    ])
    .await;
    assert_one_line_failure(&again, 1, "TopicAlreadyExists");
    let again = kafkit(&[
        "topics",
        "create",
        "--bootstrap-server",
        b,
        "--topic",
        &topic,
        "--if-not-exists",
    ])
    .await;
    assert!(again.status.success(), "{}", text(&again.stderr));

    let out = kafkit(&[
        "topics",
        "delete",
        "--bootstrap-server",
        b,
        "--topic",
        &topic,
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let java = java_tool(
        "org.apache.kafka.tools.TopicCommand",
        &["--bootstrap-server", b, "--list"],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(java.success, "{}", java.stderr);
    assert!(
        !java.stdout.lines().any(|l| l.trim() == topic),
        "deleted topic still listed by Kafka: {}",
        java.stdout
    );

    let missing = kafkit(&[
        "topics",
        "delete",
        "--bootstrap-server",
        b,
        "--topic",
        &topic,
    ])
    .await;
    assert_one_line_failure(&missing, 3, &topic);
    let missing = kafkit(&[
        "topics",
        "delete",
        "--bootstrap-server",
        b,
        "--topic",
        &topic,
        "--if-exists",
    ])
    .await;
    assert!(missing.status.success(), "{}", text(&missing.stderr));
    let missing = kafkit(&[
        "topics",
        "describe",
        "--bootstrap-server",
        b,
        "--topic",
        &topic,
    ])
    .await;
    assert_one_line_failure(&missing, 3, &topic);
    let bad = kafkit(&[
        "topics",
        "create",
        "--bootstrap-server",
        b,
        "--topic",
        "t",
        "--config",
        "no-equals",
    ])
    .await;
    assert_one_line_failure(&bad, 2, "KEY=VALUE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_round_trip_keys_headers_and_commit_only_what_was_printed() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let b = bootstrap.as_str();
    let topic = random_name("cli-records");
    create_topic(b, &topic, 4, 1).await.unwrap();
    let input: String = (0..200).map(|i| format!("k{}|v{i}\n", i % 13)).collect();
    let out = kafkit_with_input(
        &[
            "produce",
            "--bootstrap-server",
            b,
            "--topic",
            &topic,
            "--key-separator",
            "|",
            "--header",
            "source=cli",
            "--header",
            "n=1",
        ],
        &input,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("produced 200 records"),
        "{}",
        text(&out.stderr)
    );

    let group = random_name("cli-consume");
    let out = kafkit(&[
        "consume",
        "--bootstrap-server",
        b,
        "--topic",
        &topic,
        "--group",
        &group,
        "--from-beginning",
        "--max-messages",
        "200",
        "--print-partition",
        "--print-offset",
        "--print-headers",
        "--print-key",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut values = BTreeSet::new();
    let mut last_offset: BTreeMap<String, i64> = BTreeMap::new();
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [tp, offset, headers, key, value] = fields[..] else {
            panic!("five fields expected: {line:?}");
        };
        // In the order of the --header options: the producer writes headers as given.
        assert_eq!(headers, "source:cli,n:1");
        let i: usize = value.strip_prefix('v').unwrap().parse().unwrap();
        assert_eq!(key, format!("k{}", i % 13));
        // Keys land where Java's partitioner puts them.
        let partition = partition_for_key(key.as_bytes(), 4);
        assert_eq!(tp, format!("{topic}-{partition}"), "{line}");
        let offset: i64 = offset.parse().unwrap();
        if let Some(prev) = last_offset.insert(tp.to_owned(), offset) {
            assert!(offset > prev, "offsets increase per partition: {line}");
        }
        assert!(values.insert(i), "printed twice: {line}");
    }
    assert_eq!(values, (0..200).collect::<BTreeSet<_>>());

    // Everything was committed: the same group gets nothing more.
    let out = kafkit(&[
        "consume",
        "--bootstrap-server",
        b,
        "--topic",
        &topic,
        "--group",
        &group,
        "--timeout-ms",
        "3000",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));

    // --max-messages 10 in a new group: exactly the 10 printed records are committed.
    let group = random_name("cli-max");
    let out = kafkit(&[
        "consume",
        "--bootstrap-server",
        b,
        "--topic",
        &topic,
        "--group",
        &group,
        "--from-beginning",
        "--max-messages",
        "10",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 10);
    let client = ClientConfig::new([b]).unwrap();
    let lag = kafkit::admin::group_lag(&client, &group).await.unwrap();
    let committed: i64 = lag.iter().filter_map(|p| p.committed).sum();
    assert_eq!(committed, 10, "{lag:?}");

    // The same on KIP-848's consumer protocol (Kafka 4.0+), and the settings it refuses.
    if !kafkit_testkit::kafka_version().starts_with("3.") {
        let group = random_name("cli-kip848");
        let out = kafkit(&[
            "consume",
            "--bootstrap-server",
            b,
            "--topic",
            &topic,
            "--group",
            &group,
            "--group-protocol",
            "consumer",
            "--group-remote-assignor",
            "uniform",
            "--from-beginning",
            "--max-messages",
            "10",
        ])
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).lines().count(), 10);
        let lag = kafkit::admin::group_lag(&client, &group).await.unwrap();
        let committed: i64 = lag.iter().filter_map(|p| p.committed).sum();
        assert_eq!(committed, 10, "{lag:?}");
    }
    for (flags, needle) in [
        (&["--group-protocol", "next-gen"][..], "group.protocol"),
        (
            &["--group-remote-assignor", "uniform"][..],
            "group.remote.assignor",
        ),
    ] {
        let mut args = vec!["consume", "--bootstrap-server", b, "--topic", &topic];
        args.extend_from_slice(flags);
        let out = kafkit(&args).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{flags:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains(needle), "{}", text(&out.stderr));
    }
}

/// `consume` writes every record it has ready, flushes, then acks the batch (up to 1,024 records).
/// With thousands of records ready, `--max-messages` that ends inside a batch still prints exactly
/// that many, each partition's lines in offset order from 0, and each partition's commit is the
/// offset right after its last printed line: nothing printed is left uncommitted, nothing unprinted
/// is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_batches_print_in_offset_order_and_commit_exactly_max_messages() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let b = bootstrap.as_str();
    let topic = random_name("cli-batches");
    create_topic(b, &topic, 3, 1).await.unwrap();
    let client = ClientConfig::new([b]).unwrap();
    let producer = kafkit::ProducerBuilder::new(client.clone())
        .build()
        .await
        .unwrap();
    let sends = (0..6000).map(|i| {
        producer
            .send(kafkit::ProducerRecord::new(&topic, format!("v{i}")).key(format!("k{}", i % 50)))
    });
    timeout(LIMIT, futures::future::try_join_all(sends))
        .await
        .expect("preload in time")
        .unwrap();
    producer.close().await.unwrap();

    let group = random_name("cli-batches");
    let out = kafkit(&[
        "consume",
        "--bootstrap-server",
        b,
        "--topic",
        &topic,
        "--group",
        &group,
        "--from-beginning",
        "--max-messages",
        "2500",
        "--print-partition",
        "--print-offset",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 2500);
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [tp, offset, _value] = fields[..] else {
            panic!("three fields expected: {line:?}");
        };
        let partition: i32 = tp.rsplit('-').next().unwrap().parse().unwrap();
        let expected = next.entry(partition).or_insert(0);
        assert_eq!(offset.parse::<i64>().unwrap(), *expected, "{line}");
        *expected += 1;
    }
    let lag = kafkit::admin::group_lag(&client, &group).await.unwrap();
    for p in &lag {
        let printed = next.get(&p.partition).copied().unwrap_or(0);
        assert_eq!(p.committed.unwrap_or(0), printed, "{lag:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_errors_are_one_line_with_distinct_exit_codes() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let b = bootstrap.as_str();
    let missing = random_name("cli-missing");
    let out = kafkit_with_input(
        &["produce", "--bootstrap-server", b, "--topic", &missing],
        "x\n",
    )
    .await;
    assert_one_line_failure(&out, 3, &missing);
    let out = kafkit(&["consume", "--bootstrap-server", b, "--topic", &missing]).await;
    assert_one_line_failure(&out, 3, &missing);

    let topic = random_name("cli-bad-input");
    create_topic(b, &topic, 1, 1).await.unwrap();
    let out = kafkit_with_input(
        &[
            "produce",
            "--bootstrap-server",
            b,
            "--topic",
            &topic,
            "--key-separator",
            ":",
        ],
        "a:1\nno separator\nb:2\n",
    )
    .await;
    assert_one_line_failure(&out, 2, "line 2");
    let out = kafkit_with_input(
        &[
            "produce",
            "--bootstrap-server",
            b,
            "--topic",
            &topic,
            "--header",
            "novalue",
        ],
        "x\n",
    )
    .await;
    assert_one_line_failure(&out, 2, "NAME=VALUE");
    // Only the line before the bad one was sent.
    let out = kafkit(&[
        "consume",
        "--bootstrap-server",
        b,
        "--topic",
        &topic,
        "--from-beginning",
        "--timeout-ms",
        "3000",
        "--print-key",
    ])
    .await;
    assert_eq!(text(&out.stdout), "a\t1\n");

    let out = kafkit_with_input(
        &[
            "produce",
            "--bootstrap-server",
            "127.0.0.1:1",
            "--connect-timeout-ms",
            "1000",
            "--topic",
            &topic,
        ],
        "x\n",
    )
    .await;
    assert_one_line_failure(&out, 4, "127.0.0.1:1");
    let out = kafkit(&[
        "consume",
        "--bootstrap-server",
        "127.0.0.1:1",
        "--topic",
        &topic,
    ])
    .await;
    assert_one_line_failure(&out, 4, "127.0.0.1:1");
    let out = kafkit(&["consume", "--bootstrap-server", b]).await;
    assert_one_line_failure(&out, 2, "--topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diag_says_ok_on_a_healthy_broker_and_names_each_problem_otherwise() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let b = bootstrap.as_str();
    let topic = random_name("cli-diag");
    create_topic(b, &topic, 3, 1).await.unwrap();
    let out = kafkit(&["diag", "--bootstrap-server", b]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.lines().last().unwrap().starts_with("verdict: OK"),
        "{report}"
    );
    assert!(report.contains(&topic), "{report}");
    assert!(
        report.contains("16 of the 16 kafkit uses are supported"),
        "{report}"
    );
    // Kafka 4.0 made the consumer protocol (KIP-848) generally available.
    let consumer_protocol = !kafkit_testkit::kafka_version().starts_with("3.");
    let protocols = report
        .lines()
        .find_map(|l| l.strip_prefix("Group protocols: "))
        .unwrap_or_else(|| panic!("no group protocols line: {report}"));
    assert!(protocols.starts_with("classic"), "{report}");
    assert_eq!(
        protocols.contains("consumer"),
        consumer_protocol,
        "{report}"
    );

    let doc = json(&kafkit(&["diag", "--bootstrap-server", b, "--json", "--api-versions"]).await);
    assert_eq!(doc["healthy"], true);
    assert_eq!(doc["controller"], 1);
    let offered = doc["group_protocols"].as_array().unwrap();
    assert!(offered.contains(&Value::from("classic")), "{offered:?}");
    assert_eq!(
        offered.contains(&Value::from("consumer")),
        consumer_protocol,
        "{offered:?}"
    );
    assert_eq!(doc["brokers"][0]["reachable"], true);
    let topic_doc = doc["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == topic.as_str())
        .unwrap();
    assert_eq!(topic_doc["partitions"].as_array().unwrap().len(), 3);
    assert!(
        doc["api_versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "JoinGroup" && v["max"].as_i64().unwrap() >= 5)
    );

    // A second bootstrap address that does not answer is a problem, though the cluster answers.
    let both = format!("{b},127.0.0.1:1");
    let out = kafkit(&["diag", "--bootstrap-server", &both]).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("verdict: PROBLEM"));
    assert!(text(&out.stderr).contains("bootstrap server 127.0.0.1:1 is unreachable"));

    let out = kafkit(&["diag", "--bootstrap-server", "127.0.0.1:1"]).await;
    assert_one_line_failure(&out, 4, "127.0.0.1:1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diag_reports_under_replicated_partitions_when_a_broker_is_down() {
    // Three combined broker+controller nodes: with one down, the KRaft quorum still has a majority
    // and can shrink the ISR.
    let cluster = LocalCluster::start(3).await.unwrap();
    let bootstrap = cluster.bootstrap();
    let topic = random_name("cli-replicated");
    create_topic(&bootstrap, &topic, 2, 3).await.unwrap();
    let out = kafkit(&["diag", "--bootstrap-server", &bootstrap]).await;
    assert!(out.status.success(), "{}", text(&out.stdout));

    cluster.node(3).unwrap().kill();
    let first = cluster.node(1).unwrap().bootstrap();
    // At once the dead broker's address stops answering; the ISR shrinks once the controller
    // notices (the broker's session times out).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let out = loop {
        let out = kafkit(&["diag", "--bootstrap-server", &first]).await;
        if text(&out.stdout).contains("under-replicated") || tokio::time::Instant::now() > deadline
        {
            break out;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stdout));
    let report = text(&out.stdout);
    assert!(
        report.contains(&format!(
            "topic `{topic}`: partition(s) 0,1 under-replicated"
        )),
        "{report}"
    );
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
}

/// A port that accepts TCP connections and never answers: a listener whose accepted sockets are
/// held open (until the returned guard is dropped and the test ends).
fn silent_port() -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for socket in listener.incoming() {
            match socket {
                Ok(socket) => held.push(socket),
                Err(_) => break,
            }
        }
    });
    (address, holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_timeout_bounds_a_broker_that_accepts_but_never_answers() {
    kafkit_bin(); // built before anything is timed
    let (silent, _holder) = silent_port();
    let s = silent.as_str();
    // Every command that connects: the limit covers TCP, ApiVersions and the first request.
    let commands: &[&[&str]] = &[
        &["diag", "--bootstrap-server", s],
        &["topics", "list", "--bootstrap-server", s],
        &["group", "list", "--bootstrap-server", s],
        &["consume", "--bootstrap-server", s, "--topic", "t"],
        &["produce", "--bootstrap-server", s, "--topic", "t"],
    ];
    for args in commands {
        let args: Vec<&str> = args
            .iter()
            .copied()
            .chain(["--connect-timeout-ms", "2000"])
            .collect();
        let started = std::time::Instant::now();
        let out = kafkit(&args).await;
        let waited = started.elapsed();
        eprintln!(
            "kafkit {args:?}: exit {:?} after {waited:?}",
            out.status.code()
        );
        assert_one_line_failure(&out, 4, &silent);
        assert!(
            waited < Duration::from_secs(3),
            "kafkit {args:?} took {waited:?} with --connect-timeout-ms 2000"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_timeout_bounds_connecting_to_a_silent_or_stopped_broker() {
    kafkit_bin();
    let (silent, _holder) = silent_port();
    // Port 1: nothing listens (a stopped broker); the silent port: a hung one. The default connect
    // timeout (10 s) is longer than --timeout-ms: the shorter one is what holds.
    for bootstrap in ["127.0.0.1:1", silent.as_str()] {
        let started = std::time::Instant::now();
        let out = kafkit(&[
            "consume",
            "--bootstrap-server",
            bootstrap,
            "--topic",
            "t",
            "--timeout-ms",
            "3000",
        ])
        .await;
        let waited = started.elapsed();
        eprintln!(
            "consume --timeout-ms 3000 at {bootstrap}: exit {:?} after {waited:?}",
            out.status.code()
        );
        assert_one_line_failure(&out, 4, bootstrap);
        assert!(
            waited < Duration::from_millis(4500),
            "consume --timeout-ms 3000 at {bootstrap} took {waited:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_timeout_holds_while_fetches_fail() {
    use tokio::io::AsyncBufReadExt;
    kafkit_bin();
    let kafka = kafkit_testkit::LocalKafka::start().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("cli-timeout");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    let out = kafkit_with_input(
        &[
            "produce",
            "--bootstrap-server",
            &bootstrap,
            "--topic",
            &topic,
        ],
        "one\n",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut child = tokio::process::Command::new(kafkit_bin())
        .args([
            "consume",
            "--bootstrap-server",
            &bootstrap,
            "--topic",
            &topic,
            "--from-beginning",
            "--timeout-ms",
            "3000",
        ])
        .env_remove("KAFKA_BOOTSTRAP")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("running kafkit");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = timeout(LIMIT, lines.next_line())
        .await
        .expect("the record within the limit")
        .unwrap();
    assert_eq!(first.as_deref(), Some("one"));
    // The broker hangs (SIGSTOP): fetches, the last commit and leaving the group get no answer.
    let printed = std::time::Instant::now();
    kafka.pause();
    let status = timeout(LIMIT, child.wait())
        .await
        .expect("kafkit exits")
        .unwrap();
    let waited = printed.elapsed();
    kafka.resume();
    eprintln!(
        "consume --timeout-ms 3000 with a hung broker: {status} {waited:?} after the last record"
    );
    assert!(status.success(), "an idle stop is a normal end: {status}");
    assert!(
        waited < Duration::from_secs(4),
        "--timeout-ms 3000 stopped {waited:?} after the last record"
    );
}
