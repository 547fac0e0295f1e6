//! Private record lookup between nodes (匿踪查询): the owner's `LookupPeer`
//! service and the requester's side ([`run_lookup`]). The protocol is
//! [`stayput_pir`] (SimplePIR-style, single server, by keyword).
//!
//! **Versions.** A dataset with a `pir` section is published as a PIR
//! database: [`prepare_version`] reads every row's key and record columns,
//! draws a fresh OPRF key for the version (kept 0600 beside it), seals
//! every record under the OPRF value of its key, lays the sealed records
//! out in the byte matrix under a fresh random seed, computes the hint
//! H = D·A once, and keeps the matrix, the hint and the record schema under
//! `<state_dir>/pir/<dataset>/`. On the ledger the version's protocol key
//! is [`Published`] (the layout and the OPRF public key K) and its content
//! digest is [`version_digest`]: SHA-256 over the hint's digest (which
//! binds the layout) and the record schema. A dataset listing one key
//! twice is refused: a lookup returns one record per key.
//!
//! **The requester's cache** of a version's hint lives under
//! `<state_dir>/cache/` and is used only while its digest matches the
//! ledger's; a cache that does not is discarded and fetched again, and a
//! hint served by the owner that does not match is refused.
//!
//! **A task** looks up the keys of one of the requester's own datasets —
//! read on the requester's node, never written to the ledger or sent
//! anywhere. Per key the node makes one LWE query for the key's column
//! (the same size for every key, present or not) and blinds the key for
//! the OPRF; it sends both in one `Answer` call. The owner writes its use
//! record, then evaluates the blinded keys with a DLEQ proof against K and
//! answers the queries. The requester verifies the proof, unblinds each
//! key's OPRF value, decodes each answer with the hint and opens the slot
//! carrying the value's tag: the record, or "absent" when no slot does.
//!
//! **What each side learns.** The owner: that a task made n lookups on a
//! version, and nothing about which keys (each query is LWE-encrypted,
//! each OPRF input uniformly blinded). The requester: its keys' records;
//! SimplePIR hands it whole columns, and the hint of a narrow table is the
//! whole matrix, but every slot is sealed under an OPRF value it does not
//! have (`stayput_pir`, *Sealed records*). The coordinator and the ledger:
//! the task, the metered lookups, and a salted commitment to the result
//! ([`crate::results::salted_commitment`]) rather than its plain digest, so an owner
//! cannot confirm a guess of what was fetched by hashing candidate
//! records. Logs name tasks, datasets and counts, never a key or a record.
//!
//! **Metering.** One OPRF evaluation opens at most one record, whatever
//! the queries hold, so the use record of a task of n lookups counts n
//! records, written before the OPRF key is touched; the grant's per-task
//! and total item limits apply to it. The hint is served free to the
//! grantee of a task: it discloses only sealed slots and how many records
//! each column holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use curve25519_dalek::ristretto::CompressedRistretto;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use stayput_chain_connector::records::{Computation, DatasetVersion};
use stayput_chain_connector::tasks::LookupParams;
use stayput_pir::{
    Answer, Database, Hint, LAYOUT_BYTES, LWE_DIMENSION, Layout, Lookup, MAX_COLUMNS, MAX_ROWS, Published, Query,
    SLOT_OVERHEAD,
};
use stayput_proto::v1::lookup_peer_client::LookupPeerClient;
use stayput_proto::v1::lookup_peer_server::LookupPeer;
use stayput_proto::v1::{FetchHintRequest, HintChunk, HintHeader, LookupRequest, LookupResponse, hint_chunk};
use stayput_psi::oprf::Blinding;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::authorisation::ServeRequest;
use crate::config::NodeConfig;
use crate::dataset::Dataset;
use crate::dataset::PirSettings;
use crate::identity::caller_org;
use crate::serve::{Authorised, Metered, ledger_access, respond};
use crate::state_files::{cache_file, read, write_atomic};
use crate::{NodeError, NodeState};

/// Most lookups one task makes.
pub const MAX_LOOKUPS: usize = 64;
/// The lookup protocol this node speaks: 2, sealed records.
pub const LOOKUP_PROTOCOL: u32 = 2;
/// Largest `Answer` request or response: every query (or answer) of a task
/// at the largest matrix the protocol allows.
pub const MAX_PIR_MESSAGE_BYTES: usize =
    MAX_LOOKUPS * 4 * if MAX_COLUMNS > MAX_ROWS { MAX_COLUMNS } else { MAX_ROWS } + 64 * 1024;
/// Largest record schema accepted.
const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Bytes per streamed hint chunk.
const CHUNK: usize = 1 << 20;

