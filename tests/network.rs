//! Several nodes in the in-memory simulator with virtual time: handshake, rooms, relay,
//! duplicate connections, redial, idle timeout, direct messages and legacy peers.

use std::time::Duration;

use echo_proto::sim::{keypair, Sim};
use echo_proto::{Config, Event, Protocol};

const SEC: Duration = Duration::from_secs(1);

/// alice – bob – carol; alice and carol do not dial peers they learn about, so the
/// line stays a line.
fn line_of_three() -> Sim {
    let mut sim = Sim::new(1);
    let leaf = |name: &str| Config::default().name(name).auto_connect(false);
    let a = sim.add_node(leaf("alice"));
    let b = sim.add_named("bob");
    let c = sim.add_node(leaf("carol"));
    sim.connect(a, b);
    sim.connect(c, b);
    assert!(sim.run_until(5 * SEC, |s| s.is_connected(b, a)
        && s.is_connected(b, c)
        && s.is_connected(a, b)
        && s.is_connected(c, b)));
    sim
}

#[test]
fn handshake_reports_peer_up_with_name() {
    let mut sim = Sim::new(7);
    let a = sim.add_named("alice");
    let b = sim.add_named("bob");
    sim.connect(a, b);
    assert!(sim.run_until(SEC, |s| s.is_connected(a, b) && s.is_connected(b, a)));
    let up = sim.sim_node(b).events.iter().find_map(|e| match e {
        Event::PeerUp(info) => Some(info.clone()),
        _ => None,
    });
    let up = up.expect("peer up");
    assert_eq!(up.name, "alice");
    assert_eq!(up.peer, sim.peer_id(a));
    assert_eq!(up.rooms, vec!["general".to_string()]);
    assert_eq!(sim.node(a).connection_count(&sim.peer_id(b)), 1);
}

#[test]
fn room_message_relays_along_a_line() {
    let mut sim = line_of_three();
    let (a, b, c) = (0, 1, 2);
    assert!(!sim.is_connected(a, c), "line topology");
    sim.send(a, "general", "hi from alice");
    sim.send(a, "general", "hi from alice"); // same text twice is shown twice
    sim.send(c, "general", "carol here");
    assert!(sim.run_until(SEC, |s| s.texts(c, "general").len() == 3
        && s.texts(a, "general").len() == 3));
    assert_eq!(
        sim.texts(c, "general")
            .iter()
            .filter(|t| *t == "hi from alice")
            .count(),
        2
    );
    // All three agree on the log order.
    let la = sim.log(a, "general");
    assert_eq!(la, sim.log(b, "general"));
    assert_eq!(la, sim.log(c, "general"));
    // The relayed message is attributed to alice, not bob.
    let m = sim.sim_node(c).events.iter().find_map(|e| match e {
        Event::Message { msg, .. } if msg.text() == "hi from alice" => Some(msg.clone()),
        _ => None,
    });
    assert_eq!(m.unwrap().author(), sim.peer_id(a));
}

#[test]
fn rooms_are_separate_and_membership_is_announced() {
    let mut sim = line_of_three();
    let (a, b, c) = (0, 1, 2);
    for n in [a, b, c] {
        sim.with(n, |node, now| node.join("rust", now)).unwrap();
    }
    sim.with(c, |node, now| node.join("carol-only", now))
        .unwrap();
    sim.run_for(SEC);
    assert!(sim.node(b).members("rust").contains(&sim.peer_id(a)));
    sim.send(a, "rust", "in rust");
    sim.send(c, "carol-only", "secret");
    sim.run_for(SEC);
    assert_eq!(sim.texts(c, "rust"), vec!["in rust"]);
    assert!(
        sim.texts(b, "carol-only").is_empty(),
        "b is not in that room"
    );
    assert!(sim.texts(a, "general").is_empty());
    // Leaving stops delivery.
    sim.with(b, |node, now| node.leave("rust", now)).unwrap();
    sim.run_for(SEC);
    assert!(!sim.node(a).members("rust").contains(&sim.peer_id(b)));
    sim.send(a, "rust", "after leave");
    sim.run_for(SEC);
    assert_eq!(
        sim.texts(c, "rust"),
        vec!["in rust"],
        "b no longer relays rust"
    );
    let err = sim.with(b, |n, now| {
        n.send("rust", "x", std::time::SystemTime::now(), now)
    });
    assert!(matches!(err, Err(echo_proto::CommandError::NotInRoom(_))));
}

