//! History that converges: anti-entropy summaries, paced history transfer, gap repair.
//!
//! * Each side of a connection sends a [`wire::Summary`] of every shared room when the
//!   connection opens, when either side joins a room, and every `sync_interval`. It
//!   lists, per author, the retention floor and the held sequence ranges.
//! * The receiver of a summary queues, per connection, the messages the sender lacks
//!   (at or above the sender's floor) as sync jobs. Jobs are turned into frames only
//!   while less than `sync_low_water` bytes are queued on the connection, at most
//!   `sync_batch_bytes` at a time, so live messages never wait behind a big backlog.
//!   A run of history always ends with a signed message so the receiver can verify it.
//! * Over a relayed connection ([`crate::Link::Relayed`]) summaries and history together
//!   stop at `relayed_sync_budget` bytes; the rest waits for a direct connection, which
//!   takes over the sync jobs and exchanges summaries at once.
//! * A gap that does not fill within `gap_timeout` is repaired with a
//!   [`wire::Request`] to the neighbour that sent the message after the gap, then to
//!   other members; after `max_repair_attempts` the gap is skipped ([`Event::Gap`]).

use std::time::Instant;

use bytes::BytesMut;
use libp2p_identity::PeerId;

use super::Node;
use crate::event::{ConnId, Event, Protocol};
use crate::ordering::GapAction;
use crate::rooms::AuthorSummary;
use crate::wire::{self, Frame, Kind};

/// Authors listed per summary frame (a larger room is split over several frames).
const SUMMARY_CHUNK: usize = 256;
/// Approximate bytes per summary frame (well under the default frame limit).
const SUMMARY_BYTES: usize = 64 * 1024;
/// Ranges listed per author; a more fragmented holding lists its first ranges only
/// (the neighbour may then send a few messages we already hold, never too few).
const MAX_RANGES: usize = 128;
/// Authors remembered from a multi-frame summary in progress.
const MAX_LISTED: usize = 65_536;
/// Largest range a neighbour may request at once.
const MAX_REQUEST_SPAN: u64 = 100_000;

impl Node {
    /// Sends our summary of `room` to `peer`, split into frames of at most
    /// `SUMMARY_CHUNK` authors and about `SUMMARY_BYTES` bytes.
    pub(super) fn send_summary(&mut self, peer: PeerId, room: &str, now: Instant) {
        let Some(conn) = self
            .links
            .peers
            .get(&peer)
            .filter(|p| p.up && p.protocol == Protocol::Chat)
            .and_then(|p| p.active)
        else {
            return;
        };
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let mut frames: Vec<wire::Summary> = vec![wire::Summary {
            room: room.to_string(),
            authors: Vec::with_capacity(r.authors.len().min(SUMMARY_CHUNK)),
            ..Default::default()
        }];
        let mut bytes = 0;
        for a in r.summary() {
            let ranges: Vec<u64> = a
                .ranges
                .iter()
                .take(MAX_RANGES)
                .flat_map(|&(s, e)| [s, e])
                .collect();
            let size = 48 + ranges.len() * 9;
            let cur = frames.last_mut().expect("one frame");
            if cur.authors.len() >= SUMMARY_CHUNK || (bytes + size > SUMMARY_BYTES && bytes > 0) {
                let chunk = cur.chunk + 1;
                cur.more = true;
                frames.push(wire::Summary {
                    room: room.to_string(),
                    chunk,
                    ..Default::default()
                });
                bytes = 0;
            }
            bytes += size;
            frames
                .last_mut()
                .expect("one frame")
                .authors
                .push(wire::AuthorRanges {
                    author: a.author.to_bytes(),
                    floor: a.floor,
                    ranges,
                });
        }
        let mut buf = BytesMut::new();
        for f in frames {
            Frame::new(Kind::Summary(f)).encode_to(&mut buf);
        }
        if let Some(c) = self.links.conns.get_mut(&conn) {
            self.stats.relayed_sync_bytes += c.spend_sync(buf.len());
        }
        self.send_bytes(conn, &buf, now);
    }

