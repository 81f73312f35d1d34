//! What every way of running a node shares: the [`Node`], the app's commands (from
//! [`crate::Handle`]), its events (to [`crate::Events`]), the one timer, and shutdown.
//! The direct driver ([`crate::driver`]) and the swarm adapter (`crate::swarm`) each
//! own a [`Host`] and give it their connections as an [`Io`]: the host feeds the node
//! every command and timer, and drains its outputs into the `Io` (transmits, dials,
//! closes) and the event queue.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use std::collections::VecDeque;

use echo_proto::{Action, CommandError, ConnId, DialId, Multiaddr, Node, Output, PeerId, Transmit};
use futures::channel::oneshot;
use futures::future::{AbortHandle, AbortRegistration, FutureExt};
use futures::StreamExt;

use crate::conn::ConnEvent;
use crate::events::{self, EventSender};
use crate::runtime::Timer;
use crate::{Command, DriverConfig, DriverStats, Events, Handle, Inner};

/// The connections side of a running node.
pub(crate) trait Io {
    /// The monotonic clock.
    fn now(&self) -> Instant;
    /// Bytes the node hands out for a connection.
    fn transmit(&mut self, t: Transmit);
    /// A dial or a close the node asks for; a dial refused at once is reported to
    /// `node` here. `shutting_down`: the node is shutting down.
    fn act(&mut self, node: &mut Node, a: Action, shutting_down: bool);
    /// The app's `connect`: the node's own by default.
    fn connect(
        &mut self,
        node: &mut Node,
        addr: &str,
        now: Instant,
    ) -> Result<DialId, CommandError> {
        node.connect(addr, now)
    }
    /// The node closed connection `id` (it hears nothing more from it).
    fn closing(&self, id: ConnId) -> bool;
    /// The counters of the connections side (the host fills in its own).
    fn stats(&self) -> DriverStats;
    /// The node has said goodbye everywhere: stop listening, cancel set-ups, close
    /// what the node did not know.
    fn shut_down(&mut self);
}

pub(crate) struct Host {
    pub node: Node,
    pub cmds: Pin<Box<async_channel::Receiver<Command>>>,
    pub cmds_done: bool,
    pub events: EventSender,
    pub timer: Pin<Box<dyn Timer>>,
    pub timer_at: Option<Instant>,
    pub shutting_down: bool,
    pub waiters: Vec<oneshot::Sender<()>>,
    /// Dropped with the host (or when it finished): tells [`crate::Handle::stopped`].
    pub alive: Option<oneshot::Sender<()>>,
}

/// A node wired to a new [`Handle`] and [`Events`]; the registration aborts whatever
/// runs the host when [`Handle::abort`] is called.
pub(crate) fn wire(
    mut node: Node,
    cfg: &DriverConfig,
    timer: Pin<Box<dyn Timer>>,
    listen_addrs: Vec<Multiaddr>,
    now: Instant,
) -> (Host, Handle, Events, AbortRegistration) {
    let peer_id: PeerId = node.peer_id();
    // The wall clock bounds what a peer's clock value may do (PROTOCOL.md section 8.3).
    node.set_wall_clock(SystemTime::now(), now);
    let (cmd_tx, cmds) = async_channel::bounded(cfg.command_buffer.max(1));
    let (ev_tx, ev_rx) = events::channel(cfg.event_buffer);
    let (alive, stopped) = oneshot::channel();
    let (abort, reg) = AbortHandle::new_pair();
    let host = Host {
        node,
        cmds: Box::pin(cmds),
        cmds_done: false,
        events: ev_tx,
        timer,
        timer_at: None,
        shutting_down: false,
        waiters: Vec::new(),
        alive: Some(alive),
    };
    let inner = Inner {
        peer_id,
        listen_addrs: if listen_addrs.is_empty() {
            Default::default()
        } else {
            listen_addrs.into()
        },
        net: Default::default(),
        cmds: cmd_tx,
        waiting: Default::default(),
        abort,
        stopped: stopped.shared(),
    };
    (host, Handle(Arc::new(inner)), ev_rx, reg)
}

impl Host {
    /// Applies the app's commands (at most `budget`). Consecutive room messages are
    /// applied as a batch and drained once: they form one burst (one signature). Every
    /// other command is drained on its own, after what came before it (so e.g. messages
    /// queued before a shutdown are sealed and written before the goodbye). When every
    /// handle is gone, the node shuts down. Returns whether anything happened.
    pub fn poll_commands(
        &mut self,
        cx: &mut Context<'_>,
        budget: &mut usize,
        io: &mut impl Io,
    ) -> bool {
        let mut progress = false;
        let mut applied = false;
        while !self.cmds_done && *budget > 0 {
            match self.cmds.poll_next_unpin(cx) {
                Poll::Ready(Some(c)) => {
                    let batch = matches!(c, Command::Send { .. });
                    if !batch && applied {
                        self.drain(io);
                    }
                    self.command(c, io);
                    applied = batch;
                    if !batch {
                        self.drain(io);
                    }
                    *budget -= 1;
                    progress = true;
                }
                Poll::Ready(None) => {
                    // Every handle is gone: shut down politely.
                    if applied {
                        self.drain(io);
                        applied = false;
                    }
                    self.cmds_done = true;
                    self.begin_shutdown(io);
                    progress = true;
                }
                Poll::Pending => break,
            }
        }
        if applied {
            self.drain(io);
        }
        progress
    }

