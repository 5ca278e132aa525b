//! Replays the fuzz corpus kept in git (`fuzz/seeds/`, `fuzz/regressions/`) through the same checks as
//! the fuzz targets, so `cargo test` exercises every input the fuzzers found interesting.
//!
//! `cargo test -p superpacket-core --test fuzz_corpus -- --ignored write_hand_made_seeds` rewrites the
//! hand-made seeds (`fuzz/seeds/<target>/hand-*`).

#[path = "../fuzz/checks.rs"]
mod checks;

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

use superpacket_core::vnet::{self, VirtioNetHdr};
use superpacket_core::VNET_HDR_LEN;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Every file under `fuzz/<kind>/<target>/`, sorted; none if the directory does not exist.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let Ok(dir) = fs::read_dir(fuzz_dir().join(kind).join(target)) else { return Vec::new() };
    let mut files: Vec<PathBuf> = dir.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Runs `check` on every seed and regression of `target`; returns each file name with its result,
/// failing with the names of every file that panicked.
fn replay<T>(target: &str, check: fn(&[u8]) -> T) -> Vec<(String, T)> {
    let files: Vec<PathBuf> = ["seeds", "regressions"].iter().flat_map(|kind| inputs(kind, target)).collect();
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for file in &files {
        let data = fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match panic::catch_unwind(|| check(&data)) {
            Ok(r) => results.push((name, r)),
            Err(_) => failed.push(file.display().to_string()),
        }
    }
    assert!(failed.is_empty(), "{} of {} {target} inputs failed:\n{}", failed.len(), files.len(), failed.join("\n"));
    assert!(results.len() >= 20, "only {} {target} inputs found under {}", results.len(), fuzz_dir().display());
    results
}

#[test]
fn split_corpus_passes_the_split_checks() {
    let results = replay("split", checks::check_split);
    // Hand-made seeds say in their name whether they are meant to be rejected.
    for (name, split) in results.iter().filter(|(name, _)| name.starts_with("hand-")) {
        assert_eq!(*split, !name.starts_with("hand-bad-"), "{name}: split {split}");
    }
    let ok = results.iter().filter(|(_, ok)| *ok).count();
    assert!(ok >= 10 && ok < results.len(), "the corpus should hold frames that split and frames that are rejected");
}

#[test]
fn coalesce_corpus_passes_the_coalesce_checks() {
    let results = replay("coalesce", checks::check_coalesce);
    let merging = results.iter().filter(|(_, merged)| *merged > 0).count();
    assert!(merging >= 10, "only {merging} of {} coalesce inputs merge anything", results.len());
}

#[test]
#[ignore = "rewrites fuzz/seeds/*/hand-*; run with --ignored to regenerate"]
fn write_hand_made_seeds() {
    for (target, seeds) in [("split", split_seeds()), ("coalesce", coalesce_seeds())] {
        let dir = fuzz_dir().join("seeds").join(target);
        fs::create_dir_all(&dir).unwrap();
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().starts_with("hand-") {
                fs::remove_file(path).unwrap();
            }
        }
        for (name, bytes) in seeds {
            fs::write(dir.join(format!("hand-{name}")), bytes).unwrap();
        }
    }
}

// ---- A tiny packet builder for the seeds. Checksums come from checks::fix_checksums. ----

const V4_SRC: [u8; 4] = [198, 18, 0, 1];
const V4_DST: [u8; 4] = [198, 18, 0, 2];
const V6_SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const CWR: u8 = 0x80;

#[derive(Clone)]
struct Tcp {
    sport: u16,
    seq: u32,
    flags: u8,
    options: Vec<u8>,
}

impl Default for Tcp {
    fn default() -> Self {
        Tcp { sport: 40_000, seq: 1_000, flags: ACK, options: Vec::new() }
    }
}

