//! Limits of the blob provider and downloader.

use std::time::Duration;

/// Limits for [`super::BlobEndpoint`], [`super::Provider`] and [`super::Downloader`].
/// Every field has a sane default; change them with struct update syntax.
#[derive(Debug, Clone, PartialEq)]
pub struct BlobConfig {
    /// Largest blob the downloader accepts, in bytes (default 16 GiB).
    pub max_blob_size: u64,
    /// Downloads running at once (default 8).
    pub max_transfers: usize,
    /// Sources one download keeps (default 16).
    pub max_sources: usize,
    /// Chunk groups asked for in one request (default 64 = 1 MiB).
    pub request_groups: u64,
    /// Requests in flight to one source for one download (default 2).
    pub requests_per_source: usize,
    /// A request that makes no progress for this long is given to another source
    /// (default 15 s).
    pub request_timeout: Duration,
    /// How long a source that failed or lied gets no new request (default 1 s).
    pub retry_backoff: Duration,
    /// Lies (bad hash, wrong length, wrong size, out-of-order frame) after which a source
    /// is dropped from a download (default 2).
    pub liar_limit: u32,
    /// Failed requests in a row (timeouts, provider errors, responses cut short before
    /// their first group) after which a source is dropped from a download (default 3).
    pub timeout_limit: u32,
    /// Requests one peer may have served at once; more get `Busy` (default 4).
    pub serve_concurrency: usize,
    /// Peers served at once; requests from more get `Busy` (default 64).
    pub max_serving_peers: usize,
    /// Bytes per second served to one peer (default 1 GiB/s). High enough not to slow
    /// a single transfer on loopback or a 10 Gbit/s link on this project's benchmark box
    /// (BENCHMARKS.md: a quiet 2-core box moves a file at 300–420 MB/s over a
    /// noise+yamux ceiling of 500–900 MB/s; the former 256 MiB/s default held it at
    /// ~220 MB/s, the one before, 64 MiB/s, at ~60 MB/s), while still a per-peer bound:
    /// on a faster uplink, one peer cannot take all of it from the others being served.
    /// Lower it for metered or shared links.
    pub serve_rate: u64,
    /// Bytes one peer may receive in a burst above `serve_rate` (default 1 MiB).
    pub serve_burst: u64,
    /// Bytes handed to the runtime for one peer and not yet reported sent; the provider
    /// reads no more from storage until the runtime catches up (default 256 KiB).
    pub serve_window: usize,
    /// Requests per second one peer may send that are not served (unknown hashes, busy,
    /// bad ranges, repeated ids); the rest of those are dropped unanswered (default 50).
    /// Requests that are served do not count: `serve_concurrency` and `serve_rate`
    /// bound them, and a fast download sends one per `request_groups`.
    pub request_rate: f64,
    /// Burst of refused requests above `request_rate` (default 100).
    pub request_burst: f64,
    /// A peer that leaves sent bytes unread this long is cut off (default 30 s).
    pub stall_timeout: Duration,
    /// A download whose last source disconnected waits this long for a source to be
    /// added (a reconnect, a replaced substream) before it fails with
    /// [`super::FailReason::NoSources`] (default 10 s).
    pub source_wait: Duration,
}

impl Default for BlobConfig {
    fn default() -> Self {
        BlobConfig {
            max_blob_size: 16 << 30,
            max_transfers: 8,
            max_sources: 16,
            request_groups: 64,
            requests_per_source: 2,
            request_timeout: Duration::from_secs(15),
            retry_backoff: Duration::from_secs(1),
            liar_limit: 2,
            timeout_limit: 3,
            serve_concurrency: 4,
            max_serving_peers: 64,
            serve_rate: 1 << 30,
            serve_burst: 1 << 20,
            serve_window: 256 << 10,
            request_rate: 50.0,
            request_burst: 100.0,
            stall_timeout: Duration::from_secs(30),
            source_wait: Duration::from_secs(10),
        }
    }
}
