//! UDP socket: GSO sends, GRO receives, IPv6 and dual-stack, batches, close, and the GSO fallback on a
//! veth whose sender lacks TX checksum offload. Traffic stays on loopback or inside test namespaces.

mod common;

use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use superpacket_io::error::ErrorKind;
use superpacket_io::udp::{RecvBatch, UdpCaps, UdpOptions, UdpSocket, UdpStats, MAX_SEGMENTS};

/// How long any test waits for traffic that should arrive.
const DEADLINE: Duration = Duration::from_secs(5);

fn options(local: &str, gso: bool, gro: bool) -> UdpOptions {
    let local: SocketAddr = local.parse().expect("test address");
    UdpOptions { gso, gro, ..UdpOptions::new(local) }
}

fn bind(local: &str, gso: bool, gro: bool) -> UdpSocket {
    UdpSocket::bind(&options(local, gso, gro)).expect("bind")
}

/// Datagram `index` of `len` bytes: the index in the first 4 bytes, then a pattern that differs per
/// datagram, so reordering, loss, duplication and corruption all show.
fn datagram(index: usize, len: usize) -> Vec<u8> {
    let mut d: Vec<u8> = (0..len).map(|j| (index * 31 + j * 7) as u8).collect();
    let tag = (index as u32).to_be_bytes();
    let n = len.min(4);
    d[..n].copy_from_slice(&tag[..n]);
    d
}

/// `count` datagrams numbered from `first`, `segment` bytes each except a last of `last_len`, back to back.
fn train(first: usize, count: usize, segment: usize, last_len: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let datagrams: Vec<Vec<u8>> =
        (0..count).map(|i| datagram(first + i, if i + 1 == count { last_len } else { segment })).collect();
    (datagrams.concat(), datagrams)
}

/// Receives until `want` datagrams arrived or the deadline passed, then checks that nothing more is queued.
async fn recv_datagrams(socket: &UdpSocket, want: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut batch = RecvBatch::new(16);
    let mut got = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.recv_batch(&mut batch)).await {
            Ok(result) => assert!(result.expect("recv_batch") > 0),
            Err(_) => break,
        }
        got.extend(batch.datagrams().map(|(addr, d)| (addr, d.to_vec())));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(socket.try_recv_batch(&mut batch).expect("try_recv_batch"), 0, "more datagrams than sent");
    got
}

fn assert_received(got: &[(SocketAddr, Vec<u8>)], from: SocketAddr, want: &[Vec<u8>]) {
    assert_eq!(got.len(), want.len(), "datagram count");
    for (i, ((addr, d), w)) in got.iter().zip(want).enumerate() {
        assert_eq!(*addr, from, "sender of datagram {i}");
        assert!(d == w, "datagram {i} differs: {} bytes, want {}", d.len(), w.len());
    }
}

#[tokio::test]
async fn gso_send_of_64_segments_arrives_as_64_datagrams() {
    let tx = bind("127.0.0.1:0", true, false);
    let rx = bind("127.0.0.1:0", false, false);
    assert_eq!(tx.caps(), UdpCaps { gso: true, max_segments: MAX_SEGMENTS, gro: false }, "kernel 4.18+ has GSO");
    let (buf, want) = train(0, 64, 1200, 1200);

    tx.send_segments(rx.local_addr(), &buf, 1200).await.expect("send_segments");
    let got = recv_datagrams(&rx, 64).await;

    assert_received(&got, tx.local_addr(), &want);
    // 64 x 1,200 B exceed the 65,507 B IPv4 limit of one send: 54 + 10 segments.
    let stats = tx.stats();
    assert_eq!((stats.tx_gso_sends, stats.tx_syscalls, stats.tx_datagrams), (2, 2, 64));
    assert_eq!(stats.tx_bytes, 64 * 1200);
    let stats = rx.stats();
    assert_eq!((stats.rx_datagrams, stats.rx_bytes, stats.rx_gro_batches), (64, 64 * 1200, 0));
}

