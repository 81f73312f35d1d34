//! The fetching side: verified, multi-source, resumable downloads.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::time::Instant;

use bao_tree::iter::{BaoChunk, ResponseIter};
use bytes::Bytes;
use libp2p_identity::PeerId;
use smallvec::SmallVec;

use super::config::BlobConfig;
use super::event::{BlobEvent, BlobOutput, BlobStats, DropReason, FailReason, LieKind, StartError};
use super::frame::{BlobFrame, ErrorCode};
use super::groups::GroupSet;
use super::hash::{
    chunk_ranges, group_count, leaf_cv, parent_cv, tree, BlobHash, GROUP_CHUNKS, GROUP_SIZE,
};
use super::store::{BlobStore, StoreError};

/// Names one download of a [`Downloader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferId(pub u64);

/// Downloads blobs from sources: assigns disjoint group ranges, verifies every group
/// before writing it, re-assigns failed ranges and drops lying or dead sources.
#[derive(Debug)]
pub struct Downloader {
    cfg: BlobConfig,
    transfers: BTreeMap<TransferId, Transfer>,
    requests: BTreeMap<(PeerId, u32), Request>,
    next_transfer: u64,
    next_request: u32,
    out: VecDeque<BlobOutput>,
    stats: BlobStats,
}

#[derive(Debug)]
struct Transfer {
    hash: BlobHash,
    size: u64,
    groups: u64,
    verified: GroupSet,
    in_flight: GroupSet,
    sources: BTreeMap<PeerId, Source>,
    /// When the last source disconnected: the download waits `source_wait` from then
    /// for a source to come back.
    orphaned_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Source {
    active: usize,
    lies: u32,
    timeouts: u32,
    backoff_until: Option<Instant>,
}

#[derive(Debug)]
struct Request {
    transfer: TransferId,
    groups: Range<u64>,
    leaves_left: u64,
    header: bool,
    /// Sequence number of the next node or group frame.
    next_seq: u32,
    items: ResponseIter,
    /// Hashes still to be matched, as in bao-tree's decoder.
    stack: SmallVec<[[u8; 32]; 12]>,
    deadline: Instant,
}

/// How a request ended early.
enum Abort {
    Lie(LieKind),
    /// A response frame is missing (lost, or skipped by the source).
    Gap,
    Timeout,
    Busy,
    DontHave,
}

impl Downloader {
    /// A downloader with these limits.
    pub fn new(cfg: BlobConfig) -> Self {
        Downloader {
            cfg,
            transfers: BTreeMap::new(),
            requests: BTreeMap::new(),
            next_transfer: 0,
            next_request: 0,
            out: VecDeque::new(),
            stats: BlobStats::default(),
        }
    }

    /// Counters (the downloader's fields of [`BlobStats`]).
    pub fn stats(&self) -> BlobStats {
        let mut s = self.stats.clone();
        s.transfers = self.transfers.len();
        s.requests_in_flight = self.requests.len();
        s.tracked_runs = self
            .transfers
            .values()
            .map(|t| t.verified.runs() + t.in_flight.runs())
            .sum();
        s
    }

