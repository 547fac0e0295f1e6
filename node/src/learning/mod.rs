//! Joint modelling and joint prediction over nodes: the `train` and
//! `predict` task kinds, carried by the `LearningPeer` service.
//!
//! The requester is the **label holder** (a bank: labels and some
//! features); the peer dataset's owner is the **feature holder** (a bureau:
//! other features of the same customers). One session:
//!
//! 1. **Open.** The requester names the task and the peer dataset; the
//!    owner reads the task's parameters from the ledger (never from the
//!    peer), runs the serve path — task, requester, kind, grant, the
//!    columns it reads — and writes the use record (the requester's key
//!    count) before any key is touched ([`owner`]).
//! 2. **Alignment.** The balanced ECDH-PSI in intersection-to-both mode,
//!    nested in the session's stream: no raw id crosses, and both sides end
//!    with the common keys, which each orders by their encoding, so row `i`
//!    is the same customer on both sides ([`align`]). Fewer common keys
//!    than the grant's minimum cohort ends the session.
//! 3. **The protocol** of `stayput-learning` — SecureBoost or logistic
//!    regression for training, leaf masks or partial scores for prediction
//!    — its messages in their versioned encodings, framed ([`frames`]),
//!    on blocking threads.
//! 4. **Model shares.** After training each party writes its share of the
//!    model to its own node only ([`ShareFile`], `<state_dir>/models/`),
//!    with a salted commitment; both commitments go on the ledger in the
//!    training task's result record. Before a prediction, each node checks
//!    its share against that record, so a prediction provably uses the
//!    trained model and neither party can swap its share unnoticed.
//!
//! What each party learns is stated in `stayput-learning`'s `boost` and
//! `logistic` modules; the carriage adds only the aligned customers (both
//! sides) and, at prediction, which applicants the bureau holds.

pub mod owner;
pub mod requester;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use stayput_chain_connector::tasks::ModelSpec;
use stayput_learning::boost::BoostParams;
use stayput_learning::logistic::LrParams;
use stayput_learning::split::TreeParams;
use stayput_learning::wire::ModelShare;
use stayput_proto::v1::LearningFrame;

use crate::NodeError;
use crate::dataset::Dataset;

/// Version of the `LearningPeer` session protocol.
pub const PROTOCOL_VERSION: u32 = 1;

/// Bytes of one frame's chunk: well inside a gRPC message.
pub const FRAME_BYTES: usize = 1 << 20;

/// The most bytes one reassembled learning message may have: room for two
/// ciphertexts (or a mask and a score) per aligned row, plus a margin.
pub fn max_message_bytes(aligned_rows: usize) -> usize {
    (64 << 20) + aligned_rows.saturating_mul(2 * stayput_learning::paillier::CIPHERTEXT_BYTES)
}

/// Splits an encoded message into frames.
pub fn frames(message: &[u8]) -> impl Iterator<Item = LearningFrame> + '_ {
    let count = message.len().div_ceil(FRAME_BYTES).max(1);
    (0..count).map(move |i| {
        let chunk = &message[i * FRAME_BYTES..((i + 1) * FRAME_BYTES).min(message.len())];
        LearningFrame { chunk: chunk.to_vec().into(), last: i + 1 == count }
    })
}

/// Reassembles one message from frames, refusing more than `max` bytes.
#[derive(Debug, Default)]
pub struct Reassembly {
    bytes: Vec<u8>,
}

impl Reassembly {
    /// Adds a frame; returns the message when it is complete.
    pub fn push(&mut self, frame: LearningFrame, max: usize, peer: &str) -> Result<Option<Vec<u8>>, NodeError> {
        if self.bytes.len() + frame.chunk.len() > max {
            return Err(NodeError::InconsistentPeer {
                peer: peer.into(),
                detail: format!("a learning message over {max} bytes, more than the aligned rows need"),
            });
        }
        self.bytes.extend_from_slice(&frame.chunk);
        Ok(frame.last.then(|| std::mem::take(&mut self.bytes)))
    }
}

/// The peer's next learning message over `link`, reassembled from its
/// frames (`frame_of` takes the frame out of a message, or names what came
/// instead).
pub fn recv_message<I, O>(
    link: &mut impl crate::wire::Link<I, O>,
    max: usize,
    frame_of: impl Fn(I) -> Result<LearningFrame, &'static str>,
) -> Result<Vec<u8>, NodeError> {
    let mut message = Reassembly::default();
    loop {
        let frame = frame_of(link.recv("learning")?).map_err(|got| NodeError::UnexpectedMessage {
            peer: link.peer().into(),
            expected: "frame",
            got,
        })?;
        if let Some(bytes) = message.push(frame, max, link.peer())? {
            return Ok(bytes);
        }
    }
}

/// The aligned order: the common keys, sorted by their encoding, which both
/// sides share (the same key columns and normalisation, checked at open).
pub fn align(mut common: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    common.sort_unstable();
    common
}

/// A party's numeric columns for the aligned rows: `columns[f][row]`,
/// missing values as NaN.
#[derive(Debug)]
pub struct AlignedColumns {
    /// Per column, per aligned row.
    pub columns: Vec<Vec<f64>>,
}

