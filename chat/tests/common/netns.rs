//! Network namespaces made by a test (root and iproute2 needed): named per process,
//! joined by veth pairs, optionally shaped with `tc tbf`; deleted on drop, even after a
//! failure. Nothing here reaches beyond the namespaces.
#![allow(dead_code)]

use std::process::Command;

/// Runs `ip` and fails the test with its error.
pub fn ip(args: &[&str]) {
    run("ip", args);
}

fn run(tool: &str, args: &[&str]) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .expect("run a network tool");
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the test can make namespaces here: root and `ip`. Under CI=true it must.
pub fn can_run(what: &str) -> bool {
    if super::skip_without("ip", "iproute2 makes the test's network namespaces") {
        return false;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{what} needs root (network namespaces) under CI=true");
        }
        eprintln!("skipping: {what} needs root to make network namespaces");
        return false;
    }
    true
}

/// Namespaces of one test.
pub struct Netns {
    names: Vec<String>,
    links: usize,
}

impl Netns {
    /// Makes one namespace per tag (`echo-<tag>-<pid>`), each with loopback up.
    pub fn new(tags: &[&str]) -> Netns {
        let id = std::process::id();
        let mut n = Netns {
            names: Vec::new(),
            links: 0,
        };
        for t in tags {
            let name = format!("echo-{t}-{id}");
            ip(&["netns", "add", &name]);
            n.names.push(name.clone());
            ip(&["-n", &name, "link", "set", "lo", "up"]);
        }
        n
    }

    /// The namespace made for `tag`.
    pub fn name(&self, tag: &str) -> String {
        let want = format!("echo-{tag}-{}", std::process::id());
        assert!(self.names.contains(&want), "no namespace {tag}");
        want
    }

    /// A veth pair between two namespaces with an address on each end (`10.x.y.z/24`);
    /// returns the two device names.
    pub fn link(&mut self, a: &str, addr_a: &str, b: &str, addr_b: &str) -> (String, String) {
        self.links += 1;
        let (da, db) = (format!("v{}a", self.links), format!("v{}b", self.links));
        let (na, nb) = (self.name(a), self.name(b));
        ip(&[
            "link", "add", &da, "netns", &na, "type", "veth", "peer", "name", &db, "netns", &nb,
        ]);
        for (ns, dev, addr) in [(&na, &da, addr_a), (&nb, &db, addr_b)] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up", "multicast", "on"]);
        }
        (da, db)
    }

    /// Shapes what `dev` in `tag`'s namespace sends to `rate` (e.g. `20mbit`) with tbf.
    pub fn shape(&self, tag: &str, dev: &str, rate: &str) {
        let ns = self.name(tag);
        run(
            "ip",
            &[
                "netns", "exec", &ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate",
                rate, "burst", "32kbit", "latency", "400ms",
            ],
        );
    }

    /// A command that runs the app inside `tag`'s namespace.
    pub fn exec(&self, tag: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name(tag), super::BIN]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
