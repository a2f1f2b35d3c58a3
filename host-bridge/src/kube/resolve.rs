//! Resolve: which Node sent this? Answered from a watch-backed cache (a
//! kube-runtime reflector on Nodes, and one on Pods indexed by `spec.nodeName`).
//! An unknown or ambiguous sender is recorded and counted, never guessed.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ::kube::api::Api;
use ::kube::runtime::reflector::{self, Store};
use ::kube::runtime::{watcher, WatchStreamExt};
use ::kube::Client;
use tokio::sync::broadcast;

use super::KubeStats;
use crate::incident::NodeHint;

/// How many distinct unknown senders are remembered (oldest forgotten first).
const UNKNOWN_CAP: usize = 1024;

/// One sender that resolved to no Node (or to several).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownSender {
    /// The hint as received.
    pub hint: String,
    /// Why it did not resolve.
    pub why: &'static str,
    /// How often it was seen.
    pub count: u64,
    /// When it was last seen.
    pub last_seen: SystemTime,
}

/// Why a hint did not resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    /// No Node matches.
    #[error("no node matches")]
    Unknown,
    /// Several Nodes match the same address: refusing to guess.
    #[error("several nodes match; refusing to guess")]
    Ambiguous,
}

type PodKey = (String, String);

#[derive(Default)]
struct PodIndex {
    by_node: HashMap<String, HashSet<PodKey>>,
    node_of: HashMap<PodKey, String>,
    pods: HashMap<PodKey, Arc<Pod>>,
    /// Filled during a re-list, swapped in at InitDone.
    pending: Option<HashMap<PodKey, Arc<Pod>>>,
}

impl PodIndex {
    fn key(p: &Pod) -> PodKey {
        (p.metadata.namespace.clone().unwrap_or_default(), p.metadata.name.clone().unwrap_or_default())
    }
    fn remove(&mut self, key: &PodKey) {
        self.pods.remove(key);
        if let Some(node) = self.node_of.remove(key) {
            if let Some(set) = self.by_node.get_mut(&node) {
                set.remove(key);
                if set.is_empty() {
                    self.by_node.remove(&node);
                }
            }
        }
    }
    fn insert(&mut self, pod: Arc<Pod>) {
        let key = Self::key(&pod);
        self.remove(&key);
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()) {
            self.by_node.entry(node.clone()).or_default().insert(key.clone());
            self.node_of.insert(key.clone(), node);
        }
        self.pods.insert(key, pod);
    }
    fn apply(&mut self, ev: watcher::Event<Pod>) {
        match ev {
            watcher::Event::Apply(p) => self.insert(Arc::new(p)),
            watcher::Event::Delete(p) => self.remove(&Self::key(&p)),
            watcher::Event::Init => self.pending = Some(HashMap::new()),
            watcher::Event::InitApply(p) => {
                if let Some(pending) = self.pending.as_mut() {
                    pending.insert(Self::key(&p), Arc::new(p));
                }
            }
            watcher::Event::InitDone => {
                if let Some(pending) = self.pending.take() {
                    *self = PodIndex::default();
                    for (_, p) in pending {
                        self.insert(p);
                    }
                }
            }
        }
    }
}

/// What the bridge needs of a Pod, and nothing more: name, namespace and uid;
/// our own annotations (already marked?); the node it is bound to; its phase
/// and any `DisruptionTarget` condition. A cluster's Pods are most of the
/// bridge's memory, and a whole Pod (managed fields, spec, status) is several
/// KiB: 100k of them took ~770 MiB.
fn slim(pod: Pod, annotation_key_prefix: &str) -> Pod {
    let m = pod.metadata;
    let annotations = m
        .annotations
        .map(|a| a.into_iter().filter(|(k, _)| k.starts_with(annotation_key_prefix)).collect::<BTreeMap<_, _>>())
        .filter(|a| !a.is_empty());
    Pod {
        metadata: ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            resource_version: m.resource_version,
            annotations,
            ..ObjectMeta::default()
        },
        spec: pod.spec.map(|s| PodSpec { node_name: s.node_name, ..PodSpec::default() }),
        status: pod.status.map(|s| PodStatus {
            phase: s.phase,
            conditions: s.conditions.map(|c| c.into_iter().filter(|c| c.type_ == "DisruptionTarget").collect()),
            ..PodStatus::default()
        }),
    }
}

