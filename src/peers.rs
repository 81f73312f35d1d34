//! Who we know, how to reach them, and which connection to a peer survives.
//!
//! * **One connection per peer.** When two connections to the same peer complete their
//!   handshakes, both sides keep the one with the larger [`conn_key`]: the connection
//!   dialed by the lower peer id wins; between two dialed by the same side, the larger
//!   dialer nonce wins. Both ends compute the same key from the two hellos, so they
//!   close the same loser.
//! * **Redial with backoff.** A peer that drops is redialed at its known addresses after
//!   `backoff_initial · 2^attempts` (capped at `backoff_max`, jittered to 50–100 %).
//! * **Peer exchange.** Neighbours' addresses arrive in `Peers` frames and fill the
//!   address book (capped); learned peers are dialed while below `max_peers`, the lower
//!   peer id first so that mutual discovery rarely races.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol as MaProto};

use crate::event::{ConnId, DialId, Protocol, Role};

/// Tie-break key of a connection between `local` and `remote`: larger wins.
pub fn conn_key(
    local: &PeerId,
    remote: &PeerId,
    role: Role,
    my_nonce: u64,
    their_nonce: u64,
) -> (bool, u64) {
    let (dialer, nonce) = match role {
        Role::Dialer => (local, my_nonce),
        Role::Listener => (remote, their_nonce),
    };
    (dialer == local.min(remote), nonce)
}

/// State of one peer, connected or not.
#[derive(Debug)]
pub(crate) struct Peer {
    /// Connection in use, once a handshake completed.
    pub active: Option<ConnId>,
    /// Whether `PeerUp` was reported (and `PeerDown` is owed).
    pub up: bool,
    pub protocol: Protocol,
    pub name: String,
    pub rooms: Vec<String>,
    pub rtt: Option<Duration>,
    /// Known listen addresses (without `/p2p/`), newest last.
    pub addrs: Vec<Multiaddr>,
    /// Of `addrs`, those learned from the network (a hello, peer exchange) and not yet
    /// confirmed by a connection we dialed: dialed at a limited rate, never persisted,
    /// forgotten `learned_addr_ttl` after the peer was last seen.
    pub unconfirmed: BTreeSet<Multiaddr>,
    /// When the peer was last connected or learned (eviction and address expiry).
    pub last_seen: Option<Instant>,
    /// We had a chat session with this peer (keep redialing it).
    pub ever_connected: bool,
    /// Backoff steps since the last successful connection (the redial delay's exponent;
    /// a goodbye or refusal jumps it ahead).
    pub attempts: u32,
    /// Dials since the last successful connection that reached nothing; a peer never
    /// connected is forgotten after `max_dial_attempts_unconnected` of them. A peer that
    /// answers (even to refuse) resets it: it is there.
    pub failures: u32,
    pub next_dial: Option<Instant>,
    pub dialing: Option<DialId>,
    /// Frames that were queued on a connection the remote closed as a duplicate, for the
    /// next connection to this peer.
    pub stash: BytesMut,
    pub stash_until: Option<Instant>,
    /// The direct-message prekey its last hello carried (verified), used until its
    /// profile arrives.
    pub prekey: Option<[u8; 32]>,
}

impl Peer {
    pub fn new() -> Self {
        Peer {
            active: None,
            up: false,
            protocol: Protocol::Chat,
            name: String::new(),
            rooms: Vec::new(),
            rtt: None,
            addrs: Vec::new(),
            unconfirmed: BTreeSet::new(),
            last_seen: None,
            ever_connected: false,
            attempts: 0,
            failures: 0,
            next_dial: None,
            dialing: None,
            stash: BytesMut::new(),
            stash_until: None,
            prekey: None,
        }
    }

    /// Remembers an address (deduplicated, capped, newest kept). `confirmed`: chosen by
    /// the user, persisted, or one we dialed successfully; otherwise it was learned from
    /// the network (and a confirmed address stays confirmed).
    pub fn add_addr(&mut self, addr: Multiaddr, max: usize, confirmed: bool) {
        let known = if let Some(i) = self.addrs.iter().position(|a| *a == addr) {
            self.addrs.remove(i);
            true
        } else {
            false
        };
        if confirmed {
            self.unconfirmed.remove(&addr);
        } else if !known {
            self.unconfirmed.insert(addr.clone());
        }
        self.addrs.push(addr);
        while self.addrs.len() > max.max(1) {
            let old = self.addrs.remove(0);
            self.unconfirmed.remove(&old);
        }
    }

    /// Forgets every address learned from the network and never confirmed.
    pub fn drop_unconfirmed(&mut self) {
        let gone = std::mem::take(&mut self.unconfirmed);
        self.addrs.retain(|a| !gone.contains(a));
    }

    /// Addresses confirmed by a connection or chosen by the user, newest last.
    pub fn confirmed_addrs(&self) -> impl DoubleEndedIterator<Item = &Multiaddr> {
        self.addrs.iter().filter(|a| !self.unconfirmed.contains(*a))
    }

    /// Address for the next attempt, rotating through what is known.
    pub fn dial_addr(&self) -> Option<&Multiaddr> {
        if self.addrs.is_empty() {
            return None;
        }
        // Newest first, then older ones on later attempts.
        let i = self.addrs.len() - 1 - (self.attempts as usize % self.addrs.len());
        self.addrs.get(i)
    }

