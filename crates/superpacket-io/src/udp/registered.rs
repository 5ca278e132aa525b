//! A socket registered with the tokio reactor: `AsyncFd` where there are file descriptors, a tokio
//! `UdpSocket` on Windows. The rest of the UDP code sees one `&Socket` either way.

use std::io;

use socket2::Socket;
use tokio::io::Interest;

/// A nonblocking socket the tokio reactor watches.
pub(super) struct Registered {
    #[cfg(unix)]
    inner: tokio::io::unix::AsyncFd<Socket>,
    #[cfg(windows)]
    inner: tokio::net::UdpSocket,
}

impl Registered {
    /// Registers `socket`, which must be nonblocking, for readable events (writes that find it full watch
    /// it for writability while they wait: see `crate::readiness`).
    #[cfg(unix)]
    pub(super) fn new(socket: Socket) -> io::Result<Registered> {
        // SAFETY: the Socket owns its descriptor, which stays open and the same until the AsyncFd drops it;
        // nothing here swaps the Socket out (no mutable access is ever taken).
        let inner = unsafe { tokio::io::unix::AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Registered { inner })
    }

    /// Registers `socket`, which must be nonblocking, with tokio's IOCP reactor.
    #[cfg(windows)]
    pub(super) fn new(socket: Socket) -> io::Result<Registered> {
        let std: std::net::UdpSocket = socket.into();
        Ok(Registered { inner: tokio::net::UdpSocket::from_std(std)? })
    }

    /// Runs `f` on the socket right away.
    pub(super) fn with<R>(&self, f: impl FnOnce(&Socket) -> R) -> R {
        #[cfg(unix)]
        return f(self.inner.get_ref());
        #[cfg(windows)]
        return f(&socket2::SockRef::from(&self.inner));
    }

    /// Runs `f` whenever the socket is ready for `interest`, until it returns something other than
    /// WouldBlock.
    pub(super) async fn io<R>(&self, interest: Interest, mut f: impl FnMut(&Socket) -> io::Result<R>) -> io::Result<R> {
        #[cfg(unix)]
        if interest.is_writable() {
            let s = self.inner.get_ref();
            return crate::readiness::write_when_ready(std::os::fd::AsFd::as_fd(s), || f(s)).await;
        }
        #[cfg(unix)]
        return self.inner.async_io(interest, |s| f(s)).await;
        #[cfg(windows)]
        return self.inner.async_io(interest, || f(&socket2::SockRef::from(&self.inner))).await;
    }
}
