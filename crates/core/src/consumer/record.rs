//! The records handed to handlers and streams.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::dispatcher::Completion;
use kafkit_resilience::TimestampType;

use crate::headers::Headers;

/// A consumed record. Cheap to clone (the data is shared); immutable.
#[derive(Clone)]
pub struct ConsumedRecord {
    inner: Arc<RecordData>,
}

pub(crate) struct RecordData {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// Key and value are slices of the fetch response they came in (no copy).
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Option<Bytes>,
    /// Names and values are slices of the fetch response too.
    pub(crate) headers: Headers,
    pub(crate) timestamp: DateTime<Utc>,
    pub(crate) timestamp_type: TimestampType,
    /// The buffer budget of the fetch response this record shares with the others from it; the
    /// last of them to finish gives it back (the fetcher's memory bound).
    pub(crate) _budget: Option<Arc<super::fetcher::BudgetShare>>,
    /// How many times a share group has delivered this record, this delivery included; `None`
    /// for a consumer group's records.
    pub(crate) delivery_count: Option<i16>,
}

impl fmt::Debug for ConsumedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumedRecord")
            .field("topic", &self.inner.topic)
            .field("partition", &self.inner.partition)
            .field("offset", &self.inner.offset)
            .field(
                "key",
                &self.inner.key.as_deref().map(String::from_utf8_lossy),
            )
            .field("value_len", &self.inner.value.as_ref().map(Bytes::len))
            .finish_non_exhaustive()
    }
}

impl ConsumedRecord {
    pub(crate) fn new(data: RecordData) -> Self {
        Self {
            inner: Arc::new(data),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// The partition.
    pub fn partition(&self) -> i32 {
        self.inner.partition
    }

    /// The record's offset in its partition.
    pub fn offset(&self) -> i64 {
        self.inner.offset
    }

    /// The key, if any.
    pub fn key(&self) -> Option<&[u8]> {
        self.inner.key.as_deref()
    }

    /// The value; `None` for a tombstone.
    pub fn value(&self) -> Option<&[u8]> {
        self.inner.value.as_deref()
    }

    /// The headers, in the order written, with duplicates and null values.
    pub fn headers(&self) -> &Headers {
        &self.inner.headers
    }

    /// The record's timestamp.
    pub fn timestamp(&self) -> DateTime<Utc> {
        self.inner.timestamp
    }

    /// The record's W3C trace context: its last `traceparent` header, if that parses (an invalid
    /// one is ignored, as the specification asks). Parsed on each call.
    pub fn traceparent(&self) -> Option<crate::Traceparent> {
        self.inner.headers.traceparent()
    }

    /// Whose time [`timestamp`](Self::timestamp) is: the producer's (`CreateTime`) or the
    /// broker's (`LogAppendTime`, set by the topic's `message.timestamp.type`).
    pub fn timestamp_type(&self) -> TimestampType {
        self.inner.timestamp_type
    }

    /// How many times the share group has delivered this record, this delivery included (1 the
    /// first time; more after a release or a lock that ran out). `None` for records of a consumer
    /// group, which has no delivery count.
    pub fn delivery_count(&self) -> Option<i16> {
        self.inner.delivery_count
    }
}

/// A record from [`Consumer::stream`](super::Consumer::stream), with the handle that says it is
/// processed. Derefs to [`ConsumedRecord`].
///
/// Call [`ack`](Self::ack) once the record is processed; only then may its offset be committed.
/// Dropping it without `ack` hands the record back: it is delivered again (at-least-once).
pub struct StreamRecord {
    pub(crate) record: ConsumedRecord,
    pub(crate) ack: Option<AckHandle>,
}

pub(crate) struct AckHandle {
    pub(crate) slot: usize,
    pub(crate) epoch: u64,
    pub(crate) key: u64,
    pub(crate) done: mpsc::UnboundedSender<Completion>,
}

impl fmt::Debug for StreamRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.record.fmt(f)
    }
}

impl std::ops::Deref for StreamRecord {
    type Target = ConsumedRecord;
    fn deref(&self) -> &ConsumedRecord {
        &self.record
    }
}

impl StreamRecord {
    /// The record is processed: its offset may be committed once every earlier one is too.
    pub fn ack(mut self) {
        if let Some(h) = self.ack.take() {
            let _ = h.done.send(Completion {
                slot: h.slot,
                epoch: h.epoch,
                key: h.key,
                outcome: super::dispatcher::Outcome::Done(self.record.offset()),
            });
        }
    }

    /// Acks every record of `records`, as [`ack`](Self::ack) on each would, in one message per
    /// partition instead of one per record: the way to ack a batch the caller processed together
    /// (say, lines written and flushed at once).
    pub fn ack_all(records: impl IntoIterator<Item = StreamRecord>) {
        // Records of one partition's tenure (and key) end up in one completion; a batch rarely
        // spans more than a few, so a list beats a map.
        let mut groups: Vec<(AckHandle, Vec<i64>)> = Vec::new();
        for mut record in records {
            let Some(h) = record.ack.take() else { continue };
            let offset = record.record.offset();
            match groups.iter_mut().find(|(g, _)| {
                (g.slot, g.epoch, g.key) == (h.slot, h.epoch, h.key) && g.done.same_channel(&h.done)
            }) {
                Some((_, offsets)) => offsets.push(offset),
                None => groups.push((h, vec![offset])),
            }
        }
        for (h, offsets) in groups {
            let _ = h.done.send(Completion {
                slot: h.slot,
                epoch: h.epoch,
                key: h.key,
                outcome: super::dispatcher::Outcome::ProcessedEach(offsets),
            });
        }
    }

    /// The record as plain data, keeping the ack obligation with `self`.
    pub fn record(&self) -> &ConsumedRecord {
        &self.record
    }
}

impl Drop for StreamRecord {
    fn drop(&mut self) {
        if let Some(h) = self.ack.take() {
            let _ = h.done.send(Completion {
                slot: h.slot,
                epoch: h.epoch,
                key: h.key,
                outcome: super::dispatcher::Outcome::Returned(vec![self.record.clone()]),
            });
        }
    }
}
