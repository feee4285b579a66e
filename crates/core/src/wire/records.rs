//! Decoding the `records` bytes of one partition of a FetchResponse into the records a consumer
//! hands out.
//!
//! The bytes are a sequence of record batches (message format v2, magic 2). This module walks the
//! batch headers itself and hands each complete batch to `kafka-protocol`'s
//! [`RecordBatchDecoder`], which checks the batch CRC, decompresses it and parses its records.
//!
//! Invariants:
//! - **Zero-copy.** Each complete batch is split off the input with [`Bytes::split_to`] and decoded
//!   from that `Bytes`, so for an uncompressed batch every key, value and header value is a slice of
//!   the caller's buffer (a reference count, no copy). A compressed batch is decompressed into one
//!   new buffer per batch, and its records are slices of that buffer. The flip side: a record
//!   kept alive keeps its whole buffer (the fetch response, or the decompressed batch) alive.
//! - **Truncation.** The broker fills a fetch response by slicing the log by bytes, so the last
//!   batch may be cut short. Decoding stops, without an error, at the first batch that is not
//!   complete; it is fetched again, whole, by the next fetch from [`DecodedRecords::next_offset`].
//! - **Every complete batch is CRC-checked**, also the ones that hand out nothing (control batches,
//!   aborted transactions, batches wholly below the requested offset), as the Java consumer does
//!   with `check.crcs`.
//! - **read_committed filtering** follows the Java consumer (`CompletedFetch`): the aborted
//!   transactions the broker lists are consumed in `first_offset` order as batches are read; from
//!   the batch at or after an entry's `first_offset` on, its producer is aborted, and the records of
//!   that producer's transactional batches are dropped until its ABORT marker (a control batch)
//!   ends the aborted state. Non-transactional batches are never filtered. With read_uncommitted
//!   the broker lists no aborted transactions and nothing is filtered.
//! - Control batches (transaction markers) are never handed out, but like every complete batch they
//!   move [`DecodedRecords::next_offset`], or a consumer would fetch the same marker forever.
//!
//! Message formats v0 and v1 (Kafka before 0.11) are rejected with an error.

use std::collections::HashSet;
use std::fmt::Display;

use bytes::Bytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};

use kafkit_resilience::TimestampType;

use crate::headers::{Header, Headers};

/// Bytes before the batch length field is counted: base offset (i64) and batch length (i32).
const LOG_OVERHEAD: usize = 12;
/// Where the batch length (i32, the bytes after this field) sits in a batch.
const LENGTH_AT: usize = 8;
/// Where the magic byte (the message format version) sits in a batch.
const MAGIC_AT: usize = 16;
/// Bytes needed to read a batch's base offset, length and magic.
const HEADER_UP_TO_MAGIC: usize = MAGIC_AT + 1;
/// Where the attributes (i16) sit in a v2 batch.
const ATTRIBUTES_AT: usize = 21;
/// Where the last offset delta (i32) sits in a v2 batch.
const LAST_OFFSET_DELTA_AT: usize = 23;
/// Where the max timestamp (i64) sits in a v2 batch.
const MAX_TIMESTAMP_AT: usize = 35;
/// Where the producer id (i64) sits in a v2 batch.
const PRODUCER_ID_AT: usize = 43;
/// Where the record count (i32) sits in a v2 batch.
const RECORD_COUNT_AT: usize = 57;
/// The size of a v2 batch header; a batch holding no record is this long.
const BATCH_HEADER_LEN: usize = 61;
/// The fewest bytes an uncompressed record takes: one each for its length, attributes, timestamp
/// delta, offset delta, key length, value length and header count.
const MIN_RECORD_LEN: usize = 7;

/// Attributes bits 0-2: the compression codec.
const CODEC_MASK: i16 = 0x07;
/// Attributes bit 3: the batch's timestamps are LogAppendTime.
const LOG_APPEND_TIME_BIT: i16 = 1 << 3;
/// Attributes bit 4: the batch belongs to a transaction.
const TRANSACTIONAL_BIT: i16 = 1 << 4;
/// Attributes bit 5: the batch holds control records (transaction markers).
const CONTROL_BIT: i16 = 1 << 5;

/// The control record type of an ABORT marker (the second i16 of a control record's key).
const ABORT_MARKER: i16 = 0;

/// One record of a fetched partition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FetchedRecord {
    /// The record's offset in its partition.
    pub(crate) offset: i64,
    /// Milliseconds since the epoch (CreateTime or LogAppendTime as the batch says).
    pub(crate) timestamp_ms: i64,
    /// Whose time `timestamp_ms` is: the producer's (CreateTime) or the broker's (LogAppendTime),
    /// as the batch attributes say.
    pub(crate) timestamp_type: TimestampType,
    /// The key; `None` for a null key.
    pub(crate) key: Option<Bytes>,
    /// The value; `None` for a null value (a tombstone).
    pub(crate) value: Option<Bytes>,
    /// In the order they were written.
    pub(crate) headers: Headers,
}

