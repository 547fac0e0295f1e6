//! The consortium's records (design brief §5) and their canonical encoding,
//! records v2.
//!
//! Every record travels as a [`SignedRecord`]: the version tag
//! [`RECORD_TAG`], the writer's organisation id, the record, and the
//! writer's ed25519 signature over
//! `"stayput/ledger/record/v2" ‖ ledger id ‖ writer ‖ record` in the
//! canonical encoding of [`crate::codec`]. The [`LedgerId`] names one
//! consortium's ledger (the embedded ledger's genesis, or an EVM chain id
//! and contract address), so a record signed for one consortium is not
//! valid in another. Its hash — the Merkle leaf on the embedded ledger and
//! the record id on every backend — is `SHA-256(0x00 ‖ signed encoding)`.
//!
//! Records v1 (no tag, no ledger id, operator-written key changes, tasks
//! without the requester's signed request) are refused with a message that
//! says so; they were never released.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::LedgerError;
use crate::codec::{Reader, Writer};
use crate::tasks::{MAX_REQUEST_BYTES, SignedTaskRequest};

/// A SHA-256 digest.
pub type Digest = [u8; 32];

const SIGNING_LABEL: &[u8] = b"stayput/ledger/record/v2";

/// The first four bytes of every signed record: `0xFF`, `"SR"`, the format
/// version. A records-v1 encoding began with the writer name's `u32`
/// length, so its first byte is never `0xFF`.
pub const RECORD_TAG: [u8; 4] = [0xFF, b'S', b'R', 2];

/// The identity of one consortium's ledger, carried in every signature so
/// that a record cannot be replayed into another consortium.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LedgerId(pub [u8; 32]);

impl LedgerId {
    /// The embedded ledger's id: its operator's key and a random nonce drawn
    /// when the ledger was created; sealed into every block header.
    pub fn embedded(operator_key: &[u8; 32], nonce: &[u8; 16]) -> Self {
        let mut h = Sha256::new();
        h.update(b"stayput/ledger/id/v2/embedded");
        h.update(operator_key);
        h.update(nonce);
        Self(h.finalize().into())
    }

    /// An EVM ledger's id: the chain id and the contract's address.
    pub fn evm(chain_id: u64, contract: &[u8; 20]) -> Self {
        let mut h = Sha256::new();
        h.update(b"stayput/ledger/id/v2/evm");
        h.update(chain_id.to_le_bytes());
        h.update(contract);
        Self(h.finalize().into())
    }
}

impl std::fmt::Debug for LedgerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LedgerId({})", hex::encode(self.0))
    }
}

impl std::fmt::Display for LedgerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $code:literal => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value's code in the canonical encoding.
            pub fn code(self) -> u8 {
                match self { $($name::$variant => $code),+ }
            }

            /// The value's name in commands and messages.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub(crate) fn from_code(code: u8) -> Result<Self, LedgerError> {
                match code {
                    $($code => Ok($name::$variant),)+
                    other => Err(LedgerError::Malformed {
                        what: stringify!($name),
                        reason: format!("unknown code {other}"),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::ALL.iter().copied().find(|v| v.name() == s).ok_or_else(|| {
                    let known: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
                    format!("unknown {} '{s}'; one of: {}", stringify!($name), known.join(", "))
                })
            }
        }
    };
}

wire_enum!(
    /// What an organisation may do in the consortium.
    Role {
        /// Holds datasets and serves protocols.
        DataOwner = 1 => "data_owner",
        /// Submits tasks.
        Requester = 2 => "requester",
        /// Runs the coordinator and seals the embedded ledger.
        Operator = 3 => "operator",
        /// Publishes algorithms.
        AlgorithmProvider = 4 => "algorithm_provider",
        /// Reads the whole trail.
        Regulator = 5 => "regulator",
        /// Rules on disputes of listings, binding every member.
        Arbitrator = 6 => "arbitrator",
    }
);

