//! Coalescing packets into superpackets (userspace GRO) for a TUN write.
//!
//! [`Coalescer::coalesce`] walks a batch once. Every flow (addresses, ports, protocol, IP version) has at
//! most one *open run*: the packets it may still grow from. A packet either joins its flow's open run or
//! starts a new run; runs are emitted in the order of their first packet, so each flow keeps its order.
//! A run of one packet is written unchanged behind a zeroed `virtio_net_hdr`; a longer run becomes one
//! GSO frame that [`crate::split`] turns back into exactly the packets that went in. Every rule below
//! exists to keep that inverse exact: whatever the splitter rewrites per segment (IPv4 ID, lengths, TCP
//! sequence number, PSH on the last segment, checksums) must follow from the first packet, and every
//! other header byte must be equal across the run.
//!
//! All state lives in scratch vectors owned by the [`Coalescer`], so a steady stream of batches does not
//! allocate, and output goes straight into the one buffer of [`Frames`].
//!
//! A packet whose L4 checksum is wrong is never merged (the kernel would send it on with a correct one).
//! Checking every checksum before grouping, then copying the payloads, would read each payload from
//! memory twice (a batch of up to 64 KiB does not stay in L1 between the two passes); instead each L4
//! checksum is checked right after its payload is copied into a merged frame, from L1. When one is
//! wrong (rare: senders compute them, the kernel checked them), the frames of that batch are dropped and
//! the batch is grouped again with every checksum checked first, which is what the first pass assumed.

use crate::checksum;
use crate::packet::{self, IpHeaders, IpVersion, MAX_IP_PACKET, PROTO_TCP, PROTO_UDP, UDP_HDR_LEN};
use crate::vnet::{self, VirtioNetHdr, VNET_HDR_LEN};
use crate::MAX_SEGMENTS;

/// Which kinds of packets may be merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalesceOptions {
    /// Merge TCP segments (the TUN device must have TSO enabled: TUN_F_TSO4/TUN_F_TSO6).
    pub tcp: bool,
    /// Merge UDP datagrams (the TUN device must have USO enabled: TUN_F_USO4/TUN_F_USO6, Linux 6.2).
    pub udp: bool,
}

impl Default for CoalesceOptions {
    fn default() -> Self {
        CoalesceOptions { tcp: true, udp: true }
    }
}

/// Frames stored back to back in one buffer.
#[derive(Debug, Default, Clone)]
pub struct Frames {
    /// Frame bytes in `..len`; bytes after it are left from earlier batches, kept so that a reused
    /// `Frames` is written into without zeroing it first.
    data: Vec<u8>,
    len: usize,
    ends: Vec<usize>,
    /// IP packets each frame stands for (what the writer counts), so nobody parses a frame to know.
    packets: Vec<usize>,
}

impl Frames {
    /// An empty set of frames.
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes every frame, keeping the memory for the next batch.
    pub fn clear(&mut self) {
        self.len = 0;
        self.ends.clear();
        self.packets.clear();
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no frames.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Frame `i` (virtio_net_hdr + IP packet).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = match i.checked_sub(1) {
            Some(prev) => *self.ends.get(prev)?,
            None => 0,
        };
        self.data.get(start..end)
    }

