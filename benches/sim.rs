//! Whole-network simulation benchmark: N nodes on a random connected topology, M room
//! messages from random authors, 1% loss on message frames. Reports the virtual time
//! until every log agrees, simulated frame deliveries per wall second and peak memory.
//!
//! `cargo bench --features sim --bench sim` (100 nodes, 10,000 messages);
//! `cargo bench --features sim --bench sim -- --nodes 1000 --msgs 10000` for the long run;
//! `-- --flood` turns the broadcast tree off (every message over every link);
//! `-- --loss-permille N` and `-- --jitter-us N` change the loss (10 ‰) and the jitter
//! (5,000 µs) of the flood phase.

mod common;

use std::time::Instant;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A memory figure of this process from /proc/self/status (`VmHWM:` peak, `VmRSS:` now).
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
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
    let tree = !std::env::args().any(|a| a == "--flood");
    let mut net = common::network::network(nodes, msgs, degree, seed, tree);
    // `--loss-permille N`: loss on room-message frames other than the default 1 %.
    let loss = arg("--loss-permille", 10) as f64 / 1000.0;
    net.sim.loss = loss;
    // `--jitter-us N`: each frame's extra delay, uniform in 0..N µs (default 5 ms, on
    // the 5 ms link latency), independent per frame; 0 shows the paths alone.
    net.sim.jitter = std::time::Duration::from_micros(arg("--jitter-us", 5_000));
    let wall = Instant::now();
    let common::network::Flood {
        converged,
        virt,
        frames,
    } = common::network::flood(&mut net, msgs);
    let secs = wall.elapsed().as_secs_f64();
    let rss_flood = (status_mib("VmRSS:"), status_mib("VmHWM:"));
    let check = net.sim.check_all("general");
    println!(
        "nodes={nodes} msgs={msgs} degree~{degree} loss={}% jitter={}us seed={seed} tree={tree}",
        loss * 100.0,
        net.sim.jitter.as_micros()
    );
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
    println!(
        "frames per delivered message: {:.2}",
        frames as f64 / (msgs * (nodes - 1)) as f64
    );
    println!(
        "delivery latency p50 / p99 / max: {:?} / {:?} / {:?} ms",
        net.sim.latency_quantile(0.5),
        net.sim.latency_quantile(0.99),
        net.sim.latency_quantile(1.0)
    );
    println!(
        "delivery latency p90 / p95 / p99.9: {:?} / {:?} / {:?} ms",
        net.sim.latency_quantile(0.9),
        net.sim.latency_quantile(0.95),
        net.sim.latency_quantile(0.999)
    );
    let st: Vec<_> = (0..nodes).map(|i| net.sim.node(i).stats()).collect();
    let sum = |f: fn(&echo_proto::Stats) -> u64| st.iter().map(f).sum::<u64>();
    println!(
        "relayed={} duplicates={} announces={} prunes={} grafts={} lazy={} repair_requests={} (link_prev {}) history_sent={}",
        sum(|s| s.relayed),
        sum(|s| s.duplicates),
        sum(|s| s.tree_announces),
        sum(|s| s.tree_prunes),
        sum(|s| s.tree_grafts),
        sum(|s| s.tree_lazy),
        sum(|s| s.repair_requests),
        sum(|s| s.tree_link_requests),
        sum(|s| s.history_sent),
    );
    println!(
        "RSS after the flood (before the checks): {:.0} MiB (peak so far {:.0} MiB)",
        rss_flood.0, rss_flood.1
    );
    println!("peak RSS: {:.0} MiB", status_mib("VmHWM:"));
    assert!(converged && check.is_ok());
}
