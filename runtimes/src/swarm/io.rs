//! The swarm side of the node ([`super::EchoBehaviour`]'s [`Io`]): echo's swarm
//! connections, their chat substreams (read and written here), and what to ask of the
//! swarm (dials, closes, handler notices).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use echo_proto::{Action, CommandError, ConnId, DialId, Multiaddr, Node, PeerId, Role, Transmit};
use futures::AsyncWrite;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NotifyHandler, Stream, ToSwarm};
use multiaddr::Protocol as Ma;

use super::{handler, MAX_OWN_ADDRS, READS_PER_POLL, SWARM_DIALS};
use crate::conn::ConnEvent;
use crate::driver::{ConnWaker, Ready};
use crate::host::Io;
use crate::pipe::Pipe;
use crate::runtime::{Runtime, Timer};
use crate::tokio::TokioRuntime;
use crate::transport::DialError;
use crate::{DriverConfig, DriverStats};

/// A swarm connection with echo's handler.
pub(super) struct Link {
    pub(super) role: Role,
    /// Through a relay (a limited circuit).
    pub(super) relayed: bool,
    pub(super) remote: Multiaddr,
    /// The node's dial, or ours (see [`SWARM_DIALS`]), that made this connection.
    pub(super) dial: Option<(DialId, Multiaddr)>,
    /// The chat, once up (until it ends).
    pub(super) chat: Option<ConnId>,
    /// The remote's blob substream, up before the chat was (one; a later one replaces
    /// it), reported right after the chat.
    pub(super) early_blob: Option<Stream>,
}

/// A connection's chat substream, reported to the node.
pub(super) struct Chat {
    pub(super) swarm: ConnectionId,
    pub(super) peer: PeerId,
    pub(super) stream: Stream,
    pub(super) pipe: Pipe,
    pub(super) waker: Arc<ConnWaker>,
    /// The node closed it: flush, close the substream and the connection before this.
    pub(super) closing: Option<Pin<Box<dyn Timer>>>,
    pub(super) events: VecDeque<ConnEvent>,
    /// Bytes read after the node closed the connection.
    pub(super) discarded: u64,
}

impl Chat {
    /// Reads, writes and closes; reports gather in `events`. True when it is over:
    /// closed at the node's request, or ended and reported.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> bool {
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
pub(super) struct SwarmIo {
    pub(super) rt: TokioRuntime,
    pub(super) cfg: DriverConfig,
    pub(super) local: PeerId,
    pub(super) links: HashMap<ConnectionId, Link>,
    pub(super) chats: HashMap<ConnId, Chat>,
    pub(super) next_conn: u64,
    /// Dials in progress, by the swarm's id for them.
    pub(super) dials: HashMap<ConnectionId, (DialId, Multiaddr)>,
    pub(super) next_swarm_dial: u64,
    pub(super) dials_refused: u64,
    pub(super) discarded: u64,
    pub(super) ready: Arc<Ready>,
    pub(super) to_poll: Vec<ConnId>,
    pub(super) to_swarm: VecDeque<ToSwarm<Infallible, handler::HandlerIn>>,
    /// File transfer is on: blob substreams are opened and accepted.
    pub(super) files: bool,
    pub(super) listen: Vec<Multiaddr>,
    pub(super) external: Vec<Multiaddr>,
}

impl SwarmIo {
    pub(super) fn queue_poll(&mut self, id: ConnId) {
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
    pub(super) fn dial(
        &mut self,
        dial: DialId,
        addr: Multiaddr,
        peer: Option<PeerId>,
    ) -> Result<(), String> {
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
    pub(super) fn own_addrs(&self) -> Vec<Multiaddr> {
        let mut v: Vec<Multiaddr> = self.listen.iter().chain(&self.external).cloned().collect();
        v.dedup();
        v
    }

    pub(super) fn add_addr(list: &mut Vec<Multiaddr>, a: &Multiaddr) -> bool {
        let a = strip_p2p(a);
        if list.contains(&a) || list.len() >= MAX_OWN_ADDRS {
            return false;
        }
        list.push(a);
        true
    }

    pub(super) fn remove_addr(list: &mut Vec<Multiaddr>, a: &Multiaddr) -> bool {
        let a = strip_p2p(a);
        let n = list.len();
        list.retain(|x| *x != a);
        list.len() != n
    }
}

/// `a` without a trailing `/p2p/<id>`.
pub(super) fn strip_p2p(a: &Multiaddr) -> Multiaddr {
    let mut a = a.clone();
    if let Some(Ma::P2p(_)) = a.iter().last() {
        a.pop();
    }
    a
}

/// A relayed address (as `ConnectedPoint::is_relayed` decides).
pub(super) fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Ma::P2pCircuit)
}

/// An address only the swarm can dial (the node's own addresses are TCP): QUIC or a
/// relay circuit (a bare `/udp/…` is not dialable at all).
pub(super) fn swarm_only(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, Ma::QuicV1 | Ma::P2pCircuit))
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

    fn open_blob(&mut self, id: ConnId) -> bool {
        let Some(c) = self.chats.get(&id) else {
            return false;
        };
        // Never over a relayed (limited) circuit.
        let relayed = self.links.get(&c.swarm).is_none_or(|l| l.relayed);
        if !self.files || c.closing.is_some() || relayed {
            return false;
        }
        self.to_swarm.push_back(ToSwarm::NotifyHandler {
            peer_id: c.peer,
            handler: NotifyHandler::One(c.swarm),
            event: handler::HandlerIn::OpenBlob,
        });
        true
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
