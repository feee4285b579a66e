//! SASL and TLS against a secured local broker (kafkit-testkit's SASL_PLAINTEXT, SSL and SASL_SSL
//! listeners): produce, group consume with commits and `kafkit diag` over SASL/SCRAM and over TLS;
//! wrong credentials and mismatched listeners fail fast with a clear, non-retriable error; no secret
//! reaches logs (every tracing event of this test binary is captured and searched), `Debug` output,
//! errors or metrics.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kafkit::admin::{self, NewTopic};
use kafkit::consumer::{ConsumerBuilder, DispatchMode, OffsetReset};
use kafkit::metrics::{Metrics, MetricsConfig};
use kafkit::{
    ClientConfig, Pem, ProducerBuilder, ProducerRecord, SaslCredentials, SaslMechanism, Security,
    TlsSettings,
};
use kafkit_integration_tests::kafkit_bin;
use kafkit_integration_tests::support::{POLL, eventually_every, test_group};
use kafkit_testkit::{BrokerOptions, LocalKafka, random_name};
use tokio::sync::OnceCell;

const USER: &str = "alice";
const PASSWORD: &str = "Al1ce-s3cret-pw";
const WRONG: &str = "not-Al1ces-pw-9";

/// Every tracing event of this test binary, at every level, as text.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

#[derive(Clone)]
struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs().lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One broker with SASL users and TLS for the whole file; installs the log capture first.
async fn kafka() -> &'static LocalKafka {
    static KAFKA: OnceCell<LocalKafka> = OnceCell::const_new();
    KAFKA
        .get_or_init(|| async {
            let _ = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(|| Capture)
                .with_ansi(false)
                .try_init();
            LocalKafka::start_with(BrokerOptions::default().sasl_user(USER, PASSWORD).tls())
                .await
                .expect("secured broker starts")
        })
        .await
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [PASSWORD, WRONG] {
        assert!(
            !text.contains(secret),
            "a password leaked into {what}: {text}"
        );
    }
}

fn sasl(mechanism: SaslMechanism, password: &str) -> SaslCredentials {
    SaslCredentials::new(mechanism, USER, password)
}

fn tls(kafka: &LocalKafka) -> TlsSettings {
    TlsSettings {
        ca: Some(Pem::File(kafka.tls_material().unwrap().ca_path())),
        ..TlsSettings::default()
    }
}

fn client(bootstrap: &str, security: Security) -> ClientConfig {
    ClientConfig::new([bootstrap])
        .unwrap()
        .client_id("security-test")
        .connect_timeout(Duration::from_secs(20))
        .with_security(security)
        .expect("valid security settings")
}

/// Creates a topic, produces `n` records, consumes them in a group with commits, and checks that the
/// group's committed offsets reach the end of every partition. Everything over `client`.
async fn produce_consume_commit(client: &ClientConfig, n: usize) {
    let topic = random_name("secure");
    admin::create_topics(
        client,
        &[NewTopic::new(&topic).partitions(3).replication_factor(1)],
    )
    .await
    .unwrap();
    let producer = ProducerBuilder::new(client.clone()).build().await.unwrap();
    let sends = (0..n).map(|i| {
        let producer = producer.clone();
        let record = ProducerRecord::new(&topic, i.to_string()).key(format!("k{}", i % 7));
        async move { producer.send(record).await.unwrap() }
    });
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for d in futures::future::join_all(sends).await {
        let end = ends.entry(d.partition).or_default();
        *end = (*end).max(d.offset + 1);
    }

    let metrics = Metrics::new(MetricsConfig::default());
    let group = random_name("secure-group");
    let consumer = ConsumerBuilder::new(client.clone(), test_group(&group, &topic))
        .dispatch(DispatchMode::KeyOrdered { max_in_flight: 16 })
        .auto_offset_reset(OffsetReset::Earliest)
        .commit_interval(Duration::from_millis(200))
        .revoke_timeout(Duration::from_secs(10))
        .metrics(metrics.clone())
        .build()
        .await
        .unwrap();
    let stop = consumer.shutdown_handle();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let run = tokio::spawn(consumer.run(move |_record| {
        let seen = Arc::clone(&counter);
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(())
        }
    }));
    eventually_every(
        Duration::from_secs(60),
        POLL,
        || format!("consumed {} of {n}", seen.load(Ordering::SeqCst)),
        || seen.load(Ordering::SeqCst) >= n,
    )
    .await;
    stop.shutdown();
    run.await.unwrap().unwrap();
    let lag = admin::group_lag(client, &group).await.unwrap();
    let committed: BTreeMap<i32, i64> = lag
        .iter()
        .filter_map(|p| Some((p.partition, p.committed?)))
        .collect();
    assert_eq!(committed, ends, "the group committed every produced record");
    assert_no_secret("the metrics", &metrics.snapshot().to_prometheus());
}

