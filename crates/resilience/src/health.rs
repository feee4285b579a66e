//! Health reports for a consumer: pure evaluation of what the consumer observed into
//! healthy / degraded / unhealthy with human-readable reasons.
//!
//! kafkit-core gathers [`HealthInputs`] on its health-check interval and calls
//! [`HealthPolicy::evaluate`]; a service serves [`HealthReport::to_json`] on its readiness
//! endpoint and answers 503 when [`HealthReport::is_ready`] is false. The worst check decides the
//! overall status.
//!
//! | check             | unhealthy                        | degraded                                 |
//! |-------------------|----------------------------------|------------------------------------------|
//! | `coordinator`     | unreachable                      |                                          |
//! | `heartbeat`       | none for over the session timeout | none yet, or none for over half of it   |
//! | `fetch`           | every fetching partition stalled | some fetching partitions stalled         |
//! | `circuit_breaker` |                                  | open or half-open                        |
//! | `lag`             |                                  | growing over the recent samples          |
//!
//! An open breaker is degraded, not unhealthy: the consumer is doing the right thing (pausing while
//! the downstream is down), and a restart or a readiness flap would not help.

use std::fmt::{self, Write as _};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::{CircuitState, ConfigError};

/// Overall or per-check status; ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HealthStatus {
    /// Everything works.
    Healthy,
    /// Working, but something needs attention.
    Degraded,
    /// Not consuming: take it out of rotation.
    Unhealthy,
}

impl HealthStatus {
    /// `healthy`, `degraded` or `unhealthy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One named check and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked (`coordinator`, `heartbeat`, `fetch`, `circuit_breaker`, `lag`, `records`,
    /// or an application's own).
    pub name: String,
    /// Its result.
    pub status: HealthStatus,
    /// Why, for a human.
    pub detail: String,
}

impl Check {
    /// A check result.
    pub fn new(name: impl Into<String>, status: HealthStatus, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status,
            detail: detail.into(),
        }
    }
}

/// The result of one health evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// The worst status among the checks (healthy when there are none).
    pub status: HealthStatus,
    /// Every check, in evaluation order.
    pub checks: Vec<Check>,
    /// When the inputs were gathered.
    pub checked_at: DateTime<Utc>,
}

impl HealthReport {
    /// A report over `checks`; the worst one sets the status.
    pub fn from_checks(checks: Vec<Check>, checked_at: DateTime<Utc>) -> Self {
        let status = checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(HealthStatus::Healthy);
        Self {
            status,
            checks,
            checked_at,
        }
    }

    /// Adds an application's own check (a database, a downstream) and updates the status.
    pub fn with_check(mut self, check: Check) -> Self {
        self.status = self.status.max(check.status);
        self.checks.push(check);
        self
    }

    /// Whether a readiness probe should pass: healthy or degraded.
    pub fn is_ready(&self) -> bool {
        self.status != HealthStatus::Unhealthy
    }

    /// The checks that are not healthy, worst first.
    pub fn problems(&self) -> Vec<&Check> {
        let mut problems: Vec<&Check> = self
            .checks
            .iter()
            .filter(|c| c.status != HealthStatus::Healthy)
            .collect();
        problems.sort_by_key(|c| std::cmp::Reverse(c.status));
        problems
    }

    /// The report as one line of JSON:
    /// `{"status":"degraded","ready":true,"checked_at":"...","checks":[{"name":..,"status":..,"detail":..}]}`.
    ///
    /// Written by hand: four fields do not justify serde and serde_json in a policy crate.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(128 + 96 * self.checks.len());
        out.push_str("{\"status\":");
        json_string(&mut out, self.status.as_str());
        let _ = write!(out, ",\"ready\":{}", self.is_ready());
        out.push_str(",\"checked_at\":");
        json_string(
            &mut out,
            &self.checked_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        );
        out.push_str(",\"checks\":[");
        for (i, check) in self.checks.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"name\":");
            json_string(&mut out, &check.name);
            out.push_str(",\"status\":");
            json_string(&mut out, check.status.as_str());
            out.push_str(",\"detail\":");
            json_string(&mut out, &check.detail);
            out.push('}');
        }
        out.push_str("]}");
        out
    }
}

