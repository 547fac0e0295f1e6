//! Credit scores that only their subject can decrypt (feature `fhe`).
//!
//! The right to compute is separated from ownership: a person — the
//! *subject* — creates a TFHE key pair on their own device
//! ([`SubjectKeys::generate`]) and publishes the compact public key and the
//! compressed server key ([`SubjectPublic`]). Each institution that holds
//! some of the person's features (a bank, a bureau) bins them by the
//! published [`Scorecard`] and encrypts the bin indices under the subject's
//! public key ([`encrypt_bins`]); a scoring party evaluates the scorecard on
//! the ciphertexts with the subject's server key ([`Scorer`]) — a points
//! lookup per feature, their sum plus the base, and the threshold decision
//! — and returns ciphertexts that only the subject's client key decrypts
//! ([`SubjectKeys::decrypt`]). No institution sees another's features, the
//! scorer sees nothing, and the subject may rotate the key pair at will:
//! ciphertexts made under an old key are then useless, because no key
//! that still exists decrypts them.
//!
//! **Encodings.** A bin index is a `FheUint4` (a scorecard has at most 16
//! bins per feature); a feature's points and the score are `FheUint16`
//! (a scorecard's largest possible score, base included, must fit); the
//! decision is a `FheBool`, `score ≥ threshold`. A bin index beyond a
//! feature's bins (an institution can encrypt any 4-bit value) matches no
//! row of its points table and counts 0 points.
//!
//! **Cost** (measured by `stayput bench score`): one encrypted table
//! lookup per feature, one multi-operand sum, one scalar addition and one
//! scalar comparison: no multiplication and no comparison of two
//! ciphertexts.
//!
//! **Security.** TFHE's default parameters (128-bit security, failure
//! probability 2^-128 per bootstrap). The scorer learns the scorecard
//! (public) and the number of features each institution sent. A scorer
//! holding a subject's server key cannot decrypt; a malicious scorer can
//! return a wrong score, which the subject cannot tell from a right one in
//! this module alone (the ledger records what was scored, by whom, under
//! which scorecard digest). Likewise an institution that encrypts under
//! another key, or bins wrongly, corrupts the score undetected: tfhe's
//! zero-knowledge proofs of compact lists would bind each list to the
//! subject's public key and bin range, and are not used yet. Decoders bound sizes before allocating and
//! check keys and lists against this project's parameters ([`crate::fhe`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tfhe::prelude::*;
use tfhe::{ClientKey, CompactCiphertextList, CompressedServerKey, FheBool, FheUint4, FheUint16, MatchValues};

use crate::MpcError;
use crate::fhe::{CIPHERTEXT_LIMIT, KEY_LIMIT, de, expand, fhe_err, public_key, ser};

/// Most features a scorecard may have.
pub const MAX_FEATURES: usize = 64;
/// Most bins one feature may have (a bin index is a 4-bit integer).
pub const MAX_BINS: usize = 16;

/// A published scorecard: per feature, ascending bin edges and the points
/// of each bin; a base; a threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scorecard {
    /// Its name and version, as published.
    pub name: String,
    /// Points everybody starts with.
    pub base: u16,
    /// A score at or above it is an approval.
    pub threshold: u16,
    /// The features, in order.
    pub features: Vec<ScoredFeature>,
}

/// One feature of a scorecard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoredFeature {
    /// The feature's name.
    pub name: String,
    /// Ascending edges: a value below `edges[0]` is in bin 0, a value in
    /// `[edges[i-1], edges[i])` in bin `i`, a value at or above the last
    /// edge in the last bin.
    pub edges: Vec<i64>,
    /// Points of each bin (`edges.len() + 1` of them).
    pub points: Vec<u16>,
}

