//! A party's secret random order over its own keys, in constant memory.
//!
//! The order in which a party sends its blinded keys must not reveal the
//! order of its input rows, and storing a shuffled index list would cost
//! 4 bytes per key. Instead the order is a keyed pseudorandom permutation
//! of `0..n`: an 8-round balanced Feistel network over `2h`-bit integers
//! (the smallest even width covering `n - 1`) whose round function is
//! AES-128 under a fresh random key, restricted to `0..n` by cycle walking
//! (Black–Rogaway 2002): re-encrypt until the value falls below `n`. The
//! domain is less than `4n`, so fewer than four walks are expected.
//!
//! What an adversary could exploit is only the positions of common keys in
//! the stream, never input–output pairs of its choosing; a PRP with an
//! AES-based round function and 8 rounds leaves nothing to exploit there.

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroize;

const ROUNDS: u8 = 8;

/// A keyed permutation of `0..n`. The AES key schedule is zeroized on drop.
pub(crate) struct SecretPermutation {
    cipher: Aes128,
    n: u64,
    half_bits: u32,
}

impl SecretPermutation {
    /// A fresh random permutation of `0..n`.
    pub(crate) fn random(n: usize, rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut key = [0u8; 16];
        rng.fill_bytes(&mut key);
        let cipher = Aes128::new(&GenericArray::from(key));
        key.zeroize();
        let n = n as u64;
        let bits = u64::BITS - n.saturating_sub(1).leading_zeros();
        Self { cipher, n, half_bits: bits.div_ceil(2).max(1) }
    }

    /// The key index sent at `position` (`position < n`).
    pub(crate) fn at(&self, position: usize) -> usize {
        debug_assert!((position as u64) < self.n);
        let mut x = position as u64;
        loop {
            x = self.feistel(x);
            if x < self.n {
                return usize::try_from(x).expect("below n, which is a usize");
            }
        }
    }

    fn feistel(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut left, mut right) = (x >> self.half_bits, x & mask);
        for round in 0..ROUNDS {
            let mut block = [0u8; 16];
            block[0] = round;
            block[8..].copy_from_slice(&right.to_le_bytes());
            let mut block = GenericArray::from(block);
            self.cipher.encrypt_block(&mut block);
            let f = u64::from_le_bytes(block[..8].try_into().expect("16-byte block")) & mask;
            (left, right) = (right, left ^ f);
        }
        (left << self.half_bits) | right
    }
}

impl std::fmt::Debug for SecretPermutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretPermutation(n = {}, <redacted>)", self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn is_a_permutation_for_every_small_size() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        for n in (1..70).chain([255, 256, 257, 1000, 4097]) {
            let p = SecretPermutation::random(n, &mut rng);
            let mut seen = vec![false; n];
            for i in 0..n {
                let j = p.at(i);
                assert!(!seen[j], "n={n}: {j} twice");
                seen[j] = true;
            }
        }
    }

    #[test]
    fn different_keys_give_different_orders() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let a = SecretPermutation::random(1000, &mut rng);
        let b = SecretPermutation::random(1000, &mut rng);
        let same = (0..1000).filter(|&i| a.at(i) == b.at(i)).count();
        assert!(same < 20, "{same} fixed agreements");
        let moved = (0..1000).filter(|&i| a.at(i) != i).count();
        assert!(moved > 980, "{moved}");
        assert!(format!("{a:?}").contains("redacted"));
    }
}
