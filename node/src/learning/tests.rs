use super::*;
use stayput_learning::logistic::LrShare;

#[test]
fn frames_reassemble_and_bound_the_message() {
    let message: Vec<u8> = (0..(2 * FRAME_BYTES + 5)).map(|i| u8::try_from(i % 251).expect("below 251")).collect();
    let pieces: Vec<_> = frames(&message).collect();
    assert_eq!(pieces.len(), 3);
    assert!(pieces[..2].iter().all(|f| !f.last && f.chunk.len() == FRAME_BYTES) && pieces[2].last);
    let mut r = Reassembly::default();
    let mut out = None;
    for p in pieces.clone() {
        out = r.push(p, message.len(), "bureau").unwrap();
    }
    assert_eq!(out.unwrap(), message);
    // One byte over the bound is refused before it is kept.
    let mut r = Reassembly::default();
    let err = pieces.into_iter().try_for_each(|p| r.push(p, message.len() - 1, "bureau").map(drop)).unwrap_err();
    assert!(err.to_string().contains("more than the aligned rows need"), "{err}");
    // An empty message is one frame.
    let empty: Vec<_> = frames(&[]).collect();
    assert_eq!(empty.len(), 1);
    assert!(empty[0].last);
}

#[test]
fn alignment_is_the_same_order_on_both_sides() {
    let a = align(vec![b"c".to_vec(), b"a".to_vec(), b"b".to_vec()]);
    let b = align(vec![b"b".to_vec(), b"c".to_vec(), b"a".to_vec()]);
    assert_eq!(a, b);
}

fn share() -> ShareFile {
    ShareFile::new(Party::FeatureHolder, vec!["income".into(), "débt".into()], ModelShare::Logistic(lr()))
}

fn lr() -> LrShare {
    // A share made the way training makes one, through its encoding.
    let bytes = {
        let mut b = vec![1u8, 0x63];
        b.extend(0.5f64.to_bits().to_le_bytes());
        for list in [[1.0f64, 2.0], [0.5, 4.0], [0.25, -1.0]] {
            b.extend(2u32.to_le_bytes());
            list.iter().for_each(|v| b.extend(v.to_bits().to_le_bytes()));
        }
        b
    };
    match ModelShare::from_bytes(&bytes).unwrap() {
        ModelShare::Logistic(s) => s,
        _ => unreachable!(),
    }
}

#[test]
fn share_files_round_trip_and_commit() {
    let dir = tempfile::tempdir().unwrap();
    let file = share();
    let commitment = file.write(dir.path(), "t-1").unwrap();
    let back = ShareFile::read(dir.path(), "t-1").unwrap();
    assert_eq!(back, file);
    assert_eq!(back.commitment(), commitment);
    // Written once.
    assert!(matches!(file.write(dir.path(), "t-1"), Err(NodeError::ResultExists { .. })));
    // The salt hides: the same share under another salt commits differently.
    let again = ShareFile::new(file.party, file.columns.clone(), file.share.clone());
    assert_ne!(again.commitment(), commitment);
}

#[test]
fn a_changed_or_foreign_share_file_is_refused_or_changes_the_commitment() {
    let dir = tempfile::tempdir().unwrap();
    let commitment = share().write(dir.path(), "t-1").unwrap();
    let path = ShareFile::path(dir.path(), "t-1");
    let bytes = std::fs::read(&path).unwrap();
    // A flipped weight bit: still readable, no longer the committed share.
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    std::fs::write(&path, &flipped).unwrap();
    assert_ne!(ShareFile::read(dir.path(), "t-1").unwrap().commitment(), commitment);
    // Another version, a truncation, trailing bytes, not a share at all.
    let mut version = bytes.clone();
    version[SHARE_MAGIC.len()] = 2;
    let cases = [version, bytes[..bytes.len() - 3].to_vec(), [bytes.clone(), vec![0]].concat(), b"hello".to_vec()];
    for case in cases {
        std::fs::write(&path, &case).unwrap();
        let err = ShareFile::read(dir.path(), "t-1").unwrap_err();
        assert!(err.to_string().contains("unreadable"), "{err}");
    }
    assert!(ShareFile::read(dir.path(), "t-2").unwrap_err().to_string().contains("not on this node"));
}

#[test]
fn numbers_and_labels_are_read_strictly_without_echoing_values() {
    assert!(parse_number(Some(" 2.5 "), "c", "d").unwrap() == 2.5);
    assert!(parse_number(None, "c", "d").unwrap().is_nan());
    assert!(parse_number(Some("NA"), "c", "d").unwrap().is_nan());
    let err = parse_number(Some("secret-value"), "income", "bureau").unwrap_err().to_string();
    assert!(err.contains("'income'") && !err.contains("secret-value"), "{err}");
    assert!(parse_number(Some("inf"), "c", "d").is_err());
    assert_eq!(labels(&[0.0, 1.0], "y").unwrap(), vec![0, 1]);
    assert!(labels(&[0.0, f64::NAN], "y").is_err());
    assert!(labels(&[2.0], "y").is_err());
}
