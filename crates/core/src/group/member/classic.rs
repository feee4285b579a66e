//! The classic protocol's member task, one loop you can read top to bottom.
//!
//! ```text
//!   ┌──────────────► (eager: revoke all) ──► JoinGroup ──► SyncGroup ──► apply assignment
//!   │                                            ▲    (leader assigns)        │
//!   │ rejoin (REBALANCE_IN_PROGRESS,             └── MEMBER_ID_REQUIRED        ▼
//!   │  cooperative revocation done,                                    heartbeat every
//!   │  generation/member errors -> lost)  ◄──────────────────────────  heartbeat.interval
//!   └──────────────────────────────────────────────────────────────────────────┘
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::messages::LeaveGroupRequest;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::handoff::{fail, lose, revoke};
use super::heartbeat::{HeartbeatExit, Heartbeats, heartbeat_until_change};
use super::join::join_and_sync;
use super::reaction::Step;
use super::{GroupEvent, Shared, group_id};
use crate::group::{RebalanceProtocol, TopicPartition};

/// The member task.
pub(super) async fn run(
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
            let owned: Vec<TopicPartition> = shared.state.lock().owned.to_vec();
            if !owned.is_empty() {
                revoke(
                    &shared,
                    &events,
                    owned,
                    &mut shutdown,
                    &mut Heartbeats(&shared),
                )
                .await;
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
            let newly: Vec<_> = new.difference(state.owned.set()).cloned().collect();
            let gone: Vec<_> = state.owned.set().difference(&new).cloned().collect();
            state.owned.add(newly.iter().cloned());
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
            revoke(
                &shared,
                &events,
                gone,
                &mut shutdown,
                &mut Heartbeats(&shared),
            )
            .await;
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
    let owned: Vec<TopicPartition> = shared.state.lock().owned.to_vec();
    if !owned.is_empty() {
        let (_never, mut no_shutdown) = watch::channel(false);
        revoke(
            shared,
            events,
            owned,
            &mut no_shutdown,
            &mut Heartbeats(shared),
        )
        .await;
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
    state.owned.take_all();
}
