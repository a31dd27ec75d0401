//! Time limits on client connections, shared by every listener (Layotto and
//! Dapr gRPC, Dapr HTTP, the actuator).
//!
//! Each accepted socket is wrapped in a [`Guarded`] connection that closes
//! it (its next read ends) when
//! - the client has sent nothing within `handshake_timeout` of connecting
//!   (an HTTP/2 client sends its preface at once, an HTTP/1 client its
//!   request line), or
//! - it has carried no request (no stream open) and no byte either way for
//!   `idle_timeout`.
//!
//! Without them a client that opens connections and sends nothing holds a
//! file descriptor and about 15 KB each, forever, until the process runs
//! out of descriptors and health checks time out.
//!
//! The servers never see the timer: it lives in the socket's `poll_read`,
//! which hyper keeps polling while it waits for the next frame or request.
//! Requests in flight are counted through the [`Activity`] the connection
//! hands each request (as tonic's connect info, or axum's `ConnectInfo`),
//! so a long call or a quiet subscription stream keeps its connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

use super::linger::Lingering;
use super::tcp_copy::{TcpCopy, Teed};
use crate::config::ServerConfig;

/// The time limits of one listener's connections.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

impl ConnLimits {
    pub fn of(server: &ServerConfig) -> Self {
        ConnLimits {
            handshake_timeout: server.handshake_timeout,
            idle_timeout: server.idle_timeout,
        }
    }
}

/// The requests (HTTP/2 streams) open on one connection; each request
/// carries a clone.
#[derive(Clone, Debug, Default)]
pub struct Activity(Arc<AtomicUsize>);

impl Activity {
    /// Marks a request open on the connection until the guard is dropped;
    /// also says how many are open with it.
    pub fn open(&self) -> (OpenRequest, usize) {
        let before = self.0.fetch_add(1, Ordering::AcqRel);
        (OpenRequest(self.0.clone()), before.saturating_add(1))
    }

    fn open_requests(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// One request open on a connection.
#[derive(Debug)]
pub struct OpenRequest(Arc<AtomicUsize>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A client connection under [`ConnLimits`].
pub struct Guarded<IO> {
    io: IO,
    limits: ConnLimits,
    activity: Activity,
    /// Fires at the next moment a limit may have run out.
    deadline: Pin<Box<Sleep>>,
    /// The client has sent its first bytes.
    greeted: bool,
    /// Last byte read or written.
    last_io: Instant,
}

impl<IO> Guarded<IO> {
    pub fn new(io: IO, limits: ConnLimits) -> Self {
        let now = Instant::now();
        Guarded {
            io,
            limits,
            activity: Activity::default(),
            deadline: Box::pin(tokio::time::sleep_until(now + limits.handshake_timeout)),
            greeted: false,
            last_io: now,
        }
    }

    pub fn activity(&self) -> Activity {
        self.activity.clone()
    }

    /// Called when a read finds nothing: has a limit run out? Otherwise
    /// the deadline is armed for the next check.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        while self.deadline.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if !self.greeted {
                return Some("nothing was sent within the handshake timeout");
            }
            let next = if self.activity.open_requests() > 0 {
                now + self.limits.idle_timeout
            } else {
                let until = self.last_io + self.limits.idle_timeout;
                if until <= now {
                    return Some("the connection was idle for the idle timeout");
                }
                until
            };
            self.deadline.as_mut().reset(next);
        }
        None
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.last_io = Instant::now();
                    if !this.greeted {
                        this.greeted = true;
                        // The handshake deadline gives way to the idle one.
                        let next = this.last_io + this.limits.idle_timeout;
                        this.deadline.as_mut().reset(next);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.expired(cx) {
                Some(why) => {
                    tracing::debug!(why, "Closing a client connection");
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)))
                }
                None => Poll::Pending,
            },
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.last_io = Instant::now();
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.last_io = Instant::now();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// tonic hands every request of the connection its [`Activity`].
impl<IO> Connected for Guarded<IO> {
    type ConnectInfo = Activity;

    fn connect_info(&self) -> Activity {
        self.activity.clone()
    }
}

/// TCP keep-alive probes on client connections: a peer that vanished
/// without a FIN is found and its connection closed.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Readies an accepted socket: no Nagle delay, keep-alive probes, limits.
pub fn guard(stream: TcpStream, limits: ConnLimits) -> Guarded<TcpStream> {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2_keepalive(&stream);
    if let Err(error) = keepalive {
        tracing::debug!(%error, "Cannot turn on TCP keep-alive");
    }
    Guarded::new(stream, limits)
}

