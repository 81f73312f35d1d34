//! The simulator workload shared by `sim.rs` (wall clock) and `icount.rs` (instructions):
//! N nodes on a random connected topology, M room messages from random authors, 1 % loss
//! on message frames.

use std::time::Duration;

use echo_proto::sim::Sim;
use echo_proto::Config;
use rand::{Rng, SeedableRng};

/// A connected, settled network ready for [`flood`].
pub struct Network {
    pub sim: Sim,
    pub nodes: usize,
    rng: rand_chacha::ChaCha8Rng,
}

/// What a flood produced.
pub struct Flood {
    pub converged: bool,
    /// Virtual time from the first message until every log agreed.
    pub virt: Duration,
    /// Frames delivered during the flood.
    pub frames: u64,
}

/// Builds the network and lets it settle for 5 virtual seconds. `tree`: whether nodes
/// offer the broadcast tree (`false`: every message floods every link).
pub fn network(nodes: usize, msgs: usize, degree: usize, seed: u64, tree: bool) -> Network {
    let mut sim = Sim::new(seed);
    sim.loss = 0.01;
    sim.persist = false;
    // Logs hold every message; the event record would hold each a second time.
    sim.keep_messages = false;
    // Nor every peer and profile event (a million of them with 1,000 nodes).
    sim.keep_events = false;
    // Each unique signature is verified once per run, not once per simulated node (see
    // echo_proto::message::memo); the per-message cost with verification is in benches/core.rs.
    echo_proto::message::memo::enable(true); // a `fuzzing` hook (on with `sim`)
    sim.latency = Duration::from_millis(5);
    sim.jitter = Duration::from_millis(5);
    let config = Config::default()
        .rate_limit(None)
        .target_peers(degree)
        .max_log_messages(msgs + 1)
        .broadcast_tree(tree);
    for i in 0..nodes {
        sim.add_node(config.clone().name(format!("n{i}")));
    }
    // Random connected topology: a random tree plus `degree/2` random extra links each.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for i in 1..nodes {
        let parent = rng.random_range(0..i);
        sim.connect(i, parent);
    }
    for i in 0..nodes {
        for _ in 0..degree / 2 {
            let j = rng.random_range(0..nodes);
            if j != i {
                sim.connect(i, j);
            }
        }
    }
    sim.run_for(Duration::from_secs(5));
    Network { sim, nodes, rng }
}

/// Sends `msgs` messages over 10 virtual seconds from random authors and runs until every
/// log holds them all (at most 600 virtual seconds).
pub fn flood(net: &mut Network, msgs: usize) -> Flood {
    let (sim, rng, nodes) = (&mut net.sim, &mut net.rng, net.nodes);
    let v0 = sim.elapsed();
    let f0 = sim.frames_delivered();
    // 10,000 messages over 10 virtual seconds from random authors.
    let spacing = Duration::from_micros(10_000_000 / msgs as u64);
    for k in 0..msgs {
        let who = rng.random_range(0..nodes);
        sim.send(
            who,
            "general",
            &format!("message {k} with some text to carry"),
        );
        sim.run_for(spacing);
    }
    let all =
        |s: &Sim| (0..nodes).all(|i| s.node(i).room_log("general").map_or(0, |l| l.len()) == msgs);
    if std::env::var_os("SIM_TRACE").is_some() {
        // Every 250 ms of virtual time: how many (node, message) pairs are still missing.
        for _ in 0..80 {
            if all(sim) {
                break;
            }
            let missing: usize = (0..nodes)
                .map(|i| msgs - sim.node(i).room_log("general").map_or(0, |l| l.len()))
                .sum();
            println!(
                "t={:.2}s missing={missing}",
                (sim.elapsed() - v0).as_secs_f64()
            );
            sim.run_for(Duration::from_millis(250));
        }
    }
    let converged = sim.run_until(Duration::from_secs(600), all);
    let virt = sim.elapsed() - v0;
    Flood {
        converged,
        virt,
        frames: sim.frames_delivered() - f0,
    }
}
