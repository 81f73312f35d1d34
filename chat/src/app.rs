//! The app: applies node events and user commands to the model, persists what echo's
//! contract asks for, and prints events in headless mode. Runtime-agnostic: it only
//! awaits `futures` channels and the node's handle.

use std::collections::HashSet;
use std::io::Write;

use echo_proto::display_name;
use echo_proto::{DialId, Event, Position, Protocol, SharedMessage};
use echo_runtime::Handle;
use serde_json::{json, Value};

use crate::mdns::Discovered;
use crate::model::{Line, Model, PeerView, ViewId};
use crate::store::{Op, Writer};
use crate::text::{clean, clock, json_line};

mod direct;
mod files;
mod net;
mod run;
mod state;

pub use files::FileInput;

/// Version of the `--json` event and command schema (documented in `chat/JSON.md`).
pub const JSON_SCHEMA: u32 = 1;

/// Something for the app loop.
pub enum Input {
    /// An event of the node.
    Node(Event),
    /// A line typed (headless stdin, or the TUI's input line).
    Line(String),
    /// Headless stdin ended.
    StdinClosed,
    /// A terminal event.
    Term(ratatui::crossterm::event::Event),
    /// A peer seen by mDNS.
    Found(Discovered),
    /// The history writer failed (or another error to show).
    StoreError(String),
    /// A headless input line that could not be read (e.g. not UTF-8): shown as an error.
    BadLine(String),
    /// The app fell behind the node and this many events were dropped: the room logs
    /// are re-read from the node so nothing is missing from the database.
    Lagged(u64),
    /// SIGINT / SIGTERM.
    Signal,
    /// File sharing: the runtime's transfer events and answers that came later.
    File(FileInput),
    /// A network notice of the swarm: relay reservations, hole punches, AutoNAT.
    Net(echo_runtime::RuntimeEvent),
}

/// How the app reports events.
pub enum Mode {
    /// Terminal UI: only the model.
    Tui,
    /// Lines on stdout: readable text, or JSON.
    Headless {
        /// One JSON object per line.
        json: bool,
    },
}

/// The app.
pub struct App {
    /// The node.
    pub handle: Handle,
    /// State shown.
    pub model: Model,
    /// The history writer.
    pub writer: Writer,
    /// Output mode.
    pub mode: Mode,
    /// Set by /quit and signals.
    pub quit: bool,
    /// Set when the TUI should show its help overlay.
    pub show_help: bool,
    /// Text for the TUI to put on the clipboard (OSC 52), set by `/copy`.
    pub clipboard: Option<String>,
    /// Set when the TUI should ring the terminal bell (a mention or a direct message).
    pub bell: bool,
    /// Whether mentions and direct messages ring the bell (`--no-bell` turns it off).
    pub ring_bell: bool,
    /// Dials the user asked for: their failures are shown; automatic redials' are logged.
    pub user_dials: HashSet<DialId>,
    /// The history database, read when the user scrolls back past what the model holds.
    pub db_path: Option<std::path::PathBuf>,
    reader: Option<rusqlite::Connection>,
    /// Where `/get` puts files by default (`--download-dir`).
    pub download_dir: std::path::PathBuf,
    /// The app loop's own input, for answers that arrive later (a shared file hashed).
    pub inputs: Option<futures::channel::mpsc::UnboundedSender<Input>>,
    /// The web UI's tabs, if `--web` serves them: every event goes to them too.
    pub web: Option<crate::web::Hub>,
    /// Downloads waiting for a peer that has them (resumed at start, or no source left).
    waiting: Vec<crate::store::Download>,
    /// When the direct-message state was last stored, and whether it changed since.
    dm_saved: Option<std::time::Instant>,
    dm_dirty: bool,
    /// Direct-message reservations and unread numbers.
    pub dms: direct::Directs,
}

impl App {
    /// An app over a started node.
    pub fn new(handle: Handle, model: Model, writer: Writer, mode: Mode) -> App {
        App {
            handle,
            model,
            writer,
            mode,
            quit: false,
            show_help: false,
            clipboard: None,
            bell: false,
            ring_bell: true,
            user_dials: HashSet::new(),
            db_path: None,
            reader: None,
            download_dir: std::path::PathBuf::from("."),
            inputs: None,
            web: None,
            waiting: Vec::new(),
            dm_saved: None,
            dm_dirty: false,
            dms: direct::Directs::default(),
        }
    }

    /// Lines the TUI loads from the database per step when scrolling back.
    const SCROLLBACK_PAGE: usize = 200;

