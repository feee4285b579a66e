//! kafkit's own broker connections: group coordination, offsets, group administration and the
//! consumer's fetches. Messages are encoded by the `kafka-protocol` crate (generated from
//! Kafka's message specs); this module does framing, version negotiation and request pipelining.
//!
//! - `api`: which request types kafkit sends, with the highest version whose semantics it handles.
//! - `connection`: one TCP connection: ApiVersions handshake, pipelined requests matched to responses
//!   by correlation id, a timeout per request.
//! - `records`: fetched record batches decoded without copying keys and values (read_committed).

mod api;
mod connection;
pub(crate) mod records;

pub(crate) use api::{ApiRequest, metadata_request};
pub(crate) use connection::Connection;
pub use connection::WireError;
