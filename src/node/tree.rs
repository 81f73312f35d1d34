//! The broadcast tree of rooms (Plumtree-style eager/lazy push, PROTOCOL.md section 7.1).
//!
//! Per room and author, each neighbour that offered the `tree` capability in its hello
//! is *eager* for that author (the author's messages go to it in full) or *lazy* (it
//! gets [`wire::Announce`] frames naming what we received, batched for [`LAZY_DELAY`]).
//! Every author has a tree of its own: one tree shared by all authors cannot be pruned
//! from duplicates, since a link that closes a cycle for one author is on the shortest
//! path of another, and nodes pruning for different authors at once cut the shared
//! tree into pieces. A new author's tree starts as a copy of the room's reference tree
//! ([`reference`]; none yet: every link eager, its first message floods); a
//! copy of an author's message we hold, from an eager link, prunes that link to lazy for
//! that author ([`Kind::Prune`] naming the author, both ends; not the author's last
//! eager link here, nor one we just asked for history). What remains eager for an author
//! is a spanning tree along the paths its messages arrived first on. An announcement of
//! a message we still lack after [`GRAFT_TIMEOUT`] grafts the announcer back to eager
//! for that author ([`Kind::Graft`]) and asks it for the message ([`Kind::Request`]):
//! the tree repairs itself where a link lost a message or died. Faster still, every
//! message pushed in full to a capable neighbour names the one pushed to it before
//! ([`wire::Frame::link_prev`]): frames on a link keep their order, so a receiver that
//! lacks it asks at once ([`Node::tree_link_prev`]). The per-author gap
//! repair and the periodic summaries stay as the backstop. Neighbours without the
//! capability are always eager (they flood, as before).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use libp2p_identity::PeerId;
use smallvec::SmallVec;

use super::Node;
use crate::codec::{peek_varint, put_varint, varint_len};
use crate::event::ConnId;
use crate::rooms::Room;
use crate::wire::{self, Frame, Kind};

/// The hello capability of the broadcast tree.
pub(crate) const CAPABILITY: &str = "tree";
/// How long announcements for a lazy neighbour are collected before they go out.
pub const LAZY_DELAY: Duration = Duration::from_millis(50);
/// How long an announced message may stay missing before the announcer is grafted.
/// (40 ms before `link_prev`: most losses on a tree link are now asked for after the
/// link's next frame, and what is left here is mostly a slow tree path.)
pub const GRAFT_TIMEOUT: Duration = Duration::from_millis(25);
/// At most one graft per (room, author) this often: one mends a broken tree; more would
/// close cycles (and duplicates would prune them).
const GRAFT_INTERVAL: Duration = Duration::from_millis(250);
/// How long after a request copies from the asked neighbour count as its answer.
const ANSWER_WINDOW: Duration = Duration::from_millis(500);
/// How long after a request for one message a `link_prev` named, copies of that author
/// from the asked neighbour count as its answer.
const LINK_ANSWER_WINDOW: Duration = Duration::from_millis(250);
/// Bound on announced message ids waiting to go to one (neighbour, room).
pub const MAX_PENDING_IDS: usize = 4096;
/// Bound on announced-but-missing (room, author) entries waiting for their graft timer.
pub const MAX_MISSING: usize = 1024;
/// Requests for one announced run before it is left to gap repair and summaries
/// (a request or its answer may be lost too), [`GRAFT_TIMEOUT`] apart.
const ATTEMPTS: u32 = 3;
/// How far into an announced range a node looks for a message it lacks.
const SCAN: u64 = 64;
/// At most this many lazy neighbours per room get announcements each [`LAZY_DELAY`]
/// round; the others keep theirs for a later round, in turn (at 100 messages a second
/// most announcements carry one id, and their cost grew with the degree).
pub const MAX_ANNOUNCE_PEERS: usize = 6;
/// Trees of authors a room no longer keeps, at most, before they are dropped (between
/// sweeps; see `Node::tree_bound`).
pub const TREE_SLACK: usize = 64;
/// How often the lazy sets are swept of what went away.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A run of one author's announced messages still missing here.
struct Missing {
    start: u64,
    end: u64,
    from: PeerId,
    at: Instant,
    attempts: u32,
}

/// How a run of room messages goes to one neighbour ([`Tree::push_modes`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Push {
    /// Without the tree capability: the frames as they are.
    Plain,
    /// Eager: the frames, each with its `link_prev`.
    Linked,
    /// Lazy: an announcement.
    Lazy,
}

