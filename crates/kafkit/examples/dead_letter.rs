//! Dead-letter handling: a record that keeps failing is retried a few times and then produced to
//! `<topic>-dlt` with headers that say where it came from and why (Spring Kafka's `kafka_dlt-*`
//! names, so Java tooling reads them too). Its offset is committed only once the dead-letter topic
//! acknowledged it, so nothing is lost; the other records flow on meanwhile.
//!
//! Errors the retry predicate calls permanent (here: a value that does not parse) skip the retries
//! and go to the dead-letter topic at once.
//!
//! Run: `cargo run -p kafkit --example dead_letter` (uses `KAFKA_BOOTSTRAP` if set).

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kafkit::consumer::{ConsumerBuilder, DispatchMode, OffsetReset};
use kafkit::group::GroupConfig;
use kafkit::resilience::{BackoffPolicy, DeadLetterHeaders, DeadLetterPolicy, RetryPolicy};
use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord};
use kafkit_testkit::{TestKafka, create_topic, random_name};

/// The error a handler returns for a value it can never process.
#[derive(Debug)]
struct BadQuantity(String);

impl std::fmt::Display for BadQuantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a quantity: {:?}", self.0)
    }
}

impl std::error::Error for BadQuantity {}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kafka = TestKafka::from_env_or_start().await?;
    let bootstrap = kafka.bootstrap();
    let topic = random_name("orders");
    create_topic(&bootstrap, &topic, 2, 1).await?;
    // The dead-letter topic must exist: kafkit never relies on broker-side auto-creation.
    let dlt = DeadLetterPolicy::default().topic_for(&topic);
    create_topic(&bootstrap, &dlt, 2, 1).await?;
    let client = ClientConfig::new([&bootstrap])?;
    let producer = ProducerBuilder::new(client.clone()).build().await?;
    for value in ["3", "7", "seven", "2", "1"] {
        producer
            .send(ProducerRecord::new(&topic, value).key("order-1"))
            .await?;
    }

    // Three attempts 50 ms apart; a BadQuantity is permanent and is not retried at all.
    let retry = RetryPolicy::new(
        3,
        BackoffPolicy::new(
            Duration::from_millis(50),
            Duration::from_millis(200),
            2.0,
            0.0,
        )?,
    )?
    .retriable_if(|e: &(dyn std::error::Error + Send + Sync + 'static)| !e.is::<BadQuantity>());
    let consumer = ConsumerBuilder::new(
        client.clone(),
        GroupConfig::new(random_name("billing"), [&topic]),
    )
    .dispatch(DispatchMode::KeyOrdered { max_in_flight: 16 })
    .auto_offset_reset(OffsetReset::Earliest)
    .retry_policy(retry)
    .dead_letter(DeadLetterPolicy::default(), producer.clone())
    .build()
    .await?;
    let stop = consumer.shutdown_handle();
    let handled = Arc::new(AtomicUsize::new(0));
    consumer
        .run(move |record| {
            let stop = stop.clone();
            let handled = Arc::clone(&handled);
            async move {
                let text = String::from_utf8_lossy(record.value().unwrap_or_default()).into_owned();
                // Every record has one key, so they run one at a time in offset order: the fifth
                // attempt is the last record (the poison one is not retried). Shutdown still waits
                // for anything in flight, a dead-letter produce included.
                let done = handled.fetch_add(1, Ordering::Relaxed) + 1;
                if done >= 5 {
                    stop.shutdown();
                }
                let quantity: u32 = text.parse().map_err(|_| BadQuantity(text.clone()))?;
                println!("billed quantity {quantity} (offset {})", record.offset());
                Ok::<_, BadQuantity>(())
            }
        })
        .await?;

    // Read the dead-letter topic back: the poison record with the headers that say why.
    let reader = ConsumerBuilder::new(client, GroupConfig::new(random_name("dlt-reader"), [&dlt]))
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .await?;
    let mut records = reader.stream()?;
    if let Some(record) = tokio::time::timeout(Duration::from_secs(30), records.next()).await? {
        let why = DeadLetterHeaders::decode(record.headers().pairs())?;
        println!(
            "dead-lettered {:?}: from {}-{} offset {}, {} after {} attempt(s): {}",
            String::from_utf8_lossy(record.value().unwrap_or_default()),
            why.record.topic,
            why.record.partition,
            why.record.offset,
            why.error.type_name,
            why.attempts.unwrap_or(0),
            why.error.message.unwrap_or_default(),
        );
        record.ack();
    }
    records.shutdown().await?;
    Ok(())
}
