//! # echo as a rust-libp2p `NetworkBehaviour`
//!
//! [`EchoBehaviour`] runs an [`echo_proto::Node`] inside a [`libp2p::Swarm`] that the app
//! owns, beside its own behaviours, and gives the same [`Handle`] + [`Events`] API as
//! [`crate::start`]. [`start`] builds a ready-made tokio swarm around it (TCP and QUIC on
//! the same port, noise + yamux, identify, ping, connection limits, circuit relay v2
//! client with reservations on [`SwarmOptions::relays`], DCUtR) and runs it on its own
//! task.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use echo_runtime::swarm::{start, SwarmOptions};
//!
//! let (node, _events) = start(SwarmOptions::new(["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"])).await?;
//! println!("listening on {:?}", node.listen_addrs());
//! node.connect("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/12D3KooW...").await?;
//! # Ok(()) }
//! ```
//!
//! ## Why a `ConnectionHandler` of its own (and not `libp2p-stream`)
//!
//! The core decides per *connection*: it tie-breaks duplicate connections between two
//! peers and closes the loser, it ties a dial it asked for to the connection that came
//! of it, and it may refuse a connection (too many peers) after reading its hello.
//! `libp2p-stream` opens and accepts streams per *peer* on a connection of its choice
//! and says nothing of which, so none of that could be mapped back. The handler here
//! (one per swarm connection, [`handler::Handler`]) negotiates exactly one chat
//! substream per connection and hands it, with its [`ConnectionId`], to the behaviour:
//!
//! * **Outbound:** on a connection where this node is the (effective) dialer, the
//!   handler opens the substream at once, proposing `/echo/chat/2.0.0`, then
//!   `/echo-go/chat/1.0.0`. A remote that speaks neither (a relay server, a plain
//!   libp2p peer) only fails the dial the node asked for, if any: the connection stays
//!   for the app's other behaviours.
//! * **Inbound:** every connection accepts one chat substream (either protocol),
//!   whoever dialed; later ones are refused. The protocols are advertised, so identify
//!   reports them.
//! * **I/O and back-pressure:** the behaviour reads and writes the substreams itself,
//!   in [`NetworkBehaviour::poll`] on the swarm's task (no task hop), with the byte pump
//!   of the direct driver: transmits coalesced with one flush per batch, reported to the
//!   node once written, and at most a few chunks read per connection and poll, so a busy
//!   peer cannot starve the swarm or the others. A substream woken by the muxer queues
//!   its connection (one waker per connection), so a wake-up polls only those.
//! * **Files:** with [`crate::Options::files`] ([`EchoBehaviour::from_options`]), the
//!   handler also negotiates `/echo/blob/1.0.0` substreams, opened when the file side
//!   asks (the lower peer id, one per peer, as on the direct driver) and accepted up to
//!   [`crate::MAX_BLOB_STREAMS_PER_CONN`] per connection, on direct connections only:
//!   a relayed connection neither opens nor advertises the protocol, so bulk bytes
//!   never use a limited circuit. Blob substreams are polled after the chats.
//! * **Closing:** when the node closes a connection (a duplicate, a refusal, shutdown),
//!   the behaviour writes what the node handed out, closes the substream, then asks the
//!   swarm to close that one connection ([`ToSwarm::CloseConnection`]), all within
//!   [`DriverConfig::close_timeout`]. A substream that ends by itself is reported to the
//!   node as closed; the swarm connection is left to the swarm (other behaviours may use
//!   it; it idles out otherwise).
//! * **Dials:** the node's dials become [`ToSwarm::Dial`] (always dialed: the node has
//!   decided), at most [`DriverConfig::max_pending_dials`] at once; the swarm's
//!   [`ConnectionId`] ties the outcome back. The node's addresses are TCP only:
//!   [`Handle::connect`] dials other addresses the swarm can dial (QUIC, `/p2p-circuit`)
//!   through the swarm directly, and their failures come as
//!   [`echo_proto::Event::DialFailed`] too; the node does not redial those.
//! * **Addresses:** the swarm's listen addresses and confirmed external addresses are
//!   the node's listen addresses (announced in hellos).
//! * **Bounds:** echo keeps a little state per swarm connection, so the swarm's
//!   connection limits bound it: [`start`]'s swarm caps inbound connections in set-up
//!   ([`DriverConfig::max_pending_handshakes`]), established inbound connections and
//!   connections per peer ([`SwarmOptions`]); an app's own swarm should do the same
//!   (`libp2p::connection_limits`). [`crate::DriverStats::handshakes`] counts the
//!   connections without an open chat substream, [`crate::DriverStats::connections`]
//!   those with one.
//!
//! Connections through a relay keep their `/p2p-circuit` address in
//! [`echo_proto::ConnInfo::remote_addr`] and are reported as
//! [`echo_proto::Link::Relayed`] (libp2p's `ConnectedPoint::is_relayed`: a `/p2p-circuit`
//! address on either end), so the core prefers any direct connection to the same peer
//! (a hole punch) and paces history over the relay.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use echo_proto::{
    CloseReason, ConnId, ConnInfo, DialId, Event, Identity, Multiaddr, Node, PeerId, Role,
};
use futures::future::{AbortRegistration, Abortable, Aborted};
use futures::Future;
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use multiaddr::Protocol as Ma;

