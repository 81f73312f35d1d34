//! Frames of the blob substream: `unsigned-varint(len) ‖ type ‖ body`.
//!
//! Every frame's length is checked against [`MAX_FRAME_LEN`] as soon as its prefix has
//! arrived, before anything is buffered for it, and every body must have exactly the
//! length its type implies.

use bytes::{BufMut, Bytes, BytesMut};

use super::hash::{BlobHash, GROUP_SIZE};
use crate::codec::{put_varint, FrameDecoder};

/// Largest frame payload: a leaf frame with a full chunk group.
pub const MAX_FRAME_LEN: usize = 1 + 4 + 4 + GROUP_SIZE as usize;
/// Most group intervals one request may ask for.
pub const MAX_RANGES: usize = 16;

/// A half-open interval of chunk-group numbers.
pub type GroupRange = std::ops::Range<u64>;

const T_REQUEST: u8 = 0x01;
const T_CANCEL: u8 = 0x02;
const T_HEADER: u8 = 0x10;
const T_PARENT: u8 = 0x11;
const T_LEAF: u8 = 0x12;
const T_DONT_HAVE: u8 = 0x13;
const T_ERROR: u8 = 0x14;

/// Why a provider turned a request down ([`BlobFrame::Error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Too many concurrent requests from this peer, or too many peers.
    Busy,
    /// The request is malformed (ranges outside the blob, ...).
    BadRequest,
    /// The provider's storage failed while serving.
    Internal,
    /// A code this version does not know.
    Other(u8),
}

impl ErrorCode {
    fn to_u8(self) -> u8 {
        match self {
            ErrorCode::Busy => 1,
            ErrorCode::BadRequest => 2,
            ErrorCode::Internal => 3,
            ErrorCode::Other(c) => c,
        }
    }

    fn from_u8(c: u8) -> Self {
        match c {
            1 => ErrorCode::Busy,
            2 => ErrorCode::BadRequest,
            3 => ErrorCode::Internal,
            c => ErrorCode::Other(c),
        }
    }
}

/// One frame of the blob protocol. `id` is chosen by the requester and names the
/// request a response frame belongs to; several requests may be interleaved on one
/// substream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobFrame {
    /// Requester → provider: send the groups `ranges` of blob `hash`.
    Request {
        /// Request id.
        id: u32,
        /// The blob.
        hash: BlobHash,
        /// Sorted, disjoint, non-adjacent, non-empty group intervals (1..=[`MAX_RANGES`]).
        ranges: Vec<GroupRange>,
    },
    /// Requester → provider: stop sending request `id`.
    Cancel {
        /// Request id.
        id: u32,
    },
    /// Provider → requester: first frame of a response, the blob's size in bytes.
    Header {
        /// Request id.
        id: u32,
        /// Blob size.
        size: u64,
    },
    /// Provider → requester: a tree node (left ‖ right child chaining values).
    Parent {
        /// Request id.
        id: u32,
        /// Position in the response (the header is 0, the first node or group 1).
        seq: u32,
        /// Left and right child hashes.
        pair: [u8; 64],
    },
    /// Provider → requester: one chunk group's bytes (1..=16 KiB).
    Leaf {
        /// Request id.
        id: u32,
        /// Position in the response (the header is 0, the first node or group 1).
        seq: u32,
        /// The group's bytes.
        data: Bytes,
    },
    /// Provider → requester: this provider does not have the blob.
    DontHave {
        /// Request id.
        id: u32,
    },
    /// Provider → requester: the request was refused or aborted.
    Error {
        /// Request id.
        id: u32,
        /// Why.
        code: ErrorCode,
    },
}

/// Why a blob byte stream cannot be decoded further (close the substream).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A length prefix is malformed or announces more than [`MAX_FRAME_LEN`].
    #[error("framing: {0}")]
    Framing(#[from] crate::codec::FrameError),
    /// Empty frame, unknown type or a body of the wrong length.
    #[error("malformed blob frame (type {0:#04x})")]
    Malformed(u8),
    /// A request's ranges are empty, unsorted, overlapping or too many.
    #[error("bad request ranges")]
    BadRanges,
}