    /// Every frame in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = core::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(start, end)| self.data.get(start..end).unwrap_or_default())
    }

    /// How many IP packets frame `i` stands for: the packets merged into it, 1 for a packet written on
    /// its own (what [`crate::split::plan`] would count, without parsing the frame again).
    pub fn packets(&self, i: usize) -> Option<usize> {
        self.packets.get(i).copied()
    }

    /// Every frame in order, with the number of IP packets it stands for.
    pub fn iter_counted(&self) -> impl Iterator<Item = (&[u8], usize)> {
        self.iter().zip(self.packets.iter().copied())
    }

    /// Total bytes of all frames.
    pub fn total_len(&self) -> usize {
        self.len
    }

    /// Appends a ready frame (parsed once to count its packets: 1 if it does not split).
    pub fn push_frame(&mut self, frame: &[u8]) {
        self.grow(frame.len()).copy_from_slice(frame);
        self.end_frame(crate::split::plan(frame).map_or(1, |p| p.count));
    }

    /// Appends `packet` as a frame with a zeroed virtio_net_hdr (no GSO, no checksum request).
    fn push_plain(&mut self, packet: &[u8]) {
        let (vnet, ip) = self.grow(VNET_HDR_LEN + packet.len()).split_at_mut(VNET_HDR_LEN);
        vnet.fill(0);
        ip.copy_from_slice(packet);
        self.end_frame(1);
    }

    /// Ends the frame grown so far, which stands for `packets` IP packets.
    fn end_frame(&mut self, packets: usize) {
        self.ends.push(self.len);
        self.packets.push(packets);
    }

    /// Extends the frame bytes by `n` and returns the new bytes (whatever was there before), to be
    /// overwritten; the frame is ended by [`Frames::end_frame`].
    fn grow(&mut self, n: usize) -> &mut [u8] {
        let start = self.len;
        let end = start.saturating_add(n);
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.len = end;
        self.data.get_mut(start..end).unwrap_or_default()
    }

    /// Frame count and byte length, to go back to with [`Frames::truncate`].
    fn mark(&self) -> (usize, usize) {
        (self.ends.len(), self.len)
    }

    fn truncate(&mut self, (frames, len): (usize, usize)) {
        self.ends.truncate(frames);
        self.packets.truncate(frames);
        self.len = len;
    }
}

/// Merges packets into superpackets. Holds the options and the scratch space reused by every batch.
#[derive(Debug, Default)]
pub struct Coalescer {
    options: CoalesceOptions,
    /// Runs in the order of their first packet.
    runs: Vec<Run>,
    /// For every packet of the batch, the next packet of its run.
    next: Vec<usize>,
    flows: FlowTable,
}

impl Coalescer {
    /// A coalescer that merges what `options` allows.
    pub fn new(options: CoalesceOptions) -> Self {
        Coalescer { options, ..Self::default() }
    }

    /// The current options.
    pub fn options(&self) -> CoalesceOptions {
        self.options
    }

    /// Changes the options for the following batches.
    pub fn set_options(&mut self, options: CoalesceOptions) {
        self.options = options;
    }

    /// Appends to `out` one frame (10-byte virtio_net_hdr + IP packet) per run of coalescible packets,
    /// in an order that keeps every flow's order. Packets that merge with nothing, and packets that are
    /// not well-formed TCP/UDP, are passed through unchanged with a zeroed virtio_net_hdr.
    pub fn coalesce<P: AsRef<[u8]>>(&mut self, packets: &[P], out: &mut Frames) {
        let mark = out.mark();
        if !self.coalesce_pass(packets, out, Checksums::WhileCopying) {
            out.truncate(mark);
            self.coalesce_pass(packets, out, Checksums::First);
        }
    }

