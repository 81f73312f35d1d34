//! The examples' logic (`examples/bot.rs`, `examples/bridge.rs`), run against real
//! nodes on 127.0.0.1 on every runtime the examples support.
#![cfg(all(feature = "tokio", feature = "smol"))]

mod common;

#[allow(dead_code)]
#[path = "../examples/bot.rs"]
mod bot;
#[allow(dead_code)]
#[path = "../examples/bridge.rs"]
mod bridge;

use std::time::{Duration, UNIX_EPOCH};

use common::{bounded, options, Probe, WAIT};
use echo_proto::Event;
use echo_runtime::Runtime;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};

#[test]
fn bot_answers_commands_only() {
    let at = UNIX_EPOCH + Duration::from_secs(3 * 86_400 + 3600 + 2 * 60 + 3);
    assert_eq!(bot::answer("!ping", at).as_deref(), Some("pong"));
    assert_eq!(bot::answer(" !time\n", at).as_deref(), Some("01:02:03 UTC"));
    assert_eq!(bot::answer("hello", at), None);
    assert_eq!(bot::answer("!pingg", at), None);
}

/// A user in the room asks the bot; the bot answers `!ping` and `!time`, and nothing else.
async fn bot_in_a_room<R: Runtime>(rt: R) {
    let (bot_node, bot_events) = echo_runtime::start(rt.clone(), options("bot", 1))
        .await
        .unwrap();
    let (bot_id, bot_addr) = (bot_node.peer_id(), bot_node.listen_addrs()[0].to_string());
    let task = bot_node.clone();
    rt.spawn(async move {
        bot::run(task, bot_events, bot::ROOM).await.unwrap();
    });

    let mut user = Probe::start(&rt, options("user", 2)).await;
    user.h.connect(&bot_addr).await.unwrap();
    user.peer_up(bot_id).await;
    for ask in ["!ping", "just chatting", "!time", "!ping"] {
        user.h.send(bot::ROOM, ask).await.unwrap();
    }
    let from_bot = |e: &Event| matches!(e, Event::Message { msg, .. } if msg.author() == bot_id);
    let mut said = Vec::new();
    for _ in 0..3 {
        match user.wait("the bot's answer", from_bot).await {
            Event::Message { msg, .. } => said.push(msg.text().to_string()),
            _ => unreachable!(),
        }
    }
    assert_eq!(said[0], "pong");
    assert!(said[1].ends_with(" UTC"), "{said:?}");
    assert_eq!(said[2], "pong");
    bot_node.shutdown().await;
    user.h.shutdown().await;
}
scenario!(bot_in_a_room);

/// Lines fed to the bridge reach a reader in the room (blank ones skipped), and what
/// the reader says there is handed back to the bridge's output.
async fn bridge_into_a_room<R: Runtime>(rt: R) {
    let mut reader = Probe::start(&rt, options("reader", 3)).await;
    let (node, events) = echo_runtime::start(rt.clone(), options("bridge", 4))
        .await
        .unwrap();
    let bridge_id = node.peer_id();
    node.connect(&reader.addr()).await.unwrap();
    reader.peer_up(bridge_id).await;

    let (mut lines, lines_rx) = mpsc::channel(4);
    let (heard_tx, mut heard) = mpsc::unbounded();
    let bridge = bridge::run(&node, lines_rx, events, bridge::ROOM, move |l| {
        heard_tx.unbounded_send(l).unwrap();
    });
    let drive = async {
        lines.send("one".to_string()).await.unwrap();
        reader.message("one").await;
        reader.h.send(bridge::ROOM, "hi bridge").await.unwrap();
        let got = bounded(&rt, WAIT, "the bridge hears", heard.next()).await;
        let got = got.unwrap();
        assert!(
            got.starts_with("reader#") && got.ends_with(": hi bridge"),
            "{got}"
        );
        for l in ["", "  ", "two"] {
            lines.send(l.to_string()).await.unwrap();
        }
        drop(lines); // end of input: the bridge returns
        reader.message("two").await;
    };
    let (posted, ()) = futures::join!(bridge, drive);
    posted.unwrap();
    let from_bridge = reader
        .dump()
        .into_iter()
        .filter(|e| e.starts_with("Message(bridge#"))
        .count();
    assert_eq!(from_bridge, 2, "{:?}", reader.dump());
    node.shutdown().await;
    reader.h.shutdown().await;
}
scenario!(bridge_into_a_room);
