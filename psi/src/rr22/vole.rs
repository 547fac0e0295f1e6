//! Silent VOLE over GF(2^128): `k` correlations `C = B + A·Δ` — the
//! requester holds `A, C`, the responder `B, Δ` — from a few hundred
//! kilobytes of traffic, by the PCG of Boyle–Couteau–Gilboa–Ishai (CCS 2019)
//! with dual LPN over an expand-convolute code (Raghuraman–Rindal–Tanguy,
//! Crypto 2023).
//!
//! 1. **Noise.** The length-`N` noise vector `e` (`N ≥ 2k`) is regular:
//!    `t` trees of `2^h` positions, one nonzero `βⱼ` at a secret `αⱼ` in
//!    each, both the requester's.
//! 2. **Punctured PRFs.** For each tree the responder expands a random seed
//!    into `2^h` leaves `vⱼ` by a GGM tree (fixed-key AES in Davies–Meyer
//!    form: `Gᵦ(x) = AES_{Kᵦ}(x) ⊕ x`) and sends, per level `l`, the XOR
//!    `Kₗᵇ` of all left (`b = 0`) and all right children, each masked by one
//!    random OT — correlated OT ([`super::cot`]) hashed with SHA-256, whose
//!    choice bit is `¬αⱼ,ₗ`. The requester rebuilds every leaf but `αⱼ`.
//! 3. **Single point.** A base VOLE `δⱼ = γⱼ + βⱼ·Δ` costs 128 more
//!    correlated OTs (`βⱼ`'s bits as choices, `γⱼ = Σₗ xˡ·tₗ`); the
//!    responder sends `dⱼ = δⱼ + Σᵢ vⱼ[i]`, and the requester sets its leaf
//!    `αⱼ` to `dⱼ + γⱼ + Σ_{i≠αⱼ} vⱼ[i] = vⱼ[αⱼ] + βⱼ·Δ`. Now `w = v + e·Δ`.
//! 4. **Compression.** Both apply the same GF(2)-linear map `Enc` (the
//!    dual of the code, [`Code`]) to their length-`N` vectors: `A = Enc(e)`,
//!    `C = Enc(w)`, `B = Enc(v)`; `C = B + A·Δ` by linearity, and `A` is
//!    pseudorandom under dual LPN.
//!
//! **Parameters.** The code is systematic of rate 1/2: `Enc(x) = x[..k] +
//! E·Acc(x[k..])`, where `Acc` runs twice over the second half (each
//! position adds itself to the next 24 positions chosen by public random
//! bits and always to the 25th, wrapping around), and `E` adds 7 positions
//! of it to each output (4 spread regularly, 3 uniform) — the expand-
//! convolute shape of RRT23 with their parameters (expander weight 7,
//! window 24). The noise weight follows the bound libOTe and CryProt use,
//! `t ≥ 128 / −log₂(1 − 2·0.15) ≈ 248` for a minimum-distance ratio of
//! 0.15 (the more conservative of their published choices; newer libOTe
//! takes 0.25, `t = 128`). Here `t` is at least 248 and every tree has
//! `2^h` leaves, the largest power of two with `248·2^h ≤ 2k`.
//!
//! The requester learns nothing of `Δ` (only one message of each random
//! OT); the responder learns nothing of `α` or `β` (IKNP hides the choice
//! bits), and `A` looks random to it under dual LPN. Semi-honest.

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::field::{Gf, Multiplier};

/// Smallest noise weight (trees).
pub const MIN_TREES: usize = 248;
/// Expander weight of the code.
const EXPANDER_WEIGHT: usize = 7;
/// Regular taps among them.
const REGULAR_TAPS: usize = 4;
/// Window of the convolution.
const WINDOW: usize = 24;
/// Outputs expanded per random stream (parallel work unit).
const EXPAND_CHUNK: usize = 1 << 14;

/// The sizes of one VOLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Correlations wanted (`k`).
    pub outputs: usize,
    /// Depth of each tree (`h`).
    pub depth: u32,
    /// Trees (`t`, the noise weight).
    pub trees: usize,
}

impl Shape {
    /// The shape for `outputs` correlations.
    pub fn new(outputs: usize) -> Self {
        let target = 2 * outputs.max(1);
        let mut depth = 1;
        while MIN_TREES << (depth + 1) <= target {
            depth += 1;
        }
        let trees = target.div_ceil(1 << depth).max(MIN_TREES);
        Self { outputs, depth, trees }
    }

    /// Leaves of one tree.
    pub fn leaves(&self) -> usize {
        1 << self.depth
    }

    /// `N`, the noise vector's length.
    pub fn noise_len(&self) -> usize {
        self.trees << self.depth
    }

