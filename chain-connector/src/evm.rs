//! The EVM backend: the consortium's ledger as one Solidity contract
//! (`contracts/StayputLedger.sol`) on any EVM chain — FISCO BCOS ≥ 3.9
//! through its web3 endpoint, Hyperledger Besu, geth, anvil.
//!
//! * **Writes.** A record is checked locally first (its ed25519 signature
//!   against the writer's member key and every rule, which the contract
//!   cannot fully do), then queued for its writer's account. Whoever sends
//!   next takes every record waiting (up to [`MAX_BATCH`]) into one
//!   transaction (`submitBatch`, all or none), simulated with `eth_call`,
//!   signed locally with the account, given an explicit gas price and sent
//!   with `eth_sendRawTransaction` (FISCO BCOS's endpoint neither signs nor
//!   has `eth_feeHistory`). A batch that the simulation or the chain
//!   refuses is sent again one record at a time, so each refusal comes back
//!   as the rule that refused it. Sends are serialised per account, so
//!   nonces never gap. A record counts as written only when the receipt's
//!   log of this contract carries its hash. The contract enforces the rules
//!   again, authoritatively, at write time.
//! * **Reads.** A replica follows the contract's `Recorded` events with
//!   `eth_getLogs`, decodes each record, checks its hash, verifies its
//!   signature and replays it through [`crate::rules`] at its block's
//!   timestamp: any disagreement with the contract is reported as damage.
//!   Grant usage and task status are read live with `eth_call`.
//! * **Trust anchor.** A reader pins the chain id, the contract, its
//!   deployment block and the operator's key ([`EvmConfig`]): another
//!   chain, or a contract whose genesis admits another operator, is
//!   refused. Logs are read 10 blocks per call (FISCO BCOS answers no more)
//!   and each page is checked against the contract's own record count, so
//!   an endpoint that hides a record (a revocation) is caught. Readers stay
//!   `confirmations` blocks behind the head, and a replica whose last block
//!   the chain no longer holds is rebuilt (a reorganisation).
//! * **Endpoint.** `http://`, or `https://` over rustls with the CA the
//!   endpoint's certificate must chain to pinned in `[ledger.evm.tls]`
//!   (and a client certificate where the endpoint asks for one); never the
//!   system's roots by accident. TLS keeps the traffic private; integrity
//!   rests on the checks above, not on the endpoint.
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
use crate::records::{DatasetVersion, DisputeState, LedgerId, Member, OrgKey, Record, Role, SignedRecord, TaskStatus};
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

