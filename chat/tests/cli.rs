//! Bad input at start-up: a clear message and a non-zero exit, never a panic.

mod common;

use common::{run_to_end, Chat};

fn assert_clean_failure(args: &[&str], expect: &str) {
    let (status, _out, err) = run_to_end(args);
    assert!(!status.success(), "{args:?} succeeded");
    assert!(
        err.contains(expect),
        "{args:?}: stderr lacks {expect:?}: {err}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(err.lines().count() <= 3, "{args:?}: too much noise: {err}");
}

#[test]
fn help_documents_every_flag() {
    let (status, out, _) = run_to_end(&["--help"]);
    assert!(status.success());
    for flag in [
        "--port",
        "--name",
        "--listen",
        "--connect",
        "--room",
        "--data-dir",
        "--no-mdns",
        "--mdns-interface",
        "--headless",
        "--json",
        "--log-level",
        "--runtime",
        "/connect",
        "/join",
        "/msg",
        "/quit",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn malformed_connect_address() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let d = dir.to_str().unwrap();
    assert_clean_failure(
        &[
            "--headless",
            "--no-mdns",
            "--data-dir",
            d,
            "--connect",
            "/ip4/nope/tcp/1",
        ],
        "invalid address to connect to",
    );
    // Positional too; and a parseable address that cannot be dialed.
    assert_clean_failure(
        &["--headless", "--no-mdns", "--data-dir", d, "garbage"],
        "invalid address to connect to",
    );
    assert_clean_failure(
        &[
            "--headless",
            "--no-mdns",
            "--data-dir",
            d,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--connect",
            "/dns4/example.com/udp/53",
        ],
        "cannot connect to",
    );
}

#[test]
fn port_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let dir = tmp.path().join("d");
    assert_clean_failure(
        &[
            "--headless",
            "--no-mdns",
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            &listen,
        ],
        "in use",
    );
}

#[test]
fn unusable_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    // A file where the directory should be.
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    assert_clean_failure(
        &[
            "--headless",
            "--no-mdns",
            "--data-dir",
            file.to_str().unwrap(),
        ],
        "not a directory",
    );
    // A corrupt identity key.
    let dir = tmp.path().join("corrupt");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("identity.key"), b"not a key").unwrap();
    assert_clean_failure(
        &[
            "--headless",
            "--no-mdns",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        "corrupt",
    );
    // A database that is not one.
    let dir = tmp.path().join("baddb");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("history.sqlite3"), vec![0x42u8; 4096]).unwrap();
    assert_clean_failure(
        &[
            "--headless",
            "--no-mdns",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        "history database",
    );
    // Unreadable (only meaningful when not root: root reads anything).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmp.path().join("locked");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o000)).unwrap();
        if std::fs::read_dir(&dir).is_err() {
            assert_clean_failure(
                &[
                    "--headless",
                    "--no-mdns",
                    "--data-dir",
                    dir.to_str().unwrap(),
                ],
                "data dir",
            );
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}

#[test]
fn a_data_dir_in_use_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shared");
    let first = Chat::start("one", &dir, &[]);
    assert_clean_failure(
        &[
            "--headless",
            "--no-mdns",
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ],
        "in use by another echo-chat",
    );
    assert!(first.quit().success());
}

