//! The EVM backend: the consortium's ledger as one Solidity contract
//! (`contracts/StayputLedger.sol`) on any EVM chain — FISCO BCOS ≥ 3.9
//! through its web3 endpoint, Hyperledger Besu, geth, anvil.
//!
//! * **Writes.** A record is checked locally first (its ed25519 signature
//!   against the writer's member key, which the contract cannot do on a
//!   london EVM), simulated with `eth_call` so a refusal comes back as the
//!   rule that refused it, then signed locally with the writer's account
//!   and sent with `eth_sendRawTransaction` (FISCO BCOS's endpoint does not
//!   sign). Sends are serialised per account, so nonces never gap. The
//!   contract enforces the rules again, authoritatively, at write time.
//! * **Reads.** A replica follows the contract's `Recorded` events with
//!   `eth_getLogs`, decodes each record, checks its hash, verifies its
//!   signature and replays it through [`crate::rules`] at its block's
//!   timestamp: any disagreement with the contract is reported as damage.
//!   Grant usage and task status are read live with `eth_call`.
//! * **Heights** are EVM block numbers; a receipt's index is the log index.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::network::{EthereumWallet, TransactionBuilder};
pub use alloy::primitives::Address;
use alloy::primitives::{Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::SolEvent;
use tokio::sync::Mutex;

use crate::LedgerError;
use crate::ledger::{GrantFilter, Ledger, LedgerEvent, Receipt};
use crate::records::{DatasetVersion, LedgerId, Member, OrgKey, Record, Role, SignedRecord, TaskStatus};
use crate::rules::{GrantState, Refusal, State, TaskState};

sol!(
    #[sol(rpc)]
    #[allow(missing_docs, clippy::all)]
    StayputLedger,
    "contracts/StayputLedger.abi.json"
);

use StayputLedger::StayputLedgerErrors as ContractError;

/// The contract's deployment bytecode (compiled by `contracts/build.mjs`).
pub const BYTECODE_HEX: &str = include_str!("../contracts/StayputLedger.bin");

fn rpc_err(context: &str, e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Rpc(format!("{context}: {e}"))
}

fn static_str(s: &str, known: &[&'static str]) -> &'static str {
    known.iter().copied().find(|k| *k == s).unwrap_or("(unrecognised)")
}

/// The refusal a contract revert stands for.
fn refusal(e: ContractError) -> LedgerError {
    use ContractError as E;
    let unknown = |what: &str, code: u8| LedgerError::Malformed {
        what: "contract revert",
        reason: format!("an unknown {what} code {code}; the contract and this build disagree"),
    };
    let status =
        |code: u8| TaskStatus::ALL.iter().copied().find(|s| s.code() == code).ok_or_else(|| unknown("status", code));
    let refusal = match e {
        E::Malformed(x) => {
            return LedgerError::Malformed { what: "record (contract)", reason: x.reason };
        }
        E::WrongAccount(x) => return LedgerError::WrongAccount { writer: x.writer },
        E::UnknownWriter(x) => Refusal::UnknownWriter { writer: x.writer },
        E::BadGenesis(_) => Refusal::BadGenesis,
        E::NotOperator(x) => Refusal::NotOperator { writer: x.writer, kind: static_str(&x.kind, &["member"]) },
        E::MissingRole(x) => match Role::ALL.iter().copied().find(|r| r.code() == x.role) {
            Some(role) => Refusal::MissingRole { org: x.org, role },
            None => return unknown("role", x.role),
        },
        E::NotOwner(x) => Refusal::NotOwner { writer: x.writer, owner: x.owner, dataset: x.dataset },
        E::NotTaskParty(x) => Refusal::NotTaskParty { writer: x.writer, task: x.task, requester: x.requester },
        E::Unknown(x) => {
            Refusal::Unknown { what: static_str(&x.what, &["member", "dataset", "grant", "task"]), id: x.id }
        }
        E::Duplicate(x) => Refusal::Duplicate { what: static_str(&x.what, &["grant", "task"]), id: x.id },
        E::VersionOutOfOrder(x) => Refusal::VersionOutOfOrder { dataset: x.dataset, current: x.current, got: x.got },
        E::EmptyGrant(x) => Refusal::EmptyGrant { grant: x.grant },
        E::Revoked(x) => Refusal::Revoked { grant: x.grant },
        E::Expired(x) => Refusal::Expired { grant: x.grant, expires_at: x.expiresAt, now: x.now_ },
        E::UsesExhausted(x) => Refusal::UsesExhausted { grant: x.grant, max_uses: x.maxUses },
        E::ItemsPerUseExceeded(x) => {
            Refusal::ItemsPerUseExceeded { grant: x.grant, max_items_per_use: x.maxItemsPerUse, asked: x.asked }
        }
        E::EpsilonExhausted(x) => {
            Refusal::EpsilonExhausted { grant: x.grant, budget: x.budget, spent: x.spent, asked: x.asked }
        }
        E::ItemsExhausted(x) => {
            Refusal::ItemsExhausted { grant: x.grant, max_items: x.maxItems, used: x.used, asked: x.asked }
        }
        E::GrantMismatch(x) => Refusal::GrantMismatch {
            grant: x.grant,
            task: x.task,
            problem: static_str(
                &x.problem,
                &[
                    "not the requester's",
                    "for a dataset the task does not read",
                    "not for this kind of computation",
                    "not listed",
                ],
            ),
        },
        E::IllegalTransition(x) => match (status(x.from), status(x.to)) {
            (Ok(from), Ok(to)) => Refusal::IllegalTransition { task: x.task, from, to },
            (Err(e), _) | (_, Err(e)) => return e,
        },
        E::TaskNotActive(x) => match status(x.status) {
            Ok(status) => Refusal::TaskNotActive { task: x.task, status },
            Err(e) => return e,
        },
        E::Replayed(x) => Refusal::Replayed { hash: hex::encode(x.recordHash) },
        E::KeyChangeByOperator(x) => Refusal::KeyChangeByOperator { writer: x.writer, org: x.org },
        E::Suspended(x) => Refusal::Suspended { org: x.org },
        E::BadKeyRotation(x) => {
            Refusal::BadKeyRotation { org: x.org, problem: static_str(&x.problem, &["it is the current key"]) }
        }
        E::BadTaskRequest(x) => Refusal::BadTaskRequest { task: x.task, problem: x.problem },
        E::StaleTaskRequest(x) => Refusal::StaleTaskRequest { task: x.task, issued_at: x.issuedAt, now: x.now_ },
        E::DuplicateUse(x) => Refusal::DuplicateUse { task: x.task, grant: x.grant, writer: x.writer },
        E::WrongReceiver(x) => Refusal::WrongReceiver { task: x.task, receiver: x.receiver, expected: x.expected },
        E::DuplicateResult(x) => Refusal::DuplicateResult { task: x.task, receiver: x.receiver },
    };
    LedgerError::Refused(refusal)
}

fn contract_error(context: &str, e: &alloy::contract::Error) -> LedgerError {
    match e.as_decoded_interface_error::<ContractError>() {
        Some(decoded) => refusal(decoded),
        None => rpc_err(context, e),
    }
}

/// What a handle knows about the deployed contract: the trust anchor a
/// reader holds independently of its RPC endpoint.
#[derive(Clone)]
pub struct EvmConfig {
    /// The JSON-RPC endpoint (loopback only in this project's tests).
    pub rpc_url: String,
    /// The chain's id (FISCO BCOS: 20200 by default; anvil: 31337).
    pub chain_id: u64,
    /// The contract's address.
    pub contract: Address,
    /// The block it was deployed in (replay starts there).
    pub deployed_at: u64,
    /// The operator's ed25519 public key: the genesis record on the
    /// contract must admit exactly this key, or the reader refuses the chain.
    pub operator_key: [u8; 32],
}

impl EvmConfig {
    /// The ledger's identity: the chain id and the contract's address.
    pub fn ledger_id(&self) -> LedgerId {
        LedgerId::evm(self.chain_id, &self.contract.into_array())
    }
}

impl std::fmt::Debug for EvmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Endpoint URLs may carry credentials: show scheme, host and port only.
        let endpoint = parse_url(&self.rpc_url).map_or_else(
            |_| "<unparsable>".to_owned(),
            |u| format!("{}://{}:{}", u.scheme(), u.host_str().unwrap_or("?"), u.port_or_known_default().unwrap_or(0)),
        );
        f.debug_struct("EvmConfig")
            .field("endpoint", &endpoint)
            .field("chain_id", &self.chain_id)
            .field("contract", &self.contract)
            .field("deployed_at", &self.deployed_at)
            .finish()
    }
}

/// Where an organisation finds the EVM ledger and its own account, as a
/// `[ledger.evm]` section of a node or coordinator configuration.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmSettings {
    /// The chain's JSON-RPC endpoint.
    pub rpc_url: String,
    /// The chain's id, pinned: an endpoint of another chain is refused.
    pub chain_id: u64,
    /// The contract's address (0x…).
    pub contract: Address,
    /// The block the contract was deployed in.
    pub deployed_at: u64,
    /// File holding this organisation's EVM account key (hex; mode 0600).
    pub account_key: PathBuf,
}

