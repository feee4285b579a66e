//! Policies that keep a kafkit client alive through broker restarts, slow downstreams and poison records.
//!
//! # Layout
//! - `backoff`: exponential backoff with jitter ([`BackoffPolicy`] is the validated value object,
//!   [`Backoff`] the per-attempt state); used by every reconnect and retry path in kafkit-core.
//! - `error`: [`ConfigError`], returned by every constructor here when a setting is out of range.
//!
//! Policies are small value objects; the loops that apply them live in kafkit-core. Time comes from
//! `tokio::time`, so tests drive it with `tokio::time::pause()` and `advance()`.

mod backoff;
mod error;

pub use backoff::{Backoff, BackoffPolicy, JitterSource};
pub use error::ConfigError;
