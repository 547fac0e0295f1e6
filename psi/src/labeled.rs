//! Unbalanced labeled PSI — the blacklist query (design brief §4.2) — over
//! a verifiable OPRF on Ristretto255. Sans-IO.
//!
//! **The bureau** holds an OPRF key k and publishes K = k·G with each
//! version of its blacklist. For every listed id x it computes
//! y = k·H_D(x) (H_D: hash-to-group under the dataset's domain), and
//! stores a short tag of y (`TAG_LEN` bytes) with the entry's label sealed
//! by AES-256-GCM under a key derived from y (padded to `LABEL_LEN`, fresh
//! random nonce). The encoded set's digest and K go on the ledger as the
//! dataset's version; adding or removing entries yields a new version and a
//! [`Delta`].
//!
//! **The bank** keeps a cached copy of the encoded set, checked against the
//! ledger's digest (a cache that does not match is refused). Per query it
//! blinds each applicant's id, A_i = r_i·H_D(x_i); the bureau answers
//! B_i = k·A_i with one batched DLEQ proof that every B_i used the key
//! behind K ([`stayput_zk_proofs::dleq`]); the bank verifies the proof,
//! unblinds y_i = r_i⁻¹·B_i, looks the tag up and decrypts the label.
//!
//! **What each side learns.** The bureau: how many ids were queried (it
//! sees uniformly random points). The bank: the labels of the listed
//! applicants, and the size of each blacklist (the encoded set); it cannot
//! test other ids without a query, which the grant meters by items. The
//! DLEQ proof stops a bureau from answering some ids under another key to
//! mark or single out applicants.
//!
//! Tags are 64 bits: with 10^3 queries against 10^6 entries a false tag
//! match has probability ≈ 5·10⁻¹¹, and a false match would then fail to
//! decrypt, which is reported, never mistaken for a listing.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use curve25519_dalek::ristretto::CompressedRistretto;
use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use sha2::{Digest, Sha256, Sha512};
use stayput_zk_proofs::dleq::DleqProof;
use zeroize::Zeroizing;

use crate::PsiError;
pub use crate::oprf::OprfKey;
use crate::oprf::{Blinding, Domain};

/// Bytes of an entry's tag.
pub const TAG_LEN: usize = 8;
/// Bytes of a padded label (one length byte, then the label).
pub const LABEL_LEN: usize = 64;
/// Bytes of a sealed label: nonce, ciphertext, GCM tag.
pub const SEALED_LEN: usize = 12 + LABEL_LEN + 16;
/// Most entries an encoded set may hold.
pub const MAX_ENTRIES: usize = 1 << 24;
/// Most ids in one query.
pub const MAX_QUERY: usize = crate::oprf::MAX_EVALUATIONS;

const HASH_LABEL: &[u8] = b"stayput/labeled-psi/v1";

/// A tag.
pub type Tag = [u8; TAG_LEN];
/// A sealed label.
pub type Sealed = [u8; SEALED_LEN];
/// A listed id's tag in the set and its label.
pub type Listing = (Tag, Vec<u8>);

fn hasher(dataset: &str) -> Result<Domain, PsiError> {
    Domain::new(HASH_LABEL, dataset)
}

fn tag_and_key(y: &CompressedRistretto) -> (Tag, Zeroizing<[u8; 32]>) {
    let mut h = Sha512::new();
    h.update(b"stayput/labeled-psi/tag");
    h.update(y.as_bytes());
    let wide = h.finalize();
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&wide[..TAG_LEN]);
    let mut k = Sha256::new();
    k.update(b"stayput/labeled-psi/key");
    k.update(y.as_bytes());
    (tag, Zeroizing::new(k.finalize().into()))
}

/// One version of an encoded blacklist: tags with sealed labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedSet {
    /// The dataset it encodes.
    pub dataset: String,
    /// Its version (as on the ledger).
    pub version: u32,
    /// K, the OPRF public key.
    pub public_key: CompressedRistretto,
    entries: BTreeMap<Tag, Sealed>,
}

/// The change from one version of an encoded set to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// The version it applies to.
    pub from: u32,
    /// The version it yields.
    pub to: u32,
    /// Tags removed.
    pub removed: Vec<Tag>,
    /// Entries added.
    pub added: Vec<(Tag, Sealed)>,
}

