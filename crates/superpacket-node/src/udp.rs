//! `NativeUdp` and `NativeSegmentWriter`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use napi::bindgen_prelude::{BigInt, Buffer, Uint32Array, Uint8Array};
use napi_derive::napi;
use superpacket_io::datapath::Outbound;
use superpacket_io::udp::{RecvBatch, UdpOptions, UdpSocket, UdpStats, RECV_BUFFER_SIZE};
use tokio::sync::Mutex;

use crate::error::{check_room, invalid_argument, io_error};
use crate::framer::{build, FramerSpec};
use napi::Result;

/// Messages per receive call.
const RECV_MESSAGES: usize = 32;
/// The most bytes one receive returns: a buffer for `recvInto` needs this much.
const RECV_ROOM: usize = RECV_MESSAGES * RECV_BUFFER_SIZE;

/// Parses an address and port from JS.
pub fn socket_addr(address: &str, port: u32) -> Result<SocketAddr> {
    let ip: IpAddr = address.parse().map_err(|_| invalid_argument(format!("'{address}' is not an IP address")))?;
    let port = u16::try_from(port).map_err(|_| invalid_argument(format!("port {port} is over 65535")))?;
    Ok(SocketAddr::new(ip, port))
}

/// Options of `NativeUdp.bind`.
#[napi(object)]
pub struct UdpBindOptions {
    pub address: String,
    pub port: u32,
    pub ipv6_only: Option<bool>,
    pub receive_buffer_size: Option<u32>,
    pub send_buffer_size: Option<u32>,
    pub gso: Option<bool>,
    pub gro: Option<bool>,
}

/// The bound address and what the socket can do.
#[napi(object)]
pub struct UdpInfo {
    pub address: String,
    pub port: u32,
    pub gso: bool,
    pub gro: bool,
    pub max_segments: u32,
    /// Bytes a buffer for `recvInto` needs.
    pub recv_room: u32,
}

/// One received message.
#[napi(object)]
pub struct ReceivedMessage {
    pub address: String,
    pub port: u32,
    pub count: u32,
    pub segment_size: u32,
}

/// Datagrams back to back with their lengths and the messages they came in.
#[napi(object)]
pub struct RecvResult {
    pub data: Buffer,
    pub lengths: Uint32Array,
    pub messages: Vec<ReceivedMessage>,
}

/// UDP counters.
#[napi(object)]
pub struct JsUdpStats {
    pub tx_datagrams: f64,
    pub tx_bytes: f64,
    pub tx_syscalls: f64,
    pub tx_gso_sends: f64,
    pub rx_datagrams: f64,
    pub rx_bytes: f64,
    pub rx_syscalls: f64,
    pub rx_gro_batches: f64,
    pub gso_fallbacks: f64,
}

/// Converts UDP counters for JS.
pub fn udp_stats(s: UdpStats) -> JsUdpStats {
    JsUdpStats {
        tx_datagrams: s.tx_datagrams as f64,
        tx_bytes: s.tx_bytes as f64,
        tx_syscalls: s.tx_syscalls as f64,
        tx_gso_sends: s.tx_gso_sends as f64,
        rx_datagrams: s.rx_datagrams as f64,
        rx_bytes: s.rx_bytes as f64,
        rx_syscalls: s.rx_syscalls as f64,
        rx_gro_batches: s.rx_gro_batches as f64,
        gso_fallbacks: s.gso_fallbacks as f64,
    }
}

/// Datagram lengths and messages of a receive whose datagrams went into a caller's buffer.
#[napi(object)]
pub struct RecvInto {
    pub lengths: Uint32Array,
    pub messages: Vec<ReceivedMessage>,
}

