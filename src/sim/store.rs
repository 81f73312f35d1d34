//! A simulated node's persistent storage, fed from its events the way an app would.

use std::collections::{BTreeMap, BTreeSet};

use libp2p_identity::PeerId;

use crate::event::Event;
use crate::message::Message;
use crate::node::{Restore, RestoreRoom};

/// What an app would have written to disk.
#[derive(Debug, Clone, Default)]
pub struct Store {
    /// Joined rooms.
    pub joined: BTreeSet<String>,
    /// Highest reservation per room (kept after leaving).
    pub reserved: BTreeMap<String, u64>,
    /// Room messages by (room, author, seq), in write order.
    pub messages: BTreeMap<(String, PeerId, u64), Message>,
    /// Listen addresses of peers seen (to reconnect after a restart).
    pub peers: BTreeMap<PeerId, Vec<multiaddr::Multiaddr>>,
    /// Write order of `messages` keys (for losing the newest writes in a crash).
    order: Vec<(String, PeerId, u64)>,
}

impl Store {
    /// Records what an app persists of one event.
    pub fn record(&mut self, e: &Event) {
        match e {
            Event::Joined { room } => {
                self.joined.insert(room.clone());
            }
            Event::Left { room } => {
                self.joined.remove(room);
                self.messages.retain(|(r, _, _), _| r != room);
                self.order.retain(|(r, _, _)| r != room);
            }
            Event::PeerUp(info) if !info.listen_addrs.is_empty() => {
                self.peers.insert(info.peer, info.listen_addrs.clone());
            }
            Event::SeqReserved { room, upto } => {
                let r = self.reserved.entry(room.clone()).or_default();
                *r = (*r).max(*upto);
            }
            Event::Message {
                msg,
                position: Some(_),
            } => {
                let k = (msg.room.clone(), msg.author, msg.seq);
                if self
                    .messages
                    .insert(k.clone(), Message::clone(msg))
                    .is_none()
                {
                    self.order.push(k);
                }
            }
            _ => {}
        }
    }

    /// Forgets the `n` newest message writes (a crash before they reached the disk).
    pub fn lose_newest(&mut self, n: usize) {
        for _ in 0..n {
            if let Some(k) = self.order.pop() {
                self.messages.remove(&k);
            }
        }
    }

    /// The state to restart from.
    pub fn restore(&self) -> Restore {
        Restore {
            dm: Vec::new(),
            dm_reserved: Vec::new(),
            peers: self.peers.values().flatten().cloned().collect(),
            lamport: 0,
            wall: None,
            retired: self
                .reserved
                .iter()
                .filter(|(r, _)| !self.joined.contains(*r))
                .map(|(r, n)| (r.clone(), *n))
                .collect(),
            rooms: self
                .joined
                .iter()
                .map(|room| RestoreRoom {
                    name: room.clone(),
                    reserved: self.reserved.get(room).copied().unwrap_or(0),
                    messages: self
                        .messages
                        .iter()
                        .filter(|((r, _, _), _)| r == room)
                        .map(|(_, m)| m.clone())
                        .collect(),
                })
                .collect(),
        }
    }
}
