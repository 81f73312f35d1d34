//! `echo_proto::codec::FrameDecoder` on arbitrary bytes in arbitrary chunkings.
//!
//! Invariants:
//! * every frame is at most `max_len` bytes;
//! * chunked decoding gives exactly the frames and error of one-shot decoding, and both
//!   agree with an independent reference parser of `varint(len) ‖ payload`;
//! * re-encoding the frames with `codec::encode_frame` reproduces the consumed prefix of
//!   the input byte for byte (the decoder accepts only minimal prefixes);
//! * without an error, the bytes left buffered are exactly the unconsumed suffix, and
//!   they are an incomplete frame (never a complete one left behind).
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use echo_proto::codec::{self, FrameDecoder, FrameError};
use libfuzzer_sys::fuzz_target;

/// Limits chosen around the varint boundaries (1 and 2 byte prefixes) and a realistic one.
const MAX_LENS: [usize; 6] = [0, 1, 127, 128, 300, 4096];

#[derive(Debug, Arbitrary)]
struct Input {
    max_sel: u8,
    /// Chunk sizes, used cyclically (0 = an empty `extend`).
    cuts: Vec<u8>,
    data: Vec<u8>,
}

#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Vec<u8>>,
    error: Option<FrameError>,
    /// Bytes still buffered (only meaningful without an error).
    buffered: usize,
}

/// Feeds `data` in the given chunking, decoding after every chunk, stopping at the first
/// error (as a node does: it closes the connection).
fn decode(data: &[u8], max: usize, cuts: &[u8]) -> Outcome {
    const CUT_MOD: usize = 67;
    // Empty chunks are allowed, but a cycle of cuts must make progress.
    let chunked = cuts.iter().any(|&c| c as usize % CUT_MOD != 0);
    let mut d = FrameDecoder::new(max);
    let mut frames = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    loop {
        let step = if chunked {
            let c = cuts[i % cuts.len()] as usize % CUT_MOD;
            i += 1;
            c.min(data.len() - pos)
        } else {
            data.len() - pos
        };
        d.extend(&data[pos..pos + step]);
        pos += step;
        loop {
            match d.decode() {
                Ok(Some(f)) => {
                    assert!(f.len() <= max, "frame of {} bytes over max {max}", f.len());
                    frames.push(f.to_vec());
                }
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        frames,
                        error: Some(e),
                        buffered: d.buffered(),
                    }
                }
            }
        }
        if pos == data.len() {
            return Outcome {
                frames,
                error: None,
                buffered: d.buffered(),
            };
        }
    }
}

/// Independent parser: minimal LEB128 of at most 5 bytes, then `len <= max` payload bytes.
fn reference(data: &[u8], max: usize) -> (Vec<Vec<u8>>, Option<FrameError>, usize) {
    let mut frames = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &data[pos..];
        // Varint.
        let mut value: u64 = 0;
        let mut plen = None;
        for i in 0..rest.len().min(5) {
            value |= u64::from(rest[i] & 0x7f) << (7 * i);
            if rest[i] & 0x80 == 0 {
                if i > 0 && rest[i] == 0 {
                    return (frames, Some(FrameError::BadPrefix), pos);
                }
                plen = Some(i + 1);
                break;
            }
        }
        let Some(plen) = plen else {
            if rest.len() >= 5 {
                return (frames, Some(FrameError::BadPrefix), pos);
            }
            return (frames, None, pos); // incomplete prefix
        };
        if value > max as u64 {
            return (frames, Some(FrameError::TooLarge { len: value, max }), pos);
        }
        let len = value as usize;
        if rest.len() < plen + len {
            return (frames, None, pos); // incomplete payload
        }
        frames.push(rest[plen..plen + len].to_vec());
        pos += plen + len;
    }
}

fuzz_target!(|input: Input| {
    let max = MAX_LENS[input.max_sel as usize % MAX_LENS.len()];
    let data = &input.data;

    let whole = decode(data, max, &[]);
    let chunked = decode(data, max, &input.cuts);
    // Same frames and the same error, whatever the chunking.
    assert_eq!(whole.frames, chunked.frames, "chunking changed the frames");
    assert_eq!(whole.error, chunked.error, "chunking changed the error");
    if whole.error.is_none() {
        assert_eq!(whole.buffered, chunked.buffered);
    }

    // The reference parser agrees.
    let (ref_frames, ref_err, consumed) = reference(data, max);
    assert_eq!(
        whole.frames, ref_frames,
        "decoder disagrees with the reference parser"
    );
    assert_eq!(
        whole.error, ref_err,
        "decoder error disagrees with the reference parser"
    );

    // Re-encoding reproduces the consumed prefix exactly.
    let mut enc = BytesMut::new();
    for f in &whole.frames {
        assert!(f.len() <= max);
        codec::encode_frame(&mut enc, f);
    }
    assert_eq!(enc.len(), consumed);
    assert_eq!(
        &enc[..],
        &data[..consumed],
        "re-encoding differs from the input"
    );

    if whole.error.is_none() {
        // Whatever was not returned is still buffered, and it is not a complete frame.
        assert_eq!(whole.buffered, data.len() - consumed);
        let rest = &data[consumed..];
        match codec::peek_varint(rest) {
            Ok(None) => assert!(rest.len() < 5),
            Ok(Some((len, p))) => {
                assert!(len <= max as u64);
                assert!(
                    p + (len as usize) > rest.len(),
                    "a complete frame was left behind"
                );
            }
            Err(e) => panic!("buffered rest has a bad prefix but no error was reported: {e}"),
        }
    }
});
