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
    // Everything but the end-to-end package, with the default parallelism.
    sh(Command::new("cargo")
        .current_dir(root())
        .env("LASTGASP_REQUIRE_QEMU", "1")
        .args(["test", "--workspace", "--locked", "--exclude", "lastgasp-tests"]))?;
    // The end-to-end package boots QEMU guests (a Linux host under TCG, the relay
    // firmware) and owns network namespaces: one test at a time, so that two
    // emulators never share the 2 cores CI has and no test times out on load.
    sh(Command::new("cargo")
        .current_dir(root())
        .env("LASTGASP_REQUIRE_QEMU", "1")
        .args(["test", "-p", "lastgasp-tests", "--locked", "--", "--test-threads=1"]))?;
    crate::fuzz::run(crate::fuzz::Args { seconds: 10, ..Default::default() })?;
    Ok(())
}
