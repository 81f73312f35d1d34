//! The web UI: a page served by the node itself, talking to the app over a WebSocket
//! that carries the `--json` schema (events out, command lines in; `chat/JSON.md`).
//!
//! Security follows Syncthing and Kubo: it binds 127.0.0.1 unless told otherwise; the
//! one-time token in the printed URL is exchanged for an HttpOnly, SameSite=Strict
//! session cookie (the secret is kept in the data dir, so a page reconnects after a
//! restart of the node); every request must name an allowed `Host` exactly (no DNS
//! rebinding); the WebSocket upgrade and every POST must come from an allowed `Origin`
//! exactly; POST bodies are never forms; every response carries a Content-Security-Policy
//! without inline script and `frame-ancestors 'none'`. The page renders peer text with
//! `textContent`, never as HTML.
//!
//! The server runs on its own small tokio runtime in a thread, whatever runtime drives
//! the node; it hands command lines to the app loop and fans the app's events out.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::channel::mpsc::UnboundedSender;
use tokio::sync::broadcast;

use crate::app::Input;

/// The page, its script and its style, built into the binary.
const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE_CSS: &str = include_str!("web/style.css");

/// Events a slow tab may fall behind by before it is disconnected (it then reconnects
/// and reloads its state).
const EVENT_BUFFER: usize = 4_096;
/// Longest command line a tab may send.
const MAX_COMMAND: usize = 64 * 1024;
/// Largest file a tab may upload to share (it is copied into the data dir first).
pub const MAX_UPLOAD: usize = 1 << 30;

/// Finished downloads a tab may save, newest last (by transfer number).
type Downloads = Arc<Mutex<std::collections::BTreeMap<u64, PathBuf>>>;
/// How many finished downloads stay offered to the page.
const MAX_DOWNLOADS: usize = 256;

/// The app's end: events to every tab.
#[derive(Clone)]
pub struct Hub {
    events: broadcast::Sender<Arc<str>>,
    downloads: Downloads,
}

impl Hub {
    /// Sends one event (a JSON line) to every connected tab.
    pub fn send(&self, line: String) {
        let _ = self.events.send(line.into());
    }

    /// A download finished: the page may save it from `/download/<transfer>`.
    pub fn allow_download(&self, transfer: u64, path: PathBuf) {
        let mut d = self.downloads.lock().expect("not poisoned");
        d.insert(transfer, path);
        while d.len() > MAX_DOWNLOADS {
            d.pop_first();
        }
    }
}

/// What the server was started with.
pub struct WebOptions {
    /// Where to listen.
    pub addr: SocketAddr,
    /// The data dir: holds the session secret, and uploads before they are shared.
    pub data_dir: PathBuf,
}

/// A started server.
pub struct Web {
    /// The app's end.
    pub hub: Hub,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The URL to open (with the one-time token).
    pub url: String,
}

struct Shared {
    port: u16,
    hosts: HashSet<String>,
    origins: HashSet<String>,
    csp: String,
    /// The one-time token, until it is used.
    token: Mutex<Option<String>>,
    /// The session cookie's value.
    secret: String,
    cookie: String,
    inputs: UnboundedSender<Input>,
    events: broadcast::Sender<Arc<str>>,
    uploads: PathBuf,
    downloads: Downloads,
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The session secret of this data dir (created once, mode 0600).
fn session_secret(dir: &std::path::Path) -> std::io::Result<String> {
    let path = dir.join("web-session.key");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_string();
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(s);
        }
    }
    let s = random_hex(32);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    use std::io::Write;
    opts.open(&path)?.write_all(s.as_bytes())?;
    Ok(s)
}

/// Compares in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Starts the server (binding before it returns, so a taken port is an error now).
pub fn start(opts: WebOptions, inputs: UnboundedSender<Input>) -> anyhow::Result<Web> {
    let listener = std::net::TcpListener::bind(opts.addr)
        .map_err(|e| anyhow::anyhow!("cannot serve the web UI on {}: {e}", opts.addr))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let port = addr.port();
    let mut hosts: HashSet<String> = [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ]
    .into();
    if !addr.ip().is_unspecified() {
        hosts.insert(addr.to_string());
    }
    let origins: HashSet<String> = hosts.iter().map(|h| format!("http://{h}")).collect();
    let mut ws: Vec<String> = hosts.iter().map(|h| format!("ws://{h}")).collect();
    ws.sort();
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         connect-src 'self' {}; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ws.join(" ")
    );
    let token = random_hex(16);
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let uploads = opts.data_dir.join("uploads");
    let downloads = Downloads::default();
    let shared = Arc::new(Shared {
        port,
        hosts,
        origins,
        csp,
        token: Mutex::new(Some(token.clone())),
        secret: session_secret(&opts.data_dir)?,
        cookie: format!("echo-{port}"),
        inputs,
        events: events.clone(),
        uploads,
        downloads: downloads.clone(),
    });
    let url_host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{port}")
    } else {
        addr.to_string()
    };
    let url = format!("http://{url_host}/?token={token}");
    let app = Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript", APP_JS) }),
        )
        .route("/style.css", get(|| async { asset("text/css", STYLE_CSS) }))
        .route("/ws", get(websocket))
        .route("/upload", post(upload))
        .route("/download/{transfer}", get(download))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared);
    std::thread::Builder::new()
        .name("echo-chat-web".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return tracing::error!(error = %e, "web UI runtime"),
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!(error = %e, "web UI listener"),
                };
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "web UI server stopped");
                }
            });
        })?;
    Ok(Web {
        hub: Hub { events, downloads },
        addr,
        url,
    })
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