fn seal(
    y: &CompressedRistretto,
    label: &[u8],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(Tag, Sealed), PsiError> {
    if label.len() >= LABEL_LEN {
        return Err(PsiError::Labeled("a label is at most 63 bytes"));
    }
    let (tag, key) = tag_and_key(y);
    let mut plain = Zeroizing::new([0u8; LABEL_LEN]);
    plain[0] = u8::try_from(label.len()).expect("checked");
    plain[1..=label.len()].copy_from_slice(label);
    let mut nonce = [0u8; 12];
    rng.fill_bytes(&mut nonce);
    let cipher = Aes256Gcm::new_from_slice(key.as_slice()).expect("32-byte key");
    let ct =
        cipher.encrypt(Nonce::from_slice(&nonce), plain.as_slice()).map_err(|_| PsiError::Labeled("sealing failed"))?;
    let mut sealed = [0u8; SEALED_LEN];
    sealed[..12].copy_from_slice(&nonce);
    sealed[12..].copy_from_slice(&ct);
    Ok((tag, sealed))
}

fn seal_all(
    key: &OprfKey,
    dataset: &str,
    entries: &[(Vec<u8>, Vec<u8>)],
    seed: [u8; 32],
) -> Result<Vec<(Tag, Sealed)>, PsiError> {
    if entries.len() > MAX_ENTRIES {
        return Err(PsiError::Labeled("an encoded set holds at most 2^24 entries"));
    }
    let h = hasher(dataset)?;
    entries
        .par_iter()
        .enumerate()
        .map(|(i, (id, label))| {
            // Per-entry nonce randomness from the seed: parallel, no shared state.
            use rand_core::SeedableRng;
            let mut s = seed;
            for (b, x) in s.iter_mut().zip((i as u64).to_le_bytes()) {
                *b ^= x;
            }
            let mut rng = rand_chacha::ChaCha20Rng::from_seed(s);
            seal(&key.output(&h, id), label, &mut rng)
        })
        .collect()
}

fn open(y: &CompressedRistretto, sealed: &Sealed) -> Option<Vec<u8>> {
    let (_, key) = tag_and_key(y);
    let cipher = Aes256Gcm::new_from_slice(key.as_slice()).expect("32-byte key");
    let plain = Zeroizing::new(cipher.decrypt(Nonce::from_slice(&sealed[..12]), &sealed[12..]).ok()?);
    let len = usize::from(plain[0]);
    (len < LABEL_LEN).then(|| plain[1..=len].to_vec())
}

impl EncodedSet {
    /// Encodes `(id, label)` entries (ids already normalised and encoded as
    /// for PSI) under `key`; parallel over entries. `seed` feeds the
    /// sealing nonces (draw it from the OS).
    pub fn encode(
        key: &OprfKey,
        dataset: &str,
        version: u32,
        entries: &[(Vec<u8>, Vec<u8>)],
        seed: [u8; 32],
    ) -> Result<Self, PsiError> {
        let mut set = Self { dataset: dataset.into(), version, public_key: key.public_key(), entries: BTreeMap::new() };
        for (tag, sealed) in seal_all(key, dataset, entries, seed)? {
            if set.entries.insert(tag, sealed).is_some() {
                return Err(PsiError::Labeled("two entries share a tag (a duplicate id?)"));
            }
        }
        Ok(set)
    }

    /// The next version: `removed` ids taken out, `added` entries sealed in;
    /// every other entry keeps its sealing. Returns the new set and the
    /// delta a cache applies to reach it.
    pub fn update(
        &self,
        key: &OprfKey,
        removed: &[Vec<u8>],
        added: &[(Vec<u8>, Vec<u8>)],
        seed: [u8; 32],
    ) -> Result<(Self, Delta), PsiError> {
        if key.public_key() != self.public_key {
            return Err(PsiError::Labeled("the key is not the one this set was encoded with"));
        }
        let h = hasher(&self.dataset)?;
        let removed: Vec<Tag> = removed.iter().map(|id| tag_and_key(&key.output(&h, id)).0).collect();
        let added = seal_all(key, &self.dataset, added, seed)?;
        let delta = Delta { from: self.version, to: self.version + 1, removed, added };
        let mut next = self.clone();
        next.version = delta.to;
        for tag in &delta.removed {
            next.entries.remove(tag);
        }
        for (tag, sealed) in &delta.added {
            if next.entries.insert(*tag, *sealed).is_some() {
                return Err(PsiError::Labeled("an added id is already listed; remove it first"));
            }
        }
        Ok((next, delta))
    }

    /// The next version from the full list of entries as they are now:
    /// entries whose id and label are unchanged keep their sealing, so the
    /// returned delta holds only what changed (removed ids, new ids, and
    /// ids whose label changed, as additions that replace). This is what a
    /// bureau's node runs when its blacklist file changes.
    pub fn next_version(
        &self,
        key: &OprfKey,
        entries: &[(Vec<u8>, Vec<u8>)],
        seed: [u8; 32],
    ) -> Result<(Self, Delta), PsiError> {
        if key.public_key() != self.public_key {
            return Err(PsiError::Labeled("the key is not the one this set was encoded with"));
        }
        if entries.len() > MAX_ENTRIES {
            return Err(PsiError::Labeled("an encoded set holds at most 2^24 entries"));
        }
        let h = hasher(&self.dataset)?;
        // Which entries are unchanged: same tag, and the old sealing opens
        // to the same label.
        let unchanged: Vec<Option<(Tag, Sealed)>> = entries
            .par_iter()
            .map(|(id, label)| {
                let y = key.output(&h, id);
                let (tag, _) = tag_and_key(&y);
                self.entries
                    .get(&tag)
                    .filter(|sealed| open(&y, sealed).is_some_and(|old| &old == label))
                    .map(|sealed| (tag, *sealed))
            })
            .collect();
        let changed: Vec<(Vec<u8>, Vec<u8>)> =
            entries.iter().zip(&unchanged).filter(|(_, u)| u.is_none()).map(|(e, _)| e.clone()).collect();
        let added = seal_all(key, &self.dataset, &changed, seed)?;
        let mut next = Self {
            dataset: self.dataset.clone(),
            version: self.version + 1,
            public_key: self.public_key,
            entries: unchanged.into_iter().flatten().collect(),
        };
        for (tag, sealed) in &added {
            if next.entries.insert(*tag, *sealed).is_some() {
                return Err(PsiError::Labeled("two entries share a tag (a duplicate id?)"));
            }
        }
        let removed: Vec<Tag> = self.entries.keys().filter(|t| !next.entries.contains_key(*t)).copied().collect();
        let delta = Delta { from: self.version, to: next.version, removed, added };
        Ok((next, delta))
    }

    /// Entries in the set.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the set holds an entry under `tag`.
    pub fn holds(&self, tag: &Tag) -> bool {
        self.entries.contains_key(tag)
    }

    /// SHA-256 of the canonical encoding (what the ledger records).
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.to_bytes()).into()
    }

    /// Canonical bytes: label, dataset, version, K, count, sorted entries.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.entries.len() * (TAG_LEN + SEALED_LEN));
        out.extend_from_slice(HASH_LABEL);
        // Both bounded: the dataset id by the task-id limit, entries by MAX_ENTRIES.
        out.extend_from_slice(&u32::try_from(self.dataset.len()).expect("bounded").to_le_bytes());
        out.extend_from_slice(self.dataset.as_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(self.public_key.as_bytes());
        out.extend_from_slice(&u32::try_from(self.entries.len()).expect("bounded").to_le_bytes());
        for (tag, sealed) in &self.entries {
            out.extend_from_slice(tag);
            out.extend_from_slice(sealed);
        }
        out
    }

    /// Decodes [`EncodedSet::to_bytes`], checking sizes before allocating
    /// and that the bytes have the `expected` digest (the ledger's).
    pub fn from_bytes(bytes: &[u8], expected: &[u8; 32]) -> Result<Self, PsiError> {
        let actual: [u8; 32] = Sha256::digest(bytes).into();
        if &actual != expected {
            return Err(PsiError::Labeled("the cached set does not match the digest on the ledger; fetch it again"));
        }
        const BAD: PsiError = PsiError::Labeled("malformed encoded set");
        let rest = bytes.strip_prefix(HASH_LABEL).ok_or(BAD)?;
        let (len, rest) = rest.split_first_chunk::<4>().ok_or(BAD)?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > 255 || rest.len() < len {
            return Err(BAD);
        }
        let (name, rest) = rest.split_at(len);
        let dataset = String::from_utf8(name.to_vec()).map_err(|_| BAD)?;
        let (version, rest) = rest.split_first_chunk::<4>().ok_or(BAD)?;
        let (key, rest) = rest.split_first_chunk::<32>().ok_or(BAD)?;
        let (count, rest) = rest.split_first_chunk::<4>().ok_or(BAD)?;
        let count = u32::from_le_bytes(*count) as usize;
        if count > MAX_ENTRIES || rest.len() != count * (TAG_LEN + SEALED_LEN) {
            return Err(BAD);
        }
        // Canonical only: tags strictly increasing, as `to_bytes` writes
        // them. Otherwise two encodings (two ledger digests) would decode
        // to one set, and the set's own digest would not be the ledger's.
        let mut entries = BTreeMap::new();
        let mut previous: Option<Tag> = None;
        for chunk in rest.chunks_exact(TAG_LEN + SEALED_LEN) {
            let tag: Tag = chunk[..TAG_LEN].try_into().expect("sized");
            let sealed: Sealed = chunk[TAG_LEN..].try_into().expect("sized");
            if previous.is_some_and(|p| p >= tag) {
                return Err(PsiError::Labeled("an encoded set's tags must be sorted and distinct"));
            }
            previous = Some(tag);
            entries.insert(tag, sealed);
        }
        let public_key = CompressedRistretto(*key);
        public_key.decompress().ok_or(BAD)?;
        Ok(Self { dataset, version: u32::from_le_bytes(*version), public_key, entries })
    }

    /// Applies a delta to a cached copy; the result must have the ledger's
    /// digest for the new version, else it is refused.
    pub fn apply(&self, delta: &Delta, expected: &[u8; 32]) -> Result<Self, PsiError> {
        if delta.from != self.version || delta.to <= self.version {
            return Err(PsiError::Labeled("the delta is not for this cached version"));
        }
        let mut next = self.clone();
        next.version = delta.to;
        for tag in &delta.removed {
            next.entries.remove(tag);
        }
        for (tag, sealed) in &delta.added {
            next.entries.insert(*tag, *sealed);
        }
        if &next.digest() != expected {
            return Err(PsiError::Labeled(
                "the cache after the delta does not match the digest on the ledger; fetch the full set",
            ));
        }
        Ok(next)
    }
}

