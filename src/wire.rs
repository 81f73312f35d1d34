//! The protobuf schema of `/echo/chat/2.0.0` frames (see `PROTOCOL.md`).
//!
//! Each frame on the wire is one [`Frame`] message behind a varint length prefix
//! ([`crate::codec`]). Field numbers are part of the protocol and never reused; unknown
//! fields are skipped by the decoder and unknown frame kinds decode as `kind: None`, which
//! a node ignores once the handshake is complete.

use bytes::{Bytes, BytesMut};
use libp2p_identity::PeerId;
use prost::Message as _;

/// Protocol id of echo's chat protocol, negotiated with multistream-select.
pub const PROTOCOL_ID: &str = "/echo/chat/2.0.0";
/// Protocol id of the original echo-go line protocol.
pub const LEGACY_PROTOCOL_ID: &str = "/echo-go/chat/1.0.0";
/// Major version carried in [`Hello::version_major`].
pub const VERSION_MAJOR: u32 = 2;
/// Minor version carried in [`Hello::version_minor`].
pub const VERSION_MINOR: u32 = 0;

/// One frame.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Frame {
    /// What the frame carries; `None` for a kind this node does not know.
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 16, 17, 18")]
    pub kind: Option<Kind>,
    /// Broadcast tree (capability `tree`, PROTOCOL.md 7.1): on a room message, the id of
    /// the room message the sender pushed on this link before it, so that a receiver
    /// lacking it asks at once. Encoded after `kind`.
    #[prost(message, optional, tag = "19")]
    pub link_prev: Option<LinkPrev>,
}

/// The id of a room message in [`Frame::link_prev`] (the room is the frame's).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinkPrev {
    /// Author's peer id, binary form.
    #[prost(bytes = "bytes", tag = "1")]
    pub author: Bytes,
    /// The message's seq.
    #[prost(uint64, tag = "2")]
    pub seq: u64,
}

/// Key of [`Frame::link_prev`] (field 19, length-delimited) as a varint.
pub const LINK_PREV_KEY: u64 = 19 << 3 | 2;

/// The frame kinds.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    /// First frame in each direction.
    #[prost(message, tag = "1")]
    Hello(Hello),
    /// Last frame in a direction: why the sender is closing.
    #[prost(message, tag = "2")]
    Goodbye(Goodbye),
    /// Liveness probe.
    #[prost(message, tag = "3")]
    Ping(Ping),
    /// Answer to a [`Ping`].
    #[prost(message, tag = "4")]
    Pong(Ping),
    /// A signed room message (own or relayed).
    #[prost(message, tag = "5")]
    Message(RoomMessage),
    /// The sender joined or left a room.
    #[prost(message, tag = "6")]
    Membership(Membership),
    /// A direct message to the receiving peer; never relayed.
    #[prost(message, tag = "7")]
    Direct(Direct),
    /// Addresses of the sender's neighbours.
    #[prost(message, tag = "8")]
    Peers(PeerList),
    /// A signed display name (the sender's own or relayed).
    #[prost(message, tag = "9")]
    Profile(Profile),
    /// What the sender holds of a room, per author (anti-entropy).
    #[prost(message, tag = "10")]
    Summary(Summary),
    /// Asks for an author's messages in a range (gap repair).
    #[prost(message, tag = "11")]
    Request(Request),
    /// An end-to-end encrypted direct message (own, carried or handed over).
    #[prost(message, tag = "12")]
    Envelope(crate::dm::Envelope),
    /// Broadcast tree: ids of room messages the sender holds (lazy push, capability
    /// `tree`).
    #[prost(message, tag = "16")]
    Announce(Announce),
    /// Broadcast tree: stop sending full room messages of this room to the sender.
    #[prost(message, tag = "17")]
    Prune(TreeLink),
    /// Broadcast tree: send full room messages of this room to the sender again.
    #[prost(message, tag = "18")]
    Graft(TreeLink),
}

