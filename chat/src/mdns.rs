//! LAN discovery by mDNS, following the libp2p mDNS spec: queries for
//! `_p2p._udp.local PTR`; answers with `_p2p._udp.local PTR <random>._p2p._udp.local`
//! and, as additional records, one `TXT "dnsaddr=/ip4/…/tcp/…/p2p/<id>"` per address.
//! So echo nodes find each other, and other libp2p nodes (rust-libp2p, go-libp2p) that
//! run mDNS find them.
//!
//! Runtime-agnostic: one thread owns a UDP socket made with socket2 (0.0.0.0:5353,
//! `SO_REUSEADDR` + `SO_REUSEPORT`, member of 224.0.0.251 on each chosen interface) and
//! hands what it finds to a callback.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use echo_proto::{Multiaddr, PeerId};
use multiaddr::Protocol;
use simple_dns::rdata::{RData, PTR, TXT};
use simple_dns::{Name, Packet, PacketFlag, Question, ResourceRecord, CLASS, QTYPE, TYPE};

/// The DNS-SD service name of libp2p peers.
pub const SERVICE: &str = "_p2p._udp.local";
const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const PORT: u16 = 5353;
const TTL: u32 = 120;
/// Longest gap between our queries.
const MAX_QUERY_INTERVAL: Duration = Duration::from_secs(60);

/// A network interface mDNS runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    /// Its name (eth0).
    pub name: String,
    /// Its IPv4 address.
    pub addr: Ipv4Addr,
}

/// The IPv4 interfaces to run on: the one named, or every non-loopback one.
pub fn interfaces(only: Option<&str>) -> io::Result<Vec<Iface>> {
    let all = if_addrs::get_if_addrs()?;
    let v4 = all.into_iter().filter_map(|i| match i.addr {
        if_addrs::IfAddr::V4(ref a) => Some(Iface {
            name: i.name.clone(),
            addr: a.ip,
        }),
        _ => None,
    });
    match only {
        Some(name) => {
            let found: Vec<Iface> = v4.filter(|i| i.name == name).collect();
            if found.is_empty() {
                let names: Vec<String> = if_addrs::get_if_addrs()?
                    .into_iter()
                    .filter(|i| i.ip().is_ipv4())
                    .map(|i| i.name)
                    .collect();
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "no network interface {name:?} with an IPv4 address (have: {})",
                        names.join(", ")
                    ),
                ));
            }
            Ok(found)
        }
        None => Ok(v4.filter(|i| !i.addr.is_loopback()).collect()),
    }
}

/// A peer seen on the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// Its id.
    pub peer: PeerId,
    /// Its addresses, each ending in `/p2p/<peer>`.
    pub addrs: Vec<Multiaddr>,
}

/// The running responder/querier; dropping it stops the thread.
pub struct Mdns {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Mdns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Opens the socket on `ifaces` and starts answering for `own` (advertising `addrs`,
/// which must end in `/p2p/<own>`) and querying; `found` gets every peer seen.
pub fn start(
    own: PeerId,
    addrs: Vec<Multiaddr>,
    ifaces: Vec<Iface>,
    found: impl Fn(Discovered) + Send + 'static,
) -> io::Result<Mdns> {
    let socket = open_socket(&ifaces)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let instance = random_label();
    let thread = thread::Builder::new()
        .name("echo-chat-mdns".into())
        .spawn(move || {
            let mut r = Responder {
                socket,
                ifaces,
                own,
                instance,
                addrs,
                last_answer: None,
            };
            r.run(&stop2, found)
        })?;
    Ok(Mdns {
        stop,
        thread: Some(thread),
    })
}

fn open_socket(ifaces: &[Iface]) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol as SockProto, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(SockProto::UDP))?;
    s.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    s.set_reuse_port(true)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT)).into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind UDP port {PORT}: {e}")))?;
    s.set_multicast_loop_v4(true)?;
    s.set_multicast_ttl_v4(255)?;
    let mut joined = 0;
    for i in ifaces {
        match s.join_multicast_v4(&GROUP, &i.addr) {
            Ok(()) => joined += 1,
            Err(e) => tracing::warn!(iface = %i.name, error = %e, "mDNS: cannot join 224.0.0.251"),
        }
    }
    if joined == 0 {
        return Err(io::Error::other(
            "cannot join the mDNS group 224.0.0.251 on any interface",
        ));
    }
    if let Some(first) = ifaces.first() {
        s.set_multicast_if_v4(&first.addr)?;
    }
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(s.into())
}