/// Appends `s` as a JSON string literal.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// How one assigned partition's fetching is going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Time since the last successful fetch response for this partition. An empty response counts:
    /// a caught-up partition with no new records is progressing, not stalled.
    pub since_last_fetch: Duration,
    /// Whether fetching is paused on purpose (breaker open, backpressure). Paused partitions are
    /// never reported as stalled.
    pub paused: bool,
}

/// A fetched batch that could not be decoded and was skipped (the consumer's `Skip` policy for
/// corrupt batches): the partition moved on past it, and it is reported here so it never passes
/// in silence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedBatch {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset the undecodable batch starts at.
    pub offset: i64,
    /// Where the partition's position moved to.
    pub skipped_to: i64,
    /// What was wrong with it.
    pub reason: String,
    /// Time since it was skipped.
    pub since: Duration,
}

/// How long a skipped batch keeps the `records` check degraded.
pub const SKIPPED_BATCH_WINDOW: Duration = Duration::from_secs(15 * 60);

/// What the consumer observed, gathered at one instant. Durations are "time since", so the
/// evaluation needs no clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthInputs {
    /// Whether the group coordinator answered the last request.
    pub coordinator_reachable: bool,
    /// A fixed assignment (Java's `assign()`): no group membership, so no heartbeat to check, and
    /// the coordinator is needed for offsets only.
    pub fixed_assignment: bool,
    /// Time since the last successful heartbeat; `None` before the first one (still joining).
    pub since_last_heartbeat: Option<Duration>,
    /// The group's session timeout (`session.timeout.ms`).
    pub session_timeout: Duration,
    /// Every assigned partition.
    pub partitions: Vec<PartitionProgress>,
    /// The record-processing breaker's state; `None` when the breaker is disabled.
    pub breaker: Option<CircuitState>,
    /// Total lag over the assigned partitions, oldest sample first, one per health-check interval.
    pub lag_samples: Vec<u64>,
    /// The most recent batches skipped because they could not be decoded, oldest first.
    pub skipped_batches: Vec<SkippedBatch>,
}

/// Which way lag is heading over the recent samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagTrend {
    /// The consumer is falling behind.
    Growing,
    /// Keeping up.
    Stable,
    /// Catching up.
    Shrinking,
}

impl LagTrend {
    /// Samples needed before a trend is called.
    pub const MIN_SAMPLES: usize = 3;

    /// Records by which the fitted lag must change across the window to count as a trend. Below a
    /// few hundred records, lag is noise at any realistic throughput.
    pub const MIN_LAG_CHANGE: f64 = 100.0;

    /// The trend of `samples` (oldest first), or `None` with fewer than
    /// [`MIN_SAMPLES`](Self::MIN_SAMPLES).
    ///
    /// A least-squares line through the samples decides: growing or shrinking when it rises or
    /// falls across the window by more than 10 % of the mean lag and by more than
    /// [`MIN_LAG_CHANGE`](Self::MIN_LAG_CHANGE) records; stable otherwise. The fit looks at every
    /// sample, so one burst between two quiet samples does not read as a trend, and the floors keep
    /// ordinary jitter (100, 90, 110, 100) and tiny lags from flapping the check.
    pub fn from_samples(samples: &[u64]) -> Option<Self> {
        if samples.len() < Self::MIN_SAMPLES {
            return None;
        }
        let n = samples.len() as f64;
        let mean_x = (n - 1.0) / 2.0;
        let mean_y = samples.iter().map(|&y| y as f64).sum::<f64>() / n;
        let (mut num, mut den) = (0.0, 0.0);
        for (x, &y) in samples.iter().enumerate() {
            let dx = x as f64 - mean_x;
            num += dx * (y as f64 - mean_y);
            den += dx * dx;
        }
        let change = num / den * (n - 1.0);
        let tolerance = (mean_y * 0.1).max(Self::MIN_LAG_CHANGE);
        Some(if change > tolerance {
            Self::Growing
        } else if change < -tolerance {
            Self::Shrinking
        } else {
            Self::Stable
        })
    }
}

/// Thresholds for [`evaluate`](Self::evaluate). A validated value object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    fetch_stall_threshold: Duration,
}

impl Default for HealthPolicy {
    /// A partition is stalled after 60 s without a successful fetch response. Fetch requests wait
    /// at most `fetch.max.wait.ms` (500 ms by default) for data, so a minute without any response
    /// is far outside normal operation, yet short enough for an alert to mean something.
    fn default() -> Self {
        Self {
            fetch_stall_threshold: Duration::from_secs(60),
        }
    }
}

