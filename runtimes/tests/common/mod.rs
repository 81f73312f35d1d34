//! Test harness: run one scenario on each runtime, bounded in time; wait on events with a
//! timeout; a raw libp2p client for misbehaving peers.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use echo_proto::{Config, Event, PeerId};
use echo_runtime::{Events, Handle, Options, Runtime, RuntimeEvent};
use futures::channel::oneshot;
use futures::future::{self, Either};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p_core::muxing::StreamMuxer;
use libp2p_core::upgrade::OutboundConnectionUpgrade;
use libp2p_identity::Keypair;
use multistream_select::{dialer_select_proto, Version};

/// Longest a whole scenario may run.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(60);
/// Longest one expected event may take (generous: the machine may be loaded).
pub const WAIT: Duration = Duration::from_secs(20);

/// Runs `f` with a timeout on the runtime's own timer.
pub async fn bounded<R: Runtime, T>(
    rt: &R,
    limit: Duration,
    what: &str,
    f: impl Future<Output = T>,
) -> T {
    let mut timer = rt.timer(rt.now() + limit);
    let sleep = future::poll_fn(move |cx| timer.as_mut().poll(cx));
    match future::select(std::pin::pin!(f), std::pin::pin!(sleep)).await {
        Either::Left((v, _)) => v,
        Either::Right(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Sleeps (only for pacing, never to wait for a condition).
pub async fn pause<R: Runtime>(rt: &R, d: Duration) {
    let mut timer = rt.timer(rt.now() + d);
    future::poll_fn(move |cx| timer.as_mut().poll(cx)).await
}

/// Reports slow scenarios (seen with `--nocapture`).
struct Timed(&'static str, Instant);
impl Drop for Timed {
    fn drop(&mut self) {
        let t = self.1.elapsed();
        if t > Duration::from_secs(2) {
            eprintln!(
                "slow scenario on {}: {t:?} ({:?})",
                self.0,
                std::thread::current().name()
            );
        }
    }
}

#[cfg(feature = "tokio")]
pub fn on_tokio<F: Future<Output = ()>>(f: impl FnOnce(echo_runtime::tokio::TokioRuntime) -> F) {
    let _t = Timed("tokio", Instant::now());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = echo_runtime::tokio::TokioRuntime::current();
        bounded(&r.clone(), SCENARIO_LIMIT, "scenario", f(r)).await
    });
    rt.shutdown_timeout(Duration::from_secs(1));
}

#[cfg(feature = "smol")]
pub fn on_smol<F: Future<Output = ()>>(f: impl FnOnce(echo_runtime::smol::SmolRuntime) -> F) {
    let _t = Timed("smol", Instant::now());
    let r = echo_runtime::smol::SmolRuntime;
    smol::block_on(bounded(&r, SCENARIO_LIMIT, "scenario", f(r)));
}

#[cfg(feature = "async-std")]
pub fn on_async_std<F: Future<Output = ()>>(
    f: impl FnOnce(echo_runtime::async_std::AsyncStdRuntime) -> F,
) {
    let _t = Timed("async-std", Instant::now());
    let r = echo_runtime::async_std::AsyncStdRuntime;
    async_std::task::block_on(bounded(&r, SCENARIO_LIMIT, "scenario", f(r)));
}

/// `scenario!(name)` runs `async fn name<R: Runtime>(rt: R)` on every enabled runtime,
/// as tests `name::tokio`, `name::smol`, `name::async_std`.
#[macro_export]
macro_rules! scenario {
    ($name:ident) => {
        mod $name {
            #[cfg(feature = "tokio")]
            #[test]
            fn tokio() {
                $crate::common::on_tokio(super::$name);
            }
            #[cfg(feature = "smol")]
            #[test]
            fn smol() {
                $crate::common::on_smol(super::$name);
            }
            #[cfg(feature = "async-std")]
            #[test]
            fn async_std() {
                $crate::common::on_async_std(super::$name);
            }
        }
    };
    ($name:ident, ignore = $why:literal) => {
        mod $name {
            #[cfg(feature = "tokio")]
            #[test]
            #[ignore = $why]
            fn tokio() {
                $crate::common::on_tokio(super::$name);
            }
            #[cfg(feature = "smol")]
            #[test]
            #[ignore = $why]
            fn smol() {
                $crate::common::on_smol(super::$name);
            }
            #[cfg(feature = "async-std")]
            #[test]
            #[ignore = $why]
            fn async_std() {
                $crate::common::on_async_std(super::$name);
            }
        }
    };
}

/// Options for a test node on 127.0.0.1 with a fixed seed and fast redials.
pub fn options(name: &str, seed: u64) -> Options {
    let mut o = Options::new(["/ip4/127.0.0.1/tcp/0"]);
    o.identity = echo_proto::Identity::from_secret_bytes([seed as u8; 32]);
    o.seed = seed;
    o.config = Config::default()
        .name(name)
        .backoff_initial(Duration::from_millis(100))
        .backoff_max(Duration::from_millis(800));
    o
}

/// A running node and everything it has reported.
pub struct Probe<R: Runtime> {
    pub rt: R,
    pub name: String,
    pub h: Handle,
    events: Events,
    seen: Vec<(Event, bool)>,
    /// Runtime events other than the node's (transfers), not yet taken.
    others: Vec<RuntimeEvent>,
}

impl<R: Runtime> Probe<R> {
    pub async fn start(rt: &R, o: Options) -> Self {
        let name = o.config.name.clone();
        let (h, events) = echo_runtime::start(rt.clone(), o)
            .await
            .expect("node starts");
        Probe {
            rt: rt.clone(),
            name,
            h,
            events,
            seen: Vec::new(),
            others: Vec::new(),
        }
    }

    /// A probe on a node started otherwise (e.g. in a swarm).
    pub fn from_parts(rt: &R, name: &str, h: Handle, events: Events) -> Self {
        Probe {
            rt: rt.clone(),
            name: name.to_string(),
            h,
            events,
            seen: Vec::new(),
            others: Vec::new(),
        }
    }

    pub fn id(&self) -> PeerId {
        self.h.peer_id()
    }

    pub fn addr(&self) -> String {
        self.h.listen_addrs()[0].to_string()
    }

    /// The socket address it listens on.
    pub fn socket(&self) -> SocketAddr {
        let mut ip = None;
        let mut port = None;
        for p in self.h.listen_addrs()[0].iter() {
            match p {
                multiaddr::Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
                multiaddr::Protocol::Tcp(p) => port = Some(p),
                _ => {}
            }
        }
        SocketAddr::new(ip.unwrap(), port.unwrap())
    }

    /// The next event matching `pred` not returned before (earlier events included).
    pub async fn wait(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        if let Some((e, taken)) = self.seen.iter_mut().find(|(e, t)| !*t && pred(e)) {
            *taken = true;
            return e.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut timer = self.rt.timer(self.rt.now() + left);
            let sleep = future::poll_fn(move |cx| timer.as_mut().poll(cx));
            match future::select(self.events.next(), std::pin::pin!(sleep)).await {
                Either::Left((Some(RuntimeEvent::Lagged { missed }), _)) => {
                    panic!(
                        "{}: lagged ({missed} events dropped) waiting for {what}",
                        self.name
                    )
                }
                Either::Left((Some(RuntimeEvent::Event(e)), _)) => {
                    let hit = pred(&e);
                    self.seen.push((e.clone(), hit));
                    if hit {
                        return e;
                    }
                }
                Either::Left((Some(e), _)) => self.others.push(e),
                Either::Left((None, _)) => {
                    panic!("{}: events ended while waiting for {what}", self.name)
                }
                Either::Right(_) => {
                    let mut all: Vec<String> = self.seen.iter().map(|(e, _)| short(e)).collect();
                    all.dedup_by(|a, b| {
                        a.split('{').next() == b.split('{').next() && a.starts_with("DialFailed")
                    });
                    let first = all.len().saturating_sub(30);
                    panic!(
                        "{}: no {what} within {WAIT:?}; events: {:#?}",
                        self.name,
                        &all[first..]
                    )
                }
            }
        }
    }

    /// The next runtime event other than the node's (a transfer's) matching `pred`, not
    /// returned before; the node's events meanwhile are recorded for [`Probe::wait`].
    pub async fn wait_other(
        &mut self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&RuntimeEvent) -> bool,
    ) -> RuntimeEvent {
        if let Some(i) = self.others.iter().position(&pred) {
            return self.others.remove(i);
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = bounded(&self.rt, left, what, self.events.next()).await;
            match next {
                Some(RuntimeEvent::Event(e)) => self.seen.push((e, false)),
                Some(e) if pred(&e) => return e,
                Some(e) => self.others.push(e),
                None => panic!("{}: events ended while waiting for {what}", self.name),
            }
        }
    }

    /// The next item of the event stream, raw (`Lagged` included), bypassing `wait`'s
    /// record.
    pub async fn next_raw(&mut self) -> RuntimeEvent {
        bounded(&self.rt, WAIT, "next event", self.events.next())
            .await
            .expect("events go on")
    }

    /// Everything seen so far, short.
    pub fn dump(&self) -> Vec<String> {
        self.seen.iter().map(|(e, _)| short(e)).collect()
    }

    pub async fn peer_up(&mut self, peer: PeerId) {
        self.wait(
            "peer up",
            |e| matches!(e, Event::PeerUp(p) if p.peer == peer),
        )
        .await;
    }

    pub async fn peer_down(&mut self, peer: PeerId) -> String {
        match self
            .wait(
                "peer down",
                |e| matches!(e, Event::PeerDown { peer: p, .. } if *p == peer),
            )
            .await
        {
            Event::PeerDown { reason, .. } => reason.to_string(),
            _ => unreachable!(),
        }
    }

    /// Waits for a room message with exactly this text.
    pub async fn message(&mut self, text: &str) -> Event {
        let t = text.to_string();
        self.wait(
            &format!("message {text:?}"),
            move |e| matches!(e, Event::Message { msg, .. } if msg.text() == t),
        )
        .await
    }

    /// Polls `f` on the node until it holds (every 5 ms, up to [`WAIT`]).
    pub async fn until(
        &self,
        what: &str,
        f: impl Fn(&echo_proto::Node) -> bool + Clone + Send + 'static,
    ) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.h.inspect(f.clone()).await.expect("node runs") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {what} not true within {WAIT:?}",
                self.name
            );
            pause(&self.rt, Duration::from_millis(5)).await;
        }
    }
}

