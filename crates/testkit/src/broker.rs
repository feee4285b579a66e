//! Local Kafka brokers: KRaft combined mode (each node is broker and controller), loopback ports.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::sync::Mutex;

use rskafka::BackoffConfig;
use rskafka::client::ClientBuilder;

use crate::jars::kafka_classpath;
use crate::java::check_java;
use crate::process;
use crate::tls::TlsMaterial;
use crate::{Error, Result};

/// The SASL mechanisms the SASL listeners enable; every user of [`BrokerOptions::sasl_users`] is valid
/// for each.
const SASL_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// How local brokers are started.
///
/// Every broker has a `PLAINTEXT` client listener ([`Node::bootstrap`]), which is also the
/// inter-broker listener and the one the testkit probes for readiness. [`sasl_users`](Self::sasl_users)
/// and [`tls`](Self::tls) add secured client listeners beside it:
///
/// | options | listeners added |
/// | --- | --- |
/// | `sasl_users` | `SASL_PLAINTEXT` |
/// | `tls` | `SSL` |
/// | both | `SASL_PLAINTEXT`, `SSL`, `SASL_SSL` |
///
/// ```no_run
/// # async fn demo() -> Result<(), kafkit_testkit::Error> {
/// use kafkit_testkit::{BrokerOptions, LocalKafka};
/// let kafka = LocalKafka::start_with(
///     BrokerOptions::default()
///         .sasl_users([("alice", "alice-secret")])
///         .tls(),
/// )
/// .await?;
/// let scram = kafka.sasl_plaintext_bootstrap().unwrap(); // SCRAM-SHA-256/512 or PLAIN, alice
/// let tls = kafka.ssl_bootstrap().unwrap(); // trust kafka.tls_material().unwrap().ca_path()
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    heap: String,
    properties: Vec<(String, String)>,
    /// Entries for one node only: (node id, key, value).
    node_properties: Vec<(i32, String, String)>,
    start_timeout: Duration,
    /// `Some` once `sasl_users` was called: the SASL listeners exist, with these (name, password).
    sasl_users: Option<Vec<(String, String)>>,
    tls: bool,
    tls_client_auth_required: bool,
    /// Where the cluster's directory goes; `None`: the system temp dir.
    data_root: Option<PathBuf>,
}

impl Default for BrokerOptions {
    /// 512 MiB heap, 60 s to start, test-friendly broker settings.
    fn default() -> Self {
        Self {
            heap: "512m".into(),
            properties: Vec::new(),
            node_properties: Vec::new(),
            start_timeout: Duration::from_secs(60),
            sasl_users: None,
            tls: false,
            tls_client_auth_required: false,
            data_root: None,
        }
    }
}

impl BrokerOptions {
    /// The JVM heap of each broker (`-Xmx`/`-Xms`), e.g. `"512m"`. Default 512m.
    pub fn heap(mut self, heap: impl Into<String>) -> Self {
        self.heap = heap.into();
        self
    }

    /// A `server.properties` entry, added after (so overriding) the testkit's defaults.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// A `server.properties` entry for node `node` only (ids count from 1), added after the entries
    /// of [`property`](Self::property); e.g. a `broker.rack` per node.
    pub fn node_property(
        mut self,
        node: i32,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.node_properties.push((node, key.into(), value.into()));
        self
    }

