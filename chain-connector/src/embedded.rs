//! The embedded ledger: a hash-chained, operator-sealed block log in one
//! redb file — the default backend.
//!
//! * **Blocks.** Each block holds the records of one group commit, a header
//!   with the previous block's hash, the Merkle root of its records and the
//!   sealing time, and the operator's ed25519 seal over the header hash.
//! * **Writes.** Writers hand signed records to one committer thread, which
//!   takes every record waiting (up to [`MAX_BLOCK_RECORDS`]), checks each
//!   against the rules in order, seals the accepted ones into a block and
//!   commits it in one durable redb transaction (fsync) before any writer is
//!   told it landed. Concurrent writers are serialised there, so the last
//!   remaining use of a grant goes to exactly one of them. If storage fails
//!   the handle stops; reopening re-verifies from disk.
//! * **Opening** re-verifies everything: block sequence, hash chain, seals,
//!   Merkle roots, every record's signature (in parallel) and every rule,
//!   and that the recorded tip is the last block. Any failure names the
//!   block. A consistent rollback of the newest blocks (tip rewritten too)
//!   cannot be detected from the file alone; receipts and inclusion proofs
//!   held by others are the check against it.
//! * **Identity.** Creating a ledger draws a random nonce; the ledger's
//!   [`LedgerId`] (its operator's key and that nonce, hashed) is sealed into
//!   every block header and covered by every record's signature, so records
//!   of one consortium are not valid in another's ledger.
//! * **Proofs.** [`EmbeddedLedger::prove`] returns an [`InclusionProof`] for
//!   any record, verifiable with the operator's public key alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, mpsc};
use std::thread::JoinHandle;

use rayon::prelude::*;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::LedgerError;
use crate::block::{Block, BlockHeader, InclusionProof, MAX_BLOCK_BYTES, MAX_BLOCK_RECORDS};
use crate::ledger::{GrantFilter, Ledger, LedgerEvent, Receipt};
use crate::merkle;
use crate::records::{DatasetVersion, Digest, LedgerId, Member, OrgKey, Record, SignedRecord};
use crate::rules::{GrantState, State, TaskState};

const BLOCKS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("blocks");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

/// Seconds since the Unix epoch, as the ledger's rules see time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

#[derive(Debug, Clone, Copy)]
struct Tip {
    height: u64,
    hash: Digest,
    timestamp: u64,
}

#[derive(Debug)]
struct Chain {
    state: State,
    tip: Tip,
    records: u64,
    index: HashMap<Digest, (u64, u32)>,
    stopped: Option<String>,
}

struct Pending {
    record: SignedRecord,
    reply: oneshot::Sender<Result<Receipt, LedgerError>>,
}

#[derive(Debug)]
struct Shared {
    db: Database,
    path: PathBuf,
    chain: RwLock<Chain>,
}

/// What verifying a ledger file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainSummary {
    /// Blocks.
    pub blocks: u64,
    /// Records.
    pub records: u64,
    /// Hash of the newest block's header.
    pub tip_hash: Digest,
}

/// The embedded ledger.
pub struct EmbeddedLedger {
    shared: Arc<Shared>,
    clock: Clock,
    submissions: Option<mpsc::Sender<Pending>>,
    committer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLedger").field("path", &self.shared.path).finish_non_exhaustive()
    }
}

