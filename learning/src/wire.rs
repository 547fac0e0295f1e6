//! Wire encodings of the learning protocols' messages and model shares,
//! version 1.
//!
//! Every encoding starts with a version byte ([`WIRE_VERSION`] for
//! messages, [`MODEL_SHARE_VERSION`] for model-share files) and a tag byte
//! naming the message; bytes of another version are refused with a clear
//! error, never guessed at. Integers are little-endian; `f64` as its IEEE
//! bits; a list is a `u32` count and its items.
//!
//! | tag | message | fields |
//! |---|---|---|
//! | `0x11` | boost → feature holder `Setup` | public key (256 B), rows `u32` |
//! | `0x12` | boost → feature holder `Gradients` | tree, ciphertexts |
//! | `0x13` | boost → feature holder `Histogram` | tree, node, rows |
//! | `0x14` | boost → feature holder `Split` | tree, node, candidate, missing-left `u8`, rows |
//! | `0x15` | boost → feature holder `TreeDone` | tree, shape (per node `0` leaf or `1` left right) |
//! | `0x21` | boost → label holder `Histogram` | tree, node, candidates, packed ciphertexts |
//! | `0x22` | boost → label holder `Partition` | tree, node, left rows |
//! | `0x23` | leaf masks (prediction) | rows, trees, per tree its node count, then the bits |
//! | `0x31` | LR → feature holder `Setup` | public key |
//! | `0x32` | LR → feature holder `Batch` | batch, ciphertexts |
//! | `0x33` | LR → feature holder `Masked` | batch, plaintexts, ciphertexts |
//! | `0x41` | LR → label holder `Setup` | public key |
//! | `0x42` | LR → label holder `Batch` | batch, ciphertexts, ciphertexts |
//! | `0x43` | LR → label holder `Unmasked` | batch, plaintexts |
//! | `0x44` | partial scores (prediction) | `f64` per row |
//!
//! Ciphertexts are [`CIPHERTEXT_BYTES`] big-endian residues below `n²` of
//! the key named by the message's place in the protocol
//! ([`PeerKeys`]); plaintexts are 256 big-endian bytes. Decoders check
//! every count against the bytes left before allocating, every ciphertext
//! against its key, every float for finiteness where the protocol has no
//! use for NaN, and a tree shape for being a tree (each node the child of
//! at most one earlier node), so a hostile peer cannot make a party
//! allocate, loop or compute beyond what its own message paid for.
//!
//! Model shares (each party's file on its own node; their salted digests
//! go on the ledger) use the same codec under tags `0x61` (the label
//! holder's trees: base score, shapes, its splits and every leaf weight),
//! `0x62` (the feature holder's splits and the shapes) and `0x63` (a
//! logistic-regression share: scaler and weights).

use std::collections::BTreeMap;

use crate::LearningError;
use crate::boost::{self, FeatureHolderModel, LabelHolderModel, Node, OwnSplit, TreeShape};
use crate::logistic::{self, LrShare};
use crate::paillier::{CIPHERTEXT_BYTES, Ciphertext, PUBLIC_KEY_BYTES, Plaintext, PublicKey, plaintext_from_bytes};

/// Version of the protocol messages' encoding.
pub const WIRE_VERSION: u8 = 1;
/// Version of the model-share file encoding.
pub const MODEL_SHARE_VERSION: u8 = 1;
/// Most nodes a tree may have (depth ≤ 16).
pub const MAX_TREE_NODES: usize = (1 << 17) - 1;
/// Most trees a model may have.
pub const MAX_TREES: usize = 1000;
/// Most features one party's share may have.
pub const MAX_FEATURES: usize = 4096;

const PLAINTEXT_BYTES: usize = PUBLIC_KEY_BYTES;

