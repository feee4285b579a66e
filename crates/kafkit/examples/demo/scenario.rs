//! The demo's scenario: what `main.rs` runs, and what the integration test `tests/demo.rs` runs at a
//! smaller size (it includes this file with `#[path]`), so CI checks exactly what a user sees.
//!
//! Keyed orders are produced continuously by kafkit's producer; three members of one consumer group
//! process them in `KeyOrdered` mode with a slow handler; one member is killed mid-way (its task is
//! aborted: no final commit, no LeaveGroup), and the group rebalances once the coordinator notices
//! (`session.timeout.ms`). Then three checks, each of which can fail:
//! - **per-key order**: no record starts before the previous record of its key has finished;
//! - **every acknowledged record processed**: each record the broker acknowledged to the producer was
//!   processed at least once;
//! - **duplicates only within the uncommitted window**: a record processed twice is one the killed
//!   member had processed past the group's last commit of its partition before it died.

#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafkit::consumer::{
    BoxError, ConsumedRecord, ConsumerBuilder, ConsumerListener, DispatchMode, OffsetReset,
    ShutdownHandle, ShutdownReport,
};
use kafkit::group::{CommitReport, GroupConfig, TopicPartition};
use kafkit::metrics::{Metrics, MetricsConfig, MetricsSnapshot};
use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord};
use kafkit_testkit::{create_topic, random_name};
use parking_lot::Mutex;
use tokio::task::{JoinHandle, JoinSet};

/// Members of the group; the second one (`m2`) is killed.
const MEMBERS: usize = 3;
const KILLED: usize = 1;
/// How often each member commits what it finished (`auto.commit.interval.ms` in Java).
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// How big and how long the demo is.
#[derive(Debug, Clone)]
pub(crate) struct DemoConfig {
    /// Where the cluster is.
    pub(crate) bootstrap: String,
    /// Partitions of the orders topic.
    pub(crate) partitions: i32,
    /// Distinct keys (customers).
    pub(crate) keys: u32,
    /// Orders produced per second.
    pub(crate) rate: u32,
    /// How long orders are produced.
    pub(crate) produce_for: Duration,
    /// When `m2` is killed, counted from the start of production.
    pub(crate) kill_after: Duration,
    /// The handler's mean time per record (each takes 0.5 to 1.5 times this).
    pub(crate) handler_time: Duration,
    /// `session.timeout.ms` of the members: how long the group takes to notice the killed one.
    pub(crate) session_timeout: Duration,
    /// Redraw the progress line in place (a terminal); otherwise one line per second.
    pub(crate) live: bool,
}

impl DemoConfig {
    /// The full-size demo against `bootstrap`, about 18 seconds.
    pub(crate) fn new(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            partitions: 6,
            keys: 30,
            rate: 300,
            produce_for: Duration::from_secs(14),
            kill_after: Duration::from_secs(5),
            handler_time: Duration::from_millis(5),
            // The broker's default minimum, so the demo runs on any cluster.
            session_timeout: Duration::from_secs(6),
            live: false,
        }
    }

    /// [`new`](Self::new) with `KAFKIT_DEMO_SECONDS` (production time, at least 10 s: the killed
    /// member must be noticed while orders still come) and `KAFKIT_DEMO_RATE` (orders per second).
    #[allow(dead_code)] // main.rs reads the environment; the integration test sets sizes itself
    pub(crate) fn from_env(bootstrap: impl Into<String>) -> Result<Self, String> {
        let mut config = Self::new(bootstrap);
        if let Ok(v) = std::env::var("KAFKIT_DEMO_SECONDS") {
            let seconds: u64 = v
                .parse()
                .map_err(|e| format!("KAFKIT_DEMO_SECONDS={v:?}: {e}"))?;
            if !(10..=600).contains(&seconds) {
                return Err(format!("KAFKIT_DEMO_SECONDS={v}: must be in 10..=600"));
            }
            config.produce_for = Duration::from_secs(seconds);
            config.kill_after = Duration::from_secs(seconds / 3);
        }
        if let Ok(v) = std::env::var("KAFKIT_DEMO_RATE") {
            let rate: u32 = v
                .parse()
                .map_err(|e| format!("KAFKIT_DEMO_RATE={v:?}: {e}"))?;
            if !(1..=20_000).contains(&rate) {
                return Err(format!("KAFKIT_DEMO_RATE={v}: must be in 1..=20000"));
            }
            config.rate = rate;
        }
        Ok(config)
    }
}

