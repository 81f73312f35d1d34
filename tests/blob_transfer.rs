//! File transfer in the blob simulator: multi-source, loss, duplication, partitions,
//! crashes, lying sources and resume.

mod blob_net;

use std::time::Duration;

use blob_net::{blob, Lie, Net};
use echo_proto::blob::{
    group_count, BlobConfig, BlobEvent, BlobStore, DropReason, FailReason, LieKind, GROUP_SIZE,
};

const MINUTE: Duration = Duration::from_secs(60);

/// A network with `sources` hosts holding the same blob of `len` bytes and one empty
/// downloader (the last host).
fn setup(seed: u64, sources: usize, len: usize) -> (Net, Vec<u8>, echo_proto::blob::BlobHash) {
    let mut net = Net::new(seed);
    let data = blob(len, seed);
    let mut hash = None;
    for _ in 0..sources {
        let i = net.add(BlobConfig::default());
        hash = Some(net.hosts[i].store.insert(&data));
    }
    net.add(BlobConfig::default());
    (net, data, hash.expect("at least one source"))
}

fn finish(net: &mut Net, d: usize, data: &[u8], hash: &echo_proto::blob::BlobHash) {
    assert!(
        net.run_until(10 * MINUTE, |n| n.done(d) || n.failed(d)),
        "stuck"
    );
    assert!(
        net.done(d),
        "failed: {:?} {:?}",
        net.hosts[d]
            .events
            .iter()
            .filter(|e| !matches!(e, BlobEvent::Progress { .. }))
            .collect::<Vec<_>>(),
        net.hosts[d].ep.stats()
    );
    assert!(net.hosts[d].store.complete_size(hash).is_some());
    assert!(net.hosts[d].store.data(hash) == Some(data), "bytes differ");
}

#[test]
fn one_source_delivers_every_byte_once() {
    let len = 2 * 1024 * 1024 + 12345;
    let (mut net, data, hash) = setup(1, 1, len);
    net.download(1, hash, len as u64, &[0]);
    finish(&mut net, 1, &data, &hash);
    assert_eq!(net.hosts[1].store.groups_written, group_count(len as u64));
    assert_eq!(net.leaf(0, 1), len as u64, "no group is sent twice");
    let last = net.hosts[1].events.iter().rev().find_map(|e| match e {
        BlobEvent::Progress { verified, size, .. } => Some((*verified, *size)),
        _ => None,
    });
    assert_eq!(last, Some((len as u64, len as u64)));
    // The finished blob is served onwards: a third host fetches it from the downloader.
    let third = net.add(BlobConfig::default());
    net.download(third, hash, len as u64, &[1]);
    finish(&mut net, third, &data, &hash);
}

#[test]
fn empty_and_tiny_blobs() {
    for len in [0usize, 1, 1024, GROUP_SIZE as usize] {
        let (mut net, data, hash) = setup(2, 1, len);
        net.download(1, hash, len as u64, &[0]);
        finish(&mut net, 1, &data, &hash);
    }
}

#[test]
fn two_sources_share_the_work() {
    let len = 8 << 20;
    let (mut net, data, hash) = setup(3, 2, len);
    net.download(2, hash, len as u64, &[0, 1]);
    finish(&mut net, 2, &data, &hash);
    let (a, b) = (net.leaf(0, 2), net.leaf(1, 2));
    assert_eq!(a + b, len as u64, "disjoint ranges: nothing fetched twice");
    // Equal links: each source serves a real share.
    assert!(a >= len as u64 / 4 && b >= len as u64 / 4, "{a} / {b}");
}

#[test]
fn loss_and_duplication_are_survived() {
    for seed in 0..4 {
        let len = 3 << 20;
        let (mut net, data, hash) = setup(10 + seed, 2, len);
        net.loss = 0.01;
        net.duplicate = 0.02;
        net.download(2, hash, len as u64, &[0, 1]);
        finish(&mut net, 2, &data, &hash);
        let stats = net.hosts[2].ep.stats();
        assert_eq!(stats.lies_caught, 0, "loss and duplication are not lies");
        assert_eq!(net.hosts[2].store.groups_written, group_count(len as u64));
    }
}

#[test]
fn a_partitioned_source_hands_its_ranges_to_the_other() {
    let len = 4 << 20;
    let (mut net, data, hash) = setup(4, 2, len);
    net.download(2, hash, len as u64, &[0, 1]);
    assert!(net.run_until(MINUTE, |n| n.leaf(0, 2) > 256 * 1024));
    net.partition(0, 2);
    finish(&mut net, 2, &data, &hash);
    assert!(net.hosts[2].ep.stats().timeouts >= 1);
    // Healing delivers the frozen bytes late; they are ignored.
    net.heal(0, 2);
    net.run_until(MINUTE, |_| false);
    assert!(net.hosts[2].store.data(&hash) == Some(&data[..]));
}

