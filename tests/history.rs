//! History that converges, proven in the deterministic simulator: late joiners,
//! partitions, loss and duplication, crashes and restarts, retention, profiles, gap
//! repair, and a property over random scenarios. A failing check names its seed.

use std::time::Duration;

use echo_proto::sim::{NodeIdx, Sim};
use echo_proto::{Config, Event, Output};
use quickcheck::{quickcheck, Arbitrary, Gen, TestResult};

const SEC: Duration = Duration::from_secs(1);
const ROOM: &str = "general";

fn ok(r: Result<(), String>) {
    if let Err(e) = r {
        panic!("{e}");
    }
}

fn connect_all_to(sim: &mut Sim, hub: NodeIdx, others: &[NodeIdx]) {
    for &o in others {
        sim.connect(o, hub);
    }
}

fn quiesce(sim: &mut Sim, secs: u64) {
    // Long enough for repair (3 × gap timeout) and a few summary rounds.
    sim.run_for(Duration::from_secs(secs));
}

#[test]
fn late_joiner_gets_full_history_in_the_same_order() {
    let mut sim = Sim::new(21);
    let n: Vec<_> = (0..3).map(|i| sim.add_named(&format!("n{i}"))).collect();
    connect_all_to(&mut sim, n[0], &n[1..]);
    assert!(sim.run_until(5 * SEC, |s| s.is_connected(n[1], n[0])
        && s.is_connected(n[2], n[0])));
    for k in 0..150 {
        sim.send(n[k % 3], ROOM, &format!("m{k}"));
        if k % 7 == 0 {
            sim.run_for(Duration::from_millis(3));
        }
    }
    quiesce(&mut sim, 5);
    let late = sim.add_named("late");
    sim.connect(late, n[2]);
    assert!(sim.run_until(30 * SEC, |s| s.log(late, ROOM).len() == 150));
    ok(sim.check_all(ROOM));
    assert_eq!(sim.log(late, ROOM), sim.log(n[0], ROOM));
    assert!(sim.node(n[2]).stats().history_sent >= 150);
}

#[test]
fn partition_six_four_both_sides_chat_then_heal_converges() {
    let mut sim = Sim::new(22);
    sim.latency = Duration::from_millis(3);
    sim.jitter = Duration::from_millis(2);
    let n: Vec<_> = (0..10).map(|i| sim.add_named(&format!("n{i}"))).collect();
    // A ring plus chords: connected, not a full mesh.
    for i in 0..10 {
        sim.connect(n[i], n[(i + 1) % 10]);
    }
    assert!(sim.run_until(30 * SEC, |s| (0..10).all(|i| s.node(i).peers().len() >= 2)));
    let (a, b) = n.split_at(6);
    for &x in a {
        for &y in b {
            sim.partition(x, y);
        }
    }
    // Both sides notice (idle timeout) and keep chatting among themselves.
    quiesce(&mut sim, 40);
    for k in 0..60 {
        let who = if k % 2 == 0 { a[k % 6] } else { b[k % 4] };
        sim.send(who, ROOM, &format!("p{k}"));
        sim.run_for(Duration::from_millis(20));
    }
    quiesce(&mut sim, 5);
    assert_ne!(
        sim.log(a[0], ROOM),
        sim.log(b[0], ROOM),
        "sides diverged while split"
    );
    for &x in a {
        for &y in b {
            sim.heal(x, y);
        }
    }
    // Redial backoff may be up to a minute by now.
    assert!(sim.run_until(180 * SEC, |s| s.check_converged(ROOM).is_ok()
        && s.log(0, ROOM).len() == 60));
    ok(sim.check_all(ROOM));
}

