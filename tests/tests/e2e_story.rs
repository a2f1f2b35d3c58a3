//! End to end with a real Linux kernel: the relay path, the direct
//! netconsole path, a hang without panic, recovery after a reboot, loss on
//! the relay's link, and the latency from the panic line leaving the host's
//! UART to the last Pod annotated. Each test builds a [`Rig`] (its own
//! network namespace, API server, bridge, VMs) and tears it down.
//!
//! Needs root, qemu-system-{arm,x86_64}, Debian's firmware toolchain and
//! nftables; skips (saying why) without them unless LASTGASP_REQUIRE_QEMU=1.
use std::path::Path;
use std::time::{Duration, Instant};

use lastgasp_tests::linux_host::{self, Mode, SYSRQ_PANIC_LINE};
use lastgasp_tests::qemu;
use lastgasp_tests::apiserver::store::resource;
use lastgasp_tests::apiserver::ApiServer;
use lastgasp_tests::scenario::{ClusterTarget, Options, Rig, OUT_OF_SERVICE, REASON_ANNOTATION};

const BOOT: Duration = Duration::from_secs(300);
const ACT: Duration = Duration::from_secs(60);

fn available(test: &str) -> bool {
    linux_host::available(test) && qemu::available(test)
}

fn progress(m: &str) {
    eprintln!("e2e: {m}");
}

fn start(opts: Options) -> Rig {
    Rig::start(opts, &mut progress).unwrap_or_else(|e| panic!("rig: {e}"))
}

fn ok<T>(r: Result<T, lastgasp_tests::scenario::RigError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied().unwrap_or_default()
}

/// The relay path, then recovery: the host panics, the relay's report makes
/// the bridge mark every pod with the kernel's words and taint the Node;
/// the host is power-cycled, comes back with a new boot id, and the bridge
/// clears the condition and the taint.
#[test]
fn relay_path_then_recovery_on_reboot() {
    if !available("relay_path_then_recovery_on_reboot") {
        return;
    }
    let mut rig = start(Options::default());
    let first_boot = ok(rig.kubelet_reports_boot(BOOT));
    let panic_at = ok(rig.wait_panic(BOOT));
    let incident = ok(rig.wait_incident("KernelPanic", ACT));
    let acted = ok(rig.wait_acted(true, ACT));
    let (report_at, copies) = rig
        .relay_reports_sent(panic_at)
        .unwrap_or_else(|| panic!("no report in the relay's pcap"));
    rig.step_at(
        report_at,
        "relay",
        format!("first signed report leaves the NIC ({copies} copies in all)"),
    );

    assert!(
        copies >= 2,
        "the relay sent {copies} report copies; repeats are the design"
    );
    assert_eq!(
        incident["incident"]["trigger_line"], SYSRQ_PANIC_LINE,
        "{incident:#}"
    );
    assert_eq!(
        incident["incident"]["trusted"], true,
        "a verified report is trusted: {incident:#}"
    );
    let origin = incident["incident"]["origin"].to_string();
    assert!(
        origin.to_lowercase().contains("report")
            || origin.contains(lastgasp_tests::scenario::RELAY_ID),
        "origin {origin}"
    );
    for pod in ok(rig.pods_now()) {
        let reason = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REASON_ANNOTATION))
            .cloned()
            .unwrap_or_default();
        assert!(
            reason.contains(SYSRQ_PANIC_LINE),
            "pod {:?} reason {reason:?}",
            pod.metadata.name
        );
        let disrupted = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "DisruptionTarget" && c.status == "True")
            });
        assert!(
            disrupted,
            "pod {:?} has no DisruptionTarget condition",
            pod.metadata.name
        );
    }
    let node = ok(rig.node_now());
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t.key == OUT_OF_SERVICE && t.effect == "NoExecute"),
        "taints: {taints:?}"
    );
    let latency = acted
        .last_pod_at()
        .map(|t| t - panic_at)
        .unwrap_or_default();
    eprintln!("LATENCY real-host panic line -> last pod annotated: {latency:?}");

    // Recovery: the BMC power-cycles the host; kubelet reports the new boot.
    ok(rig.boot_host(Mode::Idle));
    let second_boot = ok(rig.kubelet_reports_boot(BOOT));
    assert_ne!(
        first_boot, second_boot,
        "a new boot must have a new boot id"
    );
    ok(rig.wait_recovered(ACT));
    eprintln!("timeline:\n{}", rig.timeline());
}

