//! Accepting and serving connections, HTTP and HTTPS alike, under limits a client cannot stretch:
//!
//! - a connection cap: a listener accepts only while it holds one of [`ConnectionLimits`]'
//!   slots, so past the cap new clients wait in the kernel's listen backlog (and are answered as
//!   soon as a slot frees) instead of the process running out of file descriptors;
//! - a header-read timeout: the TLS handshake, and each request head (hyper's
//!   `header_read_timeout`, which also runs while a kept-alive HTTP/1.1 connection waits for
//!   its next request), must arrive in time, or the connection is closed;
//! - an idle timeout: a connection with no request in flight and no bytes moving for that long
//!   is closed (this also covers HTTP/2, and a client that never sends a byte);
//! - half-closed clients: a client that shuts down its sending side after a complete request
//!   still gets its response (hyper's `half_close`). A FIN looks the same whether the client
//!   only stopped sending or went away, and only a write tells them apart; so a response that
//!   moves no bytes for [`HALF_CLOSED_QUIET`] after the client's FIN (an endless trace of a
//!   quiet process, say) is ended as if the client had left, which cancels its operation.
//!
//! Stopping has two steps, each a [`CancellationToken`] in [`Stopping`]: `drain` stops accepting
//! and closes connections gracefully (in-flight responses finish), `abort` drops whatever is
//! still open.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use futures_util::FutureExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::{HttpConfig, Scheme};
use crate::http::ListenerScheme;

/// How long a listener waits after a failed `accept` (e.g. out of file descriptors) before it
/// tries again, so that the error neither spins a core nor floods the log.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How long a response may move no bytes after its client sent FIN before the connection is
/// closed: the client has most likely gone, and no write has come to prove it.
const HALF_CLOSED_QUIET: Duration = Duration::from_secs(10);

/// How often a connection is checked for idleness and, with a response in flight, for its
/// client's FIN.
const FIN_PEEK_INTERVAL: Duration = Duration::from_secs(1);

/// The limits every connection is served under, shared by all listeners of a server.
#[derive(Debug)]
pub struct ConnectionLimits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    slots: Arc<Semaphore>,
}

impl ConnectionLimits {
    /// The limits of `[http]`: `max_connections` slots and its two timeouts.
    pub fn new(http: &HttpConfig) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: http.header_read_timeout(),
            idle_timeout: http.idle_timeout(),
            slots: Arc::new(Semaphore::new(http.max_connections)),
        }
    }
}

/// The two steps of stopping a server: `drain` (stop accepting, finish in-flight responses,
/// close) and `abort` (drop every connection that is still open).
#[derive(Debug, Clone, Default)]
pub struct Stopping {
    /// Stop accepting and close connections gracefully.
    pub drain: CancellationToken,
    /// Drop the connections that are still open.
    pub abort: CancellationToken,
}

/// Serves `app` on `listener` (HTTPS when `tls` is given) under `limits`, until `stopping`
/// drains it and its connections have closed (or `stopping` aborts them). Handlers can
/// extract `ConnectInfo<SocketAddr>` and [`ListenerScheme`].
pub async fn serve_listener(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    limits: Arc<ConnectionLimits>,
    stopping: Stopping,
) {
    let scheme = if tls.is_some() {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut connections = JoinSet::new();
    loop {
        let slot = tokio::select! {
            biased;
            () = stopping.drain.cancelled() => break,
            slot = limits.slots.clone().acquire_owned() => slot,
        };
        // The semaphore is never closed.
        let Ok(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            biased;
            () = stopping.drain.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    drop(slot);
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let connection = Connection {
            peer,
            scheme,
            app: app.clone(),
            limits: limits.clone(),
            drain: stopping.drain.clone(),
        };
        let tls = tls.clone();
        connections.spawn(async move {
            connection.serve(stream, tls).await;
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = async { while connections.join_next().await.is_some() {} } => {}
        () = stopping.abort.cancelled() => connections.shutdown().await,
    }
}

/// One accepted connection and what it is served with.
struct Connection {
    peer: SocketAddr,
    scheme: Scheme,
    app: Router,
    limits: Arc<ConnectionLimits>,
    drain: CancellationToken,
}

impl Connection {
    async fn serve(self, stream: TcpStream, tls: Option<tokio_rustls::TlsAcceptor>) {
        // Best effort: small responses (problem bodies, 202s) should not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let stream = Arc::new(stream);
        let activity = Arc::new(Activity::new(stream.clone()));
        let stream = Tracked {
            inner: SharedStream(stream),
            activity: activity.clone(),
        };
        match tls {
            None => self.serve_http(TokioIo::new(stream), activity).await,
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(stream));
                let stream = tokio::select! {
                    () = self.drain.cancelled() => return,
                    handshake = handshake => match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            // Port scanners, clients that distrust the certificate.
                            tracing::debug!(peer = %self.peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                            return;
                        }
                    },
                };
                self.serve_http(TokioIo::new(stream), activity).await;
            }
        }
    }

    async fn serve_http<IO>(self, io: TokioIo<IO>, activity: Arc<Activity>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (peer, scheme, app) = (self.peer, self.scheme, self.app.clone());
        let requests = activity.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(ListenerScheme(scheme));
            let in_flight = InFlight::begin(requests.clone());
            let app = app.clone();
            async move {
                let response = match app.oneshot(request.map(axum::body::Body::new)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|body| CountedBody { body, in_flight }))
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .half_close(true);
        builder.http2().timer(TokioTimer::new());
        let connection = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(peer = %peer, %error, "connection ended with an error");
                }
            }
            () = activity.idle(self.limits.header_read_timeout, self.limits.idle_timeout) => {
                tracing::debug!(peer = %peer, "closing an idle connection");
            }
            () = self.drain.cancelled() => {
                connection.as_mut().graceful_shutdown();
                if let Err(error) = connection.as_mut().await {
                    tracing::debug!(peer = %peer, %error, "connection ended with an error");
                }
            }
        }
    }
}

