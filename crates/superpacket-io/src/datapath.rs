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
}

impl Outbound {
    /// A preparer that seals with `framer`.
    pub fn new(framer: Arc<dyn Framer>) -> Self {
        Outbound { framer, buf: Vec::new() }
    }

    /// The framer in use.
    pub fn framer(&self) -> &Arc<dyn Framer> {
        &self.framer
    }

    /// Bytes of the last prepared buffer, such as a part that could not be sent yet.
    pub fn prepared(&self, range: std::ops::Range<usize>) -> Option<&[u8]> {
        self.buf.get(range)
    }

    /// Splits `frame` (virtio_net_hdr + IP packet) straight into the slots of the send buffer and has the
    /// framer seal them in place; datagrams the framer wants sent besides (a handshake) go to `control`.
    /// A malformed frame is an [`ErrorKind::InvalidPacket`] error and leaves nothing behind.
    pub fn prepare(&mut self, frame: &[u8], control: &mut Control) -> Result<Prepared<'_>, IoError> {
        let layout = Layout { headroom: self.framer.headroom(), tailroom: self.framer.tailroom() };
        let plan = split::plan(frame)?;
        let need = plan.buffer_len(layout);
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        split::split_into(frame, layout, &mut self.buf[..need])?;
        let mut slots = Slots::new(
            &mut self.buf[..need],
            layout.headroom,
            layout.tailroom,
            plan.seg_ip_len,
            plan.last_ip_len,
            plan.count,
        )
        .ok_or_else(|| IoError::new(ErrorKind::InvalidPacket, "the superpacket does not lay out into slots"))?;
        let sealed = self.framer.seal(&mut slots, control).map_err(|e| match e {
            superpacket_core::framer::SealError::Exhausted => IoError::new(ErrorKind::Exhausted, e.to_string()),
            superpacket_core::framer::SealError::BadLayout => IoError::new(ErrorKind::InvalidArgument, e.to_string()),
        })?;
        let segment_size = if plan.count > 1 { slots.stride() } else { need };
        Ok(Prepared { bytes: &self.buf[..need], segment_size, segments: plan.count, sealed })
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
        let batch = [(from(), &mut a[..]), (from(), &mut b[..]), (from(), &mut c[..]), (from(), &mut d[..]), (stranger, &mut e[..])];
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
}
