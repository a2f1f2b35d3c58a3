//! The act runner: executes journaled steps in plan order, records each when done, retries
//! retryable failures with backoff, and resumes whatever was pending after a restart.
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::{ActError, Actuator, IncidentId};
use crate::journal::{Journal, JournalError};
use crate::serve::metrics::Metrics;

/// Test hook: `HOST_BRIDGE_FAILPOINT=before-act|after-act` makes the runner stop (hang) right
/// before executing a step, or right after the actuator returned but before the journal
/// recorded it, after printing `FAILPOINT <name> incident=<id> step=<i>` on stderr. The crash
/// tests SIGKILL the process there.
pub const FAILPOINT_ENV: &str = "HOST_BRIDGE_FAILPOINT";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Failpoint {
    BeforeAct,
    AfterAct,
}

/// Runner settings.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Incidents acted on at once.
    pub concurrency: usize,
    /// Limit for one `execute`.
    pub step_timeout: Duration,
    /// Longest backoff between retries.
    pub max_backoff: Duration,
}

/// Hands incident ids to the runner. Cheap to clone.
#[derive(Clone)]
pub struct RunnerHandle {
    shared: Arc<Shared>,
}

struct Shared {
    // A set, not a queue: bounded by the number of incidents, and a wake-up twice is one.
    wanted: Mutex<BTreeSet<IncidentId>>,
    notify: Notify,
}

impl RunnerHandle {
    /// Ask the runner to (re)check an incident's plan.
    pub fn wake(&self, id: IncidentId) {
        if let Ok(mut w) = self.shared.wanted.lock() {
            w.insert(id);
        }
        self.shared.notify.notify_one();
    }
}

/// The runner.
pub struct Runner {
    journal: Arc<Journal>,
    actuator: Arc<dyn Actuator>,
    metrics: Arc<Metrics>,
    cfg: RunnerConfig,
    failpoint: Option<Failpoint>,
    shared: Arc<Shared>,
}

async fn blocking<T: Send + 'static>(
    journal: &Arc<Journal>,
    f: impl FnOnce(&Journal) -> Result<T, JournalError> + Send + 'static,
) -> Result<T, JournalError> {
    let j = Arc::clone(journal);
    tokio::task::spawn_blocking(move || f(&j))
        .await
        .map_err(|e| JournalError::Db(format!("journal task: {e}")))?
}

impl Runner {
    /// A runner over `journal`, executing with `actuator`.
    pub fn new(journal: Arc<Journal>, actuator: Arc<dyn Actuator>, metrics: Arc<Metrics>, cfg: RunnerConfig) -> (Self, RunnerHandle) {
        let failpoint = match std::env::var(FAILPOINT_ENV).as_deref() {
            Ok("before-act") => Some(Failpoint::BeforeAct),
            Ok("after-act") => Some(Failpoint::AfterAct),
            _ => None,
        };
        let shared = Arc::new(Shared {
            wanted: Mutex::new(BTreeSet::new()),
            notify: Notify::new(),
        });
        let handle = RunnerHandle { shared: Arc::clone(&shared) };
        (
            Self {
                journal,
                actuator,
                metrics,
                cfg,
                failpoint,
                shared,
            },
            handle,
        )
    }

