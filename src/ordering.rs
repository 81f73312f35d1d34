//! Per-author chains: authentication by hash chain and per-author FIFO delivery.
//!
//! One [`Chain`] exists per (room, author). It receives that author's messages in any
//! order, from any neighbour, any number of times, and:
//!
//! 1. drops copies of what it already holds, by sequence number (never by content);
//! 2. authenticates each message: by its own signature, or because a verified later
//!    message names its hash as `prev`; a message that is neither yet is *pending*;
//! 3. hands out verified messages strictly in chain order ([`Chain::take_ready`]),
//!    holding those that arrive after a gap until the gap fills.
//!
//! Chain order follows `prev_seq`: normally `seq - 1`, but an author that restarted skips
//! the numbers it had reserved and not used, and its next message names the last one it
//! did use. The skipped numbers become a *void* that delivery hops over at once.
//!
//! A gap that does not fill within the gap timeout is first *repaired* (the node asks
//! neighbours for the range, [`GapAction::Request`]), and only after the repair attempts
//! is it *skipped*; a skipped message that shows up later is still delivered, once, as a
//! late arrival. A chain first seen in the middle (a node that joined late) starts at the
//! lowest sequence number any neighbour reported holding ([`Chain::hint_start`]).
//!
//! Retention trims the oldest messages: everything below [`Chain::floor`] is gone, counts
//! as known and is never requested again.
//!
//! The chain knows nothing of connections: candidates carry an opaque source tag so the
//! node can punish the neighbour that sent a forgery.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use libp2p_identity::PublicKey;
use smallvec::SmallVec;

use crate::message::{verify, Hash, SharedMessage, GENESIS};

/// What [`Chain::offer`] made of a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer<S> {
    /// Already held or delivered (or below the retention floor): ignored.
    Duplicate,
    /// Not authenticated yet; kept until a signed later message vouches for it.
    Pending,
    /// The buffer for this chain is full; the message was not kept.
    Full,
    /// Authenticated: these messages (ascending by seq, possibly more than the offered
    /// one) became verified and can be relayed. The second list names sources of pending
    /// candidates that the verified chain proved forged.
    Verified(Vec<SharedMessage>, Vec<S>),
    /// Proven forged: its signature is invalid, or its hash contradicts a verified
    /// successor. Names the offered message's source.
    Forged(Vec<S>),
    /// Only from [`Chain::offer_from_author`]: accepted on the sender's authenticated
    /// identity, signature not yet checked. Like [`Offer::Verified`], but the messages
    /// are *provisional*: deliverable, never served ([`Chain::range`],
    /// [`Chain::through_next_signature`] skip them) until [`Chain::confirm`] with the
    /// last one's seq checks the signature.
    /// The third field says whether the offered message opened a new provisional run
    /// (it is the signed one to confirm) or joined an existing one (its hash is the
    /// unchecked `prev` of that run's lowest message).
    Provisional(Vec<SharedMessage>, Vec<S>, bool),
}

/// What [`Chain::confirm`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirm {
    /// The signature holds: the provisional messages from the checked one down to this
    /// seq are verified now ([`Chain::run`] lists them).
    Verified(u64),
    /// The signature is invalid: these messages were dropped from the chain, ascending
    /// (those already delivered still count as known, so they are never delivered
    /// again; the room takes them out of its log).
    Failed(Vec<SharedMessage>),
}

/// What to do about a gap whose timeout passed ([`Chain::on_timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapAction {
    /// Ask a neighbour for `[start, end)`; `attempt` counts from 1.
    Request {
        /// First missing seq.
        start: u64,
        /// End of the missing range (exclusive).
        end: u64,
        /// Which attempt this is.
        attempt: u32,
    },
    /// Gave up: delivery resumed after `[start, end)`.
    Skipped {
        /// First skipped seq.
        start: u64,
        /// End of the skipped range (exclusive).
        end: u64,
    },
}

#[derive(Debug)]
struct Candidate<S> {
    msg: SharedMessage,
    from: S,
    at: Instant,
}

