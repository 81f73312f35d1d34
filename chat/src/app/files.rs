//! The app's side of file sharing: `/share`, `/get`, `/files`, `/cancel`, offers seen
//! in messages, and the runtime's transfer events.

use std::path::{Path, PathBuf};
use std::time::Instant;

use echo_proto::blob::{Offer, TransferId};
use echo_proto::PeerId;
use echo_runtime::TransferFailure;
use serde_json::{json, Value};

use super::{App, Input};
use crate::files::{describe, human_size, offer_json, offer_text, State};
use crate::model::ViewId;
use crate::store::{Download, Op};

/// What the runtime reports about files, and answers that arrive later.
#[derive(Debug)]
pub enum FileInput {
    /// A shared file was hashed: post the offer where it was shared (or say why not).
    Shared {
        /// Where to post it.
        to: ViewId,
        /// The path the user gave.
        path: PathBuf,
        /// The offer, or why the file cannot be shared.
        result: Result<Offer, String>,
    },
    /// A download made progress.
    Progress {
        /// Which.
        id: TransferId,
        /// Bytes verified.
        done: u64,
        /// Peers it is fetched from now.
        sources: usize,
    },
    /// A download finished: the file is at `path`.
    Done {
        /// Which.
        id: TransferId,
        /// Where the file is.
        path: PathBuf,
    },
    /// A download gave up.
    Failed {
        /// Which.
        id: TransferId,
        /// Why.
        kind: TransferFailure,
        /// Why, readable.
        reason: String,
    },
}

/// `transfer_failed`'s `kind` field.
fn kind_name(kind: TransferFailure) -> &'static str {
    match kind {
        TransferFailure::NoSources => "no_sources",
        TransferFailure::Store => "store",
        TransferFailure::Check => "check",
        TransferFailure::Place => "place",
        _ => "other",
    }
}

/// `~/x` is in the home directory; anything else as typed.
fn expand_home(path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/") {
        if let Some(home) = directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf()) {
            return home.join(rest);
        }
    }
    PathBuf::from(path)
}

impl App {
    /// A message (room or direct) that carries an offer: remembered for `/get`.
    pub(super) fn saw_offer(&mut self, offer: &Offer, from: PeerId, view: ViewId) {
        self.model.files.saw(offer.clone(), from, view);
    }

