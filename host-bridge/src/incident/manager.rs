//! The incident manager: one task that owns incident keying, deduplication, context-after
//! collection and the journal writes that precede any action.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay_core::detect::Certainty;
use tokio::sync::mpsc;

use super::{Incident, IncidentId, IncidentKey, NodeHint, Origin, Severity};
use crate::act::runner::RunnerHandle;
use crate::act::{plan, Policy};
use crate::detect::Detection;
use crate::journal::{now_unix_ms, Entry, Journal, StepRecord, StepState};
use crate::serve::metrics::Metrics;

/// A source: UDP source address and the local port it arrived on.
pub type SourceId = (SocketAddr, u16);

/// Who a source belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRef {
    /// `node/<name>` (keyring) or `addr/<ip>`.
    pub key: String,
    /// Relay id (keyring).
    pub relay_id: Option<String>,
    /// Node name (keyring).
    pub keyring_node: Option<String>,
    /// Plain netconsole from here is trusted.
    pub trusted: bool,
}

/// A detection from a worker.
#[derive(Debug)]
pub struct Detected {
    /// Where it came from.
    pub source: SourceId,
    /// Whose it is.
    pub node: Arc<NodeRef>,
    /// What matched.
    pub detection: Detection,
    /// The line.
    pub trigger_line: String,
    /// Lines before it.
    pub context_before: Vec<String>,
    /// Suspected or confirmed.
    pub certainty: Certainty,
    /// Report / extended / basic.
    pub origin: Origin,
    /// Trusted source (verified report, or allow-listed netconsole).
    pub trusted: bool,
}

/// Messages to the manager (bounded queue; workers `try_send`).
#[derive(Debug)]
pub enum ToManager {
    /// A rule fired.
    Detected(Box<Detected>),
    /// A line after a trigger from `source`.
    After {
        /// Source.
        source: SourceId,
        /// Line.
        line: String,
    },
    /// End marker seen or console silent: the node's fatal incident is confirmed.
    Confirm {
        /// Source that saw it.
        source: SourceId,
    },
    /// A `Linux version` banner from one of the node's sources.
    BootBanner {
        /// Node key.
        node: String,
        /// The source that sent it.
        source: SourceId,
    },
    /// Sequence reset on one of the node's sources.
    NewBoot {
        /// Node key.
        node: String,
        /// The source whose sequence reset.
        source: SourceId,
    },
}

/// Manager settings.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// Dedup window.
    pub dedup_window: Duration,
    /// Lines collected after a trigger.
    pub context_after: u16,
    /// Action policy.
    pub policy: Policy,
    /// Allow delete for trusted netconsole.
    pub netconsole_may_delete: bool,
    /// Console silence that confirms a suspected fatal incident.
    pub confirm_after_silence: Duration,
}

/// No kernel is back and printing its banner this soon after a panic (panic timeout,
/// firmware, boot); a banner from another source earlier than this is replayed history.
const OTHER_SOURCE_REBOOT_MIN: Duration = Duration::from_secs(3);

struct Open {
    node: String,
    class: String,
    boot: String,
    opened: Instant,
    opener: Option<SourceId>,
    after_remaining: u16,
    pending_after: Vec<String>,
    certainty: Certainty,
    trusted: bool,
}

#[derive(Default)]
struct NodeState {
    boot_gen: u64,
    relay_boot: Option<u32>,
    open: Vec<IncidentId>,
}

/// The manager task.
pub struct Manager {
    rx: mpsc::Receiver<ToManager>,
    journal: Arc<Journal>,
    runner: RunnerHandle,
    metrics: Arc<Metrics>,
    cfg: ManagerConfig,
    nodes: HashMap<String, NodeState>,
    open: HashMap<IncidentId, Open>,
    source_node: HashMap<SourceId, String>,
    // Suspected fatal incidents inherited from before a restart: the workers' silence timers
    // died with the old process, so the manager confirms them after the same silence.
    inherited_suspects: Vec<IncidentId>,
}