fn kafkit_diag(bootstrap: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(kafkit_bin());
    cmd.args(["diag", "--bootstrap-server", bootstrap])
        .args(args)
        .env_remove("KAFKA_BOOTSTRAP");
    for var in [
        "KAFKA_SECURITY_PROTOCOL",
        "KAFKA_SASL_MECHANISM",
        "KAFKA_SASL_USERNAME",
        "KAFKA_SASL_PASSWORD",
        "KAFKA_SSL_CA_LOCATION",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied())
        .output()
        .expect("running kafkit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_produce_consume_commit_and_diag() {
    let kafka = kafka().await;
    let bootstrap = kafka.sasl_plaintext_bootstrap().unwrap();
    let client512 = client(
        &bootstrap,
        Security::sasl_plaintext(sasl(SaslMechanism::ScramSha512, PASSWORD)),
    );
    produce_consume_commit(&client512, 300).await;
    // The other mechanisms authenticate too (kafkit's own connection and rskafka's).
    for mechanism in [SaslMechanism::ScramSha256, SaslMechanism::Plain] {
        let c = client(
            &bootstrap,
            Security::sasl_plaintext(sasl(mechanism, PASSWORD)),
        );
        let cluster = admin::describe_cluster(&c).await.unwrap();
        assert_eq!(cluster.brokers.len(), 1, "{mechanism}");
        ProducerBuilder::new(c).build().await.unwrap();
    }

    let out = kafkit_diag(
        &bootstrap,
        &[
            ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("KAFKA_SASL_USERNAME", USER),
            ("KAFKA_SASL_PASSWORD", PASSWORD),
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "diag over SCRAM: {stdout}\n{stderr}");
    assert_no_secret("diag's output", &format!("{stdout}{stderr}"));
    assert_no_secret(
        "the logs",
        &String::from_utf8_lossy(&logs().lock().unwrap()),
    );
    assert_no_secret("Debug of the client", &format!("{client512:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_fast_with_a_clear_error() {
    let kafka = kafka().await;
    let bootstrap = kafka.sasl_plaintext_bootstrap().unwrap();
    for mechanism in [SaslMechanism::ScramSha512, SaslMechanism::Plain] {
        let c = client(&bootstrap, Security::sasl_plaintext(sasl(mechanism, WRONG)));
        let started = Instant::now();
        let err = ProducerBuilder::new(c.clone()).build().await.unwrap_err();
        let waited = started.elapsed();
        let text = err.to_string();
        assert!(
            waited < Duration::from_secs(5),
            "failed after {waited:?}: {text}"
        );
        assert!(!err.is_retriable(), "{text}");
        for needle in [
            mechanism.as_str(),
            bootstrap.as_str(),
            USER,
            "authentication",
        ] {
            assert!(text.contains(needle), "`{needle}` in: {text}");
        }
        assert_no_secret("the error", &format!("{text} {err:?}"));
        // The consumer and the admin tools fail the same way.
        let Err(err) = ConsumerBuilder::new(c.clone(), test_group(&random_name("g"), "t"))
            .revoke_timeout(Duration::from_secs(10))
            .build()
            .await
        else {
            panic!("a consumer with a wrong password was built");
        };
        assert!(err.to_string().contains(mechanism.as_str()), "{err}");
        let err = admin::describe_cluster(&c).await.unwrap_err();
        assert!(err.to_string().contains(mechanism.as_str()), "{err}");
    }

    let out = kafkit_diag(
        &bootstrap,
        &[
            ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
            ("KAFKA_SASL_USERNAME", USER),
            ("KAFKA_SASL_PASSWORD", WRONG),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("SCRAM-SHA-512"), "{stderr}");
    assert_no_secret("diag's error", &stderr);
    assert_no_secret(
        "the logs",
        &String::from_utf8_lossy(&logs().lock().unwrap()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_protocol_does_not_fit_the_listener_fails_fast() {
    let kafka = kafka().await;
    let tls_port = kafka.ssl_bootstrap().unwrap();
    let sasl_port = kafka.sasl_plaintext_bootstrap().unwrap();
    let cases = [
        (tls_port.clone(), Security::default(), "TLS"),
        (sasl_port, Security::default(), "SASL"),
        (kafka.bootstrap(), Security::ssl(tls(kafka)), "TLS"),
    ];
    for (bootstrap, security, hint) in cases {
        let protocol = security.protocol;
        let started = Instant::now();
        let err = ProducerBuilder::new(client(&bootstrap, security))
            .build()
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{protocol} to {bootstrap}: {text}"
        );
        assert!(!err.is_retriable(), "{text}");
        assert!(
            text.contains(&bootstrap) && text.contains(hint),
            "{protocol} to {bootstrap}: {text}"
        );
    }
    // Trusting a certificate that did not sign the broker's (the client certificate, as if a CA).
    let other = kafka.tls_material().unwrap().client_cert_path();
    let err = ProducerBuilder::new(client(
        &tls_port,
        Security::ssl(TlsSettings {
            ca: Some(Pem::File(other)),
            ..TlsSettings::default()
        }),
    ))
    .build()
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("TLS handshake") && !err.is_retriable(),
        "{err}"
    );

    let out = kafkit_diag(&tls_port, &[], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "stderr: {stderr}");
    assert!(stderr.contains("TLS"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_sasl_over_tls_produce_consume_commit_and_diag() {
    let kafka = kafka().await;
    let ssl = client(&kafka.ssl_bootstrap().unwrap(), Security::ssl(tls(kafka)));
    produce_consume_commit(&ssl, 200).await;
    let sasl_ssl = client(
        &kafka.sasl_ssl_bootstrap().unwrap(),
        Security::sasl_ssl(sasl(SaslMechanism::ScramSha256, PASSWORD), tls(kafka)),
    );
    produce_consume_commit(&sasl_ssl, 100).await;

    let ca = kafka.tls_material().unwrap().ca_path();
    let out = kafkit_diag(
        &kafka.ssl_bootstrap().unwrap(),
        &[("KAFKA_SECURITY_PROTOCOL", "SSL")],
        &["--ssl-ca-location", ca.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "diag over TLS: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_requires_client_certificates_accepts_ours_and_refuses_none() {
    let _ = kafka().await; // the log capture
    let kafka = LocalKafka::start_with(BrokerOptions::default().tls_client_auth_required())
        .await
        .unwrap();
    let material = kafka.tls_material().unwrap();
    let bootstrap = kafka.ssl_bootstrap().unwrap();
    let mutual = TlsSettings {
        ca: Some(Pem::File(material.ca_path())),
        client_cert: Some(Pem::File(material.client_cert_path())),
        client_key: Some(Pem::Inline(kafkit::Secret::new(material.client_key_pem()))),
    };
    let with_cert = client(&bootstrap, Security::ssl(mutual));
    assert_eq!(
        admin::describe_cluster(&with_cert)
            .await
            .unwrap()
            .brokers
            .len(),
        1
    );
    ProducerBuilder::new(with_cert.clone())
        .build()
        .await
        .unwrap();
    assert!(
        !format!("{with_cert:?}").contains("PRIVATE KEY"),
        "the inline key leaked into Debug"
    );

    let started = Instant::now();
    let err = ProducerBuilder::new(client(&bootstrap, Security::ssl(tls(&kafka))))
        .build()
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5) && !err.is_retriable(),
        "{err}"
    );
    assert!(err.to_string().contains(&bootstrap), "{err}");
}

/// Runs `kafkit args...` with no security settings in its environment, and `stdin` as its input.
fn kafkit_plain(args: &[&str], stdin: &str) -> Output {
    let mut cmd = std::process::Command::new(kafkit_bin());
    cmd.args(args).env_remove("KAFKA_BOOTSTRAP");
    for var in [
        "KAFKA_SECURITY_PROTOCOL",
        "KAFKA_SASL_MECHANISM",
        "KAFKA_SASL_USERNAME",
        "KAFKA_SASL_PASSWORD",
        "KAFKA_SSL_CA_LOCATION",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running kafkit");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("writing kafkit's stdin");
    child.wait_with_output().expect("waiting for kafkit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_reports_a_sasl_listener_without_sasl_as_exit_6_with_one_message() {
    let kafka = kafka().await;
    kafkit_bin(); // built before anything is timed
    let sasl_port = kafka.sasl_plaintext_bootstrap().unwrap();
    let b = sasl_port.as_str();
    let topic = random_name("sasl-mismatch");
    let group = random_name("sasl-mismatch-group");
    let commands: &[&[&str]] = &[
        &["produce", "--bootstrap-server", b, "--topic", &topic],
        &["consume", "--bootstrap-server", b, "--topic", &topic],
        &[
            "consume",
            "--bootstrap-server",
            b,
            "--topic",
            &topic,
            "--timeout-ms",
            "5000",
        ],
        &["topics", "list", "--bootstrap-server", b],
        &[
            "topics",
            "describe",
            "--bootstrap-server",
            b,
            "--topic",
            &topic,
        ],
        &[
            "topics",
            "create",
            "--bootstrap-server",
            b,
            "--topic",
            &topic,
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
        &[
            "topics",
            "delete",
            "--bootstrap-server",
            b,
            "--topic",
            &topic,
        ],
        &["group", "list", "--bootstrap-server", b],
        &[
            "group",
            "describe",
            "--bootstrap-server",
            b,
            "--group-id",
            &group,
        ],
        &["diag", "--bootstrap-server", b],
        &[
            "verifiable-producer",
            "--bootstrap-server",
            b,
            "--topic",
            &topic,
            "--max-messages",
            "1",
        ],
        &[
            "verifiable-consumer",
            "--bootstrap-server",
            b,
            "--topic",
            &topic,
            "--group-id",
            &group,
        ],
    ];
    // What `produce` says is the message every command gives.
    let expected = format!(
        "kafkit: connecting to {b} with security.protocol PLAINTEXT: broker {b} closed the \
         connection at the first request after the handshake: the listener may require SASL \
         authentication (security.protocol SASL_PLAINTEXT or SASL_SSL)"
    );
    for args in commands {
        let started = Instant::now();
        let out = kafkit_plain(args, "a line\n");
        let waited = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "kafkit {args:?}: {stderr}");
        // The verifiable tools print JSON events on stdout; the error is still one line on stderr.
        let last = stderr.lines().last().unwrap_or_default();
        assert_eq!(last, expected, "kafkit {args:?}");
        assert_eq!(stderr.lines().count(), 1, "kafkit {args:?}: {stderr}");
        assert!(
            waited < Duration::from_secs(5),
            "kafkit {args:?} took {waited:?}: the mismatch is not retried"
        );
    }
}
