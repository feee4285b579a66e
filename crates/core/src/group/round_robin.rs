//! The `roundrobin` assignor.

use std::collections::BTreeMap;

use super::assignor::{
    Assignor, GroupAssignment, MemberId, MemberSubscription, assignable_topics, empty_assignment,
    java_member_order, sorted, subscribes,
};
use super::protocol::TopicPartition;

/// All partitions of all subscribed topics, sorted by topic then partition, dealt one at a time
/// to the members in turn, skipping a member that is not subscribed to the partition's topic.
/// Wire-compatible with Java's `org.apache.kafka.clients.consumer.RoundRobinAssignor`
/// (`"roundrobin"`).
///
/// Members are ordered as Java orders them: static members (`group.instance.id`) first, by
/// instance id, then dynamic members by member id. With identical subscriptions, counts differ
/// by at most one; with different subscriptions the skipping can leave the assignment uneven.
///
/// Two members, topics `t0` and `t1` with 3 partitions each:
///
/// ```text
/// M0: [t0p0, t0p2, t1p1]  M1: [t0p1, t1p0, t1p2]
/// ```
///
/// ```
/// use std::collections::BTreeMap;
/// use kafkit_core::group::{Assignor, MemberSubscription, RoundRobinAssignor, TopicPartition};
///
/// let topics = BTreeMap::from([("t0".to_string(), 3), ("t1".to_string(), 3)]);
/// let members = BTreeMap::from([
///     ("M0".to_string(), MemberSubscription::new(["t0", "t1"])),
///     ("M1".to_string(), MemberSubscription::new(["t0", "t1"])),
/// ]);
/// let assignment = RoundRobinAssignor.assign(&topics, &members);
/// let tp = TopicPartition::new;
/// assert_eq!(assignment["M0"], [tp("t0", 0), tp("t0", 2), tp("t1", 1)]);
/// assert_eq!(assignment["M1"], [tp("t0", 1), tp("t1", 0), tp("t1", 2)]);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobinAssignor;

impl Assignor for RoundRobinAssignor {
    fn name(&self) -> &str {
        "roundrobin"
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        members: &BTreeMap<MemberId, MemberSubscription>,
    ) -> GroupAssignment {
        let order = java_member_order(members);
        let mut assignment = empty_assignment(members);
        // Java's `CircularIterator`: the index of the member to look at next, kept across topics.
        let mut next = 0;
        for (topic, count) in assignable_topics(partitions_per_topic, members) {
            for partition in 0..count {
                // Terminates: an assignable topic has at least one subscriber.
                while !subscribes(&members[order[next]], topic) {
                    next = (next + 1) % order.len();
                }
                let partitions = assignment
                    .get_mut(order[next])
                    .expect("every member has an entry");
                partitions.push(TopicPartition::new(topic, partition));
                next = (next + 1) % order.len();
            }
        }
        sorted(assignment)
    }
}

#[cfg(test)]
mod tests {
    use super::super::assignor::test_support::{check_valid, members, render, topics};
    use super::*;

    #[allow(clippy::type_complexity)]
    #[test]
    fn assigns_like_java() {
        let m = MemberSubscription::new::<&str>;
        let cases: Vec<(
            &str,
            BTreeMap<String, i32>,
            Vec<(&str, MemberSubscription)>,
            Vec<(&str, &str)>,
        )> = vec![
            (
                "java doc example: two topics of 3 on two members",
                topics(&[("t0", 3), ("t1", 3)]),
                vec![("M0", m(vec!["t0", "t1"])), ("M1", m(vec!["t0", "t1"]))],
                vec![("M0", "t0p0 t0p2 t1p1"), ("M1", "t0p1 t1p0 t1p2")],
            ),
            (
                "java doc example: different subscriptions skip members and end uneven",
                topics(&[("t0", 1), ("t1", 2), ("t2", 3)]),
                vec![
                    ("C0", m(vec!["t0"])),
                    ("C1", m(vec!["t0", "t1"])),
                    ("C2", m(vec!["t0", "t1", "t2"])),
                ],
                vec![
                    ("C0", "t0p0"),
                    ("C1", "t1p0"),
                    ("C2", "t1p1 t2p0 t2p1 t2p2"),
                ],
            ),
            (
                "uneven: 10 partitions on 3 members is 4/3/3",
                topics(&[("t0", 10)]),
                vec![
                    ("M0", m(vec!["t0"])),
                    ("M1", m(vec!["t0"])),
                    ("M2", m(vec!["t0"])),
                ],
                vec![
                    ("M0", "t0p0 t0p3 t0p6 t0p9"),
                    ("M1", "t0p1 t0p4 t0p7"),
                    ("M2", "t0p2 t0p5 t0p8"),
                ],
            ),
            (
                "many topics: the deal continues across topics",
                topics(&[("a", 1), ("b", 2), ("c", 3)]),
                vec![
                    ("M0", m(vec!["a", "b", "c"])),
                    ("M1", m(vec!["a", "b", "c"])),
                    ("M2", m(vec!["a", "b", "c"])),
                ],
                vec![("M0", "ap0 cp0"), ("M1", "bp0 cp1"), ("M2", "bp1 cp2")],
            ),
            (
                "single member takes everything",
                topics(&[("t0", 2), ("t1", 1)]),
                vec![("M0", m(vec!["t0", "t1"]))],
                vec![("M0", "t0p0 t0p1 t1p0")],
            ),
            ("no members", topics(&[("t0", 3)]), vec![], vec![]),
            (
                "no partitions: unknown and empty topics are skipped",
                topics(&[("t0", 0)]),
                vec![("M0", m(vec!["t0", "missing"])), ("M1", m(vec!["t0"]))],
                vec![("M0", ""), ("M1", "")],
            ),
            (
                "static members come first, by instance id",
                topics(&[("t0", 4)]),
                vec![
                    ("A", m(vec!["t0"])),
                    ("B", m(vec!["t0"]).with_instance_id("i2")),
                    ("C", m(vec!["t0"]).with_instance_id("i1")),
                ],
                vec![("A", "t0p2"), ("B", "t0p1"), ("C", "t0p0 t0p3")],
            ),
        ];
        for (name, partitions, list, expected) in cases {
            let members = members(list);
            let got = RoundRobinAssignor.assign(&partitions, &members);
            check_valid(&partitions, &members, &got).unwrap_or_else(|e| panic!("{name}: {e}"));
            let expected: Vec<(String, String)> = expected
                .into_iter()
                .map(|(m, a)| (m.to_string(), a.to_string()))
                .collect();
            assert_eq!(render(&got), expected, "{name}");
        }
    }

    #[test]
    fn speaks_eager_under_javas_name() {
        assert_eq!(RoundRobinAssignor.name(), "roundrobin");
        assert_eq!(
            RoundRobinAssignor.supported_protocols(),
            [super::super::RebalanceProtocol::Eager]
        );
    }
}
