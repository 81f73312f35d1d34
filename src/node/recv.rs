//! Receiving room messages: relaying and delivering them, and delivery before
//! verification (PROTOCOL.md section 6.5).
//!
//! A signed room message that arrives from its author directly (the connection's
//! noise-authenticated peer id is the message's author) is delivered at once; its
//! signature is checked afterwards, in [`Node::check_unconfirmed`], which
//! [`Node::poll_output`] runs once the events of the input are handed out (and
//! [`Node::handle_timeout`] and [`Node::shutdown`] run too). Until then the message is
//! *provisional*: never relayed, never served from history, never sent to legacy peers.
//! A message whose author is someone else is verified before delivery, as always.

use std::time::Instant;

use bytes::BytesMut;
use libp2p_identity::PeerId;

use super::Node;
use crate::event::{ConnId, Event, Protocol};
use crate::message::SharedMessage;
use crate::ordering::Confirm;

/// Provisional runs waiting for their signature check, at most (past it, messages from
/// their author are verified before delivery, as from anyone else).
pub(super) const MAX_UNCONFIRMED: usize = 1024;

/// A provisional run: the author's signed message `tail` (its room, author and seq
/// name the run), from `conn`.
pub(super) struct Unconfirmed {
    pub tail: SharedMessage,
    pub conn: ConnId,
}

impl Node {
    /// Whether a message of `author` arriving on `conn` may be delivered before its
    /// signature is checked: the connection's authenticated peer is the author, and the
    /// queue of unchecked runs has room.
    pub(super) fn may_deliver_first(&self, conn: ConnId, author: &PeerId) -> bool {
        self.config.deliver_before_verify
            && self.unconfirmed.len() < MAX_UNCONFIRMED
            && self
                .links
                .conns
                .get(&conn)
                .is_some_and(|c| c.peer == *author)
    }

    /// Checks the signatures of the provisional runs: verified runs are relayed (and
    /// sent to legacy peers if already delivered); a failed one is dropped from the
    /// chain, reported ([`Event::SignatureFailed`]) and its connection closed as
    /// misbehaving. Returns whether there was anything to check.
    pub(super) fn check_unconfirmed(&mut self, now: Instant) -> bool {
        if self.unconfirmed.is_empty() {
            return false;
        }
        let mut queue = std::mem::take(&mut self.unconfirmed);
        for u in queue.drain(..) {
            let (room_name, author) = (u.tail.room.as_str(), u.tail.author);
            let Some(room) = self.rooms.get_mut(room_name) else {
                continue;
            };
            match room.confirm(&author, u.tail.seq) {
                None => {}
                Some(Confirm::Verified(lowest)) => {
                    // Relayed like any verified run (to no one, often: the run is only
                    // listed if someone may get it).
                    let legacy = self
                        .links
                        .up_peers()
                        .iter()
                        .any(|p| p.protocol == Protocol::Legacy);
                    if !legacy && self.room_targets(room_name, &[author]).is_empty() {
                        continue;
                    }
                    let Some(chain) = self
                        .rooms
                        .get(room_name)
                        .and_then(|r| r.authors.get(&author))
                        .map(|a| &a.chain)
                    else {
                        continue;
                    };
                    let run = chain.run(lowest, u.tail.seq);
                    let next = chain.next_seq().unwrap_or(0);
                    for m in run.iter().filter(|m| m.seq < next) {
                        self.send_legacy(m, now);
                    }
                    if !run.is_empty() {
                        self.relay(room_name, u.conn, &run, now);
                    }
                }
                Some(Confirm::Failed(run)) => {
                    self.stats.forgeries += 1;
                    self.events.push_back(Event::SignatureFailed {
                        room: room_name.to_string(),
                        author,
                        seqs: run.iter().map(|m| m.seq).collect(),
                    });
                    self.violation(u.conn, "invalid signature on its own message", now);
                }
            }
        }
        // Keep the allocation for the next input.
        if self.unconfirmed.is_empty() {
            self.unconfirmed = queue;
        }
        true
    }

    pub(super) fn bad_signature(&mut self, conn: ConnId, now: Instant) {
        let max = self.config.max_bad_signatures;
        if let Some(c) = self.links.conns.get_mut(&conn) {
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
    pub(super) fn relay(&mut self, room: &str, from: ConnId, msgs: &[SharedMessage], now: Instant) {
        if let Some(from_peer) = self.links.conns.get(&from).map(|c| c.peer) {
            self.tree_first_copy(room, msgs, from_peer, now);
        }
        if !self.rooms.contains_key(room) {
            return;
        }
        // Authors and the sender are skipped (room for the sender: no second allocation).
        let mut authors: Vec<PeerId> = Vec::with_capacity(msgs.len() + 1);
        authors.extend(msgs.iter().map(|m| m.author));
        authors.dedup();
        if let Some(from_peer) = self.links.conns.get(&from).map(|c| c.peer) {
            authors.push(from_peer);
        }
        let targets = self.room_targets(room, &authors);
        if targets.is_empty() {
            return;
        }
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let mut wire = BytesMut::new();
        let mut last: Option<&SharedMessage> = None;
        for m in msgs {
            m.encode_frame_to(&mut wire);
            last = Some(m);
        }
        if let Some(last) = last.filter(|l| l.signature.is_none()) {
            if let Some(a) = r.authors.get(&last.author) {
                for m in a.chain.through_next_signature(last.seq) {
                    m.encode_frame_to(&mut wire);
                }
            }
        }
        let wire = wire.freeze();
        let ids = msgs.iter().map(|m| (m.author, m.seq));
        let eager = self.push_room(room, targets, &wire, ids, now);
        self.stats.relayed += eager * msgs.len() as u64;
    }

    pub(super) fn deliver(
        &mut self,
        delivered: Vec<(SharedMessage, crate::log::Position)>,
        now: Instant,
    ) {
        for (msg, pos) in delivered {
            self.stats.delivered += 1;
            // A provisional message goes to legacy peers once its signature is checked.
            let provisional = !self.unconfirmed.is_empty()
                && self
                    .rooms
                    .get(&msg.room)
                    .is_some_and(|r| r.is_provisional(&msg));
            if !provisional {
                self.send_legacy(&msg, now);
            }
            self.events.push_back(Event::Message {
                msg,
                position: Some(pos),
            });
        }
    }
}
