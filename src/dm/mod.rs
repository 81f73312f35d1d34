//! End-to-end encrypted direct messages with store and forward (PROTOCOL.md section 18).
//!
//! A message is sealed with HPKE to the recipient's prekey (published, signed, in its
//! profile), signed by the sender, and sent to the recipient if connected, else to every
//! neighbour, who keeps it in a bounded mailbox and hands it over when the
//! recipient connects (and passes it on, within `max_hops`).

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::time::Duration;

use libp2p_identity::PeerId;
use prost::Message as _;
use rand::RngCore;
use rand_chacha::ChaCha20Rng;

pub mod envelope;
pub(crate) mod mailbox;

pub use envelope::{Body, Checked, DmError, Envelope};

/// Limits of direct messages (part of [`crate::Config`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DmConfig {
    /// Envelopes held for one recipient (default 256).
    pub per_recipient: usize,
    /// Envelopes held from one sender (default 256).
    pub per_sender: usize,
    /// Bytes held in the mailbox in total (default 8 MiB).
    pub mailbox_bytes: usize,
    /// How long an envelope is held and its id remembered (default 7 days).
    pub ttl: Duration,
    /// How many times an envelope is passed on between carriers (default 3).
    pub max_hops: u32,
    /// Envelope ids remembered to drop duplicates (default 65 536).
    pub max_seen: usize,
    /// Conversations whose sequence numbers are tracked (default 4096).
    pub max_convs: usize,
    /// Missing sequence numbers remembered per conversation (default 1024).
    pub max_missing: usize,
    /// Send read receipts on [`crate::Node::mark_dm_read`] (default true).
    pub read_receipts: bool,
}

impl Default for DmConfig {
    fn default() -> Self {
        DmConfig {
            per_recipient: 256,
            per_sender: 256,
            mailbox_bytes: 8 << 20,
            ttl: Duration::from_secs(7 * 24 * 3600),
            max_hops: 3,
            max_seen: 65_536,
            max_convs: 4096,
            max_missing: 1024,
            read_receipts: true,
        }
    }
}

/// Delivery state of a sent direct message, as the sender learns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DmStatus {
    /// Sent (or handed to carriers); no receipt yet.
    Pending,
    /// The recipient decrypted it (its delivered receipt arrived).
    Delivered,
    /// The recipient marked it read.
    Read,
}

/// Counters and gauges of direct messages ([`crate::Stats::dm`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DmStats {
    /// Envelopes received (any recipient, duplicates included).
    pub envelopes_in: u64,
    /// Copies of envelopes already seen, dropped.
    pub duplicates: u64,
    /// Envelopes with a bad shape or signature, or that did not decrypt.
    pub rejected: u64,
    /// Messages to us whose sequence number was already received (replays).
    pub replays: u64,
    /// Envelopes stored for others.
    pub stored: u64,
    /// Envelopes not stored because a quota was full.
    pub refused: u64,
    /// Envelopes handed to their recipient.
    pub handed_over: u64,
    /// Envelopes passed on to other carriers (per copy).
    pub forwarded: u64,
    /// Envelopes dropped when their TTL passed.
    pub expired: u64,
    /// Gauge: envelopes held.
    pub held: u64,
    /// Gauge: bytes held.
    pub held_bytes: u64,
    /// Gauge: the most envelopes held for one recipient.
    pub held_max_recipient: u64,
    /// Gauge: the most envelopes held from one sender.
    pub held_max_sender: u64,
    /// Gauge: envelope ids remembered.
    pub seen: u64,
    /// Gauge: conversations tracked.
    pub convs: u64,
}

/// One conversation's sequence state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Conv {
    /// Next sequence number we send.
    pub next_out: u64,
    /// Every sequence number up to here was received (or given up on).
    pub floor: u64,
    /// Highest received.
    pub max: u64,
    /// Received numbers above `floor` (below `max` the others are gaps).
    pub got: BTreeSet<u64>,
    /// For eviction: a counter of the last activity.
    pub touched: u64,
    /// The peer's prekey as it sent it with its last message.
    pub prekey: Option<[u8; 32]>,
}

