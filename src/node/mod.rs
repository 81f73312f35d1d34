//! [`Node`]: the chat protocol state machine. Inputs are `handle_*` calls and user
//! commands; outputs are drained with [`Node::poll_output`]. See the crate docs for the
//! run loop.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::BytesMut;
use libp2p_identity::{Keypair, PeerId, PublicKey};
use multiaddr::Multiaddr;

use crate::clock::{unix_ms, Clock};
use crate::config::Config;
use crate::error::CommandError;
use crate::event::{Action, ConnId, ConnInfo, DialId, Event, Output, PeerInfo, Protocol, Transmit};
use crate::identity::Identity;
use crate::links::{AddrSource, Links};
use crate::message::{Message, SharedMessage};
use crate::peers;
use crate::rooms::{Limits, Room};
use crate::timers::TimedMap;
use crate::wire::{self, Frame, Kind};

mod clock;
mod dm;
mod dups;
mod history;
mod persist;
mod profile;
mod recv;
mod route;
mod tree;

pub use persist::{Restore, RestoreRoom};
use profile::ProfileRec;

/// Counters for tests, benches and diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Frames decoded from peers.
    pub frames_in: u64,
    /// Frames received from peers by kind: index = the frame's field number
    /// ([`crate::wire::Kind`]: 5 room messages, 10 summaries, 11 requests, 16
    /// announcements, 17 prunes, 18 grafts); 0 for anything else.
    pub frames_in_kind: [u64; 19],
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
    /// History and summary bytes sent over relayed connections (each stops at
    /// `relayed_sync_budget`, give or take the end of a signed run).
    pub relayed_sync_bytes: u64,
    /// Connections replaced because the peer restarted while its old one looked open
    /// (`Hello.session` changed).
    pub peer_restarts: u64,
    /// Sync ranges left out because a connection's sync queue was full.
    pub sync_dropped: u64,
    /// Authors evicted from joined rooms to stay within `max_authors`.
    pub authors_evicted: u64,
    /// Profiles evicted to stay within `max_profiles`.
    pub profiles_evicted: u64,
    /// Peers in the address book (bounded by `max_known_peers`, connected ones aside).
    pub known_peers: u64,
    /// Addresses in the address book, over all peers.
    pub known_addrs: u64,
    /// Peers evicted from the full address book.
    pub peers_evicted: u64,
    /// Chat connections whose handshake is in flight.
    pub handshakes: u64,
    /// Open legacy connections.
    pub legacy_conns: u64,
    /// Dials of unconfirmed learned addresses.
    pub learned_dials: u64,
    /// Dials of unconfirmed learned addresses put off by `learned_dials_per_sec`.
    pub learned_dials_refused: u64,
    /// Direct messages and the mailbox.
    pub dm: crate::dm::DmStats,
    /// Broadcast tree: links this node pruned to lazy (Prune frames sent).
    pub tree_prunes: u64,
    /// Broadcast tree: links this node grafted back to eager (Graft frames sent).
    pub tree_grafts: u64,
    /// Broadcast tree: announcement frames sent to lazy neighbours.
    pub tree_announces: u64,
    /// Broadcast tree: announced ids or missing entries dropped at their bounds.
    pub tree_dropped: u64,
    /// Gauge: lazy (neighbour, room) links.
    pub tree_lazy: u64,
    /// Gauge: announced messages missing here, waiting for their graft timer
    /// (at most 1,024).
    pub tree_missing: u64,
    /// Broadcast tree: requests sent at once for a message a neighbour's `link_prev`
    /// named and this node lacked (a frame lost on the link).
    pub tree_link_requests: u64,
}

