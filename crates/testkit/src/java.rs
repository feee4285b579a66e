//! The JDK: version check, Kafka's Java tools, and small Java programs run from source.

use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use crate::jars::{kafka_classpath, kafka_version};
use crate::{Error, Result};

/// Checks once per process that `java` is on PATH and is 17 or newer; returns the major version.
pub(crate) fn check_java() -> Result<u32> {
    static VERSION: OnceLock<std::result::Result<u32, String>> = OnceLock::new();
    VERSION
        .get_or_init(|| {
            let out = std::process::Command::new("java")
                .arg("-version")
                .output()
                .map_err(|e| format!("`java` could not be run ({e})"))?;
            let text = String::from_utf8_lossy(&out.stderr);
            let major = parse_java_major(&text)
                .ok_or_else(|| format!("`java -version` printed no version: {}", text.trim()))?;
            if major < 17 {
                return Err(format!("found Java {major}"));
            }
            Ok(major)
        })
        .clone()
        .map_err(|found| Error::Java {
            found,
            kafka: kafka_version(),
        })
}

/// `openjdk version "17.0.15" 2025-04-15` -> 17; `java version "1.8.0_392"` -> 8.
fn parse_java_major(text: &str) -> Option<u32> {
    let start = text.find('"')? + 1;
    let rest = &text[start..];
    let version = &rest[..rest.find('"')?];
    let mut parts = version.split(['.', '_', '-', '+']);
    let first: u32 = parts.next()?.parse().ok()?;
    if first == 1 {
        parts.next()?.parse().ok()
    } else {
        Some(first)
    }
}

/// What a Java tool printed.
#[derive(Debug, Clone)]
pub struct JavaOutput {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// A `java` command with the Kafka classpath and a small heap, ready for a main class or a source file
/// and its arguments. Killed when the returned command's child is dropped.
pub fn java_command() -> Result<tokio::process::Command> {
    check_java()?;
    let cp = kafka_classpath()?;
    let mut cmd = tokio::process::Command::new("java");
    cmd.args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
        .arg("-Dorg.slf4j.simpleLogger.logFile=System.err")
        .arg("-cp")
        .arg(cp)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    Ok(cmd)
}

/// Runs Kafka's Java class `main_class` (e.g. `org.apache.kafka.tools.consumer.group.ConsumerGroupCommand`)
/// with `args`, waiting at most `timeout`.
pub async fn java_tool(main_class: &str, args: &[&str], timeout: Duration) -> Result<JavaOutput> {
    let mut cmd = java_command()?;
    cmd.arg(main_class).args(args);
    run(cmd, main_class, timeout).await
}

/// Runs a single-file Java program from source (`java File.java args`, JDK 11+), with the Kafka
/// client jars on the classpath, waiting at most `timeout`.
pub async fn java_source(source: &Path, args: &[&str], timeout: Duration) -> Result<JavaOutput> {
    let mut cmd = java_command()?;
    cmd.arg(source).args(args);
    run(cmd, &source.display().to_string(), timeout).await
}

async fn run(
    mut cmd: tokio::process::Command,
    what: &str,
    timeout: Duration,
) -> Result<JavaOutput> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .map_err(Error::io(format!("starting java {what}")))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| Error::Io {
            context: format!("java {what}"),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no exit within {timeout:?}"),
            ),
        })?
        .map_err(Error::io(format!("waiting for java {what}")))?;
    Ok(JavaOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_java_major;

    #[test]
    fn parses_java_versions() {
        let cases = [
            ("openjdk version \"17.0.15\" 2025-04-15", Some(17)),
            ("openjdk version \"21\" 2023-09-19", Some(21)),
            ("java version \"1.8.0_392\"", Some(8)),
            ("openjdk version \"11.0.2-ea\"", Some(11)),
            ("no version here", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_java_major(text), expected, "{text}");
        }
    }
}
