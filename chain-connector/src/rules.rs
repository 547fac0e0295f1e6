//! The consortium's rules, as a state machine over signed records.
//!
//! Both backends enforce exactly these rules at write time (the embedded
//! ledger by running this code; the EVM contract by its own checks, held to
//! the same conformance suite). `now` is the time of the block that will
//! hold the record, so expiry is judged by the ledger's clock, never the
//! writer's.
//!
//! | record | who may write it | refused when |
//! |---|---|---|
//! | member | the operator (the first record: the operator admitting itself) | it would change an admitted member's key |
//! | rotate key | the member itself, signed with its current key | the key is not a valid ed25519 key or is the current one |
//! | dataset version | the dataset's owner, a `data_owner` | version not the next one; owner changes |
//! | grant | the dataset's owner | id reused; dataset or grantee unknown; no computation |
//! | revoke grant | the dataset's owner | grant unknown or already revoked |
//! | task | its requester (a `requester`) or the operator | the requester's signed request is missing its signature (under the requester's key at the time), is for another ledger, is outside [`REQUEST_WINDOW_SECS`] of the ledger's clock, or does not give the task id; id reused; a dataset unknown; a grant not the requester's, not for a listed dataset, revoked or expired |
//! | task status | its requester or the operator | not a legal transition |
//! | use | the owner of the grant's dataset | task not submitted or running; grant not in the task; this writer already recorded a use of this grant for this task; revoked; expired; no uses left; items would exceed the limit |
//! | result | for the receiver the requester named: the operator or the task's requester; for a task delivering to both (PSI parameters of type 10), the owner of the dataset it reads, for itself only | task unknown; the receiver is neither the one the requester named nor, for a task delivering to both, the owner of a dataset it reads; the writer is not entitled to that receiver's result; a result for it is already recorded |
//!
//! **Keys.** A record is valid only under the key its writer held when it
//! was written: every reader replays the ledger from its genesis through
//! these rules, so each signature is checked against the member's key at
//! that point of the history. The operator admits members and changes their
//! roles (no roles: suspended, and a suspended member writes nothing); only
//! a member, signing with its current key, changes its key. So the operator
//! cannot re-key a member and sign for it.
//!
//! Any record identical to one already applied (same hash) is refused, so a
//! signed record cannot be replayed — not a use, not an old member record;
//! and every signature covers the [`LedgerId`], so a record cannot be
//! carried into another consortium's ledger.

use std::collections::BTreeMap;

use crate::LedgerError;
use crate::records::{
    DatasetVersion, Dispute, DisputeState, Grant, LedgerId, MAX_DISPUTE_SECS, Member, Record, ResultRecord, Role,
    SignedRecord, Task, TaskStatus, UseRecord,
};
use crate::tasks::REQUEST_WINDOW_SECS;

