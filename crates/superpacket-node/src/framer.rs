//! `NativeFramer`: one native framer, built once and shared by every writer and tunnel it is given to,
//! so that its counters and sessions belong to it and never repeat across them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::within_runtime_if_available;

use napi::bindgen_prelude::{BigInt, Buffer};
use napi_derive::napi;
use superpacket_core::framer::{
    Control, Framer, HeaderFramer, Opened, PlainFramer, ReserveFramer, MAX_FRAMER_ROOM, POLL_INTERVAL_MS,
};
use superpacket_io::error::{ErrorKind, IoError};
use superpacket_io::udp::UdpSocket;

use napi::Result;

use crate::dtls::{DtlsRekey, JsDtlsStats};
use crate::error::{invalid_argument, io_error};
use crate::wireguard::{peer_infos, set_endpoint, WgPeerInfo};
use superpacket_dtls::DtlsFramer;
use superpacket_wireguard::WireGuard;

/// Which native framer to build.
#[napi(object)]
pub struct FramerSpec {
    /// `'plain'`, `'header'` or `'reserve'` (slots for a JS framer).
    pub r#type: String,
    /// For `'header'`: the fixed header.
    pub header: Option<Buffer>,
    /// For `'reserve'`: bytes before each segment.
    pub headroom: Option<u32>,
    /// For `'reserve'`: bytes after each segment.
    pub tailroom: Option<u32>,
}

/// What `openDatagram` found: the inner packet, or the reason the datagram was dropped (neither for a
/// control message the framer consumed).
#[napi(object)]
pub struct OpenedDatagram {
    pub packet: Option<Buffer>,
    pub drop_reason: Option<String>,
}

/// A native framer.
#[napi]
pub struct NativeFramer {
    framer: Arc<dyn Framer>,
    /// For a JS framer's slots: the counter blocks it hands out.
    reserve: Option<Arc<ReserveFramer>>,
    /// The same framer when it is WireGuard, for its peers.
    wireguard: Option<Arc<WireGuard>>,
    /// The same framer when it is a DTLS-record framer, for rekeying.
    dtls: Option<Arc<DtlsFramer>>,
    /// The task that runs the framer's timers for the JS writers, once one of them has a socket.
    timers: TimerTask,
}

/// A framer's timer task, stopped when the framer goes.
#[derive(Default)]
struct TimerTask(std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>);

impl Drop for TimerTask {
    fn drop(&mut self) {
        if let Some(t) = self.0.get_mut().ok().and_then(Option::take) {
            t.abort();
        }
    }
}

impl NativeFramer {
    /// Wraps a framer built elsewhere (DTLS).
    pub fn from_framer(framer: Arc<dyn Framer>) -> Self {
        NativeFramer { framer, reserve: None, wireguard: None, dtls: None, timers: Default::default() }
    }

    /// Wraps a DTLS-record framer.
    pub fn from_dtls(d: Arc<DtlsFramer>) -> Self {
        NativeFramer { dtls: Some(d.clone()), ..NativeFramer::from_framer(d) }
    }

    fn dtls(&self) -> Result<&DtlsFramer> {
        self.dtls.as_deref().ok_or_else(|| invalid_argument("not a DTLS framer"))
    }

    /// Wraps a WireGuard framer.
    pub fn from_wireguard(wg: Arc<WireGuard>) -> Self {
        NativeFramer { wireguard: Some(wg.clone()), ..NativeFramer::from_framer(wg) }
    }

    /// Runs the framer's timers (handshake retries, rekeying, keepalives) from `sock`, with no JS
    /// involved, for writers that are not part of a `Tunnel` (a Tunnel runs its own). Started once per
    /// framer; ends when the socket closes or the framer is collected.
    pub fn ensure_timers(&self, sock: &Arc<UdpSocket>) {
        let Ok(mut timers) = self.timers.0.lock() else { return };
        if timers.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let (framer, sock) = (self.framer.clone(), sock.clone());
        *timers = Some(within_runtime_if_available(|| {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(POLL_INTERVAL_MS));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut control = Control::new();
                loop {
                    tick.tick().await;
                    framer.poll(&mut control);
                    if send_control(&sock, &mut control).await.is_err() {
                        return;
                    }
                }
            })
        }));
    }

    fn wireguard(&self) -> Result<&WireGuard> {
        self.wireguard.as_deref().ok_or_else(|| invalid_argument("not a WireGuard framer"))
    }

    /// The framer.
    pub fn framer(&self) -> &Arc<dyn Framer> {
        &self.framer
    }

    /// A JS framer's counter blocks (`None` for framers that seal natively).
    pub fn counters(&self) -> Option<Arc<NativeFramerCounters>> {
        self.reserve.clone().map(|r| Arc::new(NativeFramerCounters(r)))
    }
}

/// The counters a JS framer uses as nonces: one block per superpacket, shared by every writer of the
/// framer.
pub struct NativeFramerCounters(Arc<ReserveFramer>);

