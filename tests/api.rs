//! The public API as an embedder sees it: messages, configuration and identities.

use std::time::Instant;

use echo_proto::Identity;
use echo_proto::{ConnId, ConnInfo, Event, Message, Node, Output, Protocol, Role};

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
        link: echo_proto::Link::Direct,
    };
    node.handle_connected(ConnId(1), info, now);
    node.handle_data(ConnId(1), b"gopher|hello from go\n", now);
    let msg = std::iter::from_fn(|| match node.poll_output() {
        Output::Wait(_) => None,
        o => Some(o),
    })
    .find_map(|o| match o {
        Output::Event(Event::Message { msg, .. }) => Some(msg),
        _ => None,
    })
    .expect("the legacy line is delivered");
    assert_eq!((msg.seq(), msg.verified()), (0, false));
    assert_eq!((msg.name(), msg.text()), ("gopher", "hello from go"));
    assert_eq!(msg.author(), peer);
    let bytes = msg.encode();
    assert!(!bytes.is_empty());
    assert_eq!(
        Message::decode(&bytes),
        Err(echo_proto::DecodeError::SeqOutOfRange(0)),
        "seq 0 is not a valid wire message"
    );
    assert!(matches!(
        Message::decode(b"\xff"),
        Err(echo_proto::DecodeError::Protobuf(_))
    ));
}

/// Every duration at `Duration::MAX`: the node is clamped, not overflowed, through a
/// handshake, messages, a dropped connection, its redial and timeouts.
#[test]
fn durations_at_max_do_not_panic() {
    use echo_proto::{Action, Config};
    use std::time::{Duration, SystemTime};

    let max = Duration::MAX;
    let config = |name: &str| {
        Config::default()
            .name(name)
            .handshake_timeout(max)
            .ping_interval(max)
            .idle_timeout(max)
            .drain_timeout(max)
            .gap_timeout(max)
            .verify_timeout(max)
            .backoff_initial(max)
            .backoff_max(max)
            .sync_interval(max)
    };
    assert!(config("x").validate().is_err(), "validate reports them");
    let mut now = Instant::now();
    let (ka, kb) = (key(11), key(12));
    let (ida, idb) = (ka.peer_id(), kb.peer_id());
    let mut a = Node::new(ka, config("a"), 1, now);
    let mut b = Node::new(kb, config("b"), 2, now);
    let addr: echo_proto::Multiaddr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{idb}")
        .parse()
        .unwrap();
    let dial = a.connect(&addr.to_string(), now).unwrap();
    let info = |peer, role, dial| ConnInfo {
        peer,
        role,
        remote_addr: "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
        protocol: Protocol::Chat,
        dial,
        link: echo_proto::Link::Direct,
    };
    fn pump(from: &mut Node, to: &mut Node, now: Instant) -> bool {
        let mut moved = false;
        loop {
            match from.poll_output() {
                Output::Transmit(t) => {
                    from.handle_sent(t.conn, t.data.len());
                    to.handle_data(t.conn, &t.data, now);
                    moved = true;
                }
                Output::Wait(_) => return moved,
                _ => {}
            }
        }
    }
    while !matches!(a.poll_output(), Output::Wait(_)) {}
    a.handle_connected(ConnId(1), info(idb, Role::Dialer, Some(dial)), now);
    b.handle_connected(ConnId(1), info(ida, Role::Listener, None), now);
    while pump(&mut a, &mut b, now) | pump(&mut b, &mut a, now) {}
    for i in 0..5 {
        a.send("general", &format!("m{i}"), SystemTime::now(), now)
            .unwrap();
        b.send("general", &format!("n{i}"), SystemTime::now(), now)
            .unwrap();
        while pump(&mut a, &mut b, now) | pump(&mut b, &mut a, now) {}
    }
    assert_eq!(a.room_log("general").unwrap().count(), 10);
    // The first pings go at once (the RTT is known right away); after them, nothing is due.
    a.handle_timeout(now);
    b.handle_timeout(now);
    while pump(&mut a, &mut b, now) | pump(&mut b, &mut a, now) {}
    for n in [&mut a, &mut b] {
        let Output::Wait(t) = n.poll_output() else {
            panic!("drained");
        };
        assert!(t.is_none_or(|t| t > now));
        now += Duration::from_secs(3600);
        n.handle_timeout(now);
    }
    // The connection drops: a redials after its (clamped) backoff.
    a.handle_closed(ConnId(1), "reset", now);
    b.handle_closed(ConnId(1), "reset", now);
    for n in [&mut a, &mut b] {
        let wait = loop {
            if let Output::Wait(t) = n.poll_output() {
                break t;
            }
        };
        if let Some(t) = wait {
            n.handle_timeout(t);
        }
        n.handle_timeout(now + Duration::from_secs(86_400 * 365 * 50));
        loop {
            match n.poll_output() {
                Output::Action(Action::Dial { dial, .. }) => {
                    n.handle_dial_failed(dial, "refused", now)
                }
                Output::Wait(_) => break,
                _ => {}
            }
        }
    }
}

