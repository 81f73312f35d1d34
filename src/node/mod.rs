//! [`Node`]: the chat protocol state machine. Inputs are `handle_*` calls and user
//! commands; outputs are drained with `poll_transmit`, `poll_action`, `poll_event` and
//! `poll_timeout`. See the crate docs for the run loop.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use libp2p_identity::{Keypair, PeerId, PublicKey};
use multiaddr::Multiaddr;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::clock::{unix_ms, Clock};
use crate::config::Config;
use crate::conn::{far_future, Conn, Decoder, State};
use crate::error::CommandError;
use crate::event::{Action, ConnId, ConnInfo, DialId, Event, PeerInfo, Protocol, Role, Transmit};
use crate::identity::Identity;
use crate::legacy;
use crate::message::{Message, SharedMessage};
use crate::peers::{self, Peer, PeerBook};
use crate::rooms::{Limits, Room};
use crate::wire::{self, Frame, GoodbyeCode, Kind};

mod clock;
mod history;
mod persist;
mod profile;

pub use persist::{Restore, RestoreRoom};
use profile::ProfileRec;

/// A peer that shut down is redialed starting at this many backoff doublings
/// (500 ms · 2^5 = 16 s with the default backoff).
const GOODBYE_BACKOFF_STEPS: u32 = 5;

/// Counters for tests, benches and diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Frames decoded from peers.
    pub frames_in: u64,
    /// Room messages received (including duplicates).
    pub messages_in: u64,
    /// Room messages delivered to the app (own and remote).
    pub delivered: u64,
    /// Received copies of messages already held.
    pub duplicates: u64,
    /// Messages dropped because an out-of-order buffer was full.
    pub buffer_full: u64,
    /// Invalid signatures or forged chain links received.
    pub forgeries: u64,
    /// Signatures made by this node.
    pub signatures: u64,
    /// Room messages relayed to neighbours (per copy).
    pub relayed: u64,
    /// Connections closed for misbehaviour.
    pub misbehaved: u64,
    /// History messages sent to neighbours that lacked them.
    pub history_sent: u64,
    /// Gap repair requests sent.
    pub repair_requests: u64,
    /// Gauge: author entries kept, summed over joined rooms (each rides in summaries).
    pub room_authors: u64,
    /// Gauge: signed profiles of other authors kept.
    pub profiles: u64,
    /// Gauge: history sync jobs queued, summed over connections.
    pub sync_jobs: u64,
    /// Gauge: ranges in those sync jobs.
    pub sync_ranges: u64,
    /// Messages and profiles not accepted because their clock was too far ahead.
    pub clock_refused: u64,
    /// Accepted clock values adopted only up to the bound (`max_clock_skew / 2`).
    pub clock_clamped: u64,
    /// History requests refused because they named nothing held.
    pub requests_refused: u64,
    /// Sync ranges left out because a connection's sync queue was full.
    pub sync_dropped: u64,
    /// Authors evicted from joined rooms to stay within `max_authors`.
    pub authors_evicted: u64,
    /// Profiles evicted to stay within `max_profiles`.
    pub profiles_evicted: u64,
}

/// An echo chat node. Pure state: no I/O, no clock, no threads.
pub struct Node {
    key: Keypair,
    public: PublicKey,
    id: PeerId,
    config: Config,
    rng: ChaCha8Rng,
    name: String,
    listen_addrs: Vec<Multiaddr>,
    clock: Clock,
    conns: BTreeMap<ConnId, Conn>,
    peers: PeerBook,
    rooms: BTreeMap<String, Room>,
    /// Own messages not yet signed and sent: (room, seq).
    unsealed: Vec<(String, u64)>,
    /// Connections with bytes in their outbox.
    ready: BTreeSet<ConnId>,
    /// Final bytes of connections being closed; handed out before their `Close`.
    urgent: VecDeque<Transmit>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    dials: BTreeMap<DialId, (Multiaddr, Option<PeerId>)>,
    next_dial: u64,
    shut_down: bool,
    stats: Stats,
    /// The latest `now` passed in (for work done inside `poll_transmit`).
    last_now: Instant,
    /// Signed display names of other authors.
    profiles: BTreeMap<PeerId, ProfileRec>,
    /// Our own signed profile.
    own_profile: ProfileRec,
    /// Peers whose `next_dial` or `stash_until` may be set (a superset).
    timed_peers: BTreeSet<PeerId>,
    /// Reservations of rooms the node left: a rejoin continues above them.
    retired: BTreeMap<String, u64>,
}

pub(crate) fn valid_label(s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    if s.len() > max {
        return Err(format!("{} bytes; the limit is {max}", s.len()));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err("contains control characters".into());
    }
    Ok(())
}

pub(crate) fn valid_room(s: &str, max: usize) -> Result<(), String> {
    valid_label(s, max)?;
    if s.chars().any(char::is_whitespace) {
        return Err("contains whitespace".into());
    }
    Ok(())
}

impl Node {
    /// A node with identity `identity`. `seed` seeds its RNG (ping and hello nonces,
    /// backoff jitter): give each node its own (e.g. from OS randomness at start-up);
    /// tests fix it to replay runs. `now` starts its clocks.
    ///
    /// The node never panics on its config: durations longer than
    /// [`Config::MAX_DURATION`] (e.g. `Duration::MAX` for "never") are clamped to it, and
    /// zero intervals to 1 ms. Check a config with [`Config::validate`] first to refuse
    /// such values instead.
    ///
    /// A node that ever sent messages must be started with [`Node::restore`] instead,
    /// from what the app persisted, or it would reuse sequence numbers.
    pub fn new(identity: Identity, config: Config, seed: u64, now: Instant) -> Self {
        Self::restore(identity, config, seed, Restore::default(), now)
    }

    fn empty(identity: Identity, config: Config, seed: u64, now: Instant) -> Self {
        let config = config.clamped();
        let key = identity.keypair();
        let public = key.public();
        let id = public.to_peer_id();
        Node {
            rng: ChaCha8Rng::seed_from_u64(seed),
            name: config.name.clone(),
            key,
            public,
            id,
            listen_addrs: Vec::new(),
            clock: Clock::new(config.max_clock_skew),
            conns: BTreeMap::new(),
            peers: PeerBook::new(),
            rooms: BTreeMap::new(),
            unsealed: Vec::new(),
            ready: BTreeSet::new(),
            urgent: VecDeque::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            dials: BTreeMap::new(),
            next_dial: 0,
            shut_down: false,
            stats: Stats::default(),
            last_now: now,
            profiles: BTreeMap::new(),
            own_profile: ProfileRec::default(),
            timed_peers: BTreeSet::new(),
            retired: BTreeMap::new(),
            config,
        }
    }