#[test]
fn twenty_percent_loss_and_duplication_converge() {
    let mut sim = Sim::new(23);
    sim.loss = 0.2;
    sim.duplicate = 0.2;
    sim.reorder = 0.1;
    sim.max_chunk = 40;
    let n: Vec<_> = (0..5).map(|i| sim.add_named(&format!("n{i}"))).collect();
    connect_all_to(&mut sim, n[0], &n[1..]);
    assert!(sim.run_until(30 * SEC, |s| (1..5).all(|i| s.is_connected(i, 0))));
    for k in 0..200 {
        sim.send(n[k % 5], ROOM, &format!("l{k}"));
        sim.run_for(Duration::from_millis(k as u64 % 4));
    }
    assert!(sim.run_until(120 * SEC, |s| (0..5).all(|i| s.log(i, ROOM).len() == 200)));
    ok(sim.check_all(ROOM));
}

#[test]
fn gaps_are_repaired_by_request_before_anything_is_skipped() {
    // Two nodes, one path, 30% of message frames lost: every gap must be filled by a
    // targeted request well before the periodic summary, and none skipped.
    let mut sim = Sim::new(31);
    sim.loss = 0.3;
    let a = sim.add_named("a");
    let b = sim.add_node(
        Config::default()
            .name("b")
            .sync_interval(Duration::from_secs(3600)),
    );
    sim.connect(b, a);
    assert!(sim.run_until(5 * SEC, |s| s.is_connected(a, b)));
    for k in 0..100 {
        sim.send(a, ROOM, &format!("g{k}"));
        sim.run_for(Duration::from_millis(5));
    }
    assert!(sim.run_until(60 * SEC, |s| s.log(b, ROOM).len() == 100));
    assert!(sim.node(b).stats().repair_requests > 0);
    assert!(!sim
        .sim_node(b)
        .events
        .iter()
        .any(|e| matches!(e, Event::Gap { .. })));
    ok(sim.check_all(ROOM));
}

#[test]
fn crash_and_restart_from_persisted_state_never_reuses_sequence_numbers() {
    for lost in [0usize, 3] {
        let mut sim = Sim::new(24 + lost as u64);
        let n: Vec<_> = (0..3).map(|i| sim.add_named(&format!("n{i}"))).collect();
        connect_all_to(&mut sim, n[0], &n[1..]);
        assert!(sim.run_until(10 * SEC, |s| (1..3).all(|i| s.is_connected(i, 0))));
        for k in 0..40 {
            sim.send(n[k % 3], ROOM, &format!("before{k}"));
        }
        quiesce(&mut sim, 2);
        // n1 crashes; its app lost the newest `lost` message writes.
        sim.crash_losing(n[1], lost);
        quiesce(&mut sim, 5);
        sim.restart(n[1]);
        assert!(sim.run_until(120 * SEC, |s| s.is_connected(n[1], n[0])));
        for k in 0..30 {
            sim.send(n[1], ROOM, &format!("after{k}"));
            sim.send(n[2], ROOM, &format!("other{k}"));
        }
        quiesce(&mut sim, 10);
        ok(sim.check_converged(ROOM));
        ok(sim.check_delivery());
        // Every message n1 sent after the restart reached everyone: none was taken for
        // a duplicate of an old sequence number.
        for i in 0..3 {
            let log = sim.log(i, ROOM);
            for k in 0..30 {
                assert!(
                    log.contains(&format!("after{k}")),
                    "lost={lost} node {i} after{k}"
                );
            }
            assert_eq!(log.len(), 40 + 60, "lost={lost} node {i}");
        }
        // Restarting did not re-deliver history it had persisted.
        let after_restart = &sim.sim_node(n[1]).events[sim.sim_node(n[1]).restarts[0]..];
        let redelivered = after_restart
            .iter()
            .filter(|e| matches!(e, Event::Message { msg, .. } if msg.text().starts_with("before")))
            .count();
        assert_eq!(redelivered, lost, "only what the disk lost comes back");
    }
}