fn err(message: impl Into<String>) -> NodeError {
    NodeError::Pir(message.into())
}

/// The record schema a version publishes, covered by its content digest:
/// how keys are encoded (so the requester can encode its own the same way)
/// and the record's columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSchema {
    /// Number of key columns.
    pub key_columns: usize,
    /// Normalisation rules applied to every key column, by name.
    pub normalise: Vec<String>,
    /// The record's columns, in order.
    pub columns: Vec<String>,
}

impl RecordSchema {
    fn of(dataset: &Dataset, settings: &PirSettings) -> Self {
        Self {
            key_columns: dataset.key_columns.len(),
            normalise: dataset.rules.names().into_iter().map(str::to_owned).collect(),
            columns: settings.columns.clone(),
        }
    }

    /// Canonical JSON (fields in declaration order, no spaces).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain struct")
    }

    /// Parses a schema, bounded.
    pub fn from_json(bytes: &[u8]) -> Result<Self, NodeError> {
        if bytes.len() > MAX_SCHEMA_BYTES {
            return Err(err("a record schema is larger than 64 KiB"));
        }
        serde_json::from_slice(bytes).map_err(|e| err(format!("the record schema does not parse: {e}")))
    }
}

/// The version's content digest: SHA-256 over the hint's digest (layout
/// and hint) and the record schema.
pub fn version_digest(hint_digest: &[u8; 32], schema: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"stayput/pir/version/v1");
    h.update(hint_digest);
    h.update((schema.len() as u64).to_le_bytes());
    h.update(schema);
    h.finalize().into()
}

fn settings(dataset: &Dataset) -> Result<&PirSettings, NodeError> {
    dataset.pir.as_ref().ok_or_else(|| {
        err(format!("dataset '{}' has no `pir` section: it is not served for private lookup", dataset.name))
    })
}

fn versions_dir(config: &NodeConfig, dataset: &str) -> PathBuf {
    config.state_dir.join("pir").join(dataset)
}

fn database_file(dir: &Path, version: u32) -> PathBuf {
    dir.join(format!("v{version}.db"))
}

fn hint_file(dir: &Path, version: u32) -> PathBuf {
    dir.join(format!("v{version}.hint"))
}

fn schema_file(dir: &Path, version: u32) -> PathBuf {
    dir.join(format!("v{version}.schema.json"))
}

fn oprf_key_file(dir: &Path, version: u32) -> PathBuf {
    dir.join(format!("v{version}.oprf"))
}

/// A version of a lookup table ready to be recorded on the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedVersion {
    /// Its version number.
    pub version: u32,
    /// [`version_digest`] (the version's content digest).
    pub digest: [u8; 32],
    /// The layout and OPRF key (the version's protocol key).
    pub published: Published,
}

/// Owner: seals the dataset's current file as `version` under a fresh OPRF
/// key, lays it out, computes its hint and stores them. Blocking and heavy
/// (one OPRF evaluation per record; the hint is ℓ·m·n multiply-adds;
/// both spread over the rayon pool).
pub fn prepare_version(config: &NodeConfig, dataset: &Dataset, version: u32) -> Result<PreparedVersion, NodeError> {
    let settings = settings(dataset)?;
    let (rows, skipped) = dataset.keys_with_columns(&settings.columns)?;
    let capacity = settings.record_bytes.saturating_sub(SLOT_OVERHEAD);
    let mut records = Vec::with_capacity(rows.len());
    for (row, (key, values)) in rows.into_iter().enumerate() {
        let record = stayput_pir::record::encode(&values);
        if record.len() > capacity {
            return Err(err(format!(
                "the record of keyed row {} (rows with a key, counted from 1) is {} bytes; record_bytes = {} holds {capacity}; raise record_bytes or drop columns",
                row + 1,
                record.len(),
                settings.record_bytes
            )));
        }
        records.push((key, record));
    }
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let dir = versions_dir(config, &dataset.name);
    // A fresh OPRF key per version: a record's sealing key is used once.
    let key_file = oprf_key_file(&dir, version);
    let _ = std::fs::remove_file(&key_file);
    let oprf = crate::state_files::oprf_key(&key_file)?;
    let db = Database::build(&records, settings.record_bytes, seed, &oprf, &dataset.name)
        .map_err(|e| err(format!("dataset '{}' cannot be laid out: {e} (a key must name one record)", dataset.name)))?;
    drop(records);
    let layout = db.layout().clone();
    let published = Published { layout: layout.clone(), oprf_key: oprf.public_key() };
    let hint = db.hint();
    let schema = RecordSchema::of(dataset, settings).to_json();
    let digest = version_digest(&hint.digest(&layout), &schema);
    let header = [layout.to_bytes(), (db.records() as u64).to_le_bytes().to_vec()].concat();
    write_atomic(&database_file(&dir, version), &[&header, db.matrix_rows()])?;
    write_atomic(&hint_file(&dir, version), &[&hint.to_bytes()])?;
    write_atomic(&schema_file(&dir, version), &[&schema])?;
    // Keep this version and the previous one (tasks admitted under it may
    // still be asking); older matrices and hints only take disk.
    for old in 1..version.saturating_sub(1) {
        for path in [database_file(&dir, old), hint_file(&dir, old), schema_file(&dir, old), oprf_key_file(&dir, old)] {
            let _ = std::fs::remove_file(path);
        }
    }
    tracing::info!(
        dataset = %dataset.name,
        version,
        records = db.records(),
        skipped_rows = skipped,
        matrix = format!("{} x {}", layout.rows(), layout.columns),
        hint_bytes = hint.byte_len(),
        "lookup table version prepared"
    );
    Ok(PreparedVersion { version, digest, published })
}

