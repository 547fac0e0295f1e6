//! `stayput bench ledger`: durable signed records per second on the
//! embedded ledger, and the time to re-verify the whole chain on open.
//!
//! A consortium (operator, a bank, a bureau with a dataset and a grant) is
//! set up, then `records` task records, signed beforehand by the bank, are
//! submitted by `writers` concurrent writers; each is acknowledged only
//! once its block is durable. The ledger is then closed and reopened, which
//! re-verifies every block, seal, Merkle root, signature and rule.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use rayon::prelude::*;
use stayput_chain_connector::embedded::{EmbeddedLedger, system_clock};
use stayput_chain_connector::evm::{Anvil, EvmLedger};
use stayput_chain_connector::records::{
    Computation, DatasetVersion, Grant, LedgerId, Member, OrgKey, Record, Role, SignedRecord, Task,
};
use stayput_chain_connector::tasks::TaskRequest;
use stayput_chain_connector::{Ledger, LedgerError, keys};
use std::collections::BTreeMap;

use crate::BenchError;

/// One run's figures.
#[derive(Debug, Clone)]
pub struct LedgerBenchReport {
    /// Which ledger.
    pub backend: Backend,
    /// Records written in the timed phase.
    pub records: usize,
    /// Concurrent writers.
    pub writers: usize,
    /// Time to write them durably.
    pub write_time: Duration,
    /// Blocks the chain holds.
    pub blocks: u64,
    /// Records the chain holds.
    pub chain_records: u64,
    /// Time to reopen and re-verify the whole chain.
    pub verify_time: Duration,
    /// Size of the ledger file.
    pub file_bytes: u64,
}

impl fmt::Display for LedgerBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.backend {
            Backend::Embedded => {
                writeln!(
                    f,
                    "ledger bench: embedded ledger (redb, fsync per block), {} concurrent writers",
                    self.writers
                )?;
            }
            Backend::Anvil => writeln!(
                f,
                "ledger bench: EVM backend against anvil on loopback (automine; each record checked, simulated, \
                 signed locally, sent raw, receipt awaited), {} concurrent writers",
                self.writers
            )?,
        }
        writeln!(
            f,
            "  write: {} signed records durable in {:.2} s = {:.0} records/s ({} blocks, {:.1} records per block)",
            self.records,
            self.write_time.as_secs_f64(),
            self.records as f64 / self.write_time.as_secs_f64(),
            self.blocks,
            self.chain_records as f64 / self.blocks as f64
        )?;
        writeln!(
            f,
            "  open: replayed and re-verified {} records in {} blocks in {:.2} s ({:.0} records/s)",
            self.chain_records,
            self.blocks,
            self.verify_time.as_secs_f64(),
            self.chain_records as f64 / self.verify_time.as_secs_f64()
        )?;
        if self.file_bytes > 0 {
            write!(f, "  file: {:.1} MB", self.file_bytes as f64 / 1e6)?;
        }
        Ok(())
    }
}

fn member(org: &str, key: &OrgKey, roles: &[Role]) -> Member {
    Member {
        org: org.into(),
        name: org.into(),
        roles: roles.to_vec(),
        signing_key: key.public_key(),
        endpoint: format!("https://{org}.example.invalid:7100"),
    }
}

fn key_err(e: LedgerError) -> BenchError {
    BenchError::Ledger(e)
}

/// Which ledger to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded ledger (redb).
    Embedded,
    /// The EVM backend against a local anvil node.
    Anvil,
}

/// The organisations of the benchmark consortium.
struct Orgs {
    operator: OrgKey,
    bank: OrgKey,
    bureau: OrgKey,
}

