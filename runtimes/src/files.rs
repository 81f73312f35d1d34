//! Files for the core's file transfer: a [`BlobStore`] on disk that survives `kill -9`
//! mid-download, and the rules for turning a peer-supplied file name into a path that
//! stays inside the download folder and overwrites nothing.
//!
//! The core (`echo_proto::blob`) never touches a file: it calls a [`BlobStore`]. This is
//! the one an app on a real file system uses. Layout under its directory:
//!
//! * `partial/<hash>.part`: the bytes of a download in progress, a sparse file of the
//!   blob's size; `partial/<hash>.obao`: its verified tree nodes (64-byte slots);
//!   `partial/<hash>.groups`: the chunk groups written so far, one little-endian `u64`
//!   per group, appended *after* the group's bytes are written. After a crash the log
//!   names only groups whose bytes reached the file (a torn last record is ignored), so a
//!   resumed download fetches just the rest.
//! * `complete/<hash>.obao`: the tree of a blob it can serve, and `index`: one line per
//!   such blob, `<hash> <size> <path of its bytes>`, replaced atomically on each change.
//!
//! A finished download is hashed again from the file before it counts as complete (so a
//! disk that lost a write is caught; in background mode most of it is read back while
//! the download runs, module `check`), then moved to `complete/<hash>.data`, from where
//! [`FileStore::place`] moves it to the user's download folder under a safe, unique name.
//!
//! A store is synchronous (every [`BlobStore`] call does its file work before it
//! returns) unless made [`FileStore::in_background`]: then writes go to a writer thread
//! and a finish (sync, hash again, place) to a thread of its own, so a caller that also
//! carries chat (the runtime's node task) never waits for the disk (module `disk`).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use echo_proto::blob::{
    compute_outboard, group_count, outboard_size, BlobHash, BlobStore, GroupSet, StoreError,
    GROUP_SIZE,
};

#[cfg(unix)]
use std::os::unix::fs::FileExt;
use std::sync::Arc;

mod check;
mod disk;
use disk::{Disk, Finish};
pub use disk::{DiskHook, DiskWork, FinishError, HIGH_WATER, LOW_WATER};

/// A blob this store can serve: its size and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Complete {
    size: u64,
    path: PathBuf,
}

/// A download in progress.
#[derive(Debug)]
struct Partial {
    size: u64,
    data: Arc<File>,
    outboard: Arc<File>,
    log: Arc<File>,
}

/// A file hashed by [`FileStore::hash_file`], not yet added to the store.
#[derive(Debug)]
pub struct Hashed {
    hash: BlobHash,
    size: u64,
    path: PathBuf,
    /// Its tree, in a temporary file of the store.
    tree: PathBuf,
}

impl Hashed {
    /// The file's hash.
    pub fn hash(&self) -> BlobHash {
        self.hash
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file (canonical path).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A [`BlobStore`] in a directory (see the module docs for the layout).
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    complete: BTreeMap<BlobHash, Complete>,
    partial: BTreeMap<BlobHash, Partial>,
    /// Bytes to leave free on the disk when accepting a download.
    pub reserve: u64,
    /// Chunk groups written since this store was opened.
    written: u64,
    /// The data and tree files of the complete blob served last, kept open: a response
    /// reads them once per chunk group and tree node.
    serving: Option<(BlobHash, File, File)>,
    /// The writer and finisher threads, in background mode.
    disk: Option<Disk>,
    /// Finishes running in the background: blob and size.
    finishing: BTreeMap<BlobHash, u64>,
    /// Where finished downloads go ([`FileStore::set_destination`]).
    dest: BTreeMap<BlobHash, (PathBuf, String)>,
    /// Given to the disk threads ([`FileStore::with_disk_hook`]).
    hook: Option<DiskHook>,
    /// How often the finisher reads back a download's written start (bytes).
    check_step: u64,
}

fn io_err(e: io::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

fn hex_hash(s: &str) -> Option<BlobHash> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let h = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(h, 16).ok()?;
    }
    Some(BlobHash(out))
}

#[cfg(unix)]
fn read_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    f.read_exact_at(buf, offset)
}

