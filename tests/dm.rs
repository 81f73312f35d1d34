//! End-to-end encrypted direct messages with store and forward, in the simulator:
//! offline recipients, a recipient reached only through a middle peer, hostile carriers
//! (read, alter, forge, replay), mailbox quotas under floods, receipts, restarts.

use std::time::Duration;

use echo_proto::dm::envelope::{self, Body, Envelope, Prekey};
use echo_proto::dm::seal_seeded;
use echo_proto::sim::{keypair, raw_frame, raw_hello as hello, Sim};
use echo_proto::wire::Kind;
use echo_proto::{Config, DmStatus, Event, PeerId, Protocol};
use libp2p_identity::Keypair;

const SEC: Duration = Duration::from_secs(1);

fn leaf(name: &str) -> Config {
    Config::default().name(name).auto_connect(false)
}

fn received(sim: &Sim, i: usize) -> Vec<(PeerId, u64, String)> {
    sim.sim_node(i)
        .events
        .iter()
        .filter_map(|e| match e {
            Event::DirectReceived {
                from, seq, text, ..
            } => Some((*from, *seq, text.clone())),
            _ => None,
        })
        .collect()
}

fn statuses(sim: &Sim, i: usize) -> Vec<(u64, DmStatus)> {
    sim.sim_node(i)
        .events
        .iter()
        .filter_map(|e| match e {
            Event::DirectStatus { seq, status, .. } => Some((*seq, *status)),
            _ => None,
        })
        .collect()
}

fn send_dm(sim: &mut Sim, from: usize, to: usize, text: &str) -> u64 {
    let to = sim.peer_id(to);
    let wall = sim.wall();
    sim.with(from, |n, now| n.send_dm(&to, text, wall, now))
        .expect("dm accepted")
}

fn linked(sim: &mut Sim, a: usize, b: usize) {
    sim.connect(a, b);
    assert!(sim.run_until(5 * SEC, |s| s.is_connected(a, b) && s.is_connected(b, a)));
}

/// alice – `middle` – bob (nodes 0, 1, 2), alice knowing bob's prekey (his profile,
/// relayed by the middle node).
fn line(seed: u64, middle: Config) -> Sim {
    let mut sim = Sim::new(seed);
    let (a, m, b) = (
        sim.add_node(leaf("alice")),
        sim.add_node(middle),
        sim.add_node(leaf("bob")),
    );
    linked(&mut sim, a, m);
    linked(&mut sim, b, m);
    assert!(sim.run_until(5 * SEC, |s| s.node(a).can_dm(&s.peer_id(b))));
    assert!(!sim.is_connected(a, b));
    sim
}

/// alice – carol – bob, then bob goes away (crash: his node is gone).
fn bob_offline(carol: Config) -> Sim {
    let mut sim = line(5, carol);
    sim.crash(2);
    assert!(sim.run_until(5 * SEC, |s| !s.is_connected(1, 2)));
    sim
}

#[test]
fn offline_recipient_receives_through_a_carrier_in_order() {
    let mut sim = bob_offline(leaf("carol"));
    let (a, c, b) = (0, 1, 2);
    let texts = ["one", "two", "three"];
    for t in texts {
        send_dm(&mut sim, a, b, t);
    }
    sim.run_for(2 * SEC);
    let held = sim.node(c).stats().dm;
    assert_eq!((held.held, held.stored), (3, 3), "carol carries three");
    // Carol's copy is ciphertext only.
    let export = sim.node(c).export_dm(sim.now());
    assert!(!texts
        .iter()
        .any(|t| export.windows(t.len()).any(|w| w == t.as_bytes())));
    assert_eq!(
        statuses(&sim, a),
        vec![
            (1, DmStatus::Pending),
            (2, DmStatus::Pending),
            (3, DmStatus::Pending)
        ]
    );

    sim.restart(b);
    linked(&mut sim, b, c);
    assert!(sim.run_until(5 * SEC, |s| received(s, b).len() == 3));
    let got = received(&sim, b);
    let alice = sim.peer_id(a);
    assert_eq!(
        got,
        vec![
            (alice, 1, "one".into()),
            (alice, 2, "two".into()),
            (alice, 3, "three".into())
        ]
    );
    assert_eq!(sim.node(c).stats().dm.held, 0, "dropped after hand-over");
    assert_eq!(sim.node(c).stats().dm.handed_over, 3);
    // Delivered receipts travel back through carol.
    assert!(sim.run_until(5 * SEC, |s| statuses(s, a)
        .iter()
        .filter(|x| x.1 == DmStatus::Delivered)
        .count()
        == 3));
    // And alice's own copies are gone once delivered.
    assert_eq!(sim.node(a).stats().dm.held, 0);
}

