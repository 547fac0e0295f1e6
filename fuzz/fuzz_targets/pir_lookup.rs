//! PIR with a hostile peer, both ways: the owner answers any query the
//! requester sends (of the layout's size), and the requester decodes any
//! answer the owner returns against its verified hint. Neither panics; an
//! answer has one word per row.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stayput_pir::{Answer, Lookup, Query};

fuzz_target!(|data: &[u8]| {
    let fixture = stayput_fuzz::pir();
    let layout = fixture.db.layout();
    // The owner's side.
    let query = Query(stayput_fuzz::words(data, layout.columns));
    let answer = fixture.db.answer(&query).expect("a query of the layout's size is answered");
    assert_eq!(answer.0.len(), layout.rows());
    // The requester's side: a lookup of a listed key, any answer.
    let (lookup, _) = Lookup::new(layout, b"key-7", &mut stayput_fuzz::rng(3)).expect("lookup");
    let hostile = Answer(stayput_fuzz::words(data, layout.rows()));
    if let Ok(Some(value)) = lookup.decode(layout, &fixture.hint, &hostile, &fixture.key_7) {
        assert!(value.len() <= layout.value_capacity());
    }
});
