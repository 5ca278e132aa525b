//! A UDP socket that sends trains of equal-sized datagrams with one system call (UDP GSO,
//! `UDP_SEGMENT`) and receives coalesced trains (UDP GRO), with batched `sendmmsg`/`recvmmsg` and a
//! run-time fallback when the kernel or the egress device refuses segmentation.
//!
//! The offloads are Linux features (`linux.rs`); other Unix platforms get the same API with one datagram
//! per system call (`fallback.rs`). The socket is nonblocking and registered with the tokio reactor, so
//! [`UdpSocket::bind`] must run inside a tokio runtime with I/O enabled.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::sync::watch;

use crate::error::{is_out_of_buffers, ErrorKind, IoError, OUT_OF_BUFFERS_BACKOFF, OUT_OF_BUFFERS_RETRIES};

#[cfg(not(target_os = "linux"))]
mod fallback;
// On Linux the fallback is compiled for its unit tests only, so it cannot rot unseen.
#[cfg(all(test, target_os = "linux"))]
#[allow(dead_code)]
mod fallback;
#[cfg(target_os = "linux")]
mod linux;
mod registered;
pub mod words;

use registered::Registered;

#[cfg(not(target_os = "linux"))]
use fallback as sys;
#[cfg(target_os = "linux")]
use linux as sys;

/// Most datagrams in one GSO send. Some kernels accept 128, but virtio USO rejects more than 64.
pub const MAX_SEGMENTS: usize = 64;
/// Most messages in one `sendmmsg`/`recvmmsg`, and so the largest [`RecvBatch`].
pub const MAX_BATCH: usize = 64;
/// Bytes of one receive buffer: room for a GRO train, which the kernel keeps within 64 KiB.
pub const RECV_BUFFER_SIZE: usize = 64 * 1024;
/// Largest UDP payload in one IPv4 datagram (and so in one IPv4 GSO send): 65,535 - 20 - 8.
pub const MAX_PAYLOAD_V4: usize = 65_507;
/// Largest UDP payload in one IPv6 datagram without jumbograms: 65,535 - 8.
pub const MAX_PAYLOAD_V6: usize = 65_527;
/// Name of the single-datagram send in errors.
const SEND_TO_SYSCALL: &str = "sendto";
/// Default socket buffer size: a few milliseconds of traffic at 10 Gbit/s.
const DEFAULT_SOCKET_BUFFER: usize = 7 << 20;

/// How to open a [`UdpSocket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpOptions {
    /// The address to bind; port 0 picks a free port.
    pub local: SocketAddr,
    /// For IPv6 sockets: `Some(true)` receives IPv6 only, `Some(false)` IPv4 too (as IPv4-mapped
    /// addresses, reported back as plain IPv4). `None` makes a socket bound to `[::]` dual-stack and
    /// leaves other IPv6 sockets at the system default. Must be `None` for IPv4 sockets.
    pub only_v6: Option<bool>,
    /// Wanted receive buffer in bytes (default 7 MiB). Forced past `net.core.rmem_max` when the process
    /// has CAP_NET_ADMIN, otherwise capped there by the kernel. 0 keeps the system default.
    pub recv_buffer: usize,
    /// Wanted send buffer in bytes (default 7 MiB), handled like `recv_buffer`.
    pub send_buffer: usize,
    /// Use UDP GSO for [`UdpSocket::send_segments`] when the kernel has it (default true).
    pub gso: bool,
    /// Ask the kernel to coalesce received trains (UDP GRO) when it can (default true).
    pub gro: bool,
}

impl UdpOptions {
    /// Defaults for a socket bound to `local`.
    pub fn new(local: SocketAddr) -> UdpOptions {
        UdpOptions {
            local,
            only_v6: None,
            recv_buffer: DEFAULT_SOCKET_BUFFER,
            send_buffer: DEFAULT_SOCKET_BUFFER,
            gso: true,
            gro: true,
        }
    }
}

impl Default for UdpOptions {
    /// Any IPv4 address, a free port.
    fn default() -> UdpOptions {
        UdpOptions::new(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)))
    }
}

/// What the socket can do right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpCaps {
    /// GSO is in use. Turns false for good when the socket cannot segment (see
    /// [`UdpSocket::send_segments`]).
    pub gso: bool,
    /// Most datagrams one send system call segments: [`MAX_SEGMENTS`] with GSO, else 1.
    pub max_segments: usize,
    /// The kernel coalesces received trains (the `UDP_GRO` socket option was accepted).
    pub gro: bool,
}

