//! The consumer against a real broker: dispatch modes, ack-driven commits, restarts with and
//! without a graceful stop, rebalances with records in flight, and slow handlers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kafkit::consumer::{ConsumedRecord, Consumer, ConsumerBuilder, DispatchMode, OffsetReset};
use kafkit::group::{GroupConfig, TopicPartition};
use kafkit::resilience::HealthStatus;
use kafkit::{ProducerBuilder, ProducerRecord};
use kafkit_integration_tests::support::{
    POLL, client, committed, connections_to, consumer_groups_describe, eventually,
    eventually_async, eventually_every, test_group,
};
use kafkit_testkit::{create_topic, random_name, shared};
use parking_lot::Mutex;
use tokio::time::Instant;

async fn consumer(bootstrap: &str, group_id: &str, topic: &str, mode: DispatchMode) -> Consumer {
    ConsumerBuilder::new(client(bootstrap), test_group(group_id, topic))
        .dispatch(mode)
        .auto_offset_reset(OffsetReset::Earliest)
        .commit_interval(Duration::from_millis(200))
        .revoke_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap()
}

/// Produces `n` records `key-{i % keys}` / `{i}` and returns the end offset of every partition.
async fn produce_keyed(bootstrap: &str, topic: &str, n: usize, keys: usize) -> BTreeMap<i32, i64> {
    let producer = ProducerBuilder::new(client(bootstrap))
        .build()
        .await
        .unwrap();
    let mut ends = BTreeMap::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let sends = chunk.iter().map(|&i| {
            let producer = producer.clone();
            let record = ProducerRecord::new(topic, i.to_string()).key(format!("key-{}", i % keys));
            async move { producer.send(record).await.unwrap() }
        });
        for d in futures::future::join_all(sends).await {
            let end = ends.entry(d.partition).or_insert(0);
            *end = (*end).max(d.offset + 1);
        }
    }
    ends
}

/// Per key, `(offset, value)` in processing order. A key lives on one partition, so its offsets must
/// increase in processing order; values identify records (concurrent sends do not keep value order).
type Seen = Arc<Mutex<HashMap<String, Vec<(i64, usize)>>>>;

fn record_seen(seen: &Seen, r: &ConsumedRecord) {
    let key = String::from_utf8(r.key().unwrap().to_vec()).unwrap();
    let value: usize = std::str::from_utf8(r.value().unwrap())
        .unwrap()
        .parse()
        .unwrap();
    seen.lock()
        .entry(key)
        .or_default()
        .push((r.offset(), value));
}

/// The distinct record values processed.
fn values(seen: &Seen) -> HashSet<usize> {
    seen.lock().values().flatten().map(|(_, v)| *v).collect()
}

