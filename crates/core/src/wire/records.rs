//! Decoding the `records` bytes of one partition of a FetchResponse into the records a consumer
//! hands out.
//!
//! The bytes are a sequence of record batches (message format v2, magic 2). This module reads them
//! itself: the batch header, the CRC-32C, the decompression of the records section and the records
//! with their headers. Every codec Kafka defines is decoded in pure Rust and always built: gzip
//! (`flate2` on `miniz_oxide`), snappy (`snap`, raw blocks and the xerial framing the Java producer
//! writes), lz4 (`lz4_flex`, the LZ4 frame format) and zstd (`ruzstd`).
//!
//! Invariants:
//! - **Zero-copy.** Each complete batch is split off the input with [`Bytes::split_to`], and the
//!   records are read from that `Bytes`: for an uncompressed batch every key, value, header name and
//!   header value is a slice of the caller's buffer (a reference count, no copy). A compressed
//!   batch is decompressed into one new buffer per batch, and its records are slices of that
//!   buffer. The flip side: a record kept alive keeps its whole buffer (the fetch response, or the
//!   decompressed batch) alive.
//! - **Headers as written.** A record's headers are kept in order, duplicate names and null values
//!   included, and a name that is not UTF-8 is kept as its bytes ([`Header::from_raw`]).
//! - **Truncation.** The broker fills a fetch response by slicing the log by bytes, so the last
//!   batch may be cut short. Decoding stops, without reporting corruption, at the first batch that
//!   is not complete; it is fetched again, whole, by the next fetch from
//!   [`DecodedRecords::next_offset`].
//! - **Poison input never stalls.** [`decode_records`] cannot fail: it stops at the first batch it
//!   cannot decode (CRC mismatch, a message format older than v2, a bad length, an unknown codec, a
//!   decompression failure, malformed records, counts the bytes cannot hold), hands out every record
//!   before it and reports the batch as [`DecodedRecords::corrupt`], with an offset past it that
//!   is always ahead of the fetch position, so the fetcher can move on.
//! - **Bounded by the input.** Every length is checked against the bytes that remain, no count is
//!   trusted for an allocation beyond what the bytes can hold, and a compressed batch may not
//!   decompress to more than [`MAX_DECOMPRESSED_BATCH`]; nothing here panics on any input.
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

use std::collections::HashSet;
use std::io::Read;

use bytes::Bytes;

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
/// Where the CRC-32C (u32) of a v2 batch sits; it covers the bytes from the attributes to the end.
const CRC_AT: usize = 17;
/// Where the attributes (i16) sit in a v2 batch.
const ATTRIBUTES_AT: usize = 21;
/// Where the last offset delta (i32) sits in a v2 batch.
const LAST_OFFSET_DELTA_AT: usize = 23;
/// Where the first timestamp (i64) sits in a v2 batch: records' timestamps are deltas from it.
const FIRST_TIMESTAMP_AT: usize = 27;
/// Where the max timestamp (i64) sits in a v2 batch.
const MAX_TIMESTAMP_AT: usize = 35;
/// Where the producer id (i64) sits in a v2 batch.
const PRODUCER_ID_AT: usize = 43;
/// Where the record count (i32) sits in a v2 batch.
const RECORD_COUNT_AT: usize = 57;
/// The size of a v2 batch header; a batch holding no record is this long.
const BATCH_HEADER_LEN: usize = 61;
/// The fewest bytes a record takes: one each for its length, attributes, timestamp delta, offset
/// delta, key length, value length and header count.
const MIN_RECORD_LEN: usize = 7;
/// The fewest bytes a header takes: one each for its name length and value length.
const MIN_HEADER_LEN: usize = 2;

/// Room reserved up front for a batch's records: a claimed count can be many times what is really
/// there (a record takes at least [`MIN_RECORD_LEN`] bytes but is decoded to far more), so beyond
/// this the list grows as records are actually read.
const MAX_PREALLOCATED_RECORDS: usize = 4096;
/// Room reserved up front for a record's headers, for the same reason.
const MAX_PREALLOCATED_HEADERS: usize = 16;

/// The most bytes one compressed batch may decompress to. A batch is refused (reported as corrupt)
/// beyond it, so a small hostile batch cannot make the consumer allocate without bound. Far above
/// what a producer writes: Java's producer closes a batch at `batch.size` (16 KiB by default) and
/// a request at `max.request.size` (1 MiB by default), both measured compressed.
pub(crate) const MAX_DECOMPRESSED_BATCH: usize = 64 << 20;
/// The largest zstd window accepted: libzstd's default limit (window log 27), which the Java
/// consumer has. `ruzstd` reserves the window a frame declares up front.
const MAX_ZSTD_WINDOW: u64 = 1 << 27;

/// Attributes bits 0-2: the compression codec.
const CODEC_MASK: i16 = 0x07;
/// Attributes bit 3: the batch's timestamps are LogAppendTime.
const LOG_APPEND_TIME_BIT: i16 = 1 << 3;
/// Attributes bit 4: the batch belongs to a transaction.
const TRANSACTIONAL_BIT: i16 = 1 << 4;
/// Attributes bit 5: the batch holds control records (transaction markers).
const CONTROL_BIT: i16 = 1 << 5;

/// Codec ids of the attributes' low bits.
const NONE: i16 = 0;
const GZIP: i16 = 1;
const SNAPPY: i16 = 2;
const LZ4: i16 = 3;
const ZSTD: i16 = 4;

/// The magic header of the xerial snappy framing (snappy-java's `SnappyOutputStream`, which the
/// Java producer writes): then a version and a compatible version (i32 each), then blocks, each a
/// big-endian i32 length and a raw snappy block.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\0";
/// The bytes of the xerial header: the magic and the two version ints.
const XERIAL_HEADER_LEN: usize = 16;

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
    /// In the order they were written, duplicates and null values included.
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
    /// aborted transactions left out. Only records of batches before `corrupt` (if any).
    pub(crate) records: Vec<FetchedRecord>,
    /// The offset after the last COMPLETE good batch read (base offset + last offset delta + 1),
    /// even when that batch held nothing to hand out (a control marker, an aborted transaction, or
    /// records below `from_offset`); `None` when no complete good batch was present. The fetch
    /// position must move here, or a consumer would fetch the same marker forever.
    pub(crate) next_offset: Option<i64>,
    /// The first batch that cannot be decoded, if any; decoding stopped there.
    pub(crate) corrupt: Option<CorruptBatch>,
}

/// A batch that cannot be decoded: corrupt, of an old message format, or hostile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CorruptBatch {
    /// The base offset of the batch that cannot be decoded.
    pub(crate) offset: i64,
    /// Where the fetch position moves to skip it: the offset after the batch when its header can
    /// be read (but not past the base offset of a good batch right after it), else one past the
    /// offset the bad bytes start at. Always > the fetch's from_offset and > any next_offset of
    /// good batches before it (the position must always move forward).
    pub(crate) skip_to: i64,
    /// What is wrong, naming the offset.
    pub(crate) reason: String,
}

/// Why a batch cannot be decoded; the message says what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RecordsError(String);

/// Decodes the `records` bytes of one fetched partition.
///
/// `from_offset` is the offset the fetch asked for: the broker returns whole batches, so the first
/// one may start before it, and records below it are left out. `aborted` is the partition's
/// `aborted_transactions` from a read_committed fetch (empty for read_uncommitted), in any order.
///
/// A truncated last batch is not corruption (see the module documentation); a batch that cannot be
/// decoded ends the decoding and is reported in [`DecodedRecords::corrupt`], after the records of
/// the good batches before it.
pub(crate) fn decode_records(
    mut records: Bytes,
    from_offset: i64,
    aborted: &[AbortedTransaction],
) -> DecodedRecords {
    let mut decoded = DecodedRecords::default();
    let mut transactions = AbortedTransactions::new(aborted);
    loop {
        // The base offset is not covered by the CRC, but it is where the bad bytes claim to start.
        let base_offset = read_i64(&records, 0);
        let (batch, header) = match split_complete_batch(&mut records) {
            Ok(None) => break,
            Ok(Some(batch)) => match BatchHeader::parse(&batch) {
                Ok(header) => (batch, header),
                Err(error) => {
                    decoded.corrupt =
                        Some(corrupt(base_offset, None, error, from_offset, &decoded));
                    break;
                }
            },
            Err(error) => {
                decoded.corrupt = Some(corrupt(base_offset, None, error, from_offset, &decoded));
                break;
            }
        };
        match decode_batch(
            &header,
            batch,
            from_offset,
            &mut transactions,
            &mut decoded.records,
        ) {
            Ok(next_offset) => decoded.next_offset = Some(next_offset),
            Err(error) => {
                // The header says where the batch ends, but a CRC mismatch puts it in doubt: a
                // good batch right after it in the response bounds the skip, so no record that
                // was fetched intact is skipped.
                let after = header.next_offset().ok().map(|after| {
                    next_good_base_offset(&records).map_or(after, |next| after.min(next))
                });
                let bad = corrupt(base_offset, after, error, from_offset, &decoded);
                decoded.corrupt = Some(bad);
                break;
            }
        }
    }
    decoded
}

/// The report of a batch that cannot be decoded: `base_offset` is where its bytes start (if they
/// hold an offset), `after` the offset after it as its header says (if it could be read).
///
/// `skip_to` is clamped to be past `from_offset` and past the good batches before it: the offsets
/// come from the bad bytes, and the fetch position must move forward whatever they say.
fn corrupt(
    base_offset: Option<i64>,
    after: Option<i64>,
    error: RecordsError,
    from_offset: i64,
    decoded: &DecodedRecords,
) -> CorruptBatch {
    let floor = decoded
        .next_offset
        .map_or(from_offset, |next| next.max(from_offset))
        .saturating_add(1);
    let offset = base_offset.unwrap_or(floor.saturating_sub(1));
    let skip_to = after
        .filter(|&after| after > offset)
        .unwrap_or(offset.saturating_add(1))
        .max(floor);
    CorruptBatch {
        offset,
        skip_to,
        reason: error.0,
    }
}