/// One received message: a datagram, or with GRO a train of datagrams of `stride` bytes each (the last
/// may be shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// The sender. IPv4-mapped IPv6 addresses are reported as IPv4.
    pub addr: SocketAddr,
    /// Bytes in the message.
    pub len: usize,
    /// Bytes per datagram: the segment size from the `UDP_GRO` control message, `len` if not coalesced.
    pub stride: usize,
}

impl RecvMeta {
    /// How many datagrams the message holds (an empty datagram counts as one).
    pub fn datagram_count(&self) -> usize {
        if self.stride == 0 || self.len <= self.stride {
            1
        } else {
            self.len.div_ceil(self.stride)
        }
    }
}

/// Reusable receive buffers for [`UdpSocket::recv_batch`]: one [`RECV_BUFFER_SIZE`] buffer per message
/// and the metadata of the last receive.
pub struct RecvBatch {
    /// `metas.len()` buffers of [`RECV_BUFFER_SIZE`] bytes back to back.
    bufs: Box<[u8]>,
    /// One entry per buffer; the first `filled` describe the last receive.
    metas: Vec<RecvMeta>,
    filled: usize,
}

impl RecvBatch {
    /// Room for `messages` messages per receive, clamped to `1..=`[`MAX_BATCH`]. Allocates
    /// `messages` x 64 KiB.
    pub fn new(messages: usize) -> RecvBatch {
        let n = messages.clamp(1, MAX_BATCH);
        let empty = RecvMeta { addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)), len: 0, stride: 0 };
        RecvBatch { bufs: vec![0; n * RECV_BUFFER_SIZE].into_boxed_slice(), metas: vec![empty; n], filled: 0 }
    }

    /// Most messages one receive can fill.
    pub fn capacity(&self) -> usize {
        self.metas.len()
    }

    /// Messages from the last receive.
    pub fn len(&self) -> usize {
        self.filled
    }

    /// Whether the last receive left no messages (or nothing was received yet).
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Forgets the last receive.
    pub fn clear(&mut self) {
        self.filled = 0;
    }

    /// Metadata of the messages of the last receive.
    pub fn metas(&self) -> &[RecvMeta] {
        &self.metas[..self.filled]
    }

    /// The messages of the last receive with their metadata.
    pub fn iter(&self) -> impl Iterator<Item = (&RecvMeta, &[u8])> + '_ {
        self.metas().iter().zip(self.bufs.chunks_exact(RECV_BUFFER_SIZE)).map(|(m, b)| (m, &b[..m.len]))
    }

    /// The messages of the last receive, writable in place (to open a framed datagram, for example).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&RecvMeta, &mut [u8])> + '_ {
        self.metas[..self.filled]
            .iter()
            .zip(self.bufs.chunks_exact_mut(RECV_BUFFER_SIZE))
            .map(|(m, b)| (m, &mut b[..m.len]))
    }

    /// Every datagram of the last receive, GRO trains split by their stride, in arrival order.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        self.iter().flat_map(|(meta, msg)| {
            let stride = if meta.stride == 0 { msg.len().max(1) } else { meta.stride };
            // An empty datagram yields no chunk, so it is produced on its own.
            let empty = msg.is_empty().then_some(msg);
            msg.chunks(stride).chain(empty).map(move |d| (meta.addr, d))
        })
    }
}

/// Counters of a [`UdpSocket`], as a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Datagrams sent (each GSO segment counts).
    pub tx_datagrams: u64,
    /// UDP payload bytes sent.
    pub tx_bytes: u64,
    /// Send system calls that sent something.
    pub tx_syscalls: u64,
    /// Of those, GSO sends (`sendmsg` with `UDP_SEGMENT`).
    pub tx_gso_sends: u64,
    /// Datagrams received, GRO trains counted by their datagrams.
    pub rx_datagrams: u64,
    /// UDP payload bytes received.
    pub rx_bytes: u64,
    /// Receive system calls that returned something.
    pub rx_syscalls: u64,
    /// Received messages that held more than one datagram.
    pub rx_gro_batches: u64,
    /// Times GSO was switched off after a failed GSO send (0 or 1).
    pub gso_fallbacks: u64,
    /// Trains sent without GSO because the kernel would not segment them (segments above the path MTU),
    /// GSO kept on.
    pub gso_train_fallbacks: u64,
    /// Sends tried again because the kernel was out of buffers (ENOBUFS, ENOMEM).
    pub tx_out_of_buffers: u64,
}

