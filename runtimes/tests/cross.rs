//! A tokio node, a smol node and an async-std node in one room.
#![cfg(all(feature = "tokio", feature = "smol", feature = "async-std"))]

mod common;

use common::{bounded, options, Probe, SCENARIO_LIMIT};
use echo_runtime::{async_std::AsyncStdRuntime, smol::SmolRuntime};

#[test]
fn three_runtimes_one_room() {
    common::on_tokio(|tk| async move {
        let mut t = Probe::start(&tk, options("tokio", 60)).await;
        let mut s = Probe::start(&SmolRuntime, options("smol", 61)).await;
        let mut a = Probe::start(&AsyncStdRuntime, options("async-std", 62)).await;
        // A line S – T – A; peer exchange then closes the triangle.
        s.h.connect(&t.addr()).await.unwrap();
        a.h.connect(&t.addr()).await.unwrap();
        t.peer_up(s.id()).await;
        t.peer_up(a.id()).await;
        s.peer_up(t.id()).await;
        a.peer_up(t.id()).await;
        s.peer_up(a.id()).await;
        a.peer_up(s.id()).await;

        for round in 0..10 {
            t.h.send("general", &format!("from tokio {round}"))
                .await
                .unwrap();
            s.h.send("general", &format!("from smol {round}"))
                .await
                .unwrap();
            a.h.send("general", &format!("from async-std {round}"))
                .await
                .unwrap();
        }
        for round in 0..10 {
            for who in ["smol", "async-std"] {
                t.message(&format!("from {who} {round}")).await;
            }
            for who in ["tokio", "async-std"] {
                s.message(&format!("from {who} {round}")).await;
            }
            for who in ["tokio", "smol"] {
                a.message(&format!("from {who} {round}")).await;
            }
        }
        bounded(&tk, SCENARIO_LIMIT, "shutdowns", async {
            t.h.shutdown().await;
            s.h.shutdown().await;
            a.h.shutdown().await;
        })
        .await;
    });
}
