//! Every fallback and error branch of the TUN and UDP paths, driven by injected system-call failures
//! (`superpacket_io::fault`), each checked by what arrives: the packets or datagrams that must get through
//! are counted and compared byte for byte, not just "no error".
//!
//! The fault plan is process-wide, so these tests live in a binary of their own and run one at a time.
//! TUN tests make their own namespaces (198.18.0.0/15 only); UDP tests use loopback.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::packets::{ip_packet, UDP};
use common::Netns;
use superpacket_io::error::{ErrorKind, OUT_OF_BUFFERS_RETRIES};
use superpacket_io::fault::{self, Syscall};
use superpacket_io::tun::{
    OffloadMode, Tun, TunOptions, WriteScratch, GSO_PROBE_AFTER_FRAMES, GSO_REFUSALS_BEFORE_OFF, MIN_READ_BUF,
};
use superpacket_io::udp::{RecvBatch, UdpOptions, UdpSocket};

/// How long a test waits for traffic that should arrive.
const DEADLINE: Duration = Duration::from_secs(5);

/// One test at a time, with an empty fault plan before and after.
struct Serial(#[allow(dead_code)] MutexGuard<'static, ()>);

fn serial() -> Serial {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    fault::clear();
    Serial(guard)
}

impl Drop for Serial {
    fn drop(&mut self) {
        fault::clear();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

// ---- TUN ------------------------------------------------------------------------------------------

/// The TUN's address; packets are written as if from `PEER` to a UDP socket bound here, so the kernel
/// delivers them locally and the test receives them.
const TUN_ADDR: [u8; 4] = [198, 18, 70, 1];
const PEER: [u8; 4] = [198, 18, 70, 2];
const SINK_PORT: u16 = 7000;

/// A UDP packet from PEER to the sink carrying `payload`, from source port `sport`.
fn udp_packet(sport: u16, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut uh = [0u8; 8];
    uh[0..2].copy_from_slice(&sport.to_be_bytes());
    uh[2..4].copy_from_slice(&SINK_PORT.to_be_bytes());
    ip_packet(&PEER, &TUN_ADDR, UDP, id, &uh, payload)
}

/// Payload `i` of a test: its index then a pattern, so loss, reordering and corruption all show.
fn payload(i: usize, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|j| (i * 13 + j * 7) as u8).collect();
    p[..4].copy_from_slice(&(i as u32).to_be_bytes());
    p
}

/// `n` datagrams of one flow (they coalesce into one GSO frame where the TUN has USO), payloads
/// `first..first + n`.
fn one_flow(first: usize, n: usize) -> Vec<Vec<u8>> {
    (first..first + n).map(|i| udp_packet(40_000, i as u16, &payload(i, 1000))).collect()
}

/// A TUN with TUN_ADDR and a blocking UDP sink bound there, in the calling thread's namespace.
fn tun_and_sink(offload: OffloadMode) -> (Tun, std::net::UdpSocket) {
    let tun = Tun::open(&TunOptions {
        name: Some("spfault0".into()),
        ipv4: Some((Ipv4Addr::from(TUN_ADDR), 24)),
        offload,
        ..TunOptions::default()
    })
    .expect("open tun");
    let sink = std::net::UdpSocket::bind((Ipv4Addr::from(TUN_ADDR), SINK_PORT)).expect("bind sink");
    // Room for every datagram of a test: they are written before any is read.
    let size: libc::c_int = 32 << 20;
    // SAFETY: a c_int option value with its size, on an open socket.
    let rc = unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(sink.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, std::ptr::addr_of!(size).cast(), 4)
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    sink.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    (tun, sink)
}

/// Receives until `want` payloads arrived or nothing came for DEADLINE.
fn drain_sink(sink: &std::net::UdpSocket, want: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let mut idle = Duration::ZERO;
    while got.len() < want && idle < DEADLINE {
        match sink.recv(&mut buf) {
            Ok(n) => {
                got.push(buf[..n].to_vec());
                idle = Duration::ZERO;
            }
            Err(_) => idle += Duration::from_millis(200),
        }
    }
    got
}

/// Runs `f` with a runtime, a TUN (offloads as the kernel grants them) and a sink in a fresh namespace.
fn with_tun<T: Send + 'static>(
    tag: &str,
    f: impl FnOnce(&tokio::runtime::Runtime, Tun, std::net::UdpSocket) -> T + Send + 'static,
) -> T {
    with_tun_in_mode(tag, OffloadMode::Auto, f)
}

fn with_tun_in_mode<T: Send + 'static>(
    tag: &str,
    mode: OffloadMode,
    f: impl FnOnce(&tokio::runtime::Runtime, Tun, std::net::UdpSocket) -> T + Send + 'static,
) -> T {
    let ns = Netns::new(tag);
    ns.run(move || {
        let rt = runtime();
        let (tun, sink) = {
            let _enter = rt.enter();
            tun_and_sink(mode)
        };
        f(&rt, tun, sink)
    })
}