/// Reads a stored database, checking its layout is the one on the ledger
/// (the header first, then the matrix straight into its buffer).
fn load_database(path: &Path, layout_on_ledger: &Layout) -> Result<Database, NodeError> {
    use std::io::Read as _;
    let io_err = |source| NodeError::ReadFile { path: path.into(), source };
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let mut header = [0u8; LAYOUT_BYTES + 8];
    file.read_exact(&mut header).map_err(io_err)?;
    if header[..LAYOUT_BYTES] != *layout_on_ledger.to_bytes() {
        return Err(err("the stored lookup table is not the version on the ledger; publish a new version"));
    }
    let layout = Layout::from_bytes(&header[..LAYOUT_BYTES])?;
    let records = usize::try_from(u64::from_le_bytes(header[LAYOUT_BYTES..].try_into().expect("8 bytes")))
        .map_err(|_| err("the stored lookup table is corrupt"))?;
    let mut matrix = Vec::with_capacity(layout.rows() * layout.columns);
    file.take((layout.rows() * layout.columns) as u64 + 1).read_to_end(&mut matrix).map_err(io_err)?;
    Ok(Database::from_parts(layout, records, matrix)?)
}

/// A version's database held in memory, with the OPRF key that sealed it.
#[derive(Debug)]
struct LoadedVersion {
    version: u32,
    db: Database,
    oprf: stayput_psi::oprf::OprfKey,
}

/// The `LookupPeer` service (this node as a lookup table's owner).
#[derive(Debug, Clone)]
pub struct LookupPeerService {
    state: Arc<NodeState>,
    /// The latest loaded database per dataset.
    loaded: Arc<Mutex<BTreeMap<String, Arc<LoadedVersion>>>>,
}

impl LookupPeerService {
    /// A service over the node's state.
    pub fn new(state: Arc<NodeState>) -> Self {
        Self { state, loaded: Arc::default() }
    }

    /// The database of `dataset` at `on_ledger`'s version and its OPRF
    /// key (checked against the published K), loaded once. Blocking.
    fn database(&self, on_ledger: &DatasetVersion, published: &Published) -> Result<Arc<LoadedVersion>, NodeError> {
        let mut loaded = self.loaded.lock().expect("pir database cache");
        if let Some(held) = loaded.get(&on_ledger.dataset)
            && held.version == on_ledger.version
        {
            return Ok(held.clone());
        }
        let dir = versions_dir(&self.state.config, &on_ledger.dataset);
        let db = load_database(&database_file(&dir, on_ledger.version), &published.layout)?;
        let oprf = crate::state_files::read_oprf_key(&oprf_key_file(&dir, on_ledger.version))?;
        if oprf.public_key() != published.oprf_key {
            return Err(err(
                "the stored OPRF key is not the one the version on the ledger publishes; publish a new version",
            ));
        }
        let held = Arc::new(LoadedVersion { version: on_ledger.version, db, oprf });
        loaded.insert(on_ledger.dataset.clone(), held.clone());
        Ok(held)
    }
}

fn no_ledger() -> NodeError {
    NodeError::InvalidConfig("private lookup needs a [ledger] section".into())
}

/// What a dataset version publishes for private lookup, or an error saying
/// it is not a lookup table (or one published before sealed records).
pub fn published(version: &DatasetVersion) -> Result<Published, NodeError> {
    let key = version.protocol_key.as_deref().ok_or_else(|| {
        err(format!(
            "dataset '{}' is not published for private lookup (its version carries no PIR layout)",
            version.dataset
        ))
    })?;
    Published::from_bytes(key).map_err(|e| err(format!("dataset '{}' v{}: {e}", version.dataset, version.version)))
}

