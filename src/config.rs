//! Node configuration: every limit and timer, with documented defaults.

use std::time::Duration;

/// Per-connection token bucket limits on what a peer may send us.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Sustained frames per second.
    pub frames_per_sec: f64,
    /// Frames that may arrive at once (bucket size).
    pub frame_burst: f64,
    /// Sustained bytes per second.
    pub bytes_per_sec: f64,
    /// Bytes that may arrive at once (bucket size).
    pub byte_burst: f64,
}

impl Default for RateLimit {
    /// 5,000 frames/s (burst 50,000) and 8 MiB/s (burst 32 MiB): far above what people
    /// type, low enough that a flooding peer is cut off within a second or two.
    fn default() -> Self {
        RateLimit {
            frames_per_sec: 5_000.0,
            frame_burst: 50_000.0,
            bytes_per_sec: 8.0 * 1024.0 * 1024.0,
            byte_burst: 32.0 * 1024.0 * 1024.0,
        }
    }
}

/// Configuration of a [`crate::Node`]. `Config::default()` is a sensible chat node.
///
/// Fields are public to read and assign; new ones may be added in minor versions, so
/// build one from the default with the chainable setters (one per field, named like it):
///
/// ```
/// use std::time::Duration;
/// let config = echo_proto::Config::default()
///     .name("alice")
///     .default_room(Some("rust".into()))
///     .max_peers(16)
///     .idle_timeout(Duration::from_secs(60));
/// assert_eq!(config.max_peers, 16);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Display name announced to peers (default `anon`).
    pub name: String,
    /// The default room, joined at start (default `general`); `None` joins none.
    pub default_room: Option<String>,
    /// Free-form agent string sent in the hello.
    pub agent: String,

    /// Largest frame payload accepted or sent, in bytes (default 256 KiB).
    pub max_frame_len: usize,
    /// Largest message text, in bytes (default 16 KiB).
    pub max_text_len: usize,
    /// Longest display name, in bytes (default 64).
    pub max_name_len: usize,
    /// Longest room name, in bytes (default 64).
    pub max_room_len: usize,
    /// Rooms a peer may announce; also the local limit (default 64).
    pub max_rooms: usize,
    /// Out-of-order buffer: messages held or pending per (room, author) (default 1,024).
    pub max_buffered_per_author: usize,
    /// Longest legacy echo-go line, in bytes (default 16 KiB).
    pub max_legacy_line: usize,
    /// Per-connection receive rate limit; `None` disables it.
    pub rate_limit: Option<RateLimit>,
    /// Bytes handed to the runtime but not yet reported written that make the node stop
    /// handing out more for that connection (default 1 MiB).
    pub write_window: usize,
    /// Bytes queued for one connection (in the node and unacknowledged in the runtime)
    /// past which the peer is considered not reading and closed (default 16 MiB).
    pub max_queued_bytes: usize,
    /// Invalid signatures (or forged chain links) from one connection at which it is
    /// closed (default 3: the third closes it).
    pub max_bad_signatures: u32,

    /// Time allowed from connection up to the peer's hello (default 10 s).
    pub handshake_timeout: Duration,
    /// Interval between pings, which measure RTT (default 10 s).
    pub ping_interval: Duration,
    /// Silence after which a peer is closed and reported down (default 30 s).
    pub idle_timeout: Duration,
    /// How long a losing duplicate connection may drain before it is closed (default 5 s).
    pub drain_timeout: Duration,
    /// How long a message gap is held open before delivery resumes past it (default 2 s).
    pub gap_timeout: Duration,
    /// How long an unsigned message waits for a signed successor (default 10 s).
    pub verify_timeout: Duration,
    /// First redial delay after a peer drops (default 500 ms); doubles per failure.
    pub backoff_initial: Duration,
    /// Upper bound of the redial delay (default 60 s).
    pub backoff_max: Duration,
    /// Redial attempts for a peer learned by peer exchange but never connected (default 5).
    pub max_dial_attempts_unconnected: u32,

    /// Repair requests for a gap before it is skipped (default 3; each waits
    /// `gap_timeout`).
    pub max_repair_attempts: u32,
    /// Retention: messages kept per room (default 10,000); older ones are dropped and
    /// never requested again.
    pub max_log_messages: usize,
    /// Retention: bytes kept per room, counting text, name, room and 256 bytes of
    /// overhead per message (default 32 MiB).
    pub max_log_bytes: usize,
    /// Interval between room summaries sent to each neighbour (default 10 s); they are
    /// also sent when a connection opens and when a room is joined.
    pub sync_interval: Duration,
    /// History sent per batch when a neighbour lacks messages (default 32 KiB).
    pub sync_batch_bytes: usize,
    /// History is only queued for a connection while less than this is queued on it, so
    /// a big backlog never delays live messages by more than about this much
    /// (default 64 KiB).
    pub sync_low_water: usize,
    /// History and summary bytes this node sends over one relayed ([`crate::Link::Relayed`])
    /// connection in its life (default 32 KiB). A circuit relay v2 circuit carries 128 KiB
    /// in both directions together by default (and lives 2 minutes), so both ends' sync
    /// takes at most half of it and the rest is left for chat and the transport. Past the
    /// budget, history waits for a direct connection or the next circuit; chat still goes.
    pub relayed_sync_budget: usize,
    /// History sync jobs (one per room and author a neighbour lacks) queued per
    /// connection; more are left for the next summary round (default 4,096). At most
    /// twice as many ranges are queued per connection, and 128 per job.
    pub max_sync_jobs: usize,
    /// An author signs at least every this many messages even inside a burst, so a
    /// receiver never holds more unverified messages than this (default 64).
    pub sign_every: u64,
    /// Whether this node offers the broadcast tree (capability `tree`, PROTOCOL.md
    /// section 7.1): room messages go in full along a spanning tree and as short
    /// announcements elsewhere. `false` floods every message over every link, as nodes
    /// without the capability do (default false for now: under 1 % loss in
    /// `benches/sim.rs`, 100 nodes, the tree converges as fast as flooding and cuts
    /// frames per message from ~7 to ~1.25 (~2.3 when authors send 10 messages each),
    /// but delivery latency p50 / p99 is 24 / 70 ms against 19 / 29 ms; BENCHMARKS.md).
    pub broadcast_tree: bool,
    /// Whether a signed room message that comes from its author directly (the
    /// connection's authenticated peer) is delivered before its signature is checked;
    /// it is relayed and served only once the check passes (PROTOCOL.md, "Delivery
    /// before verification"). `false` verifies every message before delivery (default
    /// true).
    pub deliver_before_verify: bool,
    /// Sequence numbers reserved at a time; each reservation is an
    /// [`crate::Event::SeqReserved`] the app must persist (default 1,000).
    pub reserve_block: u64,
    /// Other authors' signed profiles (display names) remembered (default 4,096).
    pub max_profiles: usize,
    /// Authors whose chains a room keeps (default 4,096; at least 2). A new author
    /// beyond it evicts the author holding the fewest messages (the least recent among
    /// equals); the evicted author's messages stay in the log (PROTOCOL.md section 9.6).
    pub max_authors: usize,
    /// How far ahead of the local wall clock a received clock value may be (default
    /// 60 s). Messages and profiles further ahead are not accepted until the wall clock
    /// catches up, and the node's clock never adopts more than half of this ahead of the
    /// wall clock, so one message moves it by at most that (PROTOCOL.md section 8.3).
    pub max_clock_skew: Duration,

    /// Connected peers at which the node stops dialing learned peers and refuses new
    /// connections (default 64).
    pub max_peers: usize,
    /// Peers remembered in the address book (default 256).
    pub max_known_peers: usize,
    /// Addresses remembered per peer (default 8).
    pub max_addrs_per_peer: usize,
    /// Neighbours shared in one peer-exchange frame (default 32).
    pub max_exchange_peers: usize,
    /// Dial peers learned by peer exchange (default true).
    pub auto_connect: bool,
    /// Learned peers are dialed while fewer than this many are connected, and again when
    /// a neighbour drops (default 8; relaying reaches the rest of a larger group).
    pub target_peers: usize,
    /// Legacy (`/echo-go/chat/1.0.0`) connections allowed at once, out of `max_peers`
    /// (default 16, a quarter of the default `max_peers`), so silent legacy peers can
    /// never take every slot.
    pub max_legacy_peers: usize,
    /// A legacy connection that sent nothing for this long is closed (default 10 min;
    /// legacy peers have no ping).
    pub legacy_idle_timeout: Duration,
    /// Addresses learned from the network (hellos, peer exchange) and never confirmed
    /// by a connection we dialed are forgotten this long after their peer was last seen
    /// (default 1 h).
    pub learned_addr_ttl: Duration,
    /// Sustained rate at which unconfirmed learned addresses may be dialed, over all
    /// peers (default 1 per second).
    pub learned_dials_per_sec: f64,
    /// Unconfirmed learned addresses that may be dialed at once (default 8).
    pub learned_dial_burst: f64,
    /// Limits of end-to-end encrypted direct messages and the mailbox.
    pub dm: crate::dm::DmConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "anon".into(),
            default_room: Some("general".into()),
            agent: concat!("echo/", env!("CARGO_PKG_VERSION")).into(),
            max_frame_len: 256 * 1024,
            max_text_len: 16 * 1024,
            max_name_len: 64,
            max_room_len: 64,
            max_rooms: 64,
            max_buffered_per_author: 1024,
            max_legacy_line: 16 * 1024,
            rate_limit: Some(RateLimit::default()),
            write_window: 1024 * 1024,
            max_queued_bytes: 16 * 1024 * 1024,
            max_bad_signatures: 3,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
            gap_timeout: Duration::from_secs(2),
            verify_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            max_dial_attempts_unconnected: 5,
            max_repair_attempts: 3,
            max_log_messages: 10_000,
            max_log_bytes: 32 * 1024 * 1024,
            sync_interval: Duration::from_secs(10),
            sync_batch_bytes: 32 * 1024,
            sync_low_water: 64 * 1024,
            max_sync_jobs: 4_096,
            relayed_sync_budget: 32 * 1024,
            sign_every: 64,
            broadcast_tree: false,
            deliver_before_verify: true,
            reserve_block: 1_000,
            max_profiles: 4_096,
            max_authors: 4_096,
            max_clock_skew: Duration::from_secs(60),
            max_peers: 64,
            max_known_peers: 256,
            max_addrs_per_peer: 8,
            max_exchange_peers: 32,
            auto_connect: true,
            target_peers: 8,
            max_legacy_peers: 16,
            legacy_idle_timeout: Duration::from_secs(600),
            learned_addr_ttl: Duration::from_secs(3600),
            learned_dials_per_sec: 1.0,
            learned_dial_burst: 8.0,
            dm: crate::dm::DmConfig::default(),
        }
    }
}

