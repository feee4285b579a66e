//! Share groups (KIP-932) against a real broker: more members than partitions, every record ending
//! as the handler decided, a member that dies holding records, a handler slower than the lock, the
//! delivery-count limit, and the error on a broker without share groups (Kafka 3.9).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafkit::admin;
use kafkit::resilience::{BackoffPolicy, RetryPolicy};
use kafkit::share::{ShareConsumer, ShareConsumerBuilder, ShareCounters};
use kafkit::{ProducerBuilder, ProducerRecord};
use kafkit_integration_tests::support::{client, eventually};
use kafkit_testkit::{create_topic, kafka_version, random_name, shared};
use parking_lot::Mutex;
use tokio::task::JoinHandle;

/// Kafka 3.x has no share groups.
fn old_broker() -> bool {
    kafka_version().starts_with("3.")
}

/// Sets share-group configs on `group` before its members join (`kafka-configs --entity-type
/// groups`), e.g. `share.auto.offset.reset=earliest` (the default, latest, would skip the records
/// produced before the group exists).
async fn configure_group(bootstrap: &str, group: &str, configs: &[(&str, &str)]) {
    admin::alter_group_configs(&client(bootstrap), group, configs)
        .await
        .unwrap();
}

async fn produce(bootstrap: &str, topic: &str, partitions: i32, count: usize) {
    let producer = ProducerBuilder::new(client(bootstrap))
        .build()
        .await
        .unwrap();
    for i in 0..count {
        producer
            .send(ProducerRecord::new(topic, i.to_string()).partition(i as i32 % partitions))
            .await
            .unwrap();
    }
}

const EARLIEST: (&str, &str) = ("share.auto.offset.reset", "earliest");

fn not_poison(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    !e.to_string().contains("poison")
}

/// No local retries: a failure is settled at once.
fn no_retries() -> RetryPolicy {
    RetryPolicy::new(1, BackoffPolicy::default())
        .unwrap()
        .retriable_if(not_poison)
}

fn member(bootstrap: &str, group: &str, topic: &str) -> ShareConsumerBuilder {
    ShareConsumerBuilder::new(client(bootstrap), group, [topic])
        .fetch_max_wait(Duration::from_millis(200))
        .retry_policy(no_retries())
}

/// What the handlers saw: (partition, offset) -> the delivery count of each call.
type Seen = Arc<Mutex<BTreeMap<(i32, i64), Vec<i16>>>>;

fn spawn_member(
    consumer: ShareConsumer,
    seen: Seen,
    poison: fn(&str) -> bool,
) -> JoinHandle<kafkit::Result<ShareCounters>> {
    tokio::spawn(consumer.run(move |record| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock()
                .entry((record.partition(), record.offset()))
                .or_default()
                .push(record.delivery_count().unwrap_or(0));
            let value = String::from_utf8_lossy(record.value().unwrap_or_default()).into_owned();
            if poison(&value) {
                return Err::<(), _>(std::io::Error::other("poison"));
            }
            Ok(())
        }
    }))
}

