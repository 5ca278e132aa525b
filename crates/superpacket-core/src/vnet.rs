//! The 10-byte `virtio_net_hdr` that a TUN device with IFF_VNET_HDR puts before every packet.
//!
//! Fields are in native byte order (legacy virtio, TUNSETVNETLE not used).

use crate::PacketError;

/// Length of the header as used here (TUNSETVNETHDRSZ left at its default).
pub const VNET_HDR_LEN: usize = 10;

/// `flags`: the L4 checksum is to be completed from `csum_start`/`csum_offset`.
pub const FLAG_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum was already verified.
pub const FLAG_DATA_VALID: u8 = 2;

/// `gso_type`: a single packet.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: IPv4 TCP segmentation.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: IPv6 TCP segmentation.
pub const GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation (USO), IPv4 or IPv6.
pub const GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: the TCP stream uses ECN (CWR goes on the first segment only).
pub const GSO_ECN: u8 = 0x80;

/// What kind of segmentation a frame asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GsoKind {
    /// One packet; no segmentation.
    None,
    /// TCP over IPv4.
    TcpV4,
    /// TCP over IPv6.
    TcpV6,
    /// UDP (USO), either IP version.
    UdpL4,
}

impl GsoKind {
    /// The `gso_type` byte, without the ECN bit.
    pub const fn to_raw(self) -> u8 {
        match self {
            GsoKind::None => GSO_NONE,
            GsoKind::TcpV4 => GSO_TCPV4,
            GsoKind::TcpV6 => GSO_TCPV6,
            GsoKind::UdpL4 => GSO_UDP_L4,
        }
    }
}

/// A decoded `virtio_net_hdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VirtioNetHdr {
    /// FLAG_NEEDS_CSUM and/or FLAG_DATA_VALID.
    pub flags: u8,
    /// GSO_* with the optional GSO_ECN bit.
    pub gso_type: u8,
    /// Length of all headers up to the end of L4; only a hint (the kernel can get it wrong when forwarding).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Offset from the start of the IP packet where checksumming starts (the L4 header).
    pub csum_start: u16,
    /// Offset from csum_start of the checksum field.
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// Reads the first [`VNET_HDR_LEN`] bytes of `buf` and checks that flags and gso_type are known.
    pub fn decode(buf: &[u8]) -> Result<Self, PacketError> {
        let b = buf.get(..VNET_HDR_LEN).ok_or(PacketError::Truncated)?;
        let hdr = VirtioNetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_ne_bytes([b[2], b[3]]),
            gso_size: u16::from_ne_bytes([b[4], b[5]]),
            csum_start: u16::from_ne_bytes([b[6], b[7]]),
            csum_offset: u16::from_ne_bytes([b[8], b[9]]),
        };
        hdr.kind()?;
        if hdr.flags & !(FLAG_NEEDS_CSUM | FLAG_DATA_VALID) != 0 {
            return Err(PacketError::BadVnetHeader);
        }
        Ok(hdr)
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `out`.
    pub fn encode(&self, out: &mut [u8]) -> Result<(), PacketError> {
        let b = out.get_mut(..VNET_HDR_LEN).ok_or(PacketError::BufferTooSmall)?;
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        Ok(())
    }

    /// The segmentation asked for, or [`PacketError::BadVnetHeader`] for an unknown gso_type.
    pub fn kind(&self) -> Result<GsoKind, PacketError> {
        match self.gso_type & !GSO_ECN {
            GSO_NONE => Ok(GsoKind::None),
            GSO_TCPV4 => Ok(GsoKind::TcpV4),
            GSO_TCPV6 => Ok(GsoKind::TcpV6),
            GSO_UDP_L4 => Ok(GsoKind::UdpL4),
            _ => Err(PacketError::BadVnetHeader),
        }
    }

    /// Whether the ECN bit is set.
    pub const fn ecn(&self) -> bool {
        self.gso_type & GSO_ECN != 0
    }

    /// Whether the L4 checksum still has to be completed.
    pub const fn needs_csum(&self) -> bool {
        self.flags & FLAG_NEEDS_CSUM != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_field() {
        let hdr = VirtioNetHdr {
            flags: FLAG_NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut buf = [0u8; VNET_HDR_LEN];
        hdr.encode(&mut buf).unwrap();
        assert_eq!(VirtioNetHdr::decode(&buf).unwrap(), hdr);
        assert_eq!(hdr.kind().unwrap(), GsoKind::TcpV4);
        assert!(hdr.ecn());
    }

    #[test]
    fn rejects_unknown_type_flags_and_short_buffers() {
        let mut buf = [0u8; VNET_HDR_LEN];
        buf[1] = 3; // legacy UFO
        assert_eq!(VirtioNetHdr::decode(&buf), Err(PacketError::BadVnetHeader));
        buf[1] = 0;
        buf[0] = 4;
        assert_eq!(VirtioNetHdr::decode(&buf), Err(PacketError::BadVnetHeader));
        assert_eq!(VirtioNetHdr::decode(&buf[..9]), Err(PacketError::Truncated));
    }
}
