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
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use superpacket_core::coalesce::{CoalesceOptions, Coalescer, Frames};
use superpacket_core::packet::{self, MAX_IP_PACKET};
use superpacket_core::{split, GsoKind, VirtioNetHdr, VNET_HDR_LEN};
use tokio::sync::watch;

use crate::error::{is_out_of_buffers, ErrorKind, IoError, OUT_OF_BUFFERS_BACKOFF, OUT_OF_BUFFERS_RETRIES};

/// Smallest buffer [`TunQueue::read_frame`] accepts: a header and the largest IP packet.
pub const MIN_READ_BUF: usize = VNET_HDR_LEN + MAX_IP_PACKET;

/// The header put before packets that need nothing from the kernel (GSO_NONE, checksum complete).
const PLAIN_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// GSO frames the kernel must refuse in a row (each time taking the frame's packets one by one) before
/// coalescing is switched off. One refusal may be that frame's doing (it is built from packets a peer
/// chose); several in a row while the same packets go through unsegmented are the kernel's policy.
pub const GSO_REFUSALS_BEFORE_OFF: u32 = 3;
/// Frames written with coalescing off before GSO writes are tried again. Counted in frames, not time, so
/// an idle device needs no timer and the policy is deterministic. A kernel that keeps refusing costs one
/// refused write and a split per this many frames (under 0.1 % more system calls); a passing refusal
/// costs coalescing for about a millisecond of traffic at line rate.
pub const GSO_PROBE_AFTER_FRAMES: u64 = 1024;

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
    /// GSO frames split in userspace and written packet by packet (the kernel refused the frame, or GSO
    /// writes were off).
    tx_fallbacks,
    /// GSO frames the kernel refused whose packets then went through one by one.
    tx_gso_refusals,
    /// Times coalescing was switched off after [`GSO_REFUSALS_BEFORE_OFF`] refusals in a row.
    tx_gso_disabled,
    /// Times GSO writes were tried again after [`GSO_PROBE_AFTER_FRAMES`] frames.
    tx_gso_reenabled,
    /// Packets not written, for any reason (the sum of the `tx_drops_*` counters).
    tx_drops,
    /// Packets dropped before writing: not a well-formed IPv4/IPv6 packet, or a frame that does not parse.
    tx_drops_invalid,
    /// Packets the kernel refused (EINVAL, EMSGSIZE, or out of buffers after retries).
    tx_drops_refused,
}

fn bump(counter: &AtomicU64, by: usize) {
    counter.fetch_add(by as u64, Ordering::Relaxed);
}

/// State the queues of one device share.
struct DeviceState {
    offloads: Offloads,
    /// Whether the kernel took GSO frames at the start-up probe. If not, GSO writes stay off for good.
    gso_capable: bool,
    /// Whether GSO frames may be written as they are. While off, GSO frames are split in userspace and
    /// nothing is coalesced.
    gso_writes: AtomicBool,
    /// GSO frames refused in a row (see [`GSO_REFUSALS_BEFORE_OFF`]).
    gso_refusals_in_row: AtomicU32,
    /// Frames left to write with GSO writes off before they are tried again.
    frames_until_probe: AtomicU64,
}

impl DeviceState {
    fn new(offloads: Offloads, gso_capable: bool) -> DeviceState {
        DeviceState {
            offloads,
            gso_capable,
            gso_writes: AtomicBool::new(gso_capable),
            gso_refusals_in_row: AtomicU32::new(0),
            frames_until_probe: AtomicU64::new(0),
        }
    }

    fn gso_writes(&self) -> bool {
        self.gso_writes.load(Ordering::Relaxed)
    }

    /// The kernel took a GSO frame.
    fn gso_accepted(&self) {
        if self.gso_refusals_in_row.load(Ordering::Relaxed) != 0 {
            self.gso_refusals_in_row.store(0, Ordering::Relaxed);
        }
    }

    /// The kernel refused a GSO frame whose packets it then took one by one. Returns true if this switched
    /// GSO writes off.
    fn gso_refused(&self) -> bool {
        let in_row = self.gso_refusals_in_row.fetch_add(1, Ordering::Relaxed) + 1;
        if in_row < GSO_REFUSALS_BEFORE_OFF || !self.gso_writes.swap(false, Ordering::Relaxed) {
            return false;
        }
        self.frames_until_probe.store(GSO_PROBE_AFTER_FRAMES, Ordering::Relaxed);
        true
    }

