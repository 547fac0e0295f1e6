//! PSI, the requester's side: load own keys, dial the peer over mTLS, run
//! the requester's role on a blocking thread, and write the result on this
//! node only after the peer has confirmed a clean end.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::OsRng;
use stayput_proto::v1::psi_peer_client::PsiPeerClient;
use stayput_proto::v1::{
    PsiOpen, PsiRequesterMessage, PsiResponderMessage, psi_requester_message::Body as Out,
    psi_responder_message::Body as In,
};
use stayput_psi::Protocol;
use stayput_psi::ecdh::requester::RequesterRequests;
use stayput_psi::ecdh::{OutputMode, RequesterOutput, RequesterSession, SessionParams};
use stayput_psi::group::TaskId;
use stayput_psi::keys::KeyList;
use stayput_psi::kkrt::messages::PartSizes;
use stayput_psi::kkrt::{self, KkrtRequester};
use stayput_psi::messages::{PointBatch, TagBatch};
use stayput_psi::partition::{Partition, PartitionKey};
use stayput_psi::rr22::{self, Rr22Prepared, Rr22Requester};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::ShardOf;
use crate::dataset::{Dataset, DatasetKeys, FileFormat, WrittenFile};
use crate::peers::connect_peer_shard;
use crate::psi::buckets::SessionKeys;
use crate::psi::progress::RequesterProgress;
use crate::wire::Progress;
use crate::wire::{
    INBOUND_CAPACITY, Link, MAX_MESSAGE_BYTES, MAX_OUTSTANDING_BATCHES, PeerLink, check_task_id, forward_inbound,
    mode_to_wire, open_stream, protocol_to_wire, responder_body_name,
};
use crate::{NodeError, NodeState};

/// What the requesting organisation asks its node to run.
#[derive(Debug, Clone)]
pub struct PsiRequest {
    /// Caller-given task id (checked against the ledger in a later stage).
    pub task_id: String,
    /// This node's dataset.
    pub dataset: String,
    /// The peer organisation.
    pub peer: String,
    /// The peer's dataset.
    pub peer_dataset: String,
    /// Output mode.
    pub mode: OutputMode,
    /// The protocol.
    pub protocol: Protocol,
    /// KKRT: parts to run the set in (0: one per `kkrt::PART_KEYS` keys).
    pub parts: u32,
    /// Format of the result file.
    pub output_format: FileFormat,
    /// The shard this node runs, of a task run as shards.
    pub shard: Option<ShardOf>,
}

/// What a finished session reports to the requester.
#[derive(Debug, Clone)]
pub struct PsiReport {
    /// The result file (intersection modes).
    pub output: Option<WrittenFile>,
    /// Data rows read from this node's dataset.
    pub rows_read: u64,
    /// Distinct keys sent.
    pub distinct_keys: u64,
    /// Rows whose key repeated an earlier one.
    pub duplicate_keys: u64,
    /// Rows skipped for a null or empty key.
    pub null_keys: u64,
    /// The peer's distinct keys.
    pub peer_keys: u64,
    /// Common distinct keys.
    pub intersection_keys: u64,
    /// Wall-clock time.
    pub elapsed: Duration,
}

type ProgressTx = mpsc::UnboundedSender<Progress>;

/// Runs a PSI session as the requester.
pub async fn run_psi(state: Arc<NodeState>, request: PsiRequest, progress: ProgressTx) -> Result<PsiReport, NodeError> {
    let task = request.task_id.clone();
    let ran = run_session(state.clone(), request, progress).await;
    // A task in parts that failed for good takes its split key with it;
    // one whose node or peer went away keeps it, to resume.
    if let Err(e) = &ran
        && !e.may_succeed_later()
        && check_task_id(&task).is_ok()
    {
        RequesterProgress::discard(&state.config.state_dir, &task);
    }
    ran
}

