//! The crate's one error type.

use std::path::PathBuf;

use crate::rules::Refusal;

/// Everything a ledger can fail at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The rules refused a record; nothing was stored.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// A record's signature does not verify against its writer's key.
    #[error("the {kind} record's signature does not verify against the key of '{writer}'")]
    BadSignature { writer: String, kind: &'static str },
    /// Bytes that are not a canonical encoding.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// The stored chain does not verify.
    #[error("the ledger is damaged at block {height}: {reason}; restore it from a replica or backup")]
    Corrupt { height: u64, reason: String },
    /// The ledger file was sealed by a different operator.
    #[error("the ledger was sealed by operator key {found}, not {expected}; open it with the operator's key")]
    WrongOperator { expected: String, found: String },
    /// An inclusion proof that does not hold.
    #[error("the inclusion proof does not hold: {0}")]
    BadProof(String),
    /// No record with that hash.
    #[error("no record with hash {0} is on the ledger")]
    UnknownRecord(String),
    /// A ledger file where a new one was to be created.
    #[error("{0} exists already; open it instead of creating it")]
    Exists(PathBuf),
    /// No ledger file where one was to be opened.
    #[error("{0} does not exist; create the ledger first")]
    NotFound(PathBuf),
    /// The file was not closed cleanly and a read-only open cannot recover it.
    #[error(
        "{0} was not closed cleanly; the operator's ledger process recovers it when it next opens it (committed blocks are kept)"
    )]
    NeedsRecovery(PathBuf),
    /// Another process holds the file.
    #[error("{0} is open in another process; stop it or read a copy")]
    InUse(PathBuf),
    /// An EVM account's transaction was for another writer.
    #[error("the account that sent the record is not the registered account of '{writer}'")]
    WrongAccount { writer: String },
    /// This EVM handle holds no account for an organisation.
    #[error("no EVM account is configured for '{org}'")]
    NoAccount { org: String },
    /// The EVM node failed or answered unexpectedly.
    #[error("EVM node: {0}")]
    Rpc(String),
    /// The storage engine failed.
    #[cfg(feature = "backends")]
    #[error("ledger storage: {0}")]
    Store(#[from] redb::Error),
    /// A previous storage failure stopped this handle; reopening re-verifies.
    #[error("the ledger stopped after a storage failure ({0}); reopen it")]
    Stopped(String),
    /// A key file.
    #[error("key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
}

#[cfg(feature = "backends")]
macro_rules! from_redb {
    ($($t:ty),+) => {
        $(impl From<$t> for LedgerError {
            fn from(e: $t) -> Self {
                LedgerError::Store(e.into())
            }
        })+
    };
}

#[cfg(feature = "backends")]
from_redb!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);