#[test]
fn carrier_drops_envelopes_after_the_ttl() {
    let mut cfg = leaf("carol");
    cfg.dm.ttl = Duration::from_secs(60);
    let mut sim = bob_offline(cfg);
    let (a, c, b) = (0, 1, 2);
    send_dm(&mut sim, a, b, "soon gone");
    sim.run_for(2 * SEC);
    assert_eq!(sim.node(c).stats().dm.held, 1);
    sim.run_for(61 * SEC);
    assert_eq!(sim.node(c).stats().dm.held, 0);
    assert_eq!(sim.node(c).stats().dm.expired, 1);
}

#[test]
fn peer_reached_only_through_a_middle_peer() {
    let mut sim = line(8, leaf("middle"));
    let (a, b) = (0, 2);
    send_dm(&mut sim, a, b, "via middle");
    assert!(sim.run_until(5 * SEC, |s| received(s, b).len() == 1));
    assert_eq!(received(&sim, b)[0].2, "via middle");
    assert!(sim.run_until(5 * SEC, |s| statuses(s, a)
        .contains(&(1, DmStatus::Delivered))));
    // Read receipt.
    let alice = sim.peer_id(a);
    let wall = sim.wall();
    sim.with(b, |n, now| n.mark_dm_read(&alice, &[1], wall, now))
        .unwrap();
    assert!(sim.run_until(5 * SEC, |s| statuses(s, a).contains(&(1, DmStatus::Read))));
    assert_eq!(
        statuses(&sim, a),
        vec![
            (1, DmStatus::Pending),
            (1, DmStatus::Delivered),
            (1, DmStatus::Read)
        ]
    );
}

// ----- hostile carriers --------------------------------------------------------------

fn env_frame(e: &Envelope) -> Vec<u8> {
    raw_frame(Kind::Envelope(e.clone()))
}

/// A message from `from` to the holder of `to_key` with sequence `seq`.
fn sealed(from: &Keypair, to_key: &Keypair, seq: u64, text: &str, seed: u8) -> Envelope {
    let to = to_key.public().to_peer_id();
    let pk = Prekey::derive(to_key).public;
    let body = Body {
        seq,
        text: text.into(),
        ..Body::default()
    };
    seal_seeded(from, &to, &pk, body, 3, [seed; 32]).expect("sealed")
}

/// Bob (node 0, key `keypair(0)` in the sim) and a raw carrier connected to him.
fn bob_and_raw() -> (Sim, u64, Keypair) {
    let mut sim = Sim::new(9);
    let b = sim.add_node(leaf("bob"));
    let mallory = keypair(60);
    let h = sim.open_raw(b, &mallory, Protocol::Chat);
    sim.raw_send(h, &hello("carrier"));
    sim.run_for(SEC);
    let bob_key = sim.sim_node(b).key.clone();
    (sim, h, bob_key)
}

