//! A room's log in the one order every node agrees on: Lamport time, then author, then
//! sequence number ([`OrderKey`]).
//!
//! Messages mostly arrive in order, so insertion is a binary search that usually lands at
//! the end; a late message is inserted where it belongs and reported with its index so
//! the app can place it.

use std::cmp::Ordering;
use std::collections::VecDeque;

use crate::message::{OrderKey, SharedMessage};

/// Where a delivered message sits in its room's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Index in the log (0 = oldest retained message) right after insertion.
    pub index: usize,
    /// `true` if the message was not appended at the end: messages already shown come
    /// after it.
    pub late: bool,
}

/// The ordered log of one room.
#[derive(Debug, Default)]
pub struct RoomLog {
    /// Sorted by [`OrderKey`]; a compact prefix of the key is stored beside each
    /// message so most comparisons stay in cache and entries stay small to move.
    entries: VecDeque<Entry>,
    /// Sum of [`weight`] over the entries.
    bytes: usize,
}

/// Bytes a message is counted as for retention (text, name, room and fixed overhead).
pub fn weight(m: &SharedMessage) -> usize {
    m.text.len() + m.name.len() + m.room.len() + 256
}

#[derive(Debug)]
struct Entry {
    lamport: u64,
    author: u64,
    msg: SharedMessage,
}

impl Entry {
    fn new(msg: SharedMessage) -> Self {
        Entry {
            lamport: msg.lamport,
            author: OrderKey::author_prefix(&msg.author),
            msg,
        }
    }

    fn cmp(&self, other: &Entry) -> Ordering {
        (self.lamport, self.author)
            .cmp(&(other.lamport, other.author))
            .then_with(|| self.msg.order_key().cmp(&other.msg.order_key()))
    }
}

impl RoomLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts a message at its place; returns `None` if the same key is already present.
    pub fn insert(&mut self, msg: SharedMessage) -> Option<Position> {
        let w = weight(&msg);
        let e = Entry::new(msg);
        let at_end = self
            .entries
            .back()
            .is_none_or(|l| l.cmp(&e) == Ordering::Less);
        if at_end {
            self.bytes += w;
            self.entries.push_back(e);
            return Some(Position {
                index: self.entries.len() - 1,
                late: false,
            });
        }
        let i = self.place(&e)?;
        self.bytes += w;
        self.entries.insert(i, e);
        Some(Position {
            index: i,
            late: true,
        })
    }

    /// Where `e` goes: the first entry after it (`None`: an equal one is there). Late
    /// arrivals mostly sort just before the newest entries, so this gallops back from
    /// the end (entries still in cache) and then halves the stretch it found.
    fn place(&self, e: &Entry) -> Option<usize> {
        let n = self.entries.len();
        if n == 0 {
            return Some(0);
        }
        // The answer lies in `lo..=hi`; every entry from `hi + 1` on sorts after `e`.
        let (mut lo, mut hi, mut step) = (0, n - 1, 1);
        while hi > lo {
            let j = hi.saturating_sub(step).max(lo);
            match self.entries[j].cmp(e) {
                Ordering::Less => {
                    lo = j + 1;
                    break;
                }
                Ordering::Equal => return None,
                Ordering::Greater => {
                    hi = j;
                    step *= 2;
                }
            }
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entries[mid].cmp(e) {
                Ordering::Less => lo = mid + 1,
                Ordering::Equal => return None,
                Ordering::Greater => hi = mid,
            }
        }
        match self.entries[lo].cmp(e) {
            Ordering::Equal => None,
            Ordering::Less => Some(lo + 1),
            Ordering::Greater => Some(lo),
        }
    }

    /// Replaces the entry with the same key (used when a local message gets signed).
    pub fn replace(&mut self, msg: SharedMessage) {
        let e = Entry::new(msg);
        let found = match self.entries.back() {
            Some(l) if l.cmp(&e) == Ordering::Equal => Ok(self.entries.len() - 1),
            _ => self.entries.binary_search_by(|x| x.cmp(&e)),
        };
        if let Ok(i) = found {
            self.entries[i] = e;
        }
    }

    /// Removes `msg` (the entry with its key and hash); returns whether it was there.
    pub fn remove(&mut self, msg: &SharedMessage) -> bool {
        let e = Entry::new(msg.clone());
        match self.entries.binary_search_by(|x| x.cmp(&e)) {
            Ok(i) if self.entries[i].msg.hash() == msg.hash() => {
                self.bytes -= weight(&self.entries[i].msg);
                self.entries.remove(i);
                true
            }
            _ => false,
        }
    }

    /// Removes and returns the oldest message (retention).
    pub fn pop_oldest(&mut self) -> Option<SharedMessage> {
        let e = self.entries.pop_front()?;
        self.bytes -= weight(&e.msg);
        Some(e.msg)
    }

    /// Retention weight of the log ([`weight`] summed).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of messages in the log.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The messages, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &SharedMessage> + ExactSizeIterator {
        self.entries.iter().map(|e| &e.msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, GENESIS};
    use libp2p_identity::Keypair;
    use std::sync::Arc;

    fn m(author: &Keypair, seq: u64, lamport: u64) -> SharedMessage {
        Arc::new(Message::new_local(
            author.public().to_peer_id(),
            "r".into(),
            seq,
            lamport,
            0,
            String::new(),
            String::new(),
            GENESIS,
            0,
        ))
    }

    #[test]
    fn orders_by_lamport_then_author() {
        let a = crate::message::test_key();
        let b = crate::message::test_key();
        let mut log = RoomLog::new();
        assert_eq!(log.insert(m(&a, 1, 5)).unwrap().index, 0);
        let p = log.insert(m(&b, 1, 3)).unwrap();
        assert_eq!(
            p,
            Position {
                index: 0,
                late: true
            }
        );
        let p = log.insert(m(&b, 2, 5)).unwrap();
        let (lo, hi) = if a.public().to_peer_id() < b.public().to_peer_id() {
            (1, 2)
        } else {
            (1, 1)
        };
        assert!(p.index == lo || p.index == hi);
        assert!(log.insert(m(&a, 1, 5)).is_none(), "same key twice");
        let keys: Vec<_> = log.iter().map(|e| e.order_key()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    /// Every insert lands where a sorted list's binary search puts it (positions
    /// included), near the end and far from it, and repeats are refused.
    #[test]
    fn galloping_insert_matches_a_sorted_list() {
        use rand::{Rng, SeedableRng};
        let keys: Vec<Keypair> = (0..3).map(|_| crate::message::test_key()).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut log = RoomLog::new();
        let mut model: Vec<crate::message::OrderKey> = Vec::new();
        for i in 0..3000u64 {
            // Mostly the newest lamports, some far back, some repeats.
            let lamport = match rng.random_range(0..10) {
                0 => rng.random_range(0..=i),
                1..=2 => i.saturating_sub(rng.random_range(0..4)),
                _ => i.saturating_sub(rng.random_range(0..40)),
            };
            let msg = m(&keys[rng.random_range(0..3)], lamport % 7 + 1, lamport);
            let key = msg.order_key();
            let got = log.insert(msg);
            match model.binary_search(&key) {
                Ok(_) => assert!(got.is_none(), "repeat {key:?} taken"),
                Err(at) => {
                    assert_eq!(got.map(|p| p.index), Some(at), "{key:?}");
                    model.insert(at, key);
                }
            }
        }
        let keys: Vec<_> = log.iter().map(|e| e.order_key()).collect();
        assert_eq!(keys, model);
    }
}
