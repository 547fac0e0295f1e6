//! Known-answer vectors for the RR22-PSI v1 wire format
//! (`test-vectors/rr22-v1.json`, see [`crate::transcripts`]).

use super::*;
use crate::transcripts::{self, Vectors, bytes};

fn compute() -> Vectors {
    let session = |mode, seeds| {
        let task = "kat-rr22-0001";
        transcripts::session(task, mode, seeds, |a, b, (ra, rb), observe| {
            let p = SessionParams::new(TaskId::new(task).unwrap(), mode, 5, 4).unwrap();
            run_observed(&p, a, b, ra, rb, |step, bytes| observe(format!("{step:?}"), bytes))
        })
    };
    Vectors {
        protocol: String::from_utf8(PROTOCOL_LABEL.to_vec()).unwrap(),
        sessions: vec![
            session(OutputMode::IntersectionToRequester, (21, 22)),
            session(OutputMode::IntersectionToBoth, (23, 24)),
        ],
    }
}

#[test]
fn known_answer_vectors() {
    let stored = transcripts::check("rr22-v1.json", &compute());
    for s in &stored.sessions {
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
    for m in stored.sessions.iter().flat_map(|s| &s.messages) {
        if let Some(bytes) = bytes(m) {
            match m.step.as_str() {
                "Setup" => drop(Setup::decode(&bytes).unwrap()),
                "Outputs" => drop(Outputs::decode(&bytes).unwrap()),
                "Matches" => drop(Matches::decode(&bytes).unwrap()),
                other => panic!("{other} is stored by digest only"),
            }
        }
    }
}