use crate::blobs::Files;
use crate::conn::ConnEvent;
use crate::driver::ConnWaker;
use crate::host::{self, Host};
use crate::pipe::Pipe;
use crate::runtime::Runtime;
use crate::tokio::TokioRuntime;
use crate::{DriverConfig, Events, Handle, Options, StartError};

mod build;
pub mod handler;
mod io;
mod net;

use io::{is_circuit, strip_p2p, Chat, Link, SwarmIo};

pub use build::{start, Behaviour, BehaviourEvent, SwarmOptions};
pub use net::{MAX_RELAYS, RELAY_BACKOFF_FIRST, RELAY_BACKOFF_MAX};

/// Inputs handled per poll before yielding to the swarm's other work.
const BUDGET: usize = 256;
/// Budget used by a turn of the blob substreams that moved bytes.
const FILES_COST: usize = 16;
/// Chunks read per connection and poll.
const READS_PER_POLL: usize = 4;
/// Own listen and external addresses told to the node, at most.
const MAX_OWN_ADDRS: usize = 32;
/// First id of the dials [`Handle::connect`] makes through the swarm directly (the
/// node's own count up from 0).
const SWARM_DIALS: u64 = 1 << 62;

/// echo as a [`NetworkBehaviour`]: add it to a swarm beside the app's behaviours, and
/// drive the node with the [`Handle`] and [`Events`] that [`EchoBehaviour::new`]
/// returns (see the [module docs](self)). It needs a tokio runtime (its timers).
pub struct EchoBehaviour {
    /// `None` once the node has stopped (shut down or aborted).
    host: Option<Host>,
    io: SwarmIo,
    abort: Abortable<futures::future::Pending<()>>,
}

impl std::fmt::Debug for EchoBehaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoBehaviour")
            .field("peer_id", &self.io.local)
            .field("connections", &self.io.chats.len())
            .finish()
    }
}

impl EchoBehaviour {
    /// A node for a swarm whose identity is `identity`'s (the swarm's noise key must be
    /// the node's: messages are signed with it). Call within a tokio runtime.
    /// [`Handle::listen_addrs`] is empty here: the swarm knows its listeners.
    pub fn new(
        identity: Identity,
        config: echo_proto::Config,
        seed: u64,
        restore: echo_proto::Restore,
        driver: DriverConfig,
    ) -> (Self, Handle, Events) {
        Self::with_files(identity, config, seed, restore, driver, None)
    }