impl Manager {
    /// A manager; `seed` it from the journal before running.
    pub fn new(rx: mpsc::Receiver<ToManager>, journal: Arc<Journal>, runner: RunnerHandle, metrics: Arc<Metrics>, cfg: ManagerConfig) -> Self {
        Self {
            rx,
            journal,
            runner,
            metrics,
            cfg,
            nodes: HashMap::new(),
            open: HashMap::new(),
            source_node: HashMap::new(),
            inherited_suspects: Vec::new(),
        }
    }

    /// Re-open the journal's recent incidents for deduplication (after a restart a repeated
    /// report must still be the same incident).
    pub fn seed(&mut self, entries: &[Entry]) {
        let now_ms = now_unix_ms();
        let window_ms = u64::try_from(self.cfg.dedup_window.as_millis()).unwrap_or(u64::MAX);
        for e in entries {
            let inc = &e.incident;
            if inc.after_remaining > 0 {
                // Lines after the trigger that arrived while we were down are gone; say so
                // rather than wait for them forever.
                let r = self.journal.update(inc.id, |e| e.incident.after_remaining = 0);
                if let Err(err) = r {
                    tracing::error!(incident = inc.id, "journal update: {err}");
                }
            }
            let ns = self.nodes.entry(inc.key.node.clone()).or_default();
            if let Some(bc) = inc.key.boot.strip_prefix("relay/").and_then(|b| b.parse().ok()) {
                ns.relay_boot = ns.relay_boot.max(Some(bc));
            }
            if let Some(g) = inc.key.boot.strip_prefix("gen/").and_then(|b| b.parse().ok()) {
                ns.boot_gen = ns.boot_gen.max(g);
            }
            let age = now_ms.saturating_sub(inc.opened_unix_ms);
            if age < window_ms {
                ns.open.push(inc.id);
                if inc.severity == Severity::Fatal && inc.certainty == Certainty::Suspected {
                    self.inherited_suspects.push(inc.id);
                }
                self.open.insert(
                    inc.id,
                    Open {
                        node: inc.key.node.clone(),
                        class: class_of(&inc.severity, &inc.reason),
                        boot: inc.key.boot.clone(),
                        opened: Instant::now().checked_sub(Duration::from_millis(age)).unwrap_or_else(Instant::now),
                        opener: None,
                        after_remaining: 0,
                        pending_after: Vec::new(),
                        certainty: inc.certainty,
                        trusted: inc.trusted,
                    },
                );
            }
        }
    }

    /// Run until every worker is gone.
    pub async fn run(mut self) {
        let mut flush = tokio::time::interval(Duration::from_millis(200));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let confirm_inherited = tokio::time::sleep(self.cfg.confirm_after_silence);
        tokio::pin!(confirm_inherited);
        let mut inherited_pending = !self.inherited_suspects.is_empty();
        loop {
            tokio::select! {
                () = &mut confirm_inherited, if inherited_pending => {
                    inherited_pending = false;
                    for id in std::mem::take(&mut self.inherited_suspects) {
                        // Still open (no new boot seen) and still suspected: the host stayed silent.
                        if self.open.get(&id).is_some_and(|o| o.certainty == Certainty::Suspected) {
                            tracing::info!(incident = id, "confirming a suspected panic from before the restart: no console since");
                            self.upgrade(id, Certainty::Confirmed, None);
                        }
                    }
                }
                msg = self.rx.recv() => {
                    let Some(msg) = msg else { break };
                    self.metrics.incident_queue_depth.dec();
                    self.handle(msg);
                }
                _ = flush.tick() => self.flush_after(),
            }
        }
        self.flush_after();
    }

    fn handle(&mut self, msg: ToManager) {
        match msg {
            ToManager::Detected(d) => self.detected(*d),
            ToManager::After { source, line } => {
                let Some(node) = self.source_node.get(&source) else { return };
                let Some(ns) = self.nodes.get(node) else { return };
                for id in &ns.open {
                    if let Some(o) = self.open.get_mut(id) {
                        if o.opener == Some(source) && o.after_remaining > 0 {
                            o.after_remaining -= 1;
                            o.pending_after.push(line);
                            return;
                        }
                    }
                }
            }
            ToManager::Confirm { source } => {
                let Some(node) = self.source_node.get(&source).cloned() else { return };
                let ids: Vec<IncidentId> = self.nodes.get(&node).map(|n| n.open.clone()).unwrap_or_default();
                for id in ids {
                    let is_fatal_suspected = self.open.get(&id).is_some_and(|o| o.class == "fatal" && o.certainty == Certainty::Suspected);
                    if is_fatal_suspected {
                        self.upgrade(id, Certainty::Confirmed, None);
                    }
                }
            }
            ToManager::BootBanner { node, source } | ToManager::NewBoot { node, source } => self.new_boot(&node, source),
        }
    }

