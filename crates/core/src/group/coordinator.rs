//! The way to a group's coordinator (or a transactional id's): found with FindCoordinator through
//! any bootstrap broker, found again when the coordinator moves (NOT_COORDINATOR) or its
//! connection breaks.

use crate::ClientConfig;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::protocol::StrBytes;
use kafkit_resilience::BackoffPolicy;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::group::TopicPartition;
use crate::wire::{ApiRequest, Connection, WireError, metadata_request};
use crate::{Error, Result};

/// Finds and holds the connection to one group's coordinator, and a connection to any broker for
/// cluster-wide requests (FindCoordinator, Metadata).
#[derive(Debug)]
pub(crate) struct Coordinator {
    /// The group id, or the transactional id (`key_type` 1).
    group: String,
    /// FindCoordinator's key type: 0 a group, 1 a transactional id.
    key_type: i8,
    bootstrap: Vec<String>,
    /// How to connect: client id and security.
    client: ClientConfig,
    request_timeout: Duration,
    backoff: BackoffPolicy,
    /// The current coordinator connection. parking_lot Mutex: only cloned out or replaced, never held
    /// across an await.
    current: parking_lot::Mutex<Option<Arc<Connection>>>,
    /// A connection to any broker, replaced when it dies.
    any: parking_lot::Mutex<Option<Arc<Connection>>>,
    /// Serialises discovery, so callers that find the coordinator gone together look it up once.
    discovery: tokio::sync::Mutex<()>,
    /// Round-robin index into `bootstrap`.
    next_bootstrap: AtomicUsize,
}

impl Coordinator {
    pub(crate) fn new(group: String, client: &ClientConfig, request_timeout: Duration) -> Self {
        Self::with_key_type(group, 0, client, request_timeout)
    }

    /// The coordinator of the transactional id `id` (FindCoordinator key type 1).
    pub(crate) fn for_transaction(
        id: String,
        client: &ClientConfig,
        request_timeout: Duration,
    ) -> Self {
        Self::with_key_type(id, 1, client, request_timeout)
    }

    fn with_key_type(
        group: String,
        key_type: i8,
        client: &ClientConfig,
        request_timeout: Duration,
    ) -> Self {
        Self {
            group,
            key_type,
            bootstrap: client.bootstrap().to_vec(),
            backoff: client.reconnect_backoff_policy(),
            client: client.clone(),
            request_timeout,
            current: parking_lot::Mutex::new(None),
            any: parking_lot::Mutex::new(None),
            discovery: tokio::sync::Mutex::new(()),
            next_bootstrap: AtomicUsize::new(0),
        }
    }

