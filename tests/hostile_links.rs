//! Hostile peers against the links (connections and the address book): each test
//! floods one bound through raw peers in the simulator, reads the bound back from
//! `Stats`, and checks that two honest nodes still chat.

use std::time::Duration;

use echo_proto::sim::{keypair, Sim};
use echo_proto::wire::{self, Frame, GoodbyeCode, Kind};
use echo_proto::{CloseReason, Config, Event, Protocol};

const SEC: Duration = Duration::from_secs(1);

/// A (index 0, with `config`) and B (index 1) connected.
fn pair(config: Config) -> Sim {
    let mut sim = Sim::new(21);
    let a = sim.add_node(config.name("a"));
    let b = sim.add_named("b");
    sim.connect(a, b);
    assert!(sim.run_until(SEC, |s| s.is_connected(a, b) && s.is_connected(b, a)));
    sim
}

/// A and B still chat both ways, within a second of simulated time.
fn assert_pair_healthy(sim: &mut Sim, tag: &str) {
    let before = sim.texts(1, "general").len();
    sim.send(0, "general", &format!("from a {tag}"));
    sim.send(1, "general", &format!("from b {tag}"));
    assert!(
        sim.run_until(SEC, |s| s.texts(1, "general").len() == before + 2
            && s.texts(0, "general").contains(&format!("from b {tag}"))),
        "{tag}: A–B session disturbed"
    );
    assert!(sim.is_connected(0, 1));
}

fn frame(kind: Kind) -> Vec<u8> {
    Frame::new(kind).to_wire().to_vec()
}

fn hello(name: &str, listen: &[String]) -> Vec<u8> {
    frame(Kind::Hello(wire::Hello {
        version_major: wire::VERSION_MAJOR,
        name: name.into(),
        rooms: vec!["general".into()],
        listen_addrs: listen
            .iter()
            .map(|a| a.parse::<echo_proto::Multiaddr>().unwrap().to_vec())
            .collect(),
        nonce: 1,
        ..Default::default()
    }))
}

fn goodbye() -> Vec<u8> {
    frame(Kind::Goodbye(wire::Goodbye {
        code: GoodbyeCode::Shutdown.code(),
        reason: "bye".into(),
    }))
}

fn dial_failures(sim: &Sim, i: usize, addr_part: &str) -> usize {
    sim.sim_node(i)
        .events
        .iter()
        .filter(
            |e| matches!(e, Event::DialFailed { addr, .. } if addr.to_string().contains(addr_part)),
        )
        .count()
}

/// Issue 8 item 3: 10,000 identities complete a handshake one after another and leave;
/// the address book stays within `max_known_peers`.
#[test]
fn identity_cycling_keeps_the_address_book_bounded() {
    let mut sim = pair(Config::default());
    let max = sim.node(0).config().max_known_peers as u64;
    for i in 0..10_000u64 {
        let key = keypair(1_000_000 + i);
        let h = sim.open_raw(0, &key, Protocol::Chat);
        sim.raw_send(h, &hello("sybil", &[]));
        sim.raw_send(h, &goodbye());
        if i % 1000 == 0 {
            sim.run_for(Duration::from_millis(10));
        }
    }
    sim.run_for(SEC);
    let st = sim.node(0).stats().clone();
    eprintln!("after 10,000 identities: {st:?}");
    assert!(st.known_peers <= max, "{} peers known", st.known_peers);
    assert!(st.peers_evicted >= 10_000 - max);
    assert!(sim.node(0).peers().iter().any(|p| p.peer == sim.peer_id(1)));
    assert_pair_healthy(&mut sim, "after identity cycling");
}

/// Issue 8 item 4: a peer feeding peer-exchange lists of made-up peers cannot make the
/// node dial faster than `learned_dials_per_sec` (after a burst).
#[test]
fn learned_addresses_are_dialed_at_a_bounded_rate() {
    let mut sim = pair(Config::default());
    let h = sim.open_raw(0, &keypair(7_777), Protocol::Chat);
    sim.raw_send(h, &hello("mallory", &[]));
    let secs = 20u64;
    let mut n = 0u32;
    for round in 0..secs * 10 {
        let peers = (0..32)
            .map(|_| {
                n += 1;
                wire::PeerRecord {
                    peer_id: keypair(2_000_000 + n as u64)
                        .public()
                        .to_peer_id()
                        .to_bytes(),
                    addrs: vec![format!("/ip4/10.66.{}.{}/tcp/22", n / 250, n % 250)
                        .parse::<echo_proto::Multiaddr>()
                        .unwrap()
                        .to_vec()],
                }
            })
            .collect();
        sim.raw_send(h, &frame(Kind::Peers(wire::PeerList { peers })));
        sim.run_for(Duration::from_millis(100));
        assert!(
            !sim.raw_closed(h),
            "round {round}: the list itself is legal"
        );
    }
    let dials = dial_failures(&sim, 0, "/ip4/10.66.");
    let st = sim.node(0).stats().clone();
    eprintln!("{dials} dials of learned addresses in {secs} s: {st:?}");
    let cfg = sim.node(0).config();
    let bound = cfg.learned_dial_burst + cfg.learned_dials_per_sec * (secs as f64 + 1.0);
    assert!(dials as f64 <= bound, "{dials} dials > {bound}");
    assert!(st.learned_dials_refused > 0);
    assert!(st.known_peers <= cfg.max_known_peers as u64);
    assert_pair_healthy(&mut sim, "after peer-list flood");
}