/// State of one author's messages in one room.
#[derive(Debug)]
pub struct Chain<S> {
    /// Sequence numbers below this were trimmed by retention.
    floor: u64,
    /// Next seq to deliver; `None` until the chain is anchored.
    next: Option<u64>,
    /// Lowest seq a neighbour reported holding; where an unanchored chain starts.
    hint: Option<u64>,
    /// Where delivery started if not at the chain's first message (a late joiner).
    anchor: Option<u64>,
    /// Ranges `[start, end)` that delivery hops over: voids (numbers never used) and
    /// skipped gaps. A message inside one is still accepted, once.
    skipped: BTreeMap<u64, u64>,
    /// Verified messages, delivered (`seq < next`) or held (`seq >= next`).
    msgs: BTreeMap<u64, SharedMessage>,
    /// Unverified candidates by seq.
    pending: BTreeMap<u64, Candidates<S>>,
    /// Number of candidates in `pending`.
    pending_n: usize,
    /// Hashes vouched for by a verified successor, for seqs not yet held.
    expected: BTreeMap<u64, Hash>,
    /// Verified but not yet delivered, count.
    held: usize,
    /// When the current gap began (or its last repair request went out).
    gap_since: Option<Instant>,
    /// Repair requests made for the current gap.
    repairs: u32,
    /// When the oldest pending candidate arrived.
    pending_since: Option<Instant>,
    /// Messages that arrived after delivery had moved past them.
    late: Vec<SharedMessage>,
    /// Provisional runs (accepted from their author, signature unchecked) as
    /// `(lowest, tail)`: the messages from `tail` (the signed one whose check decides
    /// them) down its `prev` links to `lowest`. Almost always empty or one run.
    provisional: Vec<(u64, u64)>,
}

/// Candidates kept per sequence number (distinct hashes from different senders).
const MAX_CANDIDATES: usize = 4;

/// Almost always exactly one candidate: keep it inline.
type Candidates<S> = SmallVec<[Candidate<S>; 1]>;

impl<S: Clone + PartialEq> Default for Chain<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + PartialEq> Chain<S> {
    /// An empty, unanchored chain.
    pub fn new() -> Self {
        Chain {
            floor: 0,
            next: None,
            hint: None,
            anchor: None,
            skipped: BTreeMap::new(),
            msgs: BTreeMap::new(),
            pending: BTreeMap::new(),
            pending_n: 0,
            expected: BTreeMap::new(),
            held: 0,
            gap_since: None,
            repairs: 0,
            pending_since: None,
            late: Vec::new(),
            provisional: Vec::new(),
        }
    }

    /// A chain of the local author whose next message is `next`.
    pub fn local(next: u64) -> Self {
        let mut c = Self::new();
        c.next = Some(next);
        c
    }

    /// Whether a message with this seq is already verified and held or delivered, or
    /// below the retention floor.
    pub fn is_known(&self, seq: u64) -> bool {
        if seq < self.floor {
            return true;
        }
        // Below `next` and outside the skipped ranges is delivered: answered without
        // the look-up in `msgs` (most copies that reach this are of delivered messages).
        match self.next {
            Some(n) if seq < n && !self.in_skipped(seq) => return true,
            // At or past `next` `msgs` holds only the `held` messages: with none, a new
            // message (the first copy of each) is told apart without the look-up.
            Some(n) if seq >= n && self.held == 0 => {
                debug_assert!(!self.msgs.contains_key(&seq));
                return false;
            }
            _ => {}
        }
        self.msgs.contains_key(&seq)
    }

    fn in_skipped(&self, seq: u64) -> bool {
        self.skipped_end(seq).is_some()
    }

    /// The end of the skipped range holding `seq`, if one does.
    fn skipped_end(&self, seq: u64) -> Option<u64> {
        if self.skipped.is_empty() {
            return None;
        }
        let (_, &end) = self.skipped.range(..=seq).next_back()?;
        (seq < end).then_some(end)
    }

    /// Messages held or pending (the chain's share of the out-of-order buffer).
    pub fn buffered(&self) -> usize {
        self.held + self.pending_n
    }

    /// Messages kept: verified (delivered or held) plus pending candidates.
    pub fn stored(&self) -> usize {
        self.msgs.len() + self.pending_n
    }

    /// Next sequence number to deliver, if anchored.
    pub fn next_seq(&self) -> Option<u64> {
        self.next
    }