    /// The user scrolled past the oldest line the current room holds: loads older ones
    /// from the database. Returns whether anything was added.
    pub fn load_older(&mut self) -> bool {
        let view = self.model.current_view();
        let (ViewId::Room(room), true) = (&view.id, view.trimmed) else {
            return false;
        };
        let Some(before) = view.oldest_key() else {
            return false;
        };
        let room = room.clone();
        let Some(conn) = self.reader() else {
            return false;
        };
        let (msgs, all) = match crate::store::older(conn, &room, &before, Self::SCROLLBACK_PAGE) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "scrollback query failed");
                return false;
            }
        };
        let me = self.model.me;
        let lines: Vec<_> = msgs
            .into_iter()
            .map(|m| {
                let line = Line::Message {
                    author: m.author(),
                    name: m.name().to_string(),
                    text: m.text().to_string(),
                    own: m.author() == me,
                    history: true,
                    mention: m.author() != me && self.mentions_me(m.text()),
                    receipt: None,
                };
                (m.order_key(), m.sent_at_ms(), line)
            })
            .collect();
        let added = !lines.is_empty();
        self.model.current_view_mut().prepend_older(lines, all);
        added
    }

    /// The database, read-only use: scrollback and `/history` (opened on first use).
    fn reader(&mut self) -> Option<&rusqlite::Connection> {
        if self.reader.is_none() {
            let path = self.db_path.as_ref()?;
            match rusqlite::Connection::open(path) {
                Ok(c) => self.reader = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the database for scrollback");
                    return None;
                }
            }
        }
        self.reader.as_ref()
    }

    fn headless(&self) -> bool {
        matches!(self.mode, Mode::Headless { .. })
    }

    /// Prints one event line in headless mode (JSON, or `text` if given), and sends the
    /// JSON to the web UI's tabs.
    pub fn emit(&self, value: Value, text: Option<String>) {
        if let (Some(hub), false) = (&self.web, value.is_null()) {
            hub.send(json_line(&value));
        }
        let Mode::Headless { json } = self.mode else {
            return;
        };
        // Everything printed goes through here: nothing a peer chose reaches the terminal
        // as a control sequence.
        let line = if json {
            json_line(&value)
        } else {
            match text {
                Some(t) => clean(&t),
                None => return,
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    /// A notice: in the current view, and printed in headless mode.
    pub fn info(&mut self, text: impl Into<String>) {
        let text = text.into();
        self.emit(
            json!({"event": "info", "text": text}),
            Some(format!("* {}", clean(&text))),
        );
        self.model.info(text);
    }

    /// An error: in the current view, and printed in headless mode.
    pub fn error(&mut self, text: impl Into<String>) {
        let text = text.into();
        tracing::info!(error = %text, "error shown");
        self.emit(
            json!({"event": "error", "text": text}),
            Some(format!("! {}", clean(&text))),
        );
        self.model.error(text);
    }

    /// Prints the first line (headless) and shows restored history.
    pub fn ready(
        &mut self,
        data_dir: &str,
        startup: &crate::Startup,
        rooms: &[String],
        history: Vec<echo_proto::Message>,
    ) {
        for r in rooms {
            self.model.view_mut(&ViewId::Room(r.clone()));
        }
        self.model.select(0);
        let addrs: Vec<String> = self.model.addrs.iter().map(|a| a.to_string()).collect();
        self.emit(
            json!({
                "event": "ready",
                "schema": JSON_SCHEMA,
                "peer_id": self.model.me.to_base58(),
                "name": self.model.name,
                "display": self.model.me_display(),
                "addrs": addrs,
                "data_dir": data_dir,
                "profile": startup.profile,
                "new_identity": startup.new_identity,
            }),
            Some(format!(
                "* ready: peer id {} ({}), listening on {}",
                self.model.me,
                self.model.me_display(),
                addrs.join(" ")
            )),
        );
        for m in history {
            let m = std::sync::Arc::new(m);
            self.show_message(&m, None, true);
        }
        self.restore_directs();
        // Who this is: a new NAME is a new profile, so say which one is in use.
        let who = match &startup.profile {
            Some(p) => format!("profile {p:?}"),
            None => "this data dir".to_string(),
        };
        let identity = if startup.new_identity {
            "a new identity, created now"
        } else {
            "the same identity as before"
        };
        self.info(format!(
            "You are {} ({identity}), {who}: {data_dir}",
            self.model.me_display()
        ));
        if let Some((asked, kept)) = &startup.name_kept {
            self.info(format!(
                "Your name stays {kept:?}, this profile's name; NAME {asked:?} names a new \
                 profile only (/nick {asked} renames this one)"
            ));
        }
        if !self.headless() {
            self.model.info(format!(
                "Welcome, {}. Your address (give it to a friend, who types /connect <address>):",
                self.model.me_display()
            ));
            for a in self.model.addrs.clone() {
                self.model.address(a.to_string());
            }
            self.model
                .info("/copy puts it on your clipboard (F2 lets the mouse select text).");
            self.model
                .info("Type a message and press Enter. /help or F1 for help, /quit to leave.");
        }
    }

    /// Handles one input.
    pub async fn handle(&mut self, input: Input) {
        match input {
            Input::Node(ev) => self.on_event(ev).await,
            Input::Line(line) => self.on_line(&line).await,
            Input::StdinClosed | Input::Signal => self.quit = true,
            Input::Found(d) => self.on_found(d).await,
            Input::StoreError(e) | Input::BadLine(e) => self.error(e),
            Input::Lagged(missed) => self.on_lagged(missed).await,
            Input::File(f) => self.on_file(f).await,
            Input::Net(e) => self.on_net(e),
            Input::Term(_) => {}
        }
        self.model.trim_total();
    }

    async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::PeerUp(info) => {
                let legacy = info.protocol == Protocol::Legacy;
                if !info.listen_addrs.is_empty() {
                    self.writer.send(Op::Peer(
                        info.peer.to_base58(),
                        info.listen_addrs.iter().map(|a| a.to_string()).collect(),
                    ));
                }
                self.model.peer_up(
                    info.peer,
                    PeerView {
                        name: info.name.clone(),
                        online: true,
                        rtt: info.rtt,
                        addr: Some(info.addr.clone()),
                        legacy,
                        relayed: info.link == echo_proto::Link::Relayed,
                        seen: 0,
                    },
                );
                let disp = display_name(&info.name, &info.peer);
                self.emit(
                    json!({"event": "peer_up", "peer": info.peer.to_base58(), "name": info.name,
                           "display": disp, "addr": info.addr.to_string(), "legacy": legacy,
                           "link": net::link_name(info.link)}),
                    None,
                );
                let legacy_note = match (legacy, info.link) {
                    (true, _) => " (legacy echo-go)",
                    (false, echo_proto::Link::Relayed) => " (through a relay)",
                    _ => "",
                };
                self.info(format!(
                    "{} connected from {}{legacy_note}",
                    disp, info.addr
                ));
                self.retry_waiting().await;
            }
            Event::PeerDown {
                peer, name, reason, ..
            } => {
                if let Some(p) = self.model.peers.get_mut(&peer) {
                    p.online = false;
                    p.name = name.clone();
                }
                let disp = display_name(&name, &peer);
                self.emit(
                    json!({"event": "peer_down", "peer": peer.to_base58(), "name": name,
                           "display": disp, "reason": reason.to_string()}),
                    None,
                );
                self.info(format!("{disp} disconnected: {reason}"));
            }
            Event::LinkChanged { peer, link } => self.on_link_changed(peer, link),
            Event::PeerRtt { peer, rtt } => {
                if let Some(p) = self.model.peers.get_mut(&peer) {
                    p.rtt = Some(rtt);
                }
                self.emit(
                    json!({"event": "rtt", "peer": peer.to_base58(), "rtt_ms": rtt.as_secs_f64() * 1000.0}),
                    None,
                );
            }
            Event::NameChanged { peer, old, new } => {
                if let Some(p) = self.model.peers.get_mut(&peer) {
                    p.name = new.clone();
                }
                self.emit(
                    json!({"event": "name_changed", "peer": peer.to_base58(), "old": old, "new": new}),
                    None,
                );
                self.info(format!(
                    "{} is now known as {}",
                    display_name(&old, &peer),
                    display_name(&new, &peer)
                ));
            }
            Event::Joined { room } => {
                self.writer.send(Op::Joined(room.clone()));
                let id = ViewId::Room(room.clone());
                self.model.view_mut(&id);
                if self.model.views.len() == 1 {
                    self.model.switch_to(&id);
                }
                self.emit(
                    json!({"event": "joined", "room": room}),
                    Some(format!("* joined #{room}")),
                );
                self.model.info_in(&id, format!("You joined #{room}"));
                // Peers already in the room are not reported as joining it.
                if let Ok(peers) = self.handle.peers().await {
                    if let Some(i) = self.model.find(&id) {
                        for p in peers.iter().filter(|p| p.rooms.contains(&room)) {
                            self.model.views[i].members.insert(p.peer);
                        }
                    }
                }
            }
            Event::Left { room } => {
                self.writer.send(Op::Left(room.clone()));
                self.model.remove_room(&room);
                self.emit(
                    json!({"event": "left", "room": room}),
                    Some(format!("* left #{room}")),
                );
                self.model.info(format!("You left #{room}"));
            }
            Event::MemberJoined { room, peer } => {
                let id = ViewId::Room(room.clone());
                if let Some(i) = self.model.find(&id) {
                    self.model.views[i].members.insert(peer);
                }
                let disp = self.model.display(&peer);
                self.emit(
                    json!({"event": "member_joined", "room": room, "peer": peer.to_base58(), "display": disp}),
                    None,
                );
                self.model.info_in(&id, format!("{disp} is in #{room}"));
            }
            Event::MemberLeft { room, peer } => {
                let id = ViewId::Room(room.clone());
                if let Some(i) = self.model.find(&id) {
                    self.model.views[i].members.remove(&peer);
                }
                let disp = self.model.display(&peer);
                self.emit(
                    json!({"event": "member_left", "room": room, "peer": peer.to_base58(), "display": disp}),
                    None,
                );
                self.model.info_in(&id, format!("{disp} left #{room}"));
            }
            Event::Message { msg, position } => {
                if position.is_some() {
                    self.writer.send(Op::Message(msg.clone()));
                }
                self.show_message(&msg, position, false);
            }
            Event::Direct {
                from,
                name,
                text,
                sent_at_ms,
            } => {
                self.show_direct(from, Some(name), text, sent_at_ms, None);
                self.read_current().await;
            }
            Event::DirectReceived {
                from,
                seq,
                text,
                sent_at_ms,
            } => {
                self.save_dm_state().await;
                self.show_direct(from, None, text, sent_at_ms, Some(seq));
                // Seen at once when its conversation is on screen.
                self.read_current().await;
            }
            Event::DirectStatus { to, seq, status } => self.dm_status(to, seq, status).await,
            Event::SignatureFailed { room, author, seqs } => {
                // Delivered before the check (its author sent it on its own connection),
                // then the signature failed: not kept, so a restart never serves it.
                self.writer.send(Op::Forget {
                    room: room.clone(),
                    author,
                    seqs: seqs.clone(),
                });
                let disp = self.model.display(&author);
                self.emit(
                    json!({"event": "signature_failed", "room": room, "peer": author.to_base58(),
                           "display": disp, "seqs": seqs}),
                    None,
                );
                self.error(format!(
                    "{} message(s) from {disp} in #{room} failed their signature check: \
                     not kept, and its connection was closed",
                    seqs.len()
                ));
            }
            Event::Misbehaved { peer, reason } => {
                let disp = self.model.display(&peer);
                self.emit(
                    json!({"event": "misbehaved", "peer": peer.to_base58(), "display": disp, "reason": reason.to_string()}),
                    None,
                );
                self.error(format!(
                    "closed the connection to {disp}: it broke the protocol ({reason})"
                ));
            }
            Event::DialFailed {
                dial,
                addr,
                reason: error,
                ..
            } => {
                let user = self.user_dials.remove(&dial);
                self.emit(
                    json!({"event": "dial_failed", "addr": addr.to_string(), "error": error.to_string(), "requested": user}),
                    None,
                );
                if user {
                    self.error(format!("could not connect to {addr}: {error}"));
                } else {
                    tracing::info!(%addr, %error, "redial failed");
                }
            }
            Event::SeqReserved { room, upto } => {
                // The node may use these numbers soon: make the reservation durable first.
                let ack = self.writer.reserve(&room, upto).await;
                match ack {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => self.error(format!(
                        "could not save the sequence reservation of #{room}: {e}; messages \
                         sent now may be refused by peers after a restart"
                    )),
                    Err(_) => self.error("the history writer stopped"),
                }
                self.emit(
                    json!({"event": "seq_reserved", "room": room, "upto": upto}),
                    None,
                );
            }
            Event::Gap {
                room,
                author,
                missing,
            } => {
                let disp = self.model.display(&author);
                self.emit(
                    json!({"event": "gap", "room": room, "author": author.to_base58(),
                           "from": missing.0, "to": missing.1}),
                    None,
                );
                let n = missing.1.saturating_sub(missing.0);
                self.model.info_in(
                    &ViewId::Room(room.clone()),
                    format!(
                        "{n} message(s) of {disp} did not arrive; they will show up if they do"
                    ),
                );
            }
            other => tracing::debug!(?other, "unhandled event"),
        }
    }

    /// Shows (and prints) a room message. `restored`: loaded from the database at start.
    fn show_message(&mut self, msg: &SharedMessage, position: Option<Position>, restored: bool) {
        let own = msg.author() == self.model.me;
        let disp = msg.display_author();
        let late = position.is_some_and(|p| p.late);
        let offer = crate::files::parse_offer(msg.text());
        if let Some(o) = &offer {
            self.saw_offer(o, msg.author(), ViewId::Room(msg.room().to_string()));
        }
        self.emit(
            json!({
                "event": "message",
                "room": msg.room(),
                "author": msg.author().to_base58(),
                "name": msg.name(),
                "display": disp,
                "seq": msg.seq(),
                "lamport": msg.lamport(),
                "sent_at_ms": msg.sent_at_ms(),
                "text": msg.text(),
                "verified": msg.verified(),
                "own": own,
                "late": late,
                "restored": restored,
                "index": position.map(|p| p.index),
                "offer": offer.as_ref().map(crate::files::offer_json),
            }),
            Some(format!(
                "[#{}] {} {}: {}{}",
                msg.room(),
                clock(msg.sent_at_ms()),
                disp,
                match &offer {
                    Some(o) => crate::files::describe(o),
                    None => clean(msg.text()),
                },
                if restored { "  (history)" } else { "" }
            )),
        );
        let id = ViewId::Room(msg.room().to_string());
        if self.model.find(&id).is_none() {
            return; // a room we left meanwhile
        }
        let mention = !own && self.mentions_me(msg.text());
        let line = Line::Message {
            author: msg.author(),
            name: msg.name().to_string(),
            text: msg.text().to_string(),
            own,
            history: restored || late,
            mention,
            receipt: None,
        };
        if mention && !restored && !late && self.ring_bell {
            self.bell = true;
        }
        let view = self.model.view_mut(&id);
        if position.is_some() || restored {
            view.insert(msg.order_key(), msg.sent_at_ms(), line);
        } else {
            view.push(msg.sent_at_ms(), line);
        }
        if !own && !restored {
            if let Some(i) = self.model.find(&id) {
                self.model.mark_unread(i);
            }
        }
    }

    /// Events were dropped between the node and the app (it fell behind): every message
    /// the node holds goes to the database again (rows it has are ignored), so the stored
    /// history misses nothing, and the user is told.
    async fn on_lagged(&mut self, missed: u64) {
        tracing::warn!(missed, "events dropped: the app fell behind the node");
        let logs = self.handle.inspect(|n| {
            n.rooms()
                .filter_map(|r| n.room_log(r).map(|l| l.cloned().collect::<Vec<_>>()))
                .collect::<Vec<_>>()
        });
        let mut stored = 0u64;
        for msg in logs.await.unwrap_or_default().into_iter().flatten() {
            self.writer.send(Op::Message(msg));
            stored += 1;
        }
        self.emit(
            json!({"event": "lagged", "missed": missed, "restored": stored}),
            Some(format!(
                "the app fell {missed} events behind the node; {stored} room messages were \
                 re-read from it into the history"
            )),
        );
        self.model.error(format!(
            "{missed} events were skipped while the app was busy; the history was re-read \
             from the node (scroll back to see it)"
        ));
    }

    /// mDNS found a peer: its addresses go to the core, which dials it if idle and
    /// otherwise keeps to its own redial backoff (however often the peer announces).
    async fn on_found(&mut self, d: Discovered) {
        if d.peer == self.model.me || self.model.peers.get(&d.peer).is_some_and(|p| p.online) {
            return;
        }
        self.emit(
            json!({"event": "discovered", "peer": d.peer.to_base58(), "addrs": d.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>()}),
            None,
        );
        // Prefer IPv4 non-loopback addresses (the core dials the newest first).
        let mut addrs = d.addrs.clone();
        addrs.sort_by_key(|a| !a.to_string().starts_with("/ip4/127."));
        match self
            .handle
            .add_addresses(d.peer, addrs, echo_proto::AddrSource::Discovered)
            .await
        {
            Ok(0) => tracing::warn!(peer = %d.peer, "mDNS: no dialable address"),
            Ok(_) => tracing::debug!(peer = %d.peer, "mDNS: addresses handed to the node"),
            Err(e) => tracing::warn!(peer = %d.peer, error = %e, "mDNS: not taken"),
        }
    }
}

/// The address to give a friend: the first one that is not loopback, else the first.
pub fn best_address(addrs: &[echo_proto::Multiaddr]) -> Option<String> {
    addrs
        .iter()
        .find(|a| !a.to_string().starts_with("/ip4/127."))
        .or(addrs.first())
        .map(|a| a.to_string())
}