fn is_poison(value: &str) -> bool {
    value.ends_with('7')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_members_than_partitions_all_get_work_and_each_record_ends_as_the_handler_decided() {
    if old_broker() {
        return;
    }
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("share");
    let group = random_name("sg");
    create_topic(&bootstrap, &topic, 2, 1).await.unwrap();
    configure_group(&bootstrap, &group, &[EARLIEST]).await;
    const N: usize = 300;
    produce(&bootstrap, &topic, 2, N).await;

    let seen: Seen = Arc::default();
    let mut members = Vec::new();
    let mut counters = Vec::new();
    let mut shutdowns = Vec::new();
    for _ in 0..3 {
        // Small fetches, so that the records spread over the members.
        let consumer = member(&bootstrap, &group, &topic)
            .max_records(10)
            .build()
            .unwrap();
        counters.push(consumer.counters());
        shutdowns.push(consumer.shutdown_handle());
        let seen = Arc::clone(&seen);
        members.push(spawn_member(consumer, seen, is_poison));
    }
    let settled = || {
        counters
            .iter()
            .map(|c| {
                let c = c.get();
                c.accepted + c.rejected
            })
            .sum::<u64>()
    };
    eventually(Duration::from_secs(40), "every record settled", || {
        settled() >= N as u64
    })
    .await;
    for s in &shutdowns {
        s.shutdown();
    }
    let mut finals = Vec::new();
    for m in members {
        finals.push(m.await.unwrap().unwrap());
    }
    for (i, c) in finals.iter().enumerate() {
        assert!(c.acquired > 0, "member {i} got no work: {c:?}");
        assert_eq!(c.lock_expired, 0, "member {i}: {c:?}");
        assert_eq!(c.ack_failures, 0, "member {i}: {c:?}");
    }
    let accepted: u64 = finals.iter().map(|c| c.accepted).sum();
    let rejected: u64 = finals.iter().map(|c| c.rejected).sum();
    let poison = (0..N).filter(|i| is_poison(&i.to_string())).count() as u64;
    assert_eq!((accepted, rejected), (N as u64 - poison, poison));
    // The history: each record was handled once, with delivery count 1 (nothing was released).
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), N);
    for (record, deliveries) in &seen {
        assert_eq!(deliveries, &[1], "record {record:?}");
    }

    // Nothing is delivered again: a new member of the group gets no record.
    let late: Seen = Arc::default();
    let consumer = member(&bootstrap, &group, &topic).build().unwrap();
    let stop = consumer.shutdown_handle();
    let task = spawn_member(consumer, Arc::clone(&late), |_| false);
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.shutdown();
    let c = task.await.unwrap().unwrap();
    assert_eq!(c.acquired, 0, "redelivered: {:?}", late.lock());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_a_member_that_dies_holding_them_go_to_another_member() {
    if old_broker() {
        return;
    }
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("share-kill");
    let group = random_name("sg-kill");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    configure_group(
        &bootstrap,
        &group,
        &[EARLIEST, ("share.record.lock.duration.ms", "3000")],
    )
    .await;
    const N: usize = 20;
    produce(&bootstrap, &topic, 1, N).await;

    // The first member acquires every record and never finishes one.
    let stuck = member(&bootstrap, &group, &topic).build().unwrap();
    let stuck_counters = stuck.counters();
    let stuck_task = tokio::spawn(stuck.run(|_record| async {
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    }));
    eventually(
        Duration::from_secs(20),
        "the first member holds records",
        || stuck_counters.get().acquired > 0,
    )
    .await;
    let held = stuck_counters.get().acquired;
    // It dies: no acknowledgement, no session close, no leave.
    stuck_task.abort();
    let _ = stuck_task.await;

    let seen: Seen = Arc::default();
    let other = member(&bootstrap, &group, &topic).build().unwrap();
    let counters = other.counters();
    let stop = other.shutdown_handle();
    let task = spawn_member(other, Arc::clone(&seen), |_| false);
    eventually(
        Duration::from_secs(30),
        "all records accepted by the other member",
        || counters.get().accepted >= N as u64,
    )
    .await;
    stop.shutdown();
    task.await.unwrap().unwrap();
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), N);
    let redelivered = seen.values().filter(|d| d[0] >= 2).count() as u64;
    assert_eq!(
        redelivered, held,
        "the records the dead member held come again, with a higher delivery count: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_settled_after_its_lock_is_not_acknowledged_and_comes_back() {
    if old_broker() {
        return;
    }
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("share-lock");
    let group = random_name("sg-lock");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    configure_group(
        &bootstrap,
        &group,
        &[EARLIEST, ("share.record.lock.duration.ms", "1500")],
    )
    .await;
    produce(&bootstrap, &topic, 1, 1).await;
    let seen: Seen = Arc::default();
    let consumer = member(&bootstrap, &group, &topic).build().unwrap();
    let counters = consumer.counters();
    let stop = consumer.shutdown_handle();
    let calls = Arc::clone(&seen);
    let task = tokio::spawn(consumer.run(move |record| {
        let calls = Arc::clone(&calls);
        async move {
            let delivery = record.delivery_count().unwrap_or(0);
            calls
                .lock()
                .entry((record.partition(), record.offset()))
                .or_default()
                .push(delivery);
            if delivery == 1 {
                // Longer than the lock.
                tokio::time::sleep(Duration::from_millis(2500)).await;
            }
            Ok::<_, std::io::Error>(())
        }
    }));
    eventually(
        Duration::from_secs(30),
        "accepted on a later delivery",
        || counters.get().accepted == 1,
    )
    .await;
    stop.shutdown();
    let c = task.await.unwrap().unwrap();
    assert_eq!(c.lock_expired, 1, "{c:?}");
    assert_eq!(c.redelivered, 1, "{c:?}");
    assert_eq!(seen.lock()[&(0, 0)], vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_over_the_delivery_count_limit_are_archived() {
    if old_broker() {
        return;
    }
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("share-limit");
    let group = random_name("sg-limit");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    configure_group(
        &bootstrap,
        &group,
        &[EARLIEST, ("share.delivery.count.limit", "2")],
    )
    .await;
    produce(&bootstrap, &topic, 1, 3).await;
    let seen: Seen = Arc::default();
    let consumer = member(&bootstrap, &group, &topic).build().unwrap();
    let counters = consumer.counters();
    let stop = consumer.shutdown_handle();
    // Record 1 always fails with a retriable error: released each time.
    let calls = Arc::clone(&seen);
    let task = tokio::spawn(consumer.run(move |record| {
        let calls = Arc::clone(&calls);
        async move {
            calls
                .lock()
                .entry((record.partition(), record.offset()))
                .or_default()
                .push(record.delivery_count().unwrap_or(0));
            if record.offset() == 1 {
                return Err(std::io::Error::other("downstream says later"));
            }
            Ok(())
        }
    }));
    eventually(Duration::from_secs(30), "released up to the limit", || {
        counters.get().released >= 2
    })
    .await;
    // Time for a third delivery, which must not come.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.shutdown();
    let c = task.await.unwrap().unwrap();
    assert_eq!((c.accepted, c.released), (2, 2), "{c:?}");
    assert_eq!(seen.lock()[&(0, 1)], vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_share_groups_gets_a_clear_error() {
    if !old_broker() {
        return;
    }
    let kafka = shared().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = random_name("share-old");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    let consumer = member(&bootstrap, "sg-old", &topic).build().unwrap();
    let error = tokio::time::timeout(
        Duration::from_secs(30),
        consumer.run(|_r| async { Ok::<_, std::io::Error>(()) }),
    )
    .await
    .expect("fails at once")
    .unwrap_err()
    .to_string();
    assert!(error.contains("does not offer share groups"), "{error}");
}
