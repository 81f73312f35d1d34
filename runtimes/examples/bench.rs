//! Loopback benchmarks of echo nodes, the same workloads as `shared/peer-bench/gossipsub`.
//!
//! ```sh
//! cargo run --release -p echo-runtime --example bench --all-features -- pair-throughput --runtime tokio
//! cargo run --release -p echo-runtime --example bench --all-features -- latency --runtime smol
//! cargo run --release -p echo-runtime --example bench --all-features -- fanout --runtime async-std
//! cargo run --release -p echo-runtime --example bench --all-features -- raw --runtime tokio
//! cargo run --release -p echo-runtime --example bench --all-features -- file --mib 1024
//! cargo run --release -p echo-runtime --example bench --all-features -- file-latency --mib 1024
//! cargo run --release -p echo-runtime --example bench --all-features -- file-rss --mib 4096
//! cargo run --release -p echo-runtime --example bench --all-features -- latency --runtime swarm-quic
//! ```
//!
//! `file` shares a file of `--mib N` MiB (default 256) on one node and downloads it on
//! another (hashing excluded, the downloader's final re-hash included); compare with
//! `raw --msgs N*16 --size 65526`, the same bytes on one bare yamux substream.
//! `--serve-mib R` sets the provider's per-peer rate (default: the core's default).
//! `file-latency` measures chat latency (`--rate` messages per second from the serving
//! node to the downloading one) first idle (`--msgs` messages), then while a `--mib` MiB
//! transfer runs on the same connection. `file-rss` runs this example again twice, as
//! `file-serve` and `file-get` (one side each, separate processes), and reports the peak
//! RSS (`VmHWM`) of each.
//! Options: `--msgs N --size S --rate R --nodes K --mib M --runtime
//! tokio|smol|async-std|swarm|swarm-quic --app tasks|main`. `latency` runs its sender
//! and receiver as tasks of the runtime (`--app tasks`, the default, as an app would
//! and as the gossipsub harness does) or on the thread blocked on it (`--app main`,
//! this bench's layout before 2026-12-02: two cross-thread wake-ups per message). `swarm` runs every node in the ready-made
//! libp2p swarm of `echo_runtime::swarm` (on tokio) connected over TCP, `swarm-quic`
//! the same over QUIC.
//! Prints one JSON line per run. All nodes run in one process on 127.0.0.1; smol uses its
//! global executor with `SMOL_THREADS=2` (set here unless already set), tokio a
//! multi-thread runtime with one worker per core, async-std its global executor.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use echo_proto::{Config, Event, PeerId};
use echo_runtime::{Events, Handle, Options, Runtime, RuntimeEvent};
use futures::future::{self, Either};
use futures::stream::FuturesOrdered;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p_core::muxing::StreamMuxer;
use libp2p_core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade};
use libp2p_identity::Keypair;
use multistream_select::{dialer_select_proto, listener_select_proto, Version};

#[path = "bench/files.rs"]
mod files;

#[derive(Debug, Clone)]
struct Args {
    cmd: String,
    runtime: String,
    msgs: usize,
    size: usize,
    rate: f64,
    nodes: usize,
    window: usize,
    mib: u64,
    serve_mib: Option<u64>,
    peer: String,
    offer: String,
    /// `latency`: where the app's sender and receiver run: `tasks` (spawned on the
    /// runtime, like an app's tasks and like the gossipsub harness, whose publisher and
    /// subscriber run in their node's task) or `main` (the thread blocked on the
    /// runtime, which every message then crosses twice).
    app: String,
}