    /// A node for a swarm from `options` (its listen addresses are the swarm's
    /// business and ignored here), with file transfer if [`Options::files`] is set:
    /// files then travel on `/echo/blob/1.0.0` substreams of the swarm's direct
    /// connections (never a relayed one), as with the direct driver. Call within a
    /// tokio runtime.
    pub fn from_options(options: Options) -> Result<(Self, Handle, Events), StartError> {
        let Options {
            identity,
            seed,
            config,
            restore,
            driver,
            files,
            ..
        } = options;
        let files = match files {
            Some(f) => {
                let dir = f.dir.clone();
                let f = Files::new(identity.peer_id(), f)
                    .map_err(|error| StartError::Files { dir, error })?;
                Some(f)
            }
            None => None,
        };
        Ok(Self::with_files(
            identity, config, seed, restore, driver, files,
        ))
    }

    fn with_files(
        identity: Identity,
        config: echo_proto::Config,
        seed: u64,
        restore: echo_proto::Restore,
        driver: DriverConfig,
        files: Option<Files>,
    ) -> (Self, Handle, Events) {
        let rt = TokioRuntime::current();
        let now = rt.now();
        let local = identity.peer_id();
        let node = Node::restore(identity, config, seed, restore, now);
        let has_files = files.is_some();
        let (mut host, handle, events, reg): (Host, Handle, Events, AbortRegistration) =
            host::wire(node, &driver, rt.timer(now), Vec::new(), files, now);
        let mut io = SwarmIo {
            rt,
            cfg: driver,
            local,
            links: HashMap::new(),
            chats: HashMap::new(),
            next_conn: 1,
            dials: HashMap::new(),
            next_swarm_dial: 0,
            dials_refused: 0,
            discarded: 0,
            ready: Default::default(),
            to_poll: Vec::new(),
            to_swarm: VecDeque::new(),
            listen: Vec::new(),
            external: Vec::new(),
            files: has_files,
        };
        // Hand out the events of Node::new (e.g. joining the default room).
        host.drain(&mut io);
        let b = EchoBehaviour {
            host: Some(host),
            io,
            abort: Abortable::new(futures::future::pending(), reg),
        };
        (b, handle, events)
    }

    /// Hands a network notice (relay, hole punching, NAT) to the app's [`Events`].
    pub(crate) fn notify(&self, e: crate::RuntimeEvent) {
        if let Some(h) = &self.host {
            h.events.notify(e);
        }
    }

    /// The node has stopped: shut down and every connection closed, or aborted.
    pub fn is_stopped(&self) -> bool {
        self.host.is_none()
    }

    fn link(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        role: Role,
        remote: Multiaddr,
        relayed: bool,
    ) -> handler::Handler {
        let dial = self.io.dials.remove(&id);
        let remote = match role {
            // The address as dialed, with the peer's real id.
            Role::Dialer => strip_p2p(&remote).with(Ma::P2p(peer)),
            Role::Listener => remote,
        };
        self.io.links.insert(
            id,
            Link {
                role,
                relayed,
                remote,
                dial,
                chat: None,
                early_blob: None,
            },
        );
        handler::Handler::new(
            role == Role::Dialer && self.host.is_some(),
            self.io.files && !relayed,
            self.io.cfg.dial_timeout,
        )
    }

    /// A dial failed: the node's is reported to it, the app's own as an event.
    fn dial_failed(host: &mut Host, io: &mut SwarmIo, dial: DialId, addr: Multiaddr, why: &str) {
        if dial.0 >= SWARM_DIALS {
            host.events.send(Event::DialFailed {
                dial,
                addr,
                reason: CloseReason::Transport(why.to_string()),
            });
        } else {
            host.node.handle_dial_failed(dial, why, io.rt.now());
            host.drain(io);
        }
    }

