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
use std::time::{Instant, SystemTime};

use echo_proto::{Action, ConnId, Node, Output};
use futures::channel::{mpsc, oneshot};
use futures::task::AtomicWaker;
use futures::StreamExt;
use libp2p_identity::Keypair;

use crate::conn::{self, Conn, ConnEvent, Input, Setup};
use crate::events::EventSender;
use crate::limits::Admission;
use crate::runtime::{Incoming, Runtime, Timer};
use crate::transport::DialError;
use crate::{Command, DriverConfig, DriverStats};

/// Inputs handled per poll before yielding to other tasks.
const BUDGET: usize = 256;

/// Connections woken since the node task last looked, and the node task's waker.
#[derive(Default)]
pub(crate) struct Ready {
    ids: Mutex<Vec<ConnId>>,
    task: AtomicWaker,
}

/// A connection's waker: queues its id and wakes the node task.
struct ConnWaker {
    id: ConnId,
    queued: AtomicBool,
    ready: Arc<Ready>,
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
    pub rt: R,
    pub key: Keypair,
    pub cfg: DriverConfig,
    pub node: Node,
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
    pub cmds: Pin<Box<async_channel::Receiver<Command>>>,
    pub cmds_done: bool,
    pub events: EventSender,
    pub listeners: Vec<Incoming<R::Tcp>>,
    pub timer: Pin<Box<dyn Timer>>,
    pub timer_at: Option<Instant>,
    pub shutting_down: bool,
    pub waiters: Vec<oneshot::Sender<()>>,
    /// Dropped with the task: tells [`crate::Handle::stopped`].
    pub _alive: oneshot::Sender<()>,
}

