//! Object storage with the real apiserver's write semantics: resourceVersions,
//! optimistic concurrency, status subresources, graceful pod deletion,
//! admission defaults, and a bounded watch history so watches resume.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use super::patch::{self, PatchError};

/// One served resource type.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// API group, empty for the core group.
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// URL plural.
    pub plural: &'static str,
    /// Kind of one object.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether `status` is only writable through the `/status` subresource.
    pub status_subresource: bool,
}

impl Resource {
    /// `apiVersion` as written in objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// The resource types this server implements.
pub static RESOURCES: &[Resource] = &[
    Resource { group: "", version: "v1", plural: "nodes", kind: "Node", namespaced: false, status_subresource: true },
    Resource { group: "", version: "v1", plural: "pods", kind: "Pod", namespaced: true, status_subresource: true },
    Resource { group: "", version: "v1", plural: "events", kind: "Event", namespaced: true, status_subresource: false },
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        status_subresource: true,
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        status_subresource: false,
    },
];

/// Looks up a resource type by group, version and plural.
pub fn resource(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// A failure, rendered by the HTTP layer as a `Status` with this code and reason.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason` (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into() }
    }
    fn not_found(res: &Resource, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", res.plural))
    }
    fn conflict(res: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                res.plural
            ),
        )
    }
    /// 410: the requested resourceVersion is older than the watch history.
    pub fn expired(rv: u64) -> Self {
        Self::new(410, "Expired", format!("too old resource version: {rv}"))
    }
}

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The object itself: status changes are ignored (when there is a status subresource).
    Main,
    /// `/status`: only status changes are kept.
    Status,
}

/// One change, as a watch sees it.
#[derive(Debug)]
pub struct Change {
    /// resourceVersion after the change.
    pub rv: u64,
    /// Resource type.
    pub res: &'static Resource,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The object after the change (before, for DELETED, with the new RV).
    pub object: Value,
}

/// Where an object is stored: (namespace, or "" when cluster-scoped; name).
pub type Key = (String, String);

/// A watch's backlog, its live receiver, and the resourceVersion at the start.
pub type WatchStart = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>, u64);

struct State {
    rv: u64,
    uid: u64,
    objects: HashMap<&'static str, BTreeMap<Key, Value>>,
    history: VecDeque<Arc<Change>>,
    /// Oldest RV a watch may resume from; older gets 410 Gone.
    compacted: u64,
}

/// The store shared by all handlers.
pub struct Store {
    state: Mutex<State>,
    changes: broadcast::Sender<Arc<Change>>,
    history_cap: usize,
}

/// Timestamp in the API's RFC 3339 seconds format.
pub fn now_string() -> String {
    format_time(Timestamp::now())
}

fn format_time(t: Timestamp) -> String {
    k8s_openapi::jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", t).unwrap_or_default()
}

