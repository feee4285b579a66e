//! ConsumerProtocol: the bytes consumer-group members put in JoinGroup metadata (a
//! [`Subscription`]) and the leader puts in SyncGroup assignments (an [`Assignment`]).
//!
//! Both start with a big-endian `int16` version, then the message in Kafka's classic
//! (non-flexible) encoding: `int16` length + UTF-8 for strings, `int32` length for arrays and
//! bytes, `-1` for null.
//!
//! ```text
//! Subscription v0: topics [string] | user_data nullable bytes
//!              v1: + owned_partitions [topic string, partitions [int32]]     (KIP-429)
//!              v2: + generation_id int32                                      (KIP-792)
//!              v3: + rack_id nullable string                                  (KIP-881)
//! Assignment   v0..v3: assigned_partitions [topic string, partitions [int32]] | user_data nullable bytes
//! ```
//!
//! As in Java (`ConsumerProtocol`): kafkit writes the newest version; a message with a higher
//! version than kafkit knows is read with the newest layout it knows (new versions may only append
//! fields) and trailing bytes are ignored; a negative version is an error. Assignment v1..v3 only
//! exist to keep both version numbers in step and have v0's layout.
//!
//! Encoding goes through the `kafka-protocol` crate's `ConsumerProtocolSubscription` and
//! `ConsumerProtocolAssignment`, generated from Kafka's own message specs. Decoding is our own
//! reader because the bytes come from other members and may be hostile or corrupt: like Java, it
//! refuses an array whose declared length exceeds the bytes left before allocating anything (the
//! crate's decoder would reserve whatever length it is told), and it decodes strings the way
//! Java's `new String(bytes, UTF_8)` does, replacing invalid UTF-8 instead of failing.

use std::cmp::Ordering;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
    consumer_protocol_assignment, consumer_protocol_subscription,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::error::{GroupError, Result};

/// The JoinGroup `protocol_type` of consumer groups.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// The newest ConsumerProtocol version kafkit reads and writes, for subscriptions and
/// assignments alike (Java's `ConsumerProtocol` keeps the two in step).
pub const CONSUMER_PROTOCOL_LATEST_VERSION: i16 = 3;

const SUBSCRIPTION: &str = "subscription";
const ASSIGNMENT: &str = "assignment";

/// One partition of one topic.
///
/// Ordered by topic, then partition. Displays as Java's `TopicPartition.toString()` does:
/// `orders-3`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// The topic name.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
}

impl TopicPartition {
    /// Partition `partition` of `topic`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// What a member tells the leader when it joins: the JoinGroup metadata of protocol type
/// `consumer`. Java: `ConsumerPartitionAssignor.Subscription`.
///
/// ```
/// use kafkit_core::group::{Subscription, TopicPartition};
///
/// let ours = Subscription {
///     topics: vec!["orders".into()],
///     owned_partitions: vec![TopicPartition::new("orders", 0)],
///     generation_id: Some(7),
///     ..Subscription::default()
/// };
/// let bytes = ours.encode()?;
/// assert_eq!(&bytes[..2], &[0, 3]); // version header: v3
/// assert_eq!(Subscription::decode(&bytes)?, ours);
/// # Ok::<(), kafkit_core::group::GroupError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    /// The topics the member wants to consume. Written sorted, as Java does.
    pub topics: Vec<String>,
    /// Assignor-specific data (`cooperative-sticky` puts its generation here for members older
    /// than v2); `None` is written as null.
    pub user_data: Option<Bytes>,
    /// The partitions the member owns right now (v1+), so a sticky or cooperative assignor can
    /// keep them where they are. Written sorted by topic then partition, grouped by topic.
    pub owned_partitions: Vec<TopicPartition>,
    /// The generation in which the member got `owned_partitions` (v2+), so the leader can discard
    /// stale claims. `None` is written as `-1`, and a negative value on the wire reads as `None`.
    pub generation_id: Option<i32>,
    /// The member's `client.rack` (v3+). `None` is written as null; null or empty reads as `None`.
    pub rack_id: Option<String>,
}

