//! Tracing of consumed records: W3C Trace Context `traceparent` headers, and the per-record span the
//! consumer opens around each handler call.
//!
//! **The span.** Each record a handler processes runs inside a span named `kafkit.record` at DEBUG
//! level with target `kafkit::record`, with fields `topic`, `partition`, `offset`, `key_hash` (the
//! key's murmur2 hash, the one the partitioner uses, so keys never reach the logs) and, when the
//! record carries a valid `traceparent` header, `trace_id`, `parent_span_id` and `sampled`. It
//! covers every attempt of the record (retries and dead-lettering included), so the failure path's
//! own logs carry the record's fields. Turn it on with a filter such as `kafkit::record=debug`.
//! When no subscriber wants it the span is never built: the hot path pays one check of the
//! callsite's cached interest per record and nothing else (no header scan, no hash).
//!
//! **Propagation.** No OpenTelemetry dependency: a consumed record's [`Traceparent`] is parsed on
//! demand ([`ConsumedRecord::traceparent`](crate::consumer::ConsumedRecord::traceparent)), and a
//! produced record gets one with
//! [`ProducerRecord::with_traceparent`](crate::ProducerRecord::with_traceparent). With
//! `tracing-opentelemetry`, an application links the spans itself, e.g. by building its OTel
//! context from [`Traceparent::trace_id`] and [`Traceparent::parent_id`].

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;

use tracing::field::{Empty, display};
use tracing::{Level, Span};

use crate::consumer::ConsumedRecord;

/// A W3C Trace Context `traceparent` header value (version `00`):
/// `00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>`.
///
/// Parsing follows the specification's rules for receivers: lowercase hex only, all-zero ids and
/// version `ff` are invalid, a version-00 value is exactly 55 characters, and a value of a later
/// version is read for its first four fields (it may have more, after a `-`).
///
/// ```
/// use kafkit_core::Traceparent;
///
/// let tp: Traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap();
/// assert!(tp.is_sampled());
/// assert_eq!(tp.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// // The next hop: same trace, a new span id.
/// let next = tp.child();
/// assert_eq!(next.trace_id(), tp.trace_id());
/// assert_ne!(next.parent_id(), tp.parent_id());
/// assert!("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse::<Traceparent>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Traceparent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

/// Why a `traceparent` value was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceparentError {
    /// Not 55 characters (version 00), or shorter than 55 or not followed by `-` (later versions).
    #[error("traceparent has the wrong length")]
    Length,
    /// A field is not lowercase hex, or a `-` is missing.
    #[error("traceparent is not four lowercase hex fields separated by '-'")]
    Format,
    /// Version `ff`, which the specification forbids.
    #[error("traceparent version ff is invalid")]
    Version,
    /// The trace id or parent id is all zeros.
    #[error("traceparent has an all-zero trace id or parent id")]
    ZeroId,
}

impl Traceparent {
    /// The header's name, as the W3C specification writes it.
    pub const HEADER: &'static str = "traceparent";

    /// A `traceparent` for span `parent_id` of trace `trace_id`; `None` if either id is all zeros
    /// (invalid by the specification).
    pub fn new(trace_id: [u8; 16], parent_id: [u8; 8], sampled: bool) -> Option<Self> {
        (trace_id != [0; 16] && parent_id != [0; 8]).then_some(Self {
            trace_id,
            parent_id,
            flags: u8::from(sampled),
        })
    }

    /// A new trace: random trace and span ids.
    pub fn new_root(sampled: bool) -> Self {
        let mut trace_id = [0; 16];
        trace_id[..8].copy_from_slice(&random_nonzero().to_be_bytes());
        trace_id[8..].copy_from_slice(&random_nonzero().to_be_bytes());
        Self {
            trace_id,
            parent_id: random_nonzero().to_be_bytes(),
            flags: u8::from(sampled),
        }
    }

    /// The same trace with a new random span id: what a hop that produces onwards sends.
    pub fn child(&self) -> Self {
        Self {
            parent_id: random_nonzero().to_be_bytes(),
            ..*self
        }
    }

    /// Parses a header value (bytes, as Kafka headers are).
    pub fn parse(value: &[u8]) -> Result<Self, TraceparentError> {
        if value.len() < 55 {
            return Err(TraceparentError::Length);
        }
        let version = hex::<1>(&value[0..2])?[0];
        if version == 0xff {
            return Err(TraceparentError::Version);
        }
        if (version == 0 && value.len() != 55) || (value.len() > 55 && value[55] != b'-') {
            return Err(TraceparentError::Length);
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return Err(TraceparentError::Format);
        }
        let trace_id = hex::<16>(&value[3..35])?;
        let parent_id = hex::<8>(&value[36..52])?;
        let flags = hex::<1>(&value[53..55])?[0];
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return Err(TraceparentError::ZeroId);
        }
        Ok(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The id of the span that sent the record (the caller's span).
    pub fn parent_id(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The trace flags byte (version 00 defines only bit 0, `sampled`).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the caller recorded its span (flag bit 0).
    pub fn is_sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

impl FromStr for Traceparent {
    type Err = TraceparentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s.as_bytes())
    }
}

impl fmt::Display for Traceparent {
    /// The version-00 header value (later versions are written as 00, as the specification asks).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            Hex(&self.trace_id),
            Hex(&self.parent_id),
            self.flags
        )
    }
}

