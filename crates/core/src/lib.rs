//! The Kafka data plane of kafkit: consumer groups wire-compatible with Java, a consumer with an
//! ordered / keyed / unordered dispatcher and ack-driven commits, and a Java-compatible producer.
//!
//! # Layout
//! - `admin`: group administration for tools: list groups, describe members and assignments, lag.
//! - `config`: connection settings shared by every client (bootstrap servers, client id, reconnect
//!   backoff, security).
//! - `partitioner`: Java-compatible key partitioning, `toPositive(murmur2(key)) % partitions`.
//! - `producer`: [`Producer`] and its builder: keyed partitioning, per-partition batches, one
//!   sender per broker, idempotence, bounded buffering, retries up to a delivery timeout, and
//!   transactions (zombie fencing, offsets committed with the transaction, KIP-890 version 2).
//! - `wire`: kafkit's own broker connections (framing, version negotiation, pipelining) for every
//!   request kafkit sends, messages encoded by `kafka-protocol`; the v2 record-batch encoder and
//!   decoder.
//! - `group`: consumer-group membership: the coordinator client and the join / sync / heartbeat
//!   state machine ([`group::GroupMember`]), offsets, the ConsumerProtocol codecs and the
//!   Java-compatible `range`, `roundrobin` and `cooperative-sticky` assignors.
//! - `consumer`: [`consumer::Consumer`]: prefetching fetchers, the dispatcher, watermark commits,
//!   graceful shutdown.
//! - `share`: [`share::ShareConsumer`]: share groups (KIP-932), records acquired under a lock and
//!   acknowledged one by one (accept, release, reject).
//! - `headers`: [`Headers`], a record's ordered (name, optional value) list, duplicates kept.
//! - `trace`: [`Traceparent`] (W3C trace context in record headers) and the per-record span the
//!   consumer runs each handler call in.
//! - `error`: the crate's [`Error`] and [`Result`].

pub mod admin;
mod config;
pub mod consumer;
mod error;
pub mod group;
mod headers;
pub mod partitioner;
mod producer;
pub mod security;
pub mod share;
mod task;
mod trace;
mod wire;

pub use config::ClientConfig;
pub use error::{Error, Result, TransactionErrorKind};
pub use headers::{Header, Headers};
pub use kafkit_resilience::{BackoffPolicy, ConfigError};
pub use producer::{Acks, Compression, Delivery, Producer, ProducerBuilder, ProducerRecord};
pub use security::{
    Pem, SaslCredentials, SaslMechanism, Secret, Security, SecurityProtocol, TlsSettings,
};
pub use trace::{Traceparent, TraceparentError};
pub use wire::WireError;
