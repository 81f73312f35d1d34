//! A swarm node driven over stdin/stdout, for the NAT tests (`tests/nat.rs` runs it in
//! network namespaces) and for trying relays by hand:
//!
//! ```text
//! natnode [--name N] [--seed S] [--key B] [--listen ADDR]... [--relay ADDR]... [--relay-server] [--no-quic]
//! ```
//!
//! `--key B` makes the identity from the byte B (the same peer id on every start).
//! Prints `addr <a>` for each listen address and `ready` once started, then one line per
//! event: `up <peer> <Direct|Relayed>`, `link <peer> <Direct|Relayed>`, `msg <text>`,
//! `upgraded <peer>`, `reserved <addr>`, `lost <relay> <retry ms>`, `nat <status>`,
//! `down <peer>`. Reads commands: `connect <addr>`, `send <text>`, `quit`.

use std::io::{BufRead, Write};

use echo_runtime::proto::Event;
use echo_runtime::swarm::{start, SwarmOptions};
use echo_runtime::RuntimeEvent;
use futures::StreamExt;

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn describe(e: RuntimeEvent) -> Option<String> {
    Some(match e {
        RuntimeEvent::Event(Event::PeerUp(p)) => format!("up {} {:?}", p.peer, p.link),
        RuntimeEvent::Event(Event::LinkChanged { peer, link }) => format!("link {peer} {link:?}"),
        RuntimeEvent::Event(Event::Message { msg, .. }) => format!("msg {}", msg.text()),
        RuntimeEvent::Event(Event::PeerDown { peer, .. }) => format!("down {peer}"),
        RuntimeEvent::LinkUpgraded { peer } => format!("upgraded {peer}"),
        RuntimeEvent::RelayReserved { addr } => format!("reserved {addr}"),
        RuntimeEvent::RelayLost {
            relay, retry_in, ..
        } => format!("lost {relay} {}", retry_in.as_millis()),
        RuntimeEvent::NatStatus { nat } => format!("nat {nat:?}"),
        _ => return None,
    })
}

async fn run(o: SwarmOptions) -> Result<(), Box<dyn std::error::Error>> {
    let (node, mut events) = start(o).await?;
    for a in node.listen_addrs() {
        say(format!("addr {a}"));
    }
    say("ready".into());
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            if let Some(line) = describe(e) {
                say(line);
            }
        }
    });
    // Commands on a thread of their own (stdin blocks).
    let (tx, mut rx) = futures::channel::mpsc::unbounded();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.unbounded_send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.next().await {
        let (cmd, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let r = match cmd {
            "connect" => node.connect(arg).await.map(|_| ()),
            "send" => node.send("general", arg).await.map(|_| ()),
            "quit" => break,
            _ => Ok(()),
        };
        if let Err(e) = r {
            say(format!("error {e}"));
        }
    }
    node.shutdown().await;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut o = SwarmOptions::new(Vec::<String>::new());
    let (mut listen, mut name) = (Vec::new(), "node".to_string());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--name" => name = value()?,
            "--seed" => o.options.seed = value()?.parse()?,
            "--key" => {
                let b: u8 = value()?.parse()?;
                o.options.identity = echo_runtime::proto::Identity::from_secret_bytes([b; 32]);
            }
            "--listen" => listen.push(value()?),
            "--relay" => o.relays.push(value()?),
            "--relay-server" => o.relay_server = true,
            "--no-quic" => o.quic = false,
            _ => return Err(format!("unknown argument {arg}").into()),
        }
    }
    o.options.listen = listen;
    o.options.config = o.options.config.name(&name);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run(o))
}
