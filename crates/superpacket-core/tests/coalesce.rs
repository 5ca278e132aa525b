//! Coalescing cases, grouped like the kernel's GRO selftest (tools/testing/selftests/net/gro.c):
//! data, ack, flags, TCP options, checksum, sequence, IP fields, IPv4 options, IPv6 extension headers,
//! IPv4 ID, size limits, interleaved flows; then UDP, options and malformed input.
//!
//! Packets are built with etherparse. The expected bytes of a merged frame come from building, with
//! etherparse, one packet that carries the first packet's headers and all payloads, then putting a
//! pseudo-header sum computed here by a plain RFC 1071 loop into its L4 checksum field; the virtio
//! header is decoded here byte by byte. Nothing expected is computed by the crate under test.

use etherparse::{
    IpDscp, IpEcn, IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv4Options, Ipv6Extensions, Ipv6FlowLabel,
    Ipv6Header, Ipv6RawExtHeader, PacketBuilder, SlicedPacket, TcpHeader, TransportSlice,
};
use superpacket_core::coalesce::{CoalesceOptions, Coalescer, Frames};

/// Everything a test packet can vary.
#[derive(Debug, Clone)]
struct Pkt {
    v6: bool,
    udp: bool,
    /// Last byte of the source address, to make separate flows.
    host: u8,
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    window: u16,
    psh: bool,
    syn: bool,
    fin: bool,
    rst: bool,
    urg: bool,
    ece: bool,
    cwr: bool,
    payload: Vec<u8>,
    id: u16,
    ttl: u8,
    /// DSCP << 2 | ECN for IPv4, the traffic class for IPv6.
    tos: u8,
    df: bool,
    more_fragments: bool,
    flow_label: u32,
    tcp_options: Vec<u8>,
    ipv4_options: Vec<u8>,
    ipv6_hop_by_hop: bool,
    /// Flip a bit of the TCP/UDP checksum after building.
    bad_l4_checksum: bool,
    /// Flip a bit of the IPv4 header checksum after building.
    bad_ip_checksum: bool,
    zero_udp_checksum: bool,
}

fn payload(len: usize, seed: u32) -> Vec<u8> {
    (0..len).map(|i| (seed as usize).wrapping_mul(31).wrapping_add(i * 7) as u8).collect()
}

fn tcp4(len: usize) -> Pkt {
    Pkt {
        v6: false,
        udp: false,
        host: 1,
        src_port: 40_000,
        dst_port: 443,
        seq: 1_000_000,
        ack: 777,
        window: 512,
        psh: false,
        syn: false,
        fin: false,
        rst: false,
        urg: false,
        ece: false,
        cwr: false,
        payload: payload(len, 0),
        id: 100,
        ttl: 64,
        tos: 0,
        df: true,
        more_fragments: false,
        flow_label: 0,
        tcp_options: Vec::new(),
        ipv4_options: Vec::new(),
        ipv6_hop_by_hop: false,
        bad_l4_checksum: false,
        bad_ip_checksum: false,
        zero_udp_checksum: false,
    }
}

fn tcp6(len: usize) -> Pkt {
    Pkt { v6: true, flow_label: 0x12345, ..tcp4(len) }
}

fn udp4(len: usize) -> Pkt {
    Pkt { udp: true, src_port: 5000, dst_port: 51820, ..tcp4(len) }
}

fn udp6(len: usize) -> Pkt {
    Pkt { v6: true, flow_label: 0x54321, ..udp4(len) }
}

impl Pkt {
    fn with(mut self, f: impl FnOnce(&mut Pkt)) -> Pkt {
        f(&mut self);
        self
    }

    fn proto(&self) -> IpNumber {
        if self.udp {
            IpNumber::UDP
        } else {
            IpNumber::TCP
        }
    }

    fn ip_len(&self) -> usize {
        if self.v6 {
            40
        } else {
            20
        }
    }

    fn l4_hdr_len(&self) -> usize {
        if self.udp {
            8
        } else {
            20 + self.tcp_options.len()
        }
    }

