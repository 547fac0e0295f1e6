//! TFHE wrappers (feature `fhe`; not in scripts/fuzz, see ARCHITECTURE.md):
//! the evaluator's decoding of a site's encrypted census and extremes
//! lists, the requester's decoding of the evaluator's ciphertexts and a
//! site's decoding of the requester's public key, and a subject's key
//! files (`stayput subject keys`: the public file a scorer and the
//! institutions read, the secret file). The first byte picks
//! which; the rest is either the message itself (second byte 0) or edits
//! (4-byte offset, xor byte) applied to an honest message made at start-up
//! under fresh keys, which reaches past the format checks far more often.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stayput_fuzz as _; // the capped allocator
use stayput_mpc_engine::fhe::{Evaluator, Extreme, PublicMaterial, RequesterKeys, encrypt_census, encrypt_extremes};
use stayput_mpc_engine::score::{SubjectKeys, SubjectPublic};

struct Fixture {
    keys: RequesterKeys,
    public: PublicMaterial,
    evaluator: Evaluator,
    census: Vec<u8>,
    extremes: Vec<u8>,
    token: Vec<u8>,
    subject_public: Vec<u8>,
    subject_secret: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (keys, public) = RequesterKeys::generate().expect("keys");
        let evaluator = Evaluator::new(&public.server_key).expect("evaluator");
        let census = encrypt_census(&public.public_key, &[3, 9], &[11, 12]).expect("census");
        let extremes = encrypt_extremes(&public.public_key, &[Extreme::Min], &[Some(-4)]).expect("extremes");
        let token = evaluator.census(&[None, None], &[(census.clone(), true)], 5).expect("census")[0][0].clone();
        let (subject, subject_public) = SubjectKeys::generate().expect("subject keys");
        let subject_secret = subject.to_bytes().expect("subject key file").to_vec();
        let subject_public = subject_public.to_bytes();
        Fixture { keys, public, evaluator, census, extremes, token, subject_public, subject_secret }
    })
}

fn message(honest: &[u8], data: &[u8]) -> Vec<u8> {
    match data.split_first() {
        None => honest.to_vec(),
        Some((0, raw)) => raw.to_vec(),
        Some((_, edits)) => {
            let mut out = honest.to_vec();
            for edit in edits.chunks_exact(5) {
                let at = u32::from_le_bytes(edit[..4].try_into().unwrap()) as usize;
                if !out.is_empty() {
                    let at = at % out.len();
                    out[at] ^= edit[4];
                }
            }
            out
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = data.split_first() else { return };
    let f = fixture();
    match which % 6 {
        0 => {
            let _ = f.evaluator.census(&[None, None], &[(message(&f.census, rest), true)], 5);
        }
        1 => {
            let _ = f.evaluator.extremes(&[Extreme::Min], &[message(&f.extremes, rest)]);
        }
        2 => {
            let _ = f.keys.decrypt_tokens(&[message(&f.token, rest)]);
            let _ = f.keys.decrypt_extremes(&[message(&f.token, rest)], &[Extreme::Max]);
        }
        3 => {
            let _ = encrypt_census(&message(&f.public.public_key, rest), &[1], &[2]);
        }
        4 => {
            let _ = SubjectPublic::from_bytes(&message(&f.subject_public, rest));
        }
        _ => {
            let _ = SubjectKeys::from_bytes(&message(&f.subject_secret, rest));
        }
    }
});
