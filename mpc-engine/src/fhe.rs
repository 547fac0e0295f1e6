//! TFHE post-processing of per-site aggregates (feature `fhe`, on by
//! default): what the requester must learn only after a non-linear step.
//!
//! * **Cross-site min and max.** Each site encrypts its local extreme under
//!   the requester's compact public key; the evaluator (the coordinator,
//!   holding the requester's server key — which decrypts nothing) takes the
//!   minimum or maximum over the sites' ciphertexts; only the requester's
//!   client key decrypts the result. No one learns a site's own extreme.
//! * **The census: which gates pass** ([`crate::gates`]). Each site
//!   encrypts its count at every gate (group sizes, measures' n, histogram
//!   bins) and, per gate, a fresh random 32-bit *token* it keeps. The
//!   evaluator adds the counts of every site except the requester's own
//!   (a requester that is also a site could otherwise lift a small cell
//!   over the threshold with its own rows and subtract them afterwards),
//!   compares each sum with the minimum cohort and returns, per site and
//!   gate, the site's token where the gate passes and 0 where it does not.
//!   The requester decrypts which gates pass and the tokens of those gates,
//!   and must show each site its own tokens to have a gate shared: it
//!   cannot claim a gate passes without the token, which it never sees for
//!   a gate that does not (a guess succeeds with probability 2^-32 per
//!   gate, and each try costs a recorded task).
//!
//! **Encodings.** A fixed-point value v (|v| < 2^53) is carried as the
//! order-preserving u64 v + 2^63 in a `FheUint64`; a site without a value
//! sends the neutral element (u64::MAX for min, 0 for max). Counts are
//! `FheUint32` (a site's count is below 2^32; sums wrap, which can only
//! make a gate fail), and so are tokens.
//!
//! **Cost model** (this project's 2-core machine, default parameters):
//! FheUint64 add ≈ 0.9 s, comparison ≈ 0.6 s, min/max ≈ a comparison and
//! a select; FheUint32 about half of that. A min or max over s sites costs
//! s − 1 min/max operations; the census of g gates over s sites (c of
//! them counted) costs g·(c − 1) additions, then per gate one scalar
//! subtraction and one scalar comparison (1 ≤ n < m ⇔ n − 1 < m − 1 in
//! wrapping arithmetic), and g·s selects of a token. Key generation is done once per task by the requester. TFHE is
//! therefore only ever used on per-site aggregates, never per row, and
//! never for multiplications (≈ 24 s for 64 bits).
//!
//! **Serialisation** is tfhe's safe serialisation: versioned, typed headers,
//! with a size limit checked before allocation. A public key (at a site)
//! and an encrypted list (at the evaluator) must also conform to this
//! project's parameter set, with a bounded number of blocks, and a list
//! must hold the expected number of values. The requester's server key is
//! only size-bounded: tfhe does not expose its conformance parameters, so
//! a requester could make the evaluator allocate what its key's declared
//! dimensions ask (a denial of service by an authenticated member, not a
//! disclosure).

use tfhe::prelude::*;
use tfhe::safe_serialization::{safe_deserialize, safe_deserialize_conformant, safe_serialize};
use tfhe::{
    ClientKey, CompactCiphertextList, CompactPublicKey, CompressedServerKey, ConfigBuilder, FheBool, FheUint32,
    FheUint64, ServerKey, set_server_key,
};

use crate::MpcError;
use crate::local::group_count;
use crate::query::{CohortQuery, Measure};

/// Largest serialised key accepted.
pub const KEY_LIMIT: u64 = 1 << 31;
/// Largest serialised ciphertext or list accepted.
pub const CIPHERTEXT_LIMIT: u64 = 1 << 26;
/// Largest serialised compact public key accepted (a site's bound).
pub const PUBLIC_KEY_LIMIT: u64 = 1 << 24;
/// Most values in one encrypted list.
pub const MAX_VALUES: usize = 1024;
const OFFSET: i128 = 1 << 63;

/// Which extreme a measure asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extreme {
    /// Smallest across sites.
    Min,
    /// Largest across sites.
    Max,
}

