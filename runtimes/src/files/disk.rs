//! Store work off the node task ([`super::FileStore::in_background`]).
//!
//! A write can stall for hundreds of milliseconds when the kernel throttles a process
//! that dirties pages faster than the disk takes them, and a finished download is synced
//! and hashed again (about 1.4 s per GiB here). Done on the node task, either would hold
//! up every chat message behind it. So:
//!
//! * chunk groups and tree nodes go to one **writer thread**, in order; a group's log
//!   record is still appended only after its bytes are written, so a crash loses at most
//!   what was queued (those groups are fetched again);
//! * the bytes queued are counted: above [`HIGH_WATER`] the runtime stops reading blob
//!   substreams (so the senders wait, through the substreams' flow control, not the node
//!   task) until the writer is back under [`LOW_WATER`], and wakes the node task then;
//! * a **finish** (sync, hash the file again, move it into place) runs on a thread of its
//!   own once the writer has written everything before it; its result comes back through
//!   [`Disk::take_finished`]. That thread also syncs, reads back and hashes each
//!   download's written prefix while the download goes on (module `check`), so the
//!   finish itself has only the tail left;
//! * index files are written by the writer thread, in order, newest last.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;

use echo_proto::blob::{BlobHash, GroupSet};
use futures::task::AtomicWaker;

use super::check::{Check, Progress, Track};

/// Above this many queued bytes the runtime stops reading blob substreams.
pub const HIGH_WATER: usize = 8 << 20;
/// ... and starts again below this.
pub const LOW_WATER: usize = 4 << 20;

/// One write, with what to record once it is done.
pub(super) struct WriteJob {
    pub hash: BlobHash,
    pub file: Arc<File>,
    pub at: u64,
    pub bytes: Vec<u8>,
    /// The group log and the group to append to it after the bytes are written.
    pub log: Option<(Arc<File>, u64)>,
}

/// The files of a download whose every group is written, and where it goes.
pub(super) struct Finish {
    pub hash: BlobHash,
    pub size: u64,
    pub data: Arc<File>,
    pub part: PathBuf,
    pub obao: PathBuf,
    pub groups: PathBuf,
    pub complete_data: PathBuf,
    pub complete_obao: PathBuf,
    /// The folder and the (peer-supplied) name to place it under, if known.
    pub dest: Option<(PathBuf, String)>,
}

/// What the disk threads are about to do (for a [`DiskHook`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiskWork {
    /// Write a chunk group or a tree node.
    Write,
    /// Sync, check and place a finished download.
    Finish,
    /// Sync and read back the written start of a download in progress.
    Check,
}

/// Called on the disk threads before each piece of [`DiskWork`].
#[derive(Clone)]
pub struct DiskHook(pub Arc<dyn Fn(DiskWork) + Send + Sync>);

impl std::fmt::Debug for DiskHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DiskHook")
    }
}

/// A finish's outcome: the blob, its size, and where its bytes now are (or why not).
pub type Finished = (BlobHash, u64, Result<PathBuf, FinishError>);

/// Why a finished download is not in place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FinishError {
    /// The bytes on disk do not hash to the blob's name (the disk lost a write): the
    /// group log is removed, so the next download of it starts over.
    #[error("the downloaded file does not hash to its name (disk error?)")]
    Mismatch,
    /// It could not be moved into the download folder (it stays in the store).
    #[error("cannot place the file: {0}")]
    Place(String),
    /// Syncing or reading it failed.
    #[error("storage: {0}")]
    Io(String),
}

enum Job {
    Write(WriteJob),
    Finish(Finish),
    Index {
        path: PathBuf,
        text: String,
    },
    /// A download into `data` (`size` bytes) is open; its file holds `have` already.
    Open {
        hash: BlobHash,
        data: Arc<File>,
        size: u64,
        have: GroupSet,
    },
    /// A download is dropped: forget its track and check.
    Forget(BlobHash),
}

/// What the writer hands the finisher thread, in order.
enum ForFinisher {
    Finish(Finish),
    Progress(Progress),
    Forget(BlobHash),
}

