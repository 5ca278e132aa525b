//! A two-way tunnel between a TUN and a UDP socket that runs with no caller code per packet.
//!
//! One task per TUN queue reads superpackets, splits them straight into framed datagrams and sends them
//! with GSO; one task receives GRO batches, opens them and writes coalesced superpackets to the TUN.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use superpacket_core::framer::{Control, DropCounters, DropReason, Framer, Sealed, POLL_INTERVAL_MS};
use superpacket_core::MAX_SEGMENTS;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::datapath::{open_batch, Outbound, SourceFilter, Trains};
use crate::error::{ErrorKind, IoError};
use crate::tun::{Planned, Tun, TunQueue, TunStats, WriteScratch, MIN_READ_BUF};
use crate::udp::{RecvBatch, UdpSocket, UdpStats, RECV_BUFFER_SIZE};

/// Messages per receive system call; each holds up to 64 KiB with GRO.
const RECV_MESSAGES: usize = 32;

/// Where a tunnel sends, for framers that do not pick endpoints themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerConfig {
    /// The other endpoint. With a framer that authenticates nothing, datagrams from any other address
    /// are dropped ([`DropReason::WrongSource`]) unless `learn` is set.
    pub peer: Option<SocketAddr>,
    /// Move the peer to the source of every datagram the framer accepts (and start without one). With a
    /// plaintext framer anyone who can send a datagram can then redirect the tunnel: use an encrypting
    /// framer on untrusted networks.
    pub learn: bool,
}

/// Counters of one direction pair, as a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Superpackets read from the TUN.
    pub out_superpackets: u64,
    /// Datagrams they became.
    pub out_segments: u64,
    /// Superpackets not sent (malformed, no peer, refused by the framer, send failed).
    pub out_drops: u64,
    /// Why superpackets were not sent (a failed send counts as `no-route`).
    pub out_drop_reasons: Vec<(DropReason, u64)>,
    /// Superpackets a framer held for a handshake.
    pub out_held: u64,
    /// Control datagrams sent (handshakes, cookies, keepalives, packets released after a handshake).
    pub control_sent: u64,
    /// Datagrams received.
    pub in_datagrams: u64,
    /// Packets the framer let through and that were written to the TUN.
    pub in_packets: u64,
    /// Datagrams dropped on the way in (by the framer, the source check or the TUN write).
    pub in_drops: u64,
    /// Why datagrams were dropped on the way in.
    pub in_drop_reasons: Vec<(DropReason, u64)>,
    /// The TUN's counters.
    pub tun: TunStats,
    /// The socket's counters.
    pub udp: UdpStats,
}

#[derive(Default)]
struct Counters {
    out_superpackets: AtomicU64,
    out_segments: AtomicU64,
    out_held: AtomicU64,
    control_sent: AtomicU64,
    in_datagrams: AtomicU64,
    in_packets: AtomicU64,
    out_drops: DropCounters,
    in_drops: DropCounters,
}

