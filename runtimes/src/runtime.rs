//! The runtime abstraction: the few things the shared driver needs from an async runtime.
//!
//! Everything else (the node task, connection tasks, libp2p upgrades, ping) is written
//! once in terms of [`Runtime`], `futures::AsyncRead` and `futures::AsyncWrite`.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{AsyncRead, AsyncWrite};

/// A resettable one-shot timer (one per node task, one per connection task).
pub trait Timer: Send + Debug {
    /// Fire at `at` instead.
    fn reset(self: Pin<&mut Self>, at: Instant);
    /// Ready once the deadline has passed (and again on every poll until reset).
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
}

/// Accepted connections of one listener, with the remote's address.
pub type Incoming<S> = BoxStream<'static, io::Result<(S, SocketAddr)>>;

/// What the driver needs from an async runtime: spawn, timers, a clock and TCP.
///
/// Implementations set `TCP_NODELAY` on every stream they hand out, and their streams
/// send a FIN (write shutdown) on `poll_close`.
pub trait Runtime: Clone + Send + Sync + Unpin + Debug + 'static {
    /// A connected TCP stream.
    type Tcp: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Runs `future` in the background to completion (the driver never joins tasks).
    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static);

    /// A timer firing at `at`.
    fn timer(&self, at: Instant) -> Pin<Box<dyn Timer>>;

    /// The monotonic clock the timers use.
    fn now(&self) -> Instant {
        Instant::now()
    }

    /// Binds a TCP listener (synchronously, so "address in use" is reported at start).
    /// Returns the bound address and the stream of accepted connections; dropping the
    /// stream closes the listener.
    fn listen(&self, addr: SocketAddr) -> io::Result<(SocketAddr, Incoming<Self::Tcp>)>;

    /// Opens a TCP connection.
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Self::Tcp>>;

    /// Resolves a host name (for `/dns`, `/dns4`, `/dns6` addresses).
    fn resolve(&self, host: String, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>>;
}

/// Binds a std listener the way every runtime module does (non-blocking; std sets
/// `SO_REUSEADDR` on Unix, so a restarted node can take its port back at once).
#[allow(dead_code)]
pub(crate) fn bind_std(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Waits for `timer`.
pub(crate) fn sleep(timer: &mut Pin<Box<dyn Timer>>) -> impl Future<Output = ()> + '_ {
    futures::future::poll_fn(move |cx| timer.as_mut().poll(cx))
}

#[cfg(any(feature = "smol", feature = "async-std"))]
impl Timer for async_io_timer::Timer {
    fn reset(mut self: Pin<&mut Self>, at: Instant) {
        self.set_at(at);
    }
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Future::poll(self.as_mut(), cx).map(|_| ())
    }
}

#[cfg(all(feature = "async-std", not(feature = "smol")))]
pub(crate) use async_io as async_io_timer;
#[cfg(feature = "smol")]
pub(crate) use smol as async_io_timer;