/// How many stalled partitions a `fetch` detail names before summarising.
const MAX_LISTED_PARTITIONS: usize = 10;

impl HealthPolicy {
    /// A policy calling a partition stalled after `fetch_stall_threshold` without a successful
    /// fetch response. Rejects zero.
    pub fn new(fetch_stall_threshold: Duration) -> Result<Self, ConfigError> {
        if fetch_stall_threshold.is_zero() {
            return Err(ConfigError::new(
                "health.fetch_stall_threshold",
                "must be greater than zero",
            ));
        }
        Ok(Self {
            fetch_stall_threshold,
        })
    }

    /// Time without a successful fetch response after which a partition counts as stalled.
    pub fn fetch_stall_threshold(&self) -> Duration {
        self.fetch_stall_threshold
    }

    /// The report for `inputs`, stamped `checked_at`.
    pub fn evaluate(&self, inputs: &HealthInputs, checked_at: DateTime<Utc>) -> HealthReport {
        let checks = vec![
            coordinator_check(inputs.coordinator_reachable, inputs.fixed_assignment),
            if inputs.fixed_assignment {
                Check::new(
                    "heartbeat",
                    HealthStatus::Healthy,
                    "fixed assignment: no group membership to keep alive",
                )
            } else {
                heartbeat_check(inputs.since_last_heartbeat, inputs.session_timeout)
            },
            self.fetch_check(&inputs.partitions),
            breaker_check(inputs.breaker),
            lag_check(&inputs.lag_samples),
            records_check(&inputs.skipped_batches),
        ];
        HealthReport::from_checks(checks, checked_at)
    }

