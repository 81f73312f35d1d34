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
    /// Bytes produced and not yet handed to the runtime (after [`Conn::front`]'s).
    pub outbox: BytesMut,
    /// Frames queued whole while nothing else was (a relayed message's shared
    /// encoding): handed out as they are, without a copy into `outbox`. Whatever is
    /// queued later goes to `outbox`, behind them.
    front: Option<Bytes>,
    /// Of `outbox`, how many leading bytes are our hello (never moved to another conn).
    pub hello_left: usize,
    /// Bytes handed out and not yet reported written.
    pub unacked: usize,
    pub rate: Option<(TokenBucket, TokenBucket)>,
    pub opened: Instant,
    /// `far_future(opened)`, kept (the timer compares with it on every re-index).
    never: Instant,
    /// When bytes last arrived (set on every receive without touching the timer).
    pub last_recv: Instant,
    /// The `last_recv` the idle deadline is armed from: a receive moves only
    /// `last_recv`, so the timer fires at the first deadline and re-arms from there
    /// (`Links::conn_timeout`) instead of being re-indexed on every frame.
    pub idle_from: Instant,
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
            front: None,
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
            idle_from: now,
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
        self.front.as_ref().map_or(0, Bytes::len) + self.outbox.len() + self.unacked
    }

    /// Whether bytes wait in the node to be handed out.
    pub fn has_outgoing(&self) -> bool {
        self.front.is_some() || !self.outbox.is_empty()
    }

    /// Queues `data`, whole frames, behind what is queued. When nothing is, a shared
    /// buffer is kept as it is (no copy: relaying one message to several neighbours
    /// then copies it to none of them).
    pub fn queue(&mut self, data: &[u8], shared: Option<&Bytes>) {
        match shared {
            Some(b) if self.front.is_none() && self.outbox.is_empty() && !b.is_empty() => {
                self.front = Some(b.clone());
            }
            _ => self.outbox.extend_from_slice(data),
        }
    }

    /// Drops everything queued in the node (a peer that does not read).
    pub fn clear_outgoing(&mut self) {
        self.front = None;
        self.outbox.clear();
    }

    /// Takes what may be handed to the runtime now (everything when `force`).
    pub fn take_transmit(&mut self, window: usize, force: bool) -> Option<Bytes> {
        if !self.has_outgoing() || (!force && self.unacked >= window) {
            return None;
        }
        // Always everything queued: the outbox then never holds a partial frame, so its
        // frames can move to another connection intact.
        self.hello_left = 0;
        let data = match self.front.take() {
            Some(front) if self.outbox.is_empty() => front,
            Some(front) => {
                let all = joined(&front, &self.outbox);
                self.outbox.clear();
                all.freeze()
            }
            None => {
                let n = self.outbox.len();
                self.outbox.split_to(n).freeze()
            }
        };
        self.unacked += data.len();
        Some(data)
    }

    /// Takes the queued frames that may move to another connection (all but our hello).
    pub fn take_movable(&mut self) -> BytesMut {
        let mut rest = std::mem::take(&mut self.outbox);
        let hello = rest.split_to(self.hello_left.min(rest.len()));
        self.outbox = hello;
        match self.front.take() {
            // The hello is only ever queued first, so a front means it went out.
            Some(front) => joined(&front, &rest),
            None => rest,
        }
    }

    /// The earliest instant this connection needs a timer call.
    pub fn deadline(&self, config: &Config) -> Instant {
        match self.state {
            State::Handshaking => self.opened + config.handshake_timeout,
            State::Draining { until } => until,
            State::Open if self.protocol == Protocol::Legacy => {
                (self.idle_from.checked_add(config.legacy_idle_timeout)).unwrap_or(self.never)
            }
            State::Open => {
                let idle = self.idle_from + config.idle_timeout;
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

/// `front` followed by `rest`, in one buffer.
fn joined(front: &[u8], rest: &[u8]) -> BytesMut {
    let mut all = BytesMut::with_capacity(front.len() + rest.len());
    all.extend_from_slice(front);
    all.extend_from_slice(rest);
    all
}

/// An instant far enough away to mean "never" without overflowing.
pub(crate) fn far_future(now: Instant) -> Instant {
    let year = Duration::from_secs(86_400 * 365);
    now.checked_add(year).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        let peer = crate::message::test_key().public().to_peer_id();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let config = Config::default();
        Conn::new(
            peer,
            Role::Dialer,
            addr,
            Protocol::Chat,
            1,
            &config,
            Instant::now(),
        )
    }

    /// A shared buffer queued on an idle connection goes out as it is (the same
    /// memory); what follows it keeps its place behind it.
    #[test]
    fn a_shared_frame_is_handed_out_without_a_copy_and_order_is_kept() {
        let mut c = conn();
        let shared = Bytes::from_static(b"\x03abc");
        c.queue(&shared, Some(&shared));
        assert_eq!(c.queued(), 4);
        let t = c.take_transmit(usize::MAX, false).unwrap();
        assert_eq!(t.as_ptr(), shared.as_ptr());
        assert_eq!(c.queued(), 4); // unacknowledged
                                   // Behind something queued a shared frame is copied after it...
        c.queue(b"\x01x", None);
        c.queue(&shared, Some(&shared));
        assert_eq!(
            &c.take_transmit(usize::MAX, true).unwrap()[..],
            b"\x01x\x03abc"
        );
        // ...and bytes queued behind a shared front follow it.
        c.queue(&shared, Some(&shared));
        c.queue(b"\x01y", None);
        assert_eq!(c.queued(), 4 + 6 + 6);
        assert_eq!(&c.take_movable()[..], b"\x03abc\x01y");
        assert!(!c.has_outgoing());
        c.queue(&shared, Some(&shared));
        c.clear_outgoing();
        assert!(!c.has_outgoing() && c.take_transmit(usize::MAX, true).is_none());
    }
}