/// The base offset of the batch at the front of `records` if it is complete and its CRC checks
/// out (so its offsets can be trusted).
fn next_good_base_offset(records: &Bytes) -> Option<i64> {
    let batch = split_complete_batch(&mut records.clone()).ok()??;
    let header = BatchHeader::parse(&batch).ok()?;
    check_crc(&header, &batch).ok()?;
    Some(header.base_offset)
}

/// Checks one complete batch and hands out its records at or after `from_offset` into `out`, all
/// or none: they are pushed only once the whole batch decoded. Returns the offset after the batch.
fn decode_batch(
    header: &BatchHeader,
    batch: Bytes,
    from_offset: i64,
    transactions: &mut AbortedTransactions,
    out: &mut Vec<FetchedRecord>,
) -> Result<i64, RecordsError> {
    let next_offset = header.next_offset()?;
    check_crc(header, &batch)?;
    transactions.start_up_to(header.last_offset()?);

    if header.is_control() {
        // Transaction markers are never handed out. Only an ABORT marker (the type is in the
        // first record's key) ends its producer's aborted state, as in the Java consumer.
        if transactions.is_aborted(header.producer_id) {
            let markers = read_records(header, batch)?;
            if let Some(marker) = markers.first()
                && control_type(header, marker)? == ABORT_MARKER
            {
                transactions.end(header.producer_id);
            }
        }
    } else {
        let aborted = header.is_transactional() && transactions.is_aborted(header.producer_id);
        // Nothing to hand out when aborted or wholly below from_offset: the records are not read
        // (the CRC was checked above).
        if !aborted && next_offset > from_offset {
            out.extend(
                read_records(header, batch)?
                    .into_iter()
                    .filter(|record| record.offset >= from_offset),
            );
        }
    }
    Ok(next_offset)
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
    /// The timestamp the records' timestamp deltas count from.
    first_timestamp: i64,
    /// The largest timestamp in the batch, or the LogAppendTime for a LogAppendTime batch.
    max_timestamp: i64,
    /// The producer that wrote the batch; -1 for a non-idempotent producer.
    producer_id: i64,
    /// How many records the batch says it holds.
    record_count: i32,
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
            first_timestamp: read_i64(batch, FIRST_TIMESTAMP_AT).ok_or_else(short)?,
            max_timestamp: read_i64(batch, MAX_TIMESTAMP_AT).ok_or_else(short)?,
            producer_id: read_i64(batch, PRODUCER_ID_AT).ok_or_else(short)?,
            record_count: read_i32(batch, RECORD_COUNT_AT).ok_or_else(short)?,
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

    /// The compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    fn codec(&self) -> i16 {
        self.attributes & CODEC_MASK
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

    /// An error unless the batch's (decompressed) records section of `records_len` bytes can hold
    /// the record count the batch claims: the count sizes the record list, so a count near
    /// `i32::MAX` must not reach an allocation.
    fn check_record_count(&self, records_len: usize) -> Result<usize, RecordsError> {
        let room = records_len / MIN_RECORD_LEN;
        match usize::try_from(self.record_count) {
            Ok(claimed) if claimed <= room => Ok(claimed),
            _ => Err(RecordsError(format!(
                "the batch at offset {} claims {} records but holds {records_len} bytes of records",
                self.base_offset, self.record_count
            ))),
        }
    }

    /// An error for a codec id Kafka does not define: the five it does (0..=4) are always built.
    fn check_codec(&self) -> Result<(), RecordsError> {
        match self.codec() {
            NONE..=ZSTD => Ok(()),
            other => Err(RecordsError(format!(
                "unknown compression codec {other} in the batch at offset {}",
                self.base_offset
            ))),
        }
    }

    /// An error naming the batch, for what is wrong in its records.
    fn malformed(&self, what: impl std::fmt::Display) -> RecordsError {
        RecordsError(format!(
            "malformed record batch at offset {}: {what}",
            self.base_offset
        ))
    }
}

/// Checks the CRC-32C of a complete batch: it covers the bytes from the attributes to the end.
fn check_crc(header: &BatchHeader, batch: &[u8]) -> Result<(), RecordsError> {
    let (Some(stored), Some(covered)) = (read_i32(batch, CRC_AT), batch.get(ATTRIBUTES_AT..))
    else {
        return Err(header.malformed("cut short before its CRC"));
    };
    let stored = stored as u32;
    let actual = crc32c::crc32c(covered);
    if stored != actual {
        return Err(RecordsError(format!(
            "CRC mismatch in the batch at offset {}: stored {stored:#010x}, computed {actual:#010x}",
            header.base_offset
        )));
    }
    Ok(())
}

/// Reads the records of a complete, CRC-checked batch, decompressing them first if they are
/// compressed. Keys, values and headers are slices of `batch` (uncompressed) or of the one buffer
/// the batch decompresses to.
fn read_records(header: &BatchHeader, batch: Bytes) -> Result<Vec<FetchedRecord>, RecordsError> {
    header.check_codec()?;
    let section =
        match header.codec() {
            NONE => batch.slice(BATCH_HEADER_LEN.min(batch.len())..),
            codec => {
                let compressed = batch.get(BATCH_HEADER_LEN..).unwrap_or_default();
                Bytes::from(decompress(codec, compressed).map_err(|what| {
                    header.malformed(format_args!("cannot decompress it: {what}"))
                })?)
            }
        };
    let count = header.check_record_count(section.len())?;
    let log_append_time = header.is_log_append_time().then_some(header.max_timestamp);
    let mut cursor = Cursor::new(&section);
    let mut records = Vec::with_capacity(count.min(MAX_PREALLOCATED_RECORDS));
    for index in 0..count {
        let record = cursor
            .record(header, log_append_time)
            .map_err(|what| header.malformed(format_args!("record {index}: {what}")))?;
        records.push(record);
    }
    if cursor.remaining() != 0 {
        return Err(header.malformed(format_args!(
            "{} bytes after its {count} records",
            cursor.remaining()
        )));
    }
    Ok(records)
}

/// Decompresses a records section with `codec` (1..=4), to at most [`MAX_DECOMPRESSED_BATCH`]
/// bytes; the error says what failed.
fn decompress(codec: i16, compressed: &[u8]) -> Result<Vec<u8>, String> {
    match codec {
        GZIP => read_bounded(
            "gzip",
            flate2::read::MultiGzDecoder::new(compressed),
            first_guess(compressed),
        ),
        SNAPPY => unsnappy(compressed),
        LZ4 => unlz4(compressed),
        ZSTD => unzstd(compressed),
        other => Err(format!("unknown compression codec {other}")),
    }
}

/// The error for output beyond [`MAX_DECOMPRESSED_BATCH`].
fn too_large(codec: &str) -> String {
    format!(
        "{codec} data decompresses to more than {} MiB, kafkit's limit for one batch",
        MAX_DECOMPRESSED_BATCH >> 20
    )
}

/// Room for the decompressed bytes to start with: a few times the compressed size (records
/// compress a few times), so a typical batch is read without growing the buffer, while a small
/// hostile batch reserves little.
fn first_guess(compressed: &[u8]) -> usize {
    compressed
        .len()
        .saturating_mul(4)
        .min(MAX_DECOMPRESSED_BATCH)
}

/// Reads all of a decompressing reader, to at most [`MAX_DECOMPRESSED_BATCH`] bytes, into a buffer
/// of `capacity` to start with.
fn read_bounded(codec: &str, reader: impl Read, capacity: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(capacity);
    // One byte past the limit tells "at the limit" from "beyond it".
    let limit = MAX_DECOMPRESSED_BATCH as u64 + 1;
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|error| format!("{codec}: {error}"))?;
    if out.len() > MAX_DECOMPRESSED_BATCH {
        return Err(too_large(codec));
    }
    Ok(out)
}

/// Decompresses lz4: one or more LZ4 frames (Kafka's v2 batches use the standard frame format).
fn unlz4(mut compressed: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(first_guess(compressed));
    // `lz4_flex` reads one frame and then reports the end; each pass reads the next.
    while !compressed.is_empty() {
        let room = MAX_DECOMPRESSED_BATCH - out.len();
        let before = compressed.len();
        let frame = lz4_flex::frame::FrameDecoder::new(&mut compressed);
        let read = frame
            .take(room as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|error| format!("lz4: {error}"))?;
        if read > room {
            return Err(too_large("lz4"));
        }
        if compressed.len() == before {
            // Nothing consumed (cannot happen with a frame header read): no endless loop.
            return Err(format!("lz4: {before} bytes that are not a frame"));
        }
    }
    Ok(out)
}

/// Decompresses snappy: the xerial framing the Java producer writes, or one raw snappy block as
/// other clients write.
fn unsnappy(compressed: &[u8]) -> Result<Vec<u8>, String> {
    let mut decoder = snap::raw::Decoder::new();
    let mut out = Vec::new();
    let Some(mut blocks) = compressed
        .strip_prefix(XERIAL_MAGIC)
        .and_then(|rest| rest.get(XERIAL_HEADER_LEN - XERIAL_MAGIC.len()..))
    else {
        unsnappy_block(&mut decoder, compressed, &mut out)?;
        return Ok(out);
    };
    // The version ints are not checked, as snappy-java itself reads any.
    while !blocks.is_empty() {
        let length = read_i32(blocks, 0).ok_or_else(|| {
            format!(
                "xerial snappy block length cut short ({} bytes)",
                blocks.len()
            )
        })?;
        let block = usize::try_from(length)
            .ok()
            .and_then(|length| blocks.get(4..4usize.checked_add(length)?))
            .ok_or_else(|| {
                format!(
                    "xerial snappy block of {length} bytes, with {} bytes left",
                    blocks.len() - 4
                )
            })?;
        unsnappy_block(&mut decoder, block, &mut out)?;
        blocks = &blocks[4 + block.len()..];
    }
    Ok(out)
}

