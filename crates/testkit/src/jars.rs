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

/// The Apache Kafka version the testkit runs unless `KAFKIT_KAFKA_VERSION` names another (also the
/// default in `kafka/pom.xml`).
pub const KAFKA_VERSION: &str = "4.4.0";

/// The oldest Apache Kafka release kafkit supports and tests (CI runs the version-sensitive tests
/// against it with `KAFKIT_KAFKA_VERSION`).
pub const OLDEST_KAFKA_VERSION: &str = "3.9.1";

/// The Apache Kafka version this process runs: `KAFKIT_KAFKA_VERSION` if set (e.g. `4.0.2`, to run
/// the tests against another release), else [`KAFKA_VERSION`].
///
/// # Panics
/// If `KAFKIT_KAFKA_VERSION` is set to something that is not a release number (digits and dots).
pub fn kafka_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| match std::env::var("KAFKIT_KAFKA_VERSION") {
        Ok(v) if !v.trim().is_empty() => {
            let v = v.trim();
            assert!(
                v.split('.').count() >= 2
                    && v.split('.')
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
                "KAFKIT_KAFKA_VERSION must be an Apache Kafka release such as 4.0.2, got `{v}`"
            );
            v.to_owned()
        }
        _ => KAFKA_VERSION.to_owned(),
    })
}

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
    let version = kafka_version();
    let base = root.join(format!("kafka-{version}-{:08x}", pom_hash() as u32));
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
        "kafkit-testkit: fetching Apache Kafka {version} jars with Maven into {} (once per machine)",
        libs.display()
    );
    let output = Command::new("mvn")
        .args(["-q", "-B", "-f"])
        .arg(&pom)
        .arg("dependency:copy-dependencies")
        .arg(format!("-Dkafka.version={version}"))
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
    fs::write(staging.join(".complete"), version)
        .map_err(Error::io("marking the jar cache complete"))?;
    let _ = fs::remove_dir_all(&libs);
    fs::rename(&staging, &libs)
        .map_err(Error::io(format!("moving jars into {}", libs.display())))?;
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::{KAFKA_VERSION, POM};

    #[test]
    fn the_pom_defaults_to_the_version_the_testkit_names() {
        assert!(POM.contains(&format!("<kafka.version>{KAFKA_VERSION}</kafka.version>")));
    }
}