#[tokio::test]
async fn gro_receive_of_a_gso_burst_reports_the_stride() {
    let tx = bind("127.0.0.1:0", true, false);
    let rx = bind("127.0.0.1:0", false, true);
    assert!(rx.caps().gro, "kernel 5.0+ has UDP_GRO");
    let (buf, want) = train(0, 40, 1200, 700);

    tx.send_segments(rx.local_addr(), &buf, 1200).await.expect("send_segments");
    let mut batch = RecvBatch::new(8);
    let mut metas = Vec::new();
    let mut got = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while got.len() < want.len() && Instant::now() < deadline {
        let n = tokio::time::timeout(DEADLINE, rx.recv_batch(&mut batch)).await.expect("timely").expect("recv");
        assert_eq!(n, batch.len());
        metas.extend_from_slice(batch.metas());
        got.extend(batch.datagrams().map(|(addr, d)| (addr, d.to_vec())));
    }

    assert_received(&got, tx.local_addr(), &want);
    assert!(metas.iter().all(|m| m.stride == 1200), "strides: {metas:?}");
    assert!(metas.iter().any(|m| m.len > m.stride), "nothing was coalesced: {metas:?}");
    assert_eq!(metas.iter().map(|m| m.len).sum::<usize>(), 39 * 1200 + 700);
    let stats = rx.stats();
    assert_eq!(stats.rx_datagrams, 40);
    assert_eq!(stats.rx_gro_batches, metas.iter().filter(|m| m.len > m.stride).count() as u64);
}

#[tokio::test]
async fn ipv6_loopback_gso_send() {
    let tx = bind("[::1]:0", true, false);
    let rx = bind("[::1]:0", false, false);
    let (buf, want) = train(100, 20, 1000, 999);

    tx.send_segments(rx.local_addr(), &buf, 1000).await.expect("send_segments");

    assert_received(&recv_datagrams(&rx, 20).await, tx.local_addr(), &want);
    assert_eq!(tx.stats().tx_gso_sends, 1);
}

#[tokio::test]
async fn dual_stack_socket_reports_ipv4_peers_as_ipv4() {
    let dual = bind("[::]:0", true, true);
    let v4 = bind("127.0.0.1:0", true, false);
    let dual_at = SocketAddr::from(([127, 0, 0, 1], dual.local_addr().port()));
    let (buf, want) = train(0, 3, 500, 500);

    v4.send_segments(dual_at, &buf, 500).await.expect("send to the dual-stack socket");
    let got = recv_datagrams(&dual, 3).await;
    assert_received(&got, v4.local_addr(), &want);
    assert!(got[0].0.is_ipv4());

    // Replying to the IPv4 address it reported goes out as IPv4-mapped and arrives from 127.0.0.1.
    dual.send_segments(got[0].0, &buf, 500).await.expect("reply from the dual-stack socket");
    assert_received(&recv_datagrams(&v4, 3).await, dual_at, &want);
}

#[tokio::test]
async fn send_batch_to_two_destinations_keeps_each_order() {
    let tx = bind("127.0.0.1:0", true, false);
    let (a, b) = (bind("127.0.0.1:0", false, false), bind("127.0.0.1:0", false, false));
    let datagrams: Vec<Vec<u8>> = (0..10).map(|i| datagram(i, [0, 1, 300, 1472, 9000][i % 5])).collect();
    let msgs: Vec<(SocketAddr, &[u8])> = datagrams
        .iter()
        .enumerate()
        .map(|(i, d)| (if i % 2 == 0 { a.local_addr() } else { b.local_addr() }, d.as_slice()))
        .collect();

    tx.send_batch(&msgs).await.expect("send_batch");

    let want_a: Vec<Vec<u8>> = datagrams.iter().step_by(2).cloned().collect();
    let want_b: Vec<Vec<u8>> = datagrams.iter().skip(1).step_by(2).cloned().collect();
    assert_received(&recv_datagrams(&a, 5).await, tx.local_addr(), &want_a);
    assert_received(&recv_datagrams(&b, 5).await, tx.local_addr(), &want_b);
    let stats = tx.stats();
    assert_eq!((stats.tx_datagrams, stats.tx_syscalls, stats.tx_gso_sends), (10, 1, 0));
    assert_eq!(stats.tx_bytes, datagrams.iter().map(|d| d.len() as u64).sum::<u64>());
}