/// Broadcast tree state of a node.
#[derive(Default)]
pub(super) struct Tree {
    /// Neighbours whose latest hello offered [`CAPABILITY`].
    capable: BTreeSet<PeerId>,
    /// Per room, the neighbours that are lazy for every author (a peer's prune without
    /// authors).
    lazy: BTreeMap<String, BTreeSet<PeerId>>,
    /// Per room and author, the neighbours that are lazy for that author's messages
    /// (all others are eager).
    lazy_for: BTreeMap<String, BTreeMap<PeerId, BTreeSet<PeerId>>>,
    /// Announcements to send, per neighbour and room: author → seqs.
    pending: BTreeMap<PeerId, BTreeMap<String, BTreeMap<PeerId, Vec<u64>>>>,
    /// Ids in `pending`, summed.
    pending_ids: usize,
    /// When `pending` goes out.
    flush_at: Option<Instant>,
    missing: BTreeMap<(String, PeerId), Missing>,
    /// The earliest `Missing::at`, if any.
    next_graft: Option<Instant>,
    /// When each neighbour was last asked for history. For [`ANSWER_WINDOW`] after,
    /// duplicates from it do not prune its link: they may be answers, and a node that
    /// has to ask is repairing a tree that lost messages, not one with links to spare.
    asked: BTreeMap<PeerId, Instant>,
    /// Per (room, author), when a neighbour was last grafted: one graft per
    /// [`GRAFT_INTERVAL`] mends a broken tree; more would close cycles (and duplicates
    /// would prune them).
    grafted: BTreeMap<(String, PeerId), Instant>,
    /// Announcement rounds so far (whose turn it is, [`MAX_ANNOUNCE_PEERS`]).
    rounds: u64,
    /// When the lazy sets were last swept of neighbours gone, rooms left and authors
    /// evicted.
    swept: Option<Instant>,
    /// Per capable neighbour and room, the id (author in binary form, seq) of the last
    /// room message pushed to it in full: the next frame's `link_prev`.
    pushed: BTreeMap<PeerId, BTreeMap<String, (Bytes, u64)>>,
    /// Per (neighbour, author), when the neighbour was last asked for a message its
    /// `link_prev` named: its copies of that author for [`LINK_ANSWER_WINDOW`] may be
    /// the answer, so they neither prune nor graft.
    asked_for: BTreeMap<(PeerId, PeerId), Instant>,
}

impl Tree {
    /// Whether any neighbour runs the tree (none: every message floods).
    pub(super) fn any_capable(&self) -> bool {
        !self.capable.is_empty()
    }

    /// A neighbour's hello arrived: a new session starts eager in every room.
    pub(super) fn on_hello(&mut self, peer: PeerId, capable: bool) {
        self.pushed.remove(&peer);
        for set in self.lazy.values_mut() {
            set.remove(&peer);
        }
        for set in self.lazy_for.values_mut().flat_map(|a| a.values_mut()) {
            set.remove(&peer);
        }
        if capable {
            self.capable.insert(peer);
        } else {
            self.capable.remove(&peer);
        }
    }

    /// A request went to `peer` (a neighbour: the map is bounded by them).
    pub(super) fn asked(&mut self, peer: PeerId, now: Instant) {
        self.asked.insert(peer, now);
    }

    /// Whether `peer` was asked for history within [`ANSWER_WINDOW`].
    fn answering(&self, peer: PeerId, now: Instant) -> bool {
        self.asked
            .get(&peer)
            .is_some_and(|t| *t + ANSWER_WINDOW > now)
    }

    /// Whether `peer` was asked for a message of `author` named by its `link_prev`
    /// within [`LINK_ANSWER_WINDOW`].
    fn answering_for(&self, peer: PeerId, author: &PeerId, now: Instant) -> bool {
        self.asked_for
            .get(&(peer, *author))
            .is_some_and(|t| *t + LINK_ANSWER_WINDOW > now)
    }

    /// `wire` (room-message frames of `room`, read into `frames` by [`link_frames`]) as
    /// sent to the capable neighbour `peer`: each frame with a `link_prev` naming the
    /// message pushed to it before (none yet on this connection: the first frame goes as
    /// it is).
    fn with_link_prev(
        &mut self,
        peer: PeerId,
        room: &str,
        wire: &Bytes,
        frames: &[LinkFrame],
    ) -> Bytes {
        let last = room_entry(self.pushed.entry(peer).or_default(), room);
        let mut out = BytesMut::with_capacity(wire.len() + 64);
        for f in frames {
            let (author, seq) = (&last.0, last.1);
            if author.is_empty() {
                out.extend_from_slice(&wire[f.frame.clone()]);
            } else {
                // LinkPrev { author = 1, seq = 2 } as field 19 of the frame.
                let payload = &wire[f.payload.clone()];
                let body = 1 + varint_len(author.len() as u64) + author.len() + 1 + varint_len(seq);
                let trailer = varint_len(wire::LINK_PREV_KEY) + varint_len(body as u64) + body;
                put_varint(&mut out, (payload.len() + trailer) as u64);
                out.extend_from_slice(payload);
                put_varint(&mut out, wire::LINK_PREV_KEY);
                put_varint(&mut out, body as u64);
                out.put_u8(0x0a);
                put_varint(&mut out, author.len() as u64);
                out.extend_from_slice(author);
                out.put_u8(0x10);
                put_varint(&mut out, seq);
            }
            if let Some(id) = &f.id {
                *last = id.clone();
            }
        }
        out.freeze()
    }

