//! Exponential backoff with jitter.
//!
//! The n-th delay (n from 0) is `min(max, initial * multiplier^n)`, then scaled by a random factor in
//! `[1 - jitter, 1 + jitter]` and clamped to `max` again. Jitter spreads the reconnects of many clients
//! that lost the same broker at the same moment, so they do not arrive together when it comes back.

use std::fmt;
use std::time::Duration;

use crate::ConfigError;

/// How delays grow between attempts. A validated value object: build it once, then call
/// [`start`](Self::start) for each operation that needs retrying.
///
/// ```
/// use std::time::Duration;
/// use kafkit_resilience::BackoffPolicy;
///
/// let policy = BackoffPolicy::new(Duration::from_millis(100), Duration::from_secs(64), 2.0, 0.0).unwrap();
/// let mut backoff = policy.start();
/// assert_eq!(backoff.next_delay(), Duration::from_millis(100));
/// assert_eq!(backoff.next_delay(), Duration::from_millis(200));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: f64,
}

impl Default for BackoffPolicy {
    /// 100 ms doubling up to 64 s with ±20 % jitter: the reconnect settings Kafka users run with.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(64),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl BackoffPolicy {
    /// A policy starting at `initial`, multiplied by `multiplier` after each attempt, never above `max`,
    /// with each delay scaled by a random factor in `[1 - jitter, 1 + jitter]`.
    ///
    /// Rejects `initial` of zero, `max < initial`, `multiplier < 1` and `jitter` outside `0..=1`.
    pub fn new(
        initial: Duration,
        max: Duration,
        multiplier: f64,
        jitter: f64,
    ) -> Result<Self, ConfigError> {
        if initial.is_zero() {
            return Err(ConfigError::new(
                "backoff.initial",
                "must be greater than zero",
            ));
        }
        if max < initial {
            return Err(ConfigError::new(
                "backoff.max",
                format!("must not be less than backoff.initial ({initial:?}), got {max:?}"),
            ));
        }
        if !(multiplier.is_finite() && multiplier >= 1.0) {
            return Err(ConfigError::new(
                "backoff.multiplier",
                format!("must be a finite number >= 1, got {multiplier}"),
            ));
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(ConfigError::new(
                "backoff.jitter",
                format!("must be within 0..=1, got {jitter}"),
            ));
        }
        Ok(Self {
            initial,
            max,
            multiplier,
            jitter,
        })
    }

    /// The first delay before jitter.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The largest delay ever returned.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The growth factor between attempts.
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The jitter fraction, `0..=1`.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// Fresh attempt state drawing jitter from the thread-local RNG.
    pub fn start(&self) -> Backoff {
        self.start_with(ThreadRng)
    }

    /// Fresh attempt state drawing jitter from `source` (tests pass a fixed sequence).
    pub fn start_with(&self, source: impl JitterSource + 'static) -> Backoff {
        Backoff {
            policy: *self,
            attempt: 0,
            source: Box::new(source),
        }
    }

    /// The delay after failed attempt `attempt` (0-based) when the jitter source yields `unit`
    /// (in `[0, 1)`; clamped into `0..=1`). A pure function of its arguments: [`Backoff`] and
    /// [`RetryPolicy`](crate::RetryPolicy) both compute their delays here.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base_delay(attempt);
        if self.jitter == 0.0 {
            return base;
        }
        let unit = unit.clamp(0.0, 1.0);
        let scale = 1.0 - self.jitter + 2.0 * self.jitter * unit;
        // `try_`: with a `max` near `Duration::MAX` the scaled value may not fit a `Duration`.
        Duration::try_from_secs_f64(base.as_secs_f64() * scale)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The delay before jitter for attempt `attempt` (0-based), capped at `max`.
    fn base_delay(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.powi(attempt.min(i32::MAX as u32) as i32);
        let secs = self.initial.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }
}

/// Where jitter comes from: values uniformly distributed in `[0, 1)`.
pub trait JitterSource: Send {
    /// The next value in `[0, 1)`.
    fn unit(&mut self) -> f64;
}

/// The default source, `rand`'s thread-local generator.
struct ThreadRng;

impl JitterSource for ThreadRng {
    fn unit(&mut self) -> f64 {
        rand::random::<f64>()
    }
}

impl<F: FnMut() -> f64 + Send> JitterSource for F {
    fn unit(&mut self) -> f64 {
        self()
    }
}