/// Milli-ε as ε, for messages.
fn milli(v: u32) -> String {
    format!("{:.3}", f64::from(v) / 1000.0)
}

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("'{writer}' is not a member of the consortium")]
    UnknownWriter { writer: String },
    #[error("the first record must be the operator admitting itself")]
    BadGenesis,
    #[error("only the operator may write {kind} records; '{writer}' is not the operator")]
    NotOperator { writer: String, kind: &'static str },
    #[error("'{org}' lacks the {role} role")]
    MissingRole { org: String, role: Role },
    #[error("only '{owner}', the owner of dataset '{dataset}', may do that; '{writer}' may not")]
    NotOwner { writer: String, owner: String, dataset: String },
    #[error("'{writer}' may not write records for task '{task}' of '{requester}'")]
    NotTaskParty { writer: String, task: String, requester: String },
    #[error(
        "'{writer}' may not record the result '{receiver}' receives from task '{task}'; only '{receiver}' records its own"
    )]
    NotReceiver { writer: String, task: String, receiver: String },
    #[error("unknown {what} '{id}'")]
    Unknown { what: &'static str, id: String },
    #[error("{what} '{id}' exists already; ids are single-use")]
    Duplicate { what: &'static str, id: String },
    #[error("dataset '{dataset}' is at version {current}; the next version must be {}", current + 1)]
    VersionOutOfOrder { dataset: String, current: u32, got: u32 },
    #[error("grant '{grant}' allows no computation")]
    EmptyGrant { grant: String },
    #[error("grant '{grant}' is revoked")]
    Revoked { grant: String },
    #[error("grant '{grant}' expired at {expires_at} (unix seconds); the ledger's time is {now}")]
    Expired { grant: String, expires_at: u64, now: u64 },
    #[error("grant '{grant}' has used all of its {max_uses} uses")]
    UsesExhausted { grant: String, max_uses: u32 },
    #[error("grant '{grant}' allows {max_items} items; {used} are used and {asked} more were asked")]
    ItemsExhausted { grant: String, max_items: u64, used: u64, asked: u64 },
    #[error("grant '{grant}' allows {max_items_per_use} items per use; {asked} were asked")]
    ItemsPerUseExceeded { grant: String, max_items_per_use: u64, asked: u64 },
    #[error(
        "grant '{grant}' has a privacy budget of ε = {} with {} spent; a use of ε = {} does not fit",
        milli(*budget), milli(*spent), milli(*asked)
    )]
    EpsilonExhausted { grant: String, budget: u32, spent: u32, asked: u32 },
    #[error("grant '{grant}' is {problem} for task '{task}'")]
    GrantMismatch { grant: String, task: String, problem: &'static str },
    #[error("task '{task}' may not go from {from} to {to}")]
    IllegalTransition { task: String, from: TaskStatus, to: TaskStatus },
    #[error("task '{task}' is {status}; uses are recorded only while it is submitted or running")]
    TaskNotActive { task: String, status: TaskStatus },
    #[error("an identical record ({hash}) is already on the ledger; records cannot be replayed")]
    Replayed { hash: String },
    #[error(
        "'{writer}' may not change the key of member '{org}': a member rotates its own key, signing with its current one"
    )]
    KeyChangeByOperator { writer: String, org: String },
    #[error("member '{org}' is suspended (it holds no role) and may write nothing")]
    Suspended { org: String },
    #[error("'{org}' cannot rotate to that key: {problem}")]
    BadKeyRotation { org: String, problem: &'static str },
    #[error("task '{task}' does not carry a valid request of its requester: {problem}")]
    BadTaskRequest { task: String, problem: String },
    #[error(
        "task '{task}': its request was issued at {issued_at} (unix seconds), more than {REQUEST_WINDOW_SECS} s from the ledger's time {now}; the requester signs a new one"
    )]
    StaleTaskRequest { task: String, issued_at: u64, now: u64 },
    #[error(
        "'{writer}' has already recorded its use of grant '{grant}' for task '{task}'; one use per task, grant and owner"
    )]
    DuplicateUse { task: String, grant: String, writer: String },
    #[error(
        "'{writer}' has already recorded its use of grant '{grant}' for shard {shard} of task '{task}'; one use per shard"
    )]
    DuplicateShardUse { task: String, grant: String, writer: String, shard: u32 },
    #[error("use of task '{task}': {problem}")]
    ShardMismatch { task: String, problem: &'static str },
    #[error("result of task '{task}': {problem}")]
    ShardResult { task: String, problem: &'static str },
    #[error("dispute '{dispute}' cannot be filed: {problem}")]
    DisputeRefused { dispute: String, problem: &'static str },
    #[error("'{writer}' may not rule on dispute '{dispute}'; its arbitrator is '{arbitrator}'")]
    NotArbitrator { writer: String, dispute: String, arbitrator: String },
    #[error("dispute '{dispute}' may not go from {from} to {to}")]
    IllegalDisputeTransition { dispute: String, from: DisputeState, to: DisputeState },
    #[error("dispute '{dispute}' had to be ruled on by {deadline} (unix seconds); the ledger's time is {now}")]
    DisputeDeadlinePassed { dispute: String, deadline: u64, now: u64 },
    #[error("task '{task}' delivers its result to '{expected}', not '{receiver}'")]
    WrongReceiver { task: String, receiver: String, expected: String },
    #[error("task '{task}' already has its result for '{receiver}'; one result per receiver")]
    DuplicateResult { task: String, receiver: String },
}

/// A grant and what has been consumed of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantState {
    /// The grant as written.
    pub grant: Grant,
    /// Uses consumed.
    pub uses: u32,
    /// Items consumed.
    pub items: u64,
    /// Privacy budget spent, in milli-ε.
    pub epsilon_spent: u32,
    /// Whether its owner revoked it.
    pub revoked: bool,
}

/// A dispute, who filed it and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeStatus {
    /// The dispute as filed.
    pub dispute: Dispute,
    /// The member that filed it.
    pub filer: String,
    /// Its state.
    pub state: DisputeState,
    /// The dataset's newest version when the ruling was recorded: after an
    /// overturn, every later version must no longer hold the entry, which
    /// members' nodes check against the encoded set's tags before they use
    /// it.
    pub ruled_at_version: Option<u32>,
}

