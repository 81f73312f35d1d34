//! Tests of the file store (resume after a crash, verification, placing a download) and
//! of the file-name rules.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use echo_proto::blob::{BlobConfig, BlobEndpoint, BlobEvent, BlobOutput, MemStore};
use echo_proto::Identity;

use super::*;

#[test]
fn a_peer_supplied_name_never_leaves_the_folder_or_hides() {
    let cases = [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("/etc/shadow", "shadow"),
        ("C:\\Windows\\System32\\evil.exe", "evil.exe"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("photos/", "photos"),
        ("..", "file"),
        (".", "file"),
        ("", "file"),
        ("/", "file"),
        ("...", "file"),
        (".bashrc", "bashrc"),
        ("a\0b\x1b[2Jc\n.txt", "a_b_[2Jc_.txt"),
        ("x<y>:\"|?*.txt", "x_y______.txt"),
        ("name. . ", "name"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("Com1.tar.gz", "_Com1.tar.gz"),
        ("lpt9", "_lpt9"),
        ("console.txt", "console.txt"),
        ("evil\u{202e}fdp.exe", "evil_fdp.exe"),
    ];
    for (input, want) in cases {
        assert_eq!(safe_file_name(input), want, "{input:?}");
    }
    // Over-long names are cut, keeping the extension and whole characters.
    let long = format!("{}.pdf", "a".repeat(300));
    let s = safe_file_name(&long);
    assert!(s.len() <= MAX_FILE_NAME && s.ends_with(".pdf"), "{s}");
    let wide = format!("{}.txt", "日本".repeat(100));
    let s = safe_file_name(&wide);
    assert!(s.len() <= MAX_FILE_NAME && s.ends_with(".txt"), "{s}");
    // Whatever the input, the result is one plain component.
    for input in ["a/b/../../c", "\\\\server\\share\\x", "./.././x"] {
        let s = safe_file_name(input);
        assert!(
            !s.contains(['/', '\\']) && s != ".." && !s.is_empty(),
            "{s}"
        );
    }
}

#[test]
fn a_new_file_never_overwrites_one_that_is_there() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.txt"), b"mine").unwrap();
    let (p1, _) = unique_path(dir.path(), "a.txt").unwrap();
    let (p2, _) = unique_path(dir.path(), "../a.txt").unwrap();
    let (p3, _) = unique_path(dir.path(), "README").unwrap();
    let (p4, _) = unique_path(dir.path(), "README").unwrap();
    let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(
        [name(&p1), name(&p2), name(&p3), name(&p4)],
        ["a (1).txt", "a (2).txt", "README", "README (1)"]
    );
    assert_eq!(fs::read(dir.path().join("a.txt")).unwrap(), b"mine");
    assert!([&p1, &p2, &p3, &p4]
        .iter()
        .all(|p| p.parent() == Some(dir.path())));
}

fn sample(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[2])
        .collect()
}

fn config() -> BlobConfig {
    BlobConfig {
        serve_rate: 1 << 50,
        serve_burst: 1 << 40,
        request_burst: 1e12,
        ..BlobConfig::default()
    }
}

/// Runs a download of `hash` from `provider` into `store` until it is done or `stop`
/// groups were written in this run; returns the groups written and whether it finished.
fn fetch(
    provider: &mut MemStore,
    store: &mut FileStore,
    hash: BlobHash,
    size: u64,
    stop: Option<u64>,
) -> (u64, bool) {
    let now = Instant::now();
    let pd = Identity::from_secret_bytes([1; 32]).peer_id();
    let pp = Identity::from_secret_bytes([2; 32]).peer_id();
    let mut p = BlobEndpoint::new(config());
    let mut d = BlobEndpoint::new(config());
    d.download(hash, size, [pp], store, now).expect("starts");
    let mut written = 0;
    loop {
        let mut moved = false;
        loop {
            match d.poll_output() {
                BlobOutput::Transmit { data, .. } => {
                    p.handle_data(pd, &data, provider, now);
                    moved = true;
                }
                BlobOutput::Event(BlobEvent::Done { .. }) => return (written, true),
                BlobOutput::Event(BlobEvent::Failed { reason, .. }) => panic!("{reason:?}"),
                BlobOutput::Wait(_) => break,
                _ => {}
            }
        }
        loop {
            match p.poll_output() {
                BlobOutput::Transmit { data, .. } => {
                    p.handle_sent(pd, data.len(), provider, now);
                    let before = store.groups_written();
                    d.handle_data(pp, &data, store, now);
                    written += store.groups_written() - before;
                    moved = true;
                    if stop.is_some_and(|s| written >= s) {
                        return (written, false); // "kill -9": nothing is finished
                    }
                }
                BlobOutput::Wait(_) => break,
                _ => {}
            }
        }
        assert!(moved, "transfer stalled");
    }
}

