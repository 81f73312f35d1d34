//! # echo: peer-to-peer chat as a sans-IO state machine
//!
//! A [`Node`] is echo's whole chat protocol — handshake, rooms, signed and ordered
//! messages, relaying, connection rules, liveness, limits — with no I/O inside. It never
//! reads a clock, opens a socket, spawns a thread or asks the OS for randomness: the
//! driver passes `now` with every input and the RNG is seeded from [`Config::seed`].
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
//!    [`Node::leave`], [`Node::send_direct`], [`Node::set_name`], [`Node::connect`],
//!    [`Node::shutdown`]).
//! 2. **Drain outputs until empty**, in this order: [`Node::poll_transmit`] (write the
//!    bytes on that connection's chat substream, then report them with
//!    [`Node::handle_sent`]), [`Node::poll_action`] (dial an address; flush and close a
//!    connection), [`Node::poll_event`] (hand to the app).
//! 3. **Sleep** until [`Node::poll_timeout`] or the next input, whichever is first; when
//!    the timeout passes call [`Node::handle_timeout`]. Spurious or late timer calls are
//!    harmless, so one sleep per node is enough.
//!
//! Nothing a peer sends can panic the node: a malformed or hostile connection is closed
//! with a reason ([`Event::Misbehaved`]) and every other session carries on. A panic is a
//! bug.
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use echo_proto::{Action, Config, ConnId, ConnInfo, Event, Node, Protocol, Role};
//! use libp2p_identity::Keypair;
//!
//! let now = Instant::now();
//! let ka = Keypair::ed25519_from_bytes([1; 32]).unwrap();
//! let kb = Keypair::ed25519_from_bytes([2; 32]).unwrap();
//! let (ida, idb) = (ka.public().to_peer_id(), kb.public().to_peer_id());
//! let mut alice = Node::new(ka, Config { name: "alice".into(), seed: 1, ..Config::default() }, now);
//! let mut bob = Node::new(kb, Config { name: "bob".into(), seed: 2, ..Config::default() }, now);
//!
//! // The runtime set up a connection (TCP + noise + yamux + one substream) and reports it.
//! let addr: multiaddr::Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
//! let info = |peer, role| ConnInfo { peer, role, remote_addr: addr.clone(), protocol: Protocol::Chat, dial: None };
//! alice.handle_connected(ConnId(1), info(idb, Role::Dialer), now);
//! bob.handle_connected(ConnId(1), info(ida, Role::Listener), now);
//!
//! // A toy driver: move every transmit to the other node until both are quiet.
//! fn pump(from: &mut Node, to: &mut Node, now: Instant) -> bool {
//!     let mut moved = false;
//!     while let Some(t) = from.poll_transmit() {
//!         from.handle_sent(t.conn, t.data.len());
//!         to.handle_data(t.conn, &t.data, now);
//!         moved = true;
//!     }
//!     while let Some(a) = from.poll_action() {
//!         assert!(!matches!(a, Action::Close { .. }));
//!     }
//!     moved
//! }
//! while pump(&mut alice, &mut bob, now) | pump(&mut bob, &mut alice, now) {} // handshake
//! alice.send("general", "hello bob", SystemTime::now(), now).unwrap();
//! while pump(&mut alice, &mut bob, now) | pump(&mut bob, &mut alice, now) {}
//! let mut got = Vec::new();
//! while let Some(ev) = bob.poll_event() {
//!     if let Event::Message { msg, .. } = ev {
//!         got.push(format!("{}: {}", msg.display_author(), msg.text));
//!     }
//! }
//! assert_eq!(got.len(), 1);
//! assert!(got[0].starts_with("alice#") && got[0].ends_with(": hello bob"));
//! // The next timer: a ping in `Config::ping_interval`.
//! assert!(bob.poll_timeout().unwrap() <= now + Duration::from_secs(10));
//! ```
//!
//! ## Module map
//!
//! | concern | module |
//! |---|---|
//! | length-prefixed framing | [`codec`] |
//! | protobuf frames of `/echo/chat/2.0.0` | [`wire`] |
//! | message hash, signatures | [`message`] |
//! | per-author authentication and FIFO order | [`ordering`] |
//! | a room's agreed log order | [`log`] |
//! | peers, tie-break, backoff, peer exchange | [`peers`] |
//! | echo-go line protocol | [`legacy`] |
//! | the state machine tying them together | [`Node`] |
//!
//! The wire protocol is specified in `PROTOCOL.md` at the repository root.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
mod config;
mod conn;
mod error;
mod event;
pub mod legacy;
pub mod log;
pub mod message;
mod node;
pub mod ordering;
pub mod peers;
pub mod rate;
mod rooms;
pub mod wire;

#[cfg(feature = "sim")]
pub mod sim;

pub use config::{Config, RateLimit};
pub use error::CommandError;
pub use event::{Action, ConnId, ConnInfo, DialId, Event, PeerInfo, Protocol, Role, Transmit};
pub use libp2p_identity::{Keypair, PeerId};
pub use log::Position;
pub use message::{Message, MsgId, SharedMessage};
pub use multiaddr::Multiaddr;
pub use node::{Node, Restore, RestoreRoom, Stats};
