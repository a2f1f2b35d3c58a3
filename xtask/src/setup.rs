//! `cargo xtask setup`: install what a fresh Debian 12 machine lacks.
//!
//! Idempotent: it asks dpkg which packages are already installed and runs
//! `apt-get update` + `apt-get install` only for the missing ones. Runs apt
//! through `sudo` when not root.
use crate::util::run as sh;
use anyhow::{bail, Context, Result};
use std::process::Command;

/// Debian packages the project needs, with why.
pub const PACKAGES: &[(&str, &str)] = &[
    (
        "rustc-web",
        "rustc 1.96 with every LLVM target, for the firmware",
    ),
    ("cargo-web", "the cargo matching rustc-web"),
    ("rust-web-src", "core/alloc sources for -Z build-std"),
    ("rust-web-llvm", "rust-lld for the embedded targets"),
    ("lld-22", "the linker behind rust-lld"),
    (
        "qemu-system-arm",
        "runs the firmware on the emulated mps2-an386 board",
    ),
    (
        "qemu-system-x86",
        "runs a real Linux host that panics, for end-to-end tests",
    ),
    ("busybox-static", "the init of that host's initramfs"),
    (
        "iproute2",
        "network namespaces and tap devices for the tests",
    ),
    ("iputils-ping", "pings the relay from the test's namespace"),
    (
        "nftables",
        "random loss on the relay's link in the e2e loss test (the kernel may lack sch_netem)",
    ),
    (
        "valgrind",
        "callgrind instruction counts for the no_std benchmarks",
    ),
    (
        "gcc-arm-linux-gnueabihf",
        "links the OpenBMC relay for armv7 BMCs",
    ),
    ("libc6-dev-armhf-cross", "armhf glibc for that link"),
    (
        "qemu-user",
        "runs the armv7 OpenBMC relay in its tests (qemu-arm)",
    ),
    (
        "dbus",
        "a private dbus-daemon for the OpenBMC relay's D-Bus tests",
    ),
];

/// Options of `setup`.
#[derive(clap::Args)]
pub struct Args {
    /// Only report what is missing; install nothing.
    #[arg(long)]
    pub check: bool,
}

/// Whether dpkg reports `pkg` as installed.
fn installed(pkg: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .context("could not run dpkg-query (is this a Debian machine?)")?;
    Ok(out.status.success()
        && String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

/// The packages of [`PACKAGES`] that are not installed yet.
pub fn missing() -> Result<Vec<&'static str>> {
    let mut v = Vec::new();
    for (pkg, _) in PACKAGES {
        if !installed(pkg)? {
            v.push(*pkg);
        }
    }
    Ok(v)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// An apt-get command, through sudo when not root, that waits for a dpkg
/// lock held by another apt instead of failing at once.
fn apt(args: &[&str]) -> Command {
    let mut c = if is_root() {
        Command::new("apt-get")
    } else {
        let mut c = Command::new("sudo");
        c.arg("apt-get");
        c
    };
    c.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-o", "DPkg::Lock::Timeout=900", "-q"])
        .args(args);
    c
}

/// Install the missing packages.
pub fn run(a: Args) -> Result<()> {
    let missing = missing()?;
    if missing.is_empty() {
        eprintln!("xtask setup: all {} packages installed", PACKAGES.len());
        return Ok(());
    }
    if a.check {
        for (pkg, why) in PACKAGES.iter().filter(|(p, _)| missing.contains(p)) {
            eprintln!("missing: {pkg:16} {why}");
        }
        bail!(
            "{} package(s) missing; run `cargo xtask setup`",
            missing.len()
        );
    }
    eprintln!("xtask setup: installing {}", missing.join(" "));
    sh(&mut apt(&["update"]))?;
    let mut install = apt(&["install", "-y", "--no-install-recommends"]);
    install.args(&missing);
    sh(&mut install)?;
    let still = self::missing()?;
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(" "));
    }
    // The downloaded .debs are of no further use; on CI the disk is better
    // kept for the builds (hundreds of MB with qemu and the toolchain).
    if std::env::var_os("LASTGASP_CI").is_some() {
        let _ = sh(&mut apt(&["clean"]));
    }
    Ok(())
}
