//! Errors returned to the local user's commands.

use libp2p_identity::PeerId;

/// Why a command was refused. Nothing changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The text is longer than `Config::max_text_len`.
    #[error("message is {len} bytes; the limit is {max}")]
    TextTooLong {
        /// Length given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Nothing to send.
    #[error("message is empty")]
    EmptyText,
    /// The name is longer than `Config::max_name_len` or contains control characters.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// The room name is empty, too long or contains whitespace or control characters.
    #[error("invalid room name: {0}")]
    InvalidRoom(String),
    /// Joining would exceed `Config::max_rooms`.
    #[error("already in {max} rooms; leave one first")]
    TooManyRooms {
        /// The limit.
        max: usize,
    },
    /// The node is already in that room.
    #[error("already in room {0}")]
    AlreadyJoined(String),
    /// The node is not in that room.
    #[error("not in room {0}; join it first")]
    NotInRoom(String),
    /// Direct messages need an open chat connection to the peer.
    #[error("peer {0} is not connected")]
    PeerNotConnected(PeerId),
    /// Legacy echo-go peers cannot receive direct messages.
    #[error("peer {0} speaks the legacy echo-go protocol, which has no direct messages")]
    LegacyPeer(PeerId),
    /// The multiaddr cannot be parsed or dialed.
    #[error("invalid address {addr:?}: {reason}")]
    InvalidAddr {
        /// What was given.
        addr: String,
        /// What is wrong.
        reason: String,
    },
    /// The address names this node.
    #[error("that address is this node's own")]
    SelfDial,
    /// The node is shutting down.
    #[error("node is shut down")]
    ShutDown,
}
