//! Routing: bytes and frames from connections go to the links (hello, goodbye, pong,
//! peer lists) or to rooms, history and profiles; legacy lines become messages.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use libp2p_identity::PeerId;

use super::{valid_room, Node};
use crate::codec::{FrameDecoder, FrameError};
use crate::conn::{Decoder, State};
use crate::event::{ConnId, Event, Protocol};
use crate::legacy;
use crate::links::{Links, Out, Up};
use crate::message::Message;
use crate::rooms::Room;
use crate::wire::{self, Frame, GoodbyeCode, Kind};

impl Node {
    /// Bytes arrived on a connection (any chunking).
    pub fn handle_data(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        self.last_now = self.last_now.max(now);
        // Neither the time of this receive nor the decoder is read by the timer.
        let Some(c) = self.links.conns.get_mut_untimed(&conn, &self.links.config) else {
            return;
        };
        c.last_recv = now;
        match &mut c.decoder {
            Decoder::Lines(d) => {
                let mut lines = Vec::new();
                let res = d.feed(data, |l| lines.push(l));
                for l in lines {
                    self.on_legacy_line(conn, l, now);
                }
                if let Err(e) = res {
                    self.close(
                        conn,
                        GoodbyeCode::ProtocolViolation,
                        &e.to_string(),
                        true,
                        now,
                    );
                }
            }
            Decoder::Frames(_) => {
                if let Err(e) = self.handle_frames(conn, data, now) {
                    let reason = format!("malformed stream: {e}");
                    self.close(conn, GoodbyeCode::ProtocolViolation, &reason, true, now);
                }
            }
        }
    }

    /// The frames in `data` from `conn`: whole ones are handled in place while nothing
    /// is buffered (the usual case: no copy into the decoder), the rest is buffered.
    /// Stops when the connection is gone (a frame may close it).
    fn handle_frames(
        &mut self,
        conn: ConnId,
        mut data: &[u8],
        now: Instant,
    ) -> Result<(), FrameError> {
        loop {
            let Some(d) = self.frame_decoder(conn) else {
                return Ok(());
            };
            if d.buffered() > 0 {
                // A frame begun in an earlier input: complete it from `data` (only its
                // own bytes are copied), then go on in place.
                if let Some(n) = d.missing()?.filter(|&n| n <= data.len()) {
                    d.extend(&data[..n]);
                    data = &data[n..];
                    if let Some(payload) = d.decode()? {
                        self.on_frame(conn, &payload, Some(&payload), now);
                        continue;
                    }
                }
            }
            match d.split_whole(data)? {
                Some((payload, rest)) if payload.first() == Some(&wire::MESSAGE_FRAME_KEY) => {
                    data = rest;
                    self.on_frame(conn, payload, None, now);
                }
                Some((_, rest)) => {
                    // Other kinds are decoded by prost from the decoder's buffer
                    // (shared by their byte fields, as before).
                    d.extend(&data[..data.len() - rest.len()]);
                    data = rest;
                    if let Ok(Some(payload)) = d.decode() {
                        self.on_frame(conn, &payload, Some(&payload), now);
                    }
                }
                None => {
                    d.extend(data);
                    break;
                }
            }
        }
        while let Some(d) = self.frame_decoder(conn) {
            let Some(payload) = d.decode()? else {
                break;
            };
            self.on_frame(conn, &payload, Some(&payload), now);
        }
        Ok(())
    }

    /// The frame decoder of `conn`, if it is open and speaks frames.
    fn frame_decoder(&mut self, conn: ConnId) -> Option<&mut FrameDecoder> {
        let c = self
            .links
            .conns
            .get_mut_untimed(&conn, &self.links.config)?;
        match &mut c.decoder {
            Decoder::Frames(d) => Some(d),
            Decoder::Lines(_) => None,
        }
    }

    // ----- frames --------------------------------------------------------------------

    pub(super) fn hello(&self, nonce: u64) -> wire::Hello {
        wire::Hello {
            version_major: wire::VERSION_MAJOR,
            version_minor: wire::VERSION_MINOR,
            name: self.name.clone(),
            rooms: self.rooms.keys().cloned().collect(),
            listen_addrs: self.listen_addrs.iter().map(|a| a.to_vec()).collect(),
            capabilities: if self.config.broadcast_tree {
                vec!["chain-sig".into(), super::tree::CAPABILITY.into()]
            } else {
                vec!["chain-sig".into()]
            },
            nonce,
            agent: self.config.agent.clone(),
            // Set by the links when the hello is sent.
            session: 0,
            prekey: self.dm.prekey.public.to_vec(),
            prekey_sig: self.dm.prekey.signature.clone(),
        }
    }