/// The extremes a query asks for, per group then per min/max measure in
/// query order (the layout of [`crate::local::LocalStats::extrema`]).
pub fn extreme_kinds(query: &CohortQuery) -> Vec<Extreme> {
    let per_group: Vec<Extreme> = query
        .measures
        .iter()
        .filter_map(|m| match m {
            Measure::Min { .. } => Some(Extreme::Min),
            Measure::Max { .. } => Some(Extreme::Max),
            _ => None,
        })
        .collect();
    std::iter::repeat_n(per_group, group_count(query)).flatten().collect()
}

pub(crate) fn fhe_err(what: &str, e: impl std::fmt::Display) -> MpcError {
    MpcError::Fhe(format!("{what}: {e}"))
}

pub(crate) fn ser<T: serde::Serialize + tfhe::named::Named + tfhe::Versionize>(
    value: &T,
    what: &str,
) -> Result<Vec<u8>, MpcError> {
    let mut out = Vec::new();
    safe_serialize(value, &mut out, KEY_LIMIT).map_err(|e| fhe_err(what, e))?;
    Ok(out)
}

pub(crate) fn de<T>(bytes: &[u8], limit: u64, what: &str) -> Result<T, MpcError>
where
    T: serde::de::DeserializeOwned + tfhe::named::Named + tfhe::Unversionize,
{
    if bytes.len() as u64 > limit {
        return Err(fhe_err(what, format!("{} bytes exceed the limit of {limit}", bytes.len())));
    }
    safe_deserialize(bytes, limit).map_err(|e| fhe_err(what, e))
}

/// What the requester publishes for a task: its compact public key (for
/// the sites) and its compressed server key (for the evaluator).
#[derive(Clone)]
pub struct PublicMaterial {
    /// The compact public key, serialised.
    pub public_key: Vec<u8>,
    /// The compressed server key, serialised.
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for PublicMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicMaterial(public key {} B, server key {} B)", self.public_key.len(), self.server_key.len())
    }
}

/// The requester's secret key for one task.
pub struct RequesterKeys {
    client: ClientKey,
}

impl std::fmt::Debug for RequesterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequesterKeys(redacted)")
    }
}

impl RequesterKeys {
    /// Fresh keys (seconds of work: run it off the async executor).
    pub fn generate() -> Result<(Self, PublicMaterial), MpcError> {
        let (client, public_key, server_key) = fresh_keys()?;
        Ok((Self { client }, PublicMaterial { public_key, server_key }))
    }

    /// The extremes the evaluator returned (`None` where no site had a value).
    pub fn decrypt_extremes(&self, items: &[Vec<u8>], kinds: &[Extreme]) -> Result<Vec<Option<i64>>, MpcError> {
        if items.len() != kinds.len() {
            return Err(MpcError::Shape { expected: kinds.len(), got: items.len() });
        }
        items
            .iter()
            .zip(kinds)
            .map(|(item, kind)| {
                let ct: FheUint64 = de(item, CIPHERTEXT_LIMIT, "extreme")?;
                let clear: u64 = ct.decrypt(&self.client);
                let neutral = match kind {
                    Extreme::Min => u64::MAX,
                    Extreme::Max => 0,
                };
                Ok((clear != neutral).then(|| i64::try_from(i128::from(clear) - OFFSET).unwrap_or(i64::MAX)))
            })
            .collect()
    }

    /// The census's answer for one site: per gate, the site's token where
    /// the gate passes and `None` where it does not.
    pub fn decrypt_tokens(&self, items: &[Vec<u8>]) -> Result<Vec<Option<u32>>, MpcError> {
        if items.len() > MAX_VALUES {
            return Err(MpcError::Shape { expected: MAX_VALUES, got: items.len() });
        }
        items
            .iter()
            .map(|item| {
                let ct: FheUint32 = de(item, CIPHERTEXT_LIMIT, "token")?;
                let clear: u32 = ct.decrypt(&self.client);
                Ok((clear != 0).then_some(clear))
            })
            .collect()
    }
}

/// A fresh client key of this project's configuration, with its compact
/// public key and compressed server key, serialised.
pub(crate) fn fresh_keys() -> Result<(ClientKey, Vec<u8>, Vec<u8>), MpcError> {
    let client = ClientKey::generate(ConfigBuilder::default().build());
    let public = CompactPublicKey::try_new(&client).map_err(|e| fhe_err("compact public key", e))?;
    let server = CompressedServerKey::new(&client);
    Ok((client, ser(&public, "public key")?, ser(&server, "server key")?))
}