impl BlobFrame {
    /// Appends the frame, length prefix included, to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let len = self.payload_len();
        out.reserve(crate::codec::varint_len(len as u64) + len);
        put_varint(out, len as u64);
        let body = out;
        match self {
            BlobFrame::Request { id, hash, ranges } => {
                body.put_u8(T_REQUEST);
                body.put_u32(*id);
                body.put_slice(&hash.0);
                body.put_u8(ranges.len() as u8);
                for r in ranges {
                    body.put_u64(r.start);
                    body.put_u64(r.end);
                }
            }
            BlobFrame::Cancel { id } => {
                body.put_u8(T_CANCEL);
                body.put_u32(*id);
            }
            BlobFrame::Header { id, size } => {
                body.put_u8(T_HEADER);
                body.put_u32(*id);
                body.put_u64(*size);
            }
            BlobFrame::Parent { id, seq, pair } => {
                body.put_u8(T_PARENT);
                body.put_u32(*id);
                body.put_u32(*seq);
                body.put_slice(pair);
            }
            BlobFrame::Leaf { id, seq, data } => {
                body.put_u8(T_LEAF);
                body.put_u32(*id);
                body.put_u32(*seq);
                body.put_slice(data);
            }
            BlobFrame::DontHave { id } => {
                body.put_u8(T_DONT_HAVE);
                body.put_u32(*id);
            }
            BlobFrame::Error { id, code } => {
                body.put_u8(T_ERROR);
                body.put_u32(*id);
                body.put_u8(code.to_u8());
            }
        }
    }

    /// Length of the payload (type and body, without the length prefix).
    fn payload_len(&self) -> usize {
        match self {
            BlobFrame::Request { ranges, .. } => 1 + 4 + 32 + 1 + 16 * ranges.len(),
            BlobFrame::Cancel { .. } | BlobFrame::DontHave { .. } => 5,
            BlobFrame::Header { .. } => 13,
            BlobFrame::Parent { .. } => 1 + 4 + 4 + 64,
            BlobFrame::Leaf { data, .. } => 1 + 4 + 4 + data.len(),
            BlobFrame::Error { .. } => 6,
        }
    }

    /// The frame's bytes, length prefix included.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }

    /// Parses one frame payload (without its length prefix).
    pub fn parse(payload: &[u8]) -> Result<Self, FrameError> {
        Self::parse_bytes(&Bytes::copy_from_slice(payload))
    }

    /// [`BlobFrame::parse`] without copying a leaf's data out of `payload`.
    fn parse_bytes(whole: &Bytes) -> Result<Self, FrameError> {
        let payload = &whole[..];
        let (&ty, body) = payload.split_first().ok_or(FrameError::Malformed(0))?;
        let bad = FrameError::Malformed(ty);
        if body.len() < 4 {
            return Err(bad);
        }
        let id = u32::from_be_bytes(body[..4].try_into().expect("4 bytes"));
        let rest = &body[4..];
        let u32_at = |b: &[u8]| u32::from_be_bytes(b[..4].try_into().expect("4"));
        let u64_at = |b: &[u8], at: usize| u64::from_be_bytes(b[at..at + 8].try_into().expect("8"));
        let frame = match ty {
            T_REQUEST => {
                if rest.len() < 33 {
                    return Err(bad);
                }
                let hash = BlobHash(rest[..32].try_into().expect("32 bytes"));
                let n = rest[32] as usize;
                let list = &rest[33..];
                if n == 0 || n > MAX_RANGES {
                    return Err(FrameError::BadRanges);
                }
                if list.len() != n * 16 {
                    return Err(bad);
                }
                let mut ranges: Vec<GroupRange> = Vec::with_capacity(n);
                for i in 0..n {
                    let r = u64_at(list, i * 16)..u64_at(list, i * 16 + 8);
                    let after_prev = ranges.last().is_none_or(|p| p.end < r.start);
                    if r.is_empty() || !after_prev {
                        return Err(FrameError::BadRanges);
                    }
                    ranges.push(r);
                }
                BlobFrame::Request { id, hash, ranges }
            }
            T_CANCEL if rest.is_empty() => BlobFrame::Cancel { id },
            T_HEADER if rest.len() == 8 => BlobFrame::Header {
                id,
                size: u64_at(rest, 0),
            },
            T_PARENT if rest.len() == 4 + 64 => BlobFrame::Parent {
                id,
                seq: u32_at(rest),
                pair: rest[4..].try_into().expect("64 bytes"),
            },
            T_LEAF if rest.len() > 4 && rest.len() <= 4 + GROUP_SIZE as usize => BlobFrame::Leaf {
                id,
                seq: u32_at(rest),
                data: whole.slice(9..),
            },
            T_DONT_HAVE if rest.is_empty() => BlobFrame::DontHave { id },
            T_ERROR if rest.len() == 1 => BlobFrame::Error {
                id,
                code: ErrorCode::from_u8(rest[0]),
            },
            _ => return Err(bad),
        };
        Ok(frame)
    }

    /// The request id the frame belongs to.
    pub fn id(&self) -> u32 {
        match self {
            BlobFrame::Request { id, .. }
            | BlobFrame::Cancel { id }
            | BlobFrame::Header { id, .. }
            | BlobFrame::Parent { id, .. }
            | BlobFrame::Leaf { id, .. }
            | BlobFrame::DontHave { id }
            | BlobFrame::Error { id, .. } => *id,
        }
    }
}

