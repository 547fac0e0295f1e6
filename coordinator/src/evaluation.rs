//! Homomorphic post-processing of federated statistics (design brief §4.3),
//! the coordinator's one computation.
//!
//! The requester's node generates a TFHE key pair for its task and sends
//! the sites its compact public key; each site encrypts what must not reach
//! the requester in the clear — its local minimum and maximum, and its
//! counts per cell (group sizes, histogram bins) — and returns the
//! ciphertexts with its contribution. The requester's node then uploads its
//! server key and the sites' ciphertexts here ([`evaluate`]). The
//! coordinator takes the minimum or maximum across sites, adds the cell
//! counts and replaces every pooled count that is non-zero and below the
//! largest minimum cohort among the task's grants with a sentinel — all on
//! ciphertexts, since a server key decrypts nothing — and streams the
//! results back for the requester's node to decrypt.
//!
//! What the coordinator checks first: the caller is the task's requester,
//! the task is running and is federated statistics, the upload holds one
//! input per site in the task's order, and every part is within its size
//! bound. The minimum cohort comes from the grants on the ledger, never from
//! the caller. Evaluations run one at a time on a blocking thread: each
//! takes seconds of both cores (cost model in `stayput_mpc_engine::fhe`).

use std::sync::Arc;

use stayput_chain_connector::records::Computation;
use stayput_chain_connector::tasks::{SignedTaskRequest, StatsParams, TaskParams};
use stayput_mpc_engine::fhe::{self, Evaluator};
use stayput_mpc_engine::local::cells;
use stayput_mpc_engine::query::CohortQuery;
use stayput_proto::v1::{FheDownload, FheUpload, fhe_download, fhe_upload};
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;

use crate::CoordinatorError;
use crate::service::Inner;
use crate::store::Phase;

/// Largest compressed server key accepted.
pub const SERVER_KEY_LIMIT: u64 = 1 << 28;

/// One evaluation at a time: each uses both cores for seconds.
static EVALUATIONS: Semaphore = Semaphore::const_new(1);

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

async fn expected(inner: &Arc<Inner>, caller: &str, task_id: &str) -> Result<Expected, CoordinatorError> {
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
    if request.requester != caller {
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
    let expected = expected(&inner, &caller, &open.task_id).await?;
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
    let (mut extremes, mut cells) = (Vec::new(), Vec::new());
    for site in &expected.sites {
        let fhe_upload::Part::Site(input) = next().await? else {
            return Err(refused("after the server key comes one input per site"));
        };
        if &input.site != site {
            return Err(refused(format!("expected the input of '{site}' next, got one for '{}'", input.site)));
        }
        if input.extremes.len() as u64 > fhe::CIPHERTEXT_LIMIT || input.cells.len() as u64 > fhe::CIPHERTEXT_LIMIT {
            return Err(refused(format!("the input of '{site}' exceeds {} bytes", fhe::CIPHERTEXT_LIMIT)));
        }
        extremes.push(input.extremes.to_vec());
        cells.push(input.cells.to_vec());
    }
    if uploads.next().await.is_some() {
        return Err(refused("the upload holds more than one input per site"));
    }
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