#[test]
fn carrier_cannot_read_alter_forge_or_replay() {
    let (mut sim, h, bob_key) = bob_and_raw();
    let alice = keypair(61);
    let env = sealed(&alice, &bob_key, 1, "secret", 1);
    // Read: the carrier's own prekey does not open it.
    assert!(envelope::open(&Prekey::derive(&keypair(60)), &env).is_err());
    assert!(envelope::open(&Prekey::derive(&bob_key), &env).is_ok());
    // Alter: every flipped ciphertext byte is refused (bad signature).
    let mut altered = env.clone();
    altered.ciphertext[5] ^= 1;
    sim.raw_send(h, &env_frame(&altered));
    // Forge: mallory signs an envelope claiming to be alice.
    let mut forged = sealed(&keypair(60), &bob_key, 1, "forged", 2);
    forged.sender = alice.public().to_peer_id().to_bytes();
    sim.raw_send(h, &env_frame(&forged));
    sim.run_for(SEC);
    assert_eq!(sim.node(0).stats().dm.rejected, 2);
    assert!(received(&sim, 0).is_empty());
    // Replay: the same envelope twice (even with another unsigned hop count) and a
    // fresh envelope reusing the sequence number are delivered once.
    let h2 = sim.open_raw(0, &keypair(62), Protocol::Chat);
    sim.raw_send(h2, &hello("carrier2"));
    sim.raw_send(h2, &env_frame(&env));
    let mut again = env.clone();
    again.hops = 1;
    sim.raw_send(h2, &env_frame(&again));
    sim.raw_send(h2, &env_frame(&sealed(&alice, &bob_key, 1, "secret", 3)));
    sim.run_for(SEC);
    assert_eq!(received(&sim, 0).len(), 1);
    assert_eq!(received(&sim, 0)[0].2, "secret");
    let st = sim.node(0).stats().dm;
    assert_eq!((st.duplicates, st.replays), (1, 1));
}

#[test]
fn mailbox_quotas_hold_under_floods() {
    let mut sim = Sim::new(10);
    let mut cfg = leaf("carol");
    cfg.dm.per_recipient = 8;
    cfg.dm.per_sender = 20;
    cfg.dm.mailbox_bytes = 64 * 1024;
    let c = sim.add_node(cfg);
    let flooder = keypair(70);
    let h = sim.open_raw(c, &flooder, Protocol::Chat);
    sim.raw_send(h, &hello("flood"));
    let absent = keypair(71);
    // To one absent recipient, from one sender.
    for i in 0..100u64 {
        sim.raw_send(
            h,
            &env_frame(&sealed(&flooder, &absent, i + 1, "x", i as u8)),
        );
    }
    sim.run_for(SEC);
    let st = sim.node(c).stats().dm;
    assert_eq!(st.held_max_recipient, 8);
    assert_eq!(st.held, 8);
    assert_eq!(st.refused, 92);
    // From one sender to many recipients.
    for i in 0..100u64 {
        let to = keypair(100 + i);
        sim.raw_send(h, &env_frame(&sealed(&flooder, &to, 1, "y", 200)));
    }
    sim.run_for(SEC);
    let st = sim.node(c).stats().dm;
    assert_eq!(st.held_max_sender, 20);
    assert_eq!(st.held, 20);
    // Many senders: the byte quota bounds the total.
    for i in 0..300u64 {
        let from = keypair(300 + i);
        let to = keypair(700 + i % 50);
        let text = "z".repeat(1000);
        sim.raw_send(h, &env_frame(&sealed(&from, &to, 1, &text, 7)));
    }
    sim.run_for(5 * SEC);
    let st = sim.node(c).stats().dm;
    assert!(st.held_bytes <= 64 * 1024, "{st:?}");
    assert!(st.held_bytes > 60 * 1024, "{st:?}");
}

#[test]
fn sequence_numbers_survive_a_restart_through_export() {
    let mut sim = Sim::new(11);
    let (a, b) = (sim.add_node(leaf("alice")), sim.add_node(leaf("bob")));
    linked(&mut sim, a, b);
    assert!(sim.run_until(5 * SEC, |s| s.node(a).can_dm(&s.peer_id(b))));
    send_dm(&mut sim, a, b, "before");
    // The receipt carries bob's prekey too; the export keeps it.
    assert!(sim.run_until(5 * SEC, |s| statuses(s, a)
        .contains(&(1, DmStatus::Delivered))));
    let saved = sim.node(a).export_dm(sim.now());
    sim.crash(a);
    sim.restart(a);
    sim.with(a, |n, now| n.import_dm(&saved, now)).unwrap();
    linked(&mut sim, a, b);
    assert!(sim.run_until(5 * SEC, |s| s.node(a).can_dm(&s.peer_id(b))));
    assert_eq!(send_dm(&mut sim, a, b, "after"), 2);
    assert!(sim.run_until(5 * SEC, |s| received(s, b).len() == 2));
    assert_eq!(sim.node(b).stats().dm.replays, 0);
}

