//! What a [`crate::Node`] hands back to its driver: bytes to transmit, actions for the
//! runtime, and events for the app.

use std::time::Duration;

use bytes::Bytes;
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;

use crate::close::CloseReason;
use crate::log::Position;
use crate::message::SharedMessage;

/// Identifies a connection; chosen by the driver, unique for the node's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Identifies a dial the node asked for (see [`Action::Dial`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DialId(pub u64);

/// Which side opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We dialed.
    Dialer,
    /// The remote dialed us.
    Listener,
}

/// Which wire protocol the chat substream negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// `/echo/chat/2.0.0`.
    Chat,
    /// `/echo-go/chat/1.0.0` (legacy lines).
    Legacy,
}

impl Protocol {
    /// The multistream-select protocol id.
    pub const fn id(self) -> &'static str {
        match self {
            Protocol::Chat => crate::wire::PROTOCOL_ID,
            Protocol::Legacy => crate::wire::LEGACY_PROTOCOL_ID,
        }
    }
}

/// What carries a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Link {
    /// A direct transport connection (TCP, QUIC, ...).
    #[default]
    Direct,
    /// A limited, relayed circuit (libp2p circuit relay v2: `ConnectedPoint::is_relayed`).
    /// The relay caps what a circuit carries (128 KiB and 2 minutes by default), so the
    /// node prefers any direct connection to the same peer and sends history over a
    /// relayed one only up to [`crate::Config::relayed_sync_budget`] (PROTOCOL.md 12.7).
    Relayed,
}

/// What the driver knows about a new connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The remote peer id, authenticated by the noise handshake.
    pub peer: PeerId,
    /// Who dialed.
    pub role: Role,
    /// The remote's address.
    pub remote_addr: Multiaddr,
    /// The negotiated chat protocol.
    pub protocol: Protocol,
    /// For outgoing connections, the [`DialId`] of the node's dial request, if any.
    pub dial: Option<DialId>,
    /// What carries the connection. Both ends of a relayed circuit must say
    /// [`Link::Relayed`] (libp2p reports it to both), so both prefer the same connection
    /// when a direct one arrives.
    pub link: Link,
}

/// Bytes to write, in order, on a connection's chat substream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The connection.
    pub conn: ConnId,
    /// The bytes. Report them with [`crate::Node::handle_sent`] once written.
    pub data: Bytes,
}

/// Something the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Open a connection to `addr` and report the outcome with
    /// [`crate::Node::handle_connected`] (passing `dial`) or
    /// [`crate::Node::handle_dial_failed`].
    Dial {
        /// Ties the outcome to this request.
        dial: DialId,
        /// Where to dial; ends in `/p2p/<peer>` when the peer is known.
        addr: Multiaddr,
        /// The expected peer, if known.
        peer: Option<PeerId>,
    },
    /// Write every byte already handed out for `conn`, then close it. The node has
    /// forgotten the connection; do not report it closed.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why (for logs).
        reason: CloseReason,
    },
}

/// Summary of a connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// Peer id.
    pub peer: PeerId,
    /// Display name (not unique).
    pub name: String,
    /// Remote address of the connection in use.
    pub addr: Multiaddr,
    /// Protocol of the connection in use.
    pub protocol: Protocol,
    /// What carries the connection in use (see [`Event::LinkChanged`]).
    pub link: Link,
    /// Last measured round-trip time.
    pub rtt: Option<Duration>,
    /// Rooms the peer announced.
    pub rooms: Vec<String>,
    /// Where the peer listens, dialable, ending in `/p2p/<peer>`. Persist these to
    /// reconnect after a restart ([`crate::Restore::peers`]).
    pub listen_addrs: Vec<Multiaddr>,
}

