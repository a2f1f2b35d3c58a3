//! The Kubernetes suite: written once, run against the in-process API server
//! (default) or a real cluster (`LASTGASP_K8S=real`, `KUBECONFIG`). Each test
//! makes its own namespace, fake Nodes and Pods, and cleans them up.
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use host_bridge::act::{plan, ActError, Incident, Policy, Step, StepOutcome};
use host_bridge::incident::{IncidentKey, NodeHint, Origin, Severity};
use host_bridge::kube::leader::LeaderSettings;
use host_bridge::kube::{KubeActuator, KubeSettings};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use lastgasp_tests::apiserver::cluster::{NodeSpec, TestCluster};
use lastgasp_tests::apiserver::proxy::Mode;
use relay_core::detect::{Certainty, Kind};
use serde_json::json;

const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

/// The kernel's panic line and source address, from the real `ext-panic` capture.
fn ext_panic() -> (String, String) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/netconsole/ext-panic.jsonl");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{path}: {e}"));
        let payload = v["text"].as_str().unwrap_or("");
        // Extended netconsole: `<prefix>,<seq>,<ts>,<flags>;<text>\n`.
        let Some((_, body)) = payload.split_once(';') else { continue };
        let msg = body.lines().next().unwrap_or("");
        if msg.starts_with("Kernel panic - not syncing") {
            return (msg.to_owned(), v["src"].as_str().unwrap_or("").to_owned());
        }
    }
    panic!("no panic line in {path}");
}

fn incident(id: u64, hint: NodeHint, line: &str, trusted: bool, origin: Origin) -> Incident {
    Incident {
        id,
        key: IncidentKey { node: format!("test/{id}"), boot: "relay/1".into() },
        hint,
        kind: Some(Kind::KernelPanic),
        reason: "KernelPanic".into(),
        severity: Severity::Fatal,
        certainty: Certainty::Confirmed,
        trusted,
        origin,
        trigger_line: line.to_owned(),
        context_before: vec![],
        context_after: vec![],
        after_remaining: 0,
        opened_unix_ms: 0,
        repeats: 0,
    }
}

fn from_ip(ip: &str) -> NodeHint {
    let source: SocketAddr = format!("{ip}:6666").parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
    NodeHint { source: Some(source), ..Default::default() }
}

fn settings(tc: &TestCluster) -> KubeSettings {
    KubeSettings {
        pod_selector: Some(tc.pod_selector()),
        call_timeout_ms: 2_000,
        backoff_initial_ms: 50,
        backoff_max_ms: 500,
        retry_budget_ms: 20_000,
        ..Default::default()
    }
}

/// A unique-per-run address, so parallel tests on one real cluster never share one.
fn ip_for(tc: &TestCluster, host: u8) -> String {
    let n = u32::from_str_radix(&tc.run_id, 16).unwrap_or(0);
    format!("10.{}.{}.{host}", (n >> 8) & 0xff, n & 0xff)
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Runs the plan as the journal runner would: in order, retrying what is retryable.
async fn run_plan(act: &KubeActuator, inc: &Incident, steps: &[Step]) -> Vec<Result<StepOutcome, ActError>> {
    let mut out = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let mut tries = 0;
        loop {
            match act.run_step(inc, i, step).await {
                Err(ActError::Retryable(e)) if tries < 40 => {
                    tries += 1;
                    tracing::debug!("step {i} retryable: {e}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                r => {
                    out.push(r);
                    break;
                }
            }
        }
    }
    out
}

/// A node with `pods` pods, known to the actuator's cache.
async fn seed(tc: &TestCluster, act: &KubeActuator, suffix: &str, ip: &str, pods: usize, taints: Vec<serde_json::Value>) -> String {
    let node = tc
        .create_node(NodeSpec { suffix, internal_ip: ip, boot_id: "boot-1", annotations: BTreeMap::new(), taints })
        .await;
    let name = node.metadata.name.unwrap_or_default();
    tc.create_pods(&name, suffix, pods).await;
    let hint = from_ip(ip);
    eventually("the cache to see the node and its pods", Duration::from_secs(20), || async {
        act.cache().resolve(&hint).ok().as_deref() == Some(name.as_str()) && act.cache().pods_on(&name).len() == pods
    })
    .await;
    name
}

async fn get_node(tc: &TestCluster, name: &str) -> Option<Node> {
    Api::<Node>::all(tc.client.clone()).get_opt(name).await.unwrap_or_else(|e| panic!("get node: {e}"))
}

async fn pods_on(tc: &TestCluster, node: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(tc.client.clone(), &tc.namespace);
    let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    api.list(&lp).await.map(|l| l.items).unwrap_or_else(|e| panic!("list pods: {e}"))
}

fn taint_keys(node: &Node) -> Vec<String> {
    node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default().into_iter().map(|t| t.key).collect()
}

fn condition<'a>(node: &'a Node, t: &str) -> Option<&'a k8s_openapi::api::core::v1::NodeCondition> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == t)
}

