//! How connections authenticate and encrypt: one configuration, applied to every kafkit connection
//! (the producer's, the consumer's fetches and group coordinator, admin) alike.
//!
//! - `security.protocol` is one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL.
//! - SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) works in the default, pure-Rust build: the mechanisms
//!   come from `rsasl`.
//! - TLS needs the opt-in `tls` feature (rustls with the `ring` provider, which needs a C compiler).
//!   Without it, SSL and SASL_SSL are rejected when the configuration is built.
//!
//! Invariant: secrets (the SASL password, an inline private key) are held in types whose `Debug`
//! prints a placeholder, are never formatted into errors or logs, and are only read where a
//! handshake needs them.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use kafkit_resilience::ConfigError;

/// `security.protocol`: how a connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    #[default]
    Plaintext,
    /// TLS; the client authenticates with a certificate if one is configured.
    Ssl,
    /// SASL authentication without TLS.
    SaslPlaintext,
    /// SASL authentication inside TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Whether connections start with a TLS handshake.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether connections authenticate with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// Kafka's name for it, e.g. `SASL_SSL`.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SecurityProtocol {
    type Err = ConfigError;

    /// Kafka's names, case-insensitive.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(SecurityProtocol::Plaintext),
            "SSL" => Ok(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Ok(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Ok(SecurityProtocol::SaslSsl),
            _ => Err(ConfigError::new(
                "security.protocol",
                format!("`{s}` is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
            )),
        }
    }
}

/// `sasl.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// PLAIN: the password travels as is; use it only inside TLS.
    Plain,
    /// SCRAM-SHA-256: a salted challenge; the password never travels.
    ScramSha256,
    /// SCRAM-SHA-512.
    ScramSha512,
}

impl SaslMechanism {
    /// Kafka's name for it, e.g. `SCRAM-SHA-512`.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SaslMechanism {
    type Err = ConfigError;

    /// Kafka's names, case-insensitive.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            _ => Err(ConfigError::new(
                "sasl.mechanism",
                format!(
                    "`{s}` is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (OAUTHBEARER and GSSAPI are not supported)"
                ),
            )),
        }
    }
}

/// A secret string. `Debug` prints `"<redacted>"`; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<Arc<str>>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for a handshake.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// SASL credentials (`sasl.mechanism`, `sasl.username`, `sasl.password`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslCredentials {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The user name (not secret: it is logged by brokers too).
    pub username: String,
    /// The password.
    pub password: Secret,
}

impl SaslCredentials {
    /// Credentials for `mechanism`.
    pub fn new(
        mechanism: SaslMechanism,
        username: impl Into<String>,
        password: impl Into<Arc<str>>,
    ) -> Self {
        Self {
            mechanism,
            username: username.into(),
            password: Secret::new(password),
        }
    }
}

/// PEM material: a file or the PEM text itself.
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    /// A file holding PEM blocks.
    File(PathBuf),
    /// The PEM text.
    Inline(Secret),
}

impl Pem {
    /// The PEM bytes (reads the file), or an error naming `setting`.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn read(&self, setting: &'static str) -> Result<Vec<u8>, ConfigError> {
        match self {
            Pem::File(path) => std::fs::read(path).map_err(|e| {
                ConfigError::new(setting, format!("cannot read {}: {e}", path.display()))
            }),
            Pem::Inline(text) => Ok(text.expose().as_bytes().to_vec()),
        }
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(path) => f.debug_tuple("File").field(path).finish(),
            Pem::Inline(_) => f.write_str("Inline(\"<redacted>\")"),
        }
    }
}

/// TLS settings: whom to trust and, for mutual TLS, who we are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// CA certificates to trust (`ssl.ca.location`). `None`: the system's trust store.
    pub ca: Option<Pem>,
    /// The client certificate chain (`ssl.certificate.location`), for brokers that require one.
    pub client_cert: Option<Pem>,
    /// The client certificate's private key (`ssl.key.location`), unencrypted PKCS#8, PKCS#1 or SEC1.
    pub client_key: Option<Pem>,
}

/// The whole security configuration of a client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// `security.protocol`.
    pub protocol: SecurityProtocol,
    /// SASL credentials, for SASL_PLAINTEXT and SASL_SSL.
    pub sasl: Option<SaslCredentials>,
    /// TLS settings, for SSL and SASL_SSL.
    pub tls: TlsSettings,
}

impl Security {
    /// SASL without TLS.
    pub fn sasl_plaintext(credentials: SaslCredentials) -> Self {
        Self {
            protocol: SecurityProtocol::SaslPlaintext,
            sasl: Some(credentials),
            tls: TlsSettings::default(),
        }
    }