#[derive(Debug, Default)]
struct State {
    /// Bytes queued and not yet written.
    backlog: usize,
    /// Jobs queued, plus finishes running.
    busy: usize,
    /// The node task waits for the backlog to fall under [`LOW_WATER`].
    paused: bool,
    /// Threads blocked in [`Disk::flush`] (only then is the condition variable woken).
    flushing: usize,
    /// Blobs whose writes failed, with the first error.
    failed: BTreeMap<BlobHash, String>,
    finished: Vec<Finished>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    idle: Condvar,
    waker: AtomicWaker,
    written: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic on the writer thread is a bug; the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `jobs` jobs are done: `bytes` fewer queued. (One lock per batch, and wake-ups
    /// only for someone waiting: a 1 GiB download is 65,536 writes.)
    fn done(&self, jobs: usize, bytes: usize) {
        let mut s = self.lock();
        s.backlog -= bytes;
        s.busy -= jobs;
        let wake = s.paused && s.backlog < LOW_WATER;
        if wake {
            s.paused = false;
        }
        let idle = s.busy == 0 && s.flushing > 0;
        drop(s);
        if idle {
            self.idle.notify_all();
        }
        if wake {
            self.waker.wake();
        }
    }
}

/// The writer thread and its queue.
#[derive(Debug)]
pub(super) struct Disk {
    tx: Option<mpsc::Sender<Job>>,
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Disk {
    /// Starts the writer and finisher threads; the finisher reads back each download's
    /// written prefix every `step` bytes (see module `check`).
    pub fn spawn(hook: Option<DiskHook>, step: u64) -> io::Result<Disk> {
        let (tx, rx) = mpsc::channel::<Job>();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            idle: Condvar::new(),
            waker: AtomicWaker::new(),
            written: AtomicU64::new(0),
        });
        let (ftx, frx) = mpsc::channel::<ForFinisher>();
        let s = shared.clone();
        let h = hook.clone();
        let finisher = std::thread::Builder::new()
            .name("echo-finish".into())
            .spawn(move || {
                // The checks of downloads in progress; at most one per open download
                // (removed by its finish or its forget).
                let mut checks: HashMap<BlobHash, Check> = HashMap::new();
                let mut buf = vec![0u8; 1 << 18];
                while let Ok(job) = frx.recv() {
                    match job {
                        ForFinisher::Progress(p) => {
                            if let Some(h) = &h {
                                (h.0)(DiskWork::Check);
                            }
                            check(&mut checks, p, &mut buf);
                        }
                        ForFinisher::Forget(hash) => {
                            checks.remove(&hash);
                        }
                        ForFinisher::Finish(f) => {
                            if let Some(h) = &h {
                                (h.0)(DiskWork::Finish);
                            }
                            let (hash, size) = (f.hash, f.size);
                            let check = checks.remove(&hash).filter(|c| c.is_of(&f.data));
                            finished(&s, hash, size, finish(f, check, &mut buf));
                        }
                    }
                }
            })?;
        let s = shared.clone();
        let writer = std::thread::Builder::new()
            .name("echo-disk".into())
            .spawn(move || {
                // The groups written to each open download (removed by its finish or
                // its forget).
                let mut tracks: HashMap<BlobHash, Track> = HashMap::new();
                // Jobs are taken in batches (up to 64 without blocking), their
                // accounting done once per batch.
                while let Ok(first) = rx.recv() {
                    let (mut jobs, mut bytes) = (0, 0);
                    let more = std::iter::from_fn(|| rx.try_recv().ok());
                    for job in std::iter::once(first).chain(more).take(64) {
                        if let (Some(h), Job::Write(_)) = (&hook, &job) {
                            (h.0)(DiskWork::Write);
                        }
                        if let Some(n) = run(job, &s, &ftx, &mut tracks, step) {
                            jobs += 1;
                            bytes += n;
                        }
                    }
                    s.done(jobs, bytes);
                }
            })?;
        Ok(Disk {
            tx: Some(tx),
            shared,
            threads: vec![writer, finisher],
        })
    }