    /// The one timer: fires the node's timeout when due.
    pub fn poll_timer(&mut self, cx: &mut Context<'_>, io: &mut impl Io) -> bool {
        if self.timer_at.is_some() && self.timer.as_mut().poll(cx).is_ready() {
            self.timer_at = None;
            let now = io.now();
            // Keeps the node's wall clock true across suspends and clock steps.
            self.node.set_wall_clock(SystemTime::now(), now);
            self.node.handle_timeout(now);
            self.drain(io);
            return true;
        }
        false
    }

    fn command(&mut self, c: Command, io: &mut impl Io) {
        let now = io.now();
        let node = &mut self.node;
        match c {
            Command::Send { room, text, reply } => {
                let _ = reply.send(node.send(&room, &text, SystemTime::now(), now));
            }
            Command::Join { room, reply } => {
                let _ = reply.send(node.join(&room, now));
            }
            Command::Leave { room, reply } => {
                let _ = reply.send(node.leave(&room, now));
            }
            Command::Direct { peer, text, reply } => {
                let _ = reply.send(node.send_direct(&peer, &text, SystemTime::now(), now));
            }
            Command::SetName { name, reply } => {
                let _ = reply.send(node.set_name(&name, now));
            }
            Command::Connect { addr, reply } => {
                let _ = reply.send(io.connect(node, &addr, now));
            }
            Command::Addresses {
                peer,
                addrs,
                source,
                reply,
            } => {
                let _ = reply.send(Ok(node.handle_addresses(peer, &addrs, source, now)));
            }
            Command::Inspect(f) => f(node),
            Command::DriverStats(reply) => {
                let mut s = io.stats();
                let ev = self.events.counts();
                s.events_queued = ev.queued;
                s.events_sent = ev.sent;
                s.events_missed = ev.missed;
                s.commands_queued = self.cmds.len();
                let _ = reply.send(Ok(s));
            }
            Command::Shutdown { reply } => {
                self.waiters.push(reply);
                self.begin_shutdown(io);
            }
        }
    }

    /// Drains the node's outputs in the order it gives them (transmits, actions,
    /// events), then re-arms the timer.
    pub fn drain(&mut self, io: &mut impl Io) {
        let at = loop {
            match self.node.poll_output() {
                Output::Transmit(t) => io.transmit(t),
                Output::Action(a) => io.act(&mut self.node, a, self.shutting_down),
                Output::Event(e) => self.events.send(e),
                Output::Wait(at) => break at,
                // `Output` is non_exhaustive; this version of the core has no others.
                _ => {}
            }
        };
        if at != self.timer_at {
            if let Some(at) = at {
                self.timer.as_mut().reset(at);
            }
            self.timer_at = at;
        }
    }

    /// Goodbye on every connection, then the `Io` stops listening and cancels set-ups.
    pub fn begin_shutdown(&mut self, io: &mut impl Io) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        let now = io.now();
        self.node.shutdown(now);
        self.drain(io);
        io.shut_down();
    }

    /// Shutdown is complete: tells those waiting for it.
    pub fn finished(&mut self) {
        for w in self.waiters.drain(..) {
            let _ = w.send(());
        }
        self.alive = None;
    }

    /// Feeds connection `id`'s reports to the node, draining after each. Once the node
    /// has closed the connection the rest is not reported: returns the bytes of data
    /// dropped that way.
    pub fn feed(&mut self, io: &mut impl Io, id: ConnId, events: &mut VecDeque<ConnEvent>) -> u64 {
        let now = io.now();
        while let Some(e) = events.pop_front() {
            let node = &mut self.node;
            match e {
                ConnEvent::Connected(info) => node.handle_connected(id, info, now),
                ConnEvent::Data(data) => node.handle_data(id, &data, now),
                ConnEvent::Sent(n) => node.handle_sent(id, n),
                ConnEvent::Closed(reason) => node.handle_closed(id, &reason, now),
                ConnEvent::SetupFailed(_) => {}
            }
            self.drain(io);
            if io.closing(id) {
                let dropped = data_bytes(events);
                events.clear();
                return dropped;
            }
        }
        0
    }
}

impl Drop for Host {
    /// Commands still queued (or sent while the node ends) are dropped, so their
    /// [`crate::Pending`]s resolve to [`crate::Error::Stopped`]: the queue itself lives on
    /// as long as a handle does.
    fn drop(&mut self) {
        self.cmds.close();
        while self.cmds.try_recv().is_ok() {}
    }
}

/// Bytes of the `Data` reports among `events`.
pub(crate) fn data_bytes(events: &VecDeque<ConnEvent>) -> u64 {
    events
        .iter()
        .map(|e| match e {
            ConnEvent::Data(d) => d.len() as u64,
            _ => 0,
        })
        .sum()
}