const DELTA_LABEL: &[u8] = b"stayput/labeled-psi/delta/v1";

impl Delta {
    /// Canonical bytes: label, from, to, the removed tags (count, then
    /// sorted), the added entries (count, then sorted by tag).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut removed = self.removed.clone();
        removed.sort_unstable();
        let mut added = self.added.clone();
        added.sort_unstable_by_key(|e| e.0);
        let mut out =
            Vec::with_capacity(DELTA_LABEL.len() + 16 + removed.len() * TAG_LEN + added.len() * (TAG_LEN + SEALED_LEN));
        out.extend_from_slice(DELTA_LABEL);
        out.extend_from_slice(&self.from.to_le_bytes());
        out.extend_from_slice(&self.to.to_le_bytes());
        // Both bounded by MAX_ENTRIES (an update holds at most a set's worth).
        out.extend_from_slice(&u32::try_from(removed.len()).expect("bounded").to_le_bytes());
        for tag in &removed {
            out.extend_from_slice(tag);
        }
        out.extend_from_slice(&u32::try_from(added.len()).expect("bounded").to_le_bytes());
        for (tag, sealed) in &added {
            out.extend_from_slice(tag);
            out.extend_from_slice(sealed);
        }
        out
    }

    /// Decodes [`Delta::to_bytes`], checking every count against the bytes
    /// left and [`MAX_ENTRIES`] before allocating. Whether it leads to the
    /// ledger's digest is checked by [`EncodedSet::apply`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PsiError> {
        const BAD: PsiError = PsiError::Labeled("malformed delta");
        let rest = bytes.strip_prefix(DELTA_LABEL).ok_or(BAD)?;
        let (from, rest) = rest.split_first_chunk::<4>().ok_or(BAD)?;
        let (to, rest) = rest.split_first_chunk::<4>().ok_or(BAD)?;
        let (from, to) = (u32::from_le_bytes(*from), u32::from_le_bytes(*to));
        if to <= from {
            return Err(PsiError::Labeled("a delta must lead to a later version"));
        }
        let (count, rest) = rest.split_first_chunk::<4>().ok_or(BAD)?;
        let count = u32::from_le_bytes(*count) as usize;
        if count > MAX_ENTRIES || rest.len() < count * TAG_LEN {
            return Err(BAD);
        }
        let (tags, rest) = rest.split_at(count * TAG_LEN);
        let removed: Vec<Tag> = tags.chunks_exact(TAG_LEN).map(|t| t.try_into().expect("sized")).collect();
        let (count, rest) = rest.split_first_chunk::<4>().ok_or(BAD)?;
        let count = u32::from_le_bytes(*count) as usize;
        if count > MAX_ENTRIES || rest.len() != count * (TAG_LEN + SEALED_LEN) {
            return Err(BAD);
        }
        let added: Vec<(Tag, Sealed)> = rest
            .chunks_exact(TAG_LEN + SEALED_LEN)
            .map(|c| (c[..TAG_LEN].try_into().expect("sized"), c[TAG_LEN..].try_into().expect("sized")))
            .collect();
        let sorted_unique = removed.windows(2).all(|w| w[0] < w[1]) && added.windows(2).all(|w| w[0].0 < w[1].0);
        if !sorted_unique {
            return Err(PsiError::Labeled("a delta's tags must be sorted and distinct"));
        }
        Ok(Self { from, to, removed, added })
    }
}

