//! Starts a local Apache Kafka for manual use, prints its bootstrap address and log path, and keeps it
//! running until Ctrl-C. `cargo run -p kafkit-testkit --example broker [nodes] [data-root]`
//! (`data-root`: where the data goes instead of the temp dir, e.g. `/dev/shm`).

#![allow(clippy::print_stdout)]

use kafkit_testkit::{BrokerOptions, LocalCluster};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let nodes: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1);
    let mut options = BrokerOptions::default();
    if let Some(root) = std::env::args().nth(2) {
        options = options.data_root(root);
    }
    let cluster = LocalCluster::start_with(nodes, options).await?;
    println!("KAFKA_BOOTSTRAP={}", cluster.bootstrap());
    for node in cluster.nodes() {
        println!("node {} log: {}", node.id(), node.log_path().display());
    }
    println!("Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
