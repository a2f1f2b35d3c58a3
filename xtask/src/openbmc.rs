//! `cargo xtask openbmc build|check`: cross-build the OpenBMC relay for the
//! BMC (AST2500/AST2600 are ARMv6/ARMv7 cores running glibc Linux).
//!
//! rustup offers no armv7 std here, so this uses Debian's rustc 1.96
//! (`/usr/bin/cargo`, `/usr/bin/rustc`) with `-Z build-std=std,panic_abort`
//! and links with `arm-linux-gnueabihf-gcc` (apt `gcc-arm-linux-gnueabihf`).
//! The crate is a host-workspace member, so this builds from the root with an
//! explicit toolchain instead of a `rust-toolchain.toml`, into its own target
//! directory so it never disturbs the host build's artifacts.
//! `check` also runs the cross binary under `qemu-arm`: its `--help`, then
//! the netns end-to-end tests of `boards/openbmc/tests/netns_relay.rs`
//! against it (rtnetlink's neighbour dump is not translated by qemu-user, so
//! the relay's `/proc/net/arp` fallback is exercised there).
use crate::util::{root, run as sh};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// The BMC target triple.
pub const TARGET: &str = "armv7-unknown-linux-gnueabihf";
/// The binary's name.
const BIN: &str = "lastgasp-bmc-relay";
/// Options of `openbmc`.
#[derive(clap::Args)]
pub struct Args {
    /// build: cross-build and print the size; check: build, then run
    /// `--help` and the netns end-to-end tests under qemu-arm (root).
    action: String,
    /// Also build the D-Bus host-signal watcher (cargo feature `dbus`).
    #[arg(long)]
    dbus: bool,
}

/// The cross-built, stripped binary.
pub fn binary_path() -> PathBuf {
    root().join("target/cross").join(TARGET).join("bmc").join(BIN)
}

/// What CI runs: the armv7 cross-build, checked under qemu-arm, and the
/// D-Bus watcher's tests (feature `dbus`, off in the workspace's default test run).
pub fn ci() -> Result<()> {
    run(Args { action: "check".into(), dbus: false })?;
    sh(Command::new("cargo")
        .current_dir(root())
        .args(["test", "--locked", "-p", "lastgasp-openbmc", "--features", "dbus", "--test", "dbus_signals"]))
}

/// Run `openbmc build|check`.
pub fn run(a: Args) -> Result<()> {
    match a.action.as_str() {
        "build" => build(a.dbus).map(|_| ()),
        "check" => {
            let bin = build(a.dbus)?;
            let out = Command::new("qemu-arm")
                .args(["-L", "/usr/arm-linux-gnueabihf"])
                .arg(&bin)
                .arg("--help")
                .output()
                .context("qemu-arm (apt qemu-user) is needed to run the armv7 binary")?;
            let help = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() || !help.contains("Usage:") {
                bail!("{BIN} --help under qemu-arm failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
            }
            eprintln!("xtask: {BIN} ({TARGET}) runs under qemu-arm:\n{help}");
            // The same end-to-end tests as the host build (network namespaces,
            // obmc-console socket, pty, AF_PACKET), with the armv7 binary.
            sh(Command::new("cargo")
                .current_dir(root())
                .env("LASTGASP_OPENBMC_BIN", &bin)
                .env("LASTGASP_OPENBMC_RUNNER", "qemu-arm -L /usr/arm-linux-gnueabihf")
                .args(["test", "--locked", "-p", "lastgasp-openbmc", "--test", "netns_relay"]))
        }
        other => bail!("unknown action {other:?}: use build or check"),
    }
}

fn build(dbus: bool) -> Result<PathBuf> {
    for tool in ["/usr/bin/cargo", "/usr/bin/rustc", "/usr/bin/arm-linux-gnueabihf-gcc"] {
        if !std::path::Path::new(tool).exists() {
            bail!("{tool} missing: run `cargo xtask setup` (apt: rustc-web cargo-web rust-web-src gcc-arm-linux-gnueabihf)");
        }
    }
    let mut cmd = Command::new("/usr/bin/cargo");
    cmd.current_dir(root())
        .env("RUSTC", "/usr/bin/rustc")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER", "arm-linux-gnueabihf-gcc")
        .args(["build", "--locked", "-p", "lastgasp-openbmc", "--bin", BIN, "--target", TARGET])
        .args(["-Z", "build-std=std,panic_abort", "--target-dir", "target/cross"])
        // A size-first profile for the BMC's small flash, without touching the
        // workspace's release profile.
        .args(["--config", "profile.bmc.inherits=\"release\"", "--config", "profile.bmc.debug=0"])
        .args(["--config", "profile.bmc.opt-level=\"s\"", "--config", "profile.bmc.lto=true"])
        .args(["--config", "profile.bmc.codegen-units=1", "--config", "profile.bmc.panic=\"abort\""])
        .args(["--config", "profile.bmc.strip=true", "--profile", "bmc"]);
    if dbus {
        cmd.args(["--features", "dbus"]);
    }
    sh(&mut cmd)?;
    let bin = binary_path();
    let size = std::fs::metadata(&bin).with_context(|| format!("{} not built", bin.display()))?.len();
    eprintln!("xtask: {} ({TARGET}, stripped): {size} bytes ({:.0} KiB)", bin.display(), size as f64 / 1024.0);
    Ok(bin)
}
