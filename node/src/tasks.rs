//! Running a task recorded on the ledger, as its requester's node.
//!
//! The coordinator (or the organisation itself) hands this node a task id
//! and the task's canonical parameters. The node trusts neither: it reads
//! the task from the ledger and runs it only if the ledger shows it
//! requested by this node's organisation, still submitted or running, and
//! recorded with exactly these parameters (their digest is the task
//! record's). The peer node then makes its own check of the ledger before
//! it serves ([`crate::authorisation`]).
//!
//! Running is idempotent, so a coordinator that restarts can simply ask
//! again: a task whose result is on disk returns that result without
//! running again, and a task that is running is joined. Every task leaves
//! one result file, `<output_dir>/<task>.csv` (the common rows for `psi`, a
//! one-row count for `psi_cardinality`) — its SHA-256 is the result digest
//! the ledger records — and a small `<task>.outcome` file written after it,
//! which marks the task finished on this node.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};
use stayput_chain_connector::records::{Computation, TaskStatus};
use stayput_chain_connector::tasks::{TaskParams, params_digest};
use stayput_psi::ecdh::OutputMode;
use tokio::sync::{mpsc, watch};

use crate::dataset::FileFormat;
use crate::requester::{Progress, PsiRequest, run_psi};
use crate::{NodeError, NodeState};

/// What a finished task left on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    /// The task.
    pub task: String,
    /// The result file.
    pub result_file: PathBuf,
    /// SHA-256 of the result file.
    pub result_sha256: [u8; 32],
    /// The result's size in its own unit (common keys for PSI, cohort rows
    /// for statistics).
    pub result_count: u64,
    /// Digests of key intermediate values (sites' commitments).
    pub intermediates: Vec<[u8; 32]>,
}

type Shared = watch::Receiver<Option<Result<TaskOutcome, String>>>;

/// The tasks running on this node, so a second request joins the first.
#[derive(Debug, Default)]
pub struct TaskRegistry {
    running: Mutex<HashMap<String, Shared>>,
}

fn outcome_path(dir: &Path, task: &str) -> PathBuf {
    dir.join(format!("{task}.outcome"))
}

/// The result file of `task` under a node's output folder (CSV, what
/// every task but a compute-only one in another format writes).
pub fn result_path(dir: &Path, task: &str) -> PathBuf {
    dir.join(format!("{task}.csv"))
}

/// The result file of `task` with extension `ext`.
pub fn result_path_as(dir: &Path, task: &str, ext: &str) -> PathBuf {
    dir.join(format!("{task}.{ext}"))
}

/// The result file a finished task left (whatever its format), or the CSV
/// path when the task has not finished here.
pub fn result_file(dir: &Path, task: &str) -> PathBuf {
    read_outcome(dir, task).ok().flatten().map_or_else(|| result_path(dir, task), |o| o.result_file)
}

/// The evidence file of a statistics task (commitments, proofs, pooled
/// opening) beside its result.
pub fn evidence_path(dir: &Path, task: &str) -> PathBuf {
    dir.join(format!("{task}.evidence.json"))
}

/// The salt of a lookup task's result commitment
/// ([`crate::pir::result_commitment`]), hex, beside its result.
pub fn salt_path(dir: &Path, task: &str) -> PathBuf {
    dir.join(format!("{task}.salt"))
}

/// SHA-256 of a file's bytes.
pub fn file_sha256(path: &Path) -> Result<[u8; 32], NodeError> {
    let mut file = std::fs::File::open(path).map_err(|source| NodeError::ReadFile { path: path.into(), source })?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|source| NodeError::ReadFile { path: path.into(), source })?;
    Ok(hasher.finalize().into())
}

