//! What a task leaves on its requester's node, written one way for every
//! protocol.
//!
//! **Files.** A task's result is one file under the node's output folder,
//! `<task>.<ext>` — CSV, Parquet or Arrow IPC — written to a temporary
//! file in the same folder, flushed and synced, then renamed into place
//! without replacing anything ([`AtomicFile`]): a crash leaves either no
//! result or a whole one, and a task id is never run twice into one file.
//! Beside it: `<task>.evidence.json` for a statistics task, `<task>.salt`
//! for a salted commitment, and `<task>.outcome`, written last, which marks
//! the task finished here and records the result's digest.
//!
//! **What the ledger sees** is never the result file's plain digest: a
//! small result (a cardinality, an empty intersection, a handful of
//! looked-up records) could be recovered by hashing candidates. Every
//! result is recorded as a salted commitment ([`salted_commitment`]) with
//! a fresh 32-byte salt kept beside it (`<task>.salt`), so its requester
//! can open it to an auditor and nobody else can test a guess.
//!
//! **Reading back.** [`read_outcome`] checks that the result file still
//! has the digest it was written with before a finished task is reported
//! again.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek as _, Write as _};
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use sha2::{Digest as _, Sha256};

use crate::NodeError;

/// A result's format on disk.
pub use stayput_chain_connector::tasks::ResultFormat;

/// The result file of `task` in `dir` with extension `ext`.
pub fn result_path_as(dir: &Path, task: &str, ext: &str) -> PathBuf {
    dir.join(format!("{task}.{ext}"))
}

/// The CSV result file of `task` in `dir` (every task but a compute-only
/// one in another format).
pub fn result_path(dir: &Path, task: &str) -> PathBuf {
    result_path_as(dir, task, "csv")
}

/// The result file a finished task left (whatever its format), or the CSV
/// path when the task has not finished here.
pub fn result_file(dir: &Path, task: &str) -> PathBuf {
    read_outcome(dir, task).ok().flatten().map_or_else(|| result_path(dir, task), |o| o.result_file)
}

/// The evidence file of a statistics task (commitments, proofs, pooled
/// opening) beside its result.
pub fn evidence_path(dir: &Path, task: &str) -> PathBuf {
    dir.join(format!("{task}.evidence.json"))
}

/// The salt of a task's salted result commitment, hex, beside its result.
pub fn salt_path(dir: &Path, task: &str) -> PathBuf {
    dir.join(format!("{task}.salt"))
}

fn outcome_path(dir: &Path, task: &str) -> PathBuf {
    dir.join(format!("{task}.outcome"))
}

/// SHA-256 of a file's bytes.
pub fn file_sha256(path: &Path) -> Result<[u8; 32], NodeError> {
    let mut file = File::open(path).map_err(|source| NodeError::ReadFile { path: path.into(), source })?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|source| NodeError::ReadFile { path: path.into(), source })?;
    Ok(hasher.finalize().into())
}

/// A result file being written: a temporary file beside its target,
/// renamed into place (never replacing a file) once durable.
#[derive(Debug)]
pub struct AtomicFile {
    target: PathBuf,
    temp: tempfile::NamedTempFile,
}

impl AtomicFile {
    /// Starts `target` (its folder is created); refuses one that exists.
    pub fn create(target: &Path) -> Result<Self, NodeError> {
        if target.exists() {
            return Err(NodeError::ResultExists { path: target.into() });
        }
        let io_err = |source| NodeError::WriteFile { path: target.into(), source };
        let dir = target.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let temp = tempfile::Builder::new().prefix(".partial-").tempfile_in(dir).map_err(io_err)?;
        Ok(Self { target: target.into(), temp })
    }

    /// The file to write to.
    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Makes the file durable, moves it into place and returns its SHA-256.
    pub fn persist(mut self) -> Result<[u8; 32], NodeError> {
        let target = self.target;
        let io_err = |source| NodeError::WriteFile { path: target.clone(), source };
        let file = self.temp.as_file_mut();
        file.flush().map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        let mut hasher = Sha256::new();
        std::io::copy(file, &mut hasher).map_err(io_err)?;
        self.temp.persist_noclobber(&target).map_err(|e| match e.error.kind() {
            std::io::ErrorKind::AlreadyExists => NodeError::ResultExists { path: target.clone() },
            _ => io_err(e.error),
        })?;
        Ok(hasher.finalize().into())
    }
}

/// Writes `text` to `path` atomically; returns its SHA-256.
pub fn write_text(path: &Path, text: &str) -> Result<[u8; 32], NodeError> {
    let mut out = AtomicFile::create(path)?;
    out.file().write_all(text.as_bytes()).map_err(|source| NodeError::WriteFile { path: path.into(), source })?;
    out.persist()
}

