//! Vertical SecureBoost (Cheng et al., "SecureBoost: A Lossless Federated
//! Learning Framework", 2019/2021), sans-IO, between a **label holder**
//! (labels and some features; holds the Paillier key) and a **feature
//! holder** (other features of the same aligned rows).
//!
//! One tree, as the messages go:
//!
//! 1. The label holder computes every row's logistic-loss gradient and
//!    hessian, packs them with a count ([`crate::gradients`]) and sends one
//!    ciphertext per row ([`ToFeatureHolder::Gradients`]).
//! 2. For a node, it names the node's rows ([`ToFeatureHolder::Histogram`]);
//!    the feature holder sums the rows' ciphertexts into each of its
//!    features' bins, turns them into the left sums of every split
//!    "≤ threshold k" (plus the feature's missing rows) and answers them
//!    under opaque candidate ids in an order shuffled once per training,
//!    packed side by side — each sum shifted by homomorphic doubling — as
//!    many to a ciphertext as the plaintext holds (12 for 8,000 rows), so
//!    the label holder decrypts a twelfth as often
//!    ([`ToLabelHolder::Histogram`]).
//! 3. The label holder decrypts, evaluates every candidate — its own
//!    features' in plaintext, the feature holder's from the sums — with
//!    XGBoost's gain and default direction ([`crate::split`]), and either
//!    makes a leaf (it alone keeps every leaf weight), splits on its own
//!    feature, or asks the feature holder to split on candidate `id`
//!    ([`ToFeatureHolder::Split`]); the feature holder keeps that split's
//!    feature and threshold and answers which rows go left
//!    ([`ToLabelHolder::Partition`]).
//! 4. Of two children only the smaller one's histogram is asked for; the
//!    sibling's is its parent's minus it.
//!
//! Prediction ([`LabelHolderModel::predict`]): each party marks, per tree,
//! the leaves a row can reach given only its own splits
//! ([`FeatureHolderModel::leaf_masks`]); the masks' intersection is the one
//! leaf, whose weight only the label holder has.
//!
//! ## What each party learns (semi-honest)
//!
//! * The feature holder learns which rows are in every node (the rows of
//!   each histogram request and split), hence the tree's partition of the
//!   aligned rows, and which of its own splits were chosen; it sees
//!   gradients only as Paillier ciphertexts.
//! * The label holder learns, for every node, the decrypted left sums
//!   `(Σg, Σh, rows)` of each of the feature holder's candidate splits in
//!   shuffled order, with the feature's missing-row sums (so it can group
//!   candidates by feature, and order them within a feature by their row
//!   counts), and which rows go left at the feature holder's splits; never
//!   a feature value or threshold. At prediction it learns which of a
//!   tree's leaves each applicant's bureau features allow.
//!
//! ## Known attacks, and what Stayput does
//!
//! * *Gradient inversion of labels* by the feature holder: impossible from
//!   ciphertexts; from the partitions and their sizes, labels leak only
//!   through what the model itself reveals — the leaf weights stay with
//!   the label holder.
//! * *Instance-space leakage* (the feature holder learns the partition of
//!   rows per node, from which labels correlate with leaves): inherent to
//!   SecureBoost; limited by `min_node_rows` (no node smaller than that is
//!   revealed) and by the task's minimum intersection size.
//! * *Feature-order leakage* (the label holder orders a feature's bins by
//!   cumulative counts and so learns each row's quantile bin of a chosen
//!   split): inherent to revealing left sums; bounded by `max_bins`.
//! * *Differencing by a hostile label holder*: asking for the histogram of
//!   a row set and of the same set plus one row (or naming a row twice)
//!   would give that row's bins. Within a tree the feature holder accepts
//!   only requests that follow a tree ([`FeatureHolder`] keeps every row's
//!   node): rows strictly increasing (no row twice), a request naming a
//!   whole node or a part of one that leaves at least `min_node_rows` rows
//!   on each side, splits only of whole nodes. Across trees the partitions
//!   are the label holder's to choose, so two trees whose nodes differ by
//!   one row still difference; that, like crafted "gradients" (e.g. a
//!   one-hot per row), is not detected: the protocol is semi-honest, and
//!   the grant (rows, uses) and the ledger trail are what bind a label
//!   holder to its behaviour.

use std::collections::{BTreeMap, HashMap};

use rand10::CryptoRng;
use rand10::seq::SliceRandom;

use crate::LearningError;
use crate::binning::Bins;
use crate::gradients::GradientCodec;
use crate::paillier::{Ciphertext, Prepared, PublicKey, SecretKey};
use crate::split::{BinSum, SplitGain, TreeParams, cumulative};

/// Training parameters both parties agree on (from the task).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoostParams {
    /// Trees to grow.
    pub trees: u32,
    /// Most bins per feature.
    pub max_bins: usize,
    /// Each tree's parameters.
    pub tree: TreeParams,
}

impl Default for BoostParams {
    fn default() -> Self {
        Self { trees: 10, max_bins: 32, tree: TreeParams::default() }
    }
}

impl BoostParams {
    /// Refuses parameters no sensible training uses.
    pub fn check(&self) -> Result<(), LearningError> {
        if !(1..=1000).contains(&self.trees) {
            return Err(LearningError::BadParameter("trees must be 1 to 1000".into()));
        }
        if !(2..=crate::binning::MAX_BINS).contains(&self.max_bins) {
            return Err(LearningError::BadParameter("max_bins must be 2 to 256".into()));
        }
        self.tree.check()
    }
}

