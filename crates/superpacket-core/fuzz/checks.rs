//! The properties the fuzz targets check, in one file that both `fuzz_targets/*.rs` and
//! `tests/fuzz_corpus.rs` include with `#[path]`, so the fuzzers and the corpus replay in `cargo test`
//! can never drift apart. An `Err` from the crate is an acceptable answer to any input; a panic inside
//! the crate, or an `Ok` whose output is not what the kernel would have produced, is a bug.
//!
//! Coalesce inputs are decoded by [`decode_batch`]: one flags byte, then packets each behind a
//! big-endian u16 length (the last one takes what is left if the length runs past the end).

use std::collections::{HashMap, VecDeque};

use superpacket_core::checksum;
use superpacket_core::coalesce::{CoalesceOptions, Coalescer, Frames};
use superpacket_core::packet::{self, IpHeaders, IpVersion, PROTO_TCP, PROTO_UDP};
use superpacket_core::split::{self, Layout};
use superpacket_core::{GsoKind, PacketError, VirtioNetHdr, MAX_SEGMENTS, VNET_HDR_LEN};

/// Odd head- and tailroom, so stride arithmetic that assumes alignment shows.
const LAYOUT: Layout = Layout { headroom: 3, tailroom: 5 };
/// What `split_into` must leave alone around the segments.
const FILL: u8 = 0xa5;
/// Slack after `buffer_len` that must stay untouched too.
const SLACK: usize = 7;

/// Coalesce flags byte: merge TCP.
pub const FLAG_TCP: u8 = 1;
/// Coalesce flags byte: merge UDP.
pub const FLAG_UDP: u8 = 2;
/// Coalesce flags byte: set IP and UDP length fields from each packet's length (before checksums).
pub const FLAG_FIX_LENGTHS: u8 = 4;
/// Coalesce flags byte: recompute the IPv4 header and TCP/UDP checksums of each packet, so that random
/// packets become mergeable (the coalescer only merges packets whose checksums verify).
pub const FLAG_FIX_CHECKSUMS: u8 = 8;

/// Most packets taken from one input.
const MAX_BATCH: usize = 1024;

/// Any bytes as a frame: `plan`, `split_into` and `split_to_vec` agree, and what they produce is valid.
/// Returns whether the frame was split (rather than rejected).
pub fn check_split(frame: &[u8]) -> bool {
    split_checked(frame).is_ok()
}

/// Any bytes as a batch (see [`decode_batch`]): coalescing never panics, every frame decodes, and
/// splitting the frames gives back exactly the input packets with every flow in order.
/// Returns how many frames were merged from two or more packets.
pub fn check_coalesce(data: &[u8]) -> usize {
    let Some((options, packets)) = decode_batch(data) else { return 0 };
    let mut coalescer = Coalescer::new(options);
    let mut frames = Frames::new();
    coalescer.coalesce(&packets, &mut frames);
    let first: Vec<Vec<u8>> = frames.iter().map(<[u8]>::to_vec).collect();
    assert_eq!(first.len(), frames.len(), "Frames::iter and Frames::len disagree");
    assert!(first.len() <= packets.len(), "{} frames from {} packets", first.len(), packets.len());
    for (i, f) in first.iter().enumerate() {
        assert_eq!(frames.get(i), Some(f.as_slice()), "Frames::get({i}) and Frames::iter disagree");
    }
    assert_eq!(frames.get(first.len()), None);

    let mut out = Vec::with_capacity(packets.len());
    let mut merged = 0;
    for (i, frame) in first.iter().enumerate() {
        let segs = check_frame(frame);
        assert_eq!(frames.packets(i), Some(segs.len()), "Frames::packets({i}) is not what the frame splits into");
        merged += usize::from(segs.len() > 1);
        out.extend(segs);
    }
    check_same_packets_in_flow_order(&packets, &out);

    // The scratch space is reused: a second batch appended to the same Frames gives the same frames.
    coalescer.coalesce(&packets, &mut frames);
    let again: Vec<&[u8]> = frames.iter().skip(first.len()).collect();
    assert_eq!(again.len(), first.len(), "a second coalesce of the same batch gave a different frame count");
    for (a, b) in again.iter().zip(&first) {
        assert_eq!(*a, b.as_slice(), "a second coalesce of the same batch gave different frames");
    }
    merged
}

