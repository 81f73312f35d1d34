//! Profiles: display names as signed, replicated state. The newest record of an author
//! (by Lamport time) wins; records are relayed to every neighbour, so a late joiner
//! learns every author's current name, not only of those who speak after it joined.

use std::time::Instant;

use libp2p_identity::PeerId;

use super::Node;
use crate::event::{ConnId, Event};
use crate::message::{profile_bytes, public_key_of};
use crate::wire::{self, Frame, Kind};

/// Profiles sent to a neighbour when a connection opens (the newest first).
const PROFILES_ON_CONNECT: usize = 256;

/// A signed display name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProfileRec {
    pub name: String,
    pub lamport: u64,
    pub signature: Vec<u8>,
    /// The author's verified DM prekey (empty if none).
    pub prekey: Vec<u8>,
    pub prekey_sig: Vec<u8>,
}

impl ProfileRec {
    pub fn to_wire(&self, author: &PeerId) -> wire::Profile {
        wire::Profile {
            name: self.name.clone(),
            author: author.to_bytes(),
            lamport: self.lamport,
            signature: self.signature.clone(),
            prekey: self.prekey.clone(),
            prekey_sig: self.prekey_sig.clone(),
        }
    }
}

impl Node {
    /// Signs our current name with a fresh Lamport time.
    pub(super) fn sign_profile(&mut self) {
        let lamport = self.clock.tick(self.last_now);
        let bytes = profile_bytes(&self.id, lamport, &self.name);
        self.own_profile = ProfileRec {
            name: self.name.clone(),
            lamport,
            signature: self
                .key
                .sign(&bytes)
                .expect("ed25519 signing does not fail"),
            prekey: self.dm.prekey.public.to_vec(),
            prekey_sig: self.dm.prekey.signature.clone(),
        };
        self.stats.signatures += 1;
    }

    /// The newest known display name of any author (ourselves included).
    pub fn name_of(&self, peer: &PeerId) -> Option<&str> {
        if *peer == self.id {
            return Some(&self.name);
        }
        if let Some(p) = self.profiles.get(peer) {
            return Some(&p.name);
        }
        self.links.peers.get(peer).map(|p| p.name.as_str())
    }

    pub(super) fn send_profiles(&mut self, peer: PeerId, now: Instant) {
        let Some(conn) = self.links.peers.get(&peer).and_then(|p| p.active) else {
            return;
        };
        let mut recs: Vec<(&PeerId, &ProfileRec)> = self
            .profiles
            .iter()
            .filter(|(id, _)| **id != peer)
            .collect();
        recs.sort_by_key(|r| std::cmp::Reverse(r.1.lamport));
        let mut frames = vec![Frame::new(Kind::Profile(
            self.own_profile.to_wire(&self.id),
        ))];
        frames.extend(
            recs.into_iter()
                .take(PROFILES_ON_CONNECT)
                .map(|(id, r)| Frame::new(Kind::Profile(r.to_wire(id)))),
        );
        for f in frames {
            self.send_frame(conn, &f, now);
        }
    }

    /// Makes room for a new record: evicts the oldest records (by Lamport time) of
    /// authors that are neither connected peers nor authors kept in a joined room, a
    /// sixteenth of `max_profiles` at a time (so a flood of new keys costs `O(1)`
    /// amortised per key). Returns whether anything was evicted.
    fn evict_profiles(&mut self) -> bool {
        let mut order: Vec<(u64, PeerId)> = self
            .profiles
            .iter()
            .filter(|(id, _)| !self.links.peers.get(id).is_some_and(|p| p.up))
            .filter(|(id, _)| !self.rooms.values().any(|r| r.authors.contains_key(id)))
            .map(|(id, r)| (r.lamport, *id))
            .collect();
        let n = (self.config.max_profiles / 16).max(1).min(order.len());
        if n == 0 {
            return false;
        }
        if n < order.len() {
            order.select_nth_unstable(n);
        }
        for (_, v) in &order[..n] {
            self.profiles.remove(v);
        }
        self.stats.profiles_evicted += n as u64;
        true
    }

    pub(super) fn on_profile(&mut self, conn: ConnId, p: wire::Profile, now: Instant) {
        if p.name.len() > self.config.max_name_len || p.name.chars().any(char::is_control) {
            return self.violation(conn, "invalid name in profile", now);
        }
        let Ok(author) = PeerId::from_bytes(&p.author) else {
            return self.violation(conn, "profile names an invalid author", now);
        };
        if author == self.id {
            return;
        }
        // Last writer wins by (Lamport time, signature bytes): every node picks the same
        // record even when two carry the same time.
        if self
            .profiles
            .get(&author)
            .is_some_and(|r| (r.lamport, &r.signature) >= (p.lamport, &p.signature))
        {
            return; // a copy or an older record: nothing to check
        }
        if !self.clock.acceptable(p.lamport, now) {
            // Too far ahead: accepted once the wall clock catches up (section 8.3).
            self.stats.clock_refused += 1;
            return;
        }
        let valid = public_key_of(&author).is_some_and(|k| {
            crate::message::verify_bytes(
                &k,
                &profile_bytes(&author, p.lamport, &p.name),
                &p.signature,
            )
        });
        if !valid {
            self.stats.forgeries += 1;
            return self.bad_signature(conn, now);
        }
        if !self.profiles.contains_key(&author) && self.profiles.len() >= self.config.max_profiles {
            let is_peer = self.links.peers.get(&author).is_some_and(|x| x.up);
            if !self.evict_profiles() && !is_peer {
                return;
            }
        }
        self.adopt_clock(p.lamport, now);
        // A prekey that does not verify is left out (the name still counts).
        let (prekey, prekey_sig) =
            if crate::dm::envelope::verify_prekey(&author, &p.prekey, &p.prekey_sig) {
                (p.prekey.clone(), p.prekey_sig.clone())
            } else {
                Default::default()
            };
        let old = self
            .profiles
            .insert(
                author,
                ProfileRec {
                    name: p.name.clone(),
                    lamport: p.lamport,
                    signature: p.signature.clone(),
                    prekey,
                    prekey_sig,
                },
            )
            .map(|r| r.name)
            .or_else(|| self.links.peers.get(&author).map(|x| x.name.clone()));
        if let Some(st) = self.links.peers.get_mut(&author) {
            st.name = p.name.clone();
        }
        if let Some(old) = old.filter(|o| *o != p.name) {
            self.events.push_back(Event::NameChanged {
                peer: author,
                old,
                new: p.name.clone(),
            });
        }
        // Relay to every other neighbour.
        let from = self.links.conns.get(&conn).map(|c| c.peer);
        let wire = Frame::new(Kind::Profile(p)).to_wire();
        for t in self.links.chat_targets_except(&[from, Some(author)]) {
            self.send_bytes(t, &wire, now);
        }
    }
}
