//! The per-record retry policy: how many attempts, how long between them, and which errors are
//! worth retrying at all.
//!
//! [`RetryPolicy::decide`] is a pure decision the consumer's loop applies after each failed attempt:
//!
//! ```text
//! attempt 1 fails ─▶ decide(1, &err) ─▶ RetryAfter(100 ms) ─▶ sleep, attempt 2 ─▶ ...
//! attempt n fails ─▶ decide(n, &err) ─▶ GiveUp { Exhausted } ─▶ dead-letter, then ack
//! any attempt     ─▶ decide(_, &err) ─▶ GiveUp { NotRetriable } (predicate said no)
//! ```
//!
//! # With the circuit breaker
//! A downstream outage must not exhaust records' attempts and fill the dead-letter topic. With the
//! defaults, the breaker opens after 5 consecutive failures, well before a record's 10th attempt;
//! while it is open the record waits without spending attempts, and the consumer should not count a
//! failed half-open probe against the record either (the breaker already knows the downstream is
//! down). Only failures while the breaker is closed move a record towards the dead-letter topic.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::{BackoffPolicy, ConfigError, JitterSource};

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try the record again after this delay.
    RetryAfter(Duration),
    /// Stop retrying; hand the record to the dead-letter policy.
    GiveUp {
        /// Why no further attempt is made.
        reason: GiveUpReason,
    },
}

/// Why a record is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUpReason {
    /// Every allowed attempt was made and failed.
    Exhausted {
        /// Attempts made, the first included.
        attempts: u32,
    },
    /// The retriable predicate rejected the error: retrying cannot help.
    NotRetriable,
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exhausted { attempts } => write!(f, "gave up after {attempts} failed attempts"),
            Self::NotRetriable => f.write_str("error is not retriable"),
        }
    }
}

/// How a failing record is retried. `E` is the handler's error type; the default is the boxed
/// error most handlers return.
///
/// ```
/// use std::time::Duration;
/// use kafkit_resilience::{BackoffPolicy, GiveUpReason, RetryDecision, RetryPolicy};
///
/// #[derive(Debug)]
/// enum HandlerError { Timeout, BadPayload }
///
/// let backoff = BackoffPolicy::new(Duration::from_millis(100), Duration::from_secs(5), 2.0, 0.0).unwrap();
/// let policy = RetryPolicy::new(3, backoff)
///     .unwrap()
///     .retriable_if(|e: &HandlerError| matches!(e, HandlerError::Timeout));
/// assert_eq!(policy.decide(1, &HandlerError::Timeout), RetryDecision::RetryAfter(Duration::from_millis(100)));
/// assert_eq!(
///     policy.decide(3, &HandlerError::Timeout),
///     RetryDecision::GiveUp { reason: GiveUpReason::Exhausted { attempts: 3 } },
/// );
/// assert_eq!(
///     policy.decide(1, &HandlerError::BadPayload),
///     RetryDecision::GiveUp { reason: GiveUpReason::NotRetriable },
/// );
/// ```
pub struct RetryPolicy<E: ?Sized = dyn std::error::Error + Send + Sync> {
    max_attempts: u32,
    backoff: BackoffPolicy,
    retriable: Arc<dyn Fn(&E) -> bool + Send + Sync>,
}

impl<E: ?Sized> Clone for RetryPolicy<E> {
    fn clone(&self) -> Self {
        Self {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            retriable: Arc::clone(&self.retriable),
        }
    }
}

impl<E: ?Sized> fmt::Debug for RetryPolicy<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl<E: ?Sized> Default for RetryPolicy<E> {
    /// [`DEFAULT_MAX_ATTEMPTS`](Self::DEFAULT_MAX_ATTEMPTS) attempts,
    /// [`default_backoff`](Self::default_backoff) between them, every error retriable.
    fn default() -> Self {
        Self {
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            backoff: Self::default_backoff(),
            retriable: Arc::new(|_| true),
        }
    }
}

