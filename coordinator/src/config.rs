//! The coordinator's TOML configuration.
//!
//! ```toml
//! [coordinator]
//! org = "operator"                  # the operator organisation (its certificate's name)
//! name = "Consortium operator"      # display name in its member record
//! listen = "127.0.0.1:7000"
//! state = "coordinator.redb"        # durable task state
//! signing_key = "keys/operator.ed25519"
//!
//! [tls]
//! ca = "keys/ca.pem"
//! cert = "keys/operator.pem"
//! key = "keys/operator.key"
//!
//! [ledger]
//! backend = "embedded"              # served to members by this process
//! path = "ledger.redb"              # created (with the operator as its first member) if missing
//!
//! # or, on an EVM chain:
//! # [ledger]
//! # backend = "evm"
//! # rpc_url = "http://127.0.0.1:8545"
//! # chain_id = 20200                  # pinned: an endpoint of another chain is refused
//! # contract = "0x…"
//! # deployed_at = 1
//! # account_key = "keys/operator.evm"   # the operator's EVM account (hex, 0600)
//! ```
//!
//! Relative paths are relative to the configuration file's folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use stayput_identity::TlsPaths;

use crate::CoordinatorError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    coordinator: Section,
    tls: TlsPaths,
    ledger: LedgerBackend,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    org: String,
    #[serde(default)]
    name: Option<String>,
    listen: SocketAddr,
    state: PathBuf,
    signing_key: PathBuf,
}

/// Which ledger the coordinator writes to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "backend", rename_all = "lowercase")]
pub enum LedgerBackend {
    /// The embedded ledger in a redb file, served to members by this process.
    Embedded {
        /// The ledger file.
        path: PathBuf,
    },
    /// An EVM chain (FISCO BCOS ≥ 3.9, Besu, geth, anvil): the operator's
    /// writes go from its own account; members read and write it directly.
    Evm(stayput_chain_connector::evm::EvmSettings),
}

/// A validated coordinator configuration.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// The operator organisation.
    pub org: String,
    /// Its display name.
    pub name: String,
    /// Where the service listens.
    pub listen: SocketAddr,
    /// The durable task store.
    pub state: PathBuf,
    /// The operator's ed25519 key file.
    pub signing_key: PathBuf,
    /// TLS material.
    pub tls: TlsPaths,
    /// The ledger.
    pub ledger: LedgerBackend,
}

impl CoordinatorConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, CoordinatorError> {
        let bad = |reason: String| CoordinatorError::Config { path: path.into(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let file: File = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let at = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        stayput_identity::check_org_name(&file.coordinator.org).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            name: file.coordinator.name.unwrap_or_else(|| file.coordinator.org.clone()),
            org: file.coordinator.org,
            listen: file.coordinator.listen,
            state: at(file.coordinator.state),
            signing_key: at(file.coordinator.signing_key),
            tls: TlsPaths { ca: at(file.tls.ca), cert: at(file.tls.cert), key: at(file.tls.key) },
            ledger: match file.ledger {
                LedgerBackend::Embedded { path } => LedgerBackend::Embedded { path: at(path) },
                LedgerBackend::Evm(e) => LedgerBackend::Evm(e.with_paths_resolved(at)),
            },
        })
    }
}
