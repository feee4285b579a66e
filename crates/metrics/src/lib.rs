//! Per-topic client statistics that stay bounded in memory and never slow the consumer down.
//!
//! # Layout
//! - `config`: [`MetricsConfig`] and its builder, set in code or from the `KAFKA_*` environment variables;
//!   a rejected value is a [`ConfigError`] (re-exported from `kafkit-resilience`) naming the setting or
//!   environment variable.
//! - `histogram`: the log-linear (HDR-style) histogram behind p50/p95/p99 and its error bound.
//! - `timing`: the exact moving average (a ring buffer) and one timing series per topic.
//! - `topics`: per-topic atomic counters, the read-mostly topic index and the LRU that bounds it.
//! - `groups`: consumer lag per partition and per group, and rebalance counts.
//! - `gauges`: [`Gauge`] and the circuit breaker's [`CircuitState`] (re-exported from `kafkit-resilience`),
//!   the instantaneous values.
//! - `metrics`: [`Metrics`], the clonable handle the hot path records into, and the publish step.
//! - `snapshot`: [`MetricsSnapshot`] and its parts, the immutable plain data readers get.
//! - `prometheus`: the Prometheus text exposition of a snapshot.
//!
//! # How readers stay off the hot path
//! Recording touches only atomics and one per-topic timing mutex. [`Metrics::publish`] (run every
//! [`MetricsConfig::publish_interval`] by [`Metrics::spawn_publisher`], or called directly) reads them into a
//! new [`MetricsSnapshot`] and swaps it in with `arc-swap`; [`Metrics::snapshot`] only loads that `Arc`. The
//! consistency rules are in [`Metrics`]'s documentation.
//!
//! ```
//! use std::time::Duration;
//! use kafkit_metrics::{Metrics, MetricsConfig};
//!
//! let metrics = Metrics::new(MetricsConfig::default());
//! metrics.record_consumed("orders", 2);
//! metrics.record_processed("orders", Duration::from_micros(350));
//! metrics.record_acked("orders");
//! metrics.record_partition_lag("billing", "orders", 0, 120, 100);
//!
//! let snapshot = metrics.publish();
//! assert_eq!(snapshot.totals.consumed, 2);
//! assert_eq!(snapshot.group("billing").unwrap().lag, 20);
//! assert!(snapshot.to_prometheus().contains("kafkit_records_acked_total{topic=\"orders\"} 1"));
//! ```

mod config;
mod gauges;
mod groups;
mod histogram;
mod metrics;
mod prometheus;
mod snapshot;
mod timing;
mod topics;

pub use config::{MAX_MOVING_AVERAGE_WINDOW, MetricsConfig, MetricsConfigBuilder};
pub use gauges::Gauge;
pub use kafkit_resilience::{CircuitState, ConfigError};
pub use metrics::{ActiveGuard, Metrics, PublisherTask};
pub use snapshot::{
    Counters, GaugeSnapshot, GroupSnapshot, MetricsSnapshot, PartitionLag, TimingSnapshot,
    TopicSnapshot,
};
