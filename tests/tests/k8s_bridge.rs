//! The whole bridge against the Kubernetes target: the daemon (`serve::run`)
//! with `act.actuator = "kubernetes"`, fed over real UDP with the real
//! `ext-panic` capture and with signed (forged, replayed) relay reports.
//! Runs on the in-process API server by default, or `LASTGASP_K8S=real`.
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use lastgasp_tests::apiserver::cluster::{NodeSpec, TestCluster};
use relay_core::detect::{Certainty, Kind};
use relay_core::report::{encode_signed, Report, MAX_REPORT_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: [u8; 32] = [0x5a; 32];
const PANIC_LINE: &str = "Kernel panic - not syncing: sysrq triggered crash";
const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"))
}

/// A daemon running in this process; stops with the test's runtime.
struct Daemon {
    udp: SocketAddr,
    http: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Daemon {
    async fn start(tc: &TestCluster, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let kubeconfig = match tc.server() {
            Some(server) => {
                let p = dir.path().join("kubeconfig");
                std::fs::write(&p, server.kubeconfig_yaml()).unwrap_or_else(|e| panic!("{e}"));
                format!("kubeconfig = \"{}\"\n", p.display())
            }
            // A real cluster: the bridge infers it from KUBECONFIG like kubectl.
            None => String::new(),
        };
        let udp: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap_or_else(|e| panic!("{e}"));
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap_or_else(|e| panic!("{e}"));
        let text = format!(
            r#"[ingest]
listen = ["{udp}"]
[incident]
confirm_after_silence = "1s"
[journal]
path = "{dir}/journal.redb"
[act]
actuator = "kubernetes"
policy = "taint"
[trust]
netconsole_sources = ["127.0.0.1/32"]
[serve]
http = "{http}"
{extra}
[kube]
{kubeconfig}pod_selector = "{sel}"
"#,
            dir = dir.path().display(),
            sel = tc.pod_selector(),
        );
        let path = dir.path().join("bridge.toml");
        let (cfg, v) = host_bridge::serve::config::Config::parse(&text, &path, dir.path())
            .unwrap_or_else(|e| panic!("config: {e}\n{text}"));
        tokio::spawn(async move {
            if let Err(e) = host_bridge::serve::run(cfg, v).await {
                panic!("bridge stopped: {e:#}");
            }
        });
        let d = Self { udp, http, _dir: dir };
        d.wait_metric("lastgasp_bridge_datagrams_processed_total", "", |v| v >= 0.0).await;
        d
    }

    async fn metrics(&self) -> Option<String> {
        let mut s = tokio::net::TcpStream::connect(self.http).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await.ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        Some(body)
    }

    async fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        let body = self.metrics().await?;
        let want = if labels.is_empty() { name.to_owned() } else { format!("{name}{{{labels}}}") };
        body.lines()
            .find(|l| l.split_whitespace().next() == Some(want.as_str()))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
    }

    async fn wait_metric(&self, name: &str, labels: &str, ok: impl Fn(f64) -> bool) {
        for _ in 0..400 {
            if self.metric(name, labels).await.is_some_and(&ok) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("metric {name}{{{labels}}} never got there: {:?}", self.metric(name, labels).await);
    }

    fn send(&self, datagrams: &[Vec<u8>]) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        for d in datagrams {
            s.send_to(d, self.udp).unwrap_or_else(|e| panic!("{e}"));
            // Pace like a console: never overrun the receive buffer.
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Every datagram of the real capture, in order.
fn capture(name: &str) -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/netconsole").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}"));
            base64::engine::general_purpose::STANDARD
                .decode(v["b64"].as_str().unwrap_or(""))
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}

fn report(node: &str, boot: u32, seq: u32, key: &[u8; 32]) -> Vec<u8> {
    let r = Report {
        version: relay_core::report::VERSION,
        relay_id: "bmc-1",
        node_name: node,
        boot_counter: boot,
        sequence: seq,
        kind: Kind::KernelPanic,
        certainty: Certainty::Confirmed,
        trigger_line: PANIC_LINE,
        host_ts_usec: Some(6_582_893),
        context_lines: 0,
        repeat_index: 0,
    };
    let mut buf = [0u8; MAX_REPORT_LEN];
    let n = encode_signed(&r, key, &mut buf).unwrap_or_else(|e| panic!("{e:?}"));
    buf[..n].to_vec()
}

async fn node(tc: &TestCluster, name: &str) -> Node {
    Api::<Node>::all(tc.client.clone()).get(name).await.unwrap_or_else(|e| panic!("{e}"))
}

fn has_taint(n: &Node) -> bool {
    n.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|t| t.iter().any(|t| t.key == OUT_OF_SERVICE))
}

fn panic_condition(n: &Node) -> Option<String> {
    let c = n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "KernelPanic")?;
    Some(c.status.clone())
}