    /// Groups and writes one batch. With [`Checksums::WhileCopying`], false as soon as a merged packet's
    /// L4 checksum turns out wrong (the frames written so far are then not what [`Self::coalesce`] promises).
    fn coalesce_pass<P: AsRef<[u8]>>(&mut self, packets: &[P], out: &mut Frames, checksums: Checksums) -> bool {
        self.runs.clear();
        self.next.clear();
        self.next.resize(packets.len(), NO_PACKET);
        self.flows.reset(packets.len());

        for (i, pkt) in packets.iter().enumerate() {
            let pkt = pkt.as_ref();
            let (key, seg) = classify(pkt, self.options, checksums);
            let Some(open) = key.and_then(|key| self.flows.open_run(key)) else {
                self.runs.push(Run::single(i));
                continue;
            };
            let Some(seg) = seg else {
                // A packet of this flow that cannot merge still ends the open run: a later packet joining
                // that run would be written before this one.
                *open = None;
                self.runs.push(Run::single(i));
                continue;
            };
            if let Some(run) = open.and_then(|r| self.runs.get_mut(r)) {
                let last = packets.get(run.last).map_or(&[][..], AsRef::as_ref);
                if run.can_join(last, pkt, &seg) {
                    if let Some(link) = self.next.get_mut(run.last) {
                        *link = i;
                    }
                    run.join(i, seg);
                    continue;
                }
            }
            *open = Some(self.runs.len());
            self.runs.push(Run::start(i, seg));
        }

        for run in &self.runs {
            let first = packets.get(run.first).map_or(&[][..], AsRef::as_ref);
            if run.count == 1 {
                out.push_plain(first);
            } else if !self.write_merged(run, packets, out) && checksums == Checksums::WhileCopying {
                return false;
            }
        }
        true
    }

    /// Writes a run of two or more packets as one GSO frame; false if a packet's L4 checksum is wrong.
    fn write_merged<P: AsRef<[u8]>>(&self, run: &Run, packets: &[P], out: &mut Frames) -> bool {
        let head = &run.head;
        let first = packets.get(run.first).map_or(&[][..], AsRef::as_ref);
        let mut hdr = [0u8; MAX_MERGED_HDR];
        let (vnet_bytes, ip_bytes) = hdr.split_at_mut(VNET_HDR_LEN);
        let (Some(headers), Some(template)) = (ip_bytes.get_mut(..head.hdr_len), first.get(..head.hdr_len)) else {
            // Cannot happen: both lengths were checked when the run started. Stay total anyway.
            out.push_plain(first);
            return true;
        };
        headers.copy_from_slice(template);
        fix_up_headers(headers, run);
        let vnet = VirtioNetHdr {
            flags: vnet::FLAG_NEEDS_CSUM,
            gso_type: match (head.proto, head.version) {
                (PROTO_TCP, IpVersion::V4) => vnet::GSO_TCPV4,
                (PROTO_TCP, IpVersion::V6) => vnet::GSO_TCPV6,
                _ => vnet::GSO_UDP_L4,
            },
            // All three fit: headers ≤ 100 bytes, the whole packet ≤ 65,535.
            hdr_len: head.hdr_len as u16,
            gso_size: head.payload_len as u16,
            csum_start: head.ip_len as u16,
            csum_offset: packet::l4_checksum_offset(head.proto) as u16,
        };
        if vnet.encode(vnet_bytes).is_err() {
            out.push_plain(first);
            return true;
        }

        let frame_hdr_len = VNET_HDR_LEN + head.hdr_len;
        let frame = out.grow(VNET_HDR_LEN + run.ip_total);
        let (frame_hdr, mut payloads) = frame.split_at_mut(frame_hdr_len.min(frame.len()));
        frame_hdr.copy_from_slice(hdr.get(..frame_hdr.len()).unwrap_or_default());
        // Every packet of the run has the first one's addresses and protocol.
        let pseudo = first.get(..head.ip_len).map_or(0, |ip| pseudo_sum(ip, head, 0));
        let mut all_ok = true;
        let mut i = run.first;
        for _ in 0..run.count {
            let pkt = packets.get(i).map_or(&[][..], AsRef::as_ref);
            let (l4_hdr, payload) = match (pkt.get(head.ip_len..head.hdr_len), pkt.get(head.hdr_len..)) {
                (Some(l4_hdr), Some(payload)) => (l4_hdr, payload),
                _ => (&[][..], &[][..]),
            };
            let n = payload.len().min(payloads.len());
            let (dst, rest) = core::mem::take(&mut payloads).split_at_mut(n);
            payloads = rest;
            // The L4 length fits 16 bits (the whole packet does); the header has an even length, so its
            // sum and the payload's add up as one region's.
            let acc = checksum::sum(l4_hdr, checksum::add_u16(pseudo, (l4_hdr.len() + payload.len()) as u16));
            let ok = checksum::copy_and_sum(payload, dst, acc).is_some_and(|acc| checksum::fold(acc) == SUM_OK);
            all_ok &= ok;
            i = self.next.get(i).copied().unwrap_or(NO_PACKET);
        }
        out.end_frame(run.count);
        all_ok
    }
}

