//! The `metrics` facade integration (feature `metrics`): pushes a [`MetricsSnapshot`] into the
//! installed `metrics` recorder (metrics-exporter-prometheus, StatsD, …), on an interval or on
//! demand.
//!
//! Counters are set with `Counter::absolute` to the snapshot's totals, so pushing the same snapshot
//! twice changes nothing and nothing is counted twice. Gauges are set. Timings become gauges (a
//! `quantile` label for p50/p95/p99, and the moving average) and the total time, a float, a gauge
//! named `…_time_seconds_total` since facade counters are integers (see the crate documentation).

use std::time::Duration;

use metrics_facade::{Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit};
use tokio::task::JoinHandle;

use crate::families::{Kind, Value};
use crate::{Metrics, MetricsSnapshot};

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

impl MetricsSnapshot {
    /// Pushes this snapshot into the globally installed `metrics` recorder (a no-op without one).
    ///
    /// ```
    /// use kafkit_metrics::Metrics;
    ///
    /// let metrics = Metrics::default();
    /// metrics.record_acked("orders");
    /// // With a recorder installed (e.g. metrics-exporter-prometheus), its /metrics now shows
    /// // kafkit_records_acked_total{topic="orders"} 1.
    /// metrics.publish().report_to_facade();
    /// ```
    pub fn report_to_facade(&self) {
        metrics_facade::with_recorder(|recorder| self.report_to(recorder));
    }

    /// Pushes this snapshot into `recorder`.
    pub fn report_to(&self, recorder: &dyn Recorder) {
        for family in self.families() {
            for (labels, value) in family.samples {
                let labels: Vec<Label> = labels
                    .into_iter()
                    .map(|(k, v)| Label::new(k, v.into_owned()))
                    .collect();
                let key = Key::from_parts(SharedString::from(family.name.clone()), labels);
                match (family.kind, value) {
                    (Kind::Counter, Value::U64(v)) => {
                        recorder.register_counter(&key, &METADATA).absolute(v);
                    }
                    (_, v) => recorder.register_gauge(&key, &METADATA).set(v.as_f64()),
                }
            }
        }
    }
}

/// Gives the installed `metrics` recorder the help text and unit of every kafkit metric.
/// [`Metrics::spawn_facade_reporter`] calls it when it starts; call it yourself when you only push
/// with [`MetricsSnapshot::report_to_facade`].
pub fn describe_facade() {
    metrics_facade::with_recorder(|recorder| {
        for family in MetricsSnapshot::empty().families() {
            let unit = family.name.contains("_seconds").then_some(Unit::Seconds);
            let name = KeyName::from(SharedString::from(family.name.clone()));
            let help = SharedString::const_str(family.help);
            match family.kind {
                Kind::Counter if !family.name.ends_with("_time_seconds_total") => {
                    recorder.describe_counter(name, unit, help)
                }
                _ => recorder.describe_gauge(name, unit, help),
            }
        }
    });
}

/// The periodic reporter started by [`Metrics::spawn_facade_reporter`]; dropping it stops the task.
#[derive(Debug)]
pub struct FacadeReporter {
    handle: JoinHandle<()>,
}

impl Drop for FacadeReporter {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl Metrics {
    /// Every [`MetricsConfig::publish_interval`](crate::MetricsConfig::publish_interval) (the first
    /// time at once), publishes a snapshot and pushes it into the installed `metrics` recorder, until
    /// the returned handle is dropped or every [`Metrics`] clone is gone. It publishes, so it takes
    /// the place of [`spawn_publisher`](Self::spawn_publisher).
    ///
    /// ```no_run
    /// # async fn service(metrics: kafkit_metrics::Metrics) {
    /// // After installing a recorder, e.g. metrics_exporter_prometheus::PrometheusBuilder::install:
    /// let _reporter = metrics.spawn_facade_reporter(); // the one line; keep the handle alive
    /// # }
    /// ```
    ///
    /// # Panics
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn spawn_facade_reporter(&self) -> FacadeReporter {
        self.spawn_facade_reporter_every(self.config().publish_interval())
    }

    /// [`spawn_facade_reporter`](Self::spawn_facade_reporter) with its own interval.
    ///
    /// # Panics
    /// Outside a tokio runtime, or if `interval` is zero.
    pub fn spawn_facade_reporter_every(&self, interval: Duration) -> FacadeReporter {
        let metrics = self.downgrade();
        let handle = tokio::spawn(async move {
            describe_facade();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(metrics) = Metrics::upgrade(&metrics) else {
                    tracing::debug!(
                        reason = "every Metrics handle was dropped",
                        "metrics facade reporter stopped"
                    );
                    return;
                };
                metrics.publish().report_to_facade();
            }
        });
        FacadeReporter { handle }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
    use metrics_util::{CompositeKey, MetricKind};

    use super::*;