/// The datagram lengths and messages of a receive.
fn describe(batch: &RecvBatch) -> RecvInto {
    let mut lengths = Vec::new();
    let mut messages = Vec::with_capacity(batch.len());
    for (meta, msg) in batch.iter() {
        let stride = if meta.stride == 0 { msg.len().max(1) } else { meta.stride };
        let before = lengths.len();
        lengths.extend(msg.chunks(stride).map(|c| c.len() as u32));
        if msg.is_empty() {
            lengths.push(0);
        }
        messages.push(ReceivedMessage {
            address: meta.addr.ip().to_string(),
            port: u32::from(meta.addr.port()),
            count: (lengths.len() - before) as u32,
            segment_size: stride as u32,
        });
    }
    RecvInto { lengths: Uint32Array::new(lengths), messages }
}

/// Copies the datagrams of a receive back to back into `out`, which must hold them all.
fn collect_into(batch: &RecvBatch, out: &mut [u8]) -> Result<RecvInto> {
    let mut at = 0;
    for (_, msg) in batch.iter() {
        let dst = out.get_mut(at..at + msg.len()).ok_or_else(|| invalid_argument("receive buffer too small"))?;
        dst.copy_from_slice(msg);
        at += msg.len();
    }
    Ok(describe(batch))
}

/// Copies the datagrams of a receive into one buffer sized to them (the receive buffers are reused).
fn collect(batch: &RecvBatch) -> RecvResult {
    let total: usize = batch.metas().iter().map(|m| m.len).sum();
    let mut data = Vec::with_capacity(total);
    for (_, msg) in batch.iter() {
        data.extend_from_slice(msg);
    }
    let r = describe(batch);
    RecvResult { data: data.into(), lengths: r.lengths, messages: r.messages }
}

/// A UDP socket with GSO/GRO.
#[napi]
pub struct NativeUdp {
    sock: Arc<UdpSocket>,
    batch: Mutex<RecvBatch>,
}

impl NativeUdp {
    pub fn socket(&self) -> &Arc<UdpSocket> {
        &self.sock
    }
}

#[napi]
impl NativeUdp {
    /// Binds a socket.
    #[napi]
    pub async fn bind(options: UdpBindOptions) -> Result<NativeUdp> {
        let mut opts = UdpOptions::new(socket_addr(&options.address, options.port)?);
        if opts.local.is_ipv6() {
            opts.only_v6 = options.ipv6_only;
        }
        if let Some(n) = options.receive_buffer_size {
            opts.recv_buffer = n as usize;
        }
        if let Some(n) = options.send_buffer_size {
            opts.send_buffer = n as usize;
        }
        opts.gso = options.gso.unwrap_or(true);
        opts.gro = options.gro.unwrap_or(true);
        let sock = UdpSocket::bind(&opts).map_err(io_error)?;
        Ok(NativeUdp { sock: Arc::new(sock), batch: Mutex::new(RecvBatch::new(RECV_MESSAGES)) })
    }

    /// Bound address and capabilities.
    #[napi]
    pub fn info(&self) -> UdpInfo {
        let a = self.sock.local_addr();
        let c = self.sock.caps();
        UdpInfo {
            address: a.ip().to_string(),
            port: u32::from(a.port()),
            gso: c.gso,
            gro: c.gro,
            max_segments: c.max_segments as u32,
            recv_room: RECV_ROOM as u32,
        }
    }

    /// Receives at least one datagram; copies the batch into one buffer.
    #[napi]
    pub async fn recv(&self) -> Result<RecvResult> {
        let mut batch = self.batch.lock().await;
        self.sock.recv_batch(&mut batch).await.map_err(io_error)?;
        Ok(collect(&batch))
    }

    /// Like `recv` without waiting, on the JS thread: `null` when nothing is queued (then `recv`).
    #[napi]
    pub fn try_recv(&self) -> Result<Option<RecvResult>> {
        let Ok(mut batch) = self.batch.try_lock() else { return Ok(None) };
        match self.sock.try_recv_batch(&mut batch).map_err(io_error)? {
            0 => Ok(None),
            _ => Ok(Some(collect(&batch))),
        }
    }

