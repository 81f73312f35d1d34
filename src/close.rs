//! Why a connection closed: [`CloseReason`], carrying the protocol's [`GoodbyeCode`].

use std::fmt;

/// The code a goodbye frame carries (PROTOCOL.md, "Goodbye codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum GoodbyeCode {
    /// The node is shutting down.
    Shutdown,
    /// A duplicate connection lost the tie-break; the winner stays.
    Duplicate,
    /// The peer's protocol version is not supported.
    IncompatibleVersion,
    /// The peer broke the protocol or a limit.
    ProtocolViolation,
    /// The peer was silent past the idle timeout.
    Idle,
    /// The node has no room for another peer.
    TooManyPeers,
    /// A code this version does not know (a newer peer's).
    Unknown(u32),
}

impl GoodbyeCode {
    /// The value on the wire.
    pub const fn code(self) -> u32 {
        match self {
            GoodbyeCode::Shutdown => 0,
            GoodbyeCode::Duplicate => 1,
            GoodbyeCode::IncompatibleVersion => 2,
            GoodbyeCode::ProtocolViolation => 3,
            GoodbyeCode::Idle => 4,
            GoodbyeCode::TooManyPeers => 5,
            GoodbyeCode::Unknown(c) => c,
        }
    }

    /// The code of a wire value (unknown values are kept as [`GoodbyeCode::Unknown`]).
    pub const fn from_code(code: u32) -> Self {
        match code {
            0 => GoodbyeCode::Shutdown,
            1 => GoodbyeCode::Duplicate,
            2 => GoodbyeCode::IncompatibleVersion,
            3 => GoodbyeCode::ProtocolViolation,
            4 => GoodbyeCode::Idle,
            5 => GoodbyeCode::TooManyPeers,
            c => GoodbyeCode::Unknown(c),
        }
    }
}

impl From<u32> for GoodbyeCode {
    fn from(code: u32) -> Self {
        GoodbyeCode::from_code(code)
    }
}

impl From<GoodbyeCode> for u32 {
    fn from(code: GoodbyeCode) -> Self {
        code.code()
    }
}

/// Why a connection closed or a dial failed, in [`crate::Action::Close`],
/// [`crate::Event::PeerDown`], [`crate::Event::Misbehaved`] and
/// [`crate::Event::DialFailed`]. Its `Display` is the readable text an app shows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// This node closed the connection. On a chat connection it said goodbye with
    /// `code` and `detail` first; legacy connections get no goodbye.
    Local {
        /// The goodbye code.
        code: GoodbyeCode,
        /// What happened, readable (also the goodbye's reason text).
        detail: String,
    },
    /// The remote said goodbye (its reason text stripped of control characters and cut
    /// to 256 characters).
    Remote {
        /// The goodbye code it sent.
        code: GoodbyeCode,
        /// Its reason text (may be empty).
        detail: String,
    },
    /// The runtime reported the connection closed or the dial failed (EOF, reset, I/O
    /// error, no route), readable.
    Transport(String),
}

impl CloseReason {
    /// A close by this node.
    pub(crate) fn local(code: GoodbyeCode, detail: impl Into<String>) -> Self {
        CloseReason::Local {
            code,
            detail: detail.into(),
        }
    }

    /// The goodbye code, if a goodbye was (or would have been) said.
    pub fn code(&self) -> Option<GoodbyeCode> {
        match self {
            CloseReason::Local { code, .. } | CloseReason::Remote { code, .. } => Some(*code),
            CloseReason::Transport(_) => None,
        }
    }

    /// Whether the remote refused us for lack of peer slots.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            CloseReason::Remote {
                code: GoodbyeCode::TooManyPeers,
                ..
            }
        )
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local { detail, .. } => f.write_str(detail),
            CloseReason::Remote { detail, .. } if detail.is_empty() => {
                f.write_str("peer said goodbye")
            }
            CloseReason::Remote { detail, .. } => write!(f, "peer said goodbye: {detail}"),
            CloseReason::Transport(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_kept() {
        for c in 0..8 {
            assert_eq!(GoodbyeCode::from_code(c).code(), c);
        }
        assert_eq!(GoodbyeCode::from_code(77), GoodbyeCode::Unknown(77));
        assert_eq!(GoodbyeCode::from(5), GoodbyeCode::TooManyPeers);
    }

    #[test]
    fn display_is_the_readable_text() {
        let r = CloseReason::local(GoodbyeCode::Idle, "no answer for 30s");
        assert_eq!(r.to_string(), "no answer for 30s");
        let r = CloseReason::Remote {
            code: GoodbyeCode::Shutdown,
            detail: "node shutting down".into(),
        };
        assert_eq!(r.to_string(), "peer said goodbye: node shutting down");
        let r = CloseReason::Remote {
            code: GoodbyeCode::Unknown(9),
            detail: String::new(),
        };
        assert_eq!(r.to_string(), "peer said goodbye");
        assert_eq!(CloseReason::Transport("eof".into()).to_string(), "eof");
    }
}
