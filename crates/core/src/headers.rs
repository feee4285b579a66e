//! Record headers as Kafka defines them: an ordered list of (name, optional value).
//!
//! A record may carry the same header name more than once, and a header's value may be null; both
//! are kept, in the order they were written, as the Java client's `Headers` keeps them (Spring's
//! dead-letter headers and tracing propagators rely on it). Names are UTF-8 by Kafka's rules, but
//! any producer can write other bytes: they are kept as written and read lossily through
//! [`Header::name`] (as the Java client decodes them), so such a record is consumed like any other.
//!
//! Consumed headers are zero-copy: names and values are slices of the fetched response, like keys
//! and values.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

/// One record header: a name and a value that may be null.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Header {
    name: Bytes,
    value: Option<Bytes>,
}

impl Header {
    /// A header named `name` with `value`.
    pub fn new(name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            name: Bytes::from(name.into()),
            value: Some(value.into()),
        }
    }

    /// A header named `name` with a null value (not the same as an empty one).
    pub fn null(name: impl Into<String>) -> Self {
        Self {
            name: Bytes::from(name.into()),
            value: None,
        }
    }

    /// A header whose name is given as raw bytes (which Kafka says are UTF-8, but which are kept
    /// as they are either way).
    pub fn from_raw(name: Bytes, value: Option<Bytes>) -> Self {
        Self { name, value }
    }

    /// The name, decoded as UTF-8; bytes that are not UTF-8 are replaced with U+FFFD (borrowed,
    /// without a copy, when the name is valid UTF-8).
    pub fn name(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }

    /// The name as written.
    pub fn name_bytes(&self) -> &[u8] {
        &self.name
    }

    /// The value; `None` for a null value (which is not the same as an empty one).
    pub fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    /// The value as shared bytes (a reference count, no copy).
    pub fn value_bytes(&self) -> Option<&Bytes> {
        self.value.as_ref()
    }

    /// Whether the header is named `name` (compared as bytes).
    pub fn is_named(&self, name: &str) -> bool {
        self.name.as_ref() == name.as_bytes()
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("name", &self.name())
            .field("value", &self.value.as_deref().map(String::from_utf8_lossy))
            .finish()
    }
}