    /// Creates a room's state, reserves its first block of sequence numbers and reports
    /// both.
    fn create_room(&mut self, name: &str, mut room: Room) {
        room.own_next = room.own_next.max(room.reserved);
        self.rooms.insert(name.to_string(), room);
        self.events.push_back(Event::Joined { room: name.into() });
        self.reserve(name);
    }

    /// Reserves the next block of sequence numbers once half of the current one is used.
    fn reserve(&mut self, name: &str) {
        let block = self.config.reserve_block.max(2);
        let Some(r) = self.rooms.get_mut(name) else {
            return;
        };
        if r.own_next + block / 2 < r.reserved {
            return;
        }
        r.reserved = r.own_next.max(r.reserved) + block;
        self.events.push_back(Event::SeqReserved {
            room: name.into(),
            upto: r.reserved,
        });
    }

    // ----- queries -------------------------------------------------------------------

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.id
    }

    /// This node's display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters, and gauges of the bounded structures (filled in at the call).
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.room_authors = self.rooms.values().map(|r| r.authors.len() as u64).sum();
        s.authors_evicted = self.rooms.values().map(|r| r.evicted).sum();
        s.profiles = self.profiles.len() as u64;
        for c in self.conns.values() {
            s.sync_jobs += c.sync.len() as u64;
            s.sync_ranges += c.sync.ranges() as u64;
        }
        s
    }

    /// Rooms this node is in.
    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.keys().map(String::as_str)
    }

    /// A room's log in agreed order, oldest first.
    pub fn room_log(&self, room: &str) -> Option<impl Iterator<Item = &SharedMessage>> {
        self.rooms.get(room).map(|r| r.log.iter())
    }

    /// Connected peers.
    pub fn peers(&self) -> Vec<PeerInfo> {
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

    /// Bytes queued for a peer's connection and not yet reported written (0 if not
    /// connected): lets an app pace what it sends to a slow peer.
    pub fn queued_bytes(&self, peer: &PeerId) -> usize {
        self.peers
            .get(peer)
            .and_then(|p| p.active)
            .and_then(|c| self.conns.get(&c))
            .map_or(0, |c| c.queued())
    }

    /// Connections currently open or opening (for diagnostics and tests).
    pub fn connection_count(&self, peer: &PeerId) -> usize {
        self.conns.values().filter(|c| c.peer == *peer).count()
    }

    fn peer_info(&self, id: &PeerId, p: &Peer) -> Option<PeerInfo> {
        let conn = self.conns.get(&p.active?)?;
        Some(PeerInfo {
            peer: *id,
            name: p.name.clone(),
            addr: conn.addr.clone(),
            protocol: p.protocol,
            rtt: p.rtt,
            rooms: p.rooms.clone(),
            listen_addrs: p
                .addrs
                .iter()
                .rev()
                .map(|a| a.clone().with(multiaddr::Protocol::P2p(*id)))
                .collect(),
        })
    }

    // ----- outputs -------------------------------------------------------------------

    /// Next bytes to write. Drain until `None` after every input, before `poll_action`.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.seal();
        if let Some(t) = self.urgent.pop_front() {
            return Some(t);
        }
        while let Some(conn) = self.ready.pop_first() {
            let window = self.config.write_window;
            self.pump_sync(conn);
            if let Some(c) = self.conns.get_mut(&conn) {
                if let Some(data) = c.take_transmit(window, false) {
                    return Some(Transmit { conn, data });
                }
            }
        }
        None
    }

    /// Next action for the runtime (dial, close).
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Next event for the app.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Node::handle_timeout`] next (`None`: no timer needed).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut min = |d: Instant| t = Some(t.map_or(d, |x| x.min(d)));
        for c in self.conns.values() {
            let d = c.deadline(&self.config);
            if d < far_future(c.opened) {
                min(d);
            }
            if c.is_open() && c.protocol == Protocol::Chat {
                min(c.next_sync);
            }
        }
        for room in self.rooms.values() {
            if let Some(d) = room.deadline() {
                min(d);
            }
        }
        for p in self.timed_peers.iter().filter_map(|id| self.peers.get(id)) {
            if let Some(d) = p.next_dial {
                min(d);
            }
            if let Some(d) = p.stash_until {
                min(d);
            }
        }
        t
    }

    // ----- inputs from the runtime --------------------------------------------------

    /// Tells the node its own listen addresses (announced in hellos).
    pub fn set_listen_addrs(&mut self, addrs: Vec<Multiaddr>) {
        self.listen_addrs = addrs;
    }

    /// A connection's chat substream is up.
    pub fn handle_connected(&mut self, conn: ConnId, info: ConnInfo, now: Instant) {
        self.last_now = self.last_now.max(now);
        if let Some(d) = info.dial {
            if let Some((_, expected)) = self.dials.remove(&d) {
                if let Some(p) = expected.and_then(|e| self.peers.get_mut(&e)) {
                    if p.dialing == Some(d) {
                        p.dialing = None;
                    }
                }
            }
        }
        if let Some(p) = self.peers.get_mut(&info.peer) {
            if p.dialing.is_some() && info.dial.is_some() && p.dialing == info.dial {
                p.dialing = None;
            }
        }
        let nonce = self.rng.random();
        let mut c = Conn::new(
            info.peer,
            info.role,
            info.remote_addr.clone(),
            info.protocol,
            nonce,
            &self.config,
            now,
        );
        if info.peer == self.id {
            self.actions.push_back(Action::Close {
                conn,
                reason: "connected to itself".into(),
            });
            return;
        }
        if self.shut_down {
            self.actions.push_back(Action::Close {
                conn,
                reason: "node is shut down".into(),
            });
            return;
        }
        let connected = self.peers.values().filter(|p| p.up).count();
        let known_up = self.peers.get(&info.peer).is_some_and(|p| p.up);
        if !known_up && connected >= self.config.max_peers {
            if info.protocol == Protocol::Chat {
                self.conns.insert(conn, c);
                self.close(
                    conn,
                    GoodbyeCode::TooManyPeers,
                    "too many peers",
                    false,
                    now,
                );
            } else {
                self.actions.push_back(Action::Close {
                    conn,
                    reason: "too many peers".into(),
                });
            }
            return;
        }
        match info.protocol {
            Protocol::Chat => {
                let hello = Frame::new(Kind::Hello(self.hello(nonce)));
                hello.encode_to(&mut c.outbox);
                c.hello_left = c.outbox.len();
                self.conns.insert(conn, c);
                self.ready.insert(conn);
            }
            Protocol::Legacy => {
                if self
                    .peers
                    .get(&info.peer)
                    .is_some_and(|p| p.active.is_some())
                {
                    self.actions.push_back(Action::Close {
                        conn,
                        reason: "duplicate legacy connection".into(),
                    });
                    return;
                }
                self.conns.insert(conn, c);
                let rooms: Vec<String> = self.config.default_room.iter().cloned().collect();
                let book_max = self.config.max_addrs_per_peer;
                let p = self.peers.entry(info.peer).or_insert_with(Peer::new);
                p.protocol = Protocol::Legacy;
                p.rooms = rooms;
                if info.role == Role::Dialer {
                    let (bare, _) = peers::split_p2p(&info.remote_addr);
                    p.add_addr(bare, book_max);
                }
                self.activate(conn, now);
            }
        }
    }

    /// Bytes arrived on a connection (any chunking).
    pub fn handle_data(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        self.last_now = self.last_now.max(now);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_recv = now;
        match &mut c.decoder {
            Decoder::Lines(d) => {
                let mut lines = Vec::new();
                let res = d.feed(data, |l| lines.push(l));
                for l in lines {
                    self.on_legacy_line(conn, l, now);
                }
                if let Err(e) = res {
                    self.close(
                        conn,
                        GoodbyeCode::ProtocolViolation,
                        &e.to_string(),
                        true,
                        now,
                    );
                }
            }
            Decoder::Frames(d) => {
                d.extend(data);
                loop {
                    let Some(c) = self.conns.get_mut(&conn) else {
                        return;
                    };
                    let Decoder::Frames(d) = &mut c.decoder else {
                        return;
                    };
                    match d.decode() {
                        Ok(Some(payload)) => self.on_frame(conn, payload, now),
                        Ok(None) => return,
                        Err(e) => {
                            let reason = format!("malformed stream: {e}");
                            self.close(conn, GoodbyeCode::ProtocolViolation, &reason, true, now);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The runtime wrote `bytes` of this connection's transmits.
    pub fn handle_sent(&mut self, conn: ConnId, bytes: usize) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.ack(bytes);
            if !c.outbox.is_empty() || !c.sync.is_empty() {
                self.ready.insert(conn);
            }
        }
    }

    /// A connection closed (EOF, error or reset). `reason` is for the app.
    pub fn handle_closed(&mut self, conn: ConnId, reason: &str, now: Instant) {
        self.last_now = self.last_now.max(now);
        if let Some(c) = self.conns.remove(&conn) {
            self.ready.remove(&conn);
            self.detach(conn, c, reason, now);
        }
    }

    /// A dial the node asked for failed.
    pub fn handle_dial_failed(&mut self, dial: DialId, error: &str, now: Instant) {
        self.last_now = self.last_now.max(now);
        let Some((addr, peer)) = self.dials.remove(&dial) else {
            return;
        };
        self.events.push_back(Event::DialFailed {
            dial,
            addr,
            error: error.to_string(),
        });
        if let Some(peer) = peer {
            self.schedule_redial(peer, now);
        }
    }

    /// A timer fired. Spurious and late calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.conn_timeout(id, now);
        }
        self.rooms_timeout(now);
        self.sync_timeout(now);
        let timed: Vec<PeerId> = std::mem::take(&mut self.timed_peers).into_iter().collect();
        for peer in timed {
            let Some(p) = self.peers.get_mut(&peer) else {
                continue;
            };
            if p.stash_until.is_some_and(|d| d <= now) {
                p.stash.clear();
                p.stash_until = None;
            }
            if p.next_dial.is_some_and(|d| d <= now) {
                self.redial(peer, now);
            }
            if self
                .peers
                .get(&peer)
                .is_some_and(|p| p.next_dial.is_some() || p.stash_until.is_some())
            {
                self.timed_peers.insert(peer);
            }
        }
    }

    // ----- commands from the local user ---------------------------------------------

    /// Joins a room and announces it.
    pub fn join(&mut self, room: &str, now: Instant) -> Result<(), CommandError> {
        self.last_now = self.last_now.max(now);
        self.check_up()?;
        valid_room(room, self.config.max_room_len)
            .map_err(|e| CommandError::InvalidRoom(format!("{room:?}: {e}")))?;
        if self.rooms.contains_key(room) {
            return Err(CommandError::AlreadyJoined(room.into()));
        }
        if self.rooms.len() >= self.config.max_rooms {
            return Err(CommandError::TooManyRooms {
                max: self.config.max_rooms,
            });
        }
        let mut r = Room::new(Limits::of(&self.config));
        // Rejoining: a new segment of our chain, above every number used before.
        r.reserved = self.retired.remove(room).unwrap_or(1);
        self.create_room(room, r);
        self.broadcast_chat(
            &Frame::new(Kind::Membership(wire::Membership {
                room: room.into(),
                joined: true,
            })),
            now,
        );
        // Members learn what we lack from our summary and send it.
        for peer in self.members(room) {
            self.events.push_back(Event::MemberJoined {
                room: room.into(),
                peer,
            });
            self.send_summary(peer, room, now);
        }
        Ok(())
    }

    /// Leaves a room, forgetting its log, and announces it.
    pub fn leave(&mut self, room: &str, now: Instant) -> Result<(), CommandError> {
        self.last_now = self.last_now.max(now);
        self.check_up()?;
        let Some(r) = self.rooms.remove(room) else {
            return Err(CommandError::NotInRoom(room.into()));
        };
        self.retired.insert(room.to_string(), r.reserved);
        self.unsealed.retain(|(r, _)| r != room);
        self.broadcast_chat(
            &Frame::new(Kind::Membership(wire::Membership {
                room: room.into(),
                joined: false,
            })),
            now,
        );
        self.events.push_back(Event::Left { room: room.into() });
        Ok(())
    }

    /// Sends `text` to a room. The message is delivered locally at once (as an event)
    /// and sent, signed, on the next [`Node::poll_transmit`].
    pub fn send(
        &mut self,
        room: &str,
        text: &str,
        wall: SystemTime,
        now: Instant,
    ) -> Result<SharedMessage, CommandError> {
        self.last_now = self.last_now.max(now);
        self.check_up()?;
        self.check_text(text)?;
        let name = self.name.clone();
        let Some(r) = self.rooms.get_mut(room) else {
            return Err(CommandError::NotInRoom(room.into()));
        };
        if self.clock.set_wall(wall, now) {
            self.stats.clock_clamped += 1;
        }
        let lamport = self.clock.tick(now);
        let msg = Arc::new(Message::new_local(
            self.id,
            room.to_string(),
            r.own_next,
            lamport,
            unix_ms(wall),
            name,
            text.to_string(),
            r.own_last.1,
            r.own_last.0,
        ));
        let pos = r.push_local(&self.id, &self.public, msg.clone());
        self.reserve(room);
        self.unsealed.push((room.to_string(), msg.seq));
        self.send_legacy(&msg, now);
        self.stats.delivered += 1;
        self.events.push_back(Event::Message {
            msg: msg.clone(),
            position: Some(pos),
        });
        Ok(msg)
    }

    /// Sends a direct message to a connected peer (not relayed, not stored).
    pub fn send_direct(
        &mut self,
        peer: &PeerId,
        text: &str,
        wall: SystemTime,
        now: Instant,
    ) -> Result<(), CommandError> {
        self.last_now = self.last_now.max(now);
        self.check_up()?;
        self.check_text(text)?;
        let p = self
            .peers
            .get(peer)
            .filter(|p| p.up)
            .ok_or(CommandError::PeerNotConnected(*peer))?;
        if p.protocol == Protocol::Legacy {
            return Err(CommandError::LegacyPeer(*peer));
        }
        let conn = p.active.ok_or(CommandError::PeerNotConnected(*peer))?;
        let frame = Frame::new(Kind::Direct(wire::Direct {
            text: text.into(),
            sent_at_ms: unix_ms(wall),
        }));
        self.send_frame(conn, &frame, now);
        Ok(())
    }

    /// Changes the display name and tells connected peers.
    pub fn set_name(&mut self, name: &str, now: Instant) -> Result<(), CommandError> {
        self.last_now = self.last_now.max(now);
        self.check_up()?;
        valid_label(name, self.config.max_name_len)
            .map_err(|e| CommandError::InvalidName(format!("{name:?}: {e}")))?;
        self.name = name.to_string();
        self.sign_profile();
        let frame = Frame::new(Kind::Profile(self.own_profile.to_wire(&self.id)));
        self.broadcast_chat(&frame, now);
        Ok(())
    }

    /// Asks the runtime to dial `addr` (a multiaddr such as
    /// `/ip4/192.0.2.7/tcp/8080/p2p/12D3Koo…`). Peers reached this way are redialed if
    /// they drop.
    pub fn connect(&mut self, addr: &str, now: Instant) -> Result<DialId, CommandError> {
        self.last_now = self.last_now.max(now);
        self.check_up()?;
        let bad = |reason: String| CommandError::InvalidAddr {
            addr: addr.to_string(),
            reason,
        };
        let ma: Multiaddr = addr.trim().parse().map_err(|e| bad(format!("{e}")))?;
        let (bare, peer) = peers::split_p2p(&ma);
        peers::is_dialable(&bare).map_err(bad)?;
        if peer == Some(self.id) {
            return Err(CommandError::SelfDial);
        }
        let _ = now;
        if let Some(peer) = peer {
            let max = self.config.max_addrs_per_peer;
            let p = self.peers.entry(peer).or_insert_with(Peer::new);
            p.add_addr(bare, max);
            p.ever_connected = true; // chosen by the user: keep trying
        }
        Ok(self.dial(ma, peer))
    }

    /// Says goodbye on every connection and closes them; the node accepts no more
    /// commands or connections.
    pub fn shutdown(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        // Messages sent but not yet sealed go out before the goodbyes.
        self.seal();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id, GoodbyeCode::Shutdown, "node shutting down", false, now);
        }
        for p in self.peers.values_mut() {
            p.next_dial = None;
        }
        self.shut_down = true;
    }

    fn check_up(&self) -> Result<(), CommandError> {
        if self.shut_down {
            Err(CommandError::ShutDown)
        } else {
            Ok(())
        }
    }

    fn check_text(&self, text: &str) -> Result<(), CommandError> {
        if text.trim().is_empty() {
            return Err(CommandError::EmptyText);
        }
        if text.len() > self.config.max_text_len {
            return Err(CommandError::TextTooLong {
                len: text.len(),
                max: self.config.max_text_len,
            });
        }
        Ok(())
    }

    // ----- frames --------------------------------------------------------------------

    fn hello(&self, nonce: u64) -> wire::Hello {
        wire::Hello {
            version_major: wire::VERSION_MAJOR,
            version_minor: wire::VERSION_MINOR,
            name: self.name.clone(),
            rooms: self.rooms.keys().cloned().collect(),
            listen_addrs: self.listen_addrs.iter().map(|a| a.to_vec()).collect(),
            capabilities: vec!["chain-sig".into()],
            nonce,
            agent: self.config.agent.clone(),
        }
    }

    fn on_frame(&mut self, conn: ConnId, payload: Bytes, now: Instant) {
        self.stats.frames_in += 1;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.charge(
            payload.len() + crate::codec::varint_len(payload.len() as u64),
            now,
        ) {
            self.close(
                conn,
                GoodbyeCode::ProtocolViolation,
                "rate limit exceeded",
                true,
                now,
            );
            return;
        }
        // Fast path: a room message we already hold is dropped without decoding it.
        let mut checked_author = None;
        if c.state != State::Handshaking {
            if let Some((author, room, seq)) = wire::peek_message_id(&payload) {
                let room = std::str::from_utf8(room)
                    .ok()
                    .and_then(|r| self.rooms.get(r));
                if let (Some(room), Ok(author)) = (room, PeerId::from_bytes(author)) {
                    if room.is_known(&author, seq) {
                        self.stats.messages_in += 1;
                        self.stats.duplicates += 1;
                        return;
                    }
                    checked_author = Some(author);
                }
            }
        }
        let frame = match Frame::decode_shared(payload) {
            Ok(f) => f,
            Err(e) => {
                let reason = format!("undecodable frame: {e}");
                self.close(conn, GoodbyeCode::ProtocolViolation, &reason, true, now);
                return;
            }
        };
        let handshaking = c.state == State::Handshaking;
        match frame.kind {
            Some(Kind::Hello(h)) if handshaking => self.on_hello(conn, h, now),
            Some(Kind::Hello(_)) => self.violation(conn, "second hello", now),
            Some(Kind::Goodbye(g)) => self.on_goodbye(conn, g, now),
            _ if handshaking => self.violation(conn, "frame before hello", now),
            None => {} // a frame kind from a newer minor version: ignored
            // Not on a draining duplicate: our goodbye was its last frame.
            Some(Kind::Ping(p)) if !matches!(c.state, State::Draining { .. }) => {
                self.send_frame(conn, &Frame::new(Kind::Pong(p)), now);
            }
            Some(Kind::Ping(_)) => {}
            Some(Kind::Pong(p)) => self.on_pong(conn, p.nonce, now),
            Some(Kind::Message(m)) => self.on_message(conn, m, checked_author, now),
            Some(Kind::Membership(m)) => self.on_membership(conn, m, now),
            Some(Kind::Direct(d)) => self.on_direct(conn, d, now),
            Some(Kind::Peers(p)) => self.on_peers(conn, p, now),
            Some(Kind::Profile(p)) => self.on_profile(conn, p, now),
            Some(Kind::Summary(sm)) => self.on_summary(conn, sm, now),
            Some(Kind::Request(r)) => self.on_request(conn, r, now),
        }
    }

    fn violation(&mut self, conn: ConnId, reason: &str, now: Instant) {
        self.close(conn, GoodbyeCode::ProtocolViolation, reason, true, now);
    }

    fn on_hello(&mut self, conn: ConnId, h: wire::Hello, now: Instant) {
        if h.version_major != wire::VERSION_MAJOR {
            let reason = format!(
                "incompatible protocol version {}.{} (this node speaks {}.x)",
                h.version_major,
                h.version_minor,
                wire::VERSION_MAJOR
            );
            self.close(conn, GoodbyeCode::IncompatibleVersion, &reason, false, now);
            return;
        }
        if h.name.len() > self.config.max_name_len || h.name.chars().any(char::is_control) {
            return self.violation(conn, "invalid name in hello", now);
        }
        if h.rooms.len() > self.config.max_rooms {
            return self.violation(conn, "too many rooms in hello", now);
        }
        if let Some(r) = h
            .rooms
            .iter()
            .find(|r| valid_room(r, self.config.max_room_len).is_err())
        {
            let reason = format!("invalid room name {r:?} in hello");
            return self.violation(conn, &reason, now);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.their_nonce = Some(h.nonce);
        c.state = State::Open;
        c.next_ping = now + self.config.ping_interval;
        let (peer, addr, role) = (c.peer, c.addr.clone(), c.role);
        let max_addrs = self.config.max_addrs_per_peer;
        let p = self.peers.entry(peer).or_insert_with(Peer::new);
        let old_name = std::mem::replace(&mut p.name, h.name.clone());
        let mut rooms = h.rooms;
        rooms.sort();
        rooms.dedup();
        p.rooms = rooms;
        p.protocol = Protocol::Chat;
        for a in h.listen_addrs.iter().take(max_addrs) {
            if let Ok(a) = Multiaddr::try_from(a.clone()) {
                let (bare, id) = peers::split_p2p(&a);
                if id.is_none_or(|id| id == peer) && peers::is_dialable(&bare).is_ok() {
                    p.add_addr(peers::fix_unspecified(&bare, &addr), max_addrs);
                }
            }
        }
        if role == Role::Dialer {
            let (bare, _) = peers::split_p2p(&addr);
            if peers::is_dialable(&bare).is_ok() && p.addrs.is_empty() {
                p.add_addr(bare, max_addrs);
            }
        }
        let legacy_old = p.active.filter(|old| {
            self.conns
                .get(old)
                .is_some_and(|c| c.protocol == Protocol::Legacy)
        });
        if let Some(old) = legacy_old {
            // The same peer also speaks echo/chat/2: that connection replaces the legacy one.
            if let Some(p) = self.peers.get_mut(&peer) {
                p.active = Some(conn);
            }
            self.finish(old, "replaced by an echo/chat/2 connection", now);
            return self.activate(conn, now);
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        match p.active {
            None => self.activate(conn, now),
            // Already chosen while it was handshaking (the remote closed our previous
            // connection as its duplicate first): it simply becomes open.
            Some(old) if old == conn => self.activate(conn, now),
            Some(old) => {
                let was_up = p.up;
                let keep_old = self.key_of(old).zip(self.key_of(conn)).map(|(a, b)| a > b);
                match keep_old {
                    Some(true) => self.drain(conn, now),
                    Some(false) => {
                        // The new connection wins: move queued frames over.
                        let moved = self.conns.get_mut(&old).map(|c| c.take_movable());
                        if let Some(c) = self.conns.get_mut(&conn) {
                            if let Some(m) = moved {
                                c.outbox.extend_from_slice(&m);
                            }
                            self.ready.insert(conn);
                        }
                        if let Some(p) = self.peers.get_mut(&peer) {
                            p.active = Some(conn);
                        }
                        self.drain(old, now);
                    }
                    None => self.drain(conn, now),
                }
                if was_up && old_name != h.name && !old_name.is_empty() {
                    self.events.push_back(Event::NameChanged {
                        peer,
                        old: old_name,
                        new: h.name,
                    });
                }
            }
        }
    }

    fn key_of(&self, conn: ConnId) -> Option<(bool, u64)> {
        let c = self.conns.get(&conn)?;
        Some(peers::conn_key(
            &self.id,
            &c.peer,
            c.role,
            c.my_nonce,
            c.their_nonce?,
        ))
    }

    /// Makes `conn` the peer's connection and reports the peer up.
    fn activate(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let peer = c.peer;
        let is_chat = c.protocol == Protocol::Chat;
        let p = self.peers.entry(peer).or_insert_with(Peer::new);
        p.active = Some(conn);
        p.attempts = 0;
        p.next_dial = None;
        p.ever_connected = true;
        let stash = std::mem::take(&mut p.stash);
        p.stash_until = None;
        if !stash.is_empty() {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.outbox.extend_from_slice(&stash);
                self.ready.insert(conn);
            }
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.up {
            return;
        }
        p.up = true;
        let rooms = p.rooms.clone();
        if let Some(info) = self.peer_info(&peer, &self.peers[&peer]) {
            self.events.push_back(Event::PeerUp(info));
        }
        for r in rooms.iter().filter(|r| self.rooms.contains_key(*r)) {
            self.events.push_back(Event::MemberJoined {
                room: r.clone(),
                peer,
            });
        }
        if is_chat {
            self.exchange_peers(peer, now);
            self.send_profiles(peer, now);
            let shared: Vec<String> = rooms
                .iter()
                .filter(|r| self.rooms.contains_key(*r))
                .cloned()
                .collect();
            for r in shared {
                self.send_summary(peer, &r, now);
            }
        }
    }

    /// Peer exchange: tell `peer` about our other neighbours and them about `peer`.
    fn exchange_peers(&mut self, peer: PeerId, now: Instant) {
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
                self.send_frame(conn, &f, now);
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
            self.send_bytes(t, &wire, now);
        }
    }

    fn drain(&mut self, conn: ConnId, now: Instant) {
        let until = now + self.config.drain_timeout;
        let bye = Frame::new(Kind::Goodbye(wire::Goodbye {
            code: GoodbyeCode::Duplicate as u32,
            reason: "duplicate connection".into(),
        }));
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = State::Draining { until };
            bye.encode_to(&mut c.outbox);
            self.ready.insert(conn);
        }
    }

    fn on_goodbye(&mut self, conn: ConnId, g: wire::Goodbye, now: Instant) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let peer = c.peer;
        let draining = matches!(c.state, State::Draining { .. });
        let reason: String = g
            .reason
            .chars()
            .filter(|c| !c.is_control())
            .take(256)
            .collect();
        if g.code == GoodbyeCode::Duplicate as u32 {
            if !draining {
                // The remote chose another connection before we saw it. Keep our queued
                // frames for that connection, answer, and close this one.
                let moved = self.conns.get_mut(&conn).map(|c| c.take_movable());
                let handshaking = self
                    .conns
                    .iter()
                    .find(|(id, c)| **id != conn && c.peer == peer && c.protocol == Protocol::Chat)
                    .map(|(id, _)| *id);
                let is_active = self.peers.get(&peer).and_then(|p| p.active) == Some(conn);
                match (handshaking, moved) {
                    (Some(other), Some(m)) => {
                        if let Some(o) = self.conns.get_mut(&other) {
                            o.outbox.extend_from_slice(&m);
                            self.ready.insert(other);
                        }
                        if is_active {
                            if let Some(p) = self.peers.get_mut(&peer) {
                                p.active = Some(other);
                            }
                        }
                    }
                    (None, Some(m)) if !m.is_empty() => {
                        let until = now + self.config.drain_timeout;
                        if let Some(p) = self.peers.get_mut(&peer) {
                            p.stash.extend_from_slice(&m);
                            p.stash_until = Some(until);
                        }
                        self.timed_peers.insert(peer);
                    }
                    _ => {}
                }
                self.close(
                    conn,
                    GoodbyeCode::Duplicate,
                    "duplicate connection",
                    false,
                    now,
                );
            } else {
                self.finish(conn, "duplicate connection closed", now);
            }
            return;
        }
        let text = if reason.is_empty() {
            "peer said goodbye".to_string()
        } else {
            format!("peer said goodbye: {reason}")
        };
        if g.code == GoodbyeCode::Shutdown as u32 {
            // It left on purpose: keep trying, but not at once and not often.
            if let Some(p) = self.peers.get_mut(&peer) {
                p.attempts = p.attempts.max(GOODBYE_BACKOFF_STEPS);
            }
        }
        self.finish(conn, &text, now);
    }

    fn on_pong(&mut self, conn: ConnId, nonce: u64, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some((n, sent)) = c.ping_out else {
            return;
        };
        if n != nonce {
            return;
        }
        c.ping_out = None;
        c.next_ping = now + self.config.ping_interval;
        let rtt = now.saturating_duration_since(sent);
        let peer = c.peer;
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.active == Some(conn) {
                p.rtt = Some(rtt);
                self.events.push_back(Event::PeerRtt { peer, rtt });
            }
        }
    }

    /// `checked`: the author, when the fast path already parsed it and found the message
    /// new.
    fn on_message(
        &mut self,
        conn: ConnId,
        m: wire::RoomMessage,
        checked: Option<PeerId>,
        now: Instant,
    ) {
        self.stats.messages_in += 1;
        if m.text.len() > self.config.max_text_len {
            return self.violation(conn, "message text over the limit", now);
        }
        if m.name.len() > self.config.max_name_len {
            return self.violation(conn, "author name over the limit", now);
        }
        let Some(room) = self.rooms.get_mut(&m.room) else {
            return; // not (or no longer) in that room
        };
        // Cheap duplicate check before hashing (unless the fast path just did it).
        let author = match checked {
            Some(a) => a,
            None => match PeerId::from_bytes(&m.author) {
                Ok(a) => a,
                Err(e) => {
                    return self.violation(conn, &format!("bad room message: author: {e}"), now)
                }
            },
        };
        if checked.is_none() && room.is_known(&author, m.seq) {
            self.stats.duplicates += 1;
            return;
        }
        if !self.clock.acceptable(m.lamport, now) {
            // Too far ahead: accepted once the wall clock catches up (section 8.3).
            self.stats.clock_refused += 1;
            return;
        }
        let msg = match Message::from_wire_parsed(m, author) {
            Ok(msg) => Arc::new(msg),
            Err(e) => return self.violation(conn, &format!("bad room message: {e}"), now),
        };
        let room_name = msg.room.clone();
        let intake = room.receive(msg, conn, now);
        for m in &intake.verified {
            self.adopt_clock(m.lamport, now);
        }
        if intake.duplicate {
            self.stats.duplicates += 1;
        }
        if intake.full {
            self.stats.buffer_full += 1;
        }
        for f in intake.forgers {
            self.stats.forgeries += 1;
            self.bad_signature(f, now);
        }
        if !intake.verified.is_empty() {
            self.relay(&room_name, conn, &intake.verified, now);
        }
        self.deliver(intake.delivered, now);
    }

    fn bad_signature(&mut self, conn: ConnId, now: Instant) {
        let max = self.config.max_bad_signatures;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.bad_sigs += 1;
            if c.bad_sigs >= max {
                let reason = format!("{} messages with invalid signatures", c.bad_sigs);
                self.violation(conn, &reason, now);
            }
        }
    }

    /// Forwards verified messages to room members other than the sender and author.
    /// A forwarded run always ends with a signed message (extending it from the chain
    /// if needed) so the receiver can verify it.
    fn relay(&mut self, room: &str, from: ConnId, msgs: &[SharedMessage], now: Instant) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let mut authors: Vec<PeerId> = msgs.iter().map(|m| m.author).collect();
        authors.dedup();
        let from_peer = self.conns.get(&from).map(|c| c.peer);
        let targets: Vec<ConnId> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                p.up && p.protocol == Protocol::Chat
                    && p.in_room(room)
                    && !authors.contains(id)
                    && Some(**id) != from_peer
            })
            .filter_map(|(_, p)| p.active)
            .collect();
        if targets.is_empty() {
            return;
        }
        let mut wire = BytesMut::new();
        let mut last: Option<&SharedMessage> = None;
        for m in msgs {
            Frame::new(Kind::Message(m.to_wire())).encode_to(&mut wire);
            last = Some(m);
        }
        if let Some(last) = last.filter(|l| l.signature.is_none()) {
            if let Some(a) = r.authors.get(&last.author) {
                for m in a.chain.through_next_signature(last.seq) {
                    Frame::new(Kind::Message(m.to_wire())).encode_to(&mut wire);
                }
            }
        }
        let wire = wire.freeze();
        for t in targets {
            self.stats.relayed += msgs.len() as u64;
            self.send_bytes(t, &wire, now);
        }
    }

    fn deliver(&mut self, delivered: Vec<(SharedMessage, crate::log::Position)>, now: Instant) {
        for (msg, pos) in delivered {
            self.stats.delivered += 1;
            self.send_legacy(&msg, now);
            self.events.push_back(Event::Message {
                msg,
                position: Some(pos),
            });
        }
    }

    fn on_membership(&mut self, conn: ConnId, m: wire::Membership, now: Instant) {
        if let Err(e) = valid_room(&m.room, self.config.max_room_len) {
            return self.violation(conn, &format!("invalid room name: {e}"), now);
        }
        let Some(peer) = self.active_peer(conn) else {
            return;
        };
        let max = self.config.max_rooms;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let had = p.in_room(&m.room);
        if m.joined && !had {
            if p.rooms.len() >= max {
                return self.violation(conn, "joined too many rooms", now);
            }
            p.rooms.push(m.room.clone());
            p.rooms.sort();
        } else if !m.joined && had {
            p.rooms.retain(|r| *r != m.room);
        } else {
            return;
        }
        if self.rooms.contains_key(&m.room) {
            if m.joined {
                self.send_summary(peer, &m.room, now);
            }
            self.events.push_back(if m.joined {
                Event::MemberJoined { room: m.room, peer }
            } else {
                Event::MemberLeft { room: m.room, peer }
            });
        }
    }

    /// The peer whose active connection `conn` is (frames on a draining duplicate are
    /// still accepted: they were sent before the remote saw the tie-break).
    fn active_peer(&self, conn: ConnId) -> Option<PeerId> {
        let c = self.conns.get(&conn)?;
        self.peers.get(&c.peer).filter(|p| p.up).map(|_| c.peer)
    }

    fn on_direct(&mut self, conn: ConnId, d: wire::Direct, now: Instant) {
        if d.text.len() > self.config.max_text_len {
            return self.violation(conn, "direct message over the limit", now);
        }
        let Some(from) = self.active_peer(conn) else {
            return;
        };
        let name = self
            .peers
            .get(&from)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        self.events.push_back(Event::Direct {
            from,
            name,
            text: d.text,
            sent_at_ms: d.sent_at_ms,
        });
    }

    fn on_peers(&mut self, conn: ConnId, list: wire::PeerList, now: Instant) {
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
            let connected = self.peers.values().filter(|p| p.up).count();
            let p = self.peers.entry(id).or_insert_with(Peer::new);
            for a in addrs {
                p.add_addr(a, max_addrs);
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
                self.timed_peers.insert(id);
            }
        }
        let _ = conn;
    }

    fn on_legacy_line(&mut self, conn: ConnId, line: legacy::Line, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.charge(line.text.len() + line.name.len() + 2, now) {
            return self.violation(conn, "rate limit exceeded", now);
        }
        let peer = c.peer;
        let mut name: String = line.name;
        name.truncate(name.floor_char_boundary(self.config.max_name_len));
        let mut text = line.text;
        text.truncate(text.floor_char_boundary(self.config.max_text_len));
        if let Some(p) = self.peers.get_mut(&peer) {
            if name.is_empty() {
                // A line without `name|` keeps the last claimed name.
                name = p.name.clone();
            } else if p.name != name {
                let old = std::mem::replace(&mut p.name, name.clone());
                if !old.is_empty() {
                    self.events.push_back(Event::NameChanged {
                        peer,
                        old,
                        new: name.clone(),
                    });
                }
            }
        }
        let Some(room) = self.config.default_room.clone() else {
            return;
        };
        if !self.rooms.contains_key(&room) {
            return;
        }
        let msg = Message {
            room,
            author: peer,
            name,
            seq: 0,
            lamport: self.clock.value(),
            sent_at_ms: 0,
            text,
            verified: false,
            prev: crate::message::GENESIS,
            prev_seq: 0,
            hash: crate::message::GENESIS,
            signature: None,
        };
        self.events.push_back(Event::Message {
            msg: Arc::new(msg),
            position: None,
        });
    }

    /// Sends a default-room message to legacy peers as `name|text\n`.
    fn send_legacy(&mut self, msg: &Message, now: Instant) {
        if self.config.default_room.as_deref() != Some(msg.room.as_str()) {
            return;
        }
        let targets: Vec<ConnId> = self
            .peers
            .iter()
            .filter(|(id, p)| p.up && p.protocol == Protocol::Legacy && **id != msg.author)
            .filter_map(|(_, p)| p.active)
            .collect();
        if targets.is_empty() {
            return;
        }
        let mut line = Vec::new();
        legacy::encode(&msg.name, &msg.text, &mut line);
        for t in targets {
            self.send_bytes(t, &line, now);
        }
    }

    // ----- sending ---------------------------------------------------------------------

    fn send_frame(&mut self, conn: ConnId, frame: &Frame, now: Instant) {
        let mut buf = BytesMut::new();
        frame.encode_to(&mut buf);
        self.send_bytes(conn, &buf, now);
    }

    /// Queues bytes on a connection, closing it if the peer is not reading.
    fn send_bytes(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.outbox.extend_from_slice(data);
        self.ready.insert(conn);
        if c.queued() > self.config.max_queued_bytes {
            let reason = format!("peer is not reading ({} bytes queued)", c.queued());
            // What it has not read is dropped; only the goodbye is queued.
            c.outbox.clear();
            self.close(conn, GoodbyeCode::ProtocolViolation, &reason, true, now);
        }
    }

    /// Sends a frame to every open chat peer.
    fn broadcast_chat(&mut self, frame: &Frame, now: Instant) {
        let wire = frame.to_wire();
        let targets: Vec<ConnId> = self
            .peers
            .values()
            .filter(|p| p.up && p.protocol == Protocol::Chat)
            .filter_map(|p| p.active)
            .collect();
        for t in targets {
            self.send_bytes(t, &wire, now);
        }
    }

    /// Signs the newest unsent own message of each room and queues all unsent ones.
    fn seal(&mut self) {
        if self.unsealed.is_empty() {
            return;
        }
        let unsealed = std::mem::take(&mut self.unsealed);
        let mut per_room: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (room, seq) in unsealed {
            per_room.entry(room).or_default().push(seq);
        }
        for (room, seqs) in per_room {
            let Some(r) = self.rooms.get_mut(&room) else {
                continue;
            };
            let Some(&last) = seqs.last() else { continue };
            // The last of the burst, and every `sign_every`-th, carry a signature.
            let every = self.config.sign_every.max(1);
            for &seq in seqs.iter().filter(|&&s| s == last || s % every == 0) {
                let Some(a) = r.authors.get(&self.id) else {
                    continue;
                };
                if let Some(m) = a.chain.get(seq).filter(|m| m.signature.is_none()) {
                    let mut signed = Message::clone(m);
                    signed.sign(&self.key);
                    self.stats.signatures += 1;
                    r.replace_local(&self.id, Arc::new(signed));
                }
            }
            let Some(a) = r.authors.get(&self.id) else {
                continue;
            };
            let mut wire = BytesMut::new();
            for s in &seqs {
                if let Some(m) = a.chain.get(*s) {
                    Frame::new(Kind::Message(m.to_wire())).encode_to(&mut wire);
                }
            }
            let targets: Vec<ConnId> = self
                .peers
                .values()
                .filter(|p| p.up && p.protocol == Protocol::Chat && p.in_room(&room))
                .filter_map(|p| p.active)
                .collect();
            let now = self.last_now;
            for t in targets {
                self.send_bytes(t, &wire, now);
            }
        }
    }

    // ----- closing -----------------------------------------------------------------

    /// Closes a connection from our side: goodbye (chat), final bytes, `Close` action.
    fn close(
        &mut self,
        conn: ConnId,
        code: GoodbyeCode,
        reason: &str,
        misbehaved: bool,
        now: Instant,
    ) {
        let Some(mut c) = self.conns.remove(&conn) else {
            return;
        };
        self.ready.remove(&conn);
        if c.protocol == Protocol::Chat {
            Frame::new(Kind::Goodbye(wire::Goodbye {
                code: code as u32,
                reason: reason.into(),
            }))
            .encode_to(&mut c.outbox);
        }
        if misbehaved {
            self.stats.misbehaved += 1;
            self.events.push_back(Event::Misbehaved {
                peer: c.peer,
                reason: reason.to_string(),
            });
        }
        self.release(conn, c, reason, now);
    }

    /// Closes a connection whose remote said goodbye.
    fn finish(&mut self, conn: ConnId, reason: &str, now: Instant) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.ready.remove(&conn);
        self.release(conn, c, reason, now);
    }

    /// Hands out a removed connection's last bytes, asks the runtime to close it, and
    /// forgets it.
    fn release(&mut self, conn: ConnId, mut c: Conn, reason: &str, now: Instant) {
        if let Some(data) = c.take_transmit(usize::MAX, true) {
            self.urgent.push_back(Transmit { conn, data });
        }
        self.actions.push_back(Action::Close {
            conn,
            reason: reason.to_string(),
        });
        self.detach(conn, c, reason, now);
    }

    /// Forgets a closed connection; reports the peer down if it was its connection.
    fn detach(&mut self, conn: ConnId, c: Conn, reason: &str, now: Instant) {
        let peer = c.peer;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.active != Some(conn) {
            // A connection that never became the peer's (its handshake failed, or it was
            // a losing duplicate). If it was our only way to the peer, try again later.
            let others = self.conns.values().any(|o| o.peer == peer);
            if !p.up && !others && p.dialing.is_none() && !self.shut_down {
                self.schedule_redial(peer, now);
            }
            return;
        }
        p.active = None;
        // Another open connection to the same peer takes over if there is one.
        let other = self
            .conns
            .iter()
            .find(|(_, o)| o.peer == peer && o.is_open())
            .map(|(id, _)| *id);
        if let Some(other) = other {
            let p = self.peers.get_mut(&peer).expect("peer exists");
            p.active = Some(other);
            return;
        }
        let was_up = std::mem::replace(&mut p.up, false);
        let rooms = std::mem::take(&mut p.rooms);
        if was_up {
            let (name, rtt) = (p.name.clone(), p.rtt);
            for r in rooms.into_iter().filter(|r| self.rooms.contains_key(r)) {
                self.events.push_back(Event::MemberLeft { room: r, peer });
            }
            self.events.push_back(Event::PeerDown {
                peer,
                name,
                reason: reason.to_string(),
                rtt,
            });
        }
        if !self.shut_down {
            self.schedule_redial(peer, now);
            self.top_up(now);
        }
    }

    /// Dials learned peers while fewer than `target_peers` are connected.
    fn top_up(&mut self, now: Instant) {
        if !self.config.auto_connect {
            return;
        }
        let connected = self.peers.values().filter(|p| p.up).count();
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
                self.timed_peers.insert(id);
            }
        }
    }

    // ----- timers and dialing ------------------------------------------------------

    fn conn_timeout(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        match c.state {
            State::Handshaking if now >= c.opened + self.config.handshake_timeout => {
                self.close(
                    id,
                    GoodbyeCode::ProtocolViolation,
                    "handshake timed out",
                    false,
                    now,
                );
            }
            State::Draining { until } if now >= until => {
                self.finish(id, "duplicate connection drained", now);
            }
            State::Open if c.protocol == Protocol::Chat => {
                if now >= c.last_recv + self.config.idle_timeout {
                    let reason = format!("no answer for {:?}", self.config.idle_timeout);
                    self.close(id, GoodbyeCode::Idle, &reason, false, now);
                } else if c.ping_out.is_none() && now >= c.next_ping {
                    let nonce: u64 = self.rng.random();
                    c.ping_out = Some((nonce, now));
                    self.send_frame(id, &Frame::new(Kind::Ping(wire::Ping { nonce })), now);
                }
            }
            _ => {}
        }
    }

    fn dial(&mut self, addr: Multiaddr, peer: Option<PeerId>) -> DialId {
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

    fn redial(&mut self, peer: PeerId, now: Instant) {
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
        let Some(addr) = p.dial_addr().cloned() else {
            return;
        };
        let _ = now;
        self.dial(addr, Some(peer));
    }

    fn schedule_redial(&mut self, peer: PeerId, now: Instant) {
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
        if !p.ever_connected && p.attempts + 1 >= max_unconnected {
            self.peers.remove(&peer);
            return;
        }
        p.next_dial = Some(now + peers::backoff(initial, max, p.attempts, jitter));
        p.attempts = p.attempts.saturating_add(1);
        self.timed_peers.insert(peer);
    }
}
