//! Kubernetes: resolve the Node an incident came from, act on it, and undo it
//! when the node comes back.
//!
//! - [`resolve`]: a watch-backed cache (kube-runtime reflectors on Nodes and on
//!   Pods, indexed by `spec.nodeName`) and the resolver over it.
//! - [`KubeActuator`]: the [`Actuator`](crate::act::Actuator) that executes one
//!   journaled step (Event, node condition, pod reasons, taint, deletions).
//!   Every step is idempotent, so a replay after a crash does no harm.
//! - [`recover`]: a Ready node with a new `status.nodeInfo.bootID` gets its
//!   condition cleared and our taint removed.
//! - [`leader`]: Lease-based leader election; only the leader acts.
//! - [`call`]: rate limits, timeouts and retries around every API call.
//!
//! Dry-run sends every write with `dryRun=All`: the API server checks it
//! (RBAC, validation) and persists nothing.
mod act;
pub mod call;
pub mod leader;
pub mod recover;
pub mod resolve;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::act::{ActError, ActFuture, Actuator, ActuatorStat, Incident, Step, StepOutcome};
use call::{CallSettings, Caller};
use leader::{LeaderSettings, Leadership};
use resolve::Cache;

/// The taint the `taint` policy adds (default: out-of-service, as for a node shutdown).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TaintSettings {
    /// Taint key.
    pub key: String,
    /// Taint value.
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

impl Default for TaintSettings {
    fn default() -> Self {
        Self {
            key: "node.kubernetes.io/out-of-service".into(),
            value: "nodeshutdown".into(),
            effect: "NoExecute".into(),
        }
    }
}

/// Settings of the Kubernetes side (`[kube]` in the bridge's config).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KubeSettings {
    /// Send every write with `dryRun=All` (nothing is persisted).
    pub dry_run: bool,
    /// Prefix of our annotations: `<prefix>/termination-reason`, `<prefix>/bmc-address`, ...
    pub annotation_prefix: String,
    /// Sustained API requests per second.
    pub qps: f64,
    /// API requests allowed in a burst.
    pub burst: u32,
    /// Timeout of one API call attempt, in milliseconds.
    pub call_timeout_ms: u64,
    /// First retry delay, in milliseconds.
    pub backoff_initial_ms: u64,
    /// Largest retry delay, in milliseconds.
    pub backoff_max_ms: u64,
    /// Stop retrying one call after this long, ms; the step then stays pending in the
    /// journal and the runner retries it. Keep it below `act.step_timeout`.
    pub retry_budget_ms: u64,
    /// Pods worked on concurrently within one step.
    pub pod_concurrency: usize,
    /// Only watch (and act on) pods matching this label selector.
    pub pod_selector: Option<String>,
    /// Raise Events for incidents from untrusted sources (off: they cause no writes at all).
    pub untrusted_events: bool,
    /// Namespace of Events about Nodes (cluster-scoped objects): `default`, as kubelet does.
    pub event_namespace: String,
    /// `source.component` / `reportingComponent` of our Events.
    pub component: String,
    /// The taint of the `taint` policy.
    pub taint: TaintSettings,
    /// Lease-based leader election; without it this replica always acts.
    pub leader_election: Option<LeaderSettings>,
    /// Kubeconfig file (default: `$KUBECONFIG`, `~/.kube/config`, then in-cluster).
    pub kubeconfig: Option<std::path::PathBuf>,
}

impl Default for KubeSettings {
    fn default() -> Self {
        Self {
            dry_run: false,
            annotation_prefix: "lastgasp.dev".into(),
            qps: 200.0,
            burst: 400,
            call_timeout_ms: 5_000,
            backoff_initial_ms: 100,
            backoff_max_ms: 5_000,
            retry_budget_ms: 8_000,
            pod_concurrency: 32,
            pod_selector: None,
            untrusted_events: false,
            event_namespace: "default".into(),
            component: "lastgasp-host-bridge".into(),
            taint: TaintSettings::default(),
            leader_election: None,
            kubeconfig: None,
        }
    }
}

