//! Reading a group's committed offsets (OffsetFetch), for members and for tools that must not join.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafkit_resilience::BackoffPolicy;
use tokio::time::Instant;

use super::TopicPartition;
use super::coordinator::Coordinator;
use crate::{ClientConfig, Error, Result};

/// An offset committed for a partition, as OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset to read.
    pub offset: i64,
    /// The metadata stored with it.
    pub metadata: Option<String>,
}

/// A group member's identity as a transactional producer's offset commit carries it
/// (`send_offsets_to_transaction`): the coordinator refuses the commit when the member is no
/// longer in this generation, so a zombie that lost its partitions cannot commit for them
/// (KIP-447). Java's `ConsumerGroupMetadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    /// The group id.
    pub group_id: String,
    /// The generation (the member epoch under the consumer protocol); -1 for a standalone
    /// consumer, whose commits the coordinator does not check.
    pub generation_id: i32,
    /// The member id; empty for a standalone consumer.
    pub member_id: String,
    /// The static member's `group.instance.id`, if any.
    pub group_instance_id: Option<String>,
}

impl ConsumerGroupMetadata {
    /// The metadata of a consumer outside any group membership (Java's
    /// `new ConsumerGroupMetadata(groupId)`): generation -1, no member id, so the coordinator
    /// checks nothing and only the transactional id fences zombies.
    pub fn standalone(group_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        }
    }
}

/// The committed offsets of `partitions` in `group` (`None`: nothing committed), read without joining
/// the group, so a running group is not disturbed. Retriable coordinator errors are retried for 30 s.
pub async fn committed_offsets(
    client: &ClientConfig,
    group: &str,
    partitions: &[TopicPartition],
) -> Result<HashMap<TopicPartition, Option<CommittedOffset>>> {
    let timeout = Duration::from_secs(30);
    let coordinator = Coordinator::new(group.to_owned(), client, timeout);
    let retry = BackoffPolicy::new(Duration::from_millis(100), Duration::from_secs(1), 2.0, 0.2)?;
    fetch_committed(&coordinator, group, timeout, &retry, partitions).await
}

/// OffsetFetch with `require_stable` (offsets of pending transactions are waited for), retried with
/// `retry` until `request_timeout` while the coordinator is loading, moving or unreachable.
pub(crate) async fn fetch_committed(
    coordinator: &Coordinator,
    group: &str,
    request_timeout: Duration,
    retry: &BackoffPolicy,
    partitions: &[TopicPartition],
) -> Result<HashMap<TopicPartition, Option<CommittedOffset>>> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        by_topic
            .entry(tp.topic.as_str())
            .or_default()
            .push(tp.partition);
    }
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
        .with_require_stable(true)
        .with_topics(Some(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_owned())))
                        .with_partition_indexes(ps)
                })
                .collect(),
        ));
    let deadline = Instant::now() + request_timeout;
    let mut backoff = retry.start();
    loop {
        let error = match coordinator.send(&request, request_timeout, deadline).await {
            Ok((conn, response)) => {
                let group_error = ResponseError::try_from_code(response.error_code);
                let partition_error = response
                    .topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .find_map(|p| ResponseError::try_from_code(p.error_code));
                let Some(err) = group_error.or(partition_error) else {
                    let mut out = HashMap::new();
                    for t in response.topics {
                        for p in t.partitions {
                            let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                            let c = (p.committed_offset >= 0).then(|| CommittedOffset {
                                offset: p.committed_offset,
                                metadata: p
                                    .metadata
                                    .map(|m| m.to_string())
                                    .filter(|m| !m.is_empty()),
                            });
                            out.insert(tp, c);
                        }
                    }
                    return Ok(out);
                };
                if matches!(
                    err,
                    ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable
                ) {
                    coordinator.invalidate(&conn);
                }
                Error::Group {
                    group: group.to_owned(),
                    operation: "OffsetFetch",
                    code: err.code(),
                    error: format!("{err:?}"),
                }
            }
            Err(e) => e,
        };
        if !(error.is_retriable() && Instant::now() < deadline) {
            return Err(error);
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
