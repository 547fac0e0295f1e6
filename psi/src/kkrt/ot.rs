//! The oblivious-transfer layer of KKRT: 512 base OTs over Ristretto255,
//! their expansion into a 512-column matrix by AES-CTR, and the bit-matrix
//! transposition that turns the columns into per-bin rows.
//!
//! **Base OT** (Chou–Orlandi "simplest OT", semi-honest): the PSI requester,
//! as base-OT *sender*, draws `a` and sends `A = a·G`; the responder, with
//! choice bit `sⱼ`, draws `bⱼ` and sends `Bⱼ = bⱼ·G + sⱼ·A`. The sender's
//! seeds are `kⱼ⁰ = H(j, A, Bⱼ, a·Bⱼ)` and `kⱼ¹ = H(j, A, Bⱼ, a·(Bⱼ − A))`;
//! the receiver's is `H(j, A, Bⱼ, bⱼ·A) = kⱼ^{sⱼ}`. `Bⱼ` is uniform whatever
//! `sⱼ`, so the requester learns nothing of `s`; the responder cannot
//! compute `kⱼ^{1−sⱼ}` without solving CDH.
//!
//! **Expansion.** Seed `kⱼ` keys AES-128, and column `j` of the matrix is
//! `AES_{kⱼ}(0) ‖ AES_{kⱼ}(1) ‖ …`, 128 bins per block: bin `b` is bit
//! `b mod 128` (little-endian) of block `⌊b/128⌋`. Any range of bins can be
//! expanded on its own, which is what lets both sides stream the matrix.

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::PsiError;
use crate::group::{POINT_LEN, TaskId, decode_point};

/// Columns of the OT-extension matrix: the width of the pseudorandom code.
pub const WIDTH: usize = 512;
/// 64-bit words in one row of the matrix.
pub const ROW_WORDS: usize = WIDTH / 64;
/// Bytes in one row of the matrix.
pub const ROW_BYTES: usize = WIDTH / 8;

/// One row of the matrix (one bin): column `j` is bit `j mod 64` of word
/// `⌊j/64⌋`.
pub type Row = [u64; ROW_WORDS];

const SEED_LABEL: &[u8] = b"stayput/psi/kkrt/v1/base-ot";

/// The requester's half of the base OTs: the secret `a`.
pub(crate) struct BaseOtSender {
    label: &'static [u8],
    a: Scalar,
    big_a: RistrettoPoint,
    big_a_bytes: [u8; POINT_LEN],
}

impl Drop for BaseOtSender {
    fn drop(&mut self) {
        self.a.zeroize();
    }
}

/// Both seeds of each base OT, on the requester's side.
pub(crate) type SeedPairs = Vec<([u8; 16], [u8; 16])>;

impl BaseOtSender {
    pub(crate) fn new(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        Self::labelled(SEED_LABEL, rng)
    }

    /// A sender whose seeds are bound to `label` (one per protocol).
    pub(crate) fn labelled(label: &'static [u8], rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let a = Scalar::random(rng);
        let big_a = &a * RISTRETTO_BASEPOINT_TABLE;
        Self { label, a, big_a, big_a_bytes: big_a.compress().to_bytes() }
    }

    /// `A`, for the setup message.
    pub(crate) fn point(&self) -> [u8; POINT_LEN] {
        self.big_a_bytes
    }

    /// Both seeds of every base OT from the responder's `Bⱼ`.
    pub(crate) fn seeds(&self, task: &TaskId, choices: &[[u8; POINT_LEN]]) -> Result<SeedPairs, PsiError> {
        choices
            .par_iter()
            .enumerate()
            .map(|(j, b_bytes)| {
                let b = decode_point(b_bytes, j)?;
                let k0 = seed(self.label, task, j, &self.big_a_bytes, b_bytes, &(self.a * b));
                let k1 = seed(self.label, task, j, &self.big_a_bytes, b_bytes, &(self.a * (b - self.big_a)));
                Ok((k0, k1))
            })
            .collect()
    }
}

/// The choice bits, the points `Bⱼ` and the chosen seeds.
pub(crate) type BaseOtReceived = (Row, Vec<[u8; POINT_LEN]>, Vec<[u8; 16]>);

