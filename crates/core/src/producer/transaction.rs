//! Transactions (KIP-98, KIP-447, KIP-890): the state machine of a transactional producer, in one
//! place, and the requests to the transaction and group coordinators.
//!
//! ```text
//!  Uninitialized ─init─► Ready ─begin─► InTransaction ─commit─► Committing ─EndTxn─► Ready
//!                          ▲                │  │                     │
//!                          │                │  └─abort─► Aborting ─EndTxn──────────► Ready
//!                          │                ▼                ▲
//!                          │          AbortableError ─abort──┘
//!  any state ── PRODUCER_FENCED, INVALID_PRODUCER_EPOCH, TRANSACTIONAL_ID_AUTHORIZATION_FAILED ──► Fatal
//! ```
//!
//! Invariants, each enforced where named:
//! - Records are appended only in `InTransaction` ([`Transactions::check_send`], called by
//!   `Producer::send` before it appends), so every record belongs to the open transaction.
//! - Under transaction version 1 no batch of a partition is sent before AddPartitionsToTxn added
//!   the partition (the accumulator gates it; the router adds it); under version 2 Produce v12
//!   adds it and EndTxn v5 bumps the epoch (the coordinator hands back the new one).
//! - A commit sends EndTxn only after every record of the transaction was acknowledged, and only
//!   if none failed ([`Transactions::commit`]); a failed record makes the transaction abortable.
//! - An abort drops the records not yet sent and waits for those in flight before EndTxn
//!   ([`Transactions::abort`]); a dropped record that had a sequence gives the next transaction a
//!   new epoch (version 1; version 2 bumps at every end anyway).
//! - `Fatal` is terminal: every later call returns the fatal error.
//! - A call that runs out of `max.block.ms` leaves the state as it was, so the same call may be
//!   made again (Java's `TimeoutException`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, GroupId,
    InitProducerIdRequest, ProduceRequest, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafkit_resilience::BackoffPolicy;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::accumulator::ProducerIdEpoch;
use super::sender::Shared;
use crate::group::{ConsumerGroupMetadata, Coordinator, TopicPartition};
use crate::wire::ApiRequest;
use crate::{ClientConfig, Error, Result, TransactionErrorKind};

/// The transaction state. Written only through [`Machine`]'s methods.
#[derive(Debug, Clone)]
enum State {
    Uninitialized,
    Ready,
    InTransaction,
    Committing,
    Aborting,
    /// The transaction cannot commit; `abort_transaction` leads back to `Ready`.
    AbortableError(Error),
    /// The producer is unusable.
    Fatal(Error),
}

/// A call on the transactional producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Init,
    Begin,
    Send,
    SendOffsets,
    Commit,
    Abort,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Init => "init_transactions",
            Op::Begin => "begin_transaction",
            Op::Send => "send",
            Op::SendOffsets => "send_offsets_to_transaction",
            Op::Commit => "commit_transaction",
            Op::Abort => "abort_transaction",
        }
    }
}

/// The state machine: which call is allowed in which state, and where it leads. Pure logic.
#[derive(Debug)]
struct Machine {
    id: String,
    state: State,
    /// The coordinator knows of the open transaction (a partition or the offsets were added,
    /// explicitly under version 1, by a record appended under version 2): EndTxn is needed.
    started: bool,
}

impl Machine {
    fn new(id: String) -> Self {
        Self {
            id,
            state: State::Uninitialized,
            started: false,
        }
    }

    fn error(&self, op: Op, kind: TransactionErrorKind, reason: impl Into<String>) -> Error {
        Error::Transaction {
            transactional_id: self.id.clone(),
            operation: op.name(),
            kind,
            reason: reason.into(),
        }
    }

