//! Errors of the testkit: each says what to install or change.

use std::path::PathBuf;

/// `Result` with the testkit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a local Kafka could not be provided.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `java` is missing or too old.
    #[error(
        "{found}; Kafka {kafka} needs Java 17 or newer: install a JDK (e.g. `apt-get install openjdk-17-jdk-headless`) or put it first on PATH"
    )]
    Java {
        /// What was found instead.
        found: String,
        /// The Kafka version to run.
        kafka: &'static str,
    },

    /// `mvn` is missing and the jar cache is empty.
    #[error(
        "the Kafka jars are not cached in {cache} and `mvn` is not available to fetch them: install Maven (e.g. `apt-get install maven`), or set KAFKIT_CACHE_DIR to a filled cache"
    )]
    Maven {
        /// The cache directory that was looked at.
        cache: PathBuf,
    },

    /// Maven ran but failed to fetch the jars.
    #[error(
        "fetching the Kafka jars with Maven failed (exit {status}); is Maven Central reachable?\n{output}"
    )]
    MavenFailed {
        /// Maven's exit status.
        status: String,
        /// The end of Maven's output.
        output: String,
    },

    /// A port the broker must use is taken by another process.
    #[error(
        "port {port} on 127.0.0.1 is in use by another process; stop it or let the testkit pick free ports"
    )]
    PortInUse {
        /// The port.
        port: u16,
    },

    /// The broker JVM exited or did not answer Metadata in time.
    #[error("the Kafka broker (node {node}) did not start: {reason}; broker log: {}", log.display())]
    BrokerStart {
        /// The node id.
        node: i32,
        /// What was seen.
        reason: String,
        /// The broker's log file.
        log: PathBuf,
    },

    /// A Kafka admin request from the testkit failed.
    #[error("{context}: {source}")]
    Kafka {
        /// What the testkit was doing.
        context: String,
        /// rskafka's error.
        #[source]
        source: rskafka::client::error::Error,
    },

    /// The per-cluster test certificates could not be made.
    #[error("generating the test TLS certificates failed: {reason}")]
    Tls {
        /// What failed.
        reason: String,
    },

    /// A file system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the testkit was doing.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