fn tcp(t: &Tcp, payload: &[u8]) -> Vec<u8> {
    let doff = 5 + t.options.len() / 4;
    let mut h = Vec::new();
    h.extend_from_slice(&t.sport.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h.extend_from_slice(&t.seq.to_be_bytes());
    h.extend_from_slice(&7_777u32.to_be_bytes());
    h.push((doff as u8) << 4);
    h.push(t.flags);
    h.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    h.extend_from_slice(&t.options);
    h.extend_from_slice(payload);
    h
}

fn udp(sport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&4_433u16.to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

fn ipv4(proto: u8, id: u16, l4: &[u8]) -> Vec<u8> {
    ipv4_with(proto, id, 0x4000, &[], l4)
}

fn ipv4_with(proto: u8, id: u16, frag: u16, options: &[u8], l4: &[u8]) -> Vec<u8> {
    let ihl = 5 + options.len() / 4;
    let mut p = vec![0x40 | ihl as u8, 0];
    p.extend_from_slice(&((ihl * 4 + l4.len()) as u16).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&V4_SRC);
    p.extend_from_slice(&V4_DST);
    p.extend_from_slice(options);
    p.extend_from_slice(l4);
    checks::fix_checksums(&mut p);
    p
}

/// `exts`: (header type, length in bytes) of each extension header, in order.
fn ipv6_with(proto: u8, exts: &[(u8, usize)], l4: &[u8]) -> Vec<u8> {
    let ext_len: usize = exts.iter().map(|e| e.1).sum();
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&((ext_len + l4.len()) as u16).to_be_bytes());
    p.push(exts.first().map_or(proto, |e| e.0));
    p.push(64);
    p.extend_from_slice(&V6_SRC);
    p.extend_from_slice(&V6_DST);
    for (i, &(_, len)) in exts.iter().enumerate() {
        let mut ext = vec![0u8; len];
        ext[0] = exts.get(i + 1).map_or(proto, |e| e.0);
        ext[1] = (len / 8 - 1) as u8;
        p.extend_from_slice(&ext);
    }
    p.extend_from_slice(l4);
    checks::fix_checksums(&mut p);
    p
}

fn ipv6(proto: u8, l4: &[u8]) -> Vec<u8> {
    ipv6_with(proto, &[], l4)
}

fn payload(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt)).collect()
}

/// A frame as the kernel hands it over: for GSO and NEEDS_CSUM the L4 field holds the pseudo-header sum.
fn frame(gso_type: u8, gso_size: u16, needs_csum: bool, pkt: &[u8]) -> Vec<u8> {
    let mut pkt = pkt.to_vec();
    let ip = superpacket_core::packet::parse_ip(&pkt).ok();
    let (csum_start, csum_offset) = match ip {
        Some(ip) if ip.proto == 6 || ip.proto == 17 => {
            let field = ip.ip_len + superpacket_core::packet::l4_checksum_offset(ip.proto);
            if needs_csum && field + 2 <= pkt.len() {
                let pseudo = superpacket_core::packet::pseudo_header_sum(&pkt, &ip, pkt.len() - ip.ip_len);
                let folded = superpacket_core::checksum::fold(pseudo);
                pkt[field..field + 2].copy_from_slice(&folded.to_be_bytes());
            }
            (ip.ip_len as u16, superpacket_core::packet::l4_checksum_offset(ip.proto) as u16)
        }
        _ => (0, 0),
    };
    let hdr = VirtioNetHdr {
        flags: if needs_csum { vnet::FLAG_NEEDS_CSUM } else { 0 },
        gso_type,
        hdr_len: csum_start + 20,
        gso_size,
        csum_start: if needs_csum { csum_start } else { 0 },
        csum_offset: if needs_csum { csum_offset } else { 0 },
    };
    let mut f = vec![0u8; VNET_HDR_LEN];
    hdr.encode(&mut f).unwrap();
    f.extend_from_slice(&pkt);
    f
}

fn with_byte(mut bytes: Vec<u8>, at: usize, value: u8) -> Vec<u8> {
    bytes[at] = value;
    bytes
}

