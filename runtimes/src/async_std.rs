//! [`Runtime`] for async-std.
//!
//! **async-std is discontinued upstream** (RUSTSEC-2025-0052): this module is kept for
//! existing async-std applications; new code should use tokio or smol. Tasks go to
//! async-std's global executor (one thread per core); timers use `async-io`, the reactor
//! async-std itself runs on. async-std's `TcpStream::close` only flushes, so streams are
//! wrapped to send a FIN (write shutdown) on close.

use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use async_std::net::{TcpListener, TcpStream};
use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncWrite, FutureExt};

use crate::runtime::{bind_std, Incoming, Runtime, Timer};
use crate::{Events, Handle, Options, StartError};

/// Runs echo on async-std's global executor.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStdRuntime;

/// An async-std TCP stream whose `poll_close` shuts down the write side (sends a FIN).
#[derive(Debug)]
pub struct Tcp(TcpStream);

impl AsyncRead for Tcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures::ready!(Pin::new(&mut self.0).poll_flush(cx))?;
        Poll::Ready(match self.0.shutdown(Shutdown::Write) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        })
    }
}

fn tcp(s: TcpStream) -> io::Result<Tcp> {
    s.set_nodelay(true)?;
    Ok(Tcp(s))
}

impl Runtime for AsyncStdRuntime {
    type Tcp = Tcp;

    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        drop(async_std::task::spawn(future));
    }

    fn timer(&self, at: Instant) -> Pin<Box<dyn Timer>> {
        Box::pin(async_io::Timer::at(at))
    }

    fn listen(&self, addr: SocketAddr) -> io::Result<(SocketAddr, Incoming<Self::Tcp>)> {
        let l = TcpListener::from(bind_std(addr)?);
        let local = l.local_addr()?;
        let incoming = futures::stream::unfold(l, |l| async move {
            let r = l.accept().await.and_then(|(s, a)| Ok((tcp(s)?, a)));
            Some((r, l))
        });
        Ok((local, Box::pin(incoming)))
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Self::Tcp>> {
        async move { tcp(TcpStream::connect(addr).await?) }.boxed()
    }

    fn resolve(&self, host: String, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        async move {
            use async_std::net::ToSocketAddrs;
            Ok((host.as_str(), port).to_socket_addrs().await?.collect())
        }
        .boxed()
    }
}

/// Starts a node on async-std's global executor (see [`crate::start`]).
pub async fn start(options: Options) -> Result<(Handle, Events), StartError> {
    crate::start(AsyncStdRuntime, options).await
}
