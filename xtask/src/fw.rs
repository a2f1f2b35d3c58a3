//! `cargo xtask fw build|run|size --board <name>`.
use anyhow::{bail, Result};

/// Options of `fw`.
#[derive(clap::Args)]
pub struct Args {
    /// build, run or size
    action: String,
    /// board directory name under boards/
    #[arg(long, default_value = "qemu-mps2-an386")]
    board: String,
}

/// Placeholder until the firmware issue lands.
pub fn run(a: Args) -> Result<()> {
    bail!("fw {} --board {}: no boards yet", a.action, a.board)
}