#[test]
fn invalid_and_refused_packets_are_skipped_and_the_rest_of_the_batch_arrives() {
    if !common::privileged("invalid_and_refused_packets_are_skipped_and_the_rest_of_the_batch_arrives") {
        return;
    }
    let _serial = serial();
    // With IFF_VNET_HDR (frames) and without (bare packets): the two write loops.
    for mode in [OffloadMode::Auto, OffloadMode::Off] {
        with_tun_in_mode("fi", mode, invalid_and_refused_packets_case);
    }
}

fn invalid_and_refused_packets_case(rt: &tokio::runtime::Runtime, tun: Tun, sink: std::net::UdpSocket) {
    {
        // Distinct source ports: every packet is a frame of its own, so one refusal is one packet.
        let good: Vec<Vec<u8>> = (0..12).map(|i| udp_packet(41_000 + i as u16, i as u16, &payload(i, 300))).collect();
        let mut truncated = good[0].clone();
        truncated.truncate(100); // total length says 328
        let mut short_header = good[1].clone();
        short_header[0] = 0x44; // IHL 4: header below 20 bytes
        let mut padded = good[2].clone();
        padded.extend_from_slice(&[0xee; 16]); // padding after the packet: cut off, not dropped
        let garbage: [&[u8]; 5] = [&[0x17, 0x03, 0x03, 0, 5], &[], &truncated, &short_header, &[0x60; 39]];
        let mut batch: Vec<&[u8]> = Vec::new();
        for (i, p) in good.iter().enumerate() {
            batch.push(if i == 2 { &padded } else { p });
            if let Some(g) = garbage.get(i) {
                batch.push(g);
            }
        }
        // The kernel refuses the first frame it is given (a good packet): only that one is lost.
        fault::inject(Syscall::TunWrite, libc::EINVAL, 1);
        let q = &tun.queues()[0];
        let report = rt.block_on(q.write_packets(&batch, &mut WriteScratch::new())).expect("write_packets");
        assert_eq!(
            (report.written_packets, report.dropped_invalid, report.dropped_refused),
            (good.len() - 1, garbage.len(), 1)
        );
        let got = drain_sink(&sink, good.len() - 1);
        let want: Vec<Vec<u8>> = (1..good.len()).map(|i| payload(i, 300)).collect();
        assert_eq!(got, want, "every good packet after the refused one, intact and in order");
        let s = tun.stats();
        assert_eq!((s.tx_drops_invalid, s.tx_drops_refused, s.tx_drops), (5, 1, 6));
    }
}