fn pod_marked(p: &Pod, line: &str) -> bool {
    let reason = p.metadata.annotations.as_ref().and_then(|a| a.get("lastgasp.dev/termination-reason"));
    let code = p.metadata.annotations.as_ref().and_then(|a| a.get("lastgasp.dev/termination-reason-code"));
    let cond = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "DisruptionTarget" && c.status == "True"));
    reason.is_some_and(|r| r.contains(line)) && code.map(String::as_str) == Some("KernelPanic") && cond
}

fn start(tc: &TestCluster, s: KubeSettings) -> KubeActuator {
    KubeActuator::start(tc.config.clone(), s).unwrap_or_else(|e| panic!("actuator: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_semantics() {
    let tc = TestCluster::start().await;
    let nodes: Api<Node> = Api::all(tc.client.clone());
    let node = tc
        .create_node(NodeSpec { suffix: "sem", internal_ip: &ip_for(&tc, 1), boot_id: "b1", annotations: BTreeMap::new(), taints: vec![] })
        .await;
    let name = node.metadata.name.clone().unwrap_or_default();
    // A new Node is not ready until its kubelet says so.
    assert!(taint_keys(&node).contains(&"node.kubernetes.io/not-ready".to_owned()), "{:?}", node.spec);

    // A merge patch replaces the whole taint list.
    let p = json!({"spec": {"taints": [{"key": "example.com/a", "effect": "NoSchedule"}]}});
    let n = nodes.patch(&name, &PatchParams::default(), &Patch::Merge(&p)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(taint_keys(&n), vec!["example.com/a".to_owned()]);

    // Status changes through the main resource are ignored ...
    let p = json!({"metadata": {"labels": {"x": "1"}}, "status": {"conditions": [{"type": "Fake", "status": "True"}]}});
    let n = nodes.patch(&name, &PatchParams::default(), &Patch::Merge(&p)).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(condition(&n, "Fake").is_none(), "status changed through the main resource");
    assert_eq!(n.metadata.labels.as_ref().and_then(|l| l.get("x")).map(String::as_str), Some("1"));
    // ... and spec changes through /status are ignored.
    let p = json!({"spec": {"unschedulable": true}, "status": {"conditions": [{"type": "Fake", "status": "True", "reason": "R", "message": "m"}]}});
    let n = nodes.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&p)).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(condition(&n, "Fake").is_some(), "status not written through /status");
    assert!(condition(&n, "Ready").is_some(), "strategic merge lost the Ready condition");
    assert_ne!(n.spec.as_ref().and_then(|s| s.unschedulable), Some(true), "spec changed through /status");

    // A stale resourceVersion gets 409.
    let stale = n.clone();
    let p = json!({"metadata": {"labels": {"x": "2"}}});
    nodes.patch(&name, &PatchParams::default(), &Patch::Merge(&p)).await.unwrap_or_else(|e| panic!("{e}"));
    match nodes.replace(&name, &PostParams::default(), &stale).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
        other => panic!("stale replace: {other:?}"),
    }
    // A failed JSON-patch test gets 422.
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": stale.metadata.resource_version},
        {"op": "add", "path": "/metadata/labels/y", "value": "1"},
    ]))
    .unwrap_or_else(|e| panic!("{e}"));
    match nodes.patch(&name, &PatchParams::default(), &Patch::<()>::Json(ops)).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 422, "{s:?}"),
        other => panic!("failed test op: {other:?}"),
    }

    // A watch resumes from a resourceVersion.
    let list = nodes.list(&ListParams::default().fields(&format!("metadata.name={name}"))).await.unwrap_or_else(|e| panic!("{e}"));
    let rv = list.metadata.resource_version.clone().unwrap_or_default();
    let p = json!({"metadata": {"labels": {"x": "3"}}});
    nodes.patch(&name, &PatchParams::default(), &Patch::Merge(&p)).await.unwrap_or_else(|e| panic!("{e}"));
    let wp = kube::api::WatchParams::default().fields(&format!("metadata.name={name}")).timeout(10);
    let stream = nodes.watch(&wp, &rv).await.unwrap_or_else(|e| panic!("watch: {e}"));
    futures::pin_mut!(stream);
    let first = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut stream)).await;
    match first {
        Ok(Some(Ok(kube::api::WatchEvent::Modified(n)))) => {
            assert_eq!(n.metadata.labels.as_ref().and_then(|l| l.get("x")).map(String::as_str), Some("3"));
        }
        other => panic!("watch from {rv}: {other:?}"),
    }

    // Deleting a bound Pod only marks it, unless the grace period is 0.
    tc.create_pods(&name, "sem", 1).await;
    let pods: Api<Pod> = Api::namespaced(tc.client.clone(), &tc.namespace);
    pods.delete("sem-0", &DeleteParams::default()).await.unwrap_or_else(|e| panic!("{e}"));
    let p = pods.get_opt("sem-0").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(p.as_ref().and_then(|p| p.metadata.deletion_timestamp.as_ref()).is_some(), "graceful delete removed the pod");
    pods.delete("sem-0", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eventually("the pod to be gone", Duration::from_secs(10), || async { pods.get_opt("sem-0").await.ok().flatten().is_none() }).await;
    tc.cleanup().await;
}