/// A transaction the broker reports as aborted in a read_committed fetch (FetchResponse's
/// `aborted_transactions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AbortedTransaction {
    /// The producer whose transaction was aborted.
    pub(crate) producer_id: i64,
    /// The offset of the transaction's first record.
    pub(crate) first_offset: i64,
}

/// What one partition's fetched bytes hold.
#[derive(Debug, Default)]
pub(crate) struct DecodedRecords {
    /// Data records at or after `from_offset`, in offset order; control records and records of
    /// aborted transactions left out.
    pub(crate) records: Vec<FetchedRecord>,
    /// The offset after the last COMPLETE batch read (base offset + last offset delta + 1), even
    /// when that batch held nothing to hand out (a control marker, an aborted transaction, or
    /// records below `from_offset`); `None` when no complete batch was present. The fetch position
    /// must move here, or a consumer would fetch the same marker forever.
    pub(crate) next_offset: Option<i64>,
}

/// Fetched record bytes that cannot be decoded; the message says what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct RecordsError(pub(crate) String);

/// Decodes the `records` bytes of one fetched partition.
///
/// `from_offset` is the offset the fetch asked for: the broker returns whole batches, so the first
/// one may start before it, and records below it are left out. `aborted` is the partition's
/// `aborted_transactions` from a read_committed fetch (empty for read_uncommitted), in any order.
///
/// A truncated last batch is not an error (see the module documentation); a corrupt batch (CRC
/// mismatch, bad lengths), a message format older than v2 or a compression codec this build does not
/// support is.
pub(crate) fn decode_records(
    mut records: Bytes,
    from_offset: i64,
    aborted: &[AbortedTransaction],
) -> Result<DecodedRecords, RecordsError> {
    let mut decoded = DecodedRecords::default();
    let mut transactions = AbortedTransactions::new(aborted);
    while let Some(batch) = split_complete_batch(&mut records)? {
        let header = BatchHeader::parse(&batch)?;
        let next_offset = header.next_offset()?;
        transactions.start_up_to(header.last_offset()?);

        if header.is_control() {
            // Transaction markers are never handed out. Only an ABORT marker (the type is in the
            // first record's key) ends its producer's aborted state, as in the Java consumer.
            if transactions.is_aborted(header.producer_id) {
                let markers = decode_batch(&header, batch)?;
                if let Some(marker) = markers.first()
                    && control_type(&header, marker)? == ABORT_MARKER
                {
                    transactions.end(header.producer_id);
                }
            } else {
                check_crc(&header, batch)?;
            }
        } else {
            let aborted = header.is_transactional() && transactions.is_aborted(header.producer_id);
            if aborted || next_offset <= from_offset {
                // Nothing to hand out: the CRC is checked without decompressing the records.
                check_crc(&header, batch)?;
            } else {
                let log_append_time = header.is_log_append_time().then_some(header.max_timestamp);
                for record in decode_batch(&header, batch)? {
                    if record.offset >= from_offset {
                        decoded
                            .records
                            .push(fetched_record(record, log_append_time));
                    }
                }
            }
        }
        decoded.next_offset = Some(next_offset);
    }
    Ok(decoded)
}

/// Splits the next batch off the front of `records` if it is complete; `None` when what remains is
/// empty or a truncated batch (the rest of the input is then ignored).
///
/// Errors on a message format other than v2 (checked as soon as the magic byte is present, so a
/// truncated v1 message set is an error too, not an endless refetch) and on a batch length that
/// cannot be a v2 batch.
fn split_complete_batch(records: &mut Bytes) -> Result<Option<Bytes>, RecordsError> {
    if records.len() < HEADER_UP_TO_MAGIC {
        return Ok(None);
    }
    let base_offset = read_i64(records, 0).ok_or_else(|| short_header(records))?;
    let magic = records.get(MAGIC_AT).map(|&b| b as i8);
    match magic {
        Some(2) => {}
        Some(version @ (0 | 1)) => {
            return Err(RecordsError(format!(
                "message format v{version} is not supported (the batch at offset {base_offset}); \
                 kafkit reads message format v2 (Kafka 0.11 and later)"
            )));
        }
        Some(other) => {
            return Err(RecordsError(format!(
                "unknown message format (magic {other}) in the batch at offset {base_offset}"
            )));
        }
        None => return Err(short_header(records)),
    }
    let length = read_i32(records, LENGTH_AT).ok_or_else(|| short_header(records))?;
    let length = usize::try_from(length)
        .ok()
        .filter(|&length| length >= BATCH_HEADER_LEN - LOG_OVERHEAD)
        .ok_or_else(|| {
            RecordsError(format!(
                "invalid batch length {length} in the batch at offset {base_offset} (a v2 batch \
                 has at least {} bytes after the length field)",
                BATCH_HEADER_LEN - LOG_OVERHEAD
            ))
        })?;
    // `length` came from an i32, so this cannot overflow a usize on 64- or 32-bit targets.
    let batch_len = LOG_OVERHEAD.saturating_add(length);
    if batch_len > records.len() {
        return Ok(None);
    }
    Ok(Some(records.split_to(batch_len)))
}

