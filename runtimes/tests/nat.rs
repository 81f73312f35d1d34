//! NAT traversal in network namespaces built by each test: an "internet" bridge with a
//! relay (the `natnode` example with `--relay-server`), and two homes, each behind its
//! own router namespace doing nftables masquerade, that drops unsolicited inbound
//! packets on its internet side like a home router. Cone NAT (plain `masquerade`):
//! alice and bob chat through the relay, then DCUtR upgrades the link to a direct one,
//! counted over `ECHO_NAT_RUNS` repetitions (default 3) on TCP and on QUIC. Symmetric NAT
//! (`masquerade random`): chat works over the relay and the link stays relayed, and
//! when the relay restarts both ends reserve again, the relayed session comes back and
//! history sync brings what was said meanwhile.
//!
//! The nodes are `natnode` processes started with `ip netns exec`, driven over stdin and
//! stdout. Needs root, `ip` and `nft`: skipped with a message elsewhere, but failing
//! when `CI=true`. Every wait is bounded; nothing asserts on timing.
#![cfg(feature = "swarm")]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bound on start-up, a relayed session, a message.
const WAIT: Duration = Duration::from_secs(20);
/// Bound on a hole punch (a failed TCP punch takes 10 s per attempt).
const PUNCH: Duration = Duration::from_secs(25);

/// Whether the tests can run here; `false` (with a message) if not, panics under CI.
fn can_run() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    let has = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let missing = match (root, has("ip", "-V"), has("nft", "--version")) {
        (false, ..) => Some("not root"),
        (_, false, _) => Some("`ip` (iproute2) missing"),
        (_, _, false) => Some("`nft` (nftables) missing"),
        _ => None,
    };
    match missing {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("NAT tests cannot run under CI: {why}")
        }
        Some(why) => {
            eprintln!("skipping the NAT tests: {why}");
            false
        }
    }
}

