//! The error type of kafkit-core.

use std::time::Duration;

use kafkit_resilience::ConfigError;

use crate::group::GroupError;
use crate::wire::WireError;

/// `Result` with kafkit-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, on which topic/partition, and whether retrying can help ([`Error::is_retriable`]).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting was rejected when the client was built.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// No bootstrap broker answered within the connect timeout.
    #[error(
        "no broker reachable at {bootstrap} after {waited:?}; check that Kafka is running and the address is right"
    )]
    Unreachable {
        /// The bootstrap servers that were tried.
        bootstrap: String,
        /// How long kafkit kept trying.
        waited: Duration,
    },

    /// The topic does not exist (kafkit never relies on broker-side auto-creation).
    #[error("topic `{topic}` does not exist; create it first (e.g. `kafkit topics create`)")]
    UnknownTopic {
        /// The topic named by the caller.
        topic: String,
    },

    /// A record named a partition the topic does not have.
    #[error(
        "partition {partition} does not exist in topic `{topic}`, which has {partitions} partitions"
    )]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
        /// How many partitions the topic has.
        partitions: i32,
    },

    /// A record is larger than the producer's whole buffer and could never be sent.
    #[error(
        "record of {size} bytes for topic `{topic}` exceeds the producer buffer of {capacity} bytes (`buffer.memory`)"
    )]
    RecordTooLarge {
        /// The topic.
        topic: String,
        /// The record's approximate size.
        size: usize,
        /// The configured buffer size.
        capacity: usize,
    },

    /// A fetched record batch could not be decoded and the consumer's
    /// [`CorruptBatchPolicy`](crate::consumer::CorruptBatchPolicy) is `Stop`.
    #[error("undecodable record batch in {partition} at offset {offset}: {reason}")]
    CorruptBatch {
        /// `topic-partition`.
        partition: String,
        /// The offset the batch starts at.
        offset: i64,
        /// What is wrong with it.
        reason: String,
    },

    /// A record the producer cannot send as it is (the reason names the part).
    #[error("invalid record: {reason}")]
    InvalidRecord {
        /// What is wrong with it.
        reason: String,
    },

    /// The delivery timeout passed before the broker acknowledged the record. The outcome is unknown:
    /// the record may have been written. At-least-once callers send it again.
    #[error(
        "delivery to {topic}/{partition} not acknowledged within {timeout:?} (`delivery.timeout.ms`); the record may or may not have been written"
    )]
    DeliveryTimeout {
        /// The topic.
        topic: String,
        /// The partition the record was sent to.
        partition: i32,
        /// The delivery timeout.
        timeout: Duration,
    },

    /// The broker rejected a batch of records, or its retries (`retries`) ran out.
    #[error("producing to {topic}/{partition} failed: {error}")]
    Produce {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Kafka's name for the error, its code and the broker's message, or the last failure.
        error: String,
        /// Whether sending again may succeed (the retries ran out on a retriable error).
        retriable: bool,
    },

    /// `send` waited `max.block.ms` for room in the producer's buffer (`buffer.memory`).
    #[error(
        "no room in the producer buffer of {capacity} bytes within {waited:?} (`max.block.ms`): the brokers take records slower than they are sent"
    )]
    BufferExhausted {
        /// `buffer.memory`.
        capacity: usize,
        /// `max.block.ms`.
        waited: Duration,
    },

    /// A broker refused this client's security handshake: wrong SASL credentials or mechanism, an
    /// untrusted certificate, or a `security.protocol` that does not fit the listener. Not
    /// retriable: the settings need fixing.
    #[error("{context}: {source}")]
    Security {
        /// What kafkit was doing.
        context: String,
        /// The handshake's failure.
        #[source]
        source: WireError,
    },

    /// A kafkit connection to a broker failed or a request timed out.
    #[error("{context}: {source}")]
    Connection {
        /// What kafkit was doing.
        context: String,
        /// What went wrong on the connection.
        #[source]
        source: WireError,
    },

    /// The group coordinator answered a group request with an error code.
    #[error("group `{group}`: {operation} failed: {error} (error code {code})")]
    Group {
        /// The group id.
        group: String,
        /// The request (JoinGroup, SyncGroup, OffsetCommit, ...).
        operation: &'static str,
        /// Kafka's error code.
        code: i16,
        /// Kafka's name for the error and, if any, the broker's message.
        error: String,
    },

    /// A broker answered an admin request (topics, groups listing, offsets) with an error code.
    #[error("{operation} for {target} failed: {error} (error code {code})")]
    Admin {
        /// The request (CreateTopics, DeleteTopics, ListGroups, ListOffsets, Metadata).
        operation: &'static str,
        /// What it was about: a topic, a partition, a broker.
        target: String,
        /// Kafka's error code.
        code: i16,
        /// Kafka's name for the error and, if any, the broker's message.
        error: String,
    },

    /// A consumer-protocol message (subscription or assignment) could not be read or written.
    #[error(transparent)]
    Protocol(#[from] GroupError),

    /// A partition has no committed offset and `auto.offset.reset` is `none`.
    #[error(
        "partition {partition} has no committed offset and auto.offset.reset is none; commit an offset for the group (e.g. with kafka-consumer-groups --reset-offsets) or choose earliest/latest"
    )]
    NoOffset {
        /// The partition, `topic-partition`.
        partition: String,
    },

    /// A transactional producer's operation failed; [`TransactionErrorKind`] says what the
    /// producer can do next (as the Java client's exception classes do).
    #[error("transactional id `{transactional_id}`: {operation} failed: {reason}; {kind}")]
    Transaction {
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// The call or request that failed (`commit_transaction`, EndTxn, Produce, ...).
        operation: &'static str,
        /// Fenced, fatal, abortable, wrong state, or timed out.
        kind: TransactionErrorKind,
        /// Kafka's name for the error and the broker's message, or what went wrong.
        reason: String,
    },

    /// The client was closed.
    #[error("the {what} is closed")]
    Closed {
        /// Which client.
        what: &'static str,
    },
}

