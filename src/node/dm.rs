//! Direct messages in the node: sending, carrying, handing over, receipts, persistence
//! (PROTOCOL.md section 18).

use std::time::{Instant, SystemTime};

use bytes::Bytes;
use libp2p_identity::{Keypair, PeerId};
use prost::Message as _;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

use super::Node;
use crate::clock::unix_ms;
use crate::dm::envelope::{self, Body, DmError, Envelope, Prekey};
use crate::dm::mailbox::{Held, Mailbox, MAX_GIVEN};
use crate::dm::{Convs, DmStats, DmStatus, HpkeRng, SnapConv, SnapHeld, Snapshot};
use crate::error::CommandError;
use crate::event::{ConnId, Event, Protocol};
use crate::wire::{Frame, Kind};

/// Receipt kinds in [`Body::receipt`].
const DELIVERED: u32 = 1;
const READ: u32 = 2;

/// The node's direct-message state.
pub(crate) struct Dm {
    pub prekey: Prekey,
    rng: ChaCha20Rng,
    mailbox: Mailbox,
    convs: Convs,
    stats: DmStats,
}

impl Dm {
    pub fn new(key: &Keypair, seed: u64) -> Dm {
        // The identity secret goes into the seed: ephemeral keys stay unpredictable to
        // anyone without it even when `seed` is guessable (see `Node::dm_entropy`).
        let mut h = Sha256::new();
        h.update(b"echo-dm-rng-v1\0");
        if let Ok(k) = key.clone().try_into_ed25519() {
            h.update(k.secret().as_ref());
        }
        h.update(seed.to_be_bytes());
        Dm {
            prekey: Prekey::derive(key),
            rng: ChaCha20Rng::from_seed(h.finalize().into()),
            mailbox: Mailbox::default(),
            convs: Convs::default(),
            stats: DmStats::default(),
        }
    }

    pub fn stats(&self) -> DmStats {
        let mut s = self.stats.clone();
        let m = &self.mailbox;
        s.held = m.len() as u64;
        s.held_bytes = m.bytes() as u64;
        s.seen = m.seen_len() as u64;
        s.convs = self.convs.map.len() as u64;
        for h in m.iter() {
            s.held_max_recipient = s.held_max_recipient.max(m.held_for(&h.recipient) as u64);
            s.held_max_sender = s.held_max_sender.max(m.held_from(&h.sender) as u64);
        }
        s
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.mailbox.deadline()
    }
}

impl Node {
    /// Mixes 32 bytes of OS randomness into the RNG that makes the HPKE ephemeral keys.
    /// Call it once at start: the node's `seed` alone is only 64 bits.
    pub fn dm_entropy(&mut self, entropy: [u8; 32]) {
        let mut h = Sha256::new();
        h.update(b"echo-dm-entropy-v1\0");
        h.update(self.dm.rng.get_seed());
        h.update(self.dm.rng.get_word_pos().to_be_bytes());
        h.update(entropy);
        self.dm.rng = ChaCha20Rng::from_seed(h.finalize().into());
    }

    /// Sends an end-to-end encrypted direct message to `to`, connected or not: to the
    /// peer itself when connected, else through every neighbour, who carry it until
    /// `to` connects to one of them (PROTOCOL.md section 18). Needs `to`'s prekey (from
    /// its profile, its hello or an earlier message of it): a peer is messageable from its
    /// [`Event::PeerUp`] on. Returns the message's sequence number
    /// and reports [`DmStatus::Pending`]; receipts report the rest.
    pub fn send_dm(
        &mut self,
        to: &PeerId,
        text: &str,
        wall: SystemTime,
        now: Instant,
    ) -> Result<u64, CommandError> {
        self.last_now = self.last_now.max(now);
        self.check_up()?;
        self.check_text(text)?;
        let prekey = self.prekey_of(to).ok_or(CommandError::NoPrekey(*to))?;
        let max = self.config.dm.max_convs;
        let conv = self.dm.convs.get(*to, max);
        let seq = conv.next_out;
        conv.next_out += 1;
        let body = Body {
            seq,
            sent_at_ms: unix_ms(wall),
            text: text.into(),
            ..Body::default()
        };
        self.send_body(to, &prekey, body, Some(seq), now);
        self.events.push_back(Event::DirectStatus {
            to: *to,
            seq,
            status: DmStatus::Pending,
        });
        Ok(seq)
    }

