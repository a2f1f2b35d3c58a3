//! The "record only" actuator: appends each executed step to a durable JSONL log.
//!
//! It is idempotent the way a real actuator must be: a step already in its log is not appended
//! again (it answers `already done`), so the log proves that nothing was done twice.
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{ActError, ActFuture, Actuator, Incident, IncidentId, Step, StepOutcome};

/// One line of the record-only log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedStep {
    /// Incident id.
    pub incident: IncidentId,
    /// Step index in the plan.
    pub index: usize,
    /// The step.
    pub step: Step,
    /// Incident reason (e.g. `KernelPanic`).
    pub reason: String,
    /// The node hint, rendered (`node/..` or `addr/..`).
    pub node: String,
    /// The kernel's trigger line.
    pub trigger_line: String,
}

/// Records steps instead of acting on Kubernetes.
pub struct RecordOnly {
    path: PathBuf,
    state: Mutex<State>,
}

struct State {
    file: File,
    done: HashSet<(IncidentId, usize)>,
}

impl RecordOnly {
    /// Open (or create) the log at `path`, loading the steps it already holds.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let mut done = HashSet::new();
        if let Ok(existing) = File::open(path) {
            for line in BufReader::new(existing).lines() {
                let line = line?;
                // A torn last line (crash mid-write) is not a recorded step.
                if let Ok(rec) = serde_json::from_str::<RecordedStep>(&line) {
                    done.insert((rec.incident, rec.index));
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new(State { file, done }),
        })
    }

    /// Path of the log.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read every recorded step of a log file (for tests and `incidents show`).
    pub fn read_log(path: &Path) -> std::io::Result<Vec<RecordedStep>> {
        let file = File::open(path)?;
        let mut out = Vec::new();
        for line in BufReader::new(file).lines() {
            if let Ok(rec) = serde_json::from_str::<RecordedStep>(&line?) {
                out.push(rec);
            }
        }
        Ok(out)
    }

    fn record(&self, incident: &Incident, index: usize, step: &Step) -> Result<StepOutcome, ActError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| ActError::Permanent("record log lock poisoned".into()))?;
        if state.done.contains(&(incident.id, index)) {
            return Ok(StepOutcome {
                detail: "already done".into(),
            });
        }
        let rec = RecordedStep {
            incident: incident.id,
            index,
            step: step.clone(),
            reason: incident.reason.clone(),
            node: incident.key.node.clone(),
            trigger_line: incident.trigger_line.clone(),
        };
        let mut line = serde_json::to_vec(&rec).map_err(|e| ActError::Permanent(e.to_string()))?;
        line.push(b'\n');
        state
            .file
            .write_all(&line)
            .and_then(|()| state.file.sync_data())
            .map_err(|e| ActError::Retryable(format!("record log {}: {e}", self.path.display())))?;
        state.done.insert((incident.id, index));
        Ok(StepOutcome {
            detail: format!("recorded {}", step.name()),
        })
    }
}

impl Actuator for RecordOnly {
    fn name(&self) -> &'static str {
        "record-only"
    }

    fn execute<'a>(&'a self, incident: &'a Incident, index: usize, step: &'a Step) -> ActFuture<'a> {
        // File append + fsync is short; doing it inline keeps the step order obvious.
        Box::pin(async move { self.record(incident, index, step) })
    }
}
