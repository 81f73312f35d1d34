//! Frame payloads and room messages: decode, re-encode, decode again.
//!
//! The first input byte picks the mode:
//! * even: the rest is a frame payload as a peer would send it (`Frame::decode_payload`);
//! * odd: the rest builds a structured room message (valid author ids, optional real
//!   signature) so the hash and signature paths are reached, then it goes through the same
//!   checks as the raw bytes.
//!
//! Invariants:
//! * `wire::parse_message` (the node's in-place reader) accepts only payloads that
//!   decode to a room message, and reads the same message;
//! * a decoded frame re-encodes (`Frame::to_wire`) to bytes that decode to an equal
//!   frame, and encoding is a fixed point from then on;
//! * for `Kind::Message`: if `Message::decode` accepts it, `encode()` then `decode()` gives
//!   an equal message with the same `hash()`; the hash depends only on the canonical
//!   fields (re-encoding the canonical wire form changes nothing);
//! * `Message::decode` accepts exactly the messages its field rules allow (valid author
//!   id, 1 <= seq <= MAX_SEQ, `skipped` < seq, 32-byte prev that is all zero exactly for
//!   a chain's first message, empty or 64-byte signature), and `prev_seq()` is
//!   `seq - 1 - skipped`;
//! * `verify_signature()` never panics; it is true for a message signed by its author's
//!   key and false once any hashed field is altered or the signature is absent.
#![no_main]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use echo_proto::codec;
use echo_proto::message::MAX_SEQ;
use echo_proto::sim::keypair;
use echo_proto::wire::{self, Frame, Kind};
use echo_proto::Message;
use libfuzzer_sys::fuzz_target;
use libp2p_identity::Keypair;

const SIG_DOMAIN: &[u8] = b"echo/chat/2 signature\0";

fn keys() -> &'static [Keypair] {
    static KEYS: OnceLock<Vec<Keypair>> = OnceLock::new();
    KEYS.get_or_init(|| (0..3).map(keypair).collect())
}

fn sign(key: &Keypair, hash: &[u8; 32]) -> Bytes {
    let mut b = SIG_DOMAIN.to_vec();
    b.extend_from_slice(hash);
    Bytes::from(key.sign(&b).expect("ed25519 signing"))
}

/// A structured room message for the odd mode.
#[derive(Debug, Arbitrary)]
struct Structured {
    /// 0..3: a real ed25519 peer id; otherwise arbitrary author bytes.
    author_sel: u8,
    author_raw: Vec<u8>,
    room: String,
    /// 0: small seq, 1: near MAX_SEQ, else arbitrary.
    seq_sel: u8,
    seq: u64,
    skipped: u64,
    lamport: u64,
    sent_at_ms: u64,
    name: String,
    text: String,
    /// 0: genesis, 1: arbitrary 32 bytes, 2: arbitrary length.
    prev_sel: u8,
    prev: [u8; 32],
    prev_raw: Vec<u8>,
    /// 0: none, 1: valid signature by the author (if known), 2: 64 arbitrary bytes,
    /// 3: arbitrary length, 4: valid signature by another key.
    sig_sel: u8,
    sig: Vec<u8>,
    /// Appended unknown fields / trailing junk for the payload.
    junk: Vec<u8>,
}

