//! The kafkit demo: what the framework is for, in about 20 seconds.
//!
//! Starts a local Apache Kafka (or uses `KAFKA_BOOTSTRAP=host:port`), produces keyed orders
//! continuously with kafkit's producer, and consumes them with a group of three members in
//! `KeyOrdered` mode and a slow handler. One member is killed mid-way (its task aborted: no final
//! commit, no LeaveGroup) and the group rebalances. A progress line each second shows the members,
//! the partitions each owns, records processed per second and the group's lag; at the end three
//! checks (per-key order, every acknowledged record processed, duplicates only within the killed
//! member's uncommitted window) and a table from the metrics snapshot. Exits 1 if a check fails.
//!
//! Run: `cargo run -p kafkit --example demo` (or `just demo`). `KAFKIT_DEMO_SECONDS` (production
//! time, default 14) and `KAFKIT_DEMO_RATE` (orders per second, default 300) change its size.

#![allow(clippy::print_stdout)]

mod scenario;

use std::io::IsTerminal;
use std::time::Instant;

use kafkit_testkit::TestKafka;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let started = Instant::now();
    let local = std::env::var("KAFKA_BOOTSTRAP").map_or(true, |b| b.trim().is_empty());
    if local {
        println!(
            "starting a local Apache Kafka {} (KRaft, no Docker)...",
            kafkit_testkit::kafka_version()
        );
    }
    let kafka = TestKafka::from_env_or_start().await?;
    println!(
        "broker at {} after {:.1?}",
        kafka.bootstrap(),
        started.elapsed()
    );

    let mut config = scenario::DemoConfig::from_env(kafka.bootstrap())?;
    config.live = std::io::stdout().is_terminal();
    let outcome = scenario::run(config).await?;
    println!();
    if outcome.passed() {
        println!("all checks passed in {:.1?}", started.elapsed());
        Ok(())
    } else {
        println!("CHECKS FAILED (see above)");
        std::process::exit(1);
    }
}