impl Subscription {
    /// The bytes Java's `ConsumerProtocol.serializeSubscription` writes: version header
    /// [`CONSUMER_PROTOCOL_LATEST_VERSION`], then the subscription.
    pub fn encode(&self) -> Result<Bytes> {
        self.encode_version(CONSUMER_PROTOCOL_LATEST_VERSION)
    }

    /// The bytes of this subscription at `version`, as Java writes them: fields newer than
    /// `version` are left out, a version above the newest known is written as the newest, and a
    /// negative version is [`GroupError::UnsupportedVersion`].
    pub fn encode_version(&self, version: i16) -> Result<Bytes> {
        let version = effective_version(SUBSCRIPTION, version)?;

        let mut topics: Vec<&String> = self.topics.iter().collect();
        topics.sort_by(|a, b| java_cmp(a, b));

        let mut owned: Vec<&TopicPartition> = self.owned_partitions.iter().collect();
        owned.sort_by(|a, b| java_cmp(&a.topic, &b.topic).then(a.partition.cmp(&b.partition)));
        let mut owned_partitions: Vec<consumer_protocol_subscription::TopicPartition> = Vec::new();
        for tp in owned {
            match owned_partitions.last_mut() {
                Some(last) if last.topic.0.as_str() == tp.topic => {
                    last.partitions.push(tp.partition)
                }
                _ => owned_partitions.push(
                    consumer_protocol_subscription::TopicPartition::default()
                        .with_topic(topic_name(&tp.topic))
                        .with_partitions(vec![tp.partition]),
                ),
            }
        }

        let message = ConsumerProtocolSubscription::default()
            .with_topics(
                topics
                    .into_iter()
                    .map(|t| StrBytes::from_string(t.clone()))
                    .collect(),
            )
            .with_user_data(self.user_data.clone())
            .with_owned_partitions(owned_partitions)
            .with_generation_id(self.generation_id.filter(|g| *g >= 0).unwrap_or(-1))
            .with_rack_id(self.rack_id.clone().map(StrBytes::from_string));
        encode_with_header(SUBSCRIPTION, version, &message)
    }

    /// Reads a subscription as Java's `ConsumerProtocol.deserializeSubscription` does: the
    /// version header, then the fields of that version (of the newest known version if higher).
    /// Bytes after the last known field are ignored.
    pub fn decode(data: &[u8]) -> Result<Self> {
        let mut r = Reader::new(SUBSCRIPTION, data);
        let version = effective_version(SUBSCRIPTION, r.i16("version")?)?;

        let topic_count = r.array_len("topics")?;
        let mut topics = Vec::with_capacity(topic_count);
        for _ in 0..topic_count {
            topics.push(r.string("topics")?);
        }
        let user_data = r.nullable_bytes("userData")?;
        let owned_partitions = if version >= 1 {
            r.topic_partitions("ownedPartitions")?
        } else {
            Vec::new()
        };
        let generation_id = if version >= 2 {
            Some(r.i32("generationId")?).filter(|g| *g >= 0)
        } else {
            None
        };
        let rack_id = if version >= 3 {
            r.nullable_string("rackId")?.filter(|rack| !rack.is_empty())
        } else {
            None
        };
        Ok(Self {
            topics,
            user_data,
            owned_partitions,
            generation_id,
            rack_id,
        })
    }
}

/// What the leader tells a member in SyncGroup: its partitions. Java:
/// `ConsumerPartitionAssignor.Assignment`.
///
/// ```
/// use kafkit_core::group::{Assignment, TopicPartition};
///
/// let assignment = Assignment {
///     partitions: vec![TopicPartition::new("orders", 0), TopicPartition::new("orders", 2)],
///     user_data: None,
/// };
/// let bytes = assignment.encode()?;
/// assert_eq!(Assignment::decode(&bytes)?, assignment);
/// # Ok::<(), kafkit_core::group::GroupError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    /// The member's partitions. Written grouped by topic in order of each topic's first
    /// appearance, partitions in the order given, as Java does.
    pub partitions: Vec<TopicPartition>,
    /// Assignor-specific data; none of the built-in assignors set it.
    pub user_data: Option<Bytes>,
}

