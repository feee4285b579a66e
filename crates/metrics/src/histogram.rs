//! A log-linear (HDR-style) histogram of durations, behind p50/p95/p99.
//!
//! Samples are counted in whole `resolution` units (1 µs by default). Units below `2^bits` each have their
//! own bucket; above that, every power-of-two range `[2^k, 2^(k+1))` is split into `2^bits` equal buckets,
//! so a bucket is never wider than `1/2^bits` of its lower bound.
//!
//! A quantile `q` is the nearest-rank sample (the `ceil(q * n)`-th smallest), reported as the middle of the
//! bucket that holds it. **Error bound:** if that sample is `x`, the reported value `r` satisfies
//! `|r - x| <= x / 2^(bits+1) + resolution` (1.56 % + 1 µs at the defaults). Samples above the maximum are
//! counted as the maximum, so quantiles that fall among them read as the maximum.
//!
//! The bucket vector grows only as far as the largest sample seen: a topic whose timings stay under 1 ms
//! holds about 200 buckets (1.6 KB), not the ~700 needed to reach the 60 s maximum.

/// Bucket geometry shared by every histogram of one [`Metrics`](crate::Metrics) instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HistogramLayout {
    bits: u32,
    resolution_ns: u64,
    max_units: u64,
}

impl HistogramLayout {
    /// `bits` in `1..=10`, `resolution` in `1 ns..=max`, `max` at most 24 h: checked by the config.
    pub(crate) fn new(bits: u32, resolution_ns: u64, max_ns: u64) -> Self {
        Self {
            bits,
            resolution_ns,
            max_units: max_ns / resolution_ns,
        }
    }

    /// The bucket holding `units`.
    fn index(&self, units: u64) -> usize {
        let sub_buckets = 1u64 << self.bits;
        if units < sub_buckets {
            return units as usize;
        }
        let shift = units.ilog2() - self.bits;
        ((u64::from(shift) + 1) * sub_buckets + ((units >> shift) - sub_buckets)) as usize
    }

    /// The lowest and highest units (inclusive) bucket `index` holds.
    fn bounds(&self, index: usize) -> (u64, u64) {
        let sub_buckets = 1u64 << self.bits;
        let index = index as u64;
        if index < sub_buckets {
            return (index, index);
        }
        let shift = index / sub_buckets - 1;
        let low = (sub_buckets + index % sub_buckets) << shift;
        (low, low + (1 << shift) - 1)
    }

    /// The value reported for samples in bucket `index`, in nanoseconds.
    fn representative_ns(&self, index: usize) -> u64 {
        let (low, high) = self.bounds(index);
        (low + (high - low) / 2).min(self.max_units) * self.resolution_ns
    }
}

/// Sample counts per bucket. Not synchronised: each lives inside a per-topic timing mutex.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    layout: HistogramLayout,
    counts: Vec<u64>,
    total: u64,
}

impl Histogram {
    /// An empty histogram; allocates nothing until the first sample.
    pub(crate) fn new(layout: HistogramLayout) -> Self {
        Self {
            layout,
            counts: Vec::new(),
            total: 0,
        }
    }

    /// Counts one sample of `ns` nanoseconds.
    pub(crate) fn record(&mut self, ns: u64) {
        let units = (ns / self.layout.resolution_ns).min(self.layout.max_units);
        let index = self.layout.index(units);
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
        self.total += 1;
    }

    /// The nearest-rank quantiles `qs` (ascending, each in `(0, 1]`) in nanoseconds, found in one pass over
    /// the buckets; `None` before the first sample.
    pub(crate) fn quantiles<const N: usize>(&self, qs: [f64; N]) -> Option<[u64; N]> {
        if self.total == 0 {
            return None;
        }
        let ranks = qs.map(|q| ((q * self.total as f64).ceil() as u64).clamp(1, self.total));
        let mut out = [0; N];
        let mut next = 0;
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            while next < N && ranks[next] <= seen {
                out[next] = self.layout.representative_ns(index);
                next += 1;
            }
            if next == N {
                break;
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const US: u64 = 1_000;

    fn layout(bits: u32) -> HistogramLayout {
        HistogramLayout::new(bits, US, 60_000_000 * US)
    }

    /// The exact nearest-rank quantile of `samples`.
    fn exact(samples: &[u64], q: f64) -> u64 {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    #[test]
    fn quantiles_of_known_series_are_within_the_bound() {
        let series: [(&str, Vec<u64>); 6] = [
            ("1..=10_000 µs", (1..=10_000).map(|v| v * US).collect()),
            ("below 32 µs is exact", (0..32).map(|v| v * US).collect()),
            ("constant 1234 µs", vec![1234 * US; 500]),
            (
                "bimodal 1 ms / 250 ms",
                (0..1000)
                    .map(|i| if i % 20 == 0 { 250_000 } else { 1_000 } * US)
                    .collect(),
            ),
            (
                "geometric",
                (0..40).map(|i| (1.4f64.powi(i) * 1000.0) as u64).collect(),
            ),
            ("single sample", vec![42 * US]),
        ];
        for bits in [3, 5, 7] {
            let layout = layout(bits);
            for (name, samples) in &series {
                let mut h = Histogram::new(layout);
                samples.iter().for_each(|&s| h.record(s));
                let got = h.quantiles([0.5, 0.95, 0.99]).unwrap();
                for (q, r) in [0.5, 0.95, 0.99].into_iter().zip(got) {
                    let x = exact(samples, q);
                    let bound = x as f64 / f64::from(1u32 << (bits + 1)) + US as f64;
                    assert!(
                        (r as f64 - x as f64).abs() <= bound,
                        "{name}, bits {bits}, q {q}: got {r}, exact {x}, bound {bound}"
                    );
                }
            }
        }
    }

    #[test]
    fn exact_region_and_known_quantiles() {
        let cases: [(&[u64], [u64; 3]); 3] = [
            // At 5 bits, units below 64 have their own bucket; 100 sits in the 2-unit bucket [100, 101].
            (&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [5, 10, 10]),
            (&[30, 10, 20], [20, 30, 30]),
            (&[100; 3], [100, 100, 100]),
        ];
        for (samples, expected) in cases {
            let mut h = Histogram::new(layout(5));
            samples.iter().for_each(|&s| h.record(s * US));
            assert_eq!(
                h.quantiles([0.5, 0.95, 0.99]),
                Some(expected.map(|v| v * US)),
                "{samples:?}"
            );
        }
        assert_eq!(Histogram::new(layout(5)).quantiles([0.5]), None);
    }

    #[test]
    fn samples_above_the_maximum_read_as_the_maximum() {
        let mut h = Histogram::new(HistogramLayout::new(5, US, 10_000 * US));
        h.record(3_600_000_000_000);
        assert_eq!(h.quantiles([0.5]), Some([10_000 * US]));
    }

    #[test]
    fn buckets_grow_only_to_the_largest_sample() {
        let mut h = Histogram::new(layout(5));
        h.record(999 * US);
        // 999 µs: msb 9, shift 4 -> bucket (4 + 1) * 32 + (999 >> 4) - 32 = 190.
        assert_eq!(h.counts.len(), 191);
    }

    proptest! {
        #[test]
        fn every_value_lies_in_a_bucket_no_wider_than_the_bound(units in 0u64..(1 << 50), bits in 1u32..=10) {
            let layout = HistogramLayout::new(bits, 1, u64::MAX);
            let (low, high) = layout.bounds(layout.index(units));
            prop_assert!(low <= units && units <= high);
            prop_assert!((high - low + 1) as f64 <= (low as f64 / f64::from(1u32 << bits)).max(1.0));
        }
    }
}
