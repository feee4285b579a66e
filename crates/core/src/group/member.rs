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
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest,
    SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::coordinator::{Coordinator, describe};
use super::offsets::{self, CommittedOffset};
use super::{
    Assignment, Assignor, GroupConfig, MemberSubscription, RebalanceProtocol, Subscription,
    TopicPartition,
};
use crate::wire::Connection;
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
    /// Not sent: the offset is below what this member already committed (the same offset may be
    /// committed again, e.g. with a newer offset map in its metadata).
    pub not_advanced: Vec<TopicPartition>,
    /// Rejected by the coordinator, with Kafka's error name.
    pub failed: Vec<(TopicPartition, String)>,
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
        let coordinator = Coordinator::new(config.group_id.clone(), client, config.request_timeout);
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
                    .is_some_and(|&c| o.offset < c)
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

    /// The leaders of `topics`' partitions (Metadata through the group's any-broker connection).
    pub(crate) async fn leaders(&self, topics: &[String]) -> Result<super::coordinator::Leaders> {
        self.shared.coordinator.leaders(topics).await
    }

    /// How this member connects to brokers: client id and security.
    pub(crate) fn client(&self) -> &ClientConfig {
        self.shared.coordinator.client()
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
    let config = &shared.config;
    offsets::fetch_committed(
        &shared.coordinator,
        &config.group_id,
        config.request_timeout,
        &config.retry_backoff,
        partitions,
    )
    .await
}

/// How a step of the loop ended, when it did not simply succeed.
enum Step {
    /// Try again after backoff.
    Retry(String),
    /// Try again now (a new member id or a rebalance that just started).
    Again(String),
    /// The membership is gone (generation reset already applied): the owned partitions are lost,
    /// then the member rejoins.
    Lost(String),
    /// The member cannot continue.
    Fatal(Error),
}

/// The group request a coordinator error code answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Join,
    Sync,
    Heartbeat,
}

impl Operation {
    /// The Kafka API name, as errors and logs show it.
    fn api(self) -> &'static str {
        match self {
            Operation::Join => "JoinGroup",
            Operation::Sync => "SyncGroup",
            Operation::Heartbeat => "Heartbeat",
        }
    }
}

/// What happens to the member id before the next JoinGroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberIdChange {
    /// Keep it: the coordinator still knows this member.
    Keep,
    /// Forget it: join as a new member.
    Clear,
    /// Take the id the coordinator put in the response (MEMBER_ID_REQUIRED, KIP-394).
    FromResponse,
}

/// What the member does about a coordinator error code. Decided by [`react`] from the operation and
/// the code alone; [`apply_reaction`] is the one place its side effects happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reaction {
    /// Join again at once, after changing the member id and forgetting the generation as told. The
    /// partitions stay owned (cooperative members offer them again in the next subscription).
    RejoinNow {
        member_id: MemberIdChange,
        reset_generation: bool,
    },
    /// The coordinator no longer accepts this member's generation: the generation (and the member id
    /// when `reset_member_id`) is forgotten and the owned partitions are lost, with no commit, before
    /// the member rejoins.
    Lost { reset_member_id: bool },
    /// Back off, then try again. `rediscover_coordinator` first forgets the coordinator connection,
    /// so the next request looks the coordinator up again.
    RetryAfterBackoff { rediscover_coordinator: bool },
    /// The member stops for good.
    Fatal,
}

impl Reaction {
    /// Whether the coordinator still recognised this member and its generation. For a heartbeat that
    /// means the session is alive (Java: `heartbeat.receiveHeartbeat()` on REBALANCE_IN_PROGRESS).
    fn session_alive(self) -> bool {
        self == Reaction::RejoinNow {
            member_id: MemberIdChange::Keep,
            reset_generation: false,
        }
    }
}

