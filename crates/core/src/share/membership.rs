//! Share-group membership (KIP-932): one ShareGroupHeartbeat loop.
//!
//! ```text
//!   join: heartbeat at epoch 0 ──► heartbeat every interval (the broker's) ◄──┐
//!                                     │ response: member epoch, maybe a new assignment
//!                                     └─► publish the assignment to the fetcher ─┘
//!   FENCED_MEMBER_EPOCH / UNKNOWN_MEMBER_ID: assignment emptied, rejoin at epoch 0 (same member id)
//!   leave (once the fetcher has closed its sessions): heartbeat at epoch -1
//! ```
//!
//! Much like the consumer protocol's member (`group::member::consumer_protocol`), whose decisions it
//! reuses (`reconcile::react`, `resolve`, `new_member_id`), but simpler: a share group's partitions
//! are shared, so nothing is revoked or drained before an assignment changes; the fetcher just
//! fetches from the new set (records it holds from a partition that left keep their locks and are
//! acknowledged as usual).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ShareGroupHeartbeatRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafkit_resilience::{Backoff, BackoffPolicy};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::group::TopicPartition;
use crate::group::coordinator::{Coordinator, describe};
use crate::group::member::group_id;
use crate::group::member::reconcile::{self, JOIN_EPOCH, Reaction, resolve};
use crate::wire::WireError;
use crate::{Error, Result};

/// How often to heartbeat until the broker says (`group.share.heartbeat.interval.ms` default).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// The partitions assigned to this member, with their topic ids (ShareFetch names topics by id).
pub(crate) type Assignment = Arc<BTreeMap<TopicPartition, Uuid>>;

/// What the fetcher reads of the membership.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemberView {
    pub(crate) member_id: String,
    /// The member epoch; 0 while joining.
    pub(crate) epoch: i32,
    pub(crate) assignment: Assignment,
}

/// The membership settings.
#[derive(Debug, Clone)]
pub(crate) struct MemberSettings {
    pub(crate) group_id: String,
    pub(crate) topics: Vec<String>,
    pub(crate) rack_id: Option<String>,
    pub(crate) request_timeout: Duration,
    pub(crate) retry_backoff: BackoffPolicy,
}

/// The heartbeat loop's state. Owned by the membership task.
struct Member {
    coordinator: Arc<Coordinator>,
    settings: MemberSettings,
    member_id: String,
    epoch: i32,
    interval: Duration,
    names: HashMap<Uuid, String>,
    /// The last assignment received while some of its topic ids are still unknown.
    unresolved: Option<Vec<(Uuid, Vec<i32>)>>,
    view: watch::Sender<MemberView>,
}

/// Heartbeats until `leave` turns true, then leaves the group. Publishes the membership on `view`.
/// Returns an error when the member cannot go on (the broker has no share groups, authorization).
pub(crate) async fn run(
    coordinator: Arc<Coordinator>,
    settings: MemberSettings,
    view: watch::Sender<MemberView>,
    mut leave: watch::Receiver<bool>,
) -> Result<()> {
    let member_id = reconcile::new_member_id();
    view.send_modify(|v| v.member_id = member_id.clone());
    let mut backoff: Backoff = settings.retry_backoff.start();
    let mut m = Member {
        coordinator,
        settings,
        member_id,
        epoch: JOIN_EPOCH,
        interval: DEFAULT_INTERVAL,
        names: HashMap::new(),
        unresolved: None,
        view,
    };
    let mut next = Instant::now();
    loop {
        if *leave.borrow() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = leave.changed() => break,
        }
        let beat = tokio::select! {
            r = m.beat() => r,
            _ = leave.changed() => break,
        };
        match beat {
            Ok(()) => {
                backoff.reset();
                next = Instant::now() + m.interval;
            }
            Err(Beat::Fenced(why)) => {
                warn!(group = %m.settings.group_id, member_id = %m.member_id, reason = %why, "fenced; rejoining");
                m.epoch = JOIN_EPOCH;
                m.unresolved = None;
                m.publish(BTreeMap::new());
                next = Instant::now();
            }
            Err(Beat::Retry(why)) => {
                let delay = backoff.next_delay();
                debug!(group = %m.settings.group_id, reason = %why, ?delay, "share heartbeat failed; retrying");
                next = Instant::now() + delay;
            }
            Err(Beat::Fatal(e)) => {
                m.publish(BTreeMap::new());
                return Err(e);
            }
        }
    }
    m.leave().await;
    Ok(())
}

enum Beat {
    Fenced(String),
    Retry(String),
    Fatal(Error),
}

impl Member {
    fn publish(&self, assignment: BTreeMap<TopicPartition, Uuid>) {
        let epoch = self.epoch;
        let member_id = self.member_id.clone();
        self.view.send_modify(|v| {
            v.member_id = member_id;
            v.epoch = epoch;
            v.assignment = Arc::new(assignment);
        });
    }

