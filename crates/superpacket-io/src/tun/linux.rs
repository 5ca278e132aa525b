//! Linux: tun-rs creates and configures the device; the offload mask, the GSO probe and all reads and
//! writes are ours.
//!
//! Why not tun-rs for everything: its `offload(true)` fails the whole open when TSO is refused and does
//! not report whether USO was granted through a stable API, and its `recv_multiple`/`GROTable` segment
//! into its own buffers, while our data path splits a superpacket straight into framed UDP send buffers.
//! So we take its descriptors and set TUNSETOFFLOAD ourselves (the mask is device-wide, so setting it
//! once after every queue is attached decides it).

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use superpacket_core::{checksum, packet, VirtioNetHdr, VNET_HDR_LEN};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tun_rs::{DeviceBuilder, SyncDevice};

use super::{OffloadMode, Offloads, Opened, TunOptions};
use crate::error::{ErrorKind, IoError};
use crate::fault::{self, Syscall};

const TCP_OFFLOADS: libc::c_uint = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
const UDP_OFFLOADS: libc::c_uint = libc::TUN_F_USO4 | libc::TUN_F_USO6;
/// Ring size (txqueuelen) of a device without offloads; with TSO each slot holds a superpacket and the
/// default suffices. Measured: one TCP flow through the native Tunnel with offloads off had ~15,000 TUN TX
/// drops (and as many retransmits) per 256 MiB at 500, 1 at 4,000.
const PLAIN_TX_QUEUE_LEN: u32 = 4096;

/// One queue's descriptor, nonblocking. The tokio reactor watches a duplicate of it from the first native
/// wait for a frame on (a queue read only from JS, which waits on its own event loop, does not wake a
/// tokio thread for every packet).
pub(super) struct RawQueue {
    fd: OwnedFd,
    readable: OnceLock<AsyncFd<OwnedFd>>,
}

impl RawQueue {
    pub(super) async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let raw = self.fd.as_raw_fd();
        crate::readiness::readable_registration(&self.readable, self.fd.as_fd())?
            .async_io(Interest::READABLE, |_| read_fd(raw, buf))
            .await
    }

    pub(super) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        read_fd(self.fd.as_raw_fd(), buf)
    }

    /// Writes now, or waits for room (watching writability only while waiting: see `crate::readiness`).
    pub(super) async fn write(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        let fd = &self.fd;
        crate::readiness::write_when_ready(fd.as_fd(), || writev_fd(fd.as_raw_fd(), parts)).await
    }

    /// A second descriptor of the queue (close-on-exec), for an event loop other than tokio's to watch.
    pub(super) fn duplicate(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }
}

pub(super) fn open(opts: &TunOptions) -> Result<Opened, IoError> {
    let first = match build(opts, opts.offload != OffloadMode::Off) {
        // tun-rs's offload(true) insists on TSO; in Auto a device without IFF_VNET_HDR is the answer.
        Err(e) if opts.offload == OffloadMode::Auto && e.raw_os_error() == Some(libc::EINVAL) => build(opts, false),
        other => other,
    }
    .map_err(|e| open_error(&e, opts.offload))?;
    let vnet_hdr = first.tcp_gso();
    if !vnet_hdr {
        // One packet per ring slot: the kernel's default ring (500) overflows under one TCP flow's bursts
        // before a reader that wakes per batch drains it (TUN TX drops, then TCP retransmits).
        first.set_tx_queue_len(PLAIN_TX_QUEUE_LEN).map_err(|e| IoError::from_admin_os("ioctl(SIOCSIFTXQLEN)", &e))?;
    }
    let name = first.name().map_err(|e| IoError::from_os("ioctl(SIOCGIFNAME)", &e))?;
    let mtu = first.mtu().map_err(|e| IoError::from_os("ioctl(SIOCGIFMTU)", &e))?;

    let mut devices = Vec::with_capacity(opts.queues);
    for _ in 1..opts.queues {
        devices.push(first.try_clone().map_err(|e| IoError::from_admin_os("ioctl(TUNSETIFF) for another queue", &e))?);
    }
    devices.insert(0, first);
    let fds: Vec<OwnedFd> = devices
        .into_iter()
        // SAFETY: into_raw_fd hands over sole ownership of an open descriptor.
        .map(|d| unsafe { OwnedFd::from_raw_fd(d.into_raw_fd()) })
        .collect();

    let fd0 = fds[0].as_raw_fd();
    let offloads = set_offloads(fd0, opts.offload, vnet_hdr)?;
    let gso_writes = probe_gso_writes(fd0, offloads);

    let queues = fds.into_iter().map(register).collect::<Result<Vec<_>, _>>()?;
    Ok(Opened { name, mtu, offloads, gso_writes, queues })
}

