//! Headless input at the edges: everything accepted from stdin is stored before the
//! process exits (after `/quit`, at end of input, with a peer connected), and a line that
//! is not UTF-8 is reported without ending the node.

mod common;

use common::{stored_count, Chat};

/// Types `n` lines at once (one write) so they are still in flight when input ends.
fn type_lines(chat: &mut Chat, prefix: &str, n: usize, tail: &str) {
    let mut batch = String::new();
    for i in 1..=n {
        batch.push_str(&format!("{prefix} {i}\n"));
    }
    batch.push_str(tail);
    chat.send_raw(batch.as_bytes());
}

#[test]
fn lines_typed_before_quit_are_all_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("alice");
    let mut alice = Chat::start("alice", &dir, &[]);
    let id = alice.peer_id.clone();
    type_lines(&mut alice, "before quit", 200, "/quit\n");
    assert!(alice.wait_exit().success());
    assert_eq!(
        stored_count(&dir, &id, "before quit "),
        200,
        "{}",
        alice.tail()
    );
    // And each was printed as a message event.
    let printed = alice
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("\"event\":\"message\"") && l.contains("before quit "))
        .count();
    assert_eq!(printed, 200);
}

#[test]
fn lines_typed_before_end_of_input_are_all_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("alice");
    let mut alice = Chat::start("alice", &dir, &[]);
    let id = alice.peer_id.clone();
    type_lines(&mut alice, "before eof", 200, "");
    alice.close_stdin();
    assert!(alice.wait_exit().success());
    assert_eq!(
        stored_count(&dir, &id, "before eof "),
        200,
        "{}",
        alice.tail()
    );
}

#[test]
fn lines_typed_before_quit_with_a_peer_connected_are_all_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bob = Chat::start("bob", &tmp.path().join("bob"), &[]);
    let bob_addr = bob.addr.clone();
    let dir = tmp.path().join("alice");
    let mut alice = Chat::start("alice", &dir, &["--connect", &bob_addr]);
    alice.wait("bob up", |v| v["event"] == "peer_up" && v["name"] == "bob");
    let id = alice.peer_id.clone();
    type_lines(&mut alice, "with peer", 500, "/quit\n");
    assert!(alice.wait_exit().success());
    assert_eq!(
        stored_count(&dir, &id, "with peer "),
        500,
        "{}",
        alice.tail()
    );
    drop(bob.drain());
}

#[test]
fn an_invalid_utf8_line_is_reported_and_later_lines_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("alice");
    let mut alice = Chat::start("alice", &dir, &[]);
    alice.send("first");
    alice.wait_message("general", "first");
    alice.send_raw(b"bad \xff byte\n");
    let e = alice.wait("error for the bad line", |v| v["event"] == "error");
    assert!(
        e["text"].as_str().unwrap().contains("UTF-8"),
        "error does not say what is wrong: {e}"
    );
    alice.send("after the bad line");
    alice.wait_message("general", "after the bad line");
    assert!(alice.quit().success());
}
