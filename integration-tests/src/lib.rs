//! Integration tests live in `tests/`; each file is one test binary sharing one local broker.
//! This library holds what several of them use.
//!
//! # Layout
//! - `binary`: [`kafkit_bin`], the workspace's `kafkit` binary, built on first use.
//! - `history`: the event recorder and checker of the fault suite.
//! - `support`: client and group settings for tests, the waiting helpers ([`support::eventually`]
//!   and its variants) and Kafka's `kafka-consumer-groups --describe`.
//! - `verifiable`: parses and validates the event stream of a `verifiable-consumer` process
//!   (Apache Kafka's VerifiableConsumer contract), for the tests that run `kafkit` as a process.

mod binary;
pub mod history;
pub mod support;
pub mod verifiable;

pub use binary::kafkit_bin;
