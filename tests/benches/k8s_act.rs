//! Benchmark: panic datagram → every pod annotated and conditioned, node tainted.
//!
//! The bridge daemon (`serve::run`, `act.actuator = "kubernetes"`) runs in this
//! process; the in-process API server runs in a child process (this binary,
//! re-executed), so this process's peak RSS is the bridge's. The child watches
//! its own store and reports when a node is fully handled.
//!
//! - latency: `LG_BENCH_RUNS` (50) panics, one at a time, each on a node with
//!   `LG_BENCH_PODS` (100) pods: p50/p90/p99/max;
//! - mass: `LG_BENCH_NODES` (1000) nodes × `LG_BENCH_PODS` pods panic within
//!   one second: time until all are handled, and the bridge's peak RSS.
//!
//! Run: `cargo bench -p lastgasp-tests --bench k8s_act`.
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lastgasp_tests::apiserver::store::{self, Change};
use lastgasp_tests::apiserver::ApiServer;
use relay_core::detect::{Certainty, Kind};
use relay_core::report::{encode_signed, Report, MAX_REPORT_LEN};
use serde_json::{json, Value};

const KEY: [u8; 32] = [0x42; 32];
const LINE: &str = "Kernel panic - not syncing: sysrq triggered crash";

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn node_name(i: usize) -> String {
    format!("n-{i}")
}

// ---- child: the API server, seeded, reporting completion per node ----

fn pod_done(p: &Value) -> bool {
    let annotated = p.pointer("/metadata/annotations/lastgasp.dev~1termination-reason").is_some();
    let cond = p
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c["type"] == "DisruptionTarget" && c["status"] == "True"));
    annotated && cond
}

fn node_done(n: &Value) -> bool {
    n.pointer("/spec/taints")
        .and_then(Value::as_array)
        .is_some_and(|t| t.iter().any(|t| t["key"] == "node.kubernetes.io/out-of-service"))
}

fn child(nodes: usize, pods: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async move {
        let server = ApiServer::start().await.unwrap_or_else(|e| panic!("{e}"));
        let st = server.store().clone();
        let (nres, pres) = match (store::resource("", "v1", "nodes"), store::resource("", "v1", "pods")) {
            (Some(n), Some(p)) => (n, p),
            _ => panic!("resources missing"),
        };
        let ns = store::resource("", "v1", "namespaces").unwrap_or_else(|| panic!("namespaces"));
        let _ = st.create(ns, None, json!({"metadata": {"name": "bench"}}), false);
        for i in 0..nodes {
            let name = node_name(i);
            let node = json!({"metadata": {"name": name}, "status": {
                "addresses": [{"type": "InternalIP", "address": format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255)}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "b1", "kernelVersion": "6.1", "osImage": "x",
                    "containerRuntimeVersion": "c", "kubeletVersion": "v1.34.0", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}}});
            st.create(nres, None, node, false).unwrap_or_else(|e| panic!("{e:?}"));
            for j in 0..pods {
                let pod = json!({"metadata": {"name": format!("{name}-p{j}"), "labels": {"app": "bench"}},
                    "spec": {"nodeName": name, "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}});
                st.create(pres, Some("bench"), pod, false).unwrap_or_else(|e| panic!("{e:?}"));
            }
        }
        let mut rx = st.subscribe();
        let yaml = server.kubeconfig_yaml().replace('\n', "\\n");
        println!("READY {yaml}");
        let _ = std::io::stdout().flush();
        let mut marked: HashMap<String, HashSet<String>> = HashMap::new();
        let mut tainted: HashSet<String> = HashSet::new();
        let mut reported: HashSet<String> = HashSet::new();
        let handle = |c: &Change, marked: &mut HashMap<String, HashSet<String>>, tainted: &mut HashSet<String>| {
            if c.res == pres && pod_done(&c.object) {
                let node = c.object.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("").to_owned();
                let pod = c.object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_owned();
                marked.entry(node).or_default().insert(pod);
            } else if c.res == nres && node_done(&c.object) {
                tainted.insert(c.object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_owned());
            }
        };
        loop {
            match rx.recv().await {
                Ok(c) => handle(&c, &mut marked, &mut tainted),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind: rebuild from the store.
                    for p in st.list(pres, None, &pod_done).0 {
                        let node = p.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("").to_owned();
                        let pod = p.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_owned();
                        marked.entry(node).or_default().insert(pod);
                    }
                    for n in st.list(nres, None, &node_done).0 {
                        tainted.insert(n.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_owned());
                    }
                }
                Err(_) => return,
            }
            let done: Vec<String> = tainted
                .iter()
                .filter(|n| !reported.contains(*n) && marked.get(*n).is_some_and(|m| m.len() >= pods))
                .cloned()
                .collect();
            for n in done {
                println!("DONE {n}");
                reported.insert(n);
            }
            if reported.len() == nodes {
                println!("ALLDONE");
            }
            let _ = std::io::stdout().flush();
        }
    });
}

// ---- parent: the bridge ----

struct Child {
    proc: std::process::Child,
    lines: mpsc::Receiver<String>,
    kubeconfig: String,
}

