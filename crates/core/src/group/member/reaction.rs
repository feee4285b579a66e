//! Error reactions: which coordinator error on a JoinGroup, SyncGroup or Heartbeat leads to a
//! rejoin, a loss of the partitions, a backoff or a fatal stop ([`react`], pure and table-tested),
//! and the one place those reactions change the membership ([`apply_reaction`]).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use tokio::time::Instant;

use super::{MemberState, Shared};
use crate::Error;
use crate::group::coordinator::describe;
use crate::wire::Connection;

/// How a step of the loop ended, when it did not simply succeed.
pub(super) enum Step {
    /// Try again after backoff.
    Retry(String),
    /// Try again now (a new member id or a rebalance that just started).
    Again(String),
    /// The membership is gone (generation reset already applied): the owned partitions are lost,
    /// then the member rejoins.
    Lost(String),
    /// The member cannot continue.
    Fatal(Error),
}

/// The group request a coordinator error code answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operation {
    Join,
    Sync,
    Heartbeat,
}

impl Operation {
    /// The Kafka API name, as errors and logs show it.
    fn api(self) -> &'static str {
        match self {
            Operation::Join => "JoinGroup",
            Operation::Sync => "SyncGroup",
            Operation::Heartbeat => "Heartbeat",
        }
    }
}

/// What happens to the member id before the next JoinGroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberIdChange {
    /// Keep it: the coordinator still knows this member.
    Keep,
    /// Forget it: join as a new member.
    Clear,
    /// Take the id the coordinator put in the response (MEMBER_ID_REQUIRED, KIP-394).
    FromResponse,
}

/// What the member does about a coordinator error code. Decided by [`react`] from the operation and
/// the code alone; [`apply_reaction`] is the one place its side effects happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reaction {
    /// Join again at once, after changing the member id and forgetting the generation as told. The
    /// partitions stay owned (cooperative members offer them again in the next subscription).
    RejoinNow {
        member_id: MemberIdChange,
        reset_generation: bool,
    },
    /// The coordinator no longer accepts this member's generation: the generation (and the member id
    /// when `reset_member_id`) is forgotten and the owned partitions are lost, with no commit, before
    /// the member rejoins.
    Lost { reset_member_id: bool },
    /// Back off, then try again. `rediscover_coordinator` first forgets the coordinator connection,
    /// so the next request looks the coordinator up again.
    RetryAfterBackoff { rediscover_coordinator: bool },
    /// The member stops for good.
    Fatal,
}

impl Reaction {
    /// Whether the coordinator still recognised this member and its generation. For a heartbeat that
    /// means the session is alive (Java: `heartbeat.receiveHeartbeat()` on REBALANCE_IN_PROGRESS).
    fn session_alive(self) -> bool {
        self == Reaction::RejoinNow {
            member_id: MemberIdChange::Keep,
            reset_generation: false,
        }
    }
}

