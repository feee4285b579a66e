//! Resilience settings from environment variables, in the users' style.
//!
//! | variable                              | form                       | default  |
//! |---------------------------------------|----------------------------|----------|
//! | `KAFKA_ENABLE_CIRCUIT_BREAKER`        | `true`/`false` (`1`/`0`, `yes`/`no`, `on`/`off`) | `true` |
//! | `KAFKA_CIRCUIT_BREAKER_THRESHOLD`     | whole number >= 1          | `5`      |
//! | `KAFKA_CIRCUIT_BREAKER_RESET_TIMEOUT` | milliseconds               | `30000`  |
//! | `KAFKA_RETRY_MAX_ATTEMPTS`            | whole number >= 1, first attempt included | `10` |
//! | `KAFKA_RECONNECT_BACKOFF_MS`          | milliseconds               | `100`    |
//! | `KAFKA_RECONNECT_BACKOFF_MAX_MS`      | milliseconds, >= the above | `64000`  |
//! | `KAFKA_SHUTDOWN_TIMEOUT`              | milliseconds               | `30000`  |
//! | `KAFKA_HEALTH_CHECK_INTERVAL`         | milliseconds               | `30000`  |
//! | `KAFKA_BATCH_ERROR_ISOLATION`         | `true`/`false` (as above)  | `true`   |
//!
//! Milliseconds are whole numbers from 1 to 86400000 (one day). A variable that is unset, empty or
//! only whitespace takes its default (compose files often write `KAFKA_X=${KAFKA_X:-}`). Any other
//! value that does not parse is rejected with a [`ConfigError`] naming the variable, quoting the
//! value and giving the allowed form. Other `KAFKA_*` variables are ignored: they belong to other
//! parts of the application.

use std::time::Duration;

use crate::{BackoffPolicy, CircuitBreakerPolicy, ConfigError, RetryPolicy};

const ENABLE_CIRCUIT_BREAKER: &str = "KAFKA_ENABLE_CIRCUIT_BREAKER";
const CIRCUIT_BREAKER_THRESHOLD: &str = "KAFKA_CIRCUIT_BREAKER_THRESHOLD";
const CIRCUIT_BREAKER_RESET_TIMEOUT: &str = "KAFKA_CIRCUIT_BREAKER_RESET_TIMEOUT";
const RETRY_MAX_ATTEMPTS: &str = "KAFKA_RETRY_MAX_ATTEMPTS";
const RECONNECT_BACKOFF_MS: &str = "KAFKA_RECONNECT_BACKOFF_MS";
const RECONNECT_BACKOFF_MAX_MS: &str = "KAFKA_RECONNECT_BACKOFF_MAX_MS";
const SHUTDOWN_TIMEOUT: &str = "KAFKA_SHUTDOWN_TIMEOUT";
const HEALTH_CHECK_INTERVAL: &str = "KAFKA_HEALTH_CHECK_INTERVAL";
const BATCH_ERROR_ISOLATION: &str = "KAFKA_BATCH_ERROR_ISOLATION";

/// The largest millisecond value accepted: one day. Longer is indistinguishable from "never" and
/// keeps deadline arithmetic (`Instant + timeout`) from overflowing.
const MAX_MS: u64 = 24 * 60 * 60 * 1000;