/// What the label holder sends.
#[derive(Debug, Clone)]
pub enum ToFeatureHolder {
    /// The public key and the number of aligned rows (first message).
    Setup {
        /// The label holder's Paillier public key.
        public_key: Box<PublicKey>,
        /// Aligned rows.
        rows: u32,
    },
    /// One ciphertext of packed (gradient, hessian, 1) per row.
    Gradients {
        /// The tree these are for.
        tree: u32,
        /// Per row, in the aligned order.
        ciphertexts: Vec<Ciphertext>,
    },
    /// Sum the gradients of `rows` per candidate split.
    Histogram {
        /// The tree.
        tree: u32,
        /// The node.
        node: u32,
        /// Its rows.
        rows: Vec<u32>,
    },
    /// Split node `node` on candidate `candidate`; answer the left rows.
    Split {
        /// The tree.
        tree: u32,
        /// The node.
        node: u32,
        /// The feature holder's candidate id.
        candidate: u32,
        /// Whether rows missing the feature go left.
        missing_left: bool,
        /// The node's rows.
        rows: Vec<u32>,
    },
    /// A tree is complete: its shape, so the feature holder can mask
    /// leaves at prediction.
    TreeDone {
        /// The tree.
        tree: u32,
        /// Its shape.
        shape: TreeShape,
    },
}

/// What the feature holder sends.
#[derive(Debug, Clone)]
pub enum ToLabelHolder {
    /// Per candidate (shuffled): the left sums of its present rows and
    /// the sums of the rows missing its feature, in that order, packed
    /// side by side as many to a ciphertext as the plaintext holds
    /// ([`GradientCodec::sums_per_plaintext`]).
    Histogram {
        /// The tree.
        tree: u32,
        /// The node.
        node: u32,
        /// Candidate ids, in the order of their sums.
        candidates: Vec<u32>,
        /// `E(left₀ ‖ missing₀ ‖ left₁ ‖ …)`, packed.
        packed: Vec<Ciphertext>,
    },
    /// The rows of a split node that go left.
    Partition {
        /// The tree.
        tree: u32,
        /// The node.
        node: u32,
        /// The left rows.
        left: Vec<u32>,
    },
}

/// A tree's shape without its splits or weights: node `i`'s children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TreeShape {
    /// `Some((left, right))` for a split node, `None` for a leaf.
    pub children: Vec<Option<(u32, u32)>>,
}

impl TreeShape {
    /// For each leaf (in node order), whether a row can reach it when
    /// `decide(node)` says which way a node goes (`None`: both).
    fn reachable(&self, decide: impl Fn(u32) -> Option<bool>) -> Vec<bool> {
        let mut reach = vec![false; self.children.len()];
        let mut stack = vec![0u32];
        while let Some(node) = stack.pop() {
            match self.children.get(node as usize).copied().flatten() {
                None => reach[node as usize] = true,
                Some((left, right)) => match decide(node) {
                    Some(true) => stack.push(left),
                    Some(false) => stack.push(right),
                    None => stack.extend([left, right]),
                },
            }
        }
        reach
    }
}

/// A split of the label holder's own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct OwnSplit {
    pub(crate) feature: usize,
    pub(crate) threshold: f64,
    pub(crate) missing_left: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Leaf(f64),
    Own(OwnSplit),
    Peer,
    Pending,
}

/// The label holder's share of the model: the trees' shapes, its own
/// splits and every leaf weight.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelHolderModel {
    pub(crate) base_score: f64,
    pub(crate) trees: Vec<(TreeShape, Vec<Node>)>,
}

/// The feature holder's share: its splits' features and thresholds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FeatureHolderModel {
    pub(crate) splits: BTreeMap<(u32, u32), OwnSplit>,
    pub(crate) shapes: Vec<TreeShape>,
}

fn goes_left(split: &OwnSplit, value: f64) -> bool {
    if value.is_nan() { split.missing_left } else { value <= split.threshold }
}

impl FeatureHolderModel {
    /// Trees whose shape this share holds.
    pub fn trees(&self) -> usize {
        self.shapes.len()
    }

    /// Per row, per tree: the leaves the row can reach given this party's
    /// splits. `features[f][row]`.
    pub fn leaf_masks(&self, features: &[Vec<f64>]) -> Result<Vec<Vec<Vec<bool>>>, LearningError> {
        let rows = check_columns(features)?;
        Ok((0..rows)
            .map(|row| {
                self.shapes
                    .iter()
                    .enumerate()
                    .map(|(tree, shape)| {
                        shape.reachable(|node| {
                            self.splits
                                .get(&(index(tree), node))
                                .map(|s| goes_left(s, features.get(s.feature).map_or(f64::NAN, |c| c[row])))
                        })
                    })
                    .collect()
            })
            .collect())
    }
}

impl LabelHolderModel {
    /// Each tree's node count, what the feature holder's leaf masks must
    /// match.
    pub fn tree_sizes(&self) -> Vec<usize> {
        self.trees.iter().map(|(shape, _)| shape.children.len()).collect()
    }