fn build(opts: &TunOptions, offload: bool) -> io::Result<SyncDevice> {
    opts.configure(DeviceBuilder::new().offload(offload).multi_queue(opts.queues > 1)).build_sync()
}

/// The error of a failed open. With [`OffloadMode::On`], EINVAL is the kernel refusing IFF_VNET_HDR or
/// the TCP offloads that mode requires, so it is [`ErrorKind::Unsupported`], as when `set_offloads`
/// refuses; EPERM/EACCES get the CAP_NET_ADMIN advice.
fn open_error(e: &io::Error, mode: OffloadMode) -> IoError {
    if e.kind() == io::ErrorKind::InvalidInput && e.raw_os_error().is_none() {
        return IoError::new(ErrorKind::InvalidArgument, format!("opening the TUN device: {e}"));
    }
    let err = IoError::from_admin_os("opening /dev/net/tun (TUNSETIFF, TUNSETOFFLOAD or address setup)", e);
    if mode == OffloadMode::On && err.errno == Some(libc::EINVAL) {
        let message = format!("offload 'on': the kernel refused IFF_VNET_HDR or TSO ({})", err.message);
        return IoError { kind: ErrorKind::Unsupported, message, ..err };
    }
    err
}

/// Sets the device-wide offload mask and reports what the kernel took. USO (Linux 6.2+) is asked for
/// first; kernels that do not know it refuse the whole mask with EINVAL, so TCP alone is asked next.
/// Without IFF_VNET_HDR the mask is cleared: a persistent device keeps the mask of its last user, and
/// with it set the kernel would hand this header-less descriptor GSO superpackets.
fn set_offloads(fd: RawFd, mode: OffloadMode, vnet_hdr: bool) -> Result<Offloads, IoError> {
    if !vnet_hdr {
        tunsetoffload(fd, 0)?;
        return match mode {
            OffloadMode::On => Err(IoError::new(ErrorKind::Unsupported, "the kernel refused IFF_VNET_HDR")),
            _ => Ok(Offloads::default()),
        };
    }
    let tcp = Offloads { vnet_hdr: true, csum: true, tso4: true, tso6: true, ..Offloads::default() };
    if tunsetoffload(fd, TCP_OFFLOADS | UDP_OFFLOADS).is_ok() {
        return Ok(Offloads { uso4: true, uso6: true, ..tcp });
    }
    match tunsetoffload(fd, TCP_OFFLOADS) {
        Ok(()) => Ok(tcp),
        Err(e) if mode == OffloadMode::On => Err(IoError { kind: ErrorKind::Unsupported, ..e }),
        Err(_) => {
            tunsetoffload(fd, 0)?;
            Ok(Offloads { vnet_hdr: true, ..Offloads::default() })
        }
    }
}

fn tunsetoffload(fd: RawFd, mask: libc::c_uint) -> Result<(), IoError> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value; fd is an open TUN descriptor.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD, libc::c_ulong::from(mask)) };
    if rc < 0 {
        return Err(IoError::from_admin_os("ioctl(TUNSETOFFLOAD)", &io::Error::last_os_error()));
    }
    Ok(())
}

/// Some kernels accept the offload mask but refuse GSO frames written to the device with EINVAL. Writing
/// one small GSO frame of each granted kind tells: the frames are two coalesced segments from 198.18.0.1
/// to 198.18.0.2 (RFC 2544 benchmarking space) with TTL 0 and a deliberately wrong IPv4 header checksum,
/// so the kernel accepts or refuses the write at the device but then drops the packets in `ip_rcv`
/// before routing: nothing is delivered, forwarded or answered with ICMP.
fn probe_gso_writes(fd: RawFd, offloads: Offloads) -> bool {
    let kinds = [(offloads.tso4, packet::PROTO_TCP), (offloads.uso4, packet::PROTO_UDP)];
    kinds.into_iter().filter(|(granted, _)| *granted).all(|(_, proto)| {
        let frame = probe_frame(proto);
        // A write error other than EINVAL says nothing about GSO; the write path falls back if needed.
        !matches!(writev_fd(fd, &[IoSlice::new(&frame)]), Err(e) if e.raw_os_error() == Some(libc::EINVAL))
    })
}