/// A block timestamp in seconds: FISCO BCOS stamps blocks in milliseconds.
fn seconds(timestamp: u64) -> u64 {
    if timestamp > 100_000_000_000 { timestamp / 1000 } else { timestamp }
}

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
        E::NotReceiver(x) => Refusal::NotReceiver { writer: x.writer, task: x.task, receiver: x.receiver },
        E::Unknown(x) => {
            Refusal::Unknown { what: static_str(&x.what, &["member", "dataset", "grant", "task", "dispute"]), id: x.id }
        }
        E::Duplicate(x) => Refusal::Duplicate { what: static_str(&x.what, &["grant", "task", "dispute"]), id: x.id },
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
        E::DuplicateShardUse(x) => {
            Refusal::DuplicateShardUse { task: x.task, grant: x.grant, writer: x.writer, shard: x.shard }
        }
        E::ShardMismatch(x) => Refusal::ShardMismatch {
            task: x.task,
            problem: static_str(
                &x.problem,
                &[
                    "the task runs as one session, and the use names a shard",
                    "the task runs as shards, and the use names none",
                    "the use names a shard beyond the task's",
                ],
            ),
        },
        E::DisputeRefused(x) => Refusal::DisputeRefused {
            dispute: x.dispute,
            problem: static_str(
                &x.problem,
                &[
                    "it names a version the dataset does not have",
                    "its filer holds no blacklist grant on the dataset",
                    "its arbitrator is a party to it",
                    "its deadline is not within 180 days from now",
                    "it carries no sealed id for the arbitrator",
                    "the entry is under dispute already",
                ],
            ),
        },
        E::NotArbitrator(x) => {
            Refusal::NotArbitrator { writer: x.writer, dispute: x.dispute, arbitrator: x.arbitrator }
        }
        E::IllegalDisputeTransition(x) => {
            let state = |code: u8| {
                DisputeState::ALL
                    .iter()
                    .copied()
                    .find(|s| s.code() == code)
                    .ok_or_else(|| unknown("dispute state", code))
            };
            match (state(x.from), state(x.to)) {
                (Ok(from), Ok(to)) => Refusal::IllegalDisputeTransition { dispute: x.dispute, from, to },
                (Err(e), _) | (_, Err(e)) => return e,
            }
        }
        E::DisputeDeadlinePassed(x) => {
            Refusal::DisputeDeadlinePassed { dispute: x.dispute, deadline: x.deadline, now: x.now_ }
        }
        E::ShardResult(x) => Refusal::ShardResult {
            task: x.task,
            problem: static_str(
                &x.problem,
                &[
                    "a task run as shards records one digest per shard",
                    "its digest is not the combination of its shards' digests",
                ],
            ),
        },
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
    /// Blocks a record must be buried under before readers apply it (0 on
    /// a chain with immediate finality, such as FISCO BCOS's PBFT).
    pub confirmations: u64,
    /// TLS towards an `https` endpoint.
    pub tls: Option<EndpointTls>,
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
    /// Blocks a record must be buried under before it is read (default 0:
    /// immediate finality).
    #[serde(default)]
    pub confirmations: u64,
    /// TLS towards an `https` endpoint (`[ledger.evm.tls]`).
    #[serde(default)]
    pub tls: Option<EndpointTls>,
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
    /// The settings with every file path passed through `resolve` (a
    /// configuration resolves relative paths against its own folder).
    pub fn with_paths_resolved(self, resolve: impl Fn(PathBuf) -> PathBuf) -> Self {
        let tls =
            self.tls.map(|t| EndpointTls { ca: resolve(t.ca), cert: t.cert.map(&resolve), key: t.key.map(&resolve) });
        Self { account_key: resolve(self.account_key), tls, ..self }
    }

    /// The deployment these settings name, trusting `operator_key`.
    pub fn config(&self, operator_key: [u8; 32]) -> EvmConfig {
        EvmConfig {
            rpc_url: self.rpc_url.clone(),
            chain_id: self.chain_id,
            contract: self.contract,
            deployed_at: self.deployed_at,
            operator_key,
            confirmations: self.confirmations,
            tls: self.tls.clone(),
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
    /// The hash of block `synced_to`: if the chain no longer holds it, the
    /// chain was reorganised and the replica is rebuilt.
    synced_hash: Option<alloy::primitives::B256>,
    /// The chain head at the last sync.
    head_seen: Option<u64>,
    /// When the replica last caught up with the head.
    synced_at: Option<Instant>,
    next_seq: u64,
    quarantined: Vec<Quarantined>,
    /// Whether the endpoint's chain id was checked against the pinned one.
    chain_checked: bool,
}

impl Replica {
    fn new(ledger: LedgerId) -> Self {
        Self {
            state: State::new(ledger),
            synced_to: None,
            synced_hash: None,
            head_seen: None,
            synced_at: None,
            next_seq: 0,
            quarantined: Vec::new(),
            chain_checked: false,
        }
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

/// Blocks per `eth_getLogs` request: FISCO BCOS answers at most 10 blocks
/// per call and silently drops the rest, so no page is larger. (Each page
/// is also checked against the contract's own record count.)
const LOG_PAGE_BLOCKS: u64 = 10;
/// Most records in one transaction (the contract's bound too).
pub const MAX_BATCH: usize = 256;
/// Records this client puts in one transaction: well inside a block's gas.
const SEND_BATCH: usize = 64;

/// Gas a batch is given per record: above what the contract spends on a
/// task record with its request (about 260,000); a batch that runs out is
/// sent again one record at a time, each with its own estimate.
const BATCH_GAS_PER_RECORD: u64 = 400_000;

/// How old the replica may be for a writer's local check of a record.
const WRITE_CHECK_AGE: Duration = Duration::from_millis(100);

/// How long to wait for a record's receipt.
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// A handle on the EVM ledger, writing for the organisations whose
/// accounts it holds.
pub struct EvmLedger {
    config: EvmConfig,
    reader: DynProvider,
    writers: BTreeMap<String, AccountWriter>,
    accounts: BTreeMap<String, Address>,
    replica: Mutex<Replica>,
    timestamps: Mutex<HashMap<u64, u64>>,
}

/// One account's writes: records wait in `queue`; whoever holds `sending`
/// sends everything waiting as one transaction (group commit).
struct AccountWriter {
    provider: DynProvider,
    queue: std::sync::Mutex<Vec<Queued>>,
    sending: Mutex<()>,
}

struct Queued {
    record: SignedRecord,
    account: Address,
    reply: tokio::sync::oneshot::Sender<Result<Receipt, LedgerError>>,
}

/// Simulates a contract call, sends it and waits for a successful receipt;
/// a revert comes back as the rule that refused it. The gas limit is
/// `$limit` when given (a batch: estimating would run it a dozen times),
/// else the estimate and a quarter (an estimate can fall short of what the
/// chain charges).
macro_rules! simulate_and_send {
    ($call:expr, $limit:expr) => {{
        let call = $call;
        let simulated = match call.call().await {
            Err(e) => Err(contract_error("simulating the record", &e)),
            Ok(_) => match $limit {
                Some(limit) => Ok(limit),
                None => call
                    .estimate_gas()
                    .await
                    .map(|g: u64| g.saturating_add(g / 4).saturating_add(50_000))
                    .map_err(|e| contract_error("estimating the gas", &e)),
            },
        };
        match simulated {
            Err(e) => Err(e),
            Ok(gas) => match call.clone().gas(gas).send().await {
                Err(e) => Err(contract_error("sending the record", &e)),
                Ok(pending) => {
                    let tx_hash = *pending.tx_hash();
                    match pending.with_timeout(Some(RECEIPT_TIMEOUT)).get_receipt().await {
                        Err(e) => Err(rpc_err(&format!("waiting for the receipt of transaction {tx_hash}"), e)),
                        // Reverted on chain after simulating cleanly: another write got in first.
                        Ok(receipt) if !receipt.status() => Err(call.call().await.err().map_or_else(
                            || rpc_err("sending the record", "the transaction reverted"),
                            |e| contract_error("the record", &e),
                        )),
                        Ok(receipt) => Ok(receipt),
                    }
                }
            },
        }
    }};
}

impl std::fmt::Debug for EvmLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvmLedger")
            .field("config", &self.config)
            .field("writes_for", &self.writers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The endpoint's URL: `http`, or `https` with [`EndpointTls`].
fn parse_url(url: &str) -> Result<reqwest::Url, LedgerError> {
    // The URL may carry credentials: errors never echo it.
    let parsed: reqwest::Url = url.parse().map_err(|e| rpc_err("[ledger.evm] rpc_url is not a URL", e))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(rpc_err(
            "[ledger.evm] rpc_url",
            format!("scheme '{other}' is not supported: give the chain node's http:// or https:// JSON-RPC endpoint"),
        )),
    }
}

/// TLS towards an `https` endpoint, as a `[ledger.evm.tls]` section. The
/// endpoint is not trusted for integrity (every record is checked against
/// its signature, the pinned operator key and the contract's own count);
/// TLS keeps what the organisation reads and writes from the network.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointTls {
    /// The CA certificates (PEM) the endpoint's certificate must chain to:
    /// the chain operator's own CA, or a system bundle for a public one.
    pub ca: PathBuf,
    /// This organisation's client certificate (PEM), for an endpoint that
    /// asks for one; with `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

impl EndpointTls {
    /// The rustls client configuration: only `ca`'s roots, TLS 1.2 or 1.3.
    fn client_config(&self) -> Result<rustls::ClientConfig, LedgerError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |path: &std::path::Path, reason: String| LedgerError::KeyFile { path: path.into(), reason };
        let certs = |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, LedgerError> {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(path, format!("reading PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(bad(path, "holds no PEM certificate".into()));
            }
            Ok(certs)
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(&self.ca)? {
            roots.add(cert).map_err(|e| bad(&self.ca, format!("not a usable CA certificate: {e}")))?;
        }
        let builder =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| rpc_err("TLS configuration", e))?
                .with_root_certificates(roots);
        match (&self.cert, &self.key) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(cert), Some(key)) => {
                let chain = certs(cert)?;
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| bad(key, format!("reading a PEM private key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| bad(cert, format!("the certificate and key do not make a client identity: {e}")))
            }
            _ => Err(rpc_err("[ledger.evm.tls]", "give both cert and key for a client certificate, or neither")),
        }
    }
}

/// The HTTP client for `url`. It never falls back to a process-wide TLS
/// provider or the system's roots: `https` trusts `tls.ca` only.
fn http_client(url: &reqwest::Url, tls: Option<&EndpointTls>) -> Result<reqwest::Client, LedgerError> {
    let config = match (url.scheme(), tls) {
        ("https", Some(tls)) => tls.client_config()?,
        ("https", None) => {
            return Err(rpc_err(
                "[ledger.evm] rpc_url",
                "an https endpoint needs [ledger.evm.tls] ca = the CA certificate(s) its certificate chains to",
            ));
        }
        (_, Some(_)) => {
            return Err(rpc_err(
                "[ledger.evm] rpc_url",
                "[ledger.evm.tls] is set but the endpoint is plain http: give its https:// address or drop the section",
            ));
        }
        // Plain HTTP: a TLS configuration with no roots, so nothing is
        // ever trusted by accident.
        _ => rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| rpc_err("TLS configuration", e))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .build()
        .map_err(|e| rpc_err("the endpoint's HTTP client", e))
}

/// How often to poll for a receipt: a loopback node mines at once, a
/// consortium chain takes seconds.
fn poll_interval(url: &reqwest::Url) -> Duration {
    let local = url.host_str().is_some_and(|h| h == "localhost" || h == "::1" || h == "[::1]" || h.starts_with("127."));
    if local { Duration::from_millis(5) } else { Duration::from_secs(1) }
}

fn read_provider(url: &str, tls: Option<&EndpointTls>) -> Result<DynProvider, LedgerError> {
    let url = parse_url(url)?;
    let provider = ProviderBuilder::default().connect_reqwest(http_client(&url, tls)?, url.clone());
    provider.client().set_poll_interval(poll_interval(&url));
    Ok(provider.erased())
}

/// The gas price to send with, asked of the node (`eth_gasPrice`) and set
/// explicitly: FISCO BCOS has no `eth_feeHistory`, so nothing may rely on
/// EIP-1559 fee estimation; transactions are legacy ones.
async fn gas_price(provider: &DynProvider) -> Result<u128, LedgerError> {
    provider.get_gas_price().await.map_err(|e| rpc_err("eth_gasPrice", e))
}

fn wallet_provider(url: &str, tls: Option<&EndpointTls>, signer: PrivateKeySigner) -> Result<DynProvider, LedgerError> {
    let url = parse_url(url)?;
    let client = http_client(&url, tls)?;
    let provider = ProviderBuilder::default()
        .with_simple_nonce_management()
        .with_gas_estimation()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect_reqwest(client, url.clone());
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
        tls: Option<EndpointTls>,
        account: PrivateKeySigner,
        operator_key: &OrgKey,
        operator_member: Member,
    ) -> Result<EvmConfig, LedgerError> {
        let provider = wallet_provider(rpc_url, tls.as_ref(), account)?;
        let code = hex::decode(BYTECODE_HEX.trim()).map_err(|e| rpc_err("contract bytecode", e))?;
        let tx = TransactionRequest::default().with_deploy_code(code).with_gas_price(gas_price(&provider).await?);
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
            confirmations: 0,
            tls,
        };
        let org = operator_member.org.clone();
        let genesis = SignedRecord::sign(Record::Member(operator_member), &org, operator_key, &config.ledger_id());
        genesis.check_storable()?;
        let price = gas_price(&provider).await?;
        let instance = StayputLedger::new(contract, provider);
        let call = instance.submit(Bytes::from(genesis.to_bytes()), Address::ZERO).gas_price(price);
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
        let reader = read_provider(&config.rpc_url, config.tls.as_ref())?;
        let writers = signers
            .into_iter()
            .map(|(org, signer)| {
                let provider = wallet_provider(&config.rpc_url, config.tls.as_ref(), signer)?;
                Ok((org, AccountWriter { provider, queue: std::sync::Mutex::new(Vec::new()), sending: Mutex::new(()) }))
            })
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
        let t = seconds(self.block(block).await?.header.timestamp);
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
        for log in &logs {
            if log.address() != self.config.contract {
                return Err(rpc_err("eth_getLogs", "the node returned a log of another contract"));
            }
            events.extend(raw_event(log, "eth_getLogs")?);
        }
        events.sort_by_key(|e| (e.height, e.index));
        Ok(events)
    }

    /// The same events read from the blocks' transaction receipts: what a
    /// node's log index may lack (anvil's misses logs of some blocks that
    /// hold several records) its receipts hold.
    async fn events_from_receipts(&self, from: u64, to: u64) -> Result<Vec<RawEvent>, LedgerError> {
        let mut events = Vec::new();
        for height in from..=to {
            for hash in self.block(height).await?.transactions.hashes() {
                let receipt = self
                    .reader
                    .get_transaction_receipt(hash)
                    .await
                    .map_err(|e| rpc_err("eth_getTransactionReceipt", e))?
                    .ok_or_else(|| rpc_err("eth_getTransactionReceipt", format!("no receipt for {hash}")))?;
                for log in receipt.inner.logs() {
                    let ours = log.address() == self.config.contract
                        && log.topic0() == Some(&StayputLedger::Recorded::SIGNATURE_HASH);
                    if ours {
                        events.extend(raw_event(log, "eth_getTransactionReceipt")?);
                    }
                }
            }
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
        self.catch_up(&mut replica).await?;
        Ok(replica)
    }

    /// The replica, brought up to the chain's head unless it was within
    /// `age` (a writer's local check: the contract judges authoritatively
    /// and every reader replays, so a check a moment old costs nothing in
    /// safety and saves a round trip per record).
    async fn synced_within(&self, age: Duration) -> Result<tokio::sync::MutexGuard<'_, Replica>, LedgerError> {
        let mut replica = self.replica.lock().await;
        if replica.synced_at.is_none_or(|at| at.elapsed() > age) {
            self.catch_up(&mut replica).await?;
        }
        Ok(replica)
    }

    async fn catch_up(&self, replica: &mut Replica) -> Result<(), LedgerError> {
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
        // A reorganisation that replaced the last block read: start again.
        // (Checked when the head moves: a chain that reorganises does so
        // as new blocks arrive.)
        let head = self.reader.get_block_number().await.map_err(|e| rpc_err("eth_blockNumber", e))?;
        if replica.head_seen != Some(head)
            && let (Some(height), Some(hash)) = (replica.synced_to, replica.synced_hash)
            && self.block_hash(height).await? != hash
        {
            *replica = Replica { chain_checked: true, ..Replica::new(self.config.ledger_id()) };
        }
        replica.head_seen = Some(head);
        let latest = head.saturating_sub(self.config.confirmations);
        let mut from = replica.synced_to.map_or(self.config.deployed_at, |h| h + 1);
        while from <= latest {
            let to = latest.min(from + LOG_PAGE_BLOCKS - 1);
            let to_hash = self.block_hash(to).await?;
            let events = self.page_of_events(from, to, to_hash, replica.next_seq).await?;
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
            replica.synced_hash = Some(to_hash);
            from = to + 1;
        }
        replica.synced_at = Some(Instant::now());
        Ok(())
    }

    /// The `Recorded` events of blocks `from..=to`, exactly as many as the
    /// contract's own count says were recorded in them (counting on from
    /// `next_seq`): an endpoint that clips or hides logs is caught here.
    /// Where the logs fall short, the blocks' receipts are read instead.
    async fn page_of_events(
        &self,
        from: u64,
        to: u64,
        to_hash: alloy::primitives::B256,
        next_seq: u64,
    ) -> Result<Vec<RawEvent>, LedgerError> {
        // At the block by its hash. A node that is mining the next block
        // may answer from the newer state for a moment (anvil does), so a
        // shortfall is asked again before it counts as records withheld.
        let mut shortfall = (0, 0);
        for attempt in 0..4u64 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
            }
            let counted = self
                .contract(self.reader.clone())
                .recordCount()
                .block(alloy::eips::BlockId::hash(to_hash))
                .call()
                .await
                .map_err(|e| contract_error("eth_call recordCount", &e))?;
            let expected = counted.saturating_sub(next_seq);
            let events = self.raw_events(from, to).await?;
            if events.len() as u64 == expected {
                return Ok(events);
            }
            let events = self.events_from_receipts(from, to).await?;
            if events.len() as u64 == expected {
                return Ok(events);
            }
            shortfall = (counted, next_seq + events.len() as u64);
        }
        Err(LedgerError::Corrupt {
            height: to,
            reason: format!(
                "the contract counts {} records up to here but the endpoint's logs and receipts hold {}: it omits records; use another endpoint",
                shortfall.0, shortfall.1
            ),
        })
    }

    /// Block `height` (its header and transaction hashes).
    async fn block(&self, height: u64) -> Result<alloy::rpc::types::Block, LedgerError> {
        self.reader
            .get_block_by_number(height.into())
            .await
            .map_err(|e| rpc_err("reading a block", e))?
            .ok_or_else(|| rpc_err("reading a block", format!("block {height} is missing")))
    }

    async fn block_hash(&self, height: u64) -> Result<alloy::primitives::B256, LedgerError> {
        Ok(self.block(height).await?.header.hash)
    }

    /// Sends `batch` as one transaction; if the chain refuses it, one record
    /// at a time, so each refusal names its rule. Answers every record.
    async fn send_batch(&self, provider: &DynProvider, batch: Vec<Queued>) {
        self.send_batch_unsynced(provider, batch).await;
        // What was just written is not in the replica yet: the next local
        // check catches up first.
        self.replica.lock().await.synced_at = None;
    }

    async fn send_batch_unsynced(&self, provider: &DynProvider, batch: Vec<Queued>) {
        if batch.len() > 1 {
            let records: Vec<Bytes> = batch.iter().map(|q| Bytes::from(q.record.to_bytes())).collect();
            let accounts: Vec<Address> = batch.iter().map(|q| q.account).collect();
            let sent = match gas_price(provider).await {
                Ok(price) => {
                    let instance = self.contract(provider.clone());
                    let limit = BATCH_GAS_PER_RECORD.saturating_mul(batch.len() as u64).saturating_add(100_000);
                    simulate_and_send!(instance.submitBatch(records, accounts).gas_price(price), Some(limit))
                }
                Err(e) => Err(e),
            };
            if let Ok(receipt) = sent {
                for q in batch {
                    let _ = q.reply.send(self.receipt_for(&receipt, &q.record));
                }
                return;
            }
        }
        for q in batch {
            let sent = match gas_price(provider).await {
                Ok(price) => {
                    let instance = self.contract(provider.clone());
                    let call = instance.submit(Bytes::from(q.record.to_bytes()), q.account).gas_price(price);
                    simulate_and_send!(call, None::<u64>)
                }
                Err(e) => Err(e),
            };
            let _ = q.reply.send(sent.and_then(|receipt| self.receipt_for(&receipt, &q.record)));
        }
    }

    /// Where `record` landed, by the receipt's log of this contract that
    /// carries its hash: an endpoint cannot acknowledge a record it dropped.
    fn receipt_for(
        &self,
        receipt: &alloy::rpc::types::TransactionReceipt,
        record: &SignedRecord,
    ) -> Result<Receipt, LedgerError> {
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

    /// Records the contract accepted that the rules refuse, set aside.
    pub async fn quarantined(&self) -> Result<Vec<Quarantined>, LedgerError> {
        Ok(self.sync().await?.quarantined.clone())
    }
}

