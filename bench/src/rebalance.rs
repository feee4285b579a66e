//! The rebalance benchmark: how long a group stops processing when a member joins, leaves or
//! crashes, under classic eager rebalancing (`range`), classic cooperative rebalancing
//! (`cooperative-sticky`) and the KIP-848 consumer protocol (`uniform`, assigned by the broker).
//!
//! Everything runs in the runner's process: a producer keeps a 30-partition topic fed at 2,000
//! records/s (each partition gets every 30th record, so about 67 a second, one every 15 ms), and
//! the members of one group are kafkit consumers running as tasks side by side, each with a
//! pass-through handler that notes, per partition, when it processed a record and which member did.
//! A listener on each member notes which partitions it owns and since when.
//!
//! Per protocol and group size N, per round, on a fresh group: N members start and the group
//! settles; one member shuts down gracefully (leave, N -> N-1); once settled, a new member starts
//! (join, N-1 -> N); once settled, one member's task is aborted (crash, N -> N-1: no LeaveGroup,
//! the broker notices only when its session expires). The group counts as settled when every
//! partition has exactly one live owner, the assignment is balanced (each live member owns
//! floor(30/M) or ceil(30/M) partitions) and every owner has processed a record of each of its
//! partitions since it was assigned it. Measured per event:
//!
//! - **all processing again**: from the event (the shutdown call, the new member's start, the
//!   abort) to the last partition's first record processed by its owner after the rebalance (0 for
//!   a partition that never changed hands);
//! - **longest gap**: the longest time any partition went without a record processed, from its last
//!   record before the event to the settle;
//! - **stopped**: how many partitions were revoked, or had another owner after the event than before
//!   (an eager rebalance stops all 30; an incremental one only those that move);
//! - **paused**: how many partitions went more than 250 ms without a processed record.
//!
//! Every rebalance restarts all members' heartbeat timers at once, so the wait before each event
//! (2 s and a share of 3 s) differs by round and event: the events land at spread points of the
//! heartbeat interval instead of always at the same one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafkit::admin::{self, NewTopic};
use kafkit::consumer::{ConsumerBuilder, ConsumerListener, DispatchMode, ShutdownHandle};
use kafkit::group::{
    CooperativeStickyAssignor, GroupConfig, GroupProtocol, RangeAssignor, TopicPartition,
};
use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord};

use crate::median;

/// Partitions of the topic: enough for 10 members to own 3 each.
const PARTITIONS: usize = 30;
/// Records produced per second, over every partition.
const RATE: u64 = 2_000;
/// A gap longer than this counts as the partition having paused.
const PAUSED: Duration = Duration::from_millis(250);
/// Quiet time after a settle, before the next event, at least.
const QUIET: Duration = Duration::from_secs(2);
/// The events land at spread points of this span after [`QUIET`]: a classic heartbeat interval
/// (3 s), three of the consumer protocol's (1 s).
const PHASES: Duration = Duration::from_secs(3);
/// Give up on a settle after this long.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Group sizes measured.
const SIZES: [usize; 2] = [3, 10];

/// The three ways a group rebalances.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    Eager,
    Cooperative,
    Consumer,
}

impl Protocol {
    const ALL: [Protocol; 3] = [Protocol::Eager, Protocol::Cooperative, Protocol::Consumer];

