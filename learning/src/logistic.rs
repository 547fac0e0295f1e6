//! Vertical logistic regression between two parties, no third party: a
//! **label holder** (labels, features `X_A`, weights `w_A` with the
//! intercept) and a **feature holder** (features `X_B`, weights `w_B`).
//! Each party has its own 2048-bit Paillier key and ends with the weights
//! of its own features only.
//!
//! ## The gradient
//!
//! The log-loss gradient `σ(z) − y` is replaced by its Taylor expansion at
//! 0, `d = ½ + ¼z − y` (Hardy et al., 2017), which is linear in the two
//! partial scores `u_A = X_A·w_A` and `u_B = X_B·w_B`. With `D = 4d =
//! 2 + u_A + u_B − 4y`, the gradient of party P's weight `j` over a batch
//! of `m` rows is `Σᵢ Dᵢ·x_ij / 4m`, plus `λ·w_j` (L2).
//!
//! ## One batch, as the messages go
//!
//! 1. The label holder sends `E_A(2 + u_A − 4y)` per row, under its key
//!    ([`ToFeatureHolder::Batch`]).
//! 2. The feature holder adds `u_B` (a plaintext addition) to get
//!    `E_A(D)`, forms `E_A(Σ Dᵢ x_ij + r_j)` with masks `r_j` uniform
//!    mod `n_A`, and sends them with `E_B(u_B)` per row, under its own key
//!    ([`ToLabelHolder::Batch`]).
//! 3. The label holder decrypts the masked sums (uniform to it) and returns
//!    them; it adds `2 + u_A − 4y` to `E_B(u_B)` to get `E_B(D)` and sends
//!    `E_B(Σ Dᵢ x_ij + s_j)` with masks `s_j` uniform mod `n_B`
//!    ([`ToFeatureHolder::Masked`]).
//! 4. The feature holder decrypts those and returns them
//!    ([`ToLabelHolder::Unmasked`]); each party removes its masks and
//!    updates its own weights.
//!
//! Neither party ever decrypts anything but a uniformly masked sum: it
//! sees no per-row value of the other (no `u` of the other side, no label,
//! no `D`). Each learns its own exact gradient per batch, which is what
//! any gradient-descent training reveals to a weight's owner.
//!
//! ## Fixed point, convergence, regularisation
//!
//! Each party standardises its own features (mean 0, variance 1 over the
//! training rows; the model share keeps the scaler). Per-row values go to
//! integers at scale 2²⁰ (`D` and `x`), sums at 2⁴⁰, far below `n`: the
//! gradient is exact to about 10⁻⁶ per row. The Taylor loss is convex and
//! its gradient `¼·XᵀX`-Lipschitz, so with standardised features a
//! learning rate ≤ 1 converges; training runs `epochs` passes of
//! deterministic batches (both parties derive the same batch order) with
//! L2 penalty `λ`. The result equals plaintext training with the same
//! approximation, batches and rounding ([`tests`]).
//!
//! ## Known attacks, and what Stayput does
//!
//! * *Label inference from one's own gradient*: with a batch of one row,
//!   the feature holder's gradient is `D·x`, from which the label follows.
//!   Batches are at least [`MIN_BATCH`] rows.
//! * *Score inversion at prediction*: the label holder learns `u_B` of each
//!   scored applicant (it learns the score anyway); `u_B` over many
//!   chosen applicants could reveal `w_B`. Prediction grants meter rows.
//! * *A malicious party* could send wrong ciphertexts and skew the other's
//!   weights; the protocol is semi-honest, bound by the grant and ledger.

use rand10::CryptoRng;

use crate::LearningError;
use crate::paillier::{Ciphertext, Plaintext, PublicKey, SecretKey};

/// Fixed-point scale of per-row values.
pub const SCALE_BITS: u32 = 20;
/// Fewest rows in a batch (see the module docs).
pub const MIN_BATCH: usize = 32;

/// Training parameters both parties agree on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrParams {
    /// Passes over the aligned rows.
    pub epochs: u32,
    /// Rows per gradient step.
    pub batch_size: usize,
    /// Step size.
    pub learning_rate: f64,
    /// L2 penalty λ.
    pub l2: f64,
}

impl Default for LrParams {
    fn default() -> Self {
        Self { epochs: 5, batch_size: 128, learning_rate: 0.5, l2: 0.001 }
    }
}