/// The bank's side of one query (its blinding factors are zeroized).
#[derive(Debug)]
pub struct Query(Blinding);

impl Query {
    /// Blinds the encoded ids for the bureau of `dataset`.
    pub fn blind(
        dataset: &str,
        ids: &[Vec<u8>],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(Self, Vec<CompressedRistretto>), PsiError> {
        let (blinding, points) = Blinding::blind(&hasher(dataset)?, ids, rng)?;
        Ok((Self(blinding), points))
    }

    /// Verifies the bureau's answer against the set's public key and
    /// returns, per queried id, its label when listed.
    pub fn finish(
        self,
        context: &[u8],
        blinded: &[CompressedRistretto],
        evaluations: &[CompressedRistretto],
        proof: &DleqProof,
        set: &EncodedSet,
    ) -> Result<Vec<Option<Vec<u8>>>, PsiError> {
        let listed = self.finish_with_tags(context, blinded, evaluations, proof, set)?;
        Ok(listed.into_iter().map(|l| l.map(|(_, label)| label)).collect())
    }

    /// [`Query::finish`], with each listing's tag in the set: what names
    /// the entry in a dispute of it (the bureau ties it to its row; nobody
    /// else can tie it to an id without querying the id).
    pub fn finish_with_tags(
        self,
        context: &[u8],
        blinded: &[CompressedRistretto],
        evaluations: &[CompressedRistretto],
        proof: &DleqProof,
        set: &EncodedSet,
    ) -> Result<Vec<Option<Listing>>, PsiError> {
        let outputs = self.0.unblind(context, blinded, evaluations, proof, &set.public_key)?;
        outputs
            .par_iter()
            .map(|y| {
                let (tag, _) = tag_and_key(y);
                match set.entries.get(&tag) {
                    None => Ok(None),
                    Some(sealed) => open(y, sealed)
                        .map(|label| Some((tag, label)))
                        .ok_or(PsiError::Labeled("a listed entry does not decrypt: the cached set is damaged")),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use curve25519_dalek::scalar::Scalar;
    use rand::SeedableRng;

    use super::*;

    fn entries(range: std::ops::Range<u32>) -> Vec<(Vec<u8>, Vec<u8>)> {
        range
            .map(|i| (format!("ID{i:06}").into_bytes(), format!("D90|2025-0{}|{}", i % 9 + 1, i % 5).into_bytes()))
            .collect()
    }

    #[test]
    fn listed_applicants_get_their_labels() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let key = OprfKey::random(&mut rng);
        let set = EncodedSet::encode(&key, "blacklist", 1, &entries(0..2000), [7; 32]).unwrap();
        let cache = EncodedSet::from_bytes(&set.to_bytes(), &set.digest()).unwrap();
        let ids: Vec<Vec<u8>> = (1990..2010).map(|i: u32| format!("ID{i:06}").into_bytes()).collect();
        let (query, blinded) = Query::blind("blacklist", &ids, &mut rng).unwrap();
        let (answers, proof) = key.evaluate(b"t-1", &blinded, &mut rng).unwrap();
        let labels = query.finish(b"t-1", &blinded, &answers, &proof, &cache).unwrap();
        for (i, label) in (1990..2010).zip(&labels) {
            if i < 2000 {
                assert_eq!(label.as_deref(), Some(format!("D90|2025-0{}|{}", i % 9 + 1, i % 5).as_bytes()));
            } else {
                assert_eq!(label, &None);
            }
        }
    }

    #[test]
    fn a_cheating_bureau_or_a_bad_cache_is_caught() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let key = OprfKey::random(&mut rng);
        let set = EncodedSet::encode(&key, "blacklist", 1, &entries(0..100), [1; 32]).unwrap();
        let ids: Vec<Vec<u8>> = (0..10).map(|i: u32| format!("ID{i:06}").into_bytes()).collect();
        // Answered with another key for one id: the proof fails.
        let (query, blinded) = Query::blind("blacklist", &ids, &mut rng).unwrap();
        let (mut answers, proof) = key.evaluate(b"t-1", &blinded, &mut rng).unwrap();
        answers[4] = (Scalar::from(3u8) * answers[4].decompress().unwrap()).compress();
        assert!(
            query.finish(b"t-1", &blinded, &answers, &proof, &set).unwrap_err().to_string().contains("does not verify")
        );
        // A cache with another digest is refused.
        let mut bytes = set.to_bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(EncodedSet::from_bytes(&bytes, &set.digest()).is_err());
        // Another task's proof does not carry over.
        let (query, blinded) = Query::blind("blacklist", &ids, &mut rng).unwrap();
        let (answers, proof) = key.evaluate(b"t-1", &blinded, &mut rng).unwrap();
        assert!(query.finish(b"t-2", &blinded, &answers, &proof, &set).is_err());
    }

    #[test]
    fn an_encoded_set_decodes_only_from_its_canonical_bytes() {
        // Found by fuzzing (fuzz/fuzz_targets/labeled_set.rs): entries out
        // of order decoded, to a set whose digest was not the one checked.
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        let key = OprfKey::random(&mut rng);
        let set = EncodedSet::encode(&key, "blacklist", 1, &entries(0..3), [4; 32]).unwrap();
        let bytes = set.to_bytes();
        let entry = TAG_LEN + SEALED_LEN;
        let start = bytes.len() - 3 * entry;
        let digest = |b: &[u8]| -> [u8; 32] { Sha256::digest(b).into() };
        assert_eq!(EncodedSet::from_bytes(&bytes, &digest(&bytes)).unwrap(), set);
        // The first two entries swapped.
        let mut swapped = bytes.clone();
        swapped[start..start + 2 * entry].rotate_left(entry);
        let err = EncodedSet::from_bytes(&swapped, &digest(&swapped)).unwrap_err();
        assert!(err.to_string().contains("sorted and distinct"), "{err}");
        // The first entry twice.
        let mut twice = bytes.clone();
        twice.copy_within(start..start + entry, start + entry);
        assert!(EncodedSet::from_bytes(&twice, &digest(&twice)).is_err());
    }

    #[test]
    fn deltas_move_a_cache_to_the_next_version() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let key = OprfKey::random(&mut rng);
        let v1 = EncodedSet::encode(&key, "blacklist", 1, &entries(0..300), [2; 32]).unwrap();
        let removed: Vec<Vec<u8>> = entries(0..50).into_iter().map(|(id, _)| id).collect();
        let (v2, delta) = v1.update(&key, &removed, &entries(300..400), [3; 32]).unwrap();
        assert_eq!((v2.version, v2.len()), (2, 350));
        assert_eq!((delta.removed.len(), delta.added.len()), (50, 100));
        // A bank's cache of v1 reaches exactly v2 (the ledger's digest).
        assert_eq!(v1.apply(&delta, &v2.digest()).unwrap(), v2);
        // Removed ids are no longer found; added ones are.
        let ids = vec![b"ID000010".to_vec(), b"ID000350".to_vec()];
        let (query, blinded) = Query::blind("blacklist", &ids, &mut rng).unwrap();
        let (answers, proof) = key.evaluate(b"t", &blinded, &mut rng).unwrap();
        let found = query.finish(b"t", &blinded, &answers, &proof, &v2).unwrap();
        assert!(found[0].is_none() && found[1].is_some());
        let wrong = Delta { from: 2, ..delta.clone() };
        assert!(v1.apply(&wrong, &v2.digest()).is_err());
        assert!(v1.apply(&delta, &[0; 32]).unwrap_err().to_string().contains("fetch the full set"));
    }

    /// Known-answer vector of the encoded-set format and of a query answer:
    /// fixed key, entries, sealing seed and query randomness. Regenerate with
    /// `STAYPUT_WRITE_VECTORS=1 cargo test -p stayput-psi labeled`.
    #[test]
    fn encoded_set_known_answer_vector() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Vector {
            version: String,
            oprf_key_hex: String,
            dataset: String,
            entries: Vec<(String, String)>,
            seed_hex: String,
            encoded_set_hex: String,
            digest_hex: String,
            query_ids: Vec<String>,
            blinded_hex: Vec<String>,
            evaluations_hex: Vec<String>,
            proof_hex: String,
            labels: Vec<Option<String>>,
        }
        let path = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("test-vectors/labeled-psi-v1.json");
        let key = OprfKey::from_bytes(&Scalar::from(0x5eed_u64).to_bytes()).unwrap();
        let listed = entries(0..4);
        let set = EncodedSet::encode(&key, "blacklist", 1, &listed, [9; 32]).unwrap();
        let ids = vec![b"ID000002".to_vec(), b"ID000777".to_vec()];
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let (query, blinded) = Query::blind("blacklist", &ids, &mut rng).unwrap();
        let (answers, proof) = key.evaluate(b"t-kat", &blinded, &mut rng).unwrap();
        let labels = query.finish(b"t-kat", &blinded, &answers, &proof, &set).unwrap();
        let hexes = |v: &[CompressedRistretto]| v.iter().map(|p| hex::encode(p.as_bytes())).collect();
        let computed = Vector {
            version: "stayput labeled psi v1".into(),
            oprf_key_hex: hex::encode(*key.to_bytes()),
            dataset: "blacklist".into(),
            entries: listed
                .iter()
                .map(|(i, l)| (String::from_utf8_lossy(i).into(), String::from_utf8_lossy(l).into()))
                .collect(),
            seed_hex: hex::encode([9u8; 32]),
            encoded_set_hex: hex::encode(set.to_bytes()),
            digest_hex: hex::encode(set.digest()),
            query_ids: ids.iter().map(|i| String::from_utf8_lossy(i).into()).collect(),
            blinded_hex: hexes(&blinded),
            evaluations_hex: hexes(&answers),
            proof_hex: hex::encode(proof.to_bytes()),
            labels: labels.iter().map(|l| l.as_ref().map(|l| String::from_utf8_lossy(l).into())).collect(),
        };
        if std::env::var_os("STAYPUT_WRITE_VECTORS").is_some() {
            std::fs::write(&path, serde_json::to_string_pretty(&computed).unwrap() + "\n").unwrap();
        }
        let stored: Vector = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(stored, computed);
        assert_eq!(stored.labels, vec![Some("D90|2025-03|2".to_string()), None]);
    }

    #[test]
    fn a_changed_list_becomes_the_next_version_with_a_minimal_delta() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(6);
        let key = OprfKey::random(&mut rng);
        let v1 = EncodedSet::encode(&key, "blacklist", 1, &entries(0..100), [1; 32]).unwrap();
        // 10 ids gone, 5 new, one label changed.
        let mut now = entries(10..105);
        now[0].1 = b"settled".to_vec();
        let (v2, delta) = v1.next_version(&key, &now, [2; 32]).unwrap();
        assert_eq!((v2.version, v2.len()), (2, 95));
        assert_eq!(delta.removed.len(), 10);
        assert_eq!(delta.added.len(), 6, "5 new ids and 1 changed label");
        assert_eq!(v1.apply(&delta, &v2.digest()).unwrap(), v2);
        // The changed label is what the bank now reads.
        let (query, blinded) = Query::blind("blacklist", &[now[0].0.clone()], &mut rng).unwrap();
        let (answers, proof) = key.evaluate(b"t", &blinded, &mut rng).unwrap();
        assert_eq!(query.finish(b"t", &blinded, &answers, &proof, &v2).unwrap(), vec![Some(b"settled".to_vec())]);
        // Nothing changed: an empty delta, same entries.
        let (v3, empty) = v2.next_version(&key, &now, [3; 32]).unwrap();
        assert!(empty.removed.is_empty() && empty.added.is_empty());
        assert_eq!(v3.len(), v2.len());
        let other = OprfKey::random(&mut rng);
        assert!(v2.next_version(&other, &now, [4; 32]).is_err());
    }