/// When a packet's L4 checksum is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checksums {
    /// While its payload is copied into a merged frame (a packet written on its own is not checked).
    WhileCopying,
    /// Before grouping, so that a packet with a wrong one merges with nothing.
    First,
}

/// Link value for "no next packet".
const NO_PACKET: usize = usize::MAX;

/// Longest virtio_net_hdr + IP + L4 header of a merged frame: IPv6 without extension headers (40)
/// and TCP with the largest options (60). Merged IPv4 never has options (20).
const MAX_MERGED_HDR: usize = VNET_HDR_LEN + 40 + 60;

/// TCP flag bits.
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

/// What the merge rules need to know about one packet that could be merged at all.
#[derive(Debug, Clone, Copy)]
struct Segment {
    version: IpVersion,
    proto: u8,
    /// IP header length (20 or 40; merged packets never have options or extension headers).
    ip_len: usize,
    /// IP + L4 header length.
    hdr_len: usize,
    payload_len: usize,
    /// TCP sequence number (0 for UDP).
    seq: u32,
    /// IPv4 identification (0 for IPv6).
    ip_id: u16,
    /// TCP PSH is set.
    psh: bool,
}

/// A run of packets of one flow, emitted as one frame.
#[derive(Debug, Clone, Copy)]
struct Run {
    first: usize,
    last: usize,
    count: usize,
    /// IP length of the merged packet.
    ip_total: usize,
    /// Whether another packet may still join.
    open: bool,
    /// The first packet; its headers are the merged packet's, its payload length the gso_size.
    head: Segment,
    /// The last packet.
    tail: Segment,
}

const NO_SEGMENT: Segment =
    Segment { version: IpVersion::V4, proto: 0, ip_len: 0, hdr_len: 0, payload_len: 0, seq: 0, ip_id: 0, psh: false };

impl Run {
    /// A packet that is written on its own.
    fn single(i: usize) -> Self {
        Run { first: i, last: i, count: 1, ip_total: 0, open: false, head: NO_SEGMENT, tail: NO_SEGMENT }
    }

    /// A run that starts with a mergeable packet.
    fn start(i: usize, seg: Segment) -> Self {
        Run {
            first: i,
            last: i,
            count: 1,
            ip_total: seg.hdr_len + seg.payload_len,
            open: !seg.psh,
            head: seg,
            tail: seg,
        }
    }

    fn join(&mut self, i: usize, seg: Segment) {
        self.last = i;
        self.count += 1;
        self.ip_total += seg.payload_len;
        // A shorter segment can only be the last one of a GSO packet; PSH marks the end of a write.
        self.open = seg.payload_len == self.head.payload_len && !seg.psh;
        self.tail = seg;
    }

    /// Whether `pkt` (described by `seg`) may follow `last`, the run's current last packet.
    fn can_join(&self, last: &[u8], pkt: &[u8], seg: &Segment) -> bool {
        self.open
            && self.count < MAX_SEGMENTS
            && self.ip_total + seg.payload_len <= MAX_IP_PACKET
            && seg.payload_len <= self.head.payload_len
            && seg.hdr_len == self.head.hdr_len
            && ip_headers_can_coalesce(last, pkt, &self.tail, seg)
            && (seg.proto != PROTO_TCP || tcp_headers_can_coalesce(last, pkt, &self.tail, seg))
    }
}

