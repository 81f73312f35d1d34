//! Room messages: identity, the hash chain and signatures.
//!
//! Every room message is hashed over a domain-separated canonical encoding that includes
//! the hash of the author's previous message in the same room (`prev`). A signature
//! covers one message's hash and so vouches for every earlier message of that chain: an
//! author signs only the last message of each burst, and a receiver verifies one
//! signature per burst, then checks the earlier messages by hash equality. A relay cannot
//! alter any field without breaking the chain, and forwards only what it verified.

use std::sync::Arc;

use bytes::Bytes;
use libp2p_identity::{Keypair, PeerId, PublicKey};
use sha2::{Digest, Sha256};

use crate::error::DecodeError;
use crate::wire;

/// SHA-256 digest of a message's canonical encoding.
pub type Hash = [u8; 32];

/// Hash value standing in for "no previous message" (seq 1).
pub const GENESIS: Hash = [0; 32];

/// Largest sequence number a message may carry (2^62), so that arithmetic on sequence
/// numbers and ranges never overflows.
pub const MAX_SEQ: u64 = 1 << 62;

const HASH_DOMAIN: &[u8] = b"echo/chat/2 message\0";
const SIG_DOMAIN: &[u8] = b"echo/chat/2 signature\0";

/// Identifies a room message: author, room and per-author sequence number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId {
    /// Author.
    pub author: PeerId,
    /// Room.
    pub room: String,
    /// Sequence number (from 1) within the author's messages in this room.
    pub seq: u64,
}

/// A room message as the app sees it.
///
/// Read-only outside this crate: the fields are covered by the message's cached hash
/// (and its signature), so a `Message` is only made by the node, by [`Message::decode`],
/// or by restoring stored bytes, and read through its getters.
///
/// ```compile_fail
/// fn forge(m: &mut echo_proto::Message) {
///     m.text = "edited under the signature".into(); // fields are private
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub(crate) room: String,
    pub(crate) author: PeerId,
    pub(crate) name: String,
    pub(crate) seq: u64,
    pub(crate) lamport: u64,
    pub(crate) sent_at_ms: u64,
    pub(crate) text: String,
    pub(crate) verified: bool,
    pub(crate) prev: Hash,
    /// Sequence number of the message `prev` names (0 for the first message). Usually
    /// `seq - 1`; larger jumps mark numbers that were reserved but never used (restart).
    pub(crate) prev_seq: u64,
    pub(crate) hash: Hash,
    pub(crate) signature: Option<Bytes>,
}

impl Message {
    /// Room.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// Author (authenticated by signature, or by the connection for legacy peers).
    pub fn author(&self) -> PeerId {
        self.author
    }

    /// Author's display name when sending (names are not unique: show it with the peer
    /// id, e.g. with [`Message::display_author`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Per-(author, room) sequence number; 0 for unverified legacy messages.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Clock value: a hybrid logical clock bounded by wall time (PROTOCOL.md section
    /// 8.3; at most 2^62); the room log is ordered by `(lamport, author, seq)`.
    pub fn lamport(&self) -> u64 {
        self.lamport
    }

