//! Admission: everything checked before a task is recorded, so that bad
//! input costs nothing — no task record, no use consumed.
//!
//! In order: the caller's certificate names the requester; the request's
//! signature verifies against the requester's key on the ledger; its issue
//! time is within the window; the requester holds the `requester` role;
//! the kind is one this coordinator runs; the parameters decode for the
//! kind and agree with the datasets named; every dataset is on the ledger;
//! the receiver is a participant who can receive this kind's result; and
//! for every dataset the requester does not own, a grant to the requester
//! that is live, allows the kind and the columns, and has uses left.
//! (Nodes check the ledger again themselves before they serve: admission
//! is for clear early errors, not for security.)

use std::collections::BTreeSet;

use stayput_chain_connector::Ledger;
use stayput_chain_connector::ledger::GrantFilter;
use stayput_chain_connector::records::{Computation, DatasetVersion, Role, Task};
use stayput_chain_connector::rules::GrantState;
use stayput_chain_connector::tasks::{PsiProtocol, REQUEST_WINDOW_SECS, SignedTaskRequest, TaskParams, TaskRequest};

use crate::CoordinatorError;

/// A request that passed admission.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The task record to write.
    pub task: Task,
    /// The decoded parameters.
    pub params: TaskParams,
}

/// Why one grant does not serve the task (the best reason is reported).
fn grant_problem(
    g: &GrantState,
    kind: Computation,
    columns: &[String],
    epsilon: u32,
    now: u64,
) -> Option<CoordinatorError> {
    let id = &g.grant.id;
    let problem = |reason: String| {
        Some(CoordinatorError::NoGrant { requester: g.grant.grantee.clone(), dataset: g.grant.dataset.clone(), reason })
    };
    if g.revoked {
        return problem(format!("grant '{id}' is revoked"));
    }
    if now >= g.grant.expires_at {
        return problem(format!("grant '{id}' expired at {} (unix seconds)", g.grant.expires_at));
    }
    if !g.grant.computations.contains(&kind) {
        let allowed: Vec<&str> = g.grant.computations.iter().map(|c| c.name()).collect();
        return problem(format!("grant '{id}' allows {} but not {kind}", allowed.join(", ")));
    }
    if g.uses >= g.grant.max_uses {
        return problem(format!("grant '{id}' has used all of its {} uses", g.grant.max_uses));
    }
    // A grant naming no columns allows the dataset's key columns only, which
    // the owner's node knows; statistics read other columns, so they need a
    // grant that names them.
    if matches!(kind, Computation::Stats | Computation::ComputeOnly | Computation::Train | Computation::Predict)
        && g.grant.columns.is_empty()
    {
        return problem(format!("grant '{id}' names no columns; a {kind} task needs a grant that names them"));
    }
    if matches!(kind, Computation::ComputeOnly | Computation::Stats) {
        let budget = stayput_mpc_engine::privacy::Budget { total: g.grant.epsilon_budget, spent: g.epsilon_spent };
        if let Err(e) = budget.admit(epsilon) {
            return problem(format!("grant '{id}': {e}"));
        }
    }
    if let Some(column) = columns.iter().find(|c| !g.grant.columns.is_empty() && !g.grant.columns.contains(c)) {
        return Some(CoordinatorError::ColumnNotAllowed {
            grant: id.clone(),
            column: column.clone(),
            allowed: g.grant.columns.join(", "),
        });
    }
    None
}

/// Most bureaus one blacklist query asks.
pub const MAX_BUREAUS: usize = 16;

/// Most cells (group sizes and histogram bins) a statistics task may have.
pub const MAX_GATES: usize = 256;
/// Most min/max values a statistics task may have.
pub const MAX_EXTREMES: usize = 64;

