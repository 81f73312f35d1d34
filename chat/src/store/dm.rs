//! Direct conversations in the history database: every direct message sent or
//! received, with its delivery state, and the sequence numbers reserved ahead of
//! sending (so a crash never makes the next run reuse one).
//!
//! Rows are written by the [`super::Writer`] thread ([`super::Op::Direct`] and the
//! ops after it) and read by the app on its own connection.

use anyhow::Result;
use echo_proto::{DmStatus, PeerId};
use rusqlite::{params, Connection, Transaction};

/// Tables (part of the history database's schema).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS directs (
    peer TEXT NOT NULL,
    own INTEGER NOT NULL,
    seq INTEGER,
    sent_at_ms INTEGER NOT NULL,
    name TEXT NOT NULL,
    text TEXT NOT NULL,
    status INTEGER NOT NULL,
    UNIQUE (peer, own, seq)
);
CREATE INDEX IF NOT EXISTS directs_by_peer ON directs (peer);
CREATE TABLE IF NOT EXISTS dm_reserved (peer TEXT PRIMARY KEY, upto INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dm_convs (
    peer TEXT PRIMARY KEY,
    last INTEGER NOT NULL,
    own INTEGER NOT NULL
);
INSERT OR IGNORE INTO dm_convs (peer, last, own)
    SELECT peer, max(rowid), max(own) FROM directs
    WHERE NOT EXISTS (SELECT 1 FROM dm_convs) GROUP BY peer;
";

/// Messages kept per conversation (older ones are deleted as new ones come): a peer
/// that floods us with direct messages fills at most this much of the disk.
pub const KEEP_PER_PEER: usize = 10_000;

/// Conversations kept: peer identities cost nothing to make, so a new conversation past
/// this many deletes the least recently active one that only the other side wrote in
/// (else the least recently active one). Sequence reservations stay.
pub const MAX_CONVERSATIONS: usize = 1_000;

/// One stored direct message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectRow {
    /// Its row id: the order of arrival, and the key to page back with.
    pub id: i64,
    /// The other party.
    pub peer: PeerId,
    /// We wrote it.
    pub own: bool,
    /// Its number in its author's half of the conversation (`None`: plain, legacy).
    pub seq: Option<u64>,
    /// The author's wall clock.
    pub sent_at_ms: u64,
    /// The author's name then.
    pub name: String,
    /// The text.
    pub text: String,
    /// Own message: pending, delivered or read. Received one: `Pending` while unread,
    /// `Read` once read.
    pub status: DmStatus,
}

/// A conversation, for the list shown at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// The other party.
    pub peer: PeerId,
    /// Its name in its last message (empty if it never wrote).
    pub name: String,
    /// Received messages not read yet.
    pub unread: usize,
    /// Numbers of unread encrypted messages (the read receipt to send), at most 1,024.
    pub unread_seqs: Vec<u64>,
}

fn status_code(s: DmStatus) -> i64 {
    match s {
        DmStatus::Pending => 0,
        DmStatus::Delivered => 1,
        DmStatus::Read => 2,
    }
}

fn status_of(code: i64) -> DmStatus {
    match code {
        ..=0 => DmStatus::Pending,
        1 => DmStatus::Delivered,
        _ => DmStatus::Read,
    }
}

/// Stores a message (a second copy of a numbered one is ignored), trims its
/// conversation to `keep` messages and the conversations to `convs`.
pub(super) fn insert(tx: &Transaction, row: &DirectRow, keep: usize, convs: usize) -> Result<()> {
    let peer = row.peer.to_base58();
    let added = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO directs (peer, own, seq, sent_at_ms, name, text, status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            peer,
            row.own,
            row.seq.map(|s| s.min(i64::MAX as u64) as i64),
            row.sent_at_ms.min(i64::MAX as u64) as i64,
            row.name,
            row.text,
            status_code(row.status)
        ])?;
    if added == 0 {
        return Ok(());
    }
    let new = tx
        .prepare_cached("SELECT 1 FROM dm_convs WHERE peer = ?1")?
        .query_row(params![peer], |_| Ok(()))
        .is_err();
    tx.prepare_cached(
        "INSERT INTO dm_convs (peer, last, own) VALUES (?1, last_insert_rowid(), ?2)
         ON CONFLICT (peer) DO UPDATE SET last = excluded.last, own = max(own, excluded.own)",
    )?
    .execute(params![peer, row.own])?;
    if new {
        let n: i64 = tx
            .prepare_cached("SELECT count(*) FROM dm_convs")?
            .query_row([], |r| r.get(0))?;
        if n > convs as i64 {
            let gone: String = tx
                .prepare_cached(
                    "SELECT peer FROM dm_convs WHERE peer != ?1 ORDER BY own, last LIMIT 1",
                )?
                .query_row(params![peer], |r| r.get(0))?;
            tx.prepare_cached("DELETE FROM directs WHERE peer = ?1")?
                .execute(params![gone])?;
            tx.prepare_cached("DELETE FROM dm_convs WHERE peer = ?1")?
                .execute(params![gone])?;
        }
    }
    tx.prepare_cached(
        "DELETE FROM directs WHERE peer = ?1 AND rowid <= (SELECT rowid FROM directs
         WHERE peer = ?1 ORDER BY rowid DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute(params![peer, keep as i64])?;
    Ok(())
}