fn marked(p: &Pod) -> bool {
    let reason = p.metadata.annotations.as_ref().and_then(|a| a.get("lastgasp.dev/termination-reason"));
    let cond = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "DisruptionTarget" && c.status == "True"));
    reason.is_some_and(|r| r.contains(PANIC_LINE)) && cond
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext_panic_capture_from_an_allow_listed_node() {
    let tc = TestCluster::start().await;
    // The panicking host's InternalIP is where its netconsole comes from: loopback here.
    let n = tc
        .create_node(NodeSpec { suffix: "e2e", internal_ip: "127.0.0.1", boot_id: "b1", annotations: BTreeMap::new(), taints: vec![] })
        .await;
    let name = n.metadata.name.unwrap_or_default();
    tc.create_pods(&name, "e2e", 5).await;
    let d = Daemon::start(&tc, "").await;
    d.send(&capture("ext-panic.jsonl"));
    let pods: Api<Pod> = Api::namespaced(tc.client.clone(), &tc.namespace);
    eventually("every pod, the node condition, the Event and the taint", || async {
        let list = pods.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
        let n = node(&tc, &name).await;
        list.len() == 5
            && list.iter().all(marked)
            && panic_condition(&n).as_deref() == Some("True")
            && has_taint(&n)
            && tc.node_events(&name).await.iter().any(|e| e.message.as_deref().is_some_and(|m| m.contains(PANIC_LINE)))
    })
    .await;
    // The Kubernetes side is on /metrics too: every pod counted, API calls
    // made, and this single replica leads.
    d.wait_metric("lastgasp_bridge_kube_pods_marked_total", "", |v| v >= 5.0).await;
    d.wait_metric("lastgasp_bridge_kube_api_calls_total", "", |v| v > 0.0).await;
    assert_eq!(d.metric("lastgasp_bridge_kube_leader", "").await, Some(1.0));
    tc.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_reports_change_nothing() {
    let tc = TestCluster::start().await;
    let n = tc
        .create_node(NodeSpec { suffix: "rep", internal_ip: "192.0.2.61", boot_id: "b1", annotations: BTreeMap::new(), taints: vec![] })
        .await;
    let name = n.metadata.name.unwrap_or_default();
    tc.create_pods(&name, "rep", 2).await;
    let keyring = format!(
        "[[keyring]]\nrelay_id = \"bmc-1\"\nnode = \"{name}\"\nkey = \"{}\"\n",
        KEY.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let d = Daemon::start(&tc, &keyring).await;
    let writes = tc.server().map(|s| s.writes());

    // Forged: signed with another key.
    d.send(&[report(&name, 3, 1, &[0x11; 32])]);
    d.wait_metric("lastgasp_bridge_decode_errors_total", "reason=\"bad_tag\"", |v| v >= 1.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tc.server().map(|s| s.writes()), writes, "a forged report caused API writes");
    let n = node(&tc, &name).await;
    assert!(!has_taint(&n) && panic_condition(&n).is_none());
    assert!(tc.node_events(&name).await.is_empty());

    // Genuine: acted on.
    let genuine = report(&name, 3, 2, &KEY);
    d.send(std::slice::from_ref(&genuine));
    eventually("the genuine report's taint", || async { has_taint(&node(&tc, &name).await) }).await;
    // The host reboots; the bridge clears what it did.
    tc.set_node_status(&name, "192.0.2.61", "b2", true).await;
    eventually("recovery", || async {
        let n = node(&tc, &name).await;
        let notes_gone = n.metadata.annotations.as_ref().is_none_or(|a| !a.keys().any(|k| k.starts_with("lastgasp.dev/")));
        !has_taint(&n)
            && panic_condition(&n).as_deref() == Some("False")
            && notes_gone
            && tc.node_events(&name).await.iter().any(|e| e.reason.as_deref() == Some("NodeRecovered"))
    })
    .await;
    let events = tc.node_events(&name).await.len();
    let writes = tc.server().map(|s| s.writes());

    // Replayed: an older genuine report (captured earlier, sent late), then the same
    // genuine datagram again.
    d.send(&[report(&name, 3, 1, &KEY)]);
    d.wait_metric("lastgasp_bridge_decode_errors_total", "reason=\"replay\"", |v| v >= 1.0).await;
    d.send(&[genuine]);
    d.wait_metric("lastgasp_bridge_decode_errors_total", "reason=\"duplicate\"", |v| v >= 1.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tc.server().map(|s| s.writes()), writes, "a replayed report caused API writes");
    let n = node(&tc, &name).await;
    assert!(!has_taint(&n), "a replayed report tainted the node again");
    assert_eq!(panic_condition(&n).as_deref(), Some("False"));
    assert_eq!(tc.node_events(&name).await.len(), events);
    tc.cleanup().await;
}
