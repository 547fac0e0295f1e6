//! Federated statistics between nodes: the `StatsPeer` service (this node
//! as a contributing site) and the requester's side ([`run_stats`]).
//!
//! 1. The requester's node asks every site (`Contribute`) with the task's
//!    parameters. Each site checks the ledger itself — the task, its
//!    parameters' digest, its dataset, a grant to the requester allowing
//!    federated statistics on every column the query reads — validates the
//!    query against its schema, and scans its table (arrow, blocking
//!    thread).
//! 2. The site commits to its vector and proves every entry within the
//!    bounds the declared column ranges imply (`zk-proofs`), splits values
//!    and blindings into one additive share per site (`mpc-engine`), keeps
//!    its own and hands each other site its share (`Share`, site to site).
//! 3. When it holds every site's share, it adds them, records its use on
//!    the ledger (items = rows scanned) and only then returns its
//!    commitments, proofs and partial sums to the requester's node.
//! 4. The requester's node verifies every site's proofs (naming a site
//!    whose contribution is out of range), adds the partial sums, checks
//!    the pooled opening against the product of the commitments, computes
//!    the statistics and writes the result on its own disk; the
//!    commitments' digests go on the ledger with the result digest.
//!
//! **TFHE post-processing.** When the query asks for min/max or a grant
//! sets a minimum cohort above 1, the requester's node makes a fresh TFHE
//! key pair for the task and sends the compact public key with each
//! `Contribute`. Each site then encrypts its extremes and its cells (group
//! sizes and histogram bins, `mpc_engine::local::cells`), sets the cells to
//! zero in what it commits and shares, and deposits the ciphertexts with the
//! coordinator (`Coordinator.Deposit`) — never with the requester, whose key
//! decrypts them; a site whose grant sets a minimum cohort refuses a request
//! without a key. The requester's node uploads its server key to the
//! coordinator (`Coordinator.Evaluate`), which computes min/max and the suppressed
//! pooled counts on ciphertexts, and decrypts what comes back: a cell below
//! the minimum cohort reaches it only as "suppressed". The cells are range
//! checked by nothing (the Pedersen commitments hold zero there); per-measure
//! counts (n of a mean) stay in the shared vector, so a group's size is
//! hidden only as well as its measures' counts are — render them
//! `suppressed` too below the minimum cohort.
//!
//! Any site that fails, refuses or stays silent aborts the task: no partial
//! result is ever written. A site learns nothing but uniform shares; the
//! requester's node learns the pooled vector (cells excepted).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::OsRng;
use stayput_chain_connector::records::{Computation, TaskStatus};
use stayput_chain_connector::rules::TaskState;
use stayput_chain_connector::tasks::{StatsParams, TaskParams, params_digest};
use stayput_mpc_engine::fhe;
use stayput_mpc_engine::finish::{GroupResult, Value, finish};
use stayput_mpc_engine::local::{Cell, LocalScan, cells as local_cells, entry_bounds, vector_len};
use stayput_mpc_engine::query::CohortQuery;
use stayput_mpc_engine::sharing::{Aggregator, Reconstruction, Share, split, split_scalars};
use stayput_proto::v1::stats_peer_client::StatsPeerClient;
use stayput_proto::v1::stats_peer_server::StatsPeer;
use stayput_proto::v1::{ContributeRequest, ContributeResponse, ShareRequest, ShareResponse};
use stayput_zk_proofs::contribution::{Bounds, Contribution, ProofContext, check_opening, commit_and_prove, verify};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use crate::authorisation::{ServeRequest, check, record_use};
use crate::identity::caller_org;
use crate::wire::{IDLE_TIMEOUT, MAX_MESSAGE_BYTES};
use crate::{NodeError, NodeState};

/// A site's value share and blinding share, as received.
type ShareBytes = (Vec<u8>, Vec<u8>);
/// One task's received shares by sending site, who to wake on arrival, and
/// when the first share came (parked shares expire).
type TaskShares = (BTreeMap<String, ShareBytes>, Arc<Notify>, std::time::Instant);

/// How long shares for a task this node has not (yet) contributed to are kept.
const PARKED_FOR: Duration = Duration::from_secs(2 * IDLE_TIMEOUT.as_secs());

/// Shares that arrived for tasks, by task, then by sending site.
#[derive(Debug, Default)]
pub struct ShareBox {
    tasks: Mutex<HashMap<String, TaskShares>>,
}

fn fresh() -> TaskShares {
    (BTreeMap::new(), Arc::new(Notify::new()), std::time::Instant::now())
}

/// Most tasks with shares waiting at once (a bound on what peers can park).
const MAX_WAITING_TASKS: usize = 64;

