//! Instruction-count suite: the core's hot paths, each run once, counted by callgrind.
//!
//! Wall-clock medians on a shared 2-core machine swing by 2× between runs; the number of
//! instructions a workload executes does not (same binary, same input, same count). This
//! binary runs one workload per invocation, with everything outside the workload itself
//! (building nodes, the handshake, preparing the bytes, hashing a blob to serve) outside the measured function
//! `echo_icount_measure`; `.ci/icount.py` runs each workload under
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect=echo_icount_measure`,
//! compares the counts with `benches/icount-baseline.json` and fails past the tolerance.
//!
//! It also counts heap allocations inside the measured region (a counting global
//! allocator), printed next to the instructions: after hashing, allocation is what the
//! receive path spends most on.
//!
//! ```sh
//! cargo bench -p echo-proto --features sim --bench icount -- --list
//! python3 .ci/icount.py            # all workloads under callgrind, against the baseline
//! ```

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use echo_proto::wire::Frame;

use common::*;

/// Counts allocations (and reallocations) while `COUNTING` is set.
struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCS.fetch_add(1, Relaxed);
            ALLOC_BYTES.fetch_add(layout.size() as u64, Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCS.fetch_add(1, Relaxed);
            ALLOC_BYTES.fetch_add(new_size as u64, Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The measured region: callgrind collects only inside this function (by its unmangled
/// name), and allocations are counted only here.
#[no_mangle]
#[inline(never)]
pub fn echo_icount_measure(work: &mut dyn FnMut()) {
    COUNTING.store(true, Relaxed);
    work();
    COUNTING.store(false, Relaxed);
}

/// One workload: its name, how many units (messages, frames) one run handles, and a set-up
/// that returns the work to measure.
struct Workload {
    name: &'static str,
    units: u64,
    setup: fn() -> Box<dyn FnMut()>,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "codec_encode_1000x256B",
        units: N as u64,
        setup: || {
            let (payload, wire) = frames();
            Box::new(move || {
                black_box(encode_frames(black_box(&payload), wire.len()));
            })
        },
    },
    Workload {
        name: "codec_decode_1000x256B",
        units: N as u64,
        setup: || {
            let (_, wire) = frames();
            Box::new(move || {
                black_box(decode_frames(black_box(&wire)));
            })
        },
    },
    Workload {
        name: "protobuf_decode_1000_room_messages",
        units: N as u64,
        setup: || {
            let frame = message_frame();
            Box::new(move || {
                for _ in 0..N {
                    black_box(Frame::decode_payload(black_box(&frame[2..])).unwrap());
                }
            })
        },
    },
    Workload {
        name: "receive_1000_one_signature",
        units: N as u64,
        setup: || receive_workload(N, N),
    },
    Workload {
        name: "receive_100_every_message_signed",
        units: 100,
        setup: || receive_workload(100, 1),
    },
    Workload {
        name: "send_and_seal_1000",
        units: N as u64,
        setup: || {
            let now = Instant::now();
            let mut node = Some(handshaken(now, bench_config()).0);
            Box::new(move || send_all(node.as_mut().unwrap(), now))
        },
    },
    Workload {
        // Encrypt + sign, then check + decrypt, of 100 direct messages of 256 bytes.
        name: "dm_seal_open_100x256B",
        units: 100,
        setup: || {
            use echo_proto::dm::envelope::{self, Body, Prekey};
            let sender = echo_proto::sim::keypair(1);
            let recipient = echo_proto::sim::keypair(2);
            let prekey = Prekey::derive(&recipient);
            let to = recipient.public().to_peer_id();
            let text = "x".repeat(256);
            Box::new(move || {
                for i in 0..100u8 {
                    let body = Body {
                        seq: 1 + u64::from(i),
                        text: text.clone(),
                        ..Body::default()
                    };
                    let env =
                        echo_proto::dm::seal_seeded(&sender, &to, &prekey.public, body, 3, [i; 32])
                            .unwrap();
                    let ok = env.check(64 * 1024).unwrap();
                    black_box(ok);
                    black_box(envelope::open(&prekey, &env).unwrap());
                }
            })
        },
    },
    Workload {
        name: "room_log_insert_10000_in_order",
        units: 10_000,
        setup: || log_workload(false),
    },
    Workload {
        name: "room_log_insert_10000_shuffled",
        units: 10_000,
        setup: || log_workload(true),
    },
    Workload {
        name: "blob_fetch_verify_store_4MiB",
        units: 256, // 16 KiB chunk groups
        setup: || {
            use echo_proto::blob::{BlobEndpoint, MemStore};
            const SIZE: usize = 4 << 20;
            let mut ps = MemStore::new();
            let hash = ps.insert(&common::blob::sample(SIZE));
            let mut provider = BlobEndpoint::new(common::blob::unlimited());
            Box::new(move || {
                let ds = common::blob::transfer(
                    &mut provider,
                    &mut ps,
                    hash,
                    SIZE as u64,
                    MemStore::new(),
                );
                assert!(ds.is_complete(&hash));
            })
        },
    },
    Workload {
        name: "sim_20_nodes_500_messages",
        units: 500,
        setup: || {
            let mut net = network::network(20, 500, 4, 1, true);
            Box::new(move || {
                let flood = network::flood(&mut net, 500);
                assert!(flood.converged, "the network did not converge");
            })
        },
    },
];

/// Room-log inserts of 10,000 messages from 7 authors, in order or shuffled.
fn log_workload(shuffled: bool) -> Box<dyn FnMut()> {
    let msgs = log_messages(shuffled);
    Box::new(move || {
        black_box(insert_all(&msgs));
    })
}

/// The receive path: a handshaken receiver fed `n` messages signed every `burst`.
fn receive_workload(n: usize, burst: usize) -> Box<dyn FnMut()> {
    let now = Instant::now();
    let bytes = stream_of(now, n, burst);
    let mut node = Some(handshaken(now, bench_config()).1);
    Box::new(move || {
        assert_eq!(receive(node.as_mut().unwrap(), &bytes, now), n);
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for w in WORKLOADS {
            println!("{}: benchmark", w.name);
        }
        return;
    }
    // `cargo bench` passes `--bench`; names are the other arguments (none: all).
    let names: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    for w in WORKLOADS {
        if !names.is_empty() && !names.contains(&w.name) {
            continue;
        }
        let mut work = (w.setup)();
        ALLOCS.store(0, Relaxed);
        ALLOC_BYTES.store(0, Relaxed);
        echo_icount_measure(&mut *work);
        println!(
            "icount workload={} units={} allocs={} alloc_bytes={}",
            w.name,
            w.units,
            ALLOCS.load(Relaxed),
            ALLOC_BYTES.load(Relaxed)
        );
    }
}
