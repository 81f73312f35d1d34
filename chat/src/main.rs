//! echo-chat: the reference echo chat app.
//!
//! `cargo run --release` at the repository root starts a node and its terminal UI;
//! `--headless` (or a non-terminal stdin) runs the same commands as lines on stdin.

#![forbid(unsafe_code)]

mod app;
mod cli;
mod commands;
mod files;
mod layout;
mod mdns;
mod model;
mod store;
mod text;
mod tui;
mod web;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use clap::Parser;
use echo_proto::{Config, Multiaddr};
use echo_runtime::{Events, Handle, Options, StartError};
use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use multiaddr::Protocol;

use crate::app::{App, FileInput, Input, Mode};
use crate::cli::{Cli, RuntimeKind, Transport};
use crate::model::Model;
use crate::store::DataDir;

/// A start-up failure and its exit code.
struct Fatal {
    code: u8,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Fatal {
    fn from(e: E) -> Self {
        Fatal {
            code: 1,
            error: e.into(),
        }
    }
}

fn usage(error: anyhow::Error) -> Fatal {
    Fatal { code: 2, error }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("echo-chat: error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn real_main(cli: Cli) -> Result<(), Fatal> {
    // Check what can be checked before touching anything.
    for a in cli.connect_addrs() {
        a.trim()
            .parse::<Multiaddr>()
            .map_err(|e| usage(anyhow!("invalid address to connect to {a:?}: {e}")))?;
    }
    for a in cli.listen_addrs() {
        a.trim()
            .parse::<Multiaddr>()
            .map_err(|e| usage(anyhow!("invalid listen address {a:?}: {e}")))?;
    }
    cli.transport().map_err(|e| usage(anyhow!(e)))?;
    for a in &cli.relay {
        let ok = a
            .trim()
            .parse::<Multiaddr>()
            .map_err(|e| e.to_string())
            .and_then(|m| match m.iter().last() {
                Some(Protocol::P2p(_)) => Ok(()),
                _ => Err("a relay address ends in /p2p/<relay peer id>".to_string()),
            });
        ok.map_err(|e| usage(anyhow!("invalid --relay {a:?}: {e}")))?;
    }
    if let Some(n) = &cli.name {
        if n.trim().is_empty() || n.chars().any(|c| c.is_control()) || n.len() > 64 {
            return Err(usage(anyhow!(
                "invalid name {n:?}: 1 to 64 bytes, no control characters"
            )));
        }
    }
    let dir = data_dir(&cli)?;
    let new_identity = !dir.join("identity.key").exists();
    let data = DataDir::open(&dir)?;
    let _log_guard = init_logging(&data, &cli.log_level)?;
    tracing::info!(dir = %dir.display(), "echo-chat {} starting", env!("CARGO_PKG_VERSION"));
    let key = data.identity()?;
    let db_path = data.db_path();
    let conn = store::open_db(&db_path).context(store::damaged(&db_path))?;
    let config = Config::default();
    let loaded = store::load(&conn, config.max_log_messages).context(store::damaged(&db_path))?;
    drop(conn);

    let headless = cli.is_headless();
    let run = Run {
        cli,
        data,
        key,
        loaded,
        config,
        headless,
        new_identity,
    };
    match run.cli.runtime {
        RuntimeKind::Tokio => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .thread_name("echo-chat-tokio")
                .build()
                .context("cannot start the tokio runtime")?;
            let r = rt.block_on(run.run());
            rt.shutdown_timeout(Duration::from_secs(1));
            r
        }
        RuntimeKind::Smol => smol::block_on(run.run()),
    }
}

/// The profile: `--profile`, else NAME, else `default`, as a folder name (`None` with
/// `--data-dir`, which names the folder itself).
fn profile(cli: &Cli) -> Option<String> {
    if cli.data_dir.is_some() {
        return None;
    }
    let p = cli
        .profile
        .as_deref()
        .or(cli.name.as_deref())
        .unwrap_or("default");
    Some(
        p.chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
    )
}

/// The data dir: `--data-dir`, or the platform's data dir / profiles / the profile.
fn data_dir(cli: &Cli) -> Result<PathBuf, Fatal> {
    let Some(profile) = profile(cli) else {
        return Ok(cli
            .data_dir
            .clone()
            .expect("profile() is None only with --data-dir"));
    };
    let dirs = directories::ProjectDirs::from("", "", "echo-chat")
        .ok_or_else(|| anyhow!("cannot find a home directory for the data dir; pass --data-dir"))?;
    Ok(dirs.data_dir().join("profiles").join(profile))
}

/// What the start-up tells the user about who they are.
pub struct Startup {
    /// The profile (`None` with `--data-dir`).
    pub profile: Option<String>,
    /// The identity key was created by this start.
    pub new_identity: bool,
    /// NAME differed from the profile's stored name, which was kept.
    pub name_kept: Option<(String, String)>,
    /// Downloads that had not finished when the app last stopped.
    pub downloads: Vec<store::Download>,
}

fn init_logging(
    data: &DataDir,
    level: &str,
) -> Result<tracing_appender::non_blocking::WorkerGuard, Fatal> {
    use tracing_appender::rolling::{RollingFileAppender, Rotation};
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| usage(anyhow!("invalid --log-level {level:?}: {e}")))?;
    let dir = data.log_dir();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create log dir {}", dir.display()))?;
    let appender = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix("echo-chat")
        .filename_suffix("log")
        .max_log_files(7)
        .build(&dir)
        .with_context(|| format!("cannot open a log file in {}", dir.display()))?;
    let (writer, guard) = tracing_appender::non_blocking(appender);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .init();
    Ok(guard)
}