/// Refuses a lookup on a dataset version that is not a lookup table, or
/// one published before sealed records (the owner's node decodes the same
/// bytes before it serves one).
fn check_lookup_table(version: &DatasetVersion) -> Result<(), CoordinatorError> {
    let refuse = |why: String| {
        CoordinatorError::BadRequest(format!(
            "private lookup: dataset '{}' v{}: {why}",
            version.dataset, version.version
        ))
    };
    let key = version
        .protocol_key
        .as_deref()
        .ok_or_else(|| refuse("it is not published for private lookup (its version carries no PIR layout)".into()))?;
    stayput_pir::Published::from_bytes(key).map(|_| ()).map_err(|e| refuse(e.to_string()))
}

/// A query parsed and checked for shape (columns against a dataset's
/// schema are checked by its owner's node), with the columns it reads.
fn shaped_query(query: &str) -> Result<(stayput_mpc_engine::query::CohortQuery, Vec<String>), CoordinatorError> {
    let query = stayput_mpc_engine::query::CohortQuery::from_json(query)
        .map_err(|e| CoordinatorError::BadRequest(e.to_string()))?;
    let columns = query.columns();
    let schema: Vec<&str> = columns.iter().map(String::as_str).collect();
    query.validate(&schema, &[]).map_err(|e| CoordinatorError::BadRequest(e.to_string()))?;
    Ok((query, columns))
}

/// The columns a federated-statistics query reads, after checking its shape
/// (columns against each site's schema are checked by the sites).
fn stats_columns(query: &str, datasets: &[String], epsilon: u32) -> Result<Vec<String>, CoordinatorError> {
    let (query, columns) = shaped_query(query)?;
    if epsilon > 0 {
        if !stayput_mpc_engine::fhe::extreme_kinds(&query).is_empty() {
            return Err(CoordinatorError::BadRequest(
                "min and max cannot be released with differential privacy; ask without them, or with ε = 0 under a grant without a budget".into(),
            ));
        }
        stayput_mpc_engine::privacy::StatsNoise::new(&query, epsilon)
            .map_err(|e| CoordinatorError::BadRequest(e.to_string()))?;
    }
    // Every gate and extreme costs seconds of TFHE at the coordinator.
    let (gates, extremes) =
        (stayput_mpc_engine::gates::gates(&query).len(), stayput_mpc_engine::fhe::extreme_kinds(&query).len());
    if gates > MAX_GATES || extremes > MAX_EXTREMES {
        return Err(CoordinatorError::BadRequest(format!(
            "the query has {gates} gates (groups, measures and histogram bins) and {extremes} min/max values; homomorphic post-processing takes at most {MAX_GATES} and {MAX_EXTREMES} (about 1.5 s each per site). Use fewer groups, measures or bins"
        )));
    }
    if datasets.len() < 2 {
        return Err(CoordinatorError::BadRequest("federated statistics need at least two sites' datasets".into()));
    }
    Ok(columns)
}

/// The columns a compute-only query reads, after checking its shape and
/// that it asks for aggregates only.
fn compute_only_columns(query: &str, epsilon: u32) -> Result<Vec<String>, CoordinatorError> {
    let (query, columns) = shaped_query(query)?;
    stayput_mpc_engine::release::check_compute_only(&query, epsilon > 0)
        .map_err(|e| CoordinatorError::BadRequest(e.to_string()))?;
    Ok(columns)
}

