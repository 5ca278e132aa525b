//! Linux system calls for the UDP socket: `sendmsg` with a `UDP_SEGMENT` control message (GSO),
//! `sendmmsg`, `recvmmsg` reading the `UDP_GRO` control message, and the probes for both offloads.

use std::borrow::Borrow;
use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;

use libc::{c_int, c_uint, c_void, socklen_t};
use socket2::{SockAddr, Socket};
use superpacket_core::packet;

use super::{sender, GsoRefusal, RecvMeta, MAX_BATCH, RECV_BUFFER_SIZE};
use crate::error::IoError;
use crate::fault::{self, Syscall};

/// Name of the send calls in errors.
pub(super) const SEND_SYSCALL: &str = "sendmsg/sendmmsg";
/// Name of the receive call in errors.
pub(super) const RECV_SYSCALL: &str = "recvmmsg";

/// `include/uapi/linux/udp.h`: segment size for GSO, as socket option or control message (u16).
const UDP_SEGMENT: c_int = 103;
/// `include/uapi/linux/udp.h`: receive coalescing; the control message carries the segment size (int).
const UDP_GRO: c_int = 104;

/// Control-message room per received message: the 4-byte `UDP_GRO` message plus slack for others the
/// kernel may add.
const RECV_CONTROL_SIZE: usize = 64;

/// A control-message buffer aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct ControlBuf([u8; RECV_CONTROL_SIZE]);

/// Whether the kernel has UDP GSO (4.18+): reading the `UDP_SEGMENT` option succeeds.
pub(super) fn gso_supported(socket: &Socket) -> bool {
    let mut value: c_int = 0;
    let mut len = mem::size_of::<c_int>() as socklen_t;
    // SAFETY: value and len are valid for writes of the sizes given; the fd is open.
    let rc = unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::SOL_UDP, UDP_SEGMENT, ptr::addr_of_mut!(value).cast(), &mut len)
    };
    rc == 0
}

/// Turns on UDP GRO (5.0+); false when the kernel refuses it.
pub(super) fn enable_gro(socket: &Socket) -> bool {
    set_int_option(socket.as_raw_fd(), libc::SOL_UDP, UDP_GRO, 1).is_ok()
}

/// Sets the socket buffers, past `net.core.{r,w}mem_max` when the process has CAP_NET_ADMIN
/// (`SO_*BUFFORCE`), else as far as the kernel allows. 0 leaves a buffer alone.
pub(super) fn set_buffer_sizes(socket: &Socket, recv: usize, send: usize) -> Result<(), IoError> {
    let fd = socket.as_raw_fd();
    for (size, force, plain, name) in [
        (recv, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, "setsockopt(SO_RCVBUF)"),
        (send, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, "setsockopt(SO_SNDBUF)"),
    ] {
        if size == 0 {
            continue;
        }
        let size = c_int::try_from(size).unwrap_or(c_int::MAX);
        if set_int_option(fd, libc::SOL_SOCKET, force, size).is_err() {
            set_int_option(fd, libc::SOL_SOCKET, plain, size).map_err(|e| IoError::from_os(name, &e))?;
        }
    }
    Ok(())
}

/// SO_NO_CHECK (include/uapi/asm-generic/socket.h); the libc crate lacks it on some targets.
const SO_NO_CHECK: c_int = 11;

/// Turns sending UDP checksums on or off (IPv4; SO_NO_CHECK).
pub(super) fn set_udp_checksums(socket: &Socket, on: bool) -> Result<(), IoError> {
    set_int_option(socket.as_raw_fd(), libc::SOL_SOCKET, SO_NO_CHECK, c_int::from(!on))
        .map_err(|e| IoError::from_os("setsockopt(SO_NO_CHECK)", &e))
}