    async fn beat(&mut self) -> std::result::Result<(), Beat> {
        let s = &self.settings;
        let joining = self.epoch == JOIN_EPOCH;
        let request = ShareGroupHeartbeatRequest::default()
            .with_group_id(group_id(&s.group_id))
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_member_epoch(self.epoch)
            .with_rack_id(s.rack_id.clone().map(StrBytes::from_string))
            .with_subscribed_topic_names(joining.then(|| {
                s.topics
                    .iter()
                    .map(|t| TopicName(StrBytes::from_string(t.clone())))
                    .collect()
            }));
        let deadline = Instant::now() + s.request_timeout;
        let (conn, response) = match self
            .coordinator
            .send(&request, s.request_timeout, deadline)
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_retriable() => return Err(Beat::Retry(e.to_string())),
            Err(e) => return Err(Beat::Fatal(unsupported_hint(&s.group_id, e))),
        };
        if let Some(error) = ResponseError::try_from_code(response.error_code) {
            let why = format!(
                "{} on ShareGroupHeartbeat (member epoch {})",
                describe(error, response.error_message.as_deref()),
                self.epoch
            );
            return Err(match reconcile::react(error) {
                Reaction::Fenced => Beat::Fenced(why),
                Reaction::Retry {
                    rediscover_coordinator,
                } => {
                    if rediscover_coordinator {
                        self.coordinator.invalidate(&conn);
                    }
                    Beat::Retry(why)
                }
                Reaction::Fatal if error == ResponseError::UnsupportedVersion => {
                    Beat::Fatal(unsupported(&s.group_id, conn.broker()))
                }
                Reaction::Fatal => Beat::Fatal(Error::Group {
                    group: s.group_id.clone(),
                    operation: "ShareGroupHeartbeat",
                    code: error.code(),
                    error: describe(error, response.error_message.as_deref()),
                }),
            });
        }
        if let Some(id) = response.member_id.filter(|id| !id.is_empty())
            && *id != *self.member_id
        {
            self.member_id = id.to_string();
        }
        self.epoch = response.member_epoch;
        if response.heartbeat_interval_ms > 0 {
            self.interval = Duration::from_millis(response.heartbeat_interval_ms as u64);
        }
        if joining {
            info!(group = %s.group_id, member_id = %self.member_id, epoch = self.epoch, "joined the share group");
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
            let (_, unknown) = resolve(&target, &self.names);
            if !unknown.is_empty() {
                match self.coordinator.topic_ids(None).await {
                    Ok(topics) => self.names.extend(topics.into_iter().map(|(n, id)| (id, n))),
                    Err(e) => debug!(group = %s.group_id, error = %e, "topic id lookup failed"),
                }
            }
            let mut assignment = BTreeMap::new();
            for (id, partitions) in &target {
                match self.names.get(id) {
                    Some(name) => assignment.extend(
                        partitions
                            .iter()
                            .map(|&p| (TopicPartition::new(name.clone(), p), *id)),
                    ),
                    None => {
                        warn!(group = %s.group_id, topic_id = %id, "assigned topic not in metadata yet");
                        self.unresolved = Some(target.clone());
                    }
                }
            }
            info!(group = %s.group_id, member_id = %self.member_id, epoch = self.epoch,
                partitions = ?assignment.keys().collect::<Vec<_>>(), "share assignment");
            self.publish(assignment);
        } else {
            let epoch = self.epoch;
            self.view.send_if_modified(|v| {
                let changed = v.epoch != epoch;
                v.epoch = epoch;
                changed
            });
        }
        Ok(())
    }

    /// The leave heartbeat (epoch -1): the broker releases whatever this member still holds.
    async fn leave(&mut self) {
        self.publish(BTreeMap::new());
        if self.epoch <= JOIN_EPOCH {
            return;
        }
        let s = &self.settings;
        let request = ShareGroupHeartbeatRequest::default()
            .with_group_id(group_id(&s.group_id))
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_member_epoch(-1);
        let deadline = Instant::now() + s.request_timeout;
        match self
            .coordinator
            .send(&request, s.request_timeout, deadline)
            .await
        {
            Ok((_, r)) if r.error_code == 0 => {
                info!(group = %s.group_id, member_id = %self.member_id, "left the share group")
            }
            Ok((_, r)) => {
                warn!(group = %s.group_id, code = r.error_code, "leave heartbeat rejected")
            }
            Err(e) => {
                warn!(group = %s.group_id, error = %e, "leave heartbeat failed; the session timeout will expel the member")
            }
        }
        self.epoch = -1;
        self.publish(BTreeMap::new());
    }
}

/// A broker without share groups does not offer ShareGroupHeartbeat (before Kafka 4.1) or answers
/// it UNSUPPORTED_VERSION (the `share.version` feature off): say so.
pub(crate) fn unsupported_hint(group: &str, error: Error) -> Error {
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
        operation: "ShareGroupHeartbeat",
        code: ResponseError::UnsupportedVersion.code(),
        error: format!(
            "UnsupportedVersion: broker {broker} does not offer share groups (KIP-932 needs Apache \
             Kafka 4.1 or newer, production-ready from 4.2, with the `share.version` feature \
             enabled: `kafka-features.sh upgrade --feature share.version=1`)"
        ),
    }
}
