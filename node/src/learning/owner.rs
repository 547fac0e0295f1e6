//! Joint modelling, the feature holder's side: the `LearningPeer` service.
//!
//! Before any key is touched: the open message (version, task id, dataset,
//! key declaration); the task's parameters from the ledger record (never
//! from the peer: a requester cannot ask for other columns than it signed
//! for); the serve path (task, requester, kind, grant, the feature and key
//! columns read); the use record (the requester's key count as items: keys
//! aligned at training, applicants scored at prediction). Then, on a
//! blocking thread: the nested PSI, the grant's minimum cohort, the
//! protocol, and the model share written on this node only.

use std::sync::Arc;

use stayput_chain_connector::records::Computation;
use stayput_chain_connector::tasks::{ModelSpec, TaskParams};
use stayput_learning::wire::{self, ModelShare, PeerKeys};
use stayput_learning::{boost, logistic};
use stayput_proto::v1::learning_peer_server::LearningPeer;
use stayput_proto::v1::{
    LearningAccept, LearningOpen, LearningRequesterMessage, LearningResponderMessage, LearningSummary,
    PsiRequesterMessage, PsiResponderMessage, PsiSummary, learning_requester_message::Body as In,
    learning_responder_message::Body as Out, psi_responder_message,
};
use stayput_psi::ecdh::{OutputMode, SessionParams};
use stayput_psi::group::TaskId;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{
    AlignedColumns, Party, ShareFile, align, boost_params, frames, load_aligned, lr_params, max_message_bytes,
};
use crate::authorisation::ServeRequest;
use crate::dataset::{Dataset, DatasetKeys};
use crate::identity::caller_org;
use crate::serve::{Authorised, Recorded, ledger_access};
use crate::wire::{INBOUND_CAPACITY, Nested, PeerLink, check_task_id, first_message, forward_inbound};
use crate::{NodeError, NodeState};

/// The feature holder's gRPC service.
#[derive(Debug, Clone)]
pub struct LearningPeerService {
    state: Arc<NodeState>,
}

impl LearningPeerService {
    /// A service over the node's state.
    pub fn new(state: Arc<NodeState>) -> Self {
        Self { state }
    }
}

type OwnLink = PeerLink<LearningRequesterMessage, Result<LearningResponderMessage, Status>>;

/// What the session does, from the task's ledger record.
#[derive(Debug, Clone)]
enum Work {
    /// Train `model` on `features`.
    Train { features: Vec<String>, model: ModelSpec },
    /// Score with the share left by training task `model_task`.
    Predict { model_task: String, share: Box<ShareFile> },
}

impl Work {
    fn kind(&self) -> Computation {
        match self {
            Work::Train { .. } => Computation::Train,
            Work::Predict { .. } => Computation::Predict,
        }
    }

    fn columns(&self) -> &[String] {
        match self {
            Work::Train { features, .. } => features,
            Work::Predict { share, .. } => &share.columns,
        }
    }
}

fn body_name(body: Option<&In>) -> &'static str {
    match body {
        None => "an empty message",
        Some(In::Open(_)) => "open",
        Some(In::Psi(_)) => "psi",
        Some(In::Frame(_)) => "frame",
    }
}

fn validate_open(state: &NodeState, open: &LearningOpen) -> Result<Dataset, NodeError> {
    if open.protocol_version != super::PROTOCOL_VERSION {
        return Err(NodeError::UnsupportedVersion { got: open.protocol_version, speaks: super::PROTOCOL_VERSION });
    }
    check_task_id(&open.task_id)?;
    if open.requester_size > u64::from(u32::MAX) {
        return Err(NodeError::TooManyPeerKeys { announced: open.requester_size, max: u64::from(u32::MAX) });
    }
    let dataset = state.config.dataset(&open.dataset)?.clone();
    let ours: Vec<String> = dataset.rules.names().into_iter().map(String::from).collect();
    if dataset.key_columns.len() != open.key_columns as usize || ours != open.normalisation {
        return Err(NodeError::KeyDeclarationMismatch {
            dataset: dataset.name.clone(),
            ours: format!("{} key column(s) normalised with [{}]", dataset.key_columns.len(), ours.join(", ")),
            theirs: format!("{} key column(s) normalised with [{}]", open.key_columns, open.normalisation.join(", ")),
        });
    }
    Ok(dataset)
}