#[tokio::test]
async fn without_gso_a_train_goes_out_with_sendmmsg() {
    let tx = bind("127.0.0.1:0", false, false);
    let rx = bind("127.0.0.1:0", false, false);
    assert_eq!(tx.caps(), UdpCaps { gso: false, max_segments: 1, gro: false });
    let (buf, want) = train(0, 70, 100, 42);

    assert_eq!(tx.try_send_segments(rx.local_addr(), &buf, 100).expect("try_send_segments"), buf.len());

    assert_received(&recv_datagrams(&rx, 70).await, tx.local_addr(), &want);
    let stats = tx.stats();
    // sendmmsg takes at most 64 messages per call.
    assert_eq!((stats.tx_datagrams, stats.tx_syscalls, stats.tx_gso_sends, stats.gso_fallbacks), (70, 2, 0, 0));
}

/// Sends `lengths` with one `try_send_lengths` and checks the receiver got exactly those datagrams, in
/// order; returns the sender's counters.
async fn send_lengths_exactly(lengths: &[u32]) -> UdpStats {
    let tx = bind("127.0.0.1:0", true, false);
    let rx = bind("127.0.0.1:0", false, false);
    let want: Vec<Vec<u8>> = lengths.iter().enumerate().map(|(i, &l)| datagram(i, l as usize)).collect();
    let buf = want.concat();
    assert_eq!(tx.try_send_lengths(rx.local_addr(), &buf, lengths).expect("try_send_lengths"), lengths.len());
    assert_received(&recv_datagrams(&rx, lengths.len()).await, tx.local_addr(), &want);
    tx.stats()
}

#[tokio::test]
async fn send_lengths_sends_a_run_and_its_shorter_tail_as_one_train() {
    // Trains: 3 x 1,000 + 500; 800, 800 + 100; 1,300 + 50. Alone: 700, 300, 1,200 and the last 50.
    let lengths = [1000, 1000, 1000, 500, 700, 800, 800, 100, 300, 1200, 1300, 50, 50];
    let s = send_lengths_exactly(&lengths).await;
    assert_eq!((s.tx_datagrams, s.tx_syscalls, s.tx_gso_sends), (13, 1, 3), "7 messages in one sendmmsg");
    assert_eq!(s.tx_bytes, lengths.iter().map(|&l| u64::from(l)).sum::<u64>());
}

#[tokio::test]
async fn send_lengths_of_alternating_sizes_pairs_them_into_trains() {
    let lengths: Vec<u32> = (0..64).map(|i| if i % 2 == 0 { 1400 } else { 1300 }).collect();
    let s = send_lengths_exactly(&lengths).await;
    assert_eq!((s.tx_datagrams, s.tx_syscalls, s.tx_gso_sends), (64, 1, 32));
}

#[tokio::test]
async fn send_lengths_cuts_trains_at_64_segments_and_at_the_payload_limit() {
    // 70 x 100 + 50: 64, then 6 + the tail. 47 x 1,400: 46 fill one IPv4 payload, the 47th goes alone.
    let mut lengths = vec![100; 70];
    lengths.push(50);
    let s = send_lengths_exactly(&lengths).await;
    assert_eq!((s.tx_datagrams, s.tx_syscalls, s.tx_gso_sends), (71, 1, 2));
    let s = send_lengths_exactly(&[1400; 47]).await;
    assert_eq!((s.tx_datagrams, s.tx_syscalls, s.tx_gso_sends), (47, 1, 1));
}

