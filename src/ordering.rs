//! Per-author chains: authentication by hash chain and per-author FIFO delivery.
//!
//! One [`Chain`] exists per (room, author). It receives that author's messages in any
//! order, from any neighbour, any number of times, and:
//!
//! 1. drops copies of what it already holds, by sequence number (never by content);
//! 2. authenticates each message: by its own signature, or because a verified later
//!    message names its hash as `prev`; a message that is neither yet is *pending*;
//! 3. hands out verified messages strictly in sequence order ([`Chain::take_ready`]),
//!    holding those that arrive after a gap until the gap fills.
//!
//! A chain first seen in the middle (a node that joined a room late) waits up to the gap
//! timeout for earlier messages, then starts where it is ([`Chain::on_timeout`]); messages
//! before that point that show up later are still delivered, once, as late arrivals.
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
    /// Already held or delivered: ignored.
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
    /// successor. The sources listed sent forgeries (the offered message's source, and
    /// sources of pending candidates that lost against a verified hash).
    Forged(Vec<S>),
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
    /// Next seq to deliver; `None` until the chain is anchored.
    next: Option<u64>,
    /// Ranges `[start, end)` below `next` that were skipped and may still arrive late.
    skipped: BTreeMap<u64, u64>,
    /// Verified messages, delivered (`seq < next`, not skipped) or held (`seq >= next`).
    msgs: BTreeMap<u64, SharedMessage>,
    /// Unverified candidates by seq.
    pending: BTreeMap<u64, Candidates<S>>,
    /// Number of candidates in `pending`.
    pending_n: usize,
    /// Hashes vouched for by a verified successor, for seqs not yet held.
    expected: BTreeMap<u64, Hash>,
    /// Verified but not yet delivered, count.
    held: usize,
    /// When the oldest current gap (or unanchored start) began.
    gap_since: Option<Instant>,
    /// When the oldest pending candidate arrived.
    pending_since: Option<Instant>,
    /// Last delivered-in-order seq's successor tracking for late arrivals.
    late: Vec<SharedMessage>,
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
            next: None,
            skipped: BTreeMap::new(),
            msgs: BTreeMap::new(),
            pending: BTreeMap::new(),
            pending_n: 0,
            expected: BTreeMap::new(),
            held: 0,
            gap_since: None,
            pending_since: None,
            late: Vec::new(),
        }
    }

    /// A chain of the local author: everything below `next` is its own history.
    pub fn local(next: u64) -> Self {
        let mut c = Self::new();
        c.next = Some(next);
        c
    }

    /// Whether a message with this seq is already verified and held or delivered.
    pub fn is_known(&self, seq: u64) -> bool {
        if self.msgs.contains_key(&seq) {
            return true;
        }
        match self.next {
            Some(n) if seq < n => !self.in_skipped(seq),
            _ => false,
        }
    }

    fn in_skipped(&self, seq: u64) -> bool {
        self.skipped
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &end)| seq < end)
    }

    /// Messages held or pending (the chain's share of the out-of-order buffer).
    pub fn buffered(&self) -> usize {
        self.held + self.pending_n
    }

    /// Next sequence number to deliver, if anchored.
    pub fn next_seq(&self) -> Option<u64> {
        self.next
    }

    /// The verified message with this seq, if kept.
    pub fn get(&self, seq: u64) -> Option<&SharedMessage> {
        self.msgs.get(&seq)
    }

    /// Verified messages from `seq` up to and including the first signed one.
    pub fn through_next_signature(&self, seq: u64) -> Vec<SharedMessage> {
        let mut out = Vec::new();
        for (&s, m) in self.msgs.range(seq..) {
            if s != seq + out.len() as u64 {
                break;
            }
            out.push(m.clone());
            if m.signature.is_some() {
                break;
            }
        }
        out
    }

    /// Records a message of the local author (already signed or to be signed later).
    pub fn push_local(&mut self, msg: SharedMessage) {
        let seq = msg.seq;
        self.msgs.insert(seq, msg);
        self.next = Some(seq + 1);
    }

    /// Replaces a stored local message (after signing).
    pub fn replace(&mut self, msg: SharedMessage) {
        self.msgs.insert(msg.seq, msg);
    }

    /// Offers a received message. `key` is the author's public key; `max_buffer` bounds
    /// held plus pending messages of this chain.
    pub fn offer(
        &mut self,
        msg: SharedMessage,
        from: S,
        key: &PublicKey,
        max_buffer: usize,
        now: Instant,
    ) -> Offer<S> {
        let seq = msg.seq;
        if self.is_known(seq) {
            return Offer::Duplicate;
        }
        if let Some(exp) = self.expected.get(&seq) {
            if *exp != msg.hash {
                return Offer::Forged(vec![from]);
            }
        } else if let Some(sig) = &msg.signature {
            if !verify(key, &msg.hash, sig) {
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
        if self.held >= max_buffer && self.next.is_some_and(|n| seq >= n) {
            return Offer::Full;
        }
        // `msg` is authentic. Walk down the chain verifying pending predecessors.
        let mut verified = Vec::new();
        let mut forgers = Vec::new();
        let mut cur = msg;
        loop {
            let prev = cur.prev;
            let s = cur.seq;
            self.expected.remove(&s);
            self.take_pending(s);
            let shared = cur;
            self.insert_verified(shared.clone(), now);
            verified.push(shared);
            if s == 1 || prev == GENESIS {
                break;
            }
            let p = s - 1;
            if self.is_known(p) {
                break;
            }
            match self.take_pending(p) {
                Some(cands) => {
                    let mut found = None;
                    for c in cands {
                        if found.is_none() && c.msg.hash == prev {
                            found = Some(c.msg);
                        } else if !forgers.contains(&c.from) {
                            forgers.push(c.from);
                        }
                    }
                    match found {
                        Some(m) => cur = m,
                        None => {
                            self.expected.insert(p, prev);
                            break;
                        }
                    }
                }
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
        Offer::Verified(verified, forgers)
    }

    fn take_pending(&mut self, seq: u64) -> Option<Candidates<S>> {
        let c = self.pending.remove(&seq)?;
        self.pending_n -= c.len();
        Some(c)
    }

    fn insert_verified(&mut self, msg: SharedMessage, now: Instant) {
        let seq = msg.seq;
        match self.next {
            Some(n) if seq < n => {
                // A skipped message arriving late.
                self.remove_skipped(seq);
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

    /// Takes the messages that can be delivered now: first late arrivals (out of
    /// per-author order by nature), then the in-order run starting at `next`.
    pub fn take_ready(&mut self, out: &mut Vec<SharedMessage>) {
        out.append(&mut self.late);
        let Some(mut n) = self
            .next
            .or_else(|| self.msgs.contains_key(&1).then_some(1))
        else {
            return;
        };
        while let Some(m) = self.msgs.get(&n) {
            out.push(m.clone());
            self.held -= 1;
            n += 1;
        }
        self.next = Some(n);
        if self.held == 0 {
            self.gap_since = None;
        }
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

    /// Gives up on a gap older than `gap_timeout`: delivery resumes at the lowest held
    /// message and the missing range is remembered as skipped (it is still accepted if
    /// it arrives later). Drops pending candidates older than `verify_timeout`. Returns
    /// the skipped range, if any. Harmless when called early or repeatedly.
    pub fn on_timeout(
        &mut self,
        now: Instant,
        gap_timeout: Duration,
        verify_timeout: Duration,
    ) -> Option<(u64, u64)> {
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
        let start = self.next.unwrap_or(1);
        let (&lowest, _) = self.msgs.range(start..).next()?;
        if lowest > start {
            self.skipped.insert(start, lowest);
        }
        self.next = Some(lowest);
        self.gap_since = None;
        // If another gap remains after the run that is now deliverable, its clock
        // starts now.
        let mut n = lowest;
        while self.msgs.contains_key(&n) {
            n += 1;
        }
        if self.msgs.range(n..).next().is_some() {
            self.gap_since = Some(now);
        }
        (lowest > start).then_some((start, lowest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use libp2p_identity::Keypair;
    use quickcheck::{quickcheck, Arbitrary, Gen};

    /// A chain of `n` messages by a fresh author; messages in `signed` carry signatures.
    fn chain_msgs(key: &Keypair, n: u64, signed: impl Fn(u64) -> bool) -> Vec<SharedMessage> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let mut m = Message::new_local(
                    key.public().to_peer_id(),
                    "r".into(),
                    seq,
                    seq,
                    0,
                    "a".into(),
                    format!("t{seq}"),
                    prev,
                );
                if signed(seq) {
                    m.sign(key);
                }
                prev = m.hash;
                SharedMessage::new(m)
            })
            .collect()
    }

    fn seqs(v: &[SharedMessage]) -> Vec<u64> {
        v.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn burst_with_one_signature_verifies_all() {
        let key = crate::message::test_key();
        let msgs = chain_msgs(&key, 5, |s| s == 5);
        let t = Instant::now();
        let mut c: Chain<u8> = Chain::new();
        for m in &msgs[..4] {
            assert_eq!(c.offer(m.clone(), 0, &key.public(), 64, t), Offer::Pending);
        }
        match c.offer(msgs[4].clone(), 0, &key.public(), 64, t) {
            Offer::Verified(v, f) => {
                assert_eq!(seqs(&v), vec![1, 2, 3, 4, 5]);
                assert!(f.is_empty());
            }
            o => panic!("{o:?}"),
        }
        let mut out = Vec::new();
        c.take_ready(&mut out);
        assert_eq!(seqs(&out), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn forged_candidate_loses_to_verified_hash() {
        let key = crate::message::test_key();
        let msgs = chain_msgs(&key, 2, |s| s == 2);
        let mut fake = Message::clone(&msgs[0]);
        fake.text = "forged".into();
        fake.hash = fake.compute_hash();
        let fake = SharedMessage::new(fake);
        let t = Instant::now();
        let mut c: Chain<u8> = Chain::new();
        assert_eq!(c.offer(fake, 9, &key.public(), 64, t), Offer::Pending);
        assert_eq!(
            c.offer(msgs[0].clone(), 1, &key.public(), 64, t),
            Offer::Pending
        );
        match c.offer(msgs[1].clone(), 1, &key.public(), 64, t) {
            Offer::Verified(v, f) => {
                assert_eq!(seqs(&v), vec![1, 2]);
                assert_eq!(f, vec![9], "the forger is named");
            }
            o => panic!("{o:?}"),
        }
        // A forged copy arriving after verification is rejected by hash.
        let mut fake2 = Message::clone(&msgs[0]);
        fake2.text = "x".into();
        fake2.hash = fake2.compute_hash();
        let fake2 = SharedMessage::new(fake2);
        assert_eq!(c.offer(fake2, 7, &key.public(), 64, t), Offer::Duplicate);
    }

    #[test]
    fn bad_signature_is_forged() {
        let key = crate::message::test_key();
        let mut m = Message::clone(&chain_msgs(&key, 1, |_| true)[0]);
        m.text = "changed".into();
        m.hash = m.compute_hash();
        let m = SharedMessage::new(m);
        let mut c: Chain<u8> = Chain::new();
        assert_eq!(
            c.offer(m, 3, &key.public(), 64, Instant::now()),
            Offer::Forged(vec![3])
        );
    }

    #[test]
    fn gap_is_held_then_skipped_then_late_arrival_delivered_once() {
        let key = crate::message::test_key();
        let msgs = chain_msgs(&key, 4, |_| true);
        let t = Instant::now();
        let g = Duration::from_secs(1);
        let mut c: Chain<u8> = Chain::new();
        c.offer(msgs[0].clone(), 0, &key.public(), 64, t);
        c.offer(msgs[2].clone(), 0, &key.public(), 64, t);
        let mut out = Vec::new();
        c.take_ready(&mut out);
        assert_eq!(seqs(&out), vec![1]);
        assert_eq!(c.deadline(g, g), Some(t + g));
        assert_eq!(c.on_timeout(t, g, g), None, "early call is harmless");
        assert_eq!(c.on_timeout(t + g, g, g), Some((2, 3)));
        out.clear();
        c.take_ready(&mut out);
        assert_eq!(seqs(&out), vec![3]);
        c.offer(msgs[1].clone(), 0, &key.public(), 64, t);
        c.offer(msgs[1].clone(), 0, &key.public(), 64, t);
        out.clear();
        c.take_ready(&mut out);
        assert_eq!(seqs(&out), vec![2]);
        assert!(c.is_known(2));
    }

    #[test]
    fn buffer_bound_is_enforced() {
        let key = crate::message::test_key();
        let msgs = chain_msgs(&key, 10, |_| false);
        let mut c: Chain<u8> = Chain::new();
        let t = Instant::now();
        for m in &msgs[..3] {
            assert_eq!(c.offer(m.clone(), 0, &key.public(), 3, t), Offer::Pending);
        }
        assert_eq!(
            c.offer(msgs[3].clone(), 0, &key.public(), 3, t),
            Offer::Full
        );
        assert_eq!(c.buffered(), 3);
    }

    #[derive(Debug, Clone)]
    struct Schedule {
        /// (author index, seq index) deliveries, with duplicates, in arrival order.
        arrivals: Vec<(usize, usize)>,
        sign_every: u64,
    }

    impl Arbitrary for Schedule {
        fn arbitrary(g: &mut Gen) -> Self {
            let mut arrivals = Vec::new();
            for a in 0..3 {
                for s in 0..8 {
                    for _ in 0..(1 + usize::arbitrary(g) % 2) {
                        arrivals.push((a, s));
                    }
                }
            }
            // Shuffle with the generator.
            for i in (1..arrivals.len()).rev() {
                let j = usize::arbitrary(g) % (i + 1);
                arrivals.swap(i, j);
            }
            Schedule {
                arrivals,
                sign_every: 1 + u64::arbitrary(g) % 4,
            }
        }
    }

    quickcheck! {
        /// Any interleaving, duplication and delay of several authors' messages yields
        /// each message exactly once, in per-author order.
        fn exactly_once_in_author_order(s: Schedule) -> bool {
            let keys: Vec<Keypair> = (0..3).map(|_| crate::message::test_key()).collect();
            let chains: Vec<Vec<SharedMessage>> = keys
                .iter()
                .map(|k| chain_msgs(k, 8, |seq| seq % s.sign_every == 0 || seq == 8))
                .collect();
            let mut state: Vec<Chain<u8>> = (0..3).map(|_| Chain::new()).collect();
            let mut got: Vec<Vec<u64>> = vec![Vec::new(); 3];
            let t = Instant::now();
            for &(a, i) in &s.arrivals {
                state[a].offer(chains[a][i].clone(), 0, &keys[a].public(), 64, t);
                let mut out = Vec::new();
                state[a].take_ready(&mut out);
                got[a].extend(seqs(&out));
            }
            got.iter().all(|g| *g == (1..=8).collect::<Vec<_>>())
        }
    }
}