    /// Run forever: first resume everything pending in the journal, then serve wake-ups.
    pub async fn run(self) {
        match blocking(&self.journal, |j| j.pending()).await {
            Ok(ids) => {
                if !ids.is_empty() {
                    tracing::info!(count = ids.len(), "resuming pending actions from the journal");
                }
                if let Ok(mut w) = self.shared.wanted.lock() {
                    w.extend(ids);
                }
            }
            Err(e) => tracing::error!("cannot list pending actions: {e}"),
        }
        let mut tasks: JoinSet<IncidentId> = JoinSet::new();
        let mut in_flight: HashSet<IncidentId> = HashSet::new();
        let mut recheck: HashSet<IncidentId> = HashSet::new();
        loop {
            let ready: Vec<IncidentId> = match self.shared.wanted.lock() {
                Ok(mut w) => {
                    let room = self.cfg.concurrency.saturating_sub(in_flight.len());
                    let mut take = Vec::new();
                    let mut keep = BTreeSet::new();
                    for id in std::mem::take(&mut *w) {
                        if in_flight.contains(&id) {
                            // Its task may have read the plan before it grew; look again after.
                            recheck.insert(id);
                        } else if take.len() < room {
                            take.push(id);
                        } else {
                            keep.insert(id);
                        }
                    }
                    *w = keep;
                    take
                }
                Err(_) => Vec::new(),
            };
            for id in ready {
                in_flight.insert(id);
                let ctx = Ctx {
                    journal: Arc::clone(&self.journal),
                    actuator: Arc::clone(&self.actuator),
                    metrics: Arc::clone(&self.metrics),
                    cfg: self.cfg.clone(),
                    failpoint: self.failpoint,
                };
                tasks.spawn(async move {
                    ctx.drive(id).await;
                    id
                });
            }
            tokio::select! {
                () = self.shared.notify.notified() => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(id) = done {
                        in_flight.remove(&id);
                        if recheck.remove(&id) {
                            if let Ok(mut w) = self.shared.wanted.lock() { w.insert(id); }
                        }
                    } else {
                        tracing::error!("an action task failed; its incident stays pending until restart");
                    }
                }
            }
        }
    }
}

struct Ctx {
    journal: Arc<Journal>,
    actuator: Arc<dyn Actuator>,
    metrics: Arc<Metrics>,
    cfg: RunnerConfig,
    failpoint: Option<Failpoint>,
}

impl Ctx {
    async fn hang_at(&self, fp: Failpoint, id: IncidentId, index: usize) {
        if self.failpoint == Some(fp) {
            let name = if fp == Failpoint::BeforeAct { "before-act" } else { "after-act" };
            eprintln!("FAILPOINT {name} incident={id} step={index}");
            std::future::pending::<()>().await;
        }
    }

    /// Execute every pending step of one incident, in order.
    async fn drive(&self, id: IncidentId) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let entry = match blocking(&self.journal, move |j| j.get(id)).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(incident = id, "journal read: {e}");
                    return;
                }
            };
            let Some(index) = entry.next_pending() else { return };
            let Some(step) = entry.steps.get(index).map(|s| s.step.clone()) else { return };
            self.hang_at(Failpoint::BeforeAct, id, index).await;
            if let Err(e) = blocking(&self.journal, move |j| j.attempt(id, index)).await {
                tracing::error!(incident = id, "journal write: {e}");
                return;
            }
            let result = tokio::time::timeout(self.cfg.step_timeout, self.actuator.execute(&entry.incident, index, &step))
                .await
                .unwrap_or_else(|_| Err(ActError::Retryable(format!("step timed out after {:?}", self.cfg.step_timeout))));
            let record = match result {
                Ok(outcome) => {
                    self.hang_at(Failpoint::AfterAct, id, index).await;
                    tracing::info!(incident = id, step = step.name(), actuator = self.actuator.name(), detail = %outcome.detail, "step done");
                    self.metrics.step(step.name(), "done");
                    Ok(outcome)
                }
                Err(ActError::Permanent(msg)) => {
                    tracing::warn!(incident = id, step = step.name(), "step failed: {msg}");
                    self.metrics.step(step.name(), "failed");
                    Err(msg)
                }
                Err(ActError::Retryable(msg)) => {
                    tracing::warn!(incident = id, step = step.name(), retry_in = ?backoff, "step will be retried: {msg}");
                    self.metrics.step(step.name(), "retry");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.cfg.max_backoff);
                    continue;
                }
            };
            let written = blocking(&self.journal, move |j| j.finish_step(id, index, record.as_ref().map_err(Clone::clone))).await;
            if let Err(e) = written {
                tracing::error!(incident = id, "journal write: {e}");
                return;
            }
            self.metrics.pending_steps.dec();
            backoff = Duration::from_millis(100);
        }
    }
}
