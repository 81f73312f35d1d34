//! What lets the simulator run 1,000 nodes in bounded memory (issue 13): one decoded
//! copy of each message shared by all simulated nodes, and an event record that keeps
//! only what the checks read.

#![cfg(feature = "sim")]

use std::sync::Arc;
use std::time::Duration;

use echo_proto::sim::Sim;
use echo_proto::Event;

const ROOM: &str = "general";

/// Three nodes in a line (0 - 1 - 2), settled.
fn line(seed: u64) -> Sim {
    let mut sim = Sim::new(seed);
    for name in ["a", "b", "c"] {
        sim.add_named(name);
    }
    sim.connect(1, 0);
    sim.connect(2, 1);
    sim.run_for(Duration::from_secs(2));
    sim
}

/// Node `i`'s log entry number `k` in [`ROOM`].
fn entry(sim: &Sim, i: usize, k: usize) -> Arc<echo_proto::Message> {
    sim.node(i)
        .room_log(ROOM)
        .expect("member")
        .nth(k)
        .expect("entry")
        .clone()
}

#[test]
fn nodes_share_one_decoded_copy_of_a_message_only_with_the_memo() {
    // Without the memo every node decodes its own copy (as real nodes do).
    echo_proto::message::memo::enable(false);
    let mut sim = line(7);
    sim.send(0, ROOM, "hello");
    assert!(sim.settle(Duration::from_secs(5)));
    sim.check_all(ROOM).unwrap();
    assert!(!Arc::ptr_eq(&entry(&sim, 1, 0), &entry(&sim, 2, 0)));

    // With it, the receivers hold the same allocation; the log reads the same.
    echo_proto::message::memo::enable(true);
    let mut sim = line(8);
    sim.send(0, ROOM, "hello");
    sim.send(2, ROOM, "hi");
    assert!(sim.settle(Duration::from_secs(5)));
    sim.check_all(ROOM).unwrap();
    let (hello, hi) = (entry(&sim, 1, 0), entry(&sim, 1, 1));
    assert_eq!((hello.text(), hi.text()), ("hello", "hi"));
    assert!(Arc::ptr_eq(&hello, &entry(&sim, 2, 0)));
    assert!(Arc::ptr_eq(&hi, &entry(&sim, 0, 1)));
    echo_proto::message::memo::enable(false);
}

#[test]
fn without_keep_events_only_what_the_checks_read_is_recorded() {
    let mut sim = Sim::new(9);
    sim.keep_messages = false;
    sim.keep_events = false;
    for name in ["a", "b", "c"] {
        sim.add_named(name);
    }
    sim.connect(1, 0);
    sim.connect(2, 1);
    sim.run_for(Duration::from_secs(2));
    sim.send(0, ROOM, "hello");
    assert!(sim.settle(Duration::from_secs(5)));
    sim.check_all(ROOM).unwrap();
    for i in 0..3 {
        let events = &sim.sim_node(i).events;
        assert!(events.iter().any(|e| matches!(e, Event::Joined { .. })));
        assert!(
            events.iter().all(|e| matches!(
                e,
                Event::Joined { .. } | Event::Left { .. } | Event::Gap { .. }
            )),
            "node {i} kept {events:?}"
        );
        assert_eq!(sim.log(i, ROOM), ["hello"]);
    }
}