mod tag {
    pub const BOOST_SETUP: u8 = 0x11;
    pub const BOOST_GRADIENTS: u8 = 0x12;
    pub const BOOST_HISTOGRAM_REQUEST: u8 = 0x13;
    pub const BOOST_SPLIT: u8 = 0x14;
    pub const BOOST_TREE_DONE: u8 = 0x15;
    pub const BOOST_HISTOGRAM: u8 = 0x21;
    pub const BOOST_PARTITION: u8 = 0x22;
    pub const LEAF_MASKS: u8 = 0x23;
    pub const LR_SETUP_A: u8 = 0x31;
    pub const LR_BATCH_A: u8 = 0x32;
    pub const LR_MASKED: u8 = 0x33;
    pub const LR_SETUP_B: u8 = 0x41;
    pub const LR_BATCH_B: u8 = 0x42;
    pub const LR_UNMASKED: u8 = 0x43;
    pub const PARTIAL_SCORES: u8 = 0x44;
    pub const SHARE_BOOST_LABEL: u8 = 0x61;
    pub const SHARE_BOOST_FEATURE: u8 = 0x62;
    pub const SHARE_LR: u8 = 0x63;
}

/// The public keys a decoder checks ciphertexts against: each is known
/// once its party's setup message has been read.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerKeys<'a> {
    /// The label holder's key (boost, and LR's party A).
    pub label_holder: Option<&'a PublicKey>,
    /// The feature holder's key (LR's party B).
    pub feature_holder: Option<&'a PublicKey>,
}

fn malformed(what: &'static str, reason: impl Into<String>) -> LearningError {
    LearningError::Malformed { what, reason: reason.into() }
}

/// A count or index: every one is bounded far below 2³² by the parameters
/// (rows are checked at the start of a protocol, features at decoding).
fn small(n: usize) -> u32 {
    u32::try_from(n).expect("bounded far below 2^32")
}

/// An encoder: version, tag, then fields.
struct Writer(Vec<u8>);