    /// The directory under which the cluster keeps its data, logs and configs (in
    /// `<dir>/kafkit-testkit/<pid>-<n>`, removed when the cluster is dropped). Default: the system
    /// temp dir. A tmpfs such as `/dev/shm` keeps the brokers' log writes off the machine's disk, which
    /// benchmarks use so that every contender meets the same broker speed round after round.
    pub fn data_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_root = Some(dir.into());
        self
    }

    /// How long to wait for each broker to answer Metadata. Default 60 s.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Adds a `SASL_PLAINTEXT` client listener on a free loopback port (and a `SASL_SSL` one too with
    /// [`tls`](Self::tls)) with the mechanisms PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, where each of
    /// `users` (name, password) is valid for all three. Calls add up.
    ///
    /// PLAIN users live in the listener's JAAS config (`user_<name>="<password>"`); SCRAM credentials
    /// are written into the cluster metadata when the storage is formatted (`--add-scram`), so they
    /// survive restarts like any other metadata.
    ///
    /// # Panics
    /// If a name is empty or holds other than ASCII letters, digits, `_`, `-` and `.`, or a password is
    /// empty or holds other than printable ASCII without space, `"`, `\` and `,`: such values do not
    /// survive the JAAS and `--add-scram` syntax.
    pub fn sasl_users<U, P>(mut self, users: impl IntoIterator<Item = (U, P)>) -> Self
    where
        U: Into<String>,
        P: Into<String>,
    {
        let list = self.sasl_users.get_or_insert_with(Vec::new);
        for (name, password) in users {
            let (name, password) = (name.into(), password.into());
            check_sasl_user(&name, &password);
            list.retain(|(n, _)| *n != name);
            list.push((name, password));
        }
        self
    }

    /// One SASL user: [`sasl_users`](Self::sasl_users) with one (name, password).
    ///
    /// # Panics
    /// As [`sasl_users`](Self::sasl_users).
    pub fn sasl_user(self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.sasl_users([(name.into(), password.into())])
    }

    /// Adds an `SSL` client listener on a free loopback port (and a `SASL_SSL` one too with
    /// [`sasl_users`](Self::sasl_users)). Each cluster makes its own test CA and certificates at start
    /// ([`LocalCluster::tls_material`]): clients trust [`TlsMaterial::ca_path`]; the server certificate
    /// names `127.0.0.1` and `localhost`. Clients need no certificate unless
    /// [`tls_client_auth_required`](Self::tls_client_auth_required).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Turns [`tls`](Self::tls) on and makes the `SSL` listener require a client certificate signed by
    /// the test CA (`ssl.client.auth=required`), such as [`TlsMaterial::client_cert_path`]. The
    /// `SASL_SSL` listener keeps `none`: SASL authenticates its clients.
    pub fn tls_client_auth_required(mut self) -> Self {
        self.tls = true;
        self.tls_client_auth_required = true;
        self
    }

    fn sasl(&self) -> bool {
        self.sasl_users.is_some()
    }

    /// How many client listeners the options add beside PLAINTEXT.
    fn secured_listener_count(&self) -> usize {
        usize::from(self.sasl()) + usize::from(self.tls) + usize::from(self.sasl() && self.tls)
    }
}

fn check_sasl_user(name: &str, password: &str) {
    assert!(
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')),
        "kafkit-testkit: SASL user name {name:?} must be non-empty ASCII letters, digits, `_`, `-` or `.`"
    );
    assert!(
        !password.is_empty()
            && password
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b',')),
        "kafkit-testkit: the SASL password of {name:?} must be non-empty printable ASCII without space, `\"`, `\\` or `,`"
    );
}

/// One broker+controller JVM of a local cluster, with its fault controls.
#[derive(Debug)]
pub struct Node {
    id: i32,
    port: u16,
    controller_port: u16,
    sasl_plaintext_port: Option<u16>,
    ssl_port: Option<u16>,
    sasl_ssl_port: Option<u16>,
    dir: PathBuf,
    options: BrokerOptions,
    /// The running JVM. std Mutex: held only for signals and `try_wait`, never across an await.
    child: Mutex<Option<Child>>,
}

impl Node {
    /// The node id (`node.id`), from 1.
    pub fn id(&self) -> i32 {
        self.id
    }

    /// `127.0.0.1:<port>` of this broker's client listener.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The client listener port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>` of this broker's `SASL_PLAINTEXT` listener, with
    /// [`BrokerOptions::sasl_users`].
    pub fn sasl_plaintext_bootstrap(&self) -> Option<String> {
        self.sasl_plaintext_port.map(loopback)
    }

    /// `127.0.0.1:<port>` of this broker's `SSL` listener, with [`BrokerOptions::tls`].
    pub fn ssl_bootstrap(&self) -> Option<String> {
        self.ssl_port.map(loopback)
    }

    /// `127.0.0.1:<port>` of this broker's `SASL_SSL` listener, with both [`BrokerOptions::tls`] and
    /// [`BrokerOptions::sasl_users`].
    pub fn sasl_ssl_bootstrap(&self) -> Option<String> {
        self.sasl_ssl_port.map(loopback)
    }

