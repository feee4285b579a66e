//! Dead-letter routing and headers, compatible with Spring Kafka's `DeadLetterPublishingRecoverer`.
//!
//! A record that exhausted its retries (or failed with an error that is not retriable) is produced
//! to its dead-letter topic, `<topic>-dlt` by default, on the same partition when that partition
//! exists, with the original key, value and headers plus the headers below. Only once that produce
//! is acknowledged is the original acked; if the produce fails the original is not acked, so it is
//! redelivered rather than lost.
//!
//! | header                               | encoding                 | written            |
//! |--------------------------------------|--------------------------|--------------------|
//! | `kafka_dlt-original-topic`           | UTF-8                    | always             |
//! | `kafka_dlt-original-partition`       | 4-byte big-endian int    | always             |
//! | `kafka_dlt-original-offset`          | 8-byte big-endian long   | always             |
//! | `kafka_dlt-original-timestamp`       | 8-byte big-endian long   | always             |
//! | `kafka_dlt-original-timestamp-type`  | UTF-8 (`CreateTime`, …)  | always             |
//! | `kafka_dlt-original-consumer-group`  | UTF-8                    | when in a group    |
//! | `kafka_dlt-exception-fqcn`           | UTF-8 (Rust type name)   | always             |
//! | `kafka_dlt-exception-cause-fqcn`     | UTF-8                    | when known         |
//! | `kafka_dlt-exception-message`        | UTF-8                    | always             |
//! | `kafka_dlt-exception-stacktrace`     | UTF-8 (`source()` chain) | always             |
//! | `kafkit_dlt-attempts`                | 4-byte big-endian int    | always (kafkit)    |
//!
//! # Loops
//! A record read from a dead-letter topic that fails again is never dead-lettered again:
//! [`DeadLetterPolicy::route`] answers [`DeadLetterRoute::Stop`] and the consumer applies the
//! [`DltFailureAction`] it carries (halt by default). A record counts as coming from a dead-letter
//! topic when its topic ends with the policy's suffix, or when it carries
//! `kafka_dlt-original-topic` naming a topic whose dead-letter topic is the one it was read from.
//! A record replayed from the dead-letter topic back onto its original topic is not caught by the
//! second rule (its topic is the original one), so it is dead-lettered again if it fails again:
//! each replay is an operator's decision, not a loop.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use crate::ConfigError;

/// Kafka's limit on topic name length.
const MAX_TOPIC_LEN: usize = 249;

/// The record-timestamp type, written as Java's `TimestampType.toString()` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// The producer set the timestamp (`CreateTime`).
    CreateTime,
    /// The broker set the timestamp on append (`LogAppendTime`).
    LogAppendTime,
    /// The record has no timestamp (`NoTimestampType`, timestamp -1).
    NoTimestampType,
}

impl TimestampType {
    /// `CreateTime`, `LogAppendTime` or `NoTimestampType`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateTime => "CreateTime",
            Self::LogAppendTime => "LogAppendTime",
            Self::NoTimestampType => "NoTimestampType",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::CreateTime, Self::LogAppendTime, Self::NoTimestampType]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

impl fmt::Display for TimestampType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the failed record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalRecord {
    /// The topic it was read from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp, milliseconds since the Unix epoch (-1 when it has none).
    pub timestamp: i64,
    /// What the timestamp means.
    pub timestamp_type: TimestampType,
    /// The consumer group that failed to process it, if it was read in a group.
    pub consumer_group: Option<String>,
}

/// What went wrong, in the shape of Spring's exception headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDescription {
    /// The error's type name (Java: the exception's fully qualified class name).
    pub type_name: String,
    /// The type name of its immediate cause, when known. Rust cannot name the type behind a
    /// `&dyn Error`, so [`of`](Self::of) leaves this `None`; set it with
    /// [`with_cause_type_name`](Self::with_cause_type_name) when you know it. Spring omits the
    /// header for exceptions without a cause, so its absence is normal.
    pub cause_type_name: Option<String>,
    /// The error's `Display` text. `None` only when decoded from a producer that omitted it.
    pub message: Option<String>,
    /// `type: message`, then one `Caused by: ...` line per [`Error::source`] level.
    pub stacktrace: String,
}

/// How deep [`ErrorDescription`] follows `source()`; guards against a (broken) cyclic chain.
const MAX_CHAIN_DEPTH: usize = 64;

impl ErrorDescription {
    /// Describes `error`, naming it by its static type.
    pub fn of<E: Error + 'static>(error: &E) -> Self {
        Self::of_dyn(std::any::type_name::<E>(), error)
    }

    /// Describes an already type-erased `error` under `type_name`.
    pub fn of_dyn(type_name: impl Into<String>, error: &(dyn Error + 'static)) -> Self {
        let type_name = type_name.into();
        let message = error.to_string();
        let mut stacktrace = format!("{type_name}: {message}");
        let mut source = error.source();
        let mut depth = 0;
        while let Some(cause) = source {
            if depth == MAX_CHAIN_DEPTH {
                stacktrace.push_str("\n... (chain truncated)");
                break;
            }
            stacktrace.push_str("\nCaused by: ");
            stacktrace.push_str(&cause.to_string());
            source = cause.source();
            depth += 1;
        }
        Self {
            type_name,
            cause_type_name: None,
            message: Some(message),
            stacktrace,
        }
    }

    /// Sets the cause's type name.
    pub fn with_cause_type_name(mut self, name: impl Into<String>) -> Self {
        self.cause_type_name = Some(name.into());
        self
    }
}