/// What the checks found.
#[derive(Debug)]
pub(crate) struct DemoOutcome {
    /// Records the broker acknowledged to the producer.
    pub(crate) acknowledged: usize,
    /// Acknowledged records never processed.
    pub(crate) missing: usize,
    /// Records processed, counting repeats.
    pub(crate) processed: usize,
    /// Repeated processings.
    pub(crate) duplicates: usize,
    /// Records the killed member processed past the group's last commit before it died: the
    /// at-least-once bound on duplicates.
    pub(crate) window: usize,
    /// Duplicates outside that window (must be 0).
    pub(crate) outside_window: usize,
    /// Records started before the previous record of their key had finished (must be 0).
    pub(crate) order_violations: usize,
    /// Whether the group rebalanced after the kill and the survivors took over every partition.
    pub(crate) took_over: bool,
    /// The metrics at the end.
    pub(crate) snapshot: Arc<MetricsSnapshot>,
}

impl DemoOutcome {
    /// Every check held.
    pub(crate) fn passed(&self) -> bool {
        self.missing == 0
            && self.outside_window == 0
            && self.order_violations == 0
            && self.took_over
            && self.acknowledged > 0
    }
}

/// What each member does, for the progress view.
#[derive(Debug, Default)]
struct MemberView {
    owned: BTreeSet<i32>,
    killed: bool,
    /// When a commit of this member last succeeded.
    last_commit: Option<Instant>,
}

/// Everything the handlers, listeners, producer and progress view share. One std-style mutex
/// (parking_lot): every critical section is a few map operations and nothing is awaited in one.
#[derive(Debug, Default)]
struct State {
    members: Vec<MemberView>,
    /// Per partition, the highest offset a commit confirmed (from the members' listeners).
    committed: BTreeMap<i32, i64>,
    /// Per partition, one past the highest acknowledged offset (the log end, as far as we wrote it).
    ends: BTreeMap<i32, i64>,
    /// Records acknowledged by the broker: (partition, offset).
    acknowledged: HashSet<(i32, i64)>,
    /// Per key, the sequence numbers whose processing finished (at least once).
    finished: HashMap<Vec<u8>, HashSet<u64>>,
    /// Every finished processing: (member, partition, offset).
    processings: Vec<(usize, i32, i64)>,
    /// Records acknowledged by the broker: (key, sequence number).
    acknowledged_seqs: HashSet<(Vec<u8>, u64)>,
    /// Records started before the previous one of their key had finished: (key, seq, what).
    /// Only those whose previous record was acknowledged count (a failed send leaves a gap).
    order_violations: Vec<(Vec<u8>, u64, String)>,
    /// Group events to print, in order.
    events: Vec<String>,
}

/// A member's consumer task, aborted if dropped (the demo never leaves a task behind).
struct Member {
    task: Option<JoinHandle<kafkit::Result<ShutdownReport>>>,
    stop: ShutdownHandle,
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Tells the shared state what the member's consumer did with its partitions and commits.
struct Listener {
    member: usize,
    started: Instant,
    state: Arc<Mutex<State>>,
}

impl Listener {
    fn event(&self, state: &mut State, what: &str, partitions: &[TopicPartition]) {
        let list: Vec<String> = partitions
            .iter()
            .map(|tp| format!("p{}", tp.partition))
            .collect();
        state.events.push(format!(
            "{:>5.1}s  m{} {what} {}",
            self.started.elapsed().as_secs_f64(),
            self.member + 1,
            list.join(" ")
        ));
    }
}

impl ConsumerListener for Listener {
    fn assigned(&self, partitions: &[TopicPartition]) {
        let mut state = self.state.lock();
        let owned = &mut state.members[self.member].owned;
        owned.extend(partitions.iter().map(|tp| tp.partition));
        self.event(&mut state, "assigned", partitions);
    }

