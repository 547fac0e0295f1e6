//! Datasets: reading key columns from CSV and Parquet with arrow,
//! normalising them into protocol keys, and writing results.
//!
//! * **CSV** files have a header row; every column is read as text, so ids
//!   keep their leading zeros and nothing is guessed.
//! * **Parquet** key columns must be text or integers; integers are keyed by
//!   their decimal text, so `00123` in CSV and `123` in Parquet do *not*
//!   match unless a rule such as `digits_only` is not enough — declare ids as
//!   text on both sides.
//! * A row whose key has a null part, a part equal (after trimming, ignoring
//!   case) to one of the dataset's declared `null_values` (such as `N/A`),
//!   or a part that is empty after normalisation, is skipped and counted
//!   ([`DatasetKeys::null_keys`]): sentinels must not match across parties.
//! * Duplicate keys are sent once; every row carrying a common key is
//!   written to the result.
//!
//! Files are read in batches of [`READ_BATCH_ROWS`] rows. Results are written
//! to a temporary file beside the target and renamed into place only when
//! complete, so a failed session never leaves a file that looks finished;
//! an existing result is never overwritten. The file's size and
//! modification time are recorded when keys are loaded and checked again
//! before rows are written, so a result always comes from the data that was
//! keyed.

use rayon::prelude::*;
use std::collections::HashSet;
use std::fs::File;
use std::io::Seek;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, StringArray};
use arrow::compute::{cast, filter_record_batch};
use arrow::csv::reader::Format;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use stayput_psi::keys::{KeyList, KeyRules, encode_key_part};

use crate::NodeError;
use crate::results::{AtomicFile, BatchWriter, ResultFormat};

/// Rows per record batch when reading.
pub const READ_BATCH_ROWS: usize = 65_536;

/// A file format the node reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// Apache Parquet.
    Parquet,
}

impl FileFormat {
    /// The format a file name implies.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Self::Csv),
            "parquet" | "pq" => Some(Self::Parquet),
            _ => None,
        }
    }

    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Parquet => "parquet",
        }
    }
}

/// A dataset a node serves: a file, its key columns and their rules.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The name peers use.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: FileFormat,
    /// Key columns, in order.
    pub key_columns: Vec<String>,
    /// Normalisation applied to every key column.
    pub rules: KeyRules,
    /// Raw values that mean "no key" (compared trimmed, ignoring case).
    pub null_values: Vec<String>,
    /// Set when the dataset is served for the blacklist query.
    pub labels: Option<LabelSettings>,
    /// Set when the dataset is served for private record lookup.
    pub pir: Option<PirSettings>,
    /// Set for a session of a PSI task run as shards: only the keys of
    /// this node's shard are read (rows are still counted).
    pub shard: Option<ShardFilter>,
}

/// Which keys a dataset read as one shard keeps: those a keyed hash puts
/// in shard `index` of `count` (the key, per task, is derived by
/// the PSI node module, `psi::shards`).
#[derive(Clone)]
pub struct ShardFilter {
    split: stayput_psi::partition::Partition,
    index: u32,
}

impl std::fmt::Debug for ShardFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardFilter").field("index", &self.index).finish_non_exhaustive()
    }
}

impl ShardFilter {
    /// Shard `index` of `count` of `task` under `key`.
    pub fn new(
        key: &stayput_psi::partition::PartitionKey,
        task: &str,
        index: u32,
        count: u32,
    ) -> Result<Self, NodeError> {
        let task = stayput_psi::group::TaskId::new(task)?;
        Ok(Self { split: stayput_psi::partition::Partition::new(key, &task, count)?, index })
    }

    /// Whether `key` falls in this shard.
    pub fn keeps(&self, key: &[u8]) -> bool {
        self.split.part_of(key) == self.index
    }
}

/// What identifies one version of a dataset file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    len: u64,
    modified: Option<std::time::SystemTime>,
}

/// The distinct protocol keys of a dataset, and what was counted on the way.
#[derive(Debug)]
pub struct DatasetKeys {
    /// Distinct encoded keys, in order of first appearance.
    pub keys: KeyList,
    /// Data rows read.
    pub rows_read: u64,
    /// Rows whose key repeated an earlier row's.
    pub duplicates: u64,
    /// Rows skipped for a null or empty key part.
    pub null_keys: u64,
    /// The file version the keys came from.
    pub fingerprint: Fingerprint,
    /// For each data row, the index of its key among `keys`, or [`NO_KEY`]
    /// (a null key, or a key another shard holds): what lets a result be
    /// written without encoding the rows again.
    pub rows: Vec<u32>,
}