/// Incremental decoder of blob frames (tokio-util `Decoder` contract: `Ok(None)` =
/// need more bytes, `Err` = corrupt stream, close it).
#[derive(Debug)]
pub struct BlobDecoder {
    inner: FrameDecoder,
}

impl Default for BlobDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl BlobDecoder {
    /// A decoder with the [`MAX_FRAME_LEN`] cap.
    pub fn new() -> Self {
        BlobDecoder {
            inner: FrameDecoder::new(MAX_FRAME_LEN),
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.inner.extend(data);
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.inner.buffered()
    }

    /// The next complete frame, if any.
    pub fn decode(&mut self) -> Result<Option<BlobFrame>, FrameError> {
        match self.inner.decode()? {
            None => Ok(None),
            Some(payload) => BlobFrame::parse_bytes(&payload).map(Some),
        }
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn all_kinds() -> Vec<BlobFrame> {
        vec![
            BlobFrame::Request {
                id: 7,
                hash: BlobHash([3; 32]),
                ranges: vec![0..2, 5..9],
            },
            BlobFrame::Cancel { id: 1 },
            BlobFrame::Header {
                id: 2,
                size: 1 << 40,
            },
            BlobFrame::Parent {
                id: 3,
                seq: 1,
                pair: [9; 64],
            },
            BlobFrame::Leaf {
                id: 4,
                seq: u32::MAX,
                data: Bytes::from(vec![1u8; GROUP_SIZE as usize]),
            },
            BlobFrame::DontHave { id: 5 },
            BlobFrame::Error {
                id: 6,
                code: ErrorCode::Busy,
            },
        ]
    }

    #[test]
    fn round_trip_in_any_chunking() {
        let mut wire = BytesMut::new();
        for f in all_kinds() {
            f.encode(&mut wire);
        }
        for step in [1, 3, 1000, wire.len()] {
            let mut d = BlobDecoder::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(step) {
                d.extend(chunk);
                while let Some(f) = d.decode().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, all_kinds());
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn oversized_and_malformed_frames_are_errors() {
        // A prefix announcing one byte more than the cap is refused before its body.
        let mut d = BlobDecoder::new();
        let mut prefix = BytesMut::new();
        crate::codec::put_varint(&mut prefix, MAX_FRAME_LEN as u64 + 1);
        d.extend(&prefix);
        assert!(matches!(d.decode(), Err(FrameError::Framing(_))));
        let bad: &[&[u8]] = &[
            &[],
            &[0x02, 0, 0, 0],
            &[0x02, 0, 0, 0, 1, 0],
            &[0x12, 0, 0, 0, 1],
            &[0x12, 0, 0, 0, 1, 0, 0, 0, 1],
            &[0x11, 0, 0, 0, 1, 0],
            &[0x77, 0, 0, 0, 1],
        ];
        for payload in bad {
            assert!(BlobFrame::parse(payload).is_err(), "{payload:?}");
        }
        let req = |ranges: Vec<GroupRange>| {
            let mut p = BytesMut::new();
            BlobFrame::Request {
                id: 1,
                hash: BlobHash([0; 32]),
                ranges,
            }
            .encode(&mut p);
            BlobDecoder::parse_one(&p)
        };
        assert!(req(vec![0..1]).is_ok());
        for ranges in [
            vec![],
            vec![1..1],
            vec![0..2, 2..3],
            vec![3..4, 0..1],
            vec![0..1; 17],
        ] {
            assert_eq!(
                req(ranges.clone()),
                Err(FrameError::BadRanges),
                "{ranges:?}"
            );
        }
    }

    impl BlobDecoder {
        fn parse_one(wire: &[u8]) -> Result<BlobFrame, FrameError> {
            let mut d = BlobDecoder::new();
            d.extend(wire);
            d.decode().map(|f| f.expect("complete"))
        }
    }
}
