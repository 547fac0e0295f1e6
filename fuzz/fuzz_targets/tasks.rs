//! Signed task requests (what a requester sends the coordinator) and task
//! parameters of every kind (what the ledger records and every node
//! decodes): canonical.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stayput_fuzz as _; // the capped allocator
use stayput_chain_connector::records::Computation;
use stayput_chain_connector::tasks::{SignedTaskRequest, TaskParams};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = SignedTaskRequest::from_bytes(data) {
        assert!(request.to_bytes() == data, "a task request does not round-trip");
        let _ = request.task_id();
        let _ = request.verify(&[3; 32]);
    }
    for kind in Computation::ALL {
        if let Ok(params) = TaskParams::decode(*kind, data) {
            assert!(params.encode() == data, "{kind} parameters do not round-trip");
        }
    }
});
