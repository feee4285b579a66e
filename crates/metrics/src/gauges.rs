//! Instantaneous values: in-flight records, buffered bytes, active clients and the circuit breaker.
//!
//! Each is one atomic written with `Relaxed` ordering: a gauge is read on its own, so no other memory
//! needs to be ordered with it. The breaker's state and failure count are packed into one `u64` so a
//! snapshot never pairs a new state with an old count.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::{CircuitState, GaugeSnapshot};

/// An integer that goes up and down, shared by every clone of its [`Metrics`](crate::Metrics).
///
/// ```
/// use kafkit_metrics::Metrics;
///
/// let metrics = Metrics::default();
/// metrics.records_in_flight().add(10);
/// metrics.records_in_flight().sub(3);
/// assert_eq!(metrics.records_in_flight().get(), 7);
/// ```
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds `delta` (which may be negative).
    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }

    /// Subtracts `delta`.
    pub fn sub(&self, delta: i64) {
        self.0.fetch_sub(delta, Ordering::Relaxed);
    }

    /// Replaces the value.
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every breaker state, in the order exported.
pub(crate) const CIRCUIT_STATES: [CircuitState; 3] = [
    CircuitState::Closed,
    CircuitState::Open,
    CircuitState::HalfOpen,
];

/// The state's code in the high bits of the packed circuit word. `Closed` is 0, so a zeroed word reads
/// as a closed breaker with no failures.
fn state_code(state: CircuitState) -> u64 {
    match state {
        CircuitState::Closed => 0,
        CircuitState::Open => 1,
        CircuitState::HalfOpen => 2,
    }
}

/// The inverse of [`state_code`]; an unknown code (never written) reads as `Closed`.
fn state_from_code(code: u64) -> CircuitState {
    match code {
        1 => CircuitState::Open,
        2 => CircuitState::HalfOpen,
        _ => CircuitState::Closed,
    }
}

/// Failures are kept in the low 56 bits, the state in the high 8.
const FAILURE_BITS: u32 = 56;
const FAILURE_MASK: u64 = (1 << FAILURE_BITS) - 1;

/// All instantaneous values of one [`Metrics`](crate::Metrics).
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    pub(crate) records_in_flight: Gauge,
    pub(crate) buffered_bytes: Gauge,
    pub(crate) active_producers: Gauge,
    pub(crate) active_consumers: Gauge,
    /// State and consecutive failures, packed so one store updates both.
    circuit: AtomicU64,
}

impl Gauges {
    /// Sets the breaker state and its consecutive failures (saturating at 2^56 - 1) in one store.
    pub(crate) fn set_circuit(&self, state: CircuitState, failures: u64) {
        self.circuit.store(
            state_code(state) << FAILURE_BITS | failures.min(FAILURE_MASK),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn snapshot(&self) -> GaugeSnapshot {
        let circuit = self.circuit.load(Ordering::Relaxed);
        let circuit_state = state_from_code(circuit >> FAILURE_BITS);
        GaugeSnapshot {
            records_in_flight: self.records_in_flight.get(),
            buffered_bytes: self.buffered_bytes.get(),
            active_producers: self.active_producers.get(),
            active_consumers: self.active_consumers.get(),
            circuit_state,
            circuit_failures: circuit & FAILURE_MASK,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_state_and_failures_round_trip() {
        let cases = [
            (CircuitState::Closed, 0, 0),
            (CircuitState::Open, 5, 5),
            (CircuitState::HalfOpen, 1, 1),
            (CircuitState::Open, u64::MAX, FAILURE_MASK),
        ];
        let gauges = Gauges::default();
        assert_eq!(gauges.snapshot().circuit_state, CircuitState::Closed);
        for (state, failures, read) in cases {
            gauges.set_circuit(state, failures);
            let s = gauges.snapshot();
            assert_eq!((s.circuit_state, s.circuit_failures), (state, read));
        }
    }

    #[test]
    fn every_state_has_its_own_code() {
        for state in CIRCUIT_STATES {
            assert_eq!(state_from_code(state_code(state)), state);
        }
        let codes: Vec<_> = CIRCUIT_STATES.into_iter().map(state_code).collect();
        assert_eq!(codes, [0, 1, 2]);
        assert_eq!(state_from_code(3), CircuitState::Closed);
    }

    #[test]
    fn exported_states_use_the_resilience_labels() {
        let labels: Vec<_> = CIRCUIT_STATES.iter().map(|s| s.to_string()).collect();
        assert_eq!(labels, ["closed", "open", "half_open"]);
    }
}
