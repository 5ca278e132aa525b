//! Splitting superpackets, checked field by field against etherparse.
//!
//! Superpackets are built with etherparse's header types; every produced segment is parsed back with
//! etherparse and compared with headers derived from the original by the TSO/USO rules, with checksums
//! computed by etherparse's own calculators.

use etherparse::{
    IpDscp, IpEcn, IpNumber, Ipv4Header, Ipv6Extensions, Ipv6FlowLabel, Ipv6Header, TcpHeader, UdpHeader,
};
use superpacket_core::split::{plan, split_into, split_into_planned, split_to_vec, Layout};
use superpacket_core::vnet::{FLAG_DATA_VALID, FLAG_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};
use superpacket_core::{GsoKind, PacketError};

const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const ECE: u8 = 0x40;
const CWR: u8 = 0x80;

/// IPv4 options: router alert, then a NOP and end-of-list padding to 8 bytes.
const IPV4_OPTIONS: [u8; 8] = [0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00];
/// TCP options: NOP, NOP, timestamps (kind 8, length 10).
const TCP_TIMESTAMPS: [u8; 12] = [1, 1, 8, 10, 0x01, 0x02, 0x03, 0x04, 0xa0, 0xb0, 0xc0, 0xd0];

/// One superpacket to build and split.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    v6: bool,
    /// IPv4 options, or IPv6 hop-by-hop + destination options headers.
    ip_options: bool,
    tcp: bool,
    tcp_options: bool,
    tcp_flags: u8,
    seq: u32,
    ip_id: u16,
    /// IPv4 ECN field / low 2 bits of the IPv6 traffic class.
    ip_ecn: u8,
    gso_type: u8,
    vnet_flags: u8,
    gso_size: u16,
    payload: usize,
    /// Expected number of segments, counted by hand.
    segments: usize,
}

const TCP4: Case = Case {
    name: "",
    v6: false,
    ip_options: false,
    tcp: true,
    tcp_options: false,
    tcp_flags: ACK,
    seq: 1_000_000,
    ip_id: 0x1234,
    ip_ecn: 0,
    gso_type: GSO_TCPV4,
    vnet_flags: FLAG_NEEDS_CSUM,
    gso_size: 1448,
    payload: 4 * 1448,
    segments: 4,
};
const TCP6: Case = Case { v6: true, gso_type: GSO_TCPV6, gso_size: 1440, ..TCP4 };
const UDP4: Case = Case { tcp: false, tcp_flags: 0, gso_type: GSO_UDP_L4, gso_size: 1200, ..TCP4 };
const UDP6: Case = Case { v6: true, ..UDP4 };

fn gso_cases() -> Vec<Case> {
    vec![
        Case { name: "ipv4 tcp", ..TCP4 },
        Case { name: "ipv6 tcp", payload: 5000, segments: 4, ..TCP6 },
        Case { name: "ipv4 udp", payload: 4000, segments: 4, ..UDP4 },
        Case { name: "ipv6 udp", payload: 3600, segments: 3, ..UDP6 },
        Case { name: "ipv4 options tcp", ip_options: true, payload: 3000, segments: 3, ..TCP4 },
        Case { name: "ipv4 options udp", ip_options: true, payload: 2500, segments: 3, ..UDP4 },
        Case { name: "ipv6 hop-by-hop + dest opts tcp", ip_options: true, payload: 3000, segments: 3, ..TCP6 },
        Case { name: "ipv6 hop-by-hop + dest opts udp", ip_options: true, payload: 2401, segments: 3, ..UDP6 },
        Case { name: "tcp timestamps", tcp_options: true, gso_size: 1436, payload: 10_000, segments: 7, ..TCP4 },
        Case { name: "tcp timestamps ipv6", tcp_options: true, gso_size: 1428, payload: 10_000, segments: 8, ..TCP6 },
        Case { name: "short last segment", gso_size: 1000, payload: 3123, segments: 4, ..TCP4 },
        Case { name: "odd gso_size tcp", gso_size: 999, payload: 3001, segments: 4, ..TCP4 },
        Case { name: "odd gso_size udp v6", gso_size: 777, payload: 2000, segments: 3, ..UDP6 },
        Case { name: "single segment tcp", payload: 500, segments: 1, tcp_flags: ACK | PSH | FIN, ..TCP4 },
        Case { name: "single segment udp", payload: 700, segments: 1, ..UDP6 },
        Case { name: "payload exactly gso_size", payload: 1448, segments: 1, ..TCP4 },
        Case { name: "empty payload", payload: 0, segments: 1, tcp_flags: ACK | FIN, ..TCP4 },
        Case { name: "exactly 64 segments", gso_size: 1000, payload: 64_000, segments: 64, ..TCP4 },
        Case { name: "more than 64 segments tcp", gso_size: 500, payload: 40_000, segments: 80, ..TCP6 },
        Case { name: "more than 64 segments udp", gso_size: 500, payload: 65_000, segments: 130, ..UDP6 },
        Case { name: "largest ipv4 tcp", payload: 65_495, segments: 46, ..TCP4 },
        Case { name: "gso_size 1", gso_size: 1, payload: 70, segments: 70, ..UDP4 },
        Case {
            name: "fin psh cwr placement with ecn bit",
            tcp_flags: ACK | PSH | FIN | CWR | ECE,
            gso_type: GSO_TCPV4 | GSO_ECN,
            payload: 3000,
            segments: 3,
            ..TCP4
        },
        Case {
            name: "fin psh cwr placement ipv6 with ecn bit",
            tcp_flags: ACK | PSH | FIN | CWR,
            gso_type: GSO_TCPV6 | GSO_ECN,
            ip_ecn: 3,
            payload: 3000,
            segments: 3,
            ..TCP6
        },
        Case { name: "ip ecn ce bits kept", ip_ecn: 3, tcp_flags: ACK | ECE, payload: 3000, segments: 3, ..TCP4 },
        Case { name: "ipv4 id wraps", ip_id: 0xfffe, payload: 5000, segments: 4, ..TCP4 },
        Case { name: "ipv4 id wraps udp", ip_id: 0xffff, payload: 3000, segments: 3, ..UDP4 },
        Case { name: "tcp seq wraps", seq: 0xffff_f000, payload: 10_000, segments: 7, ..TCP4 },
        Case { name: "gso without needs_csum", vnet_flags: 0, payload: 3000, segments: 3, ..TCP6 },
        Case {
            name: "gso with data_valid",
            vnet_flags: FLAG_NEEDS_CSUM | FLAG_DATA_VALID,
            payload: 3000,
            segments: 3,
            ..UDP4
        },
    ]
}

