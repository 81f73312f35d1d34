//! `/state` and `/history`: what a UI that connects later (the web page, a script on
//! `--json`) asks for to draw itself, in the same schema as the events.

use echo_proto::{display_name, Message, OrderKey, PeerId};
use serde_json::{json, Value};

use super::App;
use crate::model::ViewId;

/// Messages a `/history` answer holds by default, and at most.
const HISTORY_DEFAULT: usize = 100;
const HISTORY_MAX: usize = 500;

/// A stored message in the fields of the `message` event.
fn message_json(m: &Message, me: PeerId) -> Value {
    json!({
        "room": m.room(),
        "author": m.author().to_base58(),
        "name": m.name(),
        "display": m.display_author(),
        "seq": m.seq(),
        "lamport": m.lamport(),
        "sent_at_ms": m.sent_at_ms(),
        "text": m.text(),
        "verified": m.verified(),
        "own": m.author() == me,
        "offer": crate::files::parse_offer(m.text()).as_ref().map(crate::files::offer_json),
    })
}

/// `lamport:seq:author` (what `/history` takes to page back).
fn parse_key(s: &str) -> Result<OrderKey, String> {
    let bad = || format!("bad history key {s:?}: lamport:seq:author");
    let mut it = s.splitn(3, ':');
    let lamport = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let seq = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let author = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    Ok(OrderKey {
        lamport,
        author,
        seq,
    })
}

impl App {
    pub(super) async fn state(&mut self) {
        let online = self.handle.peers().await.unwrap_or_default();
        let carrying = self.handle.stats().await.map(|s| s.dm.held).unwrap_or(0);
        let rooms: Vec<Value> = self
            .model
            .views
            .iter()
            .filter_map(|v| match &v.id {
                ViewId::Room(r) => Some(json!({
                    "room": r,
                    "members": v.members.iter().map(|p| p.to_base58()).collect::<Vec<_>>(),
                    "unread": v.unread,
                })),
                ViewId::Direct(_) => None,
            })
            .collect();
        let directs: Vec<String> = self
            .model
            .views
            .iter()
            .filter_map(|v| match &v.id {
                ViewId::Direct(p) => Some(p.to_base58()),
                ViewId::Room(_) => None,
            })
            .collect();
        let conversations: Vec<Value> = self
            .model
            .views
            .iter()
            .filter_map(|v| match &v.id {
                ViewId::Direct(p) => Some(json!({
                    "peer": p.to_base58(),
                    "display": self.model.display(p),
                    "unread": v.unread,
                })),
                ViewId::Room(_) => None,
            })
            .collect();
        let peers: Vec<Value> = self
            .model
            .peers
            .iter()
            .map(|(id, p)| {
                let live = online.iter().find(|o| o.peer == *id);
                json!({
                    "peer": id.to_base58(),
                    "name": p.name,
                    "display": display_name(&p.name, id),
                    "online": p.online,
                    "rtt_ms": live.and_then(|o| o.rtt).or(p.rtt).map(|r| r.as_secs_f64() * 1000.0),
                    "addr": p.addr.as_ref().map(|a| a.to_string()),
                    "rooms": live.map(|o| o.rooms.clone()).unwrap_or_default(),
                })
            })
            .collect();
        let current = match self.model.current_id() {
            Some(ViewId::Room(r)) => json!(r),
            _ => Value::Null,
        };
        let addrs: Vec<String> = self.model.addrs.iter().map(|a| a.to_string()).collect();
        self.emit(
            json!({
                "event": "state",
                "schema": super::JSON_SCHEMA,
                "peer_id": self.model.me.to_base58(),
                "name": self.model.name,
                "display": self.model.me_display(),
                "addrs": addrs,
                "rooms": rooms,
                "directs": directs,
                "conversations": conversations,
                "carrying": carrying,
                "peers": peers,
                "current": current,
            }),
            None,
        );
    }

    /// The web UI is up: its URL (with the one-time token) for the user.
    pub fn web_ready(&mut self, url: &str, addr: std::net::SocketAddr) {
        self.emit(
            json!({"event": "web", "url": url, "addr": addr.to_string()}),
            Some(format!("* web UI: {url}")),
        );
        if !matches!(self.mode, super::Mode::Headless { .. }) {
            self.model
                .info("The web UI is up; open this link (it works once) in your browser:");
            self.model.address(url.to_string());
        }
    }

    pub(super) fn history(&mut self, room: &str, before: Option<&str>, limit: Option<usize>) {
        let before = match before.map(parse_key).transpose() {
            Ok(b) => b.unwrap_or(OrderKey {
                lamport: u64::MAX,
                author: self.model.me,
                seq: u64::MAX,
            }),
            Err(e) => return self.error(e),
        };
        let limit = limit.unwrap_or(HISTORY_DEFAULT).clamp(1, HISTORY_MAX);
        let me = self.model.me;
        let Some(conn) = self.reader() else {
            return self.error("history is not stored in this run");
        };
        match crate::store::older(conn, room, &before, limit) {
            Ok((msgs, complete)) => {
                let messages: Vec<Value> = msgs.iter().map(|m| message_json(m, me)).collect();
                self.emit(
                    json!({"event": "history", "room": room, "messages": messages,
                           "complete": complete}),
                    None,
                );
            }
            Err(e) => self.error(format!("cannot read the history of #{room}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keys_parse_or_say_why() {
        let p = PeerId::random();
        let k = parse_key(&format!("12:3:{p}")).unwrap();
        assert_eq!((k.lamport, k.seq, k.author), (12, 3, p));
        for bad in ["", "1", "1:2", "x:2:abc", "1:2:not-a-peer", "-1:2:abc"] {
            assert!(parse_key(bad).unwrap_err().contains("lamport:seq:author"));
        }
    }
}
