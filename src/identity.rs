//! A node's identity: an ed25519 keypair, the only kind echo uses.

use libp2p_identity::{ed25519, Keypair, PeerId};

/// Why a key cannot be an echo identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The bytes are not a protobuf-encoded private key.
    #[error("not a protobuf-encoded private key: {0}")]
    Malformed(String),
    /// The key is valid but not ed25519 (the name of its algorithm).
    #[error("echo identities are ed25519 keys; this key is {0}")]
    NotEd25519(String),
}

/// An ed25519 keypair identifying a node; its [`PeerId`] names the node on the network
/// and its key signs the node's messages and profile. The type makes a key of another
/// algorithm unrepresentable, so [`crate::Node::new`] cannot be handed one.
#[derive(Clone)]
pub struct Identity(ed25519::Keypair);

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Identity").field(&self.peer_id()).finish()
    }
}

impl Identity {
    /// A fresh identity from the operating system's randomness (for apps; the node
    /// itself never asks the OS for randomness).
    pub fn generate() -> Self {
        Identity(ed25519::Keypair::generate())
    }

    /// The identity whose ed25519 secret key is `secret` (32 bytes).
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        let mut s = secret;
        let sk = ed25519::SecretKey::try_from_bytes(&mut s).expect("32 bytes is a valid secret");
        Identity(ed25519::Keypair::from(sk))
    }

    /// Reads a key file written by [`Identity::to_protobuf_encoding`] (the libp2p
    /// protobuf private-key encoding); refuses keys of other algorithms.
    pub fn from_protobuf_encoding(bytes: &[u8]) -> Result<Self, IdentityError> {
        let key = Keypair::from_protobuf_encoding(bytes)
            .map_err(|e| IdentityError::Malformed(e.to_string()))?;
        Self::try_from(key)
    }

    /// The libp2p protobuf private-key encoding, e.g. for a key file.
    pub fn to_protobuf_encoding(&self) -> Vec<u8> {
        self.keypair()
            .to_protobuf_encoding()
            .expect("ed25519 keys encode")
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.keypair().public().to_peer_id()
    }

    /// The key as a generic libp2p keypair (e.g. for the transport's noise handshake).
    pub fn keypair(&self) -> Keypair {
        Keypair::from(self.0.clone())
    }
}

impl From<ed25519::Keypair> for Identity {
    fn from(k: ed25519::Keypair) -> Self {
        Identity(k)
    }
}

impl TryFrom<Keypair> for Identity {
    type Error = IdentityError;

    fn try_from(k: Keypair) -> Result<Self, IdentityError> {
        let ty = format!("{:?}", k.key_type());
        k.try_into_ed25519()
            .map(Identity)
            .map_err(|_| IdentityError::NotEd25519(ty))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_roundtrip_and_peer_id() {
        let id = Identity::from_secret_bytes([7; 32]);
        let back = Identity::from_protobuf_encoding(&id.to_protobuf_encoding()).unwrap();
        assert_eq!(back.peer_id(), id.peer_id());
        assert_eq!(
            Identity::from_protobuf_encoding(b"junk").unwrap_err(),
            IdentityError::Malformed(
                Keypair::from_protobuf_encoding(b"junk")
                    .unwrap_err()
                    .to_string()
            )
        );
    }
}
