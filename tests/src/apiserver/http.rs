//! The REST surface: URL routing, list/watch streaming, writes, and errors
//! rendered as `Status` objects exactly where kube-rs expects them.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::select::Selector;
use super::store::{self, ApiError, Change, Part, Resource, Store};

/// Shared state of the HTTP handlers.
pub struct Shared {
    /// The object store.
    pub store: Arc<Store>,
    /// Successful writes that changed or would change state (not dry-run).
    pub writes: AtomicU64,
    /// Every request served.
    pub requests: AtomicU64,
    /// RBAC-shaped record of requests not marked as test seeding.
    pub audit: std::sync::Mutex<std::collections::BTreeSet<Access>>,
}

/// One kind of access, as RBAC sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    /// `get`, `list`, `watch`, `create`, `update`, `patch` or `delete`.
    pub verb: &'static str,
    /// API group (`""` for core).
    pub group: &'static str,
    /// `nodes`, `nodes/status`, ...
    pub resource: String,
    /// Namespace of the request, if any.
    pub namespace: Option<String>,
}

/// Header by which the test's own seeding client is kept out of the audit.
pub const SEED_HEADER: &str = "x-lastgasp-seed";

struct Target {
    res: &'static Resource,
    ns: Option<String>,
    name: Option<String>,
    status: bool,
}

fn route(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (ns, plural, tail) = match rest {
        ["namespaces", ns, plural, tail @ ..] if *plural != "status" => (Some((*ns).to_owned()), *plural, tail),
        [plural, tail @ ..] => (None, *plural, tail),
        [] => return None,
    };
    let res = store::resource(group, version, plural)?;
    if ns.is_some() && !res.namespaced {
        return None;
    }
    let (name, status) = match tail {
        [] => (None, false),
        [name] => (Some((*name).to_owned()), false),
        [name, "status"] if res.status_subresource => (Some((*name).to_owned()), true),
        _ => return None,
    };
    // A namespaced object is addressed through its namespace.
    if res.namespaced && ns.is_none() && name.is_some() {
        return None;
    }
    Some(Target { res, ns, name, status })
}

fn status_response(err: &ApiError, target: Option<&Target>) -> Response {
    let mut details = json!({});
    if let Some(t) = target {
        details = json!({"name": t.name.clone().unwrap_or_default(), "kind": t.res.plural});
        if !t.res.group.is_empty() {
            details["group"] = json!(t.res.group);
        }
    }
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": err.message, "reason": err.reason,
        "details": details, "code": err.code,
    });
    let code = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn is_true(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "true" || v == "1")
}

/// The single handler behind every URL.
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let Some(t) = route(uri.path()) else {
        let err = ApiError { code: 404, reason: "NotFound", message: format!("the server could not find the requested resource ({})", uri.path()) };
        return status_response(&err, None);
    };
    let dry_run = q.get("dryRun").is_some_and(|v| v == "All");
    if !headers.contains_key(SEED_HEADER) {
        let verb = match (&method, &t.name) {
            (&Method::GET, Some(_)) => "get",
            (&Method::GET, None) if is_true(&q, "watch") => "watch",
            (&Method::GET, None) => "list",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, _) => "delete",
            _ => "other",
        };
        let resource = if t.status { format!("{}/status", t.res.plural) } else { t.res.plural.to_owned() };
        if let Ok(mut audit) = shared.audit.lock() {
            audit.insert(Access { verb, group: t.res.group, resource, namespace: t.ns.clone() });
        }
    }
    let result = match (&method, &t.name) {
        (&Method::GET, Some(name)) => shared.store.get(t.res, t.ns.as_deref(), name).map(|v| (StatusCode::OK, v)),
        (&Method::GET, None) if is_true(&q, "watch") => return watch(&shared, &t, &q),
        (&Method::GET, None) => list(&shared, &t, &q),
        (&Method::POST, None) if !t.status => match serde_json::from_slice::<Value>(&body) {
            Ok(obj) => shared.store.create(t.res, t.ns.as_deref(), obj, dry_run).map(|v| (StatusCode::CREATED, v)),
            Err(e) => Err(ApiError { code: 400, reason: "BadRequest", message: format!("invalid body: {e}") }),
        },
        (&Method::PUT, Some(name)) => match serde_json::from_slice::<Value>(&body) {
            Ok(obj) => {
                let part = if t.status { Part::Status } else { Part::Main };
                shared.store.update(t.res, t.ns.as_deref(), name, part, dry_run, &|_| Ok(obj.clone())).map(|v| (StatusCode::OK, v))
            }
            Err(e) => Err(ApiError { code: 400, reason: "BadRequest", message: format!("invalid body: {e}") }),
        },
        (&Method::PATCH, Some(name)) => {
            let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            let part = if t.status { Part::Status } else { Part::Main };
            shared
                .store
                .update(t.res, t.ns.as_deref(), name, part, dry_run, &|cur| store::patched(ct, cur, &body))
                .map(|v| (StatusCode::OK, v))
        }
        (&Method::DELETE, Some(name)) if !t.status => delete(&shared, &t, name, &q, &body, dry_run),
        _ => Err(ApiError { code: 405, reason: "MethodNotAllowed", message: format!("{method} is not supported here") }),
    };
    match result {
        Ok((code, v)) => {
            if method != Method::GET && !dry_run {
                shared.writes.fetch_add(1, Ordering::Relaxed);
            }
            json_response(code, &v)
        }
        Err(e) => status_response(&e, Some(&t)),
    }
}

