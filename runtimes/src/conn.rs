//! One task per connection: sets it up (TCP, noise, yamux, chat substream), then owns
//! the muxer and the chat substream. It keeps polling the muxer (yamux needs that to move
//! any byte), answers pings on inbound substreams, writes what the node task hands it
//! and reports written byte counts, and forwards what it reads — never more than one
//! read ahead of the node task (backpressure: the node's input channel is bounded).

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use echo::{ConnId, ConnInfo, DialId, Multiaddr, PeerId, Protocol, Role};
use futures::channel::mpsc;
use futures::future::{self, BoxFuture, Either};
use futures::stream::FuturesUnordered;
use futures::{AsyncRead, AsyncWrite, FutureExt, Sink, StreamExt};
use libp2p_core::muxing::StreamMuxer;
use libp2p_identity::Keypair;

use crate::runtime::{sleep, Runtime, Timer};
use crate::transport::{self, DialError, Inbound, Muxer, Substream};
use crate::DriverConfig;

/// From the node task to a connection task.
pub(crate) enum ConnCmd {
    /// Write these bytes on the chat substream.
    Write(Bytes),
    /// Write everything queued, then close the substream and the connection.
    Close,
}

/// From connection tasks (and set-up) to the node task.
pub(crate) enum Input {
    Connected(ConnId, ConnInfo),
    Data(ConnId, Bytes),
    Sent(ConnId, usize),
    Closed(ConnId, String),
    SetupFailed(ConnId, Option<DialId>, DialError),
    /// The task ended (whatever the reason).
    Finished(ConnId),
}

/// Inbound substreams being negotiated at once, per connection; more are refused.
const MAX_NEGOTIATING: usize = 16;
/// Writes smaller than this are merged with the following ones into one write.
const COALESCE: usize = 64 * 1024;
const READ_BUF: usize = 64 * 1024;
/// Loop iterations per poll before yielding to other tasks.
const BUDGET: usize = 64;

/// What every connection task gets from the node task.
pub(crate) struct Setup<R> {
    pub rt: R,
    pub conn: ConnId,
    pub key: Keypair,
    pub cfg: DriverConfig,
    pub to_node: mpsc::Sender<Input>,
    pub cmds: mpsc::UnboundedReceiver<ConnCmd>,
}

/// Runs `fut` unless the timer fires first or the node task goes away (its command
/// channel ends); `Ok(None)` in the latter case.
async fn guarded<T>(
    fut: impl Future<Output = Result<T, DialError>>,
    timer: &mut Pin<Box<dyn Timer>>,
    cmds: &mut mpsc::UnboundedReceiver<ConnCmd>,
    timeout: Duration,
) -> Result<Option<T>, DialError> {
    let gone = async {
        // Nothing is sent to a connection before it is up: only the end can come.
        while cmds.next().await.is_some() {}
    };
    let fut = std::pin::pin!(fut);
    let gone = std::pin::pin!(gone);
    match future::select(fut, future::select(gone, sleep(timer))).await {
        Either::Left((r, _)) => r.map(Some),
        Either::Right((Either::Left(_), _)) => Ok(None),
        Either::Right((Either::Right(_), _)) => Err(DialError::Timeout(timeout)),
    }
}

/// Dials `addr` for the node's request `dial`, then runs the connection.
pub(crate) async fn dial<R: Runtime>(mut s: Setup<R>, dial: DialId, addr: Multiaddr) {
    let timeout = s.cfg.dial_timeout;
    let mut timer = s.rt.timer(s.rt.now() + timeout);
    let (rt, key) = (s.rt.clone(), s.key.clone());
    let setup = async {
        let (target, expected) = transport::target(&addr)?;
        let tcp = transport::connect(&rt, target).await?;
        let (peer, mut muxer) = transport::upgrade_outbound(tcp, &key).await?;
        if let Some(expected) = expected.filter(|e| *e != peer) {
            return Err(DialError::PeerIdMismatch {
                expected,
                actual: peer,
            });
        }
        let stream = future::poll_fn(|cx| Pin::new(&mut muxer).poll_outbound(cx))
            .await
            .map_err(|e| DialError::Io(e.to_string()))?;
        Ok((peer, muxer, stream))
    };
    match guarded(setup, &mut timer, &mut s.cmds, timeout).await {
        Ok(Some((peer, muxer, stream))) => {
            let (bare, _) = echo::peers::split_p2p(&addr);
            let remote = bare.with(multiaddr::Protocol::P2p(peer));
            let mut c = Conn::new(s, Role::Dialer, Some(dial), peer, remote, muxer, timer);
            c.establishing = Some(transport::negotiate_chat(stream));
            c.timeout = timeout;
            c.run().await
        }
        Ok(None) => {}
        Err(e) => {
            let _ =
                futures::SinkExt::send(&mut s.to_node, Input::SetupFailed(s.conn, Some(dial), e))
                    .await;
            let _ = futures::SinkExt::send(&mut s.to_node, Input::Finished(s.conn)).await;
        }
    }
}

