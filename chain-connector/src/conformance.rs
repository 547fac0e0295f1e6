//! The conformance suite: the consortium's rules, checked the same way on
//! every backend. A backend's tests implement [`Backend`] and call
//! [`run_all`]; a failure panics with what was expected.

use std::sync::Arc;

use crate::LedgerError;
use crate::ledger::{GrantFilter, Ledger, subscribe};
use crate::records::{
    Computation, DatasetVersion, Grant, LedgerId, Member, OrgKey, Record, ResultRecord, Role, SignedRecord, Task,
    TaskStatus, UseRecord,
};
use crate::rules::Refusal;
use crate::tasks::{SignedTaskRequest, TaskRequest};

/// A backend under test.
#[async_trait::async_trait]
pub trait Backend: Sync {
    /// A fresh, empty ledger whose genesis admits `operator_member`, sealed
    /// or administered with `operator`.
    async fn fresh(&self, operator: OrgKey, operator_member: Member) -> Arc<dyn Ledger>;
    /// The ledger's current time (unix seconds), as its rules see it.
    async fn now(&self, ledger: &Arc<dyn Ledger>) -> u64;
    /// Moves the ledger's clock forward.
    async fn advance(&self, ledger: &Arc<dyn Ledger>, seconds: u64);
}

/// One organisation of the test consortium.
#[derive(Debug)]
pub struct Org {
    /// Its id.
    pub id: &'static str,
    /// Its signing key.
    pub key: OrgKey,
    /// The ledger it signs for.
    pub ledger: LedgerId,
}

impl Org {
    fn new(id: &'static str) -> Self {
        Self::with_key(id, OrgKey::generate())
    }

    fn with_key(id: &'static str, key: OrgKey) -> Self {
        Self { id, key, ledger: LedgerId([0; 32]) }
    }

    fn member(&self, roles: &[Role]) -> Member {
        Member {
            org: self.id.into(),
            name: format!("{} (test)", self.id),
            roles: roles.to_vec(),
            signing_key: self.key.public_key(),
            endpoint: format!("https://{}.example.invalid:7100", self.id),
        }
    }

    /// Signs a record as this organisation for its ledger.
    pub fn sign(&self, record: Record) -> SignedRecord {
        SignedRecord::sign(record, self.id, &self.key, &self.ledger)
    }
}

/// A consortium on a fresh ledger: operator, bank (requester), bureau and
/// hospital (data owners; the hospital also requests).
pub struct Consortium {
    /// The ledger.
    pub ledger: Arc<dyn Ledger>,
    /// The operator.
    pub operator: Org,
    /// A requester.
    pub bank: Org,
    /// A data owner.
    pub bureau: Org,
    /// A data owner and requester.
    pub hospital: Org,
    /// The ledger's time when the consortium was made: the issue time of
    /// its task requests.
    pub created: u64,
}

impl std::fmt::Debug for Consortium {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consortium").field("ledger", &self.ledger).finish_non_exhaustive()
    }
}

fn digest(tag: u8) -> [u8; 32] {
    [tag; 32]
}

impl Consortium {
    /// Creates the consortium and the bureau's dataset `blacklist` (v1).
    pub async fn new(backend: &dyn Backend) -> Self {
        let operator = Org::new("operator");
        let (bank, bureau, hospital) = (Org::new("bank"), Org::new("bureau"), Org::new("hospital"));
        let op_member = operator.member(&[Role::Operator]);
        let op_key = OrgKey::from_bytes(&operator.key.to_secret_bytes());
        let ledger = backend.fresh(op_key, op_member).await;
        let id = ledger.identity().await.expect("the ledger's identity");
        let [operator, bank, bureau, hospital] = [operator, bank, bureau, hospital].map(|o| Org { ledger: id, ..o });
        let created = backend.now(&ledger).await;
        let c = Self { ledger, operator, bank, bureau, hospital, created };
        for (org, roles) in [
            (&c.bank, &[Role::Requester][..]),
            (&c.bureau, &[Role::DataOwner][..]),
            (&c.hospital, &[Role::DataOwner, Role::Requester][..]),
        ] {
            c.ok(&c.operator, Record::Member(org.member(roles))).await;
        }
        c.ok(&c.bureau, Record::DatasetVersion(c.version("blacklist", "bureau", 1))).await;
        c
    }

    fn version(&self, dataset: &str, owner: &str, version: u32) -> DatasetVersion {
        DatasetVersion {
            dataset: dataset.into(),
            owner: owner.into(),
            version,
            schema_digest: digest(1),
            content_digest: digest(u8::try_from(version).unwrap_or(u8::MAX)),
            protocol_key: Some(vec![7; 32]),
        }
    }

    /// A grant on `blacklist` to the bank.
    pub fn grant(&self, id: &str, max_uses: u32, max_items: u64, expires_at: u64) -> Record {
        Record::Grant(Grant {
            id: id.into(),
            dataset: "blacklist".into(),
            grantee: "bank".into(),
            computations: vec![Computation::Psi, Computation::Blacklist],
            columns: vec!["national_id".into()],
            min_cohort: 0,
            max_uses,
            max_items,
            max_items_per_use: max_items.min(60),
            expires_at,
            epsilon_budget: 1_500,
        })
    }

