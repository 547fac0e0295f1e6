//! Additive secret sharing of a statistics vector among the participating
//! nodes (sans-IO), and the requester's reconstruction of the pooled sum.
//!
//! Protocol (semi-honest; n ≥ 2 contributing sites, each also an aggregator):
//! 1. Site i encodes its vector v_i in the scalar field and draws n − 1
//!    uniformly random vectors; the n-th share is v_i minus their sum. It
//!    keeps one share and sends share j to site j ([`split`]).
//! 2. Site j adds the shares it received from every site, its own included
//!    ([`Aggregator`]) — a uniformly random vector unless all n − 1 other
//!    sites collude — and sends the partial sum to the requester.
//! 3. The requester adds the n partial sums ([`Reconstruction`]): Σ v_i,
//!    the pooled vector, and nothing else.
//!
//! What each party learns: a site, nothing beyond its own vector (every
//! share it sees is uniform); the requester, the pooled vector; a coalition
//! of all sites but one, that one site's vector — the best any summation
//! protocol can do. Any missing or malformed share or partial sum aborts
//! (the aggregator and the reconstruction refuse to finish), so a
//! partial result is never released. Blinding factors of the sites'
//! commitments are shared the same way ([`split_scalars`]) so that the
//! pooled opening can be checked against the commitments' product.

use std::collections::BTreeMap;

use curve25519_dalek::scalar::Scalar;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroize;

use crate::MpcError;
use crate::fixed::{from_scalar, to_scalar};

/// Most entries a shared vector may have.
pub const MAX_ENTRIES: usize = 1 << 16;

/// One share of a vector (zeroized on drop).
#[derive(Clone, PartialEq, Eq)]
pub struct Share(pub Vec<Scalar>);

impl Drop for Share {
    fn drop(&mut self) {
        for s in &mut self.0 {
            s.zeroize();
        }
    }
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share({} entries, redacted)", self.0.len())
    }
}

impl Share {
    /// 32 bytes per entry.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(Scalar::to_bytes).collect()
    }

    /// Decodes `expected` canonical scalars, checking the length first.
    pub fn from_bytes(bytes: &[u8], expected: usize) -> Result<Self, MpcError> {
        if expected > MAX_ENTRIES || bytes.len() != expected * 32 {
            return Err(MpcError::Shape { expected: expected * 32, got: bytes.len() });
        }
        bytes
            .chunks_exact(32)
            .map(|c| {
                Option::<Scalar>::from(Scalar::from_canonical_bytes(c.try_into().expect("32 bytes")))
                    .ok_or(MpcError::NonCanonical)
            })
            .collect::<Result<_, _>>()
            .map(Share)
    }
}