impl RateLimit {
    /// A limit of `frames_per_sec` (burst `frame_burst`) and `bytes_per_sec` (burst
    /// `byte_burst`).
    pub fn new(frames_per_sec: f64, frame_burst: f64, bytes_per_sec: f64, byte_burst: f64) -> Self {
        RateLimit {
            frames_per_sec,
            frame_burst,
            bytes_per_sec,
            byte_burst,
        }
    }

    /// Sets [`RateLimit::frames_per_sec`].
    pub fn frames_per_sec(mut self, frames_per_sec: f64) -> Self {
        self.frames_per_sec = frames_per_sec;
        self
    }

    /// Sets [`RateLimit::frame_burst`].
    pub fn frame_burst(mut self, frame_burst: f64) -> Self {
        self.frame_burst = frame_burst;
        self
    }

    /// Sets [`RateLimit::bytes_per_sec`].
    pub fn bytes_per_sec(mut self, bytes_per_sec: f64) -> Self {
        self.bytes_per_sec = bytes_per_sec;
        self
    }

    /// Sets [`RateLimit::byte_burst`].
    pub fn byte_burst(mut self, byte_burst: f64) -> Self {
        self.byte_burst = byte_burst;
        self
    }
}

/// Why a [`Config`] is refused by [`Config::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A limit or interval that must be positive is zero.
    #[error("{field} must not be zero")]
    Zero {
        /// The field.
        field: &'static str,
    },
    /// A duration is longer than [`Config::MAX_DURATION`].
    #[error("{field} is longer than {max:?}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The longest allowed.
        max: std::time::Duration,
    },
    /// Two settings contradict each other.
    #[error("{0}")]
    Inconsistent(&'static str),
    /// A rate limit is not a positive finite number.
    #[error("rate_limit.{field} must be a positive finite number")]
    BadRate {
        /// The field.
        field: &'static str,
    },
    /// The display name or default room is not valid under the configured limits.
    #[error("{field}: {reason}")]
    BadName {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Config {
    /// The longest duration a setting may have (100 years). [`crate::Node::new`] and
    /// [`crate::Node::restore`] clamp longer ones (e.g. `Duration::MAX` for "never") to
    /// it, so no timer arithmetic can overflow an `Instant`.
    pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

    /// Checks the configuration: limits and intervals that must be positive are,
    /// durations are at most [`Config::MAX_DURATION`], `backoff_initial <= backoff_max`,
    /// `max_text_len <= max_frame_len`, rate limits are positive and finite, and the name
    /// and default room are valid. The node runs with any config (it clamps durations
    /// and treats zero counts as one where zero would stall it); this tells an app that
    /// what it asked for is not what it gets.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, v) in [
            ("max_frame_len", self.max_frame_len),
            ("max_text_len", self.max_text_len),
            ("max_name_len", self.max_name_len),
            ("max_room_len", self.max_room_len),
            ("max_buffered_per_author", self.max_buffered_per_author),
            ("max_legacy_line", self.max_legacy_line),
            ("write_window", self.write_window),
            ("max_queued_bytes", self.max_queued_bytes),
            ("max_log_messages", self.max_log_messages),
            ("max_log_bytes", self.max_log_bytes),
            ("sync_batch_bytes", self.sync_batch_bytes),
            ("sign_every", self.sign_every as usize),
            ("reserve_block", self.reserve_block as usize),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero { field });
            }
        }
        for (field, d) in self.durations() {
            if d > Self::MAX_DURATION {
                return Err(ConfigError::TooLong {
                    field,
                    max: Self::MAX_DURATION,
                });
            }
            let busy = matches!(field, "ping_interval" | "sync_interval" | "idle_timeout");
            if busy && d.is_zero() {
                return Err(ConfigError::Zero { field });
            }
        }
        if self.backoff_initial > self.backoff_max {
            return Err(ConfigError::Inconsistent(
                "backoff_initial is longer than backoff_max",
            ));
        }
        if self.max_text_len > self.max_frame_len {
            return Err(ConfigError::Inconsistent(
                "max_text_len is larger than max_frame_len",
            ));
        }
        if let Some(r) = &self.rate_limit {
            for (field, v) in [
                ("frames_per_sec", r.frames_per_sec),
                ("frame_burst", r.frame_burst),
                ("bytes_per_sec", r.bytes_per_sec),
                ("byte_burst", r.byte_burst),
            ] {
                if !(v.is_finite() && v > 0.0) {
                    return Err(ConfigError::BadRate { field });
                }
            }
        }
        for (field, v) in [
            ("learned_dials_per_sec", self.learned_dials_per_sec),
            ("learned_dial_burst", self.learned_dial_burst),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ConfigError::BadRate { field });
            }
        }
        crate::node::valid_label(&self.name, self.max_name_len).map_err(|reason| {
            ConfigError::BadName {
                field: "name",
                reason,
            }
        })?;
        if let Some(room) = &self.default_room {
            crate::node::valid_room(room, self.max_room_len).map_err(|reason| {
                ConfigError::BadName {
                    field: "default_room",
                    reason,
                }
            })?;
        }
        Ok(())
    }

    /// The config the node runs with: durations clamped to [`Config::MAX_DURATION`],
    /// intervals that would make the node spin at least 1 ms, and
    /// `backoff_initial <= backoff_max`.
    pub(crate) fn clamped(mut self) -> Self {
        let max = Self::MAX_DURATION;
        let ms = Duration::from_millis(1);
        self.dm.ttl = self.dm.ttl.min(max);
        for d in [
            &mut self.handshake_timeout,
            &mut self.drain_timeout,
            &mut self.gap_timeout,
            &mut self.verify_timeout,
            &mut self.backoff_initial,
            &mut self.backoff_max,
            &mut self.max_clock_skew,
            &mut self.learned_addr_ttl,
        ] {
            *d = (*d).min(max);
        }
        for d in [
            &mut self.ping_interval,
            &mut self.idle_timeout,
            &mut self.sync_interval,
            &mut self.legacy_idle_timeout,
        ] {
            *d = (*d).clamp(ms, max);
        }
        self.backoff_initial = self.backoff_initial.min(self.backoff_max);
        let defaults = Config::default();
        if !(self.learned_dials_per_sec.is_finite() && self.learned_dials_per_sec >= 0.0) {
            self.learned_dials_per_sec = defaults.learned_dials_per_sec;
        }
        if !(self.learned_dial_burst.is_finite() && self.learned_dial_burst >= 0.0) {
            self.learned_dial_burst = defaults.learned_dial_burst;
        }
        self
    }

    fn durations(&self) -> [(&'static str, Duration); 12] {
        [
            ("handshake_timeout", self.handshake_timeout),
            ("ping_interval", self.ping_interval),
            ("idle_timeout", self.idle_timeout),
            ("drain_timeout", self.drain_timeout),
            ("gap_timeout", self.gap_timeout),
            ("verify_timeout", self.verify_timeout),
            ("backoff_initial", self.backoff_initial),
            ("backoff_max", self.backoff_max),
            ("sync_interval", self.sync_interval),
            ("max_clock_skew", self.max_clock_skew),
            ("legacy_idle_timeout", self.legacy_idle_timeout),
            ("learned_addr_ttl", self.learned_addr_ttl),
        ]
    }
}