/// Maps a coordinator error code on a JoinGroup, SyncGroup or Heartbeat response to what the member
/// does. Pure, so every branch is unit-tested; it follows the Java client's `AbstractCoordinator`
/// (classic protocol) except where noted.
///
/// | code | Join | Sync | Heartbeat |
/// | --- | --- | --- | --- |
/// | MEMBER_ID_REQUIRED | rejoin now with the id from the response | fatal | fatal |
/// | UNKNOWN_MEMBER_ID | rejoin now, new member, no generation | same | lost, new member |
/// | ILLEGAL_GENERATION | rejoin now, no generation | same | lost |
/// | REBALANCE_IN_PROGRESS | rejoin now | rejoin now | rejoin now (session alive, nothing lost) |
/// | FENCED_INSTANCE_ID | fatal | fatal | fatal |
/// | NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE | back off, find the coordinator again | same | same |
/// | other retriable (e.g. COORDINATOR_LOAD_IN_PROGRESS) | back off, retry | same | same |
/// | anything else | fatal | fatal | fatal |
///
/// Java differs on a non-fatal heartbeat error it does not expect (e.g. GROUP_AUTHORIZATION_FAILED):
/// its heartbeat thread only counts a failed heartbeat, while kafkit stops the member.
fn react(operation: Operation, error: ResponseError) -> Reaction {
    use MemberIdChange::{Clear, FromResponse, Keep};
    use Operation::{Heartbeat, Join, Sync};
    match (operation, error) {
        (Join, ResponseError::MemberIdRequired) => Reaction::RejoinNow {
            member_id: FromResponse,
            reset_generation: false,
        },
        (Join | Sync, ResponseError::UnknownMemberId) => Reaction::RejoinNow {
            member_id: Clear,
            reset_generation: true,
        },
        (Join | Sync, ResponseError::IllegalGeneration) => Reaction::RejoinNow {
            member_id: Keep,
            reset_generation: true,
        },
        (Heartbeat, ResponseError::UnknownMemberId) => Reaction::Lost {
            reset_member_id: true,
        },
        (Heartbeat, ResponseError::IllegalGeneration) => Reaction::Lost {
            reset_member_id: false,
        },
        (_, ResponseError::RebalanceInProgress) => Reaction::RejoinNow {
            member_id: Keep,
            reset_generation: false,
        },
        (_, ResponseError::FencedInstanceId) => Reaction::Fatal,
        (_, ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable) => {
            Reaction::RetryAfterBackoff {
                rediscover_coordinator: true,
            }
        }
        (_, e) if e.is_retriable() => Reaction::RetryAfterBackoff {
            rediscover_coordinator: false,
        },
        _ => Reaction::Fatal,
    }
}

/// Applies the side effects of [`react`]'s answer to `error` and turns it into the loop's next step:
/// the state resets (in [`reset_state`]) and the coordinator invalidation. `response_member_id` is the
/// member id the response carried; `conn` the connection it came on.
pub(super) fn apply_reaction(
    shared: &Shared,
    conn: &Arc<Connection>,
    operation: Operation,
    error: ResponseError,
    response_member_id: &str,
) -> Step {
    let reaction = react(operation, error);
    reset_state(
        &mut shared.state.lock(),
        operation,
        reaction,
        response_member_id,
    );
    let api = operation.api();
    match reaction {
        Reaction::RejoinNow { member_id, .. } => Step::Again(match member_id {
            MemberIdChange::Keep => format!("{error:?} on {api}: rejoining"),
            MemberIdChange::Clear => format!("{error:?} on {api}: rejoining as a new member"),
            MemberIdChange::FromResponse => {
                format!("{error:?} on {api}: rejoining with the id the coordinator gave")
            }
        }),
        Reaction::Lost { .. } => Step::Lost(format!(
            "{error:?} on {api}: the group moved on without this member"
        )),
        Reaction::RetryAfterBackoff {
            rediscover_coordinator,
        } => {
            if rediscover_coordinator {
                shared.coordinator.invalidate(conn);
            }
            Step::Retry(format!("{error:?} on {api}"))
        }
        Reaction::Fatal => Step::Fatal(group_error(shared, api, error, None)),
    }
}

/// The membership changes a reaction makes (the caller holds the state lock). Owned partitions are not
/// touched here: a rejoin offers them again, and a loss is reported by
/// [`lose`](super::handoff::lose), which empties them.
fn reset_state(
    state: &mut MemberState,
    operation: Operation,
    reaction: Reaction,
    response_member_id: &str,
) {
    match reaction {
        Reaction::RejoinNow {
            member_id,
            reset_generation,
        } => {
            if operation == Operation::Heartbeat && reaction.session_alive() {
                state.last_heartbeat = Some(Instant::now());
            }
            match member_id {
                MemberIdChange::Keep => {}
                MemberIdChange::Clear => state.member_id.clear(),
                MemberIdChange::FromResponse => state.member_id = response_member_id.to_owned(),
            }
            if reset_generation {
                state.generation = -1;
            }
        }
        Reaction::Lost { reset_member_id } => {
            state.generation = -1;
            if reset_member_id {
                state.member_id.clear();
            }
        }
        Reaction::RetryAfterBackoff { .. } | Reaction::Fatal => {}
    }
}

