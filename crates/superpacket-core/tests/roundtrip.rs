//! Coalescing then splitting gives back exactly the packets that went in, each flow in order.
//!
//! Random flows (IPv4/IPv6, TCP/UDP, TCP timestamps or not) send segments of random sizes, interleaved,
//! with PSH now and then, sequence gaps, IPv4 ID jumps, pure ACKs and zero UDP checksums. Every frame the
//! coalescer writes is split with `split::split_to_vec` (a frame without GSO is its packet).

use etherparse::{
    IpDscp, IpEcn, IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv6Extensions, Ipv6FlowLabel, Ipv6Header,
    PacketBuilder, TcpHeader,
};
use proptest::prelude::*;
use superpacket_core::coalesce::{CoalesceOptions, Coalescer, Frames};
use superpacket_core::split::split_to_vec;

#[derive(Debug, Clone)]
struct Flow {
    v6: bool,
    udp: bool,
    ttl: u8,
    tos: u8,
    timestamps: bool,
    /// Full segment payload size.
    mss: usize,
}

/// One packet to send: on flow `flow % flows`, with these variations.
#[derive(Debug, Clone)]
struct Send {
    flow: usize,
    /// 0..=6: a full segment; 7: a shorter one; 8: a pure ACK (TCP) or an empty datagram (UDP).
    size_kind: u8,
    short_len: usize,
    psh: bool,
    /// Skip this many sequence numbers (TCP) first.
    gap: u32,
    /// Skip this many IPv4 IDs first.
    id_jump: u16,
    zero_udp_checksum: bool,
}

fn flow() -> impl Strategy<Value = Flow> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec![1u8, 64, 255]),
        prop::sample::select(vec![0u8, 0xb8, 2]),
        any::<bool>(),
        1usize..1500,
    )
        .prop_map(|(v6, udp, ttl, tos, timestamps, mss)| Flow { v6, udp, ttl, tos, timestamps, mss })
}

fn send() -> impl Strategy<Value = Send> {
    (
        0usize..4,
        0u8..9,
        1usize..1500,
        prop::bool::weighted(0.1),
        prop::sample::select(vec![0u32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1000]),
        prop::sample::select(vec![0u16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]),
        prop::bool::weighted(0.03),
    )
        .prop_map(|(flow, size_kind, short_len, psh, gap, id_jump, zero_udp_checksum)| Send {
            flow,
            size_kind,
            short_len,
            psh,
            gap,
            id_jump,
            zero_udp_checksum,
        })
}

struct FlowState {
    seq: u32,
    id: u16,
    count: u32,
}

/// Builds the packets of a schedule; returns each packet with the index of its flow.
fn build(flows: &[Flow], sends: &[Send]) -> Vec<(usize, Vec<u8>)> {
    let mut state: Vec<FlowState> = (0..flows.len())
        .map(|i| FlowState { seq: 0xffff_f000u32.wrapping_add(i as u32 * 77_777), id: 65_500, count: 0 })
        .collect();
    sends
        .iter()
        .map(|s| {
            let f = s.flow % flows.len();
            let flow = &flows[f];
            let st = &mut state[f];
            let len = match s.size_kind {
                0..=6 => flow.mss,
                7 => s.short_len.min(flow.mss),
                _ => 0,
            };
            st.seq = st.seq.wrapping_add(s.gap);
            st.id = st.id.wrapping_add(s.id_jump);
            st.count += 1;
            let payload: Vec<u8> = (0..len).map(|i| (i as u32 * 7 + st.count * 13 + f as u32) as u8).collect();
            let proto = if flow.udp { IpNumber::UDP } else { IpNumber::TCP };
            let port = 1000 + f as u16;
            let ip = if flow.v6 {
                let mut src = [0u8; 16];
                src[0] = 0xfd;
                src[15] = 1;
                let mut dst = src;
                dst[15] = 2;
                let header = Ipv6Header {
                    traffic_class: flow.tos,
                    flow_label: Ipv6FlowLabel::try_new(f as u32 + 1).unwrap(),
                    payload_length: 0,
                    next_header: proto,
                    hop_limit: flow.ttl,
                    source: src,
                    destination: dst,
                };
                IpHeaders::Ipv6(header, Ipv6Extensions::default())
            } else {
                let mut header = Ipv4Header::new(0, flow.ttl, proto, [192, 0, 2, 1], [192, 0, 2, 2]).unwrap();
                header.dscp = IpDscp::try_new(flow.tos >> 2).unwrap();
                header.ecn = IpEcn::try_new(flow.tos & 3).unwrap();
                header.identification = st.id;
                header.dont_fragment = true;
                IpHeaders::Ipv4(header, Ipv4Extensions::default())
            };
            st.id = st.id.wrapping_add(1);
            let mut out = Vec::new();
            let builder = PacketBuilder::ip(ip);
            if flow.udp {
                builder.udp(port, 4789).write(&mut out, &payload).unwrap();
                if s.zero_udp_checksum && !flow.v6 {
                    out[26..28].copy_from_slice(&[0, 0]);
                }
            } else {
                let mut tcp = TcpHeader::new(port, 443, st.seq, 1024);
                tcp.ack = true;
                tcp.acknowledgment_number = 5;
                tcp.psh = s.psh;
                if flow.timestamps {
                    tcp.set_options_raw(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]).unwrap();
                }
                builder.tcp_header(tcp).write(&mut out, &payload).unwrap();
                st.seq = st.seq.wrapping_add(len as u32);
            }
            (f, out)
        })
        .collect()
}

