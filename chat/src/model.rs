//! What the app knows: rooms and direct conversations with their lines, peers, own
//! identity. The terminal UI draws it; headless mode uses it to resolve commands.
//!
//! Everything here that peers can fill is bounded ([`Limits`]): the lines a view holds
//! (by count and bytes; older room history is the database's), all views' lines
//! together, the number of direct conversations, and the peers remembered. Headless mode
//! holds no lines at all: it prints them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use echo_proto::{display_name, OrderKey};
use echo_proto::{Multiaddr, PeerId};

/// A room or a direct conversation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViewId {
    /// A joined room.
    Room(String),
    /// Direct messages with a peer.
    Direct(PeerId),
}

/// What a line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A message (room or direct).
    Message {
        /// Author.
        author: PeerId,
        /// Author's name when sending.
        name: String,
        /// Text.
        text: String,
        /// Sent by us.
        own: bool,
        /// From history (restored at start or filled in late).
        history: bool,
        /// Mentions us (`@name`).
        mention: bool,
        /// An own encrypted direct message: its number and how far it got (drawn as
        /// `…` pending, `✓` delivered, `✓✓` read, updated in place).
        receipt: Option<(u64, echo_proto::DmStatus)>,
    },
    /// A notice (someone joined, a command's answer).
    Info(String),
    /// Something went wrong.
    Error(String),
    /// One of our addresses: drawn alone on its rows, unindented, so it can be selected.
    Address(String),
}

/// A line and where it sorts.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Room messages sort by their log key; other lines follow the line before them.
    pub key: (Option<OrderKey>, u64),
    /// Wall-clock time, ms since the Unix epoch.
    pub time_ms: u64,
    /// The line.
    pub line: Line,
}

/// How much the model holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Lines a view holds (0: none, for headless mode).
    pub view_lines: usize,
    /// Bytes of text a view holds.
    pub view_bytes: usize,
    /// Bytes of text all views hold together.
    pub total_bytes: usize,
    /// Direct conversations open at once (the least recently active one closes).
    pub directs: usize,
    /// Peers remembered (offline ones are forgotten first).
    pub peers: usize,
}

impl Limits {
    /// For the terminal UI: a screenful many times over.
    pub const TUI: Limits = Limits {
        view_lines: 2_000,
        view_bytes: 2 << 20,
        total_bytes: 16 << 20,
        directs: 64,
        peers: 1_024,
    };
    /// For headless mode: lines are printed, not kept.
    pub const HEADLESS: Limits = Limits {
        view_lines: 0,
        view_bytes: 0,
        total_bytes: 0,
        ..Limits::TUI
    };
}

/// A room or conversation and its lines.
#[derive(Debug, Clone)]
pub struct View {
    /// Which.
    pub id: ViewId,
    /// Lines, sorted by key: the most recent ones, at most `Limits::view_lines`.
    pub entries: Vec<Entry>,
    /// Messages not seen yet.
    pub unread: usize,
    /// Connected peers in the room.
    pub members: BTreeSet<PeerId>,
    /// Lines ever added (dropped ones included): what the UI compares to see new ones.
    pub added: u64,
    /// Older lines were dropped from `entries` (room history is still in the database).
    pub trimmed: bool,
    /// Bytes of text in `entries`.
    pub bytes: usize,
    /// When it last got a line (a counter), to close the least active conversation.
    pub active: u64,
    max_lines: usize,
    max_bytes: usize,
    /// Lines and bytes loaded from the database while the user scrolls back, held on
    /// top of the limits until [`View::end_scrollback`].
    extra: (usize, usize),
}

fn line_bytes(line: &Line) -> usize {
    match line {
        Line::Message { name, text, .. } => name.len() + text.len() + 64,
        Line::Info(t) | Line::Error(t) | Line::Address(t) => t.len() + 64,
    }
}