    /// Marks messages of `from` read: sends a read receipt for `seqs` (at most 64 a
    /// call; nothing if `Config::dm.read_receipts` is off).
    pub fn mark_dm_read(
        &mut self,
        from: &PeerId,
        seqs: &[u64],
        wall: SystemTime,
        now: Instant,
    ) -> Result<(), CommandError> {
        self.last_now = self.last_now.max(now);
        self.check_up()?;
        if !self.config.dm.read_receipts || seqs.is_empty() {
            return Ok(());
        }
        let prekey = self.prekey_of(from).ok_or(CommandError::NoPrekey(*from))?;
        for chunk in seqs.chunks(envelope::MAX_ACKS) {
            self.send_receipt(from, &prekey, READ, chunk, unix_ms(wall), now);
        }
        Ok(())
    }

    /// The sequence number the next direct message to `peer` gets. An app that reserves
    /// numbers ahead (see [`crate::Restore::dm_reserved`]) stores a reservation above
    /// it before calling [`Node::send_dm`].
    pub fn dm_next_seq(&self, peer: &PeerId) -> u64 {
        self.dm.convs.map.get(peer).map_or(1, |c| c.next_out.max(1))
    }

    /// Restart: the next message to `peer` gets at least `upto` (never lower).
    pub(super) fn dm_reserve(&mut self, peer: PeerId, upto: u64) {
        if peer == self.id || upto <= self.dm_next_seq(&peer) {
            return;
        }
        let max = self.config.dm.max_convs;
        let conv = self.dm.convs.get(peer, max);
        conv.next_out = conv.next_out.max(upto);
    }

    /// Counters and gauges of direct messages (also in [`Node::stats`]).
    pub fn dm_stats(&self) -> DmStats {
        self.dm.stats()
    }

    /// The direct-message state to persist: conversation counters (so a restart never
    /// reuses a sequence number, which the recipient would drop as a replay) and the
    /// envelopes carried for others. Store it after every [`Event::DirectStatus`] with
    /// [`DmStatus::Pending`] and at shutdown; pass it to [`Node::import_dm`] on start.
    pub fn export_dm(&self, now: Instant) -> Vec<u8> {
        let convs = self.dm.convs.map.iter().map(|(p, c)| SnapConv {
            peer: p.to_bytes(),
            next_out: c.next_out,
            floor: c.floor,
            got: c.got.iter().copied().collect(),
            prekey: c.prekey.map(|k| k.to_vec()).unwrap_or_default(),
        });
        let held = self
            .dm
            .mailbox
            .iter_arrival()
            .into_iter()
            .map(|h| SnapHeld {
                envelope: h.bytes.to_vec(),
                ttl_ms: h.expires.saturating_duration_since(now).as_millis() as u64,
                own_seq: h.own_seq.unwrap_or(0),
            });
        Snapshot {
            convs: convs.collect(),
            held: held.collect(),
        }
        .to_bytes()
    }

    /// Restores what [`Node::export_dm`] gave. Counters only move forward; held
    /// envelopes are checked again and stored within the quotas.
    pub fn import_dm(&mut self, bytes: &[u8], now: Instant) -> Result<(), DmError> {
        let snap = Snapshot::from_bytes(bytes)?;
        let max = self.config.dm.max_convs;
        let missing = self.config.dm.max_missing;
        for c in snap.convs {
            let Ok(peer) = PeerId::from_bytes(&c.peer) else {
                continue;
            };
            let conv = self.dm.convs.get(peer, max);
            conv.next_out = conv.next_out.max(c.next_out);
            conv.floor = conv.floor.max(c.floor);
            for s in c.got.into_iter().take(missing) {
                conv.receive(s, missing);
            }
            if let Ok(k) = <[u8; 32]>::try_from(c.prekey.as_slice()) {
                conv.prekey = Some(k);
            }
        }
        let max_ct = envelope::max_ciphertext(self.config.max_text_len);
        for h in snap.held {
            let Ok((env, checked)) = envelope::decode(&h.envelope, max_ct) else {
                continue;
            };
            let ttl = std::time::Duration::from_millis(h.ttl_ms).min(self.config.dm.ttl);
            let held = Held {
                sender: checked.sender,
                recipient: checked.recipient,
                bytes: env.encode_to_vec().into(),
                expires: now + ttl,
                own_seq: (h.own_seq > 0).then_some(h.own_seq),
                arrival: 0,
                given: Vec::new(),
            };
            self.dm.mailbox.see(checked.id, now + ttl, &self.config.dm);
            let _ = self.dm.mailbox.store(checked.id, held, &self.config.dm);
        }
        Ok(())
    }

