//! The read-back check of a download, run while the download goes on.
//!
//! A finished download counts as complete only once its file is synced and the bytes
//! read back from it hash to the blob's name (module `disk`, `finish`). Done all at the
//! end, that pass (sync ~0.5 s and read + hash ~0.3 s per GiB here) is a fifth of a fast
//! transfer, with the transfer's cores idle. So in background mode:
//!
//! * the writer thread keeps, per open download, the set of groups in its file (those
//!   the log named when it was opened, then each one it writes) in a [`Track`]. Each
//!   time the run of groups from the start grows by [`STEP`] bytes it sends the finisher
//!   thread a [`Progress`];
//! * the finisher syncs the file and reads back and hashes that prefix from it (a
//!   [`Check`]), so at the finish only the tail is left to sync and read.
//!
//! (On Unix; elsewhere the whole pass stays at the end.) What is checked does not change: every byte of the file, read from the file after a
//! sync, before the download counts as complete. Groups written before a restart are in
//! the track from the log, so they are read back like the rest. A file is never written
//! again where it was read (each group is written once, after verification); a download
//! started over opens a new file, and a check made on another file is not used.

use std::fs::File;
use std::io;
use std::sync::Arc;

use echo_proto::blob::{group_count, BlobHash, GroupSet, GROUP_SIZE};

/// How far the checked prefix moves at a time (bytes), unless a test says otherwise.
pub(super) const STEP: u64 = 16 << 20;

/// Sent by the writer to the finisher: the first `upto` bytes of `data` are written.
pub(super) struct Progress {
    pub hash: BlobHash,
    pub data: Arc<File>,
    pub upto: u64,
}

/// The groups written to one download's file (writer thread).
pub(super) struct Track {
    data: Arc<File>,
    size: u64,
    have: GroupSet,
    /// The prefix (bytes) last sent as a [`Progress`].
    sent: u64,
    /// Send one each time the prefix grew by this many bytes.
    step: u64,
}

impl Track {
    /// A download of `size` bytes into `data`, whose file already holds `have`.
    pub fn new(data: Arc<File>, size: u64, have: GroupSet, step: u64) -> Track {
        Track {
            data,
            size,
            have,
            sent: 0,
            step,
        }
    }

    /// Group `group` of `file` is written: returns a [`Progress`] for the finisher if
    /// the written prefix moved on by a step ([`STEP`]). A write to another file (a download
    /// started over) is not this track's.
    pub fn written(&mut self, hash: &BlobHash, file: &Arc<File>, group: u64) -> Option<Progress> {
        // Elsewhere reads and writes at an offset move one shared cursor of the file, so
        // the finisher must not read while the writer writes: all is checked at the end.
        if cfg!(not(unix)) || !Arc::ptr_eq(file, &self.data) || group >= group_count(self.size) {
            return None;
        }
        self.have.insert(group..group + 1);
        let prefix = match self.have.iter().next() {
            Some(r) if r.start == 0 => (r.end * GROUP_SIZE).min(self.size),
            _ => 0,
        };
        if prefix < self.sent + self.step {
            return None;
        }
        self.sent = prefix;
        Some(Progress {
            hash: *hash,
            data: self.data.clone(),
            upto: prefix,
        })
    }
}

/// A prefix of one download's file, synced, read back and hashed (finisher thread).
pub(super) struct Check {
    data: Arc<File>,
    done: u64,
    hasher: blake3::Hasher,
}

impl Check {
    /// Nothing checked yet of `data`.
    pub fn new(data: Arc<File>) -> Check {
        Check {
            data,
            done: 0,
            hasher: blake3::Hasher::new(),
        }
    }

    /// Whether this check is of `data` (the same open file).
    pub fn is_of(&self, data: &Arc<File>) -> bool {
        Arc::ptr_eq(&self.data, data)
    }

    /// Syncs the file, then reads back and hashes it up to `upto`. The pages read back
    /// are then dropped from the page cache (where the platform allows).
    pub fn advance(&mut self, upto: u64, buf: &mut [u8]) -> io::Result<()> {
        self.data.sync_data()?;
        let from = self.done;
        self.read_to(upto, buf)?;
        drop_cached(&self.data, from, upto);
        Ok(())
    }

    /// Reads back and hashes the file from where the check is up to `upto`.
    pub fn read_to(&mut self, upto: u64, buf: &mut [u8]) -> io::Result<()> {
        while self.done < upto {
            let n = (upto - self.done).min(buf.len() as u64) as usize;
            super::read_at(&self.data, &mut buf[..n], self.done)?;
            self.hasher.update(&buf[..n]);
            self.done += n as u64;
        }
        Ok(())
    }

    /// The hash of the file, read to its end (`size`).
    pub fn finalize(mut self, size: u64, buf: &mut [u8]) -> io::Result<BlobHash> {
        self.read_to(size, buf)?;
        Ok(BlobHash(*self.hasher.finalize().as_bytes()))
    }
}

/// Tells the kernel that bytes `from..to` of `file` (synced and checked) will not be
/// read again soon, so their pages go back to the free pool instead of the page cache
/// growing by the whole download. Writing a large file otherwise takes a fresh page for
/// every 4 KiB; on a virtual machine whose free memory the host has taken back, each one
/// costs a fault in the host (here a 1 GiB write took 5.3 s into fresh pages and 0.3 s
/// into reused ones). Only advice: its failure changes nothing.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn drop_cached(file: &File, from: u64, to: u64) {
    use rustix::fs::{fadvise, Advice};
    if let Some(len) = std::num::NonZeroU64::new(to.saturating_sub(from)) {
        let _ = fadvise(file, from, Some(len), Advice::DontNeed);
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn drop_cached(_file: &File, _from: u64, _to: u64) {}
