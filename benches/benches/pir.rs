//! The PIR primitives: the server's answer (bytes of matrix per second),
//! the client's query with A cached, and its decoding and opening, on 100,000 records
//! of 256 bytes (a 51 MB matrix; `stayput bench lookup` runs the 1,000,000
//! record case with its floor).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use stayput_pir::{Database, Lookup};

fn pir(c: &mut Criterion) {
    let records: Vec<(Vec<u8>, Vec<u8>)> =
        (0..100_000u32).map(|i| (format!("ST{i:07}").into_bytes(), vec![b'r'; 200])).collect();
    let oprf = stayput_psi::oprf::OprfKey::from_bytes(&[3; 32]).expect("a key");
    let db = Database::build(&records, 256, [5; 32], &oprf, "bench").expect("lays out");
    let y = oprf.output(&stayput_pir::oprf_domain("bench").expect("a domain"), b"ST0000042");
    let layout = db.layout().clone();
    let hint = db.hint();
    let a = layout.public_matrix();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let (_, query) = Lookup::with_matrix(&layout, &a, b"ST0000042", &mut rng).expect("query");
    let answer = db.answer(&query).expect("answer");

    let mut server = c.benchmark_group("pir_server");
    server.throughput(Throughput::Bytes(db.matrix_bytes() as u64));
    server.sample_size(20);
    server.bench_function("answer (all cores)", |b| b.iter(|| db.answer(std::hint::black_box(&query))));
    server.finish();

    let mut client = c.benchmark_group("pir_client");
    client.bench_function("query (A cached)", |b| {
        b.iter(|| Lookup::with_matrix(&layout, &a, std::hint::black_box(b"ST0000042"), &mut rng))
    });
    client.bench_function("decode", |b| {
        b.iter_batched(
            || Lookup::with_matrix(&layout, &a, b"ST0000042", &mut rng).expect("query").0,
            |lookup| lookup.decode(&layout, &hint, &answer, &y),
            criterion::BatchSize::SmallInput,
        )
    });
    client.finish();
}

criterion_group!(benches, pir);
criterion_main!(benches);