/// The encryption parameters of this project's TFHE configuration: what a
/// public key and an encrypted list must conform to.
fn encryption_parameters() -> Result<tfhe::shortint::parameters::CompactPublicKeyEncryptionParameters, MpcError> {
    ConfigBuilder::default().build().public_key_encryption_parameters().map_err(|e| fhe_err("parameters", e))
}

/// A public key, checked to be of this project's parameters (a key of other
/// dimensions would make encryption allocate or fail at will).
pub(crate) fn public_key(bytes: &[u8]) -> Result<CompactPublicKey, MpcError> {
    if bytes.len() as u64 > PUBLIC_KEY_LIMIT {
        return Err(fhe_err("public key", format!("{} bytes exceed the limit of {PUBLIC_KEY_LIMIT}", bytes.len())));
    }
    safe_deserialize_conformant(bytes, PUBLIC_KEY_LIMIT, &encryption_parameters()?)
        .map_err(|e| fhe_err("public key", e))
}

/// A site encrypts its local extremes (fixed point) for the evaluator.
pub fn encrypt_extremes(public: &[u8], kinds: &[Extreme], values: &[Option<i64>]) -> Result<Vec<u8>, MpcError> {
    if kinds.len() != values.len() || values.len() > MAX_VALUES {
        return Err(MpcError::Shape { expected: kinds.len(), got: values.len() });
    }
    let pk = public_key(public)?;
    let mut builder = CompactCiphertextList::builder(&pk);
    for (kind, v) in kinds.iter().zip(values) {
        let encoded = match (v, kind) {
            (Some(v), _) => u64::try_from(i128::from(*v) + OFFSET).map_err(|_| fhe_err("extreme", "out of range"))?,
            (None, Extreme::Min) => u64::MAX,
            (None, Extreme::Max) => 0,
        };
        builder.push(encoded);
    }
    ser(&builder.build(), "extremes")
}

/// A site encrypts its count at every gate and its token for every gate
/// (one list: the counts, then the tokens; tokens are non-zero).
pub fn encrypt_census(public: &[u8], counts: &[u64], tokens: &[u32]) -> Result<Vec<u8>, MpcError> {
    if counts.len() != tokens.len() || 2 * counts.len() > MAX_VALUES {
        return Err(MpcError::Shape { expected: counts.len().min(MAX_VALUES / 2), got: tokens.len() });
    }
    if tokens.contains(&0) {
        return Err(fhe_err("census", "a token is zero"));
    }
    let pk = public_key(public)?;
    let mut builder = CompactCiphertextList::builder(&pk);
    for c in counts {
        builder.push(u32::try_from(*c).map_err(|_| fhe_err("count", "a site's count exceeds 2^32"))?);
    }
    for t in tokens {
        builder.push(*t);
    }
    ser(&builder.build(), "census")
}

/// The evaluator: the requester's server key, installed on the calling
/// thread (tfhe keeps it thread-local). Heavy: run it on a blocking thread.
pub struct Evaluator {
    key: ServerKey,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Evaluator")
    }
}

pub(crate) fn expand<T: tfhe::HlExpandable + tfhe::prelude::Tagged>(
    bytes: &[u8],
    len: usize,
    what: &str,
) -> Result<Vec<T>, MpcError> {
    if bytes.len() as u64 > CIPHERTEXT_LIMIT {
        return Err(fhe_err(what, format!("{} bytes exceed the limit of {CIPHERTEXT_LIMIT}", bytes.len())));
    }
    // Conformant to this project's parameters, with a bounded number of
    // blocks, before anything is expanded or computed on.
    let constraint =
        tfhe::conformance::ListSizeConstraint::try_size_in_range(1, 64 * MAX_VALUES).map_err(|e| fhe_err(what, e))?;
    let mut params = tfhe::CompactCiphertextListConformanceParams::from_parameters_and_size_constraint(
        encryption_parameters()?,
        constraint,
    );
    // The default configuration encrypts without packing.
    params.allow_unpacked = true;
    let list: CompactCiphertextList =
        safe_deserialize_conformant(bytes, CIPHERTEXT_LIMIT, &params).map_err(|e| fhe_err(what, e))?;
    if list.len() != len {
        return Err(MpcError::Shape { expected: len, got: list.len() });
    }
    let expanded = list.expand().map_err(|e| fhe_err(what, e))?;
    (0..len)
        .map(|i| expanded.get::<T>(i).map_err(|e| fhe_err(what, e))?.ok_or_else(|| fhe_err(what, "missing value")))
        .collect()
}