/// Issue 8 item 4: listen addresses a peer announced in its hello are never confirmed
/// (we never reached it there); they expire `learned_addr_ttl` after it was last seen,
/// and the node stops dialing them.
#[test]
fn unconfirmed_listen_addresses_expire() {
    let config = Config::default().learned_addr_ttl(Duration::from_secs(60));
    let mut sim = pair(config);
    let h = sim.open_raw(0, &keypair(8_888), Protocol::Chat);
    let victims: Vec<String> = (1..=8)
        .map(|i| format!("/ip4/10.77.0.{i}/tcp/22"))
        .collect();
    sim.raw_send(h, &hello("mallory", &victims));
    sim.run_for(SEC);
    let with_addrs = sim.node(0).stats().known_addrs;
    sim.raw_send(h, &goodbye());
    sim.run_for(Duration::from_secs(120));
    let early = dial_failures(&sim, 0, "/ip4/10.77.");
    sim.run_for(Duration::from_secs(600));
    let late = dial_failures(&sim, 0, "/ip4/10.77.");
    let st = sim.node(0).stats().clone();
    eprintln!(
        "addrs {with_addrs} -> {}; dials {early} then {late}",
        st.known_addrs
    );
    assert_eq!(late, early, "expired addresses were dialed again");
    assert!(st.known_addrs < with_addrs);
    // Nothing unconfirmed reaches what the app persists.
    let export = sim.node(0).export();
    assert!(export
        .peers
        .iter()
        .all(|a| !a.to_string().contains("10.77.")));
    assert_pair_healthy(&mut sim, "after expiry");
}

/// Issue 8 item 7: silent legacy connections from fresh keys get at most
/// `max_legacy_peers` slots, time out after `legacy_idle_timeout`, and a new echo node
/// can still connect.
#[test]
fn silent_legacy_peers_get_a_bounded_share_and_time_out() {
    let mut sim = pair(Config::default());
    let cfg = sim.node(0).config().clone();
    let handles: Vec<u64> = (0..63)
        .map(|i| sim.open_raw(0, &keypair(3_000_000 + i), Protocol::Legacy))
        .collect();
    sim.run_for(SEC);
    let open = handles.iter().filter(|h| !sim.raw_closed(**h)).count();
    let st = sim.node(0).stats().clone();
    eprintln!("{open} legacy connections open: {st:?}");
    assert!(
        open <= cfg.max_legacy_peers,
        "{open} legacy peers hold slots"
    );
    assert_eq!(st.legacy_conns as usize, open);
    // A new echo node still gets in.
    let c = sim.add_named("c");
    sim.connect(c, 0);
    assert!(sim.run_until(2 * SEC, |s| s.is_connected(c, 0) && s.is_connected(0, c)));
    // Silence closes them.
    sim.run_for(cfg.legacy_idle_timeout + 2 * SEC);
    assert!(handles.iter().all(|h| sim.raw_closed(*h)));
    assert_eq!(sim.node(0).stats().legacy_conns, 0);
    assert_pair_healthy(&mut sim, "after legacy flood");
}

/// Issue 8 item 8: 100 raw peers whose handshakes are in flight together cannot push
/// the node past `max_peers`.
#[test]
fn handshakes_in_flight_count_against_max_peers() {
    let mut sim = pair(Config::default());
    let max = sim.node(0).config().max_peers;
    let handles: Vec<u64> = (0..100)
        .map(|i| sim.open_raw(0, &keypair(4_000_000 + i), Protocol::Chat))
        .collect();
    assert!(sim.node(0).stats().handshakes as usize <= max);
    for (i, h) in handles.iter().enumerate() {
        sim.raw_send(*h, &hello(&format!("p{i}"), &[]));
    }
    sim.run_for(SEC);
    let up = sim.node(0).peers().len();
    eprintln!("{up} peers up with max_peers {max}");
    assert!(up <= max, "{up} peers up, limit {max}");
    assert_pair_healthy(&mut sim, "after handshake burst");
}

