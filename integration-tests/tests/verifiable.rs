//! `kafkit verifiable-consumer` and `kafkit verifiable-producer` as processes, held to Apache
//! Kafka's verifiable-client contract: a group of kafkit consumers fed by Kafka's own Java
//! VerifiableProducer, with one member killed and restarted and one stopped, checked by the
//! validator in `kafkit_integration_tests::verifiable`.
//!
//! The `kafkit` binary belongs to another package, so `CARGO_BIN_EXE_kafkit` is not available
//! here. Each run asks cargo to build it (`cargo build -p kafkit-cli --bin kafkit`, a no-op when it
//! is fresh; cargo has released its build lock by the time tests run) with the test's own profile,
//! target directory and flags, and takes the binary's path from cargo's JSON artifact message.
//! `KAFKIT_BIN=/path/to/kafkit` skips the build (e.g. to test a musl release binary).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kafkit::ClientConfig;
use kafkit::group::{GroupConfig, GroupMember};
use kafkit_integration_tests::kafkit_bin;
use kafkit_integration_tests::support::eventually_every;
use kafkit_integration_tests::verifiable::{
    self, Options, Report, Stream, TopicPartition, check_group, consumed_offsets,
};
use kafkit_testkit::{create_topic, java_command, random_name, shared};
use parking_lot::Mutex;
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