async fn run_session(state: Arc<NodeState>, request: PsiRequest, progress: ProgressTx) -> Result<PsiReport, NodeError> {
    let started = Instant::now();
    check_task_id(&request.task_id)?;
    let permit = state.session_permit()?;
    let mut dataset = state.config.dataset(&request.dataset)?.clone();
    // A shard keeps the keys that fall in its shard, and dials the peer's
    // node of the same index.
    if let Some(shard) = request.shard {
        dataset.shard = Some(super::shards::filter(&state, &request.task_id, &request.peer, shard).await?);
    }
    let target = state.config.output_dir.join(format!("{}.{}", request.task_id, request.output_format.extension()));
    if request.mode.reveals_intersection() && target.exists() {
        return Err(NodeError::ResultExists { path: target });
    }
    let channel = connect_peer_shard(&state, &request.peer, request.shard.map_or(0, |s| s.index)).await?;
    let _ = progress.send(Progress { phase: "loading keys", done: 0, total: 0 });
    // A task in parts keeps its split key and each completed part on disk
    // before the first message, so it resumes after either node died (a
    // resumption continues under the owner's use record: ledger only).
    // Its keys are split onto disk by that key, one part in memory at a
    // time. Reading, splitting and digesting run off the async executor.
    let (loader, dir, task) = (dataset.clone(), state.config.state_dir.clone(), request.task_id.clone());
    let (protocol, requested_parts, ledger) = (request.protocol, request.parts, state.ledger.is_some());
    let shards = request.shard.map_or(1, |s| s.count);
    let (keys, parts, partition_key, kept) = tokio::task::spawn_blocking(move || {
        plan_keys(&loader, &dir, &task, protocol, (requested_parts, shards), ledger)
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))??;
    // RR22 over a whole set: the requester's OKVS needs only its own keys,
    // so it is built while the responder loads its keys.
    let keys = Arc::new(keys);
    let session_task = super::shards::session_task(&request.task_id, request.shard)?;
    let prepared = match (protocol, &*keys) {
        (Protocol::Rr22, SessionKeys::Whole(_)) => {
            let (keys, task) = (keys.clone(), session_task.clone());
            Some(tokio::task::spawn_blocking(move || {
                Ok::<_, NodeError>(Rr22Prepared::new(task, &keys.whole()?.keys, &mut OsRng)?)
            }))
        }
        _ => None,
    };
    let (resume, parts_done) = match &kept {
        Some(p) if p.accepted() => (true, p.parts_done()),
        _ => (false, 0),
    };
    if resume {
        tracing::info!(task = %request.task_id, parts_done, parts, "psi session resumes an interrupted one");
    }
    let mut client = PsiPeerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (out_tx, out_rx) = mpsc::channel(4);
    let open = PsiOpen {
        protocol_version: super::PROTOCOL_VERSION,
        task_id: request.task_id.clone(),
        dataset: request.peer_dataset.clone(),
        mode: mode_to_wire(request.mode) as i32,
        requester_size: keys.len(),
        key_columns: u32::try_from(dataset.key_columns.len()).unwrap_or(u32::MAX),
        normalisation: dataset.rules.names().into_iter().map(String::from).collect(),
        batch_size: u32::try_from(state.config.batch_size).unwrap_or(u32::MAX),
        protocol: protocol_to_wire(request.protocol) as i32,
        parts,
        partition_key: partition_key.as_ref().map(|k| k.to_bytes().to_vec()).unwrap_or_default().into(),
        resume,
        parts_done,
        shard: request.shard.map_or(0, |s| s.index),
        shards: request.shard.map_or(0, |s| s.count),
    };
    out_tx.send(PsiRequesterMessage { body: Some(Out::Open(open)) }).await.map_err(|_| NodeError::Cancelled)?;
    let peer = request.peer.clone();
    let (inbound, accept) = open_stream(&peer, client.exchange(ReceiverStream::new(out_rx))).await?;
    let (responder_size, resume_from) = match accept.body {
        Some(In::Accept(accept)) => (accept.responder_size, accept.resume_from),
        other => {
            let got = responder_body_name(other.as_ref());
            return Err(NodeError::UnexpectedMessage { peer, expected: "accept", got });
        }
    };
    if resume_from > parts_done {
        return Err(NodeError::InconsistentPeer {
            peer,
            detail: format!("it resumes from part {resume_from}, and this node completed {parts_done}"),
        });
    }
    if let Some(kept) = &kept {
        kept.accepted_now()?;
        kept.forget_from(resume_from)?;
    }
    let task = session_task;
    let (requester_size, batch_size) = (keys.len(), state.config.batch_size);
    let prepared = match prepared {
        Some(handle) => Some(handle.await.map_err(|e| NodeError::Worker(e.to_string()))??),
        None => None,
    };
    let params = match request.protocol {
        Protocol::Ecdh => {
            Params::Ecdh(SessionParams::new(task, request.mode, requester_size, responder_size, batch_size)?)
        }
        protocol => Params::Ot(protocol, kkrt::SessionParams::new(task, request.mode, requester_size, responder_size)?),
    };
    tracing::info!(
        task = %request.task_id,
        peer = %peer,
        mode = %request.mode,
        protocol = %request.protocol,
        "psi session started"
    );

    let (in_tx, in_rx) = mpsc::channel(INBOUND_CAPACITY);
    tokio::spawn(forward_inbound(inbound, in_tx));
    let mut link = PeerLink::new(&peer, in_rx, out_tx);
    let format = request.output_format;
    let parts_progress = kept;
    let report = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let (rows_read, duplicate_keys, null_keys, _) = keys.counts();
        let (intersection, cardinality) = match params {
            Params::Ecdh(params) => {
                let output = request_role(params, keys.whole()?, &mut link, &progress)?;
                (output.intersection().map(<[u32]>::to_vec), output.cardinality())
            }
            Params::Ot(protocol, params) => {
                let parts = (parts_progress.as_ref(), resume_from);
                let indices = request_ot((protocol, prepared), params, &keys, parts, &mut link, &progress)?;
                let found = indices.len() as u64;
                (Some(indices), found)
            }
        };
        let written = match intersection {
            Some(indices) => {
                let _ = progress.send(Progress { phase: "writing", done: 0, total: indices.len() as u64 });
                Some(keys.write_rows(&dataset, &indices, &target, format)?)
            }
            None => None,
        };
        if let Some(done) = parts_progress {
            done.finish();
        }
        Ok::<_, NodeError>(PsiReport {
            output: written,
            rows_read,
            distinct_keys: keys.len(),
            duplicate_keys,
            null_keys,
            peer_keys: responder_size,
            intersection_keys: cardinality,
            elapsed: started.elapsed(),
        })
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))??;
    tracing::info!(task = %request.task_id, "psi session completed");
    Ok(report)
}

