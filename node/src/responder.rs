//! The `PsiPeer` service: this node as the responder of a PSI session.
//!
//! A session is refused before any key is touched if the task id, mode,
//! version, dataset or key declaration is wrong. Keys are loaded and the
//! protocol role runs on a blocking thread; nothing is written unless the
//! session completes (intersection-to-both mode writes this side's rows).

use std::collections::HashSet;
use std::sync::Arc;

use rand::rngs::OsRng;
use stayput_proto::v1::psi_peer_server::PsiPeer;
use stayput_proto::v1::{
    PsiAccept, PsiOpen, PsiRequesterMessage, PsiResponderMessage, PsiSummary, psi_requester_message::Body as In,
    psi_responder_message::Body as Out,
};
use stayput_psi::ecdh::{OutputMode, ResponderSession, SessionParams};
use stayput_psi::group::TaskId;
use stayput_psi::messages::{PointBatch, TagBatch};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::dataset::{Dataset, DatasetKeys, FileFormat};
use crate::identity::caller_org;
use crate::wire::{Inbound, check_task_id, forward_inbound, mode_from_wire, recv_blocking, requester_body_name};
use crate::{NodeError, NodeState};

/// The responder's gRPC service.
#[derive(Debug, Clone)]
pub struct PsiPeerService {
    state: Arc<NodeState>,
}

impl PsiPeerService {
    /// A service over the node's state.
    pub fn new(state: Arc<NodeState>) -> Self {
        Self { state }
    }
}

type OutboundTx = mpsc::Sender<Result<PsiResponderMessage, Status>>;

/// A validated session request.
struct Accepted {
    peer: String,
    task: String,
    mode: OutputMode,
    requester_size: u64,
    dataset: Dataset,
}

fn validate_open(state: &NodeState, peer: String, open: PsiOpen) -> Result<Accepted, NodeError> {
    if open.protocol_version != 1 {
        return Err(NodeError::UnsupportedVersion(open.protocol_version));
    }
    check_task_id(&open.task_id)?;
    let mode = mode_from_wire(open.mode)?;
    let dataset = state.config.dataset(&open.dataset)?.clone();
    let declared = |columns: usize, rules: &[String]| {
        let rules = if rules.is_empty() { "(none)".to_owned() } else { rules.join(", ") };
        format!("{columns} key column(s) normalised with [{rules}]")
    };
    let our_rules: Vec<String> = dataset.rules.names().into_iter().map(String::from).collect();
    if dataset.key_columns.len() != open.key_columns as usize || our_rules != open.normalisation {
        return Err(NodeError::KeyDeclarationMismatch {
            dataset: dataset.name.clone(),
            ours: declared(dataset.key_columns.len(), &our_rules),
            theirs: declared(open.key_columns as usize, &open.normalisation),
        });
    }
    Ok(Accepted { peer, task: open.task_id, mode, requester_size: open.requester_size, dataset })
}

#[tonic::async_trait]
impl PsiPeer for PsiPeerService {
    type ExchangeStream = ReceiverStream<Result<PsiResponderMessage, Status>>;

