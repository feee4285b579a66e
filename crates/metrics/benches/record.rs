//! Micro-benchmark of the recording hot path: the cost of one `record_processed`, and writer throughput
//! alone versus next to a thread polling `snapshot()` in a tight loop, and next to a thread calling
//! `publish()` every millisecond (1000 times the default rate) and, as a worst case, in a tight loop.
//! Run with `cargo bench -p kafkit-metrics`.
//!
//! Plain `std::time::Instant` rather than criterion: the numbers wanted are a cost per call and ratios
//! measured in the same run, and each configuration runs several rounds interleaved with the others so a
//! noisy neighbour on a small machine hits all of them alike; the median round is reported.

#![allow(clippy::print_stdout, reason = "a bench binary reports on stdout")]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use kafkit_metrics::{Metrics, MetricsConfig};

const CALLS: u64 = 5_000_000;
const ROUNDS: usize = 5;
const WINDOW: Duration = Duration::from_millis(500);

/// Nanoseconds per `record_processed` call, cycling over `topics` topics.
fn ns_per_call(topics: &[String]) -> f64 {
    let metrics = Metrics::default();
    for t in topics {
        metrics.record_processed(t, Duration::from_micros(1));
    }
    let start = Instant::now();
    for i in 0..CALLS {
        let topic = &topics[i as usize % topics.len()];
        metrics.record_processed(black_box(topic), black_box(Duration::from_micros(i % 2000)));
    }
    start.elapsed().as_nanos() as f64 / CALLS as f64
}

#[derive(Clone, Copy, PartialEq)]
enum Peer {
    None,
    SnapshotReader,
    PublisherEveryMs,
    PublisherTightLoop,
}

/// Writer calls per second during `WINDOW`, with `peer` running on another thread; also the peer's
/// operations per second.
fn writer_throughput(peer: Peer) -> (f64, f64) {
    let metrics = Metrics::new(MetricsConfig::default());
    let topics: Vec<String> = (0..16).map(|i| format!("topic-{i}")).collect();
    for t in &topics {
        metrics.record_consumed(t, 1);
    }
    metrics.publish();
    let stop = Arc::new(AtomicBool::new(false));
    let peer_thread = (peer != Peer::None).then(|| {
        let (metrics, stop) = (metrics.clone(), Arc::clone(&stop));
        thread::spawn(move || {
            let mut ops = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match peer {
                    Peer::SnapshotReader => {
                        black_box(metrics.snapshot().totals.processed);
                    }
                    Peer::PublisherEveryMs => {
                        black_box(metrics.publish());
                        thread::sleep(Duration::from_millis(1));
                    }
                    Peer::PublisherTightLoop => {
                        black_box(metrics.publish());
                    }
                    Peer::None => unreachable!("no peer thread is spawned for Peer::None"),
                }
                ops += 1;
            }
            ops
        })
    });
    // Let the peer get going before timing the writer.
    thread::sleep(Duration::from_millis(20));
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < WINDOW {
        for i in 0..1024u64 {
            let topic = &topics[(calls + i) as usize % topics.len()];
            metrics.record_processed(black_box(topic), Duration::from_micros(i));
        }
        calls += 1024;
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let peer_ops = peer_thread.map_or(0, |t| t.join().expect("peer thread panicked"));
    (calls as f64 / elapsed, peer_ops as f64 / elapsed)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    println!("kafkit-metrics record bench ({cores} cores available)");

    let one = vec!["orders".to_owned()];
    let hundred: Vec<String> = (0..100).map(|i| format!("topic-{i}")).collect();
    let one_ns = median((0..ROUNDS).map(|_| ns_per_call(&one)).collect());
    let hundred_ns = median((0..ROUNDS).map(|_| ns_per_call(&hundred)).collect());
    println!("record_processed, single thread, 1 topic:    {one_ns:>7.1} ns/call");
    println!("record_processed, single thread, 100 topics: {hundred_ns:>7.1} ns/call");

    let mut alone = Vec::new();
    let mut reader = Vec::new();
    let mut periodic = Vec::new();
    let mut publisher = Vec::new();
    let (mut reads, mut publishes) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        alone.push(writer_throughput(Peer::None).0);
        let (w, r) = writer_throughput(Peer::SnapshotReader);
        reader.push(w);
        reads.push(r);
        periodic.push(writer_throughput(Peer::PublisherEveryMs).0);
        let (w, p) = writer_throughput(Peer::PublisherTightLoop);
        publisher.push(w);
        publishes.push(p);
    }
    let (alone, reader) = (median(alone), median(reader));
    let (periodic, publisher) = (median(periodic), median(publisher));
    let (reads, publishes) = (median(reads), median(publishes));
    println!(
        "writer alone:                          {:>7.2} M calls/s",
        alone / 1e6
    );
    println!(
        "writer + snapshot() reader tight loop: {:>7.2} M calls/s  ratio {:.3}  (reader: {:.1} M snapshots/s)",
        reader / 1e6,
        reader / alone,
        reads / 1e6
    );
    println!(
        "writer + publish() every 1 ms:         {:>7.2} M calls/s  ratio {:.3}",
        periodic / 1e6,
        periodic / alone
    );
    println!(
        "writer + publish() tight loop:         {:>7.2} M calls/s  ratio {:.3}  (publisher: {:.0} publishes/s)",
        publisher / 1e6,
        publisher / alone,
        publishes
    );
}
