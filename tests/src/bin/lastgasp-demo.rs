//! `lastgasp-demo`: the whole story on embedded defaults (run it through
//! `cargo xtask demo`, which installs what is missing first).
//!
//! A real Linux host (Debian's kernel) panics; the relay firmware on the
//! emulated BMC reads it off the host's serial console and sends the last
//! gasp; host-bridge turns it into Kubernetes facts. Prints the timeline,
//! then shuts everything down.
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lastgasp_tests::linux_host::{self, Mode};
use lastgasp_tests::qemu;
use lastgasp_tests::scenario::{ClusterTarget, Options, Rig, RigError};
use std::path::PathBuf;

use clap::Parser;

const BOOT: Duration = Duration::from_secs(300);
const ACT: Duration = Duration::from_secs(60);

/// A spinner on stderr for the slow parts.
struct Spinner {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spinner {
    fn start(what: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let frames = ['|', '/', '-', '\\'];
            let mut i = 0usize;
            if !tty {
                eprintln!("  .. {what}");
            }
            while !s.load(Ordering::Relaxed) {
                if tty {
                    eprint!(
                        "\r  {} {what} ({:.0}s)   ",
                        frames[i % 4],
                        t0.elapsed().as_secs_f64()
                    );
                    let _ = std::io::stderr().flush();
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            if tty {
                eprintln!(
                    "\r  ok {what} ({:.1}s)          ",
                    t0.elapsed().as_secs_f64()
                );
            } else {
                eprintln!("  ok {what} ({:.1}s)", t0.elapsed().as_secs_f64());
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn slow<T>(what: &str, f: impl FnOnce() -> Result<T, RigError>) -> Result<T, RigError> {
    let _s = Spinner::start(what.to_string());
    f()
}

fn main() {
    if let Err(e) = run() {
        eprintln!("lastgasp demo failed: {e}");
        std::process::exit(1);
    }
}

/// The whole lastgasp story on embedded defaults: a real Linux host (Debian's
/// kernel in qemu-system-x86_64) panics; the relay firmware on its emulated
/// BMC (qemu-system-arm, mps2-an386) reads the panic off the host's serial
/// console and sends the signed last gasp; host-bridge turns it into
/// Kubernetes facts. Prints the timeline, then removes all it started.
///
/// Needs root (it creates a network namespace and taps). Run it through
/// `cargo xtask demo`, which installs what is missing first.
#[derive(clap::Parser)]
#[command(name = "lastgasp-demo", version)]
struct Args {
    /// Then power-cycle the host and watch the bridge undo its actions when
    /// the Node comes back with a new boot id.
    #[arg(long)]
    recover: bool,
    /// Act on the cluster of this kubeconfig instead of the in-process API
    /// server (default when `KUBECONFIG` is set). The demo works in a
    /// namespace of its own there, with a fake Node and a few Pods that
    /// never run, and deletes them afterwards. Needs rights to create
    /// Namespaces, Nodes, Pods and Events.
    #[arg(long, value_name = "FILE", env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Use the in-process API server even when `KUBECONFIG` is set.
    #[arg(long)]
    in_process: bool,
}

fn run() -> Result<(), RigError> {
    let args = Args::parse();
    let recover = args.recover;
    let cluster = match args.kubeconfig.filter(|p| !p.as_os_str().is_empty() && !args.in_process) {
        // KUBECONFIG may list several files (`a:b`); kube merges them.
        Some(p) if p.to_string_lossy().contains(':') => ClusterTarget::Kubeconfig(None),
        Some(p) => ClusterTarget::Kubeconfig(Some(p)),
        None => ClusterTarget::InProcess,
    };
    if let Some(why) = linux_host::missing_prerequisite().or_else(qemu::missing_prerequisite) {
        return Err(RigError(why));
    }
    println!("lastgasp demo: a real Linux host panics; its BMC's relay tells Kubernetes.");
    match &cluster {
        ClusterTarget::InProcess => println!("Kubernetes: the built-in in-process API server.\n"),
        ClusterTarget::Kubeconfig(p) => println!(
            "Kubernetes: the cluster of {} (a namespace, a fake Node and Pods of the demo's own, \
             deleted afterwards; --in-process uses the built-in API server instead).\n",
            p.as_ref().map_or_else(|| "KUBECONFIG".to_owned(), |p| p.display().to_string())
        ),
    }
    remove_stale_namespaces();
    let mut spinner: Option<Spinner> = None;
    let mut rig = Rig::start(Options { cluster, ..Options::default() }, &mut |m: &str| {
        spinner = None;
        spinner = Some(Spinner::start(m.to_string()));
    })?;
    drop(spinner);
    println!(
        "  netns {} | state dir {} | Node {} | pods {}",
        rig.netns_name(),
        rig.state_dir().display(),
        rig.node,
        rig.pods.join(", ")
    );
    slow("the Linux host boots (TCG)", || {
        rig.kubelet_reports_boot(BOOT).map(|_| ())
    })?;
    let panic_at = slow(
        "the host runs a little, then panics (echo c > /proc/sysrq-trigger)",
        || rig.wait_panic(BOOT),
    )?;
    let acted = slow("the relay and host-bridge act", || {
        rig.wait_incident("KernelPanic", ACT)?;
        rig.wait_acted(true, ACT)
    })?;
    if let Some((at, copies)) = rig.relay_reports_sent(panic_at) {
        rig.step_at(
            at,
            "relay",
            format!("signed report leaves the relay's NIC (first of {copies} copies)"),
        );
    }
    if recover {
        slow("the BMC power-cycles the host; it boots again", || {
            rig.boot_host(Mode::Idle)?;
            rig.kubelet_reports_boot(BOOT).map(|_| ())
        })?;
        slow("host-bridge clears the condition and the taint", || {
            rig.wait_recovered(ACT).map(|_| ())
        })?;
    }
    println!(
        "\nTimeline (since the demo started; +delta since the step before):\n{}",
        rig.timeline()
    );
    if let Some(last) = acted.last_pod_at() {
        println!(
            "From the panic line leaving the host's UART to the last Pod annotated: {:.0} ms\n\
             (Kubernetes alone: ~40-50 s to NotReady, then 300 s before eviction, and no reason.)\n",
            (last - panic_at).as_secs_f64() * 1000.0
        );
    }
    let _s = Spinner::start("shutting down (VMs, bridge, API server, netns)".into());
    drop(rig);
    Ok(())
}

/// Namespaces an earlier demo or test run created (`lg-e2e-<pid>-<n>`) and
/// could not remove because it was killed: removed when that pid is gone.
fn remove_stale_namespaces() {
    let Ok(out) = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("lg-e2e-")
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("  removing stale namespace {name} (its creator, pid {pid}, is gone)");
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", name])
                .status();
        }
    }
}