    /// Sequence numbers below this were trimmed by retention.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Whether the chain holds nothing and expects nothing (safe to forget).
    pub fn is_empty(&self) -> bool {
        self.next.is_none() && self.buffered() == 0 && self.msgs.is_empty()
    }

    /// The verified message with this seq, if kept.
    pub fn get(&self, seq: u64) -> Option<&SharedMessage> {
        self.msgs.get(&seq)
    }

    /// Verified messages with seq in `[start, end)`, ascending.
    /// Provisional messages (not yet confirmed) are left out.
    pub fn range(&self, start: u64, end: u64) -> impl Iterator<Item = &SharedMessage> {
        self.msgs
            .range(start..end.max(start))
            .filter(move |(s, _)| !self.is_provisional(**s))
            .map(|(_, m)| m)
    }

    /// Whether messages accepted on their author's identity await [`Chain::confirm`].
    pub fn has_provisional(&self) -> bool {
        !self.provisional.is_empty()
    }

    /// Whether the message with this seq is provisional (or lies within a provisional
    /// run's span: conservative for the rare fork inside one).
    pub fn is_provisional(&self, seq: u64) -> bool {
        self.provisional
            .iter()
            .any(|&(lo, tail)| lo <= seq && seq <= tail)
    }

    /// Ranges `[start, end)` of verified messages held, ascending.
    pub fn have_ranges(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &s in self.msgs.keys() {
            match out.last_mut() {
                Some((_, end)) if *end == s => *end = s + 1,
                _ => out.push((s, s + 1)),
            }
        }
        out
    }

    /// Verified messages after `seq` up to and including the first signed one (what a
    /// receiver of message `seq` needs to verify it).
    pub fn through_next_signature(&self, seq: u64) -> Vec<SharedMessage> {
        let mut out = Vec::new();
        let mut want = seq;
        for (s, m) in self.msgs.range(seq + 1..) {
            if m.prev_seq != want || self.is_provisional(*s) {
                break;
            }
            out.push(m.clone());
            if m.signature.is_some() {
                break;
            }
            want = m.seq;
        }
        out
    }

    /// Records a message of the local author (already signed or to be signed later).
    pub fn push_local(&mut self, msg: SharedMessage) {
        let seq = msg.seq;
        // Numbers skipped since our last message here (a restart, or a rejoin that
        // starts a new segment) may still hold our older messages: accept them.
        let from = self.next.unwrap_or(1);
        if from < seq {
            self.mark_void(from, seq);
        }
        // Verified messages held below the new position (our own older messages that
        // came back through history) are delivered now, as late arrivals.
        let lo = self.next.unwrap_or(0);
        let held: Vec<SharedMessage> = self.msgs.range(lo..seq).map(|(_, m)| m.clone()).collect();
        self.held -= held.len();
        self.late.extend(held);
        if self.held == 0 {
            self.gap_since = None;
        }
        self.msgs.insert(seq, msg);
        self.next = Some(seq + 1);
    }

    /// Loads a stored, trusted message (restart). Messages must come in ascending seq;
    /// numbers missing between them stay acceptable should they arrive; numbers before
    /// the first one loaded count as gone.
    pub fn load(&mut self, msg: SharedMessage) {
        let seq = msg.seq;
        match self.next {
            None if msg.prev_seq > 0 => self.floor = seq,
            Some(n) if n < seq => {
                self.skipped.insert(n, seq);
            }
            _ => {}
        }
        self.msgs.insert(seq, msg);
        self.next = Some(self.next.map_or(seq + 1, |n| n.max(seq + 1)));
    }

    /// Replaces a stored local message (after signing).
    pub fn replace(&mut self, msg: SharedMessage) {
        self.msgs.insert(msg.seq, msg);
    }

    /// A neighbour holds this author's messages from `seq` on: an unanchored chain may
    /// start there instead of waiting for earlier ones.
    pub fn hint_start(&mut self, seq: u64) {
        match self.anchor {
            _ if self.next.is_none() => {
                self.hint = Some(self.hint.map_or(seq, |h| h.min(seq)));
            }
            // Started late, and someone has older history: accept it as late arrivals.
            Some(a) if seq.max(self.floor) < a => {
                let s = seq.max(self.floor);
                self.skipped.insert(s, a);
                self.anchor = Some(s);
            }
            _ => {}
        }
    }