    /// Whether `author`'s messages go to `peer` as announcements only. An author without
    /// a tree here yet follows the room's reference tree ([`reference`]).
    fn is_lazy(&self, room: &str, author: &PeerId, peer: &PeerId) -> bool {
        self.capable.contains(peer)
            && (self.lazy.get(room).is_some_and(|s| s.contains(peer))
                || self.lazy_for.get(room).is_some_and(|a| {
                    a.get(author)
                        .or_else(|| reference(a))
                        .is_some_and(|s| s.contains(peer))
                }))
    }

    /// How a run of `authors`' messages in `room` goes to each of `targets`, in order:
    /// [`Tree::is_lazy`] for every author and target, with the room's and the authors'
    /// lazy sets looked up once per run instead of once per target. Lazy: lazy for
    /// every author (none: eager).
    fn push_modes(
        &self,
        room: &str,
        authors: &[PeerId],
        targets: &[(PeerId, ConnId)],
    ) -> SmallVec<[Push; 16]> {
        let room_lazy = self.lazy.get(room);
        let trees = self.lazy_for.get(room);
        let of = |a: &PeerId| trees.and_then(|t| t.get(a).or_else(|| reference(t)));
        let sets: SmallVec<[Option<&BTreeSet<PeerId>>; 1]> = authors.iter().map(of).collect();
        targets
            .iter()
            .map(|(peer, _)| {
                if !self.capable.contains(peer) {
                    Push::Plain
                } else if !authors.is_empty()
                    && (room_lazy.is_some_and(|s| s.contains(peer))
                        || sets.iter().all(|s| s.is_some_and(|s| s.contains(peer))))
                {
                    Push::Lazy
                } else {
                    Push::Linked
                }
            })
            .collect()
    }

    /// `author`'s lazy set in `room`, made if new: a copy of the room's reference tree
    /// ([`reference`]; none yet: every link eager, the author's messages flood).
    fn tree_of(&mut self, room: &str, author: PeerId) -> &mut BTreeSet<PeerId> {
        let authors = room_entry(&mut self.lazy_for, room);
        if !authors.contains_key(&author) {
            let start = reference(authors).cloned().unwrap_or_default();
            authors.insert(author, start);
        }
        authors.get_mut(&author).expect("inserted")
    }

    /// A message of `author` is sent or relayed here: its tree exists from now on.
    fn adopt(&mut self, room: &str, author: PeerId) {
        if !self
            .lazy_for
            .get(room)
            .is_some_and(|a| a.contains_key(&author))
        {
            self.tree_of(room, author);
        }
    }

    fn set_lazy(&mut self, room: &str, author: PeerId, peer: PeerId, lazy: bool) {
        let set = self.tree_of(room, author);
        if lazy {
            set.insert(peer);
        } else {
            set.remove(&peer);
        }
    }

    pub(super) fn next_timeout(&self) -> Option<Instant> {
        self.flush_at.into_iter().chain(self.next_graft).min()
    }

    /// Lazy links, summed over rooms (and authors).
    pub(super) fn lazy_links(&self) -> u64 {
        let per_author = self.lazy_for.values().flat_map(|a| a.values());
        self.lazy
            .values()
            .chain(per_author)
            .map(|s| s.len() as u64)
            .sum()
    }

    pub(super) fn missing_len(&self) -> u64 {
        self.missing.len() as u64
    }
}

/// `room`'s value in `map`, made (`Default`) if new; the name is copied only then.
fn room_entry<'a, V: Default>(map: &'a mut BTreeMap<String, V>, room: &str) -> &'a mut V {
    if !map.contains_key(room) {
        map.insert(room.to_string(), V::default());
    }
    map.get_mut(room).expect("inserted")
}

