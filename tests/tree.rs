//! The broadcast tree of rooms (PROTOCOL.md section 7.1) in the simulator: frames sent
//! per delivered message in steady state against flooding, convergence under 1 % loss,
//! nodes without the capability in the same room, and the bound on announced-but-missing
//! messages a hostile peer can make a node track.

use std::time::Duration;

use echo_proto::sim::{keypair, Sim};
use echo_proto::wire::{self, AuthorRanges, Frame, Kind};
use echo_proto::{Config, Message, Protocol};
use rand::{Rng, SeedableRng};

const SEC: Duration = Duration::from_secs(1);
const ROOM: &str = "general";

/// `n` nodes on a random connected topology (a random tree plus one random extra link
/// each), 1 % loss on room-message frames, settled. `tree(i)`: whether node i offers the
/// broadcast tree.
fn network(n: usize, seed: u64, tree: impl Fn(usize) -> bool) -> Sim {
    network_with(n, seed, tree, Config::default())
}

/// [`network`] with every node's config based on `base`.
fn network_with(n: usize, seed: u64, tree: impl Fn(usize) -> bool, base: Config) -> Sim {
    let mut sim = Sim::new(seed);
    sim.loss = 0.01;
    sim.persist = false;
    sim.latency = Duration::from_millis(5);
    sim.jitter = Duration::from_millis(5);
    for i in 0..n {
        let c = base
            .clone()
            .name(format!("n{i}"))
            .target_peers(4)
            .broadcast_tree(tree(i));
        sim.add_node(c);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for i in 1..n {
        sim.connect(i, rng.random_range(0..i));
        let j = rng.random_range(0..n);
        if j != i {
            sim.connect(i, j);
        }
    }
    sim.run_for(5 * SEC);
    sim
}

/// Sends `msgs` messages from random authors, `gap` apart, and runs until every log
/// holds `total` messages. Returns (converged, frames delivered meanwhile).
fn burst(sim: &mut Sim, msgs: usize, total: usize, gap: Duration, seed: u64) -> (bool, u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let f0 = sim.frames_delivered();
    let n = sim.len();
    for k in 0..msgs {
        sim.send(rng.random_range(0..n), ROOM, &format!("message {k}"));
        sim.run_for(gap);
    }
    let done = sim.run_until(60 * SEC, |s| {
        (0..n).all(|i| s.node(i).room_log(ROOM).map_or(0, |l| l.len()) == total)
    });
    (done, sim.frames_delivered() - f0)
}

/// What a measured burst showed.
struct Run {
    converged: bool,
    /// Virtual time from the first message until every log held them all.
    time: Duration,
    /// Frames delivered per delivered message.
    frames: f64,
    /// Delivery latency (author's send to delivery, per node and message), 99th
    /// percentile, in ms.
    p99: u64,
}

/// A warm-up burst (the tree forms), then 1,000 messages at 1,000 a second (as in
/// benches/sim.rs), measured, on 40 nodes with 1 % loss.
fn steady_burst(tree: bool) -> Run {
    let n = 40;
    let mut sim = network(n, 5, |_| tree);
    let (warm, _) = burst(&mut sim, 300, 300, Duration::from_millis(2), 1);
    sim.latency_ms.iter_mut().for_each(|c| *c = 0);
    let run = measured(&mut sim, &format!("tree={tree}"), 1000, 1300, 1, 2);
    Run {
        converged: warm && run.converged,
        ..run
    }
}

/// A [`burst`] of `msgs` messages `gap_ms` apart (every log then holds `total`), with
/// its frames per kind and latency printed.
fn measured(sim: &mut Sim, what: &str, msgs: usize, total: usize, gap_ms: u64, seed: u64) -> Run {
    let before = stats(sim);
    let t0 = sim.elapsed();
    let (done, frames) = burst(sim, msgs, total, Duration::from_millis(gap_ms), seed);
    let time = sim.elapsed() - t0;
    let after = stats(sim);
    let q = |q| sim.latency_quantile(q).unwrap_or_default();
    let label = format!(
        "{what} time={time:?} latency p50/p99/max {}/{}/{} ms",
        q(0.5),
        q(0.99),
        q(1.0)
    );
    print_breakdown(&label, &before, &after);
    Run {
        converged: done,
        time,
        frames: frames as f64 / (msgs * (sim.len() - 1)) as f64,
        p99: q(0.99),
    }
}

/// Every node's stats.
fn stats(sim: &Sim) -> Vec<echo_proto::Stats> {
    (0..sim.len()).map(|i| sim.node(i).stats()).collect()
}

/// Prints what happened between two [`stats`] snapshots: frames received per kind
/// (room messages, announcements, prunes, grafts, requests, summaries, others) and
/// why room-message frames were sent (relayed along the tree or history answers).
fn print_breakdown(label: &str, before: &[echo_proto::Stats], after: &[echo_proto::Stats]) {
    let delta = |f: &dyn Fn(&echo_proto::Stats) -> u64| {
        after.iter().map(f).sum::<u64>() - before.iter().map(f).sum::<u64>()
    };
    let kind = |k: usize| delta(&|s: &echo_proto::Stats| s.frames_in_kind[k]);
    let all = delta(&|s| s.frames_in);
    let named = [5, 16, 17, 18, 11, 10]
        .iter()
        .map(|&k| kind(k))
        .sum::<u64>();
    println!(
        "{label}: frames in {all}: messages {} (duplicates {}), announces {}, prunes {}, \
         grafts {}, requests {}, summaries {}, other {}; messages sent: relayed {}, \
         history {}; lazy links at the end {}",
        kind(5),
        delta(&|s| s.duplicates),
        kind(16),
        kind(17),
        kind(18),
        kind(11),
        kind(10),
        all - named,
        delta(&|s| s.relayed),
        delta(&|s| s.history_sent),
        after.iter().map(|s| s.tree_lazy).sum::<u64>(),
    );
}

#[test]
fn tree_converges_as_fast_as_flooding_under_loss_with_few_frames_per_message() {
    let flood = steady_burst(false);
    let tree = steady_burst(true);
    println!(
        "converged after {:?} (flood) and {:?} (tree); frames per delivered message: \
         flood {:.2}, tree {:.2}",
        flood.time, tree.time, flood.frames, tree.frames
    );
    assert!(flood.converged && tree.converged, "every log converged");
    assert!(
        flood.frames > 2.0,
        "flooding sends over 2 frames per message"
    );
    // Virtual time: the same on any machine. Measured 1.09 s against 1.02 s (one tree
    // shared by all authors: 1.18 s; before the pruning and repair changes: 10.0 s, the
    // last messages waited for summaries).
    assert!(
        tree.time.as_secs_f64() <= flood.time.as_secs_f64() * 1.25,
        "the tree converges within 25 % of flooding's time"
    );
    // 1.22 measured (1.31 before link_prev; 1.35 before new authors copied trees; one
    // shared tree: 1.86). The goal is 1.5.
    assert!(
        tree.frames <= 1.45,
        "the tree sends at most 1.45 frames a message"
    );
    // 64 ms measured (flood 24 ms; main's tree.rs 94 ms; link_prev with the 40 ms
    // graft timer 86 ms). A loss on a tree link is asked for after the link's next frame
    // instead of an announcement round and the graft timer.
    assert!(
        tree.p99 <= 80,
        "delivery latency p99 at most 80 ms under 1 % loss (measured {} ms)",
        tree.p99
    );
}

/// Many authors with a few messages each (a chat room): 40 nodes, 200 messages from
/// random authors at 100 a second (5 per author on average), no warm-up, 1 % loss.
/// Prints the breakdown.
fn sparse_authors(tree: bool) -> Run {
    let n = 40;
    let mut sim = network(n, 5, |_| tree);
    measured(&mut sim, &format!("sparse tree={tree}"), 200, 200, 10, 3)
}

#[test]
fn new_authors_start_on_the_tree_instead_of_flooding() {
    let flood = sparse_authors(false);
    let tree = sparse_authors(true);
    println!(
        "sparse authors: converged after {:?} (flood) and {:?} (tree); frames per \
         delivered message: flood {:.2}, tree {:.2}",
        flood.time, tree.time, flood.frames, tree.frames
    );
    assert!(flood.converged && tree.converged, "every log converged");
    assert!(
        tree.time.as_secs_f64() <= flood.time.as_secs_f64() * 1.25,
        "the tree converges within 25 % of flooding's time"
    );
    // 2.35 measured (2.43 before link_prev; 2.73 announcing to every lazy neighbour;
    // each new author's first message flooding: 5.77; flood 8.80).
    assert!(
        tree.frames <= 3.5,
        "new authors' messages start on the tree: at most 3.5 frames a message"
    );
}

/// Not run by default (~1 min): the steady burst of the test above on 8 topologies
/// (seeds 1–8), with `deliver_before_verify` on and off, printing the virtual time to
/// converge and frames per delivered message. `cargo test -p echo-proto --all-features
/// --test tree -- --ignored --nocapture seeds`.
#[test]
#[ignore]
fn seeds() {
    let n = 40;
    for dbv in [true, false] {
        for seed in 1..=8u64 {
            let base = Config::default().deliver_before_verify(dbv);
            let mut sim = network_with(n, seed, |_| true, base);
            let (warm, _) = burst(&mut sim, 300, 300, Duration::from_millis(2), seed * 7 + 1);
            let t0 = sim.elapsed();
            let (done, frames) =
                burst(&mut sim, 1000, 1300, Duration::from_millis(1), seed * 7 + 2);
            let time = (sim.elapsed() - t0).as_secs_f64();
            let frames = frames as f64 / (1000 * (n - 1)) as f64;
            println!(
                "deliver_before_verify={dbv} seed={seed} converged={} time={time:.3}s \
                 frames={frames:.2}",
                warm && done
            );
        }
    }
}

#[test]
fn peers_without_the_tree_keep_flooding_and_everyone_converges() {
    // Every third node is an older peer: it neither offers nor understands the tree.
    let n = 30;
    let mut sim = network(n, 9, |i| i % 3 != 0);
    let (done, _) = burst(&mut sim, 200, 200, Duration::from_millis(10), 3);
    assert!(done, "mixed network converged under 1 % loss");
    let old = sim.node(0).stats();
    assert_eq!(old.tree_prunes + old.tree_announces + old.tree_lazy, 0);
    let new: u64 = (1..n).map(|i| sim.node(i).stats().tree_lazy).sum();
    assert!(new > 0, "capable nodes pruned links among themselves");
}

/// Connects a raw, tree-capable neighbour `name` (identity `key`) to node `a`, in the
/// room; returns its handle.
fn tree_neighbour(sim: &mut Sim, a: usize, key: &libp2p_identity::Keypair, name: &str) -> u64 {
    let h = sim.open_raw(a, key, Protocol::Chat);
    let hello = wire::Hello {
        version_major: wire::VERSION_MAJOR,
        name: name.into(),
        rooms: vec![ROOM.into()],
        capabilities: vec!["tree".into()],
        nonce: 1,
        ..Default::default()
    };
    sim.raw_send(h, &Frame::new(Kind::Hello(hello)).to_wire());
    sim.run_for(SEC);
    h
}

#[test]
fn announced_missing_messages_are_bounded() {
    let mut sim = Sim::new(3);
    let a = sim.add_named("a");
    sim.run_for(SEC);
    let h = tree_neighbour(&mut sim, a, &keypair(99), "mallory");
    // 3,000 made-up authors, each announced with one message the node lacks.
    for batch in 0..30u64 {
        let authors = (0..100u64)
            .map(|k| AuthorRanges {
                author: keypair(1_000 + batch * 100 + k)
                    .public()
                    .to_peer_id()
                    .to_bytes(),
                floor: 0,
                ranges: vec![1, 2],
            })
            .collect();
        let f = Frame::new(Kind::Announce(wire::Announce {
            room: ROOM.into(),
            authors,
        }));
        sim.raw_send(h, &f.to_wire());
    }
    sim.run_for(Duration::from_millis(50));
    let s = sim.node(a).stats();
    assert_eq!(s.tree_missing, 1024, "bounded at MAX_MISSING");
    assert_eq!(s.tree_dropped, 3_000 - 1024);
    // The graft timers fire: each entry became requests to mallory, who never answers.
    sim.run_for(SEC);
    let s = sim.node(a).stats();
    assert_eq!(s.tree_missing, 0);
    assert_eq!(s.tree_grafts, 0, "mallory is eager already: only requests");
    assert_eq!(s.repair_requests, 3 * 1024, "three attempts each");
    assert!(!sim.raw_closed(h));
}

/// A signed room message of `author` (seq `seq`, following `prev`) and its hash.
fn signed(author: &libp2p_identity::Keypair, seq: u64, prev: [u8; 32]) -> (Vec<u8>, [u8; 32]) {
    let mut w = wire::RoomMessage {
        author: author.public().to_peer_id().to_bytes().into(),
        room: ROOM.into(),
        seq,
        lamport: 100 + seq,
        name: "w".into(),
        text: format!("message {seq}"),
        prev: prev.to_vec().into(),
        ..Default::default()
    };
    let m = Message::from_wire(w.clone()).unwrap();
    let mut b = b"echo/chat/2 signature\0".to_vec();
    b.extend_from_slice(m.hash());
    w.signature = author.sign(&b).unwrap().into();
    (Frame::new(Kind::Message(w)).to_wire().to_vec(), *m.hash())
}

/// The requests a raw peer received.
fn requests(sim: &Sim, h: u64) -> Vec<wire::Request> {
    let mut dec = echo_proto::codec::FrameDecoder::new(1 << 20);
    dec.extend(sim.raw_received(h));
    let mut out = Vec::new();
    while let Ok(Some(p)) = dec.decode() {
        if let Ok(Frame {
            kind: Some(Kind::Request(r)),
            ..
        }) = Frame::decode_payload(&p)
        {
            out.push(r);
        }
    }
    out
}

/// Node `a` with a tree-capable raw neighbour that announced author `w`'s messages 1
/// and 2 (which `a` lacks). Returns (sim, raw handle, message 1, message 2).
fn announced_pair() -> (Sim, u64, Vec<u8>, Vec<u8>) {
    let mut sim = Sim::new(3);
    let a = sim.add_named("a");
    sim.run_for(SEC);
    let h = tree_neighbour(&mut sim, a, &keypair(98), "x");
    let w = keypair(97);
    let (m1, h1) = signed(&w, 1, [0; 32]);
    let (m2, _) = signed(&w, 2, h1);
    let announce = Frame::new(Kind::Announce(wire::Announce {
        room: ROOM.into(),
        authors: vec![AuthorRanges {
            author: w.public().to_peer_id().to_bytes(),
            floor: 0,
            ranges: vec![1, 3],
        }],
    }));
    sim.raw_send(h, &announce.to_wire());
    (sim, h, m1, m2)
}

/// (start, end) of the requests a raw peer received.
fn asked(sim: &Sim, h: u64) -> Vec<(u64, u64)> {
    requests(sim, h).iter().map(|r| (r.start, r.end)).collect()
}

#[test]
fn a_missing_message_gets_its_own_attempts_after_its_predecessor_arrives() {
    // The announced run 1..3 is asked for; the answer brings message 1 only (2 was
    // lost). Message 2 is then asked for three times of its own (the attempt spent on
    // the run does not count), not left to the gap timer after one more loss.
    let (mut sim, h, m1, m2) = announced_pair();
    assert!(sim.run_until(SEC, |s| !requests(s, h).is_empty()));
    sim.raw_send(h, &m1);
    // Well within the gap timeout (2 s): every request here is the tree's.
    sim.run_for(SEC / 2);
    assert_eq!(sim.log(0, ROOM), vec!["message 1".to_string()]);
    assert_eq!(asked(&sim, h), vec![(1, 3), (2, 3), (2, 3), (2, 3)]);
    // Answered at last: delivered, and the entry is gone.
    sim.raw_send(h, &m2);
    sim.run_for(SEC / 10);
    assert_eq!(sim.log(0, ROOM).len(), 2);
    assert_eq!(sim.node(0).stats().tree_missing, 0);
}

#[test]
fn a_run_answered_after_its_last_attempt_is_still_followed() {
    // Three requests for 1..3 go unanswered; then message 1 arrives (a late answer).
    // The entry outlived its last request to see that: message 2 is asked for next.
    let (mut sim, h, m1, _) = announced_pair();
    assert!(sim.run_until(SEC, |s| requests(s, h).len() == 3));
    sim.raw_send(h, &m1);
    sim.run_for(SEC / 2);
    assert_eq!(sim.log(0, ROOM), vec!["message 1".to_string()]);
    assert_eq!(
        asked(&sim, h),
        vec![(1, 3), (1, 3), (1, 3), (2, 3), (2, 3), (2, 3)]
    );
    assert_eq!(sim.node(0).stats().tree_missing, 0, "given up on message 2");
}

/// The frames a raw peer received.
fn frames(sim: &Sim, h: u64) -> Vec<Kind> {
    let mut dec = echo_proto::codec::FrameDecoder::new(1 << 20);
    dec.extend(sim.raw_received(h));
    let mut out = Vec::new();
    while let Ok(Some(p)) = dec.decode() {
        if let Ok(Frame { kind: Some(k), .. }) = Frame::decode_payload(&p) {
            out.push(k);
        }
    }
    out
}

/// (room messages by `author`, announcements naming `author`) among what a raw peer
/// received.
fn full_and_announced(sim: &Sim, h: u64, author: &libp2p_identity::PeerId) -> (usize, usize) {
    let id = author.to_bytes();
    let mut out = (0, 0);
    for k in frames(sim, h) {
        match k {
            Kind::Message(m) if m.author[..] == id[..] => out.0 += 1,
            Kind::Announce(a) if a.authors.iter().any(|ar| ar.author == id) => out.1 += 1,
            _ => {}
        }
    }
    out
}

#[test]
fn a_prune_or_graft_naming_an_author_changes_only_that_authors_messages() {
    let mut sim = Sim::new(3);
    let a = sim.add_node(Config::default().name("a").broadcast_tree(true));
    sim.run_for(SEC);
    let h1 = tree_neighbour(&mut sim, a, &keypair(98), "x");
    let h2 = tree_neighbour(&mut sim, a, &keypair(96), "y");
    let me = sim.peer_id(a);
    // Another author w, known before the prune: a new author's tree starts as a copy
    // of an existing one (PROTOCOL.md section 7.1), so w's is made now, all eager.
    let w = keypair(97);
    let (m1, h1w) = signed(&w, 1, [0; 32]);
    let (m2, _) = signed(&w, 2, h1w);
    sim.raw_send(h2, &m1);
    sim.send(a, ROOM, "first");
    sim.run_for(SEC);
    let wid = w.public().to_peer_id();
    assert_eq!(full_and_announced(&sim, h1, &wid), (1, 0));
    assert_eq!(
        full_and_announced(&sim, h1, &me),
        (1, 0),
        "every link starts eager"
    );
    let link = |authors: Vec<Vec<u8>>| wire::TreeLink {
        room: ROOM.into(),
        authors,
    };
    sim.raw_send(
        h1,
        &Frame::new(Kind::Prune(link(vec![me.to_bytes()]))).to_wire(),
    );
    sim.run_for(SEC);
    // The other author's next message, from the other neighbour: still in full to x.
    sim.raw_send(h2, &m2);
    sim.send(a, ROOM, "second");
    sim.run_for(SEC);
    assert_eq!(full_and_announced(&sim, h1, &wid), (2, 0), "eager for w");
    assert_eq!(full_and_announced(&sim, h1, &me), (1, 1), "lazy for a");
    assert_eq!(
        full_and_announced(&sim, h2, &me),
        (2, 0),
        "y was not pruned"
    );
    sim.raw_send(
        h1,
        &Frame::new(Kind::Graft(link(vec![me.to_bytes()]))).to_wire(),
    );
    sim.run_for(SEC);
    sim.send(a, ROOM, "third");
    sim.run_for(SEC);
    assert_eq!(
        full_and_announced(&sim, h1, &me),
        (2, 1),
        "eager for a again"
    );
    assert!(!sim.raw_closed(h1) && !sim.raw_closed(h2));
}

#[test]
fn tree_frame_vectors_match_protocol_md() {
    let author = libp2p_identity::Keypair::ed25519_from_bytes([1u8; 32])
        .unwrap()
        .public()
        .to_peer_id()
        .to_bytes();
    let announce = Frame::new(Kind::Announce(wire::Announce {
        room: ROOM.into(),
        authors: vec![AuthorRanges {
            author,
            floor: 0,
            ranges: vec![1, 3],
        }],
    }));
    let link = wire::TreeLink {
        room: ROOM.into(),
        authors: vec![],
    };
    let cases = [
        (
            announce,
            "3a8201370a0767656e6572616c122c0a260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c1a020103",
        ),
        (Frame::new(Kind::Prune(link.clone())), "0c8a01090a0767656e6572616c"),
        (Frame::new(Kind::Graft(link)), "0c9201090a0767656e6572616c"),
    ];
    for (frame, hex) in cases {
        assert_eq!(hex::encode(frame.to_wire()), hex);
        let payload = hex::decode(hex).unwrap();
        assert_eq!(Frame::decode_payload(&payload[1..]).unwrap(), frame);
    }
}

#[test]
fn sim_without_message_events_still_delivers_and_counts() {
    let mut sim = network(6, 4, |_| true);
    sim.keep_messages = false;
    let (done, _) = burst(&mut sim, 20, 20, Duration::from_millis(10), 5);
    assert!(done);
    assert!(sim.texts(1, ROOM).is_empty(), "no message events kept");
    // Latency is still recorded: each message reached the 5 other nodes, no sooner
    // than the 5 ms link latency.
    assert_eq!(sim.latency_ms.iter().sum::<u64>(), 20 * 5);
    assert!(sim.latency_quantile(0.0).is_some_and(|ms| ms >= 4));
    let delivered: u64 = (0..6).map(|i| sim.node(i).stats().delivered).sum();
    assert_eq!(delivered, 20 * 6);
}

/// Mallory's message `seq` (following `prev`) with a `link_prev` naming message 1 of a
/// made-up author `k`; and the message's hash.
fn with_made_up_link_prev(
    mallory: &libp2p_identity::Keypair,
    seq: u64,
    prev: [u8; 32],
    k: u64,
) -> (Vec<u8>, [u8; 32]) {
    let (bytes, hash) = signed(mallory, seq, prev);
    let mut dec = echo_proto::codec::FrameDecoder::new(1 << 20);
    dec.extend(&bytes);
    let mut f = Frame::decode_payload(&dec.decode().unwrap().unwrap()).unwrap();
    f.link_prev = Some(wire::LinkPrev {
        author: keypair(10_000 + k).public().to_peer_id().to_bytes().into(),
        seq: 1,
    });
    (f.to_wire().to_vec(), hash)
}

#[test]
fn requests_for_messages_a_link_prev_names_are_bounded() {
    let mut sim = Sim::new(4);
    let a = sim.add_node(Config::default().name("a").broadcast_tree(true));
    sim.run_for(SEC);
    let mallory = keypair(98);
    let h = tree_neighbour(&mut sim, a, &mallory, "mallory");
    // 1,500 of mallory's own messages, each naming another made-up author's message as
    // the one pushed before it: each is "lost", so each could make the node ask.
    let mut prev = [0u8; 32];
    let mut wire = Vec::new();
    for seq in 1..=1_500u64 {
        let (bytes, hash) = with_made_up_link_prev(&mallory, seq, prev, seq);
        wire.extend_from_slice(&bytes);
        prev = hash;
    }
    sim.raw_send(h, &wire);
    sim.run_for(Duration::from_millis(100));
    let s = sim.node(a).stats();
    assert_eq!(s.tree_link_requests, 1024, "bounded at MAX_MISSING");
    assert_eq!(requests(&sim, h).len() as u64, s.repair_requests);
    assert!(!sim.raw_closed(h));
}

/// The per-author tree state a neighbour can fill is bounded by the authors a room
/// keeps (`Config::max_authors`, plus a slack of 64 evicted ones), even between the
/// sweeps that drop evicted authors: a neighbour that brings 400 new authors, pruning
/// each as it comes, leaves lazy links for at most those.
#[test]
fn per_author_tree_state_is_bounded_by_the_authors_kept() {
    let max_authors = 8;
    let mut sim = Sim::new(5);
    let a = sim.add_node(
        Config::default()
            .name("a")
            .broadcast_tree(true)
            .max_authors(max_authors),
    );
    sim.run_for(SEC);
    let h = tree_neighbour(&mut sim, a, &keypair(98), "mallory");
    let mut wire = Vec::new();
    for k in 0..400u64 {
        let author = keypair(3_000 + k);
        wire.extend_from_slice(&signed(&author, 1, [0; 32]).0);
        let prune = wire::TreeLink {
            room: ROOM.into(),
            authors: vec![author.public().to_peer_id().to_bytes()],
        };
        wire.extend_from_slice(&Frame::new(Kind::Prune(prune)).to_wire());
    }
    sim.raw_send(h, &wire);
    sim.run_for(Duration::from_millis(20));
    let s = sim.node(a).stats();
    // One neighbour: at most max_authors + TREE_SLACK (64) authors' trees, one link each
    // (400 before the bound; the sweep came only after a second).
    assert!(
        s.tree_lazy <= (max_authors + 64) as u64,
        "{} lazy links for {max_authors} authors kept",
        s.tree_lazy
    );
    assert!(!sim.raw_closed(h));
}

/// Announced ids (per `AuthorRanges`, `[start, end)` pairs) of `author` that a raw peer
/// received.
fn announced_ids(sim: &Sim, h: u64, author: &libp2p_identity::PeerId) -> Vec<u64> {
    let id = author.to_bytes();
    let mut out = Vec::new();
    for k in frames(sim, h) {
        if let Kind::Announce(a) = k {
            for ar in a.authors.iter().filter(|ar| ar.author == id) {
                for pair in ar.ranges.chunks(2) {
                    if let [start, end] = *pair {
                        out.extend(start..end);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn announcements_queued_for_a_lazy_neighbour_are_bounded() {
    // The node keeps at most 4,096 ids (MAX_PENDING_IDS) waiting for the next
    // announcement round; a neighbour that pushes more within one round (50 ms) cannot
    // grow that queue: the rest is dropped from the round (summaries still carry it),
    // and nothing else is lost.
    const MAX_PENDING_IDS: u64 = 4096;
    let mut sim = Sim::new(5);
    let a = sim.add_node(
        Config::default()
            .name("a")
            .broadcast_tree(true)
            .rate_limit(None),
    );
    sim.run_for(SEC);
    let x = tree_neighbour(&mut sim, a, &keypair(90), "x");
    let y = tree_neighbour(&mut sim, a, &keypair(91), "y");
    // x prunes the whole room: every author's messages go to it as announcements.
    let prune = wire::TreeLink {
        room: ROOM.into(),
        authors: vec![],
    };
    sim.raw_send(x, &Frame::new(Kind::Prune(prune)).to_wire());
    sim.run_for(SEC);
    let w = keypair(92);
    let wid = w.public().to_peer_id();
    let n = MAX_PENDING_IDS + 904;
    let (mut prev, mut burst) = ([0; 32], Vec::new());
    let mut msgs = Vec::new();
    for seq in 1..=n + 1 {
        let (m, h) = signed(&w, seq, prev);
        prev = h;
        msgs.push(m);
    }
    for m in &msgs[..n as usize] {
        burst.extend_from_slice(m);
    }
    // y pushes n of w's messages at once, all new to the node.
    sim.raw_send(y, &burst);
    sim.run_for(SEC);
    let s = sim.node(a).stats();
    let delivered = sim.node(a).room_log(ROOM).unwrap().count() as u64;
    assert_eq!(delivered, n, "all delivered");
    assert_eq!(
        s.tree_dropped,
        n - MAX_PENDING_IDS,
        "the excess left the round"
    );
    let ids = announced_ids(&sim, x, &wid);
    assert_eq!(ids.len() as u64, MAX_PENDING_IDS, "one capped round");
    assert_eq!(
        ids,
        (1..=MAX_PENDING_IDS).collect::<Vec<_>>(),
        "the first ones"
    );
    assert_eq!(full_and_announced(&sim, x, &wid).0, 0, "x is lazy");
    // The round went out: the queue is empty again and the next message is announced.
    sim.raw_send(y, &msgs[n as usize]);
    sim.run_for(SEC);
    assert_eq!(announced_ids(&sim, x, &wid).last(), Some(&(n + 1)));
    assert_eq!(sim.node(a).stats().tree_dropped, n - MAX_PENDING_IDS);
    assert!(!sim.raw_closed(x) && !sim.raw_closed(y));
}
