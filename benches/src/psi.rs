//! `stayput bench psi`: balanced PSI, `n × n` keys with half in common, in
//! a chosen output mode (intersection to the requester by default), both
//! parties in this process — over loopback gRPC with mTLS between two real
//! nodes reading CSV files (default), or in memory with keys generated on
//! the fly (`--in-memory`).
//!
//! The **floor** is what the curve operations alone cost, measured in the
//! same run on all cores: per key and party, one hash to a u-coordinate and
//! two X25519 ladders (on this CPU's fastest backend). The ECDH protocol
//! needs exactly one such unit per key per side, so
//! `ratio = floor time for 2n units / protocol wall time`.

use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};

use rand::rngs::OsRng;
use rayon::prelude::*;
use stayput_localnet::{DatasetSpec, LocalNet, OrgSpec};
use stayput_node::dataset::FileFormat;
use stayput_node::psi::requester::PsiRequest;
use stayput_psi::Protocol;
use stayput_psi::ecdh::curve::{BlindingScalar, Coordinate, HashToCoordinate};
use stayput_psi::ecdh::{OutputMode, PROTOCOL_LABEL, SessionParams, run_in_memory};
use stayput_psi::group::TaskId;
use stayput_psi::keys::KeySet;
use stayput_psi::{kkrt, rr22};

use crate::{BenchError, peak_rss_bytes};

/// Keys `id-%012d` for `start..start + len`, generated on demand.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticIds {
    /// First id.
    pub start: u64,
    /// How many.
    pub len: usize,
}

impl KeySet for SyntheticIds {
    fn len(&self) -> usize {
        self.len
    }

    fn key_into(&self, index: usize, out: &mut Vec<u8>) {
        out.clear();
        let _ = write!(out, "id-{:012}", self.start + index as u64);
    }
}

/// Per-operation costs, and the all-core floor rate.
#[derive(Debug, Clone)]
pub struct Floor {
    /// Hashing one key to a u-coordinate, one core.
    pub hash: Duration,
    /// One X25519 ladder, batched on all cores (wall time per point).
    pub ladder: Duration,
    /// The ladder's backend on this CPU.
    pub backend: &'static str,
    /// Units (one key, one party) per second on all cores.
    pub units_per_sec: f64,
}

/// Measures the floor on `samples` keys.
pub fn measure_floor(samples: usize) -> Floor {
    let hasher = HashToCoordinate::new(PROTOCOL_LABEL, &TaskId::new("bench-floor").expect("valid"));
    let scalar = BlindingScalar::random(&mut OsRng);
    let keys: Vec<Vec<u8>> = (0..samples).map(|i| format!("id-{i:012}").into_bytes()).collect();
    let per = |d: Duration| d.div_f64(samples as f64);

    let t = Instant::now();
    let points: Vec<Coordinate> = keys.iter().map(|k| hasher.hash(k)).collect();
    let hash = per(t.elapsed());
    let t = Instant::now();
    let blinded = scalar.blind(&points);
    let ladder = per(t.elapsed());
    std::hint::black_box(blinded);

    let t = Instant::now();
    let hashed: Vec<Coordinate> = keys.par_iter().map(|k| hasher.hash(k)).collect();
    let twice = scalar.blind(&scalar.blind(&hashed));
    std::hint::black_box(twice);
    let units_per_sec = samples as f64 / t.elapsed().as_secs_f64();
    Floor { hash, ladder, backend: stayput_x25519::Backend::detect().name(), units_per_sec }
}

/// One benchmark run's figures.
#[derive(Debug, Clone)]
pub struct PsiBenchReport {
    /// Keys per side.
    pub n: usize,
    /// Output mode.
    pub mode: OutputMode,
    /// The protocol.
    pub protocol: Protocol,
    /// Whether it ran without gRPC.
    pub in_memory: bool,
    /// Keys per batch.
    pub batch: usize,
    /// Protocol wall time (for gRPC: from the request until the result is written).
    pub elapsed: Duration,
    /// Common keys found.
    pub intersection: u64,
    /// The floor measured in this run.
    pub floor: Floor,
    /// Peak RSS of the process, bytes.
    pub peak_rss: Option<u64>,
    /// Cores rayon used.
    pub threads: usize,
    /// Over nodes: the protocol messages' bytes, both directions.
    pub wire_bytes: Option<u64>,
    /// OT protocols: the same sets, mode and transport run with ECDH in
    /// this run.
    pub ecdh: Option<Duration>,
    /// RR22: the same sets, mode and transport run with KKRT in this run.
    pub kkrt: Option<Duration>,
}

impl PsiBenchReport {
    /// Keys per second per side.
    pub fn elements_per_sec(&self) -> f64 {
        self.n as f64 / self.elapsed.as_secs_f64()
    }

    /// Protocol speed over floor speed.
    pub fn ratio(&self) -> f64 {
        let floor_secs = 2.0 * self.n as f64 / self.floor.units_per_sec;
        floor_secs / self.elapsed.as_secs_f64()
    }
}