    fn revoked(&self, partitions: &[TopicPartition]) {
        let mut state = self.state.lock();
        for tp in partitions {
            state.members[self.member].owned.remove(&tp.partition);
        }
        self.event(&mut state, "revoked (committed first)", partitions);
    }

    fn lost(&self, partitions: &[TopicPartition]) {
        let mut state = self.state.lock();
        for tp in partitions {
            state.members[self.member].owned.remove(&tp.partition);
        }
        self.event(&mut state, "lost", partitions);
    }

    fn committed(&self, result: &kafkit::Result<CommitReport>) {
        if let Ok(report) = result {
            let mut state = self.state.lock();
            if !report.committed.is_empty() {
                state.members[self.member].last_commit = Some(Instant::now());
            }
            for (tp, offset) in &report.committed {
                let entry = state.committed.entry(tp.partition).or_insert(*offset);
                *entry = (*entry).max(*offset);
            }
        }
    }
}

/// Runs the demo, printing as it goes; the outcome says whether the checks held.
pub(crate) async fn run(config: DemoConfig) -> Result<DemoOutcome, BoxError> {
    let topic = random_name("demo-orders");
    let group = random_name("demo-billing");
    create_topic(&config.bootstrap, &topic, config.partitions, 1).await?;
    let client = ClientConfig::new([&config.bootstrap])?.client_id("kafkit-demo");
    let metrics = Metrics::new(MetricsConfig::default());

    println!(
        "kafkit demo: {MEMBERS} consumers in group {group}, KeyOrdered, a slow handler (~{:?}/record)",
        config.handler_time
    );
    println!(
        "  topic {topic}: {} partitions, {} keys, {} orders/s for {:?}; m2 is killed at {:?}",
        config.partitions, config.keys, config.rate, config.produce_for, config.kill_after
    );

    let started = Instant::now();
    let state = Arc::new(Mutex::new(State {
        members: (0..MEMBERS).map(|_| MemberView::default()).collect(),
        ..State::default()
    }));

    let mut members = Vec::with_capacity(MEMBERS);
    for member in 0..MEMBERS {
        members.push(
            start_member(
                &config, &client, &group, &topic, &metrics, &state, member, started,
            )
            .await?,
        );
    }

    let producer = ProducerBuilder::new(client.clone())
        .metrics(metrics.clone())
        .build()
        .await?;
    let mut production = JoinSet::new();
    production.spawn(produce(
        producer.clone(),
        topic.clone(),
        config.clone(),
        Arc::clone(&state),
    ));

    print_header();
    let mut progress = Progress::new(config.live);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // The group's committed offsets when m2 died: its uncommitted window starts there.
    let mut committed_at_kill: Option<BTreeMap<i32, i64>> = None;
    let mut production_done = false;
    let deadline = config.produce_for + config.session_timeout + Duration::from_secs(30);
    let mut last_processed = 0u64;
    let mut last_tick = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            done = production.join_next(), if !production_done => {
                production_done = true;
                done.ok_or("the producer task is gone")???;
                // Drawn at the next tick, a second after the last one.
                continue;
            }
        }
        if committed_at_kill.is_none() && started.elapsed() >= config.kill_after {
            // Killed most of a commit interval after its last commit, as a crash usually lands:
            // what it finished since then is its uncommitted window.
            let last_commit = state.lock().members[KILLED].last_commit;
            if let Some(at) = last_commit {
                let wait = (COMMIT_INTERVAL * 7 / 10).saturating_sub(at.elapsed());
                tokio::time::sleep(wait).await;
            }
            let mut member = members[KILLED].task.take().ok_or("m2 already gone")?;
            member.abort();
            // Wait until it is really gone: nothing of it runs or commits after this.
            let _ = (&mut member).await;
            let mut s = state.lock();
            s.members[KILLED].killed = true;
            s.members[KILLED].owned.clear();
            let committed = s.committed.clone();
            let since = s.members[KILLED].last_commit.map_or_else(
                || "before any commit".to_owned(),
                |at| format!("{:.1}s after its last commit", at.elapsed().as_secs_f64()),
            );
            s.events.push(format!(
                "{:5.1}s  m2 KILLED {since} (aborted: no final commit, no LeaveGroup); noticed within session.timeout.ms = {:?}",
                started.elapsed().as_secs_f64(),
                config.session_timeout
            ));
            committed_at_kill = Some(committed);
        }