#[test]
fn bad_flags_exit_2() {
    let (status, _, err) = run_to_end(&["--runtime", "fibers"]);
    assert_eq!(status.code(), Some(2), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let (status, _, err) = run_to_end(&[
        "--headless",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--mdns-interface",
        "no-such-if0",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("no-such-if0"), "{err}");
}

#[test]
fn a_damaged_database_names_the_file_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    // A NULL where a room name must be: what a damaged page reads as.
    let db = rusqlite::Connection::open(dir.join("history.sqlite3")).unwrap();
    db.execute_batch(
        "CREATE TABLE rooms (room TEXT, joined_at_ms INTEGER NOT NULL);
         INSERT INTO rooms VALUES (NULL, 1);",
    )
    .unwrap();
    drop(db);
    let (status, _, err) = run_to_end(&[
        "--headless",
        "--no-mdns",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(!status.success());
    assert!(err.contains("history.sqlite3"), "{err}");
    assert!(err.contains("move it aside"), "{err}");
}

#[test]
fn an_empty_identity_key_says_so_and_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("identity.key"), b"").unwrap();
    assert_clean_failure(
        &[
            "--headless",
            "--no-mdns",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        "is empty",
    );
    let (_, _, err) = run_to_end(&[
        "--headless",
        "--no-mdns",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(
        err.contains("identity.key") && err.contains("move it aside"),
        "{err}"
    );
    assert!(!err.contains("rsa") && !err.contains("feature"), "{err}");
}

#[test]
fn undecodable_stored_messages_are_counted_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let first = Chat::start("one", &dir, &[]);
    assert!(first.quit().success());
    let db = rusqlite::Connection::open(dir.join("history.sqlite3")).unwrap();
    for seq in 1..=2 {
        db.execute(
            "INSERT INTO messages (room, author, seq, lamport, sent_at_ms, name, text, wire)
             VALUES ('general', 'x', ?1, 1, 1, 'n', 't', x'ffffffff')",
            [seq],
        )
        .unwrap();
    }
    drop(db);
    let mut again = Chat::start("one", &dir, &[]);
    let e = again.wait("a word about the skipped rows", |v| {
        v["event"] == "error"
            && v["text"]
                .as_str()
                .unwrap_or("")
                .contains("could not be read")
    });
    assert!(
        e["text"].as_str().unwrap().starts_with("2 stored message"),
        "{e}"
    );
    assert!(again.quit().success());
    let db = rusqlite::Connection::open(dir.join("history.sqlite3")).unwrap();
    let kept: i64 = db
        .query_row(
            "SELECT count(*) FROM messages WHERE author = 'x'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, 2);
}

#[test]
fn a_profile_is_one_identity_and_keeps_its_name() {
    // The platform data dir, inside a temporary home.
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().to_str().unwrap();
    let env = [("XDG_DATA_HOME", home), ("HOME", home), ("USER", "someone")];
    let start = |args: &[&str]| -> (serde_json::Value, Vec<String>) {
        let mut all = vec!["--json", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"];
        all.extend_from_slice(args);
        let (status, out, err) = common::run_to_end_env(&all, &env);
        assert!(status.success(), "{args:?}: {err}");
        let events: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        let ready = events
            .iter()
            .find(|e| e["event"] == "ready")
            .expect("a ready event")
            .clone();
        let infos = events
            .iter()
            .filter(|e| e["event"] == "info")
            .map(|e| e["text"].as_str().unwrap().to_string())
            .collect();
        (ready, infos)
    };

    // NAME names a new profile: a new identity, named after it, and the start says so.
    let (alice, infos) = start(&["--name", "alice"]);
    assert_eq!(alice["profile"], "alice");
    assert_eq!(alice["new_identity"], true);
    assert_eq!(alice["name"], "alice");
    assert!(alice["data_dir"]
        .as_str()
        .unwrap()
        .ends_with("echo-chat/profiles/alice"));
    assert!(
        infos.iter().any(|i| i.contains("a new identity")
            && i.contains("profile \"alice\"")
            && i.contains("profiles/alice")),
        "{infos:?}"
    );

    // The same NAME again: the same person.
    let (again, infos) = start(&["--name", "alice"]);
    assert_eq!(again["peer_id"], alice["peer_id"]);
    assert_eq!(again["new_identity"], false);
    assert!(
        infos.iter().any(|i| i.contains("the same identity")),
        "{infos:?}"
    );

    // No NAME: the default profile, a different identity (and the start says which).
    let (default, _) = start(&[]);
    assert_eq!(default["profile"], "default");
    assert_eq!(default["new_identity"], true);
    assert_ne!(default["peer_id"], alice["peer_id"]);
    assert_eq!(default["name"], "someone");

    // A profile keeps its name: another NAME for it does not rename it, and says so.
    let (kept, infos) = start(&["--profile", "alice", "--name", "carol"]);
    assert_eq!(kept["peer_id"], alice["peer_id"]);
    assert_eq!(kept["name"], "alice");
    assert!(
        infos
            .iter()
            .any(|i| i.contains("stays \"alice\"") && i.contains("/nick carol")),
        "{infos:?}"
    );
}
