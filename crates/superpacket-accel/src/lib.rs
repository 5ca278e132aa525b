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

/// A sum of the whole [`BLOCK`]s at the start of `data` (a trailing part shorter than a block is left
/// out) for the Internet checksum: congruent modulo 0xffff to the plain 64-bit sum of their native-endian
/// 32-bit words, which is all a ones'-complement sum keeps (folded, both give the same 16 bits; the
/// baseline build returns that word sum itself). Exact for `data` under 16 GiB.
#[inline]
pub fn sum_blocks(data: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { sum_blocks_avx2(data) };
    }
    blocks(data)
}

/// The AVX2 loop of [`sum_blocks`]: as [`copy_sum_blocks_avx2`] without the stores.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_blocks_avx2(data: &[u8]) -> u64 {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_set1_epi32, _mm256_setzero_si256};
    let low = _mm256_set1_epi32(0xffff);
    let mut total = 0u64;
    for round in data.chunks(BLOCKS_PER_ROUND * BLOCK) {
        let (mut a0, mut a1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for b in round.chunks_exact(BLOCK) {
            let p = b.as_ptr().cast::<__m256i>();
            // SAFETY: `p` points to a 64-byte chunk of `data` (two unaligned 32-byte vectors; `loadu`
            // needs no alignment).
            let (v0, v1) = unsafe { (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1))) };
            a0 = add_halves(a0, v0, low);
            a1 = add_halves(a1, v1, low);
        }
        total += lanes_total(a0, a1);
    }
    total
}

/// Adds the high and the low 16 bits of each 32-bit word of `v` to the 32-bit lanes of `acc` (`low` holds
/// 0xffff in every lane): congruent to adding the words modulo 0xffff, with shifts, masks and adds only.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn add_halves(
    acc: std::arch::x86_64::__m256i,
    v: std::arch::x86_64::__m256i,
    low: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::{_mm256_add_epi32, _mm256_and_si256, _mm256_srli_epi32};
    _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_srli_epi32::<16>(v), _mm256_and_si256(v, low)))
}

/// The sum of the sixteen 32-bit lanes of `a0` and `a1`, added up in registers. Each lane holds under
/// 2^31 after a round ([`BLOCKS_PER_ROUND`] blocks of at most 2 x 0xffff per lane), so `a0 + a1` does not
/// wrap in 32 bits; the rest is summed in 64-bit lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn lanes_total(a0: std::arch::x86_64::__m256i, a1: std::arch::x86_64::__m256i) -> u64 {
    use std::arch::x86_64::{
        _mm256_add_epi32, _mm256_add_epi64, _mm256_castsi256_si128, _mm256_extracti128_si256, _mm256_setzero_si256,
        _mm256_unpackhi_epi32, _mm256_unpacklo_epi32, _mm_add_epi64, _mm_cvtsi128_si64, _mm_extract_epi64,
    };
    let s = _mm256_add_epi32(a0, a1);
    let zero = _mm256_setzero_si256();
    let wide = _mm256_add_epi64(_mm256_unpacklo_epi32(s, zero), _mm256_unpackhi_epi32(s, zero));
    let x = _mm_add_epi64(_mm256_castsi256_si128(wide), _mm256_extracti128_si256::<1>(wide));
    (_mm_cvtsi128_si64(x) as u64).wrapping_add(_mm_extract_epi64::<1>(x) as u64)
}

/// Copies the whole [`BLOCK`]s at the start of `src` into the start of `dst` and returns a sum of them
/// for the Internet checksum, as [`sum_blocks`] does: one pass over the bytes instead of a copy and then
/// a sum. Copies `min(src.len(), dst.len()) / BLOCK` blocks; the rest of both is
/// left alone.
#[inline]
pub fn copy_sum_blocks(src: &[u8], dst: &mut [u8]) -> u64 {
    let whole = src.len().min(dst.len()) / BLOCK * BLOCK;
    let (src, dst) = (&src[..whole], &mut dst[..whole]);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above; `src` and `dst` are whole blocks of equal length.
        return unsafe { copy_sum_blocks_avx2(src, dst) };
    }
    dst.copy_from_slice(src);
    blocks(dst)
}