/// A task and its trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    /// The task as written.
    pub task: Task,
    /// Current status.
    pub status: TaskStatus,
    /// Uses served for it, with the serving organisation.
    pub uses: Vec<(String, UseRecord)>,
    /// Result digests recorded for it: at most one for the receiver the
    /// requester named and, for a task delivering to both, at most one for
    /// the peer, in the order written.
    pub results: Vec<ResultRecord>,
}

impl TaskState {
    /// The result of the receiver the requester named, when it is
    /// recorded.
    pub fn result(&self) -> Option<&ResultRecord> {
        self.results.iter().find(|r| r.receiver == self.task.receiver())
    }

    /// The peer's own result of a task delivering to both, when recorded.
    pub fn peer_result(&self) -> Option<&ResultRecord> {
        self.results.iter().find(|r| r.receiver != self.task.receiver())
    }
}

/// The consortium's state: what the records so far add up to.
#[derive(Debug, Clone)]
pub struct State {
    /// The ledger these records belong to: every signature covers it.
    pub ledger: LedgerId,
    /// Members by organisation id.
    pub members: BTreeMap<String, Member>,
    /// Dataset versions by dataset id, oldest first.
    pub datasets: BTreeMap<String, Vec<DatasetVersion>>,
    /// Grants by id.
    pub grants: BTreeMap<String, GrantState>,
    /// Tasks by id.
    pub tasks: BTreeMap<String, TaskState>,
    /// Disputes of listings by id.
    pub disputes: BTreeMap<String, DisputeStatus>,
    /// Hashes of every record applied: a record is never accepted twice.
    pub seen: std::collections::HashSet<crate::records::Digest>,
}

impl State {
    /// The empty state of ledger `ledger`, before its genesis record.
    pub fn new(ledger: LedgerId) -> Self {
        Self {
            ledger,
            members: BTreeMap::new(),
            datasets: BTreeMap::new(),
            grants: BTreeMap::new(),
            tasks: BTreeMap::new(),
            disputes: BTreeMap::new(),
            seen: std::collections::HashSet::new(),
        }
    }

    /// The newest version of every dataset.
    pub fn latest_datasets(&self) -> Vec<DatasetVersion> {
        self.datasets.values().filter_map(|v| v.last().cloned()).collect()
    }

    /// Grants matching a filter.
    #[cfg(feature = "backends")]
    pub fn grants_matching(&self, filter: &crate::ledger::GrantFilter) -> Vec<GrantState> {
        self.grants
            .values()
            .filter(|g| filter.dataset.as_ref().is_none_or(|d| &g.grant.dataset == d))
            .filter(|g| filter.grantee.as_ref().is_none_or(|o| &g.grant.grantee == o))
            .cloned()
            .collect()
    }

    /// Disputes of `dataset`'s listings (all when `None`), in id order.
    pub fn disputes_of(&self, dataset: Option<&str>) -> Vec<DisputeStatus> {
        self.disputes.values().filter(|d| dataset.is_none_or(|ds| d.dispute.dataset == ds)).cloned().collect()
    }

    /// Tasks requested by `requester` (all when `None`).
    pub fn tasks_of(&self, requester: Option<&str>) -> Vec<TaskState> {
        self.tasks.values().filter(|t| requester.is_none_or(|r| t.task.requester() == r)).cloned().collect()
    }