#[test]
fn a_partition_shorter_than_the_timeout_only_delays() {
    let len = 1 << 20;
    let (mut net, data, hash) = setup(5, 1, len);
    net.download(1, hash, len as u64, &[0]);
    assert!(net.run_until(MINUTE, |n| n.leaf(0, 1) > 64 * 1024));
    net.partition(0, 1);
    net.run_until(Duration::from_secs(5), |_| false);
    net.heal(0, 1);
    finish(&mut net, 1, &data, &hash);
    assert_eq!(net.hosts[1].ep.stats().timeouts, 0);
}

#[test]
fn a_source_crashing_midway_is_replaced() {
    for notify in [false, true] {
        let len = 4 << 20;
        let (mut net, data, hash) = setup(6, 2, len);
        net.download(2, hash, len as u64, &[0, 1]);
        assert!(net.run_until(MINUTE, |n| n.leaf(0, 2) > 512 * 1024));
        net.crash(0, notify);
        finish(&mut net, 2, &data, &hash);
        let dropped = net.hosts[2].events.iter().any(|e| {
            matches!(
                e,
                BlobEvent::SourceDropped {
                    reason: DropReason::Disconnected,
                    ..
                }
            )
        });
        assert_eq!(dropped, notify);
        if !notify {
            assert!(net.hosts[2].ep.stats().timeouts >= 1);
        }
    }
}

#[test]
fn lying_sources_are_caught_routed_around_and_dropped() {
    let kinds = [
        (Lie::FlipBit, LieKind::BadHash),
        (Lie::WrongLength, LieKind::WrongLength),
        (Lie::WrongHash, LieKind::BadHash),
        (Lie::WrongSize, LieKind::WrongSize),
    ];
    for (lie, kind) in kinds {
        let len = 3 << 20;
        let (mut net, data, hash) = setup(7, 2, len);
        net.hosts[0].lie = Some(lie);
        net.download(2, hash, len as u64, &[0, 1]);
        finish(&mut net, 2, &data, &hash);
        let stats = net.hosts[2].ep.stats();
        let limit = BlobConfig::default().liar_limit;
        assert_eq!(stats.lies_caught, u64::from(limit), "{lie:?}");
        let dropped = net.hosts[2].events.iter().any(|e| {
            matches!(e, BlobEvent::SourceDropped { reason: DropReason::Lied(k), .. } if *k == kind)
        });
        assert!(dropped, "{lie:?}: the liar is dropped");
        // Only verified groups were written, each once: nothing from the liar.
        assert_eq!(
            net.hosts[2].store.groups_written,
            group_count(len as u64),
            "{lie:?}"
        );
        // Caught within one chunk group per lie: the downloader read at most one
        // group of each lying response before cutting it off (later frames of a
        // cancelled response are ignored, not verified).
        assert!(stats.groups_verified == group_count(len as u64));
    }
}

#[test]
fn a_lone_liar_fails_the_download() {
    let len = 1 << 20;
    let (mut net, _data, hash) = setup(8, 1, len);
    net.hosts[0].lie = Some(Lie::FlipBit);
    net.download(1, hash, len as u64, &[0]);
    assert!(net.run_until(10 * MINUTE, |n| n.failed(1)));
    assert!(net.hosts[1].events.iter().any(|e| matches!(
        e,
        BlobEvent::Failed {
            reason: FailReason::NoSources,
            ..
        }
    )));
    assert_eq!(net.hosts[1].store.groups_written, 0);
}

/// A lone source whose substream closes (a duplicate connection dropped, a substream
/// replaced) is waited for: the download goes on when it is added back, and fails only
/// when none returns within `source_wait`.
#[test]
fn a_lone_source_that_blips_is_waited_for_and_one_that_stays_away_fails() {
    let len = 4 << 20;
    let wait = BlobConfig::default().source_wait;
    let (mut net, data, hash) = setup(30, 1, len);
    let t = net.download(1, hash, len as u64, &[0]);
    assert!(net.run_until(MINUTE, |n| n.hosts[1].store.verified(&hash).len() >= 8));
    net.close_link(1, 0);
    net.run_until(wait / 2, |_| false);
    assert!(
        !net.failed(1),
        "failed at once: {:?}",
        net.hosts[1].events.last()
    );
    net.add_source(1, t, 0);
    finish(&mut net, 1, &data, &hash);

    let (mut net, _data, hash) = setup(31, 1, len);
    net.download(1, hash, len as u64, &[0]);
    assert!(net.run_until(MINUTE, |n| n.hosts[1].store.verified(&hash).len() >= 8));
    let closed = net.now;
    net.close_link(1, 0);
    assert!(net.run_until(MINUTE, |n| n.failed(1)));
    assert!(
        net.now - closed >= wait,
        "failed after {:?}",
        net.now - closed
    );
    assert!(net.hosts[1].events.iter().any(|e| matches!(
        e,
        BlobEvent::Failed {
            reason: FailReason::NoSources,
            ..
        }
    )));
}

