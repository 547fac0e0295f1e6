//! The embedded ledger: the conformance suite, persistence, verification
//! on open (tampering, missing blocks, wrong operator), inclusion proofs
//! and concurrent writers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::ReadableTable;
use stayput_chain_connector::block::{Block, InclusionProof};
use stayput_chain_connector::conformance::{self, Backend};
use stayput_chain_connector::embedded::{Clock, EmbeddedLedger};
use stayput_chain_connector::records::{Member, OrgKey, Record, Role};
use stayput_chain_connector::{Ledger, LedgerError};

/// Fresh ledgers in a temporary folder, with a clock the tests move.
struct Embedded {
    dir: tempfile::TempDir,
    clock: Arc<AtomicU64>,
    counter: AtomicU64,
}

impl Embedded {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            clock: Arc::new(AtomicU64::new(1_800_000_000)),
            counter: AtomicU64::new(0),
        }
    }

    fn clock(&self) -> Clock {
        let t = self.clock.clone();
        Arc::new(move || t.load(Ordering::SeqCst))
    }
}

#[async_trait::async_trait]
impl Backend for Embedded {
    async fn fresh(&self, operator: OrgKey, operator_member: Member) -> Arc<dyn Ledger> {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.path().join(format!("ledger-{n}.redb"));
        Arc::new(EmbeddedLedger::create(&path, operator, operator_member, self.clock()).unwrap())
    }

