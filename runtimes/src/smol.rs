//! [`Runtime`] for smol.
//!
//! Tasks go to smol's global executor ([`smol::spawn`]), which runs on **one thread**
//! unless the `SMOL_THREADS` environment variable says otherwise (read once, at its
//! first use). I/O and timers use `async-io`'s reactor; streams are `smol::net` ones,
//! whose close sends a FIN.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::FutureExt;
use smol::net::{TcpListener, TcpStream};

use crate::runtime::{bind_std, Incoming, Runtime, Timer};
use crate::{Events, Handle, Options, StartError};

/// Runs echo on smol's global executor.
#[derive(Debug, Clone, Copy, Default)]
pub struct SmolRuntime;

impl Runtime for SmolRuntime {
    type Tcp = TcpStream;

    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        smol::spawn(future).detach();
    }

    fn timer(&self, at: Instant) -> Pin<Box<dyn Timer>> {
        Box::pin(smol::Timer::at(at))
    }

    fn listen(&self, addr: SocketAddr) -> io::Result<(SocketAddr, Incoming<Self::Tcp>)> {
        let l = TcpListener::try_from(bind_std(addr)?)?;
        let local = l.local_addr()?;
        let incoming = futures::stream::unfold(l, |l| async move {
            let r = l.accept().await.and_then(|(s, a)| {
                s.set_nodelay(true)?;
                Ok((s, a))
            });
            Some((r, l))
        });
        Ok((local, Box::pin(incoming)))
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Self::Tcp>> {
        async move {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(s)
        }
        .boxed()
    }

    fn resolve(&self, host: String, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        async move { smol::net::resolve((host.as_str(), port)).await }.boxed()
    }
}

/// Starts a node on smol's global executor (see [`crate::start`]).
pub async fn start(options: Options) -> Result<(Handle, Events), StartError> {
    crate::start(SmolRuntime, options).await
}
