//! Restart safety: what a node must keep, and how it comes back.
//!
//! The app persists, as they come out of the node:
//! * the identity key (it creates it; the node never sees storage);
//! * every [`Event::Message`] with a `position` (the room logs; store
//!   `msg.encode()`, which carries the hash chain and any signature);
//! * every [`Event::SeqReserved`] (the highest `upto` per room);
//! * its joined rooms ([`Event::Joined`] / [`Event::Left`]).
//!
//! On start it passes them back through [`Node::restore`]. The node continues each of its
//! own chains above the reserved numbers, so it never reuses a sequence number, even
//! when the app lost the last messages before a crash; its next message names its last
//! known one as `prev`, and receivers hop over the unused numbers at once.
//!
//! [`Node::export`] gives the same state as a snapshot, for apps that prefer that.

use std::sync::Arc;
use std::time::Instant;

use multiaddr::Multiaddr;

use super::Node;
use crate::clock::MAX_CLOCK;
use crate::config::Config;
use crate::event::Event;
use crate::identity::Identity;
use crate::message::{Message, SharedMessage};
use crate::rooms::{Limits, Room};

/// How far a restored node moves its Lamport clock past what it stored.
const LAMPORT_RESTART_JUMP: u64 = 1_000;

/// State to restart a node from.
#[derive(Debug, Clone, Default)]
pub struct Restore {
    /// The rooms the node was in. Empty (and no `retired`): start fresh, in the default
    /// room.
    pub rooms: Vec<RestoreRoom>,
    /// The node's clock ([`Node::clock`]), if stored (it is also recomputed from the
    /// messages). Like every received value it moves the clock by at most the bound of
    /// PROTOCOL.md section 8.3.
    pub lamport: u64,
    /// The wall clock at the restart (`Some(SystemTime::now())`): lets the restored clock
    /// and the first profile follow it at once. Without it, stored clock values are
    /// adopted at the first wall reading ([`Node::set_wall_clock`], [`Node::send`]).
    pub wall: Option<std::time::SystemTime>,
    /// Peers to reconnect to: their listen addresses ending in `/p2p/<id>` (as in
    /// [`crate::PeerInfo::listen_addrs`]). They are dialed at start and, like peers
    /// reached with [`Node::connect`], redialed with backoff while unreachable.
    pub peers: Vec<Multiaddr>,
    /// Rooms the node left, with their highest reservation ([`Event::SeqReserved`]
    /// `upto`). Keep these after leaving: rejoining continues above them, so even a
    /// rejoin after a restart never reuses a sequence number.
    pub retired: Vec<(String, u64)>,
    /// Direct-message state saved with [`Node::export_dm`] (sequence numbers, replay
    /// windows, carried envelopes); empty: none. Bytes that do not decode are ignored
    /// (logged by the app), as if nothing was stored.
    pub dm: Vec<u8>,
    /// Direct-message sequence numbers the app reserved ahead, per conversation: the
    /// first number not reserved (from [`Node::dm_next_seq`] before sending). A
    /// restored node's next message to that peer gets at least this number, so a crash
    /// between sending and saving [`Node::export_dm`] never makes it reuse one (the
    /// recipient would drop the new message as a replay). Empty: none.
    pub dm_reserved: Vec<(libp2p_identity::PeerId, u64)>,
}

/// One room's persisted state.
#[derive(Debug, Clone, Default)]
pub struct RestoreRoom {
    /// Room name.
    pub name: String,
    /// The highest `upto` of the room's [`Event::SeqReserved`] events (0 if none).
    pub reserved: u64,
    /// The room's messages, in any order (own and others').
    pub messages: Vec<Message>,
}

