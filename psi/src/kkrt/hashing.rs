//! Everything both sides hash identically: keys to a 128-bit identity and
//! three bins, the pseudorandom code, and the OPRF output.
//!
//! Each hash is keyed by a 32-byte session key `K_x = SHA-256(DST_x ‖ T ‖
//! seed)`, so hashing a short key costs one SHA-256 block and an output two.
//!
//! * **Key digest.** `d = SHA-256(K_key ‖ len(k) ‖ k)`: the identity
//!   `k̂ = d[0..16]` and the three bins `hᵢ = ⌊wᵢ·m / 2⁶⁴⌋` of the words
//!   `w₀ = d[16..24]`, `w₁ = d[24..32]`, `w₂ = d[8..16]` — disjoint bits of a
//!   random oracle, so independent hash functions for cuckoo hashing.
//! * **Code.** `C(k̂, i) = AES_{K₀}(k̂ ⊕ i) ‖ … ‖ AES_{K₃}(k̂ ⊕ i)`, 512
//!   bits, with `Kₗ` derived from `T` and the seed: a pseudorandom code
//!   (KKRT §4), which at 512 bits keeps every pair of codewords in a session
//!   at Hamming distance ≥ 128 except with negligible probability (KKRT
//!   Table 2 asks for 448 bits at 2^24 items and σ = 40).
//! * **Output.** `F = SHA-256(K_out ‖ b ‖ row)[..ℓ]` for bin
//!   `b`, truncated to [`output_len`] bytes.

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use super::ot::Row;
use crate::PsiError;
use crate::group::TaskId;
use crate::keys::KeySet;

/// Hash functions per key in cuckoo hashing.
pub const HASHES: usize = 3;
/// Bins per key of the requester: 1.27·n (Pinkas–Schneider–Zohner 2018 give
/// a failure probability below 2^-40 for three hash functions, no stash).
const BIN_FACTOR_PERMILLE: u64 = 1270;
/// Statistical security of the false-positive bound, in bits.
pub const STATISTICAL_BITS: u32 = 40;

const KEY_LABEL: &[u8] = b"stayput/psi/kkrt/v1/key";
const CODE_LABEL: &[u8] = b"stayput/psi/kkrt/v1/code";
const OUTPUT_LABEL: &[u8] = b"stayput/psi/kkrt/v1/output";

/// Bins for a requester with `n` keys: 1.27·n rounded up to whole AES
/// blocks of 128 bins, at least one block.
pub fn bin_count(n: u64) -> u64 {
    let bins = (n * BIN_FACTOR_PERMILLE).div_ceil(1000).max(1);
    bins.div_ceil(128) * 128
}

/// Bytes of an OPRF output: `σ + log₂(n_A) + log₂(3·n_B)` bits, so that the
/// `n_A · 3·n_B` comparisons the requester makes yield a false match with
/// probability at most 2^-σ.
pub fn output_len(requester_len: u64, responder_len: u64) -> usize {
    let log = |x: u64| u64::BITS - x.max(1).saturating_sub(1).leading_zeros();
    let bits = STATISTICAL_BITS + log(requester_len) + log(responder_len.saturating_mul(HASHES as u64));
    bits.div_ceil(8) as usize
}

/// `SHA-256(label ‖ T ‖ seed)`, lengths prefixed.
pub(crate) fn session_key(label: &[u8], task: &TaskId, seed: &[u8; 16]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((label.len() as u64).to_le_bytes());
    h.update(label);
    h.update((task.as_bytes().len() as u64).to_le_bytes());
    h.update(task.as_bytes());
    h.update(seed);
    h.finalize().into()
}

/// A hasher that starts with a session key.
fn keyed(label: &[u8], task: &TaskId, seed: &[u8; 16]) -> Sha256 {
    let mut h = Sha256::new();
    h.update(session_key(label, task, seed));
    h
}

/// A key's identity and bins.
#[derive(Clone, Copy)]
pub(crate) struct Digested {
    pub(crate) id: [u8; 16],
    words: [u64; HASHES],
}

impl Digested {
    /// Bin of hash function `i` among `bins`.
    pub(crate) fn bin(&self, i: usize, bins: u64) -> u32 {
        ((u128::from(self.words[i]) * u128::from(bins)) >> 64) as u32
    }
}

/// The session's hashers, from the task and the requester's seed.
#[derive(Clone)]
pub(crate) struct SessionHashes {
    key: Sha256,
    output: Sha256,
    code: [Aes128; 4],
}

impl SessionHashes {
    pub(crate) fn new(task: &TaskId, seed: &[u8; 16]) -> Self {
        let code = std::array::from_fn(|l| {
            let mut h = keyed(CODE_LABEL, task, seed);
            h.update([l as u8]);
            let digest = h.finalize();
            Aes128::new(GenericArray::from_slice(&digest[..16]))
        });
        Self { key: keyed(KEY_LABEL, task, seed), output: keyed(OUTPUT_LABEL, task, seed), code }
    }