/// Sets up an accepted TCP connection, then runs it.
pub(crate) async fn accept<R: Runtime>(mut s: Setup<R>, tcp: R::Tcp, remote: SocketAddr) {
    let timeout = s.cfg.dial_timeout;
    let mut timer = s.rt.timer(s.rt.now() + timeout);
    let setup = transport::upgrade_inbound(tcp, &s.key);
    match guarded(setup, &mut timer, &mut s.cmds, timeout).await {
        Ok(Some((peer, muxer))) => {
            let remote = transport::multiaddr(remote);
            let mut c = Conn::new(s, Role::Listener, None, peer, remote, muxer, timer);
            c.timeout = timeout;
            c.run().await
        }
        Ok(None) => {}
        Err(e) => {
            let _ =
                futures::SinkExt::send(&mut s.to_node, Input::SetupFailed(s.conn, None, e)).await;
            let _ = futures::SinkExt::send(&mut s.to_node, Input::Finished(s.conn)).await;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the chat substream (dialer: negotiating it; listener: for the remote
    /// to open it). The timer holds the set-up deadline.
    Establishing,
    Open,
    /// The node asked to close: writing what is queued, then closing. The timer holds
    /// the close deadline.
    Closing(CloseStage),
    /// Reporting the end to the node, then done.
    Ending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseStage {
    Flushing,
    Substream,
    Muxer,
}

struct Conn<R: Runtime> {
    rt: R,
    id: ConnId,
    role: Role,
    dial: Option<DialId>,
    peer: PeerId,
    remote: Multiaddr,
    cfg: DriverConfig,
    timeout: Duration,
    state: State,
    timer: Pin<Box<dyn Timer>>,
    /// `None` once it failed.
    muxer: Option<Muxer<R::Tcp>>,
    establishing: Option<BoxFuture<'static, Result<(Protocol, Substream), DialError>>>,
    chat: Option<Substream>,
    negotiating: FuturesUnordered<BoxFuture<'static, Inbound>>,
    pings: FuturesUnordered<BoxFuture<'static, ()>>,
    cmds: mpsc::UnboundedReceiver<ConnCmd>,
    /// Transmits not yet written, and the one being written.
    out: VecDeque<Bytes>,
    wbuf: Bytes,
    need_flush: bool,
    /// Bytes written and not yet reported to the node.
    sent: usize,
    to_node: mpsc::Sender<Input>,
    /// Inputs waiting for room in the node's channel.
    queue: VecDeque<Input>,
    rbuf: Box<[u8]>,
}

impl<R: Runtime> Conn<R> {
    fn new(
        s: Setup<R>,
        role: Role,
        dial: Option<DialId>,
        peer: PeerId,
        remote: Multiaddr,
        muxer: Muxer<R::Tcp>,
        timer: Pin<Box<dyn Timer>>,
    ) -> Self {
        Conn {
            rt: s.rt,
            id: s.conn,
            role,
            dial,
            peer,
            remote,
            timeout: s.cfg.dial_timeout,
            cfg: s.cfg,
            state: State::Establishing,
            timer,
            muxer: Some(muxer),
            establishing: None,
            chat: None,
            negotiating: FuturesUnordered::new(),
            pings: FuturesUnordered::new(),
            cmds: s.cmds,
            out: VecDeque::new(),
            wbuf: Bytes::new(),
            need_flush: false,
            sent: 0,
            to_node: s.to_node,
            queue: VecDeque::new(),
            rbuf: vec![0; READ_BUF].into_boxed_slice(),
        }
    }

    async fn run(mut self) {
        future::poll_fn(|cx| self.poll(cx)).await;
        let _ = futures::SinkExt::send(&mut self.to_node, Input::Finished(self.id)).await;
    }

    fn connected(&mut self, protocol: Protocol) {
        self.state = State::Open;
        let info = ConnInfo {
            peer: self.peer,
            role: self.role,
            remote_addr: self.remote.clone(),
            protocol,
            dial: self.dial,
        };
        self.queue.push_back(Input::Connected(self.id, info));
    }

    /// The connection broke (or the remote closed it).
    fn broken(&mut self, reason: String) {
        match self.state {
            State::Establishing => {
                let err = DialError::Io(reason);
                self.queue
                    .push_back(Input::SetupFailed(self.id, self.dial, err));
                self.state = State::Ending;
            }
            State::Open => {
                self.queue.push_back(Input::Closed(self.id, reason));
                self.state = State::Ending;
            }
            // Closing at our request: nobody is told.
            State::Closing(_) | State::Ending => self.state = State::Ending,
        }
        self.chat = None;
        self.out.clear();
        self.wbuf.clear();
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..BUDGET {
            let mut progress = false;

            // Commands from the node.
            while matches!(self.state, State::Open | State::Establishing) {
                match self.cmds.poll_next_unpin(cx) {
                    Poll::Ready(Some(ConnCmd::Write(b))) => self.out.push_back(b),
                    Poll::Ready(Some(ConnCmd::Close)) => {
                        self.state = State::Closing(CloseStage::Flushing);
                        let at = self.rt.now() + self.cfg.close_timeout;
                        self.timer.as_mut().reset(at);
                    }
                    // The node task is gone (aborted): drop everything, say nothing.
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
                progress = true;
            }

            // The muxer: moves every byte of the connection, and yields inbound substreams.
            if let Some(m) = self.muxer.as_mut() {
                if !matches!(self.state, State::Closing(CloseStage::Muxer)) {
                    loop {
                        match Pin::new(&mut *m).poll_inbound(cx) {
                            Poll::Ready(Ok(s)) => {
                                progress = true;
                                if self.negotiating.len() < MAX_NEGOTIATING {
                                    let chat = self.role == Role::Listener
                                        && self.state == State::Establishing;
                                    self.negotiating.push(transport::negotiate_inbound(s, chat));
                                }
                            }
                            Poll::Ready(Err(e)) => {
                                progress = true;
                                self.muxer = None;
                                if self.chat.is_none() {
                                    self.broken(format!("connection closed: {e}"));
                                }
                                // Otherwise the chat substream reports EOF after its
                                // buffered bytes (e.g. a goodbye) have been read.
                                break;
                            }
                            Poll::Pending => break,
                        }
                    }
                }
            }

            // The dialer's chat substream negotiation.
            if let Some(f) = self.establishing.as_mut() {
                if let Poll::Ready(r) = f.poll_unpin(cx) {
                    progress = true;
                    self.establishing = None;
                    match r {
                        Ok((p, s)) if self.state == State::Establishing => {
                            self.chat = Some(s);
                            self.connected(p);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            if self.state == State::Establishing {
                                self.queue
                                    .push_back(Input::SetupFailed(self.id, self.dial, e));
                            }
                            self.state = State::Ending;
                        }
                    }
                }
            }

            // Inbound substreams: the listener's chat substream, and pings.
            while let Poll::Ready(Some(inbound)) = self.negotiating.poll_next_unpin(cx) {
                progress = true;
                match inbound {
                    Inbound::Chat(p, s)
                        if self.state == State::Establishing && self.chat.is_none() =>
                    {
                        self.chat = Some(s);
                        self.connected(p);
                    }
                    Inbound::Chat(..) | Inbound::Rejected => {}
                    Inbound::Ping(s) => self.pings.push(transport::ping_responder(s)),
                }
            }
            while let Poll::Ready(Some(())) = self.pings.poll_next_unpin(cx) {}

            // Writes, coalesced; one flush when everything queued is written.
            if matches!(
                self.state,
                State::Open | State::Closing(CloseStage::Flushing)
            ) {
                if let Some(chat) = self.chat.as_mut() {
                    let mut err = None;
                    loop {
                        if self.wbuf.is_empty() {
                            match self.out.pop_front() {
                                None => break,
                                Some(b) if b.len() >= COALESCE || self.out.is_empty() => {
                                    self.wbuf = b
                                }
                                Some(b) => {
                                    let mut m = BytesMut::with_capacity(COALESCE + b.len());
                                    m.extend_from_slice(&b);
                                    while m.len() < COALESCE {
                                        match self.out.pop_front() {
                                            Some(n) => m.extend_from_slice(&n),
                                            None => break,
                                        }
                                    }
                                    self.wbuf = m.freeze();
                                }
                            }
                        }
                        match Pin::new(&mut *chat).poll_write(cx, &self.wbuf) {
                            Poll::Ready(Ok(0)) => {
                                err = Some("chat substream closed for writing".to_string());
                                break;
                            }
                            Poll::Ready(Ok(n)) => {
                                self.wbuf.advance(n);
                                self.sent += n;
                                self.need_flush = true;
                                progress = true;
                            }
                            Poll::Ready(Err(e)) => {
                                err = Some(format!("write failed: {e}"));
                                break;
                            }
                            Poll::Pending => break,
                        }
                    }
                    if err.is_none()
                        && self.need_flush
                        && self.wbuf.is_empty()
                        && self.out.is_empty()
                    {
                        match Pin::new(&mut *chat).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.need_flush = false,
                            Poll::Ready(Err(e)) => err = Some(format!("flush failed: {e}")),
                            Poll::Pending => {}
                        }
                    }
                    if let Some(e) = err {
                        progress = true;
                        self.broken(e);
                    }
                }
            }

            // Reads: one chunk ahead of the node at most.
            if self.state == State::Open && self.queue.is_empty() {
                if let Some(chat) = self.chat.as_mut() {
                    match Pin::new(chat).poll_read(cx, &mut self.rbuf) {
                        Poll::Ready(Ok(0)) => {
                            progress = true;
                            self.broken("connection closed by the peer".into());
                        }
                        Poll::Ready(Ok(n)) => {
                            progress = true;
                            let data = Bytes::copy_from_slice(&self.rbuf[..n]);
                            self.queue.push_back(Input::Data(self.id, data));
                        }
                        Poll::Ready(Err(e)) => {
                            progress = true;
                            self.broken(format!("connection lost: {e}"));
                        }
                        Poll::Pending => {}
                    }
                }
            }

            // Reports to the node task.
            if self.sent > 0 && self.queue.is_empty() {
                self.queue
                    .push_back(Input::Sent(self.id, std::mem::take(&mut self.sent)));
            }
            while !self.queue.is_empty() {
                match self.to_node.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let input = self.queue.pop_front().expect("not empty");
                        if Pin::new(&mut self.to_node).start_send(input).is_err() {
                            return Poll::Ready(());
                        }
                        progress = true;
                    }
                    // The node task is gone.
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
            }
            if self.state == State::Ending && self.queue.is_empty() {
                return Poll::Ready(());
            }

            // Closing at the node's request: everything written, then FIN, then the muxer.
            if let State::Closing(stage) = self.state {
                match stage {
                    CloseStage::Flushing => {
                        if self.chat.is_none()
                            || (self.out.is_empty() && self.wbuf.is_empty() && !self.need_flush)
                        {
                            self.state = State::Closing(CloseStage::Substream);
                            progress = true;
                        }
                    }
                    CloseStage::Substream => {
                        let done = match self.chat.as_mut() {
                            Some(chat) => Pin::new(chat).poll_close(cx).is_ready(),
                            None => true,
                        };
                        if done {
                            self.state = State::Closing(CloseStage::Muxer);
                            progress = true;
                        }
                    }
                    CloseStage::Muxer => match self.muxer.as_mut() {
                        Some(m) => {
                            if Pin::new(m).poll_close(cx).is_ready() {
                                return Poll::Ready(());
                            }
                        }
                        None => return Poll::Ready(()),
                    },
                }
            }

            // Deadlines: set-up, and closing.
            if matches!(self.state, State::Establishing | State::Closing(_))
                && self.timer.as_mut().poll(cx).is_ready()
            {
                if self.state == State::Establishing {
                    self.queue.push_back(Input::SetupFailed(
                        self.id,
                        self.dial,
                        DialError::Timeout(self.timeout),
                    ));
                    self.state = State::Ending;
                    progress = true;
                } else {
                    return Poll::Ready(());
                }
            }

            if !progress {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