/// Checks a signed request from `caller` at time `now` against `ledger`.
pub async fn admit(
    ledger: &dyn Ledger,
    signed: &SignedTaskRequest,
    caller: &str,
    now: u64,
) -> Result<Admitted, CoordinatorError> {
    let request = &signed.request;
    if caller != request.requester {
        return Err(CoordinatorError::NotRequester { caller: caller.into(), requester: request.requester.clone() });
    }
    let member = ledger.member(&request.requester).await?.ok_or_else(|| {
        CoordinatorError::BadRequest(format!("'{}' is not a member of the consortium", request.requester))
    })?;
    signed.verify(&member.signing_key)?;
    let ledger_id = ledger.identity().await?;
    if request.ledger != ledger_id {
        return Err(CoordinatorError::BadRequest(format!(
            "the request was signed for ledger {}, not this consortium's ledger ({ledger_id}); sign it again with a node configuration of this consortium",
            request.ledger
        )));
    }
    if request.issued_at.abs_diff(now) > REQUEST_WINDOW_SECS {
        return Err(CoordinatorError::Stale { issued_at: request.issued_at, now, window: REQUEST_WINDOW_SECS });
    }
    if !member.roles.contains(&Role::Requester) {
        return Err(CoordinatorError::BadRequest(format!("'{}' lacks the requester role", request.requester)));
    }
    if !matches!(
        request.kind,
        Computation::Psi
            | Computation::PsiCardinality
            | Computation::Stats
            | Computation::Blacklist
            | Computation::ComputeOnly
            | Computation::Lookup
            | Computation::Train
            | Computation::Predict
    ) {
        return Err(CoordinatorError::Unsupported { kind: request.kind.to_string() });
    }
    let params = TaskParams::decode(request.kind, &request.params)
        .map_err(|e| CoordinatorError::BadRequest(format!("parameters: {e}")))?;
    let columns = match &params {
        TaskParams::Psi(p) => {
            if request.datasets != [p.peer_dataset.clone()] {
                return Err(CoordinatorError::BadRequest(format!(
                    "a psi task reads exactly the peer's dataset '{}'; the request names {:?}",
                    p.peer_dataset, request.datasets
                )));
            }
            if p.columns.is_empty() {
                return Err(CoordinatorError::BadRequest("a psi task must name the key columns it matches on".into()));
            }
            if request.kind == Computation::PsiCardinality && p.protocol != PsiProtocol::Ecdh {
                return Err(CoordinatorError::BadRequest(format!(
                    "a cardinality-only task needs the ecdh protocol; {} reveals which keys matched",
                    p.protocol.name()
                )));
            }
            p.columns.clone()
        }
        TaskParams::Stats(p) => stats_columns(&p.query, &request.datasets, p.epsilon)?,
        TaskParams::Blacklist(p) => {
            let distinct: BTreeSet<&String> = p.bureau_datasets.iter().collect();
            if p.bureau_datasets.is_empty()
                || p.bureau_datasets.len() > MAX_BUREAUS
                || distinct.len() != p.bureau_datasets.len()
                || request.datasets != p.bureau_datasets
            {
                return Err(CoordinatorError::BadRequest(format!(
                    "a blacklist query names 1 to {MAX_BUREAUS} distinct bureau datasets, the same as the task's datasets"
                )));
            }
            for d in &p.bureau_datasets {
                let versions = ledger.dataset(d).await?;
                let latest = versions.last().ok_or_else(|| CoordinatorError::UnknownDataset { dataset: d.clone() })?;
                if latest.protocol_key.is_none() {
                    return Err(CoordinatorError::BadRequest(format!(
                        "dataset '{d}' is not published as a blacklist (its version carries no OPRF key)"
                    )));
                }
            }
            Vec::new()
        }
        TaskParams::ComputeOnly(p) => {
            if request.datasets != [p.dataset.clone()] {
                return Err(CoordinatorError::BadRequest(format!(
                    "a compute_only task reads exactly dataset '{}'; the request names {:?}",
                    p.dataset, request.datasets
                )));
            }
            compute_only_columns(&p.query, p.epsilon)?
        }
        TaskParams::Lookup(p) => {
            if request.datasets != [p.dataset.clone()] {
                return Err(CoordinatorError::BadRequest(format!(
                    "a lookup task reads exactly dataset '{}'; the request names {:?}",
                    p.dataset, request.datasets
                )));
            }
            let versions = ledger.dataset(&p.dataset).await?;
            let latest =
                versions.last().ok_or_else(|| CoordinatorError::UnknownDataset { dataset: p.dataset.clone() })?;
            check_lookup_table(latest)?;
            Vec::new()
        }
        TaskParams::Train(p) => {
            one_dataset(request, &p.peer_dataset)?;
            // Each party's columns are its own: the same name on both sides
            // is two columns.
            let distinct = |columns: &[String]| columns.iter().collect::<BTreeSet<_>>().len() == columns.len();
            if p.peer_features.is_empty()
                || !distinct(&p.peer_features)
                || !distinct(&p.features)
                || p.features.contains(&p.label)
            {
                return Err(CoordinatorError::BadRequest(
                    "a train task names at least one peer feature, no feature of a party twice, and a label that is not a feature"
                        .into(),
                ));
            }
            p.peer_features.clone()
        }
        TaskParams::Predict(p) => {
            one_dataset(request, &p.peer_dataset)?;
            let model = ledger.task(&p.model_task).await?.ok_or_else(|| {
                CoordinatorError::BadRequest(format!("model task '{}' is not on the ledger", p.model_task))
            })?;
            let trained = match TaskParams::decode(model.task.kind(), &model.task.request.request.params) {
                Ok(TaskParams::Train(t)) => t,
                _ => {
                    return Err(CoordinatorError::BadRequest(format!(
                        "task '{}' is not a training task",
                        p.model_task
                    )));
                }
            };
            if model.task.requester() != request.requester || model.result().is_none() {
                return Err(CoordinatorError::BadRequest(format!(
                    "task '{}' is not a finished training of '{}'; predict with a model you trained",
                    p.model_task, request.requester
                )));
            }
            trained.peer_features
        }
        _ => return Err(CoordinatorError::Unsupported { kind: request.kind.to_string() }),
    };
    let epsilon = match &params {
        TaskParams::ComputeOnly(p) => p.epsilon,
        TaskParams::Stats(p) => p.epsilon,
        _ => 0,
    };

    let mut owners = BTreeSet::new();
    let mut grants = Vec::new();
    for dataset in &request.datasets {
        let owner = ledger
            .dataset(dataset)
            .await?
            .last()
            .map(|v| v.owner.clone())
            .ok_or_else(|| CoordinatorError::UnknownDataset { dataset: dataset.clone() })?;
        owners.insert(owner.clone());
        if owner == request.requester {
            continue;
        }
        let filter = GrantFilter { dataset: Some(dataset.clone()), grantee: Some(request.requester.clone()) };
        let candidates = ledger.grants(&filter).await?;
        let mut best = None;
        let mut chosen = None;
        for g in &candidates {
            match grant_problem(g, request.kind, &columns, epsilon, now) {
                None => {
                    chosen = Some(g.grant.id.clone());
                    break;
                }
                // A column refusal is the most specific reason to report.
                Some(e @ CoordinatorError::ColumnNotAllowed { .. }) => best = Some(e),
                Some(e) => best = best.or(Some(e)),
            }
        }
        match chosen {
            Some(id) => grants.push(id),
            None => {
                return Err(best.unwrap_or_else(|| CoordinatorError::NoGrant {
                    requester: request.requester.clone(),
                    dataset: dataset.clone(),
                    reason: format!("'{owner}' has granted none"),
                }));
            }
        }
    }

    let receiver_problem =
        |reason: String| CoordinatorError::BadReceiver { receiver: request.receiver.clone(), reason };
    if request.receiver != request.requester && !owners.contains(&request.receiver) {
        let mut participants: Vec<&str> = owners.iter().map(String::as_str).collect();
        participants.push(&request.requester);
        return Err(receiver_problem(format!("not a participant (participants: {})", participants.join(", "))));
    }
    if request.receiver != request.requester {
        return Err(receiver_problem(format!(
            "a {} task delivers its result to the requester's node only",
            request.kind
        )));
    }
    if matches!(params, TaskParams::Stats(_)) && owners.len() != request.datasets.len() {
        return Err(CoordinatorError::BadRequest(
            "federated statistics read one dataset per site, from at least two different owners".into(),
        ));
    }

    let task = Task::new(signed.clone(), grants);
    Ok(Admitted { task, params })
}

/// A task that reads exactly one peer dataset.
fn one_dataset(request: &TaskRequest, dataset: &str) -> Result<(), CoordinatorError> {
    if request.datasets != [dataset] {
        return Err(CoordinatorError::BadRequest(format!(
            "a {} task reads exactly the peer's dataset '{dataset}'; the request names {:?}",
            request.kind, request.datasets
        )));
    }
    Ok(())
}
