//! Correlated oblivious transfer by IKNP extension (Ishai–Kilian–Nissim–
//! Petrank 2003) of 128 base OTs: the requester ends with rows `tᵢ` and the
//! choice bits `rᵢ` it picked, the responder with `qᵢ = tᵢ ⊕ rᵢ·Δ` for its
//! secret `Δ ∈ GF(2^128)` — the responder's base-OT choice bits.
//!
//! The requester, as base-OT *sender*, holds both seeds `kⱼ⁰, kⱼ¹` of each
//! column `j`; it sends `uⱼ = G(kⱼ⁰) ⊕ G(kⱼ¹) ⊕ r`, and the responder
//! computes `G(kⱼ^{Δⱼ}) ⊕ Δⱼ·uⱼ = G(kⱼ⁰) ⊕ Δⱼ·r`. Row `i` of the transposed
//! matrices gives the correlation. `G` is AES-128 in counter mode under the
//! seed, as in [`crate::kkrt::ot`]. The responder sees only `uⱼ`, masked by
//! `G(kⱼ^{1−Δⱼ})`, which it cannot compute; the requester never sees `Δ`.

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use rayon::prelude::*;
use zeroize::Zeroize;

use super::field::Gf;
use crate::kkrt::ot::transpose64;

/// Base OTs, and bits of `Δ`.
pub const KAPPA: usize = 128;

/// Column `j`'s stream: `words` little-endian u64s of AES-CTR under a seed.
fn stream(cipher: &Aes128, words: usize, out: &mut [u64]) {
    let mut blocks: Vec<GenericArray<u8, _>> =
        (0..words.div_ceil(2)).map(|i| GenericArray::from((i as u128).to_le_bytes())).collect();
    cipher.encrypt_blocks(&mut blocks);
    for (i, word) in out.iter_mut().enumerate().take(words) {
        let block = &blocks[i / 2];
        let half = if i % 2 == 0 { &block[..8] } else { &block[8..] };
        *word = u64::from_le_bytes(half.try_into().expect("8 bytes"));
    }
    for block in &mut blocks {
        block.zeroize();
    }
}

fn ciphers(seeds: impl Iterator<Item = [u8; 16]>) -> Vec<Aes128> {
    seeds
        .map(|mut seed| {
            let cipher = Aes128::new(&GenericArray::from(seed));
            seed.zeroize();
            cipher
        })
        .collect()
}

/// Transposes 128 columns of `words` u64s into `64·words` rows.
fn transpose(columns: &[u64], words: usize) -> Vec<Gf> {
    let mut rows = vec![0u128; words * 64];
    rows.par_chunks_mut(64).enumerate().for_each(|(w, rows)| {
        let mut tile = [0u64; 64];
        for half in 0..2 {
            for (k, t) in tile.iter_mut().enumerate() {
                *t = columns[(half * 64 + k) * words + w];
            }
            transpose64(&mut tile);
            for (row, t) in rows.iter_mut().zip(&tile) {
                *row |= u128::from(*t) << (64 * half);
            }
        }
        tile.zeroize();
    });
    rows
}

/// The requester's half: both seeds of every base OT.
pub(crate) struct CotReceiver {
    zero: Vec<Aes128>,
    one: Vec<Aes128>,
}

impl CotReceiver {
    /// From the base-OT seed pairs, one per column.
    pub(crate) fn new(pairs: Vec<([u8; 16], [u8; 16])>) -> Self {
        debug_assert_eq!(pairs.len(), KAPPA);
        let (zero, one): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        Self { zero: ciphers(zero.into_iter()), one: ciphers(one.into_iter()) }
    }

    /// Correlations for the choice bits `choices` (bit `i` of word `i/64`;
    /// a multiple of 64 bits): the corrections `u` for the responder
    /// (column-major, `choices.len()` words a column) and the rows `tᵢ`.
    pub(crate) fn extend(&self, choices: &[u64]) -> (Vec<u64>, Vec<Gf>) {
        let words = choices.len();
        let mut t = vec![0u64; KAPPA * words];
        let mut u = vec![0u64; KAPPA * words];
        t.par_chunks_mut(words).zip(u.par_chunks_mut(words)).zip(self.zero.par_iter().zip(&self.one)).for_each(
            |((t, u), (zero, one))| {
                stream(zero, words, t);
                stream(one, words, u);
                for ((u, t), r) in u.iter_mut().zip(t.iter()).zip(choices) {
                    *u ^= *t ^ r;
                }
            },
        );
        let rows = transpose(&t, words);
        t.zeroize();
        (u, rows)
    }
}

/// The responder's half: `Δ` and the seeds it chose.
pub(crate) struct CotSender {
    delta: Gf,
    chosen: Vec<Aes128>,
}

impl Drop for CotSender {
    fn drop(&mut self) {
        self.delta.zeroize();
    }
}

impl CotSender {
    /// From `Δ` (the base-OT choice bits) and the seeds it chose.
    pub(crate) fn new(delta: Gf, seeds: Vec<[u8; 16]>) -> Self {
        debug_assert_eq!(seeds.len(), KAPPA);
        Self { delta, chosen: ciphers(seeds.into_iter()) }
    }

    /// The rows `qᵢ = tᵢ ⊕ rᵢ·Δ` from the requester's corrections
    /// (column-major, `words` u64s a column).
    pub(crate) fn extend(&self, corrections: &[u64], words: usize) -> Vec<Gf> {
        debug_assert_eq!(corrections.len(), KAPPA * words);
        let mut q = vec![0u64; KAPPA * words];
        q.par_chunks_mut(words).zip(corrections.par_chunks(words)).zip(self.chosen.par_iter()).enumerate().for_each(
            |(j, ((q, u), cipher))| {
                stream(cipher, words, q);
                if (self.delta >> j) & 1 == 1 {
                    for (q, u) in q.iter_mut().zip(u) {
                        *q ^= u;
                    }
                }
            },
        );
        let rows = transpose(&q, words);
        q.zeroize();
        rows
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};

    use super::*;

    #[test]
    fn rows_are_correlated_by_delta_at_the_chosen_bits() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let delta = u128::from(rng.next_u64()) | (u128::from(rng.next_u64()) << 64);
        let pairs: Vec<([u8; 16], [u8; 16])> = (0..KAPPA)
            .map(|_| {
                let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
                rng.fill_bytes(&mut a);
                rng.fill_bytes(&mut b);
                (a, b)
            })
            .collect();
        let chosen = pairs.iter().enumerate().map(|(j, (a, b))| if (delta >> j) & 1 == 1 { *b } else { *a }).collect();
        let choices: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        let (u, t) = CotReceiver::new(pairs).extend(&choices);
        let q = CotSender::new(delta, chosen).extend(&u, choices.len());
        assert_eq!(t.len(), 320);
        for (i, (t, q)) in t.iter().zip(&q).enumerate() {
            let r = (choices[i / 64] >> (i % 64)) & 1 == 1;
            assert_eq!(*q, if r { t ^ delta } else { *t }, "row {i}");
        }
        assert_ne!(t[0], t[1]);
    }
}
