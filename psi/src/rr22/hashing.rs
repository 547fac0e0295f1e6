//! Everything both sides hash identically, keyed by the task and the
//! requester's seed: each key's OKVS row and value, the code's randomness,
//! the random-OT masks and the output hash.
//!
//! * **Key digest.** `d = SHA-256(K_key ‖ len(k) ‖ k)`: the value
//!   `h(k) = d[0..16]`, the row's start from `d[16..24]` and its band
//!   `AES_{K_band}(d[16..32])` — a random oracle and a pseudorandom
//!   permutation of disjoint bits.
//! * **Output.** `SHA-256(K_out ‖ z)[..ℓ]` of the decoded value `z`.
//!
//! `K_x = SHA-256(len ‖ label_x ‖ len ‖ T ‖ seed)`.

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use super::field::Gf;
use super::okvs::{self, Row};
use crate::group::TaskId;
use crate::keys::KeySet;
use crate::kkrt::hashing::session_key;

/// Statistical security of the false-positive bound, in bits.
pub const STATISTICAL_BITS: u32 = 40;

const KEY_LABEL: &[u8] = b"stayput/psi/rr22/v1/key";
const BAND_LABEL: &[u8] = b"stayput/psi/rr22/v1/band";
const CODE_LABEL: &[u8] = b"stayput/psi/rr22/v1/code";
const MASK_LABEL: &[u8] = b"stayput/psi/rr22/v1/ot-mask";
const OUTPUT_LABEL: &[u8] = b"stayput/psi/rr22/v1/output";

/// Keys digested by one worker at a time.
const CHUNK: usize = 4096;

/// Bytes of an output: `σ + log₂ n_A + log₂ n_B` bits, at most 16.
pub fn output_len(requester_len: u64, responder_len: u64) -> usize {
    let log = |x: u64| u64::BITS - x.max(1).saturating_sub(1).leading_zeros();
    let bits = STATISTICAL_BITS + log(requester_len) + log(responder_len);
    (bits.div_ceil(8) as usize).min(16)
}

/// The session's hash keys.
pub(crate) struct SessionHashes {
    key: [u8; 32],
    band: Aes128,
    output: [u8; 32],
    pub(crate) code_seed: [u8; 32],
    pub(crate) mask_key: [u8; 32],
    columns: u64,
}

impl Drop for SessionHashes {
    fn drop(&mut self) {
        self.key.zeroize();
        self.output.zeroize();
        self.mask_key.zeroize();
    }
}

impl SessionHashes {
    /// The keys of session `(task, seed)`, for a store of `columns`.
    pub(crate) fn new(task: &TaskId, seed: &[u8; 16], columns: u64) -> Self {
        let mut band_key = session_key(BAND_LABEL, task, seed);
        let band = Aes128::new(GenericArray::from_slice(&band_key[..16]));
        band_key.zeroize();
        Self {
            key: session_key(KEY_LABEL, task, seed),
            band,
            output: session_key(OUTPUT_LABEL, task, seed),
            code_seed: session_key(CODE_LABEL, task, seed),
            mask_key: session_key(MASK_LABEL, task, seed),
            columns,
        }
    }

    /// Every key's row and value, on all cores.
    pub(crate) fn digest_all<K: KeySet>(&self, keys: &K) -> Vec<(Row, Gf)> {
        let mut out = vec![(Row { start: 0, band: 0 }, 0u128); keys.len()];
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            let mut key = Vec::new();
            let mut blocks = Vec::with_capacity(chunk.len());
            let mut starts = Vec::with_capacity(chunk.len());
            for (i, slot) in chunk.iter_mut().enumerate() {
                keys.key_into(c * CHUNK + i, &mut key);
                let mut h = Sha256::new();
                h.update(self.key);
                h.update((key.len() as u64).to_le_bytes());
                h.update(&key);
                let mut d: [u8; 32] = h.finalize().into();
                slot.1 = u128::from_le_bytes(d[..16].try_into().expect("16 bytes"));
                starts.push(u64::from_le_bytes(d[16..24].try_into().expect("8 bytes")));
                blocks.push(GenericArray::clone_from_slice(&d[16..]));
                d.zeroize();
            }
            key.zeroize();
            self.band.encrypt_blocks(&mut blocks);
            for ((slot, start), block) in chunk.iter_mut().zip(starts).zip(&mut blocks) {
                slot.0 = okvs::row(self.columns, start, u128::from_le_bytes((*block).into()));
                block.zeroize();
            }
        });
        out
    }

    /// The output of decoded value `z`, truncated to `len` bytes.
    pub(crate) fn output(&self, z: Gf, len: usize) -> u128 {
        let mut h = Sha256::new();
        h.update(self.output);
        h.update(z.to_le_bytes());
        let d: [u8; 32] = h.finalize().into();
        let mut full = [0u8; 16];
        full[..len].copy_from_slice(&d[..len]);
        u128::from_le_bytes(full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_length_covers_the_comparisons() {
        assert_eq!(output_len(1 << 20, 1 << 20), 10);
        assert_eq!(output_len(1, 1), 5);
        assert_eq!(output_len(1 << 30, 1 << 30), 13);
    }
}