/// A row without a key in [`DatasetKeys::rows`].
pub const NO_KEY: u32 = u32::MAX;

/// What streaming a dataset's keys counted.
#[derive(Debug, Clone, Copy)]
pub struct KeysRead {
    /// Data rows read.
    pub rows_read: u64,
    /// Rows skipped for a null or empty key part.
    pub null_keys: u64,
    /// The file version the keys came from.
    pub fingerprint: Fingerprint,
}

/// A result file that was written.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    /// Where.
    pub path: PathBuf,
    /// Data rows written.
    pub rows: u64,
    /// SHA-256 of the file's bytes.
    pub sha256: [u8; 32],
}

/// Encoded keys, each with the text of another column of its row.
pub type KeyedValues = Vec<(Vec<u8>, String)>;

/// Encoded keys, each with the texts of other columns of its row (`None`
/// for a null).
pub type KeyedRows = Vec<(Vec<u8>, Vec<Option<String>>)>;

/// A stream of record batches read from a dataset file.
pub type Batches = Box<dyn Iterator<Item = Result<RecordBatch, NodeError>> + Send>;

impl Dataset {
    /// Reads the key columns and returns the distinct keys.
    pub fn load_keys(&self) -> Result<DatasetKeys, NodeError> {
        let fingerprint = self.fingerprint()?;
        let (schema, batches) = self.open(true)?;
        self.check_key_columns(&schema)?;
        let (mut rows_read, mut null_keys) = (0u64, 0u64);
        let mut all = KeyList::new();
        let mut rows = Vec::new();
        for batch in batches {
            let batch = batch?;
            rows_read += batch.num_rows() as u64;
            for key in self.encode_rows(&batch)? {
                match key {
                    None => {
                        null_keys += 1;
                        rows.push(NO_KEY);
                    }
                    Some(key) if self.shard.as_ref().is_some_and(|shard| !shard.keeps(&key)) => rows.push(NO_KEY),
                    Some(key) => {
                        let index = u32::try_from(all.len()).ok().filter(|&i| i != NO_KEY).ok_or_else(|| {
                            NodeError::Worker(format!("{} holds more than 2^32 - 2 keys", self.path.display()))
                        })?;
                        rows.push(index);
                        all.push(&key);
                    }
                }
            }
        }
        let (keys, map) = all.dedup_mapped();
        for row in rows.iter_mut().filter(|r| **r != NO_KEY) {
            *row = map[*row as usize];
        }
        Ok(DatasetKeys { duplicates: (all.len() - keys.len()) as u64, keys, rows_read, null_keys, fingerprint, rows })
    }