    /// Polls one chat and feeds its reports to the node.
    fn poll_chat(host: &mut Host, io: &mut SwarmIo, id: ConnId) {
        let Some(c) = io.chats.get_mut(&id) else {
            return;
        };
        c.waker
            .queued
            .store(false, std::sync::atomic::Ordering::Release);
        let waker = Waker::from(c.waker.clone());
        let done = c.poll(&mut Context::from_waker(&waker));
        let closing = c.closing.is_some();
        let mut events = std::mem::take(&mut c.events);
        if done {
            if let Some(c) = io.chats.remove(&id) {
                io.discarded += c.discarded + c.pipe.discarded;
                if let Some(l) = io.links.get_mut(&c.swarm) {
                    l.chat = None;
                }
                if closing {
                    io.to_swarm.push_back(ToSwarm::CloseConnection {
                        peer_id: c.peer,
                        connection: CloseConnection::One(c.swarm),
                    });
                }
            }
        }
        if closing {
            io.discarded += host::data_bytes(&events);
            return;
        }
        io.discarded += host.feed(io, id, &mut events);
    }

    /// Aborted: connections dropped without goodbyes, the node stopped.
    fn aborted(&mut self) {
        for c in std::mem::take(&mut self.io.chats).into_values() {
            self.io.to_swarm.push_back(ToSwarm::CloseConnection {
                peer_id: c.peer,
                connection: CloseConnection::One(c.swarm),
            });
        }
        self.host = None;
    }
}

