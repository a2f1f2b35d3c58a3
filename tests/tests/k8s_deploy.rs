//! The manifests in `deploy/`: the bridge config in the ConfigMap is valid, and
//! the RBAC grants exactly what the bridge uses — every request it makes in the
//! taint, recovery, delete and leader-election paths is allowed, and every
//! granted verb is used by one of them (least privilege, checked both ways).
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use host_bridge::act::{plan, ActError, Incident, Policy};
use host_bridge::incident::{IncidentKey, NodeHint, Origin, Severity};
use host_bridge::kube::leader::LeaderSettings;
use host_bridge::kube::{KubeActuator, KubeSettings};
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, PostParams};
use lastgasp_tests::apiserver::cluster::{NodeSpec, TestCluster};
use lastgasp_tests::apiserver::Access;
use relay_core::detect::{Certainty, Kind};
use serde_json::Value;

fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn docs(file: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&deploy(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn configmap_holds_a_valid_bridge_config() {
    let cm = docs("configmap.yaml").into_iter().next().unwrap_or_else(|| panic!("empty configmap.yaml"));
    let text = cm["data"]["host-bridge.toml"].as_str().unwrap_or_else(|| panic!("no host-bridge.toml in the ConfigMap"));
    let (cfg, _) = host_bridge::serve::config::Config::parse(text, Path::new("configmap.yaml"), Path::new("/"))
        .unwrap_or_else(|e| panic!("{e}"));
    let le = cfg.kube.leader_election.unwrap_or_else(|| panic!("leader election is off in the deployment"));
    assert_eq!((le.namespace.as_str(), le.name.as_str()), ("lastgasp", "lastgasp-host-bridge"));
    // The Deployment runs 2+ replicas with the identity env the election and leader label use.
    let dep = deploy("deployment.yaml");
    assert!(dep.contains("replicas: 2") && dep.contains("POD_NAME") && dep.contains("POD_NAMESPACE"));
    let svc = deploy("service.yaml");
    assert!(svc.contains(host_bridge::kube::leader::LEADER_LABEL), "the ingest Service must select the leader");
}

/// (verb, group, resource, namespace or None for cluster-wide)
type Grant = (String, String, String, Option<String>);

fn grants(files: &[&str]) -> Vec<Grant> {
    let mut out = Vec::new();
    for f in files {
        for d in docs(f) {
            let kind = d["kind"].as_str().unwrap_or("");
            if kind != "ClusterRole" && kind != "Role" {
                continue;
            }
            let ns = (kind == "Role").then(|| d["metadata"]["namespace"].as_str().unwrap_or("").to_owned());
            for rule in d["rules"].as_array().cloned().unwrap_or_default() {
                let strs = |k: &str| -> Vec<String> {
                    rule[k].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default()
                };
                for g in strs("apiGroups") {
                    for r in strs("resources") {
                        for v in strs("verbs") {
                            out.push((v, g.clone(), r.clone(), ns.clone()));
                        }
                    }
                }
            }
        }
    }
    out
}

fn covers(g: &Grant, a: &Access) -> bool {
    g.0 == a.verb && g.1 == a.group && g.2 == a.resource && g.3.as_ref().is_none_or(|ns| a.namespace.as_ref() == Some(ns))
}

fn incident(id: u64, node: &str, line: &str) -> Incident {
    Incident {
        id,
        key: IncidentKey { node: format!("node/{node}"), boot: "relay/1".into() },
        hint: NodeHint { keyring_node: Some(node.to_owned()), relay_id: Some("r".into()), source: None },
        kind: Some(Kind::KernelPanic),
        reason: "KernelPanic".into(),
        severity: Severity::Fatal,
        certainty: Certainty::Confirmed,
        trusted: true,
        origin: Origin::Report { relay_id: "r".into(), boot_counter: 1, sequence: 1 },
        trigger_line: line.to_owned(),
        context_before: vec![],
        context_after: vec![],
        after_remaining: 0,
        opened_unix_ms: 0,
        repeats: 0,
    }
}

async fn run(act: &KubeActuator, inc: &Incident, policy: Policy) {
    for (i, step) in plan(inc, policy, false).iter().enumerate() {
        let mut tries = 0;
        loop {
            match act.run_step(inc, i, step).await {
                Ok(_) => break,
                Err(ActError::Retryable(e)) if tries < 80 => {
                    tries += 1;
                    tracing::debug!("{e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("step {i} {step:?}: {e}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_grants_exactly_the_verbs_used() {
    if TestCluster::real_requested() {
        eprintln!("skipped on a real cluster: needs the in-process server's request audit");
        return;
    }
    let tc = TestCluster::start().await;
    let server = tc.server().unwrap_or_else(|| panic!("in-process server expected"));
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": "lastgasp"}})).unwrap_or_else(|e| panic!("{e}"));
    Api::<Namespace>::all(tc.client.clone()).create(&PostParams::default(), &ns).await.unwrap_or_else(|e| panic!("{e}"));
    let settings = KubeSettings {
        pod_selector: Some(tc.pod_selector()),
        leader_election: Some(LeaderSettings {
            lease_duration_ms: 3_000,
            renew_deadline_ms: 2_000,
            retry_period_ms: 200,
            ..LeaderSettings::default()
        }),
        ..KubeSettings::default()
    };
    let act = KubeActuator::start(tc.config.clone(), settings).unwrap_or_else(|e| panic!("{e}"));
    let line = "Kernel panic - not syncing: sysrq triggered crash";
    let mut names = Vec::new();
    for suffix in ["taint", "delete"] {
        let n = tc
            .create_node(NodeSpec { suffix, internal_ip: "192.0.2.1", boot_id: "b1", annotations: BTreeMap::new(), taints: vec![] })
            .await;
        let name = n.metadata.name.unwrap_or_default();
        tc.create_pods(&name, suffix, 2).await;
        names.push(name);
    }
    for name in &names {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while act.cache().pods_on(name).len() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "cache never saw the pods");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Taint, then recovery.
    run(&act, &incident(1, &names[0], line), Policy::Taint).await;
    tc.set_node_status(&names[0], "192.0.2.1", "b2", true).await;
    let nodes: Api<Node> = Api::all(tc.client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while act.stats().recoveries.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Delete.
    run(&act, &incident(2, &names[1], line), Policy::Delete).await;
    assert!(nodes.get_opt(&names[1]).await.unwrap_or_else(|e| panic!("{e}")).is_none());
    // Long enough for the leader to renew its Lease (an update) a few times.
    tokio::time::sleep(Duration::from_millis(700)).await;
    act.shutdown();

    let used = server.audit();
    let granted = grants(&["rbac.yaml", "rbac-delete-policy.yaml"]);
    let denied: Vec<&Access> = used.iter().filter(|a| !granted.iter().any(|g| covers(g, a))).collect();
    assert!(denied.is_empty(), "the bridge needs access the RBAC does not grant: {denied:#?}");
    let unused: Vec<&Grant> = granted.iter().filter(|g| !used.iter().any(|a| covers(g, a))).collect();
    assert!(unused.is_empty(), "the RBAC grants access the bridge never uses: {unused:#?}");
    tc.cleanup().await;
}