/// Every resilience setting a consumer takes, with the users' defaults.
///
/// ```
/// use std::time::Duration;
/// use kafkit_resilience::ResilienceConfig;
///
/// let env = [("KAFKA_CIRCUIT_BREAKER_THRESHOLD", "3"), ("KAFKA_SHUTDOWN_TIMEOUT", "10000")];
/// let config = ResilienceConfig::from_lookup(|name| {
///     env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
/// })
/// .unwrap();
/// assert_eq!(config.circuit_breaker.unwrap().failure_threshold(), 3);
/// assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
///
/// let bad = ResilienceConfig::from_lookup(|name| {
///     (name == "KAFKA_SHUTDOWN_TIMEOUT").then(|| "30s".to_owned())
/// })
/// .unwrap_err();
/// assert_eq!(bad.setting, "KAFKA_SHUTDOWN_TIMEOUT");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ResilienceConfig {
    /// The record-processing circuit breaker; `None` when disabled. Default enabled, 5 failures,
    /// 30 s: with it, a downstream outage pauses consumption instead of dead-lettering records.
    /// From `KAFKA_ENABLE_CIRCUIT_BREAKER`, `KAFKA_CIRCUIT_BREAKER_THRESHOLD`,
    /// `KAFKA_CIRCUIT_BREAKER_RESET_TIMEOUT`.
    pub circuit_breaker: Option<CircuitBreakerPolicy>,
    /// Attempts per record, the first included. Default 10 (see
    /// [`RetryPolicy::DEFAULT_MAX_ATTEMPTS`]). From `KAFKA_RETRY_MAX_ATTEMPTS`.
    pub retry_max_attempts: u32,
    /// Delays between a record's attempts. Default [`RetryPolicy::default_backoff`]; code only.
    pub retry_backoff: BackoffPolicy,
    /// Delays between reconnects to a broker. Default 100 ms doubling to 64 s with 20 % jitter.
    /// Initial and max from `KAFKA_RECONNECT_BACKOFF_MS` / `KAFKA_RECONNECT_BACKOFF_MAX_MS`
    /// (Kafka's `reconnect.backoff.ms` / `reconnect.backoff.max.ms`). Applied by kafkit-core's
    /// `ClientConfig::resilience` and `ConsumerBuilder::resilience`: the group coordinator's
    /// reconnects follow it, and the fetchers' and the producer's retries (which reconnect) wait
    /// no less than its initial and no more than its max.
    pub reconnect_backoff: BackoffPolicy,
    /// How long a graceful shutdown may take before in-flight work is abandoned (uncommitted, so
    /// redelivered). Default 30 s. From `KAFKA_SHUTDOWN_TIMEOUT`.
    pub shutdown_timeout: Duration,
    /// How often health is evaluated. Default 30 s. From `KAFKA_HEALTH_CHECK_INTERVAL`. Validated
    /// only: kafkit evaluates health on each `report()` call; a value other than the default is
    /// one of the [`warnings`](Self::warnings).
    pub health_check_interval: Duration,
    /// Whether one failing record is retried and dead-lettered on its own while the rest of its
    /// batch carries on (`true`), or fails the whole batch (`false`). Default `true`.
    /// From `KAFKA_BATCH_ERROR_ISOLATION`. Validated only: kafkit always isolates; `false` is one
    /// of the [`warnings`](Self::warnings).
    pub batch_error_isolation: bool,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            circuit_breaker: Some(CircuitBreakerPolicy::default()),
            retry_max_attempts: RetryPolicy::<()>::DEFAULT_MAX_ATTEMPTS,
            retry_backoff: RetryPolicy::<()>::default_backoff(),
            reconnect_backoff: BackoffPolicy::default(),
            shutdown_timeout: Duration::from_secs(30),
            health_check_interval: Duration::from_secs(30),
            batch_error_isolation: true,
        }
    }
}