impl LrParams {
    fn check(&self, rows: usize) -> Result<(), LearningError> {
        let bad = |s: String| Err(LearningError::BadParameter(s));
        if !(1..=1000).contains(&self.epochs) {
            return bad("epochs must be 1 to 1000".into());
        }
        if self.batch_size < MIN_BATCH || self.batch_size > rows {
            return bad(format!("batch_size must be {MIN_BATCH} to the {rows} aligned rows"));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 4.0 && self.l2 >= 0.0 && self.l2 < 1.0) {
            return bad("learning_rate must be in (0, 4] and l2 in [0, 1)".into());
        }
        Ok(())
    }

    /// The batches: every epoch the rows in order, cut into full batches.
    fn batches(&self, rows: usize) -> Vec<std::ops::Range<usize>> {
        let per_epoch = rows / self.batch_size;
        (0..self.epochs as usize)
            .flat_map(|_| (0..per_epoch).map(|b| b * self.batch_size..(b + 1) * self.batch_size))
            .collect()
    }
}

/// What the label holder sends.
#[derive(Debug, Clone)]
pub enum ToFeatureHolder {
    /// Its public key (first message).
    Setup(Box<PublicKey>),
    /// `E_A(2 + u_A − 4y)` per row of batch `batch`.
    Batch {
        /// The batch number.
        batch: u32,
        /// Per row.
        partial: Vec<Ciphertext>,
    },
    /// The feature holder's masked gradient, decrypted; and its own,
    /// masked, under the feature holder's key.
    Masked {
        /// The batch number.
        batch: u32,
        /// `Σ Dᵢ x_ij + r_j` for the feature holder's features.
        yours: Vec<Plaintext>,
        /// `E_B(Σ Dᵢ x_ij + s_j)` for the label holder's features.
        mine: Vec<Ciphertext>,
    },
}

/// What the feature holder sends.
#[derive(Debug, Clone)]
pub enum ToLabelHolder {
    /// Its public key (first message).
    Setup(Box<PublicKey>),
    /// `E_B(u_B)` per row, and its masked gradient under the label holder's key.
    Batch {
        /// The batch number.
        batch: u32,
        /// `E_B(u_B)` per row.
        partial: Vec<Ciphertext>,
        /// `E_A(Σ Dᵢ x_ij + r_j)` per own feature.
        masked: Vec<Ciphertext>,
    },
    /// The label holder's masked gradient, decrypted.
    Unmasked {
        /// The batch number.
        batch: u32,
        /// `Σ Dᵢ x_ij + s_j`.
        values: Vec<Plaintext>,
    },
}

/// One party's share of the model: its scaler and weights.
#[derive(Debug, Clone, PartialEq)]
pub struct LrShare {
    pub(crate) means: Vec<f64>,
    pub(crate) stds: Vec<f64>,
    pub(crate) weights: Vec<f64>,
    /// The intercept (label holder only; 0 at the feature holder).
    pub(crate) intercept: f64,
}

impl LrShare {
    /// This party's partial scores `u` for rows `features[f][row]`.
    /// Missing values are refused (an applicant must be scored on every
    /// feature, never a silent default).
    pub fn partial_scores(&self, features: &[Vec<f64>]) -> Result<Vec<f64>, LearningError> {
        let rows = columns(features, self.weights.len())?;
        (0..rows)
            .map(|r| {
                let mut u = self.intercept;
                for (f, col) in features.iter().enumerate() {
                    let v = col[r];
                    if !v.is_finite() {
                        // Which row lacks it is the data of the party that holds
                        // the column: the error names the feature only.
                        return Err(LearningError::BadParameter(format!(
                            "feature {f} has a missing value; logistic regression scores only applicants with every feature"
                        )));
                    }
                    u += self.weights[f] * (v - self.means[f]) / self.stds[f];
                }
                Ok(u)
            })
            .collect()
    }

    /// The weights, on standardised features.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }
}

/// The probability from both partial scores (the label holder's step).
pub fn probability(u_label_holder: f64, u_feature_holder: f64) -> f64 {
    1.0 / (1.0 + (-(u_label_holder + u_feature_holder)).exp())
}

