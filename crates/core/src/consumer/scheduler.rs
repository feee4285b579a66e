//! Which of a partition's fetched records may start now, per dispatch mode.
//!
//! - `PartitionOrdered`: one record in flight per partition, in offset order.
//! - `KeyOrdered`: one record in flight per key, in offset order within the key; different keys run
//!   concurrently. Records without a key form one more "key", so they keep partition order among
//!   themselves. Keys are compared by a 64-bit hash: two keys that collide are merely serialised
//!   together (less concurrency, never lost order).
//! - `Unordered`: any record may start.
//!
//! The global bound on records in flight is applied by the caller, which asks [`PartitionSchedule::next`]
//! only while it has room. A record keeps its key busy until [`PartitionSchedule::finish`] is called for it,
//! which is how a retrying record parks only its own key.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};

/// How records of a partition may be processed concurrently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchMode {
    /// One record in flight per partition, in offset order.
    PartitionOrdered,
    /// Same-key records in offset order, different keys concurrently, at most `max_in_flight` records
    /// in flight across the consumer. Records without a key keep partition order among themselves.
    KeyOrdered {
        /// The most records processed at once by this consumer.
        max_in_flight: usize,
    },
    /// Any order, at most `max_in_flight` records in flight across the consumer.
    Unordered {
        /// The most records processed at once by this consumer.
        max_in_flight: usize,
    },
}

impl DispatchMode {
    /// The bound on records in flight across the consumer (`None`: one per partition).
    pub(crate) fn max_in_flight(self) -> Option<usize> {
        match self {
            DispatchMode::PartitionOrdered => None,
            DispatchMode::KeyOrdered { max_in_flight }
            | DispatchMode::Unordered { max_in_flight } => Some(max_in_flight),
        }
    }
}

/// The hash of a record's key, or of "no key". Fixed seeds: equal keys hash equal in every process run.
pub(crate) fn key_hash(key: Option<&[u8]>) -> u64 {
    let mut h =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    match key {
        Some(k) => {
            h.write_u8(1);
            h.write(k);
        }
        None => h.write_u8(0),
    }
    h.finish()
}

/// The maps of [`State::Keyed`] are keyed by [`key_hash`] values, which are already hashes: hashing
/// them again (SipHash, the default) only cost time on every record. This passes them through.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHashed;

impl BuildHasher for KeyHashed {
    type Hasher = PassThrough;
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

/// A hasher for `u64` keys that are hashes already.
#[derive(Debug)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed with it; anything else still gets a usable (FNV-1a) hash.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Pending records of one partition and what is in flight.
#[derive(Debug)]
pub(crate) struct PartitionSchedule<R> {
    mode: DispatchMode,
    state: State<R>,
    in_flight: usize,
}

#[derive(Debug)]
enum State<R> {
    /// PartitionOrdered and Unordered: one FIFO.
    Fifo(VecDeque<R>),
    /// KeyOrdered: a FIFO per key, and the keys that may start (have records, none in flight), in the
    /// order they became ready.
    Keyed {
        queues: HashMap<u64, VecDeque<R>, KeyHashed>,
        busy: HashMap<u64, (), KeyHashed>,
        ready: VecDeque<u64>,
        len: usize,
        /// Emptied queues kept for the next key that needs one: a key's queue empties at every run,
        /// and freeing and allocating it again each time was a large part of `KeyOrdered`'s cost.
        spare: Vec<VecDeque<R>>,
    },
}

/// At most this many emptied queues are kept, each with room for at most [`SPARE_CAPACITY`] records.
const SPARE_MAX: usize = 256;
const SPARE_CAPACITY: usize = 1024;

/// Keeps `q` (empty) for reuse if there is room for it.
fn retire<R>(spare: &mut Vec<VecDeque<R>>, q: VecDeque<R>) {
    if spare.len() < SPARE_MAX && q.capacity() <= SPARE_CAPACITY {
        spare.push(q);
    }
}

impl<R> PartitionSchedule<R> {
    pub(crate) fn new(mode: DispatchMode) -> Self {
        let state = match mode {
            DispatchMode::KeyOrdered { .. } => State::Keyed {
                queues: HashMap::default(),
                busy: HashMap::default(),
                ready: VecDeque::new(),
                len: 0,
                spare: Vec::new(),
            },
            _ => State::Fifo(VecDeque::new()),
        };
        Self {
            mode,
            state,
            in_flight: 0,
        }
    }

