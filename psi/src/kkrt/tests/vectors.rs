//! Known-answer vectors for the KKRT-PSI v1 wire format
//! (`test-vectors/kkrt-v1.json`, see [`crate::transcripts`]).

use super::*;
use crate::transcripts::{self, Vectors, bytes};

fn compute() -> Vectors {
    let session = |mode, seeds| {
        let task = "kat-kkrt-0001";
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
    let stored = transcripts::check("kkrt-v1.json", &compute());
    for s in &stored.sessions {
        let steps: Vec<&str> = s.messages.iter().map(|m| m.step.as_str()).collect();
        assert_eq!(&steps[..4], ["Setup", "BaseChoices", "Corrections", "Outputs"]);
        assert_eq!(s.messages[0].len, 2 + 16 + 4 + 32);
        assert_eq!(s.messages[1].len, 2 + 512 * 32);
        assert_eq!(s.messages[2].len, 2 + 4 + 128 * 64, "5 keys take one block of 128 bins");
        assert_eq!(s.messages[3].len, 2 + 1 + 12 * 6, "3·4 outputs of 40+3+4 bits");
    }
    // Every stored message decodes.
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