    /// Offers a received message. `key` is the author's public key; `max_buffer` bounds
    /// held plus pending messages of this chain. An authentic message that
    /// [`Chain::take_ready`] would hand out at once is taken even when the buffer is
    /// full of held ones (one over the bound until that call, which must come before
    /// any hint, trim or timeout reaches the chain): refusing it would stall the chain
    /// behind the very gap it fills.
    pub fn offer(
        &mut self,
        msg: SharedMessage,
        from: S,
        key: &PublicKey,
        max_buffer: usize,
        now: Instant,
    ) -> Offer<S> {
        self.offer_inner(msg, from, key, max_buffer, now, false)
    }

    /// [`Chain::offer`] for a message that came from its author directly (the sender's
    /// authenticated identity is the author): a signed message is accepted without
    /// checking its signature yet, as [`Offer::Provisional`]; the caller must call
    /// [`Chain::confirm`] with its seq before serving or relaying it. Unsigned messages,
    /// and signed ones whose hash a verified successor already vouches for, go as in
    /// [`Chain::offer`].
    pub fn offer_from_author(
        &mut self,
        msg: SharedMessage,
        from: S,
        key: &PublicKey,
        max_buffer: usize,
        now: Instant,
    ) -> Offer<S> {
        self.offer_inner(msg, from, key, max_buffer, now, true)
    }

    fn offer_inner(
        &mut self,
        msg: SharedMessage,
        from: S,
        key: &PublicKey,
        max_buffer: usize,
        now: Instant,
        from_author: bool,
    ) -> Offer<S> {
        let seq = msg.seq;
        let mut deferred = false;
        if self.is_known(seq) {
            return Offer::Duplicate;
        }
        // A provisional run whose lowest message names this one as `prev`: the expected
        // hash is that run's unchecked claim, so this message joins the run.
        let mut joins = None;
        if let Some(exp) = self.expected.get(&seq) {
            if *exp != msg.hash {
                return Offer::Forged(vec![from]);
            }
            joins = self.provisional.iter().position(|&(lo, _)| {
                self.msgs
                    .get(&lo)
                    .is_some_and(|m| m.prev_seq == seq && m.prev == msg.hash)
            });
        } else if let Some(sig) = &msg.signature {
            if from_author {
                deferred = true;
            } else if !verify(key, &msg.hash, sig) {
                return Offer::Forged(vec![from]);
            }
        } else {
            // Unverified: keep as a candidate unless it is a copy of one.
            let buffered = self.buffered();
            let cands = self.pending.entry(seq).or_default();
            if cands.iter().any(|c| c.msg.hash == msg.hash) {
                return Offer::Pending;
            }
            if cands.len() >= MAX_CANDIDATES || buffered >= max_buffer {
                if cands.is_empty() {
                    self.pending.remove(&seq);
                }
                return Offer::Full;
            }
            cands.push(Candidate { msg, from, at: now });
            self.pending_n += 1;
            self.pending_since.get_or_insert(now);
            return Offer::Pending;
        }
        if self.buffered() >= max_buffer && self.next.is_none_or(|n| seq >= n) {
            // Make room by evicting an unverified candidate (the highest): junk
            // candidates must not be able to block an authentic chain.
            if let Some(mut e) = self.pending.last_entry() {
                e.get_mut().pop();
                self.pending_n -= 1;
                if e.get().is_empty() {
                    e.remove();
                }
            } else if self.buffered() > max_buffer || !self.deliverable_at_once(&msg) {
                return Offer::Full;
            }
            // Else the buffer is full of verified messages held behind a gap and this
            // one opens it: refusing it would stall the chain until repair found it
            // again. `take_ready` hands it out at once, so the buffer exceeds
            // `max_buffer` by this one message only until then.
        }
        // `msg` is authentic. Walk down the chain verifying pending predecessors.
        let mut verified = Vec::new();
        let mut forgers = Vec::new();
        // Unverified copies of the offered message itself go; those of the messages the
        // walk reaches were taken with them.
        self.take_pending(seq);
        let mut cur = msg;
        loop {
            let (prev, s, p) = (cur.prev, cur.seq, cur.prev_seq);
            if !self.expected.is_empty() {
                self.expected.remove(&s);
            }
            self.insert_verified(cur.clone(), now);
            verified.push(cur);
            if p == 0 || prev == GENESIS {
                // A chain that starts above 1 (the author rejoined the room): the
                // numbers below were never used in this segment.
                if s > 1 {
                    self.mark_void(self.next.unwrap_or(1).min(s), s);
                }
                break;
            }
            if p + 1 < s {
                self.mark_void(p + 1, s);
            }
            if self.is_known(p) {
                break;
            }
            let found = self.take_pending(p).and_then(|cands| {
                let mut found = None;
                for c in cands {
                    if found.is_none() && c.msg.hash == prev {
                        found = Some(c.msg);
                    } else if !forgers.contains(&c.from) {
                        forgers.push(c.from);
                    }
                }
                found
            });
            match found {
                Some(m) => cur = m,
                None => {
                    self.expected.insert(p, prev);
                    break;
                }
            }
        }
        if self.pending.is_empty() {
            self.pending_since = None;
        }
        verified.reverse();
        let lowest = verified.first().map_or(seq, |m| m.seq);
        if let Some(i) = joins {
            self.provisional[i].0 = lowest;
            return Offer::Provisional(verified, forgers, false);
        }
        if deferred {
            self.provisional.push((lowest, seq));
            return Offer::Provisional(verified, forgers, true);
        }
        Offer::Verified(verified, forgers)
    }

