//! The test vectors of `PROTOCOL.md`, section 16, checked against the implementation.
//!
//! Every hex string here also appears verbatim in `PROTOCOL.md`
//! ([`doc_contains_every_vector`]), so the document and the code cannot drift apart.

use echo_proto::codec::{FrameDecoder, FrameError};
use echo_proto::wire::{self, Frame, GoodbyeCode, Kind};
use echo_proto::{Message, Multiaddr, PeerId};
use libp2p_identity::Keypair;
use libp2p_identity::PublicKey;
use sha2::{Digest, Sha256};

const DOC: &str = include_str!("../PROTOCOL.md");

/// Default `Config::max_frame_len`.
const MAX_FRAME_LEN: usize = 256 * 1024;

// 16.1
const HELLO_FRAME: &str = "450a4308021a05616c696365220767656e6572616c2204727573742a0804c0000201060fa13209636861696e2d73696738ef9bafcdf8acd19101420a6563686f2f302e312e30";
const HELLO_LISTEN_ADDR: &str = "04c0000201060fa1";
// 16.2
const PING_FRAME: &str = "0c1a0a0888ef99abc5e88c9111";
const PONG_FRAME: &str = "0c220a0888ef99abc5e88c9111";
// 16.3
const GOODBYE_FRAME: &str = "3e123c08021238696e636f6d70617469626c652070726f746f636f6c2076657273696f6e20332e30202874686973206e6f646520737065616b7320322e7829";
// 16.4
const AUTHOR_PUBLIC_KEY: &str = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
const AUTHOR_PEER_ID: &str = "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5";
const AUTHOR_PEER_ID_BYTES: &str =
    "0024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
const MSG1_HASH_INPUT: &str = "6563686f2f636861742f32206d65737361676500000000260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c0000000767656e6572616c000000080000000000000001000000080000000000000001000000080000018bcfe5680000000005616c6963650000000b68656c6c6f2c206563686f000000200000000000000000000000000000000000000000000000000000000000000000000000080000000000000000";
const MSG1_HASH: &str = "eab07dc3e8c94aa2f15f2ec4d85876717bf2a4945c28bbf64c4a309d4cb394bb";
const MSG1_SIGNED_STRING: &str = "6563686f2f636861742f32207369676e617475726500eab07dc3e8c94aa2f15f2ec4d85876717bf2a4945c28bbf64c4a309d4cb394bb";
const MSG1_SIGNATURE: &str = "60f7f27b852747ee7bbe0f0efead3ad16d8317e8441d0d9c5e57c30d8df764bb6de66686f62d078539b36076afe7264604d43dacac70423ca71defe17ff3710d";
const MSG1_FRAME: &str = "b7012ab4010a260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c120767656e6572616c180120012880d095ffbc313205616c6963653a0b68656c6c6f2c206563686f422000000000000000000000000000000000000000000000000000000000000000004a4060f7f27b852747ee7bbe0f0efead3ad16d8317e8441d0d9c5e57c30d8df764bb6de66686f62d078539b36076afe7264604d43dacac70423ca71defe17ff3710d";
// 16.5
const MSG2_FRAME: &str = "772a750a260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c120767656e6572616c1802200228e8d795ffbc313205616c6963653a0e7365636f6e64206d6573736167654220eab07dc3e8c94aa2f15f2ec4d85876717bf2a4945c28bbf64c4a309d4cb394bb";
const MSG2_HASH: &str = "24fd65373ee96fa17c94a9ff713e3063ff610bf783e5bd8963dbfb45414f0bc8";
// 16.6
const MSG3_HASH_INPUT: &str = "6563686f2f636861742f32206d65737361676500000000260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c0000000767656e6572616c0000000800000000000003e9000000080000000000000003000000080000018bcfe56fd000000005616c696365000000146261636b206166746572206120726573746172740000002024fd65373ee96fa17c94a9ff713e3063ff610bf783e5bd8963dbfb45414f0bc8000000080000000000000002";
const MSG3_HASH: &str = "df17f4c8301b6efe6bf4c4785ae3a8ed8db5cb17347ffda8573571d8f13979f1";
const MSG3_SIGNATURE: &str = "7cfe36a1551f3ddd98d3402f74d6b1a819b33d4345a183fb21234a147d4e36ebe00c1c2fa2ca313bd5c41714e846267dc5894595c18c6f5646e94d6e4a0d1005";
const MSG3_FRAME: &str = "c4012ac1010a260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c120767656e6572616c18e907200328d0df95ffbc313205616c6963653a146261636b20616674657220612072657374617274422024fd65373ee96fa17c94a9ff713e3063ff610bf783e5bd8963dbfb45414f0bc84a407cfe36a1551f3ddd98d3402f74d6b1a819b33d4345a183fb21234a147d4e36ebe00c1c2fa2ca313bd5c41714e846267dc5894595c18c6f5646e94d6e4a0d100550e607";
// 16.7
const SECOND_AUTHOR_PEER_ID_BYTES: &str =
    "0024080112208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394";
