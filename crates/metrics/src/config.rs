//! Validated metrics settings, set in code or from the users' `KAFKA_*` environment variables.
//!
//! Every range check lives in one `check_*` function, used both by [`MetricsConfigBuilder::build`] (the error
//! names the setting) and by [`MetricsConfigBuilder::env_overrides`] (the error names the variable). A check
//! returns the rule that was broken (`must be >= 1`); the caller adds the value it got.

use std::fmt;
use std::time::Duration;

use crate::ConfigError;

/// The largest accepted [`MetricsConfig::moving_average_window`]. Each tracked topic keeps up to this many
/// samples for each of its two timings, so the cap bounds the ring buffers at
/// `max_topic_stats * 2 * 8 bytes * window`.
pub const MAX_MOVING_AVERAGE_WINDOW: usize = 10_000;

const ENV_MAX_TOPIC_STATS: &str = "KAFKA_MAX_TOPIC_STATS";
const ENV_ENABLE_MOVING_AVERAGE: &str = "KAFKA_ENABLE_MOVING_AVERAGE";
const ENV_MOVING_AVERAGE_WINDOW: &str = "KAFKA_MOVING_AVERAGE_WINDOW";

const MAX_PRECISION_BITS: u32 = 10;
const MAX_HISTOGRAM_MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// Settings of a [`Metrics`](crate::Metrics) instance. Build with [`MetricsConfig::builder`], read from the
/// environment with [`MetricsConfig::from_env`], or take the [`Default`].
///
/// ```
/// use kafkit_metrics::MetricsConfig;
///
/// let config = MetricsConfig::builder().max_topic_stats(50).moving_average_window(20).build().unwrap();
/// assert_eq!(config.max_topic_stats(), 50);
///
/// let err = MetricsConfig::builder().max_topic_stats(0).build().unwrap_err();
/// assert_eq!(err.setting, "max_topic_stats");
/// assert_eq!(err.to_string(), "invalid setting `max_topic_stats`: must be >= 1, got 0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    max_topic_stats: usize,
    moving_average_enabled: bool,
    moving_average_window: usize,
    histogram_precision_bits: u32,
    histogram_resolution: Duration,
    histogram_max: Duration,
    publish_interval: Duration,
}

impl Default for MetricsConfig {
    /// 1000 topics, a 100-sample moving average, 5-bit histograms from 1 µs to 60 s, published every second.
    fn default() -> Self {
        Self {
            max_topic_stats: 1000,
            moving_average_enabled: true,
            moving_average_window: 100,
            histogram_precision_bits: 5,
            histogram_resolution: Duration::from_micros(1),
            histogram_max: Duration::from_secs(60),
            publish_interval: Duration::from_secs(1),
        }
    }
}

