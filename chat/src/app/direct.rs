//! Direct messages: shown in their conversation, end-to-end encrypted ones (with a
//! sequence number and pending → delivered → read) and plain ones from legacy peers;
//! the node's direct-message state is saved after each so a restart never reuses a
//! sequence number.

use echo_proto::{display_name, CommandError, DmStatus, PeerId};
use serde_json::json;

use super::App;
use crate::model::{Line, ViewId};
use crate::store::Op;
use crate::text::{clean, clock};

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
            },
        );
        self.bell = self.ring_bell;
        if let Some(i) = self.model.find(&id) {
            self.model.mark_unread(i);
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

    /// An encrypted message of ours moved on: shown in its conversation.
    pub(super) async fn dm_status(&mut self, to: PeerId, seq: u64, status: DmStatus) {
        let word = match status {
            DmStatus::Pending => "pending",
            DmStatus::Delivered => "delivered",
            DmStatus::Read => "read",
        };
        self.emit(
            json!({"event": "direct_status", "to": to.to_base58(), "seq": seq, "status": word}),
            None,
        );
        match status {
            DmStatus::Pending => {
                self.save_dm_state().await;
                self.model.info_in(
                    &ViewId::Direct(to),
                    format!("message {seq}: pending (carried by peers until it arrives)"),
                );
            }
            DmStatus::Delivered => self
                .model
                .info_in(&ViewId::Direct(to), format!("message {seq}: ✓ delivered")),
            DmStatus::Read => self
                .model
                .info_in(&ViewId::Direct(to), format!("message {seq}: ✓✓ read")),
        }
    }

    /// Stores the node's direct-message state (sequence numbers, replay windows,
    /// envelopes carried for others).
    ///
    /// At most every [`DM_SAVE_EVERY`] (a flood would otherwise write the whole state
    /// per message), and at quit; a crash inside that window can reuse a sequence
    /// number, which the recipient then drops as a replay.
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