    /// Author's wall clock at sending, ms since the Unix epoch (informational, unverified).
    pub fn sent_at_ms(&self) -> u64 {
        self.sent_at_ms
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// `false` only for lines from legacy echo-go peers, which carry no signature.
    pub fn verified(&self) -> bool {
        self.verified
    }

    /// The message's id.
    pub fn id(&self) -> MsgId {
        MsgId {
            author: self.author,
            room: self.room.clone(),
            seq: self.seq,
        }
    }

    /// The key the room log is sorted by.
    pub fn order_key(&self) -> OrderKey {
        OrderKey {
            lamport: self.lamport,
            author: self.author,
            seq: self.seq,
        }
    }

    /// The message's hash (see `PROTOCOL.md`, "Message hash").
    pub fn hash(&self) -> &Hash {
        &self.hash
    }

    /// Hash of the author's previous message in this room (all zeros for seq 1).
    pub fn prev(&self) -> &Hash {
        &self.prev
    }

    /// Sequence number of the message [`Message::prev`] names (0 for the first).
    pub fn prev_seq(&self) -> u64 {
        self.prev_seq
    }

    /// The author's signature over [`Message::hash`], if this message carries one.
    pub fn signature(&self) -> Option<&[u8]> {
        self.signature.as_deref()
    }

    /// Checks this message's own signature (`false` if it has none or the author's id
    /// does not embed an ed25519 key). Messages without a signature are vouched for by a
    /// later signed message of the same chain.
    pub fn verify_signature(&self) -> bool {
        match (&self.signature, public_key_of(&self.author)) {
            (Some(sig), Some(key)) => verify(&key, &self.hash, sig),
            _ => false,
        }
    }

    /// Parses a message from the bytes [`Message::encode`] gives (a protobuf
    /// `RoomMessage`, see `PROTOCOL.md`) and computes its hash; does not check signatures.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let w = <wire::RoomMessage as prost::Message>::decode(bytes)?;
        Self::from_wire(w)
    }

    /// The message as bytes (a protobuf `RoomMessage`, the form it has inside a frame;
    /// see `PROTOCOL.md`), e.g. for storage. Never panics, legacy messages included;
    /// [`Message::decode`] reads signed messages back (legacy ones, with `seq` 0, are not
    /// valid wire messages and are refused).
    pub fn encode(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(&self.to_wire())
    }

    /// Short, human-friendly form of the author: `name#abcd` (last 4 chars of the id).
    pub fn display_author(&self) -> String {
        display_name(&self.name, &self.author)
    }

