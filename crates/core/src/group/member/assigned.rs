//! The member kind of a fixed assignment ([`GroupConfig::assigned`](crate::group::GroupConfig::assigned)),
//! Java's `assign()`: no membership at all. The partitions are owned from the start (one
//! `Assigned`, generation -1) until shutdown, which revokes them all, so the consumer drains and
//! commits them as at any revocation. Commits pass the same gate as a group member's
//! (`Ownership::admit`, which lets a fixed assignment commit without a generation) and go out as a
//! standalone consumer's: generation -1, no member id.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::info;

use super::handoff::{KeepAlive, revoke};
use super::{GroupEvent, Shared};

/// Nothing to keep alive while the consumer drains: there is no membership.
struct NoMembership(Duration);

impl KeepAlive for NoMembership {
    fn interval(&self) -> Duration {
        self.0
    }
    async fn beat(&mut self) {}
}

/// The member task: assign, wait for shutdown, revoke.
pub(super) async fn run(
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<GroupEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let partitions = shared.config.assignment.clone().unwrap_or_default();
    info!(group = %shared.config.group_id, ?partitions, "assigned (fixed assignment, no group membership)");
    shared.state.lock().owned.add(partitions.clone());
    let _ = events.send(GroupEvent::Assigned {
        generation: -1,
        partitions: partitions.clone(),
    });
    if !*shutdown.borrow_and_update() {
        // Err: the handle is gone, as at shutdown.
        let _ = shutdown.changed().await;
    }
    let mut keep_alive = NoMembership(shared.config.rebalance_timeout);
    revoke(&shared, &events, partitions, &mut shutdown, &mut keep_alive).await;
}