    /// Probabilities for rows whose own features are `features[f][row]`
    /// and whose feature holder's leaf masks are `peer_masks[row][tree]`.
    pub fn predict(&self, features: &[Vec<f64>], peer_masks: &[Vec<Vec<bool>>]) -> Result<Vec<f64>, LearningError> {
        let rows = check_columns(features)?;
        if peer_masks.len() != rows {
            return Err(LearningError::Protocol(format!("{} rows of leaf masks for {rows} rows", peer_masks.len())));
        }
        (0..rows)
            .map(|row| {
                let mut margin = self.base_score;
                for (tree, (shape, nodes)) in self.trees.iter().enumerate() {
                    let mine = shape.reachable(|node| match &nodes[node as usize] {
                        Node::Own(s) => Some(goes_left(s, features.get(s.feature).map_or(f64::NAN, |c| c[row]))),
                        _ => None,
                    });
                    let theirs = peer_masks[row]
                        .get(tree)
                        .filter(|m| m.len() == mine.len())
                        .ok_or_else(|| LearningError::Protocol(format!("no leaf mask for tree {tree}")))?;
                    let mut leaves = (0..mine.len()).filter(|&i| mine[i] && theirs[i]);
                    let (Some(leaf), None) = (leaves.next(), leaves.next()) else {
                        return Err(LearningError::Protocol(format!(
                            "the leaf masks of tree {tree} do not select exactly one leaf"
                        )));
                    };
                    let Node::Leaf(weight) = nodes[leaf] else {
                        return Err(LearningError::Protocol("a mask selects a split node".into()));
                    };
                    margin += weight;
                }
                Ok(sigmoid(margin))
            })
            .collect()
    }
}

/// A row, node, tree or candidate number: all are bounded far below 2³²
/// (rows are checked at the start; trees ≤ 1000, depth ≤ 16, bins ≤ 256).
fn index(i: usize) -> u32 {
    u32::try_from(i).expect("indices are bounded by the parameters")
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn check_columns(features: &[Vec<f64>]) -> Result<usize, LearningError> {
    let rows = features.first().map_or(0, Vec::len);
    if features.iter().any(|c| c.len() != rows) {
        return Err(LearningError::BadParameter("feature columns differ in length".into()));
    }
    Ok(rows)
}

/// A party's binned features: `bins[f][row]`, `None` for missing.
struct Binned {
    bins: Vec<Bins>,
    index: Vec<Vec<Option<u16>>>,
}

impl Binned {
    fn new(features: &[Vec<f64>], max_bins: usize) -> Result<Self, LearningError> {
        check_columns(features)?;
        let bins = features.iter().map(|c| Bins::fit(c, max_bins)).collect::<Result<Vec<_>, _>>()?;
        let index = features
            .iter()
            .zip(&bins)
            .map(|(c, b)| c.iter().map(|v| b.bin(*v).map(|k| u16::try_from(k).expect("at most 256 bins"))).collect())
            .collect();
        Ok(Self { bins, index })
    }
}

struct NodeInfo {
    rows: Vec<u32>,
    depth: u32,
    /// The feature holder's decoded candidate sums, by id.
    peer: Option<HashMap<u32, (BinSum, BinSum)>>,
    parent: Option<u32>,
}

/// The label holder's side of training.
pub struct LabelHolder {
    key: SecretKey,
    codec: GradientCodec,
    params: BoostParams,
    labels: Vec<f64>,
    own: Binned,
    margins: Vec<f64>,
    grad: Vec<(f64, f64)>,
    model: LabelHolderModel,
    tree: u32,
    nodes: Vec<NodeInfo>,
    shape: TreeShape,
    tree_nodes: Vec<Node>,
    waiting: usize,
}

impl std::fmt::Debug for LabelHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelHolder").field("tree", &self.tree).finish_non_exhaustive()
    }
}

impl LabelHolder {
    /// Starts training on `labels` (0 or 1) and own `features[f][row]`,
    /// rows aligned with the feature holder's. Returns the first messages.
    pub fn start<R: CryptoRng + ?Sized>(
        labels: &[u8],
        features: &[Vec<f64>],
        params: BoostParams,
        rng: &mut R,
    ) -> Result<(Self, Vec<ToFeatureHolder>), LearningError> {
        params.check()?;
        if labels.iter().any(|y| *y > 1) {
            return Err(LearningError::BadParameter("labels must be 0 or 1".into()));
        }
        if !features.is_empty() && check_columns(features)? != labels.len() {
            return Err(LearningError::BadParameter("feature columns and labels differ in length".into()));
        }
        let rows =
            u32::try_from(labels.len()).map_err(|_| LearningError::BadParameter("more than 2^32 rows".into()))?;
        if u64::from(rows) < 2 * params.tree.min_node_rows {
            return Err(LearningError::BadParameter(format!(
                "{rows} aligned rows cannot make two nodes of min_node_rows = {}",
                params.tree.min_node_rows
            )));
        }
        let mean = labels.iter().map(|y| f64::from(*y)).sum::<f64>() / f64::from(rows);
        let base_score = (mean.clamp(1e-6, 1.0 - 1e-6) / (1.0 - mean.clamp(1e-6, 1.0 - 1e-6))).ln();
        let key = SecretKey::generate(rng);
        let mut me = Self {
            codec: GradientCodec::logistic(u64::from(rows))?,
            params,
            labels: labels.iter().map(|y| f64::from(*y)).collect(),
            own: Binned::new(features, params.max_bins)?,
            margins: vec![base_score; rows as usize],
            grad: Vec::new(),
            model: LabelHolderModel { base_score, trees: Vec::new() },
            tree: 0,
            nodes: Vec::new(),
            shape: TreeShape::default(),
            tree_nodes: Vec::new(),
            waiting: 0,
            key,
        };
        let mut out = vec![ToFeatureHolder::Setup { public_key: Box::new(me.key.public().clone()), rows }];
        out.extend(me.start_tree(rng)?);
        Ok((me, out))
    }