fn columns(features: &[Vec<f64>], expected: usize) -> Result<usize, LearningError> {
    if features.len() != expected {
        return Err(LearningError::BadParameter(format!(
            "{} feature columns where the model has {expected}",
            features.len()
        )));
    }
    let rows = features.first().map_or(0, Vec::len);
    if features.iter().any(|c| c.len() != rows) {
        return Err(LearningError::BadParameter("feature columns differ in length".into()));
    }
    Ok(rows)
}

/// Features standardised and at scale 2²⁰, `x[row][f]`, with the scaler.
struct Scaled {
    x: Vec<Vec<i64>>,
    real: Vec<Vec<f64>>,
    means: Vec<f64>,
    stds: Vec<f64>,
}

fn to_fixed(v: f64) -> Result<i64, LearningError> {
    let scaled = (v * f64::from(1u32 << SCALE_BITS)).round();
    if !scaled.is_finite() || scaled.abs() > 2f64.powi(50) {
        return Err(LearningError::OutOfRange { what: "standardised feature or partial score", min: -1e9, max: 1e9 });
    }
    // Checked to lie within ±2^50 above: the cast is exact.
    #[allow(clippy::cast_possible_truncation)]
    Ok(scaled as i64)
}

fn scale(features: &[Vec<f64>], rows: usize) -> Result<Scaled, LearningError> {
    columns(features, features.len())?;
    let mut means = Vec::new();
    let mut stds = Vec::new();
    for (f, col) in features.iter().enumerate() {
        if col.len() != rows || col.iter().any(|v| !v.is_finite()) {
            return Err(LearningError::BadParameter(format!(
                "feature {f} must hold a finite value for each of the {rows} aligned rows"
            )));
        }
        let mean = col.iter().sum::<f64>() / rows as f64;
        let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / rows as f64;
        means.push(mean);
        stds.push(if var > 0.0 { var.sqrt() } else { 1.0 });
    }
    let real: Vec<Vec<f64>> =
        (0..rows).map(|r| features.iter().enumerate().map(|(f, c)| (c[r] - means[f]) / stds[f]).collect()).collect();
    let x =
        real.iter().map(|row| row.iter().map(|v| to_fixed(*v)).collect::<Result<_, _>>()).collect::<Result<_, _>>()?;
    Ok(Scaled { x, real, means, stds })
}

/// What both parties share: keys, data, weights and the batch under way.
struct Party {
    key: SecretKey,
    peer: Option<PublicKey>,
    data: Scaled,
    weights: Vec<f64>,
    intercept: Option<f64>,
    params: LrParams,
    batches: Vec<std::ops::Range<usize>>,
    batch: usize,
    /// Masks on this party's gradient sums (mod the peer's `n`).
    masks: Vec<Plaintext>,
}

impl Party {
    fn new<R: CryptoRng + ?Sized>(
        features: &[Vec<f64>],
        rows: usize,
        params: LrParams,
        intercept: bool,
        rng: &mut R,
    ) -> Result<Self, LearningError> {
        params.check(rows)?;
        let data = scale(features, rows)?;
        Ok(Self {
            key: SecretKey::generate(rng),
            peer: None,
            weights: vec![0.0; features.len()],
            intercept: intercept.then_some(0.0),
            batches: params.batches(rows),
            params,
            data,
            batch: 0,
            masks: Vec::new(),
        })
    }

    fn peer(&self) -> Result<&PublicKey, LearningError> {
        self.peer.as_ref().ok_or_else(|| LearningError::Protocol("no public key from the peer yet".into()))
    }

    fn set_peer(&mut self, key: PublicKey) -> Result<(), LearningError> {
        if self.peer.replace(key).is_some() {
            return Err(LearningError::Protocol("a second public key".into()));
        }
        Ok(())
    }

    fn done(&self) -> bool {
        self.batch >= self.batches.len()
    }

    fn rows(&self) -> std::ops::Range<usize> {
        self.batches.get(self.batch).cloned().unwrap_or(0..0)
    }

    fn check_batch(&self, batch: u32, len: usize) -> Result<(), LearningError> {
        if self.done() || batch as usize != self.batch {
            return Err(LearningError::Protocol(format!("batch {batch} is not the one under way")));
        }
        if len != self.rows().len() {
            return Err(LearningError::Protocol(format!("{len} values for a batch of {} rows", self.rows().len())));
        }
        Ok(())
    }

