//! IP packets with complete checksums, for tests that write them to a TUN.

use superpacket_core::checksum;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

/// One IPv4 or IPv6 packet with complete checksums. `l4` is the TCP or UDP header with a zero checksum
/// (and, for UDP, a zero length that is filled in).
pub fn ip_packet(src: &[u8], dst: &[u8], proto: u8, id: u16, l4: &[u8], payload: &[u8]) -> Vec<u8> {
    let l4_len = l4.len() + payload.len();
    let mut p = if src.len() == 4 {
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        h[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&id.to_be_bytes());
        h.extend_from_slice(src);
        h.extend_from_slice(dst);
        let c = checksum::finish(checksum::sum(&h, 0));
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    } else {
        let mut h = vec![0x60, 0, 0, 0, 0, 0, proto, 64];
        h[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        h.extend_from_slice(src);
        h.extend_from_slice(dst);
        h
    };
    let l4_start = p.len();
    p.extend_from_slice(l4);
    p.extend_from_slice(payload);
    if proto == UDP {
        p[l4_start + 4..l4_start + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    }
    let c = l4_checksum(&p);
    let at = l4_start + if proto == TCP { 16 } else { 6 };
    p[at..at + 2].copy_from_slice(&c.to_be_bytes());
    p
}

/// Header length, protocol and pseudo-header sum of a packet built by [`ip_packet`] (no options).
pub fn l4_info(p: &[u8]) -> (usize, u8, u64) {
    if p[0] >> 4 == 4 {
        let l4_len = (p.len() - 20) as u16;
        let sum =
            checksum::pseudo_header_v4(&p[12..16].try_into().unwrap(), &p[16..20].try_into().unwrap(), p[9], l4_len);
        (20, p[9], sum)
    } else {
        let l4_len = (p.len() - 40) as u32;
        let sum =
            checksum::pseudo_header_v6(&p[8..24].try_into().unwrap(), &p[24..40].try_into().unwrap(), p[6], l4_len);
        (40, p[6], sum)
    }
}

/// The full L4 checksum field value of `p`, computed with the field itself taken as zero.
pub fn l4_checksum(p: &[u8]) -> u16 {
    let (start, proto, pseudo) = l4_info(p);
    let at = start + if proto == TCP { 16 } else { 6 };
    let mut l4 = p[start..].to_vec();
    l4[at - start..at - start + 2].copy_from_slice(&[0, 0]);
    match checksum::finish(checksum::sum(&l4, pseudo)) {
        0 if proto == UDP => 0xffff,
        c => c,
    }
}