    /// Queues `job` (`bytes` of it count against the backlog); fails, queuing nothing,
    /// if a write of `failed_of`'s blob failed before (the error is taken if `take`).
    fn send(
        &self,
        job: Job,
        bytes: usize,
        failed_of: Option<(&BlobHash, bool)>,
    ) -> Result<(), String> {
        {
            let mut s = self.shared.lock();
            if let Some((hash, take)) = failed_of {
                let e = match take {
                    true => s.failed.remove(hash),
                    false => s.failed.get(hash).cloned(),
                };
                if let Some(e) = e {
                    return Err(e);
                }
            }
            s.backlog += bytes;
            s.busy += 1;
        }
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if !sent {
            // The writer is gone (it panicked): nothing will be written.
            self.shared.done(1, bytes);
        }
        Ok(())
    }

    /// Queues a write; fails if an earlier write of the same blob failed.
    pub fn write(&self, w: WriteJob) -> Result<(), String> {
        let (n, hash) = (w.bytes.len(), w.hash);
        self.send(Job::Write(w), n, Some((&hash, false)))
    }

    /// Queues a finish, to run once everything queued before it is written.
    pub fn finish(&self, f: Finish) -> Result<(), String> {
        let hash = f.hash;
        self.send(Job::Finish(f), 0, Some((&hash, true)))
    }

    /// Queues an index file's new text (written to `path.tmp`, synced, renamed).
    pub fn index(&self, path: PathBuf, text: String) {
        let n = text.len();
        let _ = self.send(Job::Index { path, text }, n, None);
    }

    /// Blocks until every queued job and running finish is done.
    pub fn flush(&self) {
        let mut s = self.shared.lock();
        s.flushing += 1;
        while s.busy > 0 {
            s = self.shared.idle.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.flushing -= 1;
    }

    /// Forgets a blob's write error (it is being dropped or started over).
    pub fn clear(&self, hash: &BlobHash) {
        self.shared.lock().failed.remove(hash);
    }

    /// A download of `size` bytes into `data` is open (or reopened); its file holds the
    /// groups `have` already. Its written prefix is then checked as it grows.
    pub fn open(&self, hash: BlobHash, data: Arc<File>, size: u64, have: GroupSet) {
        let job = Job::Open {
            hash,
            data,
            size,
            have,
        };
        let _ = self.send(job, 0, None);
    }

    /// A download is dropped: its prefix is no longer tracked or checked.
    pub fn forget(&self, hash: BlobHash) {
        let _ = self.send(Job::Forget(hash), 0, None);
    }

    /// Whether too much waits to be written: then `waker` is woken once it is not.
    pub fn backlogged(&self, waker: &Waker) -> bool {
        self.shared.waker.register(waker);
        let mut s = self.shared.lock();
        s.paused = s.backlog >= HIGH_WATER;
        s.paused
    }

    /// Finishes done since the last call; `waker` is woken when the next one is.
    pub fn take_finished(&self, waker: Option<&Waker>) -> Vec<Finished> {
        if let Some(w) = waker {
            self.shared.waker.register(w);
        }
        std::mem::take(&mut self.shared.lock().finished)
    }

    /// Chunk groups written by the writer thread.
    pub fn groups_written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }
}

