//! # echo-runtime: echo chat nodes over real libp2p connections
//!
//! Embed a peer-to-peer chat node in an async Rust program: [`tokio::start`] (or
//! `smol::start`, `async_std::start`) listens, dials and runs an [`echo_proto::Node`]
//! (the sans-IO protocol core, re-exported here as [`proto`] so one dependency is
//! enough) over TCP + noise + yamux, and hands back a [`Handle`] for commands and an
//! [`Events`] stream.
//!
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use futures::StreamExt;
//! use echo_runtime::proto::Event;
//! use echo_runtime::{tokio::start, Options};
//!
//! let (node, mut events) = start(Options::new(["/ip4/127.0.0.1/tcp/0"])).await?;
//! println!("listening on {:?}", node.listen_addrs()); // .../tcp/<port>/p2p/<id>
//! node.connect("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...").await?;
//! node.join("general").await?;
//! node.send("general", "hello").await?;
//! while let Some(event) = events.next().await {
//!     if let Event::Message { msg, .. } = event {
//!         println!("{}: {}", msg.display_author(), msg.text);
//!     }
//! }
//! node.shutdown().await; // goodbye on every connection, flushed
//! # Ok(()) }
//! ```
//!
//! Runnable programs are in `examples/`: `bot` answers `!ping` and `!time` in a room,
//! `bridge` copies stdin lines into a room (each on tokio, or on smol with `--smol`):
//! `cargo run -p echo-runtime --features smol --example bot`.
//!
//! ## Features
//!
//! * `tokio` (default): the [`tokio`] module, on the current tokio runtime.
//! * `smol`: the `smol` module, on smol's global executor (one thread unless
//!   `SMOL_THREADS` is set).
//! * `async-std`: the `async_std` module. **async-std is discontinued upstream**
//!   ([RUSTSEC-2025-0052]); it is supported for existing applications, tokio and smol
//!   are the first-class runtimes.
//!
//! Any other executor works through the small [`Runtime`] trait and [`start`].
//!
//! [RUSTSEC-2025-0052]: https://rustsec.org/advisories/RUSTSEC-2025-0052
//!
//! ## Wire stack
//!
//! TCP (`TCP_NODELAY`), multistream-select `/noise` (authenticates the remote peer id),
//! multistream-select `/yamux/1.0.0`, then **one substream per connection**, opened by
//! the dialer, negotiated as `/echo/chat/2.0.0` (falling back to `/echo-go/chat/1.0.0`);
//! the listener accepts either. Both directions of the chat use that substream. Inbound
//! substreams negotiating `/ipfs/ping/1.0.0` are answered on every connection, so
//! standard libp2p tools can check that a node is alive.
//!
//! ## Structure
//!
//! The driver is written once, generic over the small [`Runtime`] trait (spawn, timer,
//! clock, TCP listen/connect/resolve) and `futures`' `AsyncRead`/`AsyncWrite`:
//!
//! * one **set-up task** per dial or accepted TCP connection: TCP, noise, yamux and the
//!   chat substream, bounded by [`DriverConfig::dial_timeout`]; it then hands the
//!   connection to the node task;
//! * the **node task** owns the [`echo_proto::Node`] and the established connections. It
//!   applies app commands, connection events and its one timer, and drains the node's
//!   outputs after each input. It polls each connection (with a waker per connection, so
//!   only connections with something to do are polled): that keeps the yamux muxer
//!   moving, writes what the node handed out (coalesced, one flush per batch) and reports
//!   it written, reads a few chunks per poll (backpressure), and answers pings. No task
//!   hop separates the node from its sockets.
//!
//! Protocol decisions (duplicate connections, redials, timeouts, limits) are the core's;
//! the driver knows nothing of chat.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use echo_proto::{
    CommandError, Config, DialId, Event, Multiaddr, Node, PeerId, PeerInfo, SharedMessage, Stats,
};
use futures::channel::{mpsc, oneshot};
use futures::future::{AbortHandle, Abortable, FutureExt, Shared};
use futures::{Future, Stream};
use libp2p_identity::Keypair;
use multiaddr::Protocol as Ma;