fn set_int_option(fd: RawFd, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
    // SAFETY: the option value is a c_int that lives across the call, with its size given.
    let rc =
        unsafe { libc::setsockopt(fd, level, name, ptr::addr_of!(value).cast(), mem::size_of::<c_int>() as socklen_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Classifies a failed GSO send of `segment_size`-byte datagrams to `dest`: EIO (egress device without
/// checksum offload on kernels before 6.11, IPsec on the route) concerns the socket; EMSGSIZE (segment
/// above the path MTU; measured on 6.18, where plain sends of the same size are fragmented) concerns the
/// train. EINVAL is either: UDP checksums off or segmentation refused (the socket), or, on some kernels,
/// a segment above the path MTU (the train). The path MTU tells them apart; when it cannot be learned
/// the train is blamed, which costs one refused send per train rather than GSO for good.
pub(super) fn gso_refusal(err: &io::Error, dest: SocketAddr, segment_size: usize) -> Option<GsoRefusal> {
    match err.raw_os_error()? {
        libc::EIO => Some(GsoRefusal::Socket),
        libc::EMSGSIZE => Some(GsoRefusal::Train),
        libc::EINVAL => match path_mtu(dest) {
            Some(mtu) if segment_size + udp_overhead(dest) <= mtu => Some(GsoRefusal::Socket),
            _ => Some(GsoRefusal::Train),
        },
        _ => None,
    }
}

/// IP and UDP header bytes before a datagram's payload (no IP options or extension headers).
fn udp_overhead(dest: SocketAddr) -> usize {
    let ip = if dest.is_ipv4() { IPV4_MIN_HDR_LEN } else { packet::IPV6_HDR_LEN };
    ip + packet::UDP_HDR_LEN
}

/// An IPv4 header without options.
const IPV4_MIN_HDR_LEN: usize = 20;

/// The path MTU the kernel knows towards `dest` (the route's MTU, or a lower one learned from ICMP), asked
/// of a throwaway socket connected there: connecting a UDP socket sends nothing. The socket is made in
/// the calling thread's network namespace, the one the sending socket normally lives in.
fn path_mtu(dest: SocketAddr) -> Option<usize> {
    let probe = Socket::new(socket2::Domain::for_address(dest), socket2::Type::DGRAM, None).ok()?;
    probe.connect(&SockAddr::from(dest)).ok()?;
    let (level, name) =
        if dest.is_ipv4() { (libc::IPPROTO_IP, libc::IP_MTU) } else { (libc::IPPROTO_IPV6, libc::IPV6_MTU) };
    let mut value: c_int = 0;
    let mut len = mem::size_of::<c_int>() as socklen_t;
    // SAFETY: value and len are valid for writes of the sizes given; the fd is open.
    let rc = unsafe { libc::getsockopt(probe.as_raw_fd(), level, name, ptr::addr_of_mut!(value).cast(), &mut len) };
    if rc != 0 {
        return None;
    }
    usize::try_from(value).ok()
}

/// Sends `buf` to `dest` as datagrams of `segment_size` bytes (the last may be shorter) with one
/// `sendmsg` carrying a `UDP_SEGMENT` control message. UDP sends all of it or nothing.
pub(super) fn send_gso(socket: &Socket, dest: &SockAddr, buf: &[u8], segment_size: usize) -> io::Result<()> {
    if let Some(e) = fault::take(Syscall::SendGso) {
        return Err(e);
    }
    let gso_size = u16::try_from(segment_size).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as c_uint) } as usize;
    let mut control = ControlBuf([0; RECV_CONTROL_SIZE]);
    let mut iov = libc::iovec { iov_base: buf.as_ptr().cast_mut().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    // The kernel only reads the name and the payload of a send.
    msg.msg_name = dest.as_ptr().cast_mut().cast();
    msg.msg_namelen = dest.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points to `space` (24) writable, aligned bytes.
    unsafe { put_segment_size(&msg, gso_size) };
    // SAFETY: msg and everything it points to (dest, iov, buf, control) outlive the call.
    let rc = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Room for one `UDP_SEGMENT` control message (CMSG_SPACE of a u16 is 24 on Linux), aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct SegmentControl([u8; 24]);

/// Sends up to [`MAX_BATCH`] messages to `dest` with one `sendmmsg`: `(payload, segment_size)`, where a
/// segment size of 0 sends the payload as one datagram and any other cuts it into datagrams of that
/// size (a GSO train; the last may be shorter). Returns how many messages the kernel took (at least one),
/// in order.
pub(super) fn send_mixed<'a>(
    socket: &Socket,
    dest: &SockAddr,
    msgs: impl Iterator<Item = (&'a [u8], usize)>,
) -> io::Result<usize> {
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(2) as usize };
    if space > mem::size_of::<SegmentControl>() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_BATCH];
    let mut controls = [const { MaybeUninit::<SegmentControl>::uninit() }; MAX_BATCH];
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
    let mut count = 0;
    for (i, (data, seg)) in msgs.take(MAX_BATCH).enumerate() {
        let iov = iovs[i].write(libc::iovec { iov_base: data.as_ptr().cast_mut().cast(), iov_len: data.len() });
        // SAFETY: mmsghdr is plain data; all-zero is valid (no control data, flags 0).
        let mut hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        // The kernel only reads the name.
        hdr.msg_hdr.msg_name = dest.as_ptr().cast_mut().cast();
        hdr.msg_hdr.msg_namelen = dest.len();
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
        if seg > 0 {
            let gso = u16::try_from(seg).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            let control = controls[i].write(SegmentControl([0; 24]));
            hdr.msg_hdr.msg_control = control.0.as_mut_ptr().cast();
            hdr.msg_hdr.msg_controllen = space as _;
            // SAFETY: the control buffer holds `space` bytes, aligned for cmsghdr.
            unsafe { put_segment_size(&hdr.msg_hdr, gso) };
        }
        hdrs[i].write(hdr);
        count = i + 1;
    }
    // SAFETY: the first `count` headers are initialized and point into iovs, controls, `dest` and the
    // callers' payloads, all alive until the call returns.
    unsafe { send_headers(socket, &mut hdrs[..count]) }
}

/// Sends up to [`MAX_BATCH`] messages from `msgs`, one datagram each, with one `sendmmsg`; returns how
/// many the kernel took (at least one), in order.
pub(super) fn send_messages<'a, A: Borrow<SockAddr>>(
    socket: &Socket,
    msgs: impl Iterator<Item = (A, &'a [u8])>,
) -> io::Result<usize> {
    // Only the first `count` entries are initialized (no 13 KiB of zeroing per call).
    let mut names = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; MAX_BATCH];
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_BATCH];
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
    let mut count = 0;
    for (i, (addr, data)) in msgs.take(MAX_BATCH).enumerate() {
        let addr = addr.borrow();
        let len = (addr.len() as usize).min(mem::size_of::<libc::sockaddr_storage>());
        let name = names[i].as_mut_ptr();
        // SAFETY: SockAddr points to a sockaddr_storage-sized buffer of which `len` bytes are set; the
        // destination is a distinct sockaddr_storage. The kernel reads only `len` bytes of it.
        unsafe { ptr::copy_nonoverlapping(addr.as_ptr().cast::<u8>(), name.cast::<u8>(), len) };
        let iov = iovs[i].write(libc::iovec { iov_base: data.as_ptr().cast_mut().cast(), iov_len: data.len() });
        // SAFETY: mmsghdr is plain data; all-zero is valid (no control data, flags 0).
        let mut hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        hdr.msg_hdr.msg_name = name.cast::<c_void>();
        hdr.msg_hdr.msg_namelen = len as socklen_t;
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
        hdrs[i].write(hdr);
        count = i + 1;
    }
    // SAFETY: the first `count` headers are initialized and point into names, iovs and the callers'
    // payloads, all alive until the call returns.
    unsafe { send_headers(socket, &mut hdrs[..count]) }
}

