//! `kafkit diag`: is the cluster usable from here? Bootstrap reachability, brokers (and whether
//! their advertised addresses answer from this host, the classic listener misconfiguration), the
//! controller, the API versions kafkit needs, and every topic's leaders and in-sync replicas. Ends
//! with one verdict line; any problem makes the exit code [`crate::EXIT_UNHEALTHY`].

use std::time::{Duration, Instant};

use clap::Args;
use kafkit::admin::{self, ClusterDescription, TopicDescription};
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::common::{ClusterArgs, ids, print, table};
use crate::{EXIT_UNHEALTHY, Failure};

/// The longest a TCP connect to one address may take before it counts as unreachable (less when
/// `--connect-timeout-ms` is less).
const TCP_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The APIs kafkit's producer, consumer group and tools send. A broker without one of them cannot
/// serve kafkit.
const NEEDED_APIS: &[&str] = &[
    "Produce",
    "Fetch",
    "ListOffsets",
    "Metadata",
    "OffsetCommit",
    "OffsetFetch",
    "FindCoordinator",
    "JoinGroup",
    "Heartbeat",
    "LeaveGroup",
    "SyncGroup",
    "DescribeGroups",
    "ListGroups",
    "ApiVersions",
    "CreateTopics",
    "DeleteTopics",
];

/// The group protocols a cluster can run, each with the key of the API its members speak
/// (JoinGroup, ConsumerGroupHeartbeat, ShareGroupHeartbeat, StreamsGroupHeartbeat): what the broker
/// advertises in ApiVersions (a broker leaves out the APIs of a protocol it does not run).
const GROUP_PROTOCOLS: &[(&str, i16)] = &[
    ("classic", 11),
    ("consumer", 68),
    ("share", 76),
    ("streams", 88),
];

/// The group protocols `cluster` offers (see [`GROUP_PROTOCOLS`]).
fn group_protocols(cluster: &ClusterDescription) -> Vec<&'static str> {
    GROUP_PROTOCOLS
        .iter()
        .filter(|(_, key)| cluster.api_versions.iter().any(|v| v.key == *key))
        .map(|(protocol, _)| *protocol)
        .collect()
}

/// `kafkit diag`.
#[derive(Debug, Args)]
pub(crate) struct DiagArgs {
    #[command(flatten)]
    cluster: ClusterArgs,

    /// Print one JSON document instead of the report.
    #[arg(long)]
    json: bool,

    /// Also list every API the broker supports with its version range.
    #[arg(long)]
    api_versions: bool,
}

/// Whether one address accepted a TCP connection, and how fast.
#[derive(Debug)]
struct Reach {
    address: String,
    result: Result<Duration, String>,
}

async fn reach(address: String, limit: Duration) -> Reach {
    let started = Instant::now();
    let result = match tokio::time::timeout(limit, TcpStream::connect(&address)).await {
        Ok(Ok(_)) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {limit:?}")),
    };
    Reach { address, result }
}

/// Runs `kafkit diag`.
pub(crate) async fn run(args: DiagArgs) -> Result<(), Failure> {
    let client = args.cluster.client()?;
    let limit = client.connect_timeout_limit().min(TCP_CHECK_TIMEOUT);
    let bootstrap = futures::future::join_all(
        client
            .bootstrap()
            .iter()
            .map(|address| reach(address.clone(), limit)),
    )
    .await;
    // Bounded by --connect-timeout-ms as a whole: a port that accepts TCP but never answers is
    // unreachable (exit 4) once it has passed.
    let cluster = admin::describe_cluster(&client).await?;
    let brokers = futures::future::join_all(
        cluster
            .brokers
            .iter()
            .map(|b| reach(format!("{}:{}", b.host, b.port), limit)),
    )
    .await;
    let problems = problems(&cluster, &bootstrap, &brokers);
    if args.json {
        print(&format!(
            "{}\n",
            report_json(&cluster, &bootstrap, &brokers, &problems)
        ));
    } else {
        print(&report_text(
            &cluster,
            &bootstrap,
            &brokers,
            &problems,
            args.api_versions,
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            code: EXIT_UNHEALTHY,
            message: format!(
                "{} problem(s) found: {}",
                problems.len(),
                problems.join("; ")
            ),
        })
    }
}