    fn build(&self) -> Vec<u8> {
        let src4 = [10, 0, 0, self.host];
        let dst4 = [10, 0, 1, 1];
        let mut src6 = [0u8; 16];
        src6[..2].copy_from_slice(&[0xfd, 0x00]);
        src6[15] = self.host;
        let mut dst6 = src6;
        dst6[15] = 0xee;
        let ip = if self.v6 {
            let header = Ipv6Header {
                traffic_class: self.tos,
                flow_label: Ipv6FlowLabel::try_new(self.flow_label).unwrap(),
                payload_length: 0,
                next_header: self.proto(),
                hop_limit: self.ttl,
                source: src6,
                destination: dst6,
            };
            let mut exts = Ipv6Extensions::default();
            if self.ipv6_hop_by_hop {
                exts.hop_by_hop_options = Some(Ipv6RawExtHeader::new_raw(self.proto(), &[1, 4, 0, 0, 0, 0]).unwrap());
            }
            IpHeaders::Ipv6(header, exts)
        } else {
            let mut header = Ipv4Header::new(0, self.ttl, self.proto(), src4, dst4).unwrap();
            header.dscp = IpDscp::try_new(self.tos >> 2).unwrap();
            header.ecn = IpEcn::try_new(self.tos & 3).unwrap();
            header.identification = self.id;
            header.dont_fragment = self.df;
            header.more_fragments = self.more_fragments;
            header.options = Ipv4Options::try_from(&self.ipv4_options[..]).unwrap();
            IpHeaders::Ipv4(header, Ipv4Extensions::default())
        };
        let mut out = Vec::new();
        let builder = PacketBuilder::ip(ip);
        if self.udp {
            builder.udp(self.src_port, self.dst_port).write(&mut out, &self.payload).unwrap();
        } else {
            let mut tcp = TcpHeader::new(self.src_port, self.dst_port, self.seq, self.window);
            tcp.acknowledgment_number = self.ack;
            tcp.ack = true;
            tcp.psh = self.psh;
            tcp.syn = self.syn;
            tcp.fin = self.fin;
            tcp.rst = self.rst;
            tcp.urg = self.urg;
            tcp.urgent_pointer = if self.urg { 1 } else { 0 };
            tcp.ece = self.ece;
            tcp.cwr = self.cwr;
            tcp.set_options_raw(&self.tcp_options).unwrap();
            builder.tcp_header(tcp).write(&mut out, &self.payload).unwrap();
        }
        // The builder must have produced what the case means, or the case tests nothing.
        match (self.udp, SlicedPacket::from_ip(&out).unwrap().transport) {
            (true, Some(TransportSlice::Udp(_))) | (false, Some(TransportSlice::Tcp(_))) => {}
            (_, None) if self.more_fragments => {}
            other => panic!("built the wrong transport: {other:?}"),
        }
        let l4 = out.len() - self.payload.len() - self.l4_hdr_len();
        let csum = l4 + if self.udp { 6 } else { 16 };
        if self.bad_l4_checksum {
            out[csum + 1] ^= 0x40;
        }
        if self.zero_udp_checksum {
            out[csum..csum + 2].copy_from_slice(&[0, 0]);
        }
        if self.bad_ip_checksum {
            out[11] ^= 0x01;
        }
        out
    }
}

/// Consecutive segments of one flow with the given payload sizes: sequence numbers and IPv4 IDs
/// continue from `first`.
fn stream(first: Pkt, sizes: &[usize]) -> Vec<Pkt> {
    let mut seq = first.seq;
    sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let p = Pkt { seq, id: first.id.wrapping_add(i as u16), payload: payload(len, seq), ..first.clone() };
            seq = seq.wrapping_add(len as u32);
            p
        })
        .collect()
}

/// Changes packet `i` of a list.
fn edit(mut pkts: Vec<Pkt>, i: usize, f: impl FnOnce(&mut Pkt)) -> Vec<Pkt> {
    f(&mut pkts[i]);
    pkts
}

/// Interleaves lists packet by packet.
fn interleave(lists: &[Vec<Pkt>]) -> Vec<Pkt> {
    let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest).flat_map(|i| lists.iter().filter_map(move |l| l.get(i).cloned())).collect()
}

/// One expected output frame.
#[derive(Debug, Clone)]
enum Out {
    /// Input packet i, unchanged, behind a zeroed virtio header.
    Plain(usize),
    /// Input packets merged into one GSO frame.
    Merged(Vec<usize>),
}
use Out::{Merged, Plain};

fn merged(range: std::ops::Range<usize>) -> Out {
    Merged(range.collect())
}

