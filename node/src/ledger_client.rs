//! A member's view of the operator's embedded ledger, over mTLS.
//!
//! The client keeps a replica: it fetches sealed blocks, checks each one's
//! height, hash chain, operator seal and Merkle root, and replays every
//! record through the rules (signature included) at the block's time. It
//! trusts the operator's public key and nothing else — not the transport,
//! not the server's answers. The ledger's identity is the one the genesis
//! block names under the operator's seal, and every later block must name
//! the same. Queries are answered from the replica.
//!
//! A write is checked locally first (signature, replay, rules at the
//! ledger's current time), so a refusal comes back as the rule that refused
//! it; the server checks again and is authoritative. If the server refuses
//! what passed locally (another write got in first), the client catches up
//! and checks again to name the rule. An acknowledgement is not trusted
//! either: a write counts as written only once the client's verified
//! replica holds the record (the server's receipt is checked against the
//! chain the client verified itself), so a service that answers "written"
//! and drops the record is caught.

use stayput_chain_connector::LedgerError;
use stayput_chain_connector::block::Block;
use stayput_chain_connector::ledger::{GrantFilter, Ledger, LedgerEvent, Receipt};
use stayput_chain_connector::records::{DatasetVersion, Digest, LedgerId, Member, SignedRecord};
use stayput_chain_connector::rules::{GrantState, State, TaskState};
use stayput_proto::v1::ledger_service_client::LedgerServiceClient;
use stayput_proto::v1::{BlocksRequest, SubmitRecordRequest};
use tokio::sync::{Mutex, MutexGuard};
use tonic::transport::Channel;

use crate::wire::MAX_MESSAGE_BYTES;

const PAGE: u32 = 256;
/// Largest `Blocks` answer this client accepts: the service's page budget
/// (32 MiB) and one block's headroom.
const MAX_PAGE_MESSAGE_BYTES: usize = (32 << 20) + stayput_chain_connector::block::MAX_BLOCK_BYTES + (1 << 20);
/// Hashes of the most recent records the replica verified, kept to confirm
/// this client's own writes.
const RECENT_RECORDS: usize = 1 << 16;

#[derive(Debug, Clone, Copy)]
struct Tip {
    height: u64,
    hash: Digest,
    timestamp: u64,
}

#[derive(Debug, Default)]
struct Replica {
    /// The consortium's state; `None` until the genesis block is verified.
    state: Option<State>,
    tip: Option<Tip>,
    /// The latest verified records' hashes, oldest first (bounded).
    recent: std::collections::VecDeque<Digest>,
    now: u64,
}

/// The ledger client.
#[derive(Debug)]
pub struct RemoteLedger {
    client: LedgerServiceClient<Channel>,
    operator: [u8; 32],
    replica: Mutex<Replica>,
}

fn rpc(e: &tonic::Status) -> LedgerError {
    LedgerError::Rpc(format!("ledger service: {}", e.message()))
}

impl Replica {
    fn state(&self) -> Result<&State, LedgerError> {
        self.state.as_ref().ok_or_else(|| LedgerError::Rpc("the ledger service sent no genesis block".into()))
    }
}

/// Verifies `blocks` (consecutive, chained, sealed, rooted, of one ledger)
/// and replays their records into `state` (made from the genesis block).
fn apply_blocks(
    mut state: Option<State>,
    mut tip: Option<Tip>,
    blocks: Vec<Vec<u8>>,
    operator: [u8; 32],
    recent: &mut Vec<Digest>,
) -> (Option<State>, Option<Tip>, Result<(), LedgerError>) {
    for bytes in blocks {
        let expected = tip.map_or(0, |t| t.height + 1);
        let corrupt = |reason: String| LedgerError::Corrupt { height: expected, reason };
        let outcome = Block::from_bytes(&bytes).map_err(|e| corrupt(e.to_string())).and_then(|block| {
            if block.header.height != expected {
                return Err(corrupt(format!("the server sent block {} instead", block.header.height)));
            }
            if block.header.prev_hash != tip.map_or([0; 32], |t| t.hash) {
                return Err(corrupt("it does not chain to the previous block".into()));
            }
            if tip.is_some_and(|t| block.header.timestamp < t.timestamp) {
                return Err(corrupt("its time runs backwards".into()));
            }
            block.check(&operator).map_err(corrupt)?;
            let state = state.get_or_insert_with(|| State::new(block.header.ledger));
            if block.header.ledger != state.ledger {
                return Err(corrupt(format!(
                    "it names ledger {}, not this ledger ({})",
                    block.header.ledger, state.ledger
                )));
            }
            for (i, record) in block.records.iter().enumerate() {
                state
                    .apply(record, block.header.timestamp)
                    .map_err(|e| corrupt(format!("the operator sealed record {i}, which the rules refuse: {e}")))?;
                recent.push(record.hash());
            }
            Ok(Tip { height: block.header.height, hash: block.header.hash(), timestamp: block.header.timestamp })
        });
        match outcome {
            Ok(next) => tip = Some(next),
            Err(e) => return (state, tip, Err(e)),
        }
    }
    (state, tip, Ok(()))
}