    /// Builds a new message of the local author (unsigned; see [`Message::sign`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_local(
        author: PeerId,
        room: String,
        seq: u64,
        lamport: u64,
        sent_at_ms: u64,
        name: String,
        text: String,
        prev: Hash,
        prev_seq: u64,
    ) -> Self {
        let mut m = Message {
            room,
            author,
            name,
            seq,
            lamport,
            sent_at_ms,
            text,
            verified: true,
            prev,
            prev_seq,
            hash: GENESIS,
            signature: None,
        };
        m.hash = m.compute_hash();
        m
    }

    /// The canonical hash (see `PROTOCOL.md`, "Message hash").
    pub(crate) fn compute_hash(&self) -> Hash {
        // The author's binary peer id, written to the stack (a multihash with a digest of
        // at most 64 bytes and two varints): hashing allocates nothing.
        let mut buf = [0u8; 96];
        let mh = self.author.as_ref();
        let len = mh.encoded_len();
        let author: &[u8] = match mh.write(&mut buf[..]) {
            Ok(n) if n == len => &buf[..n],
            _ => unreachable!("a peer id's multihash fits in 96 bytes"),
        };
        let mut h = Sha256::new();
        h.update(HASH_DOMAIN);
        let mut field = |b: &[u8]| {
            h.update((b.len() as u32).to_be_bytes());
            h.update(b);
        };
        field(author);
        field(self.room.as_bytes());
        field(&self.seq.to_be_bytes());
        field(&self.lamport.to_be_bytes());
        field(&self.sent_at_ms.to_be_bytes());
        field(self.name.as_bytes());
        field(self.text.as_bytes());
        field(&self.prev);
        field(&self.prev_seq.to_be_bytes());
        h.finalize().into()
    }

    /// Signs this message's hash with the author's key.
    pub(crate) fn sign(&mut self, key: &Keypair) {
        let sig = key
            .sign(&signing_bytes(&self.hash))
            .expect("ed25519 signing does not fail");
        self.signature = Some(Bytes::from(sig));
    }

    /// Wire form.
    #[doc(hidden)]
    pub fn to_wire(&self) -> wire::RoomMessage {
        wire::RoomMessage {
            author: Bytes::from(self.author.to_bytes()),
            room: self.room.clone(),
            seq: self.seq,
            lamport: self.lamport,
            sent_at_ms: self.sent_at_ms,
            name: self.name.clone(),
            text: self.text.clone(),
            prev: Bytes::copy_from_slice(&self.prev),
            signature: self.signature.clone().unwrap_or_default(),
            // Legacy messages have seq 0 and prev_seq 0: skipped is 0, not an underflow.
            skipped: self.seq.saturating_sub(1).saturating_sub(self.prev_seq),
        }
    }

    /// Appends this message's frame with its length prefix to `out`: byte for byte what
    /// `Frame::new(Kind::Message(self.to_wire())).encode_to(out)` appends (prost's
    /// encoding: fields in tag order, defaults left out), written straight from the
    /// fields, without building the wire struct and its copies of the strings.
    pub(crate) fn encode_frame_to(&self, out: &mut bytes::BytesMut) {
        use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
        let mut buf = [0u8; 96];
        let mh = self.author.as_ref();
        let n = mh.encoded_len();
        let author: &[u8] = match mh.write(&mut buf[..]) {
            Ok(k) if k == n => &buf[..n],
            _ => unreachable!("a peer id's multihash fits in 96 bytes"),
        };
        let sig: &[u8] = self.signature.as_deref().unwrap_or_default();
        // Legacy messages have seq 0 and prev_seq 0: skipped is 0, not an underflow.
        let skipped = self.seq.saturating_sub(1).saturating_sub(self.prev_seq);
        let bytes_fields: [(u32, &[u8]); 6] = [
            (1, author),
            (2, self.room.as_bytes()),
            (6, self.name.as_bytes()),
            (7, self.text.as_bytes()),
            (8, &self.prev),
            (9, sig),
        ];
        let varints = [
            (3, self.seq),
            (4, self.lamport),
            (5, self.sent_at_ms),
            (10, skipped),
        ];
        let ld = |(tag, b): (u32, &[u8])| {
            if b.is_empty() {
                0
            } else {
                key_len(tag) + encoded_len_varint(b.len() as u64) + b.len()
            }
        };
        let vi = |(tag, v): (u32, u64)| {
            if v == 0 {
                0
            } else {
                key_len(tag) + encoded_len_varint(v)
            }
        };
        let body: usize =
            bytes_fields.iter().map(|&f| ld(f)).sum::<usize>() + varints.map(vi).iter().sum::<usize>();
        // The frame: field 5 (a room message), length-delimited; nothing else.
        let frame = key_len(5) + encoded_len_varint(body as u64) + body;
        out.reserve(encoded_len_varint(frame as u64) + frame);
        encode_varint(frame as u64, out);
        encode_key(5, WireType::LengthDelimited, out);
        encode_varint(body as u64, out);
        let put_bytes = |out: &mut bytes::BytesMut, (tag, b): (u32, &[u8])| {
            if !b.is_empty() {
                encode_key(tag, WireType::LengthDelimited, out);
                encode_varint(b.len() as u64, out);
                out.extend_from_slice(b);
            }
        };
        let put_varint = |out: &mut bytes::BytesMut, (tag, v): (u32, u64)| {
            if v != 0 {
                encode_key(tag, WireType::Varint, out);
                encode_varint(v, out);
            }
        };
        // Tag order: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10.
        put_bytes(out, bytes_fields[0]);
        put_bytes(out, bytes_fields[1]);
        put_varint(out, varints[0]);
        put_varint(out, varints[1]);
        put_varint(out, varints[2]);
        put_bytes(out, bytes_fields[2]);
        put_bytes(out, bytes_fields[3]);
        put_bytes(out, bytes_fields[4]);
        put_bytes(out, bytes_fields[5]);
        put_varint(out, varints[3]);
    }

    /// Parses the wire form, computing the hash. Does not check the signature.
    #[doc(hidden)]
    pub fn from_wire(m: wire::RoomMessage) -> Result<Self, DecodeError> {
        let author =
            PeerId::from_bytes(&m.author).map_err(|e| DecodeError::BadAuthor(e.to_string()))?;
        Self::from_wire_parsed(wire::MessageRef::of(&m), author)
    }

    /// [`Message::from_wire`] from a message read in place, with the author id already
    /// parsed from `m.author`. Copies the strings and the signature: the received
    /// frame's buffer must not stay pinned by a stored message.
    pub(crate) fn from_wire_parsed(
        m: wire::MessageRef<'_>,
        author: PeerId,
    ) -> Result<Self, DecodeError> {
        let prev: Hash = m
            .prev
            .try_into()
            .map_err(|_| DecodeError::BadPrevLen(m.prev.len()))?;
        if m.seq == 0 || m.seq > MAX_SEQ {
            return Err(DecodeError::SeqOutOfRange(m.seq));
        }
        let Some(prev_seq) = (m.seq - 1).checked_sub(m.skipped) else {
            return Err(DecodeError::SkippedTooFar);
        };
        if (prev_seq == 0) != (prev == GENESIS) {
            return Err(DecodeError::PrevMismatch);
        }
        if !m.signature.is_empty() && m.signature.len() != 64 {
            return Err(DecodeError::BadSignatureLen(m.signature.len()));
        }
        let mut msg = Message {
            room: m.room.to_owned(),
            author,
            name: m.name.to_owned(),
            seq: m.seq,
            lamport: m.lamport,
            sent_at_ms: m.sent_at_ms,
            text: m.text.to_owned(),
            verified: true,
            prev,
            prev_seq,
            hash: GENESIS,
            signature: (!m.signature.is_empty()).then(|| Bytes::copy_from_slice(m.signature)),
        };
        msg.hash = msg.compute_hash();
        Ok(msg)
    }
}

