//! LAN discovery: two headless instances in two network namespaces joined by a veth
//! pair find each other by mDNS, with no --connect. Needs root and iproute2 (`ip`);
//! skipped without them unless CI=true. Multicast stays inside the test's namespaces.

mod common;

use common::netns::{can_run, Netns};
use common::Chat;

#[test]
fn two_instances_in_two_namespaces_find_each_other_by_mdns() {
    if !can_run("the mDNS test") {
        return;
    }
    let mut net = Netns::new(&["mdns-a", "mdns-b"]);
    let (veth_a, veth_b) = net.link("mdns-a", "10.213.7.1/24", "mdns-b", "10.213.7.2/24");
    let tmp = tempfile::tempdir().unwrap();
    let listen = ["--listen", "/ip4/0.0.0.0/tcp/0"];
    let mut a = Chat::start_with(
        net.exec("mdns-a"),
        "alice",
        &tmp.path().join("a"),
        &[listen[0], listen[1], "--mdns-interface", &veth_a],
    );
    let mut b = Chat::start_with(
        net.exec("mdns-b"),
        "bob",
        &tmp.path().join("b"),
        &[
            listen[0],
            listen[1],
            "--mdns-interface",
            &veth_b,
            "--runtime",
            "smol",
        ],
    );
    // The advertised address is the namespace's own, not 0.0.0.0 or loopback.
    assert!(a.addr.starts_with("/ip4/10.213.7.1/tcp/"), "{}", a.addr);
    let up = a.wait("bob found by mDNS", |v| {
        v["event"] == "peer_up" && v["name"] == "bob"
    });
    assert!(up["addr"].as_str().unwrap().contains("10.213.7.2"), "{up}");
    b.wait("alice found by mDNS", |v| {
        v["event"] == "peer_up" && v["name"] == "alice"
    });
    a.send("over the LAN");
    b.wait_message("general", "over the LAN");
    assert!(b.quit().success());
    assert!(a.quit().success());
}
