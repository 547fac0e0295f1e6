//! The blacklist query between nodes (design brief §4.2): the bureau's
//! `BlacklistPeer` service and the bank's side ([`run_blacklist`]).
//!
//! **Versions.** A bureau's dataset with a `labels` section is published as
//! an encoded set ([`stayput_psi::labeled`]): [`prepare_version`] reads the
//! file's ids and labels, encodes them under the bureau's OPRF key (created
//! on first use) and keeps the set — and the delta from the previous
//! version — under `<state_dir>/labeled/<dataset>/`. The set's
//! digest is the version's content digest on the ledger and K = k·G its
//! protocol key.
//!
//! **The bank's cache** of each bureau's set lives under
//! `<state_dir>/cache/` and is always checked against the digest
//! the ledger holds for its version; `FetchSet` brings it to the latest
//! version by deltas when the bureau has them, else whole, and the result
//! must match the ledger's digest and K, or it is refused.
//!
//! **A task** queries every bureau it names in parallel. Per bureau: sync
//! the cache, blind the applicants' ids, `Evaluate` (the bureau checks the
//! ledger and the grant's limit of ids per task, and writes its use record
//! with the number of ids — the ledger judges the grant's total — before it
//! answers), verify the DLEQ proof against K, unblind, look
//! up and decrypt. A bureau that is down or refuses does not fail the task:
//! the result names it as `unavailable` with the reason, so a missing
//! bureau is never a silent miss; only when no bureau answers does the task
//! fail.
//!
//! **What each side learns.** The bureau: that a task queried n ids. The
//! bank: the labels of its listed applicants and each blacklist's size.
//! Logs name tasks, datasets and counts, never an id or a label.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use stayput_chain_connector::records::{Computation, DatasetVersion, DisputeState};
use stayput_chain_connector::rules::DisputeStatus;
use stayput_chain_connector::tasks::BlacklistParams;
use stayput_proto::v1::blacklist_peer_client::BlacklistPeerClient;
use stayput_proto::v1::blacklist_peer_server::BlacklistPeer;
use stayput_proto::v1::{EvaluateRequest, EvaluateResponse, FetchSetRequest, SetChunk, SetHeader, set_chunk};
use stayput_psi::labeled::{Delta, EncodedSet, MAX_ENTRIES, MAX_QUERY, Query, SEALED_LEN, TAG_LEN, Tag};
use tonic::{Request, Response, Status};

use crate::authorisation::ServeRequest;
use crate::config::NodeConfig;
use crate::dataset::Dataset;
use crate::dataset::LabelSettings;
use crate::identity::caller_org;
use crate::serve::{Authorised, Metered, ledger_access, respond};
use crate::state_files::{cache_file, read, write_atomic};
use crate::{NodeError, NodeState};

/// Largest encoded set or delta accepted, in bytes.
pub const MAX_SET_BYTES: u64 = (MAX_ENTRIES as u64) * (TAG_LEN + SEALED_LEN) as u64 + 4096;
/// Bytes per streamed chunk.
const CHUNK: usize = 1 << 20;

fn err(message: impl Into<String>) -> NodeError {
    NodeError::Blacklist(message.into())
}

fn sets_dir(config: &NodeConfig, dataset: &str) -> PathBuf {
    config.state_dir.join("labeled").join(dataset)
}

fn set_file(dir: &Path, version: u32) -> PathBuf {
    dir.join(format!("v{version}.set"))
}

fn delta_file(dir: &Path, version: u32) -> PathBuf {
    dir.join(format!("v{version}.delta"))
}

fn settings(dataset: &Dataset) -> Result<&LabelSettings, NodeError> {
    dataset.labels.as_ref().ok_or_else(|| {
        err(format!("dataset '{}' has no `labels` section: it is not served as a blacklist", dataset.name))
    })
}

/// A version of a blacklist ready to be recorded on the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedVersion {
    /// Its version number.
    pub version: u32,
    /// The encoded set's digest (the version's content digest).
    pub digest: [u8; 32],
    /// K = k·G (the version's protocol key).
    pub public_key: [u8; 32],
    /// Entries in the set.
    pub entries: usize,
    /// Entries that changed from the previous version (all, for the first).
    pub changed: usize,
}

