//! Small helpers every broker-backed test file uses.

use std::collections::BTreeMap;
use std::time::Duration;

use kafkit::ClientConfig;
use kafkit::group::{GroupConfig, TopicPartition};
use kafkit_testkit::java_tool;
use tokio::time::Instant;

/// Client settings for `bootstrap`.
pub fn client(bootstrap: &str) -> ClientConfig {
    ClientConfig::new([bootstrap]).expect("a valid bootstrap address")
}

/// Group settings fit for tests: a 6 s session (crashes are noticed quickly), 500 ms heartbeats and a
/// 30 s rebalance timeout.
pub fn test_group(group: &str, topic: &str) -> GroupConfig {
    GroupConfig::new(group, [topic])
        .session_timeout(Duration::from_secs(6))
        .heartbeat_interval(Duration::from_millis(500))
        .rebalance_timeout(Duration::from_secs(30))
}

/// How often [`eventually`] checks: often enough for a test, rarely enough not to load the broker.
pub const POLL: Duration = Duration::from_millis(100);

/// Waits until `check` holds, checking every [`POLL`] (100 ms); panics with "timed out after
/// {limit}: {what}" once `limit` has passed.
pub async fn eventually(limit: Duration, what: &str, check: impl FnMut() -> bool) {
    eventually_every(limit, POLL, || what.to_owned(), check).await;
}

/// Waits until `check` holds, checking every `poll` (a short one, such as 5 ms, stops close to an
/// exact count); panics with "timed out after {limit}: {message()}" once `limit` has passed.
/// `message` is called only then, so it can show the current state ("only 17 of 20 consumed").
pub async fn eventually_every(
    limit: Duration,
    poll: Duration,
    message: impl FnOnce() -> String,
    mut check: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + limit;
    while !check() {
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?}: {}", message());
        }
        tokio::time::sleep(poll).await;
    }
}

/// Waits for a check that has to await (a broker query, a tool run): calls `check` every `poll`
/// until it returns `Ok`, and returns that value; once `limit` has passed, panics with "timed out
/// after {limit}: {e}", `e` being the `Err` of the last call (say what was seen, not only what was
/// wanted). A call in progress at the limit is not cut short.
pub async fn eventually_async<T, F, Fut>(limit: Duration, poll: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(e) if Instant::now() >= deadline => panic!("timed out after {limit:?}: {e}"),
            Err(_) => tokio::time::sleep(poll).await,
        }
    }
}

/// One partition as `kafka-consumer-groups --describe` shows it: (committed offset, log end offset,
/// lag).
pub type LagRow = (i64, i64, i64);

/// The output of Kafka's own `kafka-consumer-groups --describe --group <group> [extra...]`
/// (ConsumerGroupCommand); panics, with its stderr, if the tool fails.
pub async fn consumer_groups_describe(bootstrap: &str, group: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "--bootstrap-server",
        bootstrap,
        "--describe",
        "--group",
        group,
    ];
    args.extend_from_slice(extra);
    let out = java_tool(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        &args,
        Duration::from_secs(60),
    )
    .await
    .expect("ConsumerGroupCommand runs");
    assert!(out.success, "ConsumerGroupCommand failed: {}", out.stderr);
    out.stdout
}

/// What `kafka-consumer-groups --describe --group <group>` reports for `topic`, per partition, and
/// the raw output for failure messages. Columns are found by their header, so extra or reordered
/// columns in another Kafka version do not shift the numbers; a `-` (nothing committed) leaves the
/// partition out.
pub async fn kafka_lag(
    bootstrap: &str,
    group: &str,
    topic: &str,
) -> (BTreeMap<i32, LagRow>, String) {
    let stdout = consumer_groups_describe(bootstrap, group, &[]).await;
    let raw = format!("stdout:\n{stdout}");
    let mut rows = BTreeMap::new();
    let mut columns: Option<[usize; 4]> = None;
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() == Some(&"GROUP") {
            let at = |name: &str| {
                fields
                    .iter()
                    .position(|f| *f == name)
                    .unwrap_or_else(|| panic!("no {name} column: {raw}"))
            };
            columns = Some([
                at("PARTITION"),
                at("CURRENT-OFFSET"),
                at("LOG-END-OFFSET"),
                at("LAG"),
            ]);
            continue;
        }
        let Some([partition, current, end, lag]) = columns else {
            continue;
        };
        if fields.len() <= lag || fields[0] != group || fields[1] != topic {
            continue;
        }
        let number = |i: usize| fields[i].parse::<i64>().ok();
        if let (Some(p), Some(c), Some(e), Some(l)) =
            (number(partition), number(current), number(end), number(lag))
        {
            rows.insert(p as i32, (c, e, l));
        }
    }
    (rows, raw)
}

/// TCP connections this process holds open to `port` on loopback (Linux `/proc`): sockets among
/// our file descriptors whose remote end is `port`, in state ESTABLISHED.
pub fn connections_to(port: u16) -> usize {
    let ours: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let wanted = format!(":{port:04X}");
    ["/proc/self/net/tcp", "/proc/self/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // cols: sl, local, remote, state (01 = ESTABLISHED), ..., inode at 9.
            cols.len() > 9
                && cols[2].ends_with(&wanted)
                && cols[3] == "01"
                && ours.contains(cols[9])
        })
        .count()
}

/// The committed offsets of `group_id` on partitions `0..partitions` of `topic` (partitions without a
/// commit left out), read without joining the group.
pub async fn committed(
    bootstrap: &str,
    group_id: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, i64> {
    let tps: Vec<_> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    kafkit::group::committed_offsets(&client(bootstrap), group_id, &tps)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|(tp, c)| c.map(|c| (tp.partition, c.offset)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_every_returns_once_the_check_holds() {
        let mut calls = 0;
        eventually_every(
            Duration::from_secs(5),
            Duration::from_millis(1),
            || unreachable!("it holds before the limit"),
            || {
                calls += 1;
                calls == 3
            },
        )
        .await;
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 20ms: only 0 of 1")]
    async fn eventually_every_fails_with_the_current_state() {
        eventually_every(
            Duration::from_millis(20),
            Duration::from_millis(5),
            || format!("only {} of 1", 0),
            || false,
        )
        .await;
    }

    #[tokio::test]
    async fn eventually_async_returns_the_value_of_the_first_ok() {
        let mut calls = 0;
        let value = eventually_async(Duration::from_secs(5), Duration::from_millis(1), || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(format!("{n}"))
                } else {
                    Ok(n * 10)
                }
            }
        })
        .await;
        assert_eq!(value, 30);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 20ms: last seen 7")]
    async fn eventually_async_fails_with_the_last_error() {
        eventually_async::<(), _, _>(
            Duration::from_millis(20),
            Duration::from_millis(5),
            || async { Err("last seen 7".to_owned()) },
        )
        .await;
    }
}