/// The headers of a dead-lettered record: where it came from, why it failed, how often it was tried.
///
/// ```
/// use kafkit_resilience::{DeadLetterHeaders, ErrorDescription, OriginalRecord, TimestampType};
///
/// let error = std::io::Error::other("downstream said 503");
/// let headers = DeadLetterHeaders::new(
///     OriginalRecord {
///         topic: "orders".into(),
///         partition: 3,
///         offset: 42,
///         timestamp: 1_700_000_000_123,
///         timestamp_type: TimestampType::CreateTime,
///         consumer_group: Some("billing".into()),
///     },
///     ErrorDescription::of(&error),
///     10,
/// );
/// let encoded = headers.encode();
/// assert!(encoded.contains(&("kafka_dlt-original-partition".to_owned(), vec![0, 0, 0, 3])));
/// let decoded = DeadLetterHeaders::decode(encoded.iter().map(|(k, v)| (k, v))).unwrap();
/// assert_eq!(decoded, headers);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterHeaders {
    /// Where the record came from.
    pub record: OriginalRecord,
    /// Why its last attempt failed.
    pub error: ErrorDescription,
    /// Attempts made before giving up. `None` when decoded from a producer that does not write
    /// `kafkit_dlt-attempts` (Spring).
    pub attempts: Option<u32>,
}

/// A dead-letter header could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderDecodeError {
    /// A header needed to identify the original record is absent: the record was probably not
    /// dead-lettered by kafkit or Spring.
    #[error("dead-letter header `{header}` is missing")]
    Missing {
        /// The header's name.
        header: &'static str,
    },
    /// A binary header has the wrong size.
    #[error("dead-letter header `{header}` has {actual} bytes, expected {expected}")]
    WrongLength {
        /// The header's name.
        header: &'static str,
        /// Its size in this encoding.
        expected: usize,
        /// The size found.
        actual: usize,
    },
    /// A text header is not UTF-8.
    #[error("dead-letter header `{header}` is not valid UTF-8")]
    NotUtf8 {
        /// The header's name.
        header: &'static str,
    },
    /// A header holds a value outside its domain.
    #[error("dead-letter header `{header}` holds `{value}`, expected {expected}")]
    InvalidValue {
        /// The header's name.
        header: &'static str,
        /// The value found, as text.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
}

impl DeadLetterHeaders {
    /// Spring: the original topic (UTF-8).
    pub const ORIGINAL_TOPIC: &'static str = "kafka_dlt-original-topic";
    /// Spring: the original partition (4-byte big-endian int).
    pub const ORIGINAL_PARTITION: &'static str = "kafka_dlt-original-partition";
    /// Spring: the original offset (8-byte big-endian long).
    pub const ORIGINAL_OFFSET: &'static str = "kafka_dlt-original-offset";
    /// Spring: the original timestamp (8-byte big-endian long, ms since the epoch).
    pub const ORIGINAL_TIMESTAMP: &'static str = "kafka_dlt-original-timestamp";
    /// Spring: the original timestamp type (UTF-8, `CreateTime` / `LogAppendTime`).
    pub const ORIGINAL_TIMESTAMP_TYPE: &'static str = "kafka_dlt-original-timestamp-type";
    /// Spring: the consumer group that failed (UTF-8).
    pub const ORIGINAL_CONSUMER_GROUP: &'static str = "kafka_dlt-original-consumer-group";
    /// Spring: the error's type name (UTF-8).
    pub const EXCEPTION_FQCN: &'static str = "kafka_dlt-exception-fqcn";
    /// Spring: the cause's type name (UTF-8).
    pub const EXCEPTION_CAUSE_FQCN: &'static str = "kafka_dlt-exception-cause-fqcn";
    /// Spring: the error message (UTF-8).
    pub const EXCEPTION_MESSAGE: &'static str = "kafka_dlt-exception-message";
    /// Spring: the stack trace; kafkit writes the `source()` chain (UTF-8).
    pub const EXCEPTION_STACKTRACE: &'static str = "kafka_dlt-exception-stacktrace";
    /// kafkit: attempts made before the record was dead-lettered (4-byte big-endian int).
    pub const ATTEMPTS: &'static str = "kafkit_dlt-attempts";

    /// Headers for `record`, which failed with `error` after `attempts` attempts.
    pub fn new(record: OriginalRecord, error: ErrorDescription, attempts: u32) -> Self {
        Self {
            record,
            error,
            attempts: Some(attempts),
        }
    }

    /// Whether `name` is one of the headers this type writes (Spring's `kafka_dlt-` prefix or
    /// kafkit's `kafkit_dlt-`). Strip these from the original record's headers before adding the
    /// new ones, so a record dead-lettered twice carries one set, not two.
    pub fn is_dead_letter_header(name: &str) -> bool {
        name.starts_with("kafka_dlt-") || name.starts_with("kafkit_dlt-")
    }

