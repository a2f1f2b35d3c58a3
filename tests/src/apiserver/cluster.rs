//! The target of the Kubernetes suite: the in-process server (default) or a
//! real cluster from `KUBECONFIG` when `LASTGASP_K8S=real`.
//!
//! On a real cluster every test gets its own namespace and its own fake Nodes
//! (names prefixed `lg-<run>-`), labels its pods with the run id, and removes
//! all of it afterwards.
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use super::proxy::{Proxy, Upstream};
use super::ApiServer;

/// Label carried by every pod the suite creates.
pub const RUN_LABEL: &str = "lastgasp.dev/test-run";

/// One test's cluster, namespace and cleanup list.
pub struct TestCluster {
    /// A client for seeding and asserting (never the bridge's own).
    pub client: Client,
    /// The configuration the bridge under test should use.
    pub config: kube::Config,
    /// This test's namespace.
    pub namespace: String,
    /// Unique id of this test run (lowercase hex).
    pub run_id: String,
    server: Option<ApiServer>,
    nodes: std::sync::Mutex<Vec<String>>,
}

fn run_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mix = nanos ^ std::process::id().rotate_left(16) ^ N.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9);
    format!("{:06x}", mix & 0xff_ffff)
}

/// A spec'd fake node.
pub struct NodeSpec<'a> {
    /// Suffix; the node is named `lg-<run>-<suffix>`.
    pub suffix: &'a str,
    /// Its InternalIP.
    pub internal_ip: &'a str,
    /// `status.nodeInfo.bootID`.
    pub boot_id: &'a str,
    /// Extra annotations.
    pub annotations: BTreeMap<String, String>,
    /// Extra taints, beyond what admission adds.
    pub taints: Vec<serde_json::Value>,
}

impl TestCluster {
    /// Whether the suite targets a real cluster (`LASTGASP_K8S=real`).
    pub fn real_requested() -> bool {
        std::env::var("LASTGASP_K8S").is_ok_and(|v| v == "real")
    }

    /// Starts (or connects to) the target and creates this test's namespace.
    pub async fn start() -> Self {
        if Self::real_requested() {
            let config = kube::Config::infer().await.unwrap_or_else(|e| panic!("LASTGASP_K8S=real but no usable KUBECONFIG: {e}"));
            Self::on(config).await
        } else {
            Self::in_process().await
        }
    }

    /// Starts the in-process API server and creates this test's namespace.
    pub async fn in_process() -> Self {
        let server = ApiServer::start().await.unwrap_or_else(|e| panic!("cannot start the in-process apiserver: {e}"));
        let config = server.config();
        Self::with(Some(server), config).await
    }

    /// Uses the cluster `config` points at (a real one: everything the test
    /// creates there is removed by [`cleanup`](Self::cleanup)).
    pub async fn on(config: kube::Config) -> Self {
        Self::with(None, config).await
    }