    /// Data rows in the file, without encoding any key — or `None` when
    /// the file is too small to hold more than `at_most` rows (a CSV row
    /// takes at least two bytes), which is all a caller sizing parts
    /// needs to know. Parquet answers from its metadata; a larger CSV file
    /// is read once more.
    pub fn rows_beyond(&self, at_most: u64) -> Result<Option<u64>, NodeError> {
        let path = &self.path;
        let read_err = |source| NodeError::ReadFile { path: path.clone(), source };
        match self.format {
            FileFormat::Parquet => {
                let file = File::open(path).map_err(read_err)?;
                let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|source| NodeError::Parquet { path: path.clone(), source })?;
                let rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
                Ok((rows > at_most).then_some(rows))
            }
            FileFormat::Csv => {
                if std::fs::metadata(path).map_err(read_err)?.len() / 2 <= at_most {
                    return Ok(None);
                }
                let (schema, batches) = self.open(true)?;
                self.check_key_columns(&schema)?;
                let rows = batches.map(|b| b.map(|b| b.num_rows() as u64)).sum::<Result<u64, _>>()?;
                Ok((rows > at_most).then_some(rows))
            }
        }
    }

    /// Streams the encoded keys (duplicates included, null keys skipped)
    /// one record batch at a time, without holding the whole set.
    pub fn for_each_key_batch(
        &self,
        mut each: impl FnMut(Vec<Vec<u8>>) -> Result<(), NodeError>,
    ) -> Result<KeysRead, NodeError> {
        let fingerprint = self.fingerprint()?;
        let (schema, batches) = self.open(true)?;
        self.check_key_columns(&schema)?;
        let (mut rows_read, mut null_keys) = (0u64, 0u64);
        for batch in batches {
            let batch = batch?;
            rows_read += batch.num_rows() as u64;
            let encoded = self.encode_rows(&batch)?;
            null_keys += encoded.iter().filter(|k| k.is_none()).count() as u64;
            let keys = encoded.into_iter().flatten();
            match &self.shard {
                None => each(keys.collect())?,
                Some(shard) => each(keys.filter(|key| shard.keeps(key)).collect())?,
            }
        }
        Ok(KeysRead { rows_read, null_keys, fingerprint })
    }

    /// The digests a dataset version records on the ledger: the schema
    /// (column names and types, in order) and the file's content.
    pub fn digests(&self) -> Result<([u8; 32], [u8; 32]), NodeError> {
        let (schema, _) = self.open(false)?;
        let mut h = Sha256::new();
        for field in schema.fields() {
            h.update(field.name().as_bytes());
            h.update([0]);
            h.update(field.data_type().to_string().as_bytes());
            h.update([0]);
        }
        let content = crate::results::file_sha256(&self.path)?;
        Ok((h.finalize().into(), content))
    }

    /// The file's current version.
    pub fn fingerprint(&self) -> Result<Fingerprint, NodeError> {
        let meta =
            std::fs::metadata(&self.path).map_err(|source| NodeError::ReadFile { path: self.path.clone(), source })?;
        Ok(Fingerprint { len: meta.len(), modified: meta.modified().ok() })
    }

    /// Writes every row (all columns) whose encoded key is in `keys` to
    /// `target` in `format`, atomically, provided the file is still the
    /// version `keyed` and `target` does not exist yet.
    pub fn write_rows_with_keys(
        &self,
        keys: &HashSet<Vec<u8>>,
        keyed: Fingerprint,
        target: &Path,
        format: FileFormat,
    ) -> Result<WrittenFile, NodeError> {
        self.write_selected_rows(keyed, target, format, |batch, _| {
            Ok(self
                .encode_rows(batch)?
                .into_par_iter()
                .map(|k| Some(k.is_some_and(|k| keys.contains(&k))))
                .collect::<Vec<_>>()
                .into())
        })
    }

    /// Writes every row whose key is selected — `selected[rows[r]]` for
    /// row `r`, from the keys' [`DatasetKeys::rows`] — as
    /// [`Dataset::write_rows_with_keys`] does, without encoding a key.
    pub fn write_rows_of_keys(
        &self,
        rows: &[u32],
        selected: &[bool],
        keyed: Fingerprint,
        target: &Path,
        format: FileFormat,
    ) -> Result<WrittenFile, NodeError> {
        let changed = || NodeError::DatasetChanged { path: self.path.clone() };
        self.write_selected_rows(keyed, target, format, |batch, first| {
            let these = rows.get(first..first + batch.num_rows()).ok_or_else(changed)?;
            Ok(these
                .iter()
                .map(|&k| Some(k != NO_KEY && selected.get(k as usize) == Some(&true)))
                .collect::<Vec<_>>()
                .into())
        })
    }

    /// Writes the rows `select` marks, batch by batch (`select` gets each
    /// batch and the index of its first row), atomically, provided the file
    /// is still the version `keyed` and `target` does not exist yet.
    fn write_selected_rows(
        &self,
        keyed: Fingerprint,
        target: &Path,
        format: FileFormat,
        mut select: impl FnMut(&RecordBatch, usize) -> Result<BooleanArray, NodeError>,
    ) -> Result<WrittenFile, NodeError> {
        if self.fingerprint()? != keyed {
            return Err(NodeError::DatasetChanged { path: self.path.clone() });
        }
        if target.exists() {
            return Err(NodeError::ResultExists { path: target.into() });
        }
        let (schema, batches) = self.open(false)?;
        self.check_key_columns(&schema)?;
        let mut out = AtomicFile::create(target)?;
        let write_err = |source| NodeError::WriteResult { path: target.into(), source };
        let mut writer = BatchWriter::new(format.into(), out.file(), schema).map_err(write_err)?;
        let (mut rows, mut first) = (0u64, 0usize);
        for batch in batches {
            let batch = batch?;
            let mask = select(&batch, first)?;
            first += batch.num_rows();
            let selected = filter_record_batch(&batch, &mask).map_err(write_err)?;
            rows += selected.num_rows() as u64;
            writer.write(&selected).map_err(write_err)?;
        }
        writer.finish().map_err(write_err)?;
        let sha256 = out.persist()?;
        Ok(WrittenFile { path: target.into(), rows, sha256 })
    }

    /// How this dataset encodes its ids: what two sides of a protocol must
    /// agree on for any id to match.
    pub fn key_declaration(&self) -> String {
        format!("{} key column(s) normalised with [{}]", self.key_columns.len(), self.rules)
    }

    /// Every row's encoded key with the text of `column`, rows without a key
    /// skipped; returns the pairs and the number of rows skipped.
    pub fn keys_with(&self, column: &str) -> Result<(KeyedValues, u64), NodeError> {
        let (rows, skipped) = self.keys_with_columns(&[column.to_owned()])?;
        let pairs =
            rows.into_iter().map(|(key, mut values)| (key, values.pop().flatten().unwrap_or_default())).collect();
        Ok((pairs, skipped))
    }

    /// Every row's encoded key with the text of each of `columns` (`None`
    /// for a null), rows without a key skipped; returns the rows and the
    /// number skipped.
    pub fn keys_with_columns(&self, columns: &[String]) -> Result<(KeyedRows, u64), NodeError> {
        let (schema, batches) = self.open(false)?;
        self.check_key_columns(&schema)?;
        for column in columns {
            if schema.field_with_name(column).is_err() {
                return Err(NodeError::MissingColumn {
                    path: self.path.clone(),
                    column: column.clone(),
                    available: schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "),
                });
            }
        }
        let (mut out, mut skipped) = (Vec::new(), 0u64);
        for batch in batches {
            let batch = batch?;
            let texts = columns
                .iter()
                .map(|column| {
                    cast(batch.column_by_name(column).expect("checked"), &DataType::Utf8)
                        .map_err(|source| NodeError::Records { path: self.path.clone(), source })
                })
                .collect::<Result<Vec<ArrayRef>, _>>()?;
            let texts: Vec<&StringArray> =
                texts.iter().map(|t| t.as_any().downcast_ref::<StringArray>().expect("cast to Utf8")).collect();
            for (row, key) in self.encode_rows(&batch)?.into_iter().enumerate() {
                match key {
                    Some(key) => {
                        let values = texts.iter().map(|t| (!t.is_null(row)).then(|| t.value(row).to_owned())).collect();
                        out.push((key, values));
                    }
                    None => skipped += 1,
                }
            }
        }
        Ok((out, skipped))
    }

    /// The whole file (every column) as a stream of record batches.
    pub fn batches(&self) -> Result<(SchemaRef, Batches), NodeError> {
        self.open(false)
    }

    /// The file's column names, without reading rows.
    pub fn column_names(&self) -> Result<Vec<String>, NodeError> {
        let (schema, _) = self.open(false)?;
        Ok(schema.fields().iter().map(|f| f.name().clone()).collect())
    }

    /// The named columns of every row, as up to `parts` independent
    /// streams that together cover the file once (Parquet splits by row
    /// group, so parts scan in parallel; CSV is one stream). Memory stays
    /// bounded by one batch per stream.
    pub fn column_partitions(&self, columns: &[String], parts: usize) -> Result<Vec<Batches>, NodeError> {
        let path = self.path.clone();
        let open = || File::open(&path).map_err(|source| NodeError::ReadFile { path: path.clone(), source });
        let missing = |schema: &Schema| {
            columns.iter().find(|c| schema.index_of(c).is_err()).map(|c| NodeError::MissingColumn {
                path: path.clone(),
                column: c.clone(),
                available: schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "),
            })
        };
        match self.format {
            FileFormat::Csv => {
                let (schema, _) = self.open(false)?;
                if let Some(e) = missing(&schema) {
                    return Err(e);
                }
                let indices: Vec<usize> = columns.iter().map(|c| schema.index_of(c).expect("checked")).collect();
                let reader = arrow::csv::ReaderBuilder::new(schema)
                    .with_format(Format::default().with_header(true))
                    .with_batch_size(READ_BATCH_ROWS)
                    .with_projection(indices)
                    .build(open()?)
                    .map_err(|source| NodeError::Csv { path: path.clone(), source })?;
                let path = path.clone();
                Ok(vec![Box::new(
                    reader.map(move |b| b.map_err(|source| NodeError::Records { path: path.clone(), source })),
                )])
            }
            FileFormat::Parquet => {
                let pq_err = |source| NodeError::Parquet { path: path.clone(), source };
                // The footer is read once; every part reuses it.
                let metadata = ArrowReaderMetadata::load(&open()?, Default::default()).map_err(pq_err)?;
                if let Some(e) = missing(metadata.schema()) {
                    return Err(e);
                }
                let indices: Vec<usize> =
                    columns.iter().map(|c| metadata.schema().index_of(c).expect("checked")).collect();
                let groups = metadata.metadata().num_row_groups();
                let parts = parts.clamp(1, groups.max(1));
                let mut out: Vec<Batches> = Vec::with_capacity(parts);
                for part in 0..parts {
                    let chosen: Vec<usize> = (0..groups).filter(|g| g % parts == part).collect();
                    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(open()?, metadata.clone());
                    let mask = ProjectionMask::roots(builder.parquet_schema(), indices.iter().copied());
                    let reader = builder
                        .with_batch_size(READ_BATCH_ROWS)
                        .with_projection(mask)
                        .with_row_groups(chosen)
                        .build()
                        .map_err(pq_err)?;
                    let path = path.clone();
                    out.push(Box::new(
                        reader.map(move |b| b.map_err(|source| NodeError::Records { path: path.clone(), source })),
                    ));
                }
                Ok(out)
            }
        }
    }

    /// Opens the file as a stream of record batches; with `keys_only`, only
    /// the key columns are decoded.
    fn open(&self, keys_only: bool) -> Result<(SchemaRef, Batches), NodeError> {
        let path = &self.path;
        let file = File::open(path).map_err(|source| NodeError::ReadFile { path: path.clone(), source })?;
        match self.format {
            FileFormat::Csv => self.open_csv(file, keys_only),
            FileFormat::Parquet => self.open_parquet(file, keys_only),
        }
    }

    fn open_csv(&self, mut file: File, keys_only: bool) -> Result<(SchemaRef, Batches), NodeError> {
        let path = self.path.clone();
        let csv_err = |source| NodeError::Csv { path: path.clone(), source };
        let format = Format::default().with_header(true);
        let (header, _) = format.infer_schema(&mut file, Some(0)).map_err(csv_err)?;
        file.rewind().map_err(|source| NodeError::ReadFile { path: path.clone(), source })?;
        // Every column as text: nothing is guessed, nothing loses its zeros.
        let schema: SchemaRef = Arc::new(Schema::new(
            header.fields().iter().map(|f| Field::new(f.name(), DataType::Utf8, true)).collect::<Vec<_>>(),
        ));
        let mut builder =
            arrow::csv::ReaderBuilder::new(schema.clone()).with_format(format).with_batch_size(READ_BATCH_ROWS);
        let mut projected = schema.clone();
        if keys_only {
            self.check_key_columns(&schema)?;
            let indices = self.key_indices(&schema);
            projected = Arc::new(schema.project(&indices).expect("indices come from the schema"));
            builder = builder.with_projection(indices);
        }
        let reader = builder.build(file).map_err(csv_err)?;
        Ok((
            projected,
            Box::new(reader.map(move |b| b.map_err(|source| NodeError::Records { path: path.clone(), source }))),
        ))
    }

    fn open_parquet(&self, file: File, keys_only: bool) -> Result<(SchemaRef, Batches), NodeError> {
        let path = self.path.clone();
        let pq_err = |source| NodeError::Parquet { path: path.clone(), source };
        let mut builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq_err)?.with_batch_size(READ_BATCH_ROWS);
        let mut schema = builder.schema().clone();
        if keys_only {
            self.check_key_columns(&schema)?;
            let indices = self.key_indices(&schema);
            let mask = ProjectionMask::roots(builder.parquet_schema(), indices.iter().copied());
            builder = builder.with_projection(mask);
            let mut sorted = indices;
            sorted.sort_unstable();
            schema = Arc::new(schema.project(&sorted).expect("indices come from the schema"));
        }
        let reader = builder.build().map_err(pq_err)?;
        Ok((
            schema,
            Box::new(reader.map(move |b| b.map_err(|source| NodeError::Records { path: path.clone(), source }))),
        ))
    }

    fn key_indices(&self, schema: &Schema) -> Vec<usize> {
        self.key_columns.iter().map(|c| schema.index_of(c).expect("checked")).collect()
    }

    /// Every key column exists and has a type keys can be made of.
    fn check_key_columns(&self, schema: &Schema) -> Result<(), NodeError> {
        for column in &self.key_columns {
            let field = schema.field_with_name(column).map_err(|_| NodeError::MissingColumn {
                path: self.path.clone(),
                column: column.clone(),
                available: schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "),
            })?;
            if !is_key_type(field.data_type()) {
                return Err(NodeError::KeyColumnType {
                    path: self.path.clone(),
                    column: column.clone(),
                    found: field.data_type().to_string(),
                });
            }
        }
        Ok(())
    }

    /// The encoded, normalised key of every row; `None` for a null or empty part.
    fn encode_rows(&self, batch: &RecordBatch) -> Result<Vec<Option<Vec<u8>>>, NodeError> {
        let columns: Vec<ArrayRef> = self
            .key_columns
            .iter()
            .map(|name| {
                let column = batch.column_by_name(name).expect("checked against the schema");
                cast(column, &DataType::Utf8).map_err(|source| NodeError::Records { path: self.path.clone(), source })
            })
            .collect::<Result<_, _>>()?;
        let text: Vec<&StringArray> =
            columns.iter().map(|c| c.as_any().downcast_ref::<StringArray>().expect("cast to Utf8")).collect();
        // Rows are independent: normalised and encoded on the rayon pool
        // (callers run on a blocking thread), in order.
        (0..batch.num_rows())
            .into_par_iter()
            .map(|row| {
                // One allocation per row: parts are borrowed unless a rule
                // changes them, and encoded straight into the key.
                let capacity = text.iter().map(|column| 4 + column.value(row).len()).sum();
                let mut key = Vec::with_capacity(capacity);
                for column in &text {
                    if column.is_null(row) || self.is_null_value(column.value(row)) {
                        return Ok(None);
                    }
                    let part = self.rules.normalised(column.value(row));
                    if part.is_empty() {
                        return Ok(None);
                    }
                    encode_key_part(part.as_bytes(), &mut key)?;
                }
                Ok(Some(key))
            })
            .collect()
    }
}

