//! The group state machine: one task per member, one loop you can read top to bottom.
//!
//! ```text
//!   ┌──────────────► (eager: revoke all) ──► JoinGroup ──► SyncGroup ──► apply assignment
//!   │                                            ▲    (leader assigns)        │
//!   │ rejoin (REBALANCE_IN_PROGRESS,             └── MEMBER_ID_REQUIRED        ▼
//!   │  cooperative revocation done,                                    heartbeat every
//!   │  generation/member errors -> lost)  ◄──────────────────────────  heartbeat.interval
//!   └──────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The loop runs on its own task, so heartbeats never wait for record handlers. It tells the consumer
//! what changed through [`GroupEvent`]s on an unbounded channel (sending never blocks the loop). A
//! revocation waits for the consumer to finish with the partitions (drain, commit) while heartbeats
//! keep going, bounded by the rebalance timeout.
//!
//! Invariants enforced here:
//! - a commit is sent only for partitions this member owns in its current generation, with that
//!   generation and member id ([`GroupMember::commit`] checks under the state lock);
//! - a committed offset for a partition never goes backwards while this member owns it;
//! - lost partitions (session expired, fenced, generation gone) are taken out of the owned set before
//!   the consumer is told, so no commit for them can be sent afterwards.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest,
    OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::coordinator::{Coordinator, describe};
use super::{
    Assignment, Assignor, GroupConfig, MemberSubscription, RebalanceProtocol, Subscription,
    TopicPartition,
};
use crate::{ClientConfig, Error, Result};

/// What changed in this member's ownership. The consumer acts on each in order.
#[derive(Debug)]
#[non_exhaustive]
pub enum GroupEvent {
    /// These partitions are now owned by this member in `generation`: start fetching them.
    Assigned {
        /// The group generation of the assignment.
        generation: i32,
        /// The partitions newly owned.
        partitions: Vec<TopicPartition>,
    },
    /// These partitions must be given up. Stop dispatching their records, let in-flight ones finish,
    /// commit, then call [`RevokeDone::done`] (or drop it). Heartbeats continue meanwhile; the member
    /// waits at most the rebalance timeout.
    Revoked {
        /// The partitions to release.
        partitions: Vec<TopicPartition>,
        /// Signals that the consumer is done with them.
        done: RevokeDone,
    },
    /// These partitions were lost without a chance to commit (session expired, member fenced,
    /// generation gone). Another member may already own them: abandon their records, commit nothing.
    Lost {
        /// The partitions lost.
        partitions: Vec<TopicPartition>,
        /// Why.
        reason: String,
    },
    /// The member stopped for good (a non-retriable group error); it owns nothing.
    Failed {
        /// The error.
        error: Error,
    },
}

/// Handed out with [`GroupEvent::Revoked`]; the member waits for it before releasing the partitions.
#[derive(Debug)]
pub struct RevokeDone(Option<oneshot::Sender<()>>);

impl RevokeDone {
    /// The consumer has drained and committed the revoked partitions.
    pub fn done(mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// One partition's offset to commit: the next offset to read (last processed + 1), as Kafka stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetToCommit {
    /// The partition.
    pub partition: TopicPartition,
    /// The next offset to read.
    pub offset: i64,
    /// Free-form metadata stored with the offset (bounded by the broker's `offset.metadata.max.bytes`).
    pub metadata: Option<String>,
}

/// What a commit did, partition by partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Committed now.
    pub committed: Vec<(TopicPartition, i64)>,
    /// Not sent: this member does not own the partition in its current generation.
    pub not_owned: Vec<TopicPartition>,
    /// Not sent: the offset is not above what this member already committed.
    pub not_advanced: Vec<TopicPartition>,
    /// Rejected by the coordinator, with Kafka's error name.
    pub failed: Vec<(TopicPartition, String)>,
}

/// An offset committed for a partition, as OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset to read.
    pub offset: i64,
    /// The metadata stored with it.
    pub metadata: Option<String>,
}

/// This member's view of its membership. Written by the member task, read by commit and status calls.
#[derive(Debug, Default)]
struct MemberState {
    member_id: String,
    /// -1 when not in a generation.
    generation: i32,
    protocol: Option<String>,
    leader: bool,
    owned: BTreeSet<TopicPartition>,
    /// Last offset committed by this member per owned partition (never moves backwards).
    committed: HashMap<TopicPartition, i64>,
    last_heartbeat: Option<Instant>,
    /// Whether the coordinator answered the last group request.
    coordinator_reachable: bool,
}