    /// A frame was written. Returns true if this turned GSO writes back on for a probe: the next GSO frame
    /// is tried, and one more refusal switches them off again.
    fn frame_written(&self) -> bool {
        if !self.gso_capable || self.gso_writes() {
            return false;
        }
        let left = self.frames_until_probe.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if left != Ok(1) {
            return false;
        }
        self.gso_refusals_in_row.store(GSO_REFUSALS_BEFORE_OFF - 1, Ordering::Relaxed);
        !self.gso_writes.swap(true, Ordering::Relaxed)
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
        let device = Arc::new(DeviceState::new(opened.offloads, opened.gso_writes));
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

    /// Whether GSO frames are written as they are and packets coalesced now (false when the start-up probe
    /// saw GSO writes refused, and for a while after [`GSO_REFUSALS_BEFORE_OFF`] refusals in a row; see
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
        self.read_frame_planned(buf).await.map(|(n, _)| n)
    }

    /// [`read_frame`](Self::read_frame), with how the frame splits ([`split::plan`], or why it does not):
    /// the frame is parsed once, for the counters and for whoever segments it.
    pub async fn read_frame_planned(&self, buf: &mut [u8]) -> Result<(usize, Planned), IoError> {
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
        self.try_read_frame_planned(buf).map(|r| r.map(|(n, _)| n))
    }

    /// [`try_read_frame`](Self::try_read_frame) with the frame's plan, as
    /// [`read_frame_planned`](Self::read_frame_planned).
    pub fn try_read_frame_planned(&self, buf: &mut [u8]) -> Result<Option<(usize, Planned)>, IoError> {
        check_read_buf(buf)?;
        self.try_read_on(&*self.io()?, buf)
    }

    /// Waits for a frame, then reads whatever else is ready without waiting, up to `max` frames in all,
    /// each into `buf` in turn: `each` gets every frame with its plan before the next is read. Returns
    /// how many frames were read. One look-up of the descriptor serves the whole batch.
    ///
    /// Only the wait for the first frame fails: a read that fails after it (or a close) ends the batch,
    /// so that the frames already handed over are dealt with, and the next call reports the error if it
    /// lasts. A failed read takes no frame.
    pub async fn read_frames(
        &self,
        buf: &mut [u8],
        max: usize,
        mut each: impl FnMut(&[u8], Planned),
    ) -> Result<usize, IoError> {
        let (n, plan) = self.read_frame_planned(buf).await?;
        each(&buf[..n], plan);
        let Ok(io) = self.io() else { return Ok(1) };
        let mut frames = 1;
        while frames < max {
            let Ok(Some((n, plan))) = self.try_read_on(&io, buf) else { break };
            each(&buf[..n], plan);
            frames += 1;
        }
        Ok(frames)
    }

