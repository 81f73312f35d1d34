//! What the app knows: rooms and direct conversations with their lines, peers, own
//! identity. The terminal UI draws it; headless mode uses it to resolve commands.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use echo_proto::message::{display_name, OrderKey};
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
    },
    /// A notice (someone joined, a command's answer).
    Info(String),
    /// Something went wrong.
    Error(String),
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

/// A room or conversation and its lines.
#[derive(Debug, Clone)]
pub struct View {
    /// Which.
    pub id: ViewId,
    /// Lines, sorted by key.
    pub entries: Vec<Entry>,
    /// Messages not seen yet.
    pub unread: usize,
    /// Connected peers in the room.
    pub members: BTreeSet<PeerId>,
}

impl View {
    fn new(id: ViewId) -> View {
        View {
            id,
            entries: Vec::new(),
            unread: 0,
            members: BTreeSet::new(),
        }
    }

    /// Appends a line after everything there.
    pub fn push(&mut self, time_ms: u64, line: Line) -> usize {
        let key = match self.entries.last() {
            Some(e) => (e.key.0, e.key.1 + 1),
            None => (None, 0),
        };
        self.entries.push(Entry { key, time_ms, line });
        self.entries.len() - 1
    }

    /// Inserts a room message where its log key puts it; returns the index.
    pub fn insert(&mut self, order: OrderKey, time_ms: u64, line: Line) -> usize {
        let key = (Some(order), 0);
        let at = self.entries.partition_point(|e| e.key <= key);
        if at > 0 && self.entries[at - 1].key == key {
            // Already shown (e.g. restored and delivered again).
            return at - 1;
        }
        self.entries.insert(at, Entry { key, time_ms, line });
        at
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
}

impl Model {
    /// A model for node `me`.
    pub fn new(me: PeerId, name: String, addrs: Vec<Multiaddr>) -> Model {
        Model {
            me,
            name,
            addrs,
            views: Vec::new(),
            status: View::new(ViewId::Room(String::new())),
            current: 0,
            peers: BTreeMap::new(),
            mdns: None,
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
                let mut view = View::new(id.clone());
                if self.views.is_empty() {
                    // What was said while there was no room goes to the first one.
                    view.entries = std::mem::take(&mut self.status.entries);
                }
                self.views.insert(at, view);
                at
            }
        };
        &mut self.views[i]
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
mod tests {
    use super::*;

    fn key(l: u64, a: PeerId, s: u64) -> OrderKey {
        OrderKey {
            lamport: l,
            author: a,
            seq: s,
        }
    }

    fn msg(t: &str, a: PeerId) -> Line {
        Line::Message {
            author: a,
            name: "x".into(),
            text: t.into(),
            own: false,
            history: false,
        }
    }

    #[test]
    fn late_messages_go_where_they_belong() {
        let a = echo_proto::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let mut v = View::new(ViewId::Room("r".into()));
        v.push(0, Line::Info("joined".into()));
        v.insert(key(1, a, 1), 0, msg("one", a));
        v.insert(key(3, a, 3), 0, msg("three", a));
        v.push(0, Line::Info("after three".into()));
        assert_eq!(v.insert(key(2, a, 2), 0, msg("two", a)), 2);
        // Duplicates are not shown twice.
        assert_eq!(v.insert(key(2, a, 2), 0, msg("two", a)), 2);
        let texts: Vec<String> = v
            .entries
            .iter()
            .map(|e| match &e.line {
                Line::Message { text, .. } => text.clone(),
                Line::Info(t) | Line::Error(t) => t.clone(),
            })
            .collect();
        assert_eq!(texts, ["joined", "one", "two", "three", "after three"]);
    }

    #[test]
    fn resolves_peers() {
        let me = echo_proto::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let b1 = echo_proto::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let b2 = echo_proto::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let mut m = Model::new(me, "me".into(), vec![]);
        for (id, online) in [(b1, true), (b2, false)] {
            m.peers.insert(
                id,
                PeerView {
                    name: "bob".into(),
                    online,
                    rtt: None,
                    addr: None,
                    legacy: false,
                },
            );
        }
        assert_eq!(m.resolve_peer("bob"), Ok(b1));
        assert_eq!(m.resolve_peer(&m.display(&b2)), Ok(b2));
        assert_eq!(m.resolve_peer(&b2.to_base58()), Ok(b2));
        assert!(m.resolve_peer("carol").is_err());
        m.peers.get_mut(&b2).unwrap().online = true;
        assert!(m.resolve_peer("bob").unwrap_err().contains("ambiguous"));
    }
}