impl<E: ?Sized> RetryPolicy<E> {
    /// 10 attempts in all, the first included.
    ///
    /// Spring Kafka's default (10 deliveries), so a fleet mixing Java and kafkit consumers
    /// dead-letters after the same number of tries, and the `kafkit_dlt-attempts` header means the
    /// same thing on both. KafkaJS's 5 retries (6 attempts) would be too close to the breaker's
    /// default threshold of 5: the attempts must outlast the threshold so that a downstream outage
    /// opens the breaker (pausing fetching) before any record is dead-lettered.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

    /// 100 ms doubling to 5 s with ±20 % jitter.
    ///
    /// A retrying record holds up its key (or partition), so delays stay short: all ten attempts
    /// take about 21 s at worst, and the first five (enough to open the breaker on an outage) about
    /// 1.5 s. Longer outages are the breaker's job, not the retry loop's.
    pub fn default_backoff() -> BackoffPolicy {
        BackoffPolicy::new(Duration::from_millis(100), Duration::from_secs(5), 2.0, 0.2)
            .expect("constant backoff settings are valid")
    }

    /// `max_attempts` attempts in all (the first included, so 1 means no retry), `backoff` between
    /// them, every error retriable until [`retriable_if`](Self::retriable_if) says otherwise.
    ///
    /// Rejects `max_attempts` of 0.
    pub fn new(max_attempts: u32, backoff: BackoffPolicy) -> Result<Self, ConfigError> {
        if max_attempts == 0 {
            return Err(ConfigError::new(
                "retry.max_attempts",
                "must be at least 1 (the first attempt counts), got 0",
            ));
        }
        Ok(Self {
            max_attempts,
            backoff,
            retriable: Arc::new(|_| true),
        })
    }

    /// Retries only errors for which `predicate` returns true; others give up at once with
    /// [`GiveUpReason::NotRetriable`]. Default: every error is retriable.
    pub fn retriable_if(mut self, predicate: impl Fn(&E) -> bool + Send + Sync + 'static) -> Self {
        self.retriable = Arc::new(predicate);
        self
    }

    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delays between attempts.
    pub fn backoff(&self) -> BackoffPolicy {
        self.backoff
    }

    /// Whether the predicate calls `error` retriable.
    pub fn is_retriable(&self, error: &E) -> bool {
        (self.retriable)(error)
    }

    /// The decision after attempt number `attempt` (1-based: 1 is the first try; 0 is taken as 1)
    /// failed with `error`. Jitter comes from the thread-local RNG.
    pub fn decide(&self, attempt: u32, error: &E) -> RetryDecision {
        self.decide_with(attempt, error, &mut || rand::random::<f64>())
    }

