use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use stayput_psi::keys::{KeyRules, encode_key};

use super::*;

fn dataset(path: &Path, keys: &[&str], rules: &[&str]) -> Dataset {
    Dataset {
        labels: None,
        pir: None,
        shard: None,
        name: "d".into(),
        path: path.into(),
        format: FileFormat::from_path(path).unwrap(),
        key_columns: keys.iter().map(|s| s.to_string()).collect(),
        rules: KeyRules::parse(rules).unwrap(),
        null_values: vec!["N/A".into(), "null".into()],
    }
}

fn key(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_key(parts, &mut out).unwrap();
    out
}

const CSV: &str =
    "id,name,score\n 00123 ,Alice,1\n00123,alice,2\n,Bob,3\n456,,4\n789, Carol ,5\n n/a ,Dan,6\nNULL,Eve,7\n";

#[test]
fn csv_keys_are_text_normalised_and_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("people.csv");
    std::fs::write(&path, CSV).unwrap();
    let keys = dataset(&path, &["id"], &["trim"]).load_keys().unwrap();
    assert_eq!(keys.rows_read, 7);
    assert_eq!(keys.null_keys, 3, "the empty id and the two sentinels");
    assert_eq!(keys.duplicates, 1, "' 00123 ' trims to 00123");
    let got: Vec<Vec<u8>> = keys.keys.iter().map(<[u8]>::to_vec).collect();
    assert_eq!(got, vec![key(&["00123"]), key(&["456"]), key(&["789"])], "leading zeros kept");

    let composite = dataset(&path, &["id", "name"], &["trim", "lowercase"]).load_keys().unwrap();
    assert_eq!(composite.null_keys, 4, "empty id, empty name, two sentinels");
    assert_eq!(composite.duplicates, 1, "(00123, alice) twice after normalisation");
    assert_eq!(composite.keys.len(), 2);
    assert_eq!(composite.keys.get(1), &key(&["789", "carol"])[..]);
}

#[test]
fn missing_column_names_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("people.csv");
    std::fs::write(&path, CSV).unwrap();
    let err = dataset(&path, &["national_id"], &[]).load_keys().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, NodeError::MissingColumn { .. }));
    assert!(
        text.contains("people.csv") && text.contains("'national_id'") && text.contains("id, name, score"),
        "{text}"
    );
}

#[test]
fn unreadable_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dataset(&dir.path().join("nope.csv"), &["id"], &[]).load_keys().unwrap_err();
    assert!(matches!(missing, NodeError::ReadFile { .. }), "{missing}");
    let garbage = dir.path().join("garbage.parquet");
    std::fs::write(&garbage, b"this is not parquet").unwrap();
    let err = dataset(&garbage, &["id"], &[]).load_keys().unwrap_err();
    assert!(matches!(err, NodeError::Parquet { .. }), "{err}");
    assert!(err.to_string().contains("garbage.parquet"));
    let ragged = dir.path().join("ragged.csv");
    std::fs::write(&ragged, "id,name\n1,a\n2,b,extra\n").unwrap();
    let err = dataset(&ragged, &["id"], &[]).load_keys().unwrap_err();
    assert!(err.to_string().contains("ragged.csv"), "{err}");
}

fn parquet_file(dir: &Path) -> PathBuf {
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_no", DataType::Int64, true),
        Field::new("email", DataType::Utf8, true),
        Field::new("balance", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![Some(7), Some(8), None, Some(7)])),
            Arc::new(StringArray::from(vec![Some("A@X.COM"), Some("b@x.com"), Some("c@x.com"), Some("a@x.com")])),
            Arc::new(Float64Array::from(vec![1.5, 2.5, 3.5, 4.5])),
        ],
    )
    .unwrap();
    let path = dir.join("customers.parquet");
    write_parquet(&path, &[batch]).unwrap();
    path
}

#[test]
fn parquet_integer_and_text_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = parquet_file(dir.path());
    let keys = dataset(&path, &["customer_no", "email"], &["lowercase"]).load_keys().unwrap();
    assert_eq!((keys.rows_read, keys.null_keys, keys.duplicates), (4, 1, 1));
    assert_eq!(keys.keys.get(0), &key(&["7", "a@x.com"])[..]);
    let err = dataset(&path, &["balance"], &[]).load_keys().unwrap_err();
    assert!(matches!(err, NodeError::KeyColumnType { .. }));
    assert!(err.to_string().contains("'balance'") && err.to_string().contains("Float64"), "{err}");
}

