//! File transfer in the node task: the core's [`BlobEndpoint`] driven over one
//! `/echo/blob/1.0.0` substream per peer, with a [`FileStore`] on disk.
//!
//! **One blob substream per peer** (PROTOCOL.md section 17): of two connected peers, only
//! the one with the lower peer id opens it, on one of its open chat connections (not a
//! relayed one), and only when it has none open or opening; the other side never opens
//! one. A side that accepts a new blob substream from a peer that already has one drops
//! the old one (the opener only opens a new one once its old one is gone, so both sides
//! agree which one is live). When the connection carrying it closes, the opener opens a
//! new one on another connection of that peer, if any. Inbound blob substreams from the
//! higher peer id are refused, and so are more than [`MAX_BLOB_STREAMS_PER_CONN`] on one
//! connection.
//!
//! Chat first: blob substreams are polled after the chat connections, a few reads each
//! per turn; blob writes are flow-controlled (the provider hands out no more than its
//! window until the runtime reports bytes written).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use echo_proto::blob::{
    BlobConfig, BlobEndpoint, BlobEvent, BlobOutput, BlobStats, FailReason, Offer, TransferId,
};
use echo_proto::{ConnId, ConnInfo, PeerId, Protocol};
use futures::channel::oneshot;
use futures::{AsyncRead, AsyncWrite};
use multiaddr::Protocol as Ma;

use crate::events::{EventSender, RuntimeEvent};
use crate::files::{mime_of, offer_name, DiskHook, FileStore, FinishError, Hashed};
use crate::host::Io;
use crate::pipe::Pipe;
use crate::{Command, Error, Handle, Pending, PendingState, Reply};

/// A byte stream a blob substream can be (a yamux substream, a swarm `Stream`).
pub(crate) trait BlobIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> BlobIo for T {}

/// Progress events per transfer are at least this far apart.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Chunks read from one blob substream per turn of the node task.
const READS_PER_POLL: usize = 4;
/// Bytes queued for a peer whose blob substream is not open yet; beyond this they are
/// dropped (the requests among them time out and go elsewhere).
const WAITING_CAP: usize = 1 << 20;
/// Blob substreams one connection may bring (inbound or ours); later inbound ones are
/// refused.
pub const MAX_BLOB_STREAMS_PER_CONN: u32 = 8;
/// Finished transfers listed by [`crate::Handle::transfers`].
const FINISHED_KEPT: usize = 64;

/// File transfer settings ([`crate::Options::files`]).
#[derive(Debug, Clone)]
pub struct FilesOptions {
    /// The [`FileStore`] directory: shared files' trees, partial downloads (which survive
    /// a restart), the index.
    pub dir: PathBuf,
    /// The blob core's limits.
    pub config: BlobConfig,
    /// Called on the store's disk threads before each write and each finish
    /// ([`crate::files::FileStore::with_disk_hook`]); tests stall the disk with it.
    pub disk_hook: Option<DiskHook>,
}

impl FilesOptions {
    /// A store in `dir` with the default limits.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FilesOptions {
            dir: dir.into(),
            config: BlobConfig::default(),
            disk_hook: None,
        }
    }
}

/// Why a download stopped ([`crate::RuntimeEvent::TransferFailed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferFailure {
    /// No connected peer has the file now (every source went away or said it has none):
    /// downloading it again once a holder connects resumes it.
    NoSources,
    /// The file store failed (no space, an I/O error).
    Store,
    /// The finished file did not hash to its name on disk (the disk lost a write): the
    /// next download of it starts over.
    Check,
    /// The finished, checked file could not be moved into the download folder; the store
    /// keeps it ([`crate::files::FileStore::location`]).
    Place,
}

impl TransferFailure {
    fn of_finish(e: &FinishError) -> Self {
        match e {
            FinishError::Mismatch => TransferFailure::Check,
            FinishError::Place(_) => TransferFailure::Place,
            _ => TransferFailure::Store,
        }
    }
}

/// Where a transfer is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferState {
    /// Fetching.
    Running,
    /// Complete, verified and placed at `path`.
    Done {
        /// Where the file is.
        path: PathBuf,
    },
    /// Stopped without the file.
    Failed {
        /// Why.
        kind: TransferFailure,
        /// Why, readable.
        reason: String,
    },
}