const SUMMARY_FRAME: &str = "6d526b0a0767656e6572616c122e0a260024080112208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b39410281a02284012300a260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c1a060103e907ea07";
// 16.8
const REQUEST_FRAME: &str = "375a350a0767656e6572616c12260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c18022003";
// 16.9
const PROFILE_SIGNING_BYTES: &str = "6563686f2f636861742f322070726f66696c6500000000260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c000000000000000700000005616c696365";
const PROFILE_SIGNATURE: &str = "fb4b67588bd7867d45823b098b5487c90bf3b141006048824a386384a9220daa817a19a32285f40b403bb2d6b19a3e74c4694eb01e48141a523923fc28451502";
const PROFILE_FRAME: &str = "754a730a05616c69636512260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c18072240fb4b67588bd7867d45823b098b5487c90bf3b141006048824a386384a9220daa817a19a32285f40b403bb2d6b19a3e74c4694eb01e48141a523923fc28451502";

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
    MSG3_HASH_INPUT,
    MSG3_HASH,
    MSG3_SIGNATURE,
    MSG3_FRAME,
    SECOND_AUTHOR_PEER_ID_BYTES,
    SUMMARY_FRAME,
    REQUEST_FRAME,
    PROFILE_SIGNING_BYTES,
    PROFILE_SIGNATURE,
    PROFILE_FRAME,
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
const PROFILE_DOMAIN: &[u8] = b"echo/chat/2 profile\0";

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

/// The hash input of section 6.1, built from the wire fields
/// (`prev_seq = seq - 1 - skipped`).
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
    field(&(m.seq - 1 - m.skipped).to_be_bytes());
    out
}

/// The signed string of section 6.2.
fn signed_string(hash: &[u8]) -> Vec<u8> {
    let mut out = SIG_DOMAIN.to_vec();
    out.extend_from_slice(hash);
    out
}

/// The profile signing bytes of section 11.1, built from the documented layout.
fn profile_signing_bytes(author: &[u8], lamport: u64, name: &str) -> Vec<u8> {
    let mut out = PROFILE_DOMAIN.to_vec();
    out.extend_from_slice(&(author.len() as u32).to_be_bytes());
    out.extend_from_slice(author);
    out.extend_from_slice(&lamport.to_be_bytes());
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// The public key embedded in a binary ed25519 peer id (section 6.3), taken from the
/// bytes alone.
fn embedded_key(peer_id: &[u8]) -> PublicKey {
    assert_eq!(
        &peer_id[..2],
        &[0x00, 0x24],
        "identity multihash of 36 bytes"
    );
    PublicKey::try_decode_protobuf(&peer_id[2..]).expect("protobuf-encoded public key")
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
    assert_eq!(g.code, GoodbyeCode::IncompatibleVersion.code());
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
        assert_eq!(code.code(), value);
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
    assert_eq!(w.skipped, 0, "field 10 omitted: default value");

    // The documented hash layout, computed independently of the crate.
    let input = hash_input(&w);
    assert_eq!(hex::encode(&input), MSG1_HASH_INPUT);
    assert_eq!(input.len(), 181);
    assert!(
        input.ends_with(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]),
        "F(u64_be(prev_seq = 0)) closes the input"
    );
    assert_eq!(hex::encode(Sha256::digest(&input)), MSG1_HASH);

    let m = Message::from_wire(w.clone()).expect("valid message");
    assert_eq!(hex::encode(m.hash()), MSG1_HASH);
    assert_eq!(m.prev(), &[0u8; 32]);
    assert_eq!(m.prev_seq(), 0);
    assert_eq!(m.author(), PeerId::from_bytes(&w.author).unwrap());
    assert_eq!(m.seq(), 1);
    assert_eq!(m.lamport(), 1);
    assert_eq!(m.text(), "hello, echo");
    assert_eq!(
        m.signature().map(hex::encode).as_deref(),
        Some(MSG1_SIGNATURE)
    );
    assert!(m.verify_signature());
    assert_eq!(
        m.to_wire(),
        w,
        "Message::encode gives back the wire message"
    );
    assert_eq!(
        Message::decode(&m.encode()).unwrap(),
        m,
        "encode/decode round-trip"
    );

    // The signed string, and ed25519 determinism: signing it again gives the vector.
    let signed = signed_string(m.hash());
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
    let forged = Message::from_wire(w).expect("still well-formed");
    assert_ne!(hex::encode(forged.hash()), MSG1_HASH);
    assert!(forged.signature().is_some());
    assert!(!forged.verify_signature());
}