fn read_chain(txn: &ReadTransaction, operator: &[u8; 32]) -> Result<Chain, LedgerError> {
    let meta = txn.open_table(META)?;
    let sealed_by: [u8; 32] = meta
        .get("operator")?
        .and_then(|v| v.value().try_into().ok())
        .ok_or(LedgerError::Corrupt { height: 0, reason: "the operator key is not recorded".into() })?;
    if &sealed_by != operator {
        return Err(LedgerError::WrongOperator { expected: hex::encode(operator), found: hex::encode(sealed_by) });
    }
    let recorded_tip = meta.get("tip")?.map(|v| v.value().to_vec()).unwrap_or_default();
    let blocks = txn.open_table(BLOCKS)?;
    let mut state: Option<State> = None;
    let mut index = HashMap::new();
    let mut tip: Option<Tip> = None;
    let mut records = 0u64;
    let mut pending: Vec<(u64, usize, [u8; 32], LedgerId, SignedRecord)> = Vec::new();
    let verify = |jobs: &mut Vec<(u64, usize, [u8; 32], LedgerId, SignedRecord)>| -> Result<(), LedgerError> {
        let failed = jobs
            .par_iter()
            .filter_map(|(h, i, key, ledger, r)| r.verify(key, ledger).err().map(|e| (*h, *i, e)))
            .min_by_key(|(h, i, _)| (*h, *i));
        jobs.clear();
        match failed {
            Some((height, i, e)) => Err(LedgerError::Corrupt { height, reason: format!("record {i}: {e}") }),
            None => Ok(()),
        }
    };
    for entry in blocks.iter()? {
        let (key, value) = entry?;
        let height = key.value();
        let corrupt = |reason: String| LedgerError::Corrupt { height, reason };
        let expected = tip.map_or(0, |t| t.height + 1);
        if height != expected {
            return Err(corrupt(format!("expected block {expected} here; blocks are missing")));
        }
        let block = Block::from_bytes(value.value()).map_err(|e| corrupt(e.to_string()))?;
        if block.header.height != height {
            return Err(corrupt(format!("it claims to be block {}", block.header.height)));
        }
        let prev = tip.map_or([0; 32], |t| t.hash);
        if block.header.prev_hash != prev {
            return Err(corrupt("it does not chain to the previous block's hash".into()));
        }
        if tip.is_some_and(|t| block.header.timestamp < t.timestamp) {
            return Err(corrupt("its time is earlier than the previous block's".into()));
        }
        let leaves = block.check(operator).map_err(corrupt)?;
        let state = state.get_or_insert_with(|| State::new(block.header.ledger));
        if block.header.ledger != state.ledger {
            return Err(corrupt(format!(
                "it names ledger {}, not this ledger ({})",
                block.header.ledger, state.ledger
            )));
        }
        for (i, (record, leaf)) in block.records.iter().zip(leaves).enumerate() {
            let key = state
                .apply_unverified(record, block.header.timestamp)
                .map_err(|e| corrupt(format!("record {i} breaks the rules: {e}")))?;
            index.insert(leaf, (height, u32::try_from(i).expect("bounded")));
            pending.push((height, i, key, state.ledger, record.clone()));
        }
        records += block.records.len() as u64;
        if pending.len() >= 4096 {
            verify(&mut pending)?;
        }
        tip = Some(Tip { height, hash: block.header.hash(), timestamp: block.header.timestamp });
    }
    verify(&mut pending)?;
    let no_genesis = || LedgerError::Corrupt { height: 0, reason: "there is no genesis block".into() };
    let tip = tip.ok_or_else(no_genesis)?;
    let state = state.ok_or_else(no_genesis)?;
    let mut expected_tip = tip.height.to_le_bytes().to_vec();
    expected_tip.extend_from_slice(&tip.hash);
    if recorded_tip != expected_tip {
        let recorded = recorded_tip.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        return Err(LedgerError::Corrupt {
            height: tip.height,
            reason: match recorded {
                Some(h) if h > tip.height => {
                    format!("the chain ends here but block {h} was committed: the file lost blocks")
                }
                _ => "it is not the tip the ledger committed".into(),
            },
        });
    }
    Ok(Chain { state, tip, records, index, stopped: None })
}

