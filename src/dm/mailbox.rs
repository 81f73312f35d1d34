//! The carrier's mailbox: ciphertexts held for absent recipients, bounded per recipient,
//! per sender, in total bytes and by age; and the set of envelope ids already seen.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use libp2p_identity::PeerId;

use super::DmConfig;

/// One held envelope.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub sender: PeerId,
    pub recipient: PeerId,
    /// The encoded envelope (protobuf, without the frame).
    pub bytes: Bytes,
    pub expires: Instant,
    /// For our own messages: the conversation sequence number.
    pub own_seq: Option<u64>,
    /// Arrival order (hand-over keeps it).
    pub arrival: u64,
    /// For our own messages: the neighbours it was already passed to (at most
    /// [`MAX_GIVEN`]), so a neighbour that comes up later gets it once.
    pub given: Vec<PeerId>,
}

/// Neighbours one of our own held messages is passed to after it was sent.
pub(crate) const MAX_GIVEN: usize = 8;

/// Why an envelope was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Recipient,
    Sender,
    Bytes,
}

#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    held: BTreeMap<[u8; 32], Held>,
    per_recipient: BTreeMap<PeerId, usize>,
    per_sender: BTreeMap<PeerId, usize>,
    bytes: usize,
    /// Ids seen (held, delivered or passed on), oldest first, with their expiry.
    seen: BTreeMap<[u8; 32], Instant>,
    seen_order: VecDeque<([u8; 32], Instant)>,
    arrivals: u64,
}

impl Mailbox {
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    pub fn held_for(&self, recipient: &PeerId) -> usize {
        self.per_recipient.get(recipient).copied().unwrap_or(0)
    }

    pub fn held_from(&self, sender: &PeerId) -> usize {
        self.per_sender.get(sender).copied().unwrap_or(0)
    }

    /// Records an id as seen; `false` if it was already.
    pub fn see(&mut self, id: [u8; 32], expires: Instant, cfg: &DmConfig) -> bool {
        if self.seen.contains_key(&id) {
            return false;
        }
        while self.seen.len() >= cfg.max_seen.max(1) {
            let Some((old, _)) = self.seen_order.pop_front() else {
                break;
            };
            self.seen.remove(&old);
        }
        self.seen.insert(id, expires);
        self.seen_order.push_back((id, expires));
        true
    }

    /// Stores an envelope within the quotas.
    pub fn store(&mut self, id: [u8; 32], mut h: Held, cfg: &DmConfig) -> Result<(), Refused> {
        if self.held.contains_key(&id) {
            return Ok(());
        }
        if self.held_for(&h.recipient) >= cfg.per_recipient {
            return Err(Refused::Recipient);
        }
        if self.held_from(&h.sender) >= cfg.per_sender {
            return Err(Refused::Sender);
        }
        if self.bytes + h.bytes.len() > cfg.mailbox_bytes {
            return Err(Refused::Bytes);
        }
        self.arrivals += 1;
        h.arrival = self.arrivals;
        self.bytes += h.bytes.len();
        *self.per_recipient.entry(h.recipient).or_default() += 1;
        *self.per_sender.entry(h.sender).or_default() += 1;
        self.held.insert(id, h);
        Ok(())
    }

    fn remove(&mut self, id: &[u8; 32]) -> Option<Held> {
        let h = self.held.remove(id)?;
        self.bytes -= h.bytes.len();
        for (map, k) in [
            (&mut self.per_recipient, h.recipient),
            (&mut self.per_sender, h.sender),
        ] {
            if let Some(n) = map.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&k);
                }
            }
        }
        Some(h)
    }

    /// Takes every envelope held for `recipient`, in arrival order.
    pub fn take_for(&mut self, recipient: &PeerId) -> Vec<Held> {
        if self.held_for(recipient) == 0 {
            return Vec::new();
        }
        let ids: Vec<[u8; 32]> = self
            .held
            .iter()
            .filter(|(_, h)| h.recipient == *recipient)
            .map(|(id, _)| *id)
            .collect();
        let mut out: Vec<Held> = ids.iter().filter_map(|id| self.remove(id)).collect();
        out.sort_by_key(|h| h.arrival);
        out
    }

    /// Our own undelivered messages not for `peer` and not yet given to it (nor to
    /// [`MAX_GIVEN`] others), in arrival order; each is marked as given to `peer`.
    pub fn give_own(&mut self, me: &PeerId, peer: &PeerId) -> Vec<Bytes> {
        if self.held_from(me) == 0 {
            return Vec::new();
        }
        let mut out: Vec<(u64, Bytes)> = Vec::new();
        for h in self.held.values_mut() {
            if h.sender == *me
                && h.recipient != *peer
                && h.given.len() < MAX_GIVEN
                && !h.given.contains(peer)
            {
                h.given.push(*peer);
                out.push((h.arrival, h.bytes.clone()));
            }
        }
        out.sort_by_key(|(a, _)| *a);
        out.into_iter().map(|(_, b)| b).collect()
    }

    /// Drops our own held copy of message `seq` to `recipient` (it was delivered).
    pub fn drop_own(&mut self, recipient: &PeerId, seqs: &[u64]) {
        let ids: Vec<[u8; 32]> = self
            .held
            .iter()
            .filter(|(_, h)| {
                h.recipient == *recipient && h.own_seq.is_some_and(|s| seqs.contains(&s))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.remove(&id);
        }
    }

    /// Drops what expired; returns how many envelopes.
    pub fn expire(&mut self, now: Instant) -> usize {
        let ids: Vec<[u8; 32]> = self
            .held
            .iter()
            .filter(|(_, h)| h.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.remove(id);
        }
        while let Some((id, exp)) = self.seen_order.front().copied() {
            if exp > now {
                break;
            }
            self.seen_order.pop_front();
            self.seen.remove(&id);
        }
        ids.len()
    }

    /// The next expiry.
    pub fn deadline(&self) -> Option<Instant> {
        let held = self.held.values().map(|h| h.expires).min();
        let seen = self.seen_order.front().map(|s| s.1);
        held.into_iter().chain(seen).min()
    }

    /// Every held envelope.
    pub fn iter(&self) -> impl Iterator<Item = &Held> {
        self.held.values()
    }

    /// Every held envelope in arrival order (for export: import keeps the order).
    pub fn iter_arrival(&self) -> Vec<&Held> {
        let mut v: Vec<&Held> = self.held.values().collect();
        v.sort_by_key(|h| h.arrival);
        v
    }
}
