//! `kafkit group list` and `kafkit group describe`: who is in a group, what it owns, how far behind
//! it is. Read-only: neither joins the group, so a running group is not disturbed.
//! `kafkit group reset-offsets` moves an inactive group's committed offsets.
//!
//! The describe table has the columns of Kafka's `kafka-consumer-groups --describe`, and
//! reset-offsets its options, so the two can be used side by side; `--json` prints one JSON
//! document for scripts.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime};
use clap::{ArgGroup, Args, Subcommand};
use kafkit::admin::{
    self, GroupDescription, GroupListing, OffsetResetPlan, PartitionLag, ResetScope, ResetTo,
};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::Failure;
use crate::common::{ClusterArgs, print, table};

/// `kafkit group ...`.
#[derive(Debug, Args)]
pub(crate) struct GroupArgs {
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// List every group on every broker, with its state and protocol type.
    List(Common),
    /// Describe one group: state, assignor, members and their assignments, and per-partition
    /// committed offset, log end offset and lag.
    Describe(DescribeArgs),
    /// Move the committed offsets of a group with no active members (a dry run unless `--execute`).
    ResetOffsets(ResetArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["topic", "all_topics"])))]
#[command(group(ArgGroup::new("target").required(true).args(
    ["to_earliest", "to_latest", "to_datetime", "shift_by", "to_offset"]
)))]
#[command(group(ArgGroup::new("mode").args(["dry_run", "execute"])))]
struct ResetArgs {
    #[command(flatten)]
    common: Common,

    /// The group whose offsets move.
    #[arg(long = "group-id", alias = "group", value_name = "GROUP")]
    group_id: String,
    /// A topic, all its partitions (`orders`) or some (`orders:0,2`); repeat for more topics.
    #[arg(long, value_name = "TOPIC[:P,P..]")]
    topic: Vec<String>,
    /// Every partition the group has a committed offset for.
    #[arg(long)]
    all_topics: bool,
    /// To the log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// To the log end offset.
    #[arg(long)]
    to_latest: bool,
    /// To the first record at or after this time: RFC 3339 (`2026-12-01T08:00:00Z`,
    /// `...+01:00`), or `YYYY-MM-DDTHH:MM:SS[.sss]` in UTC.
    #[arg(long, value_name = "DATETIME")]
    to_datetime: Option<String>,
    /// Move each committed offset by N (negative: back).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// To this offset.
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// Only print the plan (the default).
    #[arg(long)]
    dry_run: bool,
    /// Commit the new offsets.
    #[arg(long)]
    execute: bool,
}