/// A transfer, as listed by [`crate::Handle::transfers`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransferInfo {
    /// The transfer.
    pub id: TransferId,
    /// What is fetched.
    pub offer: Offer,
    /// Bytes verified and written.
    pub done: u64,
    /// The size.
    pub total: u64,
    /// Sources with a request in flight (at the last progress).
    pub sources: usize,
    /// Where it is.
    pub state: TransferState,
}

/// The app's file commands.
pub(crate) enum FilesCmd {
    /// A file hashed on a thread, to add to the store.
    Share {
        hashed: std::io::Result<Hashed>,
        reply: Reply<Offer>,
    },
    Download {
        offer: Offer,
        from: PeerId,
        dest: PathBuf,
        reply: Reply<TransferId>,
    },
    Cancel {
        id: TransferId,
        reply: Reply<()>,
    },
    List(Reply<Vec<TransferInfo>>),
}

impl FilesCmd {
    /// Answers with `e` (file transfer is off).
    pub fn refuse(self, e: Error) {
        match self {
            FilesCmd::Share { reply, .. } => drop(reply.send(Err(e))),
            FilesCmd::Download { reply, .. } => drop(reply.send(Err(e))),
            FilesCmd::Cancel { reply, .. } => drop(reply.send(Err(e))),
            FilesCmd::List(reply) => drop(reply.send(Err(e))),
        }
    }
}

/// File transfer ([`crate::Options::files`]).
impl Handle {
    /// Hashes the file at `path` (on a thread of its own, not the node task), adds it
    /// to the file store and returns the offer to post: name = the file name, mime
    /// guessed from its extension (else `application/octet-stream`). The file is read
    /// again from `path` whenever it is served.
    pub fn share_file(&self, path: std::path::PathBuf) -> Pending<Offer> {
        let (tx, rx) = oneshot::channel();
        let Some(dir) = self.0.files_dir.clone() else {
            let _ = tx.send(Err(Error::Files("file transfer is off".into())));
            return Pending(PendingState::Queued(rx));
        };
        let cmds = self.0.cmds.clone();
        let spawned = std::thread::Builder::new()
            .name("echo-hash".into())
            .spawn(move || {
                let hashed = crate::files::FileStore::hash_file(&dir, &path);
                let cmd = Command::Files(FilesCmd::Share { hashed, reply: tx });
                // Stopped: the reply is dropped, the Pending says so.
                let _ = cmds.send_blocking(cmd);
            });
        if spawned.is_err() {
            return Pending(PendingState::Stopped);
        }
        Pending(PendingState::Queued(rx))
    }

    /// Starts (or resumes, after a restart: the store keeps what was verified) fetching
    /// `offer`. Sources: `from` (the offerer) and every connected peer; peers that
    /// connect later are added. The finished file is placed in `dest_dir` under a
    /// sanitised name that overwrites nothing ([`crate::files::safe_file_name`],
    /// [`crate::files::unique_path`]). Progress and the outcome come as [`RuntimeEvent`]s.
    pub fn download(
        &self,
        offer: Offer,
        from: PeerId,
        dest_dir: std::path::PathBuf,
    ) -> Pending<TransferId> {
        self.call(|reply| {
            Command::Files(FilesCmd::Download {
                offer,
                from,
                dest: dest_dir,
                reply,
            })
        })
    }

    /// Stops a running download; what was verified stays in the store (downloading the
    /// offer again resumes). No event follows.
    pub fn cancel_transfer(&self, id: TransferId) -> Pending<()> {
        self.call(|reply| Command::Files(FilesCmd::Cancel { id, reply }))
    }

    /// Running downloads, then the last finished ones (up to 64).
    pub fn transfers(&self) -> Pending<Vec<TransferInfo>> {
        self.call(|reply| Command::Files(FilesCmd::List(reply)))
    }
}

/// A peer's blob substream.
struct Link {
    conn: ConnId,
    stream: Box<dyn BlobIo>,
    pipe: Pipe,
}

/// A chat connection the node reported up.
struct ConnState {
    peer: PeerId,
    /// May carry a blob substream (echo chat protocol, not relayed, not refused).
    usable: bool,
    /// Blob substreams it brought.
    streams: u32,
}

struct Transfer {
    offer: Offer,
    dest: PathBuf,
    done: u64,
    sources: usize,
    last_progress: Option<Instant>,
}

/// Counters of the file side, for [`crate::DriverStats`].
pub(crate) struct FileCounts {
    pub links: usize,
    pub refused: u64,
    pub dropped: u64,
    pub blob: BlobStats,
}

