//! The failure path of one record: attempts under the retry policy, the circuit breaker in front of
//! each attempt, and the dead-letter topic once the record gives up.
//!
//! Runs inside the record's handler task, so a retrying record keeps its key (or partition) busy and
//! nothing else waits for it. [`FailurePath::process`] returns only when the record may be acked:
//! it succeeded, or it was dead-lettered (the produce acknowledged), or the policy says to skip it.
//! Otherwise it keeps the record: **nothing is acked that was neither processed nor safely parked.**
//!
//! Rules applied here:
//! - an attempt waits while the breaker is open (or its probe is out); that wait is not an attempt,
//!   and neither is a retriable failure after which the breaker is not closed (it opened the
//!   breaker, or was a failed probe), so a downstream outage never dead-letters records;
//! - only retriable errors count against the breaker: a poison record says nothing about the downstream;
//! - a dead-letter produce that fails is retried with backoff; the original stays unacked meanwhile;
//! - a record that fails again in a dead-letter topic is not dead-lettered again (no loops): with the
//!   default `Halt` it is kept and retried at the longest backoff, with `Skip` it is acked and logged;
//! - a handler that panics (in its call or while its future runs) failed: the panic is caught around
//!   the attempt ([`catching`]) and becomes a [`HandlerPanic`] error that takes the same path.

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;

use kafkit_metrics::Metrics;
use kafkit_resilience::{
    BreakerRejected, CircuitBreaker, CircuitState, DeadLetterHeaders, DeadLetterPolicy,
    DeadLetterRoute, DltFailureAction, ErrorDescription, GiveUpReason, OriginalRecord,
    RetryDecision, RetryPolicy,
};
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, warn};

use super::dispatcher::{BoxError, HandlerFn};
use super::record::ConsumedRecord;
use crate::{Headers, Producer, ProducerRecord};

/// A handler's error with the name of its type, for the dead-letter headers.
#[derive(Debug)]
pub(crate) struct HandlerError {
    pub(crate) type_name: &'static str,
    pub(crate) source: BoxError,
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.source.fmt(f)
    }
}

impl StdError for HandlerError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.source()
    }
}

impl HandlerError {
    /// Whether the handler panicked (rather than returned an error).
    pub(crate) fn is_panic(&self) -> bool {
        self.source.is::<HandlerPanic>()
    }
}

impl From<HandlerPanic> for HandlerError {
    fn from(panic: HandlerPanic) -> Self {
        Self {
            type_name: HandlerPanic::TYPE_NAME,
            source: Box::new(panic),
        }
    }
}

/// A handler that panicked, as its record's failure path sees it: a handler error like any other
/// (retried, counted by the circuit breaker, dead-lettered), which the retry policy's predicate can
/// tell apart with `error.downcast_ref::<HandlerPanic>()`. Its dead-letter headers name the type
/// [`TYPE_NAME`](Self::TYPE_NAME) and carry the panic's message.
///
/// ```
/// use kafkit_core::consumer::{BoxError, HandlerPanic};
/// use kafkit_resilience::RetryPolicy;
///
/// // Panics are bugs, not outages: give up on them at once (to the dead-letter topic, if any).
/// fn not_a_panic(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
///     !e.is::<HandlerPanic>()
/// }
/// let policy: RetryPolicy = RetryPolicy::default().retriable_if(not_a_panic);
/// let returned: BoxError = "a returned error".into();
/// assert!(policy.is_retriable(&*returned));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerPanic {
    message: String,
}

impl HandlerPanic {
    /// The type name the dead-letter headers give a panic (`kafka_dlt-exception-fqcn`).
    pub const TYPE_NAME: &'static str = "panic";

    /// The panic's message: its payload when that is a string (as `panic!` with a message makes
    /// it), else `Box<dyn Any>`, as the standard library's panic hook says.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn from_payload(payload: Box<dyn Any + Send>) -> Self {
        let message = match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => match payload.downcast_ref::<&'static str>() {
                Some(message) => (*message).to_owned(),
                None => "Box<dyn Any>".to_owned(),
            },
        };
        Self { message }
    }
}