fn valid_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl KubeSettings {
    /// Checks values that would only fail later, at the worst moment.
    pub fn validate(&self) -> Result<(), String> {
        if !valid_dns_subdomain(&self.annotation_prefix) {
            return Err(format!("annotation_prefix {:?} is not a DNS subdomain", self.annotation_prefix));
        }
        if !(self.qps.is_finite() && self.qps > 0.0) {
            return Err(format!("qps must be > 0, not {}", self.qps));
        }
        if self.burst == 0 {
            return Err("burst must be at least 1".into());
        }
        if self.call_timeout_ms == 0 || self.backoff_initial_ms == 0 || self.backoff_max_ms < self.backoff_initial_ms {
            return Err("need call_timeout_ms > 0 and 0 < backoff_initial_ms <= backoff_max_ms".into());
        }
        if self.pod_concurrency == 0 {
            return Err("pod_concurrency must be at least 1".into());
        }
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&self.taint.effect.as_str()) {
            return Err(format!("taint.effect {:?} is not NoSchedule, PreferNoSchedule or NoExecute", self.taint.effect));
        }
        if self.taint.key.is_empty() {
            return Err("taint.key must not be empty".into());
        }
        if let Some(le) = &self.leader_election {
            le.validate()?;
        }
        Ok(())
    }

    fn call_settings(&self) -> CallSettings {
        CallSettings {
            qps: self.qps,
            burst: self.burst,
            timeout: Duration::from_millis(self.call_timeout_ms),
            backoff_initial: Duration::from_millis(self.backoff_initial_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            retry_budget: Duration::from_millis(self.retry_budget_ms),
        }
    }
}

/// Counters of the Kubernetes side, for metrics.
#[derive(Debug, Default)]
pub struct KubeStats {
    /// API call attempts.
    pub api_calls: AtomicU64,
    /// Attempts retried after a transient failure.
    pub api_retries: AtomicU64,
    /// Calls that finally failed.
    pub api_errors: AtomicU64,
    /// Calls that waited for the rate limiter.
    pub rate_limited: AtomicU64,
    /// Optimistic-concurrency conflicts (409, or 422 from a failed `test`) retried.
    pub conflicts: AtomicU64,
    /// Incidents whose sender resolved to no Node.
    pub unknown_senders: AtomicU64,
    /// Incidents whose sender matched several Nodes.
    pub ambiguous_senders: AtomicU64,
    /// Steps completed (including no-ops because already done).
    pub steps_done: AtomicU64,
    /// Steps skipped because the source is untrusted.
    pub steps_skipped_untrusted: AtomicU64,
    /// Steps deferred because this replica is not the leader.
    pub steps_not_leader: AtomicU64,
    /// Pods annotated and conditioned.
    pub pods_marked: AtomicU64,
    /// Nodes recovered (condition cleared, taint removed).
    pub recoveries: AtomicU64,
}

impl KubeStats {
    /// Every counter as (metric name, help, value), for the metrics endpoint.
    pub fn counters(&self) -> [(&'static str, &'static str, u64); 12] {
        use std::sync::atomic::Ordering::Relaxed;
        [
            ("kube_api_calls", "Kubernetes API call attempts", self.api_calls.load(Relaxed)),
            ("kube_api_retries", "Kubernetes API attempts retried after a transient failure", self.api_retries.load(Relaxed)),
            ("kube_api_errors", "Kubernetes API calls that finally failed", self.api_errors.load(Relaxed)),
            ("kube_rate_limited", "Kubernetes API calls that waited for the rate limiter", self.rate_limited.load(Relaxed)),
            ("kube_conflicts", "Optimistic-concurrency conflicts retried", self.conflicts.load(Relaxed)),
            ("kube_unknown_senders", "Incidents whose sender resolved to no Node", self.unknown_senders.load(Relaxed)),
            ("kube_ambiguous_senders", "Incidents whose sender matched several Nodes", self.ambiguous_senders.load(Relaxed)),
            ("kube_steps_done", "Action steps completed", self.steps_done.load(Relaxed)),
            ("kube_steps_skipped_untrusted", "Action steps skipped for an untrusted source", self.steps_skipped_untrusted.load(Relaxed)),
            ("kube_steps_not_leader", "Action steps deferred: not the leader", self.steps_not_leader.load(Relaxed)),
            ("kube_pods_marked", "Pods given a termination reason", self.pods_marked.load(Relaxed)),
            ("kube_recoveries", "Nodes recovered after a reboot", self.recoveries.load(Relaxed)),
        ]
    }
}