wire_enum!(
    /// Where a dispute of a listing is.
    DisputeState {
        /// Filed by an entitled member, awaiting its arbitrator.
        Filed = 0 => "filed",
        /// Taken up by its arbitrator.
        UnderReview = 1 => "under_review",
        /// The listing stands.
        Upheld = 2 => "upheld",
        /// The listing was wrong: the bureau's next version must drop or
        /// correct it, and members' nodes no longer report it.
        Overturned = 3 => "overturned",
    }
);

impl DisputeState {
    /// Whether `self → next` is a legal transition.
    pub fn may_become(self, next: DisputeState) -> bool {
        use DisputeState::*;
        matches!((self, next), (Filed, UnderReview) | (UnderReview, Upheld) | (UnderReview, Overturned))
    }

    /// Whether the dispute still awaits a ruling.
    pub fn is_open(self) -> bool {
        matches!(self, DisputeState::Filed | DisputeState::UnderReview)
    }
}

/// Bytes of a disputed listing's tag (the labeled-PSI set's tag length).
pub const DISPUTE_TAG_LEN: usize = 8;

/// Most bytes of a dispute's sealed id.
pub const MAX_SEALED_ID_BYTES: usize = 1024;

/// Longest a dispute may wait for its ruling: 180 days.
pub const MAX_DISPUTE_SECS: u64 = 180 * 86_400;

/// A member contests one listing of one version of a dataset (a bank for
/// its customer, or the listed person through a member that holds a
/// blacklist grant on it). The listing is named by its tag in the
/// dataset's encoded set — which the bureau can match to its own row and
/// nobody else can invert — and the listed id travels only sealed to the
/// arbitrator's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispute {
    /// The dispute's id (unique on the ledger).
    pub id: String,
    /// The dataset.
    pub dataset: String,
    /// The version the listing was found in.
    pub version: u32,
    /// The listing's tag in the encoded set ([`DISPUTE_TAG_LEN`] bytes, the
    /// tag of the labeled-PSI set: a hash of the id's OPRF output under the
    /// bureau's key, so only the bureau — and a member who queried the id —
    /// can tie it to an id).
    pub tag: [u8; DISPUTE_TAG_LEN],
    /// The listed id, sealed to the arbitrator (at most
    /// [`MAX_SEALED_ID_BYTES`]).
    pub sealed_id: Vec<u8>,
    /// The member who rules (role arbitrator; neither the filer nor the
    /// dataset's owner).
    pub arbitrator: String,
    /// Digest of the evidence the filer hands the arbitrator.
    pub evidence_digest: Digest,
    /// The ruling's deadline (unix seconds; within
    /// [`MAX_DISPUTE_SECS`] of filing).
    pub deadline: u64,
}

wire_enum!(
    /// A kind of computation a grant allows and a task runs.
    Computation {
        /// Balanced PSI revealing the intersection.
        Psi = 1 => "psi",
        /// Balanced PSI revealing the cardinality only.
        PsiCardinality = 2 => "psi_cardinality",
        /// Unbalanced labeled PSI (blacklist query).
        Blacklist = 3 => "blacklist",
        /// Federated statistics.
        Stats = 4 => "stats",
        /// Aggregate-only queries.
        ComputeOnly = 5 => "compute_only",
        /// Private record lookup.
        Lookup = 6 => "lookup",
        /// Vertical joint model training.
        Train = 7 => "train",
        /// Joint prediction with a trained model.
        Predict = 8 => "predict",
    }
);

wire_enum!(
    /// Where a task is in its life.
    TaskStatus {
        /// Recorded, not started.
        Submitted = 0 => "submitted",
        /// Nodes are serving it.
        Running = 1 => "running",
        /// Finished with a result.
        Succeeded = 2 => "succeeded",
        /// Finished without a result.
        Failed = 3 => "failed",
        /// Withdrawn before it ran.
        Cancelled = 4 => "cancelled",
    }
);

impl TaskStatus {
    /// Whether `self → next` is a legal transition.
    pub fn may_become(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        matches!(
            (self, next),
            (Submitted, Running)
                | (Submitted, Failed)
                | (Submitted, Cancelled)
                | (Running, Succeeded)
                | (Running, Failed)
        )
    }
}

