//! What each user command does (parsed by `crate::commands`): the app's side of
//! `/join`, `/msg`, `/copy` and the rest, and sending text.

use echo_proto::{display_name, PeerId, Protocol};
use serde_json::{json, Value};

use super::net::link_name;
use super::{best_address, App, Mode};
use crate::commands::{self, Command, HELP};
use crate::model::{now_ms, ViewId};
use crate::store::Op;
use crate::text::{clean, clock, fmt_rtt};

impl App {
    pub(super) async fn on_line(&mut self, line: &str) {
        match commands::parse(line) {
            Ok(None) => {}
            Ok(Some(cmd)) => self.run(cmd).await,
            Err(e) => self.error(e),
        }
    }

    pub(super) async fn run(&mut self, cmd: Command) {
        match cmd {
            Command::Say(text) => match self.model.current_id().cloned() {
                Some(ViewId::Room(room)) => self.send_room(&room, &text).await,
                Some(ViewId::Direct(peer)) => self.send_direct(peer, &text).await,
                None => self.error("you are in no room: /join <room> first"),
            },
            Command::Send { room, text } => self.send_room(&room, &text).await,
            Command::Connect(addr) => match self.handle.connect(&addr).await {
                Ok(dial) => {
                    self.user_dials.insert(dial);
                    self.info(format!("connecting to {addr} …"))
                }
                Err(e) => self.error(format!("cannot connect: {e}")),
            },
            Command::Join(room) => {
                if self.model.find(&ViewId::Room(room.clone())).is_some() {
                    self.model.switch_to(&ViewId::Room(room.clone()));
                    self.emit(json!({"event": "switched", "room": room}), None);
                    return;
                }
                match self.handle.join(&room).await {
                    Ok(()) => {
                        // Lines after this one go to the new room, even before its
                        // Joined event arrives.
                        let id = ViewId::Room(room.clone());
                        self.model.view_mut(&id);
                        self.model.switch_to(&id);
                    }
                    Err(e) => self.error(format!("cannot join #{room}: {e}")),
                }
            }
            Command::Leave(room) => {
                let target = match room {
                    Some(r) => ViewId::Room(r),
                    None => match self.model.current_id() {
                        Some(id) => id.clone(),
                        None => return self.error("you are in no room"),
                    },
                };
                match target {
                    ViewId::Room(room) => {
                        if let Err(e) = self.handle.leave(&room).await {
                            self.error(format!("cannot leave #{room}: {e}"));
                        }
                    }
                    ViewId::Direct(peer) => {
                        self.model.remove(&ViewId::Direct(peer));
                    }
                }
            }
            Command::Nick(name) => match self.handle.set_name(&name).await {
                Ok(()) => {
                    self.model.name = name.clone();
                    self.writer.send(Op::Name(name.clone()));
                    let disp = self.model.me_display();
                    self.emit(
                        json!({"event": "nick", "name": name, "display": disp}),
                        None,
                    );
                    self.info(format!("you are now {disp}"));
                }
                Err(e) => self.error(format!("cannot change name: {e}")),
            },
            Command::Msg { peer, text } => match self.model.resolve_peer(&peer) {
                Ok(id) => self.send_direct(id, &text).await,
                Err(e) => self.error(e),
            },
            Command::Peers => self.list_peers().await,
            Command::Share { path, to } => self.share(&path, to),
            Command::Get { id, dir } => self.get(&id, dir).await,
            Command::Files => self.list_files(),
            Command::Cancel(id) => self.cancel(&id).await,
            Command::State => self.state().await,
            Command::History {
                room,
                before,
                limit,
            } => match room.strip_prefix('@') {
                Some(peer) => {
                    let limit = limit.unwrap_or(100).clamp(1, 500);
                    self.direct_history(peer, before.as_deref(), limit).await
                }
                None => self.history(&room, before.as_deref(), limit),
            },
            Command::Read(peer) => match self.model.resolve_peer(&peer) {
                Ok(id) => self.read_direct(id).await,
                Err(e) => self.error(e),
            },
            Command::Rooms => {
                let rooms: Vec<Value> = self
                    .model
                    .views
                    .iter()
                    .filter_map(|v| match &v.id {
                        ViewId::Room(r) => {
                            Some(json!({"room": r, "members": v.members.len(), "unread": v.unread}))
                        }
                        _ => None,
                    })
                    .collect();
                self.emit(json!({"event": "rooms", "rooms": rooms}), None);
                let lines: Vec<String> = self
                    .model
                    .views
                    .iter()
                    .filter_map(|v| match &v.id {
                        ViewId::Room(r) => Some(format!(
                            "  #{r}: {} other member(s), {} unread",
                            v.members.len(),
                            v.unread
                        )),
                        _ => None,
                    })
                    .collect();
                self.text_block("Your rooms:", lines);
            }
            Command::Addrs => self.show_addrs(),
            Command::Copy(n) => self.copy_address(n),
            Command::Help => {
                if self.headless() {
                    let lines = HELP.iter().map(|(c, h)| format!("  {c:<22} {h}")).collect();
                    self.text_block("Commands:", lines);
                } else {
                    self.show_help = true;
                }
            }
            Command::Quit => self.quit = true,
        }
    }