impl ResilienceConfig {
    /// Reads the process environment. A value that is not UTF-8 is rejected like any bad value.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| {
            std::env::var_os(name).map(|v| {
                v.into_string()
                    .unwrap_or_else(|v| v.to_string_lossy().into_owned())
            })
        })
    }

    /// Reads settings through `lookup` (variable name to value); the testable core of
    /// [`from_env`](Self::from_env). Unset variables keep their defaults.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let defaults = Self::default();
        let breaker_defaults = CircuitBreakerPolicy::default();

        let enable_breaker =
            parse_bool(ENABLE_CIRCUIT_BREAKER, get(ENABLE_CIRCUIT_BREAKER))?.unwrap_or(true);
        let threshold = parse_count(CIRCUIT_BREAKER_THRESHOLD, get(CIRCUIT_BREAKER_THRESHOLD))?
            .unwrap_or(breaker_defaults.failure_threshold());
        let reset_timeout = parse_ms(
            CIRCUIT_BREAKER_RESET_TIMEOUT,
            get(CIRCUIT_BREAKER_RESET_TIMEOUT),
        )?
        .unwrap_or(breaker_defaults.reset_timeout());
        // Validated even when disabled: a typo should not wait for the day someone enables it.
        let breaker = CircuitBreakerPolicy::new(threshold, reset_timeout).map_err(|e| {
            let setting = if e.setting.ends_with("threshold") {
                CIRCUIT_BREAKER_THRESHOLD
            } else {
                CIRCUIT_BREAKER_RESET_TIMEOUT
            };
            ConfigError::new(setting, e.reason)
        })?;

        let retry_max_attempts = parse_count(RETRY_MAX_ATTEMPTS, get(RETRY_MAX_ATTEMPTS))?
            .unwrap_or(defaults.retry_max_attempts);

        let reconnect_initial = parse_ms(RECONNECT_BACKOFF_MS, get(RECONNECT_BACKOFF_MS))?
            .unwrap_or(defaults.reconnect_backoff.initial());
        let reconnect_max = parse_ms(RECONNECT_BACKOFF_MAX_MS, get(RECONNECT_BACKOFF_MAX_MS))?
            .unwrap_or(defaults.reconnect_backoff.max());
        let reconnect_backoff = BackoffPolicy::new(
            reconnect_initial,
            reconnect_max,
            defaults.reconnect_backoff.multiplier(),
            defaults.reconnect_backoff.jitter(),
        )
        .map_err(|e| {
            if e.setting == "backoff.max" {
                ConfigError::new(
                    RECONNECT_BACKOFF_MAX_MS,
                    format!(
                        "must not be less than {RECONNECT_BACKOFF_MS} ({} ms), got `{}`",
                        reconnect_initial.as_millis(),
                        reconnect_max.as_millis()
                    ),
                )
            } else {
                ConfigError::new(RECONNECT_BACKOFF_MS, e.reason)
            }
        })?;

        let config = Self {
            circuit_breaker: enable_breaker.then_some(breaker),
            retry_max_attempts,
            retry_backoff: defaults.retry_backoff,
            reconnect_backoff,
            shutdown_timeout: parse_ms(SHUTDOWN_TIMEOUT, get(SHUTDOWN_TIMEOUT))?
                .unwrap_or(defaults.shutdown_timeout),
            health_check_interval: parse_ms(HEALTH_CHECK_INTERVAL, get(HEALTH_CHECK_INTERVAL))?
                .unwrap_or(defaults.health_check_interval),
            batch_error_isolation: parse_bool(BATCH_ERROR_ISOLATION, get(BATCH_ERROR_ISOLATION))?
                .unwrap_or(defaults.batch_error_isolation),
        };
        for warning in config.warnings() {
            tracing::warn!(warning, "questionable resilience configuration");
        }
        Ok(config)
    }

    /// The per-record retry policy these settings describe, every error retriable; narrow it with
    /// [`RetryPolicy::retriable_if`].
    pub fn retry_policy<E: ?Sized>(&self) -> Result<RetryPolicy<E>, ConfigError> {
        RetryPolicy::new(self.retry_max_attempts, self.retry_backoff)
    }

    /// Combinations that are valid but probably not what was meant, for the caller to log.
    /// [`from_lookup`](Self::from_lookup) logs them at `warn`.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(breaker) = &self.circuit_breaker
            && self.retry_max_attempts <= breaker.failure_threshold()
        {
            warnings.push(format!(
                    "{RETRY_MAX_ATTEMPTS} ({}) is not above {CIRCUIT_BREAKER_THRESHOLD} ({}): during a \
                     downstream outage the first failing record is dead-lettered before the breaker opens",
                    self.retry_max_attempts,
                    breaker.failure_threshold()
                ));
        }
        let defaults = Self::default();
        if self.health_check_interval != defaults.health_check_interval {
            warnings.push(format!(
                "{HEALTH_CHECK_INTERVAL} ({} ms) is validated but has no effect: kafkit evaluates \
                 health on each report() call",
                self.health_check_interval.as_millis()
            ));
        }
        if !self.batch_error_isolation {
            warnings.push(format!(
                "{BATCH_ERROR_ISOLATION}=false has no effect: a failing record is always retried \
                 and dead-lettered on its own while the rest of its batch carries on"
            ));
        }
        warnings
    }
}

fn parse_bool(name: &str, value: Option<String>) -> Result<Option<bool>, ConfigError> {
    let Some(raw) = value else { return Ok(None) };
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(Some(true)),
        "false" | "0" | "no" | "off" => Ok(Some(false)),
        _ => Err(ConfigError::new(
            name,
            format!("expected true or false (also 1/0, yes/no, on/off), got `{raw}`"),
        )),
    }
}