/// The direct netconsole path (Netflix mode, no relay): the host's own
/// netconsole.ko in extended format, aimed at the bridge, which maps the
/// allow-listed source address to the Node and acts.
#[test]
fn direct_netconsole_path() {
    if !available("direct_netconsole_path") {
        return;
    }
    let mut rig = start(Options {
        relay: false,
        host_netconsole: true,
        ..Options::default()
    });
    ok(rig.kubelet_reports_boot(BOOT));
    let panic_at = ok(rig.wait_panic(BOOT));
    let incident = ok(rig.wait_incident("KernelPanic", ACT));
    let acted = ok(rig.wait_acted(true, ACT));
    assert_eq!(
        incident["incident"]["trigger_line"], SYSRQ_PANIC_LINE,
        "{incident:#}"
    );
    assert_eq!(
        incident["incident"]["trusted"], true,
        "the host's address is allow-listed: {incident:#}"
    );
    assert!(
        incident["incident"]["hint"]["source"]
            .as_str()
            .is_some_and(|s| s.starts_with(&format!("{}:", lastgasp_tests::scenario::HOST_IP))),
        "the incident should come from the host's own address: {incident:#}"
    );
    for (pod, reason, _) in &acted.pods {
        assert!(reason.contains(SYSRQ_PANIC_LINE), "pod {pod}: {reason:?}");
    }
    let latency = acted
        .last_pod_at()
        .map(|t| t - panic_at)
        .unwrap_or_default();
    eprintln!("LATENCY direct netconsole panic line -> last pod annotated: {latency:?}");
    eprintln!("timeline:\n{}", rig.timeline());
}

/// A hang without a panic: the host VM is frozen (QEMU monitor `stop`) and
/// the board raises its host-watchdog signal. The bridge records a host-hang
/// incident and an Event, and does nothing destructive under the default
/// policy.
#[test]
fn hang_without_panic_is_an_event_only() {
    if !available("hang_without_panic_is_an_event_only") {
        return;
    }
    let mut rig = start(Options {
        host_mode: Mode::Idle,
        ..Options::default()
    });
    ok(rig.kubelet_reports_boot(BOOT));
    {
        let host = ok(rig.host());
        assert!(
            host.serial()
                .wait_for("lastgasp-host: heartbeat 1/", BOOT)
                .is_some(),
            "no heartbeat"
        );
        host.freeze().unwrap_or_else(|e| panic!("{e}"));
    }
    let frozen_len = ok(rig.host()).serial().len();
    rig.step("host", "VM frozen (QEMU monitor: stop)");
    ok(rig.relay()).signal(b'W');
    rig.step("relay", "board raises the host watchdog signal");
    let incident = ok(rig.wait_incident("HostWatchdogExpired", ACT));
    assert_eq!(incident["incident"]["trusted"], true, "{incident:#}");
    // Give any (wrong) destructive step time to happen before looking.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    while Instant::now() < deadline {
        events = rig.node_events();
        if events
            .iter()
            .any(|e| e.reason.as_deref() == Some("HostWatchdogExpired"))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("HostWatchdogExpired")),
        "no HostWatchdogExpired Event on the Node: {events:?}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let host = ok(rig.host());
    let status = host
        .monitor("info status")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.contains("paused"), "info status: {status}");
    assert_eq!(
        host.serial().len(),
        frozen_len,
        "a frozen host kept writing to its UART"
    );
    let node = ok(rig.node_now());
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    assert!(
        !taints.iter().any(|t| t.key == OUT_OF_SERVICE),
        "a hang must not taint: {taints:?}"
    );
    for pod in ok(rig.pods_now()) {
        assert!(
            pod.metadata.deletion_timestamp.is_none(),
            "pod {:?} deleted",
            pod.metadata.name
        );
        let reason = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REASON_ANNOTATION))
            .cloned();
        assert!(
            reason.is_none(),
            "pod {:?} marked on a hang: {reason:?}",
            pod.metadata.name
        );
    }
    eprintln!("timeline:\n{}", rig.timeline());
}