    /// The bank's signed request for the task called `name` (the same
    /// request, and so the same task id, every time).
    pub fn request(&self, name: &str) -> SignedTaskRequest {
        self.request_for(name, &["blacklist"])
    }

    /// The bank's signed PSI request called `name` on `datasets`.
    pub fn request_for(&self, name: &str, datasets: &[&str]) -> SignedTaskRequest {
        self.request_with(name, Computation::Psi, datasets, name.as_bytes().to_vec())
    }

    /// The bank's signed request called `name`, of `kind`, with `params`.
    pub fn request_with(&self, name: &str, kind: Computation, datasets: &[&str], params: Vec<u8>) -> SignedTaskRequest {
        let mut nonce = [0u8; 16];
        let n = name.len().min(16);
        nonce[..n].copy_from_slice(&name.as_bytes()[..n]);
        TaskRequest {
            requester: "bank".into(),
            kind,
            datasets: datasets.iter().map(|d| (*d).to_owned()).collect(),
            receiver: "bank".into(),
            params,
            nonce,
            issued_at: self.created,
            ledger: self.bank.ledger,
        }
        .sign(&self.bank.key)
    }

    /// The id of the task called `name`.
    pub fn task_id(&self, name: &str) -> String {
        self.request(name).task_id()
    }

    /// A bank task on `blacklist` under `grants`.
    pub fn task(&self, name: &str, grants: &[&str]) -> Record {
        Record::Task(Task::new(self.request(name), grants.iter().map(|g| (*g).to_owned()).collect()))
    }

    /// A result record for the task called `name`.
    pub fn result(&self, name: &str, receiver: &str) -> Record {
        Record::Result(ResultRecord {
            task: self.task_id(name),
            result_digest: digest(5),
            receiver: receiver.into(),
            intermediates: vec![],
        })
    }

    /// A status record for the task called `name`.
    pub fn status(&self, name: &str, status: TaskStatus) -> Record {
        Record::TaskStatus { task: self.task_id(name), status }
    }

    /// A bureau use record.
    pub fn use_of(&self, task: &str, grant: &str, items: u64) -> SignedRecord {
        self.spend(task, grant, items, 0)
    }

    /// A use record of `items` spending `epsilon` milli-ε.
    pub fn spend(&self, task: &str, grant: &str, items: u64, epsilon: u32) -> SignedRecord {
        let task = self.task_id(task);
        self.bureau.sign(Record::Use(UseRecord { task, grant: grant.into(), items, epsilon, shard: None }))
    }

    /// Submits and expects acceptance.
    pub async fn ok(&self, writer: &Org, record: Record) {
        let kind = record.kind();
        if let Err(e) = self.ledger.submit(writer.sign(record)).await {
            panic!("{} writing a {kind} record should be accepted, got: {e}", writer.id);
        }
    }

    /// Submits and returns the refusal (panics if accepted or failed otherwise).
    pub async fn refused(&self, record: SignedRecord) -> Refusal {
        let kind = record.record.kind();
        match self.ledger.submit(record).await {
            Err(LedgerError::Refused(r)) => r,
            Err(other) => panic!("a {kind} record should be refused by the rules, got: {other}"),
            Ok(_) => panic!("a {kind} record should have been refused"),
        }
    }
}

macro_rules! expect_refusal {
    ($c:expr, $record:expr, $pattern:pat) => {{
        let refusal = $c.refused($record).await;
        assert!(matches!(refusal, $pattern), "expected {}, got {refusal:?}", stringify!($pattern));
    }};
}

/// Only a dataset's owner grants, revokes and publishes versions; only the
/// operator admits members; signatures must match the writer.
pub async fn owner_only_writes(backend: &dyn Backend) {
    let c = Consortium::new(backend).await;
    let far = backend.now(&c.ledger).await + 86_400;
    expect_refusal!(c, c.hospital.sign(c.grant("g-h", 1, 10, far)), Refusal::NotOwner { .. });
    expect_refusal!(c, c.bank.sign(c.grant("g-b", 1, 10, far)), Refusal::NotOwner { .. });
    c.ok(&c.bureau, c.grant("g1", 1, 10, far)).await;
    expect_refusal!(c, c.bureau.sign(c.grant("g1", 1, 10, far)), Refusal::Replayed { .. });
    expect_refusal!(c, c.bureau.sign(c.grant("g1", 2, 10, far)), Refusal::Duplicate { .. });
    expect_refusal!(c, c.hospital.sign(Record::RevokeGrant { grant: "g1".into() }), Refusal::NotOwner { .. });
    expect_refusal!(
        c,
        c.hospital.sign(Record::DatasetVersion(c.version("blacklist", "hospital", 2))),
        Refusal::NotOwner { .. }
    );
    expect_refusal!(
        c,
        c.bureau.sign(Record::DatasetVersion(c.version("blacklist", "bureau", 3))),
        Refusal::VersionOutOfOrder { current: 1, got: 3, .. }
    );
    c.ok(&c.bureau, Record::DatasetVersion(c.version("blacklist", "bureau", 2))).await;
    assert_eq!(c.ledger.dataset("blacklist").await.unwrap().len(), 2);
    expect_refusal!(
        c,
        c.bank.sign(Record::DatasetVersion(c.version("loans", "bank", 1))),
        Refusal::MissingRole { role: Role::DataOwner, .. }
    );
    expect_refusal!(c, c.bank.sign(Record::Member(c.hospital.member(&[Role::Operator]))), Refusal::NotOperator { .. });
    // A record signed by someone else's key, and one from a stranger.
    let forged = SignedRecord::sign(c.grant("g-f", 1, 1, far), "bureau", &c.bank.key, &c.bank.ledger);
    assert!(matches!(c.ledger.submit(forged).await, Err(LedgerError::BadSignature { .. })));
    let stranger = Org::new("stranger");
    expect_refusal!(c, stranger.sign(c.task("t-x", &[])), Refusal::UnknownWriter { .. });
    let grants = c.ledger.grants(&GrantFilter { dataset: Some("blacklist".into()), grantee: None }).await.unwrap();
    assert_eq!(grants.len(), 1);
}

