//! The coordinator's durable task state (a redb file).
//!
//! Every task moves `accepted → recorded → running → succeeded | failed`
//! and each step is committed here before the coordinator acts on the
//! next: *accepted* is written (with the request's nonce) before the task
//! record goes to the ledger, *running* before a node is asked to run it.
//! After a crash the coordinator reads the unfinished tasks back and
//! resumes each from what the ledger shows ([`crate::driver`]); the ledger
//! and the nodes' idempotent `RunTask` make every step safe to repeat.
//!
//! Nonces of accepted requests are kept for twice the acceptance window
//! and then pruned: older requests are refused as stale anyway.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use stayput_chain_connector::tasks::REQUEST_WINDOW_SECS;

use crate::CoordinatorError;

const TASKS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("tasks");
const NONCES: TableDefinition<'_, &[u8], u64> = TableDefinition::new("nonces");

/// Where a task is, as far as the coordinator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Checked and stored; the task record may not be on the ledger yet.
    Accepted,
    /// The task record is on the ledger.
    Recorded,
    /// The ledger shows it running; its node has been asked to run it.
    Running,
    /// The result digest is on the ledger.
    Succeeded,
    /// Ended without a result.
    Failed,
}

impl Phase {
    /// Whether the task has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// One task as the coordinator keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTask {
    /// Task id.
    pub id: String,
    /// The canonical signed request, hex.
    pub signed_request: String,
    /// The grants it relies on.
    pub grants: Vec<String>,
    /// Where it is.
    pub phase: Phase,
    /// The result digest, hex, once succeeded.
    pub result_digest: Option<String>,
    /// The result's size in its own unit.
    pub result_count: u64,
    /// Why it failed.
    pub error: Option<String>,
}

/// What [`Store::accept`] found.
#[derive(Debug)]
pub enum Accepted {
    /// Stored as new.
    New,
    /// The same request was accepted before: here is its task.
    Existing(StoredTask),
}

/// The store.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, CoordinatorError> {
        let err = |reason: String| CoordinatorError::Store { path: path.into(), reason };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let db = Database::create(path).map_err(|e| err(e.to_string()))?;
        let store = Self { db, path: path.into() };
        let txn = store.db.begin_write().map_err(|e| store.err(e))?;
        txn.open_table(TASKS).map_err(|e| store.err(e))?;
        txn.open_table(NONCES).map_err(|e| store.err(e))?;
        txn.commit().map_err(|e| store.err(e))?;
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> CoordinatorError {
        CoordinatorError::Store { path: self.path.clone(), reason: e.to_string() }
    }

    /// Stores a newly accepted task and its request's nonce in one commit;
    /// the same task again is reported as existing, another request with
    /// a used nonce as a replay.
    pub fn accept(&self, task: &StoredTask, nonce_key: &[u8], now: u64) -> Result<Accepted, CoordinatorError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut tasks = txn.open_table(TASKS).map_err(|e| self.err(e))?;
            if let Some(existing) = tasks.get(task.id.as_str()).map_err(|e| self.err(e))? {
                return Ok(Accepted::Existing(self.decode(existing.value())?));
            }
            let mut nonces = txn.open_table(NONCES).map_err(|e| self.err(e))?;
            if nonces.get(nonce_key).map_err(|e| self.err(e))?.is_some() {
                return Err(CoordinatorError::Replayed);
            }
            let horizon = now.saturating_sub(2 * REQUEST_WINDOW_SECS);
            nonces.retain(|_, seen| seen >= horizon).map_err(|e| self.err(e))?;
            nonces.insert(nonce_key, now).map_err(|e| self.err(e))?;
            tasks.insert(task.id.as_str(), self.encode(task)?.as_slice()).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))?;
        Ok(Accepted::New)
    }

    /// Replaces a task's stored state (durable on return).
    pub fn put(&self, task: &StoredTask) -> Result<(), CoordinatorError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut tasks = txn.open_table(TASKS).map_err(|e| self.err(e))?;
            tasks.insert(task.id.as_str(), self.encode(task)?.as_slice()).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// A task by id.
    pub fn get(&self, id: &str) -> Result<Option<StoredTask>, CoordinatorError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let tasks = txn.open_table(TASKS).map_err(|e| self.err(e))?;
        let found = tasks.get(id).map_err(|e| self.err(e))?;
        found.map(|v| self.decode(v.value())).transpose()
    }

    /// Every task that has not ended.
    pub fn unfinished(&self) -> Result<Vec<StoredTask>, CoordinatorError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let tasks = txn.open_table(TASKS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in tasks.iter().map_err(|e| self.err(e))? {
            let (_, value) = entry.map_err(|e| self.err(e))?;
            let task = self.decode(value.value())?;
            if !task.phase.is_final() {
                out.push(task);
            }
        }
        Ok(out)
    }

    fn encode(&self, task: &StoredTask) -> Result<Vec<u8>, CoordinatorError> {
        serde_json::to_vec(task).map_err(|e| self.err(e))
    }

    fn decode(&self, bytes: &[u8]) -> Result<StoredTask, CoordinatorError> {
        serde_json::from_slice(bytes).map_err(|e| self.err(format!("a stored task does not decode: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> StoredTask {
        StoredTask {
            id: id.into(),
            signed_request: "00".into(),
            grants: vec!["g".into()],
            phase: Phase::Accepted,
            result_digest: None,
            result_count: 0,
            error: None,
        }
    }

    #[test]
    fn accepts_once_refuses_reused_nonces_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let store = Store::open(&path).unwrap();
        assert!(matches!(store.accept(&task("t-1"), b"bank/n1", 1000).unwrap(), Accepted::New));
        assert!(matches!(store.accept(&task("t-1"), b"bank/n1", 1000).unwrap(), Accepted::Existing(_)));
        assert!(matches!(store.accept(&task("t-2"), b"bank/n1", 1000), Err(CoordinatorError::Replayed)));
        let mut done = task("t-3");
        store.accept(&done, b"bank/n3", 1000).unwrap();
        done.phase = Phase::Succeeded;
        store.put(&done).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        let unfinished: Vec<_> = store.unfinished().unwrap().into_iter().map(|t| t.id).collect();
        assert_eq!(unfinished, ["t-1"]);
        assert_eq!(store.get("t-3").unwrap().unwrap().phase, Phase::Succeeded);
        // Nonces older than twice the window are pruned.
        store.accept(&task("t-4"), b"bank/n4", 1000 + 3 * REQUEST_WINDOW_SECS).unwrap();
        assert!(matches!(
            store.accept(&task("t-5"), b"bank/n1", 1000 + 3 * REQUEST_WINDOW_SECS).unwrap(),
            Accepted::New
        ));
    }
}
