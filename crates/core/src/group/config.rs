//! Settings of a consumer-group member, named and defaulted like the Java consumer's.

use std::sync::Arc;
use std::time::Duration;

use kafkit_resilience::{BackoffPolicy, ConfigError};

use super::{Assignor, CooperativeStickyAssignor, RangeAssignor, RebalanceProtocol};
use crate::Result;

/// How this member joins its group. Build with [`GroupConfig::new`] and the chained setters; checked
/// when the member starts.
#[derive(Clone)]
pub struct GroupConfig {
    pub(crate) group_id: String,
    pub(crate) topics: Vec<String>,
    pub(crate) session_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) rebalance_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) rack_id: Option<String>,
    pub(crate) assignors: Vec<Arc<dyn Assignor>>,
    pub(crate) retry_backoff: BackoffPolicy,
}

impl std::fmt::Debug for GroupConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConfig")
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("session_timeout", &self.session_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("rebalance_timeout", &self.rebalance_timeout)
            .field("group_instance_id", &self.group_instance_id)
            .field(
                "assignors",
                &self.assignors.iter().map(|a| a.name()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl GroupConfig {
    /// Membership of `group_id` (`group.id`), subscribed to `topics`, with Java's defaults.
    pub fn new<I, S>(group_id: impl Into<String>, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            group_id: group_id.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            rebalance_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(30),
            group_instance_id: None,
            rack_id: None,
            assignors: vec![Arc::new(RangeAssignor), Arc::new(CooperativeStickyAssignor)],
            retry_backoff: BackoffPolicy::new(
                Duration::from_millis(100),
                Duration::from_secs(1),
                2.0,
                0.2,
            )
            .expect("valid default backoff"),
        }
    }

    /// How long the coordinator waits without a heartbeat before it expels this member.
    /// Corresponds to `session.timeout.ms`. Default 45 s.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// How often heartbeats are sent. Corresponds to `heartbeat.interval.ms`. Default 3 s; must be
    /// below the session timeout (a third of it or less is wise).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// How long the coordinator waits for every member to rejoin during a rebalance; also the most a
    /// revocation may take (draining in-flight records and committing). Corresponds to
    /// `max.poll.interval.ms` (the Java client's rebalance timeout). Default 300 s.
    pub fn rebalance_timeout(mut self, timeout: Duration) -> Self {
        self.rebalance_timeout = timeout;
        self
    }

    /// How long to wait for a coordinator response (JoinGroup waits up to the rebalance timeout on
    /// top). Corresponds to `request.timeout.ms`. Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Static membership (KIP-345): a member that restarts with the same id within the session timeout
    /// gets its partitions back without a rebalance. Corresponds to `group.instance.id`. Default none.
    pub fn group_instance_id(mut self, id: impl Into<String>) -> Self {
        self.group_instance_id = Some(id.into());
        self
    }

    /// The rack this member runs in. Corresponds to `client.rack`: sent in the member's subscription
    /// (KIP-881, for rack-aware assignors) and with its fetches, so that a broker configured with a
    /// rack-aware `replica.selector.class` has the consumer read from a replica in its own rack
    /// (KIP-392) instead of the leader.
    pub fn rack_id(mut self, rack: impl Into<String>) -> Self {
        self.rack_id = Some(rack.into());
        self
    }

    /// The assignors offered to the group, most preferred first. Corresponds to
    /// `partition.assignment.strategy`. Default `[range, cooperative-sticky]`, the Java default, so a
    /// kafkit member can share a group with Java consumers on their defaults. The member follows the
    /// cooperative protocol only when every assignor offered is cooperative.
    pub fn assignors(mut self, assignors: Vec<Arc<dyn Assignor>>) -> Self {
        self.assignors = assignors;
        self
    }

    /// Backoff between retries of failed group requests. Corresponds to `retry.backoff.ms` /
    /// `retry.backoff.max.ms`. Default 100 ms doubling to 1 s.
    pub fn retry_backoff(mut self, policy: BackoffPolicy) -> Self {
        self.retry_backoff = policy;
        self
    }

    /// The group id.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The subscribed topics.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The rebalance protocol this member follows: cooperative only if every assignor is.
    pub fn rebalance_protocol(&self) -> RebalanceProtocol {
        if self.assignors.iter().all(|a| {
            a.supported_protocols()
                .contains(&RebalanceProtocol::Cooperative)
        }) {
            RebalanceProtocol::Cooperative
        } else {
            RebalanceProtocol::Eager
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let err = |setting: &str, reason: String| Err(ConfigError::new(setting, reason).into());
        if self.group_id.trim().is_empty() {
            return err("group.id", "must not be empty".into());
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return err(
                "topics",
                "subscribe to at least one topic; names must not be empty".into(),
            );
        }
        if self.session_timeout < Duration::from_millis(1000)
            || self.session_timeout > Duration::from_secs(1800)
        {
            return err(
                "session.timeout.ms",
                format!(
                    "must be within 1 s..=30 min (the broker's group.min/max.session.timeout.ms bound it further), got {:?}",
                    self.session_timeout
                ),
            );
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.session_timeout {
            return err(
                "heartbeat.interval.ms",
                format!(
                    "must be greater than zero and less than session.timeout.ms ({:?}), got {:?}",
                    self.session_timeout, self.heartbeat_interval
                ),
            );
        }
        if self.rebalance_timeout < Duration::from_secs(1)
            || self.rebalance_timeout.as_millis() > i32::MAX as u128
        {
            return err(
                "max.poll.interval.ms",
                format!(
                    "must be within 1 s..=24 days, got {:?}",
                    self.rebalance_timeout
                ),
            );
        }
        if self.request_timeout < Duration::from_millis(100) {
            return err(
                "request.timeout.ms",
                format!("must be at least 100 ms, got {:?}", self.request_timeout),
            );
        }
        if self.assignors.is_empty() {
            return err(
                "partition.assignment.strategy",
                "offer at least one assignor".into(),
            );
        }
        let mut names: Vec<&str> = self.assignors.iter().map(|a| a.name()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return err(
                "partition.assignment.strategy",
                format!("assignor names must be unique, got {names:?}"),
            );
        }
        if self
            .group_instance_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return err("group.instance.id", "must not be empty when set".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::RoundRobinAssignor;

    #[test]
    fn invalid_settings_name_the_setting() {
        let cases = [
            (GroupConfig::new("", ["t"]), "group.id"),
            (GroupConfig::new("g", Vec::<String>::new()), "topics"),
            (GroupConfig::new("g", [""]), "topics"),
            (
                GroupConfig::new("g", ["t"]).heartbeat_interval(Duration::from_secs(50)),
                "heartbeat.interval.ms",
            ),
            (
                GroupConfig::new("g", ["t"]).session_timeout(Duration::from_millis(10)),
                "session.timeout.ms",
            ),
            (
                GroupConfig::new("g", ["t"]).rebalance_timeout(Duration::from_millis(10)),
                "max.poll.interval.ms",
            ),
            (
                GroupConfig::new("g", ["t"]).assignors(vec![]),
                "partition.assignment.strategy",
            ),
            (
                GroupConfig::new("g", ["t"])
                    .assignors(vec![Arc::new(RangeAssignor), Arc::new(RangeAssignor)]),
                "partition.assignment.strategy",
            ),
            (
                GroupConfig::new("g", ["t"]).group_instance_id(" "),
                "group.instance.id",
            ),
        ];
        for (config, setting) in cases {
            let err = config.validate().unwrap_err();
            assert!(err.to_string().contains(setting), "{setting}: {err}");
        }
        GroupConfig::new("g", ["t"])
            .validate()
            .expect("defaults are valid");
    }

    #[test]
    fn cooperative_only_when_every_assignor_is() {
        let default = GroupConfig::new("g", ["t"]);
        assert_eq!(
            default.rebalance_protocol(),
            RebalanceProtocol::Eager,
            "Java's default list is eager"
        );
        let coop =
            GroupConfig::new("g", ["t"]).assignors(vec![Arc::new(CooperativeStickyAssignor)]);
        assert_eq!(coop.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let mixed = coop.assignors(vec![
            Arc::new(CooperativeStickyAssignor),
            Arc::new(RoundRobinAssignor),
        ]);
        assert_eq!(mixed.rebalance_protocol(), RebalanceProtocol::Eager);
    }
}