/// The dataset's latest version on the ledger and what it publishes.
async fn latest(state: &NodeState, dataset: &str) -> Result<(DatasetVersion, Published), NodeError> {
    let ledger = &state.ledger.as_ref().ok_or_else(no_ledger)?.ledger;
    let on_ledger = ledger
        .dataset(dataset)
        .await
        .map_err(NodeError::from_ledger)?
        .pop()
        .ok_or_else(|| err(format!("dataset '{dataset}' has no version on the ledger")))?;
    let published = published(&on_ledger)?;
    Ok((on_ledger, published))
}

/// The session of `caller`'s task on `source`, authorised by the ledger:
/// the grant must allow the record's columns, which a lookup releases.
async fn authorise(
    state: &Arc<NodeState>,
    task: &str,
    caller: &str,
    source: &Dataset,
    items: u64,
) -> Result<Authorised, NodeError> {
    ledger_access(state, "private lookup")?;
    let serve = ServeRequest {
        task,
        peer: caller,
        dataset: &source.name,
        kinds: &[Computation::Lookup],
        items,
        columns: &settings(source)?.columns,
        key_columns: &source.key_columns,
        shard: None,
    };
    Authorised::new(state, &serve).await
}

/// The hint's chunks: slices of the one copy of the version's hint this
/// node checked against the ledger (read and checked once, under a session
/// permit; a caller that does not read its stream holds no permit and no
/// memory of its own).
async fn fetch_hint(
    state: &Arc<NodeState>,
    caller: &str,
    request: FetchHintRequest,
) -> Result<Metered<Vec<HintChunk>>, NodeError> {
    let FetchHintRequest { task_id, dataset } = request;
    crate::wire::check_task_id(&task_id)?;
    let source = state.config.dataset(&dataset)?.clone();
    let session = authorise(state, &task_id, caller, &source, 0).await?;
    let (on_ledger, Published { layout, .. }) = latest(state, &dataset).await?;
    let dir = versions_dir(&state.config, &dataset);
    let permit = session.worker_permit();
    let worker = state.clone();
    let chunks = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let state = worker;
        let version = on_ledger.version;
        let schema = read(&schema_file(&dir, version))?;
        let path = hint_file(&dir, version);
        let hint = state.served.get_or_load(&path, || {
            let hint = read(&path)?;
            let parsed = Hint::from_bytes(&layout, &hint)?;
            if version_digest(&parsed.digest(&layout), &schema) != on_ledger.content_digest {
                return Err(err(format!(
                    "the hint of '{}' v{version} on this node does not match the ledger; publish a new version",
                    on_ledger.dataset
                )));
            }
            Ok(hint)
        })?;
        let mut out = vec![HintChunk {
            part: Some(hint_chunk::Part::Header(HintHeader {
                version,
                length: hint.len() as u64,
                schema: schema.into(),
            })),
        }];
        for start in (0..hint.len()).step_by(CHUNK) {
            let end = (start + CHUNK).min(hint.len());
            out.push(HintChunk { part: Some(hint_chunk::Part::Data(hint.slice(start..end))) });
        }
        Ok::<_, NodeError>(out)
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))??;
    // The hint carries only sealed records (see the module docs).
    Ok(session.disclosing_nothing().reply(chunks))
}

