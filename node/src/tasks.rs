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
//! running again, and a task that is running is joined. Every protocol's
//! requester side hands back a [`TaskResult`] — its result file, written
//! atomically, its count and how the ledger sees it — and this runner
//! finishes every task the same way ([`crate::results`]): the outcome file,
//! written last, marks the task finished on this node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use stayput_chain_connector::records::{Computation, TaskStatus};
use stayput_chain_connector::tasks::{TaskParams, params_digest};
use stayput_psi::ecdh::OutputMode;
use tokio::sync::{mpsc, watch};

use crate::dataset::FileFormat;
use crate::psi::requester::{PsiRequest, run_psi};
use crate::results::{TaskResult, evidence_path, finish, read_outcome, result_path, write_text};
use crate::wire::Progress;
use crate::{NodeError, NodeState};

pub use crate::results::TaskOutcome;

type Shared = watch::Receiver<Option<Result<TaskOutcome, String>>>;

/// The tasks running on this node, so a second request joins the first.
#[derive(Debug, Default)]
pub struct TaskRegistry {
    running: Mutex<HashMap<String, Shared>>,
}

/// Runs (or joins, or reports) task `task_id` with `params`.
pub async fn run_task(
    state: Arc<NodeState>,
    task_id: String,
    params: Vec<u8>,
    shard: u32,
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
    let outcome = execute(&state, &task_id, &params, shard, progress).await;
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
    shard: u32,
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
    if task.task.requester() != state.config.org {
        return Err(refuse(format!(
            "it was requested by '{}', not by this node's organisation",
            task.task.requester()
        )));
    }
    if !matches!(task.status, TaskStatus::Submitted | TaskStatus::Running) {
        return Err(refuse(format!("it is {}", task.status)));
    }
    if params_digest(task.task.kind(), params) != task.task.params_digest() {
        return Err(refuse("the parameters given are not the ones recorded with the task".into()));
    }
    let decoded = TaskParams::decode(task.task.kind(), params).map_err(|e| refuse(e.to_string()))?;
    // Only a PSI task runs as shards; this node runs the shard its
    // configuration names, and refuses to be asked for another.
    let shards = match &decoded {
        TaskParams::Psi(p) => p.shards,
        _ => 1,
    };
    let shard = crate::psi::shards::own_shard(state, task_id, shards, Some(shard))?;
    let dir = &state.config.output_dir;
    let result = match decoded {
        TaskParams::Psi(p) => {
            if !task.task.datasets().contains(&p.peer_dataset) {
                return Err(refuse(format!("it does not read dataset '{}'", p.peer_dataset)));
            }
            let owner = ledger
                .dataset(&p.peer_dataset)
                .await
                .map_err(unavailable)?
                .last()
                .map(|v| v.owner.clone())
                .ok_or_else(|| refuse(format!("dataset '{}' is not on the ledger", p.peer_dataset)))?;
            let mode = match (task.task.kind(), p.delivery) {
                (Computation::PsiCardinality, _) => OutputMode::CardinalityOnly,
                (_, stayput_chain_connector::tasks::PsiDelivery::ToBoth) => OutputMode::IntersectionToBoth,
                _ => OutputMode::IntersectionToRequester,
            };
            let request = PsiRequest {
                task_id: task_id.to_owned(),
                dataset: p.requester_dataset,
                peer: owner,
                peer_dataset: p.peer_dataset,
                mode,
                protocol: match p.protocol {
                    stayput_chain_connector::tasks::PsiProtocol::Ecdh => stayput_psi::Protocol::Ecdh,
                    stayput_chain_connector::tasks::PsiProtocol::Kkrt => stayput_psi::Protocol::Kkrt,
                    stayput_chain_connector::tasks::PsiProtocol::Rr22 => stayput_psi::Protocol::Rr22,
                },
                parts: 0,
                output_format: FileFormat::Csv,
                shard,
            };
            let report = run_psi(state.clone(), request, progress).await?;
            let file = result_path(dir, task_id);
            let file_sha256 = match report.output {
                Some(written) => written.sha256,
                None => write_text(&file, &format!("intersection_keys\n{}\n", report.intersection_keys))?,
            };
            // A cardinality is the result itself: it stays on this node.
            let count_withheld = mode == OutputMode::CardinalityOnly;
            TaskResult { file_sha256, file, count: report.intersection_keys, intermediates: vec![], count_withheld }
        }
        TaskParams::Stats(_) => {
            let outcome = crate::stats::run_stats(state, task_id, params).await?;
            let evidence =
                serde_json::to_string_pretty(&outcome.evidence).map_err(|e| NodeError::Stats(e.to_string()))?;
            write_text(&evidence_path(dir, task_id), &evidence)?;
            let file = result_path(dir, task_id);
            let file_sha256 = write_text(&file, &outcome.table)?;
            TaskResult {
                file_sha256,
                file,
                count: outcome.cohort,
                intermediates: outcome.digests,
                count_withheld: false,
            }
        }
        TaskParams::Blacklist(p) => {
            if p.bureau_datasets != task.task.datasets() {
                return Err(refuse("its bureau datasets are not the task's datasets".into()));
            }
            let outcome = crate::blacklist::run_blacklist(state, task_id, p).await?;
            let file = result_path(dir, task_id);
            let file_sha256 = write_text(&file, &outcome.table)?;
            TaskResult { file_sha256, file, count: outcome.listings, intermediates: vec![], count_withheld: false }
        }
        TaskParams::ComputeOnly(p) => {
            if task.task.datasets() != [p.dataset.clone()] {
                return Err(refuse("its dataset is not the task's dataset".into()));
            }
            let file = crate::results::result_path_as(dir, task_id, p.format.extension());
            let outcome = crate::compute_only::run_compute_only(state, task_id, params, &p, &file).await?;
            TaskResult {
                file_sha256: outcome.sha256,
                file,
                count: outcome.groups_released,
                intermediates: vec![],
                count_withheld: false,
            }
        }
        TaskParams::Lookup(p) => {
            if task.task.datasets() != [p.dataset.clone()] {
                return Err(refuse("its dataset is not the task's dataset".into()));
            }
            let outcome = crate::lookup::run_lookup(state, task_id, &p).await?;
            let file = result_path(dir, task_id);
            let file_sha256 = write_text(&file, &outcome.table)?;
            tracing::info!(task = %task_id, lookups = outcome.lookups, found = outcome.found, "private lookup finished");
            TaskResult { file_sha256, file, count: outcome.lookups, intermediates: vec![], count_withheld: false }
        }
        TaskParams::Train(p) => {
            if task.task.datasets() != [p.peer_dataset.clone()] {
                return Err(refuse("its peer dataset is not the task's dataset".into()));
            }
            crate::learning::requester::run_train(state, task_id, p, progress).await?
        }
        TaskParams::Predict(p) => {
            if task.task.datasets() != [p.peer_dataset.clone()] {
                return Err(refuse("its peer dataset is not the task's dataset".into()));
            }
            crate::learning::requester::run_predict(state, task_id, p, progress).await?
        }
        _ => return Err(refuse(format!("{} tasks are not supported by this node yet", task.task.kind()))),
    };
    finish(dir, task_id, result)
}