#[test]
fn carried_envelopes_survive_a_carrier_restart() {
    let mut sim = bob_offline(leaf("carol"));
    let (a, c, b) = (0, 1, 2);
    send_dm(&mut sim, a, b, "kept");
    sim.run_for(2 * SEC);
    let saved = sim.node(c).export_dm(sim.now());
    sim.crash(c);
    sim.restart(c);
    sim.with(c, |n, now| n.import_dm(&saved, now)).unwrap();
    assert_eq!(sim.node(c).stats().dm.held, 1);
    sim.restart(b);
    linked(&mut sim, b, c);
    assert!(sim.run_until(5 * SEC, |s| received(s, b).len() == 1));
}

#[test]
fn a_dm_to_an_unknown_peer_is_refused() {
    let mut sim = Sim::new(12);
    let a = sim.add_node(leaf("alice"));
    let nobody = keypair(99).public().to_peer_id();
    let wall = sim.wall();
    let r = sim.with(a, |n, now| n.send_dm(&nobody, "hi", wall, now));
    assert_eq!(r, Err(echo_proto::CommandError::NoPrekey(nobody)));
}

/// Envelopes in what node `i` wrote to raw peer `h`.
fn envelopes_at(sim: &Sim, h: u64) -> Vec<Envelope> {
    let mut d = echo_proto::codec::FrameDecoder::new(1 << 20);
    d.extend(sim.raw_received(h));
    let mut out = Vec::new();
    while let Ok(Some(p)) = d.decode() {
        if let Ok(echo_proto::wire::Frame {
            kind: Some(Kind::Envelope(e)),
            ..
        }) = echo_proto::wire::Frame::decode_payload(&p)
        {
            out.push(e);
        }
    }
    out
}

#[test]
fn a_raised_hop_count_is_lowered_to_the_limit() {
    let mut sim = Sim::new(13);
    let c = sim.add_node(leaf("carol"));
    let h1 = sim.open_raw(c, &keypair(80), Protocol::Chat);
    let h2 = sim.open_raw(c, &keypair(81), Protocol::Chat);
    sim.raw_send(h1, &hello("raiser"));
    sim.raw_send(h2, &hello("next"));
    sim.run_for(SEC);
    let mut env = sealed(&keypair(80), &keypair(82), 1, "x", 9);
    env.hops = 1_000_000;
    sim.raw_send(h1, &env_frame(&env));
    sim.run_for(SEC);
    let passed = envelopes_at(&sim, h2);
    assert_eq!(passed.len(), 1, "carol passes it on once");
    let max = Config::default().dm.max_hops;
    assert_eq!(passed[0].hops, max - 1);
}

#[test]
fn remembered_ids_and_conversations_stay_bounded_under_a_flood_of_senders() {
    let mut sim = Sim::new(14);
    let mut cfg = leaf("bob");
    cfg.dm.max_seen = 32;
    cfg.dm.max_convs = 16;
    cfg.dm.max_missing = 4;
    let b = sim.add_node(cfg);
    let bob_key = sim.sim_node(b).key.clone();
    let h = sim.open_raw(b, &keypair(90), Protocol::Chat);
    sim.raw_send(h, &hello("flood"));
    for i in 0..200u64 {
        let from = keypair(1000 + i);
        sim.raw_send(h, &env_frame(&sealed(&from, &bob_key, 1, "hi", 11)));
    }
    // One sender leaving gaps: every other sequence number.
    let gappy = keypair(2000);
    for s in 0..50u64 {
        sim.raw_send(
            h,
            &env_frame(&sealed(&gappy, &bob_key, 1 + 2 * s, "gap", s as u8)),
        );
    }
    sim.run_for(5 * SEC);
    let st = sim.node(b).stats().dm;
    assert_eq!(received(&sim, b).len(), 250, "all delivered: {st:?}");
    assert_eq!(st.seen, 32);
    assert_eq!(st.convs, 16);
}

