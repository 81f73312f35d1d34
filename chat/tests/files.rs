//! File sharing between headless apps on 127.0.0.1: `/share`, the offer in the room,
//! `/get`, progress, the bytes, names made safe, a restart that resumes.

mod common;

use std::path::Path;

use base64::Engine;
use common::Chat;
use echo_proto::blob::{compute_outboard, Offer};
use serde_json::Value;

fn is(v: &Value, event: &str) -> bool {
    v["event"] == event
}

/// Deterministic bytes that do not compress.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn connected(tmp: &Path) -> (Chat, Chat) {
    let alice = Chat::start("alice", &tmp.join("alice"), &[]);
    let mut bob = Chat::start("bob", &tmp.join("bob"), &["--connect", &alice.addr]);
    bob.wait("peer_up alice", |v| {
        is(v, "peer_up") && v["name"] == "alice"
    });
    (alice, bob)
}

#[test]
fn a_shared_file_arrives_byte_identical_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut alice, mut bob) = connected(tmp.path());
    let data = content(3 << 20, 1);
    let src = tmp.path().join("holiday report.pdf");
    std::fs::write(&src, &data).unwrap();

    alice.send(&format!("/share {}", src.display()));
    let shared = alice.wait("shared", |v| is(v, "shared"));
    assert_eq!(shared["room"], "general");
    assert_eq!(shared["offer"]["name"], "holiday report.pdf");
    assert_eq!(shared["offer"]["size"], 3 << 20);
    assert_eq!(shared["offer"]["mime"], "application/pdf");
    let id = shared["offer"]["id"].as_str().unwrap().to_string();

    // The offer is a room message: bob sees it, with the offer parsed.
    let msg = bob.wait("offer message", |v| {
        is(v, "message") && !v["offer"].is_null()
    });
    assert_eq!(msg["author"], alice.peer_id.as_str());
    assert_eq!(msg["offer"]["id"], id.as_str());

    // A file of that name is in the download dir already: it is never overwritten.
    let dl = tmp.path().join("bob").join("downloads");
    std::fs::create_dir_all(&dl).unwrap();
    std::fs::write(dl.join("holiday report.pdf"), b"mine").unwrap();
    bob.send(&format!("/get {id}"));
    let started = bob.wait("transfer_started", |v| is(v, "transfer_started"));
    assert_eq!(started["from"], alice.peer_id.as_str());
    let done = bob.wait("transfer_done", |v| is(v, "transfer_done"));
    let path = done["path"].as_str().unwrap().to_string();
    assert_eq!(Path::new(&path), dl.join("holiday report (1).pdf"));
    assert!(std::fs::read(&path).unwrap() == data, "bytes differ");
    assert_eq!(
        std::fs::read(dl.join("holiday report.pdf")).unwrap(),
        b"mine"
    );

    // Again: the app says where it is instead of fetching it twice.
    bob.send(&format!("/get {id}"));
    bob.wait("here already", |v| {
        is(v, "error")
            && v["text"]
                .as_str()
                .unwrap()
                .contains("holiday report (1).pdf")
    });

    // /files lists the offer and both downloads.
    bob.send("/files");
    let files = bob.wait("files", |v| is(v, "files"));
    assert_eq!(files["offers"][0]["id"], id.as_str());
    let states: Vec<_> = files["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["done"]);

    // Bad commands are errors, and nothing else changes.
    bob.send("/get 0000");
    bob.wait("short id", |v| {
        is(v, "error") && v["text"].as_str().unwrap().contains("hex digits")
    });
    bob.send("/get 00000000");
    bob.wait("unknown id", |v| {
        is(v, "error") && v["text"].as_str().unwrap().contains("no file offer")
    });
    bob.send(&format!(
        "/share {}",
        tmp.path().join("missing.bin").display()
    ));
    bob.wait("missing file", |v| {
        is(v, "error") && v["text"].as_str().unwrap().contains("cannot share")
    });
    bob.send("/cancel 1234abcd");
    bob.wait("nothing to cancel", |v| is(v, "error"));
    bob.send("still chatting");
    alice.wait_message("general", "still chatting");
}

