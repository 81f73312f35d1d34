//! File-transfer verify path (criterion): a 64 MiB blob fetched from an in-memory
//! provider, every 16 KiB group verified against the root hash and written to an
//! in-memory store, next to plain single-threaded BLAKE3 hashing of the same bytes.
//!
//! `cargo bench --bench blob`

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use echo_proto::blob::{BlobConfig, BlobEndpoint, BlobEvent, BlobHash, BlobOutput, MemStore};
use echo_proto::Identity;

const SIZE: usize = 64 << 20;

fn unlimited() -> BlobConfig {
    BlobConfig {
        serve_rate: 1 << 50,
        serve_burst: 1 << 40,
        // The clock stands still here: no bucket ever refills.
        request_burst: 1e12,
        ..BlobConfig::default()
    }
}

/// Downloads `hash` from a provider holding it, all in memory; returns the store.
fn transfer(
    provider: &mut BlobEndpoint,
    ps: &mut MemStore,
    hash: BlobHash,
    mut ds: MemStore,
) -> MemStore {
    let now = Instant::now();
    let pd = Identity::from_secret_bytes([1; 32]).peer_id();
    let pp = Identity::from_secret_bytes([2; 32]).peer_id();
    let mut d = BlobEndpoint::new(unlimited());
    d.download(hash, SIZE as u64, [pp], &mut ds, now)
        .expect("starts");
    loop {
        let mut moved = false;
        loop {
            match d.poll_output() {
                BlobOutput::Transmit { data, .. } => {
                    provider.handle_data(pd, &data, ps, now);
                    moved = true;
                }
                BlobOutput::Event(BlobEvent::Done { .. }) => return ds,
                BlobOutput::Event(BlobEvent::Failed { reason, .. }) => panic!("{reason:?}"),
                BlobOutput::Wait(_) => break,
                _ => {}
            }
        }
        loop {
            match provider.poll_output() {
                BlobOutput::Transmit { data, .. } => {
                    provider.handle_sent(pd, data.len(), ps, now);
                    d.handle_data(pp, &data, &mut ds, now);
                    moved = true;
                }
                BlobOutput::Wait(_) => break,
                _ => {}
            }
        }
        assert!(moved, "transfer stalled");
    }
}

fn bench_verify(c: &mut Criterion) {
    let data: Vec<u8> = (0..SIZE)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1])
        .collect();
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
                let ds = transfer(&mut provider, &mut ps, hash, ds);
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
