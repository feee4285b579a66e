//! The secured listeners (SASL_PLAINTEXT, SSL, SASL_SSL) of a local broker, checked with Kafka's own
//! Java AdminClient (`java/ClientCheck.java`): the right credentials connect, wrong ones are refused.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use kafkit_testkit::{BrokerOptions, LocalKafka, TlsMaterial, java_source};

const SCRAM: &str = "org.apache.kafka.common.security.scram.ScramLoginModule";
const PLAIN: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";

/// One AdminClient setup: a name and its client properties.
struct Case {
    name: &'static str,
    props: Vec<(String, String)>,
}

impl Case {
    fn new(name: &'static str, bootstrap: &str, protocol: &str) -> Self {
        Case {
            name,
            props: vec![
                ("bootstrap.servers".into(), bootstrap.into()),
                ("security.protocol".into(), protocol.into()),
            ],
        }
    }

    fn prop(mut self, key: &str, value: impl Into<String>) -> Self {
        self.props.push((key.into(), value.into()));
        self
    }

    fn sasl(self, mechanism: &str, user: &str, password: &str) -> Self {
        let module = if mechanism == "PLAIN" { PLAIN } else { SCRAM };
        self.prop("sasl.mechanism", mechanism).prop(
            "sasl.jaas.config",
            format!("{module} required username=\"{user}\" password=\"{password}\";"),
        )
    }

    fn trust(self, tls: &TlsMaterial) -> Self {
        self.prop("ssl.truststore.type", "PEM").prop(
            "ssl.truststore.location",
            tls.ca_path().display().to_string(),
        )
    }
}

/// Runs the cases in one JVM; returns each case's outcome line (after the name).
async fn run(cases: &[Case]) -> HashMap<String, String> {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("java/ClientCheck.java");
    let mut args = Vec::new();
    for case in cases {
        args.push("--case".to_owned());
        args.push(case.name.to_owned());
        args.extend(case.props.iter().map(|(k, v)| format!("{k}={v}")));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = java_source(&source, &args, Duration::from_secs(90))
        .await
        .expect("running ClientCheck.java");
    eprintln!("ClientCheck.java:\n{}", out.stdout);
    let results: HashMap<String, String> = out
        .stdout
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(name, outcome)| (name.to_owned(), outcome.to_owned()))
        .collect();
    for case in cases {
        assert!(
            results.contains_key(case.name),
            "no outcome for {}; stdout:\n{}\nstderr:\n{}",
            case.name,
            out.stdout,
            out.stderr
        );
    }
    results
}

fn assert_ok(results: &HashMap<String, String>, name: &str) {
    let outcome = &results[name];
    assert!(
        outcome.starts_with("ok nodes=1 "),
        "{name} should connect: {outcome}"
    );
}

