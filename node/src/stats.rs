//! Federated statistics between nodes (stats protocol 2): the `StatsPeer`
//! service (this node as a contributing site) and the requester's side
//! ([`run_stats`]).
//!
//! 1. **Census** (when a grant of the task sets a minimum cohort m > 1).
//!    The requester's node makes a fresh TFHE key pair for the task and
//!    asks every site (`Census`) with the task's parameters and its
//!    compact public key. Each site checks the ledger itself — the task,
//!    its parameters' digest, its dataset, a grant to the requester
//!    allowing federated statistics on every column the query reads —
//!    scans its table (blocking thread), **records its use** (items = rows
//!    scanned: which gates pass depends on the rows), and deposits with the
//!    coordinator, encrypted, its count at every *gate* — each group's
//!    size, each measure's n, each histogram bin
//!    ([`stayput_mpc_engine::gates`]) — and a fresh random token per gate,
//!    which it keeps. The coordinator adds the counts of every site except
//!    the requester's own, and answers per site and gate with the site's
//!    token where the pooled count is 0 or at least m and with 0 where not
//!    (`stayput_mpc_engine::fhe::Evaluator::census`). The requester's node
//!    decrypts which gates pass.
//! 2. **Contribution.** The requester's node asks every site
//!    (`Contribute`), showing each site its own tokens of the gates that
//!    passed. A site checks every token in constant time — a claimed gate
//!    with a wrong token refuses the whole contribution — and zeroes
//!    everything a withheld gate guards (a group's block, a measure's
//!    entries, a bin; extremes too). A site whose own grant sets m > 1
//!    shares nothing without a census. Without a census every gate passes
//!    and the site records its use after the scan.
//! 3. The site commits to what it shares and proves every entry within the
//!    bounds the declared column ranges imply (`zk-proofs`), splits values
//!    and blindings into one additive share per site (`mpc-engine`), keeps
//!    its own and hands each other site its share with the pass set it
//!    applied (`Share`, site to site). When it holds every site's share —
//!    each with the same pass set, or it refuses — it adds them, and
//!    returns its commitments, proofs and partial sums to the requester's
//!    node. Min/max of what passed go encrypted to the coordinator, which
//!    takes them across sites for the requester's node to decrypt.
//! 4. The requester's node verifies every site's proofs (naming a site
//!    whose contribution is out of range), adds the partial sums, checks
//!    the pooled opening against the product of the commitments, computes
//!    the statistics and writes the result on its own disk with the
//!    evidence; the commitments' digests go on the ledger with the result
//!    digest.
//!
//! **What reaches the requester.** Nothing of a group, measure or bin whose
//! pooled row count (over the sites other than the requester) is below the
//! minimum cohort: not in the pooled vector, the evidence file, a log line
//! or an error. It learns which gates pass (so, that a withheld cell holds
//! between 1 and m − 1 rows) — the residual leakage of the census — and,
//! where a histogram's bins are released, a released total minus the
//! released bins still bounds the withheld ones (a classic complementary
//! disclosure of *counts*, not of values). Differencing two overlapping
//! queries is not stopped by suppression; a grant with an ε budget asks for
//! calibrated noise instead (compute-only access).
//!
//! **Trust.** A requester cannot forge a pass: it sees a token only for a
//! gate that passed (a guess succeeds with probability 2^-32 per gate and
//! costs a recorded task); it cannot show sites different pass sets (they
//! compare them); it cannot lift a cell with its own rows (its census is
//! not counted) and cannot deposit for another site (the coordinator takes
//! each site's deposit from that site's certificate, once). A census is
//! taken once per task and site. What is not caught: a site colluding with
//! the requester can deposit inflated counts (census counts are not tied to
//! the committed vector), and the coordinator, which evaluates, could
//! answer every token (it holds them encrypted) — both are the brief's
//! non-collusion assumption; neither learns anything alone.
//!
//! **Differential privacy.** A task may carry ε (milli-ε in its
//! parameters); a grant with a privacy budget requires it and each site's
//! use record spends it, the ledger refusing what would overrun the budget.
//! Each site adds discrete Laplace noise calibrated to ε on its own
//! (`stayput_mpc_engine::privacy::StatsNoise`: ε split over what one row
//! touches, truncated at 48 scales so range proofs can cover it) before it
//! commits, so its rows are protected even if the other sites reveal
//! theirs; this is the defence against differencing overlapping queries,
//! which suppression alone does not stop. Min and max are refused with ε.
//!
//! Any site that fails, refuses or stays silent aborts the task: no partial
//! result is ever written. A site learns nothing but uniform shares.

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
use stayput_mpc_engine::gates::{self, Gate, Guard, PassSet};
use stayput_mpc_engine::local::{LocalScan, entry_bounds, vector_len};
use stayput_mpc_engine::query::CohortQuery;
use stayput_mpc_engine::sharing::{Aggregator, Reconstruction, Share, split, split_scalars};
use stayput_proto::v1::stats_peer_client::StatsPeerClient;
use stayput_proto::v1::stats_peer_server::StatsPeer;
use stayput_proto::v1::{
    CensusRequest, CensusResponse, ContributeRequest, ContributeResponse, ShareRequest, ShareResponse,
};
use stayput_zk_proofs::contribution::{Bounds, Contribution, ProofContext, check_opening, commit_and_prove, verify};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use crate::authorisation::{DATA_DEPENDENT, ServeRequest};
use crate::identity::caller_org;
use crate::serve::{Authorised, Metered, Recorded, respond};
use crate::wire::{IDLE_TIMEOUT, MAX_MESSAGE_BYTES};
use crate::{NodeError, NodeState};

