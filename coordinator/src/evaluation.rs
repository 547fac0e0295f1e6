//! Homomorphic post-processing of federated statistics (design brief §4.3),
//! the coordinator's one computation, in two phases per task (see
//! the node's `stats` module for the protocol).
//!
//! * **Census.** Each site deposits, encrypted under the requester's TFHE
//!   key, its count at every gate (group sizes, measures' n, histogram
//!   bins) and a token per gate. The requester's node uploads its server
//!   key; the coordinator adds the counts of every site except the
//!   requester's own, compares each sum with the largest minimum cohort
//!   among the task's grants, and answers per site and gate with the
//!   site's token where the gate passes and 0 where it does not — on
//!   ciphertexts, since a server key decrypts nothing.
//! * **Extremes.** Sites deposit their min/max of what passed; the
//!   coordinator takes them across sites.
//!
//! Deposits are consumed: each phase of a task is evaluated once.
//!
//! What the coordinator checks: a depositor is a site of the running
//! statistics task (from its certificate) and deposits once per phase,
//! within size bounds (the lists' lengths and structure are checked when
//! they are expanded); the evaluator's caller is the task's requester and
//! every site has deposited. The minimum cohort comes from the grants on
//! the ledger, never from the caller; the requester's own census is never
//! counted. Evaluations run one at a time on a blocking thread: each takes
//! seconds of both cores (cost model in `stayput_mpc_engine::fhe`). Trust:
//! the coordinator and the requester together could decrypt a site's
//! values, and the coordinator could answer tokens of gates that do not
//! pass; the brief's trust model has them not collude.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stayput_chain_connector::records::Computation;
use stayput_chain_connector::tasks::{SignedTaskRequest, StatsParams, TaskParams, check_task_id};
use stayput_mpc_engine::fhe::{self, Evaluator};
use stayput_mpc_engine::gates::{MAX_GATES, families};
use stayput_mpc_engine::query::CohortQuery;
use stayput_proto::v1::{FheDeposit, FheDownload, FhePhase, FheUpload, fhe_download, fhe_upload};
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;

use crate::CoordinatorError;
use crate::service::Inner;
use crate::store::Phase;

/// Largest compressed server key accepted.
pub const SERVER_KEY_LIMIT: u64 = 1 << 28;

/// One evaluation at a time: each uses both cores for seconds.
static EVALUATIONS: Semaphore = Semaphore::const_new(1);
/// Server keys being received at once: each is buffered (up to
/// [`SERVER_KEY_LIMIT`]) only under one of these slots, taken before the
/// first chunk is read.
static UPLOADS: Semaphore = Semaphore::const_new(2);
/// How long a server key upload may take (a slow sender releases its slot).
const UPLOAD_DEADLINE: Duration = Duration::from_secs(120);

/// Most tasks with deposits held at once.
const MAX_TASKS: usize = 64;
/// How long deposits wait for their evaluation.
const KEPT_FOR: Duration = Duration::from_secs(900);

/// A step of post-processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Step {
    Census,
    Extremes,
}

impl Step {
    /// The phase a message names; protocol 1's messages name none.
    fn from_wire(value: i32) -> Result<Self, CoordinatorError> {
        match FhePhase::try_from(value) {
            Ok(FhePhase::Census) => Ok(Self::Census),
            Ok(FhePhase::Extremes) => Ok(Self::Extremes),
            _ => Err(refused(
                "the message names no post-processing phase: it is of stats protocol 1, and this coordinator speaks protocol 2 (census, then extremes); upgrade the node",
            )),
        }
    }
}

/// One task's deposits of one phase by site, and when the first came.
type TaskDeposits = (BTreeMap<String, Vec<u8>>, Instant);

/// Sites' deposits by task and phase.
#[derive(Debug, Default)]
pub struct Deposits {
    tasks: Mutex<HashMap<(String, Step), TaskDeposits>>,
}

impl Deposits {
    fn put(&self, task: &str, phase: Step, site: &str, input: Vec<u8>) -> Result<(), CoordinatorError> {
        let mut tasks = self.tasks.lock().expect("deposits");
        tasks.retain(|_, (_, since)| since.elapsed() < KEPT_FOR);
        let key = (task.to_owned(), phase);
        if !tasks.contains_key(&key) && tasks.len() >= MAX_TASKS {
            return Err(CoordinatorError::Unavailable("too many tasks await post-processing; retry later".into()));
        }
        let (sites, _) = tasks.entry(key).or_insert_with(|| (BTreeMap::new(), Instant::now()));
        if sites.contains_key(site) {
            return Err(refused(format!("'{site}' has deposited for this phase of task '{task}' already")));
        }
        sites.insert(site.to_owned(), input);
        Ok(())
    }

