//! Hostile peers against the room side of a node, in the simulator: a poisoned clock, a
//! flood of history requests from a peer that never reads, thousands of throw-away
//! identities, and a relay that fills an author's out-of-order buffer. Each test reads the node's bounded sizes back from `Stats` and checks
//! that two honest peers still chat (latency in virtual time) with their history intact.

use std::time::Duration;

use bytes::Bytes;
use echo_proto::sim::{keypair, Sim};
use echo_proto::wire::{self, Frame, Kind};
use echo_proto::{Config, Message, Protocol};
use libp2p_identity::Keypair;

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
const ROOM: &str = "general";

/// A and B connected, each built from `config`.
fn pair(config: Config) -> Sim {
    let mut sim = Sim::new(31);
    let a = sim.add_node(config.clone().name("a"));
    let b = sim.add_node(config.name("b"));
    sim.connect(a, b);
    assert!(sim.run_until(SEC, |s| s.is_connected(a, b) && s.is_connected(b, a)));
    sim
}

/// Sends `text` from `from` and runs until `to` has it: the latency stays within `max`.
fn chat(sim: &mut Sim, from: usize, to: usize, text: &str, max: Duration) {
    sim.send(from, ROOM, text);
    assert!(
        sim.run_until(max, |s| s.texts(to, ROOM).iter().any(|t| t == text)),
        "{text:?} did not reach node {to} within {max:?}"
    );
}

fn frame(kind: Kind) -> Vec<u8> {
    Frame::new(kind).to_wire().to_vec()
}

fn hello(name: &str) -> Vec<u8> {
    frame(Kind::Hello(wire::Hello {
        version_major: wire::VERSION_MAJOR,
        name: name.into(),
        rooms: vec![ROOM.into()],
        nonce: 1,
        ..Default::default()
    }))
}

/// A signed room message by `key` (seq 1, starting its chain) with the given Lamport time.
fn signed_message(key: &Keypair, lamport: u64, text: &str) -> Vec<u8> {
    chain_message(key, 1, [0; 32], lamport, text).0
}

/// A signed room message by `key` with seq `seq` following the message hashed `prev`
/// (zero for seq 1), and its hash.
fn chain_message(
    key: &Keypair,
    seq: u64,
    prev: [u8; 32],
    lamport: u64,
    text: &str,
) -> (Vec<u8>, [u8; 32]) {
    let mut w = wire::RoomMessage {
        author: Bytes::from(key.public().to_peer_id().to_bytes()),
        room: ROOM.into(),
        seq,
        lamport,
        sent_at_ms: 0,
        name: "mallory".into(),
        text: text.into(),
        prev: Bytes::copy_from_slice(&prev),
        signature: Bytes::new(),
        skipped: 0,
    };
    let m = Message::from_wire(w.clone()).unwrap();
    let mut b = b"echo/chat/2 signature\0".to_vec();
    b.extend_from_slice(m.hash());
    w.signature = Bytes::from(key.sign(&b).unwrap());
    (frame(Kind::Message(w)), *m.hash())
}