/// Maps a coordinator error code on a JoinGroup, SyncGroup or Heartbeat response to what the member
/// does. Pure, so every branch is unit-tested; it follows the Java client's `AbstractCoordinator`
/// (classic protocol) except where noted.
///
/// | code | Join | Sync | Heartbeat |
/// | --- | --- | --- | --- |
/// | MEMBER_ID_REQUIRED | rejoin now with the id from the response | fatal | fatal |
/// | UNKNOWN_MEMBER_ID | rejoin now, new member, no generation | same | lost, new member |
/// | ILLEGAL_GENERATION | rejoin now, no generation | same | lost |
/// | REBALANCE_IN_PROGRESS | rejoin now | rejoin now | rejoin now (session alive, nothing lost) |
/// | FENCED_INSTANCE_ID | fatal | fatal | fatal |
/// | NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE | back off, find the coordinator again | same | same |
/// | other retriable (e.g. COORDINATOR_LOAD_IN_PROGRESS) | back off, retry | same | same |
/// | anything else | fatal | fatal | fatal |
///
/// Java differs on a non-fatal heartbeat error it does not expect (e.g. GROUP_AUTHORIZATION_FAILED):
/// its heartbeat thread only counts a failed heartbeat, while kafkit stops the member.
fn react(operation: Operation, error: ResponseError) -> Reaction {
    use MemberIdChange::{Clear, FromResponse, Keep};
    use Operation::{Heartbeat, Join, Sync};
    match (operation, error) {
        (Join, ResponseError::MemberIdRequired) => Reaction::RejoinNow {
            member_id: FromResponse,
            reset_generation: false,
        },
        (Join | Sync, ResponseError::UnknownMemberId) => Reaction::RejoinNow {
            member_id: Clear,
            reset_generation: true,
        },
        (Join | Sync, ResponseError::IllegalGeneration) => Reaction::RejoinNow {
            member_id: Keep,
            reset_generation: true,
        },
        (Heartbeat, ResponseError::UnknownMemberId) => Reaction::Lost {
            reset_member_id: true,
        },
        (Heartbeat, ResponseError::IllegalGeneration) => Reaction::Lost {
            reset_member_id: false,
        },
        (_, ResponseError::RebalanceInProgress) => Reaction::RejoinNow {
            member_id: Keep,
            reset_generation: false,
        },
        (_, ResponseError::FencedInstanceId) => Reaction::Fatal,
        (_, ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable) => {
            Reaction::RetryAfterBackoff {
                rediscover_coordinator: true,
            }
        }
        (_, e) if e.is_retriable() => Reaction::RetryAfterBackoff {
            rediscover_coordinator: false,
        },
        _ => Reaction::Fatal,
    }
}

/// Applies the side effects of [`react`]'s answer to `error` and turns it into the loop's next step:
/// the state resets (in [`reset_state`]) and the coordinator invalidation. `response_member_id` is the
/// member id the response carried; `conn` the connection it came on.
fn apply_reaction(
    shared: &Shared,
    conn: &Arc<Connection>,
    operation: Operation,
    error: ResponseError,
    response_member_id: &str,
) -> Step {
    let reaction = react(operation, error);
    reset_state(
        &mut shared.state.lock(),
        operation,
        reaction,
        response_member_id,
    );
    let api = operation.api();
    match reaction {
        Reaction::RejoinNow { member_id, .. } => Step::Again(match member_id {
            MemberIdChange::Keep => format!("{error:?} on {api}: rejoining"),
            MemberIdChange::Clear => format!("{error:?} on {api}: rejoining as a new member"),
            MemberIdChange::FromResponse => {
                format!("{error:?} on {api}: rejoining with the id the coordinator gave")
            }
        }),
        Reaction::Lost { .. } => Step::Lost(format!(
            "{error:?} on {api}: the group moved on without this member"
        )),
        Reaction::RetryAfterBackoff {
            rediscover_coordinator,
        } => {
            if rediscover_coordinator {
                shared.coordinator.invalidate(conn);
            }
            Step::Retry(format!("{error:?} on {api}"))
        }
        Reaction::Fatal => Step::Fatal(group_error(shared, api, error, None)),
    }
}

