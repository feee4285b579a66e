//! A consumer-group member: the handle the consumer holds ([`GroupMember`]), the membership state it
//! shares with the member task, and the events through which ownership changes reach the consumer.
//!
//! The member task runs on its own task, so heartbeats never wait for record handlers. It tells the
//! consumer what changed through [`GroupEvent`]s on an unbounded channel (sending never blocks the
//! task). A revocation waits for the consumer to finish with the partitions (drain, commit) while
//! heartbeats keep going, bounded by the rebalance timeout.
//!
//! Two membership protocols sit behind the one handle, chosen by [`GroupConfig::protocol`]: the
//! classic one (`classic`) and KIP-848's consumer protocol (`consumer_protocol`); a third member
//! kind, a fixed assignment (`assigned`, [`GroupConfig::assigned`]), joins nothing. Each is one
//! task that owns its state and talks to the consumer only through the shared hand-off
//! (`handoff`: [`GroupEvent`]s, revocations waited for while it heartbeats) and the shared
//! ownership and commit gate (`ownership`); commits, offsets, status and everything above
//! membership are the same for all.
//!
//! # Layout
//! - `classic`: the classic protocol's loop (join, sync, apply the assignment, heartbeat) and leave.
//! - `consumer_protocol`: the KIP-848 member's heartbeat loop, reconciliation and leave.
//! - `assigned`: a fixed assignment (Java's `assign()`): owned from the start, revoked at shutdown.
//! - `reconcile`: the KIP-848 decisions without I/O (revoke/assign plan, heartbeat error
//!   reactions, topic-id resolution, leave epochs).
//! - `join`: JoinGroup and SyncGroup, and the leader's assignment.
//! - `heartbeat`: heartbeating while the assignment holds.
//! - `reaction`: which coordinator error leads to rejoin, loss, backoff or a fatal stop.
//! - `handoff`: telling the consumer: revoke (and wait for it), lose, fail.
//! - `commit`: OffsetCommit and OffsetFetch for the consumer.
//! - `ownership`: the owned partitions and the commit gate.
//!
//! Invariants, each enforced in one place:
//! - a commit is sent only for partitions this member owns in its current generation (or, for a
//!   fixed assignment, owns), with that generation and member id, and never below what this member already committed for the
//!   partition while it owns it: `ownership::Ownership::admit`, under the state lock;
//! - lost partitions (session expired, fenced, generation gone) are taken out of the owned set before
//!   the consumer is told, so no commit for them can be sent afterwards: `handoff::lose`.

mod assigned;
mod classic;
mod commit;
mod consumer_protocol;
mod handoff;
mod heartbeat;
mod join;
mod ownership;
mod reaction;
pub(crate) mod reconcile;

use std::sync::Arc;

use kafka_protocol::messages::GroupId;
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::coordinator::Coordinator;
use super::{GroupConfig, GroupProtocol, TopicPartition};
use crate::{ClientConfig, Error, Result};
use ownership::Ownership;

/// What changed in this member's ownership. The consumer acts on each in order.
#[derive(Debug)]
#[non_exhaustive]
pub enum GroupEvent {
    /// These partitions are now owned by this member in `generation`: start fetching them.
    Assigned {
        /// The group generation of the assignment (the member epoch under the consumer protocol).
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
    /// -1 when not in a generation (always, for a fixed assignment).
    generation: i32,
    /// A fixed assignment: what it owns may be committed without a generation.
    fixed: bool,
    protocol: Option<String>,
    leader: bool,
    /// The partitions owned and their commit floors.
    owned: Ownership,
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

impl MemberState {
    /// Whether what this member owns may be committed: it is in a generation, or its assignment
    /// is fixed (committed as a standalone consumer's, generation -1).
    fn may_commit(&self) -> bool {
        self.generation >= 0 || self.fixed
    }
}

/// A point-in-time view of the membership, for health checks and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipStatus {
    /// The member id: the coordinator's (classic; "" before the first join), or the one this
    /// member generated (consumer protocol).
    pub member_id: String,
    /// The current generation (classic) or member epoch (consumer protocol), `None` while not in
    /// one.
    pub generation: Option<i32>,
    /// The assignor the group chose (classic), or the server-side assignor asked for (consumer
    /// protocol, `None`: the broker's default).
    pub protocol: Option<String>,
    /// Whether this member computed the last assignment (classic; never under the consumer
    /// protocol, where the broker assigns).
    pub leader: bool,
    /// The partitions owned now.
    pub assignment: Vec<TopicPartition>,
    /// When the last heartbeat succeeded.
    pub last_heartbeat: Option<std::time::Instant>,
    /// Whether the coordinator answered the last group request.
    pub coordinator_reachable: bool,
    /// A fixed assignment ([`GroupConfig::assigned`](crate::group::GroupConfig::assigned)): no
    /// membership, no heartbeats; the coordinator serves its offset requests only.
    pub fixed_assignment: bool,
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
        let fixed = config.assignment.is_some();
        let coordinator = Coordinator::new(config.group_id.clone(), client, config.request_timeout);
        let shared = Arc::new(Shared {
            config,
            coordinator,
            state: parking_lot::Mutex::new(MemberState {
                generation: -1,
                fixed,
                ..MemberState::default()
            }),
        });
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let task = match shared.config.protocol {
            _ if shared.config.assignment.is_some() => {
                tokio::spawn(assigned::run(Arc::clone(&shared), events_tx, shutdown_rx))
            }
            GroupProtocol::Classic => {
                tokio::spawn(classic::run(Arc::clone(&shared), events_tx, shutdown_rx))
            }
            GroupProtocol::Consumer => tokio::spawn(consumer_protocol::run(
                Arc::clone(&shared),
                events_tx,
                shutdown_rx,
            )),
        };
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
            assignment: s.owned.to_vec(),
            last_heartbeat: s.last_heartbeat.map(Instant::into_std),
            coordinator_reachable: s.coordinator_reachable,
            fixed_assignment: s.fixed,
        }
    }

    /// The member's identity for a transactional offset commit (KIP-447): group id, current
    /// generation (member epoch) and member id, static instance id. Java's
    /// `consumer.groupMetadata()`.
    pub fn group_metadata(&self) -> crate::group::ConsumerGroupMetadata {
        let s = self.shared.state.lock();
        crate::group::ConsumerGroupMetadata {
            group_id: self.shared.config.group_id.clone(),
            generation_id: s.generation,
            member_id: s.member_id.clone(),
            group_instance_id: self.shared.config.group_instance_id.clone(),
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

    /// The leaders of `topics`' partitions (Metadata through the group's any-broker connection).
    pub(crate) async fn leaders(&self, topics: &[String]) -> Result<super::coordinator::Leaders> {
        self.shared.coordinator.leaders(topics).await
    }

    /// How this member connects to brokers: client id and security.
    pub(crate) fn client(&self) -> &ClientConfig {
        self.shared.coordinator.client()
    }
}

pub(crate) fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_owned()))
}