impl Scorecard {
    /// Checks the shape: 1 to [`MAX_FEATURES`] features, 1 to [`MAX_BINS`]
    /// bins each with strictly ascending edges, and a largest possible
    /// score that fits in 16 bits.
    pub fn validate(&self) -> Result<(), MpcError> {
        let bad = |reason: String| Err(MpcError::Query(format!("scorecard '{}': {reason}", self.name)));
        if self.features.is_empty() || self.features.len() > MAX_FEATURES {
            return bad(format!("{} features; 1 to {MAX_FEATURES} are allowed", self.features.len()));
        }
        let mut largest = u64::from(self.base);
        for f in &self.features {
            if f.points.len() != f.edges.len() + 1 || f.points.len() > MAX_BINS {
                return bad(format!(
                    "feature '{}' has {} edges and {} point values; it needs one more point value than edges, at most {MAX_BINS}",
                    f.name,
                    f.edges.len(),
                    f.points.len()
                ));
            }
            if f.edges.windows(2).any(|w| w[0] >= w[1]) {
                return bad(format!("the edges of feature '{}' are not strictly ascending", f.name));
            }
            largest += u64::from(*f.points.iter().max().expect("at least one bin"));
        }
        if largest > u64::from(u16::MAX) {
            return bad(format!("its largest possible score {largest} does not fit in 16 bits"));
        }
        Ok(())
    }

    /// The bin of `value` for feature `feature`.
    pub fn bin(&self, feature: usize, value: i64) -> Result<u8, MpcError> {
        let f = self.features.get(feature).ok_or(MpcError::Shape { expected: self.features.len(), got: feature })?;
        Ok(u8::try_from(f.edges.partition_point(|&edge| edge <= value)).expect("at most 16 bins"))
    }

    /// The score and decision of bins in the clear: the reference the
    /// encrypted evaluation must equal.
    pub fn score_clear(&self, bins: &[u8]) -> Result<(u16, bool), MpcError> {
        if bins.len() != self.features.len() {
            return Err(MpcError::Shape { expected: self.features.len(), got: bins.len() });
        }
        let mut score = u32::from(self.base);
        for (f, &bin) in self.features.iter().zip(bins) {
            score += u32::from(
                *f.points
                    .get(usize::from(bin))
                    .ok_or(MpcError::Shape { expected: f.points.len(), got: usize::from(bin) + 1 })?,
            );
        }
        let score = u16::try_from(score).map_err(|_| MpcError::Query("score beyond 16 bits".into()))?;
        Ok((score, score >= self.threshold))
    }

    /// SHA-256 of the scorecard's canonical JSON: what the ledger records.
    pub fn digest(&self) -> [u8; 32] {
        let json = serde_json::to_vec(self).expect("a scorecard serialises");
        let mut h = Sha256::new();
        h.update(b"stayput/scorecard/v1");
        h.update(json);
        h.finalize().into()
    }
}

/// What a subject publishes: the compact public key institutions encrypt
/// under, the compressed server key the scorer evaluates with, and the key
/// pair's id.
#[derive(Clone)]
pub struct SubjectPublic {
    /// The compact public key, serialised.
    pub public_key: Vec<u8>,
    /// The compressed server key, serialised.
    pub server_key: Vec<u8>,
    /// SHA-256 of the public key: names the key pair (on the ledger, in a
    /// scoring's use record).
    pub key_id: [u8; 32],
}

impl std::fmt::Debug for SubjectPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SubjectPublic(public key {} B, server key {} B, id {:02x}{:02x}…)",
            self.public_key.len(),
            self.server_key.len(),
            self.key_id[0],
            self.key_id[1]
        )
    }
}

/// A subject's secret key. Rotating means generating a new pair and
/// dropping this one.
pub struct SubjectKeys {
    client: ClientKey,
    key_id: [u8; 32],
}

impl std::fmt::Debug for SubjectKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectKeys(redacted)")
    }
}

/// The subject's files (`stayput subject keys`), format version 1: a magic,
/// the version, the key id, then length-prefixed (8 bytes, little-endian)
/// parts — for the secret key file, tfhe's serialised client key; for the
/// public file, the compact public key then the compressed server key.
/// tfhe's own serialisation inside is versioned too and bounded on read.
pub const KEY_FILE_VERSION: u8 = 1;
const SECRET_MAGIC: &[u8; 20] = b"stayput/subject-key\0";
const PUBLIC_MAGIC: &[u8; 20] = b"stayput/subject-pub\0";

