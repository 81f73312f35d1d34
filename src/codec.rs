//! Length-prefixed framing: `unsigned-varint(len) ‖ payload`.
//!
//! The decoder follows tokio-util's `Decoder` contract: [`FrameDecoder::decode`] returns
//! `Ok(Some(frame))` for a complete frame, `Ok(None)` when it needs more bytes and `Err`
//! when the stream is corrupt (after which the connection must be closed). A length
//! prefix larger than the configured maximum is rejected as soon as the prefix itself has
//! arrived, before any buffer for the payload is reserved.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The longest varint the decoder accepts for a length prefix (covers lengths < 2^35).
const MAX_VARINT_LEN: usize = 5;

/// Why a byte stream cannot be decoded any further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more bytes than the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced payload length.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// The length prefix is not a minimal unsigned varint of at most five bytes.
    #[error("malformed length prefix")]
    BadPrefix,
}

/// Appends `value` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// Number of bytes [`put_varint`] writes for `value`.
pub fn varint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads a varint from the front of `buf` without consuming it.
///
/// Returns `Ok(None)` if `buf` ends inside the varint, `Ok(Some((value, prefix_len)))`
/// otherwise. Rejects non-minimal encodings and varints longer than five bytes.
pub fn peek_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, FrameError> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(MAX_VARINT_LEN) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            // Minimal encoding: a multi-byte varint never ends in a zero byte.
            if i > 0 && b == 0 {
                return Err(FrameError::BadPrefix);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        return Err(FrameError::BadPrefix);
    }
    Ok(None)
}

/// Appends one frame (length prefix and payload) to `out`.
pub fn encode_frame(out: &mut BytesMut, payload: &[u8]) {
    out.reserve(varint_len(payload.len() as u64) + payload.len());
    put_varint(out, payload.len() as u64);
    out.put_slice(payload);
}

/// A whole frame's payload and the bytes after it ([`FrameDecoder::split_whole`]).
pub type Split<'a> = (&'a [u8], &'a [u8]);

/// Incremental decoder of length-prefixed frames. Feed it bytes in any chunking.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_len: usize,
}

impl FrameDecoder {
    /// A decoder that rejects payloads longer than `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_len,
        }
    }

    /// Appends received bytes to the internal buffer.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The length prefix at the start of `data`, checked as [`FrameDecoder::decode`]
    /// checks it: `(prefix length, payload length)`, or `None` if `data` ends inside
    /// the prefix.
    fn header(&self, data: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
        let Some((len, prefix)) = peek_varint(data)? else {
            return Ok(None);
        };
        if len > self.max_len as u64 {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        Ok(Some((prefix, len as usize)))
    }

    /// The first complete frame's payload in `data` and the bytes after it, read in place
    /// (no copy), when nothing is buffered; `None` if nothing is buffered and `data` does
    /// not start with a whole frame (or if something is buffered: feed the decoder
    /// instead). Errors as [`FrameDecoder::decode`] would give them for the same bytes.
    pub fn split_whole<'a>(&self, data: &'a [u8]) -> Result<Option<Split<'a>>, FrameError> {
        if !self.buf.is_empty() {
            return Ok(None);
        }
        let Some((prefix, len)) = self.header(data)? else {
            return Ok(None);
        };
        match data.get(prefix..prefix + len) {
            Some(payload) => Ok(Some((payload, &data[prefix + len..]))),
            None => Ok(None),
        }
    }

    /// Bytes the buffered frame still lacks, once its length prefix is buffered whole.
    pub fn missing(&self) -> Result<Option<usize>, FrameError> {
        Ok(self
            .header(&self.buf)?
            .map(|(prefix, len)| (prefix + len).saturating_sub(self.buf.len())))
    }

    /// Takes the next complete frame's payload out of the buffer.
    pub fn decode(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some((prefix, len)) = self.header(&self.buf)? else {
            return Ok(None);
        };
        if self.buf.len() < prefix + len {
            // Reserve only what the (already bounded) frame still needs.
            self.buf.reserve(prefix + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(prefix);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    fn encode_all(frames: &[Vec<u8>]) -> BytesMut {
        let mut out = BytesMut::new();
        for f in frames {
            encode_frame(&mut out, f);
        }
        out
    }

    #[test]
    fn varint_roundtrip_and_len() {
        for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, u32::MAX as u64] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            if b.len() <= MAX_VARINT_LEN {
                assert_eq!(peek_varint(&b).unwrap(), Some((v, b.len())));
            }
        }
    }

    #[test]
    fn rejects_non_minimal_and_long_prefixes() {
        assert_eq!(peek_varint(&[0x80, 0x00]), Err(FrameError::BadPrefix));
        assert_eq!(
            peek_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(FrameError::BadPrefix)
        );
        assert_eq!(peek_varint(&[0x80]), Ok(None));
    }

    #[test]
    fn oversized_length_rejected_before_payload() {
        let mut d = FrameDecoder::new(1024);
        let mut prefix = Vec::new();
        put_varint(&mut prefix, 1 << 30);
        d.extend(&prefix);
        assert!(matches!(d.decode(), Err(FrameError::TooLarge { .. })));
        // Nothing near the announced size was reserved.
        assert!(d.buf.capacity() < 1 << 20);
    }

    #[test]
    fn empty_frame() {
        let mut d = FrameDecoder::new(16);
        d.extend(&[0]);
        assert_eq!(d.decode().unwrap().unwrap().len(), 0);
        assert_eq!(d.decode().unwrap(), None);
    }

    quickcheck! {
        fn any_chunking_decodes_same(frames: Vec<Vec<u8>>, cuts: Vec<u8>) -> bool {
            let wire = encode_all(&frames);
            let mut d = FrameDecoder::new(1 << 20);
            let mut out = Vec::new();
            let mut pos = 0;
            let mut cuts = cuts.into_iter().map(|c| c as usize % 7);
            while pos < wire.len() {
                let step = cuts.next().unwrap_or(3).max(1).min(wire.len() - pos);
                d.extend(&wire[pos..pos + step]);
                pos += step;
                while let Some(f) = d.decode().unwrap() {
                    out.push(f.to_vec());
                }
            }
            out == frames && d.buffered() == 0
        }

        /// Reading whole frames in place, then buffering the rest, gives the same frames.
        fn in_place_then_buffered_decodes_same(frames: Vec<Vec<u8>>, cuts: Vec<u8>) -> bool {
            let wire = encode_all(&frames);
            let mut d = FrameDecoder::new(1 << 20);
            let mut out = Vec::new();
            let mut pos = 0;
            let mut cuts = cuts.into_iter().map(|c| c as usize % 300);
            while pos < wire.len() {
                let step = cuts.next().unwrap_or(3).max(1).min(wire.len() - pos);
                let mut data = &wire[pos..pos + step];
                pos += step;
                while let Some((f, rest)) = d.split_whole(data).unwrap() {
                    out.push(f.to_vec());
                    data = rest;
                }
                d.extend(data);
                while let Some(f) = d.decode().unwrap() {
                    out.push(f.to_vec());
                }
            }
            out == frames && d.buffered() == 0
        }
    }
}
