//! Policies that keep a kafkit client alive through broker restarts, slow downstreams and poison records.
//!
//! # Layout
//! - `backoff`: exponential backoff with jitter ([`BackoffPolicy`] is the validated value object,
//!   [`Backoff`] the per-attempt state); used by every reconnect and retry path in kafkit-core.
//! - `breaker`: the circuit breaker on record processing ([`CircuitBreaker`], closed / open /
//!   half-open), which tells the consumer to pause fetching while a downstream is failing.
//! - `retry`: the per-record [`RetryPolicy`], a pure decision after each failed attempt: retry after
//!   a delay, or give up (exhausted or not retriable).
//! - `dead_letter`: where a record goes once it gave up ([`DeadLetterPolicy`], `<topic>-dlt`) and the
//!   Spring-compatible [`DeadLetterHeaders`] that say where it came from and why; stops dead-letter loops.
//! - `health`: [`HealthPolicy::evaluate`] turns what the consumer observed into a [`HealthReport`]
//!   (healthy / degraded / unhealthy, with reasons and JSON for a readiness endpoint).
//! - `env`: [`ResilienceConfig`], every setting above with defaults, readable from `KAFKA_*` variables.
//! - `error`: [`ConfigError`], returned by every constructor here when a setting is out of range.
//!
//! Policies are small value objects; the loops that apply them live in kafkit-core. Time comes from
//! `tokio::time`, so tests drive it with `tokio::time::pause()` and `advance()`.

mod backoff;
mod breaker;
mod dead_letter;
mod env;
mod error;
mod health;
mod retry;

pub use backoff::{Backoff, BackoffPolicy, JitterSource};
pub use breaker::{
    BreakerPermit, BreakerRejected, CircuitBreaker, CircuitBreakerPolicy, CircuitState,
};
pub use dead_letter::{
    DeadLetterHeaders, DeadLetterPolicy, DeadLetterRoute, DltFailureAction, ErrorDescription,
    HeaderDecodeError, OriginalRecord, StopReason, TimestampType,
};
pub use env::ResilienceConfig;
pub use error::ConfigError;
pub use health::{
    Check, HealthInputs, HealthPolicy, HealthReport, HealthStatus, LagTrend, PartitionProgress,
    SKIPPED_BATCH_WINDOW, SkippedBatch,
};
pub use retry::{GiveUpReason, RetryDecision, RetryPolicy};