    /// Starts downloading blob `hash` of `size` bytes from `sources` (at most
    /// `max_sources` are kept). Groups the store reports as verified are not fetched
    /// again.
    pub fn start(
        &mut self,
        hash: BlobHash,
        size: u64,
        sources: impl IntoIterator<Item = PeerId>,
        store: &mut impl BlobStore,
        now: Instant,
    ) -> Result<TransferId, StartError> {
        if size > self.cfg.max_blob_size {
            return Err(StartError::TooLarge(size));
        }
        if self.transfers.len() >= self.cfg.max_transfers {
            return Err(StartError::TooManyTransfers);
        }
        if self.transfers.values().any(|t| t.hash == hash) {
            return Err(StartError::AlreadyRunning);
        }
        let sources: BTreeMap<PeerId, Source> = sources
            .into_iter()
            .take(self.cfg.max_sources)
            .map(|p| (p, Source::default()))
            .collect();
        if sources.is_empty() {
            return Err(StartError::NoSources);
        }
        let mut verified = store.open_partial(&hash, size)?;
        let groups = group_count(size);
        verified.remove(groups..u64::MAX);
        let id = TransferId(self.next_transfer);
        self.next_transfer += 1;
        self.transfers.insert(
            id,
            Transfer {
                hash,
                size,
                groups,
                verified,
                in_flight: GroupSet::new(),
                sources,
                orphaned_at: None,
            },
        );
        if size == 0 {
            // Nothing to fetch: the empty blob's hash is checked right here.
            self.stats.groups_verified += 1;
            let t = self.transfers.get_mut(&id).expect("just inserted");
            t.verified.insert(0..1);
            if hash != BlobHash::of(&[]) {
                self.fail(id, FailReason::NoSources);
                return Ok(id);
            }
        }
        self.settle(id, store, now);
        Ok(id)
    }

    /// Adds a source to a running download (ignored past `max_sources`).
    pub fn add_source(
        &mut self,
        transfer: TransferId,
        peer: PeerId,
        store: &mut impl BlobStore,
        now: Instant,
    ) {
        let Some(t) = self.transfers.get_mut(&transfer) else {
            return;
        };
        if t.sources.len() < self.cfg.max_sources {
            t.sources.entry(peer).or_default();
            t.orphaned_at = None;
        }
        self.settle(transfer, store, now);
    }

    /// Stops a download (its requests are cancelled; the verified part stays in the
    /// store for a later resume). No event follows.
    pub fn cancel(&mut self, transfer: TransferId) {
        if self.transfers.remove(&transfer).is_none() {
            return;
        }
        let keys: Vec<(PeerId, u32)> = self
            .requests
            .iter()
            .filter(|(_, r)| r.transfer == transfer)
            .map(|(&k, _)| k)
            .collect();
        for (peer, id) in keys {
            self.requests.remove(&(peer, id));
            self.send(peer, BlobFrame::Cancel { id });
        }
    }

    /// Bytes verified so far and the size, for a running download.
    pub fn progress(&self, transfer: TransferId) -> Option<(u64, u64)> {
        self.transfers
            .get(&transfer)
            .map(|t| (verified_bytes(t), t.size))
    }