fn split_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use vnet::{GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};
    let t = Tcp::default();
    let tcp4 = |t: &Tcp, n: usize| ipv4(6, 100, &tcp(t, &payload(n, 1)));
    let ts = Tcp { options: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], ..t.clone() };
    let fin_psh_cwr = Tcp { flags: ACK | PSH | FIN | CWR, ..t.clone() };
    let seq_wraps = Tcp { seq: u32::MAX - 150, ..t.clone() };
    let tcp6 = ipv6(6, &tcp(&t, &payload(250, 2)));
    let tcp6_ext = ipv6_with(6, &[(0, 8), (60, 16)], &tcp(&t, &payload(250, 3)));
    let udp4 = ipv4(17, 7, &udp(5_000, &payload(300, 4)));
    let udp6 = ipv6(17, &udp(5_000, &payload(300, 5)));
    let id_wraps = ipv4(6, u16::MAX - 1, &tcp(&t, &payload(300, 6)));
    let v4_options = ipv4_with(6, 1, 0x4000, &[1, 1, 1, 1], &tcp(&t, &payload(200, 7)));
    let v4_fragment = ipv4_with(17, 1, 0x2000, &[], &udp(5_000, &payload(200, 8)));
    let v6_fragment = ipv6_with(17, &[(44, 8)], &udp(5_000, &payload(200, 9)));
    let icmp = ipv4(1, 1, &payload(64, 10));
    let udp_bad_len = {
        let mut p = udp4.clone();
        p[20 + 5] ^= 1;
        p
    };
    vec![
        ("tcp4-gso-4-segments", frame(GSO_TCPV4, 100, true, &tcp4(&t, 350))),
        ("tcp4-gso-exact-multiple", frame(GSO_TCPV4, 100, true, &tcp4(&t, 300))),
        ("tcp4-gso-one-segment", frame(GSO_TCPV4, 1448, true, &tcp4(&t, 300))),
        ("tcp4-gso-no-payload", frame(GSO_TCPV4, 100, true, &tcp4(&t, 0))),
        ("tcp4-gso-size-1", frame(GSO_TCPV4, 1, true, &tcp4(&t, 24))),
        ("tcp4-gso-timestamps", frame(GSO_TCPV4, 120, true, &tcp4(&ts, 400))),
        ("tcp4-gso-fin-psh-cwr-ecn", frame(GSO_TCPV4 | GSO_ECN, 100, true, &tcp4(&fin_psh_cwr, 350))),
        ("tcp4-gso-seq-wraps", frame(GSO_TCPV4, 100, true, &tcp4(&seq_wraps, 350))),
        ("tcp4-gso-id-wraps", frame(GSO_TCPV4, 100, true, &id_wraps)),
        ("tcp4-gso-without-needs-csum", frame(GSO_TCPV4, 100, false, &tcp4(&t, 350))),
        ("tcp6-gso", frame(GSO_TCPV6, 100, true, &tcp6)),
        ("tcp6-gso-extension-headers", frame(GSO_TCPV6, 64, true, &tcp6_ext)),
        ("udp4-uso", frame(GSO_UDP_L4, 120, true, &udp4)),
        ("udp6-uso", frame(GSO_UDP_L4, 64, true, &udp6)),
        ("udp6-uso-one-byte-last", frame(GSO_UDP_L4, 299, true, &udp6)),
        ("none-plain-tcp4", frame(GSO_NONE, 0, false, &tcp4(&t, 100))),
        ("none-needs-csum-tcp4", frame(GSO_NONE, 0, true, &tcp4(&t, 101))),
        ("none-needs-csum-udp6", frame(GSO_NONE, 0, true, &udp6)),
        ("none-plain-icmp", frame(GSO_NONE, 0, false, &icmp)),
        ("none-data-valid", with_byte(frame(GSO_NONE, 0, false, &udp4), 0, vnet::FLAG_DATA_VALID)),
        // Malformed: each should be rejected with an error.
        ("bad-empty", Vec::new()),
        ("bad-short-vnet", vec![0, 1, 0, 0, 0]),
        ("bad-vnet-only", vec![0; VNET_HDR_LEN]),
        ("bad-gso-type-ufo", with_byte(frame(GSO_TCPV4, 100, true, &tcp4(&t, 350)), 1, 3)),
        ("bad-vnet-flag", with_byte(frame(GSO_TCPV4, 100, true, &tcp4(&t, 350)), 0, 5)),
        ("bad-gso-size-zero", frame(GSO_TCPV4, 0, true, &tcp4(&t, 350))),
        ("bad-tcpv4-on-ipv6", frame(GSO_TCPV4, 100, true, &tcp6)),
        ("bad-tcpv6-on-udp", frame(GSO_TCPV6, 100, true, &udp6)),
        ("bad-uso-on-tcp", frame(GSO_UDP_L4, 100, true, &tcp4(&t, 350))),
        ("bad-gso-icmp", frame(GSO_TCPV4, 100, true, &icmp)),
        ("bad-udp-length", frame(GSO_UDP_L4, 100, true, &udp_bad_len)),
        ("bad-ipv4-fragment", frame(GSO_UDP_L4, 100, true, &v4_fragment)),
        ("bad-ipv6-fragment", frame(GSO_UDP_L4, 100, true, &v6_fragment)),
        ("tcp4-gso-ipv4-options", frame(GSO_TCPV4, 100, true, &v4_options)),
        ("bad-ihl-4", with_byte(frame(GSO_TCPV4, 100, true, &tcp4(&t, 350)), VNET_HDR_LEN, 0x44)),
        ("bad-tcp-doff-4", with_byte(frame(GSO_TCPV4, 100, true, &tcp4(&t, 350)), VNET_HDR_LEN + 32, 0x40)),
        ("bad-not-ip", with_byte(frame(GSO_NONE, 0, false, &icmp), VNET_HDR_LEN, 0x55)),
        ("bad-ipv4-length-long", with_byte(frame(GSO_TCPV4, 100, true, &tcp4(&t, 350)), VNET_HDR_LEN + 2, 0x02)),
        ("bad-ipv4-trailing-bytes", {
            let mut f = frame(GSO_TCPV4, 100, true, &tcp4(&t, 350));
            f.extend_from_slice(&[0; 3]);
            f
        }),
        ("bad-ipv6-jumbo", with_byte(with_byte(frame(GSO_UDP_L4, 64, true, &udp6), 14, 0), 15, 0)),
        ("bad-csum-offset", with_byte(frame(GSO_TCPV4, 100, true, &tcp4(&t, 350)), 8, 6)),
        ("bad-csum-start-past-end", {
            let mut f = frame(GSO_NONE, 0, true, &tcp4(&t, 10));
            f[6..8].copy_from_slice(&400u16.to_ne_bytes());
            f
        }),
        ("bad-truncated-tcp-header", frame(GSO_TCPV4, 100, true, &ipv4(6, 1, &[0; 12]))),
    ]
}