fn short(e: &Event) -> String {
    match e {
        Event::Message { msg, .. } => format!("Message({}: {})", msg.display_author(), msg.text()),
        e => {
            let s = format!("{e:?}");
            s.chars().take(200).collect()
        }
    }
}

/// A raw libp2p connection made by hand: TCP, noise (fresh identity), yamux, one
/// substream negotiated as `protocol`, on which `junk` is written. Resolves (through the
/// returned receiver) with the number of bytes the node wrote before closing, once the
/// substream ends.
pub async fn raw_peer<R: Runtime>(
    rt: &R,
    addr: SocketAddr,
    protocol: &'static str,
    junk: Vec<u8>,
) -> oneshot::Receiver<Result<usize, String>> {
    let (_, mut muxer) = raw_muxer(rt, addr, &Keypair::generate_ed25519()).await;
    let stream = future::poll_fn(|cx| Pin::new(&mut muxer).poll_outbound(cx))
        .await
        .unwrap();
    let (tx, rx) = oneshot::channel();
    rt.spawn(async move {
        let work = async move {
            let (_, mut s) = dialer_select_proto(stream, [protocol], Version::V1)
                .await
                .map_err(|e| e.to_string())?;
            s.write_all(&junk).await.map_err(|e| e.to_string())?;
            s.flush().await.map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 4096];
            let mut total = 0;
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return Ok(total),
                    Ok(n) => total += n,
                }
            }
        };
        // yamux moves nothing unless its connection is polled.
        let drive = future::poll_fn(move |cx| loop {
            match Pin::new(&mut muxer).poll_inbound(cx) {
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(e.to_string()),
                Poll::Pending => return Poll::Pending,
            }
        });
        let r = match future::select(std::pin::pin!(work), std::pin::pin!(drive)).await {
            Either::Left((r, _)) => r,
            // The connection ended; whatever the substream read is lost to us, which is fine.
            Either::Right((e, _)) => Err(format!("connection ended: {e}")),
        };
        let _ = tx.send(r);
    });
    rx
}