/// Chainable setters, one per field: `Config::default().name("alice").max_peers(16)`.
impl Config {
    /// Sets [`Config::name`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets [`Config::max_legacy_peers`].
    pub fn max_legacy_peers(mut self, max_legacy_peers: usize) -> Self {
        self.max_legacy_peers = max_legacy_peers;
        self
    }

    /// Sets [`Config::legacy_idle_timeout`].
    pub fn legacy_idle_timeout(mut self, legacy_idle_timeout: Duration) -> Self {
        self.legacy_idle_timeout = legacy_idle_timeout;
        self
    }

    /// Sets [`Config::learned_addr_ttl`].
    pub fn learned_addr_ttl(mut self, learned_addr_ttl: Duration) -> Self {
        self.learned_addr_ttl = learned_addr_ttl;
        self
    }

    /// Sets [`Config::learned_dials_per_sec`].
    pub fn learned_dials_per_sec(mut self, learned_dials_per_sec: f64) -> Self {
        self.learned_dials_per_sec = learned_dials_per_sec;
        self
    }

    /// Sets [`Config::learned_dial_burst`].
    pub fn learned_dial_burst(mut self, learned_dial_burst: f64) -> Self {
        self.learned_dial_burst = learned_dial_burst;
        self
    }

    /// Sets [`Config::max_clock_skew`].
    pub fn max_clock_skew(mut self, max_clock_skew: Duration) -> Self {
        self.max_clock_skew = max_clock_skew;
        self
    }