    /// A response frame from `peer` (requests and cancels are the provider's and are
    /// ignored here).
    pub fn handle_frame(
        &mut self,
        peer: PeerId,
        frame: BlobFrame,
        store: &mut impl BlobStore,
        now: Instant,
    ) {
        if matches!(frame, BlobFrame::Request { .. } | BlobFrame::Cancel { .. }) {
            return;
        }
        if let BlobFrame::Leaf { data, .. } = &frame {
            self.stats.bytes_received += data.len() as u64;
        }
        let key = (peer, frame.id());
        let Some(req) = self.requests.get_mut(&key) else {
            self.stats.unsolicited_frames += 1;
            return;
        };
        let tid = req.transfer;
        let t = self
            .transfers
            .get_mut(&tid)
            .expect("requests belong to transfers");
        let outcome = match frame {
            // A duplicated header, or a duplicated node or group: already handled.
            BlobFrame::Header { .. } if req.header => return,
            BlobFrame::Parent { seq, .. } | BlobFrame::Leaf { seq, .. } if seq < req.next_seq => {
                return
            }
            BlobFrame::Header { size, .. } => {
                req.header = true;
                if size == t.size {
                    Ok(None)
                } else {
                    Err(Abort::Lie(LieKind::WrongSize))
                }
            }
            // A frame is missing: the rest of the range is asked for again.
            BlobFrame::Parent { seq, .. } | BlobFrame::Leaf { seq, .. }
                if !req.header || seq > req.next_seq =>
            {
                Err(Abort::Gap)
            }
            BlobFrame::Parent { pair, .. } => {
                req.next_seq += 1;
                on_parent(req, t, &pair, store).map(|()| None)
            }
            BlobFrame::Leaf { data, .. } => {
                req.next_seq += 1;
                on_leaf(req, data)
            }
            BlobFrame::DontHave { .. } => Err(Abort::DontHave),
            BlobFrame::Error {
                code: ErrorCode::Busy,
                ..
            } => Err(Abort::Busy),
            BlobFrame::Error { .. } => Err(Abort::Timeout),
            BlobFrame::Request { .. } | BlobFrame::Cancel { .. } => return,
        };
        match outcome {
            Err(abort) => self.abort(key, abort, now),
            Ok(None) => req.deadline = now + self.cfg.request_timeout,
            Ok(Some((group, data))) => {
                req.deadline = now + self.cfg.request_timeout;
                req.leaves_left -= 1;
                let finished = req.leaves_left == 0;
                if let Err(e) = store.write_group(&t.hash, group, &data) {
                    self.fail(tid, FailReason::Store(e));
                    return;
                }
                self.stats.groups_verified += 1;
                t.verified.insert(group..group + 1);
                t.in_flight.remove(group..group + 1);
                if finished {
                    self.requests.remove(&key);
                }
                if let Some(s) = t.sources.get_mut(&peer) {
                    // Failures count only in a row: a source that delivers is forgiven.
                    s.timeouts = 0;
                    s.active -= usize::from(finished);
                }
                let sources_active = t.sources.values().filter(|s| s.active > 0).count();
                self.out.push_back(BlobOutput::Event(BlobEvent::Progress {
                    transfer: tid,
                    verified: verified_bytes(t),
                    size: t.size,
                    sources_active,
                }));
            }
        }
        self.settle(tid, store, now);
    }

    /// The peer's blob substream closed: its requests go to other sources and it is
    /// dropped from every download (add it again when it is back).
    pub fn handle_closed(&mut self, peer: PeerId, store: &mut impl BlobStore, now: Instant) {
        let keys: Vec<(PeerId, u32)> = self
            .requests
            .range((peer, 0)..=(peer, u32::MAX))
            .map(|(&k, _)| k)
            .collect();
        for key in keys {
            self.release(key);
        }
        let tids: Vec<TransferId> = self.transfers.keys().copied().collect();
        for tid in tids {
            let t = self.transfers.get_mut(&tid).expect("listed");
            if t.sources.remove(&peer).is_some() {
                if t.sources.is_empty() {
                    t.orphaned_at = Some(now);
                }
                self.event(BlobEvent::SourceDropped {
                    transfer: tid,
                    peer,
                    reason: DropReason::Disconnected,
                });
            }
            self.settle(tid, store, now);
        }
    }

    /// Timers: requests without progress are re-assigned, backed-off sources return.
    pub fn handle_timeout(&mut self, store: &mut impl BlobStore, now: Instant) {
        let late: Vec<(PeerId, u32)> = self
            .requests
            .iter()
            .filter(|(_, r)| now >= r.deadline)
            .map(|(&k, _)| k)
            .collect();
        for key in late {
            self.abort(key, Abort::Timeout, now);
        }
        let tids: Vec<TransferId> = self.transfers.keys().copied().collect();
        for tid in tids {
            self.settle(tid, store, now);
        }
    }

    /// The next output; [`BlobOutput::Wait`] when there is none.
    pub fn poll_output(&mut self) -> BlobOutput {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        let deadlines = self.requests.values().map(|r| r.deadline);
        let backoffs = self
            .transfers
            .values()
            .flat_map(|t| t.sources.values().filter_map(|s| s.backoff_until));
        let orphans = self
            .transfers
            .values()
            .filter_map(|t| t.orphaned_at.map(|at| at + self.cfg.source_wait));
        BlobOutput::Wait(deadlines.chain(backoffs).chain(orphans).min())
    }

    fn send(&mut self, peer: PeerId, frame: BlobFrame) {
        self.out.push_back(BlobOutput::Transmit {
            peer,
            data: frame.to_bytes(),
        });
    }