    /// The model, once [`LabelHolder::is_done`].
    pub fn model(&self) -> Option<&LabelHolderModel> {
        self.is_done().then_some(&self.model)
    }

    /// Whether every tree is grown.
    pub fn is_done(&self) -> bool {
        self.model.trees.len() == self.params.trees as usize
    }

    fn start_tree<R: CryptoRng + ?Sized>(&mut self, rng: &mut R) -> Result<Vec<ToFeatureHolder>, LearningError> {
        self.grad = self
            .labels
            .iter()
            .zip(&self.margins)
            .map(|(y, m)| {
                let p = sigmoid(*m);
                (p - y, (p * (1.0 - p)).max(0.0))
            })
            .collect();
        let plaintexts = self.grad.iter().map(|(g, h)| self.codec.encode(*g, *h)).collect::<Result<Vec<_>, _>>()?;
        let ciphertexts = self.key.encrypt_all(&plaintexts, rng)?;
        let rows: Vec<u32> = (0..index(self.labels.len())).collect();
        self.nodes = vec![NodeInfo { rows: rows.clone(), depth: 0, peer: None, parent: None }];
        self.shape = TreeShape { children: vec![None] };
        self.tree_nodes = vec![Node::Pending];
        self.waiting = 1;
        Ok(vec![
            ToFeatureHolder::Gradients { tree: self.tree, ciphertexts },
            ToFeatureHolder::Histogram { tree: self.tree, node: 0, rows },
        ])
    }

    /// Takes the feature holder's message; returns what to send next.
    pub fn on_message<R: CryptoRng + ?Sized>(
        &mut self,
        message: ToLabelHolder,
        rng: &mut R,
    ) -> Result<Vec<ToFeatureHolder>, LearningError> {
        let mut out = Vec::new();
        match message {
            ToLabelHolder::Histogram { tree, node, candidates, packed } => {
                let info = self.node_of(tree, node)?;
                if info.peer.is_some() {
                    return Err(LearningError::Protocol(format!("a second histogram for node {node}")));
                }
                let per = self.codec.sums_per_plaintext();
                if packed.len() != (2 * candidates.len()).div_ceil(per) {
                    return Err(LearningError::Protocol(format!(
                        "{} packed ciphertexts for {} candidates",
                        packed.len(),
                        candidates.len()
                    )));
                }
                let decoded: Vec<Vec<BinSum>> = {
                    use rayon::prelude::*;
                    packed
                        .par_iter()
                        .enumerate()
                        .map(|(i, c)| {
                            let count = (2 * candidates.len() - i * per).min(per);
                            self.codec.decode_packed(&self.key.decrypt(c), count)
                        })
                        .collect::<Result<_, _>>()?
                };
                let flat: Vec<BinSum> = decoded.into_iter().flatten().collect();
                let mut sums = HashMap::with_capacity(candidates.len());
                for (id, pair) in candidates.iter().zip(flat.chunks_exact(2)) {
                    if sums.insert(*id, (pair[0], pair[1])).is_some() {
                        return Err(LearningError::Protocol(format!("candidate {id} answered twice")));
                    }
                }
                self.waiting -= 1;
                let parent = self.nodes[node as usize].parent;
                self.nodes[node as usize].peer = Some(sums);
                match parent {
                    None => out.extend(self.decide(node)?),
                    Some(parent) => {
                        let sibling = self.sibling(parent, node);
                        let derived = self.derive(parent, node)?;
                        self.nodes[sibling as usize].peer = Some(derived);
                        let (left, right) = self.shape.children[parent as usize].expect("a parent has children");
                        out.extend(self.decide(left)?);
                        out.extend(self.decide(right)?);
                    }
                }
            }
            ToLabelHolder::Partition { tree, node, left } => {
                let rows = &self.node_of(tree, node)?.rows;
                if self.tree_nodes[node as usize] != Node::Peer || self.shape.children[node as usize].is_some() {
                    return Err(LearningError::Protocol(format!("no split asked of node {node}")));
                }
                let set: std::collections::HashSet<u32> = rows.iter().copied().collect();
                if left.iter().any(|r| !set.contains(r)) || left.len() > rows.len() {
                    return Err(LearningError::Protocol("the partition names rows outside the node".into()));
                }
                let left_set: std::collections::HashSet<u32> = left.iter().copied().collect();
                if left_set.len() != left.len() {
                    return Err(LearningError::Protocol("the partition names a row twice".into()));
                }
                let right: Vec<u32> = rows.iter().copied().filter(|r| !left_set.contains(r)).collect();
                self.waiting -= 1;
                out.extend(self.grow(node, left, right)?);
            }
        }
        if self.waiting == 0 && !self.is_done() {
            out.extend(self.finish_tree(rng)?);
        }
        Ok(out)
    }

    fn node_of(&self, tree: u32, node: u32) -> Result<&NodeInfo, LearningError> {
        if tree != self.tree {
            return Err(LearningError::Protocol(format!("a message for tree {tree} while growing tree {}", self.tree)));
        }
        self.nodes.get(node as usize).ok_or_else(|| LearningError::Protocol(format!("no node {node}")))
    }

    fn sibling(&self, parent: u32, node: u32) -> u32 {
        let (left, right) = self.shape.children[parent as usize].expect("a parent has children");
        if left == node { right } else { left }
    }

