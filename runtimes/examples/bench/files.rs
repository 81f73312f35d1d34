//! The file-transfer workloads of the bench example (`file`, `file-latency`, `file-rss`
//! and the two halves `file-rss` runs as separate processes, `file-serve` and `file-get`).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use echo_proto::blob::Offer;
use echo_proto::{Event, PeerId};
use echo_runtime::{Events, Handle, Runtime, RuntimeEvent, TransferId};
use futures::{future, StreamExt};

use super::{addr, options, sink, sleep_until, text, up, Args, SWARM};

/// A scratch directory for one run, removed by [`Scratch::drop`].
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("echo-bench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `mib` MiB of incompressible-looking bytes to `path` (1 MiB at a time).
fn payload(path: &Path, mib: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let block: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut b = block.clone();
    for i in 0..mib {
        b[..8].copy_from_slice(&i.to_le_bytes());
        f.write_all(&b).unwrap();
    }
    f.flush().unwrap();
}

/// A node with file transfer on, its store in `dir`.
async fn file_node<R: Runtime>(rt: &R, i: u64, dir: &Path, a: &Args) -> (Handle, Events) {
    let mut o = options(i);
    let mut f = echo_runtime::FilesOptions::new(dir.join(format!("store{i}")));
    if let Some(mib) = a.serve_mib {
        f.config.serve_rate = mib << 20;
    }
    o.files = Some(f);
    echo_runtime::start(rt.clone(), o).await.unwrap()
}

/// Waits for the end of transfer `id`; panics if it failed.
async fn transfer_end(events: &mut Events, id: TransferId) {
    // `ECHO_BENCH_PROGRESS=1`: the progress over time, on stderr.
    let show = std::env::var_os("ECHO_BENCH_PROGRESS").is_some();
    let start = Instant::now();
    while let Some(e) = events.next().await {
        match e {
            RuntimeEvent::TransferProgress { done, .. } if show => eprintln!(
                "{:7.3}s {:6} MiB",
                start.elapsed().as_secs_f64(),
                done >> 20
            ),
            RuntimeEvent::TransferDone { id: i, .. } if i == id => {
                if show {
                    eprintln!("{:7.3}s done", start.elapsed().as_secs_f64());
                }
                return;
            }
            RuntimeEvent::TransferFailed { reason, .. } => panic!("transfer failed: {reason}"),
            _ => {}
        }
    }
    panic!("events ended");
}

/// Two connected file nodes; the first shares a `--mib` MiB payload (the offer).
async fn sharing_pair<R: Runtime>(
    rt: &R,
    dir: &Scratch,
    a: &Args,
) -> (Handle, Handle, Events, Offer) {
    let src = dir.0.join("payload.bin");
    payload(&src, a.mib);
    let (ha, ea) = file_node(rt, 0, &dir.0, a).await;
    let (hb, mut eb) = file_node(rt, 1, &dir.0, a).await;
    sink(rt, ea);
    hb.connect(&addr(&ha)).await.unwrap();
    up(&mut eb, ha.peer_id()).await;
    let offer = ha.share_file(src).await.unwrap();
    (ha, hb, eb, offer)
}

fn rates(bytes: u64, secs: f64) -> String {
    format!(
        "\"MB_per_s\":{:.1},\"MiB_per_s\":{:.1},\"secs\":{secs:.3}",
        bytes as f64 / 1e6 / secs,
        bytes as f64 / (1 << 20) as f64 / secs
    )
}

fn serve_mib(a: &Args) -> String {
    a.serve_mib
        .map_or_else(|| "\"default\"".to_string(), |m| m.to_string())
}

/// A file of `--mib` MiB from one node to another over `/echo/blob/1.0.0`.
pub async fn file<R: Runtime>(rt: R, a: Args) -> String {
    assert!(
        SWARM.get().is_none(),
        "the swarm adapter does not carry files yet"
    );
    let dir = Scratch::new("file");
    let (ha, hb, mut eb, offer) = sharing_pair(&rt, &dir, &a).await;
    let start = Instant::now();
    let id = hb
        .download(offer, ha.peer_id(), dir.0.join("dl"))
        .await
        .unwrap();
    transfer_end(&mut eb, id).await;
    let secs = start.elapsed().as_secs_f64();
    ha.shutdown().await;
    hb.shutdown().await;
    format!(
        "\"MiB\":{},\"serve_mib\":{},{}",
        a.mib,
        serve_mib(&a),
        rates(a.mib << 20, secs)
    )
}

/// Chat latencies (µs, sorted) of messages `from` sends at `rate` per second to `to`:
/// `n` of them, or, with `transfer`, as many as fit until that transfer (downloaded by
/// `to`) ends.
async fn chat_phase<R: Runtime>(
    rt: &R,
    from: &Handle,
    to: &mut Events,
    transfer: Option<TransferId>,
    n: usize,
    a: &Args,
) -> Vec<u64> {
    let start = Instant::now();
    let author = from.peer_id();
    let done = AtomicBool::new(transfer.is_none());
    let total = AtomicUsize::new(usize::MAX);
    let send = async {
        let t0 = Instant::now();
        let mut i = 0;
        while if transfer.is_some() {
            !done.load(Ordering::Relaxed)
        } else {
            i < n
        } {
            sleep_until(rt, t0 + Duration::from_secs_f64(i as f64 / a.rate)).await;
            let ns = start.elapsed().as_nanos() as u64;
            drop(from.send("general", &text(i, ns, a.size)));
            i += 1;
        }
        total.store(i, Ordering::Relaxed);
        // A last message tells the receiver the count.
        drop(from.send("general", "END"));
    };
    let recv = async {
        let mut lat = Vec::new();
        let mut ended = false;
        while !(ended && lat.len() >= total.load(Ordering::Relaxed)) {
            match to.next().await {
                Some(RuntimeEvent::Event(Event::Message { msg, .. })) if msg.author() == author => {
                    if msg.text() == "END" {
                        ended = true;
                        continue;
                    }
                    let now = start.elapsed().as_nanos() as u64;
                    let sent: u64 = msg.text().split(' ').nth(1).unwrap().parse().unwrap();
                    lat.push((now - sent) / 1000);
                }
                Some(RuntimeEvent::TransferDone { id, .. }) if Some(id) == transfer => {
                    done.store(true, Ordering::Relaxed)
                }
                Some(RuntimeEvent::TransferFailed { reason, .. }) => {
                    panic!("transfer failed: {reason}")
                }
                Some(RuntimeEvent::Lagged { missed }) => panic!("lagged: {missed} events"),
                Some(_) => {}
                None => panic!("events ended"),
            }
        }
        lat
    };
    let ((), mut lat) = future::join(send, recv).await;
    lat.sort_unstable();
    lat
}

fn percentiles(tag: &str, v: &[u64]) -> String {
    let pct = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "\"{tag}_msgs\":{},\"{tag}_p50_us\":{},\"{tag}_p99_us\":{},\"{tag}_max_us\":{}",
        v.len(),
        pct(0.5),
        pct(0.99),
        v[v.len() - 1]
    )
}

