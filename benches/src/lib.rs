//! # Stayput benchmarks
//!
//! Two kinds, by the house rule that speed is measured in benchmarks, not
//! in timed tests:
//!
//! * criterion benches of the primitives (`cargo bench -p stayput-benches`);
//! * whole-protocol runs behind `stayput bench …`, which print figures and
//!   ratios measured **in the same run** (this hardware is noisy; a ratio
//!   to a floor measured seconds earlier is stable where absolute times
//!   drift).
#![forbid(unsafe_code)]

pub mod blacklist;
pub mod ledger;
pub mod lookup;
pub mod ocean;
pub mod psi;
pub mod score;
pub mod stats;
pub mod train;

/// What a benchmark run can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Node(#[from] stayput_node::NodeError),
    #[error(transparent)]
    Localnet(#[from] stayput_localnet::LocalnetError),
    #[error(transparent)]
    Psi(#[from] stayput_psi::PsiError),
    #[error(transparent)]
    Lookup(#[from] stayput_pir::PirError),
    #[error("benchmark data in {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Ledger(#[from] stayput_chain_connector::LedgerError),
    #[error("federated statistics: {0}")]
    Stats(String),
    #[error("joint modelling: {0}")]
    Learning(#[from] stayput_learning::LearningError),
    #[error("a task of the benchmark failed: {0}")]
    Task(String),
    #[error("the run counted {got} where {expected} were expected")]
    WrongResult { expected: u64, got: u64 },
}

/// Peak resident set size of this process so far, in bytes (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
