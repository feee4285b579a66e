//! Prometheus text exposition (format 0.0.4) of a [`MetricsSnapshot`].
//!
//! Per-topic counters carry a `topic` label and end in `_total`; timings are summaries in seconds (p50,
//! p95 and p99 from the histogram, `_sum` and `_count` exact) plus a gauge for the moving average; lag is
//! a gauge per partition and per group. An evicted topic's series disappear, as Prometheus expects of
//! a label value that is gone; the snapshot's `totals` keep its counts for other consumers.
//!
//! This format is always built in: it is what the health endpoint serves and what every scraper
//! reads. Services that already expose metrics through the `prometheus-client` crate or the `metrics`
//! facade turn on this crate's feature of that name instead (see the crate documentation).

use std::fmt::{self, Display, Write};
use std::time::Duration;

use crate::gauges::CIRCUIT_STATES;
use crate::{Counters, MetricsSnapshot, PartitionLag, TimingSnapshot, TopicSnapshot};

/// A family exported from each element of a list: name, help, and how to read the value.
type Family<F> = (&'static str, &'static str, F);
type CounterField = fn(&Counters) -> u64;
type TimingSeries = fn(&TopicSnapshot) -> &TimingSnapshot;
type PartitionField = fn(&PartitionLag) -> i64;

/// Per-topic counter families.
pub(crate) const TOPIC_COUNTERS: [Family<CounterField>; 17] = [
    (
        "kafkit_records_produced_total",
        "Records the broker acknowledged to the producer.",
        |c| c.produced,
    ),
    (
        "kafkit_records_consumed_total",
        "Records fetched and handed to the application.",
        |c| c.consumed,
    ),
    (
        "kafkit_records_processed_total",
        "Records the handler finished with, successfully or not.",
        |c| c.processed,
    ),
    (
        "kafkit_records_acked_total",
        "Records processed successfully.",
        |c| c.acked,
    ),
    (
        "kafkit_records_failed_total",
        "Records whose processing failed.",
        |c| c.failed,
    ),
    (
        "kafkit_handler_panics_total",
        "Failed attempts in which the handler panicked.",
        |c| c.panicked,
    ),
    (
        "kafkit_corrupt_batches_total",
        "Fetched record batches that could not be decoded and were skipped.",
        |c| c.corrupt_batches,
    ),
    (
        "kafkit_records_retried_total",
        "Failed records scheduled for another attempt.",
        |c| c.retried,
    ),
    (
        "kafkit_records_dead_lettered_total",
        "Failed records sent to the dead-letter topic.",
        |c| c.dead_lettered,
    ),
    (
        "kafkit_offset_commits_total",
        "Successful offset commits.",
        |c| c.commits,
    ),
    (
        "kafkit_offset_commit_failures_total",
        "Failed offset commits.",
        |c| c.commit_failures,
    ),
    (
        "kafkit_share_records_acquired_total",
        "Share groups: records acquired under a lock.",
        |c| c.share_acquired,
    ),
    (
        "kafkit_share_records_redelivered_total",
        "Share groups: acquired records delivered before.",
        |c| c.share_redelivered,
    ),
    (
        "kafkit_share_records_accepted_total",
        "Share groups: records acknowledged as accepted.",
        |c| c.share_accepted,
    ),
    (
        "kafkit_share_records_released_total",
        "Share groups: records acknowledged as released.",
        |c| c.share_released,
    ),
    (
        "kafkit_share_records_rejected_total",
        "Share groups: records acknowledged as rejected.",
        |c| c.share_rejected,
    ),
    (
        "kafkit_share_lock_expired_total",
        "Share groups: records not acknowledged because their acquisition lock ran out.",
        |c| c.share_lock_expired,
    ),
];

/// The share groups' delivery-count distribution: a counter per topic and delivery count
/// (`delivery` label `1` to `4`, and `5+`), exported only for topics a share consumer read.
pub(crate) const SHARE_DELIVERIES: (&str, &str) = (
    "kafkit_share_deliveries_total",
    "Share groups: records acquired, by delivery count (label delivery: 1, 2, 3, 4, 5+).",
);