impl View {
    fn new(id: ViewId, limits: &Limits) -> View {
        View {
            id,
            entries: Vec::new(),
            unread: 0,
            members: BTreeSet::new(),
            added: 0,
            trimmed: false,
            bytes: 0,
            active: 0,
            max_lines: limits.view_lines,
            max_bytes: limits.view_bytes,
            extra: (0, 0),
        }
    }

    /// Appends a line after everything there.
    pub fn push(&mut self, time_ms: u64, line: Line) -> usize {
        let key = match self.entries.last() {
            Some(e) => (e.key.0, e.key.1 + 1),
            None => (None, 0),
        };
        self.added += 1;
        self.bytes += line_bytes(&line);
        self.entries.push(Entry { key, time_ms, line });
        self.trim();
        self.entries.len().saturating_sub(1)
    }

    /// Inserts a room message where its log key puts it; returns the index (a message
    /// older than every line of a full view is not kept: it is in the database).
    pub fn insert(&mut self, order: OrderKey, time_ms: u64, line: Line) -> usize {
        let key = (Some(order), 0);
        let at = self.entries.partition_point(|e| e.key <= key);
        if at > 0 && self.entries[at - 1].key == key {
            // Already shown (e.g. restored and delivered again).
            return at - 1;
        }
        if at == 0 && self.trimmed {
            return 0; // older than what is held
        }
        self.added += 1;
        self.bytes += line_bytes(&line);
        self.entries.insert(at, Entry { key, time_ms, line });
        let before = self.entries.len();
        self.trim();
        at.saturating_sub(before - self.entries.len())
    }

    /// Drops the oldest lines beyond the view's limits.
    fn trim(&mut self) {
        let mut drop = 0;
        let mut bytes = self.bytes;
        let max_lines = self.max_lines + self.extra.0;
        let max_bytes = self.max_bytes + self.extra.1;
        while drop < self.entries.len()
            && (self.entries.len() - drop > max_lines || bytes > max_bytes)
        {
            bytes -= line_bytes(&self.entries[drop].line);
            drop += 1;
        }
        self.drop_oldest(drop);
    }

    /// The log key of the oldest room message held: where loading older ones starts.
    pub fn oldest_key(&self) -> Option<OrderKey> {
        self.entries.iter().find_map(|e| e.key.0)
    }

    /// Puts room messages older than everything held (loaded from the database, oldest
    /// first) in front, held beyond the limits until [`View::end_scrollback`].
    /// `exhausted`: the database has nothing older.
    pub fn prepend_older(&mut self, older: Vec<(OrderKey, u64, Line)>, exhausted: bool) {
        let mut front = Vec::with_capacity(older.len());
        for (order, time_ms, line) in older {
            let b = line_bytes(&line);
            self.extra.0 += 1;
            self.extra.1 += b;
            self.bytes += b;
            front.push(Entry {
                key: (Some(order), 0),
                time_ms,
                line,
            });
        }
        front.append(&mut self.entries);
        self.entries = front;
        if exhausted {
            self.trimmed = false;
        }
    }

    /// Back at the newest lines: drops what scrolling back loaded beyond the limits.
    pub fn end_scrollback(&mut self) {
        if self.extra != (0, 0) {
            self.extra = (0, 0);
            self.trim();
        }
    }

    /// Drops the `n` oldest lines.
    pub fn drop_oldest(&mut self, n: usize) {
        let n = n.min(self.entries.len());
        if n > 0 {
            for e in &self.entries[..n] {
                self.bytes = self.bytes.saturating_sub(line_bytes(&e.line));
            }
            self.entries.drain(..n);
            self.trimmed = true;
        }
    }
}

/// A peer we have seen connected.
#[derive(Debug, Clone)]
pub struct PeerView {
    /// Its display name.
    pub name: String,
    /// Connected now.
    pub online: bool,
    /// Last round-trip time.
    pub rtt: Option<Duration>,
    /// Address of its connection.
    pub addr: Option<Multiaddr>,
    /// Speaks the legacy echo-go protocol.
    pub legacy: bool,
    /// Its connection goes through a relay (a limited circuit), not direct.
    pub relayed: bool,
    /// When it was last seen up (a counter), to forget the longest-gone first.
    pub seen: u64,
}

