//! # Stayput chain connector (not built yet)
//!
//! Will hold the `Ledger` trait and its two backends — an embedded,
//! hash-chained, signed ledger and an EVM backend for consortium chains —
//! holding members, datasets, grants, tasks, use records and result digests
//! (design brief §5). Empty until the ledger issue; until then nodes accept
//! caller-given task ids without a ledger check, as the PSI issue states.
#![forbid(unsafe_code)]
