//! The raw-fetch ceiling: one connection, one multi-partition Fetch in flight at a time, and only the
//! record-batch headers walked (base offset, length, last offset delta, record count), never the
//! records. No client does less work per record, so no client can read faster from this broker.
//! Also the runner's count of a topic's records (ListOffsets on the same kind of connection).

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Outcome;

/// Fetch v12: the last version that names topics (v13+ use topic ids, which need Metadata first).
const VERSION: i16 = 12;

/// Reads `records` records from partitions `0..partitions` of `topic`, from offset 0.
pub(crate) async fn run(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    records: u64,
    partition_max_bytes: i32,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let mut conn = TcpStream::connect(bootstrap).await?;
    conn.set_nodelay(true)?;
    let mut offsets: BTreeMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
    let mut seen = 0u64;
    let mut bytes = 0u64;
    let mut correlation = 0;
    let started = Instant::now();
    while seen < records {
        correlation += 1;
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(52_428_800)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(
                        offsets
                            .iter()
                            .map(|(&p, &o)| {
                                FetchPartition::default()
                                    .with_partition(p)
                                    .with_current_leader_epoch(-1)
                                    .with_fetch_offset(o)
                                    .with_last_fetched_epoch(-1)
                                    .with_log_start_offset(-1)
                                    .with_partition_max_bytes(partition_max_bytes)
                            })
                            .collect(),
                    ),
            ]);
        let response: FetchResponse =
            round_trip(&mut conn, ApiKey::Fetch, correlation, VERSION, &request).await?;
        for t in response.responses {
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(format!(
                        "partition {}: error code {}",
                        p.partition_index, p.error_code
                    )
                    .into());
                }
                let Some(mut data) = p.records else { continue };
                bytes += data.len() as u64;
                let next = offsets
                    .get_mut(&p.partition_index)
                    .expect("requested partition");
                // Batch header: baseOffset i64, batchLength i32, then (23 bytes in) lastOffsetDelta
                // i32 and (57 bytes in) the record count i32. A batch cut off at the end of the
                // response is fetched again next time.
                while data.len() >= 61 {
                    let base = (&data[0..8]).get_i64();
                    let length = (&data[8..12]).get_i32() as usize;
                    if data.len() < 12 + length {
                        break;
                    }
                    let last_delta = (&data[23..27]).get_i32();
                    let count = (&data[57..61]).get_i32();
                    if base >= *next {
                        seen += count as u64;
                    }
                    *next = base + i64::from(last_delta) + 1;
                    data.advance(12 + length);
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Outcome {
        records: seen,
        bytes,
        secs,
        latency: None,
    })
}

/// Sends `request` (API `api` at `version`) and reads its response, a `P` (one request in flight
/// on `conn`).
async fn round_trip<Q: Encodable + HeaderVersion, P: Decodable + HeaderVersion>(
    conn: &mut TcpStream,
    api: ApiKey,
    correlation: i32,
    version: i16,
    request: &Q,
) -> Result<P, Box<dyn std::error::Error>> {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str("kafkit-bench-ceiling")))
        .encode(&mut buf, Q::header_version(version))?;
    request.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    conn.write_all(&buf).await?;
    let len = conn.read_i32().await? as usize;
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await?;
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, P::header_version(version))?;
    if header.correlation_id != correlation {
        return Err("correlation id mismatch".into());
    }
    Ok(P::decode(&mut body, version)?)
}

/// The records on `topic` (partitions `0..partitions`, all from offset 0): the sum of the log end
/// offsets, which is how the runner checks what a producer that reports no count delivered.
pub(crate) async fn records_on(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> Result<u64, Box<dyn std::error::Error>> {
    let mut conn = TcpStream::connect(bootstrap).await?;
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(
                    (0..partitions)
                        .map(|p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(-1)
                        })
                        .collect(),
                ),
        ]);
    let response: ListOffsetsResponse =
        round_trip(&mut conn, ApiKey::ListOffsets, 1, 4, &request).await?;
    let mut total = 0;
    for t in response.topics {
        for p in t.partitions {
            if p.error_code != 0 {
                return Err(format!(
                    "{topic}-{}: ListOffsets error code {}",
                    p.partition_index, p.error_code
                )
                .into());
            }
            total += p.offset as u64;
        }
    }
    Ok(total)
}
