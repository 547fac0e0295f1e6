//! The one trait both backends implement, and what it returns.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::LedgerError;
use crate::records::{DatasetVersion, Digest, LedgerId, Member, SignedRecord};
use crate::rules::{GrantState, TaskState};

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Block height.
    pub height: u64,
    /// Position in the block.
    pub index: u32,
    /// The record's hash (the same on every backend).
    pub record_hash: Digest,
}

/// A record as it appears in the ledger's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEvent {
    /// Where it landed.
    pub receipt: Receipt,
    /// The record.
    pub record: SignedRecord,
}

/// Which grants to list.
#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    /// Only grants on this dataset.
    pub dataset: Option<String>,
    /// Only grants to this organisation.
    pub grantee: Option<String>,
}

/// The consortium's ledger: the source of truth for members, datasets,
/// grants, tasks, use records and results. Every write is a signed record
/// that the backend checks against the rules ([`crate::rules`]) before it
/// is stored; a refused record leaves no trace.
#[async_trait::async_trait]
pub trait Ledger: Send + Sync + std::fmt::Debug {
    /// Appends a record; returns where it landed once it is durable.
    async fn submit(&self, record: SignedRecord) -> Result<Receipt, LedgerError>;
    /// The ledger's identity: what every record and task request signed
    /// for it must name. Established from what the reader trusts (the
    /// operator-sealed genesis block; the pinned chain id and contract),
    /// never from the transport alone.
    async fn identity(&self) -> Result<LedgerId, LedgerError>;
    /// The newest block height.
    async fn height(&self) -> Result<u64, LedgerError>;
    /// A member by organisation id.
    async fn member(&self, org: &str) -> Result<Option<Member>, LedgerError>;
    /// Every member.
    async fn members(&self) -> Result<Vec<Member>, LedgerError>;
    /// Every version of a dataset, oldest first.
    async fn dataset(&self, id: &str) -> Result<Vec<DatasetVersion>, LedgerError>;
    /// The newest version of every dataset.
    async fn datasets(&self) -> Result<Vec<DatasetVersion>, LedgerError>;
    /// A grant and what has been consumed of it.
    async fn grant(&self, id: &str) -> Result<Option<GrantState>, LedgerError>;
    /// Grants matching a filter.
    async fn grants(&self, filter: &GrantFilter) -> Result<Vec<GrantState>, LedgerError>;
    /// A task and its trail (status, uses, results).
    async fn task(&self, id: &str) -> Result<Option<TaskState>, LedgerError>;
    /// Tasks requested by `requester` (all when `None`).
    async fn tasks(&self, requester: Option<&str>) -> Result<Vec<TaskState>, LedgerError>;
    /// Disputes of `dataset`'s listings (every dataset's when `None`).
    async fn disputes(&self, dataset: Option<&str>) -> Result<Vec<crate::rules::DisputeStatus>, LedgerError>;
    /// Records in blocks above `height`, oldest first: whole blocks, stopping
    /// after the block in which `limit` records are reached.
    async fn events_after(&self, height: u64, limit: usize) -> Result<Vec<LedgerEvent>, LedgerError>;
}

/// Follows the ledger from just after `height`: every record above it, in
/// order, then each new one as it lands. The stream ends on an error.
pub fn subscribe(ledger: Arc<dyn Ledger>, height: u64) -> mpsc::Receiver<Result<LedgerEvent, LedgerError>> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut after = height;
        loop {
            match ledger.events_after(after, 1024).await {
                Ok(events) if events.is_empty() => {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                        () = tx.closed() => return,
                    }
                }
                Ok(events) => {
                    // Batches hold whole blocks, so resume after the last one.
                    after = events.last().map_or(after, |e| e.receipt.height);
                    for event in events {
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    rx
}