/// Something the app should know. New kinds may be added in minor releases.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A peer completed the handshake (its first connection).
    PeerUp(PeerInfo),
    /// A peer's last connection closed.
    PeerDown {
        /// Peer id.
        peer: PeerId,
        /// Its last display name.
        name: String,
        /// Why (its `Display` is readable).
        reason: CloseReason,
        /// Last measured round-trip time.
        rtt: Option<Duration>,
    },
    /// A connected peer's connection in use changed kind: a direct connection replaced
    /// a relayed one (hole punching succeeded), or the direct one closed and a relayed
    /// one took over.
    LinkChanged {
        /// Peer id.
        peer: PeerId,
        /// What now carries its connection.
        link: Link,
    },
    /// A new round-trip time measurement.
    PeerRtt {
        /// Peer id.
        peer: PeerId,
        /// The measurement.
        rtt: Duration,
    },
    /// A peer changed its display name.
    NameChanged {
        /// Peer id.
        peer: PeerId,
        /// Previous name.
        old: String,
        /// New name.
        new: String,
    },
    /// The local node joined a room.
    Joined {
        /// Room.
        room: String,
    },
    /// The local node left a room.
    Left {
        /// Room.
        room: String,
    },
    /// A connected peer joined a room the local node is in (also reported for each
    /// member already there when the local node joins).
    MemberJoined {
        /// Room.
        room: String,
        /// Peer.
        peer: PeerId,
    },
    /// A connected peer left a room the local node is in (or went down).
    MemberLeft {
        /// Room.
        room: String,
        /// Peer.
        peer: PeerId,
    },
    /// A room message, delivered once, in per-author order.
    Message {
        /// The message (shared; cheap to clone).
        msg: SharedMessage,
        /// Its place in the room log; `None` for unverified legacy lines, which are not
        /// part of the agreed log.
        position: Option<Position>,
    },
    /// A direct message from a connected peer.
    Direct {
        /// Sender (authenticated by the connection).
        from: PeerId,
        /// Sender's display name.
        name: String,
        /// The text.
        text: String,
        /// Sender's wall clock, ms since the Unix epoch.
        sent_at_ms: u64,
    },
    /// An end-to-end encrypted direct message, decrypted and verified (from a
    /// connection or a carrier). Delivered once per `(from, seq)`.
    DirectReceived {
        /// Sender (authenticated by its signature).
        from: PeerId,
        /// The conversation's sequence number (from 1; a jump means a gap).
        seq: u64,
        /// The text.
        text: String,
        /// Sender's wall clock, ms since the Unix epoch.
        sent_at_ms: u64,
    },
    /// Delivery state of a direct message this node sent with [`crate::Node::send_dm`].
    DirectStatus {
        /// Recipient.
        to: PeerId,
        /// The message's sequence number.
        seq: u64,
        /// Pending, delivered or read.
        status: crate::dm::DmStatus,
    },
    /// A connection was closed because the peer misbehaved.
    Misbehaved {
        /// The peer.
        peer: PeerId,
        /// What it did: a [`CloseReason::Local`] with the goodbye code it was sent.
        reason: CloseReason,
    },
    /// A dial failed.
    DialFailed {
        /// The request.
        dial: DialId,
        /// The address.
        addr: Multiaddr,
        /// Why: the runtime's error ([`CloseReason::Transport`]), or the peer's goodbye
        /// when it answered the dial by refusing us ([`CloseReason::Remote`], e.g. with
        /// [`crate::GoodbyeCode::TooManyPeers`]).
        reason: CloseReason,
    },
    /// Sequence numbers below `upto` are reserved for the local author in `room`.
    /// **Persist this before sending anything else** and pass it back in
    /// [`crate::RestoreRoom::reserved`] on restart: a restarted node continues above it,
    /// so it never reuses a sequence number even if it lost its last messages.
    SeqReserved {
        /// Room.
        room: String,
        /// First sequence number not reserved.
        upto: u64,
    },
    /// Messages of an author were given up on after the gap timeout and the repair
    /// attempts; delivery resumed after them. They are still delivered (as late
    /// messages) if they arrive.
    Gap {
        /// Room.
        room: String,
        /// Author.
        author: PeerId,
        /// Missing sequence numbers `[start, end)`.
        missing: (u64, u64),
    },
    /// Messages delivered as soon as they came from their author directly (the
    /// connection's authenticated peer) failed the signature check that follows delivery
    /// (PROTOCOL.md, "Delivery before verification"). The text is the author's, but the
    /// node never relays or serves them, has taken them out of its room log
    /// ([`crate::Node::room_log`]) and closed the connection as misbehaving. An app
    /// that persists messages should drop these too: [`crate::Node::restore`] trusts
    /// what it loads, and would serve them again.
    SignatureFailed {
        /// Room.
        room: String,
        /// Author.
        author: PeerId,
        /// The sequence numbers concerned (delivered or not yet).
        seqs: Vec<u64>,
    },
}

impl Event {
    /// Whether a driver must hand this event to the app even when the app has fallen
    /// behind and other events are being dropped (counted as lagged).
    ///
    /// These events carry state the app must persist for the node to restart safely
    /// ([`Event::SeqReserved`]), the local user's own room membership ([`Event::Joined`],
    /// [`Event::Left`]), or what the app must delete before a restart loads it again
    /// ([`Event::SignatureFailed`]: an app that missed it would keep, and after a restart
    /// serve, messages whose signature failed, and be cut off by every peer it serves
    /// them to). The first three are caused only by the local user's own commands and
    /// sends (a sequence block is reserved once per [`crate::Config::reserve_block`]` / 2`
    /// own messages). A peer causes a `SignatureFailed` at most once per connection, since
    /// the node closes the connection it came on, so a peer grows the queue by one event
    /// per completed handshake at most, within the node's connection limits.
    pub fn must_deliver(&self) -> bool {
        matches!(
            self,
            Event::SeqReserved { .. }
                | Event::Joined { .. }
                | Event::Left { .. }
                | Event::SignatureFailed { .. }
        )
    }
}

/// One output of a [`crate::Node`], from [`crate::Node::poll_output`].
///
/// Drain outputs until [`Output::Wait`] after every input, handling each in the order
/// given: the node hands out every transmit before any action and every action before
/// any event, so the bytes of a goodbye always come before the `Close` of their
/// connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use = "an output must be handled: bytes written, actions done, events passed on"]
pub enum Output {
    /// Bytes to write on a connection's chat substream; report them written with
    /// [`crate::Node::handle_sent`].
    Transmit(Transmit),
    /// Something the runtime must do (dial, close).
    Action(Action),
    /// Something the app should know.
    Event(Event),
    /// Nothing more to do: wait for the next input, or until this instant (if any) and
    /// then call [`crate::Node::handle_timeout`]. Spurious and late timer calls are
    /// harmless.
    Wait(Option<std::time::Instant>),
    /// The events of the input are out and what is left is work off their path (checking
    /// the signatures of room messages delivered before their check, PROTOCOL.md section
    /// 6.5). Call [`crate::Node::poll_output`] again soon; a caller whose app runs on the
    /// same thread or executor may first let it take the events (an async driver wakes
    /// its own task and returns `Pending`). Calling again at once is also correct: the
    /// node returns it at most once per batch of events.
    Yield,
}