/// A site's value share, blinding share and the pass set it applied, as
/// received.
type ShareBytes = (Vec<u8>, Vec<u8>, Vec<u8>);
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
    fn put(&self, task: &str, from: &str, share: ShareBytes) -> Result<(), NodeError> {
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
        shares.insert(from.into(), share);
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
    for d in task.task.datasets() {
        let versions = ledger.dataset(d).await.map_err(NodeError::from_ledger)?;
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
async fn stats_task(state: &NodeState, task_id: &str, params: &[u8]) -> Result<(TaskState, Stats), NodeError> {
    let refuse = |reason: String| NodeError::NotAuthorised { task: task_id.to_owned(), reason };
    let ledger = &state.ledger.as_ref().ok_or_else(no_ledger)?.ledger;
    let task = ledger
        .task(task_id)
        .await
        .map_err(NodeError::from_ledger)?
        .ok_or_else(|| refuse("not on the ledger".into()))?;
    if task.task.kind() != Computation::Stats || !matches!(task.status, TaskStatus::Submitted | TaskStatus::Running) {
        return Err(refuse(format!("it is a {} task, {}", task.task.kind(), task.status)));
    }
    if params_digest(task.task.kind(), params) != task.task.params_digest() {
        return Err(refuse("the parameters given are not the ones recorded with the task".into()));
    }
    let TaskParams::Stats(StatsParams { query, epsilon }) =
        TaskParams::decode(task.task.kind(), params).map_err(|e| refuse(e.to_string()))?
    else {
        return Err(refuse("not federated-statistics parameters".into()));
    };
    let query = CohortQuery::from_json(&query).map_err(|e| refuse(e.to_string()))?;
    if epsilon > 0 && !fhe::extreme_kinds(&query).is_empty() {
        return Err(refuse("min and max cannot be released with differential privacy; ask without them".into()));
    }
    let noise = (epsilon > 0)
        .then(|| stayput_mpc_engine::privacy::StatsNoise::new(&query, epsilon))
        .transpose()
        .map_err(|e| refuse(e.to_string()))?;
    Ok((task, Stats { query, epsilon, noise }))
}

/// A statistics task's query, its ε in milli-ε and the noise it implies.
#[derive(Debug, Clone)]
struct Stats {
    query: CohortQuery,
    epsilon: u32,
    noise: Option<stayput_mpc_engine::privacy::StatsNoise>,
}

impl Stats {
    /// The bounds every entry of a site's vector is proven within: the
    /// declared ranges' for `rows` rows, widened by the noise's tail.
    fn bounds(&self, rows: u64) -> Result<Vec<Bounds>, NodeError> {
        bounds(&self.query, rows, self.noise.as_ref())
    }
}

fn stats_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Stats(e.to_string())
}

/// A scan failure that depends on the table's contents (values outside the
/// declared ranges, text in a numeric column, overflow). Its message names
/// the column and never a count or a value.
pub(crate) fn data_error(e: stayput_mpc_engine::MpcError) -> NodeError {
    // One wording for every protocol (`authorisation::data_dependent`).
    match crate::authorisation::data_dependent(&e) {
        Some(message) => NodeError::Stats(message),
        None => stats_err(e),
    }
}

fn bounds(
    query: &CohortQuery,
    rows: u64,
    noise: Option<&stayput_mpc_engine::privacy::StatsNoise>,
) -> Result<Vec<Bounds>, NodeError> {
    let plain = entry_bounds(query, rows).map_err(stats_err)?;
    let tails = noise.map(stayput_mpc_engine::privacy::StatsNoise::tails).unwrap_or_else(|| vec![0; plain.len()]);
    Ok(plain.into_iter().zip(tails).map(|((low, high), t)| Bounds { low: low - t, high: high + t }).collect())
}

/// The stats protocol version this node speaks: 2 added the census and
/// the pass set. A request of another version is refused, saying so.
pub const PROTOCOL_VERSION: u32 = 2;

fn check_version(version: u32) -> Result<(), NodeError> {
    if version == PROTOCOL_VERSION {
        return Ok(());
    }
    Err(NodeError::Stats(format!(
        "stats protocol version {version} is not supported: this site speaks version {PROTOCOL_VERSION} (small cells are withheld by the sites after a census); upgrade the requester's node"
    )))
}

/// What a site keeps between its census and its contribution: its scanned
/// statistics, the tokens it deposited (secret: a requester that learns
/// one could claim that gate passed), and the grant its use was recorded
/// under.
struct CensusState {
    stats: stayput_mpc_engine::local::LocalStats,
    tokens: zeroize::Zeroizing<Vec<u32>>,
    grant: String,
}

/// Census states by task — reserved while the census runs (`None`), held
/// until the contribution takes them, then a tombstone (`None` again) —
/// each with when it last changed; all expire like parked shares, so the
/// box stays bounded. A census after its tombstone expired is still
/// refused: the ledger shows this site's use of the task.
#[derive(Default)]
pub struct CensusBox {
    tasks: Mutex<HashMap<String, (std::time::Instant, Option<CensusState>)>>,
}

impl std::fmt::Debug for CensusBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.tasks.lock().map(|t| t.len()).unwrap_or(0);
        write!(f, "CensusBox({held} tasks, tokens redacted)")
    }
}

impl CensusBox {
    /// Reserves `task` for a census: once per task, ever (a second census
    /// would hand the requester a second set of tokens to compare).
    fn reserve(&self, task: &str) -> Result<(), NodeError> {
        let mut tasks = self.tasks.lock().expect("census box");
        tasks.retain(|_, (since, _)| since.elapsed() < PARKED_FOR);
        if tasks.contains_key(task) {
            return Err(NodeError::Stats("this site has taken its census for the task already; run a new task".into()));
        }
        if tasks.len() >= MAX_WAITING_TASKS {
            return Err(NodeError::Busy { max: MAX_WAITING_TASKS });
        }
        tasks.insert(task.to_owned(), (std::time::Instant::now(), None));
        Ok(())
    }

    fn fill(&self, task: &str, state: CensusState) {
        self.tasks.lock().expect("census box").insert(task.to_owned(), (std::time::Instant::now(), Some(state)));
    }

    /// Forgets a reservation whose census failed before its use was recorded.
    fn release(&self, task: &str) {
        let mut tasks = self.tasks.lock().expect("census box");
        if tasks.get(task).is_some_and(|(_, state)| state.is_none()) {
            tasks.remove(task);
        }
    }

    /// The grant a census of `task` recorded its use under, if this site
    /// holds one.
    fn grant_of(&self, task: &str) -> Option<String> {
        self.tasks.lock().expect("census box").get(task).and_then(|(_, s)| s.as_ref().map(|s| s.grant.clone()))
    }

