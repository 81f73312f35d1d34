//! Core benchmarks (criterion): codec throughput, per-message receive cost with and
//! without signature verification, and log insertion under shuffled arrival.
//!
//! `cargo bench --features sim --bench core`

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use echo_proto::log::RoomLog;
use echo_proto::sim::{identity, keypair};
use echo_proto::wire::{self, Frame, Kind};
use echo_proto::{
    codec, Config, ConnId, ConnInfo, Event, Message, Node, Output, Protocol, Role, Transmit,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;

const N: usize = 1000;

fn bench_codec(c: &mut Criterion) {
    let payload = vec![0xabu8; 256];
    let mut wire = BytesMut::new();
    for _ in 0..N {
        codec::encode_frame(&mut wire, &payload);
    }
    let wire = wire.freeze();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("encode_1000x256B", |b| {
        b.iter(|| {
            let mut out = BytesMut::with_capacity(wire.len());
            for _ in 0..N {
                codec::encode_frame(&mut out, black_box(&payload));
            }
            out
        })
    });
    g.bench_function("decode_1000x256B_in_1500B_chunks", |b| {
        b.iter(|| {
            let mut d = codec::FrameDecoder::new(1 << 20);
            let mut n = 0;
            for chunk in wire.chunks(1500) {
                d.extend(chunk);
                while let Some(f) = d.decode().unwrap() {
                    n += f.len();
                }
            }
            n
        })
    });
    let msg = sample_wire(1, 1, 200);
    let frame = Frame::new(Kind::Message(msg)).to_wire();
    g.throughput(Throughput::Elements(1));
    g.bench_function("protobuf_decode_room_message", |b| {
        b.iter(|| Frame::decode_payload(black_box(&frame[2..])).unwrap())
    });
    g.finish();
}

fn sample_wire(author: u64, seq: u64, len: usize) -> wire::RoomMessage {
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
fn handshaken(now: Instant, config: Config) -> (Node, Node) {
    let mut a = Node::new(identity(&keypair(1)), config.clone(), 1, now);
    let mut b = Node::new(identity(&keypair(2)), config, 2, now);
    let addr: echo_proto::Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
    let info = |peer, role| ConnInfo {
        peer,
        role,
        remote_addr: addr.clone(),
        protocol: Protocol::Chat,
        dial: None,
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
fn transmit(node: &mut Node) -> Option<Transmit> {
    loop {
        match node.poll_output() {
            Output::Transmit(t) => return Some(t),
            Output::Wait(_) => return None,
            _ => {}
        }
    }
}

/// The bytes `a` sends for `N` room messages of 256 B, signing every `burst`-th.
fn stream(now: Instant, burst: usize) -> Bytes {
    let (mut a, _) = handshaken(now, bench_config());
    let mut out = BytesMut::new();
    let text = "m".repeat(256);
    for i in 0..N {
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

fn bench_config() -> Config {
    // Let one signature cover a whole 1,000-message burst (the default signs every
    // 64th), so the receive benchmark isolates the core's own work.
    Config::default()
        .rate_limit(None)
        .sign_every(1_000)
        .max_buffered_per_author(2_000)
}

fn bench_receive(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("receive_room_message");
    g.throughput(Throughput::Elements(N as u64));
    // burst = N: one signature for the whole run (signature verification amortised
    // away); burst = 1: every message signed and verified.
    for (label, burst) in [("one_signature_per_1000", N), ("every_message_signed", 1)] {
        let bytes = stream(now, burst);
        g.bench_function(label, |b| {
            b.iter_batched(
                || handshaken(now, bench_config()).1,
                |mut node| {
                    for chunk in bytes.chunks(16 * 1024) {
                        node.handle_data(ConnId(1), chunk, now);
                    }
                    let mut n = 0;
                    loop {
                        match node.poll_output() {
                            Output::Event(Event::Message { .. }) => n += 1,
                            Output::Wait(_) => break,
                            _ => {}
                        }
                    }
                    assert_eq!(n, N);
                    node
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn bench_send(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("send_room_message");
    g.throughput(Throughput::Elements(N as u64));
    let text = "m".repeat(256);
    g.bench_function("send_1000_then_flush", |b| {
        b.iter_batched(
            || handshaken(now, bench_config()).0,
            |mut node| {
                for _ in 0..N {
                    node.send("general", &text, SystemTime::UNIX_EPOCH, now)
                        .unwrap();
                }
                while transmit(&mut node).is_some() {}
                node
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_log(c: &mut Criterion) {
    let mut msgs: Vec<_> = (0..10_000u64)
        .map(|i| {
            let m = Message::from_wire(sample_wire(i % 7, 1 + i / 7, 16)).unwrap();
            std::sync::Arc::new(m)
        })
        .collect();
    let mut g = c.benchmark_group("room_log");
    g.throughput(Throughput::Elements(msgs.len() as u64));
    g.bench_function("insert_10000_in_order", |b| {
        b.iter(|| {
            let mut log = RoomLog::new();
            for m in &msgs {
                log.insert(m.clone());
            }
            log
        })
    });
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    msgs.shuffle(&mut rng);
    g.bench_function("insert_10000_shuffled", |b| {
        b.iter(|| {
            let mut log = RoomLog::new();
            for m in &msgs {
                log.insert(m.clone());
            }
            log
        })
    });
    g.finish();
}

criterion_group!(benches, bench_codec, bench_receive, bench_send, bench_log);
criterion_main!(benches);
