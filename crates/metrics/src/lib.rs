//! Per-topic client statistics that stay bounded in memory and never slow the consumer down.
//!
//! # Layout
//! This crate will hold (issue: kafkit-metrics):
//! - per-topic counters and timings (produced, consumed, acked, failed, retried, dead-lettered, commits,
//!   rebalances), with moving averages and percentile histograms;
//! - an LRU bound on the number of topics tracked, with evictions counted;
//! - consumer lag per partition and per group, records in flight, buffered bytes;
//! - an immutable snapshot readers take without touching any lock of the hot path;
//! - Prometheus text export.
