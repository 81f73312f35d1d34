//! # echo: peer-to-peer chat as a sans-IO state machine
//!
//! A [`Node`] is echo's whole chat protocol — handshake, rooms, signed and ordered
//! messages, relaying, connection rules, liveness, limits — with no I/O inside. It never
//! reads a clock, opens a socket, spawns a thread or asks the OS for randomness: the
//! driver passes `now` with every input and the RNG is seeded from an argument of
//! [`Node::new`].
//! The same inputs always give the same outputs, so a whole network of nodes runs
//! deterministically in one test thread (see the `sim` feature).
//!
//! ## The run loop
//!
//! To run a node over real libp2p connections on tokio, smol or async-std, use the
//! [`echo-runtime`](https://docs.rs/echo-runtime) crate, which drives this core (and
//! re-exports it as `echo_runtime::proto`). Your own driver (another transport, a
//! simulator, a test) owns the node and repeats:
//!
//! 1. **Input**: one of [`Node::handle_connected`], [`Node::handle_data`],
//!    [`Node::handle_sent`], [`Node::handle_closed`], [`Node::handle_dial_failed`],
//!    [`Node::handle_timeout`], or a user command ([`Node::send`], [`Node::join`],
//!    [`Node::leave`], [`Node::send_direct`], [`Node::send_dm`], [`Node::mark_dm_read`],
//!    [`Node::set_name`], [`Node::connect`],
//!    [`Node::shutdown`]).
//! 2. **Drain [`Node::poll_output`] until it returns [`Output::Wait`]**, handling each
//!    output as it comes: [`Output::Transmit`] (write the bytes on that connection's chat
//!    substream, then report them with [`Node::handle_sent`]), [`Output::Action`] (dial
//!    an address; flush and close a connection), [`Output::Event`] (hand to the app).
//!    The node hands out every transmit before any action, so a goodbye's bytes always
//!    come before the `Close` of their connection. [`Output::Yield`] means the events
//!    are out and what follows is off their path (signature checks): keep draining, or,
//!    in an async driver, wake your task and return `Pending` first so an app task
//!    woken by the events runs before them.
//! 3. **Sleep** until the instant in [`Output::Wait`] (if any) or the next input,
//!    whichever is first; when the instant passes call [`Node::handle_timeout`].
//!    Spurious or late timer calls are harmless, so one sleep per node is enough.
//!
//! Nothing a peer sends can panic the node: a malformed or hostile connection is closed
//! with a reason ([`Event::Misbehaved`]) and every other session carries on. A panic is a
//! bug.
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use echo_proto::{Action, Config, ConnId, ConnInfo, Event, Identity, Link, Node, Output, Protocol, Role};
//!
//! let now = Instant::now();
//! let ka = Identity::from_secret_bytes([1; 32]);
//! let kb = Identity::from_secret_bytes([2; 32]);
//! let (ida, idb) = (ka.peer_id(), kb.peer_id());
//! let mut alice = Node::new(ka, Config::default().name("alice"), 1, now);
//! let mut bob = Node::new(kb, Config::default().name("bob"), 2, now);
//!
//! // The runtime set up a connection (TCP + noise + yamux + one substream) and reports it.
//! let addr: multiaddr::Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
//! let info = |peer, role| ConnInfo { peer, role, remote_addr: addr.clone(), protocol: Protocol::Chat, dial: None, link: Link::Direct };
//! alice.handle_connected(ConnId(1), info(idb, Role::Dialer), now);
//! bob.handle_connected(ConnId(1), info(ida, Role::Listener), now);
//!
//! // A toy driver: move every transmit to the other node, collect the events, until
//! // both are quiet.
//! fn pump(from: &mut Node, to: &mut Node, events: &mut Vec<Event>, now: Instant) -> bool {
//!     let mut moved = false;
//!     loop {
//!         match from.poll_output() {
//!             Output::Transmit(t) => {
//!                 from.handle_sent(t.conn, t.data.len());
//!                 to.handle_data(t.conn, &t.data, now);
//!                 moved = true;
//!             }
//!             Output::Action(a) => assert!(!matches!(a, Action::Close { .. })),
//!             Output::Event(e) => events.push(e),
//!             Output::Wait(_) => return moved,
//!             _ => {} // `Output` is non_exhaustive
//!         }
//!     }
//! }
//! let (mut at_alice, mut at_bob) = (Vec::new(), Vec::new());
//! let mut both = |alice: &mut Node, bob: &mut Node| {
//!     while pump(alice, bob, &mut at_alice, now) | pump(bob, alice, &mut at_bob, now) {}
//! };
//! both(&mut alice, &mut bob); // handshake
//! alice.send("general", "hello bob", SystemTime::now(), now).unwrap();
//! both(&mut alice, &mut bob);
//! let got: Vec<String> = at_bob
//!     .iter()
//!     .filter_map(|ev| match ev {
//!         Event::Message { msg, .. } => Some(format!("{}: {}", msg.display_author(), msg.text())),
//!         _ => None,
//!     })
//!     .collect();
//! assert_eq!(got.len(), 1);
//! assert!(got[0].starts_with("alice#") && got[0].ends_with(": hello bob"));
//! // Drained: the next timer is a ping in `Config::ping_interval`.
//! let Output::Wait(Some(next)) = bob.poll_output() else { panic!("bob has a timer") };
//! assert!(next <= now + Duration::from_secs(10));
//! ```
//!
//! ## Public surface
//!
//! An embedder needs [`Node`], its [`Config`], the inputs' and outputs' types
//! ([`ConnInfo`], [`Output`] with its [`Transmit`], [`Action`] and [`Event`],
//! [`CloseReason`] and [`GoodbyeCode`]), [`Message`] and [`MsgId`],
//! [`Identity`], [`Restore`] and [`Stats`]. The framing, protobuf, ordering, log, peer
//! book, rate limiter and legacy line modules are internal; the `fuzzing` cargo feature
//! (enabled by the fuzz crate and by tests that write raw frames) exposes them,
//! `#[doc(hidden)]` and without any stability promise. The `sim` feature adds the
//! deterministic network simulator (and implies `fuzzing`).
//!
//! End-to-end encrypted direct messages that peers carry for absent recipients are the
//! [`dm`] module ([`Node::send_dm`], [`Event::DirectReceived`], [`Event::DirectStatus`];
//! persist [`Node::export_dm`]).
//!
//! File transfer (verified, resumable, multi-source blobs on their own substream) is
//! the [`blob`] module, a second sans-IO state machine driven the same way.
//!
//! The wire protocol is specified in `PROTOCOL.md` at the repository root.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Internal modules: public (and `#[doc(hidden)]`, unstable) only with the `fuzzing`
/// feature, as quinn-proto does.
macro_rules! internal {
    ($($(#[$attr:meta])* $m:ident;)*) => {$(
        $(#[$attr])*
        #[cfg(feature = "fuzzing")]
        #[doc(hidden)]
        pub mod $m;
        $(#[$attr])*
        #[cfg(not(feature = "fuzzing"))]
        #[allow(dead_code)]
        mod $m;
    )*};
}

// Each has its own module docs (links there resolve inside the module).
internal! {
    clock;
    codec;
    legacy;
    log;
    message;
    ordering;
    peers;
    rate;
    wire;
}

pub mod blob;
mod close;
mod config;
mod conn;
pub mod dm;
mod error;
mod event;
mod identity;
mod links;
mod node;
mod rooms;
mod sync_queue;
mod timers;

#[cfg(feature = "sim")]
pub mod sim;

pub use close::{CloseReason, GoodbyeCode};
pub use config::{Config, ConfigError, RateLimit};
pub use dm::{DmConfig, DmStats, DmStatus};
pub use error::{CommandError, DecodeError};
pub use event::{
    Action, ConnId, ConnInfo, DialId, Event, Link, Output, PeerInfo, Protocol, Role, Transmit,
};
pub use identity::{Identity, IdentityError};
pub use libp2p_identity::PeerId;
pub use links::AddrSource;
pub use log::Position;
pub use message::{display_name, Message, MsgId, OrderKey, SharedMessage};
pub use multiaddr::Multiaddr;
pub use node::{Node, Restore, RestoreRoom, Stats};