impl Orgs {
    /// The records that set the consortium up: members, a dataset, a grant.
    fn setup(&self, ledger: &LedgerId) -> Vec<SignedRecord> {
        let (op, bank, bureau) = (&self.operator, &self.bank, &self.bureau);
        vec![
            SignedRecord::sign(Record::Member(member("bank", bank, &[Role::Requester])), "operator", op, ledger),
            SignedRecord::sign(Record::Member(member("bureau", bureau, &[Role::DataOwner])), "operator", op, ledger),
            SignedRecord::sign(
                Record::DatasetVersion(DatasetVersion {
                    dataset: "blacklist".into(),
                    owner: "bureau".into(),
                    version: 1,
                    schema_digest: [1; 32],
                    content_digest: [2; 32],
                    protocol_key: None,
                }),
                "bureau",
                bureau,
                ledger,
            ),
            SignedRecord::sign(
                Record::Grant(Grant {
                    id: "g-bench".into(),
                    dataset: "blacklist".into(),
                    grantee: "bank".into(),
                    computations: vec![Computation::Psi],
                    columns: vec![],
                    min_cohort: 0,
                    max_uses: u32::MAX,
                    max_items: u64::MAX,
                    max_items_per_use: u64::MAX,
                    expires_at: u64::MAX,
                    epsilon_budget: 0,
                }),
                "bureau",
                bureau,
                ledger,
            ),
        ]
    }

    /// `n` task records — each with the bank's signed request, issued at
    /// `now` — signed by the bank (in parallel, before timing).
    fn tasks(&self, n: usize, ledger: &LedgerId, now: u64) -> Vec<SignedRecord> {
        (0..n)
            .into_par_iter()
            .map(|i| {
                let mut nonce = [0u8; 16];
                nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
                let request = TaskRequest {
                    requester: "bank".into(),
                    kind: Computation::Psi,
                    datasets: vec!["blacklist".into()],
                    receiver: "bank".into(),
                    params: vec![3; 32],
                    nonce,
                    issued_at: now,
                    ledger: *ledger,
                }
                .sign(&self.bank);
                SignedRecord::sign(Record::Task(Task::new(request, vec!["g-bench".into()])), "bank", &self.bank, ledger)
            })
            .collect()
    }
}

/// Submits `signed` from `writers` concurrent writers; returns the time.
async fn write_all(
    ledger: Arc<dyn Ledger>,
    signed: Vec<SignedRecord>,
    writers: usize,
    print_acks: bool,
) -> Result<Duration, BenchError> {
    let signed = Arc::new(signed);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..writers.max(1) {
        let (ledger, signed, next) = (ledger.clone(), signed.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(record) = signed.get(i) else { return Ok::<_, LedgerError>(()) };
                let receipt = ledger.submit(record.clone()).await?;
                if print_acks {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "ack {}", hex::encode(receipt.record_hash));
                    let _ = out.flush();
                }
            }
        }));
    }
    for h in handles {
        h.await
            .map_err(|e| BenchError::Io { path: "(writer)".into(), source: std::io::Error::other(e) })?
            .map_err(key_err)?;
    }
    Ok(started.elapsed())
}

/// Runs the benchmark in `dir` (kept) or a temporary folder. With
/// `print_acks`, prints `ack <record hash>` as each record is acknowledged
/// (the crash test reads these).
pub fn run(
    backend: Backend,
    records: usize,
    writers: usize,
    dir: Option<&Path>,
    print_acks: bool,
) -> Result<LedgerBenchReport, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| BenchError::Io { path: "(runtime)".into(), source })?;
    let orgs = Orgs { operator: OrgKey::generate(), bank: OrgKey::generate(), bureau: OrgKey::generate() };
    match backend {
        Backend::Embedded => run_embedded(&runtime, &orgs, records, writers, dir, print_acks),
        Backend::Anvil => runtime.block_on(run_anvil(&orgs, records, writers)),
    }
}