/// IP header fields that the splitter copies from the first packet must be equal; the IPv4 ID must
/// count up by one, as the splitter writes ID + i.
fn ip_headers_can_coalesce(last: &[u8], pkt: &[u8], last_seg: &Segment, seg: &Segment) -> bool {
    match seg.version {
        IpVersion::V4 => {
            // Version/IHL and TOS; flags/fragment offset, TTL and protocol. Addresses are in the flow key.
            last.get(0..2) == pkt.get(0..2)
                && last.get(6..10) == pkt.get(6..10)
                && seg.ip_id == last_seg.ip_id.wrapping_add(1)
        }
        // Version, traffic class and flow label; next header and hop limit.
        IpVersion::V6 => last.get(0..4) == pkt.get(0..4) && last.get(6..8) == pkt.get(6..8),
    }
}

/// TCP fields that the splitter copies from the first packet must be equal (ack, data offset, window,
/// urgent pointer, options), and the sequence number must continue where the previous segment ended.
fn tcp_headers_can_coalesce(last: &[u8], pkt: &[u8], last_seg: &Segment, seg: &Segment) -> bool {
    let (l4, end) = (seg.ip_len, seg.hdr_len);
    let range = |from: usize, to: usize| (l4 + from)..(l4 + to);
    seg.seq == last_seg.seq.wrapping_add(last_seg.payload_len as u32)
        // Acknowledgment number and data offset.
        && last.get(range(8, 13)) == pkt.get(range(8, 13))
        // Window.
        && last.get(range(14, 16)) == pkt.get(range(14, 16))
        // Urgent pointer and options.
        && last.get(l4 + 18..end) == pkt.get(l4 + 18..end)
}

/// Writes the merged lengths, IPv4 header checksum, UDP length, PSH of the last segment and the
/// pseudo-header sum into a copy of the first packet's headers.
fn fix_up_headers(headers: &mut [u8], run: &Run) {
    let head = &run.head;
    let total = run.ip_total as u16; // ≤ MAX_IP_PACKET
    let l4_len = run.ip_total - head.ip_len;
    match head.version {
        IpVersion::V4 => {
            put_u16(headers, 2, total);
            put_u16(headers, 10, 0);
            let csum = checksum::checksum(headers.get(..head.ip_len).unwrap_or_default());
            put_u16(headers, 10, csum);
        }
        IpVersion::V6 => put_u16(headers, 4, l4_len as u16),
    }
    let l4 = head.ip_len;
    if head.proto == PROTO_TCP {
        if run.tail.psh {
            if let Some(flags) = headers.get_mut(l4 + 13) {
                *flags |= TCP_PSH;
            }
        }
    } else {
        put_u16(headers, l4 + 4, l4_len as u16);
    }
    // What the kernel expects with NEEDS_CSUM: the pseudo-header sum, not inverted.
    let pseudo = match headers.get(..head.ip_len) {
        Some(ip) => checksum::fold(pseudo_sum(ip, head, l4_len)),
        None => 0,
    };
    put_u16(headers, l4 + packet::l4_checksum_offset(head.proto), pseudo);
}

fn pseudo_sum(ip: &[u8], seg: &Segment, l4_len: usize) -> u64 {
    let hdrs =
        IpHeaders { version: seg.version, ip_len: seg.ip_len, proto: seg.proto, total_len: 0, has_options: false };
    packet::pseudo_header_sum(ip, &hdrs, l4_len)
}

fn put_u16(buf: &mut [u8], at: usize, value: u16) {
    if let Some(b) = buf.get_mut(at..at + 2) {
        b.copy_from_slice(&value.to_be_bytes());
    }
}