fn args() -> Args {
    let mut a = std::env::args().skip(1);
    let cmd = a.next().unwrap_or_else(|| "pair-throughput".into());
    let mut r = Args {
        msgs: 0,
        size: 256,
        rate: 1000.0,
        nodes: 10,
        runtime: "tokio".into(),
        window: 4096,
        mib: 256,
        serve_mib: None,
        peer: String::new(),
        offer: String::new(),
        app: "tasks".into(),
        cmd,
    };
    while let Some(k) = a.next() {
        let v = a.next().expect("a value");
        match k.as_str() {
            "--msgs" => r.msgs = v.parse().unwrap(),
            "--size" => r.size = v.parse().unwrap(),
            "--rate" => r.rate = v.parse().unwrap(),
            "--nodes" => r.nodes = v.parse().unwrap(),
            "--runtime" => r.runtime = v,
            "--app" => r.app = v,
            "--window" => r.window = v.parse().unwrap(),
            "--mib" => r.mib = v.parse().unwrap(),
            "--serve-mib" => r.serve_mib = Some(v.parse().unwrap()),
            "--peer" => r.peer = v,
            "--offer" => r.offer = v,
            _ => panic!("unknown option {k}"),
        }
    }
    if r.msgs == 0 {
        r.msgs = match r.cmd.as_str() {
            "pair-throughput" | "raw" => 100_000,
            "file-latency" => 2_000,
            _ => 10_000,
        };
    }
    if matches!(r.cmd.as_str(), "latency" | "file-latency")
        && !std::env::args().any(|a| a == "--size")
    {
        r.size = 64;
    }
    r
}

