//! JoinGroup then SyncGroup, and the leader's part in between: decode every member's subscription
//! and run the assignor the group chose.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{JoinGroupRequest, SyncGroupRequest};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;
use tracing::{debug, info};

use super::reaction::{Operation, Step, apply_reaction};
use super::{Shared, group_id};
use crate::Error;
use crate::group::{Assignment, Assignor, MemberSubscription, Subscription, TopicPartition};

/// JoinGroup then SyncGroup; the leader computes the assignment. Returns this member's partitions.
pub(super) async fn join_and_sync(
    shared: &Shared,
    reason: &str,
) -> std::result::Result<Vec<TopicPartition>, Step> {
    let config = &shared.config;
    let (member_id, generation, owned) = {
        let s = shared.state.lock();
        (s.member_id.clone(), s.generation, s.owned.to_vec())
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
