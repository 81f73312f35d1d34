//! The node task: the one task that owns the [`Node`] and its established connections.
//! It feeds the node every input (app commands, connection events, the timer) and drains
//! its outputs after each: transmits are queued on their connection, dials spawn set-up
//! tasks, closes flush and close, events go to the app, and its one timer is re-armed.
//!
//! Connections are polled by this task with a waker of their own, so a wake-up polls
//! only the connections that have something to do.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use echo_proto::{Action, ConnId, Node};
use futures::channel::{mpsc, oneshot};
use futures::task::AtomicWaker;
use futures::StreamExt;
use libp2p_identity::Keypair;

use crate::conn::{self, Conn, Input, Setup};
use crate::host::{data_bytes, Host, Io};
use crate::limits::Admission;
use crate::runtime::{Incoming, Runtime};
use crate::transport::DialError;
use crate::{DriverConfig, DriverStats};

/// Inputs handled per poll before yielding to other tasks.
const BUDGET: usize = 256;
/// Budget used by a turn of the blob substreams that moved bytes (up to a few reads of
/// 64 KiB per peer).
const FILES_COST: usize = 16;

/// Connections woken since the node task last looked, and the node task's waker.
#[derive(Default)]
pub(crate) struct Ready {
    ids: Mutex<Vec<ConnId>>,
    pub task: AtomicWaker,
}

/// A connection's waker: queues its id and wakes the node task.
pub(crate) struct ConnWaker {
    id: ConnId,
    pub queued: AtomicBool,
    ready: Arc<Ready>,
}

impl ConnWaker {
    pub fn new(id: ConnId, ready: &Arc<Ready>) -> Arc<Self> {
        Arc::new(ConnWaker {
            id,
            queued: AtomicBool::new(false),
            ready: ready.clone(),
        })
    }
}

impl Ready {
    /// Moves the ids of the connections woken since the last call to `into`.
    pub fn drain(&self, into: &mut Vec<ConnId>) {
        into.append(&mut self.ids.lock().expect("not poisoned"));
    }
}

impl Wake for ConnWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready.ids.lock().expect("not poisoned").push(self.id);
            self.ready.task.wake();
        }
    }
}

pub(crate) struct Slot<R: Runtime> {
    conn: Box<Conn<R>>,
    waker: Arc<ConnWaker>,
    /// The node closed it: poll it until it has flushed and closed, report nothing.
    closing: bool,
}

pub(crate) struct Driver<R: Runtime> {
    /// The connections. Declared (so dropped) before `host`: dropping the host tells
    /// [`crate::Handle::stopped`], which promises the listeners are closed by then (a
    /// node restarted on the same port right after would otherwise race the old
    /// listener and fail with `AddrInUse`).
    pub io: Net<R>,
    /// The node, commands, events and the timer.
    pub host: Host,
}

/// The direct driver's connections: listeners, set-up tasks and established
/// connections.
pub(crate) struct Net<R: Runtime> {
    pub rt: R,
    pub key: Keypair,
    pub cfg: DriverConfig,
    /// File transfer is on.
    pub files: bool,
    /// Accepted connections in set-up, capped in total and per remote address.
    pub admission: Admission,
    /// Dials in set-up.
    pub dialing: HashSet<ConnId>,
    pub dials_refused: u64,
    /// Bytes dropped by connections already removed (see [`Conn::discarded`]), and
    /// transmits for connections closing or gone.
    pub discarded: u64,
    /// Established connections (open or closing).
    pub conns: HashMap<ConnId, Slot<R>>,
    /// Connections being set up: dropping the sender cancels one.
    pub pending: HashMap<ConnId, oneshot::Sender<()>>,
    /// Set-up tasks still running.
    pub live: HashSet<ConnId>,
    pub next_conn: u64,
    pub ready: Arc<Ready>,
    /// Connections to poll in this turn (woken, or handed bytes).
    pub to_poll: Vec<ConnId>,
    pub inputs: mpsc::UnboundedReceiver<Input<R>>,
    pub input_tx: mpsc::UnboundedSender<Input<R>>,
    pub listeners: Vec<Incoming<R::Tcp>>,
}