    /// The operator: the organisation that admitted itself first.
    pub fn is_operator(&self, org: &str) -> bool {
        self.members.get(org).is_some_and(|m| m.roles.contains(&Role::Operator))
    }

    /// Checks the writer's signature and the rules, then applies the record.
    /// On error the state is unchanged.
    pub fn apply(&mut self, signed: &SignedRecord, now: u64) -> Result<(), LedgerError> {
        signed.verify(&self.writer_key(signed)?, &self.ledger)?;
        self.apply_unverified(signed, now).map(drop)
    }

    /// Checks a record as [`State::apply`] would — signature, replay, rules —
    /// without applying it (a client's check before it submits).
    pub fn check(&self, signed: &SignedRecord, now: u64) -> Result<(), LedgerError> {
        signed.verify(&self.writer_key(signed)?, &self.ledger)?;
        let hash = signed.hash();
        if self.seen.contains(&hash) {
            return Err(Refusal::Replayed { hash: hex::encode(hash) }.into());
        }
        if !self.members.is_empty() {
            self.check_rules(&signed.writer, &signed.record, now)?;
        }
        Ok(())
    }

    /// Checks the rules and applies the record, leaving the signature to the
    /// caller (who verifies many in parallel); returns the key to verify
    /// it with.
    pub fn apply_unverified(&mut self, signed: &SignedRecord, now: u64) -> Result<[u8; 32], LedgerError> {
        let key = self.writer_key(signed)?;
        let hash = signed.hash();
        if self.seen.contains(&hash) {
            return Err(Refusal::Replayed { hash: hex::encode(hash) }.into());
        }
        if !self.members.is_empty() {
            self.check_rules(&signed.writer, &signed.record, now)?;
        }
        self.commit(signed);
        self.seen.insert(hash);
        Ok(key)
    }

    /// The public key the record must be signed with: the writer's member
    /// key, or for the very first record the key it admits.
    pub fn writer_key(&self, signed: &SignedRecord) -> Result<[u8; 32], LedgerError> {
        let writer = signed.writer.as_str();
        if self.members.is_empty() {
            return match &signed.record {
                Record::Member(m) if m.org == writer && m.roles.contains(&Role::Operator) => Ok(m.signing_key),
                _ => Err(Refusal::BadGenesis.into()),
            };
        }
        let member = self.members.get(writer).ok_or_else(|| Refusal::UnknownWriter { writer: writer.into() })?;
        if member.roles.is_empty() {
            return Err(Refusal::Suspended { org: writer.into() }.into());
        }
        Ok(member.signing_key)
    }

    fn owner_of(&self, dataset: &str) -> Result<&str, Refusal> {
        self.datasets
            .get(dataset)
            .and_then(|v| v.last())
            .map(|v| v.owner.as_str())
            .ok_or_else(|| Refusal::Unknown { what: "dataset", id: dataset.into() })
    }

    fn require_owner(&self, writer: &str, dataset: &str) -> Result<(), Refusal> {
        let owner = self.owner_of(dataset)?;
        if owner != writer {
            return Err(Refusal::NotOwner { writer: writer.into(), owner: owner.into(), dataset: dataset.into() });
        }
        Ok(())
    }

    fn require_role(&self, org: &str, role: Role) -> Result<(), Refusal> {
        let member = self.members.get(org).ok_or_else(|| Refusal::Unknown { what: "member", id: org.into() })?;
        if member.roles.contains(&role) { Ok(()) } else { Err(Refusal::MissingRole { org: org.into(), role }) }
    }

    fn grant(&self, id: &str) -> Result<&GrantState, Refusal> {
        self.grants.get(id).ok_or_else(|| Refusal::Unknown { what: "grant", id: id.into() })
    }

    fn task(&self, id: &str) -> Result<&TaskState, Refusal> {
        self.tasks.get(id).ok_or_else(|| Refusal::Unknown { what: "task", id: id.into() })
    }