impl Writer {
    fn new(version: u8, tag: u8, capacity: usize) -> Self {
        let mut bytes = Vec::with_capacity(capacity + 2);
        bytes.extend([version, tag]);
        Self(bytes)
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn f64(&mut self, v: f64) -> &mut Self {
        self.0.extend(v.to_bits().to_le_bytes());
        self
    }
    fn count(&mut self, n: usize) -> &mut Self {
        self.u32(small(n))
    }
    fn u32s(&mut self, values: &[u32]) -> &mut Self {
        self.count(values.len());
        values.iter().for_each(|v| {
            self.u32(*v);
        });
        self
    }
    fn f64s(&mut self, values: &[f64]) -> &mut Self {
        self.count(values.len());
        values.iter().for_each(|v| {
            self.f64(*v);
        });
        self
    }
    fn ciphertexts(&mut self, values: &[Ciphertext]) -> &mut Self {
        self.count(values.len());
        values.iter().for_each(|c| self.0.extend(c.to_bytes()));
        self
    }
    fn plaintexts(&mut self, values: &[Plaintext]) -> &mut Self {
        self.count(values.len());
        values.iter().for_each(|p| self.0.extend(p.to_be_bytes().as_ref()));
        self
    }
    fn key(&mut self, key: &PublicKey) -> &mut Self {
        self.0.extend(key.to_bytes());
        self
    }
    fn shape(&mut self, shape: &TreeShape) -> &mut Self {
        self.count(shape.children.len());
        for child in &shape.children {
            match child {
                None => self.u8(0),
                Some((l, r)) => self.u8(1).u32(*l).u32(*r),
            };
        }
        self
    }
    fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// A decoder over one message; every read is bounded by the bytes left.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Checks the version byte and returns the reader and the tag.
    fn open(bytes: &'a [u8], version: u8, what: &'static str) -> Result<(Self, u8), LearningError> {
        let [v, tag, rest @ ..] = bytes else {
            return Err(malformed(what, format!("{} bytes is shorter than the version and tag", bytes.len())));
        };
        if *v != version {
            return Err(LearningError::UnsupportedVersion { what, got: *v, supported: version });
        }
        Ok((Self { bytes: rest, what }, *tag))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], LearningError> {
        if n > self.bytes.len() {
            return Err(malformed(self.what, format!("cut short: {n} more bytes needed, {} left", self.bytes.len())));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, LearningError> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> Result<bool, LearningError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(malformed(self.what, format!("{other} is not a flag (0 or 1)"))),
        }
    }
    fn u32(&mut self) -> Result<u32, LearningError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn f64(&mut self) -> Result<f64, LearningError> {
        let v = f64::from_bits(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")));
        if !v.is_finite() {
            return Err(malformed(self.what, "a number is not finite"));
        }
        Ok(v)
    }
    /// A count whose items take at least `item_bytes` each, checked
    /// against the bytes left (and `max`) before anything is allocated.
    fn count(&mut self, item_bytes: usize, max: usize) -> Result<usize, LearningError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(malformed(self.what, format!("{n} items; at most {max} are accepted")));
        }
        if n.saturating_mul(item_bytes) > self.bytes.len() {
            return Err(malformed(self.what, format!("{n} items announced but only {} bytes left", self.bytes.len())));
        }
        Ok(n)
    }
    fn u32s(&mut self) -> Result<Vec<u32>, LearningError> {
        let n = self.count(4, usize::MAX)?;
        (0..n).map(|_| self.u32()).collect()
    }
    fn f64s(&mut self, max: usize) -> Result<Vec<f64>, LearningError> {
        let n = self.count(8, max)?;
        (0..n).map(|_| self.f64()).collect()
    }
    fn ciphertexts(&mut self, key: Option<&PublicKey>) -> Result<Vec<Ciphertext>, LearningError> {
        let key = key.ok_or_else(|| LearningError::Protocol(format!("a {} before the key it is under", self.what)))?;
        let n = self.count(CIPHERTEXT_BYTES, usize::MAX)?;
        (0..n).map(|_| key.ciphertext(self.take(CIPHERTEXT_BYTES)?)).collect()
    }
    fn plaintexts(&mut self) -> Result<Vec<Plaintext>, LearningError> {
        let n = self.count(PLAINTEXT_BYTES, usize::MAX)?;
        (0..n).map(|_| plaintext_from_bytes(self.take(PLAINTEXT_BYTES)?)).collect()
    }
    fn key(&mut self) -> Result<Box<PublicKey>, LearningError> {
        Ok(Box::new(PublicKey::from_bytes(self.take(PUBLIC_KEY_BYTES)?)?))
    }
    fn shape(&mut self) -> Result<TreeShape, LearningError> {
        let n = self.count(1, MAX_TREE_NODES)?;
        let children = (0..n)
            .map(|_| Ok(if self.bool()? { Some((self.u32()?, self.u32()?)) } else { None }))
            .collect::<Result<Vec<_>, LearningError>>()?;
        let shape = TreeShape { children };
        check_shape(&shape).map_err(|reason| malformed(self.what, reason))?;
        Ok(shape)
    }
    fn finish<T>(self, value: T) -> Result<T, LearningError> {
        if self.bytes.is_empty() {
            Ok(value)
        } else {
            Err(malformed(self.what, format!("{} bytes after the end", self.bytes.len())))
        }
    }
}

/// A tree shape must be a tree rooted at node 0: children come after their
/// parent, each node has at most one parent, and every node is reached —
/// so walking it terminates and every leaf has one path.
fn check_shape(shape: &TreeShape) -> Result<(), String> {
    let n = shape.children.len();
    if n == 0 {
        return Err("a tree has at least its root".into());
    }
    let mut parented = vec![false; n];
    for (i, child) in shape.children.iter().enumerate() {
        if let Some((l, r)) = child {
            for c in [*l as usize, *r as usize] {
                if c <= i || c >= n || std::mem::replace(&mut parented[c], true) {
                    return Err(format!("node {i} names child {c}, which is not a fresh later node"));
                }
            }
        }
    }
    if parented.iter().skip(1).any(|p| !p) {
        return Err("a node other than the root has no parent".into());
    }
    Ok(())
}

fn unknown(what: &'static str, tag: u8) -> LearningError {
    malformed(what, format!("tag {tag:#04x} is not a message of this direction"))
}

