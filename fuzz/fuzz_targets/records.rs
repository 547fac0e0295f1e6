//! Ledger records (blocks, replicas, the EVM log): canonical, storable
//! when they decode, and neither verifying a signature nor judging the
//! record by the rules against a consortium's state ever panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stayput_chain_connector::block::MAX_RECORD_BYTES;
use stayput_chain_connector::records::SignedRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = SignedRecord::from_bytes(data) {
        assert!(record.to_bytes() == data, "a record does not round-trip");
        if data.len() <= MAX_RECORD_BYTES {
            record.check_storable().expect("a record that decodes is storable");
        }
        let _ = record.hash();
        let _ = record.verify(&[7; 32], &stayput_fuzz::ledger_state().ledger);
        let _ = record.record.kind();
        let mut state = stayput_fuzz::ledger_state().clone();
        let _ = state.check(&record, stayput_fuzz::NOW);
        let _ = state.apply_unverified(&record, stayput_fuzz::NOW);
    }
});
