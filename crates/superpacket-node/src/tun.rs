//! `NativeTun` and `NativePacketWriter`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use napi::bindgen_prelude::{Buffer, Uint8ArraySlice};
use napi_derive::napi;
use superpacket_core::framer::{Control, DropCounters, Framer};
use superpacket_core::{split, VNET_HDR_LEN};
use superpacket_io::datapath::{open_batch, SourceFilter};
use superpacket_io::tun::{OffloadMode, Planned, Tun, TunOptions, TunQueue, TunStats, WriteScratch};
use superpacket_io::udp::{words, UdpSocket};
use tokio::sync::Mutex;

use crate::abort::AbortFlag;
use crate::error::{check_room, invalid_argument, io_error};
use crate::framer::{send_control, NativeFramer};
use crate::owned::Copied;
use crate::tunnel::drop_reasons;
use crate::udp::{NativePeer, NativeUdp};
use napi::Result;

/// Room for one frame read.
const FRAME_ROOM: usize = VNET_HDR_LEN + 65_535;
/// A read batch buffer holds up to this many largest frames.
const BATCH_FRAMES_ROOM: usize = 4;

/// Options of `NativeTun.open`.
#[napi(object)]
pub struct TunOpenOptions {
    pub name: Option<String>,
    pub mtu: Option<u32>,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    /// `'auto'`, `'on'` or `'off'`.
    pub offload: String,
    pub queues: u32,
}

/// What the kernel granted.
#[napi(object)]
pub struct JsOffloads {
    pub vnet_hdr: bool,
    pub csum: bool,
    pub tso4: bool,
    pub tso6: bool,
    pub uso4: bool,
    pub uso6: bool,
}

/// Name, MTU, queues and offloads.
#[napi(object)]
pub struct TunInfo {
    pub name: String,
    pub mtu: u32,
    pub queues: u32,
    pub offloads: JsOffloads,
}

/// Frames back to back, with each frame's length and segment count.
#[napi(object)]
pub struct ReadBatch {
    pub data: Buffer,
    pub lengths: Vec<u32>,
    pub segments: Vec<u32>,
}

/// TUN counters.
#[napi(object)]
pub struct JsTunStats {
    pub rx_frames: f64,
    pub rx_bytes: f64,
    pub rx_segments: f64,
    pub rx_syscalls: f64,
    pub tx_frames: f64,
    pub tx_packets: f64,
    pub tx_bytes: f64,
    pub tx_syscalls: f64,
    pub tx_fallbacks: f64,
    pub tx_gso_refusals: f64,
    pub tx_gso_disabled: f64,
    pub tx_gso_reenabled: f64,
    pub tx_drops: f64,
    pub tx_drops_invalid: f64,
    pub tx_drops_refused: f64,
    pub coalescing: bool,
}

/// Converts TUN counters for JS.
pub fn tun_stats(s: TunStats, coalescing: bool) -> JsTunStats {
    JsTunStats {
        rx_frames: s.rx_frames as f64,
        rx_bytes: s.rx_bytes as f64,
        rx_segments: s.rx_segments as f64,
        rx_syscalls: s.rx_syscalls as f64,
        tx_frames: s.tx_frames as f64,
        tx_packets: s.tx_packets as f64,
        tx_bytes: s.tx_bytes as f64,
        tx_syscalls: s.tx_syscalls as f64,
        tx_fallbacks: s.tx_fallbacks as f64,
        tx_gso_refusals: s.tx_gso_refusals as f64,
        tx_gso_disabled: s.tx_gso_disabled as f64,
        tx_gso_reenabled: s.tx_gso_reenabled as f64,
        tx_drops: s.tx_drops as f64,
        tx_drops_invalid: s.tx_drops_invalid as f64,
        tx_drops_refused: s.tx_drops_refused as f64,
        coalescing,
    }
}

