//! The Kafka data plane of kafkit: a Java-compatible producer today; consumer groups, manual commits
//! and the per-partition dispatcher as they land.
//!
//! # Layout
//! - `config`: connection settings shared by every client (bootstrap servers, client id, reconnect
//!   backoff) and the one place rskafka clients are built from them.
//! - `partitioner`: Java-compatible key partitioning, `toPositive(murmur2(key)) % partitions`.
//! - `producer`: [`Producer`] and its builder: keyed partitioning, batching, bounded buffering,
//!   retries up to a delivery timeout.
//! - `error`: the crate's [`Error`] and [`Result`].

mod config;
mod error;
pub mod partitioner;
mod producer;

pub use config::ClientConfig;
pub use error::{Error, Result};
pub use kafkit_resilience::{BackoffPolicy, ConfigError};
pub use producer::{Compression, Delivery, Producer, ProducerBuilder, ProducerRecord};