    /// The sibling's candidate sums: the parent's minus `node`'s.
    fn derive(&self, parent: u32, node: u32) -> Result<HashMap<u32, (BinSum, BinSum)>, LearningError> {
        let (Some(p), Some(c)) = (&self.nodes[parent as usize].peer, &self.nodes[node as usize].peer) else {
            return Err(LearningError::Protocol("a histogram is missing".into()));
        };
        if p.len() != c.len() {
            return Err(LearningError::Protocol("a child's candidates differ from its parent's".into()));
        }
        p.iter()
            .map(|(id, (pl, pm))| {
                let (cl, cm) =
                    c.get(id).ok_or_else(|| LearningError::Protocol(format!("candidate {id} is missing")))?;
                Ok((*id, (pl.minus(cl), pm.minus(cm))))
            })
            .collect()
    }

    fn total(&self, rows: &[u32]) -> BinSum {
        rows.iter().fold(BinSum::default(), |acc, r| {
            let (g, h) = self.grad[*r as usize];
            acc.plus(&BinSum { g, h, count: 1 })
        })
    }

    /// Leaf, own split or the feature holder's split for `node`.
    fn decide(&mut self, node: u32) -> Result<Vec<ToFeatureHolder>, LearningError> {
        let info = &self.nodes[node as usize];
        let total = self.total(&info.rows);
        let p = self.params.tree;
        if info.depth >= p.max_depth || total.count < 2 * p.min_node_rows {
            self.tree_nodes[node as usize] = Node::Leaf(p.leaf_weight(&total));
            return Ok(Vec::new());
        }
        // Own candidates, in plaintext.
        let mut best: Option<(SplitGain, Choice)> = None;
        let mut consider = |gain: Option<SplitGain>, choice: Choice| {
            if let Some(g) = gain
                && best.as_ref().is_none_or(|(b, _)| g.gain > b.gain)
            {
                best = Some((g, choice));
            }
        };
        for (f, bins) in self.own.bins.iter().enumerate() {
            let mut per_bin = vec![BinSum::default(); bins.len()];
            let mut missing = BinSum::default();
            for r in &info.rows {
                let (g, h) = self.grad[*r as usize];
                let s = BinSum { g, h, count: 1 };
                match self.own.index[f][*r as usize] {
                    Some(k) => per_bin[k as usize] = per_bin[k as usize].plus(&s),
                    None => missing = missing.plus(&s),
                }
            }
            for (k, left) in cumulative(&per_bin).iter().enumerate() {
                consider(p.evaluate(&total, left, &missing), Choice::Own(f, k));
            }
        }
        let mut peer: Vec<_> = info.peer.iter().flatten().collect();
        peer.sort_by_key(|(id, _)| **id);
        for (id, (left, missing)) in peer {
            consider(p.evaluate(&total, left, missing), Choice::Peer(*id));
        }
        let Some((gain, choice)) = best else {
            self.tree_nodes[node as usize] = Node::Leaf(p.leaf_weight(&total));
            return Ok(Vec::new());
        };
        match choice {
            Choice::Own(feature, k) => {
                let threshold = self.own.bins[feature].threshold(k).expect("a candidate's bin has a threshold");
                let split = OwnSplit { feature, threshold, missing_left: gain.missing_left };
                let (left, right): (Vec<u32>, Vec<u32>) =
                    info.rows.iter().partition(|r| match self.own.index[feature][**r as usize] {
                        Some(b) => b as usize <= k,
                        None => split.missing_left,
                    });
                self.tree_nodes[node as usize] = Node::Own(split);
                self.grow(node, left, right)
            }
            Choice::Peer(candidate) => {
                self.tree_nodes[node as usize] = Node::Peer;
                self.waiting += 1;
                Ok(vec![ToFeatureHolder::Split {
                    tree: self.tree,
                    node,
                    candidate,
                    missing_left: gain.missing_left,
                    rows: info.rows.clone(),
                }])
            }
        }
    }

    /// Adds `node`'s children and asks for the smaller one's histogram.
    fn grow(&mut self, node: u32, left: Vec<u32>, right: Vec<u32>) -> Result<Vec<ToFeatureHolder>, LearningError> {
        let depth = self.nodes[node as usize].depth + 1;
        let ids = (index(self.nodes.len()), index(self.nodes.len()) + 1);
        let smaller = if left.len() <= right.len() { ids.0 } else { ids.1 };
        for rows in [left, right] {
            self.nodes.push(NodeInfo { rows, depth, peer: None, parent: Some(node) });
            self.shape.children.push(None);
            self.tree_nodes.push(Node::Pending);
        }
        self.shape.children[node as usize] = Some(ids);
        self.waiting += 1;
        Ok(vec![ToFeatureHolder::Histogram {
            tree: self.tree,
            node: smaller,
            rows: self.nodes[smaller as usize].rows.clone(),
        }])
    }

    fn finish_tree<R: CryptoRng + ?Sized>(&mut self, rng: &mut R) -> Result<Vec<ToFeatureHolder>, LearningError> {
        for (i, n) in self.tree_nodes.iter().enumerate() {
            if let Node::Leaf(w) = n {
                for r in &self.nodes[i].rows {
                    self.margins[*r as usize] += w;
                }
            }
        }
        let shape = std::mem::take(&mut self.shape);
        let nodes = std::mem::take(&mut self.tree_nodes);
        self.model.trees.push((shape.clone(), nodes));
        let mut out = vec![ToFeatureHolder::TreeDone { tree: self.tree, shape }];
        self.tree += 1;
        if !self.is_done() {
            out.extend(self.start_tree(rng)?);
        }
        Ok(out)
    }
}

