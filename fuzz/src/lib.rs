//! Fixtures the fuzz targets share: the known-answer vectors' keys, sets
//! and bounds (from the crates' `test-vectors/`), and a small PIR database.
//! Built once per process.

use std::sync::OnceLock;

use curve25519_dalek::ristretto::CompressedRistretto;
use rand_core::SeedableRng;
use stayput_psi::labeled::{EncodedSet, OprfKey};
use stayput_psi::pir::{Database, Hint};
use stayput_zk_proofs::contribution::Bounds;

/// Decodes hex from a known-answer file.
pub fn hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex");
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("known-answer file")
}

fn field<'a>(v: &'a serde_json::Value, name: &str) -> &'a str {
    v[name].as_str().unwrap_or_else(|| panic!("known-answer field {name}"))
}

/// A deterministic RNG (the targets must be reproducible from their input).
pub fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
    rand_chacha::ChaCha20Rng::seed_from_u64(seed)
}

/// The labeled-PSI known answer: the bureau's key, its encoded set and the
/// ids the bank queries.
#[derive(Debug)]
pub struct Labeled {
    pub key: OprfKey,
    pub dataset: String,
    pub set: EncodedSet,
    pub query_ids: Vec<Vec<u8>>,
}

/// `psi/test-vectors/labeled-psi-v1.json`.
pub fn labeled() -> &'static Labeled {
    static LABELED: OnceLock<Labeled> = OnceLock::new();
    LABELED.get_or_init(|| {
        let v = json(include_str!("../../psi/test-vectors/labeled-psi-v1.json"));
        let key = OprfKey::from_bytes(&hex(field(&v, "oprf_key_hex")).try_into().expect("32 bytes")).expect("key");
        let digest: [u8; 32] = hex(field(&v, "digest_hex")).try_into().expect("32 bytes");
        let set = EncodedSet::from_bytes(&hex(field(&v, "encoded_set_hex")), &digest).expect("set");
        let query_ids =
            v["query_ids"].as_array().expect("ids").iter().map(|s| s.as_str().expect("id").as_bytes().to_vec()).collect();
        Labeled { key, dataset: field(&v, "dataset").to_owned(), set, query_ids }
    })
}

/// The DLEQ known answer: context, public key, inputs and outputs.
#[derive(Debug)]
pub struct Dleq {
    pub context: Vec<u8>,
    pub public: curve25519_dalek::ristretto::RistrettoPoint,
    pub inputs: Vec<curve25519_dalek::ristretto::RistrettoPoint>,
    pub outputs: Vec<curve25519_dalek::ristretto::RistrettoPoint>,
}

/// `zk-proofs/test-vectors/dleq-ristretto255-v1.json`.
pub fn dleq() -> &'static Dleq {
    static DLEQ: OnceLock<Dleq> = OnceLock::new();
    DLEQ.get_or_init(|| {
        let v = json(include_str!("../../zk-proofs/test-vectors/dleq-ristretto255-v1.json"));
        let point = |h: &str| {
            CompressedRistretto::from_slice(&hex(h)).expect("32 bytes").decompress().expect("a point")
        };
        let points = |name: &str| -> Vec<_> {
            v[name].as_array().expect("points").iter().map(|p| point(p.as_str().expect("hex"))).collect()
        };
        Dleq {
            context: hex(field(&v, "context_hex")),
            public: point(field(&v, "public_key_hex")),
            inputs: points("inputs_hex"),
            outputs: points("outputs_hex"),
        }
    })
}

/// The contribution known answer: task, party and declared bounds.
#[derive(Debug)]
pub struct Contribution {
    pub task: String,
    pub party: String,
    pub bounds: Vec<Bounds>,
}

/// `zk-proofs/test-vectors/contribution-v1.json`.
pub fn contribution() -> &'static Contribution {
    static CONTRIBUTION: OnceLock<Contribution> = OnceLock::new();
    CONTRIBUTION.get_or_init(|| {
        let v = json(include_str!("../../zk-proofs/test-vectors/contribution-v1.json"));
        let bounds = v["bounds"]
            .as_array()
            .expect("bounds")
            .iter()
            .map(|b| Bounds {
                low: i128::from(b[0].as_i64().expect("low")),
                high: i128::from(b[1].as_i64().expect("high")),
            })
            .collect();
        Contribution { task: field(&v, "task").to_owned(), party: field(&v, "party").to_owned(), bounds }
    })
}

/// A small PIR database (200 records of 40 bytes: 7 columns of 64 slots)
/// and its hint.
#[derive(Debug)]
pub struct Pir {
    pub db: Database,
    pub hint: Hint,
}

/// The PIR fixture.
pub fn pir() -> &'static Pir {
    static PIR: OnceLock<Pir> = OnceLock::new();
    PIR.get_or_init(|| {
        let records: Vec<(Vec<u8>, Vec<u8>)> =
            (0..200u32).map(|i| (format!("key-{i}").into_bytes(), format!("value of record {i}").into_bytes())).collect();
        let db = Database::build(&records, 40, [5; 32]).expect("database");
        let hint = db.hint();
        Pir { db, hint }
    })
}

/// `bytes` repeated (or cut) to exactly `len` bytes; zeros when empty. Lets
/// a short input fill a message whose size the layout fixes.
pub fn cycle(bytes: &[u8], len: usize) -> Vec<u8> {
    if bytes.is_empty() {
        return vec![0; len];
    }
    bytes.iter().copied().cycle().take(len).collect()
}

/// Little-endian u32 words of `bytes` cycled to `words` words.
pub fn words(bytes: &[u8], words: usize) -> Vec<u32> {
    cycle(bytes, words * 4).chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))).collect()
}