impl<R: Runtime> Future for Driver<R> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.io.ready.task.register(cx.waker());
        if this.host.undrained {
            this.host.drain(&mut this.io);
        }
        let mut budget = BUDGET;
        loop {
            // App commands.
            let mut progress = this.host.poll_commands(cx, &mut budget, &mut this.io);

            // Set-up tasks: connections up, dials failed.
            while budget > 0 {
                match this.io.inputs.poll_next_unpin(cx) {
                    Poll::Ready(Some(input)) => {
                        this.input(input);
                        budget -= 1;
                        progress = true;
                    }
                    _ => break,
                }
            }

            // Connections with something to do, each event followed by a drain.
            this.io.ready.drain(&mut this.io.to_poll);
            while let Some(id) = this.io.to_poll.pop() {
                budget = budget.saturating_sub(1);
                progress = true;
                this.poll_conn(id);
            }

            // New connections.
            progress |= this.io.accept(cx);

            // The one timer.
            progress |= this.host.poll_timer(cx, &mut this.io);

            // Blob substreams, after the chat connections; file bytes count against the
            // budget too, so a long transfer still lets other tasks run.
            if this.host.poll_files(cx, &mut this.io) {
                progress = true;
                budget = budget.saturating_sub(FILES_COST);
            }

            if this.host.shutting_down && this.io.live.is_empty() && this.io.conns.is_empty() {
                this.host.finished();
                return Poll::Ready(());
            }
            if budget == 0 || this.host.undrained {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }
}

impl<R: Runtime> Net<R> {
    /// A new set-up task's half of the channels.
    fn setup(&mut self) -> Setup<R> {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let (tx, cancel) = oneshot::channel();
        self.pending.insert(conn, tx);
        self.live.insert(conn);
        Setup {
            rt: self.rt.clone(),
            conn,
            key: self.key.clone(),
            cfg: self.cfg.clone(),
            files: self.files,
            to_node: self.input_tx.clone(),
            cancel,
        }
    }

    /// Accepts new TCP connections and spawns their set-up. Returns whether any came.
    fn accept(&mut self, cx: &mut Context<'_>) -> bool {
        let mut accepted = Vec::new();
        for l in &mut self.listeners {
            while let Poll::Ready(Some(r)) = l.poll_next_unpin(cx) {
                // Accept errors (e.g. out of file descriptors) drop that connection only.
                if let Ok(a) = r {
                    accepted.push(a);
                }
            }
        }
        let progress = !accepted.is_empty();
        for (tcp, remote) in accepted {
            if !self.admission.admit(ConnId(self.next_conn), remote.ip()) {
                // Over a cap: dropped at once (counted), before any handshake work.
                drop(tcp);
                continue;
            }
            let s = self.setup();
            self.rt.spawn(conn::accept(s, tcp, remote));
        }
        progress
    }

    fn queue_poll(&mut self, id: ConnId) {
        if let Some(s) = self.conns.get(&id) {
            if !s.waker.queued.swap(true, Ordering::AcqRel) {
                self.to_poll.push(id);
            }
        }
    }
}

impl<R: Runtime> Io for Net<R> {
    fn now(&self) -> Instant {
        self.rt.now()
    }

    fn transmit(&mut self, t: echo_proto::Transmit) {
        match self.conns.get_mut(&t.conn) {
            Some(s) if !s.closing => {
                s.conn.write(t.data);
                self.queue_poll(t.conn);
            }
            _ => self.discarded += t.data.len() as u64,
        }
    }