/// Reads an EVM account key file (64 hex digits, optional 0x).
pub fn load_account(path: &std::path::Path) -> Result<PrivateKeySigner, LedgerError> {
    let bad = |reason: String| LedgerError::KeyFile { path: path.into(), reason };
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?);
    let hex_text = text.trim().trim_start_matches("0x");
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_text, bytes.as_mut_slice()).map_err(|_| bad("expected 64 hex digits".into()))?;
    PrivateKeySigner::from_slice(bytes.as_slice()).map_err(|e| bad(e.to_string()))
}

/// Writes a new random EVM account key to `path` (mode 0600); returns it.
pub fn create_account(path: &std::path::Path) -> Result<PrivateKeySigner, LedgerError> {
    let signer = PrivateKeySigner::random();
    let text = zeroize::Zeroizing::new(hex::encode(signer.to_bytes()));
    crate::keys::write_secret(path, text.as_bytes())?;
    Ok(signer)
}

impl EvmSettings {
    /// The deployment these settings name, trusting `operator_key`.
    pub fn config(&self, operator_key: [u8; 32]) -> EvmConfig {
        EvmConfig {
            rpc_url: self.rpc_url.clone(),
            chain_id: self.chain_id,
            contract: self.contract,
            deployed_at: self.deployed_at,
            operator_key,
        }
    }

