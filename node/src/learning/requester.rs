//! Joint modelling, the label holder's side: a `train` or `predict` task
//! run by its requester's node against the feature holder's node.
//!
//! Training leaves the model share and a model card (`field,value`: model,
//! aligned rows, both share commitments) on this node; the commitments go
//! on the ledger as the result's intermediates. Prediction checks this
//! node's share against the training's record, scores the requester's
//! dataset and writes one row per applicant — its key, the score, and
//! `scored`, or `not held by <peer>` with no score for an applicant the
//! feature holder does not hold: never a silent default.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use stayput_chain_connector::records::Computation;
use stayput_chain_connector::tasks::{PredictParams, ResultFormat, TrainParams};
use stayput_learning::wire::{self, ModelShare, PeerKeys};
use stayput_learning::{boost, logistic};
use stayput_proto::v1::learning_peer_client::LearningPeerClient;
use stayput_proto::v1::{
    LearningOpen, LearningRequesterMessage, LearningResponderMessage, LearningSummary, PsiRequesterMessage,
    PsiResponderMessage, learning_requester_message::Body as Out, learning_responder_message::Body as In,
};
use stayput_psi::ecdh::{OutputMode, SessionParams};
use stayput_psi::group::TaskId;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{
    AlignedColumns, Party, ShareFile, align, boost_params, frames, key_texts, labels, load_aligned, lr_params,
    max_message_bytes, positions,
};
use crate::dataset::{Dataset, DatasetKeys};
use crate::peers::connect_peer;
use crate::results::{TaskResult, result_path, write_table, write_text};
use crate::wire::{INBOUND_CAPACITY, MAX_MESSAGE_BYTES, Nested, PeerLink, Progress, forward_inbound, open_stream};
use crate::{NodeError, NodeState};

type ProgressTx = mpsc::UnboundedSender<Progress>;
type OwnLink = PeerLink<LearningResponderMessage, LearningRequesterMessage>;

fn body_name(body: Option<&In>) -> &'static str {
    match body {
        None => "an empty message",
        Some(In::Accept(_)) => "accept",
        Some(In::Psi(_)) => "psi",
        Some(In::Frame(_)) => "frame",
        Some(In::Summary(_)) => "summary",
    }
}

/// A session with the feature holder, aligned.
struct Aligned {
    link: OwnLink,
    aligned: Vec<Vec<u8>>,
}

/// The peer dataset's owner, from the ledger.
async fn owner_of(state: &NodeState, task: &str, dataset: &str) -> Result<String, NodeError> {
    let ledger = &*crate::serve::ledger_access(state, "joint modelling")?.ledger;
    ledger.dataset(dataset).await.map_err(NodeError::from_ledger)?.last().map(|v| v.owner.clone()).ok_or_else(|| {
        NodeError::NotAuthorised { task: task.into(), reason: format!("dataset '{dataset}' is not on the ledger") }
    })
}