fn parse_count(name: &str, value: Option<String>) -> Result<Option<u32>, ConfigError> {
    let Some(raw) = value else { return Ok(None) };
    match raw.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(ConfigError::new(
            name,
            format!(
                "expected a whole number from 1 to {}, got `{raw}`",
                u32::MAX
            ),
        )),
    }
}

fn parse_ms(name: &str, value: Option<String>) -> Result<Option<Duration>, ConfigError> {
    let Some(raw) = value else { return Ok(None) };
    match raw.trim().parse::<u64>() {
        Ok(ms) if (1..=MAX_MS).contains(&ms) => Ok(Some(Duration::from_millis(ms))),
        _ => Err(ConfigError::new(
            name,
            format!(
                "expected whole milliseconds from 1 to {MAX_MS} (e.g. 30000 for 30 s), got `{raw}`"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<ResilienceConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ResilienceConfig::from_lookup(|name| map.get(name).cloned())
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn defaults_match_the_users_settings() {
        let config = from(&[]).unwrap();
        let breaker = config.circuit_breaker.unwrap();
        assert_eq!(breaker.failure_threshold(), 5);
        assert_eq!(breaker.reset_timeout(), ms(30_000));
        assert_eq!(config.retry_max_attempts, 10);
        assert_eq!(config.reconnect_backoff, BackoffPolicy::default());
        assert_eq!(config.reconnect_backoff.max(), ms(64_000));
        assert_eq!(config.shutdown_timeout, ms(30_000));
        assert_eq!(config.health_check_interval, ms(30_000));
        assert!(config.batch_error_isolation);
        assert!(config.warnings().is_empty());
    }

    #[test]
    fn every_variable_is_read() {
        let config = from(&[
            ("KAFKA_ENABLE_CIRCUIT_BREAKER", "true"),
            ("KAFKA_CIRCUIT_BREAKER_THRESHOLD", "3"),
            ("KAFKA_CIRCUIT_BREAKER_RESET_TIMEOUT", "15000"),
            ("KAFKA_RETRY_MAX_ATTEMPTS", "6"),
            ("KAFKA_RECONNECT_BACKOFF_MS", "250"),
            ("KAFKA_RECONNECT_BACKOFF_MAX_MS", "10000"),
            ("KAFKA_SHUTDOWN_TIMEOUT", " 5000 "),
            ("KAFKA_HEALTH_CHECK_INTERVAL", "1000"),
            ("KAFKA_BATCH_ERROR_ISOLATION", "OFF"),
            ("KAFKA_MAX_TOPIC_STATS", "not ours"),
            ("KAFKA_ENABLE_MOVING_AVERAGE", "maybe"),
        ])
        .unwrap();
        let breaker = config.circuit_breaker.unwrap();
        assert_eq!(breaker.failure_threshold(), 3);
        assert_eq!(breaker.reset_timeout(), ms(15_000));
        assert_eq!(config.retry_max_attempts, 6);
        assert_eq!(config.reconnect_backoff.initial(), ms(250));
        assert_eq!(config.reconnect_backoff.max(), ms(10_000));
        assert_eq!(config.shutdown_timeout, ms(5_000));
        assert_eq!(config.health_check_interval, ms(1_000));
        assert!(!config.batch_error_isolation);
        assert_eq!(config.retry_policy::<()>().unwrap().max_attempts(), 6);
    }

    #[test]
    fn boolean_forms() {
        let cases = [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("yes", true),
            ("on", true),
            ("false", false),
            ("0", false),
            ("No", false),
            ("off", false),
        ];
        for (value, enabled) in cases {
            let config = from(&[("KAFKA_ENABLE_CIRCUIT_BREAKER", value)]).unwrap();
            assert_eq!(config.circuit_breaker.is_some(), enabled, "{value}");
        }
    }

    #[test]
    fn empty_values_take_the_default() {
        let config = from(&[
            ("KAFKA_SHUTDOWN_TIMEOUT", ""),
            ("KAFKA_ENABLE_CIRCUIT_BREAKER", "  "),
        ])
        .unwrap();
        assert_eq!(config.shutdown_timeout, ms(30_000));
        assert!(config.circuit_breaker.is_some());
    }

    #[test]
    fn bad_values_name_the_variable_and_quote_the_value() {
        let cases: [(&str, &str, &str); 14] = [
            (
                "KAFKA_ENABLE_CIRCUIT_BREAKER",
                "maybe",
                "expected true or false",
            ),
            (
                "KAFKA_BATCH_ERROR_ISOLATION",
                "enabled",
                "expected true or false",
            ),
            (
                "KAFKA_CIRCUIT_BREAKER_THRESHOLD",
                "0",
                "expected a whole number from 1",
            ),
            (
                "KAFKA_CIRCUIT_BREAKER_THRESHOLD",
                "-5",
                "expected a whole number from 1",
            ),
            (
                "KAFKA_CIRCUIT_BREAKER_THRESHOLD",
                "five",
                "expected a whole number from 1",
            ),
            (
                "KAFKA_CIRCUIT_BREAKER_RESET_TIMEOUT",
                "30s",
                "expected whole milliseconds",
            ),
            (
                "KAFKA_CIRCUIT_BREAKER_RESET_TIMEOUT",
                "86400001",
                "expected whole milliseconds",
            ),
            (
                "KAFKA_RETRY_MAX_ATTEMPTS",
                "0",
                "expected a whole number from 1",
            ),
            (
                "KAFKA_RECONNECT_BACKOFF_MS",
                "0",
                "expected whole milliseconds",
            ),
            (
                "KAFKA_RECONNECT_BACKOFF_MAX_MS",
                "1.5",
                "expected whole milliseconds",
            ),
            ("KAFKA_SHUTDOWN_TIMEOUT", "0", "expected whole milliseconds"),
            (
                "KAFKA_SHUTDOWN_TIMEOUT",
                "30_000",
                "expected whole milliseconds",
            ),
            (
                "KAFKA_HEALTH_CHECK_INTERVAL",
                "99999999999999999999",
                "expected whole milliseconds",
            ),
            (
                "KAFKA_HEALTH_CHECK_INTERVAL",
                "1e3",
                "expected whole milliseconds",
            ),
        ];
        for (name, value, form) in cases {
            let err = from(&[(name, value)]).unwrap_err();
            assert_eq!(err.setting, name, "{name}={value}");
            assert!(err.reason.contains(form), "{name}={value}: {}", err.reason);
            assert!(
                err.reason.contains(&format!("`{value}`")),
                "{name}={value}: {}",
                err.reason
            );
            assert!(err.to_string().contains(name));
        }
    }

    #[test]
    fn a_disabled_breaker_is_still_validated() {
        let err = from(&[
            ("KAFKA_ENABLE_CIRCUIT_BREAKER", "false"),
            ("KAFKA_CIRCUIT_BREAKER_THRESHOLD", "0"),
        ])
        .unwrap_err();
        assert_eq!(err.setting, "KAFKA_CIRCUIT_BREAKER_THRESHOLD");
    }

    #[test]
    fn reconnect_max_below_initial_names_the_max() {
        let err = from(&[
            ("KAFKA_RECONNECT_BACKOFF_MS", "5000"),
            ("KAFKA_RECONNECT_BACKOFF_MAX_MS", "1000"),
        ])
        .unwrap_err();
        assert_eq!(err.setting, "KAFKA_RECONNECT_BACKOFF_MAX_MS");
        assert_eq!(
            err.reason,
            "must not be less than KAFKA_RECONNECT_BACKOFF_MS (5000 ms), got `1000`"
        );
        // Raising only the initial above the default max is caught the same way.
        let err = from(&[("KAFKA_RECONNECT_BACKOFF_MS", "70000")]).unwrap_err();
        assert_eq!(err.setting, "KAFKA_RECONNECT_BACKOFF_MAX_MS");
    }

    #[test]
    fn retries_that_do_not_outlast_the_breaker_are_flagged() {
        let config = from(&[("KAFKA_RETRY_MAX_ATTEMPTS", "5")]).unwrap();
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("KAFKA_RETRY_MAX_ATTEMPTS (5)"),
            "{}",
            warnings[0]
        );
        let no_breaker = from(&[
            ("KAFKA_RETRY_MAX_ATTEMPTS", "5"),
            ("KAFKA_ENABLE_CIRCUIT_BREAKER", "false"),
        ])
        .unwrap();
        assert!(no_breaker.warnings().is_empty());
    }
}