fn structured_payload(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    let s = Structured::arbitrary(u)?;
    let key = keys().get(s.author_sel as usize % 5);
    let author = match key {
        Some(k) => Bytes::from(k.public().to_peer_id().to_bytes()),
        None => Bytes::from(s.author_raw),
    };
    let prev = match s.prev_sel % 3 {
        0 => Bytes::from_static(&[0; 32]),
        1 => Bytes::copy_from_slice(&s.prev),
        _ => Bytes::from(s.prev_raw),
    };
    let seq = match s.seq_sel % 3 {
        0 => s.seq % 8,
        1 => (MAX_SEQ - 2).wrapping_add(s.seq % 4),
        _ => s.seq,
    };
    let mut w = wire::RoomMessage {
        author,
        room: s.room,
        seq,
        skipped: if s.seq_sel & 4 == 0 { 0 } else { s.skipped % 8 },
        lamport: s.lamport,
        sent_at_ms: s.sent_at_ms,
        name: s.name,
        text: s.text,
        prev,
        signature: Bytes::new(),
    };
    w.signature = match s.sig_sel % 5 {
        0 => Bytes::new(),
        1 | 4 => {
            // Sign what the receiver will hash, if it parses.
            match (Message::from_wire(w.clone()), key) {
                (Ok(m), Some(k)) => {
                    let signer = if s.sig_sel % 5 == 1 {
                        k
                    } else {
                        &keys()[(s.author_sel as usize + 1) % 3]
                    };
                    sign(signer, m.hash())
                }
                _ => Bytes::from(vec![0x42; 64]),
            }
        }
        2 => {
            let mut v = s.sig;
            v.resize(64, 0);
            Bytes::from(v)
        }
        _ => Bytes::from(s.sig),
    };
    let mut payload = Frame::new(Kind::Message(w)).to_wire().to_vec();
    // Drop the length prefix: `decode_payload` takes the bare payload.
    let (_, p) = codec::peek_varint(&payload).unwrap().unwrap();
    payload.drain(..p);
    payload.extend_from_slice(&s.junk);
    Ok(payload)
}

fn strip_prefix(wire: &[u8]) -> &[u8] {
    let (len, p) = codec::peek_varint(wire)
        .expect("to_wire writes a valid prefix")
        .expect("complete prefix");
    assert_eq!(
        p + len as usize,
        wire.len(),
        "prefix announces the payload length"
    );
    &wire[p..]
}