/// RFC 1071 sum over big-endian words, folded, not inverted.
fn ones_sum(bytes: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for pair in bytes.chunks(2) {
        s += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The pseudo-header sum a NEEDS_CSUM frame carries in its L4 checksum field.
fn pseudo_header(ip: &[u8], v6: bool, proto: u8, l4_len: usize) -> u16 {
    let mut b = Vec::new();
    if v6 {
        b.extend_from_slice(&ip[8..40]);
        b.extend_from_slice(&(l4_len as u32).to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, proto]);
    } else {
        b.extend_from_slice(&ip[12..20]);
        b.extend_from_slice(&[0, proto]);
        b.extend_from_slice(&(l4_len as u16).to_be_bytes());
    }
    ones_sum(&b)
}

struct Vnet {
    flags: u8,
    gso_type: u8,
    hdr_len: u16,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
}

fn vnet(frame: &[u8]) -> Vnet {
    let u = |i: usize| u16::from_ne_bytes([frame[i], frame[i + 1]]);
    Vnet { flags: frame[0], gso_type: frame[1], hdr_len: u(2), gso_size: u(4), csum_start: u(6), csum_offset: u(8) }
}

fn check_merged(name: &str, frame: &[u8], pkts: &[Pkt], members: &[usize]) {
    let first = &pkts[members[0]];
    let last = &pkts[*members.last().unwrap()];
    let all: Vec<u8> = members.iter().flat_map(|&i| pkts[i].payload.clone()).collect();
    let whole = Pkt { payload: all, psh: last.psh, ..first.clone() }.build();
    let ip_len = first.ip_len();
    let l4_len = whole.len() - ip_len;
    let csum_field = ip_len + if first.udp { 6 } else { 16 };
    let mut expected = whole.clone();
    let proto = if first.udp { 17 } else { 6 };
    let pseudo = pseudo_header(&whole, first.v6, proto, l4_len);
    expected[csum_field..csum_field + 2].copy_from_slice(&pseudo.to_be_bytes());

    let h = vnet(frame);
    let gso_type = match (first.udp, first.v6) {
        (true, _) => 5,
        (false, false) => 1,
        (false, true) => 4,
    };
    assert_eq!(h.flags, 1, "{name}: flags");
    assert_eq!(h.gso_type, gso_type, "{name}: gso_type");
    assert_eq!(usize::from(h.hdr_len), ip_len + first.l4_hdr_len(), "{name}: hdr_len");
    assert_eq!(usize::from(h.gso_size), first.payload.len(), "{name}: gso_size");
    assert_eq!(usize::from(h.csum_start), ip_len, "{name}: csum_start");
    assert_eq!(h.csum_offset, if first.udp { 6 } else { 16 }, "{name}: csum_offset");
    assert!(frame[10..] == expected[..], "{name}: merged packet bytes differ from the expected packet");

    // Completing the checksum the way the kernel does (sum from csum_start, invert) gives the checksum
    // of the packet etherparse built with all the payload.
    let completed = !ones_sum(&frame[10 + ip_len..]);
    let real = u16::from_be_bytes([whole[csum_field], whole[csum_field + 1]]);
    let completed = if first.udp && completed == 0 { 0xffff } else { completed };
    assert_eq!(completed, real, "{name}: completed L4 checksum");
}

fn run(name: &str, options: CoalesceOptions, pkts: &[Pkt], expected: &[Out]) {
    let bytes: Vec<Vec<u8>> = pkts.iter().map(Pkt::build).collect();
    run_bytes(name, options, &bytes, expected, Some(pkts));
}

fn run_bytes(name: &str, options: CoalesceOptions, bytes: &[Vec<u8>], expected: &[Out], pkts: Option<&[Pkt]>) {
    let mut c = Coalescer::new(options);
    let mut out = Frames::new();
    c.coalesce(bytes, &mut out);
    let got: Vec<&[u8]> = out.iter().collect();
    assert_eq!(got.len(), expected.len(), "{name}: frame count");
    assert_eq!(out.len(), expected.len(), "{name}: Frames::len");
    for (k, (frame, want)) in got.iter().zip(expected).enumerate() {
        assert_eq!(out.get(k), Some(*frame), "{name}: Frames::get({k})");
        match want {
            Plain(i) => {
                assert_eq!(&frame[..10], &[0u8; 10], "{name}: frame {k} header");
                assert!(frame[10..] == bytes[*i][..], "{name}: frame {k} should be packet {i} unchanged");
            }
            Merged(members) => check_merged(&format!("{name}, frame {k}"), frame, pkts.unwrap(), members),
        }
    }
    // A second batch through the same coalescer and output gives the same frames: no state leaks.
    let first_pass: Vec<Vec<u8>> = got.iter().map(|f| f.to_vec()).collect();
    out.clear();
    assert!(out.is_empty());
    c.coalesce(bytes, &mut out);
    assert_eq!(out.iter().map(<[u8]>::to_vec).collect::<Vec<_>>(), first_pass, "{name}: second pass");
}

const ALL: CoalesceOptions = CoalesceOptions { tcp: true, udp: true };

fn plain(n: usize) -> Vec<Out> {
    (0..n).map(Plain).collect()
}

/// Timestamp option (with two NOPs before it) as Linux sends it.
fn timestamps(val: u32, ecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&val.to_be_bytes());
    o.extend_from_slice(&ecr.to_be_bytes());
    o
}