/// The app reserves sequence numbers ahead of sending (`Restore::dm_reserved`): after a
/// crash that lost the last `export_dm`, the restored node continues above the
/// reservation, and a reservation below what the export says never moves it back.
#[test]
fn a_restore_continues_above_the_reserved_dm_numbers() {
    let mut sim = Sim::new(13);
    let (a, b) = (sim.add_node(leaf("alice")), sim.add_node(leaf("bob")));
    linked(&mut sim, a, b);
    assert!(sim.run_until(5 * SEC, |s| s.node(a).can_dm(&s.peer_id(b))));
    send_dm(&mut sim, a, b, "one");
    assert!(sim.run_until(5 * SEC, |s| statuses(s, a)
        .contains(&(1, DmStatus::Delivered))));
    let bob = sim.peer_id(b);
    assert_eq!(sim.node(a).dm_next_seq(&bob), 2);
    let saved = sim.node(a).export_dm(sim.now());
    let restored = |reserved: u64| {
        let state = echo_proto::Restore {
            dm: saved.clone(),
            dm_reserved: vec![(bob, reserved)],
            ..Default::default()
        };
        echo_proto::Node::restore(
            echo_proto::sim::identity(&keypair(77)),
            leaf("alice"),
            7,
            state,
            sim.now(),
        )
    };
    let mut node = restored(40);
    assert_eq!(node.dm_next_seq(&bob), 40);
    assert_eq!(
        node.send_dm(&bob, "after a crash", sim.wall(), sim.now()),
        Ok(40)
    );
    assert_eq!(restored(1).dm_next_seq(&bob), 2, "never below the export");
    assert_eq!(node.dm_next_seq(&keypair(98).public().to_peer_id()), 1);
}

/// alice writes to bob while she has no neighbour at all; carol connects later and
/// alice leaves: carol got alice's message when she came, and hands it to bob.
/// alice – carol – bob; bob and carol go away, then alice writes "written alone" to bob.
fn written_alone(seed: u64) -> Sim {
    let mut sim = line(seed, leaf("carol"));
    let (a, c, b) = (0, 1, 2);
    sim.crash(b);
    sim.crash(c);
    assert!(sim.run_until(5 * SEC, |s| !s.is_connected(a, c)));
    send_dm(&mut sim, a, b, "written alone");
    sim.run_for(SEC);
    sim
}

#[test]
fn a_message_written_alone_travels_with_a_neighbour_met_later() {
    let mut sim = written_alone(11);
    let (a, c, b) = (0, 1, 2);
    assert_eq!(sim.node(a).stats().dm.held, 1, "alice keeps her own copy");

    sim.restart(c);
    linked(&mut sim, a, c);
    assert!(sim.run_until(5 * SEC, |s| s.node(c).stats().dm.held == 1));
    // Meeting carol again gives her nothing twice.
    sim.run_for(SEC);
    assert_eq!(sim.node(c).stats().dm.stored, 1);
    sim.crash(a);

    sim.restart(b);
    linked(&mut sim, b, c);
    assert!(sim.run_until(5 * SEC, |s| received(s, b).len() == 1));
    let got = received(&sim, b);
    assert_eq!(got, vec![(sim.peer_id(a), 1, "written alone".into())]);
    assert_eq!(sim.node(c).stats().dm.held, 0, "handed over");
}