fn key_of(res: &Resource) -> &'static str {
    RESOURCES.iter().find(|r| *r == res).map_or("", |r| r.plural)
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(field)).and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let meta = &mut obj["metadata"];
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    match meta {
        Value::Object(m) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

impl Store {
    /// A store with the namespaces every cluster has.
    pub fn new(history_cap: usize) -> Arc<Self> {
        let (changes, _) = broadcast::channel(65_536);
        let store = Arc::new(Self {
            state: Mutex::new(State {
                rv: 1,
                uid: 0,
                objects: HashMap::new(),
                history: VecDeque::new(),
                compacted: 1,
            }),
            changes,
            history_cap,
        });
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let res = resource("", "v1", "namespaces");
            if let Some(res) = res {
                let _ = store.create(res, None, json!({"metadata": {"name": ns}}), false);
            }
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking handler must not take the whole server down with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every change from now on (a lagging receiver should rescan with [`list`](Self::list)).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// The current resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// Gets one object.
    pub fn get(&self, res: &'static Resource, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let st = self.lock();
        st.objects
            .get(key_of(res))
            .and_then(|m| m.get(&(ns.unwrap_or("").to_owned(), name.to_owned())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))
    }

    /// Lists objects matching `filter`, with the list's resourceVersion.
    pub fn list(&self, res: &'static Resource, ns: Option<&str>, filter: &dyn Fn(&Value) -> bool) -> (Vec<Value>, u64) {
        let (items, _, rv) = self.list_page(res, ns, filter, None, usize::MAX);
        (items, rv)
    }

    /// One page of a list (`limit`/`continue`, as the real apiserver pages):
    /// up to `limit` matching objects after the key `after`, in key order,
    /// the key of the last one when more match after it, and the
    /// resourceVersion.
    pub fn list_page(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        filter: &dyn Fn(&Value) -> bool,
        after: Option<&Key>,
        limit: usize,
    ) -> (Vec<Value>, Option<Key>, u64) {
        use std::ops::Bound;
        let st = self.lock();
        let Some(m) = st.objects.get(key_of(res)) else { return (Vec::new(), None, st.rv) };
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut matching = m
            .range::<Key, _>((from, Bound::Unbounded))
            .filter(|((ons, _), v)| ns.is_none_or(|n| n == ons) && filter(v));
        let items: Vec<(&Key, &Value)> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        let next = if more { items.last().map(|(k, _)| (*k).clone()) } else { None };
        (items.into_iter().map(|(_, v)| v.clone()).collect(), next, st.rv)
    }

    /// Starts a watch: the changes after `since` (or synthetic ADDED events for
    /// every object when `since` is None), plus a live receiver, taken under one
    /// lock so nothing falls between them.
    pub fn watch_from(
        &self,
        res: &'static Resource,
        since: Option<u64>,
    ) -> Result<WatchStart, ApiError> {
        let st = self.lock();
        let rx = self.changes.subscribe();
        let backlog = match since {
            Some(rv) if rv < st.compacted => return Err(ApiError::expired(rv)),
            Some(rv) => st.history.iter().filter(|c| c.rv > rv && c.res == res).cloned().collect(),
            None => st
                .objects
                .get(key_of(res))
                .map(|m| {
                    m.values()
                        .map(|o| {
                            let rv = meta_str(o, "resourceVersion").and_then(|s| s.parse().ok()).unwrap_or(0);
                            Arc::new(Change { rv, res, kind: "ADDED", object: o.clone() })
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        Ok((backlog, rx, st.rv))
    }

    fn commit(&self, st: &mut State, res: &'static Resource, kind: &'static str, mut obj: Value) -> Value {
        st.rv += 1;
        let rv = st.rv;
        meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let ns = meta_str(&obj, "namespace").unwrap_or("").to_owned();
        let name = meta_str(&obj, "name").unwrap_or("").to_owned();
        let map = st.objects.entry(key_of(res)).or_default();
        if kind == "DELETED" {
            map.remove(&(ns, name));
        } else {
            map.insert((ns, name), obj.clone());
        }
        let change = Arc::new(Change { rv, res, kind, object: obj.clone() });
        st.history.push_back(change.clone());
        while st.history.len() > self.history_cap {
            if let Some(old) = st.history.pop_front() {
                st.compacted = old.rv;
            }
        }
        // No receiver is fine: nobody is watching.
        let _ = self.changes.send(change);
        obj
    }

    /// Creates an object, applying admission defaults.
    pub fn create(&self, res: &'static Resource, ns: Option<&str>, mut obj: Value, dry_run: bool) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::new(400, "BadRequest", "body must be a JSON object"));
        }
        let mut st = self.lock();
        if let Some(ns) = ns {
            let exists = st
                .objects
                .get("namespaces")
                .is_some_and(|m| m.contains_key(&(String::new(), ns.to_owned())));
            if !exists {
                return Err(ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found")));
            }
        }
        st.uid += 1;
        let uid = st.uid;
        let m = meta_mut(&mut obj);
        let name = match (m.get("name").and_then(Value::as_str), m.get("generateName").and_then(Value::as_str)) {
            (Some(n), _) if !n.is_empty() => n.to_owned(),
            (_, Some(g)) => format!("{g}{:05x}", uid & 0xfffff),
            _ => return Err(ApiError::new(422, "Invalid", "metadata.name: Required value")),
        };
        if let Some(body_ns) = m.get("namespace").and_then(Value::as_str) {
            if ns.is_some_and(|n| n != body_ns) {
                return Err(ApiError::new(400, "BadRequest", "the namespace of the object does not match the request"));
            }
        }
        m.insert("name".into(), Value::String(name.clone()));
        if let Some(ns) = ns {
            m.insert("namespace".into(), Value::String(ns.to_owned()));
        }
        m.insert("uid".into(), Value::String(format!("00000000-0000-4000-8000-{uid:012x}")));
        m.insert("creationTimestamp".into(), Value::String(now_string()));
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        if let Some(o) = obj.as_object_mut() {
            o.insert("apiVersion".into(), Value::String(res.api_version()));
            o.insert("kind".into(), Value::String(res.kind.to_owned()));
        }
        admit_create(res, &mut obj);
        let key = (ns.unwrap_or("").to_owned(), name.clone());
        if st.objects.get(key_of(res)).is_some_and(|m| m.contains_key(&key)) {
            return Err(ApiError::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", res.plural)));
        }
        if dry_run {
            return Ok(obj);
        }
        Ok(self.commit(&mut st, res, "ADDED", obj))
    }

    /// Replaces (PUT) or patches an object. `change` computes the desired object
    /// from the current one; the subresource rules are applied afterwards.
    pub fn update(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        name: &str,
        part: Part,
        dry_run: bool,
        change: &dyn Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let mut st = self.lock();
        let key = (ns.unwrap_or("").to_owned(), name.to_owned());
        let current = st
            .objects
            .get(key_of(res))
            .and_then(|m| m.get(&key))
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))?;
        let mut desired = change(&current)?;
        if !desired.is_object() {
            return Err(ApiError::new(400, "BadRequest", "body must be a JSON object"));
        }
        // A resourceVersion in the new object is a precondition.
        let cur_rv = meta_str(&current, "resourceVersion").unwrap_or("");
        match meta_str(&desired, "resourceVersion") {
            Some(rv) if !rv.is_empty() && rv != cur_rv => return Err(ApiError::conflict(res, name)),
            _ => {}
        }
        if meta_str(&desired, "name") != Some(name) || meta_str(&desired, "namespace") != meta_str(&current, "namespace") {
            return Err(ApiError::new(400, "BadRequest", "the name or namespace of the object does not match the request"));
        }
        // Immutable and server-owned metadata.
        for field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"] {
            let m = meta_mut(&mut desired);
            match current.get("metadata").and_then(|cm| cm.get(field)) {
                Some(v) => m.insert(field.into(), v.clone()),
                None => m.remove(field),
            };
        }
        if let Some(o) = desired.as_object_mut() {
            o.insert("apiVersion".into(), Value::String(res.api_version()));
            o.insert("kind".into(), Value::String(res.kind.to_owned()));
        }
        if res.status_subresource {
            apply_part_rules(part, &current, &mut desired);
        }
        meta_mut(&mut desired).insert("resourceVersion".into(), Value::String(cur_rv.to_owned()));
        if desired == current || dry_run {
            // A no-op write keeps the resourceVersion and notifies nobody.
            return Ok(desired);
        }
        Ok(self.commit(&mut st, res, "MODIFIED", desired))
    }

    /// Deletes an object, with the graceful rules of pods and finalizers.
    pub fn delete(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        name: &str,
        grace: Option<i64>,
        preconditions: (Option<String>, Option<String>),
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut st = self.lock();
        let key = (ns.unwrap_or("").to_owned(), name.to_owned());
        let current = st
            .objects
            .get(key_of(res))
            .and_then(|m| m.get(&key))
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))?;
        let (pre_uid, pre_rv) = preconditions;
        if pre_uid.is_some_and(|u| Some(u.as_str()) != meta_str(&current, "uid"))
            || pre_rv.is_some_and(|r| Some(r.as_str()) != meta_str(&current, "resourceVersion"))
        {
            return Err(ApiError::conflict(res, name));
        }
        let has_finalizers = meta(&current)
            .and_then(|m| m.get("finalizers"))
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        let graceful = res.kind == "Pod" && pod_deletes_gracefully(&current, grace);
        if graceful || has_finalizers {
            if meta_str(&current, "deletionTimestamp").is_some() {
                return Ok(current);
            }
            let secs = if graceful { pod_grace(&current, grace) } else { 0 };
            let mut obj = current.clone();
            let at = Timestamp::now()
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs))
                .unwrap_or_else(|_| Timestamp::now());
            let m = meta_mut(&mut obj);
            m.insert("deletionTimestamp".into(), Value::String(format_time(at)));
            m.insert("deletionGracePeriodSeconds".into(), json!(secs));
            if dry_run {
                return Ok(obj);
            }
            return Ok(self.commit(&mut st, res, "MODIFIED", obj));
        }
        if dry_run {
            return Ok(current);
        }
        if res.kind == "Namespace" {
            // The namespace controller's work, done at once: everything inside goes.
            for r in RESOURCES.iter().filter(|r| r.namespaced) {
                let inside: Vec<Value> = st
                    .objects
                    .get(key_of(r))
                    .map(|m| m.iter().filter(|((n, _), _)| n == name).map(|(_, v)| v.clone()).collect())
                    .unwrap_or_default();
                for obj in inside {
                    self.commit(&mut st, r, "DELETED", obj);
                }
            }
        }
        Ok(self.commit(&mut st, res, "DELETED", current))
    }
}

/// The apiserver deletes a pod gracefully only when a kubelet has to stop it:
/// it is bound to a node, not finished, and the grace period is not zero.
fn pod_deletes_gracefully(pod: &Value, grace: Option<i64>) -> bool {
    let bound = pod.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
    let finished = phase == "Succeeded" || phase == "Failed";
    bound && !finished && pod_grace(pod, grace) != 0
}

fn pod_grace(pod: &Value, grace: Option<i64>) -> i64 {
    grace
        .or_else(|| pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
        .unwrap_or(30)
        .max(0)
}

/// Admission and create-strategy defaults of the real apiserver.
fn admit_create(res: &Resource, obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else { return };
    match res.kind {
        "Node" => {
            // TaintNodesByCondition: a new node is not ready until its kubelet says so.
            let spec = o.entry("spec").or_insert_with(|| json!({}));
            if !spec.is_object() {
                *spec = json!({});
            }
            if let Some(spec) = spec.as_object_mut() {
                let taints = spec.entry("taints").or_insert_with(|| json!([]));
                if let Some(list) = taints.as_array_mut() {
                    let present = list.iter().any(|t| {
                        t.get("key").and_then(Value::as_str) == Some("node.kubernetes.io/not-ready")
                            && t.get("effect").and_then(Value::as_str) == Some("NoSchedule")
                    });
                    if !present {
                        list.push(json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}));
                    }
                }
            }
        }
        "Pod" => {
            // The pod create strategy discards any client-supplied status.
            o.insert("status".into(), json!({"phase": "Pending"}));
            let spec = o.entry("spec").or_insert_with(|| json!({}));
            if let Some(spec) = spec.as_object_mut() {
                spec.entry("terminationGracePeriodSeconds").or_insert(json!(30));
                spec.entry("restartPolicy").or_insert(json!("Always"));
                spec.entry("schedulerName").or_insert(json!("default-scheduler"));
            }
        }
        "Namespace" => {
            o.insert("status".into(), json!({"phase": "Active"}));
            let spec = o.entry("spec").or_insert_with(|| json!({}));
            if let Some(spec) = spec.as_object_mut() {
                spec.entry("finalizers").or_insert(json!(["kubernetes"]));
            }
        }
        _ => {}
    }
}