#[test]
fn a_refused_gso_frame_is_split_and_resent_and_coalescing_stays_on() {
    if !common::privileged("a_refused_gso_frame_is_split_and_resent_and_coalescing_stays_on") {
        return;
    }
    let _serial = serial();
    with_tun("fg", |rt, tun, sink| {
        assert!(tun.offloads().uso4 && tun.coalescing_enabled(), "this test needs USO (Linux 6.2+)");
        let q = &tun.queues()[0];
        let mut scratch = WriteScratch::new();
        fault::inject(Syscall::TunWrite, libc::EINVAL, 1);
        let report = rt.block_on(q.write_packets(&one_flow(0, 20), &mut scratch)).expect("write_packets");
        assert_eq!((report.written_packets, report.dropped()), (20, 0));
        let s = tun.stats();
        assert_eq!((s.tx_fallbacks, s.tx_gso_refusals, s.tx_gso_disabled), (1, 1, 0));
        assert_eq!(s.tx_syscalls, 1 + 20, "the refused frame, then its packets one by one");
        assert!(tun.coalescing_enabled(), "one refusal does not switch coalescing off");
        // The next batch is coalesced again: one write for 20 packets.
        rt.block_on(q.write_packets(&one_flow(20, 20), &mut scratch)).expect("write_packets");
        assert_eq!(tun.stats().tx_syscalls, 1 + 20 + 1);
        let got = drain_sink(&sink, 40);
        assert_eq!(got, (0..40).map(|i| payload(i, 1000)).collect::<Vec<_>>());
        // A GSO frame whose packets the kernel refuses one by one as well was bad, not GSO: it is dropped
        // and counted, and GSO is not blamed.
        fault::inject(Syscall::TunWrite, libc::EINVAL, 11);
        let report = rt.block_on(q.write_packets(&one_flow(40, 10), &mut scratch)).expect("write_packets");
        assert_eq!((report.written_packets, report.dropped_refused), (0, 10));
        assert_eq!(tun.stats().tx_gso_refusals, 1);
        assert!(tun.coalescing_enabled());
    });
}

#[test]
fn repeated_gso_refusals_switch_coalescing_off_until_a_later_probe() {
    if !common::privileged("repeated_gso_refusals_switch_coalescing_off_until_a_later_probe") {
        return;
    }
    let _serial = serial();
    with_tun("fr", |rt, tun, sink| {
        assert!(tun.offloads().uso4, "this test needs USO (Linux 6.2+)");
        let q = &tun.queues()[0];
        let mut scratch = WriteScratch::new();
        let mut sent = 0;
        let mut write = |n: usize| {
            let r = rt.block_on(q.write_packets(&one_flow(sent, n), &mut scratch)).expect("write_packets");
            assert_eq!((r.written_packets, r.dropped()), (n, 0));
            sent += n;
        };
        let refusals = GSO_REFUSALS_BEFORE_OFF as usize;
        for _ in 0..refusals {
            // Each batch is one GSO frame; the fault refuses it, and its packets then go through.
            fault::inject(Syscall::TunWrite, libc::EINVAL, 1);
            write(10);
        }
        assert!(!tun.coalescing_enabled());
        assert_eq!((tun.stats().tx_gso_refusals, tun.stats().tx_gso_disabled), (refusals as u64, 1));
        // With coalescing off every packet is a frame; after GSO_PROBE_AFTER_FRAMES of them it is back.
        let syscalls = tun.stats().tx_syscalls;
        write(GSO_PROBE_AFTER_FRAMES as usize / 2);
        assert!(!tun.coalescing_enabled());
        write(GSO_PROBE_AFTER_FRAMES as usize / 2);
        assert_eq!(tun.stats().tx_syscalls - syscalls, GSO_PROBE_AFTER_FRAMES, "one write per packet while off");
        assert!(tun.coalescing_enabled(), "probed again");
        assert_eq!(tun.stats().tx_gso_reenabled, 1);
        // A refusal of the probing frame switches coalescing off again at once ...
        fault::inject(Syscall::TunWrite, libc::EINVAL, 1);
        write(10);
        assert!(!tun.coalescing_enabled());
        assert_eq!(tun.stats().tx_gso_disabled, 2);
        // ... until the next probe, which the kernel takes: coalescing is back for good.
        write(GSO_PROBE_AFTER_FRAMES as usize);
        assert_eq!(tun.stats().tx_gso_reenabled, 2);
        let syscalls = tun.stats().tx_syscalls;
        write(10);
        write(10);
        assert_eq!(tun.stats().tx_syscalls - syscalls, 2, "coalesced again after the probe");
        assert!(tun.coalescing_enabled());
        let got = drain_sink(&sink, sent);
        assert_eq!(got.len(), sent, "every packet arrived");
        assert_eq!(got, (0..sent).map(|i| payload(i, 1000)).collect::<Vec<_>>());
    });
}