fn run(args: &[&str], input: Option<&str>) {
    let mut c = Command::new(args[0]);
    c.args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    if let Some(s) = input {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces of one test, deleted on drop (even on panic).
struct Topology {
    names: Vec<String>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

impl Topology {
    fn ns(&self, role: &str) -> String {
        self.names
            .iter()
            .find(|n| n.ends_with(role))
            .cloned()
            .expect("namespace")
    }

    /// Relay at 10.77.0.1 on the internet bridge; routers at .11 and .12 with homes
    /// 192.168.1.0/24 (alice at .2) and 192.168.2.0/24 (bob at .2) behind them.
    fn build(tag: &str, symmetric: bool) -> Topology {
        let p = format!("echo{}{tag}", std::process::id());
        let t = Topology {
            names: ["inet", "relay", "ra", "rb", "alice", "bob"]
                .iter()
                .map(|r| format!("{p}-{r}"))
                .collect(),
        };
        for n in &t.names {
            run(&["ip", "netns", "add", n], None);
            run(&["ip", "-n", n, "link", "set", "lo", "up"], None);
        }
        let inet = t.ns("inet");
        run(
            &["ip", "-n", &inet, "link", "add", "br0", "type", "bridge"],
            None,
        );
        run(&["ip", "-n", &inet, "link", "set", "br0", "up"], None);
        for (k, (role, ip)) in [
            ("relay", "10.77.0.1"),
            ("ra", "10.77.0.11"),
            ("rb", "10.77.0.12"),
        ]
        .into_iter()
        .enumerate()
        {
            let (ns, port) = (t.ns(role), format!("p{k}"));
            run(
                &[
                    "ip", "-n", &inet, "link", "add", &port, "type", "veth", "peer", "name", "wan",
                    "netns", &ns,
                ],
                None,
            );
            run(
                &[
                    "ip", "-n", &inet, "link", "set", &port, "master", "br0", "up",
                ],
                None,
            );
            run(
                &[
                    "ip",
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{ip}/24"),
                    "dev",
                    "wan",
                ],
                None,
            );
            run(&["ip", "-n", &ns, "link", "set", "wan", "up"], None);
        }
        let masquerade = if symmetric {
            "masquerade random"
        } else {
            "masquerade"
        };
        for (router, home, net) in [("ra", "alice", 1), ("rb", "bob", 2)] {
            let (r, h) = (t.ns(router), t.ns(home));
            run(
                &[
                    "ip", "-n", &r, "link", "add", "lan", "type", "veth", "peer", "name", "eth0",
                    "netns", &h,
                ],
                None,
            );
            run(
                &[
                    "ip",
                    "-n",
                    &r,
                    "addr",
                    "add",
                    &format!("192.168.{net}.1/24"),
                    "dev",
                    "lan",
                ],
                None,
            );
            run(&["ip", "-n", &r, "link", "set", "lan", "up"], None);
            run(
                &[
                    "ip",
                    "-n",
                    &h,
                    "addr",
                    "add",
                    &format!("192.168.{net}.2/24"),
                    "dev",
                    "eth0",
                ],
                None,
            );
            run(&["ip", "-n", &h, "link", "set", "eth0", "up"], None);
            run(
                &[
                    "ip",
                    "-n",
                    &h,
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("192.168.{net}.1"),
                ],
                None,
            );
            run(
                &[
                    "ip",
                    "netns",
                    "exec",
                    &r,
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                ],
                None,
            );
            // Masquerade out of the WAN leg; unsolicited inbound is dropped, never
            // answered (an answer makes conntrack remap the peer's punch).
            let rules = format!(
                "table ip nat {{\n\
                 chain post {{\n\
                 type nat hook postrouting priority srcnat;\n\
                 oifname \"wan\" {masquerade}\n\
                 }}\n\
                 }}\n\
                 table inet filter {{\n\
                 chain input {{\n\
                 type filter hook input priority filter;\n\
                 iifname \"wan\" ct state new drop\n\
                 }}\n\
                 chain forward {{\n\
                 type filter hook forward priority filter;\n\
                 iifname \"wan\" ct state new drop\n\
                 }}\n\
                 }}\n"
            );
            run(&["ip", "netns", "exec", &r, "nft", "-f", "-"], Some(&rules));
        }
        t
    }
}

/// A `natnode` process in a namespace; killed on drop.
struct Node {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn natnode() -> std::path::PathBuf {
    // target/<profile>/deps/nat-<hash> → target/<profile>/examples/natnode
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/natnode");
    assert!(
        bin.exists(),
        "{} missing: `cargo test` builds it",
        bin.display()
    );
    bin
}

impl Node {
    fn spawn(name: &'static str, ns: &str, args: &[String]) -> Node {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(natnode())
            .args(["--name", name])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ip netns exec natnode");
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut n = Node {
            name,
            child,
            stdin,
            lines,
            seen: Vec::new(),
        };
        n.wait_for("start", WAIT, |l| l == "ready")
            .unwrap_or_else(|| panic!("{name} did not start: {:?}", n.seen));
        n
    }

    /// The first line (already seen or new) matching `f`, within `within`.
    fn wait_for(
        &mut self,
        _what: &str,
        within: Duration,
        f: impl Fn(&str) -> bool,
    ) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| f(l)) {
            return Some(l.clone());
        }
        let until = Instant::now() + within;
        loop {
            let left = until.checked_duration_since(Instant::now())?;
            let l = self.lines.recv_timeout(left).ok()?;
            self.seen.push(l.clone());
            if f(&l) {
                return Some(l);
            }
        }
    }

    fn must(&mut self, what: &str, within: Duration, f: impl Fn(&str) -> bool) -> String {
        let name = self.name;
        self.wait_for(what, within, f)
            .unwrap_or_else(|| panic!("{name}: no {what}; saw {:?}", self.seen))
    }

    /// Waits until `n` lines (already seen or new) match `f`, within `within`.
    fn must_count(&mut self, what: &str, n: usize, within: Duration, f: impl Fn(&str) -> bool) {
        let until = Instant::now() + within;
        while self.seen.iter().filter(|l| f(l.as_str())).count() < n {
            let left = until.checked_duration_since(Instant::now());
            let Some(l) = left.and_then(|left| self.lines.recv_timeout(left).ok()) else {
                panic!("{}: no {what} (#{n}); saw {:?}", self.name, self.seen);
            };
            self.seen.push(l);
        }
    }

    fn cmd(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("node alive");
    }

    fn addr(&mut self, part: &str) -> String {
        let l = self.must(part, WAIT, |l| l.starts_with("addr ") && l.contains(part));
        l["addr ".len()..].to_string()
    }

    fn id(&mut self) -> String {
        let a = self.addr("/p2p/");
        a.rsplit('/').next().unwrap().to_string()
    }
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Tcp,
    Quic,
}

impl Transport {
    fn listen(self, ip: &str, port: u16) -> Vec<String> {
        let a = match self {
            Transport::Tcp => format!("/ip4/{ip}/tcp/{port}"),
            Transport::Quic => format!("/ip4/{ip}/udp/{port}/quic-v1"),
        };
        vec!["--listen".into(), a, "--no-quic".into()]
    }
}

/// One round: alice and bob behind their routers reach each other through the relay
/// and chat; returns the time from their start to the first message through the relay,
/// and to the direct link if DCUtR upgraded it within [`PUNCH`].
fn round(t: &Topology, relay: &str, tr: Transport, k: usize) -> (Duration, Option<Duration>) {
    let start = std::time::Instant::now();
    let relay_args = |ip: &str| {
        let mut a = tr.listen(ip, 0);
        a.extend(["--relay".to_string(), relay.to_string()]);
        a
    };
    let mut alice = Node::spawn("alice", &t.ns("alice"), &relay_args("192.168.1.2"));
    let mut bob = Node::spawn("bob", &t.ns("bob"), &relay_args("192.168.2.2"));
    let circuit = alice.addr("/p2p-circuit/");
    bob.cmd(&format!("connect {circuit}"));
    let bob_id = bob.id();
    let alice_id = alice.id();
    alice.must("bob up", WAIT, |l| l.starts_with(&format!("up {bob_id}")));
    bob.must("alice up", WAIT, |l| {
        l.starts_with(&format!("up {alice_id}"))
    });
    bob.cmd(&format!("send via relay {k}"));
    alice.must("the relayed message", WAIT, |l| {
        l == format!("msg via relay {k}")
    });
    let first = start.elapsed();
    alice.cmd(&format!("send back {k}"));
    bob.must("the answer", WAIT, |l| l == format!("msg back {k}"));
    let direct = |l: &str| l.starts_with("link ") && l.ends_with(" Direct");
    let upgraded = alice.wait_for("a direct link", PUNCH, direct).is_some()
        && bob.wait_for("a direct link", WAIT, direct).is_some();
    let upgraded = upgraded.then(|| start.elapsed());
    // The chat carries on, over the direct connection or still over the relay.
    bob.cmd(&format!("send later {k}"));
    alice.must("the later message", WAIT, |l| l == format!("msg later {k}"));
    (first, upgraded)
}

/// The median of `v` in milliseconds ("-" when empty).
fn median_ms(mut v: Vec<Duration>) -> String {
    v.sort();
    v.get(v.len() / 2)
        .map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
}

fn runs() -> usize {
    std::env::var("ECHO_NAT_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

fn relay_node(t: &Topology, tr: Transport) -> (Node, String) {
    let mut args = tr.listen("10.77.0.1", 4001);
    args.push("--relay-server".into());
    let mut relay = Node::spawn("relay", &t.ns("relay"), &args);
    let proto = match tr {
        Transport::Tcp => "/tcp/",
        Transport::Quic => "/quic-v1/",
    };
    let addr = relay.addr(proto);
    (relay, addr)
}

fn cone(tag: &str, tr: Transport) {
    if !can_run() {
        return;
    }
    let t = Topology::build(tag, false);
    let (_relay, addr) = relay_node(&t, tr);
    let n = runs();
    let rounds: Vec<_> = (0..n).map(|k| round(&t, &addr, tr, k)).collect();
    let upgrades: Vec<Duration> = rounds.iter().filter_map(|r| r.1).collect();
    let upgraded = upgrades.len();
    println!(
        "cone NAT, {tr:?}: {upgraded}/{n} relayed sessions upgraded to direct; \
         median from start to the first relayed message {}, to the direct link {}",
        median_ms(rounds.iter().map(|r| r.0).collect()),
        median_ms(upgrades)
    );
    assert!(
        upgraded >= 1,
        "no hole punch succeeded over {tr:?} ({n} runs)"
    );
}

#[test]
fn cone_nat_relay_then_hole_punch_over_tcp() {
    cone("ct", Transport::Tcp);
}

#[test]
fn cone_nat_relay_then_hole_punch_over_quic() {
    cone("cq", Transport::Quic);
}

/// Symmetric NAT: the chat works over the relay; hole punching cannot succeed, so the
/// link stays relayed (checked after the bounded punch window) and chat goes on.
#[test]
fn symmetric_nat_chat_stays_relayed() {
    if !can_run() {
        return;
    }
    let tr = Transport::Quic; // its failed punches end sooner than TCP's
    let t = Topology::build("sy", true);
    let (_relay, addr) = relay_node(&t, tr);
    let upgraded = round(&t, &addr, tr, 0).1.is_some();
    println!("symmetric NAT, {tr:?}: upgraded {upgraded}");
    assert!(
        !upgraded,
        "a hole punch through symmetric NAT cannot succeed"
    );
}

/// Symmetric NAT (no hole punch: the relay is the only way): the relay is killed and
/// started again (same identity and port). Both ends report the reservation lost and
/// then held again, bob redials alice through it, and history sync brings bob what
/// alice said while the relay was down; then the chat goes on.
#[test]
fn relay_restart_both_reserve_again_and_history_fills_the_gap() {
    if !can_run() {
        return;
    }
    // Reservations retried with backoff (1, 2, 4, 8 s ...) and the redial's own.
    const AGAIN: Duration = Duration::from_secs(60);
    let tr = Transport::Tcp;
    let t = Topology::build("rr", true);
    let relay_args = || {
        let mut a = tr.listen("10.77.0.1", 4001);
        a.extend(["--relay-server".into(), "--key".into(), "77".into()]);
        a
    };
    let mut relay = Node::spawn("relay", &t.ns("relay"), &relay_args());
    let relay_addr = relay.addr("/tcp/");
    let args = |ip: &str| {
        let mut a = tr.listen(ip, 0);
        a.extend(["--relay".to_string(), relay_addr.clone()]);
        a
    };
    let mut alice = Node::spawn("alice", &t.ns("alice"), &args("192.168.1.2"));
    let mut bob = Node::spawn("bob", &t.ns("bob"), &args("192.168.2.2"));
    let circuit = alice.addr("/p2p-circuit/");
    let (alice_id, bob_id) = (alice.id(), bob.id());
    bob.cmd(&format!("connect {circuit}"));
    let up = |id: &str| {
        let p = format!("up {id} ");
        move |l: &str| l.starts_with(&p)
    };
    alice.must("bob up", WAIT, up(&bob_id));
    bob.must("alice up", WAIT, up(&alice_id));
    bob.cmd("send before");
    alice.must("the first message", WAIT, |l| l == "msg before");

    drop(relay);
    let lost = |l: &str| l.starts_with("lost ");
    alice.must("reservation lost", WAIT, lost);
    bob.must("reservation lost", WAIT, lost);
    bob.must_count("alice down", 1, WAIT, |l| l == format!("down {alice_id}"));
    for i in 0..5 {
        alice.cmd(&format!("send while down {i}"));
    }
    let _relay = Node::spawn("relay", &t.ns("relay"), &relay_args());
    let reserved = |l: &str| l.starts_with("reserved ");
    alice.must_count("reservation again", 2, AGAIN, reserved);
    bob.must_count("reservation again", 2, AGAIN, reserved);
    bob.must_count("alice up again", 2, AGAIN, up(&alice_id));
    for i in 0..5 {
        let text = format!("msg while down {i}");
        bob.must("what was missed", WAIT, |l| l == text);
    }
    bob.cmd("send after");
    alice.must("the chat goes on", WAIT, |l| l == "msg after");
}