#[derive(Debug)]
struct Shared {
    config: GroupConfig,
    coordinator: Coordinator,
    /// parking_lot Mutex: short critical sections, never held across an await.
    state: parking_lot::Mutex<MemberState>,
}

/// A point-in-time view of the membership, for health checks and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipStatus {
    /// The member id the coordinator gave this member ("" before the first join).
    pub member_id: String,
    /// The current generation, `None` while not in one.
    pub generation: Option<i32>,
    /// The assignor the group chose.
    pub protocol: Option<String>,
    /// Whether this member computed the last assignment.
    pub leader: bool,
    /// The partitions owned now.
    pub assignment: Vec<TopicPartition>,
    /// When the last heartbeat succeeded.
    pub last_heartbeat: Option<std::time::Instant>,
    /// Whether the coordinator answered the last group request.
    pub coordinator_reachable: bool,
}

/// A running member of a consumer group. Dropping it stops the member task without leaving the group
/// (as a crash would); [`close`](Self::close) leaves cleanly.
#[derive(Debug)]
pub struct GroupMember {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl GroupMember {
    /// Validates `config` and starts the member task, which joins the group. Ownership changes arrive
    /// on the returned channel.
    pub fn start(
        client: &ClientConfig,
        config: GroupConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<GroupEvent>)> {
        config.validate()?;
        let coordinator = Coordinator::new(
            config.group_id.clone(),
            client.bootstrap().to_vec(),
            client.client_id_str().to_owned(),
            config.request_timeout,
            client.reconnect_backoff_policy(),
        );
        let shared = Arc::new(Shared {
            config,
            coordinator,
            state: parking_lot::Mutex::new(MemberState {
                generation: -1,
                ..MemberState::default()
            }),
        });
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(run(Arc::clone(&shared), events_tx, shutdown_rx));
        Ok((
            Self {
                shared,
                shutdown: shutdown_tx,
                task: Some(task),
            },
            events_rx,
        ))
    }

    /// The group id.
    pub fn group_id(&self) -> &str {
        &self.shared.config.group_id
    }

    /// The membership as it is now.
    pub fn status(&self) -> MembershipStatus {
        let s = self.shared.state.lock();
        MembershipStatus {
            member_id: s.member_id.clone(),
            generation: (s.generation >= 0).then_some(s.generation),
            protocol: s.protocol.clone(),
            leader: s.leader,
            assignment: s.owned.iter().cloned().collect(),
            last_heartbeat: s.last_heartbeat.map(Instant::into_std),
            coordinator_reachable: s.coordinator_reachable,
        }
    }

    /// Starts leaving the group without waiting: the same steps as [`close`](Self::close); the event
    /// channel closes when the member is done.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Leaves the group: the consumer gets a final [`GroupEvent::Revoked`] for everything owned (to
    /// commit), then LeaveGroup is sent (not for static members, whose point is to come back) and the
    /// task ends. Returns when the task has ended.
    pub async fn close(mut self) -> Result<()> {
        self.shutdown();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        Ok(())
    }