/// The responder's base OTs: its secret choice bits `s`, the points `Bⱼ`
/// for the requester, and the seeds `kⱼ^{sⱼ}`.
pub(crate) fn base_ot_receive(
    task: &TaskId,
    a_bytes: &[u8; POINT_LEN],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<BaseOtReceived, PsiError> {
    let mut choices: Row = [0; ROW_WORDS];
    for word in &mut choices {
        *word = rng.next_u64();
    }
    let (points, seeds) = base_ot_receive_chosen(SEED_LABEL, task, a_bytes, WIDTH, |j| bit(&choices, j), rng)?;
    Ok((choices, points, seeds))
}

/// The points `Bⱼ` for the sender and the seeds the receiver chose.
pub(crate) type ChosenSeeds = (Vec<[u8; POINT_LEN]>, Vec<[u8; 16]>);

/// `count` base OTs received with the choice bits `choice(j)`: the points
/// `Bⱼ` for the sender and the seeds `kⱼ^{choice(j)}`, bound to `label`.
pub(crate) fn base_ot_receive_chosen(
    label: &[u8],
    task: &TaskId,
    a_bytes: &[u8; POINT_LEN],
    count: usize,
    choice: impl Fn(usize) -> bool + Sync,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<ChosenSeeds, PsiError> {
    let big_a = decode_point(a_bytes, 0)?;
    let mut secrets: Vec<Scalar> = (0..count).map(|_| Scalar::random(rng)).collect();
    let out: Vec<([u8; POINT_LEN], [u8; 16])> = secrets
        .par_iter()
        .enumerate()
        .map(|(j, b)| {
            let mut point = b * RISTRETTO_BASEPOINT_TABLE;
            if choice(j) {
                point += big_a;
            }
            let b_bytes = point.compress().to_bytes();
            (b_bytes, seed(label, task, j, a_bytes, &b_bytes, &(b * big_a)))
        })
        .collect();
    secrets.zeroize();
    Ok(out.into_iter().unzip())
}

fn seed(
    label: &[u8],
    task: &TaskId,
    j: usize,
    a: &[u8; POINT_LEN],
    b: &[u8; POINT_LEN],
    shared: &RistrettoPoint,
) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update((label.len() as u64).to_le_bytes());
    h.update(label);
    h.update((task.as_bytes().len() as u64).to_le_bytes());
    h.update(task.as_bytes());
    h.update((j as u32).to_le_bytes());
    h.update(a);
    h.update(b);
    h.update(CompressedRistretto::as_bytes(&shared.compress()));
    let mut digest: [u8; 32] = h.finalize().into();
    let out = digest[..16].try_into().expect("16 of 32 bytes");
    digest.zeroize();
    out
}

/// Bit `j` of a row.
pub(crate) fn bit(row: &Row, j: usize) -> bool {
    (row[j / 64] >> (j % 64)) & 1 == 1
}

/// One AES-CTR stream per column: expands the base-OT seeds into any range
/// of the matrix's columns. The key schedules are zeroized on drop (the
/// `aes` crate's `zeroize` feature).
pub(crate) struct Expander {
    ciphers: Vec<Aes128>,
}

/// Bins per AES block.
pub(crate) const BLOCK_BINS: usize = 128;

impl Expander {
    pub(crate) fn new(seeds: impl Iterator<Item = [u8; 16]>) -> Self {
        let expander = Self {
            ciphers: seeds
                .map(|mut s| {
                    let cipher = Aes128::new(&GenericArray::from(s));
                    s.zeroize();
                    cipher
                })
                .collect(),
        };
        assert_eq!(expander.ciphers.len(), WIDTH, "one seed per column");
        expander
    }

    /// Rows `first_bin .. first_bin + count` of the matrix (`first_bin` and
    /// `count` multiples of [`BLOCK_BINS`]) into `rows`.
    pub(crate) fn rows(&self, first_bin: usize, rows: &mut [Row]) {
        debug_assert!(first_bin.is_multiple_of(BLOCK_BINS) && rows.len().is_multiple_of(BLOCK_BINS));
        let blocks = rows.len() / BLOCK_BINS;
        let words = blocks * 2;
        // Column-major: column j's bins as `words` little-endian u64s.
        let mut columns = vec![0u64; WIDTH * words];
        let first_block = (first_bin / BLOCK_BINS) as u128;
        let mut buffer = vec![GenericArray::default(); blocks];
        for (cipher, column) in self.ciphers.iter().zip(columns.chunks_exact_mut(words)) {
            for (i, block) in buffer.iter_mut().enumerate() {
                *block = GenericArray::from((first_block + i as u128).to_le_bytes());
            }
            cipher.encrypt_blocks(&mut buffer);
            for (block, pair) in buffer.iter().zip(column.chunks_exact_mut(2)) {
                pair[0] = u64::from_le_bytes(block[..8].try_into().expect("8 bytes"));
                pair[1] = u64::from_le_bytes(block[8..].try_into().expect("8 bytes"));
            }
        }
        transpose(&columns, words, rows);
        columns.zeroize();
        for block in &mut buffer {
            block.zeroize();
        }
    }
}

/// Transposes `WIDTH` columns of `words` u64s each into `64·words` rows.
pub(crate) fn transpose(columns: &[u64], words: usize, rows: &mut [Row]) {
    let mut tile = [0u64; 64];
    for w in 0..words {
        for c in 0..ROW_WORDS {
            for (k, t) in tile.iter_mut().enumerate() {
                *t = columns[(c * 64 + k) * words + w];
            }
            transpose64(&mut tile);
            for (t, row) in tile.iter().zip(&mut rows[w * 64..(w + 1) * 64]) {
                row[c] = *t;
            }
        }
    }
    tile.zeroize();
}

/// In-place transposition of a 64×64 bit matrix: bit `t` of `a[k]` moves to
/// bit `k` of `a[t]` (recursive block swaps, six rounds of masks).
pub(crate) fn transpose64(a: &mut [u64; 64]) {
    let mut j = 32;
    let mut mask: u64 = 0x0000_0000_FFFF_FFFF;
    while j != 0 {
        let mut k = 0;
        while k < 64 {
            let t = ((a[k] >> j) ^ a[k + j]) & mask;
            a[k] ^= t << j;
            a[k + j] ^= t;
            k = (k + j + 1) & !j;
        }
        j >>= 1;
        mask ^= mask << j;
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    #[test]
    fn transpose64_matches_the_definition() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let original: [u64; 64] = std::array::from_fn(|_| rng.next_u64());
        let mut a = original;
        transpose64(&mut a);
        for (k, column) in original.iter().enumerate() {
            for (t, row) in a.iter().enumerate() {
                assert_eq!((row >> k) & 1, (column >> t) & 1);
            }
        }
    }

    #[test]
    fn base_ots_deliver_the_chosen_seed_only() {
        let task = TaskId::new("ot-test").unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let sender = BaseOtSender::new(&mut rng);
        let (choices, points, chosen) = base_ot_receive(&task, &sender.point(), &mut rng).unwrap();
        let pairs = sender.seeds(&task, &points).unwrap();
        assert_eq!(pairs.len(), WIDTH);
        for (j, ((k0, k1), k)) in pairs.iter().zip(&chosen).enumerate() {
            let (right, wrong) = if bit(&choices, j) { (k1, k0) } else { (k0, k1) };
            assert_eq!(right, k);
            assert_ne!(wrong, k);
        }
    }

    #[test]
    fn rows_of_a_range_equal_the_same_rows_of_the_whole() {
        let expander = Expander::new((0..WIDTH).map(|i| [i as u8; 16]));
        let mut whole = vec![[0u64; ROW_WORDS]; 512];
        expander.rows(0, &mut whole);
        let mut part = vec![[0u64; ROW_WORDS]; 256];
        expander.rows(256, &mut part);
        assert_eq!(&whole[256..], &part[..]);
        // Row b, column j is bit b of column j's stream.
        let mut block = GenericArray::from(2u128.to_le_bytes());
        Aes128::new(&GenericArray::from([5u8; 16])).encrypt_block(&mut block);
        let stream = u128::from_le_bytes(block.into());
        for (b, row) in whole[256..384].iter().enumerate() {
            assert_eq!(bit(row, 5), (stream >> b) & 1 == 1);
        }
    }
}
