//! Act: the seam between the journal and whatever carries out an incident's steps.
//!
//! # Contract
//!
//! The bridge journals every [`Incident`] (redb, fsynced) **before** any action, together with its
//! planned [`Step`]s (from [`plan`]). The act runner then calls [`Actuator::execute`] once per
//! pending step, **in plan order**, and records each step's completion in the journal right after
//! `execute` returns `Ok`. After a crash or SIGKILL the runner resumes every pending step of every
//! incident on startup.
//!
//! What an actuator gets, per call:
//! - the incident as currently journaled: node hint ([`NodeHint`]: UDP source address, relay id,
//!   keyring node name), `kind`/`reason`, `severity` (Event / Condition / Fatal), the kernel's
//!   `trigger_line`, `certainty`, `trusted`, `context_before` and `context_after` (the latter may
//!   still be growing when the first steps run: acting fast beats waiting for context);
//! - the step's index in the plan and the [`Step`] itself.
//!
//! What an actuator must guarantee:
//! - **Idempotent.** The crash window between a completed `execute` and the journal's record of
//!   it means a step can be executed again after a restart. Executing a step twice must have the
//!   effect of executing it once (deterministic object names derived from
//!   [`step_token`], create-or-AlreadyExists, server-side apply / merge patches, ...).
//! - **Bounded.** Return within the runner's step timeout; use timeouts on every API call.
//! - **Honest errors.** [`ActError::Retryable`] makes the runner retry with backoff (the step stays
//!   pending, also across restarts); [`ActError::Permanent`] records the step as failed and moves
//!   on to the next step (a failed pod annotation must not prevent the taint).
//! - **Trust.** The plan already respects trust ([`plan`] gives untrusted incidents only a
//!   [`Step::NodeEvent`], and destructive steps only to confirmed fatal incidents from a trusted
//!   source); an actuator must not widen it. A plan can grow (suspected → confirmed appends
//!   the destructive steps); existing steps never change.
//!
//! Resolving the Node from the [`NodeHint`] is the actuator's job (the Kubernetes actuator uses a
//! reflector cache); [`RecordOnly`] needs no resolution.
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

pub use crate::incident::{Incident, IncidentId, NodeHint, Severity};

mod record;
pub mod runner;


pub use record::RecordOnly;

/// One action step of an incident's plan. Serialized into the journal: only add variants.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// A Kubernetes Event on the Node: reason = incident reason, message = trigger line.
    NodeEvent,
    /// Set node condition `condition_type` to True (reason = incident reason, message = trigger
    /// line). Fatal incidents use `KernelPanic`; NPD permanent rules use their own condition.
    NodeCondition {
        /// Condition type, e.g. `KernelPanic` or `KernelDeadlock`.
        condition_type: String,
    },
    /// On every pod of the node: annotations `lastgasp.dev/termination-reason` (the kernel's
    /// words) and `lastgasp.dev/reason-code`, then a `DisruptionTarget` pod condition.
    PodReasons,
    /// Taint the node `node.kubernetes.io/out-of-service=nodeshutdown:NoExecute`.
    Taint,
    /// Delete the node's pods with grace period 0.
    DeletePods,
    /// Delete the Node object.
    DeleteNode,
}

impl Step {
    /// Short stable name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Step::NodeEvent => "node_event",
            Step::NodeCondition { .. } => "node_condition",
            Step::PodReasons => "pod_reasons",
            Step::Taint => "taint",
            Step::DeletePods => "delete_pods",
            Step::DeleteNode => "delete_node",
        }
    }
}

/// A deterministic token for (incident, step index): use it to name created objects (e.g. the
/// Event name) so a re-executed step finds what the first execution created.
pub fn step_token(incident: IncidentId, index: usize) -> String {
    format!("lastgasp-{incident}-{index}")
}

/// What to do after the always-on steps on a trusted fatal incident.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Out-of-service taint (default).
    #[default]
    Taint,
    /// Netflix's way: pods with grace 0, then the Node.
    Delete,
    /// Only Event, condition and pod reasons.
    Observe,
}

