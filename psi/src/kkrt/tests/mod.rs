use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::ecdh::tests::keys;
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
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

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
    // 40,000 bins: three runs of corrections; 60,000 outputs: one run.
    let a: KeyList = keys(0..30_000).iter().collect();
    let b: KeyList = keys(20_000..40_000).iter().collect();
    let (out_a, out_b) = run(OutputMode::IntersectionToBoth, &a, &b, 9);
    let want: Vec<u32> = (20_000..30_000).collect();
    assert_eq!(out_a.intersection(), &want[..]);
    let want_b: Vec<u32> = (0..10_000).collect();
    assert_eq!(out_b.intersection(), Some(&want_b[..]));
}

#[test]
fn different_tasks_do_not_match() {
    let a: KeyList = keys(0..50).iter().collect();
    let mut requester =
        KkrtRequester::new(params(OutputMode::IntersectionToRequester, 50, 50), &a, &mut rngs(1).0).unwrap();
    let other =
        SessionParams::new(TaskId::new("another-task").unwrap(), OutputMode::IntersectionToRequester, 50, 50).unwrap();
    let (mut responder, choices) = KkrtResponder::new(other, &a, requester.setup(), &mut rngs(1).1).unwrap();
    requester.absorb_choices(choices).unwrap();
    while let Some(run) = requester.next_corrections().unwrap() {
        responder.absorb_corrections(run).unwrap();
    }
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
        KkrtRequester::new(params(OutputMode::IntersectionToRequester, 4, 1), &a, &mut rngs(1).0),
        Err(PsiError::KeyCountMismatch { .. })
    ));
}

/// A session up to the responder's first outputs, for the hostile tests.
fn started(mode: OutputMode) -> (KkrtRequester, KkrtResponder, Vec<Corrections>) {
    let a: KeyList = keys(0..300).iter().collect();
    let b: KeyList = keys(200..400).iter().collect();
    let p = params(mode, a.len(), b.len());
    let (mut ra, mut rb) = rngs(3);
    let mut requester = KkrtRequester::new(p.clone(), &a, &mut ra).unwrap();
    let (responder, choices) = KkrtResponder::new(p, &b, requester.setup(), &mut rb).unwrap();
    requester.absorb_choices(choices).unwrap();
    let mut runs = Vec::new();
    while let Some(run) = requester.next_corrections().unwrap() {
        runs.push(run);
    }
    (requester, responder, runs)
}

#[test]
fn hostile_requester_messages_are_refused() {
    let (_, mut responder, runs) = started(OutputMode::IntersectionToBoth);
    let run = runs[0].clone();
    // Outputs before the corrections.
    assert!(matches!(responder.next_outputs(), Err(PsiError::OutOfTurn { .. })));
    // A run that skips bins, one that is not whole blocks, one past the end.
    let mut skipping = run.clone();
    skipping.first_bin = 128;
    assert!(matches!(responder.absorb_corrections(skipping), Err(PsiError::Malformed { .. })));
    let mut ragged = run.clone();
    ragged.rows.pop();
    assert!(matches!(responder.absorb_corrections(ragged), Err(PsiError::Malformed { .. })));
    let mut long = run.clone();
    long.rows.extend_from_within(..128);
    assert!(matches!(responder.absorb_corrections(long), Err(PsiError::Malformed { .. })));
    responder.absorb_corrections(run.clone()).unwrap();
    // Replayed.
    assert!(matches!(responder.absorb_corrections(run), Err(PsiError::Malformed { .. })));
    while responder.next_outputs().unwrap().is_some() {}
    // Matches that do not ascend, or name outputs never sent.
    let bad = Matches { last: true, positions: vec![5, 5] };
    assert!(matches!(responder.absorb_matches(bad), Err(PsiError::Malformed { .. })));
    let (_, mut responder, runs) = started(OutputMode::IntersectionToBoth);
    for run in runs {
        responder.absorb_corrections(run).unwrap();
    }
    while responder.next_outputs().unwrap().is_some() {}
    let beyond = Matches { last: true, positions: vec![600] };
    assert!(matches!(responder.absorb_matches(beyond), Err(PsiError::Malformed { .. })));
    // No matches at all in both mode: the responder has no result.
    assert!(matches!(responder.finish(), Err(PsiError::TooFew { .. })));
    // Matches in intersection-only mode.
    let (_, mut responder, runs) = started(OutputMode::IntersectionToRequester);
    for run in runs {
        responder.absorb_corrections(run).unwrap();
    }
    while responder.next_outputs().unwrap().is_some() {}
    let any = Matches { last: true, positions: vec![] };
    assert!(matches!(responder.absorb_matches(any), Err(PsiError::NotInMode { .. })));
}