    /// Sets [`Config::max_authors`].
    pub fn max_authors(mut self, max_authors: usize) -> Self {
        self.max_authors = max_authors;
        self
    }

    /// Sets [`Config::max_sync_jobs`].
    pub fn max_sync_jobs(mut self, max_sync_jobs: usize) -> Self {
        self.max_sync_jobs = max_sync_jobs;
        self
    }

    /// Sets [`Config::default_room`].
    pub fn default_room(mut self, default_room: Option<String>) -> Self {
        self.default_room = default_room;
        self
    }

    /// Sets [`Config::agent`].
    pub fn agent(mut self, agent: impl Into<String>) -> Self {
        self.agent = agent.into();
        self
    }

    /// Sets [`Config::max_frame_len`].
    pub fn max_frame_len(mut self, max_frame_len: usize) -> Self {
        self.max_frame_len = max_frame_len;
        self
    }

    /// Sets [`Config::max_text_len`].
    pub fn max_text_len(mut self, max_text_len: usize) -> Self {
        self.max_text_len = max_text_len;
        self
    }

    /// Sets [`Config::max_name_len`].
    pub fn max_name_len(mut self, max_name_len: usize) -> Self {
        self.max_name_len = max_name_len;
        self
    }

    /// Sets [`Config::max_room_len`].
    pub fn max_room_len(mut self, max_room_len: usize) -> Self {
        self.max_room_len = max_room_len;
        self
    }

