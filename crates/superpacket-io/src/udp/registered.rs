//! A socket registered with the tokio reactor: on Unix the socket itself plus, from the first native
//! wait for datagrams on, a duplicate registered for readable events; a tokio `UdpSocket` on Windows. The
//! rest of the UDP code sees one `&Socket` either way.

use std::io;
#[cfg(unix)]
use std::os::fd::{AsFd, OwnedFd};
#[cfg(unix)]
use std::sync::OnceLock;

use socket2::Socket;
#[cfg(unix)]
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A nonblocking socket the tokio reactor watches when a native operation waits on it.
pub(super) struct Registered {
    #[cfg(unix)]
    socket: Socket,
    /// Registered by the first native wait for datagrams, and kept. Until then the reactor does not watch
    /// the socket: a socket that JS receives from (waiting on its own event loop) or that only sends does not
    /// wake a tokio thread for every datagram that arrives, which costs the receiver's CPU on a small machine.
    #[cfg(unix)]
    readable: OnceLock<AsyncFd<OwnedFd>>,
    #[cfg(windows)]
    inner: tokio::net::UdpSocket,
}

impl Registered {
    /// Takes `socket`, which must be nonblocking. Nothing is registered yet: native waits for datagrams
    /// register a duplicate for readable events (`crate::readiness::readable_registration`), writes that find it full watch a
    /// duplicate for writability while they wait (see `crate::readiness`).
    #[cfg(unix)]
    pub(super) fn new(socket: Socket) -> io::Result<Registered> {
        Ok(Registered { socket, readable: OnceLock::new() })
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
        return f(&self.socket);
        #[cfg(windows)]
        return f(&socket2::SockRef::from(&self.inner));
    }

    /// Runs `f` whenever the socket is ready for `interest`, until it returns something other than
    /// WouldBlock.
    pub(super) async fn io<R>(&self, interest: Interest, mut f: impl FnMut(&Socket) -> io::Result<R>) -> io::Result<R> {
        #[cfg(unix)]
        if interest.is_writable() {
            let s = &self.socket;
            return crate::readiness::write_when_ready(s.as_fd(), || f(s)).await;
        }
        #[cfg(unix)]
        return crate::readiness::readable_registration(&self.readable, self.socket.as_fd())?
            .async_io(interest, |_| f(&self.socket))
            .await;
        #[cfg(windows)]
        return self.inner.async_io(interest, || f(&socket2::SockRef::from(&self.inner))).await;
    }
}
