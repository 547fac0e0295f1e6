//! Compute-only access (design brief §4.4): a data owner opens a dataset
//! for computation, not for download. A grantee's node asks for the answer
//! to an aggregate query; the owner's node computes it over its own rows
//! and hands out only what the grant allows.
//!
//! **The owner's node decides, from the ledger.** Before it reads a row it
//! checks that the task is on the ledger, active, requested by the caller,
//! of kind `compute_only`, recorded with exactly the parameters sent (their
//! digest), and covered by a grant on this dataset to the caller for
//! `compute_only` that allows every column the query reads
//! ([`crate::authorisation::check`]). It then applies the grant's policy:
//!
//! * **aggregates only** — the query language has no projection; `min` and
//!   `max` are refused (each is one row's value), see
//!   [`stayput_mpc_engine::release`];
//! * **minimum group size** — the grant's `min_cohort`: smaller groups are
//!   left out, smaller histogram bins and statistics are null;
//! * **differential privacy** — a grant with an ε budget requires every
//!   query to ask for noise (ε > 0) within what is left; the budget spent
//!   so far is the sum of the ε in the grant's use records on the ledger,
//!   so it survives restarts and is the same for every reader.
//!
//! A refused query reads nothing and writes nothing: the query is decoded
//! with every bound of its shape ([`CohortQuery::from_json`]) before
//! anything is allocated for it, and checked against the schema on a
//! blocking thread before the scan. An accepted one is scanned in parallel
//! over the file's row groups (arrow, bounded memory), released, and only
//! after the node's **use record** — rows scanned and ε spent — is on the
//! ledger does the table leave, as Arrow IPC, to the requester's node
//! alone. The ledger applies the use atomically: two queries racing for
//! the last of a budget cannot both pass.
//!
//! **Failures that depend on the rows are metered too.** A value outside
//! the declared range, text in a numeric column or an overflow tells the
//! requester something about the rows (halving a declared range over
//! free tasks would find a column's maximum), so such a failure is an
//! answer: the use record — every row read, the ε the query spends — goes
//! on the ledger first, and the error names the column, never a value, a
//! row or how many ([`crate::authorisation::data_dependent`]).
//!
//! The requester's node writes the table as CSV, Parquet or Arrow IPC; the
//! Parquet and Arrow files carry the release's facts (rows scanned, groups
//! suppressed, ε, minimum group) in their schema metadata.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use rand::SeedableRng;
use stayput_chain_connector::records::Computation;
use stayput_chain_connector::tasks::{ComputeOnlyParams, TaskParams, params_digest};
use stayput_mpc_engine::local::{LocalScan, LocalStats};
use stayput_mpc_engine::privacy::{Budget, epsilon_text};
use stayput_mpc_engine::query::CohortQuery;
use stayput_mpc_engine::release::{Disclosure, Release, check_compute_only, release};
use stayput_proto::v1::compute_only_peer_client::ComputeOnlyPeerClient;
use stayput_proto::v1::compute_only_peer_server::ComputeOnlyPeer;
use stayput_proto::v1::{ComputeOnlyRequest, ComputeOnlyResponse};
use tonic::{Request, Response, Status};

use crate::authorisation::{DATA_DEPENDENT, ServeRequest, data_dependent};
use crate::dataset::Dataset;
use crate::identity::caller_org;
use crate::serve::{Authorised, Metered, ledger_access, respond};
use crate::{NodeError, NodeState};

/// Largest released table (Arrow IPC bytes) a node sends or accepts.
pub const MAX_TABLE_BYTES: usize = 64 << 20;

fn refuse(task: &str, reason: impl Into<String>) -> NodeError {
    NodeError::NotAuthorised { task: task.to_owned(), reason: reason.into() }
}

fn compute_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::ComputeOnly(e.to_string())
}

/// A scan's rows and statistics, or the words of a failure that depends
/// on the rows (see [`data_dependent`]).
type Counted = (u64, Result<LocalStats, String>);

