//! Known-answer vectors for the ECDH-PSI v2 wire format (X25519).
//!
//! `test-vectors/ecdh-x25519-v2.json` pins the hash to u-coordinates
//! (reproducible by any implementation of the spec in [`super::curve`]) and
//! full transcripts of small sessions in every mode from seeded randomness
//! (ChaCha20 seeds as given, scalar drawn before the order), plus invalid
//! messages with the error each must produce. A change that alters any
//! byte on the wire fails here; a deliberate one bumps the protocol version
//! and regenerates the file with `STAYPUT_WRITE_VECTORS=1 cargo test -p stayput-psi vectors`.

use serde::{Deserialize, Serialize};

use super::curve::HashToCoordinate;
use super::*;

/// The vectors beside this crate, found at run time: a test binary reused
/// from a shared target directory must not read another checkout's file.
fn vectors_path() -> std::path::PathBuf {
    std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("test-vectors/ecdh-x25519-v2.json")
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Vectors {
    protocol: String,
    hash_to_coordinate: Vec<HashVector>,
    sessions: Vec<SessionVector>,
    invalid: Vec<InvalidVector>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct HashVector {
    task_id: String,
    key_hex: String,
    point_hex: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct SessionVector {
    task_id: String,
    mode: String,
    batch_size: usize,
    requester_seed: u64,
    responder_seed: u64,
    requester_keys: Vec<String>,
    responder_keys: Vec<String>,
    responder_points_hex: Vec<String>,
    requests_hex: Vec<String>,
    replies_hex: Vec<String>,
    echo_hex: Vec<String>,
    cardinality: u64,
    requester_intersection: Option<Vec<u32>>,
    responder_intersection: Option<Vec<u32>>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct InvalidVector {
    description: String,
    message: String,
    hex: String,
    error: String,
}

fn session(mode: OutputMode, seed: u64) -> SessionVector {
    let requester_keys: Vec<String> = ["alice", "bob", "carol", "dave", "erin"].map(String::from).to_vec();
    let responder_keys: Vec<String> = ["bob", "frank", "erin", "grace"].map(String::from).to_vec();
    let task_id = "kat-task-0001".to_string();
    let batch_size = 2;
    let a: KeyList = requester_keys.iter().collect();
    let b: KeyList = responder_keys.iter().collect();
    let p = SessionParams::new(TaskId::new(task_id.clone()).unwrap(), mode, 5, 4, batch_size).unwrap();
    let mut transcript: [Vec<String>; 4] = Default::default();
    let (out_a, out_b) = run_observed(
        &p,
        &a,
        &b,
        &mut ChaCha20Rng::seed_from_u64(seed),
        &mut ChaCha20Rng::seed_from_u64(seed + 1),
        |phase, bytes| transcript[phase as usize].push(hex::encode(bytes)),
    )
    .unwrap();
    let [responder_points_hex, requests_hex, replies_hex, echo_hex] = transcript;
    SessionVector {
        task_id,
        mode: mode.name().into(),
        batch_size,
        requester_seed: seed,
        responder_seed: seed + 1,
        requester_keys,
        responder_keys,
        responder_points_hex,
        requests_hex,
        replies_hex,
        echo_hex,
        cardinality: out_a.cardinality(),
        requester_intersection: out_a.intersection().map(<[u32]>::to_vec),
        responder_intersection: out_b.intersection().map(<[u32]>::to_vec),
    }
}

fn invalid(description: &str, message: &str, bytes: &[u8]) -> InvalidVector {
    let error = match message {
        "point batch" => PointBatch::decode(bytes).map(drop),
        _ => TagBatch::decode(bytes).map(drop),
    };
    InvalidVector {
        description: description.into(),
        message: message.into(),
        hex: hex::encode(bytes),
        error: format!("{:?}", error.expect_err(description)),
    }
}

fn compute() -> Vectors {
    let task = TaskId::new("kat-task-0001").unwrap();
    let hasher = HashToCoordinate::new(PROTOCOL_LABEL, &task);
    let hash_to_coordinate = ["", "alice", "13800138000", "张三"]
        .into_iter()
        .map(|key| HashVector {
            task_id: "kat-task-0001".into(),
            key_hex: hex::encode(key),
            point_hex: hex::encode(hasher.hash(key.as_bytes())),
        })
        .collect();
    let sessions = OutputMode::ALL.into_iter().zip([11, 22, 33]).map(|(m, s)| session(m, s)).collect();
    let good = hex::decode(&session(OutputMode::IntersectionToRequester, 11).responder_points_hex[0]).unwrap();
    let mut non_canonical = good.clone();
    non_canonical[32..64].copy_from_slice(&[0xff; 32]);
    non_canonical[63] = 0x7f;
    let mut zero = good.clone();
    zero[..32].fill(0);
    let mut p = non_canonical.clone();
    p[32] = 0xed;
    let mut high_bit = good.clone();
    high_bit[63] |= 0x80;
    let invalid = vec![
        invalid("empty point batch", "point batch", &[]),
        invalid("point batch cut one byte short", "point batch", &good[..good.len() - 1]),
        invalid("second point is 2^255-1, not below p", "point batch", &non_canonical),
        invalid("first point is zero, of order 2", "point batch", &zero),
        invalid("second point is p = 2^255-19 itself", "point batch", &p),
        invalid("second point has bit 255 set", "point batch", &high_bit),
        invalid("tag batch of 13 bytes", "tag batch", &[7; 13]),
        invalid("empty tag batch", "tag batch", &[]),
    ];
    Vectors { protocol: String::from_utf8(PROTOCOL_LABEL.to_vec()).unwrap(), hash_to_coordinate, sessions, invalid }
}

#[test]
fn known_answer_vectors() {
    let computed = compute();
    if std::env::var_os("STAYPUT_WRITE_VECTORS").is_some() {
        std::fs::write(vectors_path(), serde_json::to_string_pretty(&computed).unwrap() + "\n").unwrap();
    }
    let stored: Vectors = serde_json::from_str(&std::fs::read_to_string(vectors_path()).unwrap()).unwrap();
    assert_eq!(stored.hash_to_coordinate, computed.hash_to_coordinate, "hash to coordinate changed");
    for (s, c) in stored.sessions.iter().zip(&computed.sessions) {
        assert_eq!(s, c, "transcript of the {} session changed", s.mode);
    }
    assert_eq!(stored.invalid, computed.invalid, "decoder verdicts changed");
    assert_eq!(stored, computed);
}

#[test]
fn stored_sessions_have_the_expected_outputs() {
    // Independent of the transcript bytes: keys in both lists are bob and erin.
    let stored: Vectors = serde_json::from_str(&std::fs::read_to_string(vectors_path()).unwrap()).unwrap();
    for s in &stored.sessions {
        assert_eq!(s.cardinality, 2);
        assert_eq!(s.responder_points_hex.len(), 2, "4 keys in batches of 2");
        assert_eq!(s.requests_hex.len(), 3, "5 keys in batches of 2");
        assert!(s.responder_points_hex.iter().all(|h| h.len() <= 2 * 2 * 32));
    }
    assert_eq!(stored.sessions[0].requester_intersection, Some(vec![1, 4]));
    assert_eq!(stored.sessions[1].responder_intersection, Some(vec![0, 2]));
    assert_eq!(stored.sessions[2].requester_intersection, None);
    assert_eq!(stored.sessions[2].replies_hex.len(), 3, "sorted replies in batches of 2");
    assert_eq!(stored.sessions[1].echo_hex.len(), 2);
}