impl ShareBox {
    fn put(&self, task: &str, from: &str, value: Vec<u8>, blinding: Vec<u8>) -> Result<(), NodeError> {
        let mut tasks = self.tasks.lock().expect("share box");
        // Shares parked for tasks this node never joined expire; a task
        // being waited on is refreshed below, so it is never dropped early.
        tasks.retain(|_, (_, _, since)| since.elapsed() < PARKED_FOR);
        if !tasks.contains_key(task) && tasks.len() >= MAX_WAITING_TASKS {
            return Err(NodeError::Busy { max: MAX_WAITING_TASKS });
        }
        let (shares, notify, _) = tasks.entry(task.into()).or_insert_with(fresh);
        if shares.contains_key(from) {
            return Err(NodeError::Stats(format!("'{from}' already sent its share for this task")));
        }
        shares.insert(from.into(), (value, blinding));
        notify.notify_waiters();
        Ok(())
    }

    /// Waits until every one of `parties` has sent its share; takes them.
    async fn take_all(&self, task: &str, parties: &[String]) -> Result<BTreeMap<String, ShareBytes>, NodeError> {
        let deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
        loop {
            let notify = {
                let mut tasks = self.tasks.lock().expect("share box");
                let (shares, notify, since) = tasks.entry(task.into()).or_insert_with(fresh);
                *since = std::time::Instant::now();
                if parties.iter().all(|p| shares.contains_key(p)) {
                    return Ok(tasks.remove(task).map(|(s, _, _)| s).unwrap_or_default());
                }
                notify.clone()
            };
            // Register interest before re-checking, so a share that lands in
            // between is not missed.
            let waiting = notify.notified();
            tokio::pin!(waiting);
            waiting.as_mut().enable();
            let complete = {
                let tasks = self.tasks.lock().expect("share box");
                tasks.get(task).is_some_and(|(shares, _, _)| parties.iter().all(|p| shares.contains_key(p)))
            };
            if complete {
                continue;
            }
            if tokio::time::timeout_at(deadline, waiting).await.is_err() {
                let tasks = self.tasks.lock().expect("share box");
                let have = tasks.get(task).map(|(s, _, _)| s.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
                let missing: Vec<&String> = parties.iter().filter(|p| !have.contains(p)).collect();
                drop(tasks);
                self.tasks.lock().expect("share box").remove(task);
                return Err(NodeError::PeerVanished {
                    peer: missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                    phase: "shares",
                    detail: format!("no share within {} s; the aggregation is aborted", IDLE_TIMEOUT.as_secs()),
                });
            }
        }
    }
}

/// The sites of a task: the owners of its datasets, in the task's order.
async fn sites(state: &NodeState, task: &TaskState) -> Result<Vec<(String, String)>, NodeError> {
    let ledger = &state.ledger.as_ref().ok_or_else(no_ledger)?.ledger;
    let mut out = Vec::new();
    for d in &task.task.datasets {
        let versions = ledger.dataset(d).await.map_err(|e| NodeError::LedgerUnavailable(e.to_string()))?;
        let owner = versions.last().map(|v| v.owner.clone()).ok_or_else(|| NodeError::NotAuthorised {
            task: task.task.id.clone(),
            reason: format!("dataset '{d}' is not on the ledger"),
        })?;
        if out.iter().any(|(o, _)| o == &owner) {
            return Err(NodeError::Stats(format!("'{owner}' owns two of the task's datasets; one dataset per site")));
        }
        out.push((owner, d.clone()));
    }
    if out.len() < 2 {
        return Err(NodeError::Stats("federated statistics need at least two sites".into()));
    }
    Ok(out)
}

fn no_ledger() -> NodeError {
    NodeError::InvalidConfig("federated statistics need a [ledger] section".into())
}

/// The task from the ledger, checked active, of kind federated statistics
/// and recorded with exactly `params`; returns it with its query.
async fn stats_task(state: &NodeState, task_id: &str, params: &[u8]) -> Result<(TaskState, CohortQuery), NodeError> {
    let refuse = |reason: String| NodeError::NotAuthorised { task: task_id.to_owned(), reason };
    let ledger = &state.ledger.as_ref().ok_or_else(no_ledger)?.ledger;
    let task = ledger
        .task(task_id)
        .await
        .map_err(|e| NodeError::LedgerUnavailable(e.to_string()))?
        .ok_or_else(|| refuse("not on the ledger".into()))?;
    if task.task.kind != Computation::FederatedStats
        || !matches!(task.status, TaskStatus::Submitted | TaskStatus::Running)
    {
        return Err(refuse(format!("it is a {} task, {}", task.task.kind, task.status)));
    }
    if params_digest(task.task.kind, params) != task.task.params_digest {
        return Err(refuse("the parameters given are not the ones recorded with the task".into()));
    }
    let TaskParams::FederatedStats(StatsParams { query }) =
        TaskParams::decode(task.task.kind, params).map_err(|e| refuse(e.to_string()))?
    else {
        return Err(refuse("not federated-statistics parameters".into()));
    };
    let query = CohortQuery::from_json(&query).map_err(|e| refuse(e.to_string()))?;
    Ok((task, query))
}

fn stats_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Stats(e.to_string())
}