/// Reads `columns` of `dataset` for the rows whose keys are `aligned` (in
/// that order). A key naming two rows is refused (a model needs one row per
/// customer); a value that is not a number is refused naming its column,
/// never the value.
pub fn load_aligned(dataset: &Dataset, columns: &[String], aligned: &[Vec<u8>]) -> Result<AlignedColumns, NodeError> {
    let wanted: HashMap<&[u8], usize> = aligned.iter().enumerate().map(|(i, k)| (k.as_slice(), i)).collect();
    let (rows, _) = dataset.keys_with_columns(columns)?;
    let mut out = vec![vec![f64::NAN; aligned.len()]; columns.len()];
    let mut seen = vec![false; aligned.len()];
    for (key, values) in rows {
        let Some(&row) = wanted.get(key.as_slice()) else { continue };
        if std::mem::replace(&mut seen[row], true) {
            return Err(NodeError::Model(format!(
                "dataset '{}' has two rows with the same key; joint modelling needs one row per customer",
                dataset.name
            )));
        }
        for (f, value) in values.into_iter().enumerate() {
            out[f][row] = parse_number(value.as_deref(), &columns[f], &dataset.name)?;
        }
    }
    if seen.iter().any(|s| !s) {
        return Err(NodeError::DatasetChanged { path: dataset.path.clone() });
    }
    Ok(AlignedColumns { columns: out })
}

fn parse_number(text: Option<&str>, column: &str, dataset: &str) -> Result<f64, NodeError> {
    let text = text.map(str::trim).unwrap_or("");
    if text.is_empty() || text.eq_ignore_ascii_case("na") || text.eq_ignore_ascii_case("nan") {
        return Ok(f64::NAN);
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| {
        NodeError::Model(format!("column '{column}' of dataset '{dataset}' holds a value that is not a number"))
    })
}

/// Labels 0/1 from a parsed column; a missing or other value is refused.
pub fn labels(column: &[f64], name: &str) -> Result<Vec<u8>, NodeError> {
    column
        .iter()
        .map(|v| match *v {
            0.0 => Ok(0),
            1.0 => Ok(1),
            _ => Err(NodeError::Model(format!(
                "label column '{name}' must hold 0 or 1 on every aligned row; one holds something else or nothing"
            ))),
        })
        .collect()
}

/// The learning crate's parameters of a task's model.
pub fn boost_params(model: &ModelSpec) -> Option<BoostParams> {
    match *model {
        ModelSpec::BoostedTrees {
            trees,
            max_bins,
            max_depth,
            learning_rate,
            min_child_weight,
            lambda,
            gamma,
            min_node_rows,
        } => Some(BoostParams {
            trees,
            max_bins: max_bins as usize,
            tree: TreeParams { learning_rate, max_depth, min_child_weight, lambda, gamma, min_node_rows },
        }),
        ModelSpec::LogisticRegression { .. } => None,
    }
}

/// The learning crate's parameters of a logistic-regression task.
pub fn lr_params(model: &ModelSpec) -> Option<LrParams> {
    match *model {
        ModelSpec::LogisticRegression { epochs, batch_size, learning_rate, l2 } => {
            Some(LrParams { epochs, batch_size: batch_size as usize, learning_rate, l2 })
        }
        ModelSpec::BoostedTrees { .. } => None,
    }
}

const SHARE_MAGIC: &[u8] = b"stayput-model-share";
const SHARE_FILE_VERSION: u8 = 1;
const COMMITMENT_LABEL: &[u8] = b"stayput/model-share-commitment/v1";
/// Largest share file read back.
const MAX_SHARE_FILE_BYTES: u64 = 256 << 20;

/// Which party a share belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The requester: labels, leaf weights.
    LabelHolder = 1,
    /// The peer: its features' splits or weights.
    FeatureHolder = 2,
}

/// A party's model share as its node keeps it:
/// `<state_dir>/models/<training task>.share`, written once, atomically.
///
/// File format v1: `"stayput-model-share"`, version `1`, the 32-byte salt,
/// then the committed body — party (`u8`), the feature columns (`u32`
/// count, each `u32` length and UTF-8), the `stayput-learning` model-share
/// encoding (`u32` length and bytes). The commitment on the ledger is
/// `SHA-256("stayput/model-share-commitment/v1" ‖ salt ‖ body)`: hiding
/// (the salt is secret) and binding.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareFile {
    /// Which party.
    pub party: Party,
    /// The feature columns, in the model's order.
    pub columns: Vec<String>,
    /// The model share.
    pub share: ModelShare,
    salt: [u8; 32],
}

impl ShareFile {
    /// A new share with a fresh salt.
    pub fn new(party: Party, columns: Vec<String>, share: ModelShare) -> Self {
        let mut salt = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
        Self { party, columns, share, salt }
    }

    /// Where the share of `task` lives.
    pub fn path(state_dir: &Path, task: &str) -> PathBuf {
        state_dir.join("models").join(format!("{task}.share"))
    }

