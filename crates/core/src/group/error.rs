//! Errors of the group layer's codecs.

/// `Result` with the group layer's [`GroupError`].
pub(crate) type Result<T, E = GroupError> = std::result::Result<T, E>;

/// A ConsumerProtocol message could not be read or written.
///
/// Decoding errors mean a member of the group sent metadata that is not a consumer-protocol
/// message (or a corrupt one); they are not retriable, the member has to be fixed or removed.
/// `message` is `"subscription"` or `"assignment"`; `field` is the field's name in Kafka's
/// message spec (`ConsumerProtocolSubscription.json`), so errors read like the Java client's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The 2-byte header carried a negative version. Versions above the newest known one are not
    /// an error: they are read with the newest layout, as Java does.
    #[error("unsupported consumer protocol {message} version {version}; versions start at 0")]
    UnsupportedVersion {
        /// `"subscription"` or `"assignment"`.
        message: &'static str,
        /// The version found (or asked for when encoding).
        version: i16,
    },

    /// The bytes ended in the middle of a field.
    #[error(
        "consumer protocol {message} is truncated: field `{field}` needs {needed} bytes, {remaining} left"
    )]
    Truncated {
        /// `"subscription"` or `"assignment"`.
        message: &'static str,
        /// The field being read.
        field: &'static str,
        /// Bytes the field needed.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },

    /// A field that may not be null carried a negative length.
    #[error(
        "consumer protocol {message}: non-nullable field `{field}` was serialized as null (length {length})"
    )]
    NullField {
        /// `"subscription"` or `"assignment"`.
        message: &'static str,
        /// The field.
        field: &'static str,
        /// The negative length found.
        length: i32,
    },

    /// An array claimed more elements than there are bytes left; rejected before allocating,
    /// exactly like Java's "Tried to allocate a collection of size ..." check.
    #[error(
        "consumer protocol {message}: field `{field}` claims {length} elements but only {remaining} bytes are left"
    )]
    CollectionTooLarge {
        /// `"subscription"` or `"assignment"`.
        message: &'static str,
        /// The array field.
        field: &'static str,
        /// The element count found.
        length: i32,
        /// Bytes that were left.
        remaining: usize,
    },

    /// A value does not fit the wire format (a topic or rack id over 32767 bytes, user data over
    /// 2 GiB).
    #[error("encoding consumer protocol {message} v{version} failed: {reason}")]
    Encode {
        /// `"subscription"` or `"assignment"`.
        message: &'static str,
        /// The version being written.
        version: i16,
        /// What did not fit, from the encoder.
        reason: String,
    },
}
