//! The `NodeControl` service: the node's own organisation (and only it)
//! asks its node to run sessions and to list what it serves.

use std::sync::Arc;

use stayput_proto::v1::node_control_server::NodeControl;
use stayput_proto::v1::{
    DatasetInfo, ListDatasetsRequest, ListDatasetsResponse, OutputFormat, PsiProgress, PsiResult, RunPsiEvent,
    RunPsiRequest, run_psi_event::Event,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::dataset::FileFormat;
use crate::identity::caller_org;
use crate::requester::{PsiReport, PsiRequest, run_psi};
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
        output_format,
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

#[tonic::async_trait]
impl NodeControl for ControlService {
    type RunPsiStream = ReceiverStream<Result<RunPsiEvent, Status>>;

    async fn run_psi(&self, request: Request<RunPsiRequest>) -> Result<Response<Self::RunPsiStream>, Status> {
        self.authorise(&request)?;
        let psi_request = request_from_wire(request.into_inner())?;
        let (tx, rx) = mpsc::channel(16);
        let (progress_tx, mut progress_rx) = mpsc::unbounded_channel::<crate::requester::Progress>();
        let state = self.state.clone();
        let events = tx.clone();
        tokio::spawn(async move {
            while let Some(p) = progress_rx.recv().await {
                let event = Event::Progress(PsiProgress { phase: p.phase.into(), done: p.done, total: p.total });
                if events.send(Ok(RunPsiEvent { event: Some(event) })).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let outcome = run_psi(state, psi_request, progress_tx).await;
            let message = match outcome {
                Ok(report) => Ok(RunPsiEvent { event: Some(Event::Result(report_to_wire(report))) }),
                Err(err) => {
                    tracing::warn!(error = %err, "psi session failed");
                    Err(err.into())
                }
            };
            let _ = tx.send(message).await;
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