    fn event(&mut self, e: BlobEvent) {
        self.out.push_back(BlobOutput::Event(e));
    }

    /// Removes a request and gives its unverified groups back to the pool; returns its
    /// download and whether it verified any group.
    fn release(&mut self, key: (PeerId, u32)) -> Option<(TransferId, bool)> {
        let req = self.requests.remove(&key)?;
        let progressed = req.leaves_left < req.groups.end - req.groups.start;
        let t = self.transfers.get_mut(&req.transfer)?;
        t.in_flight.remove(req.groups.clone());
        if let Some(s) = t.sources.get_mut(&key.0) {
            s.active = s.active.saturating_sub(1);
        }
        Some((req.transfer, progressed))
    }

    fn abort(&mut self, key: (PeerId, u32), why: Abort, now: Instant) {
        let (peer, id) = key;
        let Some((tid, progressed)) = self.release(key) else {
            return;
        };
        if !matches!(why, Abort::DontHave | Abort::Busy) {
            self.send(peer, BlobFrame::Cancel { id });
        }
        let (cfg, t) = (&self.cfg, self.transfers.get_mut(&tid).expect("released"));
        let Some(s) = t.sources.get_mut(&peer) else {
            return;
        };
        if matches!(why, Abort::Gap) {
            self.stats.gaps += 1;
            if progressed {
                // The source delivered; ask again for the rest right away.
                return;
            }
        }
        s.backoff_until = Some(now + cfg.retry_backoff);
        let dropped = match why {
            Abort::Lie(kind) => {
                self.stats.lies_caught += 1;
                s.lies += 1;
                (s.lies >= cfg.liar_limit).then_some(DropReason::Lied(kind))
            }
            Abort::Timeout | Abort::Gap => {
                self.stats.timeouts += 1;
                s.timeouts += 1;
                (s.timeouts >= cfg.timeout_limit).then_some(DropReason::TimedOut)
            }
            Abort::Busy => None,
            Abort::DontHave => Some(DropReason::DontHave),
        };
        if let Some(reason) = dropped {
            t.sources.remove(&peer);
            // Its other requests for this download go back to the pool too.
            let others: Vec<(PeerId, u32)> = self
                .requests
                .iter()
                .filter(|(&(p, _), r)| p == peer && r.transfer == tid)
                .map(|(&k, _)| k)
                .collect();
            for k in others {
                self.release(k);
                self.send(peer, BlobFrame::Cancel { id: k.1 });
            }
            self.event(BlobEvent::SourceDropped {
                transfer: tid,
                peer,
                reason,
            });
        }
    }

    fn fail(&mut self, tid: TransferId, reason: FailReason) {
        let Some(hash) = self.transfers.get(&tid).map(|t| t.hash) else {
            return;
        };
        self.cancel(tid);
        self.event(BlobEvent::Failed {
            transfer: tid,
            hash,
            reason,
        });
    }