/// Blocks [`copy_sum_blocks_avx2`] takes between two widenings of its 32-bit lanes: each lane gains at
/// most 4 x 0xffff per block, so 2^13 blocks stay under 2^32.
#[cfg(target_arch = "x86_64")]
const BLOCKS_PER_ROUND: usize = 1 << 13;

/// The AVX2 loop of [`copy_sum_blocks`]: per 64-byte block two 32-byte loads and the same two stores;
/// each 32-bit word `w` adds `(w >> 16) + (w & 0xffff)` (congruent to `w` modulo 0xffff) to a 32-bit
/// lane: shifts, masks and adds only, no shuffles (widening 32-bit words into 64-bit lanes took four
/// shuffles per block, all on one port), so the loop runs at the speed of the copy.
///
/// # Safety
/// The CPU must have AVX2; `src.len() == dst.len()`, a multiple of [`BLOCK`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn copy_sum_blocks_avx2(src: &[u8], dst: &mut [u8]) -> u64 {
    use std::arch::x86_64::{
        __m256i, _mm256_loadu_si256, _mm256_set1_epi32, _mm256_setzero_si256, _mm256_storeu_si256,
    };
    debug_assert!(src.len() == dst.len() && src.len() % BLOCK == 0);
    let low = _mm256_set1_epi32(0xffff);
    let mut total = 0u64;
    for (src, dst) in src.chunks(BLOCKS_PER_ROUND * BLOCK).zip(dst.chunks_mut(BLOCKS_PER_ROUND * BLOCK)) {
        let (mut a0, mut a1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for (s, d) in src.chunks_exact(BLOCK).zip(dst.chunks_exact_mut(BLOCK)) {
            let (s, d) = (s.as_ptr().cast::<__m256i>(), d.as_mut_ptr().cast::<__m256i>());
            // SAFETY: `s` and `d` point to 64-byte chunks of the slices (two unaligned 32-byte vectors
            // each; `loadu`/`storeu` need no alignment); `dst` is borrowed mutably, so nothing else sees
            // the stores.
            let (v0, v1) = unsafe {
                let v0 = _mm256_loadu_si256(s);
                let v1 = _mm256_loadu_si256(s.add(1));
                _mm256_storeu_si256(d, v0);
                _mm256_storeu_si256(d.add(1), v1);
                (v0, v1)
            };
            a0 = add_halves(a0, v0, low);
            a1 = add_halves(a1, v1, low);
        }
        total += lanes_total(a0, a1);
    }
    total
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
            assert_eq!(blocks(&data), words(&data[..whole]), "len {len}: the baseline is the word sum");
            assert_eq!(fold(sum_blocks(&data)), fold(words(&data[..whole])), "len {len}");
        }
    }

    /// A 64-bit sum folded to 16 bits with end-around carries.
    fn fold(mut x: u64) -> u64 {
        while x > 0xffff {
            x = (x & 0xffff) + (x >> 16);
        }
        x
    }

    #[test]
    fn copying_while_summing_copies_the_whole_blocks_and_folds_like_sum_blocks() {
        for (len, room) in [(0, 0), (63, 63), (64, 64), (200, 200), (1500, 1500), (65_536, 65_536), (300, 130)] {
            let src: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let mut dst = vec![0xa5u8; room];
            let whole = len.min(room) / BLOCK * BLOCK;
            assert_eq!(fold(copy_sum_blocks(&src, &mut dst)), fold(words(&src[..whole])), "len {len}");
            assert_eq!(&dst[..whole], &src[..whole], "len {len}: copied");
            assert!(dst[whole..].iter().all(|&b| b == 0xa5), "len {len}: nothing past the blocks");
        }
        // All ones over more than one round of the 32-bit lanes (1 MiB = 2^14 blocks).
        let ones = vec![0xffu8; 1 << 20];
        let mut out = vec![0u8; 1 << 20];
        assert_eq!(fold(copy_sum_blocks(&ones, &mut out)), fold((1u64 << 18) * 0xffff_ffff));
        assert_eq!(out, ones);
    }

    #[test]
    fn all_ones_do_not_overflow() {
        // More than one round of the 32-bit lanes (1 MiB = 2^14 blocks).
        let data = vec![0xffu8; 1 << 20];
        assert_eq!(blocks(&data), (1u64 << 18) * 0xffff_ffff);
        assert_eq!(fold(sum_blocks(&data)), fold((1u64 << 18) * 0xffff_ffff));
    }
}