/// The task's work as its ledger record says, for this dataset, asked by
/// `peer`. Only the task's own requester gets past the first check, so no
/// other member learns anything of this node's model shares.
async fn work_of(state: &NodeState, task: &str, dataset: &str, peer: &str) -> Result<Work, NodeError> {
    let refuse = |reason: String| NodeError::NotAuthorised { task: task.to_owned(), reason };
    let ledger = &*ledger_access(state, "joint modelling")?.ledger;
    let record =
        ledger.task(task).await.map_err(NodeError::from_ledger)?.ok_or_else(|| refuse("not on the ledger".into()))?;
    if record.task.requester() != peer {
        return Err(refuse(format!("it was requested by '{}', not by '{peer}'", record.task.requester())));
    }
    let request = &record.task.request.request;
    match TaskParams::decode(request.kind, &request.params).map_err(|e| refuse(e.to_string()))? {
        TaskParams::Train(p) if p.peer_dataset == dataset => {
            Ok(Work::Train { features: p.peer_features, model: p.model })
        }
        TaskParams::Predict(p) if p.peer_dataset == dataset => {
            // The share must be the one training committed to on the ledger.
            let trained = ledger
                .task(&p.model_task)
                .await
                .map_err(NodeError::from_ledger)?
                .ok_or_else(|| refuse(format!("its model task '{}' is not on the ledger", p.model_task)))?;
            let committed = trained.result().map(|r| r.intermediates.clone()).unwrap_or_default();
            if trained.task.requester() != request.requester || trained.task.kind() != Computation::Train {
                return Err(refuse(format!("'{}' is not a training task of the same requester", p.model_task)));
            }
            let share = ShareFile::load(&state.config.state_dir, &p.model_task).await?;
            if share.party != Party::FeatureHolder || !committed.contains(&share.commitment()) {
                return Err(refuse(format!(
                    "this node's model share of '{}' is not the one the training recorded",
                    p.model_task
                )));
            }
            Ok(Work::Predict { model_task: p.model_task, share: Box::new(share) })
        }
        _ => Err(refuse(format!("it does not train or predict on dataset '{dataset}'"))),
    }
}

#[tonic::async_trait]
impl LearningPeer for LearningPeerService {
    type SessionStream = ReceiverStream<Result<LearningResponderMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<LearningRequesterMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let peer = caller_org(&request)?;
        let mut inbound = request.into_inner();
        let open = match first_message(&mut inbound).await?.and_then(|m| m.body) {
            Some(In::Open(open)) => open,
            other => {
                let got = body_name(other.as_ref());
                return Err(NodeError::UnexpectedMessage { peer, expected: "open", got }.into());
            }
        };
        let task = open.task_id.clone();
        let refused = |e: NodeError| {
            tracing::warn!(task = %task, peer = %peer, error = %e, "learning session refused");
            Status::from(e)
        };
        let dataset = validate_open(&self.state, &open).map_err(refused)?;
        let work = work_of(&self.state, &task, &dataset.name, &peer).await.map_err(refused)?;
        let mut columns = work.columns().to_vec();
        columns.extend(dataset.key_columns.iter().cloned());
        let serve = ServeRequest {
            task: &task,
            peer: &peer,
            dataset: &dataset.name,
            kinds: &[work.kind()],
            items: open.requester_size,
            columns: &columns,
            key_columns: &dataset.key_columns,
            shard: None,
        };
        let recorded = async { Authorised::new(&self.state, &serve).await?.record_asked(serve.items).await };
        let recorded = recorded.await.map_err(refused)?;
        tracing::info!(task = %task, grant = %recorded.session().grant_id, kind = %work.kind(), "use recorded on the ledger");

        let loader = dataset.clone();
        let keys = tokio::task::spawn_blocking(move || loader.load_keys())
            .await
            .map_err(|e| NodeError::Worker(e.to_string()))
            .and_then(|r| r)
            .map_err(refused)?;
        let params = SessionParams::new(
            TaskId::new(task.clone()).map_err(NodeError::from)?,
            OutputMode::IntersectionToBoth,
            open.requester_size,
            keys.keys.len() as u64,
            self.state.config.batch_size,
        )
        .map_err(NodeError::from)?;

