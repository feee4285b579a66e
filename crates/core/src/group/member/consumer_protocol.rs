//! The KIP-848 consumer protocol's member task (`group.protocol=consumer`): one heartbeat loop.
//!
//! ```text
//!   join: heartbeat at epoch 0 ──► heartbeat every interval (the broker's) ◄──────────────┐
//!                                     │ response: member epoch, maybe a new target         │
//!                                     ▼                                                   │
//!                     reconcile: revoke what left the target (drain, commit) ─► assign     │
//!                     what joined it ─► heartbeat now with the owned partitions (the ack) ─┘
//!   FENCED_MEMBER_EPOCH / UNKNOWN_MEMBER_ID: everything lost (no commit), rejoin at epoch 0
//!   shutdown: revoke everything (commit), then heartbeat at epoch -1 (-2 for a static member)
//! ```
//!
//! The broker computes every member's target assignment; this member only moves its own owned set
//! towards it, revoking before assigning, with the same hand-off the classic member uses
//! (`handoff::revoke`: the consumer drains and commits while heartbeats go on). The member epoch is
//! the generation: commits carry it, and the commit gate (`Ownership::admit`) refuses partitions
//! not owned under it. Heartbeats run on this task alone, so record handlers never delay them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafkit_resilience::Backoff;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::handoff::{KeepAlive, fail, lose, revoke};
use super::reconcile::{self, JOIN_EPOCH, Reaction, leave_epoch, plan, resolve};
use super::{GroupEvent, Shared, group_id};
use crate::Error;
use crate::group::TopicPartition;
use crate::group::coordinator::describe;
use crate::wire::WireError;

/// How often to heartbeat until the broker says (its `group.consumer.heartbeat.interval.ms`
/// default). The first heartbeat (the join) goes at once.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// How a heartbeat went, when it did not succeed.
enum Beat {
    /// Fenced (the owned partitions are lost); the next heartbeat rejoins at epoch 0.
    Fenced(String),
    /// Try again after backoff.
    Retry(String),
    /// The member cannot continue.
    Fatal(Error),
}

/// The consumer-protocol membership: what the next heartbeat says, and what the last ones said.
/// Owned by the member task; the shared state (`Shared::state`) is written from here.
struct Membership<'a> {
    shared: &'a Shared,
    /// Generated once (KIP-1082) and kept through fencing and rejoins, as the Java client does.
    member_id: String,
    /// The epoch the next heartbeat carries: 0 to join, then the broker's.
    epoch: i32,
    /// The broker's heartbeat interval.
    interval: Duration,
    /// Topic names by id, and ids by name, as Metadata gave them.
    names: HashMap<Uuid, String>,
    ids: HashMap<String, Uuid>,
    /// The last target assignment received while some of its topic ids are still unknown.
    unresolved: Option<Vec<(Uuid, Vec<i32>)>>,
    /// A target assignment received and not yet reconciled (the newest wins).
    pending: Option<BTreeSet<TopicPartition>>,
    /// Set by a heartbeat during a revocation: fenced (reason) or failed.
    fenced: Option<String>,
    fatal: Option<Error>,
}