/// Lists come in pages (`limit`, `continue`), as the real apiserver serves
/// them and kube-runtime's watchers ask for them (500 at a time): nothing
/// is missed or repeated across pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_with_limit_and_continue() {
    let tc = TestCluster::start().await;
    let node = tc
        .create_node(NodeSpec { suffix: "page", internal_ip: &ip_for(&tc, 2), boot_id: "b1", annotations: BTreeMap::new(), taints: vec![] })
        .await;
    let name = node.metadata.name.clone().unwrap_or_default();
    tc.create_pods(&name, "page", 5).await;
    let pods: Api<Pod> = Api::namespaced(tc.client.clone(), &tc.namespace);
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut lp = ListParams::default().labels(&tc.pod_selector()).limit(2);
    loop {
        let page = pods.list(&lp).await.unwrap_or_else(|e| panic!("list page: {e}"));
        sizes.push(page.items.len());
        seen.extend(page.items.into_iter().filter_map(|p| p.metadata.name));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => break,
        }
        assert!(sizes.len() < 10, "the pages never end: {sizes:?}");
    }
    assert_eq!(sizes, vec![2, 2, 1]);
    seen.sort();
    assert_eq!(seen, (0..5).map(|i| format!("page-{i}")).collect::<Vec<_>>());
    // A token that is not one is refused, not read as "from the start".
    match pods.list(&ListParams::default().limit(2).continue_token("not-a-token")).await {
        Err(kube::Error::Api(s)) => assert!(s.code == 400 || s.code == 410, "{s:?}"),
        other => panic!("bad continue token: {other:?}"),
    }
    tc.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext_panic_taints_without_clobbering() {
    let tc = TestCluster::start().await;
    let (line, src) = ext_panic();
    // The real capture's source address is the node's InternalIP on the allow-list.
    let ip = if TestCluster::real_requested() { ip_for(&tc, 2) } else { src };
    let act = start(&tc, settings(&tc));
    let other = json!({"key": "example.com/maintenance", "value": "x", "effect": "NoSchedule"});
    let node = seed(&tc, &act, "tnt", &ip, 5, vec![other]).await;
    let inc = incident(1, from_ip(&ip), &line, true, Origin::NetconsoleExtended);
    let steps = plan(&inc, Policy::Taint, false);
    assert_eq!(
        steps,
        vec![Step::NodeEvent, Step::NodeCondition { condition_type: "KernelPanic".into() }, Step::PodReasons, Step::Taint]
    );
    for r in run_plan(&act, &inc, &steps).await {
        r.unwrap_or_else(|e| panic!("step failed: {e}"));
    }
    let n = get_node(&tc, &node).await.unwrap_or_else(|| panic!("node gone"));
    let keys = taint_keys(&n);
    assert!(keys.contains(&OUT_OF_SERVICE.to_owned()), "{keys:?}");
    assert!(keys.contains(&"example.com/maintenance".to_owned()), "clobbered: {keys:?}");
    assert!(keys.contains(&"node.kubernetes.io/not-ready".to_owned()), "clobbered: {keys:?}");
    let c = condition(&n, "KernelPanic").unwrap_or_else(|| panic!("no KernelPanic condition"));
    assert_eq!(c.status, "True");
    assert_eq!(c.message.as_deref(), Some(line.as_str()));
    assert!(condition(&n, "Ready").is_some(), "condition patch clobbered Ready");
    let events = tc.node_events(&node).await;
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("KernelPanic") && e.message.as_deref() == Some(line.as_str())), "{events:?}");
    let pods = pods_on(&tc, &node).await;
    assert_eq!(pods.len(), 5);
    for p in &pods {
        assert!(pod_marked(p, "Kernel panic - not syncing: sysrq triggered crash"), "{:?}", p.metadata.annotations);
    }
    // Replaying every step is harmless: one Event, one taint.
    for r in run_plan(&act, &inc, &steps).await {
        r.unwrap_or_else(|e| panic!("replayed step failed: {e}"));
    }
    let n = get_node(&tc, &node).await.unwrap_or_else(|| panic!("node gone"));
    assert_eq!(taint_keys(&n).iter().filter(|k| *k == OUT_OF_SERVICE).count(), 1);
    assert_eq!(tc.node_events(&node).await.len(), 1);
    act.shutdown();
    tc.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taint_retries_a_lost_race() {
    let tc = TestCluster::start().await;
    let ip = ip_for(&tc, 3);
    let act = start(&tc, settings(&tc));
    let node = seed(&tc, &act, "race", &ip, 0, vec![]).await;
    // Another writer taints the node between our read and our write.
    let stale = get_node(&tc, &node).await.unwrap_or_else(|| panic!("node gone"));
    let nodes: Api<Node> = Api::all(tc.client.clone());
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/spec/taints/-", "value": {"key": "example.com/other", "effect": "NoSchedule"}}
    ]))
    .unwrap_or_else(|e| panic!("{e}"));
    nodes.patch(&node, &PatchParams::default(), &Patch::<()>::Json(ops)).await.unwrap_or_else(|e| panic!("{e}"));
    let out = act.taint_from_snapshot(&node, stale).await.unwrap_or_else(|e| panic!("taint: {e}"));
    assert!(out.detail.contains("tainted"), "{}", out.detail);
    assert!(act.stats().conflicts.load(Ordering::Relaxed) >= 1, "no conflict was seen");
    let keys = taint_keys(&get_node(&tc, &node).await.unwrap_or_else(|| panic!("node gone")));
    assert!(keys.contains(&"example.com/other".to_owned()) && keys.contains(&OUT_OF_SERVICE.to_owned()), "{keys:?}");
    act.shutdown();
    tc.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_policy_removes_pods_then_node() {
    let tc = TestCluster::start().await;
    let (line, _) = ext_panic();
    let ip = ip_for(&tc, 4);
    let act = start(&tc, settings(&tc));
    let node = seed(&tc, &act, "del", &ip, 4, vec![]).await;
    let hint = NodeHint { relay_id: Some("relay-del".into()), keyring_node: Some(node.clone()), ..from_ip(&ip) };
    let inc = incident(2, hint, &line, true, Origin::Report { relay_id: "relay-del".into(), boot_counter: 1, sequence: 1 });
    let steps = plan(&inc, Policy::Delete, false);
    assert_eq!(steps.last(), Some(&Step::DeleteNode));
    for r in run_plan(&act, &inc, &steps).await {
        r.unwrap_or_else(|e| panic!("step failed: {e}"));
    }
    assert!(pods_on(&tc, &node).await.is_empty(), "pods survived grace-0 deletion");
    assert!(get_node(&tc, &node).await.is_none(), "node survived");
    act.shutdown();
    tc.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_policy_only_records() {
    let tc = TestCluster::start().await;
    let (line, _) = ext_panic();
    let ip = ip_for(&tc, 5);
    let act = start(&tc, settings(&tc));
    let node = seed(&tc, &act, "obs", &ip, 2, vec![]).await;
    let inc = incident(3, from_ip(&ip), &line, true, Origin::NetconsoleExtended);
    let steps = plan(&inc, Policy::Observe, false);
    assert!(!steps.contains(&Step::Taint) && !steps.contains(&Step::DeleteNode), "{steps:?}");
    for r in run_plan(&act, &inc, &steps).await {
        r.unwrap_or_else(|e| panic!("step failed: {e}"));
    }
    let n = get_node(&tc, &node).await.unwrap_or_else(|| panic!("node gone"));
    assert!(!taint_keys(&n).contains(&OUT_OF_SERVICE.to_owned()));
    assert_eq!(condition(&n, "KernelPanic").map(|c| c.status.as_str()), Some("True"));
    assert_eq!(tc.node_events(&node).await.len(), 1);
    assert_eq!(pods_on(&tc, &node).await.len(), 2);
    act.shutdown();
    tc.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_source_changes_nothing() {
    let tc = TestCluster::start().await;
    let (line, _) = ext_panic();
    let ip = ip_for(&tc, 6);
    let act = start(&tc, settings(&tc));
    let node = seed(&tc, &act, "unt", &ip, 2, vec![]).await;
    let before = get_node(&tc, &node).await.unwrap_or_else(|| panic!("node gone"));
    let inc = incident(4, from_ip(&ip), &line, false, Origin::NetconsoleBasic);
    let steps = plan(&inc, Policy::Delete, true);
    assert_eq!(steps, vec![Step::NodeEvent]);
    // Even a widened plan must not get through the actuator.
    let widened = [Step::NodeEvent, Step::Taint, Step::DeletePods, Step::DeleteNode];
    let results = run_plan(&act, &inc, &widened).await;
    assert!(results[0].is_ok());
    assert!(results[1..].iter().all(|r| matches!(r, Err(ActError::Permanent(_)))), "{results:?}");
    let after = get_node(&tc, &node).await.unwrap_or_else(|| panic!("node gone"));
    assert_eq!(taint_keys(&before), taint_keys(&after));
    assert!(condition(&after, "KernelPanic").is_none());
    assert!(tc.node_events(&node).await.is_empty(), "an untrusted source raised an Event");
    for p in pods_on(&tc, &node).await {
        assert!(p.metadata.annotations.unwrap_or_default().keys().all(|k| !k.starts_with("lastgasp.dev/")));
    }
    if let Some(server) = tc.server() {
        let writes = server.writes();
        run_plan(&act, &inc, &steps).await;
        assert_eq!(server.writes(), writes, "an untrusted source caused API writes");
    }
    act.shutdown();

    // With untrusted_events on, it raises an Event and nothing else.
    let act = start(&tc, KubeSettings { untrusted_events: true, ..settings(&tc) });
    let hint = from_ip(&ip);
    eventually("cache", Duration::from_secs(20), || async { act.cache().resolve(&hint).is_ok() }).await;
    for r in run_plan(&act, &inc, &steps).await {
        r.unwrap_or_else(|e| panic!("{e}"));
    }
    let events = tc.node_events(&node).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].type_.as_deref(), Some("Normal"));
    let after = get_node(&tc, &node).await.unwrap_or_else(|| panic!("node gone"));
    assert!(condition(&after, "KernelPanic").is_none());
    act.shutdown();
    tc.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_ambiguous_senders_are_recorded_not_guessed() {
    let tc = TestCluster::start().await;
    let (line, _) = ext_panic();
    let act = start(&tc, settings(&tc));
    let shared_ip = ip_for(&tc, 7);
    let mut ann = BTreeMap::new();
    ann.insert("lastgasp.dev/bmc-address".to_owned(), format!("{}, 192.0.2.9", ip_for(&tc, 8)));
    let a = tc.create_node(NodeSpec { suffix: "amb-a", internal_ip: &shared_ip, boot_id: "b", annotations: ann, taints: vec![] }).await;
    let b = tc.create_node(NodeSpec { suffix: "amb-b", internal_ip: &shared_ip, boot_id: "b", annotations: BTreeMap::new(), taints: vec![] }).await;
    let a = a.metadata.name.unwrap_or_default();
    let b = b.metadata.name.unwrap_or_default();
    // The BMC annotation resolves.
    let bmc = from_ip(&ip_for(&tc, 8));
    eventually("bmc resolution", Duration::from_secs(20), || async { act.cache().resolve(&bmc).ok().as_deref() == Some(a.as_str()) }).await;
    // Two nodes with one address: refuse to guess.
    let shared = from_ip(&shared_ip);
    eventually("both nodes cached", Duration::from_secs(20), || async {
        act.cache().resolve(&shared) == Err(host_bridge::kube::resolve::Unresolved::Ambiguous)
    })
    .await;
    let inc = incident(5, from_ip(&shared_ip), &line, true, Origin::NetconsoleExtended);
    let r = act.run_step(&inc, 0, &Step::NodeEvent).await;
    assert!(matches!(r, Err(ActError::Permanent(_))), "{r:?}");
    assert_eq!(act.stats().ambiguous_senders.load(Ordering::Relaxed), 1);
    // Nobody has this address.
    let inc = incident(6, from_ip("192.0.2.77"), &line, true, Origin::NetconsoleExtended);
    let r = act.run_step(&inc, 0, &Step::NodeEvent).await;
    assert!(matches!(r, Err(ActError::Permanent(_))), "{r:?}");
    assert_eq!(act.stats().unknown_senders.load(Ordering::Relaxed), 1);
    let unknown = act.cache().unknown_senders();
    assert!(unknown.iter().any(|u| u.hint.contains("192.0.2.77") && u.count == 1), "{unknown:?}");
    assert!(tc.node_events(&a).await.is_empty() && tc.node_events(&b).await.is_empty());
    act.shutdown();
    tc.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_on_new_boot_id() {
    let tc = TestCluster::start().await;
    let (line, _) = ext_panic();
    let ip = ip_for(&tc, 9);
    let act = start(&tc, settings(&tc));
    let node = seed(&tc, &act, "rec", &ip, 1, vec![]).await;
    let inc = incident(7, from_ip(&ip), &line, true, Origin::NetconsoleExtended);
    for r in run_plan(&act, &inc, &plan(&inc, Policy::Taint, false)).await {
        r.unwrap_or_else(|e| panic!("{e}"));
    }
    // Ready again but the same boot: a stale Ready must not count as recovery.
    tc.set_node_status(&node, &ip, "boot-1", true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = get_node(&tc, &node).await.unwrap_or_else(|| panic!("node gone"));
    assert!(taint_keys(&n).contains(&OUT_OF_SERVICE.to_owned()), "recovered without a new boot");
    // The kubelet reports a new boot.
    tc.set_node_status(&node, &ip, "boot-2", true).await;
    eventually("recovery", Duration::from_secs(20), || async {
        let Some(n) = get_node(&tc, &node).await else { return false };
        !taint_keys(&n).contains(&OUT_OF_SERVICE.to_owned())
            && condition(&n, "KernelPanic").is_some_and(|c| c.status == "False")
            && n.metadata.annotations.as_ref().is_none_or(|a| !a.keys().any(|k| k.starts_with("lastgasp.dev/condition.")))
    })
    .await;
    let events = tc.node_events(&node).await;
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("NodeRecovered")), "{events:?}");
    assert_eq!(act.stats().recoveries.load(Ordering::Relaxed), 1);
    act.shutdown();
    tc.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_acts() {
    let tc = TestCluster::start().await;
    let (line, _) = ext_panic();
    let ip = ip_for(&tc, 10);
    let le = LeaderSettings {
        namespace: tc.namespace.clone(),
        name: "lastgasp-test".into(),
        identity: None,
        lease_duration_ms: 3_000,
        renew_deadline_ms: 2_000,
        retry_period_ms: 300,
    };
    let a = start(&tc, KubeSettings { leader_election: Some(LeaderSettings { identity: Some("a".into()), ..le.clone() }), ..settings(&tc) });
    let b = start(&tc, KubeSettings { leader_election: Some(LeaderSettings { identity: Some("b".into()), ..le.clone() }), ..settings(&tc) });
    let node = seed(&tc, &a, "lead", &ip, 1, vec![]).await;
    eventually("a leader", Duration::from_secs(20), || async { a.leadership().is_leader() || b.leadership().is_leader() }).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(a.leadership().is_leader() != b.leadership().is_leader(), "both or neither lead");
    let (leader, follower) = if a.leadership().is_leader() { (&a, &b) } else { (&b, &a) };
    let inc = incident(8, from_ip(&ip), &line, true, Origin::NetconsoleExtended);
    let r = follower.run_step(&inc, 0, &Step::NodeEvent).await;
    assert!(matches!(r, Err(ActError::Retryable(_))), "the follower acted: {r:?}");
    leader.run_step(&inc, 0, &Step::NodeEvent).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tc.node_events(&node).await.len(), 1);
    // The leader dies; the follower takes over and the same step finds the Event already raised.
    leader.shutdown();
    eventually("takeover", Duration::from_secs(20), || async { follower.leadership().is_leader() }).await;
    let out = follower.run_step(&inc, 0, &Step::NodeEvent).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(out.detail.contains("already"), "{}", out.detail);
    assert_eq!(tc.node_events(&node).await.len(), 1);
    follower.shutdown();
    tc.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_changes_nothing() {
    let tc = TestCluster::start().await;
    let (line, _) = ext_panic();
    let ip = ip_for(&tc, 11);
    let act = start(&tc, KubeSettings { dry_run: true, ..settings(&tc) });
    let node = seed(&tc, &act, "dry", &ip, 2, vec![]).await;
    let before = get_node(&tc, &node).await.unwrap_or_else(|| panic!("node gone"));
    let inc = incident(9, from_ip(&ip), &line, true, Origin::Report { relay_id: "r".into(), boot_counter: 1, sequence: 1 });
    for policy in [Policy::Taint, Policy::Delete] {
        for r in run_plan(&act, &inc, &plan(&inc, policy, false)).await {
            let out = r.unwrap_or_else(|e| panic!("{e}"));
            assert!(out.detail.starts_with("dry-run: "), "{}", out.detail);
        }
    }
    let after = get_node(&tc, &node).await.unwrap_or_else(|| panic!("dry-run deleted the node"));
    assert_eq!(taint_keys(&before), taint_keys(&after));
    assert!(condition(&after, "KernelPanic").is_none());
    assert!(tc.node_events(&node).await.is_empty());
    let pods = pods_on(&tc, &node).await;
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| !pod_marked(p, &line)));
    act.shutdown();
    tc.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_outage_delays_but_loses_nothing() {
    let tc = TestCluster::start().await;
    let (line, _) = ext_panic();
    let ip = ip_for(&tc, 12);
    let (proxy, config) = tc.proxied().await;
    let act = KubeActuator::start(config, settings(&tc)).unwrap_or_else(|e| panic!("{e}"));
    let node = seed(&tc, &act, "out", &ip, 3, vec![]).await;
    let inc = incident(10, from_ip(&ip), &line, true, Origin::NetconsoleExtended);
    let steps = plan(&inc, Policy::Taint, false);
    // First the server hangs, then it refuses connections, then it is back.
    proxy.set(Mode::Blackhole);
    let runner = {
        let act = act.clone();
        let inc = inc.clone();
        let steps = steps.clone();
        tokio::spawn(async move { run_plan(&act, &inc, &steps).await })
    };
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    proxy.set(Mode::Refuse);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!runner.is_finished(), "steps finished while the API server was unreachable");
    proxy.set(Mode::Pass);
    let results = tokio::time::timeout(Duration::from_secs(60), runner)
        .await
        .unwrap_or_else(|_| panic!("steps never completed after the outage"))
        .unwrap_or_else(|e| panic!("{e}"));
    for r in results {
        r.unwrap_or_else(|e| panic!("step failed: {e}"));
    }
    assert!(act.stats().api_retries.load(Ordering::Relaxed) > 0);
    let n = get_node(&tc, &node).await.unwrap_or_else(|| panic!("node gone"));
    assert!(taint_keys(&n).contains(&OUT_OF_SERVICE.to_owned()));
    assert!(pods_on(&tc, &node).await.iter().all(|p| pod_marked(p, &line)));
    act.shutdown();
    tc.cleanup().await;
}
