//! `stayput bench blacklist`: the unbalanced labeled PSI of the blacklist
//! query, in memory, measured in one run — the bureau's precomputation of
//! its encoded set, the set's size, the online latency of a query (blind,
//! evaluate with a DLEQ proof, verify, unblind, look up, decrypt) against
//! one and against several bureaus, and the same data through balanced PSI
//! for comparison.

use std::time::{Duration, Instant};

use rand::rngs::OsRng;
use rayon::prelude::*;
use stayput_psi::ecdh::{OutputMode, SessionParams, run_in_memory};
use stayput_psi::group::TaskId;
use stayput_psi::keys::KeySet;
use stayput_psi::labeled::{EncodedSet, OprfKey, Query};

use crate::BenchError;
use crate::psi::SyntheticIds;

/// Figures of one run.
#[derive(Debug)]
pub struct BlacklistReport {
    entries: usize,
    query: usize,
    bureaus: usize,
    precompute: Duration,
    set_bytes: usize,
    one: Duration,
    all: Duration,
    parallel: Duration,
    found: usize,
    balanced: Option<Duration>,
}

impl std::fmt::Display for BlacklistReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        writeln!(f, "blacklist query: {} entries per bureau, {} ids queried", self.entries, self.query)?;
        writeln!(f, "  bureau precompute (encode the set)   {:>10.1} s", self.precompute.as_secs_f64())?;
        writeln!(f, "  encoded set (the bank's cache)       {:>10.1} MB", self.set_bytes as f64 / 1e6)?;
        writeln!(
            f,
            "  online, one bureau                   {:>10.1} ms ({} listed ids found)",
            ms(self.one),
            self.found
        )?;
        writeln!(f, "  online, {} bureaus one after another  {:>10.1} ms", self.bureaus, ms(self.all))?;
        writeln!(
            f,
            "  online, {} bureaus in parallel (as a task runs them, 2 cores) {:>6.1} ms",
            self.bureaus,
            ms(self.parallel)
        )?;
        match self.balanced {
            Some(b) => write!(
                f,
                "  same data by balanced PSI, one bureau {:>9.1} ms (ratio {:.0}×)",
                ms(b),
                b.as_secs_f64() / self.one.as_secs_f64()
            ),
            None => write!(f, "  balanced PSI comparison skipped (--no-balanced)"),
        }
    }
}

fn ids(set: &SyntheticIds) -> Vec<Vec<u8>> {
    (0..set.len())
        .map(|i| {
            let mut out = Vec::new();
            set.key_into(i, &mut out);
            out
        })
        .collect()
}

/// Runs the benchmark.
pub fn run(entries: usize, query: usize, bureaus: usize, balanced: bool) -> Result<BlacklistReport, BenchError> {
    let listed = SyntheticIds { start: 0, len: entries };
    // Half of the queried ids are listed.
    let asked = SyntheticIds { start: (entries - query / 2) as u64, len: query };
    let labelled: Vec<(Vec<u8>, Vec<u8>)> = ids(&listed)
        .into_par_iter()
        .enumerate()
        .map(|(i, id)| (id, format!("D90|2025-{:02}|{}", i % 12 + 1, i % 5).into_bytes()))
        .collect();
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut OsRng, &mut seed);
    let mut sets = Vec::new();
    let mut precompute = Duration::ZERO;
    for b in 0..bureaus {
        let key = OprfKey::random(&mut OsRng);
        let t = Instant::now();
        let set = EncodedSet::encode(&key, &format!("blacklist-{b}"), 1, &labelled, seed)?;
        if b == 0 {
            precompute = t.elapsed();
        }
        sets.push((key, set));
    }
    let set_bytes = sets[0].1.to_bytes().len();
    let queried = ids(&asked);
    let mut one = Duration::ZERO;
    let mut found = 0;
    let t_all = Instant::now();
    for (b, (key, set)) in sets.iter().enumerate() {
        let t = Instant::now();
        let (q, blinded) = Query::blind(&set.dataset, &queried, &mut OsRng)?;
        let (answers, proof) = key.evaluate(b"bench", &blinded, &mut OsRng)?;
        let labels = q.finish(b"bench", &blinded, &answers, &proof, set)?;
        if b == 0 {
            one = t.elapsed();
            found = labels.iter().filter(|l| l.is_some()).count();
        }
    }
    let all = t_all.elapsed();
    // As a task runs them: one query per bureau at once.
    let t_parallel = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = sets
            .iter()
            .map(|(key, set)| {
                let queried = &queried;
                scope.spawn(move || -> Result<usize, BenchError> {
                    let (q, blinded) = Query::blind(&set.dataset, queried, &mut OsRng)?;
                    let (answers, proof) = key.evaluate(b"bench", &blinded, &mut OsRng)?;
                    Ok(q.finish(b"bench", &blinded, &answers, &proof, set)?.iter().filter(|l| l.is_some()).count())
                })
            })
            .collect();
        for h in handles {
            let got = h.join().map_err(|_| BenchError::Stats("a bureau's query panicked".into()))??;
            if got != query / 2 {
                return Err(BenchError::WrongResult { expected: (query / 2) as u64, got: got as u64 });
            }
        }
        Ok(())
    })?;
    let parallel = t_parallel.elapsed();
    if found != query / 2 {
        return Err(BenchError::WrongResult { expected: (query / 2) as u64, got: found as u64 });
    }
    let balanced = if balanced {
        let params = SessionParams::new(
            TaskId::new("bench-blacklist")?,
            OutputMode::IntersectionToRequester,
            query as u64,
            entries as u64,
            4096,
        )?;
        let t = Instant::now();
        run_in_memory(&params, &asked, &listed, &mut OsRng, &mut OsRng)?;
        Some(t.elapsed())
    } else {
        None
    };
    Ok(BlacklistReport { entries, query, bureaus, precompute, set_bytes, one, all, parallel, found, balanced })
}
