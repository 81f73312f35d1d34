//! File-transfer verify path (criterion): a 64 MiB blob fetched from an in-memory
//! provider, every 16 KiB group verified against the root hash and written to an
//! in-memory store, next to plain single-threaded BLAKE3 hashing of the same bytes.
//!
//! `cargo bench --bench blob`

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use echo_proto::blob::{BlobEndpoint, BlobHash, MemStore};

use common::blob::{sample, transfer, unlimited};

const SIZE: usize = 64 << 20;

fn bench_verify(c: &mut Criterion) {
    let data = sample(SIZE);
    let mut ps = MemStore::new();
    let hash = ps.insert(&data);
    let mut provider = BlobEndpoint::new(unlimited());
    let mut g = c.benchmark_group("blob");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.bench_function("blake3_hash_64MiB", |b| {
        b.iter(|| BlobHash::of(black_box(&data)))
    });
    g.bench_function("serve_verify_store_64MiB", |b| {
        b.iter_batched(
            MemStore::new,
            |ds| {
                let ds = transfer(&mut provider, &mut ps, hash, SIZE as u64, ds);
                assert!(ds.is_complete(&hash));
                ds
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
