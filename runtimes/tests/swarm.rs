//! echo as a rust-libp2p `NetworkBehaviour` (`echo_runtime::swarm`), on loopback: two
//! swarm nodes over TCP and over QUIC, a swarm node with direct-driver nodes (tokio and
//! smol) both ways with history sync across a restart, echo beside an app's own
//! behaviour, and the core's close of a duplicate connection closing it in the swarm.
#![cfg(feature = "swarm")]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{bounded, options, tcp_swarm, until_stats, Probe, WAIT};
use echo_proto::{CommandError, Event, Identity};
use echo_runtime::swarm::{self, EchoBehaviour, SwarmOptions};
use echo_runtime::tokio::TokioRuntime;
use echo_runtime::{FilesOptions, Options, Runtime, RuntimeEvent, TransferId};
use futures::channel::mpsc;
use futures::StreamExt;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{ping, Multiaddr, Swarm};

/// A node in the ready-made swarm.
async fn swarm_probe(rt: &TokioRuntime, o: Options) -> Probe<TokioRuntime> {
    let name = o.config.name.clone();
    let (h, events) = swarm::start(SwarmOptions::from(o))
        .await
        .expect("swarm starts");
    Probe::from_parts(rt, &name, h, events)
}

/// The listen address of `p` with `proto` (`"tcp"` or `"quic-v1"`).
fn addr_of<R: Runtime>(p: &Probe<R>, proto: &str) -> String {
    p.h.listen_addrs()
        .iter()
        .map(|a| a.to_string())
        .find(|a| a.contains(proto))
        .unwrap_or_else(|| {
            panic!(
                "{} has no {proto} address: {:?}",
                p.name,
                p.h.listen_addrs()
            )
        })
}

/// Two swarm nodes dial over `proto` and chat both ways.
async fn pair(rt: TokioRuntime, proto: &str) {
    let mut a = swarm_probe(&rt, options("a", 80)).await;
    let mut b = swarm_probe(&rt, options("b", 81)).await;
    let tcp_port =
        |p: &Probe<TokioRuntime>| addr_of(p, "tcp").split('/').nth(4).map(str::to_string);
    // QUIC listens on the TCP port.
    assert_eq!(
        addr_of(&a, "quic-v1").split('/').nth(4).map(str::to_string),
        tcp_port(&a)
    );
    b.h.connect(&addr_of(&a, proto)).await.unwrap();
    a.peer_up(b.id()).await;
    b.peer_up(a.id()).await;
    let peers = b.h.peers().await.unwrap();
    assert!(
        peers[0].addr.to_string().contains(proto),
        "{:?}",
        peers[0].addr
    );
    for i in 0..20 {
        a.h.send("general", &format!("a{i}")).await.unwrap();
        b.h.send("general", &format!("b{i}")).await.unwrap();
    }
    for i in 0..20 {
        b.message(&format!("a{i}")).await;
        a.message(&format!("b{i}")).await;
    }
    // Aborted: its connections drop without a goodbye, and it stops.
    a.h.abort();
    a.h.stopped().await;
    let reason = b.peer_down(a.id()).await;
    assert!(
        !reason.contains("goodbye"),
        "killed, not a goodbye: {reason}"
    );
    b.h.shutdown().await;
    b.h.stopped().await;
}

#[test]
fn two_swarm_nodes_over_tcp() {
    common::on_tokio(|rt| pair(rt, "tcp"));
}

#[test]
fn two_swarm_nodes_over_quic() {
    common::on_tokio(|rt| pair(rt, "quic-v1"));
}

