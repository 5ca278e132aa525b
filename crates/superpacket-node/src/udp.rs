//! `NativeUdp` and `NativeSegmentWriter`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use napi::bindgen_prelude::{BigInt, Buffer, Uint32Array, Uint32ArraySlice, Uint8ArraySlice};
use napi_derive::napi;
use superpacket_core::framer::{Control, Framer, Sealed};
use superpacket_io::datapath::Outbound;
use superpacket_io::udp::{
    RecvMeta, UdpOptions, UdpSocket, UdpStats, MAX_BATCH, MAX_PAYLOAD_V4, MAX_PAYLOAD_V6, MAX_SEGMENTS,
    RECV_BUFFER_SIZE,
};
use tokio::sync::Mutex;

use crate::abort::AbortFlag;
use crate::error::{check_room, invalid_argument, io_error};
use crate::framer::{send_control, NativeFramer, NativeFramerCounters};
use crate::owned::Copied;
use superpacket_io::udp::words::{self, lay_out, Sources};

/// Messages per receive.
const RECV_MESSAGES: usize = words::MESSAGES;
/// Bytes a receive buffer needs to take `RECV_MESSAGES` messages (one 64 KiB slot each).
const RECV_ROOM: usize = RECV_MESSAGES * RECV_BUFFER_SIZE;
/// Words of a receive's metadata array (the layout is `superpacket_io::udp::words`).
#[napi]
pub const RECV_META_LENGTH: u32 = words::LENGTH as u32;
/// Words at the start of the metadata array.
#[napi]
pub const RECV_META_HEADER: u32 = words::HEADER as u32;
/// Words per message of the metadata array.
#[napi]
pub const RECV_META_PER_MESSAGE: u32 = words::PER_MESSAGE as u32;
use napi::Result;

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
    pub gso_train_fallbacks: f64,
    pub tx_out_of_buffers: f64,
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
        gso_train_fallbacks: s.gso_train_fallbacks as f64,
        tx_out_of_buffers: s.tx_out_of_buffers as f64,
    }
}

/// The receive side's state: where `recvmmsg` describes the messages, and the sources' numbers.
struct RecvState {
    metas: Vec<RecvMeta>,
    sources: Sources,
}

/// Sources numbered since the last `takeSources`.
#[napi(object, object_from_js = false)]
pub struct SourceUpdate {
    /// The numbering started over: numbers handed out before are void.
    pub reset: bool,
    /// The number of `peers[0]`.
    pub first: u32,
    pub peers: Vec<NativePeer>,
}

/// A UDP socket with GSO/GRO.
#[napi]
pub struct NativeUdp {
    sock: Arc<UdpSocket>,
    /// Its number in the JS thread's table of `fast.rs` (`u32::MAX` until `slot` registers it).
    slot: std::sync::atomic::AtomicU32,
    /// Taken only by receives, which run on the JS thread: never contended.
    recv: std::sync::Mutex<RecvState>,
}