impl Drop for Disk {
    /// Writes what is queued and finishes what was finished (a clean shutdown loses
    /// nothing), then stops the threads.
    fn drop(&mut self) {
        // The writer ends when its queue closes, and the finisher when the writer drops
        // its sender.
        drop(self.tx.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Does one job; returns the bytes it took off the backlog, or `None` for a finish
/// (accounted for by the finisher when it is done).
fn run(
    job: Job,
    s: &Shared,
    finisher: &mpsc::Sender<ForFinisher>,
    tracks: &mut HashMap<BlobHash, Track>,
    step: u64,
) -> Option<usize> {
    match job {
        Job::Write(w) => {
            let n = w.bytes.len();
            let r = super::write_at(&w.file, &w.bytes, w.at).and_then(|()| match &w.log {
                // Recorded only after the bytes are in the file.
                Some((log, group)) => (&**log).write_all(&group.to_le_bytes()),
                None => Ok(()),
            });
            match r {
                Ok(()) if w.log.is_some() => {
                    s.written.fetch_add(1, Ordering::Relaxed);
                    let group = w.log.as_ref().map_or(0, |l| l.1);
                    let progress = tracks
                        .get_mut(&w.hash)
                        .and_then(|t| t.written(&w.hash, &w.file, group));
                    if let Some(p) = progress {
                        let _ = finisher.send(ForFinisher::Progress(p));
                    }
                }
                Ok(()) => {}
                Err(e) => {
                    s.lock()
                        .failed
                        .entry(w.hash)
                        .or_insert_with(|| e.to_string());
                }
            }
            Some(n)
        }
        Job::Index { path, text } => {
            let n = text.len();
            // A lost index write only costs serving blobs after a restart; the next
            // change writes it again.
            let _ = write_index(&path, &text);
            Some(n)
        }
        Job::Finish(f) => {
            // Everything queued before it is written: the finisher takes it from here,
            // while the writer goes on with other downloads.
            tracks.remove(&f.hash);
            if let Err(mpsc::SendError(ForFinisher::Finish(f))) =
                finisher.send(ForFinisher::Finish(f))
            {
                let gone = FinishError::Io("the finisher thread is gone".into());
                finished(s, f.hash, f.size, Err(gone));
            }
            None
        }
        Job::Open {
            hash,
            data,
            size,
            have,
        } => {
            tracks.insert(hash, Track::new(data, size, have, step));
            Some(0)
        }
        Job::Forget(hash) => {
            tracks.remove(&hash);
            let _ = finisher.send(ForFinisher::Forget(hash));
            Some(0)
        }
    }
}

/// Reads back the start of a download up to where `p` says it is written.
fn check(checks: &mut HashMap<BlobHash, Check>, p: Progress, buf: &mut [u8]) {
    let c = checks
        .entry(p.hash)
        .or_insert_with(|| Check::new(p.data.clone()));
    if !c.is_of(&p.data) {
        // A download started over, in a new file.
        *c = Check::new(p.data.clone());
    }
    if c.advance(p.upto, buf).is_err() {
        // The finish reads it all.
        checks.remove(&p.hash);
    }
}

/// Records a finish's outcome and wakes the node task.
fn finished(s: &Shared, hash: BlobHash, size: u64, r: Result<PathBuf, FinishError>) {
    s.lock().finished.push((hash, size, r));
    s.done(1, 0);
    s.waker.wake();
}

/// Writes `text` to `path` atomically (temporary file, sync, rename).
pub(super) fn write_index(path: &std::path::Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(tmp, path)
}

/// Syncs a finished download, checks that the bytes on disk hash to its name, and moves
/// it into place. Returns where its bytes are. On a hash mismatch the group log is
/// removed, so the download starts over.
///
/// `check` is what was already read back of this file while the download ran (see
/// module `check`); the rest is read here. `buf` is scratch space for the reads.
pub(super) fn finish(
    f: Finish,
    check: Option<Check>,
    buf: &mut [u8],
) -> Result<PathBuf, FinishError> {
    let err = |e: io::Error| FinishError::Io(e.to_string());
    f.data.sync_all().map_err(err)?;
    let check = check.unwrap_or_else(|| Check::new(f.data.clone()));
    let hash = check.finalize(f.size, buf).map_err(err)?;
    drop(f.data);
    if hash != f.hash {
        // The disk lost a write: start the download over.
        let _ = fs::remove_file(&f.groups);
        return Err(FinishError::Mismatch);
    }
    fs::rename(&f.part, &f.complete_data).map_err(err)?;
    fs::rename(&f.obao, &f.complete_obao).map_err(err)?;
    let _ = fs::remove_file(&f.groups);
    let Some((dir, name)) = f.dest else {
        return Ok(f.complete_data);
    };
    super::move_into(&f.complete_data, &dir, &name).map_err(|e| FinishError::Place(e.to_string()))
}