#[test]
fn resume_after_a_crash_fetches_only_missing_groups() {
    for seed in 0..3 {
        let len = 4 << 20;
        let (mut net, data, hash) = setup(20 + seed, 1, len);
        net.download(1, hash, len as u64, &[0]);
        let cut = (len as u64) * (seed + 1) / 4;
        assert!(
            net.run_until(MINUTE, |n| n.hosts[1].store.verified(&hash).len()
                * GROUP_SIZE
                >= cut)
        );
        // kill -9: the endpoint's state is gone, the store keeps what it recorded.
        net.crash(1, false);
        let before = net.hosts[1].store.verified(&hash).len();
        net.run_until(Duration::from_secs(2), |_| false);
        net.restart(1);
        net.download(1, hash, len as u64, &[0]);
        finish(&mut net, 1, &data, &hash);
        let received = net.leaf(0, 1);
        let resent = received - len as u64;
        assert!(
            resent < 2 * GROUP_SIZE,
            "seed {seed}: {resent} bytes sent twice"
        );
        assert_eq!(
            net.hosts[1].store.groups_written,
            group_count(len as u64),
            "seed {seed}: {before} groups were kept"
        );
    }
}

#[test]
fn limits_refuse_downloads_up_front() {
    use echo_proto::blob::{BlobEndpoint, BlobHash, MemStore, StartError, StoreError};
    let now = std::time::Instant::now();
    let cfg = BlobConfig {
        max_blob_size: 1 << 20,
        max_transfers: 2,
        ..BlobConfig::default()
    };
    let mut ep = BlobEndpoint::new(cfg);
    let mut store = MemStore::new();
    store.capacity = Some(1 << 19);
    let peer = echo_proto::Identity::from_secret_bytes([9; 32]).peer_id();
    let h = |n: u8| BlobHash([n; 32]);
    assert_eq!(
        ep.download(h(1), (1 << 20) + 1, [peer], &mut store, now),
        Err(StartError::TooLarge((1 << 20) + 1))
    );
    assert_eq!(
        ep.download(h(1), 1 << 20, [peer], &mut store, now),
        Err(StartError::Store(StoreError::NoSpace))
    );
    assert_eq!(
        ep.download(h(1), 100, [], &mut store, now),
        Err(StartError::NoSources)
    );
    ep.download(h(1), 100, [peer], &mut store, now).unwrap();
    assert_eq!(
        ep.download(h(1), 100, [peer], &mut store, now),
        Err(StartError::AlreadyRunning)
    );
    ep.download(h(2), 100, [peer], &mut store, now).unwrap();
    assert_eq!(
        ep.download(h(3), 100, [peer], &mut store, now),
        Err(StartError::TooManyTransfers)
    );
    assert_eq!(ep.stats().transfers, 2);
}

#[test]
fn downloader_state_stays_flat_for_a_large_blob() {
    let len = 48 << 20;
    let (mut net, data, hash) = setup(30, 3, len);
    net.bandwidth = 64 << 20;
    net.download(3, hash, len as u64, &[0, 1, 2]);
    let cfg = BlobConfig::default();
    let (mut most_requests, mut most_runs) = (0, 0);
    assert!(net.run_until(10 * MINUTE, |n| {
        let s = n.hosts[3].ep.stats();
        most_requests = most_requests.max(s.requests_in_flight);
        most_runs = most_runs.max(s.tracked_runs);
        n.done(3)
    }));
    assert!(net.hosts[3].store.data(&hash) == Some(&data[..]));
    // 3072 groups, yet the downloader tracks a handful of requests and intervals.
    assert!(
        most_requests <= 3 * cfg.requests_per_source,
        "{most_requests}"
    );
    assert!(most_runs <= 4 * 3 * cfg.requests_per_source, "{most_runs}");
    // The providers never held more than their window unsent for it.
    for s in 0..3 {
        assert_eq!(net.hosts[s].ep.stats().active_requests, 0);
    }
}

/// A fast download sends one request per `request_groups`, far more than the provider's
/// per-peer request bucket allows: none of them may be dropped (a dropped request costs
/// the downloader a whole `request_timeout`). 32 MiB in 128 KiB requests (256 of them,
/// over the default burst of 100), no serve rate cap, a 1 GiB/s link with 50 µs of
/// latency: done (in virtual time) within twice what the link needs plus 100 round trips.
#[test]
fn a_fast_download_is_not_throttled_by_the_request_limit() {
    let len = 32 << 20;
    let cfg = BlobConfig {
        serve_rate: 1 << 40,
        request_groups: 8,
        ..BlobConfig::default()
    };
    let mut net = blob_net::Net::new(40);
    net.latency = Duration::from_micros(50);
    net.bandwidth = 1 << 30;
    let data = blob(len, 40);
    let s = net.add(cfg.clone());
    let hash = net.hosts[s].store.insert(&data);
    let d = net.add(cfg);
    let start = net.now;
    net.download(d, hash, len as u64, &[s]);
    finish(&mut net, d, &data, &hash);
    let took = net.now - start;
    let link = Duration::from_secs_f64(len as f64 / net.bandwidth as f64);
    let bound = 2 * link + 100 * 2 * net.latency;
    assert!(took <= bound, "took {took:?} (bound {bound:?})");
    let stats = net.hosts[s].ep.stats();
    assert!(stats.requests_served >= 256, "{stats:?}");
    assert_eq!(stats.requests_dropped, 0);
    assert_eq!(net.hosts[d].ep.stats().timeouts, 0);
}