/// The handshake frame.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    /// Must equal [`VERSION_MAJOR`].
    #[prost(uint32, tag = "1")]
    pub version_major: u32,
    /// Informational; higher minors are compatible.
    #[prost(uint32, tag = "2")]
    pub version_minor: u32,
    /// Display name (not unique).
    #[prost(string, tag = "3")]
    pub name: String,
    /// Rooms the sender is in.
    #[prost(string, repeated, tag = "4")]
    pub rooms: Vec<String>,
    /// Multiaddrs (binary form) the sender listens on.
    #[prost(bytes = "vec", repeated, tag = "5")]
    pub listen_addrs: Vec<Vec<u8>>,
    /// Optional features the sender supports.
    #[prost(string, repeated, tag = "6")]
    pub capabilities: Vec<String>,
    /// Random per-connection value; breaks ties between connections dialed by the same side.
    #[prost(uint64, tag = "7")]
    pub nonce: u64,
    /// Free-form software name and version.
    #[prost(string, tag = "8")]
    pub agent: String,
    /// Random per run of the sender's node (0: not sent). A connection whose hello
    /// carries a different session than the peer's current connection is from a restarted
    /// peer: it replaces the old one whatever the tie-break says, and is greeted again.
    #[prost(uint64, tag = "9")]
    pub session: u64,
    /// The sender's direct-message prekey (X25519, 32 bytes; empty: not sent), so a peer
    /// can encrypt to it as soon as the hello arrives, before any profile.
    #[prost(bytes = "vec", tag = "10")]
    pub prekey: Vec<u8>,
    /// The sender's identity signature of `prekey` (as in a profile).
    #[prost(bytes = "vec", tag = "11")]
    pub prekey_sig: Vec<u8>,
}

/// Why a connection is being closed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Goodbye {
    /// A [`GoodbyeCode`] value.
    #[prost(uint32, tag = "1")]
    pub code: u32,
    /// Human-readable reason the receiver may show to its user.
    #[prost(string, tag = "2")]
    pub reason: String,
}

/// Codes carried in [`Goodbye::code`].
pub use crate::close::GoodbyeCode;

/// Ping and pong payload.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    /// Echoed back in the pong.
    #[prost(uint64, tag = "1")]
    pub nonce: u64,
}

/// A room message as signed by its author.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RoomMessage {
    /// Author's peer id, binary form.
    #[prost(bytes = "bytes", tag = "1")]
    pub author: Bytes,
    /// Room name.
    #[prost(string, tag = "2")]
    pub room: String,
    /// Per-(author, room) sequence number, starting at 1.
    #[prost(uint64, tag = "3")]
    pub seq: u64,
    /// Lamport timestamp.
    #[prost(uint64, tag = "4")]
    pub lamport: u64,
    /// Author's wall clock, milliseconds since the Unix epoch (informational).
    #[prost(uint64, tag = "5")]
    pub sent_at_ms: u64,
    /// Author's display name when sending.
    #[prost(string, tag = "6")]
    pub name: String,
    /// The text.
    #[prost(string, tag = "7")]
    pub text: String,
    /// Hash of the author's previous message in this room (32 zero bytes for seq 1).
    #[prost(bytes = "bytes", tag = "8")]
    pub prev: Bytes,
    /// Ed25519 signature over this message's hash; may be empty when a later message of
    /// the same chain carries one.
    #[prost(bytes = "bytes", tag = "9")]
    pub signature: Bytes,
    /// How many sequence numbers right before `seq` the author never used (reserved
    /// before a restart): `prev` names message `seq - 1 - skipped`. Usually 0.
    #[prost(uint64, tag = "10")]
    pub skipped: u64,
}

/// Room membership change of the sender.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Membership {
    /// The room.
    #[prost(string, tag = "1")]
    pub room: String,
    /// `true` for join, `false` for leave.
    #[prost(bool, tag = "2")]
    pub joined: bool,
}

/// A direct message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Direct {
    /// The text.
    #[prost(string, tag = "1")]
    pub text: String,
    /// Sender's wall clock, milliseconds since the Unix epoch.
    #[prost(uint64, tag = "2")]
    pub sent_at_ms: u64,
}

/// Peer exchange.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PeerList {
    /// Neighbours of the sender.
    #[prost(message, repeated, tag = "1")]
    pub peers: Vec<PeerRecord>,
}

/// One neighbour in a [`PeerList`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct PeerRecord {
    /// Peer id, binary form.
    #[prost(bytes = "vec", tag = "1")]
    pub peer_id: Vec<u8>,
    /// Multiaddrs (binary form) the peer listens on.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub addrs: Vec<Vec<u8>>,
}

/// An author's display name, signed; the newest (by Lamport time) wins.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    /// The name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Whose name, peer id binary form.
    #[prost(bytes = "vec", tag = "2")]
    pub author: Vec<u8>,
    /// Lamport time of the change.
    #[prost(uint64, tag = "3")]
    pub lamport: u64,
    /// Ed25519 signature (see PROTOCOL.md, "Profiles").
    #[prost(bytes = "vec", tag = "4")]
    pub signature: Vec<u8>,
    /// The author's X25519 prekey for direct messages (32 bytes; empty if none).
    #[prost(bytes = "vec", tag = "5")]
    pub prekey: Vec<u8>,
    /// The author's signature of the prekey (PROTOCOL.md section 14).
    #[prost(bytes = "vec", tag = "6")]
    pub prekey_sig: Vec<u8>,
}

