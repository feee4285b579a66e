//! The broker jars: found in the cache, or fetched once from Maven Central with `kafka/pom.xml`.
//!
//! The cache is outside the source tree (`$KAFKIT_CACHE_DIR`, else `$XDG_CACHE_HOME/kafkit`, else
//! `~/.cache/kafkit`), keyed by a hash of the pom so a version change fetches anew. Test binaries that
//! run at the same time serialise on a lock file; the jars appear under their final name only once
//! complete (fetched into a temporary directory, then renamed), so a crash never leaves a half cache.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::{Error, Result};

/// The Apache Kafka version the testkit runs (also in `kafka/pom.xml`).
pub const KAFKA_VERSION: &str = "4.1.1";

const POM: &str = include_str!("../kafka/pom.xml");

/// The Java classpath (`<dir>/*`) holding the Kafka broker, tools and clients jars, fetching them with
/// Maven on first use. Blocks; the result is memoised for the process.
pub fn kafka_classpath() -> Result<String> {
    static CLASSPATH: OnceLock<String> = OnceLock::new();
    if let Some(cp) = CLASSPATH.get() {
        return Ok(cp.clone());
    }
    let dir = ensure_jars()?;
    let cp = format!("{}/*", dir.display());
    Ok(CLASSPATH.get_or_init(|| cp).clone())
}

fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("KAFKIT_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("kafkit");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache").join("kafkit");
    }
    std::env::temp_dir().join("kafkit-cache")
}

/// FNV-1a: a stable hash of the pom, so the cache directory changes when the pom does.
fn pom_hash() -> u64 {
    POM.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn ensure_jars() -> Result<PathBuf> {
    let root = cache_root();
    let base = root.join(format!("kafka-{KAFKA_VERSION}-{:08x}", pom_hash() as u32));
    let libs = base.join("libs");
    if libs.join(".complete").exists() {
        return Ok(libs);
    }
    fs::create_dir_all(&base).map_err(Error::io(format!("creating {}", base.display())))?;
    let lock_path = base.join(".lock");
    let lock = fs::File::create(&lock_path)
        .map_err(Error::io(format!("creating {}", lock_path.display())))?;
    lock.lock()
        .map_err(Error::io(format!("locking {}", lock_path.display())))?;
    // Another process may have filled the cache while this one waited for the lock.
    if libs.join(".complete").exists() {
        return Ok(libs);
    }

    let mvn_ok = Command::new("mvn")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mvn_ok {
        return Err(Error::Maven { cache: base });
    }
    let pom = base.join("pom.xml");
    fs::write(&pom, POM).map_err(Error::io(format!("writing {}", pom.display())))?;
    let staging = base.join("libs.partial");
    let _ = fs::remove_dir_all(&staging);
    eprintln!(
        "kafkit-testkit: fetching Apache Kafka {KAFKA_VERSION} jars with Maven into {} (once per machine)",
        libs.display()
    );
    let output = Command::new("mvn")
        .args(["-q", "-B", "-f"])
        .arg(&pom)
        .arg("dependency:copy-dependencies")
        .arg(format!("-DoutputDirectory={}", staging.display()))
        .output()
        .map_err(Error::io("running mvn"))?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        let tail: String = text
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        return Err(Error::MavenFailed {
            status: output.status.to_string(),
            output: tail,
        });
    }
    fs::write(staging.join(".complete"), KAFKA_VERSION)
        .map_err(Error::io("marking the jar cache complete"))?;
    let _ = fs::remove_dir_all(&libs);
    fs::rename(&staging, &libs)
        .map_err(Error::io(format!("moving jars into {}", libs.display())))?;
    Ok(libs)
}
