//! PSI, the data owner's side: the `PsiPeer` service, this node as the
//! responder of a session.
//!
//! A session is refused before any key is touched if the node is busy, or
//! the task id, mode, version, announced size, dataset or key declaration is
//! wrong. Keys are loaded and the protocol role runs on a blocking thread.
//! Failures about this node's own files are logged here in full and reported
//! to the peer under the node's one redaction policy (`From<NodeError> for
//! Status`): paths and column lists stay local.
//! Nothing is written unless the session completes; in
//! intersection-to-both mode this side's rows go to
//! `<output_dir>/from-<peer>/<task>-<dataset>.csv`, so no peer can name a
//! file outside its own folder, with the salt and outcome of its salted
//! commitment beside it (`results::finish`).
//!
//! **Under a ledger, the session must be the task's.** The protocol and
//! who receives the intersection are read from the task's parameters on
//! the ledger, before the use record: a requester cannot switch a task to
//! another protocol, cannot keep this node from the rows a task to both
//! promises it (by opening in intersection or cardinality mode), and cannot
//! make a task to the requester deliver here. For a task to both, this
//! node records its own result's commitment on the ledger — the only
//! writer the rules allow for it — before its closing summary, so the
//! requester's result is never whole while this side's is unrecorded, and
//! the coordinator ends the task only when both are on the ledger.

use std::sync::Arc;

use rand::rngs::OsRng;
use stayput_proto::v1::psi_peer_server::PsiPeer;
use stayput_proto::v1::{
    PsiAccept, PsiOpen, PsiRequesterMessage, PsiResponderMessage, PsiSummary, psi_requester_message::Body as In,
    psi_responder_message::Body as Out,
};
use stayput_psi::Protocol;
use stayput_psi::ecdh::{OutputMode, ResponderOutput, ResponderSession, SessionParams};
use stayput_psi::group::TaskId;
use stayput_psi::keys::KeyList;
use stayput_psi::kkrt::messages::PartSizes;
use stayput_psi::kkrt::{self, KkrtResponder};
use stayput_psi::messages::{PointBatch, TagBatch};
use stayput_psi::partition::{Partition, PartitionKey};
use stayput_psi::rr22::{self, Rr22Responder};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::authorisation::{ServeRequest, record_own_result, served_grant};
use crate::config::ShardOf;
use crate::dataset::{Dataset, DatasetKeys, FileFormat};
use crate::identity::caller_org;
use crate::psi::buckets::SessionKeys;
use crate::psi::progress::{ResponderPlan, ResponderProgress};
use crate::psi::requester::check_part_sizes;
use crate::results::TaskResult;
use crate::serve::{Authorised, Recorded};
use crate::wire::{
    INBOUND_CAPACITY, Link, PeerLink, check_task_id, first_message, forward_inbound, mode_from_wire,
    protocol_from_wire, requester_body_name,
};
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

type OwnLink = PeerLink<PsiRequesterMessage, Result<PsiResponderMessage, Status>>;

/// A link the responder's role runs over: its own stream, or nested in a
/// learning session's.
pub(crate) trait ResponderLink: Link<PsiRequesterMessage, Result<PsiResponderMessage, Status>> {}
impl<L: Link<PsiRequesterMessage, Result<PsiResponderMessage, Status>>> ResponderLink for L {}

/// A validated session request.
#[derive(Clone)]
struct Accepted {
    peer: String,
    task: String,
    mode: OutputMode,
    protocol: Protocol,
    requester_size: u64,
    /// KKRT: the requester's split into parts, when it asked for one.
    partition_key: Option<PartitionKey>,
    parts: u32,
    /// A resumption of the task's interrupted session in parts, and the
    /// parts the requester says it completed.
    resume: bool,
    parts_done: u32,
    dataset: Dataset,
    /// The shard this node serves, of a task run as shards.
    shard: Option<ShardOf>,
}

impl Accepted {
    /// What the use record meters: the requester's keys, or for KKRT its
    /// cuckoo bins — each bin can carry one key a malicious requester
    /// tests, so bins are what it could learn about.
    fn metered_items(&self) -> u64 {
        match self.protocol {
            Protocol::Ecdh => self.requester_size,
            Protocol::Kkrt => kkrt::metered_bins(self.requester_size, self.parts),
            Protocol::Rr22 => rr22::metered_keys(self.requester_size, self.parts),
        }
    }
}

