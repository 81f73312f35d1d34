//! The test vectors of `PROTOCOL.md`, section 13, checked against the implementation.
//!
//! Every hex string here also appears verbatim in `PROTOCOL.md`
//! ([`doc_contains_every_vector`]), so the document and the code cannot drift apart.

use echo::codec::{FrameDecoder, FrameError};
use echo::wire::{self, Frame, GoodbyeCode, Kind};
use echo::{Keypair, Message, Multiaddr, PeerId};
use sha2::{Digest, Sha256};

const DOC: &str = include_str!("../PROTOCOL.md");

/// Default `Config::max_frame_len`.
const MAX_FRAME_LEN: usize = 256 * 1024;

// 13.1
const HELLO_FRAME: &str = "450a4308021a05616c696365220767656e6572616c2204727573742a0804c0000201060fa13209636861696e2d73696738ef9bafcdf8acd19101420a6563686f2f302e312e30";
const HELLO_LISTEN_ADDR: &str = "04c0000201060fa1";
// 13.2
const PING_FRAME: &str = "0c1a0a0888ef99abc5e88c9111";
const PONG_FRAME: &str = "0c220a0888ef99abc5e88c9111";
// 13.3
const GOODBYE_FRAME: &str = "3e123c08021238696e636f6d70617469626c652070726f746f636f6c2076657273696f6e20332e30202874686973206e6f646520737065616b7320322e7829";
// 13.4
const AUTHOR_PUBLIC_KEY: &str = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
const AUTHOR_PEER_ID: &str = "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5";
const AUTHOR_PEER_ID_BYTES: &str =
    "0024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
const MSG1_HASH_INPUT: &str = "6563686f2f636861742f32206d65737361676500000000260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c0000000767656e6572616c000000080000000000000001000000080000000000000001000000080000018bcfe5680000000005616c6963650000000b68656c6c6f2c206563686f000000200000000000000000000000000000000000000000000000000000000000000000";
const MSG1_HASH: &str = "920a04fc69c8c7042e3ad79ea3fb6ffc69a8018406d2cb338dc5ddb20713504b";
const MSG1_SIGNED_STRING: &str = "6563686f2f636861742f32207369676e617475726500920a04fc69c8c7042e3ad79ea3fb6ffc69a8018406d2cb338dc5ddb20713504b";
const MSG1_SIGNATURE: &str = "7c3899d5e292f6c8a989990dc979c3133a1f0b791dbe00e6a16638e810fbb93d2c4d577350d1538747155ce450c3b0ae756063add3819fbccb2dd3d080fe1003";
const MSG1_FRAME: &str = "b7012ab4010a260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c120767656e6572616c180120012880d095ffbc313205616c6963653a0b68656c6c6f2c206563686f422000000000000000000000000000000000000000000000000000000000000000004a407c3899d5e292f6c8a989990dc979c3133a1f0b791dbe00e6a16638e810fbb93d2c4d577350d1538747155ce450c3b0ae756063add3819fbccb2dd3d080fe1003";
// 13.5
const MSG2_FRAME: &str = "772a750a260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c120767656e6572616c1802200228e8d795ffbc313205616c6963653a0e7365636f6e64206d6573736167654220920a04fc69c8c7042e3ad79ea3fb6ffc69a8018406d2cb338dc5ddb20713504b";
const MSG2_HASH: &str = "9fc663f3f7878a8550f59432ecede82b49be20a996c266dc701b54a8b3ef416c";

/// Every vector above, for the drift check.
const ALL: &[&str] = &[
    HELLO_FRAME,
    HELLO_LISTEN_ADDR,
    PING_FRAME,
    PONG_FRAME,
    GOODBYE_FRAME,
    AUTHOR_PUBLIC_KEY,
    AUTHOR_PEER_ID,
    AUTHOR_PEER_ID_BYTES,
    MSG1_HASH_INPUT,
    MSG1_HASH,
    MSG1_SIGNED_STRING,
    MSG1_SIGNATURE,
    MSG1_FRAME,
    MSG2_FRAME,
    MSG2_HASH,
];

