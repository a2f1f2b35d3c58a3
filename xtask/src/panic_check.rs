//! `cargo xtask panic-check`: the link-time proof that relay-core's public API
//! has no panic path (see relay-core/panic-check/src/main.rs).
use crate::util::{root, run as sh};
use anyhow::{Context, Result};
use std::process::Command;

/// Options of `panic-check`.
#[derive(clap::Args)]
pub struct Args {
    /// Target triple to link for (default: the host). Bare-metal targets such
    /// as thumbv7em-none-eabihf need a toolchain that has their `core`.
    #[arg(long)]
    pub target: Option<String>,
}

/// Build relay-core/panic-check in release (opt-level 3, fat LTO,
/// panic=abort). The link fails with `undefined symbol:
/// relay_core_panic_path_reachable` if any panic path survives.
pub fn run(a: Args) -> Result<()> {
    let manifest = root().join("relay-core/panic-check/Cargo.toml");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    let dir = root().join("relay-core/panic-check");
    cmd.current_dir(&dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .args(["build", "--release", "--manifest-path"])
        .arg(&manifest);
    if let Some(t) = &a.target {
        cmd.args(["--target", t]);
    }
    sh(&mut cmd).context(
        "relay-core has a reachable panic path (the link needs \
         relay_core_panic_path_reachable); look for indexing, unwrap, \
         arithmetic overflow or an unchecked slice in the code named above",
    )?;
    eprintln!("xtask panic-check: relay-core's public API links without any panic path");
    Ok(())
}
