//! The terminal UI in a real terminal: tmux runs two instances; send-keys types,
//! capture-pane reads the screen. Needs tmux; skipped without it unless CI=true.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{skip_without, BIN, TIMEOUT};

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A private tmux server (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        Tmux {
            // One server per test: tests run in parallel.
            socket: format!(
                "echo-chat-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
        }
    }

    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env("TERM", "xterm-256color")
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `echo-chat <args>` in a new session of `w`x`h`, inside a shell that
    /// prints the exit status afterwards.
    fn start(&self, session: &str, w: u16, h: u16, args: &str) {
        let script = format!("{BIN} {args}; echo EXITED=$?; sleep 600");
        self.cmd(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            &w.to_string(),
            "-y",
            &h.to_string(),
            "sh",
            "-c",
            &script,
        ]);
    }

    /// Starts echo-chat on loopback, without mDNS, with its own data dir and `name`.
    fn start_chat(&self, session: &str, w: u16, h: u16, dir: &std::path::Path, name: &str) {
        self.start_chat_with(session, w, h, dir, name, "");
    }

    fn start_chat_with(
        &self,
        session: &str,
        w: u16,
        h: u16,
        dir: &std::path::Path,
        name: &str,
        extra: &str,
    ) {
        let args = format!(
            "--no-mdns --listen /ip4/127.0.0.1/tcp/0 --data-dir {d} --name {name} \
             --download-dir {d}/downloads {extra}",
            d = dir.display()
        );
        self.start(session, w, h, &args);
    }

    fn screen(&self, session: &str) -> String {
        self.cmd(&["capture-pane", "-p", "-t", session])
    }

    fn type_line(&self, session: &str, text: &str) {
        self.cmd(&["send-keys", "-t", session, "-l", text]);
        self.cmd(&["send-keys", "-t", session, "Enter"]);
    }

    fn key(&self, session: &str, key: &str) {
        self.cmd(&["send-keys", "-t", session, key]);
    }

    /// Waits until the screen satisfies `pred`; panics with the screen on timeout.
    fn wait(&self, session: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let s = self.screen(session);
            if pred(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("{session}: timed out waiting for {what}; screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the address in the status bar; returns it and the screen.
    fn address(&self, session: &str) -> (String, String) {
        let screen = self.wait(session, "address in the status bar", |s| {
            s.contains("/p2p/12D3Koo")
        });
        let status_bar = screen.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
        let addr = status_bar
            .split_whitespace()
            .find(|w| w.starts_with("/ip4/127.0.0.1/tcp/") && w.contains("/p2p/"))
            .expect("an address on screen")
            .to_string();
        (addr, screen)
    }

    fn wait_text(&self, session: &str, text: &str) -> String {
        self.wait(session, &format!("{text:?}"), |s| s.contains(text))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[test]
fn two_instances_chat_in_tmux_and_restore_the_screen() {
    if skip_without("tmux", "the TUI test drives a real terminal") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = Tmux::new();
    t.start_chat("a", 120, 30, &tmp.path().join("a"), "alice");
    t.start_chat("b", 100, 26, &tmp.path().join("b"), "bob");

    // Alice's status bar shows her address; bob connects to it.
    let (addr, _) = t.address("a");
    t.wait_text("b", "Welcome, bob#");
    t.type_line("b", &format!("/connect {addr}"));
    t.wait_text("a", "bob#");
    t.wait("b", "alice online", |s| s.contains("● alice#"));

    // Typing in one shows up in the other, wide characters included.
    t.type_line("a", "hello from alice 日本語 😀");
    let s = t.wait_text("b", "hello from alice 日本語 😀");
    assert!(s.contains("alice#"), "{s}");

    // A /join makes a room appear in the list, and messages in it reach the other side.
    t.type_line("b", "/join side");
    t.wait_text("b", "#side");
    t.type_line("a", "/join side");
    t.wait("a", "in #side", |s| s.contains("to #side"));
    t.type_line("a", "only in side");
    t.wait_text("b", "only in side");

    // A message in a room not shown counts as unread in the room list.
    t.type_line("b", "/send general are you there");
    t.wait("a", "unread count", |s| {
        // The room list is the first column.
        s.lines().any(|l| {
            l.split('│')
                .nth(1)
                .is_some_and(|col| col.trim_end().ends_with("#general 1"))
        })
    });
    t.key("a", "Tab");
    t.wait_text("a", "are you there");

    // Errors are lines on screen, not crashes.
    t.type_line("a", "/connect /ip4/300.1.1.1/tcp/1");
    t.wait_text("a", "cannot connect");
    t.type_line("a", "/msg nobody hi");
    t.wait_text("a", "no peer called");

    // Help overlay opens and closes.
    t.type_line("a", "/help");
    t.wait_text("a", "Esc closes");
    t.key("a", "Escape");
    t.wait("a", "help closed", |s| !s.contains("Esc closes"));

    // /quit restores the terminal: the shell's line is there, the UI is gone.
    t.type_line("a", "/quit");
    let s = t.wait_text("a", "EXITED=0");
    assert!(!s.contains("┌ Rooms"), "UI left on screen:\n{s}");
    assert_eq!(
        t.cmd(&["display-message", "-p", "-t", "a", "#{alternate_on}"])
            .trim(),
        "0"
    );
    t.wait_text("b", "disconnected");
    t.key("b", "C-c");
    t.wait_text("b", "EXITED=0");
}

#[test]
fn scrolling_back_past_what_the_ui_holds_loads_older_lines_from_the_database() {
    if skip_without("tmux", "the TUI test drives a real terminal") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    // More history than the UI holds in memory (2,000 lines a view).
    let mut writer = common::Chat::start("alice", &dir, &[]);
    let mut batch = String::new();
    for i in 1..=2300 {
        batch.push_str(&format!("old-{i:04}\n"));
    }
    writer.send_raw(batch.as_bytes());
    writer.send("/quit");
    assert!(writer.wait_exit().success());
    assert_eq!(common::stored_count(&dir, &writer.peer_id, "old-"), 2300);

    let t = Tmux::new();
    t.start(
        "a",
        100,
        30,
        &format!(
            "--no-mdns --listen /ip4/127.0.0.1/tcp/0 --data-dir {} --name alice",
            dir.display()
        ),
    );
    t.wait_text("a", "old-2300");
    // Ctrl-Home goes to the oldest line held; pressing it again loads older ones.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        t.key("a", "C-Home");
        let s = t.screen("a");
        if s.contains("old-0001") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old-0001 never shown; screen:\n{s}"
        );
        t.wait("a", "a redraw", |_| true);
    }
    // Back at the bottom: the newest line again.
    t.key("a", "C-End");
    t.wait_text("a", "old-2300");
    t.type_line("a", "/quit");
    t.wait_text("a", "EXITED=0");
}

#[test]
fn leaving_a_room_never_focuses_a_direct_conversation_and_copy_fills_the_clipboard() {
    if skip_without("tmux", "the TUI test drives a real terminal") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = Tmux::new();
    t.start_chat("a", 170, 30, &tmp.path().join("a"), "alice");
    // tmux keeps what an application sends by OSC 52 as a paste buffer.
    t.cmd(&["set-option", "-g", "set-clipboard", "on"]);
    t.start_chat("b", 130, 30, &tmp.path().join("b"), "bob");
    let (addr, screen) = t.address("a");
    // The welcome shows the address alone on its row, unindented and unwrapped (the
    // message pane of a 170-column terminal is wide enough for it).
    assert!(
        screen.lines().any(|l| l.contains(&format!("│{addr}"))),
        "{screen}"
    );

    // /copy puts the address on the clipboard.
    t.type_line("a", "/copy");
    t.wait_text("a", "Copied to the clipboard");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let out = Command::new("tmux")
            .args(["-L", &t.socket, "show-buffer"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() == addr {
            break;
        }
        assert!(Instant::now() < deadline, "the clipboard never held {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }

    t.wait_text("b", "Welcome, bob#");
    t.type_line("b", &format!("/connect {addr}"));
    t.wait("a", "bob online", |s| s.contains("● bob#"));
    t.type_line("a", "/join side");
    t.wait_text("a", "to #side (everyone in the room)");
    t.type_line("a", "/msg bob first private line");
    // Bob has a conversation with alice now (one unread), and alice's round-trip time
    // shows at once (the first ping goes when the connection opens).
    t.wait("b", "a conversation with alice", |s| s.contains("@alice#"));
    t.wait("b", "alice's RTT", |s| {
        s.lines()
            .any(|l| l.contains("● alice#") && l.trim_end().trim_end_matches('│').ends_with("ms"))
    });

    // Leaving the current room goes to the other room, not to the conversation with bob.
    t.type_line("a", "/leave");
    t.wait_text("a", "to #general (everyone in the room)");
    // Leaving the last room: the input says the line goes nowhere, and it does.
    t.type_line("a", "/leave");
    t.wait_text("a", "in no room: /join ROOM");
    t.type_line("a", "meant for a room");
    t.wait_text("a", "you are in no room");
    // Switching to the conversation is explicit, and the title says it is private.
    t.key("a", "Tab");
    t.wait_text("a", "only (direct message)");
    t.type_line("a", "second private line");
    t.wait_text("a", "second private line");
    t.key("b", "Tab");
    let s = t.wait_text("b", "second private line");
    assert!(s.contains("first private line"), "{s}");
    assert!(!s.contains("meant for a room"), "{s}");

    t.type_line("a", "/quit");
    t.wait_text("a", "EXITED=0");
    t.type_line("b", "/quit");
    t.wait_text("b", "EXITED=0");
}

#[test]
fn a_file_is_offered_fetched_with_a_progress_bar_and_found() {
    if skip_without("tmux", "the TUI test drives a real terminal") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..6u32 << 20)
        .map(|i| (i.wrapping_mul(40_503) >> 7) as u8)
        .collect();
    let file = tmp.path().join("slides.pdf");
    std::fs::write(&file, &data).unwrap();
    let t = Tmux::new();
    // Alice serves at 1 MiB/s, so the progress bar stays up for seconds.
    t.start_chat_with(
        "a",
        120,
        30,
        &tmp.path().join("a"),
        "alice",
        "--upload-rate 1024",
    );
    // Wide enough that the offer's line does not wrap.
    t.start_chat("b", 170, 30, &tmp.path().join("b"), "bob");
    let (addr, _) = t.address("a");
    t.wait_text("b", "Welcome, bob#");
    t.type_line("b", &format!("/connect {addr}"));
    t.wait_text("a", "bob#");

    t.type_line("a", &format!("/share {}", file.display()));
    t.wait_text("a", "offered slides.pdf");
    // Bob sees the offer as a file, not as its encoded text.
    let screen = t.wait_text(
        "b",
        "[file] slides.pdf · 6.00 MiB · application/pdf · /get ",
    );
    assert!(!screen.contains("echo-offer:"), "{screen}");
    let id = screen
        .split("/get ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("an id on screen")
        .to_string();
    t.type_line("b", &format!("/get {id}"));
    // The progress bar: name, percentage, bytes, rate, sources.
    let bar = t.wait("b", "a progress bar", |s| {
        s.lines()
            .any(|l| l.contains("↓ slides.pdf") && l.contains("% ") && l.contains("source"))
    });
    assert!(bar.contains("of 6.00 MiB"), "{bar}");
    t.wait_text("b", "downloaded slides.pdf:");
    let got = std::fs::read(tmp.path().join("b/downloads/slides.pdf")).unwrap();
    assert!(got == data, "the file differs");
    // /files lists it as done.
    t.type_line("b", "/files");
    t.wait_text("b", "done:");
}

#[test]
fn a_direct_conversation_marks_its_messages_pending_delivered_read_in_place() {
    if skip_without("tmux", "the TUI test drives a real terminal") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = Tmux::new();
    t.start_chat("a", 140, 30, &tmp.path().join("a"), "alice");
    t.start_chat("b", 120, 30, &tmp.path().join("b"), "bob");
    let (addr, _) = t.address("a");
    t.wait_text("b", "Welcome, bob#");
    t.type_line("b", &format!("/connect {addr}"));
    t.wait("a", "bob online", |s| s.contains("● bob#"));

    // Bob is connected: delivered at once (✓).
    t.type_line("a", "/msg bob are you there");
    t.key("a", "Tab");
    t.wait_text("a", "only (direct message)");
    t.wait_text("a", "are you there ✓");
    // Bob opens the conversation: alice's mark turns to read (✓✓) on the same line.
    t.wait("b", "a conversation with alice", |s| s.contains("@alice#"));
    t.key("b", "Tab");
    t.wait_text("b", "are you there");
    let s = t.wait_text("a", "are you there ✓✓");
    assert!(!s.contains("delivered"), "marks, not info lines:\n{s}");

    // Bob leaves: the next message waits with alice (…).
    t.type_line("b", "/quit");
    t.wait_text("b", "EXITED=0");
    t.wait("a", "bob offline", |s| !s.contains("● bob#"));
    t.type_line("a", "see you later");
    t.wait_text("a", "see you later …");

    // Bob comes back: alice's node hands it over, the mark turns to ✓; bob's stored
    // conversation is listed again, with the new message unread.
    t.start_chat_with(
        "b2",
        120,
        30,
        &tmp.path().join("b"),
        "bob",
        &format!("--connect {addr}"),
    );
    t.wait_text("a", "see you later ✓");
    t.wait("b2", "the conversation with one unread", |s| {
        s.lines().any(|l| {
            l.split('│')
                .nth(1)
                .is_some_and(|col| col.contains("@alice#") && col.trim_end().ends_with(" 1"))
        })
    });
    t.type_line("a", "/quit");
    t.wait_text("a", "EXITED=0");
    t.type_line("b2", "/quit");
    t.wait_text("b2", "EXITED=0");
}