#[test]
fn a_tun_write_out_of_buffers_is_retried_and_a_broken_queue_is_an_error() {
    if !common::privileged("a_tun_write_out_of_buffers_is_retried_and_a_broken_queue_is_an_error") {
        return;
    }
    let _serial = serial();
    with_tun("fb", |rt, tun, sink| {
        let q = &tun.queues()[0];
        let mut scratch = WriteScratch::new();
        fault::inject(Syscall::TunWrite, libc::ENOBUFS, 3);
        let r = rt.block_on(q.write_packets(&one_flow(0, 10), &mut scratch)).expect("write_packets");
        assert_eq!((r.written_packets, r.dropped()), (10, 0), "ENOBUFS is waited out, not a drop");
        // EIO (a device that is down) is the queue's failure, not one packet's: an error, no drop counted.
        fault::inject(Syscall::TunWrite, libc::EIO, 1);
        let err = rt.block_on(q.write_packets(&one_flow(10, 10), &mut scratch)).expect_err("EIO must surface");
        assert_eq!((err.kind, err.errno), (ErrorKind::Os, Some(libc::EIO)));
        assert_eq!(tun.stats().tx_drops, 0);
        rt.block_on(q.write_packets(&one_flow(20, 10), &mut scratch)).expect("the queue works again");
        let got = drain_sink(&sink, 20);
        let want: Vec<Vec<u8>> = (0..10).chain(20..30).map(|i| payload(i, 1000)).collect();
        assert_eq!(got, want);
    });
}

#[test]
fn a_failed_tun_read_loses_no_frame() {
    if !common::privileged("a_failed_tun_read_loses_no_frame") {
        return;
    }
    let _serial = serial();
    with_tun("fd", |rt, tun, _sink| {
        let q = &tun.queues()[0];
        let out = std::net::UdpSocket::bind((Ipv4Addr::from(TUN_ADDR), 0)).expect("bind");
        // Routed into the TUN (the peer is on its subnet): the queue has a frame to read.
        let mut buf = vec![0u8; MIN_READ_BUF];
        let marker = b"read me once";
        out.send_to(marker, SocketAddr::from((PEER, 9000))).expect("send_to");
        let is_marker = |frame: &[u8]| frame.ends_with(marker);
        fault::inject(Syscall::TunRead, libc::EAGAIN, 1);
        assert_eq!(q.try_read_frame(&mut buf).expect("EAGAIN is no frame yet"), None);
        fault::inject(Syscall::TunRead, libc::EIO, 1);
        let err = rt.block_on(q.read_frame(&mut buf)).expect_err("EIO must surface");
        assert_eq!((err.kind, err.errno), (ErrorKind::Os, Some(libc::EIO)));
        // The frame the failed reads did not take is still there (skip anything else the stack sent).
        let found = rt.block_on(async {
            for _ in 0..20 {
                let n = tokio::time::timeout(DEADLINE, q.read_frame(&mut buf)).await.ok()?.ok()?;
                if is_marker(&buf[..n]) {
                    return Some(());
                }
            }
            None
        });
        assert!(found.is_some(), "the frame was lost");
    });
}