/// The file's `(id, label)` entries; an id listed twice gets its labels
/// joined with "; ".
/// `(encoded id, label)` pairs.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

fn entries(dataset: &Dataset, column: &str) -> Result<Entries, NodeError> {
    let (rows, _skipped) = dataset.keys_with(column)?;
    let mut merged: BTreeMap<Vec<u8>, String> = BTreeMap::new();
    for (key, label) in rows {
        merged
            .entry(key)
            .and_modify(|l| {
                l.push_str("; ");
                l.push_str(&label);
            })
            .or_insert(label);
    }
    merged
        .into_iter()
        .map(|(k, l)| {
            if l.len() >= stayput_psi::labeled::LABEL_LEN {
                return Err(err(format!(
                    "a label of column '{column}' (or the labels of an id listed more than once) exceeds 63 bytes; shorten them"
                )));
            }
            Ok((k, l.into_bytes()))
        })
        .collect()
}

/// Bureau: encodes the dataset's current file as `version` (the previous
/// version's set, when kept, yields a delta) and stores both. Blocking.
pub fn prepare_version(config: &NodeConfig, dataset: &Dataset, version: u32) -> Result<PreparedVersion, NodeError> {
    let labels = settings(dataset)?;
    let key = crate::state_files::oprf_key(&labels.oprf_key)?;
    let listed = entries(dataset, &labels.column)?;
    let dir = sets_dir(config, &dataset.name);
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let previous = version
        .checked_sub(1)
        .map(|v| set_file(&dir, v))
        .filter(|p| p.exists())
        .map(|p| read(&p).and_then(|b| Ok(EncodedSet::from_bytes(&b, &Sha256::digest(&b).into())?)))
        .transpose()?;
    let (set, changed) = match previous {
        Some(previous) => {
            let (set, delta) = previous.next_version(&key, &listed, seed)?;
            write_atomic(&delta_file(&dir, version), &[&delta.to_bytes()])?;
            let changed = delta.added.len() + delta.removed.len();
            (set, changed)
        }
        None => (EncodedSet::encode(&key, &dataset.name, version, &listed, seed)?, listed.len()),
    };
    write_atomic(&set_file(&dir, version), &[&set.to_bytes()])?;
    tracing::info!(dataset = %dataset.name, version, entries = set.len(), changed, "blacklist version prepared");
    Ok(PreparedVersion {
        version,
        digest: set.digest(),
        public_key: key.public_key().to_bytes(),
        entries: set.len(),
        changed,
    })
}

/// The `BlacklistPeer` service (this node as a bureau).
#[derive(Debug, Clone)]
pub struct BlacklistPeerService {
    state: Arc<NodeState>,
}

impl BlacklistPeerService {
    /// A service over the node's state.
    pub fn new(state: Arc<NodeState>) -> Self {
        Self { state }
    }
}

fn no_ledger() -> NodeError {
    NodeError::InvalidConfig("the blacklist query needs a [ledger] section".into())
}

async fn latest(state: &NodeState, dataset: &str) -> Result<DatasetVersion, NodeError> {
    let ledger = &state.ledger.as_ref().ok_or_else(no_ledger)?.ledger;
    ledger
        .dataset(dataset)
        .await
        .map_err(NodeError::from_ledger)?
        .pop()
        .ok_or_else(|| err(format!("dataset '{dataset}' has no version on the ledger")))
}

fn header(delta: bool, from_version: u32, to_version: u32, length: usize, key_declaration: &str) -> SetChunk {
    SetChunk {
        part: Some(set_chunk::Part::Header(SetHeader {
            delta,
            from_version,
            to_version,
            length: length as u64,
            key_declaration: key_declaration.to_owned(),
        })),
    }
}

fn chunks(bytes: tonic::codegen::Bytes, out: &mut Vec<SetChunk>) {
    for start in (0..bytes.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(bytes.len());
        out.push(SetChunk { part: Some(set_chunk::Part::Data(bytes.slice(start..end))) });
    }
}

/// The session of `caller`'s task on `source`, authorised by the ledger:
/// the grant must allow the label column, which the query releases for
/// every listed id.
async fn authorise(
    state: &Arc<NodeState>,
    task: &str,
    caller: &str,
    source: &Dataset,
    items: u64,
) -> Result<Authorised, NodeError> {
    ledger_access(state, "the blacklist query")?;
    let columns = [settings(source)?.column.clone()];
    let serve = ServeRequest {
        task,
        peer: caller,
        dataset: &source.name,
        kinds: &[Computation::Blacklist],
        items,
        columns: &columns,
        key_columns: &source.key_columns,
        shard: None,
    };
    Authorised::new(state, &serve).await
}