impl fmt::Display for HandlerPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for HandlerPanic {}

/// Calls a handler (`call`) and awaits what it returns, catching a panic in either: the call's
/// synchronous part can panic before there is a future. The one place handler panics are caught,
/// for record and batch handlers alike.
///
/// No allocation and no cost unless it panics: `catch_unwind` wraps each poll in a landing pad.
/// `AssertUnwindSafe`: what the call borrows (the handler, the record) is not left half-changed by
/// it, and state the handler keeps itself is the handler's to guard, as with any task that panics.
pub(crate) async fn catching<F, Fut>(call: F) -> Result<Fut::Output, HandlerPanic>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    AssertUnwindSafe(async move { call().await })
        .catch_unwind()
        .await
        .map_err(HandlerPanic::from_payload)
}

/// Dead-lettering: where to, and the producer that writes there.
#[derive(Clone)]
pub(crate) struct DeadLetter {
    pub(crate) policy: DeadLetterPolicy,
    pub(crate) producer: Producer,
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Retry, breaker and dead-letter settings shared by every record's task.
#[derive(Clone, Debug)]
pub(crate) struct FailurePath {
    pub(crate) retry: RetryPolicy,
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) dead_letter: Option<DeadLetter>,
    pub(crate) group_id: String,
    pub(crate) metrics: Option<Metrics>,
}

impl FailurePath {
    /// Runs `handler` on `record` until it may be acked.
    pub(crate) async fn process(&self, handler: &HandlerFn, record: &ConsumedRecord) {
        self.process_from(handler, record, None).await;
    }

    /// Like [`process`](Self::process), when the first attempt already ran elsewhere (in a batch)
    /// and failed with `first`.
    ///
    /// Every attempt runs in the record's span (`crate::trace::record_span`, the one place it is
    /// made), which is `Span::none()` unless a subscriber wants DEBUG spans of `kafkit::record`.
    pub(crate) async fn process_from(
        &self,
        handler: &HandlerFn,
        record: &ConsumedRecord,
        first: Option<HandlerError>,
    ) {
        self.attempts(handler, record, first)
            .instrument(crate::trace::record_span(record))
            .await;
    }

    async fn attempts(
        &self,
        handler: &HandlerFn,
        record: &ConsumedRecord,
        mut first: Option<HandlerError>,
    ) {
        let mut attempt: u32 = 0;
        let mut parked_delays = self.retry.backoff().start();
        loop {
            attempt += 1;
            let (permit, result) = match first.take() {
                Some(error) => (None, Err(error)),
                None => {
                    let permit = self.admit().await;
                    // The clock is read only when someone keeps the timings.
                    let started = self.metrics.as_ref().map(|_| Instant::now());
                    let result = catching(|| handler(record.clone()))
                        .await
                        .unwrap_or_else(|panic| Err(panic.into()));
                    if let (Some(m), Some(started)) = (&self.metrics, started) {
                        m.record_processed(record.topic(), started.elapsed());
                    }
                    (permit, result)
                }
            };
            let error = match result {
                Ok(()) => {
                    if let Some(p) = permit {
                        p.success();
                    }
                    return;
                }
                Err(e) => e,
            };
            let retriable = self.retry.is_retriable(&*error.source);
            if let Some(p) = permit {
                if retriable {
                    p.failure();
                } else {
                    drop(p);
                }
            }
            if let Some(m) = &self.metrics {
                m.record_failed(record.topic());
            }
            if error.is_panic() {
                warn!(topic = record.topic(), partition = record.partition(), offset = record.offset(), attempt, panic = %error, "handler panicked; it goes through the failure path as a handler error");
                if let Some(m) = &self.metrics {
                    m.record_panicked(record.topic());
                }
            }
            if retriable && self.downstream_down() {
                // The breaker is open (this failure may have opened it) or probing: the downstream is
                // down, not the record. The attempt does not count, or a record that happens to
                // draw the probe a few times in one outage would be dead-lettered for it.
                attempt -= 1;
                debug!(topic = record.topic(), partition = record.partition(), offset = record.offset(), error = %error, "handler failed while the circuit breaker is open; waiting for it");
                if let Some(m) = &self.metrics {
                    m.record_retried(record.topic());
                }
                continue;
            }
            match self.retry.decide(attempt, &*error.source) {
                RetryDecision::RetryAfter(delay) => {
                    warn!(topic = record.topic(), partition = record.partition(), offset = record.offset(), attempt, error = %error, ?delay, "handler failed; retrying");
                    if let Some(m) = &self.metrics {
                        m.record_retried(record.topic());
                    }
                    tokio::time::sleep(delay).await;
                }
                RetryDecision::GiveUp { reason } => {
                    // Boxed: the dead-letter send is a large future on a rare path, and inline it
                    // would make every record's processing future (moved into each lane) as large.
                    if Box::pin(self.give_up(record, &error, attempt, reason)).await {
                        return;
                    }
                    // Kept: try the handler again later, at the policy's longest delay.
                    let delay = parked_delays.next_delay().max(self.retry.backoff().max());
                    error!(
                        topic = record.topic(),
                        partition = record.partition(),
                        offset = record.offset(),
                        ?delay,
                        "record kept unacked; trying it again later"
                    );
                    tokio::time::sleep(delay).await;
                    attempt = 0;
                }
            }
        }
    }