impl ResetArgs {
    fn scope(&self) -> Result<ResetScope, Failure> {
        if self.all_topics {
            return Ok(ResetScope::AllCommitted);
        }
        self.topic
            .iter()
            .map(|t| match t.split_once(':') {
                None => Ok((t.clone(), None)),
                Some((name, list)) => list
                    .split(',')
                    .map(|p| p.trim().parse::<i32>())
                    .collect::<Result<Vec<_>, _>>()
                    .map(|ps| (name.to_owned(), Some(ps)))
                    .map_err(|_| {
                        usage(format!(
                            "--topic {t}: partitions must be numbers, as in orders:0,2"
                        ))
                    }),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(ResetScope::Topics)
    }

    fn target(&self) -> Result<ResetTo, Failure> {
        Ok(if self.to_earliest {
            ResetTo::Earliest
        } else if self.to_latest {
            ResetTo::Latest
        } else if let Some(n) = self.shift_by {
            ResetTo::ShiftBy(n)
        } else if let Some(o) = self.to_offset {
            ResetTo::Offset(o)
        } else {
            let text = self.to_datetime.as_deref().unwrap_or_default();
            ResetTo::Timestamp(parse_datetime(text).ok_or_else(|| {
                usage(format!(
                    "--to-datetime {text}: expected RFC 3339 (2026-12-01T08:00:00Z) or YYYY-MM-DDTHH:MM:SS[.sss] (UTC)"
                ))
            })?)
        })
    }
}

fn usage(message: String) -> Failure {
    Failure {
        code: crate::EXIT_USAGE,
        message,
    }
}

/// Milliseconds since the epoch of an RFC 3339 time, or of a zone-less one read as UTC.
fn parse_datetime(text: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

#[derive(Debug, Args)]
struct Common {
    #[command(flatten)]
    cluster: ClusterArgs,

    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct DescribeArgs {
    #[command(flatten)]
    common: Common,

    /// The group to describe.
    #[arg(long = "group-id", alias = "group", value_name = "GROUP")]
    group_id: String,

    /// Describe again every `--interval-ms` until interrupted, with each partition's commit rate
    /// (records/s committed since the last refresh). On a terminal the screen is redrawn; else
    /// each refresh follows the last (with `--json`: one document per line).
    #[arg(long)]
    watch: bool,

    /// Time between refreshes with `--watch`.
    #[arg(long, default_value_t = 2000, value_name = "MS", requires = "watch")]
    interval_ms: u64,

    /// Stop after this many refreshes with `--watch` (default: until interrupted).
    #[arg(long, value_name = "N", requires = "watch")]
    iterations: Option<u64>,
}

/// Runs a `group` subcommand, printing its answer on stdout.
pub(crate) async fn run(args: GroupArgs) -> Result<(), Failure> {
    let text = match args.command {
        GroupCommand::List(common) => {
            let client = common.cluster.client()?;
            let groups = admin::list_groups(&client).await?;
            if common.json {
                list_json(&groups)
            } else {
                list_table(&groups)
            }
        }
        GroupCommand::Describe(args) if args.watch => return watch(&args).await,
        GroupCommand::Describe(args) => {
            let client = args.common.cluster.client()?;
            let (description, lag) =
                admin::describe_group_with_lag(&client, &args.group_id).await?;
            if args.common.json {
                describe_json(&description, &lag, None)
            } else {
                describe_table(&description, &lag, None)
            }
        }
        GroupCommand::ResetOffsets(args) => {
            let client = args.common.cluster.client()?;
            let (scope, target) = (args.scope()?, args.target()?);
            let plan =
                admin::reset_offsets(&client, &args.group_id, &scope, target, args.execute).await?;
            if args.common.json {
                reset_json(&args.group_id, &plan, args.execute)
            } else {
                reset_table(&args.group_id, &plan, args.execute)
            }
        }
    };
    print(&text);
    Ok(())
}

fn list_json(groups: &[GroupListing]) -> String {
    let groups: Vec<Value> = groups
        .iter()
        .map(|g| {
            json!({
                "group_id": g.group_id,
                "state": g.state,
                "protocol_type": g.protocol_type,
                "group_type": g.group_type,
            })
        })
        .collect();
    format!("{}\n", json!({ "groups": groups }))
}

fn list_table(groups: &[GroupListing]) -> String {
    let rows = groups
        .iter()
        .map(|g| {
            vec![
                g.group_id.clone(),
                g.state.clone(),
                g.protocol_type.clone(),
                if g.group_type.is_empty() {
                    "-".to_owned()
                } else {
                    g.group_type.clone()
                },
            ]
        })
        .collect();
    table(&["GROUP", "STATE", "PROTOCOL-TYPE", "GROUP-TYPE"], rows)
}

fn reset_json(group: &str, plan: &[OffsetResetPlan], executed: bool) -> String {
    let partitions: Vec<Value> = plan
        .iter()
        .map(|p| {
            json!({
                "topic": p.topic,
                "partition": p.partition,
                "current": p.current,
                "new": p.new,
            })
        })
        .collect();
    let doc = json!({ "group_id": group, "executed": executed, "partitions": partitions });
    format!("{doc}\n")
}

fn reset_table(group: &str, plan: &[OffsetResetPlan], executed: bool) -> String {
    let rows = plan
        .iter()
        .map(|p| {
            vec![
                group.to_owned(),
                p.topic.clone(),
                p.partition.to_string(),
                p.current.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                p.new.to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "NEW-OFFSET",
        ],
        rows,
    );
    out.push_str(if executed {
        "\nThe new offsets are committed.\n"
    } else {
        "\nDry run: nothing was committed (add --execute to commit these offsets).\n"
    });
    out
}

/// Records/s committed per partition between two refreshes.
type Rates = BTreeMap<(String, i32), f64>;
/// Committed offsets per partition at one refresh.
type Committed = BTreeMap<(String, i32), i64>;

/// `group describe --watch`: a refresh every interval until interrupted (or `--iterations`).
async fn watch(args: &DescribeArgs) -> Result<(), Failure> {
    let client = args.common.cluster.client()?;
    let redraw = !args.common.json && std::io::stdout().is_terminal();
    let mut last: Option<(Instant, Committed)> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(args.interval_ms.max(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let interrupted = crate::shutdown_signal();
    tokio::pin!(interrupted);
    for _ in 0..args.iterations.unwrap_or(u64::MAX) {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut interrupted => break,
        }
        let (description, lag) = admin::describe_group_with_lag(&client, &args.group_id).await?;
        let now = Instant::now();
        let committed: Committed = lag
            .iter()
            .filter_map(|p| Some(((p.topic.clone(), p.partition), p.committed?)))
            .collect();
        let rates: Rates = match &last {
            None => BTreeMap::new(),
            Some((then, before)) => {
                let secs = now.duration_since(*then).as_secs_f64().max(1e-3);
                committed
                    .iter()
                    .map(|(tp, &c)| {
                        let moved = before.get(tp).map_or(0, |&b| (c - b).max(0));
                        (tp.clone(), moved as f64 / secs)
                    })
                    .collect()
            }
        };
        last = Some((now, committed));
        let text = if args.common.json {
            describe_json(&description, &lag, Some(&rates))
        } else {
            let stamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
            let frame = describe_table(&description, &lag, Some(&rates));
            if redraw {
                format!("\x1b[2J\x1b[H{stamp}\n{frame}")
            } else {
                format!("{stamp}\n{frame}\n")
            }
        };
        print(&text);
    }
    Ok(())
}

fn total_lag(lag: &[PartitionLag]) -> i64 {
    lag.iter().filter_map(|p| p.lag).sum()
}

fn describe_json(d: &GroupDescription, lag: &[PartitionLag], rates: Option<&Rates>) -> String {
    let members: Vec<Value> = d
        .members
        .iter()
        .map(|m| {
            json!({
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "client_id": m.client_id,
                "host": m.host,
                "member_epoch": m.member_epoch,
                "assignment": m.assignment.iter()
                    .map(|tp| json!({ "topic": tp.topic, "partition": tp.partition }))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let partitions: Vec<Value> = lag
        .iter()
        .map(|p| {
            json!({
                "topic": p.topic,
                "partition": p.partition,
                "committed": p.committed,
                "end": p.end,
                "lag": p.lag,
                "member_id": p.owner.as_ref().map(|o| &o.member_id),
                "client_id": p.owner.as_ref().map(|o| &o.client_id),
                "host": p.owner.as_ref().map(|o| &o.host),
                "commit_rate": rates.map(|r| r.get(&(p.topic.clone(), p.partition)).copied().unwrap_or(0.0)),
            })
        })
        .collect();
    let doc = json!({
        "group_id": d.group_id,
        "group_type": d.group_type,
        "group_epoch": d.group_epoch,
        "state": d.state,
        "protocol_type": d.protocol_type,
        "protocol": d.protocol,
        "coordinator": d.coordinator,
        "members": members,
        "partitions": partitions,
        "total_lag": total_lag(lag),
    });
    format!("{doc}\n")
}

fn describe_table(d: &GroupDescription, lag: &[PartitionLag], rates: Option<&Rates>) -> String {
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    let epoch = d
        .group_epoch
        .map_or_else(String::new, |e| format!(", epoch {e}"));
    let mut out = format!(
        "Group `{}` ({} protocol{epoch}): state {}, assignor {} ({}), {} member(s), coordinator {}, total lag {}\n\n",
        d.group_id,
        d.group_type,
        d.state,
        or_dash(&d.protocol),
        or_dash(&d.protocol_type),
        d.members.len(),
        d.coordinator,
        total_lag(lag)
    );
    let opt = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let rows = lag
        .iter()
        .map(|p| {
            let owner = p.owner.as_ref();
            let rate = rates.map(|r| {
                let rate = r
                    .get(&(p.topic.clone(), p.partition))
                    .copied()
                    .unwrap_or(0.0);
                format!("{rate:.1}")
            });
            vec![
                d.group_id.clone(),
                p.topic.clone(),
                p.partition.to_string(),
                opt(p.committed),
                p.end.to_string(),
                opt(p.lag),
                owner.map_or_else(|| "-".to_owned(), |o| o.member_id.clone()),
                owner.map_or_else(|| "-".to_owned(), |o| o.host.clone()),
                owner.map_or_else(|| "-".to_owned(), |o| o.client_id.clone()),
            ]
            .into_iter()
            .chain(rate)
            .collect()
        })
        .collect();
    let mut header = vec![
        "GROUP",
        "TOPIC",
        "PARTITION",
        // A share group's progress is its share partitions' start offsets.
        if d.group_type == "share" {
            "START-OFFSET"
        } else {
            "CURRENT-OFFSET"
        },
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
    ];
    if rates.is_some() {
        header.push("COMMITS/S");
    }
    out.push_str(&table(&header, rows));
    out.push('\n');
    let rows = d
        .members
        .iter()
        .map(|m| {
            let assignment: Vec<String> = m.assignment.iter().map(ToString::to_string).collect();
            vec![
                m.member_id.clone(),
                m.group_instance_id.clone().unwrap_or_else(|| "-".into()),
                m.host.clone(),
                m.client_id.clone(),
                m.assignment.len().to_string(),
                or_dash(&assignment.join(",")),
                m.member_epoch
                    .map_or_else(|| "-".to_owned(), |e| e.to_string()),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "CONSUMER-ID",
            "GROUP-INSTANCE-ID",
            "HOST",
            "CLIENT-ID",
            "#PARTITIONS",
            "ASSIGNMENT",
            "EPOCH",
        ],
        rows,
    ));
    out
}