// Section 2: length-prefix examples, as they appear (in backticks) in the prefix table.
const PREFIX_EMPTY: &str = "00";
const PREFIX_300: &str = "ac02";
const PREFIX_MAX: &str = "808010";
const PREFIX_TOO_LARGE: &str = "818010";
const PREFIX_NON_MINIMAL: &str = "8000";
const PREFIX_TOO_LONG: &str = "ffffffffff01";

const HASH_DOMAIN: &[u8] = b"echo/chat/2 message\0";
const SIG_DOMAIN: &[u8] = b"echo/chat/2 signature\0";

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("valid hex")
}

/// Decodes one complete frame with the stream decoder (whole and byte by byte), checks
/// that re-encoding gives the same bytes, and returns it.
fn decode_frame(frame_hex: &str) -> Frame {
    let bytes = unhex(frame_hex);

    let mut d = FrameDecoder::new(MAX_FRAME_LEN);
    d.extend(&bytes);
    let payload = d.decode().expect("valid stream").expect("complete frame");
    assert_eq!(d.buffered(), 0, "one frame, nothing left over");
    assert_eq!(d.decode().unwrap(), None);

    let mut d = FrameDecoder::new(MAX_FRAME_LEN);
    let mut got = Vec::new();
    for b in &bytes {
        d.extend(std::slice::from_ref(b));
        while let Some(p) = d.decode().expect("valid stream") {
            got.push(p);
        }
    }
    assert_eq!(got, vec![payload.clone()], "byte-by-byte decoding");

    let frame = Frame::decode_payload(&payload).expect("decodable frame");
    assert_eq!(
        hex::encode(frame.to_wire()),
        frame_hex,
        "re-encoding is byte-identical"
    );
    frame
}

fn room_message(frame: Frame) -> wire::RoomMessage {
    match frame.kind {
        Some(Kind::Message(m)) => m,
        other => panic!("expected a room message, got {other:?}"),
    }
}

fn author_key() -> Keypair {
    Keypair::ed25519_from_bytes([1u8; 32]).expect("32-byte seed")
}

/// The hash input of section 6.1, built from the wire fields.
fn hash_input(m: &wire::RoomMessage) -> Vec<u8> {
    let mut out = HASH_DOMAIN.to_vec();
    let mut field = |b: &[u8]| {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    };
    field(&m.author);
    field(m.room.as_bytes());
    field(&m.seq.to_be_bytes());
    field(&m.lamport.to_be_bytes());
    field(&m.sent_at_ms.to_be_bytes());
    field(m.name.as_bytes());
    field(m.text.as_bytes());
    field(&m.prev);
    out
}

#[test]
fn hello_vector() {
    let frame = decode_frame(HELLO_FRAME);
    let Some(Kind::Hello(h)) = frame.kind else {
        panic!("expected hello, got {:?}", frame.kind);
    };
    assert_eq!(h.version_major, 2);
    assert_eq!(h.version_major, wire::VERSION_MAJOR);
    assert_eq!(h.version_minor, 0);
    assert_eq!(h.version_minor, wire::VERSION_MINOR);
    assert_eq!(h.name, "alice");
    assert_eq!(h.rooms, vec!["general".to_string(), "rust".to_string()]);
    assert_eq!(h.listen_addrs, vec![unhex(HELLO_LISTEN_ADDR)]);
    let addr = Multiaddr::try_from(h.listen_addrs[0].clone()).expect("binary multiaddr");
    assert_eq!(addr.to_string(), "/ip4/192.0.2.1/tcp/4001");
    assert_eq!(h.capabilities, vec!["chain-sig".to_string()]);
    assert_eq!(h.nonce, 0x0123_4567_89ab_cdef);
    assert_eq!(h.nonce, 81_985_529_216_486_895);
    assert_eq!(h.agent, "echo/0.1.0");
}

#[test]
fn ping_and_pong_vectors() {
    let Some(Kind::Ping(p)) = decode_frame(PING_FRAME).kind else {
        panic!("expected ping");
    };
    assert_eq!(p.nonce, 0x1122_3344_5566_7788);
    assert_eq!(p.nonce, 1_234_605_616_436_508_552);
    let Some(Kind::Pong(q)) = decode_frame(PONG_FRAME).kind else {
        panic!("expected pong");
    };
    assert_eq!(q, p);
}