/// A read that fails in the middle of a `read_frames` batch ends the batch without an error, after the
/// frames already handed over, and takes no frame: the next batch starts with the frame it did not take.
#[test]
fn a_failed_read_within_a_batch_ends_it_and_loses_no_frame() {
    if !common::privileged("a_failed_read_within_a_batch_ends_it_and_loses_no_frame") {
        return;
    }
    let _serial = serial();
    with_tun("fb", |rt, tun, _sink| {
        let q = &tun.queues()[0];
        let out = std::net::UdpSocket::bind((Ipv4Addr::from(TUN_ADDR), 0)).expect("bind");
        let markers: Vec<Vec<u8>> = (0..3).map(|i| format!("batch frame {i}").into_bytes()).collect();
        for m in &markers {
            out.send_to(m, SocketAddr::from((PEER, 9000))).expect("send_to");
        }
        let which = |frame: &[u8]| markers.iter().position(|m| frame.ends_with(m));
        let mut buf = vec![0u8; MIN_READ_BUF];
        let mut seen = Vec::new();
        let mut armed = false;
        let mut first_batch = None;
        rt.block_on(async {
            for _ in 0..20 {
                if seen.len() == markers.len() {
                    break;
                }
                let mut batch = Vec::new();
                let n = tokio::time::timeout(
                    DEADLINE,
                    q.read_frames(&mut buf, 8, |frame, _| {
                        if let Some(i) = which(frame) {
                            batch.push(i);
                            if !armed {
                                // The read right after our first frame fails.
                                fault::inject(Syscall::TunRead, libc::EIO, 1);
                                armed = true;
                            }
                        }
                    }),
                )
                .await
                .expect("frames within the deadline")
                .expect("a read failing after the first frame is not the batch's error");
                assert!(n >= batch.len());
                if armed && first_batch.is_none() {
                    first_batch = Some(batch.clone());
                }
                seen.extend(batch);
            }
        });
        assert_eq!(fault::pending(Syscall::TunRead), 0, "the injected failure was not met");
        assert_eq!(first_batch, Some(vec![0]), "the batch went on past the failed read");
        assert_eq!(seen, vec![0, 1, 2], "every frame once, in order");
    });
}

#[test]
fn a_tun_write_out_of_buffers_past_the_retries_drops_that_packet_only() {
    if !common::privileged("a_tun_write_out_of_buffers_past_the_retries_drops_that_packet_only") {
        return;
    }
    let _serial = serial();
    with_tun("fo", |rt, tun, sink| {
        let q = &tun.queues()[0];
        // Distinct source ports: a frame each. The first meets one ENOBUFS more than the retries allow.
        let packets: Vec<Vec<u8>> = (0..5).map(|i| udp_packet(42_000 + i as u16, i as u16, &payload(i, 200))).collect();
        fault::inject(Syscall::TunWrite, libc::ENOBUFS, OUT_OF_BUFFERS_RETRIES + 1);
        let r = rt.block_on(q.write_packets(&packets, &mut WriteScratch::new())).expect("write_packets");
        assert_eq!((r.written_packets, r.dropped_refused), (4, 1));
        assert_eq!(drain_sink(&sink, 4), (1..5).map(|i| payload(i, 200)).collect::<Vec<_>>());
    });
}

#[test]
fn gso_writes_refused_at_open_stay_off_and_nothing_is_lost() {
    if !common::privileged("gso_writes_refused_at_open_stay_off_and_nothing_is_lost") {
        return;
    }
    let _serial = serial();
    // The start-up probe writes a GSO frame; refused there, the kernel will not take GSO writes at all.
    fault::inject(Syscall::TunWrite, libc::EINVAL, 1);
    with_tun("fp", |rt, tun, sink| {
        assert_eq!(fault::pending(Syscall::TunWrite), 0, "the probe took the fault");
        assert!(!tun.coalescing_enabled());
        let q = &tun.queues()[0];
        let n = GSO_PROBE_AFTER_FRAMES as usize + 10;
        let r = rt.block_on(q.write_packets(&one_flow(0, n), &mut WriteScratch::new())).expect("write_packets");
        assert_eq!((r.written_packets, r.dropped()), (n, 0));
        assert!(!tun.coalescing_enabled(), "no later probe when the open-time probe was refused");
        assert_eq!((tun.stats().tx_syscalls, tun.stats().tx_gso_reenabled), (n as u64, 0));
        assert_eq!(drain_sink(&sink, n), (0..n).map(|i| payload(i, 1000)).collect::<Vec<_>>());
    });
}