/// A member organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Organisation id (a DNS label, as in its TLS certificate).
    pub org: String,
    /// Display name.
    pub name: String,
    /// What it may do.
    pub roles: Vec<Role>,
    /// Its ed25519 public key: every record it writes is signed with it.
    pub signing_key: [u8; 32],
    /// Its node's endpoint URL.
    pub endpoint: String,
}

/// One version of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetVersion {
    /// Dataset id.
    pub dataset: String,
    /// The owning organisation.
    pub owner: String,
    /// 1 for the first version, then consecutive.
    pub version: u32,
    /// Digest of the schema.
    pub schema_digest: Digest,
    /// Digest of the content.
    pub content_digest: Digest,
    /// A protocol public key for this version (such as an OPRF key).
    pub protocol_key: Option<Vec<u8>>,
}

/// What a dataset's owner allows one grantee to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Grant id.
    pub id: String,
    /// The dataset.
    pub dataset: String,
    /// Who may use it.
    pub grantee: String,
    /// Allowed computations.
    pub computations: Vec<Computation>,
    /// Allowed columns (empty: the dataset's key columns only).
    pub columns: Vec<String>,
    /// Smallest cohort a result may describe.
    pub min_cohort: u32,
    /// Tasks it may serve.
    pub max_uses: u32,
    /// Items (ids queried, rows scanned) across all uses.
    pub max_items: u64,
    /// Items one use (one task) may take: what stops a grantee from
    /// spending the whole budget in one query.
    pub max_items_per_use: u64,
    /// Unix time (seconds) from which it is void.
    pub expires_at: u64,
    /// Total differential-privacy budget in milli-ε across its uses; 0
    /// means the grant releases without noise (compute-only grants only).
    pub epsilon_budget: u32,
}

/// A task: the requester's signed request, and the grants it runs under.
/// Who asked, what, on which datasets and with which parameters is read
/// from the request, which only the requester's key can have signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Task id: [`SignedTaskRequest::task_id`] of the request.
    pub id: String,
    /// The grants it relies on.
    pub grants: Vec<String>,
    /// The requester's signed request.
    pub request: SignedTaskRequest,
}

impl Task {
    /// The task for a signed request, under `grants`.
    pub fn new(request: SignedTaskRequest, grants: Vec<String>) -> Self {
        Self { id: request.task_id(), grants, request }
    }

    /// The requesting organisation.
    pub fn requester(&self) -> &str {
        &self.request.request.requester
    }

    /// What it computes.
    pub fn kind(&self) -> Computation {
        self.request.request.kind
    }

    /// The datasets it reads.
    pub fn datasets(&self) -> &[String] {
        &self.request.request.datasets
    }

    /// The organisation whose node receives the result.
    pub fn receiver(&self) -> &str {
        &self.request.request.receiver
    }

    /// Whether the task delivers its result to the owner of the dataset it
    /// reads as well (balanced PSI to both): read from the parameters' type
    /// byte alone, as the EVM contract reads it, so both ledgers judge the
    /// same bytes the same way.
    pub fn delivers_to_both(&self) -> bool {
        self.kind() == Computation::Psi && self.request.request.params.first() == Some(&crate::tasks::PSI_TO_BOTH_TYPE)
    }

    /// The shard pairs a PSI task runs as: the count after the protocol
    /// byte of parameters of type [`crate::tasks::PSI_SHARDED_TYPE`], 1 for
    /// every other task — read from fixed offsets, as the EVM contract
    /// reads it. An error says why a sharded type's count is not allowed.
    pub fn shards(&self) -> Result<u32, &'static str> {
        use crate::tasks::{MAX_SHARDS, PSI_SHARDED_TYPE};
        let params = &self.request.request.params;
        if self.kind() != Computation::Psi || params.first() != Some(&PSI_SHARDED_TYPE) {
            return Ok(1);
        }
        let count = params.get(2..6).ok_or("a sharded task runs as 2 to 256 shards")?;
        let count = u32::from_le_bytes(count.try_into().expect("4 bytes"));
        if (2..=MAX_SHARDS).contains(&count) { Ok(count) } else { Err("a sharded task runs as 2 to 256 shards") }
    }

    /// Digest of its canonical parameters.
    pub fn params_digest(&self) -> Digest {
        crate::tasks::params_digest(self.kind(), &self.request.request.params)
    }
}

