//! Acknowledgements and acquisition locks, without I/O.
//!
//! A ShareFetch response hands this member records it *acquired* under a lock that lasts the
//! broker's `share.record.lock.duration.ms` (the response says how long). Each record is then
//! settled once: accepted, released or rejected. [`Round`] keeps the records of one response until
//! they are all settled or their lock ran out; an outcome that comes after the lock ran out is
//! dropped (the broker has given the record to someone else, or will), and counted as a lock expiry.
//! [`batches`] turns the settled offsets of a partition into the acknowledgement batches the
//! ShareFetch and ShareAcknowledge requests carry.

use std::collections::BTreeMap;

use tokio::time::Instant;

use crate::group::TopicPartition;

/// How a record is acknowledged, with its code in ShareFetch / ShareAcknowledge v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckType {
    /// An offset of an acquired range that holds no record for the client (a transaction marker,
    /// a compacted or aborted record): nothing to process, but the broker wants it acknowledged.
    Gap = 0,
    /// Processed: never delivered again.
    Accept = 1,
    /// Not processed: deliver it again (to any member), counting one more delivery.
    Release = 2,
    /// Unprocessable: never delivered again, archived as rejected.
    Reject = 3,
}

impl AckType {
    /// The wire code.
    pub(crate) fn code(self) -> i8 {
        self as i8
    }
}

/// One acknowledgement batch: offsets `first..=last`, all of one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckBatch {
    pub(crate) first: i64,
    pub(crate) last: i64,
    pub(crate) ack: AckType,
}

/// The acknowledgement batches of one partition's settled offsets: each run of consecutive
/// offsets with the same type is one batch (one type per batch keeps requests small: a run of
/// accepted records, the common case, costs 17 bytes however long it is).
pub(crate) fn batches(settled: &BTreeMap<i64, AckType>) -> Vec<AckBatch> {
    let mut out: Vec<AckBatch> = Vec::new();
    for (&offset, &ack) in settled {
        match out.last_mut() {
            Some(b) if b.ack == ack && b.last + 1 == offset => b.last = offset,
            _ => out.push(AckBatch {
                first: offset,
                last: offset,
                ack,
            }),
        }
    }
    out
}

/// Settled offsets waiting to be sent, by partition, each with the end of its lock.
pub(crate) type Pending = BTreeMap<TopicPartition, BTreeMap<i64, (AckType, Instant)>>;

/// Records not acknowledged because their lock ran out, by topic.
pub(crate) type Expired = BTreeMap<String, u64>;

/// The number of records in `expired`.
pub(crate) fn total(expired: &Expired) -> u64 {
    expired.values().sum()
}

/// What a set of acknowledgements held, by type (gaps not counted).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) accepted: u64,
    pub(crate) released: u64,
    pub(crate) rejected: u64,
    /// Settled after the lock ran out, never settled before it ran out, or not sent before it
    /// ran out: not acknowledged.
    pub(crate) lock_expired: Expired,
}

/// Takes the pending acknowledgements of `partitions` (all when `None`) that can still be sent at
/// `now`, as batches; the ones whose lock has run out are dropped and counted as expired.
pub(crate) fn take_due(
    pending: &mut Pending,
    partitions: Option<&dyn Fn(&TopicPartition) -> bool>,
    now: Instant,
) -> (BTreeMap<TopicPartition, Vec<AckBatch>>, Tally) {
    let mut tally = Tally::default();
    let mut out = BTreeMap::new();
    let keys: Vec<TopicPartition> = pending
        .keys()
        .filter(|tp| partitions.is_none_or(|f| f(tp)))
        .cloned()
        .collect();
    for tp in keys {
        let Some(offsets) = pending.remove(&tp) else {
            continue;
        };
        let mut live = BTreeMap::new();
        for (offset, (ack, deadline)) in offsets {
            if now >= deadline {
                if ack != AckType::Gap {
                    *tally.lock_expired.entry(tp.topic.clone()).or_default() += 1;
                }
                continue;
            }
            match ack {
                AckType::Accept => tally.accepted += 1,
                AckType::Release => tally.released += 1,
                AckType::Reject => tally.rejected += 1,
                AckType::Gap => {}
            }
            live.insert(offset, ack);
        }
        if !live.is_empty() {
            out.insert(tp, batches(&live));
        }
    }
    (out, tally)
}

/// The records of one ShareFetch response, from acquisition until settled or expired.
#[derive(Debug)]
pub(crate) struct Round {
    /// When the acquisition lock runs out: the request's send time plus the lock duration the
    /// response gave (the broker started the lock after the request left, so this errs early).
    deadline: Instant,
    /// Each record's partition and offset, and its outcome once settled.
    slots: Vec<(TopicPartition, i64, Option<AckType>)>,
    /// Gaps, settled at once.
    gaps: Vec<(TopicPartition, i64)>,
    unsettled: usize,
    /// Outcomes that came at or after the deadline.
    late: Expired,
}