        let (out_tx, out_rx) = mpsc::channel(4);
        let (in_tx, in_rx) = mpsc::channel(INBOUND_CAPACITY);
        tokio::spawn(forward_inbound(inbound, in_tx));
        let mut link = PeerLink::new(&peer, in_rx, out_tx);
        let state = self.state.clone();
        // The recorded session (its permit and single-flight guard) moves
        // into the worker: a peer that hangs up does not free the slot
        // while the work runs.
        tokio::task::spawn_blocking(move || {
            let session = Session { state: &state, task: &task, dataset: &dataset, work: &work, recorded: &recorded };
            match session.run(params, &keys, &mut link) {
                Ok(rows) => tracing::info!(task = %task, aligned_rows = rows, "learning session completed"),
                Err(err) => {
                    tracing::warn!(task = %task, error = %err, "learning session failed");
                    let _ = link.send(Err(Status::from(err)), "error");
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

struct Session<'a> {
    state: &'a NodeState,
    task: &'a str,
    dataset: &'a Dataset,
    work: &'a Work,
    recorded: &'a Recorded,
}

fn send(link: &OwnLink, body: Out, phase: &'static str) -> Result<(), NodeError> {
    link.send(Ok(LearningResponderMessage { body: Some(body) }), phase)
}

fn send_message(link: &OwnLink, message: &[u8]) -> Result<(), NodeError> {
    frames(message).try_for_each(|frame| send(link, Out::Frame(frame), "learning"))
}

/// The requester's next learning message, reassembled.
fn recv_message(link: &mut OwnLink, max: usize) -> Result<Vec<u8>, NodeError> {
    super::recv_message(link, max, |m: LearningRequesterMessage| match m.body {
        Some(In::Frame(frame)) => Ok(frame),
        other => Err(body_name(other.as_ref())),
    })
}

impl Session<'_> {
    fn run(&self, params: SessionParams, keys: &DatasetKeys, link: &mut OwnLink) -> Result<u64, NodeError> {
        send(link, Out::Accept(LearningAccept { responder_size: params.responder_len() }), "accept")?;
        let output = {
            let mut psi = Nested::new(
                &mut *link,
                "psi",
                |m: LearningRequesterMessage| match m.body {
                    Some(In::Psi(inner)) => Ok::<PsiRequesterMessage, &'static str>(inner),
                    other => Err(body_name(other.as_ref())),
                },
                |m: Result<PsiResponderMessage, Status>| {
                    m.map(|inner| LearningResponderMessage { body: Some(Out::Psi(inner)) })
                },
            );
            crate::psi::owner::respond_role(params, keys, &mut psi)?
        };
        let indices = output.intersection().expect("intersection-to-both mode");
        let aligned = align(indices.iter().map(|&i| keys.keys.get(i as usize).to_vec()).collect());
        let summary = PsiSummary { responder_matches: aligned.len() as u64 };
        let psi_summary = psi_responder_message::Body::Summary(summary);
        send(link, Out::Psi(PsiResponderMessage { body: Some(psi_summary) }), "alignment")?;
        let min = u64::from(self.recorded.session().grant.grant.min_cohort);
        // Told to the peer: the use is on the ledger already.
        if (aligned.len() as u64) < min {
            return Err(NodeError::NotAuthorised {
                task: self.task.into(),
                reason: format!("the aligned rows are fewer than the grant's minimum of {min}"),
            });
        }
        let data = load_aligned(self.dataset, self.work.columns(), &aligned)?;
        let max = max_message_bytes(aligned.len());
        let commitment = match self.work {
            Work::Train { features, model } => {
                let share = match (boost_params(model), lr_params(model)) {
                    (Some(params), _) => train_boost(&data, params, link, max)?,
                    (_, Some(params)) => train_lr(&data, params, aligned.len(), link, max)?,
                    _ => unreachable!("a model is boosted trees or logistic regression"),
                };
                let file = ShareFile::new(Party::FeatureHolder, features.clone(), share);
                file.write(&self.state.config.state_dir, self.task)?.to_vec()
            }
            Work::Predict { model_task, share } => {
                let message = match &share.share {
                    ModelShare::BoostFeatureHolder(model) => wire::encode_leaf_masks(&model.leaf_masks(&data.columns)?),
                    ModelShare::Logistic(model) => wire::encode_partial_scores(&model.partial_scores(&data.columns)?),
                    ModelShare::BoostLabelHolder(_) => {
                        return Err(NodeError::Model(format!("the share of '{model_task}' is not a feature holder's")));
                    }
                };
                send_message(link, &message)?;
                Vec::new()
            }
        };
        let summary = LearningSummary { aligned_rows: aligned.len() as u64, share_commitment: commitment.into() };
        send(link, Out::Summary(summary), "summary")?;
        Ok(aligned.len() as u64)
    }
}

fn train_boost(
    data: &AlignedColumns,
    params: boost::BoostParams,
    link: &mut OwnLink,
    max: usize,
) -> Result<ModelShare, NodeError> {
    let mut holder = boost::FeatureHolder::new(&data.columns, params, &mut rand10::rng())?;
    let mut key = None;
    while holder.model().trees() < params.trees as usize {
        let bytes = recv_message(link, max)?;
        let message = wire::decode_boost_to_feature_holder(&bytes, key.as_ref())?;
        if let boost::ToFeatureHolder::Setup { public_key, .. } = &message {
            key = Some((**public_key).clone());
        }
        if let Some(answer) = holder.on_message(message)? {
            send_message(link, &wire::encode_boost_to_label_holder(&answer))?;
        }
    }
    Ok(ModelShare::BoostFeatureHolder(holder.model().clone()))
}

fn train_lr(
    data: &AlignedColumns,
    params: logistic::LrParams,
    rows: usize,
    link: &mut OwnLink,
    max: usize,
) -> Result<ModelShare, NodeError> {
    let mut rng = rand10::rng();
    let (mut holder, setup) = logistic::FeatureHolder::start(&data.columns, rows, params, &mut rng)?;
    let own = match &setup {
        logistic::ToLabelHolder::Setup(key) => (**key).clone(),
        _ => unreachable!("the first message is the setup"),
    };
    send_message(link, &wire::encode_lr_to_label_holder(&setup))?;
    let mut peer = None;
    while !holder.is_done() {
        let bytes = recv_message(link, max)?;
        let keys = PeerKeys { label_holder: peer.as_ref(), feature_holder: Some(&own) };
        let message = wire::decode_lr_to_feature_holder(&bytes, keys)?;
        if let logistic::ToFeatureHolder::Setup(key) = &message {
            peer = Some((**key).clone());
        }
        if let Some(answer) = holder.on_message(message, &mut rng)? {
            send_message(link, &wire::encode_lr_to_label_holder(&answer))?;
        }
    }
    Ok(ModelShare::Logistic(holder.share()))
}
