//! The bank's side of a blacklist query against a set the bureau chose:
//! any encoded set (as long as its digest is the ledger's, which the bureau
//! publishes) and an honest evaluation; finishing never panics, and a
//! label is returned only for a listed id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use stayput_psi::labeled::{EncodedSet, Query};

fuzz_target!(|data: &[u8]| {
    let fixture = stayput_fuzz::labeled();
    let Ok(set) = EncodedSet::from_bytes(data, &Sha256::digest(data).into()) else { return };
    let mut rng = stayput_fuzz::rng(2);
    let (query, blinded) = Query::blind(&set.dataset, &fixture.query_ids, &mut rng).expect("blind");
    let (outputs, proof) = fixture.key.evaluate(b"t-fuzz", &blinded, &mut rng).expect("evaluate");
    match query.finish(b"t-fuzz", &blinded, &outputs, &proof, &set) {
        Ok(labels) => assert_eq!(labels.len(), fixture.query_ids.len()),
        Err(_) => {}
    }
});