impl Conv {
    /// Records `seq` received; `false` for a replay.
    pub fn receive(&mut self, seq: u64, max_missing: usize) -> bool {
        if seq <= self.floor || self.got.contains(&seq) {
            return false;
        }
        self.got.insert(seq);
        self.max = self.max.max(seq);
        while self.got.remove(&(self.floor + 1)) {
            self.floor += 1;
        }
        // Too many gaps remembered: give up on the oldest.
        while self.got.len() > max_missing.max(1) {
            if let Some(first) = self.got.pop_first() {
                self.floor = first;
            }
            while self.got.remove(&(self.floor + 1)) {
                self.floor += 1;
            }
        }
        true
    }
}

/// Conversations by peer, bounded.
#[derive(Debug, Default)]
pub(crate) struct Convs {
    pub map: BTreeMap<PeerId, Conv>,
    clock: u64,
}

impl Convs {
    pub fn get(&mut self, peer: PeerId, max: usize) -> &mut Conv {
        self.clock += 1;
        if !self.map.contains_key(&peer) && self.map.len() >= max.max(1) {
            // Evict the least recently used conversation that never sent anything (our
            // own counters must survive: reusing a number would look like a replay).
            let victim = self
                .map
                .iter()
                .filter(|(_, c)| c.next_out <= 1)
                .min_by_key(|(_, c)| c.touched)
                .or_else(|| self.map.iter().min_by_key(|(_, c)| c.touched))
                .map(|(p, _)| *p);
            if let Some(v) = victim {
                self.map.remove(&v);
            }
        }
        let c = self.map.entry(peer).or_insert_with(|| Conv {
            next_out: 1,
            ..Conv::default()
        });
        c.touched = self.clock;
        c
    }
}

/// Adapts the node's seeded RNG to the `rand_core` version `hpke` uses.
pub(crate) struct HpkeRng<'a>(pub &'a mut ChaCha20Rng);

impl rand_core_hpke::TryRng for HpkeRng<'_> {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.0.next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}

impl rand_core_hpke::TryCryptoRng for HpkeRng<'_> {}

/// Persisted direct-message state ([`crate::Node::export_dm`]).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Snapshot {
    #[prost(message, repeated, tag = "1")]
    pub convs: Vec<SnapConv>,
    #[prost(message, repeated, tag = "2")]
    pub held: Vec<SnapHeld>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SnapConv {
    #[prost(bytes = "vec", tag = "1")]
    pub peer: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub next_out: u64,
    #[prost(uint64, tag = "3")]
    pub floor: u64,
    #[prost(uint64, repeated, tag = "4")]
    pub got: Vec<u64>,
    #[prost(bytes = "vec", tag = "5")]
    pub prekey: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SnapHeld {
    #[prost(bytes = "vec", tag = "1")]
    pub envelope: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub ttl_ms: u64,
    #[prost(uint64, tag = "3")]
    pub own_seq: u64,
}

impl Snapshot {
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    pub fn from_bytes(b: &[u8]) -> Result<Snapshot, DmError> {
        Snapshot::decode(b).map_err(|_| DmError::Undecodable)
    }
}

/// Seals `body` (as the node does) with a ChaCha20 RNG seeded from `seed` (test vectors, benches,
/// tools). Never reuse a seed for two envelopes: the ephemeral key would repeat.
pub fn seal_seeded(
    key: &libp2p_identity::Keypair,
    recipient: &PeerId,
    prekey: &[u8],
    body: Body,
    hops: u32,
    seed: [u8; 32],
) -> Option<Envelope> {
    use rand::SeedableRng;
    let mut rng = ChaCha20Rng::from_seed(seed);
    envelope::seal(key, recipient, prekey, body, hops, &mut HpkeRng(&mut rng))
}

#[cfg(test)]
mod tests {
    use super::Conv;

    #[test]
    fn conversation_detects_replays_and_bounds_its_gaps() {
        let mut c = Conv::default();
        assert!(c.receive(2, 4));
        assert!(c.receive(1, 4));
        assert_eq!(
            (c.floor, c.got.len()),
            (2, 0),
            "contiguous numbers fold into the floor"
        );
        assert!(!c.receive(1, 4) && !c.receive(2, 4), "replays");
        // Every other number: the gaps are remembered, at most 4 numbers above the floor.
        for s in (4..200).step_by(2) {
            assert!(c.receive(s, 4));
            assert!(c.got.len() <= 4);
        }
        assert_eq!(c.max, 198);
        assert!(!c.receive(198, 4), "replay of a recent one");
        assert!(!c.receive(3, 4), "given up on: below the floor");
        assert!(c.receive(197, 4), "a recent gap still fills");
    }
}
