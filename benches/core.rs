//! Core benchmarks (criterion): codec throughput, per-message receive cost with and
//! without signature verification, log insertion under shuffled arrival, and the crypto
//! of a direct message (sender, recipient, carrier).
//!
//! `cargo bench --features sim --bench core`
//!
//! `first_event/*`: the time from a signed message's bytes arriving (from its author)
//! to the node handing out its `Event::Message`, with the signature checked before
//! delivery (`verify_first`) or after it (`deliver_first`, PROTOCOL.md section 6.5);
//! the rest of the output (the check, relaying) is drained outside the timing.

mod common;

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use echo_proto::wire::Frame;

use common::*;

fn bench_codec(c: &mut Criterion) {
    let (payload, wire) = frames();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("encode_1000x256B", |b| {
        b.iter(|| encode_frames(black_box(&payload), wire.len()))
    });
    g.bench_function("decode_1000x256B_in_1500B_chunks", |b| {
        b.iter(|| decode_frames(black_box(&wire)))
    });
    let frame = message_frame();
    g.throughput(Throughput::Elements(1));
    g.bench_function("protobuf_decode_room_message", |b| {
        b.iter(|| Frame::decode_payload(black_box(&frame[2..])).unwrap())
    });
    g.finish();
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
                    assert_eq!(receive(&mut node, &bytes, now), N);
                    node
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// Latency to the event: one signed message at a time, timed from `handle_data` to its
/// `Event::Message` (the check and the rest of the output drained untimed).
fn bench_first_event(c: &mut Criterion) {
    use echo_proto::{ConnId, Event, Output};
    use std::time::{Duration, SystemTime};
    const MSGS: usize = 2_000;
    let now = Instant::now();
    // Each message's bytes, every one signed (a burst of one).
    let (mut a, _) = handshaken(now, bench_config());
    let text = "m".repeat(256);
    let msgs: Vec<Vec<u8>> = (0..MSGS)
        .map(|_| {
            a.send("general", &text, SystemTime::UNIX_EPOCH, now)
                .unwrap();
            let mut out = Vec::new();
            while let Some(t) = transmit(&mut a) {
                out.extend_from_slice(&t.data);
            }
            out
        })
        .collect();
    let mut g = c.benchmark_group("first_event");
    g.throughput(Throughput::Elements(1));
    for (label, first) in [("verify_first", false), ("deliver_first", true)] {
        g.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut node = None;
                for i in 0..iters as usize {
                    if i % MSGS == 0 {
                        let config = bench_config().deliver_before_verify(first);
                        node = Some(handshaken(now, config).1);
                    }
                    let node = node.as_mut().unwrap();
                    let start = Instant::now();
                    node.handle_data(ConnId(1), &msgs[i % MSGS], now);
                    loop {
                        match node.poll_output() {
                            Output::Event(Event::Message { .. }) => break,
                            Output::Wait(_) => panic!("no event"),
                            _ => {}
                        }
                    }
                    total += start.elapsed();
                    while !matches!(node.poll_output(), Output::Wait(_)) {}
                }
                total
            })
        });
    }
    g.finish();
}

fn bench_send(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("send_room_message");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("send_1000_then_flush", |b| {
        b.iter_batched(
            || handshaken(now, bench_config()).0,
            |mut node| {
                send_all(&mut node, now);
                node
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_log(c: &mut Criterion) {
    let mut g = c.benchmark_group("room_log");
    g.throughput(Throughput::Elements(10_000));
    for (label, shuffled) in [
        ("insert_10000_in_order", false),
        ("insert_10000_shuffled", true),
    ] {
        let msgs = log_messages(shuffled);
        g.bench_function(label, |b| b.iter(|| insert_all(&msgs)));
    }
    g.finish();
}

/// One 256-byte direct message: seal + sign (sender), check + open (recipient), check
/// only (what a carrier pays before storing it).
fn bench_dm(c: &mut Criterion) {
    use echo_proto::dm::envelope::{self, Body, Prekey};
    use echo_proto::dm::seal_seeded;
    let sender = echo_proto::sim::keypair(1);
    let recipient = echo_proto::sim::keypair(2);
    let prekey = Prekey::derive(&recipient);
    let to = recipient.public().to_peer_id();
    let body = Body {
        seq: 1,
        text: "x".repeat(256),
        ..Body::default()
    };
    let seal = |i: u8| seal_seeded(&sender, &to, &prekey.public, body.clone(), 3, [i; 32]).unwrap();
    let env = seal(0);
    let mut g = c.benchmark_group("dm");
    g.throughput(Throughput::Elements(1));
    g.bench_function("seal_and_sign_256B", |b| {
        b.iter(|| black_box(seal(black_box(1))))
    });
    g.bench_function("check_and_open_256B", |b| {
        b.iter(|| {
            black_box(env.check(64 * 1024).unwrap());
            black_box(envelope::open(&prekey, black_box(&env)).unwrap())
        })
    });
    g.bench_function("carrier_check_256B", |b| {
        b.iter(|| black_box(black_box(&env).check(64 * 1024).unwrap()))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_codec,
    bench_receive,
    bench_first_event,
    bench_send,
    bench_log,
    bench_dm
);
criterion_main!(benches);
