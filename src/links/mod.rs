//! Links: the connections/peers state machine, split out of [`crate::Node`] the way
//! iroh-gossip splits membership (hyparview) from broadcast (plumtree).
//!
//! [`Links`] owns every connection, the address book, dialing and redial, the
//! handshake, the duplicate tie-break and hand-over, the stash, peer exchange,
//! ping/idle and the legacy connections' slots, together with their bounds. `Node`
//! routes frames between it and rooms, history and profiles: it hands hellos,
//! goodbyes, pongs and peer lists here, and takes [`Up`] notices back (a peer came up:
//! send it profiles and summaries).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::conn::Conn;
use crate::event::{Action, ConnId, DialId, Event, PeerInfo, Protocol, Transmit};
use crate::node::Stats;
use crate::peers::{Peer, PeerBook};
use crate::rate::TokenBucket;
use crate::timers::TimedMap;

mod dial;
mod session;

/// A peer that shut down is redialed starting at this many backoff doublings
/// (500 ms · 2^5 = 16 s with the default backoff).
pub(crate) const GOODBYE_BACKOFF_STEPS: u32 = 5;

/// Where addresses given to [`crate::Node::handle_addresses`] come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddrSource {
    /// Found on the network (mDNS on the LAN, a directory): unconfirmed until a dial
    /// reaches the peer there, so dialed at `learned_dials_per_sec` and forgotten after
    /// `learned_addr_ttl`.
    Discovered,
    /// Chosen by the user or persisted by the app: kept, and the peer redialed.
    Trusted,
}

/// What the links tell the node after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Up {
    /// A chat peer came up: send it profiles and room summaries.
    ChatPeerUp(PeerId),
}

/// The node's output queues the links write to (events in order with the node's own).
pub(crate) struct Out<'a> {
    pub events: &'a mut VecDeque<Event>,
    pub stats: &'a mut Stats,
}

/// Connections and peers: see the module docs.
pub(crate) struct Links {
    pub id: PeerId,
    /// This run's session id (`Hello.session`): random, never 0.
    pub session: u64,
    pub config: Config,
    pub rng: ChaCha8Rng,
    /// Connections, with their timers (`Conn`'s [`crate::timers::Timed`] impl).
    pub conns: TimedMap<ConnId, Conn>,
    pub peers: PeerBook,
    /// Connections with bytes in their outbox.
    pub ready: ReadySet,
    /// Final bytes of connections being closed; handed out before their `Close`.
    pub urgent: VecDeque<Transmit>,
    pub actions: VecDeque<Action>,
    pub dials: BTreeMap<DialId, (Multiaddr, Option<PeerId>)>,
    pub next_dial: u64,
    pub shut_down: bool,
    /// Rooms this node is in (membership events are reported for these only).
    pub rooms: BTreeSet<String>,
    /// Notices for the node, drained after every input.
    pub up: VecDeque<Up>,
    /// Paces dials of unconfirmed learned addresses (`learned_dials_per_sec`).
    pub learned_dials: TokenBucket,
    /// Next time the address book is scanned for expired learned addresses.
    pub next_expiry: Option<Instant>,
    /// The up peers with their active connections, as of `peers.changes()` = `.0`
    /// (see [`Links::up_peers`]).
    up_memo: (Option<u64>, Vec<UpPeer>),
    /// Of those, the chat peers in one room (the last asked for), as of `.0`:
    /// `(changes, room, [(peer, connection)])`, at most one entry per up peer.
    room_memo: (Option<u64>, String, Vec<(PeerId, ConnId)>),
}

/// An up peer, as [`Links::up_peers`] lists it.
#[derive(Debug, Clone)]
pub(crate) struct UpPeer {
    pub id: PeerId,
    /// Its connection in use (an up peer always has one).
    pub conn: Option<ConnId>,
    pub protocol: Protocol,
    pub rooms: Vec<String>,
}

impl UpPeer {
    pub fn in_room(&self, room: &str) -> bool {
        self.rooms.iter().any(|r| r == room)
    }
}

