//! `cargo xtask bench`: callgrind instruction counts for relay-core.
use anyhow::Result;

/// Options of `bench`.
#[derive(clap::Args)]
pub struct Args {}

/// Placeholder until benchmarks land.
pub fn run(_a: Args) -> Result<()> {
    eprintln!("xtask bench: no benchmarks yet");
    Ok(())
}