/// A frame of a run of room messages, for [`Tree::with_link_prev`].
struct LinkFrame {
    /// The frame in the run, length prefix and all.
    frame: Range<usize>,
    /// Its payload.
    payload: Range<usize>,
    /// The id (author in binary form, seq) of its message, if it reads as one.
    id: Option<(Bytes, u64)>,
}

/// The frames of `wire` (room-message frames), read once per run: up to the first that
/// is cut short.
fn link_frames(wire: &Bytes) -> Vec<LinkFrame> {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Ok(Some((len, n))) = peek_varint(&wire[at..]) {
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|l| (at + n).checked_add(l))
            .filter(|e| *e <= wire.len())
        else {
            break;
        };
        let payload = &wire[at + n..end];
        let id = wire::parse_message(payload).map(|m| (wire.slice_ref(m.author), m.seq));
        frames.push(LinkFrame {
            frame: at..end,
            payload: at + n..end,
            id,
        });
        at = end;
        if at >= wire.len() {
            break;
        }
    }
    frames
}

/// The tree a new author of a room starts from: the tree of the room's author with the
/// lowest peer id among those with one here. A tree per author is a spanning tree (its
/// links are pruned and grafted at both ends), and a spanning tree carries any root's
/// messages to every member without duplicates: the new author's first messages go
/// along it instead of flooding. The lowest id, not the latest author, so that
/// neighbours pick the same tree; where they still differ, duplicates prune and
/// announcements graft the new author's own tree as usual.
fn reference(authors: &BTreeMap<PeerId, BTreeSet<PeerId>>) -> Option<&BTreeSet<PeerId>> {
    authors.first_key_value().map(|(_, s)| s)
}

/// First seq in `[start, end)` (looking at most [`SCAN`] far) the room lacks.
fn first_missing(room: &Room, author: &PeerId, start: u64, end: u64) -> Option<u64> {
    (start..end.min(start.saturating_add(SCAN))).find(|s| !room.is_known(author, *s))
}

/// End of the run of seqs the room lacks from `start` (exclusive, at most `end`).
fn missing_run_end(room: &Room, author: &PeerId, start: u64, end: u64) -> u64 {
    (start..end)
        .find(|s| room.is_known(author, *s))
        .unwrap_or(end)
}

impl Node {
    /// Sends a run of room messages (`wire`, ids in `ids`) to `targets`: the frames to
    /// eager neighbours, an announcement (after [`LAZY_DELAY`]) to lazy ones. Returns how
    /// many got the frames.
    pub(super) fn push_room(
        &mut self,
        room: &str,
        targets: Vec<(PeerId, ConnId)>,
        wire: &Bytes,
        ids: impl Iterator<Item = (PeerId, u64)> + Clone,
        now: Instant,
    ) -> u64 {
        let mut eager = 0;
        // Usually one author; a run of several goes in full to a neighbour eager for
        // any of them.
        let mut authors: SmallVec<[PeerId; 1]> = SmallVec::new();
        for (a, _) in ids.clone() {
            if !authors.contains(&a) {
                authors.push(a);
            }
        }
        if !self.tree.capable.is_empty() {
            for a in &authors {
                self.tree.adopt(room, *a);
            }
            self.tree_bound(room);
        }
        let modes = self.tree.push_modes(room, &authors, &targets);
        let n = ids.clone().count();
        // Read on the first eager capable neighbour, for all of them.
        let mut frames = None;
        for ((peer, conn), mode) in targets.into_iter().zip(modes) {
            match mode {
                Push::Plain => {
                    eager += 1;
                    self.send_shared(conn, wire, now);
                    continue;
                }
                Push::Linked => {
                    eager += 1;
                    let frames = frames.get_or_insert_with(|| link_frames(wire));
                    let bytes = self.tree.with_link_prev(peer, room, wire, frames);
                    self.send_shared(conn, &bytes, now);
                    continue;
                }
                Push::Lazy => {}
            }
            let t = &mut self.tree;
            if t.pending_ids + n > MAX_PENDING_IDS {
                // The summaries still carry them.
                self.stats.tree_dropped += n as u64;
                continue;
            }
            t.pending_ids += n;
            let per_author = room_entry(t.pending.entry(peer).or_default(), room);
            for (author, seq) in ids.clone() {
                per_author.entry(author).or_default().push(seq);
            }
            t.flush_at.get_or_insert(now + LAZY_DELAY);
        }
        eager
    }

    /// Open chat connections of members of `room` with the tree split aside: every
    /// member but `skip`.
    /// In peer id order.
    pub(super) fn room_targets(&mut self, room: &str, skip: &[PeerId]) -> Vec<(PeerId, ConnId)> {
        let members = self.links.chat_in_room(room);
        // One allocation, and none when nobody is left.
        if members.iter().all(|(id, _)| skip.contains(id)) {
            return Vec::new();
        }
        let mut targets = Vec::with_capacity(members.len());
        targets.extend(members.iter().filter(|(id, _)| !skip.contains(id)));
        targets
    }