fn encode_file(magic: &[u8; 20], key_id: &[u8; 32], parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(53 + parts.iter().map(|p| 8 + p.len()).sum::<usize>());
    out.extend_from_slice(magic);
    out.push(KEY_FILE_VERSION);
    out.extend_from_slice(key_id);
    for part in parts {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// Splits a subject file into its key id and `N` parts, bounding each part
/// by what remains before taking it.
fn decode_file<'a, const N: usize>(
    magic: &[u8; 20],
    what: &str,
    bytes: &'a [u8],
) -> Result<([u8; 32], [&'a [u8]; N]), MpcError> {
    let bad = |reason: &str| fhe_err(what, reason);
    let rest = bytes.strip_prefix(magic.as_slice()).ok_or_else(|| bad("not a subject key file of Stayput"))?;
    let (&version, rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
    if version != KEY_FILE_VERSION {
        return Err(bad(&format!(
            "format version {version}; this build reads version {KEY_FILE_VERSION} — create the keys again with `stayput subject keys --rotate`"
        )));
    }
    let (key_id, mut rest) = rest.split_first_chunk::<32>().ok_or_else(|| bad("truncated"))?;
    let mut parts = [&[][..]; N];
    for part in &mut parts {
        let (len, tail) = rest.split_first_chunk::<8>().ok_or_else(|| bad("truncated"))?;
        let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| bad("a part longer than memory"))?;
        if len > tail.len() {
            return Err(bad("truncated"));
        }
        (*part, rest) = tail.split_at(len);
    }
    if !rest.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok((*key_id, parts))
}

impl SubjectPublic {
    /// The public file.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_file(PUBLIC_MAGIC, &self.key_id, &[&self.public_key, &self.server_key])
    }

    /// Reads a public file: the key id must be the public key's digest, and
    /// the public key this project's parameters (the server key is checked
    /// when a scorer decompresses it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MpcError> {
        let (key_id, [public_key, server_key]) = decode_file::<2>(PUBLIC_MAGIC, "subject public file", bytes)?;
        if <[u8; 32]>::from(Sha256::digest(public_key)) != key_id {
            return Err(fhe_err("subject public file", "its key id is not its public key's"));
        }
        public_key_checked(public_key)?;
        if server_key.len() as u64 > KEY_LIMIT {
            return Err(fhe_err("subject public file", "the server key exceeds the size limit"));
        }
        Ok(Self { public_key: public_key.to_vec(), server_key: server_key.to_vec(), key_id })
    }
}

fn public_key_checked(bytes: &[u8]) -> Result<(), MpcError> {
    public_key(bytes).map(drop)
}

/// An encrypted score and decision, for the subject.
#[derive(Debug, Clone)]
pub struct EncryptedScore {
    /// The key pair it is encrypted under.
    pub key_id: [u8; 32],
    /// `FheUint16`, serialised.
    pub score: Vec<u8>,
    /// `FheBool`, serialised.
    pub decision: Vec<u8>,
}

impl SubjectKeys {
    /// A fresh key pair (seconds of work: run it off any async executor).
    pub fn generate() -> Result<(Self, SubjectPublic), MpcError> {
        let (client, public_key, server_key) = crate::fhe::fresh_keys()?;
        let key_id: [u8; 32] = Sha256::digest(&public_key).into();
        Ok((Self { client, key_id }, SubjectPublic { public_key, server_key, key_id }))
    }

    /// The key pair's id.
    pub fn key_id(&self) -> [u8; 32] {
        self.key_id
    }

    /// The secret key file (keep it on the subject's device, 0600).
    pub fn to_bytes(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, MpcError> {
        let client = zeroize::Zeroizing::new(ser(&self.client, "subject key")?);
        Ok(zeroize::Zeroizing::new(encode_file(SECRET_MAGIC, &self.key_id, &[&client])))
    }

    /// Reads a secret key file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MpcError> {
        let (key_id, [client]) = decode_file::<1>(SECRET_MAGIC, "subject key file", bytes)?;
        let client: ClientKey = de(client, KEY_LIMIT, "subject key")?;
        Ok(Self { client, key_id })
    }

    /// Decrypts a score made under this key pair; one made under another
    /// (an earlier, rotated one) is refused by its id — decrypting it with
    /// this key would give noise.
    pub fn decrypt(&self, score: &EncryptedScore) -> Result<(u16, bool), MpcError> {
        if score.key_id != self.key_id {
            return Err(fhe_err(
                "score",
                "it was computed under another key pair of the subject (rotated since?); have it scored again",
            ));
        }
        self.decrypt_unchecked(score)
    }