// ---- UDP ------------------------------------------------------------------------------------------

const SEGMENTS: usize = 40;
const SEGMENT: usize = 1200;

fn bind(local: &str, gso: bool) -> UdpSocket {
    let local: SocketAddr = local.parse().expect("test address");
    UdpSocket::bind(&UdpOptions { gso, gro: false, ..UdpOptions::new(local) }).expect("bind")
}

/// A train of `n` datagrams of SEGMENT bytes whose payloads are `payload(first..first + n)`.
fn train(first: usize, n: usize) -> Vec<u8> {
    (first..first + n).flat_map(|i| payload(i, SEGMENT)).collect()
}

/// Receives until `want` datagrams arrived or DEADLINE passed.
async fn recv_all(socket: &UdpSocket, want: usize) -> Vec<Vec<u8>> {
    let mut batch = RecvBatch::new(16);
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while got.len() < want {
        match tokio::time::timeout_at(deadline, socket.recv_batch(&mut batch)).await {
            Ok(r) => r.expect("recv_batch"),
            Err(_) => break,
        };
        got.extend(batch.datagrams().map(|(_, d)| d.to_vec()));
    }
    got
}

fn expected(first: usize, n: usize) -> Vec<Vec<u8>> {
    (first..first + n).map(|i| payload(i, SEGMENT)).collect()
}

#[test]
fn gso_send_failing_with_eio_falls_back_for_good_and_every_datagram_arrives() {
    let _serial = serial();
    runtime().block_on(async {
        let (tx, rx) = (bind("127.0.0.1:0", true), bind("127.0.0.1:0", false));
        assert!(tx.caps().gso);
        fault::inject(Syscall::SendGso, libc::EIO, 1);
        tx.send_segments(rx.local_addr(), &train(0, SEGMENTS), SEGMENT).await.expect("send");
        assert!(!tx.caps().gso, "EIO: the socket cannot segment");
        assert_eq!(tx.stats().gso_fallbacks, 1);
        tx.send_segments(rx.local_addr(), &train(SEGMENTS, SEGMENTS), SEGMENT).await.expect("send");
        assert_eq!(recv_all(&rx, 2 * SEGMENTS).await, expected(0, 2 * SEGMENTS));
        assert_eq!(tx.stats().tx_datagrams, 2 * SEGMENTS as u64, "nothing sent twice");
    });
}

#[test]
fn send_lengths_whose_train_fails_with_eio_falls_back_and_every_datagram_arrives() {
    let _serial = serial();
    runtime().block_on(async {
        let (tx, rx) = (bind("127.0.0.1:0", true), bind("127.0.0.1:0", false));
        // Two trains of 1,200 B datagrams with a 600 B tail each: the first GSO send is refused.
        let lengths = [1200u32, 1200, 1200, 600, 1200, 1200, 600];
        let want: Vec<Vec<u8>> = lengths.iter().enumerate().map(|(i, &l)| payload(i, l as usize)).collect();
        fault::inject(Syscall::SendGso, libc::EIO, 1);
        assert_eq!(tx.try_send_lengths(rx.local_addr(), &want.concat(), &lengths).expect("send"), lengths.len());
        assert!(!tx.caps().gso, "EIO: the socket cannot segment");
        assert_eq!((tx.stats().gso_fallbacks, tx.stats().tx_gso_sends), (1, 0));
        assert_eq!(recv_all(&rx, lengths.len()).await, want);
        assert_eq!(tx.stats().tx_datagrams, lengths.len() as u64, "nothing sent twice");
    });
}