async fn answer(
    service: &LookupPeerService,
    caller: &str,
    request: LookupRequest,
) -> Result<Metered<LookupResponse>, NodeError> {
    let state = &service.state;
    let LookupRequest { task_id, dataset, version, queries, protocol, blinded } = request;
    crate::wire::check_task_id(&task_id)?;
    let source = state.config.dataset(&dataset)?.clone();
    let refuse = |reason: String| NodeError::NotAuthorised { task: task_id.clone(), reason };
    if protocol != LOOKUP_PROTOCOL {
        return Err(err(format!(
            "the lookup speaks protocol {protocol}; this node answers protocol {LOOKUP_PROTOCOL} (sealed records) only: update the requester's node"
        )));
    }
    let n = queries.len();
    if n == 0 || n > MAX_LOOKUPS {
        return Err(refuse(format!("{n} lookups asked; a task makes 1 to {MAX_LOOKUPS}")));
    }
    if blinded.len() != n {
        return Err(err(format!("{n} queries came with {} blinded keys; a lookup is one of each", blinded.len())));
    }
    // Every blinded key is a canonical point before anything is recorded.
    let blinded = blinded
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let point = CompressedRistretto::from_slice(b).ok().filter(|p| p.decompress().is_some());
            point.ok_or_else(|| err(format!("blinded key {} is not a 32-byte curve point", i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let session = authorise(state, &task_id, caller, &source, n as u64).await?;
    let (on_ledger, published) = latest(state, &dataset).await?;
    if version != on_ledger.version {
        return Err(err(format!(
            "the queries were made for v{version} of '{dataset}' but the ledger's latest is v{}; fetch its hint and ask again",
            on_ledger.version
        )));
    }
    // Every query's size before anything is loaded or allocated for it.
    let columns = published.layout.columns;
    if let Some((i, q)) = queries.iter().enumerate().find(|(_, q)| q.len() != columns * 4) {
        return Err(err(format!("query {} is {} bytes; this version takes {}", i + 1, q.len(), columns * 4)));
    }
    // n evaluations open at most n records, whatever the queries hold (see
    // the module docs): that is what the grant meters.
    session.check_items(n as u64, "lookups").await?;
    let loader = service.clone();
    let loaded = tokio::task::spawn_blocking(move || loader.database(&on_ledger, &published))
        .await
        .map_err(|e| NodeError::Worker(e.to_string()))??;
    // The use record before the OPRF key or the matrix is touched.
    let recorded = session.record(n as u64, 0).await?;
    let permit = recorded.session().worker_permit();
    let context = task_id.clone();
    let (answers, evaluations, proof) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let (db, oprf) = (&loaded.db, &loaded.oprf);
        let (evaluations, proof) = oprf.evaluate(context.as_bytes(), &blinded, &mut rand::rngs::OsRng)?;
        let answers = queries
            .iter()
            .map(|q| Ok(tonic::codegen::Bytes::from(db.answer(&Query::from_bytes(db.layout(), q)?)?.to_bytes())))
            .collect::<Result<Vec<_>, NodeError>>()?;
        let evaluations = evaluations.iter().map(|e| tonic::codegen::Bytes::copy_from_slice(e.as_bytes())).collect();
        Ok::<_, NodeError>((answers, evaluations, proof.to_bytes()))
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))??;
    tracing::info!(
        node = %state.config.org,
        task = %task_id,
        dataset = %dataset,
        version,
        lookups = n,
        "private lookup answered; use recorded"
    );
    Ok(recorded.reply(LookupResponse { answers, evaluations, proof: proof.to_vec().into() }))
}

#[tonic::async_trait]
impl LookupPeer for LookupPeerService {
    type FetchHintStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<HintChunk, Status>> + Send>>;

    async fn fetch_hint(&self, request: Request<FetchHintRequest>) -> Result<Response<Self::FetchHintStream>, Status> {
        let caller = caller_org(&request)?;
        let request = request.into_inner();
        let task = request.task_id.clone();
        let served = fetch_hint(&self.state, &caller, request).await;
        let chunks = respond("hint", &task, &caller, served)?.into_inner();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks.into_iter().map(Ok)))))
    }

    async fn answer(&self, request: Request<LookupRequest>) -> Result<Response<LookupResponse>, Status> {
        let caller = caller_org(&request)?;
        let request = request.into_inner();
        let task = request.task_id.clone();
        let served = answer(self, &caller, request).await;
        respond("private lookup", &task, &caller, served)
    }
}

/// A hint and the record schema, checked against the ledger.
#[derive(Debug)]
struct CheckedHint {
    hint: Hint,
    schema: RecordSchema,
}

/// Parses `schema ‖ hint` bytes and checks them against the ledger's digest.
fn checked(layout: &Layout, schema: &[u8], hint: &[u8], digest: &[u8; 32]) -> Result<CheckedHint, NodeError> {
    let parsed = Hint::from_bytes(layout, hint)?;
    if version_digest(&parsed.digest(layout), schema) != *digest {
        return Err(err("the hint does not match the digest on the ledger"));
    }
    Ok(CheckedHint { hint: parsed, schema: RecordSchema::from_json(schema)? })
}

/// The cache file's bytes: the schema's length (u32), the schema, the hint.
fn cache_bytes(schema: &[u8], hint: &[u8]) -> Vec<u8> {
    let len = u32::try_from(schema.len()).expect("schema ≤ 64 KiB");
    [&len.to_le_bytes(), schema, hint].concat()
}

fn split_cache(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    (len <= MAX_SCHEMA_BYTES && len <= rest.len()).then(|| rest.split_at(len))
}

