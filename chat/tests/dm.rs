//! Encrypted direct messages between real `echo-chat --json` processes on 127.0.0.1:
//! carried by a third peer while the recipient is offline, receipts, history that
//! survives restarts, and sequence numbers that survive `kill -9`.

mod common;

use std::cell::RefCell;

use common::Chat;
use serde_json::Value;

fn is(v: &Value, event: &str) -> bool {
    v["event"] == event
}

type Pred<'a> = &'a dyn Fn(&Value) -> bool;

/// Waits until each predicate has matched an event, in any order: every event is
/// checked against all the predicates still open, so none that arrives early is lost.
fn wait_set(c: &mut Chat, what: &str, preds: &[Pred]) -> Vec<Value> {
    let found: RefCell<Vec<Option<Value>>> = RefCell::new(vec![None; preds.len()]);
    c.wait(what, |v| {
        let mut f = found.borrow_mut();
        if let Some(i) = (0..preds.len()).find(|&i| f[i].is_none() && preds[i](v)) {
            f[i] = Some(v.clone());
        }
        f.iter().all(Option::is_some)
    });
    found.into_inner().into_iter().flatten().collect()
}

/// Asks `/state` until `c` carries at least `n` envelopes (bounded).
fn wait_carrying(c: &mut Chat, n: u64) {
    for _ in 0..10_000 {
        c.send("/state");
        let s = c.wait("state", |v| is(v, "state"));
        if s["carrying"].as_u64().unwrap() >= n {
            return;
        }
    }
    panic!("{}: never carried {n} envelopes:\n{}", c.name, c.tail());
}

/// `/state`'s conversation with `peer`.
fn conversation(c: &mut Chat, peer: &str) -> Value {
    c.send("/state");
    let s = c.wait("state", |v| is(v, "state"));
    s["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["peer"] == peer)
        .cloned()
        .unwrap_or_else(|| panic!("{}: no conversation with {peer}: {s}", c.name))
}

/// `/history @peer`: (own, text, status) of each stored message, oldest first.
fn history(c: &mut Chat, peer: &str) -> Vec<(bool, String, String)> {
    c.send(&format!("/history @{peer}"));
    let h = c.wait("direct_history", |v| is(v, "direct_history"));
    assert_eq!(h["peer"], peer);
    h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["own"].as_bool().unwrap(),
                m["text"].as_str().unwrap().to_string(),
                m["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn offline_recipient_gets_dms_through_a_carrier_then_receipts_and_history_survive_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let (da, db, dc) = (
        tmp.path().join("alice"),
        tmp.path().join("bob"),
        tmp.path().join("carol"),
    );
    let mut carol = Chat::start("carol", &dc, &[]);
    let via_carol = ["--connect", &carol.addr.clone()];
    let mut bob = Chat::start("bob", &db, &via_carol);
    bob.wait("peer_up carol", |v| {
        is(v, "peer_up") && v["name"] == "carol"
    });
    let mut alice = Chat::start("alice", &da, &via_carol);
    alice.wait("peer_up carol", |v| {
        is(v, "peer_up") && v["name"] == "carol"
    });
    let (alice_id, bob_id) = (alice.peer_id.clone(), bob.peer_id.clone());

    // Carol greets alice with the profiles she knows (bob's prekey among them) before
    // she passes on anything else: once bob's room message is there, so is his key.
    bob.send("bob was here");
    alice.wait_message("general", "bob was here");
    assert!(bob.quit().success());
    carol.wait("bob down", |v| is(v, "peer_down") && v["name"] == "bob");

    // Bob is offline: alice's three messages go to carol, who keeps them.
    for text in ["one", "two", "three"] {
        alice.send(&format!("/msg {bob_id} {text}"));
    }
    let sent = |t: &'static str| move |v: &Value| is(v, "direct_sent") && v["text"] == t;
    let (s1, s2, s3) = (sent("one"), sent("two"), sent("three"));
    let got = wait_set(&mut alice, "three direct_sent", &[&s1, &s2, &s3]);
    let seqs: Vec<u64> = got.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    wait_carrying(&mut carol, 3);
    assert!(alice.quit().success());

    // Bob comes back connected only to carol and gets all three, in order.
    let mut bob = Chat::start("bob", &db, &via_carol);
    let order = RefCell::new(Vec::new());
    bob.wait("three direct messages", |v| {
        if is(v, "direct") {
            order.borrow_mut().push(v.clone());
        }
        order.borrow().len() == 3
    });
    for (i, (d, text)) in order
        .borrow()
        .iter()
        .zip(["one", "two", "three"])
        .enumerate()
    {
        assert_eq!(d["text"], text);
        assert_eq!(d["seq"], i as u64 + 1);
        assert_eq!(d["from"], alice_id.as_str());
        assert_eq!(d["encrypted"], true);
    }
    assert_eq!(conversation(&mut bob, &alice_id)["unread"], 3);
    bob.send(&format!("/read {alice_id}"));
    let r = bob.wait("direct_read", |v| is(v, "direct_read"));
    assert_eq!(r["seqs"], serde_json::json!([1, 2, 3]));
    assert_eq!(conversation(&mut bob, &alice_id)["unread"], 0);
    // Three delivered receipts and one read receipt wait at carol for alice.
    wait_carrying(&mut carol, 4);

    // Alice comes back and learns that all three were delivered and read.
    let mut alice = Chat::start("alice", &da, &via_carol);
    let status = |seq: u64, s: &'static str| {
        move |v: &Value| is(v, "direct_status") && v["seq"] == seq && v["status"] == s
    };
    let (d1, d2, d3) = (
        status(1, "delivered"),
        status(2, "delivered"),
        status(3, "delivered"),
    );
    let (r1, r2, r3) = (status(1, "read"), status(2, "read"), status(3, "read"));
    wait_set(&mut alice, "receipts", &[&d1, &d2, &d3, &r1, &r2, &r3]);

    // Each restarts in turn; the conversation survives on both ends.
    let mine = |s: &str| {
        ["one", "two", "three"]
            .map(|t| (true, t.to_string(), s.to_string()))
            .to_vec()
    };
    assert!(alice.quit().success());
    let mut alice = Chat::start("alice", &da, &via_carol);
    assert_eq!(history(&mut alice, &bob_id), mine("read"));
    assert_eq!(conversation(&mut alice, &bob_id)["unread"], 0);

    assert!(bob.quit().success());
    let mut bob = Chat::start("bob", &db, &via_carol);
    let theirs: Vec<_> = ["one", "two", "three"]
        .map(|t| (false, t.to_string(), "read".to_string()))
        .into();
    assert_eq!(history(&mut bob, &alice_id), theirs);
    assert_eq!(conversation(&mut bob, &alice_id)["unread"], 0);

    assert!(carol.quit().success());
    let mut carol = Chat::start("carol", &dc, &[]);
    carol.send("/state");
    let s = carol.wait("state", |v| is(v, "state"));
    assert_eq!(s["carrying"], 0, "handed over, then forgotten: {s}");
    assert_eq!(s["conversations"], serde_json::json!([]));

    // After all these restarts alice's next message is new to bob, not a replay.
    let carol_addr = carol.addr.clone();
    alice.send(&format!("/connect {carol_addr}"));
    bob.send(&format!("/connect {carol_addr}"));
    // (The new carol: she listens on a new port.)
    let new_carol = |v: &Value| {
        is(v, "peer_up")
            && v["addr"]
                .as_str()
                .is_some_and(|a| carol_addr.starts_with(a))
    };
    alice.wait("the new carol up", new_carol);
    bob.wait("the new carol up", new_carol);
    alice.send(&format!("/msg {bob_id} four"));
    let sent4 = alice.wait("direct_sent four", |v| is(v, "direct_sent"));
    assert!(sent4["seq"].as_u64().unwrap() > 3, "{sent4}");
    let d = bob.wait("four", |v| is(v, "direct") && v["text"] == "four");
    assert_eq!(d["seq"], sent4["seq"]);
    assert!(alice.quit().success());
    assert!(bob.quit().success());
    assert!(carol.quit().success());
}