impl Links {
    pub fn new(id: PeerId, config: Config, seed: u64, now: Instant) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let session = rng.random::<u64>().max(1);
        Links {
            session,
            learned_dials: TokenBucket::new(
                config.learned_dials_per_sec,
                config.learned_dial_burst,
                now,
            ),
            next_expiry: None,
            id,
            rng,
            config,
            conns: TimedMap::new(),
            peers: PeerBook::new(),
            ready: ReadySet::default(),
            urgent: VecDeque::new(),
            actions: VecDeque::new(),
            dials: BTreeMap::new(),
            next_dial: 0,
            shut_down: false,
            rooms: BTreeSet::new(),
            up: VecDeque::new(),
            up_memo: (None, Vec::new()),
            room_memo: (None, String::new(), Vec::new()),
        }
    }

    // ----- queries -------------------------------------------------------------------

    /// Connected peers.
    pub fn peer_infos(&self) -> Vec<PeerInfo> {
        self.peers
            .iter()
            .filter(|(_, p)| p.up)
            .filter_map(|(id, p)| self.peer_info(id, p))
            .collect()
    }

    /// Connected peers that announced `room`.
    pub fn members(&self, room: &str) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.up && p.in_room(room))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Peers reported up, in peer id order (the address
    /// book's), with their protocol and rooms. Relaying asks this for every run, so the
    /// list is kept and rebuilt only after the address book changed (any mutable access
    /// to it bumps [`TimedMap::changes`]); it holds one entry per up peer, so never more
    /// than the address book (`max_known_peers` plus connected peers).
    pub fn up_peers(&mut self) -> &[UpPeer] {
        let now = self.peers.changes();
        if self.up_memo.0 != Some(now) {
            let list = &mut self.up_memo.1;
            list.clear();
            list.extend(
                self.peers
                    .iter()
                    .filter(|(_, p)| p.up)
                    .map(|(id, p)| UpPeer {
                        id: *id,
                        conn: p.active,
                        protocol: p.protocol,
                        rooms: p.rooms.clone(),
                    }),
            );
            self.up_memo.0 = Some(now);
        }
        &self.up_memo.1
    }

    /// The up chat peers in `room` with their connections, in peer id order (from
    /// [`Links::up_peers`], kept for the last room asked for).
    pub fn chat_in_room(&mut self, room: &str) -> &[(PeerId, ConnId)] {
        let now = self.peers.changes();
        if self.room_memo.0 != Some(now) || self.room_memo.1 != room {
            let mut list = std::mem::take(&mut self.room_memo.2);
            list.clear();
            list.extend(
                self.up_peers()
                    .iter()
                    .filter(|p| p.protocol == Protocol::Chat && p.in_room(room))
                    .filter_map(|p| p.conn.map(|c| (p.id, c))),
            );
            self.room_memo = (Some(now), room.to_string(), list);
        }
        &self.room_memo.2
    }

    /// Active connections of open chat peers (in `room`, if given).
    pub fn chat_targets(&self, room: Option<&str>) -> Vec<ConnId> {
        self.peers
            .values()
            .filter(|p| p.up && p.protocol == Protocol::Chat)
            .filter(|p| room.is_none_or(|r| p.in_room(r)))
            .filter_map(|p| p.active)
            .collect()
    }

    /// Active connections of chat peers other than those in `skip`.
    pub fn chat_targets_except(&self, skip: &[Option<PeerId>]) -> Vec<ConnId> {
        self.peers
            .iter()
            .filter(|(id, p)| p.up && p.protocol == Protocol::Chat && !skip.contains(&Some(**id)))
            .filter_map(|(_, p)| p.active)
            .collect()
    }

    pub fn queued_bytes(&self, peer: &PeerId) -> usize {
        self.peers
            .get(peer)
            .and_then(|p| p.active)
            .and_then(|c| self.conns.get(&c))
            .map_or(0, |c| c.queued())
    }

    pub fn connection_count(&self, peer: &PeerId) -> usize {
        self.conns.values().filter(|c| c.peer == *peer).count()
    }

    pub fn peer_info(&self, id: &PeerId, p: &Peer) -> Option<PeerInfo> {
        let conn = self.conns.get(&p.active?)?;
        Some(PeerInfo {
            peer: *id,
            name: p.name.clone(),
            addr: conn.addr.clone(),
            protocol: p.protocol,
            link: conn.link,
            rtt: p.rtt,
            rooms: p.rooms.clone(),
            listen_addrs: p
                .confirmed_addrs()
                .rev()
                .map(|a| a.clone().with(multiaddr::Protocol::P2p(*id)))
                .collect(),
        })
    }

    /// The peer whose active connection `conn` is (frames on a draining duplicate are
    /// still accepted: they were sent before the remote saw the tie-break).
    pub fn active_peer(&self, conn: ConnId) -> Option<PeerId> {
        let c = self.conns.get(&conn)?;
        self.peers.get(&c.peer).filter(|p| p.up).map(|_| c.peer)
    }

    pub fn connected(&self) -> usize {
        self.peers.values().filter(|p| p.up).count()
    }

    /// Peer slots taken: peers up, plus peers not up with a chat handshake in flight
    /// (so handshakes arriving together cannot overshoot `max_peers`).
    pub fn slots_taken(&self) -> usize {
        let handshaking: BTreeSet<&PeerId> = self
            .conns
            .values()
            .filter(|c| c.state == crate::conn::State::Handshaking)
            .map(|c| &c.peer)
            .filter(|id| self.peers.get(*id).is_none_or(|p| !p.up))
            .collect();
        self.connected() + handshaking.len()
    }

    /// Open legacy connections.
    pub fn legacy_conns(&self) -> usize {
        let legacy = |c: &&Conn| c.protocol == Protocol::Legacy;
        self.conns.values().filter(legacy).count()
    }

    /// The book entry of `id`, created if new. A new entry in a full book first evicts
    /// the peer seen least recently among those with no connection, no dial in flight
    /// and not up; connected peers are never evicted.
    pub fn entry(&mut self, id: PeerId, now: Instant, stats: &mut Stats) -> &mut Peer {
        if !self.peers.contains_key(&id) && self.peers.len() >= self.config.max_known_peers {
            let busy: BTreeSet<PeerId> = self.conns.values().map(|c| c.peer).collect();
            let victim = self
                .peers
                .iter()
                .filter(|(pid, p)| !p.up && p.dialing.is_none() && !busy.contains(*pid))
                .min_by_key(|(_, p)| {
                    let dialable = p.confirmed_addrs().next().is_some();
                    (dialable, p.ever_connected, p.last_seen)
                })
                .map(|(pid, _)| *pid);
            if let Some(v) = victim {
                self.peers.remove(&v);
                stats.peers_evicted += 1;
            }
        }
        let p = self.peers.get_or_insert_with(id, Peer::new);
        if p.last_seen.is_none_or(|t| t < now) {
            p.last_seen = Some(now);
        }
        p
    }

    /// Writes the links' bounded sizes into `stats`.
    pub fn gauges(&self, stats: &mut Stats) {
        stats.known_peers = self.peers.len() as u64;
        stats.known_addrs = self.peers.values().map(|p| p.addrs.len() as u64).sum();
        let hs = |c: &&Conn| c.state == crate::conn::State::Handshaking;
        stats.handshakes = self.conns.values().filter(hs).count() as u64;
        stats.legacy_conns = self.legacy_conns() as u64;
    }

    /// Forgets unconfirmed learned addresses of peers not seen for `learned_addr_ttl`
    /// (at most once a minute, or per ttl if shorter).
    pub fn expire_addrs(&mut self, now: Instant) {
        if self.next_expiry.is_some_and(|t| now < t) {
            return;
        }
        let ttl = self.config.learned_addr_ttl;
        let step = ttl
            .min(std::time::Duration::from_secs(60))
            .max(std::time::Duration::from_millis(100));
        self.next_expiry = now.checked_add(step);
        for p in self.peers.values_mut() {
            if Self::expired(p, ttl, now) {
                p.drop_unconfirmed();
            }
        }
    }

    pub(crate) fn expired(p: &Peer, ttl: std::time::Duration, now: Instant) -> bool {
        !p.up
            && p.active.is_none()
            && !p.unconfirmed.is_empty()
            && p.last_seen
                .and_then(|t| t.checked_add(ttl))
                .is_some_and(|t| t <= now)
    }

    // ----- outputs -------------------------------------------------------------------

    /// Earliest deadline of a connection or a timed peer (re-indexes what changed).
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let t = [self.conns.next(&self.config), self.peers.next(&())];
        t.into_iter().flatten().min()
    }

    // ----- inputs --------------------------------------------------------------------

    /// The runtime wrote `bytes` of this connection's transmits.
    pub fn handle_sent(&mut self, conn: ConnId, bytes: usize) {
        // Acknowledging bytes changes no timer.
        let more = self.conns.update_untimed(&conn, &self.config, |c| {
            c.ack(bytes);
            c.has_outgoing() || !c.sync.is_empty()
        });
        if more == Some(true) {
            self.ready.insert(conn);
        }
    }

    /// A connection closed (EOF, error or reset).
    pub fn handle_closed(&mut self, conn: ConnId, reason: &str, now: Instant, out: &mut Out) {
        if let Some(c) = self.conns.remove(&conn) {
            self.ready.remove(&conn);
            let reason = crate::close::CloseReason::Transport(reason.to_string());
            self.detach(conn, c, &reason, now, out);
        }
    }

    /// A dial the node asked for failed.
    pub fn handle_dial_failed(&mut self, dial: DialId, error: &str, now: Instant, out: &mut Out) {
        let Some((addr, peer)) = self.dials.remove(&dial) else {
            return;
        };
        out.events.push_back(Event::DialFailed {
            dial,
            addr,
            reason: crate::close::CloseReason::Transport(error.to_string()),
        });
        if let Some(peer) = peer {
            self.schedule_redial(peer, now);
        }
    }

    /// Connection timers, then redials and stash expiry.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Out) {
        for id in self.conns.due(now, &self.config) {
            self.conn_timeout(id, now, out);
        }
    }

    /// Redials and stash expiry of timed peers.
    pub fn peers_timeout(&mut self, now: Instant, stats: &mut Stats) {
        self.expire_addrs(now);
        for peer in self.peers.due(now, &()) {
            let Some(p) = self.peers.get_mut(&peer) else {
                continue;
            };
            if p.stash_until.is_some_and(|d| d <= now) {
                p.stash.clear();
                p.stash_until = None;
            }
            if p.next_dial.is_some_and(|d| d <= now) {
                self.redial(peer, now, stats);
            }
        }
    }

    /// A random nonce (hello, ping).
    pub fn nonce(&mut self) -> u64 {
        self.rng.random()
    }
}