/// Writes `text` to `path` durably and atomically; never replaces a file.
fn write_new(path: &Path, text: &str) -> Result<(), NodeError> {
    let io_err = |source| NodeError::WriteFile { path: path.into(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err)?;
    let mut temp = tempfile::Builder::new().prefix(".partial-").tempfile_in(dir).map_err(io_err)?;
    temp.write_all(text.as_bytes()).map_err(io_err)?;
    temp.as_file().sync_all().map_err(io_err)?;
    temp.persist_noclobber(path).map_err(|e| match e.error.kind() {
        std::io::ErrorKind::AlreadyExists => NodeError::ResultExists { path: path.into() },
        _ => io_err(e.error),
    })?;
    Ok(())
}

/// Reads a finished task's outcome, checking the result file still has the
/// digest it was written with.
fn read_outcome(dir: &Path, task: &str) -> Result<Option<TaskOutcome>, NodeError> {
    let path = outcome_path(dir, task);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(NodeError::ReadFile { path, source }),
    };
    let damaged = |what: &str| NodeError::InvalidConfig(format!("{} is damaged ({what}); remove it", path.display()));
    let mut fields = HashMap::new();
    for line in text.lines() {
        let (k, v) = line.split_once('=').ok_or_else(|| damaged("a line without '='"))?;
        fields.insert(k, v);
    }
    let digest: [u8; 32] = fields
        .get("sha256")
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| damaged("no sha256"))?;
    let count = fields.get("count").and_then(|c| c.parse().ok()).ok_or_else(|| damaged("no count"))?;
    let intermediates = fields
        .get("intermediates")
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').map(|h| hex::decode(h).ok().and_then(|b| b.try_into().ok())).collect::<Option<Vec<_>>>())
        .unwrap_or(Some(vec![]))
        .ok_or_else(|| damaged("bad intermediates"))?;
    let result_file = match fields.get("file") {
        Some(name) if !name.is_empty() && !name.contains(['/', '\\']) && !name.starts_with('.') => dir.join(name),
        Some(_) => return Err(damaged("a result file name that is not a plain name")),
        None => result_path(dir, task),
    };
    if file_sha256(&result_file)? != digest {
        return Err(NodeError::InvalidConfig(format!(
            "the result file {} no longer has the digest it was written with; it was changed after the task ran",
            result_file.display()
        )));
    }
    Ok(Some(TaskOutcome { task: task.into(), result_file, result_sha256: digest, result_count: count, intermediates }))
}

/// Marks a task finished on this node (after its result file is durable).
fn finished(
    dir: &Path,
    task: &str,
    result_sha256: [u8; 32],
    count: u64,
    intermediates: Vec<[u8; 32]>,
) -> Result<TaskOutcome, NodeError> {
    finished_with(dir, task, &result_path(dir, task), result_sha256, count, intermediates)
}

/// [`finished`] for a result file under another name in `dir`.
fn finished_with(
    dir: &Path,
    task: &str,
    result_file: &Path,
    result_sha256: [u8; 32],
    count: u64,
    intermediates: Vec<[u8; 32]>,
) -> Result<TaskOutcome, NodeError> {
    let listed: Vec<String> = intermediates.iter().map(hex::encode).collect();
    let name = result_file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let text = format!(
        "sha256={}\ncount={count}\nintermediates={}\nfile={name}\n",
        hex::encode(result_sha256),
        listed.join(",")
    );
    write_new(&outcome_path(dir, task), &text)?;
    tracing::info!(task = %task, "task finished; result written on this node");
    Ok(TaskOutcome {
        task: task.to_owned(),
        result_file: result_file.to_path_buf(),
        result_sha256,
        result_count: count,
        intermediates,
    })
}

/// Runs (or joins, or reports) task `task_id` with `params`.
pub async fn run_task(
    state: Arc<NodeState>,
    task_id: String,
    params: Vec<u8>,
    progress: mpsc::UnboundedSender<Progress>,
) -> Result<TaskOutcome, NodeError> {
    crate::wire::check_task_id(&task_id)?;
    let dir = state.config.output_dir.clone();
    if let Some(done) = read_outcome(&dir, &task_id)? {
        return Ok(done);
    }
    let joined = {
        let mut running = state.tasks.running.lock().expect("task registry");
        match running.get(&task_id) {
            Some(rx) => Err(rx.clone()),
            None => {
                let (tx, rx) = watch::channel(None);
                running.insert(task_id.clone(), rx);
                Ok(tx)
            }
        }
    };
    let tx = match joined {
        Ok(tx) => tx,
        Err(mut rx) => {
            tracing::info!(task = %task_id, "task is running here already; joining it");
            return match rx.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone().expect("waited for").map_err(NodeError::NodeReported),
                // The first run was cancelled (its caller went away): its
                // outcome, if it got that far, is on disk.
                Err(_) => read_outcome(&dir, &task_id)?.ok_or(NodeError::Cancelled),
            };
        }
    };
    // Unregister however this ends, cancellation included, so a later
    // request (a resumed coordinator) runs or joins afresh.
    let _registered = Unregister { state: &state, task: &task_id };
    // The first run may have finished between the check above and our
    // registration.
    if let Some(done) = read_outcome(&dir, &task_id)? {
        return Ok(done);
    }
    let outcome = execute(&state, &task_id, &params, progress).await;
    let _ = tx.send(Some(outcome.as_ref().map(Clone::clone).map_err(ToString::to_string)));
    outcome
}

/// Removes a task from the registry when dropped.
struct Unregister<'a> {
    state: &'a NodeState,
    task: &'a str,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.state.tasks.running.lock().expect("task registry").remove(self.task);
    }
}