fn random_label() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

struct Responder {
    socket: UdpSocket,
    ifaces: Vec<Iface>,
    own: PeerId,
    instance: String,
    addrs: Vec<Multiaddr>,
    last_answer: Option<Instant>,
}

impl Responder {
    fn run(&mut self, stop: &AtomicBool, found: impl Fn(Discovered)) {
        let mut next_query = Instant::now();
        let mut interval = Duration::from_secs(1);
        let mut seen: HashMap<PeerId, (Vec<Multiaddr>, Instant)> = HashMap::new();
        let mut buf = vec![0u8; 9000];
        // Announce ourselves once at start, so peers that are already up see us at once.
        self.answer(0);
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next_query {
                self.query();
                next_query = now + interval;
                interval = (interval * 2).min(MAX_QUERY_INTERVAL);
            }
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => match handle_packet(&buf[..n], &self.own) {
                    Some(Incoming::Query(id)) => self.answer(id),
                    Some(Incoming::Peers(peers)) => {
                        for d in peers {
                            // Report a peer again only when its addresses change or
                            // after a while (it may have dropped and come back).
                            let fresh = match seen.get(&d.peer) {
                                Some((a, at)) => {
                                    *a != d.addrs || at.elapsed() > Duration::from_secs(20)
                                }
                                None => true,
                            };
                            if fresh {
                                tracing::debug!(peer = %d.peer, %from, addrs = ?d.addrs, "mDNS: found");
                                seen.insert(d.peer, (d.addrs.clone(), Instant::now()));
                                found(d);
                            }
                        }
                    }
                    None => {}
                },
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "mDNS: receive failed");
                    thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    fn send(&self, bytes: &[u8]) {
        let to = SocketAddr::V4(SocketAddrV4::new(GROUP, PORT));
        let sock = socket2::SockRef::from(&self.socket);
        for i in &self.ifaces {
            if self.ifaces.len() > 1 {
                if let Err(e) = sock.set_multicast_if_v4(&i.addr) {
                    tracing::debug!(iface = %i.name, error = %e, "mDNS: set interface");
                    continue;
                }
            }
            if let Err(e) = self.socket.send_to(bytes, to) {
                tracing::debug!(iface = %i.name, error = %e, "mDNS: send failed");
            }
        }
    }

    fn query(&self) {
        match query_packet() {
            Ok(b) => self.send(&b),
            Err(e) => tracing::warn!(error = %e, "mDNS: cannot build query"),
        }
    }

    fn answer(&mut self, id: u16) {
        // Many queriers at once: one answer per 500 ms is enough for all of them.
        if self
            .last_answer
            .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
        {
            return;
        }
        self.last_answer = Some(Instant::now());
        match response_packet(id, &self.instance, &self.addrs) {
            Ok(b) => self.send(&b),
            Err(e) => tracing::warn!(error = %e, "mDNS: cannot build response"),
        }
    }
}

/// What a received packet means to us.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A query for libp2p peers (answer it; the id is the query's).
    Query(u16),
    /// A response naming these peers (never ourselves).
    Peers(Vec<Discovered>),
}

/// The query: `_p2p._udp.local PTR`.
pub fn query_packet() -> simple_dns::Result<Vec<u8>> {
    let mut p = Packet::new_query(0);
    p.questions.push(Question::new(
        Name::new_unchecked(SERVICE),
        TYPE::PTR.into(),
        CLASS::IN.into(),
        false,
    ));
    p.build_bytes_vec()
}

/// Our response: the PTR answer and one TXT `dnsaddr=` record per address.
pub fn response_packet(
    id: u16,
    instance: &str,
    addrs: &[Multiaddr],
) -> simple_dns::Result<Vec<u8>> {
    let full = format!("{instance}.{SERVICE}");
    let texts: Vec<String> = addrs.iter().map(|a| format!("dnsaddr={a}")).collect();
    let mut p = Packet::new_reply(id);
    p.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    p.answers.push(ResourceRecord::new(
        Name::new_unchecked(SERVICE),
        CLASS::IN,
        TTL,
        RData::PTR(PTR(Name::new_unchecked(&full))),
    ));
    for t in &texts {
        p.additional_records.push(ResourceRecord::new(
            Name::new_unchecked(&full),
            CLASS::IN,
            TTL,
            RData::TXT(TXT::new().with_string(t)?),
        ));
    }
    p.build_bytes_vec()
}

