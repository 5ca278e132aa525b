//! The two halves of a tunnel's data path, usable on their own (the TypeScript writers) or together
//! (the native [`crate::tunnel::Tunnel`]).
//!
//! Outbound: a frame read from the TUN is split straight into one send buffer at a fixed stride, with the
//! framer's headroom and tailroom around every segment, and each segment is sealed in place; the buffer
//! then leaves in one UDP_SEGMENT send per 64 segments. This is why we segment ourselves rather than use
//! tun-rs's `recv_multiple`, which splits into separate buffers that would each need another copy.
//!
//! Inbound: received datagrams are opened in place, and the packets they carry are coalesced into
//! superpackets for the TUN write.

use std::net::SocketAddr;
use std::sync::Arc;

use superpacket_core::framer::{Control, DropCounters, DropReason, Framer, Opened, Sealed, Slots};
use superpacket_core::split::{self, Layout};
use superpacket_core::MAX_SEGMENTS;

use crate::error::{ErrorKind, IoError};

/// A superpacket turned into sealed datagrams back to back, ready for one GSO send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared<'a> {
    /// The datagrams: every one `segment_size` bytes but the last, which may be shorter.
    pub bytes: &'a [u8],
    /// The datagram size for UDP_SEGMENT.
    pub segment_size: usize,
    /// How many datagrams.
    pub segments: usize,
    /// Where the framer says they go (or that they were held or dropped: then `bytes` is not to be sent).
    pub sealed: Sealed,
}

/// Frames → sealed, strided send buffers.
pub struct Outbound {
    framer: Arc<dyn Framer>,
    buf: Vec<u8>,
    /// Bytes of `buf` holding prepared datagrams (several superpackets when appended).
    len: usize,
}

/// Where [`Outbound::prepare_append`] put a superpacket's datagrams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The datagrams' bytes in the send buffer ([`Outbound::prepared`]).
    pub range: std::ops::Range<usize>,
    /// The datagram size for UDP_SEGMENT.
    pub segment_size: usize,
    /// How many datagrams.
    pub segments: usize,
    /// Where the framer says they go.
    pub sealed: Sealed,
}

impl Outbound {
    /// A preparer that seals with `framer`.
    pub fn new(framer: Arc<dyn Framer>) -> Self {
        Outbound { framer, buf: Vec::new(), len: 0 }
    }

    /// The framer in use.
    pub fn framer(&self) -> &Arc<dyn Framer> {
        &self.framer
    }

    /// Bytes of the prepared buffer, such as a part that could not be sent yet.
    pub fn prepared(&self, range: std::ops::Range<usize>) -> Option<&[u8]> {
        self.buf.get(..self.len)?.get(range)
    }

    /// Forgets every prepared superpacket (the buffer is reused).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Splits `frame` (virtio_net_hdr + IP packet) straight into the slots of the send buffer and has the
    /// framer seal them in place; datagrams the framer wants sent besides (a handshake) go to `control`.
    /// Replaces whatever was prepared before. A malformed frame is an [`ErrorKind::InvalidPacket`] error.
    pub fn prepare(&mut self, frame: &[u8], control: &mut Control) -> Result<Prepared<'_>, IoError> {
        self.clear();
        let a = self.prepare_append(frame, control)?;
        Ok(Prepared { bytes: &self.buf[a.range], segment_size: a.segment_size, segments: a.segments, sealed: a.sealed })
    }

    /// Like [`prepare`](Self::prepare), after what is already prepared, so that several superpackets (or
    /// single packets) can leave together. A malformed frame leaves what was prepared before untouched.
    pub fn prepare_append(&mut self, frame: &[u8], control: &mut Control) -> Result<Appended, IoError> {
        self.prepare_append_planned(frame, split::plan(frame), control)
    }

    /// [`prepare_append`](Self::prepare_append) with the frame already planned (as
    /// [`crate::tun::TunQueue::read_frame_planned`] does while counting): the frame is not parsed again.
    /// `plan` must be what [`split::plan`] said of these bytes; one made for a frame of another length is
    /// an [`ErrorKind::InvalidPacket`] error.
    pub fn prepare_append_planned(
        &mut self,
        frame: &[u8],
        plan: Result<split::SplitPlan, superpacket_core::PacketError>,
        control: &mut Control,
    ) -> Result<Appended, IoError> {
        let layout = Layout { headroom: self.framer.headroom(), tailroom: self.framer.tailroom() };
        let plan = plan?;
        let need = plan.buffer_len(layout);
        let start = self.len;
        let end = start
            .checked_add(need)
            .ok_or_else(|| IoError::new(ErrorKind::InvalidPacket, "the superpacket does not lay out into slots"))?;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        let out = &mut self.buf[start..end];
        split::split_into_planned(frame, &plan, layout, out)?;
        let mut slots =
            Slots::new(out, layout.headroom, layout.tailroom, plan.seg_ip_len, plan.last_ip_len, plan.count)
                .ok_or_else(|| IoError::new(ErrorKind::InvalidPacket, "the superpacket does not lay out into slots"))?;
        let sealed = self.framer.seal(&mut slots, control).map_err(|e| match e {
            superpacket_core::framer::SealError::Exhausted => IoError::new(ErrorKind::Exhausted, e.to_string()),
            superpacket_core::framer::SealError::BadLayout => IoError::new(ErrorKind::InvalidArgument, e.to_string()),
        })?;
        let segment_size = if plan.count > 1 { slots.stride() } else { need };
        self.len = end;
        Ok(Appended { range: start..end, segment_size, segments: plan.count, sealed })
    }
}

