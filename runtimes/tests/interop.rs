//! Interop with rust-libp2p: a `libp2p` swarm (tcp, noise, yamux, ping, libp2p-stream)
//! dials an echo node on each runtime, pings it, speaks `/echo/chat/2.0.0` with frames
//! made by an in-process echo `Node` (same identity as the swarm), and speaks
//! `/echo-go/chat/1.0.0` lines from a second swarm.
#![cfg(feature = "tokio")]

mod common;

use std::time::{Duration, Instant};

use common::{bounded, options, tcp_swarm, Probe, WAIT};
use echo_proto::{ConnId, ConnInfo, Event, Node, Output, Protocol, Role};
use echo_runtime::Runtime;
use futures::channel::mpsc;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identity::Keypair, ping, Multiaddr, StreamProtocol, Swarm};

#[derive(NetworkBehaviour)]
struct Behaviour {
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
}

fn swarm(key: Keypair) -> Swarm<Behaviour> {
    tcp_swarm(key, |_| Behaviour {
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(100))),
        stream: libp2p_stream::Behaviour::new(),
    })
}

/// Drives the swarm on its own task; reports successful pings.
fn drive(
    mut swarm: Swarm<Behaviour>,
) -> (libp2p_stream::Control, mpsc::UnboundedReceiver<Duration>) {
    let control = swarm.behaviour().stream.new_control();
    let (tx, rx) = mpsc::unbounded();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                result: Ok(rtt),
                ..
            })) = swarm.select_next_some().await
            {
                if tx.unbounded_send(rtt).is_err() {
                    return;
                }
            }
        }
    });
    (control, rx)
}

async fn interop<R: Runtime>(rt: R) {
    let mut echo = Probe::start(&rt, options("echo", 70)).await;
    let addr: Multiaddr = echo.addr().parse().unwrap();

    // --- /echo/chat/2.0.0 and ping ---
    let key = Keypair::ed25519_from_bytes([71; 32]).unwrap();
    let mut s = swarm(key.clone());
    s.dial(addr.clone()).unwrap();
    let (mut control, mut pings) = drive(s);
    let rtt = bounded(&rt, WAIT, "a libp2p ping answered", pings.next())
        .await
        .unwrap();
    assert!(rtt < Duration::from_secs(5));

    let mut stream = bounded(
        &rt,
        WAIT,
        "chat stream",
        control.open_stream(echo.id(), StreamProtocol::new(echo_runtime::CHAT)),
    )
    .await
    .expect("echo accepts /echo/chat/2.0.0");
    // The source of protocol bytes: an echo Node with the swarm's identity.
    let now = Instant::now();
    let mut x = Node::new(
        echo_proto::Identity::try_from(key.clone()).unwrap(),
        echo_proto::Config::default().name("rust-libp2p"),
        71,
        now,
    );
    let info = ConnInfo {
        peer: echo.id(),
        role: Role::Dialer,
        remote_addr: addr.clone(),
        protocol: Protocol::Chat,
        dial: None,
        link: echo_proto::Link::Direct,
    };
    x.handle_connected(ConnId(1), info, now);
    let mut x_events = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Pumps X's output to the stream, then reads until `done` holds for X's events.
    macro_rules! pump_until {
        ($what:expr, $done:expr) => {
            bounded(&rt, WAIT, $what, async {
                loop {
                    loop {
                        match x.poll_output() {
                            Output::Transmit(t) => {
                                stream.write_all(&t.data).await.unwrap();
                                x.handle_sent(t.conn, t.data.len());
                            }
                            Output::Event(e) => x_events.push(e),
                            Output::Wait(_) => break,
                            _ => {}
                        }
                    }
                    stream.flush().await.unwrap();
                    if $done(&x_events) {
                        break;
                    }
                    let n = stream.read(&mut buf).await.unwrap();
                    assert!(n > 0, "echo closed the chat stream");
                    x.handle_data(ConnId(1), &buf[..n], Instant::now());
                }
            })
            .await
        };
    }
    // Hello both ways.
    pump_until!("echo's hello", |ev: &Vec<Event>| ev
        .iter()
        .any(|e| matches!(e, Event::PeerUp(_))));
    echo.peer_up(key.public().to_peer_id()).await;
    // A signed room message from the libp2p side.
    x.send(
        "general",
        "hello from rust-libp2p",
        std::time::SystemTime::now(),
        Instant::now(),
    )
    .unwrap();
    pump_until!("flush", |_: &Vec<Event>| true);
    let Event::Message { msg, .. } = echo.message("hello from rust-libp2p").await else {
        unreachable!()
    };
    assert_eq!(msg.author(), key.public().to_peer_id());
    // And one back.
    echo.h.send("general", "hello, libp2p").await.unwrap();
    pump_until!("echo's message", |ev: &Vec<Event>| ev.iter().any(
        |e| matches!(e, Event::Message { msg, .. } if msg.text() == "hello, libp2p")
    ));

    // --- /echo-go/chat/1.0.0 lines from another swarm ---
    let gokey = Keypair::ed25519_from_bytes([72; 32]).unwrap();
    let mut g = swarm(gokey.clone());
    g.dial(addr.clone()).unwrap();
    let (mut gcontrol, _gpings) = drive(g);
    let mut line = bounded(
        &rt,
        WAIT,
        "legacy stream",
        gcontrol.open_stream(echo.id(), StreamProtocol::new(echo_runtime::LEGACY)),
    )
    .await
    .expect("echo accepts /echo-go/chat/1.0.0");
    line.write_all(b"gopher|hello from echo-go\n")
        .await
        .unwrap();
    line.flush().await.unwrap();
    let Event::Message { msg, position } = echo.message("hello from echo-go").await else {
        unreachable!()
    };
    assert_eq!(msg.author(), gokey.public().to_peer_id());
    assert!(position.is_none(), "legacy lines are not in the log");
    echo.h.send("general", "hi gopher").await.unwrap();
    let mut got = Vec::new();
    bounded(&rt, WAIT, "a line for the gopher", async {
        while !String::from_utf8_lossy(&got).contains("|hi gopher\n") {
            let n = line.read(&mut buf).await.unwrap();
            assert!(n > 0, "echo closed the legacy stream");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        String::from_utf8_lossy(&got).contains("echo|hi gopher\n"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    echo.h.shutdown().await;
}

fn on_tokio_with<R: Runtime>(rt: R) {
    let tk = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    tk.block_on(bounded(
        &rt.clone(),
        common::SCENARIO_LIMIT,
        "interop",
        interop(rt),
    ));
    tk.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn echo_on_tokio() {
    let tk = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    tk.block_on(async {
        let rt = echo_runtime::tokio::TokioRuntime::current();
        bounded(&rt.clone(), common::SCENARIO_LIMIT, "interop", interop(rt)).await
    });
    tk.shutdown_timeout(Duration::from_secs(1));
}

#[cfg(feature = "smol")]
#[test]
fn echo_on_smol() {
    on_tokio_with(echo_runtime::smol::SmolRuntime);
}

#[cfg(feature = "async-std")]
#[test]
fn echo_on_async_std() {
    on_tokio_with(echo_runtime::async_std::AsyncStdRuntime);
}
