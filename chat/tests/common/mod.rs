//! Runs the real `echo-chat` binary headless (`--json`) and reads its events.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod netns;

pub const BIN: &str = env!("CARGO_BIN_EXE_echo-chat");

/// Generous: debug builds on two busy cores.
pub const TIMEOUT: Duration = Duration::from_secs(40);

/// One running headless instance.
pub struct Chat {
    pub name: String,
    pub child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<Value>,
    /// Everything printed so far (for failure messages).
    pub seen: Arc<Mutex<Vec<String>>>,
    pub peer_id: String,
    pub addr: String,
    pub display: String,
    pub dir: PathBuf,
}

impl Chat {
    /// Starts an instance on 127.0.0.1 with mDNS off, and waits for its ready line.
    pub fn start(name: &str, dir: &Path, extra: &[&str]) -> Chat {
        Self::start_with(Command::new(BIN), name, dir, extra)
    }

    /// Like [`Chat::start`], with a prepared command (e.g. `ip netns exec … echo-chat`),
    /// and no default `--no-mdns`/`--listen` if `extra` has its own.
    pub fn start_with(mut cmd: Command, name: &str, dir: &Path, extra: &[&str]) -> Chat {
        cmd.args(["--headless", "--json", "--name", name, "--data-dir"])
            .arg(dir)
            .args(["--log-level", "debug"]);
        if !extra.contains(&"--mdns-interface") {
            cmd.arg("--no-mdns");
        }
        if !extra.contains(&"--listen") {
            cmd.args(["--listen", "/ip4/127.0.0.1/tcp/0"]);
        }
        // Never the user's Downloads folder.
        if !extra.contains(&"--download-dir") {
            cmd.arg("--download-dir").arg(dir.join("downloads"));
        }
        cmd.args(extra)
            .env_remove("PORT")
            .env_remove("NAME")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn echo-chat");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, events) = mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let tag = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                seen2.lock().unwrap().push(line.clone());
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        let _ = tx.send(v);
                    }
                    Err(e) => panic!("{tag}: stdout line is not JSON ({e}): {line}"),
                }
            }
        });
        let seen3 = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                seen3.lock().unwrap().push(format!("stderr: {line}"));
            }
        });
        let stdin = child.stdin.take();
        let mut chat = Chat {
            name: name.to_string(),
            child,
            stdin,
            events,
            seen,
            peer_id: String::new(),
            addr: String::new(),
            display: String::new(),
            dir: dir.to_path_buf(),
        };
        let ready = chat.wait("ready", |v| v["event"] == "ready");
        chat.peer_id = ready["peer_id"].as_str().unwrap().to_string();
        chat.addr = ready["addrs"][0].as_str().unwrap().to_string();
        chat.display = ready["display"].as_str().unwrap().to_string();
        chat
    }

    /// Types a line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to echo-chat");
        stdin.flush().unwrap();
    }

    /// Writes raw bytes to stdin (no newline added).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).expect("write to echo-chat");
        stdin.flush().unwrap();
    }

    /// Closes stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for an event matching `pred`; panics with the output on timeout.
    pub fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(what, TIMEOUT, pred)
    }

    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if pred(&v) => return v,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "{}: timed out waiting for {what} (exit status {status:?}); output:\n{}",
                        self.name,
                        self.tail()
                    );
                }
            }
        }
    }

    /// Waits for a room message with this text.
    pub fn wait_message(&mut self, room: &str, text: &str) -> Value {
        self.wait(&format!("message {text:?} in #{room}"), |v| {
            v["event"] == "message" && v["room"] == room && v["text"] == text
        })
    }

    /// Events already received, without waiting.
    pub fn drain(&mut self) -> Vec<Value> {
        self.events.try_iter().collect()
    }

    /// The last lines of output.
    pub fn tail(&self) -> String {
        let seen = self.seen.lock().unwrap();
        let start = seen.len().saturating_sub(60);
        seen[start..].join("\n")
    }

    /// Sends /quit and waits for the process to end.
    pub fn quit(mut self) -> ExitStatus {
        self.send("/quit");
        self.wait_exit()
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{}: did not exit; output:\n{}", self.name, self.tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion (bounded), returning (status, stdout, stderr).
pub fn run_to_end(args: &[&str]) -> (ExitStatus, String, String) {
    run_to_end_env(args, &[])
}

/// [`run_to_end`] with extra environment variables.
pub fn run_to_end_env(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("ECHO_PROFILE")
        .env_remove("ECHO_DATA_DIR")
        .env_remove("PORT")
        .env_remove("NAME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(_s) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status,
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "echo-chat {args:?} did not exit; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How many stored room messages of `author` have a text starting with `prefix`, read
/// with rusqlite from the data dir's database (after the process exited).
pub fn stored_count(dir: &Path, author: &str, prefix: &str) -> usize {
    let db = rusqlite::Connection::open(dir.join("history.sqlite3")).expect("database opens");
    let n: i64 = db
        .query_row(
            "SELECT count(*) FROM messages WHERE author = ?1 AND substr(text, 1, length(?2)) = ?2",
            [author, prefix],
            |r| r.get(0),
        )
        .unwrap();
    n as usize
}

/// Whether a test that needs a system tool should skip (it must run under CI=true).
pub fn skip_without(tool: &str, why: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if found {
        return false;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{tool} is required under CI=true ({why}); install it");
    }
    eprintln!("skipping: {tool} not found ({why})");
    true
}
