//! `stayput bench ocean`: a compute-only query over a realistic volume of
//! ocean observations, as the data centre's node answers it.
//!
//! The run writes `rows` synthetic CTD observations (station, time, lat,
//! lon, depth, temperature, salinity; 1M-row Parquet row groups, zstd)
//! and then times, in the same run:
//!
//! * **floor** — decoding the query's columns from Parquet and nothing
//!   else, on every core (what any scan must pay);
//! * **end to end** — the node's `answer`: Parquet decoding, the cohort
//!   filter, grid × month group keys, the fixed-point sums, merging the
//!   per-thread scans and the release (suppression, table) — on every core
//!   and on one;
//! * the same with differential privacy (ε = 1), which adds the noise.
//!
//! The query is the issue's: monthly mean sea-surface temperature (depth ≤
//! 10 m) per 1° × 1° cell over the whole set.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampSecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stayput_mpc_engine::query::CohortQuery;
use stayput_mpc_engine::release::Disclosure;
use stayput_node::dataset::{Dataset, FileFormat};

use crate::BenchError;

/// The scientist's query.
pub const QUERY: &str = r#"
precision = 2
ranges = { temperature_c = [-2, 40] }
filter = { column = "depth_m", le = 10 }
[[bins]]
kind = "grid"
lat = "lat"
lon = "lon"
cell_degrees = 1.0
lat_range = [0, 40]
lon_range = [100, 140]
[[bins]]
kind = "time"
column = "time"
window = "month"
from = "2024-01-01"
to = "2025-01-01"
[[measures]]
kind = "count"
[[measures]]
kind = "mean"
column = "temperature_c"
"#;

const BATCH: usize = 65_536;
/// 2024-01-01T00:00:00Z.
const YEAR_START: i64 = 1_704_067_200;

/// Writes `rows` observations to `path` (Parquet), batch by batch.
pub fn write_observations(path: &Path, rows: usize, seed: u64) -> Result<(), BenchError> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("station_id", DataType::Utf8, false),
        Field::new("time", DataType::Timestamp(TimeUnit::Second, None), false),
        Field::new("lat", DataType::Float64, false),
        Field::new("lon", DataType::Float64, false),
        Field::new("depth_m", DataType::Float64, false),
        Field::new("temperature_c", DataType::Float64, false),
        Field::new("salinity_psu", DataType::Float64, false),
    ]));
    let io = |source| BenchError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::create(path).map_err(io)?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .set_max_row_group_row_count(Some(1 << 20))
        .build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(props))
        .map_err(|e| BenchError::Stats(e.to_string()))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let stations: Vec<(String, f64, f64)> =
        (0..2_000).map(|i| (format!("ST{i:05}"), rng.gen_range(0.0..40.0), rng.gen_range(100.0..140.0))).collect();
    let mut written = 0;
    while written < rows {
        let n = BATCH.min(rows - written);
        let mut lat = Vec::with_capacity(n);
        let mut lon = Vec::with_capacity(n);
        let mut depth = Vec::with_capacity(n);
        let mut temperature = Vec::with_capacity(n);
        let mut time = Vec::with_capacity(n);
        let mut station = Vec::with_capacity(n);
        for _ in 0..n {
            let s = &stations[rng.gen_range(0..stations.len())];
            let (y, x) = (s.1 + rng.gen_range(-0.05..0.05), s.2 + rng.gen_range(-0.05..0.05));
            let d: f64 = rng.gen_range(0.0..2_000.0f64).powf(0.5).powi(2) / 2.0;
            let t = rng.gen_range(0..366 * 86_400);
            let season = ((t as f64 / (366.0 * 86_400.0)) * std::f64::consts::TAU).cos();
            let surface = 29.0 - 0.3 * y.clamp(0.0, 40.0) + 2.0 * season;
            let value = (4.0 + (surface - 4.0) * (-d / 300.0).exp() + rng.gen_range(-0.5..0.5)).clamp(-2.0, 40.0);
            station.push(s.0.as_str());
            lat.push(y.clamp(-0.0, 39.999));
            lon.push(x.clamp(100.0, 139.999));
            depth.push((d * 10.0).round() / 10.0);
            temperature.push((value * 1000.0).round() / 1000.0);
            time.push(YEAR_START + t);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(station)),
            Arc::new(TimestampSecondArray::from(time)),
            Arc::new(Float64Array::from(lat)),
            Arc::new(Float64Array::from(lon)),
            Arc::new(Float64Array::from(depth)),
            Arc::new(Float64Array::from(temperature)),
            Arc::new(Float64Array::from_iter_values((0..n).map(|_| rng.gen_range(33.0..35.5)))),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| BenchError::Stats(e.to_string()))?;
        writer.write(&batch).map_err(|e| BenchError::Stats(e.to_string()))?;
        written += n;
    }
    writer.close().map_err(|e| BenchError::Stats(e.to_string()))?;
    Ok(())
}

/// The figures of one run.
#[derive(Debug)]
pub struct OceanReport {
    rows: usize,
    file_bytes: u64,
    threads: usize,
    groups: usize,
    released: usize,
    suppressed: usize,
    generate: Duration,
    floor: Duration,
    end_to_end: Duration,
    single_thread: Duration,
    with_noise: Duration,
    peak_rss: Option<u64>,
}