/// What a connection has been doing: when bytes last moved, how many requests it has had and
/// how many are in flight (until their response body is done or dropped).
#[derive(Debug)]
struct Activity {
    opened: Instant,
    /// Milliseconds after `opened` at which a byte was last read or written.
    last_io_millis: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicUsize,
    /// The client has shut down its sending side (its FIN is waiting to be read).
    read_closed: AtomicBool,
    /// The connection's socket, to peek for the client's FIN while hyper, which stops reading
    /// during a response when half-close is allowed, does not.
    socket: Arc<TcpStream>,
}

impl Activity {
    fn new(socket: Arc<TcpStream>) -> Activity {
        Activity {
            socket,
            opened: Instant::now(),
            last_io_millis: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            read_closed: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let millis = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_io_millis.store(millis, Ordering::Relaxed);
    }

    /// Notes the client's FIN if it is the next thing to read: a peek that reads end-of-file
    /// (data that is not read yet, a pipelined request say, hides it until hyper reads it).
    fn peek_for_fin(&self) {
        // Readable now (data or FIN) or not at all: a peek that would wait is not made.
        if let Some(Ok(0)) = self.socket.peek(&mut [0; 1]).now_or_never() {
            self.read_closed.store(true, Ordering::Relaxed);
        }
    }

    /// Resolves when the connection should be closed for idleness: no request head within
    /// `first_request` of opening; later no request in flight and no bytes for `idle`; or, once
    /// the client sent FIN, no bytes for [`HALF_CLOSED_QUIET`] even with a response in flight.
    async fn idle(&self, first_request: Duration, idle: Duration) {
        loop {
            let now = Instant::now();
            if self.in_flight.load(Ordering::Relaxed) > 0 {
                self.peek_for_fin();
            }
            let last =
                self.opened + Duration::from_millis(self.last_io_millis.load(Ordering::Relaxed));
            let in_flight = self.in_flight.load(Ordering::Relaxed) > 0;
            let read_closed = self.read_closed.load(Ordering::Relaxed);
            let deadline = if self.requests.load(Ordering::Relaxed) == 0 {
                self.opened + first_request
            } else if in_flight && read_closed {
                last + HALF_CLOSED_QUIET
            } else if in_flight {
                now + idle
            } else {
                last + idle
            };
            if deadline <= now && (read_closed || self.in_flight.load(Ordering::Relaxed) == 0) {
                return;
            }
            // Wakes at least every FIN_PEEK_INTERVAL to look for the client's FIN again.
            let wake = deadline.max(now).min(now + FIN_PEEK_INTERVAL);
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

/// A request in flight on a connection, from its head until its response body ends.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> InFlight {
        activity.requests.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight until it is done or dropped.
struct CountedBody {
    body: axum::body::Body,
    in_flight: InFlight,
}

impl hyper::body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if frame.is_ready() {
            this.in_flight.0.touch();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A TCP stream that is read and written through a shared reference, so that [`Activity`] can
/// look at the same socket while hyper owns the connection.
struct SharedStream(Arc<TcpStream>);

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(read) => {
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                // The readiness was stale and is now cleared: wait for the next one.
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Writes go straight to the socket.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

/// A stream that records in [`Activity`] when bytes move.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            this.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            this.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
