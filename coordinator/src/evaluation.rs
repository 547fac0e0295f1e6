//! Homomorphic post-processing of federated statistics (design brief §4.3),
//! the coordinator's one computation.
//!
//! The requester's node generates a TFHE key pair for its task and sends
//! the sites its compact public key; each site encrypts what must not reach
//! the requester in the clear — its local minimum and maximum, and its
//! counts per cell (group sizes, histogram bins) — and deposits the
//! ciphertexts here ([`deposit`]), never with the requester, which holds
//! the key that decrypts them. The requester's node then uploads its server
//! key ([`evaluate`]). The coordinator takes the minimum or maximum across
//! the sites' deposits, adds the cell counts and replaces every pooled
//! count that is non-zero and below the largest minimum cohort among the
//! task's grants with a sentinel — all on ciphertexts, since a server key
//! decrypts nothing — and streams the results back for the requester's node
//! to decrypt. The deposits are consumed: a task is evaluated once.
//!
//! What the coordinator checks: a depositor is a site of the running
//! statistics task and deposits once, within size bounds (the lists'
//! lengths and structure are checked when they are expanded); the evaluator's caller is the task's requester and
//! every site has deposited. The minimum cohort comes from the grants on the
//! ledger, never from the caller. Evaluations run one at a time on a
//! blocking thread: each takes seconds of both cores (cost model in
//! `stayput_mpc_engine::fhe`). Trust: the coordinator and the requester
//! together could decrypt a site's values; the brief's trust model has them
//! not collude.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stayput_chain_connector::records::Computation;
use stayput_chain_connector::tasks::{SignedTaskRequest, StatsParams, TaskParams};
use stayput_mpc_engine::fhe::{self, Evaluator};
use stayput_mpc_engine::local::cells;
use stayput_mpc_engine::query::CohortQuery;
use stayput_proto::v1::{FheDeposit, FheDownload, FheUpload, fhe_download, fhe_upload};
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;

use crate::CoordinatorError;
use crate::service::Inner;
use crate::store::Phase;

/// Largest compressed server key accepted.
pub const SERVER_KEY_LIMIT: u64 = 1 << 28;

/// One evaluation at a time: each uses both cores for seconds.
static EVALUATIONS: Semaphore = Semaphore::const_new(1);

/// Most tasks with deposits held at once.
const MAX_TASKS: usize = 64;
/// How long deposits wait for their evaluation.
const KEPT_FOR: Duration = Duration::from_secs(900);

/// One site's encrypted extremes and cells.
type SiteInput = (Vec<u8>, Vec<u8>);

/// One task's deposits by site, and when the first came.
type TaskDeposits = (BTreeMap<String, SiteInput>, Instant);

/// Sites' deposits by task.
#[derive(Debug, Default)]
pub struct Deposits {
    tasks: Mutex<HashMap<String, TaskDeposits>>,
}

impl Deposits {
    fn put(&self, task: &str, site: &str, input: SiteInput) -> Result<(), CoordinatorError> {
        let mut tasks = self.tasks.lock().expect("deposits");
        tasks.retain(|_, (_, since)| since.elapsed() < KEPT_FOR);
        if !tasks.contains_key(task) && tasks.len() >= MAX_TASKS {
            return Err(CoordinatorError::Unavailable("too many tasks await post-processing; retry later".into()));
        }
        let (sites, _) = tasks.entry(task.to_owned()).or_insert_with(|| (BTreeMap::new(), Instant::now()));
        if sites.contains_key(site) {
            return Err(refused(format!("'{site}' has deposited for task '{task}' already")));
        }
        sites.insert(site.to_owned(), input);
        Ok(())
    }

    /// Every site's deposit for `task`, in `sites` order, consumed.
    fn take(&self, task: &str, sites: &[String]) -> Result<Vec<SiteInput>, CoordinatorError> {
        let mut tasks = self.tasks.lock().expect("deposits");
        let held = tasks
            .get(task)
            .map(|(d, _)| d)
            .ok_or_else(|| refused(format!("no site has deposited for task '{task}' (or it was evaluated already)")))?;
        let missing: Vec<&str> = sites.iter().filter(|s| !held.contains_key(*s)).map(String::as_str).collect();
        if !missing.is_empty() {
            return Err(refused(format!("no deposit from {} yet", missing.join(", "))));
        }
        let (mut held, _) = tasks.remove(task).expect("present");
        Ok(sites.iter().map(|s| held.remove(s).expect("checked")).collect())
    }
}

fn refused(reason: impl Into<String>) -> CoordinatorError {
    CoordinatorError::Refused(reason.into())
}

/// What an upload must hold, from the task as the coordinator and the
/// ledger know it.
struct Expected {
    task: String,
    sites: Vec<String>,
    extremes: Vec<fhe::Extreme>,
    cells: usize,
    min_cohort: u32,
}

