//! A joined room: the agreed log, one [`Chain`] per author, and our own chain's head.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use libp2p_identity::{PeerId, PublicKey};

use crate::event::ConnId;
use crate::log::{Position, RoomLog};
use crate::message::{public_key_of, Hash, SharedMessage, GENESIS};
use crate::ordering::{Chain, Offer};

/// An author's skipped sequence range `[start, end)`.
pub(crate) type Skipped = (PeerId, (u64, u64));

pub(crate) struct Author {
    key: PublicKey,
    pub chain: Chain<ConnId>,
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
}

pub(crate) struct Room {
    pub log: RoomLog,
    pub authors: BTreeMap<PeerId, Author>,
    /// Authors whose chain has a deadline (gap or pending).
    timed: BTreeSet<PeerId>,
    /// Our next sequence number and the hash of our last message here.
    pub own_next: u64,
    pub own_last: Hash,
}

impl Room {
    pub fn new() -> Self {
        Room {
            log: RoomLog::new(),
            authors: BTreeMap::new(),
            timed: BTreeSet::new(),
            own_next: 1,
            own_last: GENESIS,
        }
    }

    /// Whether (author, seq) is already held or delivered.
    pub fn is_known(&self, author: &PeerId, seq: u64) -> bool {
        self.authors
            .get(author)
            .is_some_and(|a| a.chain.is_known(seq))
    }

    /// Records a message of the local author and inserts it into the log.
    pub fn push_local(&mut self, me: &PeerId, key: &PublicKey, msg: SharedMessage) -> Position {
        self.own_next = msg.seq + 1;
        self.own_last = msg.hash;
        let author = self.authors.entry(*me).or_insert_with(|| Author {
            key: key.clone(),
            chain: Chain::local(msg.seq),
        });
        author.chain.push_local(msg.clone());
        self.log.insert(msg).expect("own (lamport, seq) is fresh")
    }

    /// Replaces a local message after signing it.
    pub fn replace_local(&mut self, me: &PeerId, msg: SharedMessage) {
        if let Some(a) = self.authors.get_mut(me) {
            a.chain.replace(msg.clone());
        }
        self.log.replace(msg);
    }

    /// Feeds a received (already parsed, not yet authenticated) message.
    pub fn receive(
        &mut self,
        msg: SharedMessage,
        from: ConnId,
        max_buffer: usize,
        gap: Duration,
        verify: Duration,
        now: Instant,
    ) -> Intake {
        let mut out = Intake::default();
        let author_id = msg.author;
        let author = match self.authors.get_mut(&author_id) {
            Some(a) => a,
            None => {
                let Some(key) = public_key_of(&author_id) else {
                    out.forgers.push(from);
                    return out;
                };
                self.authors.entry(author_id).or_insert(Author {
                    key,
                    chain: Chain::new(),
                })
            }
        };
        match author.chain.offer(msg, from, &author.key, max_buffer, now) {
            Offer::Duplicate => out.duplicate = true,
            Offer::Pending => {}
            Offer::Full => out.full = true,
            Offer::Forged(f) => out.forgers = f,
            Offer::Verified(v, f) => {
                out.verified = v;
                out.forgers = f;
            }
        }
        self.collect(&author_id, gap, verify, &mut out.delivered);
        if self
            .authors
            .get(&author_id)
            .is_some_and(|a| a.chain.next_seq().is_none() && a.chain.buffered() == 0)
        {
            // Nothing verified and nothing kept: no state for this author.
            self.authors.remove(&author_id);
        }
        out
    }

    fn collect(
        &mut self,
        author: &PeerId,
        gap: Duration,
        verify: Duration,
        delivered: &mut Vec<(SharedMessage, Position)>,
    ) {
        let Some(a) = self.authors.get_mut(author) else {
            return;
        };
        let mut ready = Vec::new();
        a.chain.take_ready(&mut ready);
        if a.chain.deadline(gap, verify).is_some() {
            self.timed.insert(*author);
        } else {
            self.timed.remove(author);
        }
        for m in ready {
            if let Some(pos) = self.log.insert(m.clone()) {
                delivered.push((m, pos));
            }
        }
    }

    /// Earliest chain deadline in this room.
    pub fn deadline(&self, gap: Duration, verify: Duration) -> Option<Instant> {
        self.timed
            .iter()
            .filter_map(|p| self.authors.get(p)?.chain.deadline(gap, verify))
            .min()
    }

    /// Runs chain timeouts; returns skipped ranges per author and what became deliverable.
    pub fn on_timeout(
        &mut self,
        now: Instant,
        gap: Duration,
        verify: Duration,
    ) -> (Vec<Skipped>, Vec<(SharedMessage, Position)>) {
        let mut gaps = Vec::new();
        let mut delivered = Vec::new();
        let due: Vec<PeerId> = self
            .timed
            .iter()
            .filter(|p| {
                self.authors
                    .get(p)
                    .and_then(|a| a.chain.deadline(gap, verify))
                    .is_some_and(|d| d <= now)
            })
            .copied()
            .collect();
        for p in due {
            if let Some(a) = self.authors.get_mut(&p) {
                if let Some(range) = a.chain.on_timeout(now, gap, verify) {
                    gaps.push((p, range));
                }
            }
            self.collect(&p, gap, verify, &mut delivered);
            if self
                .authors
                .get(&p)
                .is_some_and(|a| a.chain.next_seq().is_none() && a.chain.buffered() == 0)
            {
                self.authors.remove(&p);
                self.timed.remove(&p);
            }
        }
        (gaps, delivered)
    }
}