#[cfg(test)]
mod tests;

/// Connections with bytes to hand out, taken lowest id first (a set of a few
/// entries that fills and drains around every input: a sorted vector keeps its
/// allocation, where a B-tree set would allocate and free its node each time).
#[derive(Debug, Default)]
pub struct ReadySet(Vec<ConnId>);

impl ReadySet {
    /// Adds `conn` (once).
    pub fn insert(&mut self, conn: ConnId) {
        // Descending, so the lowest id is popped from the end.
        if let Err(i) = self.0.binary_search_by(|c| conn.cmp(c)) {
            self.0.insert(i, conn);
        }
    }

    /// Removes `conn` if present.
    pub fn remove(&mut self, conn: &ConnId) {
        if let Ok(i) = self.0.binary_search_by(|c| conn.cmp(c)) {
            self.0.remove(i);
        }
    }

    /// Takes the lowest id.
    pub fn pop_first(&mut self) -> Option<ConnId> {
        self.0.pop()
    }
}

#[cfg(test)]
mod ready_tests {
    use super::{ConnId, ReadySet};

    #[test]
    fn pops_lowest_first_each_once() {
        let mut r = ReadySet::default();
        for c in [5, 1, 9, 1, 3, 9] {
            r.insert(ConnId(c));
        }
        r.remove(&ConnId(3));
        r.remove(&ConnId(4));
        let mut out = Vec::new();
        while let Some(c) = r.pop_first() {
            out.push(c.0);
        }
        assert_eq!(out, [1, 5, 9]);
    }
}
