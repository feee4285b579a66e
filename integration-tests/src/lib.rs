//! Integration tests live in `tests/`; each file is one test binary sharing one local broker.
//! This library holds what several of them use.
//!
//! # Layout
//! - `binary`: [`kafkit_bin`], the workspace's `kafkit` binary, built on first use.
//! - `history`: the event recorder and checker of the fault suite.
//! - `raw_produce`: record batches written byte by byte and sent in a ProduceRequest, for what no
//!   producer writes (header names that are not UTF-8).
//! - `support`: client and group settings for tests, and [`support::eventually`].
//! - `verifiable`: parses and validates the event stream of a `verifiable-consumer` process
//!   (Apache Kafka's VerifiableConsumer contract), for the tests that run `kafkit` as a process.

mod binary;
pub mod history;
pub mod raw_produce;
pub mod support;
pub mod verifiable;

pub use binary::kafkit_bin;