    /// A handle writing as `org` with its configured account, trusting
    /// `operator_key` as the operator's.
    pub fn open(&self, org: &str, operator_key: [u8; 32]) -> Result<EvmLedger, LedgerError> {
        let signer = load_account(&self.account_key)?;
        EvmLedger::connect(self.config(operator_key), BTreeMap::from([(org.to_owned(), signer)]), BTreeMap::new())
    }
}

/// A record the contract accepted but the rules (or decoding) refuse: set
/// aside by every reader, never applied, so one member cannot halt readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Block it landed in.
    pub height: u64,
    /// Its sequence number in the contract.
    pub seq: u64,
    /// Why it was set aside.
    pub reason: String,
}

#[derive(Debug)]
struct Replica {
    state: State,
    synced_to: Option<u64>,
    next_seq: u64,
    quarantined: Vec<Quarantined>,
    /// Whether the endpoint's chain id was checked against the pinned one.
    chain_checked: bool,
}

impl Replica {
    fn new(ledger: LedgerId) -> Self {
        Self { state: State::new(ledger), synced_to: None, next_seq: 0, quarantined: Vec::new(), chain_checked: false }
    }
}

/// One `Recorded` event, checked for origin and order but not yet decoded.
struct RawEvent {
    height: u64,
    index: u32,
    seq: u64,
    record_hash: [u8; 32],
    bytes: Vec<u8>,
}

/// Blocks per `eth_getLogs` request (nodes cap ranges).
const LOG_PAGE_BLOCKS: u64 = 2000;
/// How long to wait for a record's receipt.
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// A handle on the EVM ledger, writing for the organisations whose
/// accounts it holds.
pub struct EvmLedger {
    config: EvmConfig,
    reader: DynProvider,
    writers: BTreeMap<String, Mutex<DynProvider>>,
    accounts: BTreeMap<String, Address>,
    replica: Mutex<Replica>,
    timestamps: Mutex<HashMap<u64, u64>>,
}