    pub(super) fn share(&mut self, path: &str, to: Option<String>) {
        let target = match to {
            Some(room) if room.starts_with('#') => {
                let id = ViewId::Room(room[1..].to_string());
                if self.model.find(&id).is_none() {
                    return self.error(format!("you are not in {room}: /join it first"));
                }
                id
            }
            Some(peer) => match self.model.resolve_peer(peer.trim_start_matches('@')) {
                Ok(id) => ViewId::Direct(id),
                Err(e) => return self.error(e),
            },
            None => match self.model.current_id() {
                Some(id) => id.clone(),
                None => return self.error("you are in no room: /join <room> first"),
            },
        };
        let path = expand_home(path);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return self.error(format!("{} is not a file", path.display())),
            Err(e) => return self.error(format!("cannot share {}: {e}", path.display())),
        }
        let Some(tx) = self.inputs.clone() else {
            return self.error("file sharing is off in this app");
        };
        self.info(format!(
            "hashing {} to share it (large files take a moment) …",
            path.display()
        ));
        // Hashing a large file takes seconds: wait for it off the app loop, which keeps
        // drawing and chatting meanwhile.
        let pending = self.handle.share_file(path.clone());
        let spawned = std::thread::Builder::new()
            .name("echo-chat-share".into())
            .spawn(move || {
                let result = futures::executor::block_on(pending).map_err(|e| e.to_string());
                let _ = tx.unbounded_send(Input::File(FileInput::Shared {
                    to: target,
                    path,
                    result,
                }));
            });
        if let Err(e) = spawned {
            self.error(format!("cannot share: {e}"));
        }
    }

    /// The file is hashed: post the offer.
    async fn post_offer(&mut self, to: ViewId, path: &Path, offer: Offer) {
        let Some(text) = offer_text(&offer) else {
            return self.error(format!(
                "cannot offer {}: its name cannot be sent",
                path.display()
            ));
        };
        self.model
            .files
            .saw(offer.clone(), self.model.me, to.clone());
        let (where_json, where_text) = match &to {
            ViewId::Room(room) => (json!({"room": room}), format!("#{room}")),
            ViewId::Direct(peer) => (json!({"to": peer.to_base58()}), self.model.display(peer)),
        };
        match &to {
            ViewId::Room(room) => self.send_room(room, &text).await,
            ViewId::Direct(peer) => self.send_direct(*peer, &text).await,
        }
        let mut event = json!({"event": "shared", "path": path.display().to_string(),
                               "offer": offer_json(&offer)});
        if let (Value::Object(e), Value::Object(w)) = (&mut event, where_json) {
            e.extend(w);
        }
        self.emit(event, None);
        self.info(format!(
            "offered {} ({}) to {where_text}; it stays available while this node runs",
            offer.name,
            human_size(offer.size)
        ));
    }

    pub(super) async fn get(&mut self, id: &str, dir: Option<String>) {
        let seen = match self.model.files.find(id) {
            Ok(s) => s.clone(),
            Err(e) => return self.error(e),
        };
        let offer = seen.offer;
        if self.model.files.running(&offer.hash.0).is_some() {
            return self.error(format!("{} is already downloading (/files)", offer.name));
        }
        let dir = match dir {
            Some(d) => expand_home(&d),
            None => self.download_dir.clone(),
        };
        self.start_download(offer, seen.from, dir, false).await;
    }

    /// Downloads that had not finished when the app stopped: fetched again, with only
    /// the missing parts (the file store kept what was verified).
    /// They wait for a peer (none is connected at start); the first one up starts them.
    pub async fn resume_downloads(&mut self, downloads: Vec<crate::store::Download>) {
        for d in downloads {
            self.model
                .files
                .saw(d.offer.clone(), d.from, ViewId::Direct(d.from));
            self.info(format!(
                "{} will resume when a peer that has it is connected",
                d.offer.name
            ));
            self.waiting.push(d);
        }
        if self.model.peers.values().any(|p| p.online) {
            self.retry_waiting().await;
        }
    }

    /// A peer came up: downloads waiting for a source start again (every connected peer
    /// is asked).
    pub(super) async fn retry_waiting(&mut self) {
        for d in std::mem::take(&mut self.waiting) {
            if self.model.files.running(&d.offer.hash.0).is_none() {
                self.start_download(d.offer, d.from, d.dir, true).await;
            }
        }
    }

    async fn start_download(&mut self, offer: Offer, from: PeerId, dir: PathBuf, resumed: bool) {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return self.error(format!("cannot use {} for downloads: {e}", dir.display()));
        }
        match self.handle.download(offer.clone(), from, dir.clone()).await {
            Ok(tid) => {
                self.model.files.started(tid, offer.clone(), Instant::now());
                self.writer.send(Op::Download(Download {
                    offer: offer.clone(),
                    from,
                    dir: dir.clone(),
                }));
                self.emit(
                    json!({"event": "transfer_started", "transfer": tid.0,
                           "offer": offer_json(&offer), "from": from.to_base58(),
                           "dir": dir.display().to_string(), "resumed": resumed}),
                    None,
                );
                self.info(format!(
                    "{} {} ({}) into {}",
                    if resumed { "resuming" } else { "downloading" },
                    offer.name,
                    human_size(offer.size),
                    dir.display()
                ));
            }
            Err(e) => self.error(format!("cannot download {}: {e}", offer.name)),
        }
    }

    pub(super) async fn cancel(&mut self, id: &str) {
        let Some(t) = self.model.files.transfer_mut(id) else {
            return self.error(format!("no download {id} running (/files lists them)"));
        };
        let (tid, name, hash) = (t.id, t.offer.name.clone(), t.offer.hash);
        match self.handle.cancel_transfer(tid).await {
            Ok(()) => {
                self.model.files.ended(tid, State::Cancelled);
                self.writer.send(Op::DownloadEnded(hash));
                self.emit(
                    json!({"event": "transfer_cancelled", "transfer": tid.0}),
                    None,
                );
                self.info(format!(
                    "cancelled {name}; /get resumes it from where it stopped"
                ));
            }
            Err(e) => self.error(format!("cannot cancel {name}: {e}")),
        }
    }

    pub(super) fn list_files(&mut self) {
        let offers: Vec<Value> = self
            .model
            .files
            .offers()
            .iter()
            .map(|s| {
                let mut o = offer_json(&s.offer);
                o["from"] = json!(s.from.to_base58());
                o
            })
            .collect();
        let transfers: Vec<Value> = self
            .model
            .files
            .transfers
            .iter()
            .map(|t| transfer_json(t.id, &t.offer, t.done, &t.state))
            .collect();
        self.emit(
            json!({"event": "files", "offers": offers, "transfers": transfers}),
            None,
        );
        let mut lines: Vec<String> = Vec::new();
        let offers = self.model.files.offers();
        let shown = offers.len().min(20);
        for s in &offers[offers.len() - shown..] {
            let place = match &s.view {
                ViewId::Room(r) => format!("#{r}"),
                ViewId::Direct(_) => "a direct message".to_string(),
            };
            lines.push(format!(
                "  {}  from {} in {place}",
                describe(&s.offer),
                self.model.display(&s.from)
            ));
        }
        if offers.len() > shown {
            lines.insert(
                0,
                format!("  ({} older offers not shown)", offers.len() - shown),
            );
        }
        for t in &self.model.files.transfers {
            lines.push(format!(
                "  ↓ {} {}: {}",
                t.offer.short_id(),
                crate::text::clean(&t.offer.name),
                t.status()
            ));
        }
        let title = if lines.is_empty() {
            "No file offers yet. /share <path> offers one to the room.".to_string()
        } else {
            "Files (offers, then downloads):".to_string()
        };
        self.text_block(&title, lines);
    }

    pub(super) async fn on_file(&mut self, input: FileInput) {
        match input {
            FileInput::Shared { to, path, result } => match result {
                Ok(offer) => self.post_offer(to, &path, offer).await,
                Err(e) => self.error(format!("cannot share {}: {e}", path.display())),
            },
            FileInput::Progress { id, done, sources } => {
                self.model.files.progress(id, done, sources, Instant::now());
                if let Some(t) = self.model.files.transfers.iter().find(|t| t.id == id) {
                    self.emit(
                        json!({"event": "transfer_progress", "transfer": id.0,
                               "hash": t.offer.hash.to_hex(), "done": done,
                               "total": t.offer.size, "sources": sources,
                               "rate_bps": t.rate().map(|r| r as u64)}),
                        None,
                    );
                }
            }
            FileInput::Done { id, path } => {
                if let Some(t) = self.model.files.transfers.iter().rev().find(|t| t.id == id) {
                    self.writer.send(Op::DownloadEnded(t.offer.hash));
                }
                self.model.files.ended(id, State::Done(path.clone()));
                if let Some(hub) = &self.web {
                    hub.allow_download(id.0, path.clone());
                }
                let name = self.transfer_name(id);
                self.emit(
                    json!({"event": "transfer_done", "transfer": id.0,
                           "path": path.display().to_string()}),
                    None,
                );
                self.info(format!("downloaded {name}: {}", path.display()));
            }
            FileInput::Failed { id, kind, reason } => {
                // No connected peer has it now: it starts again when a peer comes up.
                if kind == TransferFailure::NoSources {
                    if let Some(t) = self.model.files.transfers.iter().rev().find(|t| t.id == id) {
                        if let Ok(seen) = self.model.files.find(&t.offer.hash.to_hex()) {
                            self.waiting.push(Download {
                                offer: t.offer.clone(),
                                from: seen.from,
                                dir: self.download_dir.clone(),
                            });
                        }
                    }
                }
                self.model.files.ended(id, State::Failed(reason.clone()));
                let name = self.transfer_name(id);
                self.emit(
                    json!({"event": "transfer_failed", "transfer": id.0,
                           "kind": kind_name(kind), "reason": reason}),
                    None,
                );
                if kind == TransferFailure::NoSources {
                    self.error(format!(
                        "no connected peer has {name} now: it resumes when one connects"
                    ));
                } else {
                    self.error(format!(
                        "download of {name} failed: {reason} (/get again resumes it)"
                    ));
                }
            }
        }
    }

    fn transfer_name(&self, id: TransferId) -> String {
        self.model
            .files
            .transfers
            .iter()
            .rev()
            .find(|t| t.id == id)
            .map(|t| t.offer.name.clone())
            .unwrap_or_else(|| format!("transfer {}", id.0))
    }
}

fn transfer_json(id: TransferId, offer: &Offer, done: u64, state: &State) -> Value {
    let (state, extra) = match state {
        State::Running => ("running", Value::Null),
        State::Done(p) => ("done", json!(p.display().to_string())),
        State::Failed(r) => ("failed", json!(r)),
        State::Cancelled => ("cancelled", Value::Null),
    };
    json!({"transfer": id.0, "offer": offer_json(offer), "done": done, "state": state,
           "detail": extra})
}
