//! Cluster administration for tools: describe the cluster (brokers, controller, API versions,
//! topics with their leaders and in-sync replicas), create and delete topics, list the groups of a
//! cluster, describe one group's members and assignments, and measure its lag. Nothing here joins a
//! group, so a running group is not disturbed.
//!
//! `reset`: moving an inactive group's committed offsets (`kafka-consumer-groups --reset-offsets`).
//!
//! Each call opens its own short-lived connections (kafkit's `wire` layer) and closes them when it
//! returns; these are one-shot questions from a CLI or a health check, not a hot path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::try_join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ConsumerGroupDescribeRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeGroupsRequest, DescribeShareGroupOffsetsRequest, FindCoordinatorRequest, GroupId,
    IncrementalAlterConfigsRequest, ListGroupsRequest, ListOffsetsRequest, MetadataResponse,
    OffsetFetchRequest, ShareGroupDescribeRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

mod reset;

pub use reset::{OffsetResetPlan, ResetScope, ResetTo, reset_offsets};

use crate::group::{Assignment, CONSUMER_PROTOCOL_TYPE, TopicPartition};
use crate::wire::{ApiRequest, Connection, WireError, metadata_request};
use crate::{ClientConfig, Error, Result};

/// How long each admin request may take (connecting is bounded by the client's connect timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// ListOffsets timestamps meaning "the log end offset" and "the log start offset".
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;

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
    /// Which group protocol: `classic` (JoinGroup/SyncGroup), `consumer` (KIP-848), `share`,
    /// `streams` (empty if the broker is too old to say: before Kafka 3.8 every group is classic).
    pub group_type: String,
}

/// One group as its coordinator describes it: DescribeGroups for classic groups,
/// ConsumerGroupDescribe for groups of the KIP-848 consumer protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// `classic` (JoinGroup/SyncGroup, described by DescribeGroups), `consumer` (the KIP-848
    /// protocol, described by ConsumerGroupDescribe) or `share` (KIP-932, described by
    /// ShareGroupDescribe; its members share partitions and it has no committed offsets).
    pub group_type: String,
    /// Classic: `Stable`, `Empty`, `PreparingRebalance`, `CompletingRebalance`. Consumer protocol:
    /// `Stable`, `Empty`, `Assigning`, `Reconciling`.
    pub state: String,
    /// `consumer` for consumer groups (both protocols); empty for a classic group with only
    /// committed offsets.
    pub protocol_type: String,
    /// The assignor the group chose (`range`, `cooperative-sticky`, ...; for the consumer protocol
    /// the broker's assignor, `uniform` or `range`); empty for a classic group unless `Stable`.
    pub protocol: String,
    /// The group epoch (consumer protocol only): bumped whenever membership or subscriptions
    /// change.
    pub group_epoch: Option<i32>,
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
    /// The partitions it owns: in a classic group those of the current generation (empty while
    /// rebalancing, and for groups whose protocol type is not `consumer`); in a consumer-protocol
    /// group those it has reconciled (its target may hold more, or fewer, while it reconciles).
    pub assignment: Vec<TopicPartition>,
    /// The member epoch (consumer protocol only): the group epoch its assignment is at.
    pub member_epoch: Option<i32>,
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
    /// The group's committed offset (the next offset it will read), if it committed one. For a
    /// share group: the share-partition start offset (every record before it is acknowledged or
    /// archived), as `kafka-share-groups --describe` shows it.
    pub committed: Option<i64>,
    /// The log end offset (high watermark, read-uncommitted, as `kafka-consumer-groups` shows).
    pub end: i64,
    /// `end - committed`, when there is a commit. For a share group this counts the records from
    /// the start offset on, acknowledged ones in the in-flight window included (an upper bound of
    /// what the broker itself reports as lag; equal to it once the window is settled).
    pub lag: Option<i64>,
    /// The member assigned the partition, if any (none for a share group: a share partition goes
    /// to several members at once, which the members' assignments list).
    pub owner: Option<PartitionOwner>,
}

/// A broker of the cluster, as Metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerDescription {
    /// The node id.
    pub id: i32,
    /// The advertised host.
    pub host: String,
    /// The advertised port.
    pub port: i32,
    /// The rack, if configured.
    pub rack: Option<String>,
}

