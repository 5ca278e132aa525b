//! `NativeFramer`: one native framer, built once and shared by every writer and tunnel it is given to,
//! so that its counters and sessions belong to it and never repeat across them.

use std::net::SocketAddr;
use std::sync::Arc;

use napi::bindgen_prelude::{BigInt, Buffer};
use napi_derive::napi;
use superpacket_core::framer::{Control, Framer, HeaderFramer, PlainFramer, ReserveFramer, MAX_FRAMER_ROOM};
use superpacket_io::error::{ErrorKind, IoError};
use superpacket_io::udp::UdpSocket;

use napi::Result;

use crate::error::{invalid_argument, io_error};

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

/// A native framer.
#[napi]
pub struct NativeFramer {
    framer: Arc<dyn Framer>,
    /// For a JS framer's slots: the counter blocks it hands out.
    reserve: Option<Arc<ReserveFramer>>,
}

impl NativeFramer {
    /// Wraps a framer built elsewhere (WireGuard, DTLS).
    pub fn from_framer(framer: Arc<dyn Framer>) -> Self {
        NativeFramer { framer, reserve: None }
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
            "plain" => Ok(NativeFramer { framer: Arc::new(PlainFramer), reserve: None }),
            "header" => {
                let header = spec.header.as_deref().unwrap_or_default();
                let f = HeaderFramer::new(header).ok_or_else(|| invalid_argument("the header framer needs 1 to 255 header bytes"))?;
                Ok(NativeFramer { framer: Arc::new(f), reserve: None })
            }
            "reserve" => {
                let headroom = spec.headroom.unwrap_or(0) as usize;
                let tailroom = spec.tailroom.unwrap_or(0) as usize;
                let r = ReserveFramer::new(headroom, tailroom).ok_or_else(|| {
                    invalid_argument(format!("framer headroom and tailroom must be at most {MAX_FRAMER_ROOM}"))
                })?;
                let r = Arc::new(r);
                Ok(NativeFramer { framer: r.clone(), reserve: Some(r) })
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