/// A built superpacket and the headers it was built from.
struct Built {
    frame: Vec<u8>,
    ip: Ip,
    /// IPv6 extension header bytes (empty for IPv4).
    ext: Vec<u8>,
    l4: L4,
    payload: Vec<u8>,
}

enum Ip {
    V4(Ipv4Header),
    V6(Ipv6Header),
}

enum L4 {
    Tcp(TcpHeader),
    Udp(UdpHeader),
}

impl Built {
    fn ip_hdr_len(&self) -> usize {
        match &self.ip {
            Ip::V4(h) => h.header_len(),
            Ip::V6(_) => 40 + self.ext.len(),
        }
    }

    fn l4_hdr_len(&self) -> usize {
        match &self.l4 {
            L4::Tcp(t) => t.header_len(),
            L4::Udp(_) => 8,
        }
    }

    fn packet(&self) -> &[u8] {
        &self.frame[10..]
    }
}

/// RFC 1071 one's-complement sum of big-endian words, folded to 16 bits (not inverted): the reference.
/// Every chunk but the last must have an even length.
fn ones_sum(chunks: &[&[u8]]) -> u16 {
    let mut s: u64 = 0;
    for data in chunks {
        for pair in data.chunks(2) {
            s += u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn pseudo_header(src: &[u8], dst: &[u8], proto: u8, l4_len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    if src.len() == 4 {
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&(l4_len as u16).to_be_bytes());
    } else {
        p.extend_from_slice(&(l4_len as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
    }
    p
}

fn vnet(flags: u8, gso_type: u8, hdr_len: u16, gso_size: u16, csum_start: u16, csum_offset: u16) -> [u8; 10] {
    let mut v = [0u8; 10];
    v[0] = flags;
    v[1] = gso_type;
    v[2..4].copy_from_slice(&hdr_len.to_ne_bytes());
    v[4..6].copy_from_slice(&gso_size.to_ne_bytes());
    v[6..8].copy_from_slice(&csum_start.to_ne_bytes());
    v[8..10].copy_from_slice(&csum_offset.to_ne_bytes());
    v
}

/// Hop-by-hop (8 bytes, PadN) then destination options (16 bytes, PadN) ending in `proto`.
fn ipv6_ext_headers(proto: u8) -> Vec<u8> {
    let mut e = vec![60, 0, 1, 4, 0, 0, 0, 0];
    e.extend_from_slice(&[proto, 1, 1, 12]);
    e.extend_from_slice(&[0; 12]);
    e
}

fn build(c: &Case) -> Built {
    let payload: Vec<u8> = (0..c.payload).map(|i| (i * 31 + i / 251) as u8).collect();
    let proto = if c.tcp { IpNumber::TCP } else { IpNumber::UDP };
    let mut l4 = if c.tcp {
        let mut t = TcpHeader::new(40_000, 443, c.seq, 501);
        t.acknowledgment_number = 0x0a0b_0c0d;
        t.fin = c.tcp_flags & FIN != 0;
        t.psh = c.tcp_flags & PSH != 0;
        t.ack = c.tcp_flags & ACK != 0;
        t.ece = c.tcp_flags & ECE != 0;
        t.cwr = c.tcp_flags & CWR != 0;
        t.urgent_pointer = 0;
        if c.tcp_options {
            t.set_options_raw(&TCP_TIMESTAMPS).unwrap();
        }
        L4::Tcp(t)
    } else {
        L4::Udp(UdpHeader { source_port: 5353, destination_port: 51820, length: (8 + c.payload) as u16, checksum: 0 })
    };
    let l4_len = payload.len() + if let L4::Tcp(t) = &l4 { t.header_len() } else { 8 };
    let (ip, ext, src, dst) = if c.v6 {
        let ext = if c.ip_options { ipv6_ext_headers(proto.0) } else { Vec::new() };
        let h = Ipv6Header {
            traffic_class: 0x28 | c.ip_ecn,
            flow_label: Ipv6FlowLabel::try_new(0x5_4321).unwrap(),
            payload_length: (ext.len() + l4_len) as u16,
            next_header: if c.ip_options { IpNumber::IPV6_HEADER_HOP_BY_HOP } else { proto },
            hop_limit: 63,
            source: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0x01],
            destination: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xcd, 0x02],
        };
        let (s, d) = (h.source.to_vec(), h.destination.to_vec());
        (Ip::V6(h), ext, s, d)
    } else {
        let mut h = Ipv4Header::new(0, 64, proto, [198, 18, 0, 1], [198, 18, 7, 2]).unwrap();
        h.identification = c.ip_id;
        h.dont_fragment = true;
        h.dscp = IpDscp::try_new(10).unwrap();
        h.ecn = IpEcn::try_new(c.ip_ecn).unwrap();
        if c.ip_options {
            h.options = IPV4_OPTIONS[..].try_into().unwrap();
        }
        h.set_payload_len(l4_len).unwrap();
        h.header_checksum = h.calc_header_checksum();
        let (s, d) = (h.source.to_vec(), h.destination.to_vec());
        (Ip::V4(h), Vec::new(), s, d)
    };
    // As the kernel hands it over: the L4 checksum field holds the (non-inverted) pseudo-header sum.
    let pseudo = ones_sum(&[&pseudo_header(&src, &dst, proto.0, l4_len)]);
    match &mut l4 {
        L4::Tcp(t) => t.checksum = pseudo,
        L4::Udp(u) => u.checksum = pseudo,
    }
    let mut pkt = match &ip {
        Ip::V4(h) => h.to_bytes().to_vec(),
        Ip::V6(h) => h.to_bytes().to_vec(),
    };
    pkt.extend_from_slice(&ext);
    let l4_off = pkt.len();
    match &l4 {
        L4::Tcp(t) => pkt.extend_from_slice(&t.to_bytes()),
        L4::Udp(u) => pkt.extend_from_slice(&u.to_bytes()),
    }
    let hdr_len = pkt.len();
    pkt.extend_from_slice(&payload);
    let csum_offset = if c.tcp { 16 } else { 6 };
    let mut frame = vnet(c.vnet_flags, c.gso_type, hdr_len as u16, c.gso_size, l4_off as u16, csum_offset).to_vec();
    frame.extend_from_slice(&pkt);
    Built { frame, ip, ext, l4, payload }
}

/// Checks every header field and the payload of segment `i` against headers derived from the original.
fn check_segment(c: &Case, b: &Built, i: usize, seg: &[u8]) {
    let ctx = format!("{}: segment {i}", c.name);
    let gso = usize::from(c.gso_size);
    let want_payload = &b.payload[(i * gso).min(b.payload.len())..((i + 1) * gso).min(b.payload.len())];
    assert_eq!(seg.len(), b.ip_hdr_len() + b.l4_hdr_len() + want_payload.len(), "{ctx}: length");
    let l4_bytes = &seg[b.ip_hdr_len()..];
    let want_ip = match &b.ip {
        Ip::V4(orig) => {
            let (got, _) = Ipv4Header::from_slice(seg).unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
            let mut want = orig.clone();
            want.total_len = seg.len() as u16;
            want.identification = orig.identification.wrapping_add(i as u16);
            want.header_checksum = want.calc_header_checksum();
            assert_eq!(got, want, "{ctx}: IPv4 header");
            Ip::V4(want)
        }
        Ip::V6(orig) => {
            let (got, rest) = Ipv6Header::from_slice(seg).unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
            let mut want = orig.clone();
            want.payload_length = (seg.len() - 40) as u16;
            assert_eq!(got, want, "{ctx}: IPv6 header");
            assert_eq!(&rest[..b.ext.len()], &b.ext[..], "{ctx}: extension headers");
            let (_, next, _) = Ipv6Extensions::from_slice(got.next_header, rest).unwrap();
            let want_next = if c.tcp { IpNumber::TCP } else { IpNumber::UDP };
            assert_eq!(next, want_next, "{ctx}: protocol after extension headers");
            Ip::V6(want)
        }
    };
    let payload = match &b.l4 {
        L4::Tcp(orig) => {
            let (got, payload) = TcpHeader::from_slice(l4_bytes).unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
            let mut want = orig.clone();
            want.sequence_number = orig.sequence_number.wrapping_add((i * gso) as u32);
            want.fin = orig.fin && i + 1 == c.segments;
            want.psh = orig.psh && i + 1 == c.segments;
            want.cwr = orig.cwr && i == 0;
            want.checksum = tcp_checksum(&want_ip, &want, want_payload);
            assert_eq!(got, want, "{ctx}: TCP header");
            payload
        }
        L4::Udp(orig) => {
            let (got, payload) = UdpHeader::from_slice(l4_bytes).unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
            let mut want = orig.clone();
            want.length = l4_bytes.len() as u16;
            want.checksum = udp_checksum(&want_ip, &want, want_payload);
            assert_eq!(got, want, "{ctx}: UDP header");
            payload
        }
    };
    assert!(payload == want_payload, "{ctx}: payload bytes differ");
}

/// etherparse's TCP checksum of `tcp` + `payload` under `ip`.
fn tcp_checksum(ip: &Ip, tcp: &TcpHeader, payload: &[u8]) -> u16 {
    match ip {
        Ip::V4(h) => tcp.calc_checksum_ipv4(h, payload).unwrap(),
        Ip::V6(h) => tcp.calc_checksum_ipv6(h, payload).unwrap(),
    }
}

/// etherparse's UDP checksum (0 already sent as 0xFFFF) of `udp` + `payload` under `ip`.
fn udp_checksum(ip: &Ip, udp: &UdpHeader, payload: &[u8]) -> u16 {
    match ip {
        Ip::V4(h) => udp.calc_checksum_ipv4(h, payload).unwrap(),
        Ip::V6(h) => udp.calc_checksum_ipv6(h, payload).unwrap(),
    }
}

#[test]
fn gso_segments_match_independent_headers() {
    for c in gso_cases() {
        let b = build(&c);
        let p = plan(&b.frame).unwrap_or_else(|e| panic!("{}: plan: {e:?}", c.name));
        assert_eq!(p.count, c.segments, "{}: plan count", c.name);
        let segs = split_to_vec(&b.frame).unwrap_or_else(|e| panic!("{}: {e:?}", c.name));
        assert_eq!(segs.len(), c.segments, "{}: segment count", c.name);
        for (i, seg) in segs.iter().enumerate() {
            check_segment(&c, &b, i, seg);
        }
        let hdr = b.ip_hdr_len() + b.l4_hdr_len();
        let gso = usize::from(c.gso_size);
        assert_eq!(p.seg_ip_len, hdr + c.payload.min(gso), "{}: seg_ip_len", c.name);
        assert_eq!(p.last_ip_len, hdr + c.payload - (c.segments - 1) * gso, "{}: last_ip_len", c.name);
        let want_kind = match c.gso_type & !GSO_ECN {
            GSO_TCPV4 => GsoKind::TcpV4,
            GSO_TCPV6 => GsoKind::TcpV6,
            _ => GsoKind::UdpL4,
        };
        assert_eq!(p.kind, want_kind, "{}: kind", c.name);
    }
}

#[test]
fn hdr_len_from_the_kernel_is_not_trusted() {
    for hdr_len in [0u16, 14, 54, 1000, u16::MAX] {
        let c = Case { name: "wrong hdr_len", tcp_options: true, payload: 5000, segments: 4, ..TCP4 };
        let mut b = build(&c);
        b.frame[2..4].copy_from_slice(&hdr_len.to_ne_bytes());
        let segs = split_to_vec(&b.frame).unwrap();
        assert_eq!(segs.len(), c.segments);
        for (i, seg) in segs.iter().enumerate() {
            check_segment(&c, &b, i, seg);
        }
    }
}

const MARK: u8 = 0xa5;

#[test]
fn strided_output_leaves_headroom_and_tailroom_untouched() {
    let layouts = [
        Layout { headroom: 0, tailroom: 0 },
        Layout { headroom: 16, tailroom: 16 },
        Layout { headroom: 13, tailroom: 0 },
        Layout { headroom: 0, tailroom: 7 },
        Layout { headroom: 32, tailroom: 48 },
    ];
    let cases = [
        Case { name: "strided ipv4 tcp short last", gso_size: 1000, payload: 3123, segments: 4, ..TCP4 },
        Case { name: "strided ipv6 udp", ip_options: true, payload: 3600, segments: 3, ..UDP6 },
        Case { name: "strided single", payload: 100, segments: 1, ..UDP4 },
    ];
    for c in cases {
        let b = build(&c);
        let hdr = b.ip_hdr_len() + b.l4_hdr_len();
        let gso = usize::from(c.gso_size);
        let seg_len = hdr + c.payload.min(gso);
        let last_len = hdr + c.payload - (c.segments - 1) * gso;
        for layout in layouts {
            let ctx = format!("{} {layout:?}", c.name);
            let stride = layout.headroom + seg_len + layout.tailroom;
            let need = (c.segments - 1) * stride + layout.headroom + last_len + layout.tailroom;
            let p = plan(&b.frame).unwrap();
            assert_eq!(p.stride(layout), stride, "{ctx}: stride");
            assert_eq!(p.buffer_len(layout), need, "{ctx}: buffer_len");

            // A buffer with spare room at the end: that must stay untouched too.
            let mut out = vec![MARK; need + 64];
            let got = split_into(&b.frame, layout, &mut out).unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
            assert_eq!(got, p, "{ctx}: returned plan");
            let mut written = vec![false; out.len()];
            for i in 0..c.segments {
                let start = i * stride + layout.headroom;
                let len = if i + 1 == c.segments { last_len } else { seg_len };
                check_segment(&c, &b, i, &out[start..start + len]);
                written[start..start + len].iter_mut().for_each(|w| *w = true);
            }
            for (pos, (&byte, &w)) in out.iter().zip(&written).enumerate() {
                assert!(w || byte == MARK, "{ctx}: byte {pos} outside the segments was overwritten");
            }

            // The same plan, made once and passed in, writes the same bytes.
            let mut planned = vec![MARK; need + 64];
            split_into_planned(&b.frame, &p, layout, &mut planned).unwrap_or_else(|e| panic!("{ctx}: planned {e:?}"));
            assert!(planned == out, "{ctx}: split_into_planned and split_into wrote different bytes");

            let mut short = vec![MARK; need - 1];
            assert_eq!(split_into(&b.frame, layout, &mut short), Err(PacketError::BufferTooSmall), "{ctx}");
            assert_eq!(split_into_planned(&b.frame, &p, layout, &mut short), Err(PacketError::BufferTooSmall), "{ctx}");
            assert!(short.iter().all(|&x| x == MARK), "{ctx}: a rejected call wrote output");

            // A plan is refused for a frame of another length, before anything is written.
            let mut longer = b.frame.clone();
            longer.push(0);
            let mut untouched = vec![MARK; need + 64];
            assert_eq!(
                split_into_planned(&longer, &p, layout, &mut untouched),
                Err(PacketError::LengthMismatch),
                "{ctx}: plan of another frame"
            );
            assert!(untouched.iter().all(|&x| x == MARK), "{ctx}: a refused plan wrote output");
        }
    }
}

/// GSO_NONE frames: one packet, identical to the input except for a completed checksum.
#[test]
fn gso_none_copies_and_completes_checksums() {
    struct NoneCase {
        name: &'static str,
        base: Case,
        needs_csum: bool,
        /// Adjust the payload so the computed checksum comes out 0 (sent as 0xFFFF for UDP).
        force_zero: bool,
    }
    let base = |c: Case| Case { gso_type: GSO_NONE, gso_size: 0, payload: 999, segments: 1, ..c };
    let cases = [
        NoneCase { name: "tcp4 needs_csum", base: base(TCP4), needs_csum: true, force_zero: false },
        NoneCase {
            name: "tcp6 needs_csum with ext headers",
            base: Case { ip_options: true, ..base(TCP6) },
            needs_csum: true,
            force_zero: false,
        },
        NoneCase { name: "udp4 needs_csum", base: base(UDP4), needs_csum: true, force_zero: false },
        NoneCase { name: "udp6 needs_csum", base: base(UDP6), needs_csum: true, force_zero: false },
        NoneCase { name: "udp4 checksum 0 sent as ffff", base: base(UDP4), needs_csum: true, force_zero: true },
        NoneCase { name: "udp6 checksum 0 sent as ffff", base: base(UDP6), needs_csum: true, force_zero: true },
        NoneCase { name: "tcp4 no csum: unchanged", base: base(TCP4), needs_csum: false, force_zero: false },
        NoneCase { name: "udp6 no csum: unchanged", base: base(UDP6), needs_csum: false, force_zero: false },
        NoneCase {
            name: "large gso_size ignored",
            base: Case { gso_size: 1448, ..base(TCP4) },
            needs_csum: true,
            force_zero: false,
        },
    ];
    for nc in cases {
        let c = Case { vnet_flags: if nc.needs_csum { FLAG_NEEDS_CSUM } else { 0 }, ..nc.base };
        let mut b = build(&c);
        let l4_off = b.ip_hdr_len();
        let field = l4_off + if c.tcp { 16 } else { 6 };
        if nc.force_zero {
            // Sum over the L4 region including the pseudo-header sum in the field; make the first two
            // payload bytes bring that sum to 0xFFFF so the inverted result is 0.
            let at = 10 + l4_off + b.l4_hdr_len();
            b.frame[at..at + 2].copy_from_slice(&[0, 0]);
            let s = ones_sum(&[&b.frame[10 + l4_off..]]);
            b.frame[at..at + 2].copy_from_slice(&(0xffff - s).to_be_bytes());
            assert_eq!(!ones_sum(&[&b.frame[10 + l4_off..]]), 0, "{}: construction", nc.name);
            b.payload[..2].copy_from_slice(&b.frame[at..at + 2]);
        }
        let input = b.packet().to_vec();
        let p = plan(&b.frame).unwrap();
        assert_eq!(
            (p.kind, p.count, p.seg_ip_len, p.last_ip_len),
            (GsoKind::None, 1, input.len(), input.len()),
            "{}",
            nc.name
        );
        let segs = split_to_vec(&b.frame).unwrap_or_else(|e| panic!("{}: {e:?}", nc.name));
        assert_eq!(segs.len(), 1, "{}", nc.name);
        let out = &segs[0];
        let mut want = input.clone();
        if nc.needs_csum {
            let (src, dst): (&[u8], &[u8]) = match &b.ip {
                Ip::V4(h) => (&h.source, &h.destination),
                Ip::V6(h) => (&h.source, &h.destination),
            };
            let csum = match &b.l4 {
                L4::Tcp(t) => tcp_checksum(&b.ip, t, &b.payload),
                L4::Udp(u) => udp_checksum(&b.ip, u, &b.payload),
            };
            if nc.force_zero {
                assert_eq!(csum, 0xffff, "{}: etherparse maps 0 to 0xFFFF", nc.name);
            }
            // And the reference: the whole L4 segment with the checksum and pseudo-header sums to 0xFFFF.
            want[field..field + 2].copy_from_slice(&csum.to_be_bytes());
            let pseudo = pseudo_header(src, dst, if c.tcp { 6 } else { 17 }, want.len() - l4_off);
            assert_eq!(ones_sum(&[&pseudo, &want[l4_off..]]), 0xffff, "{}: reference verification", nc.name);
        }
        assert!(*out == want, "{}: output differs from the expected packet", nc.name);

        let mut strided = vec![MARK; 8 + want.len() + 5];
        split_into(&b.frame, Layout { headroom: 8, tailroom: 5 }, &mut strided).unwrap();
        assert!(strided[8..8 + want.len()] == want[..], "{}: strided", nc.name);
        assert!(strided[..8].iter().chain(&strided[8 + want.len()..]).all(|&x| x == MARK), "{}: rooms", nc.name);
    }
}

#[test]
fn gso_none_checksum_at_any_in_range_offset() {
    // The kernel's generic rule for protocols other than TCP/UDP: csum_start/csum_offset anywhere after the
    // IP header (here an ICMP checksum 2 bytes into the L4 part), result = inverted fold of the sum from
    // csum_start. For TCP and UDP the field must be their checksum field.
    let b = build(&Case { gso_type: GSO_NONE, gso_size: 0, payload: 101, segments: 1, ..UDP4 });
    let mut frame = b.frame.clone();
    let start = 20usize;
    frame[6..8].copy_from_slice(&(start as u16).to_ne_bytes());
    frame[8..10].copy_from_slice(&2u16.to_ne_bytes());
    assert_eq!(split_to_vec(&frame), Err(PacketError::ChecksumOutOfRange), "UDP with a field off its checksum");
    frame[10 + 9] = 1; // ICMP
    let pkt = &frame[10..];
    let want = !ones_sum(&[&pkt[start..]]);
    let out = split_to_vec(&frame).unwrap();
    let mut expected = pkt.to_vec();
    expected[start + 2..start + 4].copy_from_slice(&want.to_be_bytes());
    assert!(out[0] == expected);
}

/// A frame edited into a malformed one, and the error it must give.
struct Bad {
    name: &'static str,
    base: Case,
    edit: fn(&mut Vec<u8>),
    want: PacketError,
}

fn set_ne16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}

fn set_be16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn malformed_cases() -> Vec<Bad> {
    let tcp4 = Case { payload: 3000, segments: 3, ..TCP4 };
    let tcp6 = Case { payload: 3000, segments: 3, ..TCP6 };
    let udp4 = Case { payload: 3000, segments: 3, ..UDP4 };
    let udp6 = Case { payload: 3000, segments: 3, ..UDP6 };
    let none4 = Case { gso_type: GSO_NONE, gso_size: 0, payload: 100, segments: 1, ..UDP4 };
    vec![
        Bad { name: "empty frame", base: tcp4, edit: |f| f.clear(), want: PacketError::Truncated },
        Bad { name: "truncated vnet header", base: tcp4, edit: |f| f.truncate(9), want: PacketError::Truncated },
        Bad { name: "vnet header only", base: tcp4, edit: |f| f.truncate(10), want: PacketError::Truncated },
        Bad { name: "truncated ipv4 header", base: tcp4, edit: |f| f.truncate(10 + 19), want: PacketError::Truncated },
        Bad { name: "truncated ipv6 header", base: tcp6, edit: |f| f.truncate(10 + 39), want: PacketError::Truncated },
        Bad {
            name: "truncated ip (buffer shorter than ipv4 length)",
            base: tcp4,
            edit: |f| f.truncate(f.len() - 100),
            want: PacketError::Truncated,
        },
        Bad {
            name: "truncated ip (buffer shorter than ipv6 length)",
            base: udp6,
            edit: |f| f.truncate(f.len() - 1),
            want: PacketError::Truncated,
        },
        Bad {
            name: "truncated tcp header",
            base: tcp4,
            edit: |f| {
                f.truncate(10 + 20 + 19);
                set_be16(f, 12, 39)
            },
            want: PacketError::Truncated,
        },
        Bad {
            name: "truncated udp header",
            base: udp4,
            edit: |f| {
                f.truncate(10 + 20 + 7);
                set_be16(f, 12, 27)
            },
            want: PacketError::Truncated,
        },
        Bad {
            name: "ipv4 length larger than buffer",
            base: udp4,
            edit: |f| {
                let l = f.len() - 10 + 1;
                set_be16(f, 12, l as u16)
            },
            want: PacketError::Truncated,
        },
        Bad {
            name: "ipv4 length smaller than buffer",
            base: tcp4,
            edit: |f| f.extend_from_slice(&[0; 4]),
            want: PacketError::LengthMismatch,
        },
        Bad {
            name: "ipv4 length smaller than buffer, gso none",
            base: none4,
            edit: |f| f.push(0),
            want: PacketError::LengthMismatch,
        },
        Bad {
            name: "ipv6 length smaller than buffer",
            base: tcp6,
            edit: |f| f.extend_from_slice(&[0; 2]),
            want: PacketError::LengthMismatch,
        },
        Bad {
            name: "ipv6 length larger than buffer",
            base: tcp6,
            edit: |f| {
                let l = f.len() - 50 + 8;
                set_be16(f, 14, l as u16)
            },
            want: PacketError::Truncated,
        },
        Bad {
            name: "ipv4 length below header",
            base: tcp4,
            edit: |f| set_be16(f, 12, 19),
            want: PacketError::LengthMismatch,
        },
        Bad {
            name: "udp length too small",
            base: udp4,
            edit: |f| {
                let l = f.len() - 30 - 1;
                set_be16(f, 10 + 20 + 4, l as u16)
            },
            want: PacketError::LengthMismatch,
        },
        Bad {
            name: "udp length too large",
            base: udp6,
            edit: |f| {
                let l = f.len() - 50 + 1;
                set_be16(f, 10 + 40 + 4, l as u16)
            },
            want: PacketError::LengthMismatch,
        },
        Bad {
            name: "over 64 KiB of ipv4",
            base: Case { payload: 65_495, segments: 46, ..TCP4 },
            edit: |f| f.push(0),
            want: PacketError::TooLarge,
        },
        Bad {
            name: "over 64 KiB of ipv6",
            base: Case { payload: 65_000, segments: 130, gso_size: 500, ..UDP6 },
            edit: |f| {
                let extra = 65_535 - (f.len() - 50);
                f.extend(std::iter::repeat(7).take(extra));
                set_be16(f, 14, 65_535);
                set_be16(f, 10 + 40 + 4, 65_535);
            },
            want: PacketError::TooLarge,
        },
        Bad { name: "gso_size 0 tcp", base: tcp4, edit: |f| set_ne16(f, 4, 0), want: PacketError::GsoSizeZero },
        Bad { name: "gso_size 0 udp", base: udp6, edit: |f| set_ne16(f, 4, 0), want: PacketError::GsoSizeZero },
        Bad {
            name: "gso csum_start outside packet",
            base: tcp4,
            edit: |f| set_ne16(f, 6, 60_000),
            want: PacketError::ChecksumOutOfRange,
        },
        Bad {
            name: "gso csum_start not at l4",
            base: tcp6,
            edit: |f| set_ne16(f, 6, 38),
            want: PacketError::ChecksumOutOfRange,
        },
        Bad {
            name: "gso csum_offset of udp on tcp",
            base: tcp4,
            edit: |f| set_ne16(f, 8, 6),
            want: PacketError::ChecksumOutOfRange,
        },
        Bad {
            name: "gso csum_offset of tcp on udp",
            base: udp4,
            edit: |f| set_ne16(f, 8, 16),
            want: PacketError::ChecksumOutOfRange,
        },
        Bad {
            name: "none csum field past the end",
            base: none4,
            edit: |f| {
                let l = f.len() - 10 - 20 - 1;
                set_ne16(f, 8, l as u16)
            },
            want: PacketError::ChecksumOutOfRange,
        },
        Bad {
            name: "none csum_start past the end",
            base: none4,
            edit: |f| set_ne16(f, 6, u16::MAX),
            want: PacketError::ChecksumOutOfRange,
        },
        Bad { name: "tcpv4 on ipv6", base: tcp6, edit: |f| f[1] = GSO_TCPV4, want: PacketError::GsoTypeMismatch },
        Bad { name: "tcpv6 on ipv4", base: tcp4, edit: |f| f[1] = GSO_TCPV6, want: PacketError::GsoTypeMismatch },
        Bad { name: "udp_l4 on tcp", base: tcp4, edit: |f| f[1] = GSO_UDP_L4, want: PacketError::GsoTypeMismatch },
        Bad { name: "udp_l4 on tcp ipv6", base: tcp6, edit: |f| f[1] = GSO_UDP_L4, want: PacketError::GsoTypeMismatch },
        Bad { name: "tcpv4 on udp", base: udp4, edit: |f| f[1] = GSO_TCPV4, want: PacketError::GsoTypeMismatch },
        Bad {
            name: "tcpv4 on icmp",
            base: udp4,
            edit: |f| {
                f[1] = GSO_TCPV4;
                f[10 + 9] = 1
            },
            want: PacketError::GsoTypeMismatch,
        },
        Bad { name: "bad ihl 4", base: tcp4, edit: |f| f[10] = 0x44, want: PacketError::BadHeader },
        Bad { name: "bad ihl 0", base: udp4, edit: |f| f[10] = 0x40, want: PacketError::BadHeader },
        Bad { name: "tcp data offset 4", base: tcp4, edit: |f| f[10 + 20 + 12] = 0x40, want: PacketError::BadHeader },
        Bad {
            name: "ipv4 fragment (more fragments)",
            base: udp4,
            edit: |f| f[10 + 6] |= 0x20,
            want: PacketError::BadHeader,
        },
        Bad { name: "ipv4 fragment (offset)", base: tcp4, edit: |f| f[10 + 7] = 1, want: PacketError::BadHeader },
        Bad { name: "ipv6 fragment header", base: udp6, edit: |f| f[10 + 6] = 44, want: PacketError::BadHeader },
        Bad { name: "not ip", base: tcp4, edit: |f| f[10] = 0x55, want: PacketError::NotIp },
        Bad { name: "unknown gso_type 3", base: tcp4, edit: |f| f[1] = 3, want: PacketError::BadVnetHeader },
        Bad { name: "unknown gso_type 0x41", base: tcp4, edit: |f| f[1] = 0x41, want: PacketError::BadVnetHeader },
        Bad { name: "unknown flag", base: tcp4, edit: |f| f[0] = 4, want: PacketError::BadVnetHeader },
    ]
}

#[test]
fn malformed_frames_give_their_error() {
    for bad in malformed_cases() {
        let mut frame = build(&bad.base).frame;
        // Each edit must start from a frame that is valid.
        assert!(plan(&frame).is_ok(), "{}: base frame invalid", bad.name);
        (bad.edit)(&mut frame);
        assert_eq!(plan(&frame), Err(bad.want), "{}: plan", bad.name);
        assert_eq!(split_to_vec(&frame), Err(bad.want), "{}: split_to_vec", bad.name);
        let mut out = vec![MARK; 70_000];
        assert_eq!(split_into(&frame, Layout::default(), &mut out), Err(bad.want), "{}: split_into", bad.name);
        assert!(out.iter().all(|&x| x == MARK), "{}: output written on error", bad.name);
    }
}

#[test]
fn buffer_too_small_and_absurd_layouts() {
    let b = build(&Case { payload: 3000, segments: 3, ..TCP4 });
    let need = 2 * (40 + 1448) + 40 + (3000 - 2 * 1448);
    let mut out = vec![0u8; need];
    assert!(split_into(&b.frame, Layout::default(), &mut out).is_ok());
    assert_eq!(split_into(&b.frame, Layout::default(), &mut out[..need - 1]), Err(PacketError::BufferTooSmall));
    assert_eq!(split_into(&b.frame, Layout::default(), &mut []), Err(PacketError::BufferTooSmall));
    for layout in [
        Layout { headroom: usize::MAX, tailroom: 0 },
        Layout { headroom: 0, tailroom: usize::MAX },
        Layout { headroom: usize::MAX / 2, tailroom: usize::MAX / 2 },
        Layout { headroom: usize::MAX / 3, tailroom: 0 },
    ] {
        assert_eq!(split_into(&b.frame, layout, &mut out), Err(PacketError::BufferTooSmall), "{layout:?}");
        let p = plan(&b.frame).unwrap();
        assert_eq!(p.buffer_len(layout), usize::MAX, "{layout:?}: saturates");
    }
}

/// Every prefix and many single-byte corruptions of valid frames: no panic, and whatever is accepted
/// comes out with the lengths the plan promised.
#[test]
fn no_panics_on_truncated_or_corrupted_frames() {
    let mut cases = gso_cases();
    cases.retain(|c| c.payload <= 10_000);
    cases.push(Case { gso_type: GSO_NONE, gso_size: 0, payload: 300, segments: 1, ..TCP6 });
    for c in cases {
        let frame = build(&c).frame;
        let hdr_end = frame.len().min(10 + 40 + 24 + 32 + 4);
        for len in 0..=hdr_end {
            let _ = split_to_vec(&frame[..len]);
        }
        for pos in 0..hdr_end {
            for v in [0u8, 1, 0x0f, 0x45, 0x60, 0x80, 0xff] {
                let mut f = frame.clone();
                f[pos] = v;
                let mut f2 = f.clone();
                f2.truncate(f.len() - 3);
                for f in [f, f2] {
                    if let Ok(p) = plan(&f) {
                        let segs = split_to_vec(&f).unwrap_or_else(|e| panic!("{}: plan ok but split {e:?}", c.name));
                        assert_eq!(segs.len(), p.count);
                        assert!(segs.iter().take(p.count - 1).all(|s| s.len() == p.seg_ip_len));
                        assert_eq!(segs.last().map(Vec::len), Some(p.last_ip_len));
                    }
                }
            }
        }
    }
}

#[test]
fn segment_ip_len_by_index() {
    let b = build(&Case { gso_size: 1000, payload: 2500, segments: 3, ..TCP4 });
    let p = plan(&b.frame).unwrap();
    assert_eq!((0..4).map(|i| p.segment_ip_len(i)).collect::<Vec<_>>(), vec![Some(1040), Some(1040), Some(540), None]);
    assert_eq!(p.segment_ip_len(usize::MAX), None);
}
