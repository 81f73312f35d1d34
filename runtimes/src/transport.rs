//! The libp2p connection stack, runtime-independent: multistream-select, noise, yamux,
//! substream negotiation and the ping responder.

#![allow(clippy::result_large_err)] // DialError carries two peer ids; dials are rare.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use echo_proto::{Multiaddr, PeerId, Protocol, Role};
use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt};
use libp2p_core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p_identity::Keypair;
use multiaddr::Protocol as Ma;
use multistream_select::{
    dialer_select_proto, listener_select_proto, Negotiated, NegotiationError, Version,
};

use crate::runtime::Runtime;

/// `/echo/chat/2.0.0`.
pub const CHAT: &str = echo_proto::Protocol::Chat.id();
/// `/echo-go/chat/1.0.0`.
pub const LEGACY: &str = echo_proto::Protocol::Legacy.id();
/// `/echo/blob/1.0.0`.
pub const BLOB: &str = echo_proto::blob::PROTOCOL_NAME;
/// `/ipfs/ping/1.0.0`.
pub const PING: &str = "/ipfs/ping/1.0.0";
const NOISE: &str = "/noise";
const YAMUX: &str = "/yamux/1.0.0";

/// The encrypted, multiplexed connection over a TCP stream `T`.
pub(crate) type Muxer<T> = libp2p_yamux::Muxer<Negotiated<libp2p_noise::Output<Negotiated<T>>>>;
/// A negotiated substream.
pub(crate) type Substream = Negotiated<libp2p_yamux::Stream>;

/// Why a dial (or the set-up of an accepted connection) failed. The `Display` text is
/// what [`echo_proto::Event::DialFailed`] carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The address is not `/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>[/p2p/<id>]`.
    #[error("cannot dial {addr}: {reason}")]
    Address {
        /// The address.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A DNS name did not resolve.
    #[error("cannot resolve {host}: {error}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        error: String,
    },
    /// Nothing listens there.
    #[error("connection refused by {0}")]
    Refused(SocketAddr),
    /// TCP connect failed otherwise.
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// The socket address.
        addr: SocketAddr,
        /// The OS error.
        error: String,
    },
    /// The whole dial (TCP, noise, yamux, chat substream) took longer than
    /// [`crate::DriverConfig::dial_timeout`].
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The remote does not speak a protocol of the stack.
    #[error("remote does not support {0}")]
    Unsupported(String),
    /// The noise handshake failed.
    #[error("noise handshake failed: {0}")]
    Noise(String),
    /// The address named one peer and noise authenticated another.
    #[error("peer id mismatch: dialed {expected} but the remote authenticated as {actual}")]
    PeerIdMismatch {
        /// The id in the address.
        expected: PeerId,
        /// The id noise authenticated.
        actual: PeerId,
    },
    /// The connection broke during set-up.
    #[error("connection lost during set-up: {0}")]
    Io(String),
    /// [`crate::DriverConfig::max_pending_dials`] dials were in set-up already.
    #[error("too many dials in progress (at most {0})")]
    TooManyDials(usize),
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
}

fn negotiation(what: &str, e: NegotiationError) -> DialError {
    match e {
        NegotiationError::Failed => DialError::Unsupported(what.to_string()),
        NegotiationError::ProtocolError(e) => DialError::Io(format!("negotiating {what}: {e}")),
    }
}

/// Where to connect for an address: socket addresses, or a name to resolve.
pub(crate) enum Target {
    Ip(SocketAddr),
    Dns {
        host: String,
        port: u16,
        family: Option<bool>,
    },
}

/// Splits a dialable multiaddr into a target and the optional `/p2p/` id.
pub(crate) fn target(addr: &Multiaddr) -> Result<(Target, Option<PeerId>), DialError> {
    let bad = |reason: &str| DialError::Address {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    let mut it = addr.iter();
    let host = it.next();
    let port = match it.next() {
        Some(Ma::Tcp(0)) => return Err(bad("port 0 cannot be dialed")),
        Some(Ma::Tcp(p)) => p,
        _ => return Err(bad("expected /tcp/<port> after the host")),
    };
    let peer = match it.next() {
        None => None,
        Some(Ma::P2p(id)) => Some(id),
        Some(_) => return Err(bad("only /p2p/<peer id> may follow /tcp/<port>")),
    };
    if it.next().is_some() {
        return Err(bad("nothing may follow /p2p/<peer id>"));
    }
    let t = match host {
        Some(Ma::Ip4(ip)) => Target::Ip(SocketAddr::new(IpAddr::V4(ip), port)),
        Some(Ma::Ip6(ip)) => Target::Ip(SocketAddr::new(IpAddr::V6(ip), port)),
        Some(Ma::Dns(h)) => Target::Dns {
            host: h.to_string(),
            port,
            family: None,
        },
        Some(Ma::Dns4(h)) => Target::Dns {
            host: h.to_string(),
            port,
            family: Some(true),
        },
        Some(Ma::Dns6(h)) => Target::Dns {
            host: h.to_string(),
            port,
            family: Some(false),
        },
        _ => return Err(bad("expected /ip4, /ip6, /dns, /dns4 or /dns6")),
    };
    Ok((t, peer))
}

/// The multiaddr of a socket address.
pub(crate) fn multiaddr(a: SocketAddr) -> Multiaddr {
    Multiaddr::empty()
        .with(a.ip().into())
        .with(Ma::Tcp(a.port()))
}

/// Opens TCP to the first address of `target` that answers.
pub(crate) async fn connect<R: Runtime>(rt: &R, target: Target) -> Result<R::Tcp, DialError> {
    let addrs = match target {
        Target::Ip(a) => vec![a],
        Target::Dns { host, port, family } => {
            let found = rt
                .resolve(host.clone(), port)
                .await
                .map_err(|e| DialError::Resolve {
                    host: host.clone(),
                    error: e.to_string(),
                })?;
            let found: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| family.is_none_or(|v4| a.is_ipv4() == v4))
                .collect();
            if found.is_empty() {
                return Err(DialError::Resolve {
                    host,
                    error: "no address of that family".into(),
                });
            }
            found
        }
    };
    let mut last = None;
    for a in addrs {
        match rt.connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                last = Some(DialError::Refused(a))
            }
            Err(e) => {
                last = Some(DialError::Connect {
                    addr: a,
                    error: e.to_string(),
                })
            }
        }
    }
    Err(last.expect("at least one address"))
}