/// A scan failure that depends on the table's contents (values outside the
/// declared ranges, text in a numeric column, overflow). Its message names
/// the column and never a count or a value.
pub(crate) fn data_error(e: stayput_mpc_engine::MpcError) -> NodeError {
    use stayput_mpc_engine::MpcError as E;
    match e {
        E::OutsideRange { column, low, high, .. } => NodeError::Stats(format!(
            "{DATA_DEPENDENT}column '{column}' has values outside its declared range [{low}, {high}]"
        )),
        E::NotNumeric { column, .. } => {
            NodeError::Stats(format!("{DATA_DEPENDENT}column '{column}' has values that are not numbers"))
        }
        E::Overflow { column } | E::OutOfRange { column } => {
            NodeError::Stats(format!("{DATA_DEPENDENT}values of column '{column}' overflow the declared precision"))
        }
        other => stats_err(other),
    }
}

const DATA_DEPENDENT: &str = "this site's data does not fit the query: ";

fn bounds(query: &CohortQuery, rows: u64) -> Result<Vec<Bounds>, NodeError> {
    Ok(entry_bounds(query, rows).map_err(stats_err)?.into_iter().map(|(low, high)| Bounds { low, high }).collect())
}

/// The `StatsPeer` service.
#[derive(Debug, Clone)]
pub struct StatsPeerService {
    state: Arc<NodeState>,
}

