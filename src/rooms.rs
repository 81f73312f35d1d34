//! A joined room: the agreed log, one [`Chain`] per author, our own chain's head and
//! sequence-number reservation, and retention.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use libp2p_identity::{PeerId, PublicKey};

use crate::config::Config;
use crate::event::ConnId;
use crate::log::{Position, RoomLog};
use crate::message::{public_key_of, Hash, SharedMessage, GENESIS};
use crate::ordering::{Chain, Confirm, GapAction, Offer};

pub(crate) struct Author {
    key: PublicKey,
    pub chain: Chain<ConnId>,
    /// The connection whose message opened the current gap (asked first for repair).
    pub gap_source: Option<ConnId>,
    /// Highest clock value of the author's verified messages (eviction order).
    last_lamport: u64,
}

/// What happened to a received message.
#[derive(Default)]
pub(crate) struct Intake {
    /// Newly authenticated, ascending per author: relay these.
    pub verified: Vec<SharedMessage>,
    /// Deliverable now, with their log positions.
    pub delivered: Vec<(SharedMessage, Position)>,
    /// Connections that sent forgeries.
    pub forgers: Vec<ConnId>,
    /// The message was dropped because the out-of-order buffer is full.
    pub full: bool,
    /// The message was a duplicate.
    pub duplicate: bool,
    /// Accepted provisionally (PROTOCOL.md 6.5), signature unchecked: the newest clock
    /// value, and whether the message opened a new run (it is the one to
    /// [`Room::confirm`] before relaying) or joined one already waiting.
    pub provisional: Option<(u64, bool)>,
}

/// Limits a room applies, copied from the node's [`Config`].
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub max_buffer: usize,
    pub gap: Duration,
    pub verify: Duration,
    pub max_repairs: u32,
    pub max_messages: usize,
    pub max_bytes: usize,
    pub max_authors: usize,
}

impl Limits {
    pub fn of(c: &Config) -> Self {
        Limits {
            max_buffer: c.max_buffered_per_author,
            gap: c.gap_timeout,
            verify: c.verify_timeout,
            max_repairs: c.max_repair_attempts,
            max_messages: c.max_log_messages,
            max_bytes: c.max_log_bytes,
            max_authors: c.max_authors.max(2),
        }
    }
}

/// One author's entry in a room summary: retention floor and held ranges.
pub(crate) struct AuthorSummary {
    pub author: PeerId,
    pub floor: u64,
    pub ranges: Vec<(u64, u64)>,
}

/// Start hints remembered for authors we hold nothing of yet.
const MAX_HINTS: usize = 4096;

pub(crate) struct Room {
    pub log: RoomLog,
    /// Where neighbours' holdings of not-yet-seen authors start (bounded).
    hints: BTreeMap<PeerId, u64>,
    pub authors: BTreeMap<PeerId, Author>,
    /// Authors whose chain has a deadline (gap or pending).
    timed: BTreeSet<PeerId>,
    limits: Limits,
    /// Our next sequence number, and the seq and hash of our last message here.
    pub own_next: u64,
    pub own_last: (u64, Hash),
    /// Sequence numbers below this are reserved (persisted by the app).
    pub reserved: u64,
    /// The local author (never evicted), once known.
    me: Option<PeerId>,
    /// Authors evicted to stay within `max_authors`.
    pub evicted: u64,
    /// Bumped whenever a message this room held may have stopped being known (its
    /// author's chain dropped, or its signature check failed): while it is unchanged,
    /// every message held when it was read is still [`Room::is_known`]. The duplicate
    /// cache confirms a hit with it instead of looking the author up.
    pub forgets: u64,
}

impl Room {
    pub fn new(limits: Limits) -> Self {
        Room {
            log: RoomLog::new(),
            hints: BTreeMap::new(),
            authors: BTreeMap::new(),
            timed: BTreeSet::new(),
            limits,
            own_next: 1,
            own_last: (0, GENESIS),
            reserved: 1,
            me: None,
            evicted: 0,
            forgets: 0,
        }
    }

    /// Whether (author, seq) is already held or delivered.
    pub fn is_known(&self, author: &PeerId, seq: u64) -> bool {
        self.authors
            .get(author)
            .is_some_and(|a| a.chain.is_known(seq))
    }