pub(crate) struct Files {
    own: PeerId,
    endpoint: BlobEndpoint,
    store: FileStore,
    conns: BTreeMap<ConnId, ConnState>,
    links: BTreeMap<PeerId, Link>,
    opening: BTreeMap<PeerId, ConnId>,
    /// Bytes for peers whose blob substream is not open yet.
    waiting: BTreeMap<PeerId, (Vec<Bytes>, usize)>,
    transfers: BTreeMap<TransferId, Transfer>,
    /// Complete transfers whose file the store checks and places in the background.
    checking: BTreeMap<TransferId, Transfer>,
    finished: VecDeque<TransferInfo>,
    /// Peers whose blob substream is gone, to report to the endpoint.
    gone: Vec<PeerId>,
    refused: u64,
    dropped: u64,
    /// The endpoint's next timer.
    pub wait_at: Option<Instant>,
}

fn relayed(info: &ConnInfo) -> bool {
    info.link == echo_proto::Link::Relayed
        || info.remote_addr.iter().any(|p| matches!(p, Ma::P2pCircuit))
}

fn failure(r: &FailReason) -> TransferState {
    let (kind, reason) = match r {
        FailReason::NoSources => (TransferFailure::NoSources, "no source has the file".into()),
        FailReason::Store(e) => (TransferFailure::Store, e.to_string()),
    };
    TransferState::Failed { kind, reason }
}

impl Files {
    pub fn new(own: PeerId, opts: FilesOptions) -> std::io::Result<Self> {
        Ok(Files {
            own,
            endpoint: BlobEndpoint::new(opts.config),
            store: {
                let store = FileStore::open(opts.dir)?;
                match opts.disk_hook {
                    Some(hook) => store.with_disk_hook(hook),
                    None => store,
                }
                .in_background()?
            },
            conns: BTreeMap::new(),
            links: BTreeMap::new(),
            opening: BTreeMap::new(),
            waiting: BTreeMap::new(),
            transfers: BTreeMap::new(),
            checking: BTreeMap::new(),
            finished: VecDeque::new(),
            gone: Vec::new(),
            refused: 0,
            dropped: 0,
            wait_at: None,
        })
    }

    pub fn dir(&self) -> &std::path::Path {
        self.store.dir()
    }

    pub fn counts(&self) -> FileCounts {
        FileCounts {
            links: self.links.len(),
            refused: self.refused,
            dropped: self.dropped,
            blob: self.endpoint.stats(),
        }
    }

    /// The timer fired.
    pub fn handle_timeout(&mut self, io: &mut impl Io, ev: &EventSender, now: Instant) {
        if self.wait_at.is_some_and(|at| at <= now) {
            self.endpoint.handle_timeout(&mut self.store, now);
            self.drain(io, ev, now);
        }
    }

    pub fn command(&mut self, c: FilesCmd, io: &mut impl Io, ev: &EventSender, now: Instant) {
        match c {
            FilesCmd::Share { hashed, reply } => {
                let _ = reply.send(self.share(hashed));
            }
            FilesCmd::Download {
                offer,
                from,
                dest,
                reply,
            } => {
                let _ = reply.send(self.download(offer, from, dest, now));
            }
            FilesCmd::Cancel { id, reply } => {
                let r = match self.transfers.remove(&id) {
                    Some(t) => {
                        self.store.clear_destination(&t.offer.hash);
                        self.endpoint.cancel(id);
                        self.forget_waiting();
                        Ok(())
                    }
                    None => Err(Error::Files(format!("no running transfer {}", id.0))),
                };
                let _ = reply.send(r);
            }
            FilesCmd::List(reply) => {
                let mut all: Vec<TransferInfo> = self
                    .transfers
                    .iter()
                    .chain(&self.checking)
                    .map(|(&id, t)| TransferInfo {
                        id,
                        offer: t.offer.clone(),
                        done: t.done,
                        total: t.offer.size,
                        sources: t.sources,
                        state: TransferState::Running,
                    })
                    .collect();
                all.extend(self.finished.iter().cloned());
                let _ = reply.send(Ok(all));
            }
        }
        self.drain(io, ev, now);
    }

