//! Task requests: what a requester signs and sends to the coordinator, and
//! the canonical parameters whose digest the task record carries.
//!
//! A [`SignedTaskRequest`] is the requester organisation's ed25519
//! signature over `"stayput/task-request/v2" ‖ request` in the canonical
//! encoding of [`crate::codec`]. The request names the ledger it is for
//! ([`LedgerId`]), carries a random nonce and its issue time: the
//! coordinator accepts it only within [`REQUEST_WINDOW_SECS`] of its own
//! clock and only once (it remembers nonces for the window), so a captured
//! request cannot be replayed. The task id is derived from the signed
//! bytes, so re-sending the same request can never create a second task.
//!
//! The signed request is part of the task record on the ledger (records
//! v2): the rules accept a task only with a request its requester signed
//! for this ledger, within the window of the ledger's clock, so neither the
//! operator nor anyone else can record a task its requester did not ask
//! for, and every node's ledger reader re-checks that signature.
//!
//! The parameters travel as bytes, bounded by [`MAX_PARAMS_BYTES`], and
//! decode per kind ([`TaskParams::decode`]). Their digest
//! ([`params_digest`]) goes on the ledger in the task record; a node that is
//! asked to run a task checks the parameters it was handed against that
//! digest, so nobody — the coordinator included — can run a task other than
//! the one recorded.

use sha2::{Digest as _, Sha256};

use crate::LedgerError;
use crate::codec::{Reader, Writer};
use crate::records::{Computation, Digest, LedgerId, OrgKey, verify_bytes};

const SIGNING_LABEL: &[u8] = b"stayput/task-request/v2";
const PARAMS_LABEL: &[u8] = b"stayput/task-params/v1";

/// Largest parameter blob a task may carry.
pub const MAX_PARAMS_BYTES: usize = 16 * 1024;
/// Largest encoded signed request.
pub const MAX_REQUEST_BYTES: usize = MAX_PARAMS_BYTES + 64 * 1024;
/// How far a request's issue time may be from the coordinator's clock.
pub const REQUEST_WINDOW_SECS: u64 = 300;

/// What a requester asks the coordinator to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRequest {
    /// The requesting organisation.
    pub requester: String,
    /// What it computes.
    pub kind: Computation,
    /// The ledger datasets it reads.
    pub datasets: Vec<String>,
    /// The organisation whose node receives the result.
    pub receiver: String,
    /// Canonical parameters of the kind ([`TaskParams::encode`]).
    pub params: Vec<u8>,
    /// Random; never reused.
    pub nonce: [u8; 16],
    /// Unix seconds when it was signed.
    pub issued_at: u64,
    /// The ledger it is for.
    pub ledger: LedgerId,
}

impl TaskRequest {
    fn encode(&self, w: &mut Writer) {
        w.str(&self.requester).u8(self.kind.code());
        w.list(&self.datasets, |w, d| {
            w.str(d);
        });
        w.str(&self.receiver).bytes_unbounded(&self.params).fixed(&self.nonce).u64(self.issued_at);
        w.fixed(&self.ledger.0);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, LedgerError> {
        Ok(Self {
            requester: r.str()?,
            kind: Computation::from_code(r.u8()?)?,
            datasets: r.list(Reader::str)?,
            receiver: r.str()?,
            params: r.bytes_bounded(MAX_PARAMS_BYTES)?,
            nonce: r.fixed()?,
            issued_at: r.u64()?,
            ledger: LedgerId(r.fixed()?),
        })
    }

    fn signing_message(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(SIGNING_LABEL);
        self.encode(&mut w);
        w.into_bytes()
    }

    /// Signs the request with the requester's key.
    pub fn sign(self, key: &OrgKey) -> SignedTaskRequest {
        let signature = key.sign_bytes(&self.signing_message());
        SignedTaskRequest { request: self, signature }
    }
}

/// A task request with the requester's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTaskRequest {
    /// The request.
    pub request: TaskRequest,
    /// The requester's ed25519 signature.
    pub signature: [u8; 64],
}

impl SignedTaskRequest {
    /// Checks the signature against the requester's public key.
    pub fn verify(&self, public_key: &[u8; 32]) -> Result<(), LedgerError> {
        if verify_bytes(public_key, &self.request.signing_message(), &self.signature) {
            Ok(())
        } else {
            Err(LedgerError::BadSignature { writer: self.request.requester.clone(), kind: "task request" })
        }
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.request.encode(&mut w);
        w.fixed(&self.signature);
        w.into_bytes()
    }

    /// Decodes a canonical encoding, refusing anything over
    /// [`MAX_REQUEST_BYTES`] before reading it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LedgerError> {
        if bytes.len() > MAX_REQUEST_BYTES {
            return Err(LedgerError::Malformed {
                what: "task request",
                reason: format!("{} bytes; at most {MAX_REQUEST_BYTES} are accepted", bytes.len()),
            });
        }
        let mut r = Reader::new(bytes, "task request");
        let request = TaskRequest::decode(&mut r)?;
        let signature = r.fixed()?;
        r.finish()?;
        Ok(Self { request, signature })
    }

    /// The task id: `t-` and 24 hex digits of the signed request's SHA-256.
    pub fn task_id(&self) -> String {
        let digest = Sha256::digest(self.to_bytes());
        format!("t-{}", hex::encode(&digest[..12]))
    }
}

