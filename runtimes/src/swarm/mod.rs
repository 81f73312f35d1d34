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
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use echo_proto::{
    Action, CloseReason, CommandError, ConnId, ConnInfo, DialId, Event, Identity, Multiaddr, Node,
    PeerId, Role, Transmit,
};
use futures::future::{AbortRegistration, Abortable, Aborted};
use futures::{AsyncWrite, Future};
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, Stream, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use multiaddr::Protocol as Ma;

use crate::conn::ConnEvent;
use crate::driver::{ConnWaker, Ready};
use crate::host::{self, Host, Io};
use crate::pipe::Pipe;
use crate::runtime::{Runtime, Timer};
use crate::tokio::TokioRuntime;
use crate::transport::DialError;
use crate::{DriverConfig, DriverStats, Events, Handle};

mod build;
pub mod handler;
mod net;

pub use build::{start, Behaviour, BehaviourEvent, SwarmOptions};
pub use net::{MAX_RELAYS, RELAY_BACKOFF_FIRST, RELAY_BACKOFF_MAX};

/// Inputs handled per poll before yielding to the swarm's other work.
const BUDGET: usize = 256;
/// Chunks read per connection and poll.
const READS_PER_POLL: usize = 4;
/// Own listen and external addresses told to the node, at most.
const MAX_OWN_ADDRS: usize = 32;
/// First id of the dials [`Handle::connect`] makes through the swarm directly (the
/// node's own count up from 0).
const SWARM_DIALS: u64 = 1 << 62;

/// A swarm connection with echo's handler.
struct Link {
    role: Role,
    /// Through a relay (a limited circuit).
    relayed: bool,
    remote: Multiaddr,
    /// The node's dial, or ours (see [`SWARM_DIALS`]), that made this connection.
    dial: Option<(DialId, Multiaddr)>,
    /// The chat, once up (until it ends).
    chat: Option<ConnId>,
}

/// A connection's chat substream, reported to the node.
struct Chat {
    swarm: ConnectionId,
    peer: PeerId,
    stream: Stream,
    pipe: Pipe,
    waker: Arc<ConnWaker>,
    /// The node closed it: flush, close the substream and the connection before this.
    closing: Option<Pin<Box<dyn Timer>>>,
    events: VecDeque<ConnEvent>,
    /// Bytes read after the node closed the connection.
    discarded: u64,
}

impl Chat {
    /// Reads, writes and closes; reports gather in `events`. True when it is over:
    /// closed at the node's request, or ended and reported.
    fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        let mut reads = 0;
        for _ in 0..16 {
            let mut progress = self.pipe.poll_write(cx, &mut self.stream).progress;
            if reads < READS_PER_POLL {
                match self.pipe.poll_read(cx, &mut self.stream) {
                    Poll::Ready(Ok(Some(d))) => {
                        progress = true;
                        reads += 1;
                        if self.closing.is_some() {
                            self.discarded += d.len() as u64;
                        } else {
                            self.events.push_back(ConnEvent::Data(d));
                        }
                        if reads == READS_PER_POLL {
                            cx.waker().wake_by_ref();
                        }
                    }
                    Poll::Ready(r) => {
                        if self.closing.is_none() {
                            let why = match r {
                                Err(e) => format!("connection lost: {e}"),
                                Ok(_) => "connection closed by the peer".to_string(),
                            };
                            self.events.push_back(ConnEvent::Closed(why));
                        }
                        return true;
                    }
                    Poll::Pending => {}
                }
            }
            if let Some(deadline) = self.closing.as_mut() {
                if (self.pipe.write_failed || self.pipe.idle())
                    && Pin::new(&mut self.stream).poll_close(cx).is_ready()
                {
                    return true;
                }
                if deadline.as_mut().poll(cx).is_ready() {
                    return true;
                }
            }
            if !progress {
                break;
            }
        }
        if self.pipe.sent > 0 {
            let n = std::mem::take(&mut self.pipe.sent);
            self.events.push_back(ConnEvent::Sent(n));
        }
        false
    }
}