    /// Takes the census state of `task`: once (the tombstone stays, so no
    /// second census or contribution follows). `None` when no census was
    /// taken here.
    fn take(&self, task: &str) -> Result<Option<CensusState>, NodeError> {
        let mut tasks = self.tasks.lock().expect("census box");
        match tasks.get_mut(task) {
            None => Ok(None),
            Some((since, slot)) => {
                *since = std::time::Instant::now();
                slot.take().map(Some).ok_or_else(|| {
                    NodeError::Stats(
                        "this site's census for the task was used (or is still running); run a new task".into(),
                    )
                })
            }
        }
    }
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
    async fn census(&self, request: Request<CensusRequest>) -> Result<Response<CensusResponse>, Status> {
        let caller = caller_org(&request)?;
        let request = request.into_inner();
        let task = request.task_id.clone();
        let served = census(&self.state, &caller, request).await;
        respond("census", &task, &caller, served)
    }

    async fn contribute(&self, request: Request<ContributeRequest>) -> Result<Response<ContributeResponse>, Status> {
        let caller = caller_org(&request)?;
        let request = request.into_inner();
        let task = request.task_id.clone();
        let served = contribute(&self.state, &caller, request).await;
        respond("contribution", &task, &caller, served)
    }

    async fn share(&self, request: Request<ShareRequest>) -> Result<Response<ShareResponse>, Status> {
        let caller = caller_org(&request)?;
        let ShareRequest { task_id, value_share, blinding_share, pass_set } = request.into_inner();
        crate::wire::check_task_id(&task_id)?;
        let max = stayput_mpc_engine::sharing::MAX_ENTRIES * 32;
        if value_share.len() != blinding_share.len() || value_share.len() > max || value_share.len() % 32 != 0 {
            return Err(Status::invalid_argument("shares must be equal lists of 32-byte scalars"));
        }
        if pass_set.len() > stayput_mpc_engine::query::MAX_VECTOR {
            return Err(Status::invalid_argument("a pass set has one byte per gate, and no query has that many"));
        }
        let ledger = &self.state.ledger.as_ref().ok_or_else(no_ledger)?.ledger;
        let refuse = |reason: &str| NodeError::NotAuthorised { task: task_id.clone(), reason: reason.into() };
        let task =
            ledger.task(&task_id).await.map_err(NodeError::from_ledger)?.ok_or_else(|| refuse("not on the ledger"))?;
        if task.task.kind() != Computation::Stats {
            return Err(refuse("not a federated-statistics task").into());
        }
        let sites = sites(&self.state, &task).await?;
        if !sites.iter().any(|(o, _)| o == &caller) || !sites.iter().any(|(o, _)| o == &self.state.config.org) {
            return Err(refuse("the sender and this node must both be sites of the task").into());
        }
        self.state.shares.put(&task_id, &caller, (value_share.to_vec(), blinding_share.to_vec(), pass_set.to_vec()))?;
        Ok(Response::new(ShareResponse {}))
    }
}

/// What a site checked before it serves a task's census or contribution.
struct Served {
    stats: Stats,
    sites: Vec<(String, String)>,
    source: crate::dataset::Dataset,
    grant: String,
    min_cohort: u32,
}

/// Where a site's session stands on the serve path: authorised and not
/// recorded yet, or continuing a task whose census recorded the use.
#[derive(Debug)]
enum Stage {
    Fresh(Authorised),
    Continuing(Recorded),
}

impl Stage {
    fn grant(&self) -> &stayput_chain_connector::rules::GrantState {
        match self {
            Self::Fresh(a) => &a.grant,
            Self::Continuing(r) => &r.session().grant,
        }
    }

    fn worker_permit(&self) -> crate::serve::WorkerPermit {
        match self {
            Self::Fresh(a) => a.worker_permit(),
            Self::Continuing(r) => r.session().worker_permit(),
        }
    }
}

/// The checks common to the census and the contribution: the task on the
/// ledger with these parameters, this site's dataset in it, a grant to the
/// caller for federated statistics over every column the query reads — not
/// used yet, or (`continuing`) used by this site's census under that grant.
async fn serve_checks(
    state: &Arc<NodeState>,
    caller: &str,
    task_id: &str,
    dataset: &str,
    params: &[u8],
    fhe_public_key: &[u8],
    continuing: Option<&str>,
) -> Result<(Served, Stage), NodeError> {
    if fhe_public_key.len() as u64 > fhe::PUBLIC_KEY_LIMIT {
        return Err(NodeError::Stats(format!("the TFHE public key exceeds {} bytes", fhe::PUBLIC_KEY_LIMIT)));
    }
    crate::wire::check_task_id(task_id)?;
    let (task, stats) = stats_task(state, task_id, params).await?;
    let query = &stats.query;
    let own = state.config.org.clone();
    let sites = sites(state, &task).await?;
    if !sites.iter().any(|(o, d)| o == &own && d == dataset) {
        return Err(NodeError::NotAuthorised {
            task: task_id.to_owned(),
            reason: format!("dataset '{dataset}' is not this site's part of it"),
        });
    }
    let columns = query.columns();
    let source = state.config.dataset(dataset)?.clone();
    let serve = ServeRequest {
        task: task_id,
        peer: caller,
        dataset,
        kinds: &[Computation::Stats],
        items: 0,
        columns: &columns,
        key_columns: &source.key_columns,
        shard: None,
    };
    let stage = match continuing {
        None => Stage::Fresh(Authorised::new(state, &serve).await?),
        Some(grant) => Stage::Continuing(Authorised::continuing(state, &serve, grant).await?),
    };
    let state_of_grant = stage.grant();
    let grant = state_of_grant.grant.id.clone();
    let min_cohort = state_of_grant.grant.min_cohort;
    // A grant with a privacy budget releases only with noise, within what
    // is left (the census's use spends it; the ledger judges it again).
    // Continuing after the census, the budget already holds this task's ε.
    if continuing.is_none() {
        let budget = stayput_mpc_engine::privacy::Budget {
            total: state_of_grant.grant.epsilon_budget,
            spent: state_of_grant.epsilon_spent,
        };
        budget.admit(stats.epsilon).map_err(|e| NodeError::NotAuthorised {
            task: task_id.to_owned(),
            reason: format!("grant '{grant}': {e}"),
        })?;
    } else if (state_of_grant.grant.epsilon_budget > 0) != (stats.epsilon > 0) {
        return Err(NodeError::NotAuthorised {
            task: task_id.to_owned(),
            reason: format!("grant '{grant}' and the task disagree on noise"),
        });
    }
    if fhe_public_key.is_empty() && !fhe::extreme_kinds(query).is_empty() {
        return Err(NodeError::NotAuthorised {
            task: task_id.to_owned(),
            reason: "the query asks for min/max, which leave a site only encrypted, and no TFHE key came with it"
                .into(),
        });
    }
    Ok((Served { stats, sites, source, grant, min_cohort }, stage))
}