    /// A frame's payload, read in place or (`shared`) taken from the decoder's buffer.
    pub(super) fn on_frame(
        &mut self,
        conn: ConnId,
        payload: &[u8],
        shared: Option<&Bytes>,
        now: Instant,
    ) {
        self.stats.frames_in += 1;
        self.tree_link_prev(conn, payload, now);
        let kind = match crate::codec::peek_varint(payload) {
            Ok(Some((key, _))) => usize::try_from(key >> 3).unwrap_or(0),
            _ => 0,
        };
        let counts = &mut self.stats.frames_in_kind;
        counts[if kind < counts.len() { kind } else { 0 }] += 1;
        let several_conns = self.links.conns.len() > 1;
        // The rate limit is not read by the timer either.
        let Some(c) = self.links.conns.get_mut_untimed(&conn, &self.links.config) else {
            return;
        };
        if !c.charge(
            payload.len() + crate::codec::varint_len(payload.len() as u64),
            now,
        ) {
            self.close(
                conn,
                GoodbyeCode::ProtocolViolation,
                "rate limit exceeded",
                true,
                now,
            );
            return;
        }
        // Fast path: a room message we already hold is dropped without decoding it.
        if c.state != State::Handshaking {
            // A byte-for-byte copy of a message frame taken recently (still known).
            if let Some((m, forgets)) = self.dups.get(payload) {
                // The room forgot nothing since (most hits), or the author still
                // knows the message.
                let known = |r: &Room| {
                    debug_assert!(r.forgets != forgets || r.is_known(&m.author, m.seq));
                    r.forgets == forgets || r.is_known(&m.author, m.seq)
                };
                if self.rooms.get(m.room.as_str()).is_some_and(known) {
                    self.stats.messages_in += 1;
                    self.stats.duplicates += 1;
                    if !self.tree.any_capable() {
                        return; // flooding: a duplicate changes no tree
                    }
                    let m = m.clone();
                    return self.tree_duplicate(conn, &m.room, &m.author, now);
                }
            }
            // A room message is read in place (no protobuf decoder), checked against
            // what the room holds, and only then copied out.
            if let Some(r) = wire::parse_message(payload) {
                let room = self.rooms.get(r.room);
                if let (Some(room), Ok(author)) = (room, PeerId::from_bytes(r.author)) {
                    if room.is_known(&author, r.seq) {
                        self.stats.messages_in += 1;
                        self.stats.duplicates += 1;
                        return self.tree_duplicate(conn, r.room, &author, now);
                    }
                    // Copies come from other neighbours: with one connection there
                    // is nothing to remember the frame for.
                    let remember = several_conns && payload.len() <= super::dups::MAX_PAYLOAD;
                    self.on_message(conn, r, Some(author), now);
                    if remember {
                        self.remember_frame(payload, r.room, &author, r.seq);
                    }
                    return;
                }
                return self.on_message(conn, r, None, now);
            }
            // Announcements too (the broadcast tree's most frequent frame).
            if let Some(a) = wire::parse_announce(payload) {
                return self.on_announce(conn, &a, now);
            }
        }
        let payload = shared
            .cloned()
            .unwrap_or_else(|| Bytes::copy_from_slice(payload));
        let frame = match Frame::decode_shared(payload) {
            Ok(f) => f,
            Err(e) => {
                let reason = format!("undecodable frame: {e}");
                self.close(conn, GoodbyeCode::ProtocolViolation, &reason, true, now);
                return;
            }
        };
        let handshaking = c.state == State::Handshaking;
        match frame.kind {
            Some(Kind::Hello(h)) if handshaking => self.on_hello(conn, h, now),
            Some(Kind::Hello(_)) => self.violation(conn, "second hello", now),
            Some(Kind::Goodbye(g)) => {
                let (links, mut out) = self.split();
                links.on_goodbye(conn, g, now, &mut out);
            }
            _ if handshaking => self.violation(conn, "frame before hello", now),
            None => {} // a frame kind from a newer minor version: ignored
            // Not on a draining duplicate: our goodbye was its last frame.
            Some(Kind::Ping(p)) if !matches!(c.state, State::Draining { .. }) => {
                self.send_frame(conn, &Frame::new(Kind::Pong(p)), now);
            }
            Some(Kind::Ping(_)) => {}
            Some(Kind::Pong(p)) => {
                let (links, mut out) = self.split();
                links.on_pong(conn, p.nonce, now, &mut out);
            }
            Some(Kind::Message(m)) => self.on_message(conn, wire::MessageRef::of(&m), None, now),
            Some(Kind::Membership(m)) => self.on_membership(conn, m, now),
            Some(Kind::Direct(d)) => self.on_direct(conn, d, now),
            Some(Kind::Peers(p)) => {
                self.links.on_peers(p, now);
            }
            Some(Kind::Profile(p)) => self.on_profile(conn, p, now),
            Some(Kind::Summary(sm)) => self.on_summary(conn, sm, now),
            Some(Kind::Request(r)) => self.on_request(conn, r, now),
            Some(Kind::Envelope(e)) => self.on_envelope(conn, e, now),
            Some(Kind::Announce(a)) => self.on_announce(conn, &wire::AnnounceRef::of(&a), now),
            Some(Kind::Prune(l)) => self.on_tree_link(conn, l, false),
            Some(Kind::Graft(l)) => self.on_tree_link(conn, l, true),
        }
    }