#[test]
fn data() {
    for (base, label) in [(tcp4(0), "tcp4"), (tcp6(0), "tcp6")] {
        let cases: Vec<(&str, Vec<usize>, Vec<Out>)> = vec![
            ("same size", vec![1000; 4], vec![merged(0..4)]),
            ("smaller last", vec![1000, 1000, 500], vec![merged(0..3)]),
            ("larger after smaller", vec![1000, 500, 1000], vec![merged(0..2), Plain(2)]),
            ("larger second", vec![500, 1000, 1000], vec![Plain(0), merged(1..3)]),
            ("odd sizes", vec![999, 999, 999, 3], vec![merged(0..4)]),
            ("one byte each", vec![1; 5], vec![merged(0..5)]),
            ("single packet", vec![1000], vec![Plain(0)]),
        ];
        for (name, sizes, expected) in cases {
            run(&format!("{label} data: {name}"), ALL, &stream(base.clone(), &sizes), &expected);
        }
    }
    run("empty batch", ALL, &[], &[]);
}

#[test]
fn ack() {
    for base in [tcp4(0), tcp6(0)] {
        run("pure acks are not merged", ALL, &stream(base.clone(), &[0, 0, 0]), &plain(3));
        let pkts = edit(stream(base.clone(), &[1000, 1000, 1000]), 2, |p| p.ack += 1448);
        run("differing ack numbers", ALL, &pkts, &[merged(0..2), Plain(2)]);
        let pkts = edit(stream(base.clone(), &[1000, 1000, 1000]), 1, |p| p.window += 1);
        run("differing windows", ALL, &pkts, &[Plain(0), Plain(1), Plain(2)]);
        run("pure ack then data", ALL, &stream(base.clone(), &[0, 1000, 1000]), &[Plain(0), merged(1..3)]);
    }
}

#[test]
fn flags() {
    for base in [tcp4(0), tcp6(0)] {
        let pkts = edit(stream(base.clone(), &[1000; 4]), 1, |p| p.psh = true);
        run("psh ends the run and stays on the merged header", ALL, &pkts, &[merged(0..2), merged(2..4)]);
        let pkts = edit(stream(base.clone(), &[1000; 3]), 2, |p| p.psh = true);
        run("psh on the last", ALL, &pkts, &[merged(0..3)]);
        let pkts = edit(stream(base.clone(), &[1000; 3]), 0, |p| p.psh = true);
        run("psh on the first", ALL, &pkts, &[Plain(0), merged(1..3)]);
        type Flag = fn(&mut Pkt);
        let flags: [(&str, Flag); 6] = [
            ("syn", |p| p.syn = true),
            ("fin", |p| p.fin = true),
            ("rst", |p| p.rst = true),
            ("urg", |p| p.urg = true),
            ("cwr", |p| p.cwr = true),
            ("ece", |p| p.ece = true),
        ];
        for (flag, set) in flags {
            let pkts = edit(stream(base.clone(), &[1000; 5]), 2, set);
            run(&format!("{flag} in the middle"), ALL, &pkts, &[merged(0..2), Plain(2), merged(3..5)]);
            let pkts = edit(stream(base.clone(), &[1000; 3]), 2, set);
            run(&format!("{flag} last"), ALL, &pkts, &[merged(0..2), Plain(2)]);
        }
    }
}