        let snapshot = metrics.publish();
        let now = Instant::now();
        let processed = snapshot.totals.processed;
        let rate = (processed - last_processed) as f64 / (now - last_tick).as_secs_f64();
        (last_processed, last_tick) = (processed, now);
        let caught_up = {
            let mut s = state.lock();
            progress.draw(&mut s, started, processed, rate);
            production_done
                && s.members[KILLED].killed
                && s.owned_by_survivors().len() == config.partitions as usize
                && s.everything_processed()
        };
        if caught_up {
            break;
        }
        if started.elapsed() > deadline {
            progress.finish();
            println!(
                "!! gave up waiting after {deadline:?}: acknowledged records are still unprocessed"
            );
            break;
        }
    }
    progress.finish();

    // Let the survivors' next periodic commit land, so the final lag is what is really committed.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(3) && !state.lock().all_committed() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The consumers sample lag for the metrics at each commit tick, before committing: one more
    // tick and the snapshot shows the final commits.
    tokio::time::sleep(COMMIT_INTERVAL + Duration::from_millis(200)).await;
    let snapshot = metrics.publish();
    let elapsed = started.elapsed();
    let committed_at_kill = committed_at_kill.ok_or("m2 was never killed")?;
    // Checked before the survivors shut down (which revokes their partitions).
    let outcome = check(
        &state.lock(),
        &committed_at_kill,
        snapshot,
        config.partitions,
    );

    for (i, member) in members.iter().enumerate() {
        if i != KILLED {
            member.stop.shutdown();
        }
    }
    for (i, member) in members.iter_mut().enumerate() {
        if let Some(task) = member.task.take() {
            match tokio::time::timeout(Duration::from_secs(15), task).await {
                Ok(Ok(Ok(_report))) => {}
                Ok(Ok(Err(e))) => println!("m{} stopped with an error: {e}", i + 1),
                Ok(Err(e)) => println!("m{} task failed: {e}", i + 1),
                Err(_) => println!("m{} did not stop within 15 s", i + 1),
            }
        }
    }
    producer.close().await?;

    print_checks(&outcome, &state.lock());
    print_metrics(&outcome.snapshot, &group, elapsed, config.produce_for);
    Ok(outcome)
}

impl State {
    /// Every acknowledged record was processed at least once.
    fn everything_processed(&self) -> bool {
        let done: HashSet<(i32, i64)> = self.processings.iter().map(|&(_, p, o)| (p, o)).collect();
        self.acknowledged.iter().all(|r| done.contains(r))
    }

    /// The order violations that count: the previous record of the key was acknowledged.
    fn counted_order_violations(&self) -> impl Iterator<Item = &str> {
        self.order_violations
            .iter()
            .filter(|(key, seq, _)| self.acknowledged_seqs.contains(&(key.clone(), seq - 1)))
            .map(|(_, _, what)| what.as_str())
    }

    /// The partitions the members still alive own.
    fn owned_by_survivors(&self) -> BTreeSet<i32> {
        self.members
            .iter()
            .filter(|m| !m.killed)
            .flat_map(|m| m.owned.iter().copied())
            .collect()
    }

    /// Every partition's commit reached the last acknowledged offset.
    fn all_committed(&self) -> bool {
        self.ends
            .iter()
            .all(|(p, end)| self.committed.get(p).is_some_and(|c| c >= end))
    }
}

