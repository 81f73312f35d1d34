//! The serving side: answers requests from a [`BlobStore`].

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bao_tree::iter::{BaoChunk, ResponseIter};
use bao_tree::ChunkRanges;
use bytes::Bytes;
use libp2p_identity::PeerId;

use super::config::BlobConfig;
use super::event::{BlobOutput, BlobStats, CloseReason};
use super::frame::{BlobFrame, ErrorCode, GroupRange};
use super::hash::{chunk_ranges, group_count, tree, BlobHash};
use super::store::BlobStore;
use crate::rate::TokenBucket;

/// Serves blobs to peers: one response stream per request, interleaved round-robin,
/// each peer limited in concurrent requests, bytes per second and unsent bytes.
#[derive(Debug)]
pub struct Provider {
    cfg: BlobConfig,
    peers: BTreeMap<PeerId, ServePeer>,
    out: VecDeque<BlobOutput>,
    stats: BlobStats,
}

#[derive(Debug)]
struct ServePeer {
    requests: BTreeMap<u32, Serving>,
    /// Round-robin order of the request ids.
    order: VecDeque<u32>,
    /// Bytes handed out and not yet reported sent.
    unsent: usize,
    /// Since when the peer has had bytes unsent without any being reported sent.
    waiting_since: Option<Instant>,
    /// Byte budget: may go negative by one group; serving resumes when positive.
    tokens: f64,
    refilled: Instant,
    requests_bucket: TokenBucket,
    last_request: Instant,
}

#[derive(Debug)]
struct Serving {
    hash: BlobHash,
    /// Sequence number of the last frame sent (the header is 0).
    seq: u32,
    size: u64,
    header_sent: bool,
    items: ResponseIter,
}

impl Provider {
    /// A provider with these limits.
    pub fn new(cfg: BlobConfig) -> Self {
        Provider {
            cfg,
            peers: BTreeMap::new(),
            out: VecDeque::new(),
            stats: BlobStats::default(),
        }
    }

    /// Counters (the provider's fields of [`BlobStats`]).
    pub fn stats(&self) -> BlobStats {
        let mut s = self.stats.clone();
        s.serving_peers = self.peers.len();
        s.active_requests = self.peers.values().map(|p| p.requests.len()).sum();
        s
    }