/// Decompresses one raw snappy block onto the end of `out`, within [`MAX_DECOMPRESSED_BATCH`].
fn unsnappy_block(
    decoder: &mut snap::raw::Decoder,
    block: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let length = snap::raw::decompress_len(block).map_err(|error| format!("snappy: {error}"))?;
    let start = out.len();
    if length > MAX_DECOMPRESSED_BATCH - start {
        return Err(too_large("snappy"));
    }
    out.resize(start + length, 0);
    let written = decoder
        .decompress(block, &mut out[start..])
        .map_err(|error| format!("snappy: {error}"))?;
    out.truncate(start + written);
    Ok(())
}

/// Decompresses zstd: one or more frames (the Java producer's frames may omit the content size),
/// skippable frames skipped.
fn unzstd(mut compressed: &[u8]) -> Result<Vec<u8>, String> {
    use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
    use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

    let mut decoder = FrameDecoder::new();
    decoder.set_max_window_size(MAX_ZSTD_WINDOW);
    let mut out = Vec::with_capacity(first_guess(compressed));
    while !compressed.is_empty() {
        match decoder.reset(&mut compressed) {
            Ok(()) => {}
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                length,
                ..
            })) => {
                compressed = usize::try_from(length)
                    .ok()
                    .and_then(|length| compressed.get(length..))
                    .ok_or_else(|| format!("zstd skippable frame of {length} bytes cut short"))?;
                continue;
            }
            Err(error) => return Err(format!("zstd: {error}")),
        }
        while !decoder.is_finished() {
            // Block by block (a block is at most 128 KiB), so the limit is checked as output grows.
            decoder
                .decode_blocks(&mut compressed, BlockDecodingStrategy::UptoBlocks(1))
                .map_err(|error| format!("zstd: {error}"))?;
            if out.len() + decoder.can_collect() > MAX_DECOMPRESSED_BATCH {
                return Err(too_large("zstd"));
            }
            decoder
                .collect_to_writer(&mut out)
                .map_err(|error| format!("zstd: {error}"))?;
        }
    }
    Ok(out)
}

/// A reading position in a records section. Every read is checked against the bytes left (and,
/// inside a record, against the record's own length), and slices share `buf`'s memory.
struct Cursor<'a> {
    buf: &'a Bytes,
    at: usize,
    end: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor over all of `buf`.
    fn new(buf: &'a Bytes) -> Self {
        Self {
            buf,
            at: 0,
            end: buf.len(),
        }
    }

    /// The bytes left to read.
    fn remaining(&self) -> usize {
        self.end - self.at
    }

    /// The next byte.
    fn byte(&mut self) -> Result<u8, &'static str> {
        if self.at >= self.end {
            return Err("cut short");
        }
        let byte = self.buf[self.at];
        self.at += 1;
        Ok(byte)
    }

    /// An unsigned LEB128 varint of at most `max_bytes` bytes.
    fn unsigned_varint(&mut self, max_bytes: u32) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for index in 0..max_bytes {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long")
    }

    /// A zigzag varint as Kafka writes an int32 (at most 5 bytes).
    fn varint(&mut self) -> Result<i32, &'static str> {
        // Bits past the 32nd are dropped, as Kafka's own reader does.
        let raw = self.unsigned_varint(5)? as u32;
        Ok((raw >> 1) as i32 ^ -((raw & 1) as i32))
    }

    /// A zigzag varint as Kafka writes an int64 (at most 10 bytes).
    fn varlong(&mut self) -> Result<i64, &'static str> {
        let raw = self.unsigned_varint(10)?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    /// The next `len` bytes, as a slice of the buffer.
    fn slice(&mut self, len: usize) -> Result<Bytes, &'static str> {
        if len > self.remaining() {
            return Err("length beyond the bytes left");
        }
        let slice = self.buf.slice(self.at..self.at + len);
        self.at += len;
        Ok(slice)
    }

    /// A varint length and that many bytes; -1 is null.
    fn nullable(&mut self) -> Result<Option<Bytes>, &'static str> {
        match self.varint()? {
            -1 => Ok(None),
            len => Ok(Some(
                self.slice(usize::try_from(len).map_err(|_| "negative length")?)?,
            )),
        }
    }

    /// One record (its varint length and the body the length covers).
    fn record(
        &mut self,
        header: &BatchHeader,
        log_append_time: Option<i64>,
    ) -> Result<FetchedRecord, &'static str> {
        let len = usize::try_from(self.varint()?).map_err(|_| "negative record length")?;
        if len > self.remaining() {
            return Err("record length beyond the bytes left");
        }
        let end = self.at + len;
        let mut body = Cursor {
            buf: self.buf,
            at: self.at,
            end,
        };
        let record = body.record_body(header, log_append_time)?;
        if body.remaining() != 0 {
            return Err("record length longer than its fields");
        }
        self.at = end;
        Ok(record)
    }

    /// A record's fields after its length.
    fn record_body(
        &mut self,
        header: &BatchHeader,
        log_append_time: Option<i64>,
    ) -> Result<FetchedRecord, &'static str> {
        let _attributes = self.byte()?;
        let timestamp_delta = self.varlong()?;
        let offset_delta = self.varint()?;
        let key = self.nullable()?;
        let value = self.nullable()?;
        let count = usize::try_from(self.varint()?).map_err(|_| "negative header count")?;
        if count > self.remaining() / MIN_HEADER_LEN {
            return Err("header count beyond the bytes left");
        }
        let mut headers = Headers::with_capacity(count.min(MAX_PREALLOCATED_HEADERS));
        for _ in 0..count {
            let len = usize::try_from(self.varint()?).map_err(|_| "negative header name length")?;
            let name = self.slice(len)?;
            let value = self.nullable()?;
            headers.push(Header::from_raw(name, value));
        }
        let offset = header
            .base_offset
            .checked_add(i64::from(offset_delta))
            .ok_or("offset overflow")?;
        Ok(FetchedRecord {
            offset,
            // For a LogAppendTime batch Kafka (and the Java consumer) give every record the batch's
            // max timestamp, the time the broker appended it; the record still holds the producer's
            // CreateTime delta. The sum wraps like Java's long arithmetic rather than failing.
            timestamp_ms: log_append_time
                .unwrap_or_else(|| header.first_timestamp.wrapping_add(timestamp_delta)),
            timestamp_type: if log_append_time.is_some() {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
            key,
            value,
            headers,
        })
    }
}

/// The type of a control record: the second i16 of its key (the first is the key's version), 0 for
/// ABORT and 1 for COMMIT.
fn control_type(header: &BatchHeader, record: &FetchedRecord) -> Result<i16, RecordsError> {
    let key = record.key.as_deref().unwrap_or_default();
    match (read_i16(key, 0), read_i16(key, 2)) {
        (Some(version), Some(kind)) if version >= 0 => Ok(kind),
        _ => Err(RecordsError(format!(
            "malformed control record at offset {} (in the batch at offset {}): key {key:?}",
            record.offset, header.base_offset
        ))),
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

// ---------------------------------------------------------------------------------------------
// Writing batches
// ---------------------------------------------------------------------------------------------

/// The compression codec of a written batch, by the id it has in the batch attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    /// No compression.
    None = 0,
    /// gzip (`flate2` on `miniz_oxide`, default level).
    Gzip = 1,
    /// snappy in the xerial framing the Java producer writes (blocks of [`XERIAL_BLOCK`] bytes).
    Snappy = 2,
    /// One LZ4 frame, independent 64 KiB blocks (what Kafka's LZ4 reader accepts).
    Lz4 = 3,
    /// One zstd frame (`ruzstd`'s fastest level, about zstd's level 1).
    Zstd = 4,
}

/// Uncompressed bytes per xerial snappy block: snappy-java's default block size.
const XERIAL_BLOCK: usize = 32 * 1024;

/// Who writes a batch, for idempotence: producer id, epoch and the sequence of its first record,
/// and whether it belongs to a transaction (the attributes' transactional bit). [`Stamp::NONE`]
/// for a producer without idempotence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
    pub(crate) base_sequence: i32,
    pub(crate) transactional: bool,
}

impl Stamp {
    /// No producer id, epoch or sequence (-1 each).
    pub(crate) const NONE: Stamp = Stamp {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        transactional: false,
    };
}

/// Bytes of Kafka's zigzag varint of `value`.
pub(crate) fn varint_len(value: i64) -> usize {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    let mut len = 1;
    while raw >= 0x80 {
        raw >>= 7;
        len += 1;
    }
    len
}

/// Appends Kafka's zigzag varint of `value`.
fn put_varint(buf: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        buf.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    buf.push(raw as u8);
}

/// Bytes of a varint length and the bytes, or of -1 for `None`.
fn nullable_len(bytes: Option<&[u8]>) -> usize {
    bytes.map_or(1, |b| varint_len(b.len() as i64) + b.len())
}

/// Appends a varint length and the bytes, or -1 for `None`.
fn put_nullable(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(buf, -1),
        Some(bytes) => {
            put_varint(buf, bytes.len() as i64);
            buf.extend_from_slice(bytes);
        }
    }
}

/// The one writer of v2 record batches (message format v2, magic 2), as the Java producer lays
/// them out: records are encoded into the uncompressed records section as they are appended
/// (offset deltas 0, 1, 2, ...; timestamp deltas from the first record's timestamp, negative ones
/// included), headers in order with duplicate names, null values and names that are not UTF-8 as
/// given; [`finish`](Self::finish) compresses the section and writes the 61-byte header with its
/// CRC-32C (over the bytes from the attributes on). The section is written behind room for the
/// header, so an uncompressed batch is finished in place, without a copy.
#[derive(Debug, Clone)]
pub(crate) struct BatchBuilder {
    /// Room for the header, then the uncompressed records section.
    buf: Vec<u8>,
    count: i32,
    first_timestamp: i64,
    max_timestamp: i64,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl BatchBuilder {
    /// An empty batch whose records section starts with room for `capacity` bytes.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self::in_buffer(Vec::with_capacity(BATCH_HEADER_LEN + capacity))
    }

    /// An empty batch written into `buf` (a finished batch's buffer, reused), whatever it holds.
    pub(crate) fn in_buffer(mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.resize(BATCH_HEADER_LEN, 0);
        Self {
            buf,
            count: 0,
            first_timestamp: 0,
            max_timestamp: 0,
        }
    }

