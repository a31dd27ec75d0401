//! Lingering close for server connections.
//!
//! When a server closes a TCP socket that still has unread bytes from the
//! peer (an HTTP/2 WINDOW_UPDATE or PING sent just as the server finished),
//! the kernel answers with a reset, and a reset can discard the last
//! answers the peer had not read yet: a call that completed on the server
//! ends "connection reset" or "broken pipe" on the client. This happens
//! at shutdown, when a connection closes right after its last call.
//!
//! [`Lingering`] closes the way servers avoid that: when the connection is
//! dropped, its socket is kept open in a background task that reads and
//! discards until the peer closes its side (it has seen the server's FIN
//! and GOAWAY) or [`LINGER`] passes, and only then closes it. The tasks
//! are tracked, so that shutdown waits for them before the process exits
//! (an exit would reset those sockets too).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::task::TaskTracker;

/// The longest a closed connection waits for its peer to close.
pub const LINGER: Duration = Duration::from_secs(2);

/// A connection that lingers when dropped (see the module docs).
pub struct Lingering<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    inner: Option<S>,
    tracker: TaskTracker,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Lingering<S> {
    /// `tracker` holds the lingering close once the connection is dropped.
    pub fn new(inner: S, tracker: TaskTracker) -> Self {
        Lingering {
            inner: Some(inner),
            tracker,
        }
    }

    pub fn get_ref(&self) -> Option<&S> {
        self.inner.as_ref()
    }

    fn io(&mut self) -> io::Result<&mut S> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Lingering<S> {
    fn drop(&mut self) {
        let Some(mut io) = self.inner.take() else { return };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        self.tracker.spawn(async move {
            let drained = async {
                // Our side is done: FIN, then read until the peer's.
                let _ = io.shutdown().await;
                let mut discard = [0u8; 1024];
                while let Ok(n) = io.read(&mut discard).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER, drained).await;
        });
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Lingering<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().io() {
            Ok(io) => Pin::new(io).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Lingering<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut().io() {
            Ok(io) => Pin::new(io).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().io() {
            Ok(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().io() {
            Ok(io) => Pin::new(io).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().io() {
            Ok(io) => Pin::new(io).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}