    /// Checks that `op` may start, and enters the state it runs in (`begin` opens the
    /// transaction, `commit` / `abort` enter `Committing` / `Aborting`; repeating a commit or an
    /// abort that timed out is allowed).
    fn start(&mut self, op: Op) -> Result<()> {
        let invalid = |state: &str| {
            self.error(
                op,
                TransactionErrorKind::InvalidState,
                format!("the producer is {state}"),
            )
        };
        let next = match (&self.state, op) {
            (State::Fatal(e), _) => return Err(e.clone()),
            (State::Uninitialized, Op::Init) => State::Uninitialized,
            (State::Uninitialized, _) => {
                return Err(invalid("not initialized (call init_transactions first)"));
            }
            (_, Op::Init) => return Err(invalid("already initialized")),
            (State::Ready, Op::Begin) => {
                self.started = false;
                State::InTransaction
            }
            (State::Ready, _) => {
                return Err(invalid("not in a transaction (call begin_transaction)"));
            }
            (State::InTransaction, Op::Send | Op::SendOffsets) => State::InTransaction,
            (State::InTransaction | State::Committing, Op::Commit) => State::Committing,
            (State::InTransaction | State::AbortableError(_) | State::Aborting, Op::Abort) => {
                State::Aborting
            }
            (State::AbortableError(e), _) => return Err(e.clone()),
            (State::InTransaction, Op::Begin) => {
                return Err(invalid("already in a transaction"));
            }
            (State::Committing, _) => {
                return Err(invalid("committing (repeat commit_transaction)"));
            }
            (State::Aborting, _) => return Err(invalid("aborting (repeat abort_transaction)")),
        };
        self.state = next;
        Ok(())
    }

    /// `Init` finished, or the transaction ended: ready for the next.
    fn ready(&mut self) {
        if !matches!(self.state, State::Fatal(_)) {
            self.state = State::Ready;
            self.started = false;
        }
    }

    /// A call failed with `error`: fenced and fatal errors end the producer, abortable ones the
    /// transaction; a timeout or a wrong-state error changes nothing.
    fn failed(&mut self, error: &Error) {
        match error.transaction_kind() {
            Some(TransactionErrorKind::Fenced | TransactionErrorKind::Fatal) => {
                self.state = State::Fatal(error.clone());
            }
            Some(TransactionErrorKind::Abortable) | None
                if !matches!(self.state, State::Fatal(_) | State::Uninitialized) =>
            {
                self.state = State::AbortableError(error.clone());
            }
            _ => {}
        }
    }
}

/// What to do with a coordinator's error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Done,
    /// Retry after backoff (CONCURRENT_TRANSACTIONS, COORDINATOR_LOAD_IN_PROGRESS, ...).
    Retry,
    /// Find the coordinator again, then retry.
    Rediscover,
    Fail(TransactionErrorKind),
}

/// The Java client's handling of a transactional request's error code (TransactionManager's
/// handlers): fencing is fatal, coordinator moves and loads are retried, a refused offset commit
/// or a topic the producer may not write aborts the transaction, anything unexpected is fatal.
fn verdict(code: i16) -> Verdict {
    use ResponseError as E;
    if code == 0 {
        return Verdict::Done;
    }
    match ResponseError::try_from_code(code) {
        Some(E::NotCoordinator | E::CoordinatorNotAvailable | E::RequestTimedOut) => {
            Verdict::Rediscover
        }
        Some(
            E::ConcurrentTransactions
            | E::CoordinatorLoadInProgress
            | E::UnknownTopicOrPartition
            | E::OperationNotAttempted
            | E::RebalanceInProgress,
        ) => Verdict::Retry,
        Some(E::ProducerFenced | E::InvalidProducerEpoch) => {
            Verdict::Fail(TransactionErrorKind::Fenced)
        }
        Some(
            E::TransactionAbortable
            | E::TopicAuthorizationFailed
            | E::GroupAuthorizationFailed
            | E::UnknownMemberId
            | E::IllegalGeneration
            | E::FencedInstanceId
            | E::StaleMemberEpoch
            | E::UnsupportedForMessageFormat,
        ) => Verdict::Fail(TransactionErrorKind::Abortable),
        _ => Verdict::Fail(TransactionErrorKind::Fatal),
    }
}