impl fmt::Display for PsiBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let fl = &self.floor;
        writeln!(
            f,
            "psi n={} per side, protocol {}, mode {} ({}), batch {}, {} threads",
            self.n,
            self.protocol,
            self.mode,
            if self.in_memory { "in memory" } else { "two nodes, gRPC over mTLS on loopback, CSV input" },
            self.batch,
            self.threads
        )?;
        writeln!(
            f,
            "  protocol: {:.2} s, {:.0} elements/s per side, intersection {}",
            self.elapsed.as_secs_f64(),
            self.elements_per_sec(),
            self.intersection
        )?;
        writeln!(
            f,
            "  floor: hash {:.2} µs (one core), X25519 ladder {:.2} µs per point on all cores ({}); one hash and two ladders per key per party",
            us(fl.hash),
            us(fl.ladder),
            fl.backend
        )?;
        writeln!(f, "  floor, all cores: {:.0} elements/s per side", fl.units_per_sec / 2.0)?;
        match self.protocol {
            Protocol::Ecdh => writeln!(f, "  ratio to floor: {:.2}", self.ratio())?,
            Protocol::Kkrt | Protocol::Rr22 => writeln!(
                f,
                "  ratio to the ECDH curve floor: {:.2} ({} does no curve work per key; above 1 is faster than any ECDH-PSI could run here)",
                self.ratio(),
                self.protocol
            )?,
        }
        if let Some(bytes) = self.wire_bytes {
            writeln!(
                f,
                "  communication: {:.1} MB in protocol messages, {:.1} bytes per element (both directions, per key of one side)",
                bytes as f64 / 1e6,
                bytes as f64 / self.n as f64
            )?;
        }
        if let Some(kkrt) = self.kkrt {
            writeln!(
                f,
                "  KKRT on the same sets in this run: {:.2} s; {} is {:.1}x faster",
                kkrt.as_secs_f64(),
                self.protocol,
                kkrt.as_secs_f64() / self.elapsed.as_secs_f64()
            )?;
        }
        if let Some(ecdh) = self.ecdh {
            writeln!(
                f,
                "  ECDH on the same sets in this run: {:.2} s; {} is {:.1}x faster",
                ecdh.as_secs_f64(),
                self.protocol,
                ecdh.as_secs_f64() / self.elapsed.as_secs_f64()
            )?;
        }
        match self.peak_rss {
            Some(b) => write!(f, "  peak RSS: {:.1} MB", b as f64 / 1e6),
            None => write!(f, "  peak RSS: unavailable"),
        }
    }
}

/// Runs the benchmark; with `compare`, a run of an OT protocol is followed
/// by ECDH (and an RR22 run by KKRT) on the same sets, mode and transport,
/// for the ratios.
pub fn run(
    n: usize,
    protocol: Protocol,
    parts: u32,
    mode: OutputMode,
    in_memory: bool,
    batch: usize,
    compare: bool,
) -> Result<PsiBenchReport, BenchError> {
    let floor = measure_floor(8192);
    let received = stayput_node::wire::peer_bytes_received();
    let (elapsed, intersection) = run_once(n, protocol, parts, mode, in_memory, batch)?;
    let wire_bytes = (!in_memory).then(|| stayput_node::wire::peer_bytes_received() - received);
    let peak_rss = peak_rss_bytes();
    let kkrt = match (protocol, compare) {
        (Protocol::Rr22, true) => Some(run_once(n, Protocol::Kkrt, parts, mode, in_memory, batch)?.0),
        _ => None,
    };
    let ecdh = match (protocol.is_ot(), compare) {
        (true, true) => Some(run_once(n, Protocol::Ecdh, 0, mode, in_memory, batch)?.0),
        _ => None,
    };
    Ok(PsiBenchReport {
        n,
        mode,
        protocol,
        in_memory,
        batch,
        elapsed,
        intersection,
        floor,
        peak_rss,
        threads: rayon::current_num_threads(),
        wire_bytes,
        ecdh,
        kkrt,
    })
}

/// One protocol run on `n × n` keys with half in common, checked.
fn run_once(
    n: usize,
    protocol: Protocol,
    parts: u32,
    mode: OutputMode,
    in_memory: bool,
    batch: usize,
) -> Result<(Duration, u64), BenchError> {
    let requester = SyntheticIds { start: 0, len: n };
    let responder = SyntheticIds { start: (n / 2) as u64, len: n };
    let expected = (n - n / 2) as u64;
    let (elapsed, intersection) = match (in_memory, protocol) {
        (true, Protocol::Ecdh) => {
            let params = SessionParams::new(TaskId::new("bench-psi")?, mode, n as u64, n as u64, batch)?;
            let t = Instant::now();
            let (out, _) = run_in_memory(&params, &requester, &responder, &mut OsRng, &mut OsRng)?;
            (t.elapsed(), out.cardinality())
        }
        (true, Protocol::Kkrt) => {
            let params = kkrt::SessionParams::new(TaskId::new("bench-psi")?, mode, n as u64, n as u64)?;
            let t = Instant::now();
            let (out, _) = kkrt::run_in_memory(&params, &requester, &responder, &mut OsRng, &mut OsRng)?;
            (t.elapsed(), out.intersection().len() as u64)
        }
        (true, Protocol::Rr22) => {
            let params = rr22::SessionParams::new(TaskId::new("bench-psi")?, mode, n as u64, n as u64)?;
            let t = Instant::now();
            let (out, _) = rr22::run_in_memory(&params, &requester, &responder, &mut OsRng, &mut OsRng)?;
            (t.elapsed(), out.intersection().len() as u64)
        }
        (false, _) => over_grpc(requester, responder, protocol, parts, mode, batch)?,
    };
    if intersection != expected {
        return Err(BenchError::WrongResult { expected, got: intersection });
    }
    Ok((elapsed, intersection))
}