async fn fetch_set(
    state: &Arc<NodeState>,
    caller: &str,
    request: FetchSetRequest,
) -> Result<Metered<Vec<SetChunk>>, NodeError> {
    let FetchSetRequest { task_id, dataset, have_version } = request;
    crate::wire::check_task_id(&task_id)?;
    let source = state.config.dataset(&dataset)?.clone();
    settings(&source)?;
    let session = authorise(state, &task_id, caller, &source, 0).await?;
    // The permit covers the first read and check of a version only: the
    // stream itself hands out slices of the one shared copy.
    let permit = session.worker_permit();
    let on_ledger = latest(state, &dataset).await?;
    let dir = sets_dir(&state.config, &dataset);
    let declaration = source.key_declaration();
    let (version, digest) = (on_ledger.version, on_ledger.content_digest);
    let worker = state.clone();
    let out = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let state = worker;
        let path = set_file(&dir, version);
        let set = state.served.get_or_load(&path, || {
            let set = read(&path)?;
            if <[u8; 32]>::from(Sha256::digest(&set)) != digest {
                return Err(err(format!(
                    "the encoded set of '{}' v{version} on this node does not match the ledger; publish a new version",
                    on_ledger.dataset
                )));
            }
            Ok(set)
        })?;
        let mut out = Vec::new();
        let deltas: Option<Vec<Vec<u8>>> = (have_version >= 1 && have_version < version)
            .then(|| ((have_version + 1)..=version).map(|v| std::fs::read(delta_file(&dir, v)).ok()).collect())
            .flatten();
        match deltas {
            Some(deltas) => {
                for (v, delta) in ((have_version + 1)..=version).zip(deltas) {
                    out.push(header(true, v - 1, v, delta.len(), &declaration));
                    chunks(delta.into(), &mut out);
                }
            }
            None => {
                out.push(header(false, 0, version, set.len(), &declaration));
                chunks(set, &mut out);
            }
        }
        Ok::<_, NodeError>(out)
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))??;
    // Tags and sealed labels: nothing opens without an evaluation, which
    // `Evaluate` meters.
    Ok(session.disclosing_nothing().reply(out))
}

async fn evaluate(
    state: &Arc<NodeState>,
    caller: &str,
    request: EvaluateRequest,
) -> Result<Metered<EvaluateResponse>, NodeError> {
    let EvaluateRequest { task_id, dataset, blinded } = request;
    crate::wire::check_task_id(&task_id)?;
    let source = state.config.dataset(&dataset)?.clone();
    let labels = settings(&source)?.clone();
    let refuse = |reason: String| NodeError::NotAuthorised { task: task_id.clone(), reason };
    if blinded.is_empty() || blinded.len() % 32 != 0 {
        return Err(err("blinded ids come as 32-byte points, at least one"));
    }
    let n = (blinded.len() / 32) as u64;
    if n > MAX_QUERY as u64 {
        return Err(refuse(format!("{n} ids asked; a query holds at most {MAX_QUERY}")));
    }
    let session = authorise(state, &task_id, caller, &source, n).await?;
    session.check_items(n, "ids").await?;
    let permit = session.worker_permit();
    let on_ledger = latest(state, &dataset).await?;
    // Evaluate first (malformed points consume nothing), answer only once
    // the use is on the ledger.
    let context = task_id.clone().into_bytes();
    let (evaluations, proof) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let key = crate::state_files::oprf_key(&labels.oprf_key)?;
        if on_ledger.protocol_key.as_deref() != Some(key.public_key().as_bytes().as_slice()) {
            return Err(err("this node's OPRF key is not the one recorded with the dataset's latest version"));
        }
        let points: Vec<_> = blinded
            .chunks_exact(32)
            .map(|c| curve25519_dalek::ristretto::CompressedRistretto(c.try_into().expect("32 bytes")))
            .collect();
        let (out, proof) = key.evaluate(&context, &points, &mut rand::rngs::OsRng)?;
        Ok::<_, NodeError>((out.iter().flat_map(|p| p.to_bytes()).collect::<Vec<u8>>(), proof.to_bytes()))
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))??;
    let recorded = session.record_asked(n).await?;
    tracing::info!(task = %task_id, dataset = %dataset, ids = n, "blacklist query answered; use recorded");
    Ok(recorded.reply(EvaluateResponse { evaluations: evaluations.into(), proof: proof.to_vec().into() }))
}

