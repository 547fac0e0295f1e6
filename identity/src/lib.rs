//! # Stayput identity
//!
//! Organisation identity on the wire, shared by every process of a
//! consortium — nodes, the operator's coordinator and the `stayput`
//! command — so that none of them needs another's crate to know who it is
//! talking to.
//!
//! ## Trust model
//!
//! Every process-to-process call is mutually authenticated TLS 1.3 (rustls)
//! under one **consortium CA**. An organisation's certificate carries its
//! name as the subject common name and as a DNS name, so:
//!
//! * a process dials a member **by organisation name** ([`dial()`]) and the
//!   TLS handshake proves it reached that organisation — the peer's
//!   certificate must chain to the consortium CA and name it;
//! * a server reads the caller's organisation from its verified client
//!   certificate ([`caller_org`]) and decides from that name alone what the
//!   caller may do;
//! * organisation names are therefore DNS labels ([`check_org_name`]).
//!
//! Nothing else identifies an organisation: whoever holds the CA's key can
//! mint any organisation, so the CA key stays offline with the consortium.
//! What an organisation may *do* is for the ledger to say, not for this
//! crate.
//!
//! ## Modules
//!
//! * [`certificate`] — the CA and organisation certificates (rcgen, ECDSA
//!   P-256), written and read as PEM files (private keys 0600, zeroized,
//!   never logged), and the organisation-name rule.
//! * [`tls`] — the TLS paths of a configuration, the loaded material as
//!   tonic server and client configurations, the caller's organisation.
//! * [`dial`](mod@dial) — dialling a member by organisation name, and the
//!   deadline of every call between processes.
#![forbid(unsafe_code)]

pub mod certificate;
pub mod dial;
mod error;
pub mod tls;

pub use certificate::{
    CertifiedKey, PrivateKeyPem, check_org_name, generate_ca, issue_org_certificate, read_certified_key,
    write_certified_key,
};
pub use dial::{CALL_DEADLINE, SHARD_PLACEHOLDER, dial, names_shards, shard_endpoint};
pub use error::IdentityError;
pub use tls::{TlsMaterial, TlsPaths, caller_org};
