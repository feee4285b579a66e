//! One connection to one broker.
//!
//! Requests are pipelined: each gets a correlation id and a oneshot slot in `pending`, is written
//! under the writer lock, and a reader task owned by the connection routes each response frame to its
//! slot. A heartbeat therefore never waits behind a slow JoinGroup or OffsetCommit on the same socket.
//! When the socket fails, every pending request fails with the same error and the connection is dead;
//! callers reconnect (with backoff) by building a new one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::ApiRequest;
use crate::config::ClientConfig;
use crate::security::SaslCredentials;

/// A byte stream to a broker: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug> Io for T {}

type Reader = ReadHalf<Box<dyn Io>>;
type Writer = WriteHalf<Box<dyn Io>>;

/// The largest response frame accepted (a bound against a corrupt length prefix).
const MAX_FRAME: usize = 100 * 1024 * 1024;

/// Why a request on a kafkit connection failed. All variants except `UnsupportedVersion` and `Codec`
/// are transient: a new connection (after backoff) may succeed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// No usable connection could be made within the connect timeout: TCP was refused or timed
    /// out, or the port accepted TCP but no Kafka handshake (TLS, ApiVersions, SASL) completed in time.
    #[error("connecting to broker {broker} failed: {message}")]
    Connect {
        /// `host:port`.
        broker: String,
        /// The OS error.
        message: String,
    },
    /// The connection broke while a request was outstanding.
    #[error("connection to broker {broker} lost: {message}")]
    Io {
        /// `host:port`.
        broker: String,
        /// The OS error.
        message: String,
    },
    /// No response arrived in time; whether the broker acted on the request is unknown.
    #[error("{api:?} to broker {broker} got no response within {timeout:?}")]
    Timeout {
        /// `host:port`.
        broker: String,
        /// The request.
        api: ApiKey,
        /// The request timeout.
        timeout: Duration,
    },
    /// The broker does not support any version of the API that kafkit implements.
    #[error(
        "broker {broker} supports {api:?} versions {min}..={max}, kafkit needs one in {ours_min}..={ours_max}"
    )]
    UnsupportedVersion {
        /// `host:port`.
        broker: String,
        /// The request.
        api: ApiKey,
        /// The broker's lowest version.
        min: i16,
        /// The broker's highest version.
        max: i16,
        /// kafkit's lowest version.
        ours_min: i16,
        /// kafkit's highest version.
        ours_max: i16,
    },
    /// The broker closed a new connection before completing its first exchange: typically a listener
    /// that expects another `security.protocol` (TLS, or SASL authentication), or a broker going down.
    #[error("broker {broker} closed the connection {stage}: {hint}")]
    Handshake {
        /// `host:port`.
        broker: String,
        /// Where it happened, e.g. "before answering ApiVersions".
        stage: &'static str,
        /// The likely causes, for the user.
        hint: &'static str,
    },
    /// SASL authentication failed: wrong credentials, or a mechanism the broker does not enable.
    /// Not retriable: the same credentials fail the same way.
    #[error(
        "SASL {mechanism} authentication of user `{username}` with broker {broker} failed: {message}"
    )]
    Authentication {
        /// `host:port`.
        broker: String,
        /// The SASL mechanism.
        mechanism: &'static str,
        /// The user name (never the password).
        username: String,
        /// The broker's (or the mechanism's) reason.
        message: String,
    },
    /// The TLS handshake failed: an untrusted or mismatched certificate, or a listener that does not
    /// speak TLS. Not retriable.
    #[error("TLS handshake with broker {broker} failed: {message}")]
    Tls {
        /// `host:port`.
        broker: String,
        /// rustls' reason.
        message: String,
    },
    /// A message could not be encoded or a response decoded.
    #[error("encoding or decoding {api:?} for broker {broker} failed: {message}")]
    Codec {
        /// `host:port`.
        broker: String,
        /// The request.
        api: ApiKey,
        /// The codec's complaint.
        message: String,
    },
}

impl WireError {
    /// Whether a new connection may succeed where this one failed. A [`Handshake`](Self::Handshake)
    /// counts as retriable (a broker shutting down closes connections too); kafkit's first connection
    /// of a client treats it as final instead (`ClientConfig::bootstrap_connection`).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            WireError::Connect { .. }
                | WireError::Io { .. }
                | WireError::Timeout { .. }
                | WireError::Handshake { .. }
        )
    }

    /// Whether the failure is about security settings (credentials, TLS, or the wrong
    /// `security.protocol` for the listener).
    pub fn is_security(&self) -> bool {
        matches!(
            self,
            WireError::Handshake { .. } | WireError::Authentication { .. } | WireError::Tls { .. }
        )
    }
}