/// Parses a received packet.
pub fn handle_packet(bytes: &[u8], own: &PeerId) -> Option<Incoming> {
    let p = Packet::parse(bytes).ok()?;
    if !p.has_flags(PacketFlag::RESPONSE) {
        let asks = p.questions.iter().any(|q| {
            q.qname.to_string().eq_ignore_ascii_case(SERVICE)
                && matches!(q.qtype, QTYPE::TYPE(TYPE::PTR) | QTYPE::ANY)
        });
        return asks.then_some(Incoming::Query(p.id()));
    }
    let mut peers: Vec<Discovered> = Vec::new();
    for a in &p.answers {
        let RData::PTR(PTR(target)) = &a.rdata else {
            continue;
        };
        if !a.name.to_string().eq_ignore_ascii_case(SERVICE) {
            continue;
        }
        let target = target.to_string();
        for r in p.answers.iter().chain(&p.additional_records) {
            let RData::TXT(txt) = &r.rdata else { continue };
            if !r.name.to_string().eq_ignore_ascii_case(&target) {
                continue;
            }
            let Some(Some(value)) = txt.attributes().remove("dnsaddr") else {
                continue;
            };
            let Ok(addr) = value.parse::<Multiaddr>() else {
                continue;
            };
            let Some(Protocol::P2p(peer)) = addr.iter().last() else {
                continue;
            };
            if &peer == own {
                continue;
            }
            match peers.iter_mut().find(|d| d.peer == peer) {
                Some(d) => {
                    if !d.addrs.contains(&addr) {
                        d.addrs.push(addr)
                    }
                }
                None => peers.push(Discovered {
                    peer,
                    addrs: vec![addr],
                }),
            }
        }
    }
    (!peers.is_empty()).then_some(Incoming::Peers(peers))
}

/// What to advertise: each listen address, with an unspecified IP (0.0.0.0) replaced by
/// each interface's address; loopback addresses are left out unless mDNS runs on
/// loopback.
pub fn advertised(listen: &[Multiaddr], ifaces: &[Iface]) -> Vec<Multiaddr> {
    let mut out = Vec::new();
    for a in listen {
        let mut it = a.iter();
        match it.next() {
            Some(Protocol::Ip4(ip)) if ip.is_unspecified() => {
                let rest: Vec<Protocol> = it.collect();
                for i in ifaces {
                    let mut m = Multiaddr::empty().with(Protocol::Ip4(i.addr));
                    for p in &rest {
                        m.push(p.clone());
                    }
                    out.push(m);
                }
            }
            Some(Protocol::Ip4(ip))
                if ip.is_loopback() && !ifaces.iter().any(|i| i.addr.is_loopback()) => {}
            Some(Protocol::Ip4(_)) => out.push(a.clone()),
            _ => {}
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_response_round_trip() {
        let a = echo_proto::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let b = echo_proto::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let q = query_packet().unwrap();
        assert_eq!(handle_packet(&q, &a), Some(Incoming::Query(0)));
        let addrs: Vec<Multiaddr> = vec![
            format!("/ip4/10.0.0.1/tcp/8080/p2p/{a}").parse().unwrap(),
            format!("/ip4/10.0.0.2/tcp/8080/p2p/{a}").parse().unwrap(),
        ];
        let r = response_packet(7, &random_label(), &addrs).unwrap();
        assert_eq!(
            handle_packet(&r, &b),
            Some(Incoming::Peers(vec![Discovered {
                peer: a,
                addrs: addrs.clone()
            }]))
        );
        // Our own response is not a discovery.
        assert_eq!(handle_packet(&r, &a), None);
        // Garbage is ignored.
        assert_eq!(handle_packet(&[1, 2, 3], &a), None);
        assert_eq!(handle_packet(&r[..r.len() / 2], &b), None);
    }

    #[test]
    fn advertised_expands_unspecified() {
        let id = echo_proto::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let listen: Vec<Multiaddr> = vec![
            format!("/ip4/0.0.0.0/tcp/1/p2p/{id}").parse().unwrap(),
            format!("/ip4/127.0.0.1/tcp/2/p2p/{id}").parse().unwrap(),
        ];
        let ifaces = vec![Iface {
            name: "eth0".into(),
            addr: Ipv4Addr::new(192, 0, 2, 5),
        }];
        let got = advertised(&listen, &ifaces);
        let want: Multiaddr = format!("/ip4/192.0.2.5/tcp/1/p2p/{id}").parse().unwrap();
        assert_eq!(got, vec![want]);
    }
}
