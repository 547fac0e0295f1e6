//! `stayput bench pir`: the server side of a private lookup over
//! `records` records of `record_bytes` bytes (the issue: 1,000,000 × 256),
//! with the floor — a plain scan of the same matrix bytes — measured in
//! the same run; plus sizes, client times and, on a database of 16,384
//! records, a full end-to-end lookup checked against the record.
//!
//! The hint of the large database (ℓ·m·n multiply-adds, once per version)
//! is timed on a slice of its rows and extrapolated, and says so.

use std::fmt;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rayon::prelude::*;
use stayput_psi::pir::{Database, LWE_DIMENSION, Lookup};

use crate::BenchError;

/// Figures of one run.
#[derive(Debug)]
pub struct PirReport {
    records: usize,
    record_bytes: usize,
    rows: usize,
    columns: usize,
    build: Duration,
    floor: Duration,
    answer: Duration,
    threads: usize,
    hint_estimate: Duration,
    hint_fraction: usize,
    query: Duration,
    decode: Duration,
    small: Duration,
}

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

impl fmt::Display for PirReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.rows * self.columns;
        writeln!(
            f,
            "private lookup (SimplePIR-style, n = {LWE_DIMENSION}, q = 2^32, p = 2^8): {} records × {} B",
            self.records, self.record_bytes
        )?;
        writeln!(
            f,
            "  matrix {} × {} = {:.0} MB (columns half full on average)",
            self.rows,
            self.columns,
            bytes as f64 / 1e6
        )?;
        writeln!(f, "  layout + placement                  {:>9.2} s", self.build.as_secs_f64())?;
        writeln!(
            f,
            "  floor: plain scan of the matrix     {:>9.3} s  {:>6.2} GB/s ({} threads)",
            self.floor.as_secs_f64(),
            gbps(bytes, self.floor),
            self.threads
        )?;
        writeln!(
            f,
            "  server answer (D·q)                 {:>9.3} s  {:>6.2} GB/s, {:.2} GB/s per core ({:.2}× the floor)",
            self.answer.as_secs_f64(),
            gbps(bytes, self.answer),
            gbps(bytes, self.answer) / self.threads as f64,
            self.answer.as_secs_f64() / self.floor.as_secs_f64()
        )?;
        writeln!(
            f,
            "  sizes: query {} KB, answer {} KB, hint {:.1} MB",
            self.columns * 4 / 1024,
            self.rows * 4 / 1024,
            (self.rows * LWE_DIMENSION * 4) as f64 / 1e6
        )?;
        writeln!(
            f,
            "  hint (once per version), estimated from 1/{} of its rows: {:.0} s",
            self.hint_fraction,
            self.hint_estimate.as_secs_f64()
        )?;
        writeln!(
            f,
            "  client: query {:.1} ms, decode {:.1} ms",
            self.query.as_secs_f64() * 1e3,
            self.decode.as_secs_f64() * 1e3
        )?;
        writeln!(
            f,
            "  end to end on 16,384 records (hint, query, answer, decode, checked): {:.2} s",
            self.small.as_secs_f64()
        )?;
        write!(f, "  goal: ≥ 2 GB/s per core server-side")
    }
}

fn records(n: usize, record_bytes: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let value = record_bytes - 18;
    (0..n)
        .map(|i| {
            let key = format!("ST{i:07}").into_bytes();
            let mut v = format!("station {i}: observations record ").into_bytes();
            v.resize(value, b'.');
            (key, v)
        })
        .collect()
}

fn checked_lookup(db: &Database, key: &[u8], expected: &[u8]) -> Result<(), BenchError> {
    let hint = db.hint();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (lookup, query) = Lookup::new(db.layout(), key, &mut rng)?;
    let answer = db.answer(&query)?;
    match lookup.decode(db.layout(), &hint, &answer)? {
        Some(v) if v == expected => Ok(()),
        _ => Err(BenchError::Stats("the lookup did not return the record".into())),
    }
}

/// Runs the benchmark.
pub fn run(count: usize, record_bytes: usize) -> Result<PirReport, BenchError> {
    // End to end on a small database first, checked.
    let started = Instant::now();
    let small = records(16_384, record_bytes);
    let db = Database::build(&small, record_bytes, [1; 32])?;
    checked_lookup(&db, &small[1234].0, &small[1234].1)?;
    let small_time = started.elapsed();
    drop(db);

    let started = Instant::now();
    let data = records(count, record_bytes);
    let db = Database::build(&data, record_bytes, [2; 32])?;
    drop(data);
    let build = started.elapsed();
    let layout = db.layout().clone();
    let (rows, columns) = (layout.rows(), layout.columns);
    let threads = rayon::current_num_threads();
    let matrix = db.matrix_rows();

    // Floor: read every byte once as 64-bit words, the same rows in
    // parallel (best of 3).
    let mut floor = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let total: u64 = matrix
            .par_chunks(columns)
            .map(|row| {
                let words = row.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")));
                words.fold(0u64, u64::wrapping_add)
            })
            .reduce(|| 0, u64::wrapping_add);
        floor = floor.min(started.elapsed());
        std::hint::black_box(total);
    }

    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let started = Instant::now();
    let (lookup, query) = Lookup::new(&layout, b"ST0000042", &mut rng)?;
    let query_time = started.elapsed();
    let mut answer_time = Duration::MAX;
    let mut answer = None;
    for _ in 0..3 {
        let started = Instant::now();
        answer = Some(db.answer(&query)?);
        answer_time = answer_time.min(started.elapsed());
    }
    // The hint, on every `fraction`-th block of rows.
    let fraction = 64;
    let started = Instant::now();
    let partial = db.hint_rows(0..rows / fraction);
    let hint_estimate = started.elapsed() * u32::try_from(fraction).unwrap_or(u32::MAX);
    std::hint::black_box(&partial);
    // Client decoding costs ℓ·n multiply-adds whatever the hint's values;
    // time it against a hint of the right size (correctness is checked
    // on the small database above and in the unit tests).
    let stand_in = stayput_psi::pir::Hint::from_bytes(&layout, &vec![0u8; rows * LWE_DIMENSION * 4])?;
    let started = Instant::now();
    let _ = lookup.decode(&layout, &stand_in, answer.as_ref().expect("answered"));
    let decode = started.elapsed();

    Ok(PirReport {
        records: count,
        record_bytes,
        rows,
        columns,
        build,
        floor,
        answer: answer_time,
        threads,
        hint_estimate,
        hint_fraction: fraction,
        query: query_time,
        decode,
        small: small_time,
    })
}