    /// Completes, fails or hands out work for one download.
    fn settle(&mut self, tid: TransferId, store: &mut impl BlobStore, now: Instant) {
        let Some(t) = self.transfers.get_mut(&tid) else {
            return;
        };
        if t.verified.len() >= t.groups {
            let hash = t.hash;
            self.transfers.remove(&tid);
            match store.finish(&hash) {
                Ok(()) => self.event(BlobEvent::Done {
                    transfer: tid,
                    hash,
                }),
                Err(e) => self.event(BlobEvent::Failed {
                    transfer: tid,
                    hash,
                    reason: FailReason::Store(e),
                }),
            }
            return;
        }
        if t.sources.is_empty() {
            let waiting = t
                .orphaned_at
                .is_some_and(|at| now < at + self.cfg.source_wait);
            if !waiting {
                self.fail(tid, FailReason::NoSources);
            }
            return;
        }
        for s in t.sources.values_mut() {
            if s.backoff_until.is_some_and(|b| now >= b) {
                s.backoff_until = None;
            }
        }
        let peers: Vec<PeerId> = t.sources.keys().copied().collect();
        for peer in peers {
            loop {
                let t = self.transfers.get_mut(&tid).expect("present");
                let s = t.sources.get_mut(&peer).expect("listed");
                if s.backoff_until.is_some() || s.active >= self.cfg.requests_per_source {
                    break;
                }
                let Some(groups) = next_work(t, self.cfg.request_groups) else {
                    return;
                };
                t.sources.get_mut(&peer).expect("listed").active += 1;
                t.in_flight.insert(groups.clone());
                let id = self.next_request;
                self.next_request = self.next_request.wrapping_add(1);
                let items = ResponseIter::new(tree(t.size), chunk_ranges(groups.clone(), t.groups));
                let mut stack = SmallVec::new();
                stack.push(t.hash.0);
                let hash = t.hash;
                self.requests.insert(
                    (peer, id),
                    Request {
                        transfer: tid,
                        leaves_left: groups.end - groups.start,
                        groups: groups.clone(),
                        header: false,
                        next_seq: 1,
                        items,
                        stack,
                        deadline: now + self.cfg.request_timeout,
                    },
                );
                self.send(
                    peer,
                    BlobFrame::Request {
                        id,
                        hash,
                        ranges: vec![groups],
                    },
                );
            }
        }
    }
}

/// The next groups to ask for: the last group first (it proves the size), then the
/// first run that is neither verified nor in flight.
fn next_work(t: &Transfer, max: u64) -> Option<Range<u64>> {
    let last = t.groups - 1;
    if !t.verified.contains(last) && !t.in_flight.contains(last) {
        return Some(last..t.groups);
    }
    t.verified.first_gap(&t.in_flight, 0, t.groups, max.max(1))
}

fn verified_bytes(t: &Transfer) -> u64 {
    let mut bytes = t.verified.len() * GROUP_SIZE;
    if t.verified.contains(t.groups - 1) {
        // The last group is short.
        bytes -= t.groups * GROUP_SIZE - t.size;
    }
    bytes
}

fn on_parent(
    req: &mut Request,
    t: &Transfer,
    pair: &[u8; 64],
    store: &mut impl BlobStore,
) -> Result<(), Abort> {
    let Some(BaoChunk::Parent {
        node,
        is_root,
        left,
        right,
        ..
    }) = req.items.next()
    else {
        return Err(Abort::Lie(LieKind::Unexpected));
    };
    let expected = req.stack.pop().ok_or(Abort::Lie(LieKind::Unexpected))?;
    let (l, r): ([u8; 32], [u8; 32]) = (
        pair[..32].try_into().expect("32"),
        pair[32..].try_into().expect("32"),
    );
    if parent_cv(&l, &r, is_root) != expected {
        return Err(Abort::Lie(LieKind::BadHash));
    }
    if right {
        req.stack.push(r);
    }
    if left {
        req.stack.push(l);
    }
    if let Some(slot) = tree(t.size).pre_order_offset(node) {
        // A node the store cannot keep only costs the ability to serve later.
        let _: Result<(), StoreError> = store.write_parent(&t.hash, slot, pair);
    }
    Ok(())
}

fn on_leaf(req: &mut Request, data: Bytes) -> Result<Option<(u64, Bytes)>, Abort> {
    let Some(BaoChunk::Leaf {
        start_chunk,
        size,
        is_root,
        ..
    }) = req.items.next()
    else {
        return Err(Abort::Lie(LieKind::Unexpected));
    };
    if data.len() != size {
        return Err(Abort::Lie(LieKind::WrongLength));
    }
    let expected = req.stack.pop().ok_or(Abort::Lie(LieKind::Unexpected))?;
    if leaf_cv(start_chunk.0, &data, is_root) != expected {
        return Err(Abort::Lie(LieKind::BadHash));
    }
    Ok(Some((start_chunk.0 / GROUP_CHUNKS, data)))
}
