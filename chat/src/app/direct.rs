//! Direct messages: shown in their conversation, end-to-end encrypted ones (with a
//! sequence number and pending → delivered → read, drawn as a mark on the line) and
//! plain ones from legacy peers. Every one is stored (`store::dm`) with its state, so
//! conversations and their unread counts come back after a restart. Sequence numbers
//! are reserved durably ahead of sending, so even a crash right after sending never
//! makes the next run reuse one.

use std::collections::{BTreeMap, BTreeSet};

use echo_proto::{display_name, CommandError, DmStatus, PeerId};
use serde_json::{json, Value};

use super::App;
use crate::model::{Line, ViewId};
use crate::store::dm::DirectRow;
use crate::store::Op;
use crate::text::{clean, clock};

/// Sequence numbers reserved per step (a durable write per half of it).
const DM_RESERVE: u64 = 32;
/// Conversations whose unread numbers are remembered for the read receipt.
const UNREAD_PEERS: usize = 4096;
/// Unread numbers remembered per conversation (older ones get no read receipt).
const UNREAD_SEQS: usize = 1024;
/// Messages of each conversation shown at start.
const RESTORED_LINES: usize = 200;

/// The app's direct-message bookkeeping.
#[derive(Debug, Default)]
pub struct Directs {
    /// Per peer, the first sequence number not reserved in storage.
    reserved: BTreeMap<PeerId, u64>,
    /// Conversations with unread messages, and the numbers of the encrypted ones (for
    /// the read receipt, sent once when the conversation is read).
    unread: BTreeMap<PeerId, BTreeSet<u64>>,
}

impl Directs {
    /// A message from `peer` is unread (`seq`: its number when encrypted). Bounded: at
    /// most [`UNREAD_PEERS`] conversations and [`UNREAD_SEQS`] numbers each.
    fn note_unread(&mut self, peer: PeerId, seq: Option<u64>) {
        if !self.unread.contains_key(&peer) && self.unread.len() >= UNREAD_PEERS {
            self.unread.pop_first();
        }
        let seqs = self.unread.entry(peer).or_default();
        seqs.extend(seq);
        while seqs.len() > UNREAD_SEQS {
            seqs.pop_first();
        }
    }

    /// Conversations and the most numbers remembered for one (read back by the tests).
    #[cfg(test)]
    fn unread_counts(&self) -> (usize, usize) {
        (
            self.unread.len(),
            self.unread.values().map(BTreeSet::len).max().unwrap_or(0),
        )
    }
}

/// A stored direct message in the fields of the `direct` / `direct_sent` events.
fn row_json(r: &DirectRow, me: PeerId) -> Value {
    let status = match (r.own, r.status) {
        (false, DmStatus::Read) => "read",
        (false, _) => "unread",
        (true, s) => status_word(s),
    };
    let author = if r.own { me } else { r.peer };
    json!({
        "id": r.id,
        "peer": r.peer.to_base58(),
        "author": author.to_base58(),
        "name": r.name,
        "own": r.own,
        "seq": r.seq,
        "sent_at_ms": r.sent_at_ms,
        "text": r.text,
        "status": status,
    })
}

fn status_word(s: DmStatus) -> &'static str {
    match s {
        DmStatus::Pending => "pending",
        DmStatus::Delivered => "delivered",
        DmStatus::Read => "read",
    }
}

/// How often the direct-message state is stored at most.
const DM_SAVE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

impl App {
    /// A direct message from `from` (`seq`: encrypted, its number in the conversation;
    /// `name`: the name a plain one carried, else the one we know).
    pub(super) fn show_direct(
        &mut self,
        from: PeerId,
        name: Option<String>,
        text: String,
        sent_at_ms: u64,
        seq: Option<u64>,
    ) {
        let name = match name {
            Some(n) => {
                if let Some(p) = self.model.peers.get_mut(&from) {
                    p.name = n.clone();
                }
                n
            }
            None => self
                .model
                .peers
                .get(&from)
                .map(|p| p.name.clone())
                .unwrap_or_default(),
        };
        let disp = display_name(&name, &from);
        let text_stored = text.clone();
        let offer = crate::files::parse_offer(&text);
        if let Some(o) = &offer {
            self.saw_offer(o, from, ViewId::Direct(from));
        }
        self.emit(
            json!({"event": "direct", "from": from.to_base58(), "name": name,
                   "display": disp, "text": text, "sent_at_ms": sent_at_ms,
                   "offer": offer.as_ref().map(crate::files::offer_json),
                   "seq": seq, "encrypted": seq.is_some()}),
            Some(format!(
                "[@{disp}] {} {disp}: {}",
                clock(sent_at_ms),
                match &offer {
                    Some(o) => crate::files::describe(o),
                    None => clean(&text),
                }
            )),
        );
        let id = ViewId::Direct(from);
        self.model.view_mut(&id).push(
            sent_at_ms,
            Line::Message {
                author: from,
                name,
                text,
                own: false,
                history: false,
                mention: false,
                receipt: None,
            },
        );
        self.bell = self.ring_bell;
        if let Some(i) = self.model.find(&id) {
            self.model.mark_unread(i);
        }
        self.writer.send(Op::Direct(DirectRow {
            id: 0,
            peer: from,
            own: false,
            seq,
            sent_at_ms,
            name: self
                .model
                .peers
                .get(&from)
                .map(|p| p.name.clone())
                .unwrap_or_default(),
            text: text_stored,
            status: DmStatus::Pending,
        }));
        self.dms.note_unread(from, seq);
    }

