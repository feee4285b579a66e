//! Heartbeats of the classic protocol: every `heartbeat.interval` while the assignment holds, and
//! while the consumer drains a revocation.

use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::HeartbeatRequest;
use kafka_protocol::protocol::StrBytes;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use super::handoff::KeepAlive;
use super::reaction::{Operation, Step, apply_reaction};
use super::{Shared, group_id};
use crate::Error;

/// What the heartbeat phase ended with.
pub(super) enum HeartbeatExit {
    Rejoin(String),
    Lost(String),
    Shutdown,
    Fatal(Error),
}

/// Heartbeats every `heartbeat.interval` until a rebalance starts, membership is lost, or shutdown.
pub(super) async fn heartbeat_until_change(
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
pub(super) async fn heartbeat_once(shared: &Shared) -> std::result::Result<(), Step> {
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

/// Classic heartbeats while the consumer drains: a rebalance in progress is expected then, and a lost
/// membership is found by the next join.
pub(super) struct Heartbeats<'a>(pub(super) &'a Shared);

impl KeepAlive for Heartbeats<'_> {
    fn interval(&self) -> Duration {
        self.0.config.heartbeat_interval
    }

    async fn beat(&mut self) {
        let _ = heartbeat_once(self.0).await;
    }
}