#[test]
fn gso_send_failing_with_einval_within_the_path_mtu_switches_gso_off() {
    let _serial = serial();
    runtime().block_on(async {
        // Loopback's MTU (65,536) is far above the segments: EINVAL is the socket's, not the train's.
        let (tx, rx) = (bind("127.0.0.1:0", true), bind("127.0.0.1:0", false));
        fault::inject(Syscall::SendGso, libc::EINVAL, 1);
        tx.send_segments(rx.local_addr(), &train(0, SEGMENTS), SEGMENT).await.expect("send");
        assert!(!tx.caps().gso);
        assert_eq!((tx.stats().gso_fallbacks, tx.stats().gso_train_fallbacks), (1, 0));
        assert_eq!(recv_all(&rx, SEGMENTS).await, expected(0, SEGMENTS));
    });
}

#[test]
fn gso_send_failing_with_einval_above_the_path_mtu_resends_the_train_and_keeps_gso() {
    if !common::privileged("gso_send_failing_with_einval_above_the_path_mtu_resends_the_train_and_keeps_gso") {
        return;
    }
    let _serial = serial();
    let ns = Netns::new("fm");
    // Segments of 1,200 bytes over a loopback of MTU 1,000: some kernels answer such a GSO send with
    // EINVAL (this one says EMSGSIZE; the fault stands in for the others). Both must be the train's.
    ns.exec(&["ip", "link", "set", "lo", "mtu", "1000"]);
    ns.run(|| {
        runtime().block_on(async {
            let (tx, rx) = (bind("127.0.0.1:0", true), bind("127.0.0.1:0", false));
            for (i, errno) in [libc::EINVAL, libc::EMSGSIZE].into_iter().enumerate() {
                fault::inject(Syscall::SendGso, errno, 1);
                tx.send_segments(rx.local_addr(), &train(i * SEGMENTS, SEGMENTS), SEGMENT).await.expect("send");
                assert!(tx.caps().gso, "errno {errno}: GSO stays on");
            }
            let s = tx.stats();
            assert_eq!((s.gso_fallbacks, s.gso_train_fallbacks), (0, 2));
            assert_eq!(recv_all(&rx, 2 * SEGMENTS).await, expected(0, 2 * SEGMENTS), "fragmented, reassembled");
        })
    });
}

#[test]
fn sends_out_of_buffers_or_would_block_are_retried_not_dropped() {
    let _serial = serial();
    runtime().block_on(async {
        let rx = bind("127.0.0.1:0", false);
        let gso = bind("127.0.0.1:0", true);
        fault::inject(Syscall::SendGso, libc::EAGAIN, 1);
        fault::inject(Syscall::SendGso, libc::ENOBUFS, 2);
        gso.send_segments(rx.local_addr(), &train(0, SEGMENTS), SEGMENT).await.expect("send");
        assert!(gso.caps().gso, "out of buffers says nothing about GSO");
        assert_eq!((gso.stats().tx_out_of_buffers, gso.stats().tx_gso_sends), (2, 1));

        let plain = bind("127.0.0.1:0", false);
        fault::inject(Syscall::SendMmsg, libc::ENOBUFS, 2);
        fault::inject(Syscall::SendMmsg, libc::EAGAIN, 1);
        plain.send_segments(rx.local_addr(), &train(SEGMENTS, SEGMENTS), SEGMENT).await.expect("send");
        let msgs: Vec<Vec<u8>> = expected(2 * SEGMENTS, 10);
        let batch: Vec<(SocketAddr, &[u8])> = msgs.iter().map(|m| (rx.local_addr(), m.as_slice())).collect();
        fault::inject(Syscall::SendMmsg, libc::ENOBUFS, 1);
        plain.send_batch(&batch).await.expect("send_batch");
        // The synchronous send reports out of buffers as a full socket: nothing sent, no error.
        fault::inject(Syscall::SendGso, libc::ENOBUFS, 1);
        let sent = gso.try_send_segments(rx.local_addr(), &train(0, 2), SEGMENT).expect("try_send_segments");
        assert_eq!(sent, 0);
        assert_eq!(recv_all(&rx, 2 * SEGMENTS + 10).await, expected(0, 2 * SEGMENTS + 10));
    });
}