fn spawn_child(nodes: usize, pods: usize) -> Child {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let mut proc = Command::new(exe)
        .env("LG_BENCH_CHILD", format!("{nodes},{pods}"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let out = proc.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let ready = lines.recv_timeout(Duration::from_secs(600)).unwrap_or_else(|e| panic!("apiserver child: {e}"));
    let kubeconfig = ready.strip_prefix("READY ").unwrap_or_else(|| panic!("unexpected {ready}")).replace("\\n", "\n");
    Child { proc, lines, kubeconfig }
}

fn start_bridge(rt: &tokio::runtime::Runtime, dir: &std::path::Path, kubeconfig: &str, nodes: usize) -> u16 {
    std::fs::write(dir.join("kubeconfig"), kubeconfig).unwrap_or_else(|e| panic!("{e}"));
    let port = UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"));
    let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    let mut text = format!(
        "[ingest]\nlisten = [\"127.0.0.1:{port}\"]\n[journal]\npath = \"{d}/journal.redb\"\n[act]\nactuator = \"kubernetes\"\n\
         [serve]\nhttp = \"\"\n[kube]\nkubeconfig = \"{d}/kubeconfig\"\nqps = 1000000.0\nburst = 1000000\n",
        d = dir.display()
    );
    for i in 0..nodes {
        text.push_str(&format!("[[keyring]]\nrelay_id = \"r-{i}\"\nnode = \"{}\"\nkey = \"{hex}\"\n", node_name(i)));
    }
    let path = dir.join("bridge.toml");
    let (cfg, v) = host_bridge::serve::config::Config::parse(&text, &path, dir).unwrap_or_else(|e| panic!("{e}"));
    rt.spawn(async move {
        if let Err(e) = host_bridge::serve::run(cfg, v).await {
            eprintln!("bridge stopped: {e:#}");
        }
    });
    port
}

fn report(i: usize) -> Vec<u8> {
    let relay = format!("r-{i}");
    let node = node_name(i);
    let r = Report {
        version: relay_core::report::VERSION,
        relay_id: &relay,
        node_name: &node,
        boot_counter: 1,
        sequence: 1,
        kind: Kind::KernelPanic,
        certainty: Certainty::Confirmed,
        trigger_line: LINE,
        host_ts_usec: None,
        context_lines: 0,
        repeat_index: 0,
    };
    let mut buf = [0u8; MAX_REPORT_LEN];
    let n = encode_signed(&r, &KEY, &mut buf).unwrap_or_else(|e| panic!("{e:?}"));
    buf[..n].to_vec()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// The bridge's reflectors list every node and pod at start; a panic arriving
/// before that is handled too, but later (retry backoff), which is not what we time.
fn wait_bridge_ready(objects: usize) {
    std::thread::sleep(Duration::from_secs(2) + Duration::from_millis((objects / 20) as u64));
}

fn main() {
    if let Ok(spec) = std::env::var("LG_BENCH_CHILD") {
        let mut it = spec.split(',').map(|x| x.parse::<usize>().unwrap_or(0));
        child(it.next().unwrap_or(1), it.next().unwrap_or(1));
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` runs with no such flag: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("k8s_act: run with `cargo bench -p lastgasp-tests --bench k8s_act`");
        return;
    }
    let runs = env_num("LG_BENCH_RUNS", 50);
    let pods = env_num("LG_BENCH_PODS", 100);
    let nodes = env_num("LG_BENCH_NODES", 1000);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));

    // Latency: one panic at a time.
    {
        let mut c = spawn_child(runs, pods);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
        let port = start_bridge(&rt, dir.path(), &c.kubeconfig, runs);
        wait_bridge_ready(runs * (pods + 1));
        let mut lat = Vec::with_capacity(runs);
        for i in 0..runs {
            let t0 = Instant::now();
            sock.send_to(&report(i), ("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
            let want = format!("DONE {}", node_name(i));
            loop {
                let l = c.lines.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|e| panic!("node {i}: {e}"));
                if l == want {
                    break;
                }
            }
            lat.push(t0.elapsed());
        }
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
        println!(
            "latency panic datagram -> {pods} pods marked + node tainted ({runs} runs): p50 {:?} p90 {:?} p99 {:?} max {:?}",
            pct(0.50),
            pct(0.90),
            pct(0.99),
            lat[lat.len() - 1]
        );
        drop(rt);
        let _ = c.proc.kill();
        let _ = c.proc.wait();
    }

    // Mass panic: every node within one second.
    {
        let mut c = spawn_child(nodes, pods);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
        let port = start_bridge(&rt, dir.path(), &c.kubeconfig, nodes);
        wait_bridge_ready(nodes * (pods + 1));
        let rss_before = peak_rss_kib();
        let gap = Duration::from_secs(1).checked_div(u32::try_from(nodes).unwrap_or(1)).unwrap_or_default();
        let t0 = Instant::now();
        for i in 0..nodes {
            sock.send_to(&report(i), ("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
            std::thread::sleep(gap);
        }
        let sent = t0.elapsed();
        loop {
            let l = c.lines.recv_timeout(Duration::from_secs(600)).unwrap_or_else(|e| panic!("mass panic: {e}"));
            if l == "ALLDONE" {
                break;
            }
        }
        let drained = t0.elapsed();
        println!(
            "mass panic {nodes} nodes x {pods} pods: sent in {sent:?}, all handled after {drained:?}; bridge peak RSS {} MiB (before the burst {} MiB)",
            peak_rss_kib() / 1024,
            rss_before / 1024
        );
        drop(rt);
        let _ = c.proc.kill();
        let _ = c.proc.wait();
    }
}
