//! Scaffolding shared by the criterion benches (`core.rs`) and the instruction-count
//! suite (`icount.rs`): two handshaken nodes, the bytes of a burst, sample messages.
#![allow(dead_code)] // each bench uses a subset

pub mod blob;
pub mod network;

use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use echo_proto::sim::{identity, keypair};
use echo_proto::wire;
use echo_proto::{Config, ConnId, ConnInfo, Node, Output, Protocol, Role, Transmit};

/// Messages per workload.
pub const N: usize = 1000;

/// A room message as on the wire (unsigned), `len` bytes of text.
pub fn sample_wire(author: u64, seq: u64, len: usize) -> wire::RoomMessage {
    wire::RoomMessage {
        author: Bytes::from(keypair(author).public().to_peer_id().to_bytes()),
        room: "general".into(),
        seq,
        lamport: seq,
        sent_at_ms: 1_700_000_000_000,
        name: "alice".into(),
        text: "x".repeat(len),
        prev: Bytes::from(vec![if seq == 1 { 0 } else { 1 }; 32]),
        signature: Bytes::new(),
        skipped: 0,
    }
}

/// Runs two nodes through their handshake; returns them.
pub fn handshaken(now: Instant, config: Config) -> (Node, Node) {
    let mut a = Node::new(identity(&keypair(1)), config.clone(), 1, now);
    let mut b = Node::new(identity(&keypair(2)), config, 2, now);
    let addr: echo_proto::Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
    let info = |peer, role| ConnInfo {
        peer,
        role,
        remote_addr: addr.clone(),
        protocol: Protocol::Chat,
        dial: None,
        link: echo_proto::Link::Direct,
    };
    a.handle_connected(ConnId(1), info(b.peer_id(), Role::Dialer), now);
    b.handle_connected(ConnId(1), info(a.peer_id(), Role::Listener), now);
    for _ in 0..3 {
        while let Some(t) = transmit(&mut a) {
            b.handle_data(t.conn, &t.data, now);
        }
        while let Some(t) = transmit(&mut b) {
            a.handle_data(t.conn, &t.data, now);
        }
    }
    while !matches!(a.poll_output(), Output::Wait(_)) {}
    while !matches!(b.poll_output(), Output::Wait(_)) {}
    (a, b)
}

/// The next transmit, skipping other outputs (`None` once the node waits).
pub fn transmit(node: &mut Node) -> Option<Transmit> {
    loop {
        match node.poll_output() {
            Output::Transmit(t) => return Some(t),
            Output::Wait(_) => return None,
            _ => {}
        }
    }
}

/// The bytes `a` sends for `N` room messages of 256 B, signing every `burst`-th.
pub fn stream(now: Instant, burst: usize) -> Bytes {
    stream_of(now, N, burst)
}

/// The bytes `a` sends for `n` room messages of 256 B, signing every `burst`-th.
pub fn stream_of(now: Instant, n: usize, burst: usize) -> Bytes {
    let (mut a, _) = handshaken(now, bench_config());
    let mut out = BytesMut::new();
    let text = "m".repeat(256);
    for i in 0..n {
        a.send("general", &text, SystemTime::UNIX_EPOCH, now)
            .unwrap();
        if (i + 1) % burst == 0 {
            while let Some(t) = transmit(&mut a) {
                out.extend_from_slice(&t.data);
            }
        }
    }
    while let Some(t) = transmit(&mut a) {
        out.extend_from_slice(&t.data);
    }
    out.freeze()
}

pub fn bench_config() -> Config {
    // Let one signature cover a whole 1,000-message burst (the default signs every
    // 64th), so the receive benchmark isolates the core's own work.
    Config::default()
        .rate_limit(None)
        .sign_every(1_000)
        .max_buffered_per_author(2_000)
}

/// The wire bytes of `N` frames of 256 B, and the payload.
pub fn frames() -> (Vec<u8>, Bytes) {
    let payload = vec![0xabu8; 256];
    let mut wire = BytesMut::new();
    for _ in 0..N {
        echo_proto::codec::encode_frame(&mut wire, &payload);
    }
    (payload, wire.freeze())
}

/// Workload: frames `N` payloads.
pub fn encode_frames(payload: &[u8], capacity: usize) -> BytesMut {
    let mut out = BytesMut::with_capacity(capacity);
    for _ in 0..N {
        echo_proto::codec::encode_frame(&mut out, payload);
    }
    out
}

/// Workload: decodes a stream of frames fed in 1,500-byte chunks; returns payload bytes.
pub fn decode_frames(wire: &[u8]) -> usize {
    let mut d = echo_proto::codec::FrameDecoder::new(1 << 20);
    let mut n = 0;
    for chunk in wire.chunks(1500) {
        d.extend(chunk);
        while let Some(f) = d.decode().unwrap() {
            n += f.len();
        }
    }
    n
}

/// The encoded frame of one 200-byte room message (length prefix included).
pub fn message_frame() -> Bytes {
    let msg = sample_wire(1, 1, 200);
    wire::Frame::new(wire::Kind::Message(msg)).to_wire()
}

/// Workload: feeds a sender's bytes to a handshaken receiver in 16 KiB reads and drains
/// its outputs; returns how many messages it delivered.
pub fn receive(node: &mut Node, bytes: &[u8], now: Instant) -> usize {
    for chunk in bytes.chunks(16 * 1024) {
        node.handle_data(ConnId(1), chunk, now);
    }
    let mut n = 0;
    loop {
        match node.poll_output() {
            Output::Event(echo_proto::Event::Message { .. }) => n += 1,
            Output::Wait(_) => break,
            _ => {}
        }
    }
    n
}

/// Workload: sends `N` messages of 256 B and drains every transmit (sealing included).
pub fn send_all(node: &mut Node, now: Instant) {
    let text = "m".repeat(256);
    for _ in 0..N {
        node.send("general", &text, SystemTime::UNIX_EPOCH, now)
            .unwrap();
    }
    while transmit(node).is_some() {}
}

/// 10,000 messages from 7 authors, in order or shuffled (seeded).
pub fn log_messages(shuffled: bool) -> Vec<echo_proto::SharedMessage> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut msgs: Vec<_> = (0..10_000u64)
        .map(|i| {
            let m = echo_proto::Message::from_wire(sample_wire(i % 7, 1 + i / 7, 16)).unwrap();
            std::sync::Arc::new(m)
        })
        .collect();
    if shuffled {
        msgs.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    }
    msgs
}

/// Workload: inserts messages into an empty room log.
pub fn insert_all(msgs: &[echo_proto::SharedMessage]) -> echo_proto::log::RoomLog {
    let mut log = echo_proto::log::RoomLog::new();
    for m in msgs {
        log.insert(m.clone());
    }
    log
}
