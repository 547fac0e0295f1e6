//! The node crate's one error type, and its mapping to gRPC statuses at the
//! edge. Messages name the file, column, dataset or peer concerned and what
//! to do; they never carry key values or rows.

use std::path::PathBuf;

use stayput_psi::PsiError;

/// Everything a node can fail at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("cannot read {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    WriteFile { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid node configuration: {source}")]
    Config { path: PathBuf, source: Box<toml::de::Error> },
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error(
        "cannot tell the format of {path}: name it .csv or .parquet, or set `format` in the dataset's configuration"
    )]
    UnknownFormat { path: PathBuf },
    #[error("{path} is not readable as CSV: {source}")]
    Csv { path: PathBuf, source: arrow::error::ArrowError },
    #[error("cannot read records from {path}: {source}")]
    Records { path: PathBuf, source: arrow::error::ArrowError },
    #[error("{path} is not readable as Parquet: {source}")]
    Parquet { path: PathBuf, source: parquet::errors::ParquetError },
    #[error(
        "{path} has no column '{column}'; its columns are: {available}. Fix key_columns in the dataset's configuration"
    )]
    MissingColumn { path: PathBuf, column: String, available: String },
    #[error("column '{column}' of {path} has type {found}; key columns must be text or integers")]
    KeyColumnType { path: PathBuf, column: String, found: String },
    #[error("cannot write the result to {path}: {source}")]
    WriteResult { path: PathBuf, source: arrow::error::ArrowError },
    #[error("{path} changed while the session ran; no result was written. Run the session again")]
    DatasetChanged { path: PathBuf },
    #[error("a result already exists at {path}; task ids are single-use, so choose a new one")]
    ResultExists { path: PathBuf },
    #[error("this node is already running its maximum of {max} sessions; retry later")]
    Busy { max: usize },
    #[error(
        "task '{task}' is being served already; a task is served once, and a session resuming it waits for the earlier one to end — retry shortly"
    )]
    InFlight { task: String },
    #[error("the peer announced {announced} keys; sessions are limited to {max} keys per side")]
    TooManyPeerKeys { announced: u64, max: u64 },
    #[error("unknown dataset '{name}'; this node serves: {known}")]
    UnknownDataset { name: String, known: String },
    #[error("unknown peer '{name}'; add it to [peers] in the node configuration (known: {known})")]
    UnknownPeer { name: String, known: String },
    #[error(
        "dataset '{dataset}' declares {ours} but the requester declared {theirs}; both sides must normalise keys the same way"
    )]
    KeyDeclarationMismatch { dataset: String, ours: String, theirs: String },
    #[error("the ledger cannot be reached ({0}); no task is served until it can")]
    LedgerUnavailable(String),
    #[error("the ledger refused this or could not verify what it returned: {0}")]
    LedgerRefused(String),
    #[error("task '{task}' is not authorised on the ledger: {reason}")]
    NotAuthorised { task: String, reason: String },
    #[error("{0}")]
    BadTaskId(#[from] stayput_chain_connector::tasks::InvalidTaskId),
    #[error("federated statistics: {0}")]
    Stats(String),
    #[error("blacklist query: {0}")]
    Blacklist(String),
    #[error("compute-only query: {0}")]
    ComputeOnly(String),
    #[error("the task's query is refused: {0}. Fix the query and submit a new task")]
    InvalidQuery(String),
    #[error("private lookup: {0}")]
    Pir(String),
    #[error("protocol version {got} is not supported; this node speaks version {speaks}; upgrade the older node")]
    UnsupportedVersion { got: u32, speaks: u32 },
    #[error("the request does not name an output mode")]
    MissingMode,
    #[error("PSI protocol {0} is not known to this node (ecdh = 0, kkrt = 1, rr22 = 2); upgrade it")]
    UnsupportedProtocol(i32),
    #[error("{0}")]
    Psi(#[from] PsiError),
    #[error("{0}")]
    Lookup(#[from] stayput_pir::PirError),
    #[error("TLS material: {0}")]
    Tls(String),
    /// Certificates, TLS files, the caller's certificate, dialling a peer.
    #[error("{0}")]
    Identity(#[from] stayput_identity::IdentityError),
    #[error("peer '{peer}' refused: {message}")]
    PeerRefused { peer: String, code: tonic::Code, message: String },
    #[error("peer '{peer}' went away during the {phase} phase: {detail}; no result was written")]
    PeerVanished { peer: String, phase: &'static str, detail: String },
    #[error("peer '{peer}' is inconsistent: {detail}; no result was written")]
    InconsistentPeer { peer: String, detail: String },
    #[error("peer '{peer}' sent {got} where {expected} was expected")]
    UnexpectedMessage { peer: String, expected: &'static str, got: &'static str },
    #[error("caller '{caller}' may not use this node's control service; only '{org}' may")]
    NotOwnOrganisation { caller: String, org: String },
    #[error("the node reported: {0}")]
    NodeReported(String),
    #[error("the session was cancelled")]
    Cancelled,
    #[error("joint modelling: {0}")]
    Learning(#[from] stayput_learning::LearningError),
    #[error("joint modelling: {0}")]
    Model(String),
    #[error("a worker task failed: {0}")]
    Worker(String),
    #[error("cannot listen on {address}: {detail}")]
    Listen { address: String, detail: String },
}

impl NodeError {
    /// The one mapping of a ledger failure: a ledger that cannot be reached
    /// is unavailable (retry later); anything else — a write the rules
    /// refuse, a reply that does not verify — is a refusal, said as it is.
    pub fn from_ledger(e: stayput_chain_connector::LedgerError) -> Self {
        match e {
            stayput_chain_connector::LedgerError::Rpc(detail) => NodeError::LedgerUnavailable(detail),
            other => NodeError::LedgerRefused(other.to_string()),
        }
    }

    /// Whether the same work may succeed when tried again: this node's
    /// peer (or the ledger) went away, was busy winding down, or the call
    /// was cancelled.
    pub fn may_succeed_later(&self) -> bool {
        use tonic::Code;
        matches!(self.code(), Code::Unavailable | Code::Cancelled | Code::Unknown | Code::DeadlineExceeded)
    }

    fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            NodeError::UnknownDataset { .. } | NodeError::UnknownPeer { .. } => Code::NotFound,
            NodeError::MissingColumn { .. }
            | NodeError::KeyColumnType { .. }
            | NodeError::KeyDeclarationMismatch { .. }
            | NodeError::UnknownFormat { .. } => Code::FailedPrecondition,
            NodeError::BadTaskId(_)
            | NodeError::UnsupportedVersion { .. }
            | NodeError::MissingMode
            | NodeError::UnsupportedProtocol(_)
            | NodeError::InvalidQuery(_) => Code::InvalidArgument,
            NodeError::Psi(_) | NodeError::Lookup(_) | NodeError::UnexpectedMessage { .. } => Code::InvalidArgument,
            NodeError::Learning(_) => Code::InvalidArgument,
            NodeError::NotOwnOrganisation { .. } | NodeError::NotAuthorised { .. } | NodeError::LedgerRefused(_) => {
                Code::PermissionDenied
            }
            NodeError::Identity(e) => e.code(),
            NodeError::PeerRefused { code, .. } => *code,
            NodeError::PeerVanished { .. } | NodeError::LedgerUnavailable(_) | NodeError::InFlight { .. } => {
                Code::Unavailable
            }
            NodeError::Busy { .. } | NodeError::TooManyPeerKeys { .. } => Code::ResourceExhausted,
            NodeError::ResultExists { .. } => Code::AlreadyExists,
            NodeError::DatasetChanged { .. } => Code::Aborted,
            NodeError::Stats(_)
            | NodeError::Blacklist(_)
            | NodeError::ComputeOnly(_)
            | NodeError::Pir(_)
            | NodeError::Model(_) => Code::FailedPrecondition,
            NodeError::Cancelled => Code::Cancelled,
            _ => Code::Internal,
        }
    }

    /// The status for this node's own organisation (its control service):
    /// the whole message, the datasets it serves included.
    pub fn into_local_status(self) -> tonic::Status {
        tonic::Status::new(self.code(), self.to_string())
    }
}

/// The one redaction policy: the status any other caller — a peer, the
/// operator — is sent. It never names this node's files, configuration,
/// datasets or columns: an unknown dataset is named, not the others; a
/// missing column is named, not the ones the table has; a failure of the
/// node's own files, configuration or workers is said to be local, with
/// the cause left in the node's own log (every service logs it) and in
/// [`NodeError::into_local_status`] for its own organisation.
impl From<NodeError> for tonic::Status {
    fn from(err: NodeError) -> Self {
        let code = err.code();
        let local = "this node could not serve the request from its own files or configuration; its operator has the cause in the node's log";
        let message = match &err {
            NodeError::UnknownDataset { name, .. } => format!(
                "unknown dataset '{name}': this node serves no dataset of that name to you; check the name on the ledger"
            ),
            NodeError::MissingColumn { column, .. } => {
                format!("this node's dataset has no column '{column}'; check the dataset's schema on the ledger")
            }
            NodeError::ReadFile { .. }
            | NodeError::WriteFile { .. }
            | NodeError::Config { .. }
            | NodeError::InvalidConfig(_)
            | NodeError::UnknownFormat { .. }
            | NodeError::Csv { .. }
            | NodeError::Records { .. }
            | NodeError::Parquet { .. }
            | NodeError::KeyColumnType { .. }
            | NodeError::WriteResult { .. }
            | NodeError::DatasetChanged { .. }
            | NodeError::ResultExists { .. }
            | NodeError::Tls(_)
            | NodeError::Worker(_)
            | NodeError::Listen { .. } => local.to_owned(),
            NodeError::Identity(e) if e.is_local() => local.to_owned(),
            _ => err.to_string(),
        };
        tonic::Status::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_dataset_is_named_to_a_peer_without_the_others() {
        let err = || NodeError::UnknownDataset { name: "ctd-x".into(), known: "ctd, registry, patients".into() };
        let peer = tonic::Status::from(err());
        assert_eq!(peer.code(), tonic::Code::NotFound);
        assert!(peer.message().contains("'ctd-x'"), "{peer:?}");
        for other in ["ctd,", "registry", "patients"] {
            assert!(!peer.message().contains(other), "{peer:?}");
        }
        assert!(err().into_local_status().message().contains("ctd, registry, patients"));
    }

    #[test]
    fn a_peer_is_told_no_local_path_column_list_or_configuration() {
        let read = || NodeError::ReadFile {
            path: "/srv/hospital/patients-2026.csv".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let missing = || NodeError::MissingColumn {
            path: "/srv/hospital/patients-2026.csv".into(),
            column: "hiv_status".into(),
            available: "patient_id, age, diagnosis".into(),
        };
        let config = NodeError::InvalidConfig("[datasets.patients] path = /srv/hospital/x.csv".into());
        for (peer, secret) in [
            (tonic::Status::from(read()), "/srv/hospital"),
            (tonic::Status::from(missing()), "/srv/hospital"),
            (tonic::Status::from(missing()), "diagnosis"),
            (tonic::Status::from(config), "/srv/hospital"),
        ] {
            assert!(!peer.message().contains(secret), "{peer:?}");
        }
        assert!(tonic::Status::from(missing()).message().contains("'hiv_status'"));
        assert!(read().into_local_status().message().contains("/srv/hospital"));
    }
}
