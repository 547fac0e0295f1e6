//! The command's one error type.

/// What a `stayput` command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Node(#[from] stayput_node::NodeError),
    #[error(transparent)]
    Identity(#[from] stayput_identity::IdentityError),
    #[error(transparent)]
    Localnet(#[from] stayput_localnet::LocalnetError),
    #[error(transparent)]
    Bench(#[from] stayput_benches::BenchError),
    #[error(transparent)]
    Ledger(#[from] stayput_chain_connector::LedgerError),
    #[error(transparent)]
    Coordinator(#[from] stayput_coordinator::CoordinatorError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Signal(String),
    #[error("demo: {0}")]
    Demo(String),
    #[error("{0}")]
    Usage(String),
}
