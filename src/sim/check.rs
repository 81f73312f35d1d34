//! Invariant checks over a quiescent simulation. Each returns `Err` with a readable
//! description that includes the seed, so a failing run can be replayed.

use std::collections::{BTreeMap, BTreeSet};

use libp2p_identity::PeerId;

use super::{NodeIdx, Sim};
use crate::event::Event;
use crate::message::MsgId;

impl Sim {
    fn live_members(&self, room: &str) -> Vec<NodeIdx> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .node
                    .as_ref()
                    .is_some_and(|n| n.room_log(room).is_some())
            })
            .collect()
    }

    /// Every live member of `room` holds the same log in the same order.
    pub fn check_converged(&self, room: &str) -> Result<(), String> {
        let members = self.live_members(room);
        // Neighbouring members' logs compared entry by entry, without copying them (a
        // copy of every log is as big as the logs themselves in a 1,000-node run).
        let key = |m: &crate::message::SharedMessage| (m.author, m.seq, *m.hash());
        for w in members.windows(2) {
            let (a, b) = (w[0], w[1]);
            let log = |i: NodeIdx| self.node(i).room_log(room).expect("member").map(key);
            let (na, nb) = (log(a).len(), log(b).len());
            if na != nb || !log(a).eq(log(b)) {
                let pos = log(a).zip(log(b)).position(|(x, y)| x != y);
                return Err(format!(
                    "seed {}: logs of node {a} ({na} msgs) and node {b} ({nb} msgs) differ in room {room} (first difference at index {pos:?})",
                    self.seed
                ));
            }
        }
        Ok(())
    }

    /// No node delivered a message twice within one incarnation and room membership, and
    /// each author's
    /// messages were delivered in sequence order, except backfill (below the first one
    /// delivered) and numbers inside gaps the node reported.
    pub fn check_delivery(&self) -> Result<(), String> {
        for (i, sn) in self.nodes.iter().enumerate() {
            let mut seen: BTreeSet<MsgId> = BTreeSet::new();
            let mut highest: BTreeMap<(String, PeerId), (u64, u64)> = BTreeMap::new();
            let mut gaps: BTreeMap<(String, PeerId), Vec<(u64, u64)>> = BTreeMap::new();
            for (k, e) in sn.events.iter().enumerate() {
                if sn.restarts.contains(&k) {
                    seen.clear();
                    highest.clear();
                    gaps.clear();
                }
                match e {
                    // A new membership starts the room's history over.
                    Event::Joined { room } => {
                        seen.retain(|id| id.room != *room);
                        highest.retain(|(r, _), _| r != room);
                        gaps.retain(|(r, _), _| r != room);
                    }
                    Event::Gap {
                        room,
                        author,
                        missing,
                    } => gaps
                        .entry((room.clone(), *author))
                        .or_default()
                        .push(*missing),
                    Event::Message {
                        msg,
                        position: Some(_),
                    } => {
                        if !seen.insert(msg.id()) {
                            return Err(format!(
                                "seed {}: node {i} delivered {}#{} in {} twice",
                                self.seed, msg.author, msg.seq, msg.room
                            ));
                        }
                        let key = (msg.room.clone(), msg.author);
                        // Numbers the author skipped (restart, rejoin) are hopped over
                        // at once; a message inside them arrives late by nature.
                        if msg.prev_seq() + 1 < msg.seq {
                            gaps.entry(key.clone())
                                .or_default()
                                .push((msg.prev_seq() + 1, msg.seq));
                        }
                        let in_gap = gaps
                            .get(&key)
                            .is_some_and(|g| g.iter().any(|&(s, e)| msg.seq >= s && msg.seq < e));
                        match highest.get_mut(&key) {
                            None => {
                                highest.insert(key, (msg.seq, msg.seq));
                            }
                            Some((first, high)) => {
                                if msg.seq > *high {
                                    *high = msg.seq;
                                } else if msg.seq < *first {
                                    // Backfill of history older than where this node
                                    // started the author's chain (a late joiner).
                                } else if !in_gap {
                                    return Err(format!(
                                        "seed {}: node {i} delivered {}#{} after #{} in {}",
                                        self.seed, msg.author, msg.seq, high, msg.room
                                    ));
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Every message sent (through [`Sim::send`]) by a node that never crashed nor left
    /// the room is in the log of every live member of the room, unless retention dropped
    /// it there.
    pub fn check_complete(&self, room: &str) -> Result<(), String> {
        for i in self.live_members(room) {
            let log: Vec<_> = self.node(i).room_log(room).expect("member").collect();
            let have: BTreeSet<MsgId> = log.iter().map(|m| m.id()).collect();
            let oldest = log.first().map(|m| m.order_key());
            let trimmed = log.len() >= self.node(i).config().max_log_messages;
            for (j, sn) in self.nodes.iter().enumerate() {
                // A node that crashed, or left the room (and so forgot its log), may take
                // messages nobody received yet with it.
                let left = sn
                    .events
                    .iter()
                    .any(|e| matches!(e, Event::Left { room: r } if r == room));
                if sn.crashed || left {
                    continue;
                }
                for (id, key) in &sn.sent {
                    if id.room != room || have.contains(id) {
                        continue;
                    }
                    if trimmed && oldest.is_some_and(|o| *key < o) {
                        continue;
                    }
                    return Err(format!(
                        "seed {}: node {i} lacks message #{} of node {j} in {room}",
                        self.seed, id.seq
                    ));
                }
            }
        }
        Ok(())
    }

    /// All checks for `room`.
    pub fn check_all(&self, room: &str) -> Result<(), String> {
        self.check_delivery()?;
        self.check_converged(room)?;
        self.check_complete(room)
    }
}
