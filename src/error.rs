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
    /// No signed prekey of the peer is known yet (none of its profiles reached us), or
    /// the peer is this node.
    #[error(
        "no encryption key known for {0}; it must be seen online (directly or via a peer) once"
    )]
    NoPrekey(PeerId),
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

/// Why bytes from a peer (or from storage) do not decode: a frame, or a room message
/// inside one. Nodes close the sending connection with this as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix is malformed or announces a frame over the limit.
    #[error(transparent)]
    Frame(#[from] crate::codec::FrameError),
    /// The payload is not valid protobuf for its message type.
    #[error("bad protobuf: {0}")]
    Protobuf(String),
    /// The author field is not a peer id.
    #[error("bad author id: {0}")]
    BadAuthor(String),
    /// The `prev` hash is not 32 bytes.
    #[error("prev hash has {0} bytes, expected 32")]
    BadPrevLen(usize),
    /// The sequence number is 0 or above `MAX_SEQ` (2^62).
    #[error("sequence number {0} out of range")]
    SeqOutOfRange(u64),
    /// `skipped` reaches below sequence number 1.
    #[error("skipped reaches below sequence number 1")]
    SkippedTooFar,
    /// `prev` is zero for a later message, or non-zero for a chain's first.
    #[error("prev hash must be zero exactly for a chain's first message")]
    PrevMismatch,
    /// A signature that is neither absent nor 64 bytes.
    #[error("signature has {0} bytes")]
    BadSignatureLen(usize),
}

impl From<prost::DecodeError> for DecodeError {
    fn from(e: prost::DecodeError) -> Self {
        DecodeError::Protobuf(e.to_string())
    }
}