/// A raw yamux connection to `addr` with `key`: TCP, noise, yamux, made by hand. Returns
/// the remote's peer id and the muxer.
pub async fn raw_muxer<R: Runtime>(
    rt: &R,
    addr: SocketAddr,
    key: &Keypair,
) -> (PeerId, RawMuxer<R>) {
    let tcp = rt.connect(addr).await.expect("tcp connect");
    let (_, io) = dialer_select_proto(tcp, ["/noise"], Version::V1)
        .await
        .expect("noise negotiated");
    let (peer, io) = libp2p_noise::Config::new(key)
        .unwrap()
        .upgrade_outbound(io, "/noise")
        .await
        .expect("noise handshake");
    let (_, io) = dialer_select_proto(io, ["/yamux/1.0.0"], Version::V1)
        .await
        .expect("yamux negotiated");
    let muxer = libp2p_yamux::Config::default()
        .upgrade_outbound(io, "/yamux/1.0.0")
        .await
        .unwrap();
    (peer, muxer)
}

/// What [`raw_muxer`] returns.
pub type RawMuxer<R> = libp2p_yamux::Muxer<
    multistream_select::Negotiated<
        libp2p_noise::Output<multistream_select::Negotiated<<R as Runtime>::Tcp>>,
    >,
>;

/// A tokio swarm over TCP with the behaviour `make` builds.
pub fn tcp_swarm<B: libp2p::swarm::NetworkBehaviour>(
    key: libp2p::identity::Keypair,
    make: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> libp2p::Swarm<B> {
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(make)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(std::time::Duration::from_secs(30)))
        .build()
}

/// Polls the driver's counters until `f` holds (every 5 ms, up to [`WAIT`]); returns them.
pub async fn until_stats<R: Runtime>(
    p: &Probe<R>,
    what: &str,
    f: impl Fn(&echo_runtime::DriverStats) -> bool,
) -> echo_runtime::DriverStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = p.h.driver_stats().await.expect("node runs");
        if f(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{}: {what}: {s:?}", p.name);
        pause(&p.rt, Duration::from_millis(5)).await;
    }
}
