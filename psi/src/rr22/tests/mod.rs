use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::ecdh::tests::keys;
use crate::group::TaskId;
use crate::keys::{KeyList, encode_key};

mod vectors;

fn params(mode: OutputMode, a: usize, b: usize) -> SessionParams {
    SessionParams::new(TaskId::new("task-test").unwrap(), mode, a as u64, b as u64).unwrap()
}

fn rngs(seed: u64) -> (ChaCha20Rng, ChaCha20Rng) {
    (ChaCha20Rng::seed_from_u64(seed), ChaCha20Rng::seed_from_u64(seed ^ 0x5eed))
}

fn run(mode: OutputMode, a: &KeyList, b: &KeyList, seed: u64) -> (RequesterOutput, ResponderOutput) {
    let (mut ra, mut rb) = rngs(seed);
    run_in_memory(&params(mode, a.len(), b.len()), a, b, &mut ra, &mut rb).unwrap()
}

fn check_both_modes(raw_a: &[Vec<u8>], raw_b: &[Vec<u8>], seed: u64) {
    crate::transcripts::check_both_modes(raw_a, raw_b, seed, run);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Random sets over a small universe, so overlaps and duplicates are common.
    #[test]
    fn matches_plain_intersection(
        a in proptest::collection::vec(0u32..60, 0..40),
        b in proptest::collection::vec(0u32..60, 0..40),
        seed in any::<u64>(),
    ) {
        check_both_modes(&keys(a), &keys(b), seed);
    }

    /// Very unequal sizes.
    #[test]
    fn unequal_sizes(small in proptest::collection::vec(0u32..400, 0..3), seed in any::<u64>()) {
        let large = keys(0..300);
        check_both_modes(&keys(small.clone()), &large, seed);
        check_both_modes(&large, &keys(small), seed);
    }
}

#[test]
fn edge_cases() {
    crate::transcripts::edge_cases(check_both_modes);
}

#[test]
fn duplicate_keys_in_the_requester_set_encode_once() {
    // Not deduplicated: the same key twice gives the same row and value.
    let a: KeyList = keys([1, 2, 2, 3]).iter().collect();
    let b: KeyList = keys([2, 3, 4]).iter().collect();
    let (out, _) = run(OutputMode::IntersectionToRequester, &a, &b, 10);
    assert!(out.intersection().contains(&3));
    assert!(out.intersection().iter().any(|i| *i == 1 || *i == 2));
}

#[test]
fn composite_keys_match_part_by_part() {
    let encode = |parts: &[&str]| {
        let mut out = Vec::new();
        encode_key(parts, &mut out).unwrap();
        out
    };
    let a = [encode(&["ab", "c"]), encode(&["x", "1"]), encode(&["", "z"])];
    let b = [encode(&["a", "bc"]), encode(&["x", "1"]), encode(&["z", ""])];
    let (a, _) = a.iter().collect::<KeyList>().dedup();
    let (b, _) = b.iter().collect::<KeyList>().dedup();
    let (out, _) = run(OutputMode::IntersectionToRequester, &a, &b, 8);
    assert_eq!(out.intersection(), &[1]);
}

#[test]
fn many_keys_over_several_runs_of_each_message() {
    // 100,000 keys: a store of two runs and more, outputs of two runs.
    let a: KeyList = keys(0..100_000).iter().collect();
    let b: KeyList = keys(70_000..170_000).iter().collect();
    let (out_a, out_b) = run(OutputMode::IntersectionToBoth, &a, &b, 9);
    let want: Vec<u32> = (70_000..100_000).collect();
    assert_eq!(out_a.intersection(), &want[..]);
    let want_b: Vec<u32> = (0..30_000).collect();
    assert_eq!(out_b.intersection(), Some(&want_b[..]));
}

/// A session up to the responder's trees, for the hostile tests.
fn started(mode: OutputMode, task: &str) -> (Rr22Requester, Rr22Responder, Vec<CotCorrections>) {
    let a: KeyList = keys(0..300).iter().collect();
    let b: KeyList = keys(200..400).iter().collect();
    let p = params(mode, a.len(), b.len());
    let other = SessionParams::new(TaskId::new(task).unwrap(), mode, 300, 200).unwrap();
    let (mut ra, mut rb) = rngs(3);
    let mut requester = Rr22Requester::new(p, &a, &mut ra).unwrap();
    let (responder, choices) = Rr22Responder::new(other, &b, requester.setup(), &mut rb).unwrap();
    requester.absorb_choices(choices).unwrap();
    let mut runs = Vec::new();
    while let Some(run) = requester.next_corrections().unwrap() {
        runs.push(run);
    }
    (requester, responder, runs)
}

