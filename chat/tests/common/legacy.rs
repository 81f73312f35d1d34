//! A raw libp2p peer speaking the legacy echo-go line protocol (included by the tests
//! that need it with `#[path]`).

use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{identity::Keypair, noise, ping, tcp, yamux, Multiaddr, StreamProtocol};

#[derive(NetworkBehaviour)]
struct Behaviour {
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// Opens a `/echo-go/chat/1.0.0` stream to `addr` (with `/p2p/<id>`) from a fresh
/// libp2p identity, on `rt`.
pub fn open(rt: &tokio::runtime::Runtime, addr: &str) -> libp2p::Stream {
    let addr: Multiaddr = addr.parse().unwrap();
    let peer = match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(p)) => p,
        _ => panic!("no /p2p/ in {addr}"),
    };
    rt.block_on(async {
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| Behaviour {
                ping: ping::Behaviour::default(),
                stream: libp2p_stream::Behaviour::new(),
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();
        let mut control = swarm.behaviour().stream.new_control();
        swarm.dial(addr).unwrap();
        tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        let proto = StreamProtocol::new(echo_runtime::LEGACY);
        tokio::time::timeout(
            std::time::Duration::from_secs(40),
            control.open_stream(peer, proto),
        )
        .await
        .expect("legacy stream opens in time")
        .expect("echo-chat accepts /echo-go/chat/1.0.0")
    })
}

pub fn write(rt: &tokio::runtime::Runtime, s: &mut libp2p::Stream, bytes: &[u8]) {
    rt.block_on(async {
        s.write_all(bytes).await.unwrap();
        s.flush().await.unwrap();
    })
}