impl Round {
    pub(crate) fn new(deadline: Instant) -> Self {
        Self {
            deadline,
            slots: Vec::new(),
            gaps: Vec::new(),
            unsettled: 0,
            late: Expired::new(),
        }
    }

    /// Adds a record to settle; returns its slot.
    pub(crate) fn push(&mut self, tp: TopicPartition, offset: i64) -> usize {
        self.slots.push((tp, offset, None));
        self.unsettled += 1;
        self.slots.len() - 1
    }

    /// Adds an offset with nothing to process (acknowledged as a gap).
    pub(crate) fn gap(&mut self, tp: TopicPartition, offset: i64) {
        self.gaps.push((tp, offset));
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether every record has been settled.
    pub(crate) fn is_done(&self) -> bool {
        self.unsettled == 0
    }

    /// Settles slot `slot` with `ack` at `now`. A second outcome for one slot is ignored; one
    /// that comes at or after the deadline is dropped and counted as a lock expiry.
    pub(crate) fn settle(&mut self, slot: usize, ack: AckType, now: Instant) {
        let Some((tp, _, outcome)) = self.slots.get_mut(slot) else {
            return;
        };
        if outcome.is_some() {
            return;
        }
        self.unsettled -= 1;
        if now >= self.deadline {
            // Marked settled so that it is not counted twice; never acknowledged.
            *outcome = Some(AckType::Gap);
            *self.late.entry(tp.topic.clone()).or_default() += 1;
            return;
        }
        *outcome = Some(ack);
    }

    /// Ends the round at `now`: the settled outcomes (and gaps) go into `pending`. A record still
    /// unsettled is released if `release_unsettled` (shutdown) and the lock still holds; otherwise
    /// it is left to its lock. Returns the records not acknowledged for their lock (late outcomes,
    /// and unsettled records not released).
    pub(crate) fn finish(
        self,
        now: Instant,
        release_unsettled: bool,
        pending: &mut Pending,
    ) -> Expired {
        let mut expired = self.late;
        let live = now < self.deadline;
        for (tp, offset, outcome) in self.slots {
            let ack = match outcome {
                // A late outcome (see `settle`).
                Some(AckType::Gap) => continue,
                Some(ack) => ack,
                None if live && release_unsettled => AckType::Release,
                None => {
                    *expired.entry(tp.topic.clone()).or_default() += 1;
                    continue;
                }
            };
            pending
                .entry(tp)
                .or_default()
                .insert(offset, (ack, self.deadline));
        }
        for (tp, offset) in self.gaps {
            pending
                .entry(tp)
                .or_default()
                .insert(offset, (AckType::Gap, self.deadline));
        }
        expired
    }
}

/// The offsets of `acquired` ranges (`first..=last`) that `records` (offsets in increasing order)
/// does not hold: they are acknowledged as gaps. Records outside every range are not this
/// member's (a batch is returned whole) and are left out by the caller.
pub(crate) fn gaps(acquired: &[(i64, i64)], records: &[i64]) -> Vec<i64> {
    let mut out = Vec::new();
    for &(first, last) in acquired {
        let start = records.partition_point(|&o| o < first);
        let mut have = records[start..]
            .iter()
            .take_while(|&&o| o <= last)
            .peekable();
        for offset in first..=last {
            if have.peek() == Some(&&offset) {
                have.next();
            } else {
                out.push(offset);
            }
        }
    }
    out
}

/// Whether `offset` lies in one of the `acquired` ranges.
pub(crate) fn is_acquired(acquired: &[(i64, i64)], offset: i64) -> bool {
    acquired
        .iter()
        .any(|&(first, last)| first <= offset && offset <= last)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn tp() -> TopicPartition {
        TopicPartition::new("t", 0)
    }

    #[test]
    fn batches_merge_consecutive_offsets_of_one_type() {
        use AckType::*;
        // (settled offsets, expected batches as (first, last, type))
        type Case<'a> = (&'a [(i64, AckType)], &'a [(i64, i64, AckType)]);
        let cases: &[Case<'_>] = &[
            (&[], &[]),
            (&[(5, Accept)], &[(5, 5, Accept)]),
            (&[(1, Accept), (2, Accept), (3, Accept)], &[(1, 3, Accept)]),
            // A hole splits a run: the missing offset is not acknowledged.
            (
                &[(1, Accept), (3, Accept)],
                &[(1, 1, Accept), (3, 3, Accept)],
            ),
            (
                &[
                    (1, Accept),
                    (2, Release),
                    (3, Release),
                    (4, Accept),
                    (5, Gap),
                    (6, Reject),
                ],
                &[
                    (1, 1, Accept),
                    (2, 3, Release),
                    (4, 4, Accept),
                    (5, 5, Gap),
                    (6, 6, Reject),
                ],
            ),
        ];
        for (settled, want) in cases {
            let map: BTreeMap<i64, AckType> = settled.iter().copied().collect();
            let got: Vec<(i64, i64, AckType)> = batches(&map)
                .into_iter()
                .map(|b| (b.first, b.last, b.ack))
                .collect();
            assert_eq!(got, *want, "settled {settled:?}");
        }
    }

    #[test]
    fn gaps_are_acquired_offsets_without_a_record() {
        // (acquired ranges, record offsets, expected gaps)
        type Case<'a> = (&'a [(i64, i64)], &'a [i64], &'a [i64]);
        let cases: &[Case<'_>] = &[
            (&[(0, 3)], &[0, 1, 2, 3], &[]),
            (&[(0, 3)], &[0, 2], &[1, 3]),
            // Records outside the ranges (the rest of a returned batch) do not count.
            (&[(2, 4)], &[0, 1, 2, 4, 5], &[3]),
            (&[(0, 1), (5, 6)], &[1, 5], &[0, 6]),
            (&[(0, 2)], &[], &[0, 1, 2]),
        ];
        for (acquired, records, want) in cases {
            assert_eq!(gaps(acquired, records), *want, "{acquired:?} {records:?}");
        }
        assert!(is_acquired(&[(3, 5)], 3) && is_acquired(&[(3, 5)], 5));
        assert!(!is_acquired(&[(3, 5)], 2) && !is_acquired(&[(3, 5)], 6));
    }