impl fmt::Debug for Traceparent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Traceparent({self})")
    }
}

/// Lowercase hex of some bytes, written without allocating.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Decodes `2 * N` lowercase hex digits.
fn hex<const N: usize>(digits: &[u8]) -> Result<[u8; N], TraceparentError> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(TraceparentError::Format),
    };
    let mut out = [0; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Ok(out)
}

/// A random non-zero u64 for span and trace ids, from the standard library's randomly keyed
/// SipHash (`RandomState`: OS randomness per thread, a fresh key each call) over a counter: ids
/// need to be unique, not secret, and this needs no extra dependency.
fn random_nonzero() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let value = hasher.finish();
        if value != 0 {
            return value;
        }
    }
}

/// The span a record's processing runs in (see the module documentation); [`Span::none`] unless a
/// subscriber wants DEBUG spans of target `kafkit::record`, in which case nothing is computed.
pub(crate) fn record_span(record: &ConsumedRecord) -> Span {
    if !tracing::enabled!(target: "kafkit::record", Level::DEBUG) {
        return Span::none();
    }
    let span = tracing::debug_span!(
        target: "kafkit::record",
        "kafkit.record",
        topic = record.topic(),
        partition = record.partition(),
        offset = record.offset(),
        key_hash = Empty,
        trace_id = Empty,
        parent_span_id = Empty,
        sampled = Empty,
    );
    if let Some(key) = record.key() {
        span.record("key_hash", crate::partitioner::murmur2(key));
    }
    if let Some(tp) = record.traceparent() {
        span.record("trace_id", display(Hex(&tp.trace_id)));
        span.record("parent_span_id", display(Hex(&tp.parent_id)));
        span.record("sampled", tp.is_sampled());
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_valid_values() {
        let tp: Traceparent = VALID.parse().unwrap();
        assert_eq!(tp.trace_id()[0], 0x4b);
        assert_eq!(tp.trace_id()[15], 0x36);
        assert_eq!(
            tp.parent_id(),
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!((tp.flags(), tp.is_sampled()), (1, true));
        assert_eq!(tp.to_string(), VALID);
        let unsampled = VALID.replace("-01", "-00");
        let tp: Traceparent = unsampled.parse().unwrap();
        assert!(!tp.is_sampled());
        assert_eq!(tp.to_string(), unsampled);
        // Unknown flag bits are kept.
        assert_eq!(
            VALID
                .replace("-01", "-09")
                .parse::<Traceparent>()
                .unwrap()
                .flags(),
            9
        );
        // A later version: read for its first four fields, written as 00.
        let v1 = format!("01{}-what-comes-next", &VALID[2..]);
        assert_eq!(v1.parse::<Traceparent>().unwrap().to_string(), VALID);
        let v1_exact = format!("cc{}", &VALID[2..]);
        assert!(v1_exact.parse::<Traceparent>().is_ok());
    }

    #[test]
    fn rejects_invalid_values() {
        let cases: [(&str, TraceparentError); 12] = [
            ("", TraceparentError::Length),
            (&VALID[..54], TraceparentError::Length),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                TraceparentError::Length,
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                TraceparentError::Length,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceparentError::Version,
            ),
            (
                "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceparentError::Format,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                TraceparentError::Format,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceparentError::Format,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736+00f067aa0ba902b7-01",
                TraceparentError::Format,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z",
                TraceparentError::Format,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                TraceparentError::ZeroId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                TraceparentError::ZeroId,
            ),
        ];
        for (value, error) in cases {
            assert_eq!(value.parse::<Traceparent>(), Err(error), "{value:?}");
        }
    }

    #[test]
    fn new_ids_are_valid_and_distinct() {
        assert!(Traceparent::new([0; 16], [1; 8], true).is_none());
        assert!(Traceparent::new([1; 16], [0; 8], true).is_none());
        let given = Traceparent::new([1; 16], [2; 8], false).unwrap();
        assert_eq!(given.to_string().parse::<Traceparent>(), Ok(given));
        let root = Traceparent::new_root(true);
        let children: Vec<_> = (0..100).map(|_| root.child()).collect();
        for child in &children {
            assert_eq!(child.trace_id(), root.trace_id());
            assert_eq!(child.flags(), 1);
            assert_eq!(child.to_string().parse::<Traceparent>(), Ok(*child));
        }
        let ids: std::collections::HashSet<_> = children.iter().map(|c| c.parent_id()).collect();
        assert_eq!(ids.len(), 100);
        assert_ne!(Traceparent::new_root(true).trace_id(), root.trace_id());
    }
}
