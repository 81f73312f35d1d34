//! `kill -9` during heavy traffic: the database still opens, keeps every message up to
//! the last moment, and the restarted node goes on without reusing sequence numbers.

mod common;

use common::Chat;
use rusqlite::Connection;

#[test]
fn kill_9_under_load_keeps_history_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let mut alice = Chat::start("alice", &tmp.path().join("alice"), &[]);
    let alice_addr = alice.addr.clone();
    let bob_dir = tmp.path().join("bob");
    let mut bob = Chat::start("bob", &bob_dir, &["--connect", &alice_addr]);
    alice.wait("bob up", |v| v["event"] == "peer_up" && v["name"] == "bob");
    bob.wait("alice up", |v| {
        v["event"] == "peer_up" && v["name"] == "alice"
    });

    // Both talk at once; bob floods.
    const N: usize = 3000;
    let mut batch = String::new();
    for i in 1..=N {
        batch.push_str(&format!("load {i}\n"));
    }
    for i in 1..=50 {
        alice.send(&format!("from alice {i}"));
    }
    bob.send(batch.trim_end());
    // Kill bob in the middle of it: once alice has seen some of the flood.
    alice.wait("part of the flood", |v| {
        v["event"] == "message" && v["text"] == "load 400"
    });
    bob.kill9();

    // The database opens and is consistent.
    let db = Connection::open(bob_dir.join("history.sqlite3")).expect("database opens");
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    // Bob's own messages are a gap-free prefix of what he sent: nothing older was lost.
    let mut st = db
        .prepare(
            "SELECT seq, text FROM messages WHERE author = ?1 AND room = 'general' ORDER BY seq",
        )
        .unwrap();
    let own: Vec<(u64, String)> = st
        .query_map([&bob.peer_id], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!own.is_empty(), "nothing of bob's was saved");
    for (i, (seq, text)) in own.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "gap in bob's saved messages");
        assert_eq!(text, &format!("load {seq}"));
    }
    let saved = own.len() as u64;
    let reserved: i64 = db
        .query_row(
            "SELECT upto FROM reservations WHERE room = 'general'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        reserved as u64 > saved,
        "reservation {reserved} not above saved seq {saved}"
    );
    drop(st);
    drop(db);
    eprintln!("bob saved {saved} of his messages before kill -9; reserved up to {reserved}");

    // Bob comes back with his history and goes on above his reservation.
    let mut bob = Chat::start("bob", &bob_dir, &["--connect", &alice_addr]);
    let last = format!("load {saved}");
    bob.wait("restored history", |v| {
        v["event"] == "message" && v["restored"] == true && v["text"] == last.as_str()
    });
    alice.wait("bob up again", |v| {
        v["event"] == "peer_up" && v["name"] == "bob"
    });
    bob.wait("alice up again", |v| {
        v["event"] == "peer_up" && v["name"] == "alice"
    });
    bob.send("after the crash");
    let m = alice.wait_message("general", "after the crash");
    assert!(m["seq"].as_u64().unwrap() >= reserved as u64, "{m}");
    for v in alice.drain() {
        assert_ne!(v["event"], "misbehaved", "{v}");
    }
    assert!(bob.quit().success());
    assert!(alice.quit().success());
}