    /// Like `recv`, into `buf` (`recvRoom` bytes at least; no allocation): the datagrams go back to back
    /// at its start.
    #[napi]
    pub async fn recv_into(&self, mut buf: Uint8Array) -> Result<RecvInto> {
        check_room(&buf, RECV_ROOM, "a receive buffer (the most one receive returns)")?;
        let mut batch = self.batch.lock().await;
        self.sock.recv_batch(&mut batch).await.map_err(io_error)?;
        // SAFETY: the JS caller (the socket's reader, one receive at a time) hands the buffer over until
        // this promise settles and reads nothing of it meanwhile.
        collect_into(&batch, unsafe { buf.as_mut() })
    }

    /// Like `recvInto` without waiting, on the JS thread: `null` when nothing is queued.
    #[napi]
    pub fn try_recv_into(&self, mut buf: Uint8Array) -> Result<Option<RecvInto>> {
        check_room(&buf, RECV_ROOM, "a receive buffer (the most one receive returns)")?;
        let Ok(mut batch) = self.batch.try_lock() else { return Ok(None) };
        match self.sock.try_recv_batch(&mut batch).map_err(io_error)? {
            0 => Ok(None),
            // SAFETY: on the JS thread, which cannot touch the buffer during this call.
            _ => collect_into(&batch, unsafe { buf.as_mut() }).map(Some),
        }
    }

    /// Sends what the socket takes now of `data` as `segment_size` datagrams, on the JS thread; returns
    /// the bytes sent (whole datagrams). The rest goes with `sendSegments`.
    #[napi]
    pub fn try_send_segments(&self, address: String, port: u32, data: &[u8], segment_size: u32) -> Result<u32> {
        let dest = socket_addr(&address, port)?;
        let sent = self.sock.try_send_segments(dest, data, segment_size as usize).map_err(io_error)?;
        Ok(sent as u32)
    }

    /// Sends `data` as `segment_size` datagrams with UDP_SEGMENT.
    #[napi]
    pub async fn send_segments(&self, address: String, port: u32, data: Uint8Array, segment_size: u32) -> Result<()> {
        let dest = socket_addr(&address, port)?;
        self.sock.send_segments(dest, &data, segment_size as usize).await.map_err(io_error)
    }

    /// Sends one datagram to each address.
    #[napi]
    pub async fn send_batch(&self, addresses: Vec<String>, ports: Vec<u32>, datas: Vec<Uint8Array>) -> Result<()> {
        if addresses.len() != ports.len() || ports.len() != datas.len() {
            return Err(invalid_argument("addresses, ports and datas must have one entry per datagram"));
        }
        let mut msgs = Vec::with_capacity(datas.len());
        for ((a, &p), d) in addresses.iter().zip(&ports).zip(&datas) {
            msgs.push((socket_addr(a, p)?, &d[..]));
        }
        self.sock.send_batch(&msgs).await.map_err(io_error)
    }

    /// Turns UDP checksums of sent IPv4 datagrams on or off.
    #[napi]
    pub fn set_udp_checksums(&self, on: bool) -> Result<()> {
        self.sock.set_udp_checksums(on).map_err(io_error)
    }

    /// Counters.
    #[napi]
    pub fn stats(&self) -> JsUdpStats {
        udp_stats(self.sock.stats())
    }

    /// Closes the socket.
    #[napi]
    pub async fn close(&self) -> Result<()> {
        self.sock.close();
        Ok(())
    }
}

/// A superpacket split into framed datagrams for JS to seal.
#[napi(object)]
pub struct PreparedSend {
    pub buffer: Buffer,
    pub segment_size: u32,
    pub count: u32,
    pub counter: BigInt,
}

/// Superpacket → framed segments → GSO send.
#[napi]
pub struct NativeSegmentWriter {
    sock: Arc<UdpSocket>,
    peer: SocketAddr,
    state: Mutex<WriterState>,
}

/// The preparer and what of its last prepared buffer is still unsent.
struct WriterState {
    out: Outbound,
    /// Bytes `[start, end)` of the prepared buffer wait for `flush`, with their datagram size.
    pending: Option<(usize, usize, usize)>,
}