impl Dataset {
    fn is_null_value(&self, raw: &str) -> bool {
        let raw = raw.trim();
        self.null_values.iter().any(|n| n.eq_ignore_ascii_case(raw))
    }
}

fn is_key_type(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
    )
}

/// Writes record batches to a Parquet file (used by tests and the demo's
/// data generator).
pub fn write_parquet(path: &Path, batches: &[RecordBatch]) -> Result<(), NodeError> {
    let schema = batches.first().map(RecordBatch::schema).unwrap_or_else(|| Arc::new(Schema::empty()));
    let mut file = File::create(path).map_err(|source| NodeError::WriteFile { path: path.into(), source })?;
    let write_err = |source| NodeError::WriteResult { path: path.into(), source };
    let mut writer = BatchWriter::new(ResultFormat::Parquet, &mut file, schema).map_err(write_err)?;
    for batch in batches {
        writer.write(batch).map_err(write_err)?;
    }
    writer.finish().map_err(write_err)
}

/// A dataset served for the blacklist query (unbalanced labeled PSI): the
/// column whose value is each id's label and the bureau's OPRF key file
/// (created on first use, 0600). How many ids a task may query, and how
/// many in all, is each grant's to say.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSettings {
    /// The label column.
    pub column: String,
    /// The OPRF key file.
    pub oprf_key: PathBuf,
}

/// A dataset served for private record lookup (PIR): which columns make a
/// key's record and the fixed size every record is padded to. Each grant
/// says how many lookups a task may make, and how many in all.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PirSettings {
    /// The record's columns, in order.
    pub columns: Vec<String>,
    /// Bytes per record (34 of them hold the key's tag, the sealed length and the seal's tag).
    #[serde(default = "default_record_bytes")]
    pub record_bytes: usize,
}

fn default_record_bytes() -> usize {
    256
}

impl From<FileFormat> for ResultFormat {
    fn from(format: FileFormat) -> Self {
        match format {
            FileFormat::Csv => Self::Csv,
            FileFormat::Parquet => Self::Parquet,
        }
    }
}

#[cfg(test)]
mod tests;