impl std::fmt::Debug for EvmLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvmLedger")
            .field("config", &self.config)
            .field("writes_for", &self.writers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn parse_url(url: &str) -> Result<alloy::transports::http::reqwest::Url, LedgerError> {
    url.parse().map_err(|e| rpc_err(&format!("endpoint '{url}'"), e))
}

/// How often to poll for a receipt: a loopback node mines at once, a
/// consortium chain takes seconds.
fn poll_interval(url: &alloy::transports::http::reqwest::Url) -> Duration {
    let local = url.host_str().is_some_and(|h| h == "localhost" || h == "::1" || h == "[::1]" || h.starts_with("127."));
    if local { Duration::from_millis(5) } else { Duration::from_secs(1) }
}

fn read_provider(url: &str) -> Result<DynProvider, LedgerError> {
    let url = parse_url(url)?;
    let provider = ProviderBuilder::default().connect_http(url.clone());
    provider.client().set_poll_interval(poll_interval(&url));
    Ok(provider.erased())
}

fn wallet_provider(url: &str, signer: PrivateKeySigner) -> Result<DynProvider, LedgerError> {
    let url = parse_url(url)?;
    let provider = ProviderBuilder::default()
        .with_simple_nonce_management()
        .with_gas_estimation()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url.clone());
    provider.client().set_poll_interval(poll_interval(&url));
    Ok(provider.erased())
}

impl EvmLedger {
    /// Deploys the contract from the operator's EVM account, then writes
    /// the genesis record — `operator_member` admitting itself, signed with
    /// `operator_key` for the new ledger's id (chain id and the contract
    /// address the receipt names, never one derived locally); returns the
    /// deployment's configuration.
    pub async fn deploy(
        rpc_url: &str,
        account: PrivateKeySigner,
        operator_key: &OrgKey,
        operator_member: Member,
    ) -> Result<EvmConfig, LedgerError> {
        let provider = wallet_provider(rpc_url, account)?;
        let code = hex::decode(BYTECODE_HEX.trim()).map_err(|e| rpc_err("contract bytecode", e))?;
        let tx = TransactionRequest::default().with_deploy_code(code);
        let pending = provider.send_transaction(tx).await.map_err(|e| rpc_err("deploying the contract", e))?;
        let receipt = pending.get_receipt().await.map_err(|e| rpc_err("deploying the contract", e))?;
        if !receipt.status() {
            return Err(rpc_err("deploying the contract", "the deployment reverted"));
        }
        let contract =
            receipt.contract_address.ok_or_else(|| rpc_err("deploying the contract", "no contract address"))?;
        let deployed_at = receipt.block_number.unwrap_or(0);
        let chain_id = provider.get_chain_id().await.map_err(|e| rpc_err("eth_chainId", e))?;
        let config = EvmConfig {
            rpc_url: rpc_url.into(),
            chain_id,
            contract,
            deployed_at,
            operator_key: operator_key.public_key(),
        };
        let org = operator_member.org.clone();
        let genesis = SignedRecord::sign(Record::Member(operator_member), &org, operator_key, &config.ledger_id());
        genesis.check_storable()?;
        let instance = StayputLedger::new(contract, provider);
        let call = instance.submit(Bytes::from(genesis.to_bytes()), Address::ZERO);
        call.call().await.map_err(|e| contract_error("simulating the genesis record", &e))?;
        let pending = call.send().await.map_err(|e| contract_error("sending the genesis record", &e))?;
        let receipt = pending
            .with_timeout(Some(RECEIPT_TIMEOUT))
            .get_receipt()
            .await
            .map_err(|e| rpc_err("waiting for the genesis record's receipt", e))?;
        if !receipt.status() {
            return Err(rpc_err("writing the genesis record", "the transaction reverted"));
        }
        Ok(config)
    }

    /// A handle that writes for the organisations in `signers` and knows
    /// the EVM accounts of `accounts` (needed to admit members).
    pub fn connect(
        config: EvmConfig,
        signers: BTreeMap<String, PrivateKeySigner>,
        accounts: BTreeMap<String, Address>,
    ) -> Result<Self, LedgerError> {
        let reader = read_provider(&config.rpc_url)?;
        let writers = signers
            .into_iter()
            .map(|(org, signer)| Ok((org, Mutex::new(wallet_provider(&config.rpc_url, signer)?))))
            .collect::<Result<_, LedgerError>>()?;
        Ok(Self {
            replica: Mutex::new(Replica::new(config.ledger_id())),
            config,
            reader,
            writers,
            accounts,
            timestamps: Mutex::new(HashMap::new()),
        })
    }