/// What a reader error that depends on the rows says (never the row).
fn unreadable_row() -> String {
    format!("{DATA_DEPENDENT}a row of the dataset does not read as its schema says; its owner must fix the file")
}

/// Scans the columns `query` reads of `dataset` on up to `threads` threads
/// (one per group of Parquet row groups) and merges the scans. Returns the
/// rows read and the statistics, or — when the rows do not fit the query —
/// the words of that failure. After such a failure every row is still
/// read and counted, so neither the count nor the words say where it was.
/// The outer error is a failure of the file or the query alone.
fn scan_counted(dataset: &Dataset, query: &CohortQuery, threads: usize) -> Result<Counted, NodeError> {
    let columns = query.columns();
    let parts = dataset.column_partitions(&columns, threads.max(1))?;
    let scans: Vec<Result<Counted, NodeError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|batches| {
                scope.spawn(move || {
                    let mut scan = LocalScan::new(query).map_err(compute_err)?;
                    let (mut rows, mut failed) = (0u64, None::<String>);
                    for batch in batches {
                        let batch = match batch {
                            Ok(batch) => batch,
                            Err(NodeError::Records { .. }) => {
                                failed.get_or_insert_with(unreadable_row);
                                break;
                            }
                            Err(e) => return Err(e),
                        };
                        rows += batch.num_rows() as u64;
                        if failed.is_none()
                            && let Err(e) = scan.absorb(&batch)
                        {
                            failed = Some(data_dependent(&e).ok_or_else(|| compute_err(e))?);
                        }
                    }
                    Ok((rows, failed.map_or_else(|| Ok(scan.finish()), Err)))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(compute_err("a scan thread panicked")))).collect()
    });
    let (mut rows, mut merged) = (0u64, None::<Result<LocalStats, String>>);
    for part in scans {
        let (part_rows, part) = part?;
        rows += part_rows;
        merged = Some(match (merged, part) {
            (None, part) => part,
            (Some(Err(failed)), _) | (Some(Ok(_)), Err(failed)) => Err(failed),
            (Some(Ok(mut m)), Ok(part)) => match m.merge(part, query) {
                Ok(()) => Ok(m),
                Err(e) => Err(data_dependent(&e).ok_or_else(|| compute_err(e))?),
            },
        });
    }
    let merged = merged.ok_or_else(|| compute_err("the dataset has no rows to scan"))?;
    Ok((rows, merged))
}

/// Scans `dataset` for `query` on up to `threads` threads and merges the
/// scans (a failure that depends on the rows is an error in the words of
/// [`data_dependent`]).
pub fn scan(dataset: &Dataset, query: &CohortQuery, threads: usize) -> Result<LocalStats, NodeError> {
    scan_counted(dataset, query, threads)?.1.map_err(NodeError::ComputeOnly)
}

/// Threads a scan uses: the machine's cores, at most 8.
pub fn scan_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(8)
}

/// Scans and releases: what the owner's node computes for a query it has
/// authorised (also what `stayput bench ocean` times).
pub fn answer(dataset: &Dataset, query: &CohortQuery, disclosure: &Disclosure) -> Result<Release, NodeError> {
    released(dataset, query, disclosure)?.1.map_err(NodeError::ComputeOnly)
}

/// Scans and releases (blocking): the rows read, and the release or the
/// words of a failure that depends on the rows — both answers, metered
/// alike. The error is a failure of the file, the schema or the query
/// alone, which says nothing about the rows.
fn released(
    dataset: &Dataset,
    query: &CohortQuery,
    disclosure: &Disclosure,
) -> Result<(u64, Result<Release, String>), NodeError> {
    let (rows, stats) = scan_counted(dataset, query, scan_threads())?;
    let stats = match stats {
        Ok(stats) => stats,
        Err(failed) => return Ok((rows, Err(failed))),
    };
    let mut rng = rand::rngs::StdRng::from_entropy();
    match release(query, &stats, disclosure, &mut rng) {
        Ok(release) => Ok((rows, Ok(release))),
        Err(e) => Ok((rows, Err(data_dependent(&e).ok_or_else(|| compute_err(e))?))),
    }
}