    /// Whether a direct message to `peer` can be sealed now (its prekey is known).
    pub fn can_dm(&self, peer: &PeerId) -> bool {
        self.prekey_of(peer).is_some()
    }

    fn prekey_of(&self, peer: &PeerId) -> Option<[u8; 32]> {
        if *peer == self.id {
            return None;
        }
        let from_profile = self
            .profiles
            .get(peer)
            .and_then(|p| <[u8; 32]>::try_from(p.prekey.as_slice()).ok());
        from_profile
            .or_else(|| self.dm.convs.map.get(peer).and_then(|c| c.prekey))
            .or_else(|| self.links.peers.get(peer).and_then(|p| p.prekey))
    }

    fn send_receipt(
        &mut self,
        to: &PeerId,
        prekey: &[u8],
        kind: u32,
        acks: &[u64],
        sent_at_ms: u64,
        now: Instant,
    ) {
        let body = Body {
            sent_at_ms,
            receipt: kind,
            acks: acks.to_vec(),
            ..Body::default()
        };
        self.send_body(to, prekey, body, None, now);
    }

    fn send_body(
        &mut self,
        to: &PeerId,
        prekey: &[u8],
        mut body: Body,
        own_seq: Option<u64>,
        now: Instant,
    ) {
        body.sender_prekey = self.dm.prekey.public.to_vec();
        body.sender_prekey_sig = self.dm.prekey.signature.clone();
        let hops = self.config.dm.max_hops;
        let mut rng = HpkeRng(&mut self.dm.rng);
        let Some(env) = envelope::seal(&self.key, to, prekey, body, hops, &mut rng) else {
            return;
        };
        let id: [u8; 32] = Sha256::digest(env.signed_bytes()).into();
        let expires = now + self.config.dm.ttl;
        self.dm.mailbox.see(id, expires, &self.config.dm);
        self.dispatch(env, id, self.id, *to, None, own_seq, now);
    }