/// Why a string is not a task id ([`check_task_id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid task id: {0}")]
pub struct InvalidTaskId(pub &'static str);

/// What nodes and the coordinator accept as a task id: 1 to 128 characters
/// of `A-Z a-z 0-9 . _ -`, not starting with a dot. A task id names result
/// files and separates protocol domains, so it must be safe as a file name
/// wherever it comes from; the ids the ledger's tasks get
/// ([`SignedTaskRequest::task_id`]) always are, and so must be the ids of
/// sessions run without a ledger, which their caller chooses.
pub fn check_task_id(task_id: &str) -> Result<(), InvalidTaskId> {
    if task_id.is_empty() || task_id.len() > 128 {
        return Err(InvalidTaskId("it must be 1 to 128 characters long"));
    }
    if task_id.starts_with('.') {
        return Err(InvalidTaskId("it must not start with a dot"));
    }
    if !task_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(InvalidTaskId("it may hold only letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

/// The digest of a task's canonical parameters, as the task record holds it.
pub fn params_digest(kind: Computation, params: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(PARAMS_LABEL);
    h.update([kind.code()]);
    h.update(params);
    h.finalize().into()
}

/// Parameters of a balanced PSI task (kinds `psi` and `psi_cardinality`):
/// the requester's node runs the requester role on its own dataset against
/// the peer dataset's owner; `psi` delivers the common rows of the
/// requester's dataset to the requester — and with [`PsiDelivery::ToBoth`]
/// the common rows of the peer's dataset to the peer —, `psi_cardinality`
/// only their count.
///
/// Encodings: type 1 (ECDH, to the requester — the original one), type 9
/// with the protocol's code (to the requester), type
/// [`PSI_TO_BOTH_TYPE`] with the protocol's code (to both), type
/// [`PSI_SHARDED_TYPE`] with the protocol's code and the shard count as a
/// 4-byte little-endian number (to the requester, run as that many shard
/// pairs). The type byte comes first, and a sharded task's count at a fixed
/// offset after it, so a ledger that does not decode parameters (the EVM
/// contract) still reads who receives a result and how many shards serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsiParams {
    /// The requester node's own dataset (a name in its configuration).
    pub requester_dataset: String,
    /// The peer's dataset on the ledger.
    pub peer_dataset: String,
    /// The peer dataset's key columns the task matches on.
    pub columns: Vec<String>,
    /// The protocol both nodes run.
    pub protocol: PsiProtocol,
    /// Who receives the intersection.
    pub delivery: PsiDelivery,
    /// Shard pairs the task runs as (1: one session). With `N > 1` both
    /// organisations run `N` nodes, and pair `i` intersects the keys that
    /// a keyed hash puts in shard `i` on both sides; the result is the
    /// union of the requester's `N` shard results, whose digests the
    /// result record carries beside their combination
    /// ([`combine_shard_digests`]). To the requester only.
    pub shards: u32,
}

/// The type byte of PSI parameters run as shards.
pub const PSI_SHARDED_TYPE: u8 = 11;

/// Most shards a PSI task may run as.
pub const MAX_SHARDS: u32 = 256;

/// The digest a sharded task's result record carries: SHA-256 of a
/// domain label and the shard results' digests in shard order.
pub fn combine_shard_digests(shards: &[Digest]) -> Digest {
    let mut h = Sha256::new();
    h.update(SHARD_DIGESTS_LABEL);
    for d in shards {
        h.update(d);
    }
    h.finalize().into()
}

/// The label [`combine_shard_digests`] starts with.
pub const SHARD_DIGESTS_LABEL: &[u8] = b"stayput/psi/shard-digests/v1";

/// The type byte of PSI parameters that deliver the intersection to both
/// parties: the ledger's rules let the peer dataset's owner record its own
/// result for such a task, and only for such a task.
pub const PSI_TO_BOTH_TYPE: u8 = 10;

/// Who receives a PSI task's intersection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PsiDelivery {
    /// The requester only (its own rows that match).
    #[default]
    ToRequester,
    /// The requester and the peer, each its own matching rows; each
    /// result's digest is recorded by its receiver (the peer's node records
    /// its own before the requester's result is complete).
    ToBoth,
}

impl PsiDelivery {
    /// The name the CLI takes: `intersection` or `intersection-both`.
    pub fn name(self) -> &'static str {
        match self {
            PsiDelivery::ToRequester => "intersection",
            PsiDelivery::ToBoth => "intersection-both",
        }
    }
}

/// The balanced-PSI protocol a task runs. ECDH parameters keep their
/// original encoding (type 1); other protocols are type 9 with the
/// protocol's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PsiProtocol {
    /// Commutative blinding over X25519: every mode.
    #[default]
    Ecdh = 0,
    /// OT-based (KKRT16): the intersection (to one or both), not the
    /// cardinality; an order of magnitude faster.
    Kkrt = 1,
    /// VOLE-based (RR22): the intersection (to one or both), faster than
    /// KKRT with a quarter of its traffic.
    Rr22 = 2,
}