impl MetricsConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> MetricsConfigBuilder {
        MetricsConfigBuilder::new()
    }

    /// The defaults overridden by `KAFKA_MAX_TOPIC_STATS`, `KAFKA_ENABLE_MOVING_AVERAGE` and
    /// `KAFKA_MOVING_AVERAGE_WINDOW` from the process environment. See
    /// [`MetricsConfigBuilder::env_overrides`] for the accepted values.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| {
            std::env::var_os(name).map(|value| {
                // A non-UTF-8 value is kept (lossily) so that it is rejected with the variable's name,
                // rather than silently ignored as if unset.
                value
                    .into_string()
                    .unwrap_or_else(|raw| raw.to_string_lossy().into_owned())
            })
        })
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup` instead of the process
    /// environment (tests pass a map, so they need not mutate the environment).
    ///
    /// ```
    /// use kafkit_metrics::MetricsConfig;
    ///
    /// let config = MetricsConfig::from_lookup(|name| (name == "KAFKA_MOVING_AVERAGE_WINDOW").then(|| "25".into()));
    /// assert_eq!(config.unwrap().moving_average_window(), 25);
    ///
    /// let err = MetricsConfig::from_lookup(|name| (name == "KAFKA_MAX_TOPIC_STATS").then(|| "lots".into()));
    /// let err = err.unwrap_err();
    /// assert_eq!(err.setting, "KAFKA_MAX_TOPIC_STATS");
    /// assert_eq!(err.reason, r#"must be a whole number, got "lots""#);
    /// ```
    pub fn from_lookup(lookup: impl FnMut(&str) -> Option<String>) -> Result<Self, ConfigError> {
        MetricsConfigBuilder::new().env_overrides(lookup)?.build()
    }

    /// How many topics have statistics kept; the least recently recorded one is evicted beyond this.
    pub fn max_topic_stats(&self) -> usize {
        self.max_topic_stats
    }

    /// Whether averages are over the last [`moving_average_window`](Self::moving_average_window) samples
    /// (`true`) or over every sample since the topic was first seen (`false`).
    pub fn moving_average_enabled(&self) -> bool {
        self.moving_average_enabled
    }

    /// The number of most recent samples a moving average covers.
    pub fn moving_average_window(&self) -> usize {
        self.moving_average_window
    }

    /// Histogram buckets per power of two, as a power of two: quantiles are within `2^-(bits+1)` relative.
    pub fn histogram_precision_bits(&self) -> u32 {
        self.histogram_precision_bits
    }

    /// The smallest duration histograms tell apart; samples are counted in whole multiples of it.
    pub fn histogram_resolution(&self) -> Duration {
        self.histogram_resolution
    }

    /// The largest duration histograms tell apart; longer samples are counted as this value.
    pub fn histogram_max(&self) -> Duration {
        self.histogram_max
    }

    /// How often [`Metrics::spawn_publisher`](crate::Metrics::spawn_publisher) publishes a snapshot.
    pub fn publish_interval(&self) -> Duration {
        self.publish_interval
    }
}

/// Builds a validated [`MetricsConfig`]; every setter starts from the default shown in its doc.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsConfigBuilder {
    config: MetricsConfig,
}

impl MetricsConfigBuilder {
    /// A builder holding the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Topics with statistics kept, at least 1. Environment: `KAFKA_MAX_TOPIC_STATS`. Default 1000.
    pub fn max_topic_stats(mut self, topics: usize) -> Self {
        self.config.max_topic_stats = topics;
        self
    }

    /// Moving average (`true`) or lifetime average (`false`). Environment: `KAFKA_ENABLE_MOVING_AVERAGE`.
    /// Default `true`.
    pub fn moving_average_enabled(mut self, enabled: bool) -> Self {
        self.config.moving_average_enabled = enabled;
        self
    }

    /// Samples in the moving average, `1..=`[`MAX_MOVING_AVERAGE_WINDOW`].
    /// Environment: `KAFKA_MOVING_AVERAGE_WINDOW`. Default 100.
    pub fn moving_average_window(mut self, samples: usize) -> Self {
        self.config.moving_average_window = samples;
        self
    }

    /// Histogram precision, `1..=10` bits: quantiles are within `2^-(bits+1)` relative error plus one
    /// resolution unit. Default 5 (1.56 %).
    pub fn histogram_precision_bits(mut self, bits: u32) -> Self {
        self.config.histogram_precision_bits = bits;
        self
    }

    /// Smallest duration histograms tell apart, greater than zero and at most
    /// [`histogram_max`](Self::histogram_max). Default 1 µs.
    pub fn histogram_resolution(mut self, resolution: Duration) -> Self {
        self.config.histogram_resolution = resolution;
        self
    }

    /// Largest duration histograms tell apart (longer samples count as this), at most 24 h.
    /// Default 60 s.
    pub fn histogram_max(mut self, max: Duration) -> Self {
        self.config.histogram_max = max;
        self
    }

    /// Period of [`Metrics::spawn_publisher`](crate::Metrics::spawn_publisher), greater than zero.
    /// Default 1 s.
    pub fn publish_interval(mut self, interval: Duration) -> Self {
        self.config.publish_interval = interval;
        self
    }

