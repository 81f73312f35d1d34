//! End-to-end: headless echo-chat processes on 127.0.0.1, connected with --connect.

mod common;

use common::Chat;

fn is(v: &serde_json::Value, event: &str) -> bool {
    v["event"] == event
}

#[test]
fn two_peers_chat_directly_and_in_rooms_then_one_restarts_with_its_history() {
    let tmp = tempfile::tempdir().unwrap();
    let mut alice = Chat::start("alice", &tmp.path().join("alice"), &[]);
    let alice_addr = alice.addr.clone();
    let mut bob = Chat::start("bob", &tmp.path().join("bob"), &["--connect", &alice_addr]);
    bob.wait("peer_up alice", |v| {
        is(v, "peer_up") && v["name"] == "alice"
    });
    alice.wait("peer_up bob", |v| is(v, "peer_up") && v["name"] == "bob");

    // Room messages both ways.
    alice.send("hello bob");
    bob.wait_message("general", "hello bob");
    bob.send("hi alice 👋 — ünïcödé");
    let m = alice.wait_message("general", "hi alice 👋 — ünïcödé");
    assert_eq!(m["display"], bob.display.as_str());

    // Direct messages, by name and by name#tail.
    bob.send("/msg alice psst");
    let d = alice.wait("direct", |v| is(v, "direct") && v["text"] == "psst");
    assert_eq!(d["from"], bob.peer_id.as_str());
    let bob_display = bob.display.clone();
    alice.send(&format!("/msg {bob_display} psst back"));
    bob.wait("direct back", |v| {
        is(v, "direct") && v["text"] == "psst back"
    });

    // Another room.
    bob.send("/join side");
    bob.wait("joined side", |v| is(v, "joined") && v["room"] == "side");
    alice.send("/join side");
    alice.wait("joined side", |v| is(v, "joined") && v["room"] == "side");
    alice.send("in the side room");
    let m = bob.wait_message("side", "in the side room");
    assert_eq!(m["author"], alice.peer_id.as_str());

    // Errors are lines, not crashes.
    bob.send("/msg nobody hello");
    bob.wait("error for unknown peer", |v| is(v, "error"));
    bob.send("/connect not-an-address");
    bob.wait("error for bad address", |v| {
        is(v, "error") && v["text"].as_str().unwrap().contains("not-an-address")
    });
    bob.send("/frobnicate");
    bob.wait("unknown command", |v| is(v, "error"));

    // Bob restarts: his history is back, his sequence numbers go on, alice accepts him.
    let bob_seq = |v: &serde_json::Value| v["seq"].as_u64().unwrap();
    let status = bob.quit();
    assert!(status.success(), "bob exited with {status}");
    alice.wait("bob down", |v| is(v, "peer_down") && v["name"] == "bob");

    let mut bob = Chat::start("bob", &tmp.path().join("bob"), &["--connect", &alice_addr]);
    let h = bob.wait("restored hello", |v| {
        is(v, "message") && v["restored"] == true && v["text"] == "hello bob"
    });
    assert_eq!(h["room"], "general");
    let own = bob.wait("restored own", |v| {
        is(v, "message") && v["restored"] == true && v["text"] == "hi alice 👋 — ünïcödé"
    });
    let old_seq = bob_seq(&own);
    bob.wait("restored side", |v| {
        is(v, "message") && v["restored"] == true && v["text"] == "in the side room"
    });
    bob.wait("peer_up alice again", |v| {
        is(v, "peer_up") && v["name"] == "alice"
    });
    alice.wait("peer_up bob again", |v| {
        is(v, "peer_up") && v["name"] == "bob"
    });
    bob.send("/send general back again");
    let m = alice.wait_message("general", "back again");
    assert!(bob_seq(&m) > old_seq, "sequence numbers went back: {m}");
    alice.send("/send general welcome back");
    bob.wait_message("general", "welcome back");
    for v in alice.drain().iter().chain(bob.drain().iter()) {
        assert!(!is(v, "misbehaved"), "unexpected: {v}");
    }
    assert!(bob.quit().success());
    assert!(alice.quit().success());
}

#[test]
fn three_peers_on_two_runtimes_relay_through_the_middle() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Chat::start("ann", &tmp.path().join("a"), &[]);
    let a_addr = a.addr.clone();
    let mut b = Chat::start(
        "ben",
        &tmp.path().join("b"),
        &["--connect", &a_addr, "--runtime", "smol"],
    );
    let b_addr = b.addr.clone();
    // C knows only B; the positional argument is an address to connect to.
    let mut c = Chat::start("cat", &tmp.path().join("c"), &[&b_addr]);
    b.wait("ann up", |v| is(v, "peer_up") && v["name"] == "ann");
    c.wait("ben up", |v| is(v, "peer_up") && v["name"] == "ben");

    a.send("from ann");
    c.wait_message("general", "from ann");
    c.send("from cat");
    a.wait_message("general", "from cat");
    b.wait_message("general", "from cat");
    // Names of others are in the messages even without a direct connection.
    b.send("/nick benjamin");
    b.wait("nick", |v| is(v, "nick"));
    b.send("renamed");
    let m = c.wait_message("general", "renamed");
    assert_eq!(m["name"], "benjamin");
    for chat in [c, b, a] {
        assert!(chat.quit().success());
    }
}
