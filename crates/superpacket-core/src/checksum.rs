//! The Internet checksum (RFC 1071) and the IPv4/IPv6 pseudo-header sums.
//!
//! Sums are kept as a `u64` accumulator of native-endian 32-bit words: one's-complement addition is
//! independent of byte order, so the bytes are never swapped until [`fold`] hands back the big-endian
//! value. Summing 32-bit words into 64 bits needs no carry handling for any packet size; the inner loop
//! over 64-byte blocks lives in `superpacket-accel`, which also builds it for AVX2 and picks a build at
//! run time.

/// Adds the bytes of `data` to the running sum `acc`. `data` must start at an even offset of the
/// checksummed region for the result to be meaningful (every caller sums whole headers or whole
/// payloads that start at an even offset).
#[inline]
pub fn sum(data: &[u8], acc: u64) -> u64 {
    // Whole 64-byte blocks go through the vector loop (AVX2 where the CPU has it), the tail word by word.
    let whole = data.len() / superpacket_accel::BLOCK * superpacket_accel::BLOCK;
    let (blocks, mut rest) = data.split_at(whole);
    let acc = if blocks.is_empty() { acc } else { acc_add(acc, superpacket_accel::sum_blocks(blocks)) };
    // The tail is under 64 bytes: its at most 16 words add up in 64 bits without a carry to wrap, so they
    // are summed plainly (no end-around carry chain per word) and added once.
    let mut tail = 0u64;
    while rest.len() >= 4 {
        tail += u64::from(u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]));
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        tail += u64::from(u16::from_ne_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let Some(&last) = rest.first() {
        tail += u64::from(u16::from_ne_bytes([last, 0]));
    }
    acc_add(acc, tail)
}

/// Copies `src` into `dst` and adds the bytes to `acc` as [`sum`] does, in one pass over the bytes (the
/// whole 64-byte blocks are summed as they are copied, AVX2 where the CPU has it). `None`, with nothing
/// written, when the lengths differ.
#[inline]
pub fn copy_and_sum(src: &[u8], dst: &mut [u8], acc: u64) -> Option<u64> {
    if src.len() != dst.len() {
        return None;
    }
    let whole = src.len() / superpacket_accel::BLOCK * superpacket_accel::BLOCK;
    let (src_blocks, src_tail) = src.split_at(whole);
    let (dst_blocks, dst_tail) = dst.split_at_mut(whole);
    let acc = if whole == 0 { acc } else { acc_add(acc, superpacket_accel::copy_sum_blocks(src_blocks, dst_blocks)) };
    dst_tail.copy_from_slice(src_tail);
    Some(sum(dst_tail, acc))
}

/// Adds two accumulators with end-around carry.
#[inline]
fn acc_add(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    s + u64::from(carry)
}

/// Adds a big-endian 16-bit value (a length or protocol number) to the running sum.
#[inline]
pub fn add_u16(acc: u64, value: u16) -> u64 {
    acc_add(acc, u64::from(u16::from_ne_bytes(value.to_be_bytes())))
}

/// Folds a running sum to 16 bits, returned as the big-endian number it represents (not inverted).
#[inline]
pub fn fold(acc: u64) -> u16 {
    let mut s = (acc & 0xffff_ffff) + (acc >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    // `s` now holds 16 bits in native order; read them as the big-endian field they stand for.
    u16::from_be_bytes((s as u16).to_ne_bytes())
}

/// The checksum field value for a region whose running sum is `acc`: the inverted fold.
#[inline]
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// RFC 1071 checksum of `data` (what goes into an IPv4 header checksum field when `data` is the
/// header with the field zeroed).
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data, 0))
}

/// Running sum of the IPv4 pseudo-header for an L4 segment of `l4_len` bytes.
#[inline]
pub fn pseudo_header_v4(src: &[u8; 4], dst: &[u8; 4], proto: u8, l4_len: u16) -> u64 {
    let acc = sum(src, 0);
    let acc = sum(dst, acc);
    add_u16(add_u16(acc, u16::from(proto)), l4_len)
}

/// Running sum of the IPv6 pseudo-header for an L4 segment of `l4_len` bytes.
#[inline]
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], proto: u8, l4_len: u32) -> u64 {
    let acc = sum(src, 0);
    let acc = sum(dst, acc);
    let acc = add_u16(acc, (l4_len >> 16) as u16);
    add_u16(add_u16(acc, l4_len as u16), u16::from(proto))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward RFC 1071 over big-endian 16-bit words, as the reference.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for pair in data.chunks(2) {
            let w =
                if pair.len() == 2 { u16::from_be_bytes([pair[0], pair[1]]) } else { u16::from_be_bytes([pair[0], 0]) };
            s += u32::from(w);
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn matches_reference_for_every_length_up_to_300() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 151 + 7) as u8).collect();
        for len in 0..=data.len() {
            assert_eq!(checksum(&data[..len]), reference(&data[..len]), "len {len}");
        }
    }

    #[test]
    fn copy_and_sum_copies_and_sums_like_sum() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i * 151 + 7) as u8).collect();
        for len in (0..200).chain([1447, 1448, 1500, 3000, 65_535, 70_000]) {
            let mut dst = vec![0u8; len];
            let got = copy_and_sum(&data[..len], &mut dst, 0x1234).unwrap();
            // The same 16-bit checksum (the 64-bit sums may differ by multiples of 0xffff).
            assert_eq!(fold(got), fold(sum(&data[..len], 0x1234)), "len {len}");
            assert_eq!(dst, &data[..len], "len {len}");
        }
        let mut short = [7u8; 3];
        assert_eq!(copy_and_sum(&data[..4], &mut short, 0), None);
        assert_eq!(short, [7; 3], "nothing is written when the lengths differ");
    }

    #[test]
    fn all_ones_and_large_inputs_do_not_overflow() {
        let data = vec![0xffu8; 65_535];
        assert_eq!(checksum(&data), reference(&data));
        let data: Vec<u8> = (0..65_536u32).map(|i| (i ^ (i >> 8)) as u8).collect();
        assert_eq!(checksum(&data), reference(&data));
    }

    #[test]
    fn known_ipv4_header() {
        // A textbook IPv4 header with its checksum field zeroed; the checksum is 0xb861.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0xb861);
    }

    #[test]
    fn pseudo_headers_match_byte_layout() {
        let v4 = pseudo_header_v4(&[198, 18, 0, 1], &[198, 18, 0, 2], 6, 1480);
        let bytes = [198, 18, 0, 1, 198, 18, 0, 2, 0, 6, 0x05, 0xc8];
        assert_eq!(fold(v4), !reference(&bytes));
        let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let dst = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let v6 = pseudo_header_v6(&src, &dst, 17, 70_000);
        let mut b = Vec::new();
        b.extend_from_slice(&src);
        b.extend_from_slice(&dst);
        b.extend_from_slice(&70_000u32.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 17]);
        assert_eq!(fold(v6), !reference(&b));
    }
}
