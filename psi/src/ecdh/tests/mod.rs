use std::collections::BTreeSet;

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::keys::KeyList;
use crate::messages::{PointBatch, TagBatch};

fn params(mode: OutputMode, a: usize, b: usize, batch: usize) -> SessionParams {
    SessionParams::new(TaskId::new("task-test").unwrap(), mode, a as u64, b as u64, batch).unwrap()
}

fn run(mode: OutputMode, a: &KeyList, b: &KeyList, batch: usize, seed: u64) -> (RequesterOutput, ResponderOutput) {
    let p = params(mode, a.len(), b.len(), batch);
    let mut ra = ChaCha20Rng::seed_from_u64(seed);
    let mut rb = ChaCha20Rng::seed_from_u64(seed ^ 0x5eed);
    run_in_memory(&p, a, b, &mut ra, &mut rb).unwrap()
}

/// The reference: plain set intersection, as indices into each distinct list.
pub(crate) fn plain(a: &KeyList, b: &KeyList) -> (Vec<u32>, Vec<u32>) {
    let sa: BTreeSet<&[u8]> = a.iter().collect();
    let sb: BTreeSet<&[u8]> = b.iter().collect();
    let index = |i: usize| u32::try_from(i).unwrap();
    let ia = a.iter().enumerate().filter(|(_, k)| sb.contains(k)).map(|(i, _)| index(i)).collect();
    let ib = b.iter().enumerate().filter(|(_, k)| sa.contains(k)).map(|(i, _)| index(i)).collect();
    (ia, ib)
}

fn check_all_modes(raw_a: &[Vec<u8>], raw_b: &[Vec<u8>], batch: usize, seed: u64) {
    let (a, _) = raw_a.iter().collect::<KeyList>().dedup();
    let (b, _) = raw_b.iter().collect::<KeyList>().dedup();
    let (want_a, want_b) = plain(&a, &b);
    for mode in OutputMode::ALL {
        let (out_a, out_b) = run(mode, &a, &b, batch, seed);
        assert_eq!(out_a.cardinality(), want_a.len() as u64, "{mode}");
        assert_eq!(out_b.requester_len(), a.len() as u64);
        match mode {
            OutputMode::IntersectionToRequester => {
                assert_eq!(out_a.intersection(), Some(&want_a[..]));
                assert_eq!(out_b.intersection(), None);
            }
            OutputMode::IntersectionToBoth => {
                assert_eq!(out_a.intersection(), Some(&want_a[..]));
                assert_eq!(out_b.intersection(), Some(&want_b[..]));
            }
            OutputMode::CardinalityOnly => {
                assert_eq!(out_a.intersection(), None);
                assert_eq!(out_b.intersection(), None);
            }
        }
    }
}

