//! Unit tests of the model: ordering of late lines, bounds, focus.
use super::*;

fn key(l: u64, a: PeerId, s: u64) -> OrderKey {
    OrderKey {
        lamport: l,
        author: a,
        seq: s,
    }
}

fn msg(t: &str, a: PeerId) -> Line {
    Line::Message {
        author: a,
        name: "x".into(),
        text: t.into(),
        own: false,
        history: false,
        mention: false,
        receipt: None,
    }
}

#[test]
fn late_messages_go_where_they_belong() {
    let a = libp2p_identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let mut v = View::new(ViewId::Room("r".into()), &Limits::TUI);
    v.push(0, Line::Info("joined".into()));
    v.insert(key(1, a, 1), 0, msg("one", a));
    v.insert(key(3, a, 3), 0, msg("three", a));
    v.push(0, Line::Info("after three".into()));
    assert_eq!(v.insert(key(2, a, 2), 0, msg("two", a)), 2);
    // Duplicates are not shown twice.
    assert_eq!(v.insert(key(2, a, 2), 0, msg("two", a)), 2);
    let texts: Vec<String> = v
        .entries
        .iter()
        .map(|e| match &e.line {
            Line::Message { text, .. } => text.clone(),
            Line::Info(t) | Line::Error(t) | Line::Address(t) => t.clone(),
        })
        .collect();
    assert_eq!(texts, ["joined", "one", "two", "three", "after three"]);
}

fn pid() -> PeerId {
    libp2p_identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
}

#[test]
fn a_flood_of_lines_and_conversations_stays_within_the_limits() {
    let limits = Limits::TUI;
    let mut m = Model::new(pid(), "me".into(), vec![], limits);
    m.view_mut(&ViewId::Room("general".into()));
    let big = "x".repeat(16 * 1024);
    // One peer floods a conversation; 10,000 identities each open one.
    let flooder = pid();
    for _ in 0..5_000 {
        m.view_mut(&ViewId::Direct(flooder))
            .push(0, msg(&big, flooder));
        m.trim_total();
    }
    for i in 0..10_000u64 {
        let p = pid();
        m.view_mut(&ViewId::Direct(p)).push(i, msg(&big, p));
        m.peer_up(
            p,
            PeerView {
                name: "spam".into(),
                online: false,
                rtt: None,
                addr: None,
                legacy: false,
                relayed: false,
                seen: 0,
            },
        );
        m.trim_total();
        let room_lines = m.views[0].entries.len();
        assert!(room_lines <= limits.view_lines);
    }
    let directs = m
        .views
        .iter()
        .filter(|v| matches!(v.id, ViewId::Direct(_)))
        .count();
    assert_eq!(directs, limits.directs);
    assert!(m.bytes_held() <= limits.total_bytes, "{}", m.bytes_held());
    assert!(
        m.lines_held() <= limits.total_bytes / (16 * 1024),
        "{}",
        m.lines_held()
    );
    assert!(m
        .views
        .iter()
        .all(|v| v.entries.len() <= limits.view_lines && v.bytes <= limits.view_bytes));
    assert_eq!(m.peers.len(), limits.peers);
    // The room survives (it is current), the newest conversation is open.
    assert_eq!(m.current_id(), Some(&ViewId::Room("general".into())));
}

#[test]
fn leaving_the_current_room_focuses_a_room_never_a_direct_conversation() {
    let (bob, carol) = (pid(), pid());
    let mut m = Model::new(pid(), "me".into(), Vec::new(), Limits::TUI);
    for id in [
        ViewId::Room("general".into()),
        ViewId::Room("side".into()),
        ViewId::Direct(bob),
        ViewId::Direct(carol),
    ] {
        m.view_mut(&id);
    }
    let room = |r: &str| Some(ViewId::Room(r.into()));
    // Leaving the last room in the list: the room before it, not the conversation after.
    m.switch_to(&ViewId::Room("side".into()));
    m.remove_room("side");
    assert_eq!(m.current_id().cloned(), room("general"));
    // Leaving a room that is not current keeps the focus where the user put it.
    m.view_mut(&ViewId::Room("side".into()));
    m.switch_to(&ViewId::Direct(bob));
    m.remove_room("side");
    assert_eq!(m.current_id(), Some(&ViewId::Direct(bob)));
    // Leaving the first room focuses the next one.
    m.view_mut(&ViewId::Room("side".into()));
    m.switch_to(&ViewId::Room("general".into()));
    m.remove_room("general");
    assert_eq!(m.current_id().cloned(), room("side"));
    // Leaving the only room: no view (the status view), though conversations are open.
    m.remove_room("side");
    assert_eq!(m.current_id(), None);
    // A new conversation does not take the focus; joining a room does not either
    // until the app switches to it.
    m.view_mut(&ViewId::Direct(pid()));
    assert_eq!(m.current_id(), None);
    m.view_mut(&ViewId::Room("new".into()));
    assert_eq!(m.current_id(), None);
    m.switch_to(&ViewId::Room("new".into()));
    assert_eq!(m.current_id().cloned(), room("new"));
}

