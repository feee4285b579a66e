//! Connection settings shared by every kafkit client, and the one place rskafka clients are built.

use std::sync::Arc;
use std::time::Duration;

use kafkit_resilience::{BackoffPolicy, ConfigError};
use rskafka::BackoffConfig;
use rskafka::client::{Client, ClientBuilder};

use crate::{Error, Result};

/// Where the cluster is and how to reach it. Shared by the producer, the consumer and the tools.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    bootstrap: Vec<String>,
    client_id: Arc<str>,
    reconnect_backoff: BackoffPolicy,
    connect_timeout: Duration,
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
        })
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

    /// Connects an rskafka client: fetches cluster metadata from the first bootstrap broker that answers,
    /// retrying for up to the connect timeout; `backoff` drives the retries inside each later request.
    pub(crate) async fn connect_with(&self, backoff: BackoffConfig) -> Result<Client> {
        let builder = ClientBuilder::new(self.bootstrap.clone())
            .client_id(Arc::clone(&self.client_id))
            .backoff_config(backoff);
        match tokio::time::timeout(self.connect_timeout, builder.build()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(source)) => Err(Error::Kafka {
                context: format!("connecting to {}", self.bootstrap.join(",")),
                source: Arc::new(source),
            }),
            Err(_) => Err(Error::Unreachable {
                bootstrap: self.bootstrap.join(","),
                waited: self.connect_timeout,
            }),
        }
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
