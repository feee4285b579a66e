//! One timing series (produce latency or processing time) of one topic: an exact moving average, a
//! histogram for quantiles, and lifetime count and sum for the Prometheus summary.

use std::time::Duration;

use crate::TimingSnapshot;
use crate::histogram::{Histogram, HistogramLayout};

/// What every timing of one [`Metrics`](crate::Metrics) instance is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimingConfig {
    /// `Some(window)` for a moving average, `None` for the lifetime average.
    pub(crate) window: Option<usize>,
    pub(crate) layout: HistogramLayout,
}

/// The exact mean of the last `capacity` samples: a ring buffer plus a running sum, so each update is O(1)
/// (subtract the sample leaving the window, add the one entering) and the mean never drifts, because the
/// sum is integer nanoseconds in a `u128` that cannot overflow.
#[derive(Debug, Clone)]
pub(crate) struct MovingWindow {
    /// Grows to `capacity` as samples arrive, then is overwritten in place at `next`.
    samples: Vec<u64>,
    /// Where the next sample goes once the buffer is full: the oldest sample.
    next: usize,
    capacity: usize,
    sum: u128,
}

impl MovingWindow {
    /// An empty window of `capacity` (>= 1) samples; allocates as samples arrive.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            samples: Vec::new(),
            next: 0,
            capacity,
            sum: 0,
        }
    }

    /// Adds a sample, dropping the oldest once `capacity` are held.
    pub(crate) fn push(&mut self, ns: u64) {
        if self.samples.len() < self.capacity {
            self.samples.push(ns);
        } else {
            self.sum -= u128::from(self.samples[self.next]);
            self.samples[self.next] = ns;
            self.next = (self.next + 1) % self.capacity;
        }
        self.sum += u128::from(ns);
    }

    /// The mean of the held samples in nanoseconds (truncated), `None` when empty.
    pub(crate) fn mean(&self) -> Option<u64> {
        let len = self.samples.len() as u128;
        (len > 0).then(|| (self.sum / len) as u64)
    }
}

/// Averages, quantiles and totals of one timing series. Not synchronised: each lives in a per-topic mutex.
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    window: Option<MovingWindow>,
    histogram: Histogram,
    count: u64,
    sum_ns: u128,
}

impl Timing {
    pub(crate) fn new(config: TimingConfig) -> Self {
        Self {
            window: config.window.map(MovingWindow::new),
            histogram: Histogram::new(config.layout),
            count: 0,
            sum_ns: 0,
        }
    }

    /// Adds one sample.
    pub(crate) fn record(&mut self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        if let Some(window) = &mut self.window {
            window.push(ns);
        }
        self.histogram.record(ns);
        self.count += 1;
        self.sum_ns += u128::from(ns);
    }

    /// The plain-data view: O(buckets) for the quantiles, done once per publish.
    pub(crate) fn snapshot(&self) -> TimingSnapshot {
        let average = match &self.window {
            Some(window) => window.mean(),
            None => (self.count > 0).then(|| (self.sum_ns / u128::from(self.count)) as u64),
        };
        let quantiles = self.histogram.quantiles([0.5, 0.95, 0.99]);
        TimingSnapshot {
            count: self.count,
            sum: nanos(self.sum_ns),
            average: average.map(Duration::from_nanos),
            p50: quantiles.map(|q| Duration::from_nanos(q[0])),
            p95: quantiles.map(|q| Duration::from_nanos(q[1])),
            p99: quantiles.map(|q| Duration::from_nanos(q[2])),
        }
    }
}

/// A `u128` nanosecond total as a `Duration`, saturating (at 584 years).
fn nanos(ns: u128) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(window: Option<usize>) -> TimingConfig {
        TimingConfig {
            window,
            layout: HistogramLayout::new(5, 1_000, 60_000_000_000),
        }
    }

    #[test]
    fn moving_average_over_known_series() {
        let cases: [(usize, &[u64], &[u64]); 5] = [
            (3, &[10, 20, 30, 40, 50], &[10, 15, 20, 30, 40]),
            (1, &[7, 9, 11], &[7, 9, 11]),
            (4, &[4, 4, 4, 4, 8, 8, 8, 8], &[4, 4, 4, 4, 5, 6, 7, 8]),
            (100, &[1, 2], &[1, 1]),
            (
                2,
                &[u64::MAX, u64::MAX, 2, 4],
                &[u64::MAX, u64::MAX, u64::MAX / 2 + 1, 3],
            ),
        ];
        for (capacity, samples, means) in cases {
            let mut window = MovingWindow::new(capacity);
            assert_eq!(window.mean(), None);
            let got: Vec<u64> = samples
                .iter()
                .map(|&s| {
                    window.push(s);
                    window.mean().unwrap()
                })
                .collect();
            assert_eq!(got, means, "window {capacity}, samples {samples:?}");
        }
    }

    #[test]
    fn long_runs_do_not_drift() {
        let mut window = MovingWindow::new(100);
        for i in 0..1_000_000u64 {
            window.push(i % 1000);
        }
        // The last 100 samples are 900..=999.
        assert_eq!(window.mean(), Some(949));
    }

    #[test]
    fn average_is_windowed_or_lifetime_as_configured() {
        // Microseconds below 2^6, so the histogram buckets are exact and p50/p99 can be compared with `==`.
        let us = Duration::from_micros;
        let cases = [(Some(2), us(25)), (None, us(20))];
        for (window, average) in cases {
            let mut timing = Timing::new(config(window));
            for v in [10, 20, 20, 30] {
                timing.record(us(v));
            }
            let s = timing.snapshot();
            assert_eq!(s.average, Some(average), "{window:?}");
            assert_eq!((s.count, s.sum), (4, us(80)));
            assert_eq!((s.p50, s.p99), (Some(us(20)), Some(us(30))));
        }
        let empty = Timing::new(config(Some(3))).snapshot();
        assert_eq!(empty, TimingSnapshot::default());
    }
}