    /// Adds a fetched record (records arrive in offset order).
    pub(crate) fn push(&mut self, key: u64, record: R) {
        match &mut self.state {
            State::Fifo(q) => q.push_back(record),
            State::Keyed {
                queues,
                busy,
                ready,
                len,
                spare,
            } => {
                let q = queues
                    .entry(key)
                    .or_insert_with(|| spare.pop().unwrap_or_default());
                if q.is_empty() && !busy.contains_key(&key) {
                    ready.push_back(key);
                }
                q.push_back(record);
                *len += 1;
            }
        }
    }

    /// The next record that may start, marking it in flight.
    #[cfg(test)]
    pub(crate) fn next(&mut self) -> Option<(u64, R)> {
        self.next_below(i64::MAX, |_| 0)
    }

    /// The next record that may start and whose offset (per `offset_of`) is below `limit`, marking it
    /// in flight. The caller bounds how far processing runs ahead of the partition's watermark with
    /// `limit`; the lowest unfinished record is always below it, so the bound never stalls a partition.
    pub(crate) fn next_below(
        &mut self,
        limit: i64,
        offset_of: impl Fn(&R) -> i64,
    ) -> Option<(u64, R)> {
        let record = match (&mut self.state, self.mode) {
            (State::Fifo(_), DispatchMode::PartitionOrdered) if self.in_flight > 0 => None,
            (State::Fifo(q), _) => {
                if q.front().is_some_and(|r| offset_of(r) < limit) {
                    q.pop_front().map(|r| (0, r))
                } else {
                    None
                }
            }
            (
                State::Keyed {
                    queues,
                    busy,
                    ready,
                    len,
                    spare,
                },
                _,
            ) => {
                // The first ready key whose next record is within the limit (usually the first).
                let at = ready.iter().position(|k| {
                    queues
                        .get(k)
                        .and_then(VecDeque::front)
                        .is_some_and(|r| offset_of(r) < limit)
                })?;
                let key = ready.remove(at).expect("position is in range");
                let q = queues.get_mut(&key).expect("a ready key has a queue");
                let r = q.pop_front().expect("a ready key has a record");
                if q.is_empty()
                    && let Some(q) = queues.remove(&key)
                {
                    retire(spare, q);
                }
                busy.insert(key, ());
                *len -= 1;
                Some((key, r))
            }
        };
        if record.is_some() {
            self.in_flight += 1;
        }
        record
    }

    /// After [`next_below`](Self::next_below) handed out a record of `key`, takes the records that
    /// would run right after it anyway, one at a time and in this order: the rest of the partition
    /// (`PartitionOrdered`) or of the key (`KeyOrdered`), up to `out.len() == max`, offsets below
    /// `limit`. They join the same hand-out, which one [`finish_run`](Self::finish_run) ends, so the
    /// caller may process them in sequence without asking again. `Unordered` records keep no order
    /// with each other: nothing is added.
    pub(crate) fn extend_run(
        &mut self,
        key: u64,
        limit: i64,
        offset_of: impl Fn(&R) -> i64,
        max: usize,
        out: &mut Vec<R>,
    ) {
        let below = |q: &VecDeque<R>| q.front().is_some_and(|r| offset_of(r) < limit);
        match (&mut self.state, self.mode) {
            (State::Fifo(q), DispatchMode::PartitionOrdered) => {
                while out.len() < max && below(q) {
                    out.extend(q.pop_front());
                }
            }
            (State::Fifo(_), _) => {}
            (
                State::Keyed {
                    queues, len, spare, ..
                },
                _,
            ) => {
                let Entry::Occupied(mut q) = queues.entry(key) else {
                    return;
                };
                // Offsets rise along a queue: the records below `limit` are a prefix of it.
                let room = max.saturating_sub(out.len());
                let n = q
                    .get()
                    .iter()
                    .take(room)
                    .take_while(|r| offset_of(r) < limit)
                    .count();
                out.extend(q.get_mut().drain(..n));
                *len -= n;
                if q.get().is_empty() {
                    retire(spare, q.remove());
                }
            }
        }
    }

    /// How many records [`extend_run`](Self::extend_run) could add for `key` at most (ignoring its
    /// limits), to size the run up front.
    pub(crate) fn run_len_hint(&self, key: u64) -> usize {
        match (&self.state, self.mode) {
            (State::Fifo(q), DispatchMode::PartitionOrdered) => q.len(),
            (State::Fifo(_), _) => 0,
            (State::Keyed { queues, .. }, _) => queues.get(&key).map_or(0, VecDeque::len),
        }
    }

