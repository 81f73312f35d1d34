//! Provisional runs (PROTOCOL.md section 6.5): messages accepted because they came from
//! their author directly, before any signature vouching for them was checked.
//!
//! A run is the messages from its `tail` down the `prev` links to `lowest`. It is
//! *closed* when its tail is a signed message: [`Chain::confirm`] then checks that one
//! signature and settles the whole run. It is *open* while its tail is an unsigned
//! message of the author: the author's next message continues it (a signed one closes
//! it), a verified message continuing it verifies it, and an open run that nothing
//! continues within `verify_timeout` fails ([`Chain::take_expired`]), as the author
//! broke the rule that an unsigned message is followed by a signed one in its burst.
//! Provisional messages are delivered but never served ([`Chain::range`],
//! [`Chain::through_next_signature`] skip them).

use std::time::{Duration, Instant};

use libp2p_identity::PublicKey;

use super::{Chain, Confirm, Offer};
use crate::message::{verify, Hash, Message, SharedMessage, GENESIS};

/// One provisional run.
#[derive(Debug)]
pub(super) struct Run<S> {
    pub lowest: u64,
    pub tail: u64,
    /// Open (tail unsigned): since when, and the author's connection.
    pub open: Option<(Instant, S)>,
}

impl<S: Clone + PartialEq> Chain<S> {
    /// Whether `msg` directly follows a message held (or starts the chain or a segment).
    pub(super) fn links_to_held(&self, msg: &Message) -> bool {
        if msg.prev_seq == 0 {
            return msg.prev == GENESIS;
        }
        self.msgs
            .get(&msg.prev_seq)
            .is_some_and(|m| m.hash == msg.prev)
    }

    /// When the oldest open run opened.
    pub(super) fn open_since(&self) -> Option<Instant> {
        self.provisional
            .iter()
            .filter_map(|r| r.open.as_ref().map(|(t, _)| *t))
            .min()
    }

    /// The end of [`Chain::offer`]'s walk: `verified` (ascending) became authentic or
    /// provisional; `stop` is where the walk met a held message.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn settle_walk(
        &mut self,
        mut verified: Vec<SharedMessage>,
        forgers: Vec<S>,
        joins: Option<usize>,
        deferred: bool,
        open: bool,
        stop: Option<(u64, Hash)>,
        from: S,
        now: Instant,
    ) -> Offer<S> {
        let seq = verified.last().map_or(0, |m| m.seq);
        let lowest = verified.first().map_or(seq, |m| m.seq);
        if let Some(i) = joins {
            self.provisional[i].lowest = lowest;
            return Offer::Provisional(verified, forgers, false);
        }
        // An open run whose tail this walk continues (by hash).
        let cont = stop.and_then(|(p, prev)| {
            self.provisional.iter().position(|r| {
                r.tail == p
                    && r.open.is_some()
                    && self.msgs.get(&p).is_some_and(|m| m.hash == prev)
            })
        });
        match (cont, deferred || open) {
            (Some(i), true) => {
                let r = &mut self.provisional[i];
                r.tail = seq;
                if deferred {
                    r.open = None;
                }
                Offer::Provisional(verified, forgers, deferred)
            }
            (None, true) => {
                self.provisional.push(Run {
                    lowest,
                    tail: seq,
                    open: open.then_some((now, from)),
                });
                Offer::Provisional(verified, forgers, deferred)
            }
            (Some(i), false) => {
                // A verified message vouches for the open run below it.
                let r = self.provisional.swap_remove(i);
                let mut run = self.run(r.lowest, r.tail);
                run.append(&mut verified);
                Offer::Verified(run, forgers)
            }
            (None, false) => Offer::Verified(verified, forgers),
        }
    }

    /// Checks the signature of provisional message `tail` (the signed tail of a closed
    /// run, see [`Chain::offer_from_author`]) and settles the run. `None`: no such run
    /// (trimmed or settled meanwhile).
    pub fn confirm(&mut self, tail: u64, key: &PublicKey) -> Option<Confirm> {
        let i = self
            .provisional
            .iter()
            .position(|r| r.tail == tail && r.open.is_none())?;
        let r = self.provisional.swap_remove(i);
        let ok = self
            .msgs
            .get(&tail)
            .and_then(|m| Some(verify(key, &m.hash, m.signature.as_deref()?)))
            .unwrap_or(false);
        if ok {
            return Some(Confirm::Verified(r.lowest));
        }
        Some(Confirm::Failed(self.drop_run(r.lowest, tail)))
    }

    /// Open runs older than `verify_timeout` fail: their messages leave the chain.
    /// Returns the author's connection and the seqs, per run.
    pub fn take_expired(&mut self, now: Instant, verify_timeout: Duration) -> Vec<(S, Vec<u64>)> {
        let mut out = Vec::new();
        while let Some(i) = self
            .provisional
            .iter()
            .position(|r| r.open.as_ref().is_some_and(|(t, _)| now >= *t + verify_timeout))
        {
            let r = self.provisional.swap_remove(i);
            let from = r.open.expect("open").1;
            out.push((from, self.drop_run(r.lowest, r.tail)));
        }
        out
    }

    /// Drops a failed run from the chain: delivered messages stay known (never delivered
    /// again), held ones can still arrive verified. Returns their seqs.
    fn drop_run(&mut self, lowest: u64, tail: u64) -> Vec<u64> {
        let run = self.run(lowest, tail);
        // The hash the run's first message named for its predecessor is unproven.
        if let Some(first) = run.first() {
            if self.expected.get(&first.prev_seq) == Some(&first.prev) {
                self.expected.remove(&first.prev_seq);
            }
        }
        let seqs: Vec<u64> = run.iter().map(|m| m.seq).collect();
        for s in &seqs {
            if self.msgs.remove(s).is_some() && self.next.is_none_or(|n| *s >= n) {
                self.held -= 1;
            }
        }
        if self.held == 0 {
            self.gap_since = None;
        }
        seqs
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
}
