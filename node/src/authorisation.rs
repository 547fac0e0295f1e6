//! A data owner's node decides for itself whether to serve (brief,
//! invariant 6): it reads the ledger, never the coordinator's word.
//!
//! To serve task `t` to peer `p` on dataset `d` in mode `m`, the ledger must
//! show: task `t` exists, was requested by `p`, is submitted or running,
//! reads `d`, and is of a kind that allows `m`; and among the task's grants
//! one on `d` to `p` for that kind, not revoked, whose allowed columns
//! (when it names any) include every key column the session matches on,
//! and that this node has not served for the task already. Expiry is
//! judged by the ledger's clock when the use is written; a reply that
//! writes no use (a sealed set, a hint) is stopped by revocation. The node then writes the use
//! record —
//! signed with its organisation's key, counting the items it will serve —
//! and serves only if the ledger accepts it: the ledger consumes the use
//! atomically and refuses a grant that is exhausted, expired or revoked, so
//! two sessions can never both take the last use. A task is served once per
//! grant: a second identical use record would be a replay, which the ledger
//! refuses.
//!
//! **Failures that depend on the data are answers too.** A query can fail
//! because of what the rows hold (a value outside the declared range, text
//! in a numeric column, a sum that overflows); whether it fails tells the
//! requester something about the rows, so such a failure is metered like a
//! result — the use record first — and said in words from
//! [`data_dependent`], which name the column and never a value, a row or a
//! count.

use stayput_chain_connector::Ledger;
use stayput_chain_connector::records::{Computation, OrgKey, Record, SignedRecord, TaskStatus, UseRecord};
use stayput_psi::ecdh::OutputMode;

use crate::NodeError;

/// What a session asks to be served.
#[derive(Debug, Clone)]
pub struct ServeRequest<'a> {
    /// The task id the peer gave.
    pub task: &'a str,
    /// The peer's organisation (from its TLS certificate).
    pub peer: &'a str,
    /// This node's dataset.
    pub dataset: &'a str,
    /// The computations that may serve it (see [`kinds_for`]).
    pub kinds: &'a [Computation],
    /// Items the session will serve (keys the peer queries).
    pub items: u64,
    /// The columns of this node's dataset the session reads.
    pub columns: &'a [String],
    /// The dataset's key columns: what a grant naming no columns allows.
    pub key_columns: &'a [String],
    /// The shard this node serves of a task run as shards: it records its
    /// own use, and has served the task once it recorded that shard's.
    pub shard: Option<u32>,
}

/// The computation kinds under which a PSI output mode may run.
pub fn kinds_for(mode: OutputMode) -> &'static [Computation] {
    match mode {
        OutputMode::CardinalityOnly => &[Computation::Psi, Computation::PsiCardinality],
        _ => &[Computation::Psi],
    }
}

fn ledger_error(task: &str) -> impl Fn(stayput_chain_connector::LedgerError) -> NodeError + '_ {
    move |e| match NodeError::from_ledger(e) {
        NodeError::LedgerRefused(reason) => NodeError::NotAuthorised { task: task.to_owned(), reason },
        unavailable => unavailable,
    }
}

/// Writes the use record for items the peer itself asked for (ids, keys:
/// it knows their number); the ledger refuses it atomically when the grant
/// is exhausted, expired or revoked, and its reason is passed on.
pub async fn record_use(
    ledger: &dyn Ledger,
    own_org: &str,
    own_key: &OrgKey,
    task: &str,
    grant: &str,
    (items, shard): (u64, Option<u32>),
) -> Result<(), NodeError> {
    submit_use(
        ledger,
        own_org,
        own_key,
        UseRecord { task: task.to_owned(), grant: grant.to_owned(), items, epsilon: 0, shard },
    )
    .await
    .map_err(ledger_error(task))
}