#[tonic::async_trait]
impl BlacklistPeer for BlacklistPeerService {
    type FetchSetStream = tokio_stream::Iter<std::vec::IntoIter<Result<SetChunk, Status>>>;

    async fn fetch_set(&self, request: Request<FetchSetRequest>) -> Result<Response<Self::FetchSetStream>, Status> {
        let caller = caller_org(&request)?;
        let request = request.into_inner();
        let task = request.task_id.clone();
        let served = fetch_set(&self.state, &caller, request).await;
        let chunks = respond("encoded set", &task, &caller, served)?.into_inner();
        Ok(Response::new(tokio_stream::iter(chunks.into_iter().map(Ok).collect::<Vec<_>>())))
    }

    async fn evaluate(&self, request: Request<EvaluateRequest>) -> Result<Response<EvaluateResponse>, Status> {
        let caller = caller_org(&request)?;
        let request = request.into_inner();
        let task = request.task_id.clone();
        let served = evaluate(&self.state, &caller, request).await;
        respond("blacklist query", &task, &caller, served)
    }
}

/// The bank's cached copy of a bureau's set at the ledger's latest version:
/// read from the cache when it is current, else synced by `FetchSet`.
async fn synced_set(
    state: &Arc<NodeState>,
    client: &mut BlacklistPeerClient<tonic::transport::Channel>,
    task_id: &str,
    dataset: &str,
    bureau: &str,
    own_declaration: &str,
) -> Result<EncodedSet, NodeError> {
    let ledger = &state.ledger.as_ref().ok_or_else(no_ledger)?.ledger;
    let versions = ledger.dataset(dataset).await.map_err(NodeError::from_ledger)?;
    let latest = versions.last().ok_or_else(|| err(format!("dataset '{dataset}' has no version on the ledger")))?;
    let protocol_key: [u8; 32] = latest
        .protocol_key
        .as_deref()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| err(format!("dataset '{dataset}' has no OPRF key on the ledger: it is not a blacklist")))?;
    let digest_of = |v: u32| versions.iter().find(|d| d.version == v).map(|d| d.content_digest);
    // The newest cached version whose bytes match the ledger's digest.
    let config = &state.config;
    let mut cached: Option<EncodedSet> = None;
    for v in (1..=latest.version).rev() {
        let path = cache_file(config, dataset, v, "set")?;
        if let (Ok(bytes), Some(digest)) = (std::fs::read(&path), digest_of(v)) {
            match EncodedSet::from_bytes(&bytes, &digest) {
                Ok(set) => {
                    cached = Some(set);
                    break;
                }
                Err(_) => {
                    tracing::warn!(dataset = %dataset, version = v, "a cached set does not match the ledger; discarded");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
    if let Some(set) = cached.as_ref().filter(|s| s.version == latest.version) {
        return Ok(set.clone());
    }
    let have = cached.as_ref().map_or(0, |s| s.version);
    let mut stream = client
        .fetch_set(FetchSetRequest { task_id: task_id.into(), dataset: dataset.into(), have_version: have })
        .await
        .map_err(|s| crate::wire::status_error(s, bureau, "set sync"))?
        .into_inner();
    let mut parts: Vec<(SetHeader, Vec<u8>)> = Vec::new();
    // At most one part per version to catch up, and one set's worth in all.
    let (max_parts, mut total) = ((latest.version - have).max(1) as usize, 0u64);
    while let Some(chunk) = stream.message().await.map_err(|s| crate::wire::status_error(s, bureau, "set sync"))? {
        match chunk.part {
            Some(set_chunk::Part::Header(h)) => {
                total = total.saturating_add(h.length);
                if total > MAX_SET_BYTES || parts.len() >= max_parts {
                    return Err(err(format!("'{bureau}' announced an oversized set or too many deltas")));
                }
                if h.key_declaration != own_declaration {
                    return Err(NodeError::KeyDeclarationMismatch {
                        dataset: dataset.into(),
                        ours: own_declaration.into(),
                        theirs: h.key_declaration.clone(),
                    });
                }
                parts.push((h, Vec::new()));
            }
            Some(set_chunk::Part::Data(d)) => {
                let (h, bytes) =
                    parts.last_mut().ok_or_else(|| err(format!("'{bureau}' sent data before a header")))?;
                if bytes.len() as u64 + d.len() as u64 > h.length {
                    return Err(err(format!("'{bureau}' sent more bytes than it announced")));
                }
                bytes.extend_from_slice(&d);
            }
            None => return Err(err(format!("'{bureau}' sent an empty chunk"))),
        }
    }
    let (dataset_name, latest_version) = (dataset.to_owned(), latest.version);
    let digests: BTreeMap<u32, [u8; 32]> = versions.iter().map(|d| (d.version, d.content_digest)).collect();
    let path = cache_file(config, dataset, latest_version, "set")?;
    let old = cached.as_ref().map(|s| cache_file(config, dataset, s.version, "set")).transpose()?;
    let bureau_name = bureau.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut set = cached;
        for (h, bytes) in parts {
            if bytes.len() as u64 != h.length {
                return Err(err(format!("'{bureau_name}' ended a transfer early")));
            }
            let expected = digests
                .get(&h.to_version)
                .ok_or_else(|| err(format!("version {} is not on the ledger", h.to_version)))?;
            set = Some(if h.delta {
                let base = set.as_ref().filter(|s| s.version == h.from_version).ok_or_else(|| {
                    err(format!("'{bureau_name}' sent a delta from v{} the cache does not hold", h.from_version))
                })?;
                base.apply(&Delta::from_bytes(&bytes)?, expected)?
            } else {
                EncodedSet::from_bytes(&bytes, expected)?
            });
        }
        let set = set
            .filter(|s| s.version == latest_version && s.dataset == dataset_name)
            .ok_or_else(|| err(format!("'{bureau_name}' did not bring the cache to v{latest_version}")))?;
        if set.public_key.to_bytes() != protocol_key {
            return Err(err(format!("the set of '{dataset_name}' is not under the OPRF key on the ledger")));
        }
        write_atomic(&path, &[&set.to_bytes()])?;
        if let Some(old) = old.filter(|o| o != &path) {
            let _ = std::fs::remove_file(old);
        }
        Ok(set)
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))?
}

/// One bureau's answer: the encoded set's version, per listed key (index
/// into the bank's keys) its tag and label, and the disputes of the
/// dataset's listings on the ledger.
struct Listings {
    version: u32,
    found: Vec<(usize, Tag, Vec<u8>)>,
    disputes: Vec<DisputeStatus>,
}

/// A version that still holds an entry an arbitrator overturned before it
/// was published defies the ruling: the consortium's rules let no member
/// use it. (A version the ruling found may still hold it; its rows are
/// reported `overturned`, never `listed`.) Tags are bound to the bureau's
/// OPRF key, so a later version under another key could hide the entry
/// under a new tag: it cannot be checked, and is not used either (a
/// re-keyed list is published as a new dataset).
fn check_rulings(set: &EncodedSet, versions: &[DatasetVersion], disputes: &[DisputeStatus]) -> Result<(), NodeError> {
    let key_of = |version: u32| versions.get((version as usize).wrapping_sub(1)).and_then(|v| v.protocol_key.clone());
    for d in disputes.iter().filter(|d| d.state == DisputeState::Overturned) {
        let Some(at) = d.ruled_at_version.filter(|at| set.version > *at) else { continue };
        let (dataset, id) = (&set.dataset, &d.dispute.id);
        if set.holds(&d.dispute.tag) {
            return Err(err(format!(
                "version {} of '{dataset}' still lists the entry overturned in dispute '{id}' (ruled at version {at}); \
                 the bureau must drop or correct it, and this version is not used",
                set.version
            )));
        }
        if key_of(d.dispute.version).as_deref() != Some(set.public_key.as_bytes().as_slice()) {
            return Err(err(format!(
                "version {} of '{dataset}' is under another OPRF key than the entry overturned in dispute '{id}', \
                 so it cannot show the entry is gone, and is not used; a re-keyed list is published as a new dataset",
                set.version
            )));
        }
    }
    Ok(())
}

/// A listing's status in the result: `listed`, `under_dispute` while a
/// dispute of it awaits its ruling (until its deadline), `overturned` once
/// one overturned it.
fn listing_status(tag: &Tag, disputes: &[DisputeStatus]) -> &'static str {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let of_entry = || disputes.iter().filter(|d| &d.dispute.tag == tag);
    if of_entry().any(|d| d.state == DisputeState::Overturned) {
        "overturned"
    } else if of_entry().any(|d| d.state.is_open() && now < d.dispute.deadline) {
        "under_dispute"
    } else {
        "listed"
    }
}

