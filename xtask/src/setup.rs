//! `cargo xtask setup`: install what a fresh Debian 12 machine lacks.
use anyhow::Result;

/// Options of `setup`.
#[derive(clap::Args)]
pub struct Args {}

/// Install the packages (placeholder until the firmware issue lands).
pub fn run(_a: Args) -> Result<()> {
    eprintln!("xtask setup: nothing to install yet");
    Ok(())
}