    /// Refuses a gradient message unless this party's masked sums for
    /// `batch` are out and awaited.
    fn expect_gradient(&self, batch: u32) -> Result<(), LearningError> {
        if self.done() || batch as usize != self.batch || self.masks.is_empty() {
            return Err(LearningError::Protocol(format!("no gradient of batch {batch} is awaited")));
        }
        Ok(())
    }

    /// `u` of the batch's rows (with the intercept), at scale 2²⁰.
    fn partial(&self) -> Result<Vec<i64>, LearningError> {
        self.rows()
            .map(|r| {
                let u = self.intercept.unwrap_or(0.0)
                    + self.data.real[r].iter().zip(&self.weights).map(|(x, w)| x * w).sum::<f64>();
                to_fixed(u)
            })
            .collect()
    }

    /// `E_peer(Σᵢ Dᵢ·x_ij + r_j)` per own feature (then the intercept's,
    /// `x = 1`), from `E_peer(Dᵢ)` per row; the masks are kept.
    fn masked_gradient<R: CryptoRng + ?Sized>(
        &mut self,
        d: &[crate::paillier::Prepared],
        rng: &mut R,
    ) -> Result<Vec<Ciphertext>, LearningError> {
        let peer = self.peer()?.clone();
        let rows = self.rows();
        let one = 1i64 << SCALE_BITS;
        let columns = self.weights.len() + usize::from(self.intercept.is_some());
        use rayon::prelude::*;
        let masks: Vec<Plaintext> = (0..columns).map(|_| peer.random_plaintext(rng)).collect();
        let sums = (0..columns)
            .into_par_iter()
            .map(|j| {
                let terms = rows.clone().zip(d).map(|(r, c)| (*c, self.data.x[r].get(j).copied().unwrap_or(one)));
                peer.add_plain(&peer.dot_signed(terms)?, &masks[j])
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Fresh randomness, so the sums' ciphertexts say nothing of the rows'.
        let out = sums.iter().map(|s| peer.rerandomize(&peer.finish(s), rng)).collect();
        self.masks = masks;
        Ok(out)
    }

    /// Removes the masks from this party's decrypted sums and takes one
    /// gradient step.
    fn step(&mut self, masked: &[Plaintext]) -> Result<(), LearningError> {
        if masked.len() != self.masks.len() {
            return Err(LearningError::Protocol(format!(
                "{} gradient values where {} are due",
                masked.len(),
                self.masks.len()
            )));
        }
        let peer = self.peer()?;
        let scale = f64::from(1u32 << SCALE_BITS);
        let denominator = 4.0 * self.rows().len() as f64 * scale * scale;
        let sums = masked.iter().zip(&self.masks).map(|(v, m)| peer.unmask(v, m)).collect::<Result<Vec<_>, _>>()?;
        let (lr, l2) = (self.params.learning_rate, self.params.l2);
        for (w, sum) in self.weights.iter_mut().zip(&sums) {
            *w -= lr * (*sum as f64 / denominator + l2 * *w);
        }
        if let (Some(b), Some(sum)) = (self.intercept.as_mut(), sums.get(self.data.means.len())) {
            *b -= lr * (*sum as f64 / denominator);
        }
        self.masks.clear();
        self.batch += 1;
        Ok(())
    }

    fn share(&self) -> LrShare {
        LrShare {
            means: self.data.means.clone(),
            stds: self.data.stds.clone(),
            weights: self.weights.clone(),
            intercept: self.intercept.unwrap_or(0.0),
        }
    }
}

/// The label holder's side of training.
pub struct LabelHolder {
    party: Party,
    labels: Vec<u8>,
}

impl std::fmt::Debug for LabelHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelHolder").field("batch", &self.party.batch).finish_non_exhaustive()
    }
}

impl LabelHolder {
    /// Starts training on `labels` (0 or 1) and own `features[f][row]`;
    /// returns the first message.
    pub fn start<R: CryptoRng + ?Sized>(
        labels: &[u8],
        features: &[Vec<f64>],
        params: LrParams,
        rng: &mut R,
    ) -> Result<(Self, ToFeatureHolder), LearningError> {
        if labels.iter().any(|y| *y > 1) {
            return Err(LearningError::BadParameter("labels must be 0 or 1".into()));
        }
        let party = Party::new(features, labels.len(), params, true, rng)?;
        let setup = ToFeatureHolder::Setup(Box::new(party.key.public().clone()));
        Ok((Self { party, labels: labels.to_vec() }, setup))
    }

