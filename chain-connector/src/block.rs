//! Blocks of the embedded ledger: a header chaining to the previous block
//! and committing to its records by Merkle root, sealed with the operator's
//! signature; and inclusion proofs that any holder of the operator's
//! public key checks offline.

use sha2::{Digest as _, Sha256};

use crate::LedgerError;
use crate::codec::{Reader, Writer};
use crate::merkle;
use crate::records::{Digest, LedgerId, SignedRecord, verify_bytes};

const BLOCK_LABEL: &[u8] = b"stayput/ledger/block/v2";
const PROOF_LABEL: &[u8] = b"stayput/ledger/inclusion-proof/v2";

/// Most records in one block.
pub const MAX_BLOCK_RECORDS: usize = 8192;
/// Longest encoded record.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Most bytes of records in one block: a block, and so a page of the
/// ledger service, stays small enough for every replica to fetch, however
/// large the records members write (a block of 8,192 records of 64 KiB
/// would be 512 MiB).
pub const MAX_BLOCK_BYTES: usize = 8 << 20;

/// What the operator signs for each block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    /// The ledger: the same in every block, fixed by the genesis block.
    pub ledger: LedgerId,
    /// 0 for the genesis block.
    pub height: u64,
    /// Hash of the previous block's header (zeros for genesis).
    pub prev_hash: Digest,
    /// Merkle root over the block's records.
    pub merkle_root: Digest,
    /// Unix time (seconds) at sealing: the clock the rules use.
    pub timestamp: u64,
    /// Number of records.
    pub record_count: u32,
}

impl BlockHeader {
    fn encode(&self, w: &mut Writer) {
        w.bytes(BLOCK_LABEL)
            .fixed(&self.ledger.0)
            .u64(self.height)
            .fixed(&self.prev_hash)
            .fixed(&self.merkle_root)
            .u64(self.timestamp)
            .u32(self.record_count);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, LedgerError> {
        let label = r.bytes()?;
        if label != BLOCK_LABEL {
            let reason = if label.starts_with(b"stayput/ledger/block/") {
                format!(
                    "a block of format {}; this build reads block/v2 (records v2) only",
                    String::from_utf8_lossy(&label)
                )
            } else {
                "wrong label".into()
            };
            return Err(LedgerError::Malformed { what: "block header", reason });
        }
        Ok(Self {
            ledger: LedgerId(r.fixed()?),
            height: r.u64()?,
            prev_hash: r.fixed()?,
            merkle_root: r.fixed()?,
            timestamp: r.u64()?,
            record_count: r.u32()?,
        })
    }

    /// The header's hash: what the next block chains to and the operator signs.
    pub fn hash(&self) -> Digest {
        let mut w = Writer::new();
        self.encode(&mut w);
        Sha256::digest(w.into_bytes()).into()
    }
}

/// A sealed block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The header.
    pub header: BlockHeader,
    /// The operator's signature over the header's hash.
    pub seal: [u8; 64],
    /// The records, in order.
    pub records: Vec<SignedRecord>,
}

impl Block {
    /// Storage encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.header.encode(&mut w);
        w.fixed(&self.seal);
        w.u32(u32::try_from(self.records.len()).expect("bounded"));
        for record in &self.records {
            w.bytes_unbounded(&record.to_bytes());
        }
        w.into_bytes()
    }

    /// Decodes a stored block (structure only; [`Block::check`] verifies it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LedgerError> {
        let mut r = Reader::new(bytes, "block");
        let header = BlockHeader::decode(&mut r)?;
        let seal = r.fixed()?;
        let count = r.u32()? as usize;
        if count > MAX_BLOCK_RECORDS || count != header.record_count as usize {
            return Err(LedgerError::Malformed { what: "block", reason: format!("{count} records") });
        }
        let mut records = Vec::with_capacity(count);
        for _ in 0..count {
            records.push(SignedRecord::from_bytes(&r.bytes_bounded(MAX_RECORD_BYTES)?)?);
        }
        r.finish()?;
        Ok(Self { header, seal, records })
    }

    /// Leaf hashes of the records.
    pub fn leaves(&self) -> Vec<Digest> {
        self.records.iter().map(SignedRecord::hash).collect()
    }

    /// Checks the seal and the Merkle root (not the records' own signatures
    /// or rules: those need the ledger's state); returns the records' leaf
    /// hashes it computed on the way.
    pub fn check(&self, operator_key: &[u8; 32]) -> Result<Vec<Digest>, String> {
        if !verify_bytes(operator_key, &self.header.hash(), &self.seal) {
            return Err("the operator's seal does not verify".into());
        }
        let leaves = self.leaves();
        if merkle::root(&leaves) != self.header.merkle_root {
            return Err("the records do not match the header's Merkle root".into());
        }
        Ok(leaves)
    }

    /// An inclusion proof for record `index`.
    pub fn proof(&self, index: usize) -> InclusionProof {
        InclusionProof {
            header: self.header,
            seal: self.seal,
            index: u32::try_from(index).expect("bounded"),
            path: merkle::path(&self.leaves(), index),
            record: self.records[index].clone(),
        }
    }
}

/// Proof that a record is in a block the operator sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// The block's header.
    pub header: BlockHeader,
    /// The operator's seal on it.
    pub seal: [u8; 64],
    /// The record's position in the block.
    pub index: u32,
    /// The Merkle audit path.
    pub path: Vec<Digest>,
    /// The record itself.
    pub record: SignedRecord,
}

impl InclusionProof {
    /// Checks the proof against the operator's public key; returns the
    /// record's hash. Offline: needs nothing but the key.
    pub fn verify(&self, operator_key: &[u8; 32]) -> Result<Digest, LedgerError> {
        let bad = |reason: &str| LedgerError::BadProof(reason.into());
        if !verify_bytes(operator_key, &self.header.hash(), &self.seal) {
            return Err(bad("the block header's seal does not verify against the operator's key"));
        }
        let leaf = self.record.hash();
        let size = u64::from(self.header.record_count);
        if !merkle::verify(&leaf, u64::from(self.index), size, &self.path, &self.header.merkle_root) {
            return Err(bad("the record is not in the block: the audit path does not lead to the Merkle root"));
        }
        Ok(leaf)
    }

    /// Encoding for files and the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(PROOF_LABEL);
        self.header.encode(&mut w);
        w.fixed(&self.seal).u32(self.index).list(&self.path, |w, d| {
            w.fixed(d);
        });
        w.bytes_unbounded(&self.record.to_bytes());
        w.into_bytes()
    }

    /// Decodes a proof.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LedgerError> {
        let mut r = Reader::new(bytes, "inclusion proof");
        if r.bytes()? != PROOF_LABEL {
            return Err(LedgerError::Malformed { what: "inclusion proof", reason: "wrong label".into() });
        }
        let proof = Self {
            header: BlockHeader::decode(&mut r)?,
            seal: r.fixed()?,
            index: r.u32()?,
            path: r.list(|r| r.fixed())?,
            record: SignedRecord::from_bytes(&r.bytes_bounded(MAX_RECORD_BYTES)?)?,
        };
        r.finish()?;
        Ok(proof)
    }
}
