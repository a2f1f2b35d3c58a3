//! `cargo xtask`: the project's automation, in Rust, so a fresh machine needs
//! nothing but cargo to start.
use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod blast;
mod demo;
mod fuzz;
mod fw;
mod openbmc;
mod panic_check;
mod setup;
mod test;
mod util;

/// lastgasp's developer and CI tasks.
#[derive(Parser)]
#[command(name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh Debian 12 machine lacks (apt packages, the firmware
    /// toolchain, qemu). Idempotent.
    Setup(setup::Args),
    /// Build, run or size a board's firmware (runs cargo from inside the board
    /// directory, so its rust-toolchain.toml and .cargo/config.toml apply).
    Fw(fw::Args),
    /// Run every test: setup, host workspace tests, firmware in QEMU, fuzz smoke.
    Test(test::Args),
    /// Short smoke runs of every fuzz target.
    Fuzz(fuzz::Args),
    /// Instruction-count benchmarks (callgrind) of relay-core.
    Bench(bench::Args),
    /// Cross-build the OpenBMC relay for armv7 BMCs (`build`, or `check` = build + run under qemu-arm).
    Openbmc(openbmc::Args),
    /// UDP load generator for host-bridge (settable message mix and rate).
    Blast(blast::Args),
    /// Link-time proof that relay-core's public API cannot panic.
    PanicCheck(panic_check::Args),
    /// The main job: an emulated relay, the bridge and a panicking Linux host.
    Demo(demo::Args),
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup(a) => setup::run(a),
        Cmd::Fw(a) => fw::run(a),
        Cmd::Test(a) => test::run(a),
        Cmd::Fuzz(a) => fuzz::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Blast(a) => blast::run(a),
        Cmd::Demo(a) => demo::run(a),
        Cmd::Openbmc(a) => openbmc::run(a),
        Cmd::PanicCheck(a) => panic_check::run(a),
    }
}