/// The whole state.
#[derive(Debug)]
pub struct Model {
    /// Our id.
    pub me: PeerId,
    /// Our name.
    pub name: String,
    /// Our dialable addresses.
    pub addrs: Vec<Multiaddr>,
    /// Rooms (in join order), then conversations.
    pub views: Vec<View>,
    /// Lines shown when there is no room (after leaving them all).
    pub status: View,
    /// Index of the current view in `views` (ignored when it is empty).
    pub current: usize,
    /// Peers.
    pub peers: BTreeMap<PeerId, PeerView>,
    /// mDNS state, for the status bar.
    pub mdns: Option<String>,
    /// What it holds at most.
    pub limits: Limits,
    /// File offers seen and downloads.
    pub files: crate::files::Files,
    /// A counter for `View::active` and `PeerView::seen`.
    tick: u64,
}

impl Model {
    /// A model for node `me`, holding at most `limits`.
    pub fn new(me: PeerId, name: String, addrs: Vec<Multiaddr>, limits: Limits) -> Model {
        Model {
            me,
            name,
            addrs,
            views: Vec::new(),
            status: View::new(ViewId::Room(String::new()), &limits),
            current: 0,
            peers: BTreeMap::new(),
            mdns: None,
            limits,
            files: crate::files::Files::default(),
            tick: 0,
        }
    }

    /// Records a peer that is up (forgetting the longest-gone offline one beyond
    /// `Limits::peers`).
    pub fn peer_up(&mut self, id: PeerId, mut peer: PeerView) {
        self.tick += 1;
        peer.seen = self.tick;
        self.peers.insert(id, peer);
        while self.peers.len() > self.limits.peers {
            let gone = self
                .peers
                .iter()
                .filter(|(_, p)| !p.online)
                .min_by_key(|(_, p)| p.seen)
                .map(|(id, _)| *id);
            match gone {
                Some(g) => {
                    self.peers.remove(&g);
                }
                None => break, // all online: the node bounds those
            }
        }
    }

    /// Marks view `i` as just active.
    pub fn touch(&mut self, i: usize) {
        self.tick += 1;
        if let Some(v) = self.views.get_mut(i) {
            v.active = self.tick;
        }
    }

    /// Lines held in all views.
    #[cfg(test)]
    pub fn lines_held(&self) -> usize {
        self.views.iter().map(|v| v.entries.len()).sum::<usize>() + self.status.entries.len()
    }

    /// Bytes of text held in all views.
    pub fn bytes_held(&self) -> usize {
        self.views.iter().map(|v| v.bytes).sum::<usize>() + self.status.bytes
    }

    /// Drops the oldest lines of the fullest views until all views together are within
    /// `Limits::total_bytes`.
    pub fn trim_total(&mut self) {
        while self.bytes_held() > self.limits.total_bytes {
            let fullest = self
                .views
                .iter_mut()
                .chain(std::iter::once(&mut self.status))
                .max_by_key(|v| v.bytes);
            match fullest {
                Some(v) if !v.entries.is_empty() => {
                    let n = (v.entries.len() / 8).max(1);
                    v.drop_oldest(n);
                }
                _ => break,
            }
        }
    }

    /// `name#abcd` for us.
    pub fn me_display(&self) -> String {
        display_name(&self.name, &self.me)
    }

    /// `name#abcd` for a peer (by its last known name).
    pub fn display(&self, peer: &PeerId) -> String {
        if *peer == self.me {
            return self.me_display();
        }
        let name = self.peers.get(peer).map(|p| p.name.as_str()).unwrap_or("");
        display_name(name, peer)
    }

