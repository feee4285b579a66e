//! Commits and committed offsets, for the consumer: OffsetCommit with this member's generation (or
//! member epoch) and id, after [`Ownership::admit`](super::ownership::Ownership::admit) let the
//! offsets through; OffsetFetch, which also raises the commit floor.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::ownership::Admitted;
use super::{CommitReport, GroupMember, OffsetToCommit, Shared, group_id};
use crate::Result;
use crate::group::offsets::{self, CommittedOffset};
use crate::group::{GroupProtocol, TopicPartition};
use crate::wire::ApiRequest;

impl GroupMember {
    /// Commits `offsets` with the current generation (the member epoch under the consumer
    /// protocol) and member id. Partitions not owned in the current generation, and offsets not
    /// above this member's last commit for the partition, are not sent and are listed in the
    /// report. Retriable coordinator errors are retried until the request timeout; so is
    /// STALE_MEMBER_EPOCH (the member epoch moved on while the commit was on its way: sent again
    /// with the new epoch, for the partitions still owned under it).
    pub async fn commit(&self, offsets: &[OffsetToCommit]) -> Result<CommitReport> {
        let shared = &self.shared;
        let deadline = Instant::now() + shared.config.request_timeout;
        let mut backoff = shared.config.retry_backoff.start();
        let first = self.commit_once(offsets, deadline).await;
        self.note_offset_request(first.is_ok());
        let mut report = first?;
        loop {
            let stale: Vec<TopicPartition> = report
                .failed
                .iter()
                .filter(|(_, e)| e == "StaleMemberEpoch")
                .map(|(tp, _)| tp.clone())
                .collect();
            if stale.is_empty() || Instant::now() >= deadline {
                return Ok(report);
            }
            tokio::time::sleep(backoff.next_delay()).await;
            debug!(group = %shared.config.group_id, partitions = ?stale, "commit with a stale member epoch: again with the current one");
            report.failed.retain(|(tp, _)| !stale.contains(tp));
            let again: Vec<OffsetToCommit> = offsets
                .iter()
                .filter(|o| stale.contains(&o.partition))
                .cloned()
                .collect();
            let retried = self.commit_once(&again, deadline).await?;
            report.committed.extend(retried.committed);
            report.not_owned.extend(retried.not_owned);
            report.not_advanced.extend(retried.not_advanced);
            report.failed.extend(retried.failed);
        }
    }

    /// One commit through the gate: admitted offsets sent once (retried on coordinator moves and
    /// retriable errors until `deadline`).
    async fn commit_once(
        &self,
        offsets: &[OffsetToCommit],
        deadline: Instant,
    ) -> Result<CommitReport> {
        let shared = &self.shared;
        let (
            generation,
            member_id,
            Admitted {
                to_send,
                mut report,
            },
        ) = {
            let state = shared.state.lock();
            let admitted = state.owned.admit(state.may_commit(), offsets);
            (state.generation, state.member_id.clone(), admitted)
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
        // The classic protocol commits at v8 at most (as before KIP-848); a consumer-protocol member
        // must use v9+, where the generation field is the member epoch.
        let max_version = match shared.config.protocol {
            GroupProtocol::Classic => 8,
            GroupProtocol::Consumer => <OffsetCommitRequest as ApiRequest>::MAX_VERSION,
        };
        let mut backoff = shared.config.retry_backoff.start();
        let response = loop {
            let attempt = shared
                .coordinator
                .send_at_most(
                    &request,
                    max_version,
                    shared.config.request_timeout,
                    deadline,
                )
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
                        // Still owned in the same generation? Then the floor rises.
                        if state.generation == generation {
                            state.owned.raise_floor(&tp, offset);
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
        let result = fetch_committed(shared, partitions).await;
        self.note_offset_request(result.is_ok());
        let result = result?;
        let mut state = shared.state.lock();
        for (tp, c) in &result {
            if let Some(c) = c {
                state.owned.raise_floor(tp, c.offset);
            }
        }
        Ok(result)
    }
}

impl GroupMember {
    /// A fixed assignment has no heartbeat: its offset requests (commits, offset fetches) are what
    /// tell whether the coordinator is reachable. A group member's heartbeats tell that instead.
    fn note_offset_request(&self, answered: bool) {
        let mut state = self.shared.state.lock();
        if state.fixed {
            state.coordinator_reachable = answered;
        }
    }
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
