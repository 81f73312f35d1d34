//! A bot that answers in a room: `!ping` gets `pong`, `!time` gets the UTC time.
//!
//! ```sh
//! cargo run -p echo-runtime --features smol --example bot -- [--smol] [--listen ADDR] [PEER...]
//! ```
//!
//! It listens on `--listen` (default `/ip4/127.0.0.1/tcp/0`), prints its address, dials
//! each `PEER` address, joins `#general` and answers there until stopped. Runs on tokio,
//! or on smol with `--smol`. The logic ([`run`]) is the same on every runtime: it only
//! uses the runtime-neutral [`Handle`] and [`Events`].

use std::time::{SystemTime, UNIX_EPOCH};

use echo_runtime::proto::{CommandError, Event};
use echo_runtime::{Error, Events, Handle, Options, RuntimeEvent, StartError};
use futures::{Future, StreamExt};

/// The room the bot answers in.
pub const ROOM: &str = "general";

/// The bot's reply to `text`, if it is a command.
pub fn answer(text: &str, now: SystemTime) -> Option<String> {
    match text.trim() {
        "!ping" => Some("pong".to_string()),
        "!time" => {
            let s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() % 86_400;
            Some(format!(
                "{:02}:{:02}:{:02} UTC",
                s / 3600,
                s / 60 % 60,
                s % 60
            ))
        }
        _ => None,
    }
}

/// Joins `room` and answers every command posted there by someone else, until the node
/// stops.
pub async fn run(node: Handle, mut events: Events, room: &str) -> Result<(), Error> {
    match node.join(room).await {
        // `general` is joined from the start.
        Ok(()) | Err(Error::Command(CommandError::AlreadyJoined(_))) => {}
        Err(e) => return Err(e),
    }
    while let Some(event) = events.next().await {
        let RuntimeEvent::Event(Event::Message { msg, .. }) = event else {
            continue;
        };
        if msg.room() != room || msg.author() == node.peer_id() {
            continue; // another room, or our own reply
        }
        if let Some(reply) = answer(msg.text(), SystemTime::now()) {
            node.send(room, &reply).await?;
        }
    }
    Ok(())
}

/// Starts the node with `start` (one runtime's), dials `peers` and runs the bot.
async fn serve<F>(
    start: impl FnOnce(Options) -> F,
    listen: String,
    peers: Vec<String>,
) -> Result<(), Box<dyn std::error::Error>>
where
    F: Future<Output = Result<(Handle, Events), StartError>>,
{
    let mut options = Options::new([listen]);
    options.config = options.config.name("bot");
    let (node, events) = start(options).await?;
    for addr in node.listen_addrs() {
        println!("bot listening on {addr}");
    }
    for peer in &peers {
        node.connect(peer).await?;
    }
    run(node, events, ROOM).await?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut smol, mut listen, mut peers) = (false, "/ip4/127.0.0.1/tcp/0".to_string(), vec![]);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smol" => smol = true,
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            _ => peers.push(arg),
        }
    }
    if smol {
        smol::block_on(serve(echo_runtime::smol::start, listen, peers))
    } else {
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(serve(echo_runtime::tokio::start, listen, peers))
    }
}