#[test]
fn tcp_options() {
    for base in [tcp4(0), tcp6(0)] {
        let ts = base.clone().with(|p| p.tcp_options = timestamps(1, 2));
        run("same timestamps", ALL, &stream(ts.clone(), &[1000; 3]), &[merged(0..3)]);
        let pkts = edit(stream(ts.clone(), &[1000; 3]), 2, |p| p.tcp_options = timestamps(2, 2));
        run("different timestamp value", ALL, &pkts, &[merged(0..2), Plain(2)]);
        let pkts = edit(stream(ts.clone(), &[1000; 3]), 1, |p| p.tcp_options = timestamps(1, 3));
        let pkts = edit(pkts, 2, |p| p.tcp_options = timestamps(1, 3));
        run("different timestamp echo", ALL, &pkts, &[Plain(0), merged(1..3)]);
        let pkts = edit(stream(ts.clone(), &[1000; 3]), 1, |p| p.tcp_options.clear());
        run("options then none", ALL, &pkts, &[Plain(0), Plain(1), Plain(2)]);
        let mss = base.clone().with(|p| p.tcp_options = vec![2, 4, 5, 0xb4, 1, 1, 1, 0]);
        let pkts = edit(stream(mss, &[1000; 3]), 2, |p| p.tcp_options = vec![1, 1, 1, 1, 2, 4, 5, 0xb4]);
        run("same length, other bytes", ALL, &pkts, &[merged(0..2), Plain(2)]);
    }
}

#[test]
fn checksum() {
    for base in [tcp4(0), tcp6(0), udp4(0), udp6(0)] {
        let pkts = edit(stream(base.clone(), &[1000; 4]), 1, |p| p.bad_l4_checksum = true);
        run("bad L4 checksum", ALL, &pkts, &[Plain(0), Plain(1), merged(2..4)]);
        let pkts = edit(stream(base.clone(), &[1000; 3]), 0, |p| p.bad_l4_checksum = true);
        run("bad L4 checksum first", ALL, &pkts, &[Plain(0), merged(1..3)]);
        if !base.v6 {
            let pkts = edit(stream(base.clone(), &[1000; 4]), 2, |p| p.bad_ip_checksum = true);
            run("bad IPv4 header checksum", ALL, &pkts, &[merged(0..2), Plain(2), Plain(3)]);
        }
    }
}

/// L4 checksums are checked while payloads are copied; a wrong one found there regroups the batch. The
/// result must be what checking first gives, whatever sits before it in the output.
#[test]
fn wrong_checksum_found_late() {
    // The good flow's run is written before the bad one's; the bad packet is the last of a long run.
    let good = stream(tcp4(0).with(|p| p.host = 2), &[1000; 3]);
    let bad = edit(stream(tcp4(0), &[1000; 5]), 4, |p| p.bad_l4_checksum = true);
    let pkts = interleave(&[good, bad]);
    let expected = [Merged(vec![0, 2, 4]), Merged(vec![1, 3, 5, 6]), Plain(7)];
    run("bad checksum after another flow's run", ALL, &pkts, &expected);

    // Frames already in the output stay as they were; stale bytes of a longer earlier batch are not counted.
    let bytes: Vec<Vec<u8>> = pkts.iter().map(Pkt::build).collect();
    let mut c = Coalescer::new(ALL);
    let mut out = Frames::new();
    let long: Vec<Vec<u8>> = stream(tcp4(0), &[1400; 40]).iter().map(Pkt::build).collect();
    c.coalesce(&long, &mut out);
    out.clear();
    out.push_frame(b"kept");
    c.coalesce(&bytes, &mut out);
    assert_eq!(out.len(), 4);
    assert_eq!(out.get(0), Some(&b"kept"[..]));
    check_merged("after a kept frame, frame 1", out.get(1).unwrap(), &pkts, &[0, 2, 4]);
    check_merged("after a kept frame, frame 2", out.get(2).unwrap(), &pkts, &[1, 3, 5, 6]);
    assert_eq!(&out.get(3).unwrap()[10..], &bytes[7][..]);
    assert_eq!(out.total_len(), out.iter().map(<[u8]>::len).sum::<usize>());
}

#[test]
fn sequence() {
    for base in [tcp4(0), tcp6(0)] {
        let pkts = edit(stream(base.clone(), &[1000; 4]), 2, |p| p.seq += 1);
        // Packet 3 continues packet 2's (shifted) sequence: it cannot join 0..2 but joins 2.
        let pkts = edit(pkts, 3, |p| p.seq += 1);
        run("gap", ALL, &pkts, &[merged(0..2), merged(2..4)]);
        let s = stream(base.clone(), &[1000; 3]);
        run("out of order", ALL, &[s[0].clone(), s[2].clone(), s[1].clone()], &plain(3));
        let s = stream(base.clone(), &[1000; 3]);
        let retransmit = Pkt { id: s[1].id + 1, ..s[1].clone() };
        run("retransmission", ALL, &[s[0].clone(), s[1].clone(), retransmit], &[merged(0..2), Plain(2)]);
        let wrap = base.clone().with(|p| p.seq = u32::MAX - 499);
        run("sequence number wraps", ALL, &stream(wrap, &[1000; 3]), &[merged(0..3)]);
    }
}