/// Sends `/msg peer text` and returns the `direct_sent` event. Right after `peer_up` is
/// fine: the peer's hello carried its key (an error here is a failure).
fn msg_now(from: &mut Chat, peer: &str, text: &str) -> Value {
    from.send(&format!("/msg {peer} {text}"));
    let v = from.wait("direct_sent or error", |v| {
        is(v, "direct_sent") || is(v, "error")
    });
    assert!(is(&v, "direct_sent"), "{v}");
    v
}

#[test]
fn a_kill_9_right_after_sending_never_reuses_a_sequence_number() {
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let mut bob = Chat::start("bob", &db, &[]);
    let to_bob = ["--connect", &bob.addr.clone()];
    let mut alice = Chat::start("alice", &da, &to_bob);
    alice.wait("peer_up bob", |v| is(v, "peer_up") && v["name"] == "bob");
    bob.wait("peer_up alice", |v| {
        is(v, "peer_up") && v["name"] == "alice"
    });
    let bob_id = bob.peer_id.clone();

    // bob's key comes with his profile a moment after `peer_up`.
    msg_now(&mut alice, &bob_id, "before 1");
    // The rest faster than the node's state is saved (at most every 500 ms): only the
    // reservation made before sending remembers how far the numbers went.
    for i in 2..=5 {
        alice.send(&format!("/msg {bob_id} before {i}"));
    }
    let before = RefCell::new(0);
    bob.wait("five messages", |v| {
        if is(v, "direct") {
            *before.borrow_mut() += 1;
        }
        *before.borrow() == 5
    });
    alice.kill9();
    // Restarted at once: her new connection may reach bob while he still holds the dead
    // one. It replaces that one and bob greets her again (`Hello.session`, PROTOCOL.md
    // 12.1), so she gets his key even if her saved state did not have it.
    let mut alice = Chat::start("alice", &da, &to_bob);
    alice.wait("peer_up bob", |v| is(v, "peer_up") && v["name"] == "bob");
    let sent = msg_now(&mut alice, &bob_id, "after the crash");
    assert!(sent["seq"].as_u64().unwrap() > 5, "{sent}");
    let d = bob.wait("the message after the crash", |v| {
        is(v, "direct") && v["text"] == "after the crash"
    });
    assert_eq!(d["seq"], sent["seq"]);
    // The conversation is stored on both ends, kill -9 or not.
    assert_eq!(history(&mut bob, &alice.peer_id.clone()).len(), 6);
    assert!(alice.quit().success());
    assert!(bob.quit().success());
}
