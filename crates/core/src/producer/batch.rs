//! Batches that fit the broker's size limit.
//!
//! rskafka's `RecordAggregator` counts only the key, value and header bytes of each record. The
//! broker counts the encoded record batch: a 61-byte header and, per record, a length, attributes,
//! timestamp and offset deltas, and key, value and header lengths. For 100-byte records that is
//! about 10 % more than rskafka counted, so a batch "full" at 1 MiB was rejected with
//! `MESSAGE_TOO_LARGE` by a broker at its default `message.max.bytes` (1 MiB + 12). This aggregator
//! counts the encoded size (an upper bound for the timestamp deltas) and closes the batch before it
//! would pass `batch.size`; rskafka's aggregator underneath still keeps the records and tags.

use rskafka::client::producer::aggregator::{
    Aggregator, RecordAggregator, RecordAggregatorStatusDeaggregator, TryPush,
};
use rskafka::record::Record;

/// The aggregator trait's error type.
type AggregateError = Box<dyn std::error::Error + Send + Sync>;

/// Bytes of a v2 record batch before its first record (base offset through record count).
pub(crate) const BATCH_HEADER: usize = 61;

/// Bytes of a zigzag varint (Kafka's `varint` / `varlong`).
fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// Bytes of a length-prefixed field that may be null (length -1).
fn field_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        Some(b) => varint_len(b.len() as i64) + b.len(),
        None => varint_len(-1),
    }
}

/// Encoded bytes of `record` as record number `index` of a batch, except its timestamp delta.
fn encoded_len_without_timestamp(record: &Record, index: usize) -> usize {
    let headers: usize = varint_len(record.headers.len() as i64)
        + record
            .headers
            .iter()
            .map(|(k, v)| field_len(Some(k.as_bytes())) + field_len(Some(v)))
            .sum::<usize>();
    // attributes (1 byte) + offset delta + key + value + headers
    1 + varint_len(index as i64)
        + field_len(record.key.as_deref())
        + field_len(record.value.as_deref())
        + headers
}

/// An aggregator whose batches, encoded, stay within `max` bytes.
#[derive(Debug)]
pub(crate) struct SizedAggregator {
    inner: RecordAggregator,
    max: usize,
    /// Encoded bytes so far, the batch header included; 0 when empty.
    used: usize,
    records: usize,
    /// Smallest and largest timestamp (ms) in the batch: every timestamp delta lies within.
    span: Option<(i64, i64)>,
}

impl SizedAggregator {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            // The inner aggregator only keeps records; this one decides when the batch is full.
            inner: RecordAggregator::new(usize::MAX),
            max,
            used: 0,
            records: 0,
            span: None,
        }
    }

    /// The encoded batch size if `record` were added, and the timestamp span it would have.
    fn size_with(&self, record: &Record) -> (usize, (i64, i64)) {
        let ts = record.timestamp.timestamp_millis();
        let (lo, hi) = self
            .span
            .map_or((ts, ts), |(lo, hi)| (lo.min(ts), hi.max(ts)));
        let delta_len = varint_len(hi - lo);
        // Records already in the batch may need longer timestamp deltas now.
        let old_delta_len = self.span.map_or(1, |(lo, hi)| varint_len(hi - lo));
        let growth = (delta_len - old_delta_len) * self.records;
        let body = encoded_len_without_timestamp(record, self.records) + delta_len;
        let base = if self.records == 0 {
            BATCH_HEADER
        } else {
            self.used
        };
        (base + growth + varint_len(body as i64) + body, (lo, hi))
    }
}

impl Aggregator for SizedAggregator {
    type Input = Record;
    type Tag = usize;
    type StatusDeaggregator = RecordAggregatorStatusDeaggregator;