    /// Overrides the settings whose variables `lookup` returns:
    /// - `KAFKA_MAX_TOPIC_STATS`: a whole number >= 1;
    /// - `KAFKA_ENABLE_MOVING_AVERAGE`: `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case);
    /// - `KAFKA_MOVING_AVERAGE_WINDOW`: a whole number in `1..=`[`MAX_MOVING_AVERAGE_WINDOW`].
    ///
    /// Surrounding whitespace is ignored and an empty value counts as unset (as `VAR=` does in a compose
    /// file). Anything else is rejected with a [`ConfigError`] whose `setting` is the variable and whose
    /// `reason` gives the allowed form and the value found, quoted.
    pub fn env_overrides(
        mut self,
        mut lookup: impl FnMut(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        if let Some(topics) = env_value(
            &mut lookup,
            ENV_MAX_TOPIC_STATS,
            parse_count,
            check_max_topic_stats,
        )? {
            self.config.max_topic_stats = topics;
        }
        if let Some(enabled) =
            env_value(&mut lookup, ENV_ENABLE_MOVING_AVERAGE, parse_bool, |_| {
                Ok(())
            })?
        {
            self.config.moving_average_enabled = enabled;
        }
        if let Some(window) = env_value(
            &mut lookup,
            ENV_MOVING_AVERAGE_WINDOW,
            parse_count,
            check_window,
        )? {
            self.config.moving_average_window = window;
        }
        Ok(self)
    }

    /// The validated configuration, or a [`ConfigError`] naming the first setting out of range.
    pub fn build(self) -> Result<MetricsConfig, ConfigError> {
        let c = self.config;
        setting(
            "max_topic_stats",
            c.max_topic_stats,
            check_max_topic_stats(c.max_topic_stats),
        )?;
        setting(
            "moving_average_window",
            c.moving_average_window,
            check_window(c.moving_average_window),
        )?;
        setting(
            "histogram_precision_bits",
            c.histogram_precision_bits,
            check_precision_bits(c.histogram_precision_bits),
        )?;
        setting(
            "histogram_max",
            c.histogram_max,
            check_histogram_max(c.histogram_max),
        )?;
        setting(
            "histogram_resolution",
            c.histogram_resolution,
            check_resolution(c.histogram_resolution, c.histogram_max),
        )?;
        setting(
            "publish_interval",
            c.publish_interval,
            check_publish_interval(c.publish_interval),
        )?;
        Ok(c)
    }
}

/// The error for a setting made in code: the rule `check` found broken and the value.
fn setting(
    name: &str,
    value: impl fmt::Debug,
    check: Result<(), String>,
) -> Result<(), ConfigError> {
    check.map_err(|rule| ConfigError::new(name, format!("{rule}, got {value:?}")))
}

/// Reads, parses and range-checks one variable; `None` when unset or empty.
fn env_value<T: Copy>(
    lookup: &mut impl FnMut(&str) -> Option<String>,
    variable: &'static str,
    parse: fn(&str) -> Result<T, String>,
    check: fn(T) -> Result<(), String>,
) -> Result<Option<T>, ConfigError> {
    let Some(raw) = lookup(variable) else {
        return Ok(None);
    };
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    // The value as found (untrimmed), quoted, so stray whitespace or control characters show.
    let error = |rule| ConfigError::new(variable, format!("{rule}, got {raw:?}"));
    let value = parse(trimmed).map_err(error)?;
    check(value).map_err(error)?;
    Ok(Some(value))
}

fn parse_count(raw: &str) -> Result<usize, String> {
    raw.parse().map_err(|_| "must be a whole number".to_owned())
}

fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("must be true or false (or 1/0, yes/no, on/off)".to_owned()),
    }
}

fn check_max_topic_stats(topics: usize) -> Result<(), String> {
    if topics == 0 {
        return Err("must be >= 1".to_owned());
    }
    Ok(())
}