/// A session's parameters, by protocol: an OT protocol's (KKRT or RR22)
/// are its task, mode and sizes.
enum Params {
    Ecdh(SessionParams),
    Ot(Protocol, kkrt::SessionParams),
}

/// The keys a session runs on, its parts, its split key (in parts) and,
/// with a ledger, its progress on disk: an interrupted task's plan is
/// taken up again (its split, checked against the keys it started with),
/// else the parts are the request's, or one per [`kkrt::PART_KEYS`] rows.
/// Blocking: reads the whole dataset.
fn plan_keys(
    dataset: &Dataset,
    state_dir: &Path,
    task: &str,
    protocol: Protocol,
    (requested_parts, shards): (u32, u32),
    ledger: bool,
) -> Result<(SessionKeys, u32, Option<PartitionKey>, Option<RequesterProgress>), NodeError> {
    let earlier = match (protocol, ledger) {
        (protocol, true) if protocol.is_ot() => RequesterProgress::load(state_dir, task)?,
        _ => None,
    };
    let parts = match (&earlier, protocol, requested_parts) {
        (Some(kept), _, _) => kept.parts,
        (None, Protocol::Ecdh, _) => 1,
        // A shard holds about 1/shards of the rows.
        (None, _, 0) => dataset
            .rows_beyond(kkrt::PART_KEYS.saturating_mul(u64::from(shards)))?
            .map_or(1, |rows| kkrt::parts_for(rows / u64::from(shards))),
        (None, _, parts) => parts,
    };
    let key = match (&earlier, parts) {
        (_, 1) => None,
        (Some(kept), _) => Some(kept.key.clone()),
        (None, _) => Some(PartitionKey::random(&mut OsRng)),
    };
    let split = match &key {
        Some(key) => Some(Partition::new(key, &TaskId::new(task)?, parts)?),
        None => None,
    };
    let keys = SessionKeys::load(dataset, split.as_ref(), state_dir)?;
    if protocol.is_ot() {
        kkrt::check_parts(parts, keys.len())?;
    }
    let kept = match (earlier, split.is_some() && ledger) {
        (Some(earlier), _) => Some(earlier.for_keys(task, keys.digest(), keys.len())?),
        (None, true) => {
            let key = key.clone().expect("a split has its key");
            Some(RequesterProgress::start(state_dir, task, parts, (keys.digest(), keys.len()), key)?)
        }
        (None, false) => None,
    };
    Ok((keys, parts, key, kept))
}