/// One `sendmmsg` of `hdrs` (none: nothing is sent); returns how many messages the kernel took.
///
/// # Safety
/// Every header is initialized and what it points to (names, iovecs, payloads, control data) is valid
/// for the call; the kernel only reads it (and writes `msg_len`).
unsafe fn send_headers(socket: &Socket, hdrs: &mut [MaybeUninit<libc::mmsghdr>]) -> io::Result<usize> {
    if hdrs.is_empty() {
        return Ok(0);
    }
    if let Some(e) = fault::take(Syscall::SendMmsg) {
        return Err(e);
    }
    // SAFETY: the caller's promise; the length is at most MAX_BATCH.
    let rc = unsafe { libc::sendmmsg(socket.as_raw_fd(), hdrs.as_mut_ptr().cast(), hdrs.len() as c_uint, 0) };
    // Negative means failure, with errno set.
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// Writes a `UDP_SEGMENT` control message carrying `segment_size` as the first (only) control message of
/// `msg`. The length must be exactly CMSG_LEN(2) or the kernel answers EINVAL.
///
/// # Safety
/// `msg.msg_control` points to at least CMSG_SPACE(2) (24) writable bytes aligned for `cmsghdr`, and
/// `msg.msg_controllen` says so: CMSG_FIRSTHDR then gives a header inside them and CMSG_DATA room for the u16.
unsafe fn put_segment_size(msg: &libc::msghdr, segment_size: u16) {
    // SAFETY: the caller's promise.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as c_uint) as _;
        ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment_size);
    }
}