#[test]
fn ip_fields() {
    type Field = fn(&mut Pkt);
    let fields: [(&str, Field); 4] = [
        ("ttl/hop limit", |p| p.ttl = 63),
        ("tos/traffic class", |p| p.tos = 0x10 << 2),
        ("ecn bits", |p| p.tos = 1),
        ("flow label", |p| p.flow_label ^= 1),
    ];
    for base in [tcp4(0), tcp6(0), udp4(0), udp6(0)] {
        for (name, set) in fields {
            let pkts = edit(stream(base.clone(), &[1000; 3]), 2, set);
            let expected = if name == "flow label" && !base.v6 {
                vec![merged(0..3)] // no flow label in IPv4
            } else {
                vec![merged(0..2), Plain(2)]
            };
            run(&format!("{name} differs"), ALL, &pkts, &expected);
        }
        if !base.v6 {
            let pkts = edit(stream(base.clone(), &[1000; 3]), 2, |p| p.df = false);
            run("df differs", ALL, &pkts, &[merged(0..2), Plain(2)]);
            let no_df = base.clone().with(|p| p.df = false);
            run("df clear on all", ALL, &stream(no_df, &[1000; 3]), &[merged(0..3)]);
            let pkts = edit(stream(base.clone(), &[1000; 3]), 1, |p| p.more_fragments = true);
            run("first fragment", ALL, &pkts, &plain(3));
        }
    }
}

#[test]
fn ipv4_options_and_ipv6_extension_headers() {
    for base in [tcp4(0), udp4(0)] {
        let opts = base.with(|p| p.ipv4_options = vec![1, 1, 1, 0]);
        run("ipv4 options", ALL, &stream(opts.clone(), &[1000; 3]), &plain(3));
        let pkts = edit(stream(opts.with(|p| p.ipv4_options.clear()), &[1000; 3]), 2, |p| {
            p.ipv4_options = vec![1, 1, 1, 0];
        });
        run("ipv4 options on the last", ALL, &pkts, &[merged(0..2), Plain(2)]);
    }
    for base in [tcp6(0), udp6(0)] {
        let ext = base.clone().with(|p| p.ipv6_hop_by_hop = true);
        run("ipv6 hop-by-hop", ALL, &stream(ext, &[1000; 3]), &plain(3));
        let pkts = edit(stream(base, &[1000; 4]), 2, |p| p.ipv6_hop_by_hop = true);
        // The extension header breaks the flow's run: packet 3 cannot join 0..2 across it.
        run("ipv6 hop-by-hop in the middle", ALL, &pkts, &[merged(0..2), Plain(2), Plain(3)]);
    }
}

#[test]
fn ipv4_id() {
    for base in [tcp4(0), udp4(0)] {
        let pkts: Vec<Pkt> = stream(base.clone(), &[1000; 3]).into_iter().map(|p| Pkt { id: 7, ..p }).collect();
        run("same id", ALL, &pkts, &plain(3));
        let pkts = edit(stream(base.clone(), &[1000; 3]), 2, |p| p.id += 5);
        run("id jumps", ALL, &pkts, &[merged(0..2), Plain(2)]);
        let pkts: Vec<Pkt> = stream(base.clone(), &[1000; 3])
            .into_iter()
            .enumerate()
            .map(|(i, p)| Pkt { id: 50 - i as u16, ..p })
            .collect();
        run("id counts down", ALL, &pkts, &plain(3));
        let wrap = base.clone().with(|p| p.id = u16::MAX);
        run("id wraps", ALL, &stream(wrap, &[1000; 3]), &[merged(0..3)]);
    }
}