#[test]
fn goodbye_vector() {
    let Some(Kind::Goodbye(g)) = decode_frame(GOODBYE_FRAME).kind else {
        panic!("expected goodbye");
    };
    assert_eq!(g.code, 2);
    assert_eq!(g.code, GoodbyeCode::IncompatibleVersion as u32);
    assert_eq!(
        g.reason,
        "incompatible protocol version 3.0 (this node speaks 2.x)"
    );
}

#[test]
fn goodbye_codes_match_doc_table() {
    let codes = [
        (GoodbyeCode::Shutdown, 0, "Shutdown"),
        (GoodbyeCode::Duplicate, 1, "Duplicate"),
        (GoodbyeCode::IncompatibleVersion, 2, "IncompatibleVersion"),
        (GoodbyeCode::ProtocolViolation, 3, "ProtocolViolation"),
        (GoodbyeCode::Idle, 4, "Idle"),
        (GoodbyeCode::TooManyPeers, 5, "TooManyPeers"),
    ];
    for (code, value, name) in codes {
        assert_eq!(code as u32, value);
        let row = format!("| {value} | `{name}` |");
        assert!(
            DOC.contains(&row),
            "PROTOCOL.md lacks the goodbye row {row:?}"
        );
    }
}

#[test]
fn author_identity_vector() {
    let key = author_key();
    let id = key.public().to_peer_id();
    assert_eq!(id.to_base58(), AUTHOR_PEER_ID);
    assert_eq!(hex::encode(id.to_bytes()), AUTHOR_PEER_ID_BYTES);
    let ed = key.public().try_into_ed25519().expect("ed25519 key");
    assert_eq!(hex::encode(ed.to_bytes()), AUTHOR_PUBLIC_KEY);
    // Section 6.3: identity multihash of the protobuf-encoded key.
    assert_eq!(
        AUTHOR_PEER_ID_BYTES,
        format!("002408011220{AUTHOR_PUBLIC_KEY}")
    );
}

#[test]
fn signed_room_message_vector() {
    let w = room_message(decode_frame(MSG1_FRAME));
    assert_eq!(hex::encode(&w.author), AUTHOR_PEER_ID_BYTES);
    assert_eq!(w.room, "general");
    assert_eq!(w.seq, 1);
    assert_eq!(w.lamport, 1);
    assert_eq!(w.sent_at_ms, 1_700_000_000_000);
    assert_eq!(w.name, "alice");
    assert_eq!(w.text, "hello, echo");
    assert_eq!(w.prev.as_ref(), &[0u8; 32]);
    assert_eq!(hex::encode(&w.signature), MSG1_SIGNATURE);

    // The documented hash layout, computed independently of the crate.
    let input = hash_input(&w);
    assert_eq!(hex::encode(&input), MSG1_HASH_INPUT);
    assert_eq!(input.len(), 169);
    assert_eq!(hex::encode(Sha256::digest(&input)), MSG1_HASH);

    let m = Message::decode(w.clone()).expect("valid message");
    assert_eq!(hex::encode(m.hash()), MSG1_HASH);
    assert_eq!(m.prev(), &[0u8; 32]);
    assert_eq!(m.author, PeerId::from_bytes(&w.author).unwrap());
    assert_eq!(m.seq, 1);
    assert_eq!(m.lamport, 1);
    assert_eq!(m.text, "hello, echo");
    assert_eq!(
        m.signature().map(hex::encode).as_deref(),
        Some(MSG1_SIGNATURE)
    );
    assert!(m.verify_signature());
    assert_eq!(m.encode(), w, "Message::encode gives back the wire message");

    // The signed string, and ed25519 determinism: signing it again gives the vector.
    let mut signed = SIG_DOMAIN.to_vec();
    signed.extend_from_slice(m.hash());
    assert_eq!(hex::encode(&signed), MSG1_SIGNED_STRING);
    assert_eq!(signed.len(), 54);
    let key = author_key();
    assert!(key.public().verify(&signed, &w.signature));
    assert_eq!(hex::encode(key.sign(&signed).unwrap()), MSG1_SIGNATURE);
}