    /// Correlated OTs the VOLE consumes: `h` per tree for the GGM levels,
    /// then 128 per tree for the base VOLE; rounded up to 128.
    pub fn cot_count(&self) -> usize {
        (self.trees * (self.depth as usize + 128)).div_ceil(128) * 128
    }

    /// Index of the correlated OT of tree `tree`'s level `level`.
    pub fn level_cot(&self, tree: usize, level: u32) -> usize {
        tree * self.depth as usize + level as usize
    }

    /// Index of the first of tree `tree`'s 128 base-VOLE correlated OTs.
    pub fn base_cot(&self, tree: usize) -> usize {
        self.trees * self.depth as usize + tree * 128
    }
}

const TREE_KEYS: [[u8; 16]; 2] = [*b"stayput/ggm/left", *b"stayput/ggm/rite"];

/// Expands one level: `next[2i+b] = AES_{K_b}(cur[i]) ⊕ cur[i]`.
fn expand_level(keys: &[Aes128; 2], cur: &[Gf], next: &mut [Gf]) {
    let mut blocks: Vec<GenericArray<u8, _>> = cur.iter().map(|x| GenericArray::from(x.to_le_bytes())).collect();
    for (side, key) in keys.iter().enumerate() {
        let mut out = blocks.clone();
        key.encrypt_blocks(&mut out);
        for (i, (block, x)) in out.iter().zip(cur).enumerate() {
            next[2 * i + side] = u128::from_le_bytes((*block).into()) ^ x;
        }
    }
    blocks.clear();
}

fn tree_keys() -> [Aes128; 2] {
    TREE_KEYS.map(|k| Aes128::new(&GenericArray::from(k)))
}

/// The sums of one level's left and right children.
fn level_sums(level: &[Gf]) -> [Gf; 2] {
    let mut sums = [0u128; 2];
    for pair in level.chunks_exact(2) {
        sums[0] ^= pair[0];
        sums[1] ^= pair[1];
    }
    sums
}

/// The masked level sums and the correction of one tree, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeMessage {
    /// Per level, both sums masked by the level's random OT.
    pub levels: Vec<[Gf; 2]>,
    /// `dⱼ = δⱼ + Σᵢ vⱼ[i]`.
    pub correction: Gf,
}

/// Random-OT mask: `SHA-256(key ‖ index ‖ x)[..16]`.
fn ot_mask(key: &[u8; 32], index: usize, x: Gf) -> Gf {
    let mut h = Sha256::new();
    h.update(key);
    h.update((index as u64).to_le_bytes());
    h.update(x.to_le_bytes());
    let d: [u8; 32] = h.finalize().into();
    u128::from_le_bytes(d[..16].try_into().expect("16 bytes"))
}

/// `Σₗ xˡ·rowsₗ` over 128 correlated OTs, `xˡ` the element with bit `l` set.
fn combine(rows: &[Gf]) -> Gf {
    rows.iter().enumerate().fold(0, |sum, (l, row)| sum ^ Multiplier::new(1 << l).mul(*row))
}

/// The responder's half: its leaves `v` (length `N`) and one message per
/// tree, from its correlated OTs `q` and `Δ`.
pub fn sender_expand(
    shape: &Shape,
    q: &[Gf],
    delta: Gf,
    mask_key: &[u8; 32],
    seeds: &[Gf],
) -> (Vec<Gf>, Vec<TreeMessage>) {
    let keys = tree_keys();
    let mut leaves = vec![0u128; shape.noise_len()];
    let messages = leaves
        .par_chunks_mut(shape.leaves())
        .zip(seeds)
        .enumerate()
        .map(|(tree, (leaves, seed))| {
            let mut cur = vec![*seed];
            let mut levels = Vec::with_capacity(shape.depth as usize);
            for level in 0..shape.depth {
                let mut next = vec![0u128; cur.len() * 2];
                expand_level(&keys, &cur, &mut next);
                let sums = level_sums(&next);
                let index = shape.level_cot(tree, level);
                let q = q[index];
                levels.push([sums[0] ^ ot_mask(mask_key, index, q), sums[1] ^ ot_mask(mask_key, index, q ^ delta)]);
                cur = next;
            }
            leaves.copy_from_slice(&cur);
            let base = shape.base_cot(tree);
            let delta_j = combine(&q[base..base + 128]);
            let correction = leaves.iter().fold(delta_j, |sum, leaf| sum ^ leaf);
            TreeMessage { levels, correction }
        })
        .collect();
    (leaves, messages)
}

/// What the requester chose for one tree: secret, never printed.
#[derive(Clone, Copy)]
pub struct Puncture {
    /// The punctured leaf `αⱼ`.
    pub point: usize,
    /// The noise value `βⱼ ≠ 0`.
    pub value: Gf,
}