#[test]
fn unsigned_chained_message_vector() {
    let first = Message::from_wire(room_message(decode_frame(MSG1_FRAME))).unwrap();
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
    assert_eq!(w.skipped, 0);

    assert_eq!(hex::encode(Sha256::digest(hash_input(&w))), MSG2_HASH);
    let m = Message::from_wire(w.clone()).expect("valid message");
    assert_eq!(hex::encode(m.hash()), MSG2_HASH);
    assert_eq!(m.prev(), first.hash(), "chained to the first message");
    assert_eq!(m.prev_seq(), 1);
    assert_eq!(m.to_wire(), w);
    assert_eq!(m.signature(), None);
    assert!(!m.verify_signature(), "no signature of its own");
}

#[test]
fn skipped_numbers_message_vector() {
    let second = Message::from_wire(room_message(decode_frame(MSG2_FRAME))).unwrap();
    let w = room_message(decode_frame(MSG3_FRAME));
    assert_eq!(hex::encode(&w.author), AUTHOR_PEER_ID_BYTES);
    assert_eq!(w.room, "general");
    assert_eq!(w.seq, 1001);
    assert_eq!(w.lamport, 3);
    assert_eq!(w.sent_at_ms, 1_700_000_002_000);
    assert_eq!(w.name, "alice");
    assert_eq!(w.text, "back after a restart");
    assert_eq!(hex::encode(&w.prev), MSG2_HASH);
    assert_eq!(w.skipped, 998);
    assert_eq!(hex::encode(&w.signature), MSG3_SIGNATURE);

    let input = hash_input(&w);
    assert_eq!(hex::encode(&input), MSG3_HASH_INPUT);
    assert_eq!(input.len(), 190);
    assert!(
        input.ends_with(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 2]),
        "F(u64_be(prev_seq = 2)) closes the input"
    );
    assert_eq!(hex::encode(Sha256::digest(&input)), MSG3_HASH);

    let m = Message::from_wire(w.clone()).expect("valid message");
    assert_eq!(hex::encode(m.hash()), MSG3_HASH);
    assert_eq!(m.seq(), 1001);
    assert_eq!(m.prev_seq(), 2, "prev_seq = seq - 1 - skipped");
    assert_eq!(m.prev(), second.hash(), "names message 2 of the chain");
    assert_eq!(
        m.signature().map(hex::encode).as_deref(),
        Some(MSG3_SIGNATURE)
    );
    assert!(m.verify_signature());
    assert_eq!(m.to_wire(), w, "Message::encode gives back `skipped`");

    let signed = signed_string(m.hash());
    let key = author_key();
    assert!(key.public().verify(&signed, &w.signature));
    assert_eq!(hex::encode(key.sign(&signed).unwrap()), MSG3_SIGNATURE);
}

#[test]
fn skipped_count_is_authenticated() {
    // `skipped` is not hashed itself, but `prev_seq` is: a relay that changes it
    // changes the hash, and the signature no longer verifies.
    let mut w = room_message(decode_frame(MSG3_FRAME));
    w.skipped = 997;
    let m = Message::from_wire(w).expect("still well-formed");
    assert_eq!(m.prev_seq(), 3);
    assert_ne!(hex::encode(m.hash()), MSG3_HASH);
    assert!(m.signature().is_some());
    assert!(!m.verify_signature());
}