#[test]
fn flipping_a_text_byte_breaks_the_signature() {
    let mut bytes = unhex(MSG1_FRAME);
    let text = b"hello, echo";
    let at = bytes
        .windows(text.len())
        .position(|w| w == text)
        .expect("text in frame");
    bytes[at] ^= 0x20; // 'h' -> 'H'
    let mut d = FrameDecoder::new(MAX_FRAME_LEN);
    d.extend(&bytes);
    let payload = d.decode().unwrap().unwrap();
    let w = room_message(Frame::decode_payload(&payload).unwrap());
    assert_eq!(w.text, "Hello, echo");
    let forged = Message::decode(w).expect("still well-formed");
    assert_ne!(hex::encode(forged.hash()), MSG1_HASH);
    assert!(forged.signature().is_some());
    assert!(!forged.verify_signature());
}

#[test]
fn unsigned_chained_message_vector() {
    let first = Message::decode(room_message(decode_frame(MSG1_FRAME))).unwrap();
    let w = room_message(decode_frame(MSG2_FRAME));
    assert_eq!(hex::encode(&w.author), AUTHOR_PEER_ID_BYTES);
    assert_eq!(w.room, "general");
    assert_eq!(w.seq, 2);
    assert_eq!(w.lamport, 2);
    assert_eq!(w.sent_at_ms, 1_700_000_001_000);
    assert_eq!(w.name, "alice");
    assert_eq!(w.text, "second message");
    assert_eq!(hex::encode(&w.prev), MSG1_HASH);
    assert!(w.signature.is_empty());

    assert_eq!(hex::encode(Sha256::digest(hash_input(&w))), MSG2_HASH);
    let m = Message::decode(w).expect("valid message");
    assert_eq!(hex::encode(m.hash()), MSG2_HASH);
    assert_eq!(m.prev(), first.hash(), "chained to the first message");
    assert_eq!(m.signature(), None);
    assert!(!m.verify_signature(), "no signature of its own");
}

#[test]
fn length_prefix_examples() {
    let decode = |hex_str: &str| {
        let mut d = FrameDecoder::new(MAX_FRAME_LEN);
        d.extend(&unhex(hex_str));
        d.decode()
    };
    assert_eq!(decode(PREFIX_EMPTY).unwrap().unwrap().len(), 0);
    assert_eq!(Frame::decode_payload(&[]).unwrap().kind, None);
    let mut d = FrameDecoder::new(MAX_FRAME_LEN);
    d.extend(&unhex(PREFIX_300));
    d.extend(&[7u8; 300]);
    assert_eq!(d.decode().unwrap().unwrap().len(), 300);
    assert_eq!(
        decode(PREFIX_MAX),
        Ok(None),
        "maximum length accepted, payload pending"
    );
    assert_eq!(
        decode(PREFIX_TOO_LARGE),
        Err(FrameError::TooLarge {
            len: MAX_FRAME_LEN as u64 + 1,
            max: MAX_FRAME_LEN
        })
    );
    assert_eq!(decode(PREFIX_NON_MINIMAL), Err(FrameError::BadPrefix));
    assert_eq!(decode(PREFIX_TOO_LONG), Err(FrameError::BadPrefix));
}

#[test]
fn doc_contains_every_vector() {
    for v in ALL {
        assert!(DOC.contains(v), "PROTOCOL.md does not contain {v}");
    }
    for p in [
        PREFIX_EMPTY,
        PREFIX_300,
        PREFIX_MAX,
        PREFIX_TOO_LARGE,
        PREFIX_NON_MINIMAL,
        PREFIX_TOO_LONG,
    ] {
        let cell = format!("| `{p}` |");
        assert!(
            DOC.contains(&cell),
            "PROTOCOL.md lacks the prefix example {cell}"
        );
    }
    for s in [wire::PROTOCOL_ID, wire::LEGACY_PROTOCOL_ID] {
        assert!(DOC.contains(&format!("`{s}`")), "PROTOCOL.md lacks {s}");
    }
    for domain in [HASH_DOMAIN, SIG_DOMAIN] {
        let text = std::str::from_utf8(&domain[..domain.len() - 1]).unwrap();
        assert!(
            DOC.contains(&format!("\"{text}\\0\"")),
            "PROTOCOL.md lacks {text:?}"
        );
    }
}