    fn decrypt_unchecked(&self, score: &EncryptedScore) -> Result<(u16, bool), MpcError> {
        let value: FheUint16 = de(&score.score, CIPHERTEXT_LIMIT, "score")?;
        let decision: FheBool = de(&score.decision, CIPHERTEXT_LIMIT, "decision")?;
        Ok((value.decrypt(&self.client), decision.decrypt(&self.client)))
    }
}

/// An institution encrypts the bins of the features it holds, in the
/// scorecard's order from `first`, under the subject's public key.
pub fn encrypt_bins(public: &[u8], bins: &[u8]) -> Result<Vec<u8>, MpcError> {
    if bins.is_empty() || bins.len() > MAX_FEATURES {
        return Err(MpcError::Shape { expected: MAX_FEATURES, got: bins.len() });
    }
    let pk = public_key(public)?;
    let mut builder = CompactCiphertextList::builder(&pk);
    for &bin in bins {
        if usize::from(bin) >= MAX_BINS {
            return Err(fhe_err("bins", format!("bin {bin} is beyond the {MAX_BINS} a feature may have")));
        }
        builder.push_with_num_bits(bin, 4).map_err(|e| fhe_err("bins", e))?;
    }
    ser(&builder.build(), "bins")
}

/// One institution's contribution: its encrypted bins for the features
/// `first..first + count` of the scorecard.
#[derive(Debug, Clone)]
pub struct EncryptedBins {
    /// The first feature it covers.
    pub first: usize,
    /// How many.
    pub count: usize,
    /// [`encrypt_bins`]' output.
    pub list: Vec<u8>,
}

/// The scoring party: a subject's server key, installed on the calling
/// thread. Heavy: run it on a blocking thread.
pub struct Scorer {
    key: tfhe::ServerKey,
    key_id: [u8; 32],
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scorer")
    }
}

impl Scorer {
    /// Decompresses the subject's server key.
    pub fn new(subject: &SubjectPublic) -> Result<Self, MpcError> {
        let compressed: CompressedServerKey = de(&subject.server_key, KEY_LIMIT, "server key")?;
        Ok(Self { key: compressed.decompress(), key_id: subject.key_id })
    }

    /// Evaluates `card` on the institutions' encrypted bins, which must
    /// cover every feature exactly once.
    pub fn score(&self, card: &Scorecard, parts: &[EncryptedBins]) -> Result<EncryptedScore, MpcError> {
        card.validate()?;
        let mut covered = vec![false; card.features.len()];
        for part in parts {
            let range = part.first..part.first.saturating_add(part.count);
            if range.is_empty() || range.end > covered.len() || covered[range.clone()].iter().any(|&c| c) {
                return Err(fhe_err("bins", "the institutions' features overlap, or go beyond the scorecard's"));
            }
            covered[range].iter_mut().for_each(|c| *c = true);
        }
        if let Some(missing) = covered.iter().position(|&c| !c) {
            return Err(fhe_err("bins", format!("no institution sent feature '{}'", card.features[missing].name)));
        }
        tfhe::set_server_key(self.key.clone());
        let mut points: Vec<FheUint16> = Vec::with_capacity(card.features.len());
        for part in parts {
            let bins: Vec<FheUint4> = expand(&part.list, part.count, "bins")?;
            for (feature, bin) in card.features[part.first..part.first + part.count].iter().zip(&bins) {
                let table: Vec<(u16, u16)> = (0u16..).zip(feature.points.iter().copied()).collect();
                let table = MatchValues::new(table).map_err(|e| fhe_err("scorecard", e))?;
                let (value, _matched): (FheUint16, FheBool) =
                    bin.match_value(&table).map_err(|e| fhe_err("lookup", e))?;
                points.push(value);
            }
        }
        let total: FheUint16 = points.iter().sum::<FheUint16>() + card.base;
        let decision = total.ge(card.threshold);
        Ok(EncryptedScore { key_id: self.key_id, score: ser(&total, "score")?, decision: ser(&decision, "decision")? })
    }
}

#[cfg(test)]
mod tests;
