//! Connection settings shared by every kafkit client.

use std::sync::Arc;
use std::time::Duration;

use kafkit_resilience::{BackoffPolicy, ConfigError, ResilienceConfig};

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

    /// How long connecting (a producer, consumer or admin call reaching its first bootstrap broker:
    /// TCP, TLS, SASL and the first answers, retried with the reconnect backoff) may take before it
    /// gives up with [`Error::Unreachable`](crate::Error::Unreachable). Default 30 s.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use kafkit_metrics::MetricsConfig;

    use crate::consumer::ConsumerBuilder;
    use crate::group::GroupConfig;
    use crate::producer::ProducerBuilder;
    #[cfg(feature = "tls")]
    use crate::security::Pem;
    use crate::security::{SaslMechanism, SecurityProtocol};

    /// What the components built from one environment run with.
    struct Effective {
        /// (breaker, attempts per record, shutdown timeout, coordinator backoff, fetch backoff).
        consumer: (
            Option<kafkit_resilience::CircuitBreakerPolicy>,
            u32,
            Duration,
            BackoffPolicy,
            BackoffPolicy,
        ),
        producer: BackoffPolicy,
        resilience: ResilienceConfig,
        metrics: MetricsConfig,
        security: Security,
        group: GroupConfig,
    }

    /// Builds every component the way an application does, from `vars` only (the same readers
    /// as `from_env`, through their lookup seams: no process-global state, so no races).
    fn effective(vars: &[(&str, &str)]) -> Effective {
        let env: HashMap<&str, &str> = vars.iter().copied().collect();
        let lookup = |name: &str| env.get(name).map(|v| v.to_string());
        let resilience = ResilienceConfig::from_lookup(lookup).unwrap();
        let metrics = MetricsConfig::from_lookup(lookup).unwrap();
        let security = Security::from_lookup(lookup).unwrap();
        let client = ClientConfig::new(["localhost:9092"])
            .unwrap()
            .resilience(&resilience);
        let group = GroupConfig::new("g", ["t"]).env_lookup(lookup).unwrap();
        let consumer = ConsumerBuilder::new(client.clone(), group.clone())
            .resilience(&resilience)
            .unwrap()
            .effective_resilience();
        let producer = ProducerBuilder::new(client).retry_policy();
        Effective {
            consumer,
            producer,
            resilience,
            metrics,
            security,
            group,
        }
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn every_documented_variable_takes_effect() {
        type Check = fn(&Effective) -> bool;
        // Each documented variable (README, docs/configuration.md, the env.rs table), a value other
        // than its default, and what the component built from it then does differently.
        let cases: &[(&str, &str, Check)] = &[
            ("KAFKA_ENABLE_CIRCUIT_BREAKER", "false", |e| {
                e.consumer.0.is_none()
            }),
            ("KAFKA_CIRCUIT_BREAKER_THRESHOLD", "3", |e| {
                e.consumer.0.unwrap().failure_threshold() == 3
            }),
            ("KAFKA_CIRCUIT_BREAKER_RESET_TIMEOUT", "7000", |e| {
                e.consumer.0.unwrap().reset_timeout() == ms(7000)
            }),
            ("KAFKA_RETRY_MAX_ATTEMPTS", "4", |e| e.consumer.1 == 4),
            ("KAFKA_SHUTDOWN_TIMEOUT", "2500", |e| {
                e.consumer.2 == ms(2500)
            }),
            // The least wait before any reconnect: coordinator, fetchers, the producer's client.
            ("KAFKA_RECONNECT_BACKOFF_MS", "250", |e| {
                e.consumer.3.initial() == ms(250)
                    && e.consumer.4.initial() == ms(250)
                    && e.producer.initial() == ms(250)
            }),
            // The most: below the fetchers' (10 s) and the producer's (1 s) own maxima.
            ("KAFKA_RECONNECT_BACKOFF_MAX_MS", "700", |e| {
                e.consumer.3.max() == ms(700)
                    && e.consumer.4.max() == ms(700)
                    && e.producer.max() == ms(700)
            }),
            // Documented as read and validated only; setting them says so (a warning).
            ("KAFKA_HEALTH_CHECK_INTERVAL", "1000", |e| {
                e.resilience.health_check_interval == ms(1000)
                    && e.resilience
                        .warnings()
                        .iter()
                        .any(|w| w.contains("KAFKA_HEALTH_CHECK_INTERVAL"))
            }),
            ("KAFKA_BATCH_ERROR_ISOLATION", "false", |e| {
                !e.resilience.batch_error_isolation
                    && e.resilience
                        .warnings()
                        .iter()
                        .any(|w| w.contains("KAFKA_BATCH_ERROR_ISOLATION"))
            }),
            ("KAFKA_MAX_TOPIC_STATS", "17", |e| {
                e.metrics.max_topic_stats() == 17
            }),
            ("KAFKA_ENABLE_MOVING_AVERAGE", "false", |e| {
                !e.metrics.moving_average_enabled()
            }),
            ("KAFKA_MOVING_AVERAGE_WINDOW", "25", |e| {
                e.metrics.moving_average_window() == 25
            }),
            ("KAFKA_GROUP_PROTOCOL", "consumer", |e| {
                e.group.group_protocol() == crate::group::GroupProtocol::Consumer
            }),
        ];
        let defaults = effective(&[]);
        for (name, value, check) in cases {
            assert!(
                !check(&defaults),
                "{name}: the check must fail on the defaults"
            );
            let e = effective(&[(name, value)]);
            assert!(check(&e), "{name}={value} had no effect");
        }

        // Variables that only make sense together.
        #[allow(unused_mut)]
        let mut pairs: Vec<(&[(&str, &str)], Check)> = vec![
            (
                &[
                    ("KAFKA_GROUP_PROTOCOL", "consumer"),
                    ("KAFKA_GROUP_REMOTE_ASSIGNOR", "range"),
                ],
                |e| e.group.remote_assignor.as_deref() == Some("range"),
            ),
            (
                &[
                    ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
                    ("KAFKA_SASL_MECHANISM", "PLAIN"),
                    ("KAFKA_SASL_USERNAME", "alice"),
                    ("KAFKA_SASL_PASSWORD", "pw"),
                ],
                |e| {
                    e.security.protocol == SecurityProtocol::SaslPlaintext
                        && e.security.sasl.as_ref().is_some_and(|s| {
                            s.mechanism == SaslMechanism::Plain
                                && s.username == "alice"
                                && s.password.expose() == "pw"
                        })
                },
            ),
            // A reconnect minimum above a component's own maximum raises that maximum with it.
            (&[("KAFKA_RECONNECT_BACKOFF_MS", "3000")], |e| {
                e.producer.initial() == ms(3000)
                    && e.producer.max() == ms(3000)
                    && e.consumer.4.max() == ms(10_000)
            }),
        ];
        // TLS settings exist only in builds with the `tls` feature.
        #[cfg(feature = "tls")]
        pairs.push((
                &[
                    ("KAFKA_SECURITY_PROTOCOL", "SSL"),
                    ("KAFKA_SSL_CA_LOCATION", "/etc/ca.pem"),
                    ("KAFKA_SSL_CERTIFICATE_LOCATION", "/etc/client.pem"),
                    ("KAFKA_SSL_KEY_LOCATION", "/etc/client.key"),
                ],
                |e| {
                    e.security.protocol == SecurityProtocol::Ssl
                        && matches!(&e.security.tls.ca, Some(Pem::File(p)) if p.to_str() == Some("/etc/ca.pem"))
                        && matches!(&e.security.tls.client_cert, Some(Pem::File(p)) if p.to_str() == Some("/etc/client.pem"))
                        && matches!(&e.security.tls.client_key, Some(Pem::File(p)) if p.to_str() == Some("/etc/client.key"))
                },
        ));
        for (vars, check) in pairs.iter() {
            assert!(
                !check(&defaults),
                "{vars:?}: the check must fail on the defaults"
            );
            assert!(check(&effective(vars)), "{vars:?} had no effect");
        }
    }

    #[test]
    fn the_defaults_leave_each_components_backoff_as_it_was() {
        let e = effective(&[]);
        assert_eq!(e.consumer.3, BackoffPolicy::default());
        assert_eq!(
            (e.consumer.4.initial(), e.consumer.4.max()),
            (ms(100), ms(10_000))
        );
        assert_eq!(
            (e.producer.initial(), e.producer.max()),
            (ms(100), ms(1000))
        );
    }

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
