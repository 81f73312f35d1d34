//! A node refused for "too many peers" over real connections learns why, and backs off
//! (issue 8, item 9). Each scenario on every runtime.

mod common;

use std::time::{Duration, Instant};

use common::{options, Probe};
use echo_proto::Event;
use echo_runtime::Runtime;

/// C's redial backoff: a refusal starts it at 2^5 of this (see
/// `GOODBYE_BACKOFF_STEPS` in the core), so with the jitter (×0.5–1) the next dial is
/// at least 16× this later; a plain lost set-up would redial after 0.5–1× this.
const BACKOFF: Duration = Duration::from_millis(50);

/// B (`max_peers(1)`) already holds A; C dials B twice in a row (its own dial, then its
/// redial): each dial fails with the goodbye's reason, "too many peers", never "connection
/// lost during set-up", and the redial waits the refusal's long backoff, not the short
/// one of a dial that merely failed.
async fn refused_dialer_sees_reason<R: Runtime>(rt: R) {
    let mut ob = options("b", 71);
    ob.config.auto_connect = false;
    ob.config.max_peers = 1;
    let mut oa = options("a", 70);
    oa.config.auto_connect = false;
    let mut oc = options("c", 72);
    oc.config.auto_connect = false;
    oc.config.backoff_initial = BACKOFF;
    oc.config.backoff_max = BACKOFF * 64;
    // Keep redialing a peer it never reached (the default gives up after 5 attempts;
    // a refusal counts as 5).
    oc.config.max_dial_attempts_unconnected = 100;
    let mut a = Probe::start(&rt, oa).await;
    let mut b = Probe::start(&rt, ob).await;
    let mut c = Probe::start(&rt, oc).await;
    a.h.connect(&b.addr()).await.unwrap();
    a.peer_up(b.id()).await;
    b.peer_up(a.id()).await;

    c.h.connect(&b.addr()).await.unwrap();
    let mut failed_at = Vec::new();
    for _ in 0..2 {
        let ev = c
            .wait("dial failed", |e| matches!(e, Event::DialFailed { .. }))
            .await;
        failed_at.push(Instant::now());
        let Event::DialFailed { reason, .. } = ev else {
            unreachable!()
        };
        assert!(reason.is_refusal(), "{reason}");
        assert!(reason.to_string().contains("too many peers"), "{reason}");
    }
    // The refusal's backoff (a lower bound: a loaded machine only makes it longer).
    let gap = failed_at[1] - failed_at[0];
    assert!(gap >= BACKOFF * 16, "redialed after {gap:?}");

    // A is unaffected.
    a.h.send("general", "still here").await.unwrap();
    b.message("still here").await;
    let cid = c.id();
    assert_eq!(b.h.connection_count(cid).await.unwrap(), 0);
    for p in [&a, &b, &c] {
        p.h.shutdown().await;
    }
}
scenario!(refused_dialer_sees_reason);