#[allow(clippy::too_many_arguments)]
async fn start_member(
    config: &DemoConfig,
    client: &ClientConfig,
    group: &str,
    topic: &str,
    metrics: &Metrics,
    state: &Arc<Mutex<State>>,
    member: usize,
    started: Instant,
) -> Result<Member, BoxError> {
    let listener = Arc::new(Listener {
        member,
        started,
        state: Arc::clone(state),
    });
    let consumer = ConsumerBuilder::new(
        client.clone(),
        GroupConfig::new(group, [topic])
            .session_timeout(config.session_timeout)
            .heartbeat_interval(Duration::from_millis(500)),
    )
    .dispatch(DispatchMode::KeyOrdered { max_in_flight: 8 })
    .auto_offset_reset(OffsetReset::Earliest)
    .commit_interval(COMMIT_INTERVAL)
    .metrics(metrics.clone())
    .listener(listener)
    .build()
    .await?;
    let stop = consumer.shutdown_handle();
    let state = Arc::clone(state);
    let handler_time = config.handler_time;
    let task = tokio::spawn(consumer.run(move |record: ConsumedRecord| {
        let state = Arc::clone(&state);
        async move { handle(member, record, handler_time, &state).await }
    }));
    Ok(Member {
        task: Some(task),
        stop,
    })
}

/// The slow handler: checks per-key order when it starts, takes its time, records that it finished.
async fn handle(
    member: usize,
    record: ConsumedRecord,
    handler_time: Duration,
    state: &Mutex<State>,
) -> Result<(), BoxError> {
    let key = record.key().unwrap_or_default().to_vec();
    let seq: u64 = std::str::from_utf8(record.value().unwrap_or_default())?.parse()?;
    {
        let mut s = state.lock();
        let previous_done =
            seq == 0 || s.finished.get(&key).is_some_and(|f| f.contains(&(seq - 1)));
        if !previous_done {
            let violation = format!(
                "m{} started {} #{seq} (p{} @{}) before #{} had finished",
                member + 1,
                String::from_utf8_lossy(&key),
                record.partition(),
                record.offset(),
                seq - 1
            );
            s.order_violations.push((key.clone(), seq, violation));
        }
    }
    // 0.5x to 1.5x the mean, varying by record.
    let factor = 50 + (record.offset() as u64 * 37 + seq * 11) % 101;
    tokio::time::sleep(handler_time * factor as u32 / 100).await;
    let mut s = state.lock();
    s.finished.entry(key).or_default().insert(seq);
    s.processings
        .push((member, record.partition(), record.offset()));
    Ok(())
}

/// Produces `config.rate` orders a second for `config.produce_for`: key `customer-K`, value the
/// order's sequence number within its key. Every acknowledged record is noted in the state.
async fn produce(
    producer: kafkit::Producer,
    topic: String,
    config: DemoConfig,
    state: Arc<Mutex<State>>,
) -> Result<(), BoxError> {
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut sends = JoinSet::new();
    let mut sent: u64 = 0;
    let mut failures = 0usize;
    type Sent = (Vec<u8>, u64, kafkit::Result<kafkit::Delivery>);
    let mut note = |result: Result<Sent, tokio::task::JoinError>| match result {
        Ok((key, seq, Ok(delivery))) => {
            let mut s = state.lock();
            s.acknowledged.insert((delivery.partition, delivery.offset));
            s.acknowledged_seqs.insert((key, seq));
            let end = s.ends.entry(delivery.partition).or_default();
            *end = (*end).max(delivery.offset + 1);
        }
        Ok((_, _, Err(_))) | Err(_) => failures += 1,
    };
    while started.elapsed() < config.produce_for {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * f64::from(config.rate)) as u64;
        while sent < due {
            let key = sent % u64::from(config.keys);
            let seq = sent / u64::from(config.keys);
            let key = format!("customer-{key:02}").into_bytes();
            let record = ProducerRecord::new(&topic, seq.to_string()).key(key.clone());
            let producer = producer.clone();
            sends.spawn(async move { (key, seq, producer.send(record).await) });
            sent += 1;
        }
        while let Some(result) = sends.try_join_next() {
            note(result);
        }
    }
    while let Some(result) = sends.join_next().await {
        note(result);
    }
    if failures > 0 {
        // Not acknowledged, so not required to be processed; worth saying all the same.
        state
            .lock()
            .events
            .push(format!("{failures} sends failed (not acknowledged)"));
    }
    Ok(())
}

/// The progress view: a line per second, or one line redrawn in place on a terminal.
struct Progress {
    live: bool,
    drawn: bool,
}

impl Progress {
    fn new(live: bool) -> Self {
        Self { live, drawn: false }
    }

