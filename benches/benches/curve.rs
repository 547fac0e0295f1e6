//! The curve operations PSI is made of, per element.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use rand::rngs::OsRng;
use stayput_psi::ecdh::PROTOCOL_LABEL;
use stayput_psi::group::{HashToGroup, SecretScalar, TaskId};

fn curve(c: &mut Criterion) {
    let hasher = HashToGroup::new(PROTOCOL_LABEL, &TaskId::new("bench").unwrap());
    let scalar = Scalar::random(&mut OsRng);
    let point = hasher.hash(b"id-000000000001");
    let compressed = point.compress();
    let mut group = c.benchmark_group("curve");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hash_to_group", |b| b.iter(|| hasher.hash(std::hint::black_box(b"id-000000000001"))));
    group.bench_function("scalar_mul", |b| b.iter(|| std::hint::black_box(point) * scalar));
    group.bench_function("compress", |b| b.iter(|| std::hint::black_box(point).compress()));
    group.bench_function("decompress", |b| {
        b.iter(|| CompressedRistretto::decompress(std::hint::black_box(&compressed)))
    });
    group.finish();

    let points: Vec<RistrettoPoint> = (0..256u32).map(|i| hasher.hash(&i.to_le_bytes())).collect();
    let mut batch = c.benchmark_group("curve_batch_256");
    batch.throughput(Throughput::Elements(points.len() as u64));
    batch.bench_function("double_and_compress_batch", |b| {
        b.iter(|| RistrettoPoint::double_and_compress_batch(std::hint::black_box(&points)))
    });
    let secret = SecretScalar::random(&mut OsRng);
    batch.bench_function("mul_compress (all cores)", |b| {
        b.iter_batched(|| points.clone(), |p| secret.mul_compress(&p), BatchSize::SmallInput)
    });
    batch.finish();
}

criterion_group!(benches, curve);
criterion_main!(benches);
