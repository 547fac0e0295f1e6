//! # Stayput coordinator (not built yet)
//!
//! Will run the task lifecycle: accept signed task submissions, check
//! grants on the ledger, drive the participating nodes, and record tasks,
//! use records and result digests (design brief §2, §3). Empty until the
//! coordinator issue; nothing here claims to work.
#![forbid(unsafe_code)]
