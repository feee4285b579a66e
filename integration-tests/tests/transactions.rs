//! The transactional producer against a real broker: read_committed readers (kafkit's consumer
//! and Java's) see committed transactions whole and aborted ones not at all, read_uncommitted
//! readers see both and no control record as a record; a second producer with the same
//! transactional id fences the first; offsets sent to a transaction count only if it commits.
//! Transaction version 2 (KIP-890) is used where the broker finalizes it (Kafka 4.x), version 1
//! otherwise (`KAFKIT_KAFKA_VERSION=3.9.1`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kafkit::consumer::{ConsumerBuilder, ConsumerListener, OffsetReset, TransformConfig};
use kafkit::group::{ConsumerGroupMetadata, OffsetToCommit, TopicPartition};
use kafkit::{Error, Producer, ProducerBuilder, ProducerRecord, TransactionErrorKind};
use kafkit_integration_tests::support::{client, committed, eventually, test_group};
use kafkit_testkit::{create_topic, java_source, random_name, shared};
use parking_lot::Mutex;

const LIMIT: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 3;
/// Inputs per transaction in the exactly-once tests that kill members or a broker: small enough
/// that a kill lands mid-stream.
const MAX_RECORDS: usize = 20;

/// Held by the tests that kill members, copiers or a broker: on two cores, two of them at once
/// (with a second broker) starve each other past their time limits.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// kafkit's warnings (or what RUST_LOG asks for) in the output of a failing test.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("kafkit_core=warn")),
        )
        .with_test_writer()
        .try_init();
}

async fn transactional(bootstrap: &str, id: &str) -> Producer {
    logs();
    let producer = ProducerBuilder::new(client(bootstrap))
        .transactional_id(id)
        .max_block(Duration::from_secs(20))
        .build()
        .await
        .expect("producer connects");
    tokio::time::timeout(LIMIT, producer.init_transactions())
        .await
        .expect("init_transactions in time")
        .expect("init_transactions");
    producer
}

/// Sends `values` (keyed by their index, so they spread over the partitions) in the open
/// transaction, each send on its own task (running, as a send must before the commit waits for
/// it); returns the tasks.
fn send_all(
    producer: &Producer,
    topic: &str,
    values: Vec<String>,
) -> Vec<tokio::task::JoinHandle<kafkit::Result<kafkit::Delivery>>> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            tokio::spawn(producer.send(ProducerRecord::new(topic, v).key(format!("k-{i}"))))
        })
        .collect()
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// The values Java's consumer reads from `topic` with `isolation` (read_committed or
/// read_uncommitted), from the beginning to the end.
async fn java_read(bootstrap: &str, topic: &str, isolation: &str) -> Vec<String> {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("java/IsolatedRead.java");
    let out = java_source(
        &source,
        &[bootstrap, topic, isolation],
        Duration::from_secs(120),
    )
    .await
    .expect("java runs");
    assert!(
        out.success,
        "IsolatedRead {isolation} failed: {}",
        out.stderr
    );
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    let last = lines.pop().unwrap_or_default();
    let count: usize = last
        .strip_prefix("read ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected IsolatedRead output: {}", out.stdout));
    let values: Vec<String> = lines
        .iter()
        .map(|l| l.splitn(3, ' ').nth(2).unwrap_or_default().to_owned())
        .collect();
    assert_eq!(values.len(), count);
    values
}

/// The values kafkit's consumer (read_committed) hands out from `topic`, once `expected` arrived
/// and a further second brought nothing more.
async fn kafkit_read(bootstrap: &str, topic: &str, expected: usize) -> Vec<String> {
    kafkit_read_records(bootstrap, topic, expected)
        .await
        .into_iter()
        .map(|(_, _, value)| value)
        .collect()
}

