//! What the member tells the consumer, shared by both group protocols: revoke (and wait until the
//! consumer has drained and committed), lose (no commit) and fail.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::{GroupEvent, RevokeDone, Shared};
use crate::Error;
use crate::group::TopicPartition;

/// What keeps the membership alive while the consumer drains revoked partitions: the protocol's
/// heartbeat. Its answers are the protocol's business (a rebalance in progress is expected during
/// a revocation; a lost membership is handled after it).
pub(super) trait KeepAlive {
    /// How often to beat.
    fn interval(&self) -> Duration;
    /// One heartbeat.
    async fn beat(&mut self);
}

/// Tells the consumer to release `partitions` and waits until it has (or the rebalance timeout
/// passes), heartbeating meanwhile. The partitions stay owned (committable) until the consumer is done.
pub(super) async fn revoke(
    shared: &Shared,
    events: &mpsc::UnboundedSender<GroupEvent>,
    partitions: Vec<TopicPartition>,
    shutdown: &mut watch::Receiver<bool>,
    keep_alive: &mut impl KeepAlive,
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
        let mut tick = tokio::time::interval(keep_alive.interval());
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut rx => break,
                _ = &mut deadline => {
                    warn!(%group, "revocation not finished within the rebalance timeout; releasing anyway");
                    break;
                }
                _ = tick.tick() => {
                    keep_alive.beat().await;
                }
                _ = shutdown.changed() => {}
            }
        }
    }
    shared.state.lock().owned.release(&partitions);
}

/// The partitions are gone without a commit: take them out of the owned set first (so no commit can
/// be sent for them), forget the generation, then tell the consumer.
pub(super) fn lose(shared: &Shared, events: &mpsc::UnboundedSender<GroupEvent>, reason: &str) {
    let lost: Vec<TopicPartition> = {
        let mut state = shared.state.lock();
        state.generation = -1;
        state.owned.take_all()
    };
    warn!(group = %shared.config.group_id, %reason, partitions = ?lost, "partitions lost");
    if !lost.is_empty() {
        let _ = events.send(GroupEvent::Lost {
            partitions: lost,
            reason: reason.to_owned(),
        });
    }
}

/// The member stops for good: everything owned is lost, then the consumer hears why.
pub(super) fn fail(shared: &Shared, events: &mpsc::UnboundedSender<GroupEvent>, error: Error) {
    lose(shared, events, &format!("member failed: {error}"));
    warn!(group = %shared.config.group_id, %error, "group member stopped");
    let _ = events.send(GroupEvent::Failed { error });
}