/// Plan the steps of an incident. Pure: the same incident and policy always give the same plan.
///
/// - every incident: [`Step::NodeEvent`];
/// - untrusted: nothing more (plain netconsole from an address the config does not trust);
/// - [`Severity::Condition`]: the NPD condition;
/// - [`Severity::Fatal`]: `KernelPanic` condition, pod reasons, then, only once the incident is
///   [`Certainty::Confirmed`](relay_core::detect::Certainty::Confirmed), the policy's destructive
///   step(s). Deletion needs a verified relay report unless `netconsole_may_delete`; otherwise it
///   degrades to a taint.
///
/// The plan only grows: the plan of a confirmed incident starts with the plan of the same
/// incident while suspected, so the journal appends the destructive steps on confirmation.
pub fn plan(incident: &Incident, policy: Policy, netconsole_may_delete: bool) -> Vec<Step> {
    let mut steps = vec![Step::NodeEvent];
    if !incident.trusted {
        return steps;
    }
    match &incident.severity {
        Severity::Event => {}
        Severity::Condition { condition_type } => steps.push(Step::NodeCondition {
            condition_type: condition_type.clone(),
        }),
        Severity::Fatal => {
            steps.push(Step::NodeCondition {
                condition_type: "KernelPanic".to_owned(),
            });
            steps.push(Step::PodReasons);
            if incident.certainty != relay_core::detect::Certainty::Confirmed {
                return steps;
            }
            let from_report = matches!(incident.origin, crate::incident::Origin::Report { .. });
            match policy {
                Policy::Observe => {}
                Policy::Taint => steps.push(Step::Taint),
                Policy::Delete if from_report || netconsole_may_delete => {
                    steps.push(Step::DeletePods);
                    steps.push(Step::DeleteNode);
                }
                Policy::Delete => steps.push(Step::Taint),
            }
        }
    }
    steps
}

/// Result of a successful step, journaled with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutcome {
    /// Human-readable detail, e.g. `tainted node worker-3` or `already done`.
    pub detail: String,
}

/// Why a step did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// Transient (API unavailable, conflict, timeout): retried with backoff, stays pending.
    #[error("retryable: {0}")]
    Retryable(String),
    /// Will not succeed (node unknown, forbidden): recorded as failed, next step runs.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// The boxed future an [`Actuator`] returns (object safe, `Send`).
pub type ActFuture<'a> = Pin<Box<dyn Future<Output = Result<StepOutcome, ActError>> + Send + 'a>>;

/// Executes one journaled action step of an incident. See the module docs for the contract
/// (idempotent, bounded, honest errors).
///
/// ```ignore
/// impl Actuator for MyActuator {
///     fn name(&self) -> &'static str { "mine" }
///     fn execute<'a>(&'a self, incident: &'a Incident, index: usize, step: &'a Step) -> ActFuture<'a> {
///         Box::pin(async move { Ok(StepOutcome { detail: format!("did {}", step.name()) }) })
///     }
/// }
/// ```
pub trait Actuator: Send + Sync + 'static {
    /// Name for logs and metrics (`record-only`, `kubernetes`).
    fn name(&self) -> &'static str;
    /// Execute step `index` of `incident`'s plan. Idempotent.
    fn execute<'a>(&'a self, incident: &'a Incident, index: usize, step: &'a Step) -> ActFuture<'a>;
    /// The actuator's own counters and gauges, read at each `/metrics` scrape.
    fn stats(&self) -> Vec<ActuatorStat> {
        Vec::new()
    }
}

/// One value an actuator exposes on `/metrics` (prefixed `lastgasp_bridge_`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActuatorStat {
    /// Metric name without the prefix (and, for a counter, without `_total`).
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// A gauge (a level) rather than a counter (a running total).
    pub gauge: bool,
    /// The value now.
    pub value: u64,
}
