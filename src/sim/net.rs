//! How the simulated network carries a node's outputs: link timing, loss and
//! reordering of room-message frames, dials.

use std::time::{Duration, Instant};

use bytes::Bytes;
use multiaddr::Multiaddr;
use rand::Rng;

use super::{Delivery, Endpoint, NodeIdx, Remote, Sim, LATENCY_BUCKETS};
use crate::codec::FrameDecoder;
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

    pub(super) fn flush_outputs(&mut self, i: NodeIdx) {
        let (persist, keep) = (self.persist, self.keep_messages);
        let wall_ms = self.wall_ms();
        loop {
            let sn = &mut self.nodes[i];
            let Some(node) = sn.node.as_mut() else {
                return;
            };
            let (mut txs, mut acts) = (Vec::new(), Vec::new());
            loop {
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
                        if keep || !matches!(e, Event::Message { .. }) {
                            sn.events.push(e);
                        }
                    }
                    Output::Wait(_) => break,
                }
            }
            if txs.is_empty() && acts.is_empty() {
                return;
            }
            for t in txs {
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
            for a in acts {
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
        }
    }

    /// Applies loss, duplication and reordering to the room-message frames of a
    /// transmit (other frames pass unchanged and in order).
    pub(super) fn mangle(&mut self, data: Bytes) -> Bytes {
        let mut d = FrameDecoder::new(usize::MAX >> 1);
        d.extend(&data);
        let mut frames: Vec<(Bytes, bool)> = Vec::new();
        while let Ok(Some(f)) = d.decode() {
            // Nodes encode a frame as its one kind field: a room message starts with
            // the key of field 5, length-delimited (no decoding on this hot path).
            let is_msg = f.first() == Some(&MESSAGE_KEY);
            if is_msg && self.rng.random_bool(self.loss.clamp(0.0, 1.0)) {
                continue;
            }
            if is_msg && self.rng.random_bool(self.duplicate.clamp(0.0, 1.0)) {
                frames.push((f.clone(), true));
            }
            let swap = is_msg
                && frames.last().is_some_and(|(_, m)| *m)
                && self.rng.random_bool(self.reorder.clamp(0.0, 1.0));
            if swap {
                let prev = frames.pop().expect("checked");
                frames.push((f, true));
                frames.push(prev);
                continue;
            }
            frames.push((f, is_msg));
        }
        let mut out = bytes::BytesMut::new();
        for (f, _) in frames {
            crate::codec::encode_frame(&mut out, &f);
        }
        out.freeze()
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