/// Consecutive prepared datagrams that can leave in one UDP send: to one destination, all
/// `segment_size` bytes but the last (a GSO train; the socket falls back to `sendmmsg` by itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Train {
    /// Where the datagrams go.
    pub dest: SocketAddr,
    /// Their bytes in the [`Outbound`] buffer.
    pub range: std::ops::Range<usize>,
    /// The datagram size.
    pub segment_size: usize,
    /// How many datagrams.
    pub segments: usize,
    /// A shorter last datagram (or a whole superpacket) ends a train.
    closed: bool,
}

/// Groups prepared superpackets into [`Train`]s: consecutive single packets of one size to one destination
/// become one GSO train (up to [`MAX_SEGMENTS`]), as offloads would have made them.
#[derive(Debug, Default)]
pub struct Trains {
    trains: Vec<Train>,
}

impl Trains {
    /// Forgets every train.
    pub fn clear(&mut self) {
        self.trains.clear();
    }

    /// The trains, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Train> {
        self.trains.iter()
    }

    /// Adds what [`Outbound::prepare_append`] put at `a.range`, bound for `dest`.
    pub fn push(&mut self, dest: SocketAddr, a: &Appended) {
        let len = a.range.len();
        if a.segments == 1 {
            if let Some(t) = self.trains.last_mut() {
                if !t.closed
                    && t.dest == dest
                    && t.range.end == a.range.start
                    && len <= t.segment_size
                    && t.segments < MAX_SEGMENTS
                {
                    t.range.end = a.range.end;
                    t.segments += 1;
                    t.closed = len < t.segment_size;
                    return;
                }
            }
        }
        self.trains.push(Train {
            dest,
            range: a.range.clone(),
            segment_size: a.segment_size,
            segments: a.segments,
            closed: a.segments > 1,
        });
    }
}

/// Which sources a transport accepts datagrams from, for framers that authenticate nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFilter {
    /// Any source (the framer authenticates, or the transport learns its peer).
    Any,
    /// Only this address: anything else is dropped as [`DropReason::WrongSource`].
    Only(SocketAddr),
}

/// What [`open_batch`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Datagrams whose inner packet was kept.
    pub packets: usize,
    /// Control messages the framer consumed.
    pub consumed: usize,
    /// Datagrams dropped (counted by reason in the [`DropCounters`]).
    pub dropped: usize,
    /// The source of the last datagram whose packet was kept.
    pub last_source: Option<SocketAddr>,
}

