//! A real Apache Kafka for kafkit's tests and demos: the JVM broker in KRaft mode, jars from Maven
//! Central, on free loopback ports, no Docker.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kafkit_testkit::Error> {
//! let kafka = kafkit_testkit::LocalKafka::start().await?;
//! let topic = kafkit_testkit::random_name("orders");
//! kafkit_testkit::create_topic(&kafka.bootstrap(), &topic, 12, 1).await?;
//! kafka.kill();                 // SIGKILL, as a crash
//! kafka.restart().await?;       // same ports, same data
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `jars`: finds the broker jars in the cache, or fills the cache from Maven Central with the pom
//!   kept in this crate (`kafka/pom.xml`), once per machine.
//! - `java`: checks the JDK and runs Kafka's Java tools and small Java programs against a cluster.
//! - `process`: starts child JVMs from one long-lived thread so they die with the test process.
//! - `broker`: [`LocalKafka`] and [`LocalCluster`]: format, start, wait for Metadata, fault controls.
//! - `tls`: [`TlsMaterial`], the per-cluster test CA and certificates for the SSL listeners.
//! - `admin`: topic creation and random names for isolated tests.
//! - `shared`: one broker per test binary ([`shared`]), or an existing cluster from `KAFKA_BOOTSTRAP`.
//! - `error`: [`Error`], saying what to install or change.

mod admin;
mod broker;
mod error;
mod jars;
mod java;
mod process;
mod shared;
mod tls;

pub use admin::{create_topic, random_name};
pub use broker::{BrokerOptions, LocalCluster, LocalKafka, Node};
pub use error::{Error, Result};
pub use jars::{KAFKA_VERSION, OLDEST_KAFKA_VERSION, kafka_classpath, kafka_version};
pub use java::{JavaOutput, java_command, java_source, java_tool};
pub use shared::{TestKafka, shared};
pub use tls::TlsMaterial;
