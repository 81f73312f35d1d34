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
//! use echo_runtime::{tokio::start, Options, RuntimeEvent};
//!
//! let (node, mut events) = start(Options::new(["/ip4/127.0.0.1/tcp/0"])).await?;
//! println!("listening on {:?}", node.listen_addrs()); // .../tcp/<port>/p2p/<id>
//! node.connect("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...").await?;
//! node.join("general").await?;
//! node.send("general", "hello").await?;
//! while let Some(event) = events.next().await {
//!     match event {
//!         RuntimeEvent::Event(Event::Message { msg, .. }) => {
//!             println!("{}: {}", msg.display_author(), msg.text())
//!         }
//!         // The app fell behind: re-read what it keeps (see "Bounds" below).
//!         RuntimeEvent::Lagged { missed } => println!("{missed} events missed"),
//!         _ => {}
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
//! * `swarm` (implies `tokio`): the `swarm` module, echo as a rust-libp2p
//!   `NetworkBehaviour` to add to an app's own `Swarm`, and `swarm::start`, a ready-made
//!   tokio swarm (TCP and QUIC on the same port, noise, yamux, identify, ping, relay
//!   client, DCUtR) with the
//!   same [`Handle`] and [`Events`]. Swarm nodes and direct nodes talk to each other.
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
//! With [`Options::files`] set, files travel on `/echo/blob/1.0.0` substreams of the same
//! connections (at most one per peer, opened by the lower peer id; PROTOCOL.md section
//! 17): [`Handle::share_file`] hashes a file on a thread and returns the [`Offer`] to
//! post, [`Handle::download`] fetches one (verified, multi-source, resumable after a
//! restart) into a folder, and [`RuntimeEvent::TransferProgress`],
//! [`RuntimeEvent::TransferDone`] and [`RuntimeEvent::TransferFailed`] report it. Blob
//! substreams are polled after the chat, so chat never waits behind file bytes, and the
//! file store's disk work (writes, the final sync and check of a download) runs on
//! threads of its own ([`files::FileStore::in_background`]): a slow disk holds up the
//! senders, through flow control, never the chat. The swarm adapter carries them the
//! same way, on its direct connections only.
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
//!
//! ## Bounds
//!
//! Everything the driver queues is bounded ([`DriverConfig`], counts in
//! [`Handle::driver_stats`]):
//!
//! * accepted connections in set-up, in total and per remote IP (over a cap the TCP
//!   connection is dropped at once), and dials in set-up;
//! * commands: a full queue makes the next [`Pending`]s wait for room (backpressure);
//! * events: the node task never waits for the app. If the app falls
//!   [`DriverConfig::event_buffer`] events behind, later events are dropped and counted,
//!   and [`Events`] yields [`RuntimeEvent::Lagged`] where they were. Events the app must
//!   act on ([`proto::Event::must_deliver`]: sequence reservations, its own joins and
//!   leaves, failed signature checks) are never dropped. The node itself lost nothing: an app that keeps history
//!   re-reads it on `Lagged`, e.g.
//!
//! ```no_run
//! # async fn demo(node: echo_runtime::Handle) -> Result<(), echo_runtime::Error> {
//! let log: Vec<String> = node
//!     .inspect(|n| {
//!         n.room_log("general")
//!             .map(|l| l.map(|m| m.text().to_string()).collect())
//!             .unwrap_or_default()
//!     })
//!     .await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use echo_proto::{
    CommandError, Config, DialId, Identity, Multiaddr, Node, PeerId, PeerInfo, SharedMessage, Stats,
};
use futures::channel::{mpsc, oneshot};
use futures::future::{AbortHandle, Abortable, Shared};
use futures::Future;

use multiaddr::Protocol as Ma;

mod blobs;
mod conn;
mod driver;
mod events;
pub mod files;
mod handle;
mod host;
mod limits;
mod net;
mod pipe;
mod runtime;
mod transport;