/// A grant is refused beyond its uses, its items per use or in total, once
/// expired, and once revoked.
pub async fn grant_limits(backend: &dyn Backend) {
    let c = Consortium::new(backend).await;
    let now = backend.now(&c.ledger).await;
    c.ok(&c.bureau, c.grant("g", 2, 100, now + 86_400)).await;
    for t in ["t1", "t2", "t3"] {
        c.ok(&c.bank, c.task(t, &["g"])).await;
    }
    expect_refusal!(c, c.use_of("t1", "g", 61), Refusal::ItemsPerUseExceeded { max_items_per_use: 60, asked: 61, .. });
    // ε budget 1.5: a use asking 1.501 is refused and spends nothing.
    expect_refusal!(
        c,
        c.spend("t1", "g", 1, 1_501),
        Refusal::EpsilonExhausted { budget: 1_500, spent: 0, asked: 1_501, .. }
    );
    c.ledger.submit(c.spend("t1", "g", 60, 1_000)).await.expect("first use");
    expect_refusal!(c, c.spend("t1", "g", 60, 1_000), Refusal::Replayed { .. });
    expect_refusal!(c, c.spend("t1", "g", 1, 0), Refusal::DuplicateUse { .. });
    expect_refusal!(c, c.use_of("t2", "g", 41), Refusal::ItemsExhausted { used: 60, asked: 41, .. });
    expect_refusal!(c, c.spend("t2", "g", 40, 501), Refusal::EpsilonExhausted { spent: 1_000, asked: 501, .. });
    c.ledger.submit(c.spend("t2", "g", 40, 500)).await.expect("second use, exactly at the item and ε limits");
    expect_refusal!(c, c.use_of("t3", "g", 0), Refusal::UsesExhausted { max_uses: 2, .. });
    let state = c.ledger.grant("g").await.unwrap().unwrap();
    assert_eq!((state.uses, state.items, state.epsilon_spent), (2, 100, 1_500));
    // Only the dataset owner's node records uses; a grant must be in the task.
    c.ok(&c.bureau, c.grant("g2", 5, 100, now + 86_400)).await;
    c.ok(&c.bank, c.task("t4", &["g2"])).await;
    let by_bank = c.bank.sign(Record::Use(UseRecord {
        task: c.task_id("t4"),
        grant: "g2".into(),
        items: 1,
        epsilon: 0,
        shard: None,
    }));
    expect_refusal!(c, by_bank, Refusal::NotOwner { .. });
    expect_refusal!(c, c.use_of("t1", "g2", 1), Refusal::GrantMismatch { .. });

    // Expiry, by the ledger's clock.
    c.ok(&c.bureau, c.grant("g-exp", 5, 100, now + 100)).await;
    c.ok(&c.bank, c.task("t-exp", &["g-exp"])).await;
    backend.advance(&c.ledger, 200).await;
    expect_refusal!(c, c.use_of("t-exp", "g-exp", 1), Refusal::Expired { .. });
    expect_refusal!(c, c.bank.sign(c.task("t-exp2", &["g-exp"])), Refusal::Expired { .. });

    // Revocation.
    let now = backend.now(&c.ledger).await;
    c.ok(&c.bureau, c.grant("g-rev", 5, 100, now + 86_400)).await;
    c.ok(&c.bank, c.task("t-rev", &["g-rev"])).await;
    c.ok(&c.bureau, Record::RevokeGrant { grant: "g-rev".into() }).await;
    expect_refusal!(c, c.use_of("t-rev", "g-rev", 1), Refusal::Revoked { .. });
    expect_refusal!(c, c.bureau.sign(Record::RevokeGrant { grant: "g-rev".into() }), Refusal::Replayed { .. });
    expect_refusal!(c, c.bank.sign(c.task("t-rev2", &["g-rev"])), Refusal::Revoked { .. });
}