/// Scans this site's table for `query` on a blocking thread. A failure that
/// depends on the data is a use: it is recorded before the caller hears of
/// it, so it cannot probe the table for free (the session is then spent,
/// and the error returned).
async fn scan_metered(
    session: Authorised,
    served: &Served,
) -> Result<(Authorised, stayput_mpc_engine::local::LocalStats), NodeError> {
    let permit = session.worker_permit();
    let (source, query) = (served.source.clone(), served.stats.query.clone());
    let scanned = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let (schema, batches) = source.batches()?;
        let names_in: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        query.validate(&names_in, &[]).map_err(stats_err)?;
        let mut scan = LocalScan::new(&query).map_err(stats_err)?;
        for batch in batches {
            scan.absorb(&batch?).map_err(data_error)?;
        }
        Ok::<_, NodeError>(scan.finish())
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))?;
    match scanned {
        Ok(stats) => Ok((session, stats)),
        Err(NodeError::Stats(message)) if message.starts_with(DATA_DEPENDENT) => {
            let recorded = session.record(0, served.stats.epsilon).await?;
            Err(recorded.fail(NodeError::Stats(message)))
        }
        Err(other) => Err(other),
    }
}

/// A site's census: its count at every gate and a fresh token per gate,
/// encrypted under the requester's key and deposited with the coordinator
/// after the use is recorded (which gates pass depends on the rows).
async fn census(
    state: &Arc<NodeState>,
    caller: &str,
    request: CensusRequest,
) -> Result<Metered<CensusResponse>, NodeError> {
    let CensusRequest { version, task_id, dataset, params, fhe_public_key } = request;
    check_version(version)?;
    if fhe_public_key.is_empty() {
        return Err(NodeError::Stats("a census needs the requester's TFHE public key".into()));
    }
    let (served, stage) = serve_checks(state, caller, &task_id, &dataset, &params, &fhe_public_key, None).await?;
    let Stage::Fresh(session) = stage else { unreachable!("a census is a first round") };
    state.census.reserve(&task_id)?;
    tracing::info!(task = %task_id, dataset = %dataset, "taking a census for federated statistics");
    let outcome = async {
        let (session, stats) = scan_metered(session, &served).await?;
        let query = served.stats.query.clone();
        let (stats, tokens, list) = tokio::task::spawn_blocking(move || {
            let counts = gates::gate_counts(&query, &stats.additive).map_err(stats_err)?;
            let tokens: zeroize::Zeroizing<Vec<u32>> =
                zeroize::Zeroizing::new(counts.iter().map(|_| fresh_token()).collect());
            let list = fhe::encrypt_census(&fhe_public_key, &counts, &tokens).map_err(stats_err)?;
            Ok::<_, NodeError>((stats, tokens, list))
        })
        .await
        .map_err(|e| NodeError::Worker(e.to_string()))??;
        // Which gates pass depends on the rows: the use (and the ε the
        // task spends) comes first.
        let recorded = session.record(stats.rows_scanned, served.stats.epsilon).await?;
        Ok::<_, NodeError>((stats, tokens, list, recorded))
    }
    .await;
    let (stats, tokens, list, recorded) = match outcome {
        Ok(done) => done,
        Err(e) => {
            state.census.release(&task_id);
            return Err(e);
        }
    };
    let rows = stats.rows_scanned;
    state.census.fill(&task_id, CensusState { stats, tokens, grant: served.grant });
    deposit(state, &task_id, Deposit::Census(list)).await?;
    tracing::info!(task = %task_id, "census deposited; use recorded");
    Ok(recorded.reply(CensusResponse { rows }))
}

/// A uniformly random non-zero 32-bit token.
fn fresh_token() -> u32 {
    use rand::RngCore;
    loop {
        let t = OsRng.next_u32();
        if t != 0 {
            return t;
        }
    }
}

/// The pass set the requester showed, checked against this site's tokens
/// in constant time: a gate passes only with its exact token. A wrong
/// non-zero token is a forged claim and refuses the whole contribution.
fn verified_pass_set(query: &CohortQuery, tokens: &[u32], shown: &[u32]) -> Result<PassSet, NodeError> {
    use subtle::ConstantTimeEq;
    if shown.len() != tokens.len() {
        return Err(NodeError::Stats(format!(
            "the contribution shows {} pass tokens; the census had {} gates",
            shown.len(),
            tokens.len()
        )));
    }
    let mut forged = subtle::Choice::from(0);
    let mut passing = Vec::with_capacity(tokens.len());
    for (mine, theirs) in tokens.iter().zip(shown) {
        let claimed = !theirs.ct_eq(&0);
        let matches = mine.ct_eq(theirs);
        forged |= claimed & !matches;
        passing.push(bool::from(claimed & matches));
    }
    if bool::from(forged) {
        return Err(NodeError::Stats(
            "a pass token does not match this site's census: the census's answer was altered; nothing is shared".into(),
        ));
    }
    PassSet::from_flags(query, passing).map_err(stats_err)
}