impl Drop for NativeUdp {
    fn drop(&mut self) {
        let s = *self.slot.get_mut();
        if s != u32::MAX {
            crate::fast::unregister(s, &self.sock);
        }
    }
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
        let empty = RecvMeta { addr: SocketAddr::from(([0, 0, 0, 0], 0)), len: 0, stride: 0 };
        let recv = RecvState { metas: vec![empty; RECV_MESSAGES], sources: Sources::default() };
        Ok(NativeUdp {
            sock: Arc::new(sock),
            slot: std::sync::atomic::AtomicU32::new(u32::MAX),
            recv: std::sync::Mutex::new(recv),
        })
    }

    /// The socket's number for the `fastOps()` callbacks on this thread (registered on the first call).
    #[napi]
    pub fn slot(&self) -> u32 {
        use std::sync::atomic::Ordering::Relaxed;
        let s = self.slot.load(Relaxed);
        if s != u32::MAX {
            return s;
        }
        let s = crate::fast::register(&self.sock);
        self.slot.store(s, Relaxed);
        s
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

    /// Receives what is queued into `buf` on the JS thread, without waiting and without a copy: up to
    /// one message per 64 KiB of `buf` (32 at most; `recvRoom` bytes hold 32), described in `meta`
    /// (`RECV_META_LENGTH` words, laid out as `superpacket_io::udp::words` says). Returns the number of messages, 0 when nothing is
    /// queued (then `waitReadable`).
    #[napi]
    pub fn try_recv_into(&self, mut buf: Uint8ArraySlice, mut meta: Uint32ArraySlice) -> Result<u32> {
        // SAFETY: a synchronous call on the JS thread, which cannot run JS (and so cannot read, write or
        // detach the arrays) until it returns; nothing of them is kept.
        let (buf, meta): (&mut [u8], &mut [u32]) = unsafe { (buf.as_mut(), meta.as_mut()) };
        check_room(buf, RECV_BUFFER_SIZE, "a receive buffer (one 64 KiB message at least)")?;
        if meta.len() < RECV_META_LENGTH as usize {
            return Err(invalid_argument(format!("the receive metadata needs {RECV_META_LENGTH} words")));
        }
        let mut guard = self.recv.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let st = &mut *guard;
        let n = self.sock.try_recv_into(buf, &mut st.metas).map_err(io_error)?;
        if n == 0 {
            return Ok(0);
        }
        lay_out(buf, &st.metas[..n], &mut st.sources, meta);
        Ok(n as u32)
    }

    /// Waits until a datagram is queued (without taking it): `tryRecvInto` then finds it. Nothing of JS
    /// is held while it waits.
    #[napi]
    pub async fn wait_readable(&self) -> Result<()> {
        self.sock.wait_readable().await.map_err(io_error)
    }

    /// The sources `tryRecvInto` numbered since the last call (its metadata says when there are some).
    #[napi]
    pub fn take_sources(&self) -> SourceUpdate {
        let mut st = self.recv.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let new = st.sources.take();
        SourceUpdate {
            reset: new.reset,
            first: new.first,
            peers: new.addrs.into_iter().map(|addr| NativePeer { addr }).collect(),
        }
    }

    /// A destination checked and parsed once, for the send calls that take one.
    #[napi]
    pub fn peer(&self, address: String, port: u32) -> Result<NativePeer> {
        let addr = socket_addr(&address, port)?;
        if port == 0 {
            return Err(invalid_argument("a peer's port must be 1 to 65535"));
        }
        let v6_only = matches!(addr.ip(), IpAddr::V6(ip) if ip.to_ipv4_mapped().is_none());
        if v6_only && self.sock.local_addr().is_ipv4() {
            return Err(invalid_argument(format!("{address} is IPv6 but the socket is IPv4")));
        }
        Ok(NativePeer { addr })
    }

    /// Sends one datagram, waiting for room.
    #[napi]
    pub async fn send_to(
        &self,
        address: String,
        port: u32,
        #[napi(ts_arg_type = "Uint8Array")] data: Copied<u8>,
    ) -> Result<()> {
        let dest = socket_addr(&address, port)?;
        self.sock.send_batch(&[(dest, &data[..])]).await.map_err(io_error)
    }

    /// Like `trySendLengths`, waiting for room until every datagram from `from` on is sent.
    #[napi]
    pub async fn send_lengths(
        &self,
        address: String,
        port: u32,
        #[napi(ts_arg_type = "Uint8Array")] data: Copied<u8>,
        #[napi(ts_arg_type = "Uint32Array")] lengths: Copied<u32>,
        from: u32,
    ) -> Result<()> {
        let msgs = datagrams(socket_addr(&address, port)?, &data, &lengths, from)?;
        self.sock.send_batch(&msgs).await.map_err(io_error)
    }

    /// Sends `data` (copied at the call) as `segment_size` datagrams with UDP_SEGMENT. An abort stops it
    /// before the next system call's worth of datagrams (`sent`: the datagrams that went out).
    #[napi]
    pub async fn send_segments(
        &self,
        address: String,
        port: u32,
        #[napi(ts_arg_type = "Uint8Array")] data: Copied<u8>,
        segment_size: u32,
        #[napi(ts_arg_type = "NativeAbort | undefined | null")] abort: Option<AbortFlag>,
    ) -> Result<()> {
        let dest = socket_addr(&address, port)?;
        send_trains(&self.sock, dest, &data, segment_size as usize, &abort).await
    }

    /// Sends one datagram (copied at the call) to each address, waiting for room. An abort takes effect
    /// only before the send starts.
    #[napi]
    pub async fn send_batch(
        &self,
        addresses: Vec<String>,
        ports: Vec<u32>,
        #[napi(ts_arg_type = "Uint8Array[]")] datas: Vec<Copied<u8>>,
        #[napi(ts_arg_type = "NativeAbort | undefined | null")] abort: Option<AbortFlag>,
    ) -> Result<()> {
        AbortFlag::check(&abort, 0)?;
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

/// A destination parsed once (`NativeUdp.peer`).
#[napi]
pub struct NativePeer {
    addr: SocketAddr,
}

impl NativePeer {
    /// The parsed address.
    pub fn socket_addr(&self) -> SocketAddr {
        self.addr
    }
}

#[napi]
impl NativePeer {
    /// The address as text (IPv6 without brackets).
    #[napi(getter)]
    pub fn address(&self) -> String {
        self.addr.ip().to_string()
    }

    /// The port.
    #[napi(getter)]
    pub fn port(&self) -> u32 {
        u32::from(self.addr.port())
    }

    /// The address as words (`superpacket_io::udp::words`): what the send calls take, so that a send
    /// unwraps no object.
    #[napi(getter)]
    pub fn words(&self) -> Uint32Array {
        Uint32Array::new(words::address_words(self.addr).to_vec())
    }
}

/// A destination from a peer's words (`NativePeer.words`).
pub(crate) fn peer_words(w: &[u32]) -> Result<SocketAddr> {
    words::decode_addr(w).ok_or_else(|| invalid_argument("not a peer's words"))
}

/// The datagrams from index `from` on of `data` cut by `lengths`, all to `dest` (see [`check_lengths`]).
fn datagrams<'a>(dest: SocketAddr, data: &'a [u8], lengths: &[u32], from: u32) -> Result<Vec<(SocketAddr, &'a [u8])>> {
    let mut at = check_lengths(dest, data, lengths, from)?;
    let mut msgs = Vec::with_capacity(lengths.len() - from as usize);
    for &len in lengths.get(from as usize..).unwrap_or_default() {
        let end = at + len as usize;
        // In range: the lengths add up to the buffer's.
        msgs.push((dest, data.get(at..end).unwrap_or_default()));
        at = end;
    }
    Ok(msgs)
}

/// Checks that `lengths` add up to `data.len()`, that each fits a UDP datagram to `dest` and that datagram
/// `from` exists (or is one past the last); returns where datagram `from` starts in `data`.
pub(crate) fn check_lengths(dest: SocketAddr, data: &[u8], lengths: &[u32], from: u32) -> Result<usize> {
    let total: u64 = lengths.iter().map(|&l| u64::from(l)).sum();
    if total != data.len() as u64 {
        return Err(invalid_argument(format!("lengths add up to {total} bytes but the buffer holds {}", data.len())));
    }
    let max = if dest.is_ipv4() { MAX_PAYLOAD_V4 } else { MAX_PAYLOAD_V6 };
    if let Some(l) = lengths.iter().find(|&&l| l as usize > max) {
        return Err(invalid_argument(format!("a datagram of {l} bytes is over the {max} a UDP datagram holds")));
    }
    let from = from as usize;
    if from > lengths.len() {
        return Err(invalid_argument(format!("datagram {from} of {} does not exist", lengths.len())));
    }
    Ok(lengths.iter().take(from).map(|&l| l as usize).sum())
}

/// Sends `data` as `segment_size` datagrams, one system call's worth (a GSO train, or a `sendmmsg` batch
/// without GSO) at a time, checking `abort` before each.
async fn send_trains(
    sock: &UdpSocket,
    dest: SocketAddr,
    data: &[u8],
    segment_size: usize,
    abort: &Option<AbortFlag>,
) -> Result<()> {
    let per_call = MAX_SEGMENTS.max(MAX_BATCH);
    // A segment size of 0 is the io layer's to refuse.
    for (i, train) in data.chunks(segment_size.max(1) * per_call).enumerate() {
        AbortFlag::check(abort, i * per_call)?;
        sock.send_segments(dest, train, segment_size).await.map_err(io_error)?;
    }
    Ok(())
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
    /// Where datagrams go when the framer does not route.
    peer: Option<SocketAddr>,
    framer: Arc<dyn Framer>,
    /// For a JS framer: the framer's counter blocks.
    js: Option<Arc<NativeFramerCounters>>,
    state: Mutex<WriterState>,
}

/// The preparer, what of its last prepared buffer is still unsent, and control datagrams to send.
struct WriterState {
    out: Outbound,
    /// Bytes `[start, end)` of the prepared buffer wait for `flush`, with their datagram size and
    /// destination.
    pending: Option<(usize, usize, usize, SocketAddr)>,
    control: Control,
}

/// What `tryWrite` did.
#[napi(object)]
pub struct TryWrite {
    /// Frames taken (the last may still be partly pending).
    pub accepted: u32,
    /// Whether `flush` must run before the next write.
    pub pending: bool,
}

impl NativeSegmentWriter {
    /// Where a prepared superpacket goes: `None` when the framer held or dropped it.
    fn destination(&self, sealed: Sealed) -> Result<Option<SocketAddr>> {
        match sealed {
            Sealed::To(addr) => Ok(Some(addr)),
            Sealed::ToPeer => {
                self.peer.map(Some).ok_or_else(|| invalid_argument("this framer needs a peer to send to"))
            }
            Sealed::Held | Sealed::Dropped(_) => Ok(None),
        }
    }
}

#[napi]
impl NativeSegmentWriter {
    #[napi(constructor)]
    pub fn new(udp: &NativeUdp, framer: &NativeFramer, peer: Option<&NativePeer>) -> Result<Self> {
        let peer = peer.map(|p| p.addr);
        if peer.is_none() && !framer.framer().routes() {
            return Err(invalid_argument("a segment writer needs a peer unless its framer routes (WireGuard)"));
        }
        framer.ensure_timers(&udp.sock);
        Ok(NativeSegmentWriter {
            sock: udp.sock.clone(),
            peer,
            framer: framer.framer().clone(),
            js: framer.counters(),
            state: Mutex::new(WriterState {
                out: Outbound::new(framer.framer().clone()),
                pending: None,
                control: Control::new(),
            }),
        })
    }

    /// Splits, seals and sends each frame: one UDP_SEGMENT send per 64 segments.
    #[napi]
    pub async fn write(&self, #[napi(ts_arg_type = "Uint8Array[]")] frames: Vec<Copied<u8>>) -> Result<()> {
        let mut guard = self.state.lock().await;
        let st = &mut *guard;
        self.flush_pending(st).await?;
        for f in &frames {
            let p = st.out.prepare(f, &mut st.control).map_err(io_error)?;
            if let Some(dest) = self.destination(p.sealed)? {
                self.sock.send_segments(dest, p.bytes, p.segment_size).await.map_err(io_error)?;
            }
        }
        send_control(&self.sock, &mut st.control).await?;
        Ok(())
    }

    /// Like `write` on the JS thread, sending what the socket takes now. When the socket is full, the
    /// rest of the frame in hand stays pending: call `flush`, then `tryWrite` the frames not accepted.
    #[napi]
    pub fn try_write(&self, frames: Vec<&[u8]>) -> Result<TryWrite> {
        let mut guard =
            self.state.try_lock().map_err(|_| invalid_argument("a write on this writer is still running"))?;
        let st = &mut *guard;
        if st.pending.is_some() || !st.control.is_empty() {
            return Ok(TryWrite { accepted: 0, pending: true });
        }
        for (i, f) in frames.iter().enumerate() {
            let p = st.out.prepare(f, &mut st.control).map_err(io_error)?;
            let Some(dest) = self.destination(p.sealed)? else { continue };
            let (len, seg) = (p.bytes.len(), p.segment_size);
            let sent = self.sock.try_send_segments(dest, p.bytes, seg).map_err(io_error)?;
            if sent < len {
                st.pending = Some((sent, len, seg, dest));
                return Ok(TryWrite { accepted: i as u32 + 1, pending: true });
            }
        }
        // Handshakes and the like wait for `flush`, which sends them from the runtime.
        Ok(TryWrite { accepted: frames.len() as u32, pending: !st.control.is_empty() })
    }

    /// Sends what `tryWrite` left pending, waiting for room.
    #[napi]
    pub async fn flush(&self) -> Result<()> {
        let mut st = self.state.lock().await;
        self.flush_pending(&mut st).await
    }

    /// Splits one frame into slots for a JS framer (a copy the JS side owns) and reserves the framer's
    /// counters for them.
    #[napi]
    pub fn prepare(&self, frame: &[u8]) -> Result<PreparedSend> {
        let mut guard =
            self.state.try_lock().map_err(|_| invalid_argument("a write on this writer is still running"))?;
        let st = &mut *guard;
        if st.pending.is_some() {
            return Err(invalid_argument("flush the pending write first"));
        }
        let p = st.out.prepare(frame, &mut st.control).map_err(io_error)?;
        let counter = match &self.js {
            Some(c) => c.reserve(p.segments)?,
            None => 0,
        };
        Ok(PreparedSend {
            buffer: p.bytes.to_vec().into(),
            segment_size: p.segment_size as u32,
            count: p.segments as u32,
            counter: BigInt::from(counter),
        })
    }

    /// Sends what `prepare` returned once the JS framer sealed it (copied at the call: the framer may
    /// still hold the buffer).
    #[napi]
    pub async fn send_prepared(
        &self,
        #[napi(ts_arg_type = "Uint8Array")] buffer: Copied<u8>,
        segment_size: u32,
    ) -> Result<()> {
        let dest = self.destination(Sealed::ToPeer)?.ok_or_else(|| invalid_argument("no peer"))?;
        self.sock.send_segments(dest, &buffer, segment_size as usize).await.map_err(io_error)
    }

    /// Whether the framer picks destinations itself.
    #[napi(getter)]
    pub fn routes(&self) -> bool {
        self.framer.routes()
    }
}

impl NativeSegmentWriter {
    async fn flush_pending(&self, st: &mut WriterState) -> Result<()> {
        if let Some((start, end, seg, dest)) = st.pending.take() {
            let bytes = st.out.prepared(start..end).ok_or_else(|| invalid_argument("pending bytes went missing"))?;
            self.sock.send_segments(dest, bytes, seg).await.map_err(io_error)?;
        }
        send_control(&self.sock, &mut st.control).await?;
        Ok(())
    }
}