fn bump(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

struct Shared {
    tun: Arc<Tun>,
    udp: Arc<UdpSocket>,
    framer: Arc<dyn Framer>,
    /// The transport's peer (unused when the framer routes).
    peer: RwLock<Option<SocketAddr>>,
    learn_peer: bool,
    counters: Counters,
}

impl Shared {
    fn peer(&self) -> Option<SocketAddr> {
        *self.peer.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Which sources the inbound direction accepts.
    fn source_filter(&self) -> SourceFilter {
        match self.peer() {
            Some(peer) if !self.learn_peer && !self.framer.routes() => SourceFilter::Only(peer),
            _ => SourceFilter::Any,
        }
    }

    /// Prepares one frame read from the TUN after those already in `out` and adds it to `trains`, or
    /// counts why it is not sent.
    fn stage(&self, out: &mut Outbound, frame: &[u8], plan: Planned, trains: &mut Trains, control: &mut Control) {
        let c = &self.counters;
        bump(&c.out_superpackets, 1);
        let appended = match out.prepare_append_planned(frame, plan, control) {
            Ok(a) => a,
            Err(e) => {
                let reason =
                    if e.kind == ErrorKind::Exhausted { DropReason::Exhausted } else { DropReason::InvalidPacket };
                c.out_drops.add(reason, 1);
                return;
            }
        };
        let dest = match appended.sealed {
            Sealed::To(addr) => addr,
            Sealed::ToPeer => match self.peer() {
                Some(peer) => peer,
                None => return c.out_drops.add(DropReason::NoRoute, 1),
            },
            Sealed::Held => return bump(&c.out_held, 1),
            Sealed::Dropped(reason) => return c.out_drops.add(reason, 1),
        };
        trains.push(dest, &appended);
    }

    /// Sends what the framer queued; a send that fails costs only that control datagram.
    async fn send_control(&self, control: &mut Control) -> Result<(), IoError> {
        for (to, bytes) in control.drain() {
            match self.udp.send_batch(&[(to, &bytes[..])]).await {
                Ok(()) => bump(&self.counters.control_sent, 1),
                Err(e) if e.kind == ErrorKind::Closed => return Err(e),
                Err(_) => self.counters.out_drops.add(DropReason::NoRoute, 1),
            }
        }
        Ok(())
    }
}

/// How a tunnel ended: `None` while it runs.
type Outcome = Option<Result<(), IoError>>;

/// A running tunnel. Dropping it does not stop it: call [`Tunnel::stop`].
pub struct Tunnel {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    finished: watch::Receiver<Outcome>,
}

impl Tunnel {
    /// Starts both directions (one task per TUN queue out, one in, one for the framer's timers) on the
    /// current tokio runtime. When one direction fails, the others stop too and [`Tunnel::closed`]
    /// reports the error.
    ///
    /// Fails with [`ErrorKind::InvalidArgument`] when the framer does not route and there is neither a
    /// peer nor peer learning.
    pub fn start(
        tun: Arc<Tun>,
        udp: Arc<UdpSocket>,
        framer: Arc<dyn Framer>,
        peer: PeerConfig,
    ) -> Result<Tunnel, IoError> {
        if !framer.routes() && peer.peer.is_none() && !peer.learn {
            return Err(IoError::new(
                ErrorKind::InvalidArgument,
                "the tunnel needs a peer, or learnPeer: true to answer whoever sends (this framer does not route)",
            ));
        }
        let shared = Arc::new(Shared {
            tun,
            udp,
            framer,
            peer: RwLock::new(peer.peer),
            learn_peer: peer.learn,
            counters: Counters::default(),
        });
        let stop = watch::Sender::new(false);
        let mut tasks: Vec<JoinHandle<Result<(), IoError>>> = Vec::new();
        for q in shared.tun.queues() {
            tasks.push(tokio::spawn(supervised(stop.clone(), outbound(shared.clone(), q.clone()))));
        }
        tasks.push(tokio::spawn(supervised(stop.clone(), inbound(shared.clone()))));
        tasks.push(tokio::spawn(supervised(stop.clone(), timers(shared.clone()))));
        let (done, finished) = watch::channel(None);
        tokio::spawn(async move {
            let mut first = Ok(());
            for t in tasks {
                let r =
                    t.await.unwrap_or_else(|e| Err(IoError::new(ErrorKind::Os, format!("tunnel task failed: {e}"))));
                if first.is_ok() {
                    first = r;
                }
            }
            done.send_replace(Some(first));
        });
        Ok(Tunnel { shared, stop, finished })
    }

    /// The framer in use.
    pub fn framer(&self) -> &Arc<dyn Framer> {
        &self.shared.framer
    }

    /// The peer datagrams go to now (for framers that do not route).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.shared.peer()
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> TunnelStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TunnelStats {
            out_superpackets: get(&c.out_superpackets),
            out_segments: get(&c.out_segments),
            out_drops: c.out_drops.total(),
            out_drop_reasons: c.out_drops.snapshot(),
            out_held: get(&c.out_held),
            control_sent: get(&c.control_sent),
            in_datagrams: get(&c.in_datagrams),
            in_packets: get(&c.in_packets),
            in_drops: c.in_drops.total(),
            in_drop_reasons: c.in_drops.snapshot(),
            tun: self.shared.tun.stats(),
            udp: self.shared.udp.stats(),
        }
    }

    /// Whether the tunnel still runs (false once stopped or failed).
    pub fn is_running(&self) -> bool {
        self.finished.borrow().is_none()
    }

    /// Waits until the tunnel has stopped: `Ok` after [`Tunnel::stop`], the error that ended it otherwise
    /// (a closed device or socket is not an error).
    pub async fn closed(&self) -> Result<(), IoError> {
        let mut finished = self.finished.clone();
        let outcome = finished.wait_for(|o| o.is_some()).await.map(|o| o.clone());
        match outcome {
            Ok(Some(r)) => r,
            _ => Err(IoError::new(ErrorKind::Os, "the tunnel's supervisor ended without a result")),
        }
    }

    /// Stops every direction and waits for them. Returns the first error that ended a direction early.
    pub async fn stop(&self) -> Result<(), IoError> {
        self.stop.send_replace(true);
        self.closed().await
    }
}

/// Runs `run` until the tunnel stops; an error (other than a closed device or socket) stops the tunnel.
async fn supervised(
    stop: watch::Sender<bool>,
    run: impl std::future::Future<Output = Result<(), IoError>>,
) -> Result<(), IoError> {
    let mut stopped = stop.subscribe();
    let r = tokio::select! {
        biased;
        _ = stopped.wait_for(|s| *s) => Ok(()),
        r = run => r,
    };
    let r = match r {
        Err(e) if e.kind == ErrorKind::Closed => Ok(()),
        r => r,
    };
    if r.is_err() {
        stop.send_replace(true);
    }
    r
}

/// Packets read per wakeup when the TUN hands out single packets (no TSO): one GSO train's worth.
const READ_BATCH: usize = MAX_SEGMENTS;

/// TUN queue → split + seal → GSO send. Without TSO each read is one packet: whatever else is ready is
/// read too (up to [`READ_BATCH`]), and runs of equal-size packets to one peer leave as one GSO train.
async fn outbound(shared: Arc<Shared>, queue: Arc<TunQueue>) -> Result<(), IoError> {
    let mut buf = vec![0u8; MIN_READ_BUF];
    let mut out = Outbound::new(shared.framer.clone());
    let mut trains = Trains::default();
    let mut control = Control::new();
    let offloads = shared.tun.offloads();
    let batch = if offloads.tso4 || offloads.tso6 { 1 } else { READ_BATCH };
    let c = &shared.counters;
    loop {
        out.clear();
        trains.clear();
        queue
            .read_frames(&mut buf, batch, |frame, plan| shared.stage(&mut out, frame, plan, &mut trains, &mut control))
            .await?;
        for t in trains.iter() {
            let Some(bytes) = out.prepared(t.range.clone()) else { continue };
            match shared.udp.send_segments(t.dest, bytes, t.segment_size).await {
                Ok(()) => bump(&c.out_segments, t.segments),
                Err(e) if e.kind == ErrorKind::Closed => return Err(e),
                // A send the network refuses (no route, buffer full after retries) drops this train only.
                Err(_) => c.out_drops.add(DropReason::NoRoute, 1),
            }
        }
        if !control.is_empty() {
            shared.send_control(&mut control).await?;
        }
    }
}

/// GRO receive → open → coalesce → TUN write.
async fn inbound(shared: Arc<Shared>) -> Result<(), IoError> {
    let Some(queue) = shared.tun.queues().first().cloned() else {
        return Err(IoError::new(ErrorKind::InvalidArgument, "the TUN has no queue"));
    };
    let mut batch = RecvBatch::new(RECV_MESSAGES);
    let mut scratch = vec![0u8; batch.capacity() * RECV_BUFFER_SIZE];
    let mut write = WriteScratch::new();
    let mut control = Control::new();
    let c = &shared.counters;
    loop {
        shared.udp.recv_batch(&mut batch).await?;
        let mut packets: Vec<&[u8]> = Vec::with_capacity(RECV_MESSAGES * 8);
        let datagrams = batch.iter_mut().flat_map(|(meta, msg)| {
            let stride = if meta.stride == 0 { msg.len().max(1) } else { meta.stride };
            let from = meta.addr;
            msg.chunks_mut(stride).map(move |d| (from, d))
        });
        let report = open_batch(
            &*shared.framer,
            shared.source_filter(),
            datagrams,
            &mut scratch,
            &mut packets,
            &mut control,
            &c.in_drops,
        );
        bump(&c.in_datagrams, report.packets + report.consumed + report.dropped);
        if shared.learn_peer && report.last_source.is_some() && report.last_source != shared.peer() {
            *shared.peer.write().unwrap_or_else(PoisonError::into_inner) = report.last_source;
        }
        if !control.is_empty() {
            shared.send_control(&mut control).await?;
        }
        if packets.is_empty() {
            continue;
        }
        // Invalid and refused packets are skipped (the TUN counts them by reason); an error means the
        // queue itself failed.
        let written = queue.write_packets(&packets, &mut write).await?;
        bump(&c.in_packets, written.written_packets);
        c.in_drops.add(DropReason::InvalidPacket, written.dropped() as u64);
    }
}

/// The framer's timers: handshake retries, rekeying, keepalives, with no caller code involved.
async fn timers(shared: Arc<Shared>) -> Result<(), IoError> {
    let mut tick = tokio::time::interval(Duration::from_millis(POLL_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut control = Control::new();
    loop {
        tick.tick().await;
        shared.framer.poll(&mut control);
        if !control.is_empty() {
            shared.send_control(&mut control).await?;
        }
    }
}