    /// Commits `offsets` with the current generation and member id. Partitions not owned in the current
    /// generation, and offsets not above this member's last commit for the partition, are not sent and
    /// are listed in the report. Retriable coordinator errors are retried until the request timeout.
    pub async fn commit(&self, offsets: &[OffsetToCommit]) -> Result<CommitReport> {
        let shared = &self.shared;
        let mut report = CommitReport::default();
        let (generation, member_id, to_send) = {
            let state = shared.state.lock();
            let mut to_send = Vec::new();
            for o in offsets {
                if state.generation < 0 || !state.owned.contains(&o.partition) {
                    report.not_owned.push(o.partition.clone());
                } else if state
                    .committed
                    .get(&o.partition)
                    .is_some_and(|&c| o.offset <= c)
                {
                    report.not_advanced.push(o.partition.clone());
                } else {
                    to_send.push(o.clone());
                }
            }
            (state.generation, state.member_id.clone(), to_send)
        };
        if !report.not_owned.is_empty() {
            warn!(group = %shared.config.group_id, partitions = ?report.not_owned, "commit skipped for partitions not owned");
        }
        if to_send.is_empty() {
            return Ok(report);
        }
        let mut by_topic: BTreeMap<&str, Vec<&OffsetToCommit>> = BTreeMap::new();
        for o in &to_send {
            by_topic
                .entry(o.partition.topic.as_str())
                .or_default()
                .push(o);
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(group_id(&shared.config.group_id))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(StrBytes::from_string(member_id))
            .with_group_instance_id(
                shared
                    .config
                    .group_instance_id
                    .clone()
                    .map(StrBytes::from_string),
            )
            .with_retention_time_ms(-1)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(topic, parts)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                            .with_partitions(
                                parts
                                    .into_iter()
                                    .map(|o| {
                                        OffsetCommitRequestPartition::default()
                                            .with_partition_index(o.partition.partition)
                                            .with_committed_offset(o.offset)
                                            .with_committed_leader_epoch(-1)
                                            .with_committed_metadata(
                                                o.metadata.clone().map(StrBytes::from_string),
                                            )
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let deadline = Instant::now() + shared.config.request_timeout;
        let mut backoff = shared.config.retry_backoff.start();
        let response = loop {
            let attempt = shared
                .coordinator
                .send(&request, shared.config.request_timeout, deadline)
                .await;
            match attempt {
                Ok((conn, response)) => {
                    // A coordinator move is reported per partition; retry the whole commit on it.
                    let moved = response.topics.iter().flat_map(|t| &t.partitions).any(|p| {
                        matches!(
                            ResponseError::try_from_code(p.error_code),
                            Some(
                                ResponseError::NotCoordinator
                                    | ResponseError::CoordinatorNotAvailable
                            )
                        )
                    });
                    if moved && Instant::now() < deadline {
                        shared.coordinator.invalidate(&conn);
                    } else {
                        break response;
                    }
                }
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    debug!(group = %shared.config.group_id, error = %e, "commit retry");
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(backoff.next_delay()).await;
        };
        let sent: HashMap<(String, i32), i64> = to_send
            .iter()
            .map(|o| ((o.partition.topic.clone(), o.partition.partition), o.offset))
            .collect();
        let mut state = shared.state.lock();
        for topic in response.topics {
            let name = topic.name.0.to_string();
            for p in topic.partitions {
                let tp = TopicPartition::new(name.clone(), p.partition_index);
                let offset = sent
                    .get(&(name.clone(), p.partition_index))
                    .copied()
                    .unwrap_or(-1);
                match ResponseError::try_from_code(p.error_code) {
                    None => {
                        // Still owned in the same generation? Then remember the high mark.
                        if state.generation == generation && state.owned.contains(&tp) {
                            let entry = state.committed.entry(tp.clone()).or_insert(offset);
                            *entry = (*entry).max(offset);
                        }
                        report.committed.push((tp, offset));
                    }
                    Some(err) => report.failed.push((tp, format!("{err:?}"))),
                }
            }
        }
        if !report.failed.is_empty() {
            warn!(group = %shared.config.group_id, generation, failed = ?report.failed, "commit partly rejected");
        }
        Ok(report)
    }

    /// The committed offsets of `partitions` for this group (`None`: nothing committed). Uses
    /// `require_stable`, so offsets of pending transactions are waited for. Also records them as this
    /// member's commit floor for partitions it owns, so its commits never go below them.
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<CommittedOffset>>> {
        let shared = &self.shared;
        let result = fetch_committed(shared, partitions).await?;
        let mut state = shared.state.lock();
        for (tp, c) in &result {
            if let Some(c) = c
                && state.owned.contains(tp)
            {
                let entry = state.committed.entry(tp.clone()).or_insert(c.offset);
                *entry = (*entry).max(c.offset);
            }
        }
        Ok(result)
    }
}

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_owned()))
}

async fn fetch_committed(
    shared: &Shared,
    partitions: &[TopicPartition],
) -> Result<HashMap<TopicPartition, Option<CommittedOffset>>> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        by_topic
            .entry(tp.topic.as_str())
            .or_default()
            .push(tp.partition);
    }
    let request = OffsetFetchRequest::default()
        .with_group_id(group_id(&shared.config.group_id))
        .with_require_stable(true)
        .with_topics(Some(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_owned())))
                        .with_partition_indexes(ps)
                })
                .collect(),
        ));
    let deadline = Instant::now() + shared.config.request_timeout;
    let mut backoff = shared.config.retry_backoff.start();
    loop {
        let outcome: Result<()> = match shared
            .coordinator
            .send(&request, shared.config.request_timeout, deadline)
            .await
        {
            Ok((conn, response)) => {
                let group_error = ResponseError::try_from_code(response.error_code);
                let partition_error = response
                    .topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .find_map(|p| ResponseError::try_from_code(p.error_code));
                match group_error.or(partition_error) {
                    None => {
                        let mut out = HashMap::new();
                        for t in response.topics {
                            for p in t.partitions {
                                let tp =
                                    TopicPartition::new(t.name.0.to_string(), p.partition_index);
                                let c = (p.committed_offset >= 0).then(|| CommittedOffset {
                                    offset: p.committed_offset,
                                    metadata: p
                                        .metadata
                                        .map(|m| m.to_string())
                                        .filter(|m| !m.is_empty()),
                                });
                                out.insert(tp, c);
                            }
                        }
                        return Ok(out);
                    }
                    Some(err) => {
                        if matches!(
                            err,
                            ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable
                        ) {
                            shared.coordinator.invalidate(&conn);
                        }
                        Err(Error::Group {
                            group: shared.config.group_id.clone(),
                            operation: "OffsetFetch",
                            code: err.code(),
                            error: format!("{err:?}"),
                        })
                    }
                }
            }
            Err(e) => Err(e),
        };
        match outcome {
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(backoff.next_delay()).await
            }
            Err(e) => return Err(e),
            Ok(()) => unreachable!("success returns above"),
        }
    }
}