/// The watch-backed view of Nodes and Pods, plus the resolver over it.
#[derive(Clone)]
pub struct Cache {
    nodes: Store<Node>,
    pods: Arc<RwLock<PodIndex>>,
    pods_ready: Arc<tokio::sync::watch::Sender<bool>>,
    node_changes: broadcast::Sender<Arc<Node>>,
    annotation_prefix: String,
    unknown: Arc<Mutex<BTreeMap<String, UnknownSender>>>,
    stats: Arc<KubeStats>,
}

impl Cache {
    /// Starts the reflectors on the current tokio runtime. `pod_selector` restricts the
    /// watched pods (a label selector), e.g. to one namespace's workloads in tests.
    pub fn start(
        client: Client,
        annotation_prefix: &str,
        pod_selector: Option<&str>,
        stats: Arc<KubeStats>,
    ) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let (nodes, writer) = reflector::store::<Node>();
        let (node_changes, _) = broadcast::channel(1024);
        let tx = node_changes.clone();
        let node_api: Api<Node> = Api::all(client.clone());
        let node_stream = watcher(node_api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .applied_objects();
        let node_task = tokio::spawn(async move {
            futures::pin_mut!(node_stream);
            while let Some(item) = node_stream.next().await {
                match item {
                    // Nobody listening (no recoverer) is fine.
                    Ok(node) => drop(tx.send(Arc::new(node))),
                    Err(e) => tracing::warn!(error = %e, "node watch failed; it backs off and resumes"),
                }
            }
        });

        let pods = Arc::new(RwLock::new(PodIndex::default()));
        let (ready_tx, _) = tokio::sync::watch::channel(false);
        let pods_ready = Arc::new(ready_tx);
        let mut cfg = watcher::Config::default();
        if let Some(sel) = pod_selector {
            cfg = cfg.labels(sel);
        }
        let pod_api: Api<Pod> = Api::all(client);
        let keep = format!("{annotation_prefix}/");
        let pod_stream = watcher(pod_api, cfg).default_backoff().modify(move |pod| *pod = slim(std::mem::take(pod), &keep));
        let index = pods.clone();
        let ready = pods_ready.clone();
        let pod_task = tokio::spawn(async move {
            futures::pin_mut!(pod_stream);
            while let Some(item) = pod_stream.next().await {
                match item {
                    Ok(ev) => {
                        let done = matches!(ev, watcher::Event::InitDone);
                        if let Ok(mut idx) = index.write() {
                            idx.apply(ev);
                        }
                        if done {
                            ready.send_replace(true);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "pod watch failed; it backs off and resumes"),
                }
            }
        });
        let cache = Self {
            nodes,
            pods,
            pods_ready,
            node_changes,
            annotation_prefix: annotation_prefix.to_owned(),
            unknown: Arc::new(Mutex::new(BTreeMap::new())),
            stats,
        };
        (cache, vec![node_task, pod_task])
    }

    /// Waits until both reflectors have listed once.
    pub async fn ready(&self) {
        let _ = self.nodes.wait_until_ready().await;
        let mut rx = self.pods_ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Node changes as the watch sees them (for recovery).
    pub fn node_changes(&self) -> broadcast::Receiver<Arc<Node>> {
        self.node_changes.subscribe()
    }

    /// A Node by name from the cache.
    pub fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.get(&reflector::ObjectRef::new(name))
    }

    /// All cached Nodes.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.state()
    }

    /// The cached Pods bound to `node`.
    pub fn pods_on(&self, node: &str) -> Vec<Arc<Pod>> {
        let Ok(idx) = self.pods.read() else { return Vec::new() };
        idx.by_node
            .get(node)
            .map(|keys| keys.iter().filter_map(|k| idx.pods.get(k).cloned()).collect())
            .unwrap_or_default()
    }

    /// Resolves a hint to a Node name: the keyring's node name, then a Node annotated
    /// with the relay id, then the source address against `status.addresses`
    /// (InternalIP/ExternalIP) and the `<prefix>/bmc-address` annotation.
    pub fn resolve(&self, hint: &NodeHint) -> Result<String, Unresolved> {
        if let Some(name) = hint.keyring_node.as_deref().filter(|n| !n.is_empty()) {
            return Ok(name.to_owned());
        }
        let nodes = self.nodes.state();
        if let Some(relay) = hint.relay_id.as_deref() {
            let key = format!("{}/relay-id", self.annotation_prefix);
            let matches: Vec<&Arc<Node>> =
                nodes.iter().filter(|n| annotation(n, &key).is_some_and(|v| v == relay)).collect();
            if let Some(found) = one(&matches)? {
                return Ok(found);
            }
        }
        if let Some(ip) = hint.source.map(|s| canonical(s.ip())) {
            let bmc_key = format!("{}/bmc-address", self.annotation_prefix);
            let matches: Vec<&Arc<Node>> = nodes
                .iter()
                .filter(|n| node_has_address(n, ip) || annotation(n, &bmc_key).is_some_and(|v| list_has_ip(v, ip)))
                .collect();
            if let Some(found) = one(&matches)? {
                return Ok(found);
            }
        }
        Err(Unresolved::Unknown)
    }

