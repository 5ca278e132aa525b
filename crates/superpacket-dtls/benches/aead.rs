//! ring's AEADs on 1,400-byte records (seal in place with a separate tag, open in place), and the framer
//! around them: one 64-segment superpacket sealed, one datagram opened. The difference between the two
//! is what the framing (headers, replay window, locks) costs over the cipher alone.
//!
//! Time is the benchmark thread's CPU time, not wall time: the machine is shared, and time spent
//! preempted by other processes is not the cipher's.
//!
//! `cargo bench -p superpacket-dtls --bench aead -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305};
use superpacket_core::framer::{Control, Framer, Opened, Slots};
use superpacket_dtls::{Cipher, DtlsConfig, DtlsFramer, KeyMaterial, TAG_LEN};

/// A segment of a 1,500-byte path after the outer headers and the record's overhead.
const RECORD: usize = 1_400;
/// Segments per superpacket (the kernel's GSO limit).
const SEGMENTS: usize = 64;

/// The calling thread's CPU time in nanoseconds, shown as criterion shows wall time.
struct ThreadCpuTime {
    wall: WallTime,
}

fn thread_cpu_nanos() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to fill; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_nanos()
    }
    fn end(&self, started: u64) -> u64 {
        thread_cpu_nanos().saturating_sub(started)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall.formatter()
    }
}

fn ring_key(cipher: Cipher) -> LessSafeKey {
    let alg = match cipher {
        Cipher::Chacha20Poly1305 => &CHACHA20_POLY1305,
        Cipher::Aes128Gcm => &AES_128_GCM,
        Cipher::Aes256Gcm => &AES_256_GCM,
    };
    match UnboundKey::new(alg, &vec![7u8; cipher.key_len()]) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => unreachable!("the key length comes from the cipher"),
    }
}

fn ring_records(c: &mut Criterion<ThreadCpuTime>) {
    let mut group = c.benchmark_group("ring-1400B");
    group.throughput(Throughput::Bytes(RECORD as u64));
    for cipher in Cipher::ALL {
        let key = ring_key(cipher);
        let mut counter = 0u64;
        let mut record = vec![0x45u8; RECORD];
        group.bench_function(format!("seal/{cipher}"), |b| {
            b.iter(|| {
                counter += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&counter.to_be_bytes());
                let tag = key.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from([0u8; 13]),
                    &mut record,
                );
                black_box(tag.ok())
            })
        });
        let mut sealed = vec![0x45u8; RECORD];
        let tag =
            key.seal_in_place_separate_tag(Nonce::assume_unique_for_key([0; 12]), Aad::from([0u8; 13]), &mut sealed);
        sealed.extend_from_slice(tag.as_ref().map(|t| t.as_ref()).unwrap_or(&[]));
        group.bench_function(format!("open/{cipher}"), |b| {
            b.iter_batched_ref(
                || sealed.clone(),
                |r| {
                    let opened = key.open_in_place(Nonce::assume_unique_for_key([0; 12]), Aad::from([0u8; 13]), r);
                    assert!(opened.is_ok());
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn framer_pair(cipher: Cipher) -> (DtlsFramer, DtlsFramer) {
    let a = KeyMaterial { key: vec![1; cipher.key_len()], iv: vec![2; cipher.iv_len()] };
    let b = KeyMaterial { key: vec![3; cipher.key_len()], iv: vec![4; cipher.iv_len()] };
    let make = |tx: &KeyMaterial, rx: &KeyMaterial| match DtlsFramer::new(DtlsConfig::new(
        cipher,
        1,
        tx.clone(),
        rx.clone(),
    )) {
        Ok(f) => f,
        Err(e) => unreachable!("{e}"),
    };
    (make(&a, &b), make(&b, &a))
}

fn framer_records(c: &mut Criterion<ThreadCpuTime>) {
    let mut group = c.benchmark_group("framer-1400B");
    let from: SocketAddr = "198.18.0.1:4000".parse().unwrap_or_else(|_| unreachable!());
    for cipher in Cipher::ALL {
        let (sender, receiver) = framer_pair(cipher);
        let stride = sender.sealed_len(RECORD);
        let mut buf = vec![0x45u8; SEGMENTS * stride];
        group.throughput(Throughput::Bytes((SEGMENTS * RECORD) as u64));
        group.bench_function(format!("seal-64/{cipher}"), |b| {
            b.iter(|| {
                let slots = Slots::new(&mut buf, sender.headroom(), TAG_LEN, RECORD, RECORD, SEGMENTS);
                let mut slots = slots.unwrap_or_else(|| unreachable!());
                black_box(sender.seal(&mut slots, &mut Control::new()).ok())
            })
        });
        // Fresh records for every iteration: the replay window accepts each only once.
        group.throughput(Throughput::Bytes(RECORD as u64));
        let mut pending: Vec<Vec<u8>> = Vec::new();
        let mut scratch = vec![0u8; stride];
        group.bench_function(format!("open/{cipher}"), |b| {
            b.iter_batched_ref(
                || {
                    if pending.is_empty() {
                        let mut train = vec![0x45u8; SEGMENTS * stride];
                        let slots = Slots::new(&mut train, sender.headroom(), TAG_LEN, RECORD, RECORD, SEGMENTS);
                        let mut slots = slots.unwrap_or_else(|| unreachable!());
                        let _ = sender.seal(&mut slots, &mut Control::new());
                        pending = train.chunks(stride).map(<[u8]>::to_vec).collect();
                    }
                    pending.pop().unwrap_or_default()
                },
                |d| {
                    let opened = receiver.open(d, &mut scratch, from, &mut Control::new());
                    assert!(matches!(opened, Opened::Data { .. }));
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime { wall: WallTime });
    targets = ring_records, framer_records
}
criterion_main!(benches);
