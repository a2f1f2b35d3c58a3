//! The whole story, written once for the demo (`cargo xtask demo`) and the
//! end-to-end tests: a real Linux host panics, the relay on its emulated BMC
//! sees it on the serial console and sends the last gasp, host-bridge turns
//! it into Kubernetes facts.
//!
//! A [`Rig`] owns everything it starts, inside one network namespace it
//! creates and enters on the calling thread (so every thread, socket and
//! process it starts afterwards lives there, and nothing reaches outside):
//!
//! - tap `lgr0` (10.42.0.1/24): the relay's link, where the bridge listens;
//! - tap `lgh0` (10.99.0.1/24): the Linux host's NIC (its direct netconsole);
//! - the in-process Kubernetes API server with a Node and its Pods, or a
//!   real cluster from a kubeconfig, reached through a [`ClusterGateway`]
//!   (the only way out of the namespace), with a namespace of the rig's own
//!   and a fake Node;
//! - host-bridge (`serve::run`, in-process) with its journal in a temporary
//!   state directory;
//! - the relay firmware in `qemu-system-arm` (mps2-an386);
//! - the Linux host in `qemu-system-x86_64`, its `ttyS0` pumped into the
//!   relay's console UART.
//!
//! Dropping the rig stops the VMs (by their PIDs), the bridge and the API
//! server, and deletes the namespace.
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::apiserver::cluster::{NodeSpec, TestCluster};
use crate::gateway::ClusterGateway;
use crate::linux_host::{self, Artifacts, HostConfig, LinuxHost, Mode, SerialSink};
use crate::netns::NetNs;
use crate::qemu::{self, Board, BootOptions};

/// The relay's tap, in the rig's namespace.
pub const RELAY_TAP: &str = "lgr0";
/// The collector's MAC on the relay's link.
pub const RELAY_LINK_MAC: &str = "02:00:00:42:00:01";
/// The host's tap, in the rig's namespace.
pub const HOST_TAP: &str = "lgh0";
/// The namespace's address on the host's link (netconsole's target).
pub const HOST_LINK_IP: &str = "10.99.0.1";
/// The MAC of the namespace's end of the host's link.
pub const HOST_LINK_MAC: &str = "02:00:00:99:00:01";
/// The Linux host's address (the Node's InternalIP).
pub const HOST_IP: &str = "10.99.0.2";
/// The bridge's UDP port.
pub const BRIDGE_PORT: u16 = 6666;
/// The reason annotation the bridge writes on each pod.
pub const REASON_ANNOTATION: &str = "lastgasp.dev/termination-reason";
/// The taint of the default policy.
pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";
/// The node condition of a kernel panic.
pub const KERNEL_PANIC: &str = "KernelPanic";
/// The relay id in the board's default configuration.
pub const RELAY_ID: &str = "qemu-relay-1";

/// Which parts the rig runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Boot the relay and wire the host's ttyS0 to its console UART.
    pub relay: bool,
    /// Load netconsole.ko (extended format) on the host, aimed at the bridge.
    pub host_netconsole: bool,
    /// What the host does after its heartbeat.
    pub host_mode: Mode,
    /// Seconds of heartbeat before that.
    pub run_secs: u32,
    /// Pods on the Node.
    pub pods: usize,
    /// Drop this percentage of the UDP datagrams arriving from the relay
    /// (nftables `numgen random`, in the kernel, on the relay's link).
    pub loss_percent: Option<u32>,
    /// Start the Linux host (off for scenarios that replay a console).
    pub host: bool,
    /// Which Kubernetes the bridge acts on.
    pub cluster: ClusterTarget,
}

/// Which Kubernetes the rig uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterTarget {
    /// The in-process API server, inside the rig's namespace.
    InProcess,
    /// The cluster of this kubeconfig (`None`: `$KUBECONFIG`, else
    /// `~/.kube/config`), reached through a [`ClusterGateway`] out of the
    /// rig's namespace; the rig works in a namespace of its own there, with a
    /// fake Node, and removes both afterwards.
    Kubeconfig(Option<PathBuf>),
}