    /// Whether the breaker (if any) is anything but closed.
    fn downstream_down(&self) -> bool {
        self.breaker
            .as_ref()
            .is_some_and(|b| b.state() != CircuitState::Closed)
    }

    /// Waits until the breaker lets an attempt through. Waiting is not an attempt.
    pub(crate) async fn admit(&self) -> Option<kafkit_resilience::BreakerPermit> {
        let breaker = self.breaker.as_ref()?;
        loop {
            match breaker.try_acquire() {
                Ok(permit) => return Some(permit),
                Err(BreakerRejected::Open { retry_in }) => tokio::time::sleep(retry_in).await,
                Err(_) => {
                    // The half-open probe is out: wait for its outcome.
                    let mut changes = breaker.subscribe();
                    let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
                }
            }
        }
    }

    /// The record gave up. Returns true when it may be acked (dead-lettered, or skipped by policy).
    async fn give_up(
        &self,
        record: &ConsumedRecord,
        error: &HandlerError,
        attempts: u32,
        reason: GiveUpReason,
    ) -> bool {
        let Some(dlt) = &self.dead_letter else {
            error!(topic = record.topic(), partition = record.partition(), offset = record.offset(), %reason, error = %error, "record failed and no dead-letter topic is configured; keeping it unacked");
            return false;
        };
        match dlt.policy.route(record.topic(), record.headers().pairs()) {
            DeadLetterRoute::Produce { topic } => {
                self.produce_dead_letter(dlt, &topic, record, error, attempts)
                    .await;
                true
            }
            DeadLetterRoute::Stop {
                reason: why,
                action,
            } => match action {
                DltFailureAction::Skip => {
                    error!(topic = record.topic(), partition = record.partition(), offset = record.offset(), %why, "failed again after dead-lettering; skipped by policy");
                    true
                }
                _ => {
                    error!(topic = record.topic(), partition = record.partition(), offset = record.offset(), %why, "failed again after dead-lettering; halted (kept unacked)");
                    false
                }
            },
            _ => false,
        }
    }

