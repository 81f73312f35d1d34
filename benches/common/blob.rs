//! The file-transfer workload shared by `blob.rs` (wall clock) and `icount.rs`
//! (instructions): a blob fetched from an in-memory provider, every 16 KiB group verified
//! and written to an in-memory store.

use std::time::Instant;

use echo_proto::blob::{BlobConfig, BlobEndpoint, BlobEvent, BlobHash, BlobOutput, MemStore};
use echo_proto::Identity;

/// `size` bytes of deterministic, incompressible-looking data.
pub fn sample(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1])
        .collect()
}

/// Limits that never throttle a benchmark.
pub fn unlimited() -> BlobConfig {
    BlobConfig {
        serve_rate: 1 << 50,
        serve_burst: 1 << 40,
        // The clock stands still here: no bucket ever refills.
        request_burst: 1e12,
        ..BlobConfig::default()
    }
}

/// Downloads `hash` (of `size` bytes) from a provider holding it, all in memory; returns
/// the store.
pub fn transfer(
    provider: &mut BlobEndpoint,
    ps: &mut MemStore,
    hash: BlobHash,
    size: u64,
    mut ds: MemStore,
) -> MemStore {
    let now = Instant::now();
    let pd = Identity::from_secret_bytes([1; 32]).peer_id();
    let pp = Identity::from_secret_bytes([2; 32]).peer_id();
    let mut d = BlobEndpoint::new(unlimited());
    d.download(hash, size, [pp], &mut ds, now).expect("starts");
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