impl Assignment {
    /// The bytes Java's `ConsumerProtocol.serializeAssignment` writes: version header
    /// [`CONSUMER_PROTOCOL_LATEST_VERSION`], then the assignment.
    pub fn encode(&self) -> Result<Bytes> {
        self.encode_version(CONSUMER_PROTOCOL_LATEST_VERSION)
    }

    /// The bytes of this assignment at `version` (every version has the same layout; only the
    /// header differs). A version above the newest known is written as the newest; a negative one
    /// is [`GroupError::UnsupportedVersion`].
    pub fn encode_version(&self, version: i16) -> Result<Bytes> {
        let version = effective_version(ASSIGNMENT, version)?;

        let mut assigned: Vec<consumer_protocol_assignment::TopicPartition> = Vec::new();
        for tp in &self.partitions {
            match assigned.iter_mut().find(|t| t.topic.0.as_str() == tp.topic) {
                Some(topic) => topic.partitions.push(tp.partition),
                None => assigned.push(
                    consumer_protocol_assignment::TopicPartition::default()
                        .with_topic(topic_name(&tp.topic))
                        .with_partitions(vec![tp.partition]),
                ),
            }
        }

        let message = ConsumerProtocolAssignment::default()
            .with_assigned_partitions(assigned)
            .with_user_data(self.user_data.clone());
        encode_with_header(ASSIGNMENT, version, &message)
    }

    /// Reads an assignment as Java's `ConsumerProtocol.deserializeAssignment` does: the version
    /// header, then the one layout every version shares. Bytes after it are ignored.
    pub fn decode(data: &[u8]) -> Result<Self> {
        let mut r = Reader::new(ASSIGNMENT, data);
        effective_version(ASSIGNMENT, r.i16("version")?)?;
        let partitions = r.topic_partitions("assignedPartitions")?;
        let user_data = r.nullable_bytes("userData")?;
        Ok(Self {
            partitions,
            user_data,
        })
    }
}