    /// Whether `text` mentions us by name.
    pub(super) fn mentions_me(&self, text: &str) -> bool {
        crate::text::mentions(text, &self.model.name, &self.model.me_display())
    }

    /// `/copy [N]`: puts our best address (or the `N`th of `/addrs`) on the clipboard
    /// through the terminal (OSC 52, which works in most terminals and over SSH).
    pub(super) fn copy_address(&mut self, n: Option<usize>) {
        let addrs = &self.model.addrs;
        let addr = match n {
            Some(n) => match addrs.get(n.wrapping_sub(1)) {
                Some(a) => a.to_string(),
                None => {
                    return self.error(format!(
                        "no address {n}: you have {} (see /addrs)",
                        addrs.len()
                    ))
                }
            },
            None => match best_address(addrs) {
                Some(a) => a,
                None => return self.error("no address to copy: not listening"),
            },
        };
        if self.headless() {
            // No terminal of ours to ask: print it.
            self.emit(
                json!({"event": "copy", "addr": addr}),
                Some(format!("* {addr}")),
            );
        } else {
            self.model.info(format!("Copied to the clipboard: {addr}"));
            self.clipboard = Some(addr);
        }
    }

    /// Several info lines, printed as text only (JSON mode has a structured event).
    pub(super) fn text_block(&mut self, title: &str, lines: Vec<String>) {
        let json = matches!(self.mode, Mode::Headless { json: true });
        if !json {
            self.emit(Value::Null, Some(format!("* {title}")));
            for l in &lines {
                self.emit(Value::Null, Some(format!("* {l}")));
            }
        }
        self.model.info(title);
        for l in lines {
            self.model.info(l);
        }
    }

    pub(super) async fn send_room(&mut self, room: &str, text: &str) {
        if let Err(e) = self.handle.send(room, text).await {
            self.error(format!("not sent: {e}"));
        }
    }

    pub(super) async fn send_direct(&mut self, peer: PeerId, text: &str) {
        let disp = self.model.display(&peer);
        match self.send_dm(peer, text).await {
            Ok(seq) => {
                let now = now_ms();
                self.emit(
                    json!({"event": "direct_sent", "to": peer.to_base58(), "display": disp, "text": text,
                           "seq": seq, "encrypted": seq.is_some()}),
                    Some(format!(
                        "[@{disp}] {} {}: {}",
                        clock(now),
                        self.model.me_display(),
                        clean(text)
                    )),
                );
                self.sent_direct(peer, text, seq, now);
            }
            Err(e) => self.error(format!("not sent to {disp}: {e}")),
        }
    }

    pub(super) async fn list_peers(&mut self) {
        let peers = self.handle.peers().await.unwrap_or_default();
        for p in &peers {
            if let Some(v) = self.model.peers.get_mut(&p.peer) {
                v.rtt = p.rtt.or(v.rtt);
                v.name = p.name.clone();
            }
        }
        let list: Vec<Value> = peers
            .iter()
            .map(|p| {
                json!({"peer": p.peer.to_base58(), "name": p.name, "display": display_name(&p.name, &p.peer),
                       "addr": p.addr.to_string(), "rtt_ms": p.rtt.map(|r| r.as_secs_f64() * 1000.0),
                       "rooms": p.rooms, "legacy": p.protocol == Protocol::Legacy,
                       "link": link_name(p.link)})
            })
            .collect();
        self.emit(json!({"event": "peers", "peers": list}), None);
        let mut lines: Vec<String> = peers
            .iter()
            .map(|p| {
                format!(
                    "  {} {} {} rtt {} rooms {}  {}",
                    "●",
                    display_name(&p.name, &p.peer),
                    link_name(p.link),
                    fmt_rtt(p.rtt),
                    p.rooms.join(","),
                    p.peer
                )
            })
            .collect();
        for (id, p) in &self.model.peers {
            if !p.online {
                let last = p
                    .addr
                    .as_ref()
                    .map(|a| format!(" (was at {a})"))
                    .unwrap_or_default();
                lines.push(format!(
                    "  ○ {} offline{last}  {id}",
                    display_name(&p.name, id)
                ));
            }
        }
        let title = match peers.len() {
            0 => "No peers connected. /connect <address>, or wait for mDNS on a LAN.".to_string(),
            n => format!("{n} peer(s) connected:"),
        };
        self.text_block(&title, lines);
    }
}
