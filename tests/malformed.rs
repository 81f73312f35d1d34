//! Hostile and malformed input through the public API: a raw peer attached to node A
//! sends garbage while A keeps chatting with B. Nothing panics, the offender is closed
//! with a reason, and the A–B session is unaffected.

use std::time::Duration;

use bytes::Bytes;
use echo_proto::sim::{keypair, Sim};
use echo_proto::wire::{self, Frame, Kind};
use echo_proto::{codec, Config, Event, Message, Protocol, RateLimit};
use libp2p_identity::Keypair;
use quickcheck::{quickcheck, TestResult};

const SEC: Duration = Duration::from_secs(1);

/// A and B connected; returns the sim.
fn pair(config: Config) -> Sim {
    let mut sim = Sim::new(11);
    let a = sim.add_node(config.name("a"));
    let b = sim.add_named("b");
    sim.connect(a, b);
    assert!(sim.run_until(SEC, |s| s.is_connected(a, b) && s.is_connected(b, a)));
    sim
}

/// A and B still chat both ways.
fn assert_pair_healthy(sim: &mut Sim, tag: &str) {
    sim.run_for(SEC);
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

fn hello(name: &str) -> Vec<u8> {
    frame(Kind::Hello(wire::Hello {
        version_major: wire::VERSION_MAJOR,
        name: name.into(),
        rooms: vec!["general".into()],
        nonce: 1,
        ..Default::default()
    }))
}

fn misbehaved(sim: &Sim) -> Vec<String> {
    sim.sim_node(0)
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Misbehaved { reason, .. } => Some(reason.to_string()),
            _ => None,
        })
        .collect()
}

/// A room message chain by `key`, signing the messages for which `sign` is true.
fn chain(key: &Keypair, texts: &[&str], sign: impl Fn(usize) -> bool) -> Vec<wire::RoomMessage> {
    let mut prev = [0u8; 32];
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut w = wire::RoomMessage {
                author: Bytes::from(key.public().to_peer_id().to_bytes()),
                room: "general".into(),
                seq: i as u64 + 1,
                lamport: i as u64 + 1,
                sent_at_ms: 0,
                name: "mallory".into(),
                text: t.to_string(),
                prev: Bytes::copy_from_slice(&prev),
                signature: Bytes::new(),
                skipped: 0,
            };
            let m = Message::from_wire(w.clone()).unwrap();
            prev = *m.hash();
            if sign(i) {
                let mut b = b"echo/chat/2 signature\0".to_vec();
                b.extend_from_slice(m.hash());
                w.signature = Bytes::from(key.sign(&b).unwrap());
            }
            w
        })
        .collect()
}

#[test]
fn random_bytes_close_the_offender_only() {
    let mut sim = pair(Config::default());
    let h = sim.open_raw(0, &keypair(50), Protocol::Chat);
    sim.raw_send(h, &[0xff; 64]);
    assert!(sim.raw_closed(h));
    assert!(misbehaved(&sim)[0].contains("malformed stream"));
    assert_pair_healthy(&mut sim, "random");
}

#[test]
fn oversized_length_prefix_is_rejected_before_allocation() {
    let mut sim = pair(Config::default());
    let h = sim.open_raw(0, &keypair(51), Protocol::Chat);
    let mut b = Vec::new();
    codec::put_varint(&mut b, 1 << 33);
    sim.raw_send(h, &b);
    assert!(sim.raw_closed(h));
    assert!(
        misbehaved(&sim)[0].contains("exceeds the limit"),
        "{:?}",
        misbehaved(&sim)
    );
    assert_pair_healthy(&mut sim, "oversized");
}