/// The text an offer travels as (the app's format, rebuilt here from the outside).
fn offer_text(offer: &Offer, human: &str) -> String {
    format!(
        "[file] {} ({human}) /get {} echo-offer:1:{}",
        offer.name,
        offer.short_id(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(offer.encode().unwrap())
    )
}

#[test]
fn a_hostile_file_name_lands_inside_the_download_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let data = content(100_000, 2);
    let hash = compute_outboard(&data[..], data.len() as u64, |_, _| Ok(())).unwrap();
    let mut alice = Chat::start("alice", &tmp.path().join("alice"), &[]);
    // Alice posts an offer whose name climbs out of any folder, then shares the bytes
    // under a plain name (so her node can serve them).
    let evil = Offer {
        hash,
        size: data.len() as u64,
        name: "../../../.bashrc".into(),
        mime: String::new(),
    };
    alice.send(&offer_text(&evil, "97.7 KiB"));
    alice.wait("evil offer sent", |v| {
        is(v, "message") && !v["offer"].is_null()
    });
    let src = tmp.path().join("plain.bin");
    std::fs::write(&src, &data).unwrap();
    alice.send(&format!("/share {}", src.display()));
    alice.wait("shared", |v| is(v, "shared"));

    // Bob comes later: history brings the evil offer first.
    let mut bob = Chat::start("bob", &tmp.path().join("bob"), &["--connect", &alice.addr]);
    let m = bob.wait("evil offer", |v| is(v, "message") && !v["offer"].is_null());
    assert_eq!(m["offer"]["name"], "../../../.bashrc");
    bob.send(&format!("/get {}", hash.to_hex()));
    let done = bob.wait("transfer_done", |v| is(v, "transfer_done"));
    let path = Path::new(done["path"].as_str().unwrap()).to_path_buf();
    let dl = tmp.path().join("bob").join("downloads");
    assert_eq!(path.parent().unwrap(), dl, "{path:?} left the download dir");
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(!name.starts_with('.') && !name.contains(".."), "{name}");
    assert!(std::fs::read(&path).unwrap() == data);
    assert!(!tmp.path().join(".bashrc").exists());
}

#[test]
fn a_download_interrupted_by_kill_9_resumes_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut alice, mut bob) = connected(tmp.path());
    // Large enough that the kill lands mid-way on a debug build.
    let data = content(48 << 20, 3);
    let src = tmp.path().join("big.iso");
    std::fs::write(&src, &data).unwrap();
    alice.send(&format!("/share {}", src.display()));
    let shared = alice.wait("shared", |v| is(v, "shared"));
    let id = shared["offer"]["id"].as_str().unwrap().to_string();
    bob.wait("offer", |v| is(v, "message") && !v["offer"].is_null());
    bob.send(&format!("/get {id}"));
    let p = bob.wait("some progress", |v| {
        is(v, "transfer_done") || (is(v, "transfer_progress") && v["done"].as_u64().unwrap() > 0)
    });
    if is(&p, "transfer_done") {
        eprintln!("finished before the kill: nothing to resume on this machine");
        return;
    }
    bob.kill9();

    let bob_dir = tmp.path().join("bob");
    let mut bob = Chat::start("bob", &bob_dir, &["--connect", &alice.addr]);
    let started = bob.wait("resumed", |v| is(v, "transfer_started"));
    assert_eq!(started["resumed"], true);
    assert_eq!(started["offer"]["id"], id.as_str());
    let done = bob.wait("transfer_done", |v| is(v, "transfer_done"));
    let path = done["path"].as_str().unwrap();
    assert!(
        std::fs::read(path).unwrap() == data,
        "bytes differ after resume"
    );
    // Done: not resumed again at the next start.
    assert!(bob.quit().success());
    let mut bob = Chat::start("bob", &bob_dir, &[]);
    bob.send("/files");
    let files = bob.wait("files", |v| is(v, "files"));
    assert_eq!(files["transfers"].as_array().unwrap().len(), 0);
}