type Pending = Arc<parking_lot::Mutex<HashMap<i32, oneshot::Sender<Result<Bytes, WireError>>>>>;

/// A connection to one broker, with the API versions that broker supports.
#[derive(Debug)]
pub(crate) struct Connection {
    broker: String,
    client_id: StrBytes,
    /// tokio Mutex: held across the `write_all` await so frames are never interleaved.
    writer: tokio::sync::Mutex<Writer>,
    /// Correlation id -> the waiting request. parking_lot Mutex: never held across an await.
    pending: Pending,
    next_correlation: AtomicI32,
    /// API key -> (min, max) version the broker supports, from the ApiVersions handshake.
    versions: HashMap<i16, (i16, i16)>,
    /// Feature name -> finalized max level (`transaction.version`, ...), from the ApiVersions
    /// handshake (v3+; empty from older brokers).
    features: HashMap<String, i16>,
    dead: Arc<AtomicBool>,
    reader: JoinHandle<()>,
    /// The buffer of the last frame written, kept for the next: a megabyte ProduceRequest is
    /// encoded into pages already touched instead of fresh ones (first touches cost the producer
    /// about a fifth of its CPU on 10 KiB records). parking_lot Mutex: never held across an await.
    spare_frame: parking_lot::Mutex<Option<BytesMut>>,
}

