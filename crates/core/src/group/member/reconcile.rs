//! The consumer protocol's decisions, without I/O: how to get from the owned partitions to the
//! broker's target assignment ([`plan`]), what to do about a ConsumerGroupHeartbeat error
//! ([`react`]), how a target named by topic ids becomes partitions ([`resolve`]), and the epoch a
//! leaving member sends ([`leave_epoch`]). Each follows KIP-848 and the Java client's
//! `ConsumerMembershipManager` / `AbstractHeartbeatRequestManager`, and is unit-tested here.

use std::collections::{BTreeSet, HashMap};

use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::group::TopicPartition;

/// The member epoch a member joins with (and rejoins with after being fenced).
pub(crate) const JOIN_EPOCH: i32 = 0;

/// One reconciliation step: revoke first (drained and committed, as a cooperative revocation),
/// then assign. Partitions in both the owned set and the target stay untouched.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// Owned, not in the target: revoke, and only then ack the new epoch.
    pub(super) revoke: Vec<TopicPartition>,
    /// In the target, not owned: hand to the fetcher.
    pub(super) assign: Vec<TopicPartition>,
}

impl Plan {
    pub(super) fn is_empty(&self) -> bool {
        self.revoke.is_empty() && self.assign.is_empty()
    }
}

/// The difference between what is owned and the broker's target, in partition order.
pub(super) fn plan(owned: &BTreeSet<TopicPartition>, target: &BTreeSet<TopicPartition>) -> Plan {
    Plan {
        revoke: owned.difference(target).cloned().collect(),
        assign: target.difference(owned).cloned().collect(),
    }
}

/// What the member does about an error code on a ConsumerGroupHeartbeat response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reaction {
    /// The broker no longer knows this member at its epoch: every owned partition is lost (no
    /// commit: another member may own it already), then the member rejoins at epoch 0 with the
    /// same member id, at once.
    Fenced,
    /// Try again after backoff; `rediscover_coordinator` first forgets the coordinator connection.
    Retry { rediscover_coordinator: bool },
    /// The member stops for good.
    Fatal,
}

/// Maps a ConsumerGroupHeartbeat error code to what the member does, as the Java client does:
///
/// | code | reaction |
/// | --- | --- |
/// | FENCED_MEMBER_EPOCH, UNKNOWN_MEMBER_ID | fenced: partitions lost, rejoin at epoch 0 now |
/// | NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE | find the coordinator again, retry |
/// | COORDINATOR_LOAD_IN_PROGRESS, other retriable codes | back off, retry |
/// | GROUP_AUTHORIZATION_FAILED, INVALID_REQUEST, GROUP_MAX_SIZE_REACHED, UNSUPPORTED_ASSIGNOR, UNRELEASED_INSTANCE_ID, FENCED_INSTANCE_ID, UNSUPPORTED_VERSION, INVALID_REGULAR_EXPRESSION, anything else | fatal |
///
/// Java treats an unexpected retriable code in a response as fatal too; kafkit backs off on it
/// (as its classic member does), which only matters for codes the broker does not send today.
pub(crate) fn react(error: ResponseError) -> Reaction {
    match error {
        ResponseError::FencedMemberEpoch | ResponseError::UnknownMemberId => Reaction::Fenced,
        ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable => Reaction::Retry {
            rediscover_coordinator: true,
        },
        e if e.is_retriable() => Reaction::Retry {
            rediscover_coordinator: false,
        },
        _ => Reaction::Fatal,
    }
}

/// The member epoch a leaving member sends: -1 (leave: the broker reassigns its partitions at
/// once), or -2 for a static member (`group.instance.id`: a temporary leave, its partitions wait
/// for it to come back within the session timeout).
pub(super) fn leave_epoch(static_member: bool) -> i32 {
    if static_member { -2 } else { -1 }
}

/// A target assignment by topic id, as partitions: those whose topic id `names` knows, and the ids
/// it does not know yet (the caller looks them up and resolves again).
pub(crate) fn resolve(
    target: &[(Uuid, Vec<i32>)],
    names: &HashMap<Uuid, String>,
) -> (BTreeSet<TopicPartition>, Vec<Uuid>) {
    let mut partitions = BTreeSet::new();
    let mut unknown = Vec::new();
    for (id, ps) in target {
        match names.get(id) {
            Some(name) => {
                partitions.extend(ps.iter().map(|&p| TopicPartition::new(name.clone(), p)))
            }
            None => unknown.push(*id),
        }
    }
    (partitions, unknown)
}

