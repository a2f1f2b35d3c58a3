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
    let lean = std::env::var_os("LASTGASP_CI").is_some();
    disk_report("before the builds");
    for board in crate::fw::boards() {
        let image = crate::fw::build(&board)?;
        if let Ok(size) = crate::fw::elf_size(&image) {
            eprintln!("xtask test: {board}: {} B flash, {} B RAM", size.flash, size.ram);
        }
        crate::fw::panic_check(&board)?;
        // On CI only the emulated board's image is used afterwards; the
        // others were build checks, and their build-std trees cost ~1.3 GB each.
        if lean && board != crate::fw::QEMU_BOARD {
            let dir = crate::fw::board_dir(&board)?.join("target");
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                eprintln!("xtask test: cannot remove {}: {e}", dir.display());
            }
        }
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
    disk_report("before fuzzing");
    crate::fuzz::run(crate::fuzz::Args { seconds: 10, ..Default::default() })?;
    disk_report("at the end");
    Ok(())
}

/// Disk a full run takes after `setup`, with margin: measured on a fresh
/// clone with `.ci/run`'s settings, the tree grew to 4.8 GB (5 GiB of the
/// disk went).
const DISK_NEEDED_GIB: u64 = 7;

/// Says how much disk is free where the build goes, and warns early when a
/// full run will not fit (a full disk otherwise shows up as a linker error).
fn disk_report(when: &str) {
    let Ok(out) = Command::new("df").args(["--output=avail", "-B1G"]).arg(root()).output() else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(free) = text.lines().nth(1).and_then(|l| l.trim().parse::<u64>().ok()) else {
        return;
    };
    eprintln!("xtask test: {free} GiB free on the build's disk {when}");
    if when == "before the builds" && free < DISK_NEEDED_GIB {
        eprintln!(
            "xtask test: WARNING: a full run needs about {DISK_NEEDED_GIB} GiB of disk and only {free} GiB is free; \
             expect \"No space left on device\""
        );
    }
}