fn write_block(db: &Database, block: &Block, operator: Option<&[u8; 32]>) -> Result<(), LedgerError> {
    let txn = db.begin_write()?;
    {
        let mut blocks = txn.open_table(BLOCKS)?;
        blocks.insert(block.header.height, block.to_bytes().as_slice())?;
        let mut meta = txn.open_table(META)?;
        let mut tip = block.header.height.to_le_bytes().to_vec();
        tip.extend_from_slice(&block.header.hash());
        meta.insert("tip", tip.as_slice())?;
        if let Some(key) = operator {
            meta.insert("operator", key.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

fn seal(
    operator: &OrgKey,
    ledger: LedgerId,
    height: u64,
    prev: Digest,
    timestamp: u64,
    records: Vec<SignedRecord>,
    leaves: &[Digest],
) -> Block {
    let header = BlockHeader {
        ledger,
        height,
        prev_hash: prev,
        merkle_root: merkle::root(leaves),
        timestamp,
        record_count: u32::try_from(records.len()).expect("bounded"),
    };
    Block { seal: operator.sign_bytes(&header.hash()), header, records }
}

impl EmbeddedLedger {
    /// Creates a new ledger file whose genesis block admits the operator.
    /// `operator_member.signing_key` must be `operator`'s public key.
    pub fn create(path: &Path, operator: OrgKey, operator_member: Member, clock: Clock) -> Result<Self, LedgerError> {
        // Exclusive creation: two operators racing cannot both write a genesis.
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                LedgerError::Exists(path.into())
            } else {
                LedgerError::Store(redb::Error::Io(e))
            }
        })?;
        let genesis = || -> Result<(Database, Chain), LedgerError> {
            let backend = redb::backends::FileBackend::new(file).map_err(|e| LedgerError::Store(e.into()))?;
            let db = Database::builder().create_with_backend(backend)?;
            let now = clock();
            let org = operator_member.org.clone();
            let mut nonce = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
            let ledger = LedgerId::embedded(&operator.public_key(), &nonce);
            let genesis = SignedRecord::sign(Record::Member(operator_member), &org, &operator, &ledger);
            genesis.check_storable()?;
            let mut state = State::new(ledger);
            state.apply(&genesis, now)?;
            let leaf = genesis.hash();
            let mut index = HashMap::new();
            index.insert(leaf, (0, 0));
            let block = seal(&operator, ledger, 0, [0; 32], now, vec![genesis], &[leaf]);
            write_block(&db, &block, Some(&operator.public_key()))?;
            let tip = Tip { height: 0, hash: block.header.hash(), timestamp: now };
            Ok((db, Chain { state, tip, records: 1, index, stopped: None }))
        };
        match genesis() {
            Ok((db, chain)) => Ok(Self::start(db, path, chain, operator, clock)),
            Err(e) => {
                let _ = std::fs::remove_file(path);
                Err(e)
            }
        }
    }

    /// Opens and re-verifies an existing ledger file.
    pub fn open(path: &Path, operator: OrgKey, clock: Clock) -> Result<Self, LedgerError> {
        if !path.exists() {
            return Err(LedgerError::NotFound(path.into()));
        }
        let db = Database::open(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => LedgerError::InUse(path.into()),
            other => {
                LedgerError::Corrupt { height: 0, reason: format!("the storage engine cannot open the file ({other})") }
            }
        })?;
        let chain = read_chain(&db.begin_read()?, &operator.public_key())?;
        Ok(Self::start(db, path, chain, operator, clock))
    }

    /// Verifies a ledger file without opening it for writing.
    pub fn verify_file(path: &Path, operator: &[u8; 32]) -> Result<ChainSummary, LedgerError> {
        if !path.exists() {
            return Err(LedgerError::NotFound(path.into()));
        }
        let db = redb::ReadOnlyDatabase::open(path).map_err(|e| LedgerError::Corrupt {
            height: 0,
            reason: format!("the storage engine cannot open the file ({e})"),
        })?;
        let chain = read_chain(&db.begin_read()?, operator)?;
        Ok(ChainSummary { blocks: chain.tip.height + 1, records: chain.records, tip_hash: chain.tip.hash })
    }

    fn start(db: Database, path: &Path, chain: Chain, operator: OrgKey, clock: Clock) -> Self {
        let shared = Arc::new(Shared { db, path: path.into(), chain: RwLock::new(chain) });
        let (tx, rx) = mpsc::channel::<Pending>();
        let worker = shared.clone();
        let committer = std::thread::Builder::new()
            .name("ledger-committer".into())
            .spawn({
                let clock = clock.clone();
                move || commit_loop(&worker, &operator, &clock, &rx)
            })
            .expect("spawn the committer thread");
        Self { shared, clock, submissions: Some(tx), committer: Some(committer) }
    }

    /// The ledger's identity (what every record's signature covers).
    pub fn id(&self) -> LedgerId {
        self.shared.chain.read().expect("ledger lock").state.ledger
    }

    /// Summary of the chain as this handle sees it.
    pub fn summary(&self) -> ChainSummary {
        let chain = self.shared.chain.read().expect("ledger lock");
        ChainSummary { blocks: chain.tip.height + 1, records: chain.records, tip_hash: chain.tip.hash }
    }

    /// An inclusion proof for the record with this hash.
    pub fn prove(&self, record_hash: &Digest) -> Result<InclusionProof, LedgerError> {
        let (height, index) = *self
            .shared
            .chain
            .read()
            .expect("ledger lock")
            .index
            .get(record_hash)
            .ok_or_else(|| LedgerError::UnknownRecord(hex::encode(record_hash)))?;
        let block = self.block(height)?;
        Ok(block.proof(index as usize))
    }

    /// Up to `limit` stored blocks above `after` (from genesis when `None`),
    /// in their canonical encoding, and the tip height.
    pub fn blocks_after(
        &self,
        after: Option<u64>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Vec<u8>>, u64), LedgerError> {
        let tip = self.shared.chain.read().expect("ledger lock").tip.height;
        let txn = self.shared.db.begin_read()?;
        let table = txn.open_table(BLOCKS)?;
        let start = after.map_or(0, |h| h.saturating_add(1));
        let (mut blocks, mut bytes) = (Vec::new(), 0usize);
        for entry in table.range(start..)?.take(limit) {
            let block = entry?.1.value().to_vec();
            // At least one block; then no more than `max_bytes` in all.
            if !blocks.is_empty() && bytes + block.len() > max_bytes {
                break;
            }
            bytes += block.len();
            blocks.push(block);
        }
        Ok((blocks, tip))
    }

    /// The ledger's clock now (what the rules would judge a record by).
    pub fn now(&self) -> u64 {
        let tip = self.shared.chain.read().expect("ledger lock").tip.timestamp;
        (self.clock)().max(tip)
    }

    /// A stored block.
    pub fn block(&self, height: u64) -> Result<Block, LedgerError> {
        let txn = self.shared.db.begin_read()?;
        let table = txn.open_table(BLOCKS)?;
        let bytes = table.get(height)?.ok_or(LedgerError::Corrupt { height, reason: "missing".into() })?;
        Block::from_bytes(bytes.value())
    }

    /// Reads the state; refuses once a storage failure has stopped the
    /// handle (the state may then hold records the disk does not).
    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, LedgerError> {
        let chain = self.shared.chain.read().expect("ledger lock");
        match &chain.stopped {
            Some(reason) => Err(LedgerError::Stopped(reason.clone())),
            None => Ok(f(&chain.state)),
        }
    }
}

