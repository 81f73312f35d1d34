//! The chat substream's byte pump, shared by the direct driver's connections and the
//! swarm adapter: the node's transmits written coalesced (one flush per batch), and
//! reads a chunk at a time into a reused buffer.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures::{AsyncRead, AsyncWrite};

/// Writes smaller than this are merged with the following ones into one write.
const COALESCE: usize = 64 * 1024;
const READ_BUF: usize = 64 * 1024;

/// What one [`Pipe::poll_write`] did.
pub(crate) struct Written {
    /// Bytes were written or flushed, or writing failed.
    pub progress: bool,
    /// Writing failed (closed or reset by the peer): the reason. What was queued is
    /// dropped and counted; later writes are dropped.
    pub failed: Option<String>,
}

pub(crate) struct Pipe {
    /// Transmits not yet written, and the one being written.
    out: VecDeque<Bytes>,
    wbuf: Bytes,
    need_flush: bool,
    /// Writing failed (the peer closed or reset): only reading goes on.
    pub write_failed: bool,
    /// Bytes written and not yet reported to the node.
    pub sent: usize,
    /// Transmits dropped because writing failed.
    pub discarded: u64,
    rbuf: Box<[u8]>,
}

impl Pipe {
    pub fn new() -> Self {
        Pipe {
            out: VecDeque::new(),
            wbuf: Bytes::new(),
            need_flush: false,
            write_failed: false,
            sent: 0,
            discarded: 0,
            rbuf: vec![0; READ_BUF].into_boxed_slice(),
        }
    }

    /// Queues bytes (dropped and counted once writing failed).
    pub fn queue(&mut self, data: Bytes) {
        if self.write_failed {
            self.discarded += data.len() as u64;
        } else {
            self.out.push_back(data);
        }
    }

    /// Everything queued is written and flushed.
    pub fn idle(&self) -> bool {
        self.out.is_empty() && self.wbuf.is_empty() && !self.need_flush
    }

    /// Drops the transmits not yet written, counting them.
    pub fn discard_writes(&mut self) {
        self.discarded += (self.wbuf.len() + self.out.iter().map(Bytes::len).sum::<usize>()) as u64;
        self.out.clear();
        self.wbuf.clear();
    }

    /// Writes what is queued (small transmits merged), then flushes once.
    pub fn poll_write<S: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        s: &mut S,
    ) -> Written {
        let mut w = Written {
            progress: false,
            failed: None,
        };
        if self.write_failed {
            return w;
        }
        loop {
            if self.wbuf.is_empty() {
                match self.out.pop_front() {
                    None => break,
                    Some(b) if b.len() >= COALESCE || self.out.is_empty() => self.wbuf = b,
                    Some(b) => {
                        let mut m = BytesMut::with_capacity(COALESCE + b.len());
                        m.extend_from_slice(&b);
                        while m.len() < COALESCE {
                            match self.out.pop_front() {
                                Some(n) => m.extend_from_slice(&n),
                                None => break,
                            }
                        }
                        self.wbuf = m.freeze();
                    }
                }
            }
            match Pin::new(&mut *s).poll_write(cx, &self.wbuf) {
                Poll::Ready(Ok(0)) => {
                    w.failed = Some("chat substream closed for writing".to_string());
                    break;
                }
                Poll::Ready(Ok(n)) => {
                    self.wbuf.advance(n);
                    self.sent += n;
                    self.need_flush = true;
                    w.progress = true;
                }
                Poll::Ready(Err(e)) => {
                    w.failed = Some(format!("write failed: {e}"));
                    break;
                }
                Poll::Pending => break,
            }
        }
        if w.failed.is_none() && self.need_flush && self.wbuf.is_empty() && self.out.is_empty() {
            match Pin::new(&mut *s).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.need_flush = false,
                Poll::Ready(Err(e)) => w.failed = Some(format!("flush failed: {e}")),
                Poll::Pending => {}
            }
        }
        if w.failed.is_some() {
            // Stop writing, but keep reading: what the peer wrote before closing (e.g.
            // its goodbye) is still buffered and must reach the node first; the read
            // side then reports the end.
            w.progress = true;
            self.write_failed = true;
            self.discard_writes();
            self.need_flush = false;
        }
        w
    }

    /// Reads one chunk: `Ok(None)` at EOF.
    pub fn poll_read<S: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        s: &mut S,
    ) -> Poll<std::io::Result<Option<Bytes>>> {
        Pin::new(s)
            .poll_read(cx, &mut self.rbuf)
            .map(|r| r.map(|n| (n > 0).then(|| Bytes::copy_from_slice(&self.rbuf[..n]))))
    }
}