enum Choice {
    Own(usize, usize),
    Peer(u32),
}

/// The feature holder's side of training.
pub struct FeatureHolder {
    own: Binned,
    public: Option<PublicKey>,
    rows: u32,
    /// Candidate id → (feature, bin), ids in a shuffled order.
    candidates: Vec<(u32, usize, usize)>,
    tree: u32,
    gradients: Vec<Prepared>,
    model: FeatureHolderModel,
    min_node_rows: u64,
    codec: Option<GradientCodec>,
    /// This tree's node of every row, as the requests have cut it, and
    /// the rows of each node.
    node_of: Vec<u32>,
    node_rows: Vec<u64>,
}

impl std::fmt::Debug for FeatureHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureHolder").field("tree", &self.tree).finish_non_exhaustive()
    }
}

impl FeatureHolder {
    /// Its features `features[f][row]`, rows aligned with the label
    /// holder's; `params` as agreed in the task.
    pub fn new<R: CryptoRng + ?Sized>(
        features: &[Vec<f64>],
        params: BoostParams,
        rng: &mut R,
    ) -> Result<Self, LearningError> {
        params.check()?;
        let own = Binned::new(features, params.max_bins)?;
        let mut candidates: Vec<(u32, usize, usize)> = own
            .bins
            .iter()
            .enumerate()
            .flat_map(|(f, b)| (0..b.len().saturating_sub(1)).map(move |k| (f, k)))
            .enumerate()
            .map(|(i, (f, k))| (index(i), f, k))
            .collect();
        candidates.shuffle(rng);
        // Ids follow the shuffled order, so an id says nothing of (f, k).
        for (i, c) in candidates.iter_mut().enumerate() {
            c.0 = index(i);
        }
        Ok(Self {
            own,
            public: None,
            rows: 0,
            candidates,
            tree: 0,
            gradients: Vec::new(),
            model: FeatureHolderModel::default(),
            min_node_rows: params.tree.min_node_rows,
            codec: None,
            node_of: Vec::new(),
            node_rows: Vec::new(),
        })
    }

    /// The model share, complete once the label holder has sent every
    /// tree's shape.
    pub fn model(&self) -> &FeatureHolderModel {
        &self.model
    }

    /// Admits `rows` as a node of this tree: rows strictly increasing and
    /// within the aligned rows, at least `min_node_rows` of them, all in
    /// one node cut so far; `whole` asks for that whole node, otherwise a
    /// part of it that leaves at least `min_node_rows` rows beside it, and
    /// the part becomes a node of its own.
    fn admit_node(&mut self, rows: &[u32], whole: bool) -> Result<(), LearningError> {
        let refuse = |why: String| Err(LearningError::Protocol(why));
        let min = self.min_node_rows;
        if (rows.len() as u64) < min {
            return refuse(format!("a node of {} rows is smaller than min_node_rows = {min}", rows.len()));
        }
        if rows.iter().any(|r| *r >= self.rows) {
            return refuse("a row beyond the aligned rows".into());
        }
        if rows.windows(2).any(|w| w[0] >= w[1]) {
            return refuse("a node's rows must be strictly increasing: no row twice".into());
        }
        let node = self.node_of[rows[0] as usize];
        if rows.iter().any(|r| self.node_of[*r as usize] != node) {
            return refuse("a node's rows must lie in one node of the tree".into());
        }
        let all = self.node_rows[node as usize];
        let part = rows.len() as u64;
        if part == all {
            return Ok(());
        }
        if whole {
            return refuse("a split must name all rows of its node".into());
        }
        if all - part < min {
            return refuse(format!("a child leaving {} rows beside it, fewer than min_node_rows = {min}", all - part));
        }
        let child = index(self.node_rows.len());
        for r in rows {
            self.node_of[*r as usize] = child;
        }
        self.node_rows[node as usize] -= part;
        self.node_rows.push(part);
        Ok(())
    }

    /// Takes the label holder's message; returns the answer, if any.
    pub fn on_message(&mut self, message: ToFeatureHolder) -> Result<Option<ToLabelHolder>, LearningError> {
        match message {
            ToFeatureHolder::Setup { public_key, rows } => {
                if self.public.is_some() {
                    return Err(LearningError::Protocol("a second setup".into()));
                }
                if self.own.index.first().is_some_and(|c| c.len() != rows as usize) {
                    return Err(LearningError::Protocol(format!(
                        "{rows} aligned rows, but this party holds a different number"
                    )));
                }
                self.public = Some(*public_key);
                self.rows = rows;
                self.codec = Some(GradientCodec::logistic(u64::from(rows))?);
                Ok(None)
            }
            ToFeatureHolder::Gradients { tree, ciphertexts } => {
                let public =
                    self.public.as_ref().ok_or_else(|| LearningError::Protocol("gradients before setup".into()))?;
                if ciphertexts.len() != self.rows as usize {
                    return Err(LearningError::Protocol("one ciphertext per aligned row is required".into()));
                }
                self.tree = tree;
                self.gradients = ciphertexts.iter().map(|c| public.prepare(c)).collect();
                self.node_of = vec![0; self.rows as usize];
                self.node_rows = vec![u64::from(self.rows)];
                Ok(None)
            }
            ToFeatureHolder::Histogram { tree, node, rows } => {
                self.check_tree(tree)?;
                self.admit_node(&rows, false)?;
                let (candidates, packed) = self.histogram(&rows)?;
                Ok(Some(ToLabelHolder::Histogram { tree, node, candidates, packed }))
            }
            ToFeatureHolder::Split { tree, node, candidate, missing_left, rows } => {
                self.check_tree(tree)?;
                self.admit_node(&rows, true)?;
                let &(_, feature, k) = self
                    .candidates
                    .get(candidate as usize)
                    .ok_or_else(|| LearningError::Protocol(format!("no candidate {candidate}")))?;
                let threshold = self.own.bins[feature].threshold(k).expect("a candidate's bin has a threshold");
                let split = OwnSplit { feature, threshold, missing_left };
                if self.model.splits.insert((tree, node), split).is_some() {
                    return Err(LearningError::Protocol(format!("node {node} split twice")));
                }
                let left = rows
                    .into_iter()
                    .filter(|r| match self.own.index[feature][*r as usize] {
                        Some(b) => b as usize <= k,
                        None => missing_left,
                    })
                    .collect();
                Ok(Some(ToLabelHolder::Partition { tree, node, left }))
            }
            ToFeatureHolder::TreeDone { tree, shape } => {
                self.check_tree(tree)?;
                if self.model.shapes.len() != tree as usize {
                    return Err(LearningError::Protocol(format!("tree {tree} completed out of order")));
                }
                self.model.shapes.push(shape);
                Ok(None)
            }
        }
    }