/// Issue 8 item 9: a node refused for "too many peers" reports the reason in its event
/// and redials with the long backoff.
#[test]
fn refused_newcomer_sees_why_and_backs_off() {
    let mut sim = pair(Config::default().max_peers(1));
    let c = sim.add_named("c");
    sim.connect(c, 0);
    sim.run_for(Duration::from_secs(60));
    let refusals: Vec<CloseReason> = sim
        .sim_node(c)
        .events
        .iter()
        .filter_map(|e| match e {
            Event::DialFailed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    eprintln!("refusals in 60 s: {refusals:?}");
    assert!(!refusals.is_empty());
    // Typed: the peer's goodbye code, and its text for people.
    assert!(refusals.iter().all(|r| r.is_refusal()
        && r.code() == Some(GoodbyeCode::TooManyPeers)
        && r.to_string() == "peer said goodbye: too many peers"));
    // 0.5 s · 2^n would be ~7 attempts a minute; the refusal backoff starts at 16 s.
    assert!(refusals.len() <= 4, "{} attempts in 60 s", refusals.len());
    assert!(!sim.is_connected(c, 0));
    assert_pair_healthy(&mut sim, "after refusals");
}

/// A refusal proves the peer is there: the refused node keeps trying at the slow pace
/// (it does not give up as on an unreachable address) and gets in once a slot frees.
#[test]
fn refused_newcomer_gets_in_when_a_slot_frees() {
    let mut sim = pair(Config::default().max_peers(1));
    let c = sim.add_named("c");
    // Learned once (as from one mDNS announcement), not chosen by the user.
    let (p0, addr0) = (sim.peer_id(0), sim.dial_addr(0));
    let addrs = vec![addr0.parse::<echo_proto::Multiaddr>().unwrap()];
    sim.with(c, |n, now| {
        n.handle_addresses(p0, &addrs, echo_proto::AddrSource::Discovered, now)
    });
    sim.run_for(Duration::from_secs(300));
    let refusals = sim
        .sim_node(c)
        .events
        .iter()
        .filter(|e| matches!(e, Event::DialFailed { reason, .. } if reason.is_refusal()))
        .count();
    eprintln!("{refusals} refusals in 5 minutes");
    // More refusals than `max_dial_attempts_unconnected` (5): it did not give up.
    assert!(refusals > 5, "{refusals} refusals in 5 minutes");
    assert!(!sim.is_connected(c, 0));
    sim.crash(1);
    assert!(
        sim.run_until(Duration::from_secs(120), |s| s.is_connected(c, 0)),
        "the refused node never got the freed slot"
    );
}

/// The app's discovery (mDNS) hands addresses to the core, which dials once and then
/// follows its redial backoff however often the peer is announced; the address book
/// entry is bounded like any other.
#[test]
fn discovered_addresses_dial_at_once_then_follow_the_backoff() {
    let mut sim = Sim::new(5);
    let a = sim.add_node(Config::default().learned_dials_per_sec(100.0));
    let b = sim.add_named("b");
    let (pb, addr_b) = (sim.peer_id(b), sim.dial_addr(b));
    let addrs = vec![addr_b.parse::<echo_proto::Multiaddr>().unwrap()];
    let used = sim.with(a, |n, now| {
        n.handle_addresses(pb, &addrs, echo_proto::AddrSource::Discovered, now)
    });
    assert_eq!(used, 1);
    assert!(sim.run_until(SEC, |s| s.is_connected(a, b)));
    // Gone: announcements every 100 ms for 30 s must not speed up the redials.
    sim.crash(b);
    assert!(sim.run_until(SEC, |s| !s.is_connected(a, b)));
    let before = dial_failures(&sim, a, "/tcp/");
    for _ in 0..300 {
        sim.with(a, |n, now| {
            n.handle_addresses(pb, &addrs, echo_proto::AddrSource::Discovered, now)
        });
        sim.run_for(Duration::from_millis(100));
    }
    let dials = dial_failures(&sim, a, "/tcp/") - before;
    eprintln!("{dials} dials in 30 s of announcements");
    // Backoff 0.5 s · 2^n (jittered): at most about 8 attempts in 30 s.
    assert!((1..=8).contains(&dials), "{dials} dials");
    sim.restart(b);
    assert!(sim.run_until(60 * SEC, |s| s.is_connected(a, b)));
}
