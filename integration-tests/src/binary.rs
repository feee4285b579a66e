//! The `kafkit` binary, for the tests that run it as a process.
//!
//! The binary belongs to another package, so `CARGO_BIN_EXE_kafkit` is not available to these
//! tests. The first call asks cargo to build it (`cargo build -p kafkit-cli --bin kafkit`, a no-op
//! when it is fresh; cargo has released its build lock by the time tests run) with the test's own
//! profile, target directory and flags, and takes the binary's path from cargo's JSON artifact
//! message. `KAFKIT_BIN=/path/to/kafkit` skips the build (e.g. to test a musl release binary).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;

use serde_json::Value;

/// The workspace's `kafkit` binary, built (once per test process) if it is missing or stale.
pub fn kafkit_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("KAFKIT_BIN") {
            return PathBuf::from(bin);
        }
        // target/<profile>/deps/<this test>: build the binary with the same profile.
        let exe = std::env::current_exe().expect("test executable path");
        let profile = exe
            .parent()
            .and_then(|deps| deps.parent())
            .and_then(|dir| dir.file_name())
            .and_then(|name| name.to_str())
            .unwrap_or("debug");
        let profile = match profile {
            "debug" => "dev",
            other => other,
        };
        let out = std::process::Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "kafkit-cli", "--bin", "kafkit"])
            // With TLS, so the secured-broker tests can run `kafkit diag` over SSL.
            .args(["--features", "kafkit-cli/tls"])
            .args([
                "--profile",
                profile,
                "--message-format=json-render-diagnostics",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running cargo to build the kafkit binary");
        assert!(out.status.success(), "building the kafkit binary failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "kafkit")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported the kafkit executable")
    })
    .clone()
}
