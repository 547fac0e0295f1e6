//! The local consortium's one error type: what starting, feeding or
//! stopping it can fail at, each cause as its own crate says it.

use std::path::PathBuf;

/// Everything a local consortium can fail at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalnetError {
    /// A node failed to load its configuration, start or stop.
    #[error(transparent)]
    Node(#[from] stayput_node::NodeError),
    /// The coordinator failed to load its configuration, start or stop.
    #[error(transparent)]
    Coordinator(#[from] stayput_coordinator::CoordinatorError),
    /// Certificates or TLS files.
    #[error(transparent)]
    Identity(#[from] stayput_identity::IdentityError),
    /// The ledger refused a record, or a key file failed.
    #[error(transparent)]
    Ledger(#[from] stayput_chain_connector::LedgerError),
    /// A configuration file or folder of the consortium.
    #[error("cannot write {path}: {source}")]
    WriteFile { path: PathBuf, source: std::io::Error },
    /// No loopback port could be bound.
    #[error("cannot listen on {address}: {detail}")]
    Listen { address: String, detail: String },
    /// A blocking worker failed.
    #[error("a worker task failed: {0}")]
    Worker(String),
}
