//! The durable incident journal (redb). Every write is one fsynced transaction.
//!
//! Order of truth: an incident and its planned steps are committed **before** any step runs;
//! each step is marked done in its own commit right after the actuator returns. On startup,
//! [`Journal::pending`] lists every incident with steps still to run.
use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::act::{Step, StepOutcome};
use crate::incident::{Incident, IncidentId};

const INCIDENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("incidents");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_ID: &str = "next_id";

/// Journal errors.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file is held by a running bridge.
    #[error("journal {0} is in use by a running host-bridge (read it over HTTP: `incidents --url`)")]
    InUse(String),
    /// redb failed.
    #[error("journal: {0}")]
    Db(String),
    /// A record could not be (de)serialized.
    #[error("journal record {id}: {msg}")]
    Record {
        /// Incident id.
        id: u64,
        /// What went wrong.
        msg: String,
    },
    /// No such incident.
    #[error("no incident {0}")]
    NotFound(u64),
}

macro_rules! db {
    ($e:expr) => {
        $e.map_err(|e| JournalError::Db(e.to_string()))
    };
}

/// State of one planned step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StepState {
    /// Not yet done.
    Pending,
    /// Done.
    Done {
        /// When, Unix ms.
        at_unix_ms: u64,
        /// Actuator's detail.
        detail: String,
    },
    /// Failed permanently.
    Failed {
        /// When, Unix ms.
        at_unix_ms: u64,
        /// Why.
        error: String,
    },
}

/// One planned step and its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step.
    pub step: Step,
    /// Its state.
    pub state: StepState,
    /// Executions attempted (including retries).
    pub attempts: u32,
}

/// What the journal holds per incident.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The incident.
    pub incident: Incident,
    /// Its plan, in order.
    pub steps: Vec<StepRecord>,
}

impl Entry {
    /// Index of the first step not yet done or failed.
    pub fn next_pending(&self) -> Option<usize> {
        self.steps.iter().position(|s| s.state == StepState::Pending)
    }
}

/// The journal.
pub struct Journal {
    db: Database,
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Journal {
    /// Open or create the journal file (and its directory).
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| JournalError::Db(format!("{}: {e}", dir.display())))?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => JournalError::InUse(path.display().to_string()),
            e => JournalError::Db(format!("{}: {e}", path.display())),
        })?;
        let tx = db!(db.begin_write())?;
        {
            db!(tx.open_table(INCIDENTS))?;
            db!(tx.open_table(META))?;
        }
        db!(tx.commit())?;
        Ok(Self { db })
    }

    /// Journal a new incident with its plan; returns the assigned id (also set in the entry).
    pub fn create(&self, mut incident: Incident, plan: Vec<Step>) -> Result<Entry, JournalError> {
        let tx = db!(self.db.begin_write())?;
        let entry = {
            let mut meta = db!(tx.open_table(META))?;
            let id = db!(meta.get(NEXT_ID))?.map_or(1, |v| v.value());
            db!(meta.insert(NEXT_ID, id.saturating_add(1)))?;
            incident.id = id;
            let entry = Entry {
                incident,
                steps: plan
                    .into_iter()
                    .map(|step| StepRecord {
                        step,
                        state: StepState::Pending,
                        attempts: 0,
                    })
                    .collect(),
            };
            let mut t = db!(tx.open_table(INCIDENTS))?;
            let bytes = encode(&entry)?;
            db!(t.insert(id, bytes.as_slice()))?;
            entry
        };
        db!(tx.commit())?;
        Ok(entry)
    }

    /// Read-modify-write one entry in a single transaction.
    pub fn update<R>(&self, id: IncidentId, f: impl FnOnce(&mut Entry) -> R) -> Result<(R, Entry), JournalError> {
        let tx = db!(self.db.begin_write())?;
        let out = {
            let mut t = db!(tx.open_table(INCIDENTS))?;
            let mut entry = {
                let v = db!(t.get(id))?.ok_or(JournalError::NotFound(id))?;
                decode(id, v.value())?
            };
            let r = f(&mut entry);
            let bytes = encode(&entry)?;
            db!(t.insert(id, bytes.as_slice()))?;
            (r, entry)
        };
        db!(tx.commit())?;
        Ok(out)
    }

    /// Record the result of step `index`.
    pub fn finish_step(&self, id: IncidentId, index: usize, result: Result<&StepOutcome, String>) -> Result<Entry, JournalError> {
        let at = now_unix_ms();
        self.update(id, |e| {
            if let Some(s) = e.steps.get_mut(index) {
                s.state = match result {
                    Ok(o) => StepState::Done {
                        at_unix_ms: at,
                        detail: o.detail.clone(),
                    },
                    Err(error) => StepState::Failed { at_unix_ms: at, error },
                };
            }
        })
        .map(|(_, e)| e)
    }

    /// Count an attempt of step `index` (before executing it).
    pub fn attempt(&self, id: IncidentId, index: usize) -> Result<Entry, JournalError> {
        self.update(id, |e| {
            if let Some(s) = e.steps.get_mut(index) {
                s.attempts = s.attempts.saturating_add(1);
            }
        })
        .map(|(_, e)| e)
    }

    /// One incident.
    pub fn get(&self, id: IncidentId) -> Result<Entry, JournalError> {
        let tx = db!(self.db.begin_read())?;
        let t = db!(tx.open_table(INCIDENTS))?;
        let v = db!(t.get(id))?.ok_or(JournalError::NotFound(id))?;
        decode(id, v.value())
    }

    /// Every incident, oldest first.
    pub fn list(&self) -> Result<Vec<Entry>, JournalError> {
        let tx = db!(self.db.begin_read())?;
        let t = db!(tx.open_table(INCIDENTS))?;
        let mut out = Vec::new();
        for row in db!(t.iter())? {
            let (k, v) = db!(row)?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Ids of incidents with steps still pending, oldest first.
    pub fn pending(&self) -> Result<Vec<IncidentId>, JournalError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|e| e.next_pending().is_some())
            .map(|e| e.incident.id)
            .collect())
    }
}

fn encode(e: &Entry) -> Result<Vec<u8>, JournalError> {
    serde_json::to_vec(e).map_err(|err| JournalError::Record {
        id: e.incident.id,
        msg: err.to_string(),
    })
}

fn decode(id: u64, bytes: &[u8]) -> Result<Entry, JournalError> {
    serde_json::from_slice(bytes).map_err(|e| JournalError::Record { id, msg: e.to_string() })
}