#[test]
fn direct_messages_reach_only_the_peer() {
    let mut sim = line_of_three();
    let (a, b, c) = (0, 1, 2);
    let pb = sim.peer_id(b);
    sim.with(a, |n, now| {
        n.send_direct(&pb, "psst", std::time::SystemTime::now(), now)
    })
    .unwrap();
    sim.run_for(SEC);
    let got: Vec<_> = sim
        .sim_node(b)
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Direct { text, name, .. } => Some((name.clone(), text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![("alice".to_string(), "psst".to_string())]);
    assert!(!sim
        .sim_node(c)
        .events
        .iter()
        .any(|e| matches!(e, Event::Direct { .. })));
    let pc = sim.peer_id(c);
    let err = sim.with(a, |n, now| {
        n.send_direct(&pc, "no", std::time::SystemTime::now(), now)
    });
    assert_eq!(err, Err(echo_proto::CommandError::PeerNotConnected(pc)));
}

#[test]
fn name_change_is_seen_by_peers_and_in_messages() {
    let mut sim = line_of_three();
    let (a, b, c) = (0, 1, 2);
    sim.with(a, |n, now| n.set_name("alicia", now)).unwrap();
    sim.send(a, "general", "new name");
    sim.run_for(SEC);
    assert!(sim.sim_node(b).events.iter().any(|e| matches!(e,
        Event::NameChanged { old, new, .. } if old == "alice" && new == "alicia")));
    let m = sim.sim_node(c).events.iter().find_map(|e| match e {
        Event::Message { msg, .. } => Some(msg.clone()),
        _ => None,
    });
    assert!(m.unwrap().display_author().starts_with("alicia#"));
    let err = sim.with(a, |n, now| n.set_name(&"x".repeat(65), now));
    assert!(matches!(err, Err(echo_proto::CommandError::InvalidName(_))));
}

/// Both sides dial each other at the same instant, many times over with different seeds
/// and latencies: exactly one connection survives on both sides, and messages sent
/// during the race are neither lost nor duplicated.
#[test]
fn simultaneous_dial_keeps_one_connection_and_loses_nothing() {
    for seed in 0..60u64 {
        let mut sim = Sim::new(seed);
        sim.latency = Duration::from_micros(200 + seed * 37);
        sim.jitter = Duration::from_micros(seed * 11 % 300);
        sim.max_chunk = 1 + (seed as usize % 50);
        let a = sim.add_named("a");
        let b = sim.add_named("b");
        sim.connect(a, b);
        sim.connect(b, a);
        // Send while the handshakes are racing, and after.
        let mut sent = 0;
        for k in 0..20u64 {
            sim.run_for(Duration::from_micros(90 * (k % 5)));
            if sim.is_connected(a, b) {
                sim.send(a, "general", &format!("a{k}"));
                sent += 1;
            }
            if sim.is_connected(b, a) {
                sim.send(b, "general", &format!("b{k}"));
            }
        }
        sim.run_for(10 * SEC);
        let (pa, pb) = (sim.peer_id(a), sim.peer_id(b));
        assert_eq!(sim.node(a).connection_count(&pb), 1, "seed {seed}");
        assert_eq!(sim.node(b).connection_count(&pa), 1, "seed {seed}");
        assert!(
            sim.is_connected(a, b) && sim.is_connected(b, a),
            "seed {seed}"
        );
        let got = sim
            .texts(b, "general")
            .iter()
            .filter(|t| t.starts_with('a'))
            .count();
        assert_eq!(
            got, sent,
            "seed {seed}: every message a sent while connected arrives once"
        );
        assert_eq!(sim.log(a, "general"), sim.log(b, "general"), "seed {seed}");
        // Peer up was reported once on each side.
        let ups = sim
            .sim_node(a)
            .events
            .iter()
            .filter(|e| matches!(e, Event::PeerUp(_)))
            .count();
        assert_eq!(ups, 1, "seed {seed}");
    }
}

#[test]
fn dropped_peer_is_reported_down_and_redialed_with_backoff() {
    let mut sim = Sim::new(3);
    let a = sim.add_named("a");
    let b = sim.add_named("b");
    sim.connect(a, b);
    assert!(sim.run_until(SEC, |s| s.is_connected(a, b)));
    sim.crash(b);
    assert!(sim.run_until(SEC, |s| !s.is_connected(a, b)));
    assert!(sim
        .sim_node(a)
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerDown { .. })));
    // While b is down, a keeps trying with growing delays.
    sim.run_for(20 * SEC);
    let fails = sim
        .sim_node(a)
        .events
        .iter()
        .filter(|e| matches!(e, Event::DialFailed { .. }))
        .count();
    assert!(
        (3..=8).contains(&fails),
        "backoff: {fails} failed dials in 20 s"
    );
    sim.restart(b);
    assert!(
        sim.run_until(120 * SEC, |s| s.is_connected(a, b)),
        "redialed after restart"
    );
    sim.send(b, "general", "back");
    assert!(sim.run_until(SEC, |s| s.texts(a, "general").contains(&"back".to_string())));
}

