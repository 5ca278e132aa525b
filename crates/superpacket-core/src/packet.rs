//! Reading IPv4/IPv6 and TCP/UDP headers: where each header starts, how long it is, which protocol follows.

use crate::PacketError;

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// Largest IP packet (and so largest superpacket) handled anywhere in the crate.
pub const MAX_IP_PACKET: usize = 65_535;

/// Length of an IPv6 fixed header.
pub const IPV6_HDR_LEN: usize = 40;
/// Length of a UDP header.
pub const UDP_HDR_LEN: usize = 8;
/// Length of a TCP header without options.
pub const TCP_MIN_HDR_LEN: usize = 20;

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// IPv4
    V4,
    /// IPv6
    V6,
}

/// Where the headers of one IP packet are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHeaders {
    /// IPv4 or IPv6.
    pub version: IpVersion,
    /// Bytes of IP header: IHL × 4 for IPv4; 40 plus every extension header for IPv6. This is also the
    /// offset of the L4 header.
    pub ip_len: usize,
    /// The upper-layer protocol after all extension headers.
    pub proto: u8,
    /// Total packet length according to the IP header (≤ the buffer length).
    pub total_len: usize,
    /// For IPv4, whether the header has options (IHL > 5). For IPv6, whether there are extension headers.
    pub has_options: bool,
}

impl IpHeaders {
    /// Offset of the L4 header.
    pub const fn l4_offset(&self) -> usize {
        self.ip_len
    }
}

/// Parses the IP header(s) of `pkt`. The buffer may be longer than the packet (the IP length field
/// decides); a buffer shorter than the IP length field says is [`PacketError::Truncated`].
/// IPv6 extension headers hop-by-hop, routing, destination options are walked; a fragment header or a
/// jumbogram is reported as [`PacketError::BadHeader`].
pub fn parse_ip(pkt: &[u8]) -> Result<IpHeaders, PacketError> {
    let first = *pkt.first().ok_or(PacketError::Truncated)?;
    match first >> 4 {
        4 => parse_ipv4(pkt),
        6 => parse_ipv6(pkt),
        _ => Err(PacketError::NotIp),
    }
}

fn parse_ipv4(pkt: &[u8]) -> Result<IpHeaders, PacketError> {
    if pkt.len() < 20 {
        return Err(PacketError::Truncated);
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(PacketError::BadHeader);
    }
    let total_len = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if total_len < ihl {
        return Err(PacketError::LengthMismatch);
    }
    if pkt.len() < total_len {
        return Err(PacketError::Truncated);
    }
    Ok(IpHeaders { version: IpVersion::V4, ip_len: ihl, proto: pkt[9], total_len, has_options: ihl > 20 })
}

fn parse_ipv6(pkt: &[u8]) -> Result<IpHeaders, PacketError> {
    if pkt.len() < IPV6_HDR_LEN {
        return Err(PacketError::Truncated);
    }
    let payload_len = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
    if payload_len == 0 {
        // A jumbogram (or an empty payload): neither can carry a segmentable L4 packet here.
        return Err(PacketError::BadHeader);
    }
    let total_len = IPV6_HDR_LEN + payload_len;
    if pkt.len() < total_len {
        return Err(PacketError::Truncated);
    }
    let mut next = pkt[6];
    let mut off = IPV6_HDR_LEN;
    loop {
        match next {
            // hop-by-hop, routing, destination options: length in 8-byte units, not counting the first 8.
            0 | 43 | 60 => {
                let ext = pkt.get(off..off + 2).ok_or(PacketError::Truncated)?;
                let len = (usize::from(ext[1]) + 1) * 8;
                if off + len > total_len {
                    return Err(PacketError::Truncated);
                }
                next = ext[0];
                off += len;
            }
            44 => return Err(PacketError::BadHeader),
            _ => break,
        }
    }
    Ok(IpHeaders { version: IpVersion::V6, ip_len: off, proto: next, total_len, has_options: off > IPV6_HDR_LEN })
}

/// Length of the TCP header (data offset × 4) at `tcp`, checked against the buffer.
pub fn tcp_header_len(tcp: &[u8]) -> Result<usize, PacketError> {
    let doff = *tcp.get(12).ok_or(PacketError::Truncated)?;
    let len = usize::from(doff >> 4) * 4;
    if len < TCP_MIN_HDR_LEN {
        return Err(PacketError::BadHeader);
    }
    if tcp.len() < len {
        return Err(PacketError::Truncated);
    }
    Ok(len)
}

/// The L4 header length for `proto` at the start of `l4`: TCP's data offset, or 8 for UDP.
pub fn l4_header_len(proto: u8, l4: &[u8]) -> Result<usize, PacketError> {
    match proto {
        PROTO_TCP => tcp_header_len(l4),
        PROTO_UDP if l4.len() >= UDP_HDR_LEN => Ok(UDP_HDR_LEN),
        PROTO_UDP => Err(PacketError::Truncated),
        _ => Err(PacketError::UnsupportedProtocol),
    }
}

