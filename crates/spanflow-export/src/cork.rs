//! TCP connections for the gRPC channel that coalesce HTTP/2 frames into full TCP segments.
//!
//! h2 writes one DATA frame per `writev` (at most the peer's `SETTINGS_MAX_FRAME_SIZE`,
//! 16 KiB by default) and flushes after each. With `TCP_NODELAY` every such write becomes
//! its own segment: per-segment kernel work (transmit, the receiver's wake-up) dominates
//! the cost of sending a large batch. [`CorkIo`] sets `TCP_CORK` while h2 is writing a
//! burst of frames and lifts it once h2 has nothing more to write, so the kernel packs the
//! frames into full segments without any copy in user space. The burst ends at the first
//! flush that follows no write: after a flush that did follow writes, [`CorkIo`] wakes the
//! connection task, whose next poll flushes again with nothing new and uncorks. Latency
//! cost: one extra poll of the connection task per burst; the kernel also sends corked
//! data on its own after 200 ms, so a missed uncork can only delay, never stall.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::codegen::Service;

/// Connector for [`tonic::transport::Endpoint::connect_with_connector_lazy`]: plain TCP
/// (tonic adds TLS and the connect timeout around it) yielding [`CorkIo`] streams.
#[derive(Clone, Debug)]
pub(crate) struct CorkingConnector {
    http: HttpConnector,
}

impl CorkingConnector {
    pub(crate) fn new() -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        Self { http }
    }
}

impl Service<Uri> for CorkingConnector {
    type Response = CorkIo;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<CorkIo, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            Ok(CorkIo {
                io,
                corked: false,
                wrote: false,
                enabled: true,
            })
        })
    }
}

/// A TCP stream that corks itself during h2's write bursts (see the module doc).
#[derive(Debug)]
pub(crate) struct CorkIo {
    io: TokioIo<TcpStream>,
    /// `TCP_CORK` is set.
    corked: bool,
    /// Bytes were written since the last flush.
    wrote: bool,
    /// Corking works on this socket (turned off after a failed `setsockopt`).
    enabled: bool,
}

impl CorkIo {
    fn set_cork(&mut self, on: bool) {
        let value: libc::c_int = on.into();
        let fd = self.io.inner().as_raw_fd();
        // SAFETY: `fd` is the open socket owned by `self.io`, alive for the whole call;
        // the option value points to a live `c_int` and the length passed is its size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_CORK,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            self.corked = on;
        } else {
            let error = io::Error::last_os_error();
            tracing::debug!(%error, "TCP_CORK unavailable; sending frames uncorked");
            self.enabled = false;
            self.corked = false;
        }
    }

    fn before_write(&mut self) {
        if self.enabled && !self.corked {
            self.set_cork(true);
        }
    }

    fn after_write(&mut self, result: &Poll<io::Result<usize>>) {
        if matches!(result, Poll::Ready(Ok(n)) if *n > 0) {
            self.wrote = true;
        }
    }
}

impl hyper::rt::Read for CorkIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for CorkIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.before_write();
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.after_write(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.before_write();
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.after_write(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.corked {
            if self.wrote {
                // More frames may follow in this burst: stay corked, and have the
                // connection task polled again so its next flush ends the burst.
                self.wrote = false;
                cx.waker().wake_by_ref();
                return Poll::Ready(Ok(()));
            }
            // A flush with no write since the last one: the burst is over; uncorking
            // sends whatever partial segment the kernel still holds.
            self.set_cork(false);
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.corked {
            self.set_cork(false);
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use hyper::rt::Write;

    use super::*;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn cork_option(io: &CorkIo) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the fd is the open socket owned by `io`; `value` and `len` are live locals
        // of the sizes the kernel expects.
        let rc = unsafe {
            libc::getsockopt(
                io.io.inner().as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_CORK,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        value
    }

    #[tokio::test]
    async fn corks_for_a_burst_and_uncorks_at_the_first_idle_flush() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connector = CorkingConnector::new();
        let uri: Uri = format!("http://{addr}").parse().unwrap();
        let (io, accepted) = tokio::join!(connector.call(uri), listener.accept());
        let mut io = io.unwrap();
        let (mut peer, _) = accepted.unwrap();
        let wakes = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);

        let n = Pin::new(&mut io).poll_write(&mut cx, b"frame one");
        assert!(matches!(n, Poll::Ready(Ok(9))));
        assert_eq!(cork_option(&io), 1);
        // A flush right after writes keeps the cork and asks for another poll.
        assert!(matches!(
            Pin::new(&mut io).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!((cork_option(&io), wakes.0.load(Ordering::Relaxed)), (1, 1));
        let n = Pin::new(&mut io).poll_write(&mut cx, b"+two");
        assert!(matches!(n, Poll::Ready(Ok(4))));
        assert!(matches!(
            Pin::new(&mut io).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        // The next flush with nothing written ends the burst: uncorked, nothing to wake.
        assert!(matches!(
            Pin::new(&mut io).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!((cork_option(&io), wakes.0.load(Ordering::Relaxed)), (0, 2));

        let mut got = [0u8; 13];
        tokio::io::AsyncReadExt::read_exact(&mut peer, &mut got)
            .await
            .unwrap();
        assert_eq!(&got, b"frame one+two");
    }
}
