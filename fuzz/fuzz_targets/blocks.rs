//! Ledger blocks and inclusion proofs (a replica's stream, proof files):
//! canonical, and checking a seal, a Merkle root or an audit path, or
//! replaying the records through the rules, never panics, whatever the
//! counts, indices and times say.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stayput_chain_connector::block::{Block, InclusionProof};

fuzz_target!(|data: &[u8]| {
    let operator = [9u8; 32];
    if let Ok(block) = Block::from_bytes(data) {
        assert!(block.to_bytes() == data, "a block does not round-trip");
        let _ = block.check(&operator);
        let _ = block.header.hash();
        for index in 0..block.records.len().min(4) {
            let proof = block.proof(index);
            let _ = proof.verify(&operator);
            assert_eq!(InclusionProof::from_bytes(&proof.to_bytes()).expect("a proof round-trips"), proof);
        }
        let mut state = stayput_fuzz::ledger_state().clone();
        for record in &block.records {
            let _ = state.apply_unverified(record, block.header.timestamp);
        }
    }
    if let Ok(proof) = InclusionProof::from_bytes(data) {
        assert!(proof.to_bytes() == data, "an inclusion proof does not round-trip");
        let _ = proof.verify(&operator);
    }
});