fn write_ids(path: &std::path::Path, ids: SyntheticIds) -> Result<(), BenchError> {
    let io = |source| BenchError::Io { path: path.into(), source };
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    writeln!(out, "customer_id").map_err(io)?;
    let mut key = Vec::new();
    for i in 0..ids.len {
        ids.key_into(i, &mut key);
        out.write_all(&key).map_err(io)?;
        out.write_all(b"\n").map_err(io)?;
    }
    out.flush().map_err(io)
}

fn over_grpc(
    requester: SyntheticIds,
    responder: SyntheticIds,
    protocol: Protocol,
    parts: u32,
    mode: OutputMode,
    batch: usize,
) -> Result<(Duration, u64), BenchError> {
    let dir = tempfile::tempdir().map_err(|source| BenchError::Io { path: "(temp)".into(), source })?;
    let (bank_csv, bureau_csv) = (dir.path().join("bank.csv"), dir.path().join("bureau.csv"));
    write_ids(&bank_csv, requester)?;
    write_ids(&bureau_csv, responder)?;
    let spec = |name: &str, path: std::path::PathBuf| OrgSpec {
        name: name.into(),
        datasets: vec![DatasetSpec {
            name: "customers".into(),
            path,
            key_columns: vec!["customer_id".into()],
            normalise: vec!["trim".into()],
            labels: None,
            pir: None,
        }],
    };
    let orgs = [spec("bank", bank_csv), spec("bureau", bureau_csv)];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| BenchError::Io { path: "(runtime)".into(), source })?;
    runtime.block_on(async {
        let net = LocalNet::start(dir.path(), &orgs, Some(batch)).await?;
        let request = PsiRequest {
            task_id: "bench-psi".into(),
            dataset: "customers".into(),
            peer: "bureau".into(),
            peer_dataset: "customers".into(),
            mode,
            protocol,
            parts,
            output_format: FileFormat::Csv,
            shard: None,
        };
        let t = Instant::now();
        let report = stayput_node::control::request_psi(net.state("bank"), &request, |_| {}).await?;
        let elapsed = t.elapsed();
        net.shutdown().await?;
        Ok((elapsed, report.intersection_keys))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_ids_are_distinct_and_formatted() {
        let ids = SyntheticIds { start: 5, len: 3 };
        let mut k = Vec::new();
        ids.key_into(2, &mut k);
        assert_eq!(k, b"id-000000000007");
    }

    #[test]
    fn small_in_memory_run_finds_the_planted_intersection() {
        let report = run(300, Protocol::Ecdh, 0, OutputMode::IntersectionToRequester, true, 64, true).unwrap();
        assert_eq!(report.intersection, 150);
        assert!(report.ratio() > 0.0);
        assert!(report.to_string().contains("ratio to floor"));
        assert!(report.ecdh.is_none() && report.wire_bytes.is_none(), "in memory, ECDH itself: neither");
        let report = run(300, Protocol::Kkrt, 0, OutputMode::IntersectionToBoth, true, 64, true).unwrap();
        assert_eq!(report.intersection, 150);
        assert!(report.to_string().contains("protocol kkrt"));
        assert!(report.to_string().contains("ECDH on the same sets in this run"));
    }

    #[test]
    fn a_run_over_nodes_counts_its_communication() {
        let n = 2000;
        let report = run(n, Protocol::Kkrt, 0, OutputMode::IntersectionToRequester, false, 256, false).unwrap();
        assert_eq!(report.intersection, 1000);
        let bytes = report.wire_bytes.expect("counted over nodes");
        // KKRT: a 64-byte correction per cuckoo bin (1.27 n, in blocks of
        // 128) and three outputs per responder key, plus the base OTs.
        let (bins, outputs) = (kkrt::hashing::bin_count(n as u64), 3 * n as u64);
        let at_least = 64 * bins + outputs * kkrt::hashing::output_len(n as u64, n as u64) as u64;
        assert!(bytes >= at_least && bytes < at_least + 64 * 1024, "{bytes} bytes, {at_least} at least");
        assert!(report.to_string().contains("bytes per element"), "{report}");
    }
}
