//! Topic administration for tests, and random names so tests sharing a broker never collide.

use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::client::ClientBuilder;

use crate::{Error, Result};

/// `prefix-<12 random hex digits>`: a topic or group name no other test uses.
pub fn random_name(prefix: &str) -> String {
    format!("{prefix}-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// Creates `topic` with `partitions` partitions and replication factor `replication` and waits until
/// the cluster's metadata lists it.
pub async fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    replication: i16,
) -> Result<()> {
    let kafka = |context: String| move |source| Error::Kafka { context, source };
    let client = ClientBuilder::new(bootstrap.split(',').map(str::to_owned).collect())
        .backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
            deadline: Some(Duration::from_secs(30)),
        })
        .build()
        .await
        .map_err(kafka(format!("connecting to {bootstrap}")))?;
    client
        .controller_client()
        .map_err(kafka("creating a controller client".into()))?
        .create_topic(topic, partitions, replication, 30_000)
        .await
        .map_err(kafka(format!("creating topic {topic}")))?;
    for _ in 0..300 {
        let topics = client
            .list_topics()
            .await
            .map_err(kafka("listing topics".into()))?;
        if topics
            .iter()
            .any(|t| t.name == topic && t.partitions.len() == partitions as usize)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Error::Kafka {
        context: format!("topic {topic} created but not in metadata after 30 s"),
        source: rskafka::client::error::Error::Timeout,
    })
}