    fn fetch_check(&self, partitions: &[PartitionProgress]) -> Check {
        use HealthStatus::*;
        let name = "fetch";
        if partitions.is_empty() {
            return Check::new(name, Healthy, "no partitions assigned");
        }
        let fetching: Vec<&PartitionProgress> = partitions.iter().filter(|p| !p.paused).collect();
        let paused = partitions.len() - fetching.len();
        if fetching.is_empty() {
            return Check::new(
                name,
                Healthy,
                format!("all {paused} assigned partitions paused"),
            );
        }
        let threshold = self.fetch_stall_threshold;
        let mut stalled: Vec<&PartitionProgress> = fetching
            .iter()
            .copied()
            .filter(|p| p.since_last_fetch > threshold)
            .collect();
        let paused_note = if paused > 0 {
            format!(" ({paused} paused)")
        } else {
            String::new()
        };
        if stalled.is_empty() {
            return Check::new(
                name,
                Healthy,
                format!("{} partitions fetching{paused_note}", fetching.len()),
            );
        }
        stalled.sort_by_key(|p| std::cmp::Reverse(p.since_last_fetch));
        let mut list = stalled
            .iter()
            .take(MAX_LISTED_PARTITIONS)
            .map(|p| {
                format!(
                    "{}-{} ({})",
                    p.topic,
                    p.partition,
                    human(p.since_last_fetch)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        if stalled.len() > MAX_LISTED_PARTITIONS {
            let _ = write!(list, " and {} more", stalled.len() - MAX_LISTED_PARTITIONS);
        }
        if stalled.len() == fetching.len() {
            Check::new(
                name,
                Unhealthy,
                format!(
                    "no fetch progress on any of the {} fetching partitions for over {}{paused_note}: {list}",
                    fetching.len(),
                    human(threshold)
                ),
            )
        } else {
            Check::new(
                name,
                Degraded,
                format!(
                    "{} of {} fetching partitions without fetch progress for over {}{paused_note}: {list}",
                    stalled.len(),
                    fetching.len(),
                    human(threshold)
                ),
            )
        }
    }
}

fn coordinator_check(reachable: bool, fixed_assignment: bool) -> Check {
    match (reachable, fixed_assignment) {
        (true, _) => Check::new(
            "coordinator",
            HealthStatus::Healthy,
            "group coordinator reachable",
        ),
        (false, false) => Check::new(
            "coordinator",
            HealthStatus::Unhealthy,
            "group coordinator unreachable: cannot heartbeat or commit offsets",
        ),
        (false, true) => Check::new(
            "coordinator",
            HealthStatus::Unhealthy,
            "group coordinator did not answer the last offset request: cannot commit offsets",
        ),
    }
}

/// Degraded past half the session timeout: the Java default heartbeat interval is a third of it
/// (3 s of 10 s, 3 s of 45 s is even less), so by then at least one heartbeat has been missed.
/// Unhealthy past the whole timeout: the broker has most likely removed the member.
fn heartbeat_check(since: Option<Duration>, session_timeout: Duration) -> Check {
    use HealthStatus::*;
    let name = "heartbeat";
    let Some(since) = since else {
        return Check::new(
            name,
            Degraded,
            "no successful heartbeat yet (joining the group)",
        );
    };
    let session = human(session_timeout);
    if since > session_timeout {
        Check::new(
            name,
            Unhealthy,
            format!(
                "last successful heartbeat {} ago, beyond the {session} session timeout: \
                 the broker has likely removed this member from the group",
                human(since)
            ),
        )
    } else if since > session_timeout / 2 {
        Check::new(
            name,
            Degraded,
            format!(
                "last successful heartbeat {} ago, over half the {session} session timeout",
                human(since)
            ),
        )
    } else {
        Check::new(
            name,
            Healthy,
            format!(
                "last successful heartbeat {} ago (session timeout {session})",
                human(since)
            ),
        )
    }
}

fn breaker_check(state: Option<CircuitState>) -> Check {
    use HealthStatus::*;
    let name = "circuit_breaker";
    match state {
        None => Check::new(name, Healthy, "disabled"),
        Some(CircuitState::Closed) => Check::new(name, Healthy, "closed"),
        Some(CircuitState::HalfOpen) => Check::new(
            name,
            Degraded,
            "half-open: one probe record is testing the downstream",
        ),
        Some(CircuitState::Open) => Check::new(
            name,
            Degraded,
            "open: record processing failed repeatedly; fetching paused until the reset timeout",
        ),
    }
}

fn lag_check(samples: &[u64]) -> Check {
    use HealthStatus::*;
    let name = "lag";
    let Some(trend) = LagTrend::from_samples(samples) else {
        return Check::new(
            name,
            Healthy,
            format!(
                "not enough samples for a trend yet ({} of {})",
                samples.len(),
                LagTrend::MIN_SAMPLES
            ),
        );
    };
    let (first, last, n) = (samples[0], samples[samples.len() - 1], samples.len());
    match trend {
        LagTrend::Growing => Check::new(
            name,
            Degraded,
            format!("lag growing: {first} -> {last} records over the last {n} samples"),
        ),
        LagTrend::Shrinking => Check::new(
            name,
            Healthy,
            format!("lag shrinking: {first} -> {last} records over the last {n} samples"),
        ),
        LagTrend::Stable => Check::new(
            name,
            Healthy,
            format!("lag stable at {last} records over the last {n} samples"),
        ),
    }
}

/// Degraded while a batch skipped as undecodable is recent: data was passed over, and someone
/// should look at the logged offset.
fn records_check(skipped: &[SkippedBatch]) -> Check {
    let name = "records";
    let recent: Vec<&SkippedBatch> = skipped
        .iter()
        .filter(|s| s.since < SKIPPED_BATCH_WINDOW)
        .collect();
    let Some(latest) = recent.iter().min_by_key(|s| s.since) else {
        return Check::new(name, HealthStatus::Healthy, "every fetched batch decoded");
    };
    Check::new(
        name,
        HealthStatus::Degraded,
        format!(
            "{} undecodable batch(es) skipped in the last {}; latest: {}-{} offsets {}..{} {} ago: {}",
            recent.len(),
            human(SKIPPED_BATCH_WINDOW),
            latest.topic,
            latest.partition,
            latest.offset,
            latest.skipped_to,
            human(latest.since),
            latest.reason
        ),
    )
}

/// `850 ms`, `45 s`, `1.5 s`, `2 min 5 s`.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        if ms.is_multiple_of(1000) {
            format!("{} s", ms / 1000)
        } else {
            format!("{:.1} s", d.as_secs_f64())
        }
    } else {
        let secs = d.as_secs();
        match secs % 60 {
            0 => format!("{} min", secs / 60),
            s => format!("{} min {s} s", secs / 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthStatus::*;
    use chrono::TimeZone;

    fn secs(v: u64) -> Duration {
        Duration::from_secs(v)
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    fn part(partition: i32, since_secs: u64, paused: bool) -> PartitionProgress {
        PartitionProgress {
            topic: "orders".into(),
            partition,
            since_last_fetch: secs(since_secs),
            paused,
        }
    }

    fn healthy_inputs() -> HealthInputs {
        HealthInputs {
            coordinator_reachable: true,
            fixed_assignment: false,
            since_last_heartbeat: Some(secs(3)),
            session_timeout: secs(45),
            partitions: vec![part(0, 1, false), part(1, 2, false)],
            breaker: Some(CircuitState::Closed),
            lag_samples: vec![100, 90, 110, 100],
            skipped_batches: Vec::new(),
        }
    }

    #[test]
    fn a_recently_skipped_batch_degrades_the_records_check_until_it_ages_out() {
        let policy = HealthPolicy::default();
        assert_eq!(
            check(&policy.evaluate(&healthy_inputs(), at()), "records").status,
            Healthy
        );
        let skipped = |since| SkippedBatch {
            topic: "orders".into(),
            partition: 3,
            offset: 120,
            skipped_to: 130,
            reason: "CRC mismatch in the batch at offset 120".into(),
            since,
        };
        let mut inputs = healthy_inputs();
        inputs.skipped_batches = vec![skipped(secs(600)), skipped(secs(5))];
        let report = policy.evaluate(&inputs, at());
        let records = check(&report, "records");
        assert_eq!(records.status, Degraded);
        assert_eq!(report.status, Degraded);
        assert!(
            records.detail.starts_with("2 undecodable"),
            "{}",
            records.detail
        );
        assert!(
            records
                .detail
                .contains("orders-3 offsets 120..130 5 s ago: CRC mismatch"),
            "{}",
            records.detail
        );
        inputs.skipped_batches = vec![skipped(SKIPPED_BATCH_WINDOW)];
        assert_eq!(
            check(&policy.evaluate(&inputs, at()), "records").status,
            Healthy
        );
    }

    fn check<'a>(report: &'a HealthReport, name: &str) -> &'a Check {
        report.checks.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn all_good_is_healthy_and_ready() {
        let report = HealthPolicy::default().evaluate(&healthy_inputs(), at());
        assert_eq!(report.status, Healthy);
        assert!(report.is_ready());
        assert!(report.problems().is_empty());
        let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "coordinator",
                "heartbeat",
                "fetch",
                "circuit_breaker",
                "lag",
                "records"
            ]
        );
        assert_eq!(report.checked_at, at());
    }

    #[test]
    fn evaluation_table() {
        type Edit = fn(&mut HealthInputs);
        let cases: Vec<(&str, Edit, &str, HealthStatus, &str)> = vec![
            (
                "coordinator down",
                |i| i.coordinator_reachable = false,
                "coordinator",
                Unhealthy,
                "group coordinator unreachable: cannot heartbeat or commit offsets",
            ),
            (
                "fixed assignment: no heartbeat is expected",
                |i| {
                    i.fixed_assignment = true;
                    i.since_last_heartbeat = None;
                },
                "heartbeat",
                Healthy,
                "fixed assignment: no group membership to keep alive",
            ),
            (
                "fixed assignment, offset request unanswered",
                |i| {
                    i.fixed_assignment = true;
                    i.coordinator_reachable = false;
                },
                "coordinator",
                Unhealthy,
                "group coordinator did not answer the last offset request: cannot commit offsets",
            ),
            (
                "still joining",
                |i| i.since_last_heartbeat = None,
                "heartbeat",
                Degraded,
                "no successful heartbeat yet (joining the group)",
            ),
            (
                "heartbeat at exactly half the session",
                |i| i.since_last_heartbeat = Some(Duration::from_millis(22_500)),
                "heartbeat",
                Healthy,
                "last successful heartbeat 22.5 s ago (session timeout 45 s)",
            ),
            (
                "heartbeat late",
                |i| i.since_last_heartbeat = Some(secs(30)),
                "heartbeat",
                Degraded,
                "last successful heartbeat 30 s ago, over half the 45 s session timeout",
            ),
            (
                "session expired",
                |i| i.since_last_heartbeat = Some(secs(50)),
                "heartbeat",
                Unhealthy,
                "last successful heartbeat 50 s ago, beyond the 45 s session timeout: \
                 the broker has likely removed this member from the group",
            ),
            (
                "no partitions",
                |i| i.partitions.clear(),
                "fetch",
                Healthy,
                "no partitions assigned",
            ),
            (
                "one of two stalled",
                |i| i.partitions[1].since_last_fetch = secs(95),
                "fetch",
                Degraded,
                "1 of 2 fetching partitions without fetch progress for over 1 min: orders-1 (1 min 35 s)",
            ),
            (
                "exactly at the stall threshold",
                |i| i.partitions[1].since_last_fetch = secs(60),
                "fetch",
                Healthy,
                "2 partitions fetching",
            ),
            (
                "all fetching partitions stalled, one paused",
                |i| {
                    i.partitions = vec![part(0, 61, false), part(1, 300, true), part(2, 120, false)]
                },
                "fetch",
                Unhealthy,
                "no fetch progress on any of the 2 fetching partitions for over 1 min (1 paused): \
                 orders-2 (2 min), orders-0 (1 min 1 s)",
            ),
            (
                "paused partitions are not stalls",
                |i| i.partitions = vec![part(0, 600, true), part(1, 600, true)],
                "fetch",
                Healthy,
                "all 2 assigned partitions paused",
            ),
            (
                "breaker disabled",
                |i| i.breaker = None,
                "circuit_breaker",
                Healthy,
                "disabled",
            ),
            (
                "breaker open",
                |i| i.breaker = Some(CircuitState::Open),
                "circuit_breaker",
                Degraded,
                "open: record processing failed repeatedly; fetching paused until the reset timeout",
            ),
            (
                "breaker half-open",
                |i| i.breaker = Some(CircuitState::HalfOpen),
                "circuit_breaker",
                Degraded,
                "half-open: one probe record is testing the downstream",
            ),
            (
                "lag growing",
                |i| i.lag_samples = vec![100, 300, 500, 900],
                "lag",
                Degraded,
                "lag growing: 100 -> 900 records over the last 4 samples",
            ),
            (
                "lag shrinking",
                |i| i.lag_samples = vec![900, 500, 300, 100],
                "lag",
                Healthy,
                "lag shrinking: 900 -> 100 records over the last 4 samples",
            ),
            (
                "too few lag samples",
                |i| i.lag_samples = vec![100, 10_000],
                "lag",
                Healthy,
                "not enough samples for a trend yet (2 of 3)",
            ),
        ];
        for (case, edit, name, status, detail) in cases {
            let mut inputs = healthy_inputs();
            edit(&mut inputs);
            let report = HealthPolicy::default().evaluate(&inputs, at());
            let c = check(&report, name);
            assert_eq!((c.status, c.detail.as_str()), (status, detail), "{case}");
            // Every other check is healthy, so this one sets the overall status.
            assert_eq!(report.status, status, "{case}");
            assert_eq!(report.is_ready(), status != Unhealthy, "{case}");
        }
    }

    #[test]
    fn worst_check_wins() {
        let mut inputs = healthy_inputs();
        inputs.breaker = Some(CircuitState::Open);
        inputs.lag_samples = vec![1, 100, 1000];
        let degraded = HealthPolicy::default().evaluate(&inputs, at());
        assert_eq!(degraded.status, Degraded);
        inputs.coordinator_reachable = false;
        let unhealthy = HealthPolicy::default().evaluate(&inputs, at());
        assert_eq!(unhealthy.status, Unhealthy);
        let problems: Vec<&str> = unhealthy
            .problems()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(problems, ["coordinator", "circuit_breaker", "lag"]);
        let with_app = degraded.with_check(Check::new("postgres", Unhealthy, "pool exhausted"));
        assert_eq!(with_app.status, Unhealthy);
        assert_eq!(HealthReport::from_checks(vec![], at()).status, Healthy);
    }

    #[test]
    fn many_stalled_partitions_are_summarised() {
        let mut inputs = healthy_inputs();
        inputs.partitions = (0..15).map(|p| part(p, 100 + p as u64, false)).collect();
        inputs.partitions.push(part(15, 1, false));
        let report = HealthPolicy::default().evaluate(&inputs, at());
        let c = check(&report, "fetch");
        assert_eq!(c.status, Degraded);
        assert!(
            c.detail.starts_with("15 of 16 fetching partitions"),
            "{}",
            c.detail
        );
        assert!(c.detail.contains("orders-14 (1 min 54 s)"), "{}", c.detail);
        assert!(c.detail.ends_with(" and 5 more"), "{}", c.detail);
        assert!(!c.detail.contains("orders-4 "), "{}", c.detail);
    }

    #[test]
    fn stall_threshold_is_configurable_and_validated() {
        let policy = HealthPolicy::new(secs(5)).unwrap();
        let mut inputs = healthy_inputs();
        inputs.partitions[0].since_last_fetch = secs(6);
        assert_eq!(
            check(&policy.evaluate(&inputs, at()), "fetch").status,
            Degraded
        );
        assert_eq!(
            HealthPolicy::new(Duration::ZERO).unwrap_err().setting,
            "health.fetch_stall_threshold"
        );
        assert_eq!(HealthPolicy::default().fetch_stall_threshold(), secs(60));
    }

    #[test]
    fn lag_trend_table() {
        let cases: [(&[u64], Option<LagTrend>); 12] = [
            (&[], None),
            (&[5, 500], None),
            (&[0, 0, 0], Some(LagTrend::Stable)),
            (&[100, 200, 300], Some(LagTrend::Growing)),
            (&[300, 200, 100], Some(LagTrend::Shrinking)),
            // Jitter around a steady value is not a trend.
            (&[100, 90, 110, 100], Some(LagTrend::Stable)),
            // Nor is doubling while the lag is tiny.
            (&[10, 20, 40, 80], Some(LagTrend::Stable)),
            // Nor a slow creep on a large backlog (under 10 % across the window).
            (
                &[100_000, 101_000, 102_000, 103_000],
                Some(LagTrend::Stable),
            ),
            (
                &[100_000, 105_000, 110_000, 115_000],
                Some(LagTrend::Growing),
            ),
            // A burst in the middle does not make a trend.
            (&[0, 500, 0, 500, 0], Some(LagTrend::Stable)),
            (&[0, 0, 0, 0, 1000], Some(LagTrend::Growing)),
            (
                &[u64::MAX / 2, u64::MAX / 2, u64::MAX / 2],
                Some(LagTrend::Stable),
            ),
        ];
        for (samples, expected) in cases {
            assert_eq!(LagTrend::from_samples(samples), expected, "{samples:?}");
        }
    }

    #[test]
    fn json_has_every_field() {
        let report = HealthReport::from_checks(
            vec![
                Check::new("coordinator", Healthy, "group coordinator reachable"),
                Check::new("lag", Degraded, "lag growing"),
            ],
            at(),
        );
        assert_eq!(
            report.to_json(),
            r#"{"status":"degraded","ready":true,"checked_at":"2024-05-01T12:00:00.000Z","checks":[{"name":"coordinator","status":"healthy","detail":"group coordinator reachable"},{"name":"lag","status":"degraded","detail":"lag growing"}]}"#
        );
        let empty = HealthReport::from_checks(vec![], at());
        assert_eq!(
            empty.to_json(),
            r#"{"status":"healthy","ready":true,"checked_at":"2024-05-01T12:00:00.000Z","checks":[]}"#
        );
    }

    #[test]
    fn json_escapes_strings() {
        let report = HealthReport::from_checks(
            vec![Check::new(
                "app \"db\"",
                Unhealthy,
                "line1\nline2\t\\ \u{1} é",
            )],
            at(),
        );
        let json = report.to_json();
        assert!(json.contains(r#""name":"app \"db\"""#), "{json}");
        assert!(
            json.contains(r#""detail":"line1\nline2\t\\ \u0001 é""#),
            "{json}"
        );
        assert!(json.contains(r#""ready":false"#), "{json}");
    }

    #[test]
    fn human_durations() {
        let cases = [
            (Duration::from_millis(850), "850 ms"),
            (secs(45), "45 s"),
            (Duration::from_millis(1500), "1.5 s"),
            (secs(60), "1 min"),
            (secs(125), "2 min 5 s"),
        ];
        for (d, expected) in cases {
            assert_eq!(human(d), expected);
        }
    }
}
