//! Hostile peers against the blob provider and downloader: floods, stalls, oversized
//! frames, garbage. Every bound is read back from the counters.

#![allow(clippy::single_range_in_vec_init)]

mod blob_net;

use std::time::Duration;

use blob_net::{blob, Net};
use bytes::{Bytes, BytesMut};
use echo_proto::blob::{BlobConfig, BlobFrame, BlobHash, CloseReason, MAX_FRAME_LEN};

const MINUTE: Duration = Duration::from_secs(60);

/// Host 0 serves a blob of `len` bytes; hosts 1.. are empty.
fn net(seed: u64, hosts: usize, len: usize, cfg: BlobConfig) -> (Net, Vec<u8>, BlobHash) {
    let mut net = Net::new(seed);
    for _ in 0..hosts {
        net.add(cfg.clone());
    }
    let data = blob(len, seed);
    let hash = net.hosts[0].store.insert(&data);
    (net, data, hash)
}

fn request(id: u32, hash: BlobHash, ranges: Vec<std::ops::Range<u64>>) -> Bytes {
    BlobFrame::Request { id, hash, ranges }.to_bytes()
}

#[test]
fn a_flood_of_unknown_hashes_stays_bounded_and_the_honest_transfer_finishes() {
    let len = 2 << 20;
    let (mut net, data, hash) = net(1, 3, len, BlobConfig::default());
    net.download(1, hash, len as u64, &[0]);
    let (mut sent, secs) = (0u32, 20);
    for tick in 0..secs * 10 {
        let mut batch = BytesMut::new();
        for k in 0..100u32 {
            let id = tick * 100 + k;
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&id.to_be_bytes());
            batch.extend_from_slice(&request(id, BlobHash(h), vec![0..1]));
            sent += 1;
        }
        net.inject(2, 0, batch.freeze());
        net.run_until(Duration::from_millis(100), |_| false);
    }
    assert!(net.run_until(10 * MINUTE, |n| n.done(1)));
    assert!(net.hosts[1].store.data(&hash) == Some(&data[..]));
    let cfg = BlobConfig::default();
    let stats = net.hosts[0].ep.stats();
    let allowed = cfg.request_burst as u64 + (cfg.request_rate as u64) * u64::from(secs) + 1;
    assert!(stats.unknown_refused <= allowed, "{stats:?}");
    assert_eq!(
        stats.unknown_refused + stats.requests_dropped,
        u64::from(sent)
    );
    // The attacker got one small `DontHave` per answered request, nothing more.
    assert!(net.sent_bytes[&(0, 2)] <= stats.unknown_refused * 16);
    assert!(stats.serving_peers <= 2);
}

#[test]
fn per_peer_serving_concurrency_is_capped() {
    let len = 4 << 20;
    let (mut net, _data, hash) = net(2, 2, len, BlobConfig::default());
    net.hosts[1].reads = false;
    let mut batch = BytesMut::new();
    for id in 0..50 {
        batch.extend_from_slice(&request(id, hash, vec![0..256]));
    }
    net.inject(1, 0, batch.freeze());
    net.run_until(Duration::from_millis(50), |_| false);
    let cap = BlobConfig::default().serve_concurrency;
    let stats = net.hosts[0].ep.stats();
    assert_eq!(stats.active_requests, cap);
    assert_eq!(stats.busy_refused, 50 - cap as u64);
    // The provider reads ahead only one window for a peer that does not read.
    let window = BlobConfig::default().serve_window as u64;
    assert!(net.sent_bytes[&(0, 1)] <= window + MAX_FRAME_LEN as u64 + 64);
}

#[test]
fn a_requester_that_never_reads_is_cut_off() {
    let len = 4 << 20;
    let (mut net, data, hash) = net(3, 3, len, BlobConfig::default());
    net.hosts[2].reads = false;
    net.download(2, hash, len as u64, &[0]);
    net.download(1, hash, len as u64, &[0]);
    let stall = BlobConfig::default().stall_timeout;
    assert!(net.run_until(stall * 3, |n| !n.hosts[0].closes.is_empty()));
    let stalled = net.peer(2);
    assert_eq!(net.hosts[0].closes, vec![(stalled, CloseReason::Stalled)]);
    let stats = net.hosts[0].ep.stats();
    assert_eq!(stats.stalled_peers, 1);
    assert!(net.run_until(10 * MINUTE, |n| n.done(1)));
    assert!(net.hosts[1].store.data(&hash) == Some(&data[..]));
    assert_eq!(net.hosts[0].ep.stats().serving_peers, 0);
    let window = BlobConfig::default().serve_window as u64;
    assert!(net.sent_bytes[&(0, 2)] <= window + MAX_FRAME_LEN as u64 + 64);
}

#[test]
fn an_oversized_frame_closes_only_that_stream() {
    let len = 1 << 20;
    let (mut net, data, hash) = net(4, 3, len, BlobConfig::default());
    net.download(1, hash, len as u64, &[0]);
    let mut prefix = BytesMut::new();
    // varint(MAX_FRAME_LEN + 1), then nothing: refused on the prefix alone.
    let mut v = MAX_FRAME_LEN as u64 + 1;
    while v >= 0x80 {
        prefix.extend_from_slice(&[(v as u8) | 0x80]);
        v >>= 7;
    }
    prefix.extend_from_slice(&[v as u8]);
    net.inject(2, 0, prefix.freeze());
    assert!(net.run_until(10 * MINUTE, |n| n.done(1)));
    assert!(net.hosts[1].store.data(&hash) == Some(&data[..]));
    assert!(matches!(
        net.hosts[0].closes.as_slice(),
        [(p, CloseReason::Corrupt(_))] if *p == net.peer(2)
    ));
    assert_eq!(net.hosts[0].ep.stats().corrupt_streams, 1);
}

#[test]
fn garbage_responses_from_a_stranger_are_ignored() {
    let len = 1 << 20;
    let (mut net, data, hash) = net(5, 3, len, BlobConfig::default());
    net.download(1, hash, len as u64, &[0]);
    let mut junk = BytesMut::new();
    for id in 0..200u32 {
        let data = Bytes::from(vec![0xAA; 1000]);
        BlobFrame::Leaf {
            id: id % 4,
            seq: 1,
            data,
        }
        .encode(&mut junk);
        BlobFrame::DontHave { id: id % 4 }.encode(&mut junk);
    }
    net.inject(2, 1, junk.freeze());
    assert!(net.run_until(10 * MINUTE, |n| n.done(1)));
    assert!(net.hosts[1].store.data(&hash) == Some(&data[..]));
    let stats = net.hosts[1].ep.stats();
    assert_eq!(stats.unsolicited_frames, 400);
    assert_eq!(stats.lies_caught, 0);
}

#[test]
fn serving_peers_are_capped_and_the_rest_retry() {
    let len = 1 << 20;
    let cfg = BlobConfig {
        max_serving_peers: 2,
        ..BlobConfig::default()
    };
    let (mut net, data, hash) = net(6, 5, len, cfg);
    for d in 1..5 {
        net.download(d, hash, len as u64, &[0]);
    }
    let mut most = 0;
    assert!(net.run_until(10 * MINUTE, |n| {
        most = most.max(n.hosts[0].ep.stats().serving_peers);
        (1..5).all(|d| n.done(d))
    }));
    assert!(most <= 2, "{most}");
    assert!(net.hosts[0].ep.stats().busy_refused > 0);
    for d in 1..5 {
        assert!(net.hosts[d].store.data(&hash) == Some(&data[..]));
    }
}