    /// The broker's log file (stdout and stderr of the JVM, appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("broker.log")
    }

    /// The JVM's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Child::id)
    }

    /// Whether the JVM is running (or paused).
    pub fn is_running(&self) -> bool {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Crashes the broker: SIGKILL, no shutdown. Data written but not flushed stays in the page cache,
    /// as after a process crash on a healthy machine.
    pub fn kill(&self) {
        if let Some(mut child) = self.take_child() {
            let _ = process::signal(child.id(), libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker cleanly: SIGTERM, then waits up to 30 s for the controlled shutdown
    /// (SIGKILL after that).
    pub fn stop(&self) {
        if let Some(mut child) = self.take_child() {
            let _ = process::signal(child.id(), libc::SIGCONT);
            let _ = process::signal(child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }

    /// Freezes the JVM (SIGSTOP): connections stay open but nothing answers, as in a network partition.
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            let _ = process::signal(pid, libc::SIGSTOP);
        }
    }

    /// Unfreezes a paused JVM (SIGCONT).
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            let _ = process::signal(pid, libc::SIGCONT);
        }
    }

    /// Starts the broker again on the same ports (every listener) with the same data, users and
    /// certificates, stopping it cleanly first if it still runs, and waits until it answers Metadata.
    pub async fn restart(&self) -> Result<()> {
        if self.is_running() {
            self.stop();
        }
        self.launch()?;
        self.wait_ready().await
    }

    fn take_child(&self) -> Option<Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("server.properties")
    }

    fn launch(&self) -> Result<()> {
        let ports = [
            Some(self.port),
            Some(self.controller_port),
            self.sasl_plaintext_port,
            self.ssl_port,
            self.sasl_ssl_port,
        ];
        for port in ports.into_iter().flatten() {
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                return Err(Error::PortInUse { port });
            }
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(Error::io(format!("opening {}", self.log_path().display())))?;
        let log_err = log
            .try_clone()
            .map_err(Error::io("duplicating the log file handle"))?;
        let mut cmd = Command::new("java");
        cmd.arg(format!("-Xmx{}", self.options.heap))
            .arg(format!("-Xms{}", self.options.heap))
            .args([
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true",
            ])
            .arg("-Dorg.slf4j.simpleLogger.logFile=System.out")
            .arg("-Dorg.slf4j.simpleLogger.showDateTime=true")
            .arg("-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS")
            .arg("-Dorg.slf4j.simpleLogger.log.kafka.request.logger=warn")
            .arg("-Dorg.slf4j.simpleLogger.log.state.change.logger=warn")
            .arg("-cp")
            .arg(kafka_classpath()?)
            .arg("kafka.Kafka")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = process::spawn(cmd).map_err(Error::io("starting the Kafka JVM"))?;
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        Ok(())
    }

    /// Waits until the broker answers a Metadata request, or its JVM exits, or the start timeout passes.
    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + self.options.start_timeout;
        let mut last_error = String::from("no answer yet");
        loop {
            if !self.is_running() {
                return Err(self.start_error(format!(
                    "the JVM exited; last lines:\n{}",
                    self.log_tail(30)
                )));
            }
            if Instant::now() >= deadline {
                return Err(self.start_error(format!(
                    "no Metadata answer within {:?} ({last_error}); last lines:\n{}",
                    self.options.start_timeout,
                    self.log_tail(30)
                )));
            }
            match probe_metadata(&self.bootstrap()).await {
                Ok(()) => return Ok(()),
                Err(e) => last_error = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn start_error(&self, reason: String) -> Error {
        Error::BrokerStart {
            node: self.id,
            reason,
            log: self.log_path(),
        }
    }

    /// The last `lines` lines of the broker log.
    pub fn log_tail(&self, lines: usize) -> String {
        let Ok(mut f) = fs::File::open(self.log_path()) else {
            return String::from("(no log)");
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
        let mut buf = String::new();
        let _ = f.read_to_string(&mut buf);
        let tail: Vec<&str> = buf.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

fn loopback(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One Metadata round trip through rskafka, bounded to 2 s.
async fn probe_metadata(bootstrap: &str) -> std::result::Result<(), String> {
    let builder = ClientBuilder::new(vec![bootstrap.to_owned()]).backoff_config(BackoffConfig {
        init_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        base: 2.0,
        deadline: Some(Duration::from_secs(1)),
    });
    let attempt = async {
        let client = builder.build().await.map_err(|e| e.to_string())?;
        client.list_topics().await.map_err(|e| e.to_string())?;
        Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(r) => r,
        Err(_) => Err("metadata request timed out".into()),
    }
}

/// N brokers in one KRaft quorum on loopback, for replication and failover tests.
///
/// Dropping the cluster kills every JVM and deletes the data, except after a panic, when the data
/// directory and each broker's log path and last lines are printed for the failing test.
#[derive(Debug)]
pub struct LocalCluster {
    nodes: Vec<Node>,
    root: PathBuf,
    tls: Option<TlsMaterial>,
}

impl LocalCluster {
    /// Starts `nodes` brokers with default options and waits until each answers Metadata.
    pub async fn start(nodes: usize) -> Result<Self> {
        Self::start_with(nodes, BrokerOptions::default()).await
    }

    /// Starts `count` brokers with `options` and waits until each answers Metadata.
    pub async fn start_with(count: usize, options: BrokerOptions) -> Result<Self> {
        assert!(count >= 1, "a cluster has at least one node");
        check_java()?;
        tokio::task::spawn_blocking(kafka_classpath)
            .await
            .map_err(|e| Error::io("fetching jars")(std::io::Error::other(e)))??;
        let root = fresh_root(options.data_root.as_deref())?;
        // Per node: client (PLAINTEXT), controller, then the secured listeners the options ask for.
        let per_node = 2 + options.secured_listener_count();
        let ports = free_ports(count * per_node)?;
        let voters: Vec<String> = (0..count)
            .map(|i| format!("{}@127.0.0.1:{}", i + 1, ports[per_node * i + 1]))
            .collect();
        let voters = voters.join(",");
        let cluster_id = random_cluster_id();
        let nodes: Vec<Node> = (0..count)
            .map(|i| {
                let mut secured = ports[per_node * i + 2..per_node * (i + 1)].iter().copied();
                let sasl_plaintext_port = options.sasl().then(|| secured.next()).flatten();
                let ssl_port = options.tls.then(|| secured.next()).flatten();
                let sasl_ssl_port = (options.sasl() && options.tls)
                    .then(|| secured.next())
                    .flatten();
                Node {
                    id: i as i32 + 1,
                    port: ports[per_node * i],
                    controller_port: ports[per_node * i + 1],
                    sasl_plaintext_port,
                    ssl_port,
                    sasl_ssl_port,
                    dir: root.join(format!("node-{}", i + 1)),
                    options: options.clone(),
                    child: Mutex::new(None),
                }
            })
            .collect();
        let mut cluster = LocalCluster {
            nodes,
            root,
            tls: None,
        };
        if options.tls {
            let dir = cluster.root.join("tls");
            cluster.tls = Some(TlsMaterial::generate(&dir)?);
        }

        let mut formats = Vec::new();
        for node in &cluster.nodes {
            fs::create_dir_all(node.dir.join("data"))
                .map_err(Error::io("creating the broker data dir"))?;
            fs::write(
                node.config_path(),
                server_properties(node, count, &voters, &options, cluster.tls.as_ref()),
            )
            .map_err(Error::io("writing server.properties"))?;
            formats.push(format_storage(
                node.config_path(),
                cluster_id.clone(),
                scram_arguments(&options),
                node.log_path(),
            ));
        }
        for f in formats {
            f.await?;
        }
        for node in &cluster.nodes {
            node.launch()?;
        }
        for node in &cluster.nodes {
            node.wait_ready().await?;
        }
        Ok(cluster)
    }

    /// All client listeners, comma-separated: the bootstrap string for clients.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(Node::bootstrap)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// All `SASL_PLAINTEXT` listeners, comma-separated, with [`BrokerOptions::sasl_users`].
    pub fn sasl_plaintext_bootstrap(&self) -> Option<String> {
        self.join_bootstrap(Node::sasl_plaintext_bootstrap)
    }

    /// All `SSL` listeners, comma-separated, with [`BrokerOptions::tls`].
    pub fn ssl_bootstrap(&self) -> Option<String> {
        self.join_bootstrap(Node::ssl_bootstrap)
    }

    /// All `SASL_SSL` listeners, comma-separated, with both [`BrokerOptions::tls`] and
    /// [`BrokerOptions::sasl_users`].
    pub fn sasl_ssl_bootstrap(&self) -> Option<String> {
        self.join_bootstrap(Node::sasl_ssl_bootstrap)
    }

    /// The cluster's test CA and certificates, with [`BrokerOptions::tls`].
    pub fn tls_material(&self) -> Option<&TlsMaterial> {
        self.tls.as_ref()
    }

    fn join_bootstrap(&self, listener: impl Fn(&Node) -> Option<String>) -> Option<String> {
        self.nodes
            .iter()
            .map(listener)
            .collect::<Option<Vec<_>>>()
            .map(|all| all.join(","))
    }

    /// The nodes, in id order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node with `node.id == id`.
    pub fn node(&self, id: i32) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The cluster's data directory (one sub-directory per node with its config, data and log).
    pub fn data_dir(&self) -> &Path {
        &self.root
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.kill();
        }
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!(
                    "kafkit-testkit: broker {} log {} (last lines below)\n{}",
                    node.id,
                    node.log_path().display(),
                    node.log_tail(40)
                );
            }
            eprintln!(
                "kafkit-testkit: kept broker data in {}",
                self.root.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// One local broker (a one-node [`LocalCluster`]) with its fault controls.
#[derive(Debug)]
pub struct LocalKafka {
    cluster: LocalCluster,
}

impl LocalKafka {
    /// Starts a broker with default options and waits until it answers Metadata.
    pub async fn start() -> Result<Self> {
        Self::start_with(BrokerOptions::default()).await
    }

    /// Starts a broker with `options` and waits until it answers Metadata.
    pub async fn start_with(options: BrokerOptions) -> Result<Self> {
        Ok(Self {
            cluster: LocalCluster::start_with(1, options).await?,
        })
    }

    /// `127.0.0.1:<port>`: the bootstrap address for clients.
    pub fn bootstrap(&self) -> String {
        self.node().bootstrap()
    }

    /// `127.0.0.1:<port>` of the `SASL_PLAINTEXT` listener, with [`BrokerOptions::sasl_users`].
    pub fn sasl_plaintext_bootstrap(&self) -> Option<String> {
        self.node().sasl_plaintext_bootstrap()
    }

    /// `127.0.0.1:<port>` of the `SSL` listener, with [`BrokerOptions::tls`].
    pub fn ssl_bootstrap(&self) -> Option<String> {
        self.node().ssl_bootstrap()
    }

    /// `127.0.0.1:<port>` of the `SASL_SSL` listener, with both [`BrokerOptions::tls`] and
    /// [`BrokerOptions::sasl_users`].
    pub fn sasl_ssl_bootstrap(&self) -> Option<String> {
        self.node().sasl_ssl_bootstrap()
    }

    /// The broker's test CA and certificates, with [`BrokerOptions::tls`].
    pub fn tls_material(&self) -> Option<&TlsMaterial> {
        self.cluster.tls_material()
    }

    /// The broker's data directory (its config, data, log, and the `tls` certificates).
    pub fn data_dir(&self) -> &Path {
        self.cluster.data_dir()
    }

    /// The broker node.
    pub fn node(&self) -> &Node {
        &self.cluster.nodes[0]
    }

    /// The broker's log file.
    pub fn log_path(&self) -> PathBuf {
        self.node().log_path()
    }

    /// Crashes the broker (SIGKILL).
    pub fn kill(&self) {
        self.node().kill();
    }

    /// Stops the broker cleanly (SIGTERM).
    pub fn stop(&self) {
        self.node().stop();
    }

    /// Freezes the broker (SIGSTOP), as a network partition looks to clients.
    pub fn pause(&self) {
        self.node().pause();
    }

    /// Unfreezes the broker (SIGCONT).
    pub fn resume(&self) {
        self.node().resume();
    }

    /// Starts the broker again on the same ports with the same data, users and certificates, and waits
    /// until it answers.
    pub async fn restart(&self) -> Result<()> {
        self.node().restart().await
    }
}

fn server_properties(
    node: &Node,
    count: usize,
    voters: &str,
    options: &BrokerOptions,
    tls: Option<&TlsMaterial>,
) -> String {
    let rf = count.min(3);
    let min_isr = count.min(2);
    // Client listeners, each named after its security protocol.
    let client_listeners: Vec<(&str, u16)> = [
        ("PLAINTEXT", Some(node.port)),
        ("SASL_PLAINTEXT", node.sasl_plaintext_port),
        ("SSL", node.ssl_port),
        ("SASL_SSL", node.sasl_ssl_port),
    ]
    .into_iter()
    .filter_map(|(name, port)| Some((name, port?)))
    .collect();
    let endpoints = |listeners: &[(&str, u16)]| {
        listeners
            .iter()
            .map(|(name, port)| format!("{name}://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut all_listeners = client_listeners.clone();
    all_listeners.insert(1, ("CONTROLLER", node.controller_port));
    let protocol_map = all_listeners
        .iter()
        .map(|(name, _)| match *name {
            "CONTROLLER" => "CONTROLLER:PLAINTEXT".to_owned(),
            name => format!("{name}:{name}"),
        })
        .collect::<Vec<_>>()
        .join(",");
    let mut props: Vec<(String, String)> = vec![
        ("process.roles", "broker,controller".to_owned()),
        ("node.id", node.id.to_string()),
        ("controller.quorum.voters", voters.to_owned()),
        ("listeners", endpoints(&all_listeners)),
        ("advertised.listeners", endpoints(&client_listeners)),
        ("controller.listener.names", "CONTROLLER".into()),
        ("inter.broker.listener.name", "PLAINTEXT".into()),
        ("listener.security.protocol.map", protocol_map),
        ("log.dirs", node.dir.join("data").display().to_string()),
        ("offsets.topic.replication.factor", rf.to_string()),
        // Few offsets partitions: the topic is created on first group use, and 50 partitions take seconds.
        ("offsets.topic.num.partitions", "4".into()),
        ("transaction.state.log.replication.factor", rf.to_string()),
        ("transaction.state.log.min.isr", min_isr.to_string()),
        (
            "share.coordinator.state.topic.replication.factor",
            rf.to_string(),
        ),
        ("share.coordinator.state.topic.min.isr", min_isr.to_string()),
        // Few share-state partitions too: the topic is created on first share-group use (50 by default).
        ("share.coordinator.state.topic.num.partitions", "4".into()),
        ("group.initial.rebalance.delay.ms", "0".into()),
        // Lets tests use short session timeouts (the broker default minimum is 6 s).
        ("group.min.session.timeout.ms", "1000".into()),
        // Consumer-protocol (KIP-848) groups, whose session and heartbeat the broker decides:
        // a crashed member is noticed within 10 s (default 45 s) and members heartbeat every
        // second (default 5 s), so tests of rebalances take seconds.
        ("group.consumer.min.session.timeout.ms", "1000".into()),
        ("group.consumer.session.timeout.ms", "10000".into()),
        ("group.consumer.min.heartbeat.interval.ms", "500".into()),
        ("group.consumer.heartbeat.interval.ms", "1000".into()),
        // Share groups (KIP-932; on by default from Kafka 4.2): the same quick heartbeats and
        // crash detection, and acquisition locks a test may shorten to a second on its group
        // (`share.record.lock.duration.ms`; the broker's minimum is 15 s by default).
        ("group.share.min.session.timeout.ms", "1000".into()),
        ("group.share.session.timeout.ms", "10000".into()),
        ("group.share.min.heartbeat.interval.ms", "500".into()),
        ("group.share.heartbeat.interval.ms", "1000".into()),
        ("group.share.min.record.lock.duration.ms", "1000".into()),
        // Tests create every topic they use; a typo must fail, not create a topic.
        ("auto.create.topics.enable", "false".into()),
        ("num.partitions", "1".into()),
        ("num.network.threads", "2".into()),
        ("num.io.threads", "4".into()),
        // Compaction tests see the cleaner run within a second, not the default 15 s.
        ("log.cleaner.backoff.ms", "500".into()),
        (
            "log.cleaner.dedupe.buffer.size",
            (8 * 1024 * 1024).to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(users) = &options.sasl_users {
        props.push(("sasl.enabled.mechanisms".into(), SASL_MECHANISMS.join(",")));
        let plain_users: String = users
            .iter()
            .map(|(name, password)| format!(" user_{name}=\"{password}\""))
            .collect();
        for (listener, port) in [
            ("sasl_plaintext", node.sasl_plaintext_port),
            ("sasl_ssl", node.sasl_ssl_port),
        ] {
            if port.is_none() {
                continue;
            }
            let prefix = format!("listener.name.{listener}");
            props.push((
                format!("{prefix}.plain.sasl.jaas.config"),
                format!(
                    "org.apache.kafka.common.security.plain.PlainLoginModule required{plain_users};"
                ),
            ));
            for mechanism in ["scram-sha-256", "scram-sha-512"] {
                props.push((
                    format!("{prefix}.{mechanism}.sasl.jaas.config"),
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;".into(),
                ));
            }
        }
    }
    if let Some(tls) = tls {
        for (listener, port, client_auth) in [
            (
                "ssl",
                node.ssl_port,
                if options.tls_client_auth_required {
                    "required"
                } else {
                    "none"
                },
            ),
            ("sasl_ssl", node.sasl_ssl_port, "none"),
        ] {
            if port.is_none() {
                continue;
            }
            let prefix = format!("listener.name.{listener}.ssl");
            for (key, value) in [
                ("keystore.type", "PEM".to_owned()),
                (
                    "keystore.location",
                    tls.server_keystore_path().display().to_string(),
                ),
                ("truststore.type", "PEM".to_owned()),
                ("truststore.location", tls.ca_path().display().to_string()),
                ("client.auth", client_auth.to_owned()),
            ] {
                props.push((format!("{prefix}.{key}"), value));
            }
        }
    }
    for (k, v) in &options.properties {
        props.push((k.clone(), v.clone()));
    }
    for (_, k, v) in options
        .node_properties
        .iter()
        .filter(|(n, ..)| *n == node.id)
    {
        props.push((k.clone(), v.clone()));
    }
    let mut out = String::from("# Written by kafkit-testkit\n");
    for (k, v) in props {
        let _ = writeln!(out, "{k}={v}");
    }
    out
}

/// `--add-scram` arguments for the storage tool: every SASL user for both SCRAM mechanisms.
fn scram_arguments(options: &BrokerOptions) -> Vec<String> {
    let mut args = Vec::new();
    for (name, password) in options.sasl_users.iter().flatten() {
        for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
            args.push("--add-scram".to_owned());
            args.push(format!("{mechanism}=[name={name},password={password}]"));
        }
    }
    args
}

async fn format_storage(
    config: PathBuf,
    cluster_id: String,
    scram: Vec<String>,
    log: PathBuf,
) -> Result<()> {
    let cp = kafka_classpath()?;
    let output = tokio::process::Command::new("java")
        .args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
        .arg("-cp")
        .arg(cp)
        .args(["kafka.tools.StorageTool", "format", "-t", &cluster_id, "-c"])
        .arg(&config)
        .args(&scram)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(Error::io("running kafka.tools.StorageTool"))?;
    if !output.status.success() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        return Err(Error::BrokerStart {
            node: 0,
            reason: format!("formatting storage failed: {}", text.trim()),
            log,
        });
    }
    Ok(())
}

/// Distinct free loopback ports: all listeners are held until every port is chosen.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<_>>()
        .map_err(Error::io("finding free loopback ports"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()
        .map_err(Error::io("reading a free port"))
}

/// A fresh directory under `<data_root or tmp>/kafkit-testkit/<pid>-<n>`, after removing directories
/// left by test processes that no longer run (a shared broker lives until its process exits, so it is
/// never dropped).
fn fresh_root(data_root: Option<&Path>) -> Result<PathBuf> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let base = data_root
        .map_or_else(std::env::temp_dir, Path::to_path_buf)
        .join("kafkit-testkit");
    if let Ok(entries) = fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_string_lossy()
                .split('-')
                .next()
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && pid != std::process::id()
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// A KRaft cluster id: 16 random bytes in URL-safe base64 without padding (22 characters), never
/// starting with `-` (the storage tool would read it as an option; Kafka's own ids avoid it too).
fn random_cluster_id() -> String {
    loop {
        let id = encode_cluster_id(rand::random());
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn encode_cluster_id(bytes: [u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = String::with_capacity(22);
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        out.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_id_is_22_url_safe_chars() {
        for _ in 0..100 {
            let id = random_cluster_id();
            assert_eq!(id.len(), 22);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
    }

    fn node_for(options: &BrokerOptions) -> Node {
        Node {
            id: 1,
            port: 9092,
            controller_port: 9093,
            sasl_plaintext_port: options.sasl().then_some(9094),
            ssl_port: options.tls.then_some(9095),
            sasl_ssl_port: (options.sasl() && options.tls).then_some(9096),
            dir: PathBuf::from("/nonexistent/node-1"),
            options: options.clone(),
            child: Mutex::new(None),
        }
    }

    fn lines(props: &str) -> Vec<&str> {
        props.lines().collect()
    }

    #[test]
    fn node_properties_reach_their_node_only() {
        let options = BrokerOptions::default()
            .property("broker.rack", "everywhere")
            .node_property(1, "broker.rack", "rack-1")
            .node_property(2, "broker.rack", "rack-2");
        let props = server_properties(&node_for(&options), 2, "1@127.0.0.1:9093", &options, None);
        let racks: Vec<&str> = lines(&props)
            .into_iter()
            .filter(|l| l.starts_with("broker.rack="))
            .collect();
        // The node's own entry comes last, so it overrides the shared one.
        assert_eq!(racks, ["broker.rack=everywhere", "broker.rack=rack-1"]);
    }

    #[test]
    fn default_listeners_are_unchanged() {
        let options = BrokerOptions::default();
        let props = server_properties(&node_for(&options), 1, "1@127.0.0.1:9093", &options, None);
        let lines = lines(&props);
        assert!(
            lines.contains(&"listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093")
        );
        assert!(lines.contains(&"advertised.listeners=PLAINTEXT://127.0.0.1:9092"));
        assert!(
            lines.contains(
                &"listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
            )
        );
        assert!(!props.contains("sasl") && !props.contains("ssl."));
        assert!(scram_arguments(&options).is_empty());
        assert_eq!(options.secured_listener_count(), 0);
    }

    #[test]
    fn secured_listener_properties() {
        let options = BrokerOptions::default()
            .sasl_users([("alice", "a-secret"), ("bob", "b=secret")])
            .sasl_user("alice", "new-secret")
            .tls_client_auth_required();
        assert_eq!(options.secured_listener_count(), 3);
        let dir = std::env::temp_dir().join(format!(
            "kafkit-testkit-props-unit-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let tls = TlsMaterial::generate(&dir).unwrap();
        let props = server_properties(
            &node_for(&options),
            1,
            "1@127.0.0.1:9093",
            &options,
            Some(&tls),
        );
        let _ = fs::remove_dir_all(&dir);
        let lines = lines(&props);
        for expected in [
            "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093,SASL_PLAINTEXT://127.0.0.1:9094,SSL://127.0.0.1:9095,SASL_SSL://127.0.0.1:9096",
            "advertised.listeners=PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9094,SSL://127.0.0.1:9095,SASL_SSL://127.0.0.1:9096",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL",
            "inter.broker.listener.name=PLAINTEXT",
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_bob=\"b=secret\" user_alice=\"new-secret\";",
            "listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_bob=\"b=secret\" user_alice=\"new-secret\";",
            "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.ssl.ssl.keystore.type=PEM",
            "listener.name.ssl.ssl.truststore.type=PEM",
            "listener.name.ssl.ssl.client.auth=required",
            "listener.name.sasl_ssl.ssl.client.auth=none",
        ] {
            assert!(lines.contains(&expected), "missing {expected}\n{props}");
        }
        let keystore = format!(
            "listener.name.sasl_ssl.ssl.keystore.location={}",
            tls.server_keystore_path().display()
        );
        assert!(lines.contains(&keystore.as_str()));
        assert_eq!(
            scram_arguments(&options),
            [
                "--add-scram",
                "SCRAM-SHA-256=[name=bob,password=b=secret]",
                "--add-scram",
                "SCRAM-SHA-512=[name=bob,password=b=secret]",
                "--add-scram",
                "SCRAM-SHA-256=[name=alice,password=new-secret]",
                "--add-scram",
                "SCRAM-SHA-512=[name=alice,password=new-secret]",
            ]
        );
    }

    #[test]
    #[should_panic(expected = "SASL password")]
    fn rejects_a_password_the_jaas_syntax_cannot_carry() {
        let _ = BrokerOptions::default().sasl_user("alice", "a\"b");
    }

    #[test]
    #[should_panic(expected = "SASL user name")]
    fn rejects_a_user_name_the_jaas_syntax_cannot_carry() {
        let _ = BrokerOptions::default().sasl_user("al ice", "secret");
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(8).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 8);
    }
}