    /// Checks the signature of provisional message `tail` (see
    /// [`Chain::offer_from_author`]) and settles it and the provisional predecessors it
    /// vouched for. `None`: nothing provisional under that seq (trimmed meanwhile).
    pub fn confirm(&mut self, tail: u64, key: &PublicKey) -> Option<Confirm> {
        let i = self.provisional.iter().position(|&(_, t)| t == tail)?;
        let (lowest, _) = self.provisional.swap_remove(i);
        let ok = self
            .msgs
            .get(&tail)
            .and_then(|m| Some(verify(key, &m.hash, m.signature.as_deref()?)))
            .unwrap_or(false);
        if ok {
            return Some(Confirm::Verified(lowest));
        }
        let run = self.run(lowest, tail);
        // The hash the run's first message named for its predecessor is unproven.
        if let Some(first) = run.first() {
            if self.expected.get(&first.prev_seq) == Some(&first.prev) {
                self.expected.remove(&first.prev_seq);
            }
        }
        for m in &run {
            let s = m.seq;
            if self.msgs.remove(&s).is_some() && self.next.is_none_or(|n| s >= n) {
                // Held, never delivered: a verified copy may still come.
                self.held -= 1;
            }
        }
        if self.held == 0 {
            self.gap_since = None;
        }
        Some(Confirm::Failed(run))
    }

    /// The messages held from `tail` down its `prev` links to `lowest`, ascending.
    pub fn run(&self, lowest: u64, tail: u64) -> Vec<SharedMessage> {
        let mut run = Vec::new();
        let mut cur = self.msgs.get(&tail);
        while let Some(m) = cur.filter(|m| m.seq >= lowest) {
            run.push(m.clone());
            cur = (m.prev_seq >= lowest)
                .then(|| self.msgs.get(&m.prev_seq))
                .flatten();
        }
        run.reverse();
        run
    }

    fn take_pending(&mut self, seq: u64) -> Option<Candidates<S>> {
        if self.pending.is_empty() {
            return None;
        }
        let c = self.pending.remove(&seq)?;
        self.pending_n -= c.len();
        Some(c)
    }

    /// Marks `[start, end)` as numbers the author never used (minus what is held).
    /// Ranges already hopped over stay; the rest of `[start, end)` joins them (the
    /// skipped ranges stay disjoint and never cover a held message).
    fn mark_void(&mut self, start: u64, end: u64) {
        let start = start.max(self.floor);
        let mut s = start;
        while s < end {
            if let Some(e) = self.skipped_end(s) {
                // Inside a range delivery already hops over: go on after it.
                s = e;
                continue;
            }
            // Split around messages we actually hold (a fork after a lossy restart).
            let held_at = self.msgs.range(s..end).next().map(|(&k, _)| k);
            let stop = held_at.unwrap_or(end);
            if s < stop {
                // Ranges that start inside this one are merged into it (they end at or
                // before a held message, so at or before `stop` when one is held).
                let mut e = stop;
                while let Some((&a, &b)) = self.skipped.range(s + 1..stop).next() {
                    self.skipped.remove(&a);
                    e = e.max(b);
                }
                self.skipped.insert(s, e);
            }
            // Past the held message at `stop` (or `end`); a merged range reaching
            // further is hopped above.
            s = stop + 1;
        }
        if self.next.is_some_and(|n| n >= start && n < end) && !self.msgs.contains_key(&start) {
            // Delivery can move on at once.
            self.gap_since = None;
        }
    }

