//! The curve operations ECDH-PSI is made of, per element: hashing a key to
//! an X25519 u-coordinate and the ladder on each backend, against
//! Ristretto255's multiply-and-compress of protocol version 1.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use rand::rngs::OsRng;
use stayput_psi::ecdh::PROTOCOL_LABEL;
use stayput_psi::ecdh::curve::{Coordinate, HashToCoordinate};
use stayput_psi::group::TaskId;
use stayput_x25519::{Backend, SecretScalar, mul_batch_on};

fn curve(c: &mut Criterion) {
    let hasher = HashToCoordinate::new(PROTOCOL_LABEL, &TaskId::new("bench").unwrap());
    let mut group = c.benchmark_group("curve");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hash_to_coordinate", |b| b.iter(|| hasher.hash(std::hint::black_box(b"id-000000000001"))));
    let point = RistrettoPoint::from_uniform_bytes(&[7; 64]);
    let scalar = Scalar::random(&mut OsRng);
    group.bench_function("ristretto_mul_compress (v1)", |b| {
        b.iter(|| (std::hint::black_box(point) * scalar).compress())
    });
    group.finish();

    let points: Vec<Coordinate> = (0..1024u32).map(|i| hasher.hash(&i.to_le_bytes())).collect();
    let secret = SecretScalar::random(&mut OsRng);
    let mut batch = c.benchmark_group("x25519_batch_1024");
    batch.throughput(Throughput::Elements(points.len() as u64));
    for backend in [Backend::detect(), Backend::Portable] {
        batch.bench_function(format!("{} (all cores)", backend.name()), |b| {
            b.iter(|| mul_batch_on(backend, &secret, std::hint::black_box(&points)))
        });
    }
    batch.finish();
}

criterion_group!(benches, curve);
criterion_main!(benches);