/// The headers of a record, in the order they were written, duplicates and null values included.
///
/// ```
/// use kafkit_core::Headers;
/// let mut headers = Headers::new();
/// headers.add("trace", "a");
/// headers.add("trace", "b");
/// headers.add_null("tombstone-reason");
/// assert_eq!(headers.len(), 3);
/// // `get` is the last header of that name, as Java's `Headers.lastHeader`.
/// assert_eq!(headers.get("trace").and_then(|h| h.value()), Some(&b"b"[..]));
/// assert_eq!(headers.get_all("trace").count(), 2);
/// assert_eq!(headers.get("tombstone-reason").map(|h| h.value()), Some(None));
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Headers {
    list: Vec<Header>,
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `capacity` headers.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            list: Vec::with_capacity(capacity),
        }
    }

    /// Appends a header with a value (after any others of the same name).
    pub fn add(&mut self, name: impl Into<String>, value: impl Into<Bytes>) -> &mut Self {
        self.list.push(Header::new(name, value));
        self
    }

    /// Appends a header with a null value.
    pub fn add_null(&mut self, name: impl Into<String>) -> &mut Self {
        self.list.push(Header::null(name));
        self
    }

    /// Appends `header`.
    pub fn push(&mut self, header: Header) -> &mut Self {
        self.list.push(header);
        self
    }

    /// The last header named `name`, as Java's `Headers.lastHeader`; `None` when there is none.
    pub fn get(&self, name: &str) -> Option<&Header> {
        self.list.iter().rev().find(|h| h.is_named(name))
    }

    /// Every header named `name`, in the order written.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Header> + 'a {
        self.list.iter().filter(move |h| h.is_named(name))
    }

    /// The last `traceparent` header, parsed; `None` if there is none or it is invalid.
    pub fn traceparent(&self) -> Option<crate::Traceparent> {
        let value = self.get(crate::Traceparent::HEADER)?.value()?;
        crate::Traceparent::parse(value).ok()
    }

    /// Replaces any `traceparent` header with `traceparent`.
    pub fn set_traceparent(&mut self, traceparent: crate::Traceparent) -> &mut Self {
        self.remove(crate::Traceparent::HEADER)
            .add(crate::Traceparent::HEADER, traceparent.to_string())
    }

    /// Removes every header named `name`.
    pub fn remove(&mut self, name: &str) -> &mut Self {
        self.list.retain(|h| !h.is_named(name));
        self
    }

    /// Keeps only the headers for which `keep` is true.
    pub fn retain(&mut self, keep: impl FnMut(&Header) -> bool) -> &mut Self {
        self.list.retain(keep);
        self
    }

    /// The headers in the order written.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.list.iter()
    }

    /// (name, value) pairs in the order written, null values as empty ones: the shape
    /// [`DeadLetterHeaders::decode`](kafkit_resilience::DeadLetterHeaders::decode) and other
    /// name/value readers take.
    pub fn pairs(&self) -> impl Iterator<Item = (Cow<'_, str>, &[u8])> {
        self.list
            .iter()
            .map(|h| (h.name(), h.value().unwrap_or_default()))
    }

    /// How many headers there are (duplicates counted).
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Name and value bytes together, for size accounting.
    pub(crate) fn byte_len(&self) -> usize {
        self.list
            .iter()
            .map(|h| h.name.len() + h.value.as_ref().map_or(0, Bytes::len))
            .sum()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.list).finish()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

impl IntoIterator for Headers {
    type Item = Header;
    type IntoIter = std::vec::IntoIter<Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.into_iter()
    }
}

impl FromIterator<Header> for Headers {
    fn from_iter<I: IntoIterator<Item = Header>>(iter: I) -> Self {
        Self {
            list: iter.into_iter().collect(),
        }
    }
}

impl Extend<Header> for Headers {
    fn extend<I: IntoIterator<Item = Header>>(&mut self, iter: I) {
        self.list.extend(iter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_nulls_and_order_are_kept() {
        let mut headers = Headers::new();
        headers
            .add("a", "1")
            .add_null("b")
            .add("a", "2")
            .add("c", "");
        let seen: Vec<(String, Option<&[u8]>)> = headers
            .iter()
            .map(|h| (h.name().into_owned(), h.value()))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("a".to_owned(), Some(&b"1"[..])),
                ("b".to_owned(), None),
                ("a".to_owned(), Some(&b"2"[..])),
                ("c".to_owned(), Some(&b""[..])),
            ]
        );
        assert_eq!(headers.get("a").and_then(Header::value), Some(&b"2"[..]));
        assert_eq!(
            headers
                .get_all("a")
                .filter_map(Header::value)
                .collect::<Vec<_>>(),
            vec![&b"1"[..], &b"2"[..]]
        );
        assert!(headers.get("missing").is_none());
        headers.remove("a");
        assert_eq!(headers.len(), 2);
        assert_eq!(headers.byte_len(), 2);
    }

    #[test]
    fn names_that_are_not_utf8_are_kept_and_read_lossily() {
        let header = Header::from_raw(Bytes::from_static(b"k\xff"), Some(Bytes::from_static(b"v")));
        assert_eq!(header.name_bytes(), b"k\xff");
        assert_eq!(header.name(), "k\u{fffd}");
        assert!(!header.is_named("k"));
    }

    #[test]
    fn a_null_value_is_not_an_empty_one() {
        assert_eq!(Header::null("n").value(), None);
        assert_eq!(Header::new("n", "").value(), Some(&b""[..]));
        assert_ne!(Header::null("n"), Header::new("n", ""));
    }
}