impl Node {
    /// A node restarted from persisted state (see the module docs of `persist`).
    ///
    /// Stored messages are trusted (they were verified when first received) and are
    /// not reported again as events. Reports [`Event::Joined`] and a fresh
    /// [`Event::SeqReserved`] for each room.
    /// `seed` seeds the node's RNG as in [`Node::new`].
    pub fn restore(
        identity: Identity,
        config: Config,
        seed: u64,
        state: Restore,
        now: Instant,
    ) -> Node {
        let mut node = Node::empty(identity, config, seed, now);
        if let Some(wall) = state.wall {
            node.clock.set_wall(wall, now);
        }
        // Values over the bound (a clock poisoned before it existed) are clamped.
        node.adopt_clock(state.lamport, now);
        node.retired = state.retired.into_iter().collect();
        if !state.dm.is_empty() {
            let _ = node.import_dm(&state.dm, now);
        }
        for (peer, upto) in state.dm_reserved {
            node.dm_reserve(peer, upto);
        }
        for addr in state.peers {
            node.remember_peer(&addr, now);
        }
        let limits = Limits::of(&node.config);
        if state.rooms.is_empty() && node.retired.is_empty() {
            if let Some(room) = node.config.default_room.clone() {
                node.create_room(&room, Room::new(limits));
            }
        }
        for rr in state.rooms {
            if node.rooms.contains_key(&rr.name) {
                continue;
            }
            let mut room = Room::new(limits);
            let mut msgs = rr.messages;
            // A stored clock value above the protocol maximum can only be a poisoned
            // message from before the bound: it is not loaded.
            msgs.retain(|m| m.room == rr.name && m.verified && m.seq > 0 && m.lamport <= MAX_CLOCK);
            msgs.sort_by_key(|m| (m.author, m.seq));
            msgs.dedup_by(|a, b| a.author == b.author && a.seq == b.seq);
            let mut own_last = None;
            for mut m in msgs {
                node.adopt_clock(m.lamport, now);
                if m.author == node.id {
                    // Own messages were persisted before they were signed: sign the
                    // ones a receiver needs (every `sign_every`-th; the last is below).
                    if m.signature.is_none() && m.seq % node.config.sign_every.max(1) == 0 {
                        m.sign(&node.key);
                    }
                    own_last = Some(m.seq);
                }
                let key = (m.author == node.id).then(|| node.public.clone());
                room.load(Arc::new(m), key.as_ref());
            }
            if let Some(seq) = own_last {
                if let Some(a) = room.authors.get(&node.id) {
                    if let Some(m) = a.chain.get(seq).filter(|m| m.signature.is_none()) {
                        let mut signed = Message::clone(m);
                        signed.sign(&node.key);
                        room.replace_local(&node.id, Arc::new(signed));
                    }
                }
                let m: &SharedMessage = room.authors[&node.id].chain.get(seq).expect("loaded");
                room.own_last = (seq, m.hash);
                room.own_next = seq + 1;
            }
            room.reserved = rr.reserved.max(room.own_next);
            room.own_next = room.reserved;
            room.finish_load();
            node.retired.remove(&rr.name);
            node.create_room(&rr.name, room);
        }
        // Name changes after the last stored message moved the clock without leaving a
        // trace on disk; jump past them so our next profile record wins again.
        node.clock.jump(LAMPORT_RESTART_JUMP);
        node.sign_profile();
        node
    }

    /// Adds a persisted peer address to the book and dials it soon.
    fn remember_peer(&mut self, addr: &Multiaddr, now: Instant) {
        let (links, mut out) = self.split();
        links.remember_peer(addr, now, &mut out);
    }

    /// A snapshot of what [`Node::restore`] needs (messages within retention).
    pub fn export(&self) -> Restore {
        Restore {
            dm: self.export_dm(self.last_now),
            dm_reserved: Vec::new(),
            peers: self
                .links
                .peers
                .iter()
                .filter(|(_, p)| p.ever_connected && p.protocol == crate::Protocol::Chat)
                .flat_map(|(id, p)| {
                    p.confirmed_addrs()
                        .map(move |a| a.clone().with(multiaddr::Protocol::P2p(*id)))
                })
                .collect(),
            lamport: self.clock.value(),
            wall: None,
            retired: self.retired.iter().map(|(r, n)| (r.clone(), *n)).collect(),
            rooms: self
                .rooms
                .iter()
                .map(|(name, r)| RestoreRoom {
                    name: name.clone(),
                    reserved: r.reserved,
                    messages: r.log.iter().map(|m| Message::clone(m)).collect(),
                })
                .collect(),
        }
    }
}

#[allow(unused_imports)]
use Event as _DocLink;