/// A signed profile record of `key` (PROTOCOL.md section 11.1).
fn signed_profile(key: &Keypair, lamport: u64, name: &str) -> Vec<u8> {
    let author = key.public().to_peer_id().to_bytes();
    let mut b = b"echo/chat/2 profile\0".to_vec();
    b.extend_from_slice(&(author.len() as u32).to_be_bytes());
    b.extend_from_slice(&author);
    b.extend_from_slice(&lamport.to_be_bytes());
    b.extend_from_slice(&(name.len() as u32).to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    frame(Kind::Profile(wire::Profile {
        name: name.into(),
        author,
        lamport,
        signature: key.sign(&b).unwrap(),
        ..Default::default()
    }))
}

fn request(author: &Keypair, start: u64, end: u64) -> Vec<u8> {
    frame(Kind::Request(wire::Request {
        room: ROOM.into(),
        author: author.public().to_peer_id().to_bytes(),
        start,
        end,
    }))
}

/// The node's clock.
fn clock(sim: &Sim, i: usize) -> u64 {
    sim.node(i).clock()
}

/// The clock value of a wall time in ms (PROTOCOL.md section 8.3).
fn hlc(ms: u64) -> u64 {
    ms << 16
}

/// The simulated wall clock, ms since the Unix epoch.
fn wall_ms(sim: &Sim) -> u64 {
    sim.wall()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Position of `text` in node `i`'s log.
fn pos(sim: &Sim, i: usize, text: &str) -> usize {
    sim.log(i, ROOM)
        .iter()
        .position(|t| t == text)
        .unwrap_or_else(|| panic!("{text:?} not in node {i}'s log"))
}

#[test]
fn poisoned_clock_moves_honest_clocks_by_at_most_the_bound() {
    let skew = Config::default().max_clock_skew;
    let mut sim = pair(Config::default());
    chat(&mut sim, 0, 1, "before 1", SEC);
    chat(&mut sim, 1, 0, "before 2", SEC);
    let before = (clock(&sim, 0), clock(&sim, 1));

    // Mallory, with fresh keys, sends validly self-signed messages and profiles whose
    // clocks are the maximum and a year ahead.
    let h = sim.open_raw(0, &keypair(70), Protocol::Chat);
    sim.raw_send(h, &hello("mallory"));
    sim.run_for(10 * MS);
    let year = hlc(wall_ms(&sim) + 365 * 86_400_000);
    sim.raw_send(h, &signed_message(&keypair(70), u64::MAX, "poison max"));
    sim.raw_send(h, &signed_message(&keypair(71), year, "poison year"));
    sim.raw_send(h, &signed_profile(&keypair(70), u64::MAX, "max"));
    sim.raw_send(h, &signed_profile(&keypair(71), year, "year"));
    // One a little ahead, within the bound: accepted, but it moves clocks by at most
    // the bound.
    let near = hlc(wall_ms(&sim) + skew.as_millis() as u64 * 3 / 4);
    sim.raw_send(h, &signed_message(&keypair(72), near, "a little ahead"));
    sim.run_for(SEC);

    for i in 0..2 {
        let bound = hlc(wall_ms(&sim) + skew.as_millis() as u64);
        let c = clock(&sim, i);
        assert!(c <= bound, "node {i}: clock {c} past the bound {bound}");
        assert!(c >= [before.0, before.1][i], "clocks never go back");
        let log = sim.log(i, ROOM);
        assert!(!log.iter().any(|t| t.starts_with("poison")), "{log:?}");
        assert!(log.iter().any(|t| t == "a little ahead"), "{log:?}");
        assert!(sim.node(i).stats().clock_refused >= 2 || i == 1);
    }
    assert!(sim.node(0).stats().clock_refused >= 4);
    assert!(sim.node(0).stats().clock_clamped >= 1);

    // A conversation after the poison keeps causal order on both nodes.
    let mut said = vec!["before 1".to_string(), "before 2".to_string()];
    for k in 0..6 {
        let (from, to) = if k % 2 == 0 { (0, 1) } else { (1, 0) };
        let text = format!("after {k}");
        chat(&mut sim, from, to, &text, SEC);
        said.push(text);
    }
    for i in 0..2 {
        for w in said.windows(2) {
            assert!(
                pos(&sim, i, &w[0]) < pos(&sim, i, &w[1]),
                "node {i}: {:?} sorts after {:?}: {:?}",
                w[0],
                w[1],
                sim.log(i, ROOM)
            );
        }
    }

    // A restart reloads the stored log and does not bring the poison back.
    sim.crash(0);
    sim.run_for(SEC);
    sim.restart(0);
    assert!(sim.run_until(10 * SEC, |s| s.is_connected(0, 1) && s.is_connected(1, 0)));
    let bound = hlc(wall_ms(&sim) + skew.as_millis() as u64);
    assert!(clock(&sim, 0) <= bound, "restart re-poisoned the clock");
    chat(&mut sim, 0, 1, "after restart", SEC);
    for i in 0..2 {
        assert!(pos(&sim, i, "after 5") < pos(&sim, i, "after restart"));
    }
    // Nothing stored is above i64::MAX (apps store the clock as a signed integer).
    let stored = sim.node(0).export();
    assert!(stored.lamport <= i64::MAX as u64);
    for r in &stored.rooms {
        assert!(r.messages.iter().all(|m| m.lamport() <= i64::MAX as u64));
    }
}

#[test]
fn request_flood_from_a_peer_that_never_reads_stays_bounded() {
    let mut sim = pair(Config::default());
    // 600 messages of 1 KiB: more than a never-reading peer can take before the node
    // stops producing history for it.
    let filler = "x".repeat(1024);
    for k in 0..600 {
        sim.send(k % 2, ROOM, &format!("history {k} {filler}"));
    }
    assert!(sim.run_until(10 * SEC, |s| s.log(1, ROOM).len() == 600));
    let (ka, kb) = (keypair(0), keypair(1));

    // Two raw peers that stop reading once they asked for all of A's history: one then
    // asks for authors the room never had, the other for held messages in fragments.
    let bogus = sim.open_raw(0, &keypair(80), Protocol::Chat);
    let frag = sim.open_raw(0, &keypair(81), Protocol::Chat);
    for h in [bogus, frag] {
        sim.raw_send(h, &hello("flood"));
        sim.raw_set_reading(h, false);
        sim.raw_send(h, &request(&ka, 1, 100_000));
    }
    sim.run_for(10 * MS);
    let mut max_jobs = 0;
    let mut max_ranges = 0;
    let mut n = 0u64;
    // 1,000 requests per second from each, for 10 s.
    for tick in 0..1_000u64 {
        for _ in 0..10 {
            n += 1;
            let nobody = keypair(10_000 + n);
            sim.raw_send(bogus, &request(&nobody, 1, 100_000));
            // Every other message of each author, one at a time: 150 fragments each.
            let who = if n.is_multiple_of(2) { &ka } else { &kb };
            let k = (n / 2) % 150;
            sim.raw_send(frag, &request(who, 1 + 2 * k, 2 + 2 * k));
        }
        sim.run_for(10 * MS);
        let st = sim.node(0).stats();
        max_jobs = max_jobs.max(st.sync_jobs);
        max_ranges = max_ranges.max(st.sync_ranges);
        if tick % 100 == 50 {
            chat(&mut sim, 1, 0, &format!("during {tick}"), 200 * MS);
            chat(&mut sim, 0, 1, &format!("reply {tick}"), 200 * MS);
        }
    }
    let st = sim.node(0).stats();
    eprintln!("max jobs {max_jobs}, max ranges {max_ranges}, stats {st:?}");
    assert!(sim.raw_closed(bogus), "the bogus requester is closed");
    assert!(st.requests_refused > 0);
    assert!(max_jobs <= 4, "sync jobs {max_jobs}");
    assert!(max_ranges <= 3 * 128, "sync ranges {max_ranges}");
    assert!(sim.is_connected(0, 1));
}

#[test]
fn ten_thousand_identities_keep_authors_profiles_and_summaries_bounded() {
    // Retention big enough that the flood does not push honest history out: this test is
    // about author entries, not retention.
    let config = Config::default().max_log_messages(50_000);
    let max_authors = config.max_authors;
    let max_profiles = config.max_profiles;
    let mut sim = pair(config.clone());
    for k in 0..40 {
        chat(&mut sim, k % 2, 1 - k % 2, &format!("honest {k}"), SEC);
    }

    let h = sim.open_raw(0, &keypair(90), Protocol::Chat);
    sim.raw_send(h, &hello("sybil"));
    sim.run_for(10 * MS);
    let wall = hlc(wall_ms(&sim));
    for i in 0..10_000u64 {
        let key = keypair(100_000 + i);
        sim.raw_send(h, &signed_message(&key, wall + i, &format!("sybil {i}")));
        sim.raw_send(h, &signed_profile(&key, wall + i, &format!("s{i}")));
        if i % 100 == 99 {
            sim.run_for(10 * MS);
        }
    }
    // A few summary rounds go to the raw peer.
    sim.run_for(25 * SEC);
    assert!(!sim.raw_closed(h), "valid messages are not misbehaviour");

    for i in 0..2 {
        let st = sim.node(i).stats();
        eprintln!("node {i}: {st:?}");
        assert!(st.room_authors <= max_authors as u64, "node {i}: {st:?}");
        assert!(st.profiles <= max_profiles as u64, "node {i}: {st:?}");
    }
    // The summaries node 0 sent the raw peer list at most `max_authors` authors.
    let mut dec = echo_proto::codec::FrameDecoder::new(1 << 20);
    dec.extend(sim.raw_received(h));
    let mut entries = 0;
    let mut max_entries = 0;
    while let Ok(Some(p)) = dec.decode() {
        if let Ok(Frame {
            kind: Some(Kind::Summary(s)),
            ..
        }) = Frame::decode_payload(&p)
        {
            if s.chunk == 0 {
                entries = 0;
            }
            entries += s.authors.len();
            max_entries = max_entries.max(entries);
        }
    }
    assert!(max_entries > 0, "summaries were sent");
    assert!(
        max_entries <= max_authors,
        "a summary listed {max_entries} authors"
    );

    // Honest history is intact on both, they still chat, and a newcomer gets all of
    // it and its name through.
    for i in 0..2 {
        let log = sim.log(i, ROOM);
        for k in 0..40 {
            assert!(
                log.contains(&format!("honest {k}")),
                "node {i} lost honest {k}"
            );
        }
    }
    chat(&mut sim, 0, 1, "still here", SEC);
    chat(&mut sim, 1, 0, "me too", SEC);
    let c = sim.add_node(config.name("carol"));
    sim.connect(c, 1);
    assert!(sim.run_until(30 * SEC, |s| {
        let log = s.log(c, ROOM);
        (0..40).all(|k| log.contains(&format!("honest {k}"))) && log.contains(&"me too".into())
    }));
    chat(&mut sim, c, 0, "hi from carol", 2 * SEC);
    assert_eq!(sim.node(0).name_of(&sim.peer_id(c)), Some("carol"));
}

#[test]
fn evicted_authors_are_not_delivered_again_by_a_neighbour_that_keeps_more() {
    // A keeps little (20 messages, 8 authors); B keeps everything. Fresh keys speak
    // once each through B. A's evicted authors leave its summaries, so B offers their
    // messages again every round: A must not deliver them a second time.
    let mut sim = Sim::new(32);
    let a = sim.add_node(
        Config::default()
            .name("a")
            .max_log_messages(20)
            .max_authors(8),
    );
    let b = sim.add_named("b");
    sim.connect(a, b);
    assert!(sim.run_until(SEC, |s| s.is_connected(a, b) && s.is_connected(b, a)));
    let h = sim.open_raw(b, &keypair(95), Protocol::Chat);
    sim.raw_send(h, &hello("sybil"));
    sim.run_for(10 * MS);
    for i in 0..40u64 {
        let wall = hlc(wall_ms(&sim));
        sim.raw_send(
            h,
            &signed_message(&keypair(200 + i), wall, &format!("once {i}")),
        );
        sim.run_for(10 * MS);
    }
    // Several summary rounds.
    sim.run_for(40 * SEC);
    let mut seen = std::collections::BTreeMap::new();
    for e in &sim.sim_node(a).events {
        if let echo_proto::Event::Message { msg, .. } = e {
            *seen.entry((msg.author(), msg.seq())).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), 40);
    let again: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(again.is_empty(), "delivered more than once: {again:?}");
    assert!(sim.node(a).stats().room_authors <= 8);
    chat(&mut sim, a, b, "still chatting", SEC);
}

#[test]
fn restore_does_not_bring_a_stored_poisoned_clock_back() {
    // What an older version may have stored: a message and a clock at the maximum, and
    // a message a year ahead.
    let wall = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let wall_ms = 1_700_000_000_000u64;
    let skew_ms = Config::default().max_clock_skew.as_millis() as u64;
    let stored = |key: &Keypair, lamport: u64, text: &str| {
        let mut dec = echo_proto::codec::FrameDecoder::new(1 << 20);
        dec.extend(&signed_message(key, lamport, text));
        let payload = dec.decode().unwrap().unwrap();
        let Frame {
            kind: Some(Kind::Message(w)),
            ..
        } = Frame::decode_payload(&payload).unwrap()
        else {
            unreachable!()
        };
        Message::from_wire(w).unwrap()
    };
    let year = hlc(wall_ms + 365 * 86_400_000);
    let rooms = vec![echo_proto::RestoreRoom {
        name: ROOM.into(),
        reserved: 0,
        messages: vec![
            stored(&keypair(60), u64::MAX, "poison max"),
            stored(&keypair(61), year, "a year ahead"),
        ],
    }];
    for known_at_restore in [true, false] {
        let now = std::time::Instant::now();
        let state = echo_proto::Restore {
            rooms: rooms.clone(),
            lamport: u64::MAX,
            wall: known_at_restore.then_some(wall),
            ..Default::default()
        };
        let mut node = echo_proto::Node::restore(
            echo_proto::sim::identity(&keypair(5)),
            Config::default(),
            5,
            state,
            now,
        );
        if !known_at_restore {
            node.set_wall_clock(wall, now);
        }
        // Half the skew, the restart jump and the first profile at most.
        let bound = hlc(wall_ms + skew_ms / 2) + 1_000 + 1;
        assert!(node.clock() <= bound, "{} > {bound}", node.clock());
        let log: Vec<_> = node.room_log(ROOM).unwrap().map(|m| m.lamport()).collect();
        assert_eq!(log, vec![year], "the value above 2^62 is not loaded");
        let m = node.send(ROOM, "hello", wall, now).unwrap();
        assert!(m.lamport() <= bound + 1 && m.lamport() > hlc(wall_ms));
        assert!(node.export().lamport <= i64::MAX as u64);
    }
}

#[test]
fn a_relay_that_fills_an_authors_buffer_cannot_stall_the_message_that_opens_the_gap() {
    // Mallory relays w's seq 1, withholds seq 2 and pushes 3..=6: four verified
    // messages held behind the gap fill A's buffer for w (4). Seq 2 from an honest
    // neighbour opens the gap: A must take it and deliver the run at once, not refuse
    // it as full and leave w stalled until gap repair finds it again.
    let mut sim = Sim::new(33);
    let a = sim.add_node(Config::default().name("a").max_buffered_per_author(4));
    sim.run_for(SEC);
    let mallory = sim.open_raw(a, &keypair(95), Protocol::Chat);
    sim.raw_send(mallory, &hello("mallory"));
    let honest = sim.open_raw(a, &keypair(94), Protocol::Chat);
    sim.raw_send(honest, &hello("honest"));
    sim.run_for(10 * MS);
    let w = keypair(96);
    let (mut prev, mut msgs) = ([0; 32], Vec::new());
    for seq in 1..=6u64 {
        let (m, h) = chain_message(&w, seq, prev, hlc(wall_ms(&sim)) + seq, &format!("w{seq}"));
        prev = h;
        msgs.push(m);
    }
    for i in [0, 2, 3, 4, 5] {
        sim.raw_send(mallory, &msgs[i]);
    }
    sim.run_for(10 * MS);
    assert_eq!(sim.texts(a, ROOM), ["w1"]);
    sim.raw_send(honest, &msgs[1]);
    sim.run_for(10 * MS);
    assert_eq!(sim.texts(a, ROOM), ["w1", "w2", "w3", "w4", "w5", "w6"]);
    assert!(!sim.raw_closed(mallory) && !sim.raw_closed(honest));
}
