//! The ready-made tokio swarm: TCP and QUIC on the same port, noise + yamux, identify,
//! ping, connection limits, relay client (reservations kept by [`super::net`]), DCUtR,
//! AutoNAT (v1) and optionally a relay server, with echo, run on its own task.

use std::collections::HashMap;
use std::time::Duration;

use echo_proto::Multiaddr;
use futures::StreamExt;
use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::swarm::SwarmEvent;
use libp2p::{autonat, dcutr, identify, noise, ping, relay, tcp, yamux, Swarm, SwarmBuilder};
use multiaddr::Protocol as Ma;

use super::EchoBehaviour;
use crate::{Events, Handle, Options, StartError};

pub use derived::{Behaviour, BehaviourEvent};

mod derived {
    // The derive's event enum (`BehaviourEvent`: one variant per behaviour) has no docs.
    #![allow(missing_docs)]
    use libp2p::swarm::behaviour::toggle::Toggle;
    use libp2p::swarm::NetworkBehaviour;
    use libp2p::{autonat, connection_limits, dcutr, identify, ping, relay};

    use super::EchoBehaviour;

    /// The behaviours of the swarm [`super::start`] builds.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        /// Caps on connections (see [`super::SwarmOptions`]); first, so that a
        /// connection over a cap is refused before the others see it.
        pub limits: connection_limits::Behaviour,
        /// echo.
        pub echo: EchoBehaviour,
        /// Identify (`/echo/1.0.0` as protocol version): tells peers our protocols and
        /// listen addresses and what address we were seen at.
        pub identify: identify::Behaviour,
        /// Ping on every connection.
        pub ping: ping::Behaviour,
        /// Circuit relay v2 client: reservations on [`super::SwarmOptions::relays`],
        /// dials through `/p2p-circuit` addresses.
        pub relay_client: relay::client::Behaviour,
        /// Hole punching: upgrades relayed connections to direct ones.
        pub dcutr: dcutr::Behaviour,
        /// AutoNAT v1 (client and server): probes whether our observed addresses are
        /// reachable ([`crate::Addresses::nat`]) and answers others' probes.
        pub autonat: autonat::Behaviour,
        /// Circuit relay v2 server with rust-libp2p's default limits, when
        /// [`super::SwarmOptions::relay_server`] is set.
        pub relay_server: Toggle<relay::Behaviour>,
    }
}

/// The protocol version identify announces.
pub const IDENTIFY_VERSION: &str = "/echo/1.0.0";

/// Swarm settings beyond [`Options`].
#[derive(Debug, Clone)]
pub struct SwarmOptions {
    /// The node, its listen addresses and the driver's settings. Listen addresses are
    /// `/ip4|ip6/<ip>/tcp/<port>` or `/ip4|ip6/<ip>/udp/<port>/quic-v1`.
    pub options: Options,
    /// Listen on QUIC too, on the UDP port of each TCP listen address (default true).
    pub quic: bool,
    /// How long a connection no behaviour needs stays open (default 60 s).
    pub idle_timeout: Duration,
    /// Inbound connections established at once (default 256); more are closed at once.
    /// Inbound connections in set-up are capped by
    /// [`crate::DriverConfig::max_pending_handshakes`].
    pub max_incoming: u32,
    /// Connections with one peer at once, both ways (default 8).
    pub max_per_peer: u32,
    /// Relays to reserve a slot on (`…/p2p/<relay id>`, at most
    /// [`super::MAX_RELAYS`]): [`start`] returns once each reservation is accepted
    /// (and identify ran with the relay, or 2 s passed), and [`Handle::listen_addrs`] then
    /// lists the `…/p2p-circuit/p2p/<own id>` addresses peers dial to reach this node
    /// through them. A reservation that is lost later is asked again with exponential
    /// backoff ([`crate::RuntimeEvent::RelayLost`], then
    /// [`crate::RuntimeEvent::RelayReserved`]).
    pub relays: Vec<String>,
    /// Serve as a circuit relay v2 for others, with rust-libp2p's default limits
    /// (reservations, circuits, 2 min and 128 KiB per circuit). The listen addresses are
    /// then taken as the node's public addresses: set it on a publicly reachable node
    /// only (default false).
    pub relay_server: bool,
}

impl SwarmOptions {
    /// A node with a fresh identity, listening on `listen` (TCP and QUIC on each port).
    pub fn new<S: Into<String>>(listen: impl IntoIterator<Item = S>) -> Self {
        Options::new(listen).into()
    }
}

impl From<Options> for SwarmOptions {
    fn from(options: Options) -> Self {
        SwarmOptions {
            options,
            quic: true,
            idle_timeout: Duration::from_secs(60),
            max_incoming: 256,
            max_per_peer: 8,
            relays: Vec::new(),
            relay_server: false,
        }
    }
}