    /// Records a sender that did not resolve; bounded, counted.
    pub fn record_unknown(&self, hint: &NodeHint, why: Unresolved) {
        let counter = match why {
            Unresolved::Unknown => &self.stats.unknown_senders,
            Unresolved::Ambiguous => &self.stats.ambiguous_senders,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let key = describe(hint);
        tracing::warn!(sender = %key, reason = %why, "sender does not resolve to a node; not acting on it");
        let Ok(mut map) = self.unknown.lock() else { return };
        let why_s = match why {
            Unresolved::Unknown => "unknown",
            Unresolved::Ambiguous => "ambiguous",
        };
        let e = map.entry(key.clone()).or_insert_with(|| UnknownSender {
            hint: key,
            why: why_s,
            count: 0,
            last_seen: SystemTime::now(),
        });
        e.count += 1;
        e.last_seen = SystemTime::now();
        if map.len() > UNKNOWN_CAP {
            if let Some(oldest) = map.iter().min_by_key(|(_, v)| v.last_seen).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
    }

    /// The unknown senders seen so far (bounded).
    pub fn unknown_senders(&self) -> Vec<UnknownSender> {
        self.unknown.lock().map(|m| m.values().cloned().collect()).unwrap_or_default()
    }
}

fn describe(hint: &NodeHint) -> String {
    let mut parts = Vec::new();
    if let Some(s) = hint.source {
        parts.push(format!("addr={}", s.ip()));
    }
    if let Some(r) = &hint.relay_id {
        parts.push(format!("relay={r}"));
    }
    if let Some(n) = &hint.keyring_node {
        parts.push(format!("node={n}"));
    }
    if parts.is_empty() {
        "<no hint>".to_owned()
    } else {
        parts.join(" ")
    }
}

fn one(matches: &[&Arc<Node>]) -> Result<Option<String>, Unresolved> {
    match matches {
        [] => Ok(None),
        [n] => Ok(n.metadata.name.clone()),
        _ => Err(Unresolved::Ambiguous),
    }
}

/// IPv4-mapped IPv6 senders compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

fn list_has_ip(list: &str, ip: IpAddr) -> bool {
    list.split(',').filter_map(|s| s.trim().parse::<IpAddr>().ok()).any(|a| canonical(a) == ip)
}

fn node_has_address(node: &Node, ip: IpAddr) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .is_some_and(|addrs| {
            addrs.iter().any(|a| {
                (a.type_ == "InternalIP" || a.type_ == "ExternalIP")
                    && a.address.parse::<IpAddr>().is_ok_and(|x| canonical(x) == ip)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_slim_pod_keeps_what_the_actions_read_and_drops_the_rest() {
        let full: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "web-1", "namespace": "prod", "uid": "u-1", "resourceVersion": "42",
                "labels": {"app": "web"},
                "annotations": {"lastgasp.dev/termination-reason": "went down", "kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}}],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "r-1"}]
            },
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx", "env": [{"name": "A", "value": "1"}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.9", "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "DisruptionTarget", "status": "True", "reason": "KernelPanic"}
            ]}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let before = serde_json::to_vec(&full).map(|v| v.len()).unwrap_or(0);
        let slim = slim(full, "lastgasp.dev/");
        let after = serde_json::to_vec(&slim).map(|v| v.len()).unwrap_or(usize::MAX);
        assert_eq!(
            serde_json::to_value(&slim).unwrap_or_default(),
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web-1", "namespace": "prod", "uid": "u-1", "resourceVersion": "42",
                    "annotations": {"lastgasp.dev/termination-reason": "went down"}},
                "spec": {"nodeName": "n1", "containers": []},
                "status": {"phase": "Running", "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "KernelPanic"}]}
            })
        );
        assert!(after * 2 < before, "{after} B of {before} B kept");

        let mut index = PodIndex::default();
        index.apply(watcher::Event::Apply(slim));
        assert_eq!(index.by_node.get("n1").map(HashSet::len), Some(1), "still indexed by its node");
    }
}