    #[test]
    fn outcomes_in_time_are_acknowledged_and_late_ones_dropped() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(30);
        let mut round = Round::new(deadline);
        let a = round.push(tp(), 10);
        let b = round.push(tp(), 11);
        let c = round.push(tp(), 12);
        round.gap(tp(), 13);
        round.settle(a, AckType::Accept, start);
        // A second outcome for the same record changes nothing.
        round.settle(a, AckType::Reject, start);
        round.settle(b, AckType::Reject, start + Duration::from_secs(1));
        assert!(!round.is_done());
        round.settle(c, AckType::Accept, deadline);
        assert!(round.is_done());
        let mut pending = Pending::new();
        assert_eq!(
            round.finish(start, false, &mut pending),
            Expired::from([("t".to_owned(), 1)]),
            "c came late"
        );
        let (sent, tally) = take_due(&mut pending, None, start);
        assert!(pending.is_empty());
        assert_eq!(
            tally,
            Tally {
                accepted: 1,
                rejected: 1,
                ..Default::default()
            }
        );
        let want = vec![
            AckBatch {
                first: 10,
                last: 10,
                ack: AckType::Accept,
            },
            AckBatch {
                first: 11,
                last: 11,
                ack: AckType::Reject,
            },
            AckBatch {
                first: 13,
                last: 13,
                ack: AckType::Gap,
            },
        ];
        assert_eq!(sent[&tp()], want);
    }

    #[test]
    fn acknowledgements_not_sent_before_the_lock_ends_are_dropped() {
        let start = Instant::now();
        let mut pending = Pending::new();
        let other = TopicPartition::new("t", 1);
        for (i, offset) in [1, 2].into_iter().enumerate() {
            let mut round = Round::new(start + Duration::from_secs(10 * (i as u64 + 1)));
            let s = round.push(tp(), offset);
            round.settle(s, AckType::Accept, start);
            let o = round.push(other.clone(), offset);
            round.settle(o, AckType::Release, start);
            round.finish(start, false, &mut pending);
        }
        // Only partition 1 is due now: partition 0 stays pending.
        let only_other = |t: &TopicPartition| t.partition == 1;
        let (sent, tally) = take_due(&mut pending, Some(&only_other), start);
        assert_eq!(sent.len(), 1);
        assert_eq!(tally.released, 2);
        // At 15 s the first round's lock has run out: offset 1 is dropped, offset 2 is sent.
        let (sent, tally) = take_due(&mut pending, None, start + Duration::from_secs(15));
        assert_eq!(
            sent[&tp()],
            vec![AckBatch {
                first: 2,
                last: 2,
                ack: AckType::Accept
            }]
        );
        assert_eq!((tally.accepted, total(&tally.lock_expired)), (1, 1));
    }

    #[test]
    fn unsettled_records_are_released_at_shutdown_while_the_lock_holds_else_expire() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(30);
        for (release, at, want_expired, want_release_sent) in [
            (true, start, 0, true),
            (false, start, 1, false),
            (true, deadline, 1, false),
        ] {
            let mut round = Round::new(deadline);
            let a = round.push(tp(), 1);
            round.push(tp(), 2);
            round.settle(a, AckType::Accept, start);
            let mut pending = Pending::new();
            assert_eq!(
                total(&round.finish(at, release, &mut pending)),
                want_expired
            );
            let released = pending[&tp()].get(&2).map(|(ack, _)| *ack);
            assert_eq!(released == Some(AckType::Release), want_release_sent);
        }
    }
}
