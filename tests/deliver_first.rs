//! Delivery before verification (PROTOCOL.md, "Delivery before verification"): a signed
//! message that comes from its author directly is delivered before its signature is
//! checked, and relayed or served only after. These tests drive a node B (connected to an
//! honest node C) from raw peers whose authenticated identity is known, in the simulator.

use std::time::Duration;

use bytes::Bytes;
use echo_proto::sim::{keypair, raw_frame, raw_hello, Sim};
use echo_proto::wire::{self, Kind};
use echo_proto::{Config, Event, Message, Protocol};
use libp2p_identity::Keypair;

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
const ROOM: &str = "general";

/// B (0) and C (1), connected.
fn pair(config: Config) -> Sim {
    let mut sim = Sim::new(41);
    let b = sim.add_node(config.clone().name("b"));
    let c = sim.add_node(config.name("c"));
    sim.connect(b, c);
    assert!(sim.run_until(SEC, |s| s.is_connected(b, c) && s.is_connected(c, b)));
    sim
}

/// How a test message is signed.
#[derive(Clone, Copy)]
enum Sig<'a> {
    None,
    /// Signed by this key (the author's: valid; another: invalid).
    By(&'a Keypair),
}

/// A room message of `author` (seq `seq`, following `prev`), and its hash.
fn message(
    author: &Keypair,
    seq: u64,
    prev: [u8; 32],
    text: &str,
    sig: Sig,
) -> (Vec<u8>, [u8; 32]) {
    let mut w = wire::RoomMessage {
        author: Bytes::from(author.public().to_peer_id().to_bytes()),
        room: ROOM.into(),
        seq,
        lamport: 100 + seq,
        sent_at_ms: 0,
        name: "mallory".into(),
        text: text.into(),
        prev: Bytes::copy_from_slice(&prev),
        signature: Bytes::new(),
        skipped: 0,
    };
    let m = Message::from_wire(w.clone()).unwrap();
    if let Sig::By(key) = sig {
        let mut b = b"echo/chat/2 signature\0".to_vec();
        b.extend_from_slice(m.hash());
        w.signature = Bytes::from(key.sign(&b).unwrap());
    }
    (raw_frame(Kind::Message(w)), *m.hash())
}

/// A raw peer with identity `key`, handshaken with node `i`.
fn raw(sim: &mut Sim, i: usize, key: &Keypair) -> u64 {
    let h = sim.open_raw(i, key, Protocol::Chat);
    sim.raw_send(h, &raw_hello("mallory"));
    sim.run_for(10 * MS);
    h
}

fn signature_failures(sim: &Sim, i: usize) -> usize {
    sim.sim_node(i)
        .events
        .iter()
        .filter(|e| matches!(e, Event::SignatureFailed { .. }))
        .count()
}

#[test]
fn forged_authors_are_never_delivered() {
    let mut sim = pair(Config::default());
    let (mallory, carol) = (keypair(70), keypair(71));
    let h = raw(&mut sim, 0, &mallory);
    // Messages claiming Carol as author: signed by Mallory, or not signed at all.
    sim.raw_send(
        h,
        &message(&carol, 1, [0; 32], "forged signed", Sig::By(&mallory)).0,
    );
    let (unsigned, _) = message(&carol, 2, [7; 32], "forged unsigned", Sig::None);
    sim.raw_send(h, &unsigned);
    // Mallory's own honest message is delivered and relayed (the path works).
    sim.raw_send(
        h,
        &message(&mallory, 1, [0; 32], "mallory ok", Sig::By(&mallory)).0,
    );
    // Past the verify timeout (10 s) and two summary rounds.
    sim.run_for(25 * SEC);
    for i in 0..2 {
        let texts = sim.texts(i, ROOM);
        assert!(
            !texts.iter().any(|t| t.starts_with("forged")),
            "node {i}: {texts:?}"
        );
        assert_eq!(
            texts.iter().filter(|t| *t == "mallory ok").count(),
            1,
            "{texts:?}"
        );
    }
    assert!(sim.node(0).stats().forgeries >= 1);
    assert_eq!(signature_failures(&sim, 0), 0);
}