/// Encodes a boost message to the feature holder.
pub fn encode_boost_to_feature_holder(message: &boost::ToFeatureHolder) -> Vec<u8> {
    use boost::ToFeatureHolder as M;
    match message {
        M::Setup { public_key, rows } => {
            let mut w = Writer::new(WIRE_VERSION, tag::BOOST_SETUP, PUBLIC_KEY_BYTES + 4);
            w.key(public_key).u32(*rows);
            w.into_bytes()
        }
        M::Gradients { tree, ciphertexts } => {
            let mut w = Writer::new(WIRE_VERSION, tag::BOOST_GRADIENTS, 8 + ciphertexts.len() * CIPHERTEXT_BYTES);
            w.u32(*tree).ciphertexts(ciphertexts);
            w.into_bytes()
        }
        M::Histogram { tree, node, rows } => {
            let mut w = Writer::new(WIRE_VERSION, tag::BOOST_HISTOGRAM_REQUEST, 12 + rows.len() * 4);
            w.u32(*tree).u32(*node).u32s(rows);
            w.into_bytes()
        }
        M::Split { tree, node, candidate, missing_left, rows } => {
            let mut w = Writer::new(WIRE_VERSION, tag::BOOST_SPLIT, 17 + rows.len() * 4);
            w.u32(*tree).u32(*node).u32(*candidate).u8(u8::from(*missing_left)).u32s(rows);
            w.into_bytes()
        }
        M::TreeDone { tree, shape } => {
            let mut w = Writer::new(WIRE_VERSION, tag::BOOST_TREE_DONE, 8 + shape.children.len() * 9);
            w.u32(*tree).shape(shape);
            w.into_bytes()
        }
    }
}

/// Decodes a boost message to the feature holder; ciphertexts are checked
/// against the label holder's key (`None` before its setup).
pub fn decode_boost_to_feature_holder(
    bytes: &[u8],
    label_holder: Option<&PublicKey>,
) -> Result<boost::ToFeatureHolder, LearningError> {
    use boost::ToFeatureHolder as M;
    const WHAT: &str = "boost message to the feature holder";
    let (mut r, t) = Reader::open(bytes, WIRE_VERSION, WHAT)?;
    let message = match t {
        tag::BOOST_SETUP => M::Setup { public_key: r.key()?, rows: r.u32()? },
        tag::BOOST_GRADIENTS => M::Gradients { tree: r.u32()?, ciphertexts: r.ciphertexts(label_holder)? },
        tag::BOOST_HISTOGRAM_REQUEST => M::Histogram { tree: r.u32()?, node: r.u32()?, rows: r.u32s()? },
        tag::BOOST_SPLIT => {
            M::Split { tree: r.u32()?, node: r.u32()?, candidate: r.u32()?, missing_left: r.bool()?, rows: r.u32s()? }
        }
        tag::BOOST_TREE_DONE => M::TreeDone { tree: r.u32()?, shape: r.shape()? },
        other => return Err(unknown(WHAT, other)),
    };
    r.finish(message)
}

/// Encodes a boost message to the label holder.
pub fn encode_boost_to_label_holder(message: &boost::ToLabelHolder) -> Vec<u8> {
    use boost::ToLabelHolder as M;
    match message {
        M::Histogram { tree, node, candidates, packed } => {
            let capacity = 16 + candidates.len() * 4 + packed.len() * CIPHERTEXT_BYTES;
            let mut w = Writer::new(WIRE_VERSION, tag::BOOST_HISTOGRAM, capacity);
            w.u32(*tree).u32(*node).u32s(candidates).ciphertexts(packed);
            w.into_bytes()
        }
        M::Partition { tree, node, left } => {
            let mut w = Writer::new(WIRE_VERSION, tag::BOOST_PARTITION, 12 + left.len() * 4);
            w.u32(*tree).u32(*node).u32s(left);
            w.into_bytes()
        }
    }
}

/// Decodes a boost message to the label holder, ciphertexts under its own
/// key.
pub fn decode_boost_to_label_holder(bytes: &[u8], own: &PublicKey) -> Result<boost::ToLabelHolder, LearningError> {
    use boost::ToLabelHolder as M;
    const WHAT: &str = "boost message to the label holder";
    let (mut r, t) = Reader::open(bytes, WIRE_VERSION, WHAT)?;
    let message = match t {
        tag::BOOST_HISTOGRAM => {
            M::Histogram { tree: r.u32()?, node: r.u32()?, candidates: r.u32s()?, packed: r.ciphertexts(Some(own))? }
        }
        tag::BOOST_PARTITION => M::Partition { tree: r.u32()?, node: r.u32()?, left: r.u32s()? },
        other => return Err(unknown(WHAT, other)),
    };
    r.finish(message)
}

