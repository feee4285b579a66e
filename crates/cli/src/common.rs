//! What every cluster subcommand shares: the connection arguments, table rendering and writing the
//! answer to stdout.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use kafkit::group::{GroupConfig, GroupProtocol};
use kafkit::resilience::ResilienceConfig;
use kafkit::{ClientConfig, Security};

use crate::Failure;

/// The cluster to talk to.
#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    /// The Kafka cluster, `host:port[,host:port...]`.
    #[arg(
        long = "bootstrap-server",
        env = "KAFKA_BOOTSTRAP",
        value_name = "HOST:PORT,..."
    )]
    pub(crate) bootstrap_server: String,

    /// How long to keep trying to reach the cluster before giving up (exit 4), in milliseconds:
    /// every attempt included, each from TCP to the broker's first answers (TLS, ApiVersions, SASL).
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub(crate) connect_timeout_ms: u64,

    #[command(flatten)]
    pub(crate) security: SecurityArgs,
}

/// How to authenticate and encrypt. The password is read from the environment or a file only, never
/// from the command line (where `ps` would show it).
#[derive(Debug, Args)]
pub(crate) struct SecurityArgs {
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (SSL needs a build with the `tls` feature).
    #[arg(long, env = "KAFKA_SECURITY_PROTOCOL", value_name = "PROTOCOL")]
    security_protocol: Option<String>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (default SCRAM-SHA-512).
    #[arg(long, env = "KAFKA_SASL_MECHANISM", value_name = "MECHANISM")]
    sasl_mechanism: Option<String>,
    /// The SASL user; the password comes from KAFKA_SASL_PASSWORD or --sasl-password-file.
    #[arg(long, env = "KAFKA_SASL_USERNAME", value_name = "USER")]
    sasl_username: Option<String>,
    /// A file whose first line is the SASL password.
    #[arg(long, value_name = "PATH")]
    sasl_password_file: Option<std::path::PathBuf>,
    /// PEM CA certificates to trust (default: the system's trust store).
    #[arg(long, env = "KAFKA_SSL_CA_LOCATION", value_name = "PATH")]
    ssl_ca_location: Option<String>,
    /// PEM client certificate, for brokers that require one.
    #[arg(long, env = "KAFKA_SSL_CERTIFICATE_LOCATION", value_name = "PATH")]
    ssl_certificate_location: Option<String>,
    /// PEM private key of the client certificate (unencrypted).
    #[arg(long, env = "KAFKA_SSL_KEY_LOCATION", value_name = "PATH")]
    ssl_key_location: Option<String>,
}

impl SecurityArgs {
    /// The security settings, with the names of the environment variables the library reads.
    fn security(&self) -> Result<Security, Failure> {
        let password = match &self.sasl_password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| Failure {
                        code: crate::EXIT_USAGE,
                        message: format!("--sasl-password-file {}: {e}", path.display()),
                    })?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            None => std::env::var("KAFKA_SASL_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty()),
        };
        let security = Security::from_lookup(|name| match name {
            "KAFKA_SECURITY_PROTOCOL" => self.security_protocol.clone(),
            "KAFKA_SASL_MECHANISM" => self.sasl_mechanism.clone(),
            "KAFKA_SASL_USERNAME" => self.sasl_username.clone(),
            "KAFKA_SASL_PASSWORD" => password.clone(),
            "KAFKA_SSL_CA_LOCATION" => self.ssl_ca_location.clone(),
            "KAFKA_SSL_CERTIFICATE_LOCATION" => self.ssl_certificate_location.clone(),
            "KAFKA_SSL_KEY_LOCATION" => self.ssl_key_location.clone(),
            _ => None,
        })
        .map_err(kafkit::Error::from)?;
        Ok(security)
    }
}

impl ClusterArgs {
    /// The client settings for this cluster, with the CLI's client id and the reconnect backoff
    /// from the environment.
    pub(crate) fn client(&self) -> Result<ClientConfig, Failure> {
        with_env_reconnect_backoff(
            ClientConfig::new(self.bootstrap_server.split(',').map(str::trim))?
                .client_id("kafkit-cli")
                .connect_timeout(Duration::from_millis(self.connect_timeout_ms))
                .with_security(self.security.security()?)?,
        )
    }
}

/// The group protocol of a command that joins a group.
#[derive(Debug, Args)]
pub(crate) struct GroupProtocolArgs {
    /// The consumer-group protocol: classic, or consumer (KIP-848, Kafka 4.0+: the broker
    /// assigns partitions and members rebalance one by one). Default from KAFKA_GROUP_PROTOCOL,
    /// else classic.
    #[arg(long = "group-protocol", value_name = "PROTOCOL")]
    group_protocol: Option<String>,
    /// The broker-side assignor with --group-protocol consumer: uniform or range
    /// (`group.remote.assignor`). Default from KAFKA_GROUP_REMOTE_ASSIGNOR, else the broker's.
    #[arg(long = "group-remote-assignor", value_name = "ASSIGNOR")]
    group_remote_assignor: Option<String>,
}

impl GroupProtocolArgs {
    /// `group` with the environment's protocol settings, then the flags'. A bad value is exit 2.
    pub(crate) fn apply(&self, group: GroupConfig) -> Result<GroupConfig, Failure> {
        let mut group = group.env()?;
        if let Some(protocol) = &self.group_protocol {
            let protocol: GroupProtocol = protocol.parse().map_err(kafkit::Error::from)?;
            group = group.protocol(protocol);
        }
        if let Some(assignor) = &self.group_remote_assignor {
            group = group.remote_assignor(assignor.as_str());
        }
        Ok(group)
    }
}

/// `client` with the reconnect backoff of `KAFKA_RECONNECT_BACKOFF_MS` /
/// `KAFKA_RECONNECT_BACKOFF_MAX_MS` (a bad value is exit 2, naming the variable). Only these two of
/// the `KAFKA_*` resilience variables apply to the tools; the others are not read, so a value meant
/// for an application's consumer neither fails nor warns here.
pub(crate) fn with_env_reconnect_backoff(client: ClientConfig) -> Result<ClientConfig, Failure> {
    let config = ResilienceConfig::from_lookup(|name| {
        name.starts_with("KAFKA_RECONNECT_BACKOFF")
            .then(|| std::env::var(name).ok())
            .flatten()
    })
    .map_err(kafkit::Error::from)?;
    Ok(client.resilience(&config))
}

/// Writes `text` to stdout. A closed stdout (`| head`) is the reader's choice, not a failure.
pub(crate) fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Node ids as `1,2,3` (`-` for none).
pub(crate) fn ids(ids: &[i32]) -> String {
    if ids.is_empty() {
        return "-".to_owned();
    }
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_does_not_pad_the_last() {
        let t = table(
            &["A", "BB", "C"],
            vec![
                vec!["xxx".into(), "y".into(), "z".into()],
                vec!["-".into(), "yyyy".into(), "".into()],
            ],
        );
        assert_eq!(t, "A    BB    C\nxxx  y     z\n-    yyyy\n");
    }

    #[test]
    fn ids_join_with_commas_or_dash() {
        assert_eq!(ids(&[1, 2, 3]), "1,2,3");
        assert_eq!(ids(&[]), "-");
    }
}