    fn new_boot(&mut self, node: &str, source: SourceId) {
        // A node's sources are separate sockets and workers, so their datagrams are not
        // ordered against each other: a second netconsole target's replayed boot history
        // can arrive after the first target's panic line. Only the source that opened the
        // incident, or any source once a real reboot is possible, ends it.
        let ends = |o: &Open| o.opener == Some(source) || o.opened.elapsed() >= OTHER_SOURCE_REBOOT_MIN;
        let has_fatal = self
            .nodes
            .get(node)
            .is_some_and(|n| n.open.iter().any(|id| self.open.get(id).is_some_and(|o| o.class == "fatal" && ends(o))));
        if !has_fatal {
            return; // the banner of the boot we are already in (netconsole replays history)
        }
        self.flush_after();
        if let Some(ns) = self.nodes.get_mut(node) {
            ns.boot_gen += 1;
            for id in ns.open.drain(..) {
                self.open.remove(&id);
            }
            tracing::info!(node, boot_gen = ns.boot_gen, "node booted again; its incidents are closed");
        }
    }

    fn detected(&mut self, d: Detected) {
        let node_key = d.node.key.clone();
        self.source_node.insert(d.source, node_key.clone());
        if self.source_node.len() > 65536 {
            // Bounded: forget sources of closed incidents first.
            let open_nodes: std::collections::HashSet<&String> = self.open.values().map(|o| &o.node).collect();
            self.source_node.retain(|_, n| open_nodes.contains(n));
        }
        let ns = self.nodes.entry(node_key.clone()).or_default();
        if let Origin::Report { boot_counter, .. } = d.origin {
            if ns.relay_boot.is_none() {
                // The first report of this boot: incidents its mirrored netconsole opened
                // (under the bridge's own boot count) are this boot's.
                for id in &ns.open {
                    if let Some(o) = self.open.get_mut(id) {
                        o.boot = format!("relay/{boot_counter}");
                    }
                }
            }
            if ns.relay_boot.is_some_and(|rb| boot_counter > rb) {
                ns.boot_gen += 1;
                for id in ns.open.drain(..) {
                    self.open.remove(&id);
                }
            }
            ns.relay_boot = ns.relay_boot.max(Some(boot_counter));
        }
        let boot = match ns.relay_boot {
            Some(rb) => format!("relay/{rb}"),
            None => format!("gen/{}", ns.boot_gen),
        };
        let class = class_of(&d.detection.severity, &d.detection.reason);
        let window = self.cfg.dedup_window;
        let existing = ns
            .open
            .iter()
            .copied()
            .find(|id| self.open.get(id).is_some_and(|o| o.class == class && o.boot == boot && o.opened.elapsed() < window));
        if let Some(id) = existing {
            self.metrics.incident_repeats.inc();
            self.upgrade(id, d.certainty, Some(&d));
            return;
        }
        let incident = Incident {
            id: 0,
            key: IncidentKey { node: node_key.clone(), boot: boot.clone() },
            hint: NodeHint {
                source: Some(d.source.0),
                relay_id: d.node.relay_id.clone(),
                keyring_node: d.node.keyring_node.clone(),
            },
            kind: d.detection.kind,
            reason: d.detection.reason.clone(),
            severity: d.detection.severity.clone(),
            certainty: d.certainty,
            trusted: d.trusted,
            origin: d.origin.clone(),
            trigger_line: d.trigger_line.clone(),
            context_before: d.context_before,
            context_after: Vec::new(),
            after_remaining: self.cfg.context_after,
            opened_unix_ms: now_unix_ms(),
            repeats: 0,
        };
        let steps = plan(&incident, self.cfg.policy, self.cfg.netconsole_may_delete);
        let n_steps = steps.len();
        let journal = Arc::clone(&self.journal);
        // The incident is durable before the runner hears of it.
        let created = tokio::task::block_in_place(|| journal.create(incident, steps));
        let entry = match created {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("cannot journal incident for {node_key}: {e}");
                return;
            }
        };
        let id = entry.incident.id;
        tracing::warn!(
            incident = id,
            node = %node_key,
            reason = %entry.incident.reason,
            trusted = entry.incident.trusted,
            line = %entry.incident.trigger_line,
            "incident opened"
        );
        self.metrics.incident(&entry.incident.reason);
        self.metrics.pending_steps.inc_by(i64::try_from(n_steps).unwrap_or(0));
        if let Some(ns) = self.nodes.get_mut(&node_key) {
            ns.open.push(id);
        }
        self.open.insert(
            id,
            Open {
                node: node_key,
                class,
                boot,
                opened: Instant::now(),
                opener: Some(d.source),
                after_remaining: self.cfg.context_after,
                pending_after: Vec::new(),
                certainty: d.certainty,
                trusted: d.trusted,
            },
        );
        self.runner.wake(id);
    }

    /// Fold a repeat into an open incident: count it, raise certainty or trust, and append any
    /// steps the stronger incident now warrants.
    fn upgrade(&mut self, id: IncidentId, certainty: Certainty, repeat: Option<&Detected>) {
        let Some(o) = self.open.get_mut(&id) else { return };
        let raise_certainty = certainty == Certainty::Confirmed && o.certainty != Certainty::Confirmed;
        let raise_trust = repeat.is_some_and(|d| d.trusted) && !o.trusted;
        // The newest report's counters are journaled: replay protection after a restart.
        let newer_report = repeat.is_some_and(|d| matches!(d.origin, Origin::Report { .. }));
        if raise_certainty {
            o.certainty = Certainty::Confirmed;
        }
        if raise_trust {
            o.trusted = true;
        }
        let (policy, may_delete) = (self.cfg.policy, self.cfg.netconsole_may_delete);
        let origin = repeat.filter(|_| raise_trust || newer_report).map(|d| d.origin.clone());
        let journal = Arc::clone(&self.journal);
        let is_repeat = repeat.is_some();
        let updated = tokio::task::block_in_place(|| {
            journal.update(id, |e| {
                if is_repeat {
                    e.incident.repeats = e.incident.repeats.saturating_add(1);
                }
                if raise_certainty {
                    e.incident.certainty = Certainty::Confirmed;
                }
                if raise_trust {
                    e.incident.trusted = true;
                }
                if let Some(origin) = origin {
                    e.incident.origin = origin;
                }
                let want = plan(&e.incident, policy, may_delete);
                let mut added = 0usize;
                for step in want {
                    if !e.steps.iter().any(|s| s.step == step) {
                        e.steps.push(StepRecord {
                            step,
                            state: StepState::Pending,
                            attempts: 0,
                        });
                        added += 1;
                    }
                }
                added
            })
        });
        match updated {
            Ok((added, _)) if added > 0 => {
                tracing::info!(incident = id, added, confirmed = raise_certainty, "incident raised; more steps planned");
                self.metrics.pending_steps.inc_by(i64::try_from(added).unwrap_or(0));
                self.runner.wake(id);
            }
            Ok(_) => {}
            Err(e) => tracing::error!(incident = id, "journal update: {e}"),
        }
    }

    /// Write collected context-after lines to the journal (batched: one commit per incident
    /// per flush, not one per line).
    fn flush_after(&mut self) {
        let dirty: Vec<(IncidentId, Vec<String>, u16)> = self
            .open
            .iter_mut()
            .filter(|(_, o)| !o.pending_after.is_empty())
            .map(|(id, o)| (*id, std::mem::take(&mut o.pending_after), o.after_remaining))
            .collect();
        for (id, lines, remaining) in dirty {
            let journal = Arc::clone(&self.journal);
            let r = tokio::task::block_in_place(|| {
                journal.update(id, |e| {
                    e.incident.context_after.extend(lines);
                    e.incident.after_remaining = remaining;
                })
            });
            if let Err(e) = r {
                tracing::error!(incident = id, "journal update: {e}");
            }
        }
    }
}

fn class_of(sev: &Severity, reason: &str) -> String {
    match sev {
        Severity::Fatal => "fatal".into(),
        _ => reason.to_owned(),
    }
}