/// Tasks move only along legal transitions, and only their parties move them.
pub async fn task_transitions(backend: &dyn Backend) {
    let c = Consortium::new(backend).await;
    let now = backend.now(&c.ledger).await;
    c.ok(&c.bureau, c.grant("g", 5, 100, now + 86_400)).await;
    c.ok(&c.bank, c.task("t", &["g"])).await;
    expect_refusal!(c, c.bank.sign(c.task("t", &["g"])), Refusal::Replayed { .. });
    expect_refusal!(c, c.operator.sign(c.task("t", &["g"])), Refusal::Duplicate { .. });
    let status = |s| c.status("t", s);
    expect_refusal!(c, c.bank.sign(status(TaskStatus::Succeeded)), Refusal::IllegalTransition { .. });
    expect_refusal!(c, c.bureau.sign(status(TaskStatus::Running)), Refusal::NotTaskParty { .. });
    c.ok(&c.operator, status(TaskStatus::Running)).await;
    expect_refusal!(c, c.bank.sign(status(TaskStatus::Cancelled)), Refusal::IllegalTransition { .. });
    c.ledger.submit(c.use_of("t", "g", 3)).await.expect("use while running");
    c.ok(&c.bank, status(TaskStatus::Succeeded)).await;
    expect_refusal!(c, c.bank.sign(status(TaskStatus::Failed)), Refusal::IllegalTransition { .. });
    expect_refusal!(c, c.use_of("t", "g", 1), Refusal::TaskNotActive { .. });
    expect_refusal!(c, c.operator.sign(c.result("t", "bureau")), Refusal::WrongReceiver { .. });
    c.ok(&c.operator, c.result("t", "bank")).await;
    let second = Record::Result(ResultRecord {
        result_digest: digest(6),
        ..match c.result("t", "bank") {
            Record::Result(r) => r,
            _ => unreachable!(),
        }
    });
    expect_refusal!(c, c.bank.sign(second), Refusal::DuplicateResult { .. });
    let trail = c.ledger.task(&c.task_id("t")).await.unwrap().unwrap();
    assert_eq!(trail.status, TaskStatus::Succeeded);
    assert_eq!(trail.uses.len(), 1);
    assert_eq!(trail.results.len(), 1);
    // A task may not lean on another requester's grant.
    c.ok(
        &c.bureau,
        Record::Grant(Grant {
            grantee: "hospital".into(),
            ..match c.grant("g-h", 1, 1, now + 86_400) {
                Record::Grant(g) => g,
                _ => unreachable!(),
            }
        }),
    )
    .await;
    expect_refusal!(c, c.bank.sign(c.task("t2", &["g-h"])), Refusal::GrantMismatch { .. });
}