    /// Remembers the payload of a room-message frame just handled if its message is now
    /// held (not if it was refused, or only buffered unverified).
    fn remember_frame(&mut self, payload: &[u8], room: &str, author: &PeerId, seq: u64) {
        let Some(room) = self.rooms.get(room) else {
            return;
        };
        if let Some(m) = room.authors.get(author).and_then(|a| a.chain.get(seq)) {
            self.dups.insert(payload, m, room.forgets);
        }
    }

    pub(super) fn violation(&mut self, conn: ConnId, reason: &str, now: Instant) {
        self.close(conn, GoodbyeCode::ProtocolViolation, reason, true, now);
    }

    pub(super) fn on_hello(&mut self, conn: ConnId, h: wire::Hello, now: Instant) {
        if h.version_major != wire::VERSION_MAJOR {
            let reason = format!(
                "incompatible protocol version {}.{} (this node speaks {}.x)",
                h.version_major,
                h.version_minor,
                wire::VERSION_MAJOR
            );
            self.close(conn, GoodbyeCode::IncompatibleVersion, &reason, false, now);
            return;
        }
        if h.name.len() > self.config.max_name_len || h.name.chars().any(char::is_control) {
            return self.violation(conn, "invalid name in hello", now);
        }
        if h.rooms.len() > self.config.max_rooms {
            return self.violation(conn, "too many rooms in hello", now);
        }
        if let Some(r) = h
            .rooms
            .iter()
            .find(|r| valid_room(r, self.config.max_room_len).is_err())
        {
            let reason = format!("invalid room name {r:?} in hello");
            return self.violation(conn, &reason, now);
        }
        let Some(peer) = self.links.conns.get(&conn).map(|c| c.peer) else {
            return;
        };
        // The prekey is checked against the connection's authenticated identity: a hello
        // can only vouch for its own sender's key.
        let prekey = match (h.prekey.is_empty(), h.prekey_sig.is_empty()) {
            (true, true) => None,
            _ => match <[u8; 32]>::try_from(h.prekey.as_slice()) {
                Ok(k) if crate::dm::envelope::verify_prekey(&peer, &k, &h.prekey_sig) => Some(k),
                _ => return self.violation(conn, "invalid prekey in hello", now),
            },
        };
        let tree = self.config.broadcast_tree
            && h.capabilities.iter().any(|c| c == super::tree::CAPABILITY);
        self.tree.on_hello(peer, tree);
        let (links, mut out) = self.split();
        links.on_hello(conn, h, now, &mut out);
        if let (Some(k), Some(p)) = (prekey, self.links.peers.get_mut(&peer)) {
            p.prekey = Some(k);
        }
        self.greet(now);
    }

    /// Sends profiles and room summaries to peers that just came up.
    pub(super) fn greet(&mut self, now: Instant) {
        while let Some(Up::ChatPeerUp(peer)) = self.links.take_up() {
            self.send_profiles(peer, now);
            self.dm_greet(peer, now);
            let shared: Vec<String> = self
                .links
                .peers
                .get(&peer)
                .map(|p| p.rooms.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|r| self.rooms.contains_key(r))
                .collect();
            for r in shared {
                self.send_summary(peer, &r, now);
            }
        }
    }

    /// The links and the node's output queues, borrowed together.
    pub(super) fn split(&mut self) -> (&mut Links, Out<'_>) {
        let out = Out {
            events: &mut self.events,
            stats: &mut self.stats,
        };
        (&mut self.links, out)
    }

    pub(super) fn send_frame(&mut self, conn: ConnId, frame: &Frame, now: Instant) {
        let (links, mut out) = self.split();
        links.send_frame(conn, frame, now, &mut out);
    }

    pub(super) fn send_bytes(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        let (links, mut out) = self.split();
        links.send_bytes(conn, data, now, &mut out);
    }

    /// [`Node::send_bytes`] of a shared buffer (no copy when nothing else is queued).
    pub(super) fn send_shared(&mut self, conn: ConnId, data: &Bytes, now: Instant) {
        let (links, mut out) = self.split();
        links.send_shared(conn, data, now, &mut out);
    }

