//! A peer flooding direct messages, or a raw libp2p peer flooding legacy echo-go lines
//! (16 KB each, within the rate limits), does not grow the app's memory: headless mode
//! prints lines and keeps none. Reads the real binary's RSS from /proc.

mod common;

use common::Chat;

fn rss_kb(chat: &Chat) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", chat.child.id()))
        .expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn a_direct_message_flood_does_not_grow_memory() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("skipping: no /proc");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut alice = Chat::start("alice", &tmp.path().join("alice"), &[]);
    let alice_addr = alice.addr.clone();
    let mut bob = Chat::start("bob", &tmp.path().join("bob"), &["--connect", &alice_addr]);
    alice.wait("bob up", |v| v["event"] == "peer_up" && v["name"] == "bob");
    bob.wait("alice up", |v| {
        v["event"] == "peer_up" && v["name"] == "alice"
    });
    // Warm up (first allocations of the connection and printing), then measure.
    bob.send("/msg alice warm up");
    alice.wait("warm-up message", |v| v["event"] == "direct");
    let before = rss_kb(&alice);

    // 3,000 messages of 16,000 bytes (48 MB), in rounds that wait for alice to have
    // them all, so the flood stays under the rate limit.
    const ROUNDS: usize = 30;
    const PER_ROUND: usize = 100;
    let filler = "z".repeat(16_000 - 16);
    for r in 0..ROUNDS {
        let mut batch = String::new();
        for i in 0..PER_ROUND {
            batch.push_str(&format!("/msg alice {r:04}-{i:04} {filler}\n"));
        }
        bob.send_raw(batch.as_bytes());
        let last = format!("{r:04}-{:04} ", PER_ROUND - 1);
        alice.wait(&format!("round {r}"), |v| {
            v["event"] == "direct" && v["text"].as_str().is_some_and(|t| t.starts_with(&last))
        });
        // What the test keeps of the output is not alice's memory; drop it.
        alice.seen.lock().unwrap().clear();
        bob.seen.lock().unwrap().clear();
        drop(bob.drain());
    }
    let after = rss_kb(&alice);
    let growth_mb = after.saturating_sub(before) as f64 / 1024.0;
    eprintln!("alice RSS {before} kB -> {after} kB (+{growth_mb:.1} MB) over a 48 MB flood");
    assert!(
        growth_mb < 24.0,
        "alice's memory grew {growth_mb:.1} MB over the flood"
    );
    assert!(bob.quit().success());
    assert!(alice.quit().success());
}

#[path = "common/legacy.rs"]
mod legacy;

#[test]
fn a_legacy_line_flood_does_not_grow_memory() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("skipping: no /proc");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut alice = Chat::start("alice", &tmp.path().join("alice"), &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut stream = legacy::open(&rt, &alice.addr.clone());
    legacy::write(&rt, &mut stream, b"gopher|warm up\n");
    alice.wait("warm-up line", |v| {
        v["event"] == "message" && v["text"] == "warm up"
    });
    let before = rss_kb(&alice);
    // 3,000 lines of 16,000 bytes (48 MB), in rounds that wait for alice to have them.
    const ROUNDS: usize = 30;
    const PER_ROUND: usize = 100;
    let filler = "z".repeat(16_000 - 16);
    for r in 0..ROUNDS {
        let mut batch = Vec::new();
        for i in 0..PER_ROUND {
            batch.extend_from_slice(format!("gopher|{r:04}-{i:04} {filler}\n").as_bytes());
        }
        legacy::write(&rt, &mut stream, &batch);
        let last = format!("{r:04}-{:04} ", PER_ROUND - 1);
        alice.wait(&format!("round {r}"), |v| {
            v["event"] == "message" && v["text"].as_str().is_some_and(|t| t.starts_with(&last))
        });
        alice.seen.lock().unwrap().clear();
    }
    let after = rss_kb(&alice);
    let growth_mb = after.saturating_sub(before) as f64 / 1024.0;
    eprintln!("alice RSS {before} kB -> {after} kB (+{growth_mb:.1} MB) over a 48 MB legacy flood");
    assert!(
        growth_mb < 24.0,
        "alice's memory grew {growth_mb:.1} MB over the legacy flood"
    );
    assert!(alice.quit().success());
}