mod conn;
mod driver;
mod runtime;
mod transport;

#[cfg(feature = "async-std")]
pub mod async_std;
#[cfg(feature = "smol")]
pub mod smol;
#[cfg(feature = "tokio")]
pub mod tokio;

/// The protocol core, [`echo_proto`], re-exported: depend on `echo-runtime` alone.
pub use echo_proto as proto;
pub use runtime::{Incoming, Runtime, Timer};
pub use transport::{DialError, CHAT, LEGACY, PING};

/// Settings of the driver itself (the protocol's are in [`echo_proto::Config`]).
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Limit on a whole connection set-up: TCP connect, noise, yamux and the chat
    /// substream; for accepted connections, until the remote opens the chat substream
    /// (default 10 s).
    pub dial_timeout: Duration,
    /// How long a connection the node closes may take to flush and close (default 5 s).
    pub close_timeout: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            dial_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Listen multiaddrs, `/ip4|ip6/<ip>/tcp/<port>` (`0`: any free port), optionally
    /// ending in this node's own `/p2p/<id>`.
    pub listen: Vec<String>,
    /// The node's identity (must be ed25519).
    pub keypair: Keypair,
    /// The protocol configuration.
    pub config: Config,
    /// Persisted state to restart from (see [`echo_proto::Node::restore`]); empty by default.
    pub restore: echo_proto::Restore,
    /// The driver's own settings.
    pub driver: DriverConfig,
}

impl Options {
    /// A node with a fresh identity, a random RNG seed and default settings.
    pub fn new<S: Into<String>>(listen: impl IntoIterator<Item = S>) -> Self {
        Options {
            listen: listen.into_iter().map(Into::into).collect(),
            keypair: Keypair::generate_ed25519(),
            config: Config {
                seed: seed(),
                ..Config::default()
            },
            restore: echo_proto::Restore::default(),
            driver: DriverConfig::default(),
        }
    }
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listen address does not parse, or is not `/ip4|ip6/<ip>/tcp/<port>[/p2p/<own id>]`.
    #[error("invalid listen address {addr:?}: {reason}")]
    InvalidListenAddr {
        /// What was given.
        addr: String,
        /// What is wrong.
        reason: String,
    },
    /// Something else listens on that port.
    #[error("cannot listen on {addr}: address already in use")]
    AddrInUse {
        /// The address.
        addr: SocketAddr,
    },
    /// Binding failed otherwise.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
    /// echo identities are ed25519 keys.
    #[error("the keypair is not ed25519; echo identities must be")]
    NotEd25519,
}

/// Why a command did not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The node refused it (nothing changed).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The node has stopped (shut down or aborted).
    #[error("the node has stopped")]
    Stopped,
}

type Reply<T> = oneshot::Sender<Result<T, CommandError>>;

pub(crate) enum Command {
    Send {
        room: String,
        text: String,
        reply: Reply<SharedMessage>,
    },
    Join {
        room: String,
        reply: Reply<()>,
    },
    Leave {
        room: String,
        reply: Reply<()>,
    },
    Direct {
        peer: PeerId,
        text: String,
        reply: Reply<()>,
    },
    SetName {
        name: String,
        reply: Reply<()>,
    },
    Connect {
        addr: String,
        reply: Reply<DialId>,
    },
    Inspect(Box<dyn FnOnce(&Node) + Send>),
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// The answer to a command. The command is queued when the method is called (commands
/// run in call order even if their answers are awaited later), so many sends can be in
/// flight at once; await this for the result. Dropping it does not cancel the command
/// (fire and forget).
#[must_use = "the command is queued; await this for its result"]
#[derive(Debug)]
pub struct Pending<T>(Result<oneshot::Receiver<Result<T, CommandError>>, ()>);

impl<T> Future for Pending<T> {
    type Output = Result<T, Error>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Ok(rx) => Pin::new(rx).poll(cx).map(|r| match r {
                Ok(r) => r.map_err(Error::Command),
                Err(oneshot::Canceled) => Err(Error::Stopped),
            }),
            Err(()) => Poll::Ready(Err(Error::Stopped)),
        }
    }
}