/// Anti-entropy summary of one room.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// The room.
    #[prost(string, tag = "1")]
    pub room: String,
    /// One entry per author the sender holds messages of.
    #[prost(message, repeated, tag = "2")]
    pub authors: Vec<AuthorRanges>,
    /// Index of this frame within one summary (0 for the first).
    #[prost(uint32, tag = "3")]
    pub chunk: u32,
    /// More frames of this summary follow. Authors listed in no frame of a complete
    /// summary are ones the sender holds nothing of.
    #[prost(bool, tag = "4")]
    pub more: bool,
}

/// What the sender holds of one author in a room.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuthorRanges {
    /// Author, peer id binary form.
    #[prost(bytes = "vec", tag = "1")]
    pub author: Vec<u8>,
    /// Sequence numbers below this fell off the sender's retention: never send them.
    #[prost(uint64, tag = "2")]
    pub floor: u64,
    /// Held ranges as flattened `[start, end)` pairs, ascending, disjoint.
    #[prost(uint64, repeated, tag = "3")]
    pub ranges: Vec<u64>,
}

/// Asks the receiver to send an author's messages with seq in `[start, end)`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    /// The room.
    #[prost(string, tag = "1")]
    pub room: String,
    /// Author, peer id binary form.
    #[prost(bytes = "vec", tag = "2")]
    pub author: Vec<u8>,
    /// First seq.
    #[prost(uint64, tag = "3")]
    pub start: u64,
    /// End (exclusive).
    #[prost(uint64, tag = "4")]
    pub end: u64,
}

/// Lazy push: room messages the sender received, announced instead of sent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Announce {
    /// The room.
    #[prost(string, tag = "1")]
    pub room: String,
    /// Announced sequence numbers per author (`floor` unused, 0).
    #[prost(message, repeated, tag = "2")]
    pub authors: Vec<AuthorRanges>,
}

/// Names the room (and authors) of a [`Kind::Prune`] or [`Kind::Graft`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct TreeLink {
    /// The room.
    #[prost(string, tag = "1")]
    pub room: String,
    /// The authors whose messages the frame is about (peer ids); empty: every author
    /// of the room.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub authors: Vec<Vec<u8>>,
}

impl Frame {
    /// Wraps a kind.
    pub fn new(kind: Kind) -> Self {
        Frame {
            kind: Some(kind),
            link_prev: None,
        }
    }

    /// Decodes a frame payload (without its length prefix).
    pub fn decode_payload(payload: &[u8]) -> Result<Self, crate::DecodeError> {
        Ok(Frame::decode(payload)?)
    }

    /// Decodes a frame payload, sharing (not copying) its `bytes` fields.
    pub fn decode_shared(payload: Bytes) -> Result<Self, crate::DecodeError> {
        Ok(Frame::decode(payload)?)
    }

    /// Appends this frame with its length prefix to `out`.
    pub fn encode_to(&self, out: &mut BytesMut) {
        let len = self.encoded_len();
        out.reserve(crate::codec::varint_len(len as u64) + len);
        crate::codec::put_varint(out, len as u64);
        // Cannot fail: capacity was reserved above.
        self.encode(out).expect("reserved capacity");
    }

    /// The frame with its length prefix as a fresh buffer.
    pub fn to_wire(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode_to(&mut out);
        out.freeze()
    }
}

/// The first byte of every room-message frame payload: field 5 ([`Kind::Message`]),
/// length-delimited.
pub const MESSAGE_FRAME_KEY: u8 = 5 << 3 | 2;

/// A room message read in place from its frame ([`parse_message`]), or a view of a
/// decoded [`RoomMessage`] ([`MessageRef::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRef<'a> {
    /// [`RoomMessage::author`].
    pub author: &'a [u8],
    /// [`RoomMessage::room`] (valid UTF-8).
    pub room: &'a str,
    /// [`RoomMessage::seq`].
    pub seq: u64,
    /// [`RoomMessage::lamport`].
    pub lamport: u64,
    /// [`RoomMessage::sent_at_ms`].
    pub sent_at_ms: u64,
    /// [`RoomMessage::name`] (valid UTF-8).
    pub name: &'a str,
    /// [`RoomMessage::text`] (valid UTF-8).
    pub text: &'a str,
    /// [`RoomMessage::prev`].
    pub prev: &'a [u8],
    /// [`RoomMessage::signature`].
    pub signature: &'a [u8],
    /// [`RoomMessage::skipped`].
    pub skipped: u64,
}