    /// Our direct message went out: shown with its mark (encrypted ones) and stored.
    pub(super) fn sent_direct(&mut self, peer: PeerId, text: &str, seq: Option<u64>, now: u64) {
        let me = self.model.me;
        let name = self.model.name.clone();
        self.writer.send(Op::Direct(DirectRow {
            id: 0,
            peer,
            own: true,
            seq,
            sent_at_ms: now,
            name: name.clone(),
            text: text.to_string(),
            status: DmStatus::Pending,
        }));
        self.model.view_mut(&ViewId::Direct(peer)).push(
            now,
            Line::Message {
                author: me,
                name,
                text: text.to_string(),
                own: true,
                history: false,
                mention: false,
                receipt: seq.map(|s| (s, DmStatus::Pending)),
            },
        );
    }

    /// The conversation with `peer` was read: its unread count clears, and (with read
    /// receipts on) one read receipt covers its unread encrypted messages; never twice
    /// for a message, even after a restart (the database remembers it was read).
    pub(super) async fn read_direct(&mut self, peer: PeerId) {
        if let Some(i) = self.model.find(&ViewId::Direct(peer)) {
            self.model.views[i].unread = 0;
        }
        let Some(seqs) = self.dms.unread.remove(&peer) else {
            self.emit(
                json!({"event": "direct_read", "peer": peer.to_base58(), "seqs": []}),
                None,
            );
            return;
        };
        let seqs: Vec<u64> = seqs.into_iter().collect();
        self.writer.send(Op::DirectRead(peer));
        if !seqs.is_empty() {
            if let Err(e) = self.handle.mark_dm_read(peer, seqs.clone()).await {
                tracing::warn!(error = %e, "read receipt not sent");
            }
        }
        self.emit(
            json!({"event": "direct_read", "peer": peer.to_base58(), "seqs": seqs}),
            None,
        );
    }

    /// In the terminal UI, the conversation on screen is read.
    pub async fn read_current(&mut self) {
        if self.headless() {
            return;
        }
        if let Some(ViewId::Direct(peer)) = self.model.current_id().cloned() {
            if self.dms.unread.contains_key(&peer) {
                self.read_direct(peer).await;
            }
        }
    }

    /// At start: the stored conversations (most recently active ones, within the
    /// model's limit), their last messages and unread counts, and the reservations.
    pub(super) fn restore_directs(&mut self) {
        let limit = self.model.limits.directs;
        let me = self.model.me;
        let no_room = self.model.views.is_empty();
        let Some(conn) = self.reader() else {
            return;
        };
        let read = crate::store::dm::conversations(conn, limit).and_then(|convs| {
            let reserved = crate::store::dm::reserved(conn)?;
            let mut rows = Vec::new();
            for c in &convs {
                rows.push(crate::store::dm::recent(conn, &c.peer, None, RESTORED_LINES)?.0);
            }
            Ok((convs, reserved, rows))
        });
        let (convs, reserved, rows) = match read {
            Ok(r) => r,
            Err(e) => return self.error(format!("cannot read the stored direct messages: {e}")),
        };
        self.dms.reserved.extend(reserved);
        // The least recently active first, so the most recent ends up last.
        for (c, rows) in convs.into_iter().zip(rows).rev() {
            if !c.name.is_empty() {
                if let Some(p) = self.model.peers.get_mut(&c.peer) {
                    p.name = c.name.clone();
                }
            }
            let view = self.model.view_mut(&ViewId::Direct(c.peer));
            for r in rows {
                view.push(
                    r.sent_at_ms,
                    Line::Message {
                        author: if r.own { me } else { c.peer },
                        name: r.name,
                        text: r.text,
                        own: r.own,
                        history: true,
                        mention: false,
                        receipt: r.own.then_some(r.seq.map(|s| (s, r.status))).flatten(),
                    },
                );
            }
            view.unread = c.unread;
            if c.unread > 0 {
                self.dms
                    .unread
                    .insert(c.peer, c.unread_seqs.into_iter().collect());
            }
        }
        if no_room {
            // Never focus a conversation by default: a line typed would go to it.
            self.model.current = self.model.views.len();
        }
    }