    pub(super) fn on_summary(&mut self, conn: ConnId, sm: wire::Summary, now: Instant) {
        if sm.authors.len() > SUMMARY_CHUNK {
            return self.violation(conn, "summary lists too many authors", now);
        }
        let mut parsed = Vec::with_capacity(sm.authors.len());
        for a in sm.authors {
            let Ok(author) = PeerId::from_bytes(&a.author) else {
                return self.violation(conn, "summary names an invalid author", now);
            };
            let r = &a.ranges;
            let ordered = r.len() % 2 == 0
                && r.len() <= 2 * MAX_RANGES
                && r.iter().all(|&x| x <= crate::message::MAX_SEQ + 1)
                && r.chunks(2).all(|p| p[0] < p[1])
                && r.windows(2).all(|w| w[0] <= w[1]);
            if !ordered {
                return self.violation(conn, "summary ranges are malformed", now);
            }
            parsed.push(AuthorSummary {
                author,
                floor: a.floor,
                ranges: r.chunks(2).map(|p| (p[0], p[1])).collect(),
            });
        }
        let Some(room) = self.rooms.get_mut(&sm.room) else {
            return; // not (or no longer) in that room
        };
        let Some(c) = self.links.conns.get_mut(&conn) else {
            return;
        };
        let mut jobs = Vec::new();
        for a in &parsed {
            let lacks = room.compare(a);
            if !lacks.is_empty() {
                jobs.push((a.author, lacks));
            }
        }
        // Authors listed in no frame of the whole summary: the sender has none of them.
        if sm.chunk == 0 {
            c.summary_rx.remove(&sm.room);
        }
        let listed = c.summary_rx.entry(sm.room.clone()).or_default();
        if listed.len() < MAX_LISTED {
            listed.extend(parsed.iter().map(|a| a.author));
        }
        if !sm.more {
            let listed = c.summary_rx.remove(&sm.room).unwrap_or_default();
            jobs.extend(room.all_ranges_except(&listed));
        }
        let delivered = room.collect_all(now);
        let max_jobs = self.config.max_sync_jobs;
        for (author, ranges) in jobs {
            if !c.sync.push(&sm.room, author, &ranges, max_jobs) {
                self.stats.sync_dropped += 1;
            }
        }
        if !c.sync.is_empty() {
            self.links.ready.insert(conn);
        }
        self.deliver(delivered, now);
    }

    pub(super) fn on_request(&mut self, conn: ConnId, r: wire::Request, now: Instant) {
        let Ok(author) = PeerId::from_bytes(&r.author) else {
            return self.violation(conn, "request names an invalid author", now);
        };
        if r.start >= r.end
            || r.end - r.start > MAX_REQUEST_SPAN
            || r.end > crate::message::MAX_SEQ + 1
        {
            return self.violation(conn, "request range is malformed", now);
        }
        let Some(room) = self.rooms.get(&r.room) else {
            return;
        };
        let Some(c) = self.links.conns.get_mut(&conn) else {
            return;
        };
        // Only what we hold is queued: a request naming nothing held costs a lookup.
        let holds = room
            .authors
            .get(&author)
            .is_some_and(|a| a.chain.range(r.start, r.end).next().is_some());
        if !holds {
            self.stats.requests_refused += 1;
            if !c.sync.charge_refusal(now) {
                return self.violation(conn, "too many requests for messages not held", now);
            }
            return;
        }
        if !c.sync.push(
            &r.room,
            author,
            &[(r.start, r.end)],
            self.config.max_sync_jobs,
        ) {
            self.stats.sync_dropped += 1;
        }
        self.links.ready.insert(conn);
    }

    /// Turns queued history into frames while the connection has room for it.
    pub(super) fn pump_sync(&mut self, conn: ConnId) {
        let (low, batch) = (self.config.sync_low_water, self.config.sync_batch_bytes);
        // Runs before every transmit: its history queue, outbox and budget are not
        // read by the connection's timer (no re-indexing per transmit).
        let Some(c) = self.links.conns.get_mut_untimed(&conn, &self.links.config) else {
            return;
        };
        if c.sync.is_empty() || c.queued() >= low || !c.is_open() || c.sync_budget == 0 {
            return;
        }
        // A relayed connection sends history only up to its budget (a run may end a
        // little past it: it is completed up to a signature).
        let batch = batch.min(c.sync_budget);
        let mut out = BytesMut::new();
        while out.len() < batch {
            let Some((key, first)) = c.sync.front() else {
                break;
            };
            let Some((start, end)) = first else {
                c.sync.pop_job();
                continue;
            };
            let Some(chain) = self
                .rooms
                .get(&key.0)
                .and_then(|r| r.authors.get(&key.1))
                .map(|a| &a.chain)
            else {
                c.sync.pop_job();
                continue;
            };
            let mut next = end;
            let mut last = None;
            for m in chain.range(start, end) {
                if out.len() >= batch {
                    next = m.seq;
                    break;
                }
                m.encode_frame_to(&mut out);
                self.stats.history_sent += 1;
                last = Some(m.clone());
            }
            // The receiver can only verify a run that ends with a signature.
            if let Some(last) = last.filter(|l| l.signature.is_none()) {
                for m in chain.through_next_signature(last.seq) {
                    m.encode_frame_to(&mut out);
                    self.stats.history_sent += 1;
                    // What the completion sent is not sent again by the next batch.
                    next = next.max(m.seq + 1);
                }
            }
            c.sync.sent_below(next);
        }
        self.stats.relayed_sync_bytes += c.spend_sync(out.len());
        c.outbox.extend_from_slice(&out);
    }

