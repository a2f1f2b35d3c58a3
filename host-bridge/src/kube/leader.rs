//! Lease-based leader election (coordination.k8s.io/v1), client-go's algorithm:
//! a replica takes the Lease when its holder has not renewed it for a whole
//! lease duration *as observed locally* (no trust in other clocks), and every
//! write carries the Lease's resourceVersion, so two replicas never both win.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use ::kube::api::{Api, Patch, PatchParams, PostParams};
use ::kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::call::Caller;

/// Leader election settings.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LeaderSettings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (default: `$POD_NAME`, else the host name, plus the pid).
    pub identity: Option<String>,
    /// How long a holder's last renewal counts, in milliseconds.
    pub lease_duration_ms: u64,
    /// A leader that cannot renew for this long stops acting, in milliseconds.
    pub renew_deadline_ms: u64,
    /// How often to try to acquire or renew, in milliseconds.
    pub retry_period_ms: u64,
}

impl Default for LeaderSettings {
    fn default() -> Self {
        Self {
            namespace: "lastgasp".into(),
            name: "lastgasp-host-bridge".into(),
            identity: None,
            lease_duration_ms: 15_000,
            renew_deadline_ms: 10_000,
            retry_period_ms: 2_000,
        }
    }
}

impl LeaderSettings {
    /// Checks the timing relations client-go also insists on.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.namespace.is_empty() {
            return Err("leader_election: namespace and name must not be empty".into());
        }
        if !(self.retry_period_ms > 0
            && self.retry_period_ms < self.renew_deadline_ms
            && self.renew_deadline_ms < self.lease_duration_ms)
        {
            return Err("leader_election: need 0 < retry_period_ms < renew_deadline_ms < lease_duration_ms".into());
        }
        Ok(())
    }

    /// The identity to hold the Lease under.
    pub fn resolved_identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| "host-bridge".into());
            format!("{host}_{}", std::process::id())
        })
    }
}

/// Running election; [`Leadership::is_leader`] is what the actuator consults.
#[derive(Clone)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
    identity: Arc<str>,
}

impl Leadership {
    /// Leadership that is always held (no election configured).
    pub fn always() -> Self {
        // A dropped sender keeps its last value: `true` for good.
        let (_, rx) = watch::channel(true);
        Self { rx, identity: Arc::from("single") }
    }

    /// Whether this replica currently leads.
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until this replica leads.
    pub async fn wait_leader(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|l| *l).await;
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }
}

/// Starts the election loop; abort the returned task to stop competing.
pub fn start(client: Client, settings: &LeaderSettings, caller: Arc<Caller>) -> (Leadership, JoinHandle<()>) {
    let identity: Arc<str> = Arc::from(settings.resolved_identity());
    let (tx, rx) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    let s = settings.clone();
    let me = identity.clone();
    // In a pod, label it with its leadership so the ingest Service can select the leader.
    let own_pod = match (std::env::var("POD_NAMESPACE"), std::env::var("POD_NAME")) {
        (Ok(ns), Ok(name)) if !ns.is_empty() && !name.is_empty() => Some((Api::<Pod>::namespaced(client.clone(), &ns), name)),
        _ => None,
    };
    let task = tokio::spawn(async move {
        let lease_duration = Duration::from_millis(s.lease_duration_ms);
        let renew_deadline = Duration::from_millis(s.renew_deadline_ms);
        let retry = Duration::from_millis(s.retry_period_ms);
        // What we last saw of the holder, and when we saw it change (local clock).
        let mut observed: Option<(Option<String>, Option<MicroTime>)> = None;
        let mut observed_at = Instant::now();
        let mut last_renew: Option<Instant> = None;
        let mut labelled = false;
        loop {
            let was = *tx.borrow();
            let outcome = try_once(&api, &caller, &s.name, &me, lease_duration, &mut observed, &mut observed_at).await;
            let now = Instant::now();
            match outcome {
                Ok(true) => {
                    last_renew = Some(now);
                    if !*tx.borrow() {
                        tracing::info!(identity = %me, lease = %s.name, "became leader");
                    }
                    tx.send_replace(true);
                }
                Ok(false) => {
                    if *tx.borrow() {
                        tracing::warn!(identity = %me, "lost leadership");
                    }
                    tx.send_replace(false);
                }
                Err(e) => {
                    // Keep leading through short API trouble, but never past the renew deadline.
                    let stale = last_renew.is_none_or(|t| now.duration_since(t) > renew_deadline);
                    if stale && *tx.borrow() {
                        tracing::warn!(identity = %me, error = %e, "cannot renew the lease; stepping down");
                        tx.send_replace(false);
                    }
                }
            }
            let is = *tx.borrow();
            if let Some((pods, name)) = own_pod.as_ref().filter(|_| was != is || !labelled) {
                labelled = label_leader(pods, name, is, &caller).await;
            }
            tokio::time::sleep(retry).await;
        }
    });
    (Leadership { rx, identity }, task)
}

