//! The pure part of the classic consumer-group protocol: what members say to each other through
//! the coordinator, and how the leader divides partitions. No I/O happens here; the coordinator
//! client decodes JoinGroup metadata with [`Subscription::decode`], calls an [`Assignor`] and
//! sends back [`Assignment::encode`]d bytes in SyncGroup.
//!
//! Everything here must agree with the Java client byte for byte and decision for decision,
//! because a kafkit member can share a group with Java, librdkafka and franz-go members and any
//! of them may be the leader.
//!
//! # Layout
//! - `protocol`: ConsumerProtocol [`Subscription`] (v0..v3) and [`Assignment`] (v0..v3) with the
//!   2-byte version header, read and written as the Java client's `ConsumerProtocol` does.
//! - `assignor`: the [`Assignor`] trait the leader calls, the [`MemberSubscription`] it gets per
//!   member and the member ordering Java's built-in assignors share.
//! - `range`, `round_robin`, `cooperative_sticky`: the built-in assignors, wire-compatible with
//!   Java's `range`, `roundrobin` and `cooperative-sticky`.
//! - `config`: [`GroupConfig`], the member's settings, named and defaulted like Java's, and
//!   [`GroupProtocol`] (classic or KIP-848's consumer protocol).
//! - `coordinator`: finding the group coordinator and keeping a connection to it.
//! - `member`: [`GroupMember`], the membership state machine (classic join / sync / heartbeat, or the
//!   KIP-848 heartbeat and reconciliation) on its own task, with
//!   commits and offset fetches; ownership changes reach the consumer as [`GroupEvent`]s.
//! - `offsets`: reading committed offsets ([`committed_offsets`] without joining the group), and
//!   [`ConsumerGroupMetadata`], what a transactional producer commits offsets with (KIP-447).
//! - `error`: [`GroupError`], what can go wrong reading or writing the protocol.

mod assignor;
mod config;
mod cooperative_sticky;
pub(crate) mod coordinator;
mod error;
pub(crate) mod member;
mod offsets;
mod protocol;
mod range;
mod round_robin;

pub use assignor::{Assignor, GroupAssignment, MemberId, MemberSubscription, RebalanceProtocol};
pub use config::{GroupConfig, GroupProtocol};
pub use cooperative_sticky::CooperativeStickyAssignor;
pub(crate) use coordinator::Coordinator;
pub use error::GroupError;
pub use member::{
    CommitReport, GroupEvent, GroupMember, MembershipStatus, OffsetToCommit, RevokeDone,
};
pub use offsets::{CommittedOffset, ConsumerGroupMetadata, committed_offsets};
pub use protocol::{
    Assignment, CONSUMER_PROTOCOL_LATEST_VERSION, CONSUMER_PROTOCOL_TYPE, Subscription,
    TopicPartition,
};
pub use range::RangeAssignor;
pub use round_robin::RoundRobinAssignor;