#[test]
fn a_download_resumes_after_a_crash_with_only_the_missing_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let data = sample(40 * GROUP_SIZE as usize + 1234);
    let size = data.len() as u64;
    let mut provider = MemStore::new();
    let hash = provider.insert(&data);

    // First run: 15 groups arrive, then the process dies (the store is dropped as is).
    let mut store = FileStore::open(tmp.path().join("blobs")).unwrap();
    let (first, done) = fetch(&mut provider, &mut store, hash, size, Some(15));
    assert!(!done && first >= 15);
    drop(store);
    // A torn record at the end of the log (a crash in the middle of its write).
    let log = tmp
        .path()
        .join("blobs/partial")
        .join(format!("{}.groups", hash.to_hex()));
    OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(&[7, 0, 0])
        .unwrap();

    // Second run: only the rest is fetched.
    let mut store = FileStore::open(tmp.path().join("blobs")).unwrap();
    let (second, done) = fetch(&mut provider, &mut store, hash, size, None);
    assert!(done);
    assert_eq!(first + second, group_count(size), "no group fetched twice");
    assert_eq!(store.complete_size(&hash), Some(size));
    let mut back = vec![0u8; data.len()];
    store.read_data(&hash, 0, &mut back).unwrap();
    assert_eq!(back, data);

    // Placed in the download folder under a safe name, next to a file it must not
    // overwrite; served from there, also after a restart.
    let downloads = tmp.path().join("Downloads");
    fs::create_dir_all(&downloads).unwrap();
    fs::write(downloads.join("photo.jpg"), b"keep").unwrap();
    let placed = store.place(&hash, &downloads, "../../photo.jpg").unwrap();
    assert_eq!(placed, downloads.join("photo (1).jpg"));
    assert_eq!(fs::read(downloads.join("photo.jpg")).unwrap(), b"keep");
    assert_eq!(fs::read(&placed).unwrap(), data);
    let mut store = FileStore::open(tmp.path().join("blobs")).unwrap();
    assert_eq!(store.location(&hash), Some(placed.as_path()));
    let mut head = [0u8; 100];
    store.read_data(&hash, 0, &mut head).unwrap();
    assert_eq!(&head[..], &data[..100]);
    assert_eq!(
        store.read_parent(&hash, 0).unwrap(),
        provider.read_parent(&hash, 0).unwrap()
    );
}

#[test]
fn a_shared_file_is_served_and_a_corrupted_download_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let data = sample(5 * GROUP_SIZE as usize + 7);
    let path = tmp.path().join("shared.bin");
    fs::write(&path, &data).unwrap();
    let mut sharer = FileStore::open(tmp.path().join("a")).unwrap();
    let (hash, size) = sharer.add_file(&path).unwrap();
    assert_eq!(hash, BlobHash::of(&data));
    assert_eq!(sharer.complete_size(&hash), Some(size));

    // A disk that loses a write: the bytes on disk do not hash to the name, so the blob
    // is not served, and the download starts over.
    let mut store = FileStore::open(tmp.path().join("b")).unwrap();
    assert!(store.open_partial(&hash, size).unwrap().is_empty());
    for g in 0..group_count(size) {
        let len = (size - g * GROUP_SIZE).min(GROUP_SIZE) as usize;
        let mut buf = vec![0u8; len];
        sharer.read_data(&hash, g * GROUP_SIZE, &mut buf).unwrap();
        if g == 2 {
            buf[10] ^= 1;
        }
        store.write_group(&hash, g, &buf).unwrap();
    }
    assert!(matches!(store.finish(&hash), Err(StoreError::Io(_))));
    assert_eq!(store.complete_size(&hash), None);
    assert!(store.open_partial(&hash, size).unwrap().is_empty());
}

#[test]
fn a_download_that_does_not_fit_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = FileStore::open(tmp.path()).unwrap();
    if free_space(tmp.path()).is_none() {
        return; // this platform does not say
    }
    let hash = BlobHash([9; 32]);
    assert_eq!(
        store.open_partial(&hash, u64::MAX / 4),
        Err(StoreError::NoSpace)
    );
    assert!(!tmp
        .path()
        .join("partial")
        .join(format!("{}.part", hash.to_hex()))
        .exists());
}

