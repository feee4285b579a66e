//! kafkit: a pure-Rust Kafka client framework, no librdkafka.
//!
//! Add this one crate to your `Cargo.toml`; it re-exports the public API of the workspace's crates.
//!
//! # Layout
//! - the root re-exports the producer and client settings of `kafkit-core`;
//! - [`admin`] re-exports cluster and group administration (describe, topics, group list,
//!   describe, lag, offset resets);
//! - [`consumer`] and [`group`] re-export the consumer (dispatch modes, ack-driven commits, graceful
//!   shutdown) and consumer-group membership of `kafkit-core`;
//! - [`share`] re-exports the share-group consumer (KIP-932, Kafka 4.2+): more members than
//!   partitions, each record accepted, released or rejected within its acquisition lock;
//! - [`resilience`] re-exports `kafkit-resilience` (backoff, the circuit breaker, retry and
//!   dead-letter policies, health);
//! - [`metrics`] re-exports `kafkit-metrics`.
//!
//! # Supported brokers
//! Apache Kafka 3.9 to 4.4 (KRaft). The whole test suite runs against a real 4.4 broker, and the
//! version-sensitive tests (API negotiation, groups with Java members, fetch, produce, admin, the
//! tools) against 3.9 too. Consumer groups use the classic protocol by default, or KIP-848's
//! consumer protocol on Kafka 4.0+ (`group::GroupConfig::protocol`); groups of either protocol
//! are described and listed by [`admin`]. Share groups need Kafka 4.2+ (4.1 with the
//! `share.version` feature); on older brokers the share consumer fails with an error that says so. The minimum supported Rust version is in `Cargo.toml` (`rust-version`), checked in CI.
//!
//! # Features
//! Default features are pure Rust and build for `x86_64-unknown-linux-musl` without a C compiler.
//! The consumer decodes and the producer writes every codec (none, gzip, snappy, lz4, zstd) in
//! every build, all in pure Rust. Opt-in:
//! - `tls`: TLS and mutual TLS to brokers (rustls with ring, which needs a C compiler);
//! - `prometheus-client`: `Metrics::register_prometheus_client`, kafkit's metrics in a
//!   `prometheus_client` registry, encoded at each scrape;
//! - `metrics`: `Metrics::spawn_facade_reporter`, kafkit's metrics pushed into the `metrics` facade's
//!   recorder.
//!
//! # Tracing
//! Each record a handler processes runs in a DEBUG span `kafkit.record` (target `kafkit::record`)
//! with its topic, partition, offset, key hash and, if it carries one, its W3C trace context; see
//! [`Traceparent`] for propagation.

pub use kafkit_core::{
    Acks, ClientConfig, Compression, ConfigError, Delivery, Error, Header, Headers, Pem, Producer,
    ProducerBuilder, ProducerRecord, Result, SaslCredentials, SaslMechanism, Secret, Security,
    SecurityProtocol, TlsSettings, Traceparent, TraceparentError, TransactionErrorKind, WireError,
    partitioner,
};

pub use kafkit_core::{admin, consumer, group, security, share};

/// Backoff, circuit breaker, retry and dead-letter policies.
pub mod resilience {
    pub use kafkit_resilience::*;
}

/// Bounded per-topic statistics behind a lock-free snapshot.
pub mod metrics {
    pub use kafkit_metrics::*;
}