/// What the task's post-processing takes; with `requester`, the caller must
/// be the task's requester (checked before anything about the task is said).
async fn expected(inner: &Arc<Inner>, task_id: &str, requester: Option<&str>) -> Result<Expected, CoordinatorError> {
    let (store, id) = (inner.store.clone(), task_id.to_owned());
    let stored = tokio::task::spawn_blocking(move || store.get(&id))
        .await
        .map_err(|e| CoordinatorError::Unavailable(e.to_string()))??
        .ok_or_else(|| CoordinatorError::UnknownTask(task_id.into()))?;
    let signed = hex::decode(&stored.signed_request)
        .ok()
        .and_then(|b| SignedTaskRequest::from_bytes(&b).ok())
        .ok_or_else(|| refused("the stored request does not decode"))?;
    let request = signed.request;
    if let Some(caller) = requester.filter(|c| *c != request.requester) {
        return Err(CoordinatorError::NotYourTask { caller: caller.into(), task: task_id.into() });
    }
    if request.kind != Computation::FederatedStats || stored.phase != Phase::Running {
        return Err(refused(format!("task '{task_id}' is not a running federated-statistics task")));
    }
    let TaskParams::FederatedStats(StatsParams { query }) =
        TaskParams::decode(request.kind, &request.params).map_err(|e| refused(e.to_string()))?
    else {
        return Err(refused("not federated-statistics parameters"));
    };
    let query = CohortQuery::from_json(&query).map_err(|e| refused(e.to_string()))?;
    let on_ledger = inner.ledger.task(task_id).await?.ok_or_else(|| CoordinatorError::UnknownTask(task_id.into()))?;
    let mut min_cohort = 0;
    for g in &on_ledger.task.grants {
        if let Some(grant) = inner.ledger.grant(g).await? {
            min_cohort = min_cohort.max(grant.grant.min_cohort);
        }
    }
    let mut sites = Vec::new();
    for d in &on_ledger.task.datasets {
        let owner = inner.ledger.dataset(d).await?.last().map(|v| v.owner.clone());
        sites.push(owner.ok_or_else(|| CoordinatorError::UnknownDataset { dataset: d.clone() })?);
    }
    Ok(Expected {
        task: task_id.to_owned(),
        sites,
        extremes: fhe::extreme_kinds(&query),
        cells: cells(&query).len(),
        min_cohort,
    })
}

/// A site's deposit for a running statistics task.
pub async fn deposit(inner: Arc<Inner>, caller: String, request: FheDeposit) -> Result<(), CoordinatorError> {
    let FheDeposit { task_id, extremes, cells } = request;
    stayput_node::wire::check_task_id(&task_id)?;
    let expected = expected(&inner, &task_id, None).await?;
    if !expected.sites.contains(&caller) {
        return Err(refused(format!("'{caller}' is not a site of task '{task_id}'")));
    }
    if extremes.len() as u64 > fhe::CIPHERTEXT_LIMIT || cells.len() as u64 > fhe::CIPHERTEXT_LIMIT {
        return Err(refused(format!("a deposit's lists are at most {} bytes each", fhe::CIPHERTEXT_LIMIT)));
    }
    inner.deposits.put(&task_id, &caller, (extremes.to_vec(), cells.to_vec()))?;
    tracing::info!(task = %task_id, site = %caller, "encrypted aggregates deposited");
    Ok(())
}

/// Reads an upload, evaluates it and returns the result messages.
pub async fn evaluate(
    inner: Arc<Inner>,
    caller: String,
    mut uploads: impl tokio_stream::Stream<Item = Result<FheUpload, tonic::Status>> + Unpin,
) -> Result<Vec<FheDownload>, CoordinatorError> {
    let mut next = async || -> Result<fhe_upload::Part, CoordinatorError> {
        let message = uploads
            .next()
            .await
            .ok_or_else(|| refused("the upload ended early"))?
            .map_err(|s| refused(format!("the upload failed: {}", s.message())))?;
        message.part.ok_or_else(|| refused("an upload message is empty"))
    };
    let fhe_upload::Part::Open(open) = next().await? else {
        return Err(refused("an upload starts with `open`"));
    };
    stayput_node::wire::check_task_id(&open.task_id)?;
    let expected = expected(&inner, &open.task_id, Some(&caller)).await?;
    if open.server_key_len == 0 || open.server_key_len > SERVER_KEY_LIMIT {
        return Err(refused(format!("a server key is 1 to {SERVER_KEY_LIMIT} bytes")));
    }
    let mut server_key = Vec::new();
    while (server_key.len() as u64) < open.server_key_len {
        let fhe_upload::Part::ServerKeyChunk(chunk) = next().await? else {
            return Err(refused("the server key's chunks come right after `open`"));
        };
        if server_key.len() as u64 + chunk.len() as u64 > open.server_key_len {
            return Err(refused("the server key's chunks exceed its announced length"));
        }
        server_key.extend_from_slice(&chunk);
    }
    if uploads.next().await.is_some() {
        return Err(refused("the upload holds more than the server key"));
    }
    let (extremes, cells): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
        inner.deposits.take(&expected.task, &expected.sites)?.into_iter().unzip();
    let _slot = EVALUATIONS.acquire().await.map_err(|e| CoordinatorError::Unavailable(e.to_string()))?;
    tracing::info!(task = %expected.task, sites = expected.sites.len(), "homomorphic post-processing");
    let started = std::time::Instant::now();
    let (extreme_cts, cell_cts) = tokio::task::spawn_blocking(move || {
        let evaluator = Evaluator::new(&server_key)?;
        Ok::<_, stayput_mpc_engine::MpcError>((
            evaluator.extremes(&expected.extremes, &extremes)?,
            evaluator.suppress(expected.cells, &cells, expected.min_cohort)?,
        ))
    })
    .await
    .map_err(|e| CoordinatorError::Unavailable(e.to_string()))?
    .map_err(|e| refused(e.to_string()))?;
    tracing::info!(elapsed_ms = started.elapsed().as_millis(), "homomorphic post-processing done");
    Ok(extreme_cts
        .into_iter()
        .map(|b| FheDownload { value: Some(fhe_download::Value::Extreme(b.into())) })
        .chain(cell_cts.into_iter().map(|b| FheDownload { value: Some(fhe_download::Value::Cell(b.into())) }))
        .collect())
}