/// Leaf masks `masks[row][tree][leaf]` (the feature holder's prediction
/// message), bit-packed per row.
pub fn encode_leaf_masks(masks: &[Vec<Vec<bool>>]) -> Vec<u8> {
    let sizes: Vec<u32> = masks.first().map_or_else(Vec::new, |row| row.iter().map(|t| small(t.len())).collect());
    let bits: usize = sizes.iter().map(|s| *s as usize).sum();
    let mut w = Writer::new(WIRE_VERSION, tag::LEAF_MASKS, 8 + sizes.len() * 4 + masks.len() * bits.div_ceil(8));
    w.count(masks.len()).u32s(&sizes);
    for row in masks {
        let flat: Vec<bool> = row.iter().flatten().copied().collect();
        for chunk in flat.chunks(8) {
            w.u8(chunk.iter().enumerate().fold(0u8, |b, (i, on)| b | (u8::from(*on) << i)));
        }
    }
    w.into_bytes()
}

/// Decodes leaf masks, which must match the model's tree sizes
/// (`tree_sizes`, the label holder's own shapes).
pub fn decode_leaf_masks(bytes: &[u8], tree_sizes: &[usize]) -> Result<Vec<Vec<Vec<bool>>>, LearningError> {
    const WHAT: &str = "leaf masks";
    let (mut r, t) = Reader::open(bytes, WIRE_VERSION, WHAT)?;
    if t != tag::LEAF_MASKS {
        return Err(unknown(WHAT, t));
    }
    let bits: usize = tree_sizes.iter().sum();
    let row_bytes = bits.div_ceil(8);
    let rows = r.count(row_bytes, usize::MAX)?;
    let sizes = r.u32s()?;
    if !sizes.iter().map(|s| *s as usize).eq(tree_sizes.iter().copied()) {
        return Err(LearningError::Protocol("leaf masks for trees other than the model's".into()));
    }
    let masks = (0..rows)
        .map(|_| {
            let packed = r.take(row_bytes)?;
            let mut flat = (0..bits).map(|i| packed[i / 8] >> (i % 8) & 1 == 1);
            Ok(tree_sizes.iter().map(|n| flat.by_ref().take(*n).collect()).collect())
        })
        .collect::<Result<Vec<_>, LearningError>>()?;
    r.finish(masks)
}

/// Encodes an LR message to the feature holder (party B).
pub fn encode_lr_to_feature_holder(message: &logistic::ToFeatureHolder) -> Vec<u8> {
    use logistic::ToFeatureHolder as M;
    match message {
        M::Setup(key) => {
            let mut w = Writer::new(WIRE_VERSION, tag::LR_SETUP_A, PUBLIC_KEY_BYTES);
            w.key(key);
            w.into_bytes()
        }
        M::Batch { batch, partial } => {
            let mut w = Writer::new(WIRE_VERSION, tag::LR_BATCH_A, 8 + partial.len() * CIPHERTEXT_BYTES);
            w.u32(*batch).ciphertexts(partial);
            w.into_bytes()
        }
        M::Masked { batch, yours, mine } => {
            let capacity = 12 + yours.len() * PLAINTEXT_BYTES + mine.len() * CIPHERTEXT_BYTES;
            let mut w = Writer::new(WIRE_VERSION, tag::LR_MASKED, capacity);
            w.u32(*batch).plaintexts(yours).ciphertexts(mine);
            w.into_bytes()
        }
    }
}

/// Decodes an LR message to the feature holder: `Batch` is under the label
/// holder's key, `Masked`'s ciphertexts under the feature holder's.
pub fn decode_lr_to_feature_holder(
    bytes: &[u8],
    keys: PeerKeys<'_>,
) -> Result<logistic::ToFeatureHolder, LearningError> {
    use logistic::ToFeatureHolder as M;
    const WHAT: &str = "LR message to the feature holder";
    let (mut r, t) = Reader::open(bytes, WIRE_VERSION, WHAT)?;
    let message = match t {
        tag::LR_SETUP_A => M::Setup(r.key()?),
        tag::LR_BATCH_A => M::Batch { batch: r.u32()?, partial: r.ciphertexts(keys.label_holder)? },
        tag::LR_MASKED => {
            M::Masked { batch: r.u32()?, yours: r.plaintexts()?, mine: r.ciphertexts(keys.feature_holder)? }
        }
        other => return Err(unknown(WHAT, other)),
    };
    r.finish(message)
}