    /// New messages (`msgs`) arrived in full from `peer` (not as an answer to our
    /// request): `peer` sends them eagerly, so the link is on their tree at its end. If
    /// it is lazy here (the two ends started a new author's tree from different
    /// reference trees), it becomes eager here too: the first copy's path is the tree.
    pub(super) fn tree_first_copy(
        &mut self,
        room: &str,
        msgs: &[crate::message::SharedMessage],
        peer: PeerId,
        now: Instant,
    ) {
        if !self.tree.capable.contains(&peer) || self.tree.answering(peer, now) {
            return;
        }
        for a in msgs.iter().map(|m| &m.author) {
            if *a != peer
                && !self.tree.answering_for(peer, a, now)
                && self.tree.is_lazy(room, a, &peer)
                && !self.tree.lazy.get(room).is_some_and(|s| s.contains(&peer))
            {
                self.tree.set_lazy(room, *a, peer, false);
                self.tree_bound(room);
            }
        }
    }

    /// A copy of `author`'s message we hold arrived on `conn`: an eager tree link to
    /// prune. Not the author's own link: it is the shortest path, and a copy from the
    /// author itself comes from a second connection of a hand-over (section 12.1).
    pub(super) fn tree_duplicate(
        &mut self,
        conn: ConnId,
        room: &str,
        author: &PeerId,
        now: Instant,
    ) {
        let Some(peer) = self.links.conns.get(&conn).map(|c| c.peer) else {
            return;
        };
        // A neighbour without the tree first (all of them when flooding): the cheapest test.
        if !self.tree.capable.contains(&peer) {
            return;
        }
        let answering =
            self.tree.answering(peer, now) || self.tree.answering_for(peer, author, now);
        if peer == *author || answering || !self.rooms.contains_key(room) {
            return;
        }
        let prune = Frame::new(Kind::Prune(wire::TreeLink {
            room: room.into(),
            authors: vec![author.to_bytes()],
        }));
        if self.tree.is_lazy(room, author, &peer) {
            // Lazy here, eager there: the two ends started the author's tree from
            // different reference trees (or a prune was lost). The prune again.
            self.stats.tree_prunes += 1;
            self.send_frame(conn, &prune, now);
            return;
        }
        // Each author's messages have a tree of their own: a duplicate of `author`'s
        // message closed a cycle of that tree, and this link goes. Never the last eager
        // link for the author here (its messages would come by announcements only).
        let eager = self
            .room_targets(room, &[])
            .iter()
            .filter(|(p, _)| !self.tree.is_lazy(room, author, p))
            .count();
        if eager <= 1 {
            return;
        }
        self.tree.set_lazy(room, *author, peer, true);
        self.tree_bound(room);
        self.stats.tree_prunes += 1;
        self.send_frame(conn, &prune, now);
    }

    /// A neighbour pruned (`eager == false`) or grafted us in a room, for the authors
    /// named (none: every author). Authors that are not peer ids or not kept in the
    /// room are ignored.
    pub(super) fn on_tree_link(&mut self, conn: ConnId, l: wire::TreeLink, eager: bool) {
        let Some(peer) = self.active_peer(conn) else {
            return;
        };
        // Only for joined rooms and authors kept there: the lazy sets stay bounded by
        // rooms × authors × neighbours.
        let Some(room) = self.rooms.get(&l.room) else {
            return;
        };
        if l.authors.is_empty() {
            if eager {
                for set in self
                    .tree
                    .lazy_for
                    .get_mut(&l.room)
                    .into_iter()
                    .flat_map(|a| a.values_mut())
                {
                    set.remove(&peer);
                }
            }
            let set = self.tree.lazy.entry(l.room).or_default();
            if eager {
                set.remove(&peer);
            } else {
                set.insert(peer);
            }
            return;
        }
        let authors: Vec<PeerId> = l
            .authors
            .iter()
            .filter_map(|a| PeerId::from_bytes(a).ok())
            .filter(|a| room.authors.contains_key(a))
            .collect();
        for author in authors {
            self.tree.set_lazy(&l.room, author, peer, !eager);
        }
        self.tree_bound(&l.room);
        if eager {
            // A peer that pruned the whole room (a prune without authors) grafts back
            // what it names; its link is eager again.
            if let Some(set) = self.tree.lazy.get_mut(&l.room) {
                set.remove(&peer);
            }
        }
    }

