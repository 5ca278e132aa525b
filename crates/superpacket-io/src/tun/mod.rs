//! A TUN device whose every read and write is a *frame*: a 10-byte `virtio_net_hdr` followed by one IP
//! packet, which with TSO/USO is a superpacket of up to 64 KiB.
//!
//! On Linux the device is opened with IFF_VNET_HDR and the kernel's segmentation offloads where it grants
//! them ([`linux`]); elsewhere ([`fallback`]) there are no offloads, but reads still start with a zeroed
//! header and writes still take frames, so callers handle one format everywhere.
//!
//! Each queue is one nonblocking file descriptor registered with tokio. [`TunQueue::close`] ends pending
//! and later operations with [`ErrorKind::Closed`]; the descriptor itself closes when the last operation
//! that holds it returns.

#[cfg(not(target_os = "linux"))]
mod fallback;
#[cfg(target_os = "linux")]
mod linux;

#[cfg(not(target_os = "linux"))]
use fallback as sys;
#[cfg(target_os = "linux")]
use linux as sys;

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use superpacket_core::coalesce::{CoalesceOptions, Coalescer, Frames};
use superpacket_core::packet::MAX_IP_PACKET;
use superpacket_core::{split, GsoKind, VirtioNetHdr, VNET_HDR_LEN};
use tokio::sync::watch;

use crate::error::{ErrorKind, IoError};

/// Smallest buffer [`TunQueue::read_frame`] accepts: a header and the largest IP packet.
pub const MIN_READ_BUF: usize = VNET_HDR_LEN + MAX_IP_PACKET;

/// The header put before packets that need nothing from the kernel (GSO_NONE, checksum complete).
const PLAIN_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// Whether to ask the kernel for segmentation offloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OffloadMode {
    /// Use what the kernel grants; run without offloads where it grants none.
    #[default]
    Auto,
    /// Require IFF_VNET_HDR with checksum and TCP segmentation offload; [`Tun::open`] fails with
    /// [`ErrorKind::Unsupported`] if the kernel (or the platform) refuses. USO is still taken only where
    /// the kernel has it (Linux 6.2+).
    On,
    /// No offloads. A persistent device's offload mask left by an earlier user is cleared.
    Off,
}

/// How to open a TUN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunOptions {
    /// Interface name (at most 15 bytes); `None` lets the kernel choose (`tun0`, `tun1` ...).
    pub name: Option<String>,
    /// MTU to set; `None` keeps the kernel's default.
    pub mtu: Option<u16>,
    /// IPv4 address and prefix length to assign.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// IPv6 address and prefix length to assign.
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// Segmentation offloads.
    pub offload: OffloadMode,
    /// Number of queues (file descriptors), at least 1; more than 1 needs IFF_MULTI_QUEUE (Linux).
    pub queues: usize,
}

impl TunOptions {
    /// Applies name, MTU and addresses to a tun-rs builder (the platform files add the rest).
    fn configure(&self, mut b: tun_rs::DeviceBuilder) -> tun_rs::DeviceBuilder {
        if let Some(name) = &self.name {
            b = b.name(name);
        }
        if let Some(mtu) = self.mtu {
            b = b.mtu(mtu);
        }
        if let Some((addr, prefix)) = self.ipv4 {
            b = b.ipv4(addr, prefix, None);
        }
        if let Some((addr, prefix)) = self.ipv6 {
            b = b.ipv6(addr, prefix);
        }
        b
    }
}

impl Default for TunOptions {
    fn default() -> Self {
        TunOptions { name: None, mtu: None, ipv4: None, ipv6: None, offload: OffloadMode::Auto, queues: 1 }
    }
}

