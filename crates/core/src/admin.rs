//! Group administration for tools: list the groups of a cluster, describe one group's members and
//! assignments, and measure its lag. Nothing here joins a group, so a running group is not disturbed.
//!
//! Each call opens its own short-lived connections (kafkit's `wire` layer) and closes them when it
//! returns; these are one-shot questions from a CLI or a health check, not a hot path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::try_join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, ListGroupsRequest,
    ListOffsetsRequest, MetadataRequest, MetadataResponse, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::group::{Assignment, CONSUMER_PROTOCOL_TYPE, TopicPartition};
use crate::wire::{ApiRequest, Connection, WireError};
use crate::{ClientConfig, Error, Result};

/// How long each admin request may take, and how long a TCP connect to one broker may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// ListOffsets timestamp meaning "the log end offset".
const LATEST_TIMESTAMP: i64 = -1;

/// One group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupListing {
    /// The group id.
    pub group_id: String,
    /// `consumer` for consumer groups; `connect` and others for other users of the group protocol.
    pub protocol_type: String,
    /// `Stable`, `Empty`, `PreparingRebalance`, ... (empty if the broker is too old to say).
    pub state: String,
}

/// One group as its coordinator describes it (DescribeGroups).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// `Stable`, `Empty`, `PreparingRebalance`, `CompletingRebalance`.
    pub state: String,
    /// `consumer` for consumer groups; empty for a group with only committed offsets.
    pub protocol_type: String,
    /// The assignor the group chose (`range`, `cooperative-sticky`, ...); empty unless `Stable`.
    pub protocol: String,
    /// The coordinator, `host:port`.
    pub coordinator: String,
    /// The members, in the coordinator's order.
    pub members: Vec<MemberDescription>,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberDescription {
    /// The member id the coordinator gave it.
    pub member_id: String,
    /// Its `group.instance.id`, for static members.
    pub group_instance_id: Option<String>,
    /// Its `client.id`.
    pub client_id: String,
    /// The host it connected from, as the broker saw it (`/127.0.0.1`).
    pub host: String,
    /// The partitions it was assigned in the current generation (empty while rebalancing, and for
    /// groups whose protocol type is not `consumer`).
    pub assignment: Vec<TopicPartition>,
}

/// Who holds a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionOwner {
    /// The member id.
    pub member_id: String,
    /// The member's `client.id`.
    pub client_id: String,
    /// The member's host.
    pub host: String,
}

/// A partition's committed offset, log end offset and lag for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's committed offset (the next offset it will read), if it committed one.
    pub committed: Option<i64>,
    /// The log end offset (high watermark, read-uncommitted, as `kafka-consumer-groups` shows).
    pub end: i64,
    /// `end - committed`, when there is a commit.
    pub lag: Option<i64>,
    /// The member assigned the partition, if any.
    pub owner: Option<PartitionOwner>,
}

/// Every group on every broker of the cluster (ListGroups on each broker from Metadata), sorted by id.
pub async fn list_groups(client: &ClientConfig) -> Result<Vec<GroupListing>> {
    let bootstrap = connect_bootstrap(client).await?;
    let metadata = metadata(&bootstrap, Some(&[])).await?;
    let brokers = brokers(&metadata);
    let listings = try_join_all(brokers.values().map(|address| async move {
        let conn = connect(client, address).await?;
        let response = send(&conn, &ListGroupsRequest::default(), "ListGroups").await?;
        if response.error_code != 0 {
            return Err(Error::Connection {
                context: format!("ListGroups on broker {address}"),
                source: WireError::Io {
                    broker: address.clone(),
                    message: error_name(response.error_code),
                },
            });
        }
        Ok(response.groups)
    }))
    .await?;
    let mut groups = BTreeMap::new();
    for g in listings.into_iter().flatten() {
        let id = g.group_id.0.to_string();
        groups.insert(
            id.clone(),
            GroupListing {
                group_id: id,
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
            },
        );
    }
    Ok(groups.into_values().collect())
}

/// `group` as its coordinator describes it. A group that does not exist (no members and no committed
/// offsets) is an [`Error::Group`] with code `GROUP_ID_NOT_FOUND` (69).
pub async fn describe_group(client: &ClientConfig, group: &str) -> Result<GroupDescription> {
    let coordinator = find_coordinator(client, group).await?;
    describe_on(&coordinator, group).await
}

/// Committed offset, log end offset and lag of every partition `group` has committed offsets for or
/// has assigned to a member, sorted by topic and partition.
pub async fn group_lag(client: &ClientConfig, group: &str) -> Result<Vec<PartitionLag>> {
    let coordinator = find_coordinator(client, group).await?;
    let description = describe_on(&coordinator, group).await?;
    lag_on(client, &coordinator, &description).await
}

/// [`describe_group`] and [`group_lag`] from one coordinator lookup, the owners taken from the
/// returned description.
pub async fn describe_group_with_lag(
    client: &ClientConfig,
    group: &str,
) -> Result<(GroupDescription, Vec<PartitionLag>)> {
    let coordinator = find_coordinator(client, group).await?;
    let description = describe_on(&coordinator, group).await?;
    let lag = lag_on(client, &coordinator, &description).await?;
    Ok((description, lag))
}