#[test]
fn relay_crash_reforms_the_line_via_peer_exchange() {
    let mut sim = Sim::new(25);
    let cfg = |name: &str| Config::default().name(name).target_peers(1);
    let a = sim.add_node(cfg("a"));
    let b = sim.add_node(cfg("b"));
    let c = sim.add_node(cfg("c"));
    sim.connect(a, b);
    sim.connect(c, b);
    assert!(sim.run_until(10 * SEC, |s| s.is_connected(a, b) && s.is_connected(c, b)));
    quiesce(&mut sim, 3);
    assert!(!sim.is_connected(a, c), "a line while b is up");
    sim.send(a, ROOM, "via b");
    quiesce(&mut sim, 1);
    assert_eq!(sim.log(c, ROOM), vec!["via b"]);
    sim.crash(b);
    assert!(
        sim.run_until(30 * SEC, |s| s.is_connected(a, c)),
        "a and c met directly"
    );
    sim.send(c, ROOM, "direct");
    quiesce(&mut sim, 1);
    assert_eq!(sim.log(a, ROOM), vec!["via b", "direct"]);
}

#[test]
fn retention_caps_logs_and_never_ping_pongs() {
    let mut sim = Sim::new(26);
    let small = |name: &str| Config::default().name(name).max_log_messages(50);
    let big = sim.add_named("big");
    let s1 = sim.add_node(small("s1"));
    sim.connect(s1, big);
    assert!(sim.run_until(5 * SEC, |s| s.is_connected(s1, big)));
    for k in 0..120 {
        sim.send(if k % 2 == 0 { big } else { s1 }, ROOM, &format!("r{k}"));
    }
    quiesce(&mut sim, 3);
    assert_eq!(sim.log(big, ROOM).len(), 120);
    assert_eq!(sim.log(s1, ROOM).len(), 50);
    // A late joiner with small retention gets the newest 50, and summaries do not make
    // anyone resend what fell off.
    let late = sim.add_node(small("late"));
    sim.connect(late, big);
    assert!(sim.run_until(20 * SEC, |s| s.log(late, ROOM).len() == 50));
    assert_eq!(sim.log(late, ROOM), sim.log(s1, ROOM));
    quiesce(&mut sim, 5);
    let sent: u64 = (0..3).map(|i| sim.node(i).stats().history_sent).sum();
    quiesce(&mut sim, 60);
    let sent_later: u64 = (0..3).map(|i| sim.node(i).stats().history_sent).sum();
    assert_eq!(
        sent, sent_later,
        "no history resent over six summary rounds"
    );
}

#[test]
fn late_joiner_knows_names_of_authors_who_are_gone() {
    let mut sim = Sim::new(27);
    let a = sim.add_named("alice");
    let b = sim.add_named("bob");
    sim.connect(a, b);
    assert!(sim.run_until(5 * SEC, |s| s.is_connected(a, b)));
    sim.with(a, |n, now| n.set_name("alice2", now)).unwrap();
    sim.send(a, ROOM, "hi");
    quiesce(&mut sim, 2);
    sim.crash(a);
    let late = sim.add_named("late");
    sim.connect(late, b);
    assert!(sim.run_until(10 * SEC, |s| s.log(late, ROOM).len() == 1));
    let pa = sim.peer_id(a);
    assert_eq!(sim.node(late).name_of(&pa), Some("alice2"));
}

#[test]
fn history_does_not_delay_live_messages_much() {
    // A joiner pulls a 5,000-message backlog while a live conversation goes on: live
    // messages are interleaved with the backlog, not queued behind all of it.
    let mut sim = Sim::new(28);
    sim.bandwidth = Some(1_000_000);
    let a = sim.add_named("a");
    let b = sim.add_named("b");
    sim.connect(b, a);
    assert!(sim.run_until(5 * SEC, |s| s.is_connected(a, b)));
    for k in 0..5000 {
        sim.send(a, ROOM, &format!("old{k}"));
    }
    quiesce(&mut sim, 2);
    let late = sim.add_named("late");
    sim.connect(late, a);
    assert!(sim.run_until(5 * SEC, |s| s.is_connected(late, a)));
    sim.send(b, ROOM, "live");
    assert!(sim.run_until(60 * SEC, |s| s
        .texts(late, ROOM)
        .iter()
        .any(|t| t == "live")));
    let pos = sim
        .texts(late, ROOM)
        .iter()
        .position(|t| t == "live")
        .unwrap();
    assert!(
        pos < 1000,
        "live message delivered after {pos} history messages"
    );
    assert!(sim.run_until(60 * SEC, |s| s.log(late, ROOM).len() == 5001));
    ok(sim.check_all(ROOM));
}