    /// TLS without SASL.
    pub fn ssl(tls: TlsSettings) -> Self {
        Self {
            protocol: SecurityProtocol::Ssl,
            sasl: None,
            tls,
        }
    }

    /// SASL inside TLS.
    pub fn sasl_ssl(credentials: SaslCredentials, tls: TlsSettings) -> Self {
        Self {
            protocol: SecurityProtocol::SaslSsl,
            sasl: Some(credentials),
            tls,
        }
    }

    /// From the environment: `KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_MECHANISM` (default
    /// SCRAM-SHA-512), `KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD`, `KAFKA_SSL_CA_LOCATION`,
    /// `KAFKA_SSL_CERTIFICATE_LOCATION`, `KAFKA_SSL_KEY_LOCATION`. Unset: PLAINTEXT.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// As [`from_env`](Self::from_env), reading variables through `var`.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let protocol = match var("KAFKA_SECURITY_PROTOCOL") {
            Some(p) => p.parse()?,
            None => SecurityProtocol::Plaintext,
        };
        let username = var("KAFKA_SASL_USERNAME");
        let password = var("KAFKA_SASL_PASSWORD");
        let sasl = match (username, password) {
            (Some(user), Some(password)) => {
                let mechanism = match var("KAFKA_SASL_MECHANISM") {
                    Some(m) => m.parse()?,
                    None => SaslMechanism::ScramSha512,
                };
                Some(SaslCredentials::new(mechanism, user, password))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "sasl.password",
                    "KAFKA_SASL_USERNAME is set but KAFKA_SASL_PASSWORD is not",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "sasl.username",
                    "KAFKA_SASL_PASSWORD is set but KAFKA_SASL_USERNAME is not",
                ));
            }
        };
        let file = |name: &str| var(name).map(|p| Pem::File(PathBuf::from(p)));
        let security = Self {
            protocol,
            sasl,
            tls: TlsSettings {
                ca: file("KAFKA_SSL_CA_LOCATION"),
                client_cert: file("KAFKA_SSL_CERTIFICATE_LOCATION"),
                client_key: file("KAFKA_SSL_KEY_LOCATION"),
            },
        };
        security.validate()?;
        Ok(security)
    }

    /// Checks that the parts fit together, naming the setting that does not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (self.protocol.uses_sasl(), &self.sasl) {
            (true, None) => {
                return Err(ConfigError::new(
                    "sasl.mechanism",
                    format!(
                        "security.protocol {} needs SASL credentials (mechanism, username, password)",
                        self.protocol
                    ),
                ));
            }
            (false, Some(_)) => {
                return Err(ConfigError::new(
                    "security.protocol",
                    format!(
                        "SASL credentials are set but security.protocol is {}; use SASL_PLAINTEXT or SASL_SSL",
                        self.protocol
                    ),
                ));
            }
            _ => {}
        }
        if let Some(sasl) = &self.sasl {
            if sasl.username.is_empty() {
                return Err(ConfigError::new("sasl.username", "must not be empty"));
            }
            if sasl.password.expose().is_empty() {
                return Err(ConfigError::new("sasl.password", "must not be empty"));
            }
        }
        let tls = &self.tls;
        let has_tls_settings =
            tls.ca.is_some() || tls.client_cert.is_some() || tls.client_key.is_some();
        if !self.protocol.uses_tls() && has_tls_settings {
            return Err(ConfigError::new(
                "security.protocol",
                format!(
                    "TLS settings are set but security.protocol is {}; use SSL or SASL_SSL",
                    self.protocol
                ),
            ));
        }
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            return Err(ConfigError::new(
                if tls.client_cert.is_some() {
                    "ssl.key.location"
                } else {
                    "ssl.certificate.location"
                },
                "a client certificate and its key go together",
            ));
        }
        if self.protocol.uses_tls() && !cfg!(feature = "tls") {
            return Err(ConfigError::new(
                "security.protocol",
                format!(
                    "{} needs kafkit built with the `tls` feature (the default build is pure Rust, without TLS)",
                    self.protocol
                ),
            ));
        }
        Ok(())
    }
}

/// A TLS client configuration built from [`TlsSettings`], shared by every connection.
#[cfg(feature = "tls")]
#[derive(Clone)]
pub(crate) struct TlsClient(pub(crate) Arc<rustls::ClientConfig>);

#[cfg(feature = "tls")]
impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsClient")
    }
}

