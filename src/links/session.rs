//! Sessions: connection set-up, the handshake, the duplicate tie-break and hand-over,
//! goodbyes, ping/idle and closing.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;

use super::{Links, Out, Up, GOODBYE_BACKOFF_STEPS};
use crate::close::CloseReason;
use crate::conn::{Conn, State};
use crate::event::{Action, ConnId, ConnInfo, Event, Link, Protocol, Role, Transmit};
use crate::peers;
use crate::sync_queue::SyncQueue;
use crate::wire::{self, Frame, GoodbyeCode, Kind};

impl Links {
    /// A connection's chat substream is up. `hello` is our hello (its nonce is set here).
    pub fn handle_connected(
        &mut self,
        conn: ConnId,
        info: ConnInfo,
        mut hello: wire::Hello,
        now: Instant,
        out: &mut Out,
    ) {
        if let Some(d) = info.dial {
            if let Some((addr, expected)) = self.dials.remove(&d) {
                if let Some(p) = expected.and_then(|e| self.peers.get_mut(&e)) {
                    if p.dialing == Some(d) {
                        p.dialing = None;
                    }
                    // We dialed it and reached the peer: the address is confirmed.
                    if expected == Some(info.peer) {
                        p.unconfirmed.remove(&peers::split_p2p(&addr).0);
                    }
                }
            }
        }
        if let Some(p) = self.peers.get_mut(&info.peer) {
            if p.dialing.is_some() && info.dial.is_some() && p.dialing == info.dial {
                p.dialing = None;
            }
        }
        let nonce = self.nonce();
        let mut c = Conn::new(
            info.peer,
            info.role,
            info.remote_addr.clone(),
            info.protocol,
            nonce,
            &self.config,
            now,
        );
        c.dial = info.dial;
        c.link = info.link;
        if info.link != Link::Direct {
            c.sync_budget = self.config.relayed_sync_budget;
        }
        if info.peer == self.id {
            self.actions.push_back(Action::Close {
                conn,
                reason: CloseReason::local(GoodbyeCode::ProtocolViolation, "connected to itself"),
            });
            return;
        }
        if self.shut_down {
            self.actions.push_back(Action::Close {
                conn,
                reason: CloseReason::local(GoodbyeCode::Shutdown, "node is shut down"),
            });
            return;
        }
        // A peer already up or already handshaking holds its slot; handshakes in flight
        // count, so many arriving together cannot overshoot `max_peers`.
        let holds_slot = self.peers.get(&info.peer).is_some_and(|p| p.up)
            || self.conns.values().any(|c| c.peer == info.peer);
        if !holds_slot && self.slots_taken() >= self.config.max_peers {
            if info.protocol == Protocol::Chat {
                self.conns.insert(conn, c);
                self.close(
                    conn,
                    GoodbyeCode::TooManyPeers,
                    "too many peers",
                    false,
                    now,
                    out,
                );
            } else {
                self.actions.push_back(Action::Close {
                    conn,
                    reason: CloseReason::local(GoodbyeCode::TooManyPeers, "too many peers"),
                });
            }
            return;
        }
        match info.protocol {
            Protocol::Chat => {
                hello.nonce = nonce;
                hello.session = self.session;
                Frame::new(Kind::Hello(hello)).encode_to(&mut c.outbox);
                c.hello_left = c.outbox.len();
                self.conns.insert(conn, c);
                self.ready.insert(conn);
            }
            Protocol::Legacy => {
                if self
                    .peers
                    .get(&info.peer)
                    .is_some_and(|p| p.active.is_some())
                {
                    self.actions.push_back(Action::Close {
                        conn,
                        reason: CloseReason::local(
                            GoodbyeCode::Duplicate,
                            "duplicate legacy connection",
                        ),
                    });
                    return;
                }
                if self.legacy_conns() >= self.config.max_legacy_peers {
                    self.actions.push_back(Action::Close {
                        conn,
                        reason: CloseReason::local(
                            GoodbyeCode::TooManyPeers,
                            "too many legacy peers",
                        ),
                    });
                    return;
                }
                self.conns.insert(conn, c);
                let rooms: Vec<String> = self.config.default_room.iter().cloned().collect();
                let book_max = self.config.max_addrs_per_peer;
                let p = self.entry(info.peer, now, out.stats);
                p.protocol = Protocol::Legacy;
                p.rooms = rooms;
                if info.role == Role::Dialer {
                    let (bare, _) = peers::split_p2p(&info.remote_addr);
                    p.add_addr(bare, book_max, true);
                }
                self.activate(conn, now, out);
            }
        }
    }