/// The real kernel's serial capture, split before the line that precedes
/// the panic line (`sysrq: Trigger a crash`) and after the panic line.
fn panic_capture() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/netconsole/ext-panic.serial.log");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let needle = SYSRQ_PANIC_LINE.as_bytes();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("no panic line in {}", path.display()));
    let end = bytes[at..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |p| at + p + 1);
    let prev_line = bytes[..at].iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let start = bytes[..prev_line]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    (
        bytes[..start].to_vec(),
        bytes[start..end].to_vec(),
        bytes[end..].to_vec(),
    )
}

/// Repeated trials of the relay path with the real kernel's serial capture
/// replayed into the relay's console UART (a Linux boot per trial would not
/// fit CI's budget): each trial reboots the relay, puts new pods on the
/// Node, measures the time from the panic line entering the UART to the
/// last pod annotated, then recovers the Node (new boot id).
fn trials(loss_percent: Option<u32>, n: usize) -> (usize, Vec<Duration>, Rig) {
    let (before, panic, rest) = panic_capture();
    let mut rig = start(Options {
        host: false,
        loss_percent,
        pods: 3,
        ..Options::default()
    });
    let mut delivered = 0;
    let mut latencies = Vec::new();
    for i in 0..n {
        if i > 0 {
            ok(rig.reboot_relay());
        }
        ok(rig.new_pods(&format!("t{i}"), 3));
        let count0 = rig.incident_count("KernelPanic");
        let at = ok(rig.replay_console(&before, &panic, &rest));
        match rig.wait_acted(true, Duration::from_secs(15)) {
            Ok(acted) => {
                delivered += 1;
                if let Some(last) = acted.last_pod_at() {
                    latencies.push(last - at);
                }
            }
            Err(e) => eprintln!("trial {i}: not acted on: {e}"),
        }
        let after = rig.incident_count("KernelPanic");
        eprintln!("trial {i}: incidents {count0} -> {after}");
        if let Some((sent, copies)) = rig.relay_reports_sent(at) {
            eprintln!("trial {i}: first report left the relay {:?} after the panic line ({copies} copies)", sent.saturating_duration_since(at));
        }
        rig.kubelet_reports(&format!("trial-{i}-boot"));
        ok(rig.wait_recovered(ACT));
    }
    eprintln!("timeline:\n{}", rig.timeline());
    latencies.sort();
    (delivered, latencies, rig)
}

