//! A connection: set up by its own task (TCP, noise, yamux, chat substream, bounded by
//! the dial timeout), then handed to the node task, which owns and polls it from then on
//! (no task hop between the node and its sockets). Polling it drives the muxer (yamux
//! moves no byte otherwise), answers pings on inbound substreams, writes the node's
//! transmits (coalesced, one flush per batch) and reads the chat substream a few chunks
//! per poll (backpressure: the node task reads only as fast as it processes).

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use echo_proto::{ConnId, ConnInfo, DialId, Multiaddr, PeerId, Protocol, Role};
use futures::channel::{mpsc, oneshot};
use futures::future::{self, BoxFuture, Either};
use futures::stream::FuturesUnordered;
use futures::{AsyncWrite, FutureExt, StreamExt};
use libp2p_core::muxing::StreamMuxer;
use libp2p_identity::Keypair;

use crate::blobs::BlobIo;
use crate::pipe::Pipe;
use crate::runtime::{sleep, Runtime, Timer};
use crate::transport::{self, DialError, Inbound, Muxer, Substream};
use crate::DriverConfig;

/// What a connection reports to the node task, in order.
pub(crate) enum ConnEvent {
    Connected(ConnInfo),
    Data(Bytes),
    Sent(usize),
    /// A blob substream is up: ours (`outbound`, asked for with [`Conn::open_blob`]) or
    /// the remote's.
    Blob {
        stream: Box<dyn BlobIo>,
        outbound: bool,
    },
    /// The blob substream asked for could not be opened.
    BlobFailed,
    /// Broke or was closed by the remote (not reported after [`Conn::close`]).
    Closed(String),
    SetupFailed(DialError),
}

/// From set-up tasks to the node task.
pub(crate) enum Input<R: Runtime> {
    /// The chat substream is up (its `Connected` event is queued in it).
    Up(ConnId, Box<Conn<R>>),
    SetupFailed(ConnId, Option<DialId>, DialError),
    /// The set-up task ended (after `Up` or `SetupFailed`, or cancelled).
    Finished(ConnId),
}

/// Inbound substreams being negotiated at once, per connection; more are refused.
const MAX_NEGOTIATING: usize = 16;
/// Loop iterations per poll before yielding to other tasks.
const BUDGET: usize = 16;
/// Chunks read per poll; more wait for the next poll, so one busy connection cannot
/// starve the others or the node task.
const READS_PER_POLL: usize = 4;

/// What every set-up task gets from the node task.
pub(crate) struct Setup<R: Runtime> {
    pub rt: R,
    pub conn: ConnId,
    pub key: Keypair,
    pub cfg: DriverConfig,
    /// File transfer is on: inbound blob substreams are accepted.
    pub files: bool,
    pub to_node: mpsc::UnboundedSender<Input<R>>,
    /// Ends (sender dropped) when the node no longer wants this connection.
    pub cancel: oneshot::Receiver<()>,
}

