//! Stayput's gRPC wire types, generated from `proto/stayput/v1/*.proto`.
//!
//! This is the only crate that holds prost types (architecture invariant 2):
//! conversions to and from domain types live in `node` and `coordinator`.

#![allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]

/// Version 1 of the Stayput API.
pub mod v1 {
    tonic::include_proto!("stayput.v1");
}

/// The encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("stayput_descriptor");

/// The encoded size of a wire message, for byte counts (a session's
/// communication), without handing prost's trait to other crates.
pub trait WireLen {
    /// Bytes of the message's protobuf encoding.
    fn wire_len(&self) -> usize;
}

impl<M: prost::Message> WireLen for M {
    fn wire_len(&self) -> usize {
        self.encoded_len()
    }
}