/// Encodes an LR message to the label holder (party A).
pub fn encode_lr_to_label_holder(message: &logistic::ToLabelHolder) -> Vec<u8> {
    use logistic::ToLabelHolder as M;
    match message {
        M::Setup(key) => {
            let mut w = Writer::new(WIRE_VERSION, tag::LR_SETUP_B, PUBLIC_KEY_BYTES);
            w.key(key);
            w.into_bytes()
        }
        M::Batch { batch, partial, masked } => {
            let capacity = 12 + (partial.len() + masked.len()) * CIPHERTEXT_BYTES;
            let mut w = Writer::new(WIRE_VERSION, tag::LR_BATCH_B, capacity);
            w.u32(*batch).ciphertexts(partial).ciphertexts(masked);
            w.into_bytes()
        }
        M::Unmasked { batch, values } => {
            let mut w = Writer::new(WIRE_VERSION, tag::LR_UNMASKED, 8 + values.len() * PLAINTEXT_BYTES);
            w.u32(*batch).plaintexts(values);
            w.into_bytes()
        }
    }
}

/// Decodes an LR message to the label holder: `Batch`'s partial scores are
/// under the feature holder's key, its masked gradient under the label
/// holder's.
pub fn decode_lr_to_label_holder(bytes: &[u8], keys: PeerKeys<'_>) -> Result<logistic::ToLabelHolder, LearningError> {
    use logistic::ToLabelHolder as M;
    const WHAT: &str = "LR message to the label holder";
    let (mut r, t) = Reader::open(bytes, WIRE_VERSION, WHAT)?;
    let message = match t {
        tag::LR_SETUP_B => M::Setup(r.key()?),
        tag::LR_BATCH_B => M::Batch {
            batch: r.u32()?,
            partial: r.ciphertexts(keys.feature_holder)?,
            masked: r.ciphertexts(keys.label_holder)?,
        },
        tag::LR_UNMASKED => M::Unmasked { batch: r.u32()?, values: r.plaintexts()? },
        other => return Err(unknown(WHAT, other)),
    };
    r.finish(message)
}

/// The feature holder's partial scores for prediction, one per row.
pub fn encode_partial_scores(scores: &[f64]) -> Vec<u8> {
    let mut w = Writer::new(WIRE_VERSION, tag::PARTIAL_SCORES, 4 + scores.len() * 8);
    w.f64s(scores);
    w.into_bytes()
}

/// Decodes partial scores; every one must be finite.
pub fn decode_partial_scores(bytes: &[u8]) -> Result<Vec<f64>, LearningError> {
    const WHAT: &str = "partial scores";
    let (mut r, t) = Reader::open(bytes, WIRE_VERSION, WHAT)?;
    if t != tag::PARTIAL_SCORES {
        return Err(unknown(WHAT, t));
    }
    let scores = r.f64s(usize::MAX)?;
    r.finish(scores)
}

/// A party's model share, as its node keeps it in a file.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelShare {
    /// The label holder's trees.
    BoostLabelHolder(LabelHolderModel),
    /// The feature holder's splits.
    BoostFeatureHolder(FeatureHolderModel),
    /// A logistic-regression party's scaler and weights.
    Logistic(LrShare),
}