/// An echo chat node. Pure state: no I/O, no clock, no threads.
pub struct Node {
    key: Keypair,
    public: PublicKey,
    id: PeerId,
    config: Config,
    name: String,
    listen_addrs: Vec<Multiaddr>,
    clock: Clock,
    /// Connections, peers, dialing: the links state machine.
    links: Links,
    /// Joined rooms, with their chain timers ([`Room::deadline`]).
    rooms: TimedMap<String, Room>,
    /// Own messages not yet signed and sent: (room, seq).
    unsealed: Vec<(String, u64)>,
    events: VecDeque<Event>,
    stats: Stats,
    /// The latest `now` passed in (for work done inside `poll_transmit`).
    last_now: Instant,
    /// Signed display names of other authors.
    profiles: BTreeMap<PeerId, ProfileRec>,
    /// Our own signed profile.
    own_profile: ProfileRec,
    /// Reservations of rooms the node left: a rejoin continues above them.
    retired: BTreeMap<String, u64>,
    /// End-to-end encrypted direct messages and the mailbox.
    dm: dm::Dm,
    /// The rooms' broadcast tree (eager and lazy neighbours).
    tree: tree::Tree,
    /// Messages delivered from their author before their signature was checked.
    unconfirmed: Vec<recv::Unconfirmed>,
    /// [`Output::Yield`] was returned since the last event: the next `poll_output` checks.
    yield_offered: bool,
    /// Payloads of recently taken room-message frames, to drop copies cheaply.
    dups: dups::DupCache,
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
        let dm = dm::Dm::new(&key, seed);
        let public = key.public();
        let id = public.to_peer_id();
        Node {
            name: config.name.clone(),
            key,
            public,
            id,
            listen_addrs: Vec::new(),
            clock: Clock::new(config.max_clock_skew),
            links: Links::new(id, config.clone(), seed, now),
            rooms: TimedMap::new(),
            unsealed: Vec::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            last_now: now,
            profiles: BTreeMap::new(),
            own_profile: ProfileRec::default(),
            retired: BTreeMap::new(),
            dm,
            tree: tree::Tree::default(),
            unconfirmed: Vec::new(),
            yield_offered: false,
            dups: dups::DupCache::new(seed),
            config,
        }
    }

    /// Creates a room's state, reserves its first block of sequence numbers and reports
    /// both.
    fn create_room(&mut self, name: &str, mut room: Room) {
        room.own_next = room.own_next.max(room.reserved);
        self.links.rooms.insert(name.to_string());
        // A new room's `forgets` count starts again: no remembered frame may match it.
        self.dups.clear();
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
        s.dm = self.dm.stats();
        s.tree_lazy = self.tree.lazy_links();
        s.tree_missing = self.tree.missing_len();
        self.links.gauges(&mut s);
        for c in self.links.conns.values() {
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
    pub fn room_log(
        &self,
        room: &str,
    ) -> Option<impl DoubleEndedIterator<Item = &SharedMessage> + ExactSizeIterator> {
        self.rooms.get(room).map(|r| r.log.iter())
    }

    /// Connected peers.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.links.peer_infos()
    }

    /// Connected peers that announced `room`.
    pub fn members(&self, room: &str) -> Vec<PeerId> {
        self.links.members(room)
    }

    /// Bytes queued for a peer's connection and not yet reported written (0 if not
    /// connected): lets an app pace what it sends to a slow peer.
    pub fn queued_bytes(&self, peer: &PeerId) -> usize {
        self.links.queued_bytes(peer)
    }

    /// Connections currently open or opening (for diagnostics and tests).
    pub fn connection_count(&self, peer: &PeerId) -> usize {
        self.links.connection_count(peer)
    }

    // ----- outputs -------------------------------------------------------------------

    /// The next output. Call it until it returns [`Output::Wait`] after every input (and
    /// after handling each output: handling a transmit or an action may call the node
    /// again). Transmits come first (a closed connection's final bytes, then connections
    /// with bytes ready), then actions, then events, then the wait, so a caller that
    /// handles outputs in the order given always writes a goodbye's bytes before it
    /// closes their connection.
    ///
    /// Room messages delivered before their signature was checked (they came from their
    /// author directly, [`Config::deliver_before_verify`]) are checked once the events
    /// are out, before the wait; what that relays (or closes) comes out next. Before that
    /// check the node returns [`Output::Yield`] once, so a caller whose app runs on the
    /// same thread can let it take the events first.
    pub fn poll_output(&mut self) -> Output {
        if let Some(t) = self.poll_transmit() {
            return Output::Transmit(t);
        }
        if let Some(a) = self.poll_action() {
            return Output::Action(a);
        }
        if let Some(e) = self.poll_event() {
            self.yield_offered = false;
            return Output::Event(e);
        }
        if !self.unconfirmed.is_empty() && !std::mem::replace(&mut self.yield_offered, true) {
            return Output::Yield;
        }
        // Messages delivered before their signature check are checked now that the app
        // has them; what that relays (or closes) comes out next.
        if self.check_unconfirmed(self.last_now) {
            return self.poll_output();
        }
        Output::Wait(self.poll_timeout())
    }

    /// Next bytes to write.
    #[must_use]
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.seal();
        if let Some(t) = self.links.urgent.pop_front() {
            return Some(t);
        }
        while let Some(conn) = self.links.ready.pop_first() {
            let window = self.config.write_window;
            self.pump_sync(conn);
            // Handing out bytes changes no timer.
            let links = &mut self.links;
            let data = links
                .conns
                .update_untimed(&conn, &links.config, |c| c.take_transmit(window, false));
            if let Some(data) = data.flatten() {
                return Some(Transmit { conn, data });
            }
        }
        None
    }

    /// Next action for the runtime (dial, close).
    #[must_use]
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.links.actions.pop_front()
    }

    /// Next event for the app.
    #[must_use]
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Node::handle_timeout`] next (`None`: no timer needed).
    #[must_use]
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        if !self.unconfirmed.is_empty() {
            return Some(self.last_now);
        }
        let rooms = self.rooms.next(&());
        let dm = self.dm.deadline();
        rooms
            .into_iter()
            .chain(dm)
            .chain(self.links.poll_timeout())
            .chain(self.tree.next_timeout())
            .min()
    }

    // ----- inputs from the runtime --------------------------------------------------

    /// Tells the node its own listen addresses (announced in hellos).
    pub fn set_listen_addrs(&mut self, addrs: Vec<Multiaddr>) {
        self.listen_addrs = addrs;
    }

    /// A connection's chat substream is up.
    pub fn handle_connected(&mut self, conn: ConnId, info: ConnInfo, now: Instant) {
        self.last_now = self.last_now.max(now);
        let hello = self.hello(0);
        let (links, mut out) = self.split();
        links.handle_connected(conn, info, hello, now, &mut out);
        self.greet(now);
    }

    /// The runtime wrote `bytes` of this connection's transmits.
    pub fn handle_sent(&mut self, conn: ConnId, bytes: usize) {
        self.links.handle_sent(conn, bytes);
    }

    /// A connection closed (EOF, error or reset). `reason` is for the app.
    pub fn handle_closed(&mut self, conn: ConnId, reason: &str, now: Instant) {
        self.last_now = self.last_now.max(now);
        let (links, mut out) = self.split();
        links.handle_closed(conn, reason, now, &mut out);
    }

    /// A dial the node asked for failed.
    pub fn handle_dial_failed(&mut self, dial: DialId, error: &str, now: Instant) {
        self.last_now = self.last_now.max(now);
        let (links, mut out) = self.split();
        links.handle_dial_failed(dial, error, now, &mut out);
    }

    /// A timer fired. Spurious and late calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        self.check_unconfirmed(now);
        let (links, mut out) = self.split();
        links.handle_timeout(now, &mut out);
        self.rooms_timeout(now);
        self.sync_timeout(now);
        self.dm_timeout(now);
        self.tree_timeout(now);
        self.links.peers_timeout(now, &mut self.stats);
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
        self.dups.clear();
        self.retired.insert(room.to_string(), r.reserved);
        self.links.rooms.remove(room);
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
    /// and sent, signed, on the next [`Node::poll_output`].
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
            .links
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
        let (links, mut out) = self.split();
        let dial = links.connect(bare, ma, peer, now, &mut out);
        Ok(dial)
    }

    /// Addresses for `peer` learned by the app (mDNS, a directory) or kept by it
    /// ([`AddrSource`]). The node remembers them (within `max_addrs_per_peer` and the
    /// book's bound) and dials the peer if it is not connected, not being dialed and not
    /// waiting out a redial backoff; calling again on every announcement never dials
    /// faster than that backoff (and discovered addresses not faster than
    /// `learned_dials_per_sec`). Returns how many addresses were usable.
    pub fn handle_addresses(
        &mut self,
        peer: PeerId,
        addrs: &[Multiaddr],
        source: AddrSource,
        now: Instant,
    ) -> usize {
        self.last_now = self.last_now.max(now);
        let (links, mut out) = self.split();
        links.handle_addresses(peer, addrs, source, now, &mut out)
    }

    /// Says goodbye on every connection and closes them; the node accepts no more
    /// commands or connections.
    pub fn shutdown(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        // Messages sent but not yet sealed go out before the goodbyes, and received ones
        // still unchecked are checked (and relayed) first.
        self.check_unconfirmed(now);
        self.seal();
        let (links, mut out) = self.split();
        links.shutdown(now, &mut out);
    }

    fn check_up(&self) -> Result<(), CommandError> {
        if self.links.shut_down {
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

    /// `checked`: the author, when the fast path already parsed it and found the message
    /// new.
    fn on_message(
        &mut self,
        conn: ConnId,
        m: wire::MessageRef<'_>,
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
        let Some(room) = self.rooms.get_mut(m.room) else {
            return; // not (or no longer) in that room
        };
        // Cheap duplicate check before hashing (unless the fast path just did it).
        let author = match checked {
            Some(a) => a,
            None => match PeerId::from_bytes(m.author) {
                Ok(a) => a,
                Err(e) => {
                    return self.violation(conn, &format!("bad room message: author: {e}"), now)
                }
            },
        };
        if checked.is_none() && room.is_known(&author, m.seq) {
            self.stats.duplicates += 1;
            return self.tree_duplicate(conn, m.room, &author, now);
        }
        if !self.clock.acceptable(m.lamport, now) {
            // Too far ahead: accepted once the wall clock catches up (section 8.3).
            self.stats.clock_refused += 1;
            return;
        }
        let from_author = self.may_deliver_first(conn, &author);
        let Some(room) = self.rooms.get_mut(m.room) else {
            return;
        };
        let msg = match Message::from_wire_parsed(m, author) {
            Ok(msg) => crate::message::share(msg),
            Err(e) => return self.violation(conn, &format!("bad room message: {e}"), now),
        };
        // The room's name, borrowed from the message (no copy): `self` is free below.
        let shared = msg.clone();
        let room_name = shared.room.as_str();
        let intake = room.receive(msg, conn, from_author, now);
        for m in &intake.verified {
            self.adopt_clock(m.lamport, now);
        }
        if let Some((lamport, new)) = intake.provisional {
            self.adopt_clock(lamport, now);
            if new {
                self.unconfirmed.push(recv::Unconfirmed {
                    tail: shared.clone(),
                    conn,
                });
            }
        }
        if intake.duplicate {
            self.stats.duplicates += 1;
            self.tree_duplicate(conn, room_name, &author, now);
        }
        if intake.full {
            self.stats.buffer_full += 1;
        }
        for f in intake.forgers {
            self.stats.forgeries += 1;
            self.bad_signature(f, now);
        }
        if !intake.verified.is_empty() {
            self.relay(room_name, conn, &intake.verified, now);
        }
        self.deliver(intake.delivered, now);
    }

    // ----- sending ---------------------------------------------------------------------

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
                    m.encode_frame_to(&mut wire);
                }
            }
            let targets = self.room_targets(&room, &[]);
            let me = self.id;
            let ids = seqs.iter().map(|s| (me, *s));
            let now = self.last_now;
            self.push_room(&room, targets, &wire.freeze(), ids, now);
        }
    }

    // ----- closing -----------------------------------------------------------------

    // ----- timers and dialing ------------------------------------------------------
}
