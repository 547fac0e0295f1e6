//! `stayput bench lookup`: the server side of a private lookup over
//! `records` records of `record_bytes` bytes (the issue: 1,000,000 × 256),
//! with the floor — a plain scan of the same matrix bytes as 64-bit words —
//! measured in the same run; the hint computed in full, as an owner does
//! once per version; sizes; and the client's times for one lookup on that
//! database, checked against the record — its LWE query and decoding, and
//! the OPRF round that unseals the record (blinding, the owner's evaluation
//! with its DLEQ proof, verification and unblinding).

use std::fmt;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rayon::prelude::*;
use stayput_pir::{Database, LWE_DIMENSION, Lookup, SLOT_OVERHEAD};
use stayput_psi::oprf::{Blinding, OprfKey};

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
    hint: Duration,
    expand: Duration,
    query: Duration,
    decode: Duration,
    oprf: Duration,
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
        writeln!(f, "  sealing (OPRF) + layout + placement {:>9.2} s", self.build.as_secs_f64())?;
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
            "  hint H = D·A, once per version      {:>9.1} s  ({} threads)",
            self.hint.as_secs_f64(),
            self.threads
        )?;
        writeln!(
            f,
            "  client: expand A once per version {:.0} ms; per lookup: query {:.1} ms, OPRF round {:.1} ms, decode and open {:.1} ms (record checked)",
            self.expand.as_secs_f64() * 1e3,
            self.query.as_secs_f64() * 1e3,
            self.oprf.as_secs_f64() * 1e3,
            self.decode.as_secs_f64() * 1e3
        )?;
        write!(f, "  goal: ≥ 2 GB/s per core server-side")
    }
}

fn records(n: usize, record_bytes: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let value = record_bytes - SLOT_OVERHEAD;
    (0..n)
        .map(|i| {
            let key = format!("ST{i:07}").into_bytes();
            let mut v = format!("station {i}: observations record ").into_bytes();
            v.resize(value, b'.');
            (key, v)
        })
        .collect()
}

/// Runs the benchmark.
pub fn run(count: usize, record_bytes: usize) -> Result<PirReport, BenchError> {
    let started = Instant::now();
    let data = records(count, record_bytes);
    let oprf = OprfKey::random(&mut rand::rngs::OsRng);
    let db = Database::build(&data, record_bytes, [2; 32], &oprf, "bench")?;
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

    // The owner's hint, in full.
    let started = Instant::now();
    let hint = db.hint();
    let hint_time = started.elapsed();

    // The client: A once, then one lookup, answered (best of 3) and decoded.
    let started = Instant::now();
    let a = layout.public_matrix();
    let expand = started.elapsed();
    let (key, expected) = &data[count / 3];
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let started = Instant::now();
    let (lookup, query) = Lookup::with_matrix(&layout, &a, key, &mut rng)?;
    let query_time = started.elapsed();
    let mut answer_time = Duration::MAX;
    let mut answer = None;
    for _ in 0..3 {
        let started = Instant::now();
        answer = Some(db.answer(&query)?);
        answer_time = answer_time.min(started.elapsed());
    }
    let started = Instant::now();
    let domain = stayput_pir::oprf_domain("bench")?;
    let (blinding, blinded) = Blinding::blind(&domain, std::slice::from_ref(key), &mut rand::rngs::OsRng)?;
    let (evaluations, proof) = oprf.evaluate(b"bench", &blinded, &mut rand::rngs::OsRng)?;
    let y = blinding.unblind(b"bench", &blinded, &evaluations, &proof, &oprf.public_key())?;
    let oprf_time = started.elapsed();
    let started = Instant::now();
    let found = lookup.decode(&layout, &hint, answer.as_ref().expect("answered"), &y[0])?;
    let decode = started.elapsed();
    if found.as_ref() != Some(expected) {
        return Err(BenchError::Stats("the lookup did not return the record".into()));
    }

    Ok(PirReport {
        records: count,
        record_bytes,
        rows,
        columns,
        build,
        floor,
        answer: answer_time,
        threads,
        hint: hint_time,
        expand,
        query: query_time,
        decode,
        oprf: oprf_time,
    })
}