impl NativeFramerCounters {
    /// Reserves `n` consecutive counters and returns the first.
    pub fn reserve(&self, n: usize) -> Result<u64> {
        self.0.reserve(n as u64).ok_or_else(|| {
            io_error(IoError::new(ErrorKind::Exhausted, "the framer's counters are used up; rekey first"))
        })
    }
}

#[napi]
impl NativeFramer {
    /// Builds the framer a spec names.
    #[napi(constructor)]
    pub fn new(spec: FramerSpec) -> Result<Self> {
        match spec.r#type.as_str() {
            "plain" => Ok(NativeFramer::from_framer(Arc::new(PlainFramer))),
            "header" => {
                let header = spec.header.as_deref().unwrap_or_default();
                let f = HeaderFramer::new(header)
                    .ok_or_else(|| invalid_argument("the header framer needs 1 to 255 header bytes"))?;
                Ok(NativeFramer::from_framer(Arc::new(f)))
            }
            "reserve" => {
                let headroom = spec.headroom.unwrap_or(0) as usize;
                let tailroom = spec.tailroom.unwrap_or(0) as usize;
                let r = ReserveFramer::new(headroom, tailroom).ok_or_else(|| {
                    invalid_argument(format!("framer headroom and tailroom must be at most {MAX_FRAMER_ROOM}"))
                })?;
                let r = Arc::new(r);
                Ok(NativeFramer { reserve: Some(r.clone()), ..NativeFramer::from_framer(r) })
            }
            other => Err(invalid_argument(format!("unknown framer type '{other}'"))),
        }
    }

    /// Bytes before each segment.
    #[napi(getter)]
    pub fn headroom(&self) -> u32 {
        self.framer.headroom() as u32
    }

    /// Bytes after each segment.
    #[napi(getter)]
    pub fn tailroom(&self) -> u32 {
        self.framer.tailroom() as u32
    }

    /// Whether the framer picks endpoints itself (no transport peer needed).
    #[napi(getter)]
    pub fn routes(&self) -> bool {
        self.framer.routes()
    }

    /// WireGuard: our public key.
    #[napi]
    pub fn wg_public_key(&self) -> Result<String> {
        Ok(self.wireguard()?.public_key())
    }

    /// WireGuard: every peer's state.
    #[napi]
    pub fn wg_peers(&self) -> Result<Vec<WgPeerInfo>> {
        Ok(peer_infos(self.wireguard()?))
    }

    /// WireGuard: sets where a peer's datagrams go.
    #[napi]
    pub fn wg_set_endpoint(&self, public_key: String, endpoint: String) -> Result<()> {
        set_endpoint(self.wireguard()?, &public_key, &endpoint)
    }

    /// DTLS: switches to a new epoch and keys.
    #[napi]
    pub fn dtls_rekey(&self, r: DtlsRekey) -> Result<()> {
        crate::dtls::rekey(self.dtls()?, &r)
    }

    /// DTLS: the framer's counters.
    #[napi]
    pub fn dtls_stats(&self) -> Result<JsDtlsStats> {
        Ok(crate::dtls::stats(self.dtls()?))
    }

    /// Opens one datagram from `address:port` outside any data path (tests and tools): the inner packet,
    /// or why it was dropped. Control datagrams the framer would send are discarded.
    #[napi]
    pub fn open_datagram(&self, datagram: Buffer, address: String, port: u32) -> Result<OpenedDatagram> {
        let from = crate::udp::socket_addr(&address, port)?;
        let mut bytes = datagram.to_vec();
        let mut scratch = vec![0u8; bytes.len()];
        let mut control = Control::new();
        Ok(match self.framer.open(&mut bytes, &mut scratch, from, &mut control) {
            Opened::Data { packet, .. } => OpenedDatagram { packet: Some(packet.to_vec().into()), drop_reason: None },
            Opened::Consumed => OpenedDatagram { packet: None, drop_reason: None },
            Opened::Dropped(r) => OpenedDatagram { packet: None, drop_reason: Some(r.name().to_string()) },
        })
    }

    /// The next counter a JS framer's batch would get (for tests and diagnostics).
    #[napi]
    pub fn peek_counter(&self) -> BigInt {
        BigInt::from(self.reserve.as_ref().and_then(|r| r.reserve(0)).unwrap_or(0))
    }
}

/// Sends the control datagrams a framer queued from `sock`; a failed send costs only that datagram.
/// Returns how many were sent.
pub async fn send_control(sock: &UdpSocket, control: &mut Control) -> Result<u32> {
    let mut sent = 0;
    let msgs: Vec<(SocketAddr, Vec<u8>)> = control.drain().collect();
    for (to, bytes) in &msgs {
        match sock.send_batch(&[(*to, &bytes[..])]).await {
            Ok(()) => sent += 1,
            Err(e) if e.kind == ErrorKind::Closed => return Err(io_error(e)),
            Err(_) => {}
        }
    }
    Ok(sent)
}