/// Whether each key's records were processed in offset order.
fn in_key_order(run: &HashMap<String, Vec<(i64, usize)>>) -> Result<(), String> {
    for (key, records) in run {
        if let Some(w) = records.windows(2).find(|w| w[0].0 >= w[1].0) {
            return Err(format!(
                "{key}: offset {} processed after {}",
                w[1].0, w[0].0
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_records_run_concurrently_unordered_and_one_by_one_ordered() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("slow");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    // The users' scenario, scaled: records taking 5, 2, 1, 3, 1 units.
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    for units in [5u64, 2, 1, 3, 1] {
        producer
            .send(ProducerRecord::new(&topic, units.to_string()).partition(0))
            .await
            .unwrap();
    }

    for (mode, expect_overlap) in [
        (DispatchMode::Unordered { max_in_flight: 5 }, true),
        (DispatchMode::PartitionOrdered, false),
    ] {
        let consumer = consumer(&bootstrap, &random_name("g"), &topic, mode).await;
        let stop = consumer.shutdown_handle();
        let spans: Arc<Mutex<Vec<(i64, Instant, Instant)>>> = Arc::default();
        let run = tokio::spawn({
            let spans = Arc::clone(&spans);
            let stop = stop.clone();
            consumer.run(move |r| {
                let spans = Arc::clone(&spans);
                let stop = stop.clone();
                async move {
                    let units: u64 = std::str::from_utf8(r.value().unwrap())
                        .unwrap()
                        .parse()
                        .unwrap();
                    let start = Instant::now();
                    tokio::time::sleep(Duration::from_millis(200 * units)).await;
                    let mut s = spans.lock();
                    s.push((r.offset(), start, Instant::now()));
                    if s.len() == 5 {
                        stop.shutdown();
                    }
                    Ok::<_, std::io::Error>(())
                }
            })
        });
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let spans = spans.lock().clone();
        assert_eq!(spans.len(), 5, "{mode:?}");
        let last_start = spans.iter().map(|s| s.1).max().unwrap();
        let first_end = spans.iter().map(|s| s.2).min().unwrap();
        if expect_overlap {
            assert!(
                last_start < first_end,
                "{mode:?}: all five must be in flight together"
            );
        } else {
            let mut by_offset = spans.clone();
            by_offset.sort_by_key(|s| s.0);
            for w in by_offset.windows(2) {
                assert!(
                    w[1].1 >= w[0].2,
                    "{mode:?}: offset {} started before {} finished",
                    w[1].0,
                    w[0].0
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_keyed_records_keep_per_key_order_and_commit_to_the_end() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("keyed");
    let group_id = random_name("g");
    create_topic(&bootstrap, &topic, 12, 1).await.unwrap();
    let ends = produce_keyed(&bootstrap, &topic, 100_000, 1_000).await;

    let consumer = consumer(
        &bootstrap,
        &group_id,
        &topic,
        DispatchMode::KeyOrdered { max_in_flight: 64 },
    )
    .await;
    let stop = consumer.shutdown_handle();
    let seen: Seen = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let run = tokio::spawn({
        let seen = Arc::clone(&seen);
        let count = Arc::clone(&count);
        consumer.run(move |r| {
            let seen = Arc::clone(&seen);
            let count = Arc::clone(&count);
            async move {
                let jitter = r.offset() as u64 % 7;
                if jitter == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                } else {
                    tokio::task::yield_now().await;
                }
                record_seen(&seen, &r);
                count.fetch_add(1, Ordering::Relaxed);
                Ok::<_, std::io::Error>(())
            }
        })
    });
    eventually_every(
        Duration::from_secs(240),
        POLL,
        || format!("only {} processed", count.load(Ordering::Relaxed)),
        || count.load(Ordering::Relaxed) >= 100_000,
    )
    .await;
    stop.shutdown();
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(report.uncommitted.is_empty(), "{report:?}");

    assert_eq!(values(&seen).len(), 100_000, "every record");
    let seen = seen.lock().clone();
    assert_eq!(
        seen.values().map(Vec::len).sum::<usize>(),
        100_000,
        "each record exactly once"
    );
    in_key_order(&seen).unwrap();
    assert_eq!(
        committed(&bootstrap, &group_id, &topic, 12).await,
        ends,
        "committed == end offsets"
    );
}

/// Runs a consumer until it has processed `stop_after` records, then stops it gracefully or aborts it.
async fn consume_until(
    bootstrap: &str,
    group_id: &str,
    topic: &str,
    mode: DispatchMode,
    seen: &Seen,
    stop_after: usize,
    graceful: bool,
) {
    let consumer = consumer(bootstrap, group_id, topic, mode).await;
    let stop = consumer.shutdown_handle();
    let count = Arc::new(AtomicUsize::new(0));
    let run = tokio::spawn({
        let seen = Arc::clone(seen);
        let count = Arc::clone(&count);
        consumer.run(move |r| {
            let seen = Arc::clone(&seen);
            let count = Arc::clone(&count);
            async move {
                tokio::time::sleep(Duration::from_millis(r.offset() as u64 % 3)).await;
                record_seen(&seen, &r);
                count.fetch_add(1, Ordering::Relaxed);
                Ok::<_, std::io::Error>(())
            }
        })
    });
    // Polled often, to stop close to `stop_after`.
    eventually_every(
        Duration::from_secs(120),
        Duration::from_millis(5),
        || format!("stalled at {}", count.load(Ordering::Relaxed)),
        || count.load(Ordering::Relaxed) >= stop_after,
    )
    .await;
    if graceful {
        stop.shutdown();
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    } else {
        run.abort();
        let _ = run.await;
    }
}

async fn restart_scenario(graceful: bool) {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("restart");
    let group_id = random_name("g");
    create_topic(&bootstrap, &topic, 4, 1).await.unwrap();
    let n = 5_000;
    produce_keyed(&bootstrap, &topic, n, 200).await;
    let mode = DispatchMode::KeyOrdered { max_in_flight: 32 };

    let seen: Seen = Arc::default();
    consume_until(
        &bootstrap,
        &group_id,
        &topic,
        mode,
        &seen,
        n * 2 / 5,
        graceful,
    )
    .await;
    let first_run: usize = seen.lock().values().map(Vec::len).sum();
    // Restart after 3 s, as in the users' delivery test.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second: Seen = Arc::default();
    let seen_second = {
        let consumer = consumer(&bootstrap, &group_id, &topic, mode).await;
        let stop = consumer.shutdown_handle();
        let run = tokio::spawn({
            let second = Arc::clone(&second);
            consumer.run(move |r| {
                let second = Arc::clone(&second);
                async move {
                    record_seen(&second, &r);
                    Ok::<_, std::io::Error>(())
                }
            })
        });
        let ever_processed = || {
            let mut all = values(&seen);
            all.extend(values(&second));
            all.len()
        };
        eventually_every(
            Duration::from_secs(120),
            Duration::from_millis(50),
            || format!("gap: {} of {n} records ever processed", ever_processed()),
            || ever_processed() == n,
        )
        .await;
        stop.shutdown();
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        second.lock().clone()
    };
    let first = seen.lock().clone();
    let first_set: HashSet<usize> = first.values().flatten().map(|(_, v)| *v).collect();
    let duplicates = seen_second
        .values()
        .flatten()
        .filter(|(_, v)| first_set.contains(v))
        .count();
    eprintln!("graceful={graceful}: first run {first_run}, duplicates after restart {duplicates}");
    if graceful {
        // Only what was in flight at the stop (at most max_in_flight) may come again; with the
        // offset map in the commit, finished records above the watermark are skipped too.
        assert!(
            duplicates <= 32,
            "{duplicates} duplicates after a graceful stop"
        );
    }
    // Per-key order holds within each run.
    in_key_order(&first).unwrap();
    in_key_order(&seen_second).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_at_forty_percent_then_restart_leaves_no_gap_and_few_duplicates() {
    restart_scenario(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_consumer_restarted_leaves_no_gap() {
    restart_scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_member_joining_with_records_in_flight_loses_nothing() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("rebalance");
    let group_id = random_name("g");
    create_topic(&bootstrap, &topic, 6, 1).await.unwrap();
    let n = 6_000;
    produce_keyed(&bootstrap, &topic, n, 300).await;
    let mode = DispatchMode::KeyOrdered { max_in_flight: 64 };
    let seen: Seen = Arc::default();

    let start = |seen: Seen| {
        let (bootstrap, group_id, topic) = (bootstrap.clone(), group_id.clone(), topic.clone());
        async move {
            let consumer = consumer(&bootstrap, &group_id, &topic, mode).await;
            let stop = consumer.shutdown_handle();
            let run = tokio::spawn(consumer.run(move |r| {
                let seen = Arc::clone(&seen);
                async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    record_seen(&seen, &r);
                    Ok::<_, std::io::Error>(())
                }
            }));
            (stop, run)
        }
    };
    let (stop_a, run_a) = start(Arc::clone(&seen)).await;
    let processed = || seen.lock().values().map(Vec::len).sum::<usize>();
    eventually_every(
        Duration::from_secs(60),
        Duration::from_millis(10),
        || format!("only {} of 500 processed by the first member", processed()),
        || processed() >= 500,
    )
    .await;
    // 64 records are in flight now (5 ms each); a second member joins.
    let (stop_b, run_b) = start(Arc::clone(&seen)).await;
    eventually_every(
        Duration::from_secs(120),
        Duration::from_millis(50),
        || format!("lost records: {} of {n}", values(&seen).len()),
        || values(&seen).len() == n,
    )
    .await;
    stop_a.shutdown();
    stop_b.shutdown();
    run_a.await.unwrap().unwrap();
    run_b.await.unwrap().unwrap();
    let total: usize = seen.lock().values().map(Vec::len).sum();
    eprintln!("rebalance with records in flight: {total} processed for {n} records");
    assert!(
        total - n <= 64 * 2,
        "duplicates beyond the in-flight window: {}",
        total - n
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_the_session_timeout_keeps_the_member_and_shutdown_meets_its_deadline()
 {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("blocking");
    let group_id = random_name("g");
    create_topic(&bootstrap, &topic, 2, 1).await.unwrap();
    produce_keyed(&bootstrap, &topic, 20, 20).await;

    let consumer = ConsumerBuilder::new(client(&bootstrap), test_group(&group_id, &topic))
        .dispatch(DispatchMode::Unordered { max_in_flight: 4 })
        .auto_offset_reset(OffsetReset::Earliest)
        .shutdown_timeout(Duration::from_secs(3))
        .revoke_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let stop = consumer.shutdown_handle();
    let started = Arc::new(AtomicUsize::new(0));
    let run = tokio::spawn({
        let started = Arc::clone(&started);
        consumer.run(move |r| {
            let started = Arc::clone(&started);
            async move {
                started.fetch_add(1, Ordering::Relaxed);
                if r.offset() == 0 && r.partition() == 0 {
                    // Far longer than the 6 s session timeout.
                    tokio::time::sleep(Duration::from_secs(600)).await;
                }
                Ok::<_, std::io::Error>(())
            }
        })
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        started.load(Ordering::Relaxed) >= 19,
        "the other records flowed past the slow one"
    );
    // Still a member after 10 s with a 6 s session timeout: heartbeats do not wait for handlers.
    let described = consumer_groups_describe(&bootstrap, &group_id, &["--members"]).await;
    assert!(
        described
            .lines()
            .filter(|l| l.starts_with(group_id.as_str()))
            .count()
            == 1,
        "{described}"
    );

    let stopping = Instant::now();
    stop.shutdown();
    let report = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "shutdown took {took:?} with a 3 s deadline"
    );
    assert!(
        report.timed_out || !report.uncommitted.is_empty(),
        "{report:?}"
    );
    assert!(
        report
            .uncommitted
            .iter()
            .any(|u| u.partition.partition == 0 && u.watermark == 0),
        "the blocked record's partition is reported uncommitted at its offset: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_record_in_a_batch_does_not_fail_the_others() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("batch");
    let group_id = random_name("g");
    create_topic(&bootstrap, &topic, 4, 1).await.unwrap();
    produce_keyed(&bootstrap, &topic, 2_000, 400).await;

    let consumer = consumer(
        &bootstrap,
        &group_id,
        &topic,
        DispatchMode::KeyOrdered { max_in_flight: 64 },
    )
    .await;
    let stop = consumer.shutdown_handle();
    // Every batch handed over, as (value, whether the handler failed it) in batch order.
    type Batches = Arc<Mutex<Vec<Vec<(usize, bool)>>>>;
    let batches = Batches::default();
    let run = tokio::spawn(consumer.run_batch(50, {
        let batches = Arc::clone(&batches);
        move |records: Vec<ConsumedRecord>| {
            let batches = Arc::clone(&batches);
            async move {
                let mut batches = batches.lock();
                let seen: HashSet<usize> = batches.iter().flatten().map(|(v, _)| *v).collect();
                let batch: Vec<(usize, bool)> = records
                    .iter()
                    .map(|r| {
                        let v: usize = std::str::from_utf8(r.value().unwrap())
                            .unwrap()
                            .parse()
                            .unwrap();
                        // Every 97th record fails on its first attempt only.
                        (v, v.is_multiple_of(97) && !seen.contains(&v))
                    })
                    .collect();
                let results = batch
                    .iter()
                    .map(|(_, failed)| {
                        if *failed {
                            Err(std::io::Error::other("transient"))
                        } else {
                            Ok(())
                        }
                    })
                    .collect::<Vec<_>>();
                batches.push(batch);
                results
            }
        }
    }));
    let handled = |batches: &[Vec<(usize, bool)>]| {
        let mut n: HashMap<usize, usize> = HashMap::new();
        for (v, _) in batches.iter().flatten() {
            *n.entry(*v).or_insert(0) += 1;
        }
        n
    };
    // A failed record is retried alone (handled twice), and the records of its key after it in the
    // same batch (its run), which the handler saw, are delivered again after it (twice as well).
    // Every other record is handled once: a failure fails no other key's records.
    let key = |v: usize| v % 400;
    let handed_back = |batches: &[Vec<(usize, bool)>], v: usize| {
        batches.iter().any(|b| {
            b.iter()
                .position(|(x, _)| *x == v)
                .is_some_and(|at| b[..at].iter().any(|(x, f)| *f && key(*x) == key(v)))
        })
    };
    let expected = |batches: &[Vec<(usize, bool)>], v: usize| {
        if v.is_multiple_of(97) || handed_back(batches, v) {
            2
        } else {
            1
        }
    };
    // Done once every record was handled as often as expected (handed-back records are seen
    // before their second delivery: waiting for the records alone would stop before it).
    eventually_every(
        Duration::from_secs(120),
        Duration::from_millis(50),
        || format!("{} records seen", handled(&batches.lock()).len()),
        || {
            let batches = batches.lock();
            let n = handled(&batches);
            n.len() >= 2_000 && (0..2_000).all(|v| n.get(&v) >= Some(&expected(&batches, v)))
        },
    )
    .await;
    stop.shutdown();
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(report.uncommitted.is_empty(), "{report:?}");
    let batches = batches.lock().clone();
    let handled = handled(&batches);
    assert_eq!(handled.len(), 2_000);
    let mut handed_back_count = 0;
    for v in 0..2_000 {
        let again = handed_back(&batches, v);
        assert_eq!(
            handled[&v],
            expected(&batches, v),
            "record {v} (handed back: {again})"
        );
        handed_back_count += usize::from(again);
    }
    assert!(
        handed_back_count > 0,
        "batches hold runs of a key, so some records follow a failure of their key"
    );
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert!(sizes.iter().all(|&s| (1..=50).contains(&s)), "{sizes:?}");
    assert!(
        sizes.iter().any(|&s| s > 1),
        "records were batched: {sizes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_to_latest_is_pinned_so_records_produced_while_down_are_not_skipped() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("latest");
    let group_id = random_name("g");
    create_topic(&bootstrap, &topic, 2, 1).await.unwrap();
    produce_keyed(&bootstrap, &topic, 10, 10).await;
    let latest = |bootstrap: String, group_id: String, topic: String| async move {
        ConsumerBuilder::new(client(&bootstrap), test_group(&group_id, &topic))
            .auto_offset_reset(OffsetReset::Latest)
            .commit_interval(Duration::from_millis(200))
            .revoke_timeout(Duration::from_secs(10))
            .build()
            .await
            .unwrap()
    };

    // First run: nothing new arrives; the reset position (the end) is committed anyway.
    let consumer = latest(bootstrap.clone(), group_id.clone(), topic.clone()).await;
    let stop = consumer.shutdown_handle();
    let run = tokio::spawn(consumer.run(|_r| async { Ok::<_, std::io::Error>(()) }));
    eventually_async(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let commits = committed(&bootstrap, &group_id, &topic, 2).await;
            if commits.len() < 2 {
                return Err(format!(
                    "the reset position was never committed: {commits:?}"
                ));
            }
            Ok(())
        },
    )
    .await;
    stop.shutdown();
    run.await.unwrap().unwrap();

    // Records produced while the group is down are consumed by the next run, not skipped.
    produce_keyed(&bootstrap, &topic, 20, 20).await;
    let consumer = latest(bootstrap.clone(), group_id.clone(), topic.clone()).await;
    let stop = consumer.shutdown_handle();
    let seen = Arc::new(AtomicUsize::new(0));
    let run = tokio::spawn(consumer.run({
        let seen = Arc::clone(&seen);
        move |_r| {
            let seen = Arc::clone(&seen);
            async move {
                seen.fetch_add(1, Ordering::Relaxed);
                Ok::<_, std::io::Error>(())
            }
        }
    }));
    eventually_every(
        Duration::from_secs(30),
        POLL,
        || format!("only {} of 20 consumed", seen.load(Ordering::Relaxed)),
        || seen.load(Ordering::Relaxed) >= 20,
    )
    .await;
    stop.shutdown();
    run.await.unwrap().unwrap();
    assert_eq!(
        seen.load(Ordering::Relaxed),
        20,
        "exactly the records produced while down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_offset_reset_none_without_a_commit_is_a_clear_error() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("reset-none");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    let consumer = ConsumerBuilder::new(client(&bootstrap), test_group(&random_name("g"), &topic))
        .auto_offset_reset(OffsetReset::None)
        .revoke_timeout(Duration::from_secs(5))
        .shutdown_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        consumer.run(|_r| async { Ok::<_, std::io::Error>(()) }),
    )
    .await
    .expect("the consumer stops by itself");
    match result {
        Err(e @ kafkit::Error::NoOffset { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains(&topic) && message.contains("auto.offset.reset"),
                "{message}"
            );
        }
        other => panic!("expected NoOffset, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_record_holds_its_partition_within_the_offset_map_span() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("ahead");
    let group_id = random_name("g");
    create_topic(&bootstrap, &topic, 1, 1).await.unwrap();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    for start in (0..40_000).step_by(5_000) {
        let sends = (start..start + 5_000).map(|i| {
            let producer = producer.clone();
            // Offset 0 has its own key; everything else is spread over 100 keys.
            let key = if i == 0 {
                "stuck".to_owned()
            } else {
                format!("k{}", i % 100)
            };
            let record = ProducerRecord::new(&topic, i.to_string())
                .key(key)
                .partition(0);
            async move { producer.send(record).await.unwrap() }
        });
        futures::future::join_all(sends).await;
    }

    let consumer = consumer(
        &bootstrap,
        &group_id,
        &topic,
        DispatchMode::KeyOrdered { max_in_flight: 64 },
    )
    .await;
    let stop = consumer.shutdown_handle();
    let release = Arc::new(tokio::sync::Notify::new());
    let processed = Arc::new(AtomicUsize::new(0));
    let run = tokio::spawn(consumer.run({
        let release = Arc::clone(&release);
        let processed = Arc::clone(&processed);
        move |r| {
            let release = Arc::clone(&release);
            let processed = Arc::clone(&processed);
            async move {
                if r.offset() == 0 {
                    release.notified().await;
                }
                processed.fetch_add(1, Ordering::Relaxed);
                Ok::<_, std::io::Error>(())
            }
        }
    }));
    // Processing runs ahead of the stuck watermark, then stops at the span the map can cover.
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = processed.load(Ordering::Relaxed);
        if now > 1_000 && now == last {
            break;
        }
        assert!(Instant::now() < deadline, "processing never settled: {now}");
        last = now;
    }
    assert!(
        (20_000..24_500).contains(&last),
        "held at {last} records ahead of the stuck offset"
    );
    // The commit names the stuck offset and carries the map of what is finished above it.
    let tp = TopicPartition::new(&topic, 0);
    let metadata = eventually_async(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let c = kafkit::group::committed_offsets(
                &client(&bootstrap),
                &group_id,
                std::slice::from_ref(&tp),
            )
            .await
            .unwrap();
            if let Some(Some(c)) = c.get(&tp)
                && let Some(m) = &c.metadata
            {
                assert_eq!(c.offset, 0, "the watermark is the stuck record");
                return Ok(m.clone());
            }
            Err(format!("no commit with a map: {c:?}"))
        },
    )
    .await;
    assert!(
        metadata.starts_with("kk1:0:") && metadata.len() <= 4096,
        "{} bytes",
        metadata.len()
    );

    release.notify_one();
    eventually_every(
        Duration::from_secs(60),
        POLL,
        || format!("{} of 40000", processed.load(Ordering::Relaxed)),
        || processed.load(Ordering::Relaxed) >= 40_000,
    )
    .await;
    stop.shutdown();
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(report.uncommitted.is_empty(), "{report:?}");
    assert_eq!(
        committed(&bootstrap, &group_id, &topic, 1).await,
        BTreeMap::from([(0, 40_000)])
    );
}

/// A consumer dropped while a commit is in flight (its broker frozen, so the commit hangs) leaves
/// nothing running behind it: no task keeps the group member, its connections or its fetchers
/// alive. Before commit tasks were owned, the hung commit kept the member, and its connection to
/// the broker, open until the request timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_consumer_leaves_no_task_or_connection_behind() {
    let kafka = kafkit_testkit::LocalKafka::start().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let port: u16 = bootstrap.rsplit(':').next().unwrap().parse().unwrap();
    let topic = random_name("drop");
    let group = random_name("drop-g");
    create_topic(&bootstrap, &topic, 2, 1).await.unwrap();
    produce_keyed(&bootstrap, &topic, 200, 10).await;

    let consumer = consumer(&bootstrap, &group, &topic, DispatchMode::PartitionOrdered).await;
    // The 100th record waits for the gate: it finishes only once the broker is frozen, so the
    // commit that follows it is in flight, hanging, when the consumer is dropped.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let (counter, held) = (Arc::clone(&handled), Arc::clone(&gate));
    let run = tokio::spawn(consumer.run(move |_| {
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        let held = Arc::clone(&held);
        async move {
            if n == 100 {
                let _ = held.acquire().await;
            }
            Ok::<_, std::io::Error>(())
        }
    }));
    eventually(Duration::from_secs(60), "100 records handed out", || {
        handled.load(Ordering::Relaxed) >= 100
    })
    .await;
    assert!(
        connections_to(port) > 0,
        "the running consumer is connected"
    );

    // Freeze the broker, then let the held record finish: the next commit interval sends a commit
    // that hangs.
    kafka.pause();
    gate.add_permits(1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    run.abort();
    let _ = run.await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while connections_to(port) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = connections_to(port);
    kafka.resume();
    assert_eq!(
        left, 0,
        "connections still open 3 s after the consumer was dropped"
    );
}

/// The consumer's connections are bounded by brokers, not partitions: on a topic of 512 partitions
/// led by one broker it holds the bootstrap/metadata connection, the coordinator's, and one fetch
/// connection (one Fetch per broker, in a fetch session), and still reads every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_twelve_partitions_take_a_few_connections_not_one_per_partition() {
    const PARTITIONS: i32 = 512;
    const PER_PARTITION: usize = 20;
    let kafka = kafkit_testkit::LocalKafka::start().await.unwrap();
    let bootstrap = kafka.bootstrap();
    let port: u16 = bootstrap.rsplit(':').next().unwrap().parse().unwrap();
    let topic = random_name("wide");
    let group = random_name("wide-g");
    create_topic(&bootstrap, &topic, PARTITIONS, 1)
        .await
        .unwrap();
    let n = PARTITIONS as usize * PER_PARTITION;
    {
        let producer = ProducerBuilder::new(client(&bootstrap))
            .build()
            .await
            .unwrap();
        let sends = (0..n).map(|i| {
            let record = ProducerRecord::new(&topic, i.to_string())
                .partition((i % PARTITIONS as usize) as i32);
            producer.send(record)
        });
        for d in futures::future::join_all(sends).await {
            d.unwrap();
        }
    }
    // The producer's connections are gone before the consumer starts.
    eventually(
        Duration::from_secs(10),
        "producer connections closed",
        || connections_to(port) == 0,
    )
    .await;

    let consumer = consumer(
        &bootstrap,
        &group,
        &topic,
        DispatchMode::Unordered { max_in_flight: 64 },
    )
    .await;
    let stop = consumer.shutdown_handle();
    let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn({
        let done = Arc::clone(&done);
        async move {
            let mut most = 0;
            while !done.load(Ordering::Acquire) {
                most = most.max(connections_to(port));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            most
        }
    });
    let run = tokio::spawn({
        let seen = Arc::clone(&seen);
        consumer.run(move |r| {
            let seen = Arc::clone(&seen);
            async move {
                let value: usize = std::str::from_utf8(r.value().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                seen.lock().push(value);
                Ok::<_, std::io::Error>(())
            }
        })
    });
    eventually(Duration::from_secs(120), "every record processed", || {
        seen.lock().len() >= n
    })
    .await;
    // Sampled while consuming only: the commit checks below open connections of their own.
    done.store(true, Ordering::Release);
    let most = sampler.await.unwrap();
    // Lag reaches 0: every partition's commit reaches its end offset.
    let mut lagging = PARTITIONS as usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let commits = committed(&bootstrap, &group, &topic, PARTITIONS).await;
        lagging = (0..PARTITIONS)
            .filter(|p| commits.get(p).copied() != Some(PER_PARTITION as i64))
            .count();
        if lagging == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.shutdown();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("shutdown in time")
        .unwrap()
        .unwrap();

    eprintln!("at most {most} connections to the broker while consuming {PARTITIONS} partitions");
    assert_eq!(
        lagging, 0,
        "partitions whose commit did not reach the log end"
    );
    let seen = seen.lock().clone();
    let distinct: HashSet<usize> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), n, "every record processed");
    assert_eq!(seen.len(), n, "no record processed twice");
    // Bootstrap/metadata, coordinator, one fetch connection; one spare for a reconnect in progress.
    assert!(
        most <= 4,
        "{most} connections to the broker while consuming {PARTITIONS} partitions"
    );
    assert!(
        most >= 2,
        "the sampler saw the consumer's connections: {most}"
    );
}

/// One Fetch covers all of a broker's partitions, but one stuck record does not stop the others:
/// the partition's records hold only their own share of the budget, and each Fetch takes what is
/// free, even when a full Fetch of every partition would want the whole budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_record_does_not_stop_the_other_partitions_of_its_broker() {
    const PARTITIONS: i32 = 40;
    const PER_PARTITION: usize = 50;
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("stuck");
    let group = random_name("stuck-g");
    create_topic(&bootstrap, &topic, PARTITIONS, 1)
        .await
        .unwrap();
    let producer = ProducerBuilder::new(client(&bootstrap))
        .build()
        .await
        .unwrap();
    producer
        .send(ProducerRecord::new(&topic, "stuck").partition(0))
        .await
        .unwrap();
    // 40 partitions x 64 KiB, twice, is more than the 4 MiB budget: a full Fetch wants all of it.
    let consumer = ConsumerBuilder::new(client(&bootstrap), test_group(&group, &topic))
        .dispatch(DispatchMode::Unordered { max_in_flight: 64 })
        .auto_offset_reset(OffsetReset::Earliest)
        .commit_interval(Duration::from_millis(200))
        .revoke_timeout(Duration::from_secs(10))
        .buffer_bytes(4 * 1024 * 1024)
        .max_partition_fetch_bytes(64 * 1024)
        .build()
        .await
        .unwrap();
    let stop = consumer.shutdown_handle();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let stuck = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let run = tokio::spawn({
        let (gate, stuck, done) = (Arc::clone(&gate), Arc::clone(&stuck), Arc::clone(&done));
        consumer.run(move |r| {
            let (gate, stuck, done) = (Arc::clone(&gate), Arc::clone(&stuck), Arc::clone(&done));
            async move {
                if r.partition() == 0 && r.offset() == 0 {
                    stuck.store(1, Ordering::Relaxed);
                    let _ = gate.acquire().await;
                }
                done.fetch_add(1, Ordering::Relaxed);
                Ok::<_, std::io::Error>(())
            }
        })
    });
    eventually(Duration::from_secs(60), "the first record stuck", || {
        stuck.load(Ordering::Relaxed) == 1
    })
    .await;
    // Records produced while it is stuck, in later Fetches of the same broker, all get processed.
    let n = (PARTITIONS as usize - 1) * PER_PARTITION;
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let sends = chunk.iter().map(|&i| {
            let record = ProducerRecord::new(&topic, i.to_string())
                .partition(1 + (i % (PARTITIONS as usize - 1)) as i32);
            producer.send(record)
        });
        for d in futures::future::join_all(sends).await {
            d.unwrap();
        }
    }
    eventually(
        Duration::from_secs(60),
        "the other records processed while one is stuck",
        || done.load(Ordering::Relaxed) >= n,
    )
    .await;
    gate.add_permits(1);
    eventually(Duration::from_secs(60), "every record processed", || {
        done.load(Ordering::Relaxed) > n
    })
    .await;
    stop.shutdown();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("shutdown in time")
        .unwrap()
        .unwrap();
    assert_eq!(done.load(Ordering::Relaxed), n + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_assignment_reads_its_partitions_and_commits_for_the_group_it_never_joins() {
    let bootstrap = shared().await.unwrap().bootstrap();
    let topic = random_name("assigned");
    create_topic(&bootstrap, &topic, 3, 1).await.unwrap();
    let group = random_name("assigned-g");
    let mine = vec![
        TopicPartition::new(&topic, 0),
        TopicPartition::new(&topic, 2),
    ];
    let ours = |ends: &BTreeMap<i32, i64>| -> BTreeMap<i32, i64> {
        ends.iter()
            .filter(|(p, _)| **p != 1)
            .map(|(p, e)| (*p, *e))
            .collect()
    };
    // Runs a consumer of `mine` until it has handled `n` records; returns (partition, offset) of
    // each, in the order handled.
    let run_until = |n: i64| {
        let (bootstrap, group, mine) = (bootstrap.clone(), group.clone(), mine.clone());
        async move {
            let consumer =
                ConsumerBuilder::new(client(&bootstrap), GroupConfig::assigned(&group, mine))
                    .auto_offset_reset(OffsetReset::Earliest)
                    .commit_interval(Duration::from_millis(200))
                    .build()
                    .await
                    .unwrap();
            let stop = consumer.shutdown_handle();
            let health = consumer.health_handle();
            let seen: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
            let handled = Arc::clone(&seen);
            let run = tokio::spawn(consumer.run(move |r| {
                handled.lock().push((r.partition(), r.offset()));
                async { Ok::<_, std::io::Error>(()) }
            }));
            eventually(Duration::from_secs(60), &format!("{n} records"), || {
                seen.lock().len() as i64 >= n
            })
            .await;
            // Once it has committed (the group exists), the group has no members.
            let description = eventually_async(Duration::from_secs(30), POLL, || async {
                kafkit::admin::describe_group(&client(&bootstrap), &group)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
            assert!(description.members.is_empty(), "{description:?}");
            // No heartbeat to miss; its commits answered: the membership checks are healthy.
            let report = health.report();
            for name in ["coordinator", "heartbeat"] {
                let check = report.checks.iter().find(|c| c.name == name).unwrap();
                assert_eq!(check.status, HealthStatus::Healthy, "{report:?}");
            }
            stop.shutdown();
            let report = tokio::time::timeout(Duration::from_secs(60), run)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert!(report.uncommitted.is_empty(), "{report:?}");
            seen.lock().clone()
        }
    };

    let first = produce_keyed(&bootstrap, &topic, 300, 30).await;
    let seen = run_until(ours(&first).values().sum()).await;
    assert!(seen.iter().all(|(p, _)| *p != 1), "only its partitions");
    assert_eq!(seen.len() as i64, ours(&first).values().sum::<i64>());
    assert_eq!(
        committed(&bootstrap, &group, &topic, 3).await,
        ours(&first),
        "committed for the group, which it never joined"
    );

    // Restarted, it resumes from the group's committed offsets: only the new records.
    let second = produce_keyed(&bootstrap, &topic, 90, 30).await;
    let new: i64 = ours(&second)
        .iter()
        .map(|(p, end)| end - first.get(p).copied().unwrap_or(0))
        .sum();
    let seen = run_until(new).await;
    assert!(
        seen.iter()
            .all(|(p, o)| *p != 1 && *o >= first.get(p).copied().unwrap_or(0)),
        "{seen:?}"
    );
    assert_eq!(seen.len() as i64, new);
    assert_eq!(
        committed(&bootstrap, &group, &topic, 3).await,
        ours(&second)
    );
}
