//! `stayput bench stats`: federated statistics over several sites of
//! `rows` rows each, the demo's hospital query, timed phase by phase in one
//! run: each site's local scan (arrow), its commitments and range proofs,
//! secret sharing and aggregation, the requester's verification of every
//! proof and of the pooled opening, and finishing. Sites run one after the
//! other here; in a deployment they scan, prove and share in parallel on
//! their own machines, so the wall time there is the slowest site's share
//! of each phase ("per site" below) plus the requester's verification.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Float64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stayput_mpc_engine::finish::finish;
use stayput_mpc_engine::local::{LocalScan, entry_bounds, vector_len};
use stayput_mpc_engine::query::CohortQuery;
use stayput_mpc_engine::sharing::{Aggregator, Reconstruction, split, split_scalars};
use stayput_zk_proofs::contribution::{Bounds, ProofContext, check_opening, commit_and_prove, verify};

use crate::BenchError;

/// The researcher's query of the demo's hospital journey (`stayput demo`
/// runs it too), as a researcher would write it for `stayput task stats`.
pub const QUERY: &str = r#"
precision = 2
ranges = { age = [0, 120], systolic_bp = [40, 260], bmi = [10, 70] }
filter = { column = "diagnosis", eq = "I10" }
[[measures]]
kind = "count"
[[measures]]
kind = "mean"
column = "systolic_bp"
[[measures]]
kind = "std_dev"
column = "systolic_bp"
[[measures]]
kind = "histogram"
column = "age"
edges = [18, 30, 45, 60, 75, 95]
[[measures]]
kind = "correlation"
x = "systolic_bp"
y = "bmi"
[[measures]]
kind = "regression"
y = "systolic_bp"
x = ["age", "bmi"]
"#;

const BATCH: usize = 65_536;

fn site_batches(rows: usize, seed: u64) -> Vec<RecordBatch> {
    let mut rng = StdRng::seed_from_u64(seed);
    let schema = Arc::new(Schema::new(vec![
        Field::new("age", DataType::Float64, true),
        Field::new("bmi", DataType::Float64, true),
        Field::new("systolic_bp", DataType::Float64, true),
        Field::new("diagnosis", DataType::Utf8, true),
    ]));
    let dx = ["I10", "E11", "I25", "J44", "N18", "I50"];
    (0..rows.div_ceil(BATCH))
        .map(|b| {
            let n = BATCH.min(rows - b * BATCH);
            let age: Vec<f64> = (0..n).map(|_| f64::from(rng.gen_range(18..95))).collect();
            let bmi: Vec<f64> = (0..n).map(|_| (rng.gen_range(160..450) as f64) / 10.0).collect();
            let sbp: Vec<f64> = age
                .iter()
                .zip(&bmi)
                .map(|(a, m)| (100.0 + 0.4 * a + 0.6 * m + rng.gen_range(-15.0..15.0)).round())
                .collect();
            let columns: Vec<ArrayRef> = vec![
                Arc::new(Float64Array::from(age)),
                Arc::new(Float64Array::from(bmi)),
                Arc::new(Float64Array::from(sbp)),
                Arc::new(StringArray::from_iter_values((0..n).map(|_| dx[rng.gen_range(0..dx.len())]))),
            ];
            RecordBatch::try_new(schema.clone(), columns).expect("consistent batch")
        })
        .collect()
}

/// Figures of one run.
#[derive(Debug)]
pub struct StatsReport {
    sites: usize,
    rows: usize,
    entries: usize,
    scan: Vec<Duration>,
    prove: Vec<Duration>,
    share: Vec<Duration>,
    verify: Duration,
    finish: Duration,
    cohort: u64,
    proof_bytes: usize,
    fhe: FheFigures,
}

/// The TFHE census of one run (minimum cohort 10, as in the demo).
#[derive(Debug, Default)]
struct FheFigures {
    gates: usize,
    keygen: Duration,
    encrypt: Vec<Duration>,
    evaluate: Duration,
    decrypt: Duration,
    public_key_bytes: usize,
    server_key_bytes: usize,
    upload_bytes: usize,
    download_bytes: usize,
    withheld: usize,
}

fn max(d: &[Duration]) -> Duration {
    d.iter().copied().max().unwrap_or_default()
}

