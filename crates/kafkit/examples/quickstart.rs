//! Quickstart: produce a few keyed records, then consume them in a group with at-least-once
//! delivery. Each record's offset is committed only after the handler returned `Ok` for it and for
//! every record before it in its partition.
//!
//! Run: `cargo run -p kafkit --example quickstart` (starts a local Kafka from Maven jars, or uses
//! `KAFKA_BOOTSTRAP=host:port`).

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kafkit::consumer::{ConsumerBuilder, DispatchMode, OffsetReset};
use kafkit::group::GroupConfig;
use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord};
use kafkit_testkit::{TestKafka, create_topic, random_name};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kafka = TestKafka::from_env_or_start().await?;
    let bootstrap = kafka.bootstrap();
    let topic = random_name("greetings");
    create_topic(&bootstrap, &topic, 3, 1).await?;

    // One client configuration, shared by producers and consumers.
    let client = ClientConfig::new([&bootstrap])?.client_id("quickstart");

    // Produce: keys pick partitions exactly as the Java client does; `send` resolves once the
    // broker acknowledged the record (acks=all).
    let producer = ProducerBuilder::new(client.clone()).build().await?;
    for i in 0..10 {
        let delivery = producer
            .send(ProducerRecord::new(&topic, format!("hello #{i}")).key(format!("user-{}", i % 3)))
            .await?;
        println!(
            "sent to partition {} at offset {}",
            delivery.partition, delivery.offset
        );
    }

    // Consume in a group: records of one partition in order, one at a time.
    let consumer = ConsumerBuilder::new(client, GroupConfig::new("quickstart-group", [&topic]))
        .dispatch(DispatchMode::PartitionOrdered)
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .await?;
    let stop = consumer.shutdown_handle();
    let seen = Arc::new(AtomicUsize::new(0));
    let report = consumer
        .run(move |record| {
            let stop = stop.clone();
            let seen = Arc::clone(&seen);
            async move {
                println!(
                    "got {:?} from partition {} offset {}",
                    String::from_utf8_lossy(record.value().unwrap_or_default()),
                    record.partition(),
                    record.offset()
                );
                // Returning Err would retry the record (and dead-letter it if configured).
                if seen.fetch_add(1, Ordering::Relaxed) + 1 == 10 {
                    stop.shutdown();
                }
                Ok::<_, std::io::Error>(())
            }
        })
        .await?;
    // Shutdown drained in-flight records, committed, and left the group.
    println!("stopped; uncommitted at shutdown: {:?}", report);
    Ok(())
}