fn parse_cidr<A: std::str::FromStr>(s: &str, max_prefix: u8) -> Result<(A, u8)> {
    let (addr, prefix) = s.split_once('/').ok_or_else(|| invalid_argument(format!("'{s}' is not address/prefix")))?;
    let addr = addr.parse().map_err(|_| invalid_argument(format!("'{addr}' is not an address")))?;
    let prefix: u8 = prefix.parse().map_err(|_| invalid_argument(format!("'{prefix}' is not a prefix length")))?;
    if prefix > max_prefix {
        return Err(invalid_argument(format!("prefix length {prefix} is over {max_prefix}")));
    }
    Ok((addr, prefix))
}

/// Frame lengths and segment counts of a read into a caller's buffer (the frames are back to back at its
/// start).
#[napi(object)]
pub struct ReadInto {
    pub lengths: Vec<u32>,
    pub segments: Vec<u32>,
}

/// After a first frame of `first` bytes at the start of `buf` (with its plan when the read made one),
/// reads whatever else is ready (up to `max_frames`, as long as a largest frame still fits) and returns
/// the frames' lengths and segment counts. Each frame is parsed once, by the read that counts it. A read
/// that fails ends the batch (the frames before it are returned; a failed read takes no frame, and the
/// next read reports the error if it lasts), so no frame already read is lost to an error.
fn drain(q: &TunQueue, buf: &mut [u8], first: usize, first_plan: Option<Planned>, max_frames: u32) -> ReadInto {
    let max = (max_frames as usize).max(1);
    let plan = first_plan.unwrap_or_else(|| split::plan(&buf[..first]));
    let mut lengths = vec![first as u32];
    let mut segments = vec![segment_count(&plan)];
    let mut used = first;
    while lengths.len() < max && buf.len() - used >= FRAME_ROOM {
        let Ok(Some((n, plan))) = q.try_read_frame_planned(&mut buf[used..]) else { break };
        lengths.push(n as u32);
        segments.push(segment_count(&plan));
        used += n;
    }
    ReadInto { lengths, segments }
}

/// How many wire packets a planned frame stands for; 1 for one that does not split.
fn segment_count(plan: &Planned) -> u32 {
    plan.as_ref().map_or(1, |p| p.count as u32)
}

/// [`drain`] in the reused read buffer, then the frames copied out into one buffer sized to them: no
/// 256 KiB is allocated or zeroed per read.
fn drain_copy(q: &TunQueue, buf: &mut [u8], first: (usize, Option<Planned>), max_frames: u32) -> Result<ReadBatch> {
    let r = drain(q, buf, first.0, first.1, max_frames);
    let used: usize = r.lengths.iter().map(|&l| l as usize).sum();
    Ok(ReadBatch { data: buf[..used].to_vec().into(), lengths: r.lengths, segments: r.segments })
}

/// One queue's reused read buffer, room for [`BATCH_FRAMES_ROOM`] largest frames.
struct ReadBuf {
    bytes: Box<[u8]>,
    /// Length of a frame `readStaged` left at the start of `bytes` for the next read to take (0: none).
    staged: usize,
}

impl ReadBuf {
    fn new() -> Self {
        ReadBuf { bytes: vec![0u8; FRAME_ROOM * BATCH_FRAMES_ROOM].into_boxed_slice(), staged: 0 }
    }

    /// The staged frame's length, which the caller now owns, or 0.
    fn take_staged(&mut self) -> usize {
        std::mem::take(&mut self.staged)
    }
}

/// A TUN device.
#[napi]
pub struct NativeTun {
    tun: Arc<Tun>,
    scratch: Mutex<WriteScratch>,
    read_bufs: Vec<Mutex<ReadBuf>>,
}

impl NativeTun {
    pub fn tun(&self) -> &Arc<Tun> {
        &self.tun
    }

    fn queue(&self, i: u32) -> Result<Arc<TunQueue>> {
        self.tun.queues().get(i as usize).cloned().ok_or_else(|| invalid_argument(format!("no queue {i}")))
    }
}

