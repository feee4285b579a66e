//! Connection settings shared by every kafkit client, and the one place rskafka clients are built.

use std::sync::Arc;
use std::time::Duration;

use kafkit_resilience::{BackoffPolicy, ConfigError, ResilienceConfig};
use rskafka::BackoffConfig;
use rskafka::client::{Client, ClientBuilder};

use crate::security::Security;
#[cfg(feature = "tls")]
use crate::security::TlsClient;
use crate::wire::{Connection, WireError};
use crate::{Error, Result};

/// Where the cluster is and how to reach it. Shared by the producer, the consumer and the tools.
/// `Debug` never shows secrets (see [`Security`]).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    bootstrap: Vec<String>,
    client_id: Arc<str>,
    reconnect_backoff: BackoffPolicy,
    connect_timeout: Duration,
    security: Security,
    /// Built from `security.tls` when the protocol uses TLS.
    #[cfg(feature = "tls")]
    tls: Option<TlsClient>,
}

impl ClientConfig {
    /// Settings for the cluster reachable at `bootstrap` (`host:port` entries, comma-separated or not).
    ///
    /// Corresponds to `bootstrap.servers`. Validated here: every entry needs a host and a port.
    pub fn new<I, S>(bootstrap: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let bootstrap: Vec<String> = bootstrap
            .into_iter()
            .flat_map(|s| {
                s.as_ref()
                    .split(',')
                    .map(|p| p.trim().to_owned())
                    .collect::<Vec<_>>()
            })
            .filter(|s| !s.is_empty())
            .collect();
        if bootstrap.is_empty() {
            return Err(
                ConfigError::new("bootstrap.servers", "must list at least one host:port").into(),
            );
        }
        for entry in &bootstrap {
            let valid = entry.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !valid {
                return Err(ConfigError::new(
                    "bootstrap.servers",
                    format!("`{entry}` is not host:port with a port in 1..=65535"),
                )
                .into());
            }
        }
        Ok(Self {
            bootstrap,
            client_id: Arc::from("kafkit"),
            reconnect_backoff: BackoffPolicy::default(),
            connect_timeout: Duration::from_secs(30),
            security: Security::default(),
            #[cfg(feature = "tls")]
            tls: None,
        })
    }

    /// How connections authenticate and encrypt (`security.protocol`, SASL, TLS), for every
    /// connection of every client built from this configuration. Validated here, TLS material
    /// included (files are read now): a setting that does not fit is an error naming it.
    pub fn with_security(mut self, security: Security) -> Result<Self> {
        security.validate()?;
        #[cfg(feature = "tls")]
        {
            self.tls = if security.protocol.uses_tls() {
                Some(TlsClient::build(&security.tls)?)
            } else {
                None
            };
        }
        self.security = security;
        Ok(self)
    }

    /// The security settings.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// The TLS client configuration, when the protocol uses TLS.
    #[cfg(feature = "tls")]
    pub(crate) fn tls_client(&self) -> Option<&TlsClient> {
        self.tls.as_ref()
    }

    /// The name brokers log and quota this client under. Corresponds to `client.id`. Default `kafkit`.
    pub fn client_id(mut self, client_id: impl Into<Arc<str>>) -> Self {
        self.client_id = client_id.into();
        self
    }

    /// Backoff between reconnect attempts to a broker. Corresponds to `reconnect.backoff.ms` /
    /// `reconnect.backoff.max.ms`. Default 100 ms doubling to 64 s with 20 % jitter.
    pub fn reconnect_backoff(mut self, policy: BackoffPolicy) -> Self {
        self.reconnect_backoff = policy;
        self
    }

    /// How long [`connect`](Self::connect) keeps trying to reach any bootstrap broker before giving up.
    /// Default 30 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The bootstrap servers, one `host:port` per entry.
    pub fn bootstrap(&self) -> &[String] {
        &self.bootstrap
    }

    /// The client id sent to brokers.
    pub fn client_id_str(&self) -> &str {
        &self.client_id
    }

    /// The reconnect backoff policy.
    pub fn reconnect_backoff_policy(&self) -> BackoffPolicy {
        self.reconnect_backoff
    }