/// The membership changes a reaction makes (the caller holds the state lock). Owned partitions are not
/// touched here: a rejoin offers them again, and a loss is reported by [`lose`], which empties them.
fn reset_state(
    state: &mut MemberState,
    operation: Operation,
    reaction: Reaction,
    response_member_id: &str,
) {
    match reaction {
        Reaction::RejoinNow {
            member_id,
            reset_generation,
        } => {
            if operation == Operation::Heartbeat && reaction.session_alive() {
                state.last_heartbeat = Some(Instant::now());
            }
            match member_id {
                MemberIdChange::Keep => {}
                MemberIdChange::Clear => state.member_id.clear(),
                MemberIdChange::FromResponse => state.member_id = response_member_id.to_owned(),
            }
            if reset_generation {
                state.generation = -1;
            }
        }
        Reaction::Lost { reset_member_id } => {
            state.generation = -1;
            if reset_member_id {
                state.member_id.clear();
            }
        }
        Reaction::RetryAfterBackoff { .. } | Reaction::Fatal => {}
    }
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
            // Not produced by JoinGroup or SyncGroup today (see `react`); handled for completeness.
            Err(Step::Lost(why)) => {
                lose(&shared, &events, &why);
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
            Err(Step::Lost(why)) => return HeartbeatExit::Lost(why),
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

/// One heartbeat. `Ok` keeps going; `Again` means rejoin (rebalance in progress); `Lost` means the
/// generation is gone and has been reset (the caller reports the loss).
async fn heartbeat_once(shared: &Shared) -> std::result::Result<(), Step> {
    let config = &shared.config;
    let (generation, member_id) = {
        let s = shared.state.lock();
        (s.generation, s.member_id.clone())
    };
    if generation < 0 {
        return Err(Step::Lost("not in a generation".into()));
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
        Some(err) => Err(apply_reaction(shared, &conn, Operation::Heartbeat, err, "")),
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
        return Err(apply_reaction(
            shared,
            &conn,
            Operation::Join,
            err,
            join.member_id.as_str(),
        ));
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
        return Err(apply_reaction(shared, &conn, Operation::Sync, err, ""));
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

#[cfg(test)]
mod tests {
    use super::*;
    use MemberIdChange::{Clear, FromResponse, Keep};
    use Operation::{Heartbeat, Join, Sync};
    use ResponseError as E;

    const REJOIN: Reaction = Reaction::RejoinNow {
        member_id: Keep,
        reset_generation: false,
    };
    const REJOIN_NEW_MEMBER: Reaction = Reaction::RejoinNow {
        member_id: Clear,
        reset_generation: true,
    };
    const REJOIN_NO_GENERATION: Reaction = Reaction::RejoinNow {
        member_id: Keep,
        reset_generation: true,
    };
    const REJOIN_WITH_GIVEN_ID: Reaction = Reaction::RejoinNow {
        member_id: FromResponse,
        reset_generation: false,
    };
    const LOST: Reaction = Reaction::Lost {
        reset_member_id: false,
    };
    const LOST_NEW_MEMBER: Reaction = Reaction::Lost {
        reset_member_id: true,
    };
    const REDISCOVER: Reaction = Reaction::RetryAfterBackoff {
        rediscover_coordinator: true,
    };
    const BACKOFF: Reaction = Reaction::RetryAfterBackoff {
        rediscover_coordinator: false,
    };
    const FATAL: Reaction = Reaction::Fatal;

    /// Every error code kafka-protocol knows.
    fn all_codes() -> Vec<ResponseError> {
        (-1..=1000)
            .filter_map(ResponseError::try_from_code)
            .collect()
    }

    /// The codes `react` treats specially; everything else goes by `is_retriable`.
    const SPECIAL: [ResponseError; 7] = [
        E::MemberIdRequired,
        E::UnknownMemberId,
        E::IllegalGeneration,
        E::RebalanceInProgress,
        E::FencedInstanceId,
        E::NotCoordinator,
        E::CoordinatorNotAvailable,
    ];

    #[test]
    fn every_branch_for_every_operation() {
        #[rustfmt::skip]
        let table: &[(ResponseError, [Reaction; 3])] = &[
            //                             Join                   Sync               Heartbeat
            (E::MemberIdRequired,        [REJOIN_WITH_GIVEN_ID, FATAL,             FATAL]),
            (E::UnknownMemberId,         [REJOIN_NEW_MEMBER,    REJOIN_NEW_MEMBER, LOST_NEW_MEMBER]),
            (E::IllegalGeneration,       [REJOIN_NO_GENERATION, REJOIN_NO_GENERATION, LOST]),
            (E::RebalanceInProgress,     [REJOIN,               REJOIN,            REJOIN]),
            (E::FencedInstanceId,        [FATAL,                FATAL,             FATAL]),
            (E::NotCoordinator,          [REDISCOVER,           REDISCOVER,        REDISCOVER]),
            (E::CoordinatorNotAvailable, [REDISCOVER,           REDISCOVER,        REDISCOVER]),
            // Retriable codes without a special case back off.
            (E::CoordinatorLoadInProgress, [BACKOFF,            BACKOFF,           BACKOFF]),
            (E::RequestTimedOut,         [BACKOFF,              BACKOFF,           BACKOFF]),
            (E::NetworkException,        [BACKOFF,              BACKOFF,           BACKOFF]),
            // Anything else stops the member.
            (E::UnknownServerError,      [FATAL,                FATAL,             FATAL]),
            (E::GroupAuthorizationFailed, [FATAL,               FATAL,             FATAL]),
            (E::InconsistentGroupProtocol, [FATAL,              FATAL,             FATAL]),
            (E::InvalidSessionTimeout,   [FATAL,                FATAL,             FATAL]),
            (E::UnsupportedVersion,      [FATAL,                FATAL,             FATAL]),
        ];
        for (error, expected) in table {
            for (operation, expected) in [Join, Sync, Heartbeat].into_iter().zip(expected) {
                assert_eq!(
                    react(operation, *error),
                    *expected,
                    "{error:?} on {operation:?}"
                );
            }
        }
        // The table names every special case.
        for special in SPECIAL {
            assert!(table.iter().any(|(e, _)| *e == special), "{special:?}");
        }
    }

    #[test]
    fn every_other_code_backs_off_when_retriable_and_is_fatal_otherwise() {
        let codes = all_codes();
        assert!(
            codes.len() > 100,
            "kafka-protocol knows {} codes",
            codes.len()
        );
        for error in codes.into_iter().filter(|e| !SPECIAL.contains(e)) {
            let expected = if error.is_retriable() { BACKOFF } else { FATAL };
            for operation in [Join, Sync, Heartbeat] {
                assert_eq!(
                    react(operation, error),
                    expected,
                    "{error:?} on {operation:?}"
                );
            }
        }
    }

    #[test]
    fn partitions_are_lost_only_on_a_heartbeat_and_the_session_lives_only_through_a_rebalance() {
        for error in all_codes() {
            for operation in [Join, Sync] {
                assert!(
                    !matches!(react(operation, error), Reaction::Lost { .. }),
                    "{error:?} on {operation:?}: a join or sync error never loses partitions"
                );
            }
            assert_eq!(
                react(Heartbeat, error).session_alive(),
                error == E::RebalanceInProgress,
                "{error:?}: only REBALANCE_IN_PROGRESS proves the session is alive"
            );
        }
    }

    /// The Java client's `AbstractCoordinator` (classic protocol) on the same codes: JoinGroup,
    /// SyncGroup and Heartbeat response handlers, and `joinGroupIfNeeded`, which rejoins at once on
    /// UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS and MEMBER_ID_REQUIRED, backs off
    /// on other retriable errors and throws the rest to the application.
    #[test]
    fn matches_the_java_classic_protocol_client() {
        let java: &[(Operation, ResponseError, Reaction, &str)] = &[
            // JoinGroupResponseHandler
            (
                Join,
                E::CoordinatorLoadInProgress,
                BACKOFF,
                "coordinator loading: retriable",
            ),
            (
                Join,
                E::UnknownMemberId,
                REJOIN_NEW_MEMBER,
                "resetStateAndGeneration(resetMemberId)",
            ),
            (
                Join,
                E::NotCoordinator,
                REDISCOVER,
                "markCoordinatorUnknown",
            ),
            (
                Join,
                E::CoordinatorNotAvailable,
                REDISCOVER,
                "markCoordinatorUnknown",
            ),
            (
                Join,
                E::FencedInstanceId,
                FATAL,
                "fatal: group.instance.id fenced",
            ),
            (
                Join,
                E::InconsistentGroupProtocol,
                FATAL,
                "raised to the application",
            ),
            (
                Join,
                E::InvalidSessionTimeout,
                FATAL,
                "raised to the application",
            ),
            (Join, E::InvalidGroupId, FATAL, "raised to the application"),
            (
                Join,
                E::GroupAuthorizationFailed,
                FATAL,
                "GroupAuthorizationException",
            ),
            (
                Join,
                E::GroupMaxSizeReached,
                FATAL,
                "raised to the application",
            ),
            (
                Join,
                E::MemberIdRequired,
                REJOIN_WITH_GIVEN_ID,
                "KIP-394: rejoin with the given id",
            ),
            (Join, E::RebalanceInProgress, REJOIN, "rejoin"),
            // SyncGroupResponseHandler
            (
                Sync,
                E::GroupAuthorizationFailed,
                FATAL,
                "GroupAuthorizationException",
            ),
            (Sync, E::RebalanceInProgress, REJOIN, "requestRejoin"),
            (
                Sync,
                E::FencedInstanceId,
                FATAL,
                "fatal: group.instance.id fenced",
            ),
            (
                Sync,
                E::UnknownMemberId,
                REJOIN_NEW_MEMBER,
                "resetGenerationOnResponseError",
            ),
            (
                Sync,
                E::IllegalGeneration,
                REJOIN_NO_GENERATION,
                "resetGenerationOnResponseError",
            ),
            (
                Sync,
                E::NotCoordinator,
                REDISCOVER,
                "markCoordinatorUnknown",
            ),
            (
                Sync,
                E::CoordinatorNotAvailable,
                REDISCOVER,
                "markCoordinatorUnknown",
            ),
            (
                Sync,
                E::InconsistentGroupProtocol,
                FATAL,
                "unexpected error: KafkaException",
            ),
            // HeartbeatResponseHandler
            (
                Heartbeat,
                E::NotCoordinator,
                REDISCOVER,
                "markCoordinatorUnknown",
            ),
            (
                Heartbeat,
                E::CoordinatorNotAvailable,
                REDISCOVER,
                "markCoordinatorUnknown",
            ),
            (
                Heartbeat,
                E::RebalanceInProgress,
                REJOIN,
                "requestRejoin; receiveHeartbeat",
            ),
            (
                Heartbeat,
                E::IllegalGeneration,
                LOST,
                "resetGenerationOnResponseError: lost",
            ),
            (
                Heartbeat,
                E::UnknownMemberId,
                LOST_NEW_MEMBER,
                "resetGenerationOnResponseError: lost",
            ),
            (
                Heartbeat,
                E::FencedInstanceId,
                FATAL,
                "fatal: group.instance.id fenced",
            ),
        ];
        for (operation, error, expected, why) in java {
            assert_eq!(
                react(*operation, *error),
                *expected,
                "{error:?} on {operation:?}: Java does `{why}`"
            );
        }
        assert!(
            react(Heartbeat, E::RebalanceInProgress).session_alive(),
            "Java counts REBALANCE_IN_PROGRESS as a received heartbeat"
        );
    }

    #[test]
    fn reset_state_applies_each_reaction_to_the_membership() {
        let joined = || MemberState {
            member_id: "m-1".into(),
            generation: 7,
            owned: [TopicPartition::new("t", 0)].into(),
            ..MemberState::default()
        };
        // (operation, reaction, member id after, generation after, heartbeat recorded)
        let cases: &[(Operation, Reaction, &str, i32, bool)] = &[
            (Join, REJOIN_WITH_GIVEN_ID, "m-given", 7, false),
            (Join, REJOIN_NEW_MEMBER, "", -1, false),
            (Sync, REJOIN_NO_GENERATION, "m-1", -1, false),
            (Sync, REJOIN, "m-1", 7, false),
            (Heartbeat, REJOIN, "m-1", 7, true),
            (Heartbeat, LOST, "m-1", -1, false),
            (Heartbeat, LOST_NEW_MEMBER, "", -1, false),
            (Heartbeat, REDISCOVER, "m-1", 7, false),
            (Join, BACKOFF, "m-1", 7, false),
            (Heartbeat, FATAL, "m-1", 7, false),
        ];
        for (operation, reaction, member_id, generation, heartbeat) in cases {
            let mut state = joined();
            reset_state(&mut state, *operation, *reaction, "m-given");
            let what = format!("{reaction:?} on {operation:?}");
            assert_eq!(state.member_id, *member_id, "{what}");
            assert_eq!(state.generation, *generation, "{what}");
            assert_eq!(state.last_heartbeat.is_some(), *heartbeat, "{what}");
            assert_eq!(
                state.owned,
                joined().owned,
                "{what}: ownership is lose()'s job"
            );
        }
    }
}