    fn insert_verified(&mut self, msg: SharedMessage, now: Instant) {
        let seq = msg.seq;
        self.remove_skipped(seq);
        match self.next {
            Some(n) if seq < n => {
                self.late.push(msg.clone());
                self.msgs.insert(seq, msg);
            }
            _ => {
                self.msgs.insert(seq, msg);
                self.held += 1;
                if self.next != Some(seq) {
                    self.gap_since.get_or_insert(now);
                }
            }
        }
    }

    fn remove_skipped(&mut self, seq: u64) {
        if self.skipped.is_empty() {
            return;
        }
        let Some((&start, &end)) = self.skipped.range(..=seq).next_back() else {
            return;
        };
        if seq >= end {
            return;
        }
        self.skipped.remove(&start);
        if start < seq {
            self.skipped.insert(start, seq);
        }
        if seq + 1 < end {
            self.skipped.insert(seq + 1, end);
        }
    }

    /// Whether [`Chain::take_ready`] would hand `msg` out at once were it verified and
    /// held: nothing but skipped ranges and the void `msg` itself declares lies between
    /// `next` and it, or it would anchor an unanchored chain (it lies below every held
    /// message and may start one, as in [`Chain::anchor`]).
    fn deliverable_at_once(&self, msg: &SharedMessage) -> bool {
        let seq = msg.seq;
        match self.next {
            Some(mut at) => loop {
                // `prev_seq + 1 .. seq` are numbers the author declares unused (all
                // below `seq` when it starts a segment: `prev_seq` is 0).
                if at == seq || (msg.prev_seq < at && at < seq) {
                    return true;
                }
                match self.skipped.get(&at) {
                    Some(&end) if at < seq => at = end,
                    _ => return false,
                }
            },
            None => {
                self.msgs.keys().next().is_none_or(|&lowest| seq < lowest)
                    && self.may_start_at(msg)
            }
        }
    }

    /// Where delivery of an unanchored chain can start, if it can.
    fn anchor(&self) -> Option<u64> {
        let (&lowest, m) = self.msgs.iter().next()?;
        self.may_start_at(m).then_some(lowest)
    }

    /// Whether an unanchored chain may start delivery at `m`: it starts the chain or a
    /// segment, or nothing older can still come (the floor, or the neighbours' hint).
    fn may_start_at(&self, m: &SharedMessage) -> bool {
        m.prev_seq == 0 || m.seq <= self.floor || self.hint.is_some_and(|h| m.seq <= h)
    }

    /// Takes the messages that can be delivered now: first late arrivals (out of
    /// per-author order by nature), then the in-order run starting at `next`.
    pub fn take_ready(&mut self, out: &mut Vec<SharedMessage>, now: Instant) {
        out.append(&mut self.late);
        let mut n = match self.next {
            Some(n) => n,
            None => {
                let Some(a) = self.anchor() else {
                    return;
                };
                if self.msgs.get(&a).is_some_and(|m| m.prev_seq != 0) {
                    self.anchor = Some(a);
                }
                a
            }
        };
        loop {
            if let Some(m) = self.msgs.get(&n) {
                out.push(m.clone());
                self.held -= 1;
                n += 1;
            } else if let Some(&end) = self.skipped.get(&n) {
                n = end;
            } else {
                break;
            }
        }
        if self.next != Some(n) {
            // Progress: any remaining gap is a new one.
            self.repairs = 0;
            self.gap_since = None;
        }
        self.next = Some(n);
        if self.held > 0 {
            self.gap_since.get_or_insert(now);
        } else {
            self.gap_since = None;
        }
    }

