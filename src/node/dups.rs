//! Recognising a duplicate room-message frame by its bytes (issue 13).
//!
//! Flooding brings each message once from every neighbour, so most received message
//! frames are byte-for-byte copies of one the node took a moment ago. [`DupCache`]
//! remembers the payloads of recently taken message frames; a frame equal to one of them
//! is the same message, and is dropped once its (room, author, seq) is confirmed still
//! known, without parsing the frame or the author's peer id: the entry keeps the room's
//! [`Room::forgets`](crate::rooms::Room) count of when it was taken, and while the room's
//! count is the same nothing it held was forgotten (otherwise the author is looked up).
//!
//! A hit needs the whole payload to be equal (compared byte by byte), so no peer can
//! make a different message look known: the hash only picks the slot. A peer that
//! crafts colliding payloads only evicts entries, which sends copies down the ordinary
//! path (peek, then decode).

use crate::message::SharedMessage;

/// Slots of the cache, at most (direct-mapped: a new entry replaces the slot's old one).
/// Each holds one payload (at most [`MAX_PAYLOAD`] bytes) and a reference to the shared
/// message, so a node's cache is bounded by ~`SLOTS * (MAX_PAYLOAD + 48)` bytes.
pub(super) const SLOTS: usize = 256;

/// Payloads longer than this are not remembered (they take the ordinary path).
pub(super) const MAX_PAYLOAD: usize = 2048;

/// Bytes at the end of a payload that select its slot (with its length): a message
/// frame ends with its signature or, unsigned, with the hash of its predecessor, both
/// different for every message (its start is the author and room, the same for all of
/// an author's messages). Equality is checked on every byte.
const HASHED_SUFFIX: usize = 32;

struct Entry {
    payload: Box<[u8]>,
    msg: SharedMessage,
    /// The room's `forgets` count when the message was held.
    forgets: u64,
}

/// Recently taken room-message payloads; bounded by [`SLOTS`], deterministic (the
/// hash key comes from the node's seed).
pub(super) struct DupCache {
    key: u64,
    slots: Vec<Option<Entry>>,
}

impl DupCache {
    pub(super) fn new(seed: u64) -> Self {
        DupCache {
            // Any odd multiplier mixes; the seed makes slots differ between nodes.
            key: (seed ^ 0x9e37_79b9_7f4a_7c15) | 1,
            slots: Vec::new(),
        }
    }

    fn slot(&self, payload: &[u8]) -> usize {
        let suffix = &payload[payload.len().saturating_sub(HASHED_SUFFIX)..];
        let mut h = self.key ^ payload.len() as u64;
        let mut words = suffix.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            h = (h ^ u64::from_le_bytes(b))
                .wrapping_mul(0xff51_afd7_ed55_8ccd)
                .rotate_left(29);
        }
        for &b in words.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        }
        h ^= h >> 32;
        (h.wrapping_mul(self.key) >> 40) as usize % SLOTS
    }

    /// The message whose frame payload is exactly `payload`, if remembered, and its
    /// room's `forgets` count when it was.
    pub(super) fn get(&self, payload: &[u8]) -> Option<(&SharedMessage, u64)> {
        if self.slots.is_empty() || payload.len() > MAX_PAYLOAD {
            return None;
        }
        match &self.slots[self.slot(payload)] {
            Some(e) if *e.payload == *payload => Some((&e.msg, e.forgets)),
            _ => None,
        }
    }

    /// Remembers that `payload` is the frame of `msg` (a message the node holds; its
    /// room's `forgets` count is `forgets`).
    pub(super) fn insert(&mut self, payload: &[u8], msg: &SharedMessage, forgets: u64) {
        if payload.len() > MAX_PAYLOAD {
            return;
        }
        if self.slots.is_empty() {
            self.slots.resize_with(SLOTS, || None);
        }
        let i = self.slot(payload);
        self.slots[i] = Some(Entry {
            payload: payload.into(),
            msg: msg.clone(),
            forgets,
        });
    }

    /// Forgets everything (the room left, say).
    pub(super) fn clear(&mut self) {
        self.slots.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use std::sync::Arc;

    fn msg() -> SharedMessage {
        let key = crate::message::test_key();
        let author = key.public().to_peer_id();
        let m = Message::new_local(
            author,
            "r".into(),
            1,
            1,
            0,
            "n".into(),
            "t".into(),
            crate::message::GENESIS,
            0,
        );
        Arc::new(m)
    }

    #[test]
    fn hit_needs_equal_bytes() {
        let mut c = DupCache::new(7);
        let m = msg();
        let a: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        assert!(c.get(&a).is_none());
        c.insert(&a, &m, 3);
        assert_eq!(c.get(&a).map(|(_, f)| f), Some(3));
        // Same length and end (same slot), a different byte before it: not a hit.
        for i in [0, 150, 300 - HASHED_SUFFIX - 1] {
            let mut b = a.clone();
            b[i] ^= 1;
            assert_eq!(c.slot(&b), c.slot(&a));
            assert!(c.get(&b).is_none());
        }
        // A different last byte.
        let mut d = a.clone();
        d[299] ^= 1;
        assert!(c.get(&d).is_none());
        assert!(c.get(&a[..299]).is_none());
        c.clear();
        assert!(c.get(&a).is_none());
    }

    #[test]
    fn bounded() {
        let mut c = DupCache::new(1);
        let m = msg();
        for i in 0..10_000u32 {
            c.insert(&i.to_le_bytes(), &m, 0);
        }
        assert_eq!(c.slots.len(), SLOTS);
        c.insert(&vec![0; MAX_PAYLOAD + 1], &m, 0);
        assert!(c.get(&vec![0; MAX_PAYLOAD + 1]).is_none());
    }
}
