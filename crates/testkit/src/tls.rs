//! A throw-away PKI per cluster: a self-signed test CA, a server certificate for `127.0.0.1` and
//! `localhost`, and a client certificate, all signed by the CA and written as PEM files.
//!
//! Certificates are made with `rcgen` without its crypto backends (ring and aws-lc need a C compiler,
//! and the testkit is also built for the static musl demo, where there is none); keys are ECDSA P-256
//! from RustCrypto's pure-Rust `p256`, which Kafka's PEM key stores read (PKCS#8, `EC`).

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::elliptic_curve::Generate;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyIdMethod, KeyUsagePurpose, SanType, SerialNumber,
};

use crate::{Error, Result};

/// The distinguished name of the client certificate, so its Kafka principal is
/// `User:CN=kafkit-testkit-client`.
const CLIENT_CN: &str = "kafkit-testkit-client";

/// The test CA and the certificates of one cluster, as PEM strings and as files in its data directory.
///
/// Every node of the cluster serves the same server certificate (SANs `127.0.0.1` and `localhost`,
/// so clients can keep hostname verification on). The client certificate is accepted by listeners
/// that require client authentication ([`BrokerOptions::tls_client_auth_required`]); its Kafka
/// principal is `User:CN=kafkit-testkit-client`.
///
/// [`BrokerOptions::tls_client_auth_required`]: crate::BrokerOptions::tls_client_auth_required
#[derive(Clone)]
pub struct TlsMaterial {
    dir: PathBuf,
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    /// The directory only: the keys stay out of test output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Generates a fresh CA, server and client certificate and writes them into `dir` (created).
    pub(crate) fn generate(dir: &Path) -> Result<Self> {
        let ca_key = EcKey::generate()?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "kafkit-testkit CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.serial_number = Some(random_serial());
        // Without rcgen's crypto backend no hash derives key identifiers; a random one is as good
        // (RFC 5280 only asks that it be unique), and the leaves' authority key identifier repeats it.
        ca.key_identifier_method = KeyIdMethod::PreSpecified(rand::random::<[u8; 20]>().to_vec());
        let ca_cert = ca.self_signed(&ca_key).map_err(tls_error("the CA"))?;
        let issuer = Issuer::new(ca, &ca_key);

        let server_key = EcKey::generate()?;
        let mut server = leaf_params("localhost");
        server.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::DnsName(
                "localhost"
                    .try_into()
                    .map_err(tls_error("the server name"))?,
            ),
        ];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server
            .signed_by(&server_key, &issuer)
            .map_err(tls_error("the server certificate"))?;

        let client_key = EcKey::generate()?;
        let mut client = leaf_params(CLIENT_CN);
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client
            .signed_by(&client_key, &issuer)
            .map_err(tls_error("the client certificate"))?;

