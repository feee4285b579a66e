//! Settings of a consumer-group member, named and defaulted like the Java consumer's.

use std::sync::Arc;
use std::time::Duration;

use kafkit_resilience::{BackoffPolicy, ConfigError};

use super::{
    Assignor, CooperativeStickyAssignor, RangeAssignor, RebalanceProtocol, TopicPartition,
};
use crate::Result;

/// Which consumer-group protocol a member speaks. Corresponds to `group.protocol`.
///
/// - [`Classic`](Self::Classic) (the default): JoinGroup / SyncGroup / Heartbeat; one member (the
///   leader) runs the client-side assignor; every rebalance is a group-wide barrier (eager) or two
///   (cooperative).
/// - [`Consumer`](Self::Consumer): KIP-848, Kafka 4.0+ brokers. Members only heartbeat
///   (ConsumerGroupHeartbeat); the broker computes each member's target assignment with its
///   `group.remote.assignor` and each member reconciles on its own, partition by partition, with no
///   group-wide barrier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GroupProtocol {
    /// The classic protocol.
    #[default]
    Classic,
    /// The KIP-848 consumer protocol.
    Consumer,
}

impl GroupProtocol {
    /// The name Kafka's `group.protocol` uses: `classic` or `consumer`.
    pub fn name(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }
}

impl std::fmt::Display for GroupProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for GroupProtocol {
    type Err = ConfigError;

    /// `classic` or `consumer`, in any case, as Java reads `group.protocol`.
    fn from_str(s: &str) -> std::result::Result<Self, ConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "classic" => Ok(GroupProtocol::Classic),
            "consumer" => Ok(GroupProtocol::Consumer),
            _ => Err(ConfigError::new(
                "group.protocol",
                format!("must be `classic` or `consumer`, got `{s}`"),
            )),
        }
    }
}

/// The settings the consumer protocol leaves to the broker (Java's `ConsumerConfig` refuses the same).
const CLASSIC_ONLY: [&str; 3] = [
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
];