impl PsiProtocol {
    /// The protocol's name.
    pub fn name(self) -> &'static str {
        match self {
            PsiProtocol::Ecdh => "ecdh",
            PsiProtocol::Kkrt => "kkrt",
            PsiProtocol::Rr22 => "rr22",
        }
    }

    /// Parses `ecdh`, `kkrt` or `rr22`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "ecdh" => Ok(PsiProtocol::Ecdh),
            "kkrt" => Ok(PsiProtocol::Kkrt),
            "rr22" => Ok(PsiProtocol::Rr22),
            other => Err(format!("'{other}' is not a PSI protocol; use ecdh, kkrt or rr22")),
        }
    }

    /// The protocol's code after type 9 (`ecdh` keeps type 1 there) or
    /// type [`PSI_TO_BOTH_TYPE`] (where `ecdh` is 0).
    fn from_code(code: u8, ecdh_allowed: bool) -> Result<Self, LedgerError> {
        match code {
            0 if ecdh_allowed => Ok(PsiProtocol::Ecdh),
            1 => Ok(PsiProtocol::Kkrt),
            2 => Ok(PsiProtocol::Rr22),
            other => Err(LedgerError::Malformed {
                what: "task parameters",
                reason: if ecdh_allowed {
                    format!("PSI protocol code {other} is not known (0 = ecdh, 1 = kkrt, 2 = rr22)")
                } else {
                    format!(
                        "PSI protocol code {other} is not known (1 = kkrt, 2 = rr22; ecdh uses parameters of type 1)"
                    )
                },
            }),
        }
    }
}

/// Parameters of a federated-statistics task: the cohort query (canonical
/// JSON of `stayput-mpc-engine`'s `CohortQuery`); the sites are the owners
/// of the task's datasets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsParams {
    /// The query, canonical JSON.
    pub query: String,
    /// ε of this query in milli-ε (0: no noise): every site adds discrete
    /// Laplace noise calibrated to it, spent from its grant's budget.
    pub epsilon: u32,
}

/// Parameters of a blacklist query (unbalanced labeled PSI): the
/// requester's dataset of ids to check, against the bureaus' datasets (the
/// task's datasets, every one queried in parallel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlacklistParams {
    /// The requester's dataset.
    pub requester_dataset: String,
    /// The bureaus' datasets, in the task's order.
    pub bureau_datasets: Vec<String>,
}

/// The file format of a table result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFormat {
    /// CSV with a header row.
    Csv = 0,
    /// Apache Parquet.
    Parquet = 1,
    /// Arrow IPC file format.
    ArrowIpc = 2,
}

impl ResultFormat {
    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            ResultFormat::Csv => "csv",
            ResultFormat::Parquet => "parquet",
            ResultFormat::ArrowIpc => "arrow",
        }
    }

    /// Parses `csv`, `parquet` or `arrow`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "csv" => Ok(ResultFormat::Csv),
            "parquet" => Ok(ResultFormat::Parquet),
            "arrow" | "arrow-ipc" | "ipc" => Ok(ResultFormat::ArrowIpc),
            other => Err(format!("'{other}' is not a result format; use csv, parquet or arrow")),
        }
    }

    fn from_code(code: u8) -> Result<Self, LedgerError> {
        Ok(match code {
            0 => ResultFormat::Csv,
            1 => ResultFormat::Parquet,
            2 => ResultFormat::ArrowIpc,
            other => {
                return Err(LedgerError::Malformed {
                    what: "task parameters",
                    reason: format!("result format {other} is unknown"),
                });
            }
        })
    }
}

/// Parameters of a compute-only task: an aggregate query (canonical JSON of
/// `stayput-mpc-engine`'s `CohortQuery`, binned keys included) over one
/// dataset the requester may not read, answered by its owner's node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeOnlyParams {
    /// The dataset.
    pub dataset: String,
    /// The query, canonical JSON.
    pub query: String,
    /// ε of this query in milli-ε (0: no noise).
    pub epsilon: u32,
    /// The result table's format on the requester's node.
    pub format: ResultFormat,
}

/// Parameters of a private record lookup (PIR): the keys to fetch are those
/// of one of the requester's own datasets, read on the requester's node and
/// never written anywhere else — not here, not on the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupParams {
    /// The owner's dataset, published for private lookup.
    pub dataset: String,
    /// The requester's dataset whose keys are looked up.
    pub requester_dataset: String,
}

/// The model a training task fits, with its hyperparameters (see
/// `stayput-learning`'s `boost` and `logistic` modules for their meaning).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ModelSpec {
    /// Vertical SecureBoost.
    BoostedTrees {
        /// Trees to grow.
        trees: u32,
        /// Most quantile bins per feature.
        max_bins: u32,
        /// Deepest level of a tree.
        max_depth: u32,
        /// Shrinkage of every leaf weight.
        learning_rate: f64,
        /// Least hessian sum of a child.
        min_child_weight: f64,
        /// L2 regularisation of leaf weights.
        lambda: f64,
        /// Least gain of a split.
        gamma: f64,
        /// Fewest rows of a node the feature holder is asked about.
        min_node_rows: u64,
    },
    /// Two-party vertical logistic regression.
    LogisticRegression {
        /// Passes over the aligned rows.
        epochs: u32,
        /// Rows per gradient step.
        batch_size: u32,
        /// Step size.
        learning_rate: f64,
        /// L2 penalty.
        l2: f64,
    },
}

impl ModelSpec {
    /// The model's name as the CLI and the ledger's readers show it.
    pub fn name(&self) -> &'static str {
        match self {
            ModelSpec::BoostedTrees { .. } => "boosted_trees",
            ModelSpec::LogisticRegression { .. } => "logistic_regression",
        }
    }
}