impl StatsPeerService {
    /// A service over the node's state.
    pub fn new(state: Arc<NodeState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl StatsPeer for StatsPeerService {
    async fn contribute(&self, request: Request<ContributeRequest>) -> Result<Response<ContributeResponse>, Status> {
        let caller = caller_org(&request)?;
        let request = request.into_inner();
        let task = request.task_id.clone();
        contribute(&self.state, &caller, request).await.map(Response::new).map_err(|e| {
            tracing::warn!(task = %task, peer = %caller, error = %e, "contribution refused or failed");
            Status::from(e)
        })
    }

    async fn share(&self, request: Request<ShareRequest>) -> Result<Response<ShareResponse>, Status> {
        let caller = caller_org(&request)?;
        let ShareRequest { task_id, value_share, blinding_share } = request.into_inner();
        crate::wire::check_task_id(&task_id)?;
        let max = stayput_mpc_engine::sharing::MAX_ENTRIES * 32;
        if value_share.len() != blinding_share.len() || value_share.len() > max || value_share.len() % 32 != 0 {
            return Err(Status::invalid_argument("shares must be equal lists of 32-byte scalars"));
        }
        let ledger = &self.state.ledger.as_ref().ok_or_else(no_ledger)?.ledger;
        let refuse = |reason: &str| NodeError::NotAuthorised { task: task_id.clone(), reason: reason.into() };
        let task = ledger
            .task(&task_id)
            .await
            .map_err(|e| NodeError::LedgerUnavailable(e.to_string()))?
            .ok_or_else(|| refuse("not on the ledger"))?;
        if task.task.kind != Computation::FederatedStats {
            return Err(refuse("not a federated-statistics task").into());
        }
        let sites = sites(&self.state, &task).await?;
        if !sites.iter().any(|(o, _)| o == &caller) || !sites.iter().any(|(o, _)| o == &self.state.config.org) {
            return Err(refuse("the sender and this node must both be sites of the task").into());
        }
        self.state.shares.put(&task_id, &caller, value_share.to_vec(), blinding_share.to_vec())?;
        Ok(Response::new(ShareResponse {}))
    }
}

async fn contribute(
    state: &Arc<NodeState>,
    caller: &str,
    request: ContributeRequest,
) -> Result<ContributeResponse, NodeError> {
    let ContributeRequest { task_id, dataset, params, fhe_public_key } = request;
    if fhe_public_key.len() as u64 > fhe::PUBLIC_KEY_LIMIT {
        return Err(NodeError::Stats(format!("the TFHE public key exceeds {} bytes", fhe::PUBLIC_KEY_LIMIT)));
    }
    crate::wire::check_task_id(&task_id)?;
    let (task, query) = stats_task(state, &task_id, &params).await?;
    let access = state.ledger.as_ref().ok_or_else(no_ledger)?;
    let own = state.config.org.clone();
    let sites = sites(state, &task).await?;
    if !sites.iter().any(|(o, d)| o == &own && d == &dataset) {
        return Err(NodeError::NotAuthorised {
            task: task_id,
            reason: format!("dataset '{dataset}' is not this site's part of it"),
        });
    }
    let columns = query.columns();
    let source = state.config.dataset(&dataset)?.clone();
    let serve = ServeRequest {
        task: &task_id,
        peer: caller,
        dataset: &dataset,
        kinds: &[Computation::FederatedStats],
        items: 0,
        columns: &columns,
        key_columns: &source.key_columns,
    };
    let grant = check(&*access.ledger, &own, &serve).await?;
    let min_cohort = access
        .ledger
        .grant(&grant)
        .await
        .map_err(|e| NodeError::LedgerUnavailable(e.to_string()))?
        .map_or(0, |g| g.grant.min_cohort);
    let kinds = fhe::extreme_kinds(&query);
    let cells = local_cells(&query);
    if fhe_public_key.is_empty() && (!kinds.is_empty() || min_cohort > 1) {
        return Err(NodeError::NotAuthorised {
            task: task_id,
            reason: format!(
                "the query needs homomorphic post-processing (min/max, or suppression below the grant's minimum cohort of {min_cohort}), and no TFHE key came with it"
            ),
        });
    }
    let permit = state.session_permit()?;
    tracing::info!(task = %task_id, dataset = %dataset, "computing a federated-statistics contribution");

    // Scan, commit, prove and split on a blocking thread.
    let names: Vec<String> = sites.iter().map(|(o, _)| o.clone()).collect();
    let (task_for_proofs, own_for_proofs, scan_query) = (task_id.clone(), own.clone(), query.clone());
    let encrypts = !fhe_public_key.is_empty();
    let scanned = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let (schema, batches) = source.batches()?;
        let names_in: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        scan_query.validate(&names_in, &[]).map_err(stats_err)?;
        let mut scan = LocalScan::new(&scan_query).map_err(stats_err)?;
        for batch in batches {
            scan.absorb(&batch?).map_err(data_error)?;
        }
        let mut stats = scan.finish();
        // With a TFHE key, extremes and cells travel only encrypted; the
        // cells are zero in what is committed and shared.
        let encrypted = if fhe_public_key.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let counts: Vec<u64> =
                cells.iter().map(|c| u64::try_from(stats.additive[c.entry]).unwrap_or(u64::MAX)).collect();
            for c in &cells {
                stats.additive[c.entry] = 0;
            }
            (
                fhe::encrypt_extremes(&fhe_public_key, &kinds, &stats.extrema).map_err(stats_err)?,
                fhe::encrypt_counts(&fhe_public_key, &counts).map_err(stats_err)?,
            )
        };
        let ctx = ProofContext { task: &task_for_proofs, party: &own_for_proofs };
        let (contribution, blindings) =
            commit_and_prove(&ctx, &stats.additive, &bounds(&scan_query, stats.rows_scanned)?, &mut OsRng)
                .map_err(stats_err)?;
        let parties = names.len();
        let value_shares = split(&stats.additive, parties, &mut OsRng).map_err(stats_err)?;
        let blinding_shares = split_scalars(&blindings.0, parties, &mut OsRng).map_err(stats_err)?;
        Ok::<_, NodeError>((contribution, stats.rows_scanned, value_shares, blinding_shares, encrypted))
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))?;
    let (contribution, rows, value_shares, blinding_shares, (fhe_extremes, fhe_cells)) = match scanned {
        Ok(done) => done,
        Err(NodeError::Stats(message)) if message.starts_with(DATA_DEPENDENT) => {
            // The failure says something about the data, so it is a use:
            // recorded before the requester hears of it, so it cannot be
            // used to probe the table for free.
            record_use(&*access.ledger, &own, &access.key, &task_id, &grant, 0).await?;
            return Err(NodeError::Stats(message));
        }
        Err(e) => return Err(e),
    };

    // Own share into the box; every other site's share to it directly.
    let mut sends = Vec::new();
    for (i, (site, _)) in sites.iter().enumerate() {
        let (v, b) = (value_shares[i].to_bytes(), blinding_shares[i].to_bytes());
        if site == &own {
            state.shares.put(&task_id, &own, v, b)?;
            continue;
        }
        let (state, site, task_id) = (state.clone(), site.clone(), task_id.clone());
        sends.push(tokio::spawn(async move {
            let channel = crate::requester::connect_peer(&state, &site).await?;
            StatsPeerClient::new(channel)
                .share(ShareRequest { task_id, value_share: v.into(), blinding_share: b.into() })
                .await
                .map_err(|s| crate::wire::status_error(s, &site, "shares"))?;
            Ok::<_, NodeError>(())
        }));
    }
    for send in sends {
        send.await.map_err(|e| NodeError::Worker(e.to_string()))??;
    }
    let received = state.shares.take_all(&task_id, &sites.iter().map(|(o, _)| o.clone()).collect::<Vec<_>>()).await?;
    let len = vector_len(&query);
    let mut values = Aggregator::new(&names_of(&sites), len);
    let mut blinds = Aggregator::new(&names_of(&sites), len);
    for (from, (v, b)) in received {
        values.absorb(&from, Share::from_bytes(&v, len).map_err(stats_err)?).map_err(stats_err)?;
        blinds.absorb(&from, Share::from_bytes(&b, len).map_err(stats_err)?).map_err(stats_err)?;
    }
    let (value_sum, blinding_sum) = (values.finish().map_err(stats_err)?, blinds.finish().map_err(stats_err)?);
    // Nothing leaves before the use is on the ledger.
    record_use(&*access.ledger, &own, &access.key, &task_id, &grant, rows).await?;
    if encrypts {
        deposit(state, &task_id, fhe_extremes, fhe_cells).await?;
    }
    tracing::info!(task = %task_id, "contribution sent; use recorded");
    Ok(ContributeResponse {
        contribution: contribution.to_bytes().into(),
        rows,
        value_sum: value_sum.to_bytes().into(),
        blinding_sum: blinding_sum.to_bytes().into(),
    })
}