/// Writes a use record whose items depend on the data — rows scanned,
/// records a lookup could disclose — and that spends `epsilon` milli-ε of
/// the grant's privacy budget. The ledger refuses it atomically when it
/// does not fit; its reason names the items, so the owner keeps it in its
/// own log and the peer is told which grant refused and why in words (the
/// grant's state is on the ledger).
pub async fn record_use_spending(
    ledger: &dyn Ledger,
    own_org: &str,
    own_key: &OrgKey,
    task: &str,
    grant: &str,
    items: u64,
    epsilon: u32,
) -> Result<(), NodeError> {
    let record = UseRecord { task: task.to_owned(), grant: grant.to_owned(), items, epsilon, shard: None };
    submit_use(ledger, own_org, own_key, record).await.map_err(|e| match NodeError::from_ledger(e) {
        NodeError::LedgerRefused(reason) => {
            tracing::warn!(task = %task, grant = %grant, reason = %reason, "the ledger refused this node's use record");
            NodeError::NotAuthorised {
                task: task.to_owned(),
                reason: format!(
                    "the ledger refused this node's use record under grant '{grant}': the grant's limits (uses, items, ε), its expiry or its revocation do not cover this task; nothing was served (the grant's state is on the ledger)"
                ),
            }
        }
        unavailable => unavailable,
    })
}

/// Records, as this organisation, the digest of the result it received as
/// the peer of a task delivering to both (its salted commitment); the
/// ledger lets only the receiver itself write it, once.
pub async fn record_own_result(
    ledger: &dyn Ledger,
    own_org: &str,
    own_key: &OrgKey,
    task: &str,
    result_digest: [u8; 32],
) -> Result<(), NodeError> {
    let record = stayput_chain_connector::records::ResultRecord {
        task: task.to_owned(),
        result_digest,
        receiver: own_org.to_owned(),
        intermediates: vec![],
    };
    let submitted = async {
        let id = ledger.identity().await?;
        ledger.submit(SignedRecord::sign(Record::Result(record), own_org, own_key, &id)).await.map(|_| ())
    };
    submitted.await.map_err(ledger_error(task))
}

async fn submit_use(
    ledger: &dyn Ledger,
    own_org: &str,
    own_key: &OrgKey,
    record: UseRecord,
) -> Result<(), stayput_chain_connector::LedgerError> {
    let id = ledger.identity().await?;
    ledger.submit(SignedRecord::sign(Record::Use(record), own_org, own_key, &id)).await.map(|_| ())
}

/// Refuses, before any work, a task that asks more `unit` than `grant`
/// allows per task (the ledger judges the per-task and total limits again
/// when the use is written).
pub async fn check_items_per_use(
    ledger: &dyn Ledger,
    task: &str,
    grant: &str,
    items: u64,
    unit: &str,
) -> Result<(), NodeError> {
    let per_use = ledger.grant(grant).await.map_err(ledger_error(task))?.map_or(0, |g| g.grant.max_items_per_use);
    if items > per_use {
        return Err(NodeError::NotAuthorised {
            task: task.to_owned(),
            reason: format!("{items} {unit} asked; grant '{grant}' allows at most {per_use} {unit} per task"),
        });
    }
    Ok(())
}

/// The ledger check alone: returns the grant that covers the request, for
/// a task this node has not served yet.
pub async fn check(ledger: &dyn Ledger, own_org: &str, request: &ServeRequest<'_>) -> Result<String, NodeError> {
    let (grant, served) = covering_grant(ledger, own_org, request).await?;
    if served {
        return Err(NodeError::NotAuthorised {
            task: request.task.to_owned(),
            reason: format!("this node has served it under grant '{grant}' already; a task is served once"),
        });
    }
    Ok(grant)
}

/// The ledger check for the second round of a task whose use this node
/// recorded in its first round (a statistics census, then the
/// contribution): the task and its grant must still hold, and the use must
/// be on the ledger under `grant`.
pub async fn check_continuing(
    ledger: &dyn Ledger,
    own_org: &str,
    request: &ServeRequest<'_>,
    grant: &str,
) -> Result<(), NodeError> {
    let (covering, served) = covering_grant(ledger, own_org, request).await?;
    if covering != grant || !served {
        return Err(NodeError::NotAuthorised {
            task: request.task.to_owned(),
            reason: "this node's first round of the task is not on the ledger under the grant it used".into(),
        });
    }
    Ok(())
}

/// The grant under which this node recorded its use of the task: what a
/// resumed session continues under (nothing more is recorded).
pub async fn served_grant(ledger: &dyn Ledger, own_org: &str, request: &ServeRequest<'_>) -> Result<String, NodeError> {
    let (grant, served) = covering_grant(ledger, own_org, request).await?;
    if !served {
        return Err(NodeError::NotAuthorised {
            task: request.task.to_owned(),
            reason: "it asks to resume a session this node never served; start it afresh".into(),
        });
    }
    Ok(grant)
}