/// A partition's leader and replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionDescription {
    /// The partition.
    pub partition: i32,
    /// The leader's node id; `None` when the partition is offline (no leader).
    pub leader: Option<i32>,
    /// The replicas' node ids.
    pub replicas: Vec<i32>,
    /// The in-sync replicas' node ids.
    pub isr: Vec<i32>,
    /// Replicas on brokers that are down.
    pub offline: Vec<i32>,
    /// The broker's error for this partition (`LeaderNotAvailable`, ...), if any.
    pub error: Option<String>,
}

impl PartitionDescription {
    /// Fewer in-sync replicas than replicas: a broker is down or behind.
    pub fn is_under_replicated(&self) -> bool {
        self.isr.len() < self.replicas.len()
    }
}

/// A topic with its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicDescription {
    /// The topic.
    pub name: String,
    /// Kafka's own topics (`__consumer_offsets`, ...).
    pub internal: bool,
    /// The partitions, by partition number.
    pub partitions: Vec<PartitionDescription>,
}

/// The range of versions a broker supports for one API.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiVersionRange {
    /// The API key.
    pub key: i16,
    /// The API's name (`Fetch`, `JoinGroup`, ...), or `Unknown(<key>)` for APIs newer than kafkit.
    pub name: String,
    /// The broker's lowest version.
    pub min: i16,
    /// The broker's highest version.
    pub max: i16,
}

/// The cluster as one bootstrap broker describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterDescription {
    /// The bootstrap broker that answered.
    pub answered_by: String,
    /// The cluster id.
    pub cluster_id: Option<String>,
    /// The controller's node id as Metadata reports it (`None`: no controller known).
    pub controller: Option<i32>,
    /// The live brokers, by node id.
    pub brokers: Vec<BrokerDescription>,
    /// The API versions of the broker that answered, by key.
    pub api_versions: Vec<ApiVersionRange>,
    /// Every topic, internal ones included, by name.
    pub topics: Vec<TopicDescription>,
}

/// A topic to create. Partitions and replication factor default to the broker's
/// `num.partitions` and `default.replication.factor`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewTopic {
    /// The topic.
    pub name: String,
    /// The partition count, or `None` for the broker's default.
    pub partitions: Option<i32>,
    /// The replication factor, or `None` for the broker's default.
    pub replication_factor: Option<i16>,
    /// Topic configs (`retention.ms`, `cleanup.policy`, ...).
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    /// `name` with the broker's default partitions and replication factor.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            partitions: None,
            replication_factor: None,
            configs: BTreeMap::new(),
        }
    }

    /// The partition count.
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// The replication factor.
    pub fn replication_factor(mut self, factor: i16) -> Self {
        self.replication_factor = Some(factor);
        self
    }

    /// A topic config.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.insert(key.into(), value.into());
        self
    }
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
            return Err(admin_error(
                "ListGroups",
                format!("broker {address}"),
                response.error_code,
                None,
            ));
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
                group_type: g.group_type.to_string(),
            },
        );
    }
    Ok(groups.into_values().collect())
}

/// `group` as its coordinator describes it, whichever protocol it uses (classic or KIP-848
/// consumer). A group that does not exist (no members and no committed offsets) is an
/// [`Error::Group`] with code `GROUP_ID_NOT_FOUND` (69).
pub async fn describe_group(client: &ClientConfig, group: &str) -> Result<GroupDescription> {
    Ok(coordinator_description(client, group).await?.1)
}

/// Committed offset, log end offset and lag of every partition `group` has committed offsets for or
/// has assigned to a member, sorted by topic and partition.
pub async fn group_lag(client: &ClientConfig, group: &str) -> Result<Vec<PartitionLag>> {
    let (coordinator, description) = coordinator_description(client, group).await?;
    lag_on(client, &coordinator, &description).await
}

/// [`describe_group`] and [`group_lag`] from one coordinator lookup, the owners taken from the
/// returned description.
pub async fn describe_group_with_lag(
    client: &ClientConfig,
    group: &str,
) -> Result<(GroupDescription, Vec<PartitionLag>)> {
    let (coordinator, description) = coordinator_description(client, group).await?;
    let lag = lag_on(client, &coordinator, &description).await?;
    Ok((description, lag))
}

