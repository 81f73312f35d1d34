//! The app on the swarm (the default with tokio) and on the direct driver
//! (`--transport direct`): the two chat and send each other files over TCP; a relay
//! app (`--relay-server`) gives another (`--relay`) a `/p2p-circuit` address a third
//! reaches it through, and each side says whether its link is direct or relayed.

mod common;

use common::Chat;
use serde_json::Value;

fn is(v: &Value, event: &str) -> bool {
    v["event"] == event
}

/// `from` shares `len` bytes, `to` fetches them by the offer id: identical.
fn send_file(from: &mut Chat, to: &mut Chat, dir: &std::path::Path, len: usize, seed: u8) {
    let data: Vec<u8> = (0..len)
        .map(|i| ((i as u64 * 2_654_435_761) >> 7) as u8 ^ seed)
        .collect();
    let src = dir.join(format!("from-{}-{seed}.bin", from.name));
    std::fs::write(&src, &data).unwrap();
    from.send(&format!("/share {}", src.display()));
    let shared = from.wait("shared", |v| is(v, "shared"));
    let id = shared["offer"]["id"].as_str().unwrap().to_string();
    to.wait("the offer", |v| {
        is(v, "message") && v["offer"]["id"] == id.as_str()
    });
    to.send(&format!("/get {id}"));
    let done = to.wait("transfer_done", |v| is(v, "transfer_done"));
    let path = done["path"].as_str().unwrap();
    assert!(std::fs::read(path).unwrap() == data, "{path}: bytes differ");
}

/// A peer's `link` says what its `addr` is: `relayed` for a `/p2p-circuit` one.
fn labelled(p: &Value) -> bool {
    let circuit = p["addr"]
        .as_str()
        .is_some_and(|a| a.contains("/p2p-circuit"));
    p["link"] == if circuit { "relayed" } else { "direct" }
}

#[test]
fn swarm_and_direct_apps_chat_and_share_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut alice = Chat::start("alice", &tmp.path().join("alice"), &[]);
    let mut bob = Chat::start(
        "bob",
        &tmp.path().join("bob"),
        &["--transport", "direct", "--connect", &alice.addr],
    );
    for (me, other) in [(&mut alice, "bob"), (&mut bob, "alice")] {
        let up = me.wait("peer_up", |v| is(v, "peer_up") && v["name"] == other);
        assert_eq!(up["link"], "direct", "{up}");
    }
    bob.send("hello from the direct driver");
    alice.wait_message("general", "hello from the direct driver");
    alice.send("hello from the swarm");
    bob.wait_message("general", "hello from the swarm");
    send_file(&mut alice, &mut bob, tmp.path(), 2 << 20, 1);
    send_file(&mut bob, &mut alice, tmp.path(), 2 << 20, 2);
    // The swarm app lists its addresses with AutoNAT's verdict; the direct one too
    // (nothing is known there).
    for c in [&mut alice, &mut bob] {
        c.send("/addrs");
        let a = c.wait("addrs", |v| is(v, "addrs"));
        assert!(a["nat"]["status"].is_string(), "{a}");
        assert!(a["relayed"].as_array().is_some_and(|r| r.is_empty()), "{a}");
    }
    // The swarm listens for QUIC on the TCP port.
    let quic = alice
        .addr
        .replace("/tcp/", "/udp/")
        .replace("/p2p/", "/quic-v1/p2p/");
    alice.send("/addrs");
    let a = alice.wait("addrs", |v| is(v, "addrs"));
    assert!(
        a["addrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == quic.as_str()),
        "{a}"
    );
    assert!(alice.quit().success());
    assert!(bob.quit().success());
}

#[test]
fn a_peer_reaches_another_through_a_relay_app() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Chat::start("relay", &tmp.path().join("relay"), &["--relay-server"]);
    let mut alice = Chat::start(
        "alice",
        &tmp.path().join("alice"),
        &["--relay", &relay.addr],
    );
    // Start-up waits for the reservation: the circuit address is among the first.
    alice.send("/addrs");
    let addrs = alice.wait("addrs", |v| is(v, "addrs"));
    let circuit = addrs["relayed"][0]
        .as_str()
        .expect("a relayed address")
        .to_string();
    assert!(
        circuit.ends_with(&format!("/p2p-circuit/p2p/{}", alice.peer_id)),
        "{addrs}"
    );
    assert!(
        addrs["addrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == circuit.as_str()),
        "/copy can pick it: {addrs}"
    );
    let mut bob = Chat::start("bob", &tmp.path().join("bob"), &["--connect", &circuit]);
    // On loopback alice is reachable directly too (peer exchange through the relay
    // node, hole punching): the session may start on either; the label says which.
    let up = bob.wait("alice up", |v| is(v, "peer_up") && v["name"] == "alice");
    assert!(labelled(&up), "{up}");
    bob.send("through the relay");
    alice.wait_message("general", "through the relay");
    alice.send("back");
    bob.wait_message("general", "back");
    bob.send("/peers");
    let peers = bob.wait("peers", |v| is(v, "peers"));
    let alice_row = peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "alice");
    assert!(alice_row.is_some_and(labelled), "{peers}");
    assert!(alice.quit().success());
    assert!(bob.quit().success());
}
