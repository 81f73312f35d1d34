//! [`Runtime`] for tokio (multi-thread or current-thread).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use crate::runtime::{bind_std, Incoming, Runtime, Timer};
use crate::{Events, Handle, Options, StartError};

/// Runs echo on a tokio runtime (the one current when it is created).
#[derive(Debug, Clone)]
pub struct TokioRuntime(tokio::runtime::Handle);

impl TokioRuntime {
    /// The runtime of the calling context. Panics outside a tokio runtime.
    pub fn current() -> Self {
        TokioRuntime(tokio::runtime::Handle::current())
    }

    /// A given runtime.
    pub fn from_handle(handle: tokio::runtime::Handle) -> Self {
        TokioRuntime(handle)
    }
}

impl Timer for tokio::time::Sleep {
    fn reset(self: Pin<&mut Self>, at: Instant) {
        tokio::time::Sleep::reset(self, at.into())
    }
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Future::poll(self, cx)
    }
}

impl Runtime for TokioRuntime {
    type Tcp = Compat<tokio::net::TcpStream>;

    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.0.spawn(future);
    }

    fn timer(&self, at: Instant) -> Pin<Box<dyn Timer>> {
        let _guard = self.0.enter();
        Box::pin(tokio::time::sleep_until(at.into()))
    }

    fn listen(&self, addr: SocketAddr) -> io::Result<(SocketAddr, Incoming<Self::Tcp>)> {
        let _guard = self.0.enter();
        let l = tokio::net::TcpListener::from_std(bind_std(addr)?)?;
        let local = l.local_addr()?;
        let incoming = futures::stream::poll_fn(move |cx| {
            l.poll_accept(cx).map(|r| {
                Some(r.and_then(|(s, a)| {
                    s.set_nodelay(true)?;
                    Ok((s.compat(), a))
                }))
            })
        });
        Ok((local, Box::pin(incoming)))
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Self::Tcp>> {
        async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(s.compat())
        }
        .boxed()
    }

    fn resolve(&self, host: String, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        }
        .boxed()
    }
}

/// Starts a node on the current tokio runtime (see [`crate::start`]).
pub async fn start(options: Options) -> Result<(Handle, Events), StartError> {
    crate::start(TokioRuntime::current(), options).await
}