/// The room log's sort key: Lamport time, then author peer id (binary form, compared
/// as bytes), then sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrderKey {
    /// Lamport timestamp.
    pub lamport: u64,
    /// Author.
    pub author: PeerId,
    /// Sequence number (only breaks ties of a misbehaving author).
    pub seq: u64,
}

impl OrderKey {
    /// Eight bytes of the author id that decide most author ties cheaply: for ed25519
    /// peer ids the first six bytes are a fixed header, so bytes 6..14 (big-endian)
    /// order like the whole id unless they are equal.
    pub(crate) fn author_prefix(author: &PeerId) -> u64 {
        let mh = author.as_ref();
        let d = mh.digest();
        // Identity multihash of a protobuf ed25519 key: digest = [08 01 12 20] ‖ key.
        let mut b = [0u8; 8];
        let start = 4.min(d.len());
        let n = (d.len() - start).min(8);
        b[..n].copy_from_slice(&d[start..start + n]);
        u64::from_be_bytes(b)
    }
}

impl Ord for OrderKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.lamport
            .cmp(&other.lamport)
            .then_with(|| {
                if self.author == other.author {
                    std::cmp::Ordering::Equal
                } else {
                    self.author.to_bytes().cmp(&other.author.to_bytes())
                }
            })
            .then(self.seq.cmp(&other.seq))
    }
}

impl PartialOrd for OrderKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

const PROFILE_DOMAIN: &[u8] = b"echo/chat/2 profile\0";

/// The bytes an author signs for a profile (display name) record.
pub(crate) fn profile_bytes(author: &PeerId, lamport: u64, name: &str) -> Vec<u8> {
    let author = author.to_bytes();
    let mut v = Vec::with_capacity(PROFILE_DOMAIN.len() + author.len() + name.len() + 20);
    v.extend_from_slice(PROFILE_DOMAIN);
    v.extend_from_slice(&(author.len() as u32).to_be_bytes());
    v.extend_from_slice(&author);
    v.extend_from_slice(&lamport.to_be_bytes());
    v.extend_from_slice(&(name.len() as u32).to_be_bytes());
    v.extend_from_slice(name.as_bytes());
    v
}