pub(crate) fn keys(values: impl IntoIterator<Item = u32>) -> Vec<Vec<u8>> {
    values.into_iter().map(|v| format!("id-{v}").into_bytes()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random sets over a small universe, so overlaps and duplicates are common.
    #[test]
    fn matches_plain_intersection(
        a in proptest::collection::vec(0u32..60, 0..40),
        b in proptest::collection::vec(0u32..60, 0..40),
        batch in 1usize..9,
        seed in any::<u64>(),
    ) {
        check_all_modes(&keys(a), &keys(b), batch, seed);
    }

    /// Very unequal sizes.
    #[test]
    fn unequal_sizes(small in proptest::collection::vec(0u32..400, 0..3), seed in any::<u64>()) {
        let large = keys(0..300);
        check_all_modes(&keys(small.clone()), &large, 64, seed);
        check_all_modes(&large, &keys(small), 64, seed);
    }
}

#[test]
fn edge_cases() {
    let some = keys(0..20);
    check_all_modes(&[], &[], 4, 1); // both empty
    check_all_modes(&[], &some, 4, 2); // one side empty
    check_all_modes(&some, &[], 4, 3);
    check_all_modes(&some, &some, 4, 4); // identical
    check_all_modes(&keys(0..10), &keys(10..20), 4, 5); // disjoint
    check_all_modes(&keys([7]), &keys([7]), 1, 6); // one element each
    check_all_modes(&keys([7, 7, 7, 8]), &keys([7, 9, 9]), 2, 7); // duplicates
}

#[test]
fn duplicates_are_reported_once() {
    let (a, dropped) = keys([1, 1, 2, 3, 3, 3]).iter().collect::<KeyList>().dedup();
    assert_eq!(dropped, 3);
    let (b, _) = keys([3, 3, 1]).iter().collect::<KeyList>().dedup();
    let (out, _) = run(OutputMode::CardinalityOnly, &a, &b, 2, 9);
    assert_eq!(out.cardinality(), 2);
}

#[test]
fn different_tasks_do_not_match() {
    // The same keys blinded under two task ids never match: a message from one
    // task replayed into another finds nothing.
    let a: KeyList = keys(0..5).iter().collect();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let p1 = SessionParams::new(TaskId::new("task-1").unwrap(), OutputMode::IntersectionToRequester, 5, 5, 8).unwrap();
    let p2 = SessionParams::new(TaskId::new("task-2").unwrap(), OutputMode::IntersectionToRequester, 5, 5, 8).unwrap();
    let mut responder = ResponderSession::new(p1, &a, &mut rng).unwrap();
    let mut requester = RequesterSession::new(p2.clone(), &a, &mut rng).unwrap();
    requester.absorb(PointBatch::decode(responder.next_batch().unwrap().as_bytes()).unwrap()).unwrap();
    let mut requester = requester.finish().unwrap();
    let mut honest = ResponderSession::new(p2, &a, &mut rng).unwrap();
    while honest.next_batch().is_some() {}
    let mut honest = honest.finish().unwrap();
    let request = requester.next_batch().unwrap();
    let reply = honest.answer(PointBatch::decode(request.as_bytes()).unwrap()).unwrap().unwrap();
    requester.absorb_reply(reply).unwrap();
    assert_eq!(requester.finish().unwrap().cardinality(), 0);
}

#[test]
fn order_of_messages_is_enforced() {
    let a: KeyList = keys(0..6).iter().collect();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let p = params(OutputMode::IntersectionToRequester, 6, 6, 4);
    // A responder that stops early is caught.
    let mut requester = RequesterSession::new(p.clone(), &a, &mut rng).unwrap();
    let mut responder = ResponderSession::new(p.clone(), &a, &mut rng).unwrap();
    requester.absorb(PointBatch::decode(responder.next_batch().unwrap().as_bytes()).unwrap()).unwrap();
    assert_eq!(
        requester.finish().unwrap_err(),
        PsiError::MissingItems { phase: Phase::ResponderPoints, announced: 6, received: 4 }
    );
    // A responder that sends more than announced is caught.
    let mut requester = RequesterSession::new(p.clone(), &a, &mut rng).unwrap();
    let batch = PointBatch::decode(responder.next_batch().unwrap().as_bytes()).unwrap();
    assert_eq!(batch.len(), 2, "the last 2 of 6 keys");
    for _ in 0..3 {
        requester.absorb(batch.clone()).unwrap();
    }
    assert_eq!(
        requester.absorb(batch),
        Err(PsiError::TooManyItems { phase: Phase::ResponderPoints, announced: 6, received: 6 + 2 })
    );
    // A reply that does not fit its request, or comes unasked, is caught.
    let mut requester = RequesterSession::new(p.clone(), &a, &mut rng).unwrap();
    let mut responder = ResponderSession::new(p.clone(), &a, &mut rng).unwrap();
    while let Some(b) = responder.next_batch() {
        requester.absorb(PointBatch::decode(b.as_bytes()).unwrap()).unwrap();
    }
    let mut requester = requester.finish().unwrap();
    assert_eq!(requester.absorb_reply(TagBatch::decode(&[0u8; 12]).unwrap()), Err(PsiError::UnexpectedReply));
    requester.next_batch().unwrap();
    assert_eq!(
        requester.absorb_reply(TagBatch::decode(&[0u8; 24]).unwrap()),
        Err(PsiError::ReplyMismatch { expected: 4, got: 2 })
    );
    // Finishing with requests unanswered fails.
    assert!(matches!(requester.finish(), Err(PsiError::MissingItems { phase: Phase::Replies, .. })));
}

#[test]
fn parameters_are_bounded() {
    let t = || TaskId::new("t").unwrap();
    let m = OutputMode::IntersectionToRequester;
    assert!(SessionParams::new(t(), m, 1 << 28, 1 << 28, 10).is_ok());
    assert!(matches!(SessionParams::new(t(), m, 1 << 29, 1 << 28, 10), Err(PsiError::SetsTooLarge { .. })));
    assert!(matches!(SessionParams::new(t(), m, 1 << 33, 1, 10), Err(PsiError::SetsTooLarge { .. })));
    assert!(matches!(SessionParams::new(t(), m, 1, 1, 0), Err(PsiError::BadBatchSize { .. })));
    assert!(matches!(SessionParams::new(t(), m, 1, 1, MAX_BATCH + 1), Err(PsiError::BadBatchSize { .. })));
    let a: KeyList = keys(0..3).iter().collect();
    let wrong = SessionParams::new(t(), m, 4, 1, 10).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    assert_eq!(
        RequesterSession::new(wrong, &a, &mut rng).unwrap_err(),
        PsiError::KeyCountMismatch { announced: 4, actual: 3 }
    );
}

#[test]
fn mode_names_round_trip() {
    for mode in OutputMode::ALL {
        assert_eq!(mode.name().parse::<OutputMode>().unwrap(), mode);
    }
    assert!("union".parse::<OutputMode>().unwrap_err().contains("cardinality"));
}

mod vectors;