/// As [`kafkit_read`], each value with its partition and offset.
async fn kafkit_read_records(
    bootstrap: &str,
    topic: &str,
    expected: usize,
) -> Vec<(i32, i64, String)> {
    let group = random_name("txn-reader");
    let consumer = ConsumerBuilder::new(client(bootstrap), test_group(&group, topic))
        .auto_offset_reset(OffsetReset::Earliest)
        .revoke_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let stop = consumer.shutdown_handle();
    let seen: Arc<Mutex<Vec<(i32, i64, String)>>> = Arc::default();
    let handled = Arc::clone(&seen);
    let run = tokio::spawn(consumer.run(move |record| {
        let handled = Arc::clone(&handled);
        async move {
            let value = String::from_utf8_lossy(record.value().unwrap_or_default()).into_owned();
            handled
                .lock()
                .push((record.partition(), record.offset(), value));
            Ok::<_, std::io::Error>(())
        }
    }));
    eventually(LIMIT, &format!("{expected} records read"), || {
        seen.lock().len() >= expected
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.shutdown();
    tokio::time::timeout(LIMIT, run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    seen.lock().clone()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_transactions_are_read_whole_and_aborted_ones_only_read_uncommitted() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("txn-visibility");
    create_topic(&bootstrap, &topic, PARTITIONS, 1)
        .await
        .unwrap();
    let producer = transactional(&bootstrap, &random_name("txn-id")).await;

    // 1: committed. Sends resolve once the commit's flush has them acknowledged.
    producer.begin_transaction().await.unwrap();
    let sends = send_all(&producer, &topic, values("committed-1", 30));
    producer.commit_transaction().await.unwrap();
    for send in sends {
        send.await
            .unwrap()
            .expect("a committed record is acknowledged");
    }

    // 2: written (flushed), then aborted: in the log, but under an ABORT marker.
    producer.begin_transaction().await.unwrap();
    let sends = send_all(&producer, &topic, values("aborted-2", 30));
    producer.flush().await.unwrap();
    producer.abort_transaction().await.unwrap();
    for send in sends {
        send.await
            .unwrap()
            .expect("flushed before the abort: written");
    }

    // 3: aborted at once: records not yet sent fail as aborted, the others were written.
    producer.begin_transaction().await.unwrap();
    let sends = send_all(&producer, &topic, values("aborted-3", 30));
    producer.abort_transaction().await.unwrap();
    let mut written_3 = Vec::new();
    for (i, send) in sends.into_iter().enumerate() {
        match send.await.unwrap() {
            Ok(_) => written_3.push(format!("aborted-3-{i}")),
            Err(e) => assert_eq!(
                e.transaction_kind(),
                Some(TransactionErrorKind::Abortable),
                "{e}"
            ),
        }
    }

    // 4: committed.
    producer.begin_transaction().await.unwrap();
    let sends = send_all(&producer, &topic, values("committed-4", 30));
    producer.commit_transaction().await.unwrap();
    for send in sends {
        send.await.unwrap().unwrap();
    }
    producer.close().await.unwrap();

    let committed: Vec<String> = sorted(
        values("committed-1", 30)
            .into_iter()
            .chain(values("committed-4", 30))
            .collect(),
    );
    let everything_written = sorted(
        committed
            .iter()
            .cloned()
            .chain(values("aborted-2", 30))
            .chain(written_3)
            .collect(),
    );
    assert_eq!(
        sorted(java_read(&bootstrap, &topic, "read_committed").await),
        committed,
        "Java read_committed: the committed transactions, whole"
    );
    assert_eq!(
        sorted(java_read(&bootstrap, &topic, "read_uncommitted").await),
        everything_written,
        "Java read_uncommitted: every record written, no control record"
    );
    assert_eq!(
        sorted(kafkit_read(&bootstrap, &topic, committed.len()).await),
        committed,
        "kafkit (read_committed) agrees with Java"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("txn-fencing");
    create_topic(&bootstrap, &topic, PARTITIONS, 1)
        .await
        .unwrap();
    let id = random_name("txn-id");
    let first = transactional(&bootstrap, &id).await;
    first.begin_transaction().await.unwrap();
    let sends = send_all(&first, &topic, values("first-committed", 10));
    first.commit_transaction().await.unwrap();
    for send in sends {
        send.await.unwrap().unwrap();
    }

    // The first producer opens a transaction and writes; then the second one initializes.
    first.begin_transaction().await.unwrap();
    let zombie = send_all(&first, &topic, values("zombie", 10));
    first.flush().await.unwrap();
    let second = transactional(&bootstrap, &id).await;

    let error = tokio::time::timeout(LIMIT, first.commit_transaction())
        .await
        .expect("commit answers in time")
        .expect_err("the fenced producer cannot commit");
    assert_eq!(
        error.transaction_kind(),
        Some(TransactionErrorKind::Fenced),
        "{error}"
    );
    assert!(error.to_string().contains("fenced"), "{error}");
    // Fatal: every later call fails the same way.
    let again = first.begin_transaction().await.unwrap_err();
    assert_eq!(again.transaction_kind(), Some(TransactionErrorKind::Fenced));
    assert!(matches!(
        first.send(ProducerRecord::new(&topic, "late")).await,
        Err(Error::Transaction { .. })
    ));
    for send in zombie {
        // Flushed before the fencing: written, then aborted by the coordinator.
        send.await.unwrap().unwrap();
    }

    second.begin_transaction().await.unwrap();
    let sends = send_all(&second, &topic, values("second-committed", 10));
    second.commit_transaction().await.unwrap();
    for send in sends {
        send.await.unwrap().unwrap();
    }

    let expected = sorted(
        values("first-committed", 10)
            .into_iter()
            .chain(values("second-committed", 10))
            .collect(),
    );
    assert_eq!(
        sorted(kafkit_read(&bootstrap, &topic, expected.len()).await),
        expected,
        "the zombie's transaction was aborted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_sent_to_a_transaction_are_committed_only_when_it_commits() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("txn-offsets");
    let output = random_name("txn-offsets-out");
    create_topic(&bootstrap, &topic, PARTITIONS, 1)
        .await
        .unwrap();
    create_topic(&bootstrap, &output, 1, 1).await.unwrap();
    let group = random_name("txn-offsets-g");
    let metadata = ConsumerGroupMetadata::standalone(&group);
    let producer = transactional(&bootstrap, &random_name("txn-id")).await;
    let tp = |p| TopicPartition::new(&topic, p);

    producer.begin_transaction().await.unwrap();
    let _ = send_all(&producer, &output, values("out-aborted", 3));
    producer
        .send_offsets_to_transaction([(tp(0), 5), (tp(1), 6)], &metadata)
        .await
        .unwrap();
    producer.abort_transaction().await.unwrap();
    assert_eq!(
        committed(&bootstrap, &group, &topic, PARTITIONS).await,
        BTreeMap::new(),
        "an aborted transaction commits no offsets"
    );

    producer.begin_transaction().await.unwrap();
    let sends = send_all(&producer, &output, values("out-committed", 3));
    producer
        .send_offsets_to_transaction([(tp(0), 7), (tp(2), 9)], &metadata)
        .await
        .unwrap();
    producer.commit_transaction().await.unwrap();
    for send in sends {
        send.await.unwrap().unwrap();
    }
    assert_eq!(
        committed(&bootstrap, &group, &topic, PARTITIONS).await,
        BTreeMap::from([(0, 7), (2, 9)]),
        "a committed transaction commits its offsets"
    );

    // Offsets alone (no record) are a transaction too.
    producer.begin_transaction().await.unwrap();
    producer
        .send_offsets_to_transaction([(tp(1), 3)], &metadata)
        .await
        .unwrap();
    producer.commit_transaction().await.unwrap();
    assert_eq!(
        committed(&bootstrap, &group, &topic, PARTITIONS).await,
        BTreeMap::from([(0, 7), (1, 3), (2, 9)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_out_of_order_and_bad_settings_get_clear_errors() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("txn-misuse");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();

    let refused = ProducerBuilder::new(client(&bootstrap))
        .transactional_id("t")
        .idempotence(false)
        .build()
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("enable.idempotence"),
        "{refused}"
    );
    let refused = ProducerBuilder::new(client(&bootstrap))
        .transactional_id("t")
        .transaction_timeout(Duration::ZERO)
        .build()
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("transaction.timeout.ms"),
        "{refused}"
    );

    let plain = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    let error = plain.begin_transaction().await.unwrap_err();
    assert_eq!(
        error.transaction_kind(),
        Some(TransactionErrorKind::InvalidState)
    );
    assert!(error.to_string().contains("no transactional.id"), "{error}");

    let producer = ProducerBuilder::new(client(&bootstrap))
        .transactional_id(random_name("txn-id"))
        .build()
        .await
        .unwrap();
    let before_init = producer.begin_transaction().await.unwrap_err();
    assert!(
        before_init.to_string().contains("init_transactions"),
        "{before_init}"
    );
    producer.init_transactions().await.unwrap();
    let outside = producer
        .send(ProducerRecord::new(&topic, "outside"))
        .await
        .unwrap_err();
    assert_eq!(
        outside.transaction_kind(),
        Some(TransactionErrorKind::InvalidState)
    );
    assert!(
        outside.to_string().contains("begin_transaction"),
        "{outside}"
    );
    let commit_outside = producer.commit_transaction().await.unwrap_err();
    assert_eq!(
        commit_outside.transaction_kind(),
        Some(TransactionErrorKind::InvalidState)
    );
    // An empty transaction commits without asking the coordinator anything.
    producer.begin_transaction().await.unwrap();
    producer.commit_transaction().await.unwrap();
    assert!(producer.transactional_id().is_some());
    assert_eq!(plain.transactional_id(), None);
}

/// One handler call's input records: (partition, offset).
type Batch = Vec<(i32, i64)>;

/// Each handler call's input records, of every exactly-once member.
#[derive(Clone, Default)]
struct Batches(Arc<Mutex<Vec<Batch>>>);

impl Batches {
    /// Records handled (a batch that ran again counts again).
    fn handled(&self) -> usize {
        self.0.lock().iter().map(Vec::len).sum()
    }

    /// The most records of one partition a batch held.
    fn most_of_one_partition(&self) -> usize {
        let batches = self.0.lock();
        let mut most = 0;
        for batch in batches.iter() {
            let mut per_partition: BTreeMap<i32, usize> = BTreeMap::new();
            for (p, _) in batch {
                *per_partition.entry(*p).or_default() += 1;
            }
            most = most.max(per_partition.into_values().max().unwrap_or(0));
        }
        most
    }
}

/// One exactly-once member: consumes `input` in `group`, writes "<partition>-<offset>" of each
/// input record to `output` in transactions of transactional id `id`, at most `max_records`
/// inputs each. Logs each batch in `batches`. Returns its shutdown handle and task (abort the
/// task to kill it: no leave, no abort).
/// Writes `n` inputs `in-<i>` keyed `k-<i>` to `input`; returns where each was written, in order.
async fn write_inputs(bootstrap: &str, input: &str, n: usize) -> Vec<kafkit::Delivery> {
    let plain = ProducerBuilder::new(client(bootstrap))
        .build()
        .await
        .unwrap();
    let sends: Vec<_> = (0..n)
        .map(|i| plain.send(ProducerRecord::new(input, format!("in-{i}")).key(format!("k-{i}"))))
        .collect();
    let written = futures::future::join_all(sends)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    plain.close().await.unwrap();
    written
}

/// Plain (non-transactional) commits the exactly-once members' engines began: there must be none,
/// only the transactions commit offsets.
static PLAIN_COMMITS: AtomicUsize = AtomicUsize::new(0);

struct CountPlainCommits;

impl ConsumerListener for CountPlainCommits {
    fn committing(&self, _offsets: &[OffsetToCommit]) {
        PLAIN_COMMITS.fetch_add(1, Ordering::Relaxed);
    }
}

async fn eos_member(
    bootstrap: &str,
    group: &str,
    input: &str,
    output: &str,
    id: &str,
    max_records: usize,
    batches: Batches,
) -> (
    kafkit::consumer::ShutdownHandle,
    tokio::task::JoinHandle<kafkit::Result<kafkit::consumer::ShutdownReport>>,
) {
    let producer = ProducerBuilder::new(client(bootstrap))
        .transactional_id(id)
        // Longer than the broker outage of `exactly_once_through_a_broker_crash`: a transaction
        // open longer than this is aborted by the coordinator, which fences the producer.
        .transaction_timeout(Duration::from_secs(60))
        .max_block(Duration::from_secs(20))
        .build()
        .await
        .unwrap();
    let consumer = ConsumerBuilder::new(client(bootstrap), test_group(group, input))
        .auto_offset_reset(OffsetReset::Earliest)
        .revoke_timeout(Duration::from_secs(10))
        .listener(Arc::new(CountPlainCommits))
        .build()
        .await
        .unwrap();
    let stop = consumer.shutdown_handle();
    let output = output.to_owned();
    let config = TransformConfig::new(producer).max_records(max_records);
    let task = tokio::spawn(consumer.run_transform(config, move |records| {
        let output = output.clone();
        batches.0.lock().push(
            records
                .iter()
                .map(|r| (r.partition(), r.offset()))
                .collect(),
        );
        async move {
            Ok::<_, std::io::Error>(
                records
                    .iter()
                    .map(|r| {
                        ProducerRecord::new(&output, format!("{}-{}", r.partition(), r.offset()))
                    })
                    .collect(),
            )
        }
    }));
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_a_member_kill_and_rebalances() {
    let _heavy = HEAVY.lock().await;
    logs();
    let bootstrap = shared().await.unwrap().bootstrap();
    let input = random_name("eos-in");
    let output = random_name("eos-out");
    create_topic(&bootstrap, &input, 4, 1).await.unwrap();
    create_topic(&bootstrap, &output, 2, 1).await.unwrap();
    const N: usize = 800;
    let expected: Vec<String> = write_inputs(&bootstrap, &input, N)
        .await
        .iter()
        .map(|d| format!("{}-{}", d.partition, d.offset))
        .collect();

    let group = random_name("eos-g");
    let batches = Batches::default();
    let progress = || batches.handled();
    let (_a_stop, a) = eos_member(
        &bootstrap,
        &group,
        &input,
        &output,
        "eos-a",
        MAX_RECORDS,
        batches.clone(),
    )
    .await;
    let (b_stop, b) = eos_member(
        &bootstrap,
        &group,
        &input,
        &output,
        "eos-b",
        MAX_RECORDS,
        batches.clone(),
    )
    .await;

    // Kill A mid-stream (no leave, transaction left open), then restart it under the same id,
    // which fences the dead one and aborts its transaction.
    eventually(LIMIT, "a quarter handled", || progress() >= N / 4).await;
    a.abort();
    let _ = a.await;
    let (a_stop, a) = eos_member(
        &bootstrap,
        &group,
        &input,
        &output,
        "eos-a",
        MAX_RECORDS,
        batches.clone(),
    )
    .await;

    // A third member joins and leaves: two more rebalances.
    eventually(LIMIT, "half handled", || progress() >= N / 2).await;
    let (c_stop, c) = eos_member(
        &bootstrap,
        &group,
        &input,
        &output,
        "eos-c",
        MAX_RECORDS,
        batches.clone(),
    )
    .await;
    eventually(LIMIT, "three quarters handled", || progress() >= 3 * N / 4).await;
    c_stop.shutdown();
    tokio::time::timeout(LIMIT, c)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let seen = kafkit_read(&bootstrap, &output, N).await;
    a_stop.shutdown();
    b_stop.shutdown();
    for task in [a, b] {
        tokio::time::timeout(LIMIT, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &seen {
        *counts.entry(v.as_str()).or_default() += 1;
    }
    let duplicates: Vec<_> = counts.iter().filter(|&(_, &n)| n > 1).collect();
    let missing: Vec<_> = expected
        .iter()
        .filter(|e| !counts.contains_key(e.as_str()))
        .collect();
    assert!(duplicates.is_empty(), "outputs seen twice: {duplicates:?}");
    assert!(missing.is_empty(), "inputs without output: {missing:?}");
    assert_eq!(seen.len(), N);
    assert!(
        progress() >= N,
        "handled {} for {N} inputs (more: retried or aborted batches)",
        progress()
    );
    assert!(
        batches.most_of_one_partition() > 1,
        "a transaction held several records of a partition"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_carries_many_consecutive_records_of_a_partition() {
    logs();
    let bootstrap = shared().await.unwrap().bootstrap();
    let input = random_name("eos-runs-in");
    let output = random_name("eos-runs-out");
    create_topic(&bootstrap, &input, 1, 1).await.unwrap();
    create_topic(&bootstrap, &output, 1, 1).await.unwrap();
    const N: usize = 300;
    const MAX: usize = 50;
    write_inputs(&bootstrap, &input, N).await;

    let group = random_name("eos-runs-g");
    let batches = Batches::default();
    let (stop, member) = eos_member(
        &bootstrap,
        &group,
        &input,
        &output,
        &random_name("eos-runs"),
        MAX,
        batches.clone(),
    )
    .await;
    let seen = kafkit_read_records(&bootstrap, &output, N).await;
    stop.shutdown();
    let report = tokio::time::timeout(LIMIT, member)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The transactions committed every offset; the engine sent none of its own.
    assert!(report.uncommitted.is_empty(), "{report:?}");
    assert_eq!(PLAIN_COMMITS.load(Ordering::Relaxed), 0);
    assert_eq!(
        committed(&bootstrap, &group, &input, 1).await,
        BTreeMap::from([(0, N as i64)])
    );

    // The handler's batches: runs of the one partition, in order, each input once (no batch
    // failed), full while the backlog lasts.
    let calls = batches.0.lock().clone();
    let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
    let handled: Vec<i64> = calls.iter().flatten().map(|&(_, o)| o).collect();
    assert_eq!(handled, (0..N as i64).collect::<Vec<_>>(), "{sizes:?}");
    assert!(sizes.iter().all(|&n| n <= MAX), "{sizes:?}");
    assert_eq!(sizes.iter().max(), Some(&MAX), "{sizes:?}");

    // The output, read_committed: each input once. Its offsets count the transactions: each
    // committed transaction's records are consecutive and its commit marker takes the next offset.
    let values: Vec<String> = seen.iter().map(|(_, _, v)| v.clone()).collect();
    let expected: Vec<String> = (0..N).map(|o| format!("0-{o}")).collect();
    assert_eq!(values, expected, "every input once, in order");
    let offsets: Vec<i64> = seen.iter().map(|&(_, o, _)| o).collect();
    let transactions = 1 + offsets.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert_eq!(
        transactions,
        calls.len(),
        "one committed transaction per batch: {sizes:?}, output offsets {offsets:?}"
    );
    assert!(
        transactions <= N / 2,
        "{transactions} transactions for {N} inputs: {sizes:?}"
    );
}

/// A `kafkit transactional-message-copier` process; its stdout lines are collected.
struct Copier {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Copier {
    /// A copier in `group`'s group mode (`partition` None), or of input partition `partition`
    /// alone (Java's assign mode, which never joins `group`).
    fn start(
        bootstrap: &str,
        group: &str,
        input: &str,
        output: &str,
        id: &str,
        partition: Option<i32>,
    ) -> Copier {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let input_partition = partition.unwrap_or(0).to_string();
        let mode: &[&str] = match partition {
            Some(_) => &[],
            None => &["--group-mode"],
        };
        let mut child = tokio::process::Command::new(kafkit_integration_tests::kafkit_bin())
            .args([
                "transactional-message-copier",
                "--broker-list",
                bootstrap,
                "--input-topic",
                input,
                "--input-partition",
                &input_partition,
                "--output-topic",
                output,
                "--transactional-id",
                id,
                "--consumer-group",
                group,
                "--transaction-size",
                "50",
                "--transaction-timeout",
                "10000",
                "--use-group-metadata",
                "--enable-random-aborts",
            ])
            .args(mode)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the kafkit binary starts");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let stderr: Arc<Mutex<String>> = Arc::default();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let into = Arc::clone(&lines);
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                into.lock().push(line);
            }
        });
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        let into = Arc::clone(&stderr);
        tokio::spawn(async move {
            while let Ok(Some(line)) = err.next_line().await {
                let mut text = into.lock();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Copier {
            child,
            lines,
            stderr,
        }
    }

    /// `totalProcessed` of the last progress line.
    fn processed(&self) -> u64 {
        self.lines
            .lock()
            .iter()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|v| v["totalProcessed"].as_u64())
            .unwrap_or(0)
    }

    /// `what`, with the copier's last lines of output, for a failure message.
    fn tail(&self, what: &str) -> String {
        let lines = self.lines.lock();
        format!(
            "{what}; last progress: {:?}; stderr: {}",
            lines.last(),
            self.stderr.lock()
        )
    }

    async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }

    async fn finish(mut self) -> Vec<String> {
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the copier did not finish: {}", self.stderr.lock()))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(status.success(), "copier failed: {}", self.stderr.lock());
        self.lines.lock().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copiers_killed_and_restarted_copy_every_record_once() {
    let _heavy = HEAVY.lock().await;
    let bootstrap = shared().await.unwrap().bootstrap();
    let input = random_name("copier-in");
    let output = random_name("copier-out");
    create_topic(&bootstrap, &input, 3, 1).await.unwrap();
    create_topic(&bootstrap, &output, 3, 1).await.unwrap();
    // Enough that each kill lands mid-copy: a transaction holds up to 50 records of a partition, so
    // a few hundred records are copied before a second copier has joined.
    const N: usize = 3000;
    write_inputs(&bootstrap, &input, N).await;
    let group = random_name("copier-g");
    let start = |id: &str| Copier::start(&bootstrap, &group, &input, &output, id, None);

    // copier-0 starts alone (it owns every partition until copier-1 joins) and is killed once it
    // has copied; copier-1 is killed once it has copied in the group they then share.
    let c0 = start("copier-0");
    kafkit_integration_tests::support::eventually_every(
        LIMIT,
        Duration::from_millis(100),
        || c0.tail("copier-0 copied 50"),
        || c0.processed() >= 50,
    )
    .await;
    let c1 = start("copier-1");
    c0.kill().await;
    let c0 = start("copier-0");
    kafkit_integration_tests::support::eventually_every(
        LIMIT,
        Duration::from_millis(100),
        || c1.tail("copier-1 copied 50"),
        || c1.processed() >= 50,
    )
    .await;
    c1.kill().await;
    let c1 = start("copier-1");

    let lines = c0.finish().await;
    c1.finish().await;
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let stages: BTreeSet<&str> = events.iter().filter_map(|e| e["stage"].as_str()).collect();
    assert!(
        stages.contains("ProcessLoop") && stages.contains("ShutdownComplete"),
        "{stages:?}"
    );
    for e in &events {
        assert_eq!(e["transactionalId"], "copier-0", "{e}");
        for field in ["time", "totalProcessed", "consumed", "remaining"] {
            assert!(!e[field].is_null(), "{field} missing: {e}");
        }
    }
    assert_eq!(events.last().unwrap()["remaining"], 0);

    let seen = sorted(kafkit_read(&bootstrap, &output, N).await);
    let expected = sorted((0..N).map(|i| format!("in-{i}")).collect());
    assert_eq!(seen, expected, "every input record copied exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_a_broker_crash() {
    let _heavy = HEAVY.lock().await;
    logs();
    // A broker of its own: this one is SIGKILLed.
    let kafka = kafkit_testkit::LocalKafka::start().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let input = random_name("eos-crash-in");
    let output = random_name("eos-crash-out");
    create_topic(&bootstrap, &input, 4, 1).await.unwrap();
    create_topic(&bootstrap, &output, 2, 1).await.unwrap();
    const N: usize = 600;
    let expected: Vec<String> = write_inputs(&bootstrap, &input, N)
        .await
        .iter()
        .map(|d| format!("{}-{}", d.partition, d.offset))
        .collect();

    let group = random_name("eos-crash-g");
    let batches = Batches::default();
    let progress = || batches.handled();
    let (a_stop, a) = eos_member(
        &bootstrap,
        &group,
        &input,
        &output,
        "eos-crash-a",
        MAX_RECORDS,
        batches.clone(),
    )
    .await;
    let (b_stop, b) = eos_member(
        &bootstrap,
        &group,
        &input,
        &output,
        "eos-crash-b",
        MAX_RECORDS,
        batches.clone(),
    )
    .await;
    eventually(LIMIT, "a third handled", || progress() >= N / 3).await;
    kafka.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    kafka.restart().await.unwrap();

    let seen = kafkit_read(&bootstrap, &output, N).await;
    a_stop.shutdown();
    b_stop.shutdown();
    for task in [a, b] {
        tokio::time::timeout(LIMIT, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    let distinct: BTreeSet<&String> = seen.iter().collect();
    let missing: Vec<_> = expected.iter().filter(|e| !distinct.contains(e)).collect();
    assert!(missing.is_empty(), "inputs without output: {missing:?}");
    assert_eq!(seen.len(), N, "no output twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copiers_of_assigned_partitions_killed_and_restarted_copy_every_record_once() {
    let _heavy = HEAVY.lock().await;
    let bootstrap = shared().await.unwrap().bootstrap();
    let input = random_name("assigned-copier-in");
    let output = random_name("assigned-copier-out");
    create_topic(&bootstrap, &input, 2, 1).await.unwrap();
    create_topic(&bootstrap, &output, 2, 1).await.unwrap();
    const N: usize = 200;
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for d in write_inputs(&bootstrap, &input, N).await {
        let end = ends.entry(d.partition).or_default();
        *end = (*end).max(d.offset + 1);
    }
    // One copier per input partition, both committing to one group they never join.
    let group = random_name("assigned-copier-g");
    let start = |p: i32| {
        let id = format!("assigned-copier-{p}");
        Copier::start(&bootstrap, &group, &input, &output, &id, Some(p))
    };
    let c0 = start(0);
    let c1 = start(1);
    kafkit_integration_tests::support::eventually_every(
        LIMIT,
        Duration::from_millis(100),
        || c0.tail("copier of partition 0 copied 20"),
        || c0.processed() >= 20,
    )
    .await;
    c0.kill().await;
    let c0 = start(0);
    c0.finish().await;
    c1.finish().await;

    let seen = sorted(kafkit_read(&bootstrap, &output, N).await);
    let expected = sorted((0..N).map(|i| format!("in-{i}")).collect());
    assert_eq!(seen, expected, "every input record copied exactly once");
    assert_eq!(
        committed(&bootstrap, &group, &input, 2).await,
        ends,
        "each copier committed its partition's end for the group"
    );
    let description = kafkit::admin::describe_group(&client(&bootstrap), &group)
        .await
        .unwrap();
    assert!(
        description.members.is_empty(),
        "the copiers never joined: {description:?}"
    );
}
