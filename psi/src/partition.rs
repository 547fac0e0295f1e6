//! Partitioning keys by a keyed hash: a set too large for one pass, or for
//! one machine, runs as independent sessions that pair part `i` of one side
//! with part `i` of the other.
//!
//! `part(k) = ⌊w·P / 2⁶⁴⌋` with `w` the first 8 bytes of
//! `SHA-256(DST ‖ T ‖ K ‖ len(k) ‖ k)`, for the task `T`, a 32-byte
//! partition key `K` and `P` parts. Equal keys always fall in the same part
//! on both sides, so the intersection is the union of the parts'
//! intersections. `K` is drawn by the requester's node for the task and
//! travels only inside the mutually authenticated TLS channel: without it
//! an observer cannot tell which part holds a given key, and a part's size
//! says nothing about any one key beyond what a uniform split of the set
//! does. Each side learns the other's part sizes — `P` numbers summing to
//! the set size it learns anyway.

use std::fmt;

use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::PsiError;
use crate::group::TaskId;
use crate::keys::{KeyList, KeySet};

/// Most parts a set may be split into.
pub const MAX_PARTS: u32 = 1 << 16;

const LABEL: &[u8] = b"stayput/psi/partition/v1";

/// The secret that decides which part a key falls in.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct PartitionKey([u8; 32]);

impl fmt::Debug for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PartitionKey(redacted)")
    }
}

impl PartitionKey {
    /// A fresh key.
    pub fn random(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        Self(key)
    }

    /// The key as received from the peer.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key, to send inside the TLS channel only.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }
}

/// A split of keys into parts, for one task.
#[derive(Clone)]
pub struct Partition {
    prefix: Sha256,
    parts: u32,
}

impl fmt::Debug for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partition").field("parts", &self.parts).finish_non_exhaustive()
    }
}

/// One part of a key set: its keys, and each key's index in the whole set.
#[derive(Debug, Default)]
pub struct Part {
    /// The part's keys.
    pub keys: KeyList,
    /// `indices[j]` is the index in the whole set of `keys[j]`.
    pub indices: Vec<u32>,
}

impl Partition {
    /// A split into `parts` parts (1 to [`MAX_PARTS`]).
    pub fn new(key: &PartitionKey, task: &TaskId, parts: u32) -> Result<Self, PsiError> {
        if parts == 0 || parts > MAX_PARTS {
            return Err(PsiError::Malformed {
                message: "partition",
                reason: format!("{parts} parts; 1 to {MAX_PARTS} are allowed"),
            });
        }
        let mut prefix = Sha256::new();
        prefix.update((LABEL.len() as u64).to_le_bytes());
        prefix.update(LABEL);
        prefix.update((task.as_bytes().len() as u64).to_le_bytes());
        prefix.update(task.as_bytes());
        prefix.update(key.0);
        Ok(Self { prefix, parts })
    }

    /// How many parts.
    pub fn parts(&self) -> u32 {
        self.parts
    }

    /// The part `key` falls in.
    pub fn part_of(&self, key: &[u8]) -> u32 {
        let mut h = self.prefix.clone();
        h.update((key.len() as u64).to_le_bytes());
        h.update(key);
        let digest = h.finalize();
        let word = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
        u32::try_from((u128::from(word) * u128::from(self.parts)) >> 64).expect("below parts")
    }

    /// Splits `keys` into the parts, keeping each key's index.
    pub fn split<K: KeySet>(&self, keys: &K) -> Vec<Part> {
        let parts: Vec<u32> = (0..keys.len())
            .into_par_iter()
            .map_init(Vec::new, |buf, i| {
                keys.key_into(i, buf);
                let part = self.part_of(buf);
                buf.zeroize();
                part
            })
            .collect();
        let mut out: Vec<Part> = (0..self.parts).map(|_| Part::default()).collect();
        let mut buf = Vec::new();
        for (i, part) in parts.into_iter().enumerate() {
            keys.key_into(i, &mut buf);
            let target = &mut out[part as usize];
            target.keys.push(&buf);
            target.indices.push(u32::try_from(i).expect("key sets hold fewer than 2^32 keys"));
        }
        buf.zeroize();
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::ecdh::OutputMode;
    use crate::ecdh::tests::{keys, plain};
    use crate::kkrt;

    fn partition(seed: u64, parts: u32) -> Partition {
        let key = PartitionKey::random(&mut ChaCha20Rng::seed_from_u64(seed));
        Partition::new(&key, &TaskId::new("partition-test").unwrap(), parts).unwrap()
    }

    /// Runs KKRT part by part and maps each part's result back.
    fn intersect_by_parts(a: &KeyList, b: &KeyList, split: &Partition) -> (Vec<u32>, Vec<u32>) {
        let (mut on_a, mut on_b) = (Vec::new(), Vec::new());
        for (i, (pa, pb)) in split.split(a).into_iter().zip(split.split(b)).enumerate() {
            let params = kkrt::SessionParams::new(
                TaskId::new(format!("partition-test/{i}")).unwrap(),
                OutputMode::IntersectionToBoth,
                pa.keys.len() as u64,
                pb.keys.len() as u64,
            )
            .unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(i as u64);
            let (out_a, out_b) = kkrt::run_in_memory(&params, &pa.keys, &pb.keys, &mut rng.clone(), &mut rng).unwrap();
            on_a.extend(out_a.intersection().iter().map(|&j| pa.indices[j as usize]));
            on_b.extend(out_b.intersection().unwrap().iter().map(|&j| pb.indices[j as usize]));
        }
        on_a.sort_unstable();
        on_b.sort_unstable();
        (on_a, on_b)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// The union of the parts' intersections is the intersection.
        #[test]
        fn parts_together_give_the_whole_intersection(
            a in proptest::collection::btree_set(0u32..300, 0..120),
            b in proptest::collection::btree_set(0u32..300, 0..120),
            parts in 1u32..6,
            seed in any::<u64>(),
        ) {
            let a: KeyList = keys(a).iter().collect();
            let b: KeyList = keys(b).iter().collect();
            let split = partition(seed, parts);
            prop_assert_eq!(intersect_by_parts(&a, &b, &split), plain(&a, &b));
        }
    }

    #[test]
    fn parts_are_even_and_depend_on_the_key() {
        let all: KeyList = keys(0..40_000).iter().collect();
        let split = partition(1, 8);
        let sizes: Vec<usize> = split.split(&all).iter().map(|p| p.keys.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 40_000);
        assert!(sizes.iter().all(|&s| (4_600..5_400).contains(&s)), "{sizes:?}");
        // Another partition key moves most keys to another part.
        let other = partition(2, 8);
        let moved = all.iter().filter(|k| split.part_of(k) != other.part_of(k)).count();
        assert!(moved > 30_000, "{moved}");
        // One part holds everything.
        assert_eq!(partition(3, 1).split(&all)[0].keys.len(), 40_000);
    }

    #[test]
    fn bounds_and_redaction() {
        let key = PartitionKey::from_bytes([7; 32]);
        let task = TaskId::new("t").unwrap();
        assert!(Partition::new(&key, &task, 0).is_err());
        assert!(Partition::new(&key, &task, MAX_PARTS + 1).is_err());
        assert_eq!(format!("{key:?}"), "PartitionKey(redacted)");
        assert_eq!(PartitionKey::from_bytes(key.to_bytes()), key);
    }
}