#[test]
fn eperm_on_a_send_is_an_os_error_with_its_errno_and_no_cap_net_admin_advice() {
    let _serial = serial();
    runtime().block_on(async {
        let (tx, rx) = (bind("127.0.0.1:0", false), bind("127.0.0.1:0", false));
        fault::inject(Syscall::SendMmsg, libc::EPERM, 1);
        let err = tx.send_segments(rx.local_addr(), &train(0, 4), SEGMENT).await.expect_err("EPERM must surface");
        assert_eq!((err.kind, err.errno, err.code()), (ErrorKind::Os, Some(libc::EPERM), "ERR_SUPERPACKET_OS"));
        assert!(!err.message.contains("CAP_NET_ADMIN"), "{}", err.message);
        // The socket goes on: the next send arrives whole.
        tx.send_segments(rx.local_addr(), &train(4, 4), SEGMENT).await.expect("send");
        assert_eq!(recv_all(&rx, 4).await, expected(4, 4));
    });
}

#[test]
fn a_failed_receive_loses_no_queued_datagram() {
    let _serial = serial();
    runtime().block_on(async {
        let (tx, rx) = (bind("127.0.0.1:0", false), bind("127.0.0.1:0", false));
        tx.send_segments(rx.local_addr(), &train(0, 8), SEGMENT).await.expect("send");
        let mut batch = RecvBatch::new(16);
        fault::inject(Syscall::RecvMmsg, libc::EAGAIN, 1);
        assert_eq!(rx.try_recv_batch(&mut batch).expect("EAGAIN is nothing yet"), 0);
        fault::inject(Syscall::RecvMmsg, libc::EIO, 1);
        let err = rx.recv_batch(&mut batch).await.expect_err("EIO must surface");
        assert_eq!((err.kind, err.errno), (ErrorKind::Os, Some(libc::EIO)));
        assert_eq!(recv_all(&rx, 8).await, expected(0, 8), "still queued after the failed receives");
    });
}

#[test]
fn a_gso_refusal_whose_single_datagram_also_fails_is_an_error_and_keeps_gso() {
    let _serial = serial();
    runtime().block_on(async {
        let (tx, rx) = (bind("127.0.0.1:0", true), bind("127.0.0.1:0", false));
        // EIO on the GSO send, then EIO on the lone datagram: the path is at fault, not segmentation.
        fault::inject(Syscall::SendGso, libc::EIO, 1);
        fault::inject(Syscall::SendMmsg, libc::EIO, 1);
        let err = tx.send_segments(rx.local_addr(), &train(0, 8), SEGMENT).await.expect_err("EIO must surface");
        assert_eq!(err.errno, Some(libc::EIO));
        assert!(tx.caps().gso, "GSO is not blamed");
        assert_eq!(tx.stats().gso_fallbacks, 0);
        tx.send_segments(rx.local_addr(), &train(8, 8), SEGMENT).await.expect("send");
        assert_eq!(recv_all(&rx, 8).await, expected(8, 8), "nothing of the failed train went out twice");
    });
}

#[test]
fn a_send_out_of_buffers_past_the_retries_is_an_error() {
    let _serial = serial();
    runtime().block_on(async {
        let (tx, rx) = (bind("127.0.0.1:0", false), bind("127.0.0.1:0", false));
        fault::inject(Syscall::SendMmsg, libc::ENOBUFS, OUT_OF_BUFFERS_RETRIES + 1);
        let err = tx.send_segments(rx.local_addr(), &train(0, 4), SEGMENT).await.expect_err("ENOBUFS must surface");
        assert_eq!(err.errno, Some(libc::ENOBUFS));
        assert_eq!(tx.stats().tx_out_of_buffers, u64::from(OUT_OF_BUFFERS_RETRIES));
        tx.send_segments(rx.local_addr(), &train(4, 4), SEGMENT).await.expect("send");
        assert_eq!(recv_all(&rx, 4).await, expected(4, 4));
    });
}
