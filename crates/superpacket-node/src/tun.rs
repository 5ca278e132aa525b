//! `NativeTun` and `NativePacketWriter`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use napi::bindgen_prelude::{Buffer, Uint32Array, Uint8Array};
use napi_derive::napi;
use superpacket_core::framer::Framer;
use superpacket_core::{split, VNET_HDR_LEN};
use superpacket_io::datapath::open_datagrams;
use superpacket_io::tun::{OffloadMode, Tun, TunOptions, TunQueue, TunStats, WriteScratch};
use tokio::sync::Mutex;

use crate::error::{check_room, invalid_argument, io_error};
use crate::framer::{build, FramerSpec};
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
    pub tx_drops: f64,
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
        tx_drops: s.tx_drops as f64,
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

/// After a first frame of `first` bytes at the start of `buf`, reads whatever else is ready (up to
/// `max_frames`, as long as a largest frame still fits) and returns the frames' lengths and segment counts.
fn drain(q: &TunQueue, buf: &mut [u8], first: usize, max_frames: u32) -> Result<ReadInto> {
    let max = (max_frames as usize).max(1);
    let mut lengths = vec![first as u32];
    let mut used = first;
    while lengths.len() < max && buf.len() - used >= FRAME_ROOM {
        match q.try_read_frame(&mut buf[used..]).map_err(io_error)? {
            Some(n) => {
                lengths.push(n as u32);
                used += n;
            }
            None => break,
        }
    }
    let mut segments = Vec::with_capacity(lengths.len());
    let mut off = 0;
    for &len in &lengths {
        let frame = &buf[off..off + len as usize];
        segments.push(split::plan(frame).map_or(1, |p| p.count as u32));
        off += len as usize;
    }
    Ok(ReadInto { lengths, segments })
}

/// [`drain`] in the reused read buffer, then the frames copied out into one buffer sized to them: no
/// 256 KiB is allocated or zeroed per read.
fn drain_copy(q: &TunQueue, buf: &mut [u8], first: usize, max_frames: u32) -> Result<ReadBatch> {
    let r = drain(q, buf, first, max_frames)?;
    let used: usize = r.lengths.iter().map(|&l| l as usize).sum();
    Ok(ReadBatch { data: buf[..used].to_vec().into(), lengths: r.lengths, segments: r.segments })
}

/// A TUN device.
#[napi]
pub struct NativeTun {
    tun: Arc<Tun>,
    scratch: Mutex<WriteScratch>,
    /// One reusable read buffer per queue, room for [`BATCH_FRAMES_ROOM`] largest frames.
    read_bufs: Vec<Mutex<Box<[u8]>>>,
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
        let read_bufs = tun
            .queues()
            .iter()
            .map(|_| Mutex::new(vec![0u8; FRAME_ROOM * BATCH_FRAMES_ROOM].into_boxed_slice()))
            .collect();
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
        let first = q.read_frame(&mut buf[..]).await.map_err(io_error)?;
        drain_copy(&q, &mut buf, first, max_frames)
    }

    /// Like `read` without waiting, on the JS thread: `null` when no frame is ready (then `read`).
    #[napi]
    pub fn try_read(&self, queue: u32, max_frames: u32) -> Result<Option<ReadBatch>> {
        let q = self.queue(queue)?;
        // A `read` in flight owns the buffer; the caller then waits for that one.
        let Ok(mut buf) = self.read_bufs[queue as usize].try_lock() else { return Ok(None) };
        match q.try_read_frame(&mut buf[..]).map_err(io_error)? {
            Some(first) => drain_copy(&q, &mut buf, first, max_frames).map(Some),
            None => Ok(None),
        }
    }

    /// Like `read`, straight into `buf` (no copy): the frames are back to back at its start. `buf` must
    /// hold at least one largest frame (65,545 bytes); more room lets more ready frames in.
    #[napi]
    pub async fn read_into(&self, queue: u32, mut buf: Uint8Array, max_frames: u32) -> Result<ReadInto> {
        let q = self.queue(queue)?;
        check_room(&buf, FRAME_ROOM, "a read buffer (one largest frame)")?;
        // SAFETY: the JS caller (Tun's reader, one read at a time) hands the buffer over until this promise
        // settles and reads nothing of it meanwhile.
        let bytes: &mut [u8] = unsafe { buf.as_mut() };
        let first = q.read_frame(bytes).await.map_err(io_error)?;
        drain(&q, bytes, first, max_frames)
    }

    /// Like `readInto` without waiting, on the JS thread: `null` when no frame is ready.
    #[napi]
    pub fn try_read_into(&self, queue: u32, mut buf: Uint8Array, max_frames: u32) -> Result<Option<ReadInto>> {
        let q = self.queue(queue)?;
        check_room(&buf, FRAME_ROOM, "a read buffer (one largest frame)")?;
        // SAFETY: on the JS thread, which cannot touch the buffer during this call.
        let bytes: &mut [u8] = unsafe { buf.as_mut() };
        match q.try_read_frame(bytes).map_err(io_error)? {
            Some(first) => drain(&q, bytes, first, max_frames).map(Some),
            None => Ok(None),
        }
    }

    /// Writes frames (virtio_net_hdr + IP packet).
    #[napi]
    pub async fn write_frames(&self, queue: u32, frames: Vec<Uint8Array>) -> Result<()> {
        let q = self.queue(queue)?;
        for f in &frames {
            q.write_frame(f).await.map_err(io_error)?;
        }
        Ok(())
    }

    /// Coalesces IP packets and writes them. Returns how many packets were dropped (not IPv4/IPv6, or
    /// refused by the kernel); the rest were written.
    #[napi]
    pub async fn write_packets(&self, queue: u32, packets: Vec<Uint8Array>) -> Result<u32> {
        let q = self.queue(queue)?;
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
    scratch: Mutex<WriteScratch>,
}

#[napi]
impl NativePacketWriter {
    #[napi(constructor)]
    pub fn new(tun: &NativeTun, queue: u32, framer: FramerSpec) -> Result<Self> {
        Ok(NativePacketWriter {
            queue: tun.queue(queue)?,
            framer: build(&framer)?,
            scratch: Mutex::new(WriteScratch::new()),
        })
    }

    /// Opens the datagrams of `data` (back to back, `lengths` each) in place and writes their packets.
    /// Returns how many datagrams the framer dropped.
    #[napi]
    pub async fn write(&self, mut data: Uint8Array, lengths: Uint32Array) -> Result<u32> {
        let total: usize = lengths.iter().map(|&l| l as usize).sum();
        if total > data.len() {
            return Err(invalid_argument("datagram lengths exceed the buffer"));
        }
        // SAFETY: the JS caller hands over the batch buffer and does not touch it until this promise
        // settles (PacketWriter.write awaits it), so no other reference to these bytes is in use.
        let mut rest: &mut [u8] = unsafe { data.as_mut() };
        let mut datagrams = Vec::with_capacity(lengths.len());
        for &len in lengths.iter() {
            let (d, tail) = std::mem::take(&mut rest).split_at_mut(len as usize);
            datagrams.push(d);
            rest = tail;
        }
        let mut packets = Vec::with_capacity(datagrams.len());
        let opened = open_datagrams(&*self.framer, datagrams.into_iter(), &mut packets);
        if !packets.is_empty() {
            let mut scratch = self.scratch.lock().await;
            let written = self.queue.write_packets(&packets, &mut scratch).await.map_err(io_error)?;
            return Ok((opened.dropped + written.dropped()) as u32);
        }
        Ok(opened.dropped as u32)
    }
}