    fn author_entry(&mut self, id: PeerId, key: Option<&PublicKey>) -> Option<&mut Author> {
        use std::collections::btree_map::Entry;
        if key.is_some() {
            self.me = Some(id); // only the local author's key is passed in
        }
        if self.authors.len() >= self.limits.max_authors && !self.authors.contains_key(&id) {
            self.make_room_for_author();
        }
        match self.authors.entry(id) {
            Entry::Occupied(e) => Some(e.into_mut()),
            Entry::Vacant(e) => {
                let key = match key {
                    Some(k) => k.clone(),
                    None => public_key_of(&id)?,
                };
                let mut chain = Chain::new();
                if let Some(h) = self.hints.remove(&id) {
                    chain.hint_start(h);
                }
                Some(e.insert(Author {
                    key,
                    chain,
                    gap_source: None,
                    last_lamport: 0,
                }))
            }
        }
    }

    /// Evicts authors once the room holds `max_authors`: those holding the fewest
    /// messages go first, among equals those whose newest message is oldest (never the
    /// local author). Their messages stay in the log; their chain state goes, so fresh
    /// keys that spoke once cannot hold slots against honest history. One scan evicts
    /// a sixteenth of the cap, so a flood of new keys costs `O(1)` amortised per key.
    fn make_room_for_author(&mut self) {
        let max = self.limits.max_authors;
        if self.authors.len() < max {
            return;
        }
        let me = self.me;
        let mut order: Vec<((usize, u64), PeerId)> = self
            .authors
            .iter()
            .filter(|(id, _)| Some(**id) != me)
            .map(|(id, a)| ((a.chain.stored(), a.last_lamport), *id))
            .collect();
        let n = (self.authors.len() + 1 - max)
            .max(max / 16)
            .min(order.len());
        if n == 0 {
            return;
        }
        if n < order.len() {
            order.select_nth_unstable(n);
        }
        for (_, v) in &order[..n] {
            self.authors.remove(v);
            self.timed.remove(v);
        }
        self.forgets += 1;
        self.evicted += n as u64;
    }

    /// Records a message of the local author and inserts it into the log.
    pub fn push_local(&mut self, me: &PeerId, key: &PublicKey, msg: SharedMessage) -> Position {
        self.own_next = msg.seq + 1;
        self.own_last = (msg.seq, msg.hash);
        let author = self.author_entry(*me, Some(key)).expect("own key given");
        author.last_lamport = author.last_lamport.max(msg.lamport);
        author.chain.push_local(msg.clone());
        let pos = self.log.insert(msg).expect("own (lamport, seq) is fresh");
        self.retain();
        pos
    }

    /// Loads a stored message (restore): trusted, no verification, no event. Messages
    /// of one author must come in ascending seq.
    pub fn load(&mut self, msg: SharedMessage, key: Option<&PublicKey>) {
        let Some(a) = self.author_entry(msg.author, key) else {
            return;
        };
        a.last_lamport = a.last_lamport.max(msg.lamport);
        a.chain.load(msg.clone());
        self.log.insert(msg);
    }

    /// Applies retention after loading.
    pub fn finish_load(&mut self) {
        self.retain();
    }

    /// Replaces a local message after signing it.
    pub fn replace_local(&mut self, me: &PeerId, msg: SharedMessage) {
        if let Some(a) = self.authors.get_mut(me) {
            a.chain.replace(msg.clone());
        }
        self.log.replace(msg);
    }

