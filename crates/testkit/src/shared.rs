//! One Kafka per test binary: started on first use, shared by every test in the binary (each test uses
//! its own random topics and groups), or an existing cluster named by `KAFKA_BOOTSTRAP`.

use tokio::sync::OnceCell;

use crate::{LocalKafka, Result};

/// The Kafka a test runs against.
#[derive(Debug)]
pub enum TestKafka {
    /// A broker this process started.
    Local(LocalKafka),
    /// An existing cluster from `KAFKA_BOOTSTRAP=host:port[,host:port]`.
    External(String),
}

impl TestKafka {
    /// The cluster named by `KAFKA_BOOTSTRAP`, else a new local broker owned by the caller (stopped
    /// when the value is dropped). For demos and examples.
    pub async fn from_env_or_start() -> Result<Self> {
        if let Ok(bootstrap) = std::env::var("KAFKA_BOOTSTRAP")
            && !bootstrap.trim().is_empty()
        {
            return Ok(TestKafka::External(bootstrap.trim().to_owned()));
        }
        Ok(TestKafka::Local(LocalKafka::start().await?))
    }

    /// The bootstrap string for clients.
    pub fn bootstrap(&self) -> String {
        match self {
            TestKafka::Local(k) => k.bootstrap(),
            TestKafka::External(b) => b.clone(),
        }
    }
}

/// The Kafka shared by the tests of this binary. The first call starts it (a few seconds once the jars
/// are cached); each call prints its address and log path to stderr, which the test harness shows only
/// for a failing test. The broker is killed when the test process exits.
pub async fn shared() -> Result<&'static TestKafka> {
    static SHARED: OnceCell<TestKafka> = OnceCell::const_new();
    let kafka = SHARED.get_or_try_init(TestKafka::from_env_or_start).await?;
    match kafka {
        TestKafka::Local(k) => eprintln!(
            "kafkit-testkit: shared broker at {}, log {}",
            k.bootstrap(),
            k.log_path().display()
        ),
        TestKafka::External(b) => eprintln!("kafkit-testkit: using KAFKA_BOOTSTRAP={b}"),
    }
    Ok(kafka)
}
