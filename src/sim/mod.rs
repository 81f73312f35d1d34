//! A deterministic in-memory network of [`Node`]s (feature `sim`).
//!
//! Virtual time, one thread, a seeded RNG. Each connection is a pair of ordered byte
//! streams with latency and jitter (order is kept, as on TCP); transmits are split at
//! random boundaries before delivery. Dials resolve to the node listening at the address.
//! Tests, fuzz targets and benches drive it with [`Sim::run_until`] and friends; the same
//! seed replays the same run.
//!
//! A test may also attach a *raw peer* to a node ([`Sim::open_raw`]): a connection whose
//! remote end is the test itself, for feeding arbitrary bytes and reading what the node
//! sends back.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use libp2p_identity::{Keypair, PeerId};
use multiaddr::Multiaddr;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::event::{ConnId, ConnInfo, DialId, Event, Protocol, Role};
use crate::message::{MsgId, OrderKey};
use crate::{Config, Identity, Node};

mod net;
mod raw;
pub use raw::{raw_frame, raw_hello};

mod check;
mod store;

pub use store::Store;

/// The RNG seed of simulated node `i` in its `run`-th run (0 first; each restart is a
/// new run with its own seed, as a real node seeds from OS randomness at each start).
fn node_seed(i: usize, run: usize) -> u64 {
    1000 + i as u64 + ((run as u64) << 32)
}

/// [`keypair`]'s key as an [`Identity`].
pub fn identity(key: &Keypair) -> Identity {
    Identity::try_from(key.clone()).expect("simulated keys are ed25519")
}

/// Deterministic identity number `i` of a simulation.
pub fn keypair(i: u64) -> Keypair {
    let mut seed = [0x5au8; 32];
    seed[..8].copy_from_slice(&i.to_le_bytes());
    Keypair::ed25519_from_bytes(seed).expect("32 bytes")
}

/// Index of a node in the simulation.
pub type NodeIdx = usize;

enum Delivery {
    Sent {
        to: NodeIdx,
        conn: ConnId,
        n: usize,
    },
    Connected {
        to: NodeIdx,
        conn: ConnId,
        info: Box<ConnInfo>,
    },
    Data {
        to: NodeIdx,
        conn: ConnId,
        data: Bytes,
    },
    Closed {
        to: NodeIdx,
        conn: ConnId,
    },
    DialFailed {
        to: NodeIdx,
        dial: DialId,
        error: String,
    },
}

/// A delivery in the event queue, ordered by time, then by scheduling order, in one
/// 16-byte integer: from the top, the time in ns since [`Sim::start`]
/// ([`TIME_BITS`]), the scheduling sequence number ([`SEQ_BITS`]) and the slot in
/// [`Sim::slots`] where the delivery itself waits (sequence numbers are unique, so the
/// slot never decides the order). The heap moves and compares 16 bytes an entry.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Scheduled(u128);

/// Bits of [`Scheduled`] for the time: 2^52 ns, about 52 days of virtual time.
const TIME_BITS: u32 = 52;
/// Bits of [`Scheduled`] for the sequence number: 2^44 deliveries scheduled in all.
const SEQ_BITS: u32 = 44;

impl Scheduled {
    fn new(ns: u64, seq: u64, slot: u32) -> Self {
        assert!(
            ns < 1 << TIME_BITS,
            "the simulator runs under 2^52 ns (52 days) of virtual time"
        );
        assert!(seq < 1 << SEQ_BITS, "under 2^44 deliveries scheduled");
        Scheduled(u128::from(ns) << (128 - TIME_BITS) | u128::from(seq) << 32 | u128::from(slot))
    }

    /// Nanoseconds since the start of the simulation at which it is due.
    fn ns(&self) -> u64 {
        (self.0 >> (128 - TIME_BITS)) as u64
    }

    /// Where the delivery waits in [`Sim::slots`].
    fn slot(&self) -> u32 {
        self.0 as u32
    }
}

/// Connection ends, indexed by connection id: the simulator hands out ids in order and
/// never twice (across all nodes), so a vector does, each entry with the node it belongs
/// to. Holds one entry per connection ever made (a few per node and reconnection).
#[derive(Default)]
struct Ends(Vec<Option<(NodeIdx, Endpoint)>>);

impl Ends {
    fn get(&self, &(i, c): &(NodeIdx, ConnId)) -> Option<&Endpoint> {
        match self.0.get(usize::try_from(c.0).ok()?) {
            Some(Some((n, e))) if *n == i => Some(e),
            _ => None,
        }
    }