struct Run {
    cli: Cli,
    data: DataDir,
    key: echo_proto::Identity,
    loaded: store::Loaded,
    config: Config,
    headless: bool,
    new_identity: bool,
}

impl Run {
    async fn run(self) -> Result<(), Fatal> {
        let Run {
            cli,
            data,
            key,
            loaded,
            mut config,
            headless,
            new_identity,
        } = self;
        let store::Loaded {
            restore,
            name: stored_name,
            skipped,
            downloads,
        } = loaded;
        // The profile keeps its name: NAME names a new profile, /nick renames it.
        let name = stored_name
            .clone()
            .or_else(|| cli.name.clone())
            .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| "anon".into());
        let startup = Startup {
            profile: profile(&cli),
            new_identity,
            name_kept: match (&stored_name, &cli.name) {
                (Some(kept), Some(asked)) if kept != asked => Some((asked.clone(), kept.clone())),
                _ => None,
            },
            downloads,
        };
        config.name = name.clone();
        config.agent = format!("echo-chat/{}", env!("CARGO_PKG_VERSION"));
        if let Some(room) = &cli.room {
            config.default_room = Some(room.clone());
        }
        let rooms: Vec<String> = restore.rooms.iter().map(|r| r.name.clone()).collect();
        let history: Vec<echo_proto::Message> = restore
            .rooms
            .iter()
            .flat_map(|r| r.messages.iter().cloned())
            .collect();
        let mut options = Options::new(cli.listen_addrs());
        options.identity = key;
        options.config = config;
        options.restore = restore;
        // Shared and partly downloaded files (data, verified ranges) live in the
        // profile; finished downloads go to the download dir.
        options.files = Some(echo_runtime::FilesOptions {
            disk_hook: None,
            dir: data.path.join("files"),
            config: {
                let mut c = echo_proto::blob::BlobConfig::default();
                if cli.upload_rate > 0 {
                    c.serve_rate = cli.upload_rate.saturating_mul(1024);
                }
                c
            },
        });