#[test]
fn large() {
    // 40 bytes of IPv4 + TCP header: 44 segments of 1,460 make 64,280 bytes, a 45th would pass 65,535.
    let pkts = stream(tcp4(0), &[1460; 46]);
    run("65,535-byte limit", ALL, &pkts, &[merged(0..44), merged(44..46)]);
    // Exactly 65,535 bytes fit; one more byte starts the next frame.
    let mut sizes = vec![13_099; 5];
    sizes.push(1);
    run("exactly 65,535 bytes", ALL, &stream(tcp4(0), &sizes), &[merged(0..5), Plain(5)]);
    // IPv6: 40 + 20 header, 65,535 bytes of IP at most.
    let mut sizes = vec![13_095; 5];
    sizes.push(1);
    run("ipv6 exactly 65,535 bytes", ALL, &stream(tcp6(0), &sizes), &[merged(0..5), Plain(5)]);
    let pkts = stream(udp4(0), &[1400; 50]);
    run("udp 65,535-byte limit", ALL, &pkts, &[merged(0..46), merged(46..50)]);
    // 64 segments at most.
    run("64-segment limit", ALL, &stream(tcp4(0), &[100; 130]), &[merged(0..64), merged(64..128), merged(128..130)]);
    run("udp 64-segment limit", ALL, &stream(udp6(0), &[10; 65]), &[merged(0..64), Plain(64)]);
}

#[test]
fn flows() {
    let a = stream(tcp4(0), &[1000; 3]);
    let b = stream(tcp4(0).with(|p| p.host = 2), &[1000; 3]);
    let c = stream(tcp6(0).with(|p| p.src_port = 1), &[1000; 3]);
    let d = stream(udp4(0), &[500; 3]);
    run(
        "two flows interleaved",
        ALL,
        &interleave(&[a.clone(), b.clone()]),
        &[Merged(vec![0, 2, 4]), Merged(vec![1, 3, 5])],
    );
    run(
        "four flows, both versions and protocols",
        ALL,
        &interleave(&[a.clone(), b.clone(), c, d.clone()]),
        &[Merged(vec![0, 4, 8]), Merged(vec![1, 5, 9]), Merged(vec![2, 6, 10]), Merged(vec![3, 7, 11])],
    );
    // Same addresses and ports, other protocol: another flow.
    let same_ports = stream(udp4(0).with(|p| (p.src_port, p.dst_port) = (40_000, 443)), &[500; 3]);
    run(
        "tcp and udp on the same ports",
        ALL,
        &interleave(&[a.clone(), same_ports]),
        &[Merged(vec![0, 2, 4]), Merged(vec![1, 3, 5])],
    );
    let mut pkts = interleave(&[a.clone(), b.clone()]);
    pkts[2].syn = true; // a[1]
    run(
        "flow broken by a packet that cannot merge",
        ALL,
        &pkts,
        &[Plain(0), Merged(vec![1, 3, 5]), Plain(2), Plain(4)],
    );
    let mut one_then_other = a.clone();
    one_then_other.extend(b.clone());
    one_then_other.extend(stream(Pkt { seq: a[2].seq + 1000, id: a[2].id + 1, ..a[0].clone() }, &[1000; 2]));
    // Another flow in between does not close a flow's run.
    run("flow resumes after another flow", ALL, &one_then_other, &[Merged(vec![0, 1, 2, 6, 7]), merged(3..6)]);
}

#[test]
fn udp() {
    for base in [udp4(0), udp6(0)] {
        run("same size", ALL, &stream(base.clone(), &[1200; 5]), &[merged(0..5)]);
        run("smaller last", ALL, &stream(base.clone(), &[1200, 1200, 3]), &[merged(0..3)]);
        run(
            "different sizes",
            ALL,
            &stream(base.clone(), &[1200, 800, 1200, 1300]),
            &[merged(0..2), Plain(2), Plain(3)],
        );
        run("empty datagrams", ALL, &stream(base.clone(), &[0, 0]), &plain(2));
        let other_port = stream(base.clone().with(|p| p.dst_port = 9), &[1200; 2]);
        run(
            "different ports interleaved",
            ALL,
            &interleave(&[stream(base.clone(), &[1200; 2]), other_port]),
            &[Merged(vec![0, 2]), Merged(vec![1, 3])],
        );
    }
    let zero = stream(udp4(0), &[1200; 3]);
    let pkts: Vec<Pkt> = zero.iter().cloned().map(|p| Pkt { zero_udp_checksum: true, ..p }).collect();
    run("zero checksum is never merged", ALL, &pkts, &plain(3));
    let pkts = edit(stream(udp4(0), &[1200; 3]), 1, |p| p.zero_udp_checksum = true);
    run("zero checksum in the middle", ALL, &pkts, &[Plain(0), Plain(1), Plain(2)]);

    // A UDP length field that disagrees with the IP length (checksum still right for the bytes).
    let mut bytes: Vec<Vec<u8>> = stream(udp4(0), &[1200; 3]).iter().map(Pkt::build).collect();
    let p = &mut bytes[1];
    p[24..26].copy_from_slice(&1000u16.to_be_bytes());
    p[26..28].copy_from_slice(&[0, 0]);
    let fixed = !ones_sum(&[&p[12..20], &[0, 17], &(p.len() as u16 - 20).to_be_bytes()[..], &p[20..]].concat());
    p[26..28].copy_from_slice(&fixed.to_be_bytes());
    run_bytes("udp length field disagrees", ALL, &bytes, &plain(3), None);
}