/// A GSO frame of two 8-byte segments of `proto` (TCP or UDP) over IPv4, as a sender would write it:
/// NEEDS_CSUM with the pseudo-header sum in the L4 checksum field.
fn probe_frame(proto: u8) -> Vec<u8> {
    const SEG: usize = 8;
    let l4_len = if proto == packet::PROTO_TCP { packet::TCP_MIN_HDR_LEN } else { packet::UDP_HDR_LEN };
    let ip_len = 20 + l4_len + 2 * SEG;
    let mut f = vec![0u8; VNET_HDR_LEN + ip_len];
    let hdr = VirtioNetHdr {
        flags: superpacket_core::vnet::FLAG_NEEDS_CSUM,
        gso_type: if proto == packet::PROTO_TCP {
            superpacket_core::vnet::GSO_TCPV4
        } else {
            superpacket_core::vnet::GSO_UDP_L4
        },
        hdr_len: (20 + l4_len) as u16,
        gso_size: SEG as u16,
        csum_start: 20,
        csum_offset: packet::l4_checksum_offset(proto) as u16,
    };
    // The buffer is VNET_HDR_LEN long at least, so encode cannot fail.
    let _ = hdr.encode(&mut f);
    let ip = &mut f[VNET_HDR_LEN..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 0; // TTL 0
    ip[9] = proto;
    ip[10..12].copy_from_slice(&[0xde, 0xad]); // wrong on purpose: ip_rcv drops the packet
    ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
    ip[16..20].copy_from_slice(&[198, 18, 0, 2]);
    let l4 = &mut ip[20..];
    l4[0..2].copy_from_slice(&9u16.to_be_bytes()); // discard port
    l4[2..4].copy_from_slice(&9u16.to_be_bytes());
    if proto == packet::PROTO_TCP {
        l4[12] = 5 << 4;
        l4[13] = 0x10; // ACK
        l4[14..16].copy_from_slice(&1024u16.to_be_bytes());
    } else {
        l4[4..6].copy_from_slice(&((l4_len + 2 * SEG) as u16).to_be_bytes());
    }
    let pseudo = checksum::pseudo_header_v4(&[198, 18, 0, 1], &[198, 18, 0, 2], proto, (l4_len + 2 * SEG) as u16);
    let at = 20 + packet::l4_checksum_offset(proto);
    ip[at..at + 2].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
    f
}

fn register(fd: OwnedFd) -> Result<RawQueue, IoError> {
    // SAFETY: fcntl on an open descriptor we own.
    let rc = unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK)
        }
    };
    if rc < 0 {
        return Err(IoError::from_os("fcntl(O_NONBLOCK)", &io::Error::last_os_error()));
    }
    Ok(RawQueue { fd, readable: OnceLock::new() })
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    if let Some(e) = fault::take(Syscall::TunRead) {
        return Err(e);
    }
    loop {
        // SAFETY: buf is valid for writes of buf.len() bytes for the duration of the call.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match usize::try_from(n) {
            Ok(n) => return Ok(n),
            Err(_) => match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::Interrupted => continue,
                e => return Err(e),
            },
        }
    }
}

fn writev_fd(fd: RawFd, parts: &[IoSlice<'_>]) -> io::Result<usize> {
    let count = libc::c_int::try_from(parts.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if let Some(e) = fault::take(Syscall::TunWrite) {
        return Err(e);
    }
    loop {
        // SAFETY: IoSlice is ABI-compatible with struct iovec on Unix, and every slice outlives the call.
        let n = unsafe { libc::writev(fd, parts.as_ptr().cast(), count) };
        match usize::try_from(n) {
            Ok(n) => return Ok(n),
            Err(_) => match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::Interrupted => continue,
                e => return Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_on_refused_by_the_kernel_is_unsupported_not_os() {
        let einval = io::Error::from_raw_os_error(libc::EINVAL);
        assert_eq!(open_error(&einval, OffloadMode::On).kind, ErrorKind::Unsupported);
        assert_eq!(open_error(&einval, OffloadMode::Auto).kind, ErrorKind::Os);
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        assert_eq!(open_error(&eperm, OffloadMode::On).kind, ErrorKind::Permission);
    }
}