    /// The headers to add to the dead-letter record, in Spring's order.
    pub fn encode(&self) -> Vec<(String, Vec<u8>)> {
        let r = &self.record;
        let e = &self.error;
        let mut out = Vec::with_capacity(11);
        let mut put = |name: &str, value: Vec<u8>| out.push((name.to_owned(), value));
        put(Self::ORIGINAL_TOPIC, r.topic.as_bytes().to_vec());
        put(Self::ORIGINAL_PARTITION, r.partition.to_be_bytes().to_vec());
        put(Self::ORIGINAL_OFFSET, r.offset.to_be_bytes().to_vec());
        put(Self::ORIGINAL_TIMESTAMP, r.timestamp.to_be_bytes().to_vec());
        put(
            Self::ORIGINAL_TIMESTAMP_TYPE,
            r.timestamp_type.as_str().as_bytes().to_vec(),
        );
        if let Some(group) = &r.consumer_group {
            put(Self::ORIGINAL_CONSUMER_GROUP, group.as_bytes().to_vec());
        }
        put(Self::EXCEPTION_FQCN, e.type_name.as_bytes().to_vec());
        if let Some(cause) = &e.cause_type_name {
            put(Self::EXCEPTION_CAUSE_FQCN, cause.as_bytes().to_vec());
        }
        if let Some(message) = &e.message {
            put(Self::EXCEPTION_MESSAGE, message.as_bytes().to_vec());
        }
        put(Self::EXCEPTION_STACKTRACE, e.stacktrace.as_bytes().to_vec());
        if let Some(attempts) = self.attempts {
            // Java reads a signed int; beyond i32::MAX, saturate rather than go negative.
            let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
            put(Self::ATTEMPTS, attempts.to_be_bytes().to_vec());
        }
        out
    }

    /// Reads the headers back from a dead-letter record's headers (any iterable of name/value
    /// pairs: `&BTreeMap<String, Vec<u8>>`, `vec.iter().map(|(k, v)| (k, v))`, ...). Other headers
    /// are ignored. When a header occurs more than once, the last occurrence wins, as with Java's
    /// `Headers.lastHeader`.
    ///
    /// Only topic, partition and offset are required: Spring can be told to leave out any other
    /// header. A missing timestamp reads as -1 / `NoTimestampType`, a missing type or stack trace
    /// as an empty string, a missing group, cause, message or attempt count as `None`.
    pub fn decode<I, K, V>(headers: I) -> Result<Self, HeaderDecodeError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let mut found: [Option<Vec<u8>>; ALL_HEADERS.len()] = Default::default();
        for (name, value) in headers {
            if let Some(i) = ALL_HEADERS.iter().position(|h| *h == name.as_ref()) {
                found[i] = Some(value.as_ref().to_vec());
            }
        }
        let get = |name: &'static str| {
            let i = ALL_HEADERS
                .iter()
                .position(|h| *h == name)
                .expect("known header");
            found[i].as_deref()
        };
        let text = |name: &'static str| -> Result<Option<String>, HeaderDecodeError> {
            get(name)
                .map(|b| {
                    String::from_utf8(b.to_vec())
                        .map_err(|_| HeaderDecodeError::NotUtf8 { header: name })
                })
                .transpose()
        };
        let required =
            |name: &'static str| get(name).ok_or(HeaderDecodeError::Missing { header: name });

        let topic = text(Self::ORIGINAL_TOPIC)?.ok_or(HeaderDecodeError::Missing {
            header: Self::ORIGINAL_TOPIC,
        })?;
        let partition = i32::from_be_bytes(fixed(
            Self::ORIGINAL_PARTITION,
            required(Self::ORIGINAL_PARTITION)?,
        )?);
        let offset = i64::from_be_bytes(fixed(
            Self::ORIGINAL_OFFSET,
            required(Self::ORIGINAL_OFFSET)?,
        )?);
        let timestamp = get(Self::ORIGINAL_TIMESTAMP)
            .map(|b| fixed(Self::ORIGINAL_TIMESTAMP, b).map(i64::from_be_bytes))
            .transpose()?
            .unwrap_or(-1);
        let timestamp_type = match text(Self::ORIGINAL_TIMESTAMP_TYPE)? {
            None => TimestampType::NoTimestampType,
            Some(s) => TimestampType::parse(&s).ok_or(HeaderDecodeError::InvalidValue {
                header: Self::ORIGINAL_TIMESTAMP_TYPE,
                value: s,
                expected: "CreateTime, LogAppendTime or NoTimestampType",
            })?,
        };
        let attempts = get(Self::ATTEMPTS)
            .map(|b| fixed(Self::ATTEMPTS, b).map(i32::from_be_bytes))
            .transpose()?
            .map(|n| {
                u32::try_from(n).map_err(|_| HeaderDecodeError::InvalidValue {
                    header: Self::ATTEMPTS,
                    value: n.to_string(),
                    expected: "a non-negative attempt count",
                })
            })
            .transpose()?;
        Ok(Self {
            record: OriginalRecord {
                topic,
                partition,
                offset,
                timestamp,
                timestamp_type,
                consumer_group: text(Self::ORIGINAL_CONSUMER_GROUP)?,
            },
            error: ErrorDescription {
                type_name: text(Self::EXCEPTION_FQCN)?.unwrap_or_default(),
                cause_type_name: text(Self::EXCEPTION_CAUSE_FQCN)?,
                message: text(Self::EXCEPTION_MESSAGE)?,
                stacktrace: text(Self::EXCEPTION_STACKTRACE)?.unwrap_or_default(),
            },
            attempts,
        })
    }
}