/// The swarm side of the node: echo's connections and what to ask of the swarm.
struct SwarmIo {
    rt: TokioRuntime,
    cfg: DriverConfig,
    local: PeerId,
    links: HashMap<ConnectionId, Link>,
    chats: HashMap<ConnId, Chat>,
    next_conn: u64,
    /// Dials in progress, by the swarm's id for them.
    dials: HashMap<ConnectionId, (DialId, Multiaddr)>,
    next_swarm_dial: u64,
    dials_refused: u64,
    discarded: u64,
    ready: Arc<Ready>,
    to_poll: Vec<ConnId>,
    to_swarm: VecDeque<ToSwarm<Infallible, Infallible>>,
    listen: Vec<Multiaddr>,
    external: Vec<Multiaddr>,
}

impl SwarmIo {
    fn queue_poll(&mut self, id: ConnId) {
        if let Some(c) = self.chats.get(&id) {
            if !c
                .waker
                .queued
                .swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                self.to_poll.push(id);
            }
        }
    }

    /// Asks the swarm to dial; `Err` with the reason if it may not.
    fn dial(&mut self, dial: DialId, addr: Multiaddr, peer: Option<PeerId>) -> Result<(), String> {
        if self.dials.len() >= self.cfg.max_pending_dials {
            self.dials_refused += 1;
            return Err(DialError::TooManyDials(self.cfg.max_pending_dials).to_string());
        }
        let opts = match peer {
            Some(p) => DialOpts::peer_id(p)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::Always)
                .build(),
            None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
        };
        self.dials.insert(opts.connection_id(), (dial, addr));
        self.to_swarm.push_back(ToSwarm::Dial { opts });
        Ok(())
    }

    /// The node's listen addresses: the swarm's, then the confirmed external ones.
    fn own_addrs(&self) -> Vec<Multiaddr> {
        let mut v: Vec<Multiaddr> = self.listen.iter().chain(&self.external).cloned().collect();
        v.dedup();
        v
    }

    fn add_addr(list: &mut Vec<Multiaddr>, a: &Multiaddr) -> bool {
        let a = strip_p2p(a);
        if list.contains(&a) || list.len() >= MAX_OWN_ADDRS {
            return false;
        }
        list.push(a);
        true
    }

    fn remove_addr(list: &mut Vec<Multiaddr>, a: &Multiaddr) -> bool {
        let a = strip_p2p(a);
        let n = list.len();
        list.retain(|x| *x != a);
        list.len() != n
    }
}

/// `a` without a trailing `/p2p/<id>`.
fn strip_p2p(a: &Multiaddr) -> Multiaddr {
    let mut a = a.clone();
    if let Some(Ma::P2p(_)) = a.iter().last() {
        a.pop();
    }
    a
}

/// A relayed address (as `ConnectedPoint::is_relayed` decides).
fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Ma::P2pCircuit)
}

/// An address only the swarm can dial (the node's own addresses are TCP).
fn swarm_only(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, Ma::Udp(_) | Ma::QuicV1 | Ma::P2pCircuit))
}

impl Io for SwarmIo {
    fn now(&self) -> Instant {
        self.rt.now()
    }

    fn transmit(&mut self, t: Transmit) {
        match self.chats.get_mut(&t.conn) {
            Some(c) if c.closing.is_none() => {
                c.pipe.queue(t.data);
                self.queue_poll(t.conn);
            }
            _ => self.discarded += t.data.len() as u64,
        }
    }