/// The node's events, in order. Ends when the node stops.
#[derive(Debug)]
pub struct Events(mpsc::UnboundedReceiver<Event>);

impl Stream for Events {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

struct Inner {
    peer_id: PeerId,
    listen_addrs: Vec<Multiaddr>,
    cmds: mpsc::UnboundedSender<Command>,
    abort: AbortHandle,
    stopped: Shared<oneshot::Receiver<()>>,
}

/// Controls a running node. Cheap to clone; when the last clone is dropped the node
/// shuts down (goodbye on every connection) in the background.
#[derive(Clone)]
pub struct Handle(Arc<Inner>);

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("peer_id", &self.0.peer_id)
            .finish()
    }
}

impl Handle {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.0.peer_id
    }

    /// Where the node listens, with real ports, each ending in `/p2p/<id>`: what a peer
    /// passes to [`Handle::connect`].
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.0.listen_addrs
    }

    fn call<T>(&self, f: impl FnOnce(Reply<T>) -> Command) -> Pending<T> {
        let (tx, rx) = oneshot::channel();
        match self.0.cmds.unbounded_send(f(tx)) {
            Ok(()) => Pending(Ok(rx)),
            Err(_) => Pending(Err(())),
        }
    }

    /// Sends `text` to `room`. The message is delivered locally as an
    /// [`Event::Message`] too. Sends queued together go out as one burst.
    pub fn send(&self, room: &str, text: &str) -> Pending<SharedMessage> {
        let (room, text) = (room.to_string(), text.to_string());
        self.call(|reply| Command::Send { room, text, reply })
    }

    /// Joins a room.
    pub fn join(&self, room: &str) -> Pending<()> {
        let room = room.to_string();
        self.call(|reply| Command::Join { room, reply })
    }

    /// Leaves a room.
    pub fn leave(&self, room: &str) -> Pending<()> {
        let room = room.to_string();
        self.call(|reply| Command::Leave { room, reply })
    }

    /// Sends a direct message to a connected peer.
    pub fn send_direct(&self, peer: PeerId, text: &str) -> Pending<()> {
        let text = text.to_string();
        self.call(|reply| Command::Direct { peer, text, reply })
    }

    /// Changes the display name.
    pub fn set_name(&self, name: &str) -> Pending<()> {
        let name = name.to_string();
        self.call(|reply| Command::SetName { name, reply })
    }

    /// Dials a multiaddr such as `/ip4/127.0.0.1/tcp/4001/p2p/12D3Koo…`. An address
    /// that does not parse or cannot be dialed is refused at once
    /// ([`CommandError::InvalidAddr`]); the outcome of the dial comes as an event
    /// ([`Event::PeerUp`], or [`Event::DialFailed`] with a [`DialError`]'s text).
    pub fn connect(&self, addr: &str) -> Pending<DialId> {
        let addr = addr.to_string();
        self.call(|reply| Command::Connect { addr, reply })
    }

    /// Runs `f` on the node (for queries: peers, rooms, stats, connection counts).
    pub fn inspect<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Node) -> T + Send + 'static,
    ) -> Pending<T> {
        self.call(|reply| {
            Command::Inspect(Box::new(move |node: &Node| {
                let _ = reply.send(Ok(f(node)));
            }))
        })
    }

    /// Connected peers.
    pub fn peers(&self) -> Pending<Vec<PeerInfo>> {
        self.inspect(Node::peers)
    }

    /// The node's counters.
    pub fn stats(&self) -> Pending<Stats> {
        self.inspect(|n| n.stats().clone())
    }

    /// Connections to `peer` currently open or opening.
    pub fn connection_count(&self, peer: PeerId) -> Pending<usize> {
        self.inspect(move |n| n.connection_count(&peer))
    }

    /// Says goodbye on every connection, flushes, closes them, and stops the node.
    /// Resolves when every connection is closed (each within
    /// [`DriverConfig::close_timeout`]).
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .0
            .cmds
            .unbounded_send(Command::Shutdown { reply: tx })
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Resolves when the node task has ended (after [`Handle::shutdown`] or
    /// [`Handle::abort`]) and its listeners are closed.
    pub async fn stopped(&self) {
        let _ = self.0.stopped.clone().await;
    }

    /// Stops the node at once, without goodbyes: its connections are dropped and its
    /// listeners closed, as if the process had died.
    pub fn abort(&self) {
        self.0.abort.abort();
    }
}