/// A message written while the recipient is away goes to each neighbour met later, but
/// to at most 8 of them (`MAX_GIVEN`): a node that meets many peers does not copy one
/// message to all of them. The bound, read back from the carriers' mailboxes.
#[test]
fn a_message_written_alone_is_given_to_at_most_eight_later_neighbours() {
    let mut sim = written_alone(12);
    let a = 0;
    let carriers: Vec<usize> = (0..12)
        .map(|i| sim.add_node(leaf(&format!("n{i}"))))
        .collect();
    for &n in &carriers {
        linked(&mut sim, a, n);
        sim.run_for(SEC);
    }
    let holding = carriers
        .iter()
        .filter(|&&n| sim.node(n).stats().dm.held == 1)
        .count();
    assert_eq!(holding, 8, "given to exactly MAX_GIVEN neighbours");
    assert!(carriers[..8]
        .iter()
        .all(|&n| sim.node(n).stats().dm.held == 1));
}

/// The hello carries the sender's prekey: a peer can be written to from the moment it is
/// reported up, before its profile (which follows the hello) has arrived. An app that
/// sends right after `PeerUp` used to get `NoPrekey`.
#[test]
fn a_peer_can_be_written_to_as_soon_as_it_is_up() {
    for seed in 0..8 {
        let mut sim = Sim::new(300 + seed);
        let (a, b) = (sim.add_node(leaf("alice")), sim.add_node(leaf("bob")));
        let bob = sim.peer_id(b);
        sim.connect(a, b);
        let up = |s: &Sim| {
            s.sim_node(a)
                .events
                .iter()
                .any(|e| matches!(e, Event::PeerUp(i) if i.peer == bob))
        };
        assert!(sim.run_until(5 * SEC, up), "seed {seed}: bob never came up");
        // Bob's profile cannot be here yet: he sends it only after alice's hello reached him.
        assert!(sim.node(a).can_dm(&bob), "seed {seed}: no key at PeerUp");
        let seq = send_dm(&mut sim, a, b, "right away");
        assert!(
            sim.run_until(5 * SEC, |s| received(s, b).iter().any(|m| m.1 == seq)),
            "seed {seed}: the message did not arrive"
        );
    }
}

/// A raw peer's hello carrying `prekey` and `prekey_sig`.
fn hello_with_prekey(prekey: Vec<u8>, prekey_sig: Vec<u8>) -> Vec<u8> {
    raw_frame(Kind::Hello(echo_proto::wire::Hello {
        version_major: echo_proto::wire::VERSION_MAJOR,
        name: "mallory".into(),
        nonce: 1,
        prekey,
        prekey_sig,
        ..Default::default()
    }))
}

/// A hello can vouch only for its own sender's prekey: another identity's key (with that
/// identity's valid signature) or a cut key is a protocol violation, and nothing is
/// learned from it.
#[test]
fn a_hello_with_someone_elses_prekey_is_refused() {
    let other = keypair(61);
    let mallory = keypair(60);
    let theirs = Prekey::derive(&other);
    let own = Prekey::derive(&mallory);
    let cases = [
        (
            "another identity's key",
            theirs.public.to_vec(),
            theirs.signature.clone(),
        ),
        (
            "a cut key",
            own.public[..31].to_vec(),
            own.signature.clone(),
        ),
        ("a key without signature", own.public.to_vec(), Vec::new()),
    ];
    for (what, prekey, prekey_sig) in cases {
        let mut sim = Sim::new(31);
        let b = sim.add_node(leaf("bob"));
        let h = sim.open_raw(b, &mallory, Protocol::Chat);
        sim.raw_send(h, &hello_with_prekey(prekey, prekey_sig));
        sim.run_for(SEC);
        assert!(sim.raw_closed(h), "{what}: the connection stayed open");
        assert!(
            !sim.node(b).can_dm(&mallory.public().to_peer_id()),
            "{what}"
        );
        assert!(!sim.node(b).can_dm(&other.public().to_peer_id()), "{what}");
    }
    // Its own key, correctly signed, is learned from the hello alone.
    let mut sim = Sim::new(31);
    let b = sim.add_node(leaf("bob"));
    let h = sim.open_raw(b, &mallory, Protocol::Chat);
    sim.raw_send(
        h,
        &hello_with_prekey(own.public.to_vec(), own.signature.clone()),
    );
    sim.run_for(SEC);
    assert!(!sim.raw_closed(h));
    assert!(sim.node(b).can_dm(&mallory.public().to_peer_id()));
}