/// Sets group-level configs of `group` (IncrementalAlterConfigs on the GROUP resource, Kafka
/// 4.0+), as `kafka-configs --alter --entity-type groups --add-config` does: e.g. a share group's
/// `share.auto.offset.reset`, `share.record.lock.duration.ms` or `share.delivery.count.limit`.
/// The group need not exist yet.
pub async fn alter_group_configs(
    client: &ClientConfig,
    group: &str,
    configs: &[(&str, &str)],
) -> Result<()> {
    /// ConfigResource.Type.GROUP, and AlterConfigOp.OpType.SET.
    const GROUP_RESOURCE: i8 = 32;
    const SET: i8 = 0;
    let bootstrap = connect_bootstrap(client).await?;
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(GROUP_RESOURCE)
            .with_resource_name(StrBytes::from_string(group.to_owned()))
            .with_configs(
                configs
                    .iter()
                    .map(|(name, value)| {
                        AlterableConfig::default()
                            .with_name(StrBytes::from_string((*name).to_owned()))
                            .with_config_operation(SET)
                            .with_value(Some(StrBytes::from_string((*value).to_owned())))
                    })
                    .collect(),
            ),
    ]);
    let response = send(&bootstrap, &request, "IncrementalAlterConfigs").await?;
    for r in response.responses {
        if r.error_code != 0 {
            return Err(admin_error(
                "IncrementalAlterConfigs",
                format!("group `{group}`"),
                r.error_code,
                r.error_message.as_deref(),
            ));
        }
    }
    Ok(())
}