impl ModelShare {
    /// The versioned encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            ModelShare::BoostLabelHolder(m) => {
                let mut w = Writer::new(MODEL_SHARE_VERSION, tag::SHARE_BOOST_LABEL, 1024);
                w.f64(m.base_score).count(m.trees.len());
                for (shape, nodes) in &m.trees {
                    w.shape(shape);
                    for node in nodes {
                        match node {
                            Node::Leaf(weight) => w.u8(0).f64(*weight),
                            Node::Own(split) => {
                                w.u8(1).u32(small(split.feature)).f64(split.threshold).u8(split.missing_left.into())
                            }
                            Node::Peer => w.u8(2),
                            Node::Pending => unreachable!("a finished model has no pending node"),
                        };
                    }
                }
                w.into_bytes()
            }
            ModelShare::BoostFeatureHolder(m) => {
                let mut w = Writer::new(MODEL_SHARE_VERSION, tag::SHARE_BOOST_FEATURE, 1024);
                w.count(m.shapes.len());
                m.shapes.iter().for_each(|s| {
                    w.shape(s);
                });
                w.count(m.splits.len());
                for ((tree, node), split) in &m.splits {
                    w.u32(*tree)
                        .u32(*node)
                        .u32(small(split.feature))
                        .f64(split.threshold)
                        .u8(split.missing_left.into());
                }
                w.into_bytes()
            }
            ModelShare::Logistic(s) => {
                let mut w = Writer::new(MODEL_SHARE_VERSION, tag::SHARE_LR, 32 + s.weights.len() * 24);
                w.f64(s.intercept).f64s(&s.means).f64s(&s.stds).f64s(&s.weights);
                w.into_bytes()
            }
        }
    }

    /// Reads a model share, checking every shape, feature index and number.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LearningError> {
        const WHAT: &str = "model share";
        let (mut r, t) = Reader::open(bytes, MODEL_SHARE_VERSION, WHAT)?;
        let split = |r: &mut Reader<'_>| -> Result<OwnSplit, LearningError> {
            let feature = r.u32()? as usize;
            if feature >= MAX_FEATURES {
                return Err(malformed(WHAT, format!("feature {feature} is beyond {MAX_FEATURES}")));
            }
            Ok(OwnSplit { feature, threshold: r.f64()?, missing_left: r.bool()? })
        };
        let share = match t {
            tag::SHARE_BOOST_LABEL => {
                let base_score = r.f64()?;
                let n = r.count(6, MAX_TREES)?;
                let mut trees = Vec::with_capacity(n);
                for _ in 0..n {
                    let shape = r.shape()?;
                    let nodes = (0..shape.children.len())
                        .map(|i| {
                            let node = match r.u8()? {
                                0 => Node::Leaf(r.f64()?),
                                1 => Node::Own(split(&mut r)?),
                                2 => Node::Peer,
                                other => return Err(malformed(WHAT, format!("node kind {other} is unknown"))),
                            };
                            if matches!(node, Node::Leaf(_)) != shape.children[i].is_none() {
                                return Err(malformed(WHAT, format!("node {i} disagrees with its tree's shape")));
                            }
                            Ok(node)
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    trees.push((shape, nodes));
                }
                ModelShare::BoostLabelHolder(LabelHolderModel { base_score, trees })
            }
            tag::SHARE_BOOST_FEATURE => {
                let n = r.count(5, MAX_TREES)?;
                let shapes = (0..n).map(|_| r.shape()).collect::<Result<Vec<_>, _>>()?;
                let m = r.count(21, usize::MAX)?;
                let mut splits = BTreeMap::new();
                for _ in 0..m {
                    let (tree, node) = (r.u32()?, r.u32()?);
                    let inner = shapes
                        .get(tree as usize)
                        .and_then(|s| s.children.get(node as usize))
                        .is_some_and(Option::is_some);
                    if !inner || splits.insert((tree, node), split(&mut r)?).is_some() {
                        return Err(malformed(WHAT, format!("split of tree {tree} node {node} is not an inner node")));
                    }
                }
                ModelShare::BoostFeatureHolder(FeatureHolderModel { splits, shapes })
            }
            tag::SHARE_LR => {
                let intercept = r.f64()?;
                let (means, stds, weights) = (r.f64s(MAX_FEATURES)?, r.f64s(MAX_FEATURES)?, r.f64s(MAX_FEATURES)?);
                if means.len() != weights.len() || stds.len() != weights.len() || stds.iter().any(|s| *s <= 0.0) {
                    return Err(malformed(WHAT, "scaler and weights differ in length, or a spread is not positive"));
                }
                ModelShare::Logistic(LrShare { means, stds, weights, intercept })
            }
            other => return Err(malformed(WHAT, format!("tag {other:#04x} is not a model share"))),
        };
        r.finish(share)
    }
}

#[cfg(test)]
mod tests;
