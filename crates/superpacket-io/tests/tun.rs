//! TUN device tests against the real kernel. Every test makes its own network namespaces (removed on
//! drop) and opens its devices inside them, so the host's network is never touched. Addresses come from
//! 198.18.0.0/15 and 2001:db8::/32 only.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::packets::{ip_packet, l4_checksum, l4_info, TCP, UDP};
use common::{Netns, VethPair};
use superpacket_core::coalesce::{CoalesceOptions, Coalescer, Frames};
use superpacket_core::{checksum, split, GsoKind, VirtioNetHdr, VNET_HDR_LEN};
use superpacket_io::error::ErrorKind;
use superpacket_io::tun::{OffloadMode, Tun, TunOptions, WriteScratch, MIN_READ_BUF};

/// Tests count file descriptors of the whole process, so they run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` in a current-thread tokio runtime on a thread inside `ns`.
fn in_ns<T, F, Fut>(ns: &Netns, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(f())
    })
}

fn opts(offload: OffloadMode) -> TunOptions {
    TunOptions { name: Some("sptun0".into()), offload, ..TunOptions::default() }
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd").count()
}

fn tun_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.as_os_str() == "/dev/net/tun")
        .count()
}

/// `ethtool -k` of a device in `ns`: feature name -> on.
fn ethtool_features(ns: &str, dev: &str) -> HashMap<String, bool> {
    let out = Command::new("ip").args(["netns", "exec", ns, "ethtool", "-k", dev]).output().expect("run ethtool");
    assert!(out.status.success(), "ethtool -k failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(": ")?;
            Some((k.to_string(), v.starts_with("on")))
        })
        .collect()
}

#[test]
fn offloads_reported_match_ethtool() {
    if !common::privileged("offloads_reported_match_ethtool") {
        return;
    }
    let _serial = serial();
    for mode in [OffloadMode::Auto, OffloadMode::Off, OffloadMode::On] {
        let ns = Netns::new("toff");
        let name = ns.name.clone();
        let (offloads, features) = in_ns(&ns, move || async move {
            let tun = Tun::open(&TunOptions { ipv4: Some((Ipv4Addr::new(198, 18, 1, 1), 24)), ..opts(mode) })
                .expect("open tun");
            (tun.offloads(), ethtool_features(&name, tun.name()))
        });
        eprintln!("{mode:?}: granted {offloads:?}");
        let f = |k: &str| *features.get(k).unwrap_or_else(|| panic!("ethtool -k has no {k}: {features:?}"));
        assert_eq!(offloads.csum, f("tx-checksumming"), "{mode:?} csum");
        assert_eq!(offloads.tso4, f("tx-tcp-segmentation"), "{mode:?} tso4");
        assert_eq!(offloads.tso6, f("tx-tcp6-segmentation"), "{mode:?} tso6");
        assert_eq!(offloads.tso4 || offloads.tso6, f("tcp-segmentation-offload"), "{mode:?} tso");
        assert_eq!(offloads.uso4 && offloads.uso6, f("tx-udp-segmentation"), "{mode:?} uso");
        match mode {
            OffloadMode::Off => assert_eq!(offloads, Default::default()),
            _ => assert!(offloads.vnet_hdr && offloads.tso4 && offloads.tso6, "{mode:?}: {offloads:?}"),
        }
    }
}

#[test]
fn opens_the_number_of_queues_asked_for() {
    if !common::privileged("opens_the_number_of_queues_asked_for") {
        return;
    }
    let _serial = serial();
    let ns = Netns::new("tq");
    in_ns(&ns, || async {
        let before = tun_fd_count();
        let tun = Tun::open(&TunOptions { queues: 4, ..opts(OffloadMode::Auto) }).expect("open tun");
        assert_eq!(tun.queues().len(), 4);
        assert_eq!(tun_fd_count(), before + 4, "one /dev/net/tun descriptor per queue");
        let mut buf = vec![0u8; MIN_READ_BUF];
        for q in tun.queues() {
            // A valid nonblocking descriptor: it drains to "nothing ready" (the stack may have queued a
            // stray frame such as an MLD report) instead of blocking or failing.
            let drained = (0..100).find(|_| q.try_read_frame(&mut buf).expect("try_read_frame").is_none());
            assert!(drained.is_some(), "queue never ran dry");
            if drained != Some(0) {
                eprintln!("stray frame: {:02x?}", &buf[..64]);
            }
        }
        drop(tun);
        assert_eq!(tun_fd_count(), before, "descriptors closed on drop");
    });
}