fn get_u16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn get_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Looks at one packet: its flow (when it is TCP or UDP with readable ports) and, when it may be merged
/// at all under `options`, its [`Segment`].
fn classify(pkt: &[u8], options: CoalesceOptions, checksums: Checksums) -> (Option<FlowKey>, Option<Segment>) {
    let Ok(ip) = packet::parse_ip(pkt) else { return (None, None) };
    if ip.proto != PROTO_TCP && ip.proto != PROTO_UDP {
        return (None, None);
    }
    // IPv4 flags and fragment offset. A later fragment carries no ports: it belongs to no flow.
    let frag = match ip.version {
        IpVersion::V4 => get_u16(pkt, 6).unwrap_or(0),
        IpVersion::V6 => 0,
    };
    const MORE_FRAGMENTS: u16 = 0x2000;
    const FRAGMENT_OFFSET: u16 = 0x1fff;
    if frag & FRAGMENT_OFFSET != 0 {
        return (None, None);
    }
    let Some(l4) = pkt.get(ip.ip_len..ip.total_len) else { return (None, None) };
    let Some(key) = FlowKey::new(pkt, &ip, l4) else { return (None, None) };

    let mergeable = pkt.len() == ip.total_len
        && !ip.has_options
        && frag & MORE_FRAGMENTS == 0
        && match ip.proto {
            PROTO_TCP => options.tcp,
            _ => options.udp,
        };
    if !mergeable {
        return (Some(key), None);
    }
    let seg = match ip.proto {
        PROTO_TCP => tcp_segment(pkt, &ip, l4),
        _ => udp_segment(pkt, &ip, l4),
    };
    // The checks above are cheap; the checksums, which read the whole packet, come last.
    let seg = seg.filter(|_| {
        ipv4_header_checksum_ok(pkt, &ip) && (checksums == Checksums::WhileCopying || l4_checksum_ok(pkt, &ip, l4))
    });
    (Some(key), seg)
}

fn tcp_segment(pkt: &[u8], ip: &IpHeaders, l4: &[u8]) -> Option<Segment> {
    let tcp_len = packet::tcp_header_len(l4).ok()?;
    let flags = *l4.get(13)?;
    // Only plain data segments: SYN, FIN, RST, URG, ECE and CWR each carry meaning a merge would lose.
    if flags != TCP_ACK && flags != TCP_ACK | TCP_PSH {
        return None;
    }
    let payload_len = l4.len() - tcp_len;
    if payload_len == 0 {
        return None;
    }
    Some(Segment {
        version: ip.version,
        proto: PROTO_TCP,
        ip_len: ip.ip_len,
        hdr_len: ip.ip_len + tcp_len,
        payload_len,
        seq: get_u32(l4, 4)?,
        ip_id: ipv4_id(pkt, ip),
        psh: flags & TCP_PSH != 0,
    })
}

fn udp_segment(pkt: &[u8], ip: &IpHeaders, l4: &[u8]) -> Option<Segment> {
    let udp_len = usize::from(get_u16(l4, 4)?);
    let payload_len = l4.len().checked_sub(UDP_HDR_LEN)?;
    // A zero checksum ("none", IPv4 only) would come back from the splitter as a computed one.
    if udp_len != l4.len() || payload_len == 0 || get_u16(l4, 6)? == 0 {
        return None;
    }
    Some(Segment {
        version: ip.version,
        proto: PROTO_UDP,
        ip_len: ip.ip_len,
        hdr_len: ip.ip_len + UDP_HDR_LEN,
        payload_len,
        seq: 0,
        ip_id: ipv4_id(pkt, ip),
        psh: false,
    })
}

fn ipv4_id(pkt: &[u8], ip: &IpHeaders) -> u16 {
    match ip.version {
        IpVersion::V4 => get_u16(pkt, 4).unwrap_or(0),
        IpVersion::V6 => 0,
    }
}

/// A correct checksum makes the one's-complement sum of everything it covers all ones.
const SUM_OK: u16 = 0xffff;

fn ipv4_header_checksum_ok(pkt: &[u8], ip: &IpHeaders) -> bool {
    match ip.version {
        IpVersion::V4 => pkt.get(..ip.ip_len).is_some_and(|h| checksum::fold(checksum::sum(h, 0)) == SUM_OK),
        IpVersion::V6 => true,
    }
}

