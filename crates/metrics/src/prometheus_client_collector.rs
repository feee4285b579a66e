//! The `prometheus-client` integration (feature `prometheus-client`): a
//! [`Collector`](prometheus_client::collector::Collector) that encodes kafkit's last published
//! [`MetricsSnapshot`](crate::MetricsSnapshot) at each scrape.
//!
//! Nothing is copied into `prometheus-client` metric objects: at scrape time the collector loads
//! the snapshot (lock-free, one `Arc` load) and encodes it, so a scrape shows exactly one publish
//! and nothing can be counted twice. Values are as fresh as the last publish: keep
//! [`Metrics::spawn_publisher`] running (1 s by default).
//!
//! Counters keep the names of the built-in text exposition (`prometheus-client` adds `_total`
//! itself); timings are gauges with a `quantile` label plus a total-time counter, since
//! `prometheus-client` has no summary type (see the crate documentation for the mapping).

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::Metrics;
use crate::families::{Kind, Value};

/// Encodes a [`Metrics`]' snapshot into a `prometheus_client` [`Registry`] at every scrape.
///
/// ```
/// use kafkit_metrics::Metrics;
/// use prometheus_client::registry::Registry;
///
/// let metrics = Metrics::default();
/// let mut registry = Registry::default();
/// metrics.register_prometheus_client(&mut registry); // the one line
///
/// metrics.record_consumed("orders", 3);
/// metrics.publish(); // `spawn_publisher` does this every second in a service
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains("kafkit_records_consumed_total{topic=\"orders\"} 3"));
/// ```
#[derive(Debug, Clone)]
pub struct PrometheusCollector {
    metrics: Metrics,
}

impl PrometheusCollector {
    /// A collector of `metrics`' published snapshots.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl Metrics {
    /// Registers these metrics with a `prometheus_client` registry: each scrape of the registry
    /// encodes the last published snapshot. Use a sub-registry
    /// ([`Registry::sub_registry_with_prefix`]) to prefix the names or
    /// [`Registry::sub_registry_with_label`] to add a label, e.g. for two clients in one process.
    pub fn register_prometheus_client(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(PrometheusCollector::new(self.clone())));
    }
}