#[test]
fn results_hold_every_matching_row_and_are_written_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("people.csv");
    std::fs::write(&path, CSV).unwrap();
    let d = dataset(&path, &["id"], &["trim"]);
    let wanted: HashSet<Vec<u8>> = [key(&["00123"]), key(&["789"])].into_iter().collect();
    let out = dir.path().join("out").join("result.csv");
    let keyed = d.fingerprint().unwrap();
    let written = d.write_rows_with_keys(&wanted, keyed, &out, FileFormat::Csv).unwrap();
    assert_eq!(written.rows, 3, "both 00123 rows and 789");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text, "id,name,score\n 00123 ,Alice,1\n00123,alice,2\n789, Carol ,5\n");
    assert_eq!(written.sha256, <[u8; 32]>::from(Sha256::digest(text.as_bytes())));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out")).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no partial files left");
    let again = d.write_rows_with_keys(&wanted, keyed, &out, FileFormat::Csv).unwrap_err();
    assert!(matches!(again, NodeError::ResultExists { .. }), "results are never overwritten: {again}");

    // A dataset that changed after its keys were loaded is not written from.
    std::fs::write(&path, format!("{CSV}999,Zed,8\n")).unwrap();
    let changed = d.write_rows_with_keys(&wanted, keyed, &dir.path().join("x.csv"), FileFormat::Csv).unwrap_err();
    assert!(matches!(changed, NodeError::DatasetChanged { .. }), "{changed}");

    let pq = parquet_file(dir.path());
    let d = dataset(&pq, &["customer_no"], &[]);
    let wanted: HashSet<Vec<u8>> = [key(&["7"])].into_iter().collect();
    let out = dir.path().join("out.parquet");
    let keyed = d.fingerprint().unwrap();
    assert_eq!(d.write_rows_with_keys(&wanted, keyed, &out, FileFormat::Parquet).unwrap().rows, 2);
    let back = dataset(&out, &["customer_no"], &[]).load_keys().unwrap();
    assert_eq!((back.rows_read, back.duplicates), (2, 1));
}

#[test]
fn rows_beyond_a_bound_are_counted_only_when_the_file_could_hold_them() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("ids.csv");
    let rows: Vec<String> = (0..10).map(|i| format!("id-{i}")).collect();
    std::fs::write(&csv, format!("id\n{}\n", rows.join("\n"))).unwrap();
    let d = dataset(&csv, &["id"], &[]);
    assert_eq!(d.rows_beyond(1000).unwrap(), None, "too small to hold more: not read");
    assert_eq!(d.rows_beyond(3).unwrap(), Some(10));
    assert_eq!(d.rows_beyond(10).unwrap(), None);

    let pq = dir.path().join("ids.parquet");
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(rows))]).unwrap();
    write_parquet(&pq, &[batch]).unwrap();
    let d = dataset(&pq, &["id"], &[]);
    assert_eq!(d.rows_beyond(3).unwrap(), Some(10), "from the metadata");
    assert_eq!(d.rows_beyond(10).unwrap(), None);
}

#[test]
fn results_written_from_row_indices_equal_results_written_from_keys() {
    // Duplicates, a null key, normalisation: the rows of the chosen keys,
    // byte for byte what encoding every row again would write.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("people.csv");
    std::fs::write(&path, CSV).unwrap();
    let d = dataset(&path, &["id"], &["trim"]);
    let keys = d.load_keys().unwrap();
    assert_eq!(keys.rows.len() as u64, keys.rows_read);
    assert_eq!(keys.rows.iter().filter(|r| **r == NO_KEY).count() as u64, keys.null_keys);
    for pick in [vec![], vec![0], vec![0, 2], (0..keys.keys.len()).collect::<Vec<_>>()] {
        let wanted: HashSet<Vec<u8>> = pick.iter().map(|&i| keys.keys.get(i).to_vec()).collect();
        let mut selected = vec![false; keys.keys.len()];
        pick.iter().for_each(|&i| selected[i] = true);
        let (a, b) = (dir.path().join(format!("a{}.csv", pick.len())), dir.path().join(format!("b{}.csv", pick.len())));
        let by_keys = d.write_rows_with_keys(&wanted, keys.fingerprint, &a, FileFormat::Csv).unwrap();
        let by_rows = d.write_rows_of_keys(&keys.rows, &selected, keys.fingerprint, &b, FileFormat::Csv).unwrap();
        assert_eq!((by_keys.rows, by_keys.sha256), (by_rows.rows, by_rows.sha256));
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    }
    // A file that changed since is not written from.
    std::fs::write(&path, format!("{CSV}999,Zed,8\n")).unwrap();
    let all = vec![true; keys.keys.len()];
    let err = d.write_rows_of_keys(&keys.rows, &all, keys.fingerprint, &dir.path().join("c.csv"), FileFormat::Csv);
    assert!(matches!(err, Err(NodeError::DatasetChanged { .. })));
}
