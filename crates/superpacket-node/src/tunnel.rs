//! `NativeTunnel`.

use napi::bindgen_prelude::within_runtime_if_available;
use napi_derive::napi;
use superpacket_io::tunnel::Tunnel;
use tokio::sync::Mutex;

use crate::error::{invalid_argument, io_error};
use crate::framer::{build, FramerSpec};
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
}

/// UDP → TUN counters.
#[napi(object)]
pub struct InboundStats {
    pub datagrams: f64,
    pub datagrams_per_syscall: f64,
    pub packets: f64,
    pub frames: f64,
    pub drops: f64,
}

/// Every counter of a tunnel.
#[napi(object)]
pub struct JsTunnelStats {
    pub tun: JsTunStats,
    pub udp: JsUdpStats,
    pub outbound: OutboundStats,
    pub inbound: InboundStats,
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
    tunnel: Mutex<Tunnel>,
    coalescing: Box<dyn Fn() -> bool + Send + Sync>,
}

#[napi]
impl NativeTunnel {
    #[napi(constructor)]
    pub fn new(
        tun: &NativeTun,
        udp: &NativeUdp,
        address: Option<String>,
        port: Option<u32>,
        framer: FramerSpec,
    ) -> Result<Self> {
        let peer = match (address, port) {
            (Some(a), Some(p)) => Some(socket_addr(&a, p)?),
            (None, None) => None,
            _ => return Err(invalid_argument("give the peer's address and port, or neither")),
        };
        let framer = build(&framer)?;
        let (t, u) = (tun.tun().clone(), udp.socket().clone());
        let tunnel = within_runtime_if_available(|| Tunnel::start(t, u, peer, framer));
        let t = tun.tun().clone();
        Ok(NativeTunnel { tunnel: Mutex::new(tunnel), coalescing: Box::new(move || t.coalescing_enabled()) })
    }

    /// Every counter.
    #[napi]
    pub fn stats(&self) -> Result<JsTunnelStats> {
        let t = self.tunnel.try_lock().map_err(|_| invalid_argument("the tunnel is stopping"))?;
        let s = t.stats();
        Ok(JsTunnelStats {
            outbound: OutboundStats {
                superpackets: s.out_superpackets as f64,
                segments: s.out_segments as f64,
                segments_per_syscall: ratio(s.udp.tx_datagrams, s.udp.tx_syscalls),
                drops: s.out_drops as f64,
            },
            inbound: InboundStats {
                datagrams: s.in_datagrams as f64,
                datagrams_per_syscall: ratio(s.udp.rx_datagrams, s.udp.rx_syscalls),
                packets: s.in_packets as f64,
                frames: s.tun.tx_frames as f64,
                drops: s.in_drops as f64,
            },
            tun: tun_stats(s.tun, (self.coalescing)()),
            udp: udp_stats(s.udp),
        })
    }

    /// Stops both directions.
    #[napi]
    pub async fn stop(&self) -> Result<()> {
        self.tunnel.lock().await.stop().await.map_err(io_error)
    }
}