    /// Whether every batch is done.
    pub fn is_done(&self) -> bool {
        self.party.done()
    }

    /// The label holder's share (weights of its features and the intercept).
    pub fn share(&self) -> LrShare {
        self.party.share()
    }

    /// `2 + u_A − 4y` per row of the batch, at scale 2²⁰.
    fn own_part(&self) -> Result<Vec<i64>, LearningError> {
        let two = 2i64 << SCALE_BITS;
        let four_y = |r: usize| i64::from(self.labels[r]) * (4i64 << SCALE_BITS);
        Ok(self.party.partial()?.into_iter().zip(self.party.rows()).map(|(u, r)| two + u - four_y(r)).collect())
    }

    fn batch_message<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> Result<Option<ToFeatureHolder>, LearningError> {
        if self.party.done() {
            return Ok(None);
        }
        let public = self.party.key.public();
        let plaintexts: Vec<Plaintext> =
            self.own_part()?.into_iter().map(|a| public.encode_signed(i128::from(a))).collect();
        let partial = self.party.key.encrypt_all(&plaintexts, rng)?;
        Ok(Some(ToFeatureHolder::Batch { batch: index(self.party.batch), partial }))
    }

    /// Takes the feature holder's message; returns what to send next.
    pub fn on_message<R: CryptoRng + ?Sized>(
        &mut self,
        message: ToLabelHolder,
        rng: &mut R,
    ) -> Result<Option<ToFeatureHolder>, LearningError> {
        match message {
            ToLabelHolder::Setup(key) => {
                self.party.set_peer(*key)?;
                self.batch_message(rng)
            }
            ToLabelHolder::Batch { batch, partial, masked } => {
                self.party.check_batch(batch, partial.len())?;
                if !self.party.masks.is_empty() {
                    return Err(LearningError::Protocol(format!("batch {batch} arrived twice")));
                }
                let yours = masked.iter().map(|c| self.party.key.decrypt(c)).collect();
                let peer = self.party.peer()?.clone();
                let d = partial
                    .iter()
                    .zip(self.own_part()?)
                    .map(|(c, a)| peer.add_plain(&peer.prepare(c), &peer.encode_signed(i128::from(a))))
                    .collect::<Result<Vec<_>, _>>()?;
                let mine = self.party.masked_gradient(&d, rng)?;
                Ok(Some(ToFeatureHolder::Masked { batch, yours, mine }))
            }
            ToLabelHolder::Unmasked { batch, values } => {
                self.party.expect_gradient(batch)?;
                self.party.step(&values)?;
                self.batch_message(rng)
            }
        }
    }
}

/// The feature holder's side of training.
pub struct FeatureHolder {
    party: Party,
}

impl std::fmt::Debug for FeatureHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureHolder").field("batch", &self.party.batch).finish_non_exhaustive()
    }
}

impl FeatureHolder {
    /// Its features `features[f][row]`, `rows` aligned rows; returns the
    /// first message.
    pub fn start<R: CryptoRng + ?Sized>(
        features: &[Vec<f64>],
        rows: usize,
        params: LrParams,
        rng: &mut R,
    ) -> Result<(Self, ToLabelHolder), LearningError> {
        let party = Party::new(features, rows, params, false, rng)?;
        let setup = ToLabelHolder::Setup(Box::new(party.key.public().clone()));
        Ok((Self { party }, setup))
    }

    /// Whether every batch is done.
    pub fn is_done(&self) -> bool {
        self.party.done()
    }

    /// The feature holder's share (weights of its features).
    pub fn share(&self) -> LrShare {
        self.party.share()
    }