/// Splits field elements into `parties` additive shares.
pub fn split_scalars(
    values: &[Scalar],
    parties: usize,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<Share>, MpcError> {
    if parties < 2 {
        return Err(MpcError::TooFewParties(parties));
    }
    if values.len() > MAX_ENTRIES {
        return Err(MpcError::Shape { expected: MAX_ENTRIES, got: values.len() });
    }
    let mut shares: Vec<Share> =
        (0..parties - 1).map(|_| Share(values.iter().map(|_| Scalar::random(rng)).collect())).collect();
    let last = values.iter().enumerate().map(|(k, v)| shares.iter().fold(*v, |acc, s| acc - s.0[k])).collect();
    shares.push(Share(last));
    Ok(shares)
}

/// Splits an integer vector into `parties` additive shares.
pub fn split(vector: &[i128], parties: usize, rng: &mut (impl RngCore + CryptoRng)) -> Result<Vec<Share>, MpcError> {
    let encoded: Vec<Scalar> = vector.iter().map(|v| to_scalar(*v)).collect();
    split_scalars(&encoded, parties, rng)
}

/// Adds shares from a known set of parties; finishes only with all of them.
#[derive(Debug)]
pub struct Aggregator {
    expected: Vec<String>,
    len: usize,
    received: BTreeMap<String, Share>,
}

fn add_into(sum: &mut [Scalar], share: &Share) {
    for (s, v) in sum.iter_mut().zip(&share.0) {
        *s += v;
    }
}

impl Aggregator {
    /// Expects one share of `len` entries from each of `parties`.
    pub fn new(parties: &[String], len: usize) -> Self {
        Self { expected: parties.to_vec(), len, received: BTreeMap::new() }
    }

    /// Takes `from`'s share.
    pub fn absorb(&mut self, from: &str, share: Share) -> Result<(), MpcError> {
        if !self.expected.iter().any(|p| p == from) {
            return Err(MpcError::UnexpectedParty(from.into()));
        }
        if share.0.len() != self.len {
            return Err(MpcError::Shape { expected: self.len, got: share.0.len() });
        }
        if self.received.contains_key(from) {
            return Err(MpcError::Duplicate(from.into()));
        }
        self.received.insert(from.into(), share);
        Ok(())
    }

    /// The partial sum, once every party's share is in.
    pub fn finish(self) -> Result<Share, MpcError> {
        let missing: Vec<&String> = self.expected.iter().filter(|p| !self.received.contains_key(*p)).collect();
        if !missing.is_empty() {
            return Err(MpcError::Missing(missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")));
        }
        let mut sum = Share(vec![Scalar::ZERO; self.len]);
        for share in self.received.values() {
            add_into(&mut sum.0, share);
        }
        Ok(sum)
    }
}

/// The requester's side: adds every aggregator's partial sum.
#[derive(Debug)]
pub struct Reconstruction {
    inner: Aggregator,
}

impl Reconstruction {
    /// Expects one partial sum of `len` entries from each of `aggregators`.
    pub fn new(aggregators: &[String], len: usize) -> Self {
        Self { inner: Aggregator::new(aggregators, len) }
    }

    /// Takes an aggregator's partial sum.
    pub fn absorb(&mut self, from: &str, partial: Share) -> Result<(), MpcError> {
        self.inner.absorb(from, partial)
    }

    /// The pooled field elements, once every partial sum is in.
    pub fn finish_scalars(self) -> Result<Vec<Scalar>, MpcError> {
        Ok(self.inner.finish()?.0.clone())
    }

    /// The pooled integer vector.
    pub fn finish(self) -> Result<Vec<i128>, MpcError> {
        self.finish_scalars()?.iter().map(|s| from_scalar(s).ok_or(MpcError::NotAnInteger)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn parties(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("site-{i}")).collect()
    }

    #[test]
    fn pooled_sum_of_three_sites() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let vectors = [vec![5i128, -3, 1 << 90], vec![1, 1, 1], vec![-10, 7, 0]];
        let names = parties(3);
        let shares: Vec<Vec<Share>> = vectors.iter().map(|v| split(v, 3, &mut rng).unwrap()).collect();
        let mut request = Reconstruction::new(&names, 3);
        for (j, name) in names.iter().enumerate() {
            let mut agg = Aggregator::new(&names, 3);
            for (i, from) in names.iter().enumerate() {
                let wire = shares[i][j].to_bytes();
                agg.absorb(from, Share::from_bytes(&wire, 3).unwrap()).unwrap();
            }
            request.absorb(name, agg.finish().unwrap()).unwrap();
        }
        assert_eq!(request.finish().unwrap(), vec![-4, 5, (1 << 90) + 1]);
    }

    #[test]
    fn a_missing_or_malformed_share_aborts() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(8);
        let names = parties(3);
        let shares = split(&[1, 2], 3, &mut rng).unwrap();
        let mut agg = Aggregator::new(&names, 2);
        agg.absorb("site-0", shares[0].clone()).unwrap();
        assert!(matches!(agg.absorb("site-0", shares[1].clone()), Err(MpcError::Duplicate(_))));
        assert!(matches!(agg.absorb("stranger", shares[1].clone()), Err(MpcError::UnexpectedParty(_))));
        agg.absorb("site-1", shares[1].clone()).unwrap();
        let err = agg.finish().unwrap_err();
        assert!(err.to_string().contains("site-2"), "{err}");
        assert!(Share::from_bytes(&[0xff; 64], 2).is_err(), "non-canonical scalars are refused");
        assert!(Share::from_bytes(&[0; 63], 2).is_err());
        assert!(split(&[1], 1, &mut rng).is_err());
    }

    #[test]
    fn any_single_share_is_independent_of_the_secret() {
        // Two different secrets, same randomness: the first n − 1 shares
        // are identical (uniform draws), only the last differs.
        let a = split(&[1, 2, 3], 3, &mut rand_chacha::ChaCha20Rng::seed_from_u64(1)).unwrap();
        let b = split(&[9, 9, 9], 3, &mut rand_chacha::ChaCha20Rng::seed_from_u64(1)).unwrap();
        assert_eq!(a[0], b[0]);
        assert_eq!(a[1], b[1]);
        assert_ne!(a[2], b[2]);
    }
}
