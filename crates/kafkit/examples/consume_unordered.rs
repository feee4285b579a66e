//! The users' slow-record scenario: five records taking 5, 2, 1, 3 and 1 seconds. With
//! `Unordered { max_in_flight: 5 }` they run together and all finish after about 5 s, not 12;
//! the offsets are committed only once every record before them is done.
//!
//! Run: `cargo run -p kafkit --example consume_unordered` (uses `KAFKA_BOOTSTRAP` if set).

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use kafkit::consumer::{ConsumerBuilder, DispatchMode, OffsetReset};
use kafkit::group::GroupConfig;
use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord};
use kafkit_testkit::{TestKafka, create_topic, random_name};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kafka = TestKafka::from_env_or_start().await?;
    let bootstrap = kafka.bootstrap();
    let topic = random_name("media-jobs");
    create_topic(&bootstrap, &topic, 1, 1).await?;
    let client = ClientConfig::new([&bootstrap])?;

    let producer = ProducerBuilder::new(client.clone()).build().await?;
    for seconds in [5u64, 2, 1, 3, 1] {
        producer
            .send(ProducerRecord::new(&topic, seconds.to_string()))
            .await?;
    }

    let consumer = ConsumerBuilder::new(client, GroupConfig::new(random_name("media"), [&topic]))
        .dispatch(DispatchMode::Unordered { max_in_flight: 5 })
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .await?;
    let stop = consumer.shutdown_handle();
    let started = Instant::now();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let report = consumer
        .run(move |record| {
            let stop = stop.clone();
            let done = std::sync::Arc::clone(&done);
            async move {
                let seconds: u64 =
                    String::from_utf8_lossy(record.value().unwrap_or_default()).parse()?;
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                println!(
                    "offset {} ({seconds} s) finished at {:.1?}",
                    record.offset(),
                    started.elapsed()
                );
                if done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 5 {
                    stop.shutdown();
                }
                Ok::<_, std::num::ParseIntError>(())
            }
        })
        .await?;
    println!(
        "all five done in {:.1?}; uncommitted after shutdown: {:?}",
        started.elapsed(),
        report.uncommitted
    );
    Ok(())
}