#[cfg(feature = "async-std")]
pub mod async_std;
#[cfg(feature = "smol")]
pub mod smol;
#[cfg(feature = "swarm")]
pub mod swarm;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use blobs::{
    FilesOptions, TransferFailure, TransferInfo, TransferState, MAX_BLOB_STREAMS_PER_CONN,
};
/// The protocol core, [`echo_proto`], re-exported: depend on `echo-runtime` alone.
pub use echo_proto as proto;
pub use echo_proto::blob::{BlobConfig, BlobHash, BlobStats, Offer, TransferId};
pub use events::{Events, RuntimeEvent};
pub(crate) use handle::Inner;
pub use handle::{Handle, Pending};
pub use net::{Addresses, Nat};
pub use runtime::{Incoming, Runtime, Timer};
pub use transport::{DialError, BLOB, CHAT, LEGACY, PING};

/// Settings of the driver itself (the protocol's are in [`echo_proto::Config`]).
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Limit on a whole connection set-up: TCP connect, noise, yamux and the chat
    /// substream; for accepted connections, until the remote opens the chat substream
    /// (default 10 s).
    pub dial_timeout: Duration,
    /// How long a connection the node closes may take to flush and close (default 5 s).
    pub close_timeout: Duration,
    /// Accepted connections in set-up (noise, yamux, the chat substream) at once
    /// (default 256). Over it, an accepted TCP connection is dropped at once and counted
    /// in [`DriverStats::handshakes_refused`].
    pub max_pending_handshakes: usize,
    /// Accepted connections in set-up at once from one remote IPv4 address or IPv6 /64
    /// (default 16); over it, dropped at once and counted like the above.
    pub max_pending_handshakes_per_ip: usize,
    /// Dials in set-up at once (default 64); further dials the node asks for fail at
    /// once ([`DialError::TooManyDials`]).
    pub max_pending_dials: usize,
    /// Events queued for the app and not yet read (default 4,096). The node task never
    /// waits for the app: beyond this, events are dropped and counted, and the app reads
    /// a [`RuntimeEvent::Lagged`] where they were.
    pub event_buffer: usize,
    /// Commands queued for the node task (default 1,024). A command made while the
    /// queue is full waits (in its [`Pending`]) for room.
    pub command_buffer: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            dial_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            max_pending_handshakes: 256,
            max_pending_handshakes_per_ip: 16,
            max_pending_dials: 64,
            event_buffer: 4096,
            command_buffer: 1024,
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Listen multiaddrs, `/ip4|ip6/<ip>/tcp/<port>` (`0`: any free port), optionally
    /// ending in this node's own `/p2p/<id>`.
    pub listen: Vec<String>,
    /// The node's identity.
    pub identity: Identity,
    /// Seed of the node's RNG (see [`echo_proto::Node::new`]); random by default.
    pub seed: u64,
    /// The protocol configuration.
    pub config: Config,
    /// Persisted state to restart from (see [`echo_proto::Node::restore`]); empty by default.
    pub restore: echo_proto::Restore,
    /// The driver's own settings.
    pub driver: DriverConfig,
    /// File transfer (`/echo/blob/1.0.0`); `None` (the default): off, and inbound blob
    /// substreams are refused.
    pub files: Option<FilesOptions>,
}