/// A swarm node S and a direct-driver node D on `rt`: D dials S, they chat both ways;
/// D is killed, S sends while it is away, D restarts from its saved state and S dials
/// it: history sync brings D what it missed.
async fn with_direct<R: Runtime>(tk: TokioRuntime, rt: R, seed: u64) {
    let mut s = swarm_probe(&tk, options("swarm", seed)).await;
    let mut d = Probe::start(&rt, options("direct", seed + 1)).await;
    d.h.connect(&addr_of(&s, "tcp")).await.unwrap();
    s.peer_up(d.id()).await;
    d.peer_up(s.id()).await;
    // The swarm's listen addresses reached the node's hello.
    let info = d.h.peers().await.unwrap();
    assert!(
        info[0]
            .listen_addrs
            .iter()
            .any(|a| a.to_string() == addr_of(&s, "tcp")),
        "{:?}",
        info[0].listen_addrs
    );
    s.h.send("general", "from swarm").await.unwrap();
    d.h.send("general", "from direct").await.unwrap();
    d.message("from swarm").await;
    s.message("from direct").await;

    // D goes away, killed with messages in flight (S reads them and the end in one
    // go: the end must still reach S's node); S keeps talking.
    let mut saved = d.h.inspect(|n| n.export()).await.unwrap();
    saved.peers.clear();
    for i in 0..20 {
        drop(d.h.send("general", &format!("in flight {i}")));
    }
    d.h.abort();
    d.h.stopped().await;
    s.peer_down(d.id()).await;
    for i in 0..30 {
        s.h.send("general", &format!("while away {i}"))
            .await
            .unwrap();
    }

    let mut o = options("direct", seed + 1);
    o.restore = saved;
    let mut d2 = Probe::start(&rt, o).await;
    s.h.connect(&d2.addr()).await.unwrap();
    d2.peer_up(s.id()).await;
    for i in 0..30 {
        d2.message(&format!("while away {i}")).await;
    }
    d2.h.send("general", "back").await.unwrap();
    s.message("back").await;
    bounded(&tk, WAIT, "shutdowns", async {
        s.h.shutdown().await;
        d2.h.shutdown().await;
    })
    .await;
}

#[test]
fn swarm_and_direct_tokio_node() {
    common::on_tokio(|tk| with_direct(tk.clone(), tk, 90));
}

#[cfg(feature = "smol")]
#[test]
fn swarm_and_direct_smol_node() {
    common::on_tokio(|tk| with_direct(tk, echo_runtime::smol::SmolRuntime, 92));
}

/// An app's own swarm: echo beside the app's ping.
#[derive(NetworkBehaviour)]
struct App {
    echo: EchoBehaviour,
    ping: ping::Behaviour,
}

fn app_swarm(o: Options) -> (Swarm<App>, echo_runtime::Handle, echo_runtime::Events) {
    let key = o.identity.keypair();
    let (echo, h, events) = EchoBehaviour::new(o.identity, o.config, o.seed, o.restore, o.driver);
    let swarm = tcp_swarm(key, |_| App {
        echo,
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(50))),
    });
    (swarm, h, events)
}

/// What the app's swarm task reports.
#[derive(Debug)]
enum Seen {
    Pong,
    /// Established connections now.
    Connections(u32),
}