#[test]
fn truncated_frames() {
    let mut sim = pair(Config::default());
    // A frame cut short, then the connection ends: no panic, no delivery.
    let h = sim.open_raw(0, &keypair(52), Protocol::Chat);
    let hl = hello("t");
    sim.raw_send(h, &hl[..hl.len() - 3]);
    assert!(!sim.raw_closed(h), "waits for the rest");
    // It never comes: the handshake times out.
    sim.run_for(11 * SEC);
    assert!(sim.raw_closed(h));
    // A complete frame whose protobuf is cut short.
    let h = sim.open_raw(0, &keypair(53), Protocol::Chat);
    let mut f = Vec::new();
    codec::put_varint(&mut f, 3);
    f.extend_from_slice(&hl[1..4]);
    sim.raw_send(h, &f);
    assert!(sim.raw_closed(h));
    assert!(misbehaved(&sim)
        .iter()
        .any(|r| r.contains("undecodable frame")));
    assert_pair_healthy(&mut sim, "truncated");
}

#[test]
fn frames_before_hello_are_refused() {
    let mut sim = pair(Config::default());
    let key = keypair(54);
    let h = sim.open_raw(0, &key, Protocol::Chat);
    let m = chain(&key, &["early"], |_| true).remove(0);
    sim.raw_send(h, &frame(Kind::Message(m)));
    assert!(sim.raw_closed(h));
    assert_eq!(misbehaved(&sim), vec!["frame before hello".to_string()]);
    assert!(sim.texts(0, "general").is_empty());
    assert_pair_healthy(&mut sim, "early");
}

#[test]
fn incompatible_version_gets_a_readable_goodbye() {
    let mut sim = pair(Config::default());
    let h = sim.open_raw(0, &keypair(55), Protocol::Chat);
    sim.raw_send(
        h,
        &frame(Kind::Hello(wire::Hello {
            version_major: 3,
            ..Default::default()
        })),
    );
    assert!(sim.raw_closed(h));
    let mut d = codec::FrameDecoder::new(1 << 20);
    d.extend(sim.raw_received(h));
    let mut bye = None;
    while let Some(p) = d.decode().unwrap() {
        if let Some(Kind::Goodbye(g)) = Frame::decode_payload(&p).unwrap().kind {
            bye = Some(g);
        }
    }
    let bye = bye.expect("goodbye sent");
    assert_eq!(bye.code, wire::GoodbyeCode::IncompatibleVersion.code());
    assert!(bye.reason.contains("version 3.0"), "{}", bye.reason);
}

#[test]
fn bad_signatures_are_dropped_counted_and_then_closed() {
    // Verifying before delivery: forgeries are dropped, counted, and the connection is
    // closed at `max_bad_signatures`. Delivering first (PROTOCOL.md section 6.5): the
    // author's own first bad signature is delivered to its neighbour (it sent it) and
    // closes the connection at once. Neither is relayed.
    for first in [false, true] {
        let mut sim = pair(Config::default().deliver_before_verify(first));
        let key = keypair(56);
        let h = sim.open_raw(0, &key, Protocol::Chat);
        sim.raw_send(h, &hello("mallory"));
        // A genuine message, then forgeries of its own messages.
        let mut msgs = chain(&key, &["real", "two", "three", "four"], |_| true);
        sim.raw_send(h, &frame(Kind::Message(msgs[0].clone())));
        for m in msgs.iter_mut().skip(1) {
            m.text = format!("{} (altered)", m.text);
            sim.raw_send(h, &frame(Kind::Message(m.clone())));
        }
        assert!(sim.raw_closed(h));
        if first {
            assert_eq!(sim.texts(0, "general"), vec!["real", "two (altered)"]);
            assert!(misbehaved(&sim)[0].contains("invalid signature on its own message"));
            assert_eq!(sim.node(0).stats().forgeries, 1);
        } else {
            assert_eq!(sim.texts(0, "general"), vec!["real"]);
            assert!(misbehaved(&sim)[0].contains("invalid signatures"));
            assert_eq!(sim.node(0).stats().forgeries, 3);
        }
        // The forged messages were not relayed to B; the genuine one was.
        sim.run_for(SEC);
        assert_eq!(sim.texts(1, "general"), vec!["real"]);
        assert_pair_healthy(&mut sim, "badsig");
    }
}