/// The error for a header that is shorter than its length check promised (unreachable in practice;
/// an error rather than a panic).
fn short_header(records: &Bytes) -> RecordsError {
    RecordsError(format!(
        "record batch header cut short ({} bytes)",
        records.len()
    ))
}

/// The fields of a v2 batch header this module needs, read from the raw bytes (so they are known
/// also for a batch that holds no record, e.g. one emptied by compaction).
#[derive(Debug, Clone, Copy)]
struct BatchHeader {
    /// The offset of the batch's first record.
    base_offset: i64,
    /// The last record's offset minus `base_offset`; kept even when compaction removed that record.
    last_offset_delta: i32,
    /// Compression codec, timestamp type, transactional and control flags.
    attributes: i16,
    /// The largest timestamp in the batch, or the LogAppendTime for a LogAppendTime batch.
    max_timestamp: i64,
    /// The producer that wrote the batch; -1 for a non-idempotent producer.
    producer_id: i64,
    /// How many records the batch says it holds.
    record_count: i32,
    /// The bytes after the header: the records, compressed or not.
    records_len: usize,
}

impl BatchHeader {
    /// Reads the header of a complete batch (one [`split_complete_batch`] returned, so it is at
    /// least [`BATCH_HEADER_LEN`] bytes long).
    fn parse(batch: &Bytes) -> Result<Self, RecordsError> {
        let short = || short_header(batch);
        Ok(Self {
            base_offset: read_i64(batch, 0).ok_or_else(short)?,
            last_offset_delta: read_i32(batch, LAST_OFFSET_DELTA_AT).ok_or_else(short)?,
            attributes: read_i16(batch, ATTRIBUTES_AT).ok_or_else(short)?,
            max_timestamp: read_i64(batch, MAX_TIMESTAMP_AT).ok_or_else(short)?,
            producer_id: read_i64(batch, PRODUCER_ID_AT).ok_or_else(short)?,
            record_count: read_i32(batch, RECORD_COUNT_AT).ok_or_else(short)?,
            records_len: batch.len().saturating_sub(BATCH_HEADER_LEN),
        })
    }

    /// The offset of the batch's last record (which compaction may have removed).
    fn last_offset(&self) -> Result<i64, RecordsError> {
        self.base_offset
            .checked_add(i64::from(self.last_offset_delta))
            .ok_or_else(|| {
                RecordsError(format!(
                    "offset overflow in the batch at offset {} (last offset delta {})",
                    self.base_offset, self.last_offset_delta
                ))
            })
    }

    /// The offset after the batch: where the next fetch starts.
    fn next_offset(&self) -> Result<i64, RecordsError> {
        self.last_offset()?.checked_add(1).ok_or_else(|| {
            RecordsError(format!(
                "offset overflow after the batch at offset {}",
                self.base_offset
            ))
        })
    }

    /// Whether the batch holds transaction markers rather than data.
    fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Whether the batch was written by a transactional producer inside a transaction.
    fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Whether the broker stamped the batch with LogAppendTime.
    fn is_log_append_time(&self) -> bool {
        self.attributes & LOG_APPEND_TIME_BIT != 0
    }

    /// An error when an uncompressed batch claims more records than its bytes can hold.
    ///
    /// kafka-protocol reserves room for the claimed count before reading a record, so a count
    /// near `i32::MAX` (the CRC covers it, so only from a broker that writes it) would abort the
    /// process on the failed allocation instead of failing the fetch. A compressed batch's
    /// decompressed size is unknown up front, so its count cannot be checked here; compressed data
    /// from a hostile broker can exhaust memory anyway.
    fn check_record_count(&self) -> Result<(), RecordsError> {
        let claimed = usize::try_from(self.record_count).unwrap_or(0);
        let room = self.records_len / MIN_RECORD_LEN;
        if self.attributes & CODEC_MASK == 0 && claimed > room {
            return Err(RecordsError(format!(
                "the batch at offset {} claims {} records but holds {} bytes of records",
                self.base_offset, self.record_count, self.records_len
            )));
        }
        Ok(())
    }

    /// An error unless this build can decompress the batch's codec.
    ///
    /// kafka-protocol would also refuse a codec whose cargo feature is off, but in words that do not
    /// say which kafkit feature to turn on.
    fn check_codec(&self) -> Result<(), RecordsError> {
        let missing = |codec: &str| {
            Err(RecordsError(format!(
                "unsupported compression {codec} in the batch at offset {}: build kafkit with the \
                 `{codec}` feature",
                self.base_offset
            )))
        };
        match self.attributes & CODEC_MASK {
            // None, gzip and snappy are always built (pure Rust).
            0..=2 => Ok(()),
            3 if cfg!(feature = "lz4") => Ok(()),
            3 => missing("lz4"),
            4 if cfg!(feature = "zstd") => Ok(()),
            4 => missing("zstd"),
            other => Err(RecordsError(format!(
                "unknown compression codec {other} in the batch at offset {}",
                self.base_offset
            ))),
        }
    }
}