    fn try_read_on(&self, io: &sys::RawQueue, buf: &mut [u8]) -> Result<Option<(usize, Planned)>, IoError> {
        let target = if self.device.offloads.vnet_hdr { &mut *buf } else { &mut buf[VNET_HDR_LEN..] };
        match io.try_read(target) {
            Ok(n) => Ok(Some(self.finish_read(buf, n))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(IoError::from_os("read", &e)),
        }
    }

    /// Adds the synthesised header if the device has none, plans the frame, counts it and returns its
    /// length and plan.
    fn finish_read(&self, buf: &mut [u8], n: usize) -> (usize, Planned) {
        let len = if self.device.offloads.vnet_hdr {
            n
        } else {
            buf[..VNET_HDR_LEN].copy_from_slice(&PLAIN_HDR);
            n + VNET_HDR_LEN
        };
        let plan = split::plan(&buf[..len]);
        let c = &self.counters;
        bump(&c.rx_frames, 1);
        bump(&c.rx_bytes, len.saturating_sub(VNET_HDR_LEN));
        bump(&c.rx_segments, plan.as_ref().map_or(1, |p| p.count));
        bump(&c.rx_syscalls, 1);
        (len, plan)
    }

    /// Writes one frame (`virtio_net_hdr` + IP packet).
    ///
    /// With IFF_VNET_HDR the frame goes to the kernel as it is. If the kernel refuses a GSO frame, that
    /// frame is split in userspace and its packets written one by one (`tx_fallbacks`): nothing is lost.
    /// Coalescing is switched off only after [`GSO_REFUSALS_BEFORE_OFF`] such refusals in a row, and tried
    /// again after [`GSO_PROBE_AFTER_FRAMES`] frames. Without IFF_VNET_HDR a GSO frame, or one whose
    /// checksum is still partial, is split; any other frame is written without its header.
    ///
    /// A malformed frame fails with [`ErrorKind::InvalidPacket`]; so does a frame the kernel refuses
    /// (EINVAL, with the errno kept). Both count in the drop counters.
    pub async fn write_frame(&self, frame: &[u8]) -> Result<(), IoError> {
        let io = self.io()?;
        let mut report = WriteReport::default();
        match self.until_closed(self.write_frame_on(&io, frame, None, &mut report)).await? {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    /// Checks and coalesces IP packets into as few frames as the device allows, and writes every frame.
    ///
    /// A packet that is not a well-formed IPv4/IPv6 packet (version, header length, total or payload
    /// length within the bytes) is dropped before coalescing; bytes after the length its header declares
    /// (padding) are cut off, as the kernel would. A frame the kernel refuses is skipped and counted, and
    /// the rest of the batch is written. TCP is merged only if the kernel granted TSO, UDP only if it
    /// granted USO, and neither while GSO writes are off. Without IFF_VNET_HDR every packet is written as
    /// it is. Each flow keeps its order.
    ///
    /// Fails only when the queue is closed or broken (EBADFD, EIO from a device that is down ...); the
    /// report says what became of every packet otherwise.
    pub async fn write_packets<P: AsRef<[u8]>>(
        &self,
        packets: &[P],
        scratch: &mut WriteScratch,
    ) -> Result<WriteReport, IoError> {
        let io = self.io()?;
        let mut report = WriteReport::default();
        let exact = packets.iter().all(|p| declared_ip_len(p.as_ref()) == Some(p.as_ref().len()));
        if exact {
            self.until_closed(self.write_checked(&io, packets, scratch, &mut report)).await?;
        } else {
            let checked: Vec<&[u8]> =
                packets.iter().filter_map(|p| declared_ip_len(p.as_ref()).map(|n| &p.as_ref()[..n])).collect();
            self.invalid(&mut report, packets.len() - checked.len());
            self.until_closed(self.write_checked(&io, &checked, scratch, &mut report)).await?;
        }
        Ok(report)
    }

    /// Closes the queue: pending and later operations end with [`ErrorKind::Closed`], and the file
    /// descriptor closes as soon as no operation holds it. Closing twice is harmless.
    pub fn close(&self) {
        let taken = self.io.write().unwrap_or_else(PoisonError::into_inner).take();
        self.closed.send_replace(true);
        drop(taken);
    }

    /// A second descriptor of the queue (close-on-exec) for an event loop other than tokio's to watch for
    /// readiness (Linux). It keeps the queue attached until it is closed too.
    #[cfg(target_os = "linux")]
    pub fn duplicate_fd(&self) -> Result<std::os::fd::OwnedFd, IoError> {
        self.io()?.duplicate().map_err(|e| IoError::from_os("dup", &e))
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

    /// Writes packets that passed [`declared_ip_len`], coalesced where the device allows.
    async fn write_checked<P: AsRef<[u8]>>(
        &self,
        io: &sys::RawQueue,
        packets: &[P],
        scratch: &mut WriteScratch,
        report: &mut WriteReport,
    ) -> Result<(), IoError> {
        if !self.device.offloads.vnet_hdr {
            for p in packets {
                let p = p.as_ref();
                self.write_counted(io, p, &[IoSlice::new(p)], 1, report).await?;
            }
            return Ok(());
        }
        scratch.coalesce(self.device.coalesce_options(), packets);
        for (frame, segments) in scratch.frames.iter_counted() {
            match self.write_frame_on(io, frame, Some(segments), report).await {
                // Packets the coalescer passed through but that do not split were counted as invalid:
                // write the rest.
                Ok(_) => {}
                Err(e) if e.kind == ErrorKind::InvalidPacket => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes one frame, counting what was written and refused in `report`. Returns the kernel's refusal
    /// if any packet of the frame was refused; fails if the frame is malformed (counted as invalid) or
    /// the queue is broken. `segments` is how many packets the frame stands for when the caller knows
    /// (the coalescer does), so that a written GSO frame is counted without parsing it again.
    async fn write_frame_on(
        &self,
        io: &sys::RawQueue,
        frame: &[u8],
        segments: Option<usize>,
        report: &mut WriteReport,
    ) -> Result<Option<IoError>, IoError> {
        let result = self.write_frame_inner(io, frame, segments, report).await;
        if matches!(&result, Err(e) if e.kind == ErrorKind::InvalidPacket) {
            self.invalid(report, segments.unwrap_or(1));
        }
        result
    }

    async fn write_frame_inner(
        &self,
        io: &sys::RawQueue,
        frame: &[u8],
        segments: Option<usize>,
        report: &mut WriteReport,
    ) -> Result<Option<IoError>, IoError> {
        let hdr = VirtioNetHdr::decode(frame)?;
        let packet = &frame[VNET_HDR_LEN..];
        let gso = hdr.kind()? != GsoKind::None;
        if !self.device.offloads.vnet_hdr {
            if !gso && !hdr.needs_csum() {
                return self.write_counted(io, packet, &[IoSlice::new(packet)], 1, report).await;
            }
            return self.write_each(io, &split::split_to_vec(frame)?, &[], report).await;
        }
        if !gso {
            return self.write_counted(io, packet, &[IoSlice::new(frame)], 1, report).await;
        }
        let tried_gso = self.device.gso_writes();
        if tried_gso {
            match self.write_syscall(io, &[IoSlice::new(frame)]).await {
                Ok(()) => {
                    self.device.gso_accepted();
                    self.written(packet.len(), segments.unwrap_or_else(|| segment_count(frame)), report);
                    return Ok(None);
                }
                // Refused: the frame's packets go one by one below.
                Err(e) if refuses_frame(&e) => {}
                Err(e) => return Err(IoError::from_os("write", &e)),
            }
        }
        // Split before blaming GSO: a frame that does not split was malformed, not refused.
        let packets = split::split_to_vec(frame)?;
        bump(&self.counters.tx_fallbacks, 1);
        let written_before = report.written_packets;
        let refusal = self.write_each(io, &packets, &PLAIN_HDR, report).await?;
        if tried_gso && report.written_packets > written_before {
            bump(&self.counters.tx_gso_refusals, 1);
            if self.device.gso_refused() {
                bump(&self.counters.tx_gso_disabled, 1);
            }
        }
        Ok(refusal)
    }

    /// Writes `packets` one system call each, after `header` (empty for none). Returns the last refusal,
    /// if any packet was refused.
    async fn write_each(
        &self,
        io: &sys::RawQueue,
        packets: &[Vec<u8>],
        header: &[u8],
        report: &mut WriteReport,
    ) -> Result<Option<IoError>, IoError> {
        let mut last = None;
        for p in packets {
            let refusal = if header.is_empty() {
                self.write_counted(io, p, &[IoSlice::new(p)], 1, report).await?
            } else {
                self.write_counted(io, p, &[IoSlice::new(header), IoSlice::new(p)], 1, report).await?
            };
            last = refusal.or(last);
        }
        Ok(last)
    }

    /// One write of `parts`, which carry the IP packet `packet` standing for `segments` packets, counted.
    /// A refusal of the frame ([`refuses_frame`]) is counted and returned as `Ok(Some(..))` with
    /// [`ErrorKind::InvalidPacket`] (the errno kept); any other error means the queue itself failed.
    async fn write_counted(
        &self,
        io: &sys::RawQueue,
        packet: &[u8],
        parts: &[IoSlice<'_>],
        segments: usize,
        report: &mut WriteReport,
    ) -> Result<Option<IoError>, IoError> {
        match self.write_syscall(io, parts).await {
            Ok(()) => {
                self.written(packet.len(), segments, report);
                Ok(None)
            }
            Err(e) if refuses_frame(&e) => {
                report.dropped_refused += segments;
                bump(&self.counters.tx_drops_refused, segments);
                bump(&self.counters.tx_drops, segments);
                Ok(Some(IoError { kind: ErrorKind::InvalidPacket, ..IoError::from_os("write", &e) }))
            }
            Err(e) => Err(IoError::from_os("write", &e)),
        }
    }

    /// One write system call of `parts`; out-of-buffer errors are retried a few times after a pause.
    async fn write_syscall(&self, io: &sys::RawQueue, parts: &[IoSlice<'_>]) -> io::Result<()> {
        let mut retries = 0;
        loop {
            bump(&self.counters.tx_syscalls, 1);
            match io.write(parts).await {
                Err(e) if is_out_of_buffers(&e) && retries < OUT_OF_BUFFERS_RETRIES => {
                    retries += 1;
                    tokio::time::sleep(OUT_OF_BUFFERS_BACKOFF).await;
                }
                r => return r.map(drop),
            }
        }
    }

    /// Counts a frame written that carried `bytes` IP bytes standing for `segments` packets.
    fn written(&self, bytes: usize, segments: usize, report: &mut WriteReport) {
        let c = &self.counters;
        bump(&c.tx_frames, 1);
        bump(&c.tx_packets, segments);
        bump(&c.tx_bytes, bytes);
        report.written_packets += segments;
        if self.device.frame_written() {
            bump(&c.tx_gso_reenabled, 1);
        }
    }

    /// Counts `n` packets dropped as invalid.
    fn invalid(&self, report: &mut WriteReport, n: usize) {
        report.dropped_invalid += n;
        bump(&self.counters.tx_drops_invalid, n);
        bump(&self.counters.tx_drops, n);
    }
}

/// What [`TunQueue::write_packets`] did with a batch: every packet is in exactly one of the counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// IP packets written (a GSO frame counts the packets it stands for).
    pub written_packets: usize,
    /// Packets dropped before writing: not a well-formed IPv4/IPv6 packet.
    pub dropped_invalid: usize,
    /// Packets the kernel refused (skipped; the rest of the batch went on).
    pub dropped_refused: usize,
}

impl WriteReport {
    /// Packets not written, for any reason.
    pub fn dropped(&self) -> usize {
        self.dropped_invalid + self.dropped_refused
    }
}

/// Whether a failed TUN write refused this frame only, so the queue can go on with the next one: EINVAL
/// (not an IP packet, a GSO frame the kernel will not take), EMSGSIZE (over the device's limits), and
/// out of buffers after the retries. EBADFD, EIO (device down) and the rest mean the queue failed.
fn refuses_frame(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::EMSGSIZE)) || is_out_of_buffers(err)
}

/// The length the IP header of `p` declares, if `p` is a well-formed IPv4 or IPv6 packet that holds it:
/// version 4 or 6, a whole header, an IPv4 header length of at least 20 within the total length, and a
/// total (IPv4) or payload (IPv6) length within the bytes. IPv6 extension headers, fragments and options
/// are left to the kernel, which drops what it does not like after the write without refusing it.
fn declared_ip_len(p: &[u8]) -> Option<usize> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            let header = usize::from(p[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            (header >= 20 && header <= total && total <= p.len()).then_some(total)
        }
        6 if p.len() >= packet::IPV6_HDR_LEN => {
            let total = packet::IPV6_HDR_LEN + usize::from(u16::from_be_bytes([p[4], p[5]]));
            (total <= p.len()).then_some(total)
        }
        _ => None,
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

/// How a frame read from a queue splits ([`split::plan`]), or why it does not.
pub type Planned = Result<split::SplitPlan, superpacket_core::PacketError>;

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

#[cfg(test)]
mod tests {
    use super::declared_ip_len;

    /// `len` bytes starting with an IPv4 header of `ihl` words that declares `total` bytes.
    fn v4(total: u16, ihl: u8, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x40 | ihl;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p
    }

    /// `len` bytes starting with an IPv6 header that declares a `payload`-byte payload.
    fn v6(payload: u16, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&payload.to_be_bytes());
        p
    }

    #[test]
    fn only_packets_that_hold_what_their_header_declares_pass() {
        let cases: [(&str, Vec<u8>, Option<usize>); 12] = [
            ("ipv4 exact", v4(28, 5, 28), Some(28)),
            ("ipv4 with options", v4(32, 6, 32), Some(32)),
            ("ipv4 padded: cut to the total length", v4(28, 5, 44), Some(28)),
            ("ipv4 total length over the bytes", v4(100, 5, 28), None),
            ("ipv4 header length below 20", v4(28, 4, 28), None),
            ("ipv4 total length below the header", v4(20, 6, 28), None),
            ("ipv4 shorter than a header", v4(19, 5, 19), None),
            ("ipv6 exact", v6(8, 48), Some(48)),
            ("ipv6 padded: cut to the payload length", v6(8, 64), Some(48)),
            ("ipv6 payload length over the bytes", v6(100, 48), None),
            ("ipv6 shorter than a header", v6(0, 39), None),
            ("not IP (a TLS record)", vec![0x17, 0x03, 0x03, 0x00, 0x05], None),
        ];
        for (name, packet, want) in cases {
            assert_eq!(declared_ip_len(&packet), want, "{name}");
        }
        assert_eq!(declared_ip_len(&[]), None, "empty");
    }
}
