//! How the simulated network carries a node's outputs: link timing, loss and
//! reordering of room-message frames, dials.

use std::time::{Duration, Instant};

use bytes::Bytes;
use multiaddr::Multiaddr;
use rand::Rng;

use super::{Delivery, Endpoint, NodeIdx, Remote, Sim, LATENCY_BUCKETS};
use crate::codec::peek_varint;
use crate::event::{Action, ConnId, ConnInfo, DialId, Event, Output, Protocol, Role};

/// First byte of a room-message frame's payload (PROTOCOL.md section 3: field 5,
/// wire type 2).
const MESSAGE_KEY: u8 = 5 << 3 | 2;

impl Sim {
    /// When `len` bytes sent now on `from` have left the sender (bandwidth) and when
    /// they arrive.
    pub(super) fn link_time(&mut self, from: (NodeIdx, ConnId), len: usize) -> (Instant, Instant) {
        let jitter = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.jitter.mul_f64(self.rng.random::<f64>())
        };
        let bandwidth = self.bandwidth;
        let now = self.now;
        let end = self.ends.get_mut(&from).expect("endpoint exists");
        let sent = match bandwidth {
            Some(bw) => {
                let t = end.busy_until.max(now) + Duration::from_secs_f64(len as f64 / bw as f64);
                end.busy_until = t;
                t
            }
            None => now,
        };
        let at = (sent + self.latency + jitter).max(end.fifo);
        end.fifo = at;
        (sent, at)
    }

    /// Moves node `i`'s outputs into the network until it has none left; returns its
    /// timeout as of then (`None`: no timer, or the node is crashed).
    pub(super) fn flush_outputs(&mut self, i: NodeIdx) -> Option<Instant> {
        let (persist, keep, keep_events) = (self.persist, self.keep_messages, self.keep_events);
        let wall_ms = self.wall_ms();
        loop {
            // Scratch lists kept in the simulator (no allocation per flush).
            let mut txs = std::mem::take(&mut self.tx_scratch);
            let mut acts = std::mem::take(&mut self.act_scratch);
            let sn = &mut self.nodes[i];
            let Some(node) = sn.node.as_mut() else {
                return None; // crashed: no timer
            };
            let wait = loop {
                match node.poll_output() {
                    Output::Transmit(t) => txs.push(t),
                    Output::Action(a) => acts.push(a),
                    Output::Event(e) => {
                        if persist {
                            sn.store.record(&e);
                        }
                        if let Event::Message { msg, .. } = &e {
                            if msg.author() != node.peer_id() {
                                let ms = wall_ms.saturating_sub(msg.sent_at_ms());
                                let h = &mut self.latency_ms;
                                let b = (ms as usize).min(LATENCY_BUCKETS - 1);
                                if h.len() <= b {
                                    h.resize(b + 1, 0);
                                }
                                h[b] += 1;
                            }
                        }
                        let wanted = match e {
                            Event::Message { .. } => keep,
                            // What the checks read (`check_delivery`, `check_complete`).
                            Event::Joined { .. } | Event::Left { .. } | Event::Gap { .. } => true,
                            _ => keep_events,
                        };
                        if wanted {
                            sn.events.push(e);
                        }
                    }
                    // The simulator has no app task to run first.
                    Output::Yield => {}
                    Output::Wait(t) => break t,
                }
            };
            if txs.is_empty() && acts.is_empty() {
                // Nothing reached the node since it computed `wait`.
                (self.tx_scratch, self.act_scratch) = (txs, acts);
                return wait;
            }
            for t in txs.drain(..) {
                let Some(end) = self.ends.get(&(i, t.conn)) else {
                    continue;
                };
                match end.remote {
                    Remote::Raw(h) => {
                        if let Some(r) = self.raw.get_mut(&h) {
                            r.2.extend_from_slice(&t.data);
                            if r.4 {
                                self.ack(i, t.conn, t.data.len());
                            }
                        }
                    }
                    Remote::Node(rn, rc) => {
                        let len = t.data.len();
                        if self.is_blocked(i, rn) {
                            // Like TCP across a partition: nothing arrives, nothing is
                            // lost; the bytes go through once the partition heals
                            // (unless an idle timeout closes the connection first).
                            self.ack(i, t.conn, len);
                            self.frozen.push((i, rn, rc, t.data));
                            continue;
                        }
                        let (sent, at) = self.link_time((i, t.conn), len);
                        if self.bandwidth.is_some() {
                            let d = Delivery::Sent {
                                to: i,
                                conn: t.conn,
                                n: len,
                            };
                            self.schedule(sent, d);
                        } else {
                            self.ack(i, t.conn, len);
                        }
                        let mut data = if self.loss + self.duplicate + self.reorder > 0.0 {
                            self.mangle(t.data)
                        } else {
                            t.data
                        };
                        while !data.is_empty() {
                            let n = if self.max_chunk == 0 {
                                data.len()
                            } else {
                                self.rng.random_range(1..=self.max_chunk).min(data.len())
                            };
                            let chunk = data.split_to(n);
                            self.schedule(
                                at,
                                Delivery::Data {
                                    to: rn,
                                    conn: rc,
                                    data: chunk,
                                },
                            );
                        }
                    }
                }
            }
            for a in acts.drain(..) {
                match a {
                    Action::Dial { dial, addr, .. } => self.dial(i, dial, addr),
                    Action::Close { conn, reason } => {
                        self.nodes[i].closes.push((conn, reason));
                        if let Some(end) = self.ends.remove(&(i, conn)) {
                            match end.remote {
                                Remote::Raw(h) => {
                                    if let Some(r) = self.raw.get_mut(&h) {
                                        r.3 = true;
                                    }
                                }
                                Remote::Node(rn, rc) => {
                                    let at = end.fifo.max(self.now + self.latency);
                                    self.schedule(at, Delivery::Closed { to: rn, conn: rc });
                                }
                            }
                        }
                    }
                }
            }
            (self.tx_scratch, self.act_scratch) = (txs, acts);
        }
    }

    /// Applies loss, duplication and reordering to the room-message frames of a
    /// transmit (other frames pass unchanged and in order). Frames are found by their
    /// length prefixes and never copied unless something happened to one of them: most
    /// transmits come back as they are.
    pub(super) fn mangle(&mut self, data: Bytes) -> Bytes {
        // (start, end, is a room message) of each frame to send, prefix included.
        let mut frames = std::mem::take(&mut self.mangle_scratch);
        frames.clear();
        let mut changed = false;
        let mut at = 0;
        while let Ok(Some((len, prefix))) = peek_varint(&data[at..]) {
            let Some(end) = (at + prefix).checked_add(len as usize) else {
                break;
            };
            if end > data.len() {
                break;
            }
            // Nodes encode a frame as its one kind field: a room message starts with
            // the key of field 5, length-delimited (no decoding on this hot path).
            let is_msg = data.get(at + prefix) == Some(&MESSAGE_KEY) && len > 0;
            let f = (at, end);
            at = end;
            if is_msg && self.rng.random_bool(self.loss.clamp(0.0, 1.0)) {
                changed = true;
                continue;
            }
            if is_msg && self.rng.random_bool(self.duplicate.clamp(0.0, 1.0)) {
                frames.push((f.0, f.1, true));
                changed = true;
            }
            let swap = is_msg
                && frames.last().is_some_and(|&(_, _, m)| m)
                && self.rng.random_bool(self.reorder.clamp(0.0, 1.0));
            if swap {
                let prev = frames.pop().expect("checked");
                frames.push((f.0, f.1, true));
                frames.push(prev);
                changed = true;
                continue;
            }
            frames.push((f.0, f.1, is_msg));
        }
        // A torn frame at the end (nodes never send one) is dropped, as before.
        let out = if !changed && at == data.len() {
            data
        } else {
            let mut out = bytes::BytesMut::with_capacity(data.len() * 2);
            for &(a, b, _) in &frames {
                out.extend_from_slice(&data[a..b]);
            }
            out.freeze()
        };
        self.mangle_scratch = frames;
        out
    }

    pub(super) fn ack(&mut self, i: NodeIdx, conn: ConnId, n: usize) {
        if let Some(node) = self.nodes[i].node.as_mut() {
            node.handle_sent(conn, n);
        }
    }

    pub(super) fn dial(&mut self, from: NodeIdx, dial: DialId, addr: Multiaddr) {
        let (bare, want) = crate::peers::split_p2p(&addr);
        let target = self
            .nodes
            .iter()
            .position(|n| n.addr == bare && n.node.is_some());
        let at = self.now + self.latency;
        let reachable = target.filter(|&t| !self.is_blocked(from, t) && t != from);
        let error = match reachable {
            None => Some("connection refused"),
            Some(to) if want.is_some_and(|w| w != self.peer_id(to)) => Some("peer id mismatch"),
            Some(_) => None,
        };
        let (Some(to), None) = (reachable, error) else {
            let error = error.unwrap_or_default().to_string();
            self.schedule(
                at,
                Delivery::DialFailed {
                    to: from,
                    dial,
                    error,
                },
            );
            return;
        };
        let (ca, cb) = (ConnId(self.next_conn), ConnId(self.next_conn + 1));
        self.next_conn += 2;
        self.ends.insert(
            (from, ca),
            Endpoint {
                remote: Remote::Node(to, cb),
                fifo: at,
                busy_until: at,
            },
        );
        self.ends.insert(
            (to, cb),
            Endpoint {
                remote: Remote::Node(from, ca),
                fifo: at,
                busy_until: at,
            },
        );
        let info_a = ConnInfo {
            peer: self.peer_id(to),
            role: Role::Dialer,
            remote_addr: self.nodes[to].addr.clone(),
            protocol: Protocol::Chat,
            dial: Some(dial),
            link: self.link,
        };
        let info_b = ConnInfo {
            peer: self.peer_id(from),
            role: Role::Listener,
            remote_addr: format!("/ip4/127.0.0.1/tcp/{}", 40_000 + ca.0 % 20_000)
                .parse()
                .unwrap(),
            protocol: Protocol::Chat,
            dial: None,
            link: self.link,
        };
        self.schedule(
            at,
            Delivery::Connected {
                to: from,
                conn: ca,
                info: Box::new(info_a),
            },
        );
        self.schedule(
            at,
            Delivery::Connected {
                to,
                conn: cb,
                info: Box::new(info_b),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_frame;

    /// A transmit of three frames: other, room message, other.
    fn transmit() -> Bytes {
        let mut out = bytes::BytesMut::new();
        encode_frame(&mut out, &[1 << 3 | 2, 1, 7]);
        encode_frame(&mut out, &[MESSAGE_KEY, 2, 8, 9]);
        encode_frame(&mut out, &[2 << 3 | 2, 0]);
        out.freeze()
    }

    #[test]
    fn mangle_passes_an_untouched_transmit_without_copying_and_drops_only_messages() {
        let mut sim = Sim::new(1);
        sim.duplicate = 1e-9;
        let data = transmit();
        let same = sim.mangle(data.clone());
        assert_eq!(same, data);
        assert_eq!(
            same.as_ptr(),
            data.as_ptr(),
            "copied although nothing happened"
        );

        sim.loss = 1.0;
        let mut want = bytes::BytesMut::new();
        encode_frame(&mut want, &[1 << 3 | 2, 1, 7]);
        encode_frame(&mut want, &[2 << 3 | 2, 0]);
        assert_eq!(sim.mangle(data.clone()), want);

        sim.loss = 0.0;
        sim.duplicate = 1.0;
        let mut want = bytes::BytesMut::new();
        encode_frame(&mut want, &[1 << 3 | 2, 1, 7]);
        encode_frame(&mut want, &[MESSAGE_KEY, 2, 8, 9]);
        encode_frame(&mut want, &[MESSAGE_KEY, 2, 8, 9]);
        encode_frame(&mut want, &[2 << 3 | 2, 0]);
        assert_eq!(sim.mangle(data), want);
    }
}