/// A child process whose stdout and stderr are collected as they arrive.
struct Proc {
    name: String,
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut text = into.lock();
            text.push_str(&line);
            text.push('\n');
        }
    })
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let (stdout, stderr) = Default::default();
        let readers = vec![
            collect(child.stdout.take().unwrap(), Arc::clone(&stdout)),
            collect(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        ];
        Proc {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            readers,
        }
    }

    fn kafkit(name: &str, args: &[&str]) -> Proc {
        let mut cmd = Command::new(kafkit_bin());
        cmd.args(args);
        Proc::spawn(name, cmd)
    }

    fn stdout(&self) -> String {
        self.stdout.lock().clone()
    }

    fn stream(&self) -> Stream {
        verifiable::parse(&self.stdout())
    }

    /// A crash: SIGKILL.
    fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL");
    }

    /// A graceful stop, as Kafka's harness asks for one: SIGTERM.
    fn terminate(&self) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits for the exit, then for the pipes to drain.
    async fn wait(&mut self, limit: Duration) -> ExitStatus {
        let status = timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within {limit:?}", self.name))
            .expect("waiting for the child");
        for reader in self.readers.drain(..) {
            let _ = timeout(Duration::from_secs(10), reader).await;
        }
        status
    }

    /// The last lines of stderr, for failure messages.
    fn stderr_tail(&self) -> String {
        let text = self.stderr.lock();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

fn diagnostics(procs: &[&Proc]) -> String {
    procs
        .iter()
        .map(|p| {
            format!(
                "--- {}: {} stdout lines; stderr tail:\n{}",
                p.name,
                p.stdout().lines().count(),
                p.stderr_tail()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The partitions a stream says its process holds now.
fn owned(stream: &Stream) -> BTreeSet<TopicPartition> {
    let mut owned = BTreeSet::new();
    for e in &stream.events {
        match &e.event {
            verifiable::Event::PartitionsAssigned(tps) => owned.extend(tps.iter().cloned()),
            verifiable::Event::PartitionsRevoked { partitions, .. } => {
                for tp in partitions {
                    owned.remove(tp);
                }
            }
            verifiable::Event::ShutdownComplete => owned.clear(),
            _ => {}
        }
    }
    owned
}

/// Waits until `check` holds, polling every 200 ms, or panics with `what` and the processes'
/// diagnostics after `limit`.
async fn eventually(limit: Duration, what: &str, procs: &[&Proc], check: impl FnMut() -> bool) {
    let message = || format!("{what}\n{}", diagnostics(procs));
    eventually_every(limit, Duration::from_millis(200), message, check).await;
}

/// The log end offset of each partition.
async fn log_end_offsets(bootstrap: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let client = timeout(
        Duration::from_secs(30),
        ClientBuilder::new(vec![bootstrap.to_owned()]).build(),
    )
    .await
    .expect("connect timeout")
    .expect("rskafka client");
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let pc = timeout(
            Duration::from_secs(30),
            client.partition_client(topic, p, UnknownTopicHandling::Error),
        )
        .await
        .expect("partition client timeout")
        .expect("partition client");
        let end = timeout(Duration::from_secs(30), pc.get_offset(OffsetAt::Latest))
            .await
            .expect("list offsets timeout")
            .expect("list offsets");
        ends.insert(p, end);
    }
    ends
}

/// The group's committed offsets, through a member that only fetches offsets (joins nothing).
async fn group_committed(
    bootstrap: &str,
    group_id: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, i64> {
    let client = ClientConfig::new([bootstrap]).unwrap();
    let (member, _events) =
        GroupMember::start(&client, GroupConfig::new(group_id, [topic])).unwrap();
    let tps: Vec<_> = (0..partitions)
        .map(|p| kafkit::group::TopicPartition::new(topic, p))
        .collect();
    let out = timeout(Duration::from_secs(30), member.committed(&tps))
        .await
        .expect("offset fetch timeout")
        .expect("offset fetch");
    out.into_iter()
        .filter_map(|(tp, c)| c.map(|c| (tp.partition, c.offset)))
        .collect()
}

fn options(proc: &Proc) -> Options {
    Options {
        contiguous: !proc.name.contains("key-ordered"),
    }
}

/// `(partition, offset)` of every `producer_send_success` line in `stdout`, and the error lines.
fn acked(stdout: &str) -> (BTreeSet<(i32, i64)>, Vec<String>) {
    let mut acked = BTreeSet::new();
    let mut errors = Vec::new();
    for line in stdout.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        match v["name"].as_str() {
            Some("producer_send_success") => {
                acked.insert((
                    v["partition"].as_i64().unwrap() as i32,
                    v["offset"].as_i64().unwrap(),
                ));
            }
            Some("producer_send_error") => errors.push(line.to_owned()),
            _ => {}
        }
    }
    (acked, errors)
}

/// Validates `proc`'s stream; key-ordered consumers (named so) may leave gaps that later events fill.
fn validate(proc: &Proc) -> Report {
    let report = verifiable::validate(&proc.stream(), options(proc));
    assert!(
        report.violations.is_empty(),
        "{} broke the verifiable-consumer contract:\n{}\n{}",
        proc.name,
        report
            .violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        diagnostics(&[proc])
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_kafkit_processes_killed_restarted_and_stopped_keeps_the_contract() {
    group_of_verifiable_consumers(false).await;
}

/// The same contract on KIP-848's consumer protocol (`--group-protocol consumer
/// --group-remote-assignor uniform`, Kafka 4.0+): the broker assigns, members reconcile one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_group_on_the_consumer_protocol_keeps_the_contract() {
    if kafkit_testkit::kafka_version().starts_with("3.") {
        eprintln!(
            "skipped: Kafka {} has no GA consumer protocol",
            kafkit_testkit::kafka_version()
        );
        return;
    }
    group_of_verifiable_consumers(true).await;
}

/// Three verifiable consumers (partition-ordered, unordered, then a killed one restarted
/// key-ordered, one stopped by SIGTERM) under Kafka's VerifiableProducer, checked against the
/// VerifiableConsumer contract.
async fn group_of_verifiable_consumers(consumer_protocol: bool) {
    let kafka = shared().await.expect("broker");
    let bootstrap = kafka.bootstrap();
    let topic = random_name("verifiable");
    let group = random_name("verifiable-group");
    const PARTITIONS: i32 = 6;
    const MESSAGES: usize = 3000;
    timeout(
        Duration::from_secs(60),
        create_topic(&bootstrap, &topic, PARTITIONS, 1),
    )
    .await
    .expect("create topic timeout")
    .expect("create topic");
    let bin = timeout(
        Duration::from_secs(600),
        tokio::task::spawn_blocking(kafkit_bin),
    )
    .await
    .expect("building kafkit timed out")
    .expect("build task");
    eprintln!("kafkit binary: {}", bin.display());

    let consumer = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "verifiable-consumer",
            "--group-id",
            &group,
            "--topic",
            &topic,
            "--bootstrap-server",
            &bootstrap,
            "--reset-policy",
            "earliest",
        ];
        if consumer_protocol {
            // The broker decides the session timeout (10 s in the testkit).
            args.extend_from_slice(&[
                "--group-protocol",
                "consumer",
                "--group-remote-assignor",
                "uniform",
            ]);
        } else {
            args.extend_from_slice(&["--session-timeout", "6000"]);
        }
        args.extend_from_slice(extra);
        Proc::kafkit(name, &args)
    };
    let mut c0 = consumer("consumer-0", &[]);
    let mut c1 = consumer("consumer-1", &[]);
    // Unordered hands each partition out in offset order and finishes records concurrently: its
    // records_consumed must be as contiguous as the ordered mode's.
    let mut c2 = consumer(
        "consumer-2",
        &[
            "--dispatch-mode",
            "unordered",
            "--max-in-flight",
            "16",
            "--processing-time-ms",
            "1",
        ],
    );
    eventually(
        Duration::from_secs(60),
        "three members sharing six partitions",
        &[&c0, &c1, &c2],
        || {
            let owned: Vec<_> = [&c0, &c1, &c2].iter().map(|c| owned(&c.stream())).collect();
            owned.iter().all(|o| !o.is_empty())
                && owned.iter().map(BTreeSet::len).sum::<usize>() == PARTITIONS as usize
        },
    )
    .await;

    // Kafka's own Java VerifiableProducer feeds the topic: 3000 records at 500/s, keyed (100 keys)
    // so that every partition gets records (unkeyed, its sticky partitioner may skip some).
    let mut java = java_command().expect("java");
    java.arg("org.apache.kafka.tools.VerifiableProducer").args([
        "--topic",
        &topic,
        "--bootstrap-server",
        &bootstrap,
        "--max-messages",
        &MESSAGES.to_string(),
        "--throughput",
        "500",
        "--repeating-keys",
        "100",
    ]);
    let mut producer = Proc::spawn("java-verifiable-producer", java);

    sleep(Duration::from_millis(1500)).await;
    c0.kill();
    c0.wait(Duration::from_secs(30)).await;
    sleep(Duration::from_secs(1)).await;
    // The restarted member runs key-ordered (the producer's records have 100 keys); its ranges may
    // have gaps, so it prints record_data for an exact account of what it consumed.
    let mut c0b = consumer(
        "consumer-0-restarted-key-ordered",
        &[
            "--dispatch-mode",
            "key-ordered",
            "--max-in-flight",
            "16",
            "--processing-time-ms",
            "1",
            "--verbose",
        ],
    );
    sleep(Duration::from_millis(1500)).await;
    c1.terminate();
    let status = c1.wait(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "consumer-1 exited with {status}\n{}",
        diagnostics(&[&c1])
    );
    assert!(
        validate(&c1).summary.clean_shutdown,
        "consumer-1 printed no shutdown_complete after SIGTERM"
    );

    let status = producer.wait(Duration::from_secs(120)).await;
    assert!(
        status.success(),
        "the Java producer failed\n{}",
        diagnostics(&[&producer])
    );
    let (produced, errors) = acked(&producer.stdout());
    assert!(errors.is_empty(), "Java producer send errors: {errors:?}");
    assert_eq!(
        produced.len(),
        MESSAGES,
        "records acked by the Java producer"
    );
    let ends = log_end_offsets(&bootstrap, &topic, PARTITIONS).await;
    assert_eq!(ends.values().sum::<i64>(), MESSAGES as i64);
    assert!(
        ends.values().all(|&e| e > 0),
        "every partition has records: {ends:?}"
    );

    // Everything acked is consumed by someone (the killed member's unreported records included:
    // they are read again after its session expires).
    eventually(
        Duration::from_secs(90),
        "every produced record consumed",
        &[&c0, &c1, &c2, &c0b],
        || {
            let reports: Vec<Report> = [&c0, &c1, &c2, &c0b]
                .iter()
                .map(|c| verifiable::validate(&c.stream(), options(c)))
                .collect();
            let consumed = consumed_offsets(&reports.iter().collect::<Vec<_>>());
            produced.iter().all(|(p, o)| {
                consumed
                    .get(&TopicPartition::new(topic.as_str(), *p))
                    .is_some_and(|s| s.contains(o))
            })
        },
    )
    .await;

    c2.terminate();
    c0b.terminate();
    for c in [&mut c2, &mut c0b] {
        let status = c.wait(Duration::from_secs(60)).await;
        assert!(
            status.success(),
            "{} exited with {status}\n{}",
            c.name,
            diagnostics(&[c])
        );
    }

    let all = [&c0, &c1, &c2, &c0b];
    let reports: Vec<Report> = all.iter().map(|c| validate(c)).collect();
    assert!(
        !reports[0].summary.clean_shutdown,
        "the killed consumer cannot have shut down"
    );
    for (report, c) in reports.iter().zip(all).skip(1) {
        assert!(
            report.summary.clean_shutdown,
            "{} printed no shutdown_complete",
            c.name
        );
    }
    let refs: Vec<&Report> = reports.iter().collect();
    let group_violations = check_group(&refs);
    assert!(
        group_violations.is_empty(),
        "reads below an earlier commit: {:?}",
        group_violations
            .iter()
            .map(|(i, v)| format!("{}: {v}", all[*i].name))
            .collect::<Vec<_>>()
    );

    // The group's committed offsets are the log end offsets, as the streams say and as Kafka says.
    let committed = group_committed(&bootstrap, &group, &topic, PARTITIONS).await;
    assert_eq!(committed, ends, "committed offsets vs log end offsets");
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for report in &reports {
        for (tp, &offset) in &report.summary.last_committed {
            let e = last.entry(tp.partition).or_default();
            *e = (*e).max(offset);
        }
    }
    assert_eq!(
        last, ends,
        "highest offsets_committed per partition vs log end offsets"
    );
    let consumed: u64 = reports.iter().map(|r| r.summary.total_consumed()).sum();
    eprintln!(
        "produced {MESSAGES}, consumed {consumed} (duplicates {}), partitions_assigned events per process: {:?}",
        consumed - MESSAGES as u64,
        reports
            .iter()
            .map(|r| r.summary.assignments)
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifiable_producer_acks_match_the_log_and_max_messages_consumes_exactly_that_many() {
    let kafka = shared().await.expect("broker");
    let bootstrap = kafka.bootstrap();
    let topic = random_name("verifiable-producer");
    timeout(
        Duration::from_secs(60),
        create_topic(&bootstrap, &topic, 3, 1),
    )
    .await
    .expect("create topic timeout")
    .expect("create topic");
    let _ = timeout(
        Duration::from_secs(600),
        tokio::task::spawn_blocking(kafkit_bin),
    )
    .await
    .expect("building kafkit timed out");

    let mut producer = Proc::kafkit(
        "kafkit-verifiable-producer",
        &[
            "verifiable-producer",
            "--topic",
            &topic,
            "--bootstrap-server",
            &bootstrap,
            "--max-messages",
            "200",
            "--repeating-keys",
            "5",
            "--value-prefix",
            "7",
            "--throughput",
            "1000",
        ],
    );
    let status = producer.wait(Duration::from_secs(60)).await;
    assert!(status.success(), "{}", diagnostics(&[&producer]));
    let events: Vec<Value> = producer
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect();
    let names: Vec<&str> = events.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names.first(), Some(&"startup_complete"));
    assert_eq!(names[names.len() - 2..], ["shutdown_complete", "tool_data"]);
    let tool = events.last().unwrap();
    assert_eq!(
        (tool["sent"].as_u64(), tool["acked"].as_u64()),
        (Some(200), Some(200))
    );
    assert_eq!(tool["target_throughput"].as_i64(), Some(1000));
    assert!(events.iter().all(|e| e["timestamp"].as_u64().is_some()));

    // Each ack: value `7.<i>`, key `<i % 5>`, at the (partition, offset) the log holds it.
    let mut acked: BTreeMap<(i32, i64), (String, String)> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e["name"] == "producer_send_success")
    {
        assert_eq!(e["topic"], topic.as_str());
        let value = e["value"].as_str().unwrap().to_owned();
        let key = e["key"].as_str().unwrap().to_owned();
        let i: u64 = value.strip_prefix("7.").unwrap().parse().unwrap();
        assert_eq!(key, (i % 5).to_string());
        let at = (
            e["partition"].as_i64().unwrap() as i32,
            e["offset"].as_i64().unwrap(),
        );
        assert!(
            acked.insert(at, (key, value)).is_none(),
            "two acks for {at:?}"
        );
    }
    assert_eq!(acked.len(), 200);
    let client = timeout(
        Duration::from_secs(30),
        ClientBuilder::new(vec![bootstrap.clone()]).build(),
    )
    .await
    .unwrap()
    .unwrap();
    let mut log = BTreeMap::new();
    for p in 0..3 {
        let pc = client
            .partition_client(topic.as_str(), p, UnknownTopicHandling::Error)
            .await
            .unwrap();
        let mut offset = 0;
        loop {
            let (records, high_watermark) = timeout(
                Duration::from_secs(30),
                pc.fetch_records(offset, 1..1_000_000, 100),
            )
            .await
            .unwrap()
            .unwrap();
            for r in records {
                let text = |b: Option<Vec<u8>>| String::from_utf8(b.unwrap()).unwrap();
                offset = r.offset + 1;
                log.insert((p, r.offset), (text(r.record.key), text(r.record.value)));
            }
            if offset >= high_watermark {
                break;
            }
        }
    }
    assert_eq!(log, acked, "the log holds exactly the acked records");

    // A consumer told to read 150 of them reads exactly 150, commits them and stops by itself.
    let group = random_name("verifiable-max");
    let mut consumer = Proc::kafkit(
        "kafkit-verifiable-consumer",
        &[
            "verifiable-consumer",
            "--group-id",
            &group,
            "--topic",
            &topic,
            "--bootstrap-server",
            &bootstrap,
            "--max-messages",
            "150",
            "--verbose",
            "--assignment-strategy",
            "org.apache.kafka.clients.consumer.RoundRobinAssignor",
        ],
    );
    let status = consumer.wait(Duration::from_secs(60)).await;
    assert!(status.success(), "{}", diagnostics(&[&consumer]));
    let report = validate(&consumer);
    assert!(report.summary.clean_shutdown);
    assert_eq!(report.summary.total_consumed(), 150);
    let record_data = consumer
        .stdout()
        .lines()
        .filter(|l| l.contains(r#""name":"record_data""#))
        .count();
    assert_eq!(
        record_data, 150,
        "--verbose prints one record_data per record"
    );
    let committed = group_committed(&bootstrap, &group, &topic, 3).await;
    assert_eq!(
        committed.values().sum::<i64>(),
        150,
        "the group committed exactly what was consumed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_and_an_unreachable_broker_fail_with_one_line_on_stderr() {
    let _ = timeout(
        Duration::from_secs(600),
        tokio::task::spawn_blocking(kafkit_bin),
    )
    .await
    .expect("building kafkit timed out");
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "verifiable-producer",
                "--topic",
                "t",
                "--bootstrap-server",
                "localhost:9092",
                "--acks",
                "2",
            ],
            "-1, all, 1, 0",
        ),
        (
            &[
                "verifiable-consumer",
                "--topic",
                "t",
                "--bootstrap-server",
                "localhost:9092",
            ],
            "--group-id",
        ),
        (
            &[
                "verifiable-consumer",
                "--group-id",
                "g",
                "--topic",
                "t",
                "--bootstrap-server",
                "localhost:9092",
                "--group-protocol",
                "consumer",
                "--session-timeout",
                "10000",
            ],
            // The broker decides the session timeout under the consumer protocol (Java refuses
            // session.timeout.ms with group.protocol=consumer too).
            "session.timeout.ms",
        ),
        (
            &[
                "verifiable-consumer",
                "--group-id",
                "g",
                "--topic",
                "t",
                "--bootstrap-server",
                "127.0.0.1:1",
                "--connect-timeout-ms",
                "500",
            ],
            "no broker reachable",
        ),
        (
            &[
                "verifiable-producer",
                "--topic",
                "t",
                "--bootstrap-server",
                "127.0.0.1:1",
                "--connect-timeout-ms",
                "500",
            ],
            "no broker reachable",
        ),
    ];
    for (args, expected) in cases {
        let mut p = Proc::kafkit("kafkit", args);
        let status = p.wait(Duration::from_secs(30)).await;
        let stderr = p.stderr.lock().clone();
        assert!(!status.success(), "{args:?} succeeded");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            p.stdout().is_empty(),
            "{args:?} printed events: {}",
            p.stdout()
        );
    }
}