fn coalesce_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use checks::{encode_batch, FLAG_FIX_CHECKSUMS, FLAG_FIX_LENGTHS, FLAG_TCP, FLAG_UDP};
    const BOTH: u8 = FLAG_TCP | FLAG_UDP;
    // A TCP/IPv4 stream: `sizes` payloads, PSH on the segments listed in `psh`.
    let stream4 = |sport: u16, sizes: &[usize], psh: &[usize]| -> Vec<Vec<u8>> {
        let mut seq = 1_000u32;
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let flags = if psh.contains(&i) { ACK | PSH } else { ACK };
                let p =
                    ipv4(6, 100 + i as u16, &tcp(&Tcp { sport, seq, flags, ..Tcp::default() }, &payload(n, i as u8)));
                seq = seq.wrapping_add(n as u32);
                p
            })
            .collect()
    };
    let stream6 = |sizes: &[usize]| -> Vec<Vec<u8>> {
        let mut seq = 5u32;
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let p = ipv6(6, &tcp(&Tcp { seq, ..Tcp::default() }, &payload(n, i as u8)));
                seq = seq.wrapping_add(n as u32);
                p
            })
            .collect()
    };
    let udp4s = |n: usize, size: usize| -> Vec<Vec<u8>> {
        (0..n).map(|i| ipv4(17, 9 + i as u16, &udp(5_000, &payload(size, i as u8)))).collect()
    };
    let udp6s = |n: usize, size: usize| -> Vec<Vec<u8>> {
        (0..n).map(|i| ipv6(17, &udp(5_000, &payload(size, i as u8)))).collect()
    };
    let interleave = |a: Vec<Vec<u8>>, b: Vec<Vec<u8>>| -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let (mut a, mut b) = (a.into_iter(), b.into_iter());
        loop {
            match (a.next(), b.next()) {
                (None, None) => return out,
                (x, y) => out.extend(x.into_iter().chain(y)),
            }
        }
    };
    let garbage = vec![vec![], vec![0x45], vec![0x55; 40], vec![0x45; 19], ipv4(1, 1, &payload(32, 0))];
    let tcp_run = stream4(40_000, &[100, 100, 100, 100, 60], &[4]);
    let mut bad_sum = tcp_run.clone();
    bad_sum[2][60] ^= 0xff;
    let mut id_jump = tcp_run.clone();
    id_jump[2][5] = id_jump[2][5].wrapping_add(7);
    checks::fix_checksums(&mut id_jump[2]);
    let mut tos = tcp_run.clone();
    tos[3][1] = 0x10;
    checks::fix_checksums(&mut tos[3]);
    let mut seq_gap = stream4(40_000, &[100, 100, 100, 100], &[]);
    seq_gap.extend(stream4(40_000, &[100, 100], &[]).into_iter().map(|mut p| {
        p[24..28].copy_from_slice(&5_000u32.to_be_bytes());
        checks::fix_checksums(&mut p);
        p
    }));
    let mut syn_mid = stream4(40_000, &[100, 100, 100], &[]);
    syn_mid.insert(1, ipv4(6, 1, &tcp(&Tcp { flags: SYN, ..Tcp::default() }, &[])));
    let mut pure_ack = stream4(40_000, &[100, 100], &[]);
    pure_ack.push(ipv4(6, 102, &tcp(&Tcp { seq: 1_200, ..Tcp::default() }, &[])));
    pure_ack.extend(stream4(40_000, &[100, 100], &[]));
    let with_options = (0..4)
        .map(|i| {
            let t = Tcp { seq: 1_000 + 80 * i, options: vec![1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3], ..Tcp::default() };
            ipv4(6, 50 + i as u16, &tcp(&t, &payload(80, i as u8)))
        })
        .collect::<Vec<_>>();
    let mut udp_zero = udp4s(4, 50);
    for p in &mut udp_zero {
        p[26..28].fill(0);
    }
    let mut longer_after_shorter = stream4(40_000, &[100, 60], &[]);
    longer_after_shorter.extend(stream4(40_000, &[100], &[]).into_iter().map(|mut p| {
        p[24..28].copy_from_slice(&1_160u32.to_be_bytes());
        p[4..6].copy_from_slice(&102u16.to_be_bytes());
        checks::fix_checksums(&mut p);
        p
    }));
    let fragments = vec![
        ipv4_with(17, 1, 0x2000, &[], &udp(5_000, &payload(64, 1))),
        ipv4_with(17, 1, 0x0008, &[], &payload(30, 2)),
        ipv6_with(17, &[(44, 8)], &udp(5_000, &payload(64, 3))),
    ];
    let v4_opts =
        (0..3).map(|i| ipv4_with(17, 1 + i, 0, &[1, 1, 1, 1], &udp(5_000, &payload(50, 1)))).collect::<Vec<_>>();
    let v6_ext = (0..3).map(|i| ipv6_with(17, &[(60, 8)], &udp(5_000, &payload(50, i)))).collect::<Vec<_>>();
    let dup = vec![udp4s(1, 40)[0].clone(); 4];
    let seventy = (0..70u32)
        .map(|i| ipv4(6, i as u16, &tcp(&Tcp { seq: 10 * i, ..Tcp::default() }, &payload(10, i as u8))))
        .collect::<Vec<_>>();
    let mut broken_sums = stream4(40_000, &[80, 80, 80], &[]);
    for p in &mut broken_sums {
        p[36] ^= 0x55;
        p[10] ^= 0x55;
    }
    let mut broken_lengths = udp4s(3, 40);
    for p in &mut broken_lengths {
        p[2] = 0x7f;
        p[24] = 0;
    }
    let mixed: Vec<Vec<u8>> = [
        interleave(tcp_run.clone(), udp4s(3, 70)),
        garbage.clone(),
        stream6(&[90, 90, 90]),
        fragments.clone(),
        udp6s(3, 33),
    ]
    .concat();

    vec![
        ("tcp4-run", encode_batch(BOTH, &tcp_run)),
        ("tcp4-run-tcp-off", encode_batch(FLAG_UDP, &tcp_run)),
        (
            "tcp4-two-flows-interleaved",
            encode_batch(BOTH, &interleave(tcp_run.clone(), stream4(40_001, &[90; 4], &[1]))),
        ),
        ("tcp4-psh-mid-stream", encode_batch(BOTH, &stream4(40_000, &[100; 6], &[2]))),
        ("tcp4-bad-checksum-mid", encode_batch(BOTH, &bad_sum)),
        ("tcp4-id-jump", encode_batch(BOTH, &id_jump)),
        ("tcp4-tos-change", encode_batch(BOTH, &tos)),
        ("tcp4-seq-gap", encode_batch(BOTH, &seq_gap)),
        ("tcp4-syn-mid", encode_batch(BOTH, &syn_mid)),
        ("tcp4-pure-ack-mid", encode_batch(BOTH, &pure_ack)),
        ("tcp4-timestamps", encode_batch(BOTH, &with_options)),
        ("tcp4-longer-after-shorter", encode_batch(BOTH, &longer_after_shorter)),
        ("tcp4-70-segments", encode_batch(BOTH, &seventy)),
        ("tcp6-run", encode_batch(BOTH, &stream6(&[100, 100, 100, 20]))),
        ("udp4-run", encode_batch(BOTH, &udp4s(5, 120))),
        ("udp4-run-udp-off", encode_batch(FLAG_TCP, &udp4s(5, 120))),
        ("udp4-shorter-last", encode_batch(BOTH, &[udp4s(3, 120), udp4s(1, 50)].concat())),
        ("udp4-zero-checksum", encode_batch(BOTH, &udp_zero)),
        ("udp6-run", encode_batch(BOTH, &udp6s(4, 64))),
        ("udp4-duplicates", encode_batch(BOTH, &dup)),
        ("ipv4-options", encode_batch(BOTH, &v4_opts)),
        ("ipv6-extension-headers", encode_batch(BOTH, &v6_ext)),
        ("fragments", encode_batch(BOTH, &fragments)),
        ("garbage", encode_batch(BOTH, &garbage)),
        ("fix-checksums", encode_batch(BOTH | FLAG_FIX_CHECKSUMS, &broken_sums)),
        ("fix-lengths-and-checksums", encode_batch(BOTH | FLAG_FIX_LENGTHS | FLAG_FIX_CHECKSUMS, &broken_lengths)),
        ("mixed", encode_batch(BOTH, &mixed)),
        ("mixed-tcp-only", encode_batch(FLAG_TCP, &mixed)),
        ("empty-batch", vec![BOTH]),
        ("empty-input", Vec::new()),
        ("length-past-end", {
            let mut b = encode_batch(BOTH, &udp4s(2, 60));
            b.extend_from_slice(&[0xff, 0xff, 0x45, 0]);
            b
        }),
    ]
}