#[napi]
impl NativeTun {
    /// Opens the device.
    #[napi]
    pub async fn open(options: TunOpenOptions) -> Result<NativeTun> {
        let offload = match options.offload.as_str() {
            "auto" => OffloadMode::Auto,
            "on" => OffloadMode::On,
            "off" => OffloadMode::Off,
            o => return Err(invalid_argument(format!("offload must be auto, on or off, not '{o}'"))),
        };
        let mtu = match options.mtu {
            Some(m) => Some(u16::try_from(m).map_err(|_| invalid_argument("mtu is over 65535"))?),
            None => None,
        };
        let opts = TunOptions {
            name: options.name,
            mtu,
            ipv4: options.ipv4.as_deref().map(|s| parse_cidr::<Ipv4Addr>(s, 32)).transpose()?,
            ipv6: options.ipv6.as_deref().map(|s| parse_cidr::<Ipv6Addr>(s, 128)).transpose()?,
            offload,
            queues: options.queues as usize,
        };
        let tun = Tun::open(&opts).map_err(io_error)?;
        let read_bufs = tun.queues().iter().map(|_| Mutex::new(ReadBuf::new())).collect();
        Ok(NativeTun { tun: Arc::new(tun), scratch: Mutex::new(WriteScratch::new()), read_bufs })
    }

    /// Name, MTU, queue count and offloads.
    #[napi]
    pub fn info(&self) -> TunInfo {
        let o = self.tun.offloads();
        TunInfo {
            name: self.tun.name().to_string(),
            mtu: u32::from(self.tun.mtu()),
            queues: self.tun.queues().len() as u32,
            offloads: JsOffloads {
                vnet_hdr: o.vnet_hdr,
                csum: o.csum,
                tso4: o.tso4,
                tso6: o.tso6,
                uso4: o.uso4,
                uso6: o.uso6,
            },
        }
    }

    /// Waits for one frame, then takes whatever else is ready, up to `max_frames`.
    #[napi]
    pub async fn read(&self, queue: u32, max_frames: u32) -> Result<ReadBatch> {
        let q = self.queue(queue)?;
        let mut buf = self.read_bufs[queue as usize].lock().await;
        let first = match buf.take_staged() {
            0 => q.read_frame_planned(&mut buf.bytes).await.map(|(n, plan)| (n, Some(plan))).map_err(io_error)?,
            staged => (staged, None),
        };
        drain_copy(&q, &mut buf.bytes, first, max_frames)
    }

