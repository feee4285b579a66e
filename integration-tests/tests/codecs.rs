//! kafkit's own record decoder against what real producers write: the Java producer with every
//! codec (none, gzip, snappy, lz4, zstd), and a header name that is not UTF-8 (which the Java
//! client cannot write, kafkit's producer can). Every codec is decoded by the pure-Rust decoders
//! of the default build.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kafkit::consumer::{ConsumedRecord, ConsumerBuilder, DispatchMode, OffsetReset};
use kafkit::{Compression, Header, Headers, ProducerBuilder, ProducerRecord};
use kafkit_integration_tests::support::{client, test_group};
use kafkit_testkit::{create_topic, java_source, random_name, shared};
use parking_lot::Mutex;

/// A consumed record as plain data: offset, key, value, headers (raw name, value) in order.
type Got = (
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(Vec<u8>, Option<Vec<u8>>)>,
);

fn got(record: &ConsumedRecord) -> Got {
    (
        record.offset(),
        record.key().map(<[u8]>::to_vec),
        record.value().map(<[u8]>::to_vec),
        record
            .headers()
            .iter()
            .map(|h| (h.name_bytes().to_vec(), h.value().map(<[u8]>::to_vec)))
            .collect(),
    )
}

/// Consumes `topic` (one partition) from the start with a new group until `count` records came,
/// and returns them in offset order.
async fn consume(bootstrap: &str, topic: &str, count: usize) -> Vec<Got> {
    let consumer = ConsumerBuilder::new(client(bootstrap), test_group(&random_name("g"), topic))
        .dispatch(DispatchMode::PartitionOrdered)
        .auto_offset_reset(OffsetReset::Earliest)
        // Below the test group's max.poll.interval.ms.
        .revoke_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let stop = consumer.shutdown_handle();
    let seen: Arc<Mutex<Vec<Got>>> = Arc::default();
    let run = consumer.run({
        let seen = Arc::clone(&seen);
        move |record| {
            let seen = Arc::clone(&seen);
            let stop = stop.clone();
            async move {
                let mut seen = seen.lock();
                seen.push(got(&record));
                if seen.len() >= count {
                    stop.shutdown();
                }
                Ok::<_, std::io::Error>(())
            }
        }
    });
    let outcome = tokio::time::timeout(Duration::from_secs(120), run).await;
    let mut seen = std::mem::take(&mut *seen.lock());
    let got = seen.len();
    outcome
        .unwrap_or_else(|_| panic!("{topic}: {got} of {count} records within 120 s"))
        .unwrap();
    seen.sort_by_key(|record| record.0);
    seen
}