fn listen_addr(s: &str) -> Result<Multiaddr, StartError> {
    let bad = |reason: String| StartError::InvalidListenAddr {
        addr: s.to_string(),
        reason,
    };
    let ma: Multiaddr = s.trim().parse().map_err(|e| bad(format!("{e}")))?;
    let ok = match ma.iter().nth(1) {
        Some(Ma::Tcp(_)) => ma.iter().count() == 2,
        Some(Ma::Udp(_)) => ma.iter().nth(2) == Some(Ma::QuicV1) && ma.iter().count() == 3,
        _ => false,
    };
    if !ok || !matches!(ma.iter().next(), Some(Ma::Ip4(_) | Ma::Ip6(_))) {
        return Err(bad(
            "expected /ip4|ip6/<ip>/tcp/<port> or /ip4|ip6/<ip>/udp/<port>/quic-v1".into(),
        ));
    }
    Ok(ma)
}

/// Builds the swarm for `options` (within a tokio runtime), with echo's handle and
/// events. Nothing listens yet.
pub fn build(options: SwarmOptions) -> Result<(Swarm<Behaviour>, Handle, Events), StartError> {
    let SwarmOptions {
        options,
        idle_timeout,
        max_incoming,
        max_per_peer,
        relay_server,
        ..
    } = options;
    let driver = options.driver.clone();
    let key = options.identity.keypair();
    let ping_interval = options.config.ping_interval;
    let (echo, handle, events) = EchoBehaviour::from_options(options)?;
    let limits = ConnectionLimits::default()
        .with_max_pending_incoming(Some(cap(driver.max_pending_handshakes)))
        .with_max_established_incoming(Some(max_incoming))
        .with_max_established_per_peer(Some(max_per_peer));
    let mut slot = Some(echo);
    let swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| StartError::Swarm(e.to_string()))?
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| StartError::Swarm(e.to_string()))?
        .with_behaviour(|key, relay_client| Behaviour {
            relay_client,
            autonat: autonat::Behaviour::new(key.public().to_peer_id(), Default::default()),
            relay_server: relay_server
                .then(|| relay::Behaviour::new(key.public().to_peer_id(), Default::default()))
                .into(),
            dcutr: dcutr::Behaviour::new(key.public().to_peer_id()),
            limits: connection_limits::Behaviour::new(limits),
            echo: slot.take().expect("built once"),
            identify: identify::Behaviour::new(identify::Config::new(
                IDENTIFY_VERSION.to_string(),
                key.public(),
            )),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(ping_interval)),
        })
        .map_err(|e| StartError::Swarm(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
        .build();
    Ok((swarm, handle, events))
}

/// Starts a node in a ready-made swarm on the current tokio runtime: listens (TCP, and
/// QUIC on the same ports), then runs the swarm on its own task until the node stops.
/// Returns like [`crate::tokio::start`]; [`Handle::listen_addrs`] lists the TCP
/// addresses first, then the QUIC ones.
pub async fn start(options: impl Into<SwarmOptions>) -> Result<(Handle, Events), StartError> {
    let options = options.into();
    let listen: Vec<Multiaddr> = options
        .options
        .listen
        .iter()
        .map(|s| listen_addr(s))
        .collect::<Result<_, _>>()?;
    let relays: Vec<Multiaddr> = options
        .relays
        .iter()
        .map(|s| relay_addr(s))
        .collect::<Result<_, _>>()?;
    if relays.len() > super::net::MAX_RELAYS {
        return Err(StartError::Swarm(format!(
            "at most {} relays",
            super::net::MAX_RELAYS
        )));
    }
    let (quic, relay_server) = (options.quic, options.relay_server);
    let (mut swarm, handle, events) = build(options)?;
    // Listeners not yet up, with the address asked for.
    let mut waiting = HashMap::new();
    for a in &listen {
        let id = swarm
            .listen_on(a.clone())
            .map_err(|e| bind_error(a, chain(&e)))?;
        waiting.insert(id, a.clone());
    }
    let mut tcp: Vec<Multiaddr> = Vec::new();
    let mut udp: Vec<Multiaddr> = Vec::new();
    while !waiting.is_empty() {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                // QUIC on the IP asked for and the port the TCP listener got (on a
                // wildcard IP, every interface reports the same port).
                let port = address.iter().find_map(|p| match p {
                    Ma::Tcp(port) => Some(port),
                    _ => None,
                });
                if let (Some(asked), Some(port), true) = (waiting.remove(&listener_id), port, quic)
                {
                    let q: Multiaddr = asked
                        .iter()
                        .map(|p| match p {
                            Ma::Tcp(_) => Ma::Udp(port),
                            p => p,
                        })
                        .chain([Ma::QuicV1])
                        .collect();
                    if !listen.contains(&q) {
                        let id = swarm
                            .listen_on(q.clone())
                            .map_err(|e| bind_error(&q, chain(&e)))?;
                        waiting.insert(id, q);
                    }
                }
                let is_tcp = address.iter().any(|p| matches!(p, Ma::Tcp(_)));
                let list = if is_tcp { &mut tcp } else { &mut udp };
                if !list.contains(&address) {
                    list.push(address);
                }
            }
            SwarmEvent::ListenerError { error, .. } => {
                return Err(StartError::Swarm(chain(&error)));
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                let why = match reason {
                    Err(e) => chain(&e),
                    Ok(()) => "listener closed".to_string(),
                };
                let a = addresses.first().cloned().unwrap_or_else(Multiaddr::empty);
                return Err(bind_error(&a, why));
            }
            _ => {}
        }
    }
    let peer = handle.peer_id();
    if relay_server {
        // A relay offers reservations only from a confirmed external address.
        for a in tcp.iter().chain(&udp) {
            swarm.add_external_address(a.clone());
        }
    }
    // Reservations, once our own listeners are up (the relay then sees the port we
    // listen on), kept by the watch on the swarm's task.
    let mut watch = super::net::Watch::new(peer, handle.net());
    for r in relays {
        watch.reserve(&mut swarm, r).map_err(StartError::Swarm)?;
    }
    // Until every reservation is accepted; and, for 2 s at most, until identify ran with
    // every relay (DCUtR offers only the addresses known when a circuit opens).
    let identify_by = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let (reserved, identified) = watch.settled();
        if reserved && (identified || tokio::time::Instant::now() >= identify_by) {
            break;
        }
        let e = if reserved {
            match tokio::time::timeout_at(identify_by, swarm.select_next_some()).await {
                Ok(e) => e,
                Err(_) => continue,
            }
        } else {
            swarm.select_next_some().await
        };
        if let SwarmEvent::ListenerClosed {
            listener_id,
            reason,
            ..
        } = &e
        {
            if let Some(a) = watch.relay_of(*listener_id) {
                let why = match reason {
                    Err(e) => e.to_string(),
                    Ok(()) => "closed".to_string(),
                };
                return Err(StartError::Swarm(format!(
                    "reservation on {a} failed: {why}"
                )));
            }
        }
        watch.on_event(&mut swarm, &e);
    }
    let circuits = watch.circuits();
    let addrs = tcp
        .into_iter()
        .chain(udp)
        .chain(circuits)
        .map(|a| match a.iter().last() {
            Some(Ma::P2p(_)) => a,
            _ => a.with(Ma::P2p(peer)),
        })
        .collect();
    let _ = handle.0.listen_addrs.set(addrs);
    let stopped = handle.0.stopped.clone();
    tokio::spawn(async move {
        let mut stopped = std::pin::pin!(stopped);
        loop {
            let retry = watch.next_retry();
            let backoff = async move {
                match retry {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                e = swarm.select_next_some() => watch.on_event(&mut swarm, &e),
                _ = backoff => watch.retry(&mut swarm, std::time::Instant::now()),
                _ = &mut stopped => break,
            }
        }
    });
    Ok((handle, events))
}

