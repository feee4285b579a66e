//! A [`MetricsSnapshot`] as a list of metric families (name, help, counter or gauge, labelled
//! values): the one mapping the `prometheus-client` collector and the `metrics` facade reporter
//! both encode, so the two integrations export the same names.
//!
//! Names are those of the built-in text exposition (`prometheus`), with one difference forced by
//! the integrations' type systems: neither `prometheus-client` nor the `metrics` facade has a
//! summary type, so each timing series becomes
//! - a gauge of the same name with a `quantile` label (`0.5`, `0.95`, `0.99`): the same series the
//!   summary's quantile lines give, so PromQL like `kafkit_process_duration_seconds{quantile="0.99"}`
//!   reads the same from every exporter;
//! - a counter of the total time, `kafkit_process_time_seconds_total` (the summary's `_sum`; its
//!   `_count` is the records counter of the same stage, `kafkit_records_processed_total`), so
//!   `rate(time) / rate(records)` is the mean over any range;
//! - the moving-average gauge, as in the text exposition.

use std::borrow::Cow;

use crate::MetricsSnapshot;
use crate::gauges::CIRCUIT_STATES;
use crate::prometheus::{
    PARTITION_GAUGES, SHARE_DELIVERIES, TOPIC_COUNTERS, TOPIC_TIMINGS, share_deliveries,
};

/// Whether a family only grows (a counter) or is an instantaneous value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
}

/// One value, in the type it was recorded in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value {
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Value::U64(v) => v as f64,
            Value::I64(v) => v as f64,
            Value::F64(v) => v,
        }
    }
}

/// Label names and values of one sample; values borrow from the snapshot where they can.
pub(crate) type Labels<'s> = Vec<(&'static str, Cow<'s, str>)>;

/// One metric family and its samples. Counter names end in `_total`.
#[derive(Debug)]
pub(crate) struct Family<'s> {
    pub(crate) name: Cow<'static, str>,
    pub(crate) help: &'static str,
    pub(crate) kind: Kind,
    pub(crate) samples: Vec<(Labels<'s>, Value)>,
}

impl<'s> Family<'s> {
    fn new(name: impl Into<Cow<'static, str>>, help: &'static str, kind: Kind) -> Self {
        Self {
            name: name.into(),
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn with(mut self, labels: Labels<'s>, value: Value) -> Self {
        self.samples.push((labels, value));
        self
    }
}

fn topic(topic: &str) -> Labels<'_> {
    vec![("topic", Cow::Borrowed(topic))]
}

impl MetricsSnapshot {
    /// Every family, in a fixed order; a family with nothing recorded has no samples.
    pub(crate) fn families(&self) -> Vec<Family<'_>> {
        let mut out = Vec::with_capacity(32);
        for (name, help, field) in TOPIC_COUNTERS {
            let mut family = Family::new(name, help, Kind::Counter);
            for t in &self.topics {
                family = family.with(topic(&t.topic), Value::U64(field(&t.counters)));
            }
            out.push(family);
        }
        let mut deliveries = Family::new(SHARE_DELIVERIES.0, SHARE_DELIVERIES.1, Kind::Counter);
        for t in &self.topics {
            for (delivery, count) in share_deliveries(&t.counters) {
                let mut labels = topic(&t.topic);
                labels.push(("delivery", Cow::Borrowed(delivery)));
                deliveries = deliveries.with(labels, Value::U64(count));
            }
        }
        out.push(deliveries);
        for (name, help, series) in TOPIC_TIMINGS {
            let base = name.trim_end_matches("_duration_seconds");
            let mut quantiles = Family::new(name, help, Kind::Gauge);
            let mut total = Family::new(
                format!("{base}_time_seconds_total"),
                "Total of the timing's samples in seconds; divided by the matching records counter, the mean.",
                Kind::Counter,
            );
            let mut average = Family::new(
                format!("{base}_duration_average_seconds"),
                "Mean of the most recent samples (the moving-average window), or of all samples if disabled.",
                Kind::Gauge,
            );
            for t in &self.topics {
                let s = series(t);
                for (q, value) in [("0.5", s.p50), ("0.95", s.p95), ("0.99", s.p99)] {
                    if let Some(value) = value {
                        let mut labels = topic(&t.topic);
                        labels.push(("quantile", Cow::Borrowed(q)));
                        quantiles = quantiles.with(labels, Value::F64(value.as_secs_f64()));
                    }
                }
                if s.count > 0 {
                    total = total.with(topic(&t.topic), Value::F64(s.sum.as_secs_f64()));
                }
                if let Some(value) = s.average {
                    average = average.with(topic(&t.topic), Value::F64(value.as_secs_f64()));
                }
            }
            out.extend([quantiles, total, average]);
        }
        out.push(
            Family::new(
                "kafkit_topic_stats_tracked",
                "Topics whose statistics are kept.",
                Kind::Gauge,
            )
            .with(Vec::new(), Value::U64(self.topics.len() as u64)),
        );
        out.push(
            Family::new(
                "kafkit_topic_stats_evicted_total",
                "Topics evicted from tracking to stay within max_topic_stats.",
                Kind::Counter,
            )
            .with(Vec::new(), Value::U64(self.topics_evicted)),
        );
        for (name, help, field) in PARTITION_GAUGES {
            let mut family = Family::new(name, help, Kind::Gauge);
            for p in &self.partitions {
                let labels = vec![
                    ("group", Cow::Borrowed(&*p.group)),
                    ("topic", Cow::Borrowed(&*p.topic)),
                    ("partition", Cow::Owned(p.partition.to_string())),
                ];
                family = family.with(labels, Value::I64(field(p)));
            }
            out.push(family);
        }
        let mut group_lag = Family::new(
            "kafkit_consumer_group_lag",
            "Sum of the lag of a group's partitions.",
            Kind::Gauge,
        );
        let mut rebalances = Family::new(
            "kafkit_consumer_group_rebalances_total",
            "Rebalances this client went through in a group.",
            Kind::Counter,
        );
        for g in &self.groups {
            let labels = || vec![("group", Cow::Borrowed(&*g.group))];
            group_lag = group_lag.with(labels(), Value::I64(g.lag));
            rebalances = rebalances.with(labels(), Value::U64(g.rebalances));
        }
        out.extend([group_lag, rebalances]);

