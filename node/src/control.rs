//! The `NodeControl` service: the node's own organisation (and only it)
//! asks its node to run sessions and to list what it serves.

use std::sync::Arc;

use stayput_proto::v1::node_control_server::NodeControl;
use stayput_proto::v1::{
    DatasetInfo, ListDatasetsRequest, ListDatasetsResponse, OutputFormat, PsiProgress, PsiResult, RunPsiEvent,
    RunPsiRequest, RunTaskRequest, TaskEvent, TaskProgress, TaskResult, run_psi_event::Event, task_event,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::dataset::FileFormat;
use crate::identity::caller_org;
use crate::psi::requester::{PsiReport, PsiRequest, run_psi};
use crate::wire::mode_from_wire;
use crate::{NodeError, NodeState};

/// The control service.
#[derive(Debug, Clone)]
pub struct ControlService {
    state: Arc<NodeState>,
}

impl ControlService {
    /// A service over the node's state.
    pub fn new(state: Arc<NodeState>) -> Self {
        Self { state }
    }

    fn authorise<T>(&self, request: &Request<T>) -> Result<(), NodeError> {
        let caller = caller_org(request)?;
        if caller != self.state.config.org {
            return Err(NodeError::NotOwnOrganisation { caller, org: self.state.config.org.clone() });
        }
        Ok(())
    }

    /// Tasks may also be started by the operator's coordinator: the node
    /// checks the task on the ledger itself, so the caller grants nothing.
    /// Returns whether the caller is this node's own organisation (which is
    /// told everything about a failure; the operator is told what a peer is).
    fn authorise_task<T>(&self, request: &Request<T>) -> Result<bool, NodeError> {
        let caller = caller_org(request)?;
        if caller == self.state.config.org {
            return Ok(true);
        }
        let operator = self.state.config.ledger.as_ref().map(|l| l.operator.as_str());
        if Some(caller.as_str()) == operator {
            return Ok(false);
        }
        Err(NodeError::NotOwnOrganisation { caller, org: self.state.config.org.clone() })
    }
}

fn request_from_wire(r: RunPsiRequest) -> Result<PsiRequest, NodeError> {
    let output_format = match OutputFormat::try_from(r.output_format) {
        Ok(OutputFormat::Parquet) => FileFormat::Parquet,
        _ => FileFormat::Csv,
    };
    Ok(PsiRequest {
        task_id: r.task_id,
        dataset: r.dataset,
        peer: r.peer,
        peer_dataset: r.peer_dataset,
        mode: mode_from_wire(r.mode)?,
        protocol: crate::wire::protocol_from_wire(r.protocol)?,
        parts: r.parts,
        output_format,
        shard: None,
    })
}

fn report_to_wire(report: PsiReport) -> PsiResult {
    let (output_path, output_sha256, output_rows) = match report.output {
        Some(f) => (f.path.display().to_string(), hex::encode(f.sha256), f.rows),
        None => (String::new(), String::new(), 0),
    };
    PsiResult {
        output_path,
        output_sha256,
        rows_read: report.rows_read,
        distinct_keys: report.distinct_keys,
        duplicate_keys: report.duplicate_keys,
        null_keys: report.null_keys,
        peer_keys: report.peer_keys,
        intersection_keys: report.intersection_keys,
        output_rows,
        seconds: report.elapsed.as_secs_f64(),
    }
}

/// A control stream's events: progress, then one result.
trait ControlEvent: Send + Sized + 'static {
    type Result: Send + 'static;
    fn progress(p: crate::wire::Progress) -> Self;
    fn result(r: Self::Result) -> Self;
}

impl ControlEvent for RunPsiEvent {
    type Result = PsiResult;
    fn progress(p: crate::wire::Progress) -> Self {
        Self { event: Some(Event::Progress(PsiProgress { phase: p.phase.into(), done: p.done, total: p.total })) }
    }
    fn result(r: PsiResult) -> Self {
        Self { event: Some(Event::Result(r)) }
    }
}

impl ControlEvent for TaskEvent {
    type Result = TaskResult;
    fn progress(p: crate::wire::Progress) -> Self {
        Self {
            event: Some(task_event::Event::Progress(TaskProgress {
                phase: p.phase.into(),
                done: p.done,
                total: p.total,
            })),
        }
    }
    fn result(r: TaskResult) -> Self {
        Self { event: Some(task_event::Event::Result(r)) }
    }
}