    /// Sends `request` to the coordinator, finding it first if needed (retrying discovery with backoff
    /// until `deadline`). Returns the connection used, so callers can [`invalidate`](Self::invalidate) it
    /// when the response says the coordinator moved.
    pub(crate) async fn send<R: ApiRequest>(
        &self,
        request: &R,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<(Arc<Connection>, R::Response)> {
        self.send_at_most(request, R::MAX_VERSION, timeout, deadline)
            .await
    }

    /// [`send`](Self::send) at a version no newer than `max`.
    pub(crate) async fn send_at_most<R: ApiRequest>(
        &self,
        request: &R,
        max: i16,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<(Arc<Connection>, R::Response)> {
        let conn = self.connection(deadline).await?;
        match conn.send_at_most(request, max, timeout).await {
            Ok(response) => Ok((conn, response)),
            Err(source) => {
                if source.is_retriable() {
                    self.invalidate(&conn);
                }
                Err(Error::Connection {
                    context: format!("{}: {:?} to the coordinator", self.label(), R::KEY),
                    source,
                })
            }
        }
    }

    /// Forgets `conn` as the coordinator connection (if it still is), so the next request looks the
    /// coordinator up again.
    pub(crate) fn invalidate(&self, conn: &Arc<Connection>) {
        let mut current = self.current.lock();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            debug!(group = %self.group, broker = conn.broker(), "coordinator connection invalidated");
            *current = None;
        }
    }

    /// The coordinator connection, looked up and connected if there is none, retried with backoff
    /// until `deadline`.
    pub(crate) async fn connection(&self, deadline: Instant) -> Result<Arc<Connection>> {
        let mut backoff = self.backoff.start();
        loop {
            match self.try_connection().await {
                Ok(conn) => return Ok(conn),
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    let delay = backoff.next_delay().min(deadline - Instant::now());
                    debug!(group = %self.group, error = %e, ?delay, "coordinator not reachable yet");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_connection(&self) -> Result<Arc<Connection>> {
        if let Some(conn) = self.live(&self.current) {
            return Ok(conn);
        }
        let _discovering = self.discovery.lock().await;
        if let Some(conn) = self.live(&self.current) {
            return Ok(conn);
        }
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(self.group.clone()))
            .with_key_type(self.key_type);
        let response = self
            .send_any(&request, || format!("{}: FindCoordinator", self.label()))
            .await?;
        if let Some(err) = ResponseError::try_from_code(response.error_code) {
            if self.key_type == 1 {
                let fatal = !err.is_retriable();
                return Err(Error::Transaction {
                    transactional_id: self.group.clone(),
                    operation: "FindCoordinator",
                    kind: if fatal {
                        crate::TransactionErrorKind::Fatal
                    } else {
                        crate::TransactionErrorKind::Timeout
                    },
                    reason: describe(err, response.error_message.as_deref()),
                });
            }
            return Err(Error::Group {
                group: self.group.clone(),
                operation: "FindCoordinator",
                code: response.error_code,
                error: describe(err, response.error_message.as_deref()),
            });
        }
        let address = format!("{}:{}", response.host.as_str(), response.port);
        let conn = Arc::new(
            Connection::connect(&address, &self.client, self.request_timeout)
                .await
                .map_err(|source| Error::Connection {
                    context: format!("{}: connecting to coordinator", self.label()),
                    source,
                })?,
        );
        info!(key = %self.group, key_type = self.key_type, coordinator = %address, node = response.node_id.0, "found coordinator");
        *self.current.lock() = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// What the coordinator coordinates, for messages: "group `g`" or "transactional id `t`".
    fn label(&self) -> String {
        match self.key_type {
            1 => format!("transactional id `{}`", self.group),
            _ => format!("group `{}`", self.group),
        }
    }

    /// A live connection to any broker, trying each bootstrap entry once in turn.
    pub(crate) async fn any_broker(&self) -> Result<Arc<Connection>> {
        if let Some(conn) = self.live(&self.any) {
            return Ok(conn);
        }
        let mut last: Option<WireError> = None;
        for _ in 0..self.bootstrap.len() {
            let i = self.next_bootstrap.fetch_add(1, Ordering::Relaxed) % self.bootstrap.len();
            match Connection::connect(&self.bootstrap[i], &self.client, self.request_timeout).await
            {
                Ok(conn) => {
                    let conn = Arc::new(conn);
                    *self.any.lock() = Some(Arc::clone(&conn));
                    return Ok(conn);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(Error::Connection {
            context: format!("group `{}`: reaching any bootstrap broker", self.group),
            source: last.expect("bootstrap is never empty"),
        })
    }

    fn forget_any(&self, conn: &Arc<Connection>) {
        let mut any = self.any.lock();
        if any.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *any = None;
        }
    }

    fn live(&self, slot: &parking_lot::Mutex<Option<Arc<Connection>>>) -> Option<Arc<Connection>> {
        let mut slot = slot.lock();
        match slot.as_ref() {
            Some(conn) if !conn.is_dead() => Some(Arc::clone(conn)),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    /// Sends `request` on the any-broker connection; a connection failure forgets that connection
    /// (the next call connects afresh) and is reported with `context`.
    async fn send_any<R: ApiRequest>(
        &self,
        request: &R,
        context: impl FnOnce() -> String,
    ) -> Result<R::Response> {
        let any = self.any_broker().await?;
        any.send(request, self.request_timeout)
            .await
            .map_err(|source| {
                self.forget_any(&any);
                Error::Connection {
                    context: context(),
                    source,
                }
            })
    }

    /// The leaders of every partition of `topics`, with their leader epochs and the brokers'
    /// addresses, from one Metadata request on the any-broker connection. A topic the broker does
    /// not know, or a partition without a leader right now, is absent from the answer.
    pub(crate) async fn leaders(&self, topics: &[String]) -> Result<Leaders> {
        let request = metadata_request(Some(topics));
        let response = self
            .send_any(&request, || format!("looking up the leaders of {topics:?}"))
            .await?;
        let mut leaders = Leaders::default();
        for b in &response.brokers {
            leaders
                .brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        for t in &response.topics {
            let Some(name) = t.name.as_ref().filter(|_| t.error_code == 0) else {
                continue;
            };
            for p in &t.partitions {
                if p.error_code == 0 && p.leader_id.0 >= 0 {
                    let tp = TopicPartition::new(name.0.as_str(), p.partition_index);
                    leaders
                        .partitions
                        .insert(tp, (p.leader_id.0, p.leader_epoch));
                }
            }
        }
        Ok(leaders)
    }

    /// The topic ids of `topics` (`None`: every topic) from one Metadata request on the any-broker
    /// connection; topics the broker does not know are absent.
    pub(crate) async fn topic_ids(
        &self,
        topics: Option<&[String]>,
    ) -> Result<Vec<(String, uuid::Uuid)>> {
        let request = metadata_request(topics);
        let response = self
            .send_any(&request, || {
                format!("group `{}`: Metadata for topic ids", self.group)
            })
            .await?;
        Ok(response
            .topics
            .into_iter()
            .filter(|t| t.error_code == 0)
            .filter_map(|t| t.name.map(|n| (n.0.to_string(), t.topic_id)))
            .collect())
    }

    /// How to connect to brokers: client id and security.
    pub(crate) fn client(&self) -> &ClientConfig {
        &self.client
    }

    /// Partition counts of `topics` from a Metadata request; topics that do not exist are absent.
    pub(crate) async fn partition_counts(
        &self,
        topics: &[String],
    ) -> Result<BTreeMap<String, i32>> {
        // Topic creation left to the broker's `auto.create.topics.enable`, as Java consumers ask.
        let request = metadata_request(Some(topics)).with_allow_auto_topic_creation(true);
        let response = self
            .send_any(&request, || {
                format!("group `{}`: Metadata for {topics:?}", self.group)
            })
            .await?;
        Ok(response
            .topics
            .into_iter()
            .filter(|t| t.error_code == 0)
            .filter_map(|t| t.name.map(|n| (n.0.to_string(), t.partitions.len() as i32)))
            .collect())
    }
}

/// Partition leaders as one Metadata response gave them.
#[derive(Debug, Default)]
pub(crate) struct Leaders {
    /// Each partition with a leader: its node id and leader epoch (-1 when the broker gives none).
    pub(crate) partitions: std::collections::HashMap<TopicPartition, (i32, i32)>,
    /// Each broker's `host:port`, by node id.
    pub(crate) brokers: std::collections::HashMap<i32, String>,
}

/// Kafka's name for an error code, with the broker's message when it sent one.
pub(crate) fn describe(err: ResponseError, message: Option<&str>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!("{err:?}: {m}"),
        _ => format!("{err:?}"),
    }
}