#[test]
fn hostile_responder_messages_are_refused() {
    let (mut requester, mut responder, runs) = started(OutputMode::IntersectionToRequester);
    for run in runs {
        responder.absorb_corrections(run).unwrap();
    }
    let outputs = responder.next_outputs().unwrap().unwrap();
    // Outputs of another length than the session's.
    let mut short = outputs.clone();
    short.len -= 1;
    assert!(matches!(requester.absorb_outputs(short), Err(PsiError::Malformed { .. })));
    requester.absorb_outputs(outputs.clone()).unwrap();
    // More outputs than 3·n_B.
    assert!(matches!(requester.absorb_outputs(outputs), Err(PsiError::TooMany { .. })));
    // A responder that stops early.
    let (mut requester, _, _) = started(OutputMode::IntersectionToRequester);
    while requester.next_corrections().unwrap().is_some() {}
    assert!(matches!(requester.finish(), Err(PsiError::TooFew { .. })));
    // Base choices twice; a setup whose bins do not fit the announced size.
    let (mut requester, _, _) = started(OutputMode::IntersectionToRequester);
    let points = BaseChoices { points: vec![[0u8; 32]; ot::WIDTH] };
    assert!(matches!(requester.absorb_choices(points), Err(PsiError::OutOfTurn { .. })));
    let b: KeyList = keys(0..3).iter().collect();
    let mut setup = requester.setup().clone();
    setup.bins += 128;
    let p = params(OutputMode::IntersectionToRequester, 300, 3);
    assert!(matches!(KkrtResponder::new(p, &b, &setup, &mut rngs(4).1), Err(PsiError::Malformed { .. })));
}

#[test]
fn malformed_points_are_refused() {
    let a: KeyList = keys(0..3).iter().collect();
    let p = params(OutputMode::IntersectionToRequester, 3, 3);
    let mut requester = KkrtRequester::new(p.clone(), &a, &mut rngs(5).0).unwrap();
    // A non-canonical base-OT point from the responder.
    let mut points = vec![crate::group::decode_point(&requester.setup().point, 0).unwrap().compress().to_bytes(); 512];
    points[17] = [0xff; 32];
    assert!(matches!(requester.absorb_choices(BaseChoices { points }), Err(PsiError::NonCanonicalPoint { .. })));
    // The identity as the requester's point.
    let mut setup = requester.setup().clone();
    setup.point = [0; 32];
    assert!(matches!(KkrtResponder::new(p, &a, &setup, &mut rngs(5).1), Err(PsiError::IdentityPoint { .. })));
}

#[test]
fn decoders_refuse_bad_bytes() {
    let setup = Setup { seed: [1; 16], bins: 128, point: [2; 32] };
    let bytes = setup.to_bytes();
    assert_eq!(Setup::decode(&bytes).unwrap(), setup);
    let mut other_version = bytes.clone();
    other_version[0] = 2;
    assert!(matches!(Setup::decode(&other_version), Err(PsiError::UnsupportedMessageVersion { got: 2, .. })));
    assert!(matches!(Setup::decode(&bytes[..bytes.len() - 1]), Err(PsiError::Malformed { .. })));
    assert!(matches!(BaseChoices::decode(&bytes), Err(PsiError::Malformed { .. })));
    assert!(matches!(Setup::decode(&[]), Err(PsiError::Malformed { .. })));
    // Corrections: empty, ragged, too many rows.
    assert!(Corrections::decode(&[1, 3, 0, 0, 0, 0]).is_err());
    assert!(Corrections::decode(&[1, 3, 0, 0, 0, 0, 9]).is_err());
    let mut huge = vec![1, 3, 0, 0, 0, 0];
    huge.resize(6 + (messages::MAX_ROWS + 1) * 64, 0);
    assert!(Corrections::decode(&huge).is_err());
    // Outputs: length 0 or 17, ragged.
    assert!(Outputs::decode(&[1, 4, 0]).is_err());
    assert!(Outputs::decode(&[1, 4, 17, 1]).is_err());
    assert!(Outputs::decode(&[1, 4, 2, 1, 2, 3]).is_err());
    // Matches: a flag of 2, ragged positions.
    assert!(Matches::decode(&[1, 5, 2]).is_err());
    assert!(Matches::decode(&[1, 5, 1, 0, 0]).is_err());
    assert_eq!(Matches::decode(&[1, 5, 1]).unwrap(), Matches { last: true, positions: vec![] });
}

