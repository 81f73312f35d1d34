//! An offer of a blob, as carried (later) inside a signed room message.

use bytes::{BufMut, BytesMut};

use super::hash::BlobHash;

/// Longest file name an offer may carry, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 255;
/// Longest MIME type an offer may carry, in bytes.
pub const MAX_MIME_LEN: usize = 127;
const OFFER_VERSION: u8 = 1;

/// A file offered for download: what it is and how to check it.
///
/// The name is whatever the offerer typed: the app must sanitise it before using it as
/// a path. The encoding is canonical ([`Offer::encode`] ∘ [`Offer::decode`] is the
/// identity on accepted bytes), so it can be signed inside a room message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// BLAKE3 root hash of the content.
    pub hash: BlobHash,
    /// Size in bytes.
    pub size: u64,
    /// Suggested file name (UTF-8, 1..=[`MAX_NAME_LEN`] bytes, no control characters).
    pub name: String,
    /// MIME type (ASCII, 0..=[`MAX_MIME_LEN`] bytes, e.g. `image/png`; empty = unknown).
    pub mime: String,
}

/// Why bytes are not a valid offer (or an offer cannot be encoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// Too short, trailing bytes, or an unknown version.
    #[error("malformed offer")]
    Malformed,
    /// The name is empty, too long, not UTF-8 or contains control characters.
    #[error("bad file name")]
    BadName,
    /// The MIME type is too long or not printable ASCII.
    #[error("bad mime type")]
    BadMime,
}

impl Offer {
    /// The short id shown to users (`/get ID`): the first 8 hex digits of the hash.
    pub fn short_id(&self) -> String {
        self.hash.to_hex()[..8].to_string()
    }

    fn check(&self) -> Result<(), OfferError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_NAME_LEN
            && !self.name.chars().any(char::is_control);
        if !name_ok {
            return Err(OfferError::BadName);
        }
        let mime_ok =
            self.mime.len() <= MAX_MIME_LEN && self.mime.bytes().all(|b| b.is_ascii_graphic());
        if !mime_ok {
            return Err(OfferError::BadMime);
        }
        Ok(())
    }

    /// Canonical bytes: `version=1 ‖ hash(32) ‖ size(u64 BE) ‖ name_len(u8) ‖ name ‖
    /// mime_len(u8) ‖ mime`.
    pub fn encode(&self) -> Result<Vec<u8>, OfferError> {
        self.check()?;
        let mut out = BytesMut::with_capacity(43 + self.name.len() + self.mime.len());
        out.put_u8(OFFER_VERSION);
        out.put_slice(&self.hash.0);
        out.put_u64(self.size);
        out.put_u8(self.name.len() as u8);
        out.put_slice(self.name.as_bytes());
        out.put_u8(self.mime.len() as u8);
        out.put_slice(self.mime.as_bytes());
        Ok(out.to_vec())
    }

    /// Parses canonical bytes; anything else (trailing bytes included) is an error.
    pub fn decode(b: &[u8]) -> Result<Self, OfferError> {
        let m = OfferError::Malformed;
        if b.len() < 42 || b[0] != OFFER_VERSION {
            return Err(m);
        }
        let hash = BlobHash(b[1..33].try_into().map_err(|_| m.clone())?);
        let size = u64::from_be_bytes(b[33..41].try_into().map_err(|_| m.clone())?);
        let name_len = b[41] as usize;
        let rest = &b[42..];
        if rest.len() < name_len + 1 {
            return Err(m);
        }
        let name = std::str::from_utf8(&rest[..name_len]).map_err(|_| OfferError::BadName)?;
        let mime_len = rest[name_len] as usize;
        let mime = &rest[name_len + 1..];
        if mime.len() != mime_len {
            return Err(m);
        }
        let mime = std::str::from_utf8(mime).map_err(|_| OfferError::BadMime)?;
        let offer = Offer {
            hash,
            size,
            name: name.to_string(),
            mime: mime.to_string(),
        };
        offer.check()?;
        Ok(offer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_encoding_is_canonical_and_checked() {
        let o = Offer {
            hash: BlobHash::of(b"hello"),
            size: 5,
            name: "hello.txt".into(),
            mime: "text/plain".into(),
        };
        let b = o.encode().unwrap();
        assert_eq!(Offer::decode(&b).unwrap(), o);
        assert_eq!(o.short_id(), "ea8f163d");
        let mut trailing = b.clone();
        trailing.push(0);
        assert_eq!(Offer::decode(&trailing), Err(OfferError::Malformed));
        for cut in 0..b.len() {
            assert!(Offer::decode(&b[..cut]).is_err());
        }
        let bad_name = |name: &str| {
            Offer {
                name: name.into(),
                ..o.clone()
            }
            .encode()
        };
        assert_eq!(bad_name(""), Err(OfferError::BadName));
        assert_eq!(bad_name("a\nb"), Err(OfferError::BadName));
        assert_eq!(bad_name(&"x".repeat(256)), Err(OfferError::BadName));
        assert!(bad_name(&"x".repeat(255)).is_ok());
        let bad_mime = Offer {
            mime: "text/plain; a b".into(),
            ..o.clone()
        };
        assert_eq!(bad_mime.encode(), Err(OfferError::BadMime));
    }
}