/// Every header [`DeadLetterHeaders`] reads, in encoding order.
const ALL_HEADERS: [&str; 11] = [
    DeadLetterHeaders::ORIGINAL_TOPIC,
    DeadLetterHeaders::ORIGINAL_PARTITION,
    DeadLetterHeaders::ORIGINAL_OFFSET,
    DeadLetterHeaders::ORIGINAL_TIMESTAMP,
    DeadLetterHeaders::ORIGINAL_TIMESTAMP_TYPE,
    DeadLetterHeaders::ORIGINAL_CONSUMER_GROUP,
    DeadLetterHeaders::EXCEPTION_FQCN,
    DeadLetterHeaders::EXCEPTION_CAUSE_FQCN,
    DeadLetterHeaders::EXCEPTION_MESSAGE,
    DeadLetterHeaders::EXCEPTION_STACKTRACE,
    DeadLetterHeaders::ATTEMPTS,
];

/// `bytes` as an `N`-byte array, or the length error naming `header`.
fn fixed<const N: usize>(header: &'static str, bytes: &[u8]) -> Result<[u8; N], HeaderDecodeError> {
    bytes
        .try_into()
        .map_err(|_| HeaderDecodeError::WrongLength {
            header,
            expected: N,
            actual: bytes.len(),
        })
}

/// What the consumer does with a record that fails again after it was read from a dead-letter
/// topic (or whose dead-letter topic name is unusable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DltFailureAction {
    /// Default. Do not ack: pause the partition, report it in the health check (unhealthy) and log
    /// an error naming topic, partition and offset. An operator fixes the cause (or the record) and
    /// resumes. Nothing is skipped silently.
    #[default]
    Halt,
    /// Ack without producing anything and log an error naming topic, partition and offset. The
    /// record stays in the dead-letter topic's log until retention removes it; the consumer moves on.
    Skip,
}

/// Where a record that gave up goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadLetterRoute {
    /// Produce it to `topic` (same partition when it exists) with [`DeadLetterHeaders`]; ack the
    /// original only after the produce is acknowledged, and not at all if it fails.
    Produce {
        /// The dead-letter topic.
        topic: String,
    },
    /// Produce nothing; the consumer applies `action` to the original record.
    Stop {
        /// Why the record is not dead-lettered.
        reason: StopReason,
        /// What to do with it instead.
        action: DltFailureAction,
    },
}

/// Why [`DeadLetterPolicy::route`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The record was read from a dead-letter topic: dead-lettering it again could loop.
    AlreadyDeadLettered {
        /// The dead-letter topic it was read from.
        topic: String,
    },
    /// The naming function produced an unusable topic name. Always halts: skipping would drop every
    /// failing record because of a configuration mistake.
    InvalidTarget {
        /// The name produced.
        target: String,
        /// What is wrong with it.
        why: String,
    },
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyDeadLettered { topic } => write!(
                f,
                "record was read from dead-letter topic `{topic}` and failed again; \
                 not dead-lettering it a second time"
            ),
            Self::InvalidTarget { target, why } => {
                write!(f, "dead-letter topic `{target}` is unusable: {why}")
            }
        }
    }
}

#[derive(Clone)]
enum Naming {
    Suffix(String),
    Custom(Arc<dyn Fn(&str) -> String + Send + Sync>),
}

/// Where failed records go and what happens when a dead-lettered record fails again.
///
/// ```
/// use kafkit_resilience::{DeadLetterPolicy, DeadLetterRoute, DltFailureAction};
///
/// let policy = DeadLetterPolicy::default();
/// let no_headers: [(&str, &[u8]); 0] = [];
/// assert_eq!(
///     policy.route("orders", no_headers),
///     DeadLetterRoute::Produce { topic: "orders-dlt".into() },
/// );
/// assert!(matches!(
///     policy.route("orders-dlt", no_headers),
///     DeadLetterRoute::Stop { action: DltFailureAction::Halt, .. },
/// ));
/// ```
#[derive(Clone)]
pub struct DeadLetterPolicy {
    naming: Naming,
    on_failure_in_dlt: DltFailureAction,
}

impl fmt::Debug for DeadLetterPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("DeadLetterPolicy");
        match &self.naming {
            Naming::Suffix(s) => d.field("suffix", s),
            Naming::Custom(_) => d.field("naming", &"<fn>"),
        };
        d.field("on_failure_in_dlt", &self.on_failure_in_dlt)
            .finish()
    }
}

impl Default for DeadLetterPolicy {
    /// `<topic>-dlt` (Spring's default name), halting on a failure in a dead-letter topic.
    fn default() -> Self {
        Self {
            naming: Naming::Suffix(Self::DEFAULT_SUFFIX.to_owned()),
            on_failure_in_dlt: DltFailureAction::Halt,
        }
    }
}

