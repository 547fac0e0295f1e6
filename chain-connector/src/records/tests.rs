//! Known-answer vectors for the canonical record encoding (records v2): the bytes
//! every backend signs, stores and hashes. Ed25519 signatures are
//! deterministic, so the vectors are stable; a deliberate format change
//! bumps the version and regenerates them with
//! `STAYPUT_WRITE_VECTORS=1 cargo test -p stayput-chain-connector vectors`.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::*;

/// The vectors beside this crate, found at run time: a test binary reused
/// from a shared target directory must not read another checkout's file.
fn vectors_path() -> std::path::PathBuf {
    std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("test-vectors/records-v2.json")
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Vector {
    kind: String,
    writer_secret_hex: String,
    signed_record_hex: String,
    record_hash_hex: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Invalid {
    description: String,
    hex: String,
    error: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Vectors {
    version: String,
    ledger_id_hex: String,
    records: Vec<Vector>,
    invalid: Vec<Invalid>,
}

fn samples() -> Vec<Record> {
    vec![
        Record::Member(Member {
            org: "bureau-a".into(),
            name: "征信 Bureau A".into(),
            roles: vec![Role::DataOwner, Role::Regulator],
            signing_key: [0x11; 32],
            endpoint: "https://10.0.0.2:7100".into(),
        }),
        Record::DatasetVersion(DatasetVersion {
            dataset: "blacklist".into(),
            owner: "bureau-a".into(),
            version: 3,
            schema_digest: [0x22; 32],
            content_digest: [0x33; 32],
            protocol_key: Some(vec![0x44; 32]),
        }),
        Record::Grant(Grant {
            id: "g-2026-001".into(),
            dataset: "blacklist".into(),
            grantee: "bank".into(),
            computations: vec![Computation::Blacklist, Computation::Psi],
            columns: vec!["national_id".into()],
            min_cohort: 10,
            max_uses: 100,
            max_items: 1_000_000,
            max_items_per_use: 500_000,
            expires_at: 1_893_456_000,
            epsilon_budget: 5_000,
        }),
        Record::RevokeGrant { grant: "g-2026-001".into() },
        Record::Task(Task::new(sample_request(), vec!["g-2026-001".into()])),
        Record::TaskStatus { task: sample_request().task_id(), status: TaskStatus::Running },
        Record::Use(UseRecord {
            task: sample_request().task_id(),
            grant: "g-2026-001".into(),
            items: 1000,
            epsilon: 250,
            shard: None,
        }),
        Record::Use(UseRecord {
            task: sample_request().task_id(),
            grant: "g-2026-001".into(),
            items: 1000,
            epsilon: 0,
            shard: Some(3),
        }),
        Record::Result(ResultRecord {
            task: sample_request().task_id(),
            result_digest: [0x66; 32],
            receiver: "bank".into(),
            intermediates: vec![[0x77; 32], [0x88; 32]],
        }),
        Record::RotateKey { new_key: OrgKey::from_bytes(&[8; 32]).public_key() },
        Record::Dispute(Dispute {
            id: "dispute-2026-001".into(),
            dataset: "blacklist-a".into(),
            version: 3,
            tag: [0x99; 8],
            sealed_id: vec![0xaa; 48],
            arbitrator: "court".into(),
            evidence_digest: [0xbb; 32],
            deadline: 1_893_456_000,
        }),
        Record::DisputeRuling { dispute: "dispute-2026-001".into(), state: DisputeState::Overturned },
    ]
}

/// The ledger the vectors are signed for: an EVM deployment.
fn sample_ledger() -> LedgerId {
    LedgerId::evm(20200, &[0xAB; 20])
}

fn sample_request() -> SignedTaskRequest {
    crate::tasks::TaskRequest {
        requester: "bank".into(),
        kind: Computation::Blacklist,
        datasets: vec!["blacklist".into()],
        receiver: "bank".into(),
        params: vec![1, 2, 3],
        nonce: [0x55; 16],
        issued_at: 1_790_000_000,
        ledger: sample_ledger(),
    }
    .sign(&OrgKey::from_bytes(&[9; 32]))
}

fn invalid(description: &str, bytes: &[u8]) -> Invalid {
    let error = SignedRecord::from_bytes(bytes).expect_err(description);
    Invalid { description: description.into(), hex: hex::encode(bytes), error: error.to_string() }
}

fn compute() -> Vectors {
    let secret = [7u8; 32];
    let key = OrgKey::from_bytes(&secret);
    let records: Vec<Vector> = samples()
        .into_iter()
        .map(|r| {
            let kind = r.kind().to_owned();
            let signed = SignedRecord::sign(r, "bureau-a", &key, &sample_ledger());
            Vector {
                kind,
                writer_secret_hex: hex::encode(secret),
                signed_record_hex: hex::encode(signed.to_bytes()),
                record_hash_hex: hex::encode(signed.hash()),
            }
        })
        .collect();
    let good = hex::decode(&records[6].signed_record_hex).unwrap();
    let mut trailing = good.clone();
    trailing.push(0);
    let mut unknown_kind = good.clone();
    unknown_kind[RECORD_TAG.len() + 4 + "bureau-a".len()] = 99;
    let mut version_1 = good[RECORD_TAG.len()..].to_vec();
    version_1.truncate(version_1.len() - 64);
    let mut version_3 = good.clone();
    version_3[3] = 3;
    let mut huge_list = Writer::new();
    huge_list.fixed(&RECORD_TAG).str("bank").u8(1).str("o").str("n").u32(5000);
    let mut bad_utf8 = Writer::new();
    bad_utf8.fixed(&RECORD_TAG).bytes(&[0xff, 0xfe]);
    let invalid = vec![
        invalid("one trailing byte", &trailing),
        invalid("cut short", &good[..good.len() - 1]),
        invalid("unknown record kind 99", &unknown_kind),
        invalid("a list of 5000 roles", &huge_list.into_bytes()),
        invalid("a writer name that is not UTF-8", &bad_utf8.into_bytes()),
        invalid("a records-v1 encoding (no tag)", &version_1),
        invalid("a records-v3 tag", &version_3),
    ];
    Vectors {
        version: "stayput/ledger/record/v2".into(),
        ledger_id_hex: hex::encode(sample_ledger().0),
        records,
        invalid,
    }
}

#[test]
fn vectors() {
    let computed = compute();
    if std::env::var_os("STAYPUT_WRITE_VECTORS").is_some() {
        std::fs::write(vectors_path(), serde_json::to_string_pretty(&computed).unwrap() + "\n").unwrap();
    }
    let stored: Vectors = serde_json::from_str(&std::fs::read_to_string(vectors_path()).unwrap()).unwrap();
    assert_eq!(stored, computed);
    // Every stored record decodes, verifies and re-encodes to the same bytes.
    let public = OrgKey::from_bytes(&[7; 32]).public_key();
    for v in &stored.records {
        let bytes = hex::decode(&v.signed_record_hex).unwrap();
        let record = SignedRecord::from_bytes(&bytes).unwrap();
        record.verify(&public, &sample_ledger()).unwrap();
        assert_eq!(record.to_bytes(), bytes);
        assert_eq!(hex::encode(record.hash()), v.record_hash_hex);
        assert_eq!(record.record.kind(), v.kind);
    }
}

#[test]
fn records_v1_are_refused_saying_so() {
    let stored = std::fs::read_to_string(vectors_path().with_file_name("records-v1.json"));
    assert!(stored.is_err(), "the v1 vectors are gone with the format");
    let v1 = compute().invalid.into_iter().find(|i| i.description.contains("v1")).unwrap();
    assert!(v1.error.contains("records-v1") && v1.error.contains("records v2"), "{}", v1.error);
}

#[test]
fn a_changed_byte_breaks_the_signature() {
    let key = OrgKey::generate();
    let signed = SignedRecord::sign(samples().remove(6), "bureau-a", &key, &sample_ledger());
    let mut tampered = signed.clone();
    if let Record::Use(u) = &mut tampered.record {
        u.items += 1;
    }
    assert!(signed.verify(&key.public_key(), &sample_ledger()).is_ok());
    assert!(matches!(tampered.verify(&key.public_key(), &sample_ledger()), Err(LedgerError::BadSignature { .. })));
    let other_ledger = LedgerId::evm(20201, &[0xAB; 20]);
    assert!(signed.verify(&key.public_key(), &other_ledger).is_err(), "the ledger's identity is signed too");
    let mut renamed = signed;
    renamed.writer = "bureau-b".into();
    assert!(renamed.verify(&key.public_key(), &sample_ledger()).is_err(), "the writer is signed too");
}

proptest! {
    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = SignedRecord::from_bytes(&bytes);
    }

    #[test]
    fn uses_round_trip(task in "[a-z0-9-]{1,40}", grant in "[a-z0-9-]{1,40}", items in any::<u64>(), epsilon in any::<u32>(), shard in proptest::option::of(any::<u32>())) {
        let key = OrgKey::from_bytes(&[3; 32]);
        let signed = SignedRecord::sign(Record::Use(UseRecord { task, grant, items, epsilon, shard }), "x", &key, &sample_ledger());
        prop_assert_eq!(SignedRecord::from_bytes(&signed.to_bytes()).unwrap(), signed);
    }
}

#[test]
fn two_members_agree_on_a_secret_no_one_else_computes() {
    let (bank, bureau, other) = (OrgKey::generate(), OrgKey::generate(), OrgKey::generate());
    let ours = bank.agree(&bureau.public_key(), b"label", b"task-1").unwrap();
    let theirs = bureau.agree(&bank.public_key(), b"label", b"task-1").unwrap();
    assert_eq!(*ours, *theirs, "both sides reach the same secret");
    assert_ne!(*ours, *bank.agree(&bureau.public_key(), b"label", b"task-2").unwrap(), "bound to the context");
    assert_ne!(*ours, *bank.agree(&bureau.public_key(), b"other", b"task-1").unwrap(), "bound to the label");
    assert_ne!(*ours, *other.agree(&bureau.public_key(), b"label", b"task-1").unwrap(), "a third key gets another");
    // The identity point (small order) and a non-point are refused.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert!(bank.agree(&identity, b"label", b"t").is_err());
    let not_a_point = (2u8..=255)
        .map(|y| {
            let mut k = [0u8; 32];
            k[0] = y;
            k
        })
        .find(|k| ed25519_dalek::VerifyingKey::from_bytes(k).is_err())
        .unwrap();
    assert!(bank.agree(&not_a_point, b"label", b"t").is_err());
}

#[test]
fn a_value_sealed_to_a_member_opens_with_its_key_only() {
    let (court, other) = (OrgKey::generate(), OrgKey::generate());
    let sealed = OrgKey::seal_to(&court.public_key(), b"label", b"dispute-1", b"ID000123").unwrap();
    assert_eq!(court.open_sealed(b"label", b"dispute-1", &sealed).unwrap().as_slice(), b"ID000123");
    assert!(other.open_sealed(b"label", b"dispute-1", &sealed).is_err(), "another member");
    assert!(court.open_sealed(b"label", b"dispute-2", &sealed).is_err(), "another record");
    let mut changed = sealed.clone();
    changed[40] ^= 1;
    assert!(court.open_sealed(b"label", b"dispute-1", &changed).is_err(), "a changed byte");
    assert!(court.open_sealed(b"label", b"dispute-1", &sealed[..50]).is_err(), "too short");
    assert_ne!(sealed, OrgKey::seal_to(&court.public_key(), b"label", b"dispute-1", b"ID000123").unwrap(), "fresh");
}
