//! `kafkit topics list / describe / create / delete`.

use clap::{Args, Subcommand};
use kafkit::Error;
use kafkit::admin::{self, NewTopic, TopicDescription};
use serde_json::{Value, json};

use crate::common::{ClusterArgs, ids, print, table};
use crate::{EXIT_USAGE, Failure};

/// TOPIC_ALREADY_EXISTS.
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// `kafkit topics ...`.
#[derive(Debug, Args)]
pub(crate) struct TopicsArgs {
    #[command(subcommand)]
    command: TopicsCommand,
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// List topics with their partition count and replication factor.
    List(ListArgs),
    /// Show each partition of some topics: leader, replicas, in-sync replicas.
    Describe(DescribeArgs),
    /// Create a topic and wait until every partition has a leader.
    Create(CreateArgs),
    /// Delete topics.
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Include Kafka's internal topics (`__consumer_offsets`, ...).
    #[arg(long)]
    internal: bool,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct DescribeArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The topics (repeat the flag or separate with commas).
    #[arg(long, required = true, value_delimiter = ',')]
    topic: Vec<String>,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CreateArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The topic.
    #[arg(long)]
    topic: String,
    /// Partitions (default: the broker's `num.partitions`).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: Option<i32>,
    /// Replication factor (default: the broker's `default.replication.factor`).
    #[arg(long, value_parser = clap::value_parser!(i16).range(1..))]
    replication_factor: Option<i16>,
    /// A topic config, `key=value` (repeatable), e.g. `--config retention.ms=3600000`.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    configs: Vec<String>,
    /// Succeed without changes if the topic exists already.
    #[arg(long)]
    if_not_exists: bool,
}

#[derive(Debug, Args)]
struct DeleteArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The topics (repeat the flag or separate with commas).
    #[arg(long, required = true, value_delimiter = ',')]
    topic: Vec<String>,
    /// Succeed if a topic does not exist.
    #[arg(long)]
    if_exists: bool,
}

/// Runs a `topics` subcommand.
pub(crate) async fn run(args: TopicsArgs) -> Result<(), Failure> {
    match args.command {
        TopicsCommand::List(a) => {
            let cluster = admin::describe_cluster(&a.cluster.client()?).await?;
            let topics: Vec<&TopicDescription> = cluster
                .topics
                .iter()
                .filter(|t| a.internal || !t.internal)
                .collect();
            if a.json {
                let list: Vec<Value> = topics.iter().map(|t| topic_json(t)).collect();
                print(&format!("{}\n", json!({ "topics": list })));
            } else {
                let rows = topics
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.partitions.len().to_string(),
                            replication(t),
                        ]
                    })
                    .collect();
                print(&table(&["TOPIC", "PARTITIONS", "REPLICATION"], rows));
            }
        }
        TopicsCommand::Describe(a) => {
            let topics = admin::describe_topics(&a.cluster.client()?, &a.topic).await?;
            if a.json {
                let list: Vec<Value> = topics.iter().map(topic_json).collect();
                print(&format!("{}\n", json!({ "topics": list })));
            } else {
                let rows = topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(|p| {
                            vec![
                                t.name.clone(),
                                p.partition.to_string(),
                                p.leader.map_or_else(|| "NONE".into(), |l| l.to_string()),
                                ids(&p.replicas),
                                ids(&p.isr),
                                ids(&p.offline),
                            ]
                        })
                    })
                    .collect();
                print(&table(
                    &["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR", "OFFLINE"],
                    rows,
                ));
            }
        }
        TopicsCommand::Create(a) => {
            let mut topic = NewTopic::new(&a.topic);
            if let Some(p) = a.partitions {
                topic = topic.partitions(p);
            }
            if let Some(r) = a.replication_factor {
                topic = topic.replication_factor(r);
            }
            for c in &a.configs {
                let Some((k, v)) = c.split_once('=') else {
                    return Err(Failure {
                        code: EXIT_USAGE,
                        message: format!("--config `{c}` is not KEY=VALUE"),
                    });
                };
                topic = topic.config(k.trim(), v.trim());
            }
            match admin::create_topics(&a.cluster.client()?, &[topic]).await {
                Ok(()) => print(&format!("created topic `{}`\n", a.topic)),
                Err(Error::Admin {
                    code: TOPIC_ALREADY_EXISTS,
                    ..
                }) if a.if_not_exists => {
                    print(&format!("topic `{}` exists already\n", a.topic));
                }
                Err(e) => return Err(e.into()),
            }
        }
        TopicsCommand::Delete(a) => {
            let client = a.cluster.client()?;
            for topic in &a.topic {
                match admin::delete_topics(&client, std::slice::from_ref(topic)).await {
                    Ok(()) => print(&format!("deleted topic `{topic}`\n")),
                    Err(Error::UnknownTopic { .. }) if a.if_exists => {
                        print(&format!("topic `{topic}` does not exist\n"));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}

/// The replication factor: the largest replica count of the topic's partitions.
fn replication(t: &TopicDescription) -> String {
    t.partitions
        .iter()
        .map(|p| p.replicas.len())
        .max()
        .map_or_else(|| "-".into(), |r| r.to_string())
}

fn topic_json(t: &TopicDescription) -> Value {
    json!({
        "name": t.name,
        "internal": t.internal,
        "partitions": t.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "leader": p.leader,
            "replicas": p.replicas,
            "isr": p.isr,
            "offline": p.offline,
        })).collect::<Vec<_>>(),
    })
}