/// A relay's address: dialable, ending in `/p2p/<relay id>`.
fn relay_addr(s: &str) -> Result<Multiaddr, StartError> {
    let bad = |reason: String| StartError::InvalidListenAddr {
        addr: s.to_string(),
        reason,
    };
    let ma: Multiaddr = s.trim().parse().map_err(|e| bad(format!("{e}")))?;
    match ma.iter().last() {
        Some(Ma::P2p(_)) => Ok(ma),
        _ => Err(bad("a relay address ends in /p2p/<relay id>".into())),
    }
}

fn cap(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// An error with its sources, `: `-separated (a transport's own text may be empty).
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(s) = next {
        parts.push(s.to_string());
        next = s.source();
    }
    parts.retain(|p| !p.is_empty());
    parts.dedup();
    parts.join(": ")
}

fn bind_error(a: &Multiaddr, error: String) -> StartError {
    if error.contains("in use") {
        if let Some(addr) = socket(a) {
            return StartError::AddrInUse { addr };
        }
    }
    StartError::Swarm(format!("cannot listen on {a}: {error}"))
}

fn socket(a: &Multiaddr) -> Option<std::net::SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for p in a.iter() {
        match p {
            Ma::Ip4(v) => ip = Some(v.into()),
            Ma::Ip6(v) => ip = Some(v.into()),
            Ma::Tcp(p) | Ma::Udp(p) => port = Some(p),
            _ => {}
        }
    }
    Some(std::net::SocketAddr::new(ip?, port?))
}
