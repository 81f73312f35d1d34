//! Outputs, events, errors and counters of the blob module.

use std::time::Instant;

use bytes::Bytes;
use libp2p_identity::PeerId;

use super::download::TransferId;
use super::frame::FrameError;
use super::hash::BlobHash;
use super::store::StoreError;

/// What the blob core asks of its runtime (drain with `poll_output` until `Wait`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BlobOutput {
    /// Write `data` on the blob substream to `peer` (then report it with `handle_sent`).
    Transmit {
        /// Destination.
        peer: PeerId,
        /// Encoded frames.
        data: Bytes,
    },
    /// Reset the blob substream to `peer` (the chat connection stays up).
    Close {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: CloseReason,
    },
    /// Something for the app.
    Event(BlobEvent),
    /// Nothing more now; call `handle_timeout` at this instant (if any).
    Wait(Option<Instant>),
}

/// Why the core closes a peer's blob substream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent bytes that are not blob frames.
    Corrupt(FrameError),
    /// The peer left the bytes we sent it unread for `stall_timeout`.
    Stalled,
}

/// Progress and results of downloads.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobEvent {
    /// More groups verified and written.
    Progress {
        /// The download.
        transfer: TransferId,
        /// Bytes verified so far (resumed ones included).
        verified: u64,
        /// Blob size.
        size: u64,
        /// Sources with a request in flight.
        sources_active: usize,
    },
    /// The blob is complete and verified in storage.
    Done {
        /// The download.
        transfer: TransferId,
        /// The blob.
        hash: BlobHash,
    },
    /// The download stopped without the blob.
    Failed {
        /// The download.
        transfer: TransferId,
        /// The blob.
        hash: BlobHash,
        /// Why.
        reason: FailReason,
    },
    /// A source was removed from a download.
    SourceDropped {
        /// The download.
        transfer: TransferId,
        /// The source.
        peer: PeerId,
        /// Why.
        reason: DropReason,
    },
}

/// Why a download failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    /// Every source was dropped before the blob was complete (after a disconnect: and
    /// none was added back within `source_wait`).
    NoSources,
    /// Storage failed.
    Store(StoreError),
}

/// Why a source was dropped from a download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// It lied `liar_limit` times; the last lie is given.
    Lied(LieKind),
    /// It timed out `timeout_limit` times.
    TimedOut,
    /// It said it does not have the blob.
    DontHave,
    /// Its substream closed.
    Disconnected,
}

/// How a source's response failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LieKind {
    /// A tree node or chunk group does not hash to what its parent says.
    BadHash,
    /// A chunk group has the wrong number of bytes.
    WrongLength,
    /// The response header announces another size than the download's.
    WrongSize,
    /// A frame the response order does not allow here.
    Unexpected,
}

/// Why a download could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The blob is larger than `max_blob_size`.
    #[error("blob of {0} bytes is over the size limit")]
    TooLarge(u64),
    /// `max_transfers` downloads are running.
    #[error("too many downloads running")]
    TooManyTransfers,
    /// This blob is already being downloaded.
    #[error("already downloading this blob")]
    AlreadyRunning,
    /// No source given.
    #[error("no sources")]
    NoSources,
    /// Storage refused (no space, I/O).
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// Counters of a [`super::BlobEndpoint`] (also kept by the provider and downloader).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlobStats {
    /// Requests accepted for serving.
    pub requests_served: u64,
    /// Requests for blobs this store does not have (answered `DontHave`).
    pub unknown_refused: u64,
    /// Requests refused with `Busy` (per-peer concurrency, peer count).
    pub busy_refused: u64,
    /// Requests refused as malformed (ranges outside the blob, reused id).
    pub bad_requests: u64,
    /// Requests dropped unanswered (refused ones over the per-peer request rate).
    pub requests_dropped: u64,
    /// Requests being served now.
    pub active_requests: usize,
    /// Peers being served now.
    pub serving_peers: usize,
    /// Peers cut off for not reading.
    pub stalled_peers: u64,
    /// Chunk-group bytes served.
    pub bytes_served: u64,
    /// Downloads running.
    pub transfers: usize,
    /// Requests of running downloads in flight.
    pub requests_in_flight: usize,
    /// Intervals the running downloads track (verified and in-flight groups): their
    /// state grows with this, not with the blob size.
    pub tracked_runs: usize,
    /// Chunk groups verified and written by downloads.
    pub groups_verified: u64,
    /// Chunk-group bytes received (verified or not).
    pub bytes_received: u64,
    /// Responses that failed verification.
    pub lies_caught: u64,
    /// Requests that timed out (or failed on the provider's side).
    pub timeouts: u64,
    /// Responses with a missing frame (the rest of the range was asked for again).
    pub gaps: u64,
    /// Response frames for no request in flight (late, after a cancel), ignored.
    pub unsolicited_frames: u64,
    /// Substreams closed because the peer sent bytes that are not blob frames.
    pub corrupt_streams: u64,
}