/// Parameters of a training task (kind `train`): the requester is the
/// label holder and runs on its own dataset; the peer dataset's owner is
/// the feature holder. Rows are aligned by PSI on both datasets' key
/// columns inside the task.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainParams {
    /// The requester's dataset (labels and its features).
    pub requester_dataset: String,
    /// The feature holder's dataset on the ledger.
    pub peer_dataset: String,
    /// The requester's label column (0 or 1).
    pub label: String,
    /// The requester's feature columns.
    pub features: Vec<String>,
    /// The peer dataset's feature columns (within its grant).
    pub peer_features: Vec<String>,
    /// The model and its hyperparameters.
    pub model: ModelSpec,
}

/// Parameters of a prediction task (kind `predict`): score the rows of the
/// requester's dataset with the model a training task left on both nodes;
/// each node checks its model share against the commitment that training
/// recorded before it uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictParams {
    /// The training task whose model is used.
    pub model_task: String,
    /// The requester's dataset of applicants (its model features).
    pub requester_dataset: String,
    /// The feature holder's dataset on the ledger (its model features).
    pub peer_dataset: String,
}

/// The parameters of a task, by kind.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TaskParams {
    /// Balanced PSI, intersection or cardinality.
    Psi(PsiParams),
    /// Federated statistics over several sites.
    Stats(StatsParams),
    /// A blacklist query against one or more bureaus.
    Blacklist(BlacklistParams),
    /// An aggregate query over a compute-only dataset.
    ComputeOnly(ComputeOnlyParams),
    /// A private record lookup.
    Lookup(LookupParams),
    /// Joint model training.
    Train(TrainParams),
    /// Joint prediction.
    Predict(PredictParams),
}

fn f64_bits(v: f64) -> u64 {
    v.to_bits()
}

fn read_f64(r: &mut Reader<'_>) -> Result<f64, LedgerError> {
    let v = f64::from_bits(r.u64()?);
    if !v.is_finite() {
        return Err(LedgerError::Malformed {
            what: "task parameters",
            reason: "a hyperparameter is not finite".into(),
        });
    }
    Ok(v)
}