/// A member id as the Java client makes one (KIP-1082: the client generates it, a random UUID in
/// Kafka's URL-safe base64 form), so that a member that retries its join after a lost response is
/// the same member to the broker.
pub(crate) fn new_member_id() -> String {
    use base64::Engine;
    use std::hash::{BuildHasher, Hasher};
    let mut bytes = [0u8; 16];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        // RandomState: SipHash keys seeded from the OS per thread, advanced per instance.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(now);
        h.write_u32(std::process::id());
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    // Version 4, variant 1, as `Uuid.randomUuid()`.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ResponseError as E;

    fn tps(spec: &[(&str, i32)]) -> BTreeSet<TopicPartition> {
        spec.iter()
            .map(|&(t, p)| TopicPartition::new(t, p))
            .collect()
    }

    #[test]
    fn revoke_what_left_the_target_and_assign_what_joined_it() {
        // (owned, target, revoke, assign)
        type Case = (
            &'static [(&'static str, i32)],
            &'static [(&'static str, i32)],
            &'static [(&'static str, i32)],
            &'static [(&'static str, i32)],
        );
        let cases: &[Case] = &[
            // Joining: everything is new.
            (&[], &[("a", 0), ("a", 1)], &[], &[("a", 0), ("a", 1)]),
            // Unchanged: nothing to do (a heartbeat carrying the same target).
            (&[("a", 0)], &[("a", 0)], &[], &[]),
            // A member joined and takes a partition: revoke only that one.
            (
                &[("a", 0), ("a", 1), ("a", 2)],
                &[("a", 0), ("a", 2)],
                &[("a", 1)],
                &[],
            ),
            // A member left: its partitions come here, nothing is revoked.
            (
                &[("a", 0)],
                &[("a", 0), ("a", 1), ("b", 0)],
                &[],
                &[("a", 1), ("b", 0)],
            ),
            // Moves both ways in one target.
            (
                &[("a", 0), ("b", 1)],
                &[("a", 0), ("b", 2)],
                &[("b", 1)],
                &[("b", 2)],
            ),
            // The target is empty (more members than partitions): revoke everything.
            (&[("a", 0), ("a", 1)], &[], &[("a", 0), ("a", 1)], &[]),
        ];
        for (owned, target, revoke, assign) in cases {
            let p = plan(&tps(owned), &tps(target));
            let what = format!("owned {owned:?}, target {target:?}");
            assert_eq!(
                p.revoke,
                tps(revoke).into_iter().collect::<Vec<_>>(),
                "{what}"
            );
            assert_eq!(
                p.assign,
                tps(assign).into_iter().collect::<Vec<_>>(),
                "{what}"
            );
            assert_eq!(p.is_empty(), revoke.is_empty() && assign.is_empty());
            // Applying the plan reaches the target.
            let mut after = tps(owned);
            for tp in &p.revoke {
                after.remove(tp);
            }
            after.extend(p.assign.iter().cloned());
            assert_eq!(after, tps(target), "{what}");
        }
    }

    /// Java's `AbstractHeartbeatRequestManager.onErrorResponse` and the consumer's specific
    /// handling, code by code.
    #[test]
    fn heartbeat_errors_match_the_java_client() {
        let rediscover = Reaction::Retry {
            rediscover_coordinator: true,
        };
        let backoff = Reaction::Retry {
            rediscover_coordinator: false,
        };
        let table = [
            (E::FencedMemberEpoch, Reaction::Fenced, "transitionToFenced"),
            (E::UnknownMemberId, Reaction::Fenced, "transitionToFenced"),
            (E::NotCoordinator, rediscover, "markCoordinatorUnknown"),
            (
                E::CoordinatorNotAvailable,
                rediscover,
                "markCoordinatorUnknown",
            ),
            (E::CoordinatorLoadInProgress, backoff, "retry after backoff"),
            (E::GroupAuthorizationFailed, Reaction::Fatal, "fatal"),
            (E::InvalidRequest, Reaction::Fatal, "fatal"),
            (E::GroupMaxSizeReached, Reaction::Fatal, "fatal"),
            (E::UnsupportedAssignor, Reaction::Fatal, "fatal"),
            (E::UnreleasedInstanceId, Reaction::Fatal, "fatal"),
            (E::FencedInstanceId, Reaction::Fatal, "fatal"),
            (E::UnsupportedVersion, Reaction::Fatal, "fatal"),
            (E::InvalidRegularExpression, Reaction::Fatal, "fatal"),
            (
                E::GroupIdNotFound,
                Reaction::Fatal,
                "fatal: a classic group of that id",
            ),
        ];
        for (error, expected, java) in table {
            assert_eq!(react(error), expected, "{error:?}: Java does `{java}`");
        }
        // Every other code: back off when retriable, else stop.
        for error in (-1..=1000).filter_map(ResponseError::try_from_code) {
            if table.iter().any(|(e, _, _)| *e == error) {
                continue;
            }
            let expected = if error.is_retriable() {
                backoff
            } else {
                Reaction::Fatal
            };
            assert_eq!(react(error), expected, "{error:?}");
        }
    }

    #[test]
    fn a_static_member_leaves_with_epoch_minus_two() {
        assert_eq!(leave_epoch(false), -1);
        assert_eq!(leave_epoch(true), -2);
    }

    #[test]
    fn a_target_by_topic_id_resolves_what_is_known_and_names_the_rest() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let names = HashMap::from([(a, "orders".to_owned())]);
        let (partitions, unknown) = resolve(&[(a, vec![2, 0]), (b, vec![1])], &names);
        assert_eq!(partitions, tps(&[("orders", 0), ("orders", 2)]));
        assert_eq!(unknown, [b]);
        let (partitions, unknown) = resolve(&[], &names);
        assert!(partitions.is_empty() && unknown.is_empty());
    }

    #[test]
    fn member_ids_are_random_uuids_in_kafkas_form() {
        let ids: BTreeSet<String> = (0..100).map(|_| new_member_id()).collect();
        assert_eq!(ids.len(), 100, "no repeats");
        for id in &ids {
            assert_eq!(
                id.len(),
                22,
                "{id}: 16 bytes, URL-safe base64 without padding"
            );
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{id}"
            );
        }
    }
}