        let material = TlsMaterial {
            dir: dir.to_owned(),
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.pkcs8_pem()?,
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.pkcs8_pem()?,
        };
        material.write()?;
        Ok(material)
    }

    fn write(&self) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .map_err(Error::io(format!("creating {}", self.dir.display())))?;
        let files = [
            (self.ca_path(), self.ca_pem.clone()),
            (self.server_keystore_path(), self.server_keystore_pem()),
            (self.client_cert_path(), self.client_cert_pem.clone()),
            (self.client_key_path(), self.client_key_pem.clone()),
            (self.client_keystore_path(), self.client_keystore_pem()),
        ];
        for (path, pem) in files {
            fs::write(&path, pem).map_err(Error::io(format!("writing {}", path.display())))?;
        }
        Ok(())
    }

    /// The directory holding the PEM files (`<cluster data dir>/tls`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `ca.pem`: the test CA's certificate, the one trust anchor clients need.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The test CA's certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// `client.pem`: the client certificate, signed by the test CA.
    pub fn client_cert_path(&self) -> PathBuf {
        self.dir.join("client.pem")
    }

    /// The client certificate (PEM), signed by the test CA.
    pub fn client_cert_pem(&self) -> &str {
        &self.client_cert_pem
    }

    /// `client-key.pem`: the client certificate's private key (unencrypted PKCS#8 PEM, ECDSA P-256).
    pub fn client_key_path(&self) -> PathBuf {
        self.dir.join("client-key.pem")
    }

    /// The client certificate's private key (unencrypted PKCS#8 PEM, `-----BEGIN PRIVATE KEY-----`,
    /// ECDSA P-256).
    pub fn client_key_pem(&self) -> &str {
        &self.client_key_pem
    }

    /// `client-keystore.pem`: the client key followed by the client certificate and the CA, the form
    /// a Java client reads with `ssl.keystore.type=PEM` and `ssl.keystore.location`.
    pub fn client_keystore_path(&self) -> PathBuf {
        self.dir.join("client-keystore.pem")
    }

    /// The server certificate every node serves (PEM; SANs `127.0.0.1` and `localhost`).
    pub fn server_cert_pem(&self) -> &str {
        &self.server_cert_pem
    }

    /// `server-keystore.pem`: the server key, certificate and CA, the brokers' `ssl.keystore.location`.
    pub(crate) fn server_keystore_path(&self) -> PathBuf {
        self.dir.join("server-keystore.pem")
    }

    fn server_keystore_pem(&self) -> String {
        format!(
            "{}{}{}",
            self.server_key_pem, self.server_cert_pem, self.ca_pem
        )
    }

    fn client_keystore_pem(&self) -> String {
        format!(
            "{}{}{}",
            self.client_key_pem, self.client_cert_pem, self.ca_pem
        )
    }
}

/// A leaf certificate's parameters: common name, a random serial, signing usage, and the issuer's
/// key identifier.
fn leaf_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.serial_number = Some(random_serial());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params
}

/// 16 random bytes, positive (rcgen needs an explicit serial without its crypto backend).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn tls_error<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Tls {
        reason: format!("{what}: {e}"),
    }
}

/// An ECDSA P-256 key that signs certificates for rcgen.
struct EcKey {
    key: SigningKey,
    /// The uncompressed SEC1 public point: the `subjectPublicKey` of an EC certificate.
    public: Vec<u8>,
}

impl EcKey {
    fn generate() -> Result<Self> {
        let key = SigningKey::try_generate().map_err(tls_error("generating a P-256 key"))?;
        let public = key.verifying_key().to_sec1_point(false).as_bytes().to_vec();
        Ok(Self { key, public })
    }

    fn pkcs8_pem(&self) -> Result<String> {
        let pem = self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(tls_error("encoding a key as PKCS#8"))?;
        Ok(pem.as_str().to_owned())
    }
}

impl rcgen::PublicKeyData for EcKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for EcKey {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        let signature: DerSignature = self
            .key
            .try_sign(msg)
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        Ok(signature.as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_pem_files() {
        let dir = std::env::temp_dir().join(format!(
            "kafkit-testkit-tls-unit-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let tls = TlsMaterial::generate(&dir).unwrap();
        assert!(tls.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            tls.client_cert_pem()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(
            tls.client_key_pem()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert_ne!(tls.client_cert_pem(), tls.server_cert_pem());
        assert_eq!(fs::read_to_string(tls.ca_path()).unwrap(), tls.ca_pem());
        assert_eq!(
            fs::read_to_string(tls.client_key_path()).unwrap(),
            tls.client_key_pem()
        );
        let keystore = fs::read_to_string(tls.server_keystore_path()).unwrap();
        assert_eq!(keystore.matches("-----BEGIN PRIVATE KEY-----").count(), 1);
        assert_eq!(keystore.matches("-----BEGIN CERTIFICATE-----").count(), 2);
        assert!(!format!("{tls:?}").contains("PRIVATE"));
        let _ = fs::remove_dir_all(&dir);
    }
}
