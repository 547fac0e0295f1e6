//! The bureau's side of a blacklist query: a bank's blinded ids (32-byte
//! points), evaluated under the bureau's key with a DLEQ proof that the
//! bank's check accepts.
#![no_main]

use curve25519_dalek::ristretto::CompressedRistretto;
use libfuzzer_sys::fuzz_target;
use stayput_zk_proofs::dleq::DleqProof;

fuzz_target!(|data: &[u8]| {
    // The node refuses anything but whole points before this (labeled service).
    if data.is_empty() || !data.len().is_multiple_of(32) {
        return;
    }
    let fixture = stayput_fuzz::labeled();
    let blinded: Vec<CompressedRistretto> =
        data.chunks_exact(32).map(|c| CompressedRistretto(c.try_into().unwrap())).collect();
    if let Ok((outputs, proof)) = fixture.key.evaluate(b"t-fuzz", &blinded, &mut stayput_fuzz::rng(1)) {
        assert_eq!(outputs.len(), blinded.len());
        let decoded = DleqProof::from_bytes(&proof.to_bytes()).expect("a proof round-trips");
        let public = fixture.key.public_key().decompress().unwrap();
        let points = |v: &[CompressedRistretto]| -> Vec<_> { v.iter().map(|c| c.decompress().unwrap()).collect() };
        decoded.verify(b"t-fuzz", &public, &points(&blinded), &points(&outputs)).expect("an honest proof verifies");
    }
});