    /// A record handed out by [`next`](Self::next) is finished; its key may run its next record.
    pub(crate) fn finish(&mut self, key: u64) {
        self.finish_run(key, std::iter::empty());
    }

    /// Ends a hand-out of `key` (a record, or a run built by [`extend_run`](Self::extend_run)).
    /// `unstarted` are the records of it that did not run, in offset order: they go back to the front
    /// of their queue and are handed out next.
    pub(crate) fn finish_run(&mut self, key: u64, unstarted: impl DoubleEndedIterator<Item = R>) {
        self.in_flight -= 1;
        match &mut self.state {
            State::Fifo(q) => {
                for r in unstarted.rev() {
                    q.push_front(r);
                }
            }
            State::Keyed {
                queues,
                busy,
                ready,
                len,
                spare,
            } => {
                let was_busy = busy.remove(&key).is_some();
                let mut returned = false;
                for r in unstarted.rev() {
                    queues
                        .entry(key)
                        .or_insert_with(|| spare.pop().unwrap_or_default())
                        .push_front(r);
                    *len += 1;
                    returned = true;
                }
                if returned {
                    ready.push_front(key);
                } else if was_busy && queues.get(&key).is_some_and(|q| !q.is_empty()) {
                    ready.push_back(key);
                }
            }
        }
    }

    /// Records waiting (not in flight).
    pub(crate) fn queued(&self) -> usize {
        match &self.state {
            State::Fifo(q) => q.len(),
            State::Keyed { len, .. } => *len,
        }
    }