/// A verified, read-only view of a ledger file: for listing, audit and
/// proofs by anyone holding the operator's public key.
pub struct Snapshot {
    db: redb::ReadOnlyDatabase,
    chain: Chain,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("summary", &self.summary()).finish_non_exhaustive()
    }
}

impl Snapshot {
    /// Opens and verifies `path` against the operator's public key.
    pub fn open(path: &Path, operator: &[u8; 32]) -> Result<Self, LedgerError> {
        if !path.exists() {
            return Err(LedgerError::NotFound(path.into()));
        }
        let db = redb::ReadOnlyDatabase::open(path).map_err(|e| match e {
            redb::DatabaseError::RepairAborted => LedgerError::NeedsRecovery(path.into()),
            redb::DatabaseError::DatabaseAlreadyOpen => LedgerError::InUse(path.into()),
            other => {
                LedgerError::Corrupt { height: 0, reason: format!("the storage engine cannot open the file ({other})") }
            }
        })?;
        let chain = read_chain(&db.begin_read()?, operator)?;
        Ok(Self { db, chain })
    }

    /// The consortium's state at the tip.
    pub fn state(&self) -> &State {
        &self.chain.state
    }

    /// Blocks, records and tip.
    pub fn summary(&self) -> ChainSummary {
        ChainSummary { blocks: self.chain.tip.height + 1, records: self.chain.records, tip_hash: self.chain.tip.hash }
    }