    /// The current view's id.
    pub fn current_id(&self) -> Option<&ViewId> {
        self.views.get(self.current).map(|v| &v.id)
    }

    /// The current view (the status view when there is none).
    pub fn current_view(&self) -> &View {
        self.views.get(self.current).unwrap_or(&self.status)
    }

    /// The current view, mutably.
    pub fn current_view_mut(&mut self) -> &mut View {
        match self.views.get_mut(self.current) {
            Some(v) => v,
            None => &mut self.status,
        }
    }

    /// Index of a view.
    pub fn find(&self, id: &ViewId) -> Option<usize> {
        self.views.iter().position(|v| &v.id == id)
    }

    /// The view, created if missing (rooms before conversations).
    pub fn view_mut(&mut self, id: &ViewId) -> &mut View {
        let i = match self.find(id) {
            Some(i) => i,
            None => {
                let at = match id {
                    ViewId::Room(_) => self
                        .views
                        .iter()
                        .position(|v| matches!(v.id, ViewId::Direct(_)))
                        .unwrap_or(self.views.len()),
                    ViewId::Direct(_) => self.views.len(),
                };
                if at <= self.current && !self.views.is_empty() {
                    self.current += 1;
                }
                let mut view = View::new(id.clone(), &self.limits);
                if self.views.is_empty() {
                    // What was said while there was no room goes to the first one.
                    view.entries = std::mem::take(&mut self.status.entries);
                    view.bytes = std::mem::take(&mut self.status.bytes);
                }
                self.views.insert(at, view);
                if matches!(id, ViewId::Direct(_)) {
                    self.close_idle_direct(id);
                    return match self.find(id) {
                        Some(i) => {
                            self.touch(i);
                            &mut self.views[i]
                        }
                        None => unreachable!("the new view is never the one closed"),
                    };
                }
                at
            }
        };
        self.touch(i);
        &mut self.views[i]
    }

    /// Beyond `Limits::directs` conversations, closes the least recently active one
    /// (never the current one or `keep`).
    fn close_idle_direct(&mut self, keep: &ViewId) {
        let open = self
            .views
            .iter()
            .filter(|v| matches!(v.id, ViewId::Direct(_)))
            .count();
        if open <= self.limits.directs {
            return;
        }
        let cur = self.current_id().cloned();
        let idle = self
            .views
            .iter()
            .filter(|v| {
                matches!(v.id, ViewId::Direct(_)) && &v.id != keep && Some(&v.id) != cur.as_ref()
            })
            .min_by_key(|v| v.active)
            .map(|v| v.id.clone());
        if let Some(id) = idle {
            let cur = cur.clone();
            self.remove(&id);
            if let Some(c) = cur {
                self.switch_to(&c);
            }
        }
    }

    /// Removes a view.
    pub fn remove(&mut self, id: &ViewId) {
        if let Some(i) = self.find(id) {
            self.views.remove(i);
            if self.current > i || self.current >= self.views.len() {
                self.current = self.current.saturating_sub(1);
            }
        }
        let cur = self.current;
        if let Some(v) = self.views.get_mut(cur) {
            v.unread = 0;
        }
    }

    /// Removes a room the user left. When it was the current view, focus moves to the
    /// nearest room (the one before it, else the one after) or, with no room left, to the
    /// status view: never to a direct conversation, where the next line typed would go
    /// privately to someone.
    pub fn remove_room(&mut self, room: &str) {
        let id = ViewId::Room(room.to_string());
        let Some(i) = self.find(&id) else {
            return;
        };
        let was_current = i == self.current;
        self.remove(&id);
        if !was_current {
            return;
        }
        let rooms: Vec<usize> = (0..self.views.len())
            .filter(|&k| matches!(self.views[k].id, ViewId::Room(_)))
            .collect();
        match rooms.iter().rev().find(|&&k| k < i).or(rooms.first()) {
            Some(&k) => self.select(k),
            None => self.current = self.views.len(), // the status view
        }
    }

