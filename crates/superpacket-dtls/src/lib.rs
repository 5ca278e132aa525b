//! DTLS 1.2 records for superpacket, sans I/O: [`DtlsFramer`], a [`superpacket_core::framer::Framer`]
//! that seals every segment as one AEAD record under keys the application brings from its own
//! handshake (lightway, nebula, OpenVPN's data channel and the like), with per-epoch replay windows and
//! rekeying.
//!
//! # Wire format
//! Each datagram is `prefix ‖ record`, the prefix being optional bytes from the config (a session id).
//! The record is a DTLS 1.2 record (RFC 6347 §4.1):
//!
//! ```text
//! type = 23 (1) ‖ version = 0xFEFD (2) ‖ epoch (2) ‖ sequence_number (6) ‖ length (2) ‖ fragment
//! ```
//! with the additional data of RFC 5246 §6.2.3.3 / RFC 6347 §4.1.2.1:
//! `epoch ‖ sequence_number (8) ‖ type (1) ‖ version (2) ‖ plaintext length (2)`, all big-endian.
//! - `chacha20-poly1305` (RFC 7905): key 32 bytes, iv 12 bytes; nonce = iv XOR (4 zero bytes ‖ epoch ‖
//!   sequence_number); fragment = ciphertext ‖ tag (16).
//! - `aes-128-gcm` / `aes-256-gcm` (RFC 5288): key 16 / 32 bytes, iv = 4-byte salt; fragment = explicit
//!   nonce (8, always equal to epoch ‖ sequence_number) ‖ ciphertext ‖ tag (16); nonce = salt ‖ explicit
//!   nonce.
//!
//! The plaintext is one IP packet. One record per datagram: bytes after the record are refused.
//!
//! # Epochs and the grace period
//! [`DtlsFramer::rekey`] moves both directions to a greater epoch at once; sealing continues in the new
//! epoch from sequence number 0. Records of the previous epoch still open for a *time-based* grace period
//! (default two minutes, RFC 6347's bound for keeping an old epoch), so packets in flight or reordered
//! around the switch, and everything the peer sends until it rekeys too, still arrive; the previous key is
//! forgotten when the period ends. A count-based bound would have kept the old key alive indefinitely
//! while the peer is slow to rekey. Records of an epoch the framer has not been given yet (the peer
//! rekeyed first) are dropped as `unknown-session`, so an application should rekey the receiving side
//! first or accept that loss.
//!
//! # Limits the framer enforces, and the one it does not
//! Sequence numbers are unique per epoch across every thread, queue and writer sharing the framer, and
//! sealing is refused ([`superpacket_core::framer::SealError::Exhausted`]) rather than wrapping past
//! 2^48. For AES-GCM, confidentiality margins call for rekeying long before that (TLS 1.3 suggests
//! 2^24.5 records per key); that policy belongs to the application's key schedule.
//!
//! # Why ring
//! The AEADs are ring's (0.17): it is already in the build as boringtun's cipher library, so DTLS adds no
//! second crypto library, and it has all three ciphers with in-place sealing and a separate tag, which is
//! what sealing straight into a slot needs (boringtun's own data path uses ring's ChaCha20-Poly1305
//! too, so both native encrypting framers run the same cipher code). aws-lc-rs would bring a second
//! C library and a CMake build for the same primitives.
//!
//! Its speed on 1,400-byte records, one core, thread CPU time, from
//! `cargo bench -p superpacket-dtls --bench aead -- --warm-up-time 2 --measurement-time 6` on the shared
//! 2-core Xeon (AVX-512, VAES) this was written on, seal / open:
//!
//! | cipher            | ring alone          | framer (64-record superpacket sealed / one datagram opened) |
//! |-------------------|---------------------|-------------------------------------------------------------|
//! | chacha20-poly1305 | 1.01 / 1.05 GB/s    | 1.21 / 1.04 GB/s                                            |
//! | aes-128-gcm       | 3.85 / 4.00 GB/s    | 3.57 / 2.91 GB/s                                            |
//! | aes-256-gcm       | 4.09 / 4.23 GB/s    | 3.47 / 3.32 GB/s                                            |
//!
//! Figures from another day or CPU are not comparable; compare rows of one run.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod cipher;
mod error;
pub mod framer;
pub mod record;
pub mod replay;

pub use cipher::{Cipher, KeyMaterial, EXPLICIT_NONCE_LEN, TAG_LEN};
pub use error::ConfigError;
pub use framer::{DtlsConfig, DtlsFramer, DtlsStats};
