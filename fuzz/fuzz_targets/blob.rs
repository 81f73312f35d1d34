//! The blob protocol: `blob::BlobDecoder` on arbitrary bytes, and a downloader fed
//! arbitrary frames from a lying source next to an honest one, while a hostile peer
//! throws arbitrary requests at the honest provider.
//!
//! Invariants:
//! * no panic, whatever the bytes or frames;
//! * every decoded frame re-encodes to exactly the bytes it was decoded from;
//! * the downloader's store holds only correct bytes for every group it reports as
//!   verified, and a finished download is byte-identical;
//! * the provider never serves more than `serve_concurrency` requests to a peer;
//! * once the liar goes quiet, a download that has not failed finishes from the honest
//!   source.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use echo_proto::blob::{
    BlobConfig, BlobDecoder, BlobEndpoint, BlobEvent, BlobFrame, BlobHash, BlobOutput, ErrorCode,
    MemStore, GROUP_SIZE,
};
use echo_proto::{Identity, PeerId};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Lie {
    Header {
        size_delta: i8,
    },
    Parent {
        pick: u8,
        flip: u8,
    },
    Leaf {
        group: u16,
        len_delta: i16,
        flip: u8,
    },
    DontHave,
    Error(u8),
    Cancel,
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// Move up to n outputs between the downloader and the honest source.
    Honest(u8),
    /// A structured frame from the liar for one of the requests sent to it.
    Liar { req: u8, seq: u8, lie: Lie },
    /// Raw bytes from the liar to the downloader.
    LiarRaw(Vec<u8>),
    /// A request from the liar to the honest provider.
    Request {
        id: u8,
        real_hash: bool,
        ranges: Vec<(u16, u16)>,
    },
    /// Raw bytes from the liar to the honest provider.
    ProviderRaw(Vec<u8>),
    /// The honest provider reports bytes written to the liar.
    Sent(u16),
    /// Time passes.
    Tick(u16),
    /// Decode arbitrary bytes.
    Decode(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Input {
    size: u32,
    seed: u8,
    ops: Vec<Op>,
}

struct World {
    now: Instant,
    data: Vec<u8>,
    hash: BlobHash,
    d: BlobEndpoint,
    ds: MemStore,
    s: BlobEndpoint,
    ss: MemStore,
    peer_d: PeerId,
    peer_s: PeerId,
    peer_l: PeerId,
    /// Request ids the downloader sent to the liar, and each one's first group.
    liar_reqs: Vec<(u32, u64)>,
    events: Vec<BlobEvent>,
    to_s: Vec<Bytes>,
    to_d: Vec<Bytes>,
}

impl World {
    fn drain(&mut self) {
        loop {
            match self.d.poll_output() {
                BlobOutput::Transmit { peer, data } if peer == self.peer_s => self.to_s.push(data),
                BlobOutput::Transmit { peer, data } if peer == self.peer_l => {
                    if let Ok(Some(BlobFrame::Request { id, ranges, .. })) = {
                        let mut dec = BlobDecoder::new();
                        dec.extend(&data);
                        dec.decode()
                    } {
                        self.liar_reqs.push((id, ranges[0].start));
                    }
                }
                BlobOutput::Event(e) => self.events.push(e),
                BlobOutput::Wait(_) => break,
                _ => {}
            }
        }
        let cap = BlobConfig::default().serve_concurrency;
        assert!(self.s.stats().active_requests <= 2 * cap);
        loop {
            match self.s.poll_output() {
                BlobOutput::Transmit { peer, data } if peer == self.peer_d => self.to_d.push(data),
                BlobOutput::Wait(_) => break,
                _ => {}
            }
        }
    }

    fn honest(&mut self, n: usize) {
        for _ in 0..n {
            self.drain();
            if !self.to_s.is_empty() {
                let b = self.to_s.remove(0);
                self.s.handle_data(self.peer_d, &b, &mut self.ss, self.now);
            } else if !self.to_d.is_empty() {
                let b = self.to_d.remove(0);
                self.s
                    .handle_sent(self.peer_d, b.len(), &mut self.ss, self.now);
                self.d.handle_data(self.peer_s, &b, &mut self.ds, self.now);
            } else {
                return;
            }
        }
        self.drain();
    }

    fn tick(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.d.handle_timeout(&mut self.ds, self.now);
        self.s.handle_timeout(&mut self.ss, self.now);
        self.drain();
    }

    fn check_store(&self) {
        for r in self.ds.verified(&self.hash).iter() {
            for g in r {
                let start = (g * GROUP_SIZE) as usize;
                let end = (start + GROUP_SIZE as usize).min(self.data.len());
                let got = &self.ds.data(&self.hash).expect("partial blob")[start..end];
                assert!(
                    got == &self.data[start..end],
                    "group {g} stored unverified bytes"
                );
            }
        }
    }
}

fn check_decode(bytes: &[u8]) {
    let mut dec = BlobDecoder::new();
    dec.extend(bytes);
    let mut consumed = 0;
    while let Ok(Some(f)) = dec.decode() {
        let enc = f.to_bytes();
        assert_eq!(
            &bytes[consumed..consumed + enc.len()],
            &enc[..],
            "re-encoding differs"
        );
        consumed += enc.len();
    }
}

fuzz_target!(|input: Input| {
    let size = (input.size % (300 * 1024)) as usize;
    let data: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(31) ^ input.seed)
        .collect();
    let mut ss = MemStore::new();
    let hash = ss.insert(&data);
    let id = |n: u8| Identity::from_secret_bytes([n; 32]).peer_id();
    let now = Instant::now();
    let mut w = World {
        now,
        data,
        hash,
        d: BlobEndpoint::new(BlobConfig::default()),
        ds: MemStore::new(),
        s: BlobEndpoint::new(BlobConfig::default()),
        ss,
        peer_d: id(1),
        peer_s: id(2),
        peer_l: id(3),
        liar_reqs: Vec::new(),
        events: Vec::new(),
        to_s: Vec::new(),
        to_d: Vec::new(),
    };
    let (peer_s, peer_l) = (w.peer_s, w.peer_l);
    w.d.download(hash, size as u64, [peer_l, peer_s], &mut w.ds, now)
        .expect("starts");
    w.drain();
    for op in input.ops.into_iter().take(200) {
        match op {
            Op::Honest(n) => w.honest(n as usize),
            Op::Liar { req, seq, lie } => {
                let Some(&(rid, first)) = w.liar_reqs.get(req as usize % w.liar_reqs.len().max(1))
                else {
                    continue;
                };
                let seq = u32::from(seq);
                let frame = match lie {
                    Lie::Header { size_delta } => BlobFrame::Header {
                        id: rid,
                        size: (size as u64).wrapping_add(size_delta as i64 as u64),
                    },
                    Lie::Parent { pick, flip } => {
                        // A real node of the blob, maybe altered.
                        let slots = echo_proto::blob::outboard_size(size as u64) / 64;
                        let mut pair = [0u8; 64];
                        if slots > 0 {
                            use echo_proto::blob::BlobStore;
                            pair =
                                w.ss.read_parent(&hash, u64::from(pick) % slots)
                                    .expect("complete");
                        }
                        pair[flip as usize % 64] ^= (flip >> 6).max(1) * u8::from(flip % 3 == 0);
                        BlobFrame::Parent { id: rid, seq, pair }
                    }
                    Lie::Leaf {
                        group,
                        len_delta,
                        flip,
                    } => {
                        let g = (first + u64::from(group % 4)) as usize;
                        let start = (g * GROUP_SIZE as usize).min(w.data.len());
                        let end = (start + GROUP_SIZE as usize).min(w.data.len());
                        let mut v = w.data[start..end].to_vec();
                        let len =
                            (v.len() as i64 + i64::from(len_delta)).clamp(1, GROUP_SIZE as i64);
                        v.resize(len as usize, 0);
                        let at = flip as usize % v.len();
                        v[at] ^= u8::from(flip % 2 == 0);
                        BlobFrame::Leaf {
                            id: rid,
                            seq,
                            data: v.into(),
                        }
                    }
                    Lie::DontHave => BlobFrame::DontHave { id: rid },
                    Lie::Error(c) => BlobFrame::Error {
                        id: rid,
                        code: if c % 2 == 0 {
                            ErrorCode::Busy
                        } else {
                            ErrorCode::Other(c)
                        },
                    },
                    Lie::Cancel => BlobFrame::Cancel { id: rid },
                };
                check_decode(&frame.to_bytes());
                w.d.handle_data(peer_l, &frame.to_bytes(), &mut w.ds, w.now);
                w.drain();
            }
            Op::LiarRaw(b) => {
                w.d.handle_data(peer_l, &b, &mut w.ds, w.now);
                w.drain();
            }
            Op::Request {
                id,
                real_hash,
                ranges,
            } => {
                let h = if real_hash { hash } else { BlobHash([id; 32]) };
                let ranges = ranges
                    .into_iter()
                    .take(20)
                    .map(|(a, b)| u64::from(a)..u64::from(b))
                    .collect();
                let mut buf = BytesMut::new();
                BlobFrame::Request {
                    id: u32::from(id),
                    hash: h,
                    ranges,
                }
                .encode(&mut buf);
                w.s.handle_data(peer_l, &buf, &mut w.ss, w.now);
                w.drain();
            }
            Op::ProviderRaw(b) => {
                w.s.handle_data(peer_l, &b, &mut w.ss, w.now);
                w.drain();
            }
            Op::Sent(n) => {
                w.s.handle_sent(peer_l, n as usize, &mut w.ss, w.now);
                w.drain();
            }
            Op::Tick(ms) => w.tick(u64::from(ms) * 10),
            Op::Decode(b) => check_decode(&b),
        }
        w.check_store();
    }
    // The liar goes quiet; the honest source finishes unless the download failed.
    for _ in 0..400 {
        if w.events
            .iter()
            .any(|e| matches!(e, BlobEvent::Done { .. } | BlobEvent::Failed { .. }))
        {
            break;
        }
        w.honest(100_000);
        w.tick(1000);
    }
    w.check_store();
    let done = w.events.iter().any(|e| matches!(e, BlobEvent::Done { .. }));
    let failed = w
        .events
        .iter()
        .any(|e| matches!(e, BlobEvent::Failed { .. }));
    assert!(done || failed, "stuck: {:?}", w.d.stats());
    if done {
        assert!(w.ds.data(&hash) == Some(&w.data[..]));
    }
});