/// Decodes one complete batch with kafka-protocol (CRC check, decompression, records).
fn decode_batch(header: &BatchHeader, mut batch: Bytes) -> Result<Vec<Record>, RecordsError> {
    header.check_codec()?;
    header.check_record_count()?;
    RecordBatchDecoder::decode(&mut batch)
        .map(|set| set.records)
        .map_err(|error| protocol_error(header, error))
}

/// Checks the CRC of a batch whose records are not needed, without decompressing it.
fn check_crc(header: &BatchHeader, mut batch: Bytes) -> Result<(), RecordsError> {
    RecordBatchDecoder::decode_batch_info(&mut batch)
        .map(drop)
        .map_err(|error| protocol_error(header, error))
}

/// Words a kafka-protocol decoding error. Its errors are untyped (`anyhow`), so a CRC mismatch is
/// recognised by its message ("Cyclic redundancy check failed (supplied != actual)").
fn protocol_error(header: &BatchHeader, error: impl Display) -> RecordsError {
    let message = format!("{error:#}");
    if message.contains("Cyclic redundancy check") {
        RecordsError(format!(
            "CRC mismatch in the batch at offset {}: {message}",
            header.base_offset
        ))
    } else {
        RecordsError(format!(
            "malformed record batch at offset {}: {message}",
            header.base_offset
        ))
    }
}

/// The type of a control record: the second i16 of its key (the first is the key's version), 0 for
/// ABORT and 1 for COMMIT.
fn control_type(header: &BatchHeader, record: &Record) -> Result<i16, RecordsError> {
    let key = record.key.as_deref().unwrap_or_default();
    match (read_i16(key, 0), read_i16(key, 2)) {
        (Some(version), Some(kind)) if version >= 0 => Ok(kind),
        _ => Err(RecordsError(format!(
            "malformed control record at offset {} (in the batch at offset {}): key {key:?}",
            record.offset, header.base_offset
        ))),
    }
}

/// Turns a kafka-protocol record into a [`FetchedRecord`]; `log_append_time` is the batch's
/// LogAppendTime when it has one.
fn fetched_record(record: Record, log_append_time: Option<i64>) -> FetchedRecord {
    FetchedRecord {
        offset: record.offset,
        // kafka-protocol's `timestamp` is absolute (the batch's first timestamp plus the record's
        // delta), but it ignores the timestamp type: for a LogAppendTime batch it yields the
        // producer's CreateTime still in the record, where Kafka (and the Java consumer) give every
        // record the batch's max timestamp, the time the broker appended it.
        timestamp_ms: log_append_time.unwrap_or(record.timestamp),
        timestamp_type: if log_append_time.is_some() {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        },
        key: record.key,
        value: record.value,
        headers: record
            .headers
            .into_iter()
            .map(|(key, value)| Header::from_raw(Bytes::from(key), value))
            .collect(),
    }
}

/// The read_committed bookkeeping of one partition's fetch: the aborted transactions not reached yet
/// and the producers whose aborted transaction is in progress.
#[derive(Debug)]
struct AbortedTransactions {
    /// Aborted transactions not reached yet, sorted by `first_offset` descending (next at the end).
    pending: Vec<AbortedTransaction>,
    /// Producers inside an aborted transaction: their transactional batches are dropped.
    producers: HashSet<i64>,
}

impl AbortedTransactions {
    /// Bookkeeping for the broker's list of aborted transactions, in any order.
    fn new(aborted: &[AbortedTransaction]) -> Self {
        let mut pending = aborted.to_vec();
        pending.sort_unstable_by_key(|transaction| std::cmp::Reverse(transaction.first_offset));
        Self {
            pending,
            producers: HashSet::new(),
        }
    }

    /// Marks the producers of the aborted transactions starting at or before `last_offset` (the
    /// last offset of the batch about to be handled) as aborted.
    ///
    /// As the Java consumer does, this compares with the batch's last offset; a transaction starts
    /// at the base offset of one of its producer's batches and batches never overlap, so this marks
    /// a producer at the same batch as comparing the base offset would.
    fn start_up_to(&mut self, last_offset: i64) {
        while let Some(next) = self.pending.last().copied() {
            if next.first_offset > last_offset {
                break;
            }
            self.producers.insert(next.producer_id);
            self.pending.pop();
        }
    }

    /// Whether `producer_id` is inside an aborted transaction.
    fn is_aborted(&self, producer_id: i64) -> bool {
        self.producers.contains(&producer_id)
    }

    /// `producer_id`'s ABORT marker was read: its following batches are kept again.
    fn end(&mut self, producer_id: i64) {
        self.producers.remove(&producer_id);
    }
}

/// The big-endian i16 at `at`, if `bytes` holds it.
fn read_i16(bytes: &[u8], at: usize) -> Option<i16> {
    let field = bytes.get(at..at.checked_add(2)?)?;
    Some(i16::from_be_bytes(field.try_into().ok()?))
}

/// The big-endian i32 at `at`, if `bytes` holds it.
fn read_i32(bytes: &[u8], at: usize) -> Option<i32> {
    let field = bytes.get(at..at.checked_add(4)?)?;
    Some(i32::from_be_bytes(field.try_into().ok()?))
}