    /// Where a record landed.
    pub fn locate(&self, record_hash: &Digest) -> Option<(u64, u32)> {
        self.chain.index.get(record_hash).copied()
    }

    /// An inclusion proof for a record.
    pub fn prove(&self, record_hash: &Digest) -> Result<InclusionProof, LedgerError> {
        let (height, index) =
            self.locate(record_hash).ok_or_else(|| LedgerError::UnknownRecord(hex::encode(record_hash)))?;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BLOCKS)?;
        let bytes = table.get(height)?.ok_or(LedgerError::Corrupt { height, reason: "missing".into() })?;
        Ok(Block::from_bytes(bytes.value())?.proof(index as usize))
    }

    /// Every record with its receipt, oldest first.
    pub fn records(&self) -> Result<Vec<LedgerEvent>, LedgerError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BLOCKS)?;
        let mut events = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            for (i, record) in Block::from_bytes(value.value())?.records.into_iter().enumerate() {
                let receipt = Receipt {
                    height: key.value(),
                    index: u32::try_from(i).expect("bounded"),
                    record_hash: record.hash(),
                };
                events.push(LedgerEvent { receipt, record });
            }
        }
        Ok(events)
    }
}

fn commit_loop(shared: &Shared, operator: &OrgKey, clock: &Clock, rx: &mpsc::Receiver<Pending>) {
    // A record that would take a block past MAX_BLOCK_BYTES opens the next.
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv() {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let mut bytes = first.record.to_bytes().len();
        let mut batch = vec![first];
        while batch.len() < MAX_BLOCK_RECORDS {
            match rx.try_recv() {
                Ok(p) => {
                    let len = p.record.to_bytes().len();
                    if bytes + len > MAX_BLOCK_BYTES {
                        carried = Some(p);
                        break;
                    }
                    bytes += len;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let mut chain = shared.chain.write().expect("ledger lock");
        if let Some(reason) = &chain.stopped {
            for p in batch {
                let _ = p.reply.send(Err(LedgerError::Stopped(reason.clone())));
            }
            continue;
        }
        let now = clock().max(chain.tip.timestamp);
        // Signatures on all cores against the keys known now; the rules in
        // order. A record whose writer's key changed earlier in this batch
        // is verified again against the new key.
        let verified: Vec<Option<[u8; 32]>> = batch
            .par_iter()
            .map(|p| {
                let key = chain.state.writer_key(&p.record).ok();
                key.filter(|key| p.record.verify(key, &chain.state.ledger).is_ok())
            })
            .collect();
        let mut accepted = Vec::with_capacity(batch.len());
        for (p, verified_with) in batch.into_iter().zip(verified) {
            if let Err(e) = p.record.check_storable() {
                let _ = p.reply.send(Err(e));
                continue;
            }
            let outcome = match verified_with {
                Some(key) if chain.state.writer_key(&p.record).ok() == Some(key) => {
                    chain.state.apply_unverified(&p.record, now).map(drop)
                }
                _ => chain.state.apply(&p.record, now),
            };
            match outcome {
                Ok(()) => accepted.push(p),
                Err(e) => drop(p.reply.send(Err(e))),
            }
        }
        if accepted.is_empty() {
            continue;
        }
        let (replies, records): (Vec<_>, Vec<_>) = accepted.into_iter().map(|p| (p.reply, p.record)).unzip();
        let height = chain.tip.height + 1;
        let hashes: Vec<Digest> = records.iter().map(SignedRecord::hash).collect();
        let block = seal(operator, chain.state.ledger, height, chain.tip.hash, now, records, &hashes);
        match write_block(&shared.db, &block, None) {
            Ok(()) => {
                for (i, hash) in hashes.iter().enumerate() {
                    chain.index.insert(*hash, (height, u32::try_from(i).expect("bounded")));
                }
                chain.tip = Tip { height, hash: block.header.hash(), timestamp: now };
                chain.records += hashes.len() as u64;
                drop(chain);
                for (i, (reply, hash)) in replies.into_iter().zip(hashes).enumerate() {
                    let receipt = Receipt { height, index: u32::try_from(i).expect("bounded"), record_hash: hash };
                    let _ = reply.send(Ok(receipt));
                }
            }
            Err(e) => {
                // The state now runs ahead of the disk: stop this handle.
                let reason = e.to_string();
                chain.stopped = Some(reason.clone());
                for reply in replies {
                    let _ = reply.send(Err(LedgerError::Stopped(reason.clone())));
                }
            }
        }
    }
}

impl Drop for EmbeddedLedger {
    fn drop(&mut self) {
        self.submissions.take();
        if let Some(handle) = self.committer.take() {
            let _ = handle.join();
        }
    }
}

#[async_trait::async_trait]
impl Ledger for EmbeddedLedger {
    async fn submit(&self, record: SignedRecord) -> Result<Receipt, LedgerError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || LedgerError::Stopped("the ledger is closing".into());
        self.submissions.as_ref().ok_or_else(stopped)?.send(Pending { record, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn identity(&self) -> Result<LedgerId, LedgerError> {
        Ok(self.id())
    }

    async fn height(&self) -> Result<u64, LedgerError> {
        Ok(self.shared.chain.read().expect("ledger lock").tip.height)
    }

    async fn member(&self, org: &str) -> Result<Option<Member>, LedgerError> {
        self.read(|s| s.members.get(org).cloned())
    }

    async fn members(&self) -> Result<Vec<Member>, LedgerError> {
        self.read(|s| s.members.values().cloned().collect())
    }

    async fn dataset(&self, id: &str) -> Result<Vec<DatasetVersion>, LedgerError> {
        self.read(|s| s.datasets.get(id).cloned().unwrap_or_default())
    }

    async fn datasets(&self) -> Result<Vec<DatasetVersion>, LedgerError> {
        self.read(State::latest_datasets)
    }

    async fn grant(&self, id: &str) -> Result<Option<GrantState>, LedgerError> {
        self.read(|s| s.grants.get(id).cloned())
    }

    async fn grants(&self, filter: &GrantFilter) -> Result<Vec<GrantState>, LedgerError> {
        self.read(|s| s.grants_matching(filter))
    }

    async fn task(&self, id: &str) -> Result<Option<TaskState>, LedgerError> {
        self.read(|s| s.tasks.get(id).cloned())
    }

    async fn tasks(&self, requester: Option<&str>) -> Result<Vec<TaskState>, LedgerError> {
        self.read(|s| s.tasks_of(requester))
    }

    async fn disputes(&self, dataset: Option<&str>) -> Result<Vec<crate::rules::DisputeStatus>, LedgerError> {
        self.read(|s| s.disputes_of(dataset))
    }

    async fn events_after(&self, height: u64, limit: usize) -> Result<Vec<LedgerEvent>, LedgerError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let txn = shared.db.begin_read()?;
            let table = txn.open_table(BLOCKS)?;
            let mut events = Vec::new();
            for entry in table.range(height.saturating_add(1)..)? {
                let (key, value) = entry?;
                let block = Block::from_bytes(value.value())?;
                for (i, record) in block.records.into_iter().enumerate() {
                    let receipt = Receipt {
                        height: key.value(),
                        index: u32::try_from(i).expect("bounded"),
                        record_hash: record.hash(),
                    };
                    events.push(LedgerEvent { receipt, record });
                }
                if events.len() >= limit {
                    break;
                }
            }
            Ok(events)
        })
        .await
        .map_err(|e| LedgerError::Stopped(e.to_string()))?
    }
}
