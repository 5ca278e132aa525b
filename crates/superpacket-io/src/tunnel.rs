//! A two-way tunnel between a TUN and a UDP socket that runs with no caller code per packet.
//!
//! One task per TUN queue reads superpackets, splits them straight into framed datagrams and sends them
//! with GSO; one task receives GRO batches, opens them and writes coalesced superpackets to the TUN.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use superpacket_core::framer::Framer;
use superpacket_core::VNET_HDR_LEN;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::datapath::{open_datagrams, Outbound};
use crate::error::{ErrorKind, IoError};
use crate::tun::{Tun, TunQueue, TunStats, WriteScratch};
use crate::udp::{RecvBatch, UdpSocket, UdpStats};

/// Messages per receive system call; each holds up to 64 KiB with GRO.
const RECV_MESSAGES: usize = 32;

/// Counters of one direction pair, as a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Superpackets read from the TUN.
    pub out_superpackets: u64,
    /// Datagrams they became.
    pub out_segments: u64,
    /// Frames dropped on the way out (malformed, no peer yet, send failed).
    pub out_drops: u64,
    /// Datagrams received.
    pub in_datagrams: u64,
    /// Packets the framer let through and that were written to the TUN.
    pub in_packets: u64,
    /// Datagrams the framer dropped.
    pub in_drops: u64,
    /// The TUN's counters.
    pub tun: TunStats,
    /// The socket's counters.
    pub udp: UdpStats,
}

#[derive(Default)]
struct Counters {
    out_superpackets: AtomicU64,
    out_segments: AtomicU64,
    out_drops: AtomicU64,
    in_datagrams: AtomicU64,
    in_packets: AtomicU64,
    in_drops: AtomicU64,
}

fn bump(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

struct Shared {
    tun: Arc<Tun>,
    udp: Arc<UdpSocket>,
    framer: Arc<dyn Framer>,
    /// The fixed peer, or the last source a datagram was accepted from.
    peer: RwLock<Option<SocketAddr>>,
    learn_peer: bool,
    counters: Counters,
}

impl Shared {
    fn peer(&self) -> Option<SocketAddr> {
        *self.peer.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running tunnel. Dropping it does not stop it: call [`Tunnel::stop`].
pub struct Tunnel {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), IoError>>>,
}

impl Tunnel {
    /// Starts both directions on the current tokio runtime. With `peer` `None`, outbound traffic goes to
    /// the source of the last datagram the framer accepted (and is dropped until there is one).
    pub fn start(tun: Arc<Tun>, udp: Arc<UdpSocket>, peer: Option<SocketAddr>, framer: Arc<dyn Framer>) -> Tunnel {
        let shared = Arc::new(Shared {
            tun,
            udp,
            framer,
            peer: RwLock::new(peer),
            learn_peer: peer.is_none(),
            counters: Counters::default(),
        });
        let stop = watch::Sender::new(false);
        let mut tasks = Vec::new();
        for q in shared.tun.queues() {
            tasks.push(tokio::spawn(until_stopped(stop.subscribe(), outbound(shared.clone(), q.clone()))));
        }
        tasks.push(tokio::spawn(until_stopped(stop.subscribe(), inbound(shared.clone()))));
        Tunnel { shared, stop, tasks }
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> TunnelStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TunnelStats {
            out_superpackets: get(&c.out_superpackets),
            out_segments: get(&c.out_segments),
            out_drops: get(&c.out_drops),
            in_datagrams: get(&c.in_datagrams),
            in_packets: get(&c.in_packets),
            in_drops: get(&c.in_drops),
            tun: self.shared.tun.stats(),
            udp: self.shared.udp.stats(),
        }
    }

    /// Stops both directions and waits for them. Returns the first error that ended a direction early
    /// (a closed device or socket is not an error).
    pub async fn stop(&mut self) -> Result<(), IoError> {
        self.stop.send_replace(true);
        let mut first = Ok(());
        for t in self.tasks.drain(..) {
            let r = t.await.unwrap_or_else(|e| Err(IoError::new(ErrorKind::Os, format!("tunnel task failed: {e}"))));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

async fn until_stopped(
    mut stop: watch::Receiver<bool>,
    run: impl std::future::Future<Output = Result<(), IoError>>,
) -> Result<(), IoError> {
    let r = tokio::select! {
        biased;
        _ = stop.wait_for(|s| *s) => Ok(()),
        r = run => r,
    };
    match r {
        Err(e) if e.kind == ErrorKind::Closed => Ok(()),
        r => r,
    }
}

/// TUN queue → split + seal → GSO send.
async fn outbound(shared: Arc<Shared>, queue: Arc<TunQueue>) -> Result<(), IoError> {
    let mut buf = vec![0u8; VNET_HDR_LEN + 65_535];
    let mut out = Outbound::new(shared.framer.clone());
    let c = &shared.counters;
    loop {
        let n = queue.read_frame(&mut buf).await?;
        bump(&c.out_superpackets, 1);
        let Some(peer) = shared.peer() else {
            bump(&c.out_drops, 1);
            continue;
        };
        let prepared = match out.prepare(&buf[..n]) {
            Ok(p) => p,
            Err(_) => {
                bump(&c.out_drops, 1);
                continue;
            }
        };
        let segments = prepared.segments;
        match shared.udp.send_segments(peer, prepared.bytes, prepared.segment_size).await {
            Ok(()) => bump(&c.out_segments, segments),
            Err(e) if e.kind == ErrorKind::Closed => return Err(e),
            // A send the network refuses (no route, buffer full after retries) drops this superpacket only.
            Err(_) => bump(&c.out_drops, 1),
        }
    }
}

/// GRO receive → open → coalesce → TUN write.
async fn inbound(shared: Arc<Shared>) -> Result<(), IoError> {
    let Some(queue) = shared.tun.queues().first().cloned() else {
        return Err(IoError::new(ErrorKind::InvalidArgument, "the TUN has no queue"));
    };
    let mut batch = RecvBatch::new(RECV_MESSAGES);
    let mut scratch = WriteScratch::new();
    let c = &shared.counters;
    loop {
        shared.udp.recv_batch(&mut batch).await?;
        let mut packets: Vec<&[u8]> = Vec::with_capacity(RECV_MESSAGES * 8);
        let mut last_source = None;
        for (meta, msg) in batch.iter_mut() {
            let stride = if meta.stride == 0 { msg.len().max(1) } else { meta.stride };
            let opened = open_datagrams(&*shared.framer, msg.chunks_mut(stride), &mut packets);
            bump(&c.in_datagrams, opened.packets + opened.dropped);
            bump(&c.in_drops, opened.dropped);
            if opened.packets > 0 {
                last_source = Some(meta.addr);
            }
        }
        if shared.learn_peer && last_source.is_some() && last_source != shared.peer() {
            *shared.peer.write().unwrap_or_else(PoisonError::into_inner) = last_source;
        }
        if packets.is_empty() {
            continue;
        }
        // Invalid and refused packets are skipped (the TUN counts them by reason); an error means the
        // queue itself failed.
        let written = queue.write_packets(&packets, &mut scratch).await?;
        bump(&c.in_packets, written.written_packets);
        bump(&c.in_drops, written.dropped());
    }
}