    /// Feeds a received (already parsed, not yet authenticated) message. `from_author`:
    /// the sending connection's authenticated peer is the author (see
    /// [`Chain::offer_from_author`]).
    pub fn receive(
        &mut self,
        msg: SharedMessage,
        from: ConnId,
        from_author: bool,
        now: Instant,
    ) -> Intake {
        let mut out = Intake::default();
        let author_id = msg.author;
        let max_buffer = self.limits.max_buffer;
        if self.authors.len() >= self.limits.max_authors
            && self.below_retention(&msg)
            && !self.authors.contains_key(&author_id)
        {
            // At the author cap a chain for it would evict another, and retention would
            // drop the message at once: it counts as known, so a neighbour that keeps
            // more history cannot have an evicted author's old messages delivered again.
            out.duplicate = true;
            return out;
        }
        let (gap, verify) = (self.limits.gap, self.limits.verify);
        let Some(author) = self.author_entry(author_id, None) else {
            out.forgers.push(from);
            return out;
        };
        let had_gap = author.chain.has_gap();
        let offer = if from_author {
            author
                .chain
                .offer_from_author(msg, from, &author.key, max_buffer, now)
        } else {
            author.chain.offer(msg, from, &author.key, max_buffer, now)
        };
        match offer {
            Offer::Duplicate => out.duplicate = true,
            Offer::Pending => {}
            Offer::Full => out.full = true,
            Offer::Forged(f) => out.forgers = f,
            Offer::Verified(v, f) => {
                let newest = v.iter().map(|m| m.lamport).max().unwrap_or(0);
                author.last_lamport = author.last_lamport.max(newest);
                out.verified = v;
                out.forgers = f;
            }
            Offer::Provisional(v, f, new) => {
                let newest = v.iter().map(|m| m.lamport).max().unwrap_or(0);
                author.last_lamport = author.last_lamport.max(newest);
                out.provisional = Some((newest, new));
                out.forgers = f;
            }
        }
        // What `collect` does, on the entry in hand: one author look-up per message
        // unless retention trims a chain (then as `collect`, from the top).
        let mut ready = Vec::new();
        author.chain.take_ready(&mut ready, now);
        let timed = author.chain.deadline(gap, verify).is_some();
        let gap_opened = !had_gap && author.chain.has_gap();
        let empty = author.chain.is_empty();
        let old_source = author.gap_source;
        if gap_opened {
            author.gap_source = Some(from);
        }
        if self.settle(&author_id, ready, timed, &mut out.delivered) {
            // Retention trimmed chains: whether a gap opened, and whether the chain is
            // empty, are as they are now.
            if let Some(a) = self.authors.get_mut(&author_id) {
                a.gap_source = if !had_gap && a.chain.has_gap() {
                    Some(from)
                } else {
                    old_source
                };
            }
            self.forget_if_empty(&author_id);
        } else if empty {
            self.forget_if_empty(&author_id);
        }
        out
    }

    /// Checks the signature that decides `author`'s provisional messages up to `tail`
    /// (see [`Chain::confirm`]); `None`: the author or the messages are gone.
    pub fn confirm(&mut self, author: &PeerId, tail: u64) -> Option<Confirm> {
        let a = self.authors.get_mut(author)?;
        let c = a.chain.confirm(tail, &a.key);
        if let Some(Confirm::Failed(run)) = &c {
            // Held ones left the chain (a verified copy may still come).
            self.forgets += 1;
            // Delivered ones leave the log as the app is told to drop them
            // (`Event::SignatureFailed`): the log holds only what the node stands by.
            // They stay known to the chain, so no copy of them is delivered again.
            for m in run {
                self.log.remove(m);
            }
        }
        self.forget_if_empty(author);
        c
    }

    /// Whether `msg` was accepted on its author's identity and awaits its check.
    pub fn is_provisional(&self, msg: &SharedMessage) -> bool {
        self.authors
            .get(&msg.author)
            .is_some_and(|a| a.chain.has_provisional() && a.chain.is_provisional(msg.seq))
    }

    fn forget_if_empty(&mut self, author: &PeerId) {
        if self.authors.get(author).is_some_and(|a| a.chain.is_empty()) {
            self.authors.remove(author);
            self.timed.remove(author);
            self.forgets += 1;
        }
    }

    fn collect(
        &mut self,
        author: &PeerId,
        now: Instant,
        delivered: &mut Vec<(SharedMessage, Position)>,
    ) {
        let Some(a) = self.authors.get_mut(author) else {
            return;
        };
        let mut ready = Vec::new();
        a.chain.take_ready(&mut ready, now);
        let timed = a
            .chain
            .deadline(self.limits.gap, self.limits.verify)
            .is_some();
        self.settle(author, ready, timed, delivered);
    }

    /// The rest of [`Room::collect`] once `author`'s chain handed out `ready`: files the
    /// author as timed or not, logs what is ready and applies retention. Returns whether
    /// retention trimmed any chain.
    fn settle(
        &mut self,
        author: &PeerId,
        ready: Vec<SharedMessage>,
        timed: bool,
        delivered: &mut Vec<(SharedMessage, Position)>,
    ) -> bool {
        if timed {
            self.timed.insert(*author);
        } else {
            self.timed.remove(author);
        }
        if ready.is_empty() {
            return false;
        }
        for m in ready {
            if let Some(pos) = self.log.insert(m.clone()) {
                delivered.push((m, pos));
            }
        }
        self.retain()
    }

    /// Whether retention would drop `msg` as soon as it was added: the log is full and
    /// `msg` sorts before its first message.
    fn below_retention(&self, msg: &SharedMessage) -> bool {
        self.log.len() >= self.limits.max_messages
            && self
                .log
                .iter()
                .next()
                .is_some_and(|first| msg.order_key() < first.order_key())
    }

