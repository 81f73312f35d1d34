//! The direct-message envelope: HPKE (RFC 9180) ciphertext to the recipient's prekey,
//! signed by the sender with ed25519 over every field but the hop count.
//!
//! Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, base mode, info
//! [`HPKE_INFO`], AAD = the sender's and the recipient's peer ids (length-prefixed). See
//! PROTOCOL.md section 18.

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use libp2p_identity::{Keypair, PeerId};
use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::message::public_key_of;

type Kem = X25519HkdfSha256;

/// HPKE `info` of every direct message.
pub const HPKE_INFO: &[u8] = b"echo-dm-v1";
/// Domain of the envelope signature.
pub const SIGN_DOMAIN: &[u8] = b"echo-dm-envelope-v1\0";
/// Domain of the prekey signature.
pub const PREKEY_DOMAIN: &[u8] = b"echo-dm-prekey-v1\0";
/// Domain of the prekey derivation from the identity secret.
const PREKEY_IKM_DOMAIN: &[u8] = b"echo-dm-prekey-ikm-v1\0";
/// Plaintexts are padded to a multiple of this many bytes (hides exact lengths).
pub const PAD: usize = 128;
/// Longest peer id accepted in an envelope (ed25519 ids are 38 bytes).
pub const MAX_ID_LEN: usize = 64;
/// Acknowledged sequence numbers per receipt.
pub const MAX_ACKS: usize = 64;
/// X25519 public key / encapsulated key length.
pub const KEY_LEN: usize = 32;
/// Ed25519 signature length.
pub const SIG_LEN: usize = 64;

/// A direct message envelope as it travels (frame kind 12).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    /// Sender's peer id, binary form.
    #[prost(bytes = "vec", tag = "1")]
    pub sender: Vec<u8>,
    /// Recipient's peer id, binary form (needed for routing).
    #[prost(bytes = "vec", tag = "2")]
    pub recipient: Vec<u8>,
    /// HPKE encapsulated key (32 bytes).
    #[prost(bytes = "vec", tag = "3")]
    pub enc: Vec<u8>,
    /// HPKE ciphertext of an encoded, padded [`Body`].
    #[prost(bytes = "vec", tag = "4")]
    pub ciphertext: Vec<u8>,
    /// Ed25519 signature of the sender over [`Envelope::signed_bytes`].
    #[prost(bytes = "vec", tag = "5")]
    pub signature: Vec<u8>,
    /// Forwarding hops left (not signed; carriers decrement it).
    #[prost(uint32, tag = "6")]
    pub hops: u32,
}

/// The plaintext inside an envelope.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Body {
    /// Per-(sender, recipient) sequence number from 1; 0 for receipts.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// Sender's wall clock, ms since the Unix epoch.
    #[prost(uint64, tag = "2")]
    pub sent_at_ms: u64,
    /// The text (empty for receipts).
    #[prost(string, tag = "3")]
    pub text: String,
    /// 0: a message; 1: delivered receipt; 2: read receipt.
    #[prost(uint32, tag = "4")]
    pub receipt: u32,
    /// Sequence numbers a receipt covers.
    #[prost(uint64, repeated, tag = "5")]
    pub acks: Vec<u64>,
    /// The sender's prekey, so the recipient can answer (and send receipts).
    #[prost(bytes = "vec", tag = "6")]
    pub sender_prekey: Vec<u8>,
    /// The sender's signature of that prekey.
    #[prost(bytes = "vec", tag = "7")]
    pub sender_prekey_sig: Vec<u8>,
    /// Zero bytes up to the next multiple of [`PAD`].
    #[prost(bytes = "vec", tag = "15")]
    pub padding: Vec<u8>,
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DmError {
    /// Not a protobuf envelope.
    #[error("undecodable envelope")]
    Undecodable,
    /// A field has the wrong length or names no valid ed25519 peer id.
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    /// The signature does not verify.
    #[error("bad envelope signature")]
    BadSignature,
    /// Decryption failed (not for us, or altered).
    #[error("cannot decrypt")]
    Decrypt,
    /// The plaintext is not a valid body.
    #[error("malformed body")]
    BadBody,
}