/// One `Recorded` log as an event (`None` when a reorganisation removed it).
fn raw_event(log: &alloy::rpc::types::Log, source: &str) -> Result<Option<RawEvent>, LedgerError> {
    let bad = |reason: &str| rpc_err(source, format!("the node returned {reason}"));
    if log.removed {
        return Ok(None);
    }
    let height = log.block_number.ok_or_else(|| bad("a log without a block number"))?;
    let index = log.log_index.ok_or_else(|| bad("a log without an index"))?;
    let event = StayputLedger::Recorded::decode_log(&log.inner)
        .map_err(|e| LedgerError::Corrupt { height, reason: format!("undecodable event: {e}") })?;
    Ok(Some(RawEvent {
        height,
        index: u32::try_from(index).map_err(|_| bad("a log index beyond u32"))?,
        seq: event.seq,
        record_hash: event.recordHash.0,
        bytes: event.signedRecord.to_vec(),
    }))
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
            let replica = self.synced_within(WRITE_CHECK_AGE).await?;
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
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        writer.queue.lock().expect("queue lock").push(Queued { record, account, reply });
        // One transaction in flight per account; whoever sends takes every
        // record waiting, so concurrent writers share transactions.
        let _sending = writer.sending.lock().await;
        loop {
            match answer.try_recv() {
                Ok(result) => return result,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    return Err(rpc_err("sending the record", "the sender stopped"));
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            let batch: Vec<Queued> = {
                let mut queue = writer.queue.lock().expect("queue lock");
                let n = queue.len().min(SEND_BATCH);
                queue.drain(..n).collect()
            };
            if batch.is_empty() {
                return Err(rpc_err("sending the record", "the record left the queue unsent"));
            }
            self.send_batch(&writer.provider, batch).await;
        }
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

    async fn disputes(&self, dataset: Option<&str>) -> Result<Vec<crate::rules::DisputeStatus>, LedgerError> {
        Ok(self.sync().await?.state.disputes_of(dataset))
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
        let provider = read_provider(&anvil.url, None)?;
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
        let provider = read_provider(&self.url, None)?;
        let _: serde_json::Value = provider
            .raw_request("anvil_setBalance".into(), (account, U256::from(10u128.pow(24))))
            .await
            .map_err(|e| rpc_err("anvil_setBalance", e))?;
        Ok(())
    }

    /// Moves the chain's clock forward and mines a block (anvil only).
    pub async fn advance(&self, seconds: u64) -> Result<(), LedgerError> {
        let provider = read_provider(&self.url, None)?;
        let _: serde_json::Value = provider
            .raw_request("evm_increaseTime".into(), (seconds,))
            .await
            .map_err(|e| rpc_err("evm_increaseTime", e))?;
        let _: serde_json::Value =
            provider.raw_request("evm_mine".into(), ()).await.map_err(|e| rpc_err("evm_mine", e))?;
        Ok(())
    }

    /// Takes a snapshot of the chain to revert to (anvil only).
    pub async fn snapshot(&self) -> Result<U256, LedgerError> {
        let provider = read_provider(&self.url, None)?;
        provider.raw_request("evm_snapshot".into(), ()).await.map_err(|e| rpc_err("evm_snapshot", e))
    }

    /// Reverts the chain to `snapshot`, dropping every block after it (anvil only).
    pub async fn revert(&self, snapshot: U256) -> Result<(), LedgerError> {
        let provider = read_provider(&self.url, None)?;
        let reverted: bool =
            provider.raw_request("evm_revert".into(), (snapshot,)).await.map_err(|e| rpc_err("evm_revert", e))?;
        if reverted { Ok(()) } else { Err(rpc_err("evm_revert", "anvil did not revert")) }
    }

    /// The newest block's timestamp.
    pub async fn now(&self) -> Result<u64, LedgerError> {
        let provider = read_provider(&self.url, None)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_or_https_and_errors_never_echo_them() {
        assert!(parse_url("http://127.0.0.1:8545").is_ok());
        let https = parse_url("https://user:secret@chain.example:8545").unwrap();
        let no_ca = http_client(&https, None).unwrap_err().to_string();
        assert!(no_ca.contains("needs [ledger.evm.tls] ca"), "{no_ca}");
        let tls = EndpointTls { ca: "/nonexistent/ca.pem".into(), cert: None, key: None };
        let plain = http_client(&parse_url("http://127.0.0.1:8545").unwrap(), Some(&tls)).unwrap_err().to_string();
        assert!(plain.contains("plain http"), "{plain}");
        let ws = parse_url("ws://user:secret@chain.example:8546").unwrap_err().to_string();
        assert!(ws.contains("scheme 'ws' is not supported") && !ws.contains("secret"), "{ws}");
        let junk = parse_url("not a url with secret").unwrap_err().to_string();
        assert!(junk.contains("is not a URL") && !junk.contains("secret"), "{junk}");
    }

    #[test]
    fn millisecond_timestamps_read_as_seconds() {
        assert_eq!(seconds(1_764_000_000), 1_764_000_000);
        assert_eq!(seconds(1_764_000_000_123), 1_764_000_000);
    }
}
