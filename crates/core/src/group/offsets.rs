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
