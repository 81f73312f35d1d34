//! The app's side of a running node: [`Handle`] (commands) and [`Pending`] (a
//! command's answer, with backpressure when the command queue is full).

use super::*;

/// The answer to a command. While the command queue has room
/// ([`DriverConfig::command_buffer`]), the command is queued when the method is called
/// (commands run in call order even if their answers are awaited later), so many sends
/// can be in flight at once; await this for the result, and dropping it does not cancel
/// the command (fire and forget). When the queue is full (the app outruns the node), the
/// command waits in this future for room: it is queued when this is polled and room
/// frees (waiting commands are queued in about the order they were made), and dropping
/// it before then cancels it. Awaiting each command, or keeping fewer than
/// `command_buffer` in flight, keeps both guarantees.
#[must_use = "the command may wait for room in the queue; await this for its result"]
pub struct Pending<T>(pub(crate) PendingState<T>);

impl<T> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.0 {
            PendingState::Queued(_) => "queued",
            PendingState::Waiting(..) => "waiting for room",
            PendingState::Stopped => "stopped",
        };
        f.debug_tuple("Pending").field(&state).finish()
    }
}

impl<T> Unpin for Pending<T> {}

impl<T> Future for Pending<T> {
    type Output = Result<T, Error>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.0 {
                PendingState::Queued(rx) => {
                    return Pin::new(rx).poll(cx).map(|r| match r {
                        Ok(r) => r,
                        Err(oneshot::Canceled) => Err(Error::Stopped),
                    })
                }
                PendingState::Waiting(send, _) => match send.as_mut().poll(cx) {
                    Poll::Ready(true) => {
                        let PendingState::Waiting(_, rx) =
                            std::mem::replace(&mut this.0, PendingState::Stopped)
                        else {
                            unreachable!()
                        };
                        this.0 = PendingState::Queued(rx);
                    }
                    Poll::Ready(false) => this.0 = PendingState::Stopped,
                    Poll::Pending => return Poll::Pending,
                },
                PendingState::Stopped => return Poll::Ready(Err(Error::Stopped)),
            }
        }
    }
}

/// Counts commands waiting for room while alive.
struct WaitingGuard(Arc<std::sync::atomic::AtomicUsize>);

impl WaitingGuard {
    fn new(n: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        n.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        WaitingGuard(n.clone())
    }
}

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

pub(crate) struct Inner {
    pub(crate) peer_id: PeerId,
    /// Set once the listeners are up.
    pub(crate) listen_addrs: std::sync::OnceLock<Vec<Multiaddr>>,
    /// Observed and relayed addresses and the NAT status (kept by the swarm).
    pub(crate) net: net::SharedAddresses,
    pub(crate) cmds: async_channel::Sender<Command>,
    /// Commands waiting for room in `cmds`: while any do, new ones wait behind them.
    pub(crate) waiting: Arc<std::sync::atomic::AtomicUsize>,
    pub(crate) abort: AbortHandle,
    pub(crate) stopped: Shared<oneshot::Receiver<()>>,
    /// The file store's directory, if file transfer is on.
    pub(crate) files_dir: Option<std::path::PathBuf>,
}

/// Controls a running node. Cheap to clone; when the last clone is dropped the node
/// shuts down (goodbye on every connection) in the background.
#[derive(Clone)]
pub struct Handle(pub(crate) Arc<Inner>);

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("peer_id", &self.0.peer_id)
            .finish()
    }
}