impl DeadLetterPolicy {
    /// Spring Kafka's default suffix.
    pub const DEFAULT_SUFFIX: &'static str = "-dlt";

    /// Dead-letter topics named `<topic><suffix>`.
    ///
    /// Rejects an empty suffix (the dead-letter topic would be the topic itself) and characters
    /// Kafka does not allow in topic names (only ASCII letters, digits, `.`, `_` and `-`).
    pub fn with_suffix(suffix: impl Into<String>) -> Result<Self, ConfigError> {
        let suffix = suffix.into();
        if suffix.is_empty() {
            return Err(ConfigError::new(
                "dead_letter.suffix",
                "must not be empty: the dead-letter topic would be the topic itself",
            ));
        }
        if let Some(c) = suffix.chars().find(|c| !is_topic_char(*c)) {
            return Err(ConfigError::new(
                "dead_letter.suffix",
                format!(
                    "`{suffix}` contains `{c}`; topic names allow only ASCII letters, digits, `.`, `_` and `-`"
                ),
            ));
        }
        Ok(Self {
            naming: Naming::Suffix(suffix),
            ..Self::default()
        })
    }

    /// Dead-letter topics named by `name(topic)`. The result is checked on each
    /// [`route`](Self::route): an invalid name, or the topic itself, stops with
    /// [`StopReason::InvalidTarget`].
    ///
    /// With a function, a record is recognised as coming from a dead-letter topic only by its
    /// `kafka_dlt-original-topic` header (`name(original) == topic`), not by its topic's name.
    pub fn with_naming(name: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        Self {
            naming: Naming::Custom(Arc::new(name)),
            ..Self::default()
        }
    }

    /// What to do when a record read from a dead-letter topic fails again. Default
    /// [`DltFailureAction::Halt`].
    pub fn on_failure_in_dead_letter_topic(mut self, action: DltFailureAction) -> Self {
        self.on_failure_in_dlt = action;
        self
    }

    /// The dead-letter topic for `topic`, unchecked.
    pub fn topic_for(&self, topic: &str) -> String {
        match &self.naming {
            Naming::Suffix(suffix) => format!("{topic}{suffix}"),
            Naming::Custom(name) => name(topic),
        }
    }