#[test]
fn an_announced_size_alone_allocates_nothing() {
    // A requester announcing 2^30 keys gets no 87 GB table reserved for it
    // by the responder: rows are stored only as they arrive.
    let b: KeyList = keys(0..3).iter().collect();
    let p = params(OutputMode::IntersectionToRequester, MAX_SET_LEN as usize, 3);
    let point = curve25519_dalek::constants::RISTRETTO_BASEPOINT_COMPRESSED.to_bytes();
    let setup = Setup { seed: [1; 16], bins: u32::try_from(p.bins()).unwrap(), point };
    let (responder, _) = KkrtResponder::new(p, &b, &setup, &mut rngs(6).1).unwrap();
    assert_eq!(responder.bins_received(), 0);
    assert!(!responder.corrections_done());
}

#[test]
fn parts_are_bounded_and_metered_from_above() {
    assert_eq!(parts_for(0), 1);
    assert_eq!(parts_for(PART_KEYS), 1);
    assert_eq!(parts_for(PART_KEYS + 1), 2);
    assert_eq!(parts_for(1 << 24), 16);
    check_parts(16, 1 << 24).unwrap();
    for (parts, keys) in [(0, 10), (11, 10), (2, 4 * MAX_PART_KEYS), (crate::partition::MAX_PARTS + 1, 1 << 30)] {
        assert!(matches!(check_parts(parts, keys), Err(PsiError::Malformed { .. })), "{parts} parts of {keys}");
    }
    check_parts(1, 0).unwrap();
    // The bound covers every way of splitting the keys.
    let n = 10_000u64;
    for parts in [2u32, 3, 7, 64] {
        let uneven: Vec<u64> =
            (0..u64::from(parts)).map(|i| if i == 0 { n - u64::from(parts) + 1 } else { 1 }).collect();
        let even: Vec<u64> =
            (0..u64::from(parts)).map(|i| n / u64::from(parts) + u64::from(i < n % u64::from(parts))).collect();
        for sizes in [uneven, even] {
            assert_eq!(sizes.iter().sum::<u64>(), n);
            let bins: u64 = sizes.iter().map(|&s| hashing::bin_count(s)).sum();
            assert!(bins <= metered_bins(n, parts), "{parts} parts: {bins} bins");
        }
    }
    assert_eq!(metered_bins(200, 1), 256);
    // And the parts run again on resumption: MAX_RESUMES times the largest
    // part a responder accepts, on top of every part once.
    for parts in [2u32, 3, 7, 64] {
        let cap = max_part_len(n, parts);
        assert!(cap >= 2 * n / u64::from(parts), "a keyed split's parts fit under the cap");
        let rest = (n - cap.min(n)) / u64::from(parts - 1);
        let mut sizes: Vec<u64> = std::iter::once(cap.min(n)).chain((1..parts).map(|_| rest)).collect();
        sizes[1] += n - sizes.iter().sum::<u64>();
        let bins: u64 = sizes.iter().map(|&s| hashing::bin_count(s)).sum();
        let again = u64::from(MAX_RESUMES) * hashing::bin_count(cap);
        assert!(bins + again <= metered_bins(n, parts), "{parts} parts: {bins} + {again} bins");
    }
    assert_eq!(max_part_len(1 << 30, 4), MAX_PART_KEYS);
    let task = TaskId::new("t-1").unwrap();
    assert_eq!(part_task(&task, 3).unwrap().as_bytes(), b"t-1/part-3");
    let sizes = messages::PartSizes { sizes: vec![3, 0, 5] };
    assert_eq!(messages::PartSizes::decode(&sizes.to_bytes()).unwrap(), sizes);
    assert!(messages::PartSizes::decode(&[1, 6]).is_err());
    assert!(messages::PartSizes::decode(&[1, 6, 0, 0, 0]).is_err());
}
