use std::sync::OnceLock;

use super::*;

/// A scorecard of `n` features of 4 bins each.
fn card(n: usize) -> Scorecard {
    Scorecard {
        name: "alliance-retail/v1".into(),
        base: 300,
        threshold: 520,
        features: (0..u16::try_from(n).unwrap())
            .map(|i| ScoredFeature {
                name: format!("f{i}"),
                edges: vec![10, 20, 30],
                points: vec![0, 5 + i, 11, 17 + 2 * i],
            })
            .collect(),
    }
}

/// One subject's keys for the whole test binary: generation takes seconds.
fn subject() -> &'static (SubjectKeys, SubjectPublic) {
    static KEYS: OnceLock<(SubjectKeys, SubjectPublic)> = OnceLock::new();
    KEYS.get_or_init(|| SubjectKeys::generate().unwrap())
}

fn score_encrypted(keys: &SubjectPublic, card: &Scorecard, bins: &[u8], split: usize) -> EncryptedScore {
    // The bank holds the first `split` features, the bureau the rest.
    let bank = encrypt_bins(&keys.public_key, &bins[..split]).unwrap();
    let bureau = encrypt_bins(&keys.public_key, &bins[split..]).unwrap();
    let parts = [
        EncryptedBins { first: 0, count: split, list: bank },
        EncryptedBins { first: split, count: bins.len() - split, list: bureau },
    ];
    Scorer::new(keys).unwrap().score(card, &parts).unwrap()
}

#[test]
fn the_decrypted_score_is_the_scorecards_and_only_the_subject_reads_it() {
    let (keys, public) = subject();
    let card = card(6);
    let values = [3i64, 10, 25, 99, -4, 30];
    let bins: Vec<u8> = values.iter().enumerate().map(|(i, &v)| card.bin(i, v).unwrap()).collect();
    assert_eq!(bins, [0, 1, 2, 3, 0, 3]);
    let expected = card.score_clear(&bins).unwrap();
    let encrypted = score_encrypted(public, &card, &bins, 2);
    assert_eq!(keys.decrypt(&encrypted).unwrap(), expected);
    assert_eq!(expected, (300 + 6 + 11 + 23 + 27, false));

    // Another subject's key (or this subject's after rotation) does not
    // decrypt it: refused by the key id, and noise when forced.
    let (other, _) = SubjectKeys::generate().unwrap();
    let err = other.decrypt(&encrypted).unwrap_err().to_string();
    assert!(err.contains("another key pair of the subject"), "{err}");
    assert_ne!(other.decrypt_unchecked(&encrypted).unwrap().0, expected.0, "another key reads noise");
}

#[test]
fn decisions_follow_the_threshold() {
    let (keys, public) = subject();
    let card = Scorecard { threshold: 320, ..card(2) };
    for bins in [[0u8, 0], [3, 0], [3, 3]] {
        let expected = card.score_clear(&bins).unwrap();
        assert_eq!(keys.decrypt(&score_encrypted(public, &card, &bins, 1)).unwrap(), expected, "{bins:?}");
    }
}

#[test]
fn bad_scorecards_and_contributions_are_refused() {
    let (_, public) = subject();
    let mut bad = card(2);
    bad.features[0].edges = vec![10, 10, 30];
    assert!(bad.validate().unwrap_err().to_string().contains("not strictly ascending"));
    let mut bad = card(2);
    bad.features[1].points.pop();
    assert!(bad.validate().unwrap_err().to_string().contains("one more point value than edges"));
    let bad = Scorecard { base: u16::MAX, ..card(2) };
    assert!(bad.validate().unwrap_err().to_string().contains("does not fit in 16 bits"));
    assert!(encrypt_bins(&public.public_key, &[16]).unwrap_err().to_string().contains("beyond the 16"));

    let card = card(3);
    let list = encrypt_bins(&public.public_key, &[1, 2]).unwrap();
    let scorer = Scorer::new(public).unwrap();
    let missing = [EncryptedBins { first: 0, count: 2, list: list.clone() }];
    assert!(scorer.score(&card, &missing).unwrap_err().to_string().contains("no institution sent feature 'f2'"));
    let overlap = [
        EncryptedBins { first: 0, count: 2, list: list.clone() },
        EncryptedBins { first: 1, count: 2, list: list.clone() },
    ];
    assert!(scorer.score(&card, &overlap).unwrap_err().to_string().contains("overlap"));
    // A list that holds another number of bins than it claims.
    let third = encrypt_bins(&public.public_key, &[0]).unwrap();
    let miscounted =
        [EncryptedBins { first: 0, count: 1, list }, EncryptedBins { first: 1, count: 2, list: third.clone() }];
    let err = scorer.score(&card, &miscounted).unwrap_err().to_string();
    assert!(err.contains("expected 1") || err.contains("expected 2"), "{err}");
    let garbage = [EncryptedBins { first: 0, count: 3, list: vec![7; 64] }];
    assert!(scorer.score(&card, &garbage).is_err());
}

#[test]
fn the_digest_names_the_scorecard() {
    let a = card(3);
    let mut b = card(3);
    assert_eq!(a.digest(), b.digest());
    b.features[2].points[1] += 1;
    assert_ne!(a.digest(), b.digest());
}

#[test]
fn key_files_round_trip_and_bad_ones_are_named() {
    let (keys, public) = subject();
    let secret = keys.to_bytes().unwrap();
    let again = SubjectKeys::from_bytes(&secret).unwrap();
    assert_eq!(again.key_id(), keys.key_id());
    let read = SubjectPublic::from_bytes(&public.to_bytes()).unwrap();
    assert_eq!(
        (read.key_id, &read.public_key, &read.server_key),
        (public.key_id, &public.public_key, &public.server_key)
    );
    // The read key decrypts what the original pair scored.
    let card = card(2);
    let encrypted = score_encrypted(&read, &card, &[1, 2], 1);
    assert_eq!(again.decrypt(&encrypted).unwrap(), card.score_clear(&[1, 2]).unwrap());

    let bytes = public.to_bytes();
    let err = |b: &[u8]| SubjectPublic::from_bytes(b).unwrap_err().to_string();
    assert!(err(&secret).contains("not a subject key file"), "a secret file is not a public one");
    assert!(err(&bytes[..bytes.len() - 1]).contains("truncated"));
    let mut newer = bytes.clone();
    newer[20] = 2;
    assert!(err(&newer).contains("format version 2; this build reads version 1"));
    let mut other_id = bytes.clone();
    other_id[21] ^= 1;
    assert!(err(&other_id).contains("key id is not its public key's"));
    let mut trailing = bytes;
    trailing.push(0);
    assert!(err(&trailing).contains("trailing bytes"));
    let mut huge = secret.to_vec();
    huge[53..61].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(SubjectKeys::from_bytes(&huge).unwrap_err().to_string().contains("truncated"));
}

#[test]
fn secrets_are_redacted() {
    let (keys, public) = subject();
    assert_eq!(format!("{keys:?}"), "SubjectKeys(redacted)");
    assert!(format!("{public:?}").starts_with("SubjectPublic(public key "));
}