async fn contribute(
    state: &Arc<NodeState>,
    caller: &str,
    request: ContributeRequest,
) -> Result<Metered<ContributeResponse>, NodeError> {
    let ContributeRequest { task_id, dataset, params, fhe_public_key, version, pass_tokens } = request;
    check_version(version)?;
    let census_grant = state.census.grant_of(&task_id);
    let (served, stage) =
        serve_checks(state, caller, &task_id, &dataset, &params, &fhe_public_key, census_grant.as_deref()).await?;
    let own = state.config.org.clone();
    let query = served.stats.query.clone();
    let kinds = fhe::extreme_kinds(&query);
    // After a census, what this site scanned then, and the pass set the
    // requester proves with the tokens; without one, a fresh scan and every
    // gate passes — allowed only where this site's grant sets no minimum
    // cohort.
    let (stats, pass, stage) = match state.census.take(&task_id)? {
        Some(census) => {
            if !matches!(stage, Stage::Continuing(_)) || census.grant != served.grant {
                return Err(NodeError::Stats("this site's census and the ledger disagree on the task's grant".into()));
            }
            let pass = verified_pass_set(&query, &census.tokens, &pass_tokens)?;
            (census.stats, pass, stage)
        }
        None if served.min_cohort > 1 => {
            return Err(NodeError::NotAuthorised {
                task: task_id,
                reason: format!(
                    "the grant sets a minimum cohort of {}: this site shares only after its census, and none was taken",
                    served.min_cohort
                ),
            });
        }
        None if !pass_tokens.is_empty() => {
            return Err(NodeError::Stats("pass tokens came without a census at this site".into()));
        }
        None => match stage {
            Stage::Fresh(session) => {
                let (session, stats) = scan_metered(session, &served).await?;
                (stats, PassSet::all(&query), Stage::Fresh(session))
            }
            Stage::Continuing(_) => {
                return Err(NodeError::Stats("this site holds no census of the task any more; run it again".into()));
            }
        },
    };
    tracing::info!(task = %task_id, dataset = %dataset, "computing a federated-statistics contribution");

    // Withhold what did not pass, then commit, prove and split on a
    // blocking thread; extremes travel only encrypted, to the coordinator.
    let names: Vec<String> = sites_names(&served.sites);
    let (task_for_proofs, own_for_proofs, task_stats, applied) =
        (task_id.clone(), own.clone(), served.stats.clone(), pass.clone());
    let permit = stage.worker_permit();
    let (names_for_split, kinds_for_encryption) = (names.clone(), kinds.clone());
    let built = tokio::task::spawn_blocking(move || {
        let (names, kinds) = (names_for_split, kinds_for_encryption);
        let _permit = permit;
        let mut stats = stats;
        let scan_query = &task_stats.query;
        // Noise first (on everything: a withheld entry is then zeroed), so
        // what is shared is the noisy vector of what passed.
        if let Some(noise) = &task_stats.noise {
            noise.add(&mut stats.additive, &mut OsRng).map_err(stats_err)?;
        }
        applied.apply(scan_query, &mut stats.additive, &mut stats.extrema).map_err(stats_err)?;
        let extremes = if kinds.is_empty() {
            Vec::new()
        } else {
            fhe::encrypt_extremes(&fhe_public_key, &kinds, &stats.extrema).map_err(stats_err)?
        };
        let ctx = ProofContext { task: &task_for_proofs, party: &own_for_proofs };
        let (contribution, blindings) =
            commit_and_prove(&ctx, &stats.additive, &task_stats.bounds(stats.rows_scanned)?, &mut OsRng)
                .map_err(stats_err)?;
        let parties = names.len();
        let value_shares = split(&stats.additive, parties, &mut OsRng).map_err(stats_err)?;
        let blinding_shares = split_scalars(&blindings.0, parties, &mut OsRng).map_err(stats_err)?;
        Ok::<_, NodeError>((contribution, stats.rows_scanned, value_shares, blinding_shares, extremes))
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))??;
    let (contribution, rows, value_shares, blinding_shares, fhe_extremes) = built;

    // Own share into the box; every other site's share to it directly,
    // each with the pass set applied.
    let pass_bytes = pass.to_bytes();
    let mut sends = Vec::new();
    for (i, (site, _)) in served.sites.iter().enumerate() {
        let (v, b) = (value_shares[i].to_bytes(), blinding_shares[i].to_bytes());
        if site == &own {
            state.shares.put(&task_id, &own, (v, b, pass_bytes.clone()))?;
            continue;
        }
        let (state, site, task_id, pass_set) = (state.clone(), site.clone(), task_id.clone(), pass_bytes.clone());
        sends.push(tokio::spawn(async move {
            let channel = crate::peers::connect_peer(&state, &site).await?;
            StatsPeerClient::new(channel)
                .share(ShareRequest {
                    task_id,
                    value_share: v.into(),
                    blinding_share: b.into(),
                    pass_set: pass_set.into(),
                })
                .await
                .map_err(|s| crate::wire::status_error(s, &site, "shares"))?;
            Ok::<_, NodeError>(())
        }));
    }
    for send in sends {
        send.await.map_err(|e| NodeError::Worker(e.to_string()))??;
    }
    let received = state.shares.take_all(&task_id, &names).await?;
    let len = vector_len(&query);
    let mut values = Aggregator::new(&names, len);
    let mut blinds = Aggregator::new(&names, len);
    for (from, (v, b, their_pass)) in received {
        // Every site must withhold the same gates: a requester that showed
        // sites different pass sets could read one site's cell alone.
        if their_pass != pass_bytes {
            return Err(NodeError::Stats(format!(
                "'{from}' applied another pass set than this site: the requester showed the sites different census answers; nothing is returned"
            )));
        }
        values.absorb(&from, Share::from_bytes(&v, len).map_err(stats_err)?).map_err(stats_err)?;
        blinds.absorb(&from, Share::from_bytes(&b, len).map_err(stats_err)?).map_err(stats_err)?;
    }
    let (value_sum, blinding_sum) = (values.finish().map_err(stats_err)?, blinds.finish().map_err(stats_err)?);
    // Nothing leaves before the use is on the ledger (after a census, it
    // was recorded then).
    let recorded = match stage {
        Stage::Fresh(session) => session.record(rows, served.stats.epsilon).await?,
        Stage::Continuing(recorded) => recorded,
    };
    if !kinds.is_empty() {
        deposit(state, &task_id, Deposit::Extremes(fhe_extremes)).await?;
    }
    tracing::info!(task = %task_id, "contribution sent");
    Ok(recorded.reply(ContributeResponse {
        contribution: contribution.to_bytes().into(),
        rows,
        value_sum: value_sum.to_bytes().into(),
        blinding_sum: blinding_sum.to_bytes().into(),
    }))
}

/// The coordinator's endpoint, dialled as the operator.
async fn coordinator(state: &NodeState) -> Result<(tonic::transport::Channel, String), NodeError> {
    let settings = state.config.ledger.as_ref().ok_or_else(no_ledger)?;
    let channel = crate::peers::connect(state, &settings.operator, &settings.endpoint).await?;
    Ok((channel, settings.operator.clone()))
}

/// What a site deposits with the coordinator.
enum Deposit {
    /// Its census list: gate counts, then tokens.
    Census(Vec<u8>),
    /// Its extremes of what passed.
    Extremes(Vec<u8>),
}