fn assert_refused(results: &HashMap<String, String>, name: &str, exception: &str) {
    let outcome = &results[name];
    assert!(
        outcome.starts_with("fail ") && outcome.contains(exception),
        "{name} should fail with {exception}: {outcome}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_and_tls_listeners_accept_the_right_clients_only() {
    let kafka = LocalKafka::start_with(
        BrokerOptions::default()
            .sasl_users([("alice", "alice-secret"), ("bob", "b0b=s3cret!")])
            .tls(),
    )
    .await
    .expect("starting a broker with SASL users and TLS");
    let sasl = kafka
        .sasl_plaintext_bootstrap()
        .expect("a SASL_PLAINTEXT listener");
    let ssl = kafka.ssl_bootstrap().expect("an SSL listener");
    let sasl_ssl = kafka.sasl_ssl_bootstrap().expect("a SASL_SSL listener");
    let tls = kafka.tls_material().expect("TLS material");
    let ports = [&kafka.bootstrap(), &sasl, &ssl, &sasl_ssl];
    for (i, a) in ports.iter().enumerate() {
        for b in &ports[i + 1..] {
            assert_ne!(a, b, "every listener has its own port");
        }
    }

    let cases = [
        Case::new("plaintext", &kafka.bootstrap(), "PLAINTEXT"),
        Case::new("scram512", &sasl, "SASL_PLAINTEXT").sasl(
            "SCRAM-SHA-512",
            "alice",
            "alice-secret",
        ),
        Case::new("scram256", &sasl, "SASL_PLAINTEXT").sasl("SCRAM-SHA-256", "bob", "b0b=s3cret!"),
        Case::new("plain", &sasl, "SASL_PLAINTEXT").sasl("PLAIN", "alice", "alice-secret"),
        Case::new("scram512_wrong_password", &sasl, "SASL_PLAINTEXT").sasl(
            "SCRAM-SHA-512",
            "alice",
            "not-her-secret",
        ),
        Case::new("plain_wrong_password", &sasl, "SASL_PLAINTEXT").sasl(
            "PLAIN",
            "bob",
            "alice-secret",
        ),
        Case::new("scram_unknown_user", &sasl, "SASL_PLAINTEXT").sasl(
            "SCRAM-SHA-256",
            "mallory",
            "alice-secret",
        ),
        Case::new("ssl", &ssl, "SSL").trust(tls),
        // The JVM's default trust store does not know the test CA.
        Case::new("ssl_untrusted", &ssl, "SSL"),
        Case::new("sasl_ssl_scram", &sasl_ssl, "SASL_SSL")
            .trust(tls)
            .sasl("SCRAM-SHA-256", "alice", "alice-secret"),
        Case::new("sasl_ssl_plain", &sasl_ssl, "SASL_SSL")
            .trust(tls)
            .sasl("PLAIN", "bob", "b0b=s3cret!"),
        Case::new("sasl_ssl_wrong_password", &sasl_ssl, "SASL_SSL")
            .trust(tls)
            .sasl("SCRAM-SHA-512", "bob", "wrong"),
    ];
    let results = run(&cases).await;

    for ok in [
        "plaintext",
        "scram512",
        "scram256",
        "plain",
        "ssl",
        "sasl_ssl_scram",
        "sasl_ssl_plain",
    ] {
        assert_ok(&results, ok);
    }
    for refused in [
        "scram512_wrong_password",
        "plain_wrong_password",
        "scram_unknown_user",
        "sasl_ssl_wrong_password",
    ] {
        assert_refused(&results, refused, "SaslAuthenticationException");
    }
    assert_refused(&results, "ssl_untrusted", "SslAuthenticationException");
}

#[tokio::test(flavor = "multi_thread")]
async fn required_client_certificates_survive_a_restart() {
    let kafka = LocalKafka::start_with(BrokerOptions::default().tls_client_auth_required())
        .await
        .expect("starting a broker with TLS client authentication");
    assert_eq!(kafka.sasl_plaintext_bootstrap(), None);
    assert_eq!(kafka.sasl_ssl_bootstrap(), None);
    let ssl = kafka.ssl_bootstrap().expect("an SSL listener");
    let tls = kafka.tls_material().expect("TLS material").clone();

    let with_keystore_file = || {
        Case::new("client_cert_file", &ssl, "SSL")
            .trust(&tls)
            .prop("ssl.keystore.type", "PEM")
            .prop(
                "ssl.keystore.location",
                tls.client_keystore_path().display().to_string(),
            )
    };
    let results = run(&[
        with_keystore_file(),
        Case::new("no_client_cert", &ssl, "SSL").trust(&tls),
    ])
    .await;
    assert_ok(&results, "client_cert_file");
    assert_refused(&results, "no_client_cert", "SslAuthenticationException");

    kafka.restart().await.expect("restarting the broker");
    assert_eq!(kafka.ssl_bootstrap().as_deref(), Some(ssl.as_str()));
    assert_eq!(
        kafka.tls_material().expect("TLS material").ca_pem(),
        tls.ca_pem()
    );
    // The same CA and client certificate after the restart, this time given inline as PEM strings.
    let results = run(&[
        with_keystore_file(),
        Case::new("client_cert_inline", &ssl, "SSL")
            .prop("ssl.truststore.type", "PEM")
            .prop("ssl.truststore.certificates", tls.ca_pem())
            .prop("ssl.keystore.type", "PEM")
            .prop("ssl.keystore.certificate.chain", tls.client_cert_pem())
            .prop("ssl.keystore.key", tls.client_key_pem()),
    ])
    .await;
    assert_ok(&results, "client_cert_file");
    assert_ok(&results, "client_cert_inline");
}