    pub(crate) fn digest(&self, key: &[u8]) -> Digested {
        let mut h = self.key.clone();
        h.update((key.len() as u64).to_le_bytes());
        h.update(key);
        let d: [u8; 32] = h.finalize().into();
        let word = |at: usize| u64::from_le_bytes(d[at..at + 8].try_into().expect("8 bytes"));
        Digested { id: d[..16].try_into().expect("16 bytes"), words: [word(16), word(24), word(8)] }
    }

    /// Every key's digest, on all cores.
    pub(crate) fn digest_all<K: KeySet>(&self, keys: &K) -> Vec<Digested> {
        (0..keys.len())
            .into_par_iter()
            .map_init(Vec::new, |buf, i| {
                keys.key_into(i, buf);
                let d = self.digest(buf);
                buf.zeroize();
                d
            })
            .collect()
    }

    /// `C(k̂, i)` for every `(k̂, i)`, into `rows`: each AES key runs over
    /// the whole batch, so the cipher's pipeline stays full.
    pub(crate) fn codes(&self, inputs: &[([u8; 16], usize)], rows: &mut [Row]) {
        let mut blocks: Vec<_> = Vec::with_capacity(inputs.len());
        for (l, cipher) in self.code.iter().enumerate() {
            blocks.clear();
            blocks.extend(inputs.iter().map(|(id, i)| {
                let mut input = *id;
                input[15] ^= *i as u8 + 1;
                GenericArray::from(input)
            }));
            cipher.encrypt_blocks(&mut blocks);
            for (block, row) in blocks.iter().zip(rows.iter_mut()) {
                row[2 * l] = u64::from_le_bytes(block[..8].try_into().expect("8 bytes"));
                row[2 * l + 1] = u64::from_le_bytes(block[8..].try_into().expect("8 bytes"));
            }
        }
    }

    /// The OPRF output of bin `bin` whose row is `row`, as a number (the
    /// first `len` bytes, little-endian).
    pub(crate) fn output(&self, bin: u32, row: &Row, len: usize) -> u128 {
        let mut h = self.output.clone();
        h.update(bin.to_le_bytes());
        for word in row {
            h.update(word.to_le_bytes());
        }
        let d = h.finalize();
        let mut out = [0u8; 16];
        out[..len].copy_from_slice(&d[..len]);
        u128::from_le_bytes(out)
    }
}

/// A cuckoo table: per bin, the key placed there and by which hash function.
pub(crate) struct CuckooTable {
    /// `(key index, hash function)` per bin; `None` for an empty bin.
    pub(crate) slots: Vec<Option<(u32, u8)>>,
}

/// Evictions before an insertion gives up.
const MAX_EVICTIONS: usize = 1000;

impl CuckooTable {
    /// Places every key in one of its three bins (random-walk insertion),
    /// or fails; `choose` picks the bin to evict from.
    pub(crate) fn build(digests: &[Digested], bins: u64, mut choose: impl FnMut() -> usize) -> Result<Self, PsiError> {
        let mut slots: Vec<Option<(u32, u8)>> = vec![None; bins as usize];
        for start in 0..digests.len() as u32 {
            let mut current = (start, 0u8);
            let mut placed = false;
            for _ in 0..MAX_EVICTIONS {
                let digest = &digests[current.0 as usize];
                if let Some(i) = (0..HASHES).find(|&i| slots[digest.bin(i, bins) as usize].is_none()) {
                    slots[digest.bin(i, bins) as usize] = Some((current.0, i as u8));
                    placed = true;
                    break;
                }
                let i = choose() % HASHES;
                let bin = digest.bin(i, bins) as usize;
                let evicted = slots[bin].replace((current.0, i as u8)).expect("every candidate bin is full");
                current = evicted;
            }
            if !placed {
                return Err(PsiError::CuckooFailed { keys: digests.len() as u64 });
            }
        }
        Ok(Self { slots })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_formulas() {
        assert_eq!(bin_count(0), 128);
        assert_eq!(bin_count(100), 128);
        assert_eq!(bin_count(1 << 20), 1_331_712);
        // 40 + 20 + 22 bits for 2^20 × 2^20.
        assert_eq!(output_len(1 << 20, 1 << 20), 11);
        assert_eq!(output_len(0, 0), 5);
        assert!(output_len(u64::from(u32::MAX), u64::from(u32::MAX)) <= 16);
    }

    #[test]
    fn every_key_finds_a_bin() {
        let task = TaskId::new("cuckoo").unwrap();
        let hashes = SessionHashes::new(&task, &[7; 16]);
        let n = 1u32 << 16;
        let digests: Vec<_> = (0..n).map(|k| hashes.digest(&k.to_le_bytes())).collect();
        let mut counter = 0usize;
        let table = CuckooTable::build(&digests, bin_count(n.into()), || {
            counter = counter.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            counter >> 33
        })
        .unwrap();
        let mut seen = vec![false; n as usize];
        for (bin, slot) in table.slots.iter().enumerate() {
            if let Some((key, i)) = slot {
                assert_eq!(digests[*key as usize].bin(*i as usize, table.slots.len() as u64) as usize, bin);
                assert!(!seen[*key as usize]);
                seen[*key as usize] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }
}