/// Runs `work` on its own task, streaming its progress and then its result.
/// A caller that goes away cancels the work: dropping it closes its
/// streams and its role thread stops. A failure is told in full to the
/// node's own organisation (`local`), else as a peer is told.
fn stream_events<E, F, Fut>(local: bool, work: F) -> mpsc::Receiver<Result<E, Status>>
where
    E: ControlEvent,
    F: FnOnce(mpsc::UnboundedSender<crate::wire::Progress>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<E::Result, NodeError>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<E, Status>>(16);
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel::<crate::wire::Progress>();
    let events = tx.clone();
    tokio::spawn(async move {
        while let Some(p) = progress_rx.recv().await {
            if events.send(Ok(E::progress(p))).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let outcome = tokio::select! {
            outcome = work(progress_tx) => outcome,
            () = tx.closed() => {
                tracing::warn!("the caller went away; session cancelled");
                return;
            }
        };
        let message = match outcome {
            Ok(result) => Ok(E::result(result)),
            Err(err) => {
                tracing::warn!(error = ?err.to_string(), "session failed");
                Err(if local { err.into_local_status() } else { err.into() })
            }
        };
        let _ = tx.send(message).await;
    });
    rx
}

#[tonic::async_trait]
impl NodeControl for ControlService {
    type RunPsiStream = ReceiverStream<Result<RunPsiEvent, Status>>;

    async fn run_psi(&self, request: Request<RunPsiRequest>) -> Result<Response<Self::RunPsiStream>, Status> {
        self.authorise(&request)?;
        let psi_request = request_from_wire(request.into_inner())?;
        let state = self.state.clone();
        let rx = stream_events(true, move |progress| async move {
            Ok(report_to_wire(run_psi(state, psi_request, progress).await?))
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type RunTaskStream = ReceiverStream<Result<TaskEvent, Status>>;

    async fn run_task(&self, request: Request<RunTaskRequest>) -> Result<Response<Self::RunTaskStream>, Status> {
        let local = self.authorise_task(&request)?;
        let RunTaskRequest { task_id, params, shard } = request.into_inner();
        let state = self.state.clone();
        let rx = stream_events(local, move |progress| async move {
            let outcome = crate::tasks::run_task(state, task_id, params.to_vec(), shard, progress).await?;
            Ok(TaskResult {
                result_digest: outcome.result_sha256.to_vec().into(),
                // A count that is the result itself is not the coordinator's.
                count: if outcome.count_withheld { 0 } else { outcome.result_count },
                count_withheld: outcome.count_withheld,
                intermediate_digests: outcome.intermediates.iter().map(|d| d.to_vec().into()).collect(),
                result_file: outcome
                    .result_file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            })
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_datasets(
        &self,
        request: Request<ListDatasetsRequest>,
    ) -> Result<Response<ListDatasetsResponse>, Status> {
        self.authorise(&request)?;
        let datasets = self
            .state
            .config
            .datasets
            .values()
            .map(|d| DatasetInfo {
                name: d.name.clone(),
                path: d.path.display().to_string(),
                key_columns: d.key_columns.clone(),
                normalisation: d.rules.names().into_iter().map(String::from).collect(),
            })
            .collect();
        Ok(Response::new(ListDatasetsResponse { datasets }))
    }
}

/// The client side, for the organisation's own tools: runs a PSI session on
/// this organisation's node and reports progress as it comes.
pub async fn request_psi(
    state: &NodeState,
    request: &PsiRequest,
    mut on_progress: impl FnMut(crate::wire::Progress),
) -> Result<PsiReport, NodeError> {
    use stayput_proto::v1::node_control_client::NodeControlClient;

    let channel = crate::peers::connect(state, &state.config.org, &local_endpoint(state)).await?;
    let mut client = NodeControlClient::new(channel);
    let wire = RunPsiRequest {
        task_id: request.task_id.clone(),
        dataset: request.dataset.clone(),
        peer: request.peer.clone(),
        peer_dataset: request.peer_dataset.clone(),
        mode: crate::wire::mode_to_wire(request.mode) as i32,
        output_format: match request.output_format {
            FileFormat::Csv => OutputFormat::Csv,
            FileFormat::Parquet => OutputFormat::Parquet,
        } as i32,
        protocol: crate::wire::protocol_to_wire(request.protocol) as i32,
        parts: request.parts,
    };
    let own = state.config.org.clone();
    let refused = |status: Status| match crate::wire::status_error(status, &own, "control") {
        // The node relays the peer's failure in the status message.
        NodeError::PeerRefused { message, .. } => NodeError::NodeReported(message),
        other => other,
    };
    let mut events = client.run_psi(wire).await.map_err(refused)?.into_inner();
    while let Some(event) = events.message().await.map_err(refused)? {
        match event.event {
            Some(Event::Progress(p)) => {
                on_progress(crate::wire::Progress { phase: progress_phase(&p.phase), done: p.done, total: p.total })
            }
            Some(Event::Result(r)) => return Ok(report_from_wire(r)),
            None => {}
        }
    }
    Err(NodeError::NodeReported("the node ended the session without a result".into()))
}

/// Lists the datasets of the organisation's own node.
pub async fn list_datasets(state: &NodeState) -> Result<Vec<(String, Vec<String>, Vec<String>)>, NodeError> {
    use stayput_proto::v1::node_control_client::NodeControlClient;
    let channel = crate::peers::connect(state, &state.config.org, &local_endpoint(state)).await?;
    let response = NodeControlClient::new(channel)
        .list_datasets(ListDatasetsRequest {})
        .await
        .map_err(|s| NodeError::NodeReported(s.message().to_owned()))?;
    Ok(response.into_inner().datasets.into_iter().map(|d| (d.name, d.key_columns, d.normalisation)).collect())
}

/// The node's own address as a URL its organisation dials (a wildcard
/// listen address is dialled on loopback).
pub fn local_endpoint(state: &NodeState) -> String {
    let mut addr = state.config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("https://{addr}")
}

fn progress_phase(phase: &str) -> &'static str {
    match phase {
        "loading keys" => "loading keys",
        "peer keys" => "peer keys",
        "own keys" => "own keys",
        _ => "working",
    }
}

fn report_from_wire(r: PsiResult) -> PsiReport {
    let output = (!r.output_path.is_empty()).then(|| crate::dataset::WrittenFile {
        path: r.output_path.into(),
        rows: r.output_rows,
        sha256: hex::decode(&r.output_sha256).ok().and_then(|h| h.try_into().ok()).unwrap_or_default(),
    });
    PsiReport {
        output,
        rows_read: r.rows_read,
        distinct_keys: r.distinct_keys,
        duplicate_keys: r.duplicate_keys,
        null_keys: r.null_keys,
        peer_keys: r.peer_keys,
        intersection_keys: r.intersection_keys,
        elapsed: std::time::Duration::from_secs_f64(r.seconds.max(0.0)),
    }
}
