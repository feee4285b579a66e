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
//! - `prometheus`: the Prometheus text exposition of a snapshot (always built in).
//! - `families`: a snapshot as metric families, the one mapping both optional integrations encode.
//! - `prometheus_client_collector` (feature `prometheus-client`): `PrometheusCollector`, the
//!   snapshot registered with a `prometheus_client` registry.
//! - `facade` (feature `metrics`): `FacadeReporter`, the snapshot pushed into the `metrics`
//!   facade's recorder.
//!
//! # Exporting
//! Three ways, each one line in a service; all read the same published snapshots, so they agree.
//! - Built in: [`MetricsSnapshot::to_prometheus`], the Prometheus text format, for your own `/metrics`.
//! - Feature `prometheus-client`, for services whose `/metrics` is a `prometheus_client` registry:
//!   `metrics.register_prometheus_client(&mut registry)` registers a collector that encodes the
//!   last published snapshot at each scrape (keep [`Metrics::spawn_publisher`] running).
//! - Feature `metrics`, for services that record through the `metrics` facade (e.g. with
//!   metrics-exporter-prometheus): `let _reporter = metrics.spawn_facade_reporter();` publishes and
//!   pushes every publish interval; `snapshot.report_to_facade()` pushes once.
//!
//! The integrations use the text exposition's names. Neither crate has a summary type, so a timing
//! (`kafkit_process_duration_seconds`, `kafkit_produce_duration_seconds`) becomes a gauge of the same
//! name with a `quantile` label (`0.5`, `0.95`, `0.99`: the same series as the summary's quantile
//! lines), a total-time counter `kafkit_process_time_seconds_total` (the summary's `_sum`; the
//! `_count` is `kafkit_records_processed_total`) and the `…_duration_average_seconds` gauge. Through
//! the facade, whose counters are integers, the total time is a gauge. Counters are absolute values
//! (`Counter::absolute` in the facade), never increments, so nothing is counted twice.
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
#[cfg(feature = "metrics")]
mod facade;
#[cfg(any(feature = "prometheus-client", feature = "metrics"))]
mod families;
mod gauges;
mod groups;
mod histogram;
mod metrics;
mod prometheus;
#[cfg(feature = "prometheus-client")]
mod prometheus_client_collector;
mod snapshot;
mod timing;
mod topics;

#[cfg(feature = "metrics")]
pub use facade::{FacadeReporter, describe_facade};
#[cfg(feature = "prometheus-client")]
pub use prometheus_client_collector::PrometheusCollector;

pub use config::{MAX_MOVING_AVERAGE_WINDOW, MetricsConfig, MetricsConfigBuilder};
pub use gauges::Gauge;
pub use kafkit_resilience::{CircuitState, ConfigError};
pub use metrics::{ActiveGuard, Metrics, PublisherTask};
pub use snapshot::{
    Counters, GaugeSnapshot, GroupSnapshot, MetricsSnapshot, PartitionLag, TimingSnapshot,
    TopicSnapshot,
};