#[test]
fn unsigned_forgery_of_someone_elses_message_never_shows() {
    let mut sim = pair(Config::default());
    let mallory = keypair(57);
    let victim = keypair(58);
    let h = sim.open_raw(0, &mallory, Protocol::Chat);
    sim.raw_send(h, &hello("mallory"));
    // Claims to relay the victim's messages, without a valid signature anywhere.
    let mut fake = chain(&victim, &["i owe mallory 100 coins", "bye"], |_| false);
    fake[1].signature = Bytes::from(vec![7u8; 64]);
    sim.raw_send(h, &frame(Kind::Message(fake[0].clone())));
    sim.raw_send(h, &frame(Kind::Message(fake[1].clone())));
    sim.run_for(15 * SEC);
    assert!(sim.texts(0, "general").is_empty());
    assert!(sim.texts(1, "general").is_empty());
    assert_eq!(sim.node(0).stats().forgeries, 1);
}

#[test]
fn replayed_sequences_are_delivered_once_and_not_punished() {
    let mut sim = pair(Config::default());
    let key = keypair(59);
    let h = sim.open_raw(0, &key, Protocol::Chat);
    sim.raw_send(h, &hello("replayer"));
    let msgs = chain(&key, &["one", "two"], |_| true);
    for _ in 0..5 {
        for m in &msgs {
            sim.raw_send(h, &frame(Kind::Message(m.clone())));
        }
    }
    assert_eq!(sim.texts(0, "general"), vec!["one", "two"]);
    assert!(
        !sim.raw_closed(h),
        "duplicates are normal in a relay network"
    );
    assert_eq!(sim.node(0).stats().duplicates, 8);
}

#[test]
fn flood_past_the_rate_limit_is_cut_off() {
    let limit = RateLimit::default()
        .frames_per_sec(100.0)
        .frame_burst(200.0);
    let mut sim = pair(Config::default().rate_limit(Some(limit)));
    let key = keypair(60);
    let h = sim.open_raw(0, &key, Protocol::Chat);
    sim.raw_send(h, &hello("flooder"));
    let ping = frame(Kind::Ping(wire::Ping { nonce: 1 }));
    let mut n = 0;
    while !sim.raw_closed(h) && n < 10_000 {
        sim.raw_send(h, &ping);
        n += 1;
    }
    assert!(sim.raw_closed(h));
    assert!((199..=201).contains(&n), "cut off after the burst, at {n}");
    assert_eq!(misbehaved(&sim), vec!["rate limit exceeded".to_string()]);
    assert_pair_healthy(&mut sim, "flood");
}

#[test]
fn peer_that_does_not_read_is_closed_and_memory_bounded() {
    let mut sim = pair(Config::default().max_queued_bytes(64 * 1024));
    let h = sim.open_raw(0, &keypair(61), Protocol::Chat);
    sim.raw_send(h, &hello("sleeper"));
    sim.raw_set_reading(h, false);
    let text = "x".repeat(1000);
    for _ in 0..100 {
        sim.send(0, "general", &text);
        if sim.raw_closed(h) {
            break;
        }
    }
    assert!(sim.raw_closed(h));
    assert!(misbehaved(&sim)[0].contains("not reading"));
    assert!(sim.raw_received(h).len() < 80 * 1024);
    assert_pair_healthy(&mut sim, "sleeper");
}