    fn require_task_party(&self, writer: &str, task: &TaskState) -> Result<(), Refusal> {
        if writer == task.task.requester() || self.is_operator(writer) {
            Ok(())
        } else {
            Err(Refusal::NotTaskParty {
                writer: writer.into(),
                task: task.task.id.clone(),
                requester: task.task.requester().into(),
            })
        }
    }

    /// The task's request: signed by its requester, under the key the
    /// requester holds now (the ledger's "now" for this record), for this
    /// ledger, within the request window of the ledger's clock, and giving
    /// the task's id.
    fn check_request(&self, t: &Task, now: u64) -> Result<(), Refusal> {
        let bad = |problem: String| Refusal::BadTaskRequest { task: t.id.clone(), problem };
        if t.request.task_id() != t.id {
            return Err(bad(format!("the request gives task id '{}'", t.request.task_id())));
        }
        if t.request.request.ledger != self.ledger {
            return Err(bad(format!(
                "it was signed for ledger {}, not this one ({})",
                t.request.request.ledger, self.ledger
            )));
        }
        let requester = t.requester();
        let member =
            self.members.get(requester).ok_or_else(|| Refusal::Unknown { what: "member", id: requester.into() })?;
        if t.request.verify(&member.signing_key).is_err() {
            return Err(bad(format!("the signature does not verify against the key of '{requester}'")));
        }
        if now.abs_diff(t.request.request.issued_at) > REQUEST_WINDOW_SECS {
            return Err(Refusal::StaleTaskRequest { task: t.id.clone(), issued_at: t.request.request.issued_at, now });
        }
        t.shards().map_err(|problem| bad(problem.into()))?;
        Ok(())
    }

    /// A dispute is filed by a member holding a blacklist grant on the
    /// dataset, about a version it has, to an arbitrator who is a party to
    /// neither side, with a deadline within [`MAX_DISPUTE_SECS`], and not
    /// about an entry under an open dispute that has not lapsed.
    fn check_dispute(&self, writer: &str, d: &Dispute, now: u64) -> Result<(), Refusal> {
        let refuse = |problem| Refusal::DisputeRefused { dispute: d.id.clone(), problem };
        if self.disputes.contains_key(&d.id) {
            return Err(Refusal::Duplicate { what: "dispute", id: d.id.clone() });
        }
        let owner = self.owner_of(&d.dataset)?.to_owned();
        let versions = self.datasets.get(&d.dataset).map_or(0, Vec::len);
        if d.version == 0 || d.version as usize > versions {
            return Err(refuse("it names a version the dataset does not have"));
        }
        let entitled = self.grants.values().any(|g| {
            g.grant.dataset == d.dataset
                && g.grant.grantee == writer
                && g.grant.computations.contains(&crate::records::Computation::Blacklist)
                && !g.revoked
        });
        if !entitled {
            return Err(refuse("its filer holds no blacklist grant on the dataset"));
        }
        self.require_role(&d.arbitrator, Role::Arbitrator)?;
        if d.arbitrator == owner || d.arbitrator == writer {
            return Err(refuse("its arbitrator is a party to it"));
        }
        if d.deadline <= now || d.deadline - now > MAX_DISPUTE_SECS {
            return Err(refuse("its deadline is not within 180 days from now"));
        }
        if d.sealed_id.is_empty() {
            return Err(refuse("it carries no sealed id for the arbitrator"));
        }
        // A dispute its arbitrator let lapse (no ruling by the deadline)
        // no longer holds the entry.
        let open = |o: &DisputeStatus| o.state.is_open() && now < o.dispute.deadline;
        if self.disputes.values().any(|o| open(o) && o.dispute.dataset == d.dataset && o.dispute.tag == d.tag) {
            return Err(refuse("the entry is under dispute already"));
        }
        Ok(())
    }

    fn require_live(grant: &GrantState, now: u64) -> Result<(), Refusal> {
        if grant.revoked {
            return Err(Refusal::Revoked { grant: grant.grant.id.clone() });
        }
        if now >= grant.grant.expires_at {
            return Err(Refusal::Expired { grant: grant.grant.id.clone(), expires_at: grant.grant.expires_at, now });
        }
        Ok(())
    }