    /// Produces the record to `topic` with the dead-letter headers, retrying until acknowledged.
    async fn produce_dead_letter(
        &self,
        dlt: &DeadLetter,
        topic: &str,
        record: &ConsumedRecord,
        error: &HandlerError,
        attempts: u32,
    ) {
        let original = OriginalRecord {
            topic: record.topic().to_owned(),
            partition: record.partition(),
            offset: record.offset(),
            timestamp: record.timestamp().timestamp_millis(),
            timestamp_type: record.timestamp_type(),
            consumer_group: Some(self.group_id.clone()),
        };
        let description = ErrorDescription::of_dyn(error.type_name, error);
        let headers = DeadLetterHeaders::new(original, description, attempts).encode();
        let mut out = ProducerRecord::new(
            topic,
            record.value().map(<[u8]>::to_vec).unwrap_or_default(),
        );
        if record.value().is_none() {
            out = ProducerRecord::tombstone(topic, record.key().unwrap_or_default().to_vec());
        } else if let Some(key) = record.key() {
            out = out.key(key.to_vec());
        }
        let mut carried = Headers::with_capacity(record.headers().len() + headers.len());
        for header in record.headers() {
            if !DeadLetterHeaders::is_dead_letter_header(&header.name()) {
                carried.push(header.clone());
            }
        }
        for (name, value) in headers {
            carried.add(name, value);
        }
        out = out.with_headers(carried);
        out = out.timestamp(record.timestamp());
        let mut delays = self.retry.backoff().start();
        loop {
            // Same partition as the original when the dead-letter topic has it (Spring's convention).
            let same = match dlt.producer.partition_count(topic).await {
                Ok(n) if record.partition() < n => Some(record.partition()),
                _ => None,
            };
            let attempt = match same {
                Some(p) => out.clone().partition(p),
                None => out.clone(),
            };
            match dlt.producer.send(attempt).await {
                Ok(d) => {
                    info!(from = %format!("{}-{}@{}", record.topic(), record.partition(), record.offset()), to = %format!("{}-{}@{}", d.topic, d.partition, d.offset), attempts, "dead-lettered");
                    if let Some(m) = &self.metrics {
                        m.record_dead_lettered(record.topic());
                    }
                    return;
                }
                Err(e) => {
                    let delay = delays.next_delay();
                    error!(topic, error = %e, ?delay, offset = record.offset(), "dead-letter produce failed; the record stays unacked and is retried");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use kafkit_resilience::{BackoffPolicy, CircuitBreakerPolicy};

    use super::*;
    use crate::wire::records::FetchedRecord;

    fn record() -> ConsumedRecord {
        ConsumedRecord::single(
            "orders".into(),
            0,
            FetchedRecord {
                offset: 7,
                key: None,
                value: Some(bytes::Bytes::from_static(b"v")),
                headers: Headers::new(),
                timestamp_ms: chrono::Utc::now().timestamp_millis(),
                timestamp_type: kafkit_resilience::TimestampType::CreateTime,
            },
        )
    }

    /// Fails with a retriable error until `outage` has passed (tokio's clock), counting calls.
    fn flaky(outage: Duration, calls: Arc<AtomicU32>) -> HandlerFn {
        let until = Instant::now() + outage;
        Arc::new(move |_| {
            calls.fetch_add(1, Ordering::Relaxed);
            let down = Instant::now() < until;
            Box::pin(async move {
                if down {
                    Err(HandlerError {
                        type_name: "io::Error",
                        source: "downstream unavailable".into(),
                    })
                } else {
                    Ok(())
                }
            })
        })
    }

    fn path(breaker: Option<CircuitBreaker>) -> FailurePath {
        // Three attempts 10 ms apart; a record that gives up without a dead-letter topic is kept
        // and tried again only after a minute, which makes giving up visible in the elapsed time.
        let backoff =
            BackoffPolicy::new(Duration::from_millis(10), Duration::from_secs(60), 1.0, 0.0)
                .unwrap();
        FailurePath {
            retry: RetryPolicy::new(3, backoff).unwrap(),
            breaker,
            dead_letter: None,
            group_id: "g".into(),
            metrics: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probes_during_an_outage_do_not_use_up_the_records_attempts() {
        let policy = CircuitBreakerPolicy::new(1, Duration::from_secs(1)).unwrap();
        let breaker = CircuitBreaker::new(policy);
        let calls = Arc::new(AtomicU32::new(0));
        let handler = flaky(Duration::from_secs(10), Arc::clone(&calls));
        let started = Instant::now();
        path(Some(breaker.clone()))
            .process(&handler, &record())
            .await;
        let took = started.elapsed();
        // One probe per reset timeout: about ten failed calls, then the first probe after the
        // outage succeeds. Counting the probes as attempts would have given up after three calls
        // and parked the record for a minute.
        assert!(took < Duration::from_secs(12), "took {took:?}");
        let n = calls.load(Ordering::Relaxed);
        assert!((10..=12).contains(&n), "{n} calls");
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_breaker_the_attempts_run_out_and_the_record_is_kept() {
        let calls = Arc::new(AtomicU32::new(0));
        let handler = flaky(Duration::from_secs(10), Arc::clone(&calls));
        let started = Instant::now();
        path(None).process(&handler, &record()).await;
        // Three attempts, given up, kept; tried again a minute later, when the outage is over.
        assert_eq!(calls.load(Ordering::Relaxed), 4);
        assert!(started.elapsed() >= Duration::from_secs(60));
    }

    #[tokio::test]
    async fn a_panic_in_the_call_or_in_its_future_is_caught_as_a_handler_error() {
        let sync = catching(|| -> std::future::Ready<()> { panic!("in the call") }).await;
        let owned =
            catching(|| async { std::panic::panic_any(format!("in the future {}", 7)) }).await;
        let other = catching(|| async { std::panic::panic_any(42_u8) }).await;
        let fine = catching(|| async { 5 }).await;
        let messages: Vec<_> = [sync, owned, other]
            .into_iter()
            .map(|r| r.unwrap_err().message().to_owned())
            .collect();
        assert_eq!(messages, ["in the call", "in the future 7", "Box<dyn Any>"]);
        assert_eq!(fine, Ok(5));

        // The dead-letter headers name it a panic, with its message.
        let error = HandlerError::from(catching(|| async { panic!("boom") }).await.unwrap_err());
        assert!(error.is_panic());
        let description = ErrorDescription::of_dyn(error.type_name, &error);
        assert_eq!(description.type_name, "panic");
        assert_eq!(description.message.as_deref(), Some("boom"));
        assert_eq!(description.stacktrace, "panic: boom");
        let returned = HandlerError {
            type_name: "io::Error",
            source: "boom".into(),
        };
        assert!(!returned.is_panic());
    }

    /// Every record's processing future is moved into its lane: the rare paths (dead-lettering)
    /// are boxed so it stays small (it was 4,968 bytes with the dead-letter send inline).
    #[test]
    fn the_processing_future_stays_small() {
        let handler: HandlerFn = Arc::new(|_| Box::pin(async { Ok(()) }));
        let (path, record) = (path(None), record());
        let processing = path.process(&handler, &record);
        let size = std::mem::size_of_val(&processing);
        assert!(size <= 1024, "{size} bytes");
    }
}

#[cfg(test)]
mod span_tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use parking_lot::Mutex;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::{Layer, Registry};

    use super::*;
    use crate::Traceparent;
    use crate::wire::records::FetchedRecord;

    /// A span's `target:name` and its fields, as debug strings.
    type SpanFields = (String, BTreeMap<String, String>);

    /// Keeps the fields of every span, by span id, and which span was current when an event fired.
    #[derive(Clone, Default)]
    struct Spans {
        fields: Arc<Mutex<BTreeMap<u64, SpanFields>>>,
        event_parents: Arc<Mutex<Vec<Option<u64>>>>,
    }

    struct Fields<'a>(&'a mut BTreeMap<String, String>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
    }

    impl<S> Layer<S> for Spans
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
            let mut fields = BTreeMap::new();
            attrs.record(&mut Fields(&mut fields));
            let name = format!("{}:{}", attrs.metadata().target(), attrs.metadata().name());
            self.fields.lock().insert(id.into_u64(), (name, fields));
        }

        fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
            if let Some((_, fields)) = self.fields.lock().get_mut(&id.into_u64()) {
                values.record(&mut Fields(fields));
            }
        }

        fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
            let parent = ctx.event_span(event).map(|s| s.id().into_u64());
            self.event_parents.lock().push(parent);
        }
    }

    fn record(key: Option<&'static [u8]>, headers: Headers) -> ConsumedRecord {
        ConsumedRecord::single(
            "orders".into(),
            3,
            FetchedRecord {
                offset: 42,
                key: key.map(bytes::Bytes::from_static),
                value: Some(bytes::Bytes::from_static(b"v")),
                headers,
                timestamp_ms: chrono::Utc::now().timestamp_millis(),
                timestamp_type: kafkit_resilience::TimestampType::CreateTime,
            },
        )
    }

    fn path() -> FailurePath {
        FailurePath {
            retry: RetryPolicy::default(),
            breaker: None,
            dead_letter: None,
            group_id: "g".into(),
            metrics: None,
        }
    }

    /// The handler logs one event; returns the spans seen and the span each event was in.
    async fn process_with(
        level: tracing::Level,
        record: &ConsumedRecord,
    ) -> (Vec<SpanFields>, Vec<Option<u64>>) {
        let spans = Spans::default();
        let subscriber = Registry::default()
            .with(spans.clone())
            .with(tracing_subscriber::filter::LevelFilter::from_level(level));
        let _guard = tracing::subscriber::set_default(subscriber);
        // The callsites' cached interest was computed for whatever subscriber ran before.
        tracing::callsite::rebuild_interest_cache();
        let handler: HandlerFn = Arc::new(|_| {
            Box::pin(async {
                tracing::info!("in the handler");
                Ok(())
            })
        });
        path().process(&handler, record).await;
        let fields = spans.fields.lock().values().cloned().collect();
        let parents = spans.event_parents.lock().clone();
        (fields, parents)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_debug_subscriber_sees_the_records_span_around_the_handler() {
        let tp: Traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap();
        let mut headers = Headers::new();
        headers.set_traceparent(tp);
        let traced = record(Some(b"customer-42"), headers);
        assert_eq!(traced.traceparent(), Some(tp));
        let (spans, parents) = process_with(tracing::Level::DEBUG, &traced).await;
        assert_eq!(spans.len(), 1, "{spans:?}");
        let (name, fields) = &spans[0];
        assert_eq!(name, "kafkit::record:kafkit.record");
        let expected = [
            ("topic", "\"orders\""),
            ("partition", "3"),
            ("offset", "42"),
            ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("parent_span_id", "00f067aa0ba902b7"),
            ("sampled", "true"),
        ];
        for (field, value) in expected {
            assert_eq!(
                fields.get(field).map(String::as_str),
                Some(value),
                "{field}: {fields:?}"
            );
        }
        let hash = crate::partitioner::murmur2(b"customer-42").to_string();
        assert_eq!(fields.get("key_hash"), Some(&hash));
        // The handler's event happened inside the span.
        assert_eq!(parents.len(), 1);
        assert!(
            parents[0].is_some(),
            "the handler ran outside the record's span"
        );

        // No key, an invalid traceparent: the span has neither key hash nor trace fields.
        let mut headers = Headers::new();
        headers.add("traceparent", "00-zz");
        let (spans, _) = process_with(tracing::Level::DEBUG, &record(None, headers)).await;
        let (_, fields) = &spans[0];
        for absent in ["key_hash", "trace_id", "parent_span_id", "sampled"] {
            assert!(!fields.contains_key(absent), "{absent}: {fields:?}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn without_debug_no_span_is_made() {
        let (spans, parents) =
            process_with(tracing::Level::INFO, &record(Some(b"k"), Headers::new())).await;
        assert!(spans.is_empty(), "{spans:?}");
        assert_eq!(parents, vec![None]);
    }
}