    fn check_tree(&self, tree: u32) -> Result<(), LearningError> {
        if self.public.is_none() || self.gradients.is_empty() || tree != self.tree {
            return Err(LearningError::Protocol(format!("no gradients for tree {tree}")));
        }
        Ok(())
    }

    /// Per candidate: `E(Σ rows ≤ threshold)`, `E(Σ rows missing)`,
    /// packed side by side.
    fn histogram(&self, rows: &[u32]) -> Result<(Vec<u32>, Vec<Ciphertext>), LearningError> {
        use rayon::prelude::*;
        let public = self.public.as_ref().expect("checked");
        let codec = self.codec.as_ref().expect("set with the key");
        let per_feature: Vec<(Vec<Prepared>, Prepared)> = self
            .own
            .bins
            .par_iter()
            .enumerate()
            .map(|(f, bins)| {
                let mut per_bin = vec![public.zero(); bins.len()];
                let mut missing = public.zero();
                for r in rows {
                    let c = &self.gradients[*r as usize];
                    match self.own.index[f][*r as usize] {
                        Some(k) => per_bin[k as usize] = public.add(&per_bin[k as usize], c),
                        None => missing = public.add(&missing, c),
                    }
                }
                // Running sums: entry k is every bin ≤ k.
                for k in 1..per_bin.len() {
                    per_bin[k] = public.add(&per_bin[k - 1], &per_bin[k]);
                }
                (per_bin, missing)
            })
            .collect();
        let sums: Vec<Prepared> =
            self.candidates.iter().flat_map(|&(_, f, k)| [per_feature[f].0[k], per_feature[f].1]).collect();
        // Horner: sum i of a chunk ends up shifted by i·sum_bits.
        let packed = sums
            .par_chunks(codec.sums_per_plaintext())
            .map(|chunk| {
                let mut acc = *chunk.last().expect("chunks are not empty");
                for s in chunk.iter().rev().skip(1) {
                    acc = public.add(&public.shift_left(&acc, codec.sum_bits()), s);
                }
                public.finish(&acc)
            })
            .collect();
        Ok((self.candidates.iter().map(|c| c.0).collect(), packed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand10::{RngExt, SeedableRng};

    /// Rows where default depends on a bank feature and a bureau feature
    /// (with missing bureau values).
    fn data(rows: usize, seed: u64) -> (Vec<u8>, Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let mut rng = rand10::rngs::StdRng::seed_from_u64(seed);
        let mut labels = Vec::new();
        let (mut bank, mut bureau) = (vec![Vec::new(), Vec::new()], vec![Vec::new()]);
        for _ in 0..rows {
            let income: f64 = rng.random_range(0.0..100.0);
            let noise: f64 = rng.random_range(0.0..1.0);
            let delinquencies: f64 = f64::from(rng.random_range(0u32..6));
            let score = delinquencies * 0.6 - income / 50.0 + rng.random_range(-0.5..0.5);
            labels.push(u8::from(score > 0.0));
            bank[0].push(income);
            bank[1].push(noise);
            bureau[0].push(if rng.random_range(0..10) == 0 { f64::NAN } else { delinquencies });
        }
        (labels, bank, bureau)
    }

    fn train(
        labels: &[u8],
        bank: &[Vec<f64>],
        bureau: &[Vec<f64>],
        params: BoostParams,
    ) -> (LabelHolderModel, FeatureHolderModel, usize) {
        let mut rng = rand10::rngs::StdRng::seed_from_u64(11);
        let mut peer = FeatureHolder::new(bureau, params, &mut rng).unwrap();
        let (mut holder, mut outbox) = LabelHolder::start(labels, bank, params, &mut rng).unwrap();
        let mut messages = 0;
        while let Some(message) = (!outbox.is_empty()).then(|| outbox.remove(0)) {
            messages += 1;
            assert!(messages < 10_000, "training terminates");
            if let Some(answer) = peer.on_message(message).unwrap() {
                outbox.extend(holder.on_message(answer, &mut rng).unwrap());
            }
        }
        assert!(holder.is_done());
        (holder.model().unwrap().clone(), peer.model().clone(), messages)
    }

    #[test]
    fn two_parties_learn_what_neither_could_alone() {
        let (labels, bank, bureau) = data(400, 5);
        let params = BoostParams {
            trees: 4,
            max_bins: 16,
            tree: TreeParams { max_depth: 3, min_node_rows: 10, ..TreeParams::default() },
        };
        let (model, peer, _) = train(&labels, &bank, &bureau, params);
        // The bureau's feature was used, and only the bureau knows its thresholds.
        assert!(!peer.splits.is_empty(), "the bureau's feature carries signal and is split on");
        let masks = peer.leaf_masks(&bureau).unwrap();
        let probabilities = model.predict(&bank, &masks).unwrap();
        let correct = probabilities.iter().zip(&labels).filter(|(p, y)| (**p > 0.5) == (**y == 1)).count();
        let joint_accuracy = correct as f64 / labels.len() as f64;

        // The bank alone (no bureau feature) does worse.
        let (alone, alone_peer, _) = train(&labels, &bank, &[vec![f64::NAN; labels.len()]], params);
        assert!(alone_peer.splits.is_empty());
        let alone_masks = alone_peer.leaf_masks(&[vec![f64::NAN; labels.len()]]).unwrap();
        let alone_p = alone.predict(&bank, &alone_masks).unwrap();
        let alone_correct = alone_p.iter().zip(&labels).filter(|(p, y)| (**p > 0.5) == (**y == 1)).count();
        assert!(joint_accuracy > 0.85, "joint accuracy {joint_accuracy}");
        assert!(correct > alone_correct + 20, "joint {correct} vs bank alone {alone_correct}");
    }

    #[test]
    fn the_vertical_model_equals_the_one_trained_on_joined_columns() {
        // Lossless: the same trees as a label holder holding every column.
        let (labels, bank, bureau) = data(300, 9);
        let params = BoostParams {
            trees: 3,
            max_bins: 8,
            tree: TreeParams { max_depth: 3, min_node_rows: 10, ..TreeParams::default() },
        };
        let (model, peer, _) = train(&labels, &bank, &bureau, params);
        let joined: Vec<Vec<f64>> = bank.iter().chain(&bureau).cloned().collect();
        let nothing = vec![vec![f64::NAN; labels.len()]];
        let (central, central_peer, _) = train(&labels, &joined, &nothing, params);
        let vertical = model.predict(&bank, &peer.leaf_masks(&bureau).unwrap()).unwrap();
        let reference = central.predict(&joined, &central_peer.leaf_masks(&nothing).unwrap()).unwrap();
        for (a, b) in vertical.iter().zip(&reference) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
    }

    #[test]
    fn hostile_messages_are_refused() {
        let (labels, bank, bureau) = data(60, 1);
        let params = BoostParams {
            trees: 1,
            max_bins: 4,
            tree: TreeParams { max_depth: 2, min_node_rows: 10, ..TreeParams::default() },
        };
        let mut rng = rand10::rngs::StdRng::seed_from_u64(2);
        let mut peer = FeatureHolder::new(&bureau, params, &mut rng).unwrap();
        let (mut holder, outbox) = LabelHolder::start(&labels, &bank, params, &mut rng).unwrap();
        // The feature holder refuses a node under min_node_rows and unknown rows.
        for m in outbox.iter().take(2) {
            assert!(peer.on_message(m.clone()).unwrap().is_none());
        }
        let tiny = ToFeatureHolder::Histogram { tree: 0, node: 0, rows: (0..3).collect() };
        assert!(peer.on_message(tiny).unwrap_err().to_string().contains("min_node_rows"));
        let beyond = ToFeatureHolder::Histogram { tree: 0, node: 0, rows: (50..70).collect() };
        assert!(peer.on_message(beyond).is_err());
        // Differencing within a tree: a row named twice, and a part that
        // leaves a single row beside it (its sibling would be that row).
        let twice = ToFeatureHolder::Histogram { tree: 0, node: 1, rows: [0].repeat(20) };
        assert!(peer.on_message(twice).unwrap_err().to_string().contains("no row twice"));
        let all_but_one = ToFeatureHolder::Histogram { tree: 0, node: 1, rows: (1..60).collect() };
        assert!(peer.on_message(all_but_one).unwrap_err().to_string().contains("leaving 1 rows"));
        // A proper child, then a request straddling it and its sibling.
        let child = ToFeatureHolder::Histogram { tree: 0, node: 1, rows: (0..20).collect() };
        assert!(peer.on_message(child).unwrap().is_some());
        let straddling = ToFeatureHolder::Histogram { tree: 0, node: 3, rows: (10..30).collect() };
        assert!(peer.on_message(straddling).unwrap_err().to_string().contains("one node"));
        // A split must name a whole node.
        let part =
            ToFeatureHolder::Split { tree: 0, node: 2, candidate: 0, missing_left: true, rows: (20..50).collect() };
        assert!(peer.on_message(part).unwrap_err().to_string().contains("all rows of its node"));
        // The label holder refuses a partition it did not ask for and a stray tree.
        let stray = ToLabelHolder::Partition { tree: 0, node: 0, left: vec![1] };
        assert!(holder.on_message(stray, &mut rng).unwrap_err().to_string().contains("no split asked"));
        let other_tree = ToLabelHolder::Histogram { tree: 7, node: 0, candidates: Vec::new(), packed: Vec::new() };
        assert!(holder.on_message(other_tree, &mut rng).is_err());
        assert!(LabelHolder::start(&[0, 2], &[], params, &mut rng).is_err());
    }
}
