//! The node task: the one task that owns the [`Node`]. It feeds the node every input
//! (app commands, connection events, accepted connections, the timer) and drains its
//! outputs after each: transmits go to connection tasks, dials and closes are carried
//! out, events go to the app, and its one timer is re-armed.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use echo::{Action, ConnId, Event, Node};
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use libp2p_identity::Keypair;

use crate::conn::{self, ConnCmd, Input, Setup};
use crate::runtime::{Incoming, Runtime, Timer};
use crate::transport::DialError;
use crate::{Command, DriverConfig};

/// Inputs handled per poll before yielding to other tasks.
const BUDGET: usize = 256;

pub(crate) struct Driver<R: Runtime> {
    pub rt: R,
    pub key: Keypair,
    pub cfg: DriverConfig,
    pub node: Node,
    /// Command channels of connection tasks the node knows or is waiting for.
    pub conns: HashMap<ConnId, mpsc::UnboundedSender<ConnCmd>>,
    /// Connection tasks still running.
    pub live: HashSet<ConnId>,
    pub next_conn: u64,
    pub inputs: mpsc::Receiver<Input>,
    pub input_tx: mpsc::Sender<Input>,
    pub cmds: mpsc::UnboundedReceiver<Command>,
    pub cmds_done: bool,
    pub events: mpsc::UnboundedSender<Event>,
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

            // Connection events, each followed by a drain.
            while budget > 0 {
                match this.inputs.poll_next_unpin(cx) {
                    Poll::Ready(Some(input)) => {
                        this.input(input);
                        this.drain();
                        budget -= 1;
                        progress = true;
                    }
                    _ => break,
                }
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
                let s = this.setup();
                this.rt.spawn(conn::accept(s, tcp, remote));
            }

            // The one timer.
            if this.timer_at.is_some() && this.timer.as_mut().poll(cx).is_ready() {
                this.timer_at = None;
                let now = this.rt.now();
                this.node.handle_timeout(now);
                this.drain();
                progress = true;
            }

            if this.shutting_down && this.live.is_empty() {
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

impl<R: Runtime> Driver<R> {
    /// A new connection task's half of the channels.
    fn setup(&mut self) -> Setup<R> {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let (tx, cmds) = mpsc::unbounded();
        self.conns.insert(conn, tx);
        self.live.insert(conn);
        Setup {
            rt: self.rt.clone(),
            conn,
            key: self.key.clone(),
            cfg: self.cfg.clone(),
            to_node: self.input_tx.clone(),
            cmds,
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
            Command::Inspect(f) => f(node),
            Command::Shutdown { reply } => {
                self.waiters.push(reply);
                self.begin_shutdown();
            }
        }
    }

    fn input(&mut self, input: Input) {
        let now = self.rt.now();
        match input {
            Input::Connected(conn, info) => {
                if self.conns.contains_key(&conn) {
                    self.node.handle_connected(conn, info, now);
                }
            }
            Input::Data(conn, data) => {
                if self.conns.contains_key(&conn) {
                    self.node.handle_data(conn, &data, now);
                }
            }
            Input::Sent(conn, n) => {
                if self.conns.contains_key(&conn) {
                    self.node.handle_sent(conn, n);
                }
            }
            Input::Closed(conn, reason) => {
                // A connection the node closed itself is not reported back.
                if self.conns.remove(&conn).is_some() {
                    self.node.handle_closed(conn, &reason, now);
                }
            }
            Input::SetupFailed(conn, dial, error) => {
                self.conns.remove(&conn);
                if let Some(dial) = dial {
                    self.node.handle_dial_failed(dial, &error.to_string(), now);
                }
            }
            Input::Finished(conn) => {
                self.live.remove(&conn);
                if self.conns.remove(&conn).is_some() {
                    self.node.handle_closed(conn, "connection task ended", now);
                }
            }
        }
    }

    /// Drains the node's outputs: transmits, actions, events; then re-arms the timer.
    pub(crate) fn drain(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            if let Some(tx) = self.conns.get(&t.conn) {
                let _ = tx.unbounded_send(ConnCmd::Write(t.data));
            }
        }
        while let Some(a) = self.node.poll_action() {
            match a {
                Action::Dial { dial, addr, .. } => {
                    if self.shutting_down {
                        let now = self.rt.now();
                        let e = DialError::ShuttingDown.to_string();
                        self.node.handle_dial_failed(dial, &e, now);
                        continue;
                    }
                    let s = self.setup();
                    self.rt.spawn(conn::dial(s, dial, addr));
                }
                Action::Close { conn, .. } => {
                    if let Some(tx) = self.conns.remove(&conn) {
                        let _ = tx.unbounded_send(ConnCmd::Close);
                    }
                }
            }
        }
        while let Some(e) = self.node.poll_event() {
            let _ = self.events.unbounded_send(e);
        }
        let at = self.node.poll_timeout();
        if at != self.timer_at {
            if let Some(at) = at {
                self.timer.as_mut().reset(at);
            }
            self.timer_at = at;
        }
    }

    /// Goodbye on every connection; stop listening; abandon connections being set up.
    /// The task ends when every connection task has finished (each is bounded by the
    /// close timeout).
    fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.listeners.clear();
        let now = self.rt.now();
        self.node.shutdown(now);
        self.drain();
        // What is left are set-ups the node does not know yet: dropping their channel
        // ends them.
        self.conns.clear();
    }
}