    fn act(&mut self, node: &mut Node, a: Action, shutting_down: bool) {
        match a {
            Action::Dial { dial, addr, .. } => {
                if shutting_down {
                    let e = DialError::ShuttingDown.to_string();
                    node.handle_dial_failed(dial, &e, self.rt.now());
                    return;
                }
                if self.dialing.len() >= self.cfg.max_pending_dials {
                    self.dials_refused += 1;
                    let e = DialError::TooManyDials(self.cfg.max_pending_dials).to_string();
                    node.handle_dial_failed(dial, &e, self.rt.now());
                    return;
                }
                let s = self.setup();
                self.dialing.insert(s.conn);
                self.rt.spawn(conn::dial(s, dial, addr));
            }
            Action::Close { conn, .. } => {
                if let Some(s) = self.conns.get_mut(&conn) {
                    s.closing = true;
                    s.conn.close();
                    self.queue_poll(conn);
                }
            }
            // `Action` is non_exhaustive; this version of the core has no others.
            _ => {}
        }
    }

    fn open_blob(&mut self, id: ConnId) -> bool {
        match self.conns.get_mut(&id) {
            Some(s) if !s.closing => {
                s.conn.open_blob();
                self.queue_poll(id);
                true
            }
            _ => false,
        }
    }

    fn closing(&self, id: ConnId) -> bool {
        self.conns.get(&id).is_some_and(|s| s.closing)
    }

    fn stats(&self) -> DriverStats {
        DriverStats {
            handshakes: self.admission.pending(),
            handshakes_from_one_ip: self.admission.max_from_one_source(),
            handshakes_refused: self.admission.refused,
            dials: self.dialing.len(),
            dials_refused: self.dials_refused,
            connections: self.conns.len(),
            bytes_discarded: self.discarded
                + self.conns.values().map(|s| s.conn.discarded()).sum::<u64>(),
            ..DriverStats::default()
        }
    }

    /// Stop listening; cancel connections being set up; close connections the node did
    /// not know (none, normally). The task ends when every connection has closed (each
    /// within the close timeout) and every set-up task has ended.
    fn shut_down(&mut self) {
        self.listeners.clear();
        self.pending.clear();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(s) = self.conns.get_mut(&id) {
                if !s.closing {
                    s.closing = true;
                    s.conn.close();
                }
            }
            self.queue_poll(id);
        }
    }
}

impl<R: Runtime> Driver<R> {
    fn input(&mut self, input: Input<R>) {
        let now = self.io.rt.now();
        let io = &mut self.io;
        match input {
            Input::Up(id, conn) => {
                io.admission.release(id);
                io.dialing.remove(&id);
                // Still wanted? (Shutdown cancels set-ups.)
                if io.pending.remove(&id).is_some() {
                    let waker = ConnWaker::new(id, &io.ready);
                    io.conns.insert(
                        id,
                        Slot {
                            conn,
                            waker,
                            closing: false,
                        },
                    );
                    // Its `Connected` (and maybe data) is queued; it must also be polled
                    // with its new waker.
                    io.queue_poll(id);
                }
            }
            Input::SetupFailed(id, dial, error) => {
                io.pending.remove(&id);
                if let Some(dial) = dial {
                    self.host
                        .node
                        .handle_dial_failed(dial, &error.to_string(), now);
                    self.host.drain(&mut self.io);
                }
            }
            Input::Finished(id) => {
                io.admission.release(id);
                io.dialing.remove(&id);
                io.live.remove(&id);
                io.pending.remove(&id);
            }
        }
    }

    /// Polls one connection and feeds its reports to the node, draining after each.
    fn poll_conn(&mut self, id: ConnId) {
        let io = &mut self.io;
        let Some(slot) = io.conns.get_mut(&id) else {
            return;
        };
        slot.waker.queued.store(false, Ordering::Release);
        let waker = Waker::from(slot.waker.clone());
        let done = slot.conn.poll(&mut Context::from_waker(&waker)).is_ready();
        let closing = slot.closing;
        let mut events = std::mem::take(&mut slot.conn.events);
        if done {
            if let Some(s) = io.conns.remove(&id) {
                io.discarded += s.conn.discarded();
            }
        }
        if closing {
            io.discarded += data_bytes(&events);
            return;
        }
        self.io.discarded += self.host.feed(&mut self.io, id, &mut events);
        if let Some(slot) = self.io.conns.get_mut(&id) {
            // Keep the allocation.
            if slot.conn.events.is_empty() {
                slot.conn.events = events;
                slot.conn.events.clear();
            }
        }
    }
}
