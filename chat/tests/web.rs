//! The web UI (`--web`): its security rules over raw HTTP, and the page itself in real
//! headless Chromium (Debian's `chromium`, driven by playwright-core from npm: see
//! `chat/tests/web/`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::Chat;

/// Starts a node with the web UI on 127.0.0.1:`port` (0: any); returns it and the URL.
fn web_node(name: &str, dir: &Path, port: u16, extra: &[&str]) -> (Chat, String) {
    let web = format!("127.0.0.1:{port}");
    let mut args = vec!["--web", &web];
    args.extend_from_slice(extra);
    let mut chat = Chat::start(name, dir, &args);
    let ev = chat.wait("web", |v| v["event"] == "web");
    (chat, ev["url"].as_str().unwrap().to_string())
}

/// One HTTP/1.1 request over a fresh connection; returns (status, head, body).
fn http(host_port: &str, req: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(host_port).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn get(host: &str, path: &str, headers: &str, addr: &str) -> (u16, String, String) {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"),
    )
}

const WS_HEADERS: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[test]
fn tokens_cookies_hosts_and_origins_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let (_alice, url) = web_node("alice", &tmp.path().join("a"), 0, &[]);
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let token_path = format!("/{path}");
    let port = addr.rsplit_once(':').unwrap().1;

    // No token, no cookie: nothing but a 403.
    for p in ["/", "/app.js", "/ws", "/style.css"] {
        assert_eq!(get(addr, p, "", addr).0, 403, "{p}");
    }
    // A rebound Host (DNS rebinding), even with the right token.
    let evil = format!("evil.example:{port}");
    assert_eq!(get(&evil, &token_path, "", addr).0, 403);
    // A wrong token.
    assert_eq!(
        get(addr, "/?token=00000000000000000000000000000000", "", addr).0,
        403
    );
    // The token gives a cookie: HttpOnly, SameSite=Strict.
    let (status, head, _) = get(addr, &token_path, "", addr);
    assert_eq!(status, 303, "{head}");
    let set = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a cookie")
        .to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set
        .split_once(':')
        .unwrap()
        .1
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // ... once: the link does not work a second time without the cookie.
    assert_eq!(get(addr, &token_path, "", addr).0, 403);
    let with = format!("Cookie: {cookie}\r\n");
    let (status, head, body) = get(addr, "/", &with, addr);
    assert_eq!(status, 200);
    let csp = head
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("content-security-policy:")
        })
        .expect("a CSP")
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(!body.contains("<script>"), "no inline script");
    // localhost and [::1] are the same page; another Host is not, even with the cookie.
    assert_eq!(get(&format!("localhost:{port}"), "/", &with, addr).0, 200);
    assert_eq!(get(&evil, "/", &with, addr).0, 403);

    // The WebSocket: only with the cookie and from our own Origin, exactly.
    let own = format!("Origin: http://{addr}\r\n");
    let ws = |extra: &str| get(addr, "/ws", &format!("{WS_HEADERS}{extra}"), addr).0;
    assert_eq!(ws(&format!("{with}{own}")), 101);
    assert_eq!(ws(&with), 403, "no Origin");
    assert_eq!(ws(&format!("{with}Origin: http://evil.example\r\n")), 403);
    assert_eq!(
        ws(&format!("{with}Origin: http://{addr}.evil.example\r\n")),
        403
    );
    assert_eq!(ws(&own), 403, "no cookie");

    // POST: a form (what a foreign page can send without CORS) is refused, as is a
    // foreign Origin; an upload needs our Origin and the cookie.
    let post = |headers: &str, body: &str| {
        http(
            addr,
            &format!(
                "POST /upload HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .0
    };
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    assert_eq!(post(&format!("{with}{own}{form}"), "a=b"), 403);
    assert_eq!(
        post(
            &format!("{with}Origin: http://evil.example\r\n{form}"),
            "a=b"
        ),
        403
    );
    let raw = "Content-Type: application/octet-stream\r\nX-File-Name: a.txt\r\n";
    assert_eq!(
        post(&format!("{with}Origin: http://evil.example\r\n{raw}"), "hi"),
        403
    );
    assert_eq!(post(&format!("{own}{raw}"), "hi"), 403, "no cookie");
}

/// The page in Chromium, two nodes side by side (skips without chromium and the npm
/// packages, except under CI=true).
#[test]
fn two_browsers_chat_through_their_nodes() {
    if common::skip_without("chromium", "the web UI test drives Debian's chromium")
        || common::skip_without("node", "the web UI test runs playwright-core")
    {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    if !dir.join("node_modules/playwright-core").exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("run `npm ci` in chat/tests/web (CI does)");
        }
        eprintln!("skipping: npm ci in chat/tests/web first");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (mut alice, alice_url) = web_node("alice", &tmp.path().join("a"), 0, &[]);
    let bob_port = free_port();
    let bob_dir = tmp.path().join("b");
    let (bob, bob_url) = web_node("bob", &bob_dir, bob_port, &["--connect", &alice.addr]);
    alice.wait("peer_up bob", |v| {
        v["event"] == "peer_up" && v["name"] == "bob"
    });
    let shots = std::env::var("ECHO_WEB_SHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-shots"));
    std::fs::create_dir_all(&shots).unwrap();

    let mut script = std::process::Command::new("node")
        .arg(dir.join("e2e.mjs"))
        .env("ALICE_URL", &alice_url)
        .env("BOB_URL", &bob_url)
        .env("SHOTS", &shots)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("node");
    let mut to_script = script.stdin.take().unwrap();
    let from_script = std::io::BufReader::new(script.stdout.take().unwrap());
    let mut bob = Some(bob);
    let mut lines = Vec::new();
    use std::io::BufRead;
    for line in from_script.lines() {
        let line = line.unwrap();
        eprintln!("e2e: {line}");
        lines.push(line.clone());
        if line == "RESTART bob" {
            // The node restarts on the same port and data dir; the page reconnects.
            let b = bob.take().unwrap();
            assert!(b.quit().success());
            let (b, _) = web_node("bob", &bob_dir, bob_port, &["--connect", &alice.addr]);
            bob = Some(b);
            writeln!(to_script, "restarted").unwrap();
        }
    }
    let status = script.wait().unwrap();
    assert!(
        status.success() && lines.iter().any(|l| l == "PASS"),
        "the browser test failed: {lines:?} (screenshots in {})",
        shots.display()
    );
    let _ = alice.drain();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