    /// [`decide`](Self::decide) with jitter drawn from `jitter` (tests pass a fixed value).
    pub fn decide_with(
        &self,
        attempt: u32,
        error: &E,
        jitter: &mut dyn JitterSource,
    ) -> RetryDecision {
        let attempt = attempt.max(1);
        if !self.is_retriable(error) {
            return RetryDecision::GiveUp {
                reason: GiveUpReason::NotRetriable,
            };
        }
        if attempt >= self.max_attempts {
            return RetryDecision::GiveUp {
                reason: GiveUpReason::Exhausted { attempts: attempt },
            };
        }
        let unit = if self.backoff.jitter() == 0.0 {
            0.5
        } else {
            jitter.unit()
        };
        RetryDecision::RetryAfter(self.backoff.delay(attempt - 1, unit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    type BoxedError = dyn std::error::Error + Send + Sync;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Failure {
        Transient,
        Permanent,
    }

    fn retry(ms_: u64) -> RetryDecision {
        RetryDecision::RetryAfter(ms(ms_))
    }

    fn exhausted(attempts: u32) -> RetryDecision {
        RetryDecision::GiveUp {
            reason: GiveUpReason::Exhausted { attempts },
        }
    }

    const NOT_RETRIABLE: RetryDecision = RetryDecision::GiveUp {
        reason: GiveUpReason::NotRetriable,
    };

    #[test]
    fn decision_table() {
        let backoff = BackoffPolicy::new(ms(100), ms(300), 2.0, 0.0).unwrap();
        let policy = RetryPolicy::new(4, backoff)
            .unwrap()
            .retriable_if(|e: &Failure| *e == Failure::Transient);
        let cases = [
            (0, Failure::Transient, retry(100)),
            (1, Failure::Transient, retry(100)),
            (2, Failure::Transient, retry(200)),
            (3, Failure::Transient, retry(300)),
            (4, Failure::Transient, exhausted(4)),
            (7, Failure::Transient, exhausted(7)),
            (1, Failure::Permanent, NOT_RETRIABLE),
            (4, Failure::Permanent, NOT_RETRIABLE),
        ];
        for (attempt, error, expected) in cases {
            assert_eq!(
                policy.decide(attempt, &error),
                expected,
                "attempt {attempt}, {error:?}"
            );
        }
    }

    #[test]
    fn defaults_retry_everything_ten_times() {
        let policy = RetryPolicy::<Failure>::default();
        assert_eq!(policy.max_attempts(), 10);
        assert_eq!(policy.backoff().initial(), ms(100));
        assert_eq!(policy.backoff().max(), ms(5_000));
        assert!(policy.is_retriable(&Failure::Permanent));
        assert!(matches!(
            policy.decide(9, &Failure::Permanent),
            RetryDecision::RetryAfter(_)
        ));
        assert_eq!(policy.decide(10, &Failure::Permanent), exhausted(10));
    }

    #[test]
    fn one_attempt_means_no_retry() {
        let policy = RetryPolicy::new(1, BackoffPolicy::default()).unwrap();
        assert_eq!(policy.decide(1, &Failure::Transient), exhausted(1));
    }

    #[test]
    fn zero_attempts_is_rejected() {
        let err = RetryPolicy::<Failure>::new(0, BackoffPolicy::default()).unwrap_err();
        assert_eq!(err.setting, "retry.max_attempts");
    }

    #[test]
    fn jitter_comes_from_the_given_source() {
        let backoff = BackoffPolicy::new(ms(1000), ms(60_000), 2.0, 0.5).unwrap();
        let policy = RetryPolicy::new(5, backoff).unwrap();
        assert_eq!(
            policy.decide_with(1, &Failure::Transient, &mut || 0.0),
            retry(500)
        );
        assert_eq!(
            policy.decide_with(2, &Failure::Transient, &mut || 0.5),
            retry(2000)
        );
        for _ in 0..100 {
            let RetryDecision::RetryAfter(d) = policy.decide(3, &Failure::Transient) else {
                panic!("attempt 3 of 5 must retry");
            };
            assert!(d >= ms(2000) && d <= ms(6000), "{d:?}");
        }
    }

    #[test]
    fn predicate_over_boxed_errors() {
        let policy: RetryPolicy = RetryPolicy::default().retriable_if(|e: &BoxedError| {
            e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::TimedOut)
        });
        let timeout: Box<BoxedError> = Box::new(io::Error::from(io::ErrorKind::TimedOut));
        let invalid: Box<BoxedError> = Box::new(io::Error::from(io::ErrorKind::InvalidData));
        assert!(matches!(
            policy.decide(1, timeout.as_ref()),
            RetryDecision::RetryAfter(_)
        ));
        assert_eq!(policy.decide(1, invalid.as_ref()), NOT_RETRIABLE);
        // Clones share the predicate.
        assert_eq!(policy.clone().decide(1, invalid.as_ref()), NOT_RETRIABLE);
    }

    #[test]
    fn give_up_reasons_read_well() {
        assert_eq!(
            GiveUpReason::Exhausted { attempts: 10 }.to_string(),
            "gave up after 10 failed attempts"
        );
        assert_eq!(
            GiveUpReason::NotRetriable.to_string(),
            "error is not retriable"
        );
    }
}