/// Runs `fut` unless the timer fires first or the node task cancels (drops the sender);
/// `Ok(None)` in the latter case.
async fn guarded<T>(
    fut: impl Future<Output = Result<T, DialError>>,
    timer: &mut Pin<Box<dyn Timer>>,
    cancel: &mut oneshot::Receiver<()>,
    timeout: Duration,
) -> Result<Option<T>, DialError> {
    let gone = async {
        let _ = cancel.await;
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
        let (peer, mut muxer) = transport::upgrade(tcp, &key, Role::Dialer).await?;
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
    match guarded(setup, &mut timer, &mut s.cancel, timeout).await {
        Ok(Some((peer, muxer, stream))) => {
            // The address as dialed, its `/p2p/` suffix replaced by the peer's real id.
            let mut bare = addr.clone();
            if let Some(multiaddr::Protocol::P2p(_)) = bare.iter().last() {
                bare.pop();
            }
            let remote = bare.with(multiaddr::Protocol::P2p(peer));
            let mut c = Conn::new(&s, Role::Dialer, Some(dial), peer, remote, muxer, timer);
            c.establishing = Some(transport::negotiate_chat(stream));
            establish(s, c).await
        }
        Ok(None) => {
            let _ = s.to_node.unbounded_send(Input::Finished(s.conn));
        }
        Err(e) => {
            let _ = s
                .to_node
                .unbounded_send(Input::SetupFailed(s.conn, Some(dial), e));
            let _ = s.to_node.unbounded_send(Input::Finished(s.conn));
        }
    }
}

/// Polls a connection until its chat substream is up, then hands it to the node task.
async fn establish<R: Runtime>(mut s: Setup<R>, mut c: Conn<R>) {
    let up = future::poll_fn(|cx| {
        if Pin::new(&mut s.cancel).poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        match c.poll(cx) {
            // Up, then ended at once (e.g. a refusing listener's goodbye and close):
            // the node still gets the connection's reports, in order.
            Poll::Ready(()) => Poll::Ready(
                c.events
                    .iter()
                    .any(|e| matches!(e, ConnEvent::Connected(_))),
            ),
            Poll::Pending if c.state != State::Establishing => Poll::Ready(true),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    if up {
        let _ = s.to_node.unbounded_send(Input::Up(s.conn, Box::new(c)));
    } else {
        // Failed (the reason is queued) or cancelled.
        for e in c.events.drain(..) {
            if let ConnEvent::SetupFailed(e) = e {
                let _ = s
                    .to_node
                    .unbounded_send(Input::SetupFailed(s.conn, c.dial, e));
            }
        }
    }
    let _ = s.to_node.unbounded_send(Input::Finished(s.conn));
}

/// Sets up an accepted TCP connection, then runs it.
pub(crate) async fn accept<R: Runtime>(mut s: Setup<R>, tcp: R::Tcp, remote: SocketAddr) {
    let timeout = s.cfg.dial_timeout;
    let mut timer = s.rt.timer(s.rt.now() + timeout);
    let setup = transport::upgrade(tcp, &s.key, Role::Listener);
    match guarded(setup, &mut timer, &mut s.cancel, timeout).await {
        Ok(Some((peer, muxer))) => {
            let remote = transport::multiaddr(remote);
            let c = Conn::new(&s, Role::Listener, None, peer, remote, muxer, timer);
            establish(s, c).await
        }
        Ok(None) | Err(_) => {
            let _ = s.to_node.unbounded_send(Input::Finished(s.conn));
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

pub(crate) struct Conn<R: Runtime> {
    rt: R,
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
    /// Inbound blob substreams are accepted.
    files: bool,
    /// A blob substream of ours is wanted and not yet requested from the muxer.
    blob_wanted: bool,
    /// The remote's blob substream, up before our side of the connection was.
    early_blob: Option<Substream>,
    /// Our blob substream, being negotiated.
    blob_out: Option<BoxFuture<'static, Result<Substream, DialError>>>,
    negotiating: FuturesUnordered<BoxFuture<'static, Inbound>>,
    pings: FuturesUnordered<BoxFuture<'static, ()>>,
    /// The chat substream's writes and reads.
    pipe: Pipe,
    /// For the node task, in order.
    pub events: VecDeque<ConnEvent>,
    /// Bytes dropped: transmits not written because the connection broke, and bytes read
    /// but not reported because the node closed it first.
    pub discarded: u64,
}

impl<R: Runtime> Conn<R> {
    fn new(
        s: &Setup<R>,
        role: Role,
        dial: Option<DialId>,
        peer: PeerId,
        remote: Multiaddr,
        muxer: Muxer<R::Tcp>,
        timer: Pin<Box<dyn Timer>>,
    ) -> Self {
        Conn {
            rt: s.rt.clone(),
            role,
            dial,
            peer,
            remote,
            timeout: s.cfg.dial_timeout,
            cfg: s.cfg.clone(),
            state: State::Establishing,
            timer,
            muxer: Some(muxer),
            establishing: None,
            chat: None,
            files: s.files,
            blob_wanted: false,
            blob_out: None,
            early_blob: None,
            negotiating: FuturesUnordered::new(),
            pings: FuturesUnordered::new(),
            pipe: Pipe::new(),
            events: VecDeque::new(),
            discarded: 0,
        }
    }

    /// Queues bytes to write on the chat substream.
    pub fn write(&mut self, data: Bytes) {
        if self.state == State::Open {
            self.pipe.queue(data);
        } else {
            self.discarded += data.len() as u64;
        }
    }

    /// Opens a blob substream; reported as [`ConnEvent::Blob`] or
    /// [`ConnEvent::BlobFailed`].
    pub fn open_blob(&mut self) {
        if self.state == State::Open && self.blob_out.is_none() {
            self.blob_wanted = true;
        } else {
            self.events.push_back(ConnEvent::BlobFailed);
        }
    }

    /// Opens and negotiates the blob substream asked for.
    fn poll_blob_out(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        if self.blob_wanted {
            if let Some(m) = self.muxer.as_mut() {
                match Pin::new(m).poll_outbound(cx) {
                    Poll::Ready(Ok(s)) => {
                        self.blob_out = Some(transport::negotiate_blob(s));
                        self.blob_wanted = false;
                        progress = true;
                    }
                    Poll::Ready(Err(_)) => {
                        self.blob_wanted = false;
                        self.events.push_back(ConnEvent::BlobFailed);
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
        }
        if let Some(f) = self.blob_out.as_mut() {
            if let Poll::Ready(r) = f.poll_unpin(cx) {
                self.blob_out = None;
                progress = true;
                self.events.push_back(match r {
                    Ok(stream) => ConnEvent::Blob {
                        stream: Box::new(stream),
                        outbound: true,
                    },
                    Err(_) => ConnEvent::BlobFailed,
                });
            }
        }
        progress
    }

    /// Writes everything queued, then closes the substream and the connection (within
    /// the close timeout). Nothing more is reported but the end of [`Conn::poll`].
    pub fn close(&mut self) {
        if matches!(self.state, State::Open | State::Establishing) {
            self.state = State::Closing(CloseStage::Flushing);
            let at = self.rt.now() + self.cfg.close_timeout;
            self.timer.as_mut().reset(at);
        }
        self.discard_events();
    }

    /// Bytes dropped, ever: transmits not written and reads not reported.
    pub fn discarded(&self) -> u64 {
        self.discarded + self.pipe.discarded
    }

    /// Drops the reports not yet taken, counting the bytes read among them.
    pub fn discard_events(&mut self) {
        for e in self.events.drain(..) {
            if let ConnEvent::Data(d) = e {
                self.discarded += d.len() as u64;
            }
        }
    }

    fn connected(&mut self, protocol: Protocol) {
        self.state = State::Open;
        let info = ConnInfo {
            peer: self.peer,
            role: self.role,
            remote_addr: self.remote.clone(),
            protocol,
            dial: self.dial,
            link: echo_proto::Link::Direct,
        };
        self.events.push_back(ConnEvent::Connected(info));
        if let Some(stream) = self.early_blob.take() {
            self.events.push_back(ConnEvent::Blob {
                stream: Box::new(stream),
                outbound: false,
            });
        }
    }

    /// The connection broke (or the remote closed it).
    fn broken(&mut self, reason: String) {
        match self.state {
            State::Establishing => {
                self.events
                    .push_back(ConnEvent::SetupFailed(DialError::Io(reason)));
                self.state = State::Ending;
            }
            State::Open => {
                self.events.push_back(ConnEvent::Closed(reason));
                self.state = State::Ending;
            }
            // Closing at our request: nobody is told.
            State::Closing(_) | State::Ending => self.state = State::Ending,
        }
        self.chat = None;
        self.pipe.discard_writes();
    }

    /// Drives the connection; its reports accumulate in `events`. Ready when it is over
    /// (closed at the node's request, or broken and reported).
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut reads = 0;
        for round in 0..BUDGET {
            let mut progress = false;
            // The muxer ended while the dialer's chat negotiation was still running.
            let mut closed: Option<String> = None;

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
                                    // The remote may open it as soon as its side is up,
                                    // before ours is (a listener's chat is up first).
                                    let blob = self.files
                                        && matches!(self.state, State::Open | State::Establishing);
                                    self.negotiating
                                        .push(transport::negotiate_inbound(s, chat, blob));
                                }
                            }
                            Poll::Ready(Err(e)) => {
                                progress = true;
                                self.muxer = None;
                                if self.chat.is_none() && self.establishing.is_none() {
                                    self.broken(format!("connection closed: {e}"));
                                } else if self.chat.is_none() {
                                    // The dialer's chat negotiation may still complete
                                    // from what the remote wrote before closing (a
                                    // listener refusing us answers, says goodbye and
                                    // closes at once): poll it first.
                                    closed = Some(format!("connection closed: {e}"));
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
                                self.events.push_back(ConnEvent::SetupFailed(e));
                            }
                            self.state = State::Ending;
                        }
                    }
                }
            }
            if let Some(reason) = closed.take() {
                if self.state == State::Establishing {
                    // The connection is gone and the negotiation did not complete from
                    // what was buffered.
                    self.establishing = None;
                    self.broken(reason);
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
                    Inbound::Blob(stream) if self.state == State::Open => {
                        self.events.push_back(ConnEvent::Blob {
                            stream: Box::new(stream),
                            outbound: false,
                        })
                    }
                    // Reported right after `Connected`; one only (a later one replaces it).
                    Inbound::Blob(stream) if self.state == State::Establishing => {
                        self.early_blob = Some(stream)
                    }
                    Inbound::Chat(..) | Inbound::Blob(_) | Inbound::Rejected => {}
                    Inbound::Ping(s) => self.pings.push(transport::ping_responder(s)),
                }
            }
            while let Poll::Ready(Some(())) = self.pings.poll_next_unpin(cx) {}
            if self.state == State::Open {
                progress |= self.poll_blob_out(cx);
            }

            // Writes, coalesced; one flush when everything queued is written.
            if matches!(
                self.state,
                State::Open | State::Closing(CloseStage::Flushing)
            ) {
                if let Some(chat) = self.chat.as_mut() {
                    progress |= self.pipe.poll_write(cx, chat).progress;
                }
            }

            // Closing at the node's request: what the peer still sends is read and
            // counted as discarded (the node asked to hear nothing more), so it shows in
            // the driver's counters instead of vanishing unread.
            if matches!(
                self.state,
                State::Closing(CloseStage::Flushing | CloseStage::Substream)
            ) && reads < READS_PER_POLL
            {
                if let Some(chat) = self.chat.as_mut() {
                    if let Poll::Ready(Ok(Some(d))) = self.pipe.poll_read(cx, chat) {
                        reads += 1;
                        self.discarded += d.len() as u64;
                        progress = true;
                        if reads == READS_PER_POLL {
                            cx.waker().wake_by_ref();
                        }
                    }
                }
            }

            // Reads, a few chunks per poll.
            if self.state == State::Open && reads < READS_PER_POLL {
                if let Some(chat) = self.chat.as_mut() {
                    match self.pipe.poll_read(cx, chat) {
                        Poll::Ready(Ok(None)) => {
                            progress = true;
                            self.broken("connection closed by the peer".into());
                        }
                        Poll::Ready(Ok(Some(data))) => {
                            progress = true;
                            reads += 1;
                            self.events.push_back(ConnEvent::Data(data));
                            if reads == READS_PER_POLL {
                                // More may be waiting: come back after the node has
                                // processed these.
                                cx.waker().wake_by_ref();
                            }
                        }
                        Poll::Ready(Err(e)) => {
                            progress = true;
                            self.broken(format!("connection lost: {e}"));
                        }
                        Poll::Pending => {}
                    }
                }
            }

            if self.state == State::Ending {
                return Poll::Ready(());
            }

            // Closing at the node's request: everything written, then FIN, then the muxer.
            if let State::Closing(stage) = self.state {
                match stage {
                    CloseStage::Flushing => {
                        if self.chat.is_none() || self.pipe.write_failed || self.pipe.idle() {
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
                    let e = DialError::Timeout(self.timeout);
                    self.events.push_back(ConnEvent::SetupFailed(e));
                    self.state = State::Ending;
                    progress = true;
                } else {
                    return Poll::Ready(());
                }
            }

            if !progress {
                break;
            }
            if reads == READS_PER_POLL {
                // Already woke itself.
                break;
            }
            if round + 1 == BUDGET {
                // Still busy: let others run, then come back.
                cx.waker().wake_by_ref();
            }
        }
        if self.pipe.sent > 0 {
            self.events
                .push_back(ConnEvent::Sent(std::mem::take(&mut self.pipe.sent)));
        }
        Poll::Pending
    }
}