impl Options {
    /// A node with a fresh identity, a random RNG seed and default settings.
    pub fn new<S: Into<String>>(listen: impl IntoIterator<Item = S>) -> Self {
        Options {
            listen: listen.into_iter().map(Into::into).collect(),
            identity: Identity::generate(),
            seed: seed(),
            config: Config::default(),
            restore: echo_proto::Restore::default(),
            driver: DriverConfig::default(),
            files: None,
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
    /// The file store could not be opened ([`Options::files`]).
    #[error("cannot open the file store in {dir:?}: {error}")]
    Files {
        /// Its directory.
        dir: std::path::PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The swarm could not be built or could not listen (`swarm` feature).
    #[error("swarm: {0}")]
    Swarm(String),
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
    /// A file transfer command failed (file transfer off, I/O, limits); nothing
    /// changed.
    #[error("file transfer: {0}")]
    Files(String),
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

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
    Dm {
        peer: PeerId,
        text: String,
        reply: Reply<u64>,
    },
    DmRead {
        peer: PeerId,
        seqs: Vec<u64>,
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
    Addresses {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        source: echo_proto::AddrSource,
        reply: Reply<usize>,
    },
    Inspect(Box<dyn FnOnce(&Node) + Send>),
    DriverStats(Reply<DriverStats>),
    Files(blobs::FilesCmd),
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// The driver's own counters: what its queues and caps hold now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// Accepted connections in set-up now (at most
    /// [`DriverConfig::max_pending_handshakes`]).
    pub handshakes: usize,
    /// The most of those from one remote address (at most
    /// [`DriverConfig::max_pending_handshakes_per_ip`]).
    pub handshakes_from_one_ip: usize,
    /// Accepted TCP connections dropped at once because a cap was reached, ever.
    pub handshakes_refused: u64,
    /// Dials in set-up now (at most [`DriverConfig::max_pending_dials`]).
    pub dials: usize,
    /// Dials refused because [`DriverConfig::max_pending_dials`] were in set-up, ever.
    pub dials_refused: u64,
    /// Established connections (open or closing).
    pub connections: usize,
    /// Events queued for the app and not yet read (at most
    /// [`DriverConfig::event_buffer`]).
    pub events_queued: usize,
    /// Events queued for the app, ever.
    pub events_sent: u64,
    /// Events dropped because the app was behind, ever (the sum of the
    /// [`RuntimeEvent::Lagged`] counts).
    pub events_missed: u64,
    /// Commands queued for the node task (at most [`DriverConfig::command_buffer`]).
    pub commands_queued: usize,
    /// Bytes the driver dropped, ever: transmits the node handed out for a connection
    /// that was closing or broken, and bytes read from a connection after the node
    /// closed it. A connection that breaks loses what was in flight; one the node
    /// closes after a goodbye exchange loses nothing.
    pub bytes_discarded: u64,
    /// Peers with an open blob substream now (file transfer).
    pub blob_links: usize,
    /// Inbound blob substreams refused, ever (from the higher peer id, over
    /// [`MAX_BLOB_STREAMS_PER_CONN`] on a connection, on a connection that sent garbage).
    pub blob_streams_refused: u64,
    /// Blob bytes dropped, ever: for a peer without a blob substream, or unwritten when
    /// one closed.
    pub blob_bytes_dropped: u64,
    /// The blob core's counters (zero when file transfer is off).
    pub blob: BlobStats,
}

type Answer<T> = oneshot::Receiver<Result<T, Error>>;

pub(crate) enum PendingState<T> {
    /// Queued; waiting for the answer.
    Queued(Answer<T>),
    /// The command queue was full: waiting for room, then for the answer.
    Waiting(futures::future::BoxFuture<'static, bool>, Answer<T>),
    Stopped,
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
        identity,
        seed,
        config,
        restore,
        driver: cfg,
        files,
    } = options;
    let keypair = identity.keypair();
    let peer_id = identity.peer_id();
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
    let mut node = Node::restore(identity, config, seed, restore, now);
    node.set_listen_addrs(bound.clone());
    // Holds at most two inputs per set-up task, and set-up tasks are capped
    // (`max_pending_handshakes` accepted, `max_pending_dials` dialed).
    let (input_tx, inputs) = mpsc::unbounded();
    let admission = limits::Admission::new(
        cfg.max_pending_handshakes,
        cfg.max_pending_handshakes_per_ip,
    );
    let listen_addrs = bound
        .into_iter()
        .map(|a| a.with(Ma::P2p(peer_id)))
        .collect();
    let has_files = files.is_some();
    let files = match files {
        Some(f) => {
            let dir = f.dir.clone();
            let files =
                blobs::Files::new(peer_id, f).map_err(|error| StartError::Files { dir, error })?;
            Some(files)
        }
        None => None,
    };
    let (host, handle, events, reg) =
        host::wire(node, &cfg, runtime.timer(now), listen_addrs, files, now);
    let mut driver = driver::Driver {
        host,
        io: driver::Net {
            rt: runtime.clone(),
            key: keypair,
            cfg,
            files: has_files,
            admission,
            dialing: Default::default(),
            dials_refused: 0,
            discarded: 0,
            conns: Default::default(),
            pending: Default::default(),
            live: Default::default(),
            ready: Default::default(),
            to_poll: Vec::new(),
            next_conn: 1,
            inputs,
            input_tx,
            listeners,
        },
    };
    // Hand out the events of Node::new (e.g. joining the default room).
    driver.host.drain(&mut driver.io);
    runtime.spawn(async move {
        let _ = Abortable::new(driver, reg).await;
    });
    Ok((handle, events))
}