impl ClusterTarget {
    /// The tests' switch: `LASTGASP_K8S=real` means the cluster of `KUBECONFIG`.
    pub fn from_env() -> Self {
        if TestCluster::real_requested() {
            Self::Kubeconfig(None)
        } else {
            Self::InProcess
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            relay: true,
            host_netconsole: false,
            host_mode: Mode::Panic,
            run_secs: 2,
            pods: 3,
            loss_percent: None,
            host: true,
            cluster: ClusterTarget::from_env(),
        }
    }
}

/// Why the rig failed.
#[derive(Debug)]
pub struct RigError(pub String);

impl std::fmt::Display for RigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for RigError {}

fn rig_err(m: impl std::fmt::Display) -> RigError {
    RigError(m.to_string())
}

/// One step of the timeline.
#[derive(Clone, Debug)]
pub struct Step {
    /// When it was seen.
    pub at: Instant,
    /// Who: `host`, `relay`, `bridge`, `k8s`.
    pub actor: &'static str,
    /// What happened.
    pub what: String,
}

/// What the cluster looked like once the bridge had acted.
#[derive(Clone, Debug, Default)]
pub struct Acted {
    /// When the Node's `KernelPanic` condition was first seen True.
    pub condition_at: Option<Instant>,
    /// When the out-of-service taint was first seen.
    pub taint_at: Option<Instant>,
    /// Each pod's termination reason and when it was first seen.
    pub pods: Vec<(String, String, Instant)>,
    /// The condition's message.
    pub condition_message: String,
}

impl Acted {
    /// When the last pod got its reason.
    pub fn last_pod_at(&self) -> Option<Instant> {
        self.pods.iter().map(|p| p.2).max()
    }
}

/// Reporter of slow steps (the demo's progress indicator).
pub type Progress<'a> = &'a mut dyn FnMut(&str);