    async fn exchange(
        &self,
        request: Request<Streaming<PsiRequesterMessage>>,
    ) -> Result<Response<Self::ExchangeStream>, Status> {
        let peer = caller_org(&request)?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(crate::wire::IDLE_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no open message arrived"))??;
        let open = match first.and_then(|m| m.body) {
            Some(In::Open(open)) => open,
            other => {
                let got = requester_body_name(other.as_ref());
                return Err(NodeError::UnexpectedMessage { peer, expected: "open", got }.into());
            }
        };
        let accepted = validate_open(&self.state, peer, open)?;
        tracing::info!(
            task = %accepted.task,
            peer = %accepted.peer,
            dataset = %accepted.dataset.name,
            mode = %accepted.mode,
            requester_size = accepted.requester_size,
            "psi session opened"
        );
        let dataset = accepted.dataset.clone();
        let keys = tokio::task::spawn_blocking(move || dataset.load_keys())
            .await
            .map_err(|e| NodeError::Worker(e.to_string()))??;
        let params = SessionParams::new(
            TaskId::new(accepted.task.clone()).map_err(NodeError::from)?,
            accepted.mode,
            accepted.requester_size,
            keys.keys.len() as u64,
            self.state.config.batch_size,
        )
        .map_err(NodeError::from)?;

        let (out_tx, out_rx) = mpsc::channel(4);
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        tokio::spawn(forward_inbound(inbound, in_tx));
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || {
            let task = accepted.task.clone();
            match respond(&state, &accepted, params, &keys, in_rx, &out_tx) {
                Ok(matches) => tracing::info!(task = %task, matches, "psi session completed"),
                Err(err) => {
                    tracing::warn!(task = %task, error = %err, "psi session failed");
                    let _ = out_tx.blocking_send(Err(err.into()));
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

fn send(tx: &OutboundTx, body: Out, peer: &str, phase: &'static str) -> Result<(), NodeError> {
    tx.blocking_send(Ok(PsiResponderMessage { body: Some(body) })).map_err(|_| NodeError::PeerVanished {
        peer: peer.to_owned(),
        phase,
        detail: "the connection closed".into(),
    })
}

/// Runs the responder's role; returns how many of its keys matched (both
/// mode) for the log.
fn respond(
    state: &NodeState,
    session: &Accepted,
    params: SessionParams,
    keys: &DatasetKeys,
    mut rx: mpsc::UnboundedReceiver<Result<PsiRequesterMessage, Inbound>>,
    tx: &OutboundTx,
) -> Result<u64, NodeError> {
    let peer = session.peer.as_str();
    let (requester_len, responder_len) = (params.requester_len(), params.responder_len());
    send(tx, Out::Accept(PsiAccept { responder_size: responder_len }), peer, "accept")?;

    let mut own = ResponderSession::new(params, &keys.keys, &mut OsRng)?;
    while let Some(batch) = own.next_batch() {
        send(tx, Out::ResponderPoints(batch.into_bytes().into()), peer, "responder points")?;
    }

    let mut answering = own.finish()?;
    while answering.received() < requester_len {
        let message = recv_blocking(&mut rx, peer, "requests")?;
        let Some(In::RequestPoints(bytes)) = message.body else {
            let got = requester_body_name(message.body.as_ref());
            return Err(NodeError::UnexpectedMessage { peer: peer.into(), expected: "request points", got });
        };
        if let Some(reply) = answering.answer(PointBatch::decode(&bytes)?)? {
            send(tx, Out::ReplyTags(reply.to_bytes().into()), peer, "replies")?;
        }
    }

    let mut closing = answering.finish()?;
    while let Some(reply) = closing.next_batch() {
        send(tx, Out::ReplyTags(reply.to_bytes().into()), peer, "replies")?;
    }
    if session.mode == OutputMode::IntersectionToBoth {
        while closing.echoed() < responder_len {
            let message = recv_blocking(&mut rx, peer, "echo")?;
            let Some(In::EchoTags(bytes)) = message.body else {
                let got = requester_body_name(message.body.as_ref());
                return Err(NodeError::UnexpectedMessage { peer: peer.into(), expected: "echo tags", got });
            };
            closing.absorb_echo(TagBatch::decode(&bytes)?)?;
        }
    }
    let output = closing.finish()?;
    let matches = match output.intersection() {
        Some(indices) => {
            let common: HashSet<Vec<u8>> = indices.iter().map(|&i| keys.keys.get(i).to_vec()).collect();
            let target = state
                .config
                .output_dir
                .join(format!("{}-{}.{}", session.task, session.dataset.name, FileFormat::Csv.extension()));
            session.dataset.write_rows_with_keys(&common, &target, FileFormat::Csv)?;
            indices.len() as u64
        }
        None => 0,
    };
    send(tx, Out::Summary(PsiSummary { responder_matches: matches }), peer, "summary")?;
    Ok(matches)
}