#[test]
fn rtt_is_measured_as_soon_as_a_connection_opens() {
    let mut sim = Sim::new(5);
    let a = sim.add_named("a");
    let b = sim.add_named("b");
    sim.connect(a, b);
    assert!(sim.run_until(SEC, |s| s.is_connected(a, b)));
    // Within a second of opening (the ping interval is 10 s), both sides know the RTT.
    let rtt_known = |s: &Sim, i| {
        s.sim_node(i)
            .events
            .iter()
            .any(|e| matches!(e, Event::PeerRtt { .. }))
    };
    assert!(sim.run_until(SEC, |s| rtt_known(s, a) && rtt_known(s, b)));
    // One ping each way, not a ping per timer tick.
    let pings = |s: &Sim, i| {
        s.sim_node(i)
            .events
            .iter()
            .filter(|e| matches!(e, Event::PeerRtt { .. }))
            .count()
    };
    assert_eq!((pings(&sim, a), pings(&sim, b)), (1, 1));
}

#[test]
fn silent_peer_is_closed_after_idle_timeout() {
    let mut sim = Sim::new(4);
    let a = sim.add_named("a");
    let b = sim.add_named("b");
    sim.connect(a, b);
    assert!(sim.run_until(SEC, |s| s.is_connected(a, b)));
    // Pings keep an idle but healthy connection alive and measure RTT.
    sim.run_for(60 * SEC);
    assert!(sim.is_connected(a, b));
    assert!(sim
        .sim_node(a)
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerRtt { rtt, .. } if *rtt >= Duration::from_millis(2))));
    // Now b's packets vanish: a closes after the idle timeout.
    sim.partition(a, b);
    let t0 = sim.elapsed();
    assert!(sim.run_until(60 * SEC, |s| !s.is_connected(a, b)));
    let took = sim.elapsed() - t0;
    assert!(
        took >= Duration::from_secs(20) && took <= Duration::from_secs(31),
        "{took:?}"
    );
    let reason = sim.sim_node(a).events.iter().find_map(|e| match e {
        Event::PeerDown { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    let reason = reason.unwrap();
    assert!(reason.to_string().contains("no answer"), "{reason}");
    assert_eq!(reason.code(), Some(echo_proto::GoodbyeCode::Idle));
}

#[test]
fn peer_exchange_meets_the_rest_of_the_group() {
    let mut sim = Sim::new(5);
    let n: Vec<_> = (0..5).map(|i| sim.add_named(&format!("n{i}"))).collect();
    // Everyone knows only node 0.
    for &i in &n[1..] {
        sim.connect(i, n[0]);
    }
    assert!(sim.run_until(30 * SEC, |s| {
        n.iter()
            .all(|&i| n.iter().all(|&j| i == j || s.is_connected(i, j)))
    }));
    for &i in &n {
        for &j in &n {
            if i != j {
                assert_eq!(sim.node(i).connection_count(&sim.peer_id(j)), 1);
            }
        }
    }
    sim.send(n[3], "general", "to all");
    sim.run_for(SEC);
    for &i in &n {
        assert_eq!(sim.texts(i, "general"), vec!["to all"]);
    }
}

#[test]
fn legacy_peer_joins_default_room() {
    let mut sim = Sim::new(6);
    let a = sim.add_named("alice");
    let b = sim.add_named("bob");
    sim.connect(a, b);
    assert!(sim.run_until(SEC, |s| s.is_connected(a, b)));
    let go = keypair(99);
    let h = sim.open_raw(a, &go, Protocol::Legacy);
    sim.raw_send(h, b"gopher|hello from go|with a bar\n");
    let m = sim.sim_node(a).events.iter().find_map(|e| match e {
        Event::Message { msg, position } => Some((msg.clone(), *position)),
        _ => None,
    });
    let (m, pos) = m.expect("legacy line delivered");
    assert_eq!(m.text(), "hello from go|with a bar");
    assert_eq!(m.name(), "gopher");
    assert!(!m.verified());
    assert!(pos.is_none(), "legacy lines are not in the agreed log");
    // Legacy lines are not relayed into the signed network.
    sim.run_for(SEC);
    assert!(sim.texts(b, "general").is_empty());
    // Default-room messages (own and relayed) go to the legacy peer as lines.
    sim.send(a, "general", "hi go");
    sim.send(b, "general", "two\nlines");
    sim.with(a, |n, now| n.join("other", now)).unwrap();
    sim.send(a, "other", "not for go");
    sim.run_for(SEC);
    let out = String::from_utf8(sim.raw_received(h).to_vec()).unwrap();
    assert_eq!(out, "alice|hi go\nbob|two\nbob|lines\n");
    // No direct messages to legacy peers.
    let err = sim.with(a, |n, now| {
        n.send_direct(
            &go.public().to_peer_id(),
            "x",
            std::time::SystemTime::now(),
            now,
        )
    });
    assert!(matches!(err, Err(echo_proto::CommandError::LegacyPeer(_))));
}

#[test]
fn shutdown_says_goodbye() {
    let mut sim = Sim::new(8);
    let a = sim.add_named("a");
    let b = sim.add_named("b");
    sim.connect(a, b);
    assert!(sim.run_until(SEC, |s| s.is_connected(a, b)));
    sim.with(a, |n, now| n.shutdown(now));
    assert!(sim.run_until(SEC, |s| !s.is_connected(b, a)));
    let reason = sim.sim_node(b).events.iter().find_map(|e| match e {
        Event::PeerDown { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    let reason = reason.unwrap();
    assert_eq!(reason.to_string(), "peer said goodbye: node shutting down");
    assert_eq!(reason.code(), Some(echo_proto::GoodbyeCode::Shutdown));
    assert!(sim.with(a, |n, now| n.join("x", now)).is_err());
    // A peer that left on purpose is not hammered with redials.
    sim.run_for(7 * SEC);
    let redials = sim
        .sim_node(b)
        .events
        .iter()
        .filter(|e| matches!(e, Event::DialFailed { .. }))
        .count();
    assert_eq!(
        redials, 0,
        "first redial after a goodbye waits at least 8 s"
    );
}

#[test]
fn reordered_chunks_and_jitter_still_converge() {
    let mut sim = Sim::new(9);
    sim.jitter = Duration::from_millis(5);
    sim.max_chunk = 3;
    let n: Vec<_> = (0..4).map(|i| sim.add_named(&format!("n{i}"))).collect();
    for &i in &n[1..] {
        sim.connect(i, n[0]);
    }
    assert!(sim.run_until(30 * SEC, |s| n
        .iter()
        .all(|&i| s.node(i).peers().len() == 3)));
    for k in 0..30 {
        sim.send(n[k % 4], "general", &format!("m{k}"));
        sim.run_for(Duration::from_millis(k as u64 % 3));
    }
    sim.run_for(5 * SEC);
    let l0 = sim.log(n[0], "general");
    assert_eq!(l0.len(), 30);
    for &i in &n {
        assert_eq!(sim.log(i, "general"), l0);
        assert_eq!(sim.texts(i, "general").len(), 30, "each delivered once");
    }
}