/// Negotiates `proto` with multistream-select in `role`'s part: the dialer proposes, the
/// listener accepts.
async fn select<C>(io: C, proto: &'static str, role: Role) -> Result<Negotiated<C>, DialError>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let r = match role {
        Role::Dialer => dialer_select_proto(io, [proto], Version::V1).await,
        Role::Listener => listener_select_proto(io, [proto]).await,
    };
    r.map(|(_, io)| io).map_err(|e| negotiation(proto, e))
}

/// Negotiates `proto` and applies `up` in `role`'s part: what
/// `libp2p_core::upgrade::apply` does (not public in libp2p-core 0.44), once for both roles.
async fn apply<C, U, O, E>(
    io: C,
    up: U,
    proto: &'static str,
    role: Role,
    err: fn(E) -> DialError,
) -> Result<O, DialError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: UpgradeInfo<Info = &'static str>
        + InboundConnectionUpgrade<Negotiated<C>, Output = O, Error = E>
        + OutboundConnectionUpgrade<Negotiated<C>, Output = O, Error = E>,
{
    let io = select(io, proto, role).await?;
    match role {
        Role::Dialer => up.upgrade_outbound(io, proto).await,
        Role::Listener => up.upgrade_inbound(io, proto).await,
    }
    .map_err(err)
}

/// Security and muxer over a TCP stream, in either role: multistream-select `/noise`,
/// the noise handshake, multistream-select `/yamux/1.0.0`, yamux. Returns the
/// authenticated peer id and the muxer.
pub(crate) async fn upgrade<T>(
    tcp: T,
    key: &Keypair,
    role: Role,
) -> Result<(PeerId, Muxer<T>), DialError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let noise = libp2p_noise::Config::new(key).map_err(|e| DialError::Noise(e.to_string()))?;
    let (peer, io) = apply(tcp, noise, NOISE, role, |e| DialError::Noise(e.to_string())).await?;
    let muxer = apply(io, libp2p_yamux::Config::default(), YAMUX, role, |e| {
        DialError::Io(e.to_string())
    })
    .await?;
    Ok((peer, muxer))
}

/// The dialer's chat substream: `/echo/chat/2.0.0`, else `/echo-go/chat/1.0.0`.
pub(crate) fn negotiate_chat(
    s: libp2p_yamux::Stream,
) -> BoxFuture<'static, Result<(Protocol, Substream), DialError>> {
    async move {
        let (p, io) = dialer_select_proto(s, [CHAT, LEGACY], Version::V1)
            .await
            .map_err(|e| match e {
                NegotiationError::Failed => DialError::Unsupported(format!("{CHAT} or {LEGACY}")),
                e => negotiation("the chat protocol", e),
            })?;
        Ok((
            if p == CHAT {
                Protocol::Chat
            } else {
                Protocol::Legacy
            },
            io,
        ))
    }
    .boxed()
}

/// Opens a blob substream.
pub(crate) fn negotiate_blob(
    s: libp2p_yamux::Stream,
) -> BoxFuture<'static, Result<Substream, DialError>> {
    async move {
        dialer_select_proto(s, [BLOB], Version::V1)
            .await
            .map(|(_, io)| io)
            .map_err(|e| negotiation(BLOB, e))
    }
    .boxed()
}

/// What an inbound substream turned out to be.
pub(crate) enum Inbound {
    Chat(Protocol, Substream),
    Blob(Substream),
    Ping(Substream),
    Rejected,
}

/// Negotiates an inbound substream: ping always, the chat protocols if `chat`, the
/// blob protocol if `blob`.
pub(crate) fn negotiate_inbound(
    s: libp2p_yamux::Stream,
    chat: bool,
    blob: bool,
) -> BoxFuture<'static, Inbound> {
    async move {
        let mut protocols: Vec<&str> = vec![PING];
        if chat {
            protocols.extend([CHAT, LEGACY]);
        }
        if blob {
            protocols.push(BLOB);
        }
        match listener_select_proto(s, protocols).await {
            Ok((PING, io)) => Inbound::Ping(io),
            Ok((BLOB, io)) => Inbound::Blob(io),
            Ok((CHAT, io)) => Inbound::Chat(Protocol::Chat, io),
            Ok((_, io)) => Inbound::Chat(Protocol::Legacy, io),
            Err(_) => Inbound::Rejected,
        }
    }
    .boxed()
}

/// Answers libp2p pings on a substream: echoes each 32-byte payload until EOF.
pub(crate) fn ping_responder(mut s: Substream) -> BoxFuture<'static, ()> {
    async move {
        let mut buf = [0u8; 32];
        loop {
            if s.read_exact(&mut buf).await.is_err() {
                break;
            }
            if s.write_all(&buf).await.is_err() || s.flush().await.is_err() {
                break;
            }
        }
        let _ = s.close().await;
    }
    .boxed()
}