/// Record batches into a result file, in any result format.
pub enum BatchWriter<'f> {
    /// CSV with a header row.
    Csv(arrow::csv::Writer<&'f mut File>),
    /// Parquet, Snappy-compressed.
    Parquet(parquet::arrow::ArrowWriter<&'f mut File>),
    /// An Arrow IPC file.
    ArrowIpc(arrow::ipc::writer::FileWriter<&'f mut File>),
}

impl std::fmt::Debug for BatchWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Csv(_) => "BatchWriter::Csv",
            Self::Parquet(_) => "BatchWriter::Parquet",
            Self::ArrowIpc(_) => "BatchWriter::ArrowIpc",
        })
    }
}

impl<'f> BatchWriter<'f> {
    /// A writer of `schema` into `file`.
    pub fn new(format: ResultFormat, file: &'f mut File, schema: SchemaRef) -> Result<Self, arrow::error::ArrowError> {
        Ok(match format {
            ResultFormat::Csv => Self::Csv(arrow::csv::WriterBuilder::new().with_header(true).build(file)),
            ResultFormat::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::SNAPPY)
                    .build();
                Self::Parquet(parquet::arrow::ArrowWriter::try_new(file, schema, Some(props))?)
            }
            ResultFormat::ArrowIpc => Self::ArrowIpc(arrow::ipc::writer::FileWriter::try_new(file, &schema)?),
        })
    }

    /// Appends a batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), arrow::error::ArrowError> {
        match self {
            Self::Csv(w) => w.write(batch),
            Self::Parquet(w) => w.write(batch).map_err(Into::into),
            Self::ArrowIpc(w) => w.write(batch),
        }
    }

    /// Writes the format's footer.
    pub fn finish(self) -> Result<(), arrow::error::ArrowError> {
        match self {
            Self::Csv(w) => {
                let _file = w.into_inner();
                Ok(())
            }
            Self::Parquet(w) => w.close().map(drop).map_err(Into::into),
            Self::ArrowIpc(mut w) => w.finish(),
        }
    }
}

/// Writes `table` to `path` in `format`, atomically; returns its SHA-256.
pub fn write_table(path: &Path, format: ResultFormat, table: &RecordBatch) -> Result<[u8; 32], NodeError> {
    let write_err = |source| NodeError::WriteResult { path: path.into(), source };
    let mut out = AtomicFile::create(path)?;
    let mut writer = BatchWriter::new(format, out.file(), table.schema()).map_err(write_err)?;
    writer.write(table).map_err(write_err)?;
    writer.finish().map_err(write_err)?;
    out.persist()
}

/// SHA-256("stayput/result/salted/v1" ‖ salt ‖ file digest): a hiding
/// commitment to a result file, what the ledger records of every result.
pub fn salted_commitment(salt: &[u8; 32], file_sha256: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"stayput/result/salted/v1");
    h.update(salt);
    h.update(file_sha256);
    h.finalize().into()
}

/// What a protocol's requester side hands the runner when it is done.
#[derive(Debug)]
pub struct TaskResult {
    /// The result file's digest (it is already written, atomically).
    pub file_sha256: [u8; 32],
    /// The file.
    pub file: PathBuf,
    /// The result's size in its own unit (common keys, cohort rows,
    /// listings, groups, lookups).
    pub count: u64,
    /// Digests of key intermediate values (sites' commitments).
    pub intermediates: Vec<[u8; 32]>,
    /// Whether the count is the result itself (a cardinality), to be kept
    /// from the coordinator.
    pub count_withheld: bool,
}

/// What a finished task left on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    /// The task.
    pub task: String,
    /// The result file.
    pub result_file: PathBuf,
    /// What the ledger records of it: a salted commitment to the file.
    pub result_sha256: [u8; 32],
    /// The result's size in its own unit.
    pub result_count: u64,
    /// Digests of key intermediate values (sites' commitments).
    pub intermediates: Vec<[u8; 32]>,
    /// Whether the count is the result itself, kept from the coordinator.
    pub count_withheld: bool,
}

/// Marks `task` finished in `dir` with `result`: draws and keeps the salt
/// of its commitment, then writes the outcome file, last.
pub fn finish(dir: &Path, task: &str, result: TaskResult) -> Result<TaskOutcome, NodeError> {
    let mut salt = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
    write_text(&salt_path(dir, task), &hex::encode(salt))?;
    let recorded = salted_commitment(&salt, &result.file_sha256);
    let listed: Vec<String> = result.intermediates.iter().map(hex::encode).collect();
    let name = result.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let text = format!(
        "sha256={}\nfile_sha256={}\ncount={}\ncount_withheld={}\nintermediates={}\nfile={name}\n",
        hex::encode(recorded),
        hex::encode(result.file_sha256),
        result.count,
        result.count_withheld,
        listed.join(",")
    );
    write_text(&outcome_path(dir, task), &text)?;
    tracing::info!(task = %task, "task finished; result written on this node");
    Ok(TaskOutcome {
        task: task.to_owned(),
        result_file: result.file,
        result_sha256: recorded,
        result_count: result.count,
        intermediates: result.intermediates,
        count_withheld: result.count_withheld,
    })
}