fn check_window(samples: usize) -> Result<(), String> {
    if !(1..=MAX_MOVING_AVERAGE_WINDOW).contains(&samples) {
        return Err(format!("must be within 1..={MAX_MOVING_AVERAGE_WINDOW}"));
    }
    Ok(())
}

fn check_precision_bits(bits: u32) -> Result<(), String> {
    if !(1..=MAX_PRECISION_BITS).contains(&bits) {
        return Err(format!("must be within 1..={MAX_PRECISION_BITS}"));
    }
    Ok(())
}

fn check_histogram_max(max: Duration) -> Result<(), String> {
    if max > MAX_HISTOGRAM_MAX {
        return Err(format!("must be at most {MAX_HISTOGRAM_MAX:?}"));
    }
    Ok(())
}

fn check_resolution(resolution: Duration, max: Duration) -> Result<(), String> {
    if resolution.is_zero() || resolution > max {
        return Err(format!(
            "must be greater than zero and at most histogram_max ({max:?})"
        ));
    }
    Ok(())
}

fn check_publish_interval(interval: Duration) -> Result<(), String> {
    if interval.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let c = MetricsConfig::default();
        assert_eq!(c.max_topic_stats(), 1000);
        assert!(c.moving_average_enabled());
        assert_eq!(c.moving_average_window(), 100);
        assert_eq!(c.histogram_precision_bits(), 5);
        assert_eq!(c.histogram_resolution(), Duration::from_micros(1));
        assert_eq!(c.histogram_max(), Duration::from_secs(60));
        assert_eq!(c.publish_interval(), Duration::from_secs(1));
        assert_eq!(MetricsConfig::builder().build(), Ok(c));
    }

    #[test]
    fn invalid_settings_name_the_setting() {
        let b = MetricsConfig::builder;
        let cases = [
            (
                b().max_topic_stats(0),
                "max_topic_stats",
                "must be >= 1, got 0",
            ),
            (
                b().moving_average_window(0),
                "moving_average_window",
                "must be within 1..=10000, got 0",
            ),
            (
                b().moving_average_window(10_001),
                "moving_average_window",
                "must be within 1..=10000, got 10001",
            ),
            (
                b().histogram_precision_bits(0),
                "histogram_precision_bits",
                "must be within 1..=10, got 0",
            ),
            (
                b().histogram_precision_bits(11),
                "histogram_precision_bits",
                "must be within 1..=10, got 11",
            ),
            (
                b().histogram_max(Duration::from_secs(86_401)),
                "histogram_max",
                "must be at most 86400s, got 86401s",
            ),
            (
                b().histogram_resolution(Duration::ZERO),
                "histogram_resolution",
                "must be greater than zero and at most histogram_max (60s), got 0ns",
            ),
            (
                b().histogram_max(Duration::from_millis(1))
                    .histogram_resolution(Duration::from_millis(2)),
                "histogram_resolution",
                "must be greater than zero and at most histogram_max (1ms), got 2ms",
            ),
            (
                b().publish_interval(Duration::ZERO),
                "publish_interval",
                "must be greater than zero, got 0ns",
            ),
        ];
        for (builder, name, reason) in cases {
            let err = builder.build().unwrap_err();
            assert_eq!((err.setting.as_str(), err.reason.as_str()), (name, reason));
            assert_eq!(
                err.to_string(),
                format!("invalid setting `{name}`: {reason}")
            );
        }
    }

    #[test]
    fn valid_edges_are_accepted() {
        let cases = [
            MetricsConfig::builder().max_topic_stats(1),
            MetricsConfig::builder().moving_average_window(1),
            MetricsConfig::builder().moving_average_window(MAX_MOVING_AVERAGE_WINDOW),
            MetricsConfig::builder().histogram_precision_bits(1),
            MetricsConfig::builder().histogram_precision_bits(10),
            MetricsConfig::builder()
                .histogram_max(Duration::from_nanos(1))
                .histogram_resolution(Duration::from_nanos(1)),
            MetricsConfig::builder().histogram_max(MAX_HISTOGRAM_MAX),
        ];
        for builder in cases {
            assert!(builder.clone().build().is_ok(), "{builder:?}");
        }
    }

    /// Environment variables a test passes to `from_lookup`.
    type Vars<'a> = &'a [(&'a str, &'a str)];

    fn lookup(vars: Vars<'_>) -> impl FnMut(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn environment_overrides_defaults() {
        let cases: [(Vars<'_>, usize, bool, usize); 7] = [
            (&[], 1000, true, 100),
            (&[("KAFKA_MAX_TOPIC_STATS", "250")], 250, true, 100),
            (&[("KAFKA_MAX_TOPIC_STATS", " 7 ")], 7, true, 100),
            (
                &[("KAFKA_ENABLE_MOVING_AVERAGE", "FALSE")],
                1000,
                false,
                100,
            ),
            (&[("KAFKA_ENABLE_MOVING_AVERAGE", "0")], 1000, false, 100),
            (
                &[
                    ("KAFKA_MOVING_AVERAGE_WINDOW", "5"),
                    ("KAFKA_ENABLE_MOVING_AVERAGE", "yes"),
                ],
                1000,
                true,
                5,
            ),
            (
                &[
                    ("KAFKA_MAX_TOPIC_STATS", ""),
                    ("KAFKA_MOVING_AVERAGE_WINDOW", "  "),
                ],
                1000,
                true,
                100,
            ),
        ];
        for (vars, topics, enabled, window) in cases {
            let c = MetricsConfig::from_lookup(lookup(vars)).unwrap();
            assert_eq!(
                (
                    c.max_topic_stats(),
                    c.moving_average_enabled(),
                    c.moving_average_window()
                ),
                (topics, enabled, window),
                "{vars:?}"
            );
        }
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        let cases = [
            (
                "KAFKA_MAX_TOPIC_STATS",
                "lots",
                r#"must be a whole number, got "lots""#,
            ),
            (
                "KAFKA_MAX_TOPIC_STATS",
                "-5",
                r#"must be a whole number, got "-5""#,
            ),
            ("KAFKA_MAX_TOPIC_STATS", "0", r#"must be >= 1, got "0""#),
            // The value is quoted as found, surrounding whitespace included.
            ("KAFKA_MAX_TOPIC_STATS", " 0 ", r#"must be >= 1, got " 0 ""#),
            (
                "KAFKA_ENABLE_MOVING_AVERAGE",
                "maybe",
                r#"must be true or false (or 1/0, yes/no, on/off), got "maybe""#,
            ),
            (
                "KAFKA_MOVING_AVERAGE_WINDOW",
                "1e3",
                r#"must be a whole number, got "1e3""#,
            ),
            (
                "KAFKA_MOVING_AVERAGE_WINDOW",
                "0",
                r#"must be within 1..=10000, got "0""#,
            ),
            (
                "KAFKA_MOVING_AVERAGE_WINDOW",
                "20000",
                r#"must be within 1..=10000, got "20000""#,
            ),
        ];
        for (variable, value, reason) in cases {
            let err = MetricsConfig::from_lookup(lookup(&[(variable, value)])).unwrap_err();
            assert_eq!(
                (err.setting.as_str(), err.reason.as_str()),
                (variable, reason),
                "{value:?}"
            );
            assert_eq!(
                err.to_string(),
                format!("invalid setting `{variable}`: {reason}")
            );
        }
    }

    #[test]
    fn code_settings_survive_unset_variables() {
        let c = MetricsConfig::builder()
            .max_topic_stats(3)
            .env_overrides(lookup(&[("KAFKA_MOVING_AVERAGE_WINDOW", "9")]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!((c.max_topic_stats(), c.moving_average_window()), (3, 9));
    }
}
