//! Unit tests of the links state machine on its own.

use super::*;
use std::time::Instant;

fn links() -> Links {
    let id = crate::message::test_key().public().to_peer_id();
    Links::new(id, Config::default(), Instant::now())
}

#[test]
fn starts_empty() {
    let l = links();
    assert_eq!(l.connected(), 0);
    assert!(l.poll_timeout().is_none());
}