impl<R: Runtime> Future for Driver<R> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.ready.task.register(cx.waker());
        let mut budget = BUDGET;
        loop {
            let mut progress = false;

            // App commands. Consecutive room messages are applied as a batch and drained
            // once: they form one burst (one signature). Every other command is drained
            // on its own, after what came before it (so e.g. messages queued before a
            // shutdown are sealed and written before the goodbye).
            let mut applied = false;
            while !this.cmds_done && budget > 0 {
                match this.cmds.poll_next_unpin(cx) {
                    Poll::Ready(Some(c)) => {
                        let batch = matches!(c, Command::Send { .. });
                        if !batch && applied {
                            this.drain();
                        }
                        this.command(c);
                        applied = batch;
                        if !batch {
                            this.drain();
                        }
                        budget -= 1;
                        progress = true;
                    }
                    Poll::Ready(None) => {
                        // Every handle is gone: shut down politely.
                        if applied {
                            this.drain();
                            applied = false;
                        }
                        this.cmds_done = true;
                        this.begin_shutdown();
                        progress = true;
                    }
                    Poll::Pending => break,
                }
            }
            if applied {
                this.drain();
            }

            // Set-up tasks: connections up, dials failed.
            while budget > 0 {
                match this.inputs.poll_next_unpin(cx) {
                    Poll::Ready(Some(input)) => {
                        this.input(input);
                        budget -= 1;
                        progress = true;
                    }
                    _ => break,
                }
            }

            // Connections with something to do, each event followed by a drain.
            this.to_poll
                .append(&mut this.ready.ids.lock().expect("not poisoned"));
            while let Some(id) = this.to_poll.pop() {
                budget = budget.saturating_sub(1);
                progress = true;
                this.poll_conn(id);
            }

            // New connections.
            let mut accepted = Vec::new();
            for l in &mut this.listeners {
                while let Poll::Ready(Some(r)) = l.poll_next_unpin(cx) {
                    // Accept errors (e.g. out of file descriptors) drop that connection only.
                    if let Ok(a) = r {
                        accepted.push(a);
                    }
                }
            }
            for (tcp, remote) in accepted {
                progress = true;
                if !this.admission.admit(ConnId(this.next_conn), remote.ip()) {
                    // Over a cap: dropped at once (counted), before any handshake work.
                    drop(tcp);
                    continue;
                }
                let s = this.setup();
                this.rt.spawn(conn::accept(s, tcp, remote));
            }

            // The one timer.
            if this.timer_at.is_some() && this.timer.as_mut().poll(cx).is_ready() {
                this.timer_at = None;
                let now = this.rt.now();
                // Keeps the node's wall clock true across suspends and clock steps.
                this.node.set_wall_clock(SystemTime::now(), now);
                this.node.handle_timeout(now);
                this.drain();
                progress = true;
            }

            if this.shutting_down && this.live.is_empty() && this.conns.is_empty() {
                for w in this.waiters.drain(..) {
                    let _ = w.send(());
                }
                return Poll::Ready(());
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

impl<R: Runtime> Drop for Driver<R> {
    /// Commands still queued (or sent while the task ends) are dropped, so their
    /// [`crate::Pending`]s resolve to [`crate::Error::Stopped`]: the queue itself lives on
    /// as long as a handle does.
    fn drop(&mut self) {
        self.cmds.close();
        while self.cmds.try_recv().is_ok() {}
    }
}

/// Bytes of the `Data` reports among `events`.
fn data_bytes(events: &std::collections::VecDeque<ConnEvent>) -> u64 {
    events
        .iter()
        .map(|e| match e {
            ConnEvent::Data(d) => d.len() as u64,
            _ => 0,
        })
        .sum()
}

impl<R: Runtime> Driver<R> {
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
            to_node: self.input_tx.clone(),
            cancel,
        }
    }

    fn command(&mut self, c: Command) {
        let now = self.rt.now();
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
                let _ = reply.send(node.connect(&addr, now));
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
                let _ = reply.send(Ok(self.stats()));
            }
            Command::Shutdown { reply } => {
                self.waiters.push(reply);
                self.begin_shutdown();
            }
        }
    }

    fn input(&mut self, input: Input<R>) {
        let now = self.rt.now();
        match input {
            Input::Up(id, conn) => {
                self.admission.release(id);
                self.dialing.remove(&id);
                // Still wanted? (Shutdown cancels set-ups.)
                if self.pending.remove(&id).is_some() {
                    let waker = Arc::new(ConnWaker {
                        id,
                        queued: AtomicBool::new(false),
                        ready: self.ready.clone(),
                    });
                    self.conns.insert(
                        id,
                        Slot {
                            conn,
                            waker,
                            closing: false,
                        },
                    );
                    // Its `Connected` (and maybe data) is queued; it must also be polled
                    // with its new waker.
                    self.queue_poll(id);
                }
            }
            Input::SetupFailed(id, dial, error) => {
                self.pending.remove(&id);
                if let Some(dial) = dial {
                    self.node.handle_dial_failed(dial, &error.to_string(), now);
                    self.drain();
                }
            }
            Input::Finished(id) => {
                self.admission.release(id);
                self.dialing.remove(&id);
                self.live.remove(&id);
                self.pending.remove(&id);
            }
        }
    }

    /// Polls one connection and feeds its reports to the node, draining after each.
    fn poll_conn(&mut self, id: ConnId) {
        let Some(slot) = self.conns.get_mut(&id) else {
            return;
        };
        slot.waker.queued.store(false, Ordering::Release);
        let waker = Waker::from(slot.waker.clone());
        let done = slot.conn.poll(&mut Context::from_waker(&waker)).is_ready();
        let closing = slot.closing;
        let mut events = std::mem::take(&mut slot.conn.events);
        if done {
            if let Some(s) = self.conns.remove(&id) {
                self.discarded += s.conn.discarded;
            }
        }
        if closing {
            self.discarded += data_bytes(&events);
            return;
        }
        let now = self.rt.now();
        while let Some(e) = events.pop_front() {
            match e {
                ConnEvent::Connected(info) => self.node.handle_connected(id, info, now),
                ConnEvent::Data(data) => self.node.handle_data(id, &data, now),
                ConnEvent::Sent(n) => self.node.handle_sent(id, n),
                ConnEvent::Closed(reason) => self.node.handle_closed(id, &reason, now),
                ConnEvent::SetupFailed(_) => {}
            }
            self.drain();
            if self.conns.get(&id).is_some_and(|s| s.closing) {
                // The node closed it meanwhile: the rest is not reported.
                self.discarded += data_bytes(&events);
                break;
            }
        }
        if let Some(slot) = self.conns.get_mut(&id) {
            // Keep the allocation.
            if slot.conn.events.is_empty() {
                slot.conn.events = events;
                slot.conn.events.clear();
            }
        }
    }

    fn queue_poll(&mut self, id: ConnId) {
        if let Some(s) = self.conns.get(&id) {
            if !s.waker.queued.swap(true, Ordering::AcqRel) {
                self.to_poll.push(id);
            }
        }
    }

    /// Drains the node's outputs in the order it gives them (transmits, actions,
    /// events), then re-arms the timer.
    pub(crate) fn drain(&mut self) {
        let at = loop {
            match self.node.poll_output() {
                Output::Transmit(t) => match self.conns.get_mut(&t.conn) {
                    Some(s) if !s.closing => {
                        s.conn.write(t.data);
                        self.queue_poll(t.conn);
                    }
                    _ => self.discarded += t.data.len() as u64,
                },
                Output::Action(a) => self.act(a),
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

    fn act(&mut self, a: Action) {
        match a {
            Action::Dial { dial, addr, .. } => {
                if self.shutting_down {
                    let now = self.rt.now();
                    let e = DialError::ShuttingDown.to_string();
                    self.node.handle_dial_failed(dial, &e, now);
                    return;
                }
                if self.dialing.len() >= self.cfg.max_pending_dials {
                    self.dials_refused += 1;
                    let now = self.rt.now();
                    let e = DialError::TooManyDials(self.cfg.max_pending_dials).to_string();
                    self.node.handle_dial_failed(dial, &e, now);
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

    fn stats(&self) -> DriverStats {
        let ev = self.events.counts();
        DriverStats {
            handshakes: self.admission.pending(),
            handshakes_from_one_ip: self.admission.max_from_one_source(),
            handshakes_refused: self.admission.refused,
            dials: self.dialing.len(),
            dials_refused: self.dials_refused,
            connections: self.conns.len(),
            events_queued: ev.queued,
            events_sent: ev.sent,
            events_missed: ev.missed,
            commands_queued: self.cmds.len(),
            bytes_discarded: self.discarded
                + self.conns.values().map(|s| s.conn.discarded).sum::<u64>(),
        }
    }

    /// Goodbye on every connection; stop listening; cancel connections being set up.
    /// The task ends when every connection has closed (each within the close timeout)
    /// and every set-up task has ended.
    fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.listeners.clear();
        let now = self.rt.now();
        self.node.shutdown(now);
        self.drain();
        self.pending.clear();
        // Connections the node did not know (none, normally) are closed too.
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