/// The coordinator's endpoint, dialled as the operator.
async fn coordinator(state: &NodeState) -> Result<(tonic::transport::Channel, String), NodeError> {
    let settings = state.config.ledger.as_ref().ok_or_else(no_ledger)?;
    let channel = crate::requester::connect(state, &settings.operator, &settings.endpoint).await?;
    Ok((channel, settings.operator.clone()))
}

/// A site hands its encrypted extremes and cells to the coordinator: the
/// requester holds the key that decrypts them, so they never go there.
async fn deposit(state: &NodeState, task_id: &str, extremes: Vec<u8>, cells: Vec<u8>) -> Result<(), NodeError> {
    use stayput_proto::v1::FheDeposit;
    use stayput_proto::v1::coordinator_client::CoordinatorClient;
    let (channel, operator) = coordinator(state).await?;
    CoordinatorClient::new(channel)
        .deposit(FheDeposit { task_id: task_id.to_owned(), extremes: extremes.into(), cells: cells.into() })
        .await
        .map_err(|s| crate::wire::status_error(s, &operator, "deposit"))?;
    Ok(())
}

fn names_of(sites: &[(String, String)]) -> Vec<String> {
    sites.iter().map(|(o, _)| o.clone()).collect()
}

/// What the requester's node keeps beside a statistics result so that it,
/// or an auditor it hands the file to, can re-check the result later
/// ([`verify_evidence`]): every site's commitments and proofs with its row
/// count, and the pooled opening.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Evidence {
    /// The query, canonical JSON.
    pub query: String,
    /// Per site: organisation, rows scanned, contribution (hex).
    pub sites: Vec<(String, u64, String)>,
    /// The pooled vector.
    pub pooled: Vec<String>,
    /// The pooled blindings (hex).
    pub blindings: Vec<String>,
}

/// What a statistics task produced on the requester's node.
#[derive(Debug)]
pub struct StatsOutcome {
    /// The result file's text.
    pub table: String,
    /// Rows in the cohort.
    pub cohort: u64,
    /// The sites' commitment digests, in site order.
    pub digests: Vec<[u8; 32]>,
    /// What re-checks the result.
    pub evidence: Evidence,
}