fn selectors(q: &HashMap<String, String>) -> Result<(Selector, Selector), ApiError> {
    let bad = |m: String| ApiError { code: 400, reason: "BadRequest", message: m };
    let labels = Selector::parse(q.get("labelSelector").map_or("", String::as_str)).map_err(bad)?;
    let fields = Selector::parse(q.get("fieldSelector").map_or("", String::as_str)).map_err(bad)?;
    Ok((labels, fields))
}

fn list(shared: &Shared, t: &Target, q: &HashMap<String, String>) -> Result<(StatusCode, Value), ApiError> {
    let (labels, fields) = selectors(q)?;
    let filter = |o: &Value| labels.matches_labels(o) && fields.matches_fields(o);
    let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|&l| l > 0);
    let token = q.get("continue").filter(|c| !c.is_empty()).map(|c| ContinueToken::decode(c)).transpose()?;
    let after = token.as_ref().map(|t| (t.ns.clone(), t.name.clone()));
    let (items, next, rv) = shared.store.list_page(t.res, t.ns.as_deref(), &filter, after.as_ref(), limit.unwrap_or(usize::MAX));
    // Every page carries the first page's resourceVersion, as the real apiserver's
    // do (its pages come from one snapshot; here later pages may be newer, which a
    // watch from that resourceVersion then replays).
    let rv = token.map_or(rv, |t| t.rv);
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some((ns, name)) = next {
        metadata["continue"] = json!(ContinueToken { rv, ns, name }.encode());
    }
    let list = json!({
        "apiVersion": t.res.api_version(), "kind": format!("{}List", t.res.kind),
        "metadata": metadata, "items": items,
    });
    Ok((StatusCode::OK, list))
}

/// Where a paged list goes on: opaque to clients (base64 of JSON), as the
/// real apiserver's tokens are.
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
}

impl ContinueToken {
    fn encode(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(text: &str) -> Result<Self, ApiError> {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| ApiError { code: 400, reason: "BadRequest", message: format!("invalid continue token {text:?}") })
    }
}

fn delete(
    shared: &Shared,
    t: &Target,
    name: &str,
    q: &HashMap<String, String>,
    body: &[u8],
    dry_run: bool,
) -> Result<(StatusCode, Value), ApiError> {
    let opts: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError { code: 400, reason: "BadRequest", message: format!("invalid DeleteOptions: {e}") })?
    };
    let grace = opts
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()));
    let dry_run = dry_run
        || opts.get("dryRun").and_then(Value::as_array).is_some_and(|d| d.iter().any(|x| x == "All"));
    let pre = opts.get("preconditions");
    let pre_uid = pre.and_then(|p| p.get("uid")).and_then(Value::as_str).map(str::to_owned);
    let pre_rv = pre.and_then(|p| p.get("resourceVersion")).and_then(Value::as_str).map(str::to_owned);
    let obj = shared.store.delete(t.res, t.ns.as_deref(), name, grace, (pre_uid, pre_rv), dry_run)?;
    let still_there = obj.pointer("/metadata/deletionTimestamp").is_some();
    if t.res.kind == "Pod" || still_there {
        // The pod registry returns the deleted object; so does any pending deletion.
        return Ok((StatusCode::OK, obj));
    }
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": name, "kind": t.res.plural, "uid": obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null)},
    });
    Ok((StatusCode::OK, status))
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn watch(shared: &Shared, t: &Target, q: &HashMap<String, String>) -> Response {
    let (labels, fields) = match selectors(q) {
        Ok(s) => s,
        Err(e) => return status_response(&e, Some(t)),
    };
    let since = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(rv) => match rv.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => {
                let e = ApiError { code: 400, reason: "BadRequest", message: format!("invalid resourceVersion {rv:?}") };
                return status_response(&e, Some(t));
            }
        },
    };
    let timeout = Duration::from_secs(q.get("timeoutSeconds").and_then(|s| s.parse().ok()).unwrap_or(300));
    let bookmarks = is_true(q, "allowWatchBookmarks");
    let res = t.res;
    let ns = t.ns.clone();
    let store = shared.store.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let selected = move |c: &Change| {
        c.res == res
            && ns.as_deref().is_none_or(|n| c.object.pointer("/metadata/namespace").and_then(Value::as_str) == Some(n))
            && labels.matches_labels(&c.object)
            && fields.matches_fields(&c.object)
    };
    tokio::spawn(async move {
        let (backlog, mut live, now_rv) = match store.watch_from(res, since) {
            Ok(w) => w,
            Err(e) => {
                // Like the real server: a 200 stream whose one event is an ERROR Status.
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": e.message, "reason": e.reason, "code": e.code});
                let _ = tx.send(Ok(event_line("ERROR", &status))).await;
                return;
            }
        };
        let mut last = now_rv;
        for c in backlog.iter().filter(|c| selected(c)) {
            if tx.send(Ok(event_line(c.kind, &c.object))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return,
                () = tx.closed() => return,
                msg = live.recv() => match msg {
                    Ok(c) if c.rv > last => {
                        last = c.rv;
                        if selected(&c) && tx.send(Ok(event_line(c.kind, &c.object))).await.is_err() { return; }
                    }
                    Ok(_) => {}
                    // Fell behind the broadcast: end the stream; the client resumes from `last`.
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
                },
                () = tokio::time::sleep(Duration::from_secs(2)), if bookmarks => {
                    let rv = last;
                    let mark = json!({"kind": res.kind, "apiVersion": res.api_version(),
                        "metadata": {"resourceVersion": rv.to_string()}});
                    if tx.send(Ok(event_line("BOOKMARK", &mark))).await.is_err() { return; }
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
