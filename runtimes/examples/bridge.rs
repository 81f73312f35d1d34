//! A bridge that copies stdin lines into a room, and prints what others say there.
//!
//! ```sh
//! some-log-producer | cargo run -p echo-runtime --features smol --example bridge -- [--smol] PEER...
//! ```
//!
//! It dials each `PEER` address, joins `#general`, posts every line read from stdin
//! (blank lines skipped), prints other people's messages in the room as `name: text`,
//! and at the end of stdin says goodbye to its peers and exits. Runs on tokio, or on
//! smol with `--smol`; the logic ([`run`]) is the same on both.

use std::io::BufRead;

use echo_runtime::proto::{CommandError, Event};
use echo_runtime::{Error, Events, Handle, Options, RuntimeEvent, StartError};
use futures::channel::mpsc;
use futures::{future, Future, Stream, StreamExt};

/// The room the bridge writes to.
pub const ROOM: &str = "general";

/// Joins `room`, posts each of `lines` there and hands other people's messages in the
/// room to `heard` (as `name: text`). Returns when `lines` ends, after every line was
/// accepted by the node.
pub async fn run(
    node: &Handle,
    lines: impl Stream<Item = String>,
    events: Events,
    room: &str,
    mut heard: impl FnMut(String),
) -> Result<(), Error> {
    match node.join(room).await {
        // `general` is joined from the start.
        Ok(()) | Err(Error::Command(CommandError::AlreadyJoined(_))) => {}
        Err(e) => return Err(e),
    }
    let me = node.peer_id();
    let print = events.for_each(|event| {
        if let RuntimeEvent::Event(Event::Message { msg, .. }) = event {
            if msg.room() == room && msg.author() != me {
                heard(format!("{}: {}", msg.display_author(), msg.text()));
            }
        }
        future::ready(())
    });
    let post = async {
        let mut lines = std::pin::pin!(lines);
        while let Some(line) = lines.next().await {
            if !line.trim().is_empty() {
                node.send(room, &line).await?;
            }
        }
        Ok(())
    };
    // Printing runs until the node stops; posting until the input ends.
    match future::select(std::pin::pin!(post), std::pin::pin!(print)).await {
        future::Either::Left((posted, _)) => posted,
        future::Either::Right(((), _)) => Err(Error::Stopped),
    }
}

/// stdin's lines, read on a thread of their own so any runtime can await them.
fn stdin_lines() -> impl Stream<Item = String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut tx = tx;
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(line) => {
                    if futures::executor::block_on(futures::SinkExt::send(&mut tx, line)).is_err() {
                        break; // the bridge stopped
                    }
                }
                Err(e) => eprintln!("stdin: {e}; line skipped"),
            }
        }
    });
    rx
}

/// Starts the node with `start` (one runtime's), dials `peers` and runs the bridge.
async fn serve<F>(
    start: impl FnOnce(Options) -> F,
    peers: Vec<String>,
) -> Result<(), Box<dyn std::error::Error>>
where
    F: Future<Output = Result<(Handle, Events), StartError>>,
{
    let mut options = Options::new(["/ip4/127.0.0.1/tcp/0"]);
    options.config = options.config.name("bridge");
    let (node, mut events) = start(options).await?;
    for peer in &peers {
        node.connect(peer).await?;
    }
    if !peers.is_empty() {
        // Post only once someone is there to read it.
        while let Some(event) = events.next().await {
            if let RuntimeEvent::Event(Event::PeerUp(peer)) = event {
                eprintln!("connected to {}", peer.peer);
                break;
            }
        }
    }
    run(&node, stdin_lines(), events, ROOM, |line| {
        println!("{line}")
    })
    .await?;
    node.shutdown().await; // flushes the last lines and says goodbye
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let smol = args.iter().any(|a| a == "--smol");
    args.retain(|a| a != "--smol");
    if smol {
        smol::block_on(serve(echo_runtime::smol::start, args))
    } else {
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(serve(echo_runtime::tokio::start, args))
    }
}