fn socket2_keepalive(stream: &TcpStream) -> io::Result<()> {
    let sock = socket2::SockRef::from(stream);
    sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE))
}

/// The next connection on `listener`, guarded. Accept errors (out of
/// descriptors, a connection reset before it was accepted) are waited out
/// a moment rather than ending the server or spinning.
pub async fn accept(listener: &TcpListener, limits: ConnLimits) -> Guarded<TcpStream> {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return guard(stream, limits),
            Err(error) => {
                tracing::debug!(%error, "Accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The guarded connections of a gRPC listener, for tonic's
/// `serve_with_incoming_shutdown`; each lingers when closed (see
/// [`linger`](super::linger)), its close held by `lingering`, and its
/// inbound bytes are sampled by `tcp_copy` when there is one.
pub fn incoming(
    listener: TcpListener,
    limits: ConnLimits,
    lingering: tokio_util::task::TaskTracker,
    tcp_copy: Option<Arc<TcpCopy>>,
) -> impl futures::Stream<Item = io::Result<Guarded<Lingering<Teed<TcpStream>>>>> + Send + 'static {
    futures::stream::unfold(listener, move |listener| {
        let lingering = lingering.clone();
        let tcp_copy = tcp_copy.clone();
        async move {
            let io = accept(&listener, limits).await;
            let io = Guarded::new(Lingering::new(Teed::new(io.io, tcp_copy.as_ref()), lingering), limits);
            Some((Ok(io), listener))
        }
    })
}

/// An HTTP listener (for axum) whose connections are [`Guarded`].
pub struct GuardedListener {
    listener: TcpListener,
    limits: ConnLimits,
}

impl GuardedListener {
    pub fn new(listener: TcpListener, limits: ConnLimits) -> Self {
        GuardedListener { listener, limits }
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = Guarded<TcpStream>;
    type Addr = Activity;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let io = accept(&self.listener, self.limits).await;
        let activity = io.activity();
        (io, activity)
    }

    fn local_addr(&self) -> io::Result<Activity> {
        Ok(Activity::default())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, GuardedListener>> for Activity {
    fn connect_info(stream: axum::serve::IncomingStream<'_, GuardedListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// axum middleware: the request counts as open on its connection until its
/// handler answers (the response body is written after, and writing keeps
/// the connection busy too).
pub async fn count_request(request: Request, next: Next) -> Response {
    let open = request
        .extensions()
        .get::<ConnectInfo<Activity>>()
        .map(|ConnectInfo(activity)| activity.open().0);
    let response = next.run(request).await;
    drop(open);
    response
}

/// Serves `router` on `listener` under `limits` until `shutdown`.
pub async fn serve_http(
    listener: TcpListener,
    limits: ConnLimits,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = router
        .layer(axum::middleware::from_fn(count_request))
        .into_make_service_with_connect_info::<Activity>();
    axum::serve(GuardedListener::new(listener, limits), app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMITS: ConnLimits = ConnLimits {
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_closed_after_the_handshake_timeout() {
        let (server, _client) = tokio::io::duplex(64);
        let mut guarded = Guarded::new(server, LIMITS);
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let err = guarded.read(&mut buf).await.expect_err("closed");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), LIMITS.handshake_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_unless_a_request_is_open() {
        let (server, mut client) = tokio::io::duplex(64);
        let mut guarded = Guarded::new(server, LIMITS);
        client.write_all(b"hi").await.expect("write");
        let mut buf = [0u8; 8];
        assert_eq!(guarded.read(&mut buf).await.expect("read"), 2);

        // A request open for three idle timeouts keeps it.
        let (open, _) = guarded.activity().open();
        let opened = Instant::now();
        let reading = tokio::time::timeout(LIMITS.idle_timeout * 3, guarded.read(&mut buf)).await;
        assert!(reading.is_err(), "closed while a request was open: {reading:?}");
        drop(open);
        let err = guarded.read(&mut buf).await.expect_err("closed once idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(opened.elapsed() >= LIMITS.idle_timeout * 3, "{:?}", opened.elapsed());
        assert!(opened.elapsed() <= LIMITS.idle_timeout * 5, "{:?}", opened.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_a_connection() {
        let (server, mut client) = tokio::io::duplex(64);
        let mut guarded = Guarded::new(server, LIMITS);
        let mut buf = [0u8; 8];
        for _ in 0..5 {
            tokio::time::sleep(LIMITS.idle_timeout / 2).await;
            client.write_all(b"x").await.expect("write");
            assert_eq!(guarded.read(&mut buf).await.expect("read"), 1);
        }
    }
}
