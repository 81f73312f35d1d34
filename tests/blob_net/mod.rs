//! A deterministic network of blob endpoints for tests: virtual time, a seeded RNG,
//! per-link latency and bandwidth, loss, duplication, partitions, crashes and lying
//! sources. Each link is an ordered byte pipe, like a yamux substream.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use echo_proto::blob::{
    BlobConfig, BlobDecoder, BlobEndpoint, BlobEvent, BlobFrame, BlobOutput, CloseReason, MemStore,
};
use echo_proto::{Identity, PeerId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How a host corrupts what it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lie {
    /// Flips one bit of every chunk group.
    FlipBit,
    /// Sends every chunk group one byte short.
    WrongLength,
    /// Sends wrong tree-node hashes.
    WrongHash,
    /// Announces a size one byte larger.
    WrongSize,
}

pub struct Host {
    pub peer: PeerId,
    pub ep: BlobEndpoint,
    pub store: MemStore,
    pub up: bool,
    pub lie: Option<Lie>,
    /// A host that never reads: its peers' bytes are never acknowledged.
    pub reads: bool,
    pub events: Vec<BlobEvent>,
    pub closes: Vec<(PeerId, CloseReason)>,
    pub timer: Option<Instant>,
    cfg: BlobConfig,
}

enum Ev {
    Data { from: usize, to: usize, data: Bytes },
    Sent { host: usize, to: PeerId, n: usize },
    Closed { host: usize, peer: PeerId },
}

pub struct Net {
    pub now: Instant,
    pub hosts: Vec<Host>,
    queue: BTreeMap<(Instant, u64), Ev>,
    seq: u64,
    rng: ChaCha8Rng,
    /// One-way latency of every link.
    pub latency: Duration,
    /// Bytes per second of every link direction.
    pub bandwidth: u64,
    /// Probability that a blob frame is lost.
    pub loss: f64,
    /// Probability that a blob frame is delivered twice.
    pub duplicate: f64,
    blocked: BTreeSet<(usize, usize)>,
    frozen: Vec<(usize, usize, Bytes)>,
    link_free: BTreeMap<(usize, usize), Instant>,
    /// Leaf (chunk-group) bytes delivered on each link (from, to).
    pub leaf_bytes: BTreeMap<(usize, usize), u64>,
    /// Frames handed to hosts.
    pub deliveries: u64,
    /// Bytes put on each link (from, to), delivered or not.
    pub sent_bytes: BTreeMap<(usize, usize), u64>,
}

impl Net {
    pub fn new(seed: u64) -> Self {
        Net {
            now: Instant::now(),
            hosts: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            latency: Duration::from_millis(5),
            bandwidth: 4 << 20,
            loss: 0.0,
            duplicate: 0.0,
            blocked: BTreeSet::new(),
            frozen: Vec::new(),
            link_free: BTreeMap::new(),
            leaf_bytes: BTreeMap::new(),
            deliveries: 0,
            sent_bytes: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, cfg: BlobConfig) -> usize {
        let i = self.hosts.len();
        let peer = Identity::from_secret_bytes([i as u8 + 1; 32]).peer_id();
        self.hosts.push(Host {
            peer,
            ep: BlobEndpoint::new(cfg.clone()),
            store: MemStore::new(),
            up: true,
            lie: None,
            reads: true,
            events: Vec::new(),
            closes: Vec::new(),
            timer: None,
            cfg,
        });
        i
    }

    pub fn peer(&self, i: usize) -> PeerId {
        self.hosts[i].peer
    }

    fn index(&self, peer: &PeerId) -> Option<usize> {
        self.hosts.iter().position(|h| &h.peer == peer)
    }

    fn at(&mut self, t: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.insert((t, self.seq), ev);
    }

    /// Host `i` crashes: its state is gone, its store (the disk) survives. With
    /// `notify`, its peers see the substream close; otherwise they only stop hearing.
    pub fn crash(&mut self, i: usize, notify: bool) {
        self.hosts[i].up = false;
        let peer = self.hosts[i].peer;
        if notify {
            let at = self.now + self.latency;
            for j in 0..self.hosts.len() {
                if j != i {
                    self.at(at, Ev::Closed { host: j, peer });
                }
            }
        }
    }

    /// The blob substream between `a` and `b` closes (both ends see it) while both hosts
    /// stay up, as when a duplicate connection is dropped.
    pub fn close_link(&mut self, a: usize, b: usize) {
        let at = self.now;
        let (pa, pb) = (self.peer(a), self.peer(b));
        self.at(at, Ev::Closed { host: a, peer: pb });
        self.at(at, Ev::Closed { host: b, peer: pa });
    }

    /// Host `i` adds host `src` as a source of its download `transfer`.
    pub fn add_source(&mut self, i: usize, transfer: echo_proto::blob::TransferId, src: usize) {
        let (peer, now) = (self.peer(src), self.now);
        let h = &mut self.hosts[i];
        h.ep.add_source(transfer, peer, &mut h.store, now);
    }

    /// Host `i` starts again with a fresh endpoint over its surviving store.
    pub fn restart(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        h.ep = BlobEndpoint::new(h.cfg.clone());
        h.up = true;
        h.timer = None;
    }

    /// Nothing passes between `a` and `b` (bytes wait, like TCP) until [`Net::heal`].
    pub fn partition(&mut self, a: usize, b: usize) {
        self.blocked.insert((a.min(b), a.max(b)));
    }

    pub fn heal(&mut self, a: usize, b: usize) {
        self.blocked.remove(&(a.min(b), a.max(b)));
        let now = self.now;
        let frozen = std::mem::take(&mut self.frozen);
        for (from, to, data) in frozen {
            if (from.min(to), from.max(to)) == (a.min(b), a.max(b)) {
                self.at(now + self.latency, Ev::Data { from, to, data });
            } else {
                self.frozen.push((from, to, data));
            }
        }
    }

    /// Raw bytes from host `from` to host `to` (as a hostile peer would write them).
    pub fn inject(&mut self, from: usize, to: usize, data: Bytes) {
        self.at(self.now, Ev::Data { from, to, data });
    }

    /// Starts a download at host `i` of blob `hash` from the hosts `sources`.
    pub fn download(
        &mut self,
        i: usize,
        hash: echo_proto::blob::BlobHash,
        size: u64,
        sources: &[usize],
    ) -> echo_proto::blob::TransferId {
        let peers: Vec<PeerId> = sources.iter().map(|&s| self.peer(s)).collect();
        let now = self.now;
        let h = &mut self.hosts[i];
        h.ep.download(hash, size, peers, &mut h.store, now)
            .expect("download starts")
    }

    fn tamper(lie: Lie, data: Bytes) -> Bytes {
        let mut d = BlobDecoder::new();
        d.extend(&data);
        let mut out = BytesMut::new();
        while let Ok(Some(mut f)) = d.decode() {
            match (&mut f, lie) {
                (BlobFrame::Leaf { data, .. }, Lie::FlipBit) => {
                    let mut v = data.to_vec();
                    let mid = v.len() / 2;
                    v[mid] ^= 0x10;
                    *data = v.into();
                }
                (BlobFrame::Leaf { data, .. }, Lie::WrongLength) if data.len() > 1 => {
                    *data = data.slice(1..);
                }
                (BlobFrame::Parent { pair, .. }, Lie::WrongHash) => pair[0] ^= 1,
                (BlobFrame::Header { size, .. }, Lie::WrongSize) => *size += 1,
                _ => {}
            }
            f.encode(&mut out);
        }
        out.freeze()
    }

    /// Drains every host's outputs into the network.
    fn drain(&mut self) {
        for i in 0..self.hosts.len() {
            if !self.hosts[i].up {
                continue;
            }
            loop {
                let out = self.hosts[i].ep.poll_output();
                match out {
                    BlobOutput::Transmit { peer, data } => self.route(i, peer, data),
                    BlobOutput::Close { peer, reason } => {
                        self.hosts[i].closes.push((peer, reason));
                        if let Some(j) = self.index(&peer) {
                            let me = self.hosts[i].peer;
                            let at = self.now + self.latency;
                            self.at(at, Ev::Closed { host: j, peer: me });
                        }
                    }
                    BlobOutput::Event(e) => self.hosts[i].events.push(e),
                    BlobOutput::Wait(t) => {
                        self.hosts[i].timer = t;
                        break;
                    }
                    _ => unreachable!("no other outputs"),
                }
            }
        }
    }

    fn route(&mut self, from: usize, peer: PeerId, data: Bytes) {
        let Some(to) = self.index(&peer) else { return };
        let data = match self.hosts[from].lie {
            Some(lie) => Self::tamper(lie, data),
            None => data,
        };
        let len = data.len();
        *self.sent_bytes.entry((from, to)).or_default() += len as u64;
        // Serialisation on the link; the sender learns the bytes left once they have.
        let free = self
            .link_free
            .get(&(from, to))
            .copied()
            .unwrap_or(self.now)
            .max(self.now);
        let left = free + Duration::from_secs_f64(len as f64 / self.bandwidth as f64);
        self.link_free.insert((from, to), left);
        if self.hosts[to].reads {
            self.at(
                left,
                Ev::Sent {
                    host: from,
                    to: peer,
                    n: len,
                },
            );
        }
        let lost = self.rng.random_bool(self.loss);
        let copies = if lost {
            0
        } else if self.rng.random_bool(self.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            if self.blocked.contains(&(from.min(to), from.max(to))) {
                self.frozen.push((from, to, data.clone()));
            } else {
                self.at(
                    left + self.latency,
                    Ev::Data {
                        from,
                        to,
                        data: data.clone(),
                    },
                );
            }
        }
    }

    /// Runs until `done` holds or `limit` of virtual time has passed; returns `done`.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) -> bool {
        let end = self.now + limit;
        let (mut last, mut spins) = (self.now, 0u32);
        loop {
            if self.now == last {
                spins += 1;
                assert!(
                    spins < 100_000,
                    "no progress at {:?}: timers {:?}, queue {}",
                    self.now - last,
                    self.hosts
                        .iter()
                        .map(|h| h.timer.map(|t| t.saturating_duration_since(self.now)))
                        .collect::<Vec<_>>(),
                    self.queue.len()
                );
            } else {
                (last, spins) = (self.now, 0);
            }
            self.drain();
            if done(self) {
                return true;
            }
            let timer = self
                .hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| h.up)
                .filter_map(|(i, h)| h.timer.map(|t| (t, i)))
                .min();
            let packet = self.queue.keys().next().map(|&(t, _)| t);
            let next = match (timer, packet) {
                (Some((t, _)), Some(p)) => t.min(p),
                (Some((t, _)), None) => t,
                (None, Some(p)) => p,
                (None, None) => return false,
            };
            if next > end {
                self.now = end;
                return false;
            }
            self.now = self.now.max(next);
            if packet == Some(next) {
                let key = *self.queue.keys().next().expect("checked");
                let ev = self.queue.remove(&key).expect("checked");
                self.deliver(ev);
            } else if let Some((_, i)) = timer {
                let now = self.now;
                let h = &mut self.hosts[i];
                h.timer = None;
                h.ep.handle_timeout(&mut h.store, now);
            }
        }
    }

    fn deliver(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Data { from, to, data } => {
                if !self.hosts[to].up || !self.hosts[to].reads {
                    return;
                }
                self.deliveries += 1;
                let mut d = BlobDecoder::new();
                d.extend(&data);
                while let Ok(Some(BlobFrame::Leaf { data: leaf, .. })) = d.decode() {
                    *self.leaf_bytes.entry((from, to)).or_default() += leaf.len() as u64;
                }
                let peer = self.hosts[from].peer;
                let h = &mut self.hosts[to];
                h.ep.handle_data(peer, &data, &mut h.store, now);
            }
            Ev::Sent { host, to, n } => {
                let h = &mut self.hosts[host];
                if h.up {
                    h.ep.handle_sent(to, n, &mut h.store, now);
                }
            }
            Ev::Closed { host, peer } => {
                let h = &mut self.hosts[host];
                if h.up {
                    h.ep.handle_closed(peer, &mut h.store, now);
                }
            }
        }
    }

    /// Whether host `i` finished a download.
    pub fn done(&self, i: usize) -> bool {
        self.hosts[i]
            .events
            .iter()
            .any(|e| matches!(e, BlobEvent::Done { .. }))
    }

    /// Whether host `i` saw a download fail.
    pub fn failed(&self, i: usize) -> bool {
        self.hosts[i]
            .events
            .iter()
            .any(|e| matches!(e, BlobEvent::Failed { .. }))
    }

    /// Leaf bytes host `to` received from host `from`.
    pub fn leaf(&self, from: usize, to: usize) -> u64 {
        self.leaf_bytes.get(&(from, to)).copied().unwrap_or(0)
    }
}

/// `len` pseudo-random bytes.
pub fn blob(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}