    fn body(&self) -> Vec<u8> {
        // Column names and the share are bounded far below 2³² bytes (the
        // share file is read back only up to MAX_SHARE_FILE_BYTES).
        let len = |n: usize| u32::try_from(n).expect("bounded far below 2^32").to_le_bytes();
        let mut body = vec![self.party as u8];
        body.extend(len(self.columns.len()));
        for c in &self.columns {
            body.extend(len(c.len()));
            body.extend(c.as_bytes());
        }
        let share = self.share.to_bytes();
        body.extend(len(share.len()));
        body.extend(share);
        body
    }

    /// The salted commitment the ledger records.
    pub fn commitment(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(COMMITMENT_LABEL);
        h.update(self.salt);
        h.update(self.body());
        h.finalize().into()
    }

    /// Writes the file (refusing to replace one) and returns the commitment.
    pub fn write(&self, state_dir: &Path, task: &str) -> Result<[u8; 32], NodeError> {
        let path = Self::path(state_dir, task);
        let mut out = crate::results::AtomicFile::create(&path)?;
        let mut bytes = SHARE_MAGIC.to_vec();
        bytes.push(SHARE_FILE_VERSION);
        bytes.extend(self.salt);
        bytes.extend(self.body());
        std::io::Write::write_all(out.file(), &bytes).map_err(|source| NodeError::WriteFile { path, source })?;
        out.persist()?;
        Ok(self.commitment())
    }

    /// Reads the share of `task` on a blocking thread (a model share can
    /// be megabytes to read and decode).
    pub async fn load(state_dir: &Path, task: &str) -> Result<Self, NodeError> {
        let (dir, task) = (state_dir.to_path_buf(), task.to_owned());
        tokio::task::spawn_blocking(move || Self::read(&dir, &task))
            .await
            .map_err(|e| NodeError::Worker(e.to_string()))?
    }

    /// Reads the share of `task`.
    pub fn read(state_dir: &Path, task: &str) -> Result<Self, NodeError> {
        let path = Self::path(state_dir, task);
        let missing = |reason: &str| NodeError::Model(format!("the model share of task '{task}' {reason}"));
        let size = std::fs::metadata(&path).map_err(|_| missing("is not on this node"))?.len();
        if size > MAX_SHARE_FILE_BYTES {
            return Err(missing("is larger than any model share"));
        }
        let bytes = std::fs::read(&path).map_err(|source| NodeError::ReadFile { path: path.clone(), source })?;
        Self::decode(&bytes).map_err(|reason| missing(&format!("is unreadable: {reason}")))
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let rest = bytes.strip_prefix(SHARE_MAGIC).ok_or("not a model-share file")?;
        let (&version, rest) = rest.split_first().ok_or("cut short")?;
        if version != SHARE_FILE_VERSION {
            return Err(format!("file version {version}; this node reads version {SHARE_FILE_VERSION}"));
        }
        let salt: [u8; 32] = rest.get(..32).ok_or("cut short")?.try_into().expect("32 bytes");
        let mut r = &rest[32..];
        let mut take = |n: usize| -> Result<&[u8], String> {
            if n > r.len() {
                return Err("cut short".into());
            }
            let (head, tail) = r.split_at(n);
            r = tail;
            Ok(head)
        };
        let party = match take(1)?[0] {
            1 => Party::LabelHolder,
            2 => Party::FeatureHolder,
            other => return Err(format!("party {other} is unknown")),
        };
        let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        if count > stayput_learning::wire::MAX_FEATURES {
            return Err(format!("{count} columns"));
        }
        let mut columns = Vec::with_capacity(count);
        for _ in 0..count {
            let len = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
            columns.push(String::from_utf8(take(len)?.to_vec()).map_err(|_| "a column name is not UTF-8")?);
        }
        let len = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        let share = ModelShare::from_bytes(take(len)?).map_err(|e| e.to_string())?;
        if !r.is_empty() {
            return Err("bytes after the end".into());
        }
        Ok(Self { party, columns, share, salt })
    }
}

/// Encoded keys with the text of their key columns.
pub type KeyTexts = Vec<(Vec<u8>, Vec<String>)>;

/// The rows of `dataset` by encoded key, with the text of its key columns
/// (for a prediction's result rows), in file order; keys seen twice keep
/// their first row.
pub fn key_texts(dataset: &Dataset) -> Result<KeyTexts, NodeError> {
    let (rows, _) = dataset.keys_with_columns(&dataset.key_columns)?;
    let mut seen = HashSet::new();
    Ok(rows
        .into_iter()
        .filter(|(key, _)| seen.insert(key.clone()))
        .map(|(key, texts)| (key, texts.into_iter().map(Option::unwrap_or_default).collect()))
        .collect())
}

/// Positions of keys in the aligned order.
pub fn positions(aligned: &[Vec<u8>]) -> BTreeMap<&[u8], usize> {
    aligned.iter().enumerate().map(|(i, k)| (k.as_slice(), i)).collect()
}

#[cfg(test)]
mod tests;
