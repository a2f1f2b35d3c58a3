//! The incident record: what the bridge journals and what an [`Actuator`](crate::act::Actuator) acts on.
use std::net::SocketAddr;

use relay_core::detect::{Certainty, Kind};
use serde::{Deserialize, Serialize};

/// Journal-assigned incident number, strictly increasing, never reused.
pub type IncidentId = u64;

/// What identifies one incident: a node (or, unresolved, a source) and one boot of it.
///
/// Repeated reports with the same key are the same incident (deduplicated).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IncidentKey {
    /// `node/<name>` when the keyring names the node, else `addr/<source ip>`.
    pub node: String,
    /// Boot identity: `relay/<boot counter>` for relay reports, `gen/<n>` for the bridge's own
    /// boot tracking of a netconsole source (bumped on a seq reset or a new `Linux version` banner).
    pub boot: String,
}

/// Everything the bridge knows that may identify the Kubernetes Node.
///
/// The resolver (kube side) tries, in order: `keyring_node`, then `relay_id` in the keyring,
/// then `source` against Node `status.addresses` and the BMC-address annotation/label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHint {
    /// UDP source address of the datagram that opened the incident.
    pub source: Option<SocketAddr>,
    /// Relay id from a verified report (or the keyring entry owning `source`).
    pub relay_id: Option<String>,
    /// Node name from the keyring entry (authenticated when `trusted`).
    pub keyring_node: Option<String>,
}

/// How the problem should surface in Kubernetes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "severity", rename_all = "snake_case")]
pub enum Severity {
    /// The host is gone (panic, fatal exception, MCE, power lost...): condition, pod reasons,
    /// then the configured policy (taint / delete / observe).
    Fatal,
    /// A permanent problem (NPD `"type": "permanent"`): set node condition `condition_type`.
    Condition {
        /// Node condition type, e.g. `KernelDeadlock`.
        condition_type: String,
    },
    /// A temporary problem (NPD `"type": "temporary"`, or a non-fatal built-in kind): an Event.
    Event,
}

/// Where the detection came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Origin {
    /// A signed relay report whose tag and freshness checked out.
    Report {
        /// Relay id from the report.
        relay_id: String,
        /// Boot counter of the host, as the relay counts it.
        boot_counter: u32,
        /// Report sequence within that boot.
        sequence: u32,
    },
    /// Extended netconsole text (`+` targets).
    NetconsoleExtended,
    /// Basic netconsole text.
    NetconsoleBasic,
}

/// One incident as journaled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Journal-assigned id.
    pub id: IncidentId,
    /// Deduplication key.
    pub key: IncidentKey,
    /// What identifies the node.
    pub hint: NodeHint,
    /// Built-in kind when a built-in rule (or the relay) classified it; `None` for NPD-only rules.
    pub kind: Option<Kind>,
    /// Kubernetes reason: `KernelPanic`, `KernelOops`, an NPD reason such as `TaskHung`, ...
    pub reason: String,
    /// How it surfaces (Event / Condition / Fatal).
    pub severity: Severity,
    /// Suspected (fatal line seen) or Confirmed (end marker / relay confirmed).
    pub certainty: Certainty,
    /// True for a verified relay report, or netconsole from a configured trusted source.
    /// Untrusted incidents may only be recorded and raise Events.
    pub trusted: bool,
    /// Where the detection came from.
    pub origin: Origin,
    /// The kernel's own line that triggered the incident, e.g.
    /// `Kernel panic - not syncing: sysrq triggered crash`.
    pub trigger_line: String,
    /// Console lines before the trigger (oldest first).
    pub context_before: Vec<String>,
    /// Console lines after the trigger (up to `incident.context_after`); still growing while
    /// `after_remaining > 0`.
    pub context_after: Vec<String>,
    /// Lines still to collect after the trigger; counts down to 0 and stops.
    pub after_remaining: u16,
    /// Wall clock when opened, Unix milliseconds.
    pub opened_unix_ms: u64,
    /// Further reports/lines deduplicated into this incident.
    pub repeats: u32,
}
