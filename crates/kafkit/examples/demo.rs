//! The kafkit demo: starts a local Apache Kafka (or uses `KAFKA_BOOTSTRAP=host:port`), creates a
//! 6-partition topic, produces 10,000 keyed records and shows where they went: each key on the same
//! partition the Java client would choose, every record acknowledged with its offset.
//!
//! Run: `cargo run -p kafkit --example demo`

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::Instant;

use kafkit::partitioner::partition_for_key;
use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord};
use kafkit_testkit::{LocalKafka, create_topic, random_name};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _local;
    let bootstrap = match std::env::var("KAFKA_BOOTSTRAP") {
        Ok(b) if !b.trim().is_empty() => b,
        _ => {
            println!(
                "starting a local Apache Kafka {} (KRaft, no Docker)...",
                kafkit_testkit::kafka_version()
            );
            let started = Instant::now();
            let kafka = LocalKafka::start().await?;
            println!(
                "broker up at {} in {:.1?}",
                kafka.bootstrap(),
                started.elapsed()
            );
            let b = kafka.bootstrap();
            _local = kafka;
            b
        }
    };

    let topic = random_name("demo-orders");
    create_topic(&bootstrap, &topic, 6, 1).await?;
    let producer = ProducerBuilder::new(ClientConfig::new([&bootstrap])?)
        .build()
        .await?;

    let started = Instant::now();
    let sends = (0..10_000).map(|i| {
        let producer = producer.clone();
        let record =
            ProducerRecord::new(&topic, format!("order #{i}")).key(format!("customer-{}", i % 100));
        async move { producer.send(record).await }
    });
    let deliveries = futures::future::try_join_all(sends).await?;
    let elapsed = started.elapsed();

    let mut per_partition: BTreeMap<i32, (usize, i64)> = BTreeMap::new();
    for d in &deliveries {
        let entry = per_partition.entry(d.partition).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(d.offset);
    }
    println!(
        "produced {} records to {topic} in {elapsed:.1?}",
        deliveries.len()
    );
    for (partition, (count, last)) in &per_partition {
        println!("  partition {partition}: {count} records, last offset {last}");
    }
    let key = b"customer-42";
    println!(
        "key customer-42 -> partition {} (toPositive(murmur2(key)) % 6, as the Java client)",
        partition_for_key(key, 6)
    );
    producer.close().await?;
    Ok(())
}