    async fn with(server: Option<ApiServer>, config: kube::Config) -> Self {
        let run_id = run_id();
        // The test's own client is marked, so the audit shows only the bridge's requests.
        let seed_config = server.as_ref().map_or_else(|| config.clone(), ApiServer::seed_config);
        let client = Client::try_from(seed_config).unwrap_or_else(|e| panic!("kube client: {e}"));
        let namespace = format!("lg-test-{run_id}");
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace, "labels": {RUN_LABEL: run_id}}}))
            .unwrap_or_else(|e| panic!("{e}"));
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {namespace}: {e}"));
        Self { client, config, namespace, run_id, server, nodes: std::sync::Mutex::new(Vec::new()) }
    }

    /// The in-process server, when that is the target.
    pub fn server(&self) -> Option<&ApiServer> {
        self.server.as_ref()
    }

    /// The label selector matching this run's pods.
    pub fn pod_selector(&self) -> String {
        format!("{RUN_LABEL}={}", self.run_id)
    }

    /// Full name of a node of this run.
    pub fn node_name(&self, suffix: &str) -> String {
        format!("lg-{}-{suffix}", self.run_id)
    }

    /// Creates a fake Node that looks Ready, then writes its status through
    /// `/status` (a real apiserver may drop status on create).
    pub async fn create_node(&self, spec: NodeSpec<'_>) -> Node {
        let name = self.node_name(spec.suffix);
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {RUN_LABEL: self.run_id}, "annotations": spec.annotations},
            "spec": {"taints": spec.taints},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        nodes.create(&PostParams::default(), &node).await.unwrap_or_else(|e| panic!("create node {name}: {e}"));
        if let Ok(mut list) = self.nodes.lock() {
            list.push(name.clone());
        }
        self.set_node_status(&name, spec.internal_ip, spec.boot_id, true).await
    }

    /// Writes Ready, the address and the boot id of a node through `/status`.
    pub async fn set_node_status(&self, name: &str, ip: &str, boot_id: &str, ready: bool) -> Node {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let now = super::store::now_string();
        let status = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "reason": "KubeletReady",
                "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": boot_id, "kernelVersion": "6.1.0",
                "osImage": "Debian GNU/Linux 12", "containerRuntimeVersion": "containerd://1.7.0",
                "kubeletVersion": "v1.34.0", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
        }});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(status))
            .await
            .unwrap_or_else(|e| panic!("status of node {name}: {e}"))
    }

    /// Creates `count` pods bound to `node` in this test's namespace.
    pub async fn create_pods(&self, node: &str, prefix: &str, count: usize) -> Vec<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("{prefix}-{i}"), "labels": {RUN_LABEL: self.run_id}},
                "spec": {"nodeName": node, "automountServiceAccountToken": false,
                    "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
                    "tolerations": [{"operator": "Exists"}]},
            }))
            .unwrap_or_else(|e| panic!("{e}"));
            // A fresh namespace on a real cluster may not have its service account yet.
            let mut tries = 0;
            loop {
                match pods.create(&PostParams::default(), &pod).await {
                    Ok(p) => {
                        out.push(p);
                        break;
                    }
                    Err(e) if tries < 50 => {
                        tries += 1;
                        tracing::debug!("create pod: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("create pod {prefix}-{i}: {e}"),
                }
            }
        }
        out
    }

    /// Events whose involved object is `node`.
    pub async fn node_events(&self, node: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let lp = ListParams::default().fields(&format!("involvedObject.name={node}"));
        events.list(&lp).await.map(|l| l.items).unwrap_or_default()
    }

    /// A proxy in front of the target, and a bridge configuration that goes through it.
    pub async fn proxied(&self) -> (Proxy, kube::Config) {
        let upstream = Upstream::of(&self.config.cluster_url.to_string()).unwrap_or_else(|e| panic!("{e}"));
        let proxy = Proxy::start(upstream.addr).await.unwrap_or_else(|e| panic!("proxy: {e}"));
        let mut config = self.config.clone();
        config.cluster_url = upstream.via(proxy.addr()).parse().unwrap_or_else(|e| panic!("{e}"));
        if upstream.https && config.tls_server_name.is_none() {
            config.tls_server_name = Some(upstream.host);
        }
        (proxy, config)
    }

    /// Removes everything this test created (pods at grace 0, nodes, events, namespace).
    pub async fn cleanup(self) {
        if self.server.is_some() {
            return;
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let lp = ListParams::default().labels(&self.pod_selector());
        if let Ok(list) = pods.list(&lp).await {
            for p in list.items {
                let name = p.metadata.name.unwrap_or_default();
                let _ = pods.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
            }
        }
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let names: Vec<String> = self.nodes.lock().map(|n| n.clone()).unwrap_or_default();
        for node in &names {
            let lp = ListParams::default().fields(&format!("involvedObject.name={node}"));
            if let Ok(list) = events.list(&lp).await {
                for e in list.items {
                    let _ = events.delete(&e.metadata.name.unwrap_or_default(), &DeleteParams::default()).await;
                }
            }
            let _ = Api::<Node>::all(self.client.clone()).delete(node, &DeleteParams::default()).await;
        }
        let _ = Api::<Namespace>::all(self.client.clone()).delete(&self.namespace, &DeleteParams::default()).await;
    }
}
