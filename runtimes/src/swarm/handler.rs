//! The [`ConnectionHandler`] of [`super::EchoBehaviour`]: negotiates the one chat
//! substream of a connection and hands it to the behaviour, which reads and writes it.
//! The dialer opens it (`/echo/chat/2.0.0`, else `/echo-go/chat/1.0.0`); inbound
//! substreams may negotiate either on any connection, and only the first chat
//! substream of a connection is kept.

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

use crate::transport::{CHAT, LEGACY};

/// The chat protocols, preferred first.
#[derive(Debug, Clone, Copy)]
pub struct ChatUpgrade;

impl UpgradeInfo for ChatUpgrade {
    type Info = StreamProtocol;
    type InfoIter = [StreamProtocol; 2];

    fn protocol_info(&self) -> Self::InfoIter {
        [StreamProtocol::new(CHAT), StreamProtocol::new(LEGACY)]
    }
}

fn protocol(p: &StreamProtocol) -> Protocol {
    if p.as_ref() == CHAT {
        Protocol::Chat
    } else {
        Protocol::Legacy
    }
}

impl InboundUpgrade<Stream> for ChatUpgrade {
    type Output = (Stream, Protocol);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;

    fn upgrade_inbound(self, s: Stream, p: StreamProtocol) -> Self::Future {
        ready(Ok((s, protocol(&p))))
    }
}

impl OutboundUpgrade<Stream> for ChatUpgrade {
    type Output = (Stream, Protocol);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;

    fn upgrade_outbound(self, s: Stream, p: StreamProtocol) -> Self::Future {
        ready(Ok((s, protocol(&p))))
    }
}

/// What a handler tells the behaviour.
#[derive(Debug)]
pub enum HandlerEvent {
    /// The chat substream is up.
    Chat(Stream, Protocol),
    /// Our chat substream could not be opened: the remote does not speak it, or the
    /// negotiation failed or timed out.
    Failed(String),
}

/// One connection's chat negotiation.
pub struct Handler {
    /// Open the chat substream (we are the dialer) and it is not requested yet.
    open: bool,
    /// A chat substream was handed to the behaviour, or ours failed: nothing more.
    done: bool,
    timeout: Duration,
    out: Option<HandlerEvent>,
}

impl Handler {
    pub(super) fn new(open: bool, timeout: Duration) -> Self {
        Handler {
            open,
            done: false,
            timeout,
            out: None,
        }
    }

    fn deliver(&mut self, e: HandlerEvent) {
        if !self.done {
            self.done = true;
            self.out = Some(e);
        }
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = HandlerEvent;
    type InboundProtocol = ChatUpgrade;
    type OutboundProtocol = ChatUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<ChatUpgrade> {
        SubstreamProtocol::new(ChatUpgrade, ()).with_timeout(self.timeout)
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<ChatUpgrade, (), HandlerEvent>> {
        if let Some(e) = self.out.take() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(e));
        }
        if self.open && !self.done {
            self.open = false;
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(ChatUpgrade, ()).with_timeout(self.timeout),
            });
        }
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, e: Infallible) {
        match e {}
    }

    fn on_connection_event(&mut self, event: ConnectionEvent<ChatUpgrade, ChatUpgrade>) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: (s, p),
                ..
            })
            | ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: (s, p),
                ..
            }) => self.deliver(HandlerEvent::Chat(s, p)),
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
