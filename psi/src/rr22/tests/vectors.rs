//! Known-answer vectors for the RR22-PSI v1 wire format.
//!
//! `test-vectors/rr22-v1.json` pins the transcript of small sessions in both
//! modes from seeded randomness (ChaCha20 seeds as given): short messages
//! in full, long ones (the base choices, the corrections, the trees, the store) by length and
//! SHA-256. A change that alters any byte on the wire fails here; a
//! deliberate one bumps the message version and regenerates the file with
//! `STAYPUT_WRITE_VECTORS=1 cargo test -p stayput-psi vectors`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::*;

fn vectors_path() -> std::path::PathBuf {
    std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")).join("test-vectors/rr22-v1.json")
}

/// Messages up to this size are stored in full.
const FULL_UP_TO: usize = 256;

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Vectors {
    protocol: String,
    sessions: Vec<SessionVector>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct SessionVector {
    task_id: String,
    mode: String,
    requester_seed: u64,
    responder_seed: u64,
    requester_keys: Vec<String>,
    responder_keys: Vec<String>,
    messages: Vec<MessageVector>,
    requester_intersection: Vec<u32>,
    responder_intersection: Option<Vec<u32>>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct MessageVector {
    step: String,
    len: usize,
    sha256: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    hex: Option<String>,
}

fn session(mode: OutputMode, requester_seed: u64, responder_seed: u64) -> SessionVector {
    let requester_keys = ["alice", "bob", "carol", "dave", "erin"];
    let responder_keys = ["bob", "frank", "erin", "grace"];
    let a: KeyList = requester_keys.iter().map(|k| k.as_bytes()).collect();
    let b: KeyList = responder_keys.iter().map(|k| k.as_bytes()).collect();
    let task = "kat-rr22-0001";
    let p = SessionParams::new(TaskId::new(task).unwrap(), mode, 5, 4).unwrap();
    let mut messages = Vec::new();
    let (out_a, out_b) = run_observed(
        &p,
        &a,
        &b,
        &mut ChaCha20Rng::seed_from_u64(requester_seed),
        &mut ChaCha20Rng::seed_from_u64(responder_seed),
        |step, bytes| {
            messages.push(MessageVector {
                step: format!("{step:?}"),
                len: bytes.len(),
                sha256: hex::encode(Sha256::digest(bytes)),
                hex: (bytes.len() <= FULL_UP_TO).then(|| hex::encode(bytes)),
            })
        },
    )
    .unwrap();
    SessionVector {
        task_id: task.into(),
        mode: mode.name().into(),
        requester_seed,
        responder_seed,
        requester_keys: requester_keys.map(String::from).to_vec(),
        responder_keys: responder_keys.map(String::from).to_vec(),
        messages,
        requester_intersection: out_a.intersection().to_vec(),
        responder_intersection: out_b.intersection().map(<[u32]>::to_vec),
    }
}

fn compute() -> Vectors {
    Vectors {
        protocol: String::from_utf8(PROTOCOL_LABEL.to_vec()).unwrap(),
        sessions: vec![
            session(OutputMode::IntersectionToRequester, 21, 22),
            session(OutputMode::IntersectionToBoth, 23, 24),
        ],
    }
}

#[test]
fn known_answer_vectors() {
    let computed = compute();
    if std::env::var_os("STAYPUT_WRITE_VECTORS").is_some() {
        std::fs::write(vectors_path(), serde_json::to_string_pretty(&computed).unwrap() + "\n").unwrap();
    }
    let stored: Vectors = serde_json::from_str(&std::fs::read_to_string(vectors_path()).unwrap()).unwrap();
    for (s, c) in stored.sessions.iter().zip(&computed.sessions) {
        assert_eq!(s, c, "transcript of the {} session changed", s.mode);
    }
    assert_eq!(stored, computed);
}

#[test]
fn stored_sessions_have_the_expected_outputs() {
    // Independent of the transcript bytes: keys in both lists are bob and erin.
    let stored: Vectors = serde_json::from_str(&std::fs::read_to_string(vectors_path()).unwrap()).unwrap();
    for s in &stored.sessions {
        assert_eq!(s.requester_intersection, vec![1, 4]);
        let steps: Vec<&str> = s.messages.iter().map(|m| m.step.as_str()).collect();
        assert_eq!(&steps[..5], ["Setup", "BaseChoices", "CotCorrections", "Trees", "Masked"]);
        assert_eq!(s.messages[0].len, 2 + 16 + 32);
        assert_eq!(s.messages[1].len, 2 + 128 * 32);
        // 5 keys: a store of 192 elements, 248 trees of depth 1.
        assert_eq!(s.messages[2].len, 2 + 5 + 128 * 8 * (248 * 129_usize).div_ceil(128) * 2);
        assert_eq!(s.messages[3].len, 2 + 1 + 248 * (32 + 16));
        assert_eq!(s.messages[4].len, 2 + 4 + 192 * 16);
        assert_eq!(s.messages[5].len, 2 + 1 + 4 * 6, "4 outputs of 40+3+2 bits");
    }
    assert_eq!(stored.sessions[0].responder_intersection, None);
    assert_eq!(stored.sessions[1].responder_intersection, Some(vec![0, 2]));
    // Every stored message decodes.
    for m in stored.sessions.iter().flat_map(|s| &s.messages) {
        if let Some(hex) = &m.hex {
            let bytes = hex::decode(hex).unwrap();
            match m.step.as_str() {
                "Setup" => drop(Setup::decode(&bytes).unwrap()),
                "Outputs" => drop(Outputs::decode(&bytes).unwrap()),
                "Matches" => drop(Matches::decode(&bytes).unwrap()),
                other => panic!("{other} is stored by digest only"),
            }
        }
    }
}