/// What a transactional producer can do after an [`Error::Transaction`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransactionErrorKind {
    /// Another producer with the same `transactional.id` has initialized since (PRODUCER_FENCED,
    /// INVALID_PRODUCER_EPOCH): this producer is a zombie and unusable. Java's
    /// `ProducerFencedException`.
    Fenced,
    /// The producer is unusable (TRANSACTIONAL_ID_AUTHORIZATION_FAILED, INVALID_TXN_STATE, an
    /// unexpected error): close it. Java's fatal `KafkaException`s.
    Fatal,
    /// The transaction cannot commit (a record was not written, an offset commit was refused):
    /// call `abort_transaction`, then begin a new one.
    Abortable,
    /// The call is not allowed in the producer's current transaction state (e.g. `send` before
    /// `begin_transaction`). Java's `IllegalStateException`.
    InvalidState,
    /// The call did not finish within `max.block.ms`; its outcome is unknown and the same call
    /// may be made again. Java's `TimeoutException`.
    Timeout,
}

impl std::fmt::Display for TransactionErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransactionErrorKind::Fenced => {
                "the producer is fenced: another producer with this transactional.id took over; this one is unusable, close it"
            }
            TransactionErrorKind::Fatal => "the producer is unusable; close it",
            TransactionErrorKind::Abortable => {
                "the transaction must be aborted (abort_transaction), then a new one begun"
            }
            TransactionErrorKind::InvalidState => {
                "not allowed in the producer's transaction state"
            }
            TransactionErrorKind::Timeout => "the outcome is unknown; the same call may be made again",
        })
    }
}

impl Error {
    /// The kind of a transactional producer's error, `None` for other errors.
    pub fn transaction_kind(&self) -> Option<TransactionErrorKind> {
        match self {
            Error::Transaction { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Whether the same operation may succeed if tried again later (a broker restarting, a leader
    /// moving, a timeout with an unknown outcome). Configuration errors and rejected records are not.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Unreachable { .. }
            | Error::DeliveryTimeout { .. }
            | Error::BufferExhausted { .. } => true,
            Error::Produce { retriable, .. } => *retriable,
            Error::Transaction { kind, .. } => *kind == TransactionErrorKind::Timeout,
            Error::Connection { source, .. } => source.is_retriable(),
            Error::Group { code, .. } | Error::Admin { code, .. } => {
                kafka_protocol::ResponseError::try_from_code(*code)
                    .is_some_and(|e| e.is_retriable())
            }
            Error::Config(_)
            | Error::Security { .. }
            | Error::UnknownTopic { .. }
            | Error::UnknownPartition { .. }
            | Error::RecordTooLarge { .. }
            | Error::InvalidRecord { .. }
            | Error::CorruptBatch { .. }
            | Error::Protocol(_)
            | Error::NoOffset { .. }
            | Error::Closed { .. } => false,
        }
    }
}
