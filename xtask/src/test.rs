//! `cargo xtask test`: the README's test command, also what CI runs.
use crate::util::{root, run as sh};
use anyhow::Result;
use std::process::Command;

/// Options of `test`.
#[derive(clap::Args)]
pub struct Args {
    /// Skip `setup` (packages already installed).
    #[arg(long)]
    no_setup: bool,
}

/// Setup, then every test suite in turn.
pub fn run(a: Args) -> Result<()> {
    if !a.no_setup {
        crate::setup::run(crate::setup::Args { check: false })?;
    }
    // Every board's firmware must build; the QEMU tests in tests/ then run
    // the emulated board's image, and must not skip here.
    for board in crate::fw::boards() {
        crate::fw::build(&board)?;
        crate::fw::panic_check(&board)?;
    }
    crate::openbmc::ci()?;
    sh(Command::new("cargo")
        .current_dir(root())
        .env("LASTGASP_REQUIRE_QEMU", "1")
        .args(["test", "--workspace", "--locked"]))?;
    crate::fuzz::run(crate::fuzz::Args { seconds: 10, ..Default::default() })?;
    Ok(())
}