#[test]
fn validate_names_the_bad_setting() {
    use echo_proto::{Config, ConfigError, RateLimit};
    use std::time::Duration;

    assert_eq!(Config::default().validate(), Ok(()));
    assert_eq!(
        Config::default().sign_every(0).validate(),
        Err(ConfigError::Zero {
            field: "sign_every"
        })
    );
    assert_eq!(
        Config::default().ping_interval(Duration::ZERO).validate(),
        Err(ConfigError::Zero {
            field: "ping_interval"
        })
    );
    assert!(matches!(
        Config::default().gap_timeout(Duration::MAX).validate(),
        Err(ConfigError::TooLong {
            field: "gap_timeout",
            ..
        })
    ));
    assert!(matches!(
        Config::default()
            .backoff_initial(Duration::from_secs(10))
            .backoff_max(Duration::from_secs(1))
            .validate(),
        Err(ConfigError::Inconsistent(_))
    ));
    let nan = RateLimit::default().bytes_per_sec(f64::NAN);
    assert_eq!(
        Config::default().rate_limit(Some(nan)).validate(),
        Err(ConfigError::BadRate {
            field: "bytes_per_sec"
        })
    );
    assert!(matches!(
        Config::default().name("").validate(),
        Err(ConfigError::BadName { field: "name", .. })
    ));
    assert!(matches!(
        Config::default()
            .default_room(Some("two words".into()))
            .validate(),
        Err(ConfigError::BadName {
            field: "default_room",
            ..
        })
    ));
}

/// The same stream of room messages, cut into chunks of any size (frames split across
/// chunks, read in place or through the decoder's buffer), delivers every message once.
#[test]
fn any_chunking_delivers_every_message() {
    use std::time::SystemTime;
    let now = Instant::now();
    let config = echo_proto::Config::default().rate_limit(None);
    let connect = |a: &mut Node, b: &mut Node| {
        let info = |peer, role| ConnInfo {
            peer,
            role,
            remote_addr: "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
            protocol: Protocol::Chat,
            dial: None,
            link: echo_proto::Link::Direct,
        };
        a.handle_connected(ConnId(1), info(b.peer_id(), Role::Dialer), now);
        b.handle_connected(ConnId(1), info(a.peer_id(), Role::Listener), now);
        fn pump(from: &mut Node, to: &mut Node, now: Instant) {
            loop {
                match from.poll_output() {
                    Output::Transmit(t) => to.handle_data(t.conn, &t.data, now),
                    Output::Wait(_) => return,
                    _ => {}
                }
            }
        }
        for _ in 0..3 {
            pump(a, b, now);
            pump(b, a, now);
        }
    };
    // The sender's bytes for 40 messages (a signature every 8th).
    let (mut a, mut b0) = (
        Node::new(key(1), config.clone().sign_every(8), 1, now),
        Node::new(key(2), config.clone(), 2, now),
    );
    let _ = a.join("general", now);
    let _ = b0.join("general", now);
    connect(&mut a, &mut b0);
    let mut wire = Vec::new();
    for i in 0..40 {
        a.send(
            "general",
            &format!("message {i} {}", "x".repeat(i * 7)),
            SystemTime::UNIX_EPOCH,
            now,
        )
        .unwrap();
        loop {
            match a.poll_output() {
                Output::Transmit(t) => wire.extend_from_slice(&t.data),
                Output::Wait(_) => break,
                _ => {}
            }
        }
    }
    for step in [1, 2, 3, 7, 64, 333, 1000, wire.len()] {
        let mut b = Node::new(key(2), config.clone(), 2, now);
        let _ = b.join("general", now);
        let mut a2 = Node::new(key(1), config.clone(), 1, now);
        let _ = a2.join("general", now);
        connect(&mut a2, &mut b);
        for chunk in wire.chunks(step) {
            b.handle_data(ConnId(1), chunk, now);
        }
        let mut texts = Vec::new();
        loop {
            match b.poll_output() {
                Output::Event(Event::Message { msg, .. }) => texts.push(msg.seq()),
                Output::Wait(_) => break,
                _ => {}
            }
        }
        assert_eq!(texts, (1..=40).collect::<Vec<u64>>(), "chunks of {step}");
    }
}
