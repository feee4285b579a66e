//! The records handed to handlers and streams.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::dispatcher::Completion;
use kafkit_resilience::TimestampType;

use crate::headers::Headers;
use crate::wire::records::FetchedRecord;

/// A consumed record. Cheap to clone (the data is shared); immutable.
#[derive(Clone)]
pub struct ConsumedRecord {
    chunk: Arc<RecordChunk>,
    index: u32,
}

/// The records of one partition from one fetch response, in one allocation: a consumed record is
/// its chunk and an index. Handing a record out costs a reference count, not an allocation built
/// on the engine's thread and freed on a handler's (cross-thread frees were the largest single cost
/// of the `KeyOrdered` path); the chunk goes when its last record does.
pub(crate) struct RecordChunk {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    /// Key, value and header bytes are slices of the fetch response they came in (no copy).
    pub(crate) records: Vec<FetchedRecord>,
    /// The buffer budget of the fetch response these records came in; given back when the last
    /// of them finishes (the fetcher's memory bound).
    pub(crate) _budget: Option<Arc<super::fetcher::BudgetShare>>,
}

impl fmt::Debug for ConsumedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumedRecord")
            .field("topic", &self.chunk.topic)
            .field("partition", &self.chunk.partition)
            .field("offset", &self.data().offset)
            .field("key", &self.key().map(String::from_utf8_lossy))
            .field("value_len", &self.value().map(<[u8]>::len))
            .finish_non_exhaustive()
    }
}

impl ConsumedRecord {
    /// Record `index` of `chunk`.
    pub(crate) fn of(chunk: &Arc<RecordChunk>, index: usize) -> Self {
        debug_assert!(index < chunk.records.len());
        Self {
            chunk: Arc::clone(chunk),
            index: u32::try_from(index).expect("a fetch response holds fewer than 2^32 records"),
        }
    }

    /// A record in a chunk of its own.
    #[cfg(test)]
    pub(crate) fn single(topic: Arc<str>, partition: i32, record: FetchedRecord) -> Self {
        let chunk = Arc::new(RecordChunk {
            topic,
            partition,
            records: vec![record],
            _budget: None,
        });
        Self::of(&chunk, 0)
    }

    fn data(&self) -> &FetchedRecord {
        &self.chunk.records[self.index as usize]
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.chunk.topic
    }

    /// The partition.
    pub fn partition(&self) -> i32 {
        self.chunk.partition
    }

    /// The record's offset in its partition.
    pub fn offset(&self) -> i64 {
        self.data().offset
    }

    /// The key, if any.
    pub fn key(&self) -> Option<&[u8]> {
        self.data().key.as_deref()
    }

    /// The value; `None` for a tombstone.
    pub fn value(&self) -> Option<&[u8]> {
        self.data().value.as_deref()
    }

    /// The headers, in the order written, with duplicates and null values.
    pub fn headers(&self) -> &Headers {
        &self.data().headers
    }

    /// The record's timestamp.
    pub fn timestamp(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.data().timestamp_ms).unwrap_or(DateTime::UNIX_EPOCH)
    }

    /// The record's W3C trace context: its last `traceparent` header, if that parses (an invalid
    /// one is ignored, as the specification asks). Parsed on each call.
    pub fn traceparent(&self) -> Option<crate::Traceparent> {
        self.data().headers.traceparent()
    }

    /// Whose time [`timestamp`](Self::timestamp) is: the producer's (`CreateTime`) or the
    /// broker's (`LogAppendTime`, set by the topic's `message.timestamp.type`).
    pub fn timestamp_type(&self) -> TimestampType {
        self.data().timestamp_type
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