/// Opens the session and aligns rows by the nested PSI.
async fn open_and_align(
    state: &Arc<NodeState>,
    task: &str,
    dataset: &Dataset,
    peer_dataset: &str,
    progress: &ProgressTx,
) -> Result<Aligned, NodeError> {
    let peer = owner_of(state, task, peer_dataset).await?;
    let channel = connect_peer(state, &peer).await?;
    let _ = progress.send(Progress { phase: "loading keys", done: 0, total: 0 });
    let loader = dataset.clone();
    let keys: DatasetKeys = tokio::task::spawn_blocking(move || loader.load_keys())
        .await
        .map_err(|e| NodeError::Worker(e.to_string()))??;
    let mut client = LearningPeerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (out_tx, out_rx) = mpsc::channel(4);
    let open = LearningOpen {
        protocol_version: super::PROTOCOL_VERSION,
        task_id: task.into(),
        dataset: peer_dataset.into(),
        requester_size: keys.keys.len() as u64,
        key_columns: u32::try_from(dataset.key_columns.len()).unwrap_or(u32::MAX),
        normalisation: dataset.rules.names().into_iter().map(String::from).collect(),
        batch_size: u32::try_from(state.config.batch_size).unwrap_or(u32::MAX),
    };
    out_tx.send(LearningRequesterMessage { body: Some(Out::Open(open)) }).await.map_err(|_| NodeError::Cancelled)?;
    let (inbound, accept) = open_stream(&peer, client.session(ReceiverStream::new(out_rx))).await?;
    let responder_size = match accept.body {
        Some(In::Accept(accept)) => accept.responder_size,
        other => {
            let got = body_name(other.as_ref());
            return Err(NodeError::UnexpectedMessage { peer, expected: "accept", got });
        }
    };
    let params = SessionParams::new(
        TaskId::new(task.to_owned())?,
        OutputMode::IntersectionToBoth,
        keys.keys.len() as u64,
        responder_size,
        state.config.batch_size,
    )?;
    let (in_tx, in_rx) = mpsc::channel(INBOUND_CAPACITY);
    tokio::spawn(forward_inbound(inbound, in_tx));
    let mut link = PeerLink::new(&peer, in_rx, out_tx);
    let progress = progress.clone();
    tokio::task::spawn_blocking(move || {
        let output = {
            let mut psi = Nested::new(
                &mut link,
                "psi",
                |m: LearningResponderMessage| match m.body {
                    Some(In::Psi(inner)) => Ok::<PsiResponderMessage, &'static str>(inner),
                    other => Err(body_name(other.as_ref())),
                },
                |m: PsiRequesterMessage| LearningRequesterMessage { body: Some(Out::Psi(m)) },
            );
            crate::psi::requester::request_role(params, &keys, &mut psi, &progress)?
        };
        let indices = output.intersection().expect("intersection-to-both mode");
        let aligned = align(indices.iter().map(|&i| keys.keys.get(i as usize).to_vec()).collect());
        Ok(Aligned { link, aligned })
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))?
}

/// A failure to reach the peer is often the peer ending the session with
/// its reason (a refusal after alignment, while this side was already
/// sending): prefer that reason, read from what is left of its stream.
fn peer_cause(link: &mut OwnLink, error: NodeError) -> NodeError {
    if !matches!(error, NodeError::PeerVanished { .. }) {
        return error;
    }
    for _ in 0..64 {
        match link.recv("learning") {
            Ok(_) => continue,
            Err(NodeError::PeerVanished { .. }) => break,
            Err(cause) => return cause,
        }
    }
    error
}

fn send_message(link: &OwnLink, message: &[u8]) -> Result<(), NodeError> {
    frames(message)
        .try_for_each(|frame| link.send(LearningRequesterMessage { body: Some(Out::Frame(frame)) }, "learning"))
}

/// The feature holder's next learning message, reassembled.
fn recv_message(link: &mut OwnLink, max: usize) -> Result<Vec<u8>, NodeError> {
    super::recv_message(link, max, |m: LearningResponderMessage| match m.body {
        Some(In::Frame(frame)) => Ok(frame),
        other => Err(body_name(other.as_ref())),
    })
}

fn recv_summary(link: &mut OwnLink, aligned: usize) -> Result<LearningSummary, NodeError> {
    match link.recv("summary")?.body {
        Some(In::Summary(summary)) if summary.aligned_rows == aligned as u64 => Ok(summary),
        Some(In::Summary(summary)) => Err(NodeError::InconsistentPeer {
            peer: link.peer().into(),
            detail: format!("it aligned {} rows where we aligned {aligned}", summary.aligned_rows),
        }),
        other => {
            let got = body_name(other.as_ref());
            Err(NodeError::UnexpectedMessage { peer: link.peer().into(), expected: "summary", got })
        }
    }
}

