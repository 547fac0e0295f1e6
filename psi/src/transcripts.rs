//! Known-answer transcripts shared by the OT protocols' tests (KKRT, RR22):
//! small sessions in both modes from seeded randomness, short messages in
//! full and long ones by length and SHA-256, kept in
//! `test-vectors/<protocol>-v1.json`. A change that alters any byte on the
//! wire fails; a deliberate one bumps the message version and regenerates
//! the file with `STAYPUT_WRITE_VECTORS=1 cargo test -p stayput-psi vectors`.

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::PsiError;
use crate::ecdh::{OutputMode, ResponderOutput};
use crate::keys::KeyList;
use crate::kkrt::RequesterOutput;

/// Messages up to this size are stored in full.
const FULL_UP_TO: usize = 256;
/// The requester's keys of every stored session.
pub(crate) const REQUESTER_KEYS: [&str; 5] = ["alice", "bob", "carol", "dave", "erin"];
/// The responder's keys of every stored session.
pub(crate) const RESPONDER_KEYS: [&str; 4] = ["bob", "frank", "erin", "grace"];

#[derive(Serialize, Deserialize, PartialEq, Debug)]
pub(crate) struct Vectors {
    pub(crate) protocol: String,
    pub(crate) sessions: Vec<SessionVector>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
pub(crate) struct SessionVector {
    pub(crate) task_id: String,
    pub(crate) mode: String,
    pub(crate) requester_seed: u64,
    pub(crate) responder_seed: u64,
    pub(crate) requester_keys: Vec<String>,
    pub(crate) responder_keys: Vec<String>,
    pub(crate) messages: Vec<MessageVector>,
    pub(crate) requester_intersection: Vec<u32>,
    pub(crate) responder_intersection: Option<Vec<u32>>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
pub(crate) struct MessageVector {
    pub(crate) step: String,
    pub(crate) len: usize,
    pub(crate) sha256: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) hex: Option<String>,
}

/// Bytes of a stored message: what the role decodes.
pub(crate) fn bytes(message: &MessageVector) -> Option<Vec<u8>> {
    message.hex.as_ref().map(|hex| hex::decode(hex).expect("stored hex"))
}

/// An observed run of a protocol: its messages seen by `observe`.
pub(crate) type Observed<'a> = &'a mut dyn FnMut(String, &[u8]);

/// Records one session of `task` in `mode`: `run` gets both key sets, both
/// seeded generators and the observer, and runs the protocol.
pub(crate) fn session(
    task: &str,
    mode: OutputMode,
    (requester_seed, responder_seed): (u64, u64),
    run: impl FnOnce(
        &KeyList,
        &KeyList,
        (&mut ChaCha20Rng, &mut ChaCha20Rng),
        Observed<'_>,
    ) -> Result<(RequesterOutput, ResponderOutput), PsiError>,
) -> SessionVector {
    let a: KeyList = REQUESTER_KEYS.iter().map(|k| k.as_bytes()).collect();
    let b: KeyList = RESPONDER_KEYS.iter().map(|k| k.as_bytes()).collect();
    let mut messages = Vec::new();
    let mut observe = |step: String, bytes: &[u8]| {
        messages.push(MessageVector {
            step,
            len: bytes.len(),
            sha256: hex::encode(Sha256::digest(bytes)),
            hex: (bytes.len() <= FULL_UP_TO).then(|| hex::encode(bytes)),
        })
    };
    let rngs = (&mut ChaCha20Rng::seed_from_u64(requester_seed), &mut ChaCha20Rng::seed_from_u64(responder_seed));
    let (out_a, out_b) = run(&a, &b, rngs, &mut observe).expect("a stored session runs");
    SessionVector {
        task_id: task.into(),
        mode: mode.name().into(),
        requester_seed,
        responder_seed,
        requester_keys: REQUESTER_KEYS.map(String::from).to_vec(),
        responder_keys: RESPONDER_KEYS.map(String::from).to_vec(),
        messages,
        requester_intersection: out_a.intersection().to_vec(),
        responder_intersection: out_b.intersection().map(<[u32]>::to_vec),
    }
}

/// Compares `computed` with the stored file (writing it first when asked)
/// and returns what is stored.
pub(crate) fn check(file: &str, computed: &Vectors) -> Vectors {
    let path = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("test-vectors")
        .join(file);
    if std::env::var_os("STAYPUT_WRITE_VECTORS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(computed).unwrap() + "\n").unwrap();
    }
    let stored: Vectors = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (s, c) in stored.sessions.iter().zip(&computed.sessions) {
        assert_eq!(s, c, "transcript of the {} session changed", s.mode);
    }
    assert_eq!(&stored, computed);
    // Independent of the transcript bytes: keys in both lists are bob and erin.
    for s in &stored.sessions {
        assert_eq!(s.requester_intersection, vec![1, 4]);
    }
    assert_eq!(stored.sessions[0].responder_intersection, None);
    assert_eq!(stored.sessions[1].responder_intersection, Some(vec![0, 2]));
    stored
}

/// Runs `run` on `raw_a` and `raw_b` (deduplicated) in both intersection
/// modes and checks each side's result against the plain intersection.
pub(crate) fn check_both_modes(
    raw_a: &[Vec<u8>],
    raw_b: &[Vec<u8>],
    seed: u64,
    run: impl Fn(OutputMode, &KeyList, &KeyList, u64) -> (RequesterOutput, ResponderOutput),
) {
    let (a, _) = raw_a.iter().collect::<KeyList>().dedup();
    let (b, _) = raw_b.iter().collect::<KeyList>().dedup();
    let (want_a, want_b) = crate::ecdh::tests::plain(&a, &b);
    for mode in [OutputMode::IntersectionToRequester, OutputMode::IntersectionToBoth] {
        let (out_a, out_b) = run(mode, &a, &b, seed);
        assert_eq!(out_a.intersection(), &want_a[..], "{mode}");
        assert_eq!(out_b.requester_len(), a.len() as u64);
        match mode {
            OutputMode::IntersectionToBoth => assert_eq!(out_b.intersection(), Some(&want_b[..])),
            _ => assert_eq!(out_b.intersection(), None),
        }
    }
}

/// The edge cases every OT protocol must get right: empty, one-sided,
/// equal, disjoint and single-key sets, duplicates.
pub(crate) fn edge_cases(check: impl Fn(&[Vec<u8>], &[Vec<u8>], u64)) {
    use crate::ecdh::tests::keys;
    let some = keys(0..20);
    check(&[], &[], 1);
    check(&[], &some, 2);
    check(&some, &[], 3);
    check(&some, &some, 4);
    check(&keys(0..10), &keys(10..20), 5);
    check(&keys([7]), &keys([7]), 6);
    check(&keys([7, 7, 7, 8]), &keys([7, 9, 9]), 7);
}