    fn act(&mut self, node: &mut Node, a: Action, shutting_down: bool) {
        match a {
            Action::Dial { dial, addr, peer } => {
                let r = if shutting_down {
                    Err(DialError::ShuttingDown.to_string())
                } else {
                    self.dial(dial, addr, peer)
                };
                if let Err(e) = r {
                    node.handle_dial_failed(dial, &e, self.rt.now());
                }
            }
            Action::Close { conn, .. } => {
                let at = self.rt.now() + self.cfg.close_timeout;
                if let Some(c) = self.chats.get_mut(&conn) {
                    if c.closing.is_none() {
                        c.closing = Some(self.rt.timer(at));
                        c.events.clear();
                        self.queue_poll(conn);
                    }
                }
            }
            // `Action` is non_exhaustive; this version of the core has no others.
            _ => {}
        }
    }

    fn connect(
        &mut self,
        node: &mut Node,
        addr: &str,
        now: Instant,
    ) -> Result<DialId, CommandError> {
        let r = node.connect(addr, now);
        let Err(CommandError::InvalidAddr { .. }) = &r else {
            return r;
        };
        let Ok(ma) = addr.trim().parse::<Multiaddr>() else {
            return r;
        };
        if !swarm_only(&ma) {
            return r;
        }
        let peer = match ma.iter().last() {
            Some(Ma::P2p(p)) => Some(p),
            _ => None,
        };
        if peer == Some(self.local) {
            return Err(CommandError::SelfDial);
        }
        let dial = DialId(SWARM_DIALS + self.next_swarm_dial);
        self.next_swarm_dial += 1;
        self.dial(dial, ma, peer)
            .map(|()| dial)
            .map_err(|reason| CommandError::InvalidAddr {
                addr: addr.to_string(),
                reason,
            })
    }

    fn closing(&self, id: ConnId) -> bool {
        // A chat that ended by itself is gone from `chats` already, and its last
        // reports (data, then the end) are all for the node.
        self.chats.get(&id).is_some_and(|c| c.closing.is_some())
    }

    fn stats(&self) -> DriverStats {
        DriverStats {
            // Swarm connections whose chat substream is not (or no longer) open.
            handshakes: self.links.values().filter(|l| l.chat.is_none()).count(),
            dials: self.dials.len(),
            dials_refused: self.dials_refused,
            connections: self.chats.len(),
            bytes_discarded: self.discarded
                + self
                    .chats
                    .values()
                    .map(|c| c.discarded + c.pipe.discarded)
                    .sum::<u64>(),
            ..DriverStats::default()
        }
    }

    fn shut_down(&mut self) {
        let at = self.rt.now() + self.cfg.close_timeout;
        let ids: Vec<ConnId> = self.chats.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.chats.get_mut(&id) {
                if c.closing.is_none() {
                    c.closing = Some(self.rt.timer(at));
                    c.events.clear();
                }
            }
            self.queue_poll(id);
        }
    }
}

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
        Self::with_listen_addrs(identity, config, seed, restore, driver, Vec::new())
    }

    pub(crate) fn with_listen_addrs(
        identity: Identity,
        config: echo_proto::Config,
        seed: u64,
        restore: echo_proto::Restore,
        driver: DriverConfig,
        listen_addrs: Vec<Multiaddr>,
    ) -> (Self, Handle, Events) {
        let rt = TokioRuntime::current();
        let now = rt.now();
        let local = identity.peer_id();
        let node = Node::restore(identity, config, seed, restore, now);
        let (mut host, handle, events, reg): (Host, Handle, Events, AbortRegistration) =
            host::wire(node, &driver, rt.timer(now), listen_addrs, None, now);
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
            },
        );
        handler::Handler::new(
            role == Role::Dialer && self.host.is_some(),
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
                io.chats.insert(id, c);
                io.queue_poll(id);
            }
            handler::HandlerEvent::Failed(why) => {
                if let Some((dial, addr)) = link.dial.take() {
                    Self::dial_failed(host, io, dial, addr, &why);
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
            if host.shutting_down && io.chats.is_empty() {
                host.finished();
                self.host = None;
                continue;
            }
            if !io.to_swarm.is_empty() {
                continue;
            }
            if !progress {
                return Poll::Pending;
            }
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }
}
