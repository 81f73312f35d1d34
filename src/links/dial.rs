//! The address book side: peer exchange, dialing, redial with backoff.

use std::time::{Duration, Instant};

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use rand::Rng;

use super::{AddrSource, Links, Out};
use crate::event::{Action, ConnId, DialId, Protocol};
use crate::node::Stats;
use crate::peers::{self, Peer};
use crate::wire::{self, Frame, Kind};

impl Links {
    /// Peer exchange: tell `peer` about our other neighbours and them about `peer`.
    pub(super) fn exchange_peers(&mut self, peer: PeerId, now: Instant, out: &mut Out) {
        let record = |id: &PeerId, p: &Peer| wire::PeerRecord {
            peer_id: id.to_bytes(),
            addrs: p.addrs.iter().map(|a| a.to_vec()).collect(),
        };
        let others: Vec<wire::PeerRecord> = self
            .peers
            .iter()
            .filter(|(id, p)| **id != peer && p.up && p.protocol == Protocol::Chat)
            .filter(|(_, p)| !p.addrs.is_empty())
            .take(self.config.max_exchange_peers)
            .map(|(id, p)| record(id, p))
            .collect();
        if let Some(conn) = self.peers.get(&peer).and_then(|p| p.active) {
            if !others.is_empty() {
                let f = Frame::new(Kind::Peers(wire::PeerList { peers: others }));
                self.send_frame(conn, &f, now, out);
            }
        }
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        if p.addrs.is_empty() {
            return;
        }
        let f = Frame::new(Kind::Peers(wire::PeerList {
            peers: vec![record(&peer, p)],
        }));
        let targets: Vec<ConnId> = self
            .peers
            .iter()
            .filter(|(id, p)| **id != peer && p.up && p.protocol == Protocol::Chat)
            .filter_map(|(_, p)| p.active)
            .collect();
        let wire = f.to_wire();
        for t in targets {
            self.send_bytes(t, &wire, now, out);
        }
    }

    /// A neighbour's peer list arrived.
    pub fn on_peers(&mut self, list: wire::PeerList, now: Instant) {
        let max_addrs = self.config.max_addrs_per_peer;
        for rec in list.peers.into_iter().take(self.config.max_exchange_peers) {
            let Ok(id) = PeerId::from_bytes(&rec.peer_id) else {
                continue;
            };
            if id == self.id {
                continue;
            }
            if !self.peers.contains_key(&id) && self.peers.len() >= self.config.max_known_peers {
                continue;
            }
            let addrs: Vec<Multiaddr> = rec
                .addrs
                .into_iter()
                .take(max_addrs)
                .filter_map(|a| Multiaddr::try_from(a).ok())
                .map(|a| peers::split_p2p(&a).0)
                .filter(|a| peers::is_dialable(a).is_ok())
                .collect();
            if addrs.is_empty() {
                continue;
            }
            let me = self.id;
            let connected = self.connected();
            let p = self.peers.get_or_insert_with(id, Peer::new);
            for a in addrs {
                p.add_addr(a, max_addrs, false);
            }
            if p.last_seen.is_none() {
                p.last_seen = Some(now);
            }
            let idle = !p.up && p.dialing.is_none() && p.next_dial.is_none();
            let want = self.config.target_peers.min(self.config.max_peers);
            if idle && self.config.auto_connect && connected < want {
                // The lower id dials at once; the other waits so mutual discovery
                // rarely produces two connections.
                let delay = if me < id {
                    Duration::ZERO
                } else {
                    self.config.backoff_initial * 4
                };
                p.next_dial = Some(now + delay);
            }
        }
    }

    /// A user-chosen address: remembered (if it names a peer) and dialed now.
    pub fn connect(
        &mut self,
        bare: Multiaddr,
        ma: Multiaddr,
        peer: Option<PeerId>,
        now: Instant,
        out: &mut Out,
    ) -> DialId {
        if let Some(peer) = peer {
            let max = self.config.max_addrs_per_peer;
            let p = self.entry(peer, now, out.stats);
            p.add_addr(bare, max, true);
            p.ever_connected = true; // chosen by the user: keep trying
        }
        self.dial(ma, peer)
    }