/// The socket address of a listen multiaddr.
fn listen_socket(addr: &str, own: PeerId) -> Result<SocketAddr, StartError> {
    let bad = |reason: String| StartError::InvalidListenAddr {
        addr: addr.to_string(),
        reason,
    };
    let ma: Multiaddr = addr.trim().parse().map_err(|e| bad(format!("{e}")))?;
    let mut it = ma.iter();
    let ip: IpAddr = match it.next() {
        Some(Ma::Ip4(ip)) => ip.into(),
        Some(Ma::Ip6(ip)) => ip.into(),
        _ => return Err(bad("expected /ip4/<ip> or /ip6/<ip>".into())),
    };
    let port = match it.next() {
        Some(Ma::Tcp(p)) => p,
        _ => return Err(bad("expected /tcp/<port> after the ip".into())),
    };
    match it.next() {
        None => {}
        Some(Ma::P2p(id)) if id == own => {}
        Some(Ma::P2p(id)) => return Err(bad(format!("/p2p/{id} is not this node's id ({own})"))),
        Some(p) => return Err(bad(format!("unexpected {p} after /tcp/<port>"))),
    }
    if it.next().is_some() {
        return Err(bad("nothing may follow /p2p/<id>".into()));
    }
    Ok(SocketAddr::new(ip, port))
}

/// Starts a node on `runtime`: binds its listeners, spawns its node task, and returns
/// the handle and the event stream.
pub async fn start<R: Runtime>(
    runtime: R,
    options: Options,
) -> Result<(Handle, Events), StartError> {
    let Options {
        listen,
        keypair,
        config,
        restore,
        driver: cfg,
    } = options;
    if keypair.clone().try_into_ed25519().is_err() {
        return Err(StartError::NotEd25519);
    }
    let peer_id = keypair.public().to_peer_id();
    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    for addr in &listen {
        let sock = listen_socket(addr, peer_id)?;
        let (local, incoming) = runtime.listen(sock).map_err(|error| match error.kind() {
            std::io::ErrorKind::AddrInUse => StartError::AddrInUse { addr: sock },
            _ => StartError::Bind { addr: sock, error },
        })?;
        bound.push(transport::multiaddr(local));
        listeners.push(incoming);
    }
    let now = runtime.now();
    let mut node = Node::restore(keypair.clone(), config, restore, now);
    node.set_listen_addrs(bound.clone());
    let (input_tx, inputs) = mpsc::unbounded();
    let (cmd_tx, cmds) = mpsc::unbounded();
    let (ev_tx, ev_rx) = mpsc::unbounded();
    let timer = runtime.timer(now);
    let (alive, stopped) = oneshot::channel();
    let mut driver = driver::Driver {
        rt: runtime.clone(),
        key: keypair,
        cfg,
        node,
        conns: Default::default(),
        pending: Default::default(),
        live: Default::default(),
        ready: Default::default(),
        to_poll: Vec::new(),
        next_conn: 1,
        inputs,
        input_tx,
        cmds,
        cmds_done: false,
        events: ev_tx,
        listeners,
        timer,
        timer_at: None,
        shutting_down: false,
        waiters: Vec::new(),
        _alive: alive,
    };
    // Hand out the events of Node::new (e.g. joining the default room).
    driver.drain();
    let (abort, reg) = AbortHandle::new_pair();
    runtime.spawn(async move {
        let _ = Abortable::new(driver, reg).await;
    });
    let listen_addrs = bound
        .into_iter()
        .map(|a| a.with(Ma::P2p(peer_id)))
        .collect();
    let inner = Inner {
        peer_id,
        listen_addrs,
        cmds: cmd_tx,
        abort,
        stopped: stopped.shared(),
    };
    Ok((Handle(Arc::new(inner)), Events(ev_rx)))
}