// ---- packets ---------------------------------------------------------------------------------------

/// Completes an L4 checksum that a device with TX checksum offload left partial: the field then holds
/// the folded pseudo-header sum, as it travels over veth to the capture. Any other value is left alone.
fn complete_partial_checksum(p: &mut [u8]) {
    let (start, proto, pseudo) = l4_info(p);
    let at = start + if proto == TCP { 16 } else { 6 };
    if u16::from_be_bytes([p[at], p[at + 1]]) == checksum::fold(pseudo) {
        let c = l4_checksum(p);
        p[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// What forwarding one hop does to a packet: TTL or hop limit - 1 and, for IPv4, a new header checksum.
fn forwarded(p: &[u8]) -> Vec<u8> {
    let mut q = p.to_vec();
    if q[0] >> 4 == 4 {
        q[8] -= 1;
        q[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::finish(checksum::sum(&q[..20], 0));
        q[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        q[7] -= 1;
    }
    q
}

/// `n` consecutive TCP segments and `n` UDP datagrams of one flow each, `seg` payload bytes apiece.
fn flows(src: &[u8], dst: &[u8], n: usize, seg: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    for i in 0..n {
        let payload: Vec<u8> = (0..seg).map(|j| (i * 7 + j) as u8).collect();
        let seq = 1_000_000u32 + (i * seg) as u32;
        let mut th = [0u8; 20];
        th[0..2].copy_from_slice(&40_000u16.to_be_bytes());
        th[2..4].copy_from_slice(&5201u16.to_be_bytes());
        th[4..8].copy_from_slice(&seq.to_be_bytes());
        th[8..12].copy_from_slice(&777u32.to_be_bytes());
        th[12] = 5 << 4;
        th[13] = if i + 1 == n { 0x18 } else { 0x10 }; // ACK, PSH on the last
        th[14..16].copy_from_slice(&512u16.to_be_bytes());
        tcp.push(ip_packet(src, dst, TCP, 100 + i as u16, &th, &payload));
        let mut uh = [0u8; 8];
        uh[0..2].copy_from_slice(&40_001u16.to_be_bytes());
        uh[2..4].copy_from_slice(&5202u16.to_be_bytes());
        udp.push(ip_packet(src, dst, UDP, 500 + i as u16, &uh, &payload));
    }
    (tcp, udp)
}

/// An AF_PACKET socket (cooked: IP packets without the link header) bound to `dev` in the calling
/// thread's namespace, with a 100 ms receive timeout.
fn packet_socket(dev: &str) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call; the result is checked before it is owned.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(proto)) };
    assert!(fd >= 0, "socket(AF_PACKET): {}", std::io::Error::last_os_error());
    // SAFETY: fd is a new descriptor nobody else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(dev).unwrap();
    // SAFETY: name is a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(ifindex > 0, "no device {dev}");
    // SAFETY: sockaddr_ll is plain data; zero is a valid value for every field.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
    use std::os::fd::AsRawFd;
    // SAFETY: the pointers and lengths describe live, correctly sized values.
    unsafe {
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        assert_eq!(libc::bind(fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), len), 0, "bind");
        let tl = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
        assert_eq!(
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                tl
            ),
            0
        );
    }
    fd
}