/// How a step of the loop ended, when it did not simply succeed.
enum Step {
    /// Try again after backoff.
    Retry(String),
    /// Try again now (a new member id or a rebalance that just started).
    Again(String),
    /// The member cannot continue.
    Fatal(Error),
}

/// What the heartbeat phase ended with.
enum HeartbeatExit {
    Rejoin(String),
    Lost(String),
    Shutdown,
    Fatal(Error),
}

/// The member task.
async fn run(
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<GroupEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = &shared.config;
    let group = config.group_id.clone();
    let eager = config.rebalance_protocol() == RebalanceProtocol::Eager;
    let mut backoff = config.retry_backoff.start();
    let mut reason = String::from("joining");
    loop {
        if *shutdown.borrow() {
            break;
        }
        if eager {
            let owned: Vec<TopicPartition> = shared.state.lock().owned.iter().cloned().collect();
            if !owned.is_empty() {
                revoke(&shared, &events, owned, &mut shutdown).await;
            }
        }
        let joined = tokio::select! {
            r = join_and_sync(&shared, &reason) => r,
            _ = shutdown.changed() => break,
        };
        let assignment = match joined {
            Ok(a) => a,
            Err(Step::Again(why)) => {
                reason = why;
                continue;
            }
            Err(Step::Retry(why)) => {
                let delay = backoff.next_delay();
                debug!(%group, reason = %why, ?delay, "rejoin after backoff");
                reason = why;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = shutdown.changed() => break,
                }
            }
            Err(Step::Fatal(error)) => {
                fail(&shared, &events, error);
                return;
            }
        };
        backoff.reset();

        // Apply the assignment: what is new is assigned; what is gone (cooperative) is revoked, then
        // the member rejoins so the partitions can move on.
        let (generation, newly, gone) = {
            let mut state = shared.state.lock();
            let new: BTreeSet<TopicPartition> = assignment.into_iter().collect();
            let newly: Vec<_> = new.difference(&state.owned).cloned().collect();
            let gone: Vec<_> = state.owned.difference(&new).cloned().collect();
            state.owned.extend(newly.iter().cloned());
            state.last_heartbeat = Some(Instant::now());
            (state.generation, newly, gone)
        };
        info!(%group, generation, assigned = ?newly, revoking = ?gone, "assignment received");
        if !newly.is_empty() {
            let _ = events.send(GroupEvent::Assigned {
                generation,
                partitions: newly,
            });
        }
        if !gone.is_empty() {
            revoke(&shared, &events, gone, &mut shutdown).await;
            reason = String::from("cooperative rebalance: revoked partitions can move");
            continue;
        }

        match heartbeat_until_change(&shared, &mut shutdown).await {
            HeartbeatExit::Rejoin(why) => reason = why,
            HeartbeatExit::Lost(why) => {
                lose(&shared, &events, &why);
                reason = why;
            }
            HeartbeatExit::Shutdown => break,
            HeartbeatExit::Fatal(error) => {
                fail(&shared, &events, error);
                return;
            }
        }
    }
    leave(&shared, &events).await;
}