    /// Takes the label holder's message; returns the answer, if any.
    pub fn on_message<R: CryptoRng + ?Sized>(
        &mut self,
        message: ToFeatureHolder,
        rng: &mut R,
    ) -> Result<Option<ToLabelHolder>, LearningError> {
        match message {
            ToFeatureHolder::Setup(key) => {
                self.party.set_peer(*key)?;
                Ok(None)
            }
            ToFeatureHolder::Batch { batch, partial } => {
                self.party.check_batch(batch, partial.len())?;
                let peer = self.party.peer()?.clone();
                let public = self.party.key.public().clone();
                let u = self.party.partial()?;
                let d = partial
                    .iter()
                    .zip(&u)
                    .map(|(c, u)| peer.add_plain(&peer.prepare(c), &peer.encode_signed(i128::from(*u))))
                    .collect::<Result<Vec<_>, _>>()?;
                let masked = self.party.masked_gradient(&d, rng)?;
                let plaintexts: Vec<Plaintext> = u.iter().map(|u| public.encode_signed(i128::from(*u))).collect();
                let partial = self.party.key.encrypt_all(&plaintexts, rng)?;
                Ok(Some(ToLabelHolder::Batch { batch, partial, masked }))
            }
            ToFeatureHolder::Masked { batch, yours, mine } => {
                self.party.expect_gradient(batch)?;
                let columns = self.party.data.means.len() + 1;
                if mine.len() != columns {
                    return Err(LearningError::Protocol(format!(
                        "{} masked sums where the label holder has {columns} columns",
                        mine.len()
                    )));
                }
                self.party.step(&yours)?;
                let values = mine.iter().map(|c| self.party.key.decrypt(c)).collect();
                Ok(Some(ToLabelHolder::Unmasked { batch, values }))
            }
        }
    }
}