/// A link the requester's role runs over: its own stream, or nested in a
/// learning session's.
pub(crate) trait RequesterLink: Link<PsiResponderMessage, PsiRequesterMessage> {}
impl<L: Link<PsiResponderMessage, PsiRequesterMessage>> RequesterLink for L {}

fn send(link: &impl RequesterLink, body: Out, phase: &'static str) -> Result<(), NodeError> {
    link.send(PsiRequesterMessage { body: Some(body) }, phase)
}

fn body(link: &impl RequesterLink, message: PsiResponderMessage, expected: &'static str) -> Result<In, NodeError> {
    message.body.ok_or_else(|| NodeError::UnexpectedMessage {
        peer: link.peer().into(),
        expected,
        got: responder_body_name(None),
    })
}

fn unexpected(link: &impl RequesterLink, expected: &'static str, got: &In) -> NodeError {
    NodeError::UnexpectedMessage { peer: link.peer().into(), expected, got: responder_body_name(Some(got)) }
}

fn absorb_reply(
    link: &impl RequesterLink,
    requests: &mut RequesterRequests<'_, KeyList>,
    message: PsiResponderMessage,
) -> Result<(), NodeError> {
    match body(link, message, "reply tags")? {
        In::ReplyTags(bytes) => Ok(requests.absorb_reply(TagBatch::decode(&bytes)?)?),
        other => Err(unexpected(link, "reply tags", &other)),
    }
}

/// The requester's role, on a blocking thread.
pub(crate) fn request_role(
    params: SessionParams,
    keys: &DatasetKeys,
    link: &mut impl RequesterLink,
    progress: &ProgressTx,
) -> Result<RequesterOutput, NodeError> {
    let (requester_len, responder_len) = (params.requester_len(), params.responder_len());
    let mode = params.mode();
    let report = |phase, done, total| drop(progress.send(Progress { phase, done, total }));
    let mut session = RequesterSession::new(params, &keys.keys, &mut OsRng)?;
    let mut absorbed = 0u64;
    while absorbed < responder_len {
        let message = link.recv("responder points")?;
        match body(link, message, "responder points")? {
            In::ResponderPoints(bytes) => {
                let points = PointBatch::decode(&bytes)?;
                absorbed += points.len() as u64;
                session.absorb(points)?;
                report("peer keys", absorbed, responder_len);
            }
            other => return Err(unexpected(link, "responder points", &other)),
        }
    }

    let mut requests = session.finish()?;
    loop {
        // Keep at most MAX_OUTSTANDING_BATCHES unanswered, so the peer's
        // answers always fit in our inbound buffer and neither side can
        // block the other.
        while requests.awaiting_replies() >= MAX_OUTSTANDING_BATCHES {
            let message = link.recv("replies")?;
            absorb_reply(link, &mut requests, message)?;
        }
        while let Some(message) = link.try_recv("replies")? {
            absorb_reply(link, &mut requests, message)?;
        }
        let Some(batch) = requests.next_batch() else {
            break;
        };
        send(link, Out::RequestPoints(batch.into_bytes().into()), "requests")?;
        report("own keys", requests.sent() as u64, requester_len);
    }
    while requests.replies() < requester_len {
        let message = link.recv("replies")?;
        absorb_reply(link, &mut requests, message)?;
    }
    let output = requests.finish()?;
    for echo in output.echo_batches() {
        send(link, Out::EchoTags(echo.to_bytes().into()), "echo")?;
    }
    link.close(); // half-close: the peer sees the end of our stream
    expect_summary(link, mode, output.cardinality())?;
    Ok(output)
}

