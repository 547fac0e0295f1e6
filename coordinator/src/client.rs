//! The requester's side: build and sign a task request, submit it to the
//! coordinator over mTLS, follow it to its end.

use stayput_chain_connector::records::{Computation, LedgerId, OrgKey};
use stayput_chain_connector::tasks::{SignedTaskRequest, TaskParams, TaskRequest};
use stayput_identity::TlsMaterial;
use stayput_proto::v1::coordinator_client::CoordinatorClient;
use stayput_proto::v1::{SubmitTaskRequest, TaskState, TaskUpdate, WatchTaskRequest};
use tonic::transport::Channel;

use crate::CoordinatorError;
pub use crate::store::Phase;

/// A task as the requester describes it.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// What it computes.
    pub kind: Computation,
    /// Ledger datasets it reads.
    pub datasets: Vec<String>,
    /// Who receives the result.
    pub receiver: String,
    /// Its parameters.
    pub params: TaskParams,
}

/// Signs `spec` as `requester` with a fresh nonce, issued at `now`, for
/// the ledger `ledger` (as the requester's own verified view of the ledger
/// names it, never as the coordinator says).
pub fn sign(spec: &TaskSpec, requester: &str, key: &OrgKey, now: u64, ledger: LedgerId) -> SignedTaskRequest {
    let mut nonce = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    TaskRequest {
        requester: requester.into(),
        kind: spec.kind,
        datasets: spec.datasets.clone(),
        receiver: spec.receiver.clone(),
        params: spec.params.encode(),
        nonce,
        issued_at: now,
        ledger,
    }
    .sign(key)
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A task's state as the coordinator reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskReport {
    /// The task id.
    pub task_id: String,
    /// Where it is.
    pub phase: Phase,
    /// What its protocol is doing now.
    pub step: String,
    /// Items done in that step.
    pub done: u64,
    /// Items in that step.
    pub total: u64,
    /// SHA-256 of the result file on the receiver's node, hex.
    pub result_digest: String,
    /// Who received the result.
    pub receiver: String,
    /// Why it failed.
    pub error: String,
    /// The result's size in its own unit (common keys for PSI).
    pub result_count: u64,
}

impl TaskReport {
    fn from_wire(u: TaskUpdate) -> Self {
        let phase = match TaskState::try_from(u.state) {
            Ok(TaskState::Recorded) => Phase::Recorded,
            Ok(TaskState::Running) => Phase::Running,
            Ok(TaskState::Succeeded) => Phase::Succeeded,
            Ok(TaskState::Failed) => Phase::Failed,
            _ => Phase::Accepted,
        };
        Self {
            task_id: u.task_id,
            phase,
            step: u.phase,
            done: u.done,
            total: u.total,
            result_digest: u.result_digest,
            receiver: u.receiver,
            error: u.error,
            result_count: u.result_count,
        }
    }
}

/// A connection to the coordinator.
#[derive(Debug, Clone)]
pub struct Client {
    inner: CoordinatorClient<Channel>,
}

/// What a submission returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The task id.
    pub task_id: String,
    /// The grants it relies on.
    pub grants: Vec<String>,
    /// Whether this request had been submitted before.
    pub existing: bool,
}

fn refused(status: tonic::Status) -> CoordinatorError {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown => CoordinatorError::Unavailable(status.message().to_owned()),
        _ => CoordinatorError::Refused(status.message().to_owned()),
    }
}

impl Client {
    /// Connects to the coordinator at `endpoint`, whose certificate must
    /// name `operator`.
    pub async fn connect(tls: &TlsMaterial, operator: &str, endpoint: &str) -> Result<Self, CoordinatorError> {
        let channel = stayput_identity::dial(tls, operator, endpoint).await?;
        Ok(Self { inner: CoordinatorClient::new(channel) })
    }

    /// Submits a signed request. A refusal comes back as
    /// [`CoordinatorError::Refused`] carrying the coordinator's reason.
    pub async fn submit(&mut self, signed: &SignedTaskRequest) -> Result<Submitted, CoordinatorError> {
        let response = self
            .inner
            .submit_task(SubmitTaskRequest { signed_request: signed.to_bytes().into() })
            .await
            .map_err(refused)?
            .into_inner();
        Ok(Submitted { task_id: response.task_id, grants: response.grants, existing: response.existing })
    }

    /// Follows a task, calling `on_update` for each change, and returns its
    /// final update.
    pub async fn follow(
        &mut self,
        task_id: &str,
        mut on_update: impl FnMut(&TaskReport),
    ) -> Result<TaskReport, CoordinatorError> {
        let mut updates =
            self.inner.watch_task(WatchTaskRequest { task_id: task_id.into() }).await.map_err(refused)?.into_inner();
        let mut last = None;
        while let Some(update) = updates.message().await.map_err(refused)? {
            let report = TaskReport::from_wire(update);
            on_update(&report);
            let done = report.phase.is_final();
            last = Some(report);
            if done {
                break;
            }
        }
        last.filter(|r| r.phase.is_final()).ok_or_else(|| {
            CoordinatorError::Unavailable(format!(
                "it stopped reporting task '{task_id}' before it ended; watch it again"
            ))
        })
    }
}