    /// A readiness watch of queue `queue` on this thread's event loop (see `watch.rs`): `callback` is
    /// called on each wake-up it was armed for (`watchArm`). Throws where there is none (not Linux).
    #[napi(ts_return_type = "object")]
    pub fn watch<'e>(
        &self,
        env: &'e napi::Env,
        queue: u32,
        #[napi(ts_arg_type = "(status: number) => void")] callback: napi::Unknown<'e>,
    ) -> Result<napi::Unknown<'e>> {
        let q = self.queue(queue)?;
        #[cfg(target_os = "linux")]
        {
            use napi::JsValue;
            let fd = q.duplicate_fd().map_err(io_error)?;
            // SAFETY: the env and the argument of this call, on the JS thread.
            unsafe {
                let ext = crate::watch::open(env.raw(), fd, callback.raw())?;
                Ok(napi::Unknown::from_raw_unchecked(env.raw(), ext))
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (q, env, callback);
            Err(invalid_argument("readiness watches of a TUN queue exist on Linux only"))
        }
    }

    /// Waits for a frame and keeps it in the queue's own buffer for the next `tryReadInto` (or read) to
    /// take. An asynchronous read never holds a JS buffer: the runtime thread would write into memory that
    /// JS may reuse or detach meanwhile.
    #[napi]
    pub async fn read_staged(&self, queue: u32) -> Result<()> {
        let q = self.queue(queue)?;
        let mut buf = self.read_bufs[queue as usize].lock().await;
        if buf.staged == 0 {
            buf.staged = q.read_frame(&mut buf.bytes).await.map_err(io_error)?;
        }
        Ok(())
    }

    /// Reads straight into `buf` on the JS thread, without waiting (no copy): the frames go back to back
    /// at its start, a frame `readStaged` kept first. `null` when no frame is ready (then `readStaged`).
    /// `buf` must hold at least one largest frame (65,545 bytes); more room lets more ready frames in.
    #[napi]
    pub fn try_read_into(&self, queue: u32, mut buf: Uint8ArraySlice, max_frames: u32) -> Result<Option<ReadInto>> {
        let q = self.queue(queue)?;
        // SAFETY: a synchronous call on the JS thread, which cannot run JS (and so cannot read, write or
        // detach the buffer) until it returns; nothing of the buffer is kept.
        let buf: &mut [u8] = unsafe { buf.as_mut() };
        check_room(buf, FRAME_ROOM, "a read buffer (one largest frame)")?;
        // A `readStaged` in flight owns the queue's buffer; the caller then waits for that one.
        let Ok(mut own) = self.read_bufs[queue as usize].try_lock() else { return Ok(None) };
        let first = match own.take_staged() {
            0 => q.try_read_frame_planned(buf).map_err(io_error)?.map(|(n, plan)| (n, Some(plan))),
            staged => {
                buf[..staged].copy_from_slice(&own.bytes[..staged]);
                Some((staged, None))
            }
        };
        match first {
            Some((first, plan)) => Ok(Some(drain(&q, buf, first, plan, max_frames))),
            None => Ok(None),
        }
    }

    /// Writes frames (virtio_net_hdr + IP packet), copied at the call. An abort stops it before the next
    /// frame (`sent`: the frames written).
    #[napi]
    pub async fn write_frames(
        &self,
        queue: u32,
        #[napi(ts_arg_type = "Uint8Array[]")] frames: Vec<Copied<u8>>,
        #[napi(ts_arg_type = "NativeAbort | undefined | null")] abort: Option<AbortFlag>,
    ) -> Result<()> {
        let q = self.queue(queue)?;
        for (sent, f) in frames.iter().enumerate() {
            AbortFlag::check(&abort, sent)?;
            q.write_frame(f).await.map_err(io_error)?;
        }
        Ok(())
    }

    /// Coalesces IP packets (copied at the call) and writes them. Returns how many packets were dropped
    /// (not IPv4/IPv6, or refused by the kernel); the rest were written. An abort takes effect only before
    /// the write starts (TUN writes do not wait).
    #[napi]
    pub async fn write_packets(
        &self,
        queue: u32,
        #[napi(ts_arg_type = "Uint8Array[]")] packets: Vec<Copied<u8>>,
        #[napi(ts_arg_type = "NativeAbort | undefined | null")] abort: Option<AbortFlag>,
    ) -> Result<u32> {
        let q = self.queue(queue)?;
        AbortFlag::check(&abort, 0)?;
        let mut scratch = self.scratch.lock().await;
        Ok(q.write_packets(&packets, &mut scratch).await.map_err(io_error)?.dropped() as u32)
    }

    /// Counters of all queues.
    #[napi]
    pub fn stats(&self) -> JsTunStats {
        tun_stats(self.tun.stats(), self.tun.coalescing_enabled())
    }

    /// Closes every queue.
    #[napi]
    pub async fn close(&self) -> Result<()> {
        self.tun.close();
        Ok(())
    }
}

/// Datagrams → framer open → coalesce → TUN write.
#[napi]
pub struct NativePacketWriter {
    queue: Arc<TunQueue>,
    framer: Arc<dyn Framer>,
    /// Sends the framer's replies (handshake responses, cookies).
    sock: Option<Arc<UdpSocket>>,
    filter: SourceFilter,
    drops: DropCounters,
    state: Mutex<PacketWriterState>,
}