impl<'a> MessageRef<'a> {
    /// A view of a decoded message.
    pub fn of(m: &'a RoomMessage) -> Self {
        MessageRef {
            author: &m.author,
            room: &m.room,
            seq: m.seq,
            lamport: m.lamport,
            sent_at_ms: m.sent_at_ms,
            name: &m.name,
            text: &m.text,
            prev: &m.prev,
            signature: &m.signature,
            skipped: m.skipped,
        }
    }
}

impl MessageRef<'_> {
    /// The decoded message (as the full decoder makes it).
    pub fn to_owned(&self) -> RoomMessage {
        RoomMessage {
            author: Bytes::copy_from_slice(self.author),
            room: self.room.to_owned(),
            seq: self.seq,
            lamport: self.lamport,
            sent_at_ms: self.sent_at_ms,
            name: self.name.to_owned(),
            text: self.text.to_owned(),
            prev: Bytes::copy_from_slice(self.prev),
            signature: Bytes::copy_from_slice(self.signature),
            skipped: self.skipped,
        }
    }
}

/// A protobuf varint at `*pos`, as prost reads it (at most ten bytes, the tenth at most
/// 1); `None` where prost would fail or the buffer ends.
#[inline]
fn read_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let first = *b.get(*pos)?;
    *pos += 1;
    if first < 0x80 {
        return Some(u64::from(first));
    }
    let mut v = u64::from(first & 0x7f);
    for i in 1..10 {
        let byte = *b.get(*pos)?;
        *pos += 1;
        if i == 9 && byte > 1 {
            return None;
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Reads a room-message frame payload (a [`Frame`] whose only field is
/// [`Kind::Message`]) in place, without allocating. `None` for any other frame and for
/// anything unusual (a known field with another wire type, groups, a string that is
/// not UTF-8, ...): the full decoder then has the final word, so a frame this accepts
/// decodes to the same [`RoomMessage`] either way (later copies of a field win, unknown
/// fields are skipped, as in prost).
pub fn parse_message(payload: &[u8]) -> Option<MessageRef<'_>> {
    let mut pos = 0;
    // Frame: field 5, length-delimited, the only field but for a `link_prev` after it
    // (PROTOCOL.md 7.1).
    if read_varint(payload, &mut pos)? != u64::from(MESSAGE_FRAME_KEY) {
        return None;
    }
    let len = usize::try_from(read_varint(payload, &mut pos)?).ok()?;
    let body = payload.get(pos..pos.checked_add(len)?)?;
    if pos + len != payload.len() {
        let mut q = pos + len;
        if read_varint(payload, &mut q)? != LINK_PREV_KEY {
            return None;
        }
        let l = usize::try_from(read_varint(payload, &mut q)?).ok()?;
        // A `link_prev` the strict reader cannot read is left to prost (which may
        // reject the whole frame).
        if q.checked_add(l)? != payload.len() || peek_link_prev(payload).is_none() {
            return None;
        }
    }
    let mut m = MessageRef {
        author: &[],
        room: "",
        seq: 0,
        lamport: 0,
        sent_at_ms: 0,
        name: "",
        text: "",
        prev: &[],
        signature: &[],
        skipped: 0,
    };
    let (mut room, mut name, mut text): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
    let mut p = 0;
    while p < body.len() {
        let key = read_varint(body, &mut p)?;
        if key > u64::from(u32::MAX) {
            return None;
        }
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let v = read_varint(body, &mut p)?;
                match field {
                    3 => m.seq = v,
                    4 => m.lamport = v,
                    5 => m.sent_at_ms = v,
                    10 => m.skipped = v,
                    0 | 1 | 2 | 6 | 7 | 8 | 9 => return None,
                    _ => {}
                }
            }
            2 => {
                let l = usize::try_from(read_varint(body, &mut p)?).ok()?;
                let v = body.get(p..p.checked_add(l)?)?;
                p += l;
                match field {
                    1 => m.author = v,
                    // prost checks every copy of a string field, not only the last.
                    2 | 6 | 7 if std::str::from_utf8(v).is_err() => return None,
                    2 => room = v,
                    6 => name = v,
                    7 => text = v,
                    8 => m.prev = v,
                    9 => m.signature = v,
                    0 | 3 | 4 | 5 | 10 => return None,
                    _ => {}
                }
            }
            1 | 5 if !matches!(field, 0..=10) => p = p.checked_add(if wire == 1 { 8 } else { 4 })?,
            _ => return None,
        }
    }
    if p != body.len() {
        return None;
    }
    m.room = std::str::from_utf8(room).ok()?;
    m.name = std::str::from_utf8(name).ok()?;
    m.text = std::str::from_utf8(text).ok()?;
    Some(m)
}

