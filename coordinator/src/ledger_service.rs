//! The `LedgerService`: the operator's embedded ledger, served to members.
//!
//! Submissions are accepted only from the organisation that wrote the
//! record (the TLS client certificate's organisation must be the record's
//! writer) or from the operator itself; the ledger then checks the
//! signature and the rules as for any write. Blocks go out in their sealed
//! canonical form: clients verify them against the operator's key.

use std::sync::Arc;

use stayput_chain_connector::embedded::EmbeddedLedger;
use stayput_chain_connector::records::SignedRecord;
use stayput_chain_connector::{Ledger, LedgerError};
use stayput_identity::caller_org;
use stayput_proto::v1::ledger_service_server::LedgerService;
use stayput_proto::v1::{BlocksRequest, BlocksResponse, SubmitRecordRequest, SubmitRecordResponse};
use tonic::{Code, Request, Response, Status};

/// Most blocks one `Blocks` answer carries.
pub const MAX_BLOCKS_PER_ANSWER: usize = 256;
/// Most bytes of blocks one `Blocks` answer carries (it always carries at
/// least one block, itself at most about `MAX_BLOCK_BYTES`), so no member
/// can write records that make a page too large for replicas to fetch.
pub const MAX_PAGE_BYTES: usize = 32 << 20;

/// The service over one embedded ledger.
#[derive(Debug, Clone)]
pub struct LedgerServer {
    ledger: Arc<EmbeddedLedger>,
    operator: String,
}

impl LedgerServer {
    /// Serves `ledger`, whose operator organisation is `operator`.
    pub fn new(ledger: Arc<EmbeddedLedger>, operator: &str) -> Self {
        Self { ledger, operator: operator.to_owned() }
    }
}

fn status(e: &LedgerError) -> Status {
    let code = match e {
        LedgerError::Refused(_) => Code::FailedPrecondition,
        LedgerError::BadSignature { .. } | LedgerError::WrongAccount { .. } => Code::PermissionDenied,
        LedgerError::Malformed { .. } => Code::InvalidArgument,
        _ => Code::Internal,
    };
    Status::new(code, e.to_string())
}

#[tonic::async_trait]
impl LedgerService for LedgerServer {
    async fn submit(&self, request: Request<SubmitRecordRequest>) -> Result<Response<SubmitRecordResponse>, Status> {
        let caller = caller_org(&request)?;
        let record = SignedRecord::from_bytes(&request.into_inner().signed_record).map_err(|e| status(&e))?;
        if caller != record.writer && caller != self.operator {
            return Err(Status::permission_denied(format!(
                "'{caller}' may submit only its own records, not one written by '{}'",
                record.writer
            )));
        }
        let receipt = self.ledger.submit(record).await.map_err(|e| status(&e))?;
        Ok(Response::new(SubmitRecordResponse {
            height: receipt.height,
            index: receipt.index,
            record_hash: receipt.record_hash.to_vec().into(),
        }))
    }

    async fn blocks(&self, request: Request<BlocksRequest>) -> Result<Response<BlocksResponse>, Status> {
        let request = request.into_inner();
        let limit = (request.limit as usize).clamp(1, MAX_BLOCKS_PER_ANSWER);
        let ledger = self.ledger.clone();
        let (blocks, tip) =
            tokio::task::spawn_blocking(move || ledger.blocks_after(request.after, limit, MAX_PAGE_BYTES))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| status(&e))?;
        Ok(Response::new(BlocksResponse {
            blocks: blocks.into_iter().map(Into::into).collect(),
            tip,
            now: self.ledger.now(),
        }))
    }
}
