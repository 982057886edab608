//! Outgoing HTTP/2 frames gathered into fewer system calls.
//!
//! h2 writes every frame with its own `writev` and flushes after each one: a DATA frame
//! is at most the peer's `SETTINGS_MAX_FRAME_SIZE`, 16 KiB unless the backend raises it,
//! so a 3 MiB batch went out as some 200 system calls, each a TCP segment the backend's
//! kernel is woken for. [`Coalesce`] takes writes into a buffer of up to [`LIMIT`] bytes
//! and writes the buffer when it is full, or on a flush that follows no new write: h2
//! flushes once per frame while it has frames queued, and once more when it has none,
//! so a flush right after a write is answered by yielding once (the task is woken at
//! once) and the connection queues its next frame first. What h2 has flushed with
//! nothing left to queue is written before the flush returns.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes held before they are written: 64 KiB, the loopback MTU and a few
/// frames of the default size.
pub(crate) const LIMIT: usize = 64 * 1024;

/// A writer that gathers small writes (see the module documentation).
pub(crate) struct Coalesce<T> {
    inner: T,
    buf: Vec<u8>,
    /// How much of `buf` is already written.
    written: usize,
    /// Bytes were taken since the last flush: the next flush yields once instead.
    fresh: bool,
}

impl<T> Coalesce<T> {
    pub(crate) fn new(inner: T) -> Self {
        Coalesce {
            inner,
            buf: Vec::new(),
            written: 0,
            fresh: false,
        }
    }

    fn held(&self) -> usize {
        self.buf.len() - self.written
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes out what is held; `Ready(Ok)` once nothing is.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes; `false`: write them straight through instead. A
    /// drain the socket cut short is finished first, so the buffer, written part
    /// included, never holds more than [`LIMIT`] bytes.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.written > 0 || self.held() + len > LIMIT {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(len < LIMIT))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !ready!(this.poll_room(cx, data.len()))? {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.buf.extend_from_slice(data);
        this.fresh |= !data.is_empty();
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum();
        if !ready!(this.poll_room(cx, len))? {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        this.fresh |= len > 0;
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if std::mem::take(&mut this.fresh) && this.held() < LIMIT {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::{Arc, Mutex};

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Records each write the way it reached the socket.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

    impl AsyncWrite for Writes {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            // At most 10,000 bytes a call, as a socket with a full buffer would take.
            let n = data.len().min(10_000);
            self.0.lock().unwrap().push(data[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl Writes {
        fn sizes(&self) -> Vec<usize> {
            self.0.lock().unwrap().iter().map(Vec::len).collect()
        }

        fn bytes(&self) -> Vec<u8> {
            self.0.lock().unwrap().concat()
        }
    }

    #[tokio::test]
    async fn frames_flushed_one_by_one_go_out_together() {
        let socket = Writes::default();
        let mut out = Coalesce::new(socket.clone());
        let mut sent = Vec::new();
        for i in 0..3u8 {
            let frame = vec![i; 16_393];
            sent.extend_from_slice(&frame);
            out.write_all(&frame).await.unwrap();
            // Each flush after a write yields once and writes nothing.
            let flush = std::pin::pin!(out.flush());
            assert!(flush
                .poll(&mut Context::from_waker(std::task::Waker::noop()))
                .is_pending());
        }
        assert!(
            socket.sizes().is_empty(),
            "nothing written before the flush"
        );
        // A flush with nothing new writes what is held, in the socket's pieces.
        out.flush().await.unwrap();
        assert_eq!(socket.bytes(), sent);
        assert_eq!(
            socket.sizes(),
            [10_000; 4]
                .iter()
                .copied()
                .chain([9_179])
                .collect::<Vec<_>>()
        );
    }

    /// Takes at most `room` bytes, then is full (Pending) until `room` is raised.
    struct Full {
        got: Vec<u8>,
        room: usize,
    }

    impl AsyncWrite for Full {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = data.len().min(self.room);
            if n == 0 {
                return Poll::Pending;
            }
            self.room -= n;
            self.got.extend_from_slice(&data[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_drain_the_socket_cut_short_is_finished_before_more_is_taken() {
        let mut out = Coalesce::new(Full {
            got: Vec::new(),
            room: 1_000,
        });
        let frame = vec![1u8; 16_000];
        let write = |out: &mut Coalesce<Full>| {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            Pin::new(out).poll_write(&mut cx, &frame)
        };
        assert!(matches!(write(&mut out), Poll::Ready(Ok(16_000))));
        // A flush after nothing new: the drain starts, the socket takes 1,000 bytes.
        let flush = |out: &mut Coalesce<Full>| {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            Pin::new(out).poll_flush(&mut cx)
        };
        assert!(flush(&mut out).is_pending(), "yields once after a write");
        assert!(flush(&mut out).is_pending(), "the socket is full");
        assert_eq!(out.written, 1_000);
        // While the socket stays full, nothing more is taken.
        for _ in 0..10 {
            assert!(write(&mut out).is_pending());
        }
        assert_eq!(out.buf.len(), 16_000);
        // Once it has room, the rest goes out first, then the new write is taken.
        out.inner.room = usize::MAX;
        assert!(matches!(write(&mut out), Poll::Ready(Ok(16_000))));
        assert_eq!(
            (out.inner.got.len(), out.buf.len(), out.written),
            (16_000, 16_000, 0)
        );
    }

    #[tokio::test]
    async fn the_buffer_never_holds_more_than_its_limit() {
        let socket = Writes::default();
        let mut out = Coalesce::new(socket.clone());
        let mut sent = Vec::new();
        for i in 0..10u8 {
            let frame = vec![i; 16_393];
            sent.extend_from_slice(&frame);
            out.write_all(&frame).await.unwrap();
            assert!(out.held() <= LIMIT);
        }
        assert!(!socket.sizes().is_empty(), "a full buffer is written");
        let big = vec![7u8; LIMIT + 1];
        sent.extend_from_slice(&big);
        out.write_all(&big).await.unwrap();
        out.shutdown().await.unwrap();
        assert_eq!(socket.bytes(), sent, "in order, nothing lost");
    }
}
