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

use crate::blobs::Files;
use crate::conn::ConnEvent;
use crate::events::{self, EventSender};
use crate::runtime::Timer;
use crate::{Command, DriverConfig, DriverStats, Error, Events, Handle, Inner};

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
    /// Opens a blob substream on connection `id` (reported as [`ConnEvent::Blob`] or
    /// [`ConnEvent::BlobFailed`]); false if this `Io` cannot.
    fn open_blob(&mut self, _id: ConnId) -> bool {
        false
    }
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
    /// The node's own next timeout (the timer serves it and the file side).
    pub node_at: Option<Instant>,
    /// File transfer, if on.
    pub files: Option<Files>,
    pub shutting_down: bool,
    /// The node returned [`Output::Yield`]: the rest of its output is drained at the
    /// task's next poll, after the app has taken the events.
    pub undrained: bool,
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
    files: Option<Files>,
    now: Instant,
) -> (Host, Handle, Events, AbortRegistration) {
    let files_dir = files.as_ref().map(|f| f.dir().to_path_buf());
    let peer_id: PeerId = node.peer_id();
    // The wall clock bounds what a peer's clock value may do (PROTOCOL.md section 8.3).
    node.set_wall_clock(SystemTime::now(), now);
    // Fresh OS entropy for the ephemeral keys of encrypted direct messages, so two runs
    // with the same seed never repeat them (PROTOCOL.md section 18).
    let mut entropy = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut entropy);
    node.dm_entropy(entropy);
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
        node_at: None,
        files,
        shutting_down: false,
        undrained: false,
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
        files_dir,
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
            if self.node_at.is_some_and(|at| at <= now) {
                // Keeps the node's wall clock true across suspends and clock steps.
                self.node.set_wall_clock(SystemTime::now(), now);
                self.node.handle_timeout(now);
            }
            if let Some(f) = self.files.as_mut() {
                f.handle_timeout(io, &self.events, now);
            }
            self.drain(io);
            return true;
        }
        false
    }

    /// The blob substreams, after everything else (chat goes first).
    pub fn poll_files(&mut self, cx: &mut Context<'_>, io: &mut impl Io) -> bool {
        let Some(f) = self.files.as_mut() else {
            return false;
        };
        let progress = f.poll(cx, io, &self.events, io.now());
        self.rearm();
        progress
    }

    /// Sets the one timer to the earlier of the node's and the file side's.
    fn rearm(&mut self) {
        let files_at = self.files.as_ref().and_then(|f| f.wait_at);
        let at = match (self.node_at, files_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if at != self.timer_at {
            if let Some(at) = at {
                self.timer.as_mut().reset(at);
            }
            self.timer_at = at;
        }
    }

    fn command(&mut self, c: Command, io: &mut impl Io) {
        let now = io.now();
        let node = &mut self.node;
        match c {
            Command::Send { room, text, reply } => {
                let _ = reply.send(cmd(node.send(&room, &text, SystemTime::now(), now)));
            }
            Command::Join { room, reply } => {
                let _ = reply.send(cmd(node.join(&room, now)));
            }
            Command::Leave { room, reply } => {
                let _ = reply.send(cmd(node.leave(&room, now)));
            }
            Command::Direct { peer, text, reply } => {
                let r = node.send_direct(&peer, &text, SystemTime::now(), now);
                let _ = reply.send(cmd(r));
            }
            Command::Dm { peer, text, reply } => {
                let r = node.send_dm(&peer, &text, SystemTime::now(), now);
                let _ = reply.send(cmd(r));
            }
            Command::DmRead { peer, seqs, reply } => {
                let r = node.mark_dm_read(&peer, &seqs, SystemTime::now(), now);
                let _ = reply.send(cmd(r));
            }
            Command::SetName { name, reply } => {
                let _ = reply.send(cmd(node.set_name(&name, now)));
            }
            Command::Connect { addr, reply } => {
                let _ = reply.send(cmd(io.connect(node, &addr, now)));
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
                if let Some(f) = &self.files {
                    let c = f.counts();
                    s.blob_links = c.links;
                    s.blob_streams_refused = c.refused;
                    s.blob_bytes_dropped = c.dropped;
                    s.blob = c.blob;
                }
                let _ = reply.send(Ok(s));
            }
            Command::Files(c) => match self.files.as_mut() {
                Some(f) => {
                    f.command(c, io, &self.events, now);
                    self.rearm();
                }
                None => c.refuse(Error::Files("file transfer is off".into())),
            },
            Command::Shutdown { reply } => {
                self.waiters.push(reply);
                self.begin_shutdown(io);
            }
        }
    }

    /// Drains the node's outputs in the order it gives them (transmits, actions,
    /// events), then re-arms the timer. Stops early at [`Output::Yield`] (setting
    /// `undrained`): the task then wakes itself and returns `Pending`, so an app task
    /// woken by the events runs before the node's deferred checks (on tokio it sits in
    /// this worker's next-task slot); the next poll drains the rest.
    pub fn drain(&mut self, io: &mut impl Io) {
        self.undrained = false;
        let at = loop {
            match self.node.poll_output() {
                Output::Transmit(t) => io.transmit(t),
                Output::Action(a) => {
                    if let (Action::Close { conn, .. }, Some(f)) = (&a, self.files.as_mut()) {
                        let now = io.now();
                        f.conn_gone(*conn, io, &self.events, now);
                    }
                    io.act(&mut self.node, a, self.shutting_down)
                }
                Output::Event(e) => self.events.send(e),
                Output::Yield => {
                    self.undrained = true;
                    return;
                }
                Output::Wait(at) => break at,
                // `Output` is non_exhaustive; this version of the core has no others.
                _ => {}
            }
        };
        self.node_at = at;
        self.rearm();
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
            let files = self.files.as_mut();
            match e {
                ConnEvent::Connected(info) => {
                    if let Some(f) = files {
                        f.connected(id, &info, io);
                    }
                    node.handle_connected(id, info, now)
                }
                ConnEvent::Data(data) => node.handle_data(id, &data, now),
                ConnEvent::Sent(n) => node.handle_sent(id, n),
                ConnEvent::Closed(reason) => {
                    if let Some(f) = files {
                        f.conn_gone(id, io, &self.events, now);
                    }
                    node.handle_closed(id, &reason, now)
                }
                ConnEvent::Blob { stream, outbound } => {
                    if let Some(f) = files {
                        f.attach(id, stream, outbound, io, &self.events, now);
                    }
                }
                ConnEvent::BlobFailed => {
                    if let Some(f) = files {
                        f.open_failed(id, io, &self.events, now);
                    }
                }
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

/// A core command's result, as a [`crate::Pending`] gives it.
fn cmd<T>(r: Result<T, echo_proto::CommandError>) -> Result<T, Error> {
    r.map_err(Error::Command)
}