/// Final revocation (so the consumer commits), then LeaveGroup unless the member is static.
async fn leave(shared: &Shared, events: &mpsc::UnboundedSender<GroupEvent>) {
    let config = &shared.config;
    let owned: Vec<TopicPartition> = shared.state.lock().owned.iter().cloned().collect();
    if !owned.is_empty() {
        let (_never, mut no_shutdown) = watch::channel(false);
        revoke(shared, events, owned, &mut no_shutdown).await;
    }
    let member_id = shared.state.lock().member_id.clone();
    if config.group_instance_id.is_none() && !member_id.is_empty() {
        // v3+ names leaving members in `members` only; the top-level member id is v0..v2 (setting it
        // at a newer version fails to encode).
        let request = LeaveGroupRequest::default()
            .with_group_id(group_id(&config.group_id))
            .with_members(vec![
                MemberIdentity::default()
                    .with_member_id(StrBytes::from_string(member_id.clone()))
                    .with_reason(Some(StrBytes::from_static_str("the consumer is closing"))),
            ]);
        let deadline = Instant::now() + config.request_timeout;
        match shared
            .coordinator
            .send(&request, config.request_timeout, deadline)
            .await
        {
            Ok((_, r)) if r.error_code == 0 => {
                info!(group = %config.group_id, %member_id, "left the group")
            }
            Ok((_, r)) => {
                warn!(group = %config.group_id, code = r.error_code, "LeaveGroup rejected")
            }
            Err(e) => {
                warn!(group = %config.group_id, error = %e, "LeaveGroup failed; the session timeout will expel the member")
            }
        }
    }
    let mut state = shared.state.lock();
    state.generation = -1;
    state.owned.clear();
    state.committed.clear();
}

/// Tells the consumer to release `partitions` and waits until it has (or the rebalance timeout
/// passes), heartbeating meanwhile. The partitions stay owned (committable) until the consumer is done.
async fn revoke(
    shared: &Shared,
    events: &mpsc::UnboundedSender<GroupEvent>,
    partitions: Vec<TopicPartition>,
    shutdown: &mut watch::Receiver<bool>,
) {
    let group = &shared.config.group_id;
    info!(%group, partitions = ?partitions, "revoking");
    let (tx, rx) = oneshot::channel();
    if events
        .send(GroupEvent::Revoked {
            partitions: partitions.clone(),
            done: RevokeDone(Some(tx)),
        })
        .is_ok()
    {
        let deadline = tokio::time::sleep(shared.config.rebalance_timeout);
        tokio::pin!(deadline, rx);
        let mut tick = tokio::time::interval(shared.config.heartbeat_interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut rx => break,
                _ = &mut deadline => {
                    warn!(%group, "revocation not finished within the rebalance timeout; releasing anyway");
                    break;
                }
                _ = tick.tick() => {
                    // Keep the session alive while the consumer drains. A rebalance in progress is
                    // expected here; lost membership is handled after the revocation.
                    let _ = heartbeat_once(shared).await;
                }
                _ = shutdown.changed() => {}
            }
        }
    }
    let mut state = shared.state.lock();
    for tp in &partitions {
        state.owned.remove(tp);
        state.committed.remove(tp);
    }
}

/// The partitions are gone without a commit: take them out of the owned set first (so no commit can
/// be sent for them), forget the generation, then tell the consumer.
fn lose(shared: &Shared, events: &mpsc::UnboundedSender<GroupEvent>, reason: &str) {
    let lost: Vec<TopicPartition> = {
        let mut state = shared.state.lock();
        state.generation = -1;
        state.committed.clear();
        std::mem::take(&mut state.owned).into_iter().collect()
    };
    warn!(group = %shared.config.group_id, %reason, partitions = ?lost, "partitions lost");
    if !lost.is_empty() {
        let _ = events.send(GroupEvent::Lost {
            partitions: lost,
            reason: reason.to_owned(),
        });
    }
}