#[test]
fn chain_link_rules() {
    let base = room_message(decode_frame(MSG3_FRAME));
    let decode = |f: &dyn Fn(&mut wire::RoomMessage)| {
        let mut w = base.clone();
        f(&mut w);
        Message::from_wire(w)
    };
    // Section 6.4: `skipped` may reach down to 0 but not below.
    assert!(
        decode(&|w| w.skipped = 1001).is_err(),
        "prev_seq would be -1"
    );
    assert!(
        decode(&|w| w.skipped = 1000).is_err(),
        "prev_seq 0 needs a zero prev"
    );
    // A zero `prev` is allowed exactly when prev_seq = 0: the start of a segment.
    assert!(
        decode(&|w| w.prev = vec![0u8; 32].into()).is_err(),
        "zero prev with prev_seq 2"
    );
    let start = decode(&|w| {
        w.prev = vec![0u8; 32].into();
        w.skipped = 1000;
        w.signature = Default::default();
    })
    .expect("a chain segment starting at 1001");
    assert_eq!(start.prev_seq(), 0);
    assert_eq!(start.to_wire().skipped, 1000);
    let mid = decode(&|w| w.skipped = 999).expect("any prev_seq from 1 to seq - 1");
    assert_eq!(mid.prev_seq(), 1);
    assert!(decode(&|w| w.seq = 0).is_err(), "seq 0");
    assert!(decode(&|w| w.seq = 1 << 62).is_ok(), "largest seq: 2^62");
    assert!(
        decode(&|w| w.seq = (1 << 62) + 1).is_err(),
        "seq above 2^62"
    );
    assert!(
        decode(&|w| w.prev = vec![1u8; 31].into()).is_err(),
        "short prev"
    );
    assert!(
        decode(&|w| w.signature = vec![1u8; 63].into()).is_err(),
        "signature neither empty nor 64 bytes"
    );
}

#[test]
fn summary_vector() {
    let Some(Kind::Summary(sm)) = decode_frame(SUMMARY_FRAME).kind else {
        panic!("expected a summary");
    };
    assert_eq!(sm.room, "general");
    assert_eq!(sm.authors.len(), 2);
    let (second, first) = (&sm.authors[0], &sm.authors[1]);
    assert_eq!(hex::encode(&second.author), SECOND_AUTHOR_PEER_ID_BYTES);
    assert_eq!(second.floor, 40);
    assert_eq!(second.ranges, vec![40, 64]);
    assert_eq!(hex::encode(&first.author), AUTHOR_PEER_ID_BYTES);
    assert_eq!(first.floor, 0);
    assert_eq!(first.ranges, vec![1, 3, 1001, 1002]);
    // The second author is the key of seed [2; 32]; entries are listed in ascending
    // order of the binary peer id.
    let key2 = Keypair::ed25519_from_bytes([2u8; 32]).unwrap();
    assert_eq!(
        hex::encode(key2.public().to_peer_id().to_bytes()),
        SECOND_AUTHOR_PEER_ID_BYTES
    );
    assert!(second.author < first.author);
    let a = PeerId::from_bytes(&first.author).unwrap();
    let b = PeerId::from_bytes(&second.author).unwrap();
    assert!(b < a);
}

#[test]
fn request_vector() {
    let Some(Kind::Request(r)) = decode_frame(REQUEST_FRAME).kind else {
        panic!("expected a request");
    };
    assert_eq!(r.room, "general");
    assert_eq!(hex::encode(&r.author), AUTHOR_PEER_ID_BYTES);
    assert_eq!((r.start, r.end), (2, 3));
}

#[test]
fn signed_profile_vector() {
    let Some(Kind::Profile(p)) = decode_frame(PROFILE_FRAME).kind else {
        panic!("expected a profile");
    };
    assert_eq!(p.name, "alice");
    assert_eq!(hex::encode(&p.author), AUTHOR_PEER_ID_BYTES);
    assert_eq!(p.lamport, 7);
    assert_eq!(hex::encode(&p.signature), PROFILE_SIGNATURE);

    // The documented signing bytes, built from the frame's fields.
    let bytes = profile_signing_bytes(&p.author, p.lamport, &p.name);
    assert_eq!(hex::encode(&bytes), PROFILE_SIGNING_BYTES);
    assert_eq!(bytes.len(), 79);

    // Verified with the key embedded in `author`, and with the seed's key.
    assert!(embedded_key(&p.author).verify(&bytes, &p.signature));
    let key = author_key();
    assert_eq!(embedded_key(&p.author), key.public());
    assert!(key.public().verify(&bytes, &p.signature));
    assert_eq!(hex::encode(key.sign(&bytes).unwrap()), PROFILE_SIGNATURE);

    // Another Lamport time or name: the signature does not verify.
    let key = embedded_key(&p.author);
    let later = profile_signing_bytes(&p.author, 8, &p.name);
    assert!(!key.verify(&later, &p.signature));
    let renamed = profile_signing_bytes(&p.author, p.lamport, "alicf");
    assert!(!key.verify(&renamed, &p.signature));
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
    for domain in [HASH_DOMAIN, SIG_DOMAIN, PROFILE_DOMAIN] {
        let text = std::str::from_utf8(&domain[..domain.len() - 1]).unwrap();
        assert!(
            DOC.contains(&format!("\"{text}\\0\"")),
            "PROTOCOL.md lacks {text:?}"
        );
    }
}