    /// The peer's hello arrived (already checked for version and limits by the node).
    pub fn on_hello(&mut self, conn: ConnId, h: wire::Hello, now: Instant, out: &mut Out) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.their_nonce = Some(h.nonce);
        c.their_session = h.session;
        c.state = State::Open;
        // The first ping goes at once, so the peer's RTT is known right away (not one
        // `ping_interval` later); the next ones follow every `ping_interval`.
        c.next_ping = now;
        let (peer, addr, role) = (c.peer, c.addr.clone(), c.role);
        let max_addrs = self.config.max_addrs_per_peer;
        let p = self.entry(peer, now, out.stats);
        let old_name = std::mem::replace(&mut p.name, h.name.clone());
        let mut rooms = h.rooms;
        rooms.sort();
        rooms.dedup();
        p.rooms = rooms;
        p.protocol = Protocol::Chat;
        for a in h.listen_addrs.iter().take(max_addrs) {
            if let Ok(a) = Multiaddr::try_from(a.clone()) {
                let (bare, id) = peers::split_p2p(&a);
                if id.is_none_or(|id| id == peer) && peers::is_dialable(&bare).is_ok() {
                    p.add_addr(peers::fix_unspecified(&bare, &addr), max_addrs, false);
                }
            }
        }
        if role == Role::Dialer {
            let (bare, _) = peers::split_p2p(&addr);
            // We dialed this address and reached the peer: it is confirmed.
            if peers::is_dialable(&bare).is_ok() && (p.addrs.is_empty() || p.addrs.contains(&bare))
            {
                p.add_addr(bare, max_addrs, true);
            }
        }
        let legacy_old = p.active.filter(|old| {
            self.conns
                .get(old)
                .is_some_and(|c| c.protocol == Protocol::Legacy)
        });
        if let Some(old) = legacy_old {
            // The same peer also speaks echo/chat/2: that connection replaces the legacy one.
            if let Some(p) = self.peers.get_mut(&peer) {
                p.active = Some(conn);
            }
            let why = "replaced by an echo/chat/2 connection";
            self.finish(
                old,
                CloseReason::local(GoodbyeCode::Duplicate, why),
                now,
                out,
            );
            return self.activate(conn, now, out);
        }
        let Some(active) = self.peers.get(&peer).map(|p| p.active) else {
            return;
        };
        match active {
            None => self.activate(conn, now, out),
            // Already chosen while it was handshaking (the remote closed our previous
            // connection as its duplicate first): it simply becomes open.
            Some(old) if old == conn => self.activate(conn, now, out),
            // The peer restarted while its previous run's connection still looks open
            // here (its close has not arrived yet): that one is dead, whatever the
            // tie-break says, and the new run knows nothing we told the old one.
            Some(old) if self.restarted(old, h.session) => {
                self.hand_over(peer, old, conn, now, out);
                let why = "replaced: the peer restarted";
                self.finish(
                    old,
                    CloseReason::local(GoodbyeCode::Duplicate, why),
                    now,
                    out,
                );
                out.stats.peer_restarts += 1;
                self.exchange_peers(peer, now, out);
                self.up.push_back(Up::ChatPeerUp(peer));
                if old_name != h.name && !old_name.is_empty() {
                    out.events.push_back(Event::NameChanged {
                        peer,
                        old: old_name,
                        new: h.name,
                    });
                }
            }
            Some(old) => {
                let was_up = self.peers.get(&peer).is_some_and(|p| p.up);
                // A direct connection beats a relayed one whatever the nonces say (both
                // ends know which is which, so both keep the same one).
                let keep_old = match (self.conns.get(&old), self.conns.get(&conn)) {
                    (Some(o), Some(n)) if o.link != n.link => Some(o.link == Link::Direct),
                    _ => self.key_of(old).zip(self.key_of(conn)).map(|(a, b)| a > b),
                };
                match keep_old {
                    Some(true) => self.drain(conn, now),
                    Some(false) => {
                        self.hand_over(peer, old, conn, now, out);
                        self.drain(old, now);
                    }
                    None => self.drain(conn, now),
                }
                if was_up && old_name != h.name && !old_name.is_empty() {
                    out.events.push_back(Event::NameChanged {
                        peer,
                        old: old_name,
                        new: h.name,
                    });
                }
            }
        }
    }

    /// Makes the connection `new` the peer's instead of `old`: queued frames and
    /// history sync jobs move over. From a relayed to a direct connection, both sides
    /// also send summaries at once, for the history the relay's budget held back.
    fn hand_over(&mut self, peer: PeerId, old: ConnId, new: ConnId, now: Instant, out: &mut Out) {
        let (moved, sync, old_link) = match self.conns.get_mut(&old) {
            Some(o) => (
                o.take_movable(),
                std::mem::replace(&mut o.sync, SyncQueue::new(now)),
                o.link,
            ),
            None => (BytesMut::new(), SyncQueue::new(now), Link::Direct),
        };
        let Some(c) = self.conns.get_mut(&new) else {
            return;
        };
        c.outbox.extend_from_slice(&moved);
        if c.sync.is_empty() {
            c.sync = sync;
        }
        let link = c.link;
        if old_link != link && link == Link::Direct {
            c.next_sync = now;
        }
        self.ready.insert(new);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.active = Some(new);
            if p.up && old_link != link {
                out.events.push_back(Event::LinkChanged { peer, link });
            }
        }
    }

    /// Whether `old` (the peer's connection) was made with an earlier run of the peer
    /// than the one whose hello named `session`. Peers that send no session never count.
    fn restarted(&self, old: ConnId, session: u64) -> bool {
        self.conns
            .get(&old)
            .is_some_and(|o| o.their_session != 0 && session != 0 && o.their_session != session)
    }

    fn key_of(&self, conn: ConnId) -> Option<(bool, u64)> {
        let c = self.conns.get(&conn)?;
        Some(peers::conn_key(
            &self.id,
            &c.peer,
            c.role,
            c.my_nonce,
            c.their_nonce?,
        ))
    }

    /// Makes `conn` the peer's connection and reports the peer up.
    fn activate(&mut self, conn: ConnId, now: Instant, out: &mut Out) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let peer = c.peer;
        let is_chat = c.protocol == Protocol::Chat;
        let p = self.entry(peer, now, out.stats);
        p.active = Some(conn);
        p.attempts = 0;
        p.failures = 0;
        p.next_dial = None;
        p.ever_connected = true;
        let stash = std::mem::take(&mut p.stash);
        p.stash_until = None;
        if !stash.is_empty() {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.outbox.extend_from_slice(&stash);
                self.ready.insert(conn);
            }
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.up {
            return;
        }
        p.up = true;
        let rooms = p.rooms.clone();
        if let Some(info) = self.peer_info(&peer, &self.peers[&peer]) {
            out.events.push_back(Event::PeerUp(info));
        }
        for r in rooms.iter().filter(|r| self.rooms.contains(*r)) {
            out.events.push_back(Event::MemberJoined {
                room: r.clone(),
                peer,
            });
        }
        if is_chat {
            self.exchange_peers(peer, now, out);
            self.up.push_back(Up::ChatPeerUp(peer));
        }
    }

    fn drain(&mut self, conn: ConnId, now: Instant) {
        let until = now + self.config.drain_timeout;
        let bye = Frame::new(Kind::Goodbye(wire::Goodbye {
            code: GoodbyeCode::Duplicate.code(),
            reason: "duplicate connection".into(),
        }));
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = State::Draining { until };
            bye.encode_to(&mut c.outbox);
            self.ready.insert(conn);
        }
    }

    /// The remote said goodbye on `conn`.
    pub fn on_goodbye(&mut self, conn: ConnId, g: wire::Goodbye, now: Instant, out: &mut Out) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let peer = c.peer;
        let draining = matches!(c.state, State::Draining { .. });
        let reason: String = g
            .reason
            .chars()
            .filter(|c| !c.is_control())
            .take(256)
            .collect();
        let code = GoodbyeCode::from_code(g.code);
        let remote = CloseReason::Remote {
            code,
            detail: reason,
        };
        if code == GoodbyeCode::Duplicate {
            if !draining {
                // The remote chose another connection before we saw it. Keep our queued
                // frames for that connection, answer, and close this one.
                let moved = self.conns.get_mut(&conn).map(|c| c.take_movable());
                let handshaking = self
                    .conns
                    .iter()
                    .find(|(id, c)| **id != conn && c.peer == peer && c.protocol == Protocol::Chat)
                    .map(|(id, _)| *id);
                let is_active = self.peers.get(&peer).and_then(|p| p.active) == Some(conn);
                match (handshaking, moved) {
                    (Some(other), Some(m)) => {
                        if let Some(o) = self.conns.get_mut(&other) {
                            o.outbox.extend_from_slice(&m);
                            self.ready.insert(other);
                        }
                        if is_active {
                            self.hand_over(peer, conn, other, now, out);
                        }
                    }
                    (None, Some(m)) if !m.is_empty() => {
                        let until = now + self.config.drain_timeout;
                        if let Some(p) = self.peers.get_mut(&peer) {
                            p.stash.extend_from_slice(&m);
                            p.stash_until = Some(until);
                        }
                    }
                    _ => {}
                }
                self.close(
                    conn,
                    GoodbyeCode::Duplicate,
                    "duplicate connection",
                    false,
                    now,
                    out,
                );
            } else {
                self.finish(conn, remote, now, out);
            }
            return;
        }
        if code == GoodbyeCode::Shutdown || code == GoodbyeCode::TooManyPeers {
            // It left on purpose, or has no room for us: keep trying, but not at once
            // and not often.
            if let Some(p) = self.peers.get_mut(&peer) {
                p.attempts = p.attempts.max(GOODBYE_BACKOFF_STEPS);
                // It answered: it is reachable, so it is not given up on as unreachable.
                p.failures = 0;
            }
        }
        // A dial answered with a goodbye before any hello (e.g. refused for too many
        // peers): the dial failed, and the app learns why.
        if let Some(c) = self.conns.get(&conn) {
            if let (State::Handshaking, Some(dial)) = (c.state, c.dial) {
                out.events.push_back(Event::DialFailed {
                    dial,
                    addr: c.addr.clone(),
                    reason: remote.clone(),
                });
            }
        }
        self.finish(conn, remote, now, out);
    }

    /// A pong arrived: measures RTT.
    pub fn on_pong(&mut self, conn: ConnId, nonce: u64, now: Instant, out: &mut Out) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some((n, sent)) = c.ping_out else {
            return;
        };
        if n != nonce {
            return;
        }
        c.ping_out = None;
        c.next_ping = now + self.config.ping_interval;
        let rtt = now.saturating_duration_since(sent);
        let peer = c.peer;
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.active == Some(conn) {
                p.rtt = Some(rtt);
                out.events.push_back(Event::PeerRtt { peer, rtt });
            }
        }
    }

    /// Says goodbye on every connection and closes them.
    pub fn shutdown(&mut self, now: Instant, out: &mut Out) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let reason = "node shutting down";
            self.close(id, GoodbyeCode::Shutdown, reason, false, now, out);
        }
        for p in self.peers.values_mut() {
            p.next_dial = None;
        }
        self.shut_down = true;
    }

    // ----- sending -------------------------------------------------------------------

    pub fn send_frame(&mut self, conn: ConnId, frame: &Frame, now: Instant, out: &mut Out) {
        let mut buf = BytesMut::new();
        frame.encode_to(&mut buf);
        self.send_bytes(conn, &buf, now, out);
    }

    /// Queues bytes on a connection, closing it if the peer is not reading.
    pub fn send_bytes(&mut self, conn: ConnId, data: &[u8], now: Instant, out: &mut Out) {
        self.queue_bytes(conn, data, None, now, out);
    }

    /// [`Links::send_bytes`] of a shared buffer: kept as it is when nothing else is
    /// queued on the connection (no copy).
    pub fn send_shared(&mut self, conn: ConnId, data: &Bytes, now: Instant, out: &mut Out) {
        self.queue_bytes(conn, data, Some(data), now, out);
    }

    fn queue_bytes(
        &mut self,
        conn: ConnId,
        data: &[u8],
        shared: Option<&Bytes>,
        now: Instant,
        out: &mut Out,
    ) {
        // Queueing bytes changes no timer.
        let max = self.config.max_queued_bytes;
        let queued = self.conns.update_untimed(&conn, &self.config, |c| {
            c.queue(data, shared);
            let queued = c.queued();
            if queued > max {
                // What it has not read is dropped; only the goodbye is queued.
                c.clear_outgoing();
            }
            queued
        });
        let Some(queued) = queued else {
            return;
        };
        self.ready.insert(conn);
        if queued > max {
            let reason = format!("peer is not reading ({queued} bytes queued)");
            self.close(
                conn,
                GoodbyeCode::ProtocolViolation,
                &reason,
                true,
                now,
                out,
            );
        }
    }

    // ----- closing -------------------------------------------------------------------

    /// Closes a connection from our side: goodbye (chat), final bytes, `Close` action.
    pub fn close(
        &mut self,
        conn: ConnId,
        code: GoodbyeCode,
        reason: &str,
        misbehaved: bool,
        now: Instant,
        out: &mut Out,
    ) {
        let Some(mut c) = self.conns.remove(&conn) else {
            return;
        };
        self.ready.remove(&conn);
        if c.protocol == Protocol::Chat {
            Frame::new(Kind::Goodbye(wire::Goodbye {
                code: code.code(),
                reason: reason.into(),
            }))
            .encode_to(&mut c.outbox);
        }
        let reason = CloseReason::local(code, reason);
        if misbehaved {
            out.stats.misbehaved += 1;
            out.events.push_back(Event::Misbehaved {
                peer: c.peer,
                reason: reason.clone(),
            });
        }
        self.release(conn, c, reason, now, out);
    }

    /// Closes a connection whose remote said goodbye.
    pub fn finish(&mut self, conn: ConnId, reason: CloseReason, now: Instant, out: &mut Out) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.ready.remove(&conn);
        self.release(conn, c, reason, now, out);
    }

    /// Hands out a removed connection's last bytes, asks the runtime to close it, and
    /// forgets it.
    fn release(
        &mut self,
        conn: ConnId,
        mut c: Conn,
        reason: CloseReason,
        now: Instant,
        out: &mut Out,
    ) {
        if let Some(data) = c.take_transmit(usize::MAX, true) {
            self.urgent.push_back(Transmit { conn, data });
        }
        self.actions.push_back(Action::Close {
            conn,
            reason: reason.clone(),
        });
        self.detach(conn, c, &reason, now, out);
    }

    /// Forgets a closed connection; reports the peer down if it was its connection.
    pub(super) fn detach(
        &mut self,
        conn: ConnId,
        c: Conn,
        reason: &CloseReason,
        now: Instant,
        out: &mut Out,
    ) {
        let peer = c.peer;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.active != Some(conn) {
            // A connection that never became the peer's (its handshake failed, or it was
            // a losing duplicate). If it was our only way to the peer, try again later.
            let others = self.conns.values().any(|o| o.peer == peer);
            if !p.up && !others && p.dialing.is_none() && !self.shut_down {
                self.schedule_redial(peer, now);
            }
            return;
        }
        p.active = None;
        // Another open connection to the same peer takes over if there is one.
        let other = self
            .conns
            .iter()
            .find(|(_, o)| o.peer == peer && o.is_open())
            .map(|(id, _)| *id);
        if let Some(other) = other {
            let p = self.peers.get_mut(&peer).expect("peer exists");
            p.active = Some(other);
            let link = self.conns.get(&other).map_or(c.link, |o| o.link);
            if p.up && link != c.link {
                out.events.push_back(Event::LinkChanged { peer, link });
            }
            return;
        }
        let was_up = std::mem::replace(&mut p.up, false);
        p.last_seen = Some(now);
        let rooms = std::mem::take(&mut p.rooms);
        if was_up {
            let (name, rtt) = (p.name.clone(), p.rtt);
            for r in rooms.into_iter().filter(|r| self.rooms.contains(r)) {
                out.events.push_back(Event::MemberLeft { room: r, peer });
            }
            out.events.push_back(Event::PeerDown {
                peer,
                name,
                reason: reason.clone(),
                rtt,
            });
        }
        if !self.shut_down {
            self.schedule_redial(peer, now);
            self.top_up(now);
        }
    }

    // ----- timers --------------------------------------------------------------------

    pub(super) fn conn_timeout(&mut self, id: ConnId, now: Instant, out: &mut Out) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        // Re-armed from the last receive (marked dirty above, so re-indexed).
        c.idle_from = c.last_recv;
        match c.state {
            State::Handshaking if now >= c.opened + self.config.handshake_timeout => {
                let reason = "handshake timed out";
                self.close(id, GoodbyeCode::ProtocolViolation, reason, false, now, out);
            }
            State::Draining { until } if now >= until => {
                let reason =
                    CloseReason::local(GoodbyeCode::Duplicate, "duplicate connection drained");
                self.finish(id, reason, now, out);
            }
            State::Open if c.protocol == Protocol::Legacy => {
                let idle = self.config.legacy_idle_timeout;
                if c.last_recv.checked_add(idle).is_some_and(|t| now >= t) {
                    let reason = format!("legacy peer silent for {idle:?}");
                    self.close(id, GoodbyeCode::Idle, &reason, false, now, out);
                }
            }
            State::Open if c.protocol == Protocol::Chat => {
                if now >= c.last_recv + self.config.idle_timeout {
                    let reason = format!("no answer for {:?}", self.config.idle_timeout);
                    self.close(id, GoodbyeCode::Idle, &reason, false, now, out);
                } else if c.ping_out.is_none() && now >= c.next_ping {
                    let nonce: u64 = rand::Rng::random(&mut self.rng);
                    c.ping_out = Some((nonce, now));
                    let ping = Frame::new(Kind::Ping(wire::Ping { nonce }));
                    self.send_frame(id, &ping, now, out);
                }
            }
            _ => {}
        }
    }

    /// Peers that came up, for the node to greet.
    pub fn take_up(&mut self) -> Option<Up> {
        self.up.pop_front()
    }
}
