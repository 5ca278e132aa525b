//! `NativeTunnel`.

use std::collections::HashMap;

use napi::bindgen_prelude::within_runtime_if_available;
use napi_derive::napi;
use superpacket_core::framer::DropReason;
use superpacket_io::tunnel::{PeerConfig, Tunnel};

use crate::error::{invalid_argument, io_error};
use crate::framer::NativeFramer;
use crate::tun::{tun_stats, JsTunStats, NativeTun};
use crate::udp::{socket_addr, udp_stats, JsUdpStats, NativeUdp};
use napi::Result;

/// TUN → UDP counters.
#[napi(object)]
pub struct OutboundStats {
    pub superpackets: f64,
    pub segments: f64,
    pub segments_per_syscall: f64,
    pub drops: f64,
    /// Superpackets held by the framer until a handshake completes.
    pub held: f64,
    /// Drops by reason (`'no-route'`, `'invalid-packet'` ...); reasons with no drop are left out.
    pub drop_reasons: HashMap<String, f64>,
}

/// UDP → TUN counters.
#[napi(object)]
pub struct InboundStats {
    pub datagrams: f64,
    pub datagrams_per_syscall: f64,
    pub packets: f64,
    pub frames: f64,
    pub drops: f64,
    /// Drops by reason (`'wrong-source'`, `'bad-mac'`, `'replay'` ...); reasons with no drop are left out.
    pub drop_reasons: HashMap<String, f64>,
}

/// Every counter of a tunnel.
#[napi(object)]
pub struct JsTunnelStats {
    pub tun: JsTunStats,
    pub udp: JsUdpStats,
    pub outbound: OutboundStats,
    pub inbound: InboundStats,
    /// Control datagrams sent (handshakes, cookie replies, keepalives).
    pub control_sent: f64,
}

/// The reasons that counted something, by name.
pub fn drop_reasons(counts: &[(DropReason, u64)]) -> HashMap<String, f64> {
    counts.iter().filter(|(_, n)| *n > 0).map(|(r, n)| (r.name().to_string(), *n as f64)).collect()
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// A running native tunnel.
#[napi]
pub struct NativeTunnel {
    tunnel: Tunnel,
    coalescing: Box<dyn Fn() -> bool + Send + Sync>,
}

#[napi]
impl NativeTunnel {
    #[napi(constructor)]
    pub fn new(
        tun: &NativeTun,
        udp: &NativeUdp,
        framer: &NativeFramer,
        address: Option<String>,
        port: Option<u32>,
        learn_peer: Option<bool>,
    ) -> Result<Self> {
        let peer = match (address, port) {
            (Some(a), Some(p)) => Some(socket_addr(&a, p)?),
            (None, None) => None,
            _ => return Err(invalid_argument("give the peer's address and port, or neither")),
        };
        let config = PeerConfig { peer, learn: learn_peer.unwrap_or(false) };
        let (t, u, f) = (tun.tun().clone(), udp.socket().clone(), framer.framer().clone());
        let tunnel = within_runtime_if_available(|| Tunnel::start(t, u, f, config)).map_err(io_error)?;
        let t = tun.tun().clone();
        Ok(NativeTunnel { tunnel, coalescing: Box::new(move || t.coalescing_enabled()) })
    }

    /// Every counter.
    #[napi]
    pub fn stats(&self) -> JsTunnelStats {
        let s = self.tunnel.stats();
        JsTunnelStats {
            outbound: OutboundStats {
                superpackets: s.out_superpackets as f64,
                segments: s.out_segments as f64,
                segments_per_syscall: ratio(s.udp.tx_datagrams, s.udp.tx_syscalls),
                drops: s.out_drops as f64,
                held: s.out_held as f64,
                drop_reasons: drop_reasons(&s.out_drop_reasons),
            },
            inbound: InboundStats {
                datagrams: s.in_datagrams as f64,
                datagrams_per_syscall: ratio(s.udp.rx_datagrams, s.udp.rx_syscalls),
                packets: s.in_packets as f64,
                frames: s.tun.tx_frames as f64,
                drops: s.in_drops as f64,
                drop_reasons: drop_reasons(&s.in_drop_reasons),
            },
            control_sent: s.control_sent as f64,
            tun: tun_stats(s.tun, (self.coalescing)()),
            udp: udp_stats(s.udp),
        }
    }

    /// The peer datagrams go to now (for framers that do not route): `[address, port]`, or null.
    #[napi]
    pub fn peer(&self) -> Option<(String, u32)> {
        self.tunnel.peer().map(|p| (p.ip().to_string(), u32::from(p.port())))
    }

    /// Whether the tunnel still runs.
    #[napi(getter)]
    pub fn running(&self) -> bool {
        self.tunnel.is_running()
    }

    /// Settles when the tunnel stops: resolves after `stop`, rejects with the error that ended it.
    #[napi]
    pub async fn closed(&self) -> Result<()> {
        self.tunnel.closed().await.map_err(io_error)
    }

    /// Stops every direction.
    #[napi]
    pub async fn stop(&self) -> Result<()> {
        self.tunnel.stop().await.map_err(io_error)
    }
}