/// What `tryWrite` did.
#[napi(object)]
pub struct TryWrite {
    /// Frames taken (the last may still be partly pending).
    pub accepted: u32,
    /// Whether `flush` must run before the next write.
    pub pending: bool,
}

#[napi]
impl NativeSegmentWriter {
    #[napi(constructor)]
    pub fn new(udp: &NativeUdp, address: String, port: u32, framer: FramerSpec) -> Result<Self> {
        Ok(NativeSegmentWriter {
            sock: udp.sock.clone(),
            peer: socket_addr(&address, port)?,
            state: Mutex::new(WriterState { out: Outbound::new(build(&framer)?), pending: None }),
        })
    }

    /// Splits, seals and sends each frame: one UDP_SEGMENT send per 64 segments.
    #[napi]
    pub async fn write(&self, frames: Vec<Uint8Array>) -> Result<()> {
        let mut st = self.state.lock().await;
        self.flush_pending(&mut st).await?;
        for f in &frames {
            let p = st.out.prepare(f).map_err(io_error)?;
            self.sock.send_segments(self.peer, p.bytes, p.segment_size).await.map_err(io_error)?;
        }
        Ok(())
    }

    /// Like `write` on the JS thread, sending what the socket takes now. When the socket is full, the
    /// rest of the frame in hand stays pending: call `flush`, then `tryWrite` the frames not accepted.
    #[napi]
    pub fn try_write(&self, frames: Vec<&[u8]>) -> Result<TryWrite> {
        let mut st = self.state.try_lock().map_err(|_| invalid_argument("a write on this writer is still running"))?;
        if st.pending.is_some() {
            return Ok(TryWrite { accepted: 0, pending: true });
        }
        for (i, f) in frames.iter().enumerate() {
            let p = st.out.prepare(f).map_err(io_error)?;
            let (len, seg) = (p.bytes.len(), p.segment_size);
            let sent = self.sock.try_send_segments(self.peer, p.bytes, seg).map_err(io_error)?;
            if sent < len {
                st.pending = Some((sent, len, seg));
                return Ok(TryWrite { accepted: i as u32 + 1, pending: true });
            }
        }
        Ok(TryWrite { accepted: frames.len() as u32, pending: false })
    }

    /// Sends what `tryWrite` left pending, waiting for room.
    #[napi]
    pub async fn flush(&self) -> Result<()> {
        let mut st = self.state.lock().await;
        self.flush_pending(&mut st).await
    }

    /// Splits one frame into slots for a JS framer (a copy the JS side owns).
    #[napi]
    pub fn prepare(&self, frame: &[u8]) -> Result<PreparedSend> {
        let mut st = self.state.try_lock().map_err(|_| invalid_argument("a write on this writer is still running"))?;
        if st.pending.is_some() {
            return Err(invalid_argument("flush the pending write first"));
        }
        let counter = st.out.counter();
        let p = st.out.prepare(frame).map_err(io_error)?;
        Ok(PreparedSend {
            buffer: p.bytes.to_vec().into(),
            segment_size: p.segment_size as u32,
            count: p.segments as u32,
            counter: BigInt::from(counter),
        })
    }

    /// Sends what `prepare` returned once the JS framer sealed it.
    #[napi]
    pub async fn send_prepared(&self, buffer: Uint8Array, segment_size: u32) -> Result<()> {
        self.sock.send_segments(self.peer, &buffer, segment_size as usize).await.map_err(io_error)
    }
}

impl NativeSegmentWriter {
    async fn flush_pending(&self, st: &mut WriterState) -> Result<()> {
        if let Some((start, end, seg)) = st.pending.take() {
            let bytes = st.out.prepared(start..end).ok_or_else(|| invalid_argument("pending bytes went missing"))?;
            self.sock.send_segments(self.peer, bytes, seg).await.map_err(io_error)?;
        }
        Ok(())
    }
}