        let transport = cli.transport().map_err(|e| usage(anyhow!(e)))?;
        let started = match (cli.runtime, transport) {
            (RuntimeKind::Tokio, Transport::Swarm) => {
                let mut o = echo_runtime::swarm::SwarmOptions::from(options);
                o.relays = cli.relay.clone();
                o.relay_server = cli.relay_server;
                echo_runtime::swarm::start(o).await
            }
            (RuntimeKind::Tokio, Transport::Direct) => echo_runtime::tokio::start(options).await,
            (RuntimeKind::Smol, _) => echo_runtime::smol::start(options).await,
        };
        let (handle, events) = started.map_err(|e| match e {
            StartError::AddrInUse { addr } => anyhow!(
                "cannot listen on {addr}: the port is in use (another echo-chat?); pick \
                 another --port or --listen"
            ),
            e @ StartError::InvalidListenAddr { .. } => anyhow!("{e}"),
            e => anyhow!("cannot start the node: {e}"),
        })?;
        tracing::info!(peer = %handle.peer_id(), addrs = ?handle.listen_addrs(), "node started");
        let (tx, rx) = mpsc::unbounded::<Input>();
        let writer_tx = tx.clone();
        let writer = store::Writer::start(store::open_db(&data.db_path())?, move |e| {
            let _ = writer_tx.unbounded_send(Input::StoreError(e));
        });
        if stored_name.is_none() {
            // A new profile keeps the name it started with.
            writer.send(store::Op::Name(name.clone()));
        }
        let result = session(
            cli,
            data,
            handle.clone(),
            events,
            writer,
            tx,
            rx,
            name,
            rooms,
            history,
            skipped,
            headless,
            startup,
        )
        .await;
        // Goodbye on every connection, bounded in time.
        let shutdown = handle.shutdown().fuse();
        let deadline = after(Duration::from_secs(6)).fuse();
        futures::pin_mut!(shutdown, deadline);
        futures::select! {
            _ = shutdown => {},
            _ = deadline => tracing::warn!("shutdown timed out"),
        }
        result
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    cli: Cli,
    data: DataDir,
    handle: Handle,
    events: Events,
    writer: store::Writer,
    tx: mpsc::UnboundedSender<Input>,
    rx: mpsc::UnboundedReceiver<Input>,
    name: String,
    rooms: Vec<String>,
    history: Vec<echo_proto::Message>,
    skipped: usize,
    headless: bool,
    mut startup: Startup,
) -> Result<(), Fatal> {
    // Dial what was asked; a refused address ends the start-up.
    let mut user_dials = std::collections::HashSet::new();
    for a in cli.connect_addrs() {
        let dial = handle
            .connect(a.trim())
            .await
            .map_err(|e| usage(anyhow!("cannot connect to {a:?}: {e}")))?;
        user_dials.insert(dial);
    }
    // mDNS needs the interfaces before anything is shown.
    let ifaces = if cli.no_mdns {
        None
    } else {
        match mdns::interfaces(cli.mdns_interface.as_deref()) {
            Ok(i) => Some(i),
            Err(e) if cli.mdns_interface.is_some() => {
                return Err(usage(anyhow!("--mdns-interface: {e}")));
            }
            Err(e) => {
                tracing::warn!(error = %e, "mDNS: cannot list interfaces");
                Some(Vec::new())
            }
        }
    };
    let all_ifaces = mdns::interfaces(None).unwrap_or_default();
    let addrs = dialable(handle.listen_addrs(), &all_ifaces);
    let limits = if headless {
        model::Limits::HEADLESS
    } else {
        model::Limits::TUI
    };
    let mut model = Model::new(handle.peer_id(), name.clone(), addrs, limits);
    let mut mdns_notice = None;
    let _mdns = match ifaces {
        None => {
            model.mdns = Some("mDNS off".into());
            None
        }
        Some(ifaces) if ifaces.is_empty() => {
            model.mdns = Some("mDNS: no LAN interface".into());
            None
        }
        Some(ifaces) => {
            let adv = mdns::advertised(handle.listen_addrs(), &ifaces);
            let names: Vec<String> = ifaces.iter().map(|i| i.name.clone()).collect();
            let found_tx = tx.clone();
            match mdns::start(handle.peer_id(), adv, ifaces, move |d| {
                let _ = found_tx.unbounded_send(Input::Found(d));
            }) {
                Ok(m) => {
                    model.mdns = Some(format!("mDNS on {}", names.join(",")));
                    Some(m)
                }
                Err(e) => {
                    if cli.mdns_interface.is_some() {
                        return Err(anyhow!("mDNS: {e}").into());
                    }
                    model.mdns = Some("mDNS failed".into());
                    mdns_notice = Some(format!("mDNS discovery is off: {e}"));
                    None
                }
            }
        }
    };
    {
        let sig_tx = tx.clone();
        let _ = ctrlc::set_handler(move || {
            let _ = sig_tx.unbounded_send(Input::Signal);
        });
    }
    let mode = if headless {
        Mode::Headless { json: cli.json }
    } else {
        Mode::Tui
    };
    let mut app = App::new(handle.clone(), model, writer, mode);
    app.ring_bell = !cli.no_bell;
    app.user_dials = user_dials;
    app.db_path = Some(data.db_path());
    app.download_dir = cli.download_dir();
    app.inputs = Some(tx.clone());
    let web = match cli.web {
        Some(addr) => {
            let opts = web::WebOptions {
                addr,
                data_dir: data.path.clone(),
            };
            Some(web::start(opts, tx.clone())?)
        }
        None => None,
    };
    app.web = web.as_ref().map(|w| w.hub.clone());
    app.writer.send(store::Op::Name(name));
    let mut tui = if headless {
        spawn_stdin(tx.clone());
        None
    } else {
        Some(tui::Tui::start(tx.clone()).context("cannot set up the terminal")?)
    };
    let downloads = std::mem::take(&mut startup.downloads);
    app.ready(&data.path.display().to_string(), &startup, &rooms, history);
    if let Some(w) = &web {
        app.web_ready(&w.url, w.addr);
        if cli.open {
            open_browser(&w.url);
        }
    }
    app.resume_downloads(downloads).await;
    if skipped > 0 {
        app.error(format!(
            "{skipped} stored message(s) in {} could not be read and are not shown; they \
             are kept in the database",
            data.db_path().display()
        ));
    }
    if let Some(n) = mdns_notice {
        app.error(n);
    }
    if let Some(room) = &cli.room {
        app.handle(Input::Line(format!("/join {room}"))).await;
    }
    drop(tx);

    // The runtime never waits for the app; if the app fell behind, it says how many
    // events were dropped, and the app re-reads the rooms' logs from the node to store
    // what was missed (`App::on_lagged`).
    let events = events.filter_map(|e| {
        futures::future::ready(match e {
            echo_runtime::RuntimeEvent::Event(e) => Some(Input::Node(e)),
            echo_runtime::RuntimeEvent::Lagged { missed } => Some(Input::Lagged(missed)),
            echo_runtime::RuntimeEvent::TransferProgress {
                id, done, sources, ..
            } => Some(Input::File(FileInput::Progress { id, done, sources })),
            echo_runtime::RuntimeEvent::TransferDone { id, path, .. } => {
                Some(Input::File(FileInput::Done { id, path }))
            }
            echo_runtime::RuntimeEvent::TransferFailed {
                id, kind, reason, ..
            } => Some(Input::File(FileInput::Failed { id, kind, reason })),
            e @ (echo_runtime::RuntimeEvent::RelayReserved { .. }
            | echo_runtime::RuntimeEvent::RelayLost { .. }
            | echo_runtime::RuntimeEvent::LinkUpgraded { .. }
            | echo_runtime::RuntimeEvent::NatStatus { .. }) => Some(Input::Net(e)),
            _ => None,
        })
    });
    let mut inputs = futures::stream::select(events, rx);
    if let Some(t) = tui.as_mut() {
        t.draw(&app.model, app.show_help);
    }
    'outer: while let Some(first) = inputs.next().await {
        let mut next = Some(first);
        while let Some(input) = next.take() {
            match input {
                Input::Term(ev) => {
                    if let Some(t) = tui.as_mut() {
                        match t.on_event(ev, &mut app.model, &mut app.show_help) {
                            tui::Action::None => {}
                            tui::Action::Line(l) => app.handle(Input::Line(l)).await,
                            tui::Action::Quit => app.quit = true,
                        }
                    }
                    // Switching to a conversation reads it.
                    app.read_current().await;
                }
                other => {
                    let before = app.model.current_view().added;
                    app.handle(other).await;
                    if let Some(t) = tui.as_mut() {
                        let view = app.model.current_view();
                        let new =
                            (view.added.saturating_sub(before) as usize).min(view.entries.len());
                        if new > 0 {
                            let w = t.pane_width() as usize;
                            let rows: usize = view.entries[view.entries.len() - new..]
                                .iter()
                                .map(|e| layout::entry_rows(e, w).len())
                                .sum();
                            t.keep_position(rows);
                        }
                    }
                }
            }
            if app.quit {
                break 'outer;
            }
            next = inputs.next().now_or_never().flatten();
        }
        if let Some(t) = tui.as_mut() {
            t.draw(&app.model, app.show_help);
            if let Some(text) = app.clipboard.take() {
                t.copy(&text);
            }
            if std::mem::take(&mut app.bell) {
                t.bell();
            }
            if t.take_wants_older() && app.load_older() {
                // Scrolled past what is held: older lines came from the database.
                t.draw(&app.model, app.show_help);
            } else if t.at_bottom() {
                app.model.current_view_mut().end_scrollback();
            }
        }
    }
    drop(tui);
    tracing::info!("quitting");
    // Everything accepted from the input was handed to the node, but its events (our
    // own messages, which is what gets stored and printed) may still be on their way. A
    // query is answered only after the node has queued the events of the commands before
    // it, so after it every such event is waiting in `inputs`: apply them (bounded, in
    // case a peer keeps the node busy).
    if app.handle.peers().await.is_ok() {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            match inputs.next().now_or_never() {
                Some(Some(Input::Node(ev))) => app.handle(Input::Node(ev)).await,
                Some(Some(_)) => {}
                Some(None) | None => break,
            }
        }
    }
    app.flush_dm_state().await;
    if let Ok(Err(e)) = app.writer.flush().await {
        eprintln!("echo-chat: warning: history not fully saved: {e}");
    }
    Ok(())
}