    fn share(&mut self, hashed: std::io::Result<Hashed>) -> Result<Offer, Error> {
        let hashed = hashed.map_err(|e| Error::Files(format!("cannot read the file: {e}")))?;
        let name = offer_name(hashed.path());
        let mime = mime_of(&name).to_string();
        let (hash, size) = self
            .store
            .add_hashed(hashed)
            .map_err(|e| Error::Files(format!("cannot add the file: {e}")))?;
        Ok(Offer {
            hash,
            size,
            name,
            mime,
        })
    }

    fn download(
        &mut self,
        offer: Offer,
        from: PeerId,
        dest: PathBuf,
        now: Instant,
    ) -> Result<TransferId, Error> {
        if let Some(path) = self.store.location(&offer.hash) {
            return Err(Error::Files(format!(
                "this file is here already: {}",
                path.display()
            )));
        }
        let mut sources = BTreeSet::from([from]);
        sources.extend(self.conns.values().filter(|c| c.usable).map(|c| c.peer));
        sources.remove(&self.own);
        let id = self
            .endpoint
            .download(offer.hash, offer.size, sources, &mut self.store, now)
            .map_err(|e| Error::Files(e.to_string()))?;
        let done = self.endpoint.progress(id).map_or(0, |p| p.0);
        // Placed there by the store's finisher, off the node task.
        self.store.set_destination(&offer.hash, &dest, &offer.name);
        self.transfers.insert(
            id,
            Transfer {
                offer,
                dest,
                done,
                sources: 0,
                last_progress: None,
            },
        );
        Ok(id)
    }

    /// A chat connection is up (reported before the node hears of it).
    pub fn connected(&mut self, conn: ConnId, info: &ConnInfo, io: &mut impl Io) {
        let usable = info.protocol == Protocol::Chat && !relayed(info);
        let peer = info.peer;
        self.conns.insert(
            conn,
            ConnState {
                peer,
                usable,
                streams: 0,
            },
        );
        self.open(peer, io);
    }