    /// Addresses for `peer` from the app (mDNS, a directory, its store): remembered and,
    /// if the peer is not connected, not being dialed and not waiting for a backoff,
    /// dialed now. Later calls never dial faster than the redial backoff. Returns how
    /// many addresses were taken.
    pub fn handle_addresses(
        &mut self,
        peer: PeerId,
        addrs: &[Multiaddr],
        source: AddrSource,
        now: Instant,
        out: &mut Out,
    ) -> usize {
        if peer == self.id || self.shut_down {
            return 0;
        }
        let good: Vec<Multiaddr> = addrs
            .iter()
            .map(peers::split_p2p)
            .filter(|(a, id)| id.is_none_or(|id| id == peer) && peers::is_dialable(a).is_ok())
            .map(|(a, _)| a)
            .take(self.config.max_addrs_per_peer)
            .collect();
        if good.is_empty() {
            return 0;
        }
        let max = self.config.max_addrs_per_peer;
        let trusted = source == AddrSource::Trusted;
        let p = self.entry(peer, now, out.stats);
        for a in &good {
            p.add_addr(a.clone(), max, trusted);
        }
        if trusted {
            p.ever_connected = true;
        }
        let idle = !p.up && p.dialing.is_none() && p.next_dial.is_none();
        if idle && !self.conns.values().any(|c| c.peer == peer) {
            self.redial(peer, now, out.stats);
        }
        good.len()
    }

    /// A persisted peer address: added to the book and dialed soon.
    pub fn remember_peer(&mut self, addr: &Multiaddr, now: Instant, out: &mut Out) {
        let (bare, Some(peer)) = peers::split_p2p(addr) else {
            return;
        };
        if peer == self.id || peers::is_dialable(&bare).is_err() {
            return;
        }
        let max = self.config.max_addrs_per_peer;
        let p = self.entry(peer, now, out.stats);
        p.add_addr(bare, max, true);
        p.ever_connected = true;
        p.next_dial = Some(now);
    }

    /// Dials learned peers while fewer than `target_peers` are connected.
    pub(super) fn top_up(&mut self, now: Instant) {
        if !self.config.auto_connect {
            return;
        }
        let connected = self.connected();
        let want = self.config.target_peers.min(self.config.max_peers);
        if connected >= want {
            return;
        }
        let me = self.id;
        let delay = self.config.backoff_initial * 4;
        let idle: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.up && p.dialing.is_none() && p.next_dial.is_none())
            .filter(|(_, p)| !p.addrs.is_empty() && p.protocol == Protocol::Chat)
            .map(|(id, _)| *id)
            .take(want - connected)
            .collect();
        for id in idle {
            if let Some(p) = self.peers.get_mut(&id) {
                // Lower id first, as for fresh peer exchange.
                p.next_dial = Some(if me < id { now } else { now + delay });
            }
        }
    }

    pub(super) fn dial(&mut self, addr: Multiaddr, peer: Option<PeerId>) -> DialId {
        let dial = DialId(self.next_dial);
        self.next_dial += 1;
        let addr = match (peer, peers::split_p2p(&addr).1) {
            (Some(p), None) => addr.with(multiaddr::Protocol::P2p(p)),
            _ => addr,
        };
        if let Some(p) = peer.and_then(|p| self.peers.get_mut(&p)) {
            p.dialing = Some(dial);
            p.next_dial = None;
        }
        self.dials.insert(dial, (addr.clone(), peer));
        self.actions.push_back(Action::Dial { dial, addr, peer });
        dial
    }

    pub(super) fn redial(&mut self, peer: PeerId, now: Instant, stats: &mut Stats) {
        let ttl = self.config.learned_addr_ttl;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.next_dial = None;
        if p.up || p.dialing.is_some() || self.shut_down {
            return;
        }
        if self.conns.values().any(|c| c.peer == peer) {
            return;
        }
        if Self::expired(p, ttl, now) {
            p.drop_unconfirmed();
        }
        let Some(addr) = p.dial_addr().cloned() else {
            return;
        };
        if p.unconfirmed.contains(&addr) {
            // An address someone told us about: dialed at a bounded rate, so a hostile
            // peer cannot aim our dials at a third party.
            if !self.learned_dials.take(1.0, now) {
                stats.learned_dials_refused += 1;
                let rate = self.config.learned_dials_per_sec.max(1e-3);
                let wait = Duration::from_secs_f64((1.0 / rate).min(3600.0));
                p.next_dial = Some(now + wait);
                return;
            }
            stats.learned_dials += 1;
        }
        self.dial(addr, Some(peer));
    }

    pub(super) fn schedule_redial(&mut self, peer: PeerId, now: Instant) {
        let jitter = self.rng.random_range(0.5..=1.0);
        let (initial, max) = (self.config.backoff_initial, self.config.backoff_max);
        let max_unconnected = self.config.max_dial_attempts_unconnected;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.dialing = None;
        if p.up || p.addrs.is_empty() {
            return;
        }
        if !p.ever_connected && p.failures + 1 >= max_unconnected {
            self.peers.remove(&peer);
            return;
        }
        p.next_dial = Some(now + peers::backoff(initial, max, p.attempts, jitter));
        p.attempts = p.attempts.saturating_add(1);
        p.failures = p.failures.saturating_add(1);
    }
}