/// The state of one retried operation: how many attempts have failed so far.
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
    source: Box<dyn JitterSource>,
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backoff")
            .field("policy", &self.policy)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl Backoff {
    /// The delay to wait before the next attempt; each call counts one failed attempt.
    pub fn next_delay(&mut self) -> Duration {
        let attempt = self.attempt;
        self.attempt = self.attempt.saturating_add(1);
        // No draw without jitter, so a fixed test sequence is not consumed by jitter-free policies.
        let unit = if self.policy.jitter == 0.0 {
            0.5
        } else {
            self.source.unit()
        };
        self.policy.delay(attempt, unit)
    }

    /// Sleeps for [`next_delay`](Self::next_delay) on tokio's clock.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Failed attempts counted so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over from the initial delay, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn sequence_without_jitter_doubles_then_caps() {
        let policy = BackoffPolicy::new(ms(100), ms(1000), 2.0, 0.0).unwrap();
        let mut b = policy.start();
        let seq: Vec<_> = (0..7).map(|_| b.next_delay()).collect();
        assert_eq!(
            seq,
            vec![
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1000),
                ms(1000),
                ms(1000)
            ]
        );
        assert_eq!(b.attempts(), 7);
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
    }

    #[test]
    fn jitter_extremes_scale_by_the_fraction() {
        let policy = BackoffPolicy::new(ms(1000), ms(60_000), 2.0, 0.25).unwrap();
        assert_eq!(policy.start_with(|| 0.0).next_delay(), ms(750));
        assert_eq!(policy.start_with(|| 0.5).next_delay(), ms(1000));
        // Upper jitter is still clamped by `max`.
        let capped = BackoffPolicy::new(ms(1000), ms(1100), 2.0, 0.25).unwrap();
        assert_eq!(capped.start_with(|| 0.999_999).next_delay(), ms(1100));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let policy = BackoffPolicy::new(ms(1), Duration::from_secs(64), 10.0, 0.0).unwrap();
        let mut b = policy.start();
        for _ in 0..10_000 {
            assert!(b.next_delay() <= Duration::from_secs(64));
        }
        assert_eq!(b.next_delay(), Duration::from_secs(64));
    }

    #[test]
    fn invalid_settings_name_the_setting() {
        let cases = [
            (
                BackoffPolicy::new(ms(0), ms(10), 2.0, 0.0),
                "backoff.initial",
            ),
            (BackoffPolicy::new(ms(10), ms(5), 2.0, 0.0), "backoff.max"),
            (
                BackoffPolicy::new(ms(10), ms(50), 0.5, 0.0),
                "backoff.multiplier",
            ),
            (
                BackoffPolicy::new(ms(10), ms(50), f64::NAN, 0.0),
                "backoff.multiplier",
            ),
            (
                BackoffPolicy::new(ms(10), ms(50), 2.0, 1.5),
                "backoff.jitter",
            ),
        ];
        for (result, setting) in cases {
            let err = result.unwrap_err();
            assert_eq!(err.setting, setting);
            assert!(err.to_string().contains(setting));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn wait_sleeps_on_tokio_clock() {
        let policy = BackoffPolicy::new(ms(100), ms(1000), 2.0, 0.0).unwrap();
        let mut b = policy.start();
        let start = tokio::time::Instant::now();
        b.wait().await;
        b.wait().await;
        assert_eq!(start.elapsed(), ms(300));
    }

    proptest! {
        #[test]
        fn delays_stay_within_jitter_bounds(
            initial_ms in 1u64..5_000,
            extra_ms in 0u64..120_000,
            multiplier in 1.0f64..10.0,
            jitter in 0.0f64..=1.0,
            units in proptest::collection::vec(0.0f64..1.0, 1..40),
        ) {
            let policy = BackoffPolicy::new(ms(initial_ms), ms(initial_ms + extra_ms), multiplier, jitter).unwrap();
            let mut iter = units.clone().into_iter().cycle();
            let mut b = policy.start_with(move || iter.next().unwrap());
            for attempt in 0..units.len() as u32 {
                let base = policy.base_delay(attempt).as_secs_f64();
                let d = b.next_delay().as_secs_f64();
                prop_assert!(d <= policy.max().as_secs_f64() + 1e-9);
                prop_assert!(d >= base * (1.0 - jitter) - 1e-9);
                prop_assert!(d <= base * (1.0 + jitter) + 1e-9);
            }
        }
    }
}