    pub fn in_room(&self, room: &str) -> bool {
        self.rooms.iter().any(|r| r == room)
    }
}

/// Delay before redial attempt `attempts` (0-based), with `jitter` in `[0.5, 1.0]`.
pub fn backoff(initial: Duration, max: Duration, attempts: u32, jitter: f64) -> Duration {
    let base = initial.saturating_mul(1u32 << attempts.min(20)).min(max);
    base.mul_f64(jitter.clamp(0.5, 1.0))
}

/// Strips a trailing `/p2p/<id>` and returns it.
pub fn split_p2p(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut a = addr.clone();
    match a.iter().last() {
        Some(MaProto::P2p(id)) => {
            a.pop();
            (a, Some(id))
        }
        _ => (a, None),
    }
}

/// Whether an address names something a runtime can dial (an IP or DNS host, then TCP).
pub fn is_dialable(addr: &Multiaddr) -> Result<(), String> {
    let mut it = addr.iter();
    match it.next() {
        Some(MaProto::Ip4(_) | MaProto::Ip6(_) | MaProto::Dns(_))
        | Some(MaProto::Dns4(_) | MaProto::Dns6(_)) => {}
        Some(p) => return Err(format!("starts with {p}, expected /ip4, /ip6 or /dns")),
        None => return Err("empty address".into()),
    }
    match it.next() {
        Some(MaProto::Tcp(0)) => Err("port 0 cannot be dialed".into()),
        Some(MaProto::Tcp(_)) => Ok(()),
        Some(p) => Err(format!("expected /tcp/<port> after the host, found {p}")),
        None => Err("missing /tcp/<port>".into()),
    }
}

/// Replaces an unspecified IP (`0.0.0.0`, `::`) in a peer's listen address by the IP we
/// observed it connecting from; other addresses are returned unchanged.
pub fn fix_unspecified(listen: &Multiaddr, observed: &Multiaddr) -> Multiaddr {
    let obs_ip = observed
        .iter()
        .find(|p| matches!(p, MaProto::Ip4(_) | MaProto::Ip6(_)));
    listen
        .iter()
        .map(|p| match (&p, &obs_ip) {
            (MaProto::Ip4(ip), Some(o)) if ip.is_unspecified() => o.clone(),
            (MaProto::Ip6(ip), Some(o)) if ip.is_unspecified() => o.clone(),
            _ => p,
        })
        .collect()
}

/// The address book: every peer we know, connected or not, by id, with its timer.
pub(crate) type PeerBook = crate::timers::TimedMap<PeerId, Peer>;

/// A peer's timer: its next redial or stash expiry, whichever is first.
impl crate::timers::Timed for Peer {
    type Ctx = ();
    fn timer(&self, _: &()) -> Option<Instant> {
        self.next_dial.into_iter().chain(self.stash_until).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_on_the_winner() {
        let a = crate::message::test_key().public().to_peer_id();
        let b = crate::message::test_key().public().to_peer_id();
        // c1 dialed by a (nonce 7), c2 dialed by b (nonce 3).
        let a_c1 = conn_key(&a, &b, Role::Dialer, 7, 99);
        let a_c2 = conn_key(&a, &b, Role::Listener, 11, 3);
        let b_c1 = conn_key(&b, &a, Role::Listener, 5, 7);
        let b_c2 = conn_key(&b, &a, Role::Dialer, 3, 11);
        assert_eq!(a_c1 > a_c2, b_c1 > b_c2);
        // The winner is the connection dialed by the lower id.
        assert_eq!(a_c1 > a_c2, a < b);
        // Same dialer: the larger dialer nonce wins on both sides.
        let a_x = conn_key(&a, &b, Role::Dialer, 1, 50);
        let a_y = conn_key(&a, &b, Role::Dialer, 2, 60);
        let b_x = conn_key(&b, &a, Role::Listener, 70, 1);
        let b_y = conn_key(&b, &a, Role::Listener, 80, 2);
        assert_eq!(a_x < a_y, b_x < b_y);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let i = Duration::from_millis(500);
        let m = Duration::from_secs(60);
        assert_eq!(backoff(i, m, 0, 1.0), i);
        assert_eq!(backoff(i, m, 3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(i, m, 30, 1.0), m);
        assert_eq!(backoff(i, m, 1, 0.5), i);
    }

    #[test]
    fn address_helpers() {
        let id = crate::message::test_key().public().to_peer_id();
        let a: Multiaddr = format!("/ip4/10.0.0.1/tcp/80/p2p/{id}").parse().unwrap();
        let (bare, p) = split_p2p(&a);
        assert_eq!(p, Some(id));
        assert_eq!(bare.to_string(), "/ip4/10.0.0.1/tcp/80");
        assert!(is_dialable(&bare).is_ok());
        assert!(is_dialable(&"/ip4/1.2.3.4/udp/5".parse().unwrap()).is_err());
        assert!(is_dialable(&"/tcp/5".parse().unwrap()).is_err());
        let l: Multiaddr = "/ip4/0.0.0.0/tcp/9000".parse().unwrap();
        let o: Multiaddr = "/ip4/127.0.0.5/tcp/53211".parse().unwrap();
        assert_eq!(
            fix_unspecified(&l, &o).to_string(),
            "/ip4/127.0.0.5/tcp/9000"
        );
    }
}