    fn try_push(&mut self, record: Record) -> Result<TryPush<Record, usize>, AggregateError> {
        let (size, span) = self.size_with(&record);
        // A record alone in its batch always goes: the send path rejected records above batch.size.
        if self.records > 0 && size > self.max {
            return Ok(TryPush::NoCapacity(record));
        }
        let pushed = self.inner.try_push(record)?;
        if matches!(pushed, TryPush::Aggregated(_)) {
            self.used = size;
            self.records += 1;
            self.span = Some(span);
        }
        Ok(pushed)
    }

    fn flush(
        &mut self,
    ) -> Result<(Vec<Record>, RecordAggregatorStatusDeaggregator), AggregateError> {
        self.used = 0;
        self.records = 0;
        self.span = None;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{TimeZone, Utc};

    use super::*;

    fn record(key: Option<&[u8]>, value: usize, ts: i64) -> Record {
        Record {
            key: key.map(<[u8]>::to_vec),
            value: Some(vec![b'v'; value]),
            headers: BTreeMap::new(),
            timestamp: Utc.timestamp_millis_opt(ts).unwrap(),
        }
    }

    #[test]
    fn varints_are_zigzag_encoded() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(-1), 1);
        assert_eq!(varint_len(63), 1);
        assert_eq!(varint_len(64), 2);
        assert_eq!(varint_len(-65), 2);
        assert_eq!(varint_len(i64::MAX), 10);
    }

    #[test]
    fn a_small_record_costs_its_framing() {
        // 7-byte key, 100-byte value, no headers, first in its batch: attributes 1 + timestamp
        // delta 1 + offset delta 1 + key 1+7 + value 2+100 (zigzag 200 takes two bytes) + header
        // count 1 = 114, and its length prefix 2.
        let agg = SizedAggregator::new(1 << 20);
        let (size, _) = agg.size_with(&record(Some(b"key-123"), 100, 0));
        assert_eq!(size, BATCH_HEADER + 2 + 114);
    }

    #[test]
    fn batches_stay_within_the_limit_where_counting_payload_alone_overshoots() {
        let max = 1 << 20;
        let mut agg = SizedAggregator::new(max);
        let mut payload = 0;
        let mut n = 0;
        loop {
            let r = record(Some(b"key-123"), 100, 1_700_000_000_000 + n);
            match agg.try_push(r).unwrap() {
                TryPush::Aggregated(tag) => assert_eq!(tag, n as usize),
                TryPush::NoCapacity(_) => break,
            }
            payload += 107;
            n += 1;
        }
        assert!(agg.used <= max, "{} > {max}", agg.used);
        assert!(agg.used > max - 200, "the batch is filled: {}", agg.used);
        // Counting only key and value bytes would have admitted about 11 % more records.
        assert!(payload < max * 9 / 10, "{payload}");
        let (records, _) = agg.flush().unwrap();
        assert_eq!(records.len(), n as usize);
        assert_eq!(agg.used, 0);
    }

    #[test]
    fn a_wider_timestamp_span_grows_every_records_delta() {
        let mut agg = SizedAggregator::new(1 << 20);
        for i in 0..10 {
            assert!(matches!(
                agg.try_push(record(None, 10, i)).unwrap(),
                TryPush::Aggregated(_)
            ));
        }
        let before = agg.used;
        // 10 s later: the new record's delta takes 3 bytes, and so may the ten before it.
        agg.try_push(record(None, 10, 10_000)).unwrap();
        let added = agg.used - before;
        // Ten records x 2 more bytes, then the record: length 1 + attributes 1 + delta 3 + offset
        // delta 1 + null key 1 + value 1+10 + header count 1.
        assert_eq!(added, 10 * 2 + 1 + (1 + 3 + 1 + 1 + 11 + 1));
    }

    #[test]
    fn a_record_alone_always_fits_and_the_next_one_waits() {
        let mut agg = SizedAggregator::new(200);
        assert!(matches!(
            agg.try_push(record(None, 190, 0)).unwrap(),
            TryPush::Aggregated(0)
        ));
        assert!(matches!(
            agg.try_push(record(None, 10, 0)).unwrap(),
            TryPush::NoCapacity(_)
        ));
    }
}
