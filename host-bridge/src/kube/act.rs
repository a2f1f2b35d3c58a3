//! The steps themselves. Each is idempotent: it checks what is already there,
//! names what it creates deterministically, and treats "already done" as done.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use ::kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::call::CallError;
use super::Inner;
use crate::act::{ActError, Incident, Step, StepOutcome};
use crate::incident::Origin;

/// Most conflict retries of one optimistic-concurrency write.
const CONFLICT_RETRIES: u32 = 16;

fn done(detail: impl Into<String>) -> Result<StepOutcome, ActError> {
    Ok(StepOutcome { detail: detail.into() })
}

/// Maps a final call failure onto the journal's retry semantics.
pub(super) fn act_error(e: CallError) -> ActError {
    if e.is_transient() || e.is_conflict() || e.code() == Some(429) {
        ActError::Retryable(e.to_string())
    } else {
        ActError::Permanent(e.to_string())
    }
}

/// 64-bit FNV-1a, for short deterministic object names.
pub(super) fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// `node.hash`, valid as an object name and at most 253 characters.
pub(super) fn event_name(node: &str, hash: u64) -> String {
    let node: String = node.chars().take(200).collect();
    format!("{node}.{hash:016x}")
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn post(dry_run: bool) -> PostParams {
    PostParams { dry_run, field_manager: Some("lastgasp".into()) }
}

fn patch_params(dry_run: bool) -> PatchParams {
    PatchParams { dry_run, field_manager: Some("lastgasp".into()), ..Default::default() }
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// How the incident reached us, in words, for the pod annotation.
fn provenance(incident: &Incident) -> String {
    match &incident.origin {
        Origin::Report { relay_id, boot_counter, .. } => {
            format!("signed report from relay {relay_id}, host boot {boot_counter}")
        }
        Origin::NetconsoleExtended => "extended netconsole from a trusted address".into(),
        Origin::NetconsoleBasic => "netconsole from a trusted address".into(),
    }
}

/// The human sentence on every pod: what happened, in the kernel's own words.
pub(super) fn termination_sentence(node: &str, incident: &Incident) -> String {
    let line = truncate(incident.trigger_line.trim(), 512);
    format!(
        "Node {node} went down ({}): its kernel said \"{line}\" ({}).",
        incident.reason,
        provenance(incident)
    )
}

pub(super) async fn run_step(
    inner: &Inner,
    incident: &Incident,
    index: usize,
    step: &Step,
) -> Result<StepOutcome, ActError> {
    if !inner.leader.is_leader() {
        inner.stats.steps_not_leader.fetch_add(1, Ordering::Relaxed);
        return Err(ActError::Retryable(format!(
            "{} is not the leader; the leader acts",
            inner.leader.identity()
        )));
    }
    // The plan already respects trust; never widen it here.
    if !incident.trusted && *step != Step::NodeEvent {
        return Err(ActError::Permanent(format!("refusing {} for an untrusted source", step.name())));
    }
    let wait = Duration::from_millis(inner.settings.call_timeout_ms);
    if tokio::time::timeout(wait, inner.cache.ready()).await.is_err() {
        return Err(ActError::Retryable("the node/pod cache has not synced yet".into()));
    }
    let node = match inner.cache.resolve(&incident.hint) {
        Ok(n) => n,
        Err(why) => {
            inner.cache.record_unknown(&incident.hint, why);
            return Err(ActError::Permanent(format!("sender does not resolve to a node: {why}")));
        }
    };
    if !incident.trusted && !inner.settings.untrusted_events {
        inner.stats.steps_skipped_untrusted.fetch_add(1, Ordering::Relaxed);
        return done(format!("skipped on node {node}: untrusted source (untrusted_events is off)"));
    }
    let dry = inner.settings.dry_run;
    let result = match step {
        Step::NodeEvent => node_event(inner, &node, incident, index).await,
        Step::NodeCondition { condition_type } => node_condition(inner, &node, incident, condition_type).await,
        Step::PodReasons => pod_reasons(inner, &node, incident).await,
        Step::Taint => taint(inner, &node, inner.cache.node(&node).map(|n| (*n).clone())).await,
        Step::DeletePods => delete_pods(inner, &node).await,
        Step::DeleteNode => delete_node(inner, &node).await,
    };
    if result.is_ok() {
        inner.stats.steps_done.fetch_add(1, Ordering::Relaxed);
    }
    result.map(|o| if dry { StepOutcome { detail: format!("dry-run: {}", o.detail) } } else { o })
}

async fn get_node(inner: &Inner, name: &str) -> Result<Node, ActError> {
    if let Some(n) = inner.cache.node(name) {
        return Ok((*n).clone());
    }
    let api: Api<Node> = Api::all(inner.client.clone());
    match inner.caller.call(format!("get node {name}"), || api.get_opt(name)).await {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err(ActError::Permanent(format!("node {name} does not exist"))),
        Err(e) => Err(act_error(e)),
    }
}

/// A Warning Event on the Node with the kernel's line; deterministic name, so
/// a replay (or another replica) finds it instead of raising a second one.
pub(super) async fn node_event(
    inner: &Inner,
    node: &str,
    incident: &Incident,
    index: usize,
) -> Result<StepOutcome, ActError> {
    let n = get_node(inner, node).await?;
    let index_s = index.to_string();
    let hash = fnv(&[&incident.key.node, &incident.key.boot, &incident.reason, &index_s]);
    let name = event_name(node, hash);
    let message = truncate(&incident.trigger_line, 1024).to_owned();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(inner.settings.event_namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_owned()),
            uid: n.metadata.uid.clone(),
            ..Default::default()
        },
        reason: Some(incident.reason.clone()),
        message: Some(message),
        type_: Some(if incident.trusted { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource { component: Some(inner.settings.component.clone()), host: None }),
        first_timestamp: Some(now()),
        last_timestamp: Some(now()),
        count: Some(1),
        reporting_component: Some(inner.settings.component.clone()),
        reporting_instance: Some(inner.leader.identity().to_owned()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(inner.client.clone(), &inner.settings.event_namespace);
    let dry = inner.settings.dry_run;
    let pp = post(dry);
    match inner.caller.call(format!("create event {name}"), || api.create(&pp, &event)).await {
        Ok(_) => done(format!("event {name} on node {node}")),
        Err(e) if e.is_already_exists() => done(format!("event {name} already raised")),
        Err(e) => Err(act_error(e)),
    }
}

/// Annotation recording the boot id a condition was set under (recovery compares it).
pub(super) fn condition_annotation(prefix: &str, condition_type: &str) -> String {
    format!("{prefix}/condition.{condition_type}")
}

/// Node condition `<type>=True` through the status subresource (strategic merge
/// by `type`: other conditions are untouched), after noting the boot id.
async fn node_condition(
    inner: &Inner,
    node: &str,
    incident: &Incident,
    condition_type: &str,
) -> Result<StepOutcome, ActError> {
    let n = get_node(inner, node).await?;
    let dry = inner.settings.dry_run;
    let api: Api<Node> = Api::all(inner.client.clone());
    let boot = n.status.as_ref().and_then(|s| s.node_info.as_ref()).map(|i| i.boot_id.clone()).unwrap_or_default();
    let key = condition_annotation(&inner.settings.annotation_prefix, condition_type);
    let has_note = n.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(&key));
    if !has_note {
        let p = json!({"metadata": {"annotations": {key.clone(): boot}}});
        let (pp, patch) = (patch_params(dry), Patch::Merge(&p));
        match inner.caller.call(format!("annotate node {node}"), || api.patch(node, &pp, &patch)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Err(ActError::Permanent(format!("node {node} does not exist"))),
            Err(e) => return Err(act_error(e)),
        }
    }
    let message = truncate(&incident.trigger_line, 1024);
    let status = json!({"status": {"conditions": [{
        "type": condition_type, "status": "True", "reason": incident.reason, "message": message,
        "lastHeartbeatTime": now(), "lastTransitionTime": now(),
    }]}});
    let (pp, patch) = (patch_params(dry), Patch::Strategic(&status));
    match inner
        .caller
        .call(format!("set condition {condition_type} on node {node}"), || api.patch_status(node, &pp, &patch))
        .await
    {
        Ok(_) => done(format!("condition {condition_type}=True on node {node}")),
        Err(e) if e.is_not_found() => Err(ActError::Permanent(format!("node {node} does not exist"))),
        Err(e) => Err(act_error(e)),
    }
}

fn pod_finished(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(|ph| ph == "Succeeded" || ph == "Failed")
}

/// The reason annotations, then a `DisruptionTarget` condition through
/// `/status`, on every pod of the node, `pod_concurrency` at a time.
async fn pod_reasons(inner: &Inner, node: &str, incident: &Incident) -> Result<StepOutcome, ActError> {
    let pods = inner.cache.pods_on(node);
    let sentence = termination_sentence(node, incident);
    let prefix = &inner.settings.annotation_prefix;
    let reason_key = format!("{prefix}/termination-reason");
    let code_key = format!("{prefix}/termination-reason-code");
    let total = pods.len();
    let results: Vec<Result<bool, CallError>> = futures::stream::iter(pods)
        .map(|pod| mark_pod(inner, pod, &reason_key, &code_key, &sentence, incident))
        .buffer_unordered(inner.settings.pod_concurrency)
        .collect()
        .await;
    let mut marked = 0usize;
    let mut first_err = None;
    for r in results {
        match r {
            Ok(true) => marked += 1,
            Ok(false) => {}
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
    }
    inner.stats.pods_marked.fetch_add(marked as u64, Ordering::Relaxed);
    if let Some(e) = first_err {
        // The step stays pending; the pods already marked are skipped next time.
        return Err(act_error(e));
    }
    done(format!("{marked} of {total} pods on node {node} given the termination reason"))
}

async fn mark_pod(
    inner: &Inner,
    pod: Arc<Pod>,
    reason_key: &str,
    code_key: &str,
    sentence: &str,
    incident: &Incident,
) -> Result<bool, CallError> {
    if pod_finished(&pod) {
        return Ok(false);
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(inner.client.clone(), &ns);
    let dry = inner.settings.dry_run;
    let annotations = pod.metadata.annotations.as_ref();
    let annotated = annotations.is_some_and(|a| {
        a.get(reason_key).map(String::as_str) == Some(sentence) && a.get(code_key) == Some(&incident.reason)
    });
    if !annotated {
        let p = json!({"metadata": {"annotations": {reason_key: sentence, code_key: incident.reason}}});
        let (pp, patch) = (patch_params(dry), Patch::Merge(&p));
        match inner.caller.call(format!("annotate pod {ns}/{name}"), || api.patch(&name, &pp, &patch)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    let conditioned = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "DisruptionTarget" && c.status == "True"));
    if !conditioned {
        let status = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": incident.reason,
            "message": sentence, "lastTransitionTime": now(),
        }]}});
        let (pp, patch) = (patch_params(dry), Patch::Strategic(&status));
        match inner
            .caller
            .call(format!("condition pod {ns}/{name}"), || api.patch_status(&name, &pp, &patch))
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(!(annotated && conditioned))
}