fn finish_vole(requester: &mut Rr22Requester, responder: &mut Rr22Responder, runs: Vec<CotCorrections>) {
    for run in runs {
        responder.absorb_corrections(run).unwrap();
    }
    requester.absorb_trees(responder.trees().unwrap()).unwrap();
    while let Some(run) = requester.next_masked().unwrap() {
        responder.absorb_masked(run).unwrap();
    }
}

#[test]
fn different_tasks_do_not_match() {
    let (mut requester, mut responder, runs) = started(OutputMode::IntersectionToRequester, "another-task");
    finish_vole(&mut requester, &mut responder, runs);
    while let Some(run) = responder.next_outputs().unwrap() {
        requester.absorb_outputs(run).unwrap();
    }
    assert!(requester.finish().unwrap().intersection().is_empty());
}

#[test]
fn parameters_are_bounded() {
    let task = || TaskId::new("t").unwrap();
    assert!(matches!(
        SessionParams::new(task(), OutputMode::CardinalityOnly, 1, 1),
        Err(PsiError::ModeNotOffered { .. })
    ));
    assert!(matches!(
        SessionParams::new(task(), OutputMode::IntersectionToRequester, MAX_SET_LEN + 1, 1),
        Err(PsiError::SetTooLarge { .. })
    ));
    let a: KeyList = keys(0..3).iter().collect();
    assert!(matches!(
        Rr22Requester::new(params(OutputMode::IntersectionToRequester, 4, 1), &a, &mut rngs(1).0),
        Err(PsiError::KeyCountMismatch { .. })
    ));
}

#[test]
fn hostile_requester_messages_are_refused() {
    let (mut requester, mut responder, runs) = started(OutputMode::IntersectionToBoth, "task-test");
    let run = runs[0].clone();
    // Trees, a store or outputs before the corrections.
    assert!(matches!(responder.trees(), Err(PsiError::OutOfTurn { .. })));
    assert!(matches!(responder.next_outputs(), Err(PsiError::OutOfTurn { .. })));
    let store = Masked { first: 0, values: vec![1; 10] };
    assert!(matches!(responder.absorb_masked(store), Err(PsiError::OutOfTurn { .. })));
    // Columns that skip ahead, or of another length.
    let mut skipping = run.clone();
    skipping.first_column = 1;
    assert!(matches!(responder.absorb_corrections(skipping), Err(PsiError::Malformed { .. })));
    let mut other_len = run.clone();
    other_len.words_per_column += 1;
    assert!(matches!(responder.absorb_corrections(other_len), Err(PsiError::Malformed { .. })));
    for run in runs {
        responder.absorb_corrections(run).unwrap();
    }
    // Replayed after the last column.
    assert!(matches!(responder.absorb_corrections(run), Err(PsiError::OutOfTurn { .. })));
    // The store before the trees were taken.
    let early = Masked { first: 0, values: vec![1; 10] };
    assert!(matches!(responder.absorb_masked(early), Err(PsiError::OutOfTurn { .. })));
    requester.absorb_trees(responder.trees().unwrap()).unwrap();
    assert!(matches!(responder.trees(), Err(PsiError::OutOfTurn { .. })), "trees go out once");
    let first = requester.next_masked().unwrap().unwrap();
    // A run out of place, and one past the end.
    let mut shifted = first.clone();
    shifted.first = 7;
    assert!(matches!(responder.absorb_masked(shifted), Err(PsiError::Malformed { .. })));
    let mut long = first.clone();
    long.values.extend(std::iter::repeat_n(0, 100_000));
    assert!(matches!(responder.absorb_masked(long), Err(PsiError::Malformed { .. })));
    // Outputs before the whole store.
    assert!(matches!(responder.next_outputs(), Err(PsiError::OutOfTurn { .. })));
    responder.absorb_masked(first).unwrap();
    while let Some(run) = requester.next_masked().unwrap() {
        responder.absorb_masked(run).unwrap();
    }
    while responder.next_outputs().unwrap().is_some() {}
    let bad = Matches { last: true, positions: vec![5, 5] };
    assert!(matches!(responder.absorb_matches(bad), Err(PsiError::Malformed { .. })));
    let beyond = Matches { last: true, positions: vec![600] };
    assert!(matches!(responder.absorb_matches(beyond), Err(PsiError::Malformed { .. })));
    assert!(matches!(responder.finish(), Err(PsiError::TooFew { .. })));
}

