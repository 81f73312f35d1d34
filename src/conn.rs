//! Per-connection state: decoder, outbox, handshake, liveness and rate limits.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;

use crate::codec::FrameDecoder;
use crate::config::Config;
use crate::event::{Link, Protocol, Role};
use crate::legacy::LineDecoder;
use crate::rate::TokenBucket;
use crate::sync_queue::SyncQueue;

/// Lifecycle of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Our hello is sent; theirs has not arrived.
    Handshaking,
    /// Hello exchanged.
    Open,
    /// Lost a duplicate tie-break: our goodbye is sent; reading until theirs arrives.
    Draining { until: Instant },
}

pub(crate) enum Decoder {
    Frames(FrameDecoder),
    Lines(LineDecoder),
}

pub(crate) struct Conn {
    pub peer: PeerId,
    pub role: Role,
    pub addr: Multiaddr,
    pub protocol: Protocol,
    /// What carries it (a relayed circuit is preferred less and has a sync budget).
    pub link: Link,
    /// History and summary bytes it may still carry (`usize::MAX` when direct).
    pub sync_budget: usize,
    pub state: State,
    pub decoder: Decoder,
    pub my_nonce: u64,
    /// The dial that made this connection, if we dialed it.
    pub dial: Option<crate::event::DialId>,
    pub their_nonce: Option<u64>,
    /// The session (one run of the peer's node) its hello named; 0 before it or if unsent.
    pub their_session: u64,
    /// Bytes produced and not yet handed to the runtime.
    pub outbox: BytesMut,
    /// Of `outbox`, how many leading bytes are our hello (never moved to another conn).
    pub hello_left: usize,
    /// Bytes handed out and not yet reported written.
    pub unacked: usize,
    pub rate: Option<(TokenBucket, TokenBucket)>,
    pub opened: Instant,
    /// `far_future(opened)`, kept (the timer compares with it on every re-index).
    never: Instant,
    pub last_recv: Instant,
    pub next_ping: Instant,
    pub ping_out: Option<(u64, Instant)>,
    pub bad_sigs: u32,
    /// History this connection's peer lacks, sent in paced batches (bounded).
    pub sync: SyncQueue,
    /// When to send the next round of room summaries.
    pub next_sync: Instant,
    /// Authors listed so far in a multi-frame summary being received, per room.
    pub summary_rx: BTreeMap<String, BTreeSet<PeerId>>,
}

impl Conn {
    pub fn new(
        peer: PeerId,
        role: Role,
        addr: Multiaddr,
        protocol: Protocol,
        nonce: u64,
        config: &Config,
        now: Instant,
    ) -> Self {
        let decoder = match protocol {
            Protocol::Chat => Decoder::Frames(FrameDecoder::new(config.max_frame_len)),
            Protocol::Legacy => Decoder::Lines(LineDecoder::new(config.max_legacy_line)),
        };
        Conn {
            peer,
            role,
            addr,
            protocol,
            link: Link::Direct,
            sync_budget: usize::MAX,
            state: match protocol {
                Protocol::Chat => State::Handshaking,
                Protocol::Legacy => State::Open,
            },
            decoder,
            my_nonce: nonce,
            dial: None,
            their_nonce: None,
            their_session: 0,
            outbox: BytesMut::with_capacity(OUTBOX_BLOCK),
            hello_left: 0,
            unacked: 0,
            rate: config.rate_limit.map(|r| {
                (
                    TokenBucket::new(r.frames_per_sec, r.frame_burst, now),
                    TokenBucket::new(r.bytes_per_sec, r.byte_burst, now),
                )
            }),
            opened: now,
            never: far_future(now),
            last_recv: now,
            next_ping: now + config.ping_interval,
            ping_out: None,
            bad_sigs: 0,
            sync: SyncQueue::new(now),
            next_sync: now + config.sync_interval,
            summary_rx: BTreeMap::new(),
        }
    }

    /// Charges `n` bytes of history or summaries to the budget of a relayed connection;
    /// returns what was charged (0 when direct).
    pub fn spend_sync(&mut self, n: usize) -> u64 {
        if self.link == Link::Direct {
            return 0;
        }
        self.sync_budget = self.sync_budget.saturating_sub(n);
        n as u64
    }

    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Charges one received frame of `len` bytes; `false` if over the limit.
    pub fn charge(&mut self, len: usize, now: Instant) -> bool {
        match &mut self.rate {
            None => true,
            Some((frames, bytes)) => frames.take(1.0, now) && bytes.take(len as f64, now),
        }
    }

    /// Bytes queued for this connection, in the node and in the runtime.
    pub fn queued(&self) -> usize {
        self.outbox.len() + self.unacked
    }

    /// Takes what may be handed to the runtime now (everything when `force`).
    pub fn take_transmit(&mut self, window: usize, force: bool) -> Option<Bytes> {
        if self.outbox.is_empty() || (!force && self.unacked >= window) {
            return None;
        }
        // Always the whole outbox: it then never holds a partial frame, so its frames
        // can move to another connection intact.
        let n = self.outbox.len();
        self.hello_left = 0;
        self.unacked += n;
        Some(self.outbox.split_to(n).freeze())
    }

    /// Takes the queued frames that may move to another connection (all but our hello).
    pub fn take_movable(&mut self) -> BytesMut {
        let mut rest = std::mem::take(&mut self.outbox);
        let hello = rest.split_to(self.hello_left.min(rest.len()));
        self.outbox = hello;
        rest
    }

    /// The earliest instant this connection needs a timer call.
    pub fn deadline(&self, config: &Config) -> Instant {
        match self.state {
            State::Handshaking => self.opened + config.handshake_timeout,
            State::Draining { until } => until,
            State::Open if self.protocol == Protocol::Legacy => {
                (self.last_recv.checked_add(config.legacy_idle_timeout)).unwrap_or(self.never)
            }
            State::Open => {
                let idle = self.last_recv + config.idle_timeout;
                let ping = match self.ping_out {
                    Some(_) => idle,
                    None => self.next_ping,
                };
                idle.min(ping)
            }
        }
    }

    pub fn ack(&mut self, n: usize) {
        self.unacked = self.unacked.saturating_sub(n);
    }
}

/// A connection's timer: its own deadline (handshake, drain, idle, ping) unless that
/// means "never", or the next summary of an open chat connection, whichever is first.
impl crate::timers::Timed for Conn {
    type Ctx = Config;
    fn timer(&self, config: &Config) -> Option<Instant> {
        let d = self.deadline(config);
        let own = (d < self.never).then_some(d);
        let sync = (self.is_open() && self.protocol == Protocol::Chat).then_some(self.next_sync);
        own.into_iter().chain(sync).min()
    }
}

/// Bytes a connection's outbox allocates at a time. A transmit takes the front of the
/// block (`split_to`) and later frames are written to the rest of it, so small frames
/// (a relayed message is a few hundred bytes) cost no allocation each; a block is
/// freed once its transmits are dropped.
pub(crate) const OUTBOX_BLOCK: usize = 8 * 1024;

/// An instant far enough away to mean "never" without overflowing.
pub(crate) fn far_future(now: Instant) -> Instant {
    let year = Duration::from_secs(86_400 * 365);
    now.checked_add(year).unwrap_or(now)
}