impl std::fmt::Display for StatsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let scan_rate = self.rows as f64 / max(&self.scan).as_secs_f64() / 1e6;
        writeln!(
            f,
            "federated statistics: {} sites × {} rows, demo query ({} vector entries per site)",
            self.sites, self.rows, self.entries
        )?;
        writeln!(f, "  cohort: {} rows", self.cohort)?;
        writeln!(
            f,
            "  local scan (arrow)        {:>9.1} ms per site (slowest; {scan_rate:.1} M rows/s)",
            ms(max(&self.scan))
        )?;
        writeln!(
            f,
            "  commitments + proofs      {:>9.1} ms per site ({} bytes each)",
            ms(max(&self.prove)),
            self.proof_bytes
        )?;
        writeln!(f, "  sharing + aggregation     {:>9.1} ms per site", ms(max(&self.share)))?;
        writeln!(f, "  requester: verify proofs + opening {:>6.1} ms", ms(self.verify))?;
        writeln!(f, "  requester: finish         {:>9.3} ms", ms(self.finish))?;
        let wall = max(&self.scan) + max(&self.prove) + max(&self.share) + self.verify + self.finish;
        let h = &self.fhe;
        writeln!(
            f,
            "  TFHE census ({} gates: group size, measures' n, histogram bins; {} withheld), before the sharing",
            h.gates, h.withheld
        )?;
        writeln!(
            f,
            "    requester: key generation {:>9.1} ms (public key {:.1} KB, compressed server key {:.1} MB)",
            ms(h.keygen),
            h.public_key_bytes as f64 / 1e3,
            h.server_key_bytes as f64 / 1e6
        )?;
        writeln!(
            f,
            "    site: encrypt census     {:>9.1} ms per site (slowest; counts and tokens)",
            ms(max(&h.encrypt))
        )?;
        writeln!(
            f,
            "    coordinator: census      {:>9.1} ms (server key decompression included; in {:.1} KB, out {:.1} MB)",
            ms(h.evaluate),
            h.upload_bytes as f64 / 1e3,
            h.download_bytes as f64 / 1e6
        )?;
        writeln!(f, "    requester: decrypt       {:>9.1} ms", ms(h.decrypt))?;
        let tfhe = h.keygen + max(&h.encrypt) + h.evaluate + h.decrypt;
        writeln!(
            f,
            "  end to end, sites in parallel, excluding transport and ledger: {:.3} s without TFHE, {:.3} s with it",
            wall.as_secs_f64(),
            (wall + tfhe).as_secs_f64()
        )?;
        write!(f, "  ledger writes (one task, one use per site, one result): see `stayput bench ledger` for throughput")
    }
}

fn bounds(query: &CohortQuery, rows: u64) -> Result<Vec<Bounds>, BenchError> {
    Ok(entry_bounds(query, rows)
        .map_err(|e| BenchError::Stats(e.to_string()))?
        .into_iter()
        .map(|(low, high)| Bounds { low, high })
        .collect())
}

