//! Splitting superpackets into segments: TSO/USO done in software, by the kernel's rules.
//!
//! [`plan`] validates a frame once and works out every length. [`split_into`] then writes each segment's
//! complete IP packet at a fixed stride into one caller buffer, leaving headroom and tailroom around each
//! for a framer; a caller that needs the plan first (to size its buffer, to count segments) passes it to
//! [`split_into_planned`] instead, so the frame is parsed once. Each payload chunk is read once from
//! memory: it is summed right after it is copied, from L1. Headers are parsed once per frame, never per segment.

use crate::checksum;
use crate::packet::{self, IpHeaders, IpVersion, IPV6_HDR_LEN, MAX_IP_PACKET, PROTO_TCP, PROTO_UDP};
use crate::vnet::{GsoKind, VirtioNetHdr, VNET_HDR_LEN};
use crate::PacketError;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;
/// IPv4 flags/fragment-offset word: the More Fragments bit and the offset bits.
const IPV4_MF_AND_OFFSET: u16 = 0x3fff;

/// Space a caller wants around every segment in the output buffer (for example for a framer's header and
/// authentication tag).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layout {
    /// Bytes left untouched before each segment.
    pub headroom: usize,
    /// Bytes left untouched after each segment (after each full segment; the buffer ends after the last
    /// segment's tailroom).
    pub tailroom: usize,
}

/// How one frame splits: how many segments and how long each is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitPlan {
    /// The segmentation the frame asked for.
    pub kind: GsoKind,
    /// Number of segments (at least 1).
    pub count: usize,
    /// IP length of every segment but the last.
    pub seg_ip_len: usize,
    /// IP length of the last segment.
    pub last_ip_len: usize,
    /// Length of the planned frame: a plan offered for a frame of another length is refused.
    frame_len: usize,
    fixups: Fixups,
}

/// What has to change while copying the packet; private so that a plan can only come from [`plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fixups {
    /// A single packet that is copied unchanged.
    Copy,
    /// A single packet whose checksum at `field` is completed over `start..`.
    Checksum { start: usize, field: usize, udp: bool },
    /// A superpacket cut into segments.
    Segments(SegmentShape),
}

/// The headers of a superpacket and its segment size: everything a segment is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SegmentShape {
    version: IpVersion,
    proto: u8,
    /// Bytes of IP header, options and extension headers included: the L4 offset.
    ip_hdr_len: usize,
    l4_hdr_len: usize,
    /// Payload bytes per segment.
    gso_size: usize,
}

impl SplitPlan {
    /// Distance between the starts of consecutive segments in the output of [`split_into`]
    /// (saturates at `usize::MAX` for absurd layouts, which [`split_into`] then rejects).
    pub fn stride(&self, layout: Layout) -> usize {
        self.checked_stride(layout).unwrap_or(usize::MAX)
    }

    /// Bytes of output [`split_into`] needs (saturates at `usize::MAX`).
    pub fn buffer_len(&self, layout: Layout) -> usize {
        self.checked_buffer_len(layout).unwrap_or(usize::MAX)
    }

    /// IP length of segment `i`, or `None` past the last segment.
    pub fn segment_ip_len(&self, i: usize) -> Option<usize> {
        match self.count.saturating_sub(1).cmp(&i) {
            core::cmp::Ordering::Greater => Some(self.seg_ip_len),
            core::cmp::Ordering::Equal => Some(self.last_ip_len),
            core::cmp::Ordering::Less => None,
        }
    }

    fn checked_stride(&self, layout: Layout) -> Option<usize> {
        layout.headroom.checked_add(self.seg_ip_len)?.checked_add(layout.tailroom)
    }

    fn checked_buffer_len(&self, layout: Layout) -> Option<usize> {
        let full = self.count.saturating_sub(1).checked_mul(self.checked_stride(layout)?)?;
        full.checked_add(layout.headroom)?.checked_add(self.last_ip_len)?.checked_add(layout.tailroom)
    }
}

/// Validates the frame and says how it splits, without writing anything.
pub fn plan(frame: &[u8]) -> Result<SplitPlan, PacketError> {
    let vnet = VirtioNetHdr::decode(frame)?;
    let kind = vnet.kind()?;
    let pkt = ip_packet(frame)?;
    if pkt.len() > MAX_IP_PACKET {
        return Err(PacketError::TooLarge);
    }
    let ip = packet::parse_ip(pkt)?;
    // parse_ip already reports a buffer shorter than the IP length; a longer one is as wrong here.
    if ip.total_len != pkt.len() {
        return Err(PacketError::LengthMismatch);
    }
    match kind {
        GsoKind::None => plan_single(pkt, &vnet, &ip),
        GsoKind::TcpV4 | GsoKind::TcpV6 | GsoKind::UdpL4 => plan_segments(pkt, &vnet, kind, &ip),
    }
}