    /// Hands `env` to `recipient` if connected; else stores it and passes it on.
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &mut self,
        mut env: Envelope,
        id: [u8; 32],
        sender: PeerId,
        recipient: PeerId,
        from: Option<PeerId>,
        own_seq: Option<u64>,
        now: Instant,
    ) {
        if let Some(conn) = self.chat_conn(&recipient) {
            env.hops = 0;
            self.send_frame(conn, &Frame::new(Kind::Envelope(env)), now);
            if sender != self.id {
                self.dm.stats.handed_over += 1;
            }
            return;
        }
        // Our own message goes to every chat neighbour now (below); neighbours that
        // come up later get it from `dm_greet`.
        let given = if sender == self.id && env.hops > 0 {
            self.links
                .peers
                .iter()
                .filter(|(_, p)| p.up && p.protocol == Protocol::Chat)
                .map(|(id, _)| *id)
                .take(MAX_GIVEN)
                .collect()
        } else {
            Vec::new()
        };
        let held = Held {
            sender,
            recipient,
            bytes: env.encode_to_vec().into(),
            expires: now + self.config.dm.ttl,
            own_seq,
            arrival: 0,
            given,
        };
        match self.dm.mailbox.store(id, held, &self.config.dm) {
            Ok(()) if sender != self.id => self.dm.stats.stored += 1,
            Ok(()) => {}
            Err(_) => self.dm.stats.refused += 1,
        }
        if env.hops == 0 {
            return;
        }
        env.hops = if sender == self.id {
            env.hops
        } else {
            env.hops - 1
        };
        let wire = Frame::new(Kind::Envelope(env)).to_wire();
        for t in self.links.chat_targets_except(&[from, Some(sender)]) {
            self.dm.stats.forwarded += 1;
            self.send_bytes(t, &wire, now);
        }
    }

    fn chat_conn(&self, peer: &PeerId) -> Option<ConnId> {
        let p = self.links.peers.get(peer)?;
        (p.up && p.protocol == Protocol::Chat).then_some(p.active)?
    }

    /// An envelope from a neighbour: for us (open it), or to carry.
    pub(super) fn on_envelope(&mut self, conn: ConnId, mut env: Envelope, now: Instant) {
        self.dm.stats.envelopes_in += 1;
        let Some(from) = self.active_peer(conn) else {
            return;
        };
        let max_ct = envelope::max_ciphertext(self.config.max_text_len);
        let checked = match env.check(max_ct) {
            Ok(c) => c,
            Err(_) => {
                // Carriers check before passing on: a bad envelope is the neighbour's.
                self.dm.stats.rejected += 1;
                self.stats.forgeries += 1;
                return self.bad_signature(conn, now);
            }
        };
        let expires = now + self.config.dm.ttl;
        if !self.dm.mailbox.see(checked.id, expires, &self.config.dm) {
            self.dm.stats.duplicates += 1;
            return;
        }
        if checked.recipient == self.id {
            return self.open_envelope(&env, checked.sender, now);
        }
        if checked.sender == self.id {
            return;
        }
        // The hop count is not signed: never more than our own limit.
        env.hops = env.hops.min(self.config.dm.max_hops);
        self.dispatch(
            env,
            checked.id,
            checked.sender,
            checked.recipient,
            Some(from),
            None,
            now,
        );
    }

    fn open_envelope(&mut self, env: &Envelope, sender: PeerId, now: Instant) {
        let body = match envelope::open(&self.dm.prekey, env) {
            Ok(b) => b,
            Err(_) => {
                self.dm.stats.rejected += 1;
                return;
            }
        };
        let max = self.config.dm.max_convs;
        let missing = self.config.dm.max_missing;
        let conv = self.dm.convs.get(sender, max);
        if envelope::verify_prekey(&sender, &body.sender_prekey, &body.sender_prekey_sig) {
            conv.prekey = <[u8; 32]>::try_from(body.sender_prekey.as_slice()).ok();
        }
        if body.receipt != 0 {
            let status = if body.receipt == DELIVERED {
                self.dm.mailbox.drop_own(&sender, &body.acks);
                DmStatus::Delivered
            } else {
                DmStatus::Read
            };
            for seq in body.acks {
                self.events.push_back(Event::DirectStatus {
                    to: sender,
                    seq,
                    status,
                });
            }
            return;
        }
        if !conv.receive(body.seq, missing) {
            self.dm.stats.replays += 1;
            return;
        }
        let prekey = conv.prekey;
        self.events.push_back(Event::DirectReceived {
            from: sender,
            seq: body.seq,
            text: body.text,
            sent_at_ms: body.sent_at_ms,
        });
        if let Some(k) = prekey {
            self.send_receipt(&sender, &k, DELIVERED, &[body.seq], 0, now);
        }
    }

    /// A chat peer came up: hands over what we carry for it, then gives it our own
    /// undelivered messages to others that it has not had (a message written while we
    /// had no neighbours, or before this one came, still travels when we leave again).
    pub(super) fn dm_greet(&mut self, peer: PeerId, now: Instant) {
        let Some(conn) = self.chat_conn(&peer) else {
            return;
        };
        let own = self.dm.mailbox.give_own(&self.id, &peer);
        for h in self.dm.mailbox.take_for(&peer) {
            let Ok(mut env) = Envelope::decode(h.bytes.as_ref()) else {
                continue;
            };
            env.hops = 0;
            if h.sender != self.id {
                self.dm.stats.handed_over += 1;
            }
            let wire: Bytes = Frame::new(Kind::Envelope(env)).to_wire();
            self.send_bytes(conn, &wire, now);
        }
        for bytes in own {
            let Ok(env) = Envelope::decode(bytes.as_ref()) else {
                continue;
            };
            self.dm.stats.forwarded += 1;
            let wire: Bytes = Frame::new(Kind::Envelope(env)).to_wire();
            self.send_bytes(conn, &wire, now);
        }
    }

    pub(super) fn dm_timeout(&mut self, now: Instant) {
        self.dm.stats.expired += self.dm.mailbox.expire(now) as u64;
    }
}