fn signing_bytes(hash: &Hash) -> Vec<u8> {
    let mut v = Vec::with_capacity(SIG_DOMAIN.len() + hash.len());
    v.extend_from_slice(SIG_DOMAIN);
    v.extend_from_slice(hash);
    v
}

/// Verifies `signature` over `hash` with `key`.
pub(crate) fn verify(key: &PublicKey, hash: &Hash, signature: &[u8]) -> bool {
    #[cfg(feature = "sim")]
    if memo::known(hash, signature) {
        return true;
    }
    let ok = key.verify(&signing_bytes(hash), signature);
    #[cfg(feature = "sim")]
    if ok {
        memo::remember(hash, signature);
    }
    ok
}

/// Verifies `signature` over `bytes` with `key`, for records other than room messages
/// (profiles, prekeys). With the `sim` feature and [`memo::enable`], a success is
/// remembered under a digest of key and bytes, like message signatures.
pub(crate) fn verify_bytes(key: &PublicKey, bytes: &[u8], signature: &[u8]) -> bool {
    #[cfg(feature = "sim")]
    if memo::enabled() {
        let mut h = Sha256::new();
        h.update(b"echo sim memo: key, bytes\0");
        h.update(key.encode_protobuf());
        h.update(bytes);
        let digest: Hash = h.finalize().into();
        if memo::known(&digest, signature) {
            return true;
        }
        let ok = key.verify(bytes, signature);
        if ok {
            memo::remember(&digest, signature);
        }
        return ok;
    }
    key.verify(bytes, signature)
}