/// A site hands its encrypted census or extremes to the coordinator: the
/// requester holds the key that decrypts them, so they never go there.
async fn deposit(state: &NodeState, task_id: &str, what: Deposit) -> Result<(), NodeError> {
    use stayput_proto::v1::coordinator_client::CoordinatorClient;
    use stayput_proto::v1::{FheDeposit, FhePhase};
    let (channel, operator) = coordinator(state).await?;
    let message = match what {
        Deposit::Census(list) => FheDeposit {
            task_id: task_id.to_owned(),
            phase: FhePhase::Census as i32,
            census: list.into(),
            extremes: Default::default(),
        },
        Deposit::Extremes(list) => FheDeposit {
            task_id: task_id.to_owned(),
            phase: FhePhase::Extremes as i32,
            extremes: list.into(),
            census: Default::default(),
        },
    };
    CoordinatorClient::new(channel)
        .deposit(message)
        .await
        .map_err(|s| crate::wire::status_error(s, &operator, "deposit"))?;
    Ok(())
}

fn sites_names(sites: &[(String, String)]) -> Vec<String> {
    sites.iter().map(|(o, _)| o.clone()).collect()
}

/// What the requester's node keeps beside a statistics result so that it,
/// or an auditor it hands the file to, can re-check the result later
/// ([`verify_evidence`]): every site's commitments and proofs with its row
/// count, the pooled opening and which gates the sites withheld.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Evidence {
    /// The evidence format's version ([`EVIDENCE_VERSION`]).
    pub version: u32,
    /// The query, canonical JSON.
    pub query: String,
    /// ε of the task in milli-ε (0: no noise; the proofs' bounds are
    /// widened by the noise's tail).
    pub epsilon: u32,
    /// Per site: organisation, rows scanned, contribution (hex).
    pub sites: Vec<(String, u64, String)>,
    /// The pooled vector.
    pub pooled: Vec<String>,
    /// The pooled blindings (hex).
    pub blindings: Vec<String>,
    /// The pass set every site applied, one byte per gate (hex; 1 =
    /// shared, 0 = withheld: zero in every site's vector).
    pub pass_set: String,
}

/// Version 2 records the pass set; version 1 evidence (before the census)
/// is refused by [`verify_evidence`] with a clear message.
pub const EVIDENCE_VERSION: u32 = 2;

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
    if evidence.version != EVIDENCE_VERSION {
        return Err(NodeError::Stats(format!(
            "evidence of version {} cannot be checked: this node reads version {EVIDENCE_VERSION}",
            evidence.version
        )));
    }
    let recorded = on_ledger
        .results
        .last()
        .map(|r| r.intermediates.as_slice())
        .ok_or_else(|| NodeError::Stats(format!("task '{task}' has no result on the ledger yet")))?;
    let params = TaskParams::Stats(StatsParams { query: evidence.query.clone(), epsilon: evidence.epsilon }).encode();
    if params_digest(Computation::Stats, &params) != on_ledger.task.params_digest() {
        return Err(NodeError::Stats("the evidence's query or ε is not the one recorded with the task".into()));
    }
    let query = CohortQuery::from_json(&evidence.query).map_err(stats_err)?;
    let noise = (evidence.epsilon > 0)
        .then(|| stayput_mpc_engine::privacy::StatsNoise::new(&query, evidence.epsilon))
        .transpose()
        .map_err(stats_err)?;
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
        verify(&ProofContext { task, party: site }, &c, &bounds(&query, *rows, noise.as_ref())?)
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