/// Receives up to `metas.len()` messages with one `recvmmsg`, message `i` into the `i`th
/// [`RECV_BUFFER_SIZE`]-byte slot of `bufs` (as many messages as there are whole slots, [`MAX_BATCH`] at
/// most), and describes them in `metas`; returns how many.
pub(super) fn recv_messages(socket: &Socket, bufs: &mut [u8], metas: &mut [RecvMeta]) -> io::Result<usize> {
    if let Some(e) = fault::take(Syscall::RecvMmsg) {
        return Err(e);
    }
    let count = metas.len().min(MAX_BATCH).min(bufs.len() / RECV_BUFFER_SIZE);
    if count == 0 {
        return Ok(0);
    }
    // Only the first `count` entries are initialized (no 13 KiB of zeroing per call); the kernel writes
    // the names and control messages.
    let mut names = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; MAX_BATCH];
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_BATCH];
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
    let mut controls = [const { MaybeUninit::<ControlBuf>::uninit() }; MAX_BATCH];
    for (i, slot) in bufs.chunks_exact_mut(RECV_BUFFER_SIZE).take(count).enumerate() {
        let iov = iovs[i].write(libc::iovec { iov_base: slot.as_mut_ptr().cast(), iov_len: slot.len() });
        // SAFETY: mmsghdr is plain data; all-zero is valid (the padding and flags the kernel expects zero).
        let mut hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        hdr.msg_hdr.msg_name = names[i].as_mut_ptr().cast::<c_void>();
        hdr.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as socklen_t;
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
        hdr.msg_hdr.msg_control = controls[i].as_mut_ptr().cast::<c_void>();
        hdr.msg_hdr.msg_controllen = RECV_CONTROL_SIZE as _;
        hdrs[i].write(hdr);
    }
    // SAFETY: the first `count` headers are initialized and point to distinct, writable names, control
    // buffers and 64 KiB slots of `bufs`, all alive and not otherwise borrowed across the call.
    let rc =
        unsafe { libc::recvmmsg(socket.as_raw_fd(), hdrs.as_mut_ptr().cast(), count as c_uint, 0, ptr::null_mut()) };
    // Negative means failure, with errno set.
    let received = usize::try_from(rc).map_err(|_| io::Error::last_os_error())?.min(count);
    for i in 0..received {
        // SAFETY: headers below `count` were initialized above; the kernel filled the first `received`.
        let hdr = unsafe { hdrs[i].assume_init_ref() };
        let len = (hdr.msg_len as usize).min(RECV_BUFFER_SIZE);
        let stride = match gro_segment_size(&hdr.msg_hdr) {
            Some(size) if size > 0 && size < len => size,
            _ => len,
        };
        let addr = socket_addr(names[i].as_ptr(), hdr.msg_hdr.msg_namelen);
        metas[i] = RecvMeta { addr: sender(addr), len, stride };
    }
    Ok(received)
}

/// The segment size from a `UDP_GRO` control message of a received header, if there is one.
fn gro_segment_size(msg: &libc::msghdr) -> Option<usize> {
    // SAFETY: msg comes from a completed recvmmsg: msg_control/msg_controllen describe the control bytes
    // the kernel wrote into our aligned buffer, which the CMSG_* macros walk without leaving it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let header = &*cmsg;
            if header.cmsg_level == libc::SOL_UDP
                && header.cmsg_type == UDP_GRO
                && header.cmsg_len as usize >= libc::CMSG_LEN(mem::size_of::<c_int>() as c_uint) as usize
            {
                let size = ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>());
                return usize::try_from(size).ok();
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    None
}

/// Reads an IPv4 or IPv6 socket address the kernel wrote (`len` bytes of it); None for other families or
/// short lengths.
fn socket_addr(storage: *const libc::sockaddr_storage, len: socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    if len < mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: the kernel wrote at least the family (checked just above); read through a raw pointer, as
    // the rest of the storage may be uninitialized.
    let family = unsafe { ptr::addr_of!((*storage).ss_family).read() };
    match c_int::from(family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the kernel wrote a whole sockaddr_in (`len` covers it), which is
            // smaller and less aligned than the storage.
            let sin = unsafe { storage.cast::<libc::sockaddr_in>().read() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a whole sockaddr_in6.
            let sin6 = unsafe { storage.cast::<libc::sockaddr_in6>().read() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id)))
        }
        _ => None,
    }
}