impl NetworkBehaviour for EchoBehaviour {
    type ConnectionHandler = handler::Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let relayed = is_circuit(local) || is_circuit(remote);
        Ok(self.link(id, peer, Role::Listener, remote.clone(), relayed))
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        // A hole punch may make us the listener of a connection we dialed.
        let role = match role_override {
            Endpoint::Dialer => Role::Dialer,
            Endpoint::Listener => Role::Listener,
        };
        Ok(self.link(id, peer, role, addr.clone(), is_circuit(addr)))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        let Some(host) = self.host.as_mut() else {
            return;
        };
        let io = &mut self.io;
        match event {
            FromSwarm::ConnectionClosed(e) => {
                let Some(link) = io.links.remove(&e.connection_id) else {
                    return;
                };
                let why = match e.cause {
                    Some(c) => format!("connection closed: {c}"),
                    None => "connection closed".to_string(),
                };
                if let Some(id) = link.chat {
                    if let Some(c) = io.chats.remove(&id) {
                        io.discarded += c.discarded + c.pipe.discarded;
                        if c.closing.is_none() {
                            let mut events = c.events;
                            events.push_back(ConnEvent::Closed(why));
                            io.discarded += host.feed(io, id, &mut events);
                        }
                    }
                } else if let Some((dial, addr)) = link.dial {
                    Self::dial_failed(host, io, dial, addr, &why);
                }
            }
            FromSwarm::DialFailure(e) => {
                // Failed before the connection was up, or refused by another behaviour
                // once up (then its link holds the dial).
                let link = io.links.remove(&e.connection_id);
                let dial = io.dials.remove(&e.connection_id);
                if let Some((dial, addr)) = dial.or(link.and_then(|l| l.dial)) {
                    Self::dial_failed(host, io, dial, addr, &e.error.to_string());
                }
            }
            FromSwarm::ListenFailure(e) => {
                io.links.remove(&e.connection_id);
            }
            _ => {}
        }
        let addrs_changed = match event {
            FromSwarm::NewListenAddr(e) => SwarmIo::add_addr(&mut io.listen, e.addr),
            FromSwarm::ExpiredListenAddr(e) => SwarmIo::remove_addr(&mut io.listen, e.addr),
            FromSwarm::ExternalAddrConfirmed(e) => SwarmIo::add_addr(&mut io.external, e.addr),
            FromSwarm::ExternalAddrExpired(e) => SwarmIo::remove_addr(&mut io.external, e.addr),
            _ => false,
        };
        if addrs_changed {
            host.node.set_listen_addrs(io.own_addrs());
        }
        // What the node asked for meanwhile is handed out in `poll`.
        io.ready.task.wake();
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        swarm: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        let Some(host) = self.host.as_mut() else {
            return;
        };
        let io = &mut self.io;
        let Some(link) = io.links.get_mut(&swarm) else {
            return;
        };
        match event {
            handler::HandlerEvent::Chat(stream, protocol) => {
                if link.chat.is_some() {
                    return;
                }
                let id = ConnId(io.next_conn);
                io.next_conn += 1;
                link.chat = Some(id);
                let dial = link.dial.take();
                let info = ConnInfo {
                    peer,
                    role: link.role,
                    remote_addr: link.remote.clone(),
                    protocol,
                    dial: dial.map(|d| d.0).filter(|d| d.0 < SWARM_DIALS),
                    link: match link.relayed {
                        true => echo_proto::Link::Relayed,
                        false => echo_proto::Link::Direct,
                    },
                };
                let mut c = Chat {
                    swarm,
                    peer,
                    stream,
                    pipe: Pipe::new(),
                    waker: ConnWaker::new(id, &io.ready),
                    closing: None,
                    events: VecDeque::new(),
                    discarded: 0,
                };
                c.events.push_back(ConnEvent::Connected(info));
                if let Some(stream) = link.early_blob.take() {
                    c.events.push_back(ConnEvent::Blob {
                        stream: Box::new(stream),
                        outbound: false,
                    });
                }
                io.chats.insert(id, c);
                io.queue_poll(id);
            }
            handler::HandlerEvent::Failed(why) => {
                if let Some((dial, addr)) = link.dial.take() {
                    Self::dial_failed(host, io, dial, addr, &why);
                }
            }
            handler::HandlerEvent::Blob { stream, outbound } => match link.chat {
                Some(id) => {
                    if let Some(c) = io.chats.get_mut(&id) {
                        let stream = Box::new(stream);
                        c.events.push_back(ConnEvent::Blob { stream, outbound });
                        io.queue_poll(id);
                    }
                }
                // Ours, on a chat that ended: dropped (the file side knows it is gone).
                None if outbound => {}
                None => link.early_blob = Some(stream),
            },
            handler::HandlerEvent::BlobFailed => {
                if let Some(id) = link.chat {
                    if let Some(c) = io.chats.get_mut(&id) {
                        c.events.push_back(ConnEvent::BlobFailed);
                        io.queue_poll(id);
                    }
                }
            }
        }
        io.ready.task.wake();
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        loop {
            if let Some(e) = self.io.to_swarm.pop_front() {
                return Poll::Ready(e);
            }
            if self.host.is_none() {
                return Poll::Pending;
            }
            if let Poll::Ready(Err(Aborted)) = Pin::new(&mut self.abort).poll(cx) {
                self.aborted();
                continue;
            }
            let Some(host) = self.host.as_mut() else {
                return Poll::Pending;
            };
            let io = &mut self.io;
            if host.undrained {
                host.drain(io);
            }
            let mut budget = BUDGET;
            let mut progress = host.poll_commands(cx, &mut budget, io);
            io.ready.task.register(cx.waker());
            io.ready.drain(&mut io.to_poll);
            while let Some(id) = io.to_poll.pop() {
                budget = budget.saturating_sub(1);
                progress = true;
                Self::poll_chat(host, io, id);
            }
            progress |= host.poll_timer(cx, io);
            // Blob substreams after the chats; file bytes count against the budget.
            if host.poll_files(cx, io) {
                progress = true;
                budget = budget.saturating_sub(FILES_COST);
            }
            if host.shutting_down && io.chats.is_empty() {
                host.finished();
                self.host = None;
                continue;
            }
            if !io.to_swarm.is_empty() {
                continue;
            }
            if budget == 0 || host.undrained {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }
}