    /// Every site's deposit for `task` and `phase`, in `sites` order, consumed.
    fn take(&self, task: &str, phase: Step, sites: &[String]) -> Result<Vec<Vec<u8>>, CoordinatorError> {
        let mut tasks = self.tasks.lock().expect("deposits");
        let key = (task.to_owned(), phase);
        let held = tasks.get(&key).map(|(d, _)| d).ok_or_else(|| {
            refused(format!("no site has deposited for this phase of task '{task}' (or it was evaluated already)"))
        })?;
        let missing: Vec<&str> = sites.iter().filter(|s| !held.contains_key(*s)).map(String::as_str).collect();
        if !missing.is_empty() {
            return Err(refused(format!("no deposit from {} yet", missing.join(", "))));
        }
        let (mut held, _) = tasks.remove(&key).expect("present");
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
    requester: String,
    sites: Vec<String>,
    extremes: Vec<fhe::Extreme>,
    families: Vec<Option<usize>>,
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
    if request.kind != Computation::Stats || stored.phase != Phase::Running {
        return Err(refused(format!("task '{task_id}' is not a running federated-statistics task")));
    }
    let TaskParams::Stats(StatsParams { query, .. }) =
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
    for d in on_ledger.task.datasets() {
        let owner = inner.ledger.dataset(d).await?.last().map(|v| v.owner.clone());
        sites.push(owner.ok_or_else(|| CoordinatorError::UnknownDataset { dataset: d.clone() })?);
    }
    Ok(Expected {
        task: task_id.to_owned(),
        requester: request.requester,
        sites,
        extremes: fhe::extreme_kinds(&query),
        families: families(&query),
        min_cohort,
    })
}

/// A site's deposit for a running statistics task.
pub async fn deposit(inner: Arc<Inner>, caller: String, request: FheDeposit) -> Result<(), CoordinatorError> {
    let FheDeposit { task_id, extremes, phase, census } = request;
    check_task_id(&task_id)?;
    let phase = Step::from_wire(phase)?;
    let expected = expected(&inner, &task_id, None).await?;
    if !expected.sites.contains(&caller) {
        return Err(refused(format!("'{caller}' is not a site of task '{task_id}'")));
    }
    let list = match phase {
        Step::Census if extremes.is_empty() => census,
        Step::Extremes if census.is_empty() => extremes,
        _ => return Err(refused("a deposit holds the list of its phase only")),
    };
    if list.len() as u64 > fhe::CIPHERTEXT_LIMIT {
        return Err(refused(format!("a deposit's list is at most {} bytes", fhe::CIPHERTEXT_LIMIT)));
    }
    inner.deposits.put(&task_id, phase, &caller, list.to_vec())?;
    tracing::info!(task = %task_id, site = %caller, phase = ?phase, "encrypted aggregates deposited");
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
    check_task_id(&open.task_id)?;
    let phase = Step::from_wire(open.phase)?;
    let expected = expected(&inner, &open.task_id, Some(&caller)).await?;
    if phase == Step::Census && (expected.min_cohort <= 1 || expected.families.len() > MAX_GATES) {
        return Err(refused(format!(
            "a census needs a grant with a minimum cohort above 1 and at most {MAX_GATES} gates (the query has {})",
            expected.families.len()
        )));
    }
    if open.server_key_len == 0 || open.server_key_len > SERVER_KEY_LIMIT {
        return Err(refused(format!("a server key is 1 to {SERVER_KEY_LIMIT} bytes")));
    }
    // A slot before any byte of the key is buffered, and a deadline on the
    // whole upload: members cannot pile up keys in the coordinator's memory.
    let _upload = UPLOADS
        .try_acquire()
        .map_err(|_| CoordinatorError::Unavailable("other server keys are being received; retry shortly".into()))?;
    let receive = async {
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
        if next().await.is_ok() {
            return Err(refused("the upload holds more than the server key"));
        }
        Ok(server_key)
    };
    let server_key = tokio::time::timeout(UPLOAD_DEADLINE, receive)
        .await
        .map_err(|_| refused(format!("the server key did not arrive within {} s", UPLOAD_DEADLINE.as_secs())))??;
    let deposits = inner.deposits.take(&expected.task, phase, &expected.sites)?;
    let _slot = EVALUATIONS.acquire().await.map_err(|e| CoordinatorError::Unavailable(e.to_string()))?;
    tracing::info!(task = %expected.task, sites = expected.sites.len(), phase = ?phase, "homomorphic post-processing");
    let started = std::time::Instant::now();
    let results = tokio::task::spawn_blocking(move || {
        let evaluator = Evaluator::new(&server_key)?;
        match phase {
            Step::Extremes => Ok::<_, stayput_mpc_engine::MpcError>(
                evaluator
                    .extremes(&expected.extremes, &deposits)?
                    .into_iter()
                    .map(|b| FheDownload { value: Some(fhe_download::Value::Extreme(b.into())) })
                    .collect::<Vec<_>>(),
            ),
            Step::Census => {
                // The requester's own counts never count: it could lift a
                // small cell with its own rows and subtract them later.
                let sites: Vec<(Vec<u8>, bool)> = deposits
                    .into_iter()
                    .zip(&expected.sites)
                    .map(|(list, site)| (list, site != &expected.requester))
                    .collect();
                Ok(evaluator
                    .census(&expected.families, &sites, expected.min_cohort)?
                    .into_iter()
                    .flatten()
                    .map(|b| FheDownload { value: Some(fhe_download::Value::Token(b.into())) })
                    .collect())
            }
        }
    })
    .await
    .map_err(|e| CoordinatorError::Unavailable(e.to_string()))?
    .map_err(|e| refused(e.to_string()))?;
    tracing::info!(elapsed_ms = started.elapsed().as_millis(), phase = ?phase, "homomorphic post-processing done");
    Ok(results)
}