impl Collector for PrometheusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let snapshot = self.metrics.snapshot();
        for family in snapshot.families() {
            if family.samples.is_empty() {
                continue;
            }
            let (name, metric_type) = match family.kind {
                // prometheus-client appends `_total` to a counter's samples.
                Kind::Counter => (
                    family.name.strip_suffix("_total").unwrap_or(&family.name),
                    MetricType::Counter,
                ),
                Kind::Gauge => (&*family.name, MetricType::Gauge),
            };
            let mut metric = encoder.encode_descriptor(name, family.help, None, metric_type)?;
            for (labels, value) in &family.samples {
                if labels.is_empty() {
                    encode_value(family.kind, *value, &mut metric)?;
                } else {
                    encode_value(family.kind, *value, &mut metric.encode_family(labels)?)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(kind: Kind, value: Value, encoder: &mut MetricEncoder<'_>) -> fmt::Result {
    match (kind, value) {
        (Kind::Counter, Value::U64(v)) => encoder.encode_counter::<NoLabelSet, _, u64>(&v, None),
        (Kind::Counter, v) => encoder.encode_counter::<NoLabelSet, _, f64>(&v.as_f64(), None),
        (Kind::Gauge, Value::I64(v)) => encoder.encode_gauge(&v),
        (Kind::Gauge, v) => encoder.encode_gauge(&v.as_f64()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};
    use std::time::Duration;

    use prometheus_client::encoding::text::encode;

    use super::*;
    use crate::prometheus::tests::{Sample, find, parse_sample};

    /// The registry's OpenMetrics text: the `# TYPE` of each family, and every sample.
    fn scrape(registry: &Registry) -> (String, BTreeMap<String, String>, Vec<Sample>) {
        let mut text = String::new();
        encode(&mut text, registry).unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "{line}"
                );
            } else if !line.starts_with('#') {
                samples.push(parse_sample(line));
            }
        }
        // No series appears twice.
        let mut seen = HashSet::new();
        for s in &samples {
            assert!(
                seen.insert(format!("{}{:?}", s.name, s.labels)),
                "twice: {s:?}"
            );
        }
        (text, types, samples)
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        find(samples, name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in {samples:#?}"))
            .value
    }

    #[test]
    fn a_scrape_encodes_the_published_snapshot() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register_prometheus_client(&mut registry);
        for micros in [100, 200, 300] {
            metrics.record_consumed("orders", 1);
            metrics.record_processed("orders", Duration::from_micros(micros));
            metrics.record_acked("orders");
        }
        metrics.record_failed("audit");
        metrics.record_partition_lag("billing", "orders", 2, 130, 100);
        metrics.record_rebalance("billing");
        let _consumer = metrics.consumer_active();

        // Nothing published yet: the empty snapshot, not the live counters.
        let (_, _, samples) = scrape(&registry);
        assert!(find(&samples, "kafkit_records_consumed_total", &[]).is_none());
        assert_eq!(value(&samples, "kafkit_active_consumers", &[]), 0.0);

        metrics.publish();
        let (text, types, samples) = scrape(&registry);
        let orders = [("topic", "orders")];
        assert_eq!(
            value(&samples, "kafkit_records_consumed_total", &orders),
            3.0,
            "{text}"
        );
        assert_eq!(value(&samples, "kafkit_records_acked_total", &orders), 3.0);
        assert_eq!(
            value(
                &samples,
                "kafkit_records_failed_total",
                &[("topic", "audit")]
            ),
            1.0
        );
        let p50 = value(
            &samples,
            "kafkit_process_duration_seconds",
            &[("topic", "orders"), ("quantile", "0.5")],
        );
        assert!((p50 - 200e-6).abs() < 5e-6, "p50 {p50}");
        let total = value(&samples, "kafkit_process_time_seconds_total", &orders);
        assert!((total - 600e-6).abs() < 1e-9, "total {total}");
        assert!(value(&samples, "kafkit_process_duration_average_seconds", &orders) > 0.0);
        let partition = [
            ("group", "billing"),
            ("topic", "orders"),
            ("partition", "2"),
        ];
        assert_eq!(value(&samples, "kafkit_consumer_lag", &partition), 30.0);
        assert_eq!(
            value(
                &samples,
                "kafkit_consumer_group_lag",
                &[("group", "billing")]
            ),
            30.0
        );
        assert_eq!(
            value(
                &samples,
                "kafkit_consumer_group_rebalances_total",
                &[("group", "billing")]
            ),
            1.0
        );
        assert_eq!(value(&samples, "kafkit_active_consumers", &[]), 1.0);
        assert_eq!(
            value(
                &samples,
                "kafkit_circuit_breaker_state",
                &[("state", "closed")]
            ),
            1.0
        );
        for (name, kind) in [
            ("kafkit_records_consumed", "counter"),
            ("kafkit_process_time_seconds", "counter"),
            ("kafkit_process_duration_seconds", "gauge"),
            ("kafkit_consumer_lag", "gauge"),
        ] {
            assert_eq!(
                types.get(name).map(String::as_str),
                Some(kind),
                "{name}\n{text}"
            );
        }

        // Scraped again: the same values (read, not accumulated); after the next publish, the new ones.
        let (_, _, again) = scrape(&registry);
        assert_eq!(value(&again, "kafkit_records_consumed_total", &orders), 3.0);
        metrics.record_consumed("orders", 2);
        metrics.publish();
        let (_, _, later) = scrape(&registry);
        assert_eq!(value(&later, "kafkit_records_consumed_total", &orders), 5.0);
    }

    #[test]
    fn a_sub_registry_prefixes_and_labels_every_family() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register_prometheus_client(
            registry
                .sub_registry_with_prefix("app")
                .sub_registry_with_label(("client".into(), "payments".into())),
        );
        metrics.record_produced("t", Duration::from_millis(2));
        metrics.publish();
        let (text, _, samples) = scrape(&registry);
        assert!(
            samples.iter().all(|s| s.name.starts_with("app_kafkit_")),
            "{text}"
        );
        assert!(
            samples.iter().all(|s| s.labels["client"] == "payments"),
            "{text}"
        );
        assert_eq!(
            value(
                &samples,
                "app_kafkit_records_produced_total",
                &[("topic", "t")]
            ),
            1.0
        );
    }
}