    /// Drops the trees of authors `room` no longer keeps once they outnumber the kept
    /// ones by [`TREE_SLACK`], so between sweeps too the per-author lazy sets of a room
    /// hold at most (`Config::max_authors` + [`TREE_SLACK`]) authors × neighbours, however
    /// fast a neighbour brings new authors (evicting old ones). Amortised: one pass over
    /// the room's trees per [`TREE_SLACK`] authors evicted.
    fn tree_bound(&mut self, room: &str) {
        let (Some(r), Some(trees)) = (self.rooms.get(room), self.tree.lazy_for.get_mut(room))
        else {
            return;
        };
        if trees.len() > r.authors.len() + TREE_SLACK {
            trees.retain(|a, _| r.authors.contains_key(a));
        }
    }

    /// A frame arrived on `conn`: if it is a room message with a `link_prev` from a
    /// capable neighbour naming a message this node lacks, the frame pushed before it
    /// on this link was lost (frames on a link keep their order): the message is asked
    /// for at once ([`Kind::Request`]), without waiting for an announcement and
    /// [`GRAFT_TIMEOUT`]; a [`Missing`] entry retries if the answer is lost too.
    pub(super) fn tree_link_prev(&mut self, conn: ConnId, payload: &[u8], now: Instant) {
        if !self.tree.any_capable() {
            return; // no neighbour runs the tree (flooding): no frame names one
        }
        let Some((author, seq)) = wire::peek_link_prev(payload) else {
            return;
        };
        let Some(peer) = self.active_peer(conn) else {
            return;
        };
        if !self.tree.capable.contains(&peer) || seq == 0 {
            return;
        }
        // A quick look at the frame's room first, for the named message is mostly held
        // here; the full read (which checks every field) only when it is not. Where
        // `parse_message` accepts a frame, `peek_room` names the same room.
        let Some(room_name) = wire::peek_room(payload) else {
            return;
        };
        let Some(room) = self.rooms.get(room_name) else {
            return;
        };
        let Ok(author) = PeerId::from_bytes(author) else {
            return;
        };
        if room.is_known(&author, seq)
            || author == self.id
            || wire::parse_message(payload).is_none()
        {
            return;
        }
        let t = &mut self.tree;
        // Bounded like the announced-but-missing entries: a neighbour naming ever new
        // authors gets at most [`MAX_MISSING`] of them asked for per
        // [`LINK_ANSWER_WINDOW`] (announcements remain the backstop).
        if t.asked_for.len() >= MAX_MISSING && !t.asked_for.contains_key(&(peer, author)) {
            return;
        }
        let key = (room_name.to_string(), author);
        let full = t.missing.len() >= MAX_MISSING;
        match t.missing.get_mut(&key) {
            // Asked for already (and retried by the entry).
            Some(m) if m.attempts > 0 && (m.start..m.end).contains(&seq) => return,
            Some(m) => {
                m.start = m.start.min(seq);
                m.end = m.end.max(seq + 1);
            }
            None if full => {}
            None => {
                let at = now + GRAFT_TIMEOUT;
                let m = Missing {
                    start: seq,
                    end: seq + 1,
                    from: peer,
                    at,
                    attempts: 1,
                };
                t.missing.insert(key, m);
                t.next_graft = Some(t.next_graft.map_or(at, |n| n.min(at)));
            }
        }
        t.asked_for.insert((peer, author), now);
        self.stats.tree_link_requests += 1;
        self.stats.repair_requests += 1;
        let request = Frame::new(Kind::Request(wire::Request {
            room: room_name.to_string(),
            author: author.to_bytes(),
            start: seq,
            end: seq + 1,
        }));
        self.send_frame(conn, &request, now);
    }