fn validate_open(state: &NodeState, peer: String, open: PsiOpen) -> Result<Accepted, NodeError> {
    if open.protocol_version != super::PROTOCOL_VERSION {
        return Err(NodeError::UnsupportedVersion { got: open.protocol_version, speaks: super::PROTOCOL_VERSION });
    }
    check_task_id(&open.task_id)?;
    let mode = mode_from_wire(open.mode)?;
    let protocol = protocol_from_wire(open.protocol)?;
    if protocol.is_ot() && mode == OutputMode::CardinalityOnly {
        return Err(stayput_psi::PsiError::ModeNotOffered { protocol: protocol.name(), mode }.into());
    }
    let max = match protocol {
        Protocol::Ecdh => u64::from(u32::MAX),
        Protocol::Kkrt => kkrt::MAX_SET_LEN,
        Protocol::Rr22 => rr22::MAX_SET_LEN,
    };
    if open.requester_size > max {
        return Err(NodeError::TooManyPeerKeys { announced: open.requester_size, max });
    }
    let parts = open.parts.max(1);
    // An OT session holds one part at a time: a whole set above the part
    // bound would make this node allocate for keys no part limits (RR22's
    // VOLE is sized by the announced count before any key arrives).
    if protocol.is_ot() {
        kkrt::check_parts(parts, open.requester_size)?;
    }
    let partition_key = match (protocol, parts) {
        (_, 1) => None,
        (Protocol::Ecdh, _) => {
            return Err(stayput_psi::PsiError::Malformed {
                message: "open",
                reason: "only sessions of an OT protocol (kkrt, rr22) run in parts".into(),
            }
            .into());
        }
        (Protocol::Kkrt | Protocol::Rr22, _) => {
            let key: [u8; 32] =
                open.partition_key.as_ref().try_into().map_err(|_| stayput_psi::PsiError::Malformed {
                    message: "open",
                    reason: format!("a partition key of {} bytes; parts need one of 32", open.partition_key.len()),
                })?;
            Some(PartitionKey::from_bytes(key))
        }
    };
    if open.resume && partition_key.is_none() {
        return Err(stayput_psi::PsiError::Malformed {
            message: "open",
            reason: "only sessions in parts (kkrt, rr22) resume".into(),
        }
        .into());
    }
    // A shard pair: this node must be the shard the requester's shard
    // means (and the task's shard count is checked on the ledger).
    let shard = super::shards::own_shard(state, &open.task_id, open.shards, Some(open.shard))?;
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
    Ok(Accepted {
        peer,
        task: open.task_id,
        mode,
        protocol,
        requester_size: open.requester_size,
        partition_key,
        parts,
        resume: open.resume,
        parts_done: open.parts_done,
        dataset,
        shard,
    })
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
        let open = match first_message(&mut inbound).await?.and_then(|m| m.body) {
            Some(In::Open(open)) => open,
            other => {
                let got = requester_body_name(other.as_ref());
                return Err(NodeError::UnexpectedMessage { peer, expected: "open", got }.into());
            }
        };
        let accepted = validate_open(&self.state, peer, open)?;
        let dataset_name = accepted.dataset.name.clone();
        // With a ledger, the serve path: authorised, then the use record
        // (the peer's set size) before any key is touched. Without one
        // (two organisations outside a consortium) a session permit alone.
        let session = if self.state.ledger.is_some() {
            let request = ServeRequest {
                task: &accepted.task,
                peer: &accepted.peer,
                dataset: &dataset_name,
                kinds: crate::authorisation::kinds_for(accepted.mode),
                items: accepted.metered_items(),
                columns: &accepted.dataset.key_columns,
                key_columns: &accepted.dataset.key_columns,
                shard: accepted.shard.map(|s| s.index),
            };
            let recorded = async {
                if accepted.resume {
                    // The use was recorded by the session this resumes;
                    // the plan on this node's disk bounds what it may
                    // serve again (checked once the keys are loaded).
                    let ledger = &*crate::serve::ledger_access(&self.state, "serving a task")?.ledger;
                    let grant = served_grant(ledger, &self.state.config.org, &request).await?;
                    let recorded = Authorised::continuing(&self.state, &request, &grant).await?;
                    check_task_terms(&self.state, &accepted).await?;
                    return Ok(recorded);
                }
                let authorised = Authorised::new(&self.state, &request).await?;
                check_task_terms(&self.state, &accepted).await?;
                authorised.record_asked(request.items).await
            };
            let recorded = recorded.await.map_err(|e| {
                tracing::warn!(task = %accepted.task, peer = %accepted.peer, error = %e, "psi session refused");
                Status::from(e)
            })?;
            let grant = &recorded.session().grant_id;
            if accepted.resume {
                tracing::info!(task = %accepted.task, grant = %grant, "resuming under the use on the ledger");
            } else {
                tracing::info!(task = %accepted.task, grant = %grant, "use recorded on the ledger");
            }
            Session::Recorded(Box::new(recorded))
        } else if accepted.resume {
            return Err(NodeError::NotAuthorised {
                task: accepted.task.clone(),
                reason: "resuming a session needs the ledger's use record; this node has no [ledger]".into(),
            }
            .into());
        } else {
            Session::Unledgered(self.state.session_permit()?)
        };
        tracing::info!(
            task = %accepted.task,
            peer = %accepted.peer,
            dataset = %dataset_name,
            mode = %accepted.mode,
            protocol = %accepted.protocol,
            requester_size = accepted.requester_size,
            "psi session opened"
        );
        // A shard keeps the keys of its shard; a session in parts splits
        // them onto disk by the task's split, one part in memory at a time.
        let (mut dataset, state_dir) = (accepted.dataset.clone(), self.state.config.state_dir.clone());
        if let Some(shard) = accepted.shard {
            let filter = super::shards::filter(&self.state, &accepted.task, &accepted.peer, shard).await;
            dataset.shard = Some(filter.map_err(Status::from)?);
        }
        let split = match &accepted.partition_key {
            Some(key) => Some(
                TaskId::new(accepted.task.clone())
                    .and_then(|task| Partition::new(key, &task, accepted.parts))
                    .map_err(|e| Status::from(NodeError::from(e)))?,
            ),
            None => None,
        };
        let loaded = tokio::task::spawn_blocking(move || SessionKeys::load(&dataset, split.as_ref(), &state_dir))
            .await
            .map_err(|e| NodeError::Worker(e.to_string()))
            .and_then(|r| r);
        let keys = loaded.map_err(|err| {
            tracing::error!(task = %accepted.task, dataset = %dataset_name, error = %err, "cannot serve dataset");
            Status::from(err)
        })?;
        let params = Params::new(&accepted, keys.len(), self.state.config.batch_size)?;
        // The plan digests the whole key list: off the async executor.
        let (state, plan_of, recorded) =
            (self.state.clone(), accepted.clone(), matches!(session, Session::Recorded(_)));
        let (keys, kept) = tokio::task::spawn_blocking(move || {
            let kept = keep_progress(&state, &plan_of, recorded, &keys);
            (keys, kept)
        })
        .await
        .map_err(|e| Status::from(NodeError::Worker(e.to_string())))?;
        let kept = kept.map_err(|e| {
            tracing::warn!(task = %accepted.task, peer = %accepted.peer, error = %e, "psi session refused");
            Status::from(e)
        })?;

        let (out_tx, out_rx) = mpsc::channel(4);
        let (in_tx, in_rx) = mpsc::channel(INBOUND_CAPACITY);
        tokio::spawn(forward_inbound(inbound, in_tx));
        let mut link = PeerLink::new(&accepted.peer, in_rx, out_tx);
        let state = self.state.clone();
        let ledger = state.ledger.as_ref().map(|_| tokio::runtime::Handle::current());
        tokio::task::spawn_blocking(move || {
            let _session = session;
            let task = accepted.task.clone();
            match respond(&state, &accepted, params, &keys, &mut link, ledger.as_ref(), kept) {
                Ok(matches) => tracing::info!(task = %task, matches, "psi session completed"),
                Err(err) => {
                    tracing::warn!(task = %task, error = ?err.to_string(), "psi session failed");
                    let _ = link.send(Err(Status::from(err)), "error");
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

/// A session in parts under a ledger keeps its progress on this node's
/// disk: a fresh one starts it (its use is recorded), a resumption must
/// match it and have a resumption left; returns it with the part both
/// continue from.
fn keep_progress(
    state: &NodeState,
    accepted: &Accepted,
    recorded: bool,
    keys: &SessionKeys,
) -> Result<Option<(ResponderProgress, u32)>, NodeError> {
    let (Some(key), true) = (&accepted.partition_key, recorded) else {
        return Ok(None);
    };
    let plan = ResponderPlan::new(key, accepted.parts, accepted.requester_size, accepted.mode, keys.digest());
    let keys_len = usize::try_from(keys.len()).unwrap_or(usize::MAX);
    let (dir, task, dataset) = (&state.config.state_dir, &accepted.task, &accepted.dataset.name);
    if !accepted.resume {
        return Ok(Some((ResponderProgress::start(dir, task, dataset, plan, keys_len)?, 0)));
    }
    let resumed =
        ResponderProgress::resume(dir, task, dataset, &plan, accepted.parts_done, keys_len).map_err(|reason| {
            NodeError::NotAuthorised { task: task.clone(), reason: format!("cannot resume: {reason}") }
        })?;
    tracing::info!(task = %task, peer = %accepted.peer, resume_from = resumed.1, "psi session resumed");
    Ok(Some(resumed))
}

/// The task's terms on the ledger must be the session's: its protocol (a
/// requester cannot pick another protocol than the one its organisation
/// signed for) and who receives the intersection (a task to both is served
/// in intersection-to-both mode only, and only a task to both is).
async fn check_task_terms(state: &NodeState, accepted: &Accepted) -> Result<(), NodeError> {
    use stayput_chain_connector::tasks::{PsiDelivery, PsiProtocol, TaskParams};
    let ledger = &*crate::serve::ledger_access(state, "serving a task")?.ledger;
    let refuse = |reason: String| NodeError::NotAuthorised { task: accepted.task.clone(), reason };
    let record = ledger
        .task(&accepted.task)
        .await
        .map_err(NodeError::from_ledger)?
        .ok_or_else(|| refuse("not on the ledger".into()))?;
    let request = &record.task.request.request;
    let (protocol, delivery, shards) = match TaskParams::decode(request.kind, &request.params) {
        Ok(TaskParams::Psi(p)) => (p.protocol, p.delivery, p.shards),
        _ => (PsiProtocol::Ecdh, PsiDelivery::ToRequester, 1),
    };
    let asked = accepted.shard.map_or(1, |s| s.count);
    if shards != asked {
        return Err(refuse(format!("the task on the ledger runs as {shards} shard(s), the session asked for {asked}")));
    }
    if protocol.name() != accepted.protocol.name() {
        return Err(refuse(format!(
            "the task on the ledger runs the {} protocol, the session asked for {}",
            protocol.name(),
            accepted.protocol
        )));
    }
    let to_both = accepted.mode == OutputMode::IntersectionToBoth;
    if to_both != (delivery == PsiDelivery::ToBoth) {
        return Err(refuse(format!(
            "the task on the ledger delivers {}, the session asked for {}",
            match delivery {
                PsiDelivery::ToBoth => "the intersection to both parties",
                PsiDelivery::ToRequester => "its result to the requester only",
            },
            accepted.mode
        )));
    }
    Ok(())
}

/// A session's parameters, by protocol: an OT protocol's (KKRT or RR22)
/// are its task, mode and sizes.
pub(crate) enum Params {
    Ecdh(SessionParams),
    Ot(Protocol, kkrt::SessionParams),
}

impl Params {
    fn new(accepted: &Accepted, responder_size: u64, batch_size: usize) -> Result<Self, NodeError> {
        let task = super::shards::session_task(&accepted.task, accepted.shard)?;
        Ok(match accepted.protocol {
            Protocol::Ecdh => Self::Ecdh(SessionParams::new(
                task,
                accepted.mode,
                accepted.requester_size,
                responder_size,
                batch_size,
            )?),
            protocol => Self::Ot(
                protocol,
                kkrt::SessionParams::new(task, accepted.mode, accepted.requester_size, responder_size)?,
            ),
        })
    }

    fn responder_len(&self) -> u64 {
        match self {
            Self::Ecdh(p) => p.responder_len(),
            Self::Ot(_, p) => p.responder_len(),
        }
    }
}

/// What a PSI session runs under: the serve path's recorded use (with its
/// permit and single-flight guard), or, without a ledger, a permit.
#[derive(Debug)]
enum Session {
    Recorded(#[allow(dead_code)] Box<Recorded>),
    Unledgered(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit),
}

pub(crate) fn send(link: &impl ResponderLink, body: Out, phase: &'static str) -> Result<(), NodeError> {
    link.send(Ok(PsiResponderMessage { body: Some(body) }), phase)
}

fn expect(link: &mut impl ResponderLink, expected: &'static str) -> Result<In, NodeError> {
    let message = link.recv(expected)?;
    message.body.ok_or_else(|| NodeError::UnexpectedMessage {
        peer: link.peer().into(),
        expected,
        got: requester_body_name(None),
    })
}

fn unexpected(link: &impl ResponderLink, expected: &'static str, got: &In) -> NodeError {
    NodeError::UnexpectedMessage { peer: link.peer().into(), expected, got: requester_body_name(Some(got)) }
}

/// Runs the responder's role; returns how many of its keys matched (both
/// mode) for the log.
///
/// `ledger` (the runtime's handle, when the node has a ledger): a task to
/// both has this node's result recorded through it before the summary.
fn respond(
    state: &NodeState,
    session: &Accepted,
    params: Params,
    keys: &SessionKeys,
    link: &mut OwnLink,
    ledger: Option<&tokio::runtime::Handle>,
    kept: Option<(ResponderProgress, u32)>,
) -> Result<u64, NodeError> {
    let resume_from = kept.as_ref().map_or(0, |(_, from)| *from);
    send(link, Out::Accept(PsiAccept { responder_size: params.responder_len(), resume_from }), "accept")?;
    let mut kept = kept.map(|(progress, _)| progress);
    let intersection = match params {
        Params::Ecdh(params) => respond_role(params, keys.whole()?, link)?.intersection().map(<[u32]>::to_vec),
        Params::Ot(protocol, params) => respond_ot(protocol, params, keys, (kept.as_mut(), resume_from), link)?,
    };
    let matches = match intersection {
        Some(indices) => {
            let folder = state.config.output_dir.join(format!("from-{}", session.peer));
            let name = format!("{}-{}", session.task, session.dataset.name);
            let target = folder.join(format!("{name}.{}", FileFormat::Csv.extension()));
            let written = keys.write_rows(&session.dataset, &indices, &target, FileFormat::Csv)?;
            let count = indices.len() as u64;
            let result = TaskResult {
                file_sha256: written.sha256,
                file: target,
                count,
                intermediates: vec![],
                count_withheld: false,
            };
            let outcome = crate::results::finish(&folder, &name, result)?;
            if let Some(ledger) = ledger {
                let access = crate::serve::ledger_access(state, "recording a result")?;
                ledger.block_on(record_own_result(
                    &*access.ledger,
                    &state.config.org,
                    &access.key,
                    &session.task,
                    outcome.result_sha256,
                ))?;
                tracing::info!(task = %session.task, "own result of a task to both recorded on the ledger");
            }
            count
        }
        None => 0,
    };
    send(link, Out::Summary(PsiSummary { responder_matches: matches }), "summary")?;
    if let Some(done) = kept {
        done.finish();
    }
    Ok(matches)
}

fn expect_kkrt(link: &mut impl ResponderLink, expected: &'static str) -> Result<impl AsRef<[u8]>, NodeError> {
    match expect(link, expected)? {
        In::Kkrt(bytes) => Ok(bytes),
        other => Err(unexpected(link, expected, &other)),
    }
}

/// The KKRT responder after its accept, up to its intersection (both
/// mode): the whole set, or part by part after both sides' part sizes —
/// then from `resume_from` on, each part marked served before its outputs
/// leave and finished after, when the node keeps the task's progress.
fn respond_ot(
    protocol: Protocol,
    params: kkrt::SessionParams,
    keys: &SessionKeys,
    (mut kept, resume_from): (Option<&mut ResponderProgress>, u32),
    link: &mut impl ResponderLink,
) -> Result<Option<Vec<u32>>, NodeError> {
    let buckets = match keys {
        SessionKeys::Whole(keys) => return respond_part(protocol, params, &keys.keys, link, &mut || Ok(())),
        SessionKeys::Parts(buckets) => buckets,
    };
    let parts = u32::try_from(buckets.sizes().len()).expect("at most MAX_PARTS parts");
    let theirs = PartSizes::decode(expect_kkrt(link, "part sizes")?.as_ref())?;
    check_part_sizes(link.peer(), &theirs, parts, params.requester_len())?;
    // A keyed split is even; a requester that claims one huge part would
    // make this node hold that part's rows at once, and a part run again
    // on resumption would cost more than its use record metered.
    let cap = kkrt::max_part_len(params.requester_len(), parts);
    if let Some(&largest) = theirs.sizes.iter().max().filter(|&&s| s > cap) {
        return Err(NodeError::InconsistentPeer {
            peer: link.peer().into(),
            detail: format!(
                "it claims a part of {largest} keys; a keyed split of {} keys into {} parts holds at most {cap} a part",
                params.requester_len(),
                parts
            ),
        });
    }
    if let Some(kept) = kept.as_deref_mut() {
        kept.their_sizes(&theirs.sizes)
            .map_err(|detail| NodeError::InconsistentPeer { peer: link.peer().into(), detail })?;
    }
    let sizes = PartSizes { sizes: buckets.sizes().to_vec() };
    send(link, Out::Kkrt(sizes.to_bytes().into()), "part sizes")?;
    let both = params.mode() == OutputMode::IntersectionToBoth;
    let mut found: Option<Vec<u32>> = None;
    for (i, their_len) in (0u32..).zip(&theirs.sizes) {
        if i < resume_from {
            if let (true, Some(kept)) = (both, kept.as_deref()) {
                found.get_or_insert_with(Vec::new).extend(kept.own_part(i)?);
            }
            continue;
        }
        let part = buckets.part(i)?;
        let offset = u32::try_from(buckets.offset(i)).expect("key sets hold fewer than 2^32 keys");
        let task = kkrt::part_task(params.task(), i)?;
        let part_params = kkrt::SessionParams::new(task, params.mode(), *their_len, part.len() as u64)?;
        let mut serving = || kept.as_deref_mut().map_or(Ok(()), |k| k.serving(i));
        let own = respond_part(protocol, part_params, &part, link, &mut serving)?
            .map(|indices| indices.into_iter().map(|j| offset + j).collect::<Vec<u32>>());
        if let Some(kept) = kept.as_deref_mut() {
            kept.finished(i, own.as_deref())?;
        }
        if let Some(own) = own {
            found.get_or_insert_with(Vec::new).extend(own);
        }
    }
    if params.mode() == OutputMode::IntersectionToBoth {
        let mut found = found.unwrap_or_default();
        found.sort_unstable();
        return Ok(Some(found));
    }
    Ok(None)
}

/// One session of an OT protocol as the responder: a whole set or one part
/// of it; `serving` runs just before the first outputs leave.
fn respond_part(
    protocol: Protocol,
    params: kkrt::SessionParams,
    keys: &KeyList,
    link: &mut impl ResponderLink,
    serving: &mut dyn FnMut() -> Result<(), NodeError>,
) -> Result<Option<Vec<u32>>, NodeError> {
    if protocol == Protocol::Rr22 {
        return respond_rr22_part(rr22::SessionParams::like(&params)?, keys, link, serving);
    }
    respond_kkrt_part(params, keys, link, serving)
}

/// One KKRT session as the responder.
fn respond_kkrt_part(
    params: kkrt::SessionParams,
    keys: &KeyList,
    link: &mut impl ResponderLink,
    serving: &mut dyn FnMut() -> Result<(), NodeError>,
) -> Result<Option<Vec<u32>>, NodeError> {
    use kkrt::messages::{Corrections, Matches, Setup};
    let both = params.mode() == OutputMode::IntersectionToBoth;
    let setup = Setup::decode(expect_kkrt(link, "KKRT setup")?.as_ref())?;
    let (mut session, choices) = KkrtResponder::new(params, keys, &setup, &mut OsRng)?;
    send(link, Out::Kkrt(choices.to_bytes().into()), "KKRT base choices")?;
    while !session.corrections_done() {
        session.absorb_corrections(Corrections::decode(expect_kkrt(link, "KKRT corrections")?.as_ref())?)?;
    }
    serving()?;
    while let Some(outputs) = session.next_outputs()? {
        send(link, Out::Kkrt(outputs.to_bytes().into()), "KKRT outputs")?;
    }
    while both && !session.matches_done() {
        session.absorb_matches(Matches::decode(expect_kkrt(link, "KKRT matches")?.as_ref())?)?;
    }
    Ok(session.finish()?.intersection().map(<[u32]>::to_vec))
}

/// One RR22 session as the responder.
fn respond_rr22_part(
    params: rr22::SessionParams,
    keys: &KeyList,
    link: &mut impl ResponderLink,
    serving: &mut dyn FnMut() -> Result<(), NodeError>,
) -> Result<Option<Vec<u32>>, NodeError> {
    use kkrt::messages::Matches;
    use rr22::messages::{CotCorrections, Masked, Setup};
    let both = params.mode() == OutputMode::IntersectionToBoth;
    let store = params.store_len();
    let setup = Setup::decode(expect_kkrt(link, "RR22 setup")?.as_ref())?;
    let (mut session, choices) = Rr22Responder::new(params, keys, &setup, &mut OsRng)?;
    send(link, Out::Kkrt(choices.to_bytes().into()), "RR22 base choices")?;
    while !session.corrections_done() {
        session.absorb_corrections(CotCorrections::decode(expect_kkrt(link, "RR22 OT corrections")?.as_ref())?)?;
    }
    send(link, Out::Kkrt(session.trees()?.to_bytes().into()), "RR22 trees")?;
    while session.masked_received() < store {
        session.absorb_masked(Masked::decode(expect_kkrt(link, "RR22 masked store")?.as_ref())?)?;
    }
    serving()?;
    while let Some(outputs) = session.next_outputs()? {
        send(link, Out::Kkrt(outputs.to_bytes().into()), "RR22 outputs")?;
    }
    while both && !session.matches_done() {
        session.absorb_matches(Matches::decode(expect_kkrt(link, "RR22 matches")?.as_ref())?)?;
    }
    Ok(session.finish()?.intersection().map(<[u32]>::to_vec))
}

/// The responder's protocol after its accept, up to its output (the caller
/// sends the accept and the summary), on a blocking thread.
pub(crate) fn respond_role(
    params: SessionParams,
    keys: &DatasetKeys,
    link: &mut impl ResponderLink,
) -> Result<ResponderOutput, NodeError> {
    let (requester_len, responder_len) = (params.requester_len(), params.responder_len());
    let mode = params.mode();

    let mut own = ResponderSession::new(params, &keys.keys, &mut OsRng)?;
    while let Some(batch) = own.next_batch() {
        send(link, Out::ResponderPoints(batch.into_bytes().into()), "responder points")?;
    }

    let mut answering = own.finish()?;
    while answering.received() < requester_len {
        match expect(link, "request points")? {
            In::RequestPoints(bytes) => {
                if let Some(reply) = answering.answer(PointBatch::decode(&bytes)?)? {
                    send(link, Out::ReplyTags(reply.to_bytes().into()), "replies")?;
                }
            }
            other => return Err(unexpected(link, "request points", &other)),
        }
    }

    let mut closing = answering.finish()?;
    while let Some(reply) = closing.next_batch() {
        send(link, Out::ReplyTags(reply.to_bytes().into()), "replies")?;
    }
    if mode == OutputMode::IntersectionToBoth {
        while closing.echoed() < responder_len {
            match expect(link, "echo tags")? {
                In::EchoTags(bytes) => closing.absorb_echo(TagBatch::decode(&bytes)?)?,
                other => return Err(unexpected(link, "echo tags", &other)),
            }
        }
    }
    Ok(closing.finish()?)
}