/// Writes every group of `data` (blob `hash`) into `store`, flipping one bit of group
/// `corrupt` if given, and finishes it.
fn write_all_groups(
    store: &mut FileStore,
    hash: &BlobHash,
    data: &[u8],
    corrupt: Option<u64>,
) -> Result<(), StoreError> {
    let size = data.len() as u64;
    assert!(store.open_partial(hash, size)?.is_empty());
    write_groups(store, hash, data, 0..group_count(size), corrupt)?;
    store.finish(hash)
}

#[test]
fn in_the_background_a_finish_checks_and_places_the_file_off_the_caller() {
    let tmp = tempfile::tempdir().unwrap();
    // Enough groups that the writer takes them in several batches.
    let data = sample(150 * GROUP_SIZE as usize + 11);
    let hash = BlobHash::of(&data);
    let downloads = tmp.path().join("Downloads");
    fs::create_dir_all(&downloads).unwrap();
    fs::write(downloads.join("song.ogg"), b"keep").unwrap();
    // The writer is held until everything is queued, so the queue is long.
    let gate = std::sync::Arc::new((std::sync::Mutex::new(true), std::sync::Condvar::new()));
    let g = gate.clone();
    let hook = DiskHook(std::sync::Arc::new(move |_| {
        let mut held = g.0.lock().unwrap();
        while *held {
            held = g.1.wait(held).unwrap();
        }
    }));
    let mut store = FileStore::open(tmp.path().join("s"))
        .unwrap()
        .with_disk_hook(hook)
        .in_background()
        .unwrap();
    store.set_destination(&hash, &downloads, "../song.ogg");
    write_all_groups(&mut store, &hash, &data, None).unwrap();
    // Queued: not served before it is checked.
    assert!(store.is_finishing(&hash));
    assert_eq!(store.complete_size(&hash), None);
    *gate.0.lock().unwrap() = false;
    gate.1.notify_all();
    store.flush();
    let done = store.take_finished(None);
    let placed = downloads.join("song (1).ogg");
    assert_eq!(done, vec![(hash, Ok(placed.clone()))]);
    assert!(!store.is_finishing(&hash));
    assert_eq!(fs::read(&placed).unwrap(), data);
    assert_eq!(fs::read(downloads.join("song.ogg")).unwrap(), b"keep");
    assert_eq!(store.complete_size(&hash), Some(data.len() as u64));
    assert_eq!(store.groups_written(), group_count(data.len() as u64));
    // The index, written by the writer thread, names it after a restart.
    drop(store);
    let store = FileStore::open(tmp.path().join("s")).unwrap();
    assert_eq!(store.location(&hash), Some(placed.as_path()));

    // A disk that lost a write: caught by the finisher, and the download starts over.
    let other = sample(3 * GROUP_SIZE as usize);
    let h2 = BlobHash::of(&other);
    let mut store = store.in_background().unwrap();
    write_all_groups(&mut store, &h2, &other, Some(1)).unwrap();
    store.flush();
    assert_eq!(
        store.take_finished(None),
        vec![(h2, Err(FinishError::Mismatch))]
    );
    assert_eq!(store.complete_size(&h2), None);
    assert!(store
        .open_partial(&h2, other.len() as u64)
        .unwrap()
        .is_empty());
}