/// The requester's hint of `on_ledger`'s version: from the cache when it
/// matches the ledger, else fetched, checked and cached.
async fn synced_hint(
    state: &Arc<NodeState>,
    client: &mut LookupPeerClient<tonic::transport::Channel>,
    task_id: &str,
    on_ledger: &DatasetVersion,
    layout: &Layout,
) -> Result<CheckedHint, NodeError> {
    let (dataset, version, digest) = (on_ledger.dataset.clone(), on_ledger.version, on_ledger.content_digest);
    let path = cache_file(&state.config, &dataset, version, "pirhint")?;
    let cached = {
        let (path, layout) = (path.clone(), layout.clone());
        tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path).ok()?;
            let found = split_cache(&bytes).and_then(|(schema, hint)| checked(&layout, schema, hint, &digest).ok());
            if found.is_none() {
                tracing::warn!(version, "a cached hint does not match the ledger; discarded");
                let _ = std::fs::remove_file(&path);
            }
            found
        })
        .await
        .map_err(|e| NodeError::Worker(e.to_string()))?
    };
    if let Some(hint) = cached {
        return Ok(hint);
    }
    let owner = on_ledger.owner.clone();
    let failed = |s| crate::wire::status_error(s, &owner, "hint");
    let mut stream = client
        .fetch_hint(FetchHintRequest { task_id: task_id.into(), dataset: dataset.clone() })
        .await
        .map_err(failed)?
        .into_inner();
    let expected = layout.rows() * LWE_DIMENSION * 4;
    let (mut schema, mut hint): (Option<Vec<u8>>, Vec<u8>) = (None, Vec::new());
    while let Some(chunk) = stream.message().await.map_err(failed)? {
        match chunk.part {
            Some(hint_chunk::Part::Header(h)) => {
                if schema.is_some() {
                    return Err(err(format!("'{owner}' sent two hint headers")));
                }
                if h.version != version || h.length != expected as u64 || h.schema.len() > MAX_SCHEMA_BYTES {
                    return Err(err(format!(
                        "'{owner}' announced a hint for v{} of {} bytes; the ledger's v{version} layout needs {expected}",
                        h.version, h.length
                    )));
                }
                schema = Some(h.schema.to_vec());
                hint.reserve_exact(expected);
            }
            Some(hint_chunk::Part::Data(d)) => {
                if schema.is_none() || hint.len() + d.len() > expected {
                    return Err(err(format!("'{owner}' sent hint bytes before its header or beyond its length")));
                }
                hint.extend_from_slice(&d);
            }
            None => return Err(err(format!("'{owner}' sent an empty chunk"))),
        }
    }
    let schema = schema.ok_or_else(|| err(format!("'{owner}' sent no hint")))?;
    if hint.len() != expected {
        return Err(err(format!("'{owner}' ended the hint early")));
    }
    let layout = layout.clone();
    let config = state.config.clone();
    tokio::task::spawn_blocking(move || {
        let hint_checked = checked(&layout, &schema, &hint, &digest).map_err(|_| {
            err(format!("the hint '{owner}' served does not match the digest of v{version} on the ledger; refused"))
        })?;
        write_atomic(&path, &[&cache_bytes(&schema, &hint)])?;
        // Older versions' hints of this dataset are of no more use.
        let prefix = format!("{dataset}.v");
        if let Ok(entries) = std::fs::read_dir(config.state_dir.join("cache")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let stale = name.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(".pirhint"));
                if stale.is_some_and(|v| v.parse::<u32>().is_ok_and(|v| v != version)) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(hint_checked)
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))?
}

/// What a lookup task produced on the requester's node.
#[derive(Debug)]
pub struct LookupOutcome {
    /// The result file's text: `key,status,<record columns>`, one row per
    /// key in the order of the requester's dataset; status `found` or
    /// `absent`.
    pub table: String,
    /// Keys looked up.
    pub lookups: u64,
    /// Keys found.
    pub found: u64,
}