    /// The deployment this handle talks to.
    pub fn config(&self) -> &EvmConfig {
        &self.config
    }

    fn contract(&self, provider: DynProvider) -> StayputLedger::StayputLedgerInstance<DynProvider> {
        StayputLedger::new(self.config.contract, provider)
    }

    async fn block_timestamp(&self, block: u64) -> Result<u64, LedgerError> {
        if let Some(t) = self.timestamps.lock().await.get(&block) {
            return Ok(*t);
        }
        let header = self
            .reader
            .get_block_by_number(block.into())
            .await
            .map_err(|e| rpc_err("reading a block", e))?
            .ok_or_else(|| rpc_err("reading a block", format!("block {block} is missing")))?;
        let t = header.header.timestamp;
        let mut cache = self.timestamps.lock().await;
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(block, t);
        Ok(t)
    }

    /// `Recorded` events in blocks `from..=to`, from this contract only,
    /// not removed by a reorganisation, in chain order.
    async fn raw_events(&self, from: u64, to: u64) -> Result<Vec<RawEvent>, LedgerError> {
        let filter = Filter::new()
            .address(self.config.contract)
            .event_signature(StayputLedger::Recorded::SIGNATURE_HASH)
            .from_block(from)
            .to_block(to);
        let logs = self.reader.get_logs(&filter).await.map_err(|e| rpc_err("eth_getLogs", e))?;
        let mut events = Vec::with_capacity(logs.len());
        for log in logs {
            let bad = |reason: &str| rpc_err("eth_getLogs", format!("the node returned {reason}"));
            if log.address() != self.config.contract {
                return Err(bad("a log of another contract"));
            }
            if log.removed {
                continue;
            }
            let height = log.block_number.ok_or_else(|| bad("a log without a block number"))?;
            let index = log.log_index.ok_or_else(|| bad("a log without an index"))?;
            let event = StayputLedger::Recorded::decode_log(&log.inner)
                .map_err(|e| LedgerError::Corrupt { height, reason: format!("undecodable event: {e}") })?;
            events.push(RawEvent {
                height,
                index: u32::try_from(index).map_err(|_| bad("a log index beyond u32"))?,
                seq: event.seq,
                record_hash: event.recordHash.0,
                bytes: event.signedRecord.to_vec(),
            });
        }
        events.sort_by_key(|e| (e.height, e.index));
        Ok(events)
    }

    /// Brings the replica up to the newest block, page by page. Each page's
    /// block times are fetched before anything is applied, so a failing
    /// node leaves the replica exactly as it was. Every record is decoded,
    /// hash-checked, signature-checked and run through the rules; one that
    /// fails is quarantined. A gap or reordering in the contract's sequence
    /// numbers means the node is hiding records: that stops the read.
    async fn sync(&self) -> Result<tokio::sync::MutexGuard<'_, Replica>, LedgerError> {
        let mut replica = self.replica.lock().await;
        if !replica.chain_checked {
            let chain_id = self.reader.get_chain_id().await.map_err(|e| rpc_err("eth_chainId", e))?;
            if chain_id != self.config.chain_id {
                return Err(rpc_err(
                    "eth_chainId",
                    format!(
                        "the endpoint serves chain {chain_id}, not the pinned chain {}; check [ledger.evm] rpc_url and chain_id",
                        self.config.chain_id
                    ),
                ));
            }
            replica.chain_checked = true;
        }
        let latest = self.reader.get_block_number().await.map_err(|e| rpc_err("eth_blockNumber", e))?;
        let mut from = replica.synced_to.map_or(self.config.deployed_at, |h| h + 1);
        while from <= latest {
            let to = latest.min(from + LOG_PAGE_BLOCKS - 1);
            let events = self.raw_events(from, to).await?;
            let mut times = HashMap::new();
            for e in &events {
                if let std::collections::hash_map::Entry::Vacant(slot) = times.entry(e.height) {
                    slot.insert(self.block_timestamp(e.height).await?);
                }
            }
            // Decoding, signature checks and rules are heavy: off the executor.
            let state = std::mem::replace(&mut replica.state, State::new(self.config.ledger_id()));
            let next_seq = replica.next_seq;
            let operator = self.config.operator_key;
            let replayed =
                tokio::task::spawn_blocking(move || apply_events(state, next_seq, events, &times, &operator)).await;
            let Ok((state, next_seq, quarantined, outcome)) = replayed else {
                // The state went with the failed task: replay from deployment next time.
                *replica = Replica::new(self.config.ledger_id());
                return Err(rpc_err("replaying events", "the replay task failed"));
            };
            replica.state = state;
            replica.next_seq = next_seq;
            replica.quarantined.extend(quarantined);
            outcome?;
            replica.synced_to = Some(to);
            from = to + 1;
        }
        Ok(replica)
    }

    /// Records the contract accepted that the rules refuse, set aside.
    pub async fn quarantined(&self) -> Result<Vec<Quarantined>, LedgerError> {
        Ok(self.sync().await?.quarantined.clone())
    }
}