/// Writes segment `i`'s complete IP packet at `out[i * stride + headroom..][..len_i]`, where `stride` is
/// [`SplitPlan::stride`]; headroom and tailroom bytes are left untouched.
/// [`PacketError::BufferTooSmall`] if `out` is shorter than [`SplitPlan::buffer_len`].
pub fn split_into(frame: &[u8], layout: Layout, out: &mut [u8]) -> Result<SplitPlan, PacketError> {
    let plan = plan(frame)?;
    split_into_planned(frame, &plan, layout, out)?;
    Ok(plan)
}

/// [`split_into`] with the plan already made: `plan` must be what [`plan`] returned for these same bytes
/// (the frame is not parsed again). A plan made for a frame of another length is
/// [`PacketError::LengthMismatch`]; one made for other bytes of the same length writes segments of the
/// planned lengths from these bytes, which are then wrong but never out of bounds.
pub fn split_into_planned(frame: &[u8], plan: &SplitPlan, layout: Layout, out: &mut [u8]) -> Result<(), PacketError> {
    if frame.len() != plan.frame_len {
        return Err(PacketError::LengthMismatch);
    }
    let plan = *plan;
    let needed = plan.checked_buffer_len(layout).ok_or(PacketError::BufferTooSmall)?;
    let stride = plan.checked_stride(layout).ok_or(PacketError::BufferTooSmall)?;
    let out = out.get_mut(..needed).ok_or(PacketError::BufferTooSmall)?;
    let writer = SegmentWriter::new(frame, plan)?;
    // `needed` fits in usize, so every start below (at most needed - last_ip_len - tailroom) does too.
    let mut start = layout.headroom;
    for i in 0..plan.count {
        let len = plan.segment_ip_len(i).ok_or(PacketError::BufferTooSmall)?;
        let end = start.checked_add(len).ok_or(PacketError::BufferTooSmall)?;
        writer.write(i, out.get_mut(start..end).ok_or(PacketError::BufferTooSmall)?)?;
        start = start.saturating_add(stride);
    }
    Ok(())
}

/// Splits a frame into separate IP packets (one allocation per segment; [`split_into`] is the fast path).
pub fn split_to_vec(frame: &[u8]) -> Result<Vec<Vec<u8>>, PacketError> {
    let plan = plan(frame)?;
    let writer = SegmentWriter::new(frame, plan)?;
    (0..plan.count)
        .map(|i| {
            let mut seg = vec![0u8; plan.segment_ip_len(i).unwrap_or(0)];
            writer.write(i, &mut seg)?;
            Ok(seg)
        })
        .collect()
}

fn ip_packet(frame: &[u8]) -> Result<&[u8], PacketError> {
    frame.get(VNET_HDR_LEN..).ok_or(PacketError::Truncated)
}

fn plan_single(pkt: &[u8], vnet: &VirtioNetHdr, ip: &IpHeaders) -> Result<SplitPlan, PacketError> {
    let fixups = if vnet.needs_csum() {
        let start = usize::from(vnet.csum_start);
        let field = start + usize::from(vnet.csum_offset);
        // The checksummed region must lie after the IP headers: a field inside them would corrupt them (a
        // case fuzzing found). For TCP and UDP the field must be the L4 checksum itself.
        let l4_field = matches!(ip.proto, PROTO_TCP | PROTO_UDP).then(|| packet::l4_checksum_offset(ip.proto));
        let misplaced = match l4_field {
            Some(off) => start != ip.l4_offset() || usize::from(vnet.csum_offset) != off,
            None => start < ip.l4_offset(),
        };
        if misplaced || field + 2 > pkt.len() {
            return Err(PacketError::ChecksumOutOfRange);
        }
        // Only a UDP checksum field maps a computed 0 to 0xFFFF (0 there means "no checksum").
        let udp = ip.proto == PROTO_UDP
            && start == ip.l4_offset()
            && usize::from(vnet.csum_offset) == packet::l4_checksum_offset(PROTO_UDP);
        Fixups::Checksum { start, field, udp }
    } else {
        Fixups::Copy
    };
    let (ip_len, frame_len) = (pkt.len(), VNET_HDR_LEN + pkt.len());
    Ok(SplitPlan { kind: GsoKind::None, count: 1, seg_ip_len: ip_len, last_ip_len: ip_len, frame_len, fixups })
}