impl std::fmt::Debug for Puncture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Puncture(<redacted>)")
    }
}

impl zeroize::Zeroize for Puncture {
    fn zeroize(&mut self) {
        self.point.zeroize();
        self.value.zeroize();
    }
}

/// The choice bits of the requester's correlated OTs for its punctures
/// (bit `i` of word `i/64`): `¬αⱼ,ₗ` for level `l` (most significant bit
/// of `αⱼ` first), then the bits of `βⱼ`.
pub fn choice_bits(shape: &Shape, punctures: &[Puncture]) -> Vec<u64> {
    let mut words = vec![0u64; shape.cot_count() / 64];
    let mut set = |i: usize| words[i / 64] |= 1 << (i % 64);
    for (tree, p) in punctures.iter().enumerate() {
        for level in 0..shape.depth {
            if (p.point >> (shape.depth - 1 - level)) & 1 == 0 {
                set(shape.level_cot(tree, level));
            }
        }
        for l in 0..128 {
            if (p.value >> l) & 1 == 1 {
                set(shape.base_cot(tree) + l);
            }
        }
    }
    words
}

/// The requester's half: `w = v + e·Δ` (length `N`) from its correlated
/// OTs `t`, its punctures and the responder's messages. The caller has
/// checked the message count and shapes.
pub fn receiver_expand(
    shape: &Shape,
    t: &[Gf],
    mask_key: &[u8; 32],
    punctures: &[Puncture],
    messages: &[TreeMessage],
) -> Vec<Gf> {
    let keys = tree_keys();
    let mut w = vec![0u128; shape.noise_len()];
    w.par_chunks_mut(shape.leaves()).zip(punctures).zip(messages).enumerate().for_each(
        |(tree, ((leaves, puncture), message))| {
            let depth = shape.depth;
            let mut cur = vec![0u128; 1];
            let mut path = 0usize; // the unknown node at the current level
            for level in 0..depth {
                let mut next = vec![0u128; cur.len() * 2];
                expand_level(&keys, &cur, &mut next);
                next[2 * path] = 0;
                next[2 * path + 1] = 0;
                let towards = (puncture.point >> (depth - 1 - level)) & 1;
                let away = 1 - towards;
                let index = shape.level_cot(tree, level);
                let sum = message.levels[level as usize][away] ^ ot_mask(mask_key, index, t[index]);
                let known = level_sums(&next)[away];
                next[2 * path + away] = sum ^ known;
                path = 2 * path + towards;
                cur = next;
            }
            leaves.copy_from_slice(&cur);
            let base = shape.base_cot(tree);
            let gamma = combine(&t[base..base + 128]);
            let others = leaves.iter().fold(0u128, |sum, leaf| sum ^ leaf);
            leaves[puncture.point] = message.correction ^ gamma ^ others;
        },
    );
    w
}

/// The compressing map of the expand-convolute code, from its public seed.
#[derive(Debug)]
pub struct Code {
    outputs: usize,
    seed: [u8; 32],
}

impl Code {
    /// The code for `shape`, its randomness drawn from `seed`.
    pub fn new(shape: &Shape, seed: [u8; 32]) -> Self {
        Self { outputs: shape.outputs, seed }
    }

    fn stream(&self, purpose: u8, index: u64) -> ChaCha8Rng {
        let mut seed = self.seed;
        seed[0] ^= purpose;
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(index);
        rng
    }

    /// `Enc(x)`: the first `k` elements of `x` plus the expanded
    /// convolution of the rest; `x` is used as scratch.
    pub fn encode(&self, x: &mut [Gf]) -> Vec<Gf> {
        let k = self.outputs;
        let (systematic, rest) = x.split_at_mut(k);
        for pass in 0..2 {
            self.convolve(rest, pass);
        }
        let len = rest.len();
        let rest = &*rest;
        let step = len / REGULAR_TAPS;
        let mut out = systematic.to_vec();
        out.par_chunks_mut(EXPAND_CHUNK).enumerate().for_each(|(chunk, out)| {
            let mut rng = self.stream(2, chunk as u64);
            let mut below = |n: usize| ((u64::from(rng.next_u32()) * n as u64) >> 32) as usize;
            for y in out {
                let mut sum = *y;
                for r in 0..REGULAR_TAPS {
                    sum ^= rest[r * step + below(step)];
                }
                for _ in REGULAR_TAPS..EXPANDER_WEIGHT {
                    sum ^= rest[below(len)];
                }
                *y = sum;
            }
        });
        out
    }

