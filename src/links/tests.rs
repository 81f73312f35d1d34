//! Unit tests of the links state machine on its own.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::*;

fn id() -> PeerId {
    crate::message::test_key().public().to_peer_id()
}

fn links(config: Config) -> Links {
    Links::new(id(), config, 7, Instant::now())
}

fn addr(i: u32) -> Multiaddr {
    format!("/ip4/10.0.{}.{}/tcp/4000", i / 250, i % 250)
        .parse()
        .unwrap()
}

#[test]
fn starts_empty() {
    let mut l = links(Config::default());
    assert_eq!(l.connected(), 0);
    assert_eq!(l.slots_taken(), 0);
    assert!(l.poll_timeout().is_none());
}

#[test]
fn full_book_evicts_strangers_before_useful_peers() {
    let mut l = links(Config::default().max_known_peers(3));
    let mut stats = Stats::default();
    let t0 = Instant::now();
    let (friend, up, stranger) = (id(), id(), id());
    let p = l.entry(friend, t0, &mut stats);
    p.add_addr(addr(1), 8, true);
    p.ever_connected = true;
    l.entry(up, t0, &mut stats).up = true;
    l.entry(stranger, t0 + Duration::from_secs(5), &mut stats);
    // A fourth peer evicts the stranger (no confirmed address), though it is newer.
    let newcomer = id();
    l.entry(newcomer, t0 + Duration::from_secs(6), &mut stats);
    assert!(!l.peers.contains_key(&stranger));
    assert_eq!(l.peers.len(), 3);
    // Many more: the friend goes only when no stranger is left, the connected peer never.
    for i in 0..100u64 {
        l.entry(id(), t0 + Duration::from_secs(10 + i), &mut stats);
    }
    assert_eq!(l.peers.len(), 3);
    assert!(l.peers.contains_key(&up));
    assert_eq!(stats.peers_evicted, 101);
    let mut g = Stats::default();
    l.gauges(&mut g);
    assert_eq!(g.known_peers, 3);
}

#[test]
fn learned_addresses_stay_unconfirmed_until_confirmed_and_expire() {
    let mut p = Peer::new();
    p.add_addr(addr(1), 8, false);
    p.add_addr(addr(2), 8, true);
    assert_eq!(p.confirmed_addrs().count(), 1);
    // Learning a confirmed address again does not unconfirm it.
    p.add_addr(addr(2), 8, false);
    assert_eq!(p.confirmed_addrs().count(), 1);
    p.add_addr(addr(1), 8, true);
    assert_eq!(p.confirmed_addrs().count(), 2);
    // The cap drops the oldest, and its unconfirmed mark with it.
    for i in 10..30 {
        p.add_addr(addr(i), 8, false);
    }
    assert_eq!(p.addrs.len(), 8);
    assert_eq!(p.unconfirmed.len(), 8);
    let now = Instant::now();
    p.last_seen = Some(now);
    let ttl = Duration::from_secs(60);
    assert!(!Links::expired(&p, ttl, now + Duration::from_secs(59)));
    assert!(Links::expired(&p, ttl, now + ttl));
    p.drop_unconfirmed();
    assert!(p.addrs.is_empty());
}

#[test]
fn unconfirmed_dials_are_paced_by_the_bucket() {
    let mut l = links(
        Config::default()
            .learned_dials_per_sec(1.0)
            .learned_dial_burst(2.0),
    );
    let mut events = VecDeque::new();
    let mut stats = Stats::default();
    let now = Instant::now();
    for i in 0..5 {
        let mut out = Out {
            events: &mut events,
            stats: &mut stats,
        };
        l.handle_addresses(id(), &[addr(i)], AddrSource::Discovered, now, &mut out);
    }
    let dials = l
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Dial { .. }))
        .count();
    assert_eq!(dials, 2);
    assert_eq!(stats.learned_dials, 2);
    assert_eq!(stats.learned_dials_refused, 3);
    // Trusted addresses are not paced.
    let mut out = Out {
        events: &mut events,
        stats: &mut stats,
    };
    l.handle_addresses(id(), &[addr(9)], AddrSource::Trusted, now, &mut out);
    assert_eq!(l.actions.len(), 3);
}
