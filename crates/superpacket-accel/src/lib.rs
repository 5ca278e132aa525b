//! The Internet checksum's inner loop, compiled twice on x86-64: for the baseline (SSE2) and for AVX2,
//! picked at run time by what the CPU has. Prebuilt binaries must run on any x86-64, and the baseline
//! build of this loop runs at about a third of memcpy's speed on 1,500-byte packets, the AVX2 build at
//! about two thirds (bench/NOTES.md).
//!
//! This is the only crate of superpacket's packet path with `unsafe`: one call into the AVX2 build after
//! the CPU check, which is what makes that call sound. `superpacket-core` itself forbids `unsafe`.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

/// Bytes per block: [`sum_blocks`] sums `data.len() / BLOCK` whole blocks.
pub const BLOCK: usize = 64;

/// Sum of the native-endian 32-bit words of the whole [`BLOCK`]s at the start of `data` (a trailing part
/// shorter than a block is left out), as a plain 64-bit sum without end-around carry. Exact for `data`
/// under 16 GiB.
#[inline]
pub fn sum_blocks(data: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above; the function is otherwise plain safe Rust.
        return unsafe { sum_blocks_avx2(data) };
    }
    blocks(data)
}

/// [`blocks`] compiled with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_blocks_avx2(data: &[u8]) -> u64 {
    blocks(data)
}

/// Sixteen independent 64-bit lanes of 32-bit words per block: enough parallel adds for the compiler to
/// keep four AVX2 accumulators busy (32-byte blocks with eight lanes ran at ~70 % of this). A lane takes
/// 2^32 words before it could overflow.
#[inline(always)]
fn blocks(data: &[u8]) -> u64 {
    let mut lanes = [0u64; 16];
    for b in data.chunks_exact(BLOCK) {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let w = &b[4 * i..4 * i + 4];
            *lane += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
        }
    }
    lanes.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(data: &[u8]) -> u64 {
        data.chunks_exact(4).map(|w| u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))).sum()
    }

    #[test]
    fn matches_a_plain_word_sum_on_whole_blocks_and_ignores_the_tail() {
        for len in [0, 1, 31, 32, 33, 63, 64, 65, 127, 128, 1500, 65_535, 65_536] {
            let data: Vec<u8> = (0..len).map(|i| (i * 131 + 7) as u8).collect();
            let whole = len / BLOCK * BLOCK;
            assert_eq!(sum_blocks(&data), words(&data[..whole]), "len {len}");
            #[cfg(target_arch = "x86_64")]
            assert_eq!(blocks(&data), sum_blocks(&data), "len {len}: baseline and dispatched builds agree");
        }
    }

    #[test]
    fn all_ones_do_not_overflow() {
        let data = vec![0xffu8; 1 << 20];
        assert_eq!(sum_blocks(&data), (1u64 << 18) * 0xffff_ffff);
    }
}