/// The requester's node: takes the census where the grants set a minimum
/// cohort, collects, verifies and pools.
pub async fn run_stats(state: &Arc<NodeState>, task_id: &str, params: &[u8]) -> Result<StatsOutcome, NodeError> {
    let (task, task_stats) = stats_task(state, task_id, params).await?;
    let query = task_stats.query.clone();
    let sites = sites(state, &task).await?;
    let ledger = &state.ledger.as_ref().ok_or_else(no_ledger)?.ledger;
    let mut min_cohort = 0;
    for g in &task.task.grants {
        if let Some(grant) = ledger.grant(g).await.map_err(NodeError::from_ledger)? {
            min_cohort = min_cohort.max(grant.grant.min_cohort);
        }
    }
    // TFHE when the query has extremes or the grants set a minimum cohort:
    // fresh keys for this task only.
    let kinds = fhe::extreme_kinds(&query);
    let gated = min_cohort > 1;
    let keys = if !kinds.is_empty() || gated {
        let (keys, material) = tokio::task::spawn_blocking(fhe::RequesterKeys::generate)
            .await
            .map_err(|e| NodeError::Worker(e.to_string()))?
            .map_err(stats_err)?;
        Some((Arc::new(keys), material))
    } else {
        None
    };
    let public_key = keys.as_ref().map(|(_, m)| m.public_key.clone()).unwrap_or_default();
    let base = ContributeRequest {
        task_id: task_id.to_owned(),
        dataset: String::new(),
        params: params.to_vec().into(),
        fhe_public_key: public_key.clone().into(),
        version: PROTOCOL_VERSION,
        pass_tokens: Vec::new(),
    };
    let (pass, tokens) = match (&keys, gated) {
        (Some((keys, material)), true) => {
            take_census(state, task_id, params, &sites, &query, keys.clone(), material).await?
        }
        _ => (PassSet::all(&query), vec![Vec::new(); sites.len()]),
    };
    let mut calls = Vec::new();
    for ((site, dataset), pass_tokens) in sites.iter().zip(tokens) {
        let request = ContributeRequest { dataset: dataset.clone(), pass_tokens, ..base.clone() };
        let (state, site) = (state.clone(), site.clone());
        calls.push(tokio::spawn(async move {
            let channel = crate::peers::connect_peer(&state, &site).await?;
            let response = StatsPeerClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .contribute(request)
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
    let recorded = ledger.task(task_id).await.map_err(NodeError::from_ledger)?.map(|t| t.uses).unwrap_or_default();
    for (site, r) in &responses {
        if !recorded.iter().any(|(org, u)| org == site && u.items == r.rows) {
            return Err(NodeError::Stats(format!(
                "'{site}' reported a row count its use record on the ledger does not show; its contribution is refused"
            )));
        }
    }
    let len = vector_len(&query);
    let names = sites_names(&sites);
    let (verify_stats, verify_task, checked) = (task_stats.clone(), task_id.to_owned(), responses);
    let (pooled, blindings, contributions, rows) = tokio::task::spawn_blocking(move || {
        let mut values = Reconstruction::new(&names, len);
        let mut blinds = Reconstruction::new(&names, len);
        let mut contributions = Vec::new();
        for (site, r) in &checked {
            let c = Contribution::from_bytes(&r.contribution).map_err(stats_err)?;
            verify(&ProofContext { task: &verify_task, party: site }, &c, &verify_stats.bounds(r.rows)?)
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

    let mut extrema = vec![None; kinds.len()];
    if let (Some((keys, material)), false) = (keys, kinds.is_empty()) {
        let downloads = post_process(state, task_id, &material, Phase::Extremes, kinds.len()).await?;
        let kinds = kinds.clone();
        extrema = tokio::task::spawn_blocking(move || keys.decrypt_extremes(&downloads, &kinds).map_err(stats_err))
            .await
            .map_err(|e| NodeError::Worker(e.to_string()))??;
    }
    let withheld = pass.withheld(&query);
    let results = finish(&query, &pooled, &extrema).map_err(stats_err)?;
    let cohort = results.iter().map(|g| g.count).sum();
    let evidence = Evidence {
        version: EVIDENCE_VERSION,
        query: query.to_canonical_json(),
        epsilon: task_stats.epsilon,
        sites: sites
            .iter()
            .zip(&contributions)
            .zip(&rows)
            .map(|(((site, _), c), rows)| (site.clone(), *rows, hex::encode(c.to_bytes())))
            .collect(),
        pooled: pooled.iter().map(ToString::to_string).collect(),
        blindings: blindings.iter().map(|b| hex::encode(b.to_bytes())).collect(),
        pass_set: hex::encode(pass.to_bytes()),
    };
    Ok(StatsOutcome {
        table: render(&results, u64::from(min_cohort), &withheld),
        cohort,
        digests: contributions.iter().map(Contribution::digest).collect(),
        evidence,
    })
}

/// The census, from the requester's side: every site scans and deposits
/// its encrypted gate counts and tokens with the coordinator; the
/// coordinator answers with each site's token where a gate passes; this
/// node decrypts which gates pass, and the tokens that let each site check
/// it. Returns the pass set and, per site, the tokens to show it.
async fn take_census(
    state: &Arc<NodeState>,
    task_id: &str,
    params: &[u8],
    sites: &[(String, String)],
    query: &CohortQuery,
    keys: Arc<fhe::RequesterKeys>,
    material: &fhe::PublicMaterial,
) -> Result<(PassSet, Vec<Vec<u32>>), NodeError> {
    let gate_count = gates::gates(query).len();
    if gate_count > gates::MAX_GATES {
        return Err(NodeError::Stats(format!(
            "the query has {gate_count} gates (groups, measures and histogram bins) and the grants set a minimum cohort; at most {} can be checked — fewer groups, measures or bins",
            gates::MAX_GATES
        )));
    }
    let mut calls = Vec::new();
    for (site, dataset) in sites {
        let request = CensusRequest {
            version: PROTOCOL_VERSION,
            task_id: task_id.to_owned(),
            dataset: dataset.clone(),
            params: params.to_vec().into(),
            fhe_public_key: material.public_key.clone().into(),
        };
        let (state, site) = (state.clone(), site.clone());
        calls.push(tokio::spawn(async move {
            let channel = crate::peers::connect_peer(&state, &site).await?;
            StatsPeerClient::new(channel)
                .census(request)
                .await
                .map_err(|s| crate::wire::status_error(s, &site, "census"))?;
            Ok::<_, NodeError>(())
        }));
    }
    for call in calls {
        call.await.map_err(|e| NodeError::Worker(e.to_string()))??;
    }
    let downloads = post_process(state, task_id, material, Phase::Census, sites.len() * gate_count).await?;
    let per_site: Vec<Vec<Option<u32>>> = tokio::task::spawn_blocking(move || {
        downloads
            .chunks(gate_count)
            .map(|site| keys.decrypt_tokens(site).map_err(stats_err))
            .collect::<Result<Vec<_>, NodeError>>()
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))??;
    // A gate passes when every site's token came back (the evaluator
    // answers all sites alike; anything else withholds the gate).
    let flags: Vec<bool> = (0..gate_count).map(|g| per_site.iter().all(|site| site[g].is_some())).collect();
    let tokens = per_site
        .iter()
        .map(|site| site.iter().zip(&flags).map(|(t, pass)| if *pass { t.unwrap_or(0) } else { 0 }).collect())
        .collect();
    let pass = PassSet::from_flags(query, flags).map_err(stats_err)?;
    tracing::info!(task = %task_id, gates = gate_count, withheld = pass.withheld(query).len(), "census answered");
    Ok((pass, tokens))
}

/// Bytes of the server key per upload message.
const KEY_CHUNK: usize = 1 << 20;
/// How long the coordinator may take over one homomorphic evaluation.
const EVALUATION_TIMEOUT: Duration = Duration::from_secs(600);

/// A phase of post-processing at the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Census,
    Extremes,
}

/// Sends the server key to the coordinator, which evaluates the sites'
/// deposits of `phase`, and collects the `expected` results (still
/// encrypted).
async fn post_process(
    state: &NodeState,
    task_id: &str,
    material: &fhe::PublicMaterial,
    phase: Phase,
    expected: usize,
) -> Result<Vec<Vec<u8>>, NodeError> {
    use stayput_proto::v1::coordinator_client::CoordinatorClient;
    use stayput_proto::v1::{FheOpen, FhePhase, FheUpload, fhe_download, fhe_upload};
    let (channel, operator) = coordinator(state).await?;
    let wire_phase = match phase {
        Phase::Census => FhePhase::Census,
        Phase::Extremes => FhePhase::Extremes,
    };
    let mut uploads = vec![FheUpload {
        part: Some(fhe_upload::Part::Open(FheOpen {
            task_id: task_id.to_owned(),
            server_key_len: material.server_key.len() as u64,
            phase: wire_phase as i32,
        })),
    }];
    uploads.extend(
        material
            .server_key
            .chunks(KEY_CHUNK)
            .map(|chunk| FheUpload { part: Some(fhe_upload::Part::ServerKeyChunk(chunk.to_vec().into())) }),
    );
    tracing::info!(task = %task_id, phase = ?phase, "homomorphic post-processing at the coordinator");
    let evaluation = async {
        let mut stream = CoordinatorClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .evaluate(tokio_stream::iter(uploads))
            .await
            .map_err(|s| crate::wire::status_error(s, &operator, "post-processing"))?
            .into_inner();
        let mut got = Vec::new();
        while let Some(message) =
            stream.message().await.map_err(|s| crate::wire::status_error(s, &operator, "post-processing"))?
        {
            match (message.value, phase) {
                (Some(fhe_download::Value::Extreme(b)), Phase::Extremes)
                | (Some(fhe_download::Value::Token(b)), Phase::Census)
                    if got.len() < expected =>
                {
                    got.push(b.to_vec());
                }
                _ => return Err(NodeError::Stats("the evaluator returned more or other values than asked".into())),
            }
        }
        if got.len() != expected {
            return Err(NodeError::Stats("the evaluator returned fewer values than asked".into()));
        }
        Ok(got)
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

/// The results as CSV: group, measure, statistic, n, value. A group,
/// measure or histogram bin the sites withheld reads `suppressed`, and so
/// does a statistic over fewer rows than the minimum cohort.
pub fn render(results: &[GroupResult], min_cohort: u64, withheld: &[Gate]) -> String {
    let mut out = String::from("group,measure,statistic,n,value\n");
    let held = |group: usize, guard: Guard| withheld.iter().any(|g| g.group == group && g.guard == guard);
    for (index, g) in results.iter().enumerate() {
        let group = g.group.clone().unwrap_or_else(|| "all".into());
        if held(index, Guard::Group) {
            let _ = writeln!(out, "{group},count,count,,suppressed");
            continue;
        }
        for (measure, m) in g.measures.iter().enumerate() {
            let label = format!("\"{}\"", m.label.replace('"', "'"));
            let hidden = held(index, Guard::Measure(measure));
            match &m.value {
                Value::Count(n) => {
                    let _ = writeln!(out, "{group},{label},count,{n},{n}");
                }
                Value::Number { n, value } => {
                    // A suppressed statistic shows neither its value nor its n.
                    let (n, v) = if hidden || suppressed(*n, min_cohort) {
                        (String::new(), "suppressed".to_owned())
                    } else {
                        (n.to_string(), value.map_or_else(|| "undefined".to_owned(), |v| format!("{v}")))
                    };
                    let _ = writeln!(out, "{group},{label},value,{n},{v}");
                }
                Value::Histogram(bins) => {
                    for (at, (bin, n)) in bins.iter().enumerate() {
                        let hide = held(index, Guard::Bin { measure, bin: at });
                        let v = if hide { "suppressed".to_owned() } else { n.to_string() };
                        let _ = writeln!(out, "{group},{label},\"{bin}\",,{v}");
                    }
                }
                Value::Regression { n, coefficients, r_squared } => {
                    if hidden || suppressed(*n, min_cohort) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const QUERY: &str = r#"
precision = 1
ranges = { age = [0, 120], bp = [40, 260] }
[[measures]]
kind = "count"
[[measures]]
kind = "mean"
column = "bp"
[[measures]]
kind = "histogram"
column = "age"
edges = [18, 65]
"#;

    #[test]
    fn a_gate_passes_only_with_its_exact_token() {
        let query = CohortQuery::from_toml(QUERY).unwrap();
        let tokens = [0x1111_1111, 0x2222_2222, 7, 8, 9];
        // Shown tokens pass their gates, zeros withhold theirs.
        let pass = verified_pass_set(&query, &tokens, &[0x1111_1111, 0, 7, 0, 9]).unwrap();
        assert_eq!(pass.flags(), &[true, false, true, false, true]);
        // A wrong token anywhere refuses the whole contribution.
        let err = verified_pass_set(&query, &tokens, &[0x1111_1111, 0x2222_2223, 7, 8, 9]).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        // So does a list of the wrong length.
        assert!(verified_pass_set(&query, &tokens, &[1, 2]).is_err());
        assert!(verified_pass_set(&query, &tokens[..2], &[0, 0]).is_err());
    }

    #[test]
    fn withheld_gates_render_as_suppressed() {
        let query = CohortQuery::from_toml(QUERY).unwrap();
        let pooled = vec![40, 40, 4800, 10, 28, 2];
        let results = finish(&query, &pooled, &[]).unwrap();
        let pass = PassSet::from_flags(&query, vec![true, false, true, true, false]).unwrap();
        let table = render(&results, 5, &pass.withheld(&query));
        assert!(table.contains("all,\"mean(bp)\",value,,suppressed"), "{table}");
        assert!(table.contains(",28\n") && table.lines().filter(|l| l.ends_with("suppressed")).count() == 2, "{table}");
        let all = PassSet::from_flags(&query, vec![false; 5]).unwrap();
        assert_eq!(
            render(&results, 5, &all.withheld(&query)),
            "group,measure,statistic,n,value\nall,count,count,,suppressed\n"
        );
    }

    #[test]
    fn census_states_expire_so_the_box_stays_usable() {
        let census = CensusBox::default();
        census.reserve("t-1").unwrap();
        assert!(census.reserve("t-1").is_err(), "one census per task");
        census.release("t-1");
        census.reserve("t-1").unwrap();
        // A full box of used tasks from long ago makes way for new ones.
        let long_ago = std::time::Instant::now().checked_sub(PARKED_FOR + Duration::from_secs(1)).unwrap();
        {
            let mut tasks = census.tasks.lock().unwrap();
            for i in 0..MAX_WAITING_TASKS {
                tasks.insert(format!("t-old-{i}"), (long_ago, None));
            }
        }
        census.reserve("t-2").unwrap();
        assert_eq!(census.tasks.lock().unwrap().len(), 2);
        assert!(census.take("t-2").is_err(), "a census still running is not taken");
        assert!(census.take("t-3").unwrap().is_none());
    }

    #[test]
    fn only_this_protocol_version_is_served() {
        assert!(check_version(PROTOCOL_VERSION).is_ok());
        let err = check_version(1).unwrap_err();
        assert!(err.to_string().contains("version 1 is not supported"), "{err}");
    }
}