/// A dataset owner's node served a task under a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseRecord {
    /// The task.
    pub task: String,
    /// The grant consumed.
    pub grant: String,
    /// Items served (ids queried, rows scanned).
    pub items: u64,
    /// Privacy budget spent, in milli-ε (0 for a release without noise).
    pub epsilon: u32,
    /// The shard served, for a task run as shards (kind 10 on the wire);
    /// `None` for every other task (kind 7).
    pub shard: Option<u32>,
}

/// A task's result, by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRecord {
    /// The task.
    pub task: String,
    /// Digest of the result.
    pub result_digest: Digest,
    /// The organisation that received it.
    pub receiver: String,
    /// Digests of key intermediate values (commitments and the like).
    pub intermediates: Vec<Digest>,
}

/// Every kind of record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Admit a member, or change an admitted member's name, roles or
    /// endpoint — never its key (operator only). No roles suspends it.
    Member(Member),
    /// Publish a dataset version (its owner only).
    DatasetVersion(DatasetVersion),
    /// Grant use of a dataset (its owner only).
    Grant(Grant),
    /// Revoke a grant (the dataset's owner only).
    RevokeGrant {
        /// The grant.
        grant: String,
    },
    /// Record a task (its requester or the operator).
    Task(Task),
    /// Move a task on (its requester or the operator).
    TaskStatus {
        /// The task.
        task: String,
        /// The new status.
        status: TaskStatus,
    },
    /// A served use (the dataset owner's node).
    Use(UseRecord),
    /// A result digest (the operator or the task's requester).
    Result(ResultRecord),
    /// A member replaces its own signing key (signed with the current one).
    RotateKey {
        /// The new ed25519 public key.
        new_key: [u8; 32],
    },
    /// A dispute of one listing (a member holding a blacklist grant on the
    /// dataset).
    Dispute(Dispute),
    /// A dispute moves on: taken up, upheld or overturned (its arbitrator
    /// only; a ruling only before the deadline).
    DisputeRuling {
        /// The dispute.
        dispute: String,
        /// Its new state.
        state: DisputeState,
    },
}