/// Writes through the main resource keep the old status; writes through
/// `/status` keep the old spec and the old user metadata.
fn apply_part_rules(part: Part, current: &Value, desired: &mut Value) {
    let Some(d) = desired.as_object_mut() else { return };
    match part {
        Part::Main => match current.get("status") {
            Some(s) => {
                d.insert("status".into(), s.clone());
            }
            None => {
                d.remove("status");
            }
        },
        Part::Status => {
            match current.get("spec") {
                Some(v) => d.insert("spec".into(), v.clone()),
                None => d.remove("spec"),
            };
            for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
                let m = meta_mut(desired);
                match current.get("metadata").and_then(|cm| cm.get(field)) {
                    Some(v) => m.insert(field.into(), v.clone()),
                    None => m.remove(field),
                };
            }
        }
    }
}

/// Applies a patch body, mapping its failures onto API errors.
pub fn patched(content_type: &str, current: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let mut obj = current.clone();
    patch::apply(content_type, &mut obj, body).map_err(|e| match e {
        PatchError::Malformed(m) => ApiError::new(400, "BadRequest", m),
        PatchError::NotApplicable(m) => ApiError::new(422, "Invalid", m),
        PatchError::UnsupportedType(t) => {
            ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {t})"))
        }
    })?;
    Ok(obj)
}