#[cfg(unix)]
fn write_at(f: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    f.write_all_at(buf, offset)
}

#[cfg(not(unix))]
fn read_at(mut f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::io::Seek;
    f.seek(io::SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

#[cfg(not(unix))]
fn write_at(mut f: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    use std::io::Seek;
    f.seek(io::SeekFrom::Start(offset))?;
    f.write_all(buf)
}

/// Free bytes for an unprivileged user on the file system holding `dir`, where the
/// platform tells.
#[cfg(unix)]
fn free_space(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(not(unix))]
fn free_space(_dir: &Path) -> Option<u64> {
    None
}

impl FileStore {
    /// Opens (creating if needed) a store in `dir` and reads its index.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<FileStore> {
        let dir = dir.into();
        fs::create_dir_all(dir.join("partial"))?;
        fs::create_dir_all(dir.join("complete"))?;
        let mut complete = BTreeMap::new();
        match fs::read_to_string(dir.join("index")) {
            Ok(text) => {
                for line in text.lines() {
                    let mut parts = line.splitn(3, ' ');
                    let (Some(h), Some(size), Some(path)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    if let (Some(hash), Ok(size)) = (hex_hash(h), size.parse()) {
                        let path = PathBuf::from(path);
                        complete.insert(hash, Complete { size, path });
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(FileStore {
            dir,
            complete,
            partial: BTreeMap::new(),
            reserve: 64 << 20,
            written: 0,
            serving: None,
            disk: None,
            finishing: BTreeMap::new(),
            dest: BTreeMap::new(),
            hook: None,
            check_step: check::STEP,
        })
    }

    /// Has the disk threads of [`FileStore::in_background`] (call it before) call
    /// `hook` before each write, each finish and each read-back of a download's
    /// start ([`DiskWork`]). Tests use it to stall the disk; it may
    /// block, and then only the disk work waits.
    pub fn with_disk_hook(mut self, hook: DiskHook) -> FileStore {
        self.hook = Some(hook);
        self
    }

    /// Moves the store's disk work off the caller's thread: chunk groups and tree nodes
    /// are written by a writer thread, in order, and [`BlobStore::finish`] only queues
    /// the finish (sync, hash again, move into place: see
    /// [`FileStore::set_destination`]); its outcome comes from
    /// [`FileStore::take_finished`], and until then the blob is not served. Reads of a
    /// partial blob, [`BlobStore::open_partial`] and [`FileStore::forget`] first wait for
    /// what is queued. A `kill -9` loses the writes still queued (at most about
    /// [`HIGH_WATER`] bytes when the caller honours [`FileStore::backlogged`]); their
    /// groups are not in the log, so they are fetched again.
    ///
    /// Meanwhile the finisher thread syncs and reads back each download's written start
    /// as it grows (16 MiB at a time), so a finish has only the tail left to check.
    pub fn in_background(mut self) -> io::Result<FileStore> {
        self.disk = Some(Disk::spawn(self.hook.clone(), self.check_step)?);
        Ok(self)
    }

    /// Reads back the written start of a download every `step` bytes (call before
    /// [`FileStore::in_background`]).
    #[cfg(test)]
    fn with_check_step(mut self, step: u64) -> FileStore {
        self.check_step = step;
        self
    }

    /// Where the finished download of `hash` goes, in background mode: moved into `dir`
    /// under a safe, unique version of `name` ([`unique_path`]) by the finisher thread.
    pub fn set_destination(&mut self, hash: &BlobHash, dir: &Path, name: &str) {
        self.dest
            .insert(*hash, (dir.to_path_buf(), name.to_string()));
    }

    /// Forgets where `hash` was to go (its download was cancelled).
    pub fn clear_destination(&mut self, hash: &BlobHash) {
        self.dest.remove(hash);
    }

    /// Whether a finish of `hash` is running in the background.
    pub fn is_finishing(&self, hash: &BlobHash) -> bool {
        self.finishing.contains_key(hash)
    }

    /// In background mode, whether more than [`HIGH_WATER`] bytes wait to be written:
    /// then stop feeding the store blob data; `waker` is woken when under [`LOW_WATER`].
    pub fn backlogged(&self, waker: &std::task::Waker) -> bool {
        self.disk.as_ref().is_some_and(|d| d.backlogged(waker))
    }

    /// Background finishes done since the last call: the blob and where its bytes are
    /// (placed, if a destination was set), or why it failed (a failed one starts over
    /// on the next download). A finished blob is served from then on. `waker` is woken
    /// when the next one is done.
    pub fn take_finished(
        &mut self,
        waker: Option<&std::task::Waker>,
    ) -> Vec<(BlobHash, Result<PathBuf, FinishError>)> {
        let Some(disk) = &self.disk else {
            return Vec::new();
        };
        let done = disk.take_finished(waker);
        let mut out = Vec::with_capacity(done.len());
        let mut changed = false;
        for (hash, size, r) in done {
            self.finishing.remove(&hash);
            self.dest.remove(&hash);
            // Checked, but not moved to the folder: it stays servable from the store.
            let path = match &r {
                Ok(path) => Some(path.clone()),
                Err(FinishError::Place(_)) => Some(self.path("complete", &hash, "data")),
                Err(_) => None,
            };
            if let Some(path) = path {
                self.complete.insert(hash, Complete { size, path });
                changed = true;
            }
            out.push((hash, r));
        }
        if changed {
            // In background mode this only queues the write.
            let _ = self.save_index();
        }
        out
    }

    /// Waits for the queued disk work (background mode).
    fn flush(&self) {
        if let Some(d) = &self.disk {
            d.flush();
        }
    }

    fn path(&self, kind: &str, hash: &BlobHash, ext: &str) -> PathBuf {
        self.dir.join(kind).join(format!("{}.{ext}", hash.to_hex()))
    }

    /// Writes the index (to a temporary file, then renamed over the old one; in
    /// background mode, by the writer thread).
    fn save_index(&self) -> io::Result<()> {
        let mut text = String::new();
        for (hash, c) in &self.complete {
            let Some(path) = c.path.to_str() else {
                continue; // not representable in the index: served until restart only
            };
            text.push_str(&format!("{} {} {}\n", hash.to_hex(), c.size, path));
        }
        let path = self.dir.join("index");
        match &self.disk {
            Some(d) => {
                d.index(path, text);
                Ok(())
            }
            None => disk::write_index(&path, &text),
        }
    }

    /// Makes the file at `path` servable: hashes it and stores its tree. Returns its
    /// hash and size. The file is read again when served; if it changes meanwhile, the
    /// downloader catches the difference (as a lying source) and takes it elsewhere.
    pub fn add_file(&mut self, path: &Path) -> io::Result<(BlobHash, u64)> {
        let hashed = FileStore::hash_file(&self.dir, path)?;
        self.add_hashed(hashed)
    }

    /// The slow half of [`FileStore::add_file`], which needs no store: hashes the file
    /// at `path` and writes its tree to a temporary file in the store at `dir`. Run it
    /// on any thread, then give the result to [`FileStore::add_hashed`].
    pub fn hash_file(dir: &Path, path: &Path) -> io::Result<Hashed> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = fs::canonicalize(path)?;
        let f = File::open(&path)?;
        let size = f.metadata()?.len();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir
            .join("complete")
            .join(format!("adding-{}-{n}.obao", std::process::id()));
        let out = File::create(&tmp)?;
        let hashed = compute_outboard(io::BufReader::new(f), size, |slot, pair| {
            write_at(&out, pair, slot * 64)
        })
        .and_then(|hash| out.sync_all().map(|()| hash));
        match hashed {
            Ok(hash) => Ok(Hashed {
                hash,
                size,
                path,
                tree: tmp,
            }),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Makes a file hashed by [`FileStore::hash_file`] servable. Returns its hash and
    /// size.
    pub fn add_hashed(&mut self, h: Hashed) -> io::Result<(BlobHash, u64)> {
        fs::rename(&h.tree, self.path("complete", &h.hash, "obao"))?;
        self.complete.insert(
            h.hash,
            Complete {
                size: h.size,
                path: h.path,
            },
        );
        self.save_index()?;
        Ok((h.hash, h.size))
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Chunk groups written since this store was opened (what a resumed download
    /// fetched again can be read from this).
    pub fn groups_written(&self) -> u64 {
        self.written + self.disk.as_ref().map_or(0, Disk::groups_written)
    }

    /// Where the bytes of a complete blob are.
    pub fn location(&self, hash: &BlobHash) -> Option<&Path> {
        self.complete.get(hash).map(|c| c.path.as_path())
    }

    /// Moves a finished download to `dir` under a safe, unique version of `name` (see
    /// [`unique_path`]) and serves it from there. Returns the new path.
    pub fn place(&mut self, hash: &BlobHash, dir: &Path, name: &str) -> io::Result<PathBuf> {
        let Some(c) = self.complete.get(hash).cloned() else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such blob"));
        };
        self.serving = None;
        let dest = move_into(&c.path, dir, name)?;
        self.complete.insert(
            *hash,
            Complete {
                size: c.size,
                path: dest.clone(),
            },
        );
        self.save_index()?;
        Ok(dest)
    }

    /// Stops serving a blob (its bytes stay where they are) and drops a partial download.
    pub fn forget(&mut self, hash: &BlobHash) -> io::Result<()> {
        self.flush();
        if let Some(d) = &self.disk {
            d.clear(hash);
            d.forget(*hash);
        }
        self.dest.remove(hash);
        self.partial.remove(hash);
        self.serving = None;
        for (kind, ext) in [
            ("partial", "part"),
            ("partial", "obao"),
            ("partial", "groups"),
            ("complete", "obao"),
        ] {
            match fs::remove_file(self.path(kind, hash, ext)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if self.complete.remove(hash).is_some() {
            self.save_index()?;
        }
        Ok(())
    }

    fn partial(&mut self, hash: &BlobHash) -> Result<&mut Partial, StoreError> {
        self.partial.get_mut(hash).ok_or(StoreError::NotFound)
    }

    /// The open data and tree files of complete blob `hash` (opened on first use, kept
    /// until another blob is served); `None` if it is not complete or cannot be opened.
    fn serving(&mut self, hash: &BlobHash) -> Option<(&File, &File)> {
        if self.serving.as_ref().is_none_or(|(h, ..)| h != hash) {
            let c = self.complete.get(hash)?;
            let data = File::open(&c.path).ok()?;
            let tree = File::open(self.path("complete", hash, "obao")).ok()?;
            self.serving = Some((*hash, data, tree));
        }
        self.serving.as_ref().map(|(_, d, t)| (d, t))
    }

    /// The groups a log names, within a blob of `groups` groups (a torn last record is
    /// ignored, and so is anything out of range).
    fn read_log(path: &Path, groups: u64) -> io::Result<GroupSet> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .filter(|&g| g < groups)
            .map(|g| g..g + 1)
            .collect())
    }
}

impl BlobStore for FileStore {
    fn complete_size(&self, hash: &BlobHash) -> Option<u64> {
        self.complete.get(hash).map(|c| c.size)
    }

    fn read_parent(&mut self, hash: &BlobHash, slot: u64) -> Result<[u8; 64], StoreError> {
        let mut buf = [0u8; 64];
        if let Some((_, tree)) = self.serving(hash) {
            read_at(tree, &mut buf, slot * 64).map_err(|_| StoreError::NotFound)?;
            return Ok(buf);
        }
        self.flush();
        let f = File::open(self.path("partial", hash, "obao")).map_err(|_| StoreError::NotFound)?;
        read_at(&f, &mut buf, slot * 64).map_err(|_| StoreError::NotFound)?;
        Ok(buf)
    }

    fn read_data(
        &mut self,
        hash: &BlobHash,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), StoreError> {
        if let Some((data, _)) = self.serving(hash) {
            return read_at(data, buf, offset).map_err(io_err);
        }
        if self.complete.contains_key(hash) {
            return Err(StoreError::NotFound);
        }
        self.flush();
        let p = self.partial(hash)?;
        read_at(&p.data, buf, offset).map_err(io_err)
    }

    fn open_partial(&mut self, hash: &BlobHash, size: u64) -> Result<GroupSet, StoreError> {
        if self.finishing.contains_key(hash) {
            return Err(StoreError::Io("this file is being checked".into()));
        }
        self.flush();
        if let Some(d) = &self.disk {
            d.clear(hash);
        }
        let groups = group_count(size);
        let (part, obao, log) = (
            self.path("partial", hash, "part"),
            self.path("partial", hash, "obao"),
            self.path("partial", hash, "groups"),
        );
        let have = FileStore::read_log(&log, groups).map_err(io_err)?;
        let existing = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if existing != size {
            // New (or of another size: start over). Check the space first.
            let need = size + outboard_size(size) + self.reserve;
            if free_space(&self.dir.join("partial")).is_some_and(|free| free < need) {
                return Err(StoreError::NoSpace);
            }
        }
        let open = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)
        };
        let data = open(&part).map_err(io_err)?;
        let outboard = open(&obao).map_err(io_err)?;
        let have = if existing != size {
            data.set_len(size).map_err(io_err)?;
            outboard.set_len(outboard_size(size)).map_err(io_err)?;
            File::create(&log).map_err(io_err)?;
            GroupSet::new()
        } else {
            have
        };
        let log = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log)
            .map_err(io_err)?;
        let data = Arc::new(data);
        if let Some(d) = &self.disk {
            d.open(*hash, data.clone(), size, have.clone());
        }
        self.partial.insert(
            *hash,
            Partial {
                size,
                data,
                outboard: Arc::new(outboard),
                log: Arc::new(log),
            },
        );
        Ok(have)
    }

    fn write_parent(
        &mut self,
        hash: &BlobHash,
        slot: u64,
        pair: &[u8; 64],
    ) -> Result<(), StoreError> {
        let p = self.partial.get(hash).ok_or(StoreError::NotFound)?;
        match &self.disk {
            Some(d) => d
                .write(disk::WriteJob {
                    hash: *hash,
                    file: p.outboard.clone(),
                    at: slot * 64,
                    bytes: pair.to_vec(),
                    log: None,
                })
                .map_err(StoreError::Io),
            None => write_at(&p.outboard, pair, slot * 64).map_err(io_err),
        }
    }

    fn write_group(&mut self, hash: &BlobHash, group: u64, data: &[u8]) -> Result<(), StoreError> {
        let p = self.partial.get(hash).ok_or(StoreError::NotFound)?;
        if group >= group_count(p.size) {
            return Err(StoreError::NotFound);
        }
        if let Some(d) = &self.disk {
            return d
                .write(disk::WriteJob {
                    hash: *hash,
                    file: p.data.clone(),
                    at: group * GROUP_SIZE,
                    bytes: data.to_vec(),
                    log: Some((p.log.clone(), group)),
                })
                .map_err(StoreError::Io);
        }
        write_at(&p.data, data, group * GROUP_SIZE).map_err(io_err)?;
        // Recorded only after the bytes are in the file: a crash in between costs this
        // one group again, never a group that is not there.
        (&*p.log).write_all(&group.to_le_bytes()).map_err(io_err)?;
        self.written += 1;
        Ok(())
    }

    fn finish(&mut self, hash: &BlobHash) -> Result<(), StoreError> {
        let p = self.partial.remove(hash).ok_or(StoreError::NotFound)?;
        let f = Finish {
            hash: *hash,
            size: p.size,
            data: p.data,
            part: self.path("partial", hash, "part"),
            obao: self.path("partial", hash, "obao"),
            groups: self.path("partial", hash, "groups"),
            complete_data: self.path("complete", hash, "data"),
            complete_obao: self.path("complete", hash, "obao"),
            dest: None,
        };
        if let Some(d) = &self.disk {
            let f = Finish {
                dest: self.dest.get(hash).cloned(),
                ..f
            };
            d.finish(f).map_err(StoreError::Io)?;
            self.finishing.insert(*hash, p.size);
            return Ok(());
        }
        let mut buf = vec![0u8; 1 << 16];
        let path = disk::finish(f, None, &mut buf).map_err(|e| StoreError::Io(e.to_string()))?;
        self.complete.insert(*hash, Complete { size: p.size, path });
        self.save_index().map_err(io_err)
    }
}

/// Moves the file at `from` into `dir` under a safe, unique version of `name` (see
/// [`unique_path`]). Returns the new path.
fn move_into(from: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let (dest, _placeholder) = unique_path(dir, name)?;
    // Rename over the empty placeholder `unique_path` created (same directory entry, so
    // no other writer can have taken the name); copy across file systems.
    if fs::rename(from, &dest).is_err() {
        fs::copy(from, &dest)?;
        fs::remove_file(from)?;
    }
    Ok(dest)
}

/// The offer name of a shared file: its file name, control characters replaced, cut to
/// [`echo_proto::blob::MAX_NAME_LEN`] bytes.
pub(crate) fn offer_name(path: &std::path::Path) -> String {
    let raw = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name = String::new();
    for ch in raw.chars() {
        let ch = if ch.is_control() { '_' } else { ch };
        if name.len() + ch.len_utf8() > echo_proto::blob::MAX_NAME_LEN {
            break;
        }
        name.push(ch);
    }
    if name.is_empty() {
        name.push_str("file");
    }
    name
}

/// The MIME type of a file name, from its extension.
pub(crate) fn mime_of(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "md" | "log" => "text/plain",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "csv" => "text/csv",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

/// Longest file name made by [`safe_file_name`], in bytes (most file systems allow 255).
pub const MAX_FILE_NAME: usize = 200;

/// Names Windows reserves in any directory, with or without an extension.
const RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// A file name from a peer made safe to create in a download folder: only its last
/// path component is kept (no separators of any platform, so no `..`, no absolute
/// paths), control characters and the characters Windows forbids become `_`, leading
/// dots (hidden files, `..`) and trailing dots and spaces go, a name Windows reserves
/// (`CON`, `nul.txt`, …) gets a `_` prefix, and a name longer than [`MAX_FILE_NAME`]
/// bytes is cut, keeping its extension. What is left, if nothing, is `file`.
pub fn safe_file_name(name: &str) -> String {
    let last = name
        .rsplit(['/', '\\'])
        .find(|s| !s.trim().is_empty())
        .unwrap_or("");
    let mut s: String = last
        .chars()
        .map(|c| {
            if c.is_control()
                || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
            {
                '_'
            } else {
                c
            }
        })
        .collect();
    s = s
        .trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' '])
        .to_string();
    if s.is_empty() {
        return "file".into();
    }
    let stem = s.split('.').next().unwrap_or("");
    if RESERVED
        .iter()
        .any(|r| r.eq_ignore_ascii_case(stem.trim_end()))
    {
        s.insert(0, '_');
    }
    if s.len() > MAX_FILE_NAME {
        let (base, ext) = split_ext(&s);
        let ext: String = ext.chars().take(16).collect();
        let mut cut = MAX_FILE_NAME.saturating_sub(ext.len());
        while !base.is_char_boundary(cut.min(base.len())) {
            cut -= 1;
        }
        s = format!("{}{ext}", &base[..cut.min(base.len())]);
    }
    s
}

/// `("name", ".ext")`, or `(name, "")` without an extension.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    }
}

/// A path in `dir` for a file named `name` (made safe with [`safe_file_name`]) that no
/// existing file has: `name.ext`, else `name (1).ext`, `name (2).ext`, … The file is
/// created empty (so a concurrent caller cannot take the same name); the caller writes
/// or renames over it. Returns the path and the created file.
pub fn unique_path(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let safe = safe_file_name(name);
    let (base, ext) = split_ext(&safe);
    for n in 0..10_000u32 {
        let candidate = if n == 0 {
            safe.clone()
        } else {
            format!("{base} ({n}){ext}")
        };
        let path = dir.join(&candidate);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("10,000 files named like {safe:?} already"),
    ))
}

#[cfg(test)]
mod tests;