impl Evaluator {
    /// Decompresses the requester's server key.
    pub fn new(server_key: &[u8]) -> Result<Self, MpcError> {
        let compressed: CompressedServerKey = de(server_key, KEY_LIMIT, "server key")?;
        Ok(Self { key: compressed.decompress() })
    }

    /// Min or max across the sites' encrypted extremes, per measure.
    pub fn extremes(&self, kinds: &[Extreme], sites: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, MpcError> {
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        set_server_key(self.key.clone());
        let mut acc: Option<Vec<FheUint64>> = None;
        for site in sites {
            let values: Vec<FheUint64> = expand(site, kinds.len(), "extremes")?;
            acc = Some(match acc {
                None => values,
                Some(prev) => prev
                    .iter()
                    .zip(&values)
                    .zip(kinds)
                    .map(|((a, b), kind)| match kind {
                        Extreme::Min => a.min(b),
                        Extreme::Max => a.max(b),
                    })
                    .collect(),
            });
        }
        let acc = acc.ok_or_else(|| fhe_err("extremes", "no site"))?;
        acc.iter().map(|c| ser(c, "extreme")).collect()
    }

    /// The census ([module docs](self)): `families` has one entry per gate
    /// ([`crate::gates::families`]); `sites` holds each site's list from
    /// [`encrypt_census`] and whether its counts count (the requester's own
    /// do not). A gate fails when the pooled count of the counted sites is
    /// between 1 and `min_cohort` − 1, and so does every bin of a
    /// histogram whose failing bins add up to between 1 and `min_cohort` −
    /// 1 (else a released total minus the released bins would give them
    /// away). Returns, per site in order and per gate, the site's token
    /// where the gate passes and an encrypted 0 where it fails.
    pub fn census(
        &self,
        families: &[Option<usize>],
        sites: &[(Vec<u8>, bool)],
        min_cohort: u32,
    ) -> Result<Vec<Vec<Vec<u8>>>, MpcError> {
        let gates = families.len();
        if gates == 0 || 2 * gates > MAX_VALUES || families.iter().flatten().any(|f| *f >= gates) {
            return Err(MpcError::Shape { expected: MAX_VALUES / 2, got: gates });
        }
        set_server_key(self.key.clone());
        let mut sums: Option<Vec<FheUint32>> = None;
        let mut tokens = Vec::with_capacity(sites.len());
        for (list, counted) in sites {
            let mut values: Vec<FheUint32> = expand(list, 2 * gates, "census")?;
            tokens.push(values.split_off(gates));
            if *counted {
                sums = Some(match sums {
                    None => values,
                    Some(prev) => prev.iter().zip(&values).map(|(a, b)| a + b).collect(),
                });
            }
        }
        let sums = sums.ok_or_else(|| fhe_err("census", "no site's counts count"))?;
        let zero = FheUint32::encrypt_trivial(0u32);
        let threshold = min_cohort.max(1) - 1;
        // 1 <= s < m  <=>  s - 1 < m - 1 in wrapping u32 arithmetic (an
        // empty gate wraps to u32::MAX and passes).
        let mut small: Vec<FheBool> = sums.iter().map(|s| (s - 1u32).lt(threshold)).collect();
        // Complementary disclosure: per histogram, what its failing bins add to.
        let mut withheld: std::collections::BTreeMap<usize, FheUint32> = std::collections::BTreeMap::new();
        for (g, family) in families.iter().enumerate() {
            if let Some(f) = family {
                let part = small[g].if_then_else(&sums[g], &zero);
                let total = match withheld.remove(f) {
                    None => part,
                    Some(acc) => acc + part,
                };
                withheld.insert(*f, total);
            }
        }
        let family_small: std::collections::BTreeMap<usize, FheBool> =
            withheld.into_iter().map(|(f, w)| (f, (w - 1u32).lt(threshold))).collect();
        for (g, family) in families.iter().enumerate() {
            if let Some(f) = family {
                small[g] = &small[g] | &family_small[f];
            }
        }
        tokens
            .iter()
            .map(|site| site.iter().zip(&small).map(|(t, small)| ser(&small.if_then_else(&zero, t), "token")).collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One key generation for every check: the expensive part.
    #[test]
    fn extremes_and_census_under_tfhe() {
        let (keys, material) = RequesterKeys::generate().unwrap();
        let evaluator = Evaluator::new(&material.server_key).unwrap();
        let kinds = [Extreme::Min, Extreme::Max];
        let sites = [
            encrypt_extremes(&material.public_key, &kinds, &[Some(-1250), Some(18_000)]).unwrap(),
            encrypt_extremes(&material.public_key, &kinds, &[Some(310), None]).unwrap(),
            encrypt_extremes(&material.public_key, &kinds, &[None, Some(21_050)]).unwrap(),
        ];
        let out = evaluator.extremes(&kinds, &sites).unwrap();
        assert_eq!(keys.decrypt_extremes(&out, &kinds).unwrap(), vec![Some(-1250), Some(21_050)]);

        // Three gates, two counted sites and the requester's own (not
        // counted: its 100 rows do not lift the first gate).
        let census = [
            (encrypt_census(&material.public_key, &[3, 0, 40], &[11, 12, 13]).unwrap(), true),
            (encrypt_census(&material.public_key, &[4, 0, 1], &[21, 22, 23]).unwrap(), true),
            (encrypt_census(&material.public_key, &[100, 0, 0], &[31, 32, 33]).unwrap(), false),
        ];
        let out = evaluator.census(&[None; 3], &census, 10).unwrap();
        assert_eq!(out.len(), 3);
        // 7 < 10 fails; an empty gate and 41 pass.
        assert_eq!(keys.decrypt_tokens(&out[0]).unwrap(), vec![None, Some(12), Some(13)]);
        assert_eq!(keys.decrypt_tokens(&out[1]).unwrap(), vec![None, Some(22), Some(23)]);
        assert_eq!(keys.decrypt_tokens(&out[2]).unwrap(), vec![None, Some(32), Some(33)]);

        // A histogram of four bins (one family): one small bin alone would
        // be given away by a released total, so the whole histogram fails;
        // two small bins adding to 10 or more may be withheld alone.
        let bins = [Some(0), Some(0), Some(0), Some(0)];
        let one_small = [(encrypt_census(&material.public_key, &[50, 3, 0, 20], &[1, 2, 3, 4]).unwrap(), true)];
        let out = evaluator.census(&bins, &one_small, 10).unwrap();
        assert_eq!(keys.decrypt_tokens(&out[0]).unwrap(), vec![None; 4]);
        let two_small = [(encrypt_census(&material.public_key, &[50, 6, 7, 20], &[1, 2, 3, 4]).unwrap(), true)];
        let out = evaluator.census(&bins, &two_small, 10).unwrap();
        assert_eq!(keys.decrypt_tokens(&out[0]).unwrap(), vec![Some(1), None, None, Some(4)]);

        // Bad input: a list of the wrong length, garbage bytes, zero tokens,
        // no counted site, a family out of range.
        assert!(evaluator.census(&[None; 2], &census, 10).is_err());
        assert!(evaluator.census(&[None; 3], &[(census[0].0.clone(), false)], 10).is_err());
        assert!(evaluator.census(&[Some(3), None, None], &census, 10).is_err());
        assert!(evaluator.extremes(&kinds, &[vec![1, 2, 3]]).is_err());
        assert!(keys.decrypt_tokens(&[vec![0; 16]]).is_err());
        assert!(encrypt_census(&[1, 2, 3], &[1], &[1]).is_err());
        assert!(encrypt_census(&material.public_key, &[1], &[0]).is_err());
        assert!(encrypt_census(&material.public_key, &[1, 2], &[1]).is_err());
    }
}