/// The largest frame buffer a connection keeps for the next request.
const MAX_SPARE_FRAME: usize = 8 << 20;

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Connection {
    /// Connects to `broker` (`host:port`) as `config` says (client id, TLS, SASL), negotiates API
    /// versions and authenticates, all of it within `timeout`: a port that accepts TCP but never
    /// answers is a [`WireError::Connect`] once `timeout` has passed, not a wait per step.
    pub(crate) async fn connect(
        broker: &str,
        config: &ClientConfig,
        timeout: Duration,
    ) -> Result<Self, WireError> {
        let connect_err = |message: String| WireError::Connect {
            broker: broker.to_owned(),
            message,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(broker))
            .await
            .map_err(|_| connect_err(format!("no TCP connection within {timeout:?}")))?
            .map_err(|e| connect_err(e.to_string()))?;
        tcp.set_nodelay(true)
            .map_err(|e| connect_err(e.to_string()))?;
        // Every step below also has its own timeout (`send` needs one); the deadline is what binds.
        let no_answer = || {
            connect_err(format!(
                "the port accepts connections but the Kafka handshake (TLS, ApiVersions, SASL) did not \
                 complete within {timeout:?}"
            ))
        };
        match tokio::time::timeout_at(deadline, Self::handshake(tcp, broker, config, timeout)).await
        {
            Err(_) | Ok(Err(WireError::Timeout { .. })) => Err(no_answer()),
            Ok(result) => result,
        }
    }

    /// TLS (when configured), ApiVersions and SASL (when configured) over a fresh TCP connection.
    async fn handshake(
        tcp: TcpStream,
        broker: &str,
        config: &ClientConfig,
        timeout: Duration,
    ) -> Result<Self, WireError> {
        #[cfg(feature = "tls")]
        let stream: Box<dyn Io> = match config.tls_client() {
            Some(tls) => Box::new(tls_handshake(tcp, broker, tls, timeout).await?),
            None => Box::new(tcp),
        };
        #[cfg(not(feature = "tls"))]
        let stream: Box<dyn Io> = Box::new(tcp);
        let (read, write) = tokio::io::split(stream);
        let pending: Pending = Arc::default();
        let dead = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_loop(
            read,
            broker.to_owned(),
            Arc::clone(&pending),
            Arc::clone(&dead),
        ));
        let mut conn = Connection {
            broker: broker.to_owned(),
            client_id: StrBytes::from_string(config.client_id_str().to_owned()),
            writer: tokio::sync::Mutex::new(write),
            pending,
            next_correlation: AtomicI32::new(0),
            versions: HashMap::new(),
            features: HashMap::new(),
            dead,
            reader,
            spare_frame: parking_lot::Mutex::new(None),
        };
        (conn.versions, conn.features) = conn.negotiate(timeout).await.map_err(|e| match e {
            WireError::Io { broker, .. } => WireError::Handshake {
                broker,
                stage: "before answering ApiVersions",
                hint: if config.security().protocol.uses_tls() {
                    "is the broker shutting down?"
                } else {
                    "the listener may expect TLS (security.protocol SSL or SASL_SSL), or the broker is shutting down"
                },
            },
            e => e,
        })?;
        if let Some(sasl) = &config.security().sasl {
            conn.authenticate(sasl, timeout).await?;
        }
        Ok(conn)
    }

    /// SASL: SaslHandshake (v1, so the exchange is framed in SaslAuthenticate requests), then the
    /// mechanism's steps (from rsasl) until it finishes. A refusal is [`WireError::Authentication`].
    async fn authenticate(
        &self,
        sasl: &SaslCredentials,
        timeout: Duration,
    ) -> Result<(), WireError> {
        let mechanism = sasl.mechanism.as_str();
        let refused = |message: String| WireError::Authentication {
            broker: self.broker.clone(),
            mechanism,
            username: sasl.username.clone(),
            message,
        };
        let handshake = self
            .send(
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str(mechanism)),
                timeout,
            )
            .await?;
        if handshake.error_code != 0 {
            let offered: Vec<&str> = handshake.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(refused(format!(
                "the listener does not enable it (it offers {}; error code {})",
                offered.join(", "),
                handshake.error_code
            )));
        }
        let config = rsasl::config::SASLConfig::with_credentials(
            None,
            sasl.username.clone(),
            sasl.password.expose().to_owned(),
        )
        .map_err(|e| refused(e.to_string()))?;
        let name = rsasl::prelude::Mechname::parse(mechanism.as_bytes())
            .map_err(|e| refused(e.to_string()))?;
        let mut session = rsasl::prelude::SASLClient::new(config)
            .start_suggested(&[name])
            .map_err(|e| refused(e.to_string()))?;
        let mut received: Option<Bytes> = None;
        loop {
            let mut out = Vec::new();
            let state = session
                .step(received.as_deref(), &mut out)
                .map_err(|e| refused(e.to_string()))?;
            if state.has_sent_message() {
                let response = self
                    .send(
                        &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(out)),
                        timeout,
                    )
                    .await
                    .map_err(|e| match e {
                        // Brokers close the connection right after a failed authentication.
                        WireError::Io { .. } => {
                            refused("the broker closed the connection during authentication".into())
                        }
                        e => e,
                    })?;
                if response.error_code != 0 {
                    let message = response
                        .error_message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default();
                    return Err(refused(format!(
                        "{message} (error code {})",
                        response.error_code
                    )));
                }
                received = Some(response.auth_bytes);
            }
            if state.is_finished() {
                return Ok(());
            }
        }
    }

    /// The broker this connection goes to.
    pub(crate) fn broker(&self) -> &str {
        &self.broker
    }

    /// The API versions the broker announced: API key -> (min, max).
    pub(crate) fn api_versions(&self) -> &HashMap<i16, (i16, i16)> {
        &self.versions
    }

    /// The finalized level of a cluster feature (e.g. `transaction.version`) as this broker
    /// announced it; 0 when the broker names no level (older brokers, or the feature is off).
    pub(crate) fn feature_level(&self, name: &str) -> i16 {
        self.features.get(name).copied().unwrap_or(0)
    }

    /// Whether the socket has failed; a dead connection fails every request.
    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Gives the connection up now, as the Java client does after a request times out: the reader
    /// stops, every request still waiting fails at once (so callers holding this connection retry
    /// on a new one instead of keeping the old socket open until their own timeouts), and the
    /// socket closes when the last holder drops it.
    pub(crate) fn close(&self, why: &str) {
        self.dead.store(true, Ordering::Release);
        self.reader.abort();
        for (_, tx) in self.pending.lock().drain() {
            let _ = tx.send(Err(WireError::Io {
                broker: self.broker.clone(),
                message: format!("connection closed: {why}"),
            }));
        }
    }

    /// ApiVersions at the highest version both sides know. A broker that does not know the version
    /// answers in v0 with UNSUPPORTED_VERSION and its own range, and we retry with what it supports.
    async fn negotiate(
        &self,
        timeout: Duration,
    ) -> Result<(HashMap<i16, (i16, i16)>, HashMap<String, i16>), WireError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("kafkit"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut version = ApiVersionsRequest::MAX_VERSION;
        for _ in 0..2 {
            let response: ApiVersionsResponse =
                self.send_version(&request, version, timeout).await?;
            let table: HashMap<i16, (i16, i16)> = response
                .api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect();
            if response.error_code == 35 {
                // UNSUPPORTED_VERSION: the broker's range for ApiVersions tells us what to use.
                let (_, max) = table
                    .get(&(ApiKey::ApiVersions as i16))
                    .copied()
                    .unwrap_or((0, 0));
                version = max.min(ApiVersionsRequest::MAX_VERSION);
                continue;
            }
            let features = response
                .finalized_features
                .iter()
                .map(|f| (f.name.to_string(), f.max_version_level))
                .collect();
            return Ok((table, features));
        }
        Err(WireError::UnsupportedVersion {
            broker: self.broker.clone(),
            api: ApiKey::ApiVersions,
            min: 0,
            max: 0,
            ours_min: 0,
            ours_max: ApiVersionsRequest::MAX_VERSION,
        })
    }

    /// The version to use for `R`: the highest both kafkit and the broker support.
    pub(crate) fn version_for<R: ApiRequest>(&self) -> Result<i16, WireError> {
        let ours_max = R::MAX_VERSION.min(R::VERSIONS.max);
        let ours_min = R::VERSIONS.min;
        let (min, max) = self
            .versions
            .get(&(R::KEY as i16))
            .copied()
            .unwrap_or((-1, -1));
        let chosen = ours_max.min(max);
        if chosen < ours_min || chosen < min {
            return Err(WireError::UnsupportedVersion {
                broker: self.broker.clone(),
                api: R::KEY,
                min,
                max,
                ours_min,
                ours_max,
            });
        }
        Ok(chosen)
    }

    /// Sends `request` at the negotiated version and waits up to `timeout` for its response.
    pub(crate) async fn send<R: ApiRequest>(
        &self,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response, WireError> {
        let version = self.version_for::<R>()?;
        self.send_version(request, version, timeout).await
    }

    /// Sends `request` at the negotiated version but no newer than `max`.
    pub(crate) async fn send_at_most<R: ApiRequest>(
        &self,
        request: &R,
        max: i16,
        timeout: Duration,
    ) -> Result<R::Response, WireError> {
        let version = self.version_for::<R>()?.min(max);
        self.send_version(request, version, timeout).await
    }

    /// Writes `request` at the negotiated version (no newer than `max`) and does not wait for an
    /// answer: for a ProduceRequest with acks=0, which the broker never answers.
    pub(crate) async fn send_unanswered<R: ApiRequest>(
        &self,
        request: &R,
        max: i16,
    ) -> Result<(), WireError> {
        let version = self.version_for::<R>()?.min(max);
        let (_, frame) = self.frame(request, version)?;
        let mut writer = self.writer.lock().await;
        writer.write_all(&frame).await.map_err(|e| {
            self.dead.store(true, Ordering::Release);
            WireError::Io {
                broker: self.broker.clone(),
                message: e.to_string(),
            }
        })?;
        drop(writer);
        self.keep_frame(frame);
        Ok(())
    }

    /// Keeps a written frame's buffer for the next request.
    fn keep_frame(&self, mut frame: BytesMut) {
        if frame.capacity() <= MAX_SPARE_FRAME {
            frame.clear();
            *self.spare_frame.lock() = Some(frame);
        }
    }

    /// A request frame for `request` at `version` with a new correlation id.
    fn frame<R: ApiRequest>(
        &self,
        request: &R,
        version: i16,
    ) -> Result<(i32, BytesMut), WireError> {
        let api = R::KEY;
        let codec = |message: String| WireError::Codec {
            broker: self.broker.clone(),
            api,
            message,
        };
        if self.is_dead() {
            return Err(WireError::Io {
                broker: self.broker.clone(),
                message: "connection already closed".into(),
            });
        }
        let correlation_id = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        // Sized up front: growing a megabyte ProduceRequest by doubling copied it over and over,
        // into fresh pages each time.
        let size = header
            .compute_size(R::header_version(version))
            .and_then(|h| Ok(h + request.compute_size(version)?))
            .map_err(|e| codec(e.to_string()))?;
        let mut frame = self.spare_frame.lock().take().unwrap_or_default();
        frame.reserve(4 + size);
        frame.put_i32(0); // length, patched below
        header
            .encode(&mut frame, R::header_version(version))
            .map_err(|e| codec(e.to_string()))?;
        request
            .encode(&mut frame, version)
            .map_err(|e| codec(e.to_string()))?;
        let len = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        Ok((correlation_id, frame))
    }

    async fn send_version<R: ApiRequest>(
        &self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, WireError> {
        let api = R::KEY;
        let codec = |message: String| WireError::Codec {
            broker: self.broker.clone(),
            api,
            message,
        };
        let (correlation_id, frame) = self.frame(request, version)?;

        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(correlation_id, tx);
        // The reader may have died (and drained `pending`) just before the insert.
        if self.is_dead() {
            self.pending.lock().remove(&correlation_id);
            return Err(WireError::Io {
                broker: self.broker.clone(),
                message: "connection closed".into(),
            });
        }
        let exchange = async {
            {
                let mut writer = self.writer.lock().await;
                if let Err(e) = writer.write_all(&frame).await {
                    self.dead.store(true, Ordering::Release);
                    return Err(WireError::Io {
                        broker: self.broker.clone(),
                        message: e.to_string(),
                    });
                }
            }
            self.keep_frame(frame);
            rx.await.unwrap_or_else(|_| {
                Err(WireError::Io {
                    broker: self.broker.clone(),
                    message: "connection closed while waiting for a response".into(),
                })
            })
        };
        let mut body = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => {
                self.pending.lock().remove(&correlation_id);
                result?
            }
            Err(_) => {
                self.pending.lock().remove(&correlation_id);
                return Err(WireError::Timeout {
                    broker: self.broker.clone(),
                    api,
                    timeout,
                });
            }
        };
        ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| codec(e.to_string()))?;
        R::Response::decode(&mut body, version).map_err(|e| codec(e.to_string()))
    }
}