fn taint_matches(t: &k8s_openapi::api::core::v1::Taint, key: &str, effect: &str) -> bool {
    t.key == key && t.effect == effect
}

/// Adds our taint with a JSON patch guarded by a `test` of the resourceVersion,
/// so other taints are never clobbered; on a lost race, re-read and retry.
pub(super) async fn taint(inner: &Inner, node: &str, snapshot: Option<Node>) -> Result<StepOutcome, ActError> {
    let ts = &inner.settings.taint;
    let api: Api<Node> = Api::all(inner.client.clone());
    let dry = inner.settings.dry_run;
    // First try from the cached snapshot (fast path); on conflict read fresh from the API.
    let mut current = snapshot;
    for _ in 0..CONFLICT_RETRIES {
        let n = match current.take() {
            Some(n) => n,
            None => match inner.caller.call(format!("get node {node}"), || api.get_opt(node)).await {
                Ok(Some(n)) => n,
                Ok(None) => return Err(ActError::Permanent(format!("node {node} does not exist"))),
                Err(e) => return Err(act_error(e)),
            },
        };
        let spec = n.spec.as_ref();
        let taints = spec.and_then(|s| s.taints.as_ref());
        if taints.is_some_and(|ts2| ts2.iter().any(|t| taint_matches(t, &ts.key, &ts.effect))) {
            return done(format!("node {node} already has taint {}", ts.key));
        }
        let rv = n.metadata.resource_version.clone().unwrap_or_default();
        let taint = json!({"key": ts.key, "value": ts.value, "effect": ts.effect, "timeAdded": now()});
        let add = match (spec, taints) {
            (None, _) => json!({"op": "add", "path": "/spec", "value": {"taints": [taint]}}),
            (Some(_), None) => json!({"op": "add", "path": "/spec/taints", "value": [taint]}),
            (Some(_), Some(_)) => json!({"op": "add", "path": "/spec/taints/-", "value": taint}),
        };
        let ops = json!([{"op": "test", "path": "/metadata/resourceVersion", "value": rv}, add]);
        let patch: json_patch::Patch = serde_json::from_value(ops)
            .map_err(|e| ActError::Permanent(format!("building the taint patch: {e}")))?;
        let (pp, patch) = (patch_params(dry), Patch::<()>::Json(patch));
        match inner
            .caller
            .call(format!("taint node {node}"), || api.patch(node, &pp, &patch))
            .await
        {
            Ok(_) => return done(format!("tainted node {node} {}={}:{}", ts.key, ts.value, ts.effect)),
            Err(e) if e.is_conflict() => {
                inner.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(node, error = %e, "taint lost a race; re-reading the node");
            }
            Err(e) if e.is_not_found() => return Err(ActError::Permanent(format!("node {node} does not exist"))),
            Err(e) => return Err(act_error(e)),
        }
    }
    Err(ActError::Retryable(format!("taint of node {node}: still conflicting after {CONFLICT_RETRIES} tries")))
}