/// A request's outcome code: the top-level code, else the first partition's error.
fn first_error(top: i16, partitions: impl IntoIterator<Item = i16>) -> i16 {
    if top != 0 {
        return top;
    }
    let mut attempted = 0;
    for code in partitions {
        // OPERATION_NOT_ATTEMPTED only says another partition failed: report that one.
        if code == ResponseError::OperationNotAttempted.code() {
            attempted = code;
        } else if code != 0 {
            return code;
        }
    }
    attempted
}

/// Settings of the transactional side.
#[derive(Debug, Clone)]
pub(super) struct TxnSettings {
    /// `transactional.id`.
    pub(super) id: String,
    /// `transaction.timeout.ms`.
    pub(super) timeout: Duration,
    /// `max.block.ms`: the bound on each call.
    pub(super) max_block: Duration,
    /// `request.timeout.ms`.
    pub(super) request_timeout: Duration,
    /// Backoff between retries of a coordinator request.
    pub(super) backoff: BackoffPolicy,
}

/// A transactional producer's transaction manager: the state machine, the transaction
/// coordinator, and the group coordinators offsets are committed to.
#[derive(Debug)]
pub(super) struct Transactions {
    settings: TxnSettings,
    client: ClientConfig,
    coordinator: Coordinator,
    /// Group id -> its coordinator, for TxnOffsetCommit. parking_lot Mutex: only to clone out.
    groups: parking_lot::Mutex<HashMap<String, Arc<Coordinator>>>,
    /// parking_lot Mutex: `send` checks it synchronously; never held across an await.
    machine: parking_lot::Mutex<Machine>,
    /// Transaction version 2 (KIP-890) in use; set by `init`.
    tv2: std::sync::atomic::AtomicBool,
    /// One call at a time (init, begin, send_offsets, commit, abort), as in the Java client.
    calls: tokio::sync::Mutex<()>,
}

impl Transactions {
    pub(super) fn new(settings: TxnSettings, client: &ClientConfig) -> Self {
        Self {
            coordinator: Coordinator::for_transaction(
                settings.id.clone(),
                client,
                settings.request_timeout,
            ),
            machine: parking_lot::Mutex::new(Machine::new(settings.id.clone())),
            client: client.clone(),
            groups: parking_lot::Mutex::new(HashMap::new()),
            tv2: std::sync::atomic::AtomicBool::new(false),
            calls: tokio::sync::Mutex::new(()),
            settings,
        }
    }

    /// The `transactional.id`.
    pub(super) fn id(&self) -> &str {
        &self.settings.id
    }