    fn check_rules(&self, writer: &str, record: &Record, now: u64) -> Result<(), Refusal> {
        match record {
            Record::Member(m) => {
                if !self.is_operator(writer) {
                    return Err(Refusal::NotOperator { writer: writer.into(), kind: "member" });
                }
                if self.members.get(&m.org).is_some_and(|current| current.signing_key != m.signing_key) {
                    return Err(Refusal::KeyChangeByOperator { writer: writer.into(), org: m.org.clone() });
                }
            }
            Record::RotateKey { new_key } => {
                let bad = |problem| Refusal::BadKeyRotation { org: writer.into(), problem };
                if self.members.get(writer).is_some_and(|m| &m.signing_key == new_key) {
                    return Err(bad("it is the current key"));
                }
                if ed25519_dalek::VerifyingKey::from_bytes(new_key).map_or(true, |k| k.is_weak()) {
                    return Err(bad("it is not a valid ed25519 public key"));
                }
            }
            Record::DatasetVersion(d) => {
                if d.owner != writer {
                    return Err(Refusal::NotOwner {
                        writer: writer.into(),
                        owner: d.owner.clone(),
                        dataset: d.dataset.clone(),
                    });
                }
                self.require_role(writer, Role::DataOwner)?;
                let current = match self.datasets.get(&d.dataset) {
                    Some(versions) => {
                        self.require_owner(writer, &d.dataset)?;
                        versions.last().map_or(0, |v| v.version)
                    }
                    None => 0,
                };
                if current.checked_add(1) != Some(d.version) {
                    return Err(Refusal::VersionOutOfOrder { dataset: d.dataset.clone(), current, got: d.version });
                }
            }
            Record::Grant(g) => {
                self.require_owner(writer, &g.dataset)?;
                if self.grants.contains_key(&g.id) {
                    return Err(Refusal::Duplicate { what: "grant", id: g.id.clone() });
                }
                if !self.members.contains_key(&g.grantee) {
                    return Err(Refusal::Unknown { what: "member", id: g.grantee.clone() });
                }
                if g.computations.is_empty() {
                    return Err(Refusal::EmptyGrant { grant: g.id.clone() });
                }
            }
            Record::RevokeGrant { grant } => {
                let state = self.grant(grant)?;
                self.require_owner(writer, &state.grant.dataset)?;
                if state.revoked {
                    return Err(Refusal::Revoked { grant: grant.clone() });
                }
            }
            Record::Task(t) => {
                if self.tasks.contains_key(&t.id) {
                    return Err(Refusal::Duplicate { what: "task", id: t.id.clone() });
                }
                if writer != t.requester() && !self.is_operator(writer) {
                    return Err(Refusal::NotTaskParty {
                        writer: writer.into(),
                        task: t.id.clone(),
                        requester: t.requester().into(),
                    });
                }
                self.require_role(t.requester(), Role::Requester)?;
                self.check_request(t, now)?;
                for dataset in t.datasets() {
                    self.owner_of(dataset)?;
                }
                for id in &t.grants {
                    let grant = self.grant(id)?;
                    let mismatch = |problem| Refusal::GrantMismatch { grant: id.clone(), task: t.id.clone(), problem };
                    if grant.grant.grantee != t.requester() {
                        return Err(mismatch("not the requester's"));
                    }
                    if !t.datasets().contains(&grant.grant.dataset) {
                        return Err(mismatch("for a dataset the task does not read"));
                    }
                    if !grant.grant.computations.contains(&t.kind()) {
                        return Err(mismatch("not for this kind of computation"));
                    }
                    Self::require_live(grant, now)?;
                }
            }
            Record::TaskStatus { task, status } => {
                let state = self.task(task)?;
                self.require_task_party(writer, state)?;
                if !state.status.may_become(*status) {
                    return Err(Refusal::IllegalTransition { task: task.clone(), from: state.status, to: *status });
                }
            }
            Record::Use(u) => {
                let task = self.task(&u.task)?;
                let grant = self.grant(&u.grant)?;
                self.require_owner(writer, &grant.grant.dataset)?;
                if !task.task.grants.contains(&u.grant) {
                    return Err(Refusal::GrantMismatch {
                        grant: u.grant.clone(),
                        task: u.task.clone(),
                        problem: "not listed",
                    });
                }
                if !matches!(task.status, TaskStatus::Submitted | TaskStatus::Running) {
                    return Err(Refusal::TaskNotActive { task: u.task.clone(), status: task.status });
                }
                // A task run as shards is served by each of the owner's
                // shards under one use of the grant: the first shard's
                // record counts the use, and the items of all its shards
                // together stay within one use's allowance.
                let shards = task.task.shards().unwrap_or(1);
                let shard_problem = match (shards, u.shard) {
                    (1, Some(_)) => Some("the task runs as one session, and the use names a shard"),
                    (2.., None) => Some("the task runs as shards, and the use names none"),
                    (n, Some(shard)) if shard >= n => Some("the use names a shard beyond the task's"),
                    _ => None,
                };
                if let Some(problem) = shard_problem {
                    return Err(Refusal::ShardMismatch { task: u.task.clone(), problem });
                }
                let earlier: Vec<&UseRecord> = task
                    .uses
                    .iter()
                    .filter(|(by, used)| by == writer && used.grant == u.grant)
                    .map(|(_, used)| used)
                    .collect();
                match u.shard {
                    None if !earlier.is_empty() => {
                        return Err(Refusal::DuplicateUse {
                            task: u.task.clone(),
                            grant: u.grant.clone(),
                            writer: writer.into(),
                        });
                    }
                    Some(shard) if earlier.iter().any(|used| used.shard == Some(shard)) => {
                        return Err(Refusal::DuplicateShardUse {
                            task: u.task.clone(),
                            grant: u.grant.clone(),
                            writer: writer.into(),
                            shard,
                        });
                    }
                    _ => {}
                }
                Self::require_live(grant, now)?;
                if earlier.is_empty() && grant.uses >= grant.grant.max_uses {
                    return Err(Refusal::UsesExhausted { grant: u.grant.clone(), max_uses: grant.grant.max_uses });
                }
                let task_items = earlier.iter().fold(u.items, |sum, used| sum.saturating_add(used.items));
                if task_items > grant.grant.max_items_per_use {
                    return Err(Refusal::ItemsPerUseExceeded {
                        grant: u.grant.clone(),
                        max_items_per_use: grant.grant.max_items_per_use,
                        asked: task_items,
                    });
                }
                if grant.items.checked_add(u.items).is_none_or(|total| total > grant.grant.max_items) {
                    return Err(Refusal::ItemsExhausted {
                        grant: u.grant.clone(),
                        max_items: grant.grant.max_items,
                        used: grant.items,
                        asked: u.items,
                    });
                }
                if u64::from(grant.epsilon_spent) + u64::from(u.epsilon) > u64::from(grant.grant.epsilon_budget) {
                    return Err(Refusal::EpsilonExhausted {
                        grant: u.grant.clone(),
                        budget: grant.grant.epsilon_budget,
                        spent: grant.epsilon_spent,
                        asked: u.epsilon,
                    });
                }
            }
            Record::Dispute(d) => self.check_dispute(writer, d, now)?,
            Record::DisputeRuling { dispute, state } => {
                let filed = self
                    .disputes
                    .get(dispute)
                    .ok_or_else(|| Refusal::Unknown { what: "dispute", id: dispute.clone() })?;
                if writer != filed.dispute.arbitrator {
                    return Err(Refusal::NotArbitrator {
                        writer: writer.into(),
                        dispute: dispute.clone(),
                        arbitrator: filed.dispute.arbitrator.clone(),
                    });
                }
                if !filed.state.may_become(*state) {
                    return Err(Refusal::IllegalDisputeTransition {
                        dispute: dispute.clone(),
                        from: filed.state,
                        to: *state,
                    });
                }
                if !state.is_open() && now >= filed.dispute.deadline {
                    return Err(Refusal::DisputeDeadlinePassed {
                        dispute: dispute.clone(),
                        deadline: filed.dispute.deadline,
                        now,
                    });
                }
            }
            Record::Result(r) => {
                let task = self.task(&r.task)?;
                let peer_of_both = task.task.delivers_to_both()
                    && r.receiver != task.task.receiver()
                    && task.task.datasets().iter().any(|d| self.owner_of(d).is_ok_and(|owner| owner == r.receiver));
                if !peer_of_both {
                    self.require_task_party(writer, task)?;
                    if r.receiver != task.task.receiver() {
                        return Err(Refusal::WrongReceiver {
                            task: r.task.clone(),
                            receiver: r.receiver.clone(),
                            expected: task.task.receiver().into(),
                        });
                    }
                } else if writer != r.receiver {
                    // The peer attests its own result; nobody writes it
                    // for it, not the requester, not the operator.
                    return Err(Refusal::NotReceiver {
                        writer: writer.into(),
                        task: r.task.clone(),
                        receiver: r.receiver.clone(),
                    });
                }
                if task.results.iter().any(|done| done.receiver == r.receiver) {
                    return Err(Refusal::DuplicateResult { task: r.task.clone(), receiver: r.receiver.clone() });
                }
                // A sharded task's result is the union of its shards': the
                // record carries each shard's digest and their combination.
                let shards = task.task.shards().unwrap_or(1);
                if shards > 1 {
                    let problem = if r.intermediates.len() != shards as usize {
                        Some("a task run as shards records one digest per shard")
                    } else if crate::tasks::combine_shard_digests(&r.intermediates) != r.result_digest {
                        Some("its digest is not the combination of its shards' digests")
                    } else {
                        None
                    };
                    if let Some(problem) = problem {
                        return Err(Refusal::ShardResult { task: r.task.clone(), problem });
                    }
                }
            }
        }
        Ok(())
    }