#[tokio::test]
async fn invalid_arguments_are_refused() {
    let v4 = bind("127.0.0.1:0", true, true);
    let to = v4.local_addr();
    for (segment, why) in [(0, "zero segment"), (65_508, "segment over the IPv4 payload limit")] {
        let err = v4.send_segments(to, &[0; 10], segment).await.expect_err(why);
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{why}");
    }
    let err = v4.send_segments("[::1]:9".parse().expect("addr"), &[0; 10], 10).await.expect_err("IPv6 dest");
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    let opts = UdpOptions { only_v6: Some(true), ..options("127.0.0.1:0", true, true) };
    assert_eq!(UdpSocket::bind(&opts).err().map(|e| e.kind), Some(ErrorKind::InvalidArgument));
    // An empty train sends nothing.
    v4.send_segments(to, &[], 1200).await.expect("empty train");
    assert_eq!(v4.stats(), UdpStats::default());
}

#[test]
fn bind_outside_a_runtime_is_an_error_not_a_panic() {
    let err = UdpSocket::bind(&options("127.0.0.1:0", true, true)).err().expect("no runtime");
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_a_pending_receive_promptly() {
    let socket = Arc::new(bind("127.0.0.1:0", true, true));
    let pending = tokio::spawn({
        let socket = Arc::clone(&socket);
        async move {
            let mut batch = RecvBatch::new(4);
            socket.recv_batch(&mut batch).await.map(|_| ())
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished(), "recv_batch returned with nothing sent");

    let closed_at = Instant::now();
    socket.close();
    let result = tokio::time::timeout(Duration::from_secs(1), pending).await.expect("ended within 1 s");
    assert_eq!(result.expect("task").err().map(|e| e.kind), Some(ErrorKind::Closed));
    assert!(closed_at.elapsed() < Duration::from_millis(500));

    let mut batch = RecvBatch::new(1);
    assert_eq!(socket.recv_batch(&mut batch).await.err().map(|e| e.kind), Some(ErrorKind::Closed));
    assert_eq!(socket.try_recv_batch(&mut batch).err().map(|e| e.kind), Some(ErrorKind::Closed));
    let err = socket.send_segments(socket.local_addr(), &[1; 8], 4).await.err();
    assert_eq!(err.map(|e| e.kind), Some(ErrorKind::Closed));
    socket.close();
}

/// How the path from namespace a to b is set up for a veth run.
#[derive(Clone, Copy, Default)]
struct VethCase {
    /// `ethtool -K va tx off`: no TX checksum offload on the sending device.
    tx_off: bool,
    /// MTU of `va`, below the segment size when set.
    mtu: Option<u32>,
    /// SO_NO_CHECK on the sending socket: the kernel refuses GSO without UDP checksums (EINVAL).
    no_udp_checksum: bool,
}

/// What the sender in namespace a saw, and what namespace b received.
struct VethRun {
    caps_before: UdpCaps,
    caps_after_first: UdpCaps,
    caps_after: UdpCaps,
    stats_after_first: UdpStats,
    stats: UdpStats,
    from: SocketAddr,
    got: Vec<(SocketAddr, Vec<u8>)>,
    want: Vec<Vec<u8>>,
}

const BURSTS: usize = 5;
const SEGMENTS: usize = 40;
const SEGMENT: usize = 1200;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// SO_NO_CHECK (include/uapi/asm-generic/socket.h); libc only has it for some targets.
const SO_NO_CHECK: libc::c_int = 11;

/// Switches UDP checksums off on this process's socket bound to `local`, found by its address (the API
/// does not hand out the descriptor). The address is unique: it exists only in the test's namespace.
fn disable_udp_checksums(local: SocketAddr) {
    let found = (3..4096).find(|&fd| {
        // SAFETY: sockaddr_storage is plain data; all-zero is valid. getsockname below writes at most
        // `len` bytes into it, and fails on descriptors that are not sockets.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: as above; the storage and len outlive the call.
        let rc = unsafe { libc::getsockname(fd, std::ptr::addr_of_mut!(storage).cast(), &mut len) };
        if rc != 0 || libc::c_int::from(storage.ss_family) != libc::AF_INET {
            return false;
        }
        // SAFETY: the family is AF_INET, so the storage holds a sockaddr_in.
        let sin = unsafe { &*std::ptr::addr_of!(storage).cast::<libc::sockaddr_in>() };
        let addr = SocketAddr::from((u32::from_be(sin.sin_addr.s_addr).to_be_bytes(), u16::from_be(sin.sin_port)));
        addr == local
    });
    let fd = found.expect("the sending socket's descriptor");
    let one: libc::c_int = 1;
    // SAFETY: a c_int option value with its size, on an open socket.
    let rc = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, SO_NO_CHECK, std::ptr::addr_of!(one).cast(), 4) };
    assert_eq!(rc, 0, "SO_NO_CHECK: {}", std::io::Error::last_os_error());
}

/// Sends BURSTS GSO trains of SEGMENTS x SEGMENT bytes from 198.18.1.1 (namespace a) to a GRO socket at
/// 198.18.1.2 (namespace b) over a veth set up as `case` says.
fn gso_over_veth(tag: &str, case: VethCase) -> VethRun {
    let pair = common::VethPair::new(tag, &["198.18.1.1/24"], &["198.18.1.2/24"]);
    if case.tx_off {
        pair.a.exec(&["ethtool", "-K", "va", "tx", "off"]);
    }
    if let Some(mtu) = case.mtu {
        pair.a.exec(&["ip", "link", "set", "va", "mtu", &mtu.to_string()]);
    }
    let (addr_tx, addr_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            pair.b.run(move || {
                runtime().block_on(async move {
                    let rx = bind("198.18.1.2:0", false, true);
                    addr_tx.send(rx.local_addr()).expect("report the address");
                    recv_datagrams(&rx, BURSTS * SEGMENTS).await
                })
            })
        });
        let dest = addr_rx.recv_timeout(DEADLINE).expect("receiver bound");
        let mut run = pair.a.run(move || {
            runtime().block_on(async move {
                let tx = bind("198.18.1.1:0", true, false);
                if case.no_udp_checksum {
                    disable_udp_checksums(tx.local_addr());
                }
                let caps_before = tx.caps();
                let mut want = Vec::new();
                let mut after_first = None;
                for burst in 0..BURSTS {
                    let (buf, datagrams) = train(burst * SEGMENTS, SEGMENTS, SEGMENT, SEGMENT);
                    tx.send_segments(dest, &buf, SEGMENT).await.expect("send_segments");
                    want.extend(datagrams);
                    after_first.get_or_insert((tx.caps(), tx.stats()));
                }
                let (caps_after_first, stats_after_first) = after_first.expect("one burst sent");
                VethRun {
                    caps_before,
                    caps_after_first,
                    caps_after: tx.caps(),
                    stats_after_first,
                    stats: tx.stats(),
                    from: tx.local_addr(),
                    got: Vec::new(),
                    want,
                }
            })
        });
        run.got = receiver.join().expect("receiver thread");
        eprintln!(
            "{tag}: after the first burst {:?} {:?}; at the end {:?}; received {}",
            run.caps_after_first,
            run.stats_after_first,
            run.stats,
            run.got.len()
        );
        run
    })
}