    /// Applies retention: drops the oldest messages past the count or byte cap and moves
    /// their authors' floors up.
    /// Drops the oldest messages past the log's bounds (and their chains' history below
    /// them). Returns whether it trimmed any chain.
    fn retain(&mut self) -> bool {
        let (max_n, max_b) = (self.limits.max_messages, self.limits.max_bytes);
        let mut trimmed = false;
        while self.log.len() > max_n || self.log.bytes() > max_b {
            let Some(m) = self.log.pop_oldest() else {
                break;
            };
            if let Some(a) = self.authors.get_mut(&m.author) {
                a.chain.trim_below(m.seq + 1);
                trimmed = true;
            }
        }
        trimmed
    }

    /// Earliest chain deadline in this room.
    pub fn deadline(&self) -> Option<Instant> {
        let (gap, verify) = (self.limits.gap, self.limits.verify);
        self.timed
            .iter()
            .filter_map(|p| self.authors.get(p)?.chain.deadline(gap, verify))
            .min()
    }

    /// Runs chain timeouts; returns gap actions per author (with the connection that
    /// opened the gap) and what became deliverable.
    #[allow(clippy::type_complexity)]
    pub fn on_timeout(
        &mut self,
        now: Instant,
    ) -> (
        Vec<(PeerId, GapAction, Option<ConnId>)>,
        Vec<(SharedMessage, Position)>,
    ) {
        let l = self.limits;
        let mut gaps = Vec::new();
        let mut delivered = Vec::new();
        let due: Vec<PeerId> = self
            .timed
            .iter()
            .filter(|p| {
                self.authors
                    .get(p)
                    .and_then(|a| a.chain.deadline(l.gap, l.verify))
                    .is_some_and(|d| d <= now)
            })
            .copied()
            .collect();
        for p in due {
            if let Some(a) = self.authors.get_mut(&p) {
                if let Some(action) = a.chain.on_timeout(now, l.gap, l.verify, l.max_repairs) {
                    gaps.push((p, action, a.gap_source));
                }
            }
            self.collect(&p, now, &mut delivered);
            self.forget_if_empty(&p);
        }
        (gaps, delivered)
    }

    /// What this node holds, per author, for a summary frame.
    pub fn summary(&self) -> Vec<AuthorSummary> {
        self.authors
            .iter()
            .map(|(id, a)| AuthorSummary {
                author: *id,
                floor: a.chain.floor(),
                ranges: a.chain.have_ranges(),
            })
            .filter(|s| !s.ranges.is_empty() || s.floor > 0)
            .collect()
    }

    /// Notes a neighbour's summary entry: an unanchored chain may start at its lowest
    /// held seq. Returns the ranges the neighbour lacks that we hold (at or above its
    /// floor).
    pub fn compare(&mut self, theirs: &AuthorSummary) -> Vec<(u64, u64)> {
        let start = theirs.ranges.first().map(|r| r.0.max(theirs.floor));
        // One look-up of the author for the hint and the comparison.
        let Some(a) = self.authors.get_mut(&theirs.author) else {
            if let Some(start) = start {
                if self.hints.len() < MAX_HINTS || self.hints.contains_key(&theirs.author) {
                    let h = self.hints.entry(theirs.author).or_insert(start);
                    *h = (*h).min(start);
                }
            }
            return Vec::new();
        };
        if let Some(start) = start {
            a.chain.hint_start(start);
        }
        let mine = a.chain.have_ranges();
        subtract(&mine, &theirs.ranges, theirs.floor)
    }

    /// Delivers whatever hints made deliverable.
    pub fn collect_all(&mut self, now: Instant) -> Vec<(SharedMessage, Position)> {
        let ids: Vec<PeerId> = self.authors.keys().copied().collect();
        let mut out = Vec::new();
        for id in ids {
            self.collect(&id, now, &mut out);
        }
        out
    }

    /// Ranges held for an author the neighbour did not list at all.
    pub fn all_ranges_except(&self, listed: &BTreeSet<PeerId>) -> Vec<(PeerId, Vec<(u64, u64)>)> {
        self.authors
            .iter()
            .filter(|(id, _)| !listed.contains(id))
            .map(|(id, a)| (*id, a.chain.have_ranges()))
            .filter(|(_, r)| !r.is_empty())
            .collect()
    }
}

