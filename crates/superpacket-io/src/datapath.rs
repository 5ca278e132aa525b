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

use std::sync::Arc;

use superpacket_core::framer::Framer;
use superpacket_core::split::{self, Layout};

use crate::error::{ErrorKind, IoError};

/// A superpacket turned into framed datagrams back to back, ready for one GSO send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared<'a> {
    /// The datagrams: every one `segment_size` bytes but the last, which may be shorter.
    pub bytes: &'a [u8],
    /// The datagram size for UDP_SEGMENT.
    pub segment_size: usize,
    /// How many datagrams.
    pub segments: usize,
}

/// Frames → framed, strided send buffers.
pub struct Outbound {
    framer: Arc<dyn Framer>,
    counter: u64,
    buf: Vec<u8>,
}

impl Outbound {
    /// A preparer that seals with `framer`; its per-segment counter starts at 0.
    pub fn new(framer: Arc<dyn Framer>) -> Self {
        Outbound { framer, counter: 0, buf: Vec::new() }
    }

    /// The framer in use.
    pub fn framer(&self) -> &Arc<dyn Framer> {
        &self.framer
    }

    /// Bytes of the last prepared buffer, such as a part that could not be sent yet.
    pub fn prepared(&self, range: std::ops::Range<usize>) -> Option<&[u8]> {
        self.buf.get(range)
    }

    /// The counter the next sealed segment gets.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Splits `frame` (virtio_net_hdr + IP packet) into the send buffer and seals every segment in place.
    /// A malformed frame is an [`ErrorKind::InvalidPacket`] error and leaves nothing behind.
    pub fn prepare(&mut self, frame: &[u8]) -> Result<Prepared<'_>, IoError> {
        let layout = Layout { headroom: self.framer.headroom(), tailroom: self.framer.tailroom() };
        let plan = split::plan(frame)?;
        let need = plan.buffer_len(layout);
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        split::split_into(frame, layout, &mut self.buf[..need])?;
        let stride = plan.stride(layout);
        let mut written = 0;
        let mut segment_size = 0;
        for i in 0..plan.count {
            let last = i + 1 == plan.count;
            let ip_len = if last { plan.last_ip_len } else { plan.seg_ip_len };
            let start = i * stride;
            let slot = &mut self.buf[start..start + layout.headroom + ip_len + layout.tailroom];
            let sealed = self
                .framer
                .seal(slot, ip_len, self.counter)
                .map_err(|e| IoError::new(ErrorKind::InvalidArgument, format!("framer refused to seal: {e:?}")))?;
            self.counter = self.counter.wrapping_add(1);
            if sealed > slot.len() || sealed == 0 {
                return Err(framer_broke("returned a sealed length outside its slot"));
            }
            if i == 0 {
                segment_size = sealed;
            } else if (!last && sealed != segment_size) || sealed > segment_size {
                return Err(framer_broke("sealed equal payloads to different lengths"));
            }
            // Sealing may use less than the tailroom: close the gap so the stride stays fixed.
            if written != start {
                self.buf.copy_within(start..start + sealed, written);
            }
            written += sealed;
        }
        Ok(Prepared { bytes: &self.buf[..written], segment_size, segments: plan.count })
    }
}

fn framer_broke(what: &str) -> IoError {
    IoError::new(ErrorKind::InvalidArgument, format!("the framer {what}; UDP_SEGMENT needs a fixed datagram size"))
}

/// What [`open_datagrams`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Opened {
    /// Datagrams whose inner packet was kept.
    pub packets: usize,
    /// Datagrams the framer dropped.
    pub dropped: usize,
}

/// Opens every datagram in place with `framer` and pushes the inner packets onto `packets`.
pub fn open_datagrams<'a>(
    framer: &dyn Framer,
    datagrams: impl Iterator<Item = &'a mut [u8]>,
    packets: &mut Vec<&'a [u8]>,
) -> Opened {
    let mut opened = Opened::default();
    for dgram in datagrams {
        let opened_range = framer.open(dgram);
        let dgram: &'a [u8] = dgram;
        match opened_range {
            Ok(range) => match dgram.get(range) {
                Some(inner) if !inner.is_empty() => {
                    packets.push(inner);
                    opened.packets += 1;
                }
                _ => opened.dropped += 1,
            },
            Err(_) => opened.dropped += 1,
        }
    }
    opened
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

    #[test]
    fn header_framer_output_has_fixed_stride_and_opens_back() {
        let frame = uso_frame(3000, 1200);
        let mut out = Outbound::new(Arc::new(HeaderFramer::new(b"ID").unwrap()));
        let p = out.prepare(&frame).unwrap();
        assert_eq!((p.segments, p.segment_size, p.bytes.len()), (3, 2 + 28 + 1200, 2 * 1230 + 2 + 28 + 600));
        let mut bytes = p.bytes.to_vec();
        let (a, rest) = bytes.split_at_mut(1230);
        let (b, c) = rest.split_at_mut(1230);
        let mut packets = Vec::new();
        let opened = open_datagrams(&HeaderFramer::new(b"ID").unwrap(), [a, b, c].into_iter(), &mut packets);
        assert_eq!(opened, Opened { packets: 3, dropped: 0 });
        assert_eq!(packets.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![1228, 1228, 628]);
        // The last segment's payload is the tail of the original payload.
        assert_eq!(packets[2][28], (2400 % 256) as u8);
    }

    #[test]
    fn malformed_frames_are_coded_errors() {
        let mut out = Outbound::new(Arc::new(PlainFramer));
        let err = out.prepare(&[0u8; 5]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidPacket);
        let mut frame = uso_frame(100, 0);
        let err = out.prepare(&frame).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidPacket);
        frame.truncate(50);
        assert!(out.prepare(&frame).is_err());
    }

    #[test]
    fn foreign_datagrams_are_dropped_not_delivered() {
        let mut a = *b"IDpacket";
        let mut b = *b"XXpacket";
        let mut c = *b"ID";
        let mut packets = Vec::new();
        let f = HeaderFramer::new(b"ID").unwrap();
        let opened = open_datagrams(&f, [&mut a[..], &mut b[..], &mut c[..]].into_iter(), &mut packets);
        assert_eq!(opened, Opened { packets: 1, dropped: 2 });
        assert_eq!(packets, vec![&b"packet"[..]]);
    }
}