/// An own message moved on (the status never goes back).
pub(super) fn set_status(
    tx: &Transaction,
    peer: &PeerId,
    seq: u64,
    status: DmStatus,
) -> Result<()> {
    tx.prepare_cached(
        "UPDATE directs SET status = max(status, ?3) WHERE peer = ?1 AND own = 1 AND seq = ?2",
    )?
    .execute(params![
        peer.to_base58(),
        seq.min(i64::MAX as u64) as i64,
        status_code(status)
    ])?;
    Ok(())
}

/// Every received message of the conversation is read.
pub(super) fn set_read(tx: &Transaction, peer: &PeerId) -> Result<()> {
    tx.prepare_cached("UPDATE directs SET status = 2 WHERE peer = ?1 AND own = 0 AND status < 2")?
        .execute(params![peer.to_base58()])?;
    Ok(())
}

/// Numbers below `upto` are reserved for our messages to `peer`.
pub(super) fn reserve(tx: &Transaction, peer: &PeerId, upto: u64) -> Result<()> {
    tx.execute(
        "INSERT INTO dm_reserved (peer, upto) VALUES (?1, ?2)
         ON CONFLICT (peer) DO UPDATE SET upto = max(upto, excluded.upto)",
        params![peer.to_base58(), upto.min(i64::MAX as u64) as i64],
    )?;
    Ok(())
}

/// The reservations (for [`echo_proto::Restore::dm_reserved`]).
pub fn reserved(conn: &Connection) -> Result<Vec<(PeerId, u64)>> {
    let mut st = conn.prepare("SELECT peer, upto FROM dm_reserved")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (peer, upto) = row?;
        if let Ok(p) = peer.parse() {
            out.push((p, upto.max(0) as u64));
        }
    }
    Ok(out)
}

/// The `limit` most recently active conversations, the most recent first.
pub fn conversations(conn: &Connection, limit: usize) -> Result<Vec<Conversation>> {
    let mut st = conn.prepare(
        "SELECT peer, max(rowid) AS last, sum(own = 0 AND status < 2),
                (SELECT name FROM directs d WHERE d.peer = directs.peer AND d.own = 0
                 ORDER BY rowid DESC LIMIT 1)
         FROM directs GROUP BY peer ORDER BY last DESC LIMIT ?1",
    )?;
    let rows = st.query_map(params![limit as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<String>>(3)?,
        ))
    })?;
    let mut seqs = conn.prepare(
        "SELECT seq FROM directs WHERE peer = ?1 AND own = 0 AND status < 2 AND seq IS NOT NULL
         ORDER BY seq LIMIT 1024",
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (peer, unread, name) = row?;
        let Ok(id) = peer.parse() else { continue };
        let unread_seqs = seqs
            .query_map(params![peer], |r| r.get::<_, i64>(0))?
            .map(|s| s.map(|s| s.max(0) as u64))
            .collect::<rusqlite::Result<_>>()?;
        out.push(Conversation {
            peer: id,
            name: name.unwrap_or_default(),
            unread: unread.max(0) as usize,
            unread_seqs,
        });
    }
    Ok(out)
}