fn fail(shared: &Shared, events: &mpsc::UnboundedSender<GroupEvent>, error: Error) {
    lose(shared, events, &format!("member failed: {error}"));
    warn!(group = %shared.config.group_id, %error, "group member stopped");
    let _ = events.send(GroupEvent::Failed { error });
}

/// Heartbeats every `heartbeat.interval` until a rebalance starts, membership is lost, or shutdown.
async fn heartbeat_until_change(
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> HeartbeatExit {
    let config = &shared.config;
    let mut tick = tokio::time::interval(config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return HeartbeatExit::Shutdown,
        }
        match heartbeat_once(shared).await {
            Ok(()) => {}
            // A generation or member error resets the generation: the partitions are lost.
            Err(Step::Again(why)) if shared.state.lock().generation < 0 => {
                return HeartbeatExit::Lost(why);
            }
            Err(Step::Again(why)) => return HeartbeatExit::Rejoin(why),
            Err(Step::Fatal(e)) => return HeartbeatExit::Fatal(e),
            Err(Step::Retry(why)) => {
                let last = shared.state.lock().last_heartbeat;
                if last.is_some_and(|t| t.elapsed() >= config.session_timeout) {
                    return HeartbeatExit::Lost(format!(
                        "no successful heartbeat for the session timeout ({:?}): {why}",
                        config.session_timeout
                    ));
                }
                debug!(group = %config.group_id, reason = %why, "heartbeat failed; retrying");
            }
        }
    }
}

/// One heartbeat. `Ok` keeps going; `Again` means rejoin (rebalance in progress); a generation or
/// member error resets the generation (the caller reports the loss).
async fn heartbeat_once(shared: &Shared) -> std::result::Result<(), Step> {
    let config = &shared.config;
    let (generation, member_id) = {
        let s = shared.state.lock();
        (s.generation, s.member_id.clone())
    };
    if generation < 0 {
        return Err(Step::Again("not in a generation".into()));
    }
    let request = HeartbeatRequest::default()
        .with_group_id(group_id(&config.group_id))
        .with_generation_id(generation)
        .with_member_id(StrBytes::from_string(member_id))
        .with_group_instance_id(config.group_instance_id.clone().map(StrBytes::from_string));
    let timeout = config.request_timeout.min(config.session_timeout);
    let deadline = Instant::now() + config.heartbeat_interval;
    let (conn, response) = match shared.coordinator.send(&request, timeout, deadline).await {
        Ok(r) => {
            shared.state.lock().coordinator_reachable = true;
            r
        }
        Err(e) if e.is_retriable() => {
            shared.state.lock().coordinator_reachable = false;
            return Err(Step::Retry(e.to_string()));
        }
        Err(e) => return Err(Step::Fatal(e)),
    };
    match ResponseError::try_from_code(response.error_code) {
        None => {
            shared.state.lock().last_heartbeat = Some(Instant::now());
            Ok(())
        }
        Some(ResponseError::RebalanceInProgress) => {
            shared.state.lock().last_heartbeat = Some(Instant::now());
            Err(Step::Again("the group is rebalancing".into()))
        }
        Some(ResponseError::IllegalGeneration) => {
            shared.state.lock().generation = -1;
            Err(Step::Again(
                "ILLEGAL_GENERATION: the group moved on without this member".into(),
            ))
        }
        Some(ResponseError::UnknownMemberId) => {
            let mut s = shared.state.lock();
            s.generation = -1;
            s.member_id.clear();
            Err(Step::Again(
                "UNKNOWN_MEMBER_ID: the coordinator expelled this member".into(),
            ))
        }
        Some(ResponseError::FencedInstanceId) => Err(Step::Fatal(group_error(
            shared,
            "Heartbeat",
            ResponseError::FencedInstanceId,
            None,
        ))),
        Some(err @ (ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable)) => {
            shared.coordinator.invalidate(&conn);
            Err(Step::Retry(format!("{err:?}")))
        }
        Some(err) if err.is_retriable() => Err(Step::Retry(format!("{err:?}"))),
        Some(err) => Err(Step::Fatal(group_error(shared, "Heartbeat", err, None))),
    }
}

