//! The trait the group leader calls to divide partitions, and what it is given.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::protocol::{Subscription, TopicPartition, java_cmp};

/// A member id as the coordinator hands it out (`client.id` + `-` + a UUID for Java members).
pub type MemberId = String;

/// An assignor's result: every member's partitions, sorted by topic then partition. Every member
/// given to [`Assignor::assign`] has an entry, possibly empty.
pub type GroupAssignment = BTreeMap<MemberId, Vec<TopicPartition>>;

/// How partitions change hands in a rebalance (Java's `RebalanceProtocol`). Ordered: a group uses
/// the highest protocol that all of a member's configured assignors support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RebalanceProtocol {
    /// Every member revokes all its partitions before rejoining; the assignor may reshuffle freely.
    Eager,
    /// Members keep their partitions while rejoining (KIP-429); the assignor must not hand a
    /// partition to a new owner in the same rebalance in which its current owner gives it up.
    Cooperative,
}

/// One member as the leader sees it: its decoded JoinGroup metadata and its static identity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberSubscription {
    /// The member's `group.instance.id` from the JoinGroup response (static membership,
    /// KIP-345), `None` for dynamic members.
    pub group_instance_id: Option<String>,
    /// What the member sent.
    pub subscription: Subscription,
}

impl MemberSubscription {
    /// A dynamic member subscribed to `topics` that owns nothing.
    pub fn new<T: Into<String>>(topics: impl IntoIterator<Item = T>) -> Self {
        Self {
            group_instance_id: None,
            subscription: Subscription {
                topics: topics.into_iter().map(Into::into).collect(),
                ..Subscription::default()
            },
        }
    }

    /// Sets the partitions the member says it owns and the generation it got them in.
    pub fn owning(mut self, owned: Vec<TopicPartition>, generation: i32) -> Self {
        self.subscription.owned_partitions = owned;
        self.subscription.generation_id = Some(generation);
        self
    }

    /// Makes the member static, with this `group.instance.id`.
    pub fn with_instance_id(mut self, group_instance_id: impl Into<String>) -> Self {
        self.group_instance_id = Some(group_instance_id.into());
        self
    }
}

/// A partition assignment strategy, run by whichever member the coordinator makes leader.
///
/// Implementations must be deterministic (same input, same output) and must only assign a
/// partition to a member subscribed to its topic. The name is what goes on the wire in JoinGroup:
/// members with different implementations under one name will disagree.
pub trait Assignor: Send + Sync {
    /// The protocol name in JoinGroup, e.g. `"range"`; Java's `ConsumerPartitionAssignor.name()`.
    fn name(&self) -> &str;

    /// The rebalance protocols this assignor can work under. Default: eager only.
    fn supported_protocols(&self) -> &'static [RebalanceProtocol] {
        &[RebalanceProtocol::Eager]
    }

    /// The `user_data` this member puts in its own [`Subscription`]. `generation` is the
    /// generation of the member's last assignment (`None` before the first). Default: none.
    fn subscription_user_data(&self, generation: Option<i32>) -> Option<Bytes> {
        let _ = generation;
        None
    }

    /// Divides the partitions of the subscribed topics among `members`.
    ///
    /// `partitions_per_topic` holds the partition count of each topic the leader has metadata
    /// for; topics that are subscribed but missing (or have no partitions) are skipped, as Java
    /// skips them, and topics nobody subscribes to are ignored.
    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        members: &BTreeMap<MemberId, MemberSubscription>,
    ) -> GroupAssignment;
}

/// The order Java's `range` and `roundrobin` put members in (`MemberInfo.compareTo`): static
/// members first, by `group.instance.id`, then dynamic members by member id. Ties (which a
/// coordinator never produces) fall back to the member id so the order is total.
pub(super) fn java_member_order<'a>(
    members: impl IntoIterator<Item = (&'a MemberId, &'a MemberSubscription)>,
) -> Vec<&'a str> {
    let mut sorted: Vec<(&'a str, Option<&'a str>)> = members
        .into_iter()
        .map(|(id, m)| (id.as_str(), m.group_instance_id.as_deref()))
        .collect();
    sorted.sort_by(|(a_id, a_static), (b_id, b_static)| {
        let by_identity = match (a_static, b_static) {
            (Some(a), Some(b)) => java_cmp(a, b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        by_identity.then_with(|| java_cmp(a_id, b_id))
    });
    sorted.into_iter().map(|(id, _)| id).collect()
}

/// The topics that can be assigned: subscribed by at least one member and with at least one
/// partition in the leader's metadata, in name order. Kafka topic names are ASCII
/// (`[a-zA-Z0-9._-]`), so this byte order is also Java's `String` order.
pub(super) fn assignable_topics<'a>(
    partitions_per_topic: &'a BTreeMap<String, i32>,
    members: &BTreeMap<MemberId, MemberSubscription>,
) -> Vec<(&'a str, i32)> {
    let subscribed: BTreeSet<&str> = members
        .values()
        .flat_map(|m| m.subscription.topics.iter().map(String::as_str))
        .collect();
    partitions_per_topic
        .iter()
        .filter(|(topic, count)| **count > 0 && subscribed.contains(topic.as_str()))
        .map(|(topic, count)| (topic.as_str(), *count))
        .collect()
}

