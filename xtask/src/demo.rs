//! `cargo xtask demo`: the main job. Installs what is missing (`setup`),
//! then runs the `lastgasp-demo` binary of the tests crate: the relay
//! firmware on an emulated BMC (qemu mps2-an386), a real Linux host wired to
//! its UART, an in-process Kubernetes API server and host-bridge; the host
//! panics and the demo prints the timeline from the kernel's panic line to
//! the Node's KernelPanic condition, its taint and each Pod's reason.
use crate::util::{root, run as sh};
use anyhow::{bail, Result};
use std::process::Command;

/// Options of `demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Do not run `setup` first (the machine is known to be ready).
    #[arg(long)]
    pub no_setup: bool,
    /// After the panic, power-cycle the host and watch the bridge clear the
    /// Node's condition and taint when it comes back.
    #[arg(long)]
    pub recover: bool,
    /// Act on the cluster of this kubeconfig instead of the in-process API
    /// server (default when `KUBECONFIG` is set): in a namespace of the
    /// demo's own, with a fake Node, all deleted afterwards.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Use the in-process API server even when `KUBECONFIG` is set.
    #[arg(long)]
    pub in_process: bool,
}

/// Install what is missing, then run the demo.
pub fn run(a: Args) -> Result<()> {
    if !a.no_setup {
        eprintln!("xtask demo: checking the machine (cargo xtask setup)");
        crate::setup::run(crate::setup::Args { check: false })?;
    }
    let uid = Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        bail!("the demo creates a network namespace and taps: run it as root (sudo -E cargo xtask demo)");
    }
    eprintln!("xtask demo: building the demo (first time: a few minutes)");
    sh(Command::new(env!("CARGO")).current_dir(root()).args([
        "build",
        "-q",
        "-p",
        "lastgasp-tests",
        "--bin",
        "lastgasp-demo",
    ]))?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), Into::into);
    let mut demo = Command::new(target.join("debug").join("lastgasp-demo"));
    if a.recover {
        demo.arg("--recover");
    }
    if let Some(k) = &a.kubeconfig {
        demo.arg("--kubeconfig").arg(k);
    }
    if a.in_process {
        demo.arg("--in-process");
    }
    sh(&mut demo)
}