/// The environment variable [`GroupConfig::env`] reads for `group.protocol`.
const GROUP_PROTOCOL_ENV: &str = "KAFKA_GROUP_PROTOCOL";
/// The environment variable [`GroupConfig::env`] reads for `group.remote.assignor`.
const GROUP_REMOTE_ASSIGNOR_ENV: &str = "KAFKA_GROUP_REMOTE_ASSIGNOR";

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
    pub(crate) protocol: GroupProtocol,
    pub(crate) remote_assignor: Option<String>,
    pub(crate) topic_regex: Option<String>,
    /// A fixed assignment ([`assigned`](GroupConfig::assigned)): no group membership at all.
    pub(crate) assignment: Option<Vec<TopicPartition>>,
    /// The classic-only settings set through their setters (Kafka names), so that `validate` can
    /// refuse them with the consumer protocol as the Java client does.
    classic_only_set: Vec<&'static str>,
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
            .field("protocol", &self.protocol)
            .field("remote_assignor", &self.remote_assignor)
            .field("topic_regex", &self.topic_regex)
            .field("assignment", &self.assignment)
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
            protocol: GroupProtocol::Classic,
            remote_assignor: None,
            topic_regex: None,
            assignment: None,
            classic_only_set: Vec::new(),
        }
    }

    /// A consumer of exactly `partitions` that never joins `group_id`, as Java's `assign()`: no
    /// JoinGroup, no heartbeats, no rebalances; the partitions are owned from the start until the
    /// consumer shuts down. Offsets are still read (OffsetFetch) and committed for `group_id`, as a
    /// standalone consumer's: generation -1 and no member id, which the group coordinator accepts
    /// while the group has no members (Kafka answers commits from outside a group with members
    /// with an error, and those records are delivered again). Several such consumers may share a
    /// group id if their partitions do not overlap. Membership settings (protocol, session and
    /// heartbeat timing, assignors, instance id) do not apply; `group.protocol=consumer` and an
    /// instance id are refused. Nothing fences a second consumer of the same partitions: keep
    /// assignments apart. A health report's coordinator and heartbeat checks concern membership,
    /// which this has none of: they read as for a member that has not joined.
    ///
    /// ```
    /// use kafkit_core::group::{GroupConfig, TopicPartition};
    ///
    /// let config = GroupConfig::assigned("copier", [TopicPartition::new("orders", 3)]);
    /// assert_eq!(config.topics(), ["orders"]);
    /// ```
    pub fn assigned(
        group_id: impl Into<String>,
        partitions: impl IntoIterator<Item = TopicPartition>,
    ) -> Self {
        let partitions: Vec<TopicPartition> = partitions.into_iter().collect();
        let mut topics: Vec<String> = partitions.iter().map(|tp| tp.topic.clone()).collect();
        topics.sort_unstable();
        topics.dedup();
        let mut config = Self::new(group_id, topics);
        config.assignment = Some(partitions);
        config
    }

    /// The group protocol. Corresponds to `group.protocol`. Default [`GroupProtocol::Classic`].
    /// With [`GroupProtocol::Consumer`] (Kafka 4.0+), the broker assigns partitions and decides the
    /// session timeout and heartbeat interval: setting [`session_timeout`](Self::session_timeout),
    /// [`heartbeat_interval`](Self::heartbeat_interval) or [`assignors`](Self::assignors) as well
    /// is refused when the member starts, as the Java client refuses them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kafkit_core::group::{GroupConfig, GroupProtocol};
    ///
    /// let config = GroupConfig::new("orders-service", ["orders"])
    ///     .protocol(GroupProtocol::Consumer)
    ///     .remote_assignor("uniform")
    ///     .rebalance_timeout(Duration::from_secs(60));
    /// assert_eq!(config.group_protocol(), GroupProtocol::Consumer);
    /// ```
    pub fn protocol(mut self, protocol: GroupProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The server-side assignor the broker runs for this member's group under the consumer
    /// protocol: `uniform` or `range` on Apache Kafka (a broker may offer others; an unknown name
    /// is answered UNSUPPORTED_ASSIGNOR, which stops the member). Corresponds to
    /// `group.remote.assignor`. Default none: the broker's first configured assignor
    /// (`group.consumer.assignors`, `uniform` by default). Only with [`GroupProtocol::Consumer`].
    pub fn remote_assignor(mut self, name: impl Into<String>) -> Self {
        self.remote_assignor = Some(name.into());
        self
    }

    /// Subscribes to every topic whose name matches `pattern` instead of a list of topics (give
    /// [`new`](Self::new) no topics): the broker matches it (RE2/J syntax, KIP-848's
    /// `SubscribedTopicRegex`), against topics created later too. Consumer protocol only
    /// ([`GroupProtocol::Consumer`]), on brokers with ConsumerGroupHeartbeat v1 (Kafka 4.0+). As
    /// Java's `subscribe(SubscriptionPattern)`. Default none.
    pub fn topic_regex(mut self, pattern: impl Into<String>) -> Self {
        self.topic_regex = Some(pattern.into());
        self
    }

    /// Applies `KAFKA_GROUP_PROTOCOL` (`classic` or `consumer`: `group.protocol`) and
    /// `KAFKA_GROUP_REMOTE_ASSIGNOR` (`group.remote.assignor`) from the process environment, in
    /// the style of kafkit's other `KAFKA_*` variables: unset or blank keeps what is set, a bad
    /// value is an error naming the variable.
    pub fn env(self) -> Result<Self> {
        self.env_lookup(|name| std::env::var(name).ok())
    }

    /// [`env`](Self::env) through `lookup` (variable name to value), without process-global state.
    pub fn env_lookup(mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = get(GROUP_PROTOCOL_ENV) {
            self.protocol = v.parse().map_err(|_| {
                ConfigError::new(
                    GROUP_PROTOCOL_ENV,
                    format!("must be `classic` or `consumer`, got `{v}`"),
                )
            })?;
        }
        if let Some(v) = get(GROUP_REMOTE_ASSIGNOR_ENV) {
            self.remote_assignor = Some(v.trim().to_owned());
        }
        Ok(self)
    }

    /// How long the coordinator waits without a heartbeat before it expels this member.
    /// Corresponds to `session.timeout.ms`. Default 45 s.
    /// Classic protocol only: under the consumer protocol the broker's
    /// `group.consumer.session.timeout.ms` applies.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self.classic_only_set.push("session.timeout.ms");
        self
    }

    /// How often heartbeats are sent. Corresponds to `heartbeat.interval.ms`. Default 3 s; must be
    /// below the session timeout (a third of it or less is wise).
    /// Classic protocol only: under the consumer protocol the broker says how often to heartbeat
    /// (`group.consumer.heartbeat.interval.ms`).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.classic_only_set.push("heartbeat.interval.ms");
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
    /// Classic protocol only: under the consumer protocol the broker assigns
    /// ([`remote_assignor`](Self::remote_assignor)).
    pub fn assignors(mut self, assignors: Vec<Arc<dyn Assignor>>) -> Self {
        self.assignors = assignors;
        self.classic_only_set.push("partition.assignment.strategy");
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

    /// The group protocol (`group.protocol`).
    pub fn group_protocol(&self) -> GroupProtocol {
        self.protocol
    }

    /// The rebalance protocol this member follows under the classic group protocol: cooperative
    /// only if every assignor is. (The consumer protocol is always incremental.)
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
        if let Some(partitions) = &self.assignment {
            let refuse = |setting: &str| {
                err(
                    setting,
                    "does not apply to a fixed assignment (GroupConfig::assigned): it never joins \
                     the group"
                        .into(),
                )
            };
            if partitions.is_empty() {
                return err("assignment", "assign at least one partition".into());
            }
            if partitions.iter().any(|tp| tp.partition < 0) {
                return err("assignment", "partition numbers start at 0".into());
            }
            if self.protocol == GroupProtocol::Consumer {
                return refuse("group.protocol");
            }
            if self.group_instance_id.is_some() {
                return refuse("group.instance.id");
            }
        }
        match &self.topic_regex {
            None if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) => {
                return err(
                    "topics",
                    "subscribe to at least one topic; names must not be empty".into(),
                );
            }
            None => {}
            Some(regex) => {
                if regex.trim().is_empty() {
                    return err("topic regex", "must not be empty".into());
                }
                if !self.topics.is_empty() {
                    return err(
                        "topic regex",
                        "subscribe to a list of topics or to a regex, not both".into(),
                    );
                }
                if self.protocol != GroupProtocol::Consumer {
                    return err(
                        "topic regex",
                        "is only supported when group.protocol=consumer (the broker matches it)"
                            .into(),
                    );
                }
            }
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
        match self.protocol {
            GroupProtocol::Consumer => {
                if let Some(setting) = self.classic_only_set.first() {
                    return err(
                        setting,
                        format!(
                            "is not supported when group.protocol=consumer: the broker decides it \
                             (set it on the broker, or use group.protocol=classic); not supported \
                             with the consumer protocol: {}",
                            CLASSIC_ONLY.join(", ")
                        ),
                    );
                }
                if self
                    .remote_assignor
                    .as_deref()
                    .is_some_and(|a| a.trim().is_empty())
                {
                    return err(
                        "group.remote.assignor",
                        "must not be empty with group.protocol=consumer (e.g. `uniform` or `range`)"
                            .into(),
                    );
                }
            }
            GroupProtocol::Classic => {
                if self.remote_assignor.is_some() {
                    return err(
                        "group.remote.assignor",
                        "is only supported when group.protocol=consumer; the classic protocol \
                         assigns with partition.assignment.strategy"
                            .into(),
                    );
                }
            }
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
            (GroupConfig::assigned("g", []), "assignment"),
            (
                GroupConfig::assigned("g", [TopicPartition::new("t", -1)]),
                "assignment",
            ),
            (
                GroupConfig::assigned("g", [TopicPartition::new("", 0)]),
                "topics",
            ),
            (
                GroupConfig::assigned("g", [TopicPartition::new("t", 0)])
                    .protocol(GroupProtocol::Consumer),
                "group.protocol",
            ),
            (
                GroupConfig::assigned("g", [TopicPartition::new("t", 0)]).group_instance_id("i"),
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
        GroupConfig::assigned(
            "g",
            [TopicPartition::new("t", 0), TopicPartition::new("t", 2)],
        )
        .validate()
        .expect("a fixed assignment");
    }

    #[test]
    fn the_consumer_protocol_refuses_the_settings_the_broker_decides() {
        let consumer = || GroupConfig::new("g", ["t"]).protocol(GroupProtocol::Consumer);
        consumer().validate().expect("defaults are valid");
        consumer()
            .remote_assignor("uniform")
            .rebalance_timeout(Duration::from_secs(60))
            .group_instance_id("i-1")
            .validate()
            .expect("the settings the consumer protocol uses");
        GroupConfig::new("g", Vec::<String>::new())
            .protocol(GroupProtocol::Consumer)
            .topic_regex("orders-.*")
            .validate()
            .expect("a regex instead of topics");
        for bad in [
            consumer().topic_regex("orders-.*"),
            GroupConfig::new("g", Vec::<String>::new())
                .protocol(GroupProtocol::Consumer)
                .topic_regex(""),
        ] {
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains("topic regex"), "{err}");
        }
        let cases = [
            (
                consumer().session_timeout(Duration::from_secs(10)),
                "session.timeout.ms",
            ),
            (
                consumer().heartbeat_interval(Duration::from_secs(1)),
                "heartbeat.interval.ms",
            ),
            (
                consumer().assignors(vec![Arc::new(RangeAssignor)]),
                "partition.assignment.strategy",
            ),
            (consumer().remote_assignor(" "), "group.remote.assignor"),
            (
                GroupConfig::new("g", Vec::<String>::new()).topic_regex("t.*"),
                "group.protocol=consumer",
            ),
            (
                GroupConfig::new("g", ["t"]).remote_assignor("uniform"),
                "group.remote.assignor",
            ),
        ];
        for (config, setting) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(setting), "{setting}: {err}");
            assert!(err.contains("group.protocol"), "{setting}: {err}");
        }
    }

    #[test]
    fn protocol_and_remote_assignor_from_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let base = GroupConfig::new("g", ["t"]);
        let c = base.clone().env_lookup(env(&[])).unwrap();
        assert_eq!(c.group_protocol(), GroupProtocol::Classic);
        let c = base
            .clone()
            .env_lookup(env(&[
                ("KAFKA_GROUP_PROTOCOL", "Consumer"),
                ("KAFKA_GROUP_REMOTE_ASSIGNOR", "range"),
            ]))
            .unwrap();
        assert_eq!(c.group_protocol(), GroupProtocol::Consumer);
        assert_eq!(c.remote_assignor.as_deref(), Some("range"));
        c.validate().unwrap();
        let blank = base
            .clone()
            .protocol(GroupProtocol::Consumer)
            .env_lookup(env(&[("KAFKA_GROUP_PROTOCOL", "  ")]))
            .unwrap();
        assert_eq!(
            blank.group_protocol(),
            GroupProtocol::Consumer,
            "blank keeps"
        );
        let err = base
            .env_lookup(env(&[("KAFKA_GROUP_PROTOCOL", "next-gen")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("KAFKA_GROUP_PROTOCOL") && err.contains("next-gen"),
            "{err}"
        );
        assert_eq!(
            "CLASSIC".parse::<GroupProtocol>().unwrap(),
            GroupProtocol::Classic
        );
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