#[test]
fn hostile_responder_messages_are_refused() {
    let (mut requester, mut responder, runs) = started(OutputMode::IntersectionToRequester, "task-test");
    // Outputs and masks before their turn.
    let outputs = Outputs::decode(&crate::kkrt::messages::Outputs { len: 5, values: vec![1] }.to_bytes()).unwrap();
    assert!(matches!(requester.absorb_outputs(outputs.clone()), Err(PsiError::OutOfTurn { .. })));
    for run in runs {
        responder.absorb_corrections(run).unwrap();
    }
    let trees = responder.trees().unwrap();
    // Trees of another shape.
    let mut fewer = trees.clone();
    fewer.trees.pop();
    assert!(matches!(requester.absorb_trees(fewer), Err(PsiError::Malformed { .. })));
    let mut shallower = trees.clone();
    shallower.depth -= 1;
    assert!(matches!(requester.absorb_trees(shallower), Err(PsiError::Malformed { .. })));
    requester.absorb_trees(trees.clone()).unwrap();
    assert!(matches!(requester.absorb_trees(trees), Err(PsiError::OutOfTurn { .. })));
    while let Some(run) = requester.next_masked().unwrap() {
        responder.absorb_masked(run).unwrap();
    }
    // Outputs of the wrong length, too many, too few.
    let wrong_len = crate::kkrt::messages::Outputs { len: 16, values: vec![1] };
    assert!(matches!(requester.absorb_outputs(wrong_len), Err(PsiError::Malformed { .. })));
    let len = params(OutputMode::IntersectionToRequester, 300, 200).output_len() as u8;
    let too_many = crate::kkrt::messages::Outputs { len, values: vec![1; 201] };
    assert!(matches!(requester.absorb_outputs(too_many), Err(PsiError::TooMany { .. })));
    let some = crate::kkrt::messages::Outputs { len, values: vec![1; 20] };
    requester.absorb_outputs(some).unwrap();
    assert!(matches!(requester.finish(), Err(PsiError::TooFew { .. })));
}

#[test]
fn a_corrupted_tree_gives_a_wrong_result_not_a_crash() {
    // A malicious responder can spoil the VOLE (semi-honest protocol): the
    // requester then finds no false matches, only misses.
    let (mut requester, mut responder, runs) = started(OutputMode::IntersectionToRequester, "task-test");
    for run in runs {
        responder.absorb_corrections(run).unwrap();
    }
    let mut trees = responder.trees().unwrap();
    for tree in &mut trees.trees {
        tree.correction ^= 1;
    }
    requester.absorb_trees(trees).unwrap();
    while let Some(run) = requester.next_masked().unwrap() {
        responder.absorb_masked(run).unwrap();
    }
    while let Some(run) = responder.next_outputs().unwrap() {
        requester.absorb_outputs(run).unwrap();
    }
    let found = requester.finish().unwrap();
    assert!(found.intersection().len() < 100);
    assert!(found.intersection().iter().all(|i| (200..300).contains(i)));
}

#[test]
fn a_prepared_session_serves_only_its_task_and_keys() {
    let a: KeyList = keys(0..50).iter().collect();
    let b: KeyList = keys(25..75).iter().collect();
    let prepare = |task: &str| Rr22Prepared::new(TaskId::new(task).unwrap(), &a, &mut rngs(4).0).unwrap();
    let p = params(OutputMode::IntersectionToRequester, 50, 50);
    assert!(matches!(
        Rr22Requester::from_prepared(p.clone(), prepare("other")),
        Err(PsiError::KeyCountMismatch { .. })
    ));
    let bigger = params(OutputMode::IntersectionToRequester, 51, 50);
    assert!(matches!(
        Rr22Requester::from_prepared(bigger, prepare("task-test")),
        Err(PsiError::KeyCountMismatch { .. })
    ));
    // Prepared before the responder's size was known, then run.
    let mut requester = Rr22Requester::from_prepared(p.clone(), prepare("task-test")).unwrap();
    let (mut responder, choices) = Rr22Responder::new(p, &b, requester.setup(), &mut rngs(4).1).unwrap();
    requester.absorb_choices(choices).unwrap();
    let runs: Vec<_> = std::iter::from_fn(|| requester.next_corrections().unwrap()).collect();
    finish_vole(&mut requester, &mut responder, runs);
    while let Some(run) = responder.next_outputs().unwrap() {
        requester.absorb_outputs(run).unwrap();
    }
    assert_eq!(requester.finish().unwrap().intersection(), &(25..50).collect::<Vec<u32>>()[..]);
}

#[test]
fn the_requester_cannot_finish_before_its_store_is_sent() {
    // Even against a responder without keys (no outputs to wait for).
    let a: KeyList = keys(0..10).iter().collect();
    let p = params(OutputMode::IntersectionToRequester, 10, 0);
    let requester = Rr22Requester::new(p, &a, &mut rngs(5).0).unwrap();
    assert!(matches!(requester.finish(), Err(PsiError::TooFew { .. })));
}