fn group_error(
    shared: &Shared,
    operation: &'static str,
    err: ResponseError,
    message: Option<&str>,
) -> Error {
    Error::Group {
        group: shared.config.group_id.clone(),
        operation,
        code: err.code(),
        error: describe(err, message),
    }
}

/// JoinGroup then SyncGroup; the leader computes the assignment. Returns this member's partitions.
async fn join_and_sync(
    shared: &Shared,
    reason: &str,
) -> std::result::Result<Vec<TopicPartition>, Step> {
    let config = &shared.config;
    let (member_id, generation, owned) = {
        let s = shared.state.lock();
        (
            s.member_id.clone(),
            s.generation,
            s.owned.iter().cloned().collect::<Vec<_>>(),
        )
    };
    let generation = (generation >= 0).then_some(generation);
    let mut protocols = Vec::with_capacity(config.assignors.len());
    for a in &config.assignors {
        let subscription = Subscription {
            topics: config.topics.clone(),
            user_data: a.subscription_user_data(generation),
            owned_partitions: owned.clone(),
            generation_id: generation,
            rack_id: config.rack_id.clone(),
        };
        let metadata = subscription.encode().map_err(|e| Step::Fatal(e.into()))?;
        protocols.push(
            JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_string(a.name().to_owned()))
                .with_metadata(metadata),
        );
    }
    let request = JoinGroupRequest::default()
        .with_group_id(group_id(&config.group_id))
        .with_session_timeout_ms(config.session_timeout.as_millis() as i32)
        .with_rebalance_timeout_ms(config.rebalance_timeout.as_millis() as i32)
        .with_member_id(StrBytes::from_string(member_id.clone()))
        .with_group_instance_id(config.group_instance_id.clone().map(StrBytes::from_string))
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(protocols)
        .with_reason(Some(StrBytes::from_string(reason.to_owned())));
    let timeout = config.rebalance_timeout + config.request_timeout;
    let deadline = Instant::now() + config.request_timeout;
    debug!(group = %config.group_id, %member_id, %reason, "JoinGroup");
    let (conn, join) = match shared.coordinator.send(&request, timeout, deadline).await {
        Ok(r) => r,
        Err(e) if e.is_retriable() => {
            shared.state.lock().coordinator_reachable = false;
            return Err(Step::Retry(e.to_string()));
        }
        Err(e) => return Err(Step::Fatal(e)),
    };
    if let Some(err) = ResponseError::try_from_code(join.error_code) {
        return Err(match err {
            ResponseError::MemberIdRequired => {
                shared.state.lock().member_id = join.member_id.to_string();
                Step::Again("MEMBER_ID_REQUIRED: rejoining with the id the coordinator gave".into())
            }
            ResponseError::UnknownMemberId => {
                let mut s = shared.state.lock();
                s.member_id.clear();
                s.generation = -1;
                Step::Again("UNKNOWN_MEMBER_ID: rejoining as a new member".into())
            }
            ResponseError::IllegalGeneration => {
                shared.state.lock().generation = -1;
                Step::Again("ILLEGAL_GENERATION".into())
            }
            ResponseError::RebalanceInProgress => Step::Again("REBALANCE_IN_PROGRESS".into()),
            ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable => {
                shared.coordinator.invalidate(&conn);
                Step::Retry(format!("{err:?}"))
            }
            e if e.is_retriable() || matches!(e, ResponseError::CoordinatorLoadInProgress) => {
                Step::Retry(format!("{e:?}"))
            }
            e => Step::Fatal(group_error(shared, "JoinGroup", e, None)),
        });
    }
    shared.state.lock().coordinator_reachable = true;
    let new_member_id = join.member_id.to_string();
    let protocol = join
        .protocol_name
        .as_ref()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let leader = join.leader == join.member_id;
    {
        let mut s = shared.state.lock();
        s.member_id = new_member_id.clone();
        s.generation = join.generation_id;
        s.protocol = Some(protocol.clone());
        s.leader = leader;
    }
    info!(group = %config.group_id, member_id = %new_member_id, generation = join.generation_id, %protocol, leader, "joined");

    let assignments = if leader {
        let members: Vec<(String, Option<String>, Bytes)> = join
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                    m.metadata.clone(),
                )
            })
            .collect();
        leader_assign(shared, &protocol, members).await?
    } else {
        Vec::new()
    };

    let sync = SyncGroupRequest::default()
        .with_group_id(group_id(&config.group_id))
        .with_generation_id(join.generation_id)
        .with_member_id(StrBytes::from_string(new_member_id))
        .with_group_instance_id(config.group_instance_id.clone().map(StrBytes::from_string))
        .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
        .with_protocol_name(Some(StrBytes::from_string(protocol)))
        .with_assignments(
            assignments
                .into_iter()
                .map(|(member, bytes)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(StrBytes::from_string(member))
                        .with_assignment(bytes)
                })
                .collect(),
        );
    let (conn, synced) = shared
        .coordinator
        .send(&sync, timeout, Instant::now() + config.request_timeout)
        .await
        .map_err(|e| {
            if e.is_retriable() {
                Step::Retry(e.to_string())
            } else {
                Step::Fatal(e)
            }
        })?;
    if let Some(err) = ResponseError::try_from_code(synced.error_code) {
        return Err(match err {
            ResponseError::RebalanceInProgress => {
                Step::Again("REBALANCE_IN_PROGRESS during sync".into())
            }
            ResponseError::UnknownMemberId => {
                let mut s = shared.state.lock();
                s.member_id.clear();
                s.generation = -1;
                Step::Again("UNKNOWN_MEMBER_ID during sync".into())
            }
            ResponseError::IllegalGeneration => {
                shared.state.lock().generation = -1;
                Step::Again("ILLEGAL_GENERATION during sync".into())
            }
            ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable => {
                shared.coordinator.invalidate(&conn);
                Step::Retry(format!("{err:?}"))
            }
            e if e.is_retriable() => Step::Retry(format!("{e:?}")),
            e => Step::Fatal(group_error(shared, "SyncGroup", e, None)),
        });
    }
    if synced.assignment.is_empty() {
        return Ok(Vec::new());
    }
    let assignment = Assignment::decode(&synced.assignment).map_err(|e| Step::Fatal(e.into()))?;
    let subscribed: BTreeSet<&str> = config.topics.iter().map(String::as_str).collect();
    Ok(assignment
        .partitions
        .into_iter()
        .filter(|tp| subscribed.contains(tp.topic.as_str()))
        .collect())
}