/// Reads response frames and hands each to the request waiting for its correlation id. Ends on the
/// first socket error, failing every pending request.
async fn read_loop(mut read: Reader, broker: String, pending: Pending, dead: Arc<AtomicBool>) {
    let error = loop {
        let len = match read.read_i32().await {
            Ok(len) if len >= 4 && (len as usize) <= MAX_FRAME => len as usize,
            Ok(len) => break format!("invalid response frame length {len}"),
            Err(e) => break e.to_string(),
        };
        // Read into uninitialised capacity: zero-filling a fetch response of a megabyte first cost
        // a tenth of the consumer's CPU on large records.
        let mut buf = BytesMut::with_capacity(len);
        let mut failed = None;
        while buf.len() < len {
            // `limit`: never read past this frame into the next one.
            let want = len - buf.len();
            match read.read_buf(&mut (&mut buf).limit(want)).await {
                Ok(0) => {
                    failed = Some("connection closed mid-response".to_owned());
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(e) = failed {
            break e;
        }
        let frame = buf.freeze();
        let correlation_id = (&frame[..4]).get_i32();
        // Unknown ids belong to requests that timed out; their responses are dropped.
        if let Some(tx) = pending.lock().remove(&correlation_id) {
            let _ = tx.send(Ok(frame));
        }
    };
    dead.store(true, Ordering::Release);
    for (_, tx) in pending.lock().drain() {
        let _ = tx.send(Err(WireError::Io {
            broker: broker.clone(),
            message: error.clone(),
        }));
    }
}

/// Wraps `tcp` in TLS for `broker`'s host name (or IP address).
#[cfg(feature = "tls")]
async fn tls_handshake(
    tcp: TcpStream,
    broker: &str,
    tls: &crate::security::TlsClient,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, WireError> {
    let failed = |message: String| WireError::Tls {
        broker: broker.to_owned(),
        message,
    };
    let host = broker
        .rsplit_once(':')
        .map_or(broker, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| failed(format!("`{host}` is not a valid server name: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.0));
    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Err(_) => Err(WireError::Timeout {
            broker: broker.to_owned(),
            api: ApiKey::ApiVersions,
            timeout,
        }),
        // rustls reports its own failures (certificates, protocol) as InvalidData.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => Err(failed(e.to_string())),
        Ok(Err(_)) => Err(WireError::Handshake {
            broker: broker.to_owned(),
            stage: "during the TLS handshake",
            hint: "the listener may not speak TLS (security.protocol PLAINTEXT or SASL_PLAINTEXT), or the broker is shutting down",
        }),
        Ok(Ok(stream)) => Ok(stream),
    }
}
