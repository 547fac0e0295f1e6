//! The `Coordinator` gRPC service: signed task submissions in, task
//! updates out. Each task is driven on its own tokio task, so tasks in
//! flight never wait on each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use stayput_chain_connector::Ledger;
use stayput_chain_connector::records::OrgKey;
use stayput_chain_connector::tasks::SignedTaskRequest;
use stayput_identity::{TlsMaterial, caller_org};
use stayput_proto::v1::coordinator_server::Coordinator as CoordinatorRpc;
use stayput_proto::v1::{
    FheDeposit, FheDepositResponse, FheDownload, FheUpload, SubmitTaskRequest, SubmitTaskResponse, TaskState,
    TaskUpdate, WatchTaskRequest,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::CoordinatorError;
use crate::admission::admit;
use crate::store::{Accepted, Phase, Store, StoredTask};

/// Progress a node reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Phase name.
    pub phase: String,
    /// Items done.
    pub done: u64,
    /// Items in the phase.
    pub total: u64,
}

/// A task as watchers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    /// Stored state.
    pub task: StoredTask,
    /// Who receives the result.
    pub receiver: String,
    /// Latest progress.
    pub progress: Progress,
}

/// The clock admission judges issue times by (unix seconds).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What the service and its drivers share.
pub struct Inner {
    /// The operator organisation.
    pub org: String,
    /// The operator's signing key.
    pub key: OrgKey,
    /// The ledger.
    pub ledger: Arc<dyn Ledger>,
    /// TLS material for dialling nodes.
    pub tls: TlsMaterial,
    pub(crate) store: Arc<Store>,
    /// Sites' encrypted aggregates awaiting their task's post-processing.
    pub(crate) deposits: crate::evaluation::Deposits,
    views: Mutex<HashMap<String, watch::Sender<TaskView>>>,
    clock: Clock,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("org", &self.org).field("ledger", &self.ledger).finish_non_exhaustive()
    }
}

fn receiver_of(task: &StoredTask) -> String {
    hex::decode(&task.signed_request)
        .ok()
        .and_then(|b| SignedTaskRequest::from_bytes(&b).ok())
        .map(|s| s.request.receiver)
        .unwrap_or_default()
}

impl Inner {
    /// Shared state over a store and a ledger.
    pub fn new(
        org: String,
        key: OrgKey,
        ledger: Arc<dyn Ledger>,
        tls: TlsMaterial,
        store: Store,
        clock: Clock,
    ) -> Self {
        Self {
            org,
            key,
            ledger,
            tls,
            store: Arc::new(store),
            deposits: Default::default(),
            views: Mutex::new(HashMap::new()),
            clock,
        }
    }

    fn view_sender(&self, task: &StoredTask) -> watch::Sender<TaskView> {
        let mut views = self.views.lock().expect("views");
        views
            .entry(task.id.clone())
            .or_insert_with(|| {
                watch::channel(TaskView {
                    task: task.clone(),
                    receiver: receiver_of(task),
                    progress: Progress::default(),
                })
                .0
            })
            .clone()
    }

    /// Commits a task's state, then tells its watchers. A store that
    /// cannot be written is logged; the ledger still holds the truth and a
    /// restart resumes from it.
    pub async fn save(&self, task: &StoredTask) {
        let store = self.store.clone();
        let copy = task.clone();
        match tokio::task::spawn_blocking(move || store.put(&copy)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(task = %task.id, error = %e, "cannot store the task's state"),
            Err(e) => tracing::error!(task = %task.id, error = %e, "store worker failed"),
        }
        let sender = self.view_sender(task);
        sender.send_modify(|v| v.task = task.clone());
        if task.phase.is_final() {
            self.views.lock().expect("views").remove(&task.id);
        }
    }

    /// Tells a task's watchers about progress.
    pub fn progress(&self, task: &str, progress: Progress) {
        if let Some(sender) = self.views.lock().expect("views").get(task) {
            sender.send_modify(|v| v.progress = progress);
        }
    }

    /// Admits and records a signed request from `caller`; starts it.
    pub async fn submit(
        self: &Arc<Self>,
        signed: SignedTaskRequest,
        caller: &str,
    ) -> Result<(StoredTask, bool), CoordinatorError> {
        let now = (self.clock)();
        let admitted = admit(&*self.ledger, &signed, caller, now).await?;
        let task = StoredTask {
            id: admitted.task.id.clone(),
            signed_request: hex::encode(signed.to_bytes()),
            grants: admitted.task.grants.clone(),
            phase: Phase::Accepted,
            result_digest: None,
            result_count: 0,
            error: None,
        };
        let mut nonce_key = signed.request.requester.as_bytes().to_vec();
        nonce_key.push(0);
        nonce_key.extend_from_slice(&signed.request.nonce);
        let store = self.store.clone();
        let stored = task.clone();
        let accepted = tokio::task::spawn_blocking(move || store.accept(&stored, &nonce_key, now))
            .await
            .map_err(|e| CoordinatorError::Store { path: "coordinator state".into(), reason: e.to_string() })??;
        match accepted {
            Accepted::Existing(existing) => Ok((existing, true)),
            Accepted::New => {
                tracing::info!(task = %task.id, kind = %signed.request.kind, "task accepted");
                self.view_sender(&task);
                self.start(task.clone());
                Ok((task, false))
            }
        }
    }