pub(crate) struct Inner {
    pub(crate) client: ::kube::Client,
    pub(crate) settings: KubeSettings,
    pub(crate) caller: Arc<Caller>,
    pub(crate) cache: Cache,
    pub(crate) leader: Leadership,
    pub(crate) stats: Arc<KubeStats>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The Kubernetes actuator: resolves the node and executes journaled steps.
/// Cloning shares everything.
#[derive(Clone)]
pub struct KubeActuator {
    inner: Arc<Inner>,
}

impl KubeActuator {
    /// Validates the settings, connects, and starts the reflectors, the
    /// recoverer and (when configured) leader election on the current runtime.
    pub fn start(config: ::kube::Config, settings: KubeSettings) -> Result<Self, String> {
        settings.validate()?;
        let client = ::kube::Client::try_from(config).map_err(|e| format!("kubernetes client: {e}"))?;
        let stats = Arc::new(KubeStats::default());
        let caller = Arc::new(Caller::new(settings.call_settings(), stats.clone()));
        let (cache, mut tasks) =
            Cache::start(client.clone(), &settings.annotation_prefix, settings.pod_selector.as_deref(), stats.clone());
        let leader = match &settings.leader_election {
            Some(le) => {
                let (leadership, task) = leader::start(client.clone(), le, caller.clone());
                tasks.push(task);
                leadership
            }
            None => Leadership::always(),
        };
        let inner = Arc::new(Inner { client, settings, caller, cache, leader, stats, tasks: Mutex::new(Vec::new()) });
        tasks.push(recover::start(inner.clone()));
        if let Ok(mut t) = inner.tasks.lock() {
            t.extend(tasks);
        }
        Ok(Self { inner })
    }

    /// Loads the cluster configuration (`kubeconfig`, else inferred: `$KUBECONFIG`,
    /// `~/.kube/config`, in-cluster) and [starts](Self::start).
    pub async fn connect(settings: KubeSettings) -> Result<Self, String> {
        let config = match &settings.kubeconfig {
            Some(path) => {
                let kc = ::kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
                ::kube::Config::from_custom_kubeconfig(kc, &::kube::config::KubeConfigOptions::default())
                    .await
                    .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
            }
            None => ::kube::Config::infer().await.map_err(|e| format!("no cluster configuration: {e}"))?,
        };
        Self::start(config, settings)
    }

    /// The node/pod cache (and the unknown senders it recorded).
    pub fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    /// Counters.
    pub fn stats(&self) -> &Arc<KubeStats> {
        &self.inner.stats
    }

    /// Leadership as this replica sees it.
    pub fn leadership(&self) -> &Leadership {
        &self.inner.leader
    }

    /// Stops the background tasks (reflectors, election, recovery): this
    /// replica stops renewing its Lease and acting.
    pub fn shutdown(&self) {
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }

    /// The taint step, starting from `snapshot` of the node (which may be stale:
    /// the guarded patch then loses the race, re-reads and retries).
    pub async fn taint_from_snapshot(&self, node: &str, snapshot: k8s_openapi::api::core::v1::Node) -> Result<StepOutcome, ActError> {
        act::taint(&self.inner, node, Some(snapshot)).await
    }

    /// Executes one step; see [`Actuator::execute`].
    pub async fn run_step(&self, incident: &Incident, index: usize, step: &Step) -> Result<StepOutcome, ActError> {
        act::run_step(&self.inner, incident, index, step).await
    }
}

impl Actuator for KubeActuator {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn execute<'a>(&'a self, incident: &'a Incident, index: usize, step: &'a Step) -> ActFuture<'a> {
        Box::pin(self.run_step(incident, index, step))
    }

    fn stats(&self) -> Vec<ActuatorStat> {
        let mut out: Vec<ActuatorStat> = self
            .inner
            .stats
            .counters()
            .into_iter()
            .map(|(name, help, value)| ActuatorStat { name, help, gauge: false, value })
            .collect();
        out.push(ActuatorStat {
            name: "kube_leader",
            help: "1 while this replica holds the leader Lease (or runs without election)",
            gauge: true,
            value: u64::from(self.inner.leader.is_leader()),
        });
        out
    }
}