struct PacketWriterState {
    write: WriteScratch,
    /// Where framers that cannot open in place put the packets.
    open: Vec<u8>,
    control: Control,
}

/// What one `write` did.
#[napi(object)]
pub struct PacketWriteReport {
    /// Packets written to the TUN.
    pub packets: u32,
    /// Datagrams dropped (by the framer, the source check or the TUN).
    pub dropped: u32,
    /// Control messages the framer consumed (handshakes, keepalives).
    pub consumed: u32,
    /// Replies sent (handshake responses, cookie replies).
    pub control_sent: u32,
}

#[napi]
impl NativePacketWriter {
    #[napi(constructor)]
    pub fn new(
        tun: &NativeTun,
        queue: u32,
        framer: &NativeFramer,
        udp: Option<&NativeUdp>,
        peer: Option<&NativePeer>,
    ) -> Result<Self> {
        let filter = match peer {
            Some(p) if !framer.framer().routes() => SourceFilter::Only(p.socket_addr()),
            _ => SourceFilter::Any,
        };
        if let Some(u) = udp {
            framer.ensure_timers(u.socket());
        }
        Ok(NativePacketWriter {
            queue: tun.queue(queue)?,
            framer: framer.framer().clone(),
            sock: udp.map(|u| u.socket().clone()),
            filter,
            drops: DropCounters::default(),
            state: Mutex::new(PacketWriterState {
                write: WriteScratch::new(),
                open: Vec::new(),
                control: Control::new(),
            }),
        })
    }

    /// Opens the datagrams of a receive (`data` as received, `messages` the per-message part of its
    /// metadata, as `UdpSocket.tryRecvInto` wrote it) and writes their packets.
    ///
    /// The arguments are copied at the call (the datagrams are opened in that copy), so the caller's
    /// buffer is free again as soon as this returns its promise. An abort takes effect only before the
    /// batch is opened (nothing of it is then written).
    #[napi]
    pub async fn write(
        &self,
        #[napi(ts_arg_type = "Uint8Array")] mut data: Copied<u8>,
        #[napi(ts_arg_type = "Uint32Array")] messages: Copied<u32>,
        #[napi(ts_arg_type = "NativeAbort | undefined | null")] abort: Option<AbortFlag>,
    ) -> Result<PacketWriteReport> {
        AbortFlag::check(&abort, 0)?;
        let msgs = words::messages(&messages, data.len())
            .ok_or_else(|| invalid_argument("the message metadata does not describe the buffer"))?;
        let total: usize = msgs.iter().map(|m| m.len).sum();
        let mut guard = self.state.lock().await;
        let st = &mut *guard;
        if st.open.len() < total {
            st.open.resize(total, 0);
        }
        let datagrams = words::datagrams(&mut data.0, &msgs);
        let mut packets = Vec::with_capacity(datagrams.len());
        let opened = open_batch(
            &*self.framer,
            self.filter,
            datagrams.into_iter(),
            &mut st.open,
            &mut packets,
            &mut st.control,
            &self.drops,
        );
        let mut report = PacketWriteReport {
            packets: 0,
            dropped: opened.dropped as u32,
            consumed: opened.consumed as u32,
            control_sent: 0,
        };
        if !packets.is_empty() {
            let written = self.queue.write_packets(&packets, &mut st.write).await.map_err(io_error)?;
            report.packets = written.written_packets as u32;
            report.dropped += written.dropped() as u32;
        }
        match &self.sock {
            Some(sock) => report.control_sent = send_control(sock, &mut st.control).await?,
            None => {
                // Nowhere to send replies: they are dropped, as a lost datagram would be.
                st.control.drain();
            }
        }
        Ok(report)
    }

    /// Drops by reason since the writer was made; reasons with no drop are left out.
    #[napi]
    pub fn drop_reasons(&self) -> std::collections::HashMap<String, f64> {
        drop_reasons(&self.drops.snapshot())
    }
}