/// The live counters behind [`UdpStats`].
#[derive(Default)]
struct Counters {
    tx_datagrams: AtomicU64,
    tx_bytes: AtomicU64,
    tx_syscalls: AtomicU64,
    tx_gso_sends: AtomicU64,
    rx_datagrams: AtomicU64,
    rx_bytes: AtomicU64,
    rx_syscalls: AtomicU64,
    rx_gro_batches: AtomicU64,
    gso_fallbacks: AtomicU64,
    gso_train_fallbacks: AtomicU64,
    tx_out_of_buffers: AtomicU64,
}

impl Counters {
    fn sent(&self, datagrams: usize, bytes: usize, gso: bool) {
        self.tx_datagrams.fetch_add(datagrams as u64, Relaxed);
        self.tx_bytes.fetch_add(bytes as u64, Relaxed);
        self.tx_syscalls.fetch_add(1, Relaxed);
        if gso {
            self.tx_gso_sends.fetch_add(1, Relaxed);
        }
    }

    fn received(&self, metas: &[RecvMeta]) {
        self.rx_syscalls.fetch_add(1, Relaxed);
        for meta in metas {
            let datagrams = meta.datagram_count();
            self.rx_datagrams.fetch_add(datagrams as u64, Relaxed);
            self.rx_bytes.fetch_add(meta.len as u64, Relaxed);
            if datagrams > 1 {
                self.rx_gro_batches.fetch_add(1, Relaxed);
            }
        }
    }

    fn snapshot(&self) -> UdpStats {
        UdpStats {
            tx_datagrams: self.tx_datagrams.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            tx_syscalls: self.tx_syscalls.load(Relaxed),
            tx_gso_sends: self.tx_gso_sends.load(Relaxed),
            rx_datagrams: self.rx_datagrams.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            rx_syscalls: self.rx_syscalls.load(Relaxed),
            rx_gro_batches: self.rx_gro_batches.load(Relaxed),
            gso_fallbacks: self.gso_fallbacks.load(Relaxed),
            gso_train_fallbacks: self.gso_train_fallbacks.load(Relaxed),
            tx_out_of_buffers: self.tx_out_of_buffers.load(Relaxed),
        }
    }
}

/// A nonblocking UDP socket with GSO/GRO, driven by the tokio reactor. Share it with `Arc`; every method
/// takes `&self`.
pub struct UdpSocket {
    /// `None` once closed. Operations hold a clone, so the descriptor closes when the last one ends.
    fd: Mutex<Option<Arc<Registered>>>,
    /// Turns true on [`UdpSocket::close`]; pending operations watch it.
    closed: watch::Sender<bool>,
    local: SocketAddr,
    /// Whether the socket is IPv6 (IPv4 destinations are then sent to as IPv4-mapped addresses).
    ipv6: bool,
    gso: AtomicBool,
    gro: bool,
    counters: Counters,
}

