//! Redials of the peers first reached through an address only the swarm dials (a
//! `/p2p-circuit` relay address, QUIC): the core redials the TCP addresses it knows, not
//! these, so when the last chat with such a peer ends (its relay restarted, the link
//! broke) the behaviour dials the same address again, with exponential backoff
//! ([`super::net::backoff`]), until a chat with the peer is up again or
//! [`MAX_REDIAL_FAILURES`] dials in a row failed. Bounded: at most [`MAX_REDIAL_PEERS`]
//! peers are remembered (later ones are not redialed).

use std::collections::BTreeMap;
use std::time::Instant;

use echo_proto::{Multiaddr, PeerId};

use super::net::backoff;

/// Peers remembered for redials, at most.
pub const MAX_REDIAL_PEERS: usize = 64;
/// Failed redials in a row after which a peer is forgotten.
pub const MAX_REDIAL_FAILURES: u32 = 12;

struct Entry {
    addr: Multiaddr,
    failures: u32,
    /// When to dial next, while the peer is away and no dial is in flight.
    at: Option<Instant>,
}

/// See the module docs.
#[derive(Default)]
pub(super) struct Redials {
    peers: BTreeMap<PeerId, Entry>,
}

impl Redials {
    /// A chat with `peer` came up on a connection we dialed at `addr`, an address only
    /// the swarm dials: remembered (if there is room).
    pub fn remember(&mut self, peer: PeerId, addr: Multiaddr) {
        if self.peers.len() >= MAX_REDIAL_PEERS && !self.peers.contains_key(&peer) {
            return;
        }
        let e = Entry {
            addr,
            failures: 0,
            at: None,
        };
        self.peers.insert(peer, e);
    }

    /// A chat with `peer` is up (however it came): no redial is due.
    pub fn up(&mut self, peer: &PeerId) {
        if let Some(e) = self.peers.get_mut(peer) {
            e.failures = 0;
            e.at = None;
        }
    }

    /// The last chat with `peer` ended: a redial is due after the backoff.
    pub fn down(&mut self, peer: &PeerId, now: Instant) {
        if let Some(e) = self.peers.get_mut(peer) {
            e.at = Some(now + backoff(e.failures + 1));
        }
    }

    /// A redial of `peer` failed: again later, or forgotten after too many.
    pub fn failed(&mut self, peer: &PeerId, now: Instant) {
        let Some(e) = self.peers.get_mut(peer) else {
            return;
        };
        e.failures += 1;
        if e.failures >= MAX_REDIAL_FAILURES {
            self.peers.remove(peer);
        } else {
            e.at = Some(now + backoff(e.failures + 1));
        }
    }

    /// The redials due at `now` (each then waits for its outcome).
    pub fn due(&mut self, now: Instant) -> Vec<(PeerId, Multiaddr)> {
        let mut out = Vec::new();
        for (p, e) in self.peers.iter_mut() {
            if e.at.is_some_and(|at| at <= now) {
                e.at = None;
                out.push((*p, e.addr.clone()));
            }
        }
        out
    }

    /// When the next redial is due.
    pub fn next(&self) -> Option<Instant> {
        self.peers.values().filter_map(|e| e.at).min()
    }

    /// Peers remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn peer(i: u8) -> PeerId {
        echo_proto::Identity::from_secret_bytes([i; 32]).peer_id()
    }

    #[test]
    fn redials_back_off_stop_when_up_and_give_up() {
        let (p, t0) = (peer(1), Instant::now());
        let addr: Multiaddr = "/ip4/10.0.0.1/tcp/1/p2p-circuit".parse().unwrap();
        let mut r = Redials::default();
        r.down(&p, t0);
        assert_eq!(r.next(), None, "unknown peers are not redialed");
        r.remember(p, addr.clone());
        r.down(&p, t0);
        assert_eq!(r.next(), Some(t0 + backoff(1)));
        assert!(r.due(t0).is_empty());
        assert_eq!(r.due(t0 + backoff(1)), vec![(p, addr.clone())]);
        assert_eq!(r.next(), None, "one dial at a time");
        r.failed(&p, t0);
        assert_eq!(r.next(), Some(t0 + backoff(2)));
        r.up(&p);
        assert_eq!(r.next(), None);
        for _ in 0..MAX_REDIAL_FAILURES {
            r.failed(&p, t0);
        }
        assert_eq!((r.len(), r.next()), (0, None), "forgotten");
        assert!(backoff(MAX_REDIAL_FAILURES) <= Duration::from_secs(60));
    }

    #[test]
    fn remembered_peers_are_bounded() {
        let mut r = Redials::default();
        let addr: Multiaddr = "/ip4/10.0.0.1/udp/1/quic-v1".parse().unwrap();
        for i in 0..=255u8 {
            r.remember(peer(i), addr.clone());
        }
        assert_eq!(r.len(), MAX_REDIAL_PEERS);
    }
}