/// Removes our taint (same guarded JSON patch); true when one was removed.
pub(super) async fn untaint(inner: &Inner, node: &str) -> Result<bool, ActError> {
    let ts = &inner.settings.taint;
    let api: Api<Node> = Api::all(inner.client.clone());
    let dry = inner.settings.dry_run;
    for _ in 0..CONFLICT_RETRIES {
        let n = match inner.caller.call(format!("get node {node}"), || api.get_opt(node)).await {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(false),
            Err(e) => return Err(act_error(e)),
        };
        let taints = n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        let Some(i) = taints.iter().position(|t| taint_matches(t, &ts.key, &ts.effect)) else {
            return Ok(false);
        };
        let rv = n.metadata.resource_version.clone().unwrap_or_default();
        let ops = json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "remove", "path": format!("/spec/taints/{i}")},
        ]);
        let patch: json_patch::Patch = serde_json::from_value(ops)
            .map_err(|e| ActError::Permanent(format!("building the untaint patch: {e}")))?;
        let (pp, patch) = (patch_params(dry), Patch::<()>::Json(patch));
        match inner
            .caller
            .call(format!("untaint node {node}"), || api.patch(node, &pp, &patch))
            .await
        {
            Ok(_) => return Ok(true),
            Err(e) if e.is_conflict() => {
                inner.stats.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(act_error(e)),
        }
    }
    Err(ActError::Retryable(format!("untaint of node {node}: still conflicting after {CONFLICT_RETRIES} tries")))
}