    /// Sets [`Config::max_rooms`].
    pub fn max_rooms(mut self, max_rooms: usize) -> Self {
        self.max_rooms = max_rooms;
        self
    }

    /// Sets [`Config::max_buffered_per_author`].
    pub fn max_buffered_per_author(mut self, max_buffered_per_author: usize) -> Self {
        self.max_buffered_per_author = max_buffered_per_author;
        self
    }

    /// Sets [`Config::max_legacy_line`].
    pub fn max_legacy_line(mut self, max_legacy_line: usize) -> Self {
        self.max_legacy_line = max_legacy_line;
        self
    }

    /// Sets [`Config::rate_limit`].
    pub fn rate_limit(mut self, rate_limit: Option<RateLimit>) -> Self {
        self.rate_limit = rate_limit;
        self
    }

    /// Sets [`Config::write_window`].
    pub fn write_window(mut self, write_window: usize) -> Self {
        self.write_window = write_window;
        self
    }

    /// Sets [`Config::max_queued_bytes`].
    pub fn max_queued_bytes(mut self, max_queued_bytes: usize) -> Self {
        self.max_queued_bytes = max_queued_bytes;
        self
    }

    /// Sets [`Config::max_bad_signatures`].
    pub fn max_bad_signatures(mut self, max_bad_signatures: u32) -> Self {
        self.max_bad_signatures = max_bad_signatures;
        self
    }