/// A connection to the first bootstrap broker that answers; none answering is [`Error::Unreachable`].
async fn connect_bootstrap(client: &ClientConfig) -> Result<Connection> {
    let started = tokio::time::Instant::now();
    let mut last = None;
    for address in client.bootstrap() {
        match Connection::connect(address, client.client_id_str(), REQUEST_TIMEOUT).await {
            Ok(conn) => return Ok(conn),
            Err(e) => {
                tracing::debug!(broker = %address, error = %e, "bootstrap broker not reachable");
                last = Some(e);
            }
        }
    }
    match last {
        Some(WireError::Connect { .. }) | None => Err(Error::Unreachable {
            bootstrap: client.bootstrap().join(","),
            waited: started.elapsed(),
        }),
        Some(source) => Err(Error::Connection {
            context: format!("connecting to {}", client.bootstrap().join(",")),
            source,
        }),
    }
}

async fn connect(client: &ClientConfig, address: &str) -> Result<Connection> {
    Connection::connect(address, client.client_id_str(), REQUEST_TIMEOUT)
        .await
        .map_err(|source| Error::Connection {
            context: format!("connecting to broker {address}"),
            source,
        })
}

async fn send<R: ApiRequest>(conn: &Connection, request: &R, what: &str) -> Result<R::Response> {
    conn.send(request, REQUEST_TIMEOUT)
        .await
        .map_err(|source| Error::Connection {
            context: format!("{what} on broker {}", conn.broker()),
            source,
        })
}

/// Metadata for `topics` (`Some(&[])`: brokers only; `None`: every topic).
async fn metadata(conn: &Connection, topics: Option<&[String]>) -> Result<MetadataResponse> {
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                })
                .collect()
        }));
    send(conn, &request, "Metadata").await
}

fn brokers(metadata: &MetadataResponse) -> BTreeMap<BrokerId, String> {
    metadata
        .brokers
        .iter()
        .map(|b| (b.node_id, format!("{}:{}", b.host.as_str(), b.port)))
        .collect()
}

async fn find_coordinator(client: &ClientConfig, group: &str) -> Result<Connection> {
    let bootstrap = connect_bootstrap(client).await?;
    let request = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(group.to_owned()))
        .with_key_type(0);
    // The coordinator may be loading right after a broker start; ask again for a while.
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    let response = loop {
        let response = send(&bootstrap, &request, "FindCoordinator").await?;
        match ResponseError::try_from_code(response.error_code) {
            None => break response,
            Some(err) if err.is_retriable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some(err) => return Err(group_error(group, "FindCoordinator", err, None)),
        }
    };
    connect(
        client,
        &format!("{}:{}", response.host.as_str(), response.port),
    )
    .await
}

/// Kafka's name for an error code (`NotLeaderOrFollower`), or the bare code if it is unknown.
fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(err) => format!("broker answered {err:?} (error code {code})"),
        None => format!("broker answered error code {code}"),
    }
}

fn group_error(
    group: &str,
    operation: &'static str,
    err: ResponseError,
    message: Option<&str>,
) -> Error {
    Error::Group {
        group: group.to_owned(),
        operation,
        code: err.code(),
        error: match message {
            Some(m) if !m.is_empty() => format!("{err:?}: {m}"),
            _ => format!("{err:?}"),
        },
    }
}