/// What the owner computed for a query: the rows read, and the release
/// with its table as Arrow IPC or the words of a failure that depends on
/// the rows.
type Computed = (u64, Result<(Release, Vec<u8>), String>);

/// [`released`], with the table encoded (blocking).
fn compute(dataset: &Dataset, query: &CohortQuery, disclosure: &Disclosure) -> Result<Computed, NodeError> {
    let (rows, release) = released(dataset, query, disclosure)?;
    let release = match release {
        Ok(release) => release,
        Err(failed) => return Ok((rows, Err(failed))),
    };
    let table = to_ipc(&release, disclosure)?;
    if table.len() > MAX_TABLE_BYTES {
        // How large the table is depends on which groups were released.
        return Ok((
            rows,
            Err(format!(
                "{DATA_DEPENDENT}the result table is larger than {MAX_TABLE_BYTES} bytes; narrow the region or coarsen the bins"
            )),
        ));
    }
    Ok((rows, Ok((release, table))))
}

/// The release's table as an Arrow IPC stream, its facts in the schema
/// metadata.
fn to_ipc(release: &Release, disclosure: &Disclosure) -> Result<Vec<u8>, NodeError> {
    let mut metadata = HashMap::new();
    metadata.insert("stayput.rows_scanned".to_owned(), release.rows_scanned.to_string());
    metadata.insert("stayput.groups_suppressed".to_owned(), release.groups_suppressed.to_string());
    metadata.insert("stayput.min_group".to_owned(), disclosure.min_group.to_string());
    metadata.insert("stayput.epsilon".to_owned(), disclosure.epsilon.map_or("none".to_owned(), epsilon_text));
    let schema = Arc::new(release.table.schema().as_ref().clone().with_metadata(metadata));
    let table = RecordBatch::try_new(schema.clone(), release.table.columns().to_vec()).map_err(compute_err)?;
    let mut out = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema).map_err(compute_err)?;
    writer.write(&table).map_err(compute_err)?;
    writer.finish().map_err(compute_err)?;
    drop(writer);
    Ok(out)
}

/// Decodes a released table (one Arrow IPC stream of at most
/// [`MAX_TABLE_BYTES`]).
fn from_ipc(bytes: &[u8]) -> Result<RecordBatch, NodeError> {
    if bytes.len() > MAX_TABLE_BYTES {
        return Err(compute_err(format!("the table exceeds {MAX_TABLE_BYTES} bytes")));
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| compute_err(format!("the owner's table does not decode: {e}")))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| compute_err(format!("the owner's table does not decode: {e}")))?;
    arrow::compute::concat_batches(&schema, &batches).map_err(compute_err)
}

/// The `ComputeOnlyPeer` service of a data owner's node.
#[derive(Debug, Clone)]
pub struct ComputeOnlyPeerService {
    state: Arc<NodeState>,
}