/// Applies one page of events in order to `state`: checks the contract's
/// sequence, decodes, checks the hash and replays through the rules
/// (signatures included); a record that fails is quarantined.
fn apply_events(
    mut state: State,
    mut next_seq: u64,
    events: Vec<RawEvent>,
    times: &HashMap<u64, u64>,
    operator: &[u8; 32],
) -> (State, u64, Vec<Quarantined>, Result<(), LedgerError>) {
    let mut quarantined = Vec::new();
    for e in events {
        if e.seq != next_seq {
            let reason =
                format!("record {} arrived where {next_seq} was due: the node omitted or reordered records", e.seq);
            return (state, next_seq, quarantined, Err(LedgerError::Corrupt { height: e.height, reason }));
        }
        if next_seq == 0 {
            // The genesis must admit the operator this reader trusts.
            let genesis = SignedRecord::from_bytes(&e.bytes);
            let admits =
                matches!(&genesis, Ok(SignedRecord { record: Record::Member(m), .. }) if &m.signing_key == operator);
            if !admits || genesis.as_ref().is_ok_and(|g| g.hash() != e.record_hash) {
                let reason = format!(
                    "the contract's genesis record does not admit the pinned operator key {}: this is not the consortium's ledger",
                    hex::encode(operator)
                );
                return (state, next_seq, quarantined, Err(LedgerError::Corrupt { height: e.height, reason }));
            }
        }
        next_seq += 1;
        let applied = SignedRecord::from_bytes(&e.bytes).and_then(|record| {
            if record.hash() != e.record_hash {
                return Err(LedgerError::Malformed { what: "event", reason: "record hash mismatch".into() });
            }
            state.apply(&record, times[&e.height])
        });
        if let Err(err) = applied {
            quarantined.push(Quarantined { height: e.height, seq: e.seq, reason: err.to_string() });
        }
    }
    (state, next_seq, quarantined, Ok(()))
}

#[async_trait::async_trait]
impl Ledger for EvmLedger {
    async fn submit(&self, record: SignedRecord) -> Result<Receipt, LedgerError> {
        let writer =
            self.writers.get(&record.writer).ok_or_else(|| LedgerError::NoAccount { org: record.writer.clone() })?;
        record.check_storable()?;
        {
            // The signature and every rule, locally, at the newest block's
            // time: what the contract cannot check (ed25519, key validity)
            // is refused here rather than quarantined by every reader.
            let replica = self.sync().await?;
            let now = match replica.synced_to {
                Some(height) => self.block_timestamp(height).await?,
                None => 0,
            };
            replica.state.check(&record, now)?;
        }
        let account = match &record.record {
            Record::Member(m) => {
                *self.accounts.get(&m.org).ok_or_else(|| LedgerError::NoAccount { org: m.org.clone() })?
            }
            _ => Address::ZERO,
        };
        let provider = writer.lock().await; // one send at a time per account
        let instance = self.contract(provider.clone());
        let call = instance.submit(Bytes::from(record.to_bytes()), account);
        call.call().await.map_err(|e| contract_error("simulating the record", &e))?;
        let pending = call.send().await.map_err(|e| contract_error("sending the record", &e))?;
        let tx_hash = *pending.tx_hash();
        let receipt = pending
            .with_timeout(Some(RECEIPT_TIMEOUT))
            .get_receipt()
            .await
            .map_err(|e| rpc_err(&format!("waiting for the receipt of transaction {tx_hash}"), e))?;
        if !receipt.status() {
            // Reverted on chain after simulating cleanly: another write got in first.
            return Err(call.call().await.err().map_or_else(
                || rpc_err("sending the record", "the transaction reverted"),
                |e| contract_error("the record", &e),
            ));
        }
        // Written only when the receipt's log of this contract carries this
        // record's hash: an endpoint cannot acknowledge a record it dropped.
        let hash = record.hash();
        let log = receipt
            .inner
            .logs()
            .iter()
            .filter(|l| l.address() == self.config.contract)
            .find(|l| StayputLedger::Recorded::decode_log(&l.inner).is_ok_and(|e| e.recordHash.0 == hash))
            .ok_or_else(|| rpc_err("the record's receipt", "no Recorded event of this contract carries the record"))?;
        Ok(Receipt {
            height: receipt.block_number.unwrap_or(0),
            index: u32::try_from(log.log_index.unwrap_or(0)).unwrap_or(u32::MAX),
            record_hash: hash,
        })
    }