fn check_message(w: wire::RoomMessage) {
    let decoded = Message::from_wire(w.clone());
    // The field rules, checked independently: a valid author id, 1 <= seq <= MAX_SEQ,
    // `skipped` leaving a predecessor seq `prev_seq = seq - 1 - skipped` >= 0, a 32-byte
    // prev that is all zero exactly for a chain's first message (`prev_seq == 0`), an
    // empty or 64-byte signature.
    let prev_seq = w.seq.checked_sub(1).and_then(|p| p.checked_sub(w.skipped));
    let rules_ok = (1..=MAX_SEQ).contains(&w.seq)
        && prev_seq.is_some()
        && w.prev.len() == 32
        && ((prev_seq == Some(0)) == w.prev.iter().all(|&b| b == 0))
        && (w.signature.is_empty() || w.signature.len() == 64)
        && echo_proto::PeerId::from_bytes(&w.author).is_ok();
    assert_eq!(
        decoded.is_ok(),
        rules_ok,
        "Message::decode disagrees with the field rules: {decoded:?} for {w:?}"
    );
    let Ok(m) = decoded else { return };

    // Fields carried over unchanged.
    assert_eq!(m.room(), w.room);
    assert_eq!(m.seq(), w.seq);
    assert_eq!(m.lamport(), w.lamport);
    assert_eq!(m.sent_at_ms(), w.sent_at_ms);
    assert_eq!(m.name(), w.name);
    assert_eq!(m.text(), w.text);
    assert_eq!(&m.prev()[..], &w.prev[..]);
    assert_eq!(Some(m.prev_seq()), prev_seq);
    assert_eq!(
        m.signature(),
        (!w.signature.is_empty()).then_some(&w.signature[..])
    );
    assert!(
        m.verified(),
        "decoded wire messages are marked verified (not legacy)"
    );

    // encode -> decode is the identity, hash included.
    let w2 = m.to_wire();
    let m2 = Message::from_wire(w2.clone()).expect("re-encoded message decodes");
    assert_eq!(m2.hash(), m.hash(), "hash changed after encode/decode");
    assert_eq!(m2, m, "message changed after encode/decode");
    assert_eq!(m2.to_wire(), w2, "encode is not a fixed point");
    assert_eq!(
        echo_proto::PeerId::from_bytes(&w2.author).ok(),
        Some(m.author()),
        "the encoded author is the decoded one"
    );

    // Signatures: never panic; valid only for the author's key over this hash.
    let ok = m.verify_signature();
    assert_eq!(m2.verify_signature(), ok);
    if m.signature().is_none() {
        assert!(!ok, "a message without a signature verified");
    }
    if let Some(k) = keys()
        .iter()
        .find(|k| k.public().to_peer_id() == m.author())
    {
        if m.signature().is_some() {
            let mut b = SIG_DOMAIN.to_vec();
            b.extend_from_slice(m.hash());
            assert_eq!(ok, k.public().verify(&b, m.signature().unwrap()));
        }
    }
    if ok {
        // Any change to a hashed field breaks it.
        let mut t = w2.clone();
        t.text.push('!');
        let forged = Message::from_wire(t).expect("still well-formed");
        assert_ne!(forged.hash(), m.hash());
        assert!(!forged.verify_signature(), "altered text still verifies");
        let mut t = w2.clone();
        t.lamport = t.lamport.wrapping_add(1);
        let forged = Message::from_wire(t).expect("still well-formed");
        assert!(!forged.verify_signature(), "altered lamport still verifies");
        // Stripping the signature leaves the hash alone.
        let mut t = w2;
        t.signature = Bytes::new();
        let bare = Message::from_wire(t).expect("still well-formed");
        assert_eq!(bare.hash(), m.hash());
        assert!(!bare.verify_signature());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let structured;
    let payload: &[u8] = if mode % 2 == 0 {
        rest
    } else {
        let mut u = Unstructured::new(rest);
        match structured_payload(&mut u) {
            Ok(p) => {
                structured = p;
                &structured
            }
            Err(_) => return,
        }
    };

    // The node's in-place reader (`wire::parse_message`) reads a frame the way the full
    // decoder does, or leaves it to it.
    let parsed = wire::parse_message(payload).map(|r| r.to_owned());
    if let Some(p) = &parsed {
        // The quick look at a message's room agrees wherever the full read accepts.
        assert_eq!(wire::peek_room(payload), Some(p.room.as_str()), "peek_room");
    }
    let announce = wire::parse_announce(payload);
    let Ok(frame) = Frame::decode_payload(payload) else {
        assert!(parsed.is_none(), "hand parse accepts what prost rejects");
        assert!(
            announce.is_none(),
            "announce parse accepts what prost rejects"
        );
        return;
    };
    if let Some(p) = parsed {
        match &frame.kind {
            Some(Kind::Message(m)) => assert_eq!(&p, m, "hand parse and prost disagree"),
            other => panic!("hand parse read a message, prost a {other:?}"),
        }
    }
    if let Some(r) = &announce {
        match &frame.kind {
            Some(Kind::Announce(a)) if frame.link_prev.is_none() => {
                assert_eq!(
                    r,
                    &wire::AnnounceRef::of(a),
                    "announce parse and prost disagree"
                )
            }
            other => panic!("announce parse read an announcement, prost a {other:?}"),
        }
    }
    if let (Some(Kind::Announce(a)), None) = (&frame.kind, &frame.link_prev) {
        // The hand encoder writes what prost writes, for what it can express: canonical
        // peer ids, no floor.
        let authors: Option<Vec<_>> = a
            .authors
            .iter()
            .map(|ar| {
                let id = echo_proto::PeerId::from_bytes(&ar.author).ok()?;
                (ar.floor == 0 && id.to_bytes() == ar.author).then(|| (id, ar.ranges.clone()))
            })
            .collect();
        if let Some(authors) = authors {
            let mut out = bytes::BytesMut::new();
            wire::encode_announce(&mut out, &a.room, &authors);
            assert_eq!(
                &out[..],
                &frame.to_wire()[..],
                "encode_announce and prost disagree"
            );
        }
    }
    let wire1 = frame.to_wire();
    let frame2 = Frame::decode_payload(strip_prefix(&wire1)).expect("re-encoded frame decodes");
    assert_eq!(frame2, frame, "decode(encode(frame)) != frame");
    let wire2 = frame2.to_wire();
    assert_eq!(wire2, wire1, "encoding is not a fixed point");

    if let Some(Kind::Message(m)) = frame.kind {
        check_message(m);
    }
});
