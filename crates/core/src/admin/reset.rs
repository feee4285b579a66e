//! Moving a group's committed offsets while the group is inactive, as Kafka's
//! `kafka-consumer-groups --reset-offsets` does: plan the new offsets (each kept within its
//! partition's log), and commit them only when asked to.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{
    EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, all_committed, connect_bootstrap,
    coordinator_description, find_coordinator, group_error, log_offsets, metadata, send,
    topic_descriptions,
};
use crate::group::TopicPartition;
use crate::{ClientConfig, Error, Result};

/// Where [`reset_offsets`] moves each partition's committed offset. Every target is kept within
/// the partition's log (log start ..= log end), as Kafka's tool does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResetTo {
    /// The log start offset (`--to-earliest`).
    Earliest,
    /// The log end offset (`--to-latest`).
    Latest,
    /// The first offset whose record's timestamp is at or after this many milliseconds since the
    /// epoch, or the log end when no record is that recent (`--to-datetime`).
    Timestamp(i64),
    /// The committed offset moved by this many (negative: back); a partition with nothing
    /// committed moves from its log end (`--shift-by`).
    ShiftBy(i64),
    /// This offset (`--to-offset`).
    Offset(i64),
}

/// Which partitions [`reset_offsets`] moves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResetScope {
    /// These topics: every partition (`None`) or the listed ones.
    Topics(Vec<(String, Option<Vec<i32>>)>),
    /// Every partition the group has a committed offset for (`--all-topics`).
    AllCommitted,
}

/// One partition's reset: where its committed offset is and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OffsetResetPlan {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The committed offset before the reset (`None`: nothing committed).
    pub current: Option<i64>,
    /// The new committed offset.
    pub new: i64,
}

/// Plans new committed offsets for `group`, and with `execute` commits them (else nothing
/// changes: a dry run). Returns the plan, sorted by topic and partition.
///
/// Refused while the group has members (an [`Error::Group`] with code `NON_EMPTY_GROUP`, 68): a
/// member would overwrite the new offsets with its next commit, and Kafka refuses a commit from
/// outside a live generation anyway. A group that does not exist yet is created by the commit, as
/// with Kafka's tool; it needs [`ResetScope::Topics`]. A topic that does not exist, or a partition
/// it does not have, is [`Error::UnknownTopic`].
pub async fn reset_offsets(
    client: &ClientConfig,
    group: &str,
    scope: &ResetScope,
    to: ResetTo,
    execute: bool,
) -> Result<Vec<OffsetResetPlan>> {
    let coordinator = match coordinator_description(client, group).await {
        Ok((_, description)) if !description.members.is_empty() => {
            let reason = format!(
                "the group has {} active member(s) (state {}): stop them before resetting its offsets",
                description.members.len(),
                description.state
            );
            return Err(group_error(
                group,
                "reset offsets",
                ResponseError::NonEmptyGroup,
                Some(&reason),
            ));
        }
        Ok((coordinator, _)) => coordinator,
        Err(Error::Group { code, .. }) if code == ResponseError::GroupIdNotFound.code() => {
            find_coordinator(client, group).await?
        }
        Err(e) => return Err(e),
    };
    let committed = all_committed(&coordinator, group).await?;
    let partitions = match scope {
        ResetScope::AllCommitted => committed.keys().cloned().collect(),
        ResetScope::Topics(topics) => partitions_of(client, topics).await?,
    };
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    // Log start, log end and (for a time) the first offset at or after it: one lookup.
    let mut timestamps = vec![EARLIEST_TIMESTAMP, LATEST_TIMESTAMP];
    if let ResetTo::Timestamp(ms) = to {
        timestamps.push(ms);
    }
    let mut offsets = log_offsets(client, &partitions, &timestamps)
        .await?
        .into_iter();
    let (earliest, latest) = (
        offsets.next().unwrap_or_default(),
        offsets.next().unwrap_or_default(),
    );
    let by_time = offsets.next();
    let mut plan = Vec::with_capacity(partitions.len());
    for tp in partitions {
        // A topic deleted since Metadata named it has no log offsets: nothing to move.
        let (Some(&start), Some(&end)) = (earliest.get(&tp), latest.get(&tp)) else {
            continue;
        };
        let current = committed.get(&tp).copied();
        let target = match to {
            ResetTo::Earliest => start,
            ResetTo::Latest => end,
            ResetTo::Timestamp(_) => by_time
                .as_ref()
                .and_then(|offsets| offsets.get(&tp).copied())
                .filter(|&o| o >= 0)
                .unwrap_or(end),
            ResetTo::ShiftBy(n) => current.unwrap_or(end).saturating_add(n),
            ResetTo::Offset(o) => o,
        };
        plan.push(OffsetResetPlan {
            new: target.clamp(start, end.max(start)),
            current,
            topic: tp.topic,
            partition: tp.partition,
        });
    }
    if execute {
        commit(&coordinator, group, &plan).await?;
    }
    Ok(plan)
}

/// The partitions `topics` name, checked against Metadata.
async fn partitions_of(
    client: &ClientConfig,
    topics: &[(String, Option<Vec<i32>>)],
) -> Result<BTreeSet<TopicPartition>> {
    let names: Vec<String> = topics.iter().map(|(t, _)| t.clone()).collect();
    let bootstrap = connect_bootstrap(client).await?;
    let described = topic_descriptions(&metadata(&bootstrap, Some(&names)).await?)?;
    let counts: BTreeMap<&str, usize> = described
        .iter()
        .map(|t| (t.name.as_str(), t.partitions.len()))
        .collect();
    let mut out = BTreeSet::new();
    for (topic, partitions) in topics {
        let count = counts.get(topic.as_str()).copied().unwrap_or(0);
        match partitions {
            None => out.extend((0..count as i32).map(|p| TopicPartition::new(topic.as_str(), p))),
            Some(ps) => {
                for &p in ps {
                    if p < 0 || p as usize >= count {
                        return Err(Error::UnknownTopic {
                            topic: format!("{topic} partition {p} ({count} partitions)"),
                        });
                    }
                    out.insert(TopicPartition::new(topic.as_str(), p));
                }
            }
        }
    }
    Ok(out)
}

/// Commits `plan` for the group from outside any generation (generation -1, no member id), which
/// the coordinator accepts only while the group has no members.
async fn commit(
    coordinator: &crate::wire::Connection,
    group: &str,
    plan: &[OffsetResetPlan],
) -> Result<()> {
    let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for p in plan {
        by_topic.entry(&p.topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(p.partition)
                .with_committed_offset(p.new)
                .with_committed_leader_epoch(-1),
        );
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::default())
        .with_retention_time_ms(-1)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response = send(coordinator, &request, "OffsetCommit").await?;
    for t in &response.topics {
        for p in &t.partitions {
            if let Some(err) = ResponseError::try_from_code(p.error_code) {
                let what = format!("{}-{}", t.name.0.as_str(), p.partition_index);
                return Err(group_error(group, "OffsetCommit", err, Some(&what)));
            }
        }
    }
    Ok(())
}