    fn tv2(&self) -> bool {
        self.tv2.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether a record may be sent now (the open transaction takes it).
    pub(super) fn check_send(&self) -> Result<()> {
        self.machine.lock().start(Op::Send)
    }

    /// A record was appended to the open transaction: under version 2 its ProduceRequest adds
    /// the partition, so the coordinator will know of the transaction.
    pub(super) fn note_appended(&self) {
        if self.tv2() {
            self.machine.lock().started = true;
        }
    }

    /// The coordinator added a partition or a group to the open transaction.
    fn note_added(&self) {
        self.machine.lock().started = true;
    }

    /// A failure outside a call (a partition that could not be added): ends the transaction or
    /// the producer as its kind says.
    pub(super) fn record_failure(&self, error: &Error) {
        self.machine.lock().failed(error);
    }

    fn start(&self, op: Op) -> Result<()> {
        self.machine.lock().start(op)
    }

    /// Runs a call's body; its failure moves the state machine.
    async fn run<T>(&self, body: impl Future<Output = Result<T>>) -> Result<T> {
        let result = body.await;
        if let Err(error) = &result {
            self.machine.lock().failed(error);
        }
        result
    }

    fn error(&self, operation: &'static str, kind: TransactionErrorKind, reason: String) -> Error {
        Error::Transaction {
            transactional_id: self.settings.id.clone(),
            operation,
            kind,
            reason,
        }
    }

    /// Sends `request` to `coordinator` until its code (from `code_of`) says done or fails, up to
    /// `deadline`: connection failures and CONCURRENT_TRANSACTIONS-like codes are retried with
    /// backoff, NOT_COORDINATOR looks the coordinator up again.
    async fn call<R: ApiRequest>(
        &self,
        coordinator: &Coordinator,
        operation: &'static str,
        max_version: i16,
        request: &R,
        deadline: Instant,
        code_of: impl Fn(&R::Response) -> i16,
    ) -> Result<(Arc<crate::wire::Connection>, R::Response)> {
        let mut backoff = self.settings.backoff.start();
        let timeout = self.settings.request_timeout;
        loop {
            let last = match coordinator
                .send_at_most(request, max_version, timeout, deadline)
                .await
            {
                Ok((conn, response)) => {
                    let code = code_of(&response);
                    let reason = || match ResponseError::try_from_code(code) {
                        Some(e) => format!("{e:?} (error code {code})"),
                        None => format!("error code {code}"),
                    };
                    match verdict(code) {
                        Verdict::Done => return Ok((conn, response)),
                        Verdict::Fail(kind) => return Err(self.error(operation, kind, reason())),
                        Verdict::Rediscover => {
                            coordinator.invalidate(&conn);
                            reason()
                        }
                        Verdict::Retry => reason(),
                    }
                }
                Err(e) if e.is_retriable() => e.to_string(),
                Err(e @ Error::Transaction { .. }) => return Err(e),
                Err(e) => {
                    return Err(self.error(operation, TransactionErrorKind::Fatal, e.to_string()));
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.error(
                    operation,
                    TransactionErrorKind::Timeout,
                    format!(
                        "not done within max.block.ms ({:?}); last: {last}",
                        self.settings.max_block
                    ),
                ));
            }
            debug!(transactional_id = %self.settings.id, operation, reason = %last, "retrying");
            tokio::time::sleep(backoff.next_delay().min(left)).await;
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.settings.max_block
    }

    /// InitProducerId with the transactional id: fences earlier producers of the id (their open
    /// transaction is aborted) and gives this one its producer id and epoch. `current` asks for
    /// the next epoch of it instead (KIP-360, after an abort that left a sequence gap).
    async fn init_producer_id(
        &self,
        current: Option<ProducerIdEpoch>,
        deadline: Instant,
    ) -> Result<(Arc<crate::wire::Connection>, ProducerIdEpoch)> {
        let timeout_ms = i32::try_from(self.settings.timeout.as_millis()).unwrap_or(i32::MAX);
        let request = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_string(
                self.settings.id.clone(),
            ))))
            .with_transaction_timeout_ms(timeout_ms)
            .with_producer_id(ProducerId(current.map_or(-1, |p| p.id)))
            .with_producer_epoch(current.map_or(-1, |p| p.epoch));
        let (conn, response) = self
            .call(
                &self.coordinator,
                "InitProducerId",
                InitProducerIdRequest::MAX_VERSION,
                &request,
                deadline,
                |r| r.error_code,
            )
            .await?;
        Ok((
            conn,
            ProducerIdEpoch {
                id: response.producer_id.0,
                epoch: response.producer_epoch,
            },
        ))
    }

    /// `init_transactions`: the producer id, and whether transaction version 2 is in use (the
    /// coordinator's broker finalizes `transaction.version` >= 2 and speaks EndTxn v5 and Produce
    /// v12).
    pub(super) async fn init(&self, shared: &Shared) -> Result<()> {
        let _call = self.calls.lock().await;
        self.start(Op::Init)?;
        self.run(async {
            let (conn, producer) = self.init_producer_id(None, self.deadline()).await?;
            let tv2 = conn.feature_level("transaction.version") >= 2
                && conn.version_for::<EndTxnRequest>().is_ok_and(|v| v >= 5)
                && conn.version_for::<ProduceRequest>().is_ok_and(|v| v >= 12);
            self.tv2.store(tv2, std::sync::atomic::Ordering::Release);
            shared.set_transaction_version(tv2);
            {
                let mut acc = shared.acc.lock();
                acc.set_implicit_add(tv2);
                acc.set_producer(producer);
            }
            shared.wake_all();
            info!(transactional_id = %self.settings.id, producer_id = producer.id, epoch = producer.epoch,
                transaction_version = if tv2 { 2 } else { 1 }, "transactional producer initialized");
            self.machine.lock().ready();
            Ok(())
        })
        .await
    }

    /// `begin_transaction`: local only, as in Java (the coordinator learns of the transaction
    /// with its first partition or offsets).
    pub(super) async fn begin(&self) -> Result<()> {
        let _call = self.calls.lock().await;
        self.start(Op::Begin)
    }

    /// AddPartitionsToTxn for `tps` (transaction version 1), sent by the router before their
    /// first batches.
    pub(super) async fn add_partitions(
        &self,
        shared: &Shared,
        tps: &[TopicPartition],
    ) -> Result<()> {
        let Some(producer) = shared.acc.lock().producer() else {
            return Ok(());
        };
        let mut topics: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
        for tp in tps {
            topics.entry(&tp.topic).or_default().push(tp.partition);
        }
        let request = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(
                self.settings.id.clone(),
            )))
            .with_v3_and_below_producer_id(ProducerId(producer.id))
            .with_v3_and_below_producer_epoch(producer.epoch)
            .with_v3_and_below_topics(
                topics
                    .into_iter()
                    .map(|(name, partitions)| {
                        AddPartitionsToTxnTopic::default()
                            .with_name(TopicName(StrBytes::from_string(name.to_owned())))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        // One attempt per router pass: the router retries with its backoff.
        let result = self
            .call(
                &self.coordinator,
                "AddPartitionsToTxn",
                AddPartitionsToTxnRequest::MAX_VERSION,
                &request,
                Instant::now(),
                |r| {
                    first_error(
                        r.error_code,
                        r.results_by_topic_v3_and_below.iter().flat_map(|t| {
                            t.results_by_partition
                                .iter()
                                .map(|p| p.partition_error_code)
                        }),
                    )
                },
            )
            .await;
        match result {
            Ok(_) => {
                self.note_added();
                debug!(transactional_id = %self.settings.id, partitions = ?tps, "partitions added to the transaction");
                Ok(())
            }
            Err(error) => {
                if !error.is_retriable() {
                    self.record_failure(&error);
                }
                Err(error)
            }
        }
    }

    /// `send_offsets_to_transaction`: AddOffsetsToTxn (version 1 only), then TxnOffsetCommit to
    /// the group's coordinator with the member's generation and id, which the coordinator checks
    /// (KIP-447). The offsets count only if the transaction commits.
    pub(super) async fn send_offsets(
        &self,
        shared: &Shared,
        offsets: &[(TopicPartition, i64)],
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        let _call = self.calls.lock().await;
        self.start(Op::SendOffsets)?;
        if offsets.is_empty() {
            return Ok(());
        }
        self.run(async {
            let deadline = self.deadline();
            let producer = shared.acc.lock().producer().ok_or_else(|| {
                self.error(
                    "send_offsets_to_transaction",
                    TransactionErrorKind::InvalidState,
                    "no producer id".into(),
                )
            })?;
            let tv2 = self.tv2();
            let id = TransactionalId(StrBytes::from_string(self.settings.id.clone()));
            let group_id = GroupId(StrBytes::from_string(group.group_id.clone()));
            if !tv2 {
                let request = AddOffsetsToTxnRequest::default()
                    .with_transactional_id(id.clone())
                    .with_producer_id(ProducerId(producer.id))
                    .with_producer_epoch(producer.epoch)
                    .with_group_id(group_id.clone());
                self.call(
                    &self.coordinator,
                    "AddOffsetsToTxn",
                    AddOffsetsToTxnRequest::MAX_VERSION,
                    &request,
                    deadline,
                    |r| r.error_code,
                )
                .await?;
                self.note_added();
            }
            let mut topics: std::collections::BTreeMap<&str, Vec<TxnOffsetCommitRequestPartition>> =
                Default::default();
            for (tp, offset) in offsets {
                topics.entry(&tp.topic).or_default().push(
                    TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(tp.partition)
                        .with_committed_offset(*offset)
                        .with_committed_leader_epoch(-1),
                );
            }
            let request = TxnOffsetCommitRequest::default()
                .with_transactional_id(id)
                .with_group_id(group_id)
                .with_producer_id(ProducerId(producer.id))
                .with_producer_epoch(producer.epoch)
                .with_generation_id(group.generation_id)
                .with_member_id(StrBytes::from_string(group.member_id.clone()))
                .with_group_instance_id(group.group_instance_id.clone().map(StrBytes::from_string))
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(name, partitions)| {
                            TxnOffsetCommitRequestTopic::default()
                                .with_name(TopicName(StrBytes::from_string(name.to_owned())))
                                .with_partitions(partitions)
                        })
                        .collect(),
                );
            let coordinator = self.group_coordinator(&group.group_id);
            self.call(
                &coordinator,
                "TxnOffsetCommit",
                if tv2 { 5 } else { 4 },
                &request,
                deadline,
                |r| {
                    first_error(
                        0,
                        r.topics
                            .iter()
                            .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
                    )
                },
            )
            .await?;
            // Under version 2 the commit itself added the group.
            self.note_added();
            debug!(transactional_id = %self.settings.id, group = %group.group_id,
                generation = group.generation_id, partitions = offsets.len(), "offsets added to the transaction");
            Ok(())
        })
        .await
    }

    fn group_coordinator(&self, group: &str) -> Arc<Coordinator> {
        Arc::clone(
            self.groups
                .lock()
                .entry(group.to_owned())
                .or_insert_with(|| {
                    Arc::new(Coordinator::new(
                        group.to_owned(),
                        &self.client,
                        self.settings.request_timeout,
                    ))
                }),
        )
    }

    /// `commit_transaction`: every record sent (a flush), none failed, then EndTxn(commit).
    pub(super) async fn commit(&self, shared: &Shared) -> Result<()> {
        let _call = self.calls.lock().await;
        self.start(Op::Commit)?;
        self.run(async {
            let deadline = self.deadline();
            self.drained(shared, deadline, "commit_transaction").await?;
            if let Some(failure) = shared.acc.lock().take_txn_failure() {
                return Err(match failure.transaction_kind() {
                    Some(_) => failure,
                    None => self.error(
                        "commit_transaction",
                        TransactionErrorKind::Abortable,
                        format!("a record of the transaction was not written: {failure}"),
                    ),
                });
            }
            self.end(shared, true, deadline).await
        })
        .await
    }

    /// `abort_transaction`: records not yet sent fail, those in flight are waited for, then
    /// EndTxn(abort).
    pub(super) async fn abort(&self, shared: &Shared) -> Result<()> {
        let _call = self.calls.lock().await;
        self.start(Op::Abort)?;
        self.run(async {
            let deadline = self.deadline();
            let aborted = self.error(
                "send",
                TransactionErrorKind::Abortable,
                "the transaction was aborted before the record was sent".into(),
            );
            shared.acc.lock().abort_unsent(&aborted);
            self.drained(shared, deadline, "abort_transaction").await?;
            if let Some(failure) = shared.acc.lock().take_txn_failure()
                && matches!(
                    failure.transaction_kind(),
                    Some(TransactionErrorKind::Fenced | TransactionErrorKind::Fatal)
                )
            {
                return Err(failure);
            }
            self.end(shared, false, deadline).await
        })
        .await
    }

    /// Waits until every batch appended so far is finished, up to `deadline`.
    async fn drained(
        &self,
        shared: &Shared,
        deadline: Instant,
        operation: &'static str,
    ) -> Result<()> {
        let until = shared.acc.lock().flush();
        shared.wake_all();
        tokio::time::timeout_at(deadline, shared.finished(until))
            .await
            .map_err(|_| {
                self.error(
                    operation,
                    TransactionErrorKind::Timeout,
                    format!(
                        "records still unacknowledged after max.block.ms ({:?})",
                        self.settings.max_block
                    ),
                )
            })
    }

    /// EndTxn (when the coordinator knows of the transaction), the epoch that follows, and back
    /// to `Ready`.
    async fn end(&self, shared: &Shared, commit: bool, deadline: Instant) -> Result<()> {
        let started = self.machine.lock().started;
        let tv2 = self.tv2();
        let producer = shared.acc.lock().producer();
        if let (true, Some(producer)) = (started, producer) {
            let request = EndTxnRequest::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(
                    self.settings.id.clone(),
                )))
                .with_producer_id(ProducerId(producer.id))
                .with_producer_epoch(producer.epoch)
                .with_committed(commit);
            let (_, response) = self
                .call(
                    &self.coordinator,
                    "EndTxn",
                    if tv2 { 5 } else { 4 },
                    &request,
                    deadline,
                    |r| r.error_code,
                )
                .await?;
            if tv2 {
                // Version 2 bumps the epoch at every end (a new id once the epoch runs out).
                let next = ProducerIdEpoch {
                    id: response.producer_id.0,
                    epoch: response.producer_epoch,
                };
                shared.acc.lock().set_producer(next);
            }
        }
        let gap = shared.acc.lock().end_transaction();
        if gap && !tv2 {
            // A dropped or failed batch left a sequence gap: the next transaction needs a new epoch.
            let (_, next) = self.init_producer_id(producer, deadline).await?;
            warn!(transactional_id = %self.settings.id, previous = ?producer, epoch = next.epoch, "producer epoch bumped after a failed transaction");
            shared.acc.lock().set_producer(next);
        }
        shared.wake_all();
        info!(transactional_id = %self.settings.id, outcome = if commit { "committed" } else { "aborted" }, started, "transaction ended");
        self.machine.lock().ready();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(result: Result<()>) -> Option<TransactionErrorKind> {
        result.err().and_then(|e| e.transaction_kind())
    }

    fn machine_in(ops: &[Op]) -> Machine {
        let mut m = Machine::new("t".into());
        for &op in ops {
            m.start(op).unwrap();
            if matches!(op, Op::Init | Op::Commit | Op::Abort) {
                m.ready();
            }
        }
        m
    }

    #[test]
    fn calls_are_allowed_only_in_their_states() {
        use TransactionErrorKind::InvalidState;
        // (calls made before, the call, its outcome)
        let table: &[(&[Op], Op, Option<TransactionErrorKind>)] = &[
            (&[], Op::Begin, Some(InvalidState)),
            (&[], Op::Send, Some(InvalidState)),
            (&[], Op::Init, None),
            (&[Op::Init], Op::Init, Some(InvalidState)),
            (&[Op::Init], Op::Send, Some(InvalidState)),
            (&[Op::Init], Op::Commit, Some(InvalidState)),
            (&[Op::Init], Op::Abort, Some(InvalidState)),
            (&[Op::Init], Op::Begin, None),
            (&[Op::Init, Op::Begin], Op::Begin, Some(InvalidState)),
            (&[Op::Init, Op::Begin], Op::Send, None),
            (&[Op::Init, Op::Begin], Op::SendOffsets, None),
            (&[Op::Init, Op::Begin], Op::Commit, None),
            (&[Op::Init, Op::Begin], Op::Abort, None),
            (
                &[Op::Init, Op::Begin, Op::Commit],
                Op::Send,
                Some(InvalidState),
            ),
            (&[Op::Init, Op::Begin, Op::Commit], Op::Begin, None),
            (&[Op::Init, Op::Begin, Op::Abort], Op::Begin, None),
        ];
        for (before, op, expected) in table {
            let mut m = machine_in(before);
            assert_eq!(kind(m.start(*op)), *expected, "{op:?} after {before:?}");
        }
    }

    #[test]
    fn an_end_that_timed_out_may_be_repeated_and_nothing_else_runs_meanwhile() {
        let mut m = machine_in(&[Op::Init, Op::Begin]);
        m.start(Op::Commit).unwrap();
        let timeout = m.error(Op::Commit, TransactionErrorKind::Timeout, "slow");
        m.failed(&timeout);
        assert_eq!(
            kind(m.start(Op::Send)),
            Some(TransactionErrorKind::InvalidState)
        );
        assert_eq!(kind(m.start(Op::Commit)), None);
        let mut m = machine_in(&[Op::Init, Op::Begin]);
        m.start(Op::Abort).unwrap();
        m.failed(&timeout);
        assert_eq!(kind(m.start(Op::Abort)), None);
        assert_eq!(
            kind(m.start(Op::Commit)),
            Some(TransactionErrorKind::InvalidState)
        );
    }

    #[test]
    fn an_abortable_error_allows_only_abort_and_the_abort_leads_back_to_ready() {
        let mut m = machine_in(&[Op::Init, Op::Begin]);
        let error = m.error(Op::Send, TransactionErrorKind::Abortable, "record lost");
        m.failed(&error);
        for op in [Op::Send, Op::SendOffsets, Op::Commit, Op::Begin] {
            assert_eq!(
                kind(m.start(op)),
                Some(TransactionErrorKind::Abortable),
                "{op:?}"
            );
        }
        m.start(Op::Abort).unwrap();
        m.ready();
        assert_eq!(kind(m.start(Op::Begin)), None);
    }

    #[test]
    fn fencing_is_terminal() {
        let mut m = machine_in(&[Op::Init, Op::Begin]);
        let fenced = m.error(Op::Commit, TransactionErrorKind::Fenced, "PRODUCER_FENCED");
        m.failed(&fenced);
        m.ready();
        for op in [Op::Send, Op::Commit, Op::Abort, Op::Begin, Op::Init] {
            assert_eq!(
                kind(m.start(op)),
                Some(TransactionErrorKind::Fenced),
                "{op:?}"
            );
        }
        // A later abortable failure does not revive it.
        m.failed(&m.error(Op::Send, TransactionErrorKind::Abortable, "x"));
        assert_eq!(kind(m.start(Op::Abort)), Some(TransactionErrorKind::Fenced));
    }

    #[test]
    fn coordinator_codes_map_as_the_java_client_maps_them() {
        use TransactionErrorKind::*;
        let table = [
            (0, Verdict::Done),
            (51, Verdict::Retry),            // CONCURRENT_TRANSACTIONS
            (14, Verdict::Retry),            // COORDINATOR_LOAD_IN_PROGRESS
            (16, Verdict::Rediscover),       // NOT_COORDINATOR
            (15, Verdict::Rediscover),       // COORDINATOR_NOT_AVAILABLE
            (90, Verdict::Fail(Fenced)),     // PRODUCER_FENCED
            (47, Verdict::Fail(Fenced)),     // INVALID_PRODUCER_EPOCH
            (53, Verdict::Fail(Fatal)),      // TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            (48, Verdict::Fail(Fatal)),      // INVALID_TXN_STATE
            (22, Verdict::Fail(Abortable)),  // ILLEGAL_GENERATION
            (25, Verdict::Fail(Abortable)),  // UNKNOWN_MEMBER_ID
            (120, Verdict::Fail(Abortable)), // TRANSACTION_ABORTABLE
        ];
        for (code, expected) in table {
            assert_eq!(verdict(code), expected, "code {code}");
        }
        assert_eq!(first_error(0, [0, 55, 22]), 22);
        assert_eq!(first_error(0, [55, 0]), 55);
        assert_eq!(first_error(16, [22]), 16);
        assert_eq!(first_error(0, [0, 0]), 0);
    }
}