/// The running kernel's (major, minor).
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Asserts the run fell back: the first GSO send was refused, GSO went off for good, and the same
/// datagrams went out one by one, all arriving once and in order.
fn assert_fell_back(run: &VethRun) {
    assert!(run.caps_before.gso, "GSO probed on before the first send");
    assert!(!run.caps_after_first.gso, "the first burst switched GSO off");
    assert_eq!(run.stats_after_first.gso_fallbacks, 1);
    // The first datagram alone, then the other 39 in one sendmmsg.
    assert_eq!(run.stats_after_first.tx_syscalls, 2);
    assert_eq!(run.stats_after_first.tx_datagrams, SEGMENTS as u64);
    assert_eq!(run.caps_after, UdpCaps { gso: false, max_segments: 1, gro: false });
    assert_eq!((run.stats.gso_fallbacks, run.stats.tx_gso_sends), (1, 0));
    assert_eq!(run.stats.tx_datagrams, (BURSTS * SEGMENTS) as u64);
    assert_received(&run.got, run.from, &run.want);
}

#[test]
fn gso_refused_with_einval_falls_back_once_without_loss() {
    if !common::privileged("gso_refused_with_einval_falls_back_once_without_loss") {
        return;
    }
    let run = gso_over_veth("inval", VethCase { no_udp_checksum: true, ..VethCase::default() });
    assert_fell_back(&run);
}