#[derive(Debug, Clone)]
struct Scenario {
    seed: u64,
    nodes: usize,
    extra_links: Vec<(usize, usize)>,
    loss: u8,
    dup: u8,
    sends: Vec<(usize, u8)>,
    crash: Option<(usize, u8)>,
    late: bool,
}

impl Arbitrary for Scenario {
    fn arbitrary(g: &mut Gen) -> Self {
        let nodes = 2 + usize::arbitrary(g) % 5;
        Scenario {
            seed: u64::arbitrary(g),
            nodes,
            extra_links: (0..usize::arbitrary(g) % 4)
                .map(|_| (usize::arbitrary(g) % nodes, usize::arbitrary(g) % nodes))
                .collect(),
            loss: u8::arbitrary(g) % 25,
            dup: u8::arbitrary(g) % 25,
            sends: (0..usize::arbitrary(g) % 40)
                .map(|_| (usize::arbitrary(g) % nodes, u8::arbitrary(g)))
                .collect(),
            crash: bool::arbitrary(g).then(|| (usize::arbitrary(g) % nodes, u8::arbitrary(g))),
            late: bool::arbitrary(g),
        }
    }
}

fn run_scenario(sc: Scenario) -> TestResult {
    let sc2 = sc.clone();
    let sc = sc2;
    let mut sim = Sim::new(sc.seed);
    sim.loss = sc.loss as f64 / 100.0;
    sim.duplicate = sc.dup as f64 / 100.0;
    sim.reorder = 0.05;
    sim.jitter = Duration::from_millis(2);
    let n: Vec<_> = (0..sc.nodes)
        .map(|i| sim.add_named(&format!("q{i}")))
        .collect();
    // A random spanning tree keeps the graph connected; extra links add cycles.
    for i in 1..sc.nodes {
        let parent = (sc.seed as usize).wrapping_add(i * 7) % i;
        sim.connect(n[i], n[parent]);
    }
    for &(x, y) in &sc.extra_links {
        if x != y {
            sim.connect(n[x], n[y]);
        }
    }
    sim.run_for(3 * SEC);
    for (k, &(who, gap)) in sc.sends.iter().enumerate() {
        if let Some((c, at)) = sc.crash {
            if k == at as usize % (sc.sends.len() + 1) {
                sim.crash(n[c]);
                sim.run_for(SEC);
                sim.restart(n[c]);
            }
        }
        if sim.sim_node(n[who]).node.is_some() {
            sim.send(n[who], ROOM, &format!("s{k}"));
        }
        sim.run_for(Duration::from_millis(gap as u64 % 50));
    }
    if sc.late {
        let l = sim.add_named("late");
        sim.connect(l, n[0]);
    }
    sim.run_for(Duration::from_secs(90));
    if std::env::var("ECHO_DEBUG").is_ok() {
        for (i, sn) in (0..sim.len()).map(|i| (i, sim.sim_node(i))) {
            for e in &sn.events {
                match e {
                    Event::Message { msg, position } => {
                        eprintln!(
                            "node {i}: {}#{} {:?}",
                            &msg.author().to_base58()[48..],
                            msg.seq(),
                            position
                        )
                    }
                    Event::Gap {
                        author, missing, ..
                    } => {
                        eprintln!("node {i}: GAP {} {missing:?}", &author.to_base58()[48..])
                    }
                    _ => {}
                }
            }
        }
    }
    match sim.check_all(ROOM) {
        Ok(()) => TestResult::passed(),
        Err(e) => TestResult::error(format!("{e}\nscenario: {sc:?}")),
    }
}

quickcheck! {
    fn random_scenarios_converge(sc: Scenario) -> TestResult {
        run_scenario(sc)
    }
}