    /// Whether a record read from `topic` with `headers` came from a dead-letter topic (see the
    /// module doc for the two rules).
    pub fn is_dead_letter_topic<I, K, V>(&self, topic: &str, headers: I) -> bool
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        if let Naming::Suffix(suffix) = &self.naming
            && topic.ends_with(suffix.as_str())
        {
            return true;
        }
        let original = headers
            .into_iter()
            .filter(|(k, _)| k.as_ref() == DeadLetterHeaders::ORIGINAL_TOPIC)
            .last()
            .and_then(|(_, v)| String::from_utf8(v.as_ref().to_vec()).ok());
        original.is_some_and(|original| original != topic && self.topic_for(&original) == topic)
    }

    /// Where a record read from `topic` with `headers` goes once it gave up.
    pub fn route<I, K, V>(&self, topic: &str, headers: I) -> DeadLetterRoute
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        if self.is_dead_letter_topic(topic, headers) {
            return DeadLetterRoute::Stop {
                reason: StopReason::AlreadyDeadLettered {
                    topic: topic.to_owned(),
                },
                action: self.on_failure_in_dlt,
            };
        }
        let target = self.topic_for(topic);
        match invalid_target(topic, &target) {
            Some(why) => DeadLetterRoute::Stop {
                reason: StopReason::InvalidTarget { target, why },
                action: DltFailureAction::Halt,
            },
            None => DeadLetterRoute::Produce { topic: target },
        }
    }
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Why `target` cannot be the dead-letter topic of `source`, if it cannot.
fn invalid_target(source: &str, target: &str) -> Option<String> {
    if target == source {
        return Some("it is the topic the record came from".to_owned());
    }
    if target.is_empty() || target == "." || target == ".." {
        return Some("Kafka does not allow this topic name".to_owned());
    }
    if target.len() > MAX_TOPIC_LEN {
        return Some(format!(
            "{} characters, Kafka allows at most {MAX_TOPIC_LEN}",
            target.len()
        ));
    }
    if let Some(c) = target.chars().find(|c| !is_topic_char(*c)) {
        return Some(format!(
            "contains `{c}`; topic names allow only ASCII letters, digits, `.`, `_` and `-`"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    type H = DeadLetterHeaders;

    fn sample() -> DeadLetterHeaders {
        DeadLetterHeaders::new(
            OriginalRecord {
                topic: "orders".into(),
                partition: 7,
                offset: 42,
                timestamp: 1_700_000_000_123,
                timestamp_type: TimestampType::CreateTime,
                consumer_group: Some("billing".into()),
            },
            ErrorDescription {
                type_name: "app::Error".into(),
                cause_type_name: Some("std::io::Error".into()),
                message: Some("downstream said 503".into()),
                stacktrace: "app::Error: downstream said 503\nCaused by: 503".into(),
            },
            10,
        )
    }

    fn decode_pairs(pairs: &[(String, Vec<u8>)]) -> Result<DeadLetterHeaders, HeaderDecodeError> {
        DeadLetterHeaders::decode(pairs.iter().map(|(k, v)| (k, v)))
    }

    #[test]
    fn each_header_has_the_exact_name_and_bytes() {
        let expected: Vec<(&str, Vec<u8>)> = vec![
            ("kafka_dlt-original-topic", b"orders".to_vec()),
            ("kafka_dlt-original-partition", vec![0, 0, 0, 7]),
            ("kafka_dlt-original-offset", vec![0, 0, 0, 0, 0, 0, 0, 42]),
            (
                "kafka_dlt-original-timestamp",
                vec![0, 0, 1, 139, 207, 229, 104, 123],
            ),
            ("kafka_dlt-original-timestamp-type", b"CreateTime".to_vec()),
            ("kafka_dlt-original-consumer-group", b"billing".to_vec()),
            ("kafka_dlt-exception-fqcn", b"app::Error".to_vec()),
            ("kafka_dlt-exception-cause-fqcn", b"std::io::Error".to_vec()),
            (
                "kafka_dlt-exception-message",
                b"downstream said 503".to_vec(),
            ),
            (
                "kafka_dlt-exception-stacktrace",
                b"app::Error: downstream said 503\nCaused by: 503".to_vec(),
            ),
            ("kafkit_dlt-attempts", vec![0, 0, 0, 10]),
        ];
        let encoded = sample().encode();
        let encoded: Vec<(&str, Vec<u8>)> = encoded
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        assert_eq!(encoded, expected);
    }

    #[test]
    fn negative_numbers_are_twos_complement_big_endian() {
        let mut h = sample();
        h.record.partition = -1;
        h.record.timestamp = -1;
        h.record.timestamp_type = TimestampType::NoTimestampType;
        let encoded: BTreeMap<String, Vec<u8>> = h.encode().into_iter().collect();
        assert_eq!(encoded[H::ORIGINAL_PARTITION], vec![0xff; 4]);
        assert_eq!(encoded[H::ORIGINAL_TIMESTAMP], vec![0xff; 8]);
        assert_eq!(encoded[H::ORIGINAL_TIMESTAMP_TYPE], b"NoTimestampType");
    }

    #[test]
    fn optional_headers_are_left_out_when_absent() {
        let mut h = sample();
        h.record.consumer_group = None;
        h.error.cause_type_name = None;
        let names: Vec<String> = h.encode().into_iter().map(|(k, _)| k).collect();
        assert!(!names.iter().any(|n| n == H::ORIGINAL_CONSUMER_GROUP));
        assert!(!names.iter().any(|n| n == H::EXCEPTION_CAUSE_FQCN));
        assert_eq!(names.len(), 9);
    }

    #[test]
    fn attempts_beyond_i32_saturate() {
        let mut h = sample();
        h.attempts = Some(u32::MAX);
        let encoded: BTreeMap<String, Vec<u8>> = h.encode().into_iter().collect();
        assert_eq!(encoded[H::ATTEMPTS], i32::MAX.to_be_bytes());
    }

    #[test]
    fn decodes_from_a_btreemap() {
        let map: BTreeMap<String, Vec<u8>> = sample().encode().into_iter().collect();
        assert_eq!(DeadLetterHeaders::decode(&map).unwrap(), sample());
    }

    #[test]
    fn decodes_spring_headers_without_kafkit_extras() {
        // What Spring writes for an exception without a cause, outside a group.
        let spring: Vec<(String, Vec<u8>)> = vec![
            (H::ORIGINAL_TOPIC.into(), b"payments".to_vec()),
            (H::ORIGINAL_PARTITION.into(), vec![0, 0, 0, 2]),
            (H::ORIGINAL_OFFSET.into(), vec![0, 0, 0, 0, 0, 0, 1, 0]),
            (H::ORIGINAL_TIMESTAMP.into(), vec![0, 0, 0, 0, 0, 0, 0, 5]),
            (H::ORIGINAL_TIMESTAMP_TYPE.into(), b"LogAppendTime".to_vec()),
            (
                H::EXCEPTION_FQCN.into(),
                b"java.lang.IllegalStateException".to_vec(),
            ),
            (
                H::EXCEPTION_STACKTRACE.into(),
                b"java.lang.IllegalStateException\n\tat ...".to_vec(),
            ),
            ("traceparent".into(), b"00-abc".to_vec()),
        ];
        let h = decode_pairs(&spring).unwrap();
        assert_eq!(h.record.topic, "payments");
        assert_eq!(h.record.partition, 2);
        assert_eq!(h.record.offset, 256);
        assert_eq!(h.record.timestamp, 5);
        assert_eq!(h.record.timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(h.record.consumer_group, None);
        assert_eq!(h.error.type_name, "java.lang.IllegalStateException");
        assert_eq!(h.error.cause_type_name, None);
        assert_eq!(h.error.message, None);
        assert_eq!(h.attempts, None);
    }

    #[test]
    fn the_last_occurrence_of_a_header_wins() {
        let mut pairs = sample().encode();
        pairs.push((H::EXCEPTION_MESSAGE.into(), b"second failure".to_vec()));
        pairs.push((H::ATTEMPTS.into(), vec![0, 0, 0, 3]));
        let h = decode_pairs(&pairs).unwrap();
        assert_eq!(h.error.message.as_deref(), Some("second failure"));
        assert_eq!(h.attempts, Some(3));
    }

    #[test]
    fn malformed_headers_are_reported_by_name() {
        let with = |name: &str, value: Vec<u8>| {
            let mut pairs = sample().encode();
            pairs.retain(|(k, _)| k != name);
            pairs.push((name.to_owned(), value));
            pairs
        };
        let without = |name: &str| {
            let mut pairs = sample().encode();
            pairs.retain(|(k, _)| k != name);
            pairs
        };
        let cases = [
            (
                without(H::ORIGINAL_TOPIC),
                HeaderDecodeError::Missing {
                    header: H::ORIGINAL_TOPIC,
                },
            ),
            (
                without(H::ORIGINAL_PARTITION),
                HeaderDecodeError::Missing {
                    header: H::ORIGINAL_PARTITION,
                },
            ),
            (
                without(H::ORIGINAL_OFFSET),
                HeaderDecodeError::Missing {
                    header: H::ORIGINAL_OFFSET,
                },
            ),
            (
                with(H::ORIGINAL_PARTITION, vec![0, 0, 0, 0, 0, 0, 0, 7]),
                HeaderDecodeError::WrongLength {
                    header: H::ORIGINAL_PARTITION,
                    expected: 4,
                    actual: 8,
                },
            ),
            (
                with(H::ORIGINAL_OFFSET, vec![42]),
                HeaderDecodeError::WrongLength {
                    header: H::ORIGINAL_OFFSET,
                    expected: 8,
                    actual: 1,
                },
            ),
            (
                with(H::ORIGINAL_TIMESTAMP, vec![0; 4]),
                HeaderDecodeError::WrongLength {
                    header: H::ORIGINAL_TIMESTAMP,
                    expected: 8,
                    actual: 4,
                },
            ),
            (
                with(H::ORIGINAL_TOPIC, vec![0xff, 0xfe]),
                HeaderDecodeError::NotUtf8 {
                    header: H::ORIGINAL_TOPIC,
                },
            ),
            (
                with(H::ORIGINAL_TIMESTAMP_TYPE, b"WallClock".to_vec()),
                HeaderDecodeError::InvalidValue {
                    header: H::ORIGINAL_TIMESTAMP_TYPE,
                    value: "WallClock".into(),
                    expected: "CreateTime, LogAppendTime or NoTimestampType",
                },
            ),
            (
                with(H::ATTEMPTS, (-3i32).to_be_bytes().to_vec()),
                HeaderDecodeError::InvalidValue {
                    header: H::ATTEMPTS,
                    value: "-3".into(),
                    expected: "a non-negative attempt count",
                },
            ),
        ];
        for (pairs, expected) in cases {
            let err = decode_pairs(&pairs).unwrap_err();
            assert_eq!(err, expected);
        }
    }

    #[derive(Debug)]
    struct Inner;
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("connection refused")
        }
    }
    impl Error for Inner {}

    #[derive(Debug)]
    struct Middle(Inner);
    impl fmt::Display for Middle {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("inventory service unavailable")
        }
    }
    impl Error for Middle {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[derive(Debug)]
    struct Outer(Middle);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("could not reserve stock")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn error_description_walks_the_source_chain() {
        let d = ErrorDescription::of(&Outer(Middle(Inner)));
        let name = std::any::type_name::<Outer>();
        assert_eq!(d.type_name, name);
        assert!(name.ends_with("Outer"));
        assert_eq!(d.message.as_deref(), Some("could not reserve stock"));
        assert_eq!(
            d.stacktrace,
            format!(
                "{name}: could not reserve stock\n\
                 Caused by: inventory service unavailable\n\
                 Caused by: connection refused"
            )
        );
        assert_eq!(d.cause_type_name, None);
        let d = d.with_cause_type_name("app::Middle");
        assert_eq!(d.cause_type_name.as_deref(), Some("app::Middle"));
    }

    #[test]
    fn error_description_of_a_boxed_error() {
        let boxed: Box<dyn Error + Send + Sync> = Box::new(Inner);
        let d = ErrorDescription::of_dyn("app::Inner", boxed.as_ref());
        assert_eq!(d.stacktrace, "app::Inner: connection refused");
    }

    fn no_headers() -> [(&'static str, &'static [u8]); 0] {
        []
    }

    fn produce(topic: &str) -> DeadLetterRoute {
        DeadLetterRoute::Produce {
            topic: topic.into(),
        }
    }

    fn already(topic: &str, action: DltFailureAction) -> DeadLetterRoute {
        DeadLetterRoute::Stop {
            reason: StopReason::AlreadyDeadLettered {
                topic: topic.into(),
            },
            action,
        }
    }

    /// Policy, topic read from, headers, expected route.
    type RouteCase<'a> = (
        &'a DeadLetterPolicy,
        &'a str,
        Vec<(String, Vec<u8>)>,
        DeadLetterRoute,
    );

    #[test]
    fn routing_table() {
        let default = DeadLetterPolicy::default();
        let skip =
            DeadLetterPolicy::default().on_failure_in_dead_letter_topic(DltFailureAction::Skip);
        let dots = DeadLetterPolicy::with_suffix(".DLT").unwrap();
        let custom = DeadLetterPolicy::with_naming(|t| format!("dead.{t}"));
        let from =
            |original: &str| vec![(H::ORIGINAL_TOPIC.to_owned(), original.as_bytes().to_vec())];
        let cases: Vec<RouteCase<'_>> = vec![
            (&default, "orders", vec![], produce("orders-dlt")),
            (
                &default,
                "orders-dlt",
                vec![],
                already("orders-dlt", DltFailureAction::Halt),
            ),
            (
                &skip,
                "orders-dlt",
                vec![],
                already("orders-dlt", DltFailureAction::Skip),
            ),
            // A replay onto the original topic carries the headers but is dead-lettered again.
            (&default, "orders", from("orders"), produce("orders-dlt")),
            (&dots, "orders", vec![], produce("orders.DLT")),
            (
                &dots,
                "orders.DLT",
                vec![],
                already("orders.DLT", DltFailureAction::Halt),
            ),
            // Another scheme's dead-letter topic is not recognised: one more hop, into ours,
            // which is then recognised by its suffix.
            (
                &dots,
                "orders-dlt",
                from("orders"),
                produce("orders-dlt.DLT"),
            ),
            (&custom, "orders", vec![], produce("dead.orders")),
            (
                &custom,
                "dead.orders",
                from("orders"),
                already("dead.orders", DltFailureAction::Halt),
            ),
            // Without the header a function-named dead-letter topic cannot be recognised.
            (&custom, "dead.orders", vec![], produce("dead.dead.orders")),
        ];
        for (policy, topic, headers, expected) in cases {
            let route = policy.route(topic, headers.iter().map(|(k, v)| (k, v)));
            assert_eq!(route, expected, "{policy:?} on {topic}");
        }
    }

    #[test]
    fn unusable_targets_halt() {
        let same = DeadLetterPolicy::with_naming(|t| t.to_owned());
        let slash = DeadLetterPolicy::with_naming(|t| format!("dlt/{t}"));
        let long_topic = "t".repeat(MAX_TOPIC_LEN);
        let cases = [
            (
                same.route("orders", no_headers()),
                "it is the topic the record came from".to_owned(),
            ),
            (
                slash.route("orders", no_headers()),
                "contains `/`; topic names allow only ASCII letters, digits, `.`, `_` and `-`"
                    .to_owned(),
            ),
            (
                DeadLetterPolicy::default().route(&long_topic, no_headers()),
                format!("{} characters, Kafka allows at most 249", MAX_TOPIC_LEN + 4),
            ),
        ];
        for (route, why) in cases {
            let DeadLetterRoute::Stop {
                reason: StopReason::InvalidTarget { why: got, .. },
                action,
            } = route
            else {
                panic!("expected InvalidTarget, got {route:?}");
            };
            assert_eq!(got, why);
            assert_eq!(action, DltFailureAction::Halt);
        }
    }

    #[test]
    fn suffix_is_validated() {
        for bad in ["", "/dlt", "-dlt!", " dlt"] {
            let err = DeadLetterPolicy::with_suffix(bad).unwrap_err();
            assert_eq!(err.setting, "dead_letter.suffix", "{bad:?}");
        }
        assert_eq!(
            DeadLetterPolicy::with_suffix("_DLQ")
                .unwrap()
                .topic_for("a"),
            "a_DLQ"
        );
    }

    #[test]
    fn dead_letter_header_names_are_recognised() {
        for (name, _) in sample().encode() {
            assert!(DeadLetterHeaders::is_dead_letter_header(&name), "{name}");
        }
        assert!(!DeadLetterHeaders::is_dead_letter_header("traceparent"));
        assert!(!DeadLetterHeaders::is_dead_letter_header(
            "kafka_correlationId"
        ));
    }

    fn arb_headers() -> impl Strategy<Value = DeadLetterHeaders> {
        let record = (
            "[a-zA-Z0-9._-]{1,40}",
            any::<i32>(),
            any::<i64>(),
            any::<i64>(),
            prop_oneof![
                Just(TimestampType::CreateTime),
                Just(TimestampType::LogAppendTime),
                Just(TimestampType::NoTimestampType),
            ],
            proptest::option::of(".{0,20}"),
        )
            .prop_map(
                |(topic, partition, offset, timestamp, timestamp_type, consumer_group)| {
                    OriginalRecord {
                        topic,
                        partition,
                        offset,
                        timestamp,
                        timestamp_type,
                        consumer_group,
                    }
                },
            );
        let error = (
            ".{0,30}",
            proptest::option::of(".{0,30}"),
            proptest::option::of(".{0,60}"),
            ".{0,200}",
        )
            .prop_map(|(type_name, cause_type_name, message, stacktrace)| {
                ErrorDescription {
                    type_name,
                    cause_type_name,
                    message,
                    stacktrace,
                }
            });
        (record, error, proptest::option::of(0..=i32::MAX as u32)).prop_map(
            |(record, error, attempts)| DeadLetterHeaders {
                record,
                error,
                attempts,
            },
        )
    }

    proptest! {
        #[test]
        fn headers_round_trip(h in arb_headers()) {
            let encoded = h.encode();
            prop_assert_eq!(decode_pairs(&encoded).unwrap(), h);
        }
    }
}