    /// A chat connection closed (or the node closes it).
    pub fn conn_gone(&mut self, conn: ConnId, io: &mut impl Io, ev: &EventSender, now: Instant) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        let peer = c.peer;
        if self.opening.get(&peer) == Some(&conn) {
            self.opening.remove(&peer);
        }
        if self.links.get(&peer).is_some_and(|l| l.conn == conn) {
            self.links.remove(&peer);
            self.gone.push(peer);
        }
        self.open(peer, io);
        self.drain(io, ev, now);
    }

    /// Opens a blob substream to `peer` if it is ours to open and none is open or
    /// opening. When none can be, what waits for the peer is dropped.
    fn open(&mut self, peer: PeerId, io: &mut impl Io) {
        if self.links.contains_key(&peer) || self.opening.contains_key(&peer) {
            return;
        }
        let connected = self.conns.values().any(|c| c.peer == peer && c.usable);
        if self.own < peer {
            let ids: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| c.peer == peer && c.usable)
                .map(|(&id, _)| id)
                .collect();
            for id in ids {
                if io.open_blob(id) {
                    self.opening.insert(peer, id);
                    return;
                }
                if let Some(c) = self.conns.get_mut(&id) {
                    c.usable = false;
                }
            }
        } else if connected {
            return; // the peer opens it
        }
        if let Some((_, n)) = self.waiting.remove(&peer) {
            self.dropped += n as u64;
        }
        self.gone.push(peer);
    }

    /// Our blob substream could not be opened on `conn`.
    pub fn open_failed(&mut self, conn: ConnId, io: &mut impl Io, ev: &EventSender, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.usable = false;
        let peer = c.peer;
        if self.opening.get(&peer) == Some(&conn) {
            self.opening.remove(&peer);
            self.open(peer, io);
        }
        self.drain(io, ev, now);
    }

    /// A blob substream is up on `conn`: ours if `outbound`, else the remote's.
    pub fn attach(
        &mut self,
        conn: ConnId,
        stream: Box<dyn BlobIo>,
        outbound: bool,
        io: &mut impl Io,
        ev: &EventSender,
        now: Instant,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return; // closed meanwhile: the stream is dropped
        };
        c.streams += 1;
        let peer = c.peer;
        let ok = if outbound {
            self.opening.get(&peer) == Some(&conn)
        } else {
            peer < self.own && c.usable && c.streams <= MAX_BLOB_STREAMS_PER_CONN
        };
        if !ok {
            self.refused += 1;
            return;
        }
        self.opening.remove(&peer);
        if self.links.remove(&peer).is_some() {
            // The remote replaced its substream: the old one is dead to it.
            self.endpoint.handle_closed(peer, &mut self.store, now);
        }
        let mut link = Link {
            conn,
            stream,
            pipe: Pipe::new(),
        };
        if let Some((queued, _)) = self.waiting.remove(&peer) {
            for b in queued {
                link.pipe.queue(b);
            }
        }
        self.links.insert(peer, link);
        for &id in self.transfers.keys() {
            self.endpoint.add_source(id, peer, &mut self.store, now);
        }
        self.drain(io, ev, now);
    }

    /// Writes and reads the blob substreams (a few reads each). Returns whether anything
    /// happened.
    pub fn poll(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut impl Io,
        ev: &EventSender,
        now: Instant,
    ) -> bool {
        let mut progress = self.finished(cx, ev);
        // The disk is behind: leave the blob substreams unread (their senders wait on
        // flow control) until the writer catches up and wakes us.
        let paused = self.store.backlogged(cx.waker());
        let peers: Vec<PeerId> = self.links.keys().copied().collect();
        for peer in peers {
            let mut reads = 0;
            while let Some(link) = self.links.get_mut(&peer) {
                let w = link.pipe.poll_write(cx, &mut link.stream);
                progress |= w.progress;
                let sent = std::mem::take(&mut link.pipe.sent);
                let dead = w.failed.is_some();
                let read = if dead || paused || reads == READS_PER_POLL {
                    Poll::Pending
                } else {
                    link.pipe.poll_read(cx, &mut link.stream)
                };
                if sent > 0 {
                    self.endpoint.handle_sent(peer, sent, &mut self.store, now);
                }
                let more = matches!(read, Poll::Ready(Ok(Some(_))));
                let dead = match read {
                    Poll::Ready(Ok(Some(data))) => {
                        reads += 1;
                        progress = true;
                        self.endpoint.handle_data(peer, &data, &mut self.store, now);
                        dead
                    }
                    Poll::Ready(_) => true,
                    Poll::Pending => dead,
                };
                if dead {
                    progress = true;
                    self.close(peer);
                }
                self.drain(io, ev, now);
                if dead || !more {
                    break;
                }
                if reads == READS_PER_POLL {
                    // More may wait: after the chat connections have had their turn.
                    cx.waker().wake_by_ref();
                    break;
                }
            }
        }
        progress
    }

    /// Reports downloads whose background check and placing ended. Returns whether any
    /// did.
    fn finished(&mut self, cx: &mut Context<'_>, ev: &EventSender) -> bool {
        let done = self.store.take_finished(Some(cx.waker()));
        let any = !done.is_empty();
        for (hash, r) in done {
            let ids: Vec<TransferId> = self
                .checking
                .iter()
                .filter(|(_, t)| t.offer.hash == hash)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                let Some(t) = self.checking.remove(&id) else {
                    continue;
                };
                let state = match &r {
                    Ok(path) => TransferState::Done { path: path.clone() },
                    Err(e) => TransferState::Failed {
                        kind: TransferFailure::of_finish(e),
                        reason: e.to_string(),
                    },
                };
                self.finish(id, t, state, ev);
            }
        }
        any
    }

    /// Drops `peer`'s blob substream (a reset) and tells the endpoint.
    fn close(&mut self, peer: PeerId) {
        if let Some(link) = self.links.remove(&peer) {
            self.dropped += link.pipe.discarded;
            self.gone.push(peer);
        }
    }

    /// Queues `data` for `peer`.
    fn transmit(&mut self, peer: PeerId, data: Bytes) {
        if let Some(link) = self.links.get_mut(&peer) {
            link.pipe.queue(data);
            return;
        }
        // Not connected yet (a download from a peer being dialed) or its substream is
        // being opened: kept until it is; requests that wait too long time out in the
        // core and go to other sources.
        let (queued, n) = self.waiting.entry(peer).or_default();
        if *n + data.len() <= WAITING_CAP {
            *n += data.len();
            queued.push(data);
        } else {
            self.dropped += data.len() as u64;
        }
    }

    /// Drops what waits for peers that are not connected (a transfer ended: only
    /// downloads send to peers not connected).
    fn forget_waiting(&mut self) {
        let conns = &self.conns;
        let dropped: usize = self
            .waiting
            .iter()
            .filter(|(p, _)| !conns.values().any(|c| c.peer == **p))
            .map(|(_, (_, n))| n)
            .sum();
        self.dropped += dropped as u64;
        self.waiting
            .retain(|p, _| conns.values().any(|c| c.peer == *p));
    }

    /// Drains the endpoint's outputs.
    fn drain(&mut self, io: &mut impl Io, ev: &EventSender, now: Instant) {
        loop {
            while let Some(peer) = self.gone.pop() {
                if !self.links.contains_key(&peer) {
                    self.endpoint.handle_closed(peer, &mut self.store, now);
                }
            }
            match self.endpoint.poll_output() {
                BlobOutput::Transmit { peer, data } => self.transmit(peer, data),
                BlobOutput::Close { peer, .. } => {
                    // Garbage or stalled: that connection carries no more blob streams.
                    if let Some(c) = self.links.get(&peer).map(|l| l.conn) {
                        self.conns.entry(c).and_modify(|c| c.usable = false);
                    }
                    self.close(peer);
                    // Ours to open: on another connection, if there is one.
                    self.open(peer, io);
                }
                BlobOutput::Event(e) => self.event(e, ev, now),
                BlobOutput::Wait(at) if self.gone.is_empty() => {
                    self.wait_at = at;
                    break;
                }
                _ => {}
            }
        }
    }

    fn event(&mut self, e: BlobEvent, ev: &EventSender, now: Instant) {
        match e {
            BlobEvent::Progress {
                transfer,
                verified,
                size,
                sources_active,
            } => {
                let Some(t) = self.transfers.get_mut(&transfer) else {
                    return;
                };
                t.done = verified;
                t.sources = sources_active;
                if t.last_progress
                    .is_some_and(|at| now.saturating_duration_since(at) < PROGRESS_EVERY)
                {
                    return;
                }
                t.last_progress = Some(now);
                let e = RuntimeEvent::TransferProgress {
                    id: transfer,
                    hash: t.offer.hash,
                    done: verified,
                    total: size,
                    sources: sources_active,
                };
                ev.send_runtime(e, false);
            }
            BlobEvent::Done { transfer, hash } => {
                let Some(mut t) = self.transfers.remove(&transfer) else {
                    return;
                };
                if self.store.is_finishing(&hash) {
                    // Checked and placed off the node task: see `finished`.
                    t.done = t.offer.size;
                    self.checking.insert(transfer, t);
                    return;
                }
                let state = match self.store.place(&hash, &t.dest, &t.offer.name) {
                    Ok(path) => TransferState::Done { path },
                    Err(e) => TransferState::Failed {
                        kind: TransferFailure::Place,
                        reason: format!("cannot place the file: {e}"),
                    },
                };
                self.finish(transfer, t, state, ev);
            }
            BlobEvent::Failed {
                transfer, reason, ..
            } => {
                if let Some(t) = self.transfers.remove(&transfer) {
                    self.store.clear_destination(&t.offer.hash);
                    self.finish(transfer, t, failure(&reason), ev);
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self, id: TransferId, t: Transfer, state: TransferState, ev: &EventSender) {
        let hash = t.offer.hash;
        let e = match &state {
            TransferState::Done { path } => RuntimeEvent::TransferDone {
                id,
                hash,
                path: path.clone(),
            },
            TransferState::Failed { kind, reason } => RuntimeEvent::TransferFailed {
                id,
                hash,
                kind: *kind,
                reason: reason.clone(),
            },
            TransferState::Running => return,
        };
        ev.send_runtime(e, true);
        self.forget_waiting();
        let done = if matches!(state, TransferState::Done { .. }) {
            t.offer.size
        } else {
            t.done
        };
        if self.finished.len() == FINISHED_KEPT {
            self.finished.pop_front();
        }
        self.finished.push_back(TransferInfo {
            id,
            total: t.offer.size,
            offer: t.offer,
            done,
            sources: 0,
            state,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echo_proto::blob::MAX_NAME_LEN;

    #[test]
    fn offer_names_are_valid_and_mime_is_guessed() {
        let long = "é".repeat(300) + ".png";
        let name = offer_name(std::path::Path::new(&long));
        assert!(name.len() <= MAX_NAME_LEN && !name.is_empty());
        assert_eq!(offer_name(std::path::Path::new("/")), "file");
        assert_eq!(
            offer_name(std::path::Path::new("/x/a\u{7}b.txt")),
            "a_b.txt"
        );
        assert_eq!(mime_of("photo.JPG"), "image/jpeg");
        assert_eq!(mime_of("noext"), "application/octet-stream");
    }
}