/// Reads stdin lines into the app (headless mode). A line that is not UTF-8 is reported
/// and skipped; only the end of input (or a read error) ends it.
fn spawn_stdin(tx: mpsc::UnboundedSender<Input>) {
    let _ = std::thread::Builder::new()
        .name("echo-chat-stdin".into())
        .spawn(move || {
            use std::io::BufRead;
            let stdin = std::io::stdin();
            let mut lock = stdin.lock();
            let mut buf = Vec::new();
            let mut number = 0u64;
            loop {
                buf.clear();
                let input = match lock.read_until(b'\n', &mut buf) {
                    Ok(0) => Input::StdinClosed,
                    Err(e) => {
                        let _ = tx.unbounded_send(Input::BadLine(format!(
                            "cannot read standard input: {e}"
                        )));
                        Input::StdinClosed
                    }
                    Ok(_) => {
                        number += 1;
                        while matches!(buf.last(), Some(b'\n' | b'\r')) {
                            buf.pop();
                        }
                        match String::from_utf8(std::mem::take(&mut buf)) {
                            Ok(line) => Input::Line(line),
                            Err(e) => Input::BadLine(format!(
                                "input line {number} is not valid UTF-8 (byte {} of it); \
                                 it was not sent",
                                e.utf8_error().valid_up_to() + 1
                            )),
                        }
                    }
                };
                let end = matches!(input, Input::StdinClosed);
                if tx.unbounded_send(input).is_err() || end {
                    break;
                }
            }
        });
}