async fn execute(
    state: &Arc<NodeState>,
    task_id: &str,
    params: &[u8],
    progress: mpsc::UnboundedSender<Progress>,
) -> Result<TaskOutcome, NodeError> {
    let refuse = |reason: String| NodeError::NotAuthorised { task: task_id.to_owned(), reason };
    let access = state
        .ledger
        .as_ref()
        .ok_or_else(|| refuse("this node has no [ledger] configured, so it cannot check tasks".into()))?;
    let ledger = &access.ledger;
    let unavailable = NodeError::from_ledger;
    let task = ledger.task(task_id).await.map_err(unavailable)?.ok_or_else(|| refuse("not on the ledger".into()))?;
    if task.task.requester != state.config.org {
        return Err(refuse(format!("it was requested by '{}', not by this node's organisation", task.task.requester)));
    }
    if !matches!(task.status, TaskStatus::Submitted | TaskStatus::Running) {
        return Err(refuse(format!("it is {}", task.status)));
    }
    if params_digest(task.task.kind, params) != task.task.params_digest {
        return Err(refuse("the parameters given are not the ones recorded with the task".into()));
    }
    let decoded = TaskParams::decode(task.task.kind, params).map_err(|e| refuse(e.to_string()))?;
    match decoded {
        TaskParams::Psi(p) => {
            if !task.task.datasets.contains(&p.peer_dataset) {
                return Err(refuse(format!("it does not read dataset '{}'", p.peer_dataset)));
            }
            let owner = ledger
                .dataset(&p.peer_dataset)
                .await
                .map_err(unavailable)?
                .last()
                .map(|v| v.owner.clone())
                .ok_or_else(|| refuse(format!("dataset '{}' is not on the ledger", p.peer_dataset)))?;
            let mode = match task.task.kind {
                Computation::PsiCardinality => OutputMode::CardinalityOnly,
                _ => OutputMode::IntersectionToRequester,
            };
            let request = PsiRequest {
                task_id: task_id.to_owned(),
                dataset: p.requester_dataset,
                peer: owner,
                peer_dataset: p.peer_dataset,
                mode,
                output_format: FileFormat::Csv,
            };
            let report = run_psi(state.clone(), request, progress).await?;
            let dir = &state.config.output_dir;
            let result_file = result_path(dir, task_id);
            let result_sha256 = match report.output {
                Some(written) => written.sha256,
                None => {
                    write_new(&result_file, &format!("intersection_keys\n{}\n", report.intersection_keys))?;
                    file_sha256(&result_file)?
                }
            };
            finished(dir, task_id, result_sha256, report.intersection_keys, vec![])
        }
        TaskParams::FederatedStats(_) => {
            let outcome = crate::stats::run_stats(state, task_id, params).await?;
            let dir = &state.config.output_dir;
            let evidence =
                serde_json::to_string_pretty(&outcome.evidence).map_err(|e| NodeError::Stats(e.to_string()))?;
            write_new(&evidence_path(dir, task_id), &evidence)?;
            let result_file = result_path(dir, task_id);
            write_new(&result_file, &outcome.table)?;
            finished(dir, task_id, file_sha256(&result_file)?, outcome.cohort, outcome.digests)
        }
        TaskParams::LabeledPsi(p) => {
            if p.bureau_datasets != task.task.datasets {
                return Err(refuse("its bureau datasets are not the task's datasets".into()));
            }
            let outcome = crate::blacklist::run_blacklist(state, task_id, p).await?;
            let dir = &state.config.output_dir;
            let result_file = result_path(dir, task_id);
            write_new(&result_file, &outcome.table)?;
            finished(dir, task_id, file_sha256(&result_file)?, outcome.listings, vec![])
        }
        TaskParams::ComputeOnly(p) => {
            if task.task.datasets != [p.dataset.clone()] {
                return Err(refuse("its dataset is not the task's dataset".into()));
            }
            let dir = &state.config.output_dir;
            let result_file = result_path_as(dir, task_id, p.format.extension());
            let outcome = crate::aggregate::run_compute_only(state, task_id, params, &p, &result_file).await?;
            finished_with(dir, task_id, &result_file, outcome.sha256, outcome.groups_released, vec![])
        }
        TaskParams::Pir(p) => {
            if task.task.datasets != [p.dataset.clone()] {
                return Err(refuse("its dataset is not the task's dataset".into()));
            }
            let outcome = crate::pir::run_lookup(state, task_id, &p).await?;
            let dir = &state.config.output_dir;
            let result_file = result_path(dir, task_id);
            // The ledger gets a salted commitment, not the file's digest: an
            // owner hashing candidate records must not recognise the result.
            let mut salt = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
            write_new(&salt_path(dir, task_id), &hex::encode(salt))?;
            write_new(&result_file, &outcome.table)?;
            let commitment = crate::pir::result_commitment(&salt, &file_sha256(&result_file)?);
            tracing::info!(task = %task_id, lookups = outcome.lookups, found = outcome.found, "private lookup finished");
            finished(dir, task_id, commitment, outcome.lookups, vec![])
        }
        _ => Err(refuse(format!("{} tasks are not supported by this node yet", task.task.kind))),
    }
}
