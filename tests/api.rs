//! The public API as an embedder sees it: messages, configuration and identities.

use std::time::Instant;

use echo_proto::Identity;
use echo_proto::{ConnId, ConnInfo, Event, Message, Node, Protocol, Role};

fn key(n: u8) -> Identity {
    Identity::from_secret_bytes([n; 32])
}

/// A legacy echo-go line becomes a message with `seq` 0; encoding it for storage used to
/// underflow `seq - 1` and panic in debug builds.
#[test]
fn legacy_message_encodes_without_panic() {
    let now = Instant::now();
    let mut node = Node::new(key(1), echo_proto::Config::default(), 1, now);
    let peer = key(2).peer_id();
    let info = ConnInfo {
        peer,
        role: Role::Listener,
        remote_addr: "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
        protocol: Protocol::Legacy,
        dial: None,
    };
    node.handle_connected(ConnId(1), info, now);
    node.handle_data(ConnId(1), b"gopher|hello from go\n", now);
    let msg = std::iter::from_fn(|| node.poll_event())
        .find_map(|e| match e {
            Event::Message { msg, .. } => Some(msg),
            _ => None,
        })
        .expect("the legacy line is delivered");
    assert_eq!((msg.seq(), msg.verified()), (0, false));
    assert_eq!((msg.name(), msg.text()), ("gopher", "hello from go"));
    assert_eq!(msg.author(), peer);
    let bytes = msg.encode();
    assert!(!bytes.is_empty());
    assert!(
        Message::decode(&bytes).is_err(),
        "seq 0 is not a valid wire message"
    );
}