/// A batch number (batches are bounded by epochs × rows / 32).
fn index(i: usize) -> u32 {
    u32::try_from(i).expect("batch numbers are bounded")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand10::{RngExt, SeedableRng};

    fn data(rows: usize, seed: u64) -> (Vec<u8>, Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let mut rng = rand10::rngs::StdRng::seed_from_u64(seed);
        let (mut labels, mut bank, mut bureau) = (Vec::new(), vec![Vec::new(); 2], vec![Vec::new(); 2]);
        for _ in 0..rows {
            let x: [f64; 4] = [
                rng.random_range(0.0..100.0),
                rng.random_range(-1.0..1.0),
                rng.random_range(0.0..5.0),
                rng.random_range(0.0..1.0),
            ];
            let z = -x[0] / 25.0 + 2.0 + x[2] * 0.8 - 2.0 + rng.random_range(-0.7..0.7);
            labels.push(u8::from(z > 0.0));
            bank[0].push(x[0]);
            bank[1].push(x[1]);
            bureau[0].push(x[2]);
            bureau[1].push(x[3]);
        }
        (labels, bank, bureau)
    }

    fn train(labels: &[u8], bank: &[Vec<f64>], bureau: &[Vec<f64>], params: LrParams) -> (LrShare, LrShare) {
        let mut rng = rand10::rngs::StdRng::seed_from_u64(4);
        let (mut a, to_b) = LabelHolder::start(labels, bank, params, &mut rng).unwrap();
        let (mut b, to_a) = FeatureHolder::start(bureau, labels.len(), params, &mut rng).unwrap();
        assert!(b.on_message(to_b, &mut rng).unwrap().is_none());
        let mut next = a.on_message(to_a, &mut rng).unwrap();
        let mut steps = 0;
        while let Some(message) = next {
            steps += 1;
            assert!(steps < 100_000, "training terminates");
            next = match b.on_message(message, &mut rng).unwrap() {
                Some(answer) => a.on_message(answer, &mut rng).unwrap(),
                None => None,
            };
        }
        assert!(a.is_done());
        (a.share(), b.share())
    }

    /// The same training in plaintext: the same Taylor gradient, batches,
    /// scaling and fixed-point rounding.
    fn reference(labels: &[u8], bank: &[Vec<f64>], bureau: &[Vec<f64>], params: LrParams) -> (Vec<f64>, f64, Vec<f64>) {
        let rows = labels.len();
        let (sa, sb) = (scale(bank, rows).unwrap(), scale(bureau, rows).unwrap());
        let (mut wa, mut b, mut wb) = (vec![0.0; bank.len()], 0.0, vec![0.0; bureau.len()]);
        let s = f64::from(1u32 << SCALE_BITS);
        for range in params.batches(rows) {
            let d: Vec<i64> = range
                .clone()
                .map(|r| {
                    let ua = b + sa.real[r].iter().zip(&wa).map(|(x, w)| x * w).sum::<f64>();
                    let ub = sb.real[r].iter().zip(&wb).map(|(x, w)| x * w).sum::<f64>();
                    (2i64 << SCALE_BITS) + to_fixed(ua).unwrap() - i64::from(labels[r]) * (4i64 << SCALE_BITS)
                        + to_fixed(ub).unwrap()
                })
                .collect();
            let denominator = 4.0 * range.len() as f64 * s * s;
            let grad = |x: &Scaled, j: usize| {
                range.clone().zip(&d).map(|(r, d)| i128::from(*d) * i128::from(x.x[r][j])).sum::<i128>() as f64
                    / denominator
            };
            let ga: Vec<f64> = (0..wa.len()).map(|j| grad(&sa, j)).collect();
            let gb: Vec<f64> = (0..wb.len()).map(|j| grad(&sb, j)).collect();
            let gi =
                d.iter().map(|d| i128::from(*d) * i128::from(1i64 << SCALE_BITS)).sum::<i128>() as f64 / denominator;
            for (w, g) in wa.iter_mut().zip(ga) {
                *w -= params.learning_rate * (g + params.l2 * *w);
            }
            for (w, g) in wb.iter_mut().zip(gb) {
                *w -= params.learning_rate * (g + params.l2 * *w);
            }
            b -= params.learning_rate * gi;
        }
        (wa, b, wb)
    }

    #[test]
    fn two_parties_train_exactly_what_plaintext_training_gives() {
        let (labels, bank, bureau) = data(256, 3);
        let params = LrParams { epochs: 2, batch_size: 64, learning_rate: 0.5, l2: 0.01 };
        let (a, b) = train(&labels, &bank, &bureau, params);
        let (wa, intercept, wb) = reference(&labels, &bank, &bureau, params);
        assert_eq!(a.weights(), &wa[..]);
        assert_eq!(a.intercept, intercept);
        assert_eq!(b.weights(), &wb[..]);
        assert_eq!(b.intercept, 0.0);
        // And the model works: the bank's income and the bureau's first
        // feature carry the signal.
        let (ua, ub) = (a.partial_scores(&bank).unwrap(), b.partial_scores(&bureau).unwrap());
        let correct = ua
            .iter()
            .zip(&ub)
            .zip(&labels)
            .filter(|((ua, ub), y)| (probability(**ua, **ub) > 0.5) == (**y == 1))
            .count();
        assert!(correct as f64 / labels.len() as f64 > 0.85, "accuracy {correct}/{}", labels.len());
        assert!(wb[0].abs() > wb[1].abs() * 3.0, "{wb:?}");
    }

    #[test]
    fn bad_input_and_hostile_messages_are_refused() {
        let (labels, bank, bureau) = data(64, 1);
        let mut rng = rand10::rngs::StdRng::seed_from_u64(5);
        let small = LrParams { batch_size: 8, ..LrParams::default() };
        assert!(LabelHolder::start(&labels, &bank, small, &mut rng).unwrap_err().to_string().contains("batch_size"));
        let params = LrParams { epochs: 1, batch_size: 32, ..LrParams::default() };
        let mut holed = bureau.clone();
        holed[0][3] = f64::NAN;
        assert!(FeatureHolder::start(&holed, 64, params, &mut rng).is_err());
        let (mut a, to_b) = LabelHolder::start(&labels, &bank, params, &mut rng).unwrap();
        let (mut b, to_a) = FeatureHolder::start(&bureau, 64, params, &mut rng).unwrap();
        b.on_message(to_b.clone(), &mut rng).unwrap();
        assert!(b.on_message(to_b, &mut rng).is_err(), "a second key");
        let Some(ToFeatureHolder::Batch { partial, .. }) = a.on_message(to_a, &mut rng).unwrap() else {
            panic!("a batch follows the keys");
        };
        let short = ToFeatureHolder::Batch { batch: 0, partial: partial[..5].to_vec() };
        assert!(b.on_message(short, &mut rng).is_err());
        let later = ToFeatureHolder::Batch { batch: 3, partial };
        assert!(b.on_message(later, &mut rng).is_err());
        let stray = ToLabelHolder::Unmasked { batch: 0, values: Vec::new() };
        assert!(a.on_message(stray, &mut rng).is_err());
        // Prediction refuses a missing value rather than defaulting it.
        let (share, _) = train(&labels, &bank, &bureau, params);
        let mut applicant = vec![vec![50.0], vec![f64::NAN]];
        let err = share.partial_scores(&applicant).unwrap_err().to_string();
        assert!(err.contains("feature 1 has a missing value") && !err.contains("row"), "{err}");
        applicant[1][0] = 0.3;
        assert_eq!(share.partial_scores(&applicant).unwrap().len(), 1);
        assert!(share.partial_scores(&applicant[..1]).is_err());
    }
}
