//! Cohort queries as task parameters carry them (canonical JSON) and as a
//! researcher writes them (TOML): a query that decodes re-encodes to
//! canonical JSON that decodes to the same query, is small enough to lay
//! out, and runs over a site's rows without panicking.
#![no_main]

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use libfuzzer_sys::fuzz_target;
use stayput_fuzz as _; // the capped allocator
use stayput_mpc_engine::gates::{PassSet, families, gates};
use stayput_mpc_engine::local::{LocalScan, entry_bounds, group_count, vector_len};
use stayput_mpc_engine::query::CohortQuery;

fn exercise(query: &CohortQuery) {
    let canonical = query.to_canonical_json();
    let again = CohortQuery::from_json(&canonical).expect("a query's canonical JSON decodes");
    assert_eq!(&again, query, "canonical JSON changes the query");
    assert_eq!(again.to_canonical_json(), canonical, "canonical JSON is not stable");

    let columns = query.columns();
    let schema: Vec<&str> = columns.iter().map(String::as_str).collect();
    let _ = (query.group_total(), query.vector_entries());
    if query.validate(&schema, &columns).is_err() {
        return;
    }
    let _ = (vector_len(query), group_count(query), gates(query), families(query), entry_bounds(query, 1000));
    // A site's rows: every column as text (numbers, a date, a code, missing).
    let fields: Vec<Field> = columns.iter().map(|c| Field::new(c, DataType::Utf8, true)).collect();
    let values: Vec<ArrayRef> = columns
        .iter()
        .map(|_| {
            Arc::new(StringArray::from(vec![Some("12.5"), Some("-3"), None, Some("2024-03-01"), Some("I10"), Some("0")]))
                as ArrayRef
        })
        .collect();
    let Ok(batch) = RecordBatch::try_new(Arc::new(Schema::new(fields)), values) else { return };
    let Ok(mut scan) = LocalScan::new(query) else { return };
    if scan.absorb(&batch).is_ok() {
        let mut stats = scan.finish();
        let _ = PassSet::all(query).apply(query, &mut stats.additive, &mut stats.extrema);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(query) = CohortQuery::from_json(text) {
        exercise(&query);
    }
    if let Ok(query) = CohortQuery::from_toml(text) {
        exercise(&query);
    }
});
