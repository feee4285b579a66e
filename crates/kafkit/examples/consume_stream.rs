//! Stream mode for users who want their own loop: each record carries an ack; only acked records
//! are committed, and a record dropped without an ack is delivered again.
//!
//! Run: `cargo run -p kafkit --example consume_stream` (uses `KAFKA_BOOTSTRAP` if set).

#![allow(clippy::print_stdout)]

use kafkit::consumer::{ConsumerBuilder, DispatchMode, OffsetReset};
use kafkit::group::GroupConfig;
use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord};
use kafkit_testkit::{TestKafka, create_topic, random_name};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kafka = TestKafka::from_env_or_start().await?;
    let bootstrap = kafka.bootstrap();
    let topic = random_name("orders");
    create_topic(&bootstrap, &topic, 2, 1).await?;
    let client = ClientConfig::new([&bootstrap])?;

    let producer = ProducerBuilder::new(client.clone()).build().await?;
    for i in 0..10 {
        producer
            .send(ProducerRecord::new(&topic, format!("order {i}")).key(format!("c{}", i % 3)))
            .await?;
    }

    let consumer = ConsumerBuilder::new(client, GroupConfig::new(random_name("billing"), [&topic]))
        .dispatch(DispatchMode::PartitionOrdered)
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .await?;
    let mut records = consumer.stream()?;
    let mut seen = 0;
    while let Some(record) = records.next().await {
        println!(
            "{}/{} @ {}: {}",
            record.topic(),
            record.partition(),
            record.offset(),
            String::from_utf8_lossy(record.value().unwrap_or_default())
        );
        record.ack();
        seen += 1;
        if seen == 10 {
            break;
        }
    }
    let report = records.shutdown().await?;
    println!("done; uncommitted after shutdown: {:?}", report.uncommitted);
    Ok(())
}