/// An envelope whose fields and signature were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Sender.
    pub sender: PeerId,
    /// Recipient.
    pub recipient: PeerId,
    /// Envelope id: SHA-256 of the signed bytes.
    pub id: [u8; 32],
}

impl Envelope {
    /// The bytes the sender signs: everything but `hops` and the signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(
            SIGN_DOMAIN.len()
                + self.sender.len()
                + self.recipient.len()
                + 48
                + self.ciphertext.len(),
        );
        v.extend_from_slice(SIGN_DOMAIN);
        for f in [&self.sender, &self.recipient, &self.enc, &self.ciphertext] {
            v.extend_from_slice(&(f.len() as u32).to_be_bytes());
            v.extend_from_slice(f);
        }
        v
    }

    /// Checks lengths and ids (no signature check).
    pub fn check_shape(&self, max_ciphertext: usize) -> Result<(PeerId, PeerId), DmError> {
        if self.sender.len() > MAX_ID_LEN || self.recipient.len() > MAX_ID_LEN {
            return Err(DmError::Malformed("peer id too long"));
        }
        if self.enc.len() != KEY_LEN {
            return Err(DmError::Malformed("encapsulated key length"));
        }
        if self.signature.len() != SIG_LEN {
            return Err(DmError::Malformed("signature length"));
        }
        if self.ciphertext.len() > max_ciphertext || self.ciphertext.len() < 16 {
            return Err(DmError::Malformed("ciphertext length"));
        }
        let id = |b: &[u8]| {
            PeerId::from_bytes(b)
                .ok()
                .filter(|p| public_key_of(p).is_some())
        };
        let sender = id(&self.sender).ok_or(DmError::Malformed("sender"))?;
        let recipient = id(&self.recipient).ok_or(DmError::Malformed("recipient"))?;
        Ok((sender, recipient))
    }

    /// Checks lengths, ids and the sender's signature.
    pub fn check(&self, max_ciphertext: usize) -> Result<Checked, DmError> {
        let (sender, recipient) = self.check_shape(max_ciphertext)?;
        let signed = self.signed_bytes();
        let key = public_key_of(&sender).ok_or(DmError::Malformed("sender"))?;
        if !key.verify(&signed, &self.signature) {
            return Err(DmError::BadSignature);
        }
        Ok(Checked {
            sender,
            recipient,
            id: Sha256::digest(&signed).into(),
        })
    }
}

/// Decodes and checks an envelope from protobuf bytes; never panics.
pub fn decode(bytes: &[u8], max_ciphertext: usize) -> Result<(Envelope, Checked), DmError> {
    let env = Envelope::decode(bytes).map_err(|_| DmError::Undecodable)?;
    let checked = env.check(max_ciphertext)?;
    Ok((env, checked))
}

/// The longest ciphertext for texts of up to `max_text_len` bytes.
pub fn max_ciphertext(max_text_len: usize) -> usize {
    // Body fields' overhead (< 64 + acks), padding to PAD, the AEAD tag.
    (max_text_len + 64 + 2 * KEY_LEN + SIG_LEN + MAX_ACKS * 11).div_ceil(PAD) * PAD + PAD + 16
}

/// A node's prekey pair, derived from its identity (stable across restarts).
pub struct Prekey {
    secret: <Kem as hpke::Kem>::PrivateKey,
    /// The public key, published in the signed profile.
    pub public: [u8; KEY_LEN],
    /// Signature of the identity over [`prekey_bytes`].
    pub signature: Vec<u8>,
}

/// The bytes an identity signs to vouch for its prekey.
pub fn prekey_bytes(author: &PeerId, public: &[u8]) -> Vec<u8> {
    let author = author.to_bytes();
    let mut v = PREKEY_DOMAIN.to_vec();
    v.extend_from_slice(&(author.len() as u32).to_be_bytes());
    v.extend_from_slice(&author);
    v.extend_from_slice(public);
    v
}

