//! What the WireGuard framer costs per byte on one core: sealing and opening superpackets of 44 segments
//! of 1,400 bytes between two framers, beside the bare cipher (ring's ChaCha20-Poly1305, which boringtun
//! uses) on the same packets and one copy of the same bytes.
//! `cargo bench -p superpacket-wireguard --bench framer`

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

use superpacket_core::framer::{Control, Framer, Opened, Sealed, Slots};
use superpacket_wireguard::framer::{WG_HEADROOM, WG_TAILROOM};
use support::{handshake, ip_packet, pair};

const SEGMENTS: usize = 44;
const PACKET_LEN: usize = 1400;
const ROUNDS: usize = 4000;

fn gbit_per_s(bytes: usize, time: Duration) -> f64 {
    bytes as f64 * 8.0 / time.as_secs_f64() / 1e9
}

fn main() {
    let (a, b) = pair(None);
    handshake(&a, &b);
    let packet = ip_packet("198.18.77.1", "198.18.77.2", PACKET_LEN, 7);
    let stride = WG_HEADROOM + PACKET_LEN + WG_TAILROOM;
    let mut buf = vec![0u8; stride * SEGMENTS];
    let mut scratch = vec![0u8; stride];
    let mut copy_target = vec![0u8; buf.len()];
    let cipher = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[9; 32]).expect("a 32-byte key"));
    let mut nonce_counter = 0u64;
    let (mut seal_time, mut open_time, mut copy_time, mut cipher_time) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut control = Control::new();
    for _ in 0..ROUNDS {
        for slot in buf.chunks_mut(stride) {
            slot[WG_HEADROOM..][..PACKET_LEN].copy_from_slice(&packet);
        }
        let start = Instant::now();
        copy_target.copy_from_slice(black_box(&buf));
        black_box(&mut copy_target);
        copy_time += start.elapsed();

        let start = Instant::now();
        for slot in copy_target.chunks_mut(stride) {
            nonce_counter += 1;
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&nonce_counter.to_le_bytes());
            let tag = cipher
                .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut slot[..PACKET_LEN])
                .expect("seals");
            let _ = black_box(tag);
        }
        cipher_time += start.elapsed();

        let start = Instant::now();
        let mut slots =
            Slots::new(&mut buf, WG_HEADROOM, WG_TAILROOM, PACKET_LEN, PACKET_LEN, SEGMENTS).expect("a valid layout");
        let sealed = a.framer.seal(&mut slots, &mut control).expect("seals");
        seal_time += start.elapsed();
        assert_eq!(sealed, Sealed::To(b.at));

        let start = Instant::now();
        for datagram in buf.chunks_mut(stride) {
            let opened = b.framer.open(datagram, &mut scratch, a.at, &mut control);
            assert!(matches!(opened, Opened::Data { .. }));
        }
        open_time += start.elapsed();
    }
    assert!(control.is_empty());
    let bytes = ROUNDS * SEGMENTS * PACKET_LEN;
    println!("{ROUNDS} superpackets of {SEGMENTS} x {PACKET_LEN} B ({} MB of packets), one core:", bytes / 1_000_000);
    println!("  seal                     {:6.2} Gbit/s", gbit_per_s(bytes, seal_time));
    println!("  open                     {:6.2} Gbit/s", gbit_per_s(bytes, open_time));
    println!("  ChaCha20-Poly1305 alone  {:6.2} Gbit/s", gbit_per_s(bytes, cipher_time));
    println!("  one copy                 {:6.2} Gbit/s", gbit_per_s(bytes, copy_time));
}
