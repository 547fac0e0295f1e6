//! The owner side of every protocol, as one path a reply cannot skip:
//!
//! ```text
//! request ──Authorised::new──▶ Authorised ──record(items, ε)──▶ Recorded ──reply──▶ Metered<T> ──respond──▶ peer
//!            task id checked,     (work on        use record on         │
//!            ledger check,         a blocking     the ledger first      └─fail: a data-dependent
//!            grant and its state,  thread)                                error, after the record
//!            single flight,
//!            session permit
//! ```
//!
//! A service's handler returns `Result<Metered<T>, NodeError>`, and a
//! [`Metered`] is made only by [`Recorded::reply`]; a [`Recorded`] only by
//! writing the use record ([`Authorised::record`]), by finding the task's
//! first-round use on the ledger ([`Authorised::continuing`]), or by
//! [`Authorised::disclosing_nothing`] — for replies that carry nothing of
//! the rows by themselves (sealed encoded sets and lookup hints), named so
//! a reviewer finds every one. So a metered reply cannot be built without
//! the use record, by construction.
//!
//! **Single flight.** While one session of a task is being served on a
//! dataset, a second is refused: otherwise two concurrent calls could both
//! pass the ledger's "served once" check before either use is written. The
//! slot is taken only after the ledger shows the caller is the task's
//! requester (so no other member can occupy it to block the task), and
//! the ledger is read again once it is held.
//!
//! **What a peer is told** goes through one place, [`respond`]: the cause
//! of a failure in full to this node's own log (task and peer, never a
//! row or key), and to the peer the redacted message of
//! `From<NodeError> for Status` — no local paths, no column or dataset
//! lists.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use stayput_chain_connector::rules::GrantState;
use tonic::{Response, Status};

use crate::authorisation::{
    ServeRequest, check, check_continuing, check_items_per_use, record_use, record_use_spending,
};
use crate::{LedgerAccess, NodeError, NodeState};

/// Sessions being served, by (task, dataset).
#[derive(Debug, Default)]
pub struct InFlight(Arc<Mutex<HashSet<(String, String)>>>);

impl InFlight {
    /// Takes the (task, dataset) slot, or `None` while a session holds it.
    fn enter(&self, task: &str, dataset: &str) -> Option<Flight> {
        let key = (task.to_owned(), dataset.to_owned());
        self.0.lock().expect("in-flight set").insert(key.clone()).then(|| Flight { set: self.0.clone(), key })
    }
}

/// Holds a (task, dataset) in [`InFlight`] until dropped.
#[derive(Debug)]
struct Flight {
    set: Arc<Mutex<HashSet<(String, String)>>>,
    key: (String, String),
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.set.lock().expect("in-flight set").remove(&self.key);
    }
}

/// A session the ledger allows: the task, the peer, the grant and its
/// state, this node's session permit and the task's single-flight guard.
#[derive(Debug)]
pub struct Authorised {
    /// The task id (checked).
    pub task: String,
    /// The peer's organisation, from its certificate.
    pub peer: String,
    /// The grant that covers the session.
    pub grant_id: String,
    /// That grant as the ledger holds it now (limits, uses, ε spent).
    pub grant: GrantState,
    /// The shard served, of a task run as shards.
    pub shard: Option<u32>,
    state: Arc<NodeState>,
    permit: Arc<tokio::sync::OwnedSemaphorePermit>,
    _flight: Flight,
}

/// The node's ledger access, or the error a ledger-less node gives.
pub fn ledger_access<'a>(state: &'a NodeState, protocol: &str) -> Result<&'a LedgerAccess, NodeError> {
    state
        .ledger
        .as_ref()
        .ok_or_else(|| NodeError::InvalidConfig(format!("{protocol} needs a [ledger] section to check grants")))
}

impl Authorised {
    /// Checks `request` against the ledger (task, requester, status,
    /// dataset, kind, grant, columns; not served yet), takes the task's
    /// single-flight guard and a session permit.
    pub async fn new(state: &Arc<NodeState>, request: &ServeRequest<'_>) -> Result<Self, NodeError> {
        Self::admit(state, request, None).await
    }

    /// The second round of a task whose use this node recorded in the
    /// first round under `grant` (a statistics census, then the
    /// contribution): the task and grant must still hold and the use must
    /// be on the ledger. Nothing more is recorded.
    pub async fn continuing(
        state: &Arc<NodeState>,
        request: &ServeRequest<'_>,
        grant: &str,
    ) -> Result<Recorded, NodeError> {
        Self::admit(state, request, Some(grant)).await.map(Recorded)
    }