    /// A request or cancel from `peer`. Other frames are ignored (they are the
    /// downloader's).
    pub fn handle_frame(
        &mut self,
        peer: PeerId,
        frame: BlobFrame,
        store: &mut impl BlobStore,
        now: Instant,
    ) {
        match frame {
            BlobFrame::Request { id, hash, ranges } => {
                self.request(peer, id, hash, ranges, store, now)
            }
            BlobFrame::Cancel { id } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.requests.remove(&id);
                    p.order.retain(|&r| r != id);
                }
            }
            _ => {}
        }
    }

    fn request(
        &mut self,
        peer: PeerId,
        id: u32,
        hash: BlobHash,
        ranges: Vec<GroupRange>,
        store: &mut impl BlobStore,
        now: Instant,
    ) {
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.cfg.max_serving_peers {
            self.stats.busy_refused += 1;
            self.send(
                peer,
                BlobFrame::Error {
                    id,
                    code: ErrorCode::Busy,
                },
            );
            return;
        }
        let cfg = &self.cfg;
        let p = self.peers.entry(peer).or_insert_with(|| ServePeer {
            requests: BTreeMap::new(),
            order: VecDeque::new(),
            unsent: 0,
            waiting_since: None,
            tokens: cfg.serve_burst as f64,
            refilled: now,
            requests_bucket: TokenBucket::new(cfg.request_rate, cfg.request_burst, now),
            last_request: now,
        });
        p.last_request = now;
        // A request this peer may have served goes through: what it costs is bounded by
        // `serve_concurrency` and `serve_rate`, and a fast downloader sends one per
        // `request_groups` (a bucket of requests would throttle it, and a dropped request
        // costs it a whole `request_timeout`). Everything else (repeated ids, unknown
        // hashes, over the concurrency, out of range) takes from the request bucket, and
        // over its rate is dropped silently, so a flood costs us neither memory nor
        // bandwidth. (A peer that does not read is cut off by the stall timer.)
        let size = store.complete_size(&hash);
        let groups = size.map(group_count);
        let inside = groups.is_some_and(|g| ranges.last().is_some_and(|r| r.end <= g));
        let busy = p.requests.len() >= self.cfg.serve_concurrency;
        let serve = inside && !busy && !p.requests.contains_key(&id);
        if !serve && !p.requests_bucket.take(1.0, now) {
            self.stats.requests_dropped += 1;
            self.forget_idle(peer, now);
            return;
        }
        let reply = match (size, groups) {
            _ if p.requests.contains_key(&id) => {
                // A repeated request id (a duplicated frame): the response is under way.
                self.stats.bad_requests += 1;
                return;
            }
            (None, _) | (_, None) => {
                self.stats.unknown_refused += 1;
                Some(BlobFrame::DontHave { id })
            }
            _ if busy => {
                self.stats.busy_refused += 1;
                Some(BlobFrame::Error {
                    id,
                    code: ErrorCode::Busy,
                })
            }
            _ if !inside => {
                self.stats.bad_requests += 1;
                Some(BlobFrame::Error {
                    id,
                    code: ErrorCode::BadRequest,
                })
            }
            (Some(size), Some(groups)) => {
                let mut chunks = ChunkRanges::empty();
                for r in ranges {
                    chunks |= chunk_ranges(r, groups);
                }
                let items = ResponseIter::new(tree(size), chunks);
                p.requests.insert(
                    id,
                    Serving {
                        hash,
                        size,
                        header_sent: false,
                        seq: 0,
                        items,
                    },
                );
                p.order.push_back(id);
                self.stats.requests_served += 1;
                None
            }
        };
        if let Some(frame) = reply {
            self.send(peer, frame);
        }
        self.forget_idle(peer, now);
        self.pump(peer, store, now);
    }

    /// The runtime wrote `n` bytes of this peer's transmits.
    pub fn handle_sent(
        &mut self,
        peer: PeerId,
        n: usize,
        store: &mut impl BlobStore,
        now: Instant,
    ) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.unsent = p.unsent.saturating_sub(n);
            p.waiting_since = (p.unsent > 0).then_some(now);
        }
        self.pump(peer, store, now);
        self.forget_idle(peer, now);
    }

    /// The peer's blob substream closed: drop its requests.
    pub fn handle_closed(&mut self, peer: PeerId) {
        self.peers.remove(&peer);
    }

    /// Timers: rate-limited peers resume, stalled peers are cut off.
    pub fn handle_timeout(&mut self, store: &mut impl BlobStore, now: Instant) {
        let stall = self.cfg.stall_timeout;
        let stalled: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.waiting_since.is_some_and(|t| now >= t + stall))
            .map(|(&id, _)| id)
            .collect();
        for peer in stalled {
            self.peers.remove(&peer);
            self.stats.stalled_peers += 1;
            self.out.push_back(BlobOutput::Close {
                peer,
                reason: CloseReason::Stalled,
            });
        }
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in peers {
            self.pump(peer, store, now);
            self.forget_idle(peer, now);
        }
    }

    /// The next output; [`BlobOutput::Wait`] when there is none.
    pub fn poll_output(&mut self) -> BlobOutput {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        BlobOutput::Wait(self.next_deadline())
    }

    fn next_deadline(&self) -> Option<Instant> {
        let rate = self.cfg.serve_rate.max(1) as f64;
        self.peers
            .values()
            .flat_map(|p| {
                let stall = p.waiting_since.map(|t| t + self.cfg.stall_timeout);
                let refill =
                    (p.tokens <= 0.0 && !p.requests.is_empty() && p.unsent < self.cfg.serve_window)
                        .then(|| p.refilled + Duration::from_secs_f64((1.0 - p.tokens) / rate));
                let idle = (p.requests.is_empty() && p.unsent == 0)
                    .then(|| p.last_request + self.idle_after());
                stall.into_iter().chain(refill).chain(idle)
            })
            .min()
    }

    /// Drops the state of a peer with nothing in flight whose request bucket has had
    /// time to refill, so the map holds only peers being served or recently active
    /// (a flood of unknown hashes stays rate limited).
    fn forget_idle(&mut self, peer: PeerId, now: Instant) {
        let refill = self.idle_after();
        if self.peers.get(&peer).is_some_and(|p| {
            p.requests.is_empty() && p.unsent == 0 && now >= p.last_request + refill
        }) {
            self.peers.remove(&peer);
        }
    }

    fn idle_after(&self) -> Duration {
        Duration::from_secs_f64(self.cfg.request_burst / self.cfg.request_rate.max(1e-3))
    }

    fn send(&mut self, peer: PeerId, frame: BlobFrame) {
        let data = frame.to_bytes();
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.unsent == 0 {
                p.waiting_since = None;
            }
            p.unsent += data.len();
        }
        self.out.push_back(BlobOutput::Transmit { peer, data });
    }

    /// Produces frames for `peer` while its window and byte budget allow.
    fn pump(&mut self, peer: PeerId, store: &mut impl BlobStore, now: Instant) {
        let (rate, burst, window) = (
            self.cfg.serve_rate as f64,
            self.cfg.serve_burst as f64,
            self.cfg.serve_window,
        );
        loop {
            let Some(p) = self.peers.get_mut(&peer) else {
                return;
            };
            if p.unsent >= window {
                return;
            }
            if now > p.refilled {
                p.tokens = (p.tokens + (now - p.refilled).as_secs_f64() * rate).min(burst);
                p.refilled = now;
            }
            let Some(&id) = p.order.front() else { return };
            let s = p.requests.get_mut(&id).expect("order and requests agree");
            let frame = if !s.header_sent {
                s.header_sent = true;
                Ok(Some(BlobFrame::Header { id, size: s.size }))
            } else {
                if p.tokens <= 0.0 {
                    return;
                }
                next_item(id, s, store).map_err(|_| ())
            };
            // Round robin: the next frame comes from the next request.
            p.order.rotate_left(1);
            match frame {
                Ok(Some(frame)) => {
                    if let BlobFrame::Leaf { data, .. } = &frame {
                        p.tokens -= data.len() as f64;
                        self.stats.bytes_served += data.len() as u64;
                    }
                    let was_idle = p.unsent == 0;
                    let data = frame.to_bytes();
                    p.unsent += data.len();
                    if was_idle {
                        p.waiting_since = Some(now);
                    }
                    self.out.push_back(BlobOutput::Transmit { peer, data });
                }
                Ok(None) => {
                    p.requests.remove(&id);
                    p.order.retain(|&r| r != id);
                }
                Err(()) => {
                    p.requests.remove(&id);
                    p.order.retain(|&r| r != id);
                    self.send(
                        peer,
                        BlobFrame::Error {
                            id,
                            code: ErrorCode::Internal,
                        },
                    );
                }
            }
        }
    }
}

/// The next frame of a response, `None` when it is complete.
fn next_item(
    id: u32,
    s: &mut Serving,
    store: &mut impl BlobStore,
) -> Result<Option<BlobFrame>, super::store::StoreError> {
    let Some(item) = s.items.next() else {
        return Ok(None);
    };
    s.seq += 1;
    let seq = s.seq;
    match item {
        BaoChunk::Parent { node, .. } => {
            let slot = tree(s.size)
                .pre_order_offset(node)
                .ok_or(super::store::StoreError::NotFound)?;
            let pair = store.read_parent(&s.hash, slot)?;
            Ok(Some(BlobFrame::Parent { id, seq, pair }))
        }
        BaoChunk::Leaf {
            start_chunk, size, ..
        } => {
            let mut buf = vec![0u8; size];
            store.read_data(&s.hash, start_chunk.to_bytes(), &mut buf)?;
            Ok(Some(BlobFrame::Leaf {
                id,
                seq,
                data: Bytes::from(buf),
            }))
        }
    }
}