    type Row = (CompositeKey, Option<Unit>, Option<SharedString>, DebugValue);

    fn read(snapshotter: &Snapshotter) -> Vec<Row> {
        snapshotter.snapshot().into_vec()
    }

    fn find<'r>(rows: &'r [Row], kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> &'r Row {
        rows.iter()
            .find(|(key, ..)| {
                key.kind() == kind
                    && key.key().name() == name
                    && labels
                        .iter()
                        .all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v))
            })
            .unwrap_or_else(|| panic!("no {kind:?} {name} {labels:?} in {rows:#?}"))
    }

    fn counter(rows: &[Row], name: &str, labels: &[(&str, &str)]) -> u64 {
        match &find(rows, MetricKind::Counter, name, labels).3 {
            DebugValue::Counter(v) => *v,
            other => panic!("{name}: {other:?}"),
        }
    }

    fn gauge(rows: &[Row], name: &str, labels: &[(&str, &str)]) -> f64 {
        match &find(rows, MetricKind::Gauge, name, labels).3 {
            DebugValue::Gauge(v) => v.into_inner(),
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn a_report_sets_counters_absolutely_and_gauges() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let metrics = Metrics::default();
        for micros in [100, 300] {
            metrics.record_consumed("orders", 1);
            metrics.record_processed("orders", Duration::from_micros(micros));
            metrics.record_acked("orders");
        }
        metrics.record_partition_lag("billing", "orders", 4, 50, 45);
        metrics.records_in_flight().set(3);
        let snapshot = metrics.publish();
        // Pushed twice: absolute values, so the second push changes nothing.
        snapshot.report_to(&recorder);
        snapshot.report_to(&recorder);
        let rows = read(&snapshotter);
        let orders = [("topic", "orders")];
        assert_eq!(counter(&rows, "kafkit_records_acked_total", &orders), 2);
        assert_eq!(counter(&rows, "kafkit_records_consumed_total", &orders), 2);
        let p99 = gauge(
            &rows,
            "kafkit_process_duration_seconds",
            &[("topic", "orders"), ("quantile", "0.99")],
        );
        assert!((p99 - 300e-6).abs() < 6e-6, "p99 {p99}");
        let total = gauge(&rows, "kafkit_process_time_seconds_total", &orders);
        assert!((total - 400e-6).abs() < 1e-9, "total {total}");
        let partition = [
            ("group", "billing"),
            ("topic", "orders"),
            ("partition", "4"),
        ];
        assert_eq!(gauge(&rows, "kafkit_consumer_lag", &partition), 5.0);
        assert_eq!(gauge(&rows, "kafkit_records_in_flight", &[]), 3.0);

        // A later snapshot carries the new totals.
        metrics.record_acked("orders");
        metrics.publish().report_to(&recorder);
        assert_eq!(
            counter(&read(&snapshotter), "kafkit_records_acked_total", &orders),
            3
        );
    }

    /// The one test in this binary that installs a global recorder.
    #[tokio::test(flavor = "current_thread")]
    async fn the_reporter_publishes_and_pushes_until_dropped() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics_facade::set_global_recorder(recorder).expect("no other test installs one");
        let metrics = Metrics::default();
        metrics.record_commit("orders");
        let reporter = metrics.spawn_facade_reporter_every(Duration::from_millis(10));
        let wait_for = |want: u64| {
            let snapshotter = &snapshotter;
            async move {
                for _ in 0..500 {
                    let rows = read(snapshotter);
                    let found = rows.iter().any(|(key, _, _, value)| {
                        key.key().name() == "kafkit_offset_commits_total"
                            && *value == DebugValue::Counter(want)
                    });
                    if found {
                        return rows;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("the reporter never pushed kafkit_offset_commits_total = {want}");
            }
        };
        let rows = wait_for(1).await;
        // Described when it started.
        let (_, unit, help, _) = find(
            &rows,
            MetricKind::Counter,
            "kafkit_offset_commits_total",
            &[],
        );
        assert_eq!(unit, &None);
        assert_eq!(help.as_deref(), Some("Successful offset commits."));
        assert_eq!(
            metrics.snapshot().totals.commits,
            1,
            "the reporter publishes"
        );

        metrics.record_commit("orders");
        wait_for(2).await;

        drop(reporter);
        tokio::task::yield_now().await;
        read(&snapshotter); // clears the debugging recorder's counters
        metrics.record_commit("orders");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rows = read(&snapshotter);
        let pushed = rows.iter().any(|(key, _, _, value)| {
            key.key().name() == "kafkit_offset_commits_total" && *value != DebugValue::Counter(0)
        });
        assert!(!pushed, "a dropped reporter still pushes: {rows:#?}");
        assert_eq!(
            metrics.snapshot().totals.commits,
            2,
            "and no longer publishes"
        );
    }
}
