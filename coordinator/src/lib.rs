//! # Stayput coordinator
//!
//! Run by the consortium's operator. Today it serves the embedded ledger to
//! members over mutually authenticated TLS ([`ledger_service`]); the task
//! lifecycle (accepting signed task submissions, checking grants, driving
//! nodes, recording uses and result digests) is the rest of its issue and
//! is not built yet.
#![forbid(unsafe_code)]

pub mod ledger_service;