impl UdpSocket {
    /// Opens a socket as `opts` says, probing GSO and GRO. Must be called inside a tokio runtime with
    /// I/O enabled.
    pub fn bind(opts: &UdpOptions) -> Result<UdpSocket, IoError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(IoError::new(
                ErrorKind::InvalidArgument,
                "UdpSocket::bind must be called inside a tokio runtime",
            ));
        }
        let socket = Socket::new(Domain::for_address(opts.local), Type::DGRAM, Some(Protocol::UDP))
            .map_err(|e| IoError::from_os("socket", &e))?;
        let only_v6 = match (opts.local, opts.only_v6) {
            (SocketAddr::V4(_), Some(_)) => {
                return Err(IoError::new(ErrorKind::InvalidArgument, "only_v6 applies to IPv6 sockets only"));
            }
            (SocketAddr::V6(_), Some(v6)) => Some(v6),
            (SocketAddr::V6(a), None) if a.ip().is_unspecified() => Some(false),
            _ => None,
        };
        if let Some(v6) = only_v6 {
            socket.set_only_v6(v6).map_err(|e| IoError::from_os("setsockopt(IPV6_V6ONLY)", &e))?;
        }
        sys::set_buffer_sizes(&socket, opts.recv_buffer, opts.send_buffer)?;
        socket.set_nonblocking(true).map_err(|e| IoError::from_os("fcntl(O_NONBLOCK)", &e))?;
        socket.bind(&SockAddr::from(opts.local)).map_err(|e| IoError::from_os("bind", &e))?;
        let local = socket
            .local_addr()
            .map_err(|e| IoError::from_os("getsockname", &e))?
            .as_socket()
            .map(unmapped)
            .ok_or_else(|| IoError::new(ErrorKind::Os, "getsockname returned a non-IP address"))?;
        let gso = opts.gso && sys::gso_supported(&socket);
        let gro = opts.gro && sys::enable_gro(&socket);
        let fd = Registered::new(socket).map_err(|e| IoError::from_os("registering with the reactor", &e))?;
        Ok(UdpSocket {
            fd: Mutex::new(Some(Arc::new(fd))),
            closed: watch::Sender::new(false),
            local,
            ipv6: opts.local.is_ipv6(),
            gso: AtomicBool::new(gso),
            gro,
            counters: Counters::default(),
        })
    }

    /// Turns UDP checksums of sent IPv4 datagrams off (or back on), as some tunnels do inside an already
    /// authenticated path. The kernel refuses GSO sends without checksums (EINVAL), so the first GSO send
    /// afterwards takes the run-time fallback: it is resent datagram by datagram and GSO stays off.
    pub fn set_udp_checksums(&self, on: bool) -> Result<(), IoError> {
        self.fd()?.with(|s| sys::set_udp_checksums(s, on))
    }

    /// A second descriptor of the socket (`dup`, close-on-exec) for an event loop other than tokio's to
    /// watch for readiness. It keeps the socket open (and its port bound) until it is closed too.
    #[cfg(unix)]
    pub fn duplicate_fd(&self) -> Result<std::os::fd::OwnedFd, IoError> {
        let copy = self.fd()?.with(|s| s.try_clone()).map_err(|e| IoError::from_os("dup", &e))?;
        Ok(copy.into())
    }

    /// The bound address (with the port the system picked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The offloads in use now.
    pub fn caps(&self) -> UdpCaps {
        let gso = self.gso.load(Relaxed);
        UdpCaps { gso, max_segments: if gso { MAX_SEGMENTS } else { 1 }, gro: self.gro }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> UdpStats {
        self.counters.snapshot()
    }

    /// Sends the datagrams in `buf`, laid back to back at `segment_size` bytes (the last may be shorter),
    /// to `dest`.
    ///
    /// With GSO, one `sendmsg(UDP_SEGMENT)` carries up to [`MAX_SEGMENTS`] datagrams and at most
    /// 65,507 (IPv4) or 65,527 (IPv6) bytes. When a GSO send fails because the socket cannot segment (EIO:
    /// egress device without checksum offload before Linux 6.11, IPsec; EINVAL for segments within the
    /// path MTU: UDP checksums off) and the first of its datagrams then goes out alone, GSO is switched
    /// off for this socket ([`UdpCaps::gso`] turns false, `gso_fallbacks` counts 1) and the rest of those
    /// datagrams follow with `sendmmsg`: nothing is lost or sent twice. When it fails because this train
    /// cannot be segmented (EMSGSIZE, or EINVAL for segments above the path MTU, as some kernels answer)
    /// this train goes out without GSO, as plain sends would, and GSO stays on (`gso_train_fallbacks`).
    /// Without GSO every send is a `sendmmsg` of up to [`MAX_BATCH`] datagrams. A send that finds the
    /// kernel out of buffers (ENOBUFS) is tried again after a pause, a bounded number of times.
    ///
    /// On an error, the datagrams before the failing system call have been sent.
    pub async fn send_segments(&self, dest: SocketAddr, buf: &[u8], segment_size: usize) -> Result<(), IoError> {
        let fd = self.fd()?;
        let train = self.train(dest, buf, segment_size)?;
        let mut sent = 0;
        let op = async {
            let mut retries = 0;
            loop {
                let result = fd.io(Interest::WRITABLE, |socket| self.send_train(socket, &train, &mut sent)).await;
                if !self.pause_if_out_of_buffers(&result, &mut retries).await {
                    return result;
                }
            }
        };
        self.until_closed(sys::SEND_SYSCALL, op).await
    }

    /// Like [`send_segments`](Self::send_segments) without waiting: sends what the socket buffer takes now
    /// and returns how many bytes of `buf` went out (whole datagrams; less than `buf.len()` when the socket
    /// would block, 0 when nothing could be sent).
    pub fn try_send_segments(&self, dest: SocketAddr, buf: &[u8], segment_size: usize) -> Result<usize, IoError> {
        let fd = self.fd()?;
        let train = self.train(dest, buf, segment_size)?;
        let mut sent = 0;
        // Straight to the system call: tokio's cached readiness may lag (it is only a hint), and a
        // WouldBlock here costs the async operations nothing but one retry.
        match fd.with(|s| self.send_train(s, &train, &mut sent)) {
            Ok(()) => Ok(sent),
            // Out of buffers is a full socket to the caller: the waiting send takes over and retries.
            Err(e) if is_would_block(&e) => Ok(sent),
            Err(e) => Err(IoError::from_os(sys::SEND_SYSCALL, &e)),
        }
    }

    /// Sends each `(destination, payload)` as one datagram, in order, with `sendmmsg` of up to
    /// [`MAX_BATCH`] messages per system call, until all are sent.
    ///
    /// On an error, the messages before the failing system call have been sent.
    pub async fn send_batch(&self, msgs: &[(SocketAddr, &[u8])]) -> Result<(), IoError> {
        let fd = self.fd()?;
        let mut sent = 0;
        let op = async {
            let mut retries = 0;
            loop {
                let result = fd.io(Interest::WRITABLE, |socket| self.send_messages(socket, msgs, &mut sent)).await;
                if !self.pause_if_out_of_buffers(&result, &mut retries).await {
                    return result;
                }
            }
        };
        self.until_closed(sys::SEND_SYSCALL, op).await
    }

    /// After a send that failed with the kernel out of buffers, waits a moment and returns true (try
    /// again), at most [`OUT_OF_BUFFERS_RETRIES`] times per call; false for any other result.
    async fn pause_if_out_of_buffers(&self, result: &io::Result<()>, retries: &mut u32) -> bool {
        match result {
            Err(e) if is_out_of_buffers(e) && *retries < OUT_OF_BUFFERS_RETRIES => {
                *retries += 1;
                self.counters.tx_out_of_buffers.fetch_add(1, Relaxed);
                tokio::time::sleep(OUT_OF_BUFFERS_BACKOFF).await;
                true
            }
            _ => false,
        }
    }

    /// Like [`send_batch`](Self::send_batch) without waiting (straight to the system call): returns how many messages were sent (fewer
    /// than `msgs.len()` when the socket would block).
    pub fn try_send_batch(&self, msgs: &[(SocketAddr, &[u8])]) -> Result<usize, IoError> {
        let fd = self.fd()?;
        let mut sent = 0;
        match fd.with(|s| self.send_messages(s, msgs, &mut sent)) {
            Ok(()) => Ok(sent),
            // Out of buffers is a full socket to the caller: the waiting send takes over and retries.
            Err(e) if is_would_block(&e) => Ok(sent),
            Err(e) => Err(IoError::from_os(sys::SEND_SYSCALL, &e)),
        }
    }

    /// Sends the datagrams cut back to back from `data` by `lengths`, all to `dest`, without waiting (straight
    /// to the system calls) and returns how many went out, in order: fewer than `lengths.len()` when the
    /// socket is full. With GSO, a run of equal lengths and the shorter datagram after it (if one follows)
    /// go as one GSO train, so that the kernel walks its send path once per train instead of once per
    /// datagram (the receiver gets the same datagrams); up to [`MAX_BATCH`] trains and single datagrams
    /// share one `sendmmsg`.
    pub fn try_send_lengths(&self, dest: SocketAddr, data: &[u8], lengths: &[u32]) -> Result<usize, IoError> {
        if lengths.iter().map(|&l| l as usize).sum::<usize>() != data.len() {
            return Err(IoError::new(ErrorKind::InvalidArgument, "the lengths must add up to the buffer's length"));
        }
        let fd = self.fd()?;
        // Checks the destination's family once; its address serves every message.
        let to = self.train(dest, &[], 1)?;
        let max_payload = if to.dest_addr.is_ipv4() { MAX_PAYLOAD_V4 } else { MAX_PAYLOAD_V6 };
        let mut plan = [Message::default(); MAX_BATCH];
        let (mut sent, mut at) = (0, 0);
        loop {
            let gso = self.gso.load(Relaxed);
            let mut count = 0;
            let (mut i, mut off) = (sent, at);
            while count < MAX_BATCH && i < lengths.len() {
                let m = Message::next(&lengths[i..], off, max_payload, gso);
                (i, off) = (i + m.datagrams, off + m.len);
                plan[count] = m;
                count += 1;
            }
            let Some(first) = plan[..count].first().copied() else { return Ok(sent) };
            let bytes_of = |m: &Message| data.get(m.at..m.at + m.len).unwrap_or_default();
            let result = if first.segment_size > 0 && crate::fault::armed() {
                // With faults armed a train goes alone through `send_train`, where a refused GSO send is
                // handled; its injected faults then hit the call they name.
                self.send_train_message(&fd, &to, bytes_of(&first), &first)
            } else {
                let msgs = plan[..count].iter().map(|m| (bytes_of(m), m.segment_size));
                match fd.with(|s| sys::send_mixed(s, &to.dest, msgs)) {
                    // sendmmsg takes at least one message or fails; were it ever to take none, the waiting
                    // send would retry rather than this loop spin.
                    Ok(0) => return Ok(sent),
                    Ok(n) => {
                        if n < count {
                            // sendmmsg parks the error that stopped it at message `n` on the socket, where a
                            // receive would report it; the next round sends message `n` first and gets the
                            // error back as its own.
                            let _ = fd.with(|s| s.take_error());
                        }
                        let done = &plan[..n.min(count)];
                        let (d, b) = done.iter().fold((0, 0), |(d, b), m| (d + m.datagrams, b + m.len));
                        self.counters.sent(d, b, false);
                        let trains = done.iter().filter(|m| m.segment_size > 0).count();
                        self.counters.tx_gso_sends.fetch_add(trains as u64, Relaxed);
                        Ok((d, b))
                    }
                    // The first message failed: a train is tried again on its own, where a refused GSO
                    // send falls back to plain sends.
                    Err(e) if first.segment_size > 0 && !is_would_block(&e) => {
                        self.send_train_message(&fd, &to, bytes_of(&first), &first)
                    }
                    Err(e) => Err(e),
                }
            };
            // Every Ok went forward; a socket that filled up answers the next call with WouldBlock.
            match result {
                Ok((datagrams, bytes)) => {
                    sent += datagrams;
                    at += bytes;
                }
                Err(e) if is_would_block(&e) => return Ok(sent),
                Err(e) => return Err(IoError::from_os(sys::SEND_SYSCALL, &e)),
            }
        }
    }

    /// Sends one planned train through [`send_train`](Self::send_train); returns the datagrams and bytes
    /// that went out, or the error that stopped it before any did.
    fn send_train_message(
        &self,
        fd: &Registered,
        to: &Train<'_>,
        bytes: &[u8],
        m: &Message,
    ) -> io::Result<(usize, usize)> {
        let train = Train { buf: bytes, segment_size: m.segment_size, segments_per_gso: m.datagrams, ..to.clone() };
        let mut done = 0;
        let result = fd.with(|s| self.send_train(s, &train, &mut done));
        // Whole datagrams went out: all of them, or `done / size` full-size ones.
        let datagrams = if done == m.len { m.datagrams } else { done / m.segment_size };
        match result {
            Ok(()) => Ok((datagrams, done)),
            Err(_) if done > 0 => Ok((datagrams, done)),
            Err(e) => Err(e),
        }
    }

    /// Sends one datagram to `dest` right away with one `sendto` on the caller's thread: `Ok(false)`, with
    /// nothing sent, when the socket buffer is full or the kernel out of buffers (then
    /// [`send_batch`](Self::send_batch) waits and retries). A single datagram needs none of `sendmmsg`'s
    /// arrays.
    pub fn try_send_to(&self, dest: SocketAddr, data: &[u8]) -> Result<bool, IoError> {
        let fd = self.fd()?;
        let addr = self.sockaddr(dest);
        match fd.with(|s| s.send_to(data, &addr)) {
            Ok(_) => {
                self.counters.sent(1, data.len(), false);
                Ok(true)
            }
            Err(e) if is_would_block(&e) => Ok(false),
            Err(e) => Err(IoError::from_os(SEND_TO_SYSCALL, &e)),
        }
    }

    /// Receives up to `batch.capacity()` messages with one `recvmmsg`, waiting until there is at least
    /// one, and returns how many. With GRO a message may hold several datagrams of
    /// [`RecvMeta::stride`] bytes; [`RecvBatch::datagrams`] splits them.
    pub async fn recv_batch(&self, batch: &mut RecvBatch) -> Result<usize, IoError> {
        let fd = self.fd()?;
        batch.clear();
        let op = fd.io(Interest::READABLE, |socket| sys::recv_messages(socket, &mut batch.bufs, &mut batch.metas));
        let n = self.until_closed(sys::RECV_SYSCALL, op).await?;
        Ok(self.received(batch, n))
    }

    /// Like [`recv_batch`](Self::recv_batch) without waiting (straight to the system call): returns 0 when
    /// nothing is queued.
    pub fn try_recv_batch(&self, batch: &mut RecvBatch) -> Result<usize, IoError> {
        let fd = self.fd()?;
        batch.clear();
        match fd.with(|s| sys::recv_messages(s, &mut batch.bufs, &mut batch.metas)) {
            Ok(n) => Ok(self.received(batch, n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(IoError::from_os(sys::RECV_SYSCALL, &e)),
        }
    }

    /// Receives what is queued, without waiting, straight into `bufs`: message `i` lands at the start of
    /// the `i`th [`RECV_BUFFER_SIZE`]-byte slot of `bufs` and is described by `metas[i]`. As many messages
    /// as there are whole slots and entries of `metas` ([`MAX_BATCH`] at most); 0 when nothing is queued
    /// (or `bufs` has no whole slot).
    pub fn try_recv_into(&self, bufs: &mut [u8], metas: &mut [RecvMeta]) -> Result<usize, IoError> {
        let fd = self.fd()?;
        match fd.with(|s| sys::recv_messages(s, bufs, metas)) {
            Ok(n) => {
                self.counters.received(&metas[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(IoError::from_os(sys::RECV_SYSCALL, &e)),
        }
    }

    /// Waits until a datagram is queued, without taking it (a one-byte `MSG_PEEK`): the receive that
    /// follows, with [`try_recv_into`](Self::try_recv_into), finds it.
    pub async fn wait_readable(&self) -> Result<(), IoError> {
        let fd = self.fd()?;
        let op = fd.io(Interest::READABLE, |socket| {
            let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
            match socket.peek(&mut byte) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
                // Anything else (a truncated datagram on Windows, a queued socket error): the receive
                // that follows reports it.
                Err(_) => Ok(()),
            }
        });
        self.until_closed(sys::RECV_SYSCALL, op).await
    }

    /// Closes the socket: pending and later operations end with [`ErrorKind::Closed`]. The descriptor is
    /// closed as soon as no operation uses it any more. Closing twice is harmless.
    pub fn close(&self) {
        self.fd.lock().unwrap_or_else(PoisonError::into_inner).take();
        self.closed.send_replace(true);
    }

    /// The registered descriptor, or Closed.
    fn fd(&self) -> Result<Arc<Registered>, IoError> {
        self.fd.lock().unwrap_or_else(PoisonError::into_inner).clone().ok_or_else(IoError::closed)
    }

    /// Runs `op` until it ends or the socket is closed, whichever comes first.
    async fn until_closed<T>(
        &self,
        syscall: &'static str,
        op: impl std::future::Future<Output = io::Result<T>>,
    ) -> Result<T, IoError> {
        let mut closed = self.closed.subscribe();
        tokio::select! {
            biased;
            _ = closed.wait_for(|&c| c) => Err(IoError::closed()),
            result = op => result.map_err(|e| IoError::from_os(syscall, &e)),
        }
    }

    /// Validates a `send_segments` call and resolves its destination.
    fn train<'a>(&self, dest: SocketAddr, buf: &'a [u8], segment_size: usize) -> Result<Train<'a>, IoError> {
        let dest = unmapped(dest);
        if !self.ipv6 && dest.is_ipv6() {
            return Err(IoError::new(ErrorKind::InvalidArgument, format!("{dest} is IPv6 but the socket is IPv4")));
        }
        let max_payload = if dest.is_ipv4() { MAX_PAYLOAD_V4 } else { MAX_PAYLOAD_V6 };
        if segment_size == 0 || segment_size > max_payload {
            return Err(IoError::new(
                ErrorKind::InvalidArgument,
                format!("segment_size {segment_size} is outside 1..={max_payload}"),
            ));
        }
        Ok(Train {
            dest: self.sockaddr(dest),
            dest_addr: dest,
            buf,
            segment_size,
            segments_per_gso: MAX_SEGMENTS.min(max_payload / segment_size),
        })
    }

    /// Sends `train.buf[*sent..]`, advancing `*sent` past every datagram that went out, so that a call
    /// after WouldBlock resumes where this one stopped.
    fn send_train(&self, socket: &Socket, train: &Train<'_>, sent: &mut usize) -> io::Result<()> {
        let seg = train.segment_size;
        // Turned off for the rest of this train when the segments are too big to segment (EMSGSIZE).
        let mut gso_for_train = true;
        while let Some(rest) = train.buf.get(*sent..).filter(|rest| !rest.is_empty()) {
            if rest.len() > seg && gso_for_train && self.gso.load(Relaxed) {
                let chunk = &rest[..rest.len().min(train.segments_per_gso * seg)];
                let Err(err) = sys::send_gso(socket, &train.dest, chunk, seg) else {
                    self.counters.sent(chunk.len().div_ceil(seg), chunk.len(), true);
                    *sent += chunk.len();
                    continue;
                };
                match sys::gso_refusal(&err, train.dest_addr, seg) {
                    Some(GsoRefusal::Socket) => {
                        // Segmentation is to blame only if the first datagram goes out on its own; if it
                        // does not, its error is the answer and GSO stays on.
                        let first = &rest[..seg];
                        sys::send_messages(socket, std::iter::once((&train.dest, first)))?;
                        self.counters.sent(1, seg, false);
                        *sent += seg;
                        if self.gso.swap(false, Relaxed) {
                            self.counters.gso_fallbacks.fetch_add(1, Relaxed);
                        }
                    }
                    // The datagrams still go out one by one (fragmented, as a plain send would be).
                    Some(GsoRefusal::Train) => {
                        gso_for_train = false;
                        self.counters.gso_train_fallbacks.fetch_add(1, Relaxed);
                    }
                    None => return Err(err),
                }
                continue;
            }
            let n = sys::send_messages(socket, rest.chunks(seg).take(MAX_BATCH).map(|d| (&train.dest, d)))?;
            let bytes = rest.len().min(n * seg);
            self.counters.sent(n, bytes, false);
            *sent += bytes;
        }
        Ok(())
    }

    /// Sends `msgs[*sent..]`, advancing `*sent` past every message that went out.
    fn send_messages(&self, socket: &Socket, msgs: &[(SocketAddr, &[u8])], sent: &mut usize) -> io::Result<()> {
        while let Some(rest) = msgs.get(*sent..).filter(|rest| !rest.is_empty()) {
            let batch = &rest[..rest.len().min(MAX_BATCH)];
            let n = sys::send_messages(socket, batch.iter().map(|(addr, data)| (self.sockaddr(*addr), *data)))?;
            let bytes = batch.iter().take(n).map(|(_, data)| data.len()).sum();
            self.counters.sent(n, bytes, false);
            *sent += n;
        }
        Ok(())
    }

    /// Records a receive of `n` messages into `batch`.
    fn received(&self, batch: &mut RecvBatch, n: usize) -> usize {
        batch.filled = n;
        self.counters.received(batch.metas());
        n
    }

    /// The kernel address for `dest`: IPv4 destinations of an IPv6 socket become IPv4-mapped.
    fn sockaddr(&self, dest: SocketAddr) -> SockAddr {
        match unmapped(dest) {
            SocketAddr::V4(v4) if self.ipv6 => {
                SockAddr::from(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            dest => SockAddr::from(dest),
        }
    }
}

/// A validated `send_segments` request.
#[derive(Clone)]
struct Train<'a> {
    dest: SockAddr,
    /// `dest` as given (IPv4 not mapped), for the path MTU.
    dest_addr: SocketAddr,
    buf: &'a [u8],
    segment_size: usize,
    /// Datagrams per GSO send: [`MAX_SEGMENTS`], fewer when they would exceed the IP payload limit.
    segments_per_gso: usize,
}

/// A full socket or a kernel out of buffers: the waiting send takes over and retries.
fn is_would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || is_out_of_buffers(e)
}

/// One message of [`UdpSocket::try_send_lengths`]: `len` bytes from `at`, one datagram, or with a
/// segment size a GSO train of `datagrams` datagrams.
#[derive(Clone, Copy, Default)]
struct Message {
    at: usize,
    len: usize,
    /// 0 for a single datagram.
    segment_size: usize,
    datagrams: usize,
}

impl Message {
    /// The message that starts with `lengths[0]` at byte `at`: with GSO, the run of datagrams as long as
    /// the first and a shorter one after it, as many as one GSO send takes; otherwise the first alone.
    fn next(lengths: &[u32], at: usize, max_payload: usize, gso: bool) -> Message {
        let first = lengths.first().map_or(0, |&l| l as usize);
        let single = Message { at, len: first, segment_size: 0, datagrams: 1 };
        if !gso || first == 0 || first > max_payload {
            return single;
        }
        let most = MAX_SEGMENTS.min(max_payload / first);
        let run = lengths.iter().take(most).take_while(|&&l| l as usize == first).count();
        let tail = match lengths.get(run) {
            Some(&l) if run < most && l > 0 && (l as usize) < first => l as usize,
            _ => 0,
        };
        let datagrams = run + usize::from(tail > 0);
        if datagrams < 2 {
            return single;
        }
        Message { at, len: run * first + tail, segment_size: first, datagrams }
    }
}

/// Why the kernel refused a GSO send that plain sends may still carry (only Linux reports these).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
enum GsoRefusal {
    /// The socket cannot use GSO (egress device without checksum offload before Linux 6.11, IPsec on
    /// the route, UDP checksums switched off): switch GSO off for good.
    Socket,
    /// This train cannot be segmented (segments above the path MTU): send it without GSO, keep GSO on.
    Train,
}

/// `addr` with an IPv4-mapped IPv6 address turned into plain IPv4.
fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The sender of a received message as reported to callers.
fn sender(addr: Option<SocketAddr>) -> SocketAddr {
    // The kernel always fills in the source of a UDP datagram; the unspecified address stands in for a
    // family we do not know rather than failing the whole batch.
    addr.map(unmapped).unwrap_or(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)))
}
