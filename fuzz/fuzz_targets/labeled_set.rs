//! A bureau's encoded set (fetched from the bureau, checked against the
//! ledger's digest): canonical, so the digest the ledger records and the
//! set the bank decodes describe the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stayput_fuzz as _; // the capped allocator
use sha2::{Digest, Sha256};
use stayput_psi::labeled::EncodedSet;

fuzz_target!(|data: &[u8]| {
    let digest: [u8; 32] = Sha256::digest(data).into();
    if let Ok(set) = EncodedSet::from_bytes(data, &digest) {
        assert!(set.to_bytes() == data, "an encoded set does not round-trip");
        assert_eq!(set.digest(), digest);
    }
});