    /// One pass of the convolution: position `i` adds itself to the next
    /// 24 positions its random bits name and always to the 25th.
    fn convolve(&self, x: &mut [Gf], pass: u8) {
        let len = x.len();
        let mut rng = self.stream(pass, 0);
        for i in 0..len {
            let value = x[i];
            let mut bits = rng.next_u32() & ((1 << WINDOW) - 1);
            if i + WINDOW + 1 < len {
                while bits != 0 {
                    x[i + 1 + bits.trailing_zeros() as usize] ^= value;
                    bits &= bits - 1;
                }
                x[i + WINDOW + 1] ^= value;
            } else {
                while bits != 0 {
                    x[(i + 1 + bits.trailing_zeros() as usize) % len] ^= value;
                    bits &= bits - 1;
                }
                x[(i + WINDOW + 1) % len] ^= value;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::rr22::field::mul;

    fn random(rng: &mut impl RngCore) -> Gf {
        u128::from(rng.next_u64()) | (u128::from(rng.next_u64()) << 64)
    }

    /// Correlated OTs for `punctures` as IKNP would give them (the
    /// requester's `t`, the responder's `q`) and the trees' seeds.
    fn correlated_ots(
        shape: &Shape,
        punctures: &[Puncture],
        delta: Gf,
        rng: &mut impl RngCore,
    ) -> (Vec<Gf>, Vec<Gf>, Vec<Gf>) {
        let choices = choice_bits(shape, punctures);
        let t: Vec<Gf> = (0..shape.cot_count()).map(|_| random(rng)).collect();
        let chosen = |i: usize| (choices[i / 64] >> (i % 64)) & 1 == 1;
        let q = t.iter().enumerate().map(|(i, t)| if chosen(i) { t ^ delta } else { *t }).collect();
        let seeds = (0..shape.trees).map(|_| random(rng)).collect();
        (t, q, seeds)
    }

    #[test]
    fn shapes_keep_the_noise_weight_and_twice_the_outputs() {
        for outputs in [0, 1, 100, 5_000, 1 << 20, 1_153_536, 1 << 22] {
            let shape = Shape::new(outputs);
            assert!(shape.trees >= MIN_TREES);
            assert!(shape.noise_len() >= 2 * outputs, "{shape:?}");
            assert!(shape.trees < 2 * MIN_TREES + 2 || shape.depth == 1, "{shape:?}");
        }
        assert_eq!(Shape::new(1 << 20).depth, 13);
    }

    #[test]
    fn the_correlation_holds_before_and_after_compression() {
        let mut rng = ChaCha20Rng::seed_from_u64(21);
        let shape = Shape::new(3000);
        let delta = random(&mut rng);
        let mask_key = [9u8; 32];
        let punctures: Vec<Puncture> = (0..shape.trees)
            .map(|_| Puncture { point: rng.next_u32() as usize % shape.leaves(), value: random(&mut rng) | 1 })
            .collect();
        let (t, q, seeds) = correlated_ots(&shape, &punctures, delta, &mut rng);
        let (mut v, messages) = sender_expand(&shape, &q, delta, &mask_key, &seeds);
        let mut w = receiver_expand(&shape, &t, &mask_key, &punctures, &messages);
        let mut e = vec![0u128; shape.noise_len()];
        for (tree, p) in punctures.iter().enumerate() {
            e[tree * shape.leaves() + p.point] = p.value;
        }
        for i in 0..shape.noise_len() {
            assert_eq!(w[i], v[i] ^ mul(e[i], delta), "leaf {i}");
        }
        let code = Code::new(&shape, [4u8; 32]);
        let (a, b, c) = (code.encode(&mut e), code.encode(&mut v), code.encode(&mut w));
        assert_eq!(a.len(), 3000);
        for i in 0..3000 {
            assert_eq!(c[i], b[i] ^ mul(a[i], delta), "output {i}");
        }
        // A is dense: the compression spread the noise everywhere.
        assert!(a.iter().filter(|x| **x == 0).count() < 3);
    }

    #[test]
    fn a_wrong_delta_breaks_the_correlation() {
        let shape = Shape::new(600);
        let mut rng = ChaCha20Rng::seed_from_u64(22);
        let delta = random(&mut rng);
        let punctures: Vec<Puncture> =
            (0..shape.trees).map(|_| Puncture { point: 1, value: random(&mut rng) | 1 }).collect();
        let (t, q, seeds) = correlated_ots(&shape, &punctures, delta, &mut rng);
        let (v, messages) = sender_expand(&shape, &q, delta, &[0; 32], &seeds);
        let w = receiver_expand(&shape, &t, &[0; 32], &punctures, &messages);
        let other = delta ^ 2;
        assert_ne!(w[1], v[1] ^ mul(punctures[0].value, other));
    }
}
