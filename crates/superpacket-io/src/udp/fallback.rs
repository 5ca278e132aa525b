//! Platforms without UDP GSO/GRO: the same functions as `linux.rs`, one datagram per system call through
//! socket2's `send_to`/`recv_from`, no offloads.

use std::borrow::Borrow;
use std::io;
use std::mem::MaybeUninit;

use socket2::{SockAddr, Socket};

use super::{sender, GsoRefusal, RecvBatch, RecvMeta, RECV_BUFFER_SIZE};
use crate::error::{ErrorKind, IoError};

/// Name of the send call in errors.
pub(super) const SEND_SYSCALL: &str = "sendto";
/// Name of the receive call in errors.
pub(super) const RECV_SYSCALL: &str = "recvfrom";

/// No GSO here.
pub(super) fn gso_supported(_socket: &Socket) -> bool {
    false
}

/// No GRO here.
pub(super) fn enable_gro(_socket: &Socket) -> bool {
    false
}

/// Asks for the buffer sizes; 0 leaves a buffer alone. Some systems refuse sizes above their limit
/// (macOS: ENOBUFS above kern.ipc.maxsockbuf) instead of capping them, so a refusal keeps the default
/// rather than failing the bind.
pub(super) fn set_buffer_sizes(socket: &Socket, recv: usize, send: usize) -> Result<(), IoError> {
    if recv > 0 {
        let _ = socket.set_recv_buffer_size(recv);
    }
    if send > 0 {
        let _ = socket.set_send_buffer_size(send);
    }
    Ok(())
}

/// Never a GSO refusal: [`send_gso`] is not called without GSO.
pub(super) fn set_udp_checksums(_socket: &Socket, _on: bool) -> Result<(), IoError> {
    Err(IoError::new(ErrorKind::Unsupported, "turning UDP checksums off needs Linux"))
}

pub(super) fn gso_refusal(_err: &io::Error, _dest: std::net::SocketAddr, _segment_size: usize) -> Option<GsoRefusal> {
    None
}

/// GSO is unavailable; the caller checks the capability first, so this only reports that.
pub(super) fn send_gso(_socket: &Socket, _dest: &SockAddr, _buf: &[u8], _segment_size: usize) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "UDP GSO is not available on this platform"))
}

/// Sends the first message of `msgs` with `send_to`; returns 1 (0 when `msgs` is empty).
pub(super) fn send_messages<'a, A: Borrow<SockAddr>>(
    socket: &Socket,
    mut msgs: impl Iterator<Item = (A, &'a [u8])>,
) -> io::Result<usize> {
    match msgs.next() {
        Some((addr, data)) => socket.send_to(data, addr.borrow()).map(|_| 1),
        None => Ok(0),
    }
}

/// Sends the first message of `msgs` with `send_to` if it is one datagram (segment size 0); returns 1 (0
/// when `msgs` is empty). Without GSO no message is a train.
pub(super) fn send_mixed<'a>(
    socket: &Socket,
    dest: &SockAddr,
    mut msgs: impl Iterator<Item = (&'a [u8], usize)>,
) -> io::Result<usize> {
    match msgs.next() {
        Some((data, 0)) => socket.send_to(data, dest).map(|_| 1),
        Some(_) => Err(io::Error::new(io::ErrorKind::Unsupported, "UDP GSO is not available on this platform")),
        None => Ok(0),
    }
}

/// Receives one datagram with `recv_from` into the batch's first buffer; returns 1.
pub(super) fn recv_messages(socket: &Socket, bufs: &mut [u8], metas: &mut [RecvMeta]) -> io::Result<usize> {
    let (Some(slot), Some(meta)) = (bufs.chunks_exact_mut(RECV_BUFFER_SIZE).next(), metas.first_mut()) else {
        return Ok(0);
    };
    // SAFETY: an initialized byte slice is a valid [MaybeUninit<u8>] of the same length, and recv_from
    // only writes initialized bytes into it.
    let uninit = unsafe { &mut *(slot as *mut [u8] as *mut [MaybeUninit<u8>]) };
    let (len, addr) = socket.recv_from(uninit)?;
    let len = len.min(RECV_BUFFER_SIZE);
    *meta = RecvMeta { addr: sender(addr.as_socket()), len, stride: len };
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Protocol, Type};
    use std::net::SocketAddr;

    fn bound() -> Socket {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        socket.bind(&SockAddr::from("127.0.0.1:0".parse::<SocketAddr>().expect("addr"))).expect("bind");
        socket
    }

    #[test]
    fn sends_and_receives_one_datagram_per_call() {
        let (tx, rx) = (bound(), bound());
        let to = rx.local_addr().expect("local addr");
        let payloads: [&[u8]; 2] = [b"first", b"second"];
        assert_eq!(send_messages(&tx, payloads.iter().map(|p| (&to, *p))).expect("send"), 1);
        assert_eq!(send_messages(&tx, payloads[1..].iter().map(|p| (&to, *p))).expect("send"), 1);
        let mut batch = RecvBatch::new(4);
        for want in payloads {
            assert_eq!(recv_messages(&rx, &mut batch.bufs, &mut batch.metas).expect("recv"), 1);
            let meta = batch.metas[0];
            assert_eq!(&batch.bufs[..meta.len], want);
            assert_eq!(meta.stride, meta.len);
            assert_eq!(Some(meta.addr), tx.local_addr().expect("local addr").as_socket());
        }
        assert!(!gso_supported(&tx) && !enable_gro(&rx));
    }
}