/// Runs a training task as the label holder.
pub async fn run_train(
    state: &Arc<NodeState>,
    task: &str,
    params: TrainParams,
    progress: ProgressTx,
) -> Result<TaskResult, NodeError> {
    let dataset = state.config.dataset(&params.requester_dataset)?.clone();
    let share_path = ShareFile::path(&state.config.state_dir, task);
    if share_path.exists() {
        return Err(NodeError::ResultExists { path: share_path });
    }
    let Aligned { mut link, aligned } = open_and_align(state, task, &dataset, &params.peer_dataset, &progress).await?;
    let state = state.clone();
    let task = task.to_owned();
    tokio::task::spawn_blocking(move || {
        let trained = (|| {
        let _ = progress.send(Progress { phase: "training", done: 0, total: aligned.len() as u64 });
        let mut columns = params.features.clone();
        columns.push(params.label.clone());
        let mut data = load_aligned(&dataset, &columns, &aligned)?;
        let labels = labels(&data.columns.pop().expect("the label column"), &params.label)?;
        let max = max_message_bytes(aligned.len());
        let share = match (boost_params(&params.model), lr_params(&params.model)) {
            (Some(p), _) => train_boost(&labels, &data, p, &mut link, max)?,
            (_, Some(p)) => train_lr(&labels, &data, p, &mut link, max)?,
            _ => unreachable!("a model is boosted trees or logistic regression"),
        };
        let summary = recv_summary(&mut link, aligned.len())?;
        let theirs: [u8; 32] =
            summary.share_commitment.as_ref().try_into().map_err(|_| NodeError::InconsistentPeer {
                peer: link.peer().into(),
                detail: "its model-share commitment is not 32 bytes".into(),
            })?;
        let ours =
            ShareFile::new(Party::LabelHolder, params.features.clone(), share).write(&state.config.state_dir, &task)?;
        let card = format!(
            "field,value\nmodel,{}\naligned_rows,{}\nlabel_holder_share,{}\nfeature_holder_share,{}\n",
            params.model.name(),
            aligned.len(),
            hex::encode(ours),
            hex::encode(theirs)
        );
        let file = result_path(&state.config.output_dir, &task);
        let file_sha256 = write_text(&file, &card)?;
        tracing::info!(task = %task, aligned_rows = aligned.len(), "training finished; model share kept on this node");
        Ok(TaskResult {
            file_sha256,
            file,
            count: aligned.len() as u64,
            intermediates: vec![ours, theirs],
            count_withheld: false,
        })
        })();
        trained.map_err(|e| peer_cause(&mut link, e))
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))?
}

fn train_boost(
    labels: &[u8],
    data: &AlignedColumns,
    params: boost::BoostParams,
    link: &mut OwnLink,
    max: usize,
) -> Result<ModelShare, NodeError> {
    let mut rng = rand10::rng();
    let (mut holder, first) = boost::LabelHolder::start(labels, &data.columns, params, &mut rng)?;
    let own = match first.first() {
        Some(boost::ToFeatureHolder::Setup { public_key, .. }) => (**public_key).clone(),
        _ => unreachable!("the first message is the setup"),
    };
    for message in &first {
        send_message(link, &wire::encode_boost_to_feature_holder(message))?;
    }
    while !holder.is_done() {
        let bytes = recv_message(link, max)?;
        let message = wire::decode_boost_to_label_holder(&bytes, &own)?;
        for next in holder.on_message(message, &mut rng)? {
            send_message(link, &wire::encode_boost_to_feature_holder(&next))?;
        }
    }
    Ok(ModelShare::BoostLabelHolder(holder.model().expect("done").clone()))
}

fn train_lr(
    labels: &[u8],
    data: &AlignedColumns,
    params: logistic::LrParams,
    link: &mut OwnLink,
    max: usize,
) -> Result<ModelShare, NodeError> {
    let mut rng = rand10::rng();
    let (mut holder, setup) = logistic::LabelHolder::start(labels, &data.columns, params, &mut rng)?;
    let own = match &setup {
        logistic::ToFeatureHolder::Setup(key) => (**key).clone(),
        _ => unreachable!("the first message is the setup"),
    };
    send_message(link, &wire::encode_lr_to_feature_holder(&setup))?;
    let mut peer = None;
    while !holder.is_done() {
        let bytes = recv_message(link, max)?;
        let keys = PeerKeys { label_holder: Some(&own), feature_holder: peer.as_ref() };
        let message = wire::decode_lr_to_label_holder(&bytes, keys)?;
        if let logistic::ToLabelHolder::Setup(key) = &message {
            peer = Some((**key).clone());
        }
        if let Some(next) = holder.on_message(message, &mut rng)? {
            send_message(link, &wire::encode_lr_to_feature_holder(&next))?;
        }
    }
    Ok(ModelShare::Logistic(holder.share()))
}

/// This node's share of training task `model_task`, checked against the
/// commitment the training recorded.
async fn checked_share(state: &NodeState, task: &str, model_task: &str) -> Result<ShareFile, NodeError> {
    let refuse = |reason: String| NodeError::NotAuthorised { task: task.into(), reason };
    let ledger = &*crate::serve::ledger_access(state, "joint prediction")?.ledger;
    let trained = ledger
        .task(model_task)
        .await
        .map_err(NodeError::from_ledger)?
        .ok_or_else(|| refuse(format!("model task '{model_task}' is not on the ledger")))?;
    if trained.task.kind() != Computation::Train || trained.task.requester() != state.config.org {
        return Err(refuse(format!("'{model_task}' is not a training task of this organisation")));
    }
    let committed = trained.result().map(|r| r.intermediates.clone()).unwrap_or_default();
    let share = ShareFile::load(&state.config.state_dir, model_task).await?;
    if share.party != Party::LabelHolder || !committed.contains(&share.commitment()) {
        return Err(refuse(format!("this node's model share of '{model_task}' is not the one the training recorded")));
    }
    Ok(share)
}