/// Scenarios the property once found failing, kept as regressions.
#[test]
fn regression_scenarios() {
    let cases = [Scenario {
        seed: 16955859981874751965,
        nodes: 2,
        extra_links: vec![(1, 0)],
        loss: 16,
        dup: 10,
        sends: vec![(1, 157), (1, 65), (1, 97), (0, 0), (0, 132), (1, 0)],
        crash: None,
        late: true,
    }];
    for sc in cases {
        let r = run_scenario(sc.clone());
        assert!(!r.is_failure() && !r.is_error(), "{sc:?}");
    }
}

#[test]
fn export_and_restore_round_trip() {
    let mut sim = Sim::new(29);
    let a = sim.add_named("a");
    let b = sim.add_named("b");
    sim.connect(a, b);
    assert!(sim.run_until(5 * SEC, |s| s.is_connected(a, b)));
    for k in 0..20 {
        sim.send(if k % 2 == 0 { a } else { b }, ROOM, &format!("x{k}"));
    }
    quiesce(&mut sim, 2);
    let state = sim.node(a).export();
    let reserved = state.rooms[0].reserved;
    assert!(reserved > 10, "a reservation covers a's ten messages");
    let key = echo_proto::sim::keypair(a as u64);
    let now = sim.now();
    let mut again = echo_proto::Node::restore(
        echo_proto::sim::identity(&key),
        Config::default(),
        7,
        state,
        now,
    );
    let log: Vec<String> = again
        .room_log(ROOM)
        .unwrap()
        .map(|m| m.text().to_string())
        .collect();
    assert_eq!(log, sim.log(a, ROOM));
    // The restored node continues above its reservation, naming its last message.
    let m = again
        .send(ROOM, "next", std::time::SystemTime::UNIX_EPOCH, now)
        .unwrap();
    assert!(m.seq() >= reserved);
    assert_eq!(m.prev_seq(), 10);
    // It re-announced its reservation before anything was sent.
    let mut reserved_again = false;
    loop {
        match again.poll_output() {
            Output::Event(Event::SeqReserved { upto, .. }) => reserved_again = upto > m.seq(),
            Output::Wait(_) => break,
            _ => {}
        }
    }
    assert!(reserved_again);
}

#[test]
fn leaving_and_rejoining_never_reuses_sequence_numbers() {
    let mut sim = Sim::new(30);
    let a = sim.add_named("a");
    let b = sim.add_named("b");
    sim.connect(a, b);
    assert!(sim.run_until(5 * SEC, |s| s.is_connected(a, b)));
    for k in 0..5 {
        sim.send(a, ROOM, &format!("first{k}"));
    }
    quiesce(&mut sim, 1);
    sim.with(a, |n, now| n.leave(ROOM, now)).unwrap();
    quiesce(&mut sim, 1);
    // Rejoin once in memory, and once more after a restart.
    for round in 0..2 {
        if round == 1 {
            sim.with(a, |n, now| n.leave(ROOM, now)).unwrap();
            quiesce(&mut sim, 1);
            sim.crash(a);
            sim.restart(a);
            assert_eq!(sim.node(a).rooms().count(), 0, "still out of every room");
            assert!(sim.run_until(120 * SEC, |s| s.is_connected(a, b)));
        }
        sim.with(a, |n, now| n.join(ROOM, now)).unwrap();
        let t0 = sim.elapsed();
        sim.send(a, ROOM, &format!("again{round}"));
        assert!(
            sim.run_until(10 * SEC, |s| s
                .texts(b, ROOM)
                .contains(&format!("again{round}"))),
            "round {round}: b accepted the message (no reused number taken for a duplicate)"
        );
        assert!(
            sim.elapsed() - t0 < Duration::from_millis(100),
            "no gap wait"
        );
    }
    quiesce(&mut sim, 3);
    ok(sim.check_converged(ROOM));
    assert_eq!(sim.texts(b, ROOM).len(), 7);
}