/// Chat latency from the serving node to the downloading one, first idle (`--msgs`
/// messages), then while a `--mib` MiB transfer runs on the same connection.
pub async fn file_latency<R: Runtime>(rt: R, a: Args) -> String {
    let dir = Scratch::new("file-latency");
    let (ha, hb, mut eb, offer) = sharing_pair(&rt, &dir, &a).await;
    let idle = chat_phase(&rt, &ha, &mut eb, None, a.msgs, &a).await;
    let start = Instant::now();
    let id = hb
        .download(offer, ha.peer_id(), dir.0.join("dl"))
        .await
        .unwrap();
    let busy = chat_phase(&rt, &ha, &mut eb, Some(id), 0, &a).await;
    let secs = start.elapsed().as_secs_f64();
    ha.shutdown().await;
    hb.shutdown().await;
    format!(
        "\"MiB\":{},\"serve_mib\":{},{},{},{}",
        a.mib,
        serve_mib(&a),
        percentiles("idle", &idle),
        percentiles("busy", &busy),
        rates(a.mib << 20, secs)
    )
}

/// Peak resident memory of this process (`VmHWM`), in KiB.
fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The serving half of `file-rss`: shares a `--mib` MiB file, prints
/// `SERVE <addr> <peer> <offer file>`, serves until stdin closes, then prints its JSON
/// line with its peak RSS.
pub async fn file_serve<R: Runtime>(rt: R, a: Args) -> String {
    let dir = Scratch::new("file-serve");
    let src = dir.0.join("payload.bin");
    payload(&src, a.mib);
    let (ha, ea) = file_node(&rt, 0, &dir.0, &a).await;
    sink(&rt, ea);
    let offer = ha.share_file(src).await.unwrap();
    let offer_file = dir.0.join("offer");
    std::fs::write(&offer_file, offer.encode().unwrap()).unwrap();
    println!(
        "SERVE {} {} {}",
        addr(&ha),
        ha.peer_id(),
        offer_file.display()
    );
    std::io::stdout().flush().unwrap();
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::spawn(move || {
        for _ in std::io::stdin().lock().lines() {}
        let _ = tx.send(());
    });
    let _ = rx.await;
    ha.shutdown().await;
    format!("\"role\":\"serve\",\"vmhwm_kib\":{}", vm_hwm_kib())
}