    async fn now(&self, _: &Arc<dyn Ledger>) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }

    async fn advance(&self, _: &Arc<dyn Ledger>, seconds: u64) {
        self.clock.fetch_add(seconds, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    conformance::run_all(&Embedded::new()).await;
}

fn operator() -> (OrgKey, Member) {
    let key = OrgKey::from_bytes(&[42; 32]);
    let member = Member {
        org: "operator".into(),
        name: "Operator".into(),
        roles: vec![Role::Operator],
        signing_key: key.public_key(),
        endpoint: "https://127.0.0.1:7000".into(),
    };
    (key, member)
}

fn op_key() -> OrgKey {
    OrgKey::from_bytes(&[42; 32])
}

fn clock() -> Clock {
    Arc::new(|| 1_800_000_000)
}

/// A ledger with `n` member records, one block each; returns its path.
async fn ledger_with_members(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("ledger.redb");
    let (key, member) = operator();
    let ledger = EmbeddedLedger::create(&path, key, member, clock()).unwrap();
    for i in 0..n {
        let org = OrgKey::generate();
        let record = Record::Member(Member {
            org: format!("org-{i}"),
            name: format!("Org {i}"),
            roles: vec![Role::Requester],
            signing_key: org.public_key(),
            endpoint: format!("https://127.0.0.1:{}", 7001 + i),
        });
        let signed = stayput_chain_connector::records::SignedRecord::sign(record, "operator", &op_key(), &ledger.id());
        ledger.submit(signed).await.unwrap();
    }
    path
}

fn rewrite_block(path: &Path, height: u64, edit: impl FnOnce(&mut Vec<u8>)) {
    let table: redb::TableDefinition<'_, u64, &[u8]> = redb::TableDefinition::new("blocks");
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut blocks = txn.open_table(table).unwrap();
        let mut bytes = blocks.get(height).unwrap().unwrap().value().to_vec();
        edit(&mut bytes);
        if bytes.is_empty() {
            blocks.remove(height).unwrap();
        } else {
            blocks.insert(height, bytes.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopens_with_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_with_members(dir.path(), 5).await;
    let ledger = EmbeddedLedger::open(&path, op_key(), clock()).unwrap();
    assert_eq!(ledger.members().await.unwrap().len(), 6);
    assert_eq!(ledger.height().await.unwrap(), 5);
    let summary = ledger.summary();
    drop(ledger);
    assert_eq!(EmbeddedLedger::verify_file(&path, &op_key().public_key()).unwrap(), summary);
    assert!(matches!(EmbeddedLedger::create(&path, operator().0, operator().1, clock()), Err(LedgerError::Exists(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_refused_naming_the_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_with_members(dir.path(), 6).await;
    // Change one byte inside block 3's record (its endpoint text).
    rewrite_block(&path, 3, |bytes| {
        let at = bytes.windows(4).position(|w| w == b"7003").unwrap();
        bytes[at] = b'9';
    });
    let err = EmbeddedLedger::open(&path, op_key(), clock()).unwrap_err();
    assert!(matches!(err, LedgerError::Corrupt { height: 3, .. }), "{err}");
    assert!(err.to_string().contains("block 3"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_blocks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_with_members(dir.path(), 6).await;
    rewrite_block(&path, 2, Vec::clear);
    let err = EmbeddedLedger::open(&path, op_key(), clock()).unwrap_err();
    assert!(matches!(err, LedgerError::Corrupt { height: 3, .. }), "{err}");
    assert!(err.to_string().contains("expected block 2"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = ledger_with_members(dir.path(), 6).await;
    rewrite_block(&path, 6, Vec::clear); // the newest block
    let err = EmbeddedLedger::open(&path, op_key(), clock()).unwrap_err();
    assert!(err.to_string().contains("block 6 was committed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_with_members(dir.path(), 20).await;
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len / 3).unwrap();
    drop(file);
    let err = EmbeddedLedger::open(&path, op_key(), clock()).unwrap_err();
    assert!(matches!(err, LedgerError::Corrupt { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_operator_cannot_open_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_with_members(dir.path(), 1).await;
    let err = EmbeddedLedger::open(&path, OrgKey::generate(), clock()).unwrap_err();
    assert!(matches!(err, LedgerError::WrongOperator { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inclusion_proofs_verify_offline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let (key, member) = operator();
    let ledger = Arc::new(EmbeddedLedger::create(&path, key, member, clock()).unwrap());
    // Concurrent writers, so blocks hold several records.
    let mut handles = Vec::new();
    for i in 0..40 {
        let ledger = ledger.clone();
        handles.push(tokio::spawn(async move {
            let org = OrgKey::generate();
            let record = Record::Member(Member {
                org: format!("org-{i}"),
                name: String::new(),
                roles: vec![Role::Regulator],
                signing_key: org.public_key(),
                endpoint: String::new(),
            });
            let id = ledger.id();
            ledger
                .submit(stayput_chain_connector::records::SignedRecord::sign(record, "operator", &op_key(), &id))
                .await
        }));
    }
    let mut receipts = Vec::new();
    for h in handles {
        receipts.push(h.await.unwrap().unwrap());
    }
    let summary = ledger.summary();
    assert_eq!(summary.records, 41);
    assert!(summary.blocks <= 41);
    let public = op_key().public_key();
    for receipt in &receipts {
        let proof = ledger.prove(&receipt.record_hash).unwrap();
        assert_eq!(proof.header.height, receipt.height);
        let bytes = proof.to_bytes();
        let back = InclusionProof::from_bytes(&bytes).unwrap();
        assert_eq!(back.verify(&public).unwrap(), receipt.record_hash);
        assert!(matches!(back.verify(&OrgKey::generate().public_key()), Err(LedgerError::BadProof(_))));
    }
    // A proof for an altered record fails.
    let mut forged = ledger.prove(&receipts[0].record_hash).unwrap();
    forged.record.writer = "someone-else".into();
    assert!(matches!(forged.verify(&public), Err(LedgerError::BadProof(_))));
    let block: Block = ledger.block(receipts[0].height).unwrap();
    assert!(block.check(&public).is_ok());
    drop(ledger);
    assert_eq!(EmbeddedLedger::verify_file(&path, &public).unwrap(), summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_could_not_be_read_back_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let (key, member) = operator();
    let ledger = EmbeddedLedger::create(&path, key, member, clock()).unwrap();
    // A member with 2,000 roles encodes, but no reader would decode it.
    let record = Record::Member(Member {
        org: "bloated".into(),
        name: String::new(),
        roles: vec![Role::Regulator; 2000],
        signing_key: [1; 32],
        endpoint: String::new(),
    });
    let signed = stayput_chain_connector::records::SignedRecord::sign(record, "operator", &op_key(), &ledger.id());
    assert!(matches!(ledger.submit(signed).await, Err(LedgerError::Malformed { .. })));
    drop(ledger);
    EmbeddedLedger::open(&path, op_key(), clock()).expect("the ledger stays readable");
    // Creating over an existing ledger is refused and leaves it intact.
    assert!(matches!(EmbeddedLedger::create(&path, operator().0, operator().1, clock()), Err(LedgerError::Exists(_))));
    EmbeddedLedger::open(&path, op_key(), clock()).unwrap();
}
