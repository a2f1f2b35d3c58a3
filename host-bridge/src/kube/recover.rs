//! Recover: when a node we marked reports Ready with a new
//! `status.nodeInfo.bootID`, clear our conditions (status False, as
//! node-problem-detector does), remove our taint, raise an Event, and drop the
//! boot-id notes. Driven by the node watch; only the leader writes.
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use ::kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Map, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::act::{act_error, event_name, fnv, untaint};
use super::Inner;
use crate::act::ActError;

/// What a node needs cleared: (condition type, annotation key) pairs, and its new boot id.
pub fn pending_recovery(node: &Node, prefix: &str) -> Option<(Vec<(String, String)>, String)> {
    let status = node.status.as_ref()?;
    let boot = status.node_info.as_ref().map(|i| i.boot_id.clone()).filter(|b| !b.is_empty())?;
    let ready = status
        .conditions
        .as_ref()
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if !ready {
        return None;
    }
    let note = format!("{prefix}/condition.");
    let stale: Vec<(String, String)> = node
        .metadata
        .annotations
        .as_ref()?
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&note).map(|t| (t.to_owned(), k.clone(), v)))
        .filter(|(_, _, old_boot)| **old_boot != boot)
        .map(|(t, k, _)| (t, k))
        .collect();
    if stale.is_empty() {
        None
    } else {
        Some((stale, boot))
    }
}

/// Starts the recovery loop over the cache's node changes.
pub(super) fn start(inner: Arc<Inner>) -> JoinHandle<()> {
    let mut changes = inner.cache.node_changes();
    tokio::spawn(async move {
        // (node, boot id) pairs already recovered: the cache still shows our notes
        // for a moment after we drop them, and each of our writes is a new change.
        let mut done: HashSet<(String, String)> = HashSet::new();
        loop {
            let node = match changes.recv().await {
                Ok(n) => n,
                Err(RecvError::Lagged(n)) => {
                    // Missed changes: look at every cached node instead.
                    tracing::warn!(missed = n, "recovery fell behind the node watch; rescanning");
                    for node in inner.cache.nodes() {
                        check(&inner, &node, &mut done).await;
                    }
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            check(&inner, &node, &mut done).await;
        }
    })
}

async fn check(inner: &Inner, node: &Node, done: &mut HashSet<(String, String)>) {
    let Some((stale, boot)) = pending_recovery(node, &inner.settings.annotation_prefix) else { return };
    if !inner.leader.is_leader() {
        return;
    }
    let name = node.metadata.name.clone().unwrap_or_default();
    if done.contains(&(name.clone(), boot.clone())) {
        return;
    }
    match recover(inner, &name, node, &stale, &boot).await {
        Ok(()) => {
            if done.len() >= 65_536 {
                done.clear();
            }
            done.insert((name.clone(), boot.clone()));
            inner.stats.recoveries.fetch_add(1, Ordering::Relaxed);
            tracing::info!(node = %name, boot_id = %boot, "node came back; cleared our condition and taint");
        }
        // The next node update (kubelet heartbeats) retries.
        Err(e) => tracing::warn!(node = %name, error = %e, "recovery did not complete; will retry"),
    }
}

async fn recover(inner: &Inner, name: &str, node: &Node, stale: &[(String, String)], boot: &str) -> Result<(), ActError> {
    let api: Api<Node> = Api::all(inner.client.clone());
    let pp = PatchParams { dry_run: inner.settings.dry_run, field_manager: Some("lastgasp".into()), ..Default::default() };
    let now = Time(Timestamp::now());
    let conditions: Vec<Value> = stale
        .iter()
        .map(|(t, _)| {
            json!({"type": t, "status": "False", "reason": "NodeRebooted",
                "message": format!("cleared by lastgasp: the node is Ready with a new boot id {boot}"),
                "lastHeartbeatTime": now, "lastTransitionTime": now})
        })
        .collect();
    let status = json!({"status": {"conditions": conditions}});
    let patch = Patch::Strategic(&status);
    inner
        .caller
        .call(format!("clear conditions on node {name}"), || api.patch_status(name, &pp, &patch))
        .await
        .map_err(act_error)?;
    let untainted = untaint(inner, name).await?;
    let types: Vec<&str> = stale.iter().map(|(t, _)| t.as_str()).collect();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(event_name(name, fnv(&[name, boot, "recovered"]))),
            namespace: Some(inner.settings.event_namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(name.to_owned()),
            uid: node.metadata.uid.clone(),
            ..Default::default()
        },
        reason: Some("NodeRecovered".into()),
        message: Some(format!(
            "Node is Ready with a new boot id {boot}: cleared {}{}",
            types.join(", "),
            if untainted { format!(" and removed taint {}", inner.settings.taint.key) } else { String::new() }
        )),
        type_: Some("Normal".into()),
        source: Some(EventSource { component: Some(inner.settings.component.clone()), host: None }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some(inner.settings.component.clone()),
        reporting_instance: Some(inner.leader.identity().to_owned()),
        ..Default::default()
    };
    let events: Api<Event> = Api::namespaced(inner.client.clone(), &inner.settings.event_namespace);
    let post = PostParams { dry_run: inner.settings.dry_run, field_manager: Some("lastgasp".into()) };
    match inner.caller.call(format!("recovery event for {name}"), || events.create(&post, &event)).await {
        Ok(_) => {}
        Err(e) if e.is_already_exists() => {}
        Err(e) => return Err(act_error(e)),
    }
    // Last: dropping the notes marks the recovery as done.
    let mut notes = Map::new();
    for (_, key) in stale {
        notes.insert(key.clone(), Value::Null);
    }
    let p = json!({"metadata": {"annotations": notes}});
    let patch = Patch::Merge(&p);
    inner
        .caller
        .call(format!("drop notes on node {name}"), || api.patch(name, &pp, &patch))
        .await
        .map_err(act_error)?;
    Ok(())
}
