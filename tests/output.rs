//! The one output queue: `Node::poll_output` hands out a connection's final bytes
//! (its goodbye) before the `Close` of that connection, whatever else is queued.

use std::time::{Instant, SystemTime};

use echo_proto::{
    Action, CloseReason, Config, ConnId, ConnInfo, Event, GoodbyeCode, Identity, Node, Output,
    Protocol, Role,
};

fn info(peer: echo_proto::PeerId, role: Role) -> ConnInfo {
    ConnInfo {
        peer,
        role,
        remote_addr: "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
        protocol: Protocol::Chat,
        dial: None,
        link: echo_proto::Link::Direct,
    }
}

/// Moves `from`'s transmits to `to` until `from` waits; returns its other outputs.
fn pump(from: &mut Node, to: &mut Node, now: Instant) -> Vec<Output> {
    let mut rest = Vec::new();
    loop {
        match from.poll_output() {
            Output::Transmit(t) => {
                from.handle_sent(t.conn, t.data.len());
                to.handle_data(t.conn, &t.data, now);
            }
            Output::Wait(_) => return rest,
            o => rest.push(o),
        }
    }
}

fn events(n: &mut Node) -> Vec<Event> {
    let mut evs = Vec::new();
    loop {
        match n.poll_output() {
            Output::Event(e) => evs.push(e),
            Output::Wait(_) => return evs,
            _ => {}
        }
    }
}

fn pair(config: Config, now: Instant) -> (Node, Node) {
    let (ka, kb) = (
        Identity::from_secret_bytes([1; 32]),
        Identity::from_secret_bytes([2; 32]),
    );
    let (ida, idb) = (ka.peer_id(), kb.peer_id());
    let mut a = Node::new(ka, config.clone().name("a"), 1, now);
    let mut b = Node::new(kb, config.name("b"), 2, now);
    a.handle_connected(ConnId(1), info(idb, Role::Dialer), now);
    b.handle_connected(ConnId(1), info(ida, Role::Listener), now);
    for _ in 0..4 {
        pump(&mut a, &mut b, now);
        pump(&mut b, &mut a, now);
    }
    assert_eq!(a.peers().len(), 1, "handshake done");
    events(&mut b);
    (a, b)
}

/// Drains `a`, delivering transmits to `b` in order, and checks that when `a` hands out
/// the `Close` of the connection, `b` has already received the goodbye.
fn close_after_goodbye(a: &mut Node, b: &mut Node, now: Instant, code: GoodbyeCode) {
    let mut seen_close = false;
    let mut b_events = Vec::new();
    loop {
        match a.poll_output() {
            Output::Transmit(t) => {
                assert!(
                    !seen_close,
                    "bytes handed out after their connection's Close"
                );
                a.handle_sent(t.conn, t.data.len());
                b.handle_data(t.conn, &t.data, now);
                b_events.extend(events(b));
            }
            Output::Action(Action::Close { conn, reason }) => {
                assert_eq!(conn, ConnId(1));
                assert_eq!(reason.code(), Some(code), "{reason}");
                assert!(matches!(reason, CloseReason::Local { .. }), "{reason:?}");
                let down = b_events.iter().find_map(|e| match e {
                    Event::PeerDown { reason, .. } => Some(reason.clone()),
                    _ => None,
                });
                let down = down.expect("the goodbye reached b before a's Close");
                assert_eq!(down.code(), Some(code), "{down}");
                assert!(matches!(down, CloseReason::Remote { .. }), "{down:?}");
                seen_close = true;
            }
            Output::Wait(_) => break,
            _ => {}
        }
    }
    assert!(seen_close, "a closed the connection");
    // Waiting is stable: nothing more until the next input.
    assert!(matches!(a.poll_output(), Output::Wait(_)));
}

/// Messages queued and not yet handed out, then a shutdown: the messages and the
/// goodbye are all handed out before the `Close`.
#[test]
fn shutdown_goodbye_is_handed_out_before_close() {
    let now = Instant::now();
    let (mut a, mut b) = pair(Config::default(), now);
    for i in 0..50 {
        a.send("general", &format!("m{i}"), SystemTime::now(), now)
            .unwrap();
    }
    a.shutdown(now);
    close_after_goodbye(&mut a, &mut b, now, GoodbyeCode::Shutdown);
    assert_eq!(b.room_log("general").unwrap().count(), 50);
}

/// A peer that does not read: sealing a burst overflows its queue, so the node drops
/// what was queued and closes with a goodbye (urgent final bytes); the goodbye still
/// comes before the `Close`.
#[test]
fn not_reading_goodbye_is_handed_out_before_close() {
    let now = Instant::now();
    let (mut a, mut b) = pair(Config::default().max_queued_bytes(4096), now);
    for _ in 0..50 {
        a.send("general", &"x".repeat(400), SystemTime::now(), now)
            .unwrap();
    }
    close_after_goodbye(&mut a, &mut b, now, GoodbyeCode::ProtocolViolation);
    assert_eq!(a.stats().misbehaved, 1);
}