impl Record {
    /// The record kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Member(_) => "member",
            Record::DatasetVersion(_) => "dataset_version",
            Record::Grant(_) => "grant",
            Record::RevokeGrant { .. } => "revoke_grant",
            Record::Task(_) => "task",
            Record::TaskStatus { .. } => "task_status",
            Record::Use(_) => "use",
            Record::Result(_) => "result",
            Record::RotateKey { .. } => "rotate_key",
            Record::Dispute(_) => "dispute",
            Record::DisputeRuling { .. } => "dispute_ruling",
        }
    }

    /// Appends the canonical encoding.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Record::Member(m) => {
                w.u8(1).str(&m.org).str(&m.name).list(&m.roles, |w, r| {
                    w.u8(r.code());
                });
                w.fixed(&m.signing_key).str(&m.endpoint);
            }
            Record::DatasetVersion(d) => {
                w.u8(2).str(&d.dataset).str(&d.owner).u32(d.version).fixed(&d.schema_digest).fixed(&d.content_digest);
                match &d.protocol_key {
                    None => {
                        w.u8(0);
                    }
                    Some(k) => {
                        w.u8(1).bytes(k);
                    }
                }
            }
            Record::Grant(g) => {
                w.u8(3).str(&g.id).str(&g.dataset).str(&g.grantee);
                w.list(&g.computations, |w, c| {
                    w.u8(c.code());
                });
                w.list(&g.columns, |w, c| {
                    w.str(c);
                });
                w.u32(g.min_cohort)
                    .u32(g.max_uses)
                    .u64(g.max_items)
                    .u64(g.max_items_per_use)
                    .u64(g.expires_at)
                    .u32(g.epsilon_budget);
            }
            Record::RevokeGrant { grant } => {
                w.u8(4).str(grant);
            }
            Record::Task(t) => {
                w.u8(5).str(&t.id).list(&t.grants, |w, g| {
                    w.str(g);
                });
                w.bytes_unbounded(&t.request.to_bytes());
            }
            Record::TaskStatus { task, status } => {
                w.u8(6).str(task).u8(status.code());
            }
            Record::Use(u) => {
                match u.shard {
                    None => w.u8(7),
                    Some(_) => w.u8(10),
                };
                w.str(&u.task).str(&u.grant).u64(u.items).u32(u.epsilon);
                if let Some(shard) = u.shard {
                    w.u32(shard);
                }
            }
            Record::Result(r) => {
                w.u8(8).str(&r.task).fixed(&r.result_digest).str(&r.receiver);
                w.list(&r.intermediates, |w, d| {
                    w.fixed(d);
                });
            }
            Record::RotateKey { new_key } => {
                w.u8(9).fixed(new_key);
            }
            Record::Dispute(d) => {
                w.u8(11).str(&d.id).str(&d.dataset).u32(d.version).fixed(&d.tag).bytes(&d.sealed_id);
                w.str(&d.arbitrator).fixed(&d.evidence_digest).u64(d.deadline);
            }
            Record::DisputeRuling { dispute, state } => {
                w.u8(12).str(dispute).u8(state.code());
            }
        }
    }

    /// Reads one canonical record.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, LedgerError> {
        Ok(match r.u8()? {
            1 => Record::Member(Member {
                org: r.str()?,
                name: r.str()?,
                roles: r.list(|r| Role::from_code(r.u8()?))?,
                signing_key: r.fixed()?,
                endpoint: r.str()?,
            }),
            2 => Record::DatasetVersion(DatasetVersion {
                dataset: r.str()?,
                owner: r.str()?,
                version: r.u32()?,
                schema_digest: r.fixed()?,
                content_digest: r.fixed()?,
                protocol_key: match r.u8()? {
                    0 => None,
                    1 => Some(r.bytes()?),
                    other => {
                        return Err(LedgerError::Malformed { what: "option", reason: format!("tag {other}") });
                    }
                },
            }),
            3 => Record::Grant(Grant {
                id: r.str()?,
                dataset: r.str()?,
                grantee: r.str()?,
                computations: r.list(|r| Computation::from_code(r.u8()?))?,
                columns: r.list(Reader::str)?,
                min_cohort: r.u32()?,
                max_uses: r.u32()?,
                max_items: r.u64()?,
                max_items_per_use: r.u64()?,
                expires_at: r.u64()?,
                epsilon_budget: r.u32()?,
            }),
            4 => Record::RevokeGrant { grant: r.str()? },
            5 => Record::Task(Task {
                id: r.str()?,
                grants: r.list(Reader::str)?,
                request: SignedTaskRequest::from_bytes(&r.bytes_bounded(MAX_REQUEST_BYTES)?)?,
            }),
            6 => Record::TaskStatus { task: r.str()?, status: TaskStatus::from_code(r.u8()?)? },
            kind @ (7 | 10) => Record::Use(UseRecord {
                task: r.str()?,
                grant: r.str()?,
                items: r.u64()?,
                epsilon: r.u32()?,
                shard: if kind == 10 { Some(r.u32()?) } else { None },
            }),
            8 => Record::Result(ResultRecord {
                task: r.str()?,
                result_digest: r.fixed()?,
                receiver: r.str()?,
                intermediates: r.list(|r| r.fixed())?,
            }),
            9 => Record::RotateKey { new_key: r.fixed()? },
            11 => Record::Dispute(Dispute {
                id: r.str()?,
                dataset: r.str()?,
                version: r.u32()?,
                tag: r.fixed()?,
                sealed_id: r.bytes_bounded(MAX_SEALED_ID_BYTES)?,
                arbitrator: r.str()?,
                evidence_digest: r.fixed()?,
                deadline: r.u64()?,
            }),
            12 => Record::DisputeRuling { dispute: r.str()?, state: DisputeState::from_code(r.u8()?)? },
            other => {
                return Err(LedgerError::Malformed { what: "record", reason: format!("unknown kind {other}") });
            }
        })
    }

    fn signing_message(&self, writer: &str, ledger: &LedgerId) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(SIGNING_LABEL).fixed(&ledger.0).str(writer);
        self.encode(&mut w);
        w.into_bytes()
    }
}