    fn commit(&mut self, signed: &SignedRecord) {
        match &signed.record {
            Record::Member(m) => {
                self.members.insert(m.org.clone(), m.clone());
            }
            Record::DatasetVersion(d) => self.datasets.entry(d.dataset.clone()).or_default().push(d.clone()),
            Record::Grant(g) => {
                self.grants.insert(
                    g.id.clone(),
                    GrantState { grant: g.clone(), uses: 0, items: 0, epsilon_spent: 0, revoked: false },
                );
            }
            Record::RevokeGrant { grant } => {
                if let Some(g) = self.grants.get_mut(grant) {
                    g.revoked = true;
                }
            }
            Record::Task(t) => {
                let state = TaskState { task: t.clone(), status: TaskStatus::Submitted, uses: vec![], results: vec![] };
                self.tasks.insert(t.id.clone(), state);
            }
            Record::TaskStatus { task, status } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.status = *status;
                }
            }
            Record::Use(u) => {
                // One use per task and grant, however many shards served it.
                let first = self
                    .tasks
                    .get(&u.task)
                    .is_none_or(|t| !t.uses.iter().any(|(by, used)| by == &signed.writer && used.grant == u.grant));
                if let Some(g) = self.grants.get_mut(&u.grant) {
                    g.uses += u32::from(first);
                    g.items += u.items;
                    g.epsilon_spent += u.epsilon;
                }
                if let Some(t) = self.tasks.get_mut(&u.task) {
                    t.uses.push((signed.writer.clone(), u.clone()));
                }
            }
            Record::Result(r) => {
                if let Some(t) = self.tasks.get_mut(&r.task) {
                    t.results.push(r.clone());
                }
            }
            Record::Dispute(d) => {
                let status = DisputeStatus {
                    dispute: d.clone(),
                    filer: signed.writer.clone(),
                    state: DisputeState::Filed,
                    ruled_at_version: None,
                };
                self.disputes.insert(d.id.clone(), status);
            }
            Record::DisputeRuling { dispute, state } => {
                if let Some(d) = self.disputes.get_mut(dispute) {
                    d.state = *state;
                    if !state.is_open() {
                        let versions = self.datasets.get(&d.dispute.dataset).map_or(0, Vec::len);
                        d.ruled_at_version = Some(u32::try_from(versions).unwrap_or(u32::MAX));
                    }
                }
            }
            Record::RotateKey { new_key } => {
                if let Some(m) = self.members.get_mut(&signed.writer) {
                    m.signing_key = *new_key;
                }
            }
        }
    }
}