async fn query_bureau(
    state: Arc<NodeState>,
    task_id: String,
    dataset: String,
    keys: Arc<Vec<Vec<u8>>>,
    own_declaration: String,
) -> Result<(String, Listings), (String, NodeError)> {
    let ledger = &state.ledger.as_ref().ok_or_else(|| (String::new(), no_ledger()))?.ledger;
    let disputes = ledger.disputes(Some(&dataset)).await.map_err(|e| (String::new(), NodeError::from_ledger(e)))?;
    let bureau = ledger
        .dataset(&dataset)
        .await
        .ok()
        .and_then(|v| v.last().map(|d| d.owner.clone()))
        .ok_or_else(|| (String::new(), err(format!("dataset '{dataset}' is not on the ledger"))))?;
    let fail = |e: NodeError| (bureau.clone(), e);
    let channel = crate::peers::connect_peer(&state, &bureau).await.map_err(fail)?;
    let mut client = BlacklistPeerClient::new(channel).max_decoding_message_size(crate::wire::MAX_MESSAGE_BYTES);
    let set = synced_set(&state, &mut client, &task_id, &dataset, &bureau, &own_declaration).await.map_err(fail)?;
    // Before anything is asked (and metered): a version that defies a
    // ruling is not used.
    let versions = ledger.dataset(&dataset).await.map_err(|e| fail(NodeError::from_ledger(e)))?;
    check_rulings(&set, &versions, &disputes).map_err(fail)?;
    let version = set.version;
    let (ids, set_dataset) = (keys.clone(), set.dataset.clone());
    let (query, blinded) =
        tokio::task::spawn_blocking(move || Query::blind(&set_dataset, ids.as_slice(), &mut rand::rngs::OsRng))
            .await
            .map_err(|e| fail(NodeError::Worker(e.to_string())))?
            .map_err(|e| fail(e.into()))?;
    let response = client
        .evaluate(EvaluateRequest {
            task_id: task_id.clone(),
            dataset: dataset.clone(),
            blinded: blinded.iter().flat_map(|p| p.to_bytes()).collect::<Vec<u8>>().into(),
        })
        .await
        .map_err(|s| fail(crate::wire::status_error(s, &bureau, "query")))?
        .into_inner();
    let labels = tokio::task::spawn_blocking(move || {
        if response.evaluations.len() != blinded.len() * 32 {
            return Err(err("the bureau answered a different number of ids"));
        }
        let answers: Vec<_> = response
            .evaluations
            .chunks_exact(32)
            .map(|c| curve25519_dalek::ristretto::CompressedRistretto(c.try_into().expect("32 bytes")))
            .collect();
        let proof = stayput_zk_proofs::dleq::DleqProof::from_bytes(&response.proof)
            .map_err(|e| err(format!("the bureau's proof does not decode: {e}")))?;
        Ok(query.finish_with_tags(task_id.as_bytes(), &blinded, &answers, &proof, &set)?)
    })
    .await
    .map_err(|e| fail(NodeError::Worker(e.to_string())))?
    .map_err(fail)?;
    let found = labels.into_iter().enumerate().filter_map(|(i, l)| l.map(|(tag, label)| (i, tag, label))).collect();
    Ok((bureau, Listings { version, found, disputes }))
}