#[test]
fn a_view_keeps_its_newest_lines_and_headless_keeps_none() {
    let a = pid();
    let limits = Limits {
        view_lines: 3,
        ..Limits::TUI
    };
    let mut v = View::new(ViewId::Room("r".into()), &limits);
    for i in 1..=5 {
        v.insert(key(i, a, i), 0, msg(&i.to_string(), a));
    }
    let texts: Vec<_> = v
        .entries
        .iter()
        .map(|e| match &e.line {
            Line::Message { text, .. } => text.clone(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(texts, ["3", "4", "5"]);
    assert!(v.trimmed);
    assert_eq!(v.added, 5);
    // Older than everything held: left to the database.
    v.insert(key(1, a, 1), 0, msg("old", a));
    assert_eq!(v.entries.len(), 3);
    let mut h = View::new(ViewId::Room("r".into()), &Limits::HEADLESS);
    for i in 0..100 {
        h.push(i, msg("line", a));
    }
    assert!(h.entries.is_empty());
    assert_eq!(h.bytes, 0);
    assert_eq!(h.added, 100);
}

#[test]
fn scrolling_back_holds_older_lines_until_back_at_the_bottom() {
    let a = pid();
    let limits = Limits {
        view_lines: 3,
        ..Limits::TUI
    };
    let mut v = View::new(ViewId::Room("r".into()), &limits);
    for i in 4..=8 {
        v.insert(key(i, a, i), 0, msg(&i.to_string(), a));
    }
    assert_eq!(v.oldest_key(), Some(key(6, a, 6)));
    let older = (1..=5)
        .map(|i| (key(i, a, i), 0, msg(&i.to_string(), a)))
        .collect();
    v.prepend_older(older, true);
    assert_eq!(v.entries.len(), 8);
    assert!(!v.trimmed);
    // A new line while scrolled back stays within limits plus what was loaded (the
    // oldest loaded line makes room).
    v.push(0, Line::Info("new".into()));
    assert_eq!(v.entries.len(), 8);
    v.end_scrollback();
    assert_eq!(v.entries.len(), 3);
    assert!(v.trimmed);
}

#[test]
fn resolves_peers() {
    let me = libp2p_identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let b1 = libp2p_identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let b2 = libp2p_identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let mut m = Model::new(me, "me".into(), vec![], Limits::TUI);
    for (id, online) in [(b1, true), (b2, false)] {
        m.peers.insert(
            id,
            PeerView {
                name: "bob".into(),
                online,
                rtt: None,
                addr: None,
                legacy: false,
                relayed: false,
                seen: 0,
            },
        );
    }
    assert_eq!(m.resolve_peer("bob"), Ok(b1));
    assert_eq!(m.resolve_peer(&m.display(&b2)), Ok(b2));
    assert_eq!(m.resolve_peer(&b2.to_base58()), Ok(b2));
    assert!(m.resolve_peer("carol").is_err());
    m.peers.get_mut(&b2).unwrap().online = true;
    assert!(m.resolve_peer("bob").unwrap_err().contains("ambiguous"));
}

#[test]
fn a_direct_message_mark_changes_in_place_and_never_goes_back() {
    use echo_proto::DmStatus::{Delivered, Pending, Read};
    let me = PeerId::random();
    let bob = PeerId::random();
    let mut m = Model::new(me, "alice".into(), Vec::new(), Limits::TUI);
    let own = |t: &str, seq| Line::Message {
        author: me,
        name: "alice".into(),
        text: t.into(),
        own: true,
        history: false,
        mention: false,
        receipt: Some((seq, Pending)),
    };
    let id = ViewId::Direct(bob);
    m.view_mut(&id).push(0, own("one", 1));
    m.view_mut(&id).push(0, own("two", 2));
    let lines = m.view_mut(&id).entries.len();
    let marks = |m: &mut Model| -> Vec<Option<(u64, echo_proto::DmStatus)>> {
        m.view_mut(&id)
            .entries
            .iter()
            .map(|e| match &e.line {
                Line::Message { receipt, .. } => *receipt,
                _ => None,
            })
            .collect()
    };
    assert!(m.set_dm_status(&bob, 2, Read));
    assert!(m.set_dm_status(&bob, 1, Delivered));
    assert!(m.set_dm_status(&bob, 2, Delivered), "a late receipt");
    assert_eq!(marks(&mut m), [Some((1, Delivered)), Some((2, Read))]);
    assert_eq!(m.view_mut(&id).entries.len(), lines, "no extra lines");
    assert!(!m.set_dm_status(&bob, 3, Read), "not held");
    assert!(!m.set_dm_status(&me, 1, Read), "no such conversation");
}