/// A record with its writer and the writer's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRecord {
    /// The writing organisation.
    pub writer: String,
    /// The record.
    pub record: Record,
    /// The writer's ed25519 signature.
    pub signature: [u8; 64],
}

impl SignedRecord {
    /// Signs `record` as `writer` for the ledger `ledger`.
    pub fn sign(record: Record, writer: &str, key: &OrgKey, ledger: &LedgerId) -> Self {
        let signature = key.0.sign(&record.signing_message(writer, ledger)).to_bytes();
        Self { writer: writer.to_owned(), record, signature }
    }

    /// Checks the signature against the writer's public key, for `ledger`.
    pub fn verify(&self, public_key: &[u8; 32], ledger: &LedgerId) -> Result<(), LedgerError> {
        let bad = || LedgerError::BadSignature { writer: self.writer.clone(), kind: self.record.kind() };
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| bad())?;
        key.verify_strict(&self.record.signing_message(&self.writer, ledger), &Signature::from_bytes(&self.signature))
            .map_err(|_| bad())
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed(&RECORD_TAG).str(&self.writer);
        self.record.encode(&mut w);
        w.fixed(&self.signature);
        w.into_bytes()
    }

    /// Decodes a canonical encoding; records of another format version are
    /// refused, saying which version they are.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LedgerError> {
        check_tag(bytes)?;
        let mut r = Reader::new(&bytes[RECORD_TAG.len()..], "signed record");
        let record = Self { writer: r.str()?, record: Record::decode(&mut r)?, signature: r.fixed()? };
        r.finish()?;
        Ok(record)
    }

    /// Checks that the record can be stored and read back: its encoding
    /// round-trips through the bounded decoder and fits a block. A backend
    /// refuses anything else before accepting it, so no reader is ever
    /// handed a record it cannot decode.
    pub fn check_storable(&self) -> Result<(), LedgerError> {
        let bytes = self.to_bytes();
        if bytes.len() > crate::block::MAX_RECORD_BYTES {
            return Err(LedgerError::Malformed {
                what: "signed record",
                reason: format!("{} bytes exceed {}", bytes.len(), crate::block::MAX_RECORD_BYTES),
            });
        }
        Self::from_bytes(&bytes).map(drop)
    }

    /// The record's hash: `SHA-256(0x00 ‖ encoding)`, its Merkle leaf.
    pub fn hash(&self) -> Digest {
        leaf_hash(&self.to_bytes())
    }
}

/// Refuses bytes that do not start with this build's [`RECORD_TAG`].
fn check_tag(bytes: &[u8]) -> Result<(), LedgerError> {
    let refuse = |reason: String| Err(LedgerError::Malformed { what: "signed record", reason });
    match bytes {
        [0xFF, b'S', b'R', 2, ..] => Ok(()),
        [0xFF, b'S', b'R', v, ..] => refuse(format!("records v{v}; this build reads records v2 only")),
        [_, 0, 0, 0, ..] => refuse(
            "a records-v1 encoding (no version tag); this build reads records v2 only. Records v1 were never \
             released: create the ledger again with this build"
                .into(),
        ),
        _ => refuse("no records-v2 tag (0xFF 'S' 'R' 2) at the start".into()),
    }
}

/// `SHA-256(0x00 ‖ bytes)` (RFC 9162 leaf hash).
pub fn leaf_hash(bytes: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(bytes);
    h.finalize().into()
}

/// An organisation's ed25519 signing key: zeroized on drop, redacted in `Debug`.
pub struct OrgKey(SigningKey);

