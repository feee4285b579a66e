//! Key-ordered concurrency: events of one account are applied in order, different accounts in
//! parallel. A slow account holds back only its own events.
//!
//! Run: `cargo run -p kafkit --example consume_keyed` (uses `KAFKA_BOOTSTRAP` if set).

#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafkit::consumer::{ConsumerBuilder, DispatchMode, OffsetReset};
use kafkit::group::GroupConfig;
use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord};
use kafkit_testkit::{TestKafka, create_topic, random_name};
use parking_lot::Mutex;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kafka = TestKafka::from_env_or_start().await?;
    let bootstrap = kafka.bootstrap();
    let topic = random_name("account-events");
    create_topic(&bootstrap, &topic, 3, 1).await?;
    let client = ClientConfig::new([&bootstrap])?;

    let producer = ProducerBuilder::new(client.clone()).build().await?;
    for seq in 0..30 {
        let account = format!("account-{}", seq % 5);
        producer
            .send(ProducerRecord::new(&topic, seq.to_string()).key(account))
            .await?;
    }

    let consumer = ConsumerBuilder::new(client, GroupConfig::new(random_name("ledger"), [&topic]))
        .dispatch(DispatchMode::KeyOrdered { max_in_flight: 8 })
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .await?;
    let stop = consumer.shutdown_handle();
    let applied: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let report = consumer
        .run({
            let applied = Arc::clone(&applied);
            move |record| {
                let applied = Arc::clone(&applied);
                let stop = stop.clone();
                async move {
                    let account =
                        String::from_utf8_lossy(record.key().unwrap_or_default()).into_owned();
                    let seq: u32 =
                        String::from_utf8_lossy(record.value().unwrap_or_default()).parse()?;
                    // account-0 is slow: only its own events wait.
                    let delay = if account == "account-0" { 200 } else { 20 };
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    let mut applied = applied.lock();
                    applied.entry(account).or_default().push(seq);
                    if applied.values().map(Vec::len).sum::<usize>() == 30 {
                        stop.shutdown();
                    }
                    Ok::<_, std::num::ParseIntError>(())
                }
            }
        })
        .await?;
    let mut applied: Vec<_> = applied.lock().clone().into_iter().collect();
    applied.sort();
    for (account, seqs) in applied {
        println!("{account}: {seqs:?}");
    }
    println!("uncommitted after shutdown: {:?}", report.uncommitted);
    Ok(())
}