/// Text of an encoded key (parts joined with `|`), for the bank's own
/// result file.
pub(crate) fn key_text(encoded: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut rest = encoded;
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = (u32::from_le_bytes(*len) as usize).min(tail.len());
        parts.push(String::from_utf8_lossy(&tail[..len]).into_owned());
        rest = &tail[len..];
    }
    parts.join("|")
}

pub(crate) fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_owned() }
}

/// The first line of a blacklist result (format 2: with each listing's set
/// version and tag, which a dispute of it names, and its dispute status).
pub const RESULT_HEADER: &str = "key,bureau,dataset,version,tag,status,label\n";

/// One listing found.
struct Row {
    key: String,
    bureau: String,
    dataset: String,
    version: u32,
    tag: Tag,
    status: &'static str,
    label: String,
}

/// What a blacklist task produced on the bank's node.
#[derive(Debug)]
pub struct BlacklistOutcome {
    /// The result file's text ([`RESULT_HEADER`]): one row per listing —
    /// `listed`, `under_dispute` or `overturned` —, and one `unavailable`
    /// row per bureau that did not answer.
    pub table: String,
    /// Listings found (not counting overturned ones).
    pub listings: u64,
    /// Bureaus that did not answer: organisation, dataset, why.
    pub unavailable: Vec<(String, String, String)>,
}