/// The member task.
pub(super) async fn run(
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<GroupEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = &shared.config;
    let mut m = Membership {
        shared: &shared,
        member_id: reconcile::new_member_id(),
        epoch: JOIN_EPOCH,
        interval: DEFAULT_INTERVAL,
        names: HashMap::new(),
        ids: HashMap::new(),
        unresolved: None,
        pending: None,
        fenced: None,
        fatal: None,
    };
    shared.state.lock().member_id = m.member_id.clone();
    shared.state.lock().protocol = config.remote_assignor.clone();
    let mut backoff: Backoff = config.retry_backoff.start();
    let mut next = Instant::now();
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.changed() => break,
        }
        let beat = tokio::select! {
            r = m.beat() => r,
            _ = shutdown.changed() => break,
        };
        match beat {
            Ok(()) => {
                backoff.reset();
                next = Instant::now() + m.interval;
            }
            Err(Beat::Fenced(why)) => {
                lose(&shared, &events, &why);
                next = Instant::now();
                continue;
            }
            Err(Beat::Retry(why)) => {
                let delay = backoff.next_delay();
                debug!(group = %config.group_id, reason = %why, ?delay, "heartbeat failed; retrying");
                next = Instant::now() + delay;
                continue;
            }
            Err(Beat::Fatal(error)) => {
                fail(&shared, &events, error);
                return;
            }
        }
        if reconcile(&mut m, &events, &mut shutdown).await {
            // Ack: the next heartbeat carries the new owned set at once.
            next = Instant::now();
        }
        if let Some(error) = m.fatal.take() {
            fail(&shared, &events, error);
            return;
        }
        if let Some(why) = m.fenced.take() {
            lose(&shared, &events, &why);
            next = Instant::now();
        }
    }
    leave(&mut m, &events).await;
}

/// Moves the owned set to the newest target: revoke first (the consumer drains and commits; the
/// member keeps heartbeating, which may bring a newer target or a fencing), then assign. Returns
/// whether the owned set changed (so the broker should hear of it now).
async fn reconcile(
    m: &mut Membership<'_>,
    events: &mpsc::UnboundedSender<GroupEvent>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let shared = m.shared;
    let mut changed = false;
    while let Some(target) = m.pending.take() {
        if m.fenced.is_some() || m.fatal.is_some() {
            break;
        }
        let step = plan(shared.state.lock().owned.set(), &target);
        if step.is_empty() {
            continue;
        }
        info!(group = %shared.config.group_id, member_id = %m.member_id, epoch = m.epoch,
            assigning = ?step.assign, revoking = ?step.revoke, "reconciling with the target assignment");
        if !step.revoke.is_empty() {
            revoke(shared, events, step.revoke, shutdown, m).await;
            changed = true;
            if m.fenced.is_some() || m.fatal.is_some() {
                break;
            }
            if m.pending.is_some() {
                // A newer target came while revoking: plan again from it.
                continue;
            }
        }
        if *shutdown.borrow() {
            // Leaving: what was revoked is acked by the leave; nothing new starts.
            break;
        }
        if !step.assign.is_empty() {
            let epoch = {
                let mut state = shared.state.lock();
                state.owned.add(step.assign.iter().cloned());
                state.generation
            };
            let _ = events.send(GroupEvent::Assigned {
                generation: epoch,
                partitions: step.assign,
            });
            changed = true;
        }
    }
    changed
}

/// Final revocation (so the consumer commits), then the leave heartbeat: epoch -1, or -2 for a
/// static member (its partitions wait for it through the session timeout).
async fn leave(m: &mut Membership<'_>, events: &mpsc::UnboundedSender<GroupEvent>) {
    let shared = m.shared;
    let config = &shared.config;
    let owned = shared.state.lock().owned.to_vec();
    if !owned.is_empty() {
        let (_never, mut no_shutdown) = watch::channel(false);
        revoke(shared, events, owned, &mut no_shutdown, m).await;
    }
    if m.epoch > JOIN_EPOCH && m.fenced.is_none() {
        let epoch = leave_epoch(config.group_instance_id.is_some());
        let request = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group_id(&config.group_id))
            .with_member_id(StrBytes::from_string(m.member_id.clone()))
            .with_member_epoch(epoch)
            .with_instance_id(config.group_instance_id.clone().map(StrBytes::from_string));
        let deadline = Instant::now() + config.request_timeout;
        match shared
            .coordinator
            .send(&request, config.request_timeout, deadline)
            .await
        {
            Ok((_, r)) if r.error_code == 0 => {
                info!(group = %config.group_id, member_id = %m.member_id, epoch, "left the group")
            }
            Ok((_, r)) => {
                warn!(group = %config.group_id, code = r.error_code, "leave heartbeat rejected")
            }
            Err(e) => {
                warn!(group = %config.group_id, error = %e, "leave heartbeat failed; the session timeout will expel the member")
            }
        }
    }
    let mut state = shared.state.lock();
    state.generation = -1;
    state.owned.take_all();
}