        let g = &self.gauges;
        let gauges = [
            (
                "kafkit_records_in_flight",
                "Records handed to the application and not yet acked or failed.",
                g.records_in_flight,
            ),
            (
                "kafkit_buffered_bytes",
                "Bytes held in fetch and produce buffers.",
                g.buffered_bytes,
            ),
            (
                "kafkit_active_producers",
                "Producers alive.",
                g.active_producers,
            ),
            (
                "kafkit_active_consumers",
                "Consumers alive.",
                g.active_consumers,
            ),
        ];
        for (name, help, value) in gauges {
            out.push(Family::new(name, help, Kind::Gauge).with(Vec::new(), Value::I64(value)));
        }
        let mut circuit = Family::new(
            "kafkit_circuit_breaker_state",
            "1 for the circuit breaker's current state, 0 for the others.",
            Kind::Gauge,
        );
        for state in CIRCUIT_STATES {
            let value = u64::from(state == g.circuit_state);
            circuit = circuit.with(
                vec![("state", Cow::Borrowed(state.as_str()))],
                Value::U64(value),
            );
        }
        out.push(circuit);
        out.push(
            Family::new(
                "kafkit_circuit_breaker_consecutive_failures",
                "Consecutive failures counted by the circuit breaker.",
                Kind::Gauge,
            )
            .with(Vec::new(), Value::U64(g.circuit_failures)),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;
    use crate::Metrics;

    /// Every family the built-in text exposition has appears here too (timings as documented), so
    /// the integrations never silently miss a metric that is added to the text exporter.
    #[test]
    fn families_cover_the_text_exposition() {
        let m = Metrics::default();
        m.record_processed("t", Duration::from_millis(1));
        m.record_produced("t", Duration::from_millis(1));
        let snapshot = m.publish();
        let ours: HashSet<String> = snapshot
            .families()
            .iter()
            .map(|f| f.name.to_string())
            .collect();
        for line in snapshot.to_prometheus().lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let (name, kind) = rest.split_once(' ').unwrap();
            if kind == "summary" {
                assert!(ours.contains(name), "quantile gauge {name}");
                let base = name.trim_end_matches("_duration_seconds");
                assert!(
                    ours.contains(&format!("{base}_time_seconds_total")),
                    "{name}"
                );
            } else {
                assert!(ours.contains(name), "{name} missing from the families");
            }
        }
        for f in snapshot.families() {
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
        }
    }
}