/// The downloading half of `file-rss`: `--peer ADDR --offer FILE` (an encoded offer).
pub async fn file_get<R: Runtime>(rt: R, a: Args) -> String {
    let dir = Scratch::new("file-get");
    let (hb, mut eb) = file_node(&rt, 1, &dir.0, &a).await;
    let offer = Offer::decode(&std::fs::read(&a.offer).unwrap()).unwrap();
    let from: PeerId = a.peer.rsplit('/').next().unwrap().parse().unwrap();
    hb.connect(&a.peer).await.unwrap();
    up(&mut eb, from).await;
    let start = Instant::now();
    let id = hb.download(offer, from, dir.0.join("dl")).await.unwrap();
    transfer_end(&mut eb, id).await;
    let secs = start.elapsed().as_secs_f64();
    hb.shutdown().await;
    format!(
        "\"role\":\"get\",\"vmhwm_kib\":{},{}",
        vm_hwm_kib(),
        rates(a.mib << 20, secs)
    )
}

/// Peak RSS of each side of a `--mib` MiB transfer, each side in its own process
/// (this example run again as `file-serve` and `file-get`), read from its `VmHWM`.
pub fn file_rss(a: &Args) -> String {
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().unwrap();
    let mut common = vec!["--mib".to_string(), a.mib.to_string()];
    if let Some(m) = a.serve_mib {
        common.extend(["--serve-mib".to_string(), m.to_string()]);
    }
    let mut serve = Command::new(&exe)
        .arg("file-serve")
        .args(&common)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(serve.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("SERVE ") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "file-serve ended");
    }
    let parts: Vec<&str> = line.split_whitespace().collect();
    let (peer, offer) = (format!("{}/p2p/{}", parts[1], parts[2]), parts[3]);
    let peer = if parts[1].contains("/p2p/") {
        parts[1].to_string()
    } else {
        peer
    };
    let get = Command::new(&exe)
        .arg("file-get")
        .args(&common)
        .args(["--peer", &peer, "--offer", offer])
        .output()
        .unwrap();
    assert!(get.status.success(), "file-get failed");
    drop(serve.stdin.take());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    serve.wait().unwrap();
    let field = |s: &str, k: &str| -> String {
        let i = s.find(k).unwrap_or_else(|| panic!("{k} in {s}")) + k.len() + 1;
        s[i..].split([',', '}']).next().unwrap().to_string()
    };
    let get_out = String::from_utf8_lossy(&get.stdout).to_string();
    format!(
        "\"MiB\":{},\"serve_vmhwm_kib\":{},\"get_vmhwm_kib\":{},\"get_MiB_per_s\":{}",
        a.mib,
        field(&rest, "\"vmhwm_kib\""),
        field(&get_out, "\"vmhwm_kib\""),
        field(&get_out, "\"MiB_per_s\"")
    )
}