    fn draw(&mut self, s: &mut State, started: Instant, processed: u64, rate: f64) {
        let mut out = std::io::stdout().lock();
        if self.live && self.drawn {
            // Back to the start of the status line and clear it.
            let _ = write!(out, "\r\x1b[2K");
        }
        for event in s.events.drain(..) {
            let _ = writeln!(out, "  {event}");
        }
        let alive = s.members.iter().filter(|m| !m.killed).count();
        let owned: Vec<String> = s
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if m.killed {
                    format!("m{}[killed]", i + 1)
                } else {
                    let parts: Vec<String> = m.owned.iter().map(|p| p.to_string()).collect();
                    format!("m{}[{}]", i + 1, parts.join(","))
                }
            })
            .collect();
        let produced = s.acknowledged.len();
        let lag: i64 = s
            .ends
            .iter()
            .map(|(p, end)| end - s.committed.get(p).copied().unwrap_or(0))
            .sum();
        let line = format!(
            "{:>6} {:>7}  {:<28} {produced:>8} {processed:>9} {rate:>6.0} {lag:>6}",
            format!("{:.1}s", started.elapsed().as_secs_f64()),
            format!("{alive}/{MEMBERS}"),
            owned.join(" ")
        );
        if self.live {
            let _ = write!(out, "  {line}");
        } else {
            let _ = writeln!(out, "  {line}");
        }
        let _ = out.flush();
        self.drawn = true;
    }

    fn finish(&mut self) {
        if self.live && self.drawn {
            println!();
        }
        self.drawn = false;
    }
}

fn print_header() {
    println!();
    println!(
        "  {:>6} {:>7}  {:<28} {:>8} {:>9} {:>6} {:>6}",
        "time", "members", "partitions owned", "produced", "processed", "proc/s", "lag"
    );
}

fn check(
    state: &State,
    committed_at_kill: &BTreeMap<i32, i64>,
    snapshot: Arc<MetricsSnapshot>,
    partitions: i32,
) -> DemoOutcome {
    let mut times: HashMap<(i32, i64), usize> = HashMap::new();
    for &(_, p, o) in &state.processings {
        *times.entry((p, o)).or_default() += 1;
    }
    let missing = state
        .acknowledged
        .iter()
        .filter(|r| !times.contains_key(r))
        .count();
    let duplicates: usize = times.values().map(|n| n - 1).sum();
    // The killed member's processings past the last commit of their partition before it died.
    let window: HashSet<(i32, i64)> = state
        .processings
        .iter()
        .filter(|&&(m, p, o)| m == KILLED && o >= committed_at_kill.get(&p).copied().unwrap_or(0))
        .map(|&(_, p, o)| (p, o))
        .collect();
    let outside_window: usize = times
        .iter()
        .filter(|(r, n)| **n > 1 && !window.contains(r))
        .map(|(_, n)| n - 1)
        .sum();
    let took_over =
        state.members[KILLED].killed && state.owned_by_survivors().len() == partitions as usize;
    DemoOutcome {
        acknowledged: state.acknowledged.len(),
        missing,
        processed: state.processings.len(),
        duplicates,
        window: window.len(),
        outside_window,
        order_violations: state.counted_order_violations().count(),
        took_over,
        snapshot,
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok  " } else { "FAIL" }
}

fn print_checks(o: &DemoOutcome, state: &State) {
    let keys = state.finished.len();
    println!();
    println!("checks");
    println!(
        "  [{}] per-key order: {} processings of {keys} keys; {} started before the previous record of its key finished",
        verdict(o.order_violations == 0),
        o.processed,
        o.order_violations
    );
    for v in state.counted_order_violations().take(5) {
        println!("         {v}");
    }
    println!(
        "  [{}] every acknowledged record processed: {} acknowledged by the broker, {} never processed",
        verdict(o.missing == 0 && o.acknowledged > 0),
        o.acknowledged,
        o.missing
    );
    println!(
        "  [{}] duplicates: {} records processed twice, {} of them outside m2's uncommitted window",
        verdict(o.outside_window == 0),
        o.duplicates,
        o.outside_window,
    );
    println!(
        "         (the window: {} records m2 finished after its partitions' last commit, before it died)",
        o.window
    );
    println!(
        "  [{}] rebalance: the survivors own every partition after m2 died",
        verdict(o.took_over)
    );
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1} ms", d.as_secs_f64() * 1e3),
    )
}