    /// Known-answer vector of the delta format: the KAT set above, one id
    /// removed and two added. Regenerate with
    /// `STAYPUT_WRITE_VECTORS=1 cargo test -p stayput-psi labeled`.
    #[test]
    fn delta_known_answer_vector_and_decoding() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Vector {
            version: String,
            removed_ids: Vec<String>,
            added: Vec<(String, String)>,
            seed_hex: String,
            delta_hex: String,
            next_digest_hex: String,
        }
        let path = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("test-vectors/labeled-delta-v1.json");
        let key = OprfKey::from_bytes(&Scalar::from(0x5eed_u64).to_bytes()).unwrap();
        let v1 = EncodedSet::encode(&key, "blacklist", 1, &entries(0..4), [9; 32]).unwrap();
        let removed = vec![b"ID000001".to_vec()];
        let added = entries(4..6);
        let (v2, delta) = v1.update(&key, &removed, &added, [10; 32]).unwrap();
        let bytes = delta.to_bytes();
        let computed = Vector {
            version: "stayput labeled psi delta v1".into(),
            removed_ids: removed.iter().map(|i| String::from_utf8_lossy(i).into()).collect(),
            added: added
                .iter()
                .map(|(i, l)| (String::from_utf8_lossy(i).into(), String::from_utf8_lossy(l).into()))
                .collect(),
            seed_hex: hex::encode([10u8; 32]),
            delta_hex: hex::encode(&bytes),
            next_digest_hex: hex::encode(v2.digest()),
        };
        if std::env::var_os("STAYPUT_WRITE_VECTORS").is_some() {
            std::fs::write(&path, serde_json::to_string_pretty(&computed).unwrap() + "\n").unwrap();
        }
        let stored: Vector = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(stored, computed);
        // Decoding gives a delta that takes a cache of v1 to exactly v2.
        let decoded = Delta::from_bytes(&bytes).unwrap();
        assert_eq!(v1.apply(&decoded, &v2.digest()).unwrap(), v2);
        assert_eq!(decoded.to_bytes(), bytes);
        // Malformed: truncated, trailing byte, a count larger than the bytes,
        // a backwards version, tags out of order.
        assert!(Delta::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(Delta::from_bytes(&[bytes.as_slice(), &[0]].concat()).is_err());
        let mut huge = bytes.clone();
        let at = DELTA_LABEL.len() + 8;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Delta::from_bytes(&huge).is_err());
        let backwards = Delta { from: 2, to: 1, removed: vec![], added: vec![] };
        assert!(Delta::from_bytes(&backwards.to_bytes()).unwrap_err().to_string().contains("later version"));
        let mut unsorted = decoded.clone();
        unsorted.removed = vec![[2; TAG_LEN], [2; TAG_LEN]];
        assert!(Delta::from_bytes(&unsorted.to_bytes()).unwrap_err().to_string().contains("sorted"));
    }

    #[test]
    fn oversized_and_malformed_input_is_refused() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
        let key = OprfKey::random(&mut rng);
        assert!(EncodedSet::encode(&key, "b", 1, &[(b"x".to_vec(), vec![0; 64])], [0; 32]).is_err());
        assert!(key.evaluate(b"t", &[], &mut rng).is_err());
        assert!(key.evaluate(b"t", &[CompressedRistretto([0xff; 32])], &mut rng).is_err());
        assert!(OprfKey::from_bytes(&[0; 32]).is_err());
        assert!(Query::blind("b", &[], &mut rng).is_err());
    }
}