/// The `delivery` label and count of each bucket of [`SHARE_DELIVERIES`]; none for a topic no
/// share consumer acquired records of.
pub(crate) fn share_deliveries(c: &Counters) -> Vec<(&'static str, u64)> {
    if c.share_acquired == 0 {
        return Vec::new();
    }
    ["1", "2", "3", "4", "5+"]
        .into_iter()
        .zip(c.share_deliveries)
        .collect()
}

/// Per-topic timing families (summaries; the name is also the base of the average gauge's name).
pub(crate) const TOPIC_TIMINGS: [Family<TimingSeries>; 2] = [
    (
        "kafkit_produce_duration_seconds",
        "Produce latency, from send to broker acknowledgement.",
        |t| &t.produce_time,
    ),
    (
        "kafkit_process_duration_seconds",
        "Processing time of the application's handler.",
        |t| &t.process_time,
    ),
];

/// Per-partition lag families (labels: group, topic, partition).
pub(crate) const PARTITION_GAUGES: [Family<PartitionField>; 3] = [
    (
        "kafkit_consumer_lag",
        "High watermark minus committed offset of a partition, per group.",
        |p| p.lag,
    ),
    (
        "kafkit_consumer_committed_offset",
        "Committed offset of a partition, per group.",
        |p| p.committed_offset,
    ),
    (
        "kafkit_partition_high_watermark",
        "Log end offset of a partition from the last fetch.",
        |p| p.high_watermark,
    ),
];

impl MetricsSnapshot {
    /// The snapshot in the Prometheus text format, ready to serve with content type
    /// `text/plain; version=0.0.4`.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(256 + 1024 * self.topics.len());
        self.write_prometheus(&mut out)
            .expect("writing to a String never fails");
        out
    }

    /// Writes [`to_prometheus`](Self::to_prometheus)'s text into `out`, e.g. a response buffer.
    pub fn write_prometheus(&self, out: &mut impl Write) -> fmt::Result {
        let mut w = Exposition { out };
        for (name, help, field) in TOPIC_COUNTERS {
            w.family(name, "counter", help)?;
            for t in &self.topics {
                w.sample(name, &[("topic", &t.topic)], field(&t.counters))?;
            }
        }
        w.family(SHARE_DELIVERIES.0, "counter", SHARE_DELIVERIES.1)?;
        for t in &self.topics {
            for (delivery, count) in share_deliveries(&t.counters) {
                w.sample(
                    SHARE_DELIVERIES.0,
                    &[("topic", &t.topic), ("delivery", delivery)],
                    count,
                )?;
            }
        }
        for (name, help, series) in TOPIC_TIMINGS {
            w.family(name, "summary", help)?;
            for t in &self.topics {
                let s = series(t);
                let quantiles = [("0.5", s.p50), ("0.95", s.p95), ("0.99", s.p99)];
                for (q, value) in quantiles {
                    if let Some(value) = value {
                        w.sample(
                            name,
                            &[("topic", &t.topic), ("quantile", q)],
                            seconds(value),
                        )?;
                    }
                }
                if s.count > 0 {
                    w.sample(
                        &format!("{name}_sum"),
                        &[("topic", &t.topic)],
                        seconds(s.sum),
                    )?;
                    w.sample(&format!("{name}_count"), &[("topic", &t.topic)], s.count)?;
                }
            }
            let average = format!("{}_average_seconds", name.trim_end_matches("_seconds"));
            w.family(
                &average,
                "gauge",
                "Mean of the most recent samples (the moving-average window), or of all samples if disabled.",
            )?;
            for t in &self.topics {
                if let Some(value) = series(t).average {
                    w.sample(&average, &[("topic", &t.topic)], seconds(value))?;
                }
            }
        }

        w.family(
            "kafkit_topic_stats_tracked",
            "gauge",
            "Topics whose statistics are kept.",
        )?;
        w.sample("kafkit_topic_stats_tracked", &[], self.topics.len())?;
        w.family(
            "kafkit_topic_stats_evicted_total",
            "counter",
            "Topics evicted from tracking to stay within max_topic_stats.",
        )?;
        w.sample("kafkit_topic_stats_evicted_total", &[], self.topics_evicted)?;

        for (name, help, field) in PARTITION_GAUGES {
            w.family(name, "gauge", help)?;
            for p in &self.partitions {
                let partition = p.partition.to_string();
                let labels = [
                    ("group", &*p.group),
                    ("topic", &*p.topic),
                    ("partition", &partition),
                ];
                w.sample(name, &labels, field(p))?;
            }
        }
        w.family(
            "kafkit_consumer_group_lag",
            "gauge",
            "Sum of the lag of a group's partitions.",
        )?;
        for g in &self.groups {
            w.sample("kafkit_consumer_group_lag", &[("group", &g.group)], g.lag)?;
        }
        w.family(
            "kafkit_consumer_group_rebalances_total",
            "counter",
            "Rebalances this client went through in a group.",
        )?;
        for g in &self.groups {
            w.sample(
                "kafkit_consumer_group_rebalances_total",
                &[("group", &g.group)],
                g.rebalances,
            )?;
        }

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
            w.family(name, "gauge", help)?;
            w.sample(name, &[], value)?;
        }
        w.family(
            "kafkit_circuit_breaker_state",
            "gauge",
            "1 for the circuit breaker's current state, 0 for the others.",
        )?;
        for state in CIRCUIT_STATES {
            let value = u8::from(state == g.circuit_state);
            w.sample(
                "kafkit_circuit_breaker_state",
                &[("state", state.as_str())],
                value,
            )?;
        }
        w.family(
            "kafkit_circuit_breaker_consecutive_failures",
            "gauge",
            "Consecutive failures counted by the circuit breaker.",
        )?;
        w.sample(
            "kafkit_circuit_breaker_consecutive_failures",
            &[],
            g.circuit_failures,
        )
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Writes families and samples; label values are escaped as the format requires.
struct Exposition<'a, W> {
    out: &'a mut W,
}