/// Simulation only: remembers verified (hash, signature) pairs process-wide so that a
/// simulated network of many nodes pays for each signature once. Verification is a pure
/// function and the hash names the author, so a remembered success is exactly what
/// verifying again would return; failures are never remembered.
///
/// While enabled it also lets simulated nodes share one decoded copy of each message
/// (`share`): a 1,000-node simulation would otherwise hold 1,000 copies of every
/// message. A message is shared only with an equal one (every field, signature
/// included), and messages are read-only, so no node can tell.
///
/// It also remembers the public key each peer id embeds (`public_key_of`, a pure
/// function of the id): decompressing the key is the first step of verifying, and every
/// simulated node does it once per author.
#[cfg(feature = "sim")]
pub mod memo {
    use std::collections::{HashMap, HashSet};
    use std::hash::{BuildHasherDefault, DefaultHasher, Hasher};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, Weak};

    use libp2p_identity::{PeerId, PublicKey};

    use super::{Hash, Message};

    static ENABLED: AtomicBool = AtomicBool::new(false);
    type Seen = HashSet<(Hash, [u8; 64]), BuildHasherDefault<DigestHasher>>;

    /// Hasher of keys that start with a SHA-256 digest (uniform already): folds in the
    /// first 8 bytes of each write instead of SipHashing 96 bytes per look-up.
    #[derive(Default)]
    struct DigestHasher(u64);

    impl Hasher for DigestHasher {
        fn write(&mut self, bytes: &[u8]) {
            let mut w = [0u8; 8];
            let n = bytes.len().min(8);
            w[..n].copy_from_slice(&bytes[..n]);
            self.write_u64(u64::from_le_bytes(w));
        }

        fn write_u64(&mut self, n: u64) {
            self.0 = (self.0.rotate_left(23) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }

        fn write_usize(&mut self, n: usize) {
            self.write_u64(n as u64);
        }

        fn finish(&self) -> u64 {
            self.0
        }
    }
    static SEEN: Mutex<Option<Seen>> = Mutex::new(None);

    /// Decoded messages by hash (weak: a message no node holds any more is freed), and
    /// the table size at which dead entries are next swept out.
    struct Shared {
        by_hash: HashMap<Hash, Weak<Message>, BuildHasherDefault<DigestHasher>>,
        sweep_at: usize,
    }
    static SHARED: Mutex<Option<Shared>> = Mutex::new(None);

    /// Turns the memo on or off (off clears it).
    pub fn enable(on: bool) {
        ENABLED.store(on, Ordering::Relaxed);
        if !on {
            *KEYS.lock().unwrap_or_else(|e| e.into_inner()) = None;
            *SEEN.lock().unwrap_or_else(|e| e.into_inner()) = None;
            *SHARED.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    pub(crate) fn enabled() -> bool {
        ENABLED.load(Ordering::Relaxed)
    }

    /// Keys remembered by [`public_key`], at most; the table is emptied when full.
    const MAX_KEYS: usize = 1 << 16;
    type Keys = HashMap<PeerId, Option<PublicKey>, BuildHasherDefault<DefaultHasher>>;
    static KEYS: Mutex<Option<Keys>> = Mutex::new(None);

    /// `extract(peer)`, remembered by peer id (a fixed hasher: no OS randomness).
    pub(crate) fn public_key(
        peer: &PeerId,
        extract: impl FnOnce(&PeerId) -> Option<PublicKey>,
    ) -> Option<PublicKey> {
        let mut g = KEYS.lock().unwrap_or_else(|e| e.into_inner());
        let t = g.get_or_insert_with(Keys::default);
        if let Some(k) = t.get(peer) {
            return k.clone();
        }
        let k = extract(peer);
        if t.len() >= MAX_KEYS {
            t.clear();
        }
        t.insert(*peer, k.clone());
        k
    }

    pub(crate) fn known(hash: &Hash, sig: &[u8]) -> bool {
        let Ok(sig) = <[u8; 64]>::try_from(sig) else {
            return false;
        };
        enabled()
            && SEEN
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|s| s.contains(&(*hash, sig)))
    }

    pub(crate) fn remember(hash: &Hash, sig: &[u8]) {
        let Ok(sig) = <[u8; 64]>::try_from(sig) else {
            return;
        };
        if enabled() {
            SEEN.lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(Seen::default)
                .insert((*hash, sig));
        }
    }

    /// The shared copy of `msg` if one equal to it is alive, else `msg`, now shared.
    pub(crate) fn intern(msg: Message) -> Arc<Message> {
        let mut g = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        let t = g.get_or_insert_with(|| Shared {
            by_hash: HashMap::default(),
            sweep_at: 1024,
        });
        if let Some(m) = t.by_hash.get(&msg.hash).and_then(Weak::upgrade) {
            if *m == msg {
                return m;
            }
        }
        let m = Arc::new(msg);
        t.by_hash.insert(m.hash, Arc::downgrade(&m));
        if t.by_hash.len() >= t.sweep_at {
            t.by_hash.retain(|_, w| w.strong_count() > 0);
            t.sweep_at = (t.by_hash.len() * 2).max(1024);
        }
        m
    }
}

/// Wraps a message decoded from the wire for the log, events and outboxes. With the
/// `sim` feature and [`memo::enable`], an equal message decoded by another simulated
/// node is shared instead of stored again.
pub(crate) fn share(msg: Message) -> SharedMessage {
    #[cfg(feature = "sim")]
    if memo::enabled() {
        return memo::intern(msg);
    }
    Arc::new(msg)
}

/// Extracts the ed25519 public key embedded in an identity-multihash peer id.
pub(crate) fn public_key_of(peer: &PeerId) -> Option<PublicKey> {
    #[cfg(feature = "sim")]
    if memo::enabled() {
        return memo::public_key(peer, extract_public_key);
    }
    extract_public_key(peer)
}

fn extract_public_key(peer: &PeerId) -> Option<PublicKey> {
    let mh = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let key = PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    key.clone().try_into_ed25519().ok()?;
    Some(key)
}

/// `name#abcd`: a display name with the last four characters of the peer id.
pub fn display_name(name: &str, peer: &PeerId) -> String {
    let id = peer.to_base58();
    let tail = &id[id.len().saturating_sub(4)..];
    if name.is_empty() {
        format!("anon#{tail}")
    } else {
        format!("{name}#{tail}")
    }
}

/// A message shared between the log, events and outboxes without copying.
pub type SharedMessage = Arc<Message>;

/// A fresh deterministic ed25519 key for unit tests (each call gives the next key).
#[cfg(test)]
pub(crate) fn test_key() -> Keypair {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&n.to_le_bytes());
    Keypair::ed25519_from_bytes(seed).expect("32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(key: &Keypair, seq: u64, prev: Hash) -> Message {
        Message::new_local(
            key.public().to_peer_id(),
            "general".into(),
            seq,
            seq,
            1_700_000_000_000,
            "alice".into(),
            format!("hello {seq}"),
            prev,
            seq - 1,
        )
    }

    #[test]
    fn sign_verify_and_tamper() {
        let key = crate::message::test_key();
        let mut m = msg(&key, 1, GENESIS);
        m.sign(&key);
        let pk = public_key_of(&m.author).unwrap();
        assert!(verify(&pk, &m.hash, m.signature.as_ref().unwrap()));
        let mut w = m.to_wire();
        w.text.push('!');
        let forged = Message::from_wire(w).unwrap();
        assert_ne!(forged.hash, m.hash);
        assert!(!verify(
            &pk,
            &forged.hash,
            forged.signature.as_ref().unwrap()
        ));
    }

    #[test]
    fn encode_frame_to_matches_the_prost_encoding() {
        use crate::wire::{Frame, Kind};
        let key = crate::message::test_key();
        let mut cases = Vec::new();
        let mut m = msg(&key, 1, GENESIS);
        cases.push(m.clone());
        m.sign(&key);
        cases.push(m.clone());
        // Long text (two-byte lengths), empty name and text, a skipped range, zeros.
        let mut long = msg(&key, 300, [7; 32]);
        long.text = "x".repeat(70_000);
        long.name = String::new();
        long.prev_seq = 17;
        cases.push(long.clone());
        long.text = String::new();
        long.lamport = 0;
        long.sent_at_ms = 0;
        cases.push(long);
        let mut legacy = msg(&key, 1, GENESIS);
        legacy.seq = 0;
        legacy.prev_seq = 0;
        legacy.room = String::new();
        cases.push(legacy);
        for m in cases {
            let mut want = bytes::BytesMut::new();
            Frame::new(Kind::Message(m.to_wire())).encode_to(&mut want);
            let mut got = bytes::BytesMut::from(&b"before"[..]);
            m.encode_frame_to(&mut got);
            assert_eq!(&got[..6], b"before");
            assert_eq!(&got[6..], &want[..], "seq {} text {}", m.seq, m.text.len());
        }
    }

    #[test]
    fn wire_roundtrip_keeps_hash() {
        let key = crate::message::test_key();
        let m1 = msg(&key, 1, GENESIS);
        let m2 = msg(&key, 2, m1.hash);
        let back = Message::from_wire(m2.to_wire()).unwrap();
        assert_eq!(back, m2);
    }

    #[test]
    fn rejects_bad_fields() {
        let key = crate::message::test_key();
        let mut w = msg(&key, 2, [1; 32]).to_wire();
        w.prev = Bytes::from_static(b"short");
        assert!(Message::from_wire(w).is_err());
        let mut w = msg(&key, 1, GENESIS).to_wire();
        w.seq = 0;
        assert!(Message::from_wire(w).is_err());
        let mut w = msg(&key, 1, GENESIS).to_wire();
        w.author = Bytes::from_static(b"nope");
        assert!(Message::from_wire(w).is_err());
    }

    #[test]
    fn display_name_has_suffix() {
        let key = crate::message::test_key();
        let p = key.public().to_peer_id();
        let s = display_name("bob", &p);
        assert!(s.starts_with("bob#") && s.len() == 8);
    }
}