#[test]
fn an_authors_bad_signature_is_delivered_to_the_neighbour_and_goes_no_further() {
    let mut sim = pair(Config::default());
    let (mallory, other) = (keypair(72), keypair(73));
    let h = raw(&mut sim, 0, &mallory);
    let (m1, h1) = message(&mallory, 1, [0; 32], "bad 1", Sig::None);
    let (m2, _) = message(&mallory, 2, h1, "bad 2", Sig::By(&other));
    sim.raw_send(h, &m1);
    sim.raw_send(h, &m2);
    sim.run_for(10 * MS);
    // Delivered to B at once (it came from its author), in order.
    assert_eq!(sim.texts(0, ROOM), ["bad 1", "bad 2"]);
    // Then the check failed: reported, the connection closed as misbehaving.
    assert_eq!(signature_failures(&sim, 0), 1);
    assert!(sim.raw_closed(h));
    assert!(sim.node(0).stats().forgeries >= 1);
    // Taken out of B's log as the app is told to drop them.
    let logged = |sim: &Sim, i: usize| -> Vec<String> {
        let log = sim.node(i).room_log(ROOM).unwrap();
        log.map(|m| m.text().to_string()).collect()
    };
    assert!(!logged(&sim, 0).iter().any(|t| t.starts_with("bad")));
    // C never gets them: not relayed, not served in history (summaries every 10 s).
    sim.run_for(25 * SEC);
    let c = sim.texts(1, ROOM);
    assert!(!c.iter().any(|t| t.starts_with("bad")), "{c:?}");
    assert_eq!(sim.node(1).stats().forgeries, 0, "B sent C a bad signature");
    // Nor delivered twice at B when someone else sends copies.
    let h2 = raw(&mut sim, 0, &keypair(74));
    sim.raw_send(h2, &m1);
    sim.raw_send(h2, &m2);
    sim.run_for(SEC);
    assert_eq!(sim.texts(0, ROOM), ["bad 1", "bad 2"]);
    // B and C still chat.
    sim.send(1, ROOM, "still fine");
    assert!(sim.run_until(SEC, |s| s.texts(0, ROOM).iter().any(|t| t == "still fine")));
    // And their logs agree (the bad ones never came back into B's).
    assert_eq!(logged(&sim, 0), logged(&sim, 1));
}

#[test]
fn a_predecessor_vouched_for_by_an_unchecked_signature_is_not_relayed_either() {
    let mut sim = pair(Config::default());
    let (mallory, other) = (keypair(76), keypair(77));
    let h = raw(&mut sim, 0, &mallory);
    let (m1, h1) = message(&mallory, 1, [0; 32], "early 1", Sig::None);
    let (m2, _) = message(&mallory, 2, h1, "early 2", Sig::By(&other));
    // In one read: the signed (badly) message first, then the unsigned one it names.
    sim.raw_send(h, &[m2, m1].concat());
    sim.run_for(10 * MS);
    assert_eq!(sim.texts(0, ROOM), ["early 1", "early 2"]);
    assert_eq!(signature_failures(&sim, 0), 1);
    assert!(sim.raw_closed(h));
    assert_eq!(sim.node(0).stats().relayed, 0, "relayed before the check");
    sim.run_for(25 * SEC);
    assert!(sim.texts(1, ROOM).is_empty());
}

#[test]
fn delivered_first_keeps_order_and_dedup_and_relays_once_verified() {
    let mut sim = pair(Config::default());
    let mallory = keypair(75);
    let h = raw(&mut sim, 0, &mallory);
    let (m1, h1) = message(&mallory, 1, [0; 32], "one", Sig::By(&mallory));
    let (m2, h2) = message(&mallory, 2, h1, "two", Sig::None);
    let (m3, _) = message(&mallory, 3, h2, "three", Sig::By(&mallory));
    // Out of order, and twice.
    for m in [&m3, &m2, &m1, &m3, &m1, &m2] {
        sim.raw_send(h, m);
    }
    assert!(sim.run_until(SEC, |s| s.texts(1, ROOM).len() == 3));
    sim.run_for(SEC);
    for i in 0..2 {
        assert_eq!(sim.texts(i, ROOM), ["one", "two", "three"], "node {i}");
    }
    assert!(!sim.raw_closed(h));
    assert_eq!(sim.node(0).stats().forgeries, 0);
    assert_eq!(sim.node(1).stats().forgeries, 0);
}