impl OrgKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// A key from its 32 secret bytes.
    pub fn from_bytes(secret: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(secret))
    }

    /// The 32 secret bytes, for storing with restrictive permissions.
    pub fn to_secret_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.0.to_bytes())
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Signs arbitrary bytes (block headers).
    pub fn sign_bytes(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// Seals `plain` to the member whose ed25519 public key is `recipient`
    /// (ECIES): a fresh key pair agrees a key with the recipient's
    /// ([`OrgKey::agree`] under `label` and `context`), which seals `plain`
    /// with AES-256-GCM. Output: the fresh public key (32 bytes), the nonce
    /// (12), the ciphertext and its tag. Only the recipient's key opens it.
    pub fn seal_to(recipient: &[u8; 32], label: &[u8], context: &[u8], plain: &[u8]) -> Result<Vec<u8>, LedgerError> {
        use aes_gcm::aead::{Aead, KeyInit};
        let fresh = OrgKey::generate();
        let key = fresh.agree(recipient, label, context)?;
        let mut nonce = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let sealed = aes_gcm::Aes256Gcm::new_from_slice(key.as_slice())
            .expect("32-byte key")
            .encrypt(aes_gcm::Nonce::from_slice(&nonce), plain)
            .map_err(|_| LedgerError::Malformed { what: "sealed value", reason: "cannot seal".into() })?;
        Ok([&fresh.public_key()[..], &nonce, &sealed].concat())
    }

    /// Opens what [`OrgKey::seal_to`] sealed to this key under `label` and
    /// `context`; anything else — another recipient, context or a changed
    /// byte — is refused.
    pub fn open_sealed(
        &self,
        label: &[u8],
        context: &[u8],
        sealed: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, LedgerError> {
        use aes_gcm::aead::{Aead, KeyInit};
        let bad = || LedgerError::Malformed {
            what: "sealed value",
            reason: "it does not open with this key (sealed to another member, for another record, or damaged)".into(),
        };
        if sealed.len() < 32 + 12 + 16 {
            return Err(bad());
        }
        let (fresh, rest) = sealed.split_at(32);
        let (nonce, body) = rest.split_at(12);
        let key = self.agree(&fresh.try_into().expect("32 bytes"), label, context).map_err(|_| bad())?;
        let plain = aes_gcm::Aes256Gcm::new_from_slice(key.as_slice())
            .expect("32-byte key")
            .decrypt(aes_gcm::Nonce::from_slice(nonce), body)
            .map_err(|_| bad())?;
        Ok(zeroize::Zeroizing::new(plain))
    }

    /// A secret this organisation and the member whose ed25519 public key
    /// is `peer` each compute alone, exchanging nothing: X25519 between
    /// this key's secret scalar and `peer` in its Montgomery form (both
    /// sides reach the same point, `a·b·G`), hashed with `label` and
    /// `context`. Only the two organisations' keys can compute it. Using
    /// an Ed25519 key for X25519 as well is sound when the uses are kept
    /// apart (Thormarker, "On using the same key pair for Ed25519 and an
    /// X25519 based KEM", 2021): here every output is hashed under its own
    /// label and never signed. A peer key that is not a curve point, or of
    /// small order, is refused.
    pub fn agree(
        &self,
        peer: &[u8; 32],
        label: &[u8],
        context: &[u8],
    ) -> Result<zeroize::Zeroizing<[u8; 32]>, LedgerError> {
        use sha2::{Digest as _, Sha256};
        let bad = |reason: &str| LedgerError::Malformed { what: "member key", reason: reason.into() };
        let peer = ed25519_dalek::VerifyingKey::from_bytes(peer).map_err(|_| bad("not an ed25519 public key"))?;
        let scalar = zeroize::Zeroizing::new(self.0.to_scalar_bytes());
        let shared = zeroize::Zeroizing::new(peer.to_montgomery().mul_clamped(*scalar).to_bytes());
        if *shared == [0u8; 32] {
            return Err(bad("a key of small order"));
        }
        let mut h = Sha256::new();
        for part in [label, &shared[..], context] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        Ok(zeroize::Zeroizing::new(h.finalize().into()))
    }
}

impl std::fmt::Debug for OrgKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OrgKey(public {}, <secret redacted>)", hex::encode(self.public_key()))
    }
}

/// Checks a signature over arbitrary bytes.
pub fn verify_bytes(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    VerifyingKey::from_bytes(public_key)
        .and_then(|k| k.verify_strict(message, &Signature::from_bytes(signature)))
        .is_ok()
}

#[cfg(test)]
mod tests;