    async fn admit(
        state: &Arc<NodeState>,
        request: &ServeRequest<'_>,
        continuing: Option<&str>,
    ) -> Result<Self, NodeError> {
        crate::wire::check_task_id(request.task)?;
        let access = ledger_access(state, "serving a task")?;
        let ledger = &*access.ledger;
        let judge = || async {
            match continuing {
                None => check(ledger, &state.config.org, request).await,
                Some(grant) => {
                    check_continuing(ledger, &state.config.org, request, grant).await.map(|()| grant.to_owned())
                }
            }
        };
        // The ledger first, so only the task's requester can hold its
        // slot; then the slot; then the ledger again, since another session
        // of the task may have recorded its use in between.
        judge().await?;
        let flight = state
            .in_flight
            .enter(request.task, request.dataset)
            .ok_or_else(|| NodeError::InFlight { task: request.task.to_owned() })?;
        let grant_id = judge().await?;
        let grant = ledger.grant(&grant_id).await.map_err(NodeError::from_ledger)?.ok_or_else(|| {
            NodeError::NotAuthorised { task: request.task.to_owned(), reason: format!("grant '{grant_id}' vanished") }
        })?;
        let permit = state.session_permit()?;
        Ok(Self {
            task: request.task.to_owned(),
            peer: request.peer.to_owned(),
            grant_id,
            grant,
            shard: request.shard,
            state: state.clone(),
            permit: Arc::new(permit),
            _flight: flight,
        })
    }

    /// Refuses, before any work, more `unit` than the grant allows per task.
    pub async fn check_items(&self, items: u64, unit: &str) -> Result<(), NodeError> {
        let ledger = &*ledger_access(&self.state, "serving a task")?.ledger;
        check_items_per_use(ledger, &self.task, &self.grant_id, items, unit).await
    }

    /// Writes the use record — `items` and `epsilon` milli-ε — signed by
    /// this node; the ledger refuses it atomically when the grant does not
    /// cover it, and then nothing is served.
    pub async fn record(self, items: u64, epsilon: u32) -> Result<Recorded, NodeError> {
        let access = ledger_access(&self.state, "serving a task")?;
        let org = &self.state.config.org;
        record_use_spending(&*access.ledger, org, &access.key, &self.task, &self.grant_id, items, epsilon).await?;
        Ok(Recorded(self))
    }

    /// Writes the use record for items the peer itself asked for (its set
    /// size, the ids or keys it queries: it knows their number), so the
    /// ledger's reason for a refusal is passed on in full.
    pub async fn record_asked(self, items: u64) -> Result<Recorded, NodeError> {
        let access = ledger_access(&self.state, "serving a task")?;
        let (org, key) = (&self.state.config.org, &access.key);
        record_use(&*access.ledger, org, key, &self.task, &self.grant_id, (items, self.shard)).await?;
        Ok(Recorded(self))
    }

    /// For a reply that carries nothing of the rows by itself — a sealed
    /// encoded set, a lookup hint of sealed records — served to the
    /// grantee of a recorded task without a use record.
    pub fn disclosing_nothing(self) -> Recorded {
        Recorded(self)
    }

    /// The session permit, to move into the blocking thread that does the
    /// work: a call cancelled by its peer does not free the slot while the
    /// work still runs.
    pub fn worker_permit(&self) -> WorkerPermit {
        WorkerPermit(self.permit.clone())
    }
}

/// The session's permit, held by a worker thread.
#[derive(Debug)]
pub struct WorkerPermit(#[allow(dead_code)] Arc<tokio::sync::OwnedSemaphorePermit>);

/// A session whose use is on the ledger.
#[derive(Debug)]
pub struct Recorded(Authorised);

impl Recorded {
    /// The session's task, peer and grant.
    pub fn session(&self) -> &Authorised {
        &self.0
    }

    /// The reply the use record covers.
    pub fn reply<T>(self, reply: T) -> Metered<T> {
        Metered { reply, _session: self }
    }

    /// A failure that depends on the rows, told to the peer only now that
    /// the use is on the ledger.
    pub fn fail(self, error: NodeError) -> NodeError {
        error
    }
}

/// A reply covered by a use record on the ledger (or by
/// [`Authorised::disclosing_nothing`]); the session's permit and
/// single-flight guard are held until it is sent.
#[derive(Debug)]
pub struct Metered<T> {
    reply: T,
    _session: Recorded,
}

impl<T> Metered<T> {
    /// The reply, with the session it belongs to (held while a stream is
    /// sent).
    pub fn into_parts(self) -> (T, Recorded) {
        (self.reply, self._session)
    }
}

/// The one way a service answers a peer: the reply, or the redacted error
/// with the full cause in this node's log.
pub fn respond<T>(
    what: &str,
    task: &str,
    peer: &str,
    result: Result<Metered<T>, NodeError>,
) -> Result<Response<T>, Status> {
    match result {
        Ok(metered) => Ok(Response::new(metered.reply)),
        Err(e) => {
            tracing::warn!(task = %task, peer = %peer, error = %e, "{what} refused");
            Err(Status::from(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_session_per_task_and_dataset_at_a_time() {
        let in_flight = InFlight::default();
        let first = in_flight.enter("t-1", "d").expect("free");
        assert!(in_flight.enter("t-1", "d").is_none(), "a second session of the task waits for nothing: refused");
        let other_dataset = in_flight.enter("t-1", "e").expect("another dataset of the task");
        let other_task = in_flight.enter("t-2", "d").expect("another task");
        drop(first);
        assert!(in_flight.enter("t-1", "d").is_some(), "free again once the session ends");
        drop((other_dataset, other_task));
        assert!(in_flight.0.lock().unwrap().is_empty());
    }
}