/// Reads [`Frame::link_prev`] `(author, seq)` of a room-message frame payload without
/// decoding the message. `None` if it has none (or is not a room message).
pub fn peek_link_prev(payload: &[u8]) -> Option<(&[u8], u64)> {
    let mut pos = 0;
    let (key, n) = crate::codec::peek_varint(payload).ok()??;
    if key != (5 << 3 | 2) {
        return None;
    }
    pos += n;
    let (len, n) = crate::codec::peek_varint(&payload[pos..]).ok()??;
    pos = pos.checked_add(n)?.checked_add(usize::try_from(len).ok()?)?;
    let rest = payload.get(pos..)?;
    if rest.is_empty() {
        return None;
    }
    let (key, n) = crate::codec::peek_varint(rest).ok()??;
    if key != LINK_PREV_KEY {
        return None;
    }
    let (len, m) = crate::codec::peek_varint(&rest[n..]).ok()??;
    let body = rest.get(n + m..(n + m).checked_add(usize::try_from(len).ok()?)?)?;
    // LinkPrev: author (field 1, bytes), seq (field 2, varint), in any order.
    let (mut author, mut seq, mut p) = (None, 0, 0);
    while p < body.len() {
        let (key, n) = crate::codec::peek_varint(&body[p..]).ok()??;
        p += n;
        let (v, n) = crate::codec::peek_varint(body.get(p..)?).ok()??;
        p += n;
        match key {
            0x0a => {
                let l = usize::try_from(v).ok()?;
                author = Some(body.get(p..p.checked_add(l)?)?);
                p += l;
            }
            0x10 => seq = v,
            _ => return None,
        }
    }
    Some((author?, seq))
}

/// The room of a room-message frame payload, every other field skipped unread. A quick
/// look: where [`parse_message`] accepts the payload, `Some` of the room it reads; it
/// checks far less, so it may also name a room where [`parse_message`] rejects the
/// payload.
pub fn peek_room(payload: &[u8]) -> Option<&str> {
    let mut pos = 0;
    if read_varint(payload, &mut pos)? != u64::from(MESSAGE_FRAME_KEY) {
        return None;
    }
    let len = usize::try_from(read_varint(payload, &mut pos)?).ok()?;
    let body = payload.get(pos..pos.checked_add(len)?)?;
    let (mut room, mut p) = (None, 0);
    while p < body.len() {
        let key = read_varint(body, &mut p)?;
        match key & 7 {
            0 => {
                read_varint(body, &mut p)?;
            }
            1 => p = p.checked_add(8)?,
            2 => {
                let l = usize::try_from(read_varint(body, &mut p)?).ok()?;
                let v = body.get(p..p.checked_add(l)?)?;
                p += l;
                if key == 2 << 3 | 2 {
                    room = Some(v);
                }
            }
            5 => p = p.checked_add(4)?,
            _ => return None,
        }
    }
    std::str::from_utf8(room.unwrap_or_default()).ok()
}

/// The first bytes of every announcement frame payload: field 16 ([`Kind::Announce`]),
/// length-delimited, as a varint.
const ANNOUNCE_FRAME_KEY: u64 = 16 << 3 | 2;

/// An announcement read in place from its frame ([`parse_announce`]), or a view of a
/// decoded [`Announce`] ([`AnnounceRef::of`]): the room, and per author its peer id
/// (binary form) and announced ranges (`floor` is unused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRef<'a> {
    /// [`Announce::room`] (valid UTF-8).
    pub room: &'a str,
    /// Per [`AuthorRanges`]: its `author` and its `ranges` as indices into `ranges`.
    authors: Vec<(&'a [u8], std::ops::Range<usize>)>,
    /// Every author's `ranges`, one after the other.
    ranges: Vec<u64>,
}

impl<'a> AnnounceRef<'a> {
    /// A view of a decoded announcement.
    pub fn of(a: &'a Announce) -> Self {
        let mut r = AnnounceRef {
            room: &a.room,
            authors: Vec::with_capacity(a.authors.len()),
            ranges: Vec::new(),
        };
        for ar in &a.authors {
            let start = r.ranges.len();
            r.ranges.extend_from_slice(&ar.ranges);
            r.authors.push((&ar.author, start..r.ranges.len()));
        }
        r
    }

