//! The data dir: identity key, SQLite history (WAL), a lock file, logs.
//!
//! Layout:
//! * `identity.key`: the node's ed25519 keypair, protobuf-encoded (libp2p's format),
//!   mode 0600; created on first run, so the peer id is stable;
//! * `history.sqlite3` (+ `-wal`, `-shm`): what echo's persistence contract asks for:
//!   room messages (wire bytes), sequence reservations, joined rooms, display name;
//! * `lock`: held while an instance uses the dir (a second instance is refused);
//! * `logs/echo-chat.<date>.log`: the log (never written to the terminal).
//!
//! Writes go through a [`Writer`] thread that batches them in transactions
//! (`synchronous=NORMAL`, so a killed process loses nothing committed and a power cut
//! at most the last moment). A sequence reservation is committed with
//! `synchronous=FULL` and acknowledged before the app goes on.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::thread;

use anyhow::{anyhow, bail, Context as _, Result};
use echo_proto::{Identity, Message, Restore, RestoreRoom};

use crate::model::now_ms;

pub mod dm;
use futures::channel::oneshot;
use rusqlite::{params, Connection, OptionalExtension};

/// The data dir, locked for this process.
pub struct DataDir {
    /// Its path.
    pub path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates (if needed) and locks `path`.
    pub fn open(path: &Path) -> Result<DataDir> {
        if path.exists() && !path.is_dir() {
            bail!("data dir {} exists but is not a directory", path.display());
        }
        fs::create_dir_all(path)
            .with_context(|| format!("cannot create data dir {}", path.display()))?;
        let lock_path = path.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot use data dir {}", path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => bail!(
                "data dir {} is in use by another echo-chat; give this one another \
                 --name or --data-dir",
                path.display()
            ),
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()))
            }
        }
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// Loads the identity key, creating it on first run.
    pub fn identity(&self) -> Result<Identity> {
        let path = self.path.join("identity.key");
        match fs::read(&path) {
            Ok(bytes) if bytes.is_empty() => bail!(
                "identity key {} is empty (cut short by a crash or a full disk?); restore \
                 it from a backup, or move it aside to start with a new identity (a new \
                 peer id)",
                path.display()
            ),
            Ok(bytes) => Identity::from_protobuf_encoding(&bytes).map_err(|e| {
                // libp2p's own words (e.g. about cargo features) mean nothing to a user.
                tracing::warn!(error = %e, path = %path.display(), "identity key unreadable");
                anyhow!(
                    "identity key {} is corrupt: it is not an ed25519 key in libp2p's \
                     format; restore it from a backup, or move it aside to start with a \
                     new identity (a new peer id)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Identity::generate();
                let bytes = key.to_protobuf_encoding();
                let tmp = self.path.join("identity.key.tmp");
                let _ = fs::remove_file(&tmp);
                let mut opts = OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                let mut f = opts
                    .open(&tmp)
                    .with_context(|| format!("cannot write {}", tmp.display()))?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                fs::rename(&tmp, &path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(key)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The history database's path.
    pub fn db_path(&self) -> PathBuf {
        self.path.join("history.sqlite3")
    }

    /// The log directory.
    pub fn log_dir(&self) -> PathBuf {
        self.path.join("logs")
    }
}

/// What was persisted, loaded at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// For [`echo_runtime::Options::restore`].
    pub restore: Restore,
    /// The stored display name, if any.
    pub name: Option<String>,
    /// Stored messages that could not be decoded: skipped, and left in the database.
    pub skipped: usize,
    /// Downloads that had not finished: resumed at start.
    pub downloads: Vec<Download>,
}

/// A download to resume after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// What.
    pub offer: echo_proto::blob::Offer,
    /// Who offered it.
    pub from: echo_proto::PeerId,
    /// Where the file goes.
    pub dir: std::path::PathBuf,
}

/// What to tell the user when the database cannot be read.
pub fn damaged(path: &Path) -> String {
    format!(
        "history database {} is damaged or not echo-chat's; move it aside (with its -wal \
         and -shm files, if any) to start with empty history, or restore it from a backup",
        path.display()
    )
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL,
    author TEXT NOT NULL,
    seq INTEGER NOT NULL,
    lamport INTEGER NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    name TEXT NOT NULL,
    text TEXT NOT NULL,
    wire BLOB NOT NULL,
    UNIQUE (room, author, seq)
);
CREATE INDEX IF NOT EXISTS messages_by_time ON messages (room, lamport);
CREATE TABLE IF NOT EXISTS reservations (room TEXT PRIMARY KEY, upto INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (room TEXT PRIMARY KEY, joined_at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS peers (peer TEXT PRIMARY KEY, addrs TEXT NOT NULL, seen_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS downloads (hash TEXT PRIMARY KEY, offer BLOB NOT NULL, source TEXT NOT NULL,
                                      dir TEXT NOT NULL, started_ms INTEGER NOT NULL);
";

/// Opens (creating) the history database in WAL mode.
pub fn open_db(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)
        .with_context(|| format!("cannot open history database {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .with_context(|| format!("cannot use history database {}", path.display()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "database is not in WAL mode");
    }
    conn.execute_batch("PRAGMA synchronous=NORMAL;")?;
    conn.execute_batch(SCHEMA)
        .and_then(|()| conn.execute_batch(dm::SCHEMA))
        .with_context(|| format!("cannot set up history database {}", path.display()))?;
    Ok(conn)
}

/// Loads what the node needs to restart, keeping at most `per_room` recent messages a
/// room.
pub fn load(conn: &Connection, per_room: usize) -> Result<Loaded> {
    let name: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'name'", [], |r| {
            r.get(0)
        })
        .optional()?;
    let mut reserved: BTreeMap<String, u64> = BTreeMap::new();
    {
        let mut st = conn.prepare("SELECT room, upto FROM reservations")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (room, upto) = row?;
            reserved.insert(room, upto.max(0) as u64);
        }
    }
    let mut rooms = Vec::new();
    let mut skipped = 0;
    let mut st = conn.prepare("SELECT room FROM rooms ORDER BY joined_at_ms, room")?;
    let names: Vec<String> = st
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut msgs = conn.prepare(
        "SELECT wire FROM messages WHERE room = ?1 ORDER BY lamport DESC, rowid DESC LIMIT ?2",
    )?;
    for name in names {
        let mut messages = Vec::new();
        let rows = msgs.query_map(params![name, per_room as i64], |r| r.get::<_, Vec<u8>>(0))?;
        for row in rows {
            let bytes = row?;
            match decode(&bytes) {
                Ok(m) if m.room() == name => messages.push(m),
                Ok(_) => {
                    skipped += 1;
                    tracing::warn!(room = %name, "stored message of another room; skipped")
                }
                Err(e) => {
                    skipped += 1;
                    tracing::warn!(room = %name, error = %e, "undecodable stored message; skipped")
                }
            }
        }
        messages.sort_by_key(|m| m.order_key());
        rooms.push(RestoreRoom {
            reserved: reserved.get(&name).copied().unwrap_or(0),
            name,
            messages,
        });
    }
    // Rooms left: their reservations, so a rejoin continues above them.
    let retired = reserved
        .into_iter()
        .filter(|(room, _)| !rooms.iter().any(|r: &RestoreRoom| &r.name == room))
        .collect();
    // Peers to reconnect to: the 64 seen most recently.
    let mut peers = Vec::new();
    let mut stmt = conn.prepare("SELECT addrs FROM peers ORDER BY seen_ms DESC LIMIT 64")?;
    for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
        peers.extend(row?.split_whitespace().filter_map(|a| a.parse().ok()));
    }
    // Unfinished downloads, oldest first (rows that no longer decode are skipped).
    let mut downloads = Vec::new();
    let mut stmt = conn.prepare("SELECT offer, source, dir FROM downloads ORDER BY started_ms")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (offer, source, dir) = row?;
        match (echo_proto::blob::Offer::decode(&offer), source.parse()) {
            (Ok(offer), Ok(from)) => downloads.push(Download {
                offer,
                from,
                dir: dir.into(),
            }),
            _ => tracing::warn!("undecodable stored download; skipped"),
        }
    }
    // Direct-message state (sequence numbers, carried envelopes), hex in `meta`.
    let dm: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'dm'", [], |r| r.get(0))
        .optional()?;
    let dm = dm.and_then(|h| unhex(&h)).unwrap_or_default();
    Ok(Loaded {
        downloads,
        restore: Restore {
            rooms,
            retired,
            peers,
            dm,
            dm_reserved: dm::reserved(conn)?,
            ..Restore::default()
        },
        name,
        skipped,
    })
}

/// Up to `limit` stored messages of `room` that sort before `before`, oldest first, and
/// whether that is all there is (for scrolling back past what the UI holds).
pub fn older(
    conn: &Connection,
    room: &str,
    before: &echo_proto::OrderKey,
    limit: usize,
) -> Result<(Vec<Message>, bool)> {
    // Messages sharing `before`'s lamport may sort on either side of it: fetch a margin.
    const MARGIN: usize = 256;
    let lamport = before.lamport.min(i64::MAX as u64) as i64;
    let mut st = conn.prepare_cached(
        "SELECT wire FROM messages WHERE room = ?1 AND lamport <= ?2
         ORDER BY lamport DESC, rowid DESC LIMIT ?3",
    )?;
    let mut fetched = 0;
    let mut found = Vec::new();
    for row in st.query_map(params![room, lamport, (limit + MARGIN) as i64], |r| {
        r.get::<_, Vec<u8>>(0)
    })? {
        fetched += 1;
        if let Ok(m) = decode(&row?) {
            if m.room() == room && m.order_key() < *before {
                found.push(m);
            }
        }
    }
    found.sort_by_key(|m| m.order_key());
    let all = fetched < limit + MARGIN && found.len() <= limit;
    let skip = found.len().saturating_sub(limit);
    Ok((found.split_off(skip), all))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Decodes a stored message (wire `RoomMessage` bytes).
pub fn decode(bytes: &[u8]) -> Result<Message> {
    Message::decode(bytes).map_err(|e| anyhow!(e))
}

/// One write.
pub enum Op {
    /// A room message the node delivered with a position.
    Message(echo_proto::SharedMessage),
    /// A sequence reservation; `ack` answers once it is durable.
    Reserve {
        room: String,
        upto: u64,
        ack: oneshot::Sender<Result<(), String>>,
    },
    /// Joined a room.
    Joined(String),
    /// Left a room.
    Left(String),
    /// The display name.
    Name(String),
    /// A peer's dialable addresses (with `/p2p/`), to reconnect after a restart.
    Peer(String, Vec<String>),
    /// A download started (kept until it ends, to resume it after a restart).
    Download(Download),
    /// A download finished, failed for good or was cancelled (by its content hash).
    DownloadEnded(echo_proto::blob::BlobHash),
    /// The node's direct-message state ([`echo_runtime::Handle::export_dm`]).
    DmState(Vec<u8>),
    /// A direct message sent or received.
    Direct(dm::DirectRow),
    /// An own direct message (to the peer, by number) moved on.
    DirectStatus(echo_proto::PeerId, u64, echo_proto::DmStatus),
    /// The conversation with a peer was read.
    DirectRead(echo_proto::PeerId),
    /// Direct-message numbers below `upto` reserved for `peer`; `ack` answers once it
    /// is durable.
    DmReserve {
        peer: echo_proto::PeerId,
        upto: u64,
        ack: oneshot::Sender<Result<(), String>>,
    },
    /// Room messages to delete: their signatures failed after delivery.
    Forget {
        room: String,
        author: echo_proto::PeerId,
        seqs: Vec<u64>,
    },
    /// Answers when everything before it is committed.
    Flush(oneshot::Sender<Result<(), String>>),
}

/// The writer thread's handle. Dropping it finishes pending writes and stops the thread.
pub struct Writer {
    tx: Option<std_mpsc::Sender<Op>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer on `conn`; write errors are reported through `on_error`.
    pub fn start(conn: Connection, on_error: impl Fn(String) + Send + 'static) -> Writer {
        let (tx, rx) = std_mpsc::channel::<Op>();
        let thread = thread::Builder::new()
            .name("echo-chat-store".into())
            .spawn(move || writer_loop(conn, rx, on_error))
            .expect("spawn the store thread");
        Writer {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Queues a write.
    pub fn send(&self, op: Op) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(op);
        }
    }

    /// Queues a reservation; the answer comes once it is committed durably.
    pub fn reserve(&self, room: &str, upto: u64) -> oneshot::Receiver<Result<(), String>> {
        let (ack, rx) = oneshot::channel();
        self.send(Op::Reserve {
            room: room.to_string(),
            upto,
            ack,
        });
        rx
    }

    /// Queues a direct-message reservation; the answer comes once it is durable.
    pub fn reserve_dm(
        &self,
        peer: echo_proto::PeerId,
        upto: u64,
    ) -> oneshot::Receiver<Result<(), String>> {
        let (ack, rx) = oneshot::channel();
        self.send(Op::DmReserve { peer, upto, ack });
        rx
    }

    /// Resolves once every earlier write is committed.
    pub fn flush(&self) -> oneshot::Receiver<Result<(), String>> {
        let (ack, rx) = oneshot::channel();
        self.send(Op::Flush(ack));
        rx
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const MAX_BATCH: usize = 1024;

fn writer_loop(mut conn: Connection, rx: std_mpsc::Receiver<Op>, on_error: impl Fn(String)) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let durable = batch
            .iter()
            .any(|op| matches!(op, Op::Reserve { .. } | Op::DmReserve { .. }));
        let result = write_batch(&mut conn, &batch, durable).map_err(|e| format!("{e:#}"));
        if let Err(e) = &result {
            tracing::error!(error = %e, "history write failed");
            on_error(format!("could not save history: {e}"));
        }
        for op in batch {
            match op {
                Op::Reserve { ack, .. } | Op::DmReserve { ack, .. } | Op::Flush(ack) => {
                    let _ = ack.send(result.clone());
                }
                _ => {}
            }
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
        tracing::warn!(error = %e, "checkpoint at exit failed");
    }
}

fn write_batch(conn: &mut Connection, batch: &[Op], durable: bool) -> Result<()> {
    if durable {
        conn.execute_batch("PRAGMA synchronous=FULL;")?;
    }
    let tx = conn.transaction()?;
    {
        let mut ins = tx.prepare_cached(
            "INSERT OR IGNORE INTO messages (room, author, seq, lamport, sent_at_ms, name, text, wire)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for op in batch {
            match op {
                Op::Message(m) => {
                    let wire = m.encode();
                    ins.execute(params![
                        m.room(),
                        m.author().to_base58(),
                        m.seq() as i64,
                        m.lamport() as i64,
                        m.sent_at_ms() as i64,
                        m.name(),
                        m.text(),
                        wire
                    ])?;
                }
                Op::Reserve { room, upto, .. } => {
                    tx.execute(
                        "INSERT INTO reservations (room, upto) VALUES (?1, ?2)
                         ON CONFLICT (room) DO UPDATE SET upto = max(upto, excluded.upto)",
                        params![room, *upto as i64],
                    )?;
                }
                Op::Joined(room) => {
                    tx.execute(
                        "INSERT OR IGNORE INTO rooms (room, joined_at_ms) VALUES (?1, ?2)",
                        params![room, now_ms() as i64],
                    )?;
                }
                Op::Left(room) => {
                    tx.execute("DELETE FROM rooms WHERE room = ?1", params![room])?;
                }
                Op::Name(name) => {
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES ('name', ?1)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        params![name],
                    )?;
                }
                Op::Peer(peer, addrs) => {
                    tx.execute(
                        "INSERT INTO peers (peer, addrs, seen_ms) VALUES (?1, ?2, ?3)
                         ON CONFLICT (peer) DO UPDATE SET addrs = excluded.addrs,
                         seen_ms = excluded.seen_ms",
                        params![peer, addrs.join(" "), now_ms() as i64],
                    )?;
                }
                Op::Download(d) => {
                    // An offer that cannot be encoded was never accepted by `/get`.
                    if let Ok(offer) = d.offer.encode() {
                        tx.execute(
                            "INSERT INTO downloads (hash, offer, source, dir, started_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5)
                             ON CONFLICT (hash) DO UPDATE SET offer = excluded.offer,
                             source = excluded.source, dir = excluded.dir",
                            params![
                                d.offer.hash.to_hex(),
                                offer,
                                d.from.to_base58(),
                                d.dir.to_string_lossy(),
                                now_ms() as i64
                            ],
                        )?;
                    }
                }
                Op::DmState(state) => {
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES ('dm', ?1)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        params![hex(state)],
                    )?;
                }
                Op::Direct(row) => dm::insert(&tx, row, dm::KEEP_PER_PEER, dm::MAX_CONVERSATIONS)?,
                Op::DirectStatus(peer, seq, status) => dm::set_status(&tx, peer, *seq, *status)?,
                Op::DirectRead(peer) => dm::set_read(&tx, peer)?,
                Op::DmReserve { peer, upto, .. } => dm::reserve(&tx, peer, *upto)?,
                Op::DownloadEnded(hash) => {
                    tx.execute(
                        "DELETE FROM downloads WHERE hash = ?1",
                        params![hash.to_hex()],
                    )?;
                }
                Op::Forget { room, author, seqs } => {
                    let mut del = tx.prepare_cached(
                        "DELETE FROM messages WHERE room = ?1 AND author = ?2 AND seq = ?3",
                    )?;
                    for &seq in seqs {
                        del.execute(params![
                            room,
                            author.to_base58(),
                            seq.min(i64::MAX as u64) as i64
                        ])?;
                    }
                }
                Op::Flush(_) => {}
            }
        }
    }
    tx.commit()?;
    if durable {
        conn.execute_batch("PRAGMA synchronous=NORMAL;")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Instant, SystemTime};

    #[test]
    fn identity_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::open(dir.path()).unwrap();
        let a = dd.identity().unwrap();
        let b = dd.identity().unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("identity.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A second instance is refused while the first holds the lock.
        let err = DataDir::open(dir.path()).err().unwrap();
        assert!(format!("{err}").contains("in use"), "{err}");
    }

    #[test]
    fn unfinished_downloads_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("h.sqlite3");
        let d = |first: u8, name: &str| Download {
            offer: echo_proto::blob::Offer {
                hash: echo_proto::blob::BlobHash([first; 32]),
                size: 1 << 30,
                name: name.into(),
                mime: String::new(),
            },
            from: echo_proto::PeerId::random(),
            dir: dir.path().join("dl"),
        };
        let (a, b) = (d(1, "a.iso"), d(2, "b.iso"));
        let writer = Writer::start(open_db(&db).unwrap(), |e| panic!("{e}"));
        writer.send(Op::Download(a.clone()));
        writer.send(Op::Download(b.clone()));
        writer.send(Op::Download(a.clone())); // asked again: one row
        writer.send(Op::DownloadEnded(b.offer.hash));
        futures::executor::block_on(writer.flush())
            .unwrap()
            .unwrap();
        drop(writer);
        // A row that no longer decodes is skipped, not fatal.
        open_db(&db)
            .unwrap()
            .execute(
                "INSERT INTO downloads VALUES ('x', x'00', 'nope', '/', 0)",
                [],
            )
            .unwrap();
        let loaded = load(&open_db(&db).unwrap(), 10).unwrap();
        assert_eq!(loaded.downloads, vec![a]);
    }

    #[test]
    fn messages_reservations_rooms_and_name_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("h.sqlite3");
        let key = Identity::generate();
        let now = Instant::now();
        let mut node = echo_proto::Node::new(
            key.clone(),
            echo_proto::Config::default().name("alice"),
            1,
            now,
        );
        node.send("general", "one", SystemTime::now(), now).unwrap();
        node.send("general", "two", SystemTime::now(), now).unwrap();
        let writer = Writer::start(open_db(&db).unwrap(), |e| panic!("{e}"));
        let mut reserved = 0;
        loop {
            let ev = match node.poll_output() {
                echo_proto::Output::Event(ev) => ev,
                echo_proto::Output::Wait(_) => break,
                _ => continue,
            };
            match ev {
                echo_proto::Event::Message {
                    msg,
                    position: Some(_),
                } => writer.send(Op::Message(msg)),
                echo_proto::Event::Joined { room } => writer.send(Op::Joined(room)),
                echo_proto::Event::SeqReserved { room, upto } => {
                    reserved = upto;
                    let _ = futures::executor::block_on(writer.reserve(&room, upto)).unwrap();
                }
                _ => {}
            }
        }
        writer.send(Op::Name("alice".into()));
        // A message whose signature failed after delivery is deleted.
        node.send("general", "three", SystemTime::now(), now)
            .unwrap();
        while let Some(ev) = std::iter::from_fn(|| match node.poll_output() {
            echo_proto::Output::Wait(_) => None,
            o => Some(o),
        })
        .find_map(|o| match o {
            echo_proto::Output::Event(echo_proto::Event::Message { msg, .. }) => Some(msg),
            _ => None,
        }) {
            writer.send(Op::Message(ev.clone()));
            writer.send(Op::Forget {
                room: "general".into(),
                author: ev.author(),
                seqs: vec![ev.seq()],
            });
        }
        futures::executor::block_on(writer.flush())
            .unwrap()
            .unwrap();
        drop(writer);
        assert!(reserved > 2);

        let loaded = load(&open_db(&db).unwrap(), 100).unwrap();
        assert_eq!(loaded.name.as_deref(), Some("alice"));
        assert_eq!(loaded.restore.rooms.len(), 1);
        let room = &loaded.restore.rooms[0];
        assert_eq!(room.name, "general");
        assert_eq!(room.reserved, reserved);
        let texts: Vec<_> = room.messages.iter().map(|m| m.text()).collect();
        assert_eq!(texts, ["one", "two"]);
        // Scrolling back: what sorts before a message, oldest first.
        let conn = open_db(&db).unwrap();
        let two = room.messages[1].order_key();
        let (older_msgs, all) = older(&conn, "general", &two, 10).unwrap();
        assert_eq!(older_msgs.len(), 1);
        assert_eq!(older_msgs[0].text(), "one");
        assert!(all);
        drop(conn);

        // The restored node continues above the reservation.
        let mut node =
            echo_proto::Node::restore(key, echo_proto::Config::default(), 2, loaded.restore, now);
        let m = node
            .send("general", "three", SystemTime::now(), now)
            .unwrap();
        assert!(
            m.seq() >= reserved,
            "seq {} reused below {reserved}",
            m.seq()
        );
        assert_eq!(node.room_log("general").unwrap().count(), 3);
    }
}