fn main() {
    if std::env::var_os("SMOL_THREADS").is_none() {
        // Before smol's global executor is first used.
        std::env::set_var("SMOL_THREADS", "2");
    }
    let a = args();
    if a.runtime.starts_with("swarm") {
        SWARM.set(a.runtime.clone()).unwrap();
    }
    let json = match a.runtime.as_str() {
        "tokio" | "swarm" | "swarm-quic" => {
            let tk = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            let _g = tk.enter();
            tk.block_on(run(echo_runtime::tokio::TokioRuntime::current(), a.clone()))
        }
        "smol" => smol::block_on(run(echo_runtime::smol::SmolRuntime, a.clone())),
        "async-std" => {
            async_std::task::block_on(run(echo_runtime::async_std::AsyncStdRuntime, a.clone()))
        }
        r => panic!("unknown runtime {r}"),
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{{\"workload\":\"{}\",\"runtime\":\"{}\",\"msgs\":{},\"size\":{},{json},\"loadavg_end\":\"{}\"}}",
        a.cmd,
        a.runtime,
        a.msgs,
        a.size,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
}

async fn run<R: Runtime>(rt: R, a: Args) -> String {
    match a.cmd.as_str() {
        "pair-throughput" => pair(rt, a).await,
        "latency" => latency(rt, a).await,
        "fanout" => fanout(rt, a).await,
        "raw" => raw(rt, a).await,
        "file" => files::file(rt, a).await,
        "file-latency" => files::file_latency(rt, a).await,
        "file-serve" => files::file_serve(rt, a).await,
        "file-get" => files::file_get(rt, a).await,
        "file-rss" => files::file_rss(&a),
        "crypto" => crypto(),
        c => panic!("unknown workload {c}"),
    }
}

fn options(i: u64) -> Options {
    let mut o = Options::new(["/ip4/127.0.0.1/tcp/0"]);
    o.identity = echo_proto::Identity::from_secret_bytes([i as u8 + 1; 32]);
    o.seed = i;
    o.config = Config::default()
        .name(format!("n{i}"))
        .auto_connect(false)
        .rate_limit(None)
        .max_queued_bytes(1 << 30);
    // The receivers read as fast as they can; a lag would be a failed run, not a figure.
    o.driver.event_buffer = 1 << 20;
    o
}

/// `swarm` or `swarm-quic` when the nodes run in the swarm adapter.
static SWARM: std::sync::OnceLock<String> = std::sync::OnceLock::new();

async fn node<R: Runtime>(rt: &R, i: u64) -> (Handle, Events) {
    if SWARM.get().is_some() {
        return echo_runtime::swarm::start(options(i)).await.unwrap();
    }
    echo_runtime::start(rt.clone(), options(i)).await.unwrap()
}

/// Where to dial `h`: its QUIC address for `swarm-quic`, else its first (TCP).
fn addr(h: &Handle) -> String {
    let quic = SWARM.get().is_some_and(|m| m == "swarm-quic");
    h.listen_addrs()
        .iter()
        .find(|a| !quic || a.to_string().contains("quic"))
        .expect("a listen address")
        .to_string()
}

async fn up(events: &mut Events, peer: PeerId) {
    while let Some(e) = events.next().await {
        if matches!(e, RuntimeEvent::Event(Event::PeerUp(p)) if p.peer == peer) {
            return;
        }
    }
    panic!("events ended");
}

/// Consumes a node's events in the background (the publisher's own deliveries).
fn sink<R: Runtime>(rt: &R, mut events: Events) {
    rt.spawn(async move { while events.next().await.is_some() {} });
}

/// A text of exactly `size` bytes starting with `seq send_ns `.
fn text(seq: usize, send_ns: u64, size: usize) -> String {
    let mut t = format!("{seq} {send_ns} ");
    while t.len() < size {
        t.push('x');
    }
    t
}

/// Sends `n` messages as fast as the node takes them, at most `window` unanswered.
async fn publish(h: &Handle, n: usize, size: usize, window: usize, start: Instant) {
    let mut pending: FuturesOrdered<echo_runtime::Pending<echo_proto::SharedMessage>> =
        FuturesOrdered::new();
    for i in 0..n {
        if pending.len() >= window {
            pending.next().await.unwrap().unwrap();
        }
        let ns = start.elapsed().as_nanos() as u64;
        pending.push_back(h.send("general", &text(i, ns, size)));
    }
    while let Some(r) = pending.next().await {
        r.unwrap();
    }
}

/// Counts messages of `author` until `n` arrived; returns when the last did.
async fn receive(events: &mut Events, author: PeerId, n: usize) -> (usize, Instant) {
    let mut got = 0;
    let mut seen = vec![false; n];
    let mut dups = 0;
    while got < n {
        match events.next().await {
            Some(RuntimeEvent::Event(Event::Message { msg, .. })) if msg.author() == author => {
                let seq: usize = msg.text().split(' ').next().unwrap().parse().unwrap();
                if std::mem::replace(&mut seen[seq], true) {
                    dups += 1;
                } else {
                    got += 1;
                }
            }
            Some(RuntimeEvent::Lagged { missed }) => {
                panic!("receiver lagged: {missed} events dropped")
            }
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(dups, 0, "duplicate deliveries");
    (got, Instant::now())
}

async fn pair<R: Runtime>(rt: R, a: Args) -> String {
    let (ha, mut ea) = node(&rt, 0).await;
    let (hb, mut eb) = node(&rt, 1).await;
    ha.connect(&addr(&hb)).await.unwrap();
    up(&mut ea, hb.peer_id()).await;
    up(&mut eb, ha.peer_id()).await;
    sink(&rt, ea);
    let start = Instant::now();
    let author = ha.peer_id();
    let (recv, pubd) = future::join(receive(&mut eb, author, a.msgs), async {
        publish(&ha, a.msgs, a.size, a.window, start).await;
        Instant::now()
    })
    .await;
    let (got, end) = recv;
    let secs = end.duration_since(start).as_secs_f64();
    let stats = hb.stats().await.unwrap();
    let sigs = ha.stats().await.unwrap().signatures;
    ha.shutdown().await;
    hb.shutdown().await;
    format!(
        "\"msgs_per_s\":{:.0},\"MB_per_s\":{:.2},\"delivered\":{got},\"missing\":{},\"secs\":{secs:.3},\"publish_secs\":{:.3},\"signatures\":{sigs},\"frames_in\":{}",
        got as f64 / secs,
        (got * a.size) as f64 / 1e6 / secs,
        a.msgs - got,
        pubd.duration_since(start).as_secs_f64(),
        stats.frames_in
    )
}

async fn sleep_until<R: Runtime>(rt: &R, at: Instant) {
    let mut t = rt.timer(at);
    future::poll_fn(move |cx| t.as_mut().poll(cx)).await
}

/// Sends `n` messages of `size` bytes at `rate` a second, each carrying its send time
/// since `start`; returns how long that took.
async fn paced<R: Runtime>(
    rt: R,
    h: Handle,
    n: usize,
    rate: f64,
    size: usize,
    start: Instant,
) -> Duration {
    let t0 = Instant::now();
    for i in 0..n {
        sleep_until(&rt, t0 + Duration::from_secs_f64(i as f64 / rate)).await;
        let ns = start.elapsed().as_nanos() as u64;
        drop(h.send("general", &text(i, ns, size)));
    }
    t0.elapsed()
}

async fn latency<R: Runtime>(rt: R, a: Args) -> String {
    let (ha, mut ea) = node(&rt, 0).await;
    let (hb, mut eb) = node(&rt, 1).await;
    ha.connect(&addr(&hb)).await.unwrap();
    up(&mut ea, hb.peer_id()).await;
    up(&mut eb, ha.peer_id()).await;
    sink(&rt, ea);
    let start = Instant::now();
    let author = ha.peer_id();
    let n = a.msgs;
    let lat = Arc::new((0..n).map(|_| AtomicU64::new(u64::MAX)).collect::<Vec<_>>());
    let l2 = lat.clone();
    let recv = async move {
        let mut got = 0;
        while got < n {
            match eb.next().await {
                Some(RuntimeEvent::Event(Event::Message { msg, .. })) if msg.author() == author => {
                    let now = start.elapsed().as_nanos() as u64;
                    let mut it = msg.text().split(' ');
                    let seq: usize = it.next().unwrap().parse().unwrap();
                    let sent: u64 = it.next().unwrap().parse().unwrap();
                    l2[seq].store(now - sent, Ordering::Relaxed);
                    got += 1;
                }
                Some(_) => {}
                None => break,
            }
        }
    };
    let send = paced(rt.clone(), ha.clone(), n, a.rate, a.size, start);
    let (_, sent_in) = if a.app == "main" {
        future::join(recv, send).await
    } else {
        let (rtx, rrx) = futures::channel::oneshot::channel();
        let (stx, srx) = futures::channel::oneshot::channel();
        rt.spawn(async move {
            recv.await;
            let _ = rtx.send(());
        });
        rt.spawn(async move {
            let _ = stx.send(send.await);
        });
        let (r, s) = future::join(rrx, srx).await;
        r.unwrap();
        ((), s.unwrap())
    };
    let mut v: Vec<u64> = lat
        .iter()
        .map(|x| x.load(Ordering::Relaxed))
        .filter(|x| *x != u64::MAX)
        .collect();
    let missing = n - v.len();
    v.sort_unstable();
    let pct = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1] / 1000;
    let mean = v.iter().sum::<u64>() / v.len() as u64 / 1000;
    ha.shutdown().await;
    hb.shutdown().await;
    format!(
        "\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"max_us\":{},\"min_us\":{},\"mean_us\":{mean},\"missing\":{missing},\"achieved_rate\":{:.0}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        v[v.len() - 1] / 1000,
        v[0] / 1000,
        n as f64 / sent_in.as_secs_f64()
    )
}

async fn fanout<R: Runtime>(rt: R, a: Args) -> String {
    let (hp, mut ep) = node(&rt, 0).await;
    let mut subs = Vec::new();
    for i in 1..a.nodes as u64 {
        subs.push(node(&rt, i).await);
    }
    for (h, _) in &subs {
        hp.connect(&addr(h)).await.unwrap();
    }
    let mut waiting: std::collections::HashSet<PeerId> =
        subs.iter().map(|(h, _)| h.peer_id()).collect();
    while !waiting.is_empty() {
        match ep.next().await {
            Some(RuntimeEvent::Event(Event::PeerUp(p))) => {
                waiting.remove(&p.peer);
            }
            Some(_) => {}
            None => panic!("events ended"),
        }
    }
    for (_, e) in &mut subs {
        up(e, hp.peer_id()).await;
    }
    sink(&rt, ep);
    let start = Instant::now();
    let author = hp.peer_id();
    let n = a.msgs;
    let receivers = future::join_all(subs.iter_mut().map(|(_, e)| receive(e, author, n)));
    let (done, _) = future::join(receivers, publish(&hp, n, a.size, a.window, start)).await;
    let end = done.iter().map(|(_, t)| *t).max().unwrap();
    let delivered: usize = done.iter().map(|(g, _)| *g).sum();
    let secs = end.duration_since(start).as_secs_f64();
    hp.shutdown().await;
    for (h, _) in &subs {
        h.shutdown().await;
    }
    format!(
        "\"nodes\":{},\"msgs_per_s\":{:.0},\"deliveries_per_s\":{:.0},\"delivered\":{delivered},\"missing\":{},\"secs\":{secs:.3}",
        a.nodes,
        n as f64 / secs,
        delivered as f64 / secs,
        n * (a.nodes - 1) - delivered
    )
}

type Raw<R> = libp2p_yamux::Muxer<
    multistream_select::Negotiated<
        libp2p_noise::Output<multistream_select::Negotiated<<R as Runtime>::Tcp>>,
    >,
>;

/// Polls a muxer until it fails (yamux moves nothing otherwise).
async fn drive<M: StreamMuxer + Unpin>(mut m: M) {
    future::poll_fn(move |cx| loop {
        match Pin::new(&mut m).poll_inbound(cx) {
            std::task::Poll::Ready(Ok(_)) => continue,
            std::task::Poll::Ready(Err(_)) => return std::task::Poll::Ready(()),
            std::task::Poll::Pending => return std::task::Poll::Pending,
        }
    })
    .await
}

/// The ceiling: one yamux substream over noise over TCP, the same stack and libraries
/// as the nodes, carrying `msgs` records of `size + 10` bytes (a 256-byte message is
/// ~370 bytes as a signed frame; see the report) written 64 KiB at a time.
async fn raw<R: Runtime>(rt: R, a: Args) -> String {
    let (local, mut incoming) = rt.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let total = a.msgs * (a.size + 10);
    let (tx, rx) = futures::channel::oneshot::channel();
    let rt2 = rt.clone();
    rt.spawn(async move {
        let (tcp, _) = incoming.next().await.unwrap().unwrap();
        let key = Keypair::generate_ed25519();
        let (_, io) = listener_select_proto(tcp, ["/noise"]).await.unwrap();
        let (_, io) = libp2p_noise::Config::new(&key)
            .unwrap()
            .upgrade_inbound(io, "/noise")
            .await
            .unwrap();
        let (_, io) = listener_select_proto(io, ["/yamux/1.0.0"]).await.unwrap();
        let mut m: Raw<R> = libp2p_yamux::Config::default()
            .upgrade_inbound(io, "/yamux/1.0.0")
            .await
            .unwrap();
        let s = future::poll_fn(|cx| Pin::new(&mut m).poll_inbound(cx))
            .await
            .unwrap();
        rt2.spawn(drive(m));
        let (_, mut s) = listener_select_proto(s, ["/bench"]).await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < total {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got += n;
        }
        let _ = tx.send(Instant::now());
    });
    let tcp = rt.connect(local).await.unwrap();
    let key = Keypair::generate_ed25519();
    let (_, io) = dialer_select_proto(tcp, ["/noise"], Version::V1)
        .await
        .unwrap();
    let (_, io) = libp2p_noise::Config::new(&key)
        .unwrap()
        .upgrade_outbound(io, "/noise")
        .await
        .unwrap();
    let (_, io) = dialer_select_proto(io, ["/yamux/1.0.0"], Version::V1)
        .await
        .unwrap();
    let mut m: Raw<R> = libp2p_yamux::Config::default()
        .upgrade_outbound(io, "/yamux/1.0.0")
        .await
        .unwrap();
    let s = future::poll_fn(|cx| Pin::new(&mut m).poll_outbound(cx))
        .await
        .unwrap();
    let send = async {
        let (_, mut s) = dialer_select_proto(s, ["/bench"], Version::V1)
            .await
            .unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let start = Instant::now();
        let mut left = total;
        while left > 0 {
            let k = left.min(chunk.len());
            s.write_all(&chunk[..k]).await.unwrap();
            left -= k;
        }
        s.flush().await.unwrap();
        (start, s)
    };
    let (start, _s) = match future::select(Box::pin(send), Box::pin(drive(m))).await {
        Either::Left((r, d)) => {
            rt.spawn(d);
            r
        }
        Either::Right(_) => panic!("connection failed"),
    };
    let end = rx.await.unwrap();
    let secs = end.duration_since(start).as_secs_f64();
    format!(
        "\"MB_per_s\":{:.1},\"records_per_s\":{:.0},\"record_bytes\":{},\"secs\":{secs:.3}",
        total as f64 / 1e6 / secs,
        a.msgs as f64 / secs,
        a.size + 10
    )
}

/// What the core pays per message at low rates: one ed25519 signature (author) and one
/// verification (receiver), as `libp2p-identity` does them.
fn crypto() -> String {
    let k = Keypair::ed25519_from_bytes([9; 32]).unwrap();
    let msg = [7u8; 54];
    let n = 2000;
    let t = Instant::now();
    let mut sig = Vec::new();
    for _ in 0..n {
        sig = k.sign(&msg).unwrap();
    }
    let sign_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let pk = k.public();
    let t = Instant::now();
    for _ in 0..n {
        assert!(pk.verify(&msg, &sig));
    }
    let verify_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    format!("\"sign_us\":{sign_us:.1},\"verify_us\":{verify_us:.1}")
}