impl ComputeOnlyPeerService {
    /// A service over the node's state.
    pub fn new(state: Arc<NodeState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl ComputeOnlyPeer for ComputeOnlyPeerService {
    async fn query(&self, request: Request<ComputeOnlyRequest>) -> Result<Response<ComputeOnlyResponse>, Status> {
        let caller = caller_org(&request)?;
        let ComputeOnlyRequest { task_id, params } = request.into_inner();
        let served = serve(&self.state, &caller, &task_id, &params).await;
        respond("compute-only query", &task_id, &caller, served)
    }
}

/// What the grant lets out of this query, or why nothing at all.
fn policy(
    task: &str,
    query: &CohortQuery,
    params: &ComputeOnlyParams,
    grant: &stayput_chain_connector::rules::GrantState,
) -> Result<Disclosure, NodeError> {
    let g = &grant.grant;
    check_compute_only(query, params.epsilon > 0).map_err(|e| refuse(task, e.to_string()))?;
    let budget = Budget { total: g.epsilon_budget, spent: grant.epsilon_spent };
    let epsilon = budget.admit(params.epsilon).map_err(|e| refuse(task, format!("grant '{}': {e}", g.id)))?;
    Ok(Disclosure { min_group: u64::from(g.min_cohort), epsilon })
}

/// The owner's node answers one compute-only query (see the module docs).
async fn serve(
    state: &Arc<NodeState>,
    caller: &str,
    task_id: &str,
    params: &[u8],
) -> Result<Metered<ComputeOnlyResponse>, NodeError> {
    crate::wire::check_task_id(task_id)?;
    let ledger = &*ledger_access(state, "compute-only access")?.ledger;
    let task = ledger
        .task(task_id)
        .await
        .map_err(NodeError::from_ledger)?
        .ok_or_else(|| refuse(task_id, "not on the ledger"))?;
    if task.task.kind() != Computation::ComputeOnly {
        return Err(refuse(task_id, format!("it is a {} task, not compute_only", task.task.kind())));
    }
    if params_digest(task.task.kind(), params) != task.task.params_digest() {
        return Err(refuse(task_id, "the parameters given are not the ones recorded with the task"));
    }
    let TaskParams::ComputeOnly(p) =
        TaskParams::decode(task.task.kind(), params).map_err(|e| refuse(task_id, e.to_string()))?
    else {
        return Err(refuse(task_id, "not compute-only parameters"));
    };
    // Decoding applies every bound of the query's shape, before anything
    // is allocated for it (a task recorded straight on the ledger skipped
    // admission).
    let query = CohortQuery::from_json(&p.query).map_err(|e| NodeError::InvalidQuery(e.to_string()))?;
    let source = state.config.dataset(&p.dataset)?.clone();
    let columns = query.columns();
    let request = ServeRequest {
        task: task_id,
        peer: caller,
        dataset: &p.dataset,
        kinds: &[Computation::ComputeOnly],
        items: 0,
        columns: &columns,
        key_columns: &source.key_columns,
        shard: None,
    };
    let session = Authorised::new(state, &request).await?;
    let disclosure = policy(task_id, &query, &p, &session.grant)?;
    tracing::info!(task = %task_id, dataset = %p.dataset, "answering a compute-only query");

    let allowed = session.grant.grant.columns.clone();
    let permit = session.worker_permit();
    let (scan_source, scan_query) = (source.clone(), query.clone());
    let (rows, outcome) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let names = scan_source.column_names()?;
        let schema: Vec<&str> = names.iter().map(String::as_str).collect();
        scan_query.validate(&schema, &allowed).map_err(|e| match e {
            // The peer learns the column it named is missing, not the others.
            stayput_mpc_engine::MpcError::UnknownColumn { column, .. } => {
                NodeError::InvalidQuery(format!("the dataset has no column '{column}'"))
            }
            other => NodeError::InvalidQuery(other.to_string()),
        })?;
        compute(&scan_source, &scan_query, &disclosure)
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))??;
    // Nothing that depends on the rows leaves — the table, or a failure
    // such as a value outside a declared range — before the use (rows
    // read, the ε the query spends) is on the ledger: otherwise failures
    // would be free answers (halving a declared range finds a maximum).
    let epsilon = disclosure.epsilon.unwrap_or(0);
    let budget = &session.grant;
    let left = budget.grant.epsilon_budget.saturating_sub(budget.epsilon_spent).saturating_sub(epsilon);
    let recorded = session.record(rows, epsilon).await?;
    let (release, table) = match outcome {
        Ok(done) => done,
        Err(failed) => {
            tracing::info!(
                task = %task_id,
                dataset = %p.dataset,
                rows,
                epsilon_milli = epsilon,
                "compute-only query failed on the data; use recorded"
            );
            return Err(recorded.fail(NodeError::ComputeOnly(failed)));
        }
    };
    tracing::info!(
        task = %task_id,
        dataset = %p.dataset,
        rows,
        groups_released = release.groups_released,
        groups_suppressed = release.groups_suppressed,
        epsilon_milli = epsilon,
        "compute-only query answered; use recorded"
    );
    Ok(recorded.reply(ComputeOnlyResponse {
        table: table.into(),
        rows_scanned: rows,
        groups_released: release.groups_released as u64,
        groups_suppressed: release.groups_suppressed as u64,
        epsilon_spent: epsilon,
        epsilon_left: left,
    }))
}