/// Opens every `(source, datagram)` in place, pushes the inner packets onto `packets` and the framer's
/// replies onto `control`, and counts every drop under its reason. `scratch` must be at least as long as
/// all datagrams together (each datagram gets its own part of it, so packets from all of them stay valid).
/// A datagram that fails never costs another its delivery.
pub fn open_batch<'a>(
    framer: &dyn Framer,
    filter: SourceFilter,
    datagrams: impl Iterator<Item = (SocketAddr, &'a mut [u8])>,
    mut scratch: &'a mut [u8],
    packets: &mut Vec<&'a [u8]>,
    control: &mut Control,
    drops: &DropCounters,
) -> OpenReport {
    let mut report = OpenReport::default();
    for (from, dgram) in datagrams {
        let avail = std::mem::take(&mut scratch);
        let (mine, rest) = avail.split_at_mut(dgram.len().min(avail.len()));
        scratch = rest;
        let outcome = match filter {
            SourceFilter::Only(peer) if peer != from => Opened::Dropped(DropReason::WrongSource),
            _ if mine.len() < dgram.len() => Opened::Dropped(DropReason::TooShort),
            _ => framer.open(dgram, mine, from, control),
        };
        match outcome {
            Opened::Data { packet, .. } if !packet.is_empty() => {
                packets.push(packet);
                report.packets += 1;
                report.last_source = Some(from);
            }
            Opened::Data { .. } => {
                drops.add(DropReason::TooShort, 1);
                report.dropped += 1;
            }
            Opened::Consumed => report.consumed += 1,
            Opened::Dropped(reason) => {
                drops.add(reason, 1);
                report.dropped += 1;
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use superpacket_core::framer::{HeaderFramer, PlainFramer};
    use superpacket_core::vnet::{VirtioNetHdr, FLAG_NEEDS_CSUM, GSO_UDP_L4};

    /// A UDP/IPv4 superpacket of `payload` bytes for USO with `gso` bytes per segment.
    fn uso_frame(payload: usize, gso: u16) -> Vec<u8> {
        let mut f = vec![0u8; 10 + 28 + payload];
        VirtioNetHdr {
            flags: FLAG_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: 28,
            gso_size: gso,
            csum_start: 20,
            csum_offset: 6,
        }
        .encode(&mut f)
        .unwrap();
        let ip = &mut f[10..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((28 + payload) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
        ip[16..20].copy_from_slice(&[198, 18, 0, 2]);
        ip[20..22].copy_from_slice(&1000u16.to_be_bytes());
        ip[22..24].copy_from_slice(&2000u16.to_be_bytes());
        ip[24..26].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
        for (i, b) in ip[28..].iter_mut().enumerate() {
            *b = i as u8;
        }
        f
    }

    fn from() -> SocketAddr {
        "198.18.0.2:51820".parse().unwrap()
    }

    #[test]
    fn header_framer_output_has_fixed_stride_and_opens_back() {
        let frame = uso_frame(3000, 1200);
        let framer = HeaderFramer::new(b"ID").unwrap();
        let mut out = Outbound::new(Arc::new(framer.clone()));
        let p = out.prepare(&frame, &mut Control::new()).unwrap();
        assert_eq!((p.segments, p.segment_size, p.bytes.len()), (3, 2 + 28 + 1200, 2 * 1230 + 2 + 28 + 600));
        assert_eq!(p.sealed, Sealed::ToPeer);
        let mut bytes = p.bytes.to_vec();
        let (a, rest) = bytes.split_at_mut(1230);
        let (b, c) = rest.split_at_mut(1230);
        let mut packets = Vec::new();
        let mut scratch = vec![0u8; 4000];
        let drops = DropCounters::default();
        let report = open_batch(
            &framer,
            SourceFilter::Any,
            [(from(), a), (from(), b), (from(), c)].into_iter(),
            &mut scratch,
            &mut packets,
            &mut Control::new(),
            &drops,
        );
        assert_eq!((report.packets, report.dropped, report.last_source), (3, 0, Some(from())));
        assert_eq!(packets.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![1228, 1228, 628]);
        // The last segment's payload is the tail of the original payload.
        assert_eq!(packets[2][28], (2400 % 256) as u8);
    }

    #[test]
    fn a_plan_made_at_the_read_prepares_the_same_datagrams_and_a_stale_one_is_refused() {
        let frame = uso_frame(3000, 1200);
        let framer = Arc::new(HeaderFramer::new(b"ID").unwrap());
        let mut parsed = Outbound::new(framer.clone());
        let mut planned = Outbound::new(framer);
        let a = parsed.prepare_append(&frame, &mut Control::new()).unwrap();
        let b = planned.prepare_append_planned(&frame, split::plan(&frame), &mut Control::new()).unwrap();
        assert_eq!(a, b);
        assert_eq!(parsed.prepared(a.range.clone()), planned.prepared(b.range.clone()));
        // A plan of another frame (another length) is refused and leaves what was prepared alone.
        let other = split::plan(&uso_frame(2000, 1200));
        let err = planned.prepare_append_planned(&frame, other, &mut Control::new()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidPacket);
        // So is a frame the read could not plan, with the read's reason.
        let err = planned.prepare_append_planned(&[0u8; 5], split::plan(&[0u8; 5]), &mut Control::new()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidPacket);
        assert_eq!(planned.prepared(b.range.clone()), parsed.prepared(a.range));
    }

    #[test]
    fn malformed_frames_are_coded_errors() {
        let mut out = Outbound::new(Arc::new(PlainFramer));
        let err = out.prepare(&[0u8; 5], &mut Control::new()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidPacket);
        let mut frame = uso_frame(100, 0);
        let err = out.prepare(&frame, &mut Control::new()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidPacket);
        frame.truncate(50);
        assert!(out.prepare(&frame, &mut Control::new()).is_err());
    }

    #[test]
    fn foreign_datagrams_are_dropped_by_reason_and_cost_no_good_one() {
        let mut a = *b"IDpacket";
        let mut b = *b"XXpacket";
        let mut c = *b"ID";
        let mut d = *b"IDsecond";
        let mut e = *b"IDstranger";
        let stranger: SocketAddr = "198.18.9.9:1".parse().unwrap();
        let mut packets = Vec::new();
        let mut scratch = vec![0u8; 64];
        let drops = DropCounters::default();
        let f = HeaderFramer::new(b"ID").unwrap();
        let batch = [
            (from(), &mut a[..]),
            (from(), &mut b[..]),
            (from(), &mut c[..]),
            (from(), &mut d[..]),
            (stranger, &mut e[..]),
        ];
        let report = open_batch(
            &f,
            SourceFilter::Only(from()),
            batch.into_iter(),
            &mut scratch,
            &mut packets,
            &mut Control::new(),
            &drops,
        );
        assert_eq!((report.packets, report.dropped), (2, 3));
        assert_eq!(packets, vec![&b"packet"[..], &b"second"[..]]);
        assert_eq!(drops.get(DropReason::Mismatch), 1);
        assert_eq!(drops.get(DropReason::TooShort), 1);
        assert_eq!(drops.get(DropReason::WrongSource), 1);
    }

    #[test]
    fn single_packets_of_one_size_to_one_peer_become_one_train() {
        let peer = from();
        let other: SocketAddr = "198.18.9.9:1".parse().unwrap();
        let mut out = Outbound::new(Arc::new(PlainFramer));
        let mut trains = Trains::default();
        let mut control = Control::new();
        let sizes = [1200, 1200, 1200, 800, 1200, 1200];
        for (i, &n) in sizes.iter().enumerate() {
            let a = out.prepare_append(&plain_frame(n), &mut control).unwrap();
            trains.push(if i == 5 { other } else { peer }, &a);
        }
        let t: Vec<_> = trains.iter().map(|t| (t.dest, t.segments, t.segment_size, t.range.clone())).collect();
        // 3 x 1228 then the shorter 828 closes the train; the next 1228 starts a new one; another peer, another.
        assert_eq!(
            t,
            vec![(peer, 4, 1228, 0..3 * 1228 + 828), (peer, 1, 1228, 4512..5740), (other, 1, 1228, 5740..6968)]
        );
        assert_eq!(out.prepared(0..4).map(|b| b[0]), Some(0x45));
        // A GSO superpacket is a train of its own.
        let a = out.prepare_append(&uso_frame(3000, 1200), &mut control).unwrap();
        trains.push(peer, &a);
        assert_eq!(trains.iter().last().map(|t| t.segments), Some(3));
    }

    /// A frame holding one complete UDP/IPv4 packet of `payload` bytes (no GSO, nothing left to the kernel).
    fn plain_frame(payload: usize) -> Vec<u8> {
        let mut f = uso_frame(payload, 0);
        f[..10].fill(0);
        let ip = &mut f[10..];
        let sum = superpacket_core::checksum::checksum(&ip[..20]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        // A zero UDP checksum over IPv4 means "none".
        ip[26..28].copy_from_slice(&[0, 0]);
        f
    }
}
