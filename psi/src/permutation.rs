//! A party's secret random order over its own keys.

use rand::seq::SliceRandom;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroize;

/// A uniformly random permutation of `0..n` (Fisher–Yates), zeroized on
/// drop: the order in which a party sends its blinded keys must not reveal
/// the order of its input rows.
pub(crate) struct SecretPermutation(Vec<u32>);

impl SecretPermutation {
    /// `n` must fit in `u32`; session parameters guarantee it.
    pub(crate) fn random(n: usize, rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let n = u32::try_from(n).expect("session parameters bound set sizes to u32");
        let mut order: Vec<u32> = (0..n).collect();
        order.shuffle(rng);
        Self(order)
    }

    /// The key index sent at `position`.
    pub(crate) fn at(&self, position: usize) -> usize {
        self.0[position] as usize
    }
}

impl Drop for SecretPermutation {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for SecretPermutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretPermutation({} entries, <redacted>)", self.0.len())
    }
}
