//! # Stayput node
//!
//! The process a data owner (or requester) runs beside its data. It serves
//! its configured datasets to peer nodes through protocol services, runs
//! sessions as a requester on its own organisation's behalf, and writes
//! results only on its own disk. Raw rows never leave it.
//!
//! **Protocols**, one module each with the owner's service and the
//! requester's side, all serving through [`serve`], each named as its
//! ledger kind, its `stayput task` and its peer service are:
//!
//! * [`psi`] — balanced PSI: `owner` (the `PsiPeer` service) and
//!   `requester`.
//! * [`blacklist`] — the blacklist query: the bureau's `BlacklistPeer`
//!   service (encoded-set versions and deltas, metered evaluations) and the
//!   bank's side (verified caches, every bureau in parallel, partial
//!   results that name a bureau that did not answer).
//! * [`stats`] — federated statistics: the `StatsPeer` service (this node
//!   as a site: census, contribution, shares) and the requester's side.
//! * [`compute_only`] — compute-only access: the owner's `ComputeOnlyPeer`
//!   service (grant policy, parallel scan, release, use record with ε) and
//!   the requester's side.
//! * [`lookup`] — private record lookup: the owner's `LookupPeer` service
//!   (sealed versions, metered OPRF evaluations and answers) and the
//!   requester's side.
//!
//! **What they stand on**, each layer importing only those below it:
//!
//! * [`serve`] — the one owner-side path: authorised, recorded, metered,
//!   answered.
//! * [`authorisation`] — the ledger check and use records `serve` is
//!   built on, and the words of data-dependent failures.
//! * [`tasks`] — the one requester runner: a task recorded on the ledger,
//!   run as its requester's node (checked against the ledger, idempotent).
//! * [`results`] — what a task leaves on disk, written one way.
//! * [`control`] — the `NodeControl` service its own organisation calls.
//! * [`peers`] — dialling another node by organisation.
//! * [`publish`] — what a dataset's version record says, by how it is
//!   served.
//! * [`dataset`] — CSV/Parquet input through arrow, key normalisation, how
//!   a dataset is served.
//! * [`config`] — the TOML configuration.
//! * [`identity`] — consortium CA, organisation certificates, mTLS, caller
//!   identity, dialling by organisation name: the `stayput-identity` crate,
//!   shared with the coordinator and re-exported here.
//! * [`server`] — assembling the gRPC server (TLS, health, reflection).
//! * [`ledger_client`] — the operator's embedded ledger, read and written
//!   over mTLS through a replica this node verifies itself.
//! * [`state_files`] — atomic files under the state folder, OPRF key
//!   files, served files read once.
//! * [`wire`] — the stream/role edge, progress, and prost ↔ domain
//!   conversions.
#![forbid(unsafe_code)]

pub mod authorisation;
pub mod blacklist;
pub mod compute_only;
pub mod config;
pub mod control;
pub mod dataset;
mod error;
pub mod learning;
pub mod ledger_client;
pub mod lookup;
pub mod peers;
pub mod psi;
pub mod publish;
pub mod results;
pub mod serve;
pub mod server;
pub mod state_files;
pub mod stats;
pub mod tasks;
pub mod wire;

pub use config::NodeConfig;
pub use error::NodeError;
pub use stayput_identity as identity;

/// What every service of a node shares.
#[derive(Debug)]
pub struct NodeState {
    /// The configuration.
    pub config: NodeConfig,
    /// TLS material loaded from the configuration's paths.
    pub tls: identity::TlsMaterial,
    /// One permit per concurrent protocol session.
    pub sessions: std::sync::Arc<tokio::sync::Semaphore>,
    /// The ledger and this organisation's signing key, when configured.
    pub ledger: Option<LedgerAccess>,
    /// Tasks running on this node.
    pub tasks: tasks::TaskRegistry,
    /// Federated-statistics shares received from other sites.
    pub shares: stats::ShareBox,
    /// Federated-statistics census states, between census and contribution.
    pub census: stats::CensusBox,
    /// Encoded sets and hints served to peers, checked once and shared.
    pub served: state_files::ServedFiles,
    /// Sessions being served, one per task and dataset at a time.
    pub in_flight: serve::InFlight,
}

/// A node's access to the consortium's ledger.
#[derive(Debug)]
pub struct LedgerAccess {
    /// The ledger (a verifying client of the operator's embedded ledger,
    /// or an EVM chain).
    pub ledger: std::sync::Arc<dyn stayput_chain_connector::Ledger>,
    /// This organisation's ed25519 key, for use records.
    pub key: stayput_chain_connector::records::OrgKey,
}

impl LedgerAccess {
    fn open(settings: &config::LedgerSettings, tls: &identity::TlsMaterial, org: &str) -> Result<Self, NodeError> {
        use stayput_chain_connector::keys;
        let key_err = |e: stayput_chain_connector::LedgerError| NodeError::InvalidConfig(format!("[ledger]: {e}"));
        let operator = keys::public_key(&settings.operator_key).map_err(key_err)?;
        let key = keys::load(&settings.signing_key).map_err(key_err)?;
        if let Some(evm) = &settings.evm {
            return Ok(Self { ledger: std::sync::Arc::new(evm.open(org, operator).map_err(key_err)?), key });
        }
        let channel = tonic::transport::Endpoint::from_shared(settings.endpoint.clone())
            .and_then(|e| e.tls_config(tls.client(&settings.operator)))
            .map_err(|e| NodeError::InvalidConfig(format!("[ledger] endpoint '{}': {e}", settings.endpoint)))?
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(wire::CALL_DEADLINE)
            .connect_lazy();
        Ok(Self { ledger: std::sync::Arc::new(ledger_client::RemoteLedger::new(channel, operator)), key })
    }
}

impl NodeState {
    /// Loads the TLS material named by `config`.
    pub fn new(config: NodeConfig) -> Result<Self, NodeError> {
        let tls = identity::TlsMaterial::load(&config.tls)?;
        let sessions = std::sync::Arc::new(tokio::sync::Semaphore::new(config.max_sessions));
        // Key buckets a killed process left: nothing can be using them yet.
        psi::buckets::remove_stale(&config.state_dir);
        let ledger = match &config.ledger {
            Some(settings) => Some(LedgerAccess::open(settings, &tls, &config.org)?),
            None => None,
        };
        Ok(Self {
            config,
            tls,
            sessions,
            ledger,
            tasks: tasks::TaskRegistry::default(),
            shares: stats::ShareBox::default(),
            census: stats::CensusBox::default(),
            served: state_files::ServedFiles::default(),
            in_flight: serve::InFlight::default(),
        })
    }

    /// A session permit, or [`NodeError::Busy`] when every one is taken.
    pub fn session_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, NodeError> {
        self.sessions.clone().try_acquire_owned().map_err(|_| NodeError::Busy { max: self.config.max_sessions })
    }
}
