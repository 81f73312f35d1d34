//! File transfer: content-addressed blobs with verified, resumable, multi-source
//! downloads (`/echo/blob/1.0.0`).
//!
//! A blob is named by its BLAKE3 root hash ([`BlobHash`]). Its bytes are split into
//! 16 KiB *chunk groups* ([`GROUP_SIZE`]); a response to a request for a range of groups
//! carries the BLAKE3 tree nodes on the path from the root to those groups followed by
//! the groups themselves (the `bao-tree` response order, block size 2^4 chunks), so the
//! downloader checks every group against the root hash before it writes a byte.
//!
//! The module is sans-IO like [`crate::Node`]:
//!
//! * [`Provider`] answers requests from a [`BlobStore`] (per-peer concurrency and rate
//!   limits, stalled requesters dropped).
//! * [`Downloader`] fetches blobs from a set of sources: disjoint ranges per source,
//!   every group verified as it arrives, failed and timed-out ranges re-assigned, lying
//!   sources counted and dropped, resume from the groups the store already verified.
//! * [`BlobEndpoint`] holds both behind one `handle_*`/[`BlobEndpoint::poll_output`]
//!   loop, which is what a runtime drives: one blob substream per peer, bytes in with
//!   [`BlobEndpoint::handle_data`], [`BlobOutput::Transmit`] bytes out.
//!
//! Storage is the embedder's ([`BlobStore`]; [`MemStore`] keeps everything in memory for
//! tests). The core keeps no whole-blob buffer: its memory per transfer is bounded by the
//! limits in [`BlobConfig`], whatever the blob's size.

mod config;
mod download;
mod endpoint;
mod event;
mod frame;
mod groups;
mod hash;
mod offer;
mod provider;
mod store;

pub use config::BlobConfig;
pub use download::{Downloader, TransferId};
pub use endpoint::BlobEndpoint;
pub use event::{
    BlobEvent, BlobOutput, BlobStats, CloseReason, DropReason, FailReason, LieKind, StartError,
};
pub use frame::{
    BlobDecoder, BlobFrame, ErrorCode, FrameError, GroupRange, MAX_FRAME_LEN, MAX_RANGES,
};
pub use groups::GroupSet;
pub use hash::{compute_outboard, group_count, outboard_size, BlobHash, GROUP_CHUNKS, GROUP_SIZE};
pub use offer::{Offer, OfferError, MAX_MIME_LEN, MAX_NAME_LEN};
pub use provider::Provider;
pub use store::{BlobStore, MemStore, StoreError};

/// The libp2p protocol name of the blob substream.
pub const PROTOCOL_NAME: &str = "/echo/blob/1.0.0";
