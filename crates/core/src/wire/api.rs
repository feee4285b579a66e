//! The requests kafkit sends on its own connections.
//!
//! `kafka-protocol` implements its `Request` trait only when both its client and broker sides are
//! compiled; kafkit builds the client side alone, so this small trait pairs each request with its
//! response and its API key instead.

use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, ApiKey, ApiVersionsRequest, ApiVersionsResponse,
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    DescribeShareGroupOffsetsRequest, DescribeShareGroupOffsetsResponse, EndTxnRequest,
    EndTxnResponse, FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    HeartbeatRequest, HeartbeatResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, InitProducerIdRequest, InitProducerIdResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    ProduceRequest, ProduceResponse, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse, ShareAcknowledgeRequest, ShareAcknowledgeResponse,
    ShareFetchRequest, ShareFetchResponse, ShareGroupDescribeRequest, ShareGroupDescribeResponse,
    ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse, SyncGroupRequest, SyncGroupResponse,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, StrBytes};

/// A Metadata request for `topics` (`Some(&[])`: brokers only; `None`: every topic) that never
/// creates a topic. Every client of kafkit's connections asks for metadata through this.
pub(crate) fn metadata_request(topics: Option<&[String]>) -> MetadataRequest {
    MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                })
                .collect()
        }))
}

/// A request kafkit sends, paired with its response type.
pub(crate) trait ApiRequest: Encodable + HeaderVersion + Message + Send + Sync {
    /// The API key.
    const KEY: ApiKey;
    /// The highest version whose fields and semantics kafkit handles. Newer versions the broker
    /// offers are not used until kafkit is taught them.
    const MAX_VERSION: i16;
    /// The response.
    type Response: Decodable + HeaderVersion + Send;
}

macro_rules! api {
    ($($req:ident => $resp:ident, $key:ident, $max:expr;)*) => {
        $(impl ApiRequest for $req {
            const KEY: ApiKey = ApiKey::$key;
            const MAX_VERSION: i16 = $max;
            type Response = $resp;
        })*
    };
}