/// Whether `sig` is `author`'s signature of prekey `public`.
pub fn verify_prekey(author: &PeerId, public: &[u8], sig: &[u8]) -> bool {
    public.len() == KEY_LEN
        && public_key_of(author)
            .is_some_and(|k| crate::message::verify_bytes(&k, &prekey_bytes(author, public), sig))
}

impl Prekey {
    /// Derives the prekey from the identity's ed25519 secret (RFC 9180 DeriveKeyPair).
    pub fn derive(key: &Keypair) -> Prekey {
        let mut h = Sha256::new();
        h.update(PREKEY_IKM_DOMAIN);
        if let Ok(k) = key.clone().try_into_ed25519() {
            h.update(k.secret().as_ref());
        }
        let (secret, public) = Kem::derive_keypair(&h.finalize());
        let mut pk = [0u8; KEY_LEN];
        pk.copy_from_slice(&public.to_bytes());
        let id = key.public().to_peer_id();
        let signature = key
            .sign(&prekey_bytes(&id, &pk))
            .expect("ed25519 signing does not fail");
        Prekey {
            secret,
            public: pk,
            signature,
        }
    }
}

fn aad(sender: &[u8], recipient: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(sender.len() + recipient.len() + 8);
    for f in [sender, recipient] {
        v.extend_from_slice(&(f.len() as u32).to_be_bytes());
        v.extend_from_slice(f);
    }
    v
}

/// Encodes `body` padded to a multiple of [`PAD`].
fn padded(mut body: Body) -> Vec<u8> {
    body.padding.clear();
    let bare = body.encoded_len();
    // Field 15 costs 1 tag byte + a 1-2 byte length: try the lengths that land on PAD.
    let target = (bare + 3).div_ceil(PAD) * PAD;
    for n in (0..=target.saturating_sub(bare + 2)).rev() {
        body.padding = vec![0; n];
        if body.encoded_len() == target {
            break;
        }
    }
    body.encode_to_vec()
}

/// Seals `body` from `key` to `recipient`'s prekey `prekey`, with `rng` for the ephemeral
/// key. `None` if the prekey is not a valid X25519 key.
pub(crate) fn seal(
    key: &Keypair,
    recipient: &PeerId,
    prekey: &[u8],
    body: Body,
    hops: u32,
    rng: &mut impl rand_core_hpke::CryptoRng,
) -> Option<Envelope> {
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(prekey).ok()?;
    let sender = key.public().to_peer_id().to_bytes();
    let recipient = recipient.to_bytes();
    let plain = padded(body);
    let (enc, ciphertext) = hpke::single_shot_seal_with_rng::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeS::Base,
        &pk,
        HPKE_INFO,
        &plain,
        &aad(&sender, &recipient),
        rng,
    )
    .ok()?;
    let mut env = Envelope {
        sender,
        recipient,
        enc: enc.to_bytes().to_vec(),
        ciphertext,
        signature: Vec::new(),
        hops,
    };
    env.signature = key.sign(&env.signed_bytes()).ok()?;
    Some(env)
}

/// Decrypts a checked envelope addressed to the owner of `prekey`.
pub fn open(prekey: &Prekey, env: &Envelope) -> Result<Body, DmError> {
    let enc =
        <Kem as hpke::Kem>::EncappedKey::from_bytes(&env.enc).map_err(|_| DmError::Decrypt)?;
    let plain = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeR::Base,
        &prekey.secret,
        &enc,
        HPKE_INFO,
        &env.ciphertext,
        &aad(&env.sender, &env.recipient),
    )
    .map_err(|_| DmError::Decrypt)?;
    let body = Body::decode(plain.as_slice()).map_err(|_| DmError::BadBody)?;
    if body.receipt > 2 || body.acks.len() > MAX_ACKS || (body.receipt == 0) != (body.seq > 0) {
        return Err(DmError::BadBody);
    }
    Ok(body)
}
