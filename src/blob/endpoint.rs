//! Provider and downloader behind one input/output loop, for a runtime.

use std::collections::BTreeMap;
use std::time::Instant;

use libp2p_identity::PeerId;

use super::config::BlobConfig;
use super::download::{Downloader, TransferId};
use super::event::{BlobOutput, BlobStats, CloseReason, StartError};
use super::frame::{BlobDecoder, BlobFrame};
use super::hash::BlobHash;
use super::store::BlobStore;

/// What a runtime drives for file transfer: a [`Provider`](super::Provider) and a
/// [`Downloader`] sharing one blob substream per peer.
///
/// The run loop is the chat node's: feed inputs (`handle_*`, `download`, `cancel`),
/// drain [`BlobEndpoint::poll_output`] until [`BlobOutput::Wait`], sleep until that
/// instant or the next input, then call [`BlobEndpoint::handle_timeout`]. Every input
/// takes the store, which the runtime owns (a file store for the app).
///
/// On the wire, both directions of one substream carry frames: requests and cancels
/// go to the provider, response frames to the downloader.
#[derive(Debug)]
pub struct BlobEndpoint {
    provider: super::Provider,
    downloader: Downloader,
    decoders: BTreeMap<PeerId, BlobDecoder>,
    corrupt_streams: u64,
    closes: Vec<BlobOutput>,
}

impl BlobEndpoint {
    /// An endpoint with these limits.
    pub fn new(cfg: BlobConfig) -> Self {
        BlobEndpoint {
            provider: super::Provider::new(cfg.clone()),
            downloader: Downloader::new(cfg),
            decoders: BTreeMap::new(),
            corrupt_streams: 0,
            closes: Vec::new(),
        }
    }

    /// Bytes read from the blob substream of `peer`, in any chunking.
    pub fn handle_data(
        &mut self,
        peer: PeerId,
        data: &[u8],
        store: &mut impl BlobStore,
        now: Instant,
    ) {
        let decoder = self.decoders.entry(peer).or_default();
        decoder.extend(data);
        loop {
            let Some(decoder) = self.decoders.get_mut(&peer) else {
                return;
            };
            match decoder.decode() {
                Ok(None) => return,
                Ok(Some(frame @ (BlobFrame::Request { .. } | BlobFrame::Cancel { .. }))) => {
                    self.provider.handle_frame(peer, frame, store, now)
                }
                Ok(Some(frame)) => self.downloader.handle_frame(peer, frame, store, now),
                Err(e) => {
                    self.corrupt_streams += 1;
                    self.closes.push(BlobOutput::Close {
                        peer,
                        reason: CloseReason::Corrupt(e),
                    });
                    self.handle_closed(peer, store, now);
                    return;
                }
            }
        }
    }

    /// The runtime wrote `n` bytes of `peer`'s transmits.
    pub fn handle_sent(
        &mut self,
        peer: PeerId,
        n: usize,
        store: &mut impl BlobStore,
        now: Instant,
    ) {
        self.provider.handle_sent(peer, n, store, now);
    }

    /// The blob substream (or the connection) to `peer` closed.
    pub fn handle_closed(&mut self, peer: PeerId, store: &mut impl BlobStore, now: Instant) {
        self.decoders.remove(&peer);
        self.provider.handle_closed(peer);
        self.downloader.handle_closed(peer, store, now);
    }

    /// A timer set by [`BlobOutput::Wait`] expired (early or late calls are harmless).
    pub fn handle_timeout(&mut self, store: &mut impl BlobStore, now: Instant) {
        self.provider.handle_timeout(store, now);
        self.downloader.handle_timeout(store, now);
    }

    /// Starts a download; see [`Downloader::start`].
    pub fn download(
        &mut self,
        hash: BlobHash,
        size: u64,
        sources: impl IntoIterator<Item = PeerId>,
        store: &mut impl BlobStore,
        now: Instant,
    ) -> Result<TransferId, StartError> {
        self.downloader.start(hash, size, sources, store, now)
    }

    /// Adds a source to a running download.
    pub fn add_source(
        &mut self,
        transfer: TransferId,
        peer: PeerId,
        store: &mut impl BlobStore,
        now: Instant,
    ) {
        self.downloader.add_source(transfer, peer, store, now);
    }

    /// Stops a download (the verified part stays in the store).
    pub fn cancel(&mut self, transfer: TransferId) {
        self.downloader.cancel(transfer);
    }

    /// Bytes verified so far and the size of a running download.
    pub fn progress(&self, transfer: TransferId) -> Option<(u64, u64)> {
        self.downloader.progress(transfer)
    }

    /// Counters of both sides.
    pub fn stats(&self) -> BlobStats {
        let p = self.provider.stats();
        BlobStats {
            corrupt_streams: self.corrupt_streams,
            ..merge(p, self.downloader.stats())
        }
    }

    /// The next output; [`BlobOutput::Wait`] with the earliest timer when drained.
    pub fn poll_output(&mut self) -> BlobOutput {
        if let Some(close) = self.closes.pop() {
            return close;
        }
        let a = match self.provider.poll_output() {
            BlobOutput::Wait(a) => a,
            other => return other,
        };
        match self.downloader.poll_output() {
            BlobOutput::Wait(b) => BlobOutput::Wait(a.into_iter().chain(b).min()),
            other => other,
        }
    }
}

/// Provider counters from `p`, downloader counters from `d`.
fn merge(p: BlobStats, d: BlobStats) -> BlobStats {
    BlobStats {
        transfers: d.transfers,
        requests_in_flight: d.requests_in_flight,
        tracked_runs: d.tracked_runs,
        groups_verified: d.groups_verified,
        bytes_received: d.bytes_received,
        lies_caught: d.lies_caught,
        timeouts: d.timeouts,
        gaps: d.gaps,
        unsolicited_frames: d.unsolicited_frames,
        ..p
    }
}