    fn get_mut(&mut self, &(i, c): &(NodeIdx, ConnId)) -> Option<&mut Endpoint> {
        match self.0.get_mut(usize::try_from(c.0).ok()?) {
            Some(Some((n, e))) if *n == i => Some(e),
            _ => None,
        }
    }

    fn contains_key(&self, k: &(NodeIdx, ConnId)) -> bool {
        self.get(k).is_some()
    }

    fn insert(&mut self, (i, c): (NodeIdx, ConnId), e: Endpoint) {
        let k = usize::try_from(c.0).expect("connection ids are small");
        if self.0.len() <= k {
            self.0.resize_with(k + 1, || None);
        }
        self.0[k] = Some((i, e));
    }

    fn remove(&mut self, k: &(NodeIdx, ConnId)) -> Option<Endpoint> {
        self.get(k)?;
        let (_, e) = self.0[k.1 .0 as usize].take()?;
        Some(e)
    }

    /// Node `i`'s ends, in connection id order.
    fn of_node(&self, i: NodeIdx) -> Vec<(NodeIdx, ConnId)> {
        (self.0.iter().enumerate())
            .filter(|(_, e)| e.as_ref().is_some_and(|(n, _)| *n == i))
            .map(|(c, _)| (i, ConnId(c as u64)))
            .collect()
    }
}

/// One simulated node and what it reported.
pub struct SimNode {
    /// The state machine (`None` while crashed).
    pub node: Option<Node>,
    /// Its identity.
    pub key: Keypair,
    /// Its configuration.
    pub config: Config,
    /// Its listen address.
    pub addr: Multiaddr,
    /// Every event it emitted, in order.
    pub events: Vec<Event>,
    /// Connections the node closed, with reasons.
    pub closes: Vec<(ConnId, crate::CloseReason)>,
    /// What the node's app persisted (fed from its events).
    pub store: Store,
    /// Messages sent through [`Sim::send`], with their log keys.
    pub sent: Vec<(MsgId, OrderKey)>,
    /// Whether the node ever crashed.
    pub crashed: bool,
    /// Indices into `events` where a restarted incarnation begins.
    pub restarts: Vec<usize>,
}

/// Where a connection end leads.
#[derive(Clone, Copy)]
enum Remote {
    Node(NodeIdx, ConnId),
    Raw(u64),
}

struct Endpoint {
    remote: Remote,
    /// Earliest time the next delivery on this direction may happen (keeps FIFO order).
    fifo: Instant,
    /// When the link finishes sending what it was given (with a bandwidth limit).
    busy_until: Instant,
}

/// The simulated network.
pub struct Sim {
    now: Instant,
    start: Instant,
    rng: ChaCha8Rng,
    nodes: Vec<SimNode>,
    ends: Ends,
    queue: BinaryHeap<Reverse<Scheduled>>,
    /// The deliveries of `queue`, by [`Scheduled::slot`] (`None`: free).
    slots: Vec<Option<Delivery>>,
    /// Free indices of `slots`.
    free: Vec<u32>,
    seq: u64,
    next_conn: u64,
    /// Raw peers: node, conn, bytes received, closed, reading (acknowledges bytes).
    raw: BTreeMap<u64, (NodeIdx, ConnId, Vec<u8>, bool, bool)>,
    blocked: BTreeSet<(NodeIdx, NodeIdx)>,
    /// Bytes sent across a partition, delivered when it heals: (from, to, conn, data).
    frozen: Vec<(NodeIdx, NodeIdx, ConnId, Bytes)>,
    /// One-way latency of every link.
    pub latency: Duration,
    /// Extra random delay, uniform in `[0, jitter]` (order on a link is still kept).
    pub jitter: Duration,
    /// Transmits are cut into chunks of 1..=`max_chunk` bytes (0 = never cut).
    pub max_chunk: usize,
    /// Whether nodes' events are written to their [`Store`] (default true; turn off
    /// for big benchmarks that never restart nodes).
    pub persist: bool,
    /// Whether nodes' room-message events are kept in [`SimNode::events`] (default
    /// true; [`Sim::texts`] and [`Sim::check_delivery`] read them). Big benchmarks turn
    /// it off: other events are still kept, logs and [`crate::Stats::delivered`] still
    /// count every delivery, and memory no longer grows with nodes × messages twice.
    pub keep_messages: bool,
    /// Whether events other than room messages are all kept in [`SimNode::events`]
    /// (default true). When false only those the checks read are (joins, leaves, gaps);
    /// a 1,000-node benchmark would otherwise keep a million peer and profile events.
    pub keep_events: bool,
    timers: BTreeSet<(Instant, NodeIdx)>,
    timer_of: Vec<Option<Instant>>,
    /// Bytes per second each connection direction carries (`None`: unlimited). With a
    /// limit, the sender learns a transmit was written only once it has left.
    pub bandwidth: Option<u64>,
    /// Transmit chunks handed to nodes so far.
    pub deliveries: u64,
    /// What carries connections made from now on, as both ends report it.
    pub link: crate::Link,
    /// Probability that a room-message frame is lost in transit.
    pub loss: f64,
    /// Probability that a room-message frame is delivered twice.
    pub duplicate: f64,
    /// Probability that a room-message frame swaps places with the next one.
    pub reorder: f64,
    seed: u64,
    /// Delivery latency histogram: `latency_ms[k]` counts room messages delivered to a
    /// node other than their author `k` ms after the author sent them (by its wall
    /// clock, so to 1 ms; the last bucket holds everything later).
    pub latency_ms: Vec<u64>,
    /// Frame bounds of the transmit [`Sim::mangle`] works on (kept to reuse the memory).
    mangle_scratch: Vec<(usize, usize, bool)>,
    /// A node's transmits and actions being moved into the network (kept to reuse the
    /// memory; empty between flushes).
    tx_scratch: Vec<crate::event::Transmit>,
    act_scratch: Vec<crate::event::Action>,
}