impl<W: Write> Exposition<'_, W> {
    /// The `# HELP` and `# TYPE` lines. Help texts are constants without `\` or newlines, so need no escaping.
    fn family(&mut self, name: &str, kind: &str, help: &str) -> fmt::Result {
        writeln!(self.out, "# HELP {name} {help}")?;
        writeln!(self.out, "# TYPE {name} {kind}")
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) -> fmt::Result {
        self.out.write_str(name)?;
        if !labels.is_empty() {
            self.out.write_char('{')?;
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.write_char(',')?;
                }
                write!(self.out, "{key}=\"")?;
                for c in value.chars() {
                    match c {
                        '\\' => self.out.write_str("\\\\")?,
                        '"' => self.out.write_str("\\\"")?,
                        '\n' => self.out.write_str("\\n")?,
                        c => self.out.write_char(c)?,
                    }
                }
                self.out.write_char('"')?;
            }
            self.out.write_char('}')?;
        }
        writeln!(self.out, " {value}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{CircuitState, Metrics, MetricsConfig};
    use std::collections::{BTreeMap, HashSet};

    #[test]
    fn share_group_counters_and_the_delivery_distribution_are_exported() {
        let m = Metrics::new(MetricsConfig::default());
        for delivery in [1, 1, 2, 7] {
            m.record_share_acquired("jobs", delivery);
        }
        m.record_share_acknowledged("jobs", 2, 1, 0);
        m.record_share_lock_expired("jobs", 1);
        // A consumer-group topic gets no delivery distribution.
        m.record_consumed("orders", 1);
        let snapshot = m.publish();
        let c = snapshot.topic("jobs").unwrap().counters;
        assert_eq!(
            (
                c.share_acquired,
                c.share_redelivered,
                c.share_accepted,
                c.share_released
            ),
            (4, 2, 2, 1)
        );
        assert_eq!((c.share_rejected, c.share_lock_expired), (0, 1));
        assert_eq!(c.share_deliveries, [2, 1, 0, 0, 1]);
        assert_eq!(snapshot.totals.share_acquired, 4);
        let text = snapshot.to_prometheus();
        for line in [
            "kafkit_share_records_acquired_total{topic=\"jobs\"} 4",
            "kafkit_share_records_accepted_total{topic=\"jobs\"} 2",
            "kafkit_share_lock_expired_total{topic=\"jobs\"} 1",
            "kafkit_share_deliveries_total{topic=\"jobs\",delivery=\"1\"} 2",
            "kafkit_share_deliveries_total{topic=\"jobs\",delivery=\"5+\"} 1",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
        assert!(!text.contains("kafkit_share_deliveries_total{topic=\"orders\""));
    }

    /// One parsed sample line (also used by the `prometheus-client` integration's tests).
    #[derive(Debug, PartialEq)]
    pub(crate) struct Sample {
        pub(crate) name: String,
        pub(crate) labels: BTreeMap<String, String>,
        pub(crate) value: f64,
    }

    /// A strict parser of the subset of the text format we emit; panics on anything malformed.
    fn parse(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
        let mut types = BTreeMap::new();
        let mut helped = HashSet::new();
        let mut current: Option<(String, String)> = None;
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has text");
                assert!(!help.is_empty() && helped.insert(name.to_owned()), "{line}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
                assert!(helped.contains(name), "TYPE before HELP: {line}");
                assert!(["counter", "gauge", "summary"].contains(&kind), "{line}");
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "duplicate: {line}"
                );
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "counter without _total: {name}");
                }
                current = Some((name.to_owned(), kind.to_owned()));
            } else {
                let sample = parse_sample(line);
                let (family, kind) = current.as_ref().expect("sample before any TYPE");
                let base = match kind.as_str() {
                    "summary" => sample
                        .name
                        .strip_suffix("_sum")
                        .or_else(|| sample.name.strip_suffix("_count"))
                        .unwrap_or(&sample.name),
                    _ => &sample.name,
                };
                assert_eq!(base, family, "sample outside its family: {line}");
                if kind == "summary" && sample.name == *family {
                    assert!(sample.labels.contains_key("quantile"), "{line}");
                }
                samples.push(sample);
            }
        }
        (types, samples)
    }

    pub(crate) fn parse_sample(line: &str) -> Sample {
        let is_name = |c: char, first: bool| {
            c == '_' || c == ':' || c.is_ascii_alphabetic() || (!first && c.is_ascii_digit())
        };
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        let mut name = String::new();
        while chars[i] != '{' && chars[i] != ' ' {
            assert!(is_name(chars[i], i == 0), "bad name in {line}");
            name.push(chars[i]);
            i += 1;
        }
        let mut labels = BTreeMap::new();
        if chars[i] == '{' {
            i += 1;
            while chars[i] != '}' {
                let mut key = String::new();
                while chars[i] != '=' {
                    assert!(
                        is_name(chars[i], key.is_empty()) && chars[i] != ':',
                        "bad label name in {line}"
                    );
                    key.push(chars[i]);
                    i += 1;
                }
                assert_eq!(chars[i + 1], '"', "unquoted label value in {line}");
                i += 2;
                let mut value = String::new();
                loop {
                    match chars[i] {
                        '\\' => {
                            value.push(match chars[i + 1] {
                                '\\' => '\\',
                                '"' => '"',
                                'n' => '\n',
                                c => panic!("bad escape \\{c} in {line}"),
                            });
                            i += 2;
                        }
                        '"' => break,
                        c => {
                            value.push(c);
                            i += 1;
                        }
                    }
                }
                i += 1;
                assert!(
                    labels.insert(key, value).is_none(),
                    "duplicate label in {line}"
                );
                match chars[i] {
                    ',' => i += 1,
                    '}' => {}
                    c => panic!("unexpected {c:?} after a label in {line}"),
                }
            }
            i += 1;
        }
        assert_eq!(chars[i], ' ', "no space before the value in {line}");
        let value: String = chars[i + 1..].iter().collect();
        Sample {
            name,
            labels,
            value: value
                .parse()
                .unwrap_or_else(|_| panic!("bad value {value:?}")),
        }
    }

    pub(crate) type Labels<'a> = &'a [(&'a str, &'a str)];

    pub(crate) fn find<'s>(
        samples: &'s [Sample],
        name: &str,
        labels: Labels<'_>,
    ) -> Option<&'s Sample> {
        samples.iter().find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    #[test]
    fn exposition_is_well_formed_and_complete() {
        let m = Metrics::new(
            MetricsConfig::builder()
                .moving_average_window(2)
                .build()
                .unwrap(),
        );
        let evil = "we\"ird\\topic\nname";
        for v in [10, 20, 30] {
            m.record_consumed(evil, 1);
            m.record_processed(evil, Duration::from_micros(v));
            m.record_acked(evil);
        }
        m.record_failed("plain");
        m.record_panicked("plain");
        m.record_corrupt_batch("plain");
        m.record_produced("plain", Duration::from_millis(2));
        m.record_partition_lag("billing", evil, 3, 120, 100);
        m.record_rebalance("billing");
        m.records_in_flight().set(7);
        m.set_circuit_breaker(CircuitState::HalfOpen, 2);
        let text = m.publish().to_prometheus();
        let (types, samples) = parse(&text);

        let cases: [(&str, Labels<'_>, f64); 17] = [
            ("kafkit_corrupt_batches_total", &[("topic", "plain")], 1.0),
            ("kafkit_records_consumed_total", &[("topic", evil)], 3.0),
            ("kafkit_handler_panics_total", &[("topic", "plain")], 1.0),
            ("kafkit_handler_panics_total", &[("topic", evil)], 0.0),
            ("kafkit_records_acked_total", &[("topic", evil)], 3.0),
            ("kafkit_records_produced_total", &[("topic", "plain")], 1.0),
            (
                "kafkit_process_duration_seconds",
                &[("topic", evil), ("quantile", "0.5")],
                20e-6,
            ),
            (
                "kafkit_process_duration_seconds",
                &[("topic", evil), ("quantile", "0.99")],
                30e-6,
            ),
            (
                "kafkit_process_duration_seconds_count",
                &[("topic", evil)],
                3.0,
            ),
            (
                "kafkit_process_duration_seconds_sum",
                &[("topic", evil)],
                60e-6,
            ),
            (
                "kafkit_process_duration_average_seconds",
                &[("topic", evil)],
                25e-6,
            ),
            (
                "kafkit_consumer_lag",
                &[("group", "billing"), ("topic", evil), ("partition", "3")],
                20.0,
            ),
            ("kafkit_consumer_group_lag", &[("group", "billing")], 20.0),
            (
                "kafkit_consumer_group_rebalances_total",
                &[("group", "billing")],
                1.0,
            ),
            ("kafkit_records_in_flight", &[], 7.0),
            (
                "kafkit_circuit_breaker_state",
                &[("state", "half_open")],
                1.0,
            ),
            ("kafkit_circuit_breaker_state", &[("state", "closed")], 0.0),
        ];
        for (name, labels, value) in cases {
            let s = find(&samples, name, labels)
                .unwrap_or_else(|| panic!("missing {name} {labels:?}\n{text}"));
            assert!(
                (s.value - value).abs() < 1e-12,
                "{name} {labels:?}: {} != {value}",
                s.value
            );
        }
        let kinds = [
            ("kafkit_records_consumed_total", "counter"),
            ("kafkit_handler_panics_total", "counter"),
            ("kafkit_process_duration_seconds", "summary"),
            ("kafkit_process_duration_average_seconds", "gauge"),
            ("kafkit_consumer_lag", "gauge"),
            ("kafkit_topic_stats_evicted_total", "counter"),
        ];
        for (name, kind) in kinds {
            assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
        }
        // "plain" has no processing samples, so no summary lines.
        assert!(
            find(
                &samples,
                "kafkit_process_duration_seconds_count",
                &[("topic", "plain")]
            )
            .is_none()
        );
    }

    #[test]
    fn empty_snapshot_is_well_formed() {
        let (types, samples) = parse(&Metrics::default().snapshot().to_prometheus());
        assert!(types.len() > 20);
        assert_eq!(
            find(&samples, "kafkit_topic_stats_tracked", &[]).map(|s| s.value),
            Some(0.0)
        );
    }
}