/// The big-endian i64 at `at`, if `bytes` holds it.
fn read_i64(bytes: &[u8], at: usize) -> Option<i64> {
    let field = bytes.get(at..at.checked_add(8)?)?;
    Some(i64::from_be_bytes(field.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
        RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use proptest::prelude::*;

    use super::*;

    /// A record as the tests write it.
    #[derive(Debug, Clone)]
    struct Written {
        offset: i64,
        timestamp: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<(String, Option<Vec<u8>>)>,
    }

    impl Written {
        /// A record with a key, a value and one header, all derived from `offset`.
        fn simple(offset: i64) -> Self {
            Self {
                offset,
                timestamp: 1_700_000_000_000 + offset,
                key: Some(format!("key-{offset}").into_bytes()),
                value: Some(format!("value-{offset}").into_bytes()),
                headers: vec![("h".to_owned(), Some(format!("hv-{offset}").into_bytes()))],
            }
        }

        /// What decoding should yield for this record.
        fn expected(&self) -> FetchedRecord {
            FetchedRecord {
                offset: self.offset,
                timestamp_ms: self.timestamp,
                timestamp_type: kafkit_resilience::TimestampType::CreateTime,
                key: self.key.clone().map(Bytes::from),
                value: self.value.clone().map(Bytes::from),
                headers: self
                    .headers
                    .iter()
                    .map(|(key, value)| Header::new(key.clone(), value.clone()))
                    .collect(),
            }
        }
    }

    /// Who wrote a batch and what kind it is.
    #[derive(Debug, Clone, Copy)]
    struct Kind {
        producer_id: i64,
        transactional: bool,
        control: bool,
    }

    /// A batch of a plain (non-idempotent) producer.
    const PLAIN: Kind = Kind {
        producer_id: NO_PRODUCER_ID,
        transactional: false,
        control: false,
    };

    /// A transactional data batch of `producer_id`.
    fn txn(producer_id: i64) -> Kind {
        Kind {
            producer_id,
            transactional: true,
            control: false,
        }
    }

    /// Encodes `records` as ONE batch (kafka-protocol's encoder starts a new batch whenever the
    /// batch properties change, and these are the same for all of them).
    fn encode_batch(kind: Kind, compression: Compression, records: &[Written]) -> Bytes {
        let base = records.first().map_or(0, |record| record.offset);
        let records: Vec<Record> = records
            .iter()
            .map(|record| Record {
                transactional: kind.transactional,
                control: kind.control,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id: kind.producer_id,
                producer_epoch: if kind.producer_id == NO_PRODUCER_ID {
                    NO_PRODUCER_EPOCH
                } else {
                    0
                },
                timestamp_type: TimestampType::Creation,
                offset: record.offset,
                // Offset minus sequence constant within the batch, so the encoder keeps one batch.
                sequence: (record.offset - base) as i32,
                timestamp: record.timestamp,
                key: record.key.clone().map(Bytes::from),
                value: record.value.clone().map(Bytes::from),
                headers: record
                    .headers
                    .iter()
                    .map(|(key, value)| {
                        (
                            StrBytes::from_string(key.clone()),
                            value.clone().map(Bytes::from),
                        )
                    })
                    .collect::<IndexMap<_, _>>(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encodes");
        buf.freeze()
    }

    /// An uncompressed batch of `offsets` written by `kind`, each record from [`Written::simple`].
    fn batch(kind: Kind, offsets: std::ops::Range<i64>) -> (Bytes, Vec<Written>) {
        let written: Vec<Written> = offsets.map(Written::simple).collect();
        (encode_batch(kind, Compression::None, &written), written)
    }

    /// A control batch of `producer_id` at `offset`: an ABORT marker when `abort`, else COMMIT.
    fn marker(producer_id: i64, offset: i64, abort: bool) -> Bytes {
        let marker = Written {
            offset,
            timestamp: 1_700_000_000_000,
            // Control record key: version 0, type 0 (ABORT) or 1 (COMMIT).
            key: Some(vec![0, 0, 0, if abort { 0 } else { 1 }]),
            // Control record value: version 0, coordinator epoch 0.
            value: Some(vec![0; 6]),
            headers: Vec::new(),
        };
        let kind = Kind {
            producer_id,
            transactional: true,
            control: true,
        };
        encode_batch(kind, Compression::None, &[marker])
    }

    /// The batches one after another, as a fetch response carries them.
    fn concat(batches: &[&Bytes]) -> Bytes {
        let mut buf = BytesMut::new();
        for batch in batches {
            buf.extend_from_slice(batch);
        }
        buf.freeze()
    }

    /// What decoding should yield for these records.
    fn expected(written: &[Written]) -> Vec<FetchedRecord> {
        written.iter().map(Written::expected).collect()
    }

    /// CRC-32C (Castagnoli), bit by bit: for tests that edit a batch and must re-seal it.
    fn crc32c(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// Applies `edit` to a single encoded batch and recomputes its CRC (which covers the bytes from
    /// the attributes to the end).
    fn edit_batch(batch: &Bytes, edit: impl FnOnce(&mut [u8])) -> Bytes {
        let mut bytes = batch.to_vec();
        edit(&mut bytes);
        let crc = crc32c(&bytes[ATTRIBUTES_AT..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(bytes)
    }

    /// Whether `slice` lies inside `buffer`'s memory.
    fn is_inside(slice: &Bytes, buffer: &Bytes) -> bool {
        let start = buffer.as_ptr() as usize;
        let at = slice.as_ptr() as usize;
        at >= start && at + slice.len() <= start + buffer.len()
    }

    #[test]
    fn uncompressed_batches_decode_zero_copy() {
        let (first, mut written) = batch(PLAIN, 10..13);
        let mut second_records = vec![
            Written {
                offset: 13,
                timestamp: 1_600_000_000_000,
                key: None,
                value: Some(b"no key".to_vec()),
                headers: vec![
                    ("b".to_owned(), Some(b"2".to_vec())),
                    ("a".to_owned(), None),
                    ("ключ".to_owned(), Some(Vec::new())),
                ],
            },
            Written {
                offset: 14,
                // Earlier than the first record: deltas may be negative.
                timestamp: 1_599_999_999_000,
                key: Some(b"tombstone".to_vec()),
                value: None,
                headers: Vec::new(),
            },
        ];
        let second = encode_batch(PLAIN, Compression::None, &second_records);
        written.append(&mut second_records);
        let input = concat(&[&first, &second]);

        let decoded = decode_records(input.clone(), 10, &[]).expect("decodes");

        assert_eq!(decoded.records, expected(&written));
        assert_eq!(decoded.next_offset, Some(15));
        for record in &decoded.records {
            let slices = record.key.iter().chain(&record.value);
            let header_values = record.headers.iter().filter_map(Header::value_bytes);
            for slice in slices
                .chain(header_values)
                .filter(|slice| !slice.is_empty())
            {
                assert!(
                    is_inside(slice, &input),
                    "{slice:?} of offset {} was copied",
                    record.offset
                );
            }
        }
    }

    #[test]
    fn truncated_last_batch_is_dropped() {
        let (first, first_written) = batch(PLAIN, 0..3);
        let (second, _) = batch(PLAIN, 3..6);
        let input = concat(&[&first, &second]);

        // Every cut inside the second batch, from "not even a header" to "one byte short".
        for cut in first.len() + 1..input.len() {
            let decoded = decode_records(input.slice(..cut), 0, &[])
                .unwrap_or_else(|error| panic!("cut at {cut}: {error}"));
            assert_eq!(decoded.records, expected(&first_written), "cut at {cut}");
            assert_eq!(decoded.next_offset, Some(3), "cut at {cut}");
        }
    }

    #[test]
    fn only_a_partial_batch_gives_nothing() {
        let (only, _) = batch(PLAIN, 0..3);
        for cut in 0..only.len() {
            let decoded = decode_records(only.slice(..cut), 0, &[])
                .unwrap_or_else(|error| panic!("cut at {cut}: {error}"));
            assert!(decoded.records.is_empty(), "cut at {cut}");
            assert_eq!(decoded.next_offset, None, "cut at {cut}");
        }
    }

    #[test]
    fn records_below_from_offset_are_skipped() {
        let (first, _) = batch(PLAIN, 0..3);
        let (second, second_written) = batch(PLAIN, 3..6);
        let input = concat(&[&first, &second]);

        let decoded = decode_records(input.clone(), 4, &[]).expect("decodes");
        assert_eq!(decoded.records, expected(&second_written[1..]));
        assert_eq!(decoded.next_offset, Some(6));

        // All records below: nothing handed out, but the position still moves past the batches.
        let decoded = decode_records(input, 6, &[]).expect("decodes");
        assert!(decoded.records.is_empty());
        assert_eq!(decoded.next_offset, Some(6));
    }

    #[test]
    fn gzip_and_snappy_batches_decode() {
        let written: Vec<Written> = (0..20).map(Written::simple).collect();
        let gzip = encode_batch(PLAIN, Compression::Gzip, &written[..10]);
        let snappy = encode_batch(PLAIN, Compression::Snappy, &written[10..]);
        assert_eq!(read_i16(&gzip, ATTRIBUTES_AT), Some(1));
        assert_eq!(read_i16(&snappy, ATTRIBUTES_AT), Some(2));

        let decoded = decode_records(concat(&[&gzip, &snappy]), 0, &[]).expect("decodes");
        assert_eq!(decoded.records, expected(&written));
        assert_eq!(decoded.next_offset, Some(20));
    }

    /// One batch compressed with `codec` decodes to what was written.
    #[cfg(any(feature = "lz4", feature = "zstd"))]
    fn round_trips(codec: Compression) {
        let written: Vec<Written> = (0..10).map(Written::simple).collect();
        let batch = encode_batch(PLAIN, codec, &written);
        let decoded = decode_records(batch, 0, &[]).expect("decodes");
        assert_eq!(decoded.records, expected(&written));
    }

    #[cfg(feature = "lz4")]
    #[test]
    fn lz4_batches_decode() {
        round_trips(Compression::Lz4);
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_batches_decode() {
        round_trips(Compression::Zstd);
    }

    #[test]
    fn codecs_left_out_of_the_build_are_named() {
        let (plain, _) = batch(PLAIN, 0..1);
        for (codec, name, built) in [
            (3, "lz4", cfg!(feature = "lz4")),
            (4, "zstd", cfg!(feature = "zstd")),
        ] {
            if built {
                continue;
            }
            // Claims the codec without compressing: the codec check comes before decompression.
            let claimed = edit_batch(&plain, |bytes| bytes[ATTRIBUTES_AT + 1] |= codec);
            let error = decode_records(claimed, 0, &[]).expect_err("codec not built");
            assert!(
                error.0.contains(&format!("unsupported compression {name}"))
                    && error.0.contains(&format!("`{name}` feature")),
                "{error}"
            );
        }
        let unknown = edit_batch(&plain, |bytes| bytes[ATTRIBUTES_AT + 1] |= 5);
        let error = decode_records(unknown, 0, &[]).expect_err("no codec 5");
        assert!(error.0.contains("unknown compression codec 5"), "{error}");
    }

    #[test]
    fn control_batch_is_skipped_and_passed() {
        let (data, written) = batch(txn(7), 0..3);
        let commit = marker(7, 3, false);

        let decoded = decode_records(concat(&[&data, &commit]), 0, &[]).expect("decodes");
        assert_eq!(decoded.records, expected(&written));
        assert_eq!(decoded.next_offset, Some(4));

        // A fetch that holds nothing but the marker must still move the position past it.
        let decoded = decode_records(commit, 3, &[]).expect("decodes");
        assert!(decoded.records.is_empty());
        assert_eq!(decoded.next_offset, Some(4));
    }

    #[test]
    fn aborted_transactions_are_filtered() {
        const P: i64 = 100;
        const Q: i64 = 200;
        // P's transaction at 0..4 is aborted; Q's at 2..7 commits; a plain producer writes in
        // between; P's next transaction at 10..12 commits.
        let (p_aborted_1, _) = batch(txn(P), 0..2);
        let (q_1, q_1_written) = batch(txn(Q), 2..4);
        let (p_aborted_2, _) = batch(txn(P), 4..6);
        let (plain, plain_written) = batch(PLAIN, 6..7);
        let p_abort = marker(P, 7, true);
        let (q_2, q_2_written) = batch(txn(Q), 8..9);
        let q_commit = marker(Q, 9, false);
        let (p_committed, p_committed_written) = batch(txn(P), 10..12);
        let p_commit = marker(P, 12, false);
        let input = concat(&[
            &p_aborted_1,
            &q_1,
            &p_aborted_2,
            &plain,
            &p_abort,
            &q_2,
            &q_commit,
            &p_committed,
            &p_commit,
        ]);
        let aborted = [AbortedTransaction {
            producer_id: P,
            first_offset: 0,
        }];

        let decoded = decode_records(input.clone(), 0, &aborted).expect("decodes");
        let kept: Vec<Written> =
            [q_1_written, plain_written, q_2_written, p_committed_written].concat();
        assert_eq!(decoded.records, expected(&kept));
        assert_eq!(decoded.next_offset, Some(13));

        // read_uncommitted (no aborted list): everything but the markers.
        let decoded = decode_records(input, 0, &[]).expect("decodes");
        let offsets: Vec<i64> = decoded.records.iter().map(|record| record.offset).collect();
        assert_eq!(offsets, [0, 1, 2, 3, 4, 5, 6, 8, 10, 11]);
    }

    #[test]
    fn aborted_transactions_are_consumed_in_offset_order() {
        const P: i64 = 100;
        // P aborts two transactions in a row; the broker's list is given out of order.
        let (first, _) = batch(txn(P), 0..2);
        let first_abort = marker(P, 2, true);
        let (second, _) = batch(txn(P), 3..5);
        let second_abort = marker(P, 5, true);
        let (third, third_written) = batch(txn(P), 6..8);
        let input = concat(&[&first, &first_abort, &second, &second_abort, &third]);
        let aborted = [
            AbortedTransaction {
                producer_id: P,
                first_offset: 3,
            },
            AbortedTransaction {
                producer_id: P,
                first_offset: 0,
            },
        ];

        let decoded = decode_records(input, 0, &aborted).expect("decodes");
        assert_eq!(decoded.records, expected(&third_written));
        assert_eq!(decoded.next_offset, Some(8));
    }

    #[test]
    fn corrupted_byte_is_a_crc_error() {
        let (first, _) = batch(PLAIN, 40..42);
        let (second, _) = batch(PLAIN, 42..45);
        let mut bytes = concat(&[&first, &second]).to_vec();
        // Flip a bit in the last byte of the second batch (its last record's last header value).
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let input = Bytes::from(bytes);

        let error = decode_records(input.clone(), 40, &[]).expect_err("corrupt");
        assert!(
            error.0.contains("CRC mismatch in the batch at offset 42"),
            "{error}"
        );

        // Also when the corrupt batch would hand out nothing.
        let error = decode_records(input, 45, &[]).expect_err("corrupt");
        assert!(error.0.contains("CRC"), "{error}");
    }

    #[test]
    fn log_append_time_uses_the_batch_max_timestamp() {
        let (created, written) = batch(PLAIN, 0..3);
        let append_time: i64 = 1_800_000_000_000;
        let stamped = edit_batch(&created, |bytes| {
            bytes[ATTRIBUTES_AT + 1] |= LOG_APPEND_TIME_BIT as u8;
            bytes[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8]
                .copy_from_slice(&append_time.to_be_bytes());
        });

        let decoded = decode_records(stamped, 0, &[]).expect("decodes");
        let mut want = expected(&written);
        for record in &mut want {
            record.timestamp_ms = append_time;
            record.timestamp_type = kafkit_resilience::TimestampType::LogAppendTime;
        }
        assert_eq!(decoded.records, want);
    }

    #[test]
    fn impossible_record_count_is_an_error() {
        let (plain, _) = batch(PLAIN, 0..2);
        let inflated = edit_batch(&plain, |bytes| {
            bytes[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        });
        let error = decode_records(inflated, 0, &[]).expect_err("too many records");
        assert!(error.0.contains("claims 2147483647 records"), "{error}");
    }

    #[test]
    fn old_message_formats_are_rejected() {
        let (v2, _) = batch(PLAIN, 5..6);
        for magic in [0u8, 1] {
            let mut bytes = v2.to_vec();
            bytes[MAGIC_AT] = magic;
            let error = decode_records(Bytes::from(bytes), 0, &[]).expect_err("old format");
            assert!(
                error
                    .0
                    .contains(&format!("message format v{magic} is not supported")),
                "{error}"
            );
        }
    }

    #[test]
    fn empty_input_is_no_batch() {
        let decoded = decode_records(Bytes::new(), 0, &[]).expect("decodes");
        assert!(decoded.records.is_empty());
        assert_eq!(decoded.next_offset, None);
    }

    /// A record's contents, without its offset.
    fn written_strategy() -> impl Strategy<Value = Written> {
        let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12));
        let headers = proptest::collection::vec(("\\PC{0,6}", bytes()), 0..4);
        (0i64..4_000_000_000_000, bytes(), bytes(), headers).prop_map(
            |(timestamp, key, value, mut headers)| {
                // kafka-protocol keeps headers in a map: one entry per key.
                let mut seen = HashSet::new();
                headers.retain(|(key, _)| seen.insert(key.clone()));
                Written {
                    offset: 0,
                    timestamp,
                    key,
                    value,
                    headers,
                }
            },
        )
    }

    /// Batches: (gap before the batch, codec, records).
    fn batches_strategy() -> impl Strategy<Value = Vec<(i64, Compression, Vec<Written>)>> {
        let codec = prop_oneof![
            Just(Compression::None),
            Just(Compression::Gzip),
            Just(Compression::Snappy),
        ];
        proptest::collection::vec(
            (
                0i64..3,
                codec,
                proptest::collection::vec(written_strategy(), 1..5),
            ),
            0..6,
        )
    }

    proptest! {
        #[test]
        fn decoding_round_trips(
            base in 0i64..1_000_000,
            batches in batches_strategy(),
            from_fraction in 0.0f64..1.2,
            cut_fraction in 0.0f64..1.0,
            cut_whole in any::<bool>(),
        ) {
            // Lay the batches out at increasing offsets (gaps between batches as after
            // compaction) and encode them.
            let mut offset = base;
            let mut encoded = Vec::new();
            for (gap, codec, mut records) in batches {
                offset += gap;
                for record in &mut records {
                    record.offset = offset;
                    offset += 1;
                }
                let bytes = encode_batch(PLAIN, codec, &records);
                encoded.push((bytes, records));
            }
            let input = concat(&encoded.iter().map(|(bytes, _)| bytes).collect::<Vec<_>>());
            let cut = if cut_whole { input.len() } else { (input.len() as f64 * cut_fraction) as usize };
            let from_offset = base + ((offset - base) as f64 * from_fraction) as i64;

            // The model: records of batches that end within the cut, at or after from_offset.
            let mut want = Vec::new();
            let mut want_next = None;
            let mut end = 0;
            for (bytes, records) in &encoded {
                end += bytes.len();
                if end > cut {
                    break;
                }
                want.extend(records.iter().filter(|r| r.offset >= from_offset).map(Written::expected));
                want_next = records.last().map(|r| r.offset + 1);
            }

            let decoded = decode_records(input.slice(..cut), from_offset, &[]);
            let decoded = decoded.map_err(|error| TestCaseError::fail(error.0))?;
            prop_assert_eq!(decoded.records, want);
            prop_assert_eq!(decoded.next_offset, want_next);
        }
    }
}