/// The requester's node runs a lookup task.
pub async fn run_lookup(
    state: &Arc<NodeState>,
    task_id: &str,
    params: &LookupParams,
) -> Result<LookupOutcome, NodeError> {
    let own = state.config.dataset(&params.requester_dataset)?.clone();
    let (on_ledger, Published { layout, oprf_key }) = latest(state, &params.dataset).await?;
    let owner = on_ledger.owner.clone();
    let channel = crate::peers::connect_peer(state, &owner).await?;
    let mut client = LookupPeerClient::new(channel)
        .max_decoding_message_size(MAX_PIR_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_PIR_MESSAGE_BYTES);
    let loaded = {
        let own = own.clone();
        tokio::task::spawn_blocking(move || own.load_keys())
    }
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))??;
    let keys: Zeroizing<Vec<Vec<u8>>> = Zeroizing::new(loaded.keys.iter().map(<[u8]>::to_vec).collect());
    if keys.is_empty() || keys.len() > MAX_LOOKUPS {
        return Err(err(format!("a lookup task fetches 1 to {MAX_LOOKUPS} keys; the dataset holds {}", keys.len())));
    }
    let CheckedHint { hint, schema } = synced_hint(state, &mut client, task_id, &on_ledger, &layout).await?;
    let ours: Vec<&str> = own.rules.names();
    if schema.key_columns != own.key_columns.len() || schema.normalise != ours {
        return Err(NodeError::KeyDeclarationMismatch {
            dataset: params.requester_dataset.clone(),
            ours: own.key_declaration(),
            theirs: format!("{} key column(s) normalised with [{}]", schema.key_columns, schema.normalise.join(", ")),
        });
    }
    tracing::info!(
        node = %state.config.org,
        task = %task_id,
        dataset = %params.dataset,
        lookups = keys.len(),
        "private lookup asked"
    );
    let query_layout = layout.clone();
    let query_keys = keys.clone();
    let dataset = params.dataset.clone();
    let (lookups, queries, blinding, blinded) = tokio::task::spawn_blocking(move || {
        let a = query_layout.public_matrix();
        let mut rng = rand::rngs::OsRng;
        let made = query_keys
            .iter()
            .map(|key| Lookup::with_matrix(&query_layout, &a, key, &mut rng))
            .collect::<Result<Vec<_>, _>>()?;
        let (lookups, queries) = made
            .into_iter()
            .map(|(l, q)| (l, tonic::codegen::Bytes::from(q.to_bytes())))
            .unzip::<_, _, Vec<_>, Vec<_>>();
        let (blinding, blinded) = Blinding::blind(&stayput_pir::oprf_domain(&dataset)?, &query_keys, &mut rng)?;
        Ok::<_, NodeError>((lookups, queries, blinding, blinded))
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))??;
    let response = client
        .answer(LookupRequest {
            task_id: task_id.into(),
            dataset: params.dataset.clone(),
            version: on_ledger.version,
            queries,
            protocol: LOOKUP_PROTOCOL,
            blinded: blinded.iter().map(|b| tonic::codegen::Bytes::copy_from_slice(b.as_bytes())).collect(),
        })
        .await
        .map_err(|s| crate::wire::status_error(s, &owner, "lookup"))?
        .into_inner();
    if response.answers.len() != lookups.len() || response.evaluations.len() != lookups.len() {
        return Err(err(format!(
            "'{owner}' answered {} and evaluated {} of {} lookups",
            response.answers.len(),
            response.evaluations.len(),
            lookups.len()
        )));
    }
    let columns = schema.columns.clone();
    let context = task_id.to_owned();
    let fetched = tokio::task::spawn_blocking(move || {
        let evaluations = response
            .evaluations
            .iter()
            .map(|e| {
                CompressedRistretto::from_slice(e)
                    .map_err(|_| err(format!("'{owner}' sent an evaluation that is not 32 bytes")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let proof = stayput_zk_proofs::dleq::DleqProof::from_bytes(&response.proof)
            .map_err(|e| err(format!("the owner's proof does not decode: {e}")))?;
        // Nothing is opened unless every evaluation used the published key.
        let ys = blinding.unblind(context.as_bytes(), &blinded, &evaluations, &proof, &oprf_key)?;
        lookups
            .into_iter()
            .zip(&response.answers)
            .zip(&ys)
            .enumerate()
            .map(|(i, ((lookup, bytes), y))| {
                let answer = Answer::from_bytes(&layout, bytes)
                    .map_err(|_| err(format!("the answer to lookup {} has the wrong size", i + 1)))?;
                // A malformed record is that key's result: the owner can aim
                // it at one key, so it must not fail the other lookups (see
                // `stayput_pir`, selective failure).
                Ok(match lookup.decode(&layout, &hint, &answer, y) {
                    Ok(None) => Fetched::Absent,
                    Ok(Some(bytes)) => {
                        stayput_pir::record::decode(&bytes, columns.len()).map_or(Fetched::Malformed, Fetched::Found)
                    }
                    Err(stayput_pir::PirError::MalformedRecord) => Fetched::Malformed,
                    Err(e) => return Err(err(format!("lookup {}: {e}", i + 1))),
                })
            })
            .collect::<Result<Vec<_>, NodeError>>()
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))??;
    let (table, found) = result_table(&schema.columns, &keys, &fetched);
    Ok(LookupOutcome { table, lookups: keys.len() as u64, found })
}

/// What one lookup brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fetched {
    /// The key's record, column by column.
    Found(Vec<Option<String>>),
    /// No record under the key.
    Absent,
    /// A slot carried the key's tag but no well-formed record.
    Malformed,
}

/// The result file's text and the number of keys found.
fn result_table(columns: &[String], keys: &[Vec<u8>], fetched: &[Fetched]) -> (String, u64) {
    use crate::blacklist::{csv_field, key_text};
    let mut table = String::from("key,status");
    for column in columns {
        table.push(',');
        table.push_str(&csv_field(column));
    }
    table.push('\n');
    let mut found = 0u64;
    let empty = ",".repeat(columns.len());
    for (key, fetched) in keys.iter().zip(fetched) {
        table.push_str(&csv_field(&key_text(key)));
        match fetched {
            Fetched::Found(values) => {
                found += 1;
                table.push_str(",found");
                for value in values {
                    table.push(',');
                    table.push_str(&value.as_deref().map(csv_field).unwrap_or_default());
                }
            }
            Fetched::Absent => {
                table.push_str(",absent");
                table.push_str(&empty);
            }
            Fetched::Malformed => {
                table.push_str(",malformed");
                table.push_str(&empty);
            }
        }
        table.push('\n');
    }
    (table, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers: the schema's canonical JSON and the version digest
    /// (the record encoding's is in `stayput_pir::record`, the result
    /// commitment's in `results`).
    #[test]
    fn formats_have_known_answers() {
        let schema = RecordSchema { key_columns: 1, normalise: vec!["trim".into()], columns: vec!["name".into()] };
        assert_eq!(
            String::from_utf8(schema.to_json()).unwrap(),
            r#"{"key_columns":1,"normalise":["trim"],"columns":["name"]}"#
        );
        assert_eq!(RecordSchema::from_json(&schema.to_json()).unwrap(), schema);
        assert!(RecordSchema::from_json(br#"{"key_columns":1,"normalise":[],"columns":[],"x":1}"#).is_err());
        // SHA-256("stayput/pir/version/v1" ‖ hint digest ‖ u64 LE length ‖ schema).
        assert_eq!(
            hex::encode(version_digest(&[1; 32], b"{}")),
            "83478dcffcb994558cdcbd6aed9b3844d08df32ada85e421bcbed58c412427d0"
        );
    }

    #[test]
    fn a_hint_is_used_only_when_it_matches_the_ledger() {
        let records: Vec<(Vec<u8>, Vec<u8>)> =
            (0..50u8).map(|i| (vec![b'k', i], stayput_pir::record::encode(&[Some(format!("record {i}"))]))).collect();
        let oprf = stayput_psi::oprf::OprfKey::from_bytes(&[3; 32]).unwrap();
        let db = Database::build(&records, 60, [2; 32], &oprf, "t").unwrap();
        let layout = db.layout().clone();
        let hint = db.hint().to_bytes();
        let schema = RecordSchema { key_columns: 1, normalise: vec![], columns: vec!["v".into()] }.to_json();
        let digest = version_digest(&Hint::from_bytes(&layout, &hint).unwrap().digest(&layout), &schema);
        assert!(checked(&layout, &schema, &hint, &digest).is_ok());
        let mut tampered = hint.clone();
        tampered[100] ^= 1;
        assert!(checked(&layout, &schema, &tampered, &digest).unwrap_err().to_string().contains("does not match"));
        let renamed = RecordSchema { key_columns: 1, normalise: vec![], columns: vec!["w".into()] }.to_json();
        assert!(checked(&layout, &renamed, &hint, &digest).is_err(), "the schema is covered too");
        assert!(checked(&layout, &schema, &hint[4..], &digest).is_err(), "a short hint is refused");
    }

    #[test]
    fn the_result_table_says_found_absent_or_malformed_per_key() {
        let columns = vec!["name".to_owned(), "note".to_owned()];
        let mut keys = Vec::new();
        for key in ["ST1", "ST,2", "ST3"] {
            let mut encoded = Vec::new();
            stayput_psi::keys::encode_key(&[key], &mut encoded).unwrap();
            keys.push(encoded);
        }
        let fetched = [Fetched::Found(vec![Some("Buoy \"A\"".into()), None]), Fetched::Absent, Fetched::Malformed];
        let (table, found) = result_table(&columns, &keys, &fetched);
        assert_eq!(found, 1);
        assert_eq!(table, "key,status,name,note\nST1,found,\"Buoy \"\"A\"\"\",\n\"ST,2\",absent,,\nST3,malformed,,\n");
    }

    #[test]
    fn cache_files_split_and_refuse_oversized_schemas() {
        let bytes = cache_bytes(b"{}", &[9; 8]);
        assert_eq!(split_cache(&bytes), Some((b"{}".as_slice(), [9u8; 8].as_slice())));
        let mut huge = bytes.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(split_cache(&huge), None);
        assert_eq!(split_cache(&[1, 0]), None);
    }
}