fn plan_segments(pkt: &[u8], vnet: &VirtioNetHdr, kind: GsoKind, ip: &IpHeaders) -> Result<SplitPlan, PacketError> {
    let kind_matches = matches!(
        (kind, ip.version, ip.proto),
        (GsoKind::TcpV4, IpVersion::V4, PROTO_TCP)
            | (GsoKind::TcpV6, IpVersion::V6, PROTO_TCP)
            | (GsoKind::UdpL4, _, PROTO_UDP)
    );
    if !kind_matches {
        return Err(PacketError::GsoTypeMismatch);
    }
    if vnet.gso_size == 0 {
        return Err(PacketError::GsoSizeZero);
    }
    if ip.version == IpVersion::V4 && read_u16(pkt, 6)? & IPV4_MF_AND_OFFSET != 0 {
        return Err(PacketError::BadHeader);
    }
    let l4_offset = ip.l4_offset();
    let l4 = pkt.get(l4_offset..).ok_or(PacketError::Truncated)?;
    // Derived from the packet: the kernel's hdr_len can be wrong on the forward path.
    let l4_hdr_len = packet::l4_header_len(ip.proto, l4)?;
    if ip.proto == PROTO_UDP && usize::from(read_u16(l4, 4)?) != l4.len() {
        return Err(PacketError::LengthMismatch);
    }
    if vnet.needs_csum()
        && (usize::from(vnet.csum_start) != l4_offset
            || usize::from(vnet.csum_offset) != packet::l4_checksum_offset(ip.proto))
    {
        return Err(PacketError::ChecksumOutOfRange);
    }
    let hdr_len = l4_offset + l4_hdr_len;
    let payload = pkt.len().checked_sub(hdr_len).ok_or(PacketError::Truncated)?;
    let gso_size = usize::from(vnet.gso_size);
    // A payload that fits one segment (even an empty one) still gives one packet with final checksums.
    let count = payload.div_ceil(gso_size).max(1);
    let last_payload = payload - (count - 1) * gso_size;
    Ok(SplitPlan {
        kind,
        count,
        seg_ip_len: hdr_len + payload.min(gso_size),
        last_ip_len: hdr_len + last_payload,
        frame_len: VNET_HDR_LEN + pkt.len(),
        fixups: Fixups::Segments(SegmentShape {
            version: ip.version,
            proto: ip.proto,
            ip_hdr_len: l4_offset,
            l4_hdr_len,
            gso_size,
        }),
    })
}

/// Writes the segments of one validated frame; everything that is the same for every segment is
/// computed once here.
struct SegmentWriter<'a> {
    pkt: &'a [u8],
    plan: SplitPlan,
    /// Pseudo-header sum of the addresses and protocol (the L4 length is added per segment).
    pseudo_base: u64,
    /// Sum of the IPv4 header with total length, ID and checksum zeroed (those are added per segment).
    ipv4_base: u64,
}

impl<'a> SegmentWriter<'a> {
    fn new(frame: &'a [u8], plan: SplitPlan) -> Result<Self, PacketError> {
        let pkt = ip_packet(frame)?;
        let (pseudo_base, ipv4_base) = match plan.fixups {
            Fixups::Segments(seg) => {
                let (src, dst) = packet::addresses(pkt, seg.version);
                let pseudo = checksum::add_u16(checksum::sum(dst, checksum::sum(src, 0)), u16::from(seg.proto));
                let ipv4 = match seg.version {
                    IpVersion::V4 => ipv4_invariant_sum(pkt.get(..seg.ip_hdr_len).ok_or(PacketError::Truncated)?),
                    IpVersion::V6 => 0,
                };
                (pseudo, ipv4)
            }
            Fixups::Copy | Fixups::Checksum { .. } => (0, 0),
        };
        Ok(SegmentWriter { pkt, plan, pseudo_base, ipv4_base })
    }

    /// Writes segment `i` into `dst`, which is exactly its IP length.
    fn write(&self, i: usize, dst: &mut [u8]) -> Result<(), PacketError> {
        match self.plan.fixups {
            Fixups::Copy => copy(dst, 0, self.pkt),
            Fixups::Checksum { start, field, udp } => {
                copy(dst, 0, self.pkt)?;
                // The field holds the pseudo-header sum, so it is summed along with the rest.
                let acc = checksum::sum(dst.get(start..).ok_or(PacketError::Truncated)?, 0);
                write_u16(dst, field, l4_checksum(acc, udp))
            }
            Fixups::Segments(seg) => self.write_segment(&seg, i, dst),
        }
    }