/// Deletes every pod bound to the node with grace period 0. Lists from the
/// API rather than the cache: for deletion, completeness beats speed.
async fn delete_pods(inner: &Inner, node: &str) -> Result<StepOutcome, ActError> {
    let all: Api<Pod> = Api::all(inner.client.clone());
    let mut lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    if let Some(sel) = &inner.settings.pod_selector {
        lp = lp.labels(sel);
    }
    let list = inner.caller.call(format!("list pods on {node}"), || all.list(&lp)).await.map_err(act_error)?;
    let dry = inner.settings.dry_run;
    let total = list.items.len();
    let results: Vec<Result<(), CallError>> = futures::stream::iter(list.items)
        .map(|p| async move {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let name = p.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(inner.client.clone(), &ns);
            let dp = DeleteParams { grace_period_seconds: Some(0), dry_run: dry, ..Default::default() };
            match inner.caller.call(format!("delete pod {ns}/{name}"), || api.delete(&name, &dp)).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(inner.settings.pod_concurrency)
        .collect()
        .await;
    if let Some(e) = results.into_iter().find_map(Result::err) {
        return Err(act_error(e));
    }
    done(format!("deleted {total} pods on node {node} with grace 0"))
}

async fn delete_node(inner: &Inner, node: &str) -> Result<StepOutcome, ActError> {
    let api: Api<Node> = Api::all(inner.client.clone());
    let dp = DeleteParams { dry_run: inner.settings.dry_run, ..Default::default() };
    match inner.caller.call(format!("delete node {node}"), || api.delete(node, &dp)).await {
        Ok(_) => done(format!("deleted node {node}")),
        Err(e) if e.is_not_found() => done(format!("node {node} already gone")),
        Err(e) => Err(act_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_valid_and_stable() {
        let a = event_name("worker-1", fnv(&["node/worker-1", "relay/7", "KernelPanic", "0"]));
        let b = event_name("worker-1", fnv(&["node/worker-1", "relay/7", "KernelPanic", "0"]));
        let c = event_name("worker-1", fnv(&["node/worker-1", "relay/8", "KernelPanic", "0"]));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.starts_with("worker-1.") && a.len() == "worker-1.".len() + 16);
    }

    #[test]
    fn truncation_respects_utf8() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