/// Every problem with the cluster, one sentence each.
fn problems(cluster: &ClusterDescription, bootstrap: &[Reach], brokers: &[Reach]) -> Vec<String> {
    let mut out = Vec::new();
    for r in bootstrap {
        if let Err(e) = &r.result {
            out.push(format!(
                "bootstrap server {} is unreachable: {e}",
                r.address
            ));
        }
    }
    if cluster.controller.is_none() {
        out.push("no active controller".to_owned());
    }
    for (b, r) in cluster.brokers.iter().zip(brokers) {
        if let Err(e) = &r.result {
            out.push(format!(
                "broker {} advertises {} but it is unreachable from here ({e}); check advertised.listeners",
                b.id, r.address
            ));
        }
    }
    let missing: Vec<&str> = NEEDED_APIS
        .iter()
        .copied()
        .filter(|name| !cluster.api_versions.iter().any(|v| v.name == *name))
        .collect();
    if !missing.is_empty() {
        out.push(format!(
            "broker {} does not support {} (too old for kafkit)",
            cluster.answered_by,
            missing.join(", ")
        ));
    }
    for t in &cluster.topics {
        let offline = offline(t);
        if !offline.is_empty() {
            out.push(format!(
                "topic `{}`: partition(s) {} offline (no leader)",
                t.name,
                ids(&offline)
            ));
        }
        let under = under_replicated(t);
        if !under.is_empty() {
            out.push(format!(
                "topic `{}`: partition(s) {} under-replicated",
                t.name,
                ids(&under)
            ));
        }
    }
    out
}

fn offline(t: &TopicDescription) -> Vec<i32> {
    t.partitions
        .iter()
        .filter(|p| p.leader.is_none())
        .map(|p| p.partition)
        .collect()
}

fn under_replicated(t: &TopicDescription) -> Vec<i32> {
    t.partitions
        .iter()
        .filter(|p| p.is_under_replicated())
        .map(|p| p.partition)
        .collect()
}

fn reach_text(r: &Reach) -> String {
    match &r.result {
        Ok(d) => format!("ok ({} ms)", d.as_millis()),
        Err(e) => format!("UNREACHABLE: {e}"),
    }
}