    pub(super) fn on_announce(&mut self, conn: ConnId, a: &wire::AnnounceRef, now: Instant) {
        let Some(peer) = self.active_peer(conn) else {
            return;
        };
        let Some(room) = self.rooms.get(a.room) else {
            return;
        };
        // What we were about to announce to the announcer in this room, looked up once.
        let mut pending = self
            .tree
            .pending
            .get_mut(&peer)
            .and_then(|r| r.get_mut(a.room));
        for (author, ranges) in a.authors() {
            let Ok(author) = PeerId::from_bytes(author) else {
                return self.violation(conn, "announcement names an invalid author", now);
            };
            if ranges.len() % 2 != 0 || ranges.chunks(2).any(|r| r[0] >= r[1]) {
                return self.violation(conn, "announcement range is malformed", now);
            }
            // The announcer holds these: what we were about to announce to it of them
            // is dropped (both ends of a lazy link announce the same messages).
            if let Some(seqs) = pending.as_mut().and_then(|p| p.get_mut(&author)) {
                let before = seqs.len();
                seqs.retain(|s| !ranges.chunks(2).any(|r| (r[0]..r[1]).contains(s)));
                self.tree.pending_ids -= before - seqs.len();
            }
            for r in ranges.chunks(2) {
                let Some(start) = first_missing(room, &author, r[0], r[1]) else {
                    continue;
                };
                let end = r[1].min(start.saturating_add(SCAN));
                let (missing, next_graft) = (&mut self.tree.missing, &mut self.tree.next_graft);
                let full = missing.len() >= MAX_MISSING;
                match missing.get_mut(&(a.room.to_string(), author)) {
                    Some(m) => {
                        m.start = m.start.min(start);
                        m.end = m.end.max(end);
                        if m.attempts > 0 {
                            // The first announcer was asked already: the next try goes
                            // to this one.
                            m.from = peer;
                        }
                    }
                    None if full => self.stats.tree_dropped += 1,
                    None => {
                        let at = now + GRAFT_TIMEOUT;
                        let m = Missing {
                            start,
                            end,
                            from: peer,
                            at,
                            attempts: 0,
                        };
                        missing.insert((a.room.to_string(), author), m);
                        *next_graft = Some(next_graft.map_or(at, |n| n.min(at)));
                    }
                }
            }
        }
    }