fn rate(rows: usize, d: Duration) -> f64 {
    rows as f64 / d.as_secs_f64() / 1e6
}

impl fmt::Display for OceanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mb = self.file_bytes as f64 / 1e6;
        writeln!(
            f,
            "compute-only query: monthly mean SST per 1° cell, {} observations ({mb:.0} MB Parquet)",
            self.rows
        )?;
        writeln!(f, "  data generation (not timed below)   {:>9.2} s", self.generate.as_secs_f64())?;
        writeln!(
            f,
            "  floor: decode the 5 columns         {:>9.3} s  {:>6.1} M rows/s ({} threads)",
            self.floor.as_secs_f64(),
            rate(self.rows, self.floor),
            self.threads
        )?;
        writeln!(
            f,
            "  end to end, {} threads               {:>9.3} s  {:>6.1} M rows/s  ({:.2}× the floor)",
            self.threads,
            self.end_to_end.as_secs_f64(),
            rate(self.rows, self.end_to_end),
            self.end_to_end.as_secs_f64() / self.floor.as_secs_f64()
        )?;
        writeln!(
            f,
            "  end to end, 1 thread                {:>9.3} s  {:>6.1} M rows/s",
            self.single_thread.as_secs_f64(),
            rate(self.rows, self.single_thread)
        )?;
        writeln!(
            f,
            "  end to end with noise (ε = 1)       {:>9.3} s  {:>6.1} M rows/s",
            self.with_noise.as_secs_f64(),
            rate(self.rows, self.with_noise)
        )?;
        writeln!(
            f,
            "  groups: {} (cells × months); released {}, suppressed {} (minimum 10)",
            self.groups, self.released, self.suppressed
        )?;
        if let Some(rss) = self.peak_rss {
            writeln!(f, "  peak RSS {:.0} MB", rss as f64 / 1e6)?;
        }
        write!(f, "  goal: ≥ 20 M rows/s end to end on Parquet")
    }
}

fn dataset(path: PathBuf) -> Dataset {
    Dataset {
        name: "ctd-observations".into(),
        path,
        format: FileFormat::Parquet,
        key_columns: vec!["station_id".into()],
        rules: Default::default(),
        null_values: vec![],
        labels: None,
        pir: None,
        shard: None,
    }
}

/// Runs the benchmark over `rows` observations written under `dir` (a
/// temporary folder when `None`).
pub fn run(rows: usize, dir: Option<PathBuf>) -> Result<OceanReport, BenchError> {
    let temp = tempfile::tempdir().map_err(|source| BenchError::Io { path: "temp".into(), source })?;
    let dir = dir.unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).map_err(|source| BenchError::Io { path: dir.clone(), source })?;
    let path = dir.join(format!("ctd-{rows}.parquet"));
    let started = Instant::now();
    if !path.exists() {
        write_observations(&path, rows, 2024)?;
    }
    let generate = started.elapsed();
    let file_bytes = std::fs::metadata(&path).map_err(|source| BenchError::Io { path: path.clone(), source })?.len();
    let source = dataset(path);
    let query = CohortQuery::from_toml(QUERY).map_err(|e| BenchError::Stats(e.to_string()))?;
    let threads = stayput_node::compute_only::scan_threads();

    // Floor: decode the same columns on the same threads, nothing else.
    let started = Instant::now();
    let parts = source.column_partitions(&query.columns(), threads)?;
    let decoded: usize = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|batches| s.spawn(move || batches.map(|b| b.map(|b| b.num_rows()).unwrap_or(0)).sum::<usize>()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    let floor = started.elapsed();
    if decoded != rows {
        return Err(BenchError::WrongResult { expected: rows as u64, got: decoded as u64 });
    }

    let plain = Disclosure { min_group: 10, epsilon: None };
    let started = Instant::now();
    let release = stayput_node::compute_only::answer(&source, &query, &plain)?;
    let end_to_end = started.elapsed();
    if release.rows_scanned != rows as u64 {
        return Err(BenchError::WrongResult { expected: rows as u64, got: release.rows_scanned });
    }

    let started = Instant::now();
    let stats = stayput_node::compute_only::scan(&source, &query, 1)?;
    let mut rng = StdRng::seed_from_u64(1);
    let single = stayput_mpc_engine::release::release(&query, &stats, &plain, &mut rng)
        .map_err(|e| BenchError::Stats(e.to_string()))?;
    let single_thread = started.elapsed();
    if single.table != release.table {
        return Err(BenchError::Stats("one thread and several gave different tables".into()));
    }

    let started = Instant::now();
    stayput_node::compute_only::answer(&source, &query, &Disclosure { min_group: 10, epsilon: Some(1_000) })?;
    let with_noise = started.elapsed();

    Ok(OceanReport {
        rows,
        file_bytes,
        threads,
        groups: release.groups_released + release.groups_suppressed,
        released: release.groups_released,
        suppressed: release.groups_suppressed,
        generate,
        floor,
        end_to_end,
        single_thread,
        with_noise,
        peak_rss: crate::peak_rss_bytes(),
    })
}