#[cfg(feature = "tls")]
impl TlsClient {
    /// Loads the CA (or the system trust store) and the client certificate, naming the setting
    /// whose material is unusable.
    pub(crate) fn build(settings: &TlsSettings) -> Result<Self, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let mut roots = rustls::RootCertStore::empty();
        match &settings.ca {
            Some(ca) => {
                let pem = ca.read("ssl.ca.location")?;
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| {
                        ConfigError::new("ssl.ca.location", format!("not PEM certificates: {e}"))
                    })?;
                if certs.is_empty() {
                    return Err(ConfigError::new(
                        "ssl.ca.location",
                        "holds no PEM certificate",
                    ));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| {
                        ConfigError::new("ssl.ca.location", format!("unusable CA certificate: {e}"))
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(ConfigError::new(
                        "ssl.ca.location",
                        "not set and the system trust store has no certificates",
                    ));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new("security.protocol", e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&settings.client_cert, &settings.client_key) {
            (Some(cert), Some(key)) => {
                let pem = cert.read("ssl.certificate.location")?;
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| {
                        ConfigError::new(
                            "ssl.certificate.location",
                            format!("not PEM certificates: {e}"),
                        )
                    })?;
                let key_pem = key.read("ssl.key.location")?;
                // The key's own error text is not repeated: it could quote key material.
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
                    ConfigError::new(
                        "ssl.key.location",
                        "holds no unencrypted PKCS#8, PKCS#1 or SEC1 private key",
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ConfigError::new("ssl.certificate.location", e.to_string()))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Self(Arc::new(config)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn names_round_trip_and_bad_names_name_the_setting() {
        for p in ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] {
            assert_eq!(p.parse::<SecurityProtocol>().unwrap().as_str(), p);
        }
        for m in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            assert_eq!(m.parse::<SaslMechanism>().unwrap().as_str(), m);
        }
        assert_eq!(
            "sasl_ssl".parse::<SecurityProtocol>().unwrap(),
            SecurityProtocol::SaslSsl
        );
        let e = "TLS".parse::<SecurityProtocol>().unwrap_err().to_string();
        assert!(e.contains("security.protocol"), "{e}");
        let e = "GSSAPI".parse::<SaslMechanism>().unwrap_err().to_string();
        assert!(e.contains("sasl.mechanism"), "{e}");
    }

    #[test]
    fn environment_builds_sasl_and_rejects_half_credentials() {
        let s = Security::from_lookup(vars(&[
            ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256"),
            ("KAFKA_SASL_USERNAME", "alice"),
            ("KAFKA_SASL_PASSWORD", "hunter2"),
        ]))
        .unwrap();
        assert_eq!(s.protocol, SecurityProtocol::SaslPlaintext);
        let sasl = s.sasl.as_ref().unwrap();
        assert_eq!(
            (sasl.mechanism, sasl.username.as_str()),
            (SaslMechanism::ScramSha256, "alice")
        );
        assert_eq!(
            Security::from_lookup(vars(&[])).unwrap(),
            Security::default()
        );
        let e = Security::from_lookup(vars(&[
            ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
            ("KAFKA_SASL_USERNAME", "alice"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("sasl.password"), "{e}");
        let e = Security::from_lookup(vars(&[("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sasl.mechanism"), "{e}");
    }

    #[test]
    fn parts_that_do_not_fit_are_rejected_naming_the_setting() {
        let creds = SaslCredentials::new(SaslMechanism::Plain, "u", "p");
        let mut s = Security::sasl_plaintext(creds.clone());
        s.protocol = SecurityProtocol::Plaintext;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("security.protocol")
        );
        let s = Security::sasl_plaintext(SaslCredentials::new(SaslMechanism::Plain, "u", ""));
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("sasl.password")
        );
        let s = Security {
            protocol: SecurityProtocol::SaslPlaintext,
            sasl: Some(creds),
            tls: TlsSettings {
                ca: Some(Pem::File("/ca.pem".into())),
                ..TlsSettings::default()
            },
        };
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("security.protocol")
        );
        let s = Security::ssl(TlsSettings {
            client_cert: Some(Pem::File("/c.pem".into())),
            ..TlsSettings::default()
        });
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("ssl.key.location")
        );
        let ssl = Security::ssl(TlsSettings::default()).validate();
        if cfg!(feature = "tls") {
            ssl.unwrap();
        } else {
            assert!(ssl.unwrap_err().to_string().contains("`tls` feature"));
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = Security::sasl_ssl(
            SaslCredentials::new(SaslMechanism::ScramSha512, "alice", "pa55-w0rd-xyz"),
            TlsSettings {
                ca: Some(Pem::File("/etc/ca.pem".into())),
                client_cert: Some(Pem::Inline(Secret::new("CERT-TEXT-123"))),
                client_key: Some(Pem::Inline(Secret::new("KEY-TEXT-456"))),
            },
        );
        let debug = format!("{s:?} {s:#?}");
        for secret in ["pa55-w0rd-xyz", "CERT-TEXT-123", "KEY-TEXT-456"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
        assert!(
            debug.contains("alice") && debug.contains("/etc/ca.pem"),
            "{debug}"
        );
    }
}