fn l4_checksum_ok(pkt: &[u8], ip: &IpHeaders, l4: &[u8]) -> bool {
    let acc = packet::pseudo_header_sum(pkt, ip, l4.len());
    checksum::fold(checksum::sum(l4, acc)) == SUM_OK
}

/// A flow: both addresses, both ports, the L4 protocol and the IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    /// Source and destination address, IPv4 in the low 32 bits.
    addrs: [u128; 2],
    ports: [u8; 4],
    proto: u8,
    version: IpVersion,
}

impl FlowKey {
    fn new(pkt: &[u8], ip: &IpHeaders, l4: &[u8]) -> Option<Self> {
        // Built in registers and stored whole: byte-wise stores into an array here, read back at once
        // with wide loads by the comparison, stalled every packet (no store-to-load forwarding).
        let addrs = match ip.version {
            IpVersion::V4 => {
                let both: [u8; 8] = pkt.get(12..20)?.try_into().ok()?;
                let word = u64::from_ne_bytes(both);
                [u128::from(word as u32), u128::from((word >> 32) as u32)]
            }
            IpVersion::V6 => {
                let src: [u8; 16] = pkt.get(8..24)?.try_into().ok()?;
                let dst: [u8; 16] = pkt.get(24..40)?.try_into().ok()?;
                [u128::from_ne_bytes(src), u128::from_ne_bytes(dst)]
            }
        };
        let ports = l4.get(..4)?.try_into().ok()?;
        Some(FlowKey { addrs, ports, proto: ip.proto, version: ip.version })
    }

    fn hash(&self) -> usize {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut h = u64::from(self.proto) | (u64::from(self.version == IpVersion::V6) << 8);
        h = (h.rotate_left(5) ^ u64::from(u32::from_ne_bytes(self.ports))).wrapping_mul(K);
        for a in self.addrs {
            for word in [a as u64, (a >> 64) as u64] {
                h = (h.rotate_left(5) ^ word).wrapping_mul(K);
            }
        }
        (h ^ (h >> 29)) as usize
    }
}

/// Open-addressing hash table from flow to its open run, rebuilt for every batch in reused memory.
#[derive(Debug, Default)]
struct FlowTable {
    /// Index into `flows`, or [`NO_FLOW`]; the length is a power of two at least twice the batch size,
    /// so probing always finds a free slot.
    slots: Vec<usize>,
    flows: Vec<(FlowKey, Option<usize>)>,
    /// Index of the flow looked up last.
    recent: usize,
}

const NO_FLOW: usize = usize::MAX;

impl FlowTable {
    fn reset(&mut self, batch: usize) {
        let cap = batch.saturating_mul(2).max(16).checked_next_power_of_two().unwrap_or(usize::MAX / 2 + 1);
        self.slots.clear();
        self.slots.resize(cap, NO_FLOW);
        self.flows.clear();
        self.recent = 0;
    }

    /// The open run of `key`'s flow, added as a flow without an open run if it is new.
    fn open_run(&mut self, key: FlowKey) -> Option<&mut Option<usize>> {
        // Batches are mostly long stretches of one flow: try the flow seen last before hashing.
        if self.flows.get(self.recent).is_some_and(|f| f.0 == key) {
            return self.flows.get_mut(self.recent).map(|f| &mut f.1);
        }
        let mask = self.slots.len().checked_sub(1)?;
        let mut at = key.hash() & mask;
        for _ in 0..self.slots.len() {
            let slot = self.slots.get_mut(at)?;
            if *slot == NO_FLOW {
                *slot = self.flows.len();
                self.recent = self.flows.len();
                self.flows.push((key, None));
                return self.flows.last_mut().map(|f| &mut f.1);
            }
            let index = *slot;
            if self.flows.get(index).is_some_and(|f| f.0 == key) {
                self.recent = index;
                return self.flows.get_mut(index).map(|f| &mut f.1);
            }
            at = (at + 1) & mask;
        }
        None
    }
}