/// Splits the options byte and the packets out of a fuzz input; `None` for an empty input.
pub fn decode_batch(data: &[u8]) -> Option<(CoalesceOptions, Vec<Vec<u8>>)> {
    let (&flags, mut rest) = data.split_first()?;
    let options = CoalesceOptions { tcp: flags & FLAG_TCP != 0, udp: flags & FLAG_UDP != 0 };
    let mut packets = Vec::new();
    while let (Some(len), Some(body)) = (rest.get(..2), rest.get(2..)) {
        if packets.len() == MAX_BATCH {
            break;
        }
        let len = usize::from(u16::from_be_bytes([len[0], len[1]])).min(body.len());
        let (pkt, tail) = body.split_at(len);
        let mut pkt = pkt.to_vec();
        if flags & FLAG_FIX_LENGTHS != 0 {
            fix_lengths(&mut pkt);
        }
        if flags & FLAG_FIX_CHECKSUMS != 0 {
            fix_checksums(&mut pkt);
        }
        packets.push(pkt);
        rest = tail;
    }
    Some((options, packets))
}

/// Encodes a batch the way [`decode_batch`] reads it (used by the seed generator).
pub fn encode_batch(flags: u8, packets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![flags];
    for p in packets {
        let len = u16::try_from(p.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn split_checked(frame: &[u8]) -> Result<Vec<Vec<u8>>, PacketError> {
    let planned = split::plan(frame);
    let vec = split::split_to_vec(frame);
    let mut empty = [0u8; 0];
    let (plan, segs) = match (planned, vec) {
        (Err(e), Err(f)) => {
            assert_eq!(e, f, "plan and split_to_vec reject the frame differently");
            assert_eq!(split::split_into(frame, LAYOUT, &mut empty), Err(e), "split_into rejects differently");
            return Err(e);
        }
        (Ok(plan), Ok(segs)) => (plan, segs),
        (p, v) => panic!("plan {p:?} and split_to_vec {:?} disagree", v.map(|s| s.len())),
    };

    assert!(plan.count >= 1, "a plan with no segments: {plan:?}");
    assert_eq!(segs.len(), plan.count, "split_to_vec gave a different count than the plan");
    for (i, seg) in segs.iter().enumerate() {
        assert_eq!(Some(seg.len()), plan.segment_ip_len(i), "segment {i} length");
    }
    assert_eq!(plan.segment_ip_len(plan.count), None);

    // split_into: the same bytes at the stride, nothing written outside the segments, and a buffer one
    // byte short rejected.
    let needed = plan.buffer_len(LAYOUT);
    let stride = plan.stride(LAYOUT);
    assert_eq!(stride, LAYOUT.headroom + plan.seg_ip_len + LAYOUT.tailroom);
    assert_eq!(needed, (plan.count - 1) * stride + LAYOUT.headroom + plan.last_ip_len + LAYOUT.tailroom);
    let mut buf = vec![FILL; needed + SLACK];
    assert_eq!(
        split::split_into(frame, LAYOUT, &mut buf[..needed - 1]),
        Err(PacketError::BufferTooSmall),
        "split_into accepted a buffer one byte short"
    );
    buf.fill(FILL);
    assert_eq!(split::split_into(frame, LAYOUT, &mut buf), Ok(plan), "split_into planned differently");
    let mut at = 0;
    for (i, seg) in segs.iter().enumerate() {
        let start = i * stride + LAYOUT.headroom;
        assert!(buf[at..start].iter().all(|&b| b == FILL), "split_into wrote into the room before segment {i}");
        assert_eq!(&buf[start..start + seg.len()], seg.as_slice(), "split_into and split_to_vec differ at segment {i}");
        at = start + seg.len();
    }
    assert!(buf[at..].iter().all(|&b| b == FILL), "split_into wrote past the last segment");

    let vnet = VirtioNetHdr::decode(frame).expect("a planned frame has a valid virtio_net_hdr");
    let pkt = &frame[VNET_HDR_LEN..];
    let ip = packet::parse_ip(pkt).expect("a planned frame holds an IP packet");
    assert_eq!(ip.total_len, pkt.len());
    for seg in &segs {
        check_ip_lengths(seg);
    }
    match plan.kind {
        GsoKind::None => check_single(&vnet, pkt, &ip, &segs[0]),
        GsoKind::TcpV4 | GsoKind::TcpV6 | GsoKind::UdpL4 => check_segments(&vnet, pkt, &ip, &segs),
    }
    Ok(segs)
}

/// The IP length fields of an output packet match its length.
fn check_ip_lengths(seg: &[u8]) {
    match seg.first().map(|b| b >> 4) {
        Some(4) => {
            assert!(seg.len() >= 20, "IPv4 packet of {} bytes", seg.len());
            assert_eq!(usize::from(be16(seg, 2)), seg.len(), "IPv4 total length");
        }
        Some(6) => {
            assert!(seg.len() >= 40, "IPv6 packet of {} bytes", seg.len());
            assert_eq!(usize::from(be16(seg, 4)), seg.len() - 40, "IPv6 payload length");
        }
        v => panic!("output packet with IP version {v:?}"),
    }
    let ip = packet::parse_ip(seg).expect("an output packet parses");
    assert_eq!(ip.total_len, seg.len());
}

/// A frame without GSO: copied, with the checksum at csum_start + csum_offset completed if asked.
fn check_single(vnet: &VirtioNetHdr, pkt: &[u8], ip: &IpHeaders, out: &[u8]) {
    if !vnet.needs_csum() {
        assert_eq!(out, pkt, "a frame without NEEDS_CSUM must be copied unchanged");
        return;
    }
    let start = usize::from(vnet.csum_start);
    let field = start + usize::from(vnet.csum_offset);
    assert_eq!(out[..field], pkt[..field], "bytes before the checksum field changed");
    assert_eq!(out[field + 2..], pkt[field + 2..], "bytes after the checksum field changed");
    if (field - start) % 2 != 0 {
        return; // a field straddling 16-bit words: the sum below does not apply
    }
    // The field held a partial sum F; completing it makes the region sum to !F.
    let before = be16(pkt, field);
    assert!(
        same_ones_complement(checksum::fold(checksum::sum(&out[start..], 0)), !before),
        "completed checksum does not verify"
    );
    let is_l4_field = (ip.proto == PROTO_TCP || ip.proto == PROTO_UDP)
        && start == ip.ip_len
        && usize::from(vnet.csum_offset) == packet::l4_checksum_offset(ip.proto);
    if is_l4_field {
        if ip.proto == PROTO_UDP {
            assert_ne!(be16(out, field), 0, "a computed UDP checksum of 0 must be sent as 0xFFFF");
        }
        let pseudo = packet::pseudo_header_sum(pkt, ip, pkt.len() - start);
        if same_ones_complement(before, checksum::fold(pseudo)) {
            assert!(l4_checksum_verifies(out), "L4 checksum does not verify");
        }
    }
}

/// The segments of a GSO frame: headers as the kernel writes them, every checksum valid, and the
/// payload cut at gso_size with nothing lost or added.
fn check_segments(vnet: &VirtioNetHdr, pkt: &[u8], ip: &IpHeaders, segs: &[Vec<u8>]) {
    let l4 = ip.ip_len;
    let hdr_len = l4 + packet::l4_header_len(ip.proto, &pkt[l4..]).expect("a planned frame has an L4 header");
    let gso = usize::from(vnet.gso_size);
    let payload = &pkt[hdr_len..];
    let mut joined = Vec::with_capacity(payload.len());
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        let seg_payload = &seg[hdr_len..];
        if last {
            assert!(seg_payload.len() <= gso, "last segment payload {} > gso_size {gso}", seg_payload.len());
            assert!(!seg_payload.is_empty() || payload.is_empty(), "empty last segment");
        } else {
            assert_eq!(seg_payload.len(), gso, "segment {i} payload is not gso_size");
        }
        joined.extend_from_slice(seg_payload);

        let mut expected = pkt[..hdr_len].to_vec();
        let mut got = seg[..hdr_len].to_vec();
        let seg_ip = packet::parse_ip(seg).expect("a segment parses");
        assert_eq!((seg_ip.ip_len, seg_ip.proto, seg_ip.version), (ip.ip_len, ip.proto, ip.version));
        match ip.version {
            IpVersion::V4 => {
                assert_eq!(be16(seg, 4), be16(pkt, 4).wrapping_add(i as u16), "IPv4 ID of segment {i}");
                assert_eq!(checksum::fold(checksum::sum(&seg[..l4], 0)), 0xffff, "IPv4 header checksum of segment {i}");
                for r in [2..6, 10..12] {
                    expected[r.clone()].fill(0);
                    got[r].fill(0);
                }
            }
            IpVersion::V6 => {
                expected[4..6].fill(0);
                got[4..6].fill(0);
            }
        }
        if ip.proto == PROTO_TCP {
            let seq = be32(pkt, l4 + 4).wrapping_add((i * gso) as u32);
            assert_eq!(be32(seg, l4 + 4), seq, "TCP sequence number of segment {i}");
            let mut flags = pkt[l4 + 13];
            if !last {
                flags &= !(0x01 | 0x08); // FIN, PSH
            }
            if i != 0 {
                flags &= !0x80; // CWR
            }
            assert_eq!(seg[l4 + 13], flags, "TCP flags of segment {i}");
            for r in [l4 + 4..l4 + 8, l4 + 13..l4 + 14, l4 + 16..l4 + 18] {
                expected[r.clone()].fill(0);
                got[r].fill(0);
            }
        } else {
            assert_eq!(usize::from(be16(seg, l4 + 4)), seg.len() - l4, "UDP length of segment {i}");
            assert_ne!(be16(seg, l4 + 6), 0, "UDP checksum 0 of segment {i}");
            expected[l4 + 4..l4 + 8].fill(0);
            got[l4 + 4..l4 + 8].fill(0);
        }
        assert_eq!(got, expected, "segment {i} headers differ from the superpacket's beyond the fixed-up fields");
        assert!(l4_checksum_verifies(seg), "L4 checksum of segment {i} does not verify");
    }
    assert!(
        joined == payload,
        "the segments' payloads ({} B) are not the superpacket's ({} B)",
        joined.len(),
        payload.len()
    );
}

/// Checks one frame coming out of the coalescer and returns the packets it stands for.
fn check_frame(frame: &[u8]) -> Vec<Vec<u8>> {
    let vnet = VirtioNetHdr::decode(frame).expect("a coalesced frame's virtio_net_hdr decodes");
    let pkt = &frame[VNET_HDR_LEN..];
    if vnet.kind() == Ok(GsoKind::None) {
        assert_eq!(frame[..VNET_HDR_LEN], [0u8; VNET_HDR_LEN], "a pass-through frame's header is not zeroed");
        return vec![pkt.to_vec()];
    }
    assert!(vnet.needs_csum(), "a GSO frame without NEEDS_CSUM: {vnet:?}");
    let ip = packet::parse_ip(pkt).expect("a merged frame holds an IP packet");
    assert_eq!(ip.total_len, pkt.len(), "merged IP length field");
    assert_eq!(usize::from(vnet.csum_start), ip.ip_len, "csum_start");
    if ip.version == IpVersion::V4 {
        assert_eq!(checksum::fold(checksum::sum(&pkt[..ip.ip_len], 0)), 0xffff, "merged IPv4 header checksum");
    }
    // With NEEDS_CSUM the kernel expects the pseudo-header sum, not inverted, in the L4 checksum field.
    let field = usize::from(vnet.csum_start) + usize::from(vnet.csum_offset);
    let pseudo = checksum::fold(packet::pseudo_header_sum(pkt, &ip, pkt.len() - ip.ip_len));
    assert!(same_ones_complement(be16(pkt, field), pseudo), "merged L4 field is not the pseudo-header sum");
    let segs = split_checked(frame).unwrap_or_else(|e| panic!("splitting a merged frame failed: {e}"));
    assert!((2..=MAX_SEGMENTS).contains(&segs.len()), "a merged frame of {} segments", segs.len());
    segs
}

/// `out` is `input` reordered, and packets of one flow keep their input order.
fn check_same_packets_in_flow_order(input: &[Vec<u8>], out: &[Vec<u8>]) {
    assert_eq!(out.len(), input.len(), "{} packets in, {} out", input.len(), out.len());
    let mut unused: HashMap<&[u8], VecDeque<usize>> = HashMap::new();
    for (i, p) in input.iter().enumerate() {
        unused.entry(p.as_slice()).or_default().push_back(i);
    }
    let mut last_of_flow: HashMap<Vec<u8>, usize> = HashMap::new();
    for (n, p) in out.iter().enumerate() {
        // Equal packets are interchangeable; taking the earliest keeps any valid order valid.
        let i = unused
            .get_mut(p.as_slice())
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(|| panic!("output packet {n} ({} B) is not one of the input packets", p.len()));
        if let Some(key) = flow_key(p) {
            if let Some(prev) = last_of_flow.insert(key, i) {
                assert!(prev < i, "input packet {i} comes out after input packet {prev} of the same flow");
            }
        }
    }
}

/// Version, protocol, addresses and ports of a TCP/UDP packet that has them.
fn flow_key(p: &[u8]) -> Option<Vec<u8>> {
    let ip = packet::parse_ip(p).ok()?;
    if ip.proto != PROTO_TCP && ip.proto != PROTO_UDP {
        return None;
    }
    if ip.version == IpVersion::V4 && be16(p, 6) & 0x1fff != 0 {
        return None; // a later fragment: no ports
    }
    let ports = p.get(ip.ip_len..ip.total_len)?.get(..4)?;
    let (src, dst) = packet::addresses(p, ip.version);
    Some([&[p[0] >> 4, ip.proto][..], src, dst, ports].concat())
}

/// The TCP/UDP checksum of a whole packet verifies against its pseudo-header.
fn l4_checksum_verifies(pkt: &[u8]) -> bool {
    let Ok(ip) = packet::parse_ip(pkt) else { return false };
    let l4 = &pkt[ip.ip_len..ip.total_len];
    let acc = packet::pseudo_header_sum(pkt, &ip, l4.len());
    checksum::fold(checksum::sum(l4, acc)) == 0xffff
}

/// Sets the IPv4 total length or IPv6 payload length, and the UDP length, from the buffer length.
fn fix_lengths(p: &mut [u8]) {
    let Ok(len) = u16::try_from(p.len()) else { return };
    match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 => p[2..4].copy_from_slice(&len.to_be_bytes()),
        Some(6) if p.len() >= 40 => p[4..6].copy_from_slice(&(len - 40).to_be_bytes()),
        _ => return,
    }
    if let Ok(ip) = packet::parse_ip(p) {
        if ip.proto == PROTO_UDP && p.len() >= ip.ip_len + 8 {
            let udp_len = (p.len() - ip.ip_len) as u16;
            p[ip.ip_len + 4..ip.ip_len + 6].copy_from_slice(&udp_len.to_be_bytes());
        }
    }
}

/// Recomputes the IPv4 header checksum and the TCP/UDP checksum, where the packet has them.
pub fn fix_checksums(p: &mut [u8]) {
    let Ok(ip) = packet::parse_ip(p) else { return };
    if ip.version == IpVersion::V4 {
        p[10..12].fill(0);
        let c = checksum::checksum(&p[..ip.ip_len]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    if ip.proto != PROTO_TCP && ip.proto != PROTO_UDP {
        return;
    }
    let field = ip.ip_len + packet::l4_checksum_offset(ip.proto);
    if field + 2 > ip.total_len {
        return;
    }
    p[field..field + 2].fill(0);
    let acc = packet::pseudo_header_sum(p, &ip, ip.total_len - ip.ip_len);
    let c = match checksum::finish(checksum::sum(&p[ip.ip_len..ip.total_len], acc)) {
        0 if ip.proto == PROTO_UDP => 0xffff,
        c => c,
    };
    p[field..field + 2].copy_from_slice(&c.to_be_bytes());
}

fn same_ones_complement(a: u16, b: u16) -> bool {
    a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