/// Reads a finished task's outcome, checking the result file still has the
/// digest it was written with.
pub fn read_outcome(dir: &Path, task: &str) -> Result<Option<TaskOutcome>, NodeError> {
    let path = outcome_path(dir, task);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(NodeError::ReadFile { path, source }),
    };
    let damaged = |what: &str| NodeError::InvalidConfig(format!("{} is damaged ({what}); remove it", path.display()));
    let mut fields = HashMap::new();
    for line in text.lines() {
        let (k, v) = line.split_once('=').ok_or_else(|| damaged("a line without '='"))?;
        fields.insert(k, v);
    }
    let digest_of = |key: &str| -> Option<[u8; 32]> {
        fields.get(key).and_then(|h| hex::decode(h).ok()).and_then(|b| b.try_into().ok())
    };
    let recorded = digest_of("sha256").ok_or_else(|| damaged("no sha256"))?;
    let file_digest = digest_of("file_sha256").ok_or_else(|| {
        damaged("no file_sha256; it was written by an older Stayput whose results were not committed with a salt")
    })?;
    let count = fields.get("count").and_then(|c| c.parse().ok()).ok_or_else(|| damaged("no count"))?;
    let count_withheld = fields.get("count_withheld").is_some_and(|w| *w == "true");
    let intermediates = fields
        .get("intermediates")
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').map(|h| hex::decode(h).ok().and_then(|b| b.try_into().ok())).collect::<Option<Vec<_>>>())
        .unwrap_or(Some(vec![]))
        .ok_or_else(|| damaged("bad intermediates"))?;
    let result_file = match fields.get("file") {
        Some(name) if !name.is_empty() && !name.contains(['/', '\\']) && !name.starts_with('.') => dir.join(name),
        Some(_) => return Err(damaged("a result file name that is not a plain name")),
        None => result_path(dir, task),
    };
    if file_sha256(&result_file)? != file_digest {
        return Err(NodeError::InvalidConfig(format!(
            "the result file {} no longer has the digest it was written with; it was changed after the task ran",
            result_file.display()
        )));
    }
    Ok(Some(TaskOutcome {
        task: task.into(),
        result_file,
        result_sha256: recorded,
        result_count: count,
        intermediates,
        count_withheld,
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn table() -> RecordBatch {
        let schema = Schema::new(vec![Field::new("k", DataType::Utf8, false), Field::new("n", DataType::Int64, true)]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(StringArray::from(vec!["a", "b"])), Arc::new(Int64Array::from(vec![Some(1), None]))],
        )
        .unwrap()
    }

    #[test]
    fn every_format_is_written_atomically_once() {
        let dir = tempfile::tempdir().unwrap();
        for format in [ResultFormat::Csv, ResultFormat::Parquet, ResultFormat::ArrowIpc] {
            let path = result_path_as(dir.path(), "t-1", format.extension());
            let digest = write_table(&path, format, &table()).unwrap();
            assert_eq!(file_sha256(&path).unwrap(), digest);
            assert!(matches!(write_table(&path, format, &table()), Err(NodeError::ResultExists { .. })));
        }
        assert_eq!(std::fs::read_to_string(dir.path().join("t-1.csv")).unwrap(), "k,n\na,1\nb,\n");
        let leftovers = std::fs::read_dir(dir.path()).unwrap().flatten();
        assert!(leftovers.into_iter().all(|e| !e.file_name().to_string_lossy().starts_with(".partial-")));
    }

    #[test]
    fn outcomes_round_trip_with_salted_commitments_and_catch_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut recorded = Vec::new();
        for task in ["t-1", "t-2"] {
            let file = result_path(d, task);
            // The same small result twice: a guess hashed by anyone
            // without the salt matches neither record.
            let file_sha256 = write_text(&file, "intersection_keys\n0\n").unwrap();
            let result = TaskResult {
                file_sha256,
                file: file.clone(),
                count: 0,
                intermediates: vec![[7; 32]],
                count_withheld: task == "t-2",
            };
            let outcome = finish(d, task, result).unwrap();
            assert_eq!(read_outcome(d, task).unwrap().as_ref(), Some(&outcome));
            let salt: [u8; 32] =
                hex::decode(std::fs::read_to_string(salt_path(d, task)).unwrap()).unwrap().try_into().unwrap();
            assert_eq!(outcome.result_sha256, salted_commitment(&salt, &file_sha256));
            assert_ne!(outcome.result_sha256, file_sha256);
            recorded.push(outcome.result_sha256);
            std::fs::write(&file, "intersection_keys\n1\n").unwrap();
            assert!(read_outcome(d, task).unwrap_err().to_string().contains("changed after the task ran"));
        }
        assert_ne!(recorded[0], recorded[1], "fresh salt per task");
        assert_eq!(read_outcome(d, "t-none").unwrap(), None);
        // SHA-256("stayput/result/salted/v1" ‖ salt ‖ file digest).
        assert_eq!(
            hex::encode(salted_commitment(&[1; 32], &[2; 32])),
            "5548f71df585149217cd7640bc85f8d1dab45fc47ec80cd595071d500ce75bbc"
        );
    }
}