    /// Connects an rskafka client once a bootstrap broker answers a kafkit connection (see
    /// [`bootstrap_connection`](Self::bootstrap_connection)): a security misconfiguration fails at
    /// once, an unreachable cluster after the connect timeout, and rskafka's own bootstrap gets what
    /// is left of it. `backoff` drives the retries inside each later request.
    pub(crate) async fn connect_with(&self, backoff: BackoffConfig) -> Result<Client> {
        let started = tokio::time::Instant::now();
        drop(self.bootstrap_connection().await?);
        let mut builder = ClientBuilder::new(self.bootstrap.clone())
            .client_id(Arc::clone(&self.client_id))
            .backoff_config(backoff);
        if let Some(sasl) = self.security.rskafka_sasl() {
            builder = builder.sasl_config(sasl);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(Arc::clone(&tls.0));
        }
        match tokio::time::timeout_at(started + self.connect_timeout, builder.build()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(source)) => Err(Error::Kafka {
                context: format!("connecting to {}", self.bootstrap.join(",")),
                source: Arc::new(source),
            }),
            Err(_) => Err(Error::Unreachable {
                bootstrap: self.bootstrap.join(","),
                waited: started.elapsed(),
            }),
        }
    }

    /// Applies the users' environment-style connection settings: `KAFKA_RECONNECT_BACKOFF_MS` and
    /// `KAFKA_RECONNECT_BACKOFF_MAX_MS` become the [reconnect backoff](Self::reconnect_backoff) of
    /// every client built from this configuration (see [`ResilienceConfig::from_env`]).
    pub fn resilience(self, config: &ResilienceConfig) -> Self {
        self.reconnect_backoff(config.reconnect_backoff)
    }

    /// The connect timeout ([`connect_timeout`](Self::connect_timeout)).
    pub fn connect_timeout_limit(&self) -> Duration {
        self.connect_timeout
    }

    /// `retry` (a component's own backoff between failed requests, which reconnect) bounded by the
    /// reconnect backoff: never sooner than `reconnect.backoff.ms`, never longer than
    /// `reconnect.backoff.max.ms` (nor than `retry`'s own max, unless the reconnect minimum is above
    /// it). With the defaults (100 ms, 64 s) a component's backoff is unchanged.
    pub(crate) fn reconnect_bounded(&self, retry: BackoffPolicy) -> BackoffPolicy {
        let reconnect = self.reconnect_backoff;
        let initial = retry.initial().max(reconnect.initial());
        let max = retry.max().min(reconnect.max()).max(initial);
        BackoffPolicy::new(initial, max, retry.multiplier(), retry.jitter())
            .expect("initial <= max and the rest taken from a valid policy")
    }
}

impl ClientConfig {
    /// A kafkit connection (TCP, TLS, SASL, then a Metadata request) to the first bootstrap broker
    /// that answers, retried with the reconnect backoff until the connect timeout, which bounds the
    /// whole wait, every attempt included. Wrong credentials, an untrusted certificate or a
    /// `security.protocol` that does not fit the listener fail at once as [`Error::Security`], with
    /// their cause; no broker answering in time is [`Error::Unreachable`]. Every client and tool
    /// starts here, so each reports these the same way.
    pub(crate) async fn bootstrap_connection(&self) -> Result<Connection> {
        let started = tokio::time::Instant::now();
        let deadline = started + self.connect_timeout;
        let mut backoff = self.reconnect_backoff.start();
        loop {
            if let Some(conn) = self.try_bootstrap(deadline).await? {
                return Ok(conn);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(Error::Unreachable {
                    bootstrap: self.bootstrap.join(","),
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(backoff.next_delay().min(left)).await;
        }
    }

    /// Waits until a bootstrap broker answers (see [`bootstrap_connection`](Self::bootstrap_connection)).
    pub(crate) async fn reach(&self) -> Result<()> {
        self.bootstrap_connection().await.map(drop)
    }

    /// One pass over the bootstrap brokers, each attempt within what is left before `deadline`:
    /// the first connection that answered a Metadata request; a security failure is an error.
    async fn try_bootstrap(&self, deadline: tokio::time::Instant) -> Result<Option<Connection>> {
        for broker in &self.bootstrap {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let attempt = match Connection::connect(broker, self, left).await {
                Ok(conn) => {
                    // A SASL listener answers ApiVersions without authentication and closes the
                    // connection at the next request: this one.
                    let request = kafka_protocol::messages::MetadataRequest::default()
                        .with_topics(Some(Vec::new()));
                    let left = deadline
                        .saturating_duration_since(tokio::time::Instant::now())
                        .max(Duration::from_millis(1));
                    match conn.send(&request, left).await {
                        Ok(_) => Ok(conn),
                        Err(WireError::Io { broker, .. }) => Err(WireError::Handshake {
                            broker,
                            stage: "at the first request after the handshake",
                            hint: "the listener may require SASL authentication (security.protocol SASL_PLAINTEXT or SASL_SSL)",
                        }),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            match attempt {
                Ok(conn) => return Ok(Some(conn)),
                Err(source) if source.is_security() => {
                    return Err(Error::Security {
                        context: format!(
                            "connecting to {broker} with security.protocol {}",
                            self.security.protocol
                        ),
                        source,
                    });
                }
                Err(e) => tracing::debug!(%broker, error = %e, "bootstrap broker not reachable"),
            }
        }
        Ok(None)
    }
}

/// rskafka's own retry loop (inside every partition request) driven by our policy. rskafka draws its
/// jitter between `init` and `current * base`, so the shape differs slightly from [`BackoffPolicy`]'s
/// symmetric jitter; the bounds (initial, growth, max) are ours.
pub(crate) fn rskafka_backoff(policy: &BackoffPolicy, deadline: Option<Duration>) -> BackoffConfig {
    BackoffConfig {
        init_backoff: policy.initial(),
        max_backoff: policy.max(),
        base: policy.multiplier().max(1.01),
        deadline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_accepts_lists_and_comma_separated() {
        let c = ClientConfig::new(["a:9092,b:9093", " c:1 "]).unwrap();
        assert_eq!(c.bootstrap(), ["a:9092", "b:9093", "c:1"]);
    }

    #[test]
    fn bad_bootstrap_names_the_setting() {
        for bad in [
            "",
            "localhost",
            "localhost:",
            ":9092",
            "h:0",
            "h:70000",
            "h:x",
        ] {
            let err = ClientConfig::new([bad]).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("bootstrap.servers"), "{bad}: {msg}");
        }
    }
}
