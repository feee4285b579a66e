//! Writing record batches byte by byte, for what no producer writes: a header name that is not
//! UTF-8 (the Java client's and rskafka's header names are strings).
//!
//! [`v2_batch`] lays out an uncompressed message format v2 batch as the Java producer does
//! (CRC-32C over the bytes from the attributes on), and [`produce_batch`] sends it in a
//! ProduceRequest over a plain TCP connection of its own, framed as Kafka frames requests.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One record to write: the header names are raw bytes.
#[derive(Debug, Clone, Default)]
pub struct RawRecord {
    /// The key; `None` for null.
    pub key: Option<Vec<u8>>,
    /// The value; `None` for null.
    pub value: Option<Vec<u8>>,
    /// (name, value) in order; a `None` value is null.
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// The ProduceRequest version sent: non-flexible (plain request header v1), within what Kafka 4
/// brokers accept (3 and later).
const PRODUCE_VERSION: i16 = 8;

/// Appends Kafka's zigzag varint of `value`.
fn put_varint(buf: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        buf.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    buf.push(raw as u8);
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

/// An uncompressed v2 batch of `records` at base offset 0 (the broker assigns the offsets), all
/// with CreateTime `timestamp_ms`, from a non-idempotent producer.
pub fn v2_batch(records: &[RawRecord], timestamp_ms: i64) -> Bytes {
    let mut section = Vec::new();
    for (delta, record) in records.iter().enumerate() {
        let mut body = vec![0u8]; // attributes
        put_varint(&mut body, 0); // timestamp delta
        put_varint(&mut body, delta as i64); // offset delta
        put_nullable(&mut body, record.key.as_deref());
        put_nullable(&mut body, record.value.as_deref());
        put_varint(&mut body, record.headers.len() as i64);
        for (name, value) in &record.headers {
            put_nullable(&mut body, Some(name));
            put_nullable(&mut body, value.as_deref());
        }
        put_varint(&mut section, body.len() as i64);
        section.extend_from_slice(&body);
    }
    let mut batch = BytesMut::new();
    batch.put_i64(0); // base offset
    batch.put_i32((49 + section.len()) as i32); // the bytes after this field
    batch.put_i32(-1); // partition leader epoch
    batch.put_i8(2); // magic
    batch.put_u32(0); // CRC, below
    batch.put_i16(0); // attributes: no compression, CreateTime
    batch.put_i32(records.len().saturating_sub(1) as i32); // last offset delta
    batch.put_i64(timestamp_ms); // first timestamp
    batch.put_i64(timestamp_ms); // max timestamp
    batch.put_i64(-1); // producer id
    batch.put_i16(-1); // producer epoch
    batch.put_i32(-1); // base sequence
    batch.put_i32(records.len() as i32);
    batch.extend_from_slice(&section);
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch.freeze()
}

/// Sends `batch` to `topic`/`partition` through the broker at `bootstrap` (which must lead the
/// partition, as the single broker of a test cluster does), with acks=all; returns the base offset
/// the broker assigned, or what went wrong.
pub async fn produce_batch(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    batch: Bytes,
) -> Result<i64, String> {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(batch)),
                ]),
        ]);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(PRODUCE_VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("kafkit-raw-produce")));
    let mut frame = BytesMut::new();
    frame.put_i32(0); // length, patched below
    header
        .encode(&mut frame, ProduceRequest::header_version(PRODUCE_VERSION))
        .map_err(|e| format!("encoding the request header: {e}"))?;
    request
        .encode(&mut frame, PRODUCE_VERSION)
        .map_err(|e| format!("encoding the ProduceRequest: {e}"))?;
    let length = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&length.to_be_bytes());

    let exchange = async {
        let mut stream = TcpStream::connect(bootstrap).await?;
        stream.write_all(&frame).await?;
        let length = stream.read_i32().await?;
        let mut body = vec![0u8; usize::try_from(length).unwrap_or(0)];
        stream.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(Bytes::from(body))
    };
    let mut body = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| format!("no produce response from {bootstrap} within 30 s"))?
        .map_err(|e| format!("producing to {bootstrap}: {e}"))?;
    let header =
        ResponseHeader::decode(&mut body, ProduceResponse::header_version(PRODUCE_VERSION))
            .map_err(|e| format!("decoding the response header: {e}"))?;
    if header.correlation_id != 1 {
        return Err(format!(
            "correlation id {} in the response",
            header.correlation_id
        ));
    }
    let response = ProduceResponse::decode(&mut body, PRODUCE_VERSION)
        .map_err(|e| format!("decoding the ProduceResponse: {e}"))?;
    if body.has_remaining() {
        return Err(format!(
            "{} bytes after the ProduceResponse",
            body.remaining()
        ));
    }
    let answer = response
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .find(|p| p.index == partition)
        .ok_or_else(|| format!("no answer for {topic}/{partition}"))?;
    if answer.error_code != 0 {
        return Err(format!(
            "producing to {topic}/{partition}: error code {} ({:?})",
            answer.error_code, answer.error_message
        ));
    }
    Ok(answer.base_offset)
}