/// What `CodecProduce.java` writes as record `i` (at offset `i`).
fn java_record(i: i64) -> Got {
    let utf8 = |s: String| Some(s.into_bytes());
    (
        i,
        if i % 100 == 7 {
            None
        } else {
            utf8(format!("key-{i}"))
        },
        if i % 250 == 11 {
            None
        } else {
            utf8(format!("value-{i}-{}", "abc".repeat(40)))
        },
        vec![
            (b"trace".to_vec(), utf8(format!("t1-{i}"))),
            (b"n".to_vec(), None),
            (b"trace".to_vec(), utf8(format!("t2-{i}"))),
            (b"empty".to_vec(), Some(Vec::new())),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_of_the_java_producer_decodes_with_duplicate_and_null_headers() {
    const COUNT: i64 = 2_000;
    let bootstrap = shared().await.unwrap().bootstrap();
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    let mut topics = Vec::new();
    for codec in codecs {
        let topic = random_name(&format!("codec-{codec}"));
        create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
        topics.push(topic);
    }

    let java = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("java/CodecProduce.java");
    let pairs: Vec<String> = codecs
        .iter()
        .zip(&topics)
        .map(|(codec, topic)| format!("{codec}={topic}"))
        .collect();
    let count = COUNT.to_string();
    let mut args = vec![bootstrap.as_str(), count.as_str()];
    args.extend(pairs.iter().map(String::as_str));
    let out = java_source(&java, &args, Duration::from_secs(180))
        .await
        .expect("java runs");
    assert!(out.success, "CodecProduce failed:\n{}", out.stderr);

    let want: Vec<Got> = (0..COUNT).map(java_record).collect();
    for (codec, topic) in codecs.iter().zip(&topics) {
        let seen = consume(&bootstrap, topic, COUNT as usize).await;
        assert_eq!(seen.len(), want.len(), "{codec}: record count");
        for (seen, want) in seen.iter().zip(&want) {
            assert_eq!(seen, want, "{codec}: record at offset {}", want.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_name_that_is_not_utf8_is_consumed_between_good_records() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("odd-header");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    let send_good = |i: i32| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            producer
                .send(
                    ProducerRecord::new(&topic, format!("good-{i}"))
                        .key(format!("k-{i}"))
                        .header("h", format!("hv-{i}"))
                        .partition(0),
                )
                .await
                .unwrap()
        }
    };
    for i in 0..3 {
        send_good(i).await;
    }
    // kafkit's producer writes headers as given: a name that is not UTF-8, a repeated name, a
    // null value.
    let odd_headers: Vec<(Vec<u8>, Option<Vec<u8>>)> = vec![
        (b"\xff\xfekey".to_vec(), Some(b"v1".to_vec())),
        (b"ok".to_vec(), None),
        (b"\xff\xfekey".to_vec(), Some(b"v2".to_vec())),
    ];
    let headers: Headers = odd_headers
        .iter()
        .map(|(name, value)| Header::from_raw(name.clone().into(), value.clone().map(Into::into)))
        .collect();
    let odd_offset = producer
        .send(
            ProducerRecord::new(&topic, b"odd value".to_vec())
                .key(b"odd".to_vec())
                .with_headers(headers)
                .partition(0),
        )
        .await
        .expect("the odd record is acknowledged")
        .offset;
    assert_eq!(odd_offset, 3);
    for i in 3..6 {
        send_good(i).await;
    }

    let seen = consume(&bootstrap, &topic, 7).await;
    let offsets: Vec<i64> = seen.iter().map(|r| r.0).collect();
    assert_eq!(offsets, [0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(
        seen[3],
        (
            3,
            Some(b"odd".to_vec()),
            Some(b"odd value".to_vec()),
            odd_headers
        )
    );
    for (record, i) in seen.iter().filter(|r| r.0 != 3).zip(0..) {
        let want_headers = vec![(b"h".to_vec(), Some(format!("hv-{i}").into_bytes()))];
        assert_eq!(
            (&record.1, &record.2, &record.3),
            (
                &Some(format!("k-{i}").into_bytes()),
                &Some(format!("good-{i}").into_bytes()),
                &want_headers
            ),
            "good record {i} at offset {}",
            record.0
        );
    }
}

/// Hex of `bytes`, `-` for null, as `CodecRead.java` prints them.
fn hex(bytes: Option<&[u8]>) -> String {
    bytes.map_or_else(
        || "-".to_owned(),
        |b| b.iter().map(|x| format!("{x:02x}")).collect(),
    )
}

/// kafkit's producer writes every codec (pure Rust) and the Java consumer, with its own codecs
/// (snappy-java, lz4-java, zstd-jni) and CRC checks, reads every record back as written, repeated
/// and null headers included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_java_consumer_reads_every_codec_of_kafkits_producer() {
    const COUNT: i64 = 2_000;
    let bootstrap = shared().await.unwrap().bootstrap();
    let codecs = [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ];
    let mut topics = Vec::new();
    for (name, codec) in codecs {
        let topic = random_name(&format!("kafkit-{name}"));
        create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
        let producer = ProducerBuilder::new(client(&bootstrap))
            .compression(codec)
            .build()
            .await
            .unwrap();
        let sends = (0..COUNT).map(|i| {
            let (_, key, value, headers) = java_record(i);
            let record = match (key, value) {
                (Some(key), None) => ProducerRecord::tombstone(&topic, key),
                (Some(key), Some(value)) => ProducerRecord::new(&topic, value).key(key),
                (None, Some(value)) => ProducerRecord::new(&topic, value),
                (None, None) => unreachable!("no record of java_record is null in both"),
            };
            let headers: Headers = headers
                .into_iter()
                .map(|(name, value)| Header::from_raw(name.into(), value.map(Into::into)))
                .collect();
            producer.send(record.with_headers(headers))
        });
        for delivery in futures::future::join_all(sends).await {
            delivery.expect("acknowledged");
        }
        topics.push(topic);
    }

    let java = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("java/CodecRead.java");
    let mut args = vec![bootstrap.as_str()];
    args.extend(topics.iter().map(String::as_str));
    let out = java_source(&java, &args, Duration::from_secs(180))
        .await
        .expect("java runs");
    assert!(out.success, "CodecRead failed:\n{}", out.stderr);
    for ((name, _), topic) in codecs.iter().zip(&topics) {
        let lines: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| l.starts_with(&format!("{topic} ")))
            .collect();
        assert_eq!(lines.len(), COUNT as usize, "{name}: records read by Java");
        for (i, line) in lines.iter().enumerate() {
            let (offset, key, value, headers) = java_record(i as i64);
            let headers: Vec<String> = headers
                .iter()
                .map(|(n, v)| format!("{}={}", hex(Some(n)), hex(v.as_deref())))
                .collect();
            let want = format!(
                "{topic} {offset} {} {} {}",
                hex(key.as_deref()),
                hex(value.as_deref()),
                headers.join(",")
            );
            assert_eq!(*line, want, "{name}: record {i}");
        }
    }
}