/// Resolves after `d` (a thread timer, so it works on any runtime).
fn after(d: Duration) -> futures::channel::oneshot::Receiver<()> {
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::spawn(move || {
        std::thread::sleep(d);
        let _ = tx.send(());
    });
    rx
}

/// Our addresses as a friend would dial them: an unspecified IP (0.0.0.0) becomes each
/// interface's address, LAN ones first, loopback last.
fn dialable(listen: &[Multiaddr], ifaces: &[mdns::Iface]) -> Vec<Multiaddr> {
    let mut lan = Vec::new();
    let mut local = Vec::new();
    for a in listen {
        let mut it = a.iter();
        match it.next() {
            Some(Protocol::Ip4(ip)) if ip.is_unspecified() => {
                let rest: Vec<Protocol> = it.collect();
                let mut ips: Vec<Ipv4Addr> = ifaces.iter().map(|i| i.addr).collect();
                ips.push(Ipv4Addr::LOCALHOST);
                ips.dedup();
                for ip in ips {
                    let mut m = Multiaddr::empty().with(Protocol::Ip4(ip));
                    for p in &rest {
                        m.push(p.clone());
                    }
                    if ip.is_loopback() {
                        local.push(m);
                    } else {
                        lan.push(m);
                    }
                }
            }
            Some(Protocol::Ip4(ip)) if IpAddr::V4(ip).is_loopback() => local.push(a.clone()),
            _ => lan.push(a.clone()),
        }
    }
    lan.extend(local);
    lan.dedup();
    lan
}

/// Opens `url` in the default browser (best effort; the URL is printed anyway).
fn open_browser(url: &str) {
    #[cfg(target_os = "macos")]
    let cmd = "open";
    #[cfg(not(target_os = "macos"))]
    let cmd = "xdg-open";
    let spawned = std::process::Command::new(cmd)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot open a browser");
    }
}
