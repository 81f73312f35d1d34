//! The direct-message test vectors of `PROTOCOL.md`, section 18.7, checked against the
//! implementation: every hex string here also appears verbatim in `PROTOCOL.md`.

use echo_proto::dm::envelope::{self, Body, Prekey};
use echo_proto::dm::seal_seeded;
use echo_proto::Identity;
use prost::Message as _;

const DOC: &str = include_str!("../PROTOCOL.md");

/// Sender: seed `[1u8; 32]`; recipient: seed `[2u8; 32]`; RNG seed `[7u8; 32]`.
fn vector() -> (Vec<String>, String) {
    let alice = Identity::from_secret_bytes([1; 32]).keypair();
    let bob = Identity::from_secret_bytes([2; 32]).keypair();
    let bob_prekey = Prekey::derive(&bob);
    let alice_prekey = Prekey::derive(&alice);
    let body = Body {
        seq: 1,
        sent_at_ms: 1_700_000_000_000,
        text: "hi bob".into(),
        sender_prekey: alice_prekey.public.to_vec(),
        sender_prekey_sig: alice_prekey.signature.clone(),
        ..Body::default()
    };
    let to = bob.public().to_peer_id();
    let env = seal_seeded(&alice, &to, &bob_prekey.public, body, 3, [7; 32]).unwrap();
    let (_, checked) = envelope::decode(&env.encode_to_vec(), 64 * 1024).unwrap();
    let opened = envelope::open(&bob_prekey, &env).unwrap();
    assert_eq!(opened.text, "hi bob");
    assert_eq!(opened.encoded_len() % envelope::PAD, 0);
    let parts = vec![
        hex::encode(bob_prekey.public),
        hex::encode(&bob_prekey.signature),
        hex::encode(&env.enc),
        hex::encode(&env.ciphertext),
        hex::encode(&env.signature),
        hex::encode(checked.id),
    ];
    (parts, hex::encode(env.encode_to_vec()))
}

#[test]
fn envelope_vector_matches_protocol_md() {
    let (parts, whole) = vector();
    if std::env::var_os("DM_VECTORS_PRINT").is_some() {
        println!("{parts:#?}\n{whole}");
    }
    for p in parts.iter().chain([&whole]) {
        assert!(DOC.contains(p.as_str()), "PROTOCOL.md lacks {p}");
    }
}

#[test]
fn altering_any_signed_byte_of_the_vector_is_refused() {
    let alice = Identity::from_secret_bytes([1; 32]).keypair();
    let bob = Identity::from_secret_bytes([2; 32]).keypair();
    let pk = Prekey::derive(&bob);
    let to = bob.public().to_peer_id();
    let body = Body {
        seq: 1,
        text: "hi bob".into(),
        ..Body::default()
    };
    let env = seal_seeded(&alice, &to, &pk.public, body, 3, [7; 32]).unwrap();
    let bytes = env.encode_to_vec();
    let mut refused = 0;
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        match envelope::decode(&b, 64 * 1024) {
            Err(_) => refused += 1,
            // Only the unsigned hop count may change.
            Ok((e, _)) => assert_ne!(e.hops, env.hops, "byte {i} altered undetected"),
        }
    }
    assert_eq!(refused, bytes.len() - 1);
}