    /// Records appended so far.
    pub(crate) fn count(&self) -> usize {
        self.count as usize
    }

    /// Bytes of the batch, uncompressed, header included.
    pub(crate) fn size(&self) -> usize {
        self.buf.len()
    }

    /// Bytes the batch grows by if a record with these fields is appended, its length prefix
    /// included.
    pub(crate) fn growth(
        &self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &Headers,
    ) -> usize {
        let body = self.body_len(timestamp_ms, key, value, headers);
        varint_len(body as i64) + body
    }

    fn timestamp_delta(&self, timestamp_ms: i64) -> i64 {
        if self.count == 0 {
            0
        } else {
            timestamp_ms.wrapping_sub(self.first_timestamp)
        }
    }

    fn body_len(
        &self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &Headers,
    ) -> usize {
        let headers_len: usize = headers
            .iter()
            .map(|h| nullable_len(Some(h.name_bytes())) + nullable_len(h.value()))
            .sum();
        1 + varint_len(self.timestamp_delta(timestamp_ms))
            + varint_len(i64::from(self.count))
            + nullable_len(key)
            + nullable_len(value)
            + varint_len(headers.len() as i64)
            + headers_len
    }

    /// Appends a record (attributes 0, CreateTime `timestamp_ms`).
    pub(crate) fn append(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &Headers,
    ) {
        if self.count == 0 {
            self.first_timestamp = timestamp_ms;
            self.max_timestamp = timestamp_ms;
        }
        let body = self.body_len(timestamp_ms, key, value, headers);
        let timestamp_delta = self.timestamp_delta(timestamp_ms);
        let section = &mut self.buf;
        put_varint(section, body as i64);
        section.push(0); // attributes
        put_varint(section, timestamp_delta);
        put_varint(section, i64::from(self.count));
        put_nullable(section, key);
        put_nullable(section, value);
        put_varint(section, headers.len() as i64);
        for header in headers {
            put_nullable(section, Some(header.name_bytes()));
            put_nullable(section, header.value());
        }
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        self.count += 1;
    }