    fn name(self) -> &'static str {
        match self {
            Protocol::Eager => "classic `range` (eager)",
            Protocol::Cooperative => "classic `cooperative-sticky`",
            Protocol::Consumer => "consumer `uniform`",
        }
    }

    /// The group settings a user would write: classic members with a 10 s session and Java's 3 s
    /// heartbeat; consumer-protocol members leave both to the broker (kafkit-testkit: 10 s session,
    /// 1 s heartbeat).
    fn group(self, group: &str, topic: &str) -> GroupConfig {
        let classic = |g: GroupConfig| {
            g.session_timeout(Duration::from_secs(10))
                .heartbeat_interval(Duration::from_secs(3))
        };
        let g = GroupConfig::new(group, [topic]);
        match self {
            Protocol::Eager => classic(g).assignors(vec![Arc::new(RangeAssignor)]),
            Protocol::Cooperative => {
                classic(g).assignors(vec![Arc::new(CooperativeStickyAssignor)])
            }
            Protocol::Consumer => g
                .protocol(GroupProtocol::Consumer)
                .remote_assignor("uniform"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Leave,
    Join,
    Crash,
}

impl Event {
    fn label(self, n: usize) -> String {
        match self {
            Event::Leave => format!("leave ({n} → {})", n - 1),
            Event::Join => format!("join ({} → {n})", n - 1),
            Event::Crash => format!("crash ({n} → {})", n - 1),
        }
    }
}

/// What one event measured.
#[derive(Debug, Clone, Copy)]
struct Sample {
    resume_secs: f64,
    gap_secs: f64,
    paused: usize,
    /// Partitions revoked, or owned by another member after the event than before.
    stopped: usize,
}

/// What every member saw, shared.
#[derive(Debug, Default)]
struct State {
    /// Per partition: when a record was processed, and by which member (in time order).
    processed: Vec<Vec<(Instant, usize)>>,
    /// Per partition: the members that own it, each since when.
    owners: Vec<Vec<(usize, Instant)>>,
    /// Partitions revoked (or lost), and when.
    revoked: Vec<(Instant, usize)>,
}

type Shared = Arc<Mutex<State>>;

fn fresh_state() -> Shared {
    Arc::new(Mutex::new(State {
        processed: vec![Vec::new(); PARTITIONS],
        owners: vec![Vec::new(); PARTITIONS],
        revoked: Vec::new(),
    }))
}

struct Owners {
    member: usize,
    state: Shared,
}

impl ConsumerListener for Owners {
    fn assigned(&self, partitions: &[TopicPartition]) {
        let now = Instant::now();
        let mut s = self.state.lock().expect("state");
        for tp in partitions {
            let owners = &mut s.owners[tp.partition as usize];
            owners.retain(|(m, _)| *m != self.member);
            owners.push((self.member, now));
        }
    }

    fn revoked(&self, partitions: &[TopicPartition]) {
        self.drop_owned(partitions);
    }

    fn lost(&self, partitions: &[TopicPartition]) {
        self.drop_owned(partitions);
    }
}

impl Owners {
    fn drop_owned(&self, partitions: &[TopicPartition]) {
        let now = Instant::now();
        let mut s = self.state.lock().expect("state");
        for tp in partitions {
            s.owners[tp.partition as usize].retain(|(m, _)| *m != self.member);
            s.revoked.push((now, tp.partition as usize));
        }
    }
}

/// A running member.
struct Member {
    index: usize,
    stop: ShutdownHandle,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

async fn start_member(
    bootstrap: &str,
    topic: &str,
    group: &str,
    protocol: Protocol,
    index: usize,
    state: &Shared,
) -> Result<Member, Box<dyn std::error::Error>> {
    let consumer = ConsumerBuilder::new(
        ClientConfig::new([bootstrap])?,
        protocol.group(group, topic),
    )
    .dispatch(DispatchMode::PartitionOrdered)
    .listener(Arc::new(Owners {
        member: index,
        state: Arc::clone(state),
    }))
    .build()
    .await?;
    let stop = consumer.shutdown_handle();
    let state = Arc::clone(state);
    let task = tokio::spawn(async move {
        consumer
            .run(move |record| {
                let now = Instant::now();
                let mut s = state.lock().expect("state");
                s.processed[record.partition() as usize].push((now, index));
                std::future::ready(Ok::<_, std::io::Error>(()))
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    Ok(Member { index, stop, task })
}

/// Each partition's owner among `alive` (`None` if it has none, or more than one).
fn owners(s: &State, alive: &[usize]) -> Vec<Option<usize>> {
    s.owners
        .iter()
        .map(|o| {
            let mut live = o.iter().filter(|(m, _)| alive.contains(m));
            match (live.next(), live.next()) {
                (Some(&(m, _)), None) => Some(m),
                _ => None,
            }
        })
        .collect()
}

/// When the group is settled (see the module's docs) for `alive` members: the time the last
/// partition resumed under its current owner.
fn settled(s: &State, alive: &[usize]) -> Option<Instant> {
    let mut counts: BTreeMap<usize, usize> = alive.iter().map(|&m| (m, 0)).collect();
    let mut last = None::<Instant>;
    for p in 0..PARTITIONS {
        let mut owners = s.owners[p].iter().filter(|(m, _)| alive.contains(m));
        let &(owner, since) = owners.next()?;
        if owners.next().is_some() {
            return None;
        }
        let records = &s.processed[p];
        let from = records.partition_point(|(t, _)| *t < since);
        let &(resumed, _) = records[from..].iter().find(|(_, m)| *m == owner)?;
        *counts.get_mut(&owner)? += 1;
        last = Some(last.map_or(resumed, |l| l.max(resumed)));
    }
    let floor = PARTITIONS / alive.len();
    let ceil = floor + usize::from(!PARTITIONS.is_multiple_of(alive.len()));
    counts
        .values()
        .all(|c| (floor..=ceil).contains(c))
        .then_some(last)
        .flatten()
}

/// How long to wait before event `event` (0, 1, 2) of round `round` of `rounds`: [`QUIET`] and a
/// share of [`PHASES`] that differs by round and event. Every rebalance restarts the members'
/// heartbeat timers together, so a fixed wait would put every event at the same point of the
/// heartbeat interval (and measure the same share of it every time). The shares are spread over the
/// 3 s of a classic heartbeat interval and, modulo 1 s, over the consumer protocol's too (evenly
/// spaced points 1 s apart would all fall at the same point of a 1 s interval).
fn quiet((round, rounds): (usize, usize), event: usize) -> Duration {
    let r = rounds.max(1) as f64;
    let share = ((round as f64 * (1.0 + 1.0 / 3.0) + 0.5 + event as f64 / 3.0) / r).fract();
    QUIET + PHASES.mul_f64(share)
}

/// Waits until the group is settled for `alive`, then measures the event at `event`; `before` is
/// each partition's owner when it happened.
async fn measure(
    state: &Shared,
    alive: &[usize],
    event: Instant,
    before: &[Option<usize>],
) -> Result<Sample, String> {
    loop {
        {
            let s = state.lock().expect("state");
            if let Some(resumed) = settled(&s, alive) {
                let now = Instant::now();
                let mut gap = Duration::ZERO;
                let mut paused = 0;
                for records in &s.processed {
                    // From the last record before the event (or the event) to now.
                    let from = records.partition_point(|(t, _)| *t < event);
                    let mut prev = from.checked_sub(1).map_or(event, |i| records[i].0);
                    let mut longest = Duration::ZERO;
                    for &(t, _) in &records[from..] {
                        longest = longest.max(t.saturating_duration_since(prev));
                        prev = prev.max(t);
                    }
                    longest = longest.max(now.saturating_duration_since(prev));
                    gap = gap.max(longest);
                    paused += usize::from(longest > PAUSED);
                }
                let after = owners(&s, alive);
                let stopped = (0..PARTITIONS)
                    .filter(|&p| {
                        before.get(p).is_some_and(|b| *b != after[p])
                            || s.revoked.iter().any(|&(t, q)| q == p && t >= event)
                    })
                    .count();
                return Ok(Sample {
                    resume_secs: resumed.saturating_duration_since(event).as_secs_f64(),
                    gap_secs: gap.as_secs_f64(),
                    paused,
                    stopped,
                });
            }
        }
        if event.elapsed() > SETTLE_TIMEOUT {
            return Err(format!(
                "not settled {} s after the event",
                SETTLE_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Keeps `topic` fed at [`RATE`] records a second until aborted: each millisecond's records go to
/// the next partitions in turn, keyed over 1,000 keys. Counts failed sends in `failed`.
async fn feed(
    producer: kafkit::Producer,
    topic: String,
    failed: Arc<std::sync::atomic::AtomicU64>,
) {
    let per_tick = RATE / 1000;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    loop {
        tick.tick().await;
        for _ in 0..per_tick {
            let record = ProducerRecord::new(&topic, vec![b'x'; 100])
                .key(format!("key-{}", sent % 1000))
                .partition((sent % PARTITIONS as u64) as i32);
            let send = producer.send(record);
            let failed = Arc::clone(&failed);
            tokio::spawn(async move {
                if send.await.is_err() {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
            sent += 1;
        }
    }
}

/// One round of one protocol and group size: start, leave, join, crash. Each event's sample, or why
/// it failed.
async fn round(
    bootstrap: &str,
    topic: &str,
    protocol: Protocol,
    n: usize,
    tag: &str,
    phase: (usize, usize),
) -> Result<Vec<(Event, Result<Sample, String>)>, Box<dyn std::error::Error>> {
    let group = format!("bench-rebalance-{tag}");
    let state = fresh_state();
    let mut members = Vec::new();
    let starts = (0..n).map(|i| start_member(bootstrap, topic, &group, protocol, i, &state));
    for m in futures::future::join_all(starts).await {
        members.push(m?);
    }
    let mut alive: Vec<usize> = (0..n).collect();
    let started = Instant::now();
    measure(&state, &alive, started, &[])
        .await
        .map_err(|e| format!("{tag}: the group of {n} {e}"))?;
    eprintln!(
        "  {tag}: {n} members settled in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut out = Vec::new();

    // Leave: the last member shuts down gracefully.
    tokio::time::sleep(quiet(phase, 0)).await;
    let leaver = members.pop().expect("n >= 2");
    let before = owners(&state.lock().expect("state"), &alive);
    let event = Instant::now();
    leaver.stop.shutdown();
    alive.retain(|&m| m != leaver.index);
    let sample = measure(&state, &alive, event, &before).await;
    out.push((Event::Leave, sample));
    let _ = tokio::time::timeout(Duration::from_secs(30), leaver.task).await;

    // Join: a new member starts (building it, which connects, is part of joining).
    tokio::time::sleep(quiet(phase, 1)).await;
    let before = owners(&state.lock().expect("state"), &alive);
    let event = Instant::now();
    let joiner = start_member(bootstrap, topic, &group, protocol, n, &state).await?;
    alive.push(joiner.index);
    members.push(joiner);
    let sample = measure(&state, &alive, event, &before).await;
    out.push((Event::Join, sample));

    // Crash: the first member's task is aborted (its connections close; no LeaveGroup).
    if out.iter().all(|(_, s)| s.is_ok()) {
        tokio::time::sleep(quiet(phase, 2)).await;
        let crashed = members.remove(0);
        let before = owners(&state.lock().expect("state"), &alive);
        let event = Instant::now();
        crashed.task.abort();
        alive.retain(|&m| m != crashed.index);
        let _ = crashed.task.await;
        let sample = measure(&state, &alive, event, &before).await;
        out.push((Event::Crash, sample));
    }

    for m in &members {
        m.stop.shutdown();
    }
    for m in members {
        let _ = tokio::time::timeout(Duration::from_secs(30), m.task).await;
    }
    Ok(out)
}

/// Runs every protocol and size `rounds` times against `bootstrap` and returns the report section.
pub(crate) async fn run(
    client: &ClientConfig,
    bootstrap: &str,
    rounds: usize,
) -> Result<String, Box<dyn std::error::Error>> {
    let topic = format!("bench-rebalance-{}", kafkit_testkit::random_name("r"));
    admin::create_topics(
        client,
        &[NewTopic::new(&topic)
            .partitions(PARTITIONS as i32)
            .replication_factor(1)],
    )
    .await?;
    let producer = ProducerBuilder::new(client.clone())
        .linger(Duration::from_millis(1))
        .build()
        .await?;
    producer.partition_count(&topic).await?;
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let feeder = tokio::spawn(feed(producer.clone(), topic.clone(), Arc::clone(&failed)));
    // Let the feed reach its rate before the first group.
    tokio::time::sleep(Duration::from_secs(1)).await;

    type Key = (usize, usize, Event);
    let mut samples: BTreeMap<Key, Vec<Sample>> = BTreeMap::new();
    let mut failures: BTreeMap<Key, Vec<String>> = BTreeMap::new();
    let started = Instant::now();
    for round_no in 0..rounds {
        for (pi, &protocol) in Protocol::ALL.iter().enumerate() {
            for &n in &SIZES {
                let tag = format!("{pi}-{n}-{round_no}-{}", std::process::id());
                let phase = (round_no, rounds);
                for (event, sample) in round(bootstrap, &topic, protocol, n, &tag, phase).await? {
                    let key = (pi, n, event);
                    match sample {
                        Ok(s) => {
                            eprintln!(
                                "rebalance round {round_no} {} {}: all processing after {:.2} s, longest gap {:.2} s, {} partitions stopped, {} paused",
                                protocol.name(),
                                event.label(n),
                                s.resume_secs,
                                s.gap_secs,
                                s.stopped,
                                s.paused
                            );
                            samples.entry(key).or_default().push(s);
                        }
                        Err(e) => {
                            eprintln!(
                                "rebalance round {round_no} {} {}: {e}",
                                protocol.name(),
                                event.label(n)
                            );
                            failures.entry(key).or_default().push(e);
                        }
                    }
                }
            }
        }
    }
    feeder.abort();
    producer.close().await?;
    admin::delete_topics(client, &[topic]).await?;

    let mut out = format!(
        "### rebalance: {PARTITIONS} partitions fed at {RATE} records/s, members as tasks in one process, {rounds} rounds ({:.0} s)\n\n\
         | protocol | members | event | all partitions processing again, s (median) | min–max | longest partition gap, s (median) | min–max | partitions stopped (median) | paused > {} ms (median) |\n\
         | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        started.elapsed().as_secs_f64(),
        PAUSED.as_millis()
    );
    let spread = |v: &[f64]| {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        format!("{min:.2}–{max:.2}")
    };
    for (pi, protocol) in Protocol::ALL.iter().enumerate() {
        for &n in &SIZES {
            for event in [Event::Leave, Event::Join, Event::Crash] {
                let key = (pi, n, event);
                let got = samples.get(&key).cloned().unwrap_or_default();
                let failed_here = failures.get(&key).map_or(0, Vec::len);
                if got.is_empty() && failed_here == 0 {
                    continue;
                }
                let resume: Vec<f64> = got.iter().map(|s| s.resume_secs).collect();
                let gap: Vec<f64> = got.iter().map(|s| s.gap_secs).collect();
                let paused: Vec<f64> = got.iter().map(|s| s.paused as f64).collect();
                let stopped: Vec<f64> = got.iter().map(|s| s.stopped as f64).collect();
                let note = if failed_here > 0 {
                    format!(
                        " ({failed_here} of {} not settled)",
                        failed_here + got.len()
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "| {} | {n} | {}{note} | {:.2} | {} | {:.2} | {} | {:.0} | {:.0} |",
                    protocol.name(),
                    event.label(n),
                    median(resume.clone()),
                    spread(&resume),
                    median(gap.clone()),
                    spread(&gap),
                    median(stopped),
                    median(paused),
                );
            }
        }
    }
    let lost = failed.load(std::sync::atomic::Ordering::Relaxed);
    if lost > 0 {
        let _ = writeln!(out, "\n{lost} sends of the feed failed.");
    }
    out.push('\n');
    Ok(out)
}