/// Coalesces, then turns every frame back into packets.
fn round_trip(coalescer: &mut Coalescer, packets: &[Vec<u8>]) -> (usize, Vec<Vec<u8>>) {
    let mut frames = Frames::new();
    coalescer.coalesce(packets, &mut frames);
    let mut back = Vec::new();
    for (frame, counted) in frames.iter_counted() {
        assert!(frame.len() >= 10);
        let before = back.len();
        if frame[..2] == [0, 0] {
            back.push(frame[10..].to_vec());
        } else {
            back.extend(split_to_vec(frame).unwrap_or_else(|e| panic!("split failed: {e}")));
        }
        // The count the TUN writer uses instead of parsing the frame again.
        assert_eq!(
            counted,
            back.len() - before,
            "Frames counts {counted} packets in a frame that splits into {}",
            back.len() - before
        );
    }
    assert_eq!(frames.iter_counted().count(), frames.len());
    (frames.len(), back)
}

fn options() -> impl Strategy<Value = CoalesceOptions> {
    prop::sample::select(vec![
        CoalesceOptions { tcp: true, udp: true },
        CoalesceOptions { tcp: true, udp: true },
        CoalesceOptions { tcp: false, udp: true },
        CoalesceOptions { tcp: true, udp: false },
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn split_undoes_coalesce_per_flow(
        flows in prop::collection::vec(flow(), 1..5),
        sends in prop::collection::vec(send(), 1..160),
        options in options(),
    ) {
        let packets = build(&flows, &sends);
        let bytes: Vec<Vec<u8>> = packets.iter().map(|p| p.1.clone()).collect();
        let mut coalescer = Coalescer::new(options);
        let (frames, back) = round_trip(&mut coalescer, &bytes);
        prop_assert!(frames <= bytes.len());
        prop_assert_eq!(back.len(), bytes.len());
        // Every packet comes back, and each flow's packets come back in their order.
        for f in 0..flows.len() {
            let sent: Vec<&Vec<u8>> = packets.iter().filter(|p| p.0 == f).map(|p| &p.1).collect();
            let got: Vec<&Vec<u8>> = back.iter().filter(|p| packets.iter().any(|q| q.0 == f && &q.1 == *p)).collect();
            prop_assert_eq!(got, sent, "flow {}", f);
        }
        let mut sorted_in = bytes.clone();
        let mut sorted_out = back.clone();
        sorted_in.sort();
        sorted_out.sort();
        prop_assert_eq!(sorted_in, sorted_out);
    }

    /// Corrupted packets (random bytes changed, truncated, extended) are never lost or altered.
    #[test]
    fn corrupted_packets_come_back_unchanged(
        flows in prop::collection::vec(flow(), 1..3),
        sends in prop::collection::vec(send(), 1..60),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0usize..2000, any::<u8>(), 0u8..4), 0..20),
    ) {
        let mut bytes: Vec<Vec<u8>> = build(&flows, &sends).into_iter().map(|p| p.1).collect();
        for (which, at, value, how) in edits {
            let p = &mut bytes[which.index(sends.len())];
            match how {
                0 | 1 if !p.is_empty() => {
                    let i = at % p.len();
                    p[i] = value;
                }
                2 => p.truncate(at),
                _ => p.push(value),
            }
        }
        let mut coalescer = Coalescer::new(CoalesceOptions::default());
        let (_, back) = round_trip(&mut coalescer, &bytes);
        let mut sorted_in = bytes.clone();
        let mut sorted_out = back;
        sorted_in.sort();
        sorted_out.sort();
        prop_assert_eq!(sorted_in, sorted_out);
    }

    /// Arbitrary bytes: no panic, and nothing that is not a valid TCP/UDP packet is merged.
    #[test]
    fn arbitrary_bytes_pass_through(packets in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..40)) {
        let mut coalescer = Coalescer::new(CoalesceOptions::default());
        let mut frames = Frames::new();
        coalescer.coalesce(&packets, &mut frames);
        prop_assert_eq!(frames.len(), packets.len());
        for (frame, packet) in frames.iter().zip(&packets) {
            prop_assert_eq!(&frame[..10], &[0u8; 10][..]);
            prop_assert_eq!(&frame[10..], &packet[..]);
        }
    }
}

/// The property above is only worth something if runs really merge: a steady stream per flow kind
/// becomes one frame and still comes back byte for byte.
#[test]
fn steady_flows_merge_and_come_back() {
    for (v6, udp) in [(false, false), (false, true), (true, false), (true, true)] {
        let flows = [Flow { v6, udp, ttl: 64, tos: 0, timestamps: !udp, mss: 1200 }];
        let sends: Vec<Send> = (0..40)
            .map(|_| Send {
                flow: 0,
                size_kind: 0,
                short_len: 0,
                psh: false,
                gap: 0,
                id_jump: 0,
                zero_udp_checksum: false,
            })
            .collect();
        let bytes: Vec<Vec<u8>> = build(&flows, &sends).into_iter().map(|p| p.1).collect();
        let (frames, back) = round_trip(&mut Coalescer::new(CoalesceOptions::default()), &bytes);
        assert_eq!(frames, 1, "v6 {v6} udp {udp}");
        assert_eq!(back, bytes, "v6 {v6} udp {udp}");
    }
}