/// Timers are re-indexed lazily (when the node waits, and first thing in
/// `handle_timeout`): a gap timer armed by `handle_data` fires on the next
/// `handle_timeout` even if the node was not drained in between.
#[test]
fn a_timer_armed_by_received_data_fires_without_a_drain_in_between() {
    let now = Instant::now();
    let config = Config::default().sign_every(1);
    let (mut a, mut b) = pair(config.clone(), now);
    // Three messages from `a`, each signed and handed out on its own.
    let mut frames = Vec::new();
    for i in 0..3 {
        a.send("general", &format!("m{i}"), SystemTime::now(), now)
            .unwrap();
        let mut bytes = Vec::new();
        loop {
            match a.poll_output() {
                Output::Transmit(t) => {
                    a.handle_sent(t.conn, t.data.len());
                    bytes.extend_from_slice(&t.data);
                }
                Output::Wait(_) => break,
                _ => {}
            }
        }
        frames.push(bytes);
    }
    b.handle_data(ConnId(1), &frames[0], now);
    events(&mut b);
    // m2 before m1: a gap, with its timer armed while `b` is not drained.
    b.handle_data(ConnId(1), &frames[2], now);
    let asked = b.stats().repair_requests;
    b.handle_timeout(now + config.gap_timeout);
    assert!(
        b.stats().repair_requests > asked,
        "the gap timer fired: {} -> {}",
        asked,
        b.stats().repair_requests
    );
}

/// What `n` hands out until it waits, in order, transmits written at once.
fn outputs(n: &mut Node) -> Vec<Output> {
    let mut out = Vec::new();
    loop {
        match n.poll_output() {
            Output::Wait(_) => return out,
            Output::Transmit(t) => {
                n.handle_sent(t.conn, t.data.len());
                out.push(Output::Transmit(t));
            }
            o => out.push(o),
        }
    }
}

/// A message from its author directly is handed out, then `Yield` (once), then what its
/// signature check relays; a node that checks first never yields.
#[test]
fn yield_comes_between_a_message_delivered_first_and_its_check() {
    for deliver_first in [true, false] {
        let now = Instant::now();
        let config = Config::default().deliver_before_verify(deliver_first);
        let ids = [[1; 32], [2; 32], [3; 32]].map(Identity::from_secret_bytes);
        let peers: Vec<_> = ids.iter().map(|k| k.peer_id()).collect();
        let mut n: Vec<Node> = ids
            .into_iter()
            .enumerate()
            .map(|(i, k)| Node::new(k, config.clone().name(format!("n{i}")), i as u64, now))
            .collect();
        // Connection 1 joins nodes 0 and 1, connection 2 nodes 1 and 2.
        let ends = [(0, 1, 1), (1, 2, 2)];
        for (x, y, c) in ends {
            n[x].handle_connected(ConnId(c), info(peers[y], Role::Dialer), now);
            n[y].handle_connected(ConnId(c), info(peers[x], Role::Listener), now);
        }
        let route = |from: usize, conn: ConnId| {
            let (x, y, _) = ends[conn.0 as usize - 1];
            if from == x {
                y
            } else {
                x
            }
        };
        for _ in 0..8 {
            for i in 0..3 {
                for o in outputs(&mut n[i]) {
                    if let Output::Transmit(t) = o {
                        n[route(i, t.conn)].handle_data(t.conn, &t.data, now);
                    }
                }
            }
        }
        n[0].send("general", "hi", SystemTime::now(), now).unwrap();
        for o in outputs(&mut n[0]) {
            if let Output::Transmit(t) = o {
                n[1].handle_data(t.conn, &t.data, now);
            }
        }
        let out = outputs(&mut n[1]);
        let at = |f: &dyn Fn(&Output) -> bool| out.iter().position(f);
        let event =
            at(&|o| matches!(o, Output::Event(Event::Message { msg, .. }) if msg.text() == "hi"))
                .expect("delivered");
        let relay = at(&|o| matches!(o, Output::Transmit(t) if t.conn == ConnId(2)))
            .expect("relayed to node 2");
        let yields: Vec<usize> = (0..out.len())
            .filter(|&i| matches!(out[i], Output::Yield))
            .collect();
        if deliver_first {
            assert_eq!(yields.len(), 1, "{out:?}");
            assert!(event < yields[0] && yields[0] < relay, "{out:?}");
        } else {
            assert!(yields.is_empty(), "{out:?}");
            assert!(relay < event, "{out:?}");
        }
    }
}