impl KeepAlive for Membership<'_> {
    fn interval(&self) -> Duration {
        self.interval
    }

    /// A heartbeat while the consumer drains: a newer target is kept for after the revocation; a
    /// fencing or fatal error is kept too, and no heartbeat goes after it (a rejoin must wait until
    /// the partitions are given up).
    async fn beat(&mut self) {
        if self.fenced.is_some() || self.fatal.is_some() {
            return;
        }
        match Membership::beat(self).await {
            Ok(()) | Err(Beat::Retry(_)) => {}
            Err(Beat::Fenced(why)) => self.fenced = Some(why),
            Err(Beat::Fatal(e)) => self.fatal = Some(e),
        }
    }
}

impl Membership<'_> {
    /// One heartbeat, with the whole membership (subscription, assignor, owned partitions), as a
    /// joining member sends it; applies the response.
    async fn beat(&mut self) -> std::result::Result<(), Beat> {
        let shared = self.shared;
        let config = &shared.config;
        let owned = shared.state.lock().owned.to_vec();
        let request = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group_id(&config.group_id))
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_member_epoch(self.epoch)
            .with_instance_id(config.group_instance_id.clone().map(StrBytes::from_string))
            .with_rack_id(config.rack_id.clone().map(StrBytes::from_string))
            .with_rebalance_timeout_ms(config.rebalance_timeout.as_millis() as i32)
            .with_subscribed_topic_names(config.topic_regex.is_none().then(|| {
                config
                    .topics
                    .iter()
                    .map(|t| TopicName(StrBytes::from_string(t.clone())))
                    .collect()
            }))
            .with_subscribed_topic_regex(config.topic_regex.clone().map(StrBytes::from_string))
            .with_server_assignor(config.remote_assignor.clone().map(StrBytes::from_string))
            .with_topic_partitions(Some(self.owned_by_id(&owned)));
        let deadline = Instant::now() + config.request_timeout;
        let (conn, response) = match shared
            .coordinator
            .send(&request, config.request_timeout, deadline)
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_retriable() => {
                shared.state.lock().coordinator_reachable = false;
                return Err(Beat::Retry(e.to_string()));
            }
            Err(e) => return Err(Beat::Fatal(unsupported_hint(&config.group_id, e))),
        };
        shared.state.lock().coordinator_reachable = true;
        if let Some(error) = ResponseError::try_from_code(response.error_code) {
            let message = response.error_message.as_deref();
            let why = format!(
                "{} on ConsumerGroupHeartbeat (member epoch {})",
                describe(error, message),
                self.epoch
            );
            return Err(match reconcile::react(error) {
                Reaction::Fenced => {
                    // No commit from here on: the epoch is gone. Rejoin at epoch 0, same id.
                    shared.state.lock().generation = -1;
                    self.epoch = JOIN_EPOCH;
                    self.pending = None;
                    self.unresolved = None;
                    warn!(group = %config.group_id, member_id = %self.member_id, reason = %why, "fenced");
                    Beat::Fenced(why)
                }
                Reaction::Retry {
                    rediscover_coordinator,
                } => {
                    if rediscover_coordinator {
                        shared.coordinator.invalidate(&conn);
                    }
                    Beat::Retry(why)
                }
                Reaction::Fatal if error == ResponseError::UnsupportedVersion => {
                    Beat::Fatal(unsupported(&config.group_id, conn.broker()))
                }
                Reaction::Fatal => Beat::Fatal(Error::Group {
                    group: config.group_id.clone(),
                    operation: "ConsumerGroupHeartbeat",
                    code: error.code(),
                    error: describe(error, message),
                }),
            });
        }
        self.apply(response).await;
        Ok(())
    }

    /// A successful response: the member id (a broker may give one), the epoch, the interval and
    /// a new target, which waits in `pending` until reconciled.
    async fn apply(&mut self, response: ConsumerGroupHeartbeatResponse) {
        let shared = self.shared;
        if let Some(id) = response.member_id.filter(|id| !id.is_empty())
            && *id != *self.member_id
        {
            self.member_id = id.to_string();
        }
        if response.member_epoch != self.epoch {
            debug!(group = %shared.config.group_id, member_id = %self.member_id,
                from = self.epoch, to = response.member_epoch, "member epoch");
        }
        let joined = self.epoch == JOIN_EPOCH;
        self.epoch = response.member_epoch;
        if response.heartbeat_interval_ms > 0 {
            self.interval = Duration::from_millis(response.heartbeat_interval_ms as u64);
        }
        {
            let mut state = shared.state.lock();
            state.member_id = self.member_id.clone();
            state.generation = self.epoch;
            state.last_heartbeat = Some(Instant::now());
        }
        if joined {
            info!(group = %shared.config.group_id, member_id = %self.member_id, epoch = self.epoch, "joined");
        }
        if let Some(assignment) = response.assignment {
            self.unresolved = Some(
                assignment
                    .topic_partitions
                    .into_iter()
                    .map(|t| (t.topic_id, t.partitions))
                    .collect(),
            );
        }
        if let Some(target) = self.unresolved.take() {
            let (mut partitions, mut unknown) = resolve(&target, &self.names);
            if !unknown.is_empty() {
                self.refresh_topic_ids().await;
                (partitions, unknown) = resolve(&target, &self.names);
            }
            if !unknown.is_empty() {
                // Reconcile what is known now; the rest once Metadata knows its topics.
                warn!(group = %shared.config.group_id, topic_ids = ?unknown, "assigned topics not in metadata yet");
                self.unresolved = Some(target);
            }
            self.pending = Some(partitions);
        }
    }

    /// Looks up the ids of every topic (the target may name topics this member never asked about).
    async fn refresh_topic_ids(&mut self) {
        match self.shared.coordinator.topic_ids(None).await {
            Ok(topics) => {
                for (name, id) in topics {
                    self.ids.insert(name.clone(), id);
                    self.names.insert(id, name);
                }
            }
            Err(e) => {
                debug!(group = %self.shared.config.group_id, error = %e, "topic id lookup failed")
            }
        }
    }

    /// The owned partitions by topic id, as the heartbeat names them.
    fn owned_by_id(&self, owned: &[TopicPartition]) -> Vec<TopicPartitions> {
        let mut by_id: Vec<TopicPartitions> = Vec::new();
        for tp in owned {
            // Owned partitions came from a resolved target, so their ids are known.
            let Some(&id) = self.ids.get(&tp.topic) else {
                continue;
            };
            match by_id.iter_mut().find(|t| t.topic_id == id) {
                Some(t) => t.partitions.push(tp.partition),
                None => by_id.push(
                    TopicPartitions::default()
                        .with_topic_id(id)
                        .with_partitions(vec![tp.partition]),
                ),
            }
        }
        by_id
    }
}

/// A broker without the consumer protocol (before Kafka 4.0, or with it disabled) either does not
/// offer ConsumerGroupHeartbeat or answers it UNSUPPORTED_VERSION: say so in the error.
fn unsupported_hint(group: &str, error: Error) -> Error {
    match &error {
        Error::Connection {
            source: WireError::UnsupportedVersion { broker, .. },
            ..
        } => unsupported(group, broker),
        _ => error,
    }
}

fn unsupported(group: &str, broker: &str) -> Error {
    Error::Group {
        group: group.to_owned(),
        operation: "ConsumerGroupHeartbeat",
        code: ResponseError::UnsupportedVersion.code(),
        error: format!(
            "UnsupportedVersion: broker {broker} does not offer the consumer group protocol \
             (group.protocol=consumer needs Apache Kafka 4.0 or newer with the consumer protocol \
             enabled); use group.protocol=classic"
        ),
    }
}