impl TaskParams {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            TaskParams::Psi(p) => {
                match (p.delivery, p.protocol, p.shards) {
                    (PsiDelivery::ToRequester, PsiProtocol::Ecdh, 0 | 1) => w.u8(1),
                    (PsiDelivery::ToRequester, other, 0 | 1) => w.u8(9).u8(other as u8),
                    (PsiDelivery::ToBoth, protocol, 0 | 1) => w.u8(PSI_TO_BOTH_TYPE).u8(protocol as u8),
                    // Decoding refuses a sharded task to both: it cannot be
                    // recorded.
                    (_, protocol, shards) => w.u8(PSI_SHARDED_TYPE).u8(protocol as u8).u32(shards),
                };
                w.str(&p.requester_dataset).str(&p.peer_dataset).list(&p.columns, |w, c| {
                    w.str(c);
                });
            }
            TaskParams::Stats(p) => {
                w.u8(6).u32(p.epsilon).bytes_unbounded(p.query.as_bytes());
            }
            TaskParams::Blacklist(p) => {
                w.u8(3).str(&p.requester_dataset).list(&p.bureau_datasets, |w, d| {
                    w.str(d);
                });
            }
            TaskParams::ComputeOnly(p) => {
                w.u8(4).str(&p.dataset).u32(p.epsilon).u8(p.format as u8).bytes_unbounded(p.query.as_bytes());
            }
            TaskParams::Lookup(p) => {
                w.u8(5).str(&p.dataset).str(&p.requester_dataset);
            }
            TaskParams::Train(p) => {
                w.u8(7).str(&p.requester_dataset).str(&p.peer_dataset).str(&p.label);
                w.list(&p.features, |w, c| {
                    w.str(c);
                });
                w.list(&p.peer_features, |w, c| {
                    w.str(c);
                });
                match p.model {
                    ModelSpec::BoostedTrees {
                        trees,
                        max_bins,
                        max_depth,
                        learning_rate,
                        min_child_weight,
                        lambda,
                        gamma,
                        min_node_rows,
                    } => {
                        w.u8(1).u32(trees).u32(max_bins).u32(max_depth).u64(f64_bits(learning_rate));
                        w.u64(f64_bits(min_child_weight)).u64(f64_bits(lambda)).u64(f64_bits(gamma)).u64(min_node_rows);
                    }
                    ModelSpec::LogisticRegression { epochs, batch_size, learning_rate, l2 } => {
                        w.u8(2).u32(epochs).u32(batch_size).u64(f64_bits(learning_rate)).u64(f64_bits(l2));
                    }
                }
            }
            TaskParams::Predict(p) => {
                w.u8(8).str(&p.model_task).str(&p.requester_dataset).str(&p.peer_dataset);
            }
        }
        w.into_bytes()
    }

    /// Decodes the parameters of a task of `kind`.
    pub fn decode(kind: Computation, bytes: &[u8]) -> Result<Self, LedgerError> {
        if bytes.len() > MAX_PARAMS_BYTES {
            return Err(LedgerError::Malformed {
                what: "task parameters",
                reason: format!("{} bytes; at most {MAX_PARAMS_BYTES} are accepted", bytes.len()),
            });
        }
        let mut r = Reader::new(bytes, "task parameters");
        let params = match (kind, r.u8()?) {
            (Computation::Psi | Computation::PsiCardinality, tag @ (1 | 9)) => {
                let protocol = if tag == 1 { PsiProtocol::Ecdh } else { PsiProtocol::from_code(r.u8()?, false)? };
                TaskParams::Psi(PsiParams {
                    requester_dataset: r.str()?,
                    peer_dataset: r.str()?,
                    columns: r.list(Reader::str)?,
                    protocol,
                    delivery: PsiDelivery::ToRequester,
                    shards: 1,
                })
            }
            (Computation::Psi, PSI_TO_BOTH_TYPE) => TaskParams::Psi(PsiParams {
                protocol: PsiProtocol::from_code(r.u8()?, true)?,
                requester_dataset: r.str()?,
                peer_dataset: r.str()?,
                columns: r.list(Reader::str)?,
                delivery: PsiDelivery::ToBoth,
                shards: 1,
            }),
            (Computation::Psi, PSI_SHARDED_TYPE) => {
                let protocol = PsiProtocol::from_code(r.u8()?, true)?;
                let shards = r.u32()?;
                if !(2..=MAX_SHARDS).contains(&shards) {
                    return Err(LedgerError::Malformed {
                        what: "task parameters",
                        reason: format!("{shards} shards; a sharded task runs as 2 to {MAX_SHARDS}"),
                    });
                }
                TaskParams::Psi(PsiParams {
                    protocol,
                    requester_dataset: r.str()?,
                    peer_dataset: r.str()?,
                    columns: r.list(Reader::str)?,
                    delivery: PsiDelivery::ToRequester,
                    shards,
                })
            }
            (Computation::PsiCardinality, PSI_SHARDED_TYPE) => {
                return Err(LedgerError::Malformed {
                    what: "task parameters",
                    reason: "a cardinality task runs as one session; shards are a mode of kind psi".into(),
                });
            }
            (Computation::PsiCardinality, PSI_TO_BOTH_TYPE) => {
                return Err(LedgerError::Malformed {
                    what: "task parameters",
                    reason: "a cardinality task delivers its count to the requester only; \
                             intersection-both is a mode of kind psi"
                        .into(),
                });
            }
            (Computation::Stats, 6) => TaskParams::Stats(StatsParams {
                epsilon: r.u32()?,
                query: String::from_utf8(r.bytes_bounded(MAX_PARAMS_BYTES)?).map_err(|_| LedgerError::Malformed {
                    what: "task parameters",
                    reason: "the query is not UTF-8".into(),
                })?,
            }),
            (Computation::Stats, 2) => {
                return Err(LedgerError::Malformed {
                        what: "task parameters",
                        reason: "federated-statistics parameters of the first version (type 2, without ε) are no longer accepted; submit the task again with a current client".into(),
                    });
            }
            (Computation::Blacklist, 3) => TaskParams::Blacklist(BlacklistParams {
                requester_dataset: r.str()?,
                bureau_datasets: r.list(Reader::str)?,
            }),
            (Computation::ComputeOnly, 4) => TaskParams::ComputeOnly(ComputeOnlyParams {
                dataset: r.str()?,
                epsilon: r.u32()?,
                format: ResultFormat::from_code(r.u8()?)?,
                query: String::from_utf8(r.bytes_bounded(MAX_PARAMS_BYTES)?).map_err(|_| LedgerError::Malformed {
                    what: "task parameters",
                    reason: "the query is not UTF-8".into(),
                })?,
            }),
            (Computation::Lookup, 5) => {
                TaskParams::Lookup(LookupParams { dataset: r.str()?, requester_dataset: r.str()? })
            }
            (Computation::Train, 7) => TaskParams::Train(TrainParams {
                requester_dataset: r.str()?,
                peer_dataset: r.str()?,
                label: r.str()?,
                features: r.list(Reader::str)?,
                peer_features: r.list(Reader::str)?,
                model: match r.u8()? {
                    1 => ModelSpec::BoostedTrees {
                        trees: r.u32()?,
                        max_bins: r.u32()?,
                        max_depth: r.u32()?,
                        learning_rate: read_f64(&mut r)?,
                        min_child_weight: read_f64(&mut r)?,
                        lambda: read_f64(&mut r)?,
                        gamma: read_f64(&mut r)?,
                        min_node_rows: r.u64()?,
                    },
                    2 => ModelSpec::LogisticRegression {
                        epochs: r.u32()?,
                        batch_size: r.u32()?,
                        learning_rate: read_f64(&mut r)?,
                        l2: read_f64(&mut r)?,
                    },
                    other => {
                        return Err(LedgerError::Malformed {
                            what: "task parameters",
                            reason: format!("model {other} is unknown; boosted_trees (1) or logistic_regression (2)"),
                        });
                    }
                },
            }),
            (Computation::Predict, 8) => TaskParams::Predict(PredictParams {
                model_task: r.str()?,
                requester_dataset: r.str()?,
                peer_dataset: r.str()?,
            }),
            (kind, tag) => {
                return Err(LedgerError::Malformed {
                    what: "task parameters",
                    reason: format!("parameters of type {tag} are not for a {kind} task"),
                });
            }
        };
        r.finish()?;
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> TaskRequest {
        let params = TaskParams::Psi(PsiParams {
            requester_dataset: "applicants".into(),
            peer_dataset: "blacklist".into(),
            columns: vec!["national_id".into()],
            protocol: PsiProtocol::Ecdh,
            delivery: PsiDelivery::ToRequester,
            shards: 1,
        });
        TaskRequest {
            requester: "bank".into(),
            kind: Computation::Psi,
            datasets: vec!["blacklist".into()],
            receiver: "bank".into(),
            params: params.encode(),
            nonce: [7; 16],
            issued_at: 1_790_000_000,
            ledger: LedgerId::evm(20200, &[0xAB; 20]),
        }
    }

    #[test]
    fn signed_requests_round_trip_and_verify() {
        let key = OrgKey::from_bytes(&[1; 32]);
        let signed = request().sign(&key);
        let back = SignedTaskRequest::from_bytes(&signed.to_bytes()).unwrap();
        assert_eq!(back, signed);
        back.verify(&key.public_key()).unwrap();
        assert!(back.verify(&OrgKey::from_bytes(&[2; 32]).public_key()).is_err());
        assert!(back.task_id().starts_with("t-") && back.task_id().len() == 26);
        check_task_id(&back.task_id()).unwrap();
    }

    #[test]
    fn task_ids_are_file_safe() {
        assert!(check_task_id("task-2026.11_01").is_ok());
        for bad in ["", ".hidden", "../etc", "a/b", "空", &"x".repeat(129)] {
            assert!(check_task_id(bad).is_err(), "{bad}");
        }
        assert_eq!(check_task_id(".x").unwrap_err().to_string(), "invalid task id: it must not start with a dot");
    }

    #[test]
    fn any_change_breaks_the_signature_and_changes_the_id() {
        let key = OrgKey::from_bytes(&[1; 32]);
        let signed = request().sign(&key);
        let mut changed = signed.clone();
        changed.request.receiver = "bureau".into();
        assert!(changed.verify(&key.public_key()).is_err());
        assert_ne!(changed.task_id(), signed.task_id());
        let mut elsewhere = signed.clone();
        elsewhere.request.ledger = LedgerId::evm(20201, &[0xAB; 20]);
        assert!(elsewhere.verify(&key.public_key()).is_err(), "the ledger is signed too");
    }

    #[test]
    fn blacklist_query_parameters_have_one_encoding() {
        let params = TaskParams::Blacklist(BlacklistParams {
            requester_dataset: "applicants".into(),
            bureau_datasets: vec!["blacklist-a".into(), "blacklist-b".into()],
        });
        let bytes = params.encode();
        // Known answer: tag 3, the requester's dataset, then the counted list
        // of bureau datasets; every length a little-endian u32.
        let expected = concat!(
            "03",
            "0a000000",
            "6170706c6963616e7473",
            "02000000",
            "0b000000",
            "626c61636b6c6973742d61",
            "0b000000",
            "626c61636b6c6973742d62"
        );
        assert_eq!(hex::encode(&bytes), expected);
        assert_eq!(TaskParams::decode(Computation::Blacklist, &bytes).unwrap(), params);
        assert!(TaskParams::decode(Computation::Psi, &bytes).is_err());
        assert!(TaskParams::decode(Computation::Blacklist, &bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn psi_parameters_keep_their_encoding_and_name_other_protocols() {
        let mut params = PsiParams {
            requester_dataset: "a".into(),
            peer_dataset: "b".into(),
            columns: vec!["id".into()],
            protocol: PsiProtocol::Ecdh,
            delivery: PsiDelivery::ToRequester,
            shards: 1,
        };
        let body = concat!("01000000", "61", "01000000", "62", "01000000", "02000000", "6964");
        let ecdh = TaskParams::Psi(params.clone()).encode();
        assert_eq!(hex::encode(&ecdh), format!("01{body}"), "ECDH parameters are unchanged");
        params.protocol = PsiProtocol::Kkrt;
        let kkrt = TaskParams::Psi(params.clone()).encode();
        assert_eq!(hex::encode(&kkrt), format!("0901{body}"));
        let mut rr22 = params.clone();
        rr22.protocol = PsiProtocol::Rr22;
        let bytes = TaskParams::Psi(rr22.clone()).encode();
        assert_eq!(hex::encode(&bytes), format!("0902{body}"), "RR22 is protocol code 2");
        assert_eq!(TaskParams::decode(Computation::Psi, &bytes).unwrap(), TaskParams::Psi(rr22));
        assert_eq!(TaskParams::decode(Computation::Psi, &kkrt).unwrap(), TaskParams::Psi(params));
        let unknown = hex::decode(format!("0907{body}")).unwrap();
        let err = TaskParams::decode(Computation::Psi, &unknown).unwrap_err().to_string();
        assert!(err.contains("PSI protocol code 7 is not known"), "{err}");
        // Type 9 never names ECDH: one encoding per parameters.
        assert!(TaskParams::decode(Computation::Psi, &hex::decode(format!("0900{body}")).unwrap()).is_err());
    }

    #[test]
    fn sharded_psi_parameters_carry_their_count_after_the_protocol() {
        let params = PsiParams {
            requester_dataset: "a".into(),
            peer_dataset: "b".into(),
            columns: vec!["id".into()],
            protocol: PsiProtocol::Kkrt,
            delivery: PsiDelivery::ToRequester,
            shards: 4,
        };
        let body = concat!("01000000", "61", "01000000", "62", "01000000", "02000000", "6964");
        let bytes = TaskParams::Psi(params.clone()).encode();
        // Known answer: type 11, protocol 1 (kkrt), 4 shards (u32 LE), then
        // the datasets and columns as in every PSI encoding.
        assert_eq!(hex::encode(&bytes), format!("0b0104000000{body}"));
        assert_eq!(TaskParams::decode(Computation::Psi, &bytes).unwrap(), TaskParams::Psi(params.clone()));
        // One shard is the unsharded encoding: one encoding per parameters.
        let one = TaskParams::Psi(PsiParams { shards: 1, ..params.clone() }).encode();
        assert_eq!(hex::encode(&one), format!("0901{body}"));
        for (count, expect) in [("01000000", "1 shards"), ("00000000", "0 shards"), ("01010000", "257 shards")] {
            let bad = hex::decode(format!("0b01{count}{body}")).unwrap();
            let err = TaskParams::decode(Computation::Psi, &bad).unwrap_err().to_string();
            assert!(err.contains(expect) && err.contains("2 to 256"), "{err}");
        }
        let err = TaskParams::decode(Computation::PsiCardinality, &bytes).unwrap_err().to_string();
        assert!(err.contains("one session"), "{err}");
        // A sharded task to both is never written: it would not decode.
        let both = TaskParams::Psi(PsiParams { delivery: PsiDelivery::ToBoth, ..params }).encode();
        assert_eq!(both, bytes, "the encoding has no room for it; the CLI refuses it first");
    }

    #[test]
    fn psi_parameters_to_both_lead_with_their_own_type() {
        let mut params = PsiParams {
            requester_dataset: "a".into(),
            peer_dataset: "b".into(),
            columns: vec!["id".into()],
            protocol: PsiProtocol::Ecdh,
            delivery: PsiDelivery::ToBoth,
            shards: 1,
        };
        let body = concat!("01000000", "61", "01000000", "62", "01000000", "02000000", "6964");
        for (protocol, code) in [(PsiProtocol::Ecdh, "00"), (PsiProtocol::Kkrt, "01"), (PsiProtocol::Rr22, "02")] {
            params.protocol = protocol;
            let bytes = TaskParams::Psi(params.clone()).encode();
            assert_eq!(hex::encode(&bytes), format!("0a{code}{body}"), "known answer for {}", protocol.name());
            assert_eq!(bytes[0], PSI_TO_BOTH_TYPE, "the type byte is what the EVM contract reads");
            assert_eq!(TaskParams::decode(Computation::Psi, &bytes).unwrap(), TaskParams::Psi(params.clone()));
            let err = TaskParams::decode(Computation::PsiCardinality, &bytes).unwrap_err().to_string();
            assert!(err.contains("delivers its count to the requester only"), "{err}");
        }
        let unknown = hex::decode(format!("0a05{body}")).unwrap();
        let err = TaskParams::decode(Computation::Psi, &unknown).unwrap_err().to_string();
        assert!(err.contains("PSI protocol code 5 is not known (0 = ecdh, 1 = kkrt, 2 = rr22)"), "{err}");
    }

    #[test]
    fn compute_only_parameters_have_one_encoding() {
        let params = TaskParams::ComputeOnly(ComputeOnlyParams {
            dataset: "ctd".into(),
            query: "{}".into(),
            epsilon: 500,
            format: ResultFormat::Parquet,
        });
        let bytes = params.encode();
        // Known answer: tag 4, the dataset, ε in milli-ε (u32), the format
        // code, then the query's bytes; lengths and integers little-endian.
        assert_eq!(hex::encode(&bytes), concat!("04", "03000000", "637464", "f4010000", "01", "02000000", "7b7d"));
        assert_eq!(TaskParams::decode(Computation::ComputeOnly, &bytes).unwrap(), params);
        assert!(TaskParams::decode(Computation::Stats, &bytes).is_err());
        let mut unknown_format = bytes.clone();
        unknown_format[12] = 9;
        assert!(TaskParams::decode(Computation::ComputeOnly, &unknown_format).is_err());
    }

    #[test]
    fn statistics_parameters_have_one_encoding() {
        let params = TaskParams::Stats(StatsParams { query: "{}".into(), epsilon: 250 });
        let bytes = params.encode();
        // Known answer: tag 6, ε in milli-ε (u32), then the query's bytes.
        assert_eq!(hex::encode(&bytes), concat!("06", "fa000000", "02000000", "7b7d"));
        assert_eq!(TaskParams::decode(Computation::Stats, &bytes).unwrap(), params);
        // The first version (tag 2, no ε) is refused, saying so.
        let old = hex::decode(concat!("02", "02000000", "7b7d")).unwrap();
        let err = TaskParams::decode(Computation::Stats, &old).unwrap_err();
        assert!(err.to_string().contains("no longer accepted"), "{err}");
        assert!(TaskParams::decode(Computation::Stats, &bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn pir_parameters_have_one_encoding() {
        let params =
            TaskParams::Lookup(LookupParams { dataset: "stations".into(), requester_dataset: "wanted".into() });
        let bytes = params.encode();
        // Known answer: tag 5, the owner's dataset, the requester's dataset.
        assert_eq!(hex::encode(&bytes), concat!("05", "08000000", "73746174696f6e73", "06000000", "77616e746564"));
        assert_eq!(TaskParams::decode(Computation::Lookup, &bytes).unwrap(), params);
        assert!(TaskParams::decode(Computation::ComputeOnly, &bytes).is_err());
        assert!(TaskParams::decode(Computation::Lookup, &bytes[..bytes.len() - 2]).is_err());
    }

    #[test]
    fn training_and_prediction_parameters_have_one_encoding() {
        let params = TaskParams::Train(TrainParams {
            requester_dataset: "loans".into(),
            peer_dataset: "bureau".into(),
            label: "y".into(),
            features: vec!["a".into()],
            peer_features: vec!["b".into()],
            model: ModelSpec::LogisticRegression { epochs: 2, batch_size: 64, learning_rate: 0.5, l2: 0.0 },
        });
        let bytes = params.encode();
        // Known answer: tag 7, the datasets and label, both feature lists,
        // model 2 (LR) with epochs, batch size and both rates as f64 bits.
        let expected = concat!(
            "07",
            "05000000",
            "6c6f616e73",
            "06000000",
            "627572656175",
            "01000000",
            "79",
            "01000000",
            "01000000",
            "61",
            "01000000",
            "01000000",
            "62",
            "02",
            "02000000",
            "40000000",
            "000000000000e03f",
            "0000000000000000"
        );
        assert_eq!(hex::encode(&bytes), expected);
        assert_eq!(TaskParams::decode(Computation::Train, &bytes).unwrap(), params);
        assert!(TaskParams::decode(Computation::Predict, &bytes).is_err());
        let mut nan = bytes.clone();
        let at = nan.len() - 16;
        nan[at..at + 8].copy_from_slice(&f64::NAN.to_bits().to_le_bytes());
        assert!(TaskParams::decode(Computation::Train, &nan).unwrap_err().to_string().contains("not finite"));
        let mut model = bytes.clone();
        model[bytes.len() - 25] = 9;
        assert!(TaskParams::decode(Computation::Train, &model).unwrap_err().to_string().contains("model 9"));

        let params = TaskParams::Predict(PredictParams {
            model_task: "t-1".into(),
            requester_dataset: "new".into(),
            peer_dataset: "bureau".into(),
        });
        let bytes = params.encode();
        assert_eq!(
            hex::encode(&bytes),
            concat!("08", "03000000", "742d31", "03000000", "6e6577", "06000000", "627572656175")
        );
        assert_eq!(TaskParams::decode(Computation::Predict, &bytes).unwrap(), params);
        assert!(TaskParams::decode(Computation::Predict, &bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn decoders_bound_sizes_and_reject_trailing_bytes() {
        let key = OrgKey::from_bytes(&[1; 32]);
        let mut bytes = request().sign(&key).to_bytes();
        bytes.push(0);
        assert!(SignedTaskRequest::from_bytes(&bytes).is_err());
        let huge = vec![0u8; MAX_REQUEST_BYTES + 1];
        assert!(SignedTaskRequest::from_bytes(&huge).unwrap_err().to_string().contains("at most"));
        let mut big = request();
        big.params = vec![0; MAX_PARAMS_BYTES + 1];
        let encoded = big.sign(&key).to_bytes();
        assert!(SignedTaskRequest::from_bytes(&encoded).is_err());
    }

    /// Known-answer vector: the signed request's bytes, its task id and the
    /// parameters' digest. Ed25519 is deterministic, so they are stable;
    /// regenerate with `STAYPUT_WRITE_VECTORS=1 cargo test -p
    /// stayput-chain-connector task_request_vector`.
    #[test]
    fn task_request_vector() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Vector {
            version: String,
            requester_secret_hex: String,
            signed_request_hex: String,
            task_id: String,
            params_digest_hex: String,
        }
        /// The vectors beside this crate, found at run time: a test binary reused
        /// from a shared target directory must not read another checkout's file.
        fn vectors_path() -> std::path::PathBuf {
            std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
                .join("test-vectors/task-requests-v2.json")
        }
        let secret = [0x5a; 32];
        let signed = request().sign(&OrgKey::from_bytes(&secret));
        let computed = Vector {
            version: "stayput/task-request/v2".into(),
            requester_secret_hex: hex::encode(secret),
            signed_request_hex: hex::encode(signed.to_bytes()),
            task_id: signed.task_id(),
            params_digest_hex: hex::encode(params_digest(signed.request.kind, &signed.request.params)),
        };
        if std::env::var_os("STAYPUT_WRITE_VECTORS").is_some() {
            std::fs::write(vectors_path(), serde_json::to_string_pretty(&computed).unwrap() + "\n").unwrap();
        }
        let stored: Vector = serde_json::from_str(&std::fs::read_to_string(vectors_path()).unwrap()).unwrap();
        assert_eq!(stored, computed);
        let decoded = SignedTaskRequest::from_bytes(&hex::decode(&stored.signed_request_hex).unwrap()).unwrap();
        decoded.verify(&OrgKey::from_bytes(&secret).public_key()).unwrap();
    }

    #[test]
    fn params_decode_only_for_their_kind() {
        let params = TaskParams::decode(Computation::Psi, &request().params).unwrap();
        assert_eq!(params.encode(), request().params);
        assert!(TaskParams::decode(Computation::Stats, &request().params).is_err());
        assert_ne!(
            params_digest(Computation::Psi, &request().params),
            params_digest(Computation::PsiCardinality, &request().params)
        );
    }
}