/// Offset of the checksum field within the L4 header.
pub const fn l4_checksum_offset(proto: u8) -> usize {
    if proto == PROTO_TCP {
        16
    } else {
        6
    }
}

/// Source and destination addresses as slices (4 or 16 bytes each). `pkt` must have passed [`parse_ip`].
pub fn addresses(pkt: &[u8], version: IpVersion) -> (&[u8], &[u8]) {
    match version {
        IpVersion::V4 => (&pkt[12..16], &pkt[16..20]),
        IpVersion::V6 => (&pkt[8..24], &pkt[24..40]),
    }
}

/// Running pseudo-header sum for an L4 segment of `l4_len` bytes of packet `pkt`, which must have
/// passed [`parse_ip`].
pub fn pseudo_header_sum(pkt: &[u8], hdrs: &IpHeaders, l4_len: usize) -> u64 {
    let (src, dst) = addresses(pkt, hdrs.version);
    let acc = crate::checksum::sum(src, 0);
    let acc = crate::checksum::sum(dst, acc);
    let acc = crate::checksum::add_u16(acc, u16::from(hdrs.proto));
    // l4_len ≤ 65,535 everywhere in this crate; for IPv6 the upper 16 bits of the 32-bit length are 0.
    crate::checksum::add_u16(acc, l4_len as u16)
}

/// The destination address of an IPv4 or IPv6 packet, read from its fixed header alone (for routing);
/// `None` if the bytes are too short or not IPv4/IPv6.
pub fn ip_destination(pkt: &[u8]) -> Option<std::net::IpAddr> {
    fixed_header_address(pkt, 16, 24)
}

/// The source address of an IPv4 or IPv6 packet, read from its fixed header alone (for source checks);
/// `None` if the bytes are too short or not IPv4/IPv6.
pub fn ip_source(pkt: &[u8]) -> Option<std::net::IpAddr> {
    fixed_header_address(pkt, 12, 8)
}

/// The address at `v4_at` (IPv4) or `v6_at` (IPv6) of a fixed IP header.
fn fixed_header_address(pkt: &[u8], v4_at: usize, v6_at: usize) -> Option<std::net::IpAddr> {
    match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 => {
            let b: [u8; 4] = pkt.get(v4_at..v4_at + 4)?.try_into().ok()?;
            Some(std::net::IpAddr::from(b))
        }
        6 if pkt.len() >= IPV6_HDR_LEN => {
            let b: [u8; 16] = pkt.get(v6_at..v6_at + 16)?.try_into().ok()?;
            Some(std::net::IpAddr::from(b))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6_with_ext(exts: &[(u8, usize)], proto: u8, payload: usize) -> Vec<u8> {
        let ext_len: usize = exts.iter().map(|e| e.1).sum();
        let mut p = vec![0u8; 40 + ext_len + payload];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((ext_len + payload) as u16).to_be_bytes());
        p[6] = exts.first().map_or(proto, |e| e.0);
        let mut off = 40;
        for (i, &(_, len)) in exts.iter().enumerate() {
            p[off] = exts.get(i + 1).map_or(proto, |e| e.0);
            p[off + 1] = (len / 8 - 1) as u8;
            off += len;
        }
        p
    }

    #[test]
    fn walks_ipv6_extension_headers() {
        let p = v6_with_ext(&[(0, 8), (43, 24), (60, 16)], PROTO_TCP, 20);
        let h = parse_ip(&p).unwrap();
        assert_eq!((h.ip_len, h.proto, h.total_len, h.has_options), (88, PROTO_TCP, 108, true));
    }

    #[test]
    fn rejects_fragments_jumbograms_and_truncation() {
        assert_eq!(parse_ip(&v6_with_ext(&[(44, 8)], PROTO_UDP, 8)), Err(PacketError::BadHeader));
        let mut p = v6_with_ext(&[], PROTO_UDP, 8);
        p[4] = 0;
        p[5] = 0;
        assert_eq!(parse_ip(&p), Err(PacketError::BadHeader));
        let p = v6_with_ext(&[(0, 16)], PROTO_UDP, 0);
        assert_eq!(parse_ip(&p[..44]), Err(PacketError::Truncated));
        assert_eq!(parse_ip(&[0x45; 19]), Err(PacketError::Truncated));
        assert_eq!(parse_ip(&[0x15; 40]), Err(PacketError::NotIp));
        assert_eq!(parse_ip(&[]), Err(PacketError::Truncated));
    }

    #[test]
    fn ipv4_lengths_are_checked() {
        let mut p = vec![0u8; 60];
        p[0] = 0x46;
        p[2..4].copy_from_slice(&60u16.to_be_bytes());
        p[9] = PROTO_UDP;
        let h = parse_ip(&p).unwrap();
        assert_eq!((h.ip_len, h.total_len, h.has_options), (24, 60, true));
        p[2..4].copy_from_slice(&61u16.to_be_bytes());
        assert_eq!(parse_ip(&p), Err(PacketError::Truncated));
        p[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(parse_ip(&p), Err(PacketError::LengthMismatch));
        p[0] = 0x44;
        assert_eq!(parse_ip(&p), Err(PacketError::BadHeader));
    }
}