/// Java's `checkSubscriptionVersion` / `checkAssignmentVersion`: negative is an error, newer than
/// known means "the newest layout known".
fn effective_version(message: &'static str, version: i16) -> Result<i16> {
    if version < 0 {
        Err(GroupError::UnsupportedVersion { message, version })
    } else {
        Ok(version.min(CONSUMER_PROTOCOL_LATEST_VERSION))
    }
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

fn encode_with_header<M: Encodable>(
    message_name: &'static str,
    version: i16,
    message: &M,
) -> Result<Bytes> {
    // `kafka-protocol` reports `anyhow` errors; only their text is kept.
    let failed = |reason: String| GroupError::Encode {
        message: message_name,
        version,
        reason,
    };
    let size = message
        .compute_size(version)
        .map_err(|e| failed(e.to_string()))?;
    let mut buf = BytesMut::with_capacity(2 + size);
    buf.put_i16(version);
    message
        .encode(&mut buf, version)
        .map_err(|e| failed(e.to_string()))?;
    Ok(buf.freeze())
}

/// Java's `String.compareTo`: compares UTF-16 code units, which differs from Rust's byte order
/// only for characters above U+FFFF against U+E000..U+FFFF. Used wherever Java sorts member ids,
/// group instance ids or topics, so kafkit orders them exactly as a Java leader would.
pub(super) fn java_cmp(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// A cursor over untrusted ConsumerProtocol bytes, reading the classic encoding the way Java's
/// generated `read` methods do.
struct Reader<'a> {
    message: &'static str,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(message: &'static str, buf: &'a [u8]) -> Self {
        Self { message, buf }
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(GroupError::Truncated {
                message: self.message,
                field,
                needed: n,
                remaining: self.buf.len(),
            });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16> {
        let b = self.take(field, 2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32> {
        let b = self.take(field, 4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A non-nullable array's element count, checked against the bytes left before anyone
    /// allocates for it (every element takes at least one byte).
    fn array_len(&mut self, field: &'static str) -> Result<usize> {
        let length = self.i32(field)?;
        if length < 0 {
            return Err(GroupError::NullField {
                message: self.message,
                field,
                length,
            });
        }
        let count = length as usize;
        if count > self.buf.len() {
            return Err(GroupError::CollectionTooLarge {
                message: self.message,
                field,
                length,
                remaining: self.buf.len(),
            });
        }
        Ok(count)
    }

    fn string(&mut self, field: &'static str) -> Result<String> {
        let length = self.i16(field)?;
        if length < 0 {
            return Err(GroupError::NullField {
                message: self.message,
                field,
                length: i32::from(length),
            });
        }
        let bytes = self.take(field, length as usize)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn nullable_string(&mut self, field: &'static str) -> Result<Option<String>> {
        let length = self.i16(field)?;
        if length < 0 {
            return Ok(None);
        }
        let bytes = self.take(field, length as usize)?;
        Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
    }

    fn nullable_bytes(&mut self, field: &'static str) -> Result<Option<Bytes>> {
        let length = self.i32(field)?;
        if length < 0 {
            return Ok(None);
        }
        let bytes = self.take(field, length as usize)?;
        Ok(Some(Bytes::copy_from_slice(bytes)))
    }

    /// `[topic string, partitions [int32]]`, flattened in wire order.
    fn topic_partitions(&mut self, field: &'static str) -> Result<Vec<TopicPartition>> {
        let topic_count = self.array_len(field)?;
        let mut out = Vec::new();
        for _ in 0..topic_count {
            let topic = self.string("topic")?;
            let partition_count = self.array_len("partitions")?;
            out.reserve(partition_count);
            for _ in 0..partition_count {
                out.push(TopicPartition::new(topic.clone(), self.i32("partitions")?));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::protocol::Decodable;
    use proptest::prelude::*;

    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    /// The subscription behind the Java vectors, as the Java test program built it: topics and
    /// owned partitions deliberately unsorted.
    fn java_subscription() -> Subscription {
        Subscription {
            topics: vec!["payments".into(), "orders".into()],
            user_data: Some(Bytes::from_static(&[0, 0, 0, 7])),
            owned_partitions: vec![tp("payments", 1), tp("orders", 2), tp("orders", 0)],
            generation_id: Some(7),
            rack_id: Some("rack-a".into()),
        }
    }

    /// `ConsumerProtocol.serializeSubscription(subscription, version)` output of kafka-clients
    /// 4.1.1 for [`java_subscription`], version 0..=4 (4 is written as 3).
    const JAVA_SUBSCRIPTION: [&str; 5] = [
        "00000000000200066f726465727300087061796d656e74730000000400000007",
        "00010000000200066f726465727300087061796d656e747300000004000000070000000200066f726465727300000002000000000000000200087061796d656e74730000000100000001",
        "00020000000200066f726465727300087061796d656e747300000004000000070000000200066f726465727300000002000000000000000200087061796d656e7473000000010000000100000007",
        "00030000000200066f726465727300087061796d656e747300000004000000070000000200066f726465727300000002000000000000000200087061796d656e747300000001000000010000000700067261636b2d61",
        "00030000000200066f726465727300087061796d656e747300000004000000070000000200066f726465727300000002000000000000000200087061796d656e747300000001000000010000000700067261636b2d61",
    ];

    /// The assignment behind the Java vectors: topics interleaved on purpose.
    fn java_assignment() -> Assignment {
        Assignment {
            partitions: vec![
                tp("payments", 3),
                tp("orders", 1),
                tp("payments", 0),
                tp("orders", 0),
            ],
            user_data: Some(Bytes::from_static(&[1, 2])),
        }
    }

    /// `ConsumerProtocol.serializeAssignment(assignment, version)` of kafka-clients 4.1.1 for
    /// [`java_assignment`], version 0..=3: one layout, only the header differs.
    const JAVA_ASSIGNMENT: [&str; 4] = [
        "00000000000200087061796d656e747300000002000000030000000000066f7264657273000000020000000100000000000000020102",
        "00010000000200087061796d656e747300000002000000030000000000066f7264657273000000020000000100000000000000020102",
        "00020000000200087061796d656e747300000002000000030000000000066f7264657273000000020000000100000000000000020102",
        "00030000000200087061796d656e747300000002000000030000000000066f7264657273000000020000000100000000000000020102",
    ];

    #[test]
    fn encodes_subscriptions_byte_for_byte_as_java() {
        for (version, expected) in (0i16..).zip(JAVA_SUBSCRIPTION) {
            let ours = java_subscription()
                .encode_version(version)
                .expect("encodes");
            assert_eq!(ours.as_ref(), hex(expected), "v{version}");
        }
        assert_eq!(
            java_subscription().encode().expect("encodes").as_ref(),
            hex(JAVA_SUBSCRIPTION[3])
        );

        let cases = [
            (
                "defaults: null user data, no owned partitions, generation -1, null rack",
                Subscription {
                    topics: vec!["t0".into()],
                    ..Subscription::default()
                },
                "00030000000100027430ffffffff00000000ffffffffffff",
            ),
            (
                "an empty rack id is written, and reads back as none",
                Subscription {
                    topics: vec!["t".into()],
                    generation_id: Some(3),
                    rack_id: Some(String::new()),
                    ..Subscription::default()
                },
                "000300000001000174ffffffff00000000000000030000",
            ),
        ];
        for (name, subscription, expected) in cases {
            assert_eq!(
                subscription.encode().expect("encodes").as_ref(),
                hex(expected),
                "{name}"
            );
        }
    }

    #[test]
    fn decodes_java_subscriptions() {
        let sorted_owned = vec![tp("orders", 0), tp("orders", 2), tp("payments", 1)];
        let full = Subscription {
            topics: vec!["orders".into(), "payments".into()],
            user_data: Some(Bytes::from_static(&[0, 0, 0, 7])),
            owned_partitions: sorted_owned,
            generation_id: Some(7),
            rack_id: Some("rack-a".into()),
        };
        let expected = [
            Subscription {
                owned_partitions: vec![],
                generation_id: None,
                rack_id: None,
                ..full.clone()
            },
            Subscription {
                generation_id: None,
                rack_id: None,
                ..full.clone()
            },
            Subscription {
                rack_id: None,
                ..full.clone()
            },
            full.clone(),
        ];
        for (version, expected) in expected.iter().enumerate() {
            let decoded = Subscription::decode(&hex(JAVA_SUBSCRIPTION[version])).expect("decodes");
            assert_eq!(&decoded, expected, "v{version}");
        }
    }

    #[test]
    fn assignments_match_java_both_ways() {
        let decoded = Assignment {
            partitions: vec![
                tp("payments", 3),
                tp("payments", 0),
                tp("orders", 1),
                tp("orders", 0),
            ],
            user_data: Some(Bytes::from_static(&[1, 2])),
        };
        for (version, expected) in (0i16..).zip(JAVA_ASSIGNMENT) {
            let ours = java_assignment().encode_version(version).expect("encodes");
            assert_eq!(ours.as_ref(), hex(expected), "encode v{version}");
            assert_eq!(
                Assignment::decode(&hex(expected)).expect("decodes"),
                decoded,
                "decode v{version}"
            );
        }
        assert_eq!(
            Assignment::default().encode().expect("encodes").as_ref(),
            hex("000300000000ffffffff"),
            "empty assignment, null user data"
        );
    }

    /// Bytes put together by hand from the layout in Kafka's message specs, independently of
    /// any encoder.
    #[test]
    fn decodes_hand_built_bytes() {
        #[rustfmt::skip]
        let v1_null_user_data: &[u8] = &[
            0x00, 0x01,                         // version 1
            0x00, 0x00, 0x00, 0x01,             // topics: 1
            0x00, 0x01, b'a',                   //   "a"
            0xff, 0xff, 0xff, 0xff,             // user_data: null
            0x00, 0x00, 0x00, 0x01,             // owned_partitions: 1 topic
            0x00, 0x01, b'a',                   //   topic "a"
            0x00, 0x00, 0x00, 0x02,             //   partitions: 2
            0x00, 0x00, 0x00, 0x05,             //     5
            0x00, 0x00, 0x00, 0x01,             //     1 (kept in wire order)
        ];
        assert_eq!(
            Subscription::decode(v1_null_user_data).expect("decodes"),
            Subscription {
                topics: vec!["a".into()],
                owned_partitions: vec![tp("a", 5), tp("a", 1)],
                ..Subscription::default()
            }
        );

        #[rustfmt::skip]
        let v2_negative_generation: &[u8] = &[
            0x00, 0x02,
            0x00, 0x00, 0x00, 0x00,             // no topics
            0x00, 0x00, 0x00, 0x00,             // user_data: empty, not null
            0x00, 0x00, 0x00, 0x00,             // no owned partitions
            0xff, 0xff, 0xff, 0xfe,             // generation -2: Java reads "no generation"
        ];
        assert_eq!(
            Subscription::decode(v2_negative_generation).expect("decodes"),
            Subscription {
                user_data: Some(Bytes::new()),
                ..Subscription::default()
            }
        );

        // Java decodes strings with `new String(bytes, UTF_8)`: invalid bytes become U+FFFD.
        // (Checked against kafka-clients 4.1.1: code points [65533, 40].)
        #[rustfmt::skip]
        let invalid_utf8: &[u8] = &[0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0xc3, 0x28, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            Subscription::decode(invalid_utf8).expect("decodes").topics,
            ["\u{FFFD}("]
        );

        #[rustfmt::skip]
        let assignment_v0: &[u8] = &[
            0x00, 0x00,
            0x00, 0x00, 0x00, 0x01,             // 1 topic
            0x00, 0x02, b't', b'0',
            0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
            0xff, 0xff, 0xff, 0xff,             // user_data: null
        ];
        assert_eq!(
            Assignment::decode(assignment_v0).expect("decodes"),
            Assignment {
                partitions: vec![tp("t0", 0), tp("t0", 3)],
                user_data: None
            }
        );
    }

    /// A version newer than kafkit knows is read with the v3 layout and whatever follows is
    /// ignored, as Java does (kafka-clients 4.1.1 reads this v9 message as the v3 one).
    #[test]
    fn reads_future_versions_with_the_newest_layout() {
        let mut v9 = hex(JAVA_SUBSCRIPTION[3]);
        v9[..2].copy_from_slice(&9i16.to_be_bytes());
        v9.extend_from_slice(&[9, 9, 9]);
        assert_eq!(
            Subscription::decode(&v9).expect("decodes"),
            Subscription::decode(&hex(JAVA_SUBSCRIPTION[3])).expect("decodes")
        );

        let mut v7 = hex(JAVA_ASSIGNMENT[3]);
        v7[..2].copy_from_slice(&7i16.to_be_bytes());
        v7.extend_from_slice(&[0, 0, 0, 1, 42]);
        assert_eq!(
            Assignment::decode(&v7).expect("decodes"),
            Assignment::decode(&hex(JAVA_ASSIGNMENT[3])).expect("decodes")
        );

        // Writing a version above the newest writes the newest, header included.
        assert_eq!(
            java_subscription()
                .encode_version(4)
                .expect("encodes")
                .as_ref(),
            hex(JAVA_SUBSCRIPTION[4])
        );
        assert_eq!(
            java_assignment()
                .encode_version(i16::MAX)
                .expect("encodes")
                .as_ref(),
            hex(JAVA_ASSIGNMENT[3])
        );
    }

    #[test]
    fn rejects_what_java_rejects() {
        let subscription = |bytes: &[u8]| Subscription::decode(bytes).unwrap_err();
        let assignment = |bytes: &[u8]| Assignment::decode(bytes).unwrap_err();
        let cases: Vec<(&str, GroupError, GroupError)> = vec![
            (
                "negative version",
                subscription(&[0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
                GroupError::UnsupportedVersion {
                    message: "subscription",
                    version: -1,
                },
            ),
            (
                "no header",
                subscription(&[0x00]),
                GroupError::Truncated {
                    message: "subscription",
                    field: "version",
                    needed: 2,
                    remaining: 1,
                },
            ),
            (
                "array longer than the bytes left, refused before allocating",
                subscription(&[0, 0, 0x7f, 0xff, 0xff, 0xff]),
                GroupError::CollectionTooLarge {
                    message: "subscription",
                    field: "topics",
                    length: i32::MAX,
                    remaining: 0,
                },
            ),
            (
                "string cut short",
                subscription(&[0, 1, 0, 0, 0, 1, 0, 5, b'a']),
                GroupError::Truncated {
                    message: "subscription",
                    field: "topics",
                    needed: 5,
                    remaining: 1,
                },
            ),
            (
                "null topics array",
                subscription(&[0, 0, 0xff, 0xff, 0xff, 0xff]),
                GroupError::NullField {
                    message: "subscription",
                    field: "topics",
                    length: -1,
                },
            ),
            (
                "null topic name",
                subscription(&[0, 0, 0, 0, 0, 1, 0xff, 0xfe]),
                GroupError::NullField {
                    message: "subscription",
                    field: "topics",
                    length: -2,
                },
            ),
            (
                "v2 without its generation",
                subscription(&[0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0]),
                GroupError::Truncated {
                    message: "subscription",
                    field: "generationId",
                    needed: 4,
                    remaining: 2,
                },
            ),
            (
                "negative assignment version",
                assignment(&[0x80, 0x00]),
                GroupError::UnsupportedVersion {
                    message: "assignment",
                    version: i16::MIN,
                },
            ),
            (
                "partition array longer than the bytes left",
                assignment(&[0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 9, 0, 0, 0, 0]),
                GroupError::CollectionTooLarge {
                    message: "assignment",
                    field: "partitions",
                    length: 9,
                    remaining: 4,
                },
            ),
            (
                "user data cut short",
                assignment(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 1]),
                GroupError::Truncated {
                    message: "assignment",
                    field: "userData",
                    needed: 3,
                    remaining: 1,
                },
            ),
            (
                "encoding at a negative version",
                Subscription::default().encode_version(-1).unwrap_err(),
                GroupError::UnsupportedVersion {
                    message: "subscription",
                    version: -1,
                },
            ),
            (
                "a topic name too long for an int16 length",
                Assignment {
                    partitions: vec![tp(&"x".repeat(40_000), 0)],
                    user_data: None,
                }
                .encode()
                .unwrap_err(),
                GroupError::Encode {
                    message: "assignment",
                    version: 3,
                    reason: "String is too long to encode (40000 bytes)".into(),
                },
            ),
        ];
        for (name, got, expected) in cases {
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn topic_partition_displays_like_java() {
        assert_eq!(tp("orders", 3).to_string(), "orders-3");
    }

    /// What a subscription written at `version` reads back as: sorted as Java writes it, without
    /// the fields `version` lacks, with Java's normalisations of generation and rack.
    fn as_read_back(s: &Subscription, version: i16) -> Subscription {
        let mut expected = s.clone();
        expected.topics.sort_by(|a, b| java_cmp(a, b));
        expected
            .owned_partitions
            .sort_by(|a, b| java_cmp(&a.topic, &b.topic).then(a.partition.cmp(&b.partition)));
        expected.generation_id = expected.generation_id.filter(|g| *g >= 0);
        expected.rack_id = expected.rack_id.filter(|r| !r.is_empty());
        if version < 1 {
            expected.owned_partitions.clear();
        }
        if version < 2 {
            expected.generation_id = None;
        }
        if version < 3 {
            expected.rack_id = None;
        }
        expected
    }

    /// What an assignment reads back as: partitions grouped by topic in order of first appearance.
    fn grouped(a: &Assignment) -> Assignment {
        let mut topics: Vec<&str> = Vec::new();
        for p in &a.partitions {
            if !topics.contains(&p.topic.as_str()) {
                topics.push(&p.topic);
            }
        }
        let partitions = topics
            .iter()
            .flat_map(|t| a.partitions.iter().filter(move |p| p.topic == *t).cloned())
            .collect();
        Assignment {
            partitions,
            user_data: a.user_data.clone(),
        }
    }

    fn topic_name() -> impl Strategy<Value = String> {
        // A small alphabet so topics repeat and group; sometimes non-ASCII to exercise Java's
        // UTF-16 order.
        prop_oneof![4 => "[a-c]{1,3}", 1 => "\\PC{1,4}"]
    }

    fn topic_partitions() -> impl Strategy<Value = Vec<TopicPartition>> {
        prop::collection::vec(
            (topic_name(), prop_oneof![4 => 0..8i32, 1 => any::<i32>()])
                .prop_map(|(t, p)| TopicPartition::new(t, p)),
            0..12,
        )
    }

    fn user_data() -> impl Strategy<Value = Option<Bytes>> {
        prop::option::of(prop::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from))
    }

    fn subscription() -> impl Strategy<Value = Subscription> {
        (
            prop::collection::vec(topic_name(), 0..6),
            user_data(),
            topic_partitions(),
            prop::option::of(any::<i32>()),
            prop::option::of("[a-z0-9-]{0,8}"),
        )
            .prop_map(
                |(topics, user_data, owned_partitions, generation_id, rack_id)| Subscription {
                    topics,
                    user_data,
                    owned_partitions,
                    generation_id,
                    rack_id,
                },
            )
    }

    /// The crate's generated decoder, as an independent check of our reader.
    fn decoded_by_kafka_protocol(bytes: &[u8], version: i16) -> Subscription {
        let mut body = Bytes::copy_from_slice(&bytes[2..]);
        let m = ConsumerProtocolSubscription::decode(&mut body, version)
            .expect("kafka-protocol decodes");
        Subscription {
            topics: m.topics.iter().map(|t| t.to_string()).collect(),
            user_data: m.user_data,
            owned_partitions: m
                .owned_partitions
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| TopicPartition::new(t.topic.0.to_string(), *p))
                })
                .collect(),
            generation_id: Some(m.generation_id).filter(|g| *g >= 0),
            rack_id: m.rack_id.map(|r| r.to_string()).filter(|r| !r.is_empty()),
        }
    }

    proptest! {
        #[test]
        fn subscription_round_trips_at_every_version(s in subscription(), version in 0i16..=3) {
            let bytes = s.encode_version(version).expect("encodes");
            prop_assert_eq!(&bytes[..2], &version.to_be_bytes());
            let decoded = Subscription::decode(&bytes).expect("decodes");
            prop_assert_eq!(&decoded, &as_read_back(&s, version));
            prop_assert_eq!(&decoded, &decoded_by_kafka_protocol(&bytes, version));
        }

        #[test]
        fn assignment_round_trips_at_every_version(
            partitions in topic_partitions(),
            user_data in user_data(),
            version in 0i16..=3,
        ) {
            let a = Assignment { partitions, user_data };
            let bytes = a.encode_version(version).expect("encodes");
            prop_assert_eq!(&bytes[..2], &version.to_be_bytes());
            prop_assert_eq!(Assignment::decode(&bytes).expect("decodes"), grouped(&a));
        }

        /// Hostile or corrupt metadata from another member yields an error, never a panic or a
        /// huge allocation.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Subscription::decode(&bytes);
            let _ = Assignment::decode(&bytes);
        }

        /// Corrupting a valid message anywhere still only yields a result or an error.
        #[test]
        fn decoding_corrupted_messages_never_panics(
            s in subscription(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = s.encode().expect("encodes").to_vec();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let _ = Subscription::decode(&bytes);
            let _ = Subscription::decode(&bytes[..cut.index(bytes.len())]);
        }
    }
}