/// What a compute-only task left on the requester's node.
#[derive(Debug, Clone)]
pub struct ComputeOnlyOutcome {
    /// SHA-256 of the result file.
    pub sha256: [u8; 32],
    /// Groups in the table.
    pub groups_released: u64,
    /// Groups the owner left out.
    pub groups_suppressed: u64,
    /// Milli-ε spent and left.
    pub epsilon: (u32, u32),
}

/// The requester's node runs a compute-only task: asks the dataset's
/// owner and writes the table it gets to `result_file`.
pub async fn run_compute_only(
    state: &Arc<NodeState>,
    task_id: &str,
    params: &[u8],
    p: &ComputeOnlyParams,
    result_file: &Path,
) -> Result<ComputeOnlyOutcome, NodeError> {
    let ledger = &state.ledger.as_ref().ok_or_else(|| refuse(task_id, "this node has no [ledger]"))?.ledger;
    let owner = ledger
        .dataset(&p.dataset)
        .await
        .map_err(NodeError::from_ledger)?
        .last()
        .map(|v| v.owner.clone())
        .ok_or_else(|| refuse(task_id, format!("dataset '{}' is not on the ledger", p.dataset)))?;
    let channel = crate::peers::connect_peer(state, &owner).await?;
    let mut client = ComputeOnlyPeerClient::new(channel)
        .max_decoding_message_size(MAX_TABLE_BYTES + 4096)
        .max_encoding_message_size(crate::wire::MAX_MESSAGE_BYTES);
    let response = client
        .query(ComputeOnlyRequest { task_id: task_id.to_owned(), params: params.to_vec().into() })
        .await
        .map_err(|s| crate::wire::status_error(s, &owner, "query"))?
        .into_inner();
    let (file, format) = (result_file.to_path_buf(), p.format);
    let sha256 = tokio::task::spawn_blocking(move || {
        let table = from_ipc(&response.table)?;
        crate::results::write_table(&file, format, &table)
    })
    .await
    .map_err(|e| NodeError::Worker(e.to_string()))??;
    tracing::info!(
        task = %task_id,
        owner = %owner,
        groups_released = response.groups_released,
        groups_suppressed = response.groups_suppressed,
        epsilon_milli = response.epsilon_spent,
        epsilon_left_milli = response.epsilon_left,
        "compute-only result written on this node"
    );
    Ok(ComputeOnlyOutcome {
        sha256,
        groups_released: response.groups_released,
        groups_suppressed: response.groups_suppressed,
        epsilon: (response.epsilon_spent, response.epsilon_left),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_round_trip_through_arrow_ipc_and_reject_garbage() {
        use arrow::array::Int64Array;
        use arrow::datatypes::{DataType, Field, Schema};
        let table = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("count", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![12, 40]))],
        )
        .unwrap();
        let release = Release { table: table.clone(), groups_released: 2, groups_suppressed: 3, rows_scanned: 60 };
        let bytes = to_ipc(&release, &Disclosure { min_group: 10, epsilon: Some(500) }).unwrap();
        let back = from_ipc(&bytes).unwrap();
        assert_eq!(back.columns(), table.columns());
        assert_eq!(back.schema().metadata()["stayput.epsilon"], "0.500");
        assert_eq!(back.schema().metadata()["stayput.groups_suppressed"], "3");
        assert!(from_ipc(&bytes[..bytes.len() / 2]).is_err());
        assert!(from_ipc(b"not arrow").is_err());
    }
}