/// Replaying from a height returns exactly the records after it, in order,
/// and a subscription picks up from there.
pub async fn event_replay(backend: &dyn Backend) {
    let c = Consortium::new(backend).await;
    let mark = c.ledger.height().await.unwrap();
    let now = backend.now(&c.ledger).await;
    let mut written = Vec::new();
    for i in 0..5 {
        let record = c.bureau.sign(c.grant(&format!("g{i}"), 1, 1, now + 86_400));
        written.push(record.clone());
        c.ledger.submit(record).await.unwrap();
    }
    let events = c.ledger.events_after(mark, 1000).await.unwrap();
    let replayed: Vec<SignedRecord> = events.iter().map(|e| e.record.clone()).collect();
    assert_eq!(replayed, written, "exactly the records after the mark, in order");
    assert!(events.iter().all(|e| e.receipt.height > mark && e.receipt.record_hash == e.record.hash()));
    let mut stream = subscribe(c.ledger.clone(), mark);
    for expected in &written {
        let event = tokio::time::timeout(std::time::Duration::from_secs(20), stream.recv())
            .await
            .expect("the subscription delivers")
            .expect("open")
            .expect("no error");
        assert_eq!(&event.record, expected);
    }
    let live = c.bureau.sign(c.grant("g-live", 1, 1, now + 86_400));
    c.ledger.submit(live.clone()).await.unwrap();
    let event =
        tokio::time::timeout(std::time::Duration::from_secs(20), stream.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(event.record, live, "new records reach a live subscription");
}

/// Two nodes racing for the last remaining use: exactly one wins.
pub async fn last_use_race(backend: &dyn Backend) {
    let c = Consortium::new(backend).await;
    let now = backend.now(&c.ledger).await;
    c.ok(&c.bureau, c.grant("g", 1, 100, now + 86_400)).await;
    c.ok(&c.bank, c.task("ta", &["g"])).await;
    c.ok(&c.bank, c.task("tb", &["g"])).await;
    let (a, b) = tokio::join!(c.ledger.submit(c.use_of("ta", "g", 1)), c.ledger.submit(c.use_of("tb", "g", 1)));
    let wins = [a.is_ok(), b.is_ok()].iter().filter(|w| **w).count();
    assert_eq!(wins, 1, "exactly one use of the last remaining use: {a:?} / {b:?}");
    let loser = if a.is_ok() { b } else { a };
    assert!(matches!(loser, Err(LedgerError::Refused(Refusal::UsesExhausted { .. }))), "{loser:?}");
}

/// The operator cannot re-key a member: only the member rotates its own
/// key, signing with the current one; after a rotation the old key signs
/// nothing, and a suspended member writes nothing.
pub async fn operator_cannot_rekey(backend: &dyn Backend) {
    let c = Consortium::new(backend).await;
    let far = backend.now(&c.ledger).await + 86_400;
    // The attack: the operator re-admits the bureau under a key it holds.
    let puppet = Org { ledger: c.bureau.ledger, ..Org::new("bureau") };
    let rekey = Record::Member(puppet.member(&[Role::DataOwner]));
    expect_refusal!(c, c.operator.sign(rekey), Refusal::KeyChangeByOperator { .. });
    // ... so a grant "from" the bureau signed with that key is refused.
    assert!(matches!(
        c.ledger.submit(puppet.sign(c.grant("g-forged", 1, 1, far))).await,
        Err(LedgerError::BadSignature { .. })
    ));
    // The operator may still change roles and endpoint, keeping the key.
    c.ok(
        &c.operator,
        Record::Member(Member {
            endpoint: "https://bureau.example.invalid:7200".into(),
            ..c.bureau.member(&[Role::DataOwner])
        }),
    )
    .await;

    // The bureau rotates its own key; the old key signs nothing from then on.
    c.ok(&c.bureau, c.grant("g-before", 1, 1, far)).await;
    let rotated = Org { ledger: c.bureau.ledger, ..Org::new("bureau") };
    expect_refusal!(
        c,
        c.bureau.sign(Record::RotateKey { new_key: c.bureau.key.public_key() }),
        Refusal::BadKeyRotation { .. }
    );
    expect_refusal!(c, c.bureau.sign(Record::RotateKey { new_key: [0; 32] }), Refusal::BadKeyRotation { .. });
    c.ok(&c.bureau, Record::RotateKey { new_key: rotated.key.public_key() }).await;
    assert!(matches!(
        c.ledger.submit(c.bureau.sign(c.grant("g-old", 1, 1, far))).await,
        Err(LedgerError::BadSignature { .. })
    ));
    c.ledger.submit(rotated.sign(c.grant("g-new", 1, 1, far))).await.expect("a grant under the new key");
    let member = c.ledger.member("bureau").await.unwrap().unwrap();
    assert_eq!(member.signing_key, rotated.key.public_key());
    // The grant written under the old key before the rotation still stands.
    assert!(c.ledger.grant("g-before").await.unwrap().is_some());

    // Suspension: no roles, no writes.
    c.ok(&c.operator, Record::Member(c.hospital.member(&[]))).await;
    let refused = c.ledger.submit(c.hospital.sign(Record::DatasetVersion(c.version("ward", "hospital", 1)))).await;
    assert!(matches!(refused, Err(LedgerError::Refused(Refusal::Suspended { .. }))), "{refused:?}");
}

/// Nobody records a task its requester did not sign for this ledger, now.
pub async fn tasks_carry_the_requesters_request(backend: &dyn Backend) {
    let c = Consortium::new(backend).await;
    let now = backend.now(&c.ledger).await;
    c.ok(&c.bureau, c.grant("g", 5, 100, now + 86_400)).await;
    // The operator invents a cardinality task "by the bank", signing the
    // request with its own key.
    let mut invented = c.request("invented").request;
    invented.kind = Computation::PsiCardinality;
    let forged = Task::new(invented.clone().sign(&c.operator.key), vec!["g".into()]);
    expect_refusal!(c, c.operator.sign(Record::Task(forged)), Refusal::BadTaskRequest { .. });
    // A real request recorded under another id.
    let mut relabelled = match c.task("real", &["g"]) {
        Record::Task(t) => t,
        _ => unreachable!(),
    };
    relabelled.id = "t-000000000000000000000000".into();
    expect_refusal!(c, c.operator.sign(Record::Task(relabelled)), Refusal::BadTaskRequest { .. });
    // A request the bank signed for another consortium's ledger.
    let elsewhere = TaskRequest { ledger: LedgerId([9; 32]), ..c.request("elsewhere").request }.sign(&c.bank.key);
    expect_refusal!(
        c,
        c.operator.sign(Record::Task(Task::new(elsewhere, vec!["g".into()]))),
        Refusal::BadTaskRequest { .. }
    );
    // A request held back and recorded long after it was signed.
    let stale = TaskRequest { issued_at: now.saturating_sub(3_600), ..c.request("stale").request }.sign(&c.bank.key);
    expect_refusal!(
        c,
        c.operator.sign(Record::Task(Task::new(stale, vec!["g".into()]))),
        Refusal::StaleTaskRequest { .. }
    );
    // The bank's own request, recorded by the operator, is accepted.
    c.ok(&c.operator, c.task("real", &["g"])).await;
    let task = c.ledger.task(&c.task_id("real")).await.unwrap().unwrap();
    assert_eq!(task.task.requester(), "bank");
    assert_eq!(task.task.request, c.request("real"));
}

/// One use per task, grant and owner — however many different use records
/// an owner's node writes, and however they race.
pub async fn one_use_per_task_and_grant(backend: &dyn Backend) {
    let c = Consortium::new(backend).await;
    let now = backend.now(&c.ledger).await;
    c.ok(&c.bureau, c.grant("g", 10, 1_000, now + 86_400)).await;
    c.ok(&c.bank, c.task("t", &["g"])).await;
    let (a, b) = tokio::join!(c.ledger.submit(c.use_of("t", "g", 5)), c.ledger.submit(c.use_of("t", "g", 6)));
    let wins = [a.is_ok(), b.is_ok()].iter().filter(|w| **w).count();
    assert_eq!(wins, 1, "exactly one use of a grant per task: {a:?} / {b:?}");
    let loser = if a.is_ok() { b } else { a };
    assert!(matches!(loser, Err(LedgerError::Refused(Refusal::DuplicateUse { .. }))), "{loser:?}");
    let state = c.ledger.grant("g").await.unwrap().unwrap();
    assert_eq!(state.uses, 1);
}

/// A record signed for one consortium's ledger is refused by another's,
/// even where the same organisation holds the same key in both.
pub async fn no_cross_consortium_replay(backend: &dyn Backend) {
    let a = Consortium::new(backend).await;
    let b = Consortium::new(backend).await;
    assert_ne!(a.bank.ledger, b.bank.ledger, "two ledgers, two identities");
    // b admits an organisation holding a's bureau key.
    let twin = Org::with_key("bureau-twin", OrgKey::from_bytes(&a.bureau.key.to_secret_bytes()));
    b.ok(&b.operator, Record::Member(twin.member(&[Role::DataOwner]))).await;
    let version = Record::DatasetVersion(a.version("twin-data", "bureau-twin", 1));
    let for_a = Org {
        ledger: a.bank.ledger,
        ..Org::with_key("bureau-twin", OrgKey::from_bytes(&a.bureau.key.to_secret_bytes()))
    };
    let replayed = b.ledger.submit(for_a.sign(version.clone())).await;
    assert!(matches!(replayed, Err(LedgerError::BadSignature { .. })), "{replayed:?}");
    let for_b = Org { ledger: b.bank.ledger, ..twin };
    b.ledger.submit(for_b.sign(version)).await.expect("the same record signed for this ledger");
}

/// A PSI task delivering to both: the requester's result is written by the
/// requester or the operator, the peer's (the owner of the dataset the task
/// reads) by the peer alone — and only when the parameters' type byte says
/// so; one result per receiver.
pub async fn results_of_a_task_to_both(backend: &dyn Backend) {
    use crate::tasks::PSI_TO_BOTH_TYPE;
    let c = Consortium::new(backend).await;
    let now = backend.now(&c.ledger).await;
    c.ok(&c.bureau, c.grant("g", 5, 100, now + 86_400)).await;
    let to_both = |name: &str, kind| {
        let mut params = vec![PSI_TO_BOTH_TYPE];
        params.extend_from_slice(name.as_bytes());
        c.request_with(name, kind, &["blacklist"], params)
    };
    let request = to_both("both", Computation::Psi);
    let id = request.task_id();
    c.ok(&c.bank, Record::Task(Task::new(request, vec!["g".into()]))).await;
    let result = |receiver: &str, d: u8| {
        Record::Result(ResultRecord {
            task: id.clone(),
            result_digest: digest(d),
            receiver: receiver.into(),
            intermediates: vec![],
        })
    };
    // Nobody records the peer's result for it: not the requester, not the
    // operator.
    expect_refusal!(c, c.bank.sign(result("bureau", 1)), Refusal::NotReceiver { .. });
    expect_refusal!(c, c.operator.sign(result("bureau", 1)), Refusal::NotReceiver { .. });
    // A member owning no dataset of the task receives nothing from it.
    expect_refusal!(c, c.hospital.sign(result("hospital", 1)), Refusal::NotTaskParty { .. });
    expect_refusal!(c, c.operator.sign(result("hospital", 1)), Refusal::WrongReceiver { .. });
    // The peer cannot write the requester's result.
    expect_refusal!(c, c.bureau.sign(result("bank", 1)), Refusal::NotTaskParty { .. });
    // The peer's result first (it is written before the requester's
    // session ends), then the requester's; one each.
    c.ok(&c.bureau, result("bureau", 2)).await;
    expect_refusal!(c, c.bureau.sign(result("bureau", 3)), Refusal::DuplicateResult { .. });
    c.ok(&c.operator, result("bank", 4)).await;
    expect_refusal!(c, c.bank.sign(result("bank", 5)), Refusal::DuplicateResult { .. });
    let trail = c.ledger.task(&id).await.unwrap().unwrap();
    assert_eq!(trail.results.len(), 2);
    assert_eq!(trail.result().map(|r| (r.receiver.as_str(), r.result_digest)), Some(("bank", digest(4))));
    assert_eq!(trail.peer_result().map(|r| (r.receiver.as_str(), r.result_digest)), Some(("bureau", digest(2))));
    // Without the type byte the peer receives nothing.
    c.ok(&c.bank, c.task("to-bank", &["g"])).await;
    expect_refusal!(c, c.bureau.sign(c.result("to-bank", "bureau")), Refusal::NotTaskParty { .. });
    // The type byte counts for kind psi only.
    let cardinality = to_both("count", Computation::PsiCardinality);
    let count_id = cardinality.task_id();
    c.ok(&c.bank, Record::Task(Task::new(cardinality, vec![]))).await;
    let peer_count = Record::Result(ResultRecord {
        task: count_id,
        result_digest: digest(6),
        receiver: "bureau".into(),
        intermediates: vec![],
    });
    expect_refusal!(c, c.bureau.sign(peer_count), Refusal::NotTaskParty { .. });
}

/// A PSI task run as shards: its count is read from fixed offsets of its
/// parameters; each of the owner's shards records its own use, the first
/// counting the grant's use and all together within one use's items; its
/// result carries one digest per shard and their combination.
pub async fn sharded_tasks(backend: &dyn Backend) {
    use crate::tasks::{PSI_SHARDED_TYPE, combine_shard_digests};
    let c = Consortium::new(backend).await;
    let now = backend.now(&c.ledger).await;
    c.ok(&c.bureau, c.grant("g", 1, 100, now + 86_400)).await;
    c.ok(&c.bureau, c.grant("g-one", 5, 100, now + 86_400)).await;
    let sharded = |name: &str, count: &[u8]| {
        let mut params = vec![PSI_SHARDED_TYPE, 1];
        params.extend_from_slice(count);
        params.extend_from_slice(name.as_bytes());
        c.request_with(name, Computation::Psi, &["blacklist"], params)
    };
    for (name, count) in [("one", &[1u8, 0, 0, 0][..]), ("many", &[1, 1, 0, 0]), ("short", &[4])] {
        let task = Record::Task(Task::new(sharded(name, count), vec!["g".into()]));
        expect_refusal!(c, c.bank.sign(task), Refusal::BadTaskRequest { .. });
    }
    let request = sharded("four", &[4, 0, 0, 0]);
    let id = request.task_id();
    c.ok(&c.bank, Record::Task(Task::new(request, vec!["g".into()]))).await;
    let shard_use = |shard: Option<u32>, items: u64| {
        c.bureau.sign(Record::Use(UseRecord { task: id.clone(), grant: "g".into(), items, epsilon: 0, shard }))
    };
    expect_refusal!(c, shard_use(None, 1), Refusal::ShardMismatch { .. });
    expect_refusal!(c, shard_use(Some(4), 1), Refusal::ShardMismatch { .. });
    // The grant allows one use of at most 60 items: four shards share it.
    c.ledger.submit(shard_use(Some(0), 20)).await.expect("shard 0's use");
    expect_refusal!(c, shard_use(Some(0), 21), Refusal::DuplicateShardUse { shard: 0, .. });
    c.ledger.submit(shard_use(Some(2), 20)).await.expect("shard 2's use");
    expect_refusal!(c, shard_use(Some(1), 21), Refusal::ItemsPerUseExceeded { asked: 61, .. });
    c.ledger.submit(shard_use(Some(1), 20)).await.expect("shard 1's use");
    c.ledger.submit(shard_use(Some(3), 0)).await.expect("shard 3's use");
    let grant = c.ledger.grant("g").await.unwrap().unwrap();
    assert_eq!((grant.uses, grant.items), (1, 60), "one use of 60 items");
    // An unsharded task's use names no shard.
    c.ok(&c.bank, c.task("plain", &["g-one"])).await;
    let named = UseRecord { task: c.task_id("plain"), grant: "g-one".into(), items: 1, epsilon: 0, shard: Some(0) };
    expect_refusal!(c, c.bureau.sign(Record::Use(named)), Refusal::ShardMismatch { .. });
    // The result: one digest per shard, and their combination.
    c.ok(&c.bank, Record::TaskStatus { task: id.clone(), status: TaskStatus::Running }).await;
    let shard_digests: Vec<[u8; 32]> = (1..=4).map(digest).collect();
    let result = |digests: &[[u8; 32]], result_digest| {
        Record::Result(ResultRecord {
            task: id.clone(),
            result_digest,
            receiver: "bank".into(),
            intermediates: digests.to_vec(),
        })
    };
    let three = result(&shard_digests[..3], combine_shard_digests(&shard_digests[..3]));
    expect_refusal!(c, c.operator.sign(three), Refusal::ShardResult { .. });
    expect_refusal!(c, c.operator.sign(result(&shard_digests, digest(9))), Refusal::ShardResult { .. });
    c.ok(&c.operator, result(&shard_digests, combine_shard_digests(&shard_digests))).await;
    let trail = c.ledger.task(&id).await.unwrap().unwrap();
    assert_eq!(trail.uses.iter().map(|(_, u)| u.shard).collect::<Vec<_>>(), [Some(0), Some(2), Some(1), Some(3)]);
}

/// Disputes: filed by a member holding a blacklist grant on the dataset,
/// to an arbitrator party to neither side, within 180 days; ruled by that
/// arbitrator alone — taken up, then upheld or overturned before the
/// deadline; one open dispute per entry.
pub async fn disputes(backend: &dyn Backend) {
    use crate::records::{Dispute, DisputeState};
    let c = Consortium::new(backend).await;
    let now = backend.now(&c.ledger).await;
    let day = 86_400;
    // The hospital arbitrates (every backend knows its account).
    let court = &c.hospital;
    let roles = [Role::DataOwner, Role::Requester, Role::Arbitrator];
    c.ok(&c.operator, Record::Member(court.member(&roles))).await;
    // The bureau arbitrates too — never on its own dataset's listings.
    c.ok(&c.operator, Record::Member(c.bureau.member(&[Role::DataOwner, Role::Arbitrator]))).await;
    c.ok(&c.bureau, c.grant("g", 5, 100, now + day)).await;
    let dispute = |id: &str, tag: u8, deadline: u64| Dispute {
        id: id.into(),
        dataset: "blacklist".into(),
        version: 1,
        tag: [tag; 8],
        sealed_id: vec![0x5e; 48],
        arbitrator: "hospital".into(),
        evidence_digest: digest(8),
        deadline,
    };
    let d1 = dispute("d1", 7, now + 30 * day);
    let file = |org: &Org, d: Dispute| org.sign(Record::Dispute(d));
    // Who may file, about what, to whom, until when.
    expect_refusal!(c, file(&c.operator, d1.clone()), Refusal::DisputeRefused { .. });
    let to = |arbitrator: &str| Dispute { arbitrator: arbitrator.into(), ..d1.clone() };
    expect_refusal!(c, file(&c.bank, to("bureau")), Refusal::DisputeRefused { .. });
    expect_refusal!(c, file(&c.bank, to("operator")), Refusal::MissingRole { .. });
    expect_refusal!(c, file(&c.bank, to("nobody")), Refusal::Unknown { what: "member", .. });
    expect_refusal!(c, file(&c.bank, Dispute { version: 2, ..d1.clone() }), Refusal::DisputeRefused { .. });
    expect_refusal!(c, file(&c.bank, Dispute { dataset: "other".into(), ..d1.clone() }), Refusal::Unknown { .. });
    for deadline in [now, now + 181 * day] {
        expect_refusal!(c, file(&c.bank, Dispute { deadline, ..d1.clone() }), Refusal::DisputeRefused { .. });
    }
    expect_refusal!(c, file(&c.bank, Dispute { sealed_id: vec![], ..d1.clone() }), Refusal::DisputeRefused { .. });
    c.ok(&c.bank, Record::Dispute(d1.clone())).await;
    expect_refusal!(c, file(&c.bank, Dispute { sealed_id: vec![1], ..d1.clone() }), Refusal::Duplicate { .. });
    let same_entry = dispute("d1-again", 7, now + 30 * day);
    expect_refusal!(c, file(&c.bank, same_entry), Refusal::DisputeRefused { .. });
    // Who rules, in which order, until when.
    let rule = |org: &Org, id: &str, state| org.sign(Record::DisputeRuling { dispute: id.into(), state });
    expect_refusal!(c, rule(&c.bureau, "d1", DisputeState::UnderReview), Refusal::NotArbitrator { .. });
    expect_refusal!(c, rule(&c.bank, "d1", DisputeState::UnderReview), Refusal::NotArbitrator { .. });
    expect_refusal!(c, rule(court, "d1", DisputeState::Overturned), Refusal::IllegalDisputeTransition { .. });
    expect_refusal!(c, rule(court, "d-none", DisputeState::UnderReview), Refusal::Unknown { what: "dispute", .. });
    c.ok(court, Record::DisputeRuling { dispute: "d1".into(), state: DisputeState::UnderReview }).await;
    backend.advance(&c.ledger, 31 * day).await;
    expect_refusal!(c, rule(court, "d1", DisputeState::Overturned), Refusal::DisputeDeadlinePassed { .. });
    let now = backend.now(&c.ledger).await;
    // Unruled by its deadline, d1 lapsed: the entry may be contested again.
    c.ok(&c.bank, Record::Dispute(dispute("d1-again", 7, now + 30 * day))).await;
    let d2 = dispute("d2", 9, now + 30 * day);
    c.ok(&c.bank, Record::Dispute(d2)).await;
    c.ok(court, Record::DisputeRuling { dispute: "d2".into(), state: DisputeState::UnderReview }).await;
    c.ok(court, Record::DisputeRuling { dispute: "d2".into(), state: DisputeState::Upheld }).await;
    expect_refusal!(c, rule(court, "d2", DisputeState::Overturned), Refusal::IllegalDisputeTransition { .. });
    // A ruled entry may be contested again.
    c.ok(&c.bank, Record::Dispute(dispute("d3", 9, now + 30 * day))).await;
    let states: Vec<(String, DisputeState, String)> = c
        .ledger
        .disputes(Some("blacklist"))
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.dispute.id, d.state, d.filer))
        .collect();
    let bank = String::from("bank");
    assert_eq!(
        states,
        [
            ("d1".into(), DisputeState::UnderReview, bank.clone()),
            ("d1-again".into(), DisputeState::Filed, bank.clone()),
            ("d2".into(), DisputeState::Upheld, bank.clone()),
            ("d3".into(), DisputeState::Filed, bank)
        ]
    );
    // Without a live grant, no more disputes.
    c.ok(&c.bureau, Record::RevokeGrant { grant: "g".into() }).await;
    expect_refusal!(c, file(&c.bank, dispute("d4", 10, now + day)), Refusal::DisputeRefused { .. });
}

/// Every check, in order.
pub async fn run_all(backend: &dyn Backend) {
    disputes(backend).await;
    sharded_tasks(backend).await;
    owner_only_writes(backend).await;
    grant_limits(backend).await;
    task_transitions(backend).await;
    event_replay(backend).await;
    last_use_race(backend).await;
    operator_cannot_rekey(backend).await;
    tasks_carry_the_requesters_request(backend).await;
    one_use_per_task_and_grant(backend).await;
    no_cross_consortium_replay(backend).await;
    results_of_a_task_to_both(backend).await;
}