#[test]
fn crashes_losing_writes_on_both_sides_still_converge() {
    // Found by fuzz/sim_network: both nodes crash losing their newest writes.
    let mut sim = Sim::new(18446744073692774401);
    sim.jitter = Duration::from_millis(2);
    let a = sim.add_named("f0");
    let b = sim.add_named("f1");
    sim.connect(b, a);
    sim.run_for(2 * SEC);
    sim.send(b, ROOM, "m1");
    sim.send(b, ROOM, "m2");
    sim.crash_losing(a, 1);
    sim.send(b, ROOM, "m3");
    sim.crash_losing(b, 2);
    sim.restart(a);
    sim.restart(b);
    sim.run_for(Duration::from_secs(240));
    if std::env::var("ECHO_DEBUG").is_ok() {
        for i in 0..2 {
            eprintln!(
                "node {i}: log {:?} connected {}",
                sim.log(i, ROOM),
                sim.is_connected(i, 1 - i)
            );
            for e in &sim.sim_node(i).events {
                eprintln!("  {e:?}");
            }
        }
    }
    ok(sim.check_all(ROOM));
}

#[test]
fn late_joiner_whose_only_peer_crashes_catches_up_after_restart() {
    // Found by fuzz/sim_network.
    let mut sim = Sim::new(u64::MAX);
    sim.jitter = Duration::from_millis(2);
    let a = sim.add_named("f0");
    let b = sim.add_named("f1");
    sim.connect(b, a);
    sim.run_for(2 * SEC);
    let late = sim.add_named("late");
    sim.connect(late, b);
    sim.crash(b);
    sim.send(a, ROOM, "m1");
    sim.restart(b);
    sim.run_for(Duration::from_secs(240));
    if std::env::var("ECHO_DEBUG").is_ok() {
        for i in 0..3 {
            eprintln!(
                "node {i}: log {:?} peers {:?}",
                sim.log(i, ROOM),
                sim.node(i)
                    .peers()
                    .iter()
                    .map(|p| p.name.clone())
                    .collect::<Vec<_>>()
            );
            for e in &sim.sim_node(i).events {
                eprintln!("  {e:?}");
            }
        }
    }
    ok(sim.check_all(ROOM));
}

#[test]
fn rejoin_during_partition_with_loss_converges() {
    // Found by fuzz/sim_network (minimised).
    let s = 16212958675766422290u64;
    let mut sim = Sim::new(s);
    sim.jitter = Duration::from_millis(2);
    for i in 0..2 {
        sim.add_named(&format!("f{i}"));
    }
    sim.connect(1, 0);
    sim.run_for(2 * SEC);
    let j = sim.add_named("late");
    sim.connect(j, 0);
    for _ in 0..3 {
        sim.send(0, ROOM, "a");
    }
    let j = sim.add_named("late");
    sim.connect(j, 0);
    let j = sim.add_named("late");
    sim.connect(j, 2);
    sim.send(4, ROOM, "b");
    sim.partition(0, 3);
    sim.send(2, ROOM, "c");
    sim.send(0, ROOM, "d");
    sim.with(0, |n, now| n.leave(ROOM, now)).unwrap();
    sim.with(0, |n, now| n.join(ROOM, now)).unwrap();
    sim.send(4, ROOM, "e");
    sim.send(4, ROOM, "f");
    sim.loss = 0.09;
    sim.duplicate = 0.09;
    sim.reorder = 0.09;
    sim.run_for(Duration::from_millis(7967));
    sim.send(0, ROOM, "g");
    sim.heal(0, 3);
    sim.loss = 0.0;
    sim.duplicate = 0.0;
    sim.reorder = 0.0;
    sim.run_for(Duration::from_secs(240));
    if std::env::var("ECHO_DEBUG").is_ok() {
        for i in 0..sim.len() {
            let log: Vec<String> = sim
                .node(i)
                .room_log(ROOM)
                .map(|l| {
                    l.map(|m| format!("{}:{}#{}", m.text(), &m.author().to_base58()[48..], m.seq()))
                        .collect()
                })
                .unwrap_or_default();
            eprintln!("node {i}: {log:?} stats {:?}", sim.node(i).stats());
        }
    }
    ok(sim.check_all(ROOM));
}
