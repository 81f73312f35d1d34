//! Direct-message envelopes: the decoder and the decryption path.
//!
//! The first input byte picks the mode:
//! * even: the rest is raw envelope bytes: `envelope::decode` never panics, and what it
//!   accepts re-encodes to an envelope that checks the same (same id); opening it with
//!   the recipient's prekey never panics;
//! * odd: a valid envelope from a fixed sender to a fixed recipient, sealed with the text
//!   from the input, then altered at the position and with the xor mask from the input:
//!   the recipient opens the unaltered one to the same text, and any altered signed byte
//!   makes `decode` refuse it.
#![no_main]

use std::sync::OnceLock;

use echo_proto::dm::envelope::{self, Body, Envelope, Prekey};
use echo_proto::dm::seal_seeded;
use echo_proto::sim::keypair;
use libfuzzer_sys::fuzz_target;
use libp2p_identity::Keypair;
use prost::Message as _;

const MAX_CT: usize = 64 * 1024;

struct Keys {
    sender: Keypair,
    recipient: Keypair,
    prekey: Prekey,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        let recipient = keypair(2);
        Keys {
            sender: keypair(1),
            prekey: Prekey::derive(&recipient),
            recipient,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let k = keys();
    if mode % 2 == 0 {
        if let Ok((env, checked)) = envelope::decode(rest, MAX_CT) {
            let again = env.encode_to_vec();
            let (_, c2) = envelope::decode(&again, MAX_CT).expect("re-encoded envelope checks");
            assert_eq!(checked, c2);
            let _ = envelope::open(&k.prekey, &env);
        }
        return;
    }
    if rest.len() < 4 {
        return;
    }
    let (pos, mask, text) = (
        u16::from_le_bytes([rest[0], rest[1]]) as usize,
        rest[2],
        String::from_utf8_lossy(&rest[3..]).into_owned(),
    );
    let body = Body {
        seq: 1,
        text: text.clone(),
        ..Body::default()
    };
    let to = k.recipient.public().to_peer_id();
    let env: Envelope =
        seal_seeded(&k.sender, &to, &k.prekey.public, body, 3, [mask; 32]).expect("sealed");
    let bytes = env.encode_to_vec();
    let (ok, _) = envelope::decode(&bytes, MAX_CT).expect("valid envelope");
    assert_eq!(envelope::open(&k.prekey, &ok).expect("opens").text, text);
    if mask == 0 {
        return;
    }
    let mut altered = env.clone();
    let fields: [&mut Vec<u8>; 3] = [
        &mut altered.enc,
        &mut altered.ciphertext,
        &mut altered.signature,
    ];
    let total: usize = fields.iter().map(|f| f.len()).sum();
    let mut p = pos % total;
    for f in fields {
        if p < f.len() {
            f[p] ^= mask;
            break;
        }
        p -= f.len();
    }
    assert!(envelope::decode(&altered.encode_to_vec(), MAX_CT).is_err());
});
