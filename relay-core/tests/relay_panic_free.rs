//! Runs the link-time panic-freedom proof (relay-core/panic-check) as part of
//! `cargo test`: the build fails to link if relay-core's public API keeps any
//! panic path after optimisation. Same as `cargo xtask panic-check`.
#![allow(clippy::expect_used, clippy::panic)] // test code: a panic is a test failure
use std::path::Path;
use std::process::Command;

#[test]
fn public_api_links_without_a_panic_handler() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("panic-check");
    let out = Command::new(env!("CARGO"))
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .args(["build", "--release", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .output()
        .expect("run cargo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("relay_core_panic_path_reachable"),
        "relay-core has a reachable panic path:\n{stderr}"
    );
    assert!(out.status.success(), "panic-check build failed:\n{stderr}");
    let bin = dir.join("target/release/panic-check");
    let size = std::fs::metadata(&bin).expect("panic-check binary").len();
    // The exercised API really is in the binary (not optimised away).
    assert!(size > 8 * 1024, "panic-check is only {size} bytes");
}