/// Up to `limit` messages with `peer` stored before row `before` (or the newest), oldest
/// first, and whether that is all there is.
pub fn recent(
    conn: &Connection,
    peer: &PeerId,
    before: Option<i64>,
    limit: usize,
) -> Result<(Vec<DirectRow>, bool)> {
    let mut st = conn.prepare_cached(
        "SELECT rowid, own, seq, sent_at_ms, name, text, status FROM directs
         WHERE peer = ?1 AND rowid < ?2 ORDER BY rowid DESC LIMIT ?3",
    )?;
    let rows = st.query_map(
        params![
            peer.to_base58(),
            before.unwrap_or(i64::MAX),
            limit as i64 + 1
        ],
        |r| {
            Ok(DirectRow {
                id: r.get(0)?,
                peer: *peer,
                own: r.get(1)?,
                seq: r.get::<_, Option<i64>>(2)?.map(|s| s.max(0) as u64),
                sent_at_ms: r.get::<_, i64>(3)?.max(0) as u64,
                name: r.get(4)?,
                text: r.get(5)?,
                status: status_of(r.get(6)?),
            })
        },
    )?;
    let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    let all = out.len() <= limit;
    out.truncate(limit);
    out.reverse();
    Ok((out, all))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{load, open_db, Op, Writer};

    fn row(peer: PeerId, own: bool, seq: u64, text: &str) -> DirectRow {
        DirectRow {
            id: 0,
            peer,
            own,
            seq: Some(seq),
            sent_at_ms: 1_700_000_000_000 + seq,
            name: if own { "alice" } else { "bob" }.into(),
            text: text.into(),
            status: DmStatus::Pending,
        }
    }

    fn flushed(w: &Writer) {
        futures::executor::block_on(w.flush()).unwrap().unwrap();
    }

    #[test]
    fn conversations_statuses_unread_and_reservations_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("h.sqlite3");
        let (bob, carol) = (PeerId::random(), PeerId::random());
        let w = Writer::start(open_db(&db).unwrap(), |e| panic!("{e}"));
        w.send(Op::Direct(row(bob, true, 1, "one")));
        w.send(Op::Direct(row(bob, true, 2, "two")));
        w.send(Op::Direct(row(bob, false, 1, "hi alice")));
        w.send(Op::Direct(row(bob, false, 1, "hi alice"))); // a copy: one row
        w.send(Op::Direct(row(carol, false, 7, "from carol")));
        w.send(Op::Direct(row(carol, false, 8, "again")));
        w.send(Op::DirectStatus(bob, 1, DmStatus::Read));
        w.send(Op::DirectStatus(bob, 1, DmStatus::Delivered)); // never back
        w.send(Op::DirectStatus(bob, 2, DmStatus::Delivered));
        w.send(Op::DirectRead(bob));
        futures::executor::block_on(w.reserve_dm(bob, 33))
            .unwrap()
            .unwrap();
        futures::executor::block_on(w.reserve_dm(bob, 17))
            .unwrap()
            .unwrap(); // never lower
        flushed(&w);
        drop(w);

        let conn = open_db(&db).unwrap();
        let convs = conversations(&conn, 10).unwrap();
        assert_eq!(convs.len(), 2);
        assert_eq!(
            (convs[0].peer, convs[0].unread),
            (carol, 2),
            "most recent first"
        );
        assert_eq!(convs[0].unread_seqs, [7, 8]);
        assert_eq!(convs[0].name, "bob");
        assert_eq!((convs[1].peer, convs[1].unread), (bob, 0));
        let (rows, all) = recent(&conn, &bob, None, 10).unwrap();
        assert!(all);
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.own, r.text.as_str(), r.status))
            .collect();
        assert_eq!(
            got,
            [
                (true, "one", DmStatus::Read),
                (true, "two", DmStatus::Delivered),
                (false, "hi alice", DmStatus::Read),
            ]
        );
        // Paging back from the newest.
        let (last, all) = recent(&conn, &bob, None, 1).unwrap();
        assert!(!all);
        let (before, _) = recent(&conn, &bob, Some(last[0].id), 1).unwrap();
        assert_eq!(before[0].text, "two");
        assert_eq!(reserved(&conn).unwrap(), [(bob, 33)]);
        let loaded = load(&conn, 10).unwrap();
        assert_eq!(loaded.restore.dm_reserved, [(bob, 33)]);
    }

    #[test]
    fn a_flood_of_new_senders_keeps_the_conversations_bounded_and_ours() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_db(&dir.path().join("h.sqlite3")).unwrap();
        let (friend, old_stranger) = (PeerId::random(), PeerId::random());
        let tx = conn.transaction().unwrap();
        // The oldest conversations: one we wrote in, one only the other side did.
        insert(&tx, &row(friend, true, 1, "hi"), 100, 8).unwrap();
        insert(&tx, &row(old_stranger, false, 1, "buy now"), 100, 8).unwrap();
        for _ in 0..50 {
            insert(&tx, &row(PeerId::random(), false, 1, "spam"), 100, 8).unwrap();
        }
        tx.commit().unwrap();
        let convs = conversations(&conn, 100).unwrap();
        assert_eq!(convs.len(), 8, "the bound, read back");
        assert!(convs.iter().any(|c| c.peer == friend), "ours is kept");
        assert!(!convs.iter().any(|c| c.peer == old_stranger));
        let stored: i64 = conn
            .query_row("SELECT count(DISTINCT peer) FROM directs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, 8);
    }

    #[test]
    fn a_flood_of_direct_messages_keeps_the_last_of_the_conversation() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_db(&dir.path().join("h.sqlite3")).unwrap();
        let bob = PeerId::random();
        let tx = conn.transaction().unwrap();
        for seq in 1..=50 {
            insert(&tx, &row(bob, false, seq, &format!("m{seq}")), 8, 8).unwrap();
        }
        tx.commit().unwrap();
        let (rows, all) = recent(&conn, &bob, None, 100).unwrap();
        assert!(all);
        assert_eq!(rows.len(), 8, "the bound, read back");
        assert_eq!(rows[0].text, "m43");
        assert_eq!(conversations(&conn, 10).unwrap()[0].unread, 8);
    }
}
