//! History convergence under arbitrary network schedules: the deterministic simulator
//! with 2–6 honest nodes, driven by an arbitrary list of operations — sends, time steps,
//! loss/duplication/reordering settings, partitions and heals, crashes and restarts from
//! the persisted store (optionally losing the newest writes), late joiners, leaving and
//! rejoining the room.
//!
//! At the end every partition is healed, faults are switched off and the network runs
//! until quiet; then the simulator's checkers must hold: every live member holds the
//! same log in the same order, no message was delivered twice within a node's
//! incarnation, per-author order was kept except across reported gaps and history
//! backfill, and every message sent by a node that never crashed is in every live
//! member's log.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use echo_proto::sim::Sim;
use libfuzzer_sys::fuzz_target;

const ROOM: &str = "general";

#[derive(Debug, Arbitrary)]
enum Op {
    Send { node: u8 },
    Step { ms: u16 },
    Faults { loss: u8, dup: u8, reorder: u8 },
    Partition { a: u8, b: u8 },
    Heal { a: u8, b: u8 },
    Crash { node: u8, lose: u8 },
    Restart { node: u8 },
    Join,
    Toggle { node: u8 },
}

#[derive(Debug, Arbitrary)]
struct Input {
    seed: u64,
    nodes: u8,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let n = 2 + (input.nodes % 5) as usize;
    let mut sim = Sim::new(input.seed);
    sim.jitter = Duration::from_millis(2);
    for i in 0..n {
        sim.add_named(&format!("f{i}"));
    }
    for i in 1..n {
        sim.connect(i, (input.seed as usize).wrapping_add(i) % i);
    }
    sim.run_for(Duration::from_secs(2));
    let mut sent = 0u32;
    let mut partitions = Vec::new();
    for op in input.ops.into_iter().take(48) {
        let len = sim.len();
        let pick = |x: u8| x as usize % len;
        let live = |s: &Sim, i: usize| s.sim_node(i).node.is_some();
        match op {
            Op::Send { node } => {
                let i = pick(node);
                let joined = live(&sim, i) && sim.node(i).rooms().any(|r| r == ROOM);
                if joined {
                    sent += 1;
                    sim.send(i, ROOM, &format!("m{sent}"));
                }
            }
            Op::Step { ms } => sim.run_for(Duration::from_millis(ms as u64 % 3000)),
            Op::Faults { loss, dup, reorder } => {
                sim.loss = (loss % 40) as f64 / 100.0;
                sim.duplicate = (dup % 40) as f64 / 100.0;
                sim.reorder = (reorder % 40) as f64 / 100.0;
            }
            Op::Partition { a, b } => {
                let (a, b) = (pick(a), pick(b));
                if a != b {
                    sim.partition(a, b);
                    partitions.push((a, b));
                }
            }
            Op::Heal { a, b } => sim.heal(pick(a), pick(b)),
            Op::Crash { node, lose } => {
                let i = pick(node);
                if live(&sim, i) {
                    sim.crash_losing(i, (lose % 4) as usize);
                }
            }
            Op::Restart { node } => {
                let i = pick(node);
                if !live(&sim, i) {
                    sim.restart(i);
                }
            }
            Op::Join => {
                if len < 8 {
                    let j = sim.add_named("late");
                    let to = (input.seed as usize) % j;
                    sim.connect(j, to);
                }
            }
            Op::Toggle { node } => {
                let i = pick(node);
                if live(&sim, i) {
                    let in_room = sim.node(i).rooms().any(|r| r == ROOM);
                    let _ = sim.with(i, |nd, now| {
                        if in_room {
                            nd.leave(ROOM, now)
                        } else {
                            nd.join(ROOM, now)
                        }
                    });
                }
            }
        }
    }
    // Heal everything, stop the faults, restart the crashed, and let it settle.
    for (a, b) in partitions {
        sim.heal(a, b);
    }
    sim.loss = 0.0;
    sim.duplicate = 0.0;
    sim.reorder = 0.0;
    for i in 0..sim.len() {
        if sim.sim_node(i).node.is_none() {
            sim.restart(i);
        }
    }
    // Redial backoff can reach a minute; summaries run every 10 s.
    sim.run_for(Duration::from_secs(240));
    if let Err(e) = sim.check_all(ROOM) {
        for i in 0..sim.len() {
            let Some(node) = sim.sim_node(i).node.as_ref() else {
                continue;
            };
            let log: Vec<String> = node
                .room_log(ROOM)
                .map(|l| {
                    l.map(|m| format!("{}:{}#{}", m.text(), &m.author().to_base58()[48..], m.seq()))
                        .collect()
                })
                .unwrap_or_default();
            eprintln!(
                "node {i} {}: {log:?} peers {:?}",
                &node.peer_id().to_base58()[48..],
                node.peers()
                    .iter()
                    .map(|p| p.name.clone())
                    .collect::<Vec<_>>()
            );
            eprintln!("   stats {:?}", node.stats());
            for e in &sim.sim_node(i).events {
                match e {
                    echo_proto::Event::Message { msg, position } => eprintln!(
                        "   msg {}#{} {:?}",
                        &msg.author().to_base58()[48..],
                        msg.seq(),
                        position
                    ),
                    echo_proto::Event::Joined { .. }
                    | echo_proto::Event::Left { .. }
                    | echo_proto::Event::Gap { .. } => {
                        eprintln!("   {e:?}")
                    }
                    _ => {}
                }
            }
        }
        panic!("{e}");
    }
});