    /// Sends a frame to every open chat peer.
    pub(super) fn broadcast_chat(&mut self, frame: &Frame, now: Instant) {
        let wire = frame.to_wire();
        for t in self.links.chat_targets(None) {
            self.send_shared(t, &wire, now);
        }
    }

    pub(super) fn close(
        &mut self,
        conn: ConnId,
        code: GoodbyeCode,
        reason: &str,
        misbehaved: bool,
        now: Instant,
    ) {
        let (links, mut out) = self.split();
        links.close(conn, code, reason, misbehaved, now, &mut out);
    }

    pub(super) fn active_peer(&self, conn: ConnId) -> Option<PeerId> {
        self.links.active_peer(conn)
    }

    pub(super) fn on_membership(&mut self, conn: ConnId, m: wire::Membership, now: Instant) {
        if let Err(e) = valid_room(&m.room, self.config.max_room_len) {
            return self.violation(conn, &format!("invalid room name: {e}"), now);
        }
        let Some(peer) = self.active_peer(conn) else {
            return;
        };
        let max = self.config.max_rooms;
        let Some(p) = self.links.peers.get_mut(&peer) else {
            return;
        };
        let had = p.in_room(&m.room);
        if m.joined && !had {
            if p.rooms.len() >= max {
                return self.violation(conn, "joined too many rooms", now);
            }
            p.rooms.push(m.room.clone());
            p.rooms.sort();
        } else if !m.joined && had {
            p.rooms.retain(|r| *r != m.room);
        } else {
            return;
        }
        if self.rooms.contains_key(&m.room) {
            if m.joined {
                self.send_summary(peer, &m.room, now);
            }
            self.events.push_back(if m.joined {
                Event::MemberJoined { room: m.room, peer }
            } else {
                Event::MemberLeft { room: m.room, peer }
            });
        }
    }

    pub(super) fn on_direct(&mut self, conn: ConnId, d: wire::Direct, now: Instant) {
        if d.text.len() > self.config.max_text_len {
            return self.violation(conn, "direct message over the limit", now);
        }
        let Some(from) = self.active_peer(conn) else {
            return;
        };
        let name = self
            .links
            .peers
            .get(&from)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        self.events.push_back(Event::Direct {
            from,
            name,
            text: d.text,
            sent_at_ms: d.sent_at_ms,
        });
    }

    pub(super) fn on_legacy_line(&mut self, conn: ConnId, line: legacy::Line, now: Instant) {
        let Some(c) = self.links.conns.get_mut(&conn) else {
            return;
        };
        if !c.charge(line.text.len() + line.name.len() + 2, now) {
            return self.violation(conn, "rate limit exceeded", now);
        }
        let peer = c.peer;
        let mut name: String = line.name;
        name.truncate(name.floor_char_boundary(self.config.max_name_len));
        let mut text = line.text;
        text.truncate(text.floor_char_boundary(self.config.max_text_len));
        if let Some(p) = self.links.peers.get_mut(&peer) {
            if name.is_empty() {
                // A line without `name|` keeps the last claimed name.
                name = p.name.clone();
            } else if p.name != name {
                let old = std::mem::replace(&mut p.name, name.clone());
                if !old.is_empty() {
                    self.events.push_back(Event::NameChanged {
                        peer,
                        old,
                        new: name.clone(),
                    });
                }
            }
        }
        let Some(room) = self.config.default_room.clone() else {
            return;
        };
        if !self.rooms.contains_key(&room) {
            return;
        }
        let msg = Message {
            room,
            author: peer,
            name,
            seq: 0,
            lamport: self.clock.value(),
            sent_at_ms: 0,
            text,
            verified: false,
            prev: crate::message::GENESIS,
            prev_seq: 0,
            hash: crate::message::GENESIS,
            signature: None,
        };
        self.events.push_back(Event::Message {
            msg: Arc::new(msg),
            position: None,
        });
    }

    /// Sends a default-room message to legacy peers as `name|text\n`.
    pub(super) fn send_legacy(&mut self, msg: &Message, now: Instant) {
        if self.config.default_room.as_deref() != Some(msg.room.as_str()) {
            return;
        }
        let targets: Vec<ConnId> = self
            .links
            .up_peers()
            .iter()
            .filter(|p| p.protocol == Protocol::Legacy && p.id != msg.author)
            .filter_map(|p| p.conn)
            .collect();
        if targets.is_empty() {
            return;
        }
        let mut line = Vec::new();
        legacy::encode(&msg.name, &msg.text, &mut line);
        for t in targets {
            self.send_bytes(t, &line, now);
        }
    }
}
