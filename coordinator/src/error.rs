//! The coordinator crate's one error type, mapped to gRPC statuses only at
//! the edge. Messages say what was wrong and what to do; they never carry
//! rows, ids of data subjects or secrets.

use std::path::PathBuf;

use stayput_chain_connector::LedgerError;
use tonic::{Code, Status};

/// Everything the coordinator can fail at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    #[error("{path} is not a valid coordinator configuration: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("the task request is malformed: {0}")]
    BadRequest(String),
    #[error("{0}")]
    BadTaskId(#[from] stayput_chain_connector::tasks::InvalidTaskId),
    #[error("'{caller}' may only submit its own requests; this one is signed for '{requester}'")]
    NotRequester { caller: String, requester: String },
    #[error(
        "the request was issued at {issued_at} (unix seconds) and the coordinator's time is {now}; requests are accepted within {window} s. Check the clock and sign a new request"
    )]
    Stale { issued_at: u64, now: u64, window: u64 },
    #[error("this request's nonce was used before by another request; sign a new request")]
    Replayed,
    #[error("unknown dataset '{dataset}': it is not on the ledger (`stayput ledger datasets` lists them)")]
    UnknownDataset { dataset: String },
    #[error(
        "no grant lets '{requester}' use dataset '{dataset}' for this task: {reason}. Ask the dataset's owner for a grant"
    )]
    NoGrant { requester: String, dataset: String, reason: String },
    #[error("grant '{grant}' does not allow column '{column}' (it allows: {allowed})")]
    ColumnNotAllowed { grant: String, column: String, allowed: String },
    #[error("receiver '{receiver}' cannot receive this task's result: {reason}")]
    BadReceiver { receiver: String, reason: String },
    #[error("{kind} tasks are not supported by this coordinator yet")]
    Unsupported { kind: String },
    #[error("unknown task '{0}'")]
    UnknownTask(String),
    #[error("'{caller}' may not watch task '{task}': only its requester and the operator may")]
    NotYourTask { caller: String, task: String },
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("{0}")]
    Identity(#[from] stayput_identity::IdentityError),
    #[error("the coordinator's state store ({path}): {reason}")]
    Store { path: PathBuf, reason: String },
    #[error("cannot listen on {address}: {detail}")]
    Listen { address: String, detail: String },
    #[error("the coordinator refused: {0}")]
    Refused(String),
    #[error("the coordinator is unavailable: {0}")]
    Unavailable(String),
    #[error("the node of '{org}' failed the task: {message}")]
    NodeFailed { org: String, message: String },
    /// The node, or a peer it talks to, went away or could not be reached
    /// while running the task: the task is run again (it resumes where the
    /// protocol allows) a bounded number of times before it fails.
    #[error("the node of '{org}' could not finish the task for now: {message}")]
    NodeUnavailable { org: String, message: String },
}

impl CoordinatorError {
    /// Whether running the task again may succeed: a node or its peer went
    /// away or could not be reached.
    pub fn is_transient(&self) -> bool {
        match self {
            CoordinatorError::NodeUnavailable { .. } => true,
            CoordinatorError::Identity(e) => e.code() == Code::Unavailable,
            _ => false,
        }
    }
}

impl From<CoordinatorError> for Status {
    fn from(e: CoordinatorError) -> Self {
        use CoordinatorError::*;
        let code = match &e {
            BadRequest(_) | BadTaskId(_) | Stale { .. } | BadReceiver { .. } => Code::InvalidArgument,
            NotRequester { .. } | NoGrant { .. } | ColumnNotAllowed { .. } | NotYourTask { .. } => {
                Code::PermissionDenied
            }
            Replayed => Code::AlreadyExists,
            UnknownDataset { .. } | UnknownTask(_) => Code::NotFound,
            Unsupported { .. } => Code::Unimplemented,
            Refused(_) => Code::FailedPrecondition,
            Ledger(LedgerError::Refused(_)) => Code::FailedPrecondition,
            Ledger(LedgerError::BadSignature { .. }) => Code::PermissionDenied,
            Ledger(LedgerError::Malformed { .. }) => Code::InvalidArgument,
            Ledger(LedgerError::Rpc(_)) | Unavailable(_) => Code::Unavailable,
            Identity(e) => e.code(),
            _ => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}
