//! Migrating from rust-rdkafka's `StreamConsumer`: the same loop, record by record, on kafkit's
//! stream API, with the commit done right. See `docs/migrating-from-rdkafka.md` for the settings.
//!
//! The rdkafka loop this replaces, as it is commonly written:
//!
//! ```text
//! let consumer: StreamConsumer = ClientConfig::new()
//!     .set("bootstrap.servers", &bootstrap)
//!     .set("group.id", "billing")
//!     .set("enable.auto.commit", "false")
//!     .set("auto.offset.reset", "earliest")
//!     .create()?;
//! consumer.subscribe(&["orders"])?;
//! loop {
//!     let message = consumer.recv().await?;
//!     process(message.payload()).await?;
//!     // Commits this offset + 1 for the partition, whether or not earlier records of the
//!     // partition are done; with concurrent processing that skips unfinished work on a crash.
//!     consumer.commit_message(&message, CommitMode::Async)?;
//! }
//! ```
//!
//! In kafkit `recv` + `commit_message` become `next` + `ack`: the ack marks the record done, and
//! the consumer commits the contiguous done watermark per partition on an interval, on revoke and
//! on shutdown, so a commit never covers a record that is still running. Dropping a record without
//! acking it hands it back for redelivery.
//!
//! Run: `cargo run -p kafkit --example migrate_from_rdkafka` (uses `KAFKA_BOOTSTRAP` if set).

#![allow(clippy::print_stdout)]

use kafkit::consumer::{ConsumerBuilder, DispatchMode, OffsetReset};
use kafkit::group::GroupConfig;
use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord};
use kafkit_testkit::{TestKafka, create_topic, random_name};

async fn process(payload: Option<&[u8]>) -> Result<(), std::io::Error> {
    println!(
        "processing {:?}",
        String::from_utf8_lossy(payload.unwrap_or_default())
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kafka = TestKafka::from_env_or_start().await?;
    let bootstrap = kafka.bootstrap();
    let topic = random_name("orders");
    create_topic(&bootstrap, &topic, 3, 1).await?;
    // `bootstrap.servers`
    let client = ClientConfig::new([&bootstrap])?;
    let producer = ProducerBuilder::new(client.clone()).build().await?;
    for i in 0..6 {
        producer
            .send(ProducerRecord::new(&topic, format!("order {i}")).key(format!("customer-{i}")))
            .await?;
    }

    // `group.id` + `subscribe`; there is no auto-commit to turn off: kafkit never commits a record
    // that was not acked.
    let consumer = ConsumerBuilder::new(client, GroupConfig::new(random_name("billing"), [&topic]))
        // `auto.offset.reset`
        .auto_offset_reset(OffsetReset::Earliest)
        // rdkafka's loop handles one message at a time; so does PartitionOrdered per partition.
        // KeyOrdered or Unordered process concurrently, still committing only finished work.
        .dispatch(DispatchMode::PartitionOrdered)
        .build()
        .await?;
    let mut stream = consumer.stream()?;
    let mut processed = 0;
    while processed < 6 {
        // `consumer.recv().await?`
        let Some(record) = stream.next().await else {
            break;
        };
        // On Err the `?` drops the record unacked: it is delivered again (at-least-once), where
        // rdkafka would have moved on.
        process(record.value()).await?;
        // `commit_message(&message, ...)`
        record.ack();
        processed += 1;
    }
    // rdkafka commits on drop only with auto-commit; kafkit's shutdown commits what was acked and
    // leaves the group so its partitions move at once.
    let report = stream.shutdown().await?;
    println!("shut down; left uncommitted: {:?}", report.uncommitted);
    Ok(())
}