/// The grant that covers the request, and whether this node has recorded a
/// use of the task under it already.
async fn covering_grant(
    ledger: &dyn Ledger,
    own_org: &str,
    request: &ServeRequest<'_>,
) -> Result<(String, bool), NodeError> {
    let refuse = |reason: String| NodeError::NotAuthorised { task: request.task.to_owned(), reason };
    // A ledger that cannot be reached is not a refusal: say it is unavailable.
    let ledger_err = &ledger_error(request.task);
    let task = ledger
        .task(request.task)
        .await
        .map_err(ledger_err)?
        .ok_or_else(|| refuse("the task is not on the ledger".into()))?;
    if task.task.requester() != request.peer {
        return Err(refuse(format!("it was requested by '{}', not by '{}'", task.task.requester(), request.peer)));
    }
    if !matches!(task.status, TaskStatus::Submitted | TaskStatus::Running) {
        return Err(refuse(format!("it is {}", task.status)));
    }
    if !task.task.datasets().iter().any(|d| d == request.dataset) {
        return Err(refuse(format!("it does not read dataset '{}'", request.dataset)));
    }
    if !request.kinds.contains(&task.task.kind()) {
        return Err(refuse(format!("a {} task does not allow this computation", task.task.kind())));
    }
    let mut grant = None;
    for id in &task.task.grants {
        let Some(state) = ledger.grant(id).await.map_err(ledger_err)? else { continue };
        let g = &state.grant;
        if g.dataset != request.dataset || g.grantee != request.peer {
            continue;
        }
        // Revocation stops everything the grant covered at once, replies
        // that write no use record (sealed sets, hints) included.
        if state.revoked {
            return Err(refuse(format!("grant '{id}' is revoked")));
        }
        // Expiry too, by this node's own clock (the ledger's clock judges
        // the use records; this node judges what it hands out unmetered).
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if now >= g.expires_at {
            return Err(refuse(format!("grant '{id}' expired at {} (unix seconds)", g.expires_at)));
        }
        // A grant naming no columns allows the dataset's key columns only.
        let allowed = if g.columns.is_empty() { request.key_columns } else { g.columns.as_slice() };
        if let Some(column) = request.columns.iter().find(|c| !allowed.contains(c)) {
            return Err(refuse(format!(
                "grant '{id}' does not allow column '{column}' (it allows: {})",
                allowed.join(", ")
            )));
        }
        grant = Some(id.clone());
        break;
    }
    let grant = grant.ok_or_else(|| refuse(format!("none of its grants covers dataset '{}'", request.dataset)))?;
    // Only under grants of this organisation's own datasets, which the
    // ledger's rules let only this organisation's key write.
    let owner = ledger.dataset(request.dataset).await.map_err(ledger_err)?.last().map(|v| v.owner.clone());
    if owner.as_deref() != Some(own_org) {
        return Err(refuse(format!("dataset '{}' is not this organisation's on the ledger", request.dataset)));
    }
    let served =
        task.uses.iter().any(|(org, used)| org == own_org && used.grant == grant && used.shard == request.shard);
    Ok((grant, served))
}

/// The start of every message about a failure that depends on the rows.
pub const DATA_DEPENDENT: &str = "the data does not fit the query: ";

/// When `e` is a failure that depends on the rows, what may be said of it:
/// the column and what to do, never a value, a row or how many; `None` for
/// failures that depend on the query or the schema alone.
pub fn data_dependent(e: &stayput_mpc_engine::MpcError) -> Option<String> {
    use stayput_mpc_engine::MpcError as E;
    let message = match e {
        E::OutsideRange { column, low, high, .. } => format!(
            "column '{column}' holds values outside the declared range [{low}, {high}]; widen the range or filter them out"
        ),
        E::NotNumeric { column, .. } => {
            format!("column '{column}' holds values that are not numbers or timestamps; filter them out")
        }
        E::OutOfRange { column } | E::Overflow { column } => {
            format!(
                "values of column '{column}' overflow at the query's precision; lower the precision or split the query"
            )
        }
        _ => return None,
    };
    Some(format!("{DATA_DEPENDENT}{message}"))
}