    /// Drives `task` on its own tokio task.
    pub fn start(self: &Arc<Self>, task: StoredTask) {
        self.view_sender(&task);
        tokio::spawn(crate::driver::drive(self.clone(), task));
    }

    /// Resumes every unfinished task from the store.
    pub fn resume(self: &Arc<Self>) -> Result<usize, CoordinatorError> {
        let unfinished = self.store.unfinished()?;
        let count = unfinished.len();
        for task in unfinished {
            tracing::info!(task = %task.id, phase = ?task.phase, "resuming task");
            self.start(task);
        }
        Ok(count)
    }

    /// Watches a task: its view now, then each change.
    pub fn watch(&self, id: &str, caller: &str) -> Result<watch::Receiver<TaskView>, CoordinatorError> {
        let stored = self.store.get(id)?.ok_or_else(|| CoordinatorError::UnknownTask(id.into()))?;
        let requester = hex::decode(&stored.signed_request)
            .ok()
            .and_then(|b| SignedTaskRequest::from_bytes(&b).ok())
            .map(|s| s.request.requester)
            .unwrap_or_default();
        if caller != requester && caller != self.org {
            return Err(CoordinatorError::NotYourTask { caller: caller.into(), task: id.into() });
        }
        let live = self.views.lock().expect("views").get(id).map(watch::Sender::subscribe);
        Ok(live.unwrap_or_else(|| {
            watch::channel(TaskView { receiver: receiver_of(&stored), task: stored, progress: Progress::default() }).1
        }))
    }
}

/// The gRPC face of [`Inner`].
#[derive(Debug, Clone)]
pub struct CoordinatorService {
    inner: Arc<Inner>,
}

impl CoordinatorService {
    /// The service over shared state.
    pub fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }
}

/// A view as a wire update.
pub fn update_to_wire(view: &TaskView) -> TaskUpdate {
    let state = match view.task.phase {
        Phase::Accepted => TaskState::Accepted,
        Phase::Recorded => TaskState::Recorded,
        Phase::Running => TaskState::Running,
        Phase::Succeeded => TaskState::Succeeded,
        Phase::Failed => TaskState::Failed,
    };
    TaskUpdate {
        task_id: view.task.id.clone(),
        state: state as i32,
        phase: view.progress.phase.clone(),
        done: view.progress.done,
        total: view.progress.total,
        result_digest: view.task.result_digest.clone().unwrap_or_default(),
        receiver: view.receiver.clone(),
        error: view.task.error.clone().unwrap_or_default(),
        result_count: view.task.result_count,
    }
}

#[tonic::async_trait]
impl CoordinatorRpc for CoordinatorService {
    async fn submit_task(&self, request: Request<SubmitTaskRequest>) -> Result<Response<SubmitTaskResponse>, Status> {
        let caller = caller_org(&request).map_err(Status::from)?;
        let signed = SignedTaskRequest::from_bytes(&request.into_inner().signed_request)
            .map_err(|e| Status::from(CoordinatorError::BadRequest(e.to_string())))?;
        let (task, existing) = self.inner.submit(signed, &caller).await.map_err(|e| {
            tracing::info!(caller = %caller, error = %e, "task refused");
            Status::from(e)
        })?;
        Ok(Response::new(SubmitTaskResponse { task_id: task.id, grants: task.grants, existing }))
    }

    type WatchTaskStream = ReceiverStream<Result<TaskUpdate, Status>>;

    async fn watch_task(&self, request: Request<WatchTaskRequest>) -> Result<Response<Self::WatchTaskStream>, Status> {
        let caller = caller_org(&request).map_err(Status::from)?;
        // The store read is a redb transaction: off the async executor.
        let (inner, id) = (self.inner.clone(), request.into_inner().task_id);
        let mut views = tokio::task::spawn_blocking(move || inner.watch(&id, &caller))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let view = views.borrow_and_update().clone();
                if tx.send(Ok(update_to_wire(&view))).await.is_err() || view.task.phase.is_final() {
                    return;
                }
                if views.changed().await.is_err() {
                    // The driver finished and dropped the channel: the
                    // last value is final.
                    let view = views.borrow().clone();
                    if view.task.phase.is_final() {
                        let _ = tx.send(Ok(update_to_wire(&view))).await;
                    }
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn deposit(&self, request: Request<FheDeposit>) -> Result<Response<FheDepositResponse>, Status> {
        let caller = caller_org(&request).map_err(Status::from)?;
        crate::evaluation::deposit(self.inner.clone(), caller.clone(), request.into_inner()).await.map_err(|e| {
            tracing::warn!(caller = %caller, error = %e, "deposit refused");
            Status::from(e)
        })?;
        Ok(Response::new(FheDepositResponse {}))
    }

    type EvaluateStream = tokio_stream::Iter<std::vec::IntoIter<Result<FheDownload, Status>>>;

    async fn evaluate(
        &self,
        request: Request<tonic::Streaming<FheUpload>>,
    ) -> Result<Response<Self::EvaluateStream>, Status> {
        let caller = caller_org(&request).map_err(Status::from)?;
        let results = crate::evaluation::evaluate(self.inner.clone(), caller.clone(), request.into_inner())
            .await
            .map_err(|e| {
                tracing::warn!(caller = %caller, error = %e, "homomorphic post-processing refused or failed");
                Status::from(e)
            })?;
        Ok(Response::new(tokio_stream::iter(results.into_iter().map(Ok).collect::<Vec<_>>())))
    }
}
