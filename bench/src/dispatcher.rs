//! The dispatcher alone, in memory: records with Zipf-distributed keys (1,000 keys) on 12
//! partitions through each dispatch mode with a handler that does nothing, against the loops a team
//! writes by hand for the same job (its peer):
//!
//! - `PartitionOrdered`: one task per partition fed by a channel, processing in order;
//! - `KeyOrdered`: 64 worker tasks, each key always on the same worker (hash of the key), fed by
//!   channels;
//! - `Unordered`: a task per record, at most 64 at once (a semaphore).
//!
//! The hand-written loops only process; kafkit also keeps each partition's watermark (what a commit
//! would name) and goes through the failure path (retry policy, circuit breaker) per record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafkit::consumer::DispatchMode;
use kafkit::partitioner::partition_for_key;
use kafkit_core::consumer::bench::dispatch_in_memory;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

/// Keys in the key space.
const KEYS: usize = 1_000;
/// Partitions the keys spread over.
const PARTITIONS: i32 = 12;
/// Records in flight at most, for the modes that bound them.
const IN_FLIGHT: usize = 64;
/// Value bytes per record.
pub(crate) const VALUE: usize = 100;

/// The modes measured, by the name the report uses.
pub(crate) fn modes() -> [(&'static str, DispatchMode); 3] {
    [
        ("PartitionOrdered", DispatchMode::PartitionOrdered),
        (
            "KeyOrdered",
            DispatchMode::KeyOrdered {
                max_in_flight: IN_FLIGHT,
            },
        ),
        (
            "Unordered",
            DispatchMode::Unordered {
                max_in_flight: IN_FLIGHT,
            },
        ),
    ]
}

/// `n` records as (partition, key): keys drawn from a Zipf distribution (exponent 1) over `KEYS`
/// keys with a fixed seed, each on the partition the Java partitioner picks for it.
pub(crate) fn workload(n: u64) -> Vec<(usize, Vec<u8>)> {
    let weights: Vec<f64> = (1..=KEYS).map(|rank| 1.0 / rank as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(KEYS);
    let mut acc = 0.0;
    for w in weights {
        acc += w / total;
        cdf.push(acc);
    }
    let keys: Vec<(usize, Vec<u8>)> = (0..KEYS)
        .map(|k| {
            let key = format!("key-{k}").into_bytes();
            let partition = partition_for_key(&key, PARTITIONS) as usize;
            (partition, key)
        })
        .collect();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            // splitmix64: a fixed, fast, good-enough uniform source for the draw.
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let u = (z ^ (z >> 31)) as f64 / u64::MAX as f64;
            let rank = cdf.partition_point(|&c| c < u).min(KEYS - 1);
            keys[rank].clone()
        })
        .collect()
}

/// kafkit's dispatcher: the time to process every record.
pub(crate) async fn kafkit(mode: DispatchMode, records: &[(usize, Vec<u8>)]) -> Duration {
    dispatch_in_memory(mode, records, VALUE).await
}

/// A record as the hand-written loops carry it.
struct Item {
    key: Vec<u8>,
    value: Vec<u8>,
}

/// The handler: does nothing, asynchronously, like kafkit's.
async fn handle(item: Item) -> Result<(), std::io::Error> {
    std::hint::black_box((item.key.len(), item.value.len()));
    Ok(())
}

/// The hand-written loop for `mode`: the time to process every record.
pub(crate) async fn hand_written(mode: DispatchMode, records: &[(usize, Vec<u8>)]) -> Duration {
    let items: Vec<(usize, Item)> = records
        .iter()
        .map(|(p, key)| {
            (
                *p,
                Item {
                    key: key.clone(),
                    value: vec![0; VALUE],
                },
            )
        })
        .collect();
    let started = Instant::now();
    match mode {
        DispatchMode::PartitionOrdered => lanes(items, PARTITIONS as usize, |p, _| p).await,
        DispatchMode::KeyOrdered { max_in_flight } => {
            lanes(items, max_in_flight, |_, key| {
                key.iter()
                    .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(*b as usize))
            })
            .await
        }
        DispatchMode::Unordered { max_in_flight } => {
            let permits = Arc::new(Semaphore::new(max_in_flight));
            let mut tasks = JoinSet::new();
            for (_, item) in items {
                let permit = Arc::clone(&permits).acquire_owned().await.expect("open");
                tasks.spawn(async move {
                    handle(item).await.expect("no-op handler");
                    drop(permit);
                });
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    started.elapsed()
}

/// `workers` tasks, each fed by a channel; `route(partition, key)` picks the worker, so what it
/// routes together is processed in order.
async fn lanes(items: Vec<(usize, Item)>, workers: usize, route: impl Fn(usize, &[u8]) -> usize) {
    let mut senders = Vec::with_capacity(workers);
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let (tx, mut rx) = mpsc::unbounded_channel::<Item>();
        senders.push(tx);
        tasks.spawn(async move {
            while let Some(item) = rx.recv().await {
                handle(item).await.expect("no-op handler");
            }
        });
    }
    for (p, item) in items {
        let w = route(p, &item.key) % workers;
        senders[w].send(item).expect("worker alive");
    }
    drop(senders);
    while tasks.join_next().await.is_some() {}
}