    /// Sets [`Config::handshake_timeout`].
    pub fn handshake_timeout(mut self, handshake_timeout: Duration) -> Self {
        self.handshake_timeout = handshake_timeout;
        self
    }

    /// Sets [`Config::ping_interval`].
    pub fn ping_interval(mut self, ping_interval: Duration) -> Self {
        self.ping_interval = ping_interval;
        self
    }

    /// Sets [`Config::idle_timeout`].
    pub fn idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Sets [`Config::drain_timeout`].
    pub fn drain_timeout(mut self, drain_timeout: Duration) -> Self {
        self.drain_timeout = drain_timeout;
        self
    }

    /// Sets [`Config::gap_timeout`].
    pub fn gap_timeout(mut self, gap_timeout: Duration) -> Self {
        self.gap_timeout = gap_timeout;
        self
    }

    /// Sets [`Config::verify_timeout`].
    pub fn verify_timeout(mut self, verify_timeout: Duration) -> Self {
        self.verify_timeout = verify_timeout;
        self
    }

    /// Sets [`Config::backoff_initial`].
    pub fn backoff_initial(mut self, backoff_initial: Duration) -> Self {
        self.backoff_initial = backoff_initial;
        self
    }

    /// Sets [`Config::backoff_max`].
    pub fn backoff_max(mut self, backoff_max: Duration) -> Self {
        self.backoff_max = backoff_max;
        self
    }