/// What the kernel granted the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Frames carry a `virtio_net_hdr` on the wire (IFF_VNET_HDR). Without it the header is synthesised
    /// on read and stripped on write.
    pub vnet_hdr: bool,
    /// Checksum offload (TUN_F_CSUM): packets may arrive with a partial checksum (NEEDS_CSUM).
    pub csum: bool,
    /// TCP over IPv4 segmentation (TUN_F_TSO4).
    pub tso4: bool,
    /// TCP over IPv6 segmentation (TUN_F_TSO6).
    pub tso6: bool,
    /// UDP over IPv4 segmentation (TUN_F_USO4, Linux 6.2+).
    pub uso4: bool,
    /// UDP over IPv6 segmentation (TUN_F_USO6, Linux 6.2+).
    pub uso6: bool,
}

/// Declares [`TunStats`] (a plain snapshot) and its atomic counterpart from one list of fields.
macro_rules! stats {
    ($($(#[$doc:meta])* $field:ident,)*) => {
        /// Counters of one queue ([`TunQueue::stats`]) or of all queues ([`Tun::stats`]).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct TunStats {
            $($(#[$doc])* pub $field: u64,)*
        }

        impl std::ops::Add for TunStats {
            type Output = TunStats;
            fn add(self, other: TunStats) -> TunStats {
                TunStats { $($field: self.$field + other.$field,)* }
            }
        }

        #[derive(Default)]
        struct Counters {
            $($field: AtomicU64,)*
        }

        impl Counters {
            fn snapshot(&self) -> TunStats {
                TunStats { $($field: self.$field.load(Ordering::Relaxed),)* }
            }
        }
    };
}

stats! {
    /// Frames read.
    rx_frames,
    /// IP bytes read (virtio headers not counted).
    rx_bytes,
    /// Wire-sized packets the frames read stand for (a GSO frame counts its segments).
    rx_segments,
    /// Read system calls that returned a frame.
    rx_syscalls,
    /// Frames written as they were (GSO frames and single packets).
    tx_frames,
    /// IP packets written, counting the segments a GSO frame stands for.
    tx_packets,
    /// IP bytes written (virtio headers not counted).
    tx_bytes,
    /// Write system calls.
    tx_syscalls,
    /// GSO frames split in userspace and written packet by packet because the kernel refuses GSO writes
    /// (the first EINVAL switches them off; later GSO frames go straight to the split).
    tx_fallbacks,
    /// Frames not written because they were malformed or the write failed.
    tx_drops,
}

fn bump(counter: &AtomicU64, by: usize) {
    counter.fetch_add(by as u64, Ordering::Relaxed);
}

/// State the queues of one device share.
struct DeviceState {
    offloads: Offloads,
    /// Whether GSO frames may be written as they are: cleared when the kernel refuses one (at the start-up
    /// probe or later), after which frames are split in userspace and nothing is coalesced.
    gso_writes: AtomicBool,
}

impl DeviceState {
    fn gso_writes(&self) -> bool {
        self.gso_writes.load(Ordering::Relaxed)
    }

    /// What [`TunQueue::write_packets`] may merge now.
    fn coalesce_options(&self) -> CoalesceOptions {
        let o = self.offloads;
        let on = o.vnet_hdr && self.gso_writes();
        CoalesceOptions { tcp: on && o.tso4 && o.tso6, udp: on && o.uso4 && o.uso6 }
    }
}

/// An open TUN device: its name, MTU, granted offloads and queues.
pub struct Tun {
    name: String,
    mtu: u16,
    device: Arc<DeviceState>,
    queues: Vec<Arc<TunQueue>>,
}

impl Tun {
    /// Creates (or attaches to) the device, configures it, brings it up and opens its queues.
    ///
    /// Must be called inside a tokio runtime with I/O enabled: the queues register with its reactor.
    /// Fails with [`ErrorKind::Permission`] without CAP_NET_ADMIN, [`ErrorKind::InvalidArgument`] for bad
    /// options, [`ErrorKind::Unsupported`] when [`OffloadMode::On`] or several queues are refused.
    pub fn open(opts: &TunOptions) -> Result<Tun, IoError> {
        validate(opts)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(IoError::new(ErrorKind::InvalidArgument, "Tun::open must be called inside a tokio runtime"));
        }
        let opened = sys::open(opts)?;
        let device =
            Arc::new(DeviceState { offloads: opened.offloads, gso_writes: AtomicBool::new(opened.gso_writes) });
        let queues = opened.queues.into_iter().map(|raw| Arc::new(TunQueue::new(raw, device.clone()))).collect();
        Ok(Tun { name: opened.name, mtu: opened.mtu, device, queues })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The MTU at open time.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// What the kernel granted.
    pub fn offloads(&self) -> Offloads {
        self.device.offloads
    }

    /// Whether GSO frames are still written as they are (false once the kernel refused one; see
    /// [`TunQueue::write_frame`]).
    pub fn coalescing_enabled(&self) -> bool {
        self.device.gso_writes()
    }

    /// The queues, one file descriptor each.
    pub fn queues(&self) -> &[Arc<TunQueue>] {
        &self.queues
    }

    /// The counters of all queues added up.
    pub fn stats(&self) -> TunStats {
        self.queues.iter().map(|q| q.stats()).fold(TunStats::default(), |a, b| a + b)
    }

    /// Closes every queue ([`TunQueue::close`]). A non-persistent device disappears once all are closed.
    pub fn close(&self) {
        for q in &self.queues {
            q.close();
        }
    }
}

fn validate(opts: &TunOptions) -> Result<(), IoError> {
    let invalid = |m: String| Err(IoError::new(ErrorKind::InvalidArgument, m));
    if opts.queues == 0 {
        return invalid("queues must be at least 1".into());
    }
    if let Some(name) = &opts.name {
        if name.is_empty() || name.len() > 15 || name.bytes().any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace()) {
            return invalid(format!("invalid interface name {name:?}: 1 to 15 bytes, no '/', NUL or spaces"));
        }
    }
    if let Some(mtu) = opts.mtu {
        if mtu < 68 {
            return invalid(format!("MTU {mtu} is below the IPv4 minimum of 68"));
        }
    }
    if let Some((_, prefix)) = opts.ipv4 {
        if prefix > 32 {
            return invalid(format!("IPv4 prefix length {prefix} is over 32"));
        }
    }
    if let Some((_, prefix)) = opts.ipv6 {
        if prefix > 128 {
            return invalid(format!("IPv6 prefix length {prefix} is over 128"));
        }
    }
    Ok(())
}

/// Reused state of [`TunQueue::write_packets`]: the coalescer and its output frames.
#[derive(Default)]
pub struct WriteScratch {
    coalescer: Option<Coalescer>,
    frames: Frames,
}

impl WriteScratch {
    /// Empty scratch; buffers grow to the largest batch and are then reused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the frames with those `packets` coalesce into under `options`.
    fn coalesce<P: AsRef<[u8]>>(&mut self, options: CoalesceOptions, packets: &[P]) {
        let c = self.coalescer.get_or_insert_with(|| Coalescer::new(options));
        c.set_options(options);
        self.frames.clear();
        c.coalesce(packets, &mut self.frames);
    }
}

/// One queue of a TUN device: a nonblocking file descriptor registered with tokio.
pub struct TunQueue {
    /// `None` once closed. Operations clone the `Arc`, so the descriptor closes when the last one ends.
    io: RwLock<Option<Arc<sys::RawQueue>>>,
    closed: watch::Sender<bool>,
    device: Arc<DeviceState>,
    counters: Counters,
}

impl TunQueue {
    fn new(raw: sys::RawQueue, device: Arc<DeviceState>) -> TunQueue {
        TunQueue {
            io: RwLock::new(Some(Arc::new(raw))),
            closed: watch::Sender::new(false),
            device,
            counters: Counters::default(),
        }
    }

    /// Reads one frame into `buf`, which must hold at least [`MIN_READ_BUF`] bytes, and returns its
    /// length. A frame is always a 10-byte `virtio_net_hdr` followed by an IP packet: without IFF_VNET_HDR
    /// a zeroed header is written before the packet, so callers see one format everywhere.
    pub async fn read_frame(&self, buf: &mut [u8]) -> Result<usize, IoError> {
        check_read_buf(buf)?;
        let io = self.io()?;
        let vnet = self.device.offloads.vnet_hdr;
        let n = self
            .until_closed(async {
                let target = if vnet { &mut *buf } else { &mut buf[VNET_HDR_LEN..] };
                io.read(target).await.map_err(|e| IoError::from_os("read", &e))
            })
            .await?;
        Ok(self.finish_read(buf, n))
    }

    /// [`read_frame`](Self::read_frame) without waiting: `Ok(None)` when no frame is ready.
    pub fn try_read_frame(&self, buf: &mut [u8]) -> Result<Option<usize>, IoError> {
        check_read_buf(buf)?;
        let io = self.io()?;
        let target = if self.device.offloads.vnet_hdr { &mut *buf } else { &mut buf[VNET_HDR_LEN..] };
        match io.try_read(target) {
            Ok(n) => Ok(Some(self.finish_read(buf, n))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(IoError::from_os("read", &e)),
        }
    }

    /// Adds the synthesised header if the device has none, counts the frame and returns its length.
    fn finish_read(&self, buf: &mut [u8], n: usize) -> usize {
        let len = if self.device.offloads.vnet_hdr {
            n
        } else {
            buf[..VNET_HDR_LEN].copy_from_slice(&PLAIN_HDR);
            n + VNET_HDR_LEN
        };
        let c = &self.counters;
        bump(&c.rx_frames, 1);
        bump(&c.rx_bytes, len.saturating_sub(VNET_HDR_LEN));
        bump(&c.rx_segments, segment_count(&buf[..len]));
        bump(&c.rx_syscalls, 1);
        len
    }

    /// Writes one frame (`virtio_net_hdr` + IP packet).
    ///
    /// With IFF_VNET_HDR the frame goes to the kernel as it is. If the kernel refuses a GSO frame
    /// (EINVAL), the frame is split in userspace and its packets written one by one, and GSO writes and
    /// coalescing are switched off for the whole device ([`Tun::coalescing_enabled`] turns false,
    /// `tx_fallbacks` counts it): nothing is lost. Without IFF_VNET_HDR a GSO frame, or one whose checksum
    /// is still partial, is split; any other frame is written without its header.
    ///
    /// A malformed frame fails with [`ErrorKind::InvalidPacket`] and counts in `tx_drops`.
    pub async fn write_frame(&self, frame: &[u8]) -> Result<(), IoError> {
        let io = self.io()?;
        self.until_closed(self.write_frame_on(&io, frame)).await
    }

    /// Coalesces IP packets into as few frames as the device allows and writes them. TCP is merged only
    /// if the kernel granted TSO, UDP only if it granted USO, and neither after a refused GSO write.
    /// Without IFF_VNET_HDR every packet is written as it is. Each flow keeps its order.
    pub async fn write_packets<P: AsRef<[u8]>>(
        &self,
        packets: &[P],
        scratch: &mut WriteScratch,
    ) -> Result<(), IoError> {
        let io = self.io()?;
        self.until_closed(async {
            if !self.device.offloads.vnet_hdr {
                for p in packets {
                    self.write_counted(&io, p.as_ref(), &[IoSlice::new(p.as_ref())], 1).await?;
                }
                return Ok(());
            }
            scratch.coalesce(self.device.coalesce_options(), packets);
            for frame in scratch.frames.iter() {
                self.write_frame_on(&io, frame).await?;
            }
            Ok(())
        })
        .await
    }

    /// Closes the queue: pending and later operations end with [`ErrorKind::Closed`], and the file
    /// descriptor closes as soon as no operation holds it. Closing twice is harmless.
    pub fn close(&self) {
        let taken = self.io.write().unwrap_or_else(PoisonError::into_inner).take();
        self.closed.send_replace(true);
        drop(taken);
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// A snapshot of this queue's counters.
    pub fn stats(&self) -> TunStats {
        self.counters.snapshot()
    }

    fn io(&self) -> Result<Arc<sys::RawQueue>, IoError> {
        self.io.read().unwrap_or_else(PoisonError::into_inner).clone().ok_or_else(IoError::closed)
    }

    /// Runs `op` until it finishes or the queue is closed, whichever comes first.
    async fn until_closed<T>(&self, op: impl Future<Output = Result<T, IoError>>) -> Result<T, IoError> {
        let mut closed = self.closed.subscribe();
        tokio::select! {
            biased;
            _ = closed.wait_for(|c| *c) => Err(IoError::closed()),
            r = op => r,
        }
    }

    async fn write_frame_on(&self, io: &sys::RawQueue, frame: &[u8]) -> Result<(), IoError> {
        let result = self.write_frame_inner(io, frame).await;
        if result.is_err() {
            bump(&self.counters.tx_drops, 1);
        }
        result
    }

    async fn write_frame_inner(&self, io: &sys::RawQueue, frame: &[u8]) -> Result<(), IoError> {
        let hdr = VirtioNetHdr::decode(frame)?;
        let packet = &frame[VNET_HDR_LEN..];
        let gso = hdr.kind()? != GsoKind::None;
        if self.device.offloads.vnet_hdr {
            if !gso || self.device.gso_writes() {
                match self.write_counted(io, packet, &[IoSlice::new(frame)], segment_count(frame)).await {
                    Err(e) if gso && e.errno == Some(libc::EINVAL) => {}
                    other => return other,
                }
            }
            // Split before giving up on GSO: a frame that does not split was malformed, not refused.
            let packets = split::split_to_vec(frame)?;
            self.device.gso_writes.store(false, Ordering::Relaxed);
            bump(&self.counters.tx_fallbacks, 1);
            for p in &packets {
                self.write_counted(io, p, &[IoSlice::new(&PLAIN_HDR), IoSlice::new(p)], 1).await?;
            }
            return Ok(());
        }
        if !gso && !hdr.needs_csum() {
            return self.write_counted(io, packet, &[IoSlice::new(packet)], 1).await;
        }
        for p in &split::split_to_vec(frame)? {
            self.write_counted(io, p, &[IoSlice::new(p)], 1).await?;
        }
        Ok(())
    }

    /// One write system call of `parts`, which carry the IP packet `packet` standing for `segments`
    /// packets. EINVAL on a frame is reported as [`ErrorKind::InvalidPacket`] (with the errno kept).
    async fn write_counted(
        &self,
        io: &sys::RawQueue,
        packet: &[u8],
        parts: &[IoSlice<'_>],
        segments: usize,
    ) -> Result<(), IoError> {
        let c = &self.counters;
        bump(&c.tx_syscalls, 1);
        match io.write(parts).await {
            Ok(_) => {
                bump(&c.tx_frames, 1);
                bump(&c.tx_packets, segments);
                bump(&c.tx_bytes, packet.len());
                Ok(())
            }
            Err(e) => {
                let mut err = IoError::from_os("write", &e);
                if err.errno == Some(libc::EINVAL) {
                    err.kind = ErrorKind::InvalidPacket;
                }
                Err(err)
            }
        }
    }
}

fn check_read_buf(buf: &[u8]) -> Result<(), IoError> {
    if buf.len() < MIN_READ_BUF {
        return Err(IoError::new(
            ErrorKind::InvalidArgument,
            format!("read buffer of {} bytes is below the {MIN_READ_BUF} a frame may need", buf.len()),
        ));
    }
    Ok(())
}

/// How many wire packets a frame stands for; 1 for anything that does not plan as a split.
fn segment_count(frame: &[u8]) -> usize {
    split::plan(frame).map_or(1, |p| p.count)
}

/// What a platform's `open` hands back.
struct Opened {
    name: String,
    mtu: u16,
    offloads: Offloads,
    /// Whether GSO frames may be written (false when the start-up probe saw them refused).
    gso_writes: bool,
    queues: Vec<sys::RawQueue>,
}