/// Runs the pipeline over `sites` sites of `rows` rows.
pub fn run(sites: usize, rows: usize) -> Result<StatsReport, BenchError> {
    let bad = |e: String| BenchError::Stats(e);
    let query = CohortQuery::from_toml(QUERY).map_err(|e| bad(e.to_string()))?;
    let names: Vec<String> = (0..sites).map(|i| format!("site-{i}")).collect();
    let len = vector_len(&query);
    let (mut scan_t, mut prove_t, mut share_t) = (vec![], vec![], vec![]);
    let mut contributions = Vec::new();
    let mut value_shares = Vec::new();
    let mut blinding_shares = Vec::new();
    let mut csprng = rand::rngs::OsRng;
    let mut scanned = Vec::new();
    for i in 0..sites {
        let batches = site_batches(rows, i as u64 + 7);
        let t = Instant::now();
        let mut scan = LocalScan::new(&query).map_err(|e| bad(e.to_string()))?;
        for b in &batches {
            scan.absorb(b).map_err(|e| bad(e.to_string()))?;
        }
        scanned.push(scan.finish());
        scan_t.push(t.elapsed());
    }
    // As on the nodes under a minimum cohort: the census decides which
    // gates pass before anything is shared.
    let (fhe, pass) = census(&query, &scanned)?;
    for (name, mut stats) in names.iter().zip(scanned) {
        pass.apply(&query, &mut stats.additive, &mut stats.extrema).map_err(|e| bad(e.to_string()))?;
        let t = Instant::now();
        let bounds = bounds(&query, stats.rows_scanned)?;
        let (c, blind) =
            commit_and_prove(&ProofContext { task: "bench", party: name }, &stats.additive, &bounds, &mut csprng)
                .map_err(|e| bad(e.to_string()))?;
        prove_t.push(t.elapsed());
        let t = Instant::now();
        value_shares.push(split(&stats.additive, sites, &mut csprng).map_err(|e| bad(e.to_string()))?);
        blinding_shares.push(split_scalars(&blind.0, sites, &mut csprng).map_err(|e| bad(e.to_string()))?);
        share_t.push(t.elapsed());
        contributions.push((c, stats.rows_scanned));
    }
    // Each site aggregates what it received.
    let mut partials = Vec::new();
    for (j, _) in names.iter().enumerate() {
        let t = Instant::now();
        let mut v = Aggregator::new(&names, len);
        let mut b = Aggregator::new(&names, len);
        for (i, from) in names.iter().enumerate() {
            v.absorb(from, value_shares[i][j].clone()).map_err(|e| bad(e.to_string()))?;
            b.absorb(from, blinding_shares[i][j].clone()).map_err(|e| bad(e.to_string()))?;
        }
        partials.push((v.finish().map_err(|e| bad(e.to_string()))?, b.finish().map_err(|e| bad(e.to_string()))?));
        share_t[j] += t.elapsed();
    }
    let t = Instant::now();
    let mut values = Reconstruction::new(&names, len);
    let mut blinds = Reconstruction::new(&names, len);
    for (name, ((c, rows), (v, b))) in names.iter().zip(contributions.iter().zip(partials)) {
        let bounds = bounds(&query, *rows)?;
        verify(&ProofContext { task: "bench", party: name }, c, &bounds).map_err(|e| bad(e.to_string()))?;
        values.absorb(name, v).map_err(|e| bad(e.to_string()))?;
        blinds.absorb(name, b).map_err(|e| bad(e.to_string()))?;
    }
    let pooled = values.finish().map_err(|e| bad(e.to_string()))?;
    let blindings = blinds.finish_scalars().map_err(|e| bad(e.to_string()))?;
    let refs: Vec<_> = contributions.iter().map(|(c, _)| c).collect();
    check_opening(&refs, &pooled, &blindings).map_err(|e| bad(e.to_string()))?;
    let verify_t = t.elapsed();
    let t = Instant::now();
    let results = finish(&query, &pooled, &[]).map_err(|e| bad(e.to_string()))?;
    let finish_t = t.elapsed();
    Ok(StatsReport {
        sites,
        rows,
        entries: len,
        scan: scan_t,
        prove: prove_t,
        share: share_t,
        verify: verify_t,
        finish: finish_t,
        cohort: results.iter().map(|g| g.count).sum(),
        proof_bytes: contributions[0].0.to_bytes().len(),
        fhe,
    })
}

/// Minimum cohort of the bench's grants.
const MIN_COHORT: u32 = 10;

/// The TFHE census: the requester's keys, each site encrypting its gate
/// counts and tokens, the coordinator's evaluation, the requester's
/// decryption; returns the figures and the pass set.
fn census(
    query: &CohortQuery,
    sites: &[stayput_mpc_engine::local::LocalStats],
) -> Result<(FheFigures, stayput_mpc_engine::gates::PassSet), BenchError> {
    use stayput_mpc_engine::fhe::{Evaluator, RequesterKeys, encrypt_census};
    use stayput_mpc_engine::gates::{PassSet, families, gate_counts, gates};
    let bad = |e: stayput_mpc_engine::MpcError| BenchError::Stats(e.to_string());
    let gate_count = gates(query).len();
    let mut figures = FheFigures { gates: gate_count, ..FheFigures::default() };
    let t = Instant::now();
    let (keys, material) = RequesterKeys::generate().map_err(bad)?;
    figures.keygen = t.elapsed();
    figures.public_key_bytes = material.public_key.len();
    figures.server_key_bytes = material.server_key.len();
    let mut uploads = Vec::new();
    for stats in sites {
        let t = Instant::now();
        let counts = gate_counts(query, &stats.additive).map_err(bad)?;
        let tokens: Vec<u32> = (0..gate_count).map(|_| rand::random::<u32>() | 1).collect();
        uploads.push((encrypt_census(&material.public_key, &counts, &tokens).map_err(bad)?, true));
        figures.encrypt.push(t.elapsed());
    }
    figures.upload_bytes = uploads.iter().map(|(u, _)| u.len()).sum();
    let t = Instant::now();
    let out = Evaluator::new(&material.server_key)
        .map_err(bad)?
        .census(&families(query), &uploads, MIN_COHORT)
        .map_err(bad)?;
    figures.evaluate = t.elapsed();
    figures.download_bytes = out.iter().flatten().map(Vec::len).sum();
    let t = Instant::now();
    let per_site = out.iter().map(|site| keys.decrypt_tokens(site)).collect::<Result<Vec<_>, _>>().map_err(bad)?;
    figures.decrypt = t.elapsed();
    let flags: Vec<bool> = (0..gate_count).map(|g| per_site.iter().all(|site| site[g].is_some())).collect();
    figures.withheld = flags.iter().filter(|p| !**p).count();
    Ok((figures, PassSet::from_flags(query, flags).map_err(bad)?))
}