/// `mine` minus `theirs`, restricted to seqs `>= floor`. Both inputs ascending, disjoint.
pub(crate) fn subtract(mine: &[(u64, u64)], theirs: &[(u64, u64)], floor: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(s, e) in mine {
        let mut cur = s.max(floor);
        if cur >= e {
            continue;
        }
        for &(ts, te) in theirs {
            if te <= cur {
                continue;
            }
            if ts >= e {
                break;
            }
            if ts > cur {
                out.push((cur, ts));
            }
            cur = cur.max(te);
            if cur >= e {
                break;
            }
        }
        if cur < e {
            out.push((cur, e));
        }
    }
    out
}

/// Union of two ascending range lists.
pub(crate) fn union(mut a: Vec<(u64, u64)>, b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    a.extend_from_slice(b);
    a.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(a.len());
    for (s, e) in a {
        match out.last_mut() {
            Some((_, le)) if s <= *le => *le = (*le).max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// A room's timer: its earliest chain deadline.
impl crate::timers::Timed for Room {
    type Ctx = ();
    fn timer(&self, _: &()) -> Option<Instant> {
        self.deadline()
    }
}

#[cfg(test)]
mod tests {
    use super::{subtract, union, Limits, Room};
    use crate::config::Config;
    use crate::event::ConnId;
    use crate::message::{test_key, Message, SharedMessage, GENESIS};
    use libp2p_identity::Keypair;
    use std::sync::Arc;
    use std::time::Instant;

    /// Message 1 of `key`'s chain, signed by `signer`.
    fn first(key: &Keypair, signer: &Keypair) -> SharedMessage {
        let id = key.public().to_peer_id();
        let mut m = Message::new_local(id, "r".into(), 1, 1, 0, "n".into(), "t".into(), GENESIS, 0);
        m.sign(signer);
        Arc::new(m)
    }

    /// The duplicate cache trusts an unchanged `forgets` count to mean "still known":
    /// it must move whenever a held message stops being known, and a message known
    /// while it stays put must still be.
    #[test]
    fn forgets_moves_whenever_a_held_message_stops_being_known() {
        let now = Instant::now();
        let mut room = Room::new(Limits::of(&Config::default().max_authors(2)));
        let keys: Vec<Keypair> = (0..3).map(|_| test_key()).collect();
        let ids: Vec<_> = keys.iter().map(|k| k.public().to_peer_id()).collect();
        for k in &keys[..2] {
            room.receive(first(k, k), ConnId(1), false, now);
        }
        assert!(room.is_known(&ids[0], 1) && room.is_known(&ids[1], 1));
        let before = room.forgets;
        // A third author at the two-author cap evicts one of the first two.
        room.receive(first(&keys[2], &keys[2]), ConnId(1), false, now);
        assert!(room.is_known(&ids[2], 1));
        assert!(!(room.is_known(&ids[0], 1) && room.is_known(&ids[1], 1)));
        assert!(room.forgets > before, "an eviction must move the count");

        // A message taken from its author before its signature is checked, whose
        // check then fails: the chain lets go of it.
        let mut room = Room::new(Limits::of(&Config::default()));
        let (author, other) = (test_key(), test_key());
        let id = author.public().to_peer_id();
        room.receive(first(&author, &other), ConnId(2), true, now);
        assert!(room.is_known(&id, 1));
        let before = room.forgets;
        assert!(room.confirm(&id, 1).is_some());
        assert!(room.forgets > before, "a failed check must move the count");
    }

    #[test]
    fn range_union() {
        assert_eq!(union(vec![(1, 3)], &[(2, 5), (7, 8)]), vec![(1, 5), (7, 8)]);
        assert_eq!(union(vec![], &[(4, 5)]), vec![(4, 5)]);
    }

    #[test]
    fn range_subtraction() {
        assert_eq!(subtract(&[(1, 10)], &[], 0), vec![(1, 10)]);
        assert_eq!(subtract(&[(1, 10)], &[(1, 10)], 0), vec![]);
        assert_eq!(
            subtract(&[(1, 10)], &[(3, 5), (7, 8)], 0),
            vec![(1, 3), (5, 7), (8, 10)]
        );
        assert_eq!(subtract(&[(1, 10)], &[(3, 5)], 6), vec![(6, 10)]);
        assert_eq!(subtract(&[(1, 4), (6, 9)], &[(0, 7)], 0), vec![(7, 9)]);
        assert_eq!(subtract(&[(5, 6)], &[(1, 2)], 0), vec![(5, 6)]);
    }
}