/// Enter `ns` on the calling thread: every thread, socket and child process
/// created by this thread afterwards lives in it.
fn enter(ns: &NetNs) -> Result<(), RigError> {
    let path = format!("/run/netns/{}", ns.name());
    let f = File::open(&path).map_err(|e| rig_err(format!("{path}: {e}")))?;
    // SAFETY: setns on a namespace fd affects only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(rig_err(format!(
            "setns {path}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The namespace the calling thread was in, to go back to on drop.
struct HomeNs(File);

impl HomeNs {
    fn current() -> Result<Self, RigError> {
        File::open("/proc/thread-self/ns/net")
            .map(HomeNs)
            .map_err(|e| rig_err(format!("own netns: {e}")))
    }
    fn restore(&self) {
        // SAFETY: setns on a namespace fd affects only this thread.
        unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

/// Everything one run of the story needs; see the module docs.
pub struct Rig {
    /// Options it was started with.
    pub opts: Options,
    // Field order is drop order: VMs, then the bridge's runtime, then the namespace.
    host: Option<LinuxHost>,
    relay: Option<Board>,
    cluster: Option<TestCluster>,
    rt: Option<tokio::runtime::Runtime>,
    gateway: Option<ClusterGateway>,
    home: HomeNs,
    ns: NetNs,
    state: tempfile::TempDir,
    /// Name of the Node that stands for the Linux host.
    pub node: String,
    /// Names of its Pods.
    pub pods: Vec<String>,
    http_port: u16,
    art: Option<&'static Artifacts>,
    /// When the rig started.
    pub t0: Instant,
    /// The timeline so far.
    pub steps: Vec<Step>,
    host_boots: usize,
    boot_ids: Vec<String>,
    sniffer: Option<Sniffer>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9464)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Rig {
    /// Start the parts `opts` asks for (slow: boots two VMs).
    pub fn start(opts: Options, progress: Progress<'_>) -> Result<Self, RigError> {
        let t0 = Instant::now();
        let art = if opts.host {
            progress("preparing the Linux host (Debian kernel + busybox initramfs)");
            Some(linux_host::prepare().map_err(rig_err)?)
        } else {
            None
        };
        if opts.relay {
            progress("building the relay firmware (qemu-mps2-an386)");
            let _ = qemu::firmware();
        }
        let home = HomeNs::current()?;
        let ns = NetNs::new("e2e").map_err(rig_err)?;
        ns.add_tap(
            RELAY_TAP,
            RELAY_LINK_MAC,
            &format!("{}/24", qemu::COLLECTOR_IP),
        )
        .map_err(rig_err)?;
        ns.add_tap(HOST_TAP, HOST_LINK_MAC, &format!("{HOST_LINK_IP}/24"))
            .map_err(rig_err)?;
        let state = tempfile::Builder::new()
            .prefix("lastgasp-demo-")
            .tempdir()
            .map_err(rig_err)?;
        // Opened before entering the namespace: its thread must stay outside.
        let gateway = match &opts.cluster {
            ClusterTarget::InProcess => None,
            ClusterTarget::Kubeconfig(path) => {
                progress("opening the way out of the namespace to the cluster");
                Some(ClusterGateway::open(&ns, path.as_deref(), state.path()).map_err(rig_err)?)
            }
        };
        enter(&ns)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| rig_err(format!("tokio: {e}")))?;
        let mut rig = Rig {
            opts: opts.clone(),
            host: None,
            relay: None,
            cluster: None,
            rt: Some(rt),
            gateway,
            home,
            ns,
            state,
            node: String::new(),
            pods: Vec::new(),
            http_port: free_port(),
            art,
            t0,
            steps: Vec::new(),
            host_boots: 0,
            boot_ids: Vec::new(),
            sniffer: None,
        };
        rig.sniffer = Sniffer::start(RELAY_TAP)
            .map_err(|e| eprintln!("no packet timestamps on {RELAY_TAP}: {e}"))
            .ok();
        if let Some(p) = opts.loss_percent {
            let how = rig.add_loss(p)?;
            rig.step("net", format!("{p}% loss on the relay's link ({how})"));
        }
        progress("starting the Kubernetes API server and host-bridge");
        rig.start_cluster()?;
        rig.start_bridge()?;
        if opts.relay {
            progress("booting the relay firmware on the emulated BMC");
            rig.boot_relay()?;
        }
        if opts.host {
            progress("starting the Linux host VM");
            rig.boot_host(opts.host_mode)?;
        }
        Ok(rig)
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        // Set in start() and only taken in drop().
        self.rt
            .as_ref()
            .unwrap_or_else(|| unreachable!("runtime taken before drop"))
    }

    fn cluster(&self) -> &TestCluster {
        self.cluster
            .as_ref()
            .unwrap_or_else(|| unreachable!("cluster taken before drop"))
    }

    /// Record a step of the timeline at `at`.
    pub fn step_at(&mut self, at: Instant, actor: &'static str, what: impl Into<String>) {
        self.steps.push(Step {
            at,
            actor,
            what: what.into(),
        });
    }

    /// Record a step of the timeline now.
    pub fn step(&mut self, actor: &'static str, what: impl Into<String>) {
        self.step_at(Instant::now(), actor, what);
    }

    fn add_loss(&self, percent: u32) -> Result<&'static str, RigError> {
        // Random loss of the relay's datagrams as they arrive in the
        // namespace (this direction is the relay's ingress on the tap, where
        // a root `tc netem` would not act without an ifb; and this machine's
        // kernel has no sch_netem at all).
        let rules = format!(
            "table inet lastgasp_loss {{\n  chain input {{ type filter hook input priority 0;\n    \
             iifname \"{RELAY_TAP}\" udp dport {BRIDGE_PORT} numgen random mod 100 < {percent} counter drop;\n  }}\n}}\n"
        );
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| rig_err(format!("nft (package nftables): {e}")))?;
        if let Some(mut i) = child.stdin.take() {
            i.write_all(rules.as_bytes()).map_err(rig_err)?;
        }
        let out = child.wait_with_output().map_err(rig_err)?;
        if !out.status.success() {
            return Err(rig_err(format!(
                "nft: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok("nftables numgen random drop on the relay's ingress")
    }

    /// Datagrams the loss rule dropped so far.
    pub fn loss_dropped(&self) -> Option<u64> {
        let out = std::process::Command::new("nft")
            .args(["list", "table", "inet", "lastgasp_loss"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        words.by_ref().find(|w| *w == "packets")?;
        words.next()?.parse().ok()
    }

    fn start_cluster(&mut self) -> Result<(), RigError> {
        let pods = self.opts.pods;
        let real = self.gateway.as_ref().map(|g| g.config.clone());
        let (cluster, node, pod_names) = self.rt().block_on(async move {
            let tc = match real {
                Some(config) => TestCluster::on(config).await,
                None => TestCluster::in_process().await,
            };
            let node = tc
                .create_node(NodeSpec {
                    suffix: "host",
                    internal_ip: HOST_IP,
                    boot_id: "not-booted-yet",
                    annotations: Default::default(),
                    taints: Vec::new(),
                })
                .await;
            let name = node.metadata.name.unwrap_or_default();
            let pods = tc.create_pods(&name, "app", pods).await;
            let pod_names = pods
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect::<Vec<_>>();
            (tc, name, pod_names)
        });
        let on = self.gateway.as_ref().map_or_else(
            || "the in-process API server".to_owned(),
            |g| format!("the cluster at {}", g.server),
        );
        self.step(
            "k8s",
            format!(
                "Node {node} with {} pods in namespace {}, on {on}",
                pod_names.len(),
                cluster.namespace
            ),
        );
        self.cluster = Some(cluster);
        self.node = node;
        self.pods = pod_names;
        Ok(())
    }

    fn bridge_config(&self) -> String {
        let dir = self.state.path();
        let kubeconfig = match (self.cluster().server(), &self.gateway) {
            (Some(server), _) => {
                let p = dir.join("kubeconfig");
                let _ = std::fs::write(&p, server.kubeconfig_yaml());
                format!("kubeconfig = \"{}\"\n", p.display())
            }
            (None, Some(g)) => format!("kubeconfig = \"{}\"\n", g.kubeconfig.display()),
            (None, None) => String::new(),
        };
        format!(
            r#"# host-bridge configuration written by the lastgasp demo
[ingest]
listen = ["0.0.0.0:{BRIDGE_PORT}"]
[incident]
confirm_after_silence = "2s"
[journal]
path = "{dir}/journal.redb"
[act]
actuator = "kubernetes"
policy = "taint"
[trust]
netconsole_sources = ["{HOST_IP}/32"]
[serve]
http = "127.0.0.1:{http}"
[[keyring]]
relay_id = "{RELAY_ID}"
node = "{node}"
key = "{key}"
addresses = ["{relay_ip}"]
[kube]
{kubeconfig}pod_selector = "{sel}"
"#,
            dir = dir.display(),
            http = self.http_port,
            node = self.node,
            key = hex(&qemu::DEFAULT_KEY),
            relay_ip = qemu::RELAY_IP,
            sel = self.cluster().pod_selector(),
        )
    }

    fn start_bridge(&mut self) -> Result<(), RigError> {
        let text = self.bridge_config();
        let path = self.state.path().join("host-bridge.toml");
        std::fs::write(&path, &text).map_err(rig_err)?;
        let (cfg, v) = host_bridge::serve::config::Config::parse(&text, &path, self.state.path())
            .map_err(|e| rig_err(format!("bridge config: {e}\n{text}")))?;
        self.rt().spawn(async move {
            if let Err(e) = host_bridge::serve::run(cfg, v).await {
                eprintln!("host-bridge stopped: {e:#}");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.http_get("/readyz").is_none_or(|(code, _)| code != 200) {
            if Instant::now() > deadline {
                return Err(rig_err("host-bridge did not become ready within 20 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.step(
            "bridge",
            format!(
                "host-bridge ready on udp/{BRIDGE_PORT}, journal in {}",
                self.state.path().display()
            ),
        );
        Ok(())
    }

    fn boot_relay(&mut self) -> Result<(), RigError> {
        let mut opts = BootOptions::new(RELAY_TAP);
        opts.workdir = Some(self.state.path().join("relay"));
        if let Some(d) = &opts.workdir {
            std::fs::create_dir_all(d).map_err(rig_err)?;
        }
        let board = Board::boot(&self.ns, opts);
        self.relay = Some(board);
        qemu::wait_until_up(&self.ns, Duration::from_secs(60));
        self.step(
            "relay",
            format!("relay firmware up at {} (answers ping)", qemu::RELAY_IP),
        );
        Ok(())
    }

    /// Boot (or boot again: a power cycle by the BMC) the Linux host in `mode`.
    pub fn boot_host(&mut self, mode: Mode) -> Result<(), RigError> {
        if let Some(mut old) = self.host.take() {
            old.power_off();
            self.step("host", "powered off");
        }
        let art = self
            .art
            .ok_or_else(|| rig_err("rig started without a host"))?;
        let mut cfg = HostConfig::new(mode);
        cfg.run_secs = self.opts.run_secs;
        cfg.tap = Some(HOST_TAP.into());
        cfg.ip = Some(format!("{HOST_IP}/24"));
        if self.opts.host_netconsole {
            cfg.netconsole = Some(HostConfig::extended_netconsole(
                HOST_IP,
                HOST_LINK_IP,
                BRIDGE_PORT,
                HOST_LINK_MAC,
            ));
        }
        cfg.workdir = Some(self.state.path().join(format!("host-{}", self.host_boots)));
        let sink: Option<SerialSink> = match &self.relay {
            Some(b) => Some(Box::new(
                b.console_writer()
                    .map_err(|e| rig_err(format!("relay console: {e}")))?,
            )),
            None => None,
        };
        let host = LinuxHost::boot(art, cfg, sink).map_err(rig_err)?;
        self.host_boots += 1;
        let wired = if self.relay.is_some() {
            ", ttyS0 wired to the relay's UART0"
        } else {
            ""
        };
        self.step_at(
            host.started(),
            "host",
            format!("qemu-system-x86_64 started ({mode:?}{wired})"),
        );
        self.host = Some(host);
        Ok(())
    }

    /// The running Linux host.
    pub fn host(&mut self) -> Result<&mut LinuxHost, RigError> {
        self.host
            .as_mut()
            .ok_or_else(|| rig_err("no Linux host running"))
    }

    /// The relay board.
    pub fn relay(&mut self) -> Result<&mut Board, RigError> {
        self.relay
            .as_mut()
            .ok_or_else(|| rig_err("no relay running"))
    }

    /// Play kubelet: wait for the current boot's boot id on the serial
    /// console, then report it (Ready, new bootID) in the Node's status.
    pub fn kubelet_reports_boot(&mut self, timeout: Duration) -> Result<String, RigError> {
        let host = self
            .host
            .as_ref()
            .ok_or_else(|| rig_err("no Linux host running"))?;
        let id = host
            .boot_id_from(0, timeout)
            .ok_or_else(|| rig_err(format!("the host printed no boot id within {timeout:?}")))?;
        let at = host
            .serial()
            .find_from(0, "boot_id=")
            .map_or_else(Instant::now, |h| h.1);
        let (node, ip, id2) = (self.node.clone(), HOST_IP, id.clone());
        let cluster = self.cluster.as_ref().ok_or_else(|| rig_err("no cluster"))?;
        self.rt
            .as_ref()
            .ok_or_else(|| rig_err("no runtime"))?
            .block_on(cluster.set_node_status(&node, ip, &id2, true));
        self.step_at(at, "host", format!("kernel up, boot_id={id}"));
        self.step(
            "k8s",
            format!(
                "kubelet (played by the rig) reports Ready, bootID {}",
                &id[..8]
            ),
        );
        self.boot_ids.push(id.clone());
        Ok(id)
    }

    /// Wait for the host's sysrq panic line; returns when it left the UART.
    pub fn wait_panic(&mut self, timeout: Duration) -> Result<Instant, RigError> {
        let host = self
            .host
            .as_ref()
            .ok_or_else(|| rig_err("no Linux host running"))?;
        let at = host
            .serial()
            .wait_for(linux_host::SYSRQ_PANIC_LINE, timeout)
            .ok_or_else(|| {
                rig_err(format!(
                    "no panic line on the host's ttyS0 within {timeout:?}; last output:\n{}",
                    tail(&host.serial().text(), 15)
                ))
            })?;
        self.step_at(
            at,
            "host",
            format!("ttyS0: \"{}\"", linux_host::SYSRQ_PANIC_LINE),
        );
        Ok(at)
    }

    /// GET from the bridge's HTTP endpoint: (status, body).
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: bridge\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let code = out.split_whitespace().nth(1)?.parse().ok()?;
        let body = out
            .split_once("\r\n\r\n")
            .map(|b| b.1.to_string())
            .unwrap_or_default();
        Some((code, body))
    }

    /// The bridge's incidents (journal entries as JSON).
    pub fn incidents(&self) -> Vec<Value> {
        self.http_get("/incidents")
            .and_then(|(_, b)| serde_json::from_str::<Vec<Value>>(&b).ok())
            .unwrap_or_default()
    }

    /// Wait until the bridge holds a trusted incident whose reason is
    /// `reason` (a verified report, or netconsole from an allowed source);
    /// returns it.
    pub fn wait_incident(&mut self, reason: &str, timeout: Duration) -> Result<Value, RigError> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .incidents()
                .into_iter()
                .find(|e| e["incident"]["reason"] == reason && e["incident"]["trusted"] == true);
            if let Some(e) = found {
                let i = &e["incident"];
                let what = format!(
                    "incident #{} {} ({}, {}, from {}): \"{}\"",
                    i["id"],
                    i["reason"].as_str().unwrap_or("?"),
                    i["certainty"].as_str().unwrap_or("?"),
                    if i["trusted"] == true {
                        "trusted"
                    } else {
                        "untrusted"
                    },
                    sender_text(i),
                    i["trigger_line"].as_str().unwrap_or("")
                );
                self.step("bridge", what);
                return Ok(e);
            }
            if Instant::now() >= deadline {
                return Err(rig_err(format!(
                    "no {reason} incident in the bridge within {timeout:?}: {:?}",
                    self.incidents()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// When the relay's first signed report after `after` reached the
    /// wire (seen by a packet socket on the relay's tap), and how many report
    /// copies did since.
    pub fn relay_reports_sent(&self, after: Instant) -> Option<(Instant, usize)> {
        let times: Vec<Instant> = self
            .sniffer
            .as_ref()?
            .reports()
            .into_iter()
            .filter(|t| *t >= after)
            .collect();
        Some((*times.first()?, times.len()))
    }

    /// Poll the API server until the Node has the `KernelPanic` condition,
    /// the out-of-service taint and every pod its reason (or `timeout`).
    pub fn wait_acted(&mut self, want_taint: bool, timeout: Duration) -> Result<Acted, RigError> {
        let client = self.cluster().client.clone();
        let ns = self.cluster().namespace.clone();
        let (node, pods) = (self.node.clone(), self.pods.clone());
        let deadline = Instant::now() + timeout;
        let mut acted = Acted::default();
        let done = self.rt().block_on(async {
            let nodes: Api<Node> = Api::all(client.clone());
            let pod_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            loop {
                let now = Instant::now();
                if let Ok(n) = nodes.get(&node).await {
                    if acted.condition_at.is_none() {
                        if let Some(c) = kernel_panic_condition(&n).filter(|c| c.status == "True") {
                            acted.condition_at = Some(now);
                            acted.condition_message = c.message.clone().unwrap_or_default();
                        }
                    }
                    if acted.taint_at.is_none() && has_taint(&n) {
                        acted.taint_at = Some(now);
                    }
                }
                if acted.pods.len() < pods.len() {
                    if let Ok(list) = pod_api.list(&ListParams::default()).await {
                        for p in list.items {
                            let name = p.metadata.name.clone().unwrap_or_default();
                            if !pods.contains(&name) || acted.pods.iter().any(|a| a.0 == name) {
                                continue;
                            }
                            if let Some(r) = p
                                .metadata
                                .annotations
                                .as_ref()
                                .and_then(|a| a.get(REASON_ANNOTATION))
                            {
                                acted.pods.push((name, r.clone(), now));
                            }
                        }
                    }
                }
                let complete = acted.condition_at.is_some()
                    && (acted.taint_at.is_some() || !want_taint)
                    && acted.pods.len() == pods.len();
                if complete {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        if let Some(t) = acted.condition_at {
            self.step_at(
                t,
                "k8s",
                format!(
                    "Node {node}: {KERNEL_PANIC}=True \"{}\"",
                    acted.condition_message
                ),
            );
        }
        if let Some(t) = acted.taint_at {
            self.step_at(
                t,
                "k8s",
                format!("Node {node}: taint {OUT_OF_SERVICE}=nodeshutdown:NoExecute"),
            );
        }
        for (p, r, t) in acted.pods.clone() {
            self.step_at(t, "k8s", format!("Pod {p}: {REASON_ANNOTATION}=\"{r}\""));
        }
        if !done {
            return Err(rig_err(format!(
                "the cluster was not fully acted on within {timeout:?}: condition {:?}, taint {:?}, {} of {} pods; incidents: {:?}",
                acted.condition_at.map(|t| t - self.t0),
                acted.taint_at.map(|t| t - self.t0),
                acted.pods.len(),
                self.pods.len(),
                self.incidents()
            )));
        }
        Ok(acted)
    }

    /// The Node as the API server has it now.
    pub fn node_now(&self) -> Result<Node, RigError> {
        let client = self.cluster().client.clone();
        let node = self.node.clone();
        self.rt()
            .block_on(async move { Api::<Node>::all(client).get(&node).await })
            .map_err(rig_err)
    }

    /// The Pods as the API server has them now.
    pub fn pods_now(&self) -> Result<Vec<Pod>, RigError> {
        let client = self.cluster().client.clone();
        let ns = self.cluster().namespace.clone();
        self.rt()
            .block_on(async move {
                Api::<Pod>::namespaced(client, &ns)
                    .list(&ListParams::default())
                    .await
            })
            .map(|l| l.items)
            .map_err(rig_err)
    }

    /// Events about the Node.
    pub fn node_events(&self) -> Vec<Event> {
        let node = self.node.clone();
        self.rt().block_on(self.cluster().node_events(&node))
    }

    /// Wait until the Node has neither a True `KernelPanic` condition nor
    /// the out-of-service taint; returns when that was seen.
    pub fn wait_recovered(&mut self, timeout: Duration) -> Result<Instant, RigError> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.node_now()?;
            if kernel_panic_condition(&n).is_none_or(|c| c.status != "True") && !has_taint(&n) {
                let at = Instant::now();
                self.step_at(
                    at,
                    "k8s",
                    format!("Node {}: {KERNEL_PANIC} cleared, taint removed", self.node),
                );
                return Ok(at);
            }
            if Instant::now() >= deadline {
                return Err(rig_err(format!(
                    "the Node did not recover within {timeout:?}: conditions {:?}, taints {:?}",
                    n.status.and_then(|s| s.conditions),
                    n.spec.and_then(|s| s.taints)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reboot the relay board (same storage, so its boot counter goes up
    /// and its next report opens a new incident).
    pub fn reboot_relay(&mut self) -> Result<(), RigError> {
        if let Some(mut r) = self.relay.take() {
            r.stop();
        }
        self.boot_relay()
    }

    /// Put `count` new pods named `<prefix>-<i>` on the Node; they replace
    /// the pods the rig watches.
    pub fn new_pods(&mut self, prefix: &str, count: usize) -> Result<(), RigError> {
        let node = self.node.clone();
        let pods = self
            .rt()
            .block_on(self.cluster().create_pods(&node, prefix, count));
        self.pods = pods.into_iter().filter_map(|p| p.metadata.name).collect();
        Ok(())
    }

    /// Play kubelet after a reboot the rig did not see: report `boot_id`,
    /// Ready.
    pub fn kubelet_reports(&mut self, boot_id: &str) {
        let node = self.node.clone();
        if let (Some(rt), Some(c)) = (self.rt.as_ref(), self.cluster.as_ref()) {
            rt.block_on(c.set_node_status(&node, HOST_IP, boot_id, true));
        }
    }

    /// One trial without the Linux host: the real kernel's serial capture
    /// into the relay's console UART, as fast as the UART takes it: the
    /// boot (`before`), then, once the relay has forwarded all of it (as it
    /// would have long before a real panic), the panic lines (`panic`) and
    /// the rest. Returns when the panic line had been written.
    pub fn replay_console(
        &mut self,
        before: &[u8],
        panic: &[u8],
        rest: &[u8],
    ) -> Result<Instant, RigError> {
        self.relay()?.write_console(before, None);
        if !self.wait_quiet(Duration::from_millis(700), Duration::from_secs(60)) {
            return Err(rig_err(
                "the relay kept sending for 60 s after the boot log",
            ));
        }
        let board = self.relay()?;
        board.write_console(panic, None);
        let at = Instant::now();
        board.write_console(rest, None);
        Ok(at)
    }

    /// UDP datagrams the bridge has received so far (its metrics).
    pub fn bridge_datagrams(&self) -> Option<u64> {
        let (_, body) = self.http_get("/metrics")?;
        body.lines()
            .find(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|n| n.ends_with("datagrams_total"))
            })
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
    }

    /// Wait until no datagram has reached the bridge for `quiet` (the relay
    /// has drained its console backlog); false after `timeout`.
    pub fn wait_quiet(&self, quiet: Duration, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut last = self.bridge_datagrams();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.bridge_datagrams();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return true;
            }
        }
        false
    }

    /// How many incidents the bridge holds with `reason`.
    pub fn incident_count(&self, reason: &str) -> usize {
        self.incidents()
            .iter()
            .filter(|e| e["incident"]["reason"] == reason)
            .count()
    }

    /// The timeline, sorted, as text (elapsed since the rig started and
    /// since the step before).
    pub fn timeline(&self) -> String {
        let mut steps = self.steps.clone();
        steps.sort_by_key(|s| s.at);
        let mut out = String::new();
        let mut prev: Option<Instant> = None;
        for s in &steps {
            let since_start = s.at.saturating_duration_since(self.t0);
            let delta = prev.map_or(Duration::ZERO, |p| s.at.saturating_duration_since(p));
            let _ = writeln!(
                out,
                "  {:>8.3}s  (+{:>7.3}s)  {:<6}  {}",
                since_start.as_secs_f64(),
                delta.as_secs_f64(),
                s.actor,
                s.what
            );
            prev = Some(s.at);
        }
        out
    }

    /// The state directory (journal, configs, VM logs).
    pub fn state_dir(&self) -> PathBuf {
        self.state.path().to_path_buf()
    }

    /// The namespace's name.
    pub fn netns_name(&self) -> &str {
        self.ns.name()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(mut h) = self.host.take() {
            h.power_off();
        }
        if let Some(mut r) = self.relay.take() {
            r.stop();
        }
        let cluster = self.cluster.take();
        if let Some(rt) = self.rt.take() {
            if let Some(c) = cluster {
                rt.block_on(c.cleanup());
            }
            rt.shutdown_timeout(Duration::from_secs(2));
        }
        self.home.restore();
        // `ns` is dropped after this: `ip netns del`.
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Who an incident came from: the relay (signed report) or an address.
fn sender_text(i: &Value) -> String {
    let hint = &i["hint"];
    let source = hint["source"].as_str().unwrap_or("?");
    match hint["relay_id"].as_str() {
        Some(relay) => format!("relay {relay}'s signed report via {source}"),
        None => format!("netconsole from {source}"),
    }
}

fn kernel_panic_condition(n: &Node) -> Option<&k8s_openapi::api::core::v1::NodeCondition> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == KERNEL_PANIC)
}

fn has_taint(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == OUT_OF_SERVICE))
}

/// Time-stamps the relay's signed reports as they reach the wire: a packet
/// socket on the relay's tap (in the rig's namespace), on its own thread.
struct Sniffer {
    stop: Arc<AtomicBool>,
    reports: Arc<Mutex<Vec<Instant>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sniffer {
    fn start(ifname: &str) -> std::io::Result<Self> {
        let name = std::ffi::CString::new(ifname).map_err(std::io::Error::other)?;
        // SAFETY: plain socket calls on values we own; the fd is wrapped at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh socket we own.
        let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: name is a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll outlives the call and its size is passed.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: tv outlives the call and its size is passed.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        let stop = Arc::new(AtomicBool::new(false));
        let reports = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, reports) = (Arc::clone(&stop), Arc::clone(&reports));
            std::thread::Builder::new()
                .name("relay-sniffer".into())
                .spawn(move || {
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        // SAFETY: buf is valid for its length.
                        let n = unsafe {
                            libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                        };
                        let Ok(n) = usize::try_from(n) else { continue };
                        let at = Instant::now();
                        if udp_payload(&buf[..n]).is_some_and(relay_core::report::is_report) {
                            reports.lock().unwrap_or_else(|p| p.into_inner()).push(at);
                        }
                    }
                })?
        };
        Ok(Self {
            stop,
            reports,
            thread: Some(thread),
        })
    }

    fn reports(&self) -> Vec<Instant> {
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The UDP payload of an Ethernet (optionally 802.1Q) / IPv4 / UDP frame.
fn udp_payload(f: &[u8]) -> Option<&[u8]> {
    let (ethertype, l3) = match f.get(12..14)? {
        [0x81, 0x00] => (f.get(16..18)?, 18),
        other => (other, 14),
    };
    if ethertype != [0x08, 0x00] || *f.get(l3 + 9)? != 17 {
        return None;
    }
    let ihl = usize::from(f.get(l3)? & 0x0f) * 4;
    f.get(l3 + ihl + 8..)
}
