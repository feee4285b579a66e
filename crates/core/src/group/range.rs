//! The `range` assignor.

use std::collections::BTreeMap;

use super::assignor::{
    Assignor, GroupAssignment, MemberId, MemberSubscription, assignable_topics, empty_assignment,
    java_member_order, sorted, subscribes,
};
use super::protocol::TopicPartition;

/// Per topic, consecutive ranges of partitions to the topic's subscribers in order; the first
/// `partitions % subscribers` members get one extra. Wire-compatible with Java's
/// `org.apache.kafka.clients.consumer.RangeAssignor` (`"range"`, the first entry of Java's default
/// `partition.assignment.strategy`), without its rack-aware mode.
///
/// Members are ordered as Java orders them: static members (`group.instance.id`) first, by
/// instance id, then dynamic members by member id. Because every topic is split the same way,
/// partition `n` of co-partitioned topics lands on the same member, and the first members carry
/// the extra partitions of every topic.
///
/// Two members, topics `t0` and `t1` with 3 partitions each:
///
/// ```text
/// M0: [t0p0, t0p1, t1p0, t1p1]  M1: [t0p2, t1p2]
/// ```
///
/// ```
/// use std::collections::BTreeMap;
/// use kafkit_core::group::{Assignor, MemberSubscription, RangeAssignor, TopicPartition};
///
/// let topics = BTreeMap::from([("t0".to_string(), 3), ("t1".to_string(), 3)]);
/// let members = BTreeMap::from([
///     ("M0".to_string(), MemberSubscription::new(["t0", "t1"])),
///     ("M1".to_string(), MemberSubscription::new(["t0", "t1"])),
/// ]);
/// let assignment = RangeAssignor.assign(&topics, &members);
/// let tp = TopicPartition::new;
/// assert_eq!(assignment["M0"], [tp("t0", 0), tp("t0", 1), tp("t1", 0), tp("t1", 1)]);
/// assert_eq!(assignment["M1"], [tp("t0", 2), tp("t1", 2)]);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAssignor;

impl Assignor for RangeAssignor {
    fn name(&self) -> &str {
        "range"
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        members: &BTreeMap<MemberId, MemberSubscription>,
    ) -> GroupAssignment {
        let order = java_member_order(members);
        let mut assignment = empty_assignment(members);
        for (topic, count) in assignable_topics(partitions_per_topic, members) {
            let consumers: Vec<&str> = order
                .iter()
                .copied()
                .filter(|id| subscribes(&members[*id], topic))
                .collect();
            let n = consumers.len() as i32;
            let (per_member, with_extra) = (count / n, count % n);
            for (i, member) in (0i32..).zip(consumers) {
                let start = per_member * i + i.min(with_extra);
                let len = per_member + i32::from(i < with_extra);
                let partitions = assignment
                    .get_mut(member)
                    .expect("every member has an entry");
                partitions.extend((start..start + len).map(|p| TopicPartition::new(topic, p)));
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
                vec![("M0", "t0p0 t0p1 t1p0 t1p1"), ("M1", "t0p2 t1p2")],
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
                    ("M0", "t0p0 t0p1 t0p2 t0p3"),
                    ("M1", "t0p4 t0p5 t0p6"),
                    ("M2", "t0p7 t0p8 t0p9"),
                ],
            ),
            (
                "more members than partitions: the last get nothing",
                topics(&[("t0", 2)]),
                vec![
                    ("M0", m(vec!["t0"])),
                    ("M1", m(vec!["t0"])),
                    ("M2", m(vec!["t0"])),
                ],
                vec![("M0", "t0p0"), ("M1", "t0p1"), ("M2", "")],
            ),
            (
                "many topics: the first member carries every topic's extra",
                topics(&[("a", 3), ("b", 5), ("c", 1), ("d", 4)]),
                vec![
                    ("M0", m(vec!["a", "b", "c", "d"])),
                    ("M1", m(vec!["a", "b", "c", "d"])),
                ],
                vec![
                    ("M0", "ap0 ap1 bp0 bp1 bp2 cp0 dp0 dp1"),
                    ("M1", "ap2 bp3 bp4 dp2 dp3"),
                ],
            ),
            (
                "different subscriptions: each topic split among its own subscribers",
                topics(&[("t0", 3), ("t1", 2), ("t2", 4)]),
                vec![
                    ("M0", m(vec!["t0"])),
                    ("M1", m(vec!["t0", "t1"])),
                    ("M2", m(vec!["t1", "t2"])),
                ],
                vec![
                    ("M0", "t0p0 t0p1"),
                    ("M1", "t0p2 t1p0"),
                    ("M2", "t1p1 t2p0 t2p1 t2p2 t2p3"),
                ],
            ),
            (
                "single member takes everything",
                topics(&[("t0", 3), ("t1", 1)]),
                vec![("M0", m(vec!["t0", "t1"]))],
                vec![("M0", "t0p0 t0p1 t0p2 t1p0")],
            ),
            ("no members", topics(&[("t0", 3)]), vec![], vec![]),
            (
                "no partitions: unknown and empty topics are skipped",
                topics(&[("t0", 0)]),
                vec![("M0", m(vec!["t0", "missing"]))],
                vec![("M0", "")],
            ),
            (
                "topics nobody subscribes to are left alone",
                topics(&[("t0", 2), ("other", 5)]),
                vec![("M0", m(vec!["t0"]))],
                vec![("M0", "t0p0 t0p1")],
            ),
            (
                "static members come first, by instance id, whatever their member ids",
                topics(&[("t0", 5)]),
                vec![
                    ("A", m(vec!["t0"])),
                    ("B", m(vec!["t0"]).with_instance_id("i2")),
                    ("C", m(vec!["t0"]).with_instance_id("i1")),
                ],
                vec![("A", "t0p4"), ("B", "t0p2 t0p3"), ("C", "t0p0 t0p1")],
            ),
        ];
        for (name, partitions, list, expected) in cases {
            let members = members(list);
            let got = RangeAssignor.assign(&partitions, &members);
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
        assert_eq!(RangeAssignor.name(), "range");
        assert_eq!(
            RangeAssignor.supported_protocols(),
            [super::super::RebalanceProtocol::Eager]
        );
        assert_eq!(RangeAssignor.subscription_user_data(Some(3)), None);
    }
}
