//! Proofs from a peer: DLEQ proofs (a bureau's answer) and statistics
//! contributions (commitments with range proofs, a site's share): canonical
//! where the format is, and verifying never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stayput_zk_proofs::contribution::{Contribution, ProofContext, verify};
use stayput_zk_proofs::dleq::DleqProof;

fuzz_target!(|data: &[u8]| {
    if let Ok(proof) = DleqProof::from_bytes(data) {
        assert!(proof.to_bytes().as_slice() == data, "a DLEQ proof does not round-trip");
        let kat = stayput_fuzz::dleq();
        let _ = proof.verify(&kat.context, &kat.public, &kat.inputs, &kat.outputs);
    }
    if let Ok(contribution) = Contribution::from_bytes(data) {
        assert!(contribution.to_bytes() == data, "a contribution does not round-trip");
        let _ = contribution.digest();
        let kat = stayput_fuzz::contribution();
        if contribution.commitments.len() == kat.bounds.len() {
            let ctx = ProofContext { task: &kat.task, party: &kat.party };
            let _ = verify(&ctx, &contribution, &kat.bounds);
        }
    }
});