    /// Records handed out and not finished.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Drops every waiting record (a revoked partition's prefetched records must never run).
    pub(crate) fn clear_queued(&mut self) {
        match &mut self.state {
            State::Fifo(q) => q.clear(),
            State::Keyed {
                queues, ready, len, ..
            } => {
                queues.clear();
                ready.clear();
                *len = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain<R: Copy>(s: &mut PartitionSchedule<R>) -> Vec<(u64, R)> {
        std::iter::from_fn(|| s.next()).collect()
    }

    #[test]
    fn partition_ordered_runs_one_at_a_time_in_order() {
        let mut s = PartitionSchedule::new(DispatchMode::PartitionOrdered);
        for o in 0..3 {
            s.push(key_hash(Some(&[o as u8])), o);
        }
        assert_eq!(drain(&mut s), vec![(0, 0)]);
        s.finish(0);
        assert_eq!(drain(&mut s), vec![(0, 1)]);
        s.finish(0);
        assert_eq!(drain(&mut s), vec![(0, 2)]);
    }

    #[test]
    fn unordered_hands_out_everything() {
        let mut s = PartitionSchedule::new(DispatchMode::Unordered { max_in_flight: 8 });
        for o in 0..5 {
            s.push(0, o);
        }
        assert_eq!(drain(&mut s).len(), 5);
        assert_eq!(s.in_flight(), 5);
    }

    #[test]
    fn key_ordered_runs_keys_concurrently_and_each_key_in_order() {
        let (a, b) = (key_hash(Some(b"a")), key_hash(Some(b"b")));
        let none = key_hash(None);
        let mut s = PartitionSchedule::new(DispatchMode::KeyOrdered { max_in_flight: 8 });
        // offsets: 0:a 1:b 2:a 3:none 4:none 5:b
        for (o, k) in [(0, a), (1, b), (2, a), (3, none), (4, none), (5, b)] {
            s.push(k, o);
        }
        let first: Vec<_> = drain(&mut s).into_iter().map(|(_, o)| o).collect();
        assert_eq!(first, vec![0, 1, 3], "one per key, the earliest of each");
        s.finish(b);
        assert_eq!(drain(&mut s), vec![(b, 5)]);
        s.finish(a);
        assert_eq!(drain(&mut s), vec![(a, 2)]);
        s.finish(none);
        assert_eq!(drain(&mut s), vec![(none, 4)]);
        assert_eq!(s.queued(), 0);
    }

    #[test]
    fn a_record_handed_back_is_redelivered_before_later_records_of_the_key() {
        let a = key_hash(Some(b"a"));
        let mut s = PartitionSchedule::new(DispatchMode::KeyOrdered { max_in_flight: 8 });
        s.push(a, 0);
        s.push(a, 1);
        let (k, r) = s.next().unwrap();
        s.finish_run(k, std::iter::once(r));
        assert_eq!(s.next(), Some((a, 0)));
    }

    #[test]
    fn next_below_holds_back_records_too_far_ahead() {
        let (a, b) = (key_hash(Some(b"a")), key_hash(Some(b"b")));
        let mut s = PartitionSchedule::new(DispatchMode::KeyOrdered { max_in_flight: 8 });
        // a: 0, 5; b: 1, 2
        for (o, k) in [(0i64, a), (1, b), (2, b), (5, a)] {
            s.push(k, o);
        }
        let below = |s: &mut PartitionSchedule<i64>, limit| s.next_below(limit, |&o| o);
        assert_eq!(below(&mut s, 3), Some((a, 0)));
        assert_eq!(below(&mut s, 3), Some((b, 1)));
        s.finish(b);
        assert_eq!(below(&mut s, 3), Some((b, 2)));
        s.finish(a);
        assert_eq!(below(&mut s, 3), None, "offset 5 is beyond the limit");
        assert_eq!(below(&mut s, 6), Some((a, 5)));

        let mut fifo = PartitionSchedule::new(DispatchMode::Unordered { max_in_flight: 8 });
        fifo.push(0, 10i64);
        assert_eq!(fifo.next_below(10, |&o| o), None);
        assert_eq!(fifo.next_below(11, |&o| o), Some((0, 10)));
    }

    #[test]
    fn clear_queued_keeps_in_flight_accounting() {
        let mut s = PartitionSchedule::new(DispatchMode::KeyOrdered { max_in_flight: 8 });
        s.push(1, 0);
        s.push(1, 1);
        s.push(2, 2);
        let (k, _) = s.next().unwrap();
        s.clear_queued();
        assert_eq!((s.queued(), s.in_flight()), (0, 1));
        s.finish(k);
        assert_eq!(s.next(), None);
    }

    #[test]
    fn runs_take_what_would_run_next_in_the_same_lane() {
        let (a, b) = (key_hash(Some(b"a")), key_hash(Some(b"b")));
        let mut keyed = PartitionSchedule::new(DispatchMode::KeyOrdered { max_in_flight: 8 });
        // a: 0, 2, 3, 6; b: 1, 4
        for (o, k) in [(0i64, a), (1, b), (2, a), (3, a), (4, b), (6, a)] {
            keyed.push(k, o);
        }
        let (k, first) = keyed.next_below(i64::MAX, |&o| o).unwrap();
        assert_eq!(
            keyed.run_len_hint(k),
            3,
            "a's queue behind the handed-out record"
        );
        let mut run = vec![first];
        keyed.extend_run(k, 6, |&o| o, 3, &mut run);
        assert_eq!(
            (k, run.clone()),
            (a, vec![0, 2, 3]),
            "a's records, at most 3, below 6"
        );
        assert_eq!(keyed.in_flight(), 1, "a run is one hand-out");
        assert_eq!(keyed.next(), Some((b, 1)), "other keys still run");
        assert_eq!(keyed.next(), None, "a stays busy while its run is out");
        // The run stopped after 0: 2 and 3 go back in front of 6.
        keyed.finish_run(a, vec![2, 3].into_iter());
        assert_eq!(keyed.next(), Some((a, 2)));
        keyed.finish(a);
        assert_eq!(keyed.next(), Some((a, 3)));

        let mut ordered = PartitionSchedule::new(DispatchMode::PartitionOrdered);
        for o in 0..5i64 {
            ordered.push(0, o);
        }
        let (k, first) = ordered.next().unwrap();
        assert_eq!(ordered.run_len_hint(k), 4);
        let mut run = vec![first];
        ordered.extend_run(k, i64::MAX, |&o| o, 10, &mut run);
        assert_eq!(run, vec![0, 1, 2, 3, 4]);
        assert_eq!(ordered.next(), None);
        ordered.finish_run(k, std::iter::empty());
        assert_eq!((ordered.in_flight(), ordered.queued()), (0, 0));

        let mut unordered = PartitionSchedule::new(DispatchMode::Unordered { max_in_flight: 8 });
        unordered.push(0, 0i64);
        unordered.push(0, 1);
        let (k, first) = unordered.next().unwrap();
        let mut run = vec![first];
        unordered.extend_run(k, i64::MAX, |&o| o, 10, &mut run);
        assert_eq!(run, vec![0], "unordered records are handed out one by one");
    }

    proptest! {
        /// Whatever the interleaving of starts and finishes, no two records of a key are in flight
        /// at once and each key's records start in offset order.
        #[test]
        fn per_key_order_always_holds(keys in proptest::collection::vec(0u64..6, 1..300), picks in proptest::collection::vec(any::<u16>(), 1..600)) {
            let mut s = PartitionSchedule::new(DispatchMode::KeyOrdered { max_in_flight: 100 });
            for (offset, k) in keys.iter().enumerate() {
                s.push(*k, offset);
            }
            let mut in_flight: Vec<(u64, usize)> = Vec::new();
            let mut last_started: HashMap<u64, usize> = HashMap::new();
            let mut started = 0;
            let mut picks = picks.into_iter().cycle();
            while started < keys.len() || !in_flight.is_empty() {
                let p = picks.next().unwrap() as usize;
                // Start when the pick says so, or when nothing is in flight (else the loop would spin).
                if (p.is_multiple_of(2) || in_flight.is_empty()) && let Some((k, o)) = s.next() {
                    prop_assert_eq!(keys[o], k);
                    prop_assert!(!in_flight.iter().any(|(fk, _)| *fk == k), "key {} twice in flight", k);
                    if let Some(prev) = last_started.insert(k, o) {
                        prop_assert!(prev < o, "key {} started {} after {}", k, o, prev);
                    }
                    in_flight.push((k, o));
                    started += 1;
                } else {
                    prop_assert!(!in_flight.is_empty(), "nothing in flight and nothing may start: records are stuck");
                    let (k, _) = in_flight.remove(p % in_flight.len());
                    s.finish(k);
                }
            }
        }

        /// The same with runs: a start may take more of its key's records, and a finish may hand back
        /// the part of a run that did not start. Keys still never overlap and start in offset order,
        /// and every record runs exactly once.
        #[test]
        fn runs_keep_per_key_order(keys in proptest::collection::vec(0u64..6, 1..300), picks in proptest::collection::vec(any::<u16>(), 1..600)) {
            let mut s = PartitionSchedule::new(DispatchMode::KeyOrdered { max_in_flight: 100 });
            for (offset, k) in keys.iter().enumerate() {
                s.push(*k, offset);
            }
            // Runs in flight: key and the offsets not yet started (the first one has started).
            let mut runs: Vec<(u64, Vec<usize>)> = Vec::new();
            let mut last_started: HashMap<u64, usize> = HashMap::new();
            let mut ran = vec![0u32; keys.len()];
            let mut picks = picks.into_iter().cycle();
            let mut guard = 0;
            while ran.contains(&0) {
                guard += 1;
                prop_assert!(guard < 100_000, "no progress");
                let p = picks.next().unwrap() as usize;
                if (p.is_multiple_of(3) || runs.is_empty()) && let Some((k, o)) = s.next() {
                    prop_assert!(!runs.iter().any(|(rk, _)| *rk == k), "key {} twice in flight", k);
                    let mut run = vec![o];
                    s.extend_run(k, i64::MAX, |&o| o as i64, 1 + p % 5, &mut run);
                    for w in run.windows(2) {
                        prop_assert!(w[0] < w[1]);
                    }
                    for &o in &run {
                        prop_assert_eq!(keys[o], k);
                    }
                    runs.push((k, run));
                    // The first record starts now.
                    let (k, run) = runs.last_mut().unwrap();
                    let o = run.remove(0);
                    if let Some(prev) = last_started.insert(*k, o) {
                        prop_assert!(prev < o, "key {} started {} after {}", k, o, prev);
                    }
                    ran[o] += 1;
                } else {
                    prop_assert!(!runs.is_empty(), "nothing in flight and nothing may start: records are stuck");
                    let i = p % runs.len();
                    let (k, rest) = &mut runs[i];
                    if !rest.is_empty() && !p.is_multiple_of(4) {
                        // The run goes on with its next record.
                        let o = rest.remove(0);
                        let prev = last_started.insert(*k, o);
                        prop_assert!(prev.is_none_or(|prev| prev < o));
                        ran[o] += 1;
                    } else {
                        // The run ends; what did not start goes back.
                        let (k, rest) = runs.remove(i);
                        s.finish_run(k, rest.into_iter());
                    }
                }
            }
            prop_assert!(ran.iter().all(|&n| n == 1), "each record runs exactly once: {:?}", ran);
        }
    }
}