    /// Makes a view current.
    pub fn switch_to(&mut self, id: &ViewId) {
        if let Some(i) = self.find(id) {
            self.select(i);
        }
    }

    /// Makes the view at `i` current.
    pub fn select(&mut self, i: usize) {
        if i < self.views.len() {
            self.current = i;
            self.views[i].unread = 0;
        }
    }

    /// Moves to the next (`+1`) or previous (`-1`) view.
    pub fn cycle(&mut self, step: isize) {
        let n = self.views.len() as isize;
        if n > 0 {
            let i = (self.current as isize + step).rem_euclid(n);
            self.select(i as usize);
        }
    }

    /// Adds a notice to the current view.
    pub fn info(&mut self, text: impl Into<String>) {
        let now = now_ms();
        self.current_view_mut().push(now, Line::Info(text.into()));
    }

    /// Adds one of our addresses to the current view.
    pub fn address(&mut self, addr: impl Into<String>) {
        let now = now_ms();
        self.current_view_mut()
            .push(now, Line::Address(addr.into()));
    }

    /// Adds an error to the current view.
    pub fn error(&mut self, text: impl Into<String>) {
        let now = now_ms();
        self.current_view_mut().push(now, Line::Error(text.into()));
    }

    /// Adds a line to a given view if it exists.
    pub fn info_in(&mut self, id: &ViewId, text: impl Into<String>) {
        if let Some(i) = self.find(id) {
            self.views[i].push(now_ms(), Line::Info(text.into()));
        }
    }

    /// An own direct message to `peer` moved on: its mark changes in place (never
    /// back). Returns whether the line is held.
    pub fn set_dm_status(&mut self, peer: &PeerId, seq: u64, status: echo_proto::DmStatus) -> bool {
        let Some(i) = self.find(&ViewId::Direct(*peer)) else {
            return false;
        };
        let view = &mut self.views[i];
        for e in view.entries.iter_mut().rev() {
            if let Line::Message {
                receipt: Some((s, st)),
                ..
            } = &mut e.line
            {
                if *s == seq {
                    *st = (*st).max(status);
                    return true;
                }
            }
        }
        false
    }

    /// Counts an unread message in view `i` unless it is current.
    pub fn mark_unread(&mut self, i: usize) {
        if i != self.current {
            self.views[i].unread += 1;
        }
    }

    /// Finds a peer by full id, `name#abcd`, `#abcd`, or unique name.
    pub fn resolve_peer(&self, query: &str) -> Result<PeerId, String> {
        let q = query.trim().trim_start_matches('@');
        if let Ok(id) = q.parse::<PeerId>() {
            return Ok(id);
        }
        let mut by_display = Vec::new();
        let mut by_name = Vec::new();
        for (id, p) in &self.peers {
            let disp = display_name(&p.name, id);
            let tail = disp.rsplit('#').next().unwrap_or("");
            if disp.eq_ignore_ascii_case(q) || q.strip_prefix('#') == Some(tail) {
                by_display.push(*id);
            } else if p.name.eq_ignore_ascii_case(q) {
                by_name.push((*id, p.online));
            }
        }
        if by_display.len() == 1 {
            return Ok(by_display[0]);
        }
        let online: Vec<PeerId> = by_name.iter().filter(|p| p.1).map(|p| p.0).collect();
        let pick = if online.len() == 1 {
            online
        } else if online.is_empty() {
            by_name.iter().map(|p| p.0).collect()
        } else {
            online
        };
        let candidates = if by_display.len() > 1 {
            by_display
        } else {
            pick
        };
        match candidates.len() {
            1 => Ok(candidates[0]),
            0 => Err(format!(
                "no peer called {q:?}; /peers lists them (use name#abcd or the full peer id)"
            )),
            _ => Err(format!(
                "{q:?} is ambiguous: {}; use name#abcd",
                candidates
                    .iter()
                    .map(|p| self.display(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// Now, ms since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