#[test]
fn gso_on_a_device_without_tx_checksum_offload() {
    if !common::privileged("gso_on_a_device_without_tx_checksum_offload") {
        return;
    }
    let run = gso_over_veth("txoff", VethCase { tx_off: true, ..VethCase::default() });
    if kernel_version() >= (6, 11) {
        // Since 6.11 the kernel checksums GSO trains in software instead of refusing them with EIO.
        assert!(run.caps_after.gso);
        assert_eq!((run.stats.gso_fallbacks, run.stats.tx_gso_sends), (0, BURSTS as u64));
        assert_received(&run.got, run.from, &run.want);
    } else {
        assert_fell_back(&run);
    }
}

#[test]
fn gso_with_segments_above_the_mtu_resends_that_train_and_keeps_gso() {
    if !common::privileged("gso_with_segments_above_the_mtu_resends_that_train_and_keeps_gso") {
        return;
    }
    let run = gso_over_veth("mtu", VethCase { mtu: Some(1000), ..VethCase::default() });
    assert!(run.caps_after.gso, "EMSGSIZE concerns the train, not the socket");
    assert_eq!((run.stats.gso_fallbacks, run.stats.tx_gso_sends), (0, 0));
    assert_eq!(run.stats.tx_datagrams, (BURSTS * SEGMENTS) as u64);
    // Fragmented on the way, reassembled in namespace b.
    assert_received(&run.got, run.from, &run.want);
}

#[test]
fn gso_over_veth_with_checksum_offload_stays_on() {
    if !common::privileged("gso_over_veth_with_checksum_offload_stays_on") {
        return;
    }
    let run = gso_over_veth("gso", VethCase::default());
    assert!(run.caps_after.gso);
    assert_eq!((run.stats.gso_fallbacks, run.stats.tx_gso_sends), (0, BURSTS as u64));
    assert_received(&run.got, run.from, &run.want);
}

/// The reactor watches a socket only from its first native wait for datagrams on: datagrams that were
/// queued before that wait (and before any registration) must still wake it, and so must later ones.
#[tokio::test]
async fn a_first_wait_finds_datagrams_queued_before_it_and_later_waits_find_new_ones() {
    let rx = bind("127.0.0.1:0", false, false);
    let tx = bind("127.0.0.1:0", false, false);
    tx.try_send_to(rx.local_addr(), b"before").expect("send");
    // Let the datagram reach the queue before the wait registers the socket.
    tokio::time::sleep(Duration::from_millis(20)).await;
    tokio::time::timeout(DEADLINE, rx.wait_readable())
        .await
        .expect("the first wait missed a queued datagram")
        .expect("wait");
    let got = recv_datagrams(&rx, 1).await;
    assert_eq!(got[0].1, b"before");
    for i in 0..3u8 {
        let wait = rx.wait_readable();
        let send = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tx.try_send_to(rx.local_addr(), &[i]).expect("send");
        };
        let (woke, ()) = tokio::join!(tokio::time::timeout(DEADLINE, wait), send);
        woke.expect("a later wait missed its datagram").expect("wait");
        assert_eq!(recv_datagrams(&rx, 1).await[0].1, [i]);
    }
}