/// Buckets of [`Sim::latency_ms`] (one a millisecond, up to a minute).
pub const LATENCY_BUCKETS: usize = 60_000;

impl Sim {
    /// An empty network with 1 ms latency and no jitter.
    pub fn new(seed: u64) -> Self {
        let start = Instant::now();
        Sim {
            now: start,
            start,
            rng: ChaCha8Rng::seed_from_u64(seed),
            nodes: Vec::new(),
            ends: Ends::default(),
            queue: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            seq: 0,
            next_conn: 1,
            raw: BTreeMap::new(),
            blocked: BTreeSet::new(),
            frozen: Vec::new(),
            latency: Duration::from_millis(1),
            jitter: Duration::ZERO,
            max_chunk: 0,
            deliveries: 0,
            persist: true,
            keep_messages: true,
            keep_events: true,
            timers: BTreeSet::new(),
            timer_of: Vec::new(),
            bandwidth: None,
            link: crate::Link::Direct,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            seed,
            latency_ms: Vec::new(),
            mangle_scratch: Vec::new(),
            tx_scratch: Vec::new(),
            act_scratch: Vec::new(),
        }
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The simulated wall clock: 2023-11-14 22:13:20 UTC (1.7e9 s after the Unix epoch)
    /// at the start, then advancing with virtual time. Nodes get it at start and restart,
    /// and with every [`Sim::send`].
    pub fn wall(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + self.elapsed()
    }

    /// [`Sim::wall`] in ms since the Unix epoch.
    fn wall_ms(&self) -> u64 {
        1_700_000_000_000 + self.elapsed().as_millis() as u64
    }

    /// The `q`-quantile (0..=1) of [`Sim::latency_ms`], in ms (`None`: nothing delivered).
    pub fn latency_quantile(&self, q: f64) -> Option<u64> {
        let total: u64 = self.latency_ms.iter().sum();
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total.max(1));
        let mut seen = 0;
        for (ms, n) in self.latency_ms.iter().enumerate() {
            seen += n;
            if seen >= rank && total > 0 {
                return Some(ms as u64);
            }
        }
        None
    }

    /// Virtual time elapsed since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Adds a node with identity [`keypair`]`(index)`; its RNG seed is derived from the
    /// index.
    pub fn add_node(&mut self, config: Config) -> NodeIdx {
        let i = self.nodes.len();
        let key = keypair(i as u64);
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", 10_000 + i)
            .parse()
            .unwrap();
        let mut node = Node::new(identity(&key), config.clone(), node_seed(i, 0), self.now);
        node.set_wall_clock(self.wall(), self.now);
        node.set_listen_addrs(vec![addr.clone()]);
        self.nodes.push(SimNode {
            node: Some(node),
            key,
            config,
            addr,
            events: Vec::new(),
            closes: Vec::new(),
            store: Store::default(),
            sent: Vec::new(),
            crashed: false,
            restarts: Vec::new(),
        });
        self.flush(i);
        i
    }