    /// Sends due announcements and grafts for what is still missing.
    pub(super) fn tree_timeout(&mut self, now: Instant) {
        if self.tree.flush_at.is_some_and(|t| t <= now) {
            self.tree.flush_at = None;
            self.tree.pending_ids = 0;
            // At most [`MAX_ANNOUNCE_PEERS`] lazy neighbours per room get their
            // announcements this round, in turn; the others keep theirs for a later one.
            let pending = std::mem::take(&mut self.tree.pending);
            let keys = || pending.values().flat_map(|rooms| rooms.keys());
            let mut per_room: BTreeMap<&str, usize> = BTreeMap::new();
            for room in keys() {
                *per_room.entry(room.as_str()).or_default() += 1;
            }
            let round = self.tree.rounds;
            self.tree.rounds = round.wrapping_add(1);
            // Whether each (neighbour, room) goes this round, in `pending`'s order.
            let mut chosen: Vec<bool> = Vec::with_capacity(per_room.values().sum());
            let mut index: BTreeMap<&str, usize> = BTreeMap::new();
            for room in keys() {
                let len = per_room[room.as_str()];
                let i = index.entry(room.as_str()).or_default();
                let k = MAX_ANNOUNCE_PEERS.min(len);
                // Index i goes this round when it is among the k consecutive ones
                // (cyclically) from this round's offset.
                let offset = (round as usize).wrapping_mul(k) % len;
                chosen.push((*i + len - offset) % len < k);
                *i += 1;
            }
            let pending = pending
                .into_iter()
                .flat_map(|(peer, rooms)| rooms.into_iter().map(move |r| (peer, r)));
            for ((peer, (room, authors)), chosen) in pending.zip(chosen) {
                if !chosen {
                    // Its turn comes in a later round.
                    let t = &mut self.tree;
                    t.pending_ids += authors.values().map(Vec::len).sum::<usize>();
                    t.pending.entry(peer).or_default().insert(room, authors);
                    t.flush_at = Some(now + LAZY_DELAY);
                    continue;
                }
                let Some(conn) = self.links.peers.get(&peer).filter(|p| p.up) else {
                    continue;
                };
                let Some(conn) = conn.active else { continue };
                let authors: Vec<(PeerId, Vec<u64>)> = authors
                    .into_iter()
                    .filter(|(_, seqs)| !seqs.is_empty())
                    .map(|(a, mut seqs)| {
                        seqs.sort_unstable();
                        seqs.dedup();
                        (a, ranges(&seqs))
                    })
                    .collect();
                if authors.is_empty() {
                    continue;
                }
                self.stats.tree_announces += 1;
                let mut frame = BytesMut::new();
                wire::encode_announce(&mut frame, &room, &authors);
                self.send_bytes(conn, &frame, now);
            }
        }
        if self.tree.next_graft.is_some_and(|t| t <= now) {
            let due: Vec<_> = self
                .tree
                .missing
                .iter()
                .filter(|(_, m)| m.at <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for key in due {
                if let Some(m) = self.tree.missing.remove(&key) {
                    if let Some(again) = self.graft(key.0.clone(), key.1, m, now) {
                        self.tree.missing.insert(key, again);
                    }
                }
            }
            self.tree.next_graft = self.tree.missing.values().map(|m| m.at).min();
        }
        let rooms = &self.rooms;
        let up = |p: &PeerId| self.links.peers.get(p).is_some_and(|p| p.up);
        self.tree
            .asked
            .retain(|p, t| *t + ANSWER_WINDOW > now && up(p));
        self.tree
            .grafted
            .retain(|(r, _), t| *t + GRAFT_INTERVAL > now && rooms.contains_key(r));
        self.tree
            .asked_for
            .retain(|(p, _), t| *t + LINK_ANSWER_WINDOW > now && up(p));
        // Forget neighbours that went away, rooms left and authors evicted (a new
        // session starts over at its hello): only to bound memory, so once per
        // [`SWEEP_INTERVAL`] (the lazy sets hold rooms × authors × neighbours).
        if self.tree.swept.is_some_and(|t| t + SWEEP_INTERVAL > now) {
            return;
        }
        self.tree.swept = Some(now);
        self.tree.capable.retain(up);
        self.tree.pushed.retain(|p, rooms_of| {
            rooms_of.retain(|r, _| rooms.contains_key(r));
            up(p) && !rooms_of.is_empty()
        });
        self.tree.lazy_for.retain(|r, authors| {
            let Some(room) = rooms.get(r) else {
                return false;
            };
            authors.retain(|a, set| {
                set.retain(up);
                // Kept when empty (every link eager): the author has a tree here.
                room.authors.contains_key(a)
            });
            !authors.is_empty()
        });
        for set in self.tree.lazy.values_mut() {
            set.retain(up);
        }
        self.tree
            .lazy
            .retain(|r, s| !s.is_empty() && rooms.contains_key(r));
    }

    /// Asks the announcer of a missing run for it (grafting it first if lazy); returns
    /// the entry again, for the next attempt (`None`: it arrived, or its first missing
    /// message was asked for [`ATTEMPTS`] times).
    fn graft(&mut self, room: String, author: PeerId, m: Missing, now: Instant) -> Option<Missing> {
        let r = self.rooms.get(&room)?;
        // `None`: it arrived meanwhile.
        let start = first_missing(r, &author, m.start, m.end)?;
        // Attempts count per first missing message: once the earlier ones arrived
        // (`start` moved on), this one gets its own [`ATTEMPTS`] (a copy or an answer
        // may be lost again, and giving up leaves it to the gap timer, seconds away).
        // The entry outlives its last request by one [`GRAFT_TIMEOUT`] to see that.
        let attempts = if start > m.start { 0 } else { m.attempts };
        if attempts >= ATTEMPTS {
            return None;
        }
        // Only the run still missing: what is held would come back as duplicates.
        let end = missing_run_end(r, &author, start, m.end);
        // The announcer went away: gap repair and summaries take over.
        let conn = self
            .links
            .peers
            .get(&m.from)
            .filter(|p| p.up)
            .and_then(|p| p.active)?;
        let key = (room, author);
        let recent = self
            .tree
            .grafted
            .get(&key)
            .is_some_and(|t| *t + GRAFT_INTERVAL > now);
        let (room, author) = key;
        if !recent && self.tree.is_lazy(&room, &author, &m.from) {
            // Other missing messages of the author this round are only requested.
            self.tree.grafted.insert((room.clone(), author), now);
            if let Some(set) = self.tree.lazy.get_mut(&room) {
                set.remove(&m.from);
            }
            self.tree.set_lazy(&room, author, m.from, false);
            self.tree_bound(&room);
            self.stats.tree_grafts += 1;
            let graft = Frame::new(Kind::Graft(wire::TreeLink {
                room: room.clone(),
                authors: vec![author.to_bytes()],
            }));
            self.send_frame(conn, &graft, now);
        }
        let request = Frame::new(Kind::Request(wire::Request {
            room,
            author: author.to_bytes(),
            start,
            end,
        }));
        self.stats.repair_requests += 1;
        self.tree.asked(m.from, now);
        self.send_frame(conn, &request, now);
        Some(Missing {
            start,
            at: now + GRAFT_TIMEOUT,
            attempts: attempts + 1,
            ..m
        })
    }
}

/// Sorted, deduplicated seqs as flattened `[start, end)` pairs.
fn ranges(seqs: &[u64]) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    for &s in seqs {
        match out.last_mut() {
            Some(end) if *end == s => *end = s + 1,
            _ => out.extend([s, s + 1]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::ranges;

    #[test]
    fn seqs_become_ranges() {
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), vec![1, 4, 7, 8, 9, 11]);
        assert!(ranges(&[]).is_empty());
    }
}
