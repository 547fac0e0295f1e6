//! Fixtures the fuzz targets share: the known-answer vectors' keys, sets
//! and bounds (from the crates' `test-vectors/`), and a small PIR database.
//! Built once per process.
//!
//! Also the targets' allocator: the system's, aborting (a crash libFuzzer
//! reports, with the input) on any single allocation over
//! [`ALLOCATION_LIMIT`]. Every decoder checks sizes before it allocates, so
//! none may ask for more whatever the input claims. (libFuzzer's own
//! `-malloc_limit_mb` needs a sanitizer's allocator, which these builds do
//! not have.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write as _;
use std::sync::OnceLock;

use curve25519_dalek::ristretto::CompressedRistretto;
use rand_core::SeedableRng;
use stayput_psi::labeled::{EncodedSet, OprfKey};
use stayput_pir::{Database, Hint};
use stayput_zk_proofs::contribution::Bounds;

/// The largest single allocation a target may make: 256 MiB (4 GiB with
/// TFHE, whose keys are large).
pub const ALLOCATION_LIMIT: usize = if cfg!(feature = "fhe") { 4 << 30 } else { 256 << 20 };

struct Capped;

fn check(size: usize) {
    if size > ALLOCATION_LIMIT {
        // No allocation from here on: a fixed message and the size.
        let _ = writeln!(std::io::stderr(), "fuzz: an allocation of {size} bytes exceeds {ALLOCATION_LIMIT}");
        std::process::abort();
    }
}

// SAFETY: every call is passed to the system allocator unchanged; the
// wrapper only refuses sizes over the limit first.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: the caller's contract is GlobalAlloc::alloc's, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: as for alloc.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: as for alloc; ptr and layout come from this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr and layout come from this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

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

/// A small PIR database (200 records of 60 bytes: 7 columns of 64 slots),
/// its hint, and the OPRF value that opens `key-7`'s record.
#[derive(Debug)]
pub struct Pir {
    pub db: Database,
    pub hint: Hint,
    pub key_7: curve25519_dalek::ristretto::CompressedRistretto,
}

/// The PIR fixture.
pub fn pir() -> &'static Pir {
    static PIR: OnceLock<Pir> = OnceLock::new();
    PIR.get_or_init(|| {
        let records: Vec<(Vec<u8>, Vec<u8>)> =
            (0..200u32).map(|i| (format!("key-{i}").into_bytes(), format!("value of record {i}").into_bytes())).collect();
        let oprf = stayput_psi::oprf::OprfKey::from_bytes(&[3; 32]).expect("a key");
        let db = Database::build(&records, 60, [5; 32], &oprf, "fuzz").expect("database");
        let hint = db.hint();
        let key_7 = oprf.output(&stayput_pir::oprf_domain("fuzz").expect("a domain"), b"key-7");
        Pir { db, hint, key_7 }
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

/// The ledger's clock for the rules in the targets (2026-05-28).
pub const NOW: u64 = 1_780_000_000;

/// A consortium made of the record vectors
/// (`chain-connector/test-vectors/records-v2.json`: their members, the
/// first also the operator, dataset version, grant and task, set into the
/// state directly since the vectors are not one valid history): the state
/// a hostile record is judged against.
pub fn ledger_state() -> &'static stayput_chain_connector::rules::State {
    use stayput_chain_connector::records::{Record, Role, SignedRecord, TaskStatus};
    use stayput_chain_connector::rules::{GrantState, State, TaskState};
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let v = json(include_str!("../../chain-connector/test-vectors/records-v2.json"));
        let ledger = stayput_chain_connector::records::LedgerId(
            hex(field(&v, "ledger_id_hex")).try_into().expect("a 32-byte ledger id"),
        );
        let mut state = State::new(ledger);
        for r in v["records"].as_array().expect("records") {
            let signed = SignedRecord::from_bytes(&hex(field(r, "signed_record_hex"))).expect("a vector decodes");
            match signed.record {
                Record::Member(mut m) => {
                    if state.members.is_empty() && !m.roles.contains(&Role::Operator) {
                        m.roles.push(Role::Operator);
                    }
                    state.members.insert(m.org.clone(), m);
                }
                Record::DatasetVersion(d) => state.datasets.entry(d.dataset.clone()).or_default().push(d),
                Record::Grant(grant) => {
                    let g = GrantState { grant, uses: 0, items: 0, epsilon_spent: 0, revoked: false };
                    state.grants.insert(g.grant.id.clone(), g);
                }
                Record::Task(task) => {
                    let t = TaskState { task, status: TaskStatus::ALL[0], uses: Vec::new(), results: Vec::new() };
                    state.tasks.insert(t.task.id.clone(), t);
                }
                _ => {}
            }
        }
        assert!(!state.members.is_empty() && !state.grants.is_empty() && !state.tasks.is_empty(), "vectors");
        state
    })
}
