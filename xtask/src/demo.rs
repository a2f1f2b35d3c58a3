//! `cargo xtask demo`: the main job.
use anyhow::Result;

/// Options of `demo`.
#[derive(clap::Args)]
pub struct Args {}

/// Until the end-to-end issue lands, say what the demo will be.
pub fn run(_a: Args) -> Result<()> {
    println!(
        "lastgasp demo (not yet assembled): it will boot the relay firmware on an emulated BMC\n\
         (qemu mps2-an386), a real Linux host wired to its UART, an in-process Kubernetes API\n\
         server and host-bridge, panic the host, and print the timeline from the kernel's panic\n\
         line to the Node's KernelPanic condition and taint."
    );
    Ok(())
}