    /// `/history @peer [id:N] [n]`: stored messages of a conversation, oldest first.
    pub(super) async fn direct_history(&mut self, peer: &str, before: Option<&str>, limit: usize) {
        let peer = match self.model.resolve_peer(peer) {
            Ok(p) => p,
            Err(e) => return self.error(e),
        };
        let before = match before.map(|b| b.strip_prefix("id:").and_then(|n| n.parse().ok())) {
            Some(None) => return self.error("usage: /history @peer [id:N] [n]"),
            Some(b) => b,
            None => None,
        };
        let me = self.model.me;
        // What this run wrote is in the answer.
        let _ = self.writer.flush().await;
        let Some(conn) = self.reader() else {
            return self.error("history is not stored in this run");
        };
        match crate::store::dm::recent(conn, &peer, before, limit) {
            Ok((rows, complete)) => {
                let messages: Vec<Value> = rows.iter().map(|r| row_json(r, me)).collect();
                self.emit(
                    json!({"event": "direct_history", "peer": peer.to_base58(),
                           "messages": messages, "complete": complete}),
                    None,
                );
            }
            Err(e) => self.error(format!("cannot read the conversation: {e}")),
        }
    }

    /// Sends a direct message: end-to-end encrypted (carried by other peers while `peer`
    /// is away), or in plain text to a legacy echo-go peer, which knows nothing else.
    /// Returns the sequence number of an encrypted one.
    pub(super) async fn send_dm(
        &mut self,
        peer: PeerId,
        text: &str,
    ) -> Result<Option<u64>, String> {
        let legacy = self.model.peers.get(&peer).is_some_and(|p| p.legacy);
        if legacy {
            return match self.handle.send_direct(peer, text).await {
                Ok(()) => Ok(None),
                Err(e) => Err(e.to_string()),
            };
        }
        self.reserve_dm(peer).await?;
        match self.handle.send_dm(peer, text).await {
            Ok(seq) => {
                self.save_dm_state().await;
                Ok(Some(seq))
            }
            Err(echo_runtime::Error::Command(CommandError::NoPrekey(_))) => Err(format!(
                "cannot encrypt to {} yet: their key has not reached us (connect to them, or \
                 to someone who knows them, once)",
                self.model.display(&peer)
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Makes sure the number the next message to `peer` gets is reserved in storage
    /// (durably) before it is sent: a crash after sending then never reuses it.
    async fn reserve_dm(&mut self, peer: PeerId) -> Result<(), String> {
        let next = self
            .handle
            .inspect(move |n| n.dm_next_seq(&peer))
            .await
            .map_err(|e| e.to_string())?;
        let reserved = self.dms.reserved.get(&peer).copied().unwrap_or(0);
        if next + DM_RESERVE / 2 < reserved {
            return Ok(());
        }
        let upto = next + DM_RESERVE;
        match self.writer.reserve_dm(peer, upto).await {
            Ok(Ok(())) => {
                self.dms.reserved.insert(peer, upto);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("could not save the message number ({e}); not sent")),
            Err(_) => Err("the history writer stopped; not sent".into()),
        }
    }

    /// An encrypted message of ours moved on: its mark changes in place.
    pub(super) async fn dm_status(&mut self, to: PeerId, seq: u64, status: DmStatus) {
        let word = status_word(status);
        self.emit(
            json!({"event": "direct_status", "to": to.to_base58(), "seq": seq, "status": word}),
            None,
        );
        self.writer.send(Op::DirectStatus(to, seq, status));
        self.model.set_dm_status(&to, seq, status);
        if status == DmStatus::Pending {
            self.save_dm_state().await;
        }
    }

    /// Stores the node's direct-message state (sequence numbers, replay windows,
    /// envelopes carried for others).
    ///
    /// At most every [`DM_SAVE_EVERY`] (a flood would otherwise write the whole state
    /// per message), and at quit. A crash inside that window cannot reuse a sequence
    /// number (they are reserved ahead, see `reserve_dm`); it can forget that a message
    /// was received, so a carrier's second copy is shown again (stored once).
    pub(super) async fn save_dm_state(&mut self) {
        let now = std::time::Instant::now();
        if self
            .dm_saved
            .is_some_and(|at| now.duration_since(at) < DM_SAVE_EVERY)
        {
            self.dm_dirty = true;
            return;
        }
        self.dm_saved = Some(now);
        self.dm_dirty = false;
        if let Ok(state) = self.handle.export_dm().await {
            self.writer.send(Op::DmState(state));
        }
    }

    /// At quit: stores what the last save skipped.
    pub async fn flush_dm_state(&mut self) {
        if self.dm_dirty {
            self.dm_saved = None;
            self.save_dm_state().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_numbers_stay_bounded_under_a_flood() {
        let mut d = Directs::default();
        let flooder = PeerId::random();
        for seq in 1..=(UNREAD_SEQS as u64 * 3) {
            d.note_unread(flooder, Some(seq));
        }
        assert_eq!(d.unread_counts(), (1, UNREAD_SEQS));
        assert_eq!(
            d.unread[&flooder].first(),
            Some(&(UNREAD_SEQS as u64 * 2 + 1))
        );
        for _ in 0..UNREAD_PEERS + 10 {
            d.note_unread(PeerId::random(), None);
        }
        assert_eq!(d.unread_counts().0, UNREAD_PEERS);
    }
}
