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
use crate::{Error, Result};

/// How local brokers are started.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    heap: String,
    properties: Vec<(String, String)>,
    start_timeout: Duration,
}

impl Default for BrokerOptions {
    /// 512 MiB heap, 60 s to start, test-friendly broker settings.
    fn default() -> Self {
        Self {
            heap: "512m".into(),
            properties: Vec::new(),
            start_timeout: Duration::from_secs(60),
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

    /// How long to wait for each broker to answer Metadata. Default 60 s.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }
}

/// One broker+controller JVM of a local cluster, with its fault controls.
#[derive(Debug)]
pub struct Node {
    id: i32,
    port: u16,
    controller_port: u16,
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

    /// Starts the broker again on the same ports with the same data, stopping it cleanly first if it
    /// still runs, and waits until it answers Metadata.
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
        for port in [self.port, self.controller_port] {
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
        let root = fresh_root()?;
        let ports = free_ports(count * 2)?;
        let voters: Vec<String> = (0..count)
            .map(|i| format!("{}@127.0.0.1:{}", i + 1, ports[2 * i + 1]))
            .collect();
        let voters = voters.join(",");
        let cluster_id = random_cluster_id();
        let nodes: Vec<Node> = (0..count)
            .map(|i| Node {
                id: i as i32 + 1,
                port: ports[2 * i],
                controller_port: ports[2 * i + 1],
                dir: root.join(format!("node-{}", i + 1)),
                options: options.clone(),
                child: Mutex::new(None),
            })
            .collect();
        let cluster = LocalCluster { nodes, root };

        let mut formats = Vec::new();
        for node in &cluster.nodes {
            fs::create_dir_all(node.dir.join("data"))
                .map_err(Error::io("creating the broker data dir"))?;
            fs::write(
                node.config_path(),
                server_properties(node, count, &voters, &options),
            )
            .map_err(Error::io("writing server.properties"))?;
            formats.push(format_storage(
                node.config_path(),
                cluster_id.clone(),
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

    /// Starts the broker again on the same port with the same data and waits until it answers.
    pub async fn restart(&self) -> Result<()> {
        self.node().restart().await
    }
}

fn server_properties(node: &Node, count: usize, voters: &str, options: &BrokerOptions) -> String {
    let rf = count.min(3);
    let min_isr = count.min(2);
    let mut props = vec![
        ("process.roles", "broker,controller".to_owned()),
        ("node.id", node.id.to_string()),
        ("controller.quorum.voters", voters.to_owned()),
        (
            "listeners",
            format!(
                "PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                node.port, node.controller_port
            ),
        ),
        (
            "advertised.listeners",
            format!("PLAINTEXT://127.0.0.1:{}", node.port),
        ),
        ("controller.listener.names", "CONTROLLER".into()),
        ("inter.broker.listener.name", "PLAINTEXT".into()),
        (
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
        ),
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
        ("group.initial.rebalance.delay.ms", "0".into()),
        // Lets tests use short session timeouts (the broker default minimum is 6 s).
        ("group.min.session.timeout.ms", "1000".into()),
        // Tests create every topic they use; a typo must fail, not create a topic.
        ("auto.create.topics.enable", "false".into()),
        ("num.partitions", "1".into()),
        ("num.network.threads", "2".into()),
        ("num.io.threads", "4".into()),
        (
            "log.cleaner.dedupe.buffer.size",
            (8 * 1024 * 1024).to_string(),
        ),
    ];
    for (k, v) in &options.properties {
        props.push((k.as_str(), v.clone()));
    }
    let mut out = String::from("# Written by kafkit-testkit\n");
    for (k, v) in props {
        let _ = writeln!(out, "{k}={v}");
    }
    out
}

async fn format_storage(config: PathBuf, cluster_id: String, log: PathBuf) -> Result<()> {
    let cp = kafka_classpath()?;
    let output = tokio::process::Command::new("java")
        .args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
        .arg("-cp")
        .arg(cp)
        .args(["kafka.tools.StorageTool", "format", "-t", &cluster_id, "-c"])
        .arg(&config)
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

/// A fresh directory under `<tmp>/kafkit-testkit/<pid>-<n>`, after removing directories left by test
/// processes that no longer run (a shared broker lives until its process exits, so it is never dropped).
fn fresh_root() -> Result<PathBuf> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let base = std::env::temp_dir().join("kafkit-testkit");
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

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(8).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 8);
    }
}