/// The group's coordinator and its description of the group. A coordinator that is still loading
/// the group's offsets partition, or no longer the coordinator (both usual right after a broker
/// starts or a partition moves), is asked again, found anew, for up to the request timeout.
async fn coordinator_description(
    client: &ClientConfig,
    group: &str,
) -> Result<(Connection, GroupDescription)> {
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    loop {
        let coordinator = find_coordinator(client, group).await?;
        match describe_any_on(&coordinator, group).await {
            Ok(description) => return Ok((coordinator, description)),
            Err(Error::Group { code, .. })
                if ResponseError::try_from_code(code).is_some_and(|e| {
                    matches!(
                        e,
                        ResponseError::CoordinatorLoadInProgress
                            | ResponseError::CoordinatorNotAvailable
                            | ResponseError::NotCoordinator
                    )
                }) && tokio::time::Instant::now() < deadline =>
            {
                tracing::debug!(group, code, "the coordinator is not ready; asking again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The cluster as the first reachable bootstrap broker describes it: brokers, controller, that
/// broker's API versions, and every topic with its leaders and replicas.
pub async fn describe_cluster(client: &ClientConfig) -> Result<ClusterDescription> {
    let bootstrap = connect_bootstrap(client).await?;
    let metadata = metadata(&bootstrap, None).await?;
    let mut api_versions: Vec<ApiVersionRange> = bootstrap
        .api_versions()
        .iter()
        .map(|(&key, &(min, max))| ApiVersionRange {
            key,
            name: match ApiKey::try_from(key) {
                Ok(api) => format!("{api:?}"),
                Err(()) => format!("Unknown({key})"),
            },
            min,
            max,
        })
        .collect();
    api_versions.sort_by_key(|v| v.key);
    let mut brokers: Vec<BrokerDescription> = metadata
        .brokers
        .iter()
        .map(|b| BrokerDescription {
            id: b.node_id.0,
            host: b.host.to_string(),
            port: b.port,
            rack: b.rack.as_ref().map(ToString::to_string),
        })
        .collect();
    brokers.sort_by_key(|b| b.id);
    Ok(ClusterDescription {
        answered_by: bootstrap.broker().to_owned(),
        cluster_id: metadata.cluster_id.as_ref().map(ToString::to_string),
        controller: (metadata.controller_id.0 >= 0).then_some(metadata.controller_id.0),
        brokers,
        api_versions,
        topics: topic_descriptions(&metadata)?,
    })
}

/// `topics` with their partitions, leaders and replicas, by name. A topic that does not exist is
/// [`Error::UnknownTopic`].
pub async fn describe_topics(
    client: &ClientConfig,
    topics: &[String],
) -> Result<Vec<TopicDescription>> {
    let bootstrap = connect_bootstrap(client).await?;
    let metadata = metadata(&bootstrap, Some(topics)).await?;
    topic_descriptions(&metadata)
}

/// Creates `topics` and waits until every partition of each has a leader, so the topics are ready
/// for producers and consumers when this returns. A topic that exists already is an
/// [`Error::Admin`] with code `TOPIC_ALREADY_EXISTS` (36); nothing is created if any topic is invalid.
pub async fn create_topics(client: &ClientConfig, topics: &[NewTopic]) -> Result<()> {
    let bootstrap = connect_bootstrap(client).await?;
    let controller = controller(client, &bootstrap).await?;
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(REQUEST_TIMEOUT.as_millis() as i32)
        .with_topics(
            topics
                .iter()
                .map(|t| {
                    CreatableTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.name.clone())))
                        .with_num_partitions(t.partitions.unwrap_or(-1))
                        .with_replication_factor(t.replication_factor.unwrap_or(-1))
                        .with_configs(
                            t.configs
                                .iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfig::default()
                                        .with_name(StrBytes::from_string(k.clone()))
                                        .with_value(Some(StrBytes::from_string(v.clone())))
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let response = send(&controller, &request, "CreateTopics").await?;
    for t in &response.topics {
        if t.error_code != 0 {
            return Err(admin_error(
                "CreateTopics",
                format!("topic `{}`", t.name.as_str()),
                t.error_code,
                t.error_message.as_deref(),
            ));
        }
    }
    let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
    wait_for_leaders(&bootstrap, &names).await
}

/// Deletes `topics`. A topic that does not exist is [`Error::UnknownTopic`]; the others are still
/// deleted.
pub async fn delete_topics(client: &ClientConfig, topics: &[String]) -> Result<()> {
    let bootstrap = connect_bootstrap(client).await?;
    let controller = controller(client, &bootstrap).await?;
    let request = DeleteTopicsRequest::default()
        .with_timeout_ms(REQUEST_TIMEOUT.as_millis() as i32)
        .with_topic_names(
            topics
                .iter()
                .map(|t| TopicName(StrBytes::from_string(t.clone())))
                .collect(),
        );
    let response = send(&controller, &request, "DeleteTopics").await?;
    for t in &response.responses {
        let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
        match ResponseError::try_from_code(t.error_code) {
            None => {}
            Some(ResponseError::UnknownTopicOrPartition) => {
                return Err(Error::UnknownTopic { topic: name });
            }
            Some(_) => {
                return Err(admin_error(
                    "DeleteTopics",
                    format!("topic `{name}`"),
                    t.error_code,
                    t.error_message.as_deref(),
                ));
            }
        }
    }
    Ok(())
}

/// A connection to the first bootstrap broker that answers, within the client's connect timeout:
/// the client's own bootstrap path, so a security mismatch is [`Error::Security`] and no broker
/// answering is [`Error::Unreachable`], as for the producer and the consumer.
async fn connect_bootstrap(client: &ClientConfig) -> Result<Connection> {
    client.bootstrap_connection().await
}

/// A connection to another broker of the cluster (a controller, a coordinator, a partition
/// leader), within the client's connect timeout.
async fn connect(client: &ClientConfig, address: &str) -> Result<Connection> {
    Connection::connect(address, client, client.connect_timeout_limit())
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
    send(conn, &metadata_request(topics), "Metadata").await
}

/// Topics of a Metadata response, sorted, with their partitions sorted. A topic the broker does not
/// know is [`Error::UnknownTopic`]; other topic errors are [`Error::Admin`].
fn topic_descriptions(metadata: &MetadataResponse) -> Result<Vec<TopicDescription>> {
    let mut topics = Vec::with_capacity(metadata.topics.len());
    for t in &metadata.topics {
        let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
        match ResponseError::try_from_code(t.error_code) {
            None => {}
            Some(ResponseError::UnknownTopicOrPartition) => {
                return Err(Error::UnknownTopic { topic: name });
            }
            Some(_) => {
                return Err(admin_error(
                    "Metadata",
                    format!("topic `{name}`"),
                    t.error_code,
                    None,
                ));
            }
        }
        let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
        let mut partitions: Vec<PartitionDescription> = t
            .partitions
            .iter()
            .map(|p| PartitionDescription {
                partition: p.partition_index,
                leader: (p.leader_id.0 >= 0).then_some(p.leader_id.0),
                replicas: ids(&p.replica_nodes),
                isr: ids(&p.isr_nodes),
                offline: ids(&p.offline_replicas),
                error: ResponseError::try_from_code(p.error_code).map(|e| format!("{e:?}")),
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        topics.push(TopicDescription {
            name,
            internal: t.is_internal,
            partitions,
        });
    }
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(topics)
}

/// A connection to the controller Metadata names (in KRaft a broker that forwards to the active
/// controller), or to the bootstrap broker when none is named.
async fn controller(client: &ClientConfig, bootstrap: &Connection) -> Result<Connection> {
    let metadata = metadata(bootstrap, Some(&[])).await?;
    match brokers(&metadata).get(&metadata.controller_id) {
        Some(address) if address != bootstrap.broker() => connect(client, address).await,
        _ => connect(client, bootstrap.broker()).await,
    }
}

/// Polls Metadata until every partition of `topics` has a leader.
async fn wait_for_leaders(conn: &Connection, topics: &[String]) -> Result<()> {
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    loop {
        let metadata = metadata(conn, Some(topics)).await?;
        let ready = metadata.topics.iter().all(|t| {
            t.error_code == 0
                && !t.partitions.is_empty()
                && t.partitions.iter().all(|p| p.leader_id.0 >= 0)
        });
        if ready {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Connection {
                context: format!("waiting for leaders of {}", topics.join(", ")),
                source: WireError::Timeout {
                    broker: conn.broker().to_owned(),
                    api: ApiKey::Metadata,
                    timeout: REQUEST_TIMEOUT,
                },
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

/// An admin request's error code as an [`Error::Admin`], with Kafka's name for the code
/// (`TopicAlreadyExists`) and the broker's message if it sent one.
fn admin_error(operation: &'static str, target: String, code: i16, message: Option<&str>) -> Error {
    let name = match ResponseError::try_from_code(code) {
        Some(err) => format!("{err:?}"),
        None => "unknown error".to_owned(),
    };
    Error::Admin {
        operation,
        target,
        code,
        error: match message {
            Some(m) if !m.is_empty() => format!("{name}: {m}"),
            _ => name,
        },
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

/// DescribeGroups, and for a group it does not know (a KIP-848 consumer group is not a classic
/// group) ConsumerGroupDescribe, where the broker has it (Kafka 3.7+). A group neither knows is
/// the classic answer's GROUP_ID_NOT_FOUND.
async fn describe_any_on(coordinator: &Connection, group: &str) -> Result<GroupDescription> {
    match describe_on(coordinator, group).await {
        Err(not_found @ Error::Group { code, .. })
            if code == ResponseError::GroupIdNotFound.code()
                && coordinator
                    .version_for::<ConsumerGroupDescribeRequest>()
                    .is_ok() =>
        {
            if let Some(described) = consumer_describe_on(coordinator, group).await? {
                return Ok(described);
            }
            if coordinator
                .version_for::<ShareGroupDescribeRequest>()
                .is_ok()
            {
                return share_describe_on(coordinator, group)
                    .await?
                    .ok_or(not_found);
            }
            Err(not_found)
        }
        other => other,
    }
}

/// A share group (KIP-932) as ShareGroupDescribe describes it; `None` when the coordinator knows
/// no share group of that id. Its members share partitions: each lists every partition it may
/// fetch from.
async fn share_describe_on(
    coordinator: &Connection,
    group: &str,
) -> Result<Option<GroupDescription>> {
    let request = ShareGroupDescribeRequest::default()
        .with_group_ids(vec![GroupId(StrBytes::from_string(group.to_owned()))]);
    let response = send(coordinator, &request, "ShareGroupDescribe").await?;
    let Some(described) = response.groups.into_iter().next() else {
        return Ok(None);
    };
    match ResponseError::try_from_code(described.error_code) {
        None => {}
        Some(ResponseError::GroupIdNotFound | ResponseError::UnsupportedVersion) => {
            return Ok(None);
        }
        Some(err) => {
            return Err(group_error(
                group,
                "ShareGroupDescribe",
                err,
                described.error_message.as_deref(),
            ));
        }
    }
    if described.group_state.as_str() == "Dead" {
        return Ok(None);
    }
    let members = described
        .members
        .into_iter()
        .map(|m| {
            let mut assignment: Vec<TopicPartition> = m
                .assignment
                .topic_partitions
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|&p| TopicPartition::new(t.topic_name.0.as_str(), p))
                })
                .collect();
            assignment.sort();
            MemberDescription {
                member_id: m.member_id.to_string(),
                group_instance_id: None,
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                assignment,
                member_epoch: Some(m.member_epoch),
            }
        })
        .collect();
    Ok(Some(GroupDescription {
        group_id: group.to_owned(),
        group_type: "share".to_owned(),
        state: described.group_state.to_string(),
        protocol_type: "share".to_owned(),
        protocol: described.assignor_name.to_string(),
        group_epoch: Some(described.group_epoch),
        coordinator: coordinator.broker().to_owned(),
        members,
    }))
}

/// A KIP-848 consumer group as ConsumerGroupDescribe describes it; `None` when the coordinator
/// knows no consumer group of that id (GROUP_ID_NOT_FOUND).
async fn consumer_describe_on(
    coordinator: &Connection,
    group: &str,
) -> Result<Option<GroupDescription>> {
    let request = ConsumerGroupDescribeRequest::default()
        .with_group_ids(vec![GroupId(StrBytes::from_string(group.to_owned()))]);
    let response = send(coordinator, &request, "ConsumerGroupDescribe").await?;
    let Some(described) = response.groups.into_iter().next() else {
        return Err(Error::Connection {
            context: format!("group `{group}`: ConsumerGroupDescribe"),
            source: WireError::Codec {
                broker: coordinator.broker().to_owned(),
                api: ConsumerGroupDescribeRequest::KEY,
                message: "the response describes no group".into(),
            },
        });
    };
    match ResponseError::try_from_code(described.error_code) {
        None => {}
        // UNSUPPORTED_VERSION: the broker lists the API but runs without the new group coordinator
        // (Kafka 3.9 unless enabled), so it has no consumer-protocol groups.
        Some(ResponseError::GroupIdNotFound | ResponseError::UnsupportedVersion) => {
            return Ok(None);
        }
        Some(err) => {
            return Err(group_error(
                group,
                "ConsumerGroupDescribe",
                err,
                described.error_message.as_deref(),
            ));
        }
    }
    if described.group_state.as_str() == "Dead" {
        return Ok(None);
    }
    let members = described
        .members
        .into_iter()
        .map(|m| {
            let mut assignment: Vec<TopicPartition> = m
                .assignment
                .topic_partitions
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|&p| TopicPartition::new(t.topic_name.0.as_str(), p))
                })
                .collect();
            assignment.sort();
            MemberDescription {
                member_id: m.member_id.to_string(),
                group_instance_id: m.instance_id.map(|s| s.to_string()),
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                assignment,
                member_epoch: Some(m.member_epoch),
            }
        })
        .collect();
    Ok(Some(GroupDescription {
        group_id: group.to_owned(),
        group_type: "consumer".to_owned(),
        state: described.group_state.to_string(),
        protocol_type: CONSUMER_PROTOCOL_TYPE.to_owned(),
        protocol: described.assignor_name.to_string(),
        group_epoch: Some(described.group_epoch),
        coordinator: coordinator.broker().to_owned(),
        members,
    }))
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
                member_epoch: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(GroupDescription {
        group_id: group.to_owned(),
        group_type: "classic".to_owned(),
        group_epoch: None,
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
    if description.group_type == "share" {
        // A share group commits no offsets: its progress is each share partition's start offset.
        let starts = share_start_offsets(coordinator, group).await?;
        let partitions: BTreeSet<TopicPartition> = starts.keys().cloned().collect();
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let ends = log_offsets(client, &partitions, &[LATEST_TIMESTAMP])
            .await?
            .remove(0);
        return Ok(partitions
            .into_iter()
            .filter_map(|tp| {
                let end = *ends.get(&tp)?;
                let start = starts.get(&tp).copied().flatten();
                Some(PartitionLag {
                    owner: None,
                    lag: start.map(|s| end - s),
                    committed: start,
                    end,
                    topic: tp.topic,
                    partition: tp.partition,
                })
            })
            .collect());
    }
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
    let ends = log_offsets(client, &partitions, &[LATEST_TIMESTAMP])
        .await?
        .remove(0);
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

/// Each share partition of `group` with its start offset (`None` while the share partition has
/// none yet), from DescribeShareGroupOffsets on the group's coordinator.
async fn share_start_offsets(
    coordinator: &Connection,
    group: &str,
) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
    let request = DescribeShareGroupOffsetsRequest::default().with_groups(vec![
        kafka_protocol::messages::describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestGroup::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
            // Every topic the group has share partitions of.
            .with_topics(None),
    ]);
    let response = send(coordinator, &request, "DescribeShareGroupOffsets").await?;
    let mut out = BTreeMap::new();
    for g in response.groups {
        if let Some(err) = ResponseError::try_from_code(g.error_code) {
            return Err(group_error(
                group,
                "DescribeShareGroupOffsets",
                err,
                g.error_message.as_deref(),
            ));
        }
        for t in g.topics {
            for p in t.partitions {
                if let Some(err) = ResponseError::try_from_code(p.error_code) {
                    return Err(group_error(
                        group,
                        "DescribeShareGroupOffsets",
                        err,
                        p.error_message.as_deref(),
                    ));
                }
                let tp = TopicPartition::new(t.topic_name.0.as_str(), p.partition_index);
                out.insert(tp, (p.start_offset >= 0).then_some(p.start_offset));
            }
        }
    }
    Ok(out)
}

/// The offsets ListOffsets gives for each of `timestamps` (`LATEST_TIMESTAMP`,
/// `EARLIEST_TIMESTAMP`, or milliseconds since the epoch: the first offset whose record is that
/// recent, -1 if none is) for `partitions`, one map per timestamp, in order. One Metadata request
/// finds the leaders; each leader gets one connection and one ListOffsets per timestamp.
/// Partitions of topics that no longer exist are left out.
async fn log_offsets(
    client: &ClientConfig,
    partitions: &BTreeSet<TopicPartition>,
    timestamps: &[i64],
) -> Result<Vec<HashMap<TopicPartition, i64>>> {
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
                return Err(admin_error(
                    "Metadata",
                    format!("{tp} (no leader to ask for the log end offset)"),
                    p.error_code,
                    None,
                ));
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
            let mut responses = Vec::with_capacity(timestamps.len());
            for &timestamp in timestamps {
                let request = ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_isolation_level(0)
                    .with_topics(
                        topics
                            .iter()
                            .map(|(topic, ps)| {
                                ListOffsetsTopic::default()
                                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                                    .with_partitions(
                                        ps.iter()
                                            .map(|&p| {
                                                ListOffsetsPartition::default()
                                                    .with_partition_index(p)
                                                    .with_current_leader_epoch(-1)
                                                    .with_timestamp(timestamp)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    );
                responses.push(send(&conn, &request, "ListOffsets").await?);
            }
            Ok((address.clone(), responses))
        }
    }))
    .await?;
    let mut out = vec![HashMap::new(); timestamps.len()];
    for (broker, responses) in answers {
        for (offsets, response) in out.iter_mut().zip(responses) {
            for t in response.topics {
                for p in t.partitions {
                    let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                    if p.error_code != 0 {
                        return Err(admin_error(
                            "ListOffsets",
                            format!("{tp} on broker {broker}"),
                            p.error_code,
                            None,
                        ));
                    }
                    offsets.insert(tp, p.offset);
                }
            }
        }
    }
    Ok(out)
}