/// Whether `member` subscribes to `topic`.
pub(super) fn subscribes(member: &MemberSubscription, topic: &str) -> bool {
    member.subscription.topics.iter().any(|t| t == topic)
}

/// An assignment with an empty entry for every member, ready to be filled.
pub(super) fn empty_assignment(
    members: &BTreeMap<MemberId, MemberSubscription>,
) -> GroupAssignment {
    members.keys().map(|id| (id.clone(), Vec::new())).collect()
}

/// Sorts every member's partitions by topic then partition, the order [`GroupAssignment`]
/// promises.
pub(super) fn sorted(mut assignment: GroupAssignment) -> GroupAssignment {
    for partitions in assignment.values_mut() {
        partitions.sort();
    }
    assignment
}

#[cfg(test)]
pub(super) mod test_support {
    //! Helpers for the assignor tests: compact notation in, Java-doc notation out.

    use super::*;

    /// `"t0p2"` → `t0`/2: the notation of the Java docs and of our worked examples.
    pub(in crate::group) fn tp(s: &str) -> TopicPartition {
        let (topic, partition) = s.rsplit_once('p').expect("notation is <topic>p<partition>");
        TopicPartition::new(topic, partition.parse().expect("partition number"))
    }

    /// Many `tp`s.
    pub(in crate::group) fn tps(list: &[&str]) -> Vec<TopicPartition> {
        list.iter().map(|s| tp(s)).collect()
    }

    /// `{"M0": "t0p0 t0p2", "M1": "t0p1"}` notation back from an assignment, one string per member.
    pub(in crate::group) fn render(assignment: &GroupAssignment) -> Vec<(String, String)> {
        assignment
            .iter()
            .map(|(member, partitions)| {
                let list: Vec<String> = partitions
                    .iter()
                    .map(|p| format!("{}p{}", p.topic, p.partition))
                    .collect();
                (member.clone(), list.join(" "))
            })
            .collect()
    }

    /// Topic partition counts from `[("t0", 3), ...]`.
    pub(in crate::group) fn topics(list: &[(&str, i32)]) -> BTreeMap<String, i32> {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    /// Members from `[("M0", member), ...]`.
    pub(in crate::group) fn members(
        list: Vec<(&str, MemberSubscription)>,
    ) -> BTreeMap<MemberId, MemberSubscription> {
        list.into_iter()
            .map(|(id, m)| (id.to_string(), m))
            .collect()
    }

    /// Checks what every assignor must guarantee: each member listed, each assignable partition
    /// given to exactly one member subscribed to its topic, nothing else given out.
    pub(in crate::group) fn check_valid(
        partitions_per_topic: &BTreeMap<String, i32>,
        members: &BTreeMap<MemberId, MemberSubscription>,
        assignment: &GroupAssignment,
    ) -> std::result::Result<(), String> {
        if assignment.keys().ne(members.keys()) {
            return Err(format!(
                "members {:?} got {:?}",
                members.keys(),
                assignment.keys()
            ));
        }
        let mut owner: BTreeMap<&TopicPartition, &str> = BTreeMap::new();
        for (member, partitions) in assignment {
            for p in partitions {
                if let Some(other) = owner.insert(p, member) {
                    return Err(format!("{p} given to both {other} and {member}"));
                }
                if !subscribes(&members[member], &p.topic) {
                    return Err(format!(
                        "{p} given to {member}, not subscribed to {}",
                        p.topic
                    ));
                }
                if !(0..partitions_per_topic.get(&p.topic).copied().unwrap_or(0))
                    .contains(&p.partition)
                {
                    return Err(format!("{p} does not exist"));
                }
            }
        }
        for (topic, count) in assignable_topics(partitions_per_topic, members) {
            for partition in 0..count {
                if !owner.contains_key(&TopicPartition::new(topic, partition)) {
                    return Err(format!("{topic}-{partition} not assigned"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_order_puts_static_members_first_then_java_string_order() {
        let members: BTreeMap<MemberId, MemberSubscription> = [
            ("b", None),
            ("a", None),
            ("z", Some("i2")),
            ("y", Some("i1")),
            // U+FF5E sorts before U+1F600 in UTF-8 bytes but after it in UTF-16 (Java).
            ("\u{1F600}", None),
            ("\u{FF5E}", None),
        ]
        .into_iter()
        .map(|(id, instance)| {
            let mut m = MemberSubscription::new(["t"]);
            m.group_instance_id = instance.map(str::to_string);
            (id.to_string(), m)
        })
        .collect();
        assert_eq!(
            java_member_order(&members),
            ["y", "z", "a", "b", "\u{1F600}", "\u{FF5E}"]
        );
    }

    #[test]
    fn rebalance_protocols_order_eager_below_cooperative() {
        assert!(RebalanceProtocol::Eager < RebalanceProtocol::Cooperative);
    }
}
