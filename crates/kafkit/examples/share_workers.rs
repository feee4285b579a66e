//! Queues for Kafka (KIP-932): three workers in one share group read a topic of ONE partition
//! together. Each job is acquired by one worker under a lock and acknowledged on its own: most are
//! accepted, a poisoned one is rejected (never delivered again), one that fails for a while is
//! released and comes back with a higher delivery count. A consumer group would give the partition
//! to one worker and leave the other two idle.
//!
//! Run: `cargo run -p kafkit --example share_workers` (uses `KAFKA_BOOTSTRAP` if set; needs Kafka
//! 4.2+).

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use kafkit::admin;
use kafkit::resilience::{BackoffPolicy, RetryPolicy};
use kafkit::share::ShareConsumerBuilder;
use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord};
use kafkit_testkit::{TestKafka, create_topic, random_name};

const JOBS: u64 = 30;

fn not_poison(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    !e.to_string().contains("poison")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kafka = TestKafka::from_env_or_start().await?;
    let bootstrap = kafka.bootstrap();
    let topic = random_name("jobs");
    let group = random_name("workers");
    create_topic(&bootstrap, &topic, 1, 1).await?;
    let client = ClientConfig::new([&bootstrap])?;
    // A new share group starts at the next record produced; these jobs are already there.
    admin::alter_group_configs(&client, &group, &[("share.auto.offset.reset", "earliest")]).await?;

    let producer = ProducerBuilder::new(client.clone()).build().await?;
    for job in 0..JOBS {
        producer
            .send(ProducerRecord::new(&topic, job.to_string()))
            .await?;
    }

    let settled = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    let mut stops = Vec::new();
    for worker in 0..3 {
        let consumer = ShareConsumerBuilder::new(client.clone(), group.as_str(), [topic.as_str()])
            // Small fetches spread the jobs over the workers.
            .max_records(4)
            // One attempt per delivery: a failure is released (or rejected) at once.
            .retry_policy(RetryPolicy::new(1, BackoffPolicy::default())?.retriable_if(not_poison))
            .build()?;
        stops.push(consumer.shutdown_handle());
        let settled = Arc::clone(&settled);
        workers.push(tokio::spawn(async move {
            let result = consumer
                .run(move |job| {
                    let settled = Arc::clone(&settled);
                    async move {
                        let n: u64 =
                            String::from_utf8_lossy(job.value().unwrap_or_default()).parse()?;
                        let delivery = job.delivery_count().unwrap_or(1);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if n == 13 {
                            println!("worker {worker}: job {n} is poison: rejected");
                            settled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            return Err("poison".into());
                        }
                        if n == 7 && delivery < 3 {
                            println!(
                                "worker {worker}: job {n} failed on delivery {delivery}: released"
                            );
                            return Err("downstream busy".into());
                        }
                        println!("worker {worker}: job {n} done (delivery {delivery})");
                        settled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                    }
                })
                .await;
            (worker, result)
        }));
    }
    while settled.load(std::sync::atomic::Ordering::SeqCst) < JOBS {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for stop in &stops {
        stop.shutdown();
    }
    for w in workers {
        let (worker, result) = w.await?;
        let c = result?;
        println!(
            "worker {worker}: acquired {}, accepted {}, released {}, rejected {}",
            c.acquired, c.accepted, c.released, c.rejected
        );
    }
    Ok(())
}
