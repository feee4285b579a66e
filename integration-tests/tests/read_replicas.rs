//! Fetching from a follower (KIP-392) against a real 3-node cluster whose brokers each sit in a rack
//! of their own and run Kafka's rack-aware replica selector: a consumer with `client.rack` reads a
//! partition from the replica in its rack, not from the leader, and closes its idle connection to
//! the leader.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kafkit::admin;
use kafkit::consumer::{ConsumerBuilder, OffsetReset};
use kafkit::{ProducerBuilder, ProducerRecord};
use kafkit_integration_tests::support::{
    client, connections_to, eventually, eventually_async, test_group,
};
use kafkit_testkit::{BrokerOptions, LocalCluster, create_topic, random_name};
use tokio::sync::watch;

const RECORDS: usize = 3_000;

/// The leader is frozen (SIGSTOP) once the consumer is reading: the rest of the partition still
/// arrives, from the follower in the consumer's rack, well within the time a Fetch to the frozen
/// leader would take to time out (30 s) and before the controller moves leadership away (9 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_reads_from_the_replica_in_its_rack_while_the_leader_is_frozen() {
    let mut options = BrokerOptions::default().heap("384m").property(
        "replica.selector.class",
        "org.apache.kafka.common.replica.RackAwareReplicaSelector",
    );
    for node in 1..=3 {
        options = options.node_property(node, "broker.rack", format!("rack-{node}"));
    }
    let cluster = LocalCluster::start_with(3, options).await.unwrap();
    let bootstrap = cluster.bootstrap();
    let topic = random_name("replicas");
    create_topic(&bootstrap, &topic, 3, 3).await.unwrap();
    let group = random_name("g");

    // A partition led by a broker that is not the group's coordinator (the coordinator must stay
    // up), and a rack where another replica of it lives. A first member makes the group exist, so
    // that its coordinator can be asked for.
    let coordinator = {
        let first = ConsumerBuilder::new(client(&bootstrap), test_group(&group, &topic))
            .revoke_timeout(Duration::from_secs(10))
            .build()
            .await
            .unwrap();
        let stop = first.shutdown_handle();
        let run = tokio::spawn(first.run(|_| async { Ok::<_, std::convert::Infallible>(()) }));
        let coordinator = eventually_async(
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async {
                match admin::describe_group(&client(&bootstrap), &group).await {
                    Ok(g) if !g.members.is_empty() => Ok(g.coordinator),
                    other => Err(format!("the first member never joined: {other:?}")),
                }
            },
        )
        .await;
        stop.shutdown();
        run.await.unwrap().unwrap();
        coordinator
    };
    let port_of = |id: i32| cluster.node(id).unwrap().port();
    let description = admin::describe_topics(&client(&bootstrap), std::slice::from_ref(&topic))
        .await
        .unwrap();
    let (partition, leader, replica) = description[0]
        .partitions
        .iter()
        .find_map(|p| {
            let leader = p.leader?;
            let follower = *p.replicas.iter().find(|&&r| r != leader)?;
            (!coordinator.ends_with(&format!(":{}", port_of(leader)))).then_some((
                p.partition,
                leader,
                follower,
            ))
        })
        .expect("one of three leaders is not the coordinator");

    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    let value = vec![b'r'; 1024];
    let sends = (0..RECORDS)
        .map(|_| producer.send(ProducerRecord::new(&topic, value.clone()).partition(partition)));
    for sent in futures::future::join_all(sends).await {
        sent.unwrap();
    }
    producer.close().await.unwrap();
    drop(producer);
    // The followers learn the high watermark on their next fetch from the leader.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The consumer knows only the brokers that stay up, fetches small pieces (many round trips),
    // and holds its 100th record until the leader is frozen.
    let others: Vec<String> = cluster
        .nodes()
        .iter()
        .filter(|n| n.id() != leader)
        .map(|n| n.bootstrap())
        .collect();
    let config = test_group(&group, &topic).rack_id(format!("rack-{replica}"));
    let consumer = ConsumerBuilder::new(client(&others.join(",")), config)
        .auto_offset_reset(OffsetReset::Earliest)
        .max_partition_fetch_bytes(16 * 1024)
        .connections_max_idle(Duration::from_secs(2))
        .revoke_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let stop = consumer.shutdown_handle();
    let processed = Arc::new(AtomicUsize::new(0));
    let (frozen_tx, frozen) = watch::channel(false);
    let run = tokio::spawn(consumer.run({
        let processed = Arc::clone(&processed);
        move |record| {
            let processed = Arc::clone(&processed);
            let mut frozen = frozen.clone();
            async move {
                assert_eq!(record.partition(), partition);
                if processed.load(Ordering::SeqCst) == 100 {
                    frozen.wait_for(|f| *f).await.unwrap();
                }
                processed.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(())
            }
        }
    }));
    eventually(Duration::from_secs(60), "the first 100 records", || {
        processed.load(Ordering::SeqCst) >= 100
    })
    .await;
    let leader_node = cluster.node(leader).unwrap();
    leader_node.pause();
    frozen_tx.send(true).unwrap();
    let waited = tokio::time::Instant::now();
    let all = {
        let processed = Arc::clone(&processed);
        eventually(
            Duration::from_secs(8),
            "every record, fetched from the follower while the leader is frozen",
            move || processed.load(Ordering::SeqCst) == RECORDS,
        )
    };
    let outcome = tokio::spawn(all).await;
    leader_node.resume();
    outcome.unwrap();
    eprintln!(
        "partition {partition}: leader {leader} frozen, the last {} records read from node {replica} in {:?}",
        RECORDS - 100,
        waited.elapsed()
    );
    // Nothing is fetched from the leader any more: its fetch connection is closed once idle.
    eventually(
        Duration::from_secs(15),
        "no connection to the leader",
        || connections_to(port_of(leader)) == 0,
    )
    .await;
    stop.shutdown();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