    /// Per [`AuthorRanges`], in order: its `author` and its `ranges`.
    pub fn authors(&self) -> impl Iterator<Item = (&'a [u8], &[u64])> + '_ {
        self.authors
            .iter()
            .map(|(a, r)| (*a, &self.ranges[r.clone()]))
    }
}

/// Reads an announcement frame payload (a [`Frame`] whose only field is
/// [`Kind::Announce`]) in place, with two allocations instead of prost's two per author.
/// `None` for any other frame and for anything unusual (an unknown field, a known one
/// with another wire type or repeated where the last copy would win, ranges not packed,
/// a room that is not UTF-8, ...): the full decoder then has the final word, so an
/// announcement this accepts decodes to the same [`Announce`] either way.
pub fn parse_announce(payload: &[u8]) -> Option<AnnounceRef<'_>> {
    /// The length-delimited field at `pos` (its key read already).
    fn delimited<'b>(b: &'b [u8], pos: &mut usize) -> Option<&'b [u8]> {
        let len = usize::try_from(read_varint(b, pos)?).ok()?;
        let v = b.get(*pos..pos.checked_add(len)?)?;
        *pos += len;
        Some(v)
    }
    let mut pos = 0;
    if read_varint(payload, &mut pos)? != ANNOUNCE_FRAME_KEY {
        return None;
    }
    let body = delimited(payload, &mut pos)?;
    if pos != payload.len() {
        return None;
    }
    // Sized for the usual few authors with a few ranges each (an entry with its peer
    // id takes some 40 bytes, a range a few): one allocation each.
    let mut a = AnnounceRef {
        room: "",
        authors: Vec::with_capacity(body.len() / 40 + 1),
        ranges: Vec::with_capacity(body.len() / 8 + 2),
    };
    let mut room = None;
    let mut p = 0;
    while p < body.len() {
        match read_varint(body, &mut p)? {
            0x0a if room.is_none() => room = Some(std::str::from_utf8(delimited(body, &mut p)?).ok()?),
            0x12 => {
                // AuthorRanges { author = 1, floor = 2, ranges = 3 (packed) }.
                let ar = delimited(body, &mut p)?;
                let (mut author, mut packed) = (None, None);
                let mut q = 0;
                while q < ar.len() {
                    match read_varint(ar, &mut q)? {
                        0x0a if author.is_none() => author = Some(delimited(ar, &mut q)?),
                        0x10 => {
                            read_varint(ar, &mut q)?;
                        }
                        0x1a if packed.is_none() => packed = Some(delimited(ar, &mut q)?),
                        _ => return None,
                    }
                }
                let start = a.ranges.len();
                let packed = packed.unwrap_or_default();
                let mut r = 0;
                while r < packed.len() {
                    a.ranges.push(read_varint(packed, &mut r)?);
                }
                a.authors.push((author.unwrap_or_default(), start..a.ranges.len()));
            }
            _ => return None,
        }
    }
    a.room = room.unwrap_or_default();
    Some(a)
}