    /// Adds a node with the default config and the given name.
    pub fn add_named(&mut self, name: &str) -> NodeIdx {
        self.add_node(Config {
            name: name.into(),
            ..Config::default()
        })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the network has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A node (panics if crashed).
    pub fn node(&self, i: NodeIdx) -> &Node {
        self.nodes[i].node.as_ref().expect("node is crashed")
    }

    /// The simulation's record of a node.
    pub fn sim_node(&self, i: NodeIdx) -> &SimNode {
        &self.nodes[i]
    }

    /// Peer id of node `i`.
    pub fn peer_id(&self, i: NodeIdx) -> PeerId {
        self.nodes[i].key.public().to_peer_id()
    }

    /// Listen address of node `i` with `/p2p/<id>`.
    pub fn dial_addr(&self, i: NodeIdx) -> String {
        format!("{}/p2p/{}", self.nodes[i].addr, self.peer_id(i))
    }

    /// Runs `f` on node `i` (a user command) and processes its outputs.
    pub fn with<R>(&mut self, i: NodeIdx, f: impl FnOnce(&mut Node, Instant) -> R) -> R {
        let now = self.now;
        let r = f(self.nodes[i].node.as_mut().expect("node is crashed"), now);
        self.flush(i);
        r
    }

    /// Node `a` dials node `b`'s address.
    pub fn connect(&mut self, a: NodeIdx, b: NodeIdx) {
        let addr = self.dial_addr(b);
        // An app keeps the addresses it was told to connect to (flags, config).
        if self.persist {
            let peer = self.peer_id(b);
            if let Ok(ma) = addr.parse() {
                self.nodes[a].store.peers.entry(peer).or_default().push(ma);
            }
        }
        self.with(a, |n, now| n.connect(&addr, now))
            .expect("valid address");
    }

    /// Frames decoded by all live nodes so far (the simulated frame deliveries).
    pub fn frames_delivered(&self) -> u64 {
        self.nodes
            .iter()
            .filter_map(|n| n.node.as_ref())
            .map(|n| n.stats().frames_in)
            .sum()
    }

    /// The seed this simulation was created with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Node `i` sends `text` to `room`.
    pub fn send(&mut self, i: NodeIdx, room: &str, text: &str) {
        let wall = self.wall();
        let m = self
            .with(i, |n, now| n.send(room, text, wall, now))
            .expect("send accepted");
        self.nodes[i].sent.push((m.id(), m.order_key()));
    }

    /// Texts of room messages node `i` delivered, in delivery order.
    pub fn texts(&self, i: NodeIdx, room: &str) -> Vec<String> {
        self.nodes[i]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Message { msg, .. } if msg.room == room => Some(msg.text.clone()),
                _ => None,
            })
            .collect()
    }

    /// Texts of node `i`'s room log in agreed order.
    pub fn log(&self, i: NodeIdx, room: &str) -> Vec<String> {
        self.node(i)
            .room_log(room)
            .map(|l| l.map(|m| m.text.clone()).collect())
            .unwrap_or_default()
    }

    /// Drops the events recorded for node `i`.
    pub fn clear_events(&mut self, i: NodeIdx) {
        self.nodes[i].events.clear();
    }

    /// Whether node `i` sees node `j` as a connected peer.
    pub fn is_connected(&self, i: NodeIdx, j: NodeIdx) -> bool {
        let id = self.peer_id(j);
        self.node(i).peers().iter().any(|p| p.peer == id)
    }

    /// Blocks traffic between `a` and `b` (both directions): new dials fail and bytes
    /// sent from now on are held until [`Sim::heal`] (as TCP would retransmit them), so
    /// a long partition ends connections by idle timeout.
    pub fn partition(&mut self, a: NodeIdx, b: NodeIdx) {
        self.blocked.insert((a.min(b), a.max(b)));
    }

    /// Undoes [`Sim::partition`].
    pub fn heal(&mut self, a: NodeIdx, b: NodeIdx) {
        self.blocked.remove(&(a.min(b), a.max(b)));
        let (thaw, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.frozen)
            .into_iter()
            .partition(|(x, y, _, _)| (*x.min(y), *x.max(y)) == (a.min(b), a.max(b)));
        self.frozen = keep;
        let at = self.now + self.latency;
        for (_, to, conn, data) in thaw {
            self.schedule(at, Delivery::Data { to, conn, data });
        }
    }

    fn is_blocked(&self, a: NodeIdx, b: NodeIdx) -> bool {
        self.blocked.contains(&(a.min(b), a.max(b)))
    }

    /// Crashes node `i`: its state is gone; its peers see their connections close.
    pub fn crash(&mut self, i: NodeIdx) {
        for end in self.take_down(i) {
            if let Remote::Node(rn, rc) = end.remote {
                let at = self.now + self.latency;
                self.schedule(at, Delivery::Closed { to: rn, conn: rc });
            }
        }
    }

    /// Drops node `i`'s state and its connection ends, which it returns.
    fn take_down(&mut self, i: NodeIdx) -> Vec<Endpoint> {
        self.nodes[i].node = None;
        self.nodes[i].crashed = true;
        self.update_timer(i);
        let mine = self.ends.of_node(i);
        mine.iter().filter_map(|k| self.ends.remove(k)).collect()
    }

    /// Restarts a crashed node from what its app persisted, with the same identity and
    /// address.
    pub fn restart(&mut self, i: NodeIdx) {
        let wall = self.wall();
        let sn = &mut self.nodes[i];
        let mut state = sn.store.restore();
        state.wall = Some(wall);
        let mut node = Node::restore(
            identity(&sn.key),
            sn.config.clone(),
            node_seed(i, sn.restarts.len() + 1),
            state,
            self.now,
        );
        node.set_listen_addrs(vec![sn.addr.clone()]);
        sn.node = Some(node);
        sn.restarts.push(sn.events.len());
        self.flush(i);
    }

    /// Node `i` vanishes (power cut, cable pulled): its state is gone like in
    /// [`Sim::crash`], but its peers learn nothing; their connections to it look open
    /// until their own timeouts notice (its bytes go nowhere).
    pub fn vanish(&mut self, i: NodeIdx) {
        self.take_down(i);
    }

    /// Crashes node `i` so that its last `n` message writes never reached the disk.
    pub fn crash_losing(&mut self, i: NodeIdx, n: usize) {
        self.crash(i);
        self.nodes[i].store.lose_newest(n);
    }

    /// Opens a connection to node `i` from a raw peer with identity `key`, speaking
    /// `protocol`. Returns a handle for [`Sim::raw_send`] and [`Sim::raw_received`].
    pub fn open_raw(&mut self, i: NodeIdx, key: &Keypair, protocol: Protocol) -> u64 {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let h = conn.0;
        self.raw.insert(h, (i, conn, Vec::new(), false, true));
        self.ends.insert(
            (i, conn),
            Endpoint {
                remote: Remote::Raw(h),
                fifo: self.now,
                busy_until: self.now,
            },
        );
        let info = ConnInfo {
            peer: key.public().to_peer_id(),
            role: Role::Listener,
            remote_addr: "/ip4/127.0.0.9/tcp/9".parse().unwrap(),
            protocol,
            dial: None,
            link: self.link,
        };
        self.with(i, |n, now| n.handle_connected(conn, info, now));
        h
    }

    /// Feeds bytes from a raw peer to its node, at once.
    pub fn raw_send(&mut self, h: u64, data: &[u8]) {
        let Some(&(i, conn, _, closed, _)) = self.raw.get(&h) else {
            return;
        };
        if closed || self.nodes[i].node.is_none() {
            return;
        }
        self.with(i, |n, now| n.handle_data(conn, data, now));
    }

    /// Bytes the node sent to a raw peer so far.
    pub fn raw_received(&self, h: u64) -> &[u8] {
        &self.raw[&h].2
    }

    /// Makes a raw peer stop (or resume) acknowledging what the node sends, like a peer
    /// whose socket is never read.
    pub fn raw_set_reading(&mut self, h: u64, reading: bool) {
        if let Some(r) = self.raw.get_mut(&h) {
            r.4 = reading;
        }
    }

    /// Whether the node closed the raw peer's connection.
    pub fn raw_closed(&self, h: u64) -> bool {
        self.raw[&h].3
    }

    fn schedule(&mut self, at: Instant, d: Delivery) {
        let ns = u64::try_from(at.saturating_duration_since(self.start).as_nanos())
            .expect("under 584 years of virtual time");
        debug_assert_eq!(self.start + Duration::from_nanos(ns), at);
        let s = self.seq;
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(k) => {
                self.slots[k as usize] = Some(d);
                k
            }
            None => {
                self.slots.push(Some(d));
                u32::try_from(self.slots.len() - 1).expect("under 2^32 deliveries in flight")
            }
        };
        self.queue.push(Reverse(Scheduled::new(ns, s, slot)));
    }

    /// Collects node `i`'s outputs into the network and re-reads its timer.
    fn flush(&mut self, i: NodeIdx) {
        let wait = self.flush_outputs(i);
        self.set_timer(i, wait);
    }

    fn next_timer(&self) -> Option<(Instant, NodeIdx)> {
        self.timers.first().copied()
    }

    /// Re-reads node `i`'s timeout into the timer index.
    fn update_timer(&mut self, i: NodeIdx) {
        let t = self.nodes[i].node.as_mut().and_then(|n| n.poll_timeout());
        self.set_timer(i, t);
    }

    /// Sets node `i`'s entry in the timer index to `t` (its current timeout).
    fn set_timer(&mut self, i: NodeIdx, t: Option<Instant>) {
        if self.timer_of.len() <= i {
            self.timer_of.resize(i + 1, None);
        }
        if self.timer_of[i] == t {
            return;
        }
        if let Some(old) = self.timer_of[i].take() {
            self.timers.remove(&(old, i));
        }
        if let Some(t) = t {
            self.timers.insert((t, i));
            self.timer_of[i] = Some(t);
        }
    }

    /// Processes the next delivery or timer. Returns `false` if nothing is left to do
    /// before `limit`.
    pub fn step(&mut self, limit: Instant) -> bool {
        let start = self.start;
        let next_q = (self.queue.peek()).map(|Reverse(x)| start + Duration::from_nanos(x.ns()));
        let next_t = self.next_timer();
        let pick_queue = match (next_q, next_t) {
            (None, None) => return false,
            (Some(q), Some((t, _))) => q <= t,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if pick_queue {
            if next_q.is_some_and(|q| q > limit) {
                return false;
            }
            let Reverse(x) = self.queue.pop().expect("peeked");
            self.now = self.now.max(next_q.expect("peeked"));
            let d = self.slots[x.slot() as usize].take().expect("scheduled");
            self.free.push(x.slot());
            self.deliver(d);
        } else {
            let (at, i) = next_t.expect("some");
            if at > limit {
                return false;
            }
            self.now = self.now.max(at);
            let now = self.now;
            if let Some(n) = self.nodes[i].node.as_mut() {
                n.handle_timeout(now);
            }
            self.flush(i);
        }
        true
    }

    fn deliver(&mut self, d: Delivery) {
        let now = self.now;
        let to = match &d {
            Delivery::Connected { to, .. }
            | Delivery::Data { to, .. }
            | Delivery::Closed { to, .. }
            | Delivery::DialFailed { to, .. }
            | Delivery::Sent { to, .. } => *to,
        };
        let Some(node) = self.nodes[to].node.as_mut() else {
            return;
        };
        match d {
            Delivery::Connected { conn, info, .. } => {
                if !self.ends.contains_key(&(to, conn)) {
                    return; // the other side is already gone
                }
                node.handle_connected(conn, *info, now);
            }
            Delivery::Data { conn, data, .. } => {
                if !self.ends.contains_key(&(to, conn)) {
                    return;
                }
                self.deliveries += 1;
                node.handle_data(conn, &data, now);
            }
            Delivery::Closed { conn, .. } => {
                if self.ends.remove(&(to, conn)).is_some() {
                    node.handle_closed(conn, "connection closed by peer", now);
                }
            }
            Delivery::DialFailed { dial, error, .. } => node.handle_dial_failed(dial, &error, now),
            Delivery::Sent { conn, n, .. } => node.handle_sent(conn, n),
        }
        self.flush(to);
    }

    /// Runs until `cond` holds (checked after every step) or `max` virtual time passes.
    /// Returns whether `cond` held.
    pub fn run_until(&mut self, max: Duration, mut cond: impl FnMut(&Sim) -> bool) -> bool {
        let limit = self.now + max;
        loop {
            if cond(self) {
                return true;
            }
            if !self.step(limit) {
                self.now = self.now.max(limit);
                return cond(self);
            }
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step(limit) {}
        self.now = self.now.max(limit);
    }

    /// Runs until no bytes are in flight (timers may remain), at most `max`. Returns
    /// `false` on livelock (still busy at the bound).
    pub fn settle(&mut self, max: Duration) -> bool {
        self.run_until(max, |s| s.queue.is_empty())
    }
}