pub(super) fn group_error(
    shared: &Shared,
    operation: &'static str,
    err: ResponseError,
    message: Option<&str>,
) -> Error {
    Error::Group {
        group: shared.config.group_id.clone(),
        operation,
        code: err.code(),
        error: describe(err, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MemberIdChange::{Clear, FromResponse, Keep};
    use Operation::{Heartbeat, Join, Sync};
    use ResponseError as E;

    const REJOIN: Reaction = Reaction::RejoinNow {
        member_id: Keep,
        reset_generation: false,
    };
    const REJOIN_NEW_MEMBER: Reaction = Reaction::RejoinNow {
        member_id: Clear,
        reset_generation: true,
    };
    const REJOIN_NO_GENERATION: Reaction = Reaction::RejoinNow {
        member_id: Keep,
        reset_generation: true,
    };
    const REJOIN_WITH_GIVEN_ID: Reaction = Reaction::RejoinNow {
        member_id: FromResponse,
        reset_generation: false,
    };
    const LOST: Reaction = Reaction::Lost {
        reset_member_id: false,
    };
    const LOST_NEW_MEMBER: Reaction = Reaction::Lost {
        reset_member_id: true,
    };
    const REDISCOVER: Reaction = Reaction::RetryAfterBackoff {
        rediscover_coordinator: true,
    };
    const BACKOFF: Reaction = Reaction::RetryAfterBackoff {
        rediscover_coordinator: false,
    };
    const FATAL: Reaction = Reaction::Fatal;

    /// Every error code kafka-protocol knows.
    fn all_codes() -> Vec<ResponseError> {
        (-1..=1000)
            .filter_map(ResponseError::try_from_code)
            .collect()
    }

    /// The codes `react` treats specially; everything else goes by `is_retriable`.
    const SPECIAL: [ResponseError; 7] = [
        E::MemberIdRequired,
        E::UnknownMemberId,
        E::IllegalGeneration,
        E::RebalanceInProgress,
        E::FencedInstanceId,
        E::NotCoordinator,
        E::CoordinatorNotAvailable,
    ];

    #[test]
    fn every_branch_for_every_operation() {
        #[rustfmt::skip]
        let table: &[(ResponseError, [Reaction; 3])] = &[
            //                             Join                   Sync               Heartbeat
            (E::MemberIdRequired,        [REJOIN_WITH_GIVEN_ID, FATAL,             FATAL]),
            (E::UnknownMemberId,         [REJOIN_NEW_MEMBER,    REJOIN_NEW_MEMBER, LOST_NEW_MEMBER]),
            (E::IllegalGeneration,       [REJOIN_NO_GENERATION, REJOIN_NO_GENERATION, LOST]),
            (E::RebalanceInProgress,     [REJOIN,               REJOIN,            REJOIN]),
            (E::FencedInstanceId,        [FATAL,                FATAL,             FATAL]),
            (E::NotCoordinator,          [REDISCOVER,           REDISCOVER,        REDISCOVER]),
            (E::CoordinatorNotAvailable, [REDISCOVER,           REDISCOVER,        REDISCOVER]),
            // Retriable codes without a special case back off.
            (E::CoordinatorLoadInProgress, [BACKOFF,            BACKOFF,           BACKOFF]),
            (E::RequestTimedOut,         [BACKOFF,              BACKOFF,           BACKOFF]),
            (E::NetworkException,        [BACKOFF,              BACKOFF,           BACKOFF]),
            // Anything else stops the member.
            (E::UnknownServerError,      [FATAL,                FATAL,             FATAL]),
            (E::GroupAuthorizationFailed, [FATAL,               FATAL,             FATAL]),
            (E::InconsistentGroupProtocol, [FATAL,              FATAL,             FATAL]),
            (E::InvalidSessionTimeout,   [FATAL,                FATAL,             FATAL]),
            (E::UnsupportedVersion,      [FATAL,                FATAL,             FATAL]),
        ];
        for (error, expected) in table {
            for (operation, expected) in [Join, Sync, Heartbeat].into_iter().zip(expected) {
                assert_eq!(
                    react(operation, *error),
                    *expected,
                    "{error:?} on {operation:?}"
                );
            }
        }
        // The table names every special case.
        for special in SPECIAL {
            assert!(table.iter().any(|(e, _)| *e == special), "{special:?}");
        }
    }

    #[test]
    fn every_other_code_backs_off_when_retriable_and_is_fatal_otherwise() {
        let codes = all_codes();
        assert!(
            codes.len() > 100,
            "kafka-protocol knows {} codes",
            codes.len()
        );
        for error in codes.into_iter().filter(|e| !SPECIAL.contains(e)) {
            let expected = if error.is_retriable() { BACKOFF } else { FATAL };
            for operation in [Join, Sync, Heartbeat] {
                assert_eq!(
                    react(operation, error),
                    expected,
                    "{error:?} on {operation:?}"
                );
            }
        }
    }

    #[test]
    fn partitions_are_lost_only_on_a_heartbeat_and_the_session_lives_only_through_a_rebalance() {
        for error in all_codes() {
            for operation in [Join, Sync] {
                assert!(
                    !matches!(react(operation, error), Reaction::Lost { .. }),
                    "{error:?} on {operation:?}: a join or sync error never loses partitions"
                );
            }
            assert_eq!(
                react(Heartbeat, error).session_alive(),
                error == E::RebalanceInProgress,
                "{error:?}: only REBALANCE_IN_PROGRESS proves the session is alive"
            );
        }
    }

    /// The Java client's `AbstractCoordinator` (classic protocol) on the same codes: JoinGroup,
    /// SyncGroup and Heartbeat response handlers, and `joinGroupIfNeeded`, which rejoins at once on
    /// UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS and MEMBER_ID_REQUIRED, backs off
    /// on other retriable errors and throws the rest to the application.
    #[test]
    fn matches_the_java_classic_protocol_client() {
        let java: &[(Operation, ResponseError, Reaction, &str)] = &[
            // JoinGroupResponseHandler
            (
                Join,
                E::CoordinatorLoadInProgress,
                BACKOFF,
                "coordinator loading: retriable",
            ),
            (
                Join,
                E::UnknownMemberId,
                REJOIN_NEW_MEMBER,
                "resetStateAndGeneration(resetMemberId)",
            ),
            (
                Join,
                E::NotCoordinator,
                REDISCOVER,
                "markCoordinatorUnknown",
            ),
            (
                Join,
                E::CoordinatorNotAvailable,
                REDISCOVER,
                "markCoordinatorUnknown",
            ),
            (
                Join,
                E::FencedInstanceId,
                FATAL,
                "fatal: group.instance.id fenced",
            ),
            (
                Join,
                E::InconsistentGroupProtocol,
                FATAL,
                "raised to the application",
            ),
            (
                Join,
                E::InvalidSessionTimeout,
                FATAL,
                "raised to the application",
            ),
            (Join, E::InvalidGroupId, FATAL, "raised to the application"),
            (
                Join,
                E::GroupAuthorizationFailed,
                FATAL,
                "GroupAuthorizationException",
            ),
            (
                Join,
                E::GroupMaxSizeReached,
                FATAL,
                "raised to the application",
            ),
            (
                Join,
                E::MemberIdRequired,
                REJOIN_WITH_GIVEN_ID,
                "KIP-394: rejoin with the given id",
            ),
            (Join, E::RebalanceInProgress, REJOIN, "rejoin"),
            // SyncGroupResponseHandler
            (
                Sync,
                E::GroupAuthorizationFailed,
                FATAL,
                "GroupAuthorizationException",
            ),
            (Sync, E::RebalanceInProgress, REJOIN, "requestRejoin"),
            (
                Sync,
                E::FencedInstanceId,
                FATAL,
                "fatal: group.instance.id fenced",
            ),
            (
                Sync,
                E::UnknownMemberId,
                REJOIN_NEW_MEMBER,
                "resetGenerationOnResponseError",
            ),
            (
                Sync,
                E::IllegalGeneration,
                REJOIN_NO_GENERATION,
                "resetGenerationOnResponseError",
            ),
            (
                Sync,
                E::NotCoordinator,
                REDISCOVER,
                "markCoordinatorUnknown",
            ),
            (
                Sync,
                E::CoordinatorNotAvailable,
                REDISCOVER,
                "markCoordinatorUnknown",
            ),
            (
                Sync,
                E::InconsistentGroupProtocol,
                FATAL,
                "unexpected error: KafkaException",
            ),
            // HeartbeatResponseHandler
            (
                Heartbeat,
                E::NotCoordinator,
                REDISCOVER,
                "markCoordinatorUnknown",
            ),
            (
                Heartbeat,
                E::CoordinatorNotAvailable,
                REDISCOVER,
                "markCoordinatorUnknown",
            ),
            (
                Heartbeat,
                E::RebalanceInProgress,
                REJOIN,
                "requestRejoin; receiveHeartbeat",
            ),
            (
                Heartbeat,
                E::IllegalGeneration,
                LOST,
                "resetGenerationOnResponseError: lost",
            ),
            (
                Heartbeat,
                E::UnknownMemberId,
                LOST_NEW_MEMBER,
                "resetGenerationOnResponseError: lost",
            ),
            (
                Heartbeat,
                E::FencedInstanceId,
                FATAL,
                "fatal: group.instance.id fenced",
            ),
        ];
        for (operation, error, expected, why) in java {
            assert_eq!(
                react(*operation, *error),
                *expected,
                "{error:?} on {operation:?}: Java does `{why}`"
            );
        }
        assert!(
            react(Heartbeat, E::RebalanceInProgress).session_alive(),
            "Java counts REBALANCE_IN_PROGRESS as a received heartbeat"
        );
    }

    #[test]
    fn reset_state_applies_each_reaction_to_the_membership() {
        let joined = || MemberState {
            member_id: "m-1".into(),
            generation: 7,
            owned: {
                let mut owned = super::super::Ownership::default();
                owned.add([crate::group::TopicPartition::new("t", 0)]);
                owned
            },
            ..MemberState::default()
        };
        // (operation, reaction, member id after, generation after, heartbeat recorded)
        let cases: &[(Operation, Reaction, &str, i32, bool)] = &[
            (Join, REJOIN_WITH_GIVEN_ID, "m-given", 7, false),
            (Join, REJOIN_NEW_MEMBER, "", -1, false),
            (Sync, REJOIN_NO_GENERATION, "m-1", -1, false),
            (Sync, REJOIN, "m-1", 7, false),
            (Heartbeat, REJOIN, "m-1", 7, true),
            (Heartbeat, LOST, "m-1", -1, false),
            (Heartbeat, LOST_NEW_MEMBER, "", -1, false),
            (Heartbeat, REDISCOVER, "m-1", 7, false),
            (Join, BACKOFF, "m-1", 7, false),
            (Heartbeat, FATAL, "m-1", 7, false),
        ];
        for (operation, reaction, member_id, generation, heartbeat) in cases {
            let mut state = joined();
            reset_state(&mut state, *operation, *reaction, "m-given");
            let what = format!("{reaction:?} on {operation:?}");
            assert_eq!(state.member_id, *member_id, "{what}");
            assert_eq!(state.generation, *generation, "{what}");
            assert_eq!(state.last_heartbeat.is_some(), *heartbeat, "{what}");
            assert_eq!(
                state.owned,
                joined().owned,
                "{what}: ownership is lose()'s job"
            );
        }
    }
}