/// Runs a prediction task as the label holder.
pub async fn run_predict(
    state: &Arc<NodeState>,
    task: &str,
    params: PredictParams,
    progress: ProgressTx,
) -> Result<TaskResult, NodeError> {
    let dataset = state.config.dataset(&params.requester_dataset)?.clone();
    let share = checked_share(state, task, &params.model_task).await?;
    let commitment = share.commitment();
    let Aligned { mut link, aligned } = open_and_align(state, task, &dataset, &params.peer_dataset, &progress).await?;
    let state = state.clone();
    let task = task.to_owned();
    tokio::task::spawn_blocking(move || {
        let scored = (|| {
            let _ = progress.send(Progress { phase: "scoring", done: 0, total: aligned.len() as u64 });
            let data = load_aligned(&dataset, &share.columns, &aligned)?;
            let max = max_message_bytes(aligned.len());
            let bytes = recv_message(&mut link, max)?;
            let scores = match &share.share {
                ModelShare::BoostLabelHolder(model) => {
                    let masks = wire::decode_leaf_masks(&bytes, &model.tree_sizes())?;
                    model.predict(&data.columns, &masks)?
                }
                ModelShare::Logistic(model) => {
                    let theirs = wire::decode_partial_scores(&bytes)?;
                    if theirs.len() != aligned.len() {
                        return Err(NodeError::InconsistentPeer {
                            peer: link.peer().into(),
                            detail: format!("{} partial scores for {} aligned rows", theirs.len(), aligned.len()),
                        });
                    }
                    let ours = model.partial_scores(&data.columns)?;
                    ours.iter().zip(&theirs).map(|(a, b)| logistic::probability(*a, *b)).collect()
                }
                ModelShare::BoostFeatureHolder(_) => {
                    return Err(NodeError::Model("this node's share is a feature holder's".into()));
                }
            };
            recv_summary(&mut link, aligned.len())?;
            let table = score_table(&dataset, &aligned, &scores, link.peer())?;
            let file = result_path(&state.config.output_dir, &task);
            let file_sha256 = write_table(&file, ResultFormat::Csv, &table)?;
            tracing::info!(task = %task, applicants = table.num_rows(), scored = scores.len(), "prediction finished");
            Ok(TaskResult {
                file_sha256,
                file,
                count: table.num_rows() as u64,
                intermediates: vec![commitment],
                count_withheld: false,
            })
        })();
        scored.map_err(|e| peer_cause(&mut link, e))
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))?
}

/// One row per applicant of `dataset`: its key columns, the score, and
/// whether it was scored.
fn score_table(dataset: &Dataset, aligned: &[Vec<u8>], scores: &[f64], peer: &str) -> Result<RecordBatch, NodeError> {
    let at = positions(aligned);
    let applicants = key_texts(dataset)?;
    let mut columns: Vec<ArrayRef> = (0..dataset.key_columns.len())
        .map(|c| Arc::new(StringArray::from_iter_values(applicants.iter().map(|(_, t)| t[c].as_str()))) as ArrayRef)
        .collect();
    let score: Float64Array = applicants.iter().map(|(k, _)| at.get(k.as_slice()).map(|&i| scores[i])).collect();
    let missing = format!("not held by {peer}");
    let status = StringArray::from_iter_values(
        applicants.iter().map(|(k, _)| if at.contains_key(k.as_slice()) { "scored" } else { missing.as_str() }),
    );
    columns.push(Arc::new(score));
    columns.push(Arc::new(status));
    let mut fields: Vec<Field> = dataset.key_columns.iter().map(|c| Field::new(c, DataType::Utf8, false)).collect();
    fields.push(Field::new("score", DataType::Float64, true));
    fields.push(Field::new("status", DataType::Utf8, false));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|source| NodeError::WriteResult { path: dataset.path.clone(), source })
}