/// Appends the frame of `Announce { room, authors }` (length prefix and all) to `out`,
/// byte for byte as [`Frame::encode_to`] would, without building the message: each
/// author as its peer id and flattened ranges, `floor` 0.
pub fn encode_announce(out: &mut BytesMut, room: &str, authors: &[(PeerId, Vec<u64>)]) {
    use crate::codec::{put_varint, varint_len};
    use bytes::BufMut;
    // A length-delimited field of `len` bytes, key and length included (prost leaves
    // out empty strings, bytes and packed fields).
    let field = |len: usize| {
        if len == 0 {
            0
        } else {
            1 + varint_len(len as u64) + len
        }
    };
    // Per author, the lengths of its peer id, its packed ranges and its entry.
    let lens: Vec<(usize, usize, usize)> = authors
        .iter()
        .map(|(a, r)| {
            let id = a.as_ref().encoded_len();
            let packed = r.iter().map(|v| varint_len(*v)).sum::<usize>();
            (id, packed, field(id) + field(packed))
        })
        .collect();
    let body = field(room.len())
        + lens
            .iter()
            .map(|(_, _, e)| 1 + varint_len(*e as u64) + e)
            .sum::<usize>();
    let payload = varint_len(ANNOUNCE_FRAME_KEY) + varint_len(body as u64) + body;
    out.reserve(varint_len(payload as u64) + payload);
    put_varint(out, payload as u64);
    put_varint(out, ANNOUNCE_FRAME_KEY);
    put_varint(out, body as u64);
    if !room.is_empty() {
        out.put_u8(0x0a);
        put_varint(out, room.len() as u64);
        out.extend_from_slice(room.as_bytes());
    }
    for ((author, ranges), (id, packed, entry)) in authors.iter().zip(lens) {
        // An entry goes even when empty (a repeated message field).
        out.put_u8(0x12);
        put_varint(out, entry as u64);
        if id > 0 {
            out.put_u8(0x0a);
            put_varint(out, id as u64);
            // Cannot fail: a `BytesMut` grows.
            author.as_ref().write(out.writer()).expect("grows");
        }
        if packed > 0 {
            out.put_u8(0x1a);
            put_varint(out, packed as u64);
            for v in ranges {
                put_varint(out, *v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_matches_full_decode() {
        let m = RoomMessage {
            author: Bytes::from_static(b"author-bytes"),
            room: "general".into(),
            seq: 300,
            lamport: 7,
            sent_at_ms: 1,
            name: "n".into(),
            text: "hello".into(),
            prev: Bytes::from(vec![1; 32]),
            signature: Bytes::from(vec![2; 64]),
            skipped: 3,
        };
        let wire = Frame::new(Kind::Message(m.clone())).to_wire();
        let payload = wire.slice(2..); // two-byte length prefix
        let r = parse_message(&payload).unwrap();
        assert_eq!((r.author, r.room, r.seq), (&b"author-bytes"[..], "general", 300));
        assert_eq!(r.to_owned(), m);
        assert_eq!(MessageRef::of(&m), r);
        assert!(parse_message(&payload[..payload.len() - 1]).is_none());
        let ping = Frame::new(Kind::Ping(Ping { nonce: 1 })).to_wire();
        assert!(parse_message(&ping[1..]).is_none());

        // A `link_prev` after the message (PROTOCOL.md 7.1) is read past; any other
        // trailing field leaves the frame to prost.
        let mut f = Frame::new(Kind::Message(m.clone()));
        f.link_prev = Some(LinkPrev {
            author: Bytes::from_static(b"before"),
            seq: 299,
        });
        let mut with = Vec::new();
        f.encode(&mut with).unwrap();
        assert_eq!(parse_message(&with).unwrap().to_owned(), m);
        assert_eq!(peek_link_prev(&with), Some((&b"before"[..], 299)));
        assert_eq!(peek_room(&with), Some("general"));
        assert_eq!(peek_room(&ping[1..]), None);
        let mut other = payload.to_vec();
        other.extend_from_slice(&[20 << 3, 1]);
        assert!(parse_message(&other).is_none());
        // A `link_prev` whose inside is not a `LinkPrev` (found by fuzzing: it was
        // accepted here while prost rejects the frame).
        let mut bad = payload.to_vec();
        bad.extend_from_slice(&[0x9a, 0x01, 3, 0x60, 0x60, 0x60]);
        assert!(Frame::decode_payload(&bad).is_err());
        assert!(parse_message(&bad).is_none());
    }

    /// Frames the hand parser leaves to prost, and frames it reads as prost does.
    #[test]
    fn parse_agrees_with_prost_on_odd_frames() {
        fn frame(body: &[u8]) -> Bytes {
            let mut f = vec![5 << 3 | 2, body.len() as u8];
            f.extend_from_slice(body);
            Bytes::from(f)
        }
        let check = |body: &[u8]| {
            let payload = frame(body);
            let prost = Frame::decode_shared(payload.clone());
            // The quick look agrees with the full read wherever that accepts the frame.
            if let Some(r) = parse_message(&payload) {
                assert_eq!(peek_room(&payload), Some(r.room), "{body:?}");
            }
            // `None`: left to prost, whatever it says.
            if let Some(m) = parse_message(&payload).map(|r| r.to_owned()) {
                match prost {
                    Ok(Frame {
                        kind: Some(Kind::Message(p)),
                        ..
                    }) => assert_eq!(m, p, "{body:?}"),
                    other => panic!("{body:?}: hand parse ok, prost {other:?}"),
                }
            }
        };
        check(&[]); // empty message
        check(&[3 << 3, 5, 3 << 3, 6]); // a field twice: the last wins
        check(&[2 << 3 | 2, 1, b'a', 2 << 3 | 2, 1, b'b']);
        check(&[99 << 3, 1, 98 << 3 | 5, 0, 0, 0, 0, 97 << 3 | 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        check(&[3 << 3 | 2, 0]); // seq as bytes: prost fails
        check(&[6 << 3 | 2, 1, 0xd2, 6 << 3 | 2, 1, b'a']); // a bad string, then a good one
        check(&[1 << 3, 1]); // author as varint: prost fails
        check(&[7 << 3 | 2, 1, 0xff]); // text not UTF-8
        check(&[2 << 3 | 2, 1, 0xff]); // room not UTF-8
        check(&[3 << 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        check(&[3 << 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
        check(&[3 << 3, 0x80, 0x00]); // non-minimal varint
        check(&[99 << 3 | 3, 99 << 3 | 4]); // a group
        check(&[0, 0]); // field 0
        assert!(parse_message(&[5 << 3 | 2, 0, 1 << 3, 0]).is_none()); // a second field
    }

    #[test]
    fn parse_announce_matches_full_decode() {
        let a = Announce {
            room: "general".into(),
            authors: vec![
                AuthorRanges {
                    author: b"author-one".to_vec(),
                    floor: 0,
                    ranges: vec![1, 4, 300, 301],
                },
                AuthorRanges {
                    author: b"author-two".to_vec(),
                    floor: 5,
                    ranges: vec![u64::MAX - 1, u64::MAX],
                },
                AuthorRanges::default(),
            ],
        };
        let wire = Frame::new(Kind::Announce(a.clone())).to_wire();
        let payload = wire.slice(1..); // one-byte length prefix
        let r = parse_announce(&payload).unwrap();
        assert_eq!(r, AnnounceRef::of(&a));
        let authors: Vec<_> = r.authors().collect();
        assert_eq!(authors[0], (&b"author-one"[..], &[1, 4, 300, 301][..]));
        assert_eq!(authors[2], (&[][..], &[][..]));
        assert!(parse_announce(&payload[..payload.len() - 1]).is_none());
        let ping = Frame::new(Kind::Ping(Ping { nonce: 1 })).to_wire();
        assert!(parse_announce(&ping[1..]).is_none());
        let msg = Frame::new(Kind::Message(RoomMessage::default())).to_wire();
        assert!(parse_announce(&msg[1..]).is_none());
    }

    /// Announcements the hand parser leaves to prost, and ones it reads as prost does.
    #[test]
    fn parse_announce_agrees_with_prost_on_odd_frames() {
        let check = |body: &[u8]| {
            let mut payload = vec![0x82, 0x01, body.len() as u8];
            payload.extend_from_slice(body);
            let prost = Frame::decode_payload(&payload);
            // `None`: left to prost, whatever it says.
            if let Some(r) = parse_announce(&payload) {
                match prost {
                    Ok(Frame {
                        kind: Some(Kind::Announce(p)),
                        link_prev: None,
                    }) => assert_eq!(r, AnnounceRef::of(&p), "{body:?}"),
                    other => panic!("{body:?}: hand parse ok, prost {other:?}"),
                }
            }
        };
        check(&[]); // empty announcement
        check(&[0x12, 0]); // an empty author entry
        check(&[0x12, 4, 0x1a, 2, 1, 2, 0x0a, 1, b'r']); // authors before the room
        check(&[0x0a, 1, b'a', 0x0a, 1, b'b']); // the room twice: the last wins
        check(&[0x0a, 1, 0xff]); // room not UTF-8
        check(&[0x12, 4, 0x0a, 1, b'x', 0x10]); // floor cut short
        check(&[0x12, 5, 0x10, 1, 0x10, 2, 0x18]); // ranges unpacked, cut short
        check(&[0x12, 4, 0x18, 1, 0x18, 2]); // ranges unpacked
        check(&[0x12, 6, 0x1a, 1, 1, 0x1a, 1, 2]); // packed twice: concatenated
        check(&[0x12, 4, 0x1a, 2, 0x80, 0x80]); // a varint cut short by its field
        check(&[0x12, 3, 0x1a, 1, 0x80, 0x01]); // the same, the field's length short
        check(&[0x12, 2, 0x0a, 5]); // author longer than its entry
        check(&[0x0a, 0x80, 0x00]); // non-minimal length
        check(&[0x12, 2, 0x08, 1]); // author as varint: prost fails
        check(&[0x1a, 0]); // an unknown field
        check(&[0x12, 2, 0x22, 0]); // an unknown field in an entry
        check(&[0, 0]); // field 0
        let mut two = vec![0x82, 0x01, 0];
        two.extend_from_slice(&[0x82, 0x01, 0]);
        assert!(parse_announce(&two).is_none()); // a second field
        two.truncate(3);
        two.extend_from_slice(&[0x9a, 0x01, 0]);
        assert!(parse_announce(&two).is_none()); // a `link_prev`
    }

    #[test]
    fn encode_announce_matches_prost() {
        let id = |b: u8| {
            let key = libp2p_identity::Keypair::ed25519_from_bytes([b; 32]).expect("32 bytes");
            key.public().to_peer_id()
        };
        let (a, b) = (id(1), id(2));
        let long = "r".repeat(200);
        let cases = [
            ("general", vec![(a, vec![1, 4, 300, 301]), (b, vec![0, u64::MAX])]),
            ("", vec![(a, vec![])]),
            (&long, vec![(b, vec![127, 128, 16_383, 16_384]); 3]),
            ("x", vec![]),
        ];
        for (room, authors) in cases {
            let message = Announce {
                room: room.into(),
                authors: authors
                    .iter()
                    .map(|(a, r)| AuthorRanges {
                        author: a.to_bytes(),
                        floor: 0,
                        ranges: r.clone(),
                    })
                    .collect(),
            };
            let mut out = BytesMut::new();
            encode_announce(&mut out, room, &authors);
            assert_eq!(out.freeze(), Frame::new(Kind::Announce(message)).to_wire());
        }
    }
}