/// The responder's closing summary; in both mode its count must be ours.
fn expect_summary(link: &mut impl RequesterLink, mode: OutputMode, found: u64) -> Result<(), NodeError> {
    let message = link.recv("summary")?;
    match body(link, message, "summary")? {
        In::Summary(summary) => {
            if mode == OutputMode::IntersectionToBoth && summary.responder_matches != found {
                return Err(NodeError::InconsistentPeer {
                    peer: link.peer().into(),
                    detail: format!("it found {} common keys where we found {found}", summary.responder_matches),
                });
            }
            Ok(())
        }
        other => Err(unexpected(link, "summary", &other)),
    }
}

fn expect_kkrt(link: &mut impl RequesterLink, expected: &'static str) -> Result<impl AsRef<[u8]>, NodeError> {
    let message = link.recv(expected)?;
    match body(link, message, expected)? {
        In::Kkrt(bytes) => Ok(bytes),
        other => Err(unexpected(link, expected, &other)),
    }
}

/// The requester of an OT protocol (KKRT or RR22), on a blocking thread:
/// the indices of its common keys. With a split, each side first sends its part sizes, then the parts
/// run one after another as sessions of their own, bound to part task ids;
/// each completed part is kept on disk, and the parts before `resume_from`
/// (completed by an earlier session of the task) are read back, not run.
fn request_ot(
    (protocol, prepared): (Protocol, Option<Rr22Prepared>),
    params: kkrt::SessionParams,
    keys: &SessionKeys,
    (done, resume_from): (Option<&RequesterProgress>, u32),
    link: &mut impl RequesterLink,
    progress: &ProgressTx,
) -> Result<Vec<u32>, NodeError> {
    let mode = params.mode();
    let mut found = match keys {
        SessionKeys::Whole(keys) => request_part((protocol, prepared), params, &keys.keys, link, progress)?,
        SessionKeys::Parts(buckets) => {
            let sizes = PartSizes { sizes: buckets.sizes().to_vec() };
            let parts = u32::try_from(sizes.sizes.len()).expect("at most MAX_PARTS parts");
            send(link, Out::Kkrt(sizes.to_bytes().into()), "part sizes")?;
            let theirs = PartSizes::decode(expect_kkrt(link, "part sizes")?.as_ref())?;
            check_part_sizes(link.peer(), &theirs, parts, params.responder_len())?;
            let mut found = Vec::new();
            for (i, their_len) in (0u32..).zip(&theirs.sizes) {
                if let (true, Some(done)) = (i < resume_from, done) {
                    found.extend(done.part(i)?);
                    continue;
                }
                let part = buckets.part(i)?;
                let offset = u32::try_from(buckets.offset(i)).expect("key sets hold fewer than 2^32 keys");
                let task = kkrt::part_task(params.task(), i)?;
                let part_params = kkrt::SessionParams::new(task, mode, part.len() as u64, *their_len)?;
                let indices = request_part((protocol, None), part_params, &part, link, progress)?;
                let global: Vec<u32> = indices.into_iter().map(|j| offset + j).collect();
                if let Some(done) = done {
                    done.complete(i, &global)?;
                }
                found.extend(global);
            }
            found
        }
    };
    found.sort_unstable();
    link.close();
    expect_summary(link, mode, found.len() as u64)?;
    Ok(found)
}

/// The peer's part sizes must be one per part and add up to its set.
pub(crate) fn check_part_sizes(peer: &str, sizes: &PartSizes, parts: u32, total: u64) -> Result<(), NodeError> {
    let sum = sizes.sizes.iter().try_fold(0u64, |a, &s| a.checked_add(s));
    if sizes.sizes.len() != parts as usize || sum != Some(total) {
        return Err(NodeError::InconsistentPeer {
            peer: peer.into(),
            detail: format!(
                "it sent {} part sizes adding up to {sum:?} for {parts} parts of {total} keys",
                sizes.sizes.len()
            ),
        });
    }
    Ok(())
}

