//! The runtime's own bounds under hostile peers and slow apps: handshakes in progress,
//! the event queue. Each scenario on every runtime.

mod common;

use std::net::SocketAddr;

use common::{options, until_stats, Probe};
use echo_runtime::{Runtime, RuntimeEvent};

fn no_auto(name: &str, seed: u64) -> echo_runtime::Options {
    let mut o = options(name, seed);
    o.config.auto_connect = false;
    o
}

/// 500 TCP connections from one address (127.0.0.2) that never start noise: at most
/// the per-address cap are ever in set-up, the rest are dropped at once and counted, and
/// an honest peer (from 127.0.0.1) still connects and chats while they are all open.
async fn handshake_flood<R: Runtime>(rt: R) {
    const CAP: usize = 8;
    let mut o = no_auto("a", 60);
    o.driver.max_pending_handshakes_per_ip = CAP;
    let mut a = Probe::start(&rt, o).await;
    let mut b = Probe::start(&rt, no_auto("b", 61)).await;
    let target: SocketAddr = a.socket();
    // Blocking connects on a thread of their own (loopback: immediate once accepted).
    let flood = std::thread::spawn(move || {
        use socket2::{Domain, Socket, Type};
        let from: SocketAddr = "127.0.0.2:0".parse().unwrap();
        (0..500)
            .map(|_| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                s.bind(&from.into()).unwrap();
                s.connect(&target.into()).unwrap();
                s
            })
            .collect::<Vec<_>>()
    });
    let s = until_stats(&a, "all 500 accepted", |s| {
        s.handshakes as u64 + s.handshakes_refused >= 500
    })
    .await;
    let held = flood.join().unwrap();
    assert!(
        s.handshakes <= CAP && s.handshakes_from_one_ip <= CAP,
        "{s:?}"
    );
    assert!(s.handshakes_refused >= (500 - CAP) as u64, "{s:?}");

    // The flood is still open: an honest peer connects and both chat.
    b.h.connect(&a.addr()).await.unwrap();
    a.peer_up(b.id()).await;
    b.peer_up(a.id()).await;
    b.h.send("general", "through the flood").await.unwrap();
    a.message("through the flood").await;
    a.h.send("general", "and back").await.unwrap();
    b.message("and back").await;
    let s = a.h.driver_stats().await.unwrap();
    assert!(s.handshakes <= CAP, "{s:?}");
    drop(held);
    a.h.shutdown().await;
    b.h.shutdown().await;
}
scenario!(handshake_flood);

/// An app that stops reading its events: the node task goes on (every message reaches
/// the node), at most `event_buffer` events wait, and the app then reads those, one
/// `Lagged` with exactly the number dropped, and later events again; the messages it
/// missed are all in the node's room log.
async fn slow_app_lagged<R: Runtime>(rt: R) {
    const BUF: usize = 16;
    const N: usize = 100;
    let mut a = Probe::start(&rt, no_auto("a", 62)).await;
    let mut o = no_auto("b", 63);
    o.driver.event_buffer = BUF;
    let mut b = Probe::start(&rt, o).await;
    a.h.connect(&b.addr()).await.unwrap();
    a.peer_up(b.id()).await;
    b.peer_up(a.id()).await;

    // B's app stops reading.
    for i in 0..N {
        a.h.send("general", &format!("m{i}")).await.unwrap();
    }
    b.until("every message in the node", |n| {
        n.room_log("general").unwrap().count() >= N
    })
    .await;
    let s = b.h.driver_stats().await.unwrap();
    assert_eq!(s.events_queued, BUF, "{s:?}");
    assert!(s.events_missed >= (N - BUF) as u64, "{s:?}");

    // It reads again: what was queued, then the count of what was dropped.
    let mut before = 0;
    let missed = loop {
        match b.next_raw().await {
            RuntimeEvent::Event(_) => before += 1,
            RuntimeEvent::Lagged { missed } => break missed,
            e => panic!("unexpected {e:?}"),
        }
    };
    assert_eq!((before, missed), (BUF, s.events_missed));
    // Later events come again, and the node kept everything.
    a.h.send("general", "after").await.unwrap();
    b.message("after").await;
    let s = b.h.driver_stats().await.unwrap();
    assert_eq!(s.events_missed, missed, "no more lag: {s:?}");
    let logged =
        b.h.inspect(|n| n.room_log("general").unwrap().count())
            .await
            .unwrap();
    assert_eq!(logged, N + 1);
    a.h.shutdown().await;
    b.h.shutdown().await;
}
scenario!(slow_app_lagged);

/// An app that outruns the node: with the node task held busy, `command_buffer`
/// commands are queued and the next ones wait in their `Pending` (the queue does not
/// grow); once the node goes on, the waiting ones run, and one dropped while waiting
/// never runs.
async fn commands_backpressure<R: Runtime>(rt: R) {
    const BUF: usize = 4;
    let mut o = no_auto("a", 64);
    o.driver.command_buffer = BUF;
    let a = Probe::start(&rt, o).await;
    // Hold the node task inside a command until released.
    let (started_tx, started) = std::sync::mpsc::channel::<()>();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let busy = a.h.inspect(move |_| {
        let _ = started_tx.send(());
        let _ = held.recv();
    });
    started.recv().expect("the node task runs the command");
    let queued: Vec<_> = (0..BUF)
        .map(|i| a.h.send("general", &format!("q{i}")))
        .collect();
    let waiting = a.h.send("general", "w0");
    let dropped = a.h.send("general", "dropped");
    let last = a.h.send("general", "w1");
    for p in &queued {
        assert!(format!("{p:?}").contains("queued"), "{p:?}");
    }
    for p in [&waiting, &dropped, &last] {
        assert!(format!("{p:?}").contains("waiting for room"), "{p:?}");
    }
    drop(dropped);
    release.send(()).unwrap();
    busy.await.unwrap();
    for p in queued {
        p.await.unwrap();
    }
    waiting.await.unwrap();
    last.await.unwrap();
    let texts: Vec<String> =
        a.h.inspect(|n| {
            n.room_log("general")
                .unwrap()
                .map(|m| m.text().to_string())
                .collect()
        })
        .await
        .unwrap();
    assert_eq!(texts, ["q0", "q1", "q2", "q3", "w0", "w1"]);
    let s = a.h.driver_stats().await.unwrap();
    assert_eq!(s.commands_queued, 0, "{s:?}");
    a.h.shutdown().await;
}
scenario!(commands_backpressure);

/// Dials to addresses that never answer: at most `max_pending_dials` are in set-up, the
/// others fail at once with a reason, and the counts read back.
async fn dials_capped<R: Runtime>(rt: R) {
    const CAP: usize = 2;
    let mut o = no_auto("a", 65);
    o.driver.max_pending_dials = CAP;
    let mut a = Probe::start(&rt, o).await;
    // TCP connects (the kernel accepts), noise never answers.
    let silent: Vec<std::net::TcpListener> = (0..5)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    for l in &silent {
        let port = l.local_addr().unwrap().port();
        a.h.connect(&format!("/ip4/127.0.0.1/tcp/{port}"))
            .await
            .unwrap();
    }
    for _ in 0..5 - CAP {
        let e = a
            .wait("dial refused", |e| {
                matches!(e, echo_proto::Event::DialFailed { reason, .. } if reason.to_string().contains("too many dials"))
            })
            .await;
        drop(e);
    }
    let s = a.h.driver_stats().await.unwrap();
    assert_eq!((s.dials, s.dials_refused), (CAP, (5 - CAP) as u64), "{s:?}");
    a.h.shutdown().await;
    drop(silent);
}
scenario!(dials_capped);