impl Handle {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.0.peer_id
    }

    /// Where the node listens, with real ports, each ending in `/p2p/<id>`: what a peer
    /// passes to [`Handle::connect`].
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        self.0.listen_addrs.get().map_or(&[], Vec::as_slice)
    }

    /// The node's addresses: where it listens, where peers saw it, which external
    /// addresses are confirmed, its relay reservations, and what AutoNAT concluded. The
    /// direct drivers know only the listen addresses.
    pub fn addresses(&self) -> Addresses {
        let mut a = self.0.net.lock().map(|a| a.clone()).unwrap_or_default();
        a.listen = self.listen_addrs().to_vec();
        a
    }

    #[cfg(feature = "swarm")]
    pub(crate) fn net(&self) -> net::SharedAddresses {
        self.0.net.clone()
    }

    pub(crate) fn call<T>(&self, f: impl FnOnce(Reply<T>) -> Command) -> Pending<T> {
        let (tx, rx) = oneshot::channel();
        let cmd = f(tx);
        let cmd = if self.0.waiting.load(std::sync::atomic::Ordering::Acquire) == 0 {
            match self.0.cmds.try_send(cmd) {
                Ok(()) => return Pending(PendingState::Queued(rx)),
                Err(async_channel::TrySendError::Closed(_)) => {
                    return Pending(PendingState::Stopped)
                }
                Err(async_channel::TrySendError::Full(cmd)) => cmd,
            }
        } else {
            cmd
        };
        let guard = WaitingGuard::new(&self.0.waiting);
        let cmds = self.0.cmds.clone();
        let send = async move {
            let ok = cmds.send(cmd).await.is_ok();
            drop(guard);
            ok
        };
        Pending(PendingState::Waiting(Box::pin(send), rx))
    }

    /// Sends `text` to `room`. The message is delivered locally as an
    /// [`echo_proto::Event::Message`] too. Sends queued together go out as one burst.
    pub fn send(&self, room: &str, text: &str) -> Pending<SharedMessage> {
        let (room, text) = (room.to_string(), text.to_string());
        self.call(|reply| Command::Send { room, text, reply })
    }

    /// Joins a room.
    pub fn join(&self, room: &str) -> Pending<()> {
        let room = room.to_string();
        self.call(|reply| Command::Join { room, reply })
    }

    /// Leaves a room.
    pub fn leave(&self, room: &str) -> Pending<()> {
        let room = room.to_string();
        self.call(|reply| Command::Leave { room, reply })
    }

    /// Sends a direct message to a connected peer.
    pub fn send_direct(&self, peer: PeerId, text: &str) -> Pending<()> {
        let text = text.to_string();
        self.call(|reply| Command::Direct { peer, text, reply })
    }

    /// Sends an end-to-end encrypted direct message ([`echo_proto::Node::send_dm`]):
    /// straight to `peer` if it is connected, else carried by neighbours until it is.
    /// Returns its sequence number in the conversation; its progress comes as
    /// [`echo_proto::Event::DirectStatus`]. Save [`Handle::export_dm`] after it (and
    /// give it back in [`Options::restore`]`.dm`) so a restart never reuses a number.
    pub fn send_dm(&self, peer: PeerId, text: &str) -> Pending<u64> {
        let text = text.to_string();
        self.call(|reply| Command::Dm { peer, text, reply })
    }

    /// Tells `peer` its messages `seqs` were read (a read receipt, unless
    /// [`echo_proto::DmConfig::read_receipts`] is off).
    pub fn mark_dm_read(&self, peer: PeerId, seqs: Vec<u64>) -> Pending<()> {
        self.call(|reply| Command::DmRead { peer, seqs, reply })
    }

    /// The node's direct-message state to store ([`echo_proto::Node::export_dm`]).
    pub fn export_dm(&self) -> Pending<Vec<u8>> {
        self.inspect(|node| node.export_dm(std::time::Instant::now()))
    }

    /// Changes the display name.
    pub fn set_name(&self, name: &str) -> Pending<()> {
        let name = name.to_string();
        self.call(|reply| Command::SetName { name, reply })
    }

    /// Dials a multiaddr such as `/ip4/127.0.0.1/tcp/4001/p2p/12D3Koo…`. An address
    /// that does not parse or cannot be dialed is refused at once
    /// ([`CommandError::InvalidAddr`]); the outcome of the dial comes as an event
    /// ([`echo_proto::Event::PeerUp`], or [`echo_proto::Event::DialFailed`] with a [`DialError`]'s text).
    pub fn connect(&self, addr: &str) -> Pending<DialId> {
        let addr = addr.to_string();
        self.call(|reply| Command::Connect { addr, reply })
    }

    /// Addresses for `peer` found by the app (e.g. mDNS) or kept by it: the node
    /// remembers them and dials the peer if it is idle, never faster than its redial
    /// backoff however often this is called ([`echo_proto::Node::handle_addresses`]).
    /// Resolves to how many addresses were usable.
    pub fn add_addresses(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        source: echo_proto::AddrSource,
    ) -> Pending<usize> {
        self.call(|reply| Command::Addresses {
            peer,
            addrs,
            source,
            reply,
        })
    }

    /// Runs `f` on the node (for queries: peers, rooms, stats, connection counts).
    pub fn inspect<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Node) -> T + Send + 'static,
    ) -> Pending<T> {
        self.call(|reply| {
            Command::Inspect(Box::new(move |node: &Node| {
                let _ = reply.send(Ok(f(node)));
            }))
        })
    }

    /// Connected peers.
    pub fn peers(&self) -> Pending<Vec<PeerInfo>> {
        self.inspect(Node::peers)
    }

    /// The node's counters.
    pub fn stats(&self) -> Pending<Stats> {
        self.inspect(|n| n.stats().clone())
    }

    /// The driver's counters: handshakes, dials, connections, queued events and
    /// commands.
    pub fn driver_stats(&self) -> Pending<DriverStats> {
        self.call(Command::DriverStats)
    }

    /// Connections to `peer` currently open or opening.
    pub fn connection_count(&self, peer: PeerId) -> Pending<usize> {
        self.inspect(move |n| n.connection_count(&peer))
    }

    /// Says goodbye on every connection, flushes, closes them, and stops the node.
    /// Resolves when every connection is closed (each within
    /// [`DriverConfig::close_timeout`]).
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .0
            .cmds
            .send(Command::Shutdown { reply: tx })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Resolves when the node task has ended (after [`Handle::shutdown`] or
    /// [`Handle::abort`]) and its listeners are closed.
    pub async fn stopped(&self) {
        let _ = self.0.stopped.clone().await;
    }

    /// Stops the node at once, without goodbyes: its connections are dropped and its
    /// listeners closed, as if the process had died.
    pub fn abort(&self) {
        self.0.abort.abort();
    }
}