    /// Whether messages are held behind a gap.
    pub fn has_gap(&self) -> bool {
        self.gap_since.is_some()
    }

    /// Earliest instant at which [`Chain::on_timeout`] has work.
    pub fn deadline(&self, gap_timeout: Duration, verify_timeout: Duration) -> Option<Instant> {
        let g = self.gap_since.map(|t| t + gap_timeout);
        let p = self.pending_since.map(|t| t + verify_timeout);
        match (g, p) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Handles a gap older than `gap_timeout`: the first `max_repairs` times it asks
    /// for a repair ([`GapAction::Request`]) and restarts the clock; then it gives up,
    /// delivery resumes at the lowest held message and the missing range is remembered
    /// as skipped (still accepted if it arrives later). Also drops pending candidates
    /// older than `verify_timeout`. Harmless when called early or repeatedly. Call
    /// [`Chain::take_ready`] after it: a skip leaves messages deliverable.
    pub fn on_timeout(
        &mut self,
        now: Instant,
        gap_timeout: Duration,
        verify_timeout: Duration,
        max_repairs: u32,
    ) -> Option<GapAction> {
        if self
            .pending_since
            .is_some_and(|t| now >= t + verify_timeout)
        {
            // Drop only the candidates that waited the full timeout.
            for cands in self.pending.values_mut() {
                cands.retain(|c| now < c.at + verify_timeout);
            }
            self.pending.retain(|_, c| !c.is_empty());
            self.pending_n = self.pending.values().map(SmallVec::len).sum();
            self.pending_since = self.pending.values().flatten().map(|c| c.at).min();
        }
        let since = self.gap_since?;
        if now < since + gap_timeout {
            return None;
        }
        if self.next.is_none() && self.anchor().is_some() {
            // Nothing missing: the chain can start at what it holds (a start hint came
            // after its messages), and `take_ready` starts it. Skipping from the hint
            // instead would strand the held messages below it.
            self.gap_since = Some(now);
            return None;
        }
        let start = self.next.or(self.hint).unwrap_or(1).max(self.floor);
        let Some((&lowest, _)) = self.msgs.range(start..).next() else {
            // Nothing held from `start` on. (An unanchored chain holding messages only
            // below its hint, a wrong or hostile one, can start at them: handled above.)
            self.gap_since = None;
            return None;
        };
        if lowest <= start {
            // Nothing missing after all: the message at `next` waits for `take_ready`.
            // (An unanchored chain that holds its start returned above.)
            debug_assert!(self.next.is_some());
            self.gap_since = None;
            return None;
        }
        if self.repairs < max_repairs {
            self.repairs += 1;
            self.gap_since = Some(now);
            return Some(GapAction::Request {
                start,
                end: lowest,
                attempt: self.repairs,
            });
        }
        self.skipped.insert(start, lowest);
        if self.next.is_none() && start > 1 {
            // Started late: older history that shows up later is still backfilled.
            self.anchor = Some(start);
        }
        self.next = Some(start);
        self.repairs = 0;
        self.gap_since = None;
        Some(GapAction::Skipped { start, end: lowest })
    }

    /// Forgets every message below `seq` (retention); they count as known from now on.
    /// Only delivered messages may be trimmed.
    pub fn trim_below(&mut self, seq: u64) {
        if seq <= self.floor {
            return;
        }
        self.floor = seq;
        let keep = self.msgs.split_off(&seq);
        let gone = std::mem::replace(&mut self.msgs, keep);
        // Normally only delivered messages are trimmed; held ones go with their count.
        let held_gone = gone
            .keys()
            .filter(|&&k| self.next.is_none_or(|n| k >= n))
            .count();
        self.held -= held_gone;
        if self.held == 0 {
            self.gap_since = None;
        }
        let keep = self.expected.split_off(&seq);
        self.expected = keep;
        self.skipped.retain(|_, end| *end > seq);
        let keep = self.pending.split_off(&seq);
        self.pending = keep;
        self.provisional.retain(|&(_, tail)| tail >= seq);
        self.pending_n = self.pending.values().map(SmallVec::len).sum();
        if self.next.is_some_and(|n| n < seq) {
            self.next = Some(seq);
        }
    }
}

#[cfg(test)]
mod tests;