fn print_metrics(s: &MetricsSnapshot, group: &str, elapsed: Duration, produce_for: Duration) {
    println!();
    println!("metrics snapshot (kafkit-metrics; the same numbers /metrics exports)");
    println!(
        "  {:<24} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "topic",
        "produced/s",
        "processed/s",
        "hdl p50",
        "hdl p99",
        "prod p50",
        "prod p99",
        "commits"
    );
    for t in &s.topics {
        let c = &t.counters;
        println!(
            "  {:<24} {:>10.0} {:>11.0} {:>9} {:>9} {:>9} {:>9} {:>8}",
            t.topic,
            c.produced as f64 / produce_for.as_secs_f64(),
            c.processed as f64 / elapsed.as_secs_f64(),
            ms(t.process_time.p50),
            ms(t.process_time.p99),
            ms(t.produce_time.p50),
            ms(t.produce_time.p99),
            c.commits,
        );
    }
    if let Some(g) = s.group(group) {
        println!(
            "  group {group}: {} rebalances seen by its members, lag {}",
            g.rebalances, g.lag
        );
    }
    println!(
        "  {:>9} {:>14} {:>10} {:>6}",
        "partition", "log end", "committed", "lag"
    );
    for p in s.partitions.iter().filter(|p| *p.group == *group) {
        println!(
            "  {:>9} {:>14} {:>10} {:>6}",
            p.partition, p.high_watermark, p.committed_offset, p.lag
        );
    }
}

/// The checks themselves fail when they should (run by the integration test, which includes this
/// file).
#[cfg(test)]
mod tests {
    use super::*;

    /// m1 and the killed m2; m2 processed p0 offsets 0..4 and the group had committed 2 when it died.
    fn state() -> State {
        let mut s = State {
            members: (0..MEMBERS).map(|_| MemberView::default()).collect(),
            ..State::default()
        };
        s.members[KILLED].killed = true;
        s.members[0].owned.extend(0..2);
        for offset in 0..4 {
            s.acknowledged.insert((0, offset));
            s.acknowledged_seqs.insert((b"k".to_vec(), offset as u64));
            s.processings.push((KILLED, 0, offset));
        }
        s
    }

    fn outcome(s: &State) -> DemoOutcome {
        let committed = BTreeMap::from([(0, 2)]);
        check(
            s,
            &committed,
            Arc::new(Metrics::default().publish().as_ref().clone()),
            2,
        )
    }

    #[test]
    fn redelivery_within_the_window_passes() {
        let mut s = state();
        s.processings.extend([(0, 0, 2), (0, 0, 3)]);
        let o = outcome(&s);
        assert!(o.passed(), "{o:#?}");
        assert_eq!((o.duplicates, o.window, o.outside_window), (2, 2, 0));
    }

    #[test]
    fn a_duplicate_below_the_commit_fails() {
        let mut s = state();
        s.processings.extend([(0, 0, 1), (0, 0, 2), (0, 0, 3)]);
        let o = outcome(&s);
        assert!(!o.passed());
        assert_eq!((o.duplicates, o.outside_window), (3, 1));
    }

    #[test]
    fn a_missing_record_fails() {
        let mut s = state();
        s.acknowledged.insert((1, 0));
        let o = outcome(&s);
        assert!(!o.passed());
        assert_eq!(o.missing, 1);
    }

    #[test]
    fn an_order_violation_fails_unless_the_previous_send_failed() {
        let mut s = state();
        s.order_violations
            .push((b"k".to_vec(), 3, "k #3 early".into()));
        assert!(!outcome(&s).passed());
        s.acknowledged_seqs.remove(&(b"k".to_vec(), 2));
        assert!(outcome(&s).passed());
    }

    #[test]
    fn survivors_must_own_every_partition() {
        let mut s = state();
        s.members[0].owned.remove(&1);
        assert!(!outcome(&s).took_over);
    }
}