async fn describe_on(coordinator: &Connection, group: &str) -> Result<GroupDescription> {
    let request = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_string(group.to_owned()))]);
    let response = send(coordinator, &request, "DescribeGroups").await?;
    let Some(described) = response.groups.into_iter().next() else {
        return Err(Error::Connection {
            context: format!("group `{group}`: DescribeGroups"),
            source: WireError::Codec {
                broker: coordinator.broker().to_owned(),
                api: DescribeGroupsRequest::KEY,
                message: "the response describes no group".into(),
            },
        });
    };
    if let Some(err) = ResponseError::try_from_code(described.error_code) {
        return Err(group_error(
            group,
            "DescribeGroups",
            err,
            described.error_message.as_deref(),
        ));
    }
    // DescribeGroups before v6 answers an unknown group with the state `Dead` and no error.
    if described.group_state.as_str() == "Dead" {
        return Err(group_error(
            group,
            "DescribeGroups",
            ResponseError::GroupIdNotFound,
            Some("the group does not exist (no members and no committed offsets)"),
        ));
    }
    let consumer = described.protocol_type.as_str() == CONSUMER_PROTOCOL_TYPE;
    let members = described
        .members
        .into_iter()
        .map(|m| {
            let assignment = if consumer && !m.member_assignment.is_empty() {
                Assignment::decode(&m.member_assignment)?.partitions
            } else {
                Vec::new()
            };
            Ok(MemberDescription {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.map(|s| s.to_string()),
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                assignment,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(GroupDescription {
        group_id: group.to_owned(),
        state: described.group_state.to_string(),
        protocol_type: described.protocol_type.to_string(),
        protocol: described.protocol_data.to_string(),
        coordinator: coordinator.broker().to_owned(),
        members,
    })
}

/// Every committed offset of `group` (OffsetFetch with no topic list: all of them).
async fn all_committed(
    coordinator: &Connection,
    group: &str,
) -> Result<HashMap<TopicPartition, i64>> {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
        .with_topics(None);
    let response = send(coordinator, &request, "OffsetFetch").await?;
    if let Some(err) = ResponseError::try_from_code(response.error_code) {
        return Err(group_error(group, "OffsetFetch", err, None));
    }
    let mut out = HashMap::new();
    for t in response.topics {
        for p in t.partitions {
            if let Some(err) = ResponseError::try_from_code(p.error_code) {
                return Err(group_error(group, "OffsetFetch", err, None));
            }
            if p.committed_offset >= 0 {
                out.insert(
                    TopicPartition::new(t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    Ok(out)
}

async fn lag_on(
    client: &ClientConfig,
    coordinator: &Connection,
    description: &GroupDescription,
) -> Result<Vec<PartitionLag>> {
    let group = description.group_id.as_str();
    let committed = all_committed(coordinator, group).await?;
    let mut owners: HashMap<&TopicPartition, PartitionOwner> = HashMap::new();
    for m in &description.members {
        for tp in &m.assignment {
            owners.insert(
                tp,
                PartitionOwner {
                    member_id: m.member_id.clone(),
                    client_id: m.client_id.clone(),
                    host: m.host.clone(),
                },
            );
        }
    }
    let partitions: BTreeSet<TopicPartition> = committed
        .keys()
        .chain(owners.keys().copied())
        .cloned()
        .collect();
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let ends = end_offsets(client, &partitions).await?;
    Ok(partitions
        .into_iter()
        .filter_map(|tp| {
            let end = *ends.get(&tp)?;
            let committed = committed.get(&tp).copied();
            Some(PartitionLag {
                owner: owners.get(&tp).cloned(),
                lag: committed.map(|c| end - c),
                committed,
                end,
                topic: tp.topic,
                partition: tp.partition,
            })
        })
        .collect())
}

/// Log end offsets of `partitions`: ListOffsets (latest) to each partition's leader, from Metadata.
/// Partitions of topics that no longer exist are left out.
async fn end_offsets(
    client: &ClientConfig,
    partitions: &BTreeSet<TopicPartition>,
) -> Result<HashMap<TopicPartition, i64>> {
    let bootstrap = connect_bootstrap(client).await?;
    let topics: Vec<String> = partitions
        .iter()
        .map(|tp| tp.topic.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let metadata = metadata(&bootstrap, Some(&topics)).await?;
    let brokers = brokers(&metadata);
    let mut by_leader: BTreeMap<BrokerId, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    for t in &metadata.topics {
        let Some(name) = &t.name else { continue };
        if t.error_code != 0 {
            continue;
        }
        for p in &t.partitions {
            let tp = TopicPartition::new(name.0.to_string(), p.partition_index);
            if !partitions.contains(&tp) {
                continue;
            }
            if p.leader_id.0 < 0 {
                return Err(Error::Connection {
                    context: format!("{tp}: no leader to ask for the log end offset"),
                    source: WireError::Io {
                        broker: bootstrap.broker().to_owned(),
                        message: error_name(p.error_code),
                    },
                });
            }
            by_leader
                .entry(p.leader_id)
                .or_default()
                .entry(tp.topic)
                .or_default()
                .push(tp.partition);
        }
    }
    let brokers = Arc::new(brokers);
    let answers = try_join_all(by_leader.into_iter().map(|(leader, topics)| {
        let brokers = Arc::clone(&brokers);
        async move {
            let Some(address) = brokers.get(&leader) else {
                return Err(Error::Connection {
                    context: format!("ListOffsets: leader {} is not in the metadata", leader.0),
                    source: WireError::Connect {
                        broker: format!("node {}", leader.0),
                        message: "unknown broker".into(),
                    },
                });
            };
            let conn = connect(client, address).await?;
            let request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_isolation_level(0)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(topic, ps)| {
                            ListOffsetsTopic::default()
                                .with_name(TopicName(StrBytes::from_string(topic)))
                                .with_partitions(
                                    ps.into_iter()
                                        .map(|p| {
                                            ListOffsetsPartition::default()
                                                .with_partition_index(p)
                                                .with_current_leader_epoch(-1)
                                                .with_timestamp(LATEST_TIMESTAMP)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                );
            let response = send(&conn, &request, "ListOffsets").await?;
            Ok((address.clone(), response))
        }
    }))
    .await?;
    let mut out = HashMap::new();
    for (broker, response) in answers {
        for t in response.topics {
            for p in t.partitions {
                let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                if p.error_code != 0 {
                    return Err(Error::Connection {
                        context: format!("ListOffsets for {tp}"),
                        source: WireError::Io {
                            broker: broker.clone(),
                            message: error_name(p.error_code),
                        },
                    });
                }
                out.insert(tp, p.offset);
            }
        }
    }
    Ok(out)
}