/// The bank's node runs a blacklist task: every bureau in parallel.
pub async fn run_blacklist(
    state: &Arc<NodeState>,
    task_id: &str,
    params: BlacklistParams,
) -> Result<BlacklistOutcome, NodeError> {
    let own = state.config.dataset(&params.requester_dataset)?.clone();
    let declaration = own.key_declaration();
    let loaded =
        tokio::task::spawn_blocking(move || own.load_keys()).await.map_err(|e| NodeError::Worker(e.to_string()))??;
    let keys: Arc<Vec<Vec<u8>>> = Arc::new(loaded.keys.iter().map(<[u8]>::to_vec).collect());
    if keys.is_empty() || keys.len() > MAX_QUERY {
        return Err(err(format!("a blacklist query checks 1 to {MAX_QUERY} ids; the dataset holds {}", keys.len())));
    }
    tracing::info!(task = %task_id, ids = keys.len(), bureaus = params.bureau_datasets.len(), "blacklist query");
    let calls: Vec<_> = params
        .bureau_datasets
        .iter()
        .map(|d| {
            let (state, task, dataset, keys, declaration) =
                (state.clone(), task_id.to_owned(), d.clone(), keys.clone(), declaration.clone());
            tokio::spawn(query_bureau(state, task, dataset, keys, declaration))
        })
        .collect();
    let mut rows = Vec::new();
    let mut unavailable = Vec::new();
    for (dataset, call) in params.bureau_datasets.iter().zip(calls) {
        match call.await.map_err(|e| NodeError::Worker(e.to_string()))? {
            Ok((bureau, listings)) => {
                for (i, tag, label) in listings.found {
                    rows.push(Row {
                        key: key_text(&keys[i]),
                        bureau: bureau.clone(),
                        dataset: dataset.clone(),
                        version: listings.version,
                        status: listing_status(&tag, &listings.disputes),
                        tag,
                        label: String::from_utf8_lossy(&label).into_owned(),
                    });
                }
            }
            Err((bureau, e)) => {
                tracing::warn!(task = %task_id, dataset = %dataset, error = %e, "a bureau did not answer");
                unavailable.push((bureau, dataset.clone(), e.to_string()));
            }
        }
    }
    if unavailable.len() == params.bureau_datasets.len() {
        let reasons: Vec<String> = unavailable.iter().map(|(_, d, e)| format!("{d}: {e}")).collect();
        return Err(err(format!("no bureau answered ({})", reasons.join("; "))));
    }
    rows.sort_by(|a, b| (&a.key, &a.bureau, &a.dataset).cmp(&(&b.key, &b.bureau, &b.dataset)));
    let mut table = String::from(RESULT_HEADER);
    for r in &rows {
        table.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            csv_field(&r.key),
            csv_field(&r.bureau),
            csv_field(&r.dataset),
            r.version,
            hex::encode(r.tag),
            r.status,
            csv_field(&r.label)
        ));
    }
    for (bureau, dataset, reason) in &unavailable {
        table.push_str(&format!(",{},{},,,unavailable,{}\n", csv_field(bureau), csv_field(dataset), csv_field(reason)));
    }
    let listings = rows.iter().filter(|r| r.status != "overturned").count() as u64;
    Ok(BlacklistOutcome { table, listings, unavailable })
}