    async fn identity(&self) -> Result<LedgerId, LedgerError> {
        Ok(self.config.ledger_id())
    }

    async fn height(&self) -> Result<u64, LedgerError> {
        self.reader.get_block_number().await.map_err(|e| rpc_err("eth_blockNumber", e))
    }

    async fn member(&self, org: &str) -> Result<Option<Member>, LedgerError> {
        Ok(self.sync().await?.state.members.get(org).cloned())
    }

    async fn members(&self) -> Result<Vec<Member>, LedgerError> {
        Ok(self.sync().await?.state.members.values().cloned().collect())
    }

    async fn dataset(&self, id: &str) -> Result<Vec<DatasetVersion>, LedgerError> {
        Ok(self.sync().await?.state.datasets.get(id).cloned().unwrap_or_default())
    }

    async fn datasets(&self) -> Result<Vec<DatasetVersion>, LedgerError> {
        Ok(self.sync().await?.state.latest_datasets())
    }

    async fn grant(&self, id: &str) -> Result<Option<GrantState>, LedgerError> {
        let (mut state, at) = {
            let replica = self.sync().await?;
            let Some(state) = replica.state.grants.get(id).cloned() else { return Ok(None) };
            (state, replica.synced_to.unwrap_or(self.config.deployed_at))
        };
        // The contract's own counters at the same block (eth_call); where they
        // are stricter (a quarantined record consumed a use), they win.
        let usage = self.contract(self.reader.clone()).grantUsage(id.to_owned()).block(at.into()).call().await;
        let usage = usage.map_err(|e| contract_error("eth_call grantUsage", &e))?;
        state.uses = state.uses.max(usage.uses);
        state.items = state.items.max(usage.items);
        state.revoked |= usage.revoked;
        Ok(Some(state))
    }

    async fn grants(&self, filter: &GrantFilter) -> Result<Vec<GrantState>, LedgerError> {
        Ok(self.sync().await?.state.grants_matching(filter))
    }

    async fn task(&self, id: &str) -> Result<Option<TaskState>, LedgerError> {
        Ok(self.sync().await?.state.tasks.get(id).cloned())
    }

    async fn tasks(&self, requester: Option<&str>) -> Result<Vec<TaskState>, LedgerError> {
        Ok(self.sync().await?.state.tasks_of(requester))
    }

    async fn events_after(&self, height: u64, limit: usize) -> Result<Vec<LedgerEvent>, LedgerError> {
        let replica = self.sync().await?;
        let latest = replica.synced_to.unwrap_or(0);
        let mut out: Vec<LedgerEvent> = Vec::new();
        let mut from = height.saturating_add(1).max(self.config.deployed_at);
        // Page by block range; whole blocks only; only records the replica
        // verified and applied (quarantined ones are left out).
        while from <= latest && out.len() < limit {
            let to = latest.min(from + LOG_PAGE_BLOCKS - 1);
            for e in self.raw_events(from, to).await? {
                if out.len() >= limit && out.last().is_some_and(|l| l.receipt.height != e.height) {
                    break;
                }
                if !replica.state.seen.contains(&e.record_hash) {
                    continue;
                }
                let record = SignedRecord::from_bytes(&e.bytes)?;
                out.push(LedgerEvent {
                    receipt: Receipt { height: e.height, index: e.index, record_hash: e.record_hash },
                    record,
                });
            }
            from = to + 1;
        }
        Ok(out)
    }
}