/// Label key on the replica's own pod: `"true"` on the leader.
pub const LEADER_LABEL: &str = "lastgasp.dev/leader";

async fn label_leader(pods: &Api<Pod>, name: &str, leader: bool, caller: &Caller) -> bool {
    let p = serde_json::json!({"metadata": {"labels": {LEADER_LABEL: if leader { "true" } else { "false" }}}});
    let (pp, patch) = (PatchParams::default(), Patch::Merge(&p));
    match caller.call(format!("label pod {name}"), || pods.patch(name, &pp, &patch)).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(pod = name, error = %e, "cannot label own pod with its leadership");
            false
        }
    }
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// One round: returns whether we hold the Lease afterwards.
async fn try_once(
    api: &Api<Lease>,
    caller: &Caller,
    name: &str,
    me: &str,
    lease_duration: Duration,
    observed: &mut Option<(Option<String>, Option<MicroTime>)>,
    observed_at: &mut Instant,
) -> Result<bool, super::call::CallError> {
    let current = match caller.call("get lease", || api.get_opt(name)).await? {
        Some(l) => l,
        None => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.to_owned()),
                    lease_duration_seconds: Some(i32::try_from(lease_duration.as_secs().max(1)).unwrap_or(15)),
                    acquire_time: Some(now_micro()),
                    renew_time: Some(now_micro()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            let pp = PostParams::default();
            return match caller.call("create lease", || api.create(&pp, &lease)).await {
                Ok(_) => Ok(true),
                Err(e) if e.is_already_exists() || e.is_conflict() => Ok(false),
                Err(e) => Err(e),
            };
        }
    };
    let spec = current.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let seen = (holder.clone(), spec.renew_time.clone());
    if observed.as_ref() != Some(&seen) {
        *observed = Some(seen);
        *observed_at = Instant::now();
    }
    let mine = holder.as_deref() == Some(me);
    let expired = holder.is_none() || observed_at.elapsed() > lease_duration;
    if !mine && !expired {
        return Ok(false);
    }
    let mut next = current.clone();
    let mut nspec = spec.clone();
    if !mine {
        nspec.holder_identity = Some(me.to_owned());
        nspec.acquire_time = Some(now_micro());
        nspec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    nspec.renew_time = Some(now_micro());
    nspec.lease_duration_seconds = Some(i32::try_from(lease_duration.as_secs().max(1)).unwrap_or(15));
    next.spec = Some(nspec);
    // `replace` carries the resourceVersion we read: a concurrent writer makes this 409.
    let pp = PostParams::default();
    match caller.call("update lease", || api.replace(name, &pp, &next)).await {
        Ok(l) => {
            let s = l.spec.unwrap_or_default();
            *observed = Some((s.holder_identity, s.renew_time));
            *observed_at = Instant::now();
            Ok(true)
        }
        Err(e) if e.is_conflict() => Ok(false),
        Err(e) => Err(e),
    }
}