    fn write_segment(&self, seg: &SegmentShape, i: usize, dst: &mut [u8]) -> Result<(), PacketError> {
        let hdr_len = seg.ip_hdr_len + seg.l4_hdr_len;
        let payload_len = dst.len().checked_sub(hdr_len).ok_or(PacketError::Truncated)?;
        let payload_start =
            i.checked_mul(seg.gso_size).and_then(|o| o.checked_add(hdr_len)).ok_or(PacketError::Truncated)?;
        let payload_end = payload_start.checked_add(payload_len).ok_or(PacketError::Truncated)?;
        let payload = self.pkt.get(payload_start..payload_end).ok_or(PacketError::Truncated)?;
        let seg_len = dst.len();
        let l4 = seg.ip_hdr_len;
        let l4_len = seg_len - l4;
        copy(dst, 0, self.pkt.get(..hdr_len).ok_or(PacketError::Truncated)?)?;
        // l4_len ≤ 65,535 (the whole packet is), so the pseudo-header's length fits 16 bits for IPv6 too.
        let pseudo = checksum::add_u16(self.pseudo_base, l4_len as u16);
        let payload_dst = dst.get_mut(hdr_len..).ok_or(PacketError::Truncated)?;
        let acc = checksum::copy_and_sum(payload, payload_dst, pseudo).ok_or(PacketError::Truncated)?;

        match seg.version {
            IpVersion::V4 => {
                let id = read_u16(self.pkt, 4)?.wrapping_add(i as u16);
                write_u16(dst, 2, seg_len as u16)?;
                write_u16(dst, 4, id)?;
                let csum = checksum::add_u16(checksum::add_u16(self.ipv4_base, seg_len as u16), id);
                write_u16(dst, 10, checksum::finish(csum))?;
            }
            IpVersion::V6 => write_u16(dst, 4, (seg_len - IPV6_HDR_LEN) as u16)?,
        }

        let csum_field = l4 + packet::l4_checksum_offset(seg.proto);
        if seg.proto == PROTO_TCP {
            let seq = read_u32(self.pkt, l4 + 4)?.wrapping_add((i as u32).wrapping_mul(seg.gso_size as u32));
            write_u32(dst, l4 + 4, seq)?;
            let mut flags = *self.pkt.get(l4 + 13).ok_or(PacketError::Truncated)?;
            if i + 1 != self.plan.count {
                flags &= !(TCP_FIN | TCP_PSH);
            }
            if i != 0 {
                flags &= !TCP_CWR;
            }
            *dst.get_mut(l4 + 13).ok_or(PacketError::Truncated)? = flags;
        } else {
            write_u16(dst, l4 + 4, l4_len as u16)?;
        }
        write_u16(dst, csum_field, 0)?;
        // The L4 header has an even length, so its sum and the payload's add up as one region's.
        let acc = checksum::sum(dst.get(l4..hdr_len).ok_or(PacketError::Truncated)?, acc);
        write_u16(dst, csum_field, l4_checksum(acc, seg.proto == PROTO_UDP))
    }
}

/// Sum of an IPv4 header (at most 60 bytes) without its total length, ID and checksum fields: the words
/// every segment's header shares.
fn ipv4_invariant_sum(hdr: &[u8]) -> u64 {
    let mut copy = [0u8; 60];
    let Some(buf) = copy.get_mut(..hdr.len()) else { return 0 };
    buf.copy_from_slice(hdr);
    for field in [2, 4, 10] {
        if let Some(b) = buf.get_mut(field..field + 2) {
            b.fill(0);
        }
    }
    checksum::sum(buf, 0)
}

/// The L4 checksum field value for the running sum `acc`; UDP sends a computed 0 as 0xFFFF.
fn l4_checksum(acc: u64, udp: bool) -> u16 {
    match checksum::finish(acc) {
        0 if udp => 0xffff,
        c => c,
    }
}

fn copy(dst: &mut [u8], at: usize, src: &[u8]) -> Result<(), PacketError> {
    let end = at.checked_add(src.len()).ok_or(PacketError::Truncated)?;
    dst.get_mut(at..end).ok_or(PacketError::Truncated)?.copy_from_slice(src);
    Ok(())
}

fn read_u16(buf: &[u8], at: usize) -> Result<u16, PacketError> {
    match buf.get(at..).and_then(|b| b.get(..2)) {
        Some(&[a, b]) => Ok(u16::from_be_bytes([a, b])),
        _ => Err(PacketError::Truncated),
    }
}

fn read_u32(buf: &[u8], at: usize) -> Result<u32, PacketError> {
    match buf.get(at..).and_then(|b| b.get(..4)) {
        Some(&[a, b, c, d]) => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(PacketError::Truncated),
    }
}

fn write_u16(buf: &mut [u8], at: usize, value: u16) -> Result<(), PacketError> {
    copy(buf, at, &value.to_be_bytes())
}

fn write_u32(buf: &mut [u8], at: usize, value: u32) -> Result<(), PacketError> {
    copy(buf, at, &value.to_be_bytes())
}