    /// Gap timers of every room: repair requests, skips, deliveries.
    pub(super) fn rooms_timeout(&mut self, now: Instant) {
        for name in self.rooms.due(now, &()) {
            let Some(room) = self.rooms.get_mut(&name) else {
                continue;
            };
            let (gaps, delivered) = room.on_timeout(now);
            for (author, action, source) in gaps {
                match action {
                    GapAction::Request {
                        start,
                        end,
                        attempt,
                    } => self.request_repair(&name, author, start, end, attempt, source, now),
                    GapAction::Skipped { start, end } => self.events.push_back(Event::Gap {
                        room: name.clone(),
                        author,
                        missing: (start, end),
                    }),
                }
            }
            self.deliver(delivered, now);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn request_repair(
        &mut self,
        room: &str,
        author: PeerId,
        start: u64,
        end: u64,
        attempt: u32,
        source: Option<ConnId>,
        now: Instant,
    ) {
        // First the neighbour that sent the message after the gap, then the others in
        // turn (the author first of all if it is a neighbour).
        let mut candidates: Vec<ConnId> = Vec::new();
        if let Some(s) = source.filter(|s| self.links.conns.get(s).is_some_and(|c| c.is_open())) {
            candidates.push(s);
        }
        if let Some(c) = self
            .links
            .peers
            .get(&author)
            .filter(|p| p.up)
            .and_then(|p| p.active)
        {
            if !candidates.contains(&c) {
                candidates.push(c);
            }
        }
        for p in self.members(room) {
            if let Some(c) = self.links.peers.get(&p).and_then(|p| p.active) {
                if !candidates.contains(&c)
                    && self
                        .links
                        .conns
                        .get(&c)
                        .is_some_and(|c| c.protocol == Protocol::Chat)
                {
                    candidates.push(c);
                }
            }
        }
        if candidates.is_empty() {
            return;
        }
        let conn = candidates[(attempt as usize - 1) % candidates.len()];
        let end = end.min(start + MAX_REQUEST_SPAN);
        let frame = Frame::new(Kind::Request(wire::Request {
            room: room.to_string(),
            author: author.to_bytes(),
            start,
            end,
        }));
        self.stats.repair_requests += 1;
        if let Some(peer) = self.links.conns.get(&conn).map(|c| c.peer) {
            self.tree.asked(peer, now);
        }
        self.send_frame(conn, &frame, now);
    }

    /// Periodic summaries.
    pub(super) fn sync_timeout(&mut self, now: Instant) {
        let interval = self.config.sync_interval;
        let mut due: Vec<PeerId> = Vec::new();
        for id in self.links.conns.due(now, &self.links.config) {
            let Some(c) = self.links.conns.get_mut(&id) else {
                continue;
            };
            if c.is_open() && c.protocol == Protocol::Chat && c.next_sync <= now {
                c.next_sync = now + interval;
                // A relayed connection past its budget waits for a direct one.
                if c.sync_budget > 0 {
                    due.push(c.peer);
                }
            }
        }
        for peer in due {
            if self.links.peers.get(&peer).is_none_or(|p| !p.up) {
                continue;
            }
            let rooms: Vec<String> = self.links.peers[&peer]
                .rooms
                .iter()
                .filter(|r| self.rooms.contains_key(*r))
                .cloned()
                .collect();
            for r in rooms {
                self.send_summary(peer, &r, now);
            }
        }
    }
}
