//! LAN discovery: two headless instances in two network namespaces joined by a veth
//! pair find each other by mDNS, with no --connect. Needs root and iproute2 (`ip`);
//! skipped without them unless CI=true. Multicast stays inside the test's namespaces.

mod common;

use std::process::Command;

use common::Chat;

/// Two namespaces joined by a veth pair; deleted on drop, even after a failure.
struct Netns {
    a: String,
    b: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn new() -> Netns {
        let id = std::process::id();
        let n = Netns {
            a: format!("echo-mdns-a-{id}"),
            b: format!("echo-mdns-b-{id}"),
        };
        // Drop cleans up whatever was made, if a step fails.
        ip(&["netns", "add", &n.a]);
        ip(&["netns", "add", &n.b]);
        ip(&[
            "link", "add", "veth-a", "netns", &n.a, "type", "veth", "peer", "name", "veth-b",
            "netns", &n.b,
        ]);
        for (ns, dev, addr) in [
            (&n.a, "veth-a", "10.213.7.1/24"),
            (&n.b, "veth-b", "10.213.7.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up", "multicast", "on"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        n
    }

    fn exec(&self, ns: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, common::BIN]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn can_run() -> bool {
    if common::skip_without("ip", "iproute2 makes the test's network namespaces") {
        return false;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the mDNS test needs root (network namespaces) under CI=true");
        }
        eprintln!("skipping: the mDNS test needs root to make network namespaces");
        return false;
    }
    true
}

#[test]
fn two_instances_in_two_namespaces_find_each_other_by_mdns() {
    if !can_run() {
        return;
    }
    let net = Netns::new();
    let tmp = tempfile::tempdir().unwrap();
    let listen = ["--listen", "/ip4/0.0.0.0/tcp/0"];
    let mut a = Chat::start_with(
        net.exec(&net.a),
        "alice",
        &tmp.path().join("a"),
        &[listen[0], listen[1], "--mdns-interface", "veth-a"],
    );
    let mut b = Chat::start_with(
        net.exec(&net.b),
        "bob",
        &tmp.path().join("b"),
        &[
            listen[0],
            listen[1],
            "--mdns-interface",
            "veth-b",
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
