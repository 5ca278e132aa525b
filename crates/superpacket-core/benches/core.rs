//! Throughput of the hot paths against a `copy_from_slice` of the same bytes, the floor any of them
//! has to pay (split and coalesce copy every payload byte once; the checksum reads every byte once).
//!
//! `cargo bench -p superpacket-core --bench core -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use superpacket_core::checksum;
use superpacket_core::coalesce::{CoalesceOptions, Coalescer, Frames};
use superpacket_core::split::{self, Layout};
use superpacket_core::vnet::{self, VirtioNetHdr};
use superpacket_core::VNET_HDR_LEN;

/// TCP payload per segment with timestamps on a 1,500-byte MTU.
const MSS: usize = 1_448;
/// IPv4 (20) + TCP with the timestamp option (32).
const HDR_LEN: usize = 52;
/// Room a framer might want around every segment (a header in front, a tag behind).
const LAYOUT: Layout = Layout { headroom: 16, tailroom: 16 };

/// A TCP/IPv4 packet with `payload`, sequence number `seq` and IPv4 ID `id`, with correct checksums.
fn tcp4(seq: u32, id: u16, payload: &[u8]) -> Vec<u8> {
    let total = HDR_LEN + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
    p.extend_from_slice(&40_000u16.to_be_bytes());
    p.extend_from_slice(&443u16.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&1u32.to_be_bytes());
    p.extend_from_slice(&[0x80, 0x10, 0x01, 0xf5, 0, 0, 0, 0]); // doff 8, ACK, window, checksum, urgent
    p.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]); // NOP NOP timestamps
    p.extend_from_slice(payload);
    let ip_csum = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&ip_csum.to_be_bytes());
    let tcp_csum = checksum::finish(checksum::sum(&p[20..], pseudo(total - 20)));
    p[36..38].copy_from_slice(&tcp_csum.to_be_bytes());
    p
}

fn pseudo(l4_len: usize) -> u64 {
    checksum::pseudo_header_v4(&[198, 18, 0, 1], &[198, 18, 0, 2], 6, l4_len as u16)
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A TSO frame as the kernel hands it over: the L4 checksum field holds the pseudo-header sum.
fn tso_frame(segments: usize) -> Vec<u8> {
    let mut pkt = tcp4(1_000, 1, &payload(segments * MSS));
    let l4_len = pkt.len() - 20;
    pkt[36..38].copy_from_slice(&checksum::fold(pseudo(l4_len)).to_be_bytes());
    let hdr = VirtioNetHdr {
        flags: vnet::FLAG_NEEDS_CSUM,
        gso_type: vnet::GSO_TCPV4,
        hdr_len: HDR_LEN as u16,
        gso_size: MSS as u16,
        csum_start: 20,
        csum_offset: 16,
    };
    let mut frame = vec![0u8; VNET_HDR_LEN];
    hdr.encode(&mut frame).expect("10 bytes");
    frame.extend_from_slice(&pkt);
    frame
}

/// `count` consecutive MSS-sized segments of one flow.
fn segments(count: usize) -> Vec<Vec<u8>> {
    let data = payload(count * MSS);
    data.chunks(MSS).enumerate().map(|(i, chunk)| tcp4(1_000 + (i * MSS) as u32, 1 + i as u16, chunk)).collect()
}

/// The baseline of every group: copying `len` bytes between two reused buffers. The destination starts
/// 256 bytes into its allocation: two same-sized allocations made back to back sit a multiple of 4 KiB
/// plus 16 bytes apart, and glibc's `rep movsb` copy then runs at a tenth of its speed (measured here:
/// 1.7 GiB/s for 64 KiB), which would flatter everything compared with it.
fn bench_memcpy(group: &mut BenchmarkGroup<'_, WallTime>, len: usize) {
    const DST_OFFSET: usize = 256;
    let src = payload(len);
    let mut dst = vec![0u8; DST_OFFSET + len];
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            dst[DST_OFFSET..].copy_from_slice(black_box(&src));
            black_box(&mut dst);
        })
    });
}

fn checksum_benches(c: &mut Criterion) {
    for (name, len) in [("checksum_1500B", 1_500), ("checksum_64KiB", 65_536)] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(len as u64));
        let data = payload(len);
        group.bench_function("checksum", |b| b.iter(|| checksum::checksum(black_box(&data))));
        bench_memcpy(&mut group, len);
        group.finish();
    }
}

fn split_benches(c: &mut Criterion) {
    let frame = tso_frame(45);
    let plan = split::plan(&frame).expect("a valid TSO frame");
    assert_eq!(plan.count, 45);
    let mut out = vec![0u8; plan.buffer_len(LAYOUT)];
    let ip_len = frame.len() - VNET_HDR_LEN;
    let mut group = c.benchmark_group("split_tcp4_45x1448");
    group.throughput(Throughput::Bytes(ip_len as u64));
    group.bench_function("split_into", |b| {
        b.iter(|| split::split_into(black_box(&frame), LAYOUT, black_box(&mut out)).expect("splits"))
    });
    bench_memcpy(&mut group, ip_len);
    group.finish();
}

fn coalesce_benches(c: &mut Criterion) {
    let packets = segments(44);
    let bytes: usize = packets.iter().map(Vec::len).sum();
    let mut coalescer = Coalescer::new(CoalesceOptions::default());
    let mut frames = Frames::new();
    coalescer.coalesce(&packets, &mut frames);
    assert_eq!(frames.len(), 1, "44 in-order segments of one flow make one frame");

    let mut group = c.benchmark_group("coalesce_tcp4_44x1448");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("coalesce", |b| {
        b.iter(|| {
            frames.clear();
            coalescer.coalesce(black_box(&packets), &mut frames);
            black_box(frames.total_len())
        })
    });
    bench_memcpy(&mut group, bytes);
    group.finish();
}

criterion_group!(benches, checksum_benches, split_benches, coalesce_benches);
criterion_main!(benches);