/// Runs the app's swarm on its own task, reporting pongs and connection counts.
fn drive(mut swarm: Swarm<App>) -> mpsc::UnboundedReceiver<Seen> {
    let (tx, rx) = mpsc::unbounded();
    tokio::spawn(async move {
        loop {
            let seen = match swarm.select_next_some().await {
                SwarmEvent::Behaviour(AppEvent::Ping(ping::Event { result: Ok(_), .. })) => {
                    Seen::Pong
                }
                SwarmEvent::ConnectionEstablished { .. } | SwarmEvent::ConnectionClosed { .. } => {
                    Seen::Connections(swarm.network_info().connection_counters().num_established())
                }
                _ => continue,
            };
            if tx.unbounded_send(seen).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for the first report that `pred` accepts.
async fn until_seen(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    what: &str,
    pred: impl Fn(&Seen) -> bool,
) {
    let rt = TokioRuntime::current();
    bounded(&rt, WAIT, what, async {
        loop {
            let s = rx.next().await.expect("swarm task runs");
            if pred(&s) {
                return;
            }
        }
    })
    .await
}

/// echo in the app's own swarm beside its ping: the app's pings go on, the chat works
/// both ways with a ready-made swarm node.
async fn beside_app_behaviour(rt: TokioRuntime) {
    let mut b = swarm_probe(&rt, options("b", 101)).await;
    let o = options("app", 100);
    let (mut swarm, h, events) = app_swarm(o);
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let mut seen = drive(swarm);
    let mut a = Probe::from_parts(&rt, "app", h, events);
    a.h.connect(&addr_of(&b, "tcp")).await.unwrap();
    a.peer_up(b.id()).await;
    b.peer_up(a.id()).await;
    until_seen(&mut seen, "a pong", |s| matches!(s, Seen::Pong)).await;
    a.h.send("general", "from the app").await.unwrap();
    b.message("from the app").await;
    b.h.send("general", "to the app").await.unwrap();
    a.message("to the app").await;
    until_seen(&mut seen, "pongs go on", |s| matches!(s, Seen::Pong)).await;
    a.h.shutdown().await;
    a.h.stopped().await;
    b.h.shutdown().await;
}

#[test]
fn echo_beside_an_app_behaviour() {
    common::on_tokio(beside_app_behaviour);
}

/// The app's swarm dials a node twice: two connections, each with a chat substream;
/// the core keeps one and closes the other, and the swarm closes that connection.
async fn duplicate_closed(rt: TokioRuntime) {
    let mut b = swarm_probe(&rt, options("b", 111)).await;
    let (mut swarm, h, events) = app_swarm(options("app", 110));
    let target: Multiaddr = addr_of(&b, "tcp").parse().unwrap();
    for _ in 0..2 {
        swarm
            .dial(
                DialOpts::peer_id(b.id())
                    .addresses(vec![target.clone()])
                    .condition(PeerCondition::Always)
                    .build(),
            )
            .unwrap();
    }
    let mut seen = drive(swarm);
    let mut a = Probe::from_parts(&rt, "app", h, events);
    until_seen(&mut seen, "two connections", |s| {
        matches!(s, Seen::Connections(2))
    })
    .await;
    a.peer_up(b.id()).await;
    until_seen(&mut seen, "the duplicate closed", |s| {
        matches!(s, Seen::Connections(1))
    })
    .await;
    assert!(
        a.dump().iter().all(|e| !e.starts_with("PeerDown")),
        "the session survives: {:?}",
        a.dump()
    );
    a.h.send("general", "still here").await.unwrap();
    b.message("still here").await;
    assert_eq!(a.h.connection_count(b.id()).await.unwrap(), 1);
    a.h.shutdown().await;
    b.h.shutdown().await;
}

#[test]
fn duplicate_connection_closed_in_the_swarm() {
    common::on_tokio(duplicate_closed);
}

/// Dials in progress are capped (`max_pending_dials`): dials the node asks for beyond
/// the cap fail at once and are counted, and so do the swarm's own (QUIC) dials.
async fn dials_capped(rt: TokioRuntime) {
    let mut o = options("a", 120);
    o.driver.max_pending_dials = 1;
    let mut a = swarm_probe(&rt, o).await;
    // Accepts TCP (the backlog does) and never answers noise: dials to it hang.
    let hold = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hold.local_addr().unwrap().port();
    let ids: Vec<_> = (0..4u8)
        .map(|i| Identity::from_secret_bytes([200 + i; 32]).peer_id())
        .collect();
    for id in &ids[..3] {
        a.h.connect(&format!("/ip4/127.0.0.1/tcp/{port}/p2p/{id}"))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        a.wait("a refused dial", |e| {
            matches!(e, Event::DialFailed { reason, .. } if reason.to_string().contains("too many dials"))
        })
        .await;
    }
    let st = a.h.driver_stats().await.unwrap();
    assert_eq!((st.dials, st.dials_refused), (1, 2), "{st:?}");
    let quic = format!("/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/{}", ids[3]);
    let r = a.h.connect(&quic).await;
    assert!(
        matches!(r, Err(echo_runtime::Error::Command(CommandError::InvalidAddr { ref reason, .. })) if reason.contains("too many dials")),
        "{r:?}"
    );
    assert_eq!(a.h.driver_stats().await.unwrap().dials_refused, 3);
    a.h.shutdown().await;
    drop(hold);
}

#[test]
fn dials_are_capped() {
    common::on_tokio(dials_capped);
}

/// A QUIC dial the swarm makes for `connect` reports its failure as `DialFailed` with
/// the id `connect` returned.
async fn quic_dial_failure(rt: TokioRuntime) {
    let mut a = swarm_probe(&rt, options("a", 130)).await;
    let b = swarm_probe(&rt, options("b", 131)).await;
    let quic = addr_of(&b, "quic-v1");
    let bare = &quic[..quic.find("/p2p/").unwrap()];
    let wrong = Identity::from_secret_bytes([9; 32]).peer_id();
    let dial = a.h.connect(&format!("{bare}/p2p/{wrong}")).await.unwrap();
    a.wait(
        "the dial's failure",
        |e| matches!(e, Event::DialFailed { dial: d, .. } if *d == dial),
    )
    .await;
    // The right id connects.
    a.h.connect(&quic).await.unwrap();
    a.peer_up(b.id()).await;
    a.h.shutdown().await;
    b.h.shutdown().await;
}

#[test]
fn quic_dial_failure_is_reported() {
    common::on_tokio(quic_dial_failure);
}

/// A flood of inbound connections that never open a chat substream: the ready-made
/// swarm keeps `max_incoming` of them and closes the rest at once; the node counts the
/// ones it holds.
async fn inbound_flood_capped(rt: TokioRuntime) {
    let mut o = SwarmOptions::from(options("a", 140));
    o.max_incoming = 3;
    let (h, events) = swarm::start(o).await.expect("swarm starts");
    let a = Probe::from_parts(&rt, "a", h, events);
    let tcp: std::net::SocketAddr = {
        let ma: Multiaddr = addr_of(&a, "tcp").parse().unwrap();
        let mut it = ma.iter();
        let ip = match it.next() {
            Some(libp2p::multiaddr::Protocol::Ip4(ip)) => ip,
            p => panic!("{p:?}"),
        };
        let port = match it.next() {
            Some(libp2p::multiaddr::Protocol::Tcp(p)) => p,
            p => panic!("{p:?}"),
        };
        (ip, port).into()
    };
    let mut peers = Vec::new();
    for _ in 0..10 {
        // Pings (answered), never a chat substream.
        peers.push(common::raw_peer(&rt, tcp, "/ipfs/ping/1.0.0", vec![7; 32]).await);
    }
    let mut closed = 0;
    bounded(&rt, WAIT, "7 connections closed", async {
        while closed < 7 {
            closed = 0;
            for p in &mut peers {
                if !matches!(p.try_recv(), Ok(None)) {
                    closed += 1;
                }
            }
            common::pause(&rt, Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(closed, 7, "three kept, the rest closed");
    let st = a.h.driver_stats().await.unwrap();
    assert_eq!((st.handshakes, st.connections), (3, 0), "{st:?}");
    a.h.shutdown().await;
}

#[test]
fn inbound_flood_is_capped() {
    common::on_tokio(inbound_flood_capped);
}

/// A relay server (circuit relay v2, identify) on its own task; its address.
fn relay_server() -> Multiaddr {
    relay_server_task().0
}

/// [`relay_server`], with its task (abort it to kill the relay).
fn relay_server_task() -> (Multiaddr, tokio::task::JoinHandle<()>) {
    #[derive(NetworkBehaviour)]
    struct Relay {
        relay: libp2p::relay::Behaviour,
        identify: libp2p::identify::Behaviour,
    }
    let key = libp2p::identity::Keypair::ed25519_from_bytes([160; 32]).unwrap();
    let id = key.public().to_peer_id();
    let mut swarm = tcp_swarm(key, |key| Relay {
        relay: libp2p::relay::Behaviour::new(key.public().to_peer_id(), Default::default()),
        identify: libp2p::identify::Behaviour::new(libp2p::identify::Config::new(
            "/relay/1.0.0".into(),
            key.public(),
        )),
    });
    // A port of its own, known before the swarm listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    swarm.listen_on(addr.clone()).unwrap();
    // It offers reservations only with a confirmed external address.
    swarm.add_external_address(addr.clone());
    let task = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (addr.with(libp2p::multiaddr::Protocol::P2p(id)), task)
}

/// The next network notice (relay, NAT, hole punch), skipping the node's own events.
async fn notice(p: &mut Probe<TokioRuntime>) -> RuntimeEvent {
    for _ in 0..1_000 {
        match p.next_raw().await {
            RuntimeEvent::Event(_) | RuntimeEvent::Lagged { .. } => {}
            e => return e,
        }
    }
    panic!("{}: no network notice", p.name)
}

/// The relay reports the reservation (and `addresses()` lists it); when the relay dies
/// the node says so and asks again after 1 s, then (the relay still gone) after 2 s.
async fn relay_lost(rt: TokioRuntime) {
    let (relay, task) = relay_server_task();
    let mut o = SwarmOptions::from(options("a", 152));
    o.relays = vec![relay.to_string()];
    let (h, events) = swarm::start(o).await.expect("reserved");
    let mut a = Probe::from_parts(&rt, "a", h, events);
    let circuit: Multiaddr = addr_of(&a, "p2p-circuit").parse().unwrap();
    match notice(&mut a).await {
        RuntimeEvent::RelayReserved { addr } => assert_eq!(addr, circuit),
        e => panic!("{e:?}"),
    }
    assert_eq!(a.h.addresses().relayed, vec![circuit]);
    task.abort();
    for retry in [swarm::RELAY_BACKOFF_FIRST, 2 * swarm::RELAY_BACKOFF_FIRST] {
        match notice(&mut a).await {
            RuntimeEvent::RelayLost {
                relay: r, retry_in, ..
            } => assert_eq!((r, retry_in), (relay.clone(), retry)),
            e => panic!("{e:?}"),
        }
        assert!(a.h.addresses().relayed.is_empty());
    }
    a.h.shutdown().await;
}

#[test]
fn lost_relay_is_retried_with_backoff() {
    common::on_tokio(relay_lost);
}

/// A node reserves a slot on a relay and lists its `/p2p-circuit` address; another
/// dials that address and they chat over the relayed connection (DCUtR may upgrade it
/// afterwards: on loopback both ends are reachable anyway).
async fn through_a_relay(rt: TokioRuntime) {
    let relay = relay_server();
    let mut o = SwarmOptions::from(options("a", 150));
    o.relays = vec![relay.to_string()];
    let (h, events) = swarm::start(o).await.expect("reserved");
    let mut a = Probe::from_parts(&rt, "a", h, events);
    let circuit = addr_of(&a, "p2p-circuit");
    assert!(
        circuit.ends_with(&format!("/p2p-circuit/p2p/{}", a.id())),
        "{circuit}"
    );
    let mut b = swarm_probe(&rt, options("b", 151)).await;
    b.h.connect(&circuit).await.unwrap();
    a.peer_up(b.id()).await;
    let up = b
        .wait(
            "a up",
            |e| matches!(e, Event::PeerUp(p) if p.peer == a.id()),
        )
        .await;
    // The session starts on the relayed connection (the core is told its address).
    let Event::PeerUp(info) = up else {
        unreachable!()
    };
    assert!(
        info.addr.to_string().contains("/p2p-circuit"),
        "{}",
        info.addr
    );
    b.h.send("general", "via the relay").await.unwrap();
    a.message("via the relay").await;
    a.h.send("general", "back").await.unwrap();
    b.message("back").await;
    a.h.shutdown().await;
    b.h.shutdown().await;
}

#[test]
fn chat_through_a_relay() {
    common::on_tokio(through_a_relay);
}

// ---- Files over the swarm (`/echo/blob/1.0.0` substreams of its direct connections).

/// Longest a whole transfer may take (debug build, loaded machine).
const TRANSFER: Duration = Duration::from_secs(60);

/// `o` with file transfer on, its store in `dir`.
fn files_in(mut o: Options, dir: &std::path::Path) -> Options {
    o.files = Some(FilesOptions::new(dir));
    o
}

/// A file of `size` bytes (a xorshift stream from `seed`), with its bytes.
fn make_file(path: &std::path::Path, size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let bytes: Vec<u8> = (0..size.div_ceil(8))
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_be_bytes()
        })
        .take(size)
        .collect();
    std::fs::write(path, &bytes).unwrap();
    bytes
}

/// How transfer `id` ends: where the file is, or why it failed.
async fn transfer_end<R: Runtime>(p: &mut Probe<R>, id: TransferId) -> Result<PathBuf, String> {
    let end = p
        .wait_other("the transfer's end", TRANSFER, |e| {
            matches!(e, RuntimeEvent::TransferDone { id: i, .. }
                | RuntimeEvent::TransferFailed { id: i, .. } if *i == id)
        })
        .await;
    match end {
        RuntimeEvent::TransferDone { path, .. } => Ok(path),
        RuntimeEvent::TransferFailed { reason, .. } => Err(reason),
        _ => unreachable!(),
    }
}

/// `from` shares a file of `size` bytes, `to` downloads it: it arrives identical.
async fn share<R: Runtime, S: Runtime>(
    from: &mut Probe<R>,
    to: &mut Probe<S>,
    dir: &std::path::Path,
    size: usize,
    seed: u64,
) -> TransferId {
    let src = dir.join(format!("{}-{seed}.bin", from.name));
    let bytes = make_file(&src, size, seed);
    let offer = from.h.share_file(src).await.unwrap();
    let id =
        to.h.download(offer, from.id(), dir.join(format!("to-{}", to.name)))
            .await
            .unwrap();
    let path = transfer_end(to, id).await.expect("transfer done");
    assert!(std::fs::read(&path).unwrap() == bytes, "{path:?} differs");
    id
}

/// Two swarm nodes: a file (32 MiB, `ECHO_FILE_MIB` to change) arrives identical
/// while room messages flow both ways, over one blob substream each.
async fn swarm_file_while_chat_flows(rt: TokioRuntime) {
    let mib: usize = std::env::var("ECHO_FILE_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let tmp = tempfile::tempdir().unwrap();
    let mut a = swarm_probe(&rt, files_in(options("a", 170), &tmp.path().join("a"))).await;
    let mut b = swarm_probe(&rt, files_in(options("b", 171), &tmp.path().join("b"))).await;
    b.h.connect(&addr_of(&a, "tcp")).await.unwrap();
    a.peer_up(b.id()).await;
    b.peer_up(a.id()).await;
    let src = tmp.path().join("big.bin");
    let bytes = make_file(&src, mib << 20, 7);
    let offer = a.h.share_file(src).await.unwrap();
    let id =
        b.h.download(offer, a.id(), tmp.path().join("dl"))
            .await
            .unwrap();
    for i in 0..10 {
        b.h.send("general", &format!("during {i}")).await.unwrap();
        a.h.send("general", &format!("back {i}")).await.unwrap();
    }
    for i in 0..10 {
        a.message(&format!("during {i}")).await;
        b.message(&format!("back {i}")).await;
    }
    let path = transfer_end(&mut b, id).await.expect("transfer done");
    assert!(std::fs::read(&path).unwrap() == bytes, "{path:?} differs");
    for p in [&a, &b] {
        let s = p.h.driver_stats().await.unwrap();
        assert_eq!(
            (s.blob_links, s.blob.lies_caught),
            (1, 0),
            "{}: {s:?}",
            p.name
        );
    }
    a.h.shutdown().await;
    b.h.shutdown().await;
}

#[test]
fn swarm_file_arrives_identical_while_chat_flows() {
    common::on_tokio(swarm_file_while_chat_flows);
}

/// Two swarm nodes dial each other at once (3 rounds): once the core has closed the
/// duplicate, each has one blob substream, and files go both ways over it.
async fn swarm_simultaneous_dials(rt: TokioRuntime) {
    for round in 0..3u64 {
        let tmp = tempfile::tempdir().unwrap();
        let seed = 180 + 2 * round;
        let mut a = swarm_probe(&rt, files_in(options("a", seed), &tmp.path().join("a"))).await;
        let mut b = swarm_probe(&rt, files_in(options("b", seed + 1), &tmp.path().join("b"))).await;
        let (ra, rb) = futures::join!(
            a.h.connect(&addr_of(&b, "tcp")),
            b.h.connect(&addr_of(&a, "tcp"))
        );
        ra.unwrap();
        rb.unwrap();
        a.peer_up(b.id()).await;
        b.peer_up(a.id()).await;
        let (aid, bid) = (a.id(), b.id());
        a.until("one connection", move |n| n.connection_count(&bid) == 1)
            .await;
        b.until("one connection", move |n| n.connection_count(&aid) == 1)
            .await;
        for p in [&a, &b] {
            until_stats(p, "one blob link", |s| s.blob_links == 1).await;
        }
        share(&mut a, &mut b, tmp.path(), 1 << 20, round).await;
        share(&mut b, &mut a, tmp.path(), 1 << 20, round + 100).await;
        for p in [&a, &b] {
            let s = p.h.driver_stats().await.unwrap();
            assert_eq!(s.blob_links, 1, "{}: {s:?}", p.name);
        }
        a.h.shutdown().await;
        b.h.shutdown().await;
    }
}

#[test]
fn swarm_one_blob_stream_after_simultaneous_dials() {
    common::on_tokio(swarm_simultaneous_dials);
}

/// A swarm node and a direct-driver node (tokio, and smol with that feature) send each
/// other files, whichever of them opens the blob substream.
async fn swarm_and_direct_files<R: Runtime>(tk: TokioRuntime, rt: R, seed: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = swarm_probe(&tk, files_in(options("swarm", seed), &tmp.path().join("s"))).await;
    let o = files_in(options("direct", seed + 1), &tmp.path().join("d"));
    let mut d = Probe::start(&rt, o).await;
    d.h.connect(&addr_of(&s, "tcp")).await.unwrap();
    s.peer_up(d.id()).await;
    d.peer_up(s.id()).await;
    share(&mut s, &mut d, tmp.path(), 3 << 20, 1).await;
    share(&mut d, &mut s, tmp.path(), 3 << 20, 2).await;
    s.h.shutdown().await;
    d.h.shutdown().await;
}

#[test]
fn swarm_and_direct_nodes_share_files() {
    // Seeds with either peer id the lower one (the opener).
    common::on_tokio(|tk| swarm_and_direct_files(tk.clone(), tk, 190));
    common::on_tokio(|tk| swarm_and_direct_files(tk.clone(), tk, 193));
    #[cfg(feature = "smol")]
    common::on_tokio(|tk| swarm_and_direct_files(tk, echo_runtime::smol::SmolRuntime, 196));
}

/// Two swarm nodes whose only link is a relayed circuit (neither listens, so no hole
/// punch can make a direct one): the chat works, no blob substream is opened, and a
/// download from the other fails for want of a source instead of using the circuit.
async fn no_files_over_a_relay(rt: TokioRuntime) {
    let tmp = tempfile::tempdir().unwrap();
    let relay = relay_server();
    let no_listen = |name: &str, seed: u64| {
        let mut o = files_in(options(name, seed), &tmp.path().join(name));
        o.listen.clear();
        o
    };
    let mut o = SwarmOptions::from(no_listen("a", 200));
    o.relays = vec![relay.to_string()];
    let (h, events) = swarm::start(o).await.expect("reserved");
    let mut a = Probe::from_parts(&rt, "a", h, events);
    let mut ob = no_listen("b", 201);
    if let Some(f) = ob.files.as_mut() {
        // One try, soon given up (the circuit must not be used instead).
        f.config.request_timeout = Duration::from_millis(500);
        f.config.timeout_limit = 1;
    }
    let mut b = swarm_probe(&rt, ob).await;
    b.h.connect(&addr_of(&a, "p2p-circuit")).await.unwrap();
    a.peer_up(b.id()).await;
    b.peer_up(a.id()).await;
    b.h.send("general", "via the relay").await.unwrap();
    a.message("via the relay").await;
    let src = tmp.path().join("f.bin");
    make_file(&src, 1 << 20, 3);
    let offer = a.h.share_file(src).await.unwrap();
    let id =
        b.h.download(offer, a.id(), tmp.path().join("dl"))
            .await
            .unwrap();
    let end = transfer_end(&mut b, id).await;
    assert!(end.is_err(), "the file came over the relay: {end:?}");
    for p in [&a, &b] {
        let s = p.h.driver_stats().await.unwrap();
        assert_eq!(s.blob_links, 0, "{}: {s:?}", p.name);
    }
    let peers = b.h.peers().await.unwrap();
    assert!(
        peers[0].addr.to_string().contains("/p2p-circuit"),
        "{peers:?}"
    );
    a.h.send("general", "chat goes on").await.unwrap();
    b.message("chat goes on").await;
    a.h.shutdown().await;
    b.h.shutdown().await;
}

#[test]
fn files_never_use_a_relayed_circuit() {
    common::on_tokio(no_files_over_a_relay);
}
