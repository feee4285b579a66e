//! The configuration error shared by every policy constructor.

/// A setting was out of its allowed range. Names the setting, so the user knows what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{setting}`: {reason}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The setting (builder method, Kafka property or environment variable) that was rejected.
    pub setting: String,
    /// What is wrong with it and what range is allowed.
    pub reason: String,
}

impl ConfigError {
    /// A new error for `setting`, saying `reason`.
    pub fn new(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}
