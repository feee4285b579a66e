//! The configuration error returned by [`MetricsConfigBuilder::build`](crate::MetricsConfigBuilder::build)
//! and the environment readers.

/// A setting was out of range, or an environment variable could not be used. Names the setting or the
/// variable, so the user knows what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value set in code is out of its allowed range.
    #[error("invalid metrics setting: {setting} {reason}")]
    InvalidSetting {
        /// The builder method / config field, e.g. `max_topic_stats`.
        setting: &'static str,
        /// What is wrong and which range is allowed, e.g. `must be >= 1, got 0`.
        reason: String,
    },
    /// An environment variable does not parse, or parses to a value out of range.
    #[error("invalid environment variable: {variable}={value:?} {reason}")]
    InvalidEnvVar {
        /// The variable, e.g. `KAFKA_MAX_TOPIC_STATS`.
        variable: &'static str,
        /// The value found in the environment.
        value: String,
        /// What is wrong and which values are allowed.
        reason: String,
    },
}

impl ConfigError {
    /// The name of the rejected setting or environment variable.
    pub fn setting(&self) -> &'static str {
        match self {
            Self::InvalidSetting { setting, .. } => setting,
            Self::InvalidEnvVar { variable, .. } => variable,
        }
    }
}