fn forbidden(why: &'static str) -> Response {
    (StatusCode::FORBIDDEN, why).into_response()
}

/// Every request: an allowed Host; for POST and the WebSocket, an allowed Origin; the
/// session cookie except for the token exchange; security headers on every answer.
async fn guard(
    State(s): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let mut resp = if !host.is_some_and(|h| s.hosts.contains(h)) {
        forbidden("unknown Host")
    } else {
        let path = req.uri().path();
        let origin = headers.get(header::ORIGIN).and_then(|h| h.to_str().ok());
        let needs_origin = req.method() == Method::POST || path == "/ws";
        let origin_ok = origin.is_some_and(|o| s.origins.contains(o));
        let exchanging = path == "/" && req.uri().query().is_some_and(|q| q.contains("token="));
        if needs_origin && !origin_ok {
            forbidden("foreign or missing Origin")
        } else if origin.is_some() && !origin_ok {
            forbidden("foreign Origin")
        } else if !exchanging && !has_session(&s, headers) && path != "/" {
            forbidden("no session: open the URL echo-chat printed")
        } else {
            next.run(req).await
        }
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&s.csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn has_session(s: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .any(|(k, v)| k == s.cookie && same(v, &s.secret))
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// `/?token=…` sets the session cookie (once per token) and redirects to `/`; `/` with
/// the cookie is the page.
async fn index(
    State(s): State<Arc<Shared>>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(t) = q.token {
        let ok = {
            let mut token = s.token.lock().expect("not poisoned");
            let ok = token.as_deref().is_some_and(|k| same(k, &t));
            if ok {
                *token = None;
            }
            ok
        };
        if !ok && !has_session(&s, &headers) {
            return forbidden(
                "this link was used already or is wrong: restart echo-chat --web for a new one",
            );
        }
        let cookie = format!(
            "{}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age=31536000",
            s.cookie, s.secret
        );
        let mut r = Redirect::to("/").into_response();
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        return r;
    }
    if !has_session(&s, &headers) {
        return forbidden("no session: open the URL echo-chat printed");
    }
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
        .into_response()
}

async fn websocket(State(s): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_COMMAND)
        .max_frame_size(MAX_COMMAND)
        .on_upgrade(move |socket| tab(s, socket))
}

/// One tab: its command lines go to the app; every event goes to it.
async fn tab(s: Arc<Shared>, mut socket: WebSocket) {
    let mut events = s.events.subscribe();
    tracing::info!(port = s.port, "web UI tab connected");
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(line) => {
                    if socket.send(Message::Text(line.as_ref().into())).await.is_err() {
                        break;
                    }
                }
                // Fell behind: the tab reconnects and reloads its state.
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(line))) => {
                    for l in line.as_str().lines() {
                        if s.inputs.unbounded_send(Input::Line(l.to_string())).is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    tracing::info!(port = s.port, "web UI tab gone");
}

/// A file dropped on the page: its bytes (raw body, `application/octet-stream`, name in
/// `X-File-Name`) are saved under the data dir and shared to `X-Echo-Target` (a room
/// `#name` or a peer), as `/share` would.
async fn upload(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if ct != Some("application/octet-stream") {
        return forbidden("uploads are application/octet-stream");
    }
    let name = headers
        .get("x-file-name")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    let name = echo_runtime::files::safe_file_name(&name);
    let target = headers
        .get("x-echo-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if target.contains(char::is_whitespace) && !target.starts_with('#') {
        return (StatusCode::BAD_REQUEST, "bad target").into_response();
    }
    let dir = s.uploads.clone();
    let saved = tokio::task::spawn_blocking(move || -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&dir)?;
        let (path, mut file) = echo_runtime::files::unique_path(&dir, &name)?;
        use std::io::Write;
        file.write_all(&body)?;
        file.sync_all()?;
        Ok(path)
    })
    .await;
    match saved {
        Ok(Ok(path)) => {
            let line = match target.strip_prefix('#') {
                Some(room) if !room.is_empty() => {
                    format!("/share {} #{room}", path.display())
                }
                _ if !target.is_empty() => format!("/share {} @{target}", path.display()),
                _ => format!("/share {}", path.display()),
            };
            let _ = s.inputs.unbounded_send(Input::Line(line));
            (StatusCode::ACCEPTED, "sharing").into_response()
        }
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot save: {e}"),
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot save").into_response(),
    }
}

/// A finished download, as an attachment (only files the app reported finished).
async fn download(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(transfer): axum::extract::Path<u64>,
) -> Response {
    let path = s
        .downloads
        .lock()
        .expect("not poisoned")
        .get(&transfer)
        .cloned();
    let Some(path) = path else {
        return (StatusCode::NOT_FOUND, "no such download").into_response();
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => return (StatusCode::NOT_FOUND, format!("cannot read it: {e}")).into_response(),
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    // RFC 6266: an ASCII fallback and the exact name percent-encoded.
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let disposition = format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}");
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// `%XX` escapes decoded (the page percent-encodes file names for the header).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_and_constant_time_compare() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%C3%A9"), "é");
        assert_eq!(percent_decode("%é%"), "%é%");
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