/// The leader's job: decode every member's subscription, look up partition counts, run the assignor
/// the group chose, and encode each member's assignment.
async fn leader_assign(
    shared: &Shared,
    protocol: &str,
    members: Vec<(String, Option<String>, Bytes)>,
) -> std::result::Result<Vec<(String, Bytes)>, Step> {
    let config = &shared.config;
    let assignor: &Arc<dyn Assignor> = config
        .assignors
        .iter()
        .find(|a| a.name() == protocol)
        .ok_or_else(|| {
            Step::Fatal(Error::Group {
                group: config.group_id.clone(),
                operation: "SyncGroup",
                code: 0,
                error: format!(
                    "the group chose assignor `{protocol}`, which this member does not offer"
                ),
            })
        })?;
    let mut subscriptions = BTreeMap::new();
    for (member_id, instance_id, metadata) in members {
        let subscription = Subscription::decode(&metadata).map_err(|e| Step::Fatal(e.into()))?;
        subscriptions.insert(
            member_id,
            MemberSubscription {
                group_instance_id: instance_id,
                subscription,
            },
        );
    }
    let topics: Vec<String> = subscriptions
        .values()
        .flat_map(|m| m.subscription.topics.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let partition_counts = shared
        .coordinator
        .partition_counts(&topics)
        .await
        .map_err(|e| Step::Retry(e.to_string()))?;
    let assignment = assignor.assign(&partition_counts, &subscriptions);
    let mut out = Vec::new();
    for member_id in subscriptions.keys() {
        let partitions = assignment.get(member_id).cloned().unwrap_or_default();
        let bytes = Assignment {
            partitions,
            user_data: None,
        }
        .encode()
        .map_err(|e| Step::Fatal(e.into()))?;
        out.push((member_id.clone(), bytes));
    }
    info!(group = %config.group_id, assignor = protocol, members = out.len(), topics = ?topics, "computed assignment as leader");
    Ok(out)
}