/// Re-checks a statistics result against the task on the ledger: the
/// evidence's query is the one recorded (parameter digest), each site's
/// commitments match the digests recorded with the result (in order), each
/// site's range proofs verify, and the pooled opening matches the
/// commitments; returns a summary.
pub fn verify_evidence(on_ledger: &TaskState, evidence: &Evidence) -> Result<String, NodeError> {
    let task = on_ledger.task.id.as_str();
    let recorded = on_ledger
        .results
        .last()
        .map(|r| r.intermediates.as_slice())
        .ok_or_else(|| NodeError::Stats(format!("task '{task}' has no result on the ledger yet")))?;
    let params = TaskParams::FederatedStats(StatsParams { query: evidence.query.clone() }).encode();
    if params_digest(Computation::FederatedStats, &params) != on_ledger.task.params_digest {
        return Err(NodeError::Stats("the evidence's query is not the one recorded with the task".into()));
    }
    let query = CohortQuery::from_json(&evidence.query).map_err(stats_err)?;
    if recorded.len() != evidence.sites.len() {
        return Err(NodeError::Stats(format!(
            "the ledger records {} commitment digests, the evidence has {} sites",
            recorded.len(),
            evidence.sites.len()
        )));
    }
    let mut contributions = Vec::new();
    for ((site, rows, hex_bytes), digest) in evidence.sites.iter().zip(recorded) {
        let bytes = hex::decode(hex_bytes).map_err(stats_err)?;
        let c = Contribution::from_bytes(&bytes).map_err(stats_err)?;
        if &c.digest() != digest {
            return Err(NodeError::Stats(format!("the commitments of '{site}' are not the ones on the ledger")));
        }
        verify(&ProofContext { task, party: site }, &c, &bounds(&query, *rows)?)
            .map_err(|e| NodeError::Stats(format!("the contribution of '{site}' does not verify: {e}")))?;
        contributions.push(c);
    }
    let pooled: Vec<i128> = evidence.pooled.iter().map(|v| v.parse().map_err(stats_err)).collect::<Result<_, _>>()?;
    let blindings = evidence
        .blindings
        .iter()
        .map(|h| {
            let bytes: [u8; 32] = hex::decode(h)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| stats_err("a blinding is not 32 hex bytes"))?;
            Option::<curve25519_dalek::scalar::Scalar>::from(curve25519_dalek::scalar::Scalar::from_canonical_bytes(
                bytes,
            ))
            .ok_or_else(|| stats_err("a blinding is not a canonical scalar"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&Contribution> = contributions.iter().collect();
    check_opening(&refs, &pooled, &blindings).map_err(stats_err)?;
    Ok(format!(
        "{} sites' commitments match the ledger, every range proof verifies, and the pooled vector ({} entries) opens their product",
        evidence.sites.len(),
        pooled.len()
    ))
}

/// The requester's node: collects, verifies and pools.
pub async fn run_stats(state: &Arc<NodeState>, task_id: &str, params: &[u8]) -> Result<StatsOutcome, NodeError> {
    let (task, query) = stats_task(state, task_id, params).await?;
    let sites = sites(state, &task).await?;
    let ledger = &state.ledger.as_ref().ok_or_else(no_ledger)?.ledger;
    let mut min_cohort = 0;
    for g in &task.task.grants {
        if let Some(grant) = ledger.grant(g).await.map_err(|e| NodeError::LedgerUnavailable(e.to_string()))? {
            min_cohort = min_cohort.max(grant.grant.min_cohort);
        }
    }
    // TFHE post-processing when the query has extremes or the grants ask
    // for small-cell suppression: fresh keys for this task only.
    let kinds = fhe::extreme_kinds(&query);
    let cells = local_cells(&query);
    let keys = if !kinds.is_empty() || min_cohort > 1 {
        let (keys, material) = tokio::task::spawn_blocking(fhe::RequesterKeys::generate)
            .await
            .map_err(|e| NodeError::Worker(e.to_string()))?
            .map_err(stats_err)?;
        Some((keys, material))
    } else {
        None
    };
    let public_key = keys.as_ref().map(|(_, m)| m.public_key.clone()).unwrap_or_default();
    let mut calls = Vec::new();
    for (site, dataset) in &sites {
        let (state, site, dataset, task_id, params, fhe_public_key) =
            (state.clone(), site.clone(), dataset.clone(), task_id.to_owned(), params.to_vec(), public_key.clone());
        calls.push(tokio::spawn(async move {
            let channel = crate::requester::connect_peer(&state, &site).await?;
            let response = StatsPeerClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .contribute(ContributeRequest {
                    task_id,
                    dataset,
                    params: params.into(),
                    fhe_public_key: fhe_public_key.into(),
                })
                .await
                .map_err(|s| crate::wire::status_error(s, &site, "contribution"))?;
            Ok::<_, NodeError>((site, response.into_inner()))
        }));
    }
    let mut responses = Vec::new();
    for call in calls {
        responses.push(call.await.map_err(|e| NodeError::Worker(e.to_string()))??);
    }
    // A site's row count sets its proof bounds: it must be the item count
    // the site signed into its use record on the ledger.
    let recorded = ledger
        .task(task_id)
        .await
        .map_err(|e| NodeError::LedgerUnavailable(e.to_string()))?
        .map(|t| t.uses)
        .unwrap_or_default();
    for (site, r) in &responses {
        if !recorded.iter().any(|(org, u)| org == site && u.items == r.rows) {
            return Err(NodeError::Stats(format!(
                "'{site}' reported a row count its use record on the ledger does not show; its contribution is refused"
            )));
        }
    }
    let len = vector_len(&query);
    let names = names_of(&sites);
    let (verify_query, verify_task, checked) = (query.clone(), task_id.to_owned(), responses);
    let (pooled, blindings, contributions, rows) = tokio::task::spawn_blocking(move || {
        let mut values = Reconstruction::new(&names, len);
        let mut blinds = Reconstruction::new(&names, len);
        let mut contributions = Vec::new();
        for (site, r) in &checked {
            let c = Contribution::from_bytes(&r.contribution).map_err(stats_err)?;
            verify(&ProofContext { task: &verify_task, party: site }, &c, &bounds(&verify_query, r.rows)?)
                .map_err(|e| NodeError::Stats(format!("the contribution of '{site}' is refused: {e}")))?;
            values.absorb(site, Share::from_bytes(&r.value_sum, len).map_err(stats_err)?).map_err(stats_err)?;
            blinds.absorb(site, Share::from_bytes(&r.blinding_sum, len).map_err(stats_err)?).map_err(stats_err)?;
            contributions.push(c);
        }
        let pooled = values.finish().map_err(stats_err)?;
        let blindings = blinds.finish_scalars().map_err(stats_err)?;
        let refs: Vec<&Contribution> = contributions.iter().collect();
        check_opening(&refs, &pooled, &blindings)
            .map_err(|e| NodeError::Stats(format!("the pooled result does not open the sites' commitments: {e}")))?;
        let rows: Vec<u64> = checked.iter().map(|(_, r)| r.rows).collect();
        Ok::<_, NodeError>((pooled, blindings, contributions, rows))
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))??;

    let mut table_vector = pooled.clone();
    let mut extrema = Vec::new();
    let mut hidden = Vec::new();
    if let Some((keys, material)) = keys {
        // Pooled cell counts must stay below the suppression sentinel.
        let total = rows.iter().try_fold(0u64, |acc, r| acc.checked_add(*r));
        if total.is_none_or(|t| t >= u64::from(fhe::SUPPRESSED)) {
            return Err(NodeError::Stats(
                "the sites hold 2^32 rows or more: too many for 32-bit encrypted counts".into(),
            ));
        }
        let (extreme_cts, cell_cts) = post_process(state, task_id, &material, kinds.len(), cells.len()).await?;
        let (decrypted_extremes, counts) = tokio::task::spawn_blocking(move || {
            Ok::<_, NodeError>((
                keys.decrypt_extremes(&extreme_cts, &kinds).map_err(stats_err)?,
                keys.decrypt_counts(&cell_cts).map_err(stats_err)?,
            ))
        })
        .await
        .map_err(|e| NodeError::Worker(e.to_string()))??;
        if counts.len() != cells.len() {
            return Err(NodeError::Stats(format!(
                "expected {} cell counts, the evaluator returned {}",
                cells.len(),
                counts.len()
            )));
        }
        extrema = decrypted_extremes;
        for (cell, count) in cells.iter().zip(counts) {
            match count {
                Some(n) => table_vector[cell.entry] = i128::from(n),
                None => hidden.push(*cell),
            }
        }
    }
    let results = finish(&query, &table_vector, &extrema).map_err(stats_err)?;
    let cohort = results.iter().map(|g| g.count).sum();
    let evidence = Evidence {
        query: query.to_canonical_json(),
        sites: sites
            .iter()
            .zip(&contributions)
            .zip(&rows)
            .map(|(((site, _), c), rows)| (site.clone(), *rows, hex::encode(c.to_bytes())))
            .collect(),
        pooled: pooled.iter().map(ToString::to_string).collect(),
        blindings: blindings.iter().map(|b| hex::encode(b.to_bytes())).collect(),
    };
    Ok(StatsOutcome {
        table: render(&results, u64::from(min_cohort), &hidden),
        cohort,
        digests: contributions.iter().map(Contribution::digest).collect(),
        evidence,
    })
}

/// Bytes of the server key per upload message.
const KEY_CHUNK: usize = 1 << 20;
/// How long the coordinator may take over the homomorphic evaluation.
const EVALUATION_TIMEOUT: Duration = Duration::from_secs(600);

/// Sends the server key to the coordinator, which evaluates the sites'
/// deposits, and collects the evaluated extremes and cells (still
/// encrypted).
async fn post_process(
    state: &NodeState,
    task_id: &str,
    material: &fhe::PublicMaterial,
    extremes: usize,
    cells: usize,
) -> Result<(Vec<Vec<u8>>, Vec<Vec<u8>>), NodeError> {
    use stayput_proto::v1::coordinator_client::CoordinatorClient;
    use stayput_proto::v1::{FheOpen, FheUpload, fhe_download, fhe_upload};
    let (channel, operator) = coordinator(state).await?;
    let mut uploads = vec![FheUpload {
        part: Some(fhe_upload::Part::Open(FheOpen {
            task_id: task_id.to_owned(),
            server_key_len: material.server_key.len() as u64,
        })),
    }];
    uploads.extend(
        material
            .server_key
            .chunks(KEY_CHUNK)
            .map(|chunk| FheUpload { part: Some(fhe_upload::Part::ServerKeyChunk(chunk.to_vec().into())) }),
    );
    tracing::info!(task = %task_id, "homomorphic post-processing at the coordinator");
    let evaluation = async {
        let mut stream = CoordinatorClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .evaluate(tokio_stream::iter(uploads))
            .await
            .map_err(|s| crate::wire::status_error(s, &operator, "post-processing"))?
            .into_inner();
        let (mut got_extremes, mut got_cells) = (Vec::new(), Vec::new());
        while let Some(message) =
            stream.message().await.map_err(|s| crate::wire::status_error(s, &operator, "post-processing"))?
        {
            match message.value {
                Some(fhe_download::Value::Extreme(b)) if got_extremes.len() < extremes => got_extremes.push(b.to_vec()),
                Some(fhe_download::Value::Cell(b)) if got_cells.len() < cells => got_cells.push(b.to_vec()),
                _ => return Err(NodeError::Stats("the evaluator returned more or other values than asked".into())),
            }
        }
        if got_extremes.len() != extremes || got_cells.len() != cells {
            return Err(NodeError::Stats("the evaluator returned fewer values than asked".into()));
        }
        Ok((got_extremes, got_cells))
    };
    tokio::time::timeout(EVALUATION_TIMEOUT, evaluation).await.map_err(|_| NodeError::PeerVanished {
        peer: operator.clone(),
        phase: "post-processing",
        detail: format!("no result within {} s", EVALUATION_TIMEOUT.as_secs()),
    })?
}

fn suppressed(n: u64, min: u64) -> bool {
    n > 0 && n < min
}

/// The results as CSV: group, measure, statistic, n, value. A group or a
/// histogram bin in `hidden` (suppressed under TFHE), and a statistic over
/// fewer rows than the minimum cohort, reads `suppressed`.
pub fn render(results: &[GroupResult], min_cohort: u64, hidden: &[Cell]) -> String {
    let mut out = String::from("group,measure,statistic,n,value\n");
    for (index, g) in results.iter().enumerate() {
        let group = g.group.clone().unwrap_or_else(|| "all".into());
        if hidden.iter().any(|c| c.group == index && c.bin.is_none()) {
            let _ = writeln!(out, "{group},count,count,,suppressed");
            continue;
        }
        for (measure, m) in g.measures.iter().enumerate() {
            let label = format!("\"{}\"", m.label.replace('"', "'"));
            match &m.value {
                Value::Count(n) => {
                    let _ = writeln!(out, "{group},{label},count,{n},{n}");
                }
                Value::Number { n, value } => {
                    // A suppressed statistic shows neither its value nor its n.
                    let (n, v) = if suppressed(*n, min_cohort) {
                        (String::new(), "suppressed".to_owned())
                    } else {
                        (n.to_string(), value.map_or_else(|| "undefined".to_owned(), |v| format!("{v}")))
                    };
                    let _ = writeln!(out, "{group},{label},value,{n},{v}");
                }
                Value::Histogram(bins) => {
                    for (at, (bin, n)) in bins.iter().enumerate() {
                        let hide = hidden.iter().any(|c| c.group == index && c.bin == Some((measure, at)));
                        let v = if hide { "suppressed".to_owned() } else { n.to_string() };
                        let _ = writeln!(out, "{group},{label},\"{bin}\",,{v}");
                    }
                }
                Value::Regression { n, coefficients, r_squared } => {
                    if suppressed(*n, min_cohort) {
                        let _ = writeln!(out, "{group},{label},regression,,suppressed");
                        continue;
                    }
                    for (name, b) in coefficients {
                        let _ = writeln!(out, "{group},{label},{name},{n},{b}");
                    }
                    let _ = writeln!(out, "{group},{label},r_squared,{n},{r_squared}");
                }
            }
        }
    }
    out
}
