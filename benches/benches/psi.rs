//! PSI batches and small whole sessions of both balanced protocols, in memory.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::OsRng;
use stayput_benches::psi::SyntheticIds;
use stayput_psi::ecdh::{OutputMode, ResponderSession, SessionParams, run_in_memory};
use stayput_psi::group::TaskId;
use stayput_psi::kkrt;
use stayput_psi::messages::PointBatch;

fn psi(c: &mut Criterion) {
    let n = 4096;
    let keys = SyntheticIds { start: 0, len: n };
    let params =
        SessionParams::new(TaskId::new("bench").unwrap(), OutputMode::IntersectionToRequester, n as u64, n as u64, n)
            .unwrap();
    let mut group = c.benchmark_group("psi_batch_4096");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    group.bench_function("blind_own_keys", |b| {
        b.iter(|| ResponderSession::new(params.clone(), &keys, &mut OsRng).unwrap().next_batch().unwrap())
    });
    let encoded = ResponderSession::new(params.clone(), &keys, &mut OsRng).unwrap().next_batch().unwrap();
    group.bench_function("decode_peer_points", |b| b.iter(|| PointBatch::decode(encoded.as_bytes()).unwrap()));
    group.finish();

    let mut session = c.benchmark_group("psi_session");
    session.throughput(Throughput::Elements(2 * n as u64));
    session.sample_size(10);
    let other = SyntheticIds { start: (n / 2) as u64, len: n };
    let params =
        SessionParams::new(TaskId::new("bench").unwrap(), OutputMode::CardinalityOnly, n as u64, n as u64, 1024)
            .unwrap();
    session.bench_function("in_memory_4096x4096", |b| {
        b.iter(|| run_in_memory(&params, &keys, &other, &mut OsRng, &mut OsRng).unwrap())
    });
    session.finish();
}

/// KKRT on 2^16 keys a side: the same work per key as a large set, with the
/// fixed cost (512 base OTs) a small share of it.
fn kkrt(c: &mut Criterion) {
    let n = 1 << 16;
    let keys = SyntheticIds { start: 0, len: n };
    let other = SyntheticIds { start: (n / 2) as u64, len: n };
    let params = kkrt::SessionParams::new(
        TaskId::new("bench").unwrap(),
        OutputMode::IntersectionToRequester,
        n as u64,
        n as u64,
    )
    .unwrap();
    let mut group = c.benchmark_group("kkrt_session");
    group.throughput(Throughput::Elements(2 * n as u64));
    group.sample_size(10);
    group.bench_function("in_memory_65536x65536", |b| {
        b.iter(|| kkrt::run_in_memory(&params, &keys, &other, &mut OsRng, &mut OsRng).unwrap())
    });
    group.finish();
}

criterion_group!(benches, psi, kkrt);
criterion_main!(benches);