/// Latency from the panic line entering the relay's UART to the last Pod
/// annotated, over repeated trials (p50/p99 for the README).
#[test]
fn latency_panic_line_to_last_pod() {
    if !qemu::available("latency_panic_line_to_last_pod") {
        return;
    }
    let n = std::env::var("LASTGASP_E2E_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let (delivered, lat, _rig) = trials(None, n);
    assert_eq!(delivered, n, "every trial on a clean link must be acted on");
    eprintln!(
        "LATENCY relay path over {n} trials: p50 {:?} p99 {:?} max {:?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last()
    );
}

/// 30% random loss of the relay's datagrams: the incident is still acted on
/// (the report goes out several times); the delivery rate is reported.
#[test]
fn loss_30_percent_still_acted_on() {
    if !qemu::available("loss_30_percent_still_acted_on") {
        return;
    }
    let n = std::env::var("LASTGASP_E2E_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let (delivered, lat, rig) = trials(Some(30), n);
    let dropped = rig.loss_dropped().unwrap_or(0);
    let received = rig.bridge_datagrams().unwrap_or(0);
    let measured_loss = 100.0 * dropped as f64 / (dropped + received).max(1) as f64;
    eprintln!(
        "DELIVERY with 30% loss: {delivered}/{n} incidents acted on ({:.2}%); datagrams: {dropped} dropped, {received} received ({measured_loss:.1}% measured loss); p50 {:?} p99 {:?}",
        100.0 * delivered as f64 / n as f64,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    assert!(
        dropped > 0,
        "the loss rule dropped nothing: the test would prove nothing"
    );
    assert_eq!(delivered, n, "an incident was lost despite the repeats");
}

/// The real-cluster path (`KUBECONFIG`), proven without one: an API server
/// outside the rig's namespace, as a kind cluster on this machine's loopback
/// would be, given to the rig only as a kubeconfig file. The namespace
/// cannot reach it; the rig's gateway and rewritten kubeconfig must carry
/// the bridge's calls out, and the server outside must end up holding the
/// kernel's words.
#[test]
fn cluster_from_a_kubeconfig_outside_the_namespace() {
    if !qemu::available("cluster_from_a_kubeconfig_outside_the_namespace") {
        return;
    }
    // Built on this thread before the rig enters its namespace: the server
    // listens, and its workers run, outside.
    let outside = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio: {e}"));
    let server = outside
        .block_on(ApiServer::start())
        .unwrap_or_else(|e| panic!("apiserver: {e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig_yaml()).unwrap_or_else(|e| panic!("{e}"));

    let (before, panic, rest) = panic_capture();
    let mut rig = start(Options {
        host: false,
        pods: 2,
        cluster: ClusterTarget::Kubeconfig(Some(kubeconfig)),
        ..Options::default()
    });
    // This thread is inside the rig's namespace now.
    assert!(
        std::net::TcpStream::connect(server.addr()).is_err(),
        "the rig's namespace reaches {} directly: the test would not prove the gateway",
        server.addr()
    );
    ok(rig.replay_console(&before, &panic, &rest));
    let acted = ok(rig.wait_acted(true, ACT));
    assert_eq!(acted.pods.len(), 2, "{:?}", acted.pods);
    for (pod, reason, _) in &acted.pods {
        assert!(reason.contains(SYSRQ_PANIC_LINE), "pod {pod}: {reason}");
    }
    let node_name = rig.node.clone();

    let nodes = resource("", "v1", "nodes").unwrap_or_else(|| panic!("no nodes resource"));
    let node = server
        .store()
        .get(nodes, None, &rig.node)
        .unwrap_or_else(|e| panic!("node {} not on the server outside: {e:?}", rig.node));
    let conditions = node["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let panic_condition = conditions
        .iter()
        .find(|c| c["type"] == "KernelPanic")
        .unwrap_or_else(|| panic!("no KernelPanic condition on the server outside: {node:#}"));
    assert_eq!(panic_condition["status"], "True", "{panic_condition:#}");
    assert!(
        panic_condition["message"].as_str().is_some_and(|m| m.contains(SYSRQ_PANIC_LINE)),
        "{panic_condition:#}"
    );
    let taints = node["spec"]["taints"].as_array().cloned().unwrap_or_default();
    assert!(
        taints.iter().any(|t| t["key"] == OUT_OF_SERVICE),
        "no out-of-service taint on the server outside: {taints:?}"
    );
    drop(rig);
    // The rig removes what it made on a real cluster: its Node and namespace.
    assert!(
        server.store().get(nodes, None, &node_name).is_err(),
        "the rig left its Node on the cluster"
    );
}