impl RemoteLedger {
    /// A client on an mTLS channel to the coordinator, trusting `operator`'s
    /// public key.
    pub fn new(channel: Channel, operator: [u8; 32]) -> Self {
        let client = LedgerServiceClient::new(channel)
            // A page is at most 32 MiB of blocks, or one block of at most
            // 8 MiB of records plus their framing.
            .max_decoding_message_size(MAX_PAGE_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Self { client, operator, replica: Mutex::new(Replica::default()) }
    }

    async fn sync(&self) -> Result<MutexGuard<'_, Replica>, LedgerError> {
        let mut replica = self.replica.lock().await;
        loop {
            let request = BlocksRequest { after: replica.tip.map(|t| t.height), limit: PAGE };
            let answer = self.client.clone().blocks(request).await.map_err(|e| rpc(&e))?.into_inner();
            replica.now = answer.now;
            if answer.blocks.is_empty() {
                return Ok(replica);
            }
            let blocks: Vec<Vec<u8>> = answer.blocks.into_iter().map(|b| b.to_vec()).collect();
            let (state, tip, operator) = (std::mem::take(&mut replica.state), replica.tip, self.operator);
            let replayed = tokio::task::spawn_blocking(move || {
                let mut recent = Vec::new();
                let (state, tip, outcome) = apply_blocks(state, tip, blocks, operator, &mut recent);
                (state, tip, outcome, recent)
            })
            .await;
            let Ok((state, tip, outcome, recent)) = replayed else {
                *replica = Replica::default();
                return Err(LedgerError::Rpc("replaying blocks failed".into()));
            };
            replica.state = state;
            replica.tip = tip;
            replica.recent.extend(recent);
            let excess = replica.recent.len().saturating_sub(RECENT_RECORDS);
            replica.recent.drain(..excess);
            outcome?;
            if replica.tip.is_some_and(|t| t.height >= answer.tip) {
                return Ok(replica);
            }
        }
    }
}

#[async_trait::async_trait]
impl Ledger for RemoteLedger {
    async fn submit(&self, record: SignedRecord) -> Result<Receipt, LedgerError> {
        record.check_storable()?;
        {
            let replica = self.sync().await?;
            replica.state()?.check(&record, replica.now)?;
        }
        let request = SubmitRecordRequest { signed_record: record.to_bytes().into() };
        match self.client.clone().submit(request).await {
            Ok(answer) => {
                let answer = answer.into_inner();
                let hash = record.hash();
                // Written only once the chain this client verified holds it.
                let replica = self.sync().await?;
                if !replica.recent.contains(&hash) {
                    return Err(LedgerError::Corrupt {
                        height: answer.height,
                        reason: format!(
                            "the ledger service acknowledged record {} here, but the verified chain does not hold it: it was not written; write it again",
                            hex::encode(&hash[..8])
                        ),
                    });
                }
                Ok(Receipt { height: answer.height, index: answer.index, record_hash: hash })
            }
            Err(status) => {
                // Name the rule if another write got in first; else relay.
                let replica = self.sync().await?;
                replica.state()?.check(&record, replica.now)?;
                Err(rpc(&status))
            }
        }
    }

    async fn identity(&self) -> Result<LedgerId, LedgerError> {
        Ok(self.sync().await?.state()?.ledger)
    }

    async fn height(&self) -> Result<u64, LedgerError> {
        Ok(self.sync().await?.tip.map_or(0, |t| t.height))
    }

    async fn member(&self, org: &str) -> Result<Option<Member>, LedgerError> {
        Ok(self.sync().await?.state()?.members.get(org).cloned())
    }

    async fn members(&self) -> Result<Vec<Member>, LedgerError> {
        Ok(self.sync().await?.state()?.members.values().cloned().collect())
    }

    async fn dataset(&self, id: &str) -> Result<Vec<DatasetVersion>, LedgerError> {
        Ok(self.sync().await?.state()?.datasets.get(id).cloned().unwrap_or_default())
    }

    async fn datasets(&self) -> Result<Vec<DatasetVersion>, LedgerError> {
        Ok(self.sync().await?.state()?.latest_datasets())
    }

    async fn grant(&self, id: &str) -> Result<Option<GrantState>, LedgerError> {
        Ok(self.sync().await?.state()?.grants.get(id).cloned())
    }

    async fn grants(&self, filter: &GrantFilter) -> Result<Vec<GrantState>, LedgerError> {
        Ok(self.sync().await?.state()?.grants_matching(filter))
    }

    async fn task(&self, id: &str) -> Result<Option<TaskState>, LedgerError> {
        Ok(self.sync().await?.state()?.tasks.get(id).cloned())
    }

    async fn tasks(&self, requester: Option<&str>) -> Result<Vec<TaskState>, LedgerError> {
        Ok(self.sync().await?.state()?.tasks_of(requester))
    }

    async fn disputes(
        &self,
        dataset: Option<&str>,
    ) -> Result<Vec<stayput_chain_connector::rules::DisputeStatus>, LedgerError> {
        Ok(self.sync().await?.state()?.disputes_of(dataset))
    }

    async fn events_after(&self, height: u64, limit: usize) -> Result<Vec<LedgerEvent>, LedgerError> {
        let tip = self.sync().await?.tip.map_or(0, |t| t.height);
        let mut events = Vec::new();
        let mut after = height;
        while after < tip && events.len() < limit {
            let request = BlocksRequest { after: Some(after), limit: PAGE };
            let answer = self.client.clone().blocks(request).await.map_err(|e| rpc(&e))?.into_inner();
            if answer.blocks.is_empty() {
                break;
            }
            for bytes in answer.blocks {
                let block = Block::from_bytes(&bytes)?;
                let height = block.header.height;
                if height <= after {
                    let reason = format!("the server sent block {height} when asked for blocks after {after}");
                    return Err(LedgerError::Corrupt { height, reason });
                }
                // Already replayed (signatures, rules); seal and root checked again here.
                block.check(&self.operator).map_err(|reason| LedgerError::Corrupt { height, reason })?;
                for (i, record) in block.records.into_iter().enumerate() {
                    let index = u32::try_from(i).unwrap_or(u32::MAX);
                    events.push(LedgerEvent { receipt: Receipt { height, index, record_hash: record.hash() }, record });
                }
                after = height;
                if events.len() >= limit || after >= tip {
                    break;
                }
            }
        }
        Ok(events)
    }
}
