//! The [`ConnectionHandler`] of [`super::EchoBehaviour`]: negotiates the one chat
//! substream of a connection, and the blob substreams of file transfer, and hands them
//! to the behaviour, which reads and writes them.
//!
//! * Chat: the dialer opens it (`/echo/chat/2.0.0`, else `/echo-go/chat/1.0.0`);
//!   inbound substreams may negotiate either on any connection, and only the first chat
//!   substream of a connection is kept.
//! * Blob (`/echo/blob/1.0.0`, only with file transfer on and never on a relayed
//!   connection): opened when the behaviour asks ([`HandlerIn::OpenBlob`]); inbound
//!   ones are accepted up to [`crate::MAX_BLOB_STREAMS_PER_CONN`] per connection (later
//!   ones are dropped). Which ones are kept is the file side's choice (one per peer).

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use echo_proto::Protocol;
use futures::future::{ready, Ready};
use libp2p::core::{InboundUpgrade, OutboundUpgrade, UpgradeInfo};
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionHandler, ConnectionHandlerEvent, Stream, StreamProtocol, StreamUpgradeError,
    SubstreamProtocol,
};

use crate::transport::{BLOB, CHAT, LEGACY};
use crate::MAX_BLOB_STREAMS_PER_CONN;

/// What a negotiated substream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The chat, in this protocol.
    Chat(Protocol),
    /// File transfer.
    Blob,
}

/// A set of echo's protocols, preferred first.
#[derive(Debug, Clone)]
pub struct EchoUpgrade(Vec<StreamProtocol>);

impl EchoUpgrade {
    fn chat() -> Self {
        EchoUpgrade(vec![StreamProtocol::new(CHAT), StreamProtocol::new(LEGACY)])
    }

    fn blob() -> Self {
        EchoUpgrade(vec![StreamProtocol::new(BLOB)])
    }
}

impl UpgradeInfo for EchoUpgrade {
    type Info = StreamProtocol;
    type InfoIter = Vec<StreamProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.clone()
    }
}

fn kind(p: &StreamProtocol) -> Kind {
    match p.as_ref() {
        CHAT => Kind::Chat(Protocol::Chat),
        BLOB => Kind::Blob,
        _ => Kind::Chat(Protocol::Legacy),
    }
}

impl InboundUpgrade<Stream> for EchoUpgrade {
    type Output = (Stream, Kind);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;

    fn upgrade_inbound(self, s: Stream, p: StreamProtocol) -> Self::Future {
        ready(Ok((s, kind(&p))))
    }
}

impl OutboundUpgrade<Stream> for EchoUpgrade {
    type Output = (Stream, Kind);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;

    fn upgrade_outbound(self, s: Stream, p: StreamProtocol) -> Self::Future {
        ready(Ok((s, kind(&p))))
    }
}

/// What the behaviour asks of a handler.
#[derive(Debug, Clone, Copy)]
pub enum HandlerIn {
    /// Open a blob substream (answered with [`HandlerEvent::Blob`] or
    /// [`HandlerEvent::BlobFailed`]).
    OpenBlob,
}

/// What a handler tells the behaviour.
#[derive(Debug)]
pub enum HandlerEvent {
    /// The chat substream is up.
    Chat(Stream, Protocol),
    /// Our chat substream could not be opened: the remote does not speak it, or the
    /// negotiation failed or timed out.
    Failed(String),
    /// A blob substream is up: ours (`outbound`) or the remote's.
    Blob {
        /// The substream.
        stream: Stream,
        /// We opened it.
        outbound: bool,
    },
    /// The blob substream asked for could not be opened.
    BlobFailed,
}

/// One connection's echo substreams.
pub struct Handler {
    /// Open the chat substream (we are the dialer) and it is not requested yet.
    open: bool,
    /// A chat substream was handed to the behaviour, or ours failed: nothing more.
    done: bool,
    /// Blob substreams may be opened and accepted here.
    blob: bool,
    /// Blob substreams to request.
    open_blob: u32,
    /// Inbound blob substreams taken.
    blobs_in: u32,
    timeout: Duration,
    out: std::collections::VecDeque<HandlerEvent>,
}

impl Handler {
    pub(super) fn new(open: bool, blob: bool, timeout: Duration) -> Self {
        Handler {
            open,
            done: false,
            blob,
            open_blob: 0,
            blobs_in: 0,
            timeout,
            out: Default::default(),
        }
    }

    fn deliver(&mut self, e: HandlerEvent) {
        if !self.done {
            self.done = true;
            self.out.push_back(e);
        }
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = HandlerIn;
    type ToBehaviour = HandlerEvent;
    type InboundProtocol = EchoUpgrade;
    type OutboundProtocol = EchoUpgrade;
    type InboundOpenInfo = ();
    /// True for a blob substream.
    type OutboundOpenInfo = bool;

    fn listen_protocol(&self) -> SubstreamProtocol<EchoUpgrade> {
        let mut u = EchoUpgrade::chat();
        if self.blob && self.blobs_in < MAX_BLOB_STREAMS_PER_CONN {
            u.0.push(StreamProtocol::new(BLOB));
        }
        SubstreamProtocol::new(u, ()).with_timeout(self.timeout)
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<EchoUpgrade, bool, HandlerEvent>> {
        if let Some(e) = self.out.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(e));
        }
        if self.open && !self.done {
            self.open = false;
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(EchoUpgrade::chat(), false)
                    .with_timeout(self.timeout),
            });
        }
        if self.open_blob > 0 {
            self.open_blob -= 1;
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(EchoUpgrade::blob(), true)
                    .with_timeout(self.timeout),
            });
        }
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, e: HandlerIn) {
        match e {
            HandlerIn::OpenBlob if self.blob => self.open_blob = (self.open_blob + 1).min(2),
            HandlerIn::OpenBlob => self.out.push_back(HandlerEvent::BlobFailed),
        }
    }

    fn on_connection_event(&mut self, event: ConnectionEvent<EchoUpgrade, EchoUpgrade, (), bool>) {
        match event {
            // The remote may not know our limit: past it (or with no blob protocol on
            // this connection), the stream falls to `_` and is dropped (a reset).
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: (stream, Kind::Blob),
                ..
            }) if self.blob && self.blobs_in < MAX_BLOB_STREAMS_PER_CONN => {
                self.blobs_in += 1;
                let e = HandlerEvent::Blob {
                    stream,
                    outbound: false,
                };
                self.out.push_back(e);
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: (stream, Kind::Blob),
                ..
            }) => self.out.push_back(HandlerEvent::Blob {
                stream,
                outbound: true,
            }),
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: (s, Kind::Chat(p)),
                ..
            })
            | ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: (s, Kind::Chat(p)),
                ..
            }) => self.deliver(HandlerEvent::Chat(s, p)),
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info: true, .. }) => {
                self.out.push_back(HandlerEvent::BlobFailed)
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                let why = match error {
                    StreamUpgradeError::NegotiationFailed => {
                        format!("remote does not support {CHAT} or {LEGACY}")
                    }
                    StreamUpgradeError::Timeout => "chat substream timed out".to_string(),
                    StreamUpgradeError::Io(e) => format!("chat substream failed: {e}"),
                    StreamUpgradeError::Apply(e) => match e {},
                };
                self.deliver(HandlerEvent::Failed(why));
            }
            _ => {}
        }
    }
}