fn run_embedded(
    runtime: &tokio::runtime::Runtime,
    orgs: &Orgs,
    records: usize,
    writers: usize,
    dir: Option<&Path>,
    print_acks: bool,
) -> Result<LedgerBenchReport, BenchError> {
    let temp = tempfile::tempdir().map_err(|source| BenchError::Io { path: "(temp)".into(), source })?;
    let dir: PathBuf = dir.map_or_else(|| temp.path().to_path_buf(), Path::to_path_buf);
    std::fs::create_dir_all(&dir).map_err(|source| BenchError::Io { path: dir.clone(), source })?;
    let key_dir = dir.join("keys");
    for (org, key) in [("operator", &orgs.operator), ("bank", &orgs.bank), ("bureau", &orgs.bureau)] {
        keys::save(&key_dir, org, key).map_err(key_err)?;
    }
    let path = dir.join("ledger.redb");
    let op = || OrgKey::from_bytes(&orgs.operator.to_secret_bytes());
    let (write_time, blocks, chain_records) = runtime.block_on(async {
        let operator_member = member("operator", &orgs.operator, &[Role::Operator]);
        let ledger = Arc::new(EmbeddedLedger::create(&path, op(), operator_member, system_clock()).map_err(key_err)?);
        let id = ledger.id();
        for record in orgs.setup(&id) {
            ledger.submit(record).await.map_err(key_err)?;
        }
        let tasks = orgs.tasks(records, &id, ledger.now());
        let write_time = write_all(ledger.clone(), tasks, writers, print_acks).await?;
        let summary = ledger.summary();
        Ok::<_, BenchError>((write_time, summary.blocks, summary.records))
    })?;
    let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let started = Instant::now();
    let reopened = EmbeddedLedger::open(&path, op(), system_clock()).map_err(key_err)?;
    let verify_time = started.elapsed();
    if reopened.summary().records != chain_records {
        return Err(BenchError::WrongResult { expected: chain_records, got: reopened.summary().records });
    }
    Ok(LedgerBenchReport {
        backend: Backend::Embedded,
        records,
        writers,
        write_time,
        blocks,
        chain_records,
        verify_time,
        file_bytes,
    })
}

async fn run_anvil(orgs: &Orgs, records: usize, writers: usize) -> Result<LedgerBenchReport, BenchError> {
    let anvil = Anvil::start().await.map_err(key_err)?;
    let mut signers = BTreeMap::new();
    for org in ["operator", "bank", "bureau"] {
        let signer = PrivateKeySigner::random();
        anvil.fund(signer.address()).await.map_err(key_err)?;
        signers.insert(org.to_owned(), signer);
    }
    let accounts: BTreeMap<String, _> = signers.iter().map(|(o, s)| (o.clone(), s.address())).collect();
    let operator_member = member("operator", &orgs.operator, &[Role::Operator]);
    let config = EvmLedger::deploy(&anvil.url, None, signers["operator"].clone(), &orgs.operator, operator_member)
        .await
        .map_err(key_err)?;
    let ledger = Arc::new(EvmLedger::connect(config.clone(), signers.clone(), accounts.clone()).map_err(key_err)?);
    let id = config.ledger_id();
    for record in orgs.setup(&id) {
        ledger.submit(record).await.map_err(key_err)?;
    }
    let tasks = orgs.tasks(records, &id, anvil.now().await.map_err(key_err)?);
    let write_time = write_all(ledger.clone(), tasks, writers, false).await?;
    let blocks = ledger.height().await.map_err(key_err)? - config.deployed_at + 1;
    // A fresh reader replays and re-verifies every event from deployment.
    let started = Instant::now();
    let reader = EvmLedger::connect(config, BTreeMap::new(), accounts).map_err(key_err)?;
    let chain_records = reader.members().await.map_err(key_err)?.len() as u64;
    let verify_time = started.elapsed();
    let tasks = reader.tasks(None).await.map_err(key_err)?.len();
    if tasks != records || chain_records != 3 {
        return Err(BenchError::WrongResult { expected: records as u64, got: tasks as u64 });
    }
    Ok(LedgerBenchReport {
        backend: Backend::Anvil,
        records,
        writers,
        write_time,
        blocks,
        chain_records: records as u64 + 5,
        verify_time,
        file_bytes: 0,
    })
}
