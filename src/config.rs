//! Node configuration: every limit, timer and the RNG seed, with documented defaults.

use std::time::Duration;

/// Per-connection token bucket limits on what a peer may send us.
#[derive(Debug, Clone, Copy, PartialEq)]
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
#[derive(Debug, Clone)]
pub struct Config {
    /// Seed of the node's RNG (ping nonces, hello nonces, backoff jitter). Give each node
    /// its own seed (e.g. from `rand::random()` at start-up); tests fix it to replay runs.
    pub seed: u64,
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
    /// An author signs at least every this many messages even inside a burst, so a
    /// receiver never holds more unverified messages than this (default 64).
    pub sign_every: u64,
    /// Sequence numbers reserved at a time; each reservation is an
    /// [`crate::Event::SeqReserved`] the app must persist (default 1,000).
    pub reserve_block: u64,
    /// Other authors' signed profiles (display names) remembered (default 4,096).
    pub max_profiles: usize,

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 0,
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
            sign_every: 64,
            reserve_block: 1_000,
            max_profiles: 4_096,
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
        }
    }
}