/// One session of an OT protocol (a whole set or one part of it): the
/// indices of the common keys among `keys`.
fn request_part(
    (protocol, prepared): (Protocol, Option<Rr22Prepared>),
    params: kkrt::SessionParams,
    keys: &KeyList,
    link: &mut impl RequesterLink,
    progress: &ProgressTx,
) -> Result<Vec<u32>, NodeError> {
    if protocol == Protocol::Rr22 {
        let params = rr22::SessionParams::like(&params)?;
        let session = match prepared {
            Some(prepared) => Rr22Requester::from_prepared(params, prepared)?,
            None => Rr22Requester::new(params, keys, &mut OsRng)?,
        };
        return request_rr22_part(session, link, progress);
    }
    request_kkrt_part(params, keys, link, progress)
}

/// One KKRT session.
fn request_kkrt_part(
    params: kkrt::SessionParams,
    keys: &KeyList,
    link: &mut impl RequesterLink,
    progress: &ProgressTx,
) -> Result<Vec<u32>, NodeError> {
    use kkrt::messages::{BaseChoices, Outputs};
    let report = |phase, done, total| drop(progress.send(Progress { phase, done, total }));
    let (bins, total) = (params.bins(), params.output_count());
    let mut session = KkrtRequester::new(params, keys, &mut OsRng)?;
    send(link, Out::Kkrt(session.setup().to_bytes().into()), "KKRT setup")?;
    session.absorb_choices(BaseChoices::decode(expect_kkrt(link, "KKRT base choices")?.as_ref())?)?;
    while let Some(run) = session.next_corrections()? {
        let done = u64::from(run.first_bin) + run.len() as u64;
        send(link, Out::Kkrt(run.to_bytes().into()), "KKRT corrections")?;
        report("own keys", done, bins);
    }
    while session.received() < total {
        session.absorb_outputs(Outputs::decode(expect_kkrt(link, "KKRT outputs")?.as_ref())?)?;
        report("peer keys", session.received(), total);
    }
    let output = session.finish()?;
    for matches in output.matches() {
        send(link, Out::Kkrt(matches.to_bytes().into()), "KKRT matches")?;
    }
    Ok(output.intersection().to_vec())
}

/// One RR22 session.
fn request_rr22_part(
    mut session: Rr22Requester,
    link: &mut impl RequesterLink,
    progress: &ProgressTx,
) -> Result<Vec<u32>, NodeError> {
    use rr22::messages::{BaseChoices, Trees};
    let report = |phase, done, total| drop(progress.send(Progress { phase, done, total }));
    let (store, total) = (session.params().store_len(), session.params().output_count());
    send(link, Out::Kkrt(session.setup().to_bytes().into()), "RR22 setup")?;
    session.absorb_choices(BaseChoices::decode(expect_kkrt(link, "RR22 base choices")?.as_ref())?)?;
    while let Some(run) = session.next_corrections()? {
        send(link, Out::Kkrt(run.to_bytes().into()), "RR22 OT corrections")?;
    }
    session.absorb_trees(Trees::decode(expect_kkrt(link, "RR22 trees")?.as_ref())?)?;
    while let Some(run) = session.next_masked()? {
        let done = u64::from(run.first) + run.len() as u64;
        send(link, Out::Kkrt(run.to_bytes().into()), "RR22 masked store")?;
        report("own keys", done, store);
    }
    // While the responder turns the store into its outputs.
    session.prepare_matching()?;
    while session.received() < total {
        session.absorb_outputs(kkrt::messages::Outputs::decode(expect_kkrt(link, "RR22 outputs")?.as_ref())?)?;
        report("peer keys", session.received(), total);
    }
    let output = session.finish()?;
    for matches in output.matches() {
        send(link, Out::Kkrt(matches.to_bytes().into()), "RR22 matches")?;
    }
    Ok(output.intersection().to_vec())
}