    /// The batch: the records section compressed with `codec`, under a sealed header with
    /// `base_offset` (0 for a produced batch: the broker assigns offsets) and `stamp`.
    pub(crate) fn finish(self, codec: Codec, base_offset: i64, stamp: Stamp) -> Vec<u8> {
        let mut batch = if codec == Codec::None {
            self.buf
        } else {
            let mut out = Vec::with_capacity(self.buf.len() / 2);
            out.resize(BATCH_HEADER_LEN, 0);
            compress_into(codec, &self.buf[BATCH_HEADER_LEN..], &mut out);
            out
        };
        let length = (batch.len() - LOG_OVERHEAD) as i32;
        let mut header = Vec::with_capacity(BATCH_HEADER_LEN);
        header.extend_from_slice(&base_offset.to_be_bytes());
        header.extend_from_slice(&length.to_be_bytes());
        header.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch (the broker's)
        header.push(2); // magic
        header.extend_from_slice(&0u32.to_be_bytes()); // CRC: `restamp`
        header.extend_from_slice(&(codec as i16).to_be_bytes());
        header.extend_from_slice(&(self.count - 1).max(0).to_be_bytes()); // last offset delta
        header.extend_from_slice(&self.first_timestamp.to_be_bytes());
        header.extend_from_slice(&self.max_timestamp.to_be_bytes());
        header.extend_from_slice(&[0; 14]); // producer id, epoch, base sequence: `restamp`
        header.extend_from_slice(&self.count.to_be_bytes());
        batch[..BATCH_HEADER_LEN].copy_from_slice(&header);
        restamp(&mut batch, stamp);
        batch
    }
}

/// Writes `stamp` into a batch [`BatchBuilder::finish`] wrote and seals it again (the CRC covers
/// the producer fields): a retried batch keeps its bytes and changes only these after an epoch bump.
pub(crate) fn restamp(batch: &mut [u8], stamp: Stamp) {
    // The low attributes byte holds the codec and the flags; bit 4 is "transactional".
    let bit = TRANSACTIONAL_BIT as u8;
    let flags = &mut batch[ATTRIBUTES_AT + 1];
    *flags = (*flags & !bit) | if stamp.transactional { bit } else { 0 };
    batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&stamp.producer_id.to_be_bytes());
    batch[PRODUCER_ID_AT + 8..PRODUCER_ID_AT + 10]
        .copy_from_slice(&stamp.producer_epoch.to_be_bytes());
    batch[PRODUCER_ID_AT + 10..RECORD_COUNT_AT].copy_from_slice(&stamp.base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Appends `section` compressed with `codec` to `out`. Writing to a `Vec` cannot fail, and the
/// encoders fail only on a failing writer.
fn compress_into(codec: Codec, section: &[u8], out: &mut Vec<u8>) {
    use std::io::Write;
    const INFALLIBLE: &str = "compressing into memory does not fail";
    match codec {
        Codec::None => out.extend_from_slice(section),
        Codec::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            encoder.write_all(section).expect(INFALLIBLE);
            encoder.finish().expect(INFALLIBLE);
        }
        Codec::Snappy => {
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes()); // version
            out.extend_from_slice(&1i32.to_be_bytes()); // compatible version
            let mut encoder = snap::raw::Encoder::new();
            let mut block = Vec::new();
            for piece in section.chunks(XERIAL_BLOCK) {
                block.resize(snap::raw::max_compress_len(piece.len()), 0);
                let len = encoder.compress(piece, &mut block).expect(INFALLIBLE);
                out.extend_from_slice(&(len as i32).to_be_bytes());
                out.extend_from_slice(&block[..len]);
            }
        }
        Codec::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_mode(lz4_flex::frame::BlockMode::Independent)
                .block_size(lz4_flex::frame::BlockSize::Max64KB);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            encoder.write_all(section).expect(INFALLIBLE);
            encoder.finish().expect(INFALLIBLE);
        }
        Codec::Zstd => out.extend(ruzstd::encoding::compress_to_vec(
            section,
            ruzstd::encoding::CompressionLevel::Fastest,
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, Record,
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
        /// Raw names: [`encode_batch`] (kafka-protocol) needs them UTF-8 and distinct,
        /// [`write_batch`] takes any.
        headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    }

    impl Written {
        /// A record with a key, a value and one header, all derived from `offset`.
        fn simple(offset: i64) -> Self {
            Self {
                offset,
                timestamp: 1_700_000_000_000 + offset,
                key: Some(format!("key-{offset}").into_bytes()),
                value: Some(format!("value-{offset}").into_bytes()),
                headers: vec![(b"h".to_vec(), Some(format!("hv-{offset}").into_bytes()))],
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
                    .map(|(name, value)| {
                        Header::from_raw(Bytes::from(name.clone()), value.clone().map(Bytes::from))
                    })
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

    /// Encodes `records` as ONE batch with kafka-protocol's encoder (which starts a new batch
    /// whenever the batch properties change, and these are the same for all of them).
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
                    .map(|(name, value)| {
                        let name = String::from_utf8(name.clone()).expect("UTF-8 header name");
                        (StrBytes::from_string(name), value.clone().map(Bytes::from))
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

    /// How [`write_batch`] compresses the records section: as the producer does ([`Codec`], one
    /// frame), or framed in ways other writers use, which the producer's encoder never writes.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Framing {
        /// [`BatchBuilder::finish`] with this codec.
        Produced(Codec),
        /// The xerial framing, in blocks of this many uncompressed bytes.
        SnappyXerial(usize),
        /// One raw snappy block.
        SnappyRaw,
        /// LZ4 frames, each of this many uncompressed bytes.
        Lz4(usize),
        /// Zstd frames, each of this many uncompressed bytes.
        Zstd(usize),
    }

    impl Framing {
        const NONE: Framing = Framing::Produced(Codec::None);
        const GZIP: Framing = Framing::Produced(Codec::Gzip);

        /// Every way of writing: the producer's five codecs, then the other framings, each
        /// splitting the data where it can.
        const ALL: [Framing; 9] = [
            Framing::NONE,
            Framing::GZIP,
            Framing::Produced(Codec::Snappy),
            Framing::Produced(Codec::Lz4),
            Framing::Produced(Codec::Zstd),
            Framing::SnappyXerial(40),
            Framing::SnappyRaw,
            Framing::Lz4(100),
            Framing::Zstd(100),
        ];

        /// The codec id in the batch attributes.
        fn id(self) -> i16 {
            match self {
                Framing::Produced(codec) => codec as i16,
                Framing::SnappyXerial(_) | Framing::SnappyRaw => SNAPPY,
                Framing::Lz4(_) => LZ4,
                Framing::Zstd(_) => ZSTD,
            }
        }

        /// `data` compressed as this framing writes it.
        fn compress(self, data: &[u8]) -> Vec<u8> {
            // Pieces of at least one byte; no data is one empty piece (one empty frame).
            let pieces = |size: usize| -> Vec<&[u8]> {
                if data.is_empty() {
                    vec![data]
                } else {
                    data.chunks(size.max(1)).collect()
                }
            };
            match self {
                Framing::Produced(codec) => {
                    let mut out = Vec::new();
                    compress_into(codec, data, &mut out);
                    out
                }
                Framing::SnappyXerial(block) => {
                    let mut out = XERIAL_MAGIC.to_vec();
                    out.extend_from_slice(&1i32.to_be_bytes());
                    out.extend_from_slice(&1i32.to_be_bytes());
                    for piece in pieces(block) {
                        let compressed = snap::raw::Encoder::new()
                            .compress_vec(piece)
                            .expect("snappy");
                        out.extend_from_slice(&(compressed.len() as i32).to_be_bytes());
                        out.extend_from_slice(&compressed);
                    }
                    out
                }
                Framing::SnappyRaw => snap::raw::Encoder::new()
                    .compress_vec(data)
                    .expect("snappy"),
                Framing::Lz4(frame) => {
                    let mut out = Vec::new();
                    for piece in pieces(frame) {
                        let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
                        encoder.write_all(piece).expect("lz4");
                        out.extend(encoder.finish().expect("lz4"));
                    }
                    out
                }
                Framing::Zstd(frame) => pieces(frame)
                    .into_iter()
                    .flat_map(|piece| {
                        ruzstd::encoding::compress_to_vec(
                            piece,
                            ruzstd::encoding::CompressionLevel::Fastest,
                        )
                    })
                    .collect(),
            }
        }
    }

    /// `records` (consecutive offsets) in the producer's [`BatchBuilder`].
    fn builder_of(records: &[Written]) -> BatchBuilder {
        let mut builder = BatchBuilder::default();
        for record in records {
            let headers: Headers = record
                .headers
                .iter()
                .map(|(name, value)| {
                    Header::from_raw(Bytes::from(name.clone()), value.clone().map(Bytes::from))
                })
                .collect();
            builder.append(
                record.timestamp,
                record.key.as_deref(),
                record.value.as_deref(),
                &headers,
            );
        }
        builder
    }

    /// The uncompressed records section of `records` as the producer's encoder writes it.
    fn records_section(records: &[Written]) -> Vec<u8> {
        builder_of(records).finish(Codec::None, 0, Stamp::NONE)[BATCH_HEADER_LEN..].to_vec()
    }

    /// `records` (consecutive offsets) as one batch by the producer's encoder, compressed as
    /// `framing` says.
    fn write_batch(framing: Framing, records: &[Written]) -> Bytes {
        let base = records.first().map_or(0, |record| record.offset);
        let builder = builder_of(records);
        if let Framing::Produced(codec) = framing {
            return Bytes::from(builder.finish(codec, base, Stamp::NONE));
        }
        let plain = builder.finish(Codec::None, base, Stamp::NONE);
        let section = framing.compress(&plain[BATCH_HEADER_LEN..]);
        let mut batch = [&plain[..BATCH_HEADER_LEN], &section].concat();
        let length = (batch.len() - LOG_OVERHEAD) as i32;
        batch[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
        batch[ATTRIBUTES_AT + 1] = framing.id() as u8;
        restamp(&mut batch, Stamp::NONE);
        Bytes::from(batch)
    }

    /// Writes the CRC of the single batch in `bytes`.
    fn seal(bytes: &mut [u8]) {
        let crc = crc32c_bitwise(&bytes[ATTRIBUTES_AT..]);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
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

    /// Decodes input that holds no corrupt batch.
    fn decode(input: Bytes, from_offset: i64, aborted: &[AbortedTransaction]) -> DecodedRecords {
        let decoded = decode_records(input, from_offset, aborted);
        assert_eq!(decoded.corrupt, None, "unexpected corruption");
        decoded
    }

    /// Decodes input that holds a corrupt batch: what decoded before it, and the report.
    fn decode_corrupt(input: Bytes, from_offset: i64) -> (DecodedRecords, CorruptBatch) {
        let mut decoded = decode_records(input, from_offset, &[]);
        let corrupt = decoded.corrupt.take().expect("a corrupt batch");
        (decoded, corrupt)
    }

    /// CRC-32C (Castagnoli), bit by bit: a second implementation for tests that edit a batch and
    /// must re-seal it.
    fn crc32c_bitwise(data: &[u8]) -> u32 {
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
        seal(&mut bytes);
        Bytes::from(bytes)
    }

    /// The memory (address, length) of every non-empty key, value, header name and header value
    /// of `records`, with the record's offset.
    fn pieces(records: &[FetchedRecord]) -> Vec<(i64, usize, usize)> {
        let mut all = Vec::new();
        for record in records {
            let headers = record
                .headers
                .iter()
                .flat_map(|header| [Some(header.name_bytes()), header.value()]);
            let fields = [record.key.as_deref(), record.value.as_deref()];
            for piece in fields.into_iter().chain(headers).flatten() {
                if !piece.is_empty() {
                    all.push((record.offset, piece.as_ptr() as usize, piece.len()));
                }
            }
        }
        all
    }

    #[test]
    fn crc_of_the_crate_matches_the_bitwise_one() {
        for data in [&b""[..], b"123456789", &[0xff; 100]] {
            assert_eq!(crc32c::crc32c(data), crc32c_bitwise(data));
        }
        // The CRC-32C check value.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
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
                    (b"b".to_vec(), Some(b"2".to_vec())),
                    (b"a".to_vec(), None),
                    ("ключ".as_bytes().to_vec(), Some(Vec::new())),
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

        let decoded = decode(input.clone(), 10, &[]);

        assert_eq!(decoded.records, expected(&written));
        assert_eq!(decoded.next_offset, Some(15));
        let start = input.as_ptr() as usize;
        for (offset, at, len) in pieces(&decoded.records) {
            assert!(
                at >= start && at + len <= start + input.len(),
                "{len} bytes of offset {offset} were copied"
            );
        }
    }

    #[test]
    fn compressed_batch_records_share_one_buffer() {
        let written: Vec<Written> = (0..20).map(Written::simple).collect();
        let input = write_batch(Framing::Zstd(1000), &written);
        let decoded = decode(input.clone(), 0, &[]);
        assert_eq!(decoded.records, expected(&written));
        // Every piece is in one buffer (the records section of 20 simple records is well under
        // 2 KiB), and not in the input.
        let all = pieces(&decoded.records);
        let lowest = all.iter().map(|&(_, at, _)| at).min().expect("pieces");
        let highest = all
            .iter()
            .map(|&(_, at, len)| at + len)
            .max()
            .expect("pieces");
        assert!(
            highest - lowest < 2048,
            "pieces spread over {} bytes",
            highest - lowest
        );
        let start = input.as_ptr() as usize;
        assert!(
            lowest >= start + input.len() || highest <= start,
            "not decompressed"
        );
    }

    #[test]
    fn duplicate_header_names_and_null_values_keep_their_order() {
        let record = Written {
            offset: 7,
            timestamp: 1_700_000_000_000,
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![
                (b"trace".to_vec(), Some(b"a".to_vec())),
                (b"other".to_vec(), None),
                (b"trace".to_vec(), Some(b"b".to_vec())),
                (b"trace".to_vec(), None),
                (b"other".to_vec(), Some(Vec::new())),
            ],
        };
        for codec in Framing::ALL {
            let decoded = decode(write_batch(codec, std::slice::from_ref(&record)), 0, &[]);
            assert_eq!(decoded.records, vec![record.expected()], "{codec:?}");
            let headers = &decoded.records[0].headers;
            let traces: Vec<Option<&[u8]>> = headers.get_all("trace").map(Header::value).collect();
            assert_eq!(
                traces,
                [Some(&b"a"[..]), Some(&b"b"[..]), None],
                "{codec:?}"
            );
            // Null is not empty.
            let others: Vec<Option<&[u8]>> = headers.get_all("other").map(Header::value).collect();
            assert_eq!(others, [None, Some(&b""[..])], "{codec:?}");
        }
    }

    #[test]
    fn header_names_that_are_not_utf8_decode() {
        let odd = Written {
            headers: vec![
                (b"\xff\xfekey".to_vec(), Some(b"v".to_vec())),
                (b"ok".to_vec(), None),
            ],
            ..Written::simple(1)
        };
        let input = write_batch(
            Framing::NONE,
            &[Written::simple(0), odd.clone(), Written::simple(2)],
        );
        let decoded = decode(input, 0, &[]);
        assert_eq!(decoded.records.len(), 3);
        assert_eq!(decoded.records[1], odd.expected());
        let header = decoded.records[1].headers.iter().next().expect("a header");
        assert_eq!(header.name_bytes(), b"\xff\xfekey");
        assert_eq!(header.name(), "\u{fffd}\u{fffd}key");
        assert_eq!(decoded.next_offset, Some(3));
    }

    #[test]
    fn every_codec_decodes_in_the_default_build() {
        let written: Vec<Written> = (0..50).map(Written::simple).collect();
        for codec in Framing::ALL {
            let input = write_batch(codec, &written);
            assert_eq!(
                read_i16(&input, ATTRIBUTES_AT),
                Some(codec.id()),
                "{codec:?}"
            );
            let decoded = decode(input, 0, &[]);
            assert_eq!(decoded.records, expected(&written), "{codec:?}");
            assert_eq!(decoded.next_offset, Some(50), "{codec:?}");
        }
        // Several frames or blocks in one batch, and an empty batch, for the codecs that frame.
        for codec in [
            Framing::SnappyXerial(1),
            Framing::SnappyXerial(1 << 20),
            Framing::Lz4(7),
            Framing::Zstd(7),
        ] {
            let decoded = decode(write_batch(codec, &written), 0, &[]);
            assert_eq!(decoded.records, expected(&written), "{codec:?}");
            let empty = decode(write_batch(codec, &[]), 0, &[]);
            assert!(empty.records.is_empty(), "{codec:?}");
        }
    }

    /// One batch per codec, as the Java client (Kafka 4.1's `MemoryRecords`, with lz4-java, zstd-jni
    /// and snappy-java) writes it: printed by `integration-tests/java/BatchFixtures.java`.
    const JAVA_BATCHES: [(&str, &str); 5] = [
        (
            "none",
            concat!(
                "00000000000000640000013affffffff023fa3484d0000000000020000018bcfe568000000018bcfe56802ff",
                "ffffffffffffffffffffffffff00000003ae01000000046b307c763078797a78797a78797a78797a78797a78",
                "797a78797a78797a78797a78797a78797a78797a78797a78797a78797a78797a78797a78797a78797a78797a",
                "06066475700261066475700262066e756c01aa01000202017c763178797a78797a78797a78797a78797a7879",
                "7a78797a78797a78797a78797a78797a78797a78797a78797a78797a78797a78797a78797a78797a78797a06",
                "066475700261066475700262066e756c01ae01000404046b327c763278797a78797a78797a78797a78797a78",
                "797a78797a78797a78797a78797a78797a78797a78797a78797a78797a78797a78797a78797a78797a78797a",
                "06066475700261066475700262066e756c01",
            ),
        ),
        (
            "gzip",
            concat!(
                "00000000000000640000007dffffffff022518131f0001000000020000018bcfe568000000018bcfe56802ff",
                "ffffffffffffffffffffffffff000000031f8b08000000000000ff5bc7c8c0c0c0926d505366505159453662",
                "634b292d604a0493496c79a5398cab18199898186bca0ca96bec3a46061616966ca39a3223ea1a0c00ecf695",
                "6f09010000",
            ),
        ),
        (
            "snappy",
            concat!(
                "00000000000000640000008effffffff028218a3d20002000000020000018bcfe568000000018bcfe56802ff",
                "ffffffffffffffffffffffffff0000000382534e4150505900000000010000000100000049890234ae010000",
                "00046b307c763078797ae20300180606647570026105063862066e756c01aa01000202017c7631e254000478",
                "794a570028ae01000404046b327c7632fe5900365900",
            ),
        ),
        (
            "lz4",
            concat!(
                "000000000000006400000089ffffffff02df9c0ca60003000000020000018bcfe568000000018bcfe56802ff",
                "ffffffffffffffffffffffffff0000000304224d1860408249000000efae01000000046b307c763078797a03",
                "002671060664757002610600ff0062066e756c01aa01000202017c76315400260f570002bfae01000404046b",
                "327c763259003650066e756c0100000000",
            ),
        ),
        (
            "zstd",
            concat!(
                "00000000000000640000007fffffffff02c001ae680004000000020000018bcfe568000000018bcfe56802ff",
                "ffffffffffffffffffffffffff0000000328b52ffd0058140200f402ae01000000046b307c763078797a0606",
                "647570026162066e756c01aa01000202017c7631ae01000404046b327c76320500cb05ea5a7c81af706a8ab0",
                "d9d32901010000",
            ),
        ),
    ];

    #[test]
    fn java_batches_decode() {
        let want: Vec<Written> = (0..3)
            .map(|i| Written {
                offset: 100 + i,
                timestamp: 1_700_000_000_000 + i,
                key: (i != 1).then(|| format!("k{i}").into_bytes()),
                value: Some(format!("v{i}{}", "xyz".repeat(20)).into_bytes()),
                headers: vec![
                    (b"dup".to_vec(), Some(b"a".to_vec())),
                    (b"dup".to_vec(), Some(b"b".to_vec())),
                    (b"nul".to_vec(), None),
                ],
            })
            .collect();
        for (id, (name, hex)) in JAVA_BATCHES.into_iter().enumerate() {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex"))
                .collect();
            let batch = Bytes::from(bytes);
            assert_eq!(read_i16(&batch, ATTRIBUTES_AT), Some(id as i16), "{name}");
            let decoded = decode(batch, 0, &[]);
            assert_eq!(decoded.records, expected(&want), "{name}");
            assert_eq!(decoded.next_offset, Some(103), "{name}");
        }
    }

    #[test]
    fn gzip_and_snappy_batches_of_kafka_protocol_decode() {
        let written: Vec<Written> = (0..20).map(Written::simple).collect();
        let gzip = encode_batch(PLAIN, Compression::Gzip, &written[..10]);
        let snappy = encode_batch(PLAIN, Compression::Snappy, &written[10..]);
        assert_eq!(read_i16(&gzip, ATTRIBUTES_AT), Some(1));
        assert_eq!(read_i16(&snappy, ATTRIBUTES_AT), Some(2));

        let decoded = decode(concat(&[&gzip, &snappy]), 0, &[]);
        assert_eq!(decoded.records, expected(&written));
        assert_eq!(decoded.next_offset, Some(20));
    }

    #[test]
    fn zstd_skippable_frames_are_skipped() {
        let written: Vec<Written> = (0..5).map(Written::simple).collect();
        let mut section = Vec::new();
        // A skippable frame: magic 0x184D2A50..=0x184D2A5F, a little-endian length, that many bytes.
        section.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        section.extend_from_slice(&3u32.to_le_bytes());
        section.extend_from_slice(b"abc");
        section.extend(Framing::Zstd(1000).compress(&records_section(&written)));
        let plain = write_batch(Framing::NONE, &written);
        let batch = edit_batch(
            &Bytes::from([&plain[..BATCH_HEADER_LEN], &section].concat()),
            |bytes| {
                let length = (bytes.len() - LOG_OVERHEAD) as i32;
                bytes[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
                bytes[ATTRIBUTES_AT + 1] |= ZSTD as u8;
            },
        );
        let decoded = decode(batch, 0, &[]);
        assert_eq!(decoded.records, expected(&written));
    }

    #[test]
    fn truncated_last_batch_is_dropped() {
        let (first, first_written) = batch(PLAIN, 0..3);
        let (second, _) = batch(PLAIN, 3..6);
        let input = concat(&[&first, &second]);

        // Every cut inside the second batch, from "not even a header" to "one byte short".
        for cut in first.len() + 1..input.len() {
            let decoded = decode_records(input.slice(..cut), 0, &[]);
            assert_eq!(decoded.corrupt, None, "cut at {cut}");
            assert_eq!(decoded.records, expected(&first_written), "cut at {cut}");
            assert_eq!(decoded.next_offset, Some(3), "cut at {cut}");
        }
    }

    #[test]
    fn only_a_partial_batch_gives_nothing() {
        let (only, _) = batch(PLAIN, 0..3);
        for cut in 0..only.len() {
            let decoded = decode_records(only.slice(..cut), 0, &[]);
            assert_eq!(decoded.corrupt, None, "cut at {cut}");
            assert!(decoded.records.is_empty(), "cut at {cut}");
            assert_eq!(decoded.next_offset, None, "cut at {cut}");
        }
    }

    #[test]
    fn records_below_from_offset_are_skipped() {
        let (first, _) = batch(PLAIN, 0..3);
        let (second, second_written) = batch(PLAIN, 3..6);
        let input = concat(&[&first, &second]);

        let decoded = decode(input.clone(), 4, &[]);
        assert_eq!(decoded.records, expected(&second_written[1..]));
        assert_eq!(decoded.next_offset, Some(6));

        // All records below: nothing handed out, but the position still moves past the batches.
        let decoded = decode(input, 6, &[]);
        assert!(decoded.records.is_empty());
        assert_eq!(decoded.next_offset, Some(6));
    }

    #[test]
    fn unknown_codecs_are_corrupt() {
        let (plain, written) = batch(PLAIN, 0..1);
        for codec in 5..=7u8 {
            let claimed = edit_batch(&plain, |bytes| bytes[ATTRIBUTES_AT + 1] |= codec);
            let (decoded, corrupt) = decode_corrupt(concat(&[&claimed]), 0);
            assert!(decoded.records.is_empty());
            assert!(
                corrupt.reason.contains(&format!(
                    "unknown compression codec {codec} in the batch at offset 0"
                )),
                "{corrupt:?}"
            );
            assert_eq!((corrupt.offset, corrupt.skip_to), (0, 1));
        }
        // A known codec over data it did not compress: a decompression failure, named.
        for (codec, name) in [(1u8, "gzip"), (2, "snappy"), (3, "lz4"), (4, "zstd")] {
            let claimed = edit_batch(&plain, |bytes| bytes[ATTRIBUTES_AT + 1] |= codec);
            let (_, corrupt) = decode_corrupt(claimed, 0);
            assert!(
                corrupt.reason.contains("cannot decompress") && corrupt.reason.contains(name),
                "{name}: {corrupt:?}"
            );
        }
        drop(written);
    }

    #[test]
    fn control_batch_is_skipped_and_passed() {
        let (data, written) = batch(txn(7), 0..3);
        let commit = marker(7, 3, false);

        let decoded = decode(concat(&[&data, &commit]), 0, &[]);
        assert_eq!(decoded.records, expected(&written));
        assert_eq!(decoded.next_offset, Some(4));

        // A fetch that holds nothing but the marker must still move the position past it.
        let decoded = decode(commit, 3, &[]);
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

        let decoded = decode(input.clone(), 0, &aborted);
        let kept: Vec<Written> =
            [q_1_written, plain_written, q_2_written, p_committed_written].concat();
        assert_eq!(decoded.records, expected(&kept));
        assert_eq!(decoded.next_offset, Some(13));

        // read_uncommitted (no aborted list): everything but the markers.
        let decoded = decode(input, 0, &[]);
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

        let decoded = decode(input, 0, &aborted);
        assert_eq!(decoded.records, expected(&third_written));
        assert_eq!(decoded.next_offset, Some(8));
    }

    #[test]
    fn corrupted_byte_is_a_crc_mismatch_after_the_good_records() {
        let (first, first_written) = batch(PLAIN, 40..42);
        let (second, _) = batch(PLAIN, 42..45);
        let mut bytes = concat(&[&first, &second]).to_vec();
        // Flip a bit in the last byte of the second batch (its last record's last header value).
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let input = Bytes::from(bytes);

        let (decoded, corrupt) = decode_corrupt(input.clone(), 40);
        assert_eq!(decoded.records, expected(&first_written));
        assert_eq!(decoded.next_offset, Some(42));
        assert!(
            corrupt
                .reason
                .contains("CRC mismatch in the batch at offset 42"),
            "{corrupt:?}"
        );
        assert_eq!((corrupt.offset, corrupt.skip_to), (42, 45));

        // Also when the corrupt batch would hand out nothing but its last record.
        let (decoded, corrupt) = decode_corrupt(input.clone(), 44);
        assert!(decoded.records.is_empty());
        assert!(corrupt.reason.contains("CRC"), "{corrupt:?}");
        assert_eq!(corrupt.skip_to, 45);

        // A corrupt batch claims to end at or below the fetch position (its header is not to be
        // trusted, and the broker sent it for this position): the position still moves forward.
        let (_, corrupt) = decode_corrupt(input, 45);
        assert_eq!(corrupt.skip_to, 46);
    }

    #[test]
    fn a_corrupt_batch_between_good_ones_stops_the_decoding_there() {
        let good_1: Vec<Written> = (0..3).map(Written::simple).collect();
        let bad: Vec<Written> = (3..8).map(Written::simple).collect();
        let good_2: Vec<Written> = (8..10).map(Written::simple).collect();
        for codec in Framing::ALL {
            let bad_batch = write_batch(codec, &bad);
            // A byte of the records section flipped and the CRC re-sealed: the records are
            // malformed (or decompress to garbage), not just the CRC.
            let mut broken = bad_batch.to_vec();
            let middle = BATCH_HEADER_LEN + (broken.len() - BATCH_HEADER_LEN) / 2;
            broken[middle] = broken[middle].wrapping_add(0x55);
            // Not sealed: a CRC mismatch.
            let crc = Bytes::from(broken.clone());
            seal(&mut broken);
            let resealed = Bytes::from(broken);
            for bad_batch in [crc, resealed] {
                let input = concat(&[
                    &write_batch(codec, &good_1),
                    &bad_batch,
                    &write_batch(codec, &good_2),
                ]);
                let decoded = decode_records(input, 0, &[]);
                let Some(corrupt) = decoded.corrupt else {
                    // A flip inside a key or value of an uncompressed batch with a re-sealed CRC
                    // is not corruption: those bytes are anything.
                    continue;
                };
                assert_eq!(decoded.records, expected(&good_1), "{codec:?}");
                assert_eq!(decoded.next_offset, Some(3), "{codec:?}");
                assert_eq!((corrupt.offset, corrupt.skip_to), (3, 8), "{codec:?}");
                assert!(corrupt.reason.contains("offset 3"), "{corrupt:?}");
            }
        }
        // A CRC mismatch in the last offset delta: the batch claims to end far later, but the
        // good batch after it bounds the skip.
        let mut claims_more = write_batch(Framing::NONE, &bad).to_vec();
        claims_more[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&1_000i32.to_be_bytes());
        let good_after = write_batch(Framing::NONE, &good_2);
        let input = concat(&[&Bytes::from(claims_more.clone()), &good_after]);
        let (_, corrupt) = decode_corrupt(input, 3);
        assert!(corrupt.reason.contains("CRC mismatch"), "{corrupt:?}");
        assert_eq!(corrupt.skip_to, 8);
        // Alone in the response, the header is all there is.
        let (_, corrupt) = decode_corrupt(Bytes::from(claims_more), 3);
        assert_eq!(corrupt.skip_to, 1_004);

        // And a corrupt batch first: nothing, and the position moves past it.
        let mut broken = write_batch(Framing::NONE, &bad).to_vec();
        broken[BATCH_HEADER_LEN] ^= 0x80;
        let input = concat(&[&Bytes::from(broken), &write_batch(Framing::NONE, &good_2)]);
        let (decoded, corrupt) = decode_corrupt(input, 3);
        assert!(decoded.records.is_empty());
        assert_eq!(decoded.next_offset, None);
        assert_eq!(corrupt.skip_to, 8);
    }

    #[test]
    fn malformed_records_are_named() {
        let written: Vec<Written> = (0..2).map(Written::simple).collect();
        let good = write_batch(Framing::NONE, &written);
        // The first record's length varint (one byte, zigzag) made one longer, and a byte added
        // at the end, so the lengths add up: the record is longer than its fields.
        let mut longer = good.to_vec();
        longer[BATCH_HEADER_LEN] += 2;
        longer.push(0);
        let longer = edit_batch(&Bytes::from(longer), |bytes| {
            let length = (bytes.len() - LOG_OVERHEAD) as i32;
            bytes[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
        });
        let (_, corrupt) = decode_corrupt(longer, 0);
        assert!(
            corrupt
                .reason
                .contains("malformed record batch at offset 0: record 0"),
            "{corrupt:?}"
        );

        // Bytes after the last record.
        let trailing = edit_batch(&Bytes::from([&good[..], &[0u8; 9]].concat()), |bytes| {
            let length = (bytes.len() - LOG_OVERHEAD) as i32;
            bytes[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
        });
        let (_, corrupt) = decode_corrupt(trailing, 0);
        assert!(
            corrupt.reason.contains("9 bytes after its 2 records"),
            "{corrupt:?}"
        );

        // Fewer records than claimed.
        let fewer = edit_batch(&good, |bytes| {
            bytes[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&3i32.to_be_bytes());
        });
        let (_, corrupt) = decode_corrupt(fewer, 0);
        assert!(corrupt.reason.contains("record 2"), "{corrupt:?}");
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

        let decoded = decode(stamped, 0, &[]);
        let mut want = expected(&written);
        for record in &mut want {
            record.timestamp_ms = append_time;
            record.timestamp_type = kafkit_resilience::TimestampType::LogAppendTime;
        }
        assert_eq!(decoded.records, want);
    }

    #[test]
    fn impossible_record_count_is_corrupt() {
        let written: Vec<Written> = (0..2).map(Written::simple).collect();
        for codec in [Framing::NONE, Framing::GZIP, Framing::Zstd(1000)] {
            let inflated = edit_batch(&write_batch(codec, &written), |bytes| {
                bytes[RECORD_COUNT_AT..RECORD_COUNT_AT + 4]
                    .copy_from_slice(&i32::MAX.to_be_bytes());
            });
            let (_, corrupt) = decode_corrupt(inflated, 0);
            assert!(
                corrupt.reason.contains("claims 2147483647 records"),
                "{codec:?}: {corrupt:?}"
            );
            let negative = edit_batch(&write_batch(codec, &written), |bytes| {
                bytes[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&(-5i32).to_be_bytes());
            });
            let (_, corrupt) = decode_corrupt(negative, 0);
            assert!(corrupt.reason.contains("claims -5 records"), "{corrupt:?}");
        }
    }

    #[test]
    fn decompression_beyond_the_limit_is_corrupt() {
        // A raw snappy block says its length up front: claim one byte past the limit.
        let mut claim = Vec::new();
        let mut length = MAX_DECOMPRESSED_BATCH as u64 + 1;
        while length >= 0x80 {
            claim.push((length as u8) | 0x80);
            length >>= 7;
        }
        claim.push(length as u8);
        claim.extend_from_slice(&[0; 8]);
        let plain = write_batch(Framing::NONE, &[]);
        let snappy = edit_batch(&Bytes::from([&plain[..], &claim].concat()), |bytes| {
            let length = (bytes.len() - LOG_OVERHEAD) as i32;
            bytes[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
            bytes[ATTRIBUTES_AT + 1] |= SNAPPY as u8;
        });
        let (_, corrupt) = decode_corrupt(snappy, 0);
        assert!(corrupt.reason.contains("more than 64 MiB"), "{corrupt:?}");

        // A streamed codec: lz4 frames of zeros, one byte more than the limit in all.
        let zeros = vec![0u8; 1 << 20];
        let mut frames = Vec::new();
        for _ in 0..64 {
            frames.extend(Framing::Lz4(1 << 20).compress(&zeros));
        }
        frames.extend(Framing::Lz4(1).compress(&[0]));
        let (_, corrupt) = decode_corrupt(
            edit_batch(&Bytes::from([&plain[..], &frames].concat()), |bytes| {
                let length = (bytes.len() - LOG_OVERHEAD) as i32;
                bytes[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
                bytes[ATTRIBUTES_AT + 1] |= LZ4 as u8;
            }),
            0,
        );
        assert!(corrupt.reason.contains("more than 64 MiB"), "{corrupt:?}");
    }

    #[test]
    fn old_message_formats_are_corrupt() {
        let (v2, _) = batch(PLAIN, 5..6);
        for magic in [0u8, 1] {
            let mut bytes = v2.to_vec();
            bytes[MAGIC_AT] = magic;
            let (_, corrupt) = decode_corrupt(Bytes::from(bytes), 0);
            assert!(
                corrupt
                    .reason
                    .contains(&format!("message format v{magic} is not supported")),
                "{corrupt:?}"
            );
            // The header of an old format is not a v2 header: one past where the bytes start.
            assert_eq!((corrupt.offset, corrupt.skip_to), (5, 6));
        }
    }

    #[test]
    fn empty_input_is_no_batch() {
        let decoded = decode(Bytes::new(), 0, &[]);
        assert!(decoded.records.is_empty());
        assert_eq!(decoded.next_offset, None);
    }

    /// A record's contents, without its offset. `utf8_distinct` keeps header names UTF-8 and
    /// distinct (what kafka-protocol's encoder can write).
    fn written_strategy(utf8_distinct: bool) -> impl Strategy<Value = Written> {
        let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12));
        let name = if utf8_distinct {
            "\\PC{0,6}".prop_map(String::into_bytes).boxed()
        } else {
            // Few distinct names, so duplicates are common, and any bytes.
            prop_oneof![
                Just(b"a".to_vec()),
                Just(b"\xff\xfe".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..6),
            ]
            .boxed()
        };
        let headers = proptest::collection::vec((name, bytes()), 0..4);
        (0i64..4_000_000_000_000, bytes(), bytes(), headers).prop_map(
            move |(timestamp, key, value, mut headers)| {
                if utf8_distinct {
                    let mut seen = HashSet::new();
                    headers.retain(|(name, _)| seen.insert(name.clone()));
                }
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

    /// How a generated batch is encoded.
    #[derive(Debug, Clone, Copy)]
    enum Encoder {
        /// kafka-protocol's encoder.
        Protocol(Compression),
        /// [`write_batch`].
        Hand(Framing),
    }

    /// Batches: (gap before the batch, encoder, records).
    fn batches_strategy() -> impl Strategy<Value = Vec<(i64, Encoder, Vec<Written>)>> {
        let protocol = prop_oneof![
            Just(Compression::None),
            Just(Compression::Gzip),
            Just(Compression::Snappy),
        ]
        .prop_flat_map(|codec| {
            (
                Just(Encoder::Protocol(codec)),
                proptest::collection::vec(written_strategy(true), 1..5),
            )
        });
        let hand = (proptest::sample::select(Framing::ALL.to_vec()), 1usize..64)
            .prop_map(|(codec, size)| {
                Encoder::Hand(match codec {
                    Framing::SnappyXerial(_) => Framing::SnappyXerial(size),
                    Framing::Lz4(_) => Framing::Lz4(size),
                    Framing::Zstd(_) => Framing::Zstd(size),
                    other => other,
                })
            })
            .prop_flat_map(|encoder| {
                (
                    Just(encoder),
                    proptest::collection::vec(written_strategy(false), 1..5),
                )
            });
        proptest::collection::vec(
            (0i64..3, prop_oneof![protocol, hand])
                .prop_map(|(gap, (encoder, records))| (gap, encoder, records)),
            0..6,
        )
    }

    /// Lays the batches out at increasing offsets from `base` (gaps between batches as after
    /// compaction) and encodes them; returns each batch with its records, and the offset after
    /// the last.
    fn lay_out(
        base: i64,
        batches: Vec<(i64, Encoder, Vec<Written>)>,
    ) -> (Vec<(Bytes, Vec<Written>)>, i64) {
        let mut offset = base;
        let mut encoded = Vec::new();
        for (gap, encoder, mut records) in batches {
            offset += gap;
            for record in &mut records {
                record.offset = offset;
                offset += 1;
            }
            let bytes = match encoder {
                Encoder::Protocol(codec) => encode_batch(PLAIN, codec, &records),
                Encoder::Hand(codec) => write_batch(codec, &records),
            };
            encoded.push((bytes, records));
        }
        (encoded, offset)
    }

    /// What must hold of any decoding, whatever the input: the position moves forward past a
    /// corrupt batch, and the good records are in offset order at or after `from_offset`.
    fn check_invariants(decoded: &DecodedRecords, from_offset: i64) -> Result<(), TestCaseError> {
        if let Some(corrupt) = &decoded.corrupt {
            prop_assert!(
                corrupt.skip_to > from_offset,
                "{corrupt:?} from {from_offset}"
            );
            if let Some(next) = decoded.next_offset {
                prop_assert!(corrupt.skip_to > next, "{corrupt:?} after {next}");
            }
            prop_assert!(!corrupt.reason.is_empty());
        }
        for record in &decoded.records {
            prop_assert!(record.offset >= from_offset);
        }
        Ok(())
    }

    /// The producer fields of a single batch: producer id, epoch, base sequence.
    fn stamp_of(batch: &[u8]) -> Stamp {
        Stamp {
            producer_id: read_i64(batch, PRODUCER_ID_AT).expect("producer id"),
            producer_epoch: read_i16(batch, PRODUCER_ID_AT + 8).expect("epoch"),
            base_sequence: read_i32(batch, PRODUCER_ID_AT + 10).expect("sequence"),
            transactional: read_i16(batch, ATTRIBUTES_AT).expect("attributes") & TRANSACTIONAL_BIT
                != 0,
        }
    }

    #[test]
    fn restamping_changes_the_producer_fields_and_keeps_the_batch_valid() {
        let written: Vec<Written> = (0..3).map(Written::simple).collect();
        let mut batch = builder_of(&written).finish(Codec::Lz4, 0, Stamp::NONE);
        assert_eq!(stamp_of(&batch), Stamp::NONE);
        let before = batch.clone();
        let stamp = Stamp {
            producer_id: 4242,
            producer_epoch: 7,
            base_sequence: 1_000,
            transactional: true,
        };
        restamp(&mut batch, stamp);
        assert_eq!(stamp_of(&batch), stamp);
        let changed: Vec<usize> = (0..batch.len())
            .filter(|&i| batch[i] != before[i])
            .collect();
        assert!(
            changed.iter().all(|&i| (CRC_AT..CRC_AT + 4).contains(&i)
                || i == ATTRIBUTES_AT + 1
                || (PRODUCER_ID_AT..RECORD_COUNT_AT).contains(&i)),
            "only the CRC, the transactional flag and the producer fields change: {changed:?}"
        );
        assert_eq!(
            read_i16(&batch, ATTRIBUTES_AT),
            Some(Codec::Lz4 as i16 | 0x10)
        );
        assert_eq!(
            decode(Bytes::from(batch), 0, &[]).records,
            expected(&written)
        );
    }

    #[test]
    fn an_empty_builder_writes_a_header_only_batch() {
        let builder = BatchBuilder::default();
        assert_eq!(builder.count(), 0);
        assert_eq!(builder.size(), BATCH_HEADER_LEN);
        let batch = builder.finish(Codec::None, 0, Stamp::NONE);
        assert_eq!(batch.len(), BATCH_HEADER_LEN);
        let decoded = decode(Bytes::from(batch), 0, &[]);
        assert!(decoded.records.is_empty());
    }

    proptest! {
        #[test]
        fn encoding_round_trips_through_the_decoder(
            base in 0i64..1_000_000,
            records in proptest::collection::vec(written_strategy(false), 1..20),
            codec in proptest::sample::select(vec![Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd]),
            producer_id in -1i64..1_000_000,
            producer_epoch in -1i16..100,
            base_sequence in -1i32..1_000_000,
        ) {
            let mut records = records;
            for (i, record) in records.iter_mut().enumerate() {
                record.offset = base + i as i64;
            }
            let stamp = Stamp { producer_id, producer_epoch, base_sequence, transactional: false };
            let mut builder = BatchBuilder::with_capacity(64);
            for record in &records {
                let headers: Headers = record
                    .headers
                    .iter()
                    .map(|(name, value)| Header::from_raw(Bytes::from(name.clone()), value.clone().map(Bytes::from)))
                    .collect();
                let predicted = builder.growth(record.timestamp, record.key.as_deref(), record.value.as_deref(), &headers);
                let before = builder.size();
                builder.append(record.timestamp, record.key.as_deref(), record.value.as_deref(), &headers);
                prop_assert_eq!(builder.size() - before, predicted);
            }
            prop_assert_eq!(builder.count(), records.len());
            prop_assert_eq!(builder.clone().finish(Codec::None, base, stamp).len(), builder.size());
            let batch = builder.finish(codec, base, stamp);
            prop_assert_eq!(read_i16(&batch, ATTRIBUTES_AT), Some(codec as i16));
            prop_assert_eq!(stamp_of(&batch), stamp);
            let decoded = decode_records(Bytes::from(batch), base, &[]);
            prop_assert_eq!(decoded.corrupt, None);
            prop_assert_eq!(decoded.records, expected(&records));
            prop_assert_eq!(decoded.next_offset, Some(base + records.len() as i64));
        }

        #[test]
        fn decoding_round_trips(
            base in 0i64..1_000_000,
            batches in batches_strategy(),
            from_fraction in 0.0f64..1.2,
            cut_fraction in 0.0f64..1.0,
            cut_whole in any::<bool>(),
        ) {
            let (encoded, end) = lay_out(base, batches);
            let input = concat(&encoded.iter().map(|(bytes, _)| bytes).collect::<Vec<_>>());
            let cut = if cut_whole { input.len() } else { (input.len() as f64 * cut_fraction) as usize };
            let from_offset = base + ((end - base) as f64 * from_fraction) as i64;

            // The model: records of batches that end within the cut, at or after from_offset.
            let mut want = Vec::new();
            let mut want_next = None;
            let mut batch_end = 0;
            for (bytes, records) in &encoded {
                batch_end += bytes.len();
                if batch_end > cut {
                    break;
                }
                want.extend(records.iter().filter(|r| r.offset >= from_offset).map(Written::expected));
                want_next = records.last().map(|r| r.offset + 1);
            }

            let decoded = decode_records(input.slice(..cut), from_offset, &[]);
            prop_assert_eq!(decoded.corrupt, None);
            prop_assert_eq!(decoded.records, want);
            prop_assert_eq!(decoded.next_offset, want_next);
        }

        #[test]
        fn arbitrary_bytes_never_stall(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            from_offset in -5i64..1_000,
        ) {
            let decoded = decode_records(Bytes::from(bytes), from_offset, &[]);
            check_invariants(&decoded, from_offset)?;
        }

        #[test]
        fn arbitrary_batch_bodies_never_stall(
            header in proptest::collection::vec(any::<u8>(), BATCH_HEADER_LEN),
            body in proptest::collection::vec(any::<u8>(), 0..300),
            codec in 0u8..8,
            from_offset in -5i64..1_000,
        ) {
            // A sealed v2 header over random bytes: the records parser and the decompressors
            // get garbage past the CRC check.
            let mut bytes = [header, body].concat();
            let length = (bytes.len() - LOG_OVERHEAD) as i32;
            bytes[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
            bytes[MAGIC_AT] = 2;
            bytes[ATTRIBUTES_AT] = 0;
            bytes[ATTRIBUTES_AT + 1] = codec;
            seal(&mut bytes);
            let decoded = decode_records(Bytes::from(bytes), from_offset, &[]);
            check_invariants(&decoded, from_offset)?;
        }

        #[test]
        fn damaged_batches_never_stall(
            base in 0i64..1_000_000,
            batches in batches_strategy(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
            reseal in any::<bool>(),
            cut_fraction in 0.5f64..=1.0,
            from_fraction in 0.0f64..1.2,
        ) {
            let (encoded, end) = lay_out(base, batches);
            let from_offset = base + ((end - base) as f64 * from_fraction) as i64;
            let mut bytes = Vec::new();
            let mut starts = Vec::new();
            for (batch, _) in &encoded {
                starts.push(bytes.len());
                bytes.extend_from_slice(batch);
            }
            prop_assume!(!bytes.is_empty());
            for (at, xor) in &flips {
                let at = at.index(bytes.len());
                bytes[at] ^= xor;
                if reseal {
                    // Re-seal the batch the flip landed in, when its header still says where it
                    // ends: the damage then reaches the record parser and the decompressors.
                    let start = starts.iter().copied().filter(|&s| s <= at).max().unwrap_or(0);
                    let length = read_i32(&bytes, start + LENGTH_AT).unwrap_or(-1);
                    if let Ok(length) = usize::try_from(length) {
                        let batch_end = start + LOG_OVERHEAD + length;
                        if length >= BATCH_HEADER_LEN - LOG_OVERHEAD && batch_end <= bytes.len() {
                            seal(&mut bytes[start..batch_end]);
                        }
                    }
                }
            }
            let cut = (bytes.len() as f64 * cut_fraction) as usize;
            let decoded = decode_records(Bytes::from(bytes).slice(..cut), from_offset, &[]);
            check_invariants(&decoded, from_offset)?;
        }
    }
}