api! {
    ApiVersionsRequest => ApiVersionsResponse, ApiVersions, 3;
    // v3: single key; v4+ batch keys (KIP-699), which kafkit does not need.
    FindCoordinatorRequest => FindCoordinatorResponse, FindCoordinator, 3;
    // v4+: MEMBER_ID_REQUIRED; v5+: group.instance.id; v8: reason; v9 only adds skip_assignment for
    // server-side assignors, which the classic protocol does not use.
    JoinGroupRequest => JoinGroupResponse, JoinGroup, 8;
    SyncGroupRequest => SyncGroupResponse, SyncGroup, 5;
    HeartbeatRequest => HeartbeatResponse, Heartbeat, 4;
    LeaveGroupRequest => LeaveGroupResponse, LeaveGroup, 5;
    // v9 is for the KIP-848 protocol (member epochs; its members must use it); the classic member
    // caps its commits at v8 (`group::member::commit`). v10 names topics by id.
    OffsetCommitRequest => OffsetCommitResponse, OffsetCommit, 9;
    // v8+ batch several groups per request; kafkit fetches for one group.
    OffsetFetchRequest => OffsetFetchResponse, OffsetFetch, 7;
    // v5 names each group's type (classic, consumer, share, ...).
    ListGroupsRequest => ListGroupsResponse, ListGroups, 5;
    DescribeGroupsRequest => DescribeGroupsResponse, DescribeGroups, 5;
    // Groups of the KIP-848 consumer protocol, which DescribeGroups does not describe; v1 only adds
    // each member's type (classic or consumer) during an online upgrade.
    ConsumerGroupDescribeRequest => ConsumerGroupDescribeResponse, ConsumerGroupDescribe, 1;
    // The KIP-848 member's only group request (Kafka 4.0+; 3.7 to 3.9 offer v0 as a preview). v1
    // requires a client-generated member id (which kafkit sends at v0 too) and adds the
    // broker-side regex subscription.
    ConsumerGroupHeartbeatRequest => ConsumerGroupHeartbeatResponse, ConsumerGroupHeartbeat, 1;
    ListOffsetsRequest => ListOffsetsResponse, ListOffsets, 7;
    MetadataRequest => MetadataResponse, Metadata, 12;
    // v13+ name topics by id; v12 is the last by name (flexible, no fetch session needed).
    FetchRequest => FetchResponse, Fetch, 12;
    // v9: flexible, topics by name. v10 adds leader hints to NOT_LEADER_OR_FOLLOWER answers
    // (KIP-951, tagged fields kafkit does not read: it looks the leader up again); v11 adds
    // TRANSACTION_ABORTABLE; v12 adds a transaction's partitions implicitly (transaction version 2,
    // KIP-890), so a transactional producer of version 1 sends at most v11; v13 names topics by
    // id. The producer caps the version per mode (`producer::sender::IoSettings`).
    ProduceRequest => ProduceResponse, Produce, 12;
    // v3: the current producer id and epoch for a KIP-360 epoch bump; v4: flexible and
    // PRODUCER_FENCED. v5 is for transactions v2 (KIP-890).
    InitProducerIdRequest => InitProducerIdResponse, InitProducerId, 4;
    // v3 is the last a client sends (v4+ batch transactions, broker to coordinator only).
    AddPartitionsToTxnRequest => AddPartitionsToTxnResponse, AddPartitionsToTxn, 3;
    // v4: TRANSACTION_ABORTABLE. Not sent with transaction version 2 (TxnOffsetCommit v5 adds the
    // group implicitly).
    AddOffsetsToTxnRequest => AddOffsetsToTxnResponse, AddOffsetsToTxn, 4;
    // v3: generation, member id and instance id (KIP-447 fencing); v5 adds the group to the
    // transaction implicitly (transaction version 2), so version-1 transactions send at most v4.
    TxnOffsetCommitRequest => TxnOffsetCommitResponse, TxnOffsetCommit, 5;
    // v5 bumps the epoch at every end of transaction and answers with the new id and epoch
    // (transaction version 2); version-1 transactions send at most v4.
    EndTxnRequest => EndTxnResponse, EndTxn, 5;
    CreateTopicsRequest => CreateTopicsResponse, CreateTopics, 7;
    // v1: flexible. Group configs (resource type GROUP, Kafka 4.0+) set share-group settings.
    IncrementalAlterConfigsRequest => IncrementalAlterConfigsResponse, IncrementalAlterConfigs, 1;
    // v6 names topics by name or id in a new structure; names alone are enough for kafkit.
    DeleteTopicsRequest => DeleteTopicsResponse, DeleteTopics, 5;
    // v1: the mechanism's tokens travel in SaslAuthenticate requests (v0 sent them raw).
    SaslHandshakeRequest => SaslHandshakeResponse, SaslHandshake, 1;
    // v1 adds the session lifetime, v2 flexible encoding; kafkit reads neither.
    SaslAuthenticateRequest => SaslAuthenticateResponse, SaslAuthenticate, 2;
    // Share groups (KIP-932). v1 is the first stable version (Kafka 4.1+; v0 was 4.0's early
    // access, which brokers no longer offer); v2 (4.2) adds the RENEW acknowledgement and record-
    // limited acquisition, which kafkit does not use.
    ShareGroupHeartbeatRequest => ShareGroupHeartbeatResponse, ShareGroupHeartbeat, 1;
    ShareFetchRequest => ShareFetchResponse, ShareFetch, 1;
    ShareAcknowledgeRequest => ShareAcknowledgeResponse, ShareAcknowledge, 1;
    ShareGroupDescribeRequest => ShareGroupDescribeResponse, ShareGroupDescribe, 1;
    // v1 (4.2) adds the broker's own lag; v0's start offsets are what kafkit reads.
    DescribeShareGroupOffsetsRequest => DescribeShareGroupOffsetsResponse, DescribeShareGroupOffsets, 0;
}