#[test]
fn oversized_fields_and_bad_rooms_close_with_reason() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (hello(&"n".repeat(65)), "invalid name in hello"),
        (
            frame(Kind::Hello(wire::Hello {
                version_major: 2,
                rooms: (0..65).map(|i| format!("r{i}")).collect(),
                ..Default::default()
            })),
            "too many rooms",
        ),
        (
            frame(Kind::Hello(wire::Hello {
                version_major: 2,
                rooms: vec!["has space".into()],
                ..Default::default()
            })),
            "invalid room name",
        ),
    ];
    let mut sim = pair(Config::default());
    for (i, (bytes, want)) in cases.into_iter().enumerate() {
        let h = sim.open_raw(0, &keypair(70 + i as u64), Protocol::Chat);
        sim.raw_send(h, &bytes);
        assert!(sim.raw_closed(h), "{want}");
        assert!(misbehaved(&sim).last().unwrap().contains(want), "{want}");
    }
    let key = keypair(80);
    let h = sim.open_raw(0, &key, Protocol::Chat);
    sim.raw_send(h, &hello("big"));
    let big = "y".repeat(Config::default().max_text_len + 1);
    let m = chain(&key, &[big.as_str()], |_| true).remove(0);
    sim.raw_send(h, &frame(Kind::Message(m)));
    assert!(sim.raw_closed(h));
    assert!(misbehaved(&sim).last().unwrap().contains("over the limit"));
    assert_pair_healthy(&mut sim, "fields");
}

#[test]
fn legacy_garbage_and_long_lines() {
    let mut sim = pair(Config::default());
    let h = sim.open_raw(0, &keypair(81), Protocol::Legacy);
    sim.raw_send(h, b"\xff\xfe|\x00\x01\n|\n\n");
    assert!(!sim.raw_closed(h));
    sim.raw_send(h, &vec![b'a'; 20_000]);
    assert!(sim.raw_closed(h));
    assert!(misbehaved(&sim)[0].contains("line longer"));
    assert_pair_healthy(&mut sim, "legacy");
}

#[test]
fn local_commands_breaking_limits_get_clear_errors() {
    use echo_proto::CommandError as E;
    let mut sim = pair(Config::default());
    let now = sim.now();
    let t = std::time::SystemTime::now();
    let long = "z".repeat(20_000);
    sim.with(0, |n, _| {
        assert!(matches!(
            n.send("general", &long, t, now),
            Err(E::TextTooLong { .. })
        ));
        assert_eq!(n.send("general", "  ", t, now), Err(E::EmptyText));
        assert!(matches!(n.send("nope", "x", t, now), Err(E::NotInRoom(_))));
        assert!(matches!(n.join("a b", now), Err(E::InvalidRoom(_))));
        assert!(matches!(n.join("general", now), Err(E::AlreadyJoined(_))));
        assert!(matches!(
            n.connect("not an addr", now),
            Err(E::InvalidAddr { .. })
        ));
        assert!(matches!(
            n.connect("/ip4/1.2.3.4/udp/1", now),
            Err(E::InvalidAddr { .. })
        ));
        let own = format!("/ip4/127.0.0.1/tcp/1/p2p/{}", n.peer_id());
        assert_eq!(n.connect(&own, now), Err(E::SelfDial));
        for i in 0..63 {
            n.join(&format!("r{i}"), now).unwrap();
        }
        assert!(matches!(
            n.join("one-too-many", now),
            Err(E::TooManyRooms { .. })
        ));
    });
    // Errors changed nothing.
    assert_pair_healthy(&mut sim, "commands");
}

fn garbage_run(chunks: Vec<Vec<u8>>, legacy: bool) -> TestResult {
    let mut sim = pair(Config::default());
    let proto = if legacy {
        Protocol::Legacy
    } else {
        Protocol::Chat
    };
    let h = sim.open_raw(0, &keypair(90), proto);
    for (i, c) in chunks.iter().enumerate() {
        if i == 0 && !legacy && c.first().is_some_and(|b| b % 2 == 0) {
            sim.raw_send(h, &hello("fuzz"));
        }
        sim.raw_send(h, c);
        sim.run_for(Duration::from_millis(10));
    }
    assert_pair_healthy(&mut sim, "garbage");
    TestResult::passed()
}

quickcheck! {
    fn arbitrary_bytes_never_disturb_other_sessions(chunks: Vec<Vec<u8>>, legacy: bool) -> TestResult {
        garbage_run(chunks, legacy)
    }
}