/// FISCO BCOS's default chain id, which [`Anvil`] also runs as.
pub const FISCO_CHAIN_ID: u64 = 20200;

/// A local anvil node for tests and benchmarks: the pinned npm build,
/// listening on a free loopback port, stopped when dropped.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    /// Its JSON-RPC endpoint.
    pub url: String,
}

impl Anvil {
    /// Where the project's test command installs anvil, or `STAYPUT_ANVIL`.
    /// The platform package's binary is run directly (not the npm wrapper
    /// script), so stopping it stops anvil itself.
    pub fn binary() -> Result<PathBuf, LedgerError> {
        if let Some(path) = std::env::var_os("STAYPUT_ANVIL") {
            return Ok(path.into());
        }
        let packages = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contracts/tools/node_modules/@foundry-rs");
        let platform = match (std::env::consts::OS, std::env::consts::ARCH) {
            ("linux", "x86_64") => "anvil-linux-amd64",
            ("linux", "aarch64") => "anvil-linux-arm64",
            ("macos", "x86_64") => "anvil-darwin-amd64",
            ("macos", "aarch64") => "anvil-darwin-arm64",
            ("windows", "x86_64") => "anvil-win32-amd64",
            _ => "anvil-unsupported-platform",
        };
        let path = packages.join(platform).join("bin").join("anvil");
        if path.exists() {
            Ok(path)
        } else {
            Err(LedgerError::Rpc(format!(
                "anvil is not installed at {}: run ./scripts/test, which installs the pinned npm tools, or set STAYPUT_ANVIL",
                path.display()
            )))
        }
    }

    /// Starts anvil on a free loopback port and returns once it answers
    /// JSON-RPC (not merely once its port accepts connections).
    pub async fn start() -> Result<Self, LedgerError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| rpc_err("finding a free port", e))?
            .port();
        let child = Command::new(Self::binary()?)
            // Started as a FISCO BCOS chain looks: paris (no PUSH0), its
            // default chain id, and no fee market to speak of.
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--silent"])
            .args(["--hardfork", "paris", "--chain-id", &FISCO_CHAIN_ID.to_string(), "--gas-price", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| rpc_err("starting anvil", e))?;
        let anvil = Self { child, url: format!("http://127.0.0.1:{port}") };
        let provider = read_provider(&anvil.url)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while provider.get_block_number().await.is_err() {
            if Instant::now() > deadline {
                return Err(rpc_err("starting anvil", "it did not answer JSON-RPC within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(anvil)
    }

    /// Gives `account` a large balance (anvil only).
    pub async fn fund(&self, account: Address) -> Result<(), LedgerError> {
        let provider = read_provider(&self.url)?;
        let _: serde_json::Value = provider
            .raw_request("anvil_setBalance".into(), (account, U256::from(10u128.pow(24))))
            .await
            .map_err(|e| rpc_err("anvil_setBalance", e))?;
        Ok(())
    }

    /// Moves the chain's clock forward and mines a block (anvil only).
    pub async fn advance(&self, seconds: u64) -> Result<(), LedgerError> {
        let provider = read_provider(&self.url)?;
        let _: serde_json::Value = provider
            .raw_request("evm_increaseTime".into(), (seconds,))
            .await
            .map_err(|e| rpc_err("evm_increaseTime", e))?;
        let _: serde_json::Value =
            provider.raw_request("evm_mine".into(), ()).await.map_err(|e| rpc_err("evm_mine", e))?;
        Ok(())
    }

    /// The newest block's timestamp.
    pub async fn now(&self) -> Result<u64, LedgerError> {
        let provider = read_provider(&self.url)?;
        let block = provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(|e| rpc_err("reading the latest block", e))?
            .ok_or_else(|| rpc_err("reading the latest block", "none"))?;
        Ok(block.header.timestamp)
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