fn report_text(
    cluster: &ClusterDescription,
    bootstrap: &[Reach],
    brokers: &[Reach],
    problems: &[String],
    api_versions: bool,
) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Cluster {} (answered by {}), controller {}\n\n",
        cluster.cluster_id.as_deref().unwrap_or("-"),
        cluster.answered_by,
        cluster
            .controller
            .map_or_else(|| "NONE".to_owned(), |c| c.to_string()),
    ));
    out.push_str(&table(
        &["BOOTSTRAP", "TCP"],
        bootstrap
            .iter()
            .map(|r| vec![r.address.clone(), reach_text(r)])
            .collect(),
    ));
    out.push('\n');
    out.push_str(&table(
        &["BROKER", "ADDRESS", "RACK", "ROLE", "TCP"],
        cluster
            .brokers
            .iter()
            .zip(brokers)
            .map(|(b, r)| {
                vec![
                    b.id.to_string(),
                    r.address.clone(),
                    b.rack.clone().unwrap_or_else(|| "-".into()),
                    if cluster.controller == Some(b.id) {
                        "controller".into()
                    } else {
                        "-".into()
                    },
                    reach_text(r),
                ]
            })
            .collect(),
    ));
    out.push('\n');
    let supported = NEEDED_APIS
        .iter()
        .filter(|name| cluster.api_versions.iter().any(|v| v.name == **name))
        .count();
    out.push_str(&format!(
        "API versions: the broker offers {} APIs; {supported} of the {} kafkit uses are supported\n",
        cluster.api_versions.len(),
        NEEDED_APIS.len()
    ));
    out.push_str(&format!(
        "Group protocols: {} (kafkit runs classic, and consumer with GroupConfig::protocol)\n",
        group_protocols(cluster).join(", ")
    ));
    if api_versions {
        out.push('\n');
        out.push_str(&table(
            &["KEY", "API", "VERSIONS"],
            cluster
                .api_versions
                .iter()
                .map(|v| {
                    vec![
                        v.key.to_string(),
                        v.name.clone(),
                        format!("{}..={}", v.min, v.max),
                    ]
                })
                .collect(),
        ));
    }
    out.push('\n');
    out.push_str(&table(
        &[
            "TOPIC",
            "PARTITIONS",
            "REPLICATION",
            "UNDER-REPLICATED",
            "OFFLINE",
            "LEADERS",
        ],
        cluster
            .topics
            .iter()
            .map(|t| {
                let rf = t.partitions.iter().map(|p| p.replicas.len()).max();
                let leaders: Vec<i32> = t
                    .partitions
                    .iter()
                    .map(|p| p.leader.unwrap_or(-1))
                    .collect();
                vec![
                    if t.internal {
                        format!("{} (internal)", t.name)
                    } else {
                        t.name.clone()
                    },
                    t.partitions.len().to_string(),
                    rf.map_or_else(|| "-".into(), |r| r.to_string()),
                    under_replicated(t).len().to_string(),
                    offline(t).len().to_string(),
                    ids(&leaders),
                ]
            })
            .collect(),
    ));
    let bad: Vec<Vec<String>> = cluster
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.leader.is_none() || p.is_under_replicated())
                .map(|p| {
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
    if !bad.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR", "OFFLINE"],
            bad,
        ));
    }
    out.push('\n');
    if problems.is_empty() {
        let partitions: usize = cluster.topics.iter().map(|t| t.partitions.len()).sum();
        out.push_str(&format!(
            "verdict: OK: {} broker(s) reachable, controller {}, {} topic(s), {partitions} partition(s) all led and in sync\n",
            cluster.brokers.len(),
            cluster.controller.unwrap_or(-1),
            cluster.topics.len(),
        ));
    } else {
        out.push_str(&format!(
            "verdict: PROBLEM: {} problem(s)\n",
            problems.len()
        ));
        for p in problems {
            out.push_str(&format!("  - {p}\n"));
        }
    }
    out
}

fn report_json(
    cluster: &ClusterDescription,
    bootstrap: &[Reach],
    brokers: &[Reach],
    problems: &[String],
) -> Value {
    let reach = |r: &Reach| match &r.result {
        Ok(d) => {
            json!({ "address": r.address, "reachable": true, "connect_ms": d.as_millis() as u64 })
        }
        Err(e) => json!({ "address": r.address, "reachable": false, "error": e }),
    };
    json!({
        "healthy": problems.is_empty(),
        "problems": problems,
        "cluster_id": cluster.cluster_id,
        "answered_by": cluster.answered_by,
        "controller": cluster.controller,
        "group_protocols": group_protocols(cluster),
        "bootstrap": bootstrap.iter().map(reach).collect::<Vec<_>>(),
        "brokers": cluster.brokers.iter().zip(brokers).map(|(b, r)| {
            let mut v = reach(r);
            v["id"] = json!(b.id);
            v["rack"] = json!(b.rack);
            v
        }).collect::<Vec<_>>(),
        "api_versions": cluster.api_versions.iter().map(|v| json!({
            "key": v.key, "name": v.name, "min": v.min, "max": v.max,
        })).collect::<Vec<_>>(),
        "topics": cluster.topics.iter().map(|t| json!({
            "name": t.name,
            "internal": t.internal,
            "partitions": t.partitions.iter().map(|p| json!({
                "partition": p.partition,
                "leader": p.leader,
                "replicas": p.replicas,
                "isr": p.isr,
                "offline": p.offline,
                "under_replicated": p.is_under_replicated(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}
