//! Whole-network simulation benchmark: N nodes on a random connected topology, M room
//! messages from random authors, 1% loss on message frames. Reports the virtual time
//! until every log agrees, simulated frame deliveries per wall second and peak memory.
//!
//! `cargo bench --features sim --bench sim` (100 nodes, 10,000 messages);
//! `cargo bench --features sim --bench sim -- --nodes 1000 --msgs 10000` for the long run.

use std::time::{Duration, Instant};

use echo_proto::sim::Sim;
use echo_proto::Config;
use rand::{Rng, SeedableRng};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` compatibility
    }
    let nodes = arg("--nodes", 100) as usize;
    let msgs = arg("--msgs", 10_000) as usize;
    let degree = arg("--degree", 4) as usize;
    let seed = arg("--seed", 1);
    let mut sim = Sim::new(seed);
    sim.loss = 0.01;
    sim.persist = false;
    // Each unique signature is verified once per run, not once per simulated node (see
    // echo_proto::message::memo); the per-message cost with verification is in benches/core.rs.
    echo_proto::message::memo::enable(true); // a `fuzzing` hook (on with `sim`)
    sim.latency = Duration::from_millis(5);
    sim.jitter = Duration::from_millis(5);
    let config = Config::default()
        .rate_limit(None)
        .target_peers(degree)
        .max_log_messages(msgs + 1);
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
    let wall = Instant::now();
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
    let converged = sim.run_until(Duration::from_secs(600), |s| {
        (0..nodes).all(|i| s.node(i).room_log("general").map_or(0, |l| l.count()) == msgs)
    });
    let virt = sim.elapsed() - v0;
    let secs = wall.elapsed().as_secs_f64();
    let frames = sim.frames_delivered() - f0;
    let check = sim.check_all("general");
    println!("nodes={nodes} msgs={msgs} degree~{degree} loss=1% seed={seed}");
    println!(
        "converged={converged} checks={}",
        if check.is_ok() {
            "ok".to_string()
        } else {
            format!("{check:?}")
        }
    );
    println!(
        "virtual time until all logs agree: {:.2} s (sending took 10 s)",
        virt.as_secs_f64()
    );
    println!("wall time: {secs:.2} s");
    println!(
        "simulated frame deliveries: {frames} ({:.0} per wall second)",
        frames as f64 / secs
    );
    println!("peak RSS: {:.0} MiB", peak_rss_mib());
    assert!(converged && check.is_ok());
}