    /// Sets [`Config::max_dial_attempts_unconnected`].
    pub fn max_dial_attempts_unconnected(mut self, max_dial_attempts_unconnected: u32) -> Self {
        self.max_dial_attempts_unconnected = max_dial_attempts_unconnected;
        self
    }

    /// Sets [`Config::max_repair_attempts`].
    pub fn max_repair_attempts(mut self, max_repair_attempts: u32) -> Self {
        self.max_repair_attempts = max_repair_attempts;
        self
    }

    /// Sets [`Config::max_log_messages`].
    pub fn max_log_messages(mut self, max_log_messages: usize) -> Self {
        self.max_log_messages = max_log_messages;
        self
    }

    /// Sets [`Config::max_log_bytes`].
    pub fn max_log_bytes(mut self, max_log_bytes: usize) -> Self {
        self.max_log_bytes = max_log_bytes;
        self
    }

    /// Sets [`Config::sync_interval`].
    pub fn sync_interval(mut self, sync_interval: Duration) -> Self {
        self.sync_interval = sync_interval;
        self
    }

    /// Sets [`Config::sync_batch_bytes`].
    pub fn sync_batch_bytes(mut self, sync_batch_bytes: usize) -> Self {
        self.sync_batch_bytes = sync_batch_bytes;
        self
    }

    /// Sets [`Config::sync_low_water`].
    pub fn sync_low_water(mut self, sync_low_water: usize) -> Self {
        self.sync_low_water = sync_low_water;
        self
    }

    /// Sets [`Config::relayed_sync_budget`].
    pub fn relayed_sync_budget(mut self, relayed_sync_budget: usize) -> Self {
        self.relayed_sync_budget = relayed_sync_budget;
        self
    }

    /// Sets [`Config::sign_every`].
    pub fn sign_every(mut self, sign_every: u64) -> Self {
        self.sign_every = sign_every;
        self
    }

    /// Sets [`Config::broadcast_tree`].
    pub fn broadcast_tree(mut self, on: bool) -> Self {
        self.broadcast_tree = on;
        self
    }

    /// Sets [`Config::deliver_before_verify`].
    pub fn deliver_before_verify(mut self, on: bool) -> Self {
        self.deliver_before_verify = on;
        self
    }

    /// Sets [`Config::reserve_block`].
    pub fn reserve_block(mut self, reserve_block: u64) -> Self {
        self.reserve_block = reserve_block;
        self
    }

    /// Sets [`Config::max_profiles`].
    pub fn max_profiles(mut self, max_profiles: usize) -> Self {
        self.max_profiles = max_profiles;
        self
    }

    /// Sets [`Config::max_peers`].
    pub fn max_peers(mut self, max_peers: usize) -> Self {
        self.max_peers = max_peers;
        self
    }

    /// Sets [`Config::max_known_peers`].
    pub fn max_known_peers(mut self, max_known_peers: usize) -> Self {
        self.max_known_peers = max_known_peers;
        self
    }

    /// Sets [`Config::max_addrs_per_peer`].
    pub fn max_addrs_per_peer(mut self, max_addrs_per_peer: usize) -> Self {
        self.max_addrs_per_peer = max_addrs_per_peer;
        self
    }

    /// Sets [`Config::max_exchange_peers`].
    pub fn max_exchange_peers(mut self, max_exchange_peers: usize) -> Self {
        self.max_exchange_peers = max_exchange_peers;
        self
    }

    /// Sets [`Config::auto_connect`].
    pub fn auto_connect(mut self, auto_connect: bool) -> Self {
        self.auto_connect = auto_connect;
        self
    }

    /// Sets [`Config::target_peers`].
    pub fn target_peers(mut self, target_peers: usize) -> Self {
        self.target_peers = target_peers;
        self
    }
}