/// A background store that reads back a download's start every 4 groups, and the
/// number of read-backs its finisher made.
fn checking_store(dir: &std::path::Path) -> (FileStore, std::sync::Arc<AtomicU64>) {
    let checks = std::sync::Arc::new(AtomicU64::new(0));
    let c = checks.clone();
    let hook = DiskHook(std::sync::Arc::new(move |w| {
        if w == DiskWork::Check {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }));
    let store = FileStore::open(dir)
        .unwrap()
        .with_disk_hook(hook)
        .with_check_step(4 * GROUP_SIZE)
        .in_background()
        .unwrap();
    (store, checks)
}

/// Writes groups `groups` of `data` into the open partial `hash`, flipping a bit of
/// group `corrupt` if given.
fn write_groups(
    store: &mut FileStore,
    hash: &BlobHash,
    data: &[u8],
    groups: impl Iterator<Item = u64>,
    corrupt: Option<u64>,
) -> Result<(), StoreError> {
    for g in groups {
        let at = (g * GROUP_SIZE) as usize;
        let mut buf = data[at..(at + GROUP_SIZE as usize).min(data.len())].to_vec();
        if corrupt == Some(g) {
            buf[3] ^= 1;
        }
        store.write_group(hash, g, &buf)?;
    }
    Ok(())
}

/// A sample blob of `groups` whole groups and `extra` bytes: its bytes, hash, size and
/// number of groups.
fn blob(groups: u64, extra: usize) -> (Vec<u8>, BlobHash, u64, u64) {
    let data = sample(groups as usize * GROUP_SIZE as usize + extra);
    let (hash, size) = (BlobHash::of(&data), data.len() as u64);
    (data, hash, size, group_count(size))
}

/// The outcome of finishing `hash` in `store`, once the disk threads are done.
fn finished(store: &mut FileStore, hash: &BlobHash) -> Result<PathBuf, FinishError> {
    store.finish(hash).unwrap();
    store.flush();
    let mut done = store.take_finished(None);
    assert_eq!(done.len(), 1);
    let (h, r) = done.pop().unwrap();
    assert_eq!(&h, hash);
    r
}

#[test]
fn in_the_background_a_download_is_read_back_while_it_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, hash, size, groups) = blob(41, 5);

    // In order: the start is read back every 4 groups (10 times), the tail at the
    // finish; the file hashes to its name, so no byte was read twice or skipped.
    let (mut store, checks) = checking_store(&tmp.path().join("a"));
    store.open_partial(&hash, size).unwrap();
    write_groups(&mut store, &hash, &data, 0..groups, None).unwrap();
    let path = finished(&mut store, &hash).unwrap();
    assert_eq!(fs::read(path).unwrap(), data);
    // (The finisher takes the checks before the finish queued after them.)
    assert_eq!(checks.load(Ordering::Relaxed), 10);

    // Backwards: the start is whole only with the last group, so all is read at the end.
    let (mut store, checks) = checking_store(&tmp.path().join("b"));
    store.open_partial(&hash, size).unwrap();
    write_groups(&mut store, &hash, &data, (0..groups).rev(), None).unwrap();
    let path = finished(&mut store, &hash).unwrap();
    assert_eq!(fs::read(path).unwrap(), data);
    assert!(checks.load(Ordering::Relaxed) <= 1);

    // A bad group is caught whether it was read back early (group 1) or at the end
    // (the last one), and the download starts over.
    for bad in [1, groups - 1] {
        let (mut store, checks) = checking_store(&tmp.path().join(format!("c{bad}")));
        store.open_partial(&hash, size).unwrap();
        write_groups(&mut store, &hash, &data, 0..groups, Some(bad)).unwrap();
        assert_eq!(finished(&mut store, &hash), Err(FinishError::Mismatch));
        assert_eq!(checks.load(Ordering::Relaxed), 10);
        assert!(store.open_partial(&hash, size).unwrap().is_empty());
    }
}

#[test]
fn after_a_restart_the_groups_written_before_it_are_read_back_from_the_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, hash, size, groups) = blob(30, 1);
    let dir = tmp.path().join("s");
    let part = dir.join("partial").join(format!("{}.part", hash.to_hex()));
    for lost in [None, Some(2u64)] {
        // The first run writes groups 0..12 (read back as it goes) and stops.
        let (mut store, _) = checking_store(&dir);
        assert!(store.open_partial(&hash, size).unwrap().is_empty());
        write_groups(&mut store, &hash, &data, 0..12, None).unwrap();
        drop(store);
        // Meanwhile the disk lost what group 2 held.
        if let Some(g) = lost {
            let f = fs::OpenOptions::new().write(true).open(&part).unwrap();
            super::write_at(&f, &[0; 100], g * GROUP_SIZE + 7).unwrap();
        }
        // The second run has those groups from the log, writes the rest, and reads
        // back the whole file, its first twelve groups from the disk.
        let (mut store, checks) = checking_store(&dir);
        let have = store.open_partial(&hash, size).unwrap();
        assert_eq!(have.len(), 12);
        write_groups(&mut store, &hash, &data, 12..groups, None).unwrap();
        match lost {
            None => {
                let path = finished(&mut store, &hash).unwrap();
                assert_eq!(fs::read(&path).unwrap(), data);
                store.forget(&hash).unwrap();
                fs::remove_file(path).unwrap();
            }
            Some(_) => assert_eq!(finished(&mut store, &hash), Err(FinishError::Mismatch)),
        }
        assert_eq!(checks.load(Ordering::Relaxed), 5);
    }
}