/// Captures IP packets on `dev` whose source is `src`, until `want` arrived or 10 s passed. Sends on
/// `ready` once the socket is bound.
fn capture(dev: &str, src: Vec<u8>, want: usize, ready: mpsc::Sender<()>) -> Vec<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let sock = packet_socket(dev);
    ready.send(()).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 70_000];
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < want && Instant::now() < deadline {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else { continue };
        let p = &buf[..n];
        let from = match p.first().map(|b| b >> 4) {
            Some(4) if n >= 20 => &p[12..16],
            Some(6) if n >= 40 => &p[8..24],
            _ => continue,
        };
        if from == src.as_slice() {
            got.push(p.to_vec());
        }
    }
    got
}

/// Writes TCP and UDP flows from the TUN's subnet to an address routed over a veth without segmentation
/// offload into namespace B, so the kernel segments our GSO frames in software while forwarding; the
/// packets captured in B must be the packets we coalesced, byte for byte, less one hop. With
/// `OffloadMode::Off` the same GSO frames are split by `write_frame` in userspace instead.
fn written_frames_arrive_as_the_original_packets(v6: bool, mode: OffloadMode) {
    let (src, dst): (Vec<u8>, Vec<u8>) = if v6 {
        let s: Ipv6Addr = "2001:db8:10::2".parse().unwrap();
        let d: Ipv6Addr = "2001:db8:20::2".parse().unwrap();
        (s.octets().to_vec(), d.octets().to_vec())
    } else {
        (vec![198, 18, 10, 2], vec![198, 18, 20, 2])
    };
    let pair = VethPair::new("tw", &["198.18.30.1/24", "2001:db8:30::1/64"], &["198.18.30.2/24", "2001:db8:30::2/64"]);
    let a = &pair.a;
    a.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    a.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    // No segmentation offload on the way out (USO is a feature of its own), checksum offload kept.
    a.exec(&["ethtool", "-K", "va", "tso", "off", "gso", "off", "tx-udp-segmentation", "off", "tx", "on"]);
    a.exec(&["ip", "route", "add", "198.18.20.0/24", "via", "198.18.30.2", "dev", "va"]);
    a.exec(&["ip", "-6", "route", "add", "2001:db8:20::/64", "via", "2001:db8:30::2", "dev", "va"]);
    pair.b.exec(&["ethtool", "-K", "vb", "gro", "off"]);

    const N: usize = 20;
    let (tcp, udp) = flows(&src, &dst, N, 1000);
    let input: Vec<Vec<u8>> = tcp.iter().chain(&udp).cloned().collect();

    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let captured = std::thread::scope(|s| {
        let want = input.len();
        let from = src.clone();
        let capturer = s.spawn(move || {
            let got = pair.b.run(move || capture("vb", from, want, ready_tx));
            let _ = done_tx.send(());
            got
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("capture socket ready");
        let packets = input.clone();
        let (frames, stats, coalescing) = in_ns(a, move || async move {
            let tun = Tun::open(&TunOptions {
                ipv4: Some((Ipv4Addr::new(198, 18, 10, 1), 24)),
                ipv6: Some(("2001:db8:10::1".parse().unwrap(), 64)),
                ..opts(mode)
            })
            .expect("open tun");
            let o = tun.offloads();
            let options = match mode {
                OffloadMode::Off => CoalesceOptions { tcp: true, udp: true },
                _ => CoalesceOptions { tcp: o.tso4 && o.tso6, udp: o.uso4 && o.uso6 },
            };
            let mut frames = Frames::new();
            Coalescer::new(options).coalesce(&packets, &mut frames);
            let q = &tun.queues()[0];
            for f in frames.iter() {
                q.write_frame(f).await.expect("write_frame");
            }
            // Keep the device until the capture is done: forwarding runs after the write returns.
            let _ = done_rx.recv_timeout(Duration::from_secs(15));
            let kinds: Vec<GsoKind> = frames.iter().map(|f| VirtioNetHdr::decode(f).unwrap().kind().unwrap()).collect();
            (kinds, tun.stats(), tun.coalescing_enabled())
        });
        eprintln!("v6={v6} {mode:?}: frames {frames:?}, stats {stats:?}");
        assert_eq!(stats.tx_fallbacks, 0);
        assert!(frames.len() < input.len(), "nothing was coalesced: {frames:?}");
        assert_eq!(stats.tx_packets as usize, input.len());
        if mode == OffloadMode::Off {
            assert_eq!(stats.tx_syscalls as usize, input.len(), "split in userspace, one write per packet");
        } else {
            assert!(coalescing, "the kernel refused our GSO frames");
            assert_eq!(stats.tx_syscalls as usize, frames.len(), "one write per frame");
        }
        capturer.join().expect("capture thread")
    });

    let lens: Vec<usize> = captured.iter().map(Vec::len).collect();
    assert_eq!(captured.len(), input.len(), "captured {} of {} packets: lengths {lens:?}", captured.len(), input.len());
    let by_proto = |ps: &[Vec<u8>], proto: u8| -> Vec<Vec<u8>> {
        let hdr_proto = |p: &[u8]| if p[0] >> 4 == 4 { p[9] } else { p[6] };
        ps.iter().filter(|p| hdr_proto(p) == proto).cloned().collect()
    };
    for proto in [TCP, UDP] {
        let want: Vec<Vec<u8>> = by_proto(&input, proto).iter().map(|p| forwarded(p)).collect();
        let mut got = by_proto(&captured, proto);
        got.iter_mut().for_each(|p| complete_partial_checksum(p));
        assert_eq!(got.len(), want.len(), "proto {proto}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "proto {proto} packet {i} differs");
        }
    }
}

#[test]
fn kernel_splits_written_ipv4_frames_into_the_original_packets() {
    if !common::privileged("kernel_splits_written_ipv4_frames_into_the_original_packets") {
        return;
    }
    let _serial = serial();
    written_frames_arrive_as_the_original_packets(false, OffloadMode::Auto);
}

#[test]
fn kernel_splits_written_ipv6_frames_into_the_original_packets() {
    if !common::privileged("kernel_splits_written_ipv6_frames_into_the_original_packets") {
        return;
    }
    let _serial = serial();
    written_frames_arrive_as_the_original_packets(true, OffloadMode::Auto);
}

#[test]
fn without_vnet_hdr_gso_frames_are_split_into_the_original_packets() {
    if !common::privileged("without_vnet_hdr_gso_frames_are_split_into_the_original_packets") {
        return;
    }
    let _serial = serial();
    written_frames_arrive_as_the_original_packets(false, OffloadMode::Off);
    written_frames_arrive_as_the_original_packets(true, OffloadMode::Off);
}

#[test]
fn reads_udp_datagrams_sent_into_the_tun() {
    if !common::privileged("reads_udp_datagrams_sent_into_the_tun") {
        return;
    }
    let _serial = serial();
    for mode in [OffloadMode::Auto, OffloadMode::Off] {
        let ns = Netns::new("tr");
        in_ns(&ns, move || async move {
            let tun = Tun::open(&TunOptions { ipv4: Some((Ipv4Addr::new(198, 18, 40, 1), 24)), ..opts(mode) })
                .expect("open tun");
            let sock = UdpSocket::bind("198.18.40.1:0").expect("bind");
            const COUNT: usize = 5;
            for i in 0..COUNT {
                sock.send_to(&[i as u8; 300], "198.18.40.2:9999").expect("send_to");
            }
            let q = &tun.queues()[0];
            let mut buf = vec![0u8; MIN_READ_BUF];
            let mut seen = 0;
            for _ in 0..50 {
                if seen == COUNT {
                    break;
                }
                let n = tokio::time::timeout(Duration::from_secs(2), q.read_frame(&mut buf))
                    .await
                    .expect("a frame within 2 s")
                    .expect("read_frame");
                let frame = &buf[..n];
                let hdr = VirtioNetHdr::decode(frame).expect("valid virtio header");
                if mode == OffloadMode::Off {
                    assert_eq!(&frame[..VNET_HDR_LEN], &[0; VNET_HDR_LEN], "synthesised header is zero");
                }
                let ip = &frame[VNET_HDR_LEN..];
                if ip.len() < 28 || ip[0] >> 4 != 4 || ip[9] != UDP || ip[22..24] != 9999u16.to_be_bytes() {
                    continue; // something else the stack sent (none expected over IPv4, but be tolerant)
                }
                assert_eq!(hdr.kind().unwrap(), GsoKind::None);
                if hdr.needs_csum() {
                    assert_eq!((hdr.csum_start, hdr.csum_offset), (20, 6));
                }
                let packets = split::split_to_vec(frame).expect("frame splits");
                assert_eq!(packets.len(), 1);
                let p = &packets[0];
                assert_eq!(&p[28..], &[seen as u8; 300][..], "payload of datagram {seen}");
                assert_eq!(u16::from_be_bytes([p[26], p[27]]), l4_checksum(p), "completed UDP checksum");
                seen += 1;
            }
            assert_eq!(seen, COUNT);
            let s = tun.stats();
            assert!(s.rx_frames >= COUNT as u64 && s.rx_segments >= COUNT as u64 && s.rx_syscalls >= COUNT as u64);
        });
    }
}

/// `read_frames` hands over every ready frame (up to its limit) with the plan the read made while
/// counting it, which is what `split::plan` says of the bytes; with USO granted, a UDP_SEGMENT send into
/// the TUN comes out as one frame planned as several datagrams.
#[test]
fn read_frames_hands_each_frame_over_with_its_plan() {
    if !common::privileged("read_frames_hands_each_frame_over_with_its_plan") {
        return;
    }
    let _serial = serial();
    for mode in [OffloadMode::Auto, OffloadMode::Off] {
        let ns = Netns::new("trf");
        in_ns(&ns, move || async move {
            let tun = Tun::open(&TunOptions { ipv4: Some((Ipv4Addr::new(198, 18, 41, 1), 24)), ..opts(mode) })
                .expect("open tun");
            let sock = UdpSocket::bind("198.18.41.1:0").expect("bind");
            const SINGLES: usize = 6;
            for i in 0..SINGLES {
                sock.send_to(&vec![i as u8; 200 + 100 * i], "198.18.41.2:9999").expect("send_to");
            }
            // Four 1,000-byte datagrams in one send: one GSO frame with USO, four packets without.
            let seg: libc::c_int = 1000;
            // SAFETY: setsockopt with a c_int option value that outlives the call, on an open socket.
            let rc = unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&sock),
                    libc::SOL_UDP,
                    libc::UDP_SEGMENT,
                    (&seg as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
            sock.send_to(&[0xaa; 4000], "198.18.41.2:9999").expect("GSO send_to");

            let q = &tun.queues()[0];
            let mut buf = vec![0u8; MIN_READ_BUF];
            let mut ours = Vec::new();
            let mut calls = 0;
            let deadline = Instant::now() + Duration::from_secs(5);
            while ours.iter().map(|(_, count)| count).sum::<usize>() < SINGLES + 4 && Instant::now() < deadline {
                let mut got = Vec::new();
                let n = tokio::time::timeout(
                    Duration::from_secs(2),
                    q.read_frames(&mut buf, 3, |frame, plan| got.push((frame.to_vec(), plan))),
                )
                .await
                .expect("frames within 2 s")
                .expect("read_frames");
                calls += 1;
                assert_eq!(n, got.len(), "read_frames counts what it handed over");
                assert!((1..=3).contains(&n), "{n} frames from a call limited to 3");
                for (frame, plan) in got {
                    assert_eq!(plan, split::plan(&frame), "the read's plan is the frame's");
                    let ip = &frame[VNET_HDR_LEN..];
                    if ip.len() < 28 || ip[0] >> 4 != 4 || ip[9] != UDP || ip[22..24] != 9999u16.to_be_bytes() {
                        continue;
                    }
                    let count = plan.expect("our datagrams plan").count;
                    assert_eq!(count, split::split_to_vec(&frame).expect("splits").len());
                    ours.push((frame, count));
                }
            }
            let total: usize = ours.iter().map(|(_, count)| count).sum();
            assert_eq!(total, SINGLES + 4, "datagrams read through read_frames");
            assert!(calls < ours.len() || ours.len() <= 1, "no batching: {calls} calls for {} frames", ours.len());
            if tun.offloads().uso4 {
                assert!(ours.iter().any(|(_, count)| *count == 4), "the UDP_SEGMENT send as one frame of 4");
            }
            let s = tun.stats();
            assert!(s.rx_segments >= s.rx_frames && s.rx_segments >= (SINGLES + 4) as u64, "{s:?}");
        });
    }
}

#[test]
fn close_ends_a_pending_read_and_leaks_no_descriptors() {
    if !common::privileged("close_ends_a_pending_read_and_leaks_no_descriptors") {
        return;
    }
    let _serial = serial();
    let ns = Netns::new("tc");
    in_ns(&ns, || async {
        let tun = Tun::open(&opts(OffloadMode::Auto)).expect("open tun");
        let q = tun.queues()[0].clone();
        // Reads until an error: the stack may send a stray frame (such as an MLD report) at any time.
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; MIN_READ_BUF];
            for _ in 0..1000 {
                if let Err(e) = q.read_frame(&mut buf).await {
                    return e;
                }
            }
            panic!("1000 frames read from an idle device");
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let start = Instant::now();
        tun.close();
        let err = tokio::time::timeout(Duration::from_secs(1), reader).await.expect("read ended").unwrap();
        assert_eq!(err.kind, ErrorKind::Closed);
        assert!(start.elapsed() < Duration::from_millis(500));
        let mut buf = vec![0u8; MIN_READ_BUF];
        let q = &tun.queues()[0];
        assert_eq!(q.read_frame(&mut buf).await.unwrap_err().kind, ErrorKind::Closed);
        assert_eq!(q.write_frame(&[0; 30]).await.unwrap_err().kind, ErrorKind::Closed);
        assert_eq!(q.try_read_frame(&mut buf).unwrap_err().kind, ErrorKind::Closed);
        drop(tun);

        let before = fd_count();
        for i in 0..200 {
            let tun = Tun::open(&TunOptions {
                ipv4: Some((Ipv4Addr::new(198, 18, 50, 1), 24)),
                queues: 1 + i % 2,
                ..opts(OffloadMode::Auto)
            })
            .expect("open tun");
            tun.close();
        }
        assert_eq!(fd_count(), before, "200 open/close cycles leaked descriptors");
    });
}

#[test]
fn malformed_frames_are_refused_without_losing_coalescing() {
    if !common::privileged("malformed_frames_are_refused_without_losing_coalescing") {
        return;
    }
    let _serial = serial();
    let ns = Netns::new("tm");
    in_ns(&ns, || async {
        let tun = Tun::open(&opts(OffloadMode::Auto)).expect("open tun");
        let q = &tun.queues()[0];
        let mut gso_garbage = vec![0u8; VNET_HDR_LEN + 100];
        VirtioNetHdr { flags: 1, gso_type: 1, hdr_len: 40, gso_size: 10, csum_start: 20, csum_offset: 16 }
            .encode(&mut gso_garbage)
            .unwrap();
        let bad: [&[u8]; 4] = [&[], &[1, 2, 3], &[0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0x45], &gso_garbage];
        for frame in bad {
            let err = q.write_frame(frame).await.expect_err("malformed frame accepted");
            assert_eq!(err.kind, ErrorKind::InvalidPacket, "{frame:?}: {err}");
        }
        assert!(tun.coalescing_enabled() || !tun.offloads().tso4);
        assert_eq!(tun.stats().tx_drops, bad.len() as u64);
        assert_eq!(tun.stats().tx_fallbacks, 0);
        // write_packets with nothing to merge still writes.
        let (tcp, _) = flows(&[198, 18, 60, 2], &[198, 18, 61, 2], 1, 100);
        q.write_packets(&tcp, &mut WriteScratch::new()).await.expect("write_packets");
        assert_eq!(tun.stats().tx_packets, 1);
    });
}