#[test]
fn options() {
    let tcp = stream(tcp4(0), &[1000; 2]);
    let udp = stream(udp6(0), &[1000; 2]);
    let pkts = interleave(&[tcp, udp]);
    let tcp_off = CoalesceOptions { tcp: false, udp: true };
    let udp_off = CoalesceOptions { tcp: true, udp: false };
    let both_off = CoalesceOptions { tcp: false, udp: false };
    run("tcp off", tcp_off, &pkts, &[Plain(0), Merged(vec![1, 3]), Plain(2)]);
    run("udp off", udp_off, &pkts, &[Merged(vec![0, 2]), Plain(1), Plain(3)]);
    run("both off", both_off, &pkts, &plain(4));
    assert_eq!(CoalesceOptions::default(), ALL);
    let mut c = Coalescer::new(ALL);
    c.set_options(tcp_off);
    assert_eq!(c.options(), tcp_off);
}

#[test]
fn malformed_and_other_packets_pass_through() {
    let good: Vec<Vec<u8>> = stream(tcp4(0), &[1000; 2]).iter().map(Pkt::build).collect();
    let icmp = {
        let mut v = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 1, 1], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut v, &[0; 32])
            .unwrap();
        v
    };
    let mut trailing = good[1].clone();
    trailing.extend_from_slice(&[0, 0, 0, 0]);
    let mut truncated = good[1].clone();
    truncated.truncate(500);
    let mut bad_doff = good[1].clone();
    bad_doff[32] = 0x40; // data offset 4
    let bytes = vec![
        good[0].clone(),
        vec![],
        vec![0x45],
        vec![0xff; 100],
        icmp,
        trailing,
        truncated,
        bad_doff,
        good[0][..20].to_vec(),
        good[1].clone(),
    ];
    // The packets with readable TCP ports (5: trailing bytes, 7: bad data offset) belong to the flow and
    // end its run, so the last packet cannot join packet 0 across them.
    run_bytes("malformed", ALL, &bytes, &plain(10), None);
    // Without the flow's own broken packets, the good ones merge around the garbage.
    let bytes = vec![good[0].clone(), vec![], vec![0xff; 100], good[1].clone()];
    let pkts = stream(tcp4(0), &[1000; 2]);
    let mut c = Coalescer::new(ALL);
    let mut out = Frames::new();
    c.coalesce(&bytes, &mut out);
    assert_eq!(out.len(), 3);
    check_merged("merged around garbage", out.get(0).unwrap(), &pkts, &[0, 1]);
    assert_eq!(out.get(1).unwrap(), &[0u8; 10][..]);
    assert_eq!(out.get(3), None);
}

#[test]
fn frames_container() {
    let mut f = Frames::new();
    assert!(f.is_empty());
    f.push_frame(b"abc");
    f.push_frame(b"");
    f.push_frame(b"de");
    assert_eq!(f.len(), 3);
    assert_eq!(f.get(0), Some(&b"abc"[..]));
    assert_eq!(f.get(1), Some(&b""[..]));
    assert_eq!(f.get(2), Some(&b"de"[..]));
    assert_eq!(f.get(3), None);
    assert_eq!(f.iter().collect::<Vec<_>>(), vec![&b"abc"[..], b"", b"de"]);
    assert_eq!(f.total_len(), 5);
    // Coalescing appends after what is there.
    let mut c = Coalescer::new(ALL);
    let bytes: Vec<Vec<u8>> = stream(tcp4(0), &[100; 2]).iter().map(Pkt::build).collect();
    c.coalesce(&bytes, &mut f);
    assert_eq!(f.len(), 4);
    assert_eq!(f.get(0), Some(&b"abc"[..]));
    f.clear();
    assert!(f.is_empty());
    assert_eq!(f.iter().count(), 0);
}
